//! Routing information bases: Adj-RIB-In, Loc-RIB and best-path selection (RFC 4271 §3.2, §9),
//! graceful-restart stale handling (RFC 4724 §4.2), max-prefix counting (RFC 4486 §4), and the
//! best-path change stream. Pure: no sockets, no timers, no tasks — the session layer feeds it
//! decoded UPDATEs and session events and drains its changes; [`out`] turns changes into
//! outbound UPDATEs for update groups.
//!
//! Design (the memory budget is the point; see `docs/architecture.md`, "RIB memory"):
//! - One table per family shared by all peers, like BIRD: each prefix holds every accepted path
//!   from every peer. A peer's Adj-RIB-In is the subset of paths tagged with its id, so there
//!   is no second copy per peer.
//! - Adj-RIB-In is **post-policy**: rejected routes are not kept. Changing an import policy
//!   therefore needs the peer to resend its routes: route refresh (RFC 2918) or enhanced route
//!   refresh (RFC 7313). Against a peer that supports neither the session layer must reset the
//!   session; we do not keep a pre-policy copy (soft-reconfiguration inbound) because it would
//!   double the memory for every peer to serve a case every router we interoperate with avoids.
//! - Attribute sets are interned in an [`AttrStore`]: one allocation per distinct set, shared by
//!   every route that carries it, freed when the last one goes.
//! - Adj-RIB-Out keeps nothing per prefix: see [`out`].

pub mod attrs;
pub mod best;
pub mod out;
pub mod peer;
pub mod prefix;
pub mod rules;
pub mod table;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::Serialize;

pub use attrs::{AttrStore, NextHop, PathAttrs};
pub use best::{BestPathConfig, FlatIgp, IgpCost};
pub use peer::{PeerId, PeerInfo, PeerType};
pub use prefix::{Prefix, RibPrefix};
pub use rules::{LocalIdentity, NextHopMode, RejectReason};
pub use table::{BestChange, NextHops, Path, Table};

use crate::policy::{self, EvalContext, Outcome, Policy, RouteView, Verdict};
use crate::wire::{
    Asn, DecodeContext, Family, Ipv4Prefix, Ipv6Prefix, MpNlri, Update, UpdateAction,
};
use table::SelectCtx;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// RIB settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    pub asn: Asn,
    pub router_id: Ipv4Addr,
    /// Route-reflection cluster id (RFC 4456 §7); the router id when `None`.
    pub cluster_id: Option<Ipv4Addr>,
    pub best_path: BestPathConfig,
}

impl RibConfig {
    pub fn new(asn: Asn, router_id: Ipv4Addr) -> RibConfig {
        RibConfig {
            asn,
            router_id,
            cluster_id: None,
            best_path: BestPathConfig::default(),
        }
    }

    pub fn identity(&self) -> LocalIdentity {
        LocalIdentity {
            asn: self.asn,
            router_id: self.router_id,
            cluster_id: self.cluster_id.unwrap_or(self.router_id),
        }
    }
}

/// Errors of RIB operations. All are caller mistakes, never caused by peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RibError {
    #[error("{0} is not a peer of this RIB")]
    UnknownPeer(PeerId),
    #[error("{0} is already a peer of this RIB")]
    DuplicatePeer(PeerId),
    #[error("peer id {0} is out of range (1..={max})", max = PeerId::MAX)]
    BadPeerId(u32),
}

/// Per-peer import state.
#[derive(Debug)]
struct PeerImport {
    policy: Option<Arc<Policy>>,
    max_prefix: Option<u32>,
    /// Paths currently held from this peer (the max-prefix count, RFC 4486 §4).
    accepted: u32,
}

/// What one UPDATE did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReceiveOutcome {
    /// NLRI announced in the UPDATE.
    pub announced: u32,
    /// Announced routes that are now in the RIB.
    pub accepted: u32,
    /// Announced routes dropped by loop detection, policy or RFC 7606 (each one also withdraws
    /// whatever the peer sent earlier for that prefix).
    pub rejected: u32,
    /// Withdrawn NLRI in the UPDATE.
    pub withdrawn: u32,
    /// The peer now holds more paths than its max-prefix limit: the session layer sends a
    /// Cease (subcode 1, RFC 4486 §4) and calls [`Rib::peer_down`].
    pub max_prefix_exceeded: bool,
    /// The UPDATE was an End-of-RIB marker for this family (RFC 4724 §2); stale routes of that
    /// family have been swept.
    pub end_of_rib: Option<Family>,
}

/// Best-path changes since the last [`Rib::take_changes`].
#[derive(Debug, Default)]
pub struct Changes {
    pub v4: Vec<BestChange<Ipv4Prefix>>,
    pub v6: Vec<BestChange<Ipv6Prefix>>,
    /// Prefixes whose path *set* changed (a path added, replaced or removed), whether or not
    /// the best path did; a prefix may appear more than once. Recorded only while
    /// [`Rib::set_track_paths`] is on: RFC 7911 ADD-PATH send groups advertise every path.
    pub touched_v4: Vec<Ipv4Prefix>,
    pub touched_v6: Vec<Ipv6Prefix>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty()
            && self.v6.is_empty()
            && self.touched_v4.is_empty()
            && self.touched_v6.is_empty()
    }
    /// Best-path changes (touched prefixes are not counted).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
    /// The kernel's view: each changed prefix with its new ECMP next hops (empty: withdrawn).
    pub fn next_hops(&self) -> impl Iterator<Item = (Prefix, &[std::net::IpAddr])> {
        self.v4
            .iter()
            .map(|c| (Prefix::V4(c.prefix), &c.next_hops[..]))
            .chain(
                self.v6
                    .iter()
                    .map(|c| (Prefix::V6(c.prefix), &c.next_hops[..])),
            )
    }
}

/// Sizes for status pages and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RibStats {
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
    /// Distinct interned attribute sets.
    pub attr_sets: usize,
    /// Paths held per peer (post-policy Adj-RIB-In sizes), by peer id; 0 is local routes.
    pub accepted: Vec<(u32, u32)>,
}

/// The RIB of one speaker.
pub struct Rib {
    cfg: RibConfig,
    me: LocalIdentity,
    store: AttrStore,
    v4: Table<Ipv4Prefix>,
    v6: Table<Ipv6Prefix>,
    peers: FastMap<PeerId, PeerInfo>,
    import: FastMap<PeerId, PeerImport>,
    igp: Box<dyn IgpCost + Send + Sync>,
    changes: Changes,
    /// Record touched prefixes in [`Changes`] (some ADD-PATH send group exists).
    track_paths: bool,
}

impl std::fmt::Debug for Rib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rib")
            .field("cfg", &self.cfg)
            .field("v4_prefixes", &self.v4.len())
            .field("v6_prefixes", &self.v6.len())
            .field("peers", &self.peers.len())
            .field("attr_sets", &self.store.len())
            .finish()
    }
}

/// Same prefix handling for both tables.
macro_rules! on_table {
    ($self:ident, $prefix:expr, |$t:ident, $p:ident, $ch:ident, $touched:ident| $body:expr) => {
        match $prefix {
            Prefix::V4($p) => {
                let $t = &mut $self.v4;
                let $ch = &mut $self.changes.v4;
                let $touched = &mut $self.changes.touched_v4;
                $body
            }
            Prefix::V6($p) => {
                let $t = &mut $self.v6;
                let $ch = &mut $self.changes.v6;
                let $touched = &mut $self.changes.touched_v6;
                $body
            }
        }
    };
}

impl Rib {
    pub fn new(cfg: RibConfig) -> Rib {
        let me = cfg.identity();
        let mut peers = FastMap::default();
        peers.insert(PeerId::LOCAL, PeerInfo::local(cfg.asn, cfg.router_id));
        let mut import = FastMap::default();
        import.insert(
            PeerId::LOCAL,
            PeerImport {
                policy: None,
                max_prefix: None,
                accepted: 0,
            },
        );
        Rib {
            cfg,
            me,
            store: AttrStore::new(),
            v4: Table::default(),
            v6: Table::default(),
            peers,
            import,
            igp: Box::new(FlatIgp),
            changes: Changes::default(),
            track_paths: false,
        }
    }

    /// Turns recording of touched prefixes (every path-set change, see [`Changes`]) on or off.
    /// Off by default: only ADD-PATH send groups need it, and it costs a queue entry per
    /// changed path.
    pub fn set_track_paths(&mut self, on: bool) {
        self.track_paths = on;
        if !on {
            self.changes.touched_v4 = Vec::new();
            self.changes.touched_v6 = Vec::new();
        }
    }

    pub fn tracks_paths(&self) -> bool {
        self.track_paths
    }

    /// Whether `path` can be used: its next hop resolves (the IGP hook answers) and its peer
    /// is known. Unusable paths are never selected, and never advertised with ADD-PATH.
    pub fn usable(&self, path: &Path) -> bool {
        (path.attrs().next_hop.is_unspecified()
            || self.igp.cost(path.attrs().next_hop.addr()).is_some())
            && self.peers.contains_key(&path.peer())
    }

    /// Replaces the IGP cost hook and re-runs selection everywhere.
    pub fn set_igp(&mut self, igp: Box<dyn IgpCost + Send + Sync>) {
        self.igp = igp;
        self.reselect_all();
    }

    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }
    pub fn identity(&self) -> &LocalIdentity {
        &self.me
    }

    /// Registers a peer. `import` `None` means the RFC 8212 default for its type
    /// ([`policy::default_verdict`]).
    pub fn add_peer(
        &mut self,
        info: PeerInfo,
        import: Option<Arc<Policy>>,
        max_prefix: Option<u32>,
    ) -> Result<(), RibError> {
        if info.id == PeerId::LOCAL || info.id.0 > PeerId::MAX {
            return Err(RibError::BadPeerId(info.id.0));
        }
        if self.peers.contains_key(&info.id) {
            return Err(RibError::DuplicatePeer(info.id));
        }
        self.import.insert(
            info.id,
            PeerImport {
                policy: import,
                max_prefix,
                accepted: 0,
            },
        );
        self.peers.insert(info.id, info);
        Ok(())
    }

    /// Replaces a peer's import policy. Routes already held are not re-filtered: the caller
    /// asks the peer for a route refresh (see the module docs).
    pub fn set_import_policy(
        &mut self,
        peer: PeerId,
        policy: Option<Arc<Policy>>,
    ) -> Result<(), RibError> {
        let imp = self
            .import
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        imp.policy = policy;
        Ok(())
    }

    /// Replaces what the RIB knows of a registered peer (its identifier or AS after it came
    /// back, e.g. from a new OPEN). Selection is re-run when something it compares changed.
    pub fn set_peer_info(&mut self, info: PeerInfo) -> Result<(), RibError> {
        let cur = self
            .peers
            .get_mut(&info.id)
            .ok_or(RibError::UnknownPeer(info.id))?;
        if *cur == info {
            return Ok(());
        }
        *cur = info;
        self.reselect_all();
        Ok(())
    }

    pub fn set_max_prefix(&mut self, peer: PeerId, max: Option<u32>) -> Result<(), RibError> {
        let imp = self
            .import
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        imp.max_prefix = max;
        Ok(())
    }

    /// Removes a peer and all its routes.
    pub fn remove_peer(&mut self, peer: PeerId) -> Result<(), RibError> {
        if peer == PeerId::LOCAL {
            return Err(RibError::BadPeerId(0));
        }
        self.peer_down(peer)?;
        self.peers.remove(&peer);
        self.import.remove(&peer);
        Ok(())
    }

    pub fn peer(&self, peer: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&peer)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// Paths held from `peer` (its post-policy Adj-RIB-In): the max-prefix count.
    pub fn accepted(&self, peer: PeerId) -> Option<u32> {
        self.import.get(&peer).map(|i| i.accepted)
    }

    /// The session went down without graceful restart: withdraw everything it sent.
    pub fn peer_down(&mut self, peer: PeerId) -> Result<usize, RibError> {
        self.remove_paths(peer, |_| true)
    }

    /// RFC 4724 §4.2: the session of a peer that announced graceful restart went down. Its
    /// routes stay in use, marked stale, until [`Rib::end_of_rib`] or [`Rib::sweep_stale`].
    /// Stale routes are preferred like fresh ones: forwarding must not move while the peer
    /// restarts. Returns how many paths were marked.
    pub fn mark_stale(&mut self, peer: PeerId) -> Result<usize, RibError> {
        if !self.peers.contains_key(&peer) {
            return Err(RibError::UnknownPeer(peer));
        }
        Ok(self.v4.set_stale(peer, true) + self.v6.set_stale(peer, true))
    }

    /// Marks `peer`'s routes of one family stale: the start of an enhanced route refresh (RFC
    /// 7313 §4, BoRR); [`Rib::end_of_rib`] at its EoRR sweeps what was not re-sent.
    pub fn mark_stale_family(&mut self, peer: PeerId, family: Family) -> Result<usize, RibError> {
        if !self.peers.contains_key(&peer) {
            return Err(RibError::UnknownPeer(peer));
        }
        Ok(match family {
            Family::IPV4_UNICAST => self.v4.set_stale(peer, true),
            Family::IPV6_UNICAST => self.v6.set_stale(peer, true),
            _ => 0,
        })
    }

    /// End-of-RIB for `family` from a restarted peer: the stale routes it did not refresh go.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family) -> Result<usize, RibError> {
        self.sweep(peer, Some(family))
    }

    /// The restart (or stale-path) timer expired: every remaining stale route of `peer` goes.
    pub fn sweep_stale(&mut self, peer: PeerId) -> Result<usize, RibError> {
        self.sweep(peer, None)
    }

    fn sweep(&mut self, peer: PeerId, family: Option<Family>) -> Result<usize, RibError> {
        if !self.peers.contains_key(&peer) {
            return Err(RibError::UnknownPeer(peer));
        }
        let cx = SelectCtx {
            peers: &self.peers,
            cfg: &self.cfg.best_path,
            igp: self.igp.as_ref(),
        };
        let mut n = 0;
        if family.is_none_or(|f| f == Family::IPV4_UNICAST) {
            n += self.v4.remove_where(
                peer,
                Path::is_stale,
                &cx,
                &mut self.store,
                &mut self.changes.v4,
                self.track_paths.then_some(&mut self.changes.touched_v4),
            );
        }
        if family.is_none_or(|f| f == Family::IPV6_UNICAST) {
            n += self.v6.remove_where(
                peer,
                Path::is_stale,
                &cx,
                &mut self.store,
                &mut self.changes.v6,
                self.track_paths.then_some(&mut self.changes.touched_v6),
            );
        }
        self.count_removed(peer, n);
        Ok(n)
    }

    fn remove_paths(
        &mut self,
        peer: PeerId,
        pred: impl Fn(&Path) -> bool + Copy,
    ) -> Result<usize, RibError> {
        if !self.peers.contains_key(&peer) {
            return Err(RibError::UnknownPeer(peer));
        }
        let cx = SelectCtx {
            peers: &self.peers,
            cfg: &self.cfg.best_path,
            igp: self.igp.as_ref(),
        };
        let n = self.v4.remove_where(
            peer,
            pred,
            &cx,
            &mut self.store,
            &mut self.changes.v4,
            self.track_paths.then_some(&mut self.changes.touched_v4),
        ) + self.v6.remove_where(
            peer,
            pred,
            &cx,
            &mut self.store,
            &mut self.changes.v6,
            self.track_paths.then_some(&mut self.changes.touched_v6),
        );
        self.count_removed(peer, n);
        Ok(n)
    }

    fn count_removed(&mut self, peer: PeerId, n: usize) {
        if let Some(i) = self.import.get_mut(&peer) {
            i.accepted = i
                .accepted
                .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// Re-runs best-path selection for every prefix (the IGP hook's answers changed).
    pub fn reselect_all(&mut self) {
        let cx = SelectCtx {
            peers: &self.peers,
            cfg: &self.cfg.best_path,
            igp: self.igp.as_ref(),
        };
        self.v4.reselect_all(&cx, &mut self.changes.v4);
        self.v6.reselect_all(&cx, &mut self.changes.v6);
        if self.track_paths {
            // A path that is not the best may have become (un)usable: ADD-PATH groups look
            // at every prefix again.
            self.changes
                .touched_v4
                .extend(self.v4.iter().map(|(p, _)| *p));
            self.changes
                .touched_v6
                .extend(self.v6.iter().map(|(p, _)| *p));
        }
    }

    /// Originates a prefix from this router. Use an unspecified next hop (`0.0.0.0`, `::`)
    /// for "this router": exports rewrite it to the session address.
    pub fn originate(&mut self, prefix: Prefix, attrs: PathAttrs) {
        let attrs = self.store.intern(attrs);
        self.insert_path(PeerId::LOCAL, prefix, 0, attrs);
    }

    /// Withdraws a locally originated prefix.
    pub fn withdraw_local(&mut self, prefix: Prefix) -> bool {
        self.remove_path(PeerId::LOCAL, prefix, 0)
    }

    /// Processes one decoded UPDATE from `peer`, `cx` being the session's decode context.
    pub fn receive(
        &mut self,
        peer: PeerId,
        update: &Update,
        cx: &DecodeContext,
    ) -> Result<ReceiveOutcome, RibError> {
        let info = self
            .peers
            .get(&peer)
            .ok_or(RibError::UnknownPeer(peer))?
            .clone();
        let mut out = ReceiveOutcome::default();
        if let Some(family) = update.is_end_of_rib() {
            self.end_of_rib(peer, family)?;
            out.end_of_rib = Some(family);
            return Ok(out);
        }
        for w in &update.withdrawn {
            out.withdrawn += 1;
            self.remove_path(peer, Prefix::V4(w.prefix), w.path_id.unwrap_or(0));
        }
        if let Some(u) = update.mp_unreach() {
            match &u.withdrawn {
                MpNlri::Ipv4Unicast(v) => {
                    for w in v {
                        out.withdrawn += 1;
                        self.remove_path(peer, Prefix::V4(w.prefix), w.path_id.unwrap_or(0));
                    }
                }
                MpNlri::Ipv6Unicast(v) => {
                    for w in v {
                        out.withdrawn += 1;
                        self.remove_path(peer, Prefix::V6(w.prefix), w.path_id.unwrap_or(0));
                    }
                }
                MpNlri::Other { .. } => {}
            }
        }
        let withdraw_all = update.action == UpdateAction::TreatAsWithdraw;
        if !update.nlri.is_empty() {
            let nh = match update.attribute(crate::wire::attribute::code::NEXT_HOP) {
                Some(crate::wire::AttributeValue::NextHop(a)) => Some(NextHop::V4(*a)),
                _ => None,
            };
            let routes = update
                .nlri
                .iter()
                .map(|n| (Prefix::V4(n.prefix), n.path_id.unwrap_or(0)));
            self.import_routes(&info, update, nh, withdraw_all, cx, routes, &mut out);
        }
        if let Some(r) = update.mp_reach() {
            let nh: Option<NextHop> = (&r.next_hop).into();
            match &r.nlri {
                MpNlri::Ipv4Unicast(v) => {
                    let routes = v
                        .iter()
                        .map(|n| (Prefix::V4(n.prefix), n.path_id.unwrap_or(0)));
                    self.import_routes(&info, update, nh, withdraw_all, cx, routes, &mut out);
                }
                MpNlri::Ipv6Unicast(v) => {
                    let routes = v
                        .iter()
                        .map(|n| (Prefix::V6(n.prefix), n.path_id.unwrap_or(0)));
                    self.import_routes(&info, update, nh, withdraw_all, cx, routes, &mut out);
                }
                MpNlri::Other { .. } => {}
            }
        }
        if let Some(i) = self.import.get(&peer) {
            out.max_prefix_exceeded = i.max_prefix.is_some_and(|m| i.accepted > m);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn import_routes(
        &mut self,
        from: &PeerInfo,
        update: &Update,
        next_hop: Option<NextHop>,
        withdraw_all: bool,
        cx: &DecodeContext,
        routes: impl Iterator<Item = (Prefix, u32)>,
        out: &mut ReceiveOutcome,
    ) {
        let routes: Vec<(Prefix, u32)> = routes.collect();
        out.announced += routes.len() as u32;
        let reject_all = |rib: &mut Rib, out: &mut ReceiveOutcome| {
            for &(p, id) in &routes {
                out.rejected += 1;
                rib.remove_path(from.id, p, id);
            }
        };
        // RFC 7606 treat-as-withdraw, or an UPDATE without a usable next hop (the codec
        // reports a missing NEXT_HOP as treat-as-withdraw already; this is the belt).
        let Some(next_hop) = next_hop.filter(|_| !withdraw_all) else {
            return reject_all(self, out);
        };
        let mut attrs = PathAttrs::from_wire(&update.attributes, next_hop, cx.four_octet_as);
        if rules::check_loops(&attrs, from, &self.me).is_err() {
            return reject_all(self, out);
        }
        if let Some(fixed) = rules::import_fixups(&attrs, from) {
            attrs = fixed;
        }
        let policy = self.import.get(&from.id).and_then(|i| i.policy.clone());
        let Some(policy) = policy else {
            if policy::default_verdict(from.peer_type) == Verdict::Reject {
                return reject_all(self, out);
            }
            let shared = self.store.intern(attrs);
            for (p, id) in routes {
                out.accepted += 1;
                self.insert_path(from.id, p, id, shared.clone());
            }
            self.store.release(shared);
            return;
        };
        let ecx = EvalContext {
            local_asn: self.me.asn,
            self_next_hop: None,
        };
        let shared = self.store.intern(attrs);
        // A policy that cannot look at the prefix gives every route of the UPDATE the same
        // answer: evaluate it once.
        let mut once: Option<Option<Arc<_>>> = None;
        for (p, id) in routes {
            let verdict = match &once {
                Some(v) => v.clone(),
                None => {
                    let v = match policy.evaluate(
                        &RouteView {
                            prefix: p,
                            attrs: &shared,
                            peer_type: from.peer_type,
                        },
                        &ecx,
                    ) {
                        Outcome::Reject => None,
                        Outcome::Accept { attrs: None, .. } => Some(shared.clone()),
                        Outcome::Accept { attrs: Some(a), .. } => Some(self.store.intern(*a)),
                    };
                    if !policy.is_prefix_dependent() {
                        once = Some(v.clone());
                    }
                    v
                }
            };
            match verdict {
                Some(a) => {
                    out.accepted += 1;
                    self.insert_path(from.id, p, id, a);
                }
                None => {
                    out.rejected += 1;
                    self.remove_path(from.id, p, id);
                }
            }
        }
        if let Some(Some(a)) = once {
            self.store.release(a);
        }
        self.store.release(shared);
    }

    fn insert_path(&mut self, peer: PeerId, prefix: Prefix, path_id: u32, attrs: Arc<PathAttrs>) {
        let cx = SelectCtx {
            peers: &self.peers,
            cfg: &self.cfg.best_path,
            igp: self.igp.as_ref(),
        };
        let path = Path::new(attrs, peer, path_id);
        let track = self.track_paths;
        let previous = on_table!(self, prefix, |t, p, ch, touched| {
            let a = t.insert(p, path, &cx);
            if let Some(c) = a.change {
                ch.push(c);
            }
            if track {
                touched.push(p);
            }
            a.previous
        });
        match previous {
            Some(old) => self.store.release(old.into_attrs()),
            None => {
                if let Some(i) = self.import.get_mut(&peer) {
                    i.accepted = i.accepted.saturating_add(1);
                }
            }
        }
    }

    fn remove_path(&mut self, peer: PeerId, prefix: Prefix, path_id: u32) -> bool {
        let cx = SelectCtx {
            peers: &self.peers,
            cfg: &self.cfg.best_path,
            igp: self.igp.as_ref(),
        };
        let track = self.track_paths;
        let previous = on_table!(self, prefix, |t, p, ch, touched| {
            let a = t.remove(p, peer, path_id, &cx);
            if let Some(c) = a.change {
                ch.push(c);
            }
            if track && a.previous.is_some() {
                touched.push(p);
            }
            a.previous
        });
        match previous {
            Some(old) => {
                self.store.release(old.into_attrs());
                self.count_removed(peer, 1);
                true
            }
            None => false,
        }
    }

    /// Changes waiting for [`Rib::take_changes`]: best-path changes, and touched prefixes
    /// while they are tracked (both are queue entries the caller bounds).
    pub fn pending_changes(&self) -> usize {
        self.changes.len() + self.changes.touched_v4.len() + self.changes.touched_v6.len()
    }

    /// Takes the best-path changes accumulated since the last call. Call it after every
    /// UPDATE (or small batch): the queue holds one entry per changed prefix.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn v4(&self) -> &Table<Ipv4Prefix> {
        &self.v4
    }
    pub fn v6(&self) -> &Table<Ipv6Prefix> {
        &self.v6
    }

    /// All paths for a prefix, ECMP set first, best first.
    pub fn paths(&self, prefix: &Prefix) -> &[Path] {
        match prefix {
            Prefix::V4(p) => self.v4.paths(p),
            Prefix::V6(p) => self.v6.paths(p),
        }
    }

    pub fn best(&self, prefix: &Prefix) -> Option<&Path> {
        self.ecmp(prefix).first()
    }

    pub fn ecmp(&self, prefix: &Prefix) -> &[Path] {
        match prefix {
            Prefix::V4(p) => self.v4.ecmp(p),
            Prefix::V6(p) => self.v6.ecmp(p),
        }
    }

    /// A peer's Adj-RIB-In (post-policy): its paths, unordered.
    pub fn adj_rib_in(&self, peer: PeerId) -> impl Iterator<Item = (Prefix, &Path)> {
        let v4 = self.v4.iter().flat_map(move |(p, paths)| {
            paths
                .iter()
                .filter(move |x| x.peer() == peer)
                .map(move |x| (Prefix::V4(*p), x))
        });
        let v6 = self.v6.iter().flat_map(move |(p, paths)| {
            paths
                .iter()
                .filter(move |x| x.peer() == peer)
                .map(move |x| (Prefix::V6(*p), x))
        });
        v4.chain(v6)
    }

    pub fn stats(&self) -> RibStats {
        let mut accepted: Vec<(u32, u32)> =
            self.import.iter().map(|(p, i)| (p.0, i.accepted)).collect();
        accepted.sort_unstable();
        RibStats {
            ipv4_prefixes: self.v4.len(),
            ipv6_prefixes: self.v6.len(),
            attr_sets: self.store.len(),
            accepted,
        }
    }

    /// Number of distinct attribute sets held by the store.
    pub fn attr_sets(&self) -> usize {
        self.store.len()
    }

    /// Frees attribute sets released while someone else (a change, a queued UPDATE) still held
    /// them. Call after draining changes.
    pub fn purge(&mut self) {
        self.store.purge();
    }
}
