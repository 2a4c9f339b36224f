//! `tabby-kube-sim`: an in-memory emulator of the Kubernetes API for the subset Tabby and the
//! `kube`/`kubectl` clients use, faithful to the API conventions (optimistic concurrency, watch
//! semantics, CRD schemas, status subresource, finalizers, server-side apply).
//!
//! Test and lab infrastructure only: it ships in no image or chart. See the crate README for what
//! it implements and what it deliberately does not.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tabby_kube_sim::SimError> {
//! let sim = tabby_kube_sim::KubeSim::start(tabby_kube_sim::Config::default()).await?;
//! let client = sim.client().await?;
//! # let _ = client;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod apply;
pub mod cel_rules;
pub mod error;
pub mod patch;
pub mod render;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use http::{HeaderMap, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot, watch as tokio_watch};
use tokio::task::JoinSet;

pub use error::ApiError;
pub use server::{Faults, Stats};

use server::Shared;
use store::State;

/// Errors of the emulator's own operations (start-up, persistence, client construction).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding or serving failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS material could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Snapshot read/write failed.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// Snapshot file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// kube client configuration failed.
    #[error("building kube client: {0}")]
    Client(String),
    /// Creating a CustomResourceDefinition failed.
    #[error("creating CRD {name}: {source}")]
    Crd {
        /// The CRD's name.
        name: String,
        /// The API's answer.
        source: kube::Error,
    },
    /// Writing the kubeconfig failed.
    #[error("writing kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// Target file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Emulator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Serve HTTPS with a freshly generated CA.
    pub tls: bool,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Number of change events kept for watch replay; older versions get 410 Gone.
    pub watch_window: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Persist objects and resourceVersion here (snapshot written when dirty, every
    /// `snapshot_interval`, and on shutdown).
    pub data_dir: Option<PathBuf>,
    /// Snapshot period.
    pub snapshot_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            token: None,
            watch_window: 20_000,
            bookmark_interval: Duration::from_secs(10),
            data_dir: None,
            snapshot_interval: Duration::from_secs(1),
        }
    }
}

/// A running emulator.
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

const SNAPSHOT_FILE: &str = "kube-sim-snapshot.json";

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

fn save_snapshot(shared: &Shared) -> Result<(), SimError> {
    let Some(dir) = &shared.data_dir else {
        return Ok(());
    };
    let path = snapshot_path(dir);
    let err = |reason: String| SimError::Snapshot {
        path: path.clone(),
        reason,
    };
    shared.dirty.store(false, Ordering::Relaxed);
    let bytes = {
        let state = shared.lock();
        serde_json::to_vec(&state.snapshot()).map_err(|e| err(e.to_string()))?
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn load_snapshot(state: &mut State, dir: &Path) -> Result<bool, SimError> {
    let path = snapshot_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(SimError::Snapshot {
                path,
                reason: e.to_string(),
            });
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| SimError::Snapshot {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    server::restore(state, &v).map_err(|reason| SimError::Snapshot { path, reason })?;
    Ok(true)
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    match &shared.token {
        None => true,
        Some(t) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|x| x == t),
    }
}

fn admin_json<T: serde::Serialize>(v: &T) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

async fn admin_stats(AxState(s): AxState<Arc<Shared>>, h: HeaderMap) -> Response {
    if !authorized(&s, &h) {
        return server::error_response(&ApiError::unauthorized());
    }
    let stats = s.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    admin_json(&stats)
}

async fn admin_reset_stats(AxState(s): AxState<Arc<Shared>>, h: HeaderMap) -> Response {
    if !authorized(&s, &h) {
        return server::error_response(&ApiError::unauthorized());
    }
    s.stats.lock().unwrap_or_else(|p| p.into_inner()).clear();
    admin_json(&json!({}))
}

async fn admin_get_faults(AxState(s): AxState<Arc<Shared>>, h: HeaderMap) -> Response {
    if !authorized(&s, &h) {
        return server::error_response(&ApiError::unauthorized());
    }
    let f = s.faults.lock().unwrap_or_else(|p| p.into_inner()).clone();
    admin_json(&f)
}

async fn admin_set_faults(
    AxState(s): AxState<Arc<Shared>>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&s, &h) {
        return server::error_response(&ApiError::unauthorized());
    }
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) if (0.0..=1.0).contains(&f.error_rate) => {
            *s.faults.lock().unwrap_or_else(|p| p.into_inner()) = f.clone();
            admin_json(&f)
        }
        Ok(_) => server::error_response(&ApiError::bad_request("errorRate must be within 0..=1")),
        Err(e) => server::error_response(&ApiError::bad_request(format!("invalid faults: {e}"))),
    }
}

async fn admin_action(
    AxState(s): AxState<Arc<Shared>>,
    h: HeaderMap,
    axum::extract::Path(action): axum::extract::Path<String>,
) -> Response {
    if !authorized(&s, &h) {
        return server::error_response(&ApiError::unauthorized());
    }
    match action.as_str() {
        "drop-watches" => s.drop_all_watches(),
        "compact" => s.lock().compact(),
        "restart" => {
            if let Err(e) = restart(&s) {
                return server::error_response(&ApiError::internal(e.to_string()));
            }
        }
        "snapshot" => {
            if let Err(e) = save_snapshot(&s) {
                return server::error_response(&ApiError::internal(e.to_string()));
            }
        }
        other => return server::error_response(&ApiError::no_route(&format!("/_sim/{other}"))),
    }
    let rv = s.lock().rv;
    admin_json(&json!({"done": action, "resourceVersion": rv.to_string()}))
}

/// Simulated API server restart: the watch cache is rebuilt (history dropped, so watches from
/// older versions get 410), every watch connection ends, and the snapshot is written.
fn restart(shared: &Shared) -> Result<(), SimError> {
    save_snapshot(shared)?;
    shared.lock().compact();
    shared.drop_all_watches();
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/stats", get(admin_stats).delete(admin_reset_stats))
        .route("/_sim/faults", get(admin_get_faults).put(admin_set_faults))
        .route("/_sim/{action}", post(admin_action))
        .fallback(server::dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(server::MAX_BODY))
        .with_state(shared)
}

impl KubeSim {
    /// Starts the emulator and returns once it accepts connections.
    pub async fn start(config: Config) -> Result<KubeSim, SimError> {
        let (events, _) = broadcast::channel(16_384);
        let mut state = State::new(config.watch_window, events.clone());
        let restored = match &config.data_dir {
            Some(dir) => load_snapshot(&mut state, dir)?,
            None => false,
        };
        if !restored {
            server::bootstrap(&mut state);
        }
        let (drop_watches, _) = tokio_watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            events,
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::new()),
            drop_watches,
            token: config.token.clone(),
            bookmark_interval: config.bookmark_interval,
            dirty: Default::default(),
            address: Mutex::new(String::new()),
            data_dir: config.data_dir.clone(),
        });
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SimError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: config.listen,
            source,
        })?;
        *shared.address.lock().unwrap_or_else(|p| p.into_inner()) = addr.to_string();
        let tls = if config.tls {
            Some(tls::generate(&[])?)
        } else {
            None
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config));
        let (stop_tx, stop_rx) = oneshot::channel();
        let app = router(shared.clone());
        let task = tokio::spawn(serve(
            listener,
            app,
            acceptor,
            stop_rx,
            shared.clone(),
            config.snapshot_interval,
        ));
        tracing::info!(%addr, tls = ca_pem.is_some(), "tabby-kube-sim listening");
        Ok(KubeSim {
            shared,
            addr,
            ca_pem,
            token: config.token,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` or `https://...`.
    pub fn base_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A kubeconfig pointing at this emulator (context `kube-sim`).
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        let mut cluster = json!({"server": self.base_url()});
        if let Some(ca) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        let mut user = json!({});
        if let Some(t) = &self.token {
            user["token"] = json!(t);
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-sim", "cluster": cluster}],
            "users": [{"name": "kube-sim", "user": user}],
            "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"}}],
            "current-context": "kube-sim",
            "preferences": {}
        });
        // The document above is well-formed by construction.
        serde_json::from_value(doc).unwrap_or_default()
    }

    /// Writes [`KubeSim::kubeconfig`] as YAML.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SimError> {
        let err = |reason: String| SimError::Kubeconfig {
            path: path.to_owned(),
            reason,
        };
        let yaml = serde_yaml::to_string(&self.kubeconfig()).map_err(|e| err(e.to_string()))?;
        std::fs::write(path, yaml).map_err(|e| err(e.to_string()))
    }

    /// A `kube::Client` for this emulator (through the same kubeconfig path real clusters use).
    pub async fn client(&self) -> Result<kube::Client, SimError> {
        let cfg = kube::Config::from_custom_kubeconfig(
            self.kubeconfig(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| SimError::Client(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| SimError::Client(e.to_string()))
    }

    /// Creates `crds` through the API, as `kubectl apply` of a chart's `crds/` would. The
    /// emulator serves a CRD's resource as soon as the create returns (it is `Established` at
    /// once), so callers need not poll for it.
    pub async fn install_crds(
        &self,
        crds: impl IntoIterator<
            Item = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >,
    ) -> Result<(), SimError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: kube::Api<CustomResourceDefinition> = kube::Api::all(self.client().await?);
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.create(&kube::api::PostParams::default(), &crd)
                .await
                .map_err(|source| SimError::Crd { name, source })?;
        }
        Ok(())
    }

    /// Current fault injection settings.
    pub fn faults(&self) -> Faults {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the fault injection settings.
    pub fn set_faults(&self, f: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// Request counts per `verb resource` (e.g. `update ipamblocks.tabby.dev/status`).
    pub fn stats(&self) -> Stats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Clears the request counts.
    pub fn reset_stats(&self) {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Ends every open watch.
    pub fn drop_watches(&self) {
        self.shared.drop_all_watches();
    }

    /// Drops the watch history: reconnecting from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Simulated restart (see the `/_sim/restart` endpoint).
    pub fn restart(&self) -> Result<(), SimError> {
        restart(&self.shared)
    }

    /// The last issued resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Number of stored objects of `group`/`resource`.
    pub fn count(&self, group: &str, resource: &str) -> usize {
        self.shared
            .lock()
            .bucket(&resources::GroupResource::new(group, resource))
            .map_or(0, |b| b.len())
    }

    /// Stops serving, closes every connection and writes the final snapshot.
    pub async fn shutdown(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = save_snapshot(&self.shared) {
            tracing::warn!(error = %e, "final snapshot failed");
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    listener: TcpListener,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
    shared: Arc<Shared>,
    snapshot_every: Duration,
) {
    let mut conns = JoinSet::new();
    let mut snap = tokio::time::interval(snapshot_every);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = snap.tick(), if shared.data_dir.is_some() => {
                if shared.dirty.load(Ordering::Relaxed)
                    && let Err(e) = save_snapshot(&shared)
                {
                    tracing::warn!(error = %e, "snapshot failed");
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let result = match acceptor {
                        Some(acc) => match acc.accept(tcp).await {
                            Ok(tls) => builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        },
                        None => builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    shared.drop_all_watches();
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
