//! The peering plan: who peers with whom, with which options, and what is reported when an
//! object cannot be applied. Each case names the rule it checks.

mod peering_fixtures;

use std::collections::BTreeSet;
use std::net::IpAddr;

use peering_fixtures::*;
use serde_json::json;
use tabby_agent::peering::plan::{
    BGP_PORT, CLUSTER_EXPORT, CLUSTER_IMPORT, EXTERNAL_EXPORT, EXTERNAL_IMPORT,
};
use tabby_agent::peering::{Direction, PeerKind, PlanError, PolicyClass, Source};
use tabby_api::v1alpha1::bgppeer::NextHopMode;
use tabby_api::v1alpha1::nodenetworkstatus::PeerType;

fn addrs(plan: &tabby_agent::peering::Plan) -> Vec<String> {
    plan.peers.keys().map(|a| a.to_string()).collect()
}

#[test]
fn mesh_peers_every_other_node_per_family() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let p = w.plan("b");
    assert_eq!(addrs(&p), ["10.0.0.1", "10.0.0.3", "fd00::1", "fd00::3"]);
    for peer in p.peers.values() {
        assert_eq!(peer.kind, PeerKind::Mesh);
        assert_eq!(peer.session.remote_asn, 64512);
        assert_eq!(peer.session.local_asn, 64512);
        assert_eq!(peer.session.port, 179, "listenPort default");
        assert!(peer.session.graceful_restart);
        assert_eq!(peer.session.hold_time, 90);
        assert_eq!(peer.session.keepalive, Some(30));
        assert_eq!(peer.session.import_policy, CLUSTER_IMPORT);
        assert_eq!(peer.session.export_policy, CLUSTER_EXPORT);
        // The session's source is this node's address of the peer's family.
        let src = peer.session.source.expect("mesh source");
        assert_eq!(src.is_ipv4(), peer.address.is_ipv4());
        assert!(src == ip("10.0.0.2") || src == ip("fd00::2"));
    }
    let a = &p.peers[&ip("10.0.0.1")];
    assert_eq!(
        a.source,
        Source::Mesh {
            node: "a".to_string()
        }
    );
    // b (10.0.0.2) waits for a (lower) and connects to c (higher).
    assert!(a.session.passive);
    assert!(!p.peers[&ip("10.0.0.3")].session.passive);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.local.router_id, Some("10.0.0.2".parse().unwrap()));
    assert_eq!(
        p.policies.keys().collect::<Vec<_>>(),
        [CLUSTER_EXPORT, CLUSTER_IMPORT]
    );
}

#[test]
fn exactly_one_side_of_every_node_pair_initiates() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    let plans: Vec<_> = ["a", "b", "c"].iter().map(|n| w.plan(n)).collect();
    let mut pairs = 0;
    for (i, pi) in plans.iter().enumerate() {
        for pj in plans.iter().skip(i + 1) {
            for ai in &pi.local.addresses {
                let Some(aj) = pj
                    .local
                    .addresses
                    .iter()
                    .find(|a| a.is_ipv4() == ai.is_ipv4())
                else {
                    continue;
                };
                let i_to_j = &pi.peers[aj].session;
                let j_to_i = &pj.peers[ai].session;
                assert_ne!(i_to_j.passive, j_to_i.passive, "{ai} <-> {aj}");
                // The lower address is the active one.
                assert_eq!(i_to_j.passive, ai > aj);
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 6, "3 pairs x 2 families");
}

#[test]
fn single_stack_nodes_only_peer_in_the_shared_family() {
    let w = World {
        nodes: vec![
            node("v4", &["10.0.0.1"], &[], &[]),
            node(
                "v6",
                &["fd00::2"],
                &[],
                &[("tabby.dev/router-id", "10.255.0.2")],
            ),
            node("dual", &["10.0.0.3", "fd00::3"], &[], &[]),
        ],
        ..World::default()
    };
    assert_eq!(addrs(&w.plan("v4")), ["10.0.0.3"]);
    assert_eq!(addrs(&w.plan("v6")), ["fd00::3"]);
    assert_eq!(addrs(&w.plan("dual")), ["10.0.0.1", "fd00::2"]);
    // The router id is the IPv4 address unless annotated.
    assert_eq!(
        w.plan("v6").local.router_id,
        Some("10.255.0.2".parse().unwrap())
    );
    assert!(w.plan("v6").problems.is_empty());
}

#[test]
fn ipv6_only_node_without_router_id_is_reported() {
    let w = World {
        nodes: vec![
            node("x", &["fd00::1"], &[], &[]),
            node("y", &["fd00::2"], &[], &[]),
        ],
        ..World::default()
    };
    let p = w.plan("x");
    assert_eq!(p.local.router_id, None);
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0].reason.contains("router id"),
        "{}",
        p.problems[0]
    );
}

#[test]
fn mesh_off_means_no_mesh_sessions() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        ..World::default()
    };
    assert!(w.plan("a").peers.is_empty());
}

#[test]
fn mesh_uses_listen_port_and_configured_timers() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(json!({
            "listenPort": 1790, "holdTime": 9, "keepaliveTime": 3, "asNumber": 65010
        }))),
        ..World::default()
    };
    let p = w.plan("a");
    let s = &p.peers[&ip("10.0.0.2")].session;
    assert_eq!((s.port, s.hold_time, s.keepalive), (1790, 9, Some(3)));
    assert_eq!(
        (s.remote_asn, s.local_asn, p.local.asn),
        (65010, 65010, 65010)
    );
    assert_eq!(p.local.listen_port, 1790);
}

#[test]
fn per_node_as_number_gives_ebgp_between_nodes() {
    let mut nodes = three_nodes();
    nodes[1] = node("b", &["10.0.0.2"], &[], &[("tabby.dev/as-number", "65002")]);
    let w = World {
        nodes,
        ..World::default()
    };
    let a = w.plan("a");
    assert_eq!(a.peers[&ip("10.0.0.2")].session.remote_asn, 65002);
    let b = w.plan("b");
    assert_eq!(b.local.asn, 65002);
    assert_eq!(b.peers[&ip("10.0.0.1")].session.remote_asn, 64512);
    assert_eq!(b.peers[&ip("10.0.0.1")].session.local_asn, 65002);
}

#[test]
fn global_peer_applies_to_every_node_with_external_defaults() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(
            json!({"nodeToNodeMeshEnabled": false, "listenPort": 1790}),
        )),
        peers: vec![bgppeer(
            "tor",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}}),
        )],
        ..World::default()
    };
    for n in ["a", "b", "c"] {
        let p = w.plan(n);
        assert_eq!(addrs(&p), ["192.0.2.1"]);
        let peer = &p.peers[&ip("192.0.2.1")];
        assert_eq!(peer.kind, PeerKind::Global);
        assert_eq!(
            peer.source,
            Source::BgpPeer {
                name: "tor".into(),
                node: None
            }
        );
        let s = &peer.session;
        assert_eq!(s.remote_asn, 65001);
        assert_eq!(
            s.port, BGP_PORT,
            "routers outside the cluster listen on 179"
        );
        assert!(!s.passive, "we always connect to external routers");
        assert_eq!(
            s.source.map(|a| a.is_ipv4()),
            Some(true),
            "UseNodeIP default"
        );
        assert_eq!(s.import_policy, EXTERNAL_IMPORT);
        assert_eq!(s.export_policy, EXTERNAL_EXPORT);
        assert_eq!(p.policies[EXTERNAL_EXPORT].class, PolicyClass::External);
    }
}

#[test]
fn node_specific_peers_by_name_and_by_selector() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        peers: vec![
            bgppeer(
                "only-c",
                json!({"peerIP": "192.0.2.3", "asNumber": 65003, "node": "c"}),
            ),
            bgppeer(
                "rack1",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001,
                       "nodeSelector": {"matchLabels": {"rack": "r1"}}}),
            ),
            bgppeer(
                "rack1-v6",
                json!({"peerIP": "2001:db8::1", "asNumber": 65001,
                       "nodeSelector": {"matchExpressions": [
                           {"key": "rack", "operator": "In", "values": ["r1"]}]}}),
            ),
        ],
        ..World::default()
    };
    assert_eq!(addrs(&w.plan("a")), ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(addrs(&w.plan("b")), ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(addrs(&w.plan("c")), ["192.0.2.3"]);
    let c = w.plan("c");
    assert_eq!(c.peers[&ip("192.0.2.3")].kind, PeerKind::Node);
    assert_eq!(
        PeerType::from(c.peers[&ip("192.0.2.3")].kind),
        PeerType::NodePeer,
        "NodeNetworkStatus type"
    );
    assert_eq!(PeerType::from(PeerKind::Mesh), PeerType::NodeMesh);
    assert_eq!(PeerType::from(PeerKind::Global), PeerType::GlobalPeer);
    let a = w.plan("a");
    let v6 = &a.peers[&ip("2001:db8::1")].session;
    assert_eq!(
        v6.source,
        Some(ip("fd00::1")),
        "IPv6 session sources from the IPv6 address"
    );
}

#[test]
fn every_crd_option_reaches_the_session() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        peers: vec![bgppeer(
            "tor",
            json!({
                "peerIP": "192.0.2.1", "asNumber": 65001, "node": "a",
                "password": {"name": "bgp", "key": "tor"},
                "sourceAddress": "None", "ttlSecurity": 1, "maxPrefixes": 1000,
                "nextHopMode": "Self",
                "timers": {"holdTime": 30, "keepaliveTime": 10, "connectRetryTime": 5},
                "importFilters": [{"cidr": "0.0.0.0/0", "action": "Accept"}],
                "exportFilters": [{"cidr": "10.244.0.0/16", "ge": 16, "le": 26, "action": "Accept"}]
            }),
        )],
        secrets: vec![secret("bgp", &[("tor", b"s3cret\n")])],
        ..World::default()
    };
    let p = w.plan("a");
    let s = &p.peers[&ip("192.0.2.1")].session;
    assert_eq!(s.md5_password.as_ref().map(|p| p.expose()), Some("s3cret"));
    assert!(
        !format!("{p:?}").contains("s3cret"),
        "Debug never shows passwords"
    );
    assert_eq!(s.source, None, "sourceAddress None: the kernel picks");
    assert_eq!(s.ttl_security, Some(1));
    assert_eq!(s.max_prefixes, Some(1000));
    assert_eq!(s.next_hop_mode, NextHopMode::SelfAddress);
    assert_eq!(
        (s.hold_time, s.keepalive, s.connect_retry),
        (30, Some(10), Some(5))
    );
    assert_eq!(s.import_policy, "tabby-bgppeer-tor-import");
    assert_eq!(s.export_policy, "tabby-bgppeer-tor-export");
    let imp = &p.policies["tabby-bgppeer-tor-import"];
    assert_eq!(
        (imp.class, imp.direction, imp.filters.len()),
        (PolicyClass::External, Direction::Import, 1)
    );
    assert_eq!(p.policies["tabby-bgppeer-tor-export"].filters[0].le, 26);
}

#[test]
fn timers_table() {
    // (config hold, config keepalive, peer timers, expected (hold, keepalive) or problem)
    type Want = Result<(u16, Option<u16>), &'static str>;
    let cases: &[(u16, u16, serde_json::Value, Want)] = &[
        (90, 30, json!(null), Ok((90, Some(30)))),
        // A peer hold time without keepalive: a third of it (None), not the cluster's 30.
        (90, 30, json!({"holdTime": 9}), Ok((9, None))),
        (90, 30, json!({"keepaliveTime": 20}), Ok((90, Some(20)))),
        (90, 30, json!({"holdTime": 0}), Ok((0, None))),
        (0, 0, json!(null), Ok((0, None))),
        // Cluster keepalive 30 is not below a peer hold of... it is replaced, so fine; but an
        // explicit keepalive at or above the cluster hold is refused for this peer only.
        (
            20,
            5,
            json!({"keepaliveTime": 25}),
            Err("not below the hold time"),
        ),
    ];
    for (hold, ka, timers, want) in cases {
        let mut spec = json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}});
        if !timers.is_null() {
            spec["timers"] = timers.clone();
        }
        let w = World {
            nodes: three_nodes(),
            config: Some(config(json!({
                "nodeToNodeMeshEnabled": false, "holdTime": hold, "keepaliveTime": ka
            }))),
            peers: vec![bgppeer("tor", spec)],
            ..World::default()
        };
        let p = w.plan("a");
        match want {
            Ok(w) => {
                let s = &p.peers[&ip("192.0.2.1")].session;
                assert_eq!((s.hold_time, s.keepalive), *w, "{hold}/{ka} {timers}");
            }
            Err(text) => {
                assert!(p.peers.is_empty(), "{timers}");
                assert!(p.problems[0].reason.contains(text), "{}", p.problems[0]);
            }
        }
    }
}

/// The list: missing Secret or key, source address not on the node, AS conflicting
/// with the mesh — each drops only that peer, in words.
#[test]
fn problems_drop_only_their_peer() {
    let good = bgppeer(
        "good",
        json!({"peerIP": "192.0.2.9", "asNumber": 65009, "nodeSelector": {}}),
    );
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "no-secret",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                   "password": {"name": "missing", "key": "k"}}),
            "Secret tabby-system/missing does not exist",
        ),
        (
            "no-key",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                   "password": {"name": "bgp", "key": "nope"}}),
            "has no key \"nope\" (it has: other, tor)",
        ),
        (
            "long-key",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                   "password": {"name": "bgp", "key": "other"}}),
            "81 octets",
        ),
        (
            "as-conflict",
            json!({"peerIP": "10.0.0.2", "asNumber": 65002, "nodeSelector": {}}),
            "asNumber 65002 conflicts with node b's AS 64512",
        ),
        (
            "self",
            json!({"peerIP": "10.0.0.1", "asNumber": 64512, "nodeSelector": {}}),
            "this node's own address",
        ),
        (
            "ebgp-rr-client",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                   "routeReflectorClient": true}),
            "cannot be a route-reflector client",
        ),
        (
            "invalid",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "node": "a", "nodeSelector": {}}),
            "invalid, ignored",
        ),
    ];
    for (name, spec, want) in cases {
        let w = World {
            nodes: three_nodes(),
            peers: vec![good.clone(), bgppeer(name, spec.clone())],
            secrets: vec![secret("bgp", &[("tor", b"pw"), ("other", &[b'x'; 81])])],
            ..World::default()
        };
        let p = w.plan("a");
        let mesh_and_good: BTreeSet<IpAddr> =
            ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3", "192.0.2.9"]
                .iter()
                .map(|a| ip(a))
                .collect();
        assert_eq!(
            p.peers.keys().copied().collect::<BTreeSet<_>>(),
            mesh_and_good,
            "{name}"
        );
        assert_eq!(p.problems.len(), 1, "{name}: {:?}", p.problems);
        let problem = &p.problems[0];
        assert_eq!(problem.object.kind, "BGPPeer");
        assert_eq!(problem.object.name, *name);
        assert!(problem.to_string().contains(want), "{name}: {problem}");
        if *name == "as-conflict" {
            // The mesh session to b stays as it was.
            assert_eq!(p.peers[&ip("10.0.0.2")].kind, PeerKind::Mesh);
        }
    }
}

#[test]
fn source_address_must_be_on_the_node() {
    let w = World {
        nodes: three_nodes(),
        peers: vec![
            bgppeer(
                "tor",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}}),
            ),
            bgppeer(
                "kernel-picks",
                json!({"peerIP": "192.0.2.2", "asNumber": 65001, "nodeSelector": {},
                       "sourceAddress": "None"}),
            ),
        ],
        // Only the IPv6 address is configured on the node's interfaces.
        local_addresses: Some(vec![ip("fd00::1")]),
        ..World::default()
    };
    let p = w.plan("a");
    assert_eq!(addrs(&p), ["192.0.2.2", "fd00::2", "fd00::3"]);
    let reasons: Vec<String> = p.problems.iter().map(|p| p.to_string()).collect();
    // One problem on the Node for the mesh (not one per mesh peer), one for the BGPPeer.
    assert_eq!(
        reasons,
        [
            "BGPPeer tor, peer 192.0.2.1: source address 10.0.0.1 is not configured on any \
             interface of this node",
            "Node a: source address 10.0.0.1 is not configured on any interface of this node: \
             no IPv4 mesh sessions",
        ]
    );
}

#[test]
fn explicit_peer_to_a_mesh_node_overrides_the_mesh_session() {
    let w = World {
        nodes: three_nodes(),
        peers: vec![bgppeer(
            "to-b",
            json!({"peerIP": "10.0.0.2", "asNumber": 64512, "node": "a",
                   "password": {"name": "bgp", "key": "tor"}}),
        )],
        secrets: vec![secret("bgp", &[("tor", b"pw")])],
        ..World::default()
    };
    let p = w.plan("a");
    let b = &p.peers[&ip("10.0.0.2")];
    assert_eq!(b.kind, PeerKind::Node);
    assert_eq!(
        b.also,
        [Source::Mesh {
            node: "b".to_string()
        }]
    );
    assert!(b.session.md5_password.is_some());
    // Still a cluster session: node port, lower address initiates, cluster policies.
    assert!(!b.session.passive);
    assert_eq!(b.session.import_policy, CLUSTER_IMPORT);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

/// The chart's route-reflector values: mesh off, every node peers with the reflectors, the
/// reflectors treat every node as a client (RFC 4456).
#[test]
fn route_reflectors_from_the_chart_values() {
    let rr = &[("tabby.dev/route-reflector", "true")][..];
    let cid = &[("tabby.dev/route-reflector-cluster-id", "224.0.0.1")][..];
    let w = World {
        nodes: vec![
            node("r1", &["10.0.0.1"], rr, cid),
            node("r2", &["10.0.0.2"], rr, cid),
            node("c1", &["10.0.0.3"], &[], &[]),
            node("c2", &["10.0.0.4"], &[], &[]),
        ],
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        peers: vec![
            bgppeer(
                "to-route-reflectors",
                json!({"peerSelector": {"matchLabels": {"tabby.dev/route-reflector": "true"}},
                       "nodeSelector": {}}),
            ),
            bgppeer(
                "rr-clients",
                json!({"nodeSelector": {"matchLabels": {"tabby.dev/route-reflector": "true"}},
                       "peerSelector": {}, "routeReflectorClient": true, "nextHopMode": "Keep"}),
            ),
        ],
        ..World::default()
    };
    // Clients peer with the reflectors only, not as their clients.
    let c1 = w.plan("c1");
    assert_eq!(addrs(&c1), ["10.0.0.1", "10.0.0.2"]);
    for peer in c1.peers.values() {
        assert!(!peer.session.route_reflector_client);
        assert_eq!(peer.kind, PeerKind::Global);
        assert_eq!(peer.session.import_policy, CLUSTER_IMPORT);
        assert!(
            peer.session.passive,
            "10.0.0.3 waits for the lower reflectors"
        );
    }
    // A reflector: every other node, clients except the reflector of its own cluster.
    let r1 = w.plan("r1");
    assert_eq!(r1.local.cluster_id, Some("224.0.0.1".parse().unwrap()));
    assert_eq!(addrs(&r1), ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    assert!(!r1.peers[&ip("10.0.0.2")].session.route_reflector_client);
    assert!(r1.peers[&ip("10.0.0.3")].session.route_reflector_client);
    assert!(r1.peers[&ip("10.0.0.4")].session.route_reflector_client);
    assert_eq!(
        r1.peers[&ip("10.0.0.3")].session.next_hop_mode,
        NextHopMode::Keep
    );
    // Both BGPPeers configure r2 from r1; rr-clients (by selector) beats the global one, and
    // the differing next-hop mode is reported, in words.
    assert_eq!(
        r1.peers[&ip("10.0.0.2")].source,
        Source::BgpPeer {
            name: "rr-clients".into(),
            node: Some("r2".into())
        }
    );
    assert_eq!(r1.problems.len(), 1, "{:?}", r1.problems);
    assert!(
        r1.problems[0]
            .reason
            .contains("different nextHopMode; BGPPeer rr-clients (node r2) takes precedence"),
        "{}",
        r1.problems[0]
    );
    // Client and reflector agree on who initiates.
    let c2 = w.plan("c2");
    assert!(c2.peers[&ip("10.0.0.1")].session.passive);
    assert!(!r1.peers[&ip("10.0.0.4")].session.passive);
}

#[test]
fn cluster_id_makes_node_peers_clients_without_the_flag() {
    // Calico's rule: a reflector's node peers with another (or no) cluster id are clients.
    let w = World {
        nodes: vec![
            node(
                "rr",
                &["10.0.0.1"],
                &[],
                &[("tabby.dev/route-reflector-cluster-id", "1.1.1.1")],
            ),
            node(
                "other-rr",
                &["10.0.0.2"],
                &[],
                &[("tabby.dev/route-reflector-cluster-id", "2.2.2.2")],
            ),
            node("n", &["10.0.0.3"], &[], &[]),
        ],
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        peers: vec![bgppeer(
            "all",
            json!({"peerSelector": {}, "nodeSelector": {}}),
        )],
        ..World::default()
    };
    let rr = w.plan("rr");
    assert!(rr.peers.values().all(|p| p.session.route_reflector_client));
    let n = w.plan("n");
    assert!(n.peers.values().all(|p| !p.session.route_reflector_client));
}

#[test]
fn peer_selector_as_must_match_the_node() {
    let w = World {
        nodes: three_nodes(),
        config: Some(config(json!({"nodeToNodeMeshEnabled": false}))),
        peers: vec![bgppeer(
            "rack2",
            json!({"peerSelector": {"matchLabels": {"rack": "r2"}}, "asNumber": 65099,
                   "nodeSelector": {}}),
        )],
        ..World::default()
    };
    let p = w.plan("a");
    assert!(p.peers.is_empty());
    assert_eq!(p.problems.len(), 2, "one per family: {:?}", p.problems);
    assert!(
        p.problems[0]
            .reason
            .contains("conflicts with node c's AS 64512")
    );
}

#[test]
fn identical_duplicates_merge_and_ties_go_to_the_first_name() {
    let spec = json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}});
    let w = World {
        nodes: three_nodes(),
        peers: vec![bgppeer("z-dup", spec.clone()), bgppeer("a-dup", spec)],
        ..World::default()
    };
    let p = w.plan("a");
    let peer = &p.peers[&ip("192.0.2.1")];
    assert_eq!(
        peer.source,
        Source::BgpPeer {
            name: "a-dup".into(),
            node: None
        }
    );
    assert_eq!(
        peer.also,
        [Source::BgpPeer {
            name: "z-dup".into(),
            node: None
        }]
    );
    assert!(p.problems.is_empty());
}

#[test]
fn node_annotations_table() {
    // (annotations, expected ipv4, expected problem substring)
    type Annotations<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Annotations, Option<&str>, Option<&str>)] = &[
        (&[], Some("10.0.0.2"), None),
        (
            &[("tabby.dev/ipv4-address", "10.9.0.2/24")],
            Some("10.9.0.2"),
            None,
        ),
        (
            &[("tabby.dev/ipv4-address", "10.9.0.2")],
            Some("10.9.0.2"),
            None,
        ),
        (
            &[("tabby.dev/ipv4-address", "fd00::9")],
            None,
            Some("is an IPv6 address"),
        ),
        (
            &[("tabby.dev/ipv4-address", "banana")],
            None,
            Some("is not an IP address"),
        ),
        (
            &[("tabby.dev/ipv4-address", "0.0.0.0")],
            None,
            Some("cannot be a node's BGP address"),
        ),
        (
            &[("tabby.dev/as-number", "0")],
            Some("10.0.0.2"),
            Some("reserved"),
        ),
        (
            &[("tabby.dev/as-number", "x")],
            Some("10.0.0.2"),
            Some("not an AS number"),
        ),
        (
            &[("tabby.dev/route-reflector-cluster-id", "1.2.3")],
            Some("10.0.0.2"),
            Some("dotted-quad"),
        ),
    ];
    for (ann, want_v4, want_problem) in cases {
        let w = World {
            nodes: vec![
                node("a", &["10.0.0.1"], &[], &[]),
                node("b", &["10.0.0.2"], &[], ann),
            ],
            ..World::default()
        };
        let p = w.plan("a");
        let got: Vec<String> = p.peers.keys().map(|a| a.to_string()).collect();
        let want: Vec<String> = want_v4.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{ann:?}");
        match want_problem {
            None => assert!(p.problems.is_empty(), "{ann:?}: {:?}", p.problems),
            Some(text) => {
                assert_eq!(p.problems.len(), 1, "{ann:?}: {:?}", p.problems);
                assert_eq!(p.problems[0].object.name, "b");
                assert!(p.problems[0].reason.contains(text), "{}", p.problems[0]);
                // The AS annotation falls back to the cluster AS.
                if let Some(peer) = p.peers.values().next() {
                    assert_eq!(peer.session.remote_asn, 64512);
                }
            }
        }
    }
}

#[test]
fn duplicate_node_addresses_are_reported() {
    let w = World {
        nodes: vec![
            node("a", &["10.0.0.1"], &[], &[]),
            node("b", &["10.0.0.2"], &[], &[]),
            node("b-clone", &["10.0.0.2"], &[], &[]),
        ],
        ..World::default()
    };
    let p = w.plan("a");
    assert_eq!(addrs(&p), ["10.0.0.2"]);
    assert_eq!(
        p.peers[&ip("10.0.0.2")].source,
        Source::Mesh { node: "b".into() }
    );
    assert_eq!(p.problems.len(), 1);
    assert!(p.problems[0].to_string().contains("b-clone"));
}

#[test]
fn whole_plan_errors() {
    let w = World {
        nodes: three_nodes(),
        ..World::default()
    };
    assert_eq!(
        w.try_plan("nope").unwrap_err(),
        PlanError::NodeNotFound("nope".into())
    );
    let bad = World {
        nodes: three_nodes(),
        config: Some(config(json!({"holdTime": 2}))),
        ..World::default()
    };
    let e = bad.try_plan("a").unwrap_err();
    assert!(e.to_string().contains("spec.holdTime"), "{e}");
}
