//! The agent's side of the CNI socket: a tokio listener that lets only root in, decodes each
//! shim request, validates it with [`crate::spec`] and hands it to the agent's [`Handler`].
//!
//! Owns the socket file and its directory (root-owned 0700 directory, 0600 socket), the peer
//! credential check (SO_PEERCRED) and the request/answer exchange. Must not touch pod
//! networking or IPAM: that is the handler's job. Requests are served concurrently, one task per
//! connection.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::spec::{Attachment, CniError, CniResult, Command, ErrorCode, NetConf, Request, Version};
use crate::wire::{MAX_REQUEST_BYTES, WireRequest, WireResponse};

/// How long a connected client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent implements. Each method gets a validated request; errors are CNI error
/// objects (use the spec's codes: 11 when the agent cannot serve yet, 3 for an unknown
/// container on CHECK, 100+ for Tabby's own failures).
pub trait Handler: Send + Sync + 'static {
    /// ADD: allocate, plumb, and answer the pod's result (without `prevResult` merging — the
    /// server appends Tabby's result to a previous one itself).
    fn add(&self, req: &Request) -> impl Future<Output = Result<CniResult, CniError>> + Send;
    /// DEL: release and unplumb; must succeed when there is nothing left to do.
    fn del(&self, req: &Request) -> impl Future<Output = Result<(), CniError>> + Send;
    /// CHECK: verify the pod's networking matches `req.config.prev_result`.
    fn check(&self, req: &Request) -> impl Future<Output = Result<(), CniError>> + Send;
    /// STATUS: `Ok` when ADD can be served; 50 (or 51) otherwise.
    fn status(&self, req: &Request) -> impl Future<Output = Result<(), CniError>> + Send;
    /// GC: release everything of this network not in `valid`.
    fn gc(
        &self,
        req: &Request,
        valid: &[Attachment],
    ) -> impl Future<Output = Result<(), CniError>> + Send;
}

/// Counters the agent exports as metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub refused: AtomicU64,
}

/// Errors while setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("CNI socket path {0} has no parent directory")]
    NoParent(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CNI socket directory {path} is owned by uid {owner}, not by us (uid {us}); refusing to use it"
    )]
    ForeignDirectory { path: PathBuf, owner: u32, us: u32 },
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io { what, path, source }
}

/// Only this uid may talk to the agent: root, as container runtimes run plugins.
pub const ALLOWED_UID: u32 = 0;

/// The credential rule on its own: `Ok` for root, a refusal naming the caller otherwise.
pub fn check_peer(uid: u32, pid: Option<i32>) -> Result<(), CniError> {
    if uid == ALLOWED_UID {
        return Ok(());
    }
    let who = match pid {
        Some(pid) => format!("uid {uid} (pid {pid})"),
        None => format!("uid {uid}"),
    };
    Err(CniError::new(
        ErrorCode::PERMISSION_DENIED,
        format!("the Tabby agent accepts CNI requests from root only; refused {who}"),
    ))
}

/// A bound CNI socket, ready to [`serve`](CniServer::serve).
#[derive(Debug)]
pub struct CniServer {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    stats: Arc<ServerStats>,
}

impl CniServer {
    /// Creates the socket's directory (0700, must be ours), replaces a stale socket, binds and
    /// sets the socket to 0600. No tokio runtime needed until `serve`.
    pub fn bind(path: &Path) -> Result<CniServer, ServerError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| ServerError::NoParent(path.to_path_buf()))?;
        std::fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
        let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
        let us = nix::unistd::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != us {
            return Err(ServerError::ForeignDirectory {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                us,
            });
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting mode 0700 on", dir))?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(io_err("removing stale socket", path))?;
            }
            Ok(_) => return Err(ServerError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting", path)(e)),
        }
        // The directory is already 0700, so the moment between bind and chmod exposes nothing.
        let listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(io_err("binding CNI socket", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("setting mode 0600 on", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("setting non-blocking", path))?;
        Ok(CniServer {
            listener,
            path: path.to_path_buf(),
            stats: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes; each connection in its own task. Requests in flight
    /// when shutdown comes finish on their own tasks.
    pub async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let listener =
            UnixListener::from_std(self.listener).map_err(io_err("registering", &self.path))?;
        tracing::info!(socket = %self.path.display(), "CNI server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        let stats = self.stats.clone();
                        tokio::spawn(async move { connection(stream, handler, stats).await });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accepting a CNI connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!(socket = %self.path.display(), "CNI server stopped");
        Ok(())
    }
}

async fn connection<H: Handler>(mut stream: UnixStream, handler: Arc<H>, stats: Arc<ServerStats>) {
    let refusal = match stream.peer_cred() {
        Ok(cred) => check_peer(cred.uid(), cred.pid()).err(),
        Err(e) => Some(CniError::new(
            ErrorCode::PERMISSION_DENIED,
            format!("the Tabby agent could not read the caller's credentials: {e}"),
        )),
    };
    if let Some(err) = refusal {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(reason = %err.msg, "refused a CNI connection");
        let _ = reply(&mut stream, &WireResponse::Error(err)).await;
        // Closing with the request unread would reset the connection and could drop our
        // answer on the way; swallow what the caller sends (bounded in size and time).
        let mut rest = (&mut stream).take(MAX_REQUEST_BYTES as u64);
        let mut sink = tokio::io::sink();
        let drain = tokio::io::copy(&mut rest, &mut sink);
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        return;
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let response = match read_request(&mut stream).await {
        Ok(req) => handle_request(&*handler, req).await,
        Err(e) => WireResponse::Error(e),
    };
    if let WireResponse::Error(e) = &response {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::info!(code = e.code.0, msg = %e.msg, elapsed_us = started.elapsed().as_micros() as u64, "CNI request failed");
    } else {
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "CNI request done"
        );
    }
    if let Err(e) = reply(&mut stream, &response).await {
        tracing::warn!(error = %e, "could not answer the CNI shim (it may have timed out)");
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<WireRequest, CniError> {
    let mut buf = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut *stream).take(limit).read_to_end(&mut buf),
    )
    .await
    .map_err(|_| {
        CniError::new(
            ErrorCode::IO_FAILURE,
            format!("the shim sent no complete request within {READ_TIMEOUT:?}"),
        )
    })?;
    read.map_err(|e| {
        CniError::new(
            ErrorCode::IO_FAILURE,
            format!("reading the request from the shim: {e}"),
        )
    })?;
    if buf.len() > MAX_REQUEST_BYTES {
        return Err(CniError::new(
            ErrorCode::INVALID_NETWORK_CONFIG,
            format!("request larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| {
        CniError::new(
            ErrorCode::DECODE_FAILURE,
            format!("the shim's request is not valid: {e}"),
        )
    })
}

async fn reply(stream: &mut UnixStream, response: &WireResponse) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

/// Validates one request and runs it through `handler`: the socket-free core of the server,
/// usable directly in tests and benchmarks.
pub async fn handle_request<H: Handler>(handler: &H, wire: WireRequest) -> WireResponse {
    let req = match Request::parse(|k| wire.get(k), wire.stdin.as_bytes()) {
        Ok(r) => r,
        Err(e) => return WireResponse::Error(e),
    };
    let version = req.config.cni_version;
    let span = tracing::info_span!(
        "cni",
        command = %req.env.command,
        container = req.env.container_id.as_deref().unwrap_or(""),
    );
    let outcome = dispatch(handler, &req, version).instrument(span).await;
    match outcome {
        Ok(v) => WireResponse::Ok(v),
        Err(e) => WireResponse::Error(e),
    }
}

async fn dispatch<H: Handler>(
    handler: &H,
    req: &Request,
    version: Version,
) -> Result<Option<serde_json::Value>, CniError> {
    match req.env.command {
        Command::Add => handler
            .add(req)
            .await
            .map(|ours| Some(add_answer(&req.config, &ours, version))),
        Command::Del => handler.del(req).await.map(|()| None),
        Command::Check => handler.check(req).await.map(|()| None),
        Command::Status => handler.status(req).await.map(|()| None),
        Command::Gc => match req.config.valid_attachments() {
            Ok(valid) => handler.gc(req, &valid).await.map(|()| None),
            Err(e) => Err(e),
        },
        // `Request::parse` never yields VERSION.
        Command::Version => Ok(Some(crate::spec::version_answer())),
    }
}

fn add_answer(config: &NetConf, ours: &CniResult, version: Version) -> serde_json::Value {
    match &config.prev_result {
        Some(prev) => CniResult::chain(prev, ours).to_json(version),
        None => ours.to_json(version),
    }
}
