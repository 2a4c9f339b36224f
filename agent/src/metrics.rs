//! The agent's Prometheus metrics, in the OpenMetrics text format (`prometheus-client`).
//!
//! Collected at scrape time from the live sources, so nothing is stale: the main loop registers
//! each source once ([`AgentMetrics::set_speaker`], [`AgentMetrics::set_routes`],
//! [`AgentMetrics::set_cni`], [`AgentMetrics::set_status_publisher`]) and tells which kind each
//! peer is ([`AgentMetrics::set_plan`]); IPAM outcomes are counted as they happen
//! ([`AgentMetrics::set_ipam`], from `CniService::ipam_counters`). Each scrape builds a fresh registry from those and encodes it.
//!
//! Owns the metric names and labels (documented in `docs/operations.md`, "Agent status and
//! metrics"). Must not change anything it reads.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `tabby_agent_bgp_sessions` | gauge | `state` (every FSM state), `type` (`mesh`, `global`, `node`, `unknown`) |
//! | `tabby_agent_bgp_peer_up` | gauge | `peer`, `type` |
//! | `tabby_agent_bgp_peer_prefixes_accepted`, `…_advertised` | gauge | `peer` |
//! | `tabby_agent_bgp_messages_sent_total`, `…_received_total` | counter | `peer`, `message` |
//! | `tabby_agent_bgp_rib_prefixes` | gauge | `family` |
//! | `tabby_agent_bgp_update_processing_seconds` | histogram, buckets 1 µs … 1 s | — |
//! | `tabby_agent_bgp_speaker_up` | gauge | — (0 when the speaker did not answer the scrape) |
//! | `tabby_agent_routes` | gauge | `family` (`ipv4`, `ipv6`): Tabby's routes in the kernel |
//! | `tabby_agent_route_operations_total` | counter | — |
//! | `tabby_agent_netlink_errors_total` | counter | — |
//! | `tabby_agent_route_conflicts` | gauge | — |
//! | `tabby_agent_route_resyncs_total`, `tabby_agent_routes_restored_total` | counter | — |
//! | `tabby_agent_route_reconcile_seconds` | histogram, buckets 1 µs … 1 s | — |
//! | `tabby_agent_route_reconcile_last_seconds` | gauge | — |
//! | `tabby_agent_cni_requests_total` | counter | `result` (`ok`, `error`, `refused`) |
//! | `tabby_agent_ipam_operations_total` | counter | `op` (`allocate`, `release`), `result` (`ok`, `error`) |
//! | `tabby_agent_status_writes_total`, `tabby_agent_status_write_errors_total` | counter | — |
//! | `tabby_agent_uptime_seconds` | gauge | — |

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tabby_bgp::fsm::State;
use tabby_bgp::speaker::{Metrics as SpeakerMetrics, Speaker};
use tabby_cni::server::ServerStats;

use crate::peering::{PeerKind, Plan};
use crate::routes::Metrics as RouteMetrics;
use crate::status::publisher::PublisherStats;

/// How long a scrape waits for the speaker's snapshot.
const SPEAKER_TIMEOUT: Duration = Duration::from_secs(2);

/// IPAM outcomes, counted by whoever allocates and releases.
#[derive(Debug, Default)]
pub struct IpamCounters {
    pub allocate_ok: AtomicU64,
    pub allocate_error: AtomicU64,
    pub release_ok: AtomicU64,
    pub release_error: AtomicU64,
}

impl IpamCounters {
    /// One allocation (a CNI ADD's addresses) succeeded or failed.
    pub fn allocated(&self, ok: bool) {
        let c = if ok {
            &self.allocate_ok
        } else {
            &self.allocate_error
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One release (a CNI DEL) succeeded or failed.
    pub fn released(&self, ok: bool) {
        let c = if ok {
            &self.release_ok
        } else {
            &self.release_error
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The agent's metrics: sources registered once, read at each scrape.
pub struct AgentMetrics {
    started: Instant,
    speaker: RwLock<Option<Speaker>>,
    peer_kinds: RwLock<BTreeMap<IpAddr, PeerKind>>,
    routes: RwLock<Option<Arc<RouteMetrics>>>,
    cni: RwLock<Option<Arc<ServerStats>>>,
    status: RwLock<Option<Arc<PublisherStats>>>,
    ipam: RwLock<Arc<IpamCounters>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes into a lock even if a panicking writer poisoned it (the data is plain and replaced
/// whole, so it is never half-written).
fn put<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl AgentMetrics {
    pub fn new() -> Self {
        AgentMetrics {
            started: Instant::now(),
            speaker: RwLock::new(None),
            peer_kinds: RwLock::new(BTreeMap::new()),
            routes: RwLock::new(None),
            cni: RwLock::new(None),
            status: RwLock::new(None),
            ipam: RwLock::new(Arc::new(IpamCounters::default())),
        }
    }

    /// The running speaker (asked for its metrics at each scrape).
    pub fn set_speaker(&self, speaker: Speaker) {
        put(&self.speaker, Some(speaker));
    }

    /// Which kind (mesh / global / node) each session is, from the plan in force.
    pub fn set_plan(&self, plan: &Plan) {
        self.set_peer_kinds(plan.peers.iter().map(|(a, p)| (*a, p.kind)));
    }

    pub fn set_peer_kinds(&self, kinds: impl IntoIterator<Item = (IpAddr, PeerKind)>) {
        put(&self.peer_kinds, kinds.into_iter().collect());
    }

    /// The route reconciler's counters (`Reconciler::metrics()`).
    pub fn set_routes(&self, routes: Arc<RouteMetrics>) {
        put(&self.routes, Some(routes));
    }

    /// The CNI server's counters (`CniService::stats()`).
    pub fn set_cni(&self, stats: Arc<ServerStats>) {
        put(&self.cni, Some(stats));
    }

    /// The status writer's counters (`StatusPublisher::stats()`).
    pub fn set_status_publisher(&self, stats: Arc<PublisherStats>) {
        put(&self.status, Some(stats));
    }

    /// The IPAM counters read at each scrape (`CniService::ipam_counters()`, which counts
    /// every ADD's allocation and DEL's release).
    pub fn set_ipam(&self, counters: Arc<IpamCounters>) {
        put(&self.ipam, counters);
    }

    /// The IPAM counters in use.
    pub fn ipam(&self) -> Arc<IpamCounters> {
        read(&self.ipam)
    }

    /// One scrape: asks the speaker (bounded wait) and encodes everything.
    pub async fn encode(&self) -> String {
        let speaker = read(&self.speaker);
        let snapshot = match speaker {
            Some(s) => match tokio::time::timeout(SPEAKER_TIMEOUT, s.metrics()).await {
                Ok(Ok(m)) => Some(m),
                Ok(Err(e)) => {
                    tracing::debug!("speaker metrics: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!("speaker metrics: no answer within {SPEAKER_TIMEOUT:?}");
                    None
                }
            },
            None => None,
        };
        self.encode_with(snapshot.as_ref())
    }

    /// Encodes with a given speaker snapshot (`None`: the speaker is not running or did not
    /// answer). Everything else is read from the registered sources.
    pub fn encode_with(&self, speaker: Option<&SpeakerMetrics>) -> String {
        let mut reg = Registry::default();
        self.register_bgp(&mut reg, speaker);
        self.register_routes(&mut reg);
        self.register_cni_ipam_status(&mut reg);
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(self.started.elapsed().as_secs_f64());
        reg.register(
            "tabby_agent_uptime_seconds",
            "Seconds since the agent started",
            g,
        );
        let mut out = String::new();
        // Writing into a String cannot fail; an error would be an encoder bug, and the scrape
        // then returns what was written so far.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    fn register_bgp(&self, reg: &mut Registry, m: Option<&SpeakerMetrics>) {
        let kinds = read(&self.peer_kinds);
        let kind_of = |a: &IpAddr| kinds.get(a).map_or("unknown", |k| kind_name(*k));

        let up_gauge = Gauge::<i64>::default();
        up_gauge.set(i64::from(m.is_some()));
        reg.register(
            "tabby_agent_bgp_speaker_up",
            "1 when the BGP speaker answered this scrape",
            up_gauge,
        );

        let sessions = Family::<StateTypeLabel, Gauge>::default();
        // Every state for every kind, zeros included, so absent series never hide a drop to 0.
        for state in State::ALL {
            for kind in ["mesh", "global", "node"] {
                sessions
                    .get_or_create(&StateTypeLabel {
                        state: state.to_string(),
                        r#type: kind.into(),
                    })
                    .set(0);
            }
        }
        let up = Family::<PeerTypeLabel, Gauge>::default();
        let accepted = Family::<PeerLabel, Gauge>::default();
        let advertised = Family::<PeerLabel, Gauge>::default();
        let sent = Family::<PeerMessageLabel, Counter>::default();
        let received = Family::<PeerMessageLabel, Counter>::default();
        let rib = Family::<FamilyLabel, Gauge>::default();
        if let Some(m) = m {
            for p in &m.peers {
                let peer = p.address.to_string();
                let kind = kind_of(&p.address);
                sessions
                    .get_or_create(&StateTypeLabel {
                        state: p.state.to_string(),
                        r#type: kind.into(),
                    })
                    .inc();
                up.get_or_create(&PeerTypeLabel {
                    peer: peer.clone(),
                    r#type: kind.into(),
                })
                .set(i64::from(p.state == State::Established));
                let l = PeerLabel { peer: peer.clone() };
                accepted
                    .get_or_create(&l)
                    .set(i64::from(p.prefixes_accepted));
                advertised
                    .get_or_create(&l)
                    .set(i64::from(p.prefixes_advertised));
                for (family, counts) in
                    [(&sent, &p.messages_sent), (&received, &p.messages_received)]
                {
                    for (message, n) in counts.by_type() {
                        family
                            .get_or_create(&PeerMessageLabel {
                                peer: peer.clone(),
                                message: message.into(),
                            })
                            .inc_by(n);
                    }
                }
            }
            for (f, n) in [("ipv4", m.ipv4_prefixes), ("ipv6", m.ipv6_prefixes)] {
                rib.get_or_create(&FamilyLabel { family: f.into() })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        reg.register(
            "tabby_agent_bgp_sessions",
            "BGP sessions by FSM state and type (mesh, global, node)",
            sessions,
        );
        reg.register(
            "tabby_agent_bgp_peer_up",
            "1 when the session is Established",
            up,
        );
        reg.register(
            "tabby_agent_bgp_peer_prefixes_accepted",
            "Routes from the peer held after import policy",
            accepted,
        );
        reg.register(
            "tabby_agent_bgp_peer_prefixes_advertised",
            "Routes currently advertised to the peer",
            advertised,
        );
        reg.register(
            "tabby_agent_bgp_messages_sent",
            "BGP messages sent, by peer and message type",
            sent,
        );
        reg.register(
            "tabby_agent_bgp_messages_received",
            "BGP messages received, by peer and message type",
            received,
        );
        reg.register(
            "tabby_agent_bgp_rib_prefixes",
            "Prefixes in the speaker's Loc-RIB",
            rib,
        );
        if let Some(m) = m {
            reg.register(
                "tabby_agent_bgp_update_processing_seconds",
                "Time the speaker spent processing received UPDATEs",
                ConstHistogram {
                    sum: m.update_processing.as_secs_f64(),
                    count: m.updates_processed,
                    buckets: m.update_processing_histogram.buckets(),
                },
            );
        }
    }

    fn register_routes(&self, reg: &mut Registry) {
        let Some(r) = read(&self.routes) else {
            return;
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let routes = Family::<FamilyLabel, Gauge>::default();
        for (f, a) in [("ipv4", &r.routes_v4), ("ipv6", &r.routes_v6)] {
            routes
                .get_or_create(&FamilyLabel { family: f.into() })
                .set(i64::try_from(load(a)).unwrap_or(i64::MAX));
        }
        reg.register(
            "tabby_agent_routes",
            "Tabby's routes in the kernel (blackholes for own blocks, routes to other nodes' blocks, pod routes)",
            routes,
        );
        reg.register(
            "tabby_agent_route_operations",
            "Route operations the kernel carried out",
            const_counter(load(&r.ops_done)),
        );
        reg.register(
            "tabby_agent_netlink_errors",
            "Route operations the kernel refused, plus netlink socket failures",
            const_counter(load(&r.netlink_errors)),
        );
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(load(&r.conflicts)).unwrap_or(i64::MAX));
        reg.register(
            "tabby_agent_route_conflicts",
            "Routes not written because a route of another protocol holds the key",
            g,
        );
        reg.register(
            "tabby_agent_route_resyncs",
            "Full dump-and-diff passes",
            const_counter(load(&r.resyncs)),
        );
        reg.register(
            "tabby_agent_routes_restored",
            "Tabby routes someone else deleted, put back",
            const_counter(load(&r.restored)),
        );
        reg.register(
            "tabby_agent_route_reconcile_seconds",
            "Route reconcile passes and their duration",
            {
                let h = r
                    .reconcile_histogram
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // Count from the buckets, so `+Inf` and `_count` agree within one scrape.
                ConstHistogram {
                    sum: load(&r.reconcile_micros_total) as f64 / 1e6,
                    count: h.count(),
                    buckets: h.buckets(),
                }
            },
        );
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(load(&r.reconcile_micros_last) as f64 / 1e6);
        reg.register(
            "tabby_agent_route_reconcile_last_seconds",
            "Duration of the latest reconcile pass",
            g,
        );
    }

    fn register_cni_ipam_status(&self, reg: &mut Registry) {
        if let Some(s) = read(&self.cni) {
            let requests = s.requests.load(Ordering::Relaxed);
            let errors = s.errors.load(Ordering::Relaxed);
            let refused = s.refused.load(Ordering::Relaxed);
            let fam = Family::<ResultLabel, Counter>::default();
            for (result, n) in [
                ("ok", requests.saturating_sub(errors)),
                ("error", errors),
                ("refused", refused),
            ] {
                fam.get_or_create(&ResultLabel {
                    result: result.into(),
                })
                .inc_by(n);
            }
            reg.register(
                "tabby_agent_cni_requests",
                "CNI requests, by result (refused: the caller's credentials were not accepted)",
                fam,
            );
        }
        let ipam_counters = read(&self.ipam);
        let ipam = Family::<OpResultLabel, Counter>::default();
        for (op, result, a) in [
            ("allocate", "ok", &ipam_counters.allocate_ok),
            ("allocate", "error", &ipam_counters.allocate_error),
            ("release", "ok", &ipam_counters.release_ok),
            ("release", "error", &ipam_counters.release_error),
        ] {
            ipam.get_or_create(&OpResultLabel {
                op: op.into(),
                result: result.into(),
            })
            .inc_by(a.load(Ordering::Relaxed));
        }
        reg.register(
            "tabby_agent_ipam_operations",
            "Pod address allocations and releases, by result",
            ipam,
        );
        if let Some(s) = read(&self.status) {
            reg.register(
                "tabby_agent_status_writes",
                "NodeNetworkStatus writes",
                const_counter(s.writes.load(Ordering::Relaxed)),
            );
            reg.register(
                "tabby_agent_status_write_errors",
                "Failed NodeNetworkStatus write attempts (each retried)",
                const_counter(s.errors.load(Ordering::Relaxed)),
            );
        }
    }
}

fn kind_name(k: PeerKind) -> &'static str {
    match k {
        PeerKind::Mesh => "mesh",
        PeerKind::Global => "global",
        PeerKind::Node => "node",
    }
}

fn const_counter(n: u64) -> prometheus_client::metrics::counter::ConstCounter<u64> {
    prometheus_client::metrics::counter::ConstCounter::new(n)
}

/// A histogram from a snapshot: the sources count per bucket (µs to s,
/// `tabby_bgp::speaker::DURATION_BUCKETS`), this only encodes them.
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, observations in this bucket alone), ascending, ending with +Inf.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateTypeLabel {
    state: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerTypeLabel {
    peer: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerMessageLabel {
    peer: String,
    message: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResultLabel {
    op: String,
    result: String,
}
