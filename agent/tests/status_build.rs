//! `status::build`: the NodeNetworkStatus an agent writes, from its plan, the speaker's peers,
//! the route reconciler and its blocks. Table-like: each case names what it checks.

mod peering_fixtures;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use peering_fixtures::*;
use serde_json::json;
use tabby_agent::peering::{ObjectRef, Plan, PlanError, Problem};
use tabby_agent::routes::{RouteKey, Status as RoutesStatus};
use tabby_agent::status::{
    CONDITION_PEERS_APPLIED, CONDITION_ROUTES_PROGRAMMED, MAX_ERROR_LEN, StatusInput, build,
};
use tabby_api::v1alpha1::BGPPeer;
use tabby_api::v1alpha1::nodenetworkstatus::{
    CONDITION_READY, NodeNetworkStatus, NodeNetworkStatusSpec, NodeNetworkStatusStatus, PeerType,
    SessionState,
};
use tabby_bgp::fsm::State;
use tabby_bgp::session::MessageCounts;
use tabby_bgp::speaker::{NotificationInfo, PeerStatus};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn speaker_peer(addr: &str, state: State) -> PeerStatus {
    PeerStatus {
        address: ip(addr),
        remote_asn: 64512,
        description: None,
        state,
        since: now() - Duration::from_secs(30),
        for_: Duration::from_secs(30),
        router_id: None,
        established_count: u64::from(state == State::Established),
        prefixes_accepted: 0,
        prefixes_received: 0,
        prefixes_advertised: 0,
        messages_sent: MessageCounts::default(),
        messages_received: MessageCounts::default(),
        notifications_sent: 0,
        notifications_received: 0,
        last_notification_sent: None,
        last_notification_received: None,
        last_error: None,
        connect_failure: None,
        end_of_rib: false,
        stale_until: None,
        max_prefix_tripped: false,
        max_prefix_restart_at: None,
    }
}

fn established(addrs: &[&str]) -> Vec<PeerStatus> {
    addrs
        .iter()
        .map(|a| speaker_peer(a, State::Established))
        .collect()
}

/// A mesh of three nodes and one ToR for every node, seen from node a.
fn tor_world(tor: serde_json::Value) -> (World, Vec<BGPPeer>) {
    let peers = vec![bgppeer("tor-a", tor)];
    let w = World {
        nodes: three_nodes(),
        peers: peers.clone(),
        secrets: vec![secret("tor-pw", &[("other", b"x")])],
        ..World::default()
    };
    (w, peers)
}

struct Case<'a> {
    plan: Option<&'a Plan>,
    plan_error: Option<&'a PlanError>,
    peers: &'a [PeerStatus],
    routes: Option<&'a RoutesStatus>,
    blocks: &'a [String],
    problems: &'a [Problem],
    bgppeers: &'a [BGPPeer],
}

impl<'a> Case<'a> {
    fn new(plan: &'a Plan) -> Self {
        Case {
            plan: Some(plan),
            plan_error: None,
            peers: &[],
            routes: None,
            blocks: &[],
            problems: &[],
            bgppeers: &[],
        }
    }

    fn build(&self) -> NodeNetworkStatusStatus {
        build(&StatusInput {
            plan: self.plan,
            plan_error: self.plan_error,
            peers: self.peers,
            routes: self.routes,
            blocks: self.blocks,
            problems: self.problems,
            bgppeers: self.bgppeers,
            now: now(),
        })
    }
}

fn condition<'s>(s: &'s NodeNetworkStatusStatus, t: &str) -> (&'s str, &'s str, &'s str) {
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no condition {t}: {s:?}"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn routes_ok(v4: usize, v6: usize) -> RoutesStatus {
    RoutesStatus {
        routes_v4: v4,
        routes_v6: v6,
        ..RoutesStatus::default()
    }
}

/// What the API server would say: the Rust-side validation of the CRD (CEL rule
/// established ≤ total, unique peer IPs) passes for every built status.
fn assert_valid(s: &NodeNetworkStatusStatus) {
    let mut obj = NodeNetworkStatus::new("a", NodeNetworkStatusSpec { node: "a".into() });
    obj.status = Some(s.clone());
    obj.validate().expect("status passes the CRD's validation");
    for c in &s.conditions {
        assert!(
            ["True", "False", "Unknown"].contains(&c.status.as_str()),
            "{c:?}"
        );
        assert!(!c.reason.is_empty() && c.reason.chars().all(|ch| ch.is_ascii_alphanumeric()));
    }
}

#[test]
fn healthy_mesh_is_ready_with_counts_and_sorted_sessions() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    // Speaker order is arbitrary; the status is sorted by address.
    let mut peers = established(&["fd00::3", "10.0.0.3", "fd00::2", "10.0.0.2"]);
    peers[1].prefixes_received = 7;
    peers[1].prefixes_accepted = 5;
    peers[1].prefixes_advertised = 2;
    let routes = routes_ok(4, 2);
    let blocks = vec!["10-244-0-64-26".to_string(), "10-244-0-0-26".to_string()];
    let s = Case {
        peers: &peers,
        routes: Some(&routes),
        blocks: &blocks,
        ..Case::new(&plan)
    }
    .build();
    assert_valid(&s);
    let ips: Vec<&str> = s.sessions.iter().map(|x| x.peer_ip.as_str()).collect();
    assert_eq!(ips, ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]);
    assert!(s.sessions.iter().all(|x| x.peer_type == PeerType::NodeMesh));
    assert!(
        s.sessions
            .iter()
            .all(|x| x.state == SessionState::Established)
    );
    let c3 = &s.sessions[1];
    assert_eq!(
        (
            c3.prefixes_received,
            c3.prefixes_accepted,
            c3.prefixes_advertised
        ),
        (7, 5, 2)
    );
    assert_eq!(c3.peer_as, 64512);
    assert_eq!(
        c3.since.as_ref().map(|t| t.0.as_second()),
        Some(1_800_000_000 - 30)
    );
    assert_eq!((s.sessions_established, s.sessions_total), (4, 4));
    assert_eq!(s.routes_programmed, 6);
    assert_eq!(s.block_count, 2);
    assert_eq!(s.blocks, ["10-244-0-0-26", "10-244-0-64-26"], "sorted");
    assert_eq!(s.last_error, None);
    assert_eq!(s.last_error_time, None);
    assert_eq!(s.update_time, None, "the publisher stamps updateTime");
    assert_eq!(condition(&s, CONDITION_READY).0, "True");
    assert_eq!(
        condition(&s, CONDITION_READY).2,
        "4 session(s) Established, 6 route(s), 2 block(s)"
    );
    assert_eq!(condition(&s, CONDITION_PEERS_APPLIED).0, "True");
    assert_eq!(
        condition(&s, CONDITION_ROUTES_PROGRAMMED),
        ("True", "RoutesProgrammed", "6 route(s) in the kernel")
    );
    // Condition order is fixed.
    let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "PeersApplied", "RoutesProgrammed"]);
}

#[test]
fn same_input_same_output() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("b");
    let peers = established(&["10.0.0.1"]);
    let case = Case {
        peers: &peers,
        ..Case::new(&plan)
    };
    assert_eq!(case.build(), case.build());
    let mut reversed = peers.clone();
    reversed.reverse();
    assert_eq!(
        Case {
            peers: &reversed,
            ..Case::new(&plan)
        }
        .build(),
        case.build()
    );
}

/// A BGPPeer whose MD5 key is missing is left out of the plan; the status shows it as an Idle
/// session with the reason in words, counts it, and names it in PeersApplied and lastError.
#[test]
fn missing_md5_key_shows_as_idle_session_with_reason() {
    let (w, bgppeers) = tor_world(json!({
        "peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
        "password": {"name": "tor-pw", "key": "password"}
    }));
    let plan = w.plan("a");
    assert!(!plan.peers.contains_key(&ip("192.0.2.1")));
    let peers = established(&["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]);
    let routes = routes_ok(3, 0);
    let s = Case {
        peers: &peers,
        routes: Some(&routes),
        bgppeers: &bgppeers,
        ..Case::new(&plan)
    }
    .build();
    assert_valid(&s);
    assert_eq!((s.sessions_established, s.sessions_total), (4, 5));
    let tor = s
        .sessions
        .iter()
        .find(|x| x.peer_ip == "192.0.2.1")
        .expect("left-out peer listed");
    assert_eq!(tor.state, SessionState::Idle);
    assert_eq!(tor.peer_type, PeerType::GlobalPeer, "empty nodeSelector");
    assert_eq!(tor.peer_as, 65001);
    let err = tor.last_error.as_deref().unwrap();
    assert!(err.starts_with("not configured: BGPPeer tor-a: "), "{err}");
    assert!(
        err.contains("Secret tabby-system/tor-pw") && err.contains("has no key \"password\""),
        "{err}"
    );
    let (st, reason, msg) = condition(&s, CONDITION_PEERS_APPLIED);
    assert_eq!((st, reason), ("False", "PeerProblems"));
    assert!(
        msg.starts_with("1 problem(s): BGPPeer tor-a, peer 192.0.2.1: "),
        "{msg}"
    );
    let (st, reason, msg) = condition(&s, CONDITION_READY);
    assert_eq!((st, reason), ("False", "SessionsNotEstablished"));
    assert!(
        msg.starts_with(
            "1 of 5 session(s) not Established: 192.0.2.1 (global, BGPPeer tor-a, AS 65001) Idle: not configured"
        ),
        "{msg}"
    );
    let last = s.last_error.as_deref().unwrap();
    assert!(
        last.starts_with("BGPPeer tor-a, peer 192.0.2.1: "),
        "{last}"
    );
    assert_eq!(
        s.last_error_time.as_ref().map(|t| t.0.as_second()),
        Some(1_800_000_000)
    );
}

#[test]
fn left_out_node_peer_is_typed_node() {
    let (w, bgppeers) = tor_world(json!({
        "peerIP": "192.0.2.1", "asNumber": 65001, "node": "a",
        "password": {"name": "gone", "key": "password"}
    }));
    let plan = w.plan("a");
    let s = Case {
        bgppeers: &bgppeers,
        ..Case::new(&plan)
    }
    .build();
    let tor = s
        .sessions
        .iter()
        .find(|x| x.peer_ip == "192.0.2.1")
        .unwrap();
    assert_eq!(tor.peer_type, PeerType::NodePeer);
    assert!(
        tor.last_error
            .as_deref()
            .unwrap()
            .contains("Secret tabby-system/gone does not exist")
    );
}

/// Speaker errors in words end up on the session; the most useful error is lastError.
#[test]
fn speaker_errors_in_words_per_session() {
    let (w, bgppeers) =
        tor_world(json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}}));
    let plan = w.plan("a");
    let mut peers = established(&["10.0.0.2", "fd00::2", "fd00::3"]);
    let mut refused = speaker_peer("10.0.0.3", State::Active);
    refused.last_error = Some("connection refused".into());
    let mut hold = speaker_peer("192.0.2.1", State::Idle);
    hold.last_notification_received = Some(NotificationInfo {
        code: 4,
        subcode: 0,
        text: "Hold Timer Expired / Unspecific (4/0)".into(),
        at: now() - Duration::from_secs(5),
    });
    hold.last_notification_sent = Some(NotificationInfo {
        code: 6,
        subcode: 2,
        text: "Cease / Administrative Shutdown (6/2)".into(),
        at: now() - Duration::from_secs(50),
    });
    peers.push(refused);
    peers.push(hold);
    let s = Case {
        peers: &peers,
        bgppeers: &bgppeers,
        ..Case::new(&plan)
    }
    .build();
    assert_valid(&s);
    let by_ip = |a: &str| s.sessions.iter().find(|x| x.peer_ip == a).unwrap();
    assert_eq!(by_ip("10.0.0.3").state, SessionState::Active);
    assert_eq!(
        by_ip("10.0.0.3").last_error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(
        by_ip("192.0.2.1").last_error.as_deref(),
        Some("received NOTIFICATION Hold Timer Expired / Unspecific (4/0)"),
        "the later NOTIFICATION"
    );
    assert_eq!(by_ip("192.0.2.1").peer_type, PeerType::GlobalPeer);
    assert_eq!((s.sessions_established, s.sessions_total), (3, 5));
    // The first not-Established session by address with an error.
    assert_eq!(
        s.last_error.as_deref(),
        Some("peer 10.0.0.3: connection refused")
    );
    assert_eq!(condition(&s, CONDITION_PEERS_APPLIED).0, "True");
}

#[test]
fn planned_peer_unknown_to_speaker_is_idle() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let s = Case::new(&plan).build();
    assert_eq!((s.sessions_established, s.sessions_total), (0, 4));
    assert!(
        s.sessions
            .iter()
            .all(|x| x.state == SessionState::Idle && x.since.is_none() && x.last_error.is_none())
    );
    assert_eq!(
        condition(&s, CONDITION_ROUTES_PROGRAMMED),
        (
            "Unknown",
            "Unknown",
            "the route reconciler has not reported yet"
        )
    );
    assert_eq!(s.last_error, None, "nothing failed yet; only not up");
}

#[test]
fn no_plan_and_plan_error() {
    let s = build(&StatusInput {
        plan: None,
        plan_error: None,
        peers: &[],
        routes: None,
        blocks: &[],
        problems: &[],
        bgppeers: &[],
        now: now(),
    });
    assert_valid(&s);
    assert_eq!(
        condition(&s, CONDITION_READY),
        (
            "False",
            "NoPlan",
            "no BGP plan yet: waiting for the node's objects"
        )
    );
    assert!(s.sessions.is_empty());

    let err = PlanError::NodeNotFound("a".into());
    let s = build(&StatusInput {
        plan: None,
        plan_error: Some(&err),
        peers: &[],
        routes: None,
        blocks: &[],
        problems: &[],
        bgppeers: &[],
        now: now(),
    });
    assert_eq!(
        condition(&s, CONDITION_READY),
        (
            "False",
            "NoPlan",
            "no BGP plan: node \"a\" is not among the cluster's Nodes"
        )
    );
    assert_eq!(
        condition(&s, CONDITION_PEERS_APPLIED).1,
        "PlanFailed",
        "{s:?}"
    );
    assert_eq!(
        s.last_error.as_deref(),
        Some("node \"a\" is not among the cluster's Nodes")
    );

    // With the previous plan in force: sessions still shown, the error still reported.
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let err = PlanError::InvalidConfiguration("asNumber 0".into());
    let peers = established(&["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]);
    let s = Case {
        plan_error: Some(&err),
        peers: &peers,
        ..Case::new(&plan)
    }
    .build();
    assert_eq!(s.sessions_established, 4);
    assert_eq!(condition(&s, CONDITION_READY).0, "True");
    let (st, reason, msg) = condition(&s, CONDITION_PEERS_APPLIED);
    assert_eq!((st, reason), ("False", "PlanFailed"));
    assert!(msg.ends_with("the previous plan stays in force"), "{msg}");
}

#[test]
fn route_failures_and_conflicts() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let peers = established(&["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]);
    let key = |p: &str| RouteKey::new(p.parse().unwrap(), 254, 50);
    let failing = RoutesStatus {
        routes_v4: 2,
        failures: vec![
            (
                key("10.244.1.0/26"),
                "Network is unreachable (os error 101)".into(),
            ),
            (key("10.244.0.0/26"), "No such device".into()),
        ],
        conflicts: vec![key("10.244.2.0/26")],
        ..RoutesStatus::default()
    };
    let s = Case {
        peers: &peers,
        routes: Some(&failing),
        ..Case::new(&plan)
    }
    .build();
    assert_eq!(
        condition(&s, CONDITION_ROUTES_PROGRAMMED),
        (
            "False",
            "RoutesFailing",
            "the kernel refused 2 route(s): 10.244.0.0/26: No such device; 10.244.1.0/26: Network is unreachable (os error 101)"
        )
    );
    assert_eq!(
        condition(&s, CONDITION_READY),
        ("False", "RoutesFailing", "the kernel refused 2 route(s)")
    );
    assert_eq!(
        s.last_error.as_deref(),
        Some("route 10.244.0.0/26: No such device")
    );

    let conflicting = RoutesStatus {
        routes_v4: 2,
        conflicts: vec![key("10.244.2.0/26")],
        ..RoutesStatus::default()
    };
    let s = Case {
        peers: &peers,
        routes: Some(&conflicting),
        ..Case::new(&plan)
    }
    .build();
    let (st, reason, msg) = condition(&s, CONDITION_ROUTES_PROGRAMMED);
    assert_eq!((st, reason), ("False", "RouteConflicts"));
    assert!(msg.ends_with("holds the key: 10.244.2.0/26"), "{msg}");
    assert_eq!(
        condition(&s, CONDITION_READY).0,
        "True",
        "a foreign route overriding ours is the administrator's choice"
    );
}

#[test]
fn outside_problems_merge_with_plan_problems_sorted_and_deduplicated() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let p1 = Problem {
        object: ObjectRef::new("BGPPeer", "zeta"),
        peer: None,
        reason: "the speaker refused it: bad policy".into(),
    };
    let p2 = Problem {
        object: ObjectRef::new("BGPPeer", "alpha"),
        peer: None,
        reason: "invalid, ignored: spec.peerIP: missing".into(),
    };
    let problems = vec![p1.clone(), p2.clone(), p1.clone()];
    let s = Case {
        problems: &problems,
        ..Case::new(&plan)
    }
    .build();
    let (_, _, msg) = condition(&s, CONDITION_PEERS_APPLIED);
    assert_eq!(msg, format!("2 problem(s): {p2}; {p1}"));
    assert_eq!(s.last_error, Some(p2.to_string()));
    assert_eq!(
        s.sessions_total, 4,
        "problems without a peer add no session"
    );
}

#[test]
fn limits_are_respected() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let mut peer = speaker_peer("10.0.0.2", State::Active);
    peer.last_error = Some("x".repeat(5000));
    peer.prefixes_received = u64::MAX;
    let peers = vec![peer];
    let blocks: Vec<String> = (0..2000).map(|i| format!("block-{i:05}")).collect();
    let routes = RoutesStatus {
        routes_v4: usize::MAX,
        routes_v6: 1,
        ..RoutesStatus::default()
    };
    let problems: Vec<Problem> = (0..20)
        .map(|i| Problem {
            object: ObjectRef::new("BGPPeer", format!("p{i:02}")),
            peer: None,
            reason: "y".repeat(900),
        })
        .collect();
    let s = Case {
        peers: &peers,
        blocks: &blocks,
        routes: Some(&routes),
        problems: &problems,
        ..Case::new(&plan)
    }
    .build();
    assert_valid(&s);
    let e = s.sessions[0].last_error.as_deref().unwrap();
    assert!(e.len() <= MAX_ERROR_LEN && e.ends_with('…'), "{}", e.len());
    assert_eq!(s.sessions[0].prefixes_received, u32::MAX);
    assert_eq!(s.block_count, 2000, "the count is the truth");
    assert_eq!(s.blocks.len(), 1024, "the list is capped by the schema");
    assert_eq!(s.routes_programmed, u32::MAX);
    assert!(s.last_error.as_deref().unwrap().len() <= MAX_ERROR_LEN);
    let (_, _, msg) = condition(&s, CONDITION_PEERS_APPLIED);
    assert!(msg.len() <= 4096, "{}", msg.len());
    assert!(msg.starts_with("20 problem(s): "));
}

#[test]
fn duplicate_node_address_problem_adds_no_session() {
    // Node c claims a's address: a problem about Node c, not a session anyone asked for.
    let w = World {
        nodes: vec![
            node("a", &["10.0.0.1"], &[], &[]),
            node("b", &["10.0.0.2"], &[], &[]),
            node("c", &["10.0.0.2"], &[], &[]),
        ],
        ..World::default()
    };
    let plan = w.plan("a");
    assert!(
        plan.problems.iter().any(|p| p.peer == Some(ip("10.0.0.2"))),
        "{:?}",
        plan.problems
    );
    let s = Case::new(&plan).build();
    let ips: Vec<IpAddr> = s
        .sessions
        .iter()
        .map(|x| x.peer_ip.parse().unwrap())
        .collect();
    assert_eq!(ips, [ip("10.0.0.2")]);
    assert_valid(&s);
}

/// The agent rebuilds the status every few seconds with a new `now`; the publisher's
/// `carry_times` keeps earlier timestamps while nothing changed, so those rebuilds compare
/// equal (no write) — and a condition that flips gets the new time, the others keep theirs.
#[test]
fn rebuilds_with_a_later_clock_compare_equal_after_carry_times() {
    use tabby_agent::status::publisher::carry_times;
    let (w, bgppeers) = tor_world(json!({
        "peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
        "password": {"name": "tor-pw", "key": "password"}
    }));
    let plan = w.plan("a");
    let peers = established(&["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]);
    let routes = routes_ok(3, 0);
    let at = |secs: u64, routes: &RoutesStatus| {
        build(&StatusInput {
            plan: Some(&plan),
            plan_error: None,
            peers: &peers,
            routes: Some(routes),
            blocks: &[],
            problems: &[],
            bgppeers: &bgppeers,
            now: now() + Duration::from_secs(secs),
        })
    };
    let first = at(0, &routes);
    let later = at(30, &routes);
    assert_ne!(first, later, "the raw builds differ by their timestamps");
    assert_eq!(carry_times(Some(&first), later), first);

    // RoutesProgrammed flips to False: its time moves, Ready's and PeersApplied's stay.
    let key = RouteKey::new("10.244.9.0/26".parse().unwrap(), 254, 50);
    let failing = RoutesStatus {
        routes_v4: 3,
        failures: vec![(key, "No such device".into())],
        ..RoutesStatus::default()
    };
    let flipped = carry_times(Some(&first), at(60, &failing));
    let time_of = |s: &NodeNetworkStatusStatus, t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .0
            .as_second()
    };
    let t0 = 1_800_000_000;
    assert_eq!(time_of(&flipped, CONDITION_ROUTES_PROGRAMMED), t0 + 60);
    assert_eq!(time_of(&flipped, CONDITION_PEERS_APPLIED), t0);
    assert_eq!(
        time_of(&flipped, CONDITION_READY),
        t0,
        "Ready was already False (a peer left out)"
    );
    // The same lastError keeps its first time.
    assert_eq!(flipped.last_error, first.last_error);
    assert_eq!(
        flipped.last_error_time.as_ref().map(|t| t.0.as_second()),
        Some(t0)
    );
}
