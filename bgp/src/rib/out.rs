//! Adj-RIB-Out through update groups: peers that would be sent the same thing share one
//! computation and one encoded stream. Owns export (propagation rules, export policy, eBGP
//! prepend), the per-group queue of pending changes, and packing them into UPDATEs that respect
//! the session's maximum message size. It never touches sockets: the session layer writes the
//! encoded UPDATEs to each member.
//!
//! Memory: nothing is stored per prefix and per peer. What has been advertised is derived from
//! the Loc-RIB: when a best path changes, the group exports the old and the new best and sends
//! the difference (a withdrawal when the new best is not exportable). The price is an
//! occasional withdrawal of a prefix the peer never had, which RFC 4271 §9.1.2 lets the
//! receiver ignore. A group therefore costs its queue and a small cache, whatever the table size.
//!
//! A group is defined by [`GroupKey`]: peer type and AS, next-hop mode and this router's session
//! addresses (next-hop self), export policy, and the negotiated capabilities that change the
//! encoding (4-octet AS, extended messages, extended next hop, ADD-PATH send per family).
//! Members of a group receive identical bytes. Routes are sent back to the peer they came from
//! when it is in the group; the receiver drops them by its own loop detection (AS_PATH for
//! eBGP, ORIGINATOR_ID for reflected routes), which is what sharing one stream costs.
//!
//! RFC 7911 ADD-PATH send is the one exception to "nothing per prefix": for a family where the
//! group's members negotiated that we send path identifiers (`GroupKey::add_path_v4/v6`), every
//! exportable path of a prefix is advertised, each under a path id that must stay the same while
//! that path lives, so the group keeps a sent list per prefix ([`Sent`]: path id, source peer and
//! source path id, interned exported attributes). The RIB then reports every prefix whose path
//! set changed ([`Rib::set_track_paths`], on only while such a group exists), and the group
//! diffs the prefix's exportable paths against its sent list: a path that went is withdrawn by
//! its own id, a new one gets the smallest id not in use for the prefix. Groups without ADD-PATH
//! keep no such state and cost what they cost before.
//!
//! Ordering rule for callers: feed every pending [`Changes`] to [`UpdateGroups::process`]
//! before [`UpdateGroups::join`], so a new member's initial dump and the queue agree.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::attrs::{AttrStore, NextHop, PathAttrs};
use super::peer::{PeerId, PeerType};
use super::prefix::Prefix;
use super::rules::{self, ExportTarget};
use super::table::Path;
use super::{Changes, Rib};
use crate::policy::{self, EvalContext, Outcome, Policy, RouteView, Verdict};
use crate::wire::{
    Attribute, AttributeValue, DecodeContext, EncodeError, Family, Ipv4Nlri, Ipv4Prefix, Ipv6Nlri,
    Ipv6Prefix, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message, MpNextHop, MpNlri, MpReach,
    MpUnreach, Nlri, Update,
};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What makes two peers' outbound streams identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub target: ExportTarget,
    /// Export policy name; `None`: the RFC 8212 default for the peer type.
    pub export_policy: Option<String>,
    pub four_octet_as: bool,
    pub extended_message: bool,
    /// RFC 8950: IPv4 NLRI may carry an IPv6 next hop.
    pub extended_next_hop: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// This router's addresses on the session (next-hop self).
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// RFC 7911 §4: we send path identifiers for IPv4 / IPv6 unicast (we said Send, the peer
    /// said Receive): every exportable path is advertised, not only the best.
    pub add_path_v4: bool,
    pub add_path_v6: bool,
}

impl GroupKey {
    /// The encode context shared by every member.
    pub fn context(&self) -> DecodeContext {
        let mut add_path_rx = std::collections::BTreeSet::new();
        if self.add_path_v4 {
            add_path_rx.insert(Family::IPV4_UNICAST);
        }
        if self.add_path_v6 {
            add_path_rx.insert(Family::IPV6_UNICAST);
        }
        DecodeContext {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
            add_path_rx,
            ibgp: self.target.peer_type.is_ibgp(),
            peer_as: Some(self.target.peer_asn),
        }
    }

    /// IPv4 unicast is sent to this group, with ADD-PATH.
    fn ap_v4(&self) -> bool {
        self.ipv4 && self.add_path_v4
    }
    /// IPv6 unicast is sent to this group, with ADD-PATH.
    fn ap_v6(&self) -> bool {
        self.ipv6 && self.add_path_v6
    }
    /// IPv4 unicast is sent to this group, best paths only.
    fn plain_v4(&self) -> bool {
        self.ipv4 && !self.add_path_v4
    }
    fn plain_v6(&self) -> bool {
        self.ipv6 && !self.add_path_v6
    }

    /// Whether some family of this group is advertised with ADD-PATH.
    pub fn any_add_path(&self) -> bool {
        self.ap_v4() || self.ap_v6()
    }

    fn max_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// Index of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// Errors of group management (caller mistakes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("{0} is already in an update group")]
    AlreadyMember(PeerId),
    #[error("{0} is not in an update group")]
    NotMember(PeerId),
    #[error("export policy {name:?} differs from the one group {group:?} was built with")]
    PolicyMismatch { name: String, group: GroupId },
    #[error("encoding an outbound UPDATE: {0}")]
    Encode(#[from] EncodeError),
}

/// UPDATEs for every member of one group.
#[derive(Debug, Clone)]
pub struct OutBatch {
    pub group: GroupId,
    pub members: Vec<PeerId>,
    pub updates: Vec<Update>,
}

type CacheKey = (usize, PeerId, bool);

/// One path advertised with ADD-PATH (RFC 7911): the path id the group's members know it by,
/// the Loc-RIB path it stands for, and the attributes they were sent (interned in the group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub path_id: u32,
    pub peer: PeerId,
    pub source_path_id: u32,
    pub attrs: Arc<PathAttrs>,
}

/// The smallest path id (from 1) not used in `sent`.
pub fn smallest_free_id(sent: &[Sent]) -> u32 {
    // At most `sent.len()` ids are taken, so one of the first `len + 1` is free.
    let mut id = 1;
    while sent.iter().any(|s| s.path_id == id) {
        id += 1;
    }
    id
}

/// Brings one prefix's sent list in line with `want`, the paths to advertise now as (source
/// peer, source path id, exported attributes). A path still wanted keeps its id (re-announced
/// only when its attributes changed, compared by pointer: they are interned); a path no longer
/// wanted is withdrawn by its id; a new path gets the smallest id not in use once the
/// withdrawals are done. Returns what to send: (path id, attributes), `None` to withdraw.
/// Attributes that leave the list, or are not kept from `want`, go to `release`.
pub fn diff_paths(
    sent: &mut Vec<Sent>,
    want: Vec<(PeerId, u32, Arc<PathAttrs>)>,
    mut release: impl FnMut(Arc<PathAttrs>),
) -> Vec<(u32, Option<Arc<PathAttrs>>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sent.len() {
        let s = &sent[i];
        if want
            .iter()
            .any(|(peer, id, _)| *peer == s.peer && *id == s.source_path_id)
        {
            i += 1;
        } else {
            let gone = sent.remove(i);
            out.push((gone.path_id, None));
            release(gone.attrs);
        }
    }
    for (peer, source_path_id, attrs) in want {
        match sent
            .iter_mut()
            .find(|s| s.peer == peer && s.source_path_id == source_path_id)
        {
            Some(s) if Arc::ptr_eq(&s.attrs, &attrs) => release(attrs),
            Some(s) => {
                out.push((s.path_id, Some(attrs.clone())));
                release(std::mem::replace(&mut s.attrs, attrs));
            }
            None => {
                let path_id = smallest_free_id(sent);
                out.push((path_id, Some(attrs.clone())));
                sent.push(Sent {
                    path_id,
                    peer,
                    source_path_id,
                    attrs,
                });
            }
        }
    }
    out
}

/// A queue entry's key, which becomes one NLRI: a prefix, or with ADD-PATH a prefix and its
/// path id.
trait OutKey: Copy {
    type P: Copy;
    fn nlri(self) -> Nlri<Self::P>;
}

impl OutKey for Ipv4Prefix {
    type P = Ipv4Prefix;
    fn nlri(self) -> Ipv4Nlri {
        Nlri::new(self)
    }
}

impl OutKey for Ipv6Prefix {
    type P = Ipv6Prefix;
    fn nlri(self) -> Ipv6Nlri {
        Nlri::new(self)
    }
}

impl OutKey for Ipv4Nlri {
    type P = Ipv4Prefix;
    fn nlri(self) -> Ipv4Nlri {
        self
    }
}

impl OutKey for Ipv6Nlri {
    type P = Ipv6Prefix;
    fn nlri(self) -> Ipv6Nlri {
        self
    }
}

/// One update group.
#[derive(Debug)]
pub struct UpdateGroup {
    key: GroupKey,
    policy: Option<Arc<Policy>>,
    members: BTreeSet<PeerId>,
    /// Exported attribute sets, interned so that batching by pointer groups equal ones.
    store: AttrStore,
    /// (source attributes, source peer, IPv6?) → exported attributes, for policies that do not
    /// look at the prefix. Holds the source set so its address cannot be reused meanwhile.
    cache: FastMap<CacheKey, (Arc<PathAttrs>, Option<Arc<PathAttrs>>)>,
    /// Queued changes in arrival order, a prefix possibly more than once: appending is a
    /// sequential write where a map insert is a random one, and the drain sorts anyway (then
    /// keeps each prefix's last entry).
    pending_v4: Vec<(Ipv4Prefix, Option<Arc<PathAttrs>>)>,
    pending_v6: Vec<(Ipv6Prefix, Option<Arc<PathAttrs>>)>,
    /// Routes the members are sent (the Adj-RIB-Out size), kept up to date by
    /// [`UpdateGroup::on_change`] so status queries do not walk the table.
    advertised: u32,
    /// `advertised` must be recounted from the Loc-RIB: a new group, a replaced policy, or a
    /// change whose old best came from a peer that is gone (its export cannot be recomputed).
    recount: bool,
    /// ADD-PATH families only: what the members were sent per prefix (see the module docs).
    sent_v4: FastMap<Ipv4Prefix, Vec<Sent>>,
    sent_v6: FastMap<Ipv6Prefix, Vec<Sent>>,
    /// Paths in the sent lists: the ADD-PATH part of the Adj-RIB-Out size.
    sent_count: u32,
    /// The sent lists were filled from the Loc-RIB (on the group's first join).
    sent_ready: bool,
    /// ADD-PATH queue: (prefix with path id, attributes or withdrawn), as `pending_*`.
    ap_pending_v4: Vec<(Ipv4Nlri, Option<Arc<PathAttrs>>)>,
    ap_pending_v6: Vec<(Ipv6Nlri, Option<Arc<PathAttrs>>)>,
}

impl UpdateGroup {
    fn new(key: GroupKey, policy: Option<Arc<Policy>>) -> UpdateGroup {
        UpdateGroup {
            key,
            policy,
            members: BTreeSet::new(),
            store: AttrStore::new(),
            cache: FastMap::default(),
            pending_v4: Vec::new(),
            pending_v6: Vec::new(),
            advertised: 0,
            recount: true,
            sent_v4: FastMap::default(),
            sent_v6: FastMap::default(),
            sent_count: 0,
            sent_ready: false,
            ap_pending_v4: Vec::new(),
            ap_pending_v6: Vec::new(),
        }
    }

    pub fn key(&self) -> &GroupKey {
        &self.key
    }
    pub fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members.iter().copied()
    }
    /// Queued changes waiting to be sent (a prefix changed twice counts twice until the drain).
    pub fn pending(&self) -> usize {
        self.pending_v4.len()
            + self.pending_v6.len()
            + self.ap_pending_v4.len()
            + self.ap_pending_v6.len()
    }

    /// ADD-PATH: the paths of `prefix` the members were sent, with their path ids (empty for
    /// a family without ADD-PATH).
    pub fn sent(&self, prefix: &Prefix) -> &[Sent] {
        let list = match prefix {
            Prefix::V4(p) => self.sent_v4.get(p),
            Prefix::V6(p) => self.sent_v6.get(p),
        };
        list.map(Vec::as_slice).unwrap_or(&[])
    }

    /// ADD-PATH: brings `prefix`'s sent list in line with the Loc-RIB (every usable path that
    /// passes export) and queues the difference; with `queue` false the difference is only
    /// recorded (the initial fill, which the joining member gets as its dump).
    fn resync(&mut self, prefix: Prefix, rib: &Rib, queue: bool) {
        let mut sent = match prefix {
            Prefix::V4(p) => self.sent_v4.remove(&p),
            Prefix::V6(p) => self.sent_v6.remove(&p),
        }
        .unwrap_or_default();
        let mut want = Vec::new();
        if rib.best(&prefix).is_some() {
            for path in rib.paths(&prefix) {
                if rib.usable(path)
                    && let Some(a) = self.export(prefix, path, rib)
                {
                    want.push((path.peer(), path.path_id(), a));
                }
            }
        }
        let before = sent.len();
        let store = &mut self.store;
        let diff = diff_paths(&mut sent, want, |a| store.release(a));
        self.sent_count = self
            .sent_count
            .saturating_sub(u32::try_from(before).unwrap_or(u32::MAX))
            .saturating_add(u32::try_from(sent.len()).unwrap_or(u32::MAX));
        if !sent.is_empty() {
            // Exact size: most prefixes have one or two paths, a doubling vector would hold
            // four.
            sent.shrink_to_fit();
            match prefix {
                Prefix::V4(p) => {
                    self.sent_v4.insert(p, sent);
                }
                Prefix::V6(p) => {
                    self.sent_v6.insert(p, sent);
                }
            }
        }
        for (id, a) in diff {
            if !queue {
                if let Some(a) = a {
                    self.store.release(a);
                }
                continue;
            }
            match prefix {
                Prefix::V4(p) => self.ap_pending_v4.push((Nlri::with_path_id(p, id), a)),
                Prefix::V6(p) => self.ap_pending_v6.push((Nlri::with_path_id(p, id), a)),
            }
        }
    }

    /// ADD-PATH: fills the sent lists from the Loc-RIB once, when the group is made.
    fn ensure_sent(&mut self, rib: &Rib) {
        if self.sent_ready {
            return;
        }
        self.sent_ready = true;
        if self.key.ap_v4() {
            for (p, _) in rib.v4().iter() {
                self.resync(Prefix::V4(*p), rib, false);
            }
        }
        if self.key.ap_v6() {
            for (p, _) in rib.v6().iter() {
                self.resync(Prefix::V6(*p), rib, false);
            }
        }
        self.cache.clear();
        self.store.purge();
    }

    /// ADD-PATH: the announcement of every sent path of the chosen families, packed (the
    /// initial dump and route refresh of an ADD-PATH family).
    fn sent_dump(&self, v4: bool, v6: bool) -> Result<Vec<Update>, EncodeError> {
        let mut a4 = Vec::new();
        if v4 && self.key.ap_v4() {
            for (p, list) in &self.sent_v4 {
                for s in list {
                    a4.push((Nlri::with_path_id(*p, s.path_id), Some(s.attrs.clone())));
                }
            }
        }
        let mut a6 = Vec::new();
        if v6 && self.key.ap_v6() {
            for (p, list) in &self.sent_v6 {
                for s in list {
                    a6.push((Nlri::with_path_id(*p, s.path_id), Some(s.attrs.clone())));
                }
            }
        }
        if a4.is_empty() && a6.is_empty() {
            return Ok(Vec::new());
        }
        a4.sort_unstable_by_key(|(n, _)| (n.prefix, n.path_id));
        a6.sort_unstable_by_key(|(n, _)| (n.prefix, n.path_id));
        // Packed in a scratch group: the attributes stay interned in this one.
        UpdateGroup::new(self.key.clone(), None).pack(a4, a6)
    }

    /// The whole table for one member: best paths of the plain families, every sent path of
    /// the ADD-PATH ones.
    fn full_dump(&self, v4: bool, v6: bool, rib: &Rib) -> Result<Vec<Update>, EncodeError> {
        let mut key = self.key.clone();
        key.ipv4 &= v4;
        key.ipv6 &= v6;
        let mut out = dump(key, self.policy.clone(), rib)?;
        out.extend(self.sent_dump(v4, v6)?);
        Ok(out)
    }

    fn self_next_hop(&self, v6: bool) -> Option<NextHop> {
        let g6 = self.key.local_v6.map(|global| NextHop::V6 {
            global,
            link_local: None,
        });
        if v6 {
            g6
        } else {
            self.key
                .local_v4
                .map(NextHop::V4)
                .or(if self.key.extended_next_hop { g6 } else { None })
        }
    }

    /// The attributes `path` is sent with for `prefix`, or `None` when it is not sent.
    fn export(&mut self, prefix: Prefix, path: &Path, rib: &Rib) -> Option<Arc<PathAttrs>> {
        let v6 = matches!(prefix, Prefix::V6(_));
        let cacheable = self
            .policy
            .as_ref()
            .is_none_or(|p| !p.is_prefix_dependent());
        let ck = (Arc::as_ptr(path.attrs()) as usize, path.peer(), v6);
        if cacheable && let Some((_, out)) = self.cache.get(&ck) {
            return out.clone();
        }
        let out = self.compute(prefix, path, rib, v6);
        if cacheable {
            self.cache.insert(ck, (path.attrs().clone(), out.clone()));
        }
        out
    }

    fn compute(
        &mut self,
        prefix: Prefix,
        path: &Path,
        rib: &Rib,
        v6: bool,
    ) -> Option<Arc<PathAttrs>> {
        let from = rib.peer(path.peer())?;
        let src = path.attrs();
        let target = &self.key.target;
        if !rules::may_export(src, from.peer_type, target) {
            return None;
        }
        let me = rib.identity();
        let self_nh = self.self_next_hop(v6);
        let mut a = rules::export_attrs(
            src,
            from,
            target,
            me,
            rib.config().best_path.default_local_pref,
            self_nh,
        )?;
        match &self.policy {
            None => {
                if policy::default_verdict(target.peer_type) == Verdict::Reject {
                    return None;
                }
            }
            Some(p) => {
                let cx = EvalContext {
                    local_asn: me.asn,
                    self_next_hop: self_nh,
                };
                let view = RouteView {
                    prefix,
                    attrs: &a,
                    peer_type: target.peer_type,
                };
                match p.evaluate(&view, &cx) {
                    Outcome::Reject => return None,
                    Outcome::Accept {
                        attrs,
                        keep_next_hop,
                    } => {
                        if let Some(changed) = attrs {
                            a = *changed;
                        }
                        if keep_next_hop && !src.next_hop.is_unspecified() {
                            a.next_hop = src.next_hop;
                        }
                    }
                }
            }
        }
        rules::finish_export(&mut a, target, me);
        // The next hop must be expressible for the family on this session.
        a.next_hop = match (v6, a.next_hop) {
            (_, nh) if nh.is_unspecified() => return None,
            (false, NextHop::V4(x)) => NextHop::V4(x),
            (false, nh @ NextHop::V6 { .. }) if self.key.extended_next_hop => nh,
            (false, NextHop::V6 { .. }) => return None,
            (true, nh @ NextHop::V6 { .. }) => nh,
            // RFC 4798 §2 style: an IPv4 next hop for IPv6 NLRI as an IPv4-mapped address.
            (true, NextHop::V4(x)) => NextHop::V6 {
                global: x.to_ipv6_mapped(),
                link_local: None,
            },
        };
        Some(self.store.intern(a))
    }

    fn enqueue(&mut self, prefix: Prefix, attrs: Option<Arc<PathAttrs>>) {
        match prefix {
            Prefix::V4(p) if self.key.ipv4 => {
                self.pending_v4.push((p, attrs));
            }
            Prefix::V6(p) if self.key.ipv6 => {
                self.pending_v6.push((p, attrs));
            }
            _ => {
                if let Some(a) = attrs {
                    self.store.release(a);
                }
            }
        }
    }

    fn on_change(&mut self, prefix: Prefix, old: Option<&Path>, new: Option<&Path>, rib: &Rib) {
        let new_out = new.and_then(|p| self.export(prefix, p, rib));
        // What the members were sent for the old best: nothing, a known set, or unknown (its
        // peer is gone, so the export cannot be recomputed: assume it was sent).
        let old_out = match old {
            None => Some(None),
            Some(p) if rib.peer(p.peer()).is_some() => Some(self.export(prefix, p, rib)),
            Some(_) => None,
        };
        let enabled = match prefix {
            Prefix::V4(_) => self.key.ipv4,
            Prefix::V6(_) => self.key.ipv6,
        };
        if enabled && !self.recount {
            match &old_out {
                None => self.recount = true,
                Some(o) => match (o.is_some(), new_out.is_some()) {
                    (false, true) => self.advertised = self.advertised.saturating_add(1),
                    (true, false) => self.advertised = self.advertised.saturating_sub(1),
                    _ => {}
                },
            }
        }
        match (&old_out, &new_out) {
            (Some(Some(a)), Some(b)) if Arc::ptr_eq(a, b) => return,
            (Some(None), None) => return,
            _ => {}
        }
        self.enqueue(prefix, new_out);
    }

    /// Packs the queue into UPDATEs: withdrawals first, then announcements grouped by
    /// attribute set, each message as full as the size limit allows.
    fn drain(&mut self) -> Result<Vec<Update>, EncodeError> {
        let mut v4 = std::mem::take(&mut self.pending_v4);
        let mut v6 = std::mem::take(&mut self.pending_v6);
        // Stable sorts: a prefix's entries stay in arrival order, and the last one counts.
        // Sorted output is also easier to read in captures.
        v4.sort_by_key(|(p, _)| *p);
        v6.sort_by_key(|(p, _)| *p);
        let superseded = keep_last(&mut v4) + keep_last(&mut v6);
        if superseded > 0 {
            // Their attribute sets were dropped without `release`.
            self.store.purge();
        }
        let mut out = self.pack(v4, v6)?;
        if !self.ap_pending_v4.is_empty() || !self.ap_pending_v6.is_empty() {
            let mut a4 = std::mem::take(&mut self.ap_pending_v4);
            let mut a6 = std::mem::take(&mut self.ap_pending_v6);
            // Keyed on (prefix, path id): each path of a prefix is its own route.
            a4.sort_by_key(|(n, _)| (n.prefix, n.path_id));
            a6.sort_by_key(|(n, _)| (n.prefix, n.path_id));
            if keep_last(&mut a4) + keep_last(&mut a6) > 0 {
                self.store.purge();
            }
            out.extend(self.pack(a4, a6)?);
        }
        Ok(out)
    }

    /// Packs (prefix or prefix with path id, attributes-or-withdrawn) lists into UPDATEs.
    fn pack<K4: OutKey<P = Ipv4Prefix>, K6: OutKey<P = Ipv6Prefix>>(
        &mut self,
        v4: Vec<(K4, Option<Arc<PathAttrs>>)>,
        v6: Vec<(K6, Option<Arc<PathAttrs>>)>,
    ) -> Result<Vec<Update>, EncodeError> {
        let cx = self.key.context();
        let max = self.key.max_len();
        let mut out = Vec::new();

        let w4: Vec<Ipv4Nlri> = v4
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(p, _)| p.nlri())
            .collect();
        let base = encoded_len(&Update::default(), &cx)?;
        for chunk in pack(
            &w4,
            |n| nlri_len(n.prefix.len(), n.path_id),
            max.saturating_sub(base),
        ) {
            out.push(Update {
                withdrawn: chunk.to_vec(),
                ..Update::default()
            });
        }
        let w6: Vec<Ipv6Nlri> = v6
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(p, _)| p.nlri())
            .collect();
        if !w6.is_empty() {
            let mk = |nlri: Vec<Ipv6Nlri>| Update {
                attributes: vec![
                    AttributeValue::MpUnreachNlri(MpUnreach {
                        withdrawn: MpNlri::Ipv6Unicast(nlri),
                    })
                    .into(),
                ],
                ..Update::default()
            };
            // +1: the attribute may need the 2-octet extended length once it grows.
            let base = encoded_len(&mk(Vec::new()), &cx)? + 1;
            for chunk in pack(
                &w6,
                |n| nlri_len(n.prefix.len(), n.path_id),
                max.saturating_sub(base),
            ) {
                out.push(mk(chunk.to_vec()));
            }
        }

        // Announcements, grouped by exported attribute set (interned: pointer identity).
        type Group = (Arc<PathAttrs>, Vec<Ipv4Nlri>, Vec<Ipv6Nlri>);
        let mut by_attrs: Vec<Group> = Vec::new();
        let mut index: FastMap<usize, usize> = FastMap::default();
        let mut slot = |a: Arc<PathAttrs>, store: &mut AttrStore| -> usize {
            let k = Arc::as_ptr(&a) as usize;
            match index.get(&k) {
                Some(&i) => {
                    store.release(a);
                    i
                }
                None => {
                    index.insert(k, by_attrs.len());
                    by_attrs.push((a, Vec::new(), Vec::new()));
                    by_attrs.len() - 1
                }
            }
        };
        let mut groups_v4: Vec<(usize, Ipv4Nlri)> = Vec::with_capacity(v4.len());
        for (p, a) in v4 {
            if let Some(a) = a {
                groups_v4.push((slot(a, &mut self.store), p.nlri()));
            }
        }
        let mut groups_v6: Vec<(usize, Ipv6Nlri)> = Vec::with_capacity(v6.len());
        for (p, a) in v6 {
            if let Some(a) = a {
                groups_v6.push((slot(a, &mut self.store), p.nlri()));
            }
        }
        for (i, n) in groups_v4 {
            by_attrs[i].1.push(n);
        }
        for (i, n) in groups_v6 {
            by_attrs[i].2.push(n);
        }
        for (attrs, n4, n6) in by_attrs {
            let include_lp = self.key.target.peer_type.is_ibgp();
            let base_attrs = attrs.to_wire(self.key.four_octet_as, include_lp);
            if !n4.is_empty() {
                match attrs.next_hop {
                    NextHop::V4(nh) => {
                        let mk = |nlri: Vec<Ipv4Nlri>| {
                            let mut a = base_attrs.clone();
                            a.insert(2, AttributeValue::NextHop(nh).into());
                            Update {
                                attributes: a,
                                nlri,
                                ..Update::default()
                            }
                        };
                        if let Some(room) = room_for(&mk(Vec::new()), &cx, max, 0) {
                            for chunk in pack(&n4, |n| nlri_len(n.prefix.len(), n.path_id), room) {
                                out.push(mk(chunk.to_vec()));
                            }
                        }
                    }
                    NextHop::V6 { global, link_local } => {
                        let mk = |nlri: Vec<Ipv4Nlri>| {
                            mp_update(
                                &base_attrs,
                                MpNextHop::Ipv6 { global, link_local },
                                MpNlri::Ipv4Unicast(nlri),
                            )
                        };
                        if let Some(room) = room_for(&mk(Vec::new()), &cx, max, 1) {
                            for chunk in pack(&n4, |n| nlri_len(n.prefix.len(), n.path_id), room) {
                                out.push(mk(chunk.to_vec()));
                            }
                        }
                    }
                }
            }
            if !n6.is_empty()
                && let NextHop::V6 { global, link_local } = attrs.next_hop
            {
                let mk = |nlri: Vec<Ipv6Nlri>| {
                    mp_update(
                        &base_attrs,
                        MpNextHop::Ipv6 { global, link_local },
                        MpNlri::Ipv6Unicast(nlri),
                    )
                };
                if let Some(room) = room_for(&mk(Vec::new()), &cx, max, 1) {
                    for chunk in pack(&n6, |n| nlri_len(n.prefix.len(), n.path_id), room) {
                        out.push(mk(chunk.to_vec()));
                    }
                }
            }
            self.store.release(attrs);
        }
        self.cache.clear();
        self.store.purge();
        Ok(out)
    }
}

fn mp_update(base: &[Attribute], next_hop: MpNextHop, nlri: MpNlri) -> Update {
    let mut a = base.to_vec();
    a.insert(
        0,
        AttributeValue::MpReachNlri(MpReach { next_hop, nlri }).into(),
    );
    Update {
        attributes: a,
        ..Update::default()
    }
}

/// Removes all but the last entry of each run of equal keys in a sorted list; returns how many
/// went.
fn keep_last<P: PartialEq, V>(v: &mut Vec<(P, V)>) -> usize {
    let before = v.len();
    // `dedup_by` keeps the earlier element of a pair: move the later value into it first.
    v.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(&mut later.1, &mut earlier.1);
            true
        } else {
            false
        }
    });
    before - v.len()
}

/// Octets one NLRI takes (RFC 4271 §4.3): length octet plus address octets, and 4 for an
/// ADD-PATH path identifier (RFC 7911 §3).
fn nlri_len(len: u8, path_id: Option<u32>) -> usize {
    1 + usize::from(len).div_ceil(8) + if path_id.is_some() { 4 } else { 0 }
}

fn encoded_len(u: &Update, cx: &DecodeContext) -> Result<usize, EncodeError> {
    let mut b = BytesMut::new();
    Message::Update(u.clone()).encode(cx, &mut b)?;
    Ok(b.len())
}

/// Every exportable best path for a group with this key and policy, packed, for the families
/// without ADD-PATH (those come from the group's sent lists). Goes through a scratch group so
/// the shared queue is untouched and only the asking member receives it.
fn dump(key: GroupKey, policy: Option<Arc<Policy>>, rib: &Rib) -> Result<Vec<Update>, EncodeError> {
    let mut scratch = UpdateGroup::new(key, policy);
    // Prefixes are unique here: straight into vectors, no queue, no sort.
    let mut v4: Vec<(Ipv4Prefix, _)> = Vec::new();
    if scratch.key.plain_v4() {
        for (p, best) in rib.v4().iter_best() {
            if let Some(a) = scratch.export(Prefix::V4(*p), best, rib) {
                v4.push((*p, Some(a)));
            }
        }
    }
    let mut v6: Vec<(Ipv6Prefix, _)> = Vec::new();
    if scratch.key.plain_v6() {
        for (p, best) in rib.v6().iter_best() {
            if let Some(a) = scratch.export(Prefix::V6(*p), best, rib) {
                v6.push((*p, Some(a)));
            }
        }
    }
    scratch.pack(v4, v6)
}

/// Octets left for NLRI once the UPDATE without NLRI (`slack` more for a length field that may
/// grow) is accounted for. `None` when not even one NLRI fits or the attributes cannot be
/// encoded for this session: such a route is not advertised here (logged), and the rest of the
/// batch goes out as usual. Attributes come from peers, so this is input, not a bug.
fn room_for(u: &Update, cx: &DecodeContext, max: usize, slack: usize) -> Option<usize> {
    const LONGEST_NLRI: usize = 17;
    let longest = LONGEST_NLRI + if cx.add_path_rx.is_empty() { 0 } else { 4 };
    match encoded_len(u, cx) {
        Ok(len) => match max.checked_sub(len + slack) {
            Some(room) if room >= longest => Some(room),
            _ => {
                tracing::warn!(
                    attributes_len = len,
                    max,
                    "path attributes too long for this session's message size; routes not advertised"
                );
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode path attributes for this session; routes not advertised");
            None
        }
    }
}

/// Splits `items` into runs whose sizes sum to at most `room` (at least one item per run).
fn pack<T>(items: &[T], size: impl Fn(&T) -> usize, room: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, it) in items.iter().enumerate() {
        let s = size(it);
        if used + s > room && i > start {
            out.push(&items[start..i]);
            start = i;
            used = 0;
        }
        used += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// All update groups of a speaker.
#[derive(Debug, Default)]
pub struct UpdateGroups {
    groups: FastMap<GroupId, UpdateGroup>,
    by_key: FastMap<GroupKey, GroupId>,
    member_of: FastMap<PeerId, GroupId>,
    next_id: u32,
}

impl UpdateGroups {
    pub fn new() -> UpdateGroups {
        UpdateGroups::default()
    }

    pub fn group(&self, id: GroupId) -> Option<&UpdateGroup> {
        self.groups.get(&id)
    }
    pub fn group_of(&self, peer: PeerId) -> Option<GroupId> {
        self.member_of.get(&peer).copied()
    }
    pub fn len(&self) -> usize {
        self.groups.len()
    }
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds a peer whose session just came up, and returns its group and the UPDATEs of its
    /// initial table dump (the caller sends them, then End-of-RIB per family, RFC 4724 §2).
    pub fn join(
        &mut self,
        peer: PeerId,
        key: GroupKey,
        policy: Option<Arc<Policy>>,
        rib: &Rib,
    ) -> Result<(GroupId, Vec<Update>), GroupError> {
        let id = self.enter(peer, key, policy)?;
        let Some(g) = self.groups.get_mut(&id) else {
            return Err(GroupError::NotMember(peer));
        };
        g.ensure_sent(rib);
        match g.full_dump(true, true, rib) {
            Ok(updates) => Ok((id, updates)),
            Err(e) => {
                // Leave no half-joined member behind.
                let _ = self.leave(peer);
                Err(e.into())
            }
        }
    }

    /// Adds `peer` to the group for `key` (made if needed), without a dump.
    fn enter(
        &mut self,
        peer: PeerId,
        key: GroupKey,
        policy: Option<Arc<Policy>>,
    ) -> Result<GroupId, GroupError> {
        if self.member_of.contains_key(&peer) {
            return Err(GroupError::AlreadyMember(peer));
        }
        let id = match self.by_key.get(&key) {
            Some(&id) => {
                let g = self.groups.get(&id);
                let same = match (g.and_then(|g| g.policy.as_ref()), policy.as_ref()) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Err(GroupError::PolicyMismatch {
                        name: key.export_policy.clone().unwrap_or_default(),
                        group: id,
                    });
                }
                id
            }
            None => {
                let id = GroupId(self.next_id);
                self.next_id = self.next_id.wrapping_add(1);
                self.by_key.insert(key.clone(), id);
                self.groups
                    .insert(id, UpdateGroup::new(key.clone(), policy));
                id
            }
        };
        if let Some(g) = self.groups.get_mut(&id) {
            g.members.insert(peer);
        }
        self.member_of.insert(peer, id);
        Ok(id)
    }

    /// The whole table again for one member: the answer to its ROUTE-REFRESH (RFC 2918 §4;
    /// with enhanced route refresh, RFC 7313 §4, the caller brackets it with BoRR/EoRR).
    pub fn refresh(&self, peer: PeerId, rib: &Rib) -> Result<Vec<Update>, GroupError> {
        let id = self
            .member_of
            .get(&peer)
            .ok_or(GroupError::NotMember(peer))?;
        let Some(g) = self.groups.get(id) else {
            return Err(GroupError::NotMember(peer));
        };
        Ok(g.full_dump(true, true, rib)?)
    }

    /// [`UpdateGroups::refresh`] for one family (RFC 2918 asks per AFI/SAFI).
    pub fn refresh_family(
        &self,
        peer: PeerId,
        family: crate::wire::Family,
        rib: &Rib,
    ) -> Result<Vec<Update>, GroupError> {
        let id = self
            .member_of
            .get(&peer)
            .ok_or(GroupError::NotMember(peer))?;
        let Some(g) = self.groups.get(id) else {
            return Err(GroupError::NotMember(peer));
        };
        Ok(g.full_dump(
            family == Family::IPV4_UNICAST,
            family == Family::IPV6_UNICAST,
            rib,
        )?)
    }

    /// Moves a member to the group of `key` / `policy` (its export policy or next-hop mode
    /// changed) without resetting its session. Returns the new group and what the peer must
    /// be sent to match it: every route the new group exports, and a withdrawal for every
    /// route only the old one exported.
    pub fn regroup(
        &mut self,
        peer: PeerId,
        key: GroupKey,
        policy: Option<Arc<Policy>>,
        rib: &Rib,
    ) -> Result<(GroupId, Vec<Update>), GroupError> {
        let (old_key, old_policy, old_sent) = {
            let id = self
                .member_of
                .get(&peer)
                .ok_or(GroupError::NotMember(peer))?;
            let g = self.groups.get(id).ok_or(GroupError::NotMember(peer))?;
            // ADD-PATH families: every (prefix, path id) the peer holds from the old group.
            let mut w4: Vec<Ipv4Nlri> = Vec::new();
            let mut w6: Vec<Ipv6Nlri> = Vec::new();
            for (p, list) in &g.sent_v4 {
                w4.extend(list.iter().map(|s| Nlri::with_path_id(*p, s.path_id)));
            }
            for (p, list) in &g.sent_v6 {
                w6.extend(list.iter().map(|s| Nlri::with_path_id(*p, s.path_id)));
            }
            (g.key.clone(), g.policy.clone(), (w4, w6))
        };
        self.leave(peer)?;
        let id = self.enter(peer, key.clone(), policy.clone())?;
        let mut before = UpdateGroup::new(old_key, old_policy);
        let mut after = UpdateGroup::new(key, policy);
        // Best paths: families without ADD-PATH on either side (the ADD-PATH mode comes from
        // the session's OPEN exchange, so a regroup does not change it).
        let (new_v4, old_v4) = (after.key.plain_v4(), before.key.plain_v4());
        let (new_v6, old_v6) = (after.key.plain_v6(), before.key.plain_v6());
        let mut v4 = Vec::new();
        if new_v4 || (old_v4 && !after.key.ap_v4()) {
            for (p, best) in rib.v4().iter_best() {
                let pfx = Prefix::V4(*p);
                let new = if new_v4 {
                    after.export(pfx, best, rib)
                } else {
                    None
                };
                match new {
                    Some(a) => v4.push((*p, Some(a))),
                    None if old_v4 && before.export(pfx, best, rib).is_some() => {
                        v4.push((*p, None))
                    }
                    None => {}
                }
            }
        }
        let mut v6 = Vec::new();
        if new_v6 || (old_v6 && !after.key.ap_v6()) {
            for (p, best) in rib.v6().iter_best() {
                let pfx = Prefix::V6(*p);
                let new = if new_v6 {
                    after.export(pfx, best, rib)
                } else {
                    None
                };
                match new {
                    Some(a) => v6.push((*p, Some(a))),
                    None if old_v6 && before.export(pfx, best, rib).is_some() => {
                        v6.push((*p, None))
                    }
                    None => {}
                }
            }
        }
        let mut out = after.pack(v4, v6)?;
        // ADD-PATH families: withdraw the old group's ids the new group does not use, then
        // announce every path of the new group (an id it reuses replaces the old path, RFC
        // 7911 §5).
        let g = self
            .groups
            .get_mut(&id)
            .ok_or(GroupError::NotMember(peer))?;
        g.ensure_sent(rib);
        let (w4, w6) = old_sent;
        let in_use_v4 = |n: &Ipv4Nlri| {
            g.sent(&Prefix::V4(n.prefix))
                .iter()
                .any(|s| Some(s.path_id) == n.path_id)
        };
        let w4: Vec<(Ipv4Nlri, Option<Arc<PathAttrs>>)> = if g.key.ap_v4() {
            w4.into_iter()
                .filter(|n| !in_use_v4(n))
                .map(|n| (n, None))
                .collect()
        } else {
            Vec::new()
        };
        let in_use_v6 = |n: &Ipv6Nlri| {
            g.sent(&Prefix::V6(n.prefix))
                .iter()
                .any(|s| Some(s.path_id) == n.path_id)
        };
        let w6: Vec<(Ipv6Nlri, Option<Arc<PathAttrs>>)> = if g.key.ap_v6() {
            w6.into_iter()
                .filter(|n| !in_use_v6(n))
                .map(|n| (n, None))
                .collect()
        } else {
            Vec::new()
        };
        if !w4.is_empty() || !w6.is_empty() {
            out.extend(after.pack(w4, w6)?);
        }
        out.extend(g.sent_dump(true, true)?);
        Ok((id, out))
    }

    /// What a member is currently sent: each exported best path with its outbound attributes
    /// and path id 0 (the Adj-RIB-Out, derived from the Loc-RIB; nothing of it is stored),
    /// and for ADD-PATH families every path sent, with its path id (from the sent lists).
    pub fn exported(
        &self,
        peer: PeerId,
        rib: &Rib,
    ) -> Result<Vec<(Prefix, u32, Arc<PathAttrs>)>, GroupError> {
        let id = self
            .member_of
            .get(&peer)
            .ok_or(GroupError::NotMember(peer))?;
        let g = self.groups.get(id).ok_or(GroupError::NotMember(peer))?;
        let mut scratch = UpdateGroup::new(g.key.clone(), g.policy.clone());
        let mut out = Vec::new();
        if scratch.key.plain_v4() {
            for (p, best) in rib.v4().iter_best() {
                if let Some(a) = scratch.export(Prefix::V4(*p), best, rib) {
                    out.push((Prefix::V4(*p), 0, a));
                }
            }
        }
        if scratch.key.plain_v6() {
            for (p, best) in rib.v6().iter_best() {
                if let Some(a) = scratch.export(Prefix::V6(*p), best, rib) {
                    out.push((Prefix::V6(*p), 0, a));
                }
            }
        }
        // ADD-PATH families: every path sent, one entry each.
        for (p, list) in &g.sent_v4 {
            out.extend(
                list.iter()
                    .map(|s| (Prefix::V4(*p), s.path_id, s.attrs.clone())),
            );
        }
        for (p, list) in &g.sent_v6 {
            out.extend(
                list.iter()
                    .map(|s| (Prefix::V6(*p), s.path_id, s.attrs.clone())),
            );
        }
        Ok(out)
    }

    /// How many routes each group currently exports (its members' Adj-RIB-Out size). Kept
    /// incrementally; a group walks the Loc-RIB only when its count had to be invalidated.
    pub fn advertised_counts(&mut self, rib: &Rib) -> Vec<(GroupId, u32)> {
        let mut out = Vec::with_capacity(self.groups.len());
        for (id, g) in self.groups.iter_mut() {
            if g.recount {
                let mut scratch = UpdateGroup::new(g.key.clone(), g.policy.clone());
                let mut n: u32 = 0;
                if scratch.key.plain_v4() {
                    for (p, best) in rib.v4().iter_best() {
                        if scratch.export(Prefix::V4(*p), best, rib).is_some() {
                            n = n.saturating_add(1);
                        }
                    }
                }
                if scratch.key.plain_v6() {
                    for (p, best) in rib.v6().iter_best() {
                        if scratch.export(Prefix::V6(*p), best, rib).is_some() {
                            n = n.saturating_add(1);
                        }
                    }
                }
                g.advertised = n;
                g.recount = false;
            }
            // ADD-PATH families count every path sent (kept exactly by `resync`).
            out.push((*id, g.advertised.saturating_add(g.sent_count)));
        }
        out
    }

    /// A changed export policy, applied without resetting any session: every group using
    /// `name` switches to `policy` and queues exactly the prefixes whose outbound attributes
    /// (or exportability) changed. Returns how many groups were affected.
    pub fn replace_export_policy(&mut self, name: &str, policy: Arc<Policy>, rib: &Rib) -> usize {
        let mut affected = 0;
        for g in self.groups.values_mut() {
            if g.key.export_policy.as_deref() != Some(name) {
                continue;
            }
            affected += 1;
            g.recount = true;
            let mut before = UpdateGroup::new(g.key.clone(), g.policy.take());
            g.policy = Some(policy.clone());
            g.cache.clear();
            let mut diff = |g: &mut UpdateGroup, prefix: Prefix, best: &Path| {
                let old = before.export(prefix, best, rib);
                let new = g.export(prefix, best, rib);
                // Different stores: compare by value.
                if old.as_deref() != new.as_deref() {
                    g.enqueue(prefix, new);
                } else if let Some(a) = new {
                    g.store.release(a);
                }
            };
            if g.key.plain_v4() {
                for (p, best) in rib.v4().iter_best() {
                    diff(g, Prefix::V4(*p), best);
                }
            }
            if g.key.plain_v6() {
                for (p, best) in rib.v6().iter_best() {
                    diff(g, Prefix::V6(*p), best);
                }
            }
            // ADD-PATH families: every path of every prefix against its sent list. Prefixes
            // sent but gone from the Loc-RIB were withdrawn when they went.
            if g.key.ap_v4() {
                for (p, _) in rib.v4().iter() {
                    g.resync(Prefix::V4(*p), rib, true);
                }
            }
            if g.key.ap_v6() {
                for (p, _) in rib.v6().iter() {
                    g.resync(Prefix::V6(*p), rib, true);
                }
            }
            g.cache.clear();
        }
        affected
    }

    /// Removes a peer (session down or peer deleted); an emptied group goes too.
    pub fn leave(&mut self, peer: PeerId) -> Result<(), GroupError> {
        let id = self
            .member_of
            .remove(&peer)
            .ok_or(GroupError::NotMember(peer))?;
        let empty = match self.groups.get_mut(&id) {
            Some(g) => {
                g.members.remove(&peer);
                g.members.is_empty()
            }
            None => false,
        };
        if empty && let Some(g) = self.groups.remove(&id) {
            self.by_key.remove(&g.key);
        }
        Ok(())
    }

    /// Queues, in every group, what the changes mean for its members: best-path changes for
    /// plain families; for ADD-PATH families every changed prefix, best or not (the touched
    /// prefixes, recorded while [`Rib::set_track_paths`] is on: see [`Self::any_add_path`]).
    pub fn process(&mut self, changes: &Changes, rib: &Rib) {
        // While the RIB tracks paths, every best-path change is also a touched prefix (and it
        // has tracked since before any ADD-PATH group's sent lists were filled): the ADD-PATH
        // families then go by the touched list alone.
        let touched_only = rib.tracks_paths();
        for g in self.groups.values_mut() {
            let (ap4, ap6) = (g.key.ap_v4(), g.key.ap_v6());
            for c in &changes.v4 {
                if ap4 {
                    if !touched_only {
                        g.resync(Prefix::V4(c.prefix), rib, true);
                    }
                } else if c.best_changed() {
                    g.on_change(Prefix::V4(c.prefix), c.old.as_ref(), c.new.as_ref(), rib);
                }
            }
            for c in &changes.v6 {
                if ap6 {
                    if !touched_only {
                        g.resync(Prefix::V6(c.prefix), rib, true);
                    }
                } else if c.best_changed() {
                    g.on_change(Prefix::V6(c.prefix), c.old.as_ref(), c.new.as_ref(), rib);
                }
            }
            if ap4 {
                for p in &changes.touched_v4 {
                    g.resync(Prefix::V4(*p), rib, true);
                }
            }
            if ap6 {
                for p in &changes.touched_v6 {
                    g.resync(Prefix::V6(*p), rib, true);
                }
            }
        }
    }

    /// Whether some group advertises a family with ADD-PATH: the caller then keeps
    /// [`Rib::set_track_paths`] on, so [`Self::process`] learns of every path change.
    pub fn any_add_path(&self) -> bool {
        self.groups.values().any(|g| g.key.any_add_path())
    }

    /// Packs every group's queue into UPDATEs, one batch per group with pending work.
    pub fn flush(&mut self) -> Result<Vec<OutBatch>, GroupError> {
        let mut out = Vec::new();
        let mut ids: Vec<GroupId> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(g) = self.groups.get_mut(&id)
                && g.pending() > 0
            {
                let updates = g.drain()?;
                out.push(OutBatch {
                    group: id,
                    members: g.members().collect(),
                    updates,
                });
            }
        }
        Ok(out)
    }

    /// Encodes a batch once for all its members.
    pub fn encode(&self, batch: &OutBatch) -> Result<Vec<Bytes>, GroupError> {
        let Some(g) = self.groups.get(&batch.group) else {
            return Ok(Vec::new());
        };
        let cx = g.key.context();
        let mut out = Vec::with_capacity(batch.updates.len());
        for u in &batch.updates {
            out.push(Message::Update(u.clone()).to_bytes(&cx)?);
        }
        Ok(out)
    }

    /// Exported attribute sets held by all groups (for leak checks).
    pub fn attr_sets(&self) -> usize {
        self.groups.values().map(|g| g.store.len()).sum()
    }
}

/// Whether a peer type ever receives locally originated and learned routes without an export
/// policy (RFC 8212): re-exported for config validation messages.
pub fn exports_without_policy(peer_type: PeerType) -> bool {
    policy::default_verdict(peer_type) == Verdict::Accept
}
