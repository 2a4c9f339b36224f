//! `status::EventTracker`: which status changes become Events on the Node — a sequence of
//! observations, each step with the Events it must produce (and only those).

mod peering_fixtures;

use std::time::{Duration, SystemTime};

use peering_fixtures::*;
use serde_json::json;
use tabby_agent::peering::{ObjectRef, Plan, Problem};
use tabby_agent::status::{EventTracker, NodeEvent, StatusInput, build};
use tabby_api::v1alpha1::BGPPeer;
use tabby_bgp::fsm::State;
use tabby_bgp::session::MessageCounts;
use tabby_bgp::speaker::PeerStatus;

fn peer(addr: &str, state: State, err: Option<&str>) -> PeerStatus {
    PeerStatus {
        address: ip(addr),
        remote_asn: 64512,
        description: None,
        state,
        since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        for_: Duration::ZERO,
        router_id: None,
        established_count: 0,
        prefixes_accepted: 0,
        prefixes_received: 0,
        prefixes_advertised: 0,
        messages_sent: MessageCounts::default(),
        messages_received: MessageCounts::default(),
        notifications_sent: 0,
        notifications_received: 0,
        last_notification_sent: None,
        last_notification_received: None,
        last_error: err.map(str::to_string),
        connect_failure: None,
        end_of_rib: false,
        stale_until: None,
        max_prefix_tripped: false,
        max_prefix_restart_at: None,
    }
}

struct Step<'a> {
    peers: Vec<PeerStatus>,
    problems: Vec<Problem>,
    want: Vec<(&'a str, bool, &'a str)>, // (reason, warning, note contains)
}

fn run(plan: &Plan, bgppeers: &[BGPPeer], steps: Vec<Step<'_>>) {
    let mut tracker = EventTracker::new();
    for (i, step) in steps.into_iter().enumerate() {
        let input = StatusInput {
            plan: Some(plan),
            plan_error: None,
            peers: &step.peers,
            routes: None,
            blocks: &[],
            problems: &step.problems,
            bgppeers,
            now: SystemTime::now(),
        };
        let status = build(&input);
        let got: Vec<NodeEvent> = tracker.observe(&input, &status);
        assert_eq!(
            got.len(),
            step.want.len(),
            "step {i}: got {got:#?}, want {:?}",
            step.want
        );
        for (g, (reason, warning, note)) in got.iter().zip(&step.want) {
            assert_eq!(
                (g.reason, g.warning),
                (*reason, *warning),
                "step {i}: {g:?}"
            );
            assert!(
                g.note.contains(note),
                "step {i}: {:?} lacks {note:?}",
                g.note
            );
        }
    }
}

const MESH: [&str; 4] = ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"];

fn mesh(state: State) -> Vec<PeerStatus> {
    MESH.iter().map(|a| peer(a, state, None)).collect()
}

#[test]
fn mesh_comes_up_degrades_and_recovers_with_one_event_each() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plan = w.plan("a");
    let mut one_down = mesh(State::Established);
    one_down[1] = peer("10.0.0.3", State::Active, Some("connection refused"));
    run(
        &plan,
        &[],
        vec![
            // Coming up: nothing to say.
            Step {
                peers: mesh(State::Connect),
                problems: vec![],
                want: vec![],
            },
            Step {
                peers: mesh(State::Established),
                problems: vec![],
                want: vec![(
                    "MeshEstablished",
                    false,
                    "all 4 mesh session(s) Established",
                )],
            },
            Step {
                peers: mesh(State::Established),
                problems: vec![],
                want: vec![],
            },
            Step {
                peers: one_down.clone(),
                problems: vec![],
                want: vec![(
                    "MeshDegraded",
                    true,
                    "1 of 4 mesh session(s) not Established: 10.0.0.3 (mesh, node c, AS 64512) Active: connection refused",
                )],
            },
            // Still degraded: no repeat.
            Step {
                peers: one_down,
                problems: vec![],
                want: vec![],
            },
            Step {
                peers: mesh(State::Established),
                problems: vec![],
                want: vec![("MeshEstablished", false, "all 4")],
            },
        ],
    );
}

#[test]
fn router_sessions_and_problems() {
    let bgppeers = vec![
        bgppeer(
            "tor-a",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}}),
        ),
        bgppeer(
            "tor-b",
            json!({"peerIP": "192.0.2.2", "asNumber": 65002, "nodeSelector": {},
                   "password": {"name": "tor-pw", "key": "password"}}),
        ),
    ];
    let w = World {
        nodes: three_nodes(),
        peers: bgppeers.clone(),
        secrets: vec![secret("tor-pw", &[("other", b"x")])],
        ..World::default()
    };
    let plan = w.plan("a");
    let with = |tor: PeerStatus| {
        let mut v = mesh(State::Established);
        v.push(tor);
        v
    };
    let outside = Problem {
        object: ObjectRef::new("BGPPeer", "tor-a"),
        peer: None,
        reason: "the speaker refused its export policy".into(),
    };
    run(
        &plan,
        &bgppeers,
        vec![
            Step {
                peers: with(peer("192.0.2.1", State::Active, None)),
                problems: vec![],
                want: vec![
                    ("PeerNotConfigured", true, "BGPPeer tor-b, peer 192.0.2.2: "),
                    ("MeshEstablished", false, "all 4"),
                ],
            },
            Step {
                peers: with(peer("192.0.2.1", State::Established, None)),
                problems: vec![],
                want: vec![(
                    "SessionEstablished",
                    false,
                    "192.0.2.1 (global, BGPPeer tor-a, AS 65001) Established",
                )],
            },
            Step {
                peers: with(peer(
                    "192.0.2.1",
                    State::Idle,
                    Some("peer sent NOTIFICATION Hold Timer Expired / Unspecific (4/0)"),
                )),
                problems: vec![outside.clone()],
                want: vec![
                    (
                        "ConfigurationProblem",
                        true,
                        "BGPPeer tor-a: the speaker refused its export policy",
                    ),
                    (
                        "SessionDown",
                        true,
                        "left Established: 192.0.2.1 (global, BGPPeer tor-a, AS 65001) Idle: peer sent NOTIFICATION Hold Timer Expired",
                    ),
                ],
            },
            Step {
                peers: with(peer("192.0.2.1", State::Established, None)),
                problems: vec![],
                want: vec![
                    (
                        "ProblemResolved",
                        false,
                        "resolved: BGPPeer tor-a: the speaker refused",
                    ),
                    ("SessionEstablished", false, "192.0.2.1"),
                ],
            },
        ],
    );
}
