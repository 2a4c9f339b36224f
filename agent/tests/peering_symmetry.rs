//! Random clusters (seeded, reproducible): whenever two nodes both plan a session to each
//! other, the two ends agree — exactly one initiates, each end's remote AS is the other's
//! local AS, same port, same family — and with the mesh on every pair of nodes sharing a
//! family has that session on both ends. Also: a plan is a function of its inputs (order of
//! the object lists does not matter).

mod peering_fixtures;

use std::net::IpAddr;

use peering_fixtures::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn random_world(rng: &mut StdRng) -> World {
    let n = rng.random_range(2..=6);
    let mut nodes = Vec::new();
    for i in 1..=n {
        let v4 = format!("10.0.0.{i}");
        let v6 = format!("fd00::{i}");
        let addrs: Vec<&str> = match rng.random_range(0..4) {
            0 => vec![&v4],
            1 => vec![&v6],
            _ => vec![&v4, &v6],
        };
        let rack = if rng.random_bool(0.5) { "r1" } else { "r2" };
        let mut labels = vec![("rack", rack)];
        let mut ann = vec![("tabby.dev/router-id", "10.255.0.1")];
        let rr = rng.random_bool(0.3);
        if rr {
            labels.push(("rr", "true"));
            ann.push(("tabby.dev/route-reflector-cluster-id", "1.1.1.1"));
        }
        let asn = ["64512", "65001", "65002"][rng.random_range(0..3)];
        if rng.random_bool(0.3) {
            ann.push(("tabby.dev/as-number", asn));
        }
        nodes.push(node(&format!("n{i}"), &addrs, &labels, &ann));
    }
    let mut peers = Vec::new();
    if rng.random_bool(0.5) {
        // Symmetric reflector design: everyone to the reflectors, reflectors to everyone.
        peers.push(bgppeer(
            "to-rr",
            json!({"peerSelector": {"matchLabels": {"rr": "true"}}, "nodeSelector": {}}),
        ));
        peers.push(bgppeer(
            "rr-clients",
            json!({"peerSelector": {}, "nodeSelector": {"matchLabels": {"rr": "true"}},
                   "routeReflectorClient": rng.random_bool(0.5)}),
        ));
    }
    if rng.random_bool(0.5) {
        // Rack-local sessions, symmetric by construction.
        for rack in ["r1", "r2"] {
            peers.push(bgppeer(
                &format!("rack-{rack}"),
                json!({"peerSelector": {"matchLabels": {"rack": rack}},
                       "nodeSelector": {"matchLabels": {"rack": rack}}}),
            ));
        }
    }
    World {
        nodes,
        config: Some(config(json!({
            "nodeToNodeMeshEnabled": rng.random_bool(0.6),
            "listenPort": 1790
        }))),
        peers,
        ..World::default()
    }
}

#[test]
fn both_ends_of_every_node_session_agree() {
    let mut rng = StdRng::seed_from_u64(0x7ab5_1e55);
    let mut sessions = 0;
    for round in 0..300 {
        let w = random_world(&mut rng);
        let names: Vec<String> = w
            .nodes
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        let plans: Vec<_> = names.iter().map(|n| w.plan(n)).collect();
        let mesh = w.config.as_ref().unwrap().spec.node_to_node_mesh_enabled;
        for (i, x) in plans.iter().enumerate() {
            for y in plans.iter().skip(i + 1) {
                for xa in &x.local.addresses {
                    let Some(ya) = y
                        .local
                        .addresses
                        .iter()
                        .find(|a| a.is_ipv4() == xa.is_ipv4())
                    else {
                        continue;
                    };
                    let (xs, ys) = (x.peers.get(ya), y.peers.get(xa));
                    if mesh {
                        assert!(
                            xs.is_some() && ys.is_some(),
                            "round {round}: mesh {xa} <-> {ya} missing"
                        );
                    }
                    let (Some(xs), Some(ys)) = (xs, ys) else {
                        continue;
                    };
                    let (xs, ys) = (&xs.session, &ys.session);
                    let at = format!("round {round}: {xa} <-> {ya}");
                    assert_ne!(xs.passive, ys.passive, "{at}: one end initiates");
                    assert_eq!(xs.remote_asn, ys.local_asn, "{at}");
                    assert_eq!(ys.remote_asn, xs.local_asn, "{at}");
                    assert_eq!((xs.port, ys.port), (1790, 1790), "{at}");
                    assert_eq!(xs.source, Some(*xa), "{at}");
                    assert_eq!(ys.source, Some(*ya), "{at}");
                    sessions += 1;
                }
            }
        }
        // No node ever peers with itself.
        for p in &plans {
            for a in &p.local.addresses {
                assert!(!p.peers.contains_key(a), "round {round}");
            }
        }
    }
    assert!(
        sessions > 500,
        "the generator exercises enough pairs: {sessions}"
    );
}

#[test]
fn plans_do_not_depend_on_object_order() {
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..100 {
        let w = random_world(&mut rng);
        let mut shuffled = w.clone();
        shuffled.nodes.shuffle(&mut rng);
        shuffled.peers.shuffle(&mut rng);
        for n in &w.nodes {
            let name = n.metadata.name.as_deref().unwrap();
            let a = w.plan(name);
            let b = shuffled.plan(name);
            assert_eq!(a, b, "{name}");
        }
    }
}

#[test]
fn every_reflector_client_session_is_internal() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let w = random_world(&mut rng);
        for n in &w.nodes {
            let p = w.plan(n.metadata.name.as_deref().unwrap());
            for peer in p.peers.values() {
                if peer.session.route_reflector_client {
                    assert_eq!(peer.session.remote_asn, peer.session.local_asn);
                }
            }
            // Problems name a real object and the peer they dropped, if any.
            for problem in &p.problems {
                assert!(!problem.reason.is_empty());
                if let Some(IpAddr::V4(a)) = problem.peer {
                    assert!(!a.is_unspecified());
                }
            }
        }
    }
}
