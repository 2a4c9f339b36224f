//! Prometheus metrics of the controller and the HTTP endpoints that serve them.
//!
//! Owns the metric names and labels (`tabby_ipam_*`) and `/metrics`, `/healthz`, `/readyz`.
//! Must not make decisions: the controller sets the values.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set `{pool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// Pool name.
    pub pool: String,
}

/// Label set `{pool, state}` with state `used` or `free`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolState {
    /// Pool name.
    pub pool: String,
    /// `used` or `free`.
    pub state: String,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `tabby_ipam_blocks{pool}`: blocks assigned from the pool.
    pub blocks: Family<PoolLabel, Gauge>,
    /// `tabby_ipam_addresses{pool,state}`: addresses used/free.
    pub addresses: Family<PoolState, Gauge>,
    /// `tabby_ipam_blocks_assigned_total`.
    pub assigned: Counter,
    /// `tabby_ipam_blocks_deleted_total` (orphans and drained pools).
    pub deleted: Counter,
    /// `tabby_ipam_gc_released_total`: allocations released by garbage collection.
    pub gc_released: Counter,
    /// `tabby_ipam_node_gone_released_total`: allocations of deleted nodes released.
    pub node_gone_released: Counter,
    /// `tabby_ipam_reclaimed_total`: empty blocks taken back from exhausted pools.
    pub reclaimed: Counter,
    /// `tabby_ipam_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `tabby_ipam_reconcile_errors_total`: failed writes.
    pub reconcile_errors: Counter,
    /// `tabby_ipam_leader`: 1 while this replica holds the lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tabby_ipam");
        let blocks = Family::<PoolLabel, Gauge>::default();
        let addresses = Family::<PoolState, Gauge>::default();
        let assigned = Counter::default();
        let deleted = Counter::default();
        let gc_released = Counter::default();
        let node_gone_released = Counter::default();
        let reclaimed = Counter::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let reconcile_errors = Counter::default();
        let leader = Gauge::default();
        registry.register("blocks", "Blocks assigned from each pool", blocks.clone());
        registry.register(
            "addresses",
            "Addresses of each pool by state (used, free)",
            addresses.clone(),
        );
        registry.register(
            "blocks_assigned",
            "Blocks created for nodes",
            assigned.clone(),
        );
        registry.register(
            "blocks_deleted",
            "Empty blocks deleted (deleted nodes, drained pools)",
            deleted.clone(),
        );
        registry.register(
            "gc_released",
            "Allocations released because their pod was gone for the grace period",
            gc_released.clone(),
        );
        registry.register(
            "node_gone_released",
            "Allocations of deleted nodes released after their pods were gone",
            node_gone_released.clone(),
        );
        registry.register(
            "reclaimed",
            "Empty blocks taken back from nodes because their pool was exhausted",
            reclaimed.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass, writes included",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Writes that failed during reconcile passes",
            reconcile_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        Self {
            registry,
            blocks,
            addresses,
            assigned,
            deleted,
            gc_released,
            node_gone_released,
            reclaimed,
            reconcile_duration,
            reconcile_errors,
            leader,
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Role of this replica, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Caches not synced yet.
    Starting = 0,
    /// Synced and waiting for the lease.
    Standby = 1,
    /// Synced and holding the lease.
    Leader = 2,
}

/// Shared health state.
#[derive(Debug, Default)]
pub struct Health {
    /// Process is up and its loops are running.
    pub alive: AtomicBool,
    role: AtomicU8,
}

impl Health {
    /// Sets the role.
    pub fn set_role(&self, r: Role) {
        self.role.store(r as u8, Ordering::Relaxed);
    }

    /// The role.
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Starting,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.health.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not running\n").into_response()
    }
}

/// Ready means the caches are synced; the body says whether this replica leads or stands by
/// (both are ready: a standby is a healthy replica waiting for the lease).
async fn readyz(State(s): State<AppState>) -> Response {
    match s.health.role() {
        Role::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: caches not synced\n",
        )
            .into_response(),
        Role::Standby => (StatusCode::OK, "ready: standby\n").into_response(),
        Role::Leader => (StatusCode::OK, "ready: leader\n").into_response(),
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}
