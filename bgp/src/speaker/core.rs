//! The speaker loop: the one task that owns the RIB, the update groups, the peer table and the
//! policies, and turns session reports and API requests into RIB operations and outbound
//! UPDATEs.
//!
//! Each session task reports through a small forwarding task that tags its events with the
//! session's generation, so reports of a session that was replaced (reset, removed and
//! re-added) are recognised and dropped. Commands go to sessions through a pump task per
//! session, so the loop never waits on a session (a session may itself be waiting for the loop
//! to take its events: waiting both ways would deadlock).
//!
//! Work is batched: after one report the loop takes every report already queued (up to
//! [`BATCH`]), then runs the best-path changes through the groups once, encodes each group's
//! UPDATEs once and hands the same bytes to every member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::{PeerChange, PeerConfig, SpeakerConfig, classify_change};
use super::status::{
    AdjRoute, DurationHistogram, Metrics, NotificationInfo, PathAttrsView, PathInfo, PeerMetrics,
    PeerStatus, RouteInfo,
};
use super::subscribe::Subscribers;
use super::transport::Transport;
use super::{PolicyApplied, Request, SpeakerError};
use crate::fsm::{Cease, DownReason, State};
use crate::negotiate::{LocalConfig, Negotiated};
use crate::policy::{Policy, PolicyConfig};
use crate::rib::out::{GroupKey, OutBatch, UpdateGroups};
use crate::rib::rules::ExportTarget;
use crate::rib::{PeerId, PeerInfo, Prefix, Rib, RibConfig};
use crate::session::{
    Command, ConnectFailure, Connector, MessageCounters, NotBefore, SessionConfig, SessionEvent,
    SessionEventKind, incoming_channel, spawn_counted,
};
use crate::wire::{
    Afi, Asn, DecodeContext, Family, Message, Notification, RouteRefresh, RouteRefreshSubtype,
    Update,
};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most session reports handled before the changes are exported.
const BATCH: usize = 512;
/// Export once this many best-path changes are pending, even within a batch: the change
/// records (and the groups' queues) are transient memory, and a full table arriving at once
/// must not hold a million of them.
const MAX_PENDING_CHANGES: usize = 32 * 1024;
/// How long `shutdown` waits for sessions to send their Cease.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// A session report tagged with the session's generation; `None`: the session task ended.
struct Inbound {
    generation: u64,
    kind: Option<SessionEventKind>,
}

/// How often a peer's graceful restart may skip the idle hold (see `Loop::down`).
const QUICK_RESTART_INTERVAL: Duration = Duration::from_secs(60);
/// A session replaced for a configuration change connects out no sooner than this after the
/// old one sent its Cease (capped at half the ConnectRetry time), so the peer has torn its
/// side down first (see [`crate::session::NotBefore`]).
const RESET_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// One configured peer.
struct Peer {
    cfg: PeerConfig,
    id: PeerId,
    /// The current session's generation (reports of older ones are dropped).
    generation: u64,
    /// To the session, through its pump task.
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    counters: Arc<MessageCounters>,
    state: State,
    since: SystemTime,
    since_mono: Instant,
    negotiated: Option<Box<Negotiated>>,
    rx: DecodeContext,
    local_addr: Option<IpAddr>,
    /// Registered with the RIB (from the first Established until removed or reset).
    in_rib: bool,
    joined: bool,
    established_count: u64,
    prefixes_received: u64,
    notifications_sent: BTreeMap<(u8, u8), u64>,
    notifications_received: BTreeMap<(u8, u8), u64>,
    last_sent: Option<NotificationInfo>,
    last_received: Option<NotificationInfo>,
    last_error: Option<String>,
    /// Set with `last_error` when that came from a failed outgoing connect, cleared whenever
    /// `last_error` says something else.
    connect_failure: Option<ConnectFailure>,
    /// Graceful-restart helper: the peer's stale routes go at this time.
    stale_deadline: Option<Instant>,
    stale_deadline_wall: Option<SystemTime>,
    /// Families whose stale routes wait for the peer's End-of-RIB.
    stale_families: BTreeSet<Family>,
    max_prefix_tripped: bool,
    max_prefix_restart: Option<Instant>,
    max_prefix_restart_wall: Option<SystemTime>,
    /// Established while we defer selection (RFC 4724 §4.1): joins its group when that ends.
    deferred: bool,
    /// Families the peer sent End-of-RIB for since its session came up.
    eor_received: BTreeSet<Family>,
    /// When a graceful restart of the peer last skipped the idle hold (see `down`).
    quick_restart_at: Option<Instant>,
}

impl Peer {
    fn send(&self, c: Command) {
        // The pump is gone only when the session ended; the loop learns that from the report.
        let _ = self.commands.send(c);
    }

    fn established(&self) -> bool {
        self.state == State::Established
    }

    /// The Cease to end this session with. RFC 8538 §5: when both sides set the N bit, a
    /// Cease that means "this peer's routes must go" (maximum prefixes, administrative
    /// shutdown, peer de-configured) travels inside a Hard Reset, or the peer would keep our
    /// routes as stale; its data is the original subcode and data (§3).
    fn cease(&self, c: Cease) -> Cease {
        let n_bit = self
            .negotiated
            .as_ref()
            .filter(|_| self.established())
            .and_then(|n| n.graceful_restart.as_ref())
            .is_some_and(|g| g.notification);
        let hard = matches!(
            c.subcode,
            Cease::MAX_PREFIXES | Cease::ADMIN_SHUTDOWN | Cease::PEER_DECONFIGURED
        );
        if !(n_bit && hard) {
            return c;
        }
        let mut data = Vec::with_capacity(2 + c.data.len());
        data.push(CEASE);
        data.push(c.subcode);
        data.extend_from_slice(&c.data);
        Cease {
            subcode: Cease::HARD_RESET,
            data,
        }
    }
}

/// RFC 4271 §4.5: the Cease error code.
const CEASE: u8 = 6;

pub(super) struct Loop {
    cfg: SpeakerConfig,
    transport: Arc<dyn Transport>,
    rib: Rib,
    groups: UpdateGroups,
    peers: BTreeMap<IpAddr, Peer>,
    by_id: FastMap<PeerId, IpAddr>,
    by_generation: FastMap<u64, IpAddr>,
    policies: BTreeMap<String, Arc<Policy>>,
    subscribers: Subscribers,
    /// Peers that had a session up in this process (see [`Loop::local_config`]).
    up_once: BTreeSet<IpAddr>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: mpsc::Receiver<Inbound>,
    next_peer_id: u32,
    next_generation: u64,
    // Metrics.
    update_batches: u64,
    updates_processed: u64,
    update_time: Duration,
    update_time_max: Duration,
    update_histogram: DurationHistogram,
    /// RFC 4724 §4.1 selection deferral after our restart: ends at this time at the latest.
    deferral: Option<Instant>,
}

impl Loop {
    pub(super) fn new(cfg: SpeakerConfig, transport: Arc<dyn Transport>) -> Loop {
        let rib = Rib::new(RibConfig {
            asn: Asn(cfg.asn),
            router_id: cfg.router_id,
            cluster_id: cfg.cluster_id,
            best_path: cfg.best_path.clone(),
        });
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        // Peers keep our routes for our Restart Time: our table must reach them well before
        // that, so the deferral ends at three quarters of it even if an End-of-RIB is missing.
        let deferral = cfg
            .graceful_restart
            .as_ref()
            .filter(|g| g.restarting)
            .map(|g| Instant::now() + (g.restart_time * 3 / 4).max(Duration::from_secs(1)));
        Loop {
            cfg,
            transport,
            rib,
            groups: UpdateGroups::new(),
            peers: BTreeMap::new(),
            by_id: FastMap::default(),
            by_generation: FastMap::default(),
            policies: BTreeMap::new(),
            subscribers: Subscribers::default(),
            up_once: BTreeSet::new(),
            inbound_tx,
            inbound_rx,
            next_peer_id: 1,
            next_generation: 1,
            update_batches: 0,
            updates_processed: 0,
            update_time: Duration::ZERO,
            update_time_max: Duration::ZERO,
            update_histogram: DurationHistogram::default(),
            deferral,
        }
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = requests.recv() => match r {
                    Some(Request::Shutdown { graceful_restart, done }) => {
                        self.shutdown(graceful_restart).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(r) => {
                        self.request(r);
                        self.export();
                    }
                    None => {
                        self.shutdown(false).await;
                        return;
                    }
                },
                Some(first) = self.inbound_rx.recv() => {
                    let started = std::time::Instant::now();
                    let mut updates = self.inbound(first);
                    for _ in 1..BATCH {
                        if self.rib.pending_changes() >= MAX_PENDING_CHANGES {
                            break;
                        }
                        match self.inbound_rx.try_recv() {
                            Ok(ev) => updates += self.inbound(ev),
                            Err(_) => break,
                        }
                    }
                    self.export();
                    if updates > 0 {
                        let took = started.elapsed();
                        self.update_batches += 1;
                        self.updates_processed += updates;
                        self.update_time += took;
                        self.update_time_max = self.update_time_max.max(took);
                        // Each UPDATE of the batch at the batch's time per UPDATE.
                        let per = took / u32::try_from(updates).unwrap_or(u32::MAX);
                        self.update_histogram.observe(per, updates);
                    }
                }
                () = sleep => {
                    self.timers();
                    self.export();
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests.

    fn request(&mut self, r: Request) {
        match r {
            Request::AddPeer(cfg, reply) => {
                let _ = reply.send(self.add_peer(*cfg));
            }
            Request::UpdatePeer(cfg, reply) => {
                let _ = reply.send(self.update_peer(*cfg));
            }
            Request::RemovePeer(addr, reply) => {
                let _ = reply.send(self.remove_peer(addr));
            }
            Request::SetPolicy(cfg, reply) => {
                let _ = reply.send(self.set_policy(cfg));
            }
            Request::RemovePolicy(name, reply) => {
                let _ = reply.send(self.remove_policy(&name));
            }
            Request::Originate(prefix, attrs, reply) => {
                self.rib.originate(prefix, *attrs);
                let _ = reply.send(());
            }
            Request::Withdraw(prefix, reply) => {
                let _ = reply.send(self.rib.withdraw_local(prefix));
            }
            Request::Subscribe(reply) => {
                // Changes not yet exported belong to the snapshot's past: publish them first
                // so the new subscriber does not see them twice (harmless) or others miss them.
                self.export();
                let snapshot = snapshot(&self.rib);
                let _ = reply.send(self.subscribers.add(snapshot.into_iter()));
            }
            Request::Peers(reply) => {
                let _ = reply.send(self.peer_status());
            }
            Request::RibLookup(prefix, reply) => {
                let _ = reply.send(self.lookup(prefix));
            }
            Request::AdjRibIn(addr, reply) => {
                let _ = reply.send(self.adj_rib_in(addr));
            }
            Request::AdjRibOut(addr, reply) => {
                let _ = reply.send(self.adj_rib_out(addr));
            }
            Request::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Request::Shutdown { .. } => {}
        }
    }

    /// What we offer `cfg`'s peer in the OPEN. RFC 4724 §3: the Restart State bit only until
    /// a session with that peer has come up in this process; after that, a reconnect is not a
    /// restart of ours and forwarding was kept throughout, so the F bits are set (a helper
    /// that kept our routes as stale would otherwise flush them at once).
    fn local_config(&self, cfg: &PeerConfig) -> LocalConfig {
        let mut l = cfg.local_config(&self.cfg);
        if self.up_once.contains(&cfg.address)
            && let Some(g) = l.graceful_restart.as_mut()
        {
            g.restarting = false;
            g.forwarding_preserved = cfg.families();
        }
        l
    }

    fn policy(
        &self,
        peer: IpAddr,
        field: &'static str,
        name: &Option<String>,
    ) -> Result<Option<Arc<Policy>>, SpeakerError> {
        match name {
            None => Ok(None),
            Some(n) => {
                self.policies
                    .get(n)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| SpeakerError::UnknownPolicy {
                        peer,
                        field,
                        name: n.clone(),
                    })
            }
        }
    }

    fn add_peer(&mut self, cfg: PeerConfig) -> Result<(), SpeakerError> {
        cfg.validate(&self.cfg)?;
        if self.peers.contains_key(&cfg.address) {
            return Err(SpeakerError::DuplicatePeer(cfg.address));
        }
        self.policy(cfg.address, "import_policy", &cfg.import_policy)?;
        self.policy(cfg.address, "export_policy", &cfg.export_policy)?;
        let id = PeerId(self.next_peer_id);
        self.next_peer_id += 1;
        let peer = self.spawn_session(cfg, id, Duration::ZERO)?;
        info!(peer = %peer.cfg.address, asn = peer.cfg.remote_asn, "peer added");
        self.by_id.insert(id, peer.cfg.address);
        self.peers.insert(peer.cfg.address, peer);
        Ok(())
    }

    /// Starts a session for `cfg` (registering it with the transport) as a new [`Peer`].
    /// Its first outgoing connection waits `delay` (incoming ones are taken at once).
    fn spawn_session(
        &mut self,
        cfg: PeerConfig,
        id: PeerId,
        delay: Duration,
    ) -> Result<Peer, SpeakerError> {
        let (in_tx, in_rx) = incoming_channel();
        self.transport.register(&cfg, in_tx)?;
        let generation = self.next_generation;
        self.next_generation += 1;
        let counters = Arc::new(MessageCounters::default());
        let (ev_tx, mut ev_rx) = mpsc::channel::<SessionEvent>(64);
        let session = spawn_counted(
            SessionConfig {
                peer: cfg.address,
                local: self.local_config(&cfg),
                fsm: cfg.fsm_config(),
            },
            self.transport
                .connector(&cfg)
                .map(|c| -> Arc<dyn Connector> {
                    if delay.is_zero() {
                        c
                    } else {
                        Arc::new(NotBefore::new(c, tokio::time::Instant::now() + delay))
                    }
                }),
            in_rx,
            ev_tx,
            counters.clone(),
        );
        // Reports, tagged; then the end of the session.
        let inbound = self.inbound_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                let msg = Inbound {
                    generation,
                    kind: Some(ev.kind),
                };
                if inbound.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = inbound
                .send(Inbound {
                    generation,
                    kind: None,
                })
                .await;
        });
        // Commands, in order, without the loop ever waiting.
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
        let session_commands = session.commands;
        tokio::spawn(async move {
            while let Some(c) = cmd_rx.recv().await {
                if session_commands.send(c).await.is_err() {
                    return;
                }
            }
            // Dropping `session_commands` stops a session that was not told otherwise
            // (Cease / Peer De-configured).
        });
        self.by_generation.insert(generation, cfg.address);
        Ok(Peer {
            cfg,
            id,
            generation,
            commands: cmd_tx,
            task: session.task,
            counters,
            state: State::Idle,
            since: SystemTime::now(),
            since_mono: Instant::now(),
            negotiated: None,
            rx: DecodeContext::default(),
            local_addr: None,
            in_rib: false,
            joined: false,
            established_count: 0,
            prefixes_received: 0,
            notifications_sent: BTreeMap::new(),
            notifications_received: BTreeMap::new(),
            last_sent: None,
            last_received: None,
            last_error: None,
            connect_failure: None,
            stale_deadline: None,
            stale_deadline_wall: None,
            stale_families: BTreeSet::new(),
            quick_restart_at: None,
            max_prefix_tripped: false,
            max_prefix_restart: None,
            max_prefix_restart_wall: None,
            deferred: false,
            eor_received: BTreeSet::new(),
        })
    }

    /// Takes the peer out of the RIB and its group (its routes are withdrawn).
    fn detach(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.joined {
            let _ = self.groups.leave(p.id);
            p.joined = false;
        }
        if p.in_rib {
            if let Err(e) = self.rib.remove_peer(p.id) {
                warn!(peer = %addr, "removing from the RIB: {e}");
            }
            p.in_rib = false;
        }
        p.stale_deadline = None;
        p.stale_deadline_wall = None;
        p.stale_families.clear();
    }

    fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        if !self.peers.contains_key(&addr) {
            return Err(SpeakerError::UnknownPeer(addr));
        }
        self.detach(addr);
        self.transport.unregister(addr);
        if let Some(p) = self.peers.remove(&addr) {
            p.send(Command::Shutdown(
                p.cease(Cease::new(Cease::PEER_DECONFIGURED)),
            ));
            self.by_id.remove(&p.id);
            self.by_generation.remove(&p.generation);
        }
        info!(peer = %addr, "peer removed");
        // It may have been the last peer a selection deferral waited for.
        self.check_deferral();
        Ok(())
    }

    /// Replaces a peer's session with a new one for `cfg` (Cease / Other Configuration
    /// Change to the old one). Counters and history survive.
    fn reset_peer(&mut self, cfg: PeerConfig) -> Result<(), SpeakerError> {
        let addr = cfg.address;
        self.detach(addr);
        let Some(old) = self.peers.remove(&addr) else {
            return Err(SpeakerError::UnknownPeer(addr));
        };
        old.send(Command::Shutdown(Cease::new(Cease::OTHER_CONFIG_CHANGE)));
        self.by_generation.remove(&old.generation);
        let delay = RESET_RECONNECT_DELAY.min(cfg.connect_retry / 2);
        let mut new = match self.spawn_session(cfg, old.id, delay) {
            Ok(p) => p,
            Err(e) => {
                // The transport refused the new configuration: keep the old one running.
                self.by_generation.insert(old.generation, addr);
                self.peers.insert(addr, old);
                return Err(e);
            }
        };
        new.established_count = old.established_count;
        new.notifications_sent = old.notifications_sent;
        new.notifications_received = old.notifications_received;
        new.last_sent = old.last_sent;
        new.last_received = old.last_received;
        new.last_error = Some("reset for a configuration change".into());
        info!(peer = %addr, "session reset for a configuration change");
        self.peers.insert(addr, new);
        Ok(())
    }

    fn update_peer(&mut self, cfg: PeerConfig) -> Result<PeerChange, SpeakerError> {
        cfg.validate(&self.cfg)?;
        let addr = cfg.address;
        let Some(old) = self.peers.get(&addr).map(|p| p.cfg.clone()) else {
            return Err(SpeakerError::UnknownPeer(addr));
        };
        let import = self.policy(addr, "import_policy", &cfg.import_policy)?;
        self.policy(addr, "export_policy", &cfg.export_policy)?;
        let change = classify_change(&old, &cfg);
        match change {
            PeerChange::Unchanged => Ok(change),
            PeerChange::Reset => {
                self.reset_peer(cfg)?;
                Ok(change)
            }
            PeerChange::AppliedLive | PeerChange::Refresh => {
                let export_changed = old.export_policy != cfg.export_policy
                    || old.next_hop_mode != cfg.next_hop_mode;
                let max_changed = old.max_prefix != cfg.max_prefix;
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.cfg = cfg.clone();
                }
                if max_changed {
                    self.apply_max_prefix(addr);
                }
                if export_changed && !self.regroup(addr) {
                    self.reset_peer(cfg)?;
                    return Ok(PeerChange::Reset);
                }
                if change == PeerChange::Refresh {
                    return Ok(self.import_changed(addr, import));
                }
                Ok(change)
            }
        }
    }

    /// A peer's max-prefix setting changed: count against the new limit, and a session held
    /// down by the old one starts again.
    fn apply_max_prefix(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if p.in_rib {
            let _ = self
                .rib
                .set_max_prefix(p.id, p.cfg.max_prefix.map(|m| m.limit));
        }
        if p.max_prefix_tripped {
            p.max_prefix_tripped = false;
            p.max_prefix_restart = None;
            p.max_prefix_restart_wall = None;
            p.send(Command::Start);
        }
    }

    /// The import policy of `addr` is now `policy`: refilter by asking the peer to resend
    /// (ROUTE-REFRESH, RFC 2918), or reset it when it cannot. Returns what was done.
    fn import_changed(&mut self, addr: IpAddr, policy: Option<Arc<Policy>>) -> PeerChange {
        let Some(p) = self.peers.get(&addr) else {
            return PeerChange::Unchanged;
        };
        if p.in_rib {
            let _ = self.rib.set_import_policy(p.id, policy);
        }
        let Some(n) = p.negotiated.as_ref().filter(|_| p.established()) else {
            // Not established: the next session starts with the new policy.
            return PeerChange::AppliedLive;
        };
        if n.route_refresh || n.enhanced_route_refresh {
            for f in &n.families {
                p.send(Command::RouteRefresh(RouteRefresh::new(
                    *f,
                    RouteRefreshSubtype::Request,
                )));
            }
            info!(peer = %addr, "import policy changed: route refresh requested");
            PeerChange::Refresh
        } else {
            let cfg = p.cfg.clone();
            match self.reset_peer(cfg) {
                Ok(()) => PeerChange::Reset,
                Err(e) => {
                    warn!(peer = %addr, "reset after import policy change failed: {e}");
                    PeerChange::AppliedLive
                }
            }
        }
    }

    /// Moves an established peer to the update group its current config asks for, sending
    /// it the difference. False when that failed (the caller resets the peer).
    fn regroup(&mut self, addr: IpAddr) -> bool {
        let Some(p) = self.peers.get(&addr) else {
            return true;
        };
        if !p.joined {
            return true;
        }
        let (id, key) = (p.id, self.group_key(p));
        let policy = match self.policy(addr, "export_policy", &p.cfg.export_policy) {
            Ok(x) => x,
            Err(_) => return false,
        };
        // Queued changes go to the old group first (the ordering rule in `rib::out`).
        self.export();
        match self.groups.regroup(id, key, policy, &self.rib) {
            Ok((gid, updates)) => {
                self.send_to(addr, gid, updates, &[]);
                true
            }
            Err(e) => {
                warn!(peer = %addr, "moving to a new update group: {e}");
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.joined = false;
                }
                false
            }
        }
    }

    fn set_policy(&mut self, cfg: PolicyConfig) -> Result<PolicyApplied, SpeakerError> {
        let policy = Arc::new(Policy::from_config(&cfg)?);
        let name = cfg.name.clone();
        let old = self.policies.insert(name.clone(), policy.clone());
        let mut out = PolicyApplied {
            created: old.is_none(),
            ..PolicyApplied::default()
        };
        if old.as_deref() == Some(&*policy) {
            return Ok(out);
        }
        let importers: Vec<IpAddr> = self
            .peers
            .values()
            .filter(|p| p.cfg.import_policy.as_deref() == Some(&name))
            .map(|p| p.cfg.address)
            .collect();
        for addr in importers {
            match self.import_changed(addr, Some(policy.clone())) {
                PeerChange::Refresh => out.refreshed.push(addr),
                PeerChange::Reset => out.reset.push(addr),
                _ => {}
            }
        }
        // Queued changes were computed with the old policy: send them first.
        self.export();
        out.export_groups = self.groups.replace_export_policy(&name, policy, &self.rib);
        Ok(out)
    }

    fn remove_policy(&mut self, name: &str) -> Result<(), SpeakerError> {
        if !self.policies.contains_key(name) {
            return Err(SpeakerError::NoSuchPolicy { name: name.into() });
        }
        let users: Vec<IpAddr> = self
            .peers
            .values()
            .filter(|p| {
                p.cfg.import_policy.as_deref() == Some(name)
                    || p.cfg.export_policy.as_deref() == Some(name)
            })
            .map(|p| p.cfg.address)
            .collect();
        if !users.is_empty() {
            return Err(SpeakerError::PolicyInUse {
                name: name.into(),
                peers: users,
            });
        }
        self.policies.remove(name);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Session reports.

    /// Handles one report; returns how many UPDATEs it was (for the processing-time metric).
    fn inbound(&mut self, ev: Inbound) -> u64 {
        let Some(&addr) = self.by_generation.get(&ev.generation) else {
            return 0;
        };
        let Some(kind) = ev.kind else {
            // The session task ended without being replaced (it never does on its own while
            // its pump lives): forget the generation.
            self.by_generation.remove(&ev.generation);
            return 0;
        };
        match kind {
            SessionEventKind::StateChanged { to, .. } => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.state = to;
                    p.since = SystemTime::now();
                    p.since_mono = Instant::now();
                }
            }
            SessionEventKind::Transport { local, .. } => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.local_addr = local.map(|a| canonical(a.ip()));
                }
            }
            SessionEventKind::Established(n) => self.established(addr, n),
            SessionEventKind::Update(u) => {
                self.update(addr, &u);
                return 1;
            }
            SessionEventKind::RouteRefresh(rr) => self.route_refresh(addr, rr),
            SessionEventKind::ConnectFailed { cause } => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    // RFC 2385 §2.0: a segment without the right digest is dropped without an
                    // answer, so a password mismatch looks exactly like an absent peer.
                    let hint = if cause.is_silent() && p.cfg.md5_password.is_some() {
                        "; a TCP MD5 password is set, and a peer with a different password \
                         (or none) drops our segments without answering"
                    } else {
                        ""
                    };
                    let error = format!("connecting: {cause}{hint}");
                    // Once per distinct cause, not once per ConnectRetry.
                    if p.last_error.as_deref() != Some(error.as_str()) {
                        info!(peer = %addr, "cannot connect: {error}");
                    }
                    p.last_error = Some(error);
                    p.connect_failure = Some(cause);
                }
            }
            SessionEventKind::Down {
                reason,
                was_established,
            } => self.down(addr, reason, was_established),
        }
        0
    }

    fn group_key(&self, p: &Peer) -> GroupKey {
        let n = p.negotiated.as_deref();
        let families = n.map(|n| n.families.clone()).unwrap_or_default();
        let local = p.cfg.source.or(p.local_addr);
        GroupKey {
            target: ExportTarget {
                peer_type: p.cfg.peer_type(&self.cfg),
                peer_asn: Asn(p.cfg.remote_asn),
                next_hop_mode: p.cfg.next_hop_mode,
            },
            export_policy: p.cfg.export_policy.clone(),
            four_octet_as: n.is_some_and(|n| n.four_octet_as),
            extended_message: n.is_some_and(|n| n.extended_message),
            extended_next_hop: n.is_some_and(|n| {
                n.extended_next_hop_send
                    .contains(&(Family::IPV4_UNICAST, Afi::IPV6))
            }),
            ipv4: families.contains(&Family::IPV4_UNICAST),
            ipv6: families.contains(&Family::IPV6_UNICAST),
            local_v4: match local {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            local_v6: match local {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            },
            add_path_v4: n.is_some_and(|n| n.add_path_send.contains(&Family::IPV4_UNICAST)),
            add_path_v6: n.is_some_and(|n| n.add_path_send.contains(&Family::IPV6_UNICAST)),
        }
    }

    /// The RIB reports every path change (not only best changes) while some update group
    /// sends with ADD-PATH, and costs nothing extra otherwise.
    fn track_paths(&mut self) {
        let on = self.groups.any_add_path();
        if self.rib.tracks_paths() != on {
            self.rib.set_track_paths(on);
        }
    }

    fn established(&mut self, addr: IpAddr, n: Box<Negotiated>) {
        let peer_type = match self.peers.get(&addr) {
            Some(p) => p.cfg.peer_type(&self.cfg),
            None => return,
        };
        // Changes queued before this peer joins go to the existing members only; the
        // newcomer's dump already reflects them (the ordering rule in `rib::out`).
        self.export();
        // The first session with this peer in this process: later OPENs change (R and F bits).
        let next_open = match self.peers.get(&addr) {
            Some(p) if self.cfg.graceful_restart.is_some() && self.up_once.insert(addr) => {
                Some(self.local_config(&p.cfg))
            }
            _ => None,
        };
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.established_count += 1;
        p.prefixes_received = 0;
        p.rx = n.rx.clone();
        let info = PeerInfo {
            id: p.id,
            peer_type,
            asn: n.peer_asn,
            router_id: n.peer_id,
            address: addr,
        };
        let families = n.families.clone();
        let gr = n.graceful_restart.clone();
        // RFC 4724 §3: the Restart State bit is for the first session after our restart; a
        // later reconnect of this process is not a restart.
        if let Some(l) = next_open {
            p.send(Command::SetLocalConfig(Box::new(l)));
        }
        p.negotiated = Some(n);
        info!(peer = %addr, "session established");
        let r = if p.in_rib {
            self.rib.set_peer_info(info)
        } else {
            let import = p
                .cfg
                .import_policy
                .as_ref()
                .and_then(|name| self.policies.get(name).cloned());
            self.rib
                .add_peer(info, import, p.cfg.max_prefix.map(|m| m.limit))
        };
        if let Err(e) = r {
            warn!(peer = %addr, "registering with the RIB: {e}");
        }
        p.in_rib = true;
        // RFC 4724 §4.2: back after a restart. Families it no longer preserves (no F bit, or
        // no graceful restart any more) lose their stale routes now; the others wait for its
        // End-of-RIB, at most the stale-routes time.
        if !p.stale_families.is_empty() {
            let keep: BTreeSet<Family> = p
                .stale_families
                .iter()
                .copied()
                .filter(|f| {
                    gr.as_ref()
                        .is_some_and(|g| g.families.get(f).copied().unwrap_or(false))
                        && families.contains(f)
                })
                .collect();
            for f in p.stale_families.difference(&keep) {
                let _ = self.rib.end_of_rib(p.id, *f);
            }
            p.stale_families = keep;
            if p.stale_families.is_empty() {
                p.stale_deadline = None;
                p.stale_deadline_wall = None;
            } else {
                let wait = self
                    .cfg
                    .graceful_restart
                    .as_ref()
                    .map_or(Duration::from_secs(360), |g| g.stale_routes_time);
                p.stale_deadline = Some(Instant::now() + wait);
                p.stale_deadline_wall = Some(SystemTime::now() + wait);
            }
        }
        p.eor_received.clear();
        // RFC 4724 §4.1: while we defer selection after our restart, nobody gets a table yet.
        // This peer may be the last one we wait for, or one we need not wait for at all
        // (restarting itself, or without graceful restart): look again now, or two speakers
        // restarting together would each wait for the other until the deferral timer.
        if self.deferral.is_some() {
            p.deferred = true;
            self.check_deferral();
            return;
        }
        self.join_group(addr);
    }

    /// Puts an established peer into its update group and sends it the initial table and an
    /// End-of-RIB per family.
    fn join_group(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let id = p.id;
        let families: Vec<Family> = p
            .negotiated
            .as_ref()
            .map(|n| n.families.iter().copied().collect())
            .unwrap_or_default();
        let key = self.group_key(p);
        let policy = key
            .export_policy
            .as_ref()
            .and_then(|name| self.policies.get(name).cloned());
        match self.groups.join(id, key, policy, &self.rib) {
            Ok((gid, updates)) => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.joined = true;
                }
                // Before any further RIB change: an ADD-PATH group must hear of every one.
                self.track_paths();
                // RFC 4724 §2: End-of-RIB after the initial table, per family; sent whether
                // or not graceful restart was negotiated (receivers ignore what they do not
                // use, and it tells monitors the table is complete).
                self.send_to(addr, gid, updates, &families);
            }
            Err(e) => warn!(peer = %addr, "joining an update group: {e}"),
        }
    }

    /// Encodes `updates` (+ End-of-RIB markers) for the group's context and sends them to one
    /// peer.
    fn send_to(
        &self,
        addr: IpAddr,
        group: crate::rib::out::GroupId,
        updates: Vec<Update>,
        eor: &[Family],
    ) {
        let Some(g) = self.groups.group(group) else {
            return;
        };
        let cx = g.key().context();
        let eors = eor.iter().map(|f| Update::end_of_rib(*f));
        let (bytes, messages) = encode(updates.into_iter().chain(eors), &cx);
        if messages > 0
            && let Some(p) = self.peers.get(&addr)
        {
            p.send(Command::SendEncoded { bytes, messages });
        }
    }

    fn update(&mut self, addr: IpAddr, u: &Update) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if !p.in_rib || p.max_prefix_tripped {
            return;
        }
        let out = match self.rib.receive(p.id, u, &p.rx) {
            Ok(o) => o,
            Err(e) => {
                warn!(peer = %addr, "UPDATE not applied: {e}");
                return;
            }
        };
        p.prefixes_received += u64::from(out.announced);
        if let Some(f) = out.end_of_rib {
            debug!(peer = %addr, family = %f, "End-of-RIB");
            p.eor_received.insert(f);
            if p.stale_families.remove(&f) && p.stale_families.is_empty() {
                p.stale_deadline = None;
                p.stale_deadline_wall = None;
            }
        }
        if out.max_prefix_exceeded {
            self.trip_max_prefix(addr);
        }
        if out.end_of_rib.is_some() {
            self.check_deferral();
        }
    }

    /// RFC 4486 §4: Cease / Maximum Number of Prefixes Reached, data AFI, SAFI and the limit.
    fn trip_max_prefix(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let Some(m) = p.cfg.max_prefix else {
            return;
        };
        warn!(peer = %addr, limit = m.limit, "maximum number of prefixes exceeded");
        p.max_prefix_tripped = true;
        if let Some(d) = m.restart_after {
            p.max_prefix_restart = Some(Instant::now() + d);
            p.max_prefix_restart_wall = Some(SystemTime::now() + d);
        }
        let family = p
            .negotiated
            .as_ref()
            .and_then(|n| n.families.iter().next().copied())
            .unwrap_or(Family::IPV4_UNICAST);
        let mut data = Vec::with_capacity(7);
        data.extend_from_slice(&family.afi.0.to_be_bytes());
        data.push(family.safi.0);
        data.extend_from_slice(&m.limit.to_be_bytes());
        p.send(Command::AutomaticStop(p.cease(Cease {
            subcode: Cease::MAX_PREFIXES,
            data,
        })));
        // Our decision, not a restart: the routes go now (also with graceful restart).
        let id = p.id;
        if p.joined {
            let _ = self.groups.leave(id);
            p.joined = false;
        }
        let _ = self.rib.peer_down(id);
    }

    fn route_refresh(&mut self, addr: IpAddr, rr: RouteRefresh) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let family = rr.family();
        let negotiated = p.negotiated.as_deref();
        if !negotiated.is_some_and(|n| n.families.contains(&family)) {
            // RFC 2918 §4: a family not negotiated is ignored.
            debug!(peer = %addr, %family, "ROUTE-REFRESH for a family not negotiated; ignored");
            return;
        }
        let enhanced = negotiated.is_some_and(|n| n.enhanced_route_refresh);
        let id = p.id;
        match rr.subtype {
            RouteRefreshSubtype::Request => {
                if !p.joined {
                    return;
                }
                // Queued changes first, so the re-sent table is not followed by older news.
                self.export();
                let updates = match self.groups.refresh_family(id, family, &self.rib) {
                    Ok(u) => u,
                    Err(e) => {
                        warn!(peer = %addr, "route refresh: {e}");
                        return;
                    }
                };
                let Some(gid) = self.groups.group_of(id) else {
                    return;
                };
                let Some(p) = self.peers.get(&addr) else {
                    return;
                };
                // RFC 7313 §4: with enhanced route refresh, bracket the table with BoRR/EoRR
                // so the peer can drop what we no longer send.
                if enhanced {
                    p.send(Command::RouteRefresh(RouteRefresh::new(
                        family,
                        RouteRefreshSubtype::BeginOfRouteRefresh,
                    )));
                }
                self.send_to(addr, gid, updates, &[]);
                if enhanced && let Some(p) = self.peers.get(&addr) {
                    p.send(Command::RouteRefresh(RouteRefresh::new(
                        family,
                        RouteRefreshSubtype::EndOfRouteRefresh,
                    )));
                }
            }
            // RFC 7313 §4: the peer re-sends its table for `family`; what it does not re-send
            // by EoRR goes.
            RouteRefreshSubtype::BeginOfRouteRefresh if enhanced && p.in_rib => {
                let _ = self.rib.mark_stale_family(id, family);
            }
            // During a graceful restart the stale routes wait for End-of-RIB instead.
            RouteRefreshSubtype::EndOfRouteRefresh
                if enhanced && p.in_rib && !p.stale_families.contains(&family) =>
            {
                let _ = self.rib.end_of_rib(id, family);
            }
            // RFC 7313 §5: BoRR/EoRR without the capability, and reserved subtypes: ignored.
            _ => {}
        }
    }

    fn down(&mut self, addr: IpAddr, reason: DownReason, was_established: bool) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let now = SystemTime::now();
        match &reason {
            DownReason::NotificationSent { notification } => {
                *p.notifications_sent
                    .entry((notification.code, notification.subcode))
                    .or_default() += 1;
                p.last_sent = Some(NotificationInfo::new(notification, now));
            }
            DownReason::NotificationReceived { notification } => {
                *p.notifications_received
                    .entry((notification.code, notification.subcode))
                    .or_default() += 1;
                p.last_received = Some(NotificationInfo::new(notification, now));
            }
            _ => {}
        }
        if !was_established {
            // A failed connect already left its cause, which says more than the FSM's
            // generic "TCP connection failed".
            let keep = matches!(reason, DownReason::Stopped)
                || (matches!(reason, DownReason::ConnectionFailed) && p.connect_failure.is_some());
            if !keep {
                p.last_error = Some(reason.to_string());
                p.connect_failure = None;
            }
            return;
        }
        p.last_error = Some(reason.to_string());
        p.connect_failure = None;
        warn!(peer = %addr, "session down: {reason}");
        let id = p.id;
        p.deferred = false;
        if p.joined {
            let _ = self.groups.leave(id);
            p.joined = false;
        }
        let negotiated = p.negotiated.take();
        if !p.in_rib || p.max_prefix_tripped {
            return;
        }
        let gr = negotiated.as_ref().and_then(|n| n.graceful_restart.clone());
        let keep = match (&gr, &reason) {
            (None, _) => false,
            (Some(_), DownReason::ConnectionFailed) => true,
            // RFC 8538 §3: with the N bit on both sides, any NOTIFICATION but Hard Reset keeps
            // graceful restart.
            (Some(g), DownReason::NotificationSent { notification })
            | (Some(g), DownReason::NotificationReceived { notification }) => {
                g.notification && !is_hard_reset(notification)
            }
            (Some(_), _) => false,
        };
        match gr.filter(|_| keep) {
            Some(g) => {
                let marked = self.rib.mark_stale(id).unwrap_or(0);
                let families: BTreeSet<Family> =
                    negotiated.map(|n| n.families.clone()).unwrap_or_default();
                // Families the peer did not include in its capability are not preserved.
                let mut kept = BTreeSet::new();
                for f in families {
                    if g.families.contains_key(&f) {
                        kept.insert(f);
                    } else {
                        let _ = self.rib.end_of_rib(id, f);
                    }
                }
                let wait = Duration::from_secs(u64::from(g.restart_time));
                info!(peer = %addr, routes = marked, restart_time = g.restart_time, "graceful restart: keeping the peer's routes as stale");
                if let Some(p) = self.peers.get_mut(&addr) {
                    if kept.is_empty() || wait.is_zero() {
                        let _ = self.rib.sweep_stale(id);
                    } else {
                        p.stale_families = kept;
                        p.stale_deadline = Some(Instant::now() + wait);
                        p.stale_deadline_wall = Some(SystemTime::now() + wait);
                        // RFC 4724 §4.2: the peer is restarting and comes back within its
                        // restart time. The idle hold (flap damping) would refuse its new
                        // connection for seconds while its routes sit stale, so the session
                        // starts again at once — at most once per QUICK_RESTART_INTERVAL, so a
                        // peer that keeps failing is still damped.
                        let now = Instant::now();
                        if p.quick_restart_at
                            .is_none_or(|t| now.duration_since(t) >= QUICK_RESTART_INTERVAL)
                        {
                            p.quick_restart_at = Some(now);
                            p.send(Command::Start);
                        }
                    }
                }
            }
            None => {
                let _ = self.rib.peer_down(id);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers.

    fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| [p.stale_deadline, p.max_prefix_restart])
            .chain([self.deferral])
            .flatten()
            .min()
    }

    /// RFC 4724 §4.1 (a): selection deferral ends once every peer we wait for sent End-of-RIB
    /// for each family. Not waited for: peers without graceful restart, and peers that are
    /// restarting themselves (R bit). A peer that is not up yet is waited for (until the timer).
    fn check_deferral(&mut self) {
        if self.deferral.is_none() {
            return;
        }
        let gr_on = self.cfg.graceful_restart.is_some();
        let done = self.peers.values().all(|p| {
            if !(gr_on && p.cfg.graceful_restart) {
                return true;
            }
            match p.negotiated.as_deref().filter(|_| p.established()) {
                None => false,
                Some(n) => match &n.graceful_restart {
                    None => true,
                    Some(g) if g.restarting => true,
                    Some(_) => n.families.iter().all(|f| p.eor_received.contains(f)),
                },
            }
        });
        if done {
            self.end_deferral("End-of-RIB from every peer");
        }
    }

    fn end_deferral(&mut self, why: &str) {
        self.deferral = None;
        info!("graceful restart: route selection deferral over ({why}); sending tables");
        // Changes so far go to nobody (no member yet); the dumps below carry the result.
        self.export();
        let waiting: Vec<IpAddr> = self
            .peers
            .values()
            .filter(|p| p.deferred)
            .map(|p| p.cfg.address)
            .collect();
        for addr in waiting {
            if let Some(p) = self.peers.get_mut(&addr) {
                p.deferred = false;
            }
            self.join_group(addr);
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.deferral.is_some_and(|t| t <= now) {
            self.end_deferral("selection deferral timer");
        }
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            if p.stale_deadline.is_some_and(|t| t <= now) {
                p.stale_deadline = None;
                p.stale_deadline_wall = None;
                p.stale_families.clear();
                let n = self.rib.sweep_stale(p.id).unwrap_or(0);
                info!(peer = %addr, routes = n, "graceful restart: stale routes timed out");
            }
            if p.max_prefix_restart.is_some_and(|t| t <= now) {
                p.max_prefix_restart = None;
                p.max_prefix_restart_wall = None;
                p.max_prefix_tripped = false;
                info!(peer = %addr, "max-prefix restart timer expired: starting the session");
                p.send(Command::Start);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Export.

    /// Runs the RIB's pending best-path changes to subscribers and update groups, and sends
    /// what the groups produce: encoded once per group, the same bytes to every member.
    fn export(&mut self) {
        let changes = self.rib.take_changes();
        if !changes.is_empty() {
            self.subscribers.publish(&changes);
            self.groups.process(&changes, &self.rib);
        }
        drop(changes);
        // Groups can have work without new changes (an export policy was replaced).
        let batches = match self.groups.flush() {
            Ok(b) => b,
            Err(e) => {
                warn!("packing outbound UPDATEs: {e}");
                Vec::new()
            }
        };
        for b in batches {
            self.send_batch(b);
        }
        // Off again once the last ADD-PATH group is gone (on at the join that needs it).
        self.track_paths();
        self.rib.purge();
    }

    fn send_batch(&self, b: OutBatch) {
        let Some(g) = self.groups.group(b.group) else {
            return;
        };
        let cx = g.key().context();
        let (bytes, messages) = encode(b.updates.into_iter(), &cx);
        if messages == 0 {
            return;
        }
        for m in b.members {
            if let Some(p) = self.by_id.get(&m).and_then(|a| self.peers.get(a)) {
                p.send(Command::SendEncoded {
                    bytes: bytes.clone(),
                    messages,
                });
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Queries.

    fn peer_status(&mut self) -> Vec<PeerStatus> {
        let advertised = self.advertised();
        let now = Instant::now();
        self.peers
            .values()
            .map(|p| PeerStatus {
                address: p.cfg.address,
                remote_asn: p.cfg.remote_asn,
                description: p.cfg.description.clone(),
                state: p.state,
                since: p.since,
                for_: now.saturating_duration_since(p.since_mono),
                router_id: p.negotiated.as_ref().map(|n| n.peer_id),
                established_count: p.established_count,
                prefixes_accepted: self.rib.accepted(p.id).unwrap_or(0),
                prefixes_received: p.prefixes_received,
                prefixes_advertised: advertised.get(&p.id).copied().unwrap_or(0),
                messages_sent: p.counters.sent(),
                messages_received: p.counters.received(),
                notifications_sent: p.notifications_sent.values().sum(),
                notifications_received: p.notifications_received.values().sum(),
                last_notification_sent: p.last_sent.clone(),
                last_notification_received: p.last_received.clone(),
                last_error: p.last_error.clone(),
                connect_failure: p.connect_failure.clone(),
                end_of_rib: p
                    .negotiated
                    .as_deref()
                    .filter(|_| p.established())
                    .is_some_and(|n| n.families.iter().all(|f| p.eor_received.contains(f))),
                stale_until: p.stale_deadline_wall,
                max_prefix_restart_at: p.max_prefix_restart_wall,
                max_prefix_tripped: p.max_prefix_tripped,
            })
            .collect()
    }

    /// Routes each established peer is sent, counted once per update group.
    fn advertised(&mut self) -> FastMap<PeerId, u32> {
        let per_group: FastMap<_, u32> = self
            .groups
            .advertised_counts(&self.rib)
            .into_iter()
            .collect();
        let mut out = FastMap::default();
        for p in self.peers.values().filter(|p| p.joined) {
            if let Some(n) = self.groups.group_of(p.id).and_then(|g| per_group.get(&g)) {
                out.insert(p.id, *n);
            }
        }
        out
    }

    fn lookup(&self, prefix: Prefix) -> Option<RouteInfo> {
        let paths = self.rib.paths(&prefix);
        if paths.is_empty() {
            return None;
        }
        let ecmp = self.rib.ecmp(&prefix).len();
        Some(RouteInfo {
            prefix,
            paths: paths
                .iter()
                .enumerate()
                .map(|(i, p)| PathInfo {
                    from: (p.peer() != PeerId::LOCAL)
                        .then(|| self.by_id.get(&p.peer()).copied())
                        .flatten(),
                    path_id: p.path_id(),
                    best: i == 0,
                    multipath: i < ecmp,
                    stale: p.is_stale(),
                    attrs: PathAttrsView::from(&**p.attrs()),
                })
                .collect(),
        })
    }

    fn adj_rib_in(&self, addr: IpAddr) -> Result<Vec<AdjRoute>, SpeakerError> {
        let p = self
            .peers
            .get(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        if !p.in_rib {
            return Ok(Vec::new());
        }
        let mut out: Vec<AdjRoute> = self
            .rib
            .adj_rib_in(p.id)
            .map(|(prefix, path)| AdjRoute {
                prefix,
                path_id: path.path_id(),
                attrs: PathAttrsView::from(&**path.attrs()),
            })
            .collect();
        out.sort_by_key(|a| (a.prefix, a.path_id));
        Ok(out)
    }

    fn adj_rib_out(&self, addr: IpAddr) -> Result<Vec<AdjRoute>, SpeakerError> {
        let p = self
            .peers
            .get(&addr)
            .ok_or(SpeakerError::UnknownPeer(addr))?;
        if !p.joined {
            return Ok(Vec::new());
        }
        let mut out: Vec<AdjRoute> = self
            .groups
            .exported(p.id, &self.rib)
            .unwrap_or_default()
            .into_iter()
            .map(|(prefix, path_id, a)| AdjRoute {
                prefix,
                path_id,
                attrs: PathAttrsView::from(&*a),
            })
            .collect();
        out.sort_by_key(|a| (a.prefix, a.path_id));
        Ok(out)
    }

    fn metrics(&mut self) -> Metrics {
        let mut by_state: BTreeMap<State, u32> = State::ALL.iter().map(|s| (*s, 0)).collect();
        for p in self.peers.values() {
            *by_state.entry(p.state).or_default() += 1;
        }
        let advertised = self.advertised();
        let stats = self.rib.stats();
        Metrics {
            sessions_by_state: by_state.into_iter().collect(),
            peers: self
                .peers
                .values()
                .map(|p| PeerMetrics {
                    address: p.cfg.address,
                    state: p.state,
                    prefixes_received: p.prefixes_received,
                    prefixes_accepted: self.rib.accepted(p.id).unwrap_or(0),
                    prefixes_advertised: advertised.get(&p.id).copied().unwrap_or(0),
                    messages_sent: p.counters.sent(),
                    messages_received: p.counters.received(),
                    notifications_sent: p
                        .notifications_sent
                        .iter()
                        .map(|(k, v)| (*k, *v))
                        .collect(),
                    notifications_received: p
                        .notifications_received
                        .iter()
                        .map(|(k, v)| (*k, *v))
                        .collect(),
                })
                .collect(),
            ipv4_prefixes: stats.ipv4_prefixes,
            ipv6_prefixes: stats.ipv6_prefixes,
            attr_sets: stats.attr_sets,
            update_groups: self.groups.len(),
            update_batches: self.update_batches,
            updates_processed: self.updates_processed,
            update_processing: self.update_time,
            update_processing_max: self.update_time_max,
            update_processing_histogram: self.update_histogram.clone(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Shutdown.

    async fn shutdown(&mut self, graceful_restart: bool) {
        self.subscribers.close();
        // Sessions must not wait on a loop that no longer reads their reports.
        self.inbound_rx.close();
        let peers = std::mem::take(&mut self.peers);
        let mut tasks = Vec::with_capacity(peers.len());
        for (addr, p) in peers {
            self.transport.unregister(addr);
            if graceful_restart {
                // RFC 4724 §4.1: no NOTIFICATION; the connection just closes.
                p.task.abort();
            } else {
                p.send(Command::Shutdown(
                    p.cease(Cease::new(Cease::ADMIN_SHUTDOWN)),
                ));
                tasks.push(p.task);
            }
        }
        for t in tasks {
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, t).await;
        }
        info!(graceful_restart, "speaker stopped");
    }
}

/// RFC 8538 §3: Cease / Hard Reset ends graceful restart.
fn is_hard_reset(n: &Notification) -> bool {
    n.code == CEASE && n.subcode == Cease::HARD_RESET
}

/// An IPv4 peer's address seen through a dual-stack socket is v4-mapped.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Encodes UPDATEs back to back into one buffer. One that cannot be encoded for the session
/// (attributes from a peer too long for it) is logged and left out.
fn encode(updates: impl Iterator<Item = Update>, cx: &DecodeContext) -> (Bytes, u32) {
    let mut buf = BytesMut::new();
    let mut n = 0u32;
    for u in updates {
        let mark = buf.len();
        match Message::Update(u).encode(cx, &mut buf) {
            Ok(()) => n += 1,
            Err(e) => {
                buf.truncate(mark);
                warn!("outbound UPDATE not encoded: {e}");
            }
        }
    }
    (buf.freeze(), n)
}

/// Every prefix's current ECMP next hops.
fn snapshot(rib: &Rib) -> Vec<(Prefix, Vec<IpAddr>)> {
    let mut out = Vec::with_capacity(rib.v4().len() + rib.v6().len());
    for (p, _) in rib.v4().iter() {
        let pfx = Prefix::V4(*p);
        out.push((pfx, next_hops(rib.ecmp(&pfx))));
    }
    for (p, _) in rib.v6().iter() {
        let pfx = Prefix::V6(*p);
        out.push((pfx, next_hops(rib.ecmp(&pfx))));
    }
    out.retain(|(_, nh)| !nh.is_empty());
    out
}

fn next_hops(set: &[crate::rib::Path]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = set.iter().map(|p| p.attrs().next_hop.addr()).collect();
    v.sort_unstable();
    v.dedup();
    v
}
