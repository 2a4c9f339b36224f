//! The services around the core, attached to the published [`AgentState`]: HTTP (`/healthz`,
//! `/readyz`, `/metrics`), NodeNetworkStatus and Events, the CNI socket, natOutgoing.
//!
//! Owns their start, the feeding of their inputs, and their stop. Must not change routes,
//! peering or the speaker: everything here reads the state the control loop publishes (and the
//! CNI service writes pod routes through the reconciler handle it is given).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::JoinHandle;

use super::{AgentState, Config, DaemonError};
use crate::cni::{self, CniConfig, CniDeps, CniService};
use crate::http::{self, DEFAULT_PEER_GRACE, Health};
use crate::ipam::{ClientConfig, IpamClient};
use crate::metrics::AgentMetrics;
use crate::nat::{self, NatOutgoing};
use crate::routes::{Metrics as RouteMetrics, ReconcilerHandle};
use crate::status::{self, EventTracker, NodeEvents, StatusInput, StatusPublisher};

/// NodeNetworkStatus is written at most this often (changes in between coalesce).
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The status is rebuilt at least this often (session counters and states change without a
/// pass of the control loop).
pub const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// The CNI service is retried this often while it cannot start.
const CNI_RETRY: Duration = Duration::from_secs(5);
/// natOutgoing re-checks its table this often (someone may have deleted it).
const NAT_INTERVAL: Duration = Duration::from_secs(60);

/// The running services.
pub struct Services {
    pub health: Arc<Health>,
    pub metrics: Arc<AgentMetrics>,
    cni: Arc<Mutex<Option<CniService>>>,
    http_stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Services {
    /// Binds the HTTP listener (an error if it cannot), then starts status, CNI and NAT in
    /// the background.
    pub async fn start(
        cfg: &Config,
        client: &kube::Client,
        routes: ReconcilerHandle,
        route_metrics: Arc<RouteMetrics>,
        state: watch::Receiver<AgentState>,
    ) -> Result<Services, DaemonError> {
        let health = Arc::new(Health::new(DEFAULT_PEER_GRACE));
        health.set_alive(true);
        let metrics = Arc::new(AgentMetrics::new());
        metrics.set_routes(route_metrics);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.listen,
                source,
            })?;
        tracing::info!(listen = %cfg.listen, "serving /healthz /readyz /metrics");
        let (http_stop, stopped) = oneshot::channel::<()>();
        let mut tasks = Vec::new();
        {
            let (health, metrics) = (health.clone(), metrics.clone());
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = http::serve(listener, health.clone(), metrics, shutdown).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                    health.set_alive(false);
                }
            }));
        }

        tasks.push(tokio::spawn(status_loop(
            client.clone(),
            cfg.node_name.clone(),
            routes.clone(),
            state.clone(),
            health.clone(),
            metrics.clone(),
        )));

        let cni = Arc::new(Mutex::new(None));
        tasks.push(tokio::spawn(cni_loop(
            CniConfig {
                socket: cfg.cni_socket.clone(),
                ..CniConfig::default()
            },
            client.clone(),
            cfg.node_name.clone(),
            routes,
            cni.clone(),
            health.clone(),
            metrics.clone(),
        )));

        match NatOutgoing::new() {
            Ok(n) => tasks.push(tokio::spawn(nat_loop(n, state))),
            Err(e) => tracing::warn!(error = %e, "natOutgoing disabled"),
        }

        Ok(Services {
            health,
            metrics,
            cni,
            http_stop: Some(http_stop),
            tasks,
        })
    }

    /// Stops the CNI service (its socket is removed) and the HTTP server; aborts the rest.
    pub async fn stop(mut self) {
        for t in &self.tasks {
            // The HTTP task is ended by its shutdown signal below; aborting it too is harmless.
            t.abort();
        }
        if let Some(service) = self.cni.lock().await.take() {
            service.stop().await;
        }
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Rebuilds the status on every published state and every [`STATUS_REFRESH`]; sends the
/// Events it implies; updates readiness and metrics.
async fn status_loop(
    client: kube::Client,
    node: String,
    routes: ReconcilerHandle,
    mut state: watch::Receiver<AgentState>,
    health: Arc<Health>,
    metrics: Arc<AgentMetrics>,
) {
    let publisher = StatusPublisher::spawn(client.clone(), node.clone(), STATUS_MIN_INTERVAL);
    metrics.set_status_publisher(publisher.stats());
    let events = NodeEvents::new(client, &node);
    let mut tracker = EventTracker::new();
    let mut tick = tokio::time::interval(STATUS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let s = state.borrow_and_update().clone();
        if !s.caches_ready {
            continue;
        }
        let peers = match &s.speaker {
            Some(sp) => {
                metrics.set_speaker(sp.clone());
                sp.peers().await.unwrap_or_default()
            }
            None => Vec::new(),
        };
        if let Some(p) = &s.plan {
            metrics.set_plan(p);
        }
        let route_status = routes.status().await.ok();
        let input = StatusInput {
            plan: s.plan.as_ref(),
            plan_error: s.plan_error.as_ref(),
            peers: &peers,
            routes: route_status.as_ref(),
            blocks: &s.own_block_names,
            problems: &s.problems,
            bgppeers: &s.bgppeers,
            now: SystemTime::now(),
        };
        let built = status::build(&input);
        for e in tracker.observe(&input, &built) {
            events.send(&e).await;
        }
        health.set_node_known(s.plan.is_some());
        health.set_blocks_known(s.caches_ready);
        health.set_speaker_running(s.speaker.is_some());
        health.set_sessions_from(&built);
        publisher.publish(built);
    }
}

/// Starts the CNI service, retrying while it cannot (e.g. the socket directory is not
/// writable yet), then keeps readiness in line with it.
async fn cni_loop(
    cfg: CniConfig,
    client: kube::Client,
    node: String,
    routes: ReconcilerHandle,
    slot: Arc<Mutex<Option<CniService>>>,
    health: Arc<Health>,
    metrics: Arc<AgentMetrics>,
) {
    loop {
        let deps = CniDeps {
            client: client.clone(),
            node: node.clone(),
            ipam: IpamClient::new(client.clone(), node.clone(), ClientConfig::default()),
            routes: routes.clone(),
        };
        match cni::start(cfg.clone(), deps).await {
            Ok(service) => {
                tracing::info!(socket = %cfg.socket.display(), report = ?service.start_report(), "CNI service serving");
                metrics.set_cni(service.stats());
                metrics.set_ipam(service.ipam_counters());
                *slot.lock().await = Some(service);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the CNI service cannot start; retrying in {CNI_RETRY:?}");
                tokio::time::sleep(CNI_RETRY).await;
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ready = slot.lock().await.as_ref().is_some_and(CniService::ready);
        health.set_cni_ready(ready);
    }
}

/// natOutgoing from the pools, once the caches have listed them (before that, an empty list
/// would remove the table a previous run left in place).
async fn nat_loop(n: NatOutgoing, mut state: watch::Receiver<AgentState>) {
    let initial = loop {
        if state.changed().await.is_err() {
            return;
        }
        let s = state.borrow_and_update();
        if s.caches_ready && s.passes > 0 {
            break s.pools.clone();
        }
    };
    let (tx, rx) = watch::channel(initial);
    let forward = async move {
        while state.changed().await.is_ok() {
            let new = state.borrow_and_update().pools.clone();
            tx.send_if_modified(|p| {
                if *p == new {
                    false
                } else {
                    *p = new;
                    true
                }
            });
        }
    };
    tokio::select! {
        () = nat::run(n, rx, NAT_INTERVAL) => {}
        () = forward => {}
    }
}
