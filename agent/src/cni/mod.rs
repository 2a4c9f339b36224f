//! Pods on the network: the agent's side of the CNI socket.
//!
//! [`start`] reconciles what a previous agent left (orphan `tab…` veths, allocations of pods
//! that are gone; see [`reconcile`] for how a live pod is recognised), binds the socket
//! (`tabby_cni::server`, root-only) and serves [`handler::AgentHandler`] until
//! [`CniService::stop`].
//!
//! Owns: the CNI socket, the pod veths (through `tabby_cni::datapath`) and this node's pod
//! allocations (through [`crate::ipam::IpamClient`]). Hands pod host routes to the route
//! reconciler ([`crate::routes::ReconcilerHandle::set_pod_route`]) so its resyncs keep them
//! and put them back when someone deletes them. Must not touch other routes, other links, or
//! blocks' spec.
//!
//! Runs in the network namespace of the calling thread (the node's), like the datapath and
//! route reconciler it drives.

pub mod handler;
pub mod locks;
pub mod reconcile;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tabby_cni::datapath::{Datapath, DatapathError};
use tabby_cni::server::{CniServer, ServerError, ServerStats};
use tracing::{info, warn};

use crate::ipam::IpamClient;
use crate::metrics::IpamCounters;
use crate::routes::ReconcilerHandle;
use handler::AgentHandler;

// The datapath writes pod host routes the route reconciler then owns: same protocol, same
// metric, or the reconciler would see them as foreign (or delete them as stale).
const _: () = assert!(tabby_cni::datapath::ROUTE_PROTOCOL == crate::routes::TABBY_RT_PROTO);
const _: () = assert!(tabby_cni::datapath::HOST_ROUTE_METRIC == crate::routes::DEFAULT_METRIC);

/// Settings of the CNI service. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniConfig {
    /// The socket the shim connects to (default `/var/run/tabby/cni.sock`).
    pub socket: PathBuf,
    /// Pod MTU; `None` = detected from the host's interfaces (`tabby_cni::datapath::choose_mtu`).
    /// A network configuration's `mtu` overrides it per request.
    pub mtu: Option<u32>,
    /// How long ADD waits for an address when the node's blocks are full or it has none yet
    /// (the controller assigns a block meanwhile), before failing with code 11 (default 30 s).
    pub block_wait: Duration,
    /// While waiting, try again this often (default 500 ms).
    pub retry_interval: Duration,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            socket: PathBuf::from(tabby_cni::spec::DEFAULT_AGENT_SOCKET),
            mtu: None,
            block_wait: Duration::from_secs(30),
            retry_interval: Duration::from_millis(500),
        }
    }
}

/// What the service uses.
pub struct CniDeps {
    pub client: kube::Client,
    pub node: String,
    pub ipam: IpamClient,
    pub routes: ReconcilerHandle,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum CniStartError {
    #[error("pod datapath: {0}")]
    Datapath(#[from] DatapathError),
    #[error("start-up reconcile: {0}")]
    Inventory(#[from] reconcile::InventoryError),
    #[error("start-up reconcile: releasing the allocation of vanished container {handle}: {msg}")]
    Release { handle: String, msg: String },
    #[error("CNI socket: {0}")]
    Socket(#[from] ServerError),
    #[error("the route reconciler is not running")]
    RoutesStopped,
}

/// What the start-up reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Live pods kept (container IDs).
    pub kept: Vec<String>,
    /// Orphan interfaces deleted.
    pub removed_interfaces: Vec<String>,
    /// Containers whose allocations were released.
    pub released: Vec<String>,
}

/// The running service.
pub struct CniService {
    stats: Arc<ServerStats>,
    ipam_counters: Arc<IpamCounters>,
    ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    socket: PathBuf,
    report: StartReport,
    mtu: u32,
}

/// Reconciles leftovers (orphan veths, allocations of vanished pods), binds the socket, spawns
/// the server.
pub async fn start(cfg: CniConfig, deps: CniDeps) -> Result<CniService, CniStartError> {
    let datapath = Datapath::new(None, cfg.mtu).await?;
    let mtu = datapath.mtu();
    let ready = Arc::new(AtomicBool::new(false));
    let ipam_counters = Arc::new(IpamCounters::default());
    let handler = Arc::new(AgentHandler {
        client: deps.client,
        node: deps.node,
        ipam: deps.ipam,
        routes: deps.routes,
        datapath,
        block_wait: cfg.block_wait,
        retry_interval: cfg.retry_interval.max(Duration::from_millis(10)),
        mtu: cfg.mtu,
        locks: locks::KeyedLocks::default(),
        ipam_turn: tokio::sync::Mutex::new(()),
        ready: ready.clone(),
        ipam_counters: ipam_counters.clone(),
    });
    let report = reconcile_at_start(&handler).await?;
    let server = CniServer::bind(&cfg.socket)?;
    let stats = server.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = handler.clone();
    let task = tokio::spawn(async move {
        server
            .serve(h, async {
                let _ = rx.await;
            })
            .await
    });
    ready.store(true, Ordering::Release);
    info!(socket = %cfg.socket.display(), mtu, kept = report.kept.len(),
        removed = report.removed_interfaces.len(), released = report.released.len(),
        "CNI service ready");
    Ok(CniService {
        stats,
        ipam_counters,
        ready,
        stop: Some(tx),
        task,
        socket: cfg.socket,
        report,
        mtu,
    })
}

async fn reconcile_at_start(h: &AgentHandler) -> Result<StartReport, CniStartError> {
    let veths = reconcile::host_veths().await?;
    let holdings = reconcile::node_allocations(&h.client, &h.node).await?;
    let plan = reconcile::plan(&veths, &holdings);
    let removed = h.datapath.reconcile(&plan.live).await?;
    for handle in &plan.release {
        let released = h.ipam.release(handle).await;
        h.ipam_counters.released(released.is_ok());
        match released {
            Ok(r) => {
                info!(container = %handle, addresses = ?r.iter().map(|r| r.address).collect::<Vec<_>>(),
                "released the allocation of a container without a live interface")
            }
            Err(e) => {
                return Err(CniStartError::Release {
                    handle: handle.clone(),
                    msg: e.to_string(),
                });
            }
        }
    }
    for (_, index, addrs) in &plan.keep {
        for a in addrs {
            h.routes
                .set_pod_route(ipnet::IpNet::from(*a), *index)
                .map_err(|_| CniStartError::RoutesStopped)?;
        }
    }
    if !removed.is_empty() {
        warn!(interfaces = ?removed, "removed orphaned pod interfaces");
    }
    Ok(StartReport {
        kept: plan.keep.into_iter().map(|(c, _, _)| c).collect(),
        removed_interfaces: removed,
        released: plan.release,
    })
}

impl CniService {
    /// Request counters of the socket (for metrics).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Allocations (ADD) and releases (DEL) and their outcomes, for the metrics.
    pub fn ipam_counters(&self) -> Arc<IpamCounters> {
        self.ipam_counters.clone()
    }

    /// True while the socket serves (readiness).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.task.is_finished()
    }

    /// What the start-up reconcile did.
    pub fn start_report(&self) -> &StartReport {
        &self.report
    }

    /// The MTU pods get unless their configuration says otherwise.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Stops accepting requests (new ADDs get code 11 meanwhile), lets the server loop end and
    /// removes the socket file. Requests already accepted finish on their own tasks.
    pub async fn stop(mut self) {
        self.ready.store(false, Ordering::Release);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the CNI server ended with an error"),
            Err(e) => warn!(error = %e, "the CNI server task failed"),
        }
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(socket = %self.socket.display(), error = %e, "could not remove the CNI socket")
            }
        }
    }
}

impl Drop for CniService {
    fn drop(&mut self) {
        // Dropped without `stop`: end the server loop all the same.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
