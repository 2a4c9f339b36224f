//! The status and metrics HTTP API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /status` | router id, AS, uptime, listeners, session counts |
//! | `GET /peers` | every peer: state, uptime, prefixes received/accepted/advertised, messages, last NOTIFICATION in words, last error |
//! | `GET /peers/{address}` | one peer (404 if not configured) |
//! | `GET /rib/{prefix}` | every Loc-RIB path of exactly that prefix, best first, ECMP set marked |
//! | `GET /rib?peer=ADDR&dir=in\|out` | the peer's Adj-RIB-In (post-policy) or Adj-RIB-Out |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /healthz` | 200 while the speaker answers, else 503 |
//!
//! Errors are JSON `{"error": "…"}` with 400 (bad input), 404 (unknown peer or prefix) or 503
//! (speaker stopped). Owns the JSON shapes (views over the speaker's status types); must not
//! change anything: every route is read-only.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tabby_bgp::fsm::State as FsmState;
use tabby_bgp::session::MessageCounts;
use tabby_bgp::speaker::{AdjRoute, NotificationInfo, PathInfo, PeerStatus, SpeakerError};

use crate::config::parse_prefix;
use crate::daemon::Daemon;

/// The router for the daemon's HTTP API.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/peers/{address}", get(peer))
        .route("/rib", get(adj_rib))
        .route("/rib/{*prefix}", get(rib_lookup))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(daemon)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SpeakerError> for ApiError {
    fn from(e: SpeakerError) -> ApiError {
        match e {
            SpeakerError::UnknownPeer(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            SpeakerError::Stopped => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub router_id: String,
    pub asn: u32,
    pub cluster_id: Option<String>,
    pub uptime_s: f64,
    pub started_at: f64,
    pub listening: Vec<String>,
    pub config: String,
    pub peers_configured: usize,
    pub peers_established: usize,
    pub prefixes_originated: usize,
    pub policies: usize,
}

async fn status(State(d): State<Arc<Daemon>>) -> ApiResult<StatusView> {
    let cfg = d.running_config().await;
    let peers = d.speaker().peers().await?;
    Ok(Json(StatusView {
        router_id: cfg.router_id.to_string(),
        asn: cfg.asn,
        cluster_id: cfg.cluster_id.map(|c| c.to_string()),
        uptime_s: d.uptime().as_secs_f64(),
        started_at: unix_secs(d.started_at()),
        listening: d
            .speaker()
            .listening()
            .iter()
            .map(ToString::to_string)
            .collect(),
        config: d.config_path().display().to_string(),
        peers_configured: peers.len(),
        peers_established: peers
            .iter()
            .filter(|p| p.state == FsmState::Established)
            .count(),
        prefixes_originated: cfg.originate.len(),
        policies: cfg.policies.len(),
    }))
}

/// A NOTIFICATION as the API shows it.
#[derive(Debug, Serialize)]
pub struct NotificationView {
    pub code: u8,
    pub subcode: u8,
    /// `Cease / Administrative Shutdown (6/2)`.
    pub text: String,
    pub at: f64,
}

impl From<&NotificationInfo> for NotificationView {
    fn from(n: &NotificationInfo) -> Self {
        NotificationView {
            code: n.code,
            subcode: n.subcode,
            text: n.text.clone(),
            at: unix_secs(n.at),
        }
    }
}

/// Prefix counts of one peer.
#[derive(Debug, Serialize)]
pub struct PrefixCounts {
    /// NLRI announced by the peer since the session came up, accepted or not.
    pub received: u64,
    /// Held after import policy (post-policy Adj-RIB-In).
    pub accepted: u32,
    /// Currently advertised to the peer.
    pub advertised: u32,
}

/// `GET /peers` entries.
#[derive(Debug, Serialize)]
pub struct PeerView {
    pub address: IpAddr,
    pub remote_asn: u32,
    pub description: Option<String>,
    pub state: String,
    /// Seconds Established; `null` when not Established.
    pub uptime_s: Option<f64>,
    /// When the session entered its current state (Unix seconds).
    pub state_since: f64,
    pub router_id: Option<String>,
    /// Times the session reached Established.
    pub established_count: u64,
    pub prefixes: PrefixCounts,
    pub messages_sent: MessageCounts,
    pub messages_received: MessageCounts,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub last_notification_sent: Option<NotificationView>,
    pub last_notification_received: Option<NotificationView>,
    /// Why the session last went down, in words.
    pub last_error: Option<String>,
    /// When `last_error` is a failed outgoing connect, its cause: `refused`, `unreachable`,
    /// `no_answer` or `other`.
    pub connect_failure: Option<&'static str>,
    /// Routes kept as stale until (graceful restart helper), Unix seconds.
    pub stale_until: Option<f64>,
    pub max_prefix_tripped: bool,
    pub max_prefix_restart_at: Option<f64>,
}

impl From<&PeerStatus> for PeerView {
    fn from(p: &PeerStatus) -> Self {
        let established = p.state == FsmState::Established;
        PeerView {
            address: p.address,
            remote_asn: p.remote_asn,
            description: p.description.clone(),
            state: p.state.to_string(),
            uptime_s: established.then_some(p.for_.as_secs_f64()),
            state_since: unix_secs(p.since),
            router_id: p.router_id.map(|r| r.to_string()),
            established_count: p.established_count,
            prefixes: PrefixCounts {
                received: p.prefixes_received,
                accepted: p.prefixes_accepted,
                advertised: p.prefixes_advertised,
            },
            messages_sent: p.messages_sent,
            messages_received: p.messages_received,
            notifications_sent: p.notifications_sent,
            notifications_received: p.notifications_received,
            last_notification_sent: p.last_notification_sent.as_ref().map(Into::into),
            last_notification_received: p.last_notification_received.as_ref().map(Into::into),
            last_error: p.last_error.clone(),
            connect_failure: p.connect_failure.as_ref().map(|c| c.kind()),
            stale_until: p.stale_until.map(unix_secs),
            max_prefix_tripped: p.max_prefix_tripped,
            max_prefix_restart_at: p.max_prefix_restart_at.map(unix_secs),
        }
    }
}

async fn peers(State(d): State<Arc<Daemon>>) -> ApiResult<Vec<PeerView>> {
    let peers = d.speaker().peers().await?;
    Ok(Json(peers.iter().map(PeerView::from).collect()))
}

fn parse_addr(s: &str) -> Result<IpAddr, ApiError> {
    s.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{s:?} is not an IP address"),
        )
    })
}

async fn peer(State(d): State<Arc<Daemon>>, Path(address): Path<String>) -> ApiResult<PeerView> {
    let addr = parse_addr(&address)?;
    let peers = d.speaker().peers().await?;
    peers
        .iter()
        .find(|p| p.address == addr)
        .map(|p| Json(PeerView::from(p)))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("peer {addr} is not configured"),
            )
        })
}

/// `GET /rib/{prefix}`.
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub prefix: String,
    /// Best first, then the rest of the ECMP set, then the others.
    pub paths: Vec<PathInfo>,
    /// The next hops of the ECMP set (what a FIB would install).
    pub ecmp_next_hops: Vec<IpAddr>,
}

async fn rib_lookup(
    State(d): State<Arc<Daemon>>,
    Path(prefix): Path<String>,
) -> ApiResult<RouteView> {
    let p = parse_prefix(&prefix).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{prefix:?} is not a prefix: {e}"),
        )
    })?;
    let route = d
        .speaker()
        .rib_lookup(p)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{p} is not in the Loc-RIB")))?;
    let mut ecmp_next_hops: Vec<IpAddr> = route
        .paths
        .iter()
        .filter(|x| x.best || x.multipath)
        .map(|x| x.attrs.next_hop)
        .collect();
    ecmp_next_hops.sort();
    ecmp_next_hops.dedup();
    Ok(Json(RouteView {
        prefix: route.prefix.to_string(),
        paths: route.paths,
        ecmp_next_hops,
    }))
}

#[derive(Debug, Deserialize)]
struct AdjQuery {
    peer: Option<String>,
    dir: Option<String>,
}

/// `GET /rib?peer=…&dir=in|out`.
#[derive(Debug, Serialize)]
pub struct AdjRibView {
    pub peer: IpAddr,
    pub dir: &'static str,
    pub count: usize,
    pub routes: Vec<AdjRoute>,
}

async fn adj_rib(State(d): State<Arc<Daemon>>, Query(q): Query<AdjQuery>) -> ApiResult<AdjRibView> {
    let Some(peer) = q.peer else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give peer=ADDRESS (and dir=in or dir=out); for one prefix use /rib/PREFIX".into(),
        ));
    };
    let peer = parse_addr(&peer)?;
    let (dir, routes) = match q.dir.as_deref().unwrap_or("in") {
        "in" => ("in", d.speaker().adj_rib_in(peer).await?),
        "out" => ("out", d.speaker().adj_rib_out(peer).await?),
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("dir={other:?}: must be in or out"),
            ));
        }
    };
    Ok(Json(AdjRibView {
        peer,
        dir,
        count: routes.len(),
        routes,
    }))
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Result<Response, ApiError> {
    let m = d.speaker().metrics().await?;
    let body = crate::metrics::encode(&m, d.uptime(), &d.counters);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn healthz(State(d): State<Arc<Daemon>>) -> Response {
    match d.speaker().metrics().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
