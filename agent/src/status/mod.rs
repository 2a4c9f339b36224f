//! The node's `NodeNetworkStatus`: what its sessions, peers, blocks and kernel routes look like,
//! written for `kubectl get nodenetworkstatus` and for Events on the Node.
//!
//! - [`build`]: pure — the peering plan (or why there is none), the speaker's per-peer status,
//!   the route reconciler's status and the node's blocks → the object's `status`. Deterministic:
//!   the same input gives the same output, byte for byte, so the publisher can tell "changed".
//! - [`publisher`]: the edge that writes it — rate-limited, coalescing, compare-and-swap.
//! - [`events`]: Events (events.k8s.io/v1) on the Node, deduplicated into series.
//! - [`notable`]: which changes between two statuses deserve an Event (pure tracker).
//!
//! Owns the meaning of each status field and condition (documented in `docs/operations.md`,
//! "Agent status and metrics"). Must not touch the speaker, the kernel or the plan: it only
//! reads snapshots the agent's main loop hands it.
//!
//! Wiring in the agent's main loop (each time a snapshot changes — plan, speaker peers, route
//! status, blocks):
//!
//! ```text
//! let input = StatusInput { plan, plan_error, peers: &speaker.peers().await?, routes: Some(&routes.status().await?),
//!                           blocks: &own_block_names, problems: &apply_problems, bgppeers: &bgppeers, now: SystemTime::now() };
//! let status = status::build(&input);
//! for e in tracker.observe(&input, &status) { events.send(&e).await; }   // EventTracker, NodeEvents
//! publisher.publish(status);                                              // StatusPublisher: never blocks
//! ```
//!
//! Conditions written (every one always present, so `kubectl wait` works):
//!
//! | type | True when | reasons when not |
//! |---|---|---|
//! | `Ready` | a plan is in force, every configured session is Established, no kernel route is refused | `NoPlan`, `SessionsNotEstablished`, `RoutesFailing` |
//! | `PeersApplied` | every peer the cluster asks for is configured, and no object was rejected | `PeerProblems`, `PlanFailed` |
//! | `RoutesProgrammed` | the kernel accepted every route and no foreign route holds one of ours | `RoutesFailing`, `RouteConflicts`, `Unknown` (no reconciler status yet) |

pub mod events;
pub mod notable;
pub mod publisher;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tabby_api::v1alpha1::BGPPeer;
use tabby_api::v1alpha1::nodenetworkstatus::{
    BGPSessionStatus, CONDITION_READY, NodeNetworkStatusStatus, PeerType, SessionState,
};
use tabby_bgp::fsm::State;
use tabby_bgp::speaker::PeerStatus;

use crate::peering::{PeerKind, Plan, PlanError, Problem, Source};
use crate::routes::Status as RoutesStatus;

pub use events::{EventsConfig, NodeEvents};
pub use notable::{EventTracker, NodeEvent};
pub use publisher::{PublisherConfig, StatusPublisher};

/// Condition: every peer the cluster asks for is configured (no per-peer or per-object problem).
pub const CONDITION_PEERS_APPLIED: &str = "PeersApplied";
/// Condition: the kernel holds every route the agent wants.
pub const CONDITION_ROUTES_PROGRAMMED: &str = "RoutesProgrammed";

/// Schema limits of `NodeNetworkStatus` (see `tabby_api::v1alpha1::nodenetworkstatus`); the
/// builder truncates rather than have the API server refuse the whole write.
pub const MAX_SESSIONS: usize = 4096;
pub const MAX_BLOCKS: usize = 1024;
pub const MAX_ERROR_LEN: usize = 1024;
/// `metav1.Condition.message` is limited to 32768 bytes; our messages stay far below.
const MAX_CONDITION_MESSAGE: usize = 4096;
/// How many items a condition message lists before "and N more".
const LIST_IN_MESSAGE: usize = 5;

/// Everything [`build`] reads. All borrowed snapshots; nothing live.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// The plan in force (after a [`PlanError`] the previous plan stays in force; pass it here).
    pub plan: Option<&'a Plan>,
    /// Why the latest attempt to plan failed, if it did.
    pub plan_error: Option<&'a PlanError>,
    /// `Speaker::peers()`.
    pub peers: &'a [PeerStatus],
    /// The route reconciler's status; `None` before it answered once.
    pub routes: Option<&'a RoutesStatus>,
    /// Names of the IPAMBlocks affine to this node.
    pub blocks: &'a [String],
    /// Problems found outside planning (e.g. the speaker refused a peer's configuration), in the
    /// same form as the plan's own.
    pub problems: &'a [Problem],
    /// The BGPPeers, only to tell a left-out peer's type (global: empty nodeSelector) apart.
    pub bgppeers: &'a [BGPPeer],
    /// Timestamps for conditions and `lastErrorTime`; the publisher keeps earlier times when
    /// nothing changed (so this does not make every build differ).
    pub now: SystemTime,
}

/// The status, from the snapshots. Pure and deterministic.
pub fn build(input: &StatusInput<'_>) -> NodeNetworkStatusStatus {
    let now = time(input.now);
    let problems = all_problems(input);
    let sources = sources(input);
    let by_addr: BTreeMap<IpAddr, &PeerStatus> =
        input.peers.iter().map(|p| (p.address, p)).collect();

    let mut sessions: BTreeMap<IpAddr, BGPSessionStatus> = BTreeMap::new();
    if let Some(plan) = input.plan {
        for (addr, desired) in &plan.peers {
            let speaker = by_addr.get(addr).copied();
            sessions.insert(
                *addr,
                BGPSessionStatus {
                    peer_ip: addr.to_string(),
                    peer_as: desired.session.remote_asn,
                    peer_type: desired.kind.into(),
                    state: speaker.map_or(SessionState::Idle, |s| session_state(s.state)),
                    since: speaker.and_then(|s| system_time(s.since)),
                    prefixes_received: speaker.map_or(0, |s| saturate(s.prefixes_received)),
                    prefixes_accepted: speaker.map_or(0, |s| s.prefixes_accepted),
                    prefixes_advertised: speaker.map_or(0, |s| s.prefixes_advertised),
                    last_error: speaker.and_then(speaker_error).map(|e| truncate(&e)),
                },
            );
        }
        // Peers the cluster asks for that the plan left out: shown as Idle sessions with the
        // reason, so "Established 2 / Sessions 3" tells the truth at a glance.
        for p in &problems {
            let Some(addr) = p.peer else { continue };
            if plan.peers.contains_key(&addr) || sessions.contains_key(&addr) {
                continue;
            }
            if p.object.kind != "BGPPeer" {
                // A Node problem naming an address (a duplicate address) is not a session the
                // cluster asked for; it stays a problem only.
                continue;
            }
            let (peer_as, kind) = bgppeer_facts(input.bgppeers, &p.object.name, plan.local.asn);
            sessions.insert(
                addr,
                BGPSessionStatus {
                    peer_ip: addr.to_string(),
                    peer_as,
                    peer_type: kind.into(),
                    state: SessionState::Idle,
                    since: None,
                    prefixes_received: 0,
                    prefixes_accepted: 0,
                    prefixes_advertised: 0,
                    last_error: Some(truncate(&format!(
                        "not configured: {} {}: {}",
                        p.object.kind, p.object.name, p.reason
                    ))),
                },
            );
        }
    }

    let sessions_total = saturate(sessions.len() as u64);
    let not_established: Vec<&BGPSessionStatus> = sessions
        .values()
        .filter(|s| s.state != SessionState::Established)
        .collect();
    let sessions_established =
        sessions_total.saturating_sub(saturate(not_established.len() as u64));

    let mut blocks: Vec<String> = input
        .blocks
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let block_count = saturate(blocks.len() as u64);
    blocks.truncate(MAX_BLOCKS);

    let routes_programmed = input.routes.map_or(0, |r| {
        saturate(r.routes_v4.saturating_add(r.routes_v6) as u64)
    });

    // Conditions.
    let peers_applied = match (input.plan_error, problems.is_empty()) {
        (Some(e), _) => cond(
            CONDITION_PEERS_APPLIED,
            false,
            "PlanFailed",
            format!("{e}; the previous plan stays in force"),
            &now,
        ),
        (None, false) => cond(
            CONDITION_PEERS_APPLIED,
            false,
            "PeerProblems",
            listing(
                &format!("{} problem(s)", problems.len()),
                problems.iter().map(ToString::to_string),
            ),
            &now,
        ),
        (None, true) => cond(
            CONDITION_PEERS_APPLIED,
            true,
            "AllPeersApplied",
            format!("{sessions_total} session(s) configured"),
            &now,
        ),
    };

    let route_failures: Vec<String> = input.routes.map_or_else(Vec::new, |r| {
        let mut f: Vec<String> = r
            .failures
            .iter()
            .map(|(k, why)| format!("{}: {why}", k.prefix))
            .collect();
        f.sort();
        f
    });
    let route_conflicts: Vec<String> = input.routes.map_or_else(Vec::new, |r| {
        let mut c: Vec<String> = r.conflicts.iter().map(|k| k.prefix.to_string()).collect();
        c.sort();
        c
    });
    let routes_cond = match input.routes {
        None => cond_status(
            CONDITION_ROUTES_PROGRAMMED,
            "Unknown",
            "Unknown",
            "the route reconciler has not reported yet".into(),
            &now,
        ),
        Some(_) if !route_failures.is_empty() => cond(
            CONDITION_ROUTES_PROGRAMMED,
            false,
            "RoutesFailing",
            listing(
                &format!("the kernel refused {} route(s)", route_failures.len()),
                route_failures.iter().cloned(),
            ),
            &now,
        ),
        Some(_) if !route_conflicts.is_empty() => cond(
            CONDITION_ROUTES_PROGRAMMED,
            false,
            "RouteConflicts",
            listing(
                &format!(
                    "{} route(s) not written: a route of another protocol holds the key",
                    route_conflicts.len()
                ),
                route_conflicts.iter().cloned(),
            ),
            &now,
        ),
        Some(_) => cond(
            CONDITION_ROUTES_PROGRAMMED,
            true,
            "RoutesProgrammed",
            format!("{routes_programmed} route(s) in the kernel"),
            &now,
        ),
    };

    let ready = if input.plan.is_none() {
        cond(
            CONDITION_READY,
            false,
            "NoPlan",
            match input.plan_error {
                Some(e) => format!("no BGP plan: {e}"),
                None => "no BGP plan yet: waiting for the node's objects".into(),
            },
            &now,
        )
    } else if !not_established.is_empty() {
        cond(
            CONDITION_READY,
            false,
            "SessionsNotEstablished",
            listing(
                &format!(
                    "{} of {} session(s) not Established",
                    not_established.len(),
                    sessions_total
                ),
                not_established.iter().map(|s| session_line(s, &sources)),
            ),
            &now,
        )
    } else if !route_failures.is_empty() {
        cond(
            CONDITION_READY,
            false,
            "RoutesFailing",
            format!("the kernel refused {} route(s)", route_failures.len()),
            &now,
        )
    } else {
        cond(
            CONDITION_READY,
            true,
            "Ready",
            format!(
                "{sessions_established} session(s) Established, {routes_programmed} route(s), {block_count} block(s)"
            ),
            &now,
        )
    };

    // The single most useful error: why there is no plan, then what the cluster asked for that
    // could not be done, then why a session is down, then a refused route.
    let last_error = input
        .plan_error
        .map(ToString::to_string)
        .or_else(|| problems.first().map(ToString::to_string))
        .or_else(|| {
            not_established.iter().find_map(|s| {
                s.last_error
                    .as_ref()
                    .map(|e| format!("peer {}: {e}", s.peer_ip))
            })
        })
        .or_else(|| route_failures.first().map(|f| format!("route {f}")))
        .map(|e| truncate(&e));
    let last_error_time = last_error.as_ref().map(|_| now.clone());

    let mut sessions: Vec<BGPSessionStatus> = sessions.into_values().collect();
    sessions.truncate(MAX_SESSIONS);
    NodeNetworkStatusStatus {
        conditions: vec![ready, peers_applied, routes_cond],
        sessions_established,
        sessions_total,
        routes_programmed,
        block_count,
        sessions,
        blocks,
        last_error,
        last_error_time,
        update_time: None,
    }
}

/// Plan problems and outside problems, sorted and without duplicates.
fn all_problems(input: &StatusInput<'_>) -> Vec<Problem> {
    let mut v: Vec<Problem> = input.plan.map(|p| p.problems.clone()).unwrap_or_default();
    v.extend(input.problems.iter().cloned());
    v.sort();
    v.dedup();
    v
}

/// The AS and type of a BGPPeer, for a session the plan left out. No `asNumber` means the
/// cluster's own (iBGP).
fn bgppeer_facts(peers: &[BGPPeer], name: &str, local_asn: u32) -> (u32, PeerKind) {
    let Some(bp) = peers
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
    else {
        return (local_asn, PeerKind::Node);
    };
    let global = bp.spec.node.is_none()
        && bp.spec.node_selector.as_ref().is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        });
    (
        bp.spec.as_number.unwrap_or(local_asn),
        if global {
            PeerKind::Global
        } else {
            PeerKind::Node
        },
    )
}

/// The speaker's reason a session is (or last went) down, in words.
fn speaker_error(p: &PeerStatus) -> Option<String> {
    if let Some(e) = &p.last_error {
        return Some(e.clone());
    }
    // Both NOTIFICATIONs may exist; the later one says more about the current state.
    let sent = p.last_notification_sent.as_ref();
    let recv = p.last_notification_received.as_ref();
    match (sent, recv) {
        (Some(s), Some(r)) if s.at > r.at => Some(format!("sent NOTIFICATION {}", s.text)),
        (_, Some(r)) => Some(format!("received NOTIFICATION {}", r.text)),
        (Some(s), None) => Some(format!("sent NOTIFICATION {}", s.text)),
        (None, None) => None,
    }
}

fn session_state(s: State) -> SessionState {
    match s {
        State::Idle => SessionState::Idle,
        State::Connect => SessionState::Connect,
        State::Active => SessionState::Active,
        State::OpenSent => SessionState::OpenSent,
        State::OpenConfirm => SessionState::OpenConfirm,
        State::Established => SessionState::Established,
    }
}

fn state_name(s: SessionState) -> &'static str {
    match s {
        SessionState::Idle => "Idle",
        SessionState::Connect => "Connect",
        SessionState::Active => "Active",
        SessionState::OpenSent => "OpenSent",
        SessionState::OpenConfirm => "OpenConfirm",
        SessionState::Established => "Established",
    }
}

fn type_name(t: PeerType) -> &'static str {
    match t {
        PeerType::NodeMesh => "mesh",
        PeerType::GlobalPeer => "global",
        PeerType::NodePeer => "node",
    }
}

/// Which object each session comes from, by peer address as the status spells it: `node c`
/// (mesh), `BGPPeer tor-a`, `BGPPeer rr, node b` (a peerSelector session). The CRD has no field
/// for it, so messages and Events carry it.
pub(crate) fn sources(input: &StatusInput<'_>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(plan) = input.plan {
        for (addr, p) in &plan.peers {
            let src = match &p.source {
                Source::Mesh { node } => format!("node {node}"),
                Source::BgpPeer { name, node: None } => format!("BGPPeer {name}"),
                Source::BgpPeer {
                    name,
                    node: Some(n),
                } => format!("BGPPeer {name}, node {n}"),
            };
            m.insert(addr.to_string(), src);
        }
    }
    for p in all_problems(input) {
        if let (Some(addr), "BGPPeer") = (p.peer, p.object.kind) {
            m.entry(addr.to_string())
                .or_insert_with(|| format!("BGPPeer {}", p.object.name));
        }
    }
    m
}

fn session_line(s: &BGPSessionStatus, sources: &BTreeMap<String, String>) -> String {
    let source = sources
        .get(&s.peer_ip)
        .map(|x| format!("{x}, "))
        .unwrap_or_default();
    let mut line = format!(
        "{} ({}, {source}AS {}) {}",
        s.peer_ip,
        type_name(s.peer_type),
        s.peer_as,
        state_name(s.state)
    );
    if let Some(e) = &s.last_error {
        line.push_str(": ");
        line.push_str(e);
    }
    line
}

/// "head: a; b; c; and N more", bounded.
fn listing(head: &str, items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let mut s = format!("{head}: ");
    s.push_str(
        &items
            .iter()
            .take(LIST_IN_MESSAGE)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if items.len() > LIST_IN_MESSAGE {
        s.push_str(&format!("; and {} more", items.len() - LIST_IN_MESSAGE));
    }
    truncate_to(&s, MAX_CONDITION_MESSAGE)
}

fn cond(type_: &str, ok: bool, reason: &str, message: String, now: &Time) -> Condition {
    cond_status(
        type_,
        if ok { "True" } else { "False" },
        reason,
        message,
        now,
    )
}

fn cond_status(type_: &str, status: &str, reason: &str, message: String, now: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// A `metav1.Time` (second precision on the wire, so whole seconds here too: what we compare
/// is what the API server returns).
pub(crate) fn time(t: SystemTime) -> Time {
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn system_time(t: SystemTime) -> Option<Time> {
    (t > SystemTime::UNIX_EPOCH).then(|| time(t))
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn truncate(s: &str) -> String {
    truncate_to(s, MAX_ERROR_LEN)
}

/// At most `max` bytes, cut on a character boundary, with an ellipsis when cut.
pub(crate) fn truncate_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries_and_limits() {
        assert_eq!(truncate_to("abc", 3), "abc");
        let s = "é".repeat(600); // 1200 bytes
        let t = truncate_to(&s, MAX_ERROR_LEN);
        assert!(t.len() <= MAX_ERROR_LEN, "{}", t.len());
        assert!(t.ends_with('…'));
    }

    #[test]
    fn listing_caps_items() {
        let l = listing("3 things", (0..8).map(|i| i.to_string()));
        assert_eq!(l, "3 things: 0; 1; 2; 3; 4; and 3 more");
    }

    #[test]
    fn time_is_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(time(t).0.as_second(), 1);
        assert_eq!(time(t).0.subsec_nanosecond(), 0);
    }
}
