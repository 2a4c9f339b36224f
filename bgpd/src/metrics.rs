//! Prometheus metrics of `tabby-bgpd`, in the OpenMetrics text format (`prometheus-client`).
//!
//! Owns the metric names and labels. The speaker keeps its own counters and hands out a
//! snapshot ([`Metrics`]); at each scrape this module builds a fresh registry from that
//! snapshot plus the daemon's own counters ([`DaemonCounters`]) and encodes it. Pure: it must
//! not ask the speaker anything itself.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `tabby_bgp_sessions` | gauge | `state` (every FSM state, zeros included) |
//! | `tabby_bgp_peer_up` | gauge | `peer` (1 when Established) |
//! | `tabby_bgp_peer_prefixes_received_total` | counter | `peer` (NLRI since the session came up) |
//! | `tabby_bgp_peer_prefixes_accepted` | gauge | `peer` |
//! | `tabby_bgp_peer_prefixes_advertised` | gauge | `peer` |
//! | `tabby_bgp_messages_sent_total`, `…_received_total` | counter | `peer`, `type` |
//! | `tabby_bgp_notifications_sent_total`, `…_received_total` | counter | `peer`, `code`, `subcode`, `name` |
//! | `tabby_bgp_rib_prefixes` | gauge | `family` |
//! | `tabby_bgp_rib_attribute_sets`, `tabby_bgp_update_groups` | gauge | — |
//! | `tabby_bgp_update_processing_seconds` | histogram, buckets 1 µs … 1 s (1–2.5–5) and `+Inf` | — |
//! | `tabby_bgp_update_batches_total` | counter | — |
//! | `tabby_bgp_update_batch_max_seconds` | gauge | — |
//! | `tabby_bgpd_uptime_seconds` | gauge | — |
//! | `tabby_bgpd_config_reloads_total` | counter | `result` (`applied`, `rejected`, `partial`) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tabby_bgp::speaker::Metrics;
use tabby_bgp::wire::Notification;

/// How a reload ended, for `tabby_bgpd_config_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Every operation applied (or nothing to do).
    Applied,
    /// Refused before anything changed: a bad file or a change that needs a restart.
    Rejected,
    /// Some operations failed; the others are in force.
    Partial,
}

/// Counters the daemon keeps itself (the speaker does not know about reloads).
#[derive(Debug, Default)]
pub struct DaemonCounters {
    applied: AtomicU64,
    rejected: AtomicU64,
    partial: AtomicU64,
}

impl DaemonCounters {
    pub fn reload(&self, r: ReloadResult) {
        let c = match r {
            ReloadResult::Applied => &self.applied,
            ReloadResult::Rejected => &self.rejected,
            ReloadResult::Partial => &self.partial,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reloads(&self, r: ReloadResult) -> u64 {
        match r {
            ReloadResult::Applied => &self.applied,
            ReloadResult::Rejected => &self.rejected,
            ReloadResult::Partial => &self.partial,
        }
        .load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerTypeLabel {
    peer: String,
    #[prometheus(flatten)]
    kind: TypeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabel {
    peer: String,
    code: String,
    subcode: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// A histogram from a snapshot: the speaker counts per bucket (µs to s, see
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

/// Encodes one scrape: the speaker's snapshot, the daemon's uptime and counters.
pub fn encode(m: &Metrics, uptime: Duration, daemon: &DaemonCounters) -> String {
    let mut reg = Registry::default();

    let sessions = Family::<StateLabel, Gauge>::default();
    for (state, n) in &m.sessions_by_state {
        sessions
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(i64::from(*n));
    }
    reg.register("tabby_bgp_sessions", "BGP sessions by FSM state", sessions);

    let up = Family::<PeerLabel, Gauge>::default();
    let received = Family::<PeerLabel, Counter>::default();
    let accepted = Family::<PeerLabel, Gauge>::default();
    let advertised = Family::<PeerLabel, Gauge>::default();
    let msg_sent = Family::<PeerTypeLabel, Counter>::default();
    let msg_recv = Family::<PeerTypeLabel, Counter>::default();
    let notif_sent = Family::<NotificationLabel, Counter>::default();
    let notif_recv = Family::<NotificationLabel, Counter>::default();
    for p in &m.peers {
        let peer = p.address.to_string();
        let l = PeerLabel { peer: peer.clone() };
        up.get_or_create(&l)
            .set(i64::from(p.state == tabby_bgp::fsm::State::Established));
        received.get_or_create(&l).inc_by(p.prefixes_received);
        accepted
            .get_or_create(&l)
            .set(i64::from(p.prefixes_accepted));
        advertised
            .get_or_create(&l)
            .set(i64::from(p.prefixes_advertised));
        for (family, counts) in [
            (&msg_sent, &p.messages_sent),
            (&msg_recv, &p.messages_received),
        ] {
            for (t, n) in counts.by_type() {
                family
                    .get_or_create(&PeerTypeLabel {
                        peer: peer.clone(),
                        kind: TypeLabel { r#type: t.into() },
                    })
                    .inc_by(n);
            }
        }
        for (family, list) in [
            (&notif_sent, &p.notifications_sent),
            (&notif_recv, &p.notifications_received),
        ] {
            for ((code, subcode), n) in list {
                let (c, s) = Notification::new(*code, *subcode, Vec::new()).names();
                family
                    .get_or_create(&NotificationLabel {
                        peer: peer.clone(),
                        code: code.to_string(),
                        subcode: subcode.to_string(),
                        name: format!("{c} / {s}"),
                    })
                    .inc_by(*n);
            }
        }
    }
    reg.register("tabby_bgp_peer_up", "1 when the session is Established", up);
    reg.register(
        "tabby_bgp_peer_prefixes_received",
        "NLRI announced by the peer since the session came up, accepted or not",
        received,
    );
    reg.register(
        "tabby_bgp_peer_prefixes_accepted",
        "Routes from the peer held after import policy",
        accepted,
    );
    reg.register(
        "tabby_bgp_peer_prefixes_advertised",
        "Routes currently advertised to the peer",
        advertised,
    );
    reg.register(
        "tabby_bgp_messages_sent",
        "BGP messages sent, by type",
        msg_sent,
    );
    reg.register(
        "tabby_bgp_messages_received",
        "BGP messages received, by type",
        msg_recv,
    );
    reg.register(
        "tabby_bgp_notifications_sent",
        "NOTIFICATIONs sent, by code and subcode",
        notif_sent,
    );
    reg.register(
        "tabby_bgp_notifications_received",
        "NOTIFICATIONs received, by code and subcode",
        notif_recv,
    );

    let rib = Family::<FamilyLabel, Gauge>::default();
    for (f, n) in [
        ("ipv4-unicast", m.ipv4_prefixes),
        ("ipv6-unicast", m.ipv6_prefixes),
    ] {
        rib.get_or_create(&FamilyLabel { family: f.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    reg.register("tabby_bgp_rib_prefixes", "Prefixes in the Loc-RIB", rib);
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(m.attr_sets).unwrap_or(i64::MAX));
    reg.register(
        "tabby_bgp_rib_attribute_sets",
        "Distinct interned path-attribute sets",
        g,
    );
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(m.update_groups).unwrap_or(i64::MAX));
    reg.register(
        "tabby_bgp_update_groups",
        "Update groups (shared Adj-RIB-Out)",
        g,
    );
    reg.register(
        "tabby_bgp_update_processing_seconds",
        "Time the speaker spent processing received UPDATEs",
        ConstHistogram {
            sum: m.update_processing.as_secs_f64(),
            count: m.updates_processed,
            buckets: m.update_processing_histogram.buckets(),
        },
    );
    reg.register(
        "tabby_bgp_update_batches",
        "Batches of session events processed (RIB update, export, send)",
        ConstCounter::new(m.update_batches),
    );
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(m.update_processing_max.as_secs_f64());
    reg.register(
        "tabby_bgp_update_batch_max_seconds",
        "The longest single batch",
        g,
    );

    let g = Gauge::<f64, AtomicU64>::default();
    g.set(uptime.as_secs_f64());
    reg.register(
        "tabby_bgpd_uptime_seconds",
        "Seconds since the daemon started",
        g,
    );
    let reloads = Family::<ResultLabel, Counter>::default();
    for (name, r) in [
        ("applied", ReloadResult::Applied),
        ("rejected", ReloadResult::Rejected),
        ("partial", ReloadResult::Partial),
    ] {
        reloads
            .get_or_create(&ResultLabel {
                result: name.into(),
            })
            .inc_by(daemon.reloads(r));
    }
    reg.register(
        "tabby_bgpd_config_reloads",
        "Configuration reloads (SIGHUP), by result",
        reloads,
    );

    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be a bug in an encoder, and the
    // scrape then returns what was written so far.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tabby_bgp::fsm::State;
    use tabby_bgp::session::MessageCounts;
    use tabby_bgp::speaker::PeerMetrics;

    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn snapshot_series_table() {
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        let m = Metrics {
            sessions_by_state: State::ALL
                .iter()
                .map(|s| (*s, u32::from(*s == State::Established)))
                .collect(),
            peers: vec![PeerMetrics {
                address: peer,
                state: State::Established,
                prefixes_received: 12,
                prefixes_accepted: 10,
                prefixes_advertised: 3,
                messages_sent: MessageCounts {
                    open: 1,
                    update: 4,
                    notification: 1,
                    keepalive: 9,
                    route_refresh: 0,
                },
                messages_received: MessageCounts::default(),
                notifications_sent: vec![((6, 1), 1)],
                notifications_received: vec![((4, 0), 2)],
            }],
            ipv4_prefixes: 10,
            ipv6_prefixes: 0,
            attr_sets: 2,
            update_groups: 1,
            update_batches: 5,
            updates_processed: 8,
            update_processing: Duration::from_millis(500),
            update_processing_max: Duration::from_millis(250),
            update_processing_histogram: {
                let mut h = tabby_bgp::speaker::DurationHistogram::default();
                h.observe(Duration::from_micros(40), 5);
                h.observe(Duration::from_millis(2), 2);
                h.observe(Duration::from_secs(2), 1);
                h
            },
        };
        let counters = DaemonCounters::default();
        counters.reload(ReloadResult::Applied);
        counters.reload(ReloadResult::Rejected);
        counters.reload(ReloadResult::Rejected);
        let text = encode(&m, Duration::from_secs(7), &counters);
        let got = lines(&text);
        let p = "peer=\"192.0.2.2\"";
        for want in [
            "tabby_bgp_sessions{state=\"Established\"} 1".to_string(),
            "tabby_bgp_sessions{state=\"Idle\"} 0".to_string(),
            format!("tabby_bgp_peer_up{{{p}}} 1"),
            format!("tabby_bgp_peer_prefixes_received_total{{{p}}} 12"),
            format!("tabby_bgp_peer_prefixes_accepted{{{p}}} 10"),
            format!("tabby_bgp_peer_prefixes_advertised{{{p}}} 3"),
            format!("tabby_bgp_messages_sent_total{{{p},type=\"update\"}} 4"),
            format!("tabby_bgp_messages_received_total{{{p},type=\"keepalive\"}} 0"),
            format!(
                "tabby_bgp_notifications_sent_total{{{p},code=\"6\",subcode=\"1\",name=\"Cease / Maximum Number of Prefixes Reached\"}} 1"
            ),
            format!(
                "tabby_bgp_notifications_received_total{{{p},code=\"4\",subcode=\"0\",name=\"Hold Timer Expired / Unspecific\"}} 2"
            ),
            "tabby_bgp_rib_prefixes{family=\"ipv4-unicast\"} 10".to_string(),
            "tabby_bgp_rib_attribute_sets 2".to_string(),
            "tabby_bgp_update_groups 1".to_string(),
            "tabby_bgp_update_processing_seconds_sum 0.5".to_string(),
            "tabby_bgp_update_processing_seconds_count 8".to_string(),
            // Cumulative: 5 at 40 µs, 2 at 2 ms, 1 beyond a second.
            "tabby_bgp_update_processing_seconds_bucket{le=\"0.000001\"} 0".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"0.000025\"} 0".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"0.00005\"} 5".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"0.001\"} 5".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"0.0025\"} 7".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"1.0\"} 7".to_string(),
            "tabby_bgp_update_processing_seconds_bucket{le=\"+Inf\"} 8".to_string(),
            "tabby_bgp_update_batches_total 5".to_string(),
            "tabby_bgp_update_batch_max_seconds 0.25".to_string(),
            "tabby_bgpd_uptime_seconds 7.0".to_string(),
            "tabby_bgpd_config_reloads_total{result=\"applied\"} 1".to_string(),
            "tabby_bgpd_config_reloads_total{result=\"rejected\"} 2".to_string(),
            "tabby_bgpd_config_reloads_total{result=\"partial\"} 0".to_string(),
        ] {
            assert!(got.contains(&want.as_str()), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
