//! The route reconciler the agent drives: holds desired and actual state, applies diffs through
//! one netlink socket, follows route notifications, and keeps metrics.
//!
//! Owns: the order of events — adoption at start, incremental reconciles of changed prefixes,
//! the periodic safety resync, restoring our routes when someone deletes them, the explicit
//! [`Reconciler::sweep`] of stale routes after End-of-RIB. Must not touch: routes of other
//! protocols (see `diff`), anything on exit (dropping the reconciler leaves routes in place).
//!
//! Netlink work is synchronous and CPU-bound (the kernel handles each batch inside `send`), so
//! [`Reconciler::reconcile`] is a plain function; [`Reconciler::run`] wraps it in a Tokio loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tabby_bgp::speaker::DurationHistogram;
use tokio::sync::{mpsc, oneshot};

use super::diff::{Op, Placement, Scope, plan};
use super::model::{Actual, Desired, ModelError, NextHop, RouteKey, Target};
use super::netlink::{NetlinkError, Outcome, RouteEvent, RouteMonitor, RouteSocket};
use super::{DEFAULT_METRIC, DEFAULT_TABLE, TABBY_RT_PROTO};

/// Where and how routes are written, and how often state is re-read in full.
#[derive(Debug, Clone)]
pub struct Config {
    pub table: u32,
    pub metric: u32,
    pub protocol: u8,
    /// Full dump-and-diff on this period, as a safety net against missed notifications.
    pub resync_interval: Duration,
    /// Routes the kernel refused (e.g. next hop not reachable yet) are retried this often.
    pub retry_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            table: DEFAULT_TABLE,
            metric: DEFAULT_METRIC,
            protocol: TABBY_RT_PROTO,
            resync_interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// Counters and gauges the agent exports on `/metrics`. Plain atomics: the reconciler writes,
/// anyone reads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gauge: routes of ours in the kernel, IPv4.
    pub routes_v4: AtomicU64,
    /// Gauge: routes of ours in the kernel, IPv6.
    pub routes_v6: AtomicU64,
    /// Operations the kernel carried out.
    pub ops_done: AtomicU64,
    /// Operations the kernel refused, plus socket-level failures.
    pub netlink_errors: AtomicU64,
    /// Gauge: desired routes not written because a foreign route holds their key.
    pub conflicts: AtomicU64,
    /// Full dump-and-diff passes (start, timer, lost notifications).
    pub resyncs: AtomicU64,
    /// Routes of ours that someone else deleted and we put back.
    pub restored: AtomicU64,
    /// Reconcile passes and their total / last duration.
    pub reconciles: AtomicU64,
    pub reconcile_micros_total: AtomicU64,
    pub reconcile_micros_last: AtomicU64,
    /// Reconcile pass durations per bucket (µs to s), for the metrics histogram.
    pub reconcile_histogram: std::sync::Mutex<DurationHistogram>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub added: usize,
    pub replaced: usize,
    pub deleted: usize,
    /// Operations the kernel refused, with the reason in words.
    pub failed: Vec<(RouteKey, String)>,
    pub conflicts: Vec<RouteKey>,
    /// Time spent computing the diff (the rest of `elapsed` is netlink).
    pub plan_elapsed: Duration,
    pub elapsed: Duration,
}

/// A snapshot for NodeNetworkStatus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub routes_v4: usize,
    pub routes_v6: usize,
    /// Adopted routes kept until the sweep.
    pub retained: usize,
    pub conflicts: Vec<RouteKey>,
    /// Routes the kernel refused last time we tried, with the reason.
    pub failures: Vec<(RouteKey, String)>,
}

/// The reconciler. Create it in the network namespace whose routes it manages.
pub struct Reconciler {
    cfg: Config,
    sock: RouteSocket,
    desired: Desired,
    actual: Actual,
    retained: HashMap<RouteKey, Target>,
    dirty: HashSet<IpNet>,
    full: bool,
    retry: HashSet<IpNet>,
    failures: HashMap<RouteKey, String>,
    conflicts: HashSet<RouteKey>,
    metrics: Arc<Metrics>,
}

impl Reconciler {
    /// Opens the netlink socket and reads the kernel's routes. Routes of our protocol are
    /// adopted as they are — nothing is flushed — and retained until [`Reconciler::sweep`]
    /// unless desired state confirms or replaces them first.
    pub fn new(cfg: Config) -> Result<Reconciler, NetlinkError> {
        let mut sock = RouteSocket::new(cfg.protocol)?;
        let actual = Actual::from_routes(sock.dump(cfg.table)?, cfg.protocol);
        let retained = actual.own.clone();
        let r = Reconciler {
            cfg,
            sock,
            desired: Desired::new(),
            actual,
            retained,
            dirty: HashSet::new(),
            full: false,
            retry: HashSet::new(),
            failures: HashMap::new(),
            conflicts: HashSet::new(),
            metrics: Arc::new(Metrics::default()),
        };
        r.publish_gauges();
        Ok(r)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn key(&self, prefix: IpNet) -> RouteKey {
        RouteKey::new(prefix, self.cfg.table, self.cfg.metric)
    }

    fn placement(&self) -> Placement {
        Placement {
            table: self.cfg.table,
            metric: self.cfg.metric,
        }
    }

    /// Replaces the whole desired state (e.g. after the speaker restarts its best-path stream).
    /// Retained routes stay retained until the sweep.
    pub fn set_desired(&mut self, desired: Desired) {
        for p in desired.prefixes() {
            let k = self.key(p);
            self.retained.remove(&k);
        }
        self.desired = desired;
        self.full = true;
    }

    /// One best-path change from the speaker: all ECMP next hops of `prefix`, empty = withdrawn.
    pub fn update(&mut self, prefix: IpNet, hops: Vec<NextHop>) -> Result<(), ModelError> {
        let prefix = prefix.trunc();
        self.desired.update(prefix, hops)?;
        let k = self.key(prefix);
        self.retained.remove(&k);
        self.dirty.insert(prefix);
        Ok(())
    }

    /// The node's own blocks (blackholed).
    pub fn set_own_blocks(&mut self, blocks: impl IntoIterator<Item = IpNet>) {
        let changed = self.desired.set_own_blocks(blocks);
        for p in changed {
            let k = self.key(p);
            self.retained.remove(&k);
            self.dirty.insert(p);
        }
    }

    /// A pod's host route over its veth.
    pub fn set_pod_route(&mut self, prefix: IpNet, ifindex: u32) {
        let prefix = prefix.trunc();
        self.desired.set_pod_route(prefix, ifindex);
        let k = self.key(prefix);
        self.retained.remove(&k);
        self.dirty.insert(prefix);
    }

    pub fn remove_pod_route(&mut self, prefix: IpNet) {
        let prefix = prefix.trunc();
        if self.desired.remove_pod_route(prefix) {
            let k = self.key(prefix);
            self.retained.remove(&k);
            self.dirty.insert(prefix);
        }
    }

    /// True when changes are waiting for [`Reconciler::reconcile`].
    pub fn pending(&self) -> bool {
        self.full || !self.dirty.is_empty()
    }

    /// Applies pending changes: the changed prefixes only, or everything after
    /// [`Reconciler::set_desired`].
    pub fn reconcile(&mut self) -> Result<ReconcileReport, NetlinkError> {
        let dirty = std::mem::take(&mut self.dirty);
        let scope = if std::mem::take(&mut self.full) {
            Scope::All
        } else {
            Scope::Prefixes(&dirty)
        };
        self.run_plan(scope)
    }

    /// Re-reads the kernel's routes and diffs everything.
    pub fn resync(&mut self) -> Result<ReconcileReport, NetlinkError> {
        self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.actual = Actual::from_routes(self.sock.dump(self.cfg.table)?, self.cfg.protocol);
        self.dirty.clear();
        self.full = false;
        self.run_plan(Scope::All)
    }

    /// Retains every route of ours now in the kernel, as [`Reconciler::new`] does at start:
    /// for a speaker restarted in process (a speaker-wide setting changed) whose new best
    /// paths will arrive one peer at a time. The old speaker's learned routes are forgotten as
    /// desired state (the new one re-sends what it still has; one it never learns again — a
    /// peer gone meanwhile — must go at the sweep), but until each is confirmed or replaced by
    /// desired state, or [`Reconciler::sweep`], none is deleted. Returns how many are retained.
    pub fn retain_installed(&mut self) -> usize {
        self.desired.clear_learned();
        self.retained = self.actual.own.clone();
        self.retained.len()
    }

    /// Removes routes of ours that nothing desires any more, including adopted ones not
    /// confirmed since start. Call after End-of-RIB from every peer, or a timeout.
    pub fn sweep(&mut self) -> Result<ReconcileReport, NetlinkError> {
        self.retained.clear();
        self.dirty.clear();
        self.full = false;
        self.run_plan(Scope::All)
    }

    fn run_plan(&mut self, scope: Scope<'_>) -> Result<ReconcileReport, NetlinkError> {
        let start = Instant::now();
        let at = self.placement();
        let p = plan(&self.desired, &self.actual, &self.retained, at, scope);
        match scope {
            Scope::All => {
                self.conflicts = p.conflicts.iter().copied().collect();
            }
            Scope::Prefixes(prefixes) => {
                for pfx in prefixes {
                    let k = self.key(pfx.trunc());
                    self.conflicts.remove(&k);
                }
                self.conflicts.extend(p.conflicts.iter().copied());
            }
        }
        let mut report = ReconcileReport {
            plan_elapsed: start.elapsed(),
            conflicts: p.conflicts.clone(),
            ..ReconcileReport::default()
        };
        let outcomes = match self.sock.apply(&p.ops) {
            Ok(o) => o,
            Err(e) => {
                self.metrics.netlink_errors.fetch_add(1, Ordering::Relaxed);
                self.full = true;
                return Err(e);
            }
        };
        let mut unknown = false;
        for (op, outcome) in p.ops.iter().zip(outcomes) {
            self.record(op, outcome, &mut report, &mut unknown);
        }
        if unknown {
            tracing::warn!("netlink replies lost; re-reading the routing table");
            self.actual = Actual::from_routes(self.sock.dump(self.cfg.table)?, self.cfg.protocol);
            self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
            self.full = true;
        }
        // A refused key whose goal the kernel meets after all is no longer failing: e.g. an
        // add that met EEXIST because our own route was already there (the CNI datapath
        // writes a pod's host route before it tells us), found by the re-read above.
        let (desired, actual) = (&self.desired, &self.actual);
        self.failures
            .retain(|k, _| desired.target(&k.prefix).as_ref() != actual.own.get(k));
        if !report.failed.is_empty() {
            tracing::warn!(
                failed = report.failed.len(),
                first = %format!("{} ({})", report.failed[0].0, report.failed[0].1),
                "the kernel refused some routes; retrying in {:?}",
                self.cfg.retry_interval
            );
        }
        report.elapsed = start.elapsed();
        let micros = u64::try_from(report.elapsed.as_micros()).unwrap_or(u64::MAX);
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .reconcile_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.metrics
            .reconcile_micros_last
            .store(micros, Ordering::Relaxed);
        self.metrics
            .reconcile_histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(report.elapsed, 1);
        self.publish_gauges();
        Ok(report)
    }

    fn record(
        &mut self,
        op: &Op,
        outcome: Outcome,
        report: &mut ReconcileReport,
        unknown: &mut bool,
    ) {
        let key = *op.key();
        match (op, &outcome) {
            (Op::Add { target, .. } | Op::Replace { target, .. }, Outcome::Done) => {
                self.actual.own.insert(key, target.clone());
                if matches!(op, Op::Add { .. }) {
                    report.added += 1;
                } else {
                    report.replaced += 1;
                }
            }
            (Op::Delete { .. }, Outcome::Done) => {
                self.actual.own.remove(&key);
                report.deleted += 1;
            }
            // Already gone: the goal is met.
            (Op::Delete { .. }, Outcome::Failed { errno, .. }) if *errno == libc::ESRCH => {
                self.actual.own.remove(&key);
                report.deleted += 1;
            }
            (_, Outcome::Unknown) => *unknown = true,
            (_, Outcome::Failed { errno, .. }) => {
                if (matches!(op, Op::Add { .. }) && *errno == libc::EEXIST)
                    || (matches!(op, Op::Replace { .. }) && *errno == libc::ESRCH)
                {
                    // The kernel disagrees with our view of this key (someone added a route
                    // where we saw none, or removed ours): treat the key as occupied — never
                    // overwrite it — and re-read the table before the next diff.
                    self.actual.foreign.insert(key);
                    self.conflicts.insert(key);
                    *unknown = true;
                }
                self.metrics.netlink_errors.fetch_add(1, Ordering::Relaxed);
                let why = outcome.describe();
                tracing::debug!(route = %key, op = ?op_name(op), error = %why, "route refused");
                self.failures.insert(key, why.clone());
                report.failed.push((key, why));
                self.retry.insert(key.prefix);
                return;
            }
        }
        if outcome == Outcome::Done {
            self.metrics.ops_done.fetch_add(1, Ordering::Relaxed);
            self.failures.remove(&key);
        }
    }

    /// Folds route notifications into actual state. A route of ours deleted by someone else
    /// (we still had it and still want it) is scheduled to be put back; a change of a foreign
    /// route at our placement re-evaluates the prefix.
    pub fn handle_events(&mut self, events: Vec<RouteEvent>) {
        let at = self.placement();
        for ev in events {
            match ev {
                RouteEvent::New(r) => {
                    let mine = r.protocol == self.cfg.protocol;
                    let prefix = r.key.prefix;
                    let at_ours = (r.key.table, r.key.metric) == (at.table, at.metric);
                    if !mine && at_ours && r.tos == 0 {
                        self.dirty.insert(prefix);
                    }
                    self.actual.learn(r, self.cfg.protocol);
                }
                RouteEvent::Del(r) => {
                    let mine = r.protocol == self.cfg.protocol;
                    let prefix = r.key.prefix;
                    if mine
                        && self.actual.own.contains_key(&r.key)
                        && (self.desired.target(&prefix).is_some()
                            || self.retained.contains_key(&r.key))
                    {
                        self.metrics.restored.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(route = %r.key, "our route was deleted by someone else; restoring it");
                    }
                    let at_ours = (r.key.table, r.key.metric) == (at.table, at.metric);
                    if mine || (at_ours && r.tos == 0) {
                        self.dirty.insert(prefix);
                    }
                    self.actual.forget(&r, self.cfg.protocol);
                }
            }
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let (v4, v6) = self.actual.own_by_family();
        self.metrics.routes_v4.store(v4 as u64, Ordering::Relaxed);
        self.metrics.routes_v6.store(v6 as u64, Ordering::Relaxed);
        self.metrics
            .conflicts
            .store(self.conflicts.len() as u64, Ordering::Relaxed);
    }

    /// A snapshot for NodeNetworkStatus.
    pub fn status(&self) -> Status {
        let (routes_v4, routes_v6) = self.actual.own_by_family();
        let mut conflicts: Vec<RouteKey> = self.conflicts.iter().copied().collect();
        conflicts.sort();
        let mut failures: Vec<(RouteKey, String)> =
            self.failures.iter().map(|(k, v)| (*k, v.clone())).collect();
        failures.sort();
        Status {
            routes_v4,
            routes_v6,
            retained: self.retained.len(),
            conflicts,
            failures,
        }
    }

    /// Actual state as last seen (for tests and status).
    pub fn actual(&self) -> &Actual {
        &self.actual
    }

    /// Applies one command; true when the routing table must be re-read.
    fn apply_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::SetDesired(d) => self.set_desired(d),
            Command::Update { prefix, hops } => {
                if let Err(e) = self.update(prefix, hops) {
                    tracing::warn!(error = %e, "ignoring a route the model refuses");
                }
            }
            Command::SetOwnBlocks(blocks) => self.set_own_blocks(blocks),
            Command::SetPodRoute { prefix, ifindex } => self.set_pod_route(prefix, ifindex),
            Command::RemovePodRoute(prefix) => self.remove_pod_route(prefix),
            Command::Sweep(done) => {
                let r = self.sweep();
                let failed = r.is_err();
                let _ = done.send(r.map_err(|e| e.to_string()));
                return failed;
            }
            Command::RetainInstalled(reply) => {
                let _ = reply.send(self.retain_installed());
            }
            Command::Resync => return true,
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
        false
    }

    /// The agent's loop: subscribes to route notifications, re-reads the table (so nothing
    /// changed between [`Reconciler::new`] and now is missed), then applies commands as they
    /// come, restores deleted routes, retries refused ones, and resyncs on a timer. Returns when
    /// every [`ReconcilerHandle`] is dropped — leaving the routes in place.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), NetlinkError> {
        let mut monitor = RouteMonitor::new()?;
        self.resync()?;
        let mut resync = tokio::time::interval(self.cfg.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await; // the first tick is immediate; we just resynced
        let mut retry = tokio::time::interval(self.cfg.retry_interval);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut need_resync = false;
        loop {
            // Wait only when there is nothing left to do; a resync or dirty prefixes found
            // while folding in notifications are handled at once.
            if !need_resync && !self.pending() {
                tokio::select! {
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return Ok(()) };
                        need_resync |= self.apply_command(cmd);
                        // Coalesce a burst of best-path changes into one batch.
                        while let Ok(cmd) = commands.try_recv() {
                            need_resync |= self.apply_command(cmd);
                        }
                    }
                    events = monitor.next() => match events {
                        Ok(events) => self.handle_events(events),
                        Err(NetlinkError::Overrun { .. }) => need_resync = true,
                        Err(e) => return Err(e),
                    },
                    _ = resync.tick() => need_resync = true,
                    _ = retry.tick() => {
                        let again: Vec<IpNet> = self.retry.drain().collect();
                        self.dirty.extend(again);
                    }
                }
            }
            // Fold in notifications already queued before diffing: a route of ours someone
            // just wrote (the CNI datapath writes a pod's host route, then sends the command)
            // is then known instead of re-added into EEXIST and a full re-read.
            match monitor.drain() {
                Ok(events) => self.handle_events(events),
                Err(NetlinkError::Overrun { .. }) => need_resync = true,
                Err(e) => return Err(e),
            }
            let result = if std::mem::take(&mut need_resync) {
                self.resync().map(Some)
            } else if self.pending() {
                self.reconcile().map(Some)
            } else {
                Ok(None)
            };
            if let Err(e) = result {
                // The socket failed; the next pass starts from a fresh dump.
                tracing::warn!(error = %e, "route reconcile failed; resyncing");
                need_resync = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Our own changes come back as notifications; fold them in now so the next diff
            // starts from the kernel's view.
            match monitor.drain() {
                Ok(events) => self.handle_events(events),
                Err(NetlinkError::Overrun { .. }) => need_resync = true,
                Err(e) => return Err(e),
            }
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Add { .. } => "add",
        Op::Replace { .. } => "replace",
        Op::Delete { .. } => "delete",
    }
}

/// A message to the running reconciler.
#[derive(Debug)]
pub enum Command {
    SetDesired(Desired),
    Update {
        prefix: IpNet,
        hops: Vec<NextHop>,
    },
    SetOwnBlocks(Vec<IpNet>),
    SetPodRoute {
        prefix: IpNet,
        ifindex: u32,
    },
    RemovePodRoute(IpNet),
    /// Remove stale routes now; the reply says what was deleted.
    Sweep(oneshot::Sender<Result<ReconcileReport, String>>),
    /// Retain what is installed until the next sweep; the reply says how many routes.
    RetainInstalled(oneshot::Sender<usize>),
    Resync,
    Status(oneshot::Sender<Status>),
}

/// The agent's handle on a running [`Reconciler::run`] loop.
#[derive(Debug, Clone)]
pub struct ReconcilerHandle {
    tx: mpsc::UnboundedSender<Command>,
    metrics: Arc<Metrics>,
}

/// The loop has stopped (it returned an error or was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the route reconciler is not running")]
pub struct Stopped;

impl ReconcilerHandle {
    /// Creates the channel for `reconciler`; spawn `reconciler.run(rx)` yourself.
    pub fn new(reconciler: &Reconciler) -> (ReconcilerHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            ReconcilerHandle {
                tx,
                metrics: reconciler.metrics(),
            },
            rx,
        )
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn send(&self, c: Command) -> Result<(), Stopped> {
        self.tx.send(c).map_err(|_| Stopped)
    }

    pub fn update(&self, prefix: IpNet, hops: Vec<NextHop>) -> Result<(), Stopped> {
        self.send(Command::Update { prefix, hops })
    }

    pub fn set_desired(&self, desired: Desired) -> Result<(), Stopped> {
        self.send(Command::SetDesired(desired))
    }

    pub fn set_own_blocks(&self, blocks: Vec<IpNet>) -> Result<(), Stopped> {
        self.send(Command::SetOwnBlocks(blocks))
    }

    pub fn set_pod_route(&self, prefix: IpNet, ifindex: u32) -> Result<(), Stopped> {
        self.send(Command::SetPodRoute { prefix, ifindex })
    }

    pub fn remove_pod_route(&self, prefix: IpNet) -> Result<(), Stopped> {
        self.send(Command::RemovePodRoute(prefix))
    }

    pub fn resync(&self) -> Result<(), Stopped> {
        self.send(Command::Resync)
    }

    /// Sweeps stale routes and waits for the result.
    pub async fn sweep(&self) -> Result<Result<ReconcileReport, String>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Sweep(tx))?;
        rx.await.map_err(|_| Stopped)
    }

    /// Retains every route of ours now installed until the next sweep (see
    /// [`Reconciler::retain_installed`]); how many.
    pub async fn retain_installed(&self) -> Result<usize, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RetainInstalled(tx))?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn status(&self) -> Result<Status, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx))?;
        rx.await.map_err(|_| Stopped)
    }
}
