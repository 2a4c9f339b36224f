//! The node agent's runtime: watches, the control loop, the speaker, the route reconciler.
//!
//! Owns the wiring and the order of things at start and stop. Must not decide peering,
//! export or routes itself — that is [`crate::peering`], [`crate::export`] and
//! [`crate::routes`], called from here with what the watches saw.
//!
//! - [`watch`]: reflectors over Nodes, BGPConfiguration, BGPPeers, IPPools, this node's
//!   IPAMBlocks and the namespace's Secrets; each event wakes the control loop.
//! - [`control`]: one level-triggered pass per burst of events (debounced by [`DEBOUNCE`]):
//!   snapshot → plan → desired speaker state → [`crate::peering::apply`] (only the difference;
//!   adding a peer never touches another) and own blocks → blackholes. Problems stay in the
//!   published [`AgentState`] for NodeNetworkStatus and Events.
//! - [`fib`]: the speaker's best-path stream into the reconciler.
//! - [`restart`]: the run marker, and when adopted routes are swept.
//! - [`services`]: HTTP (health, readiness, metrics), NodeNetworkStatus and Events, the CNI
//!   socket and natOutgoing, fed from the published [`AgentState`].
//!
//! Start: the reconciler adopts our kernel routes (no flush); the speaker starts as restarting
//! (RFC 4724) when the marker says we ran before and routes are still in the kernel. Stop
//! ([`run`]'s `shutdown` resolves): the reconciler stops first (routes stay), then the speaker
//! closes its sessions for a graceful restart so peers keep our routes while we are away.

pub mod api_calls;
pub mod control;
pub mod fib;
pub mod restart;
pub mod services;
pub mod watch;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tabby_api::v1alpha1::{BGPPeer, IPPool};
use tabby_bgp::speaker::Speaker;
use tokio::sync::{Notify, watch as channel};

use crate::addr::Method;
use crate::peering::{Plan, PlanError, Problem};
use crate::routes::{self, NetlinkError, Reconciler, ReconcilerHandle};

pub use api_calls::API_CALLS;

/// A burst of watch events within this window makes one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Settings of one agent (the binary's flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Where BGP password Secrets live (the agent's own namespace).
    pub namespace: String,
    pub listen: SocketAddr,
    pub cni_socket: PathBuf,
    pub state_dir: PathBuf,
    /// `None`: no autodetection for the family.
    pub ipv4_autodetect: Option<Method>,
    pub ipv6_autodetect: Option<Method>,
    /// After a restart, adopted routes not re-learned go after every peer's table arrived or
    /// after this long.
    pub stale_routes_time: Duration,
    /// Passes run at least this often even without events (interface addresses can change
    /// without any API event).
    pub resync_interval: Duration,
    pub routes: routes::Config,
}

impl Config {
    /// The documented defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Config {
        Config {
            node_name: node_name.into(),
            namespace: "tabby-system".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 9097)),
            cni_socket: PathBuf::from("/var/run/tabby/cni.sock"),
            state_dir: PathBuf::from("/var/lib/tabby"),
            ipv4_autodetect: Some(Method::FirstFound),
            ipv6_autodetect: None,
            stale_routes_time: Duration::from_secs(120),
            resync_interval: Duration::from_secs(30),
            routes: routes::Config::default(),
        }
    }
}

/// What the agent knows and did, published after every pass for status, metrics, readiness
/// and natOutgoing. Cheap to clone (the speaker is a handle).
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    /// Every watch completed its first list.
    pub caches_ready: bool,
    /// The plan in force (the last one that could be made).
    pub plan: Option<Plan>,
    /// Why the latest attempt to plan failed, if it did (the previous plan then stays).
    pub plan_error: Option<PlanError>,
    /// Problems found outside planning, in words: export, autodetection, speaker calls that
    /// failed. The plan's own are in `plan`.
    pub problems: Vec<Problem>,
    /// This node's blocks (blackholed and announced), and their object names.
    pub own_blocks: Vec<IpNet>,
    pub own_block_names: Vec<String>,
    /// The BGPPeers and IPPools as last seen (status tells peer types; natOutgoing).
    pub bgppeers: Vec<BGPPeer>,
    pub pools: Vec<IPPool>,
    /// The running speaker, once the node has a router id.
    pub speaker: Option<Speaker>,
    /// This run started as a graceful restart.
    pub restarting: bool,
    /// The routes adopted at start were swept (or there was nothing to wait for).
    pub swept: bool,
    /// This node's addresses as planned.
    pub addresses: Vec<IpAddr>,
    /// Passes run so far.
    pub passes: u64,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the kernel routing table: {0}")]
    Routes(#[from] NetlinkError),
    #[error("the API watches stopped before their first list")]
    WatchesStopped,
    #[error("HTTP (--listen {addr}): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The pieces other services (CNI, status, HTTP) attach to once the agent has started.
#[derive(Clone)]
pub struct Handles {
    pub routes: ReconcilerHandle,
    pub state: channel::Receiver<AgentState>,
    pub started: Instant,
}

/// Runs the agent until `shutdown` resolves. `on_start` receives the handles as soon as the
/// route reconciler runs (before the watches have listed), so services can attach.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
    on_start: impl FnOnce(Handles),
) -> Result<(), DaemonError> {
    let started = Instant::now();
    let state_err = |source| DaemonError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    };
    let previous = restart::previous_run(&cfg.state_dir).map_err(state_err)?;
    // Adopts the kernel's routes of our protocol as they are; nothing is flushed.
    let reconciler = Reconciler::new(cfg.routes.clone())?;
    let route_metrics = reconciler.metrics();
    let adopted = reconciler.status().retained;
    let restarting = previous && adopted > 0;
    if restarting {
        tracing::info!(
            adopted,
            "restart: kernel routes of ours adopted; announcing graceful restart (RFC 4724)"
        );
    } else if adopted > 0 {
        tracing::info!(
            adopted,
            "kernel routes of ours found without a run marker; kept until the peers' tables arrive"
        );
    }
    restart::write_marker(&cfg.state_dir).map_err(state_err)?;
    let (routes, commands) = ReconcilerHandle::new(&reconciler);
    let reconcile_task = tokio::spawn(async move {
        if let Err(e) = reconciler.run(commands).await {
            tracing::error!(error = %e, "the route reconciler stopped");
        }
    });

    let (state_tx, state_rx) = channel::channel(AgentState {
        restarting,
        ..AgentState::default()
    });
    let services = match services::Services::start(
        &cfg,
        &client,
        routes.clone(),
        route_metrics,
        state_rx.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            reconcile_task.abort();
            return Err(e);
        }
    };
    on_start(Handles {
        routes: routes.clone(),
        state: state_rx,
        started,
    });

    let notify = Arc::new(Notify::new());
    let caches = watch::Caches::start(&client, &cfg.node_name, &cfg.namespace, notify.clone());
    let mut control = control::Control::new(
        cfg, client, caches, routes, restarting, adopted, started, state_tx,
    );
    let result = tokio::select! {
        r = control.run(notify) => r,
        () = shutdown => Ok(()),
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "the control loop stopped");
    }
    // No new pods (the CNI socket goes), then stop writing routes before the speaker's stream
    // ends: the kernel keeps every route of ours.
    services.stop().await;
    reconcile_task.abort();
    control.stop_for_restart().await;
    result
}
