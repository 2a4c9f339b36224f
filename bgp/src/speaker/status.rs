//! What the speaker reports: per-peer status, RIB query answers and the metrics snapshot. Plain
//! serializable data, built by the speaker loop on request; nothing here is live.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::fsm::State;
use crate::rib::{PathAttrs, Prefix};
use crate::session::{ConnectFailure, MessageCounts};
use crate::wire::{Notification, Origin};

/// A NOTIFICATION as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationInfo {
    pub code: u8,
    pub subcode: u8,
    /// `Cease / Administrative Shutdown (6/2): "maintenance"`.
    pub text: String,
    pub at: SystemTime,
}

impl NotificationInfo {
    pub fn new(n: &Notification, at: SystemTime) -> NotificationInfo {
        let (code, sub) = n.names();
        let mut text = format!("{code} / {sub} ({}/{})", n.code, n.subcode);
        if let Some(m) = n.shutdown_message() {
            text.push_str(&format!(": \"{m}\""));
        }
        NotificationInfo {
            code: n.code,
            subcode: n.subcode,
            text,
            at,
        }
    }
}

/// One peer's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_asn: u32,
    pub description: Option<String>,
    pub state: State,
    /// When the session entered `state`.
    pub since: SystemTime,
    /// Time in `state` (the uptime when Established).
    pub for_: Duration,
    /// The peer's BGP identifier, once an OPEN was seen.
    pub router_id: Option<Ipv4Addr>,
    /// Times the session reached Established.
    pub established_count: u64,
    /// Routes the peer sent that are held (post-policy Adj-RIB-In).
    pub prefixes_accepted: u32,
    /// NLRI announced by the peer since the session came up, accepted or not.
    pub prefixes_received: u64,
    /// Routes currently exported to the peer (computed from the Loc-RIB).
    pub prefixes_advertised: u32,
    pub messages_sent: MessageCounts,
    pub messages_received: MessageCounts,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub last_notification_sent: Option<NotificationInfo>,
    pub last_notification_received: Option<NotificationInfo>,
    /// Why the session last went down, in words.
    pub last_error: Option<String>,
    /// The cause behind `last_error` when that is a failed outgoing connect (refused,
    /// unreachable, no answer): the same fact as a type, for callers that act on it.
    pub connect_failure: Option<ConnectFailure>,
    /// Established, and End-of-RIB (RFC 4724 §2) has arrived for every negotiated family since
    /// the session came up: the peer's initial table is complete.
    pub end_of_rib: bool,
    /// The peer's routes are kept as stale (RFC 4724 helper) until this time.
    pub stale_until: Option<SystemTime>,
    /// Max-prefix tripped: the session starts again at this time (`None` with `max_prefix_tripped`:
    /// only a reconfiguration restarts it).
    pub max_prefix_restart_at: Option<SystemTime>,
    pub max_prefix_tripped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le_bounds() {
        let mut h = DurationHistogram::default();
        let cases = [
            // (value, bucket upper bound it must land in)
            (Duration::ZERO, 1e-6),
            (Duration::from_nanos(1000), 1e-6),
            (Duration::from_nanos(1001), 2.5e-6),
            (Duration::from_micros(30), 5e-5),
            (Duration::from_millis(1), 1e-3),
            (Duration::from_millis(300), 0.5),
            (Duration::from_secs(1), 1.0),
            (Duration::from_millis(1001), f64::INFINITY),
            (Duration::from_secs(3600), f64::INFINITY),
        ];
        for (v, bound) in cases {
            let mut one = DurationHistogram::default();
            one.observe(v, 3);
            let hit: Vec<(f64, u64)> = one.buckets().into_iter().filter(|b| b.1 > 0).collect();
            assert_eq!(hit, [(bound, 3)], "{v:?}");
            h.observe(v, 1);
        }
        assert_eq!(h.count(), cases.len() as u64);
        let b = h.buckets();
        assert_eq!(b.len(), 20);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
        assert_eq!(b.last(), Some(&(f64::INFINITY, 2)));
    }
}

/// One path of a prefix, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathInfo {
    /// The peer it came from; `None`: originated here.
    pub from: Option<IpAddr>,
    pub path_id: u32,
    pub best: bool,
    /// Part of the multipath (ECMP) set.
    pub multipath: bool,
    /// Kept while its peer restarts (RFC 4724).
    pub stale: bool,
    pub attrs: PathAttrsView,
}

/// Path attributes in text form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathAttrsView {
    pub next_hop: IpAddr,
    pub origin: String,
    pub as_path: String,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

impl From<&PathAttrs> for PathAttrsView {
    fn from(a: &PathAttrs) -> PathAttrsView {
        PathAttrsView {
            next_hop: a.next_hop.addr(),
            origin: match a.origin {
                Origin::Igp => "igp".into(),
                Origin::Egp => "egp".into(),
                Origin::Incomplete => "incomplete".into(),
            },
            as_path: as_path_text(a),
            med: a.med,
            local_pref: a.local_pref,
            communities: a.communities.iter().map(ToString::to_string).collect(),
            large_communities: a
                .large_communities
                .iter()
                .map(ToString::to_string)
                .collect(),
            originator_id: a.originator_id,
            cluster_list: a.cluster_list.clone(),
        }
    }
}

fn as_path_text(a: &PathAttrs) -> String {
    use crate::wire::AsSegmentType;
    let mut s = String::new();
    for seg in &a.as_path.segments {
        if !s.is_empty() {
            s.push(' ');
        }
        let inner = seg
            .asns
            .iter()
            .map(|x| x.0.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        match seg.kind {
            AsSegmentType::Sequence => s.push_str(&inner),
            AsSegmentType::Set => s.push_str(&format!("{{{inner}}}")),
            _ => s.push_str(&format!("({inner})")),
        }
    }
    s
}

/// A Loc-RIB entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteInfo {
    pub prefix: Prefix,
    /// Best first, then the rest of the ECMP set, then the others.
    pub paths: Vec<PathInfo>,
}

/// A route in a peer's Adj-RIB-In or Adj-RIB-Out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjRoute {
    pub prefix: Prefix,
    pub path_id: u32,
    pub attrs: PathAttrsView,
}

/// A best-path change for the forwarding table: every next hop of the ECMP set, sorted;
/// empty when the prefix is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteUpdate {
    pub prefix: Prefix,
    pub next_hops: Vec<IpAddr>,
}

/// Counters the daemon exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Sessions per FSM state (every state listed, zeros included).
    pub sessions_by_state: Vec<(State, u32)>,
    pub peers: Vec<PeerMetrics>,
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
    /// Distinct interned attribute sets in the Loc-RIB.
    pub attr_sets: usize,
    pub update_groups: usize,
    /// Batches of session events the loop processed (each: RIB update, export, send).
    pub update_batches: u64,
    /// UPDATE messages processed and their total processing time in the loop.
    pub updates_processed: u64,
    pub update_processing: Duration,
    /// The longest single batch.
    pub update_processing_max: Duration,
    /// Per-UPDATE processing time: each batch counts its UPDATEs at the batch's time per
    /// UPDATE.
    pub update_processing_histogram: DurationHistogram,
}

/// Upper bounds (seconds) of [`DurationHistogram`]: 1–2.5–5 steps from 1 µs to 1 s; one
/// UPDATE takes microseconds when it changes one route and up to a second under a full
/// table from many peers, so the buckets cover both ends.
pub const DURATION_BUCKETS: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

/// A fixed-bucket histogram of durations (bounds [`DURATION_BUCKETS`], plus +Inf). Counts are
/// per bucket, not cumulative; an observation lands in the first bucket whose bound is at
/// least its value (Prometheus `le`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurationHistogram {
    counts: [u64; DURATION_BUCKETS.len() + 1],
}

impl DurationHistogram {
    /// Counts `weight` observations of `value`.
    pub fn observe(&mut self, value: Duration, weight: u64) {
        let v = value.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] = self.counts[i].saturating_add(weight);
    }

    /// (upper bound, observations in this bucket alone), ascending, ending with +Inf: the
    /// shape `prometheus-client` encodes (it accumulates).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Per-peer counters for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerMetrics {
    pub address: IpAddr,
    pub state: State,
    pub prefixes_received: u64,
    pub prefixes_accepted: u32,
    pub prefixes_advertised: u32,
    pub messages_sent: MessageCounts,
    pub messages_received: MessageCounts,
    /// NOTIFICATIONs by (code, subcode), sent and received.
    pub notifications_sent: Vec<((u8, u8), u64)>,
    pub notifications_received: Vec<((u8, u8), u64)>,
}
