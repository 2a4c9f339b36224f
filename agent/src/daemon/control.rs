//! The control loop: from the caches to the running speaker and the reconciler's own blocks.
//!
//! Owns the speaker's lifecycle (start once the node has a router id, restart only when
//! speaker-wide settings change) and the record of what was applied. Level-triggered: every
//! pass starts from a full snapshot, so a missed or coalesced event costs nothing; only the
//! difference from what the speaker holds is applied ([`crate::peering::apply`]). Must not
//! write anything to the API except this node's address annotations (autodetection).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tabby_api::v1alpha1::IPAMBlock;
use tabby_bgp::speaker::Speaker;
use tokio::sync::{Notify, watch as channel};
use tokio::task::JoinHandle;

use super::fib::{self, LocalAddresses};
use super::restart::{self, SweepReason};
use super::watch::{Caches, Snapshot};
use super::{AgentState, Config, DEBOUNCE, DaemonError};
use crate::addr::{self, Family, Method};
use crate::peering::node::{IPV4_ADDRESS_ANNOTATION, IPV6_ADDRESS_ANNOTATION};
use crate::peering::{
    Applied, Desired, NodeInfo, ObjectRef, PlanInput, Problem, apply, plan, speaker_config,
};
use crate::routes::{ReconcilerHandle, RouteSocket, TABBY_RT_PROTO};

/// After a pass whose speaker calls or API writes failed, the next pass comes this soon.
const RETRY: Duration = Duration::from_secs(5);
/// Between stopping the speaker for a speaker-wide change and starting the new one: the
/// peers first tear down the sessions our Cease ended (an FRR ToR with `bgp listen range` can
/// wedge a dynamic neighbour that reconnects within milliseconds; the speaker delays its own
/// session resets the same way, see `tabby_bgp::session::NotBefore`).
const SPEAKER_RESTART_PAUSE: Duration = Duration::from_secs(2);
/// How often the sweep condition is checked while routes adopted at start are kept.
const SWEEP_CHECK: Duration = Duration::from_millis(500);

struct Running {
    speaker: Speaker,
    feed: JoinHandle<()>,
}

/// The loop's state. Created by [`super::run`].
pub struct Control {
    cfg: Config,
    client: kube::Client,
    caches: Caches,
    routes: ReconcilerHandle,
    speaker: Option<Running>,
    applied: Applied,
    /// Announce the graceful restart at the next speaker start (the first one only).
    restarting: bool,
    /// Routes adopted at start (or retained across an in-process speaker restart) wait for
    /// the sweep.
    sweep_pending: bool,
    started: Instant,
    /// When the routes now retained were retained: the sweep's timeout counts from here.
    retained_at: Instant,
    local: LocalAddresses,
    last_batch: channel::Sender<Instant>,
    own_blocks: Option<Vec<IpNet>>,
    /// Annotation values this agent wrote (family → value), so a lagging cache does not make
    /// it write again.
    patched: [Option<String>; 2],
    retry_at: Option<Instant>,
    /// Problems (the plan's and the others) as last logged, so each is logged once.
    logged: BTreeSet<String>,
    state: channel::Sender<AgentState>,
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: Config,
        client: kube::Client,
        caches: Caches,
        routes: ReconcilerHandle,
        restarting: bool,
        adopted: usize,
        started: Instant,
        state: channel::Sender<AgentState>,
    ) -> Control {
        Control {
            cfg,
            client,
            caches,
            routes,
            speaker: None,
            applied: Applied::default(),
            restarting,
            sweep_pending: adopted > 0,
            started,
            retained_at: started,
            local: Arc::new(RwLock::new(Vec::new())),
            last_batch: channel::Sender::new(Instant::now()),
            own_blocks: None,
            patched: [None, None],
            retry_at: None,
            logged: BTreeSet::new(),
            state,
        }
    }

    /// Waits for the caches, then runs a pass per burst of events until the caches stop.
    pub(super) async fn run(&mut self, notify: Arc<Notify>) -> Result<(), DaemonError> {
        self.caches
            .ready()
            .await
            .map_err(|_| DaemonError::WatchesStopped)?;
        tracing::info!(
            after_ms = restart::since(self.started).as_millis() as u64,
            "caches listed"
        );
        self.state.send_modify(|s| s.caches_ready = true);
        if !self.sweep_pending {
            self.state.send_modify(|s| s.swept = true);
        }
        let mut resync = tokio::time::interval(self.cfg.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep_check = tokio::time::interval(SWEEP_CHECK);
        sweep_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pass().await;
            let retry = self.retry_at;
            loop {
                let retry_sleep = async {
                    match retry {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = notify.notified() => {
                        // Let the rest of the burst land in the caches.
                        tokio::time::sleep(DEBOUNCE).await;
                        break;
                    }
                    _ = resync.tick() => break,
                    () = retry_sleep => break,
                    _ = sweep_check.tick(), if self.sweep_pending => self.check_sweep().await,
                }
            }
        }
    }

    /// One pass over everything.
    async fn pass(&mut self) {
        let node = self.cfg.node_name.clone();
        let snap = self.caches.snapshot(&node);
        let mut problems = Vec::new();
        self.retry_at = None;

        let blocks = own_blocks(&snap.blocks, &mut problems);
        if self.own_blocks.as_ref() != Some(&blocks) {
            tracing::info!(blocks = ?blocks, "own blocks");
            if self.routes.set_own_blocks(blocks.clone()).is_err() {
                tracing::error!("the route reconciler is not running");
            }
            self.own_blocks = Some(blocks.clone());
        }

        self.autodetect(&snap, &mut problems).await;

        let interface_addrs = match interface_addresses() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "listing interface addresses");
                None
            }
        };
        let input = PlanInput {
            node_name: &node,
            nodes: &snap.nodes,
            configuration: snap.configuration.as_ref(),
            peers: &snap.peers,
            secrets: &snap.secrets,
            secret_namespace: &self.cfg.namespace,
            local_addresses: interface_addrs.as_deref(),
        };
        let planned = plan(&input);
        let plan = match &planned {
            Ok(p) => p.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "no peering plan; the previous one stays applied");
                self.publish(&snap, planned, problems, blocks);
                return;
            }
        };
        if let Ok(mut l) = self.local.write() {
            l.clone_from(&plan.local.addresses);
        }
        let (desired, export_problems) = Desired::from_plan(
            &plan,
            &snap.pools,
            &snap.blocks,
            snap.configuration.as_ref(),
        );
        problems.extend(export_problems);

        if self.speaker.is_none() && !self.start_speaker(&plan.local, &mut problems) {
            self.publish(&snap, planned, problems, blocks);
            return;
        }
        let mut report = match &self.speaker {
            Some(r) => apply(&r.speaker, &mut self.applied, &desired).await,
            None => return,
        };
        if report.restart_needed {
            // The same AS: a graceful restart in process (RFC 4724) — kernel routes retained
            // and peers keep ours as stale, so forwarding never stops; the retained routes go
            // once every peer's table is back, as after a process restart. A new AS is a
            // different speaker to every peer: hard reset.
            let same_as = self
                .applied
                .local
                .as_ref()
                .is_some_and(|l| l.asn == plan.local.asn);
            tracing::info!(
                asn = plan.local.asn,
                router_id = ?plan.local.router_id,
                graceful = same_as,
                "speaker-wide settings changed (AS, router id, cluster id, port or restart time); restarting the speaker"
            );
            if same_as {
                self.restart_speaker_gracefully().await;
            } else {
                self.stop_speaker(false).await;
            }
            tokio::time::sleep(SPEAKER_RESTART_PAUSE).await;
            if !self.start_speaker(&plan.local, &mut problems) {
                self.publish(&snap, planned, problems, blocks);
                return;
            }
            report = match &self.speaker {
                Some(r) => apply(&r.speaker, &mut self.applied, &desired).await,
                None => return,
            };
        }
        if report.calls > 0 {
            tracing::info!(
                calls = report.calls,
                errors = report.errors.len(),
                peers = self.applied.peers.len(),
                originated = self.applied.routes.len(),
                "applied to the speaker"
            );
        }
        for (peer, change) in &report.peer_changes {
            tracing::info!(%peer, ?change, "peer updated");
        }
        for e in &report.errors {
            problems.push(Problem {
                object: ObjectRef::new("Node", &node),
                peer: None,
                reason: format!("speaker call {} failed: {}", e.call, e.error),
            });
        }
        if !report.errors.is_empty() {
            self.retry_soon();
        }
        self.publish(&snap, planned, problems, blocks);
    }

    fn retry_soon(&mut self) {
        let at = Instant::now() + RETRY;
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    fn publish(
        &mut self,
        snap: &Snapshot,
        planned: Result<crate::peering::Plan, crate::peering::PlanError>,
        mut problems: Vec<Problem>,
        blocks: Vec<IpNet>,
    ) {
        problems.sort();
        problems.dedup();
        let now: BTreeSet<String> = planned
            .as_ref()
            .map(|p| p.problems.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(&problems)
            .map(ToString::to_string)
            .chain(planned.as_ref().err().map(ToString::to_string))
            .collect();
        for p in now.difference(&self.logged) {
            tracing::warn!(problem = %p, "not applied");
        }
        for p in self.logged.difference(&now) {
            tracing::info!(problem = %p, "resolved");
        }
        self.logged = now;
        let speaker = self.speaker.as_ref().map(|r| r.speaker.clone());
        let addresses = self.local.read().map(|l| l.clone()).unwrap_or_default();
        let block_names = snap
            .blocks
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        self.state.send_modify(|s| {
            match planned {
                Ok(p) => {
                    s.plan = Some(p);
                    s.plan_error = None;
                }
                Err(e) => s.plan_error = Some(e),
            }
            s.problems = problems;
            s.own_blocks = blocks;
            s.own_block_names = block_names;
            s.bgppeers.clone_from(&snap.peers);
            s.pools.clone_from(&snap.pools);
            s.speaker = speaker;
            s.addresses = addresses;
            s.passes += 1;
        });
    }

    /// Starts the speaker; false (with a problem) when it cannot run yet.
    fn start_speaker(
        &mut self,
        local: &crate::peering::LocalSettings,
        problems: &mut Vec<Problem>,
    ) -> bool {
        // Without a router id the plan already says why.
        let Some(mut cfg) = speaker_config(local, self.restarting) else {
            return false;
        };
        // An IPv4-only plan listens on 0.0.0.0; if the node gains an IPv6 address later (the
        // Node annotation arrives after the first pass) the speaker would refuse every IPv6
        // session, and the listen address is not worth a restart. So listen dual-stack
        // whenever the kernel can.
        if dual_stack_listen_possible() {
            for l in &mut cfg.listen {
                if l.ip() == IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
                    l.set_ip(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
                }
            }
        }
        let speaker = match Speaker::start(cfg) {
            Ok(s) => s,
            Err(e) => {
                problems.push(Problem {
                    object: ObjectRef::new("Node", &local.node),
                    peer: None,
                    reason: format!("the BGP speaker cannot start: {e}"),
                });
                self.retry_soon();
                return false;
            }
        };
        tracing::info!(
            asn = local.asn,
            router_id = ?local.router_id,
            listen = ?speaker.listening(),
            restarting = self.restarting,
            "BGP speaker started"
        );
        self.restarting = false;
        let sub_speaker = speaker.clone();
        let routes = self.routes.clone();
        let local_addrs = Arc::clone(&self.local);
        let last_batch = self.last_batch.clone();
        let feed = tokio::spawn(async move {
            match sub_speaker.subscribe().await {
                Ok(sub) => fib::feed(sub, routes, local_addrs, last_batch).await,
                Err(e) => tracing::error!(error = %e, "subscribing to best paths"),
            }
        });
        self.applied = Applied::default();
        self.speaker = Some(Running { speaker, feed });
        true
    }

    /// Stops the speaker. `for_restart`: sessions close without NOTIFICATION so peers keep our
    /// routes (RFC 4724 §4.1); otherwise Cease, and the feed withdraws what it installed.
    async fn stop_speaker(&mut self, for_restart: bool) {
        let Some(mut r) = self.speaker.take() else {
            return;
        };
        let stopped = if for_restart {
            // The feed goes first: the speaker's sessions closing would otherwise reach the
            // kernel as withdrawals of the very routes the restart keeps.
            r.feed.abort();
            let _ = (&mut r.feed).await;
            r.speaker.shutdown_for_restart().await
        } else {
            r.speaker.shutdown().await
        };
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "stopping the speaker");
        }
        if !for_restart
            && tokio::time::timeout(Duration::from_secs(5), r.feed)
                .await
                .is_err()
        {
            tracing::warn!("the best-path feed did not finish within 5 s");
        }
        self.applied = Applied::default();
    }

    /// On exit: sessions closed for a graceful restart; kernel routes untouched.
    pub(super) async fn stop_for_restart(&mut self) {
        self.stop_speaker(true).await;
        tracing::info!("stopped for restart: kernel routes kept, peers keep ours as stale");
    }

    /// Stops the speaker for a graceful restart in process: every route of ours in the kernel
    /// is retained until the sweep, and the next start announces the restart.
    async fn restart_speaker_gracefully(&mut self) {
        match self.routes.retain_installed().await {
            Ok(n) => {
                tracing::info!(
                    retained = n,
                    "kernel routes retained across the speaker restart"
                );
                self.sweep_pending = n > 0;
                self.retained_at = Instant::now();
                if n > 0 {
                    self.state.send_modify(|s| s.swept = false);
                }
                self.restarting = true;
                self.stop_speaker(true).await;
            }
            Err(_) => {
                tracing::error!(
                    "the route reconciler is not running; restarting the speaker without graceful restart"
                );
                self.stop_speaker(false).await;
            }
        }
    }

    /// Sweeps the routes adopted at start once every peer's table arrived, or at the timeout.
    async fn check_sweep(&mut self) {
        let Some(r) = &self.speaker else {
            if restart::since(self.retained_at) >= self.cfg.stale_routes_time {
                self.sweep(SweepReason::Timeout).await;
            }
            return;
        };
        if self.applied.local.is_none() {
            return;
        }
        let statuses = match r.speaker.peers().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let planned: BTreeSet<IpAddr> = self.applied.peers.keys().copied().collect();
        let quiet = restart::since(*self.last_batch.borrow());
        if let Some(why) = restart::sweep_due(
            restart::since(self.retained_at),
            self.cfg.stale_routes_time,
            &planned,
            &restart::peer_states(&statuses),
            quiet,
        ) {
            self.sweep(why).await;
        }
    }

    async fn sweep(&mut self, why: SweepReason) {
        match self.routes.sweep().await {
            Ok(Ok(report)) => {
                tracing::info!(
                    reason = ?why,
                    deleted = report.deleted,
                    after_ms = restart::since(self.retained_at).as_millis() as u64,
                    "stale routes from before the restart swept"
                );
                self.sweep_pending = false;
                self.state.send_modify(|s| s.swept = true);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping stale routes; retrying"),
            Err(_) => tracing::error!("the route reconciler is not running"),
        }
    }

    /// Autodetects the addresses the Node lacks and writes them as annotations, so this
    /// agent and every other node's agent see them (the mesh needs them).
    async fn autodetect(&mut self, snap: &Snapshot, problems: &mut Vec<Problem>) {
        let Some(node) = snap
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.cfg.node_name.as_str()))
        else {
            return;
        };
        let (Some(info), _) = NodeInfo::from_node(node) else {
            return;
        };
        let wanted: [(Option<Method>, Family, bool, &str); 2] = [
            (
                self.cfg.ipv4_autodetect.clone(),
                Family::V4,
                info.ipv4.is_none(),
                IPV4_ADDRESS_ANNOTATION,
            ),
            (
                self.cfg.ipv6_autodetect.clone(),
                Family::V6,
                info.ipv6.is_none(),
                IPV6_ADDRESS_ANNOTATION,
            ),
        ];
        for (i, (method, family, missing, annotation)) in wanted.into_iter().enumerate() {
            let (Some(method), true) = (method, missing) else {
                continue;
            };
            let net = match addr::netlink::autodetect(&method, family) {
                Ok(n) => n,
                Err(e) => {
                    problems.push(Problem {
                        object: ObjectRef::new("Node", &self.cfg.node_name),
                        peer: None,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let value = net.to_string();
            if self.patched[i].as_deref() == Some(value.as_str()) {
                continue;
            }
            let api: Api<Node> = Api::all(self.client.clone());
            let patch = serde_json::json!({"metadata": {"annotations": {annotation: value}}});
            match api
                .patch(
                    &self.cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(%method, address = %value, annotation, "address autodetected");
                    self.patched[i] = Some(value);
                }
                Err(e) => {
                    problems.push(Problem {
                        object: ObjectRef::new("Node", &self.cfg.node_name),
                        peer: None,
                        reason: format!(
                            "autodetected {value} ({method}) but could not annotate the Node: {e}"
                        ),
                    });
                    self.retry_soon();
                }
            }
        }
    }
}

/// This node's blocks as CIDRs; a block whose CIDR does not parse is reported.
fn own_blocks(blocks: &[IPAMBlock], problems: &mut Vec<Problem>) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for b in blocks {
        match b.spec.cidr.parse::<IpNet>() {
            Ok(n) if n.trunc() == n => out.push(n),
            _ => problems.push(Problem {
                object: ObjectRef::new("IPAMBlock", b.metadata.name.clone().unwrap_or_default()),
                peer: None,
                reason: format!(
                    "spec.cidr {:?} is not a CIDR without host bits; not blackholed",
                    b.spec.cidr
                ),
            }),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// IPv6 is enabled (`/proc/net/if_inet6` exists only then) and `[::]` takes IPv4 connections
/// too (`net.ipv6.bindv6only` = 0, the default).
fn dual_stack_listen_possible() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0")
}

/// Every address on this node's interfaces (for the plan's `sourceAddress` checks).
fn interface_addresses() -> Result<Vec<IpAddr>, crate::routes::NetlinkError> {
    let mut sock = RouteSocket::new(TABBY_RT_PROTO)?;
    let ifaces = addr::netlink::interfaces(&mut sock)?;
    Ok(ifaces
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_api::v1alpha1::IPAMBlockSpec;

    fn block(name: &str, cidr: &str) -> IPAMBlock {
        IPAMBlock::new(
            name,
            IPAMBlockSpec {
                cidr: cidr.into(),
                pool: "p".into(),
                node: "n1".into(),
            },
        )
    }

    #[test]
    fn own_blocks_are_sorted_and_bad_cidrs_reported() {
        let mut problems = Vec::new();
        let got = own_blocks(
            &[
                block("b2", "10.244.0.64/26"),
                block("b1", "10.244.0.0/26"),
                block("v6", "fd00::/122"),
                block("bad", "10.244.0.1/26"),
                block("junk", "not-a-cidr"),
            ],
            &mut problems,
        );
        let want: Vec<IpNet> = ["10.244.0.0/26", "10.244.0.64/26", "fd00::/122"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        let named: Vec<&str> = problems.iter().map(|p| p.object.name.as_str()).collect();
        assert_eq!(named, ["bad", "junk"]);
        assert!(problems[0].reason.contains("host bits"));
    }
}
