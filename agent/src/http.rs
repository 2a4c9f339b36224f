//! The agent's HTTP endpoints (`--listen`, default `0.0.0.0:9097`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the agent's loops run ([`Health::set_alive`], and [`Health::beat`] within [`LIVENESS_TIMEOUT`] once beating); 503 otherwise — the kubelet restarts the pod |
//! | `GET /readyz` | 200 `ready: …` or 503 `not ready: <reason>` ([`Health::readiness`]) |
//! | `GET /metrics` | OpenMetrics text ([`crate::metrics`]) |
//!
//! Readiness (agent contracts §1): the agent has its Node, its blocks are known, the CNI socket
//! serves, the speaker runs, and every configured peer is Established — or the start grace
//! period (60 s by default) has passed, after which peers that are down are named in the body but
//! no longer hold readiness back (a ToR being down must not take the node's pods out of service).
//!
//! Owns [`Health`] (the facts readiness is computed from). Must not change anything: every route
//! is read-only.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tabby_api::v1alpha1::nodenetworkstatus::{NodeNetworkStatusStatus, PeerType, SessionState};

use crate::metrics::AgentMetrics;

/// Default start grace period for peers (contracts §1).
pub const DEFAULT_PEER_GRACE: Duration = Duration::from_secs(60);

/// Once the main loop calls [`Health::beat`], a silence this long means it is wedged.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);

/// How many down peers the readiness body names.
const PEERS_IN_REASON: usize = 5;

#[derive(Debug, Default, Clone)]
struct Facts {
    alive: bool,
    /// The main loop's last heartbeat; `None`: it does not beat (only `alive` counts).
    beat: Option<Instant>,
    node: bool,
    blocks: bool,
    cni: bool,
    speaker: bool,
    sessions_configured: usize,
    /// Configured sessions not Established, as "address (type)".
    sessions_down: Vec<String>,
}

/// The facts readiness and liveness are computed from; the agent's loops set them.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    grace: Duration,
    facts: Mutex<Facts>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_PEER_GRACE)
    }
}

impl Health {
    /// Everything false; `grace` counts from now.
    pub fn new(grace: Duration) -> Self {
        Health {
            started: Instant::now(),
            grace,
            facts: Mutex::new(Facts::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Facts) -> R) -> R {
        f(&mut self.facts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The main loops run (false when one of them ended or is wedged).
    pub fn set_alive(&self, v: bool) {
        self.with(|f| f.alive = v);
    }

    /// The agent read its Node.
    pub fn set_node_known(&self, v: bool) {
        self.with(|f| f.node = v);
    }

    /// The agent's IPAMBlocks are known (listed and watched).
    pub fn set_blocks_known(&self, v: bool) {
        self.with(|f| f.blocks = v);
    }

    /// The CNI socket serves.
    pub fn set_cni_ready(&self, v: bool) {
        self.with(|f| f.cni = v);
    }

    /// The BGP speaker runs.
    pub fn set_speaker_running(&self, v: bool) {
        self.with(|f| f.speaker = v);
    }

    /// The configured sessions, and those not Established (e.g. `"192.0.2.1 (global)"`).
    pub fn set_sessions(&self, configured: usize, not_established: Vec<String>) {
        self.with(|f| {
            f.sessions_configured = configured;
            f.sessions_down = not_established;
        });
    }

    /// The sessions as the built NodeNetworkStatus lists them (configured, including peers left
    /// out for a problem; those not Established as `"address (type)"`).
    pub fn set_sessions_from(&self, status: &NodeNetworkStatusStatus) {
        let down = status
            .sessions
            .iter()
            .filter(|s| s.state != SessionState::Established)
            .map(|s| {
                let kind = match s.peer_type {
                    PeerType::NodeMesh => "mesh",
                    PeerType::GlobalPeer => "global",
                    PeerType::NodePeer => "node",
                };
                format!("{} ({kind})", s.peer_ip)
            })
            .collect();
        self.set_sessions(status.sessions_total as usize, down);
    }

    /// The main loop is making progress: call on every pass (and on its periodic tick). Once
    /// it has beaten, [`LIVENESS_TIMEOUT`] without a beat fails `/healthz`.
    pub fn beat(&self) {
        self.with(|f| f.beat = Some(Instant::now()));
    }

    /// Liveness.
    pub fn alive(&self) -> bool {
        self.liveness_at(Instant::now()).is_ok()
    }

    /// `Ok` or why not, for the `/healthz` body.
    pub fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    fn liveness_at(&self, now: Instant) -> Result<(), String> {
        let f = self.with(|f| f.clone());
        if !f.alive {
            return Err("the agent's loops are not running".into());
        }
        match f.beat {
            Some(t) if now.saturating_duration_since(t) > LIVENESS_TIMEOUT => Err(format!(
                "no heartbeat from the main loop for {}s",
                now.saturating_duration_since(t).as_secs()
            )),
            _ => Ok(()),
        }
    }

    /// `(ready, reason)`; the reason is one line for the `/readyz` body.
    pub fn readiness(&self) -> (bool, String) {
        self.readiness_at(Instant::now())
    }

    fn readiness_at(&self, now: Instant) -> (bool, String) {
        let f = self.with(|f| f.clone());
        let mut missing: Vec<String> = self.liveness_at(now).err().into_iter().collect();
        missing.extend(
            [
                (f.node, "its Node has not been read"),
                (f.blocks, "its IPAM blocks are not known yet"),
                (f.cni, "the CNI socket does not serve"),
                (f.speaker, "the BGP speaker is not running"),
            ]
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, why)| why.to_string()),
        );
        if !missing.is_empty() {
            return (false, missing.join("; "));
        }
        if f.sessions_down.is_empty() {
            return (
                true,
                format!(
                    "{} of {} BGP session(s) Established",
                    f.sessions_configured, f.sessions_configured
                ),
            );
        }
        let mut down: Vec<String> = f
            .sessions_down
            .iter()
            .take(PEERS_IN_REASON)
            .cloned()
            .collect();
        if f.sessions_down.len() > PEERS_IN_REASON {
            down.push(format!(
                "and {} more",
                f.sessions_down.len() - PEERS_IN_REASON
            ));
        }
        let summary = format!(
            "{} of {} BGP session(s) not Established: {}",
            f.sessions_down.len(),
            f.sessions_configured,
            down.join(", ")
        );
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.grace {
            (
                true,
                format!(
                    "{summary} (start grace period of {}s over)",
                    self.grace.as_secs()
                ),
            )
        } else {
            (
                false,
                format!(
                    "{summary}; waiting up to {}s more",
                    (self.grace - elapsed).as_secs()
                ),
            )
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<AgentMetrics>,
}

/// The router serving `/healthz`, `/readyz` and `/metrics`.
pub fn router(health: Arc<Health>, metrics: Arc<AgentMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { health, metrics })
}

/// Serves until `shutdown` completes (then finishes in-flight requests and returns).
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<AgentMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: {why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (ready, reason) = s.health.readiness();
    if ready {
        (StatusCode::OK, format!("ready: {reason}\n")).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response()
    }
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode().await,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_up(h: &Health) {
        h.set_alive(true);
        h.set_node_known(true);
        h.set_blocks_known(true);
        h.set_cni_ready(true);
        h.set_speaker_running(true);
    }

    #[test]
    fn readiness_table() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = h.started;
        let (ok, why) = h.readiness_at(t0);
        assert!(!ok);
        assert!(
            why.contains("loops are not running") && why.contains("CNI socket"),
            "{why}"
        );

        all_up(&h);
        h.set_cni_ready(false);
        assert_eq!(
            h.readiness_at(t0),
            (false, "the CNI socket does not serve".into())
        );

        h.set_cni_ready(true);
        h.set_sessions(2, vec![]);
        assert_eq!(
            h.readiness_at(t0),
            (true, "2 of 2 BGP session(s) Established".into())
        );

        h.set_sessions(3, vec!["192.0.2.1 (global)".into()]);
        let (ok, why) = h.readiness_at(t0 + Duration::from_secs(10));
        assert!(!ok);
        assert_eq!(
            why,
            "1 of 3 BGP session(s) not Established: 192.0.2.1 (global); waiting up to 50s more"
        );
        let (ok, why) = h.readiness_at(t0 + Duration::from_secs(60));
        assert!(ok, "{why}");
        assert!(why.ends_with("(start grace period of 60s over)"), "{why}");

        // Grace never excuses a missing basic: the speaker down is not ready at any time.
        h.set_speaker_running(false);
        let (ok, why) = h.readiness_at(t0 + Duration::from_secs(600));
        assert!(!ok);
        assert_eq!(why, "the BGP speaker is not running");
    }

    #[test]
    fn liveness_with_and_without_heartbeats() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = h.started;
        assert_eq!(
            h.liveness_at(t0),
            Err("the agent's loops are not running".into())
        );
        h.set_alive(true);
        // Never beating: alive as long as the flag says so.
        assert_eq!(h.liveness_at(t0 + Duration::from_secs(3600)), Ok(()));
        h.beat();
        let beat = h.with(|f| f.beat).unwrap();
        assert_eq!(h.liveness_at(beat + LIVENESS_TIMEOUT), Ok(()));
        assert_eq!(
            h.liveness_at(beat + LIVENESS_TIMEOUT + Duration::from_secs(15)),
            Err("no heartbeat from the main loop for 75s".into())
        );
        h.set_alive(false);
        assert!(h.liveness_at(beat).is_err());
    }

    #[test]
    fn sessions_from_a_status() {
        use tabby_api::v1alpha1::nodenetworkstatus::BGPSessionStatus;
        let session = |ip: &str, t: PeerType, state: SessionState| BGPSessionStatus {
            peer_ip: ip.into(),
            peer_as: 64512,
            peer_type: t,
            state,
            since: None,
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_advertised: 0,
            last_error: None,
        };
        let h = Health::new(Duration::from_secs(60));
        all_up(&h);
        h.set_sessions_from(&NodeNetworkStatusStatus {
            sessions_total: 3,
            sessions_established: 1,
            sessions: vec![
                session("10.0.0.2", PeerType::NodeMesh, SessionState::Established),
                session("192.0.2.1", PeerType::GlobalPeer, SessionState::Idle),
                session("192.0.2.9", PeerType::NodePeer, SessionState::Active),
            ],
            ..NodeNetworkStatusStatus::default()
        });
        let (ok, why) = h.readiness_at(h.started);
        assert!(!ok);
        assert!(
            why.starts_with(
                "2 of 3 BGP session(s) not Established: 192.0.2.1 (global), 192.0.2.9 (node);"
            ),
            "{why}"
        );
    }

    #[test]
    fn many_down_peers_are_summarised() {
        let h = Health::new(Duration::from_secs(60));
        all_up(&h);
        h.set_sessions(8, (1..=8).map(|i| format!("10.0.0.{i} (mesh)")).collect());
        let (_, why) = h.readiness_at(h.started);
        assert!(why.contains("10.0.0.5 (mesh), and 3 more"), "{why}");
        assert!(!why.contains("10.0.0.6"), "{why}");
    }
}
