//! Plan diffs touch only what changed, and every planned session is a PeerConfig the speaker
//! accepts.

mod peering_fixtures;

use peering_fixtures::*;
use serde_json::json;
use tabby_agent::peering::{self, PeerOp, Plan, peer_config, speaker_config};
use tabby_bgp::speaker::{PeerChange, classify_change};

fn tor(name: &str, addr: &str) -> tabby_api::v1alpha1::BGPPeer {
    bgppeer(
        name,
        json!({"peerIP": addr, "asNumber": 65001, "nodeSelector": {},
               "password": {"name": "bgp", "key": name}}),
    )
}

fn world() -> World {
    World {
        nodes: three_nodes(),
        peers: vec![tor("tor1", "192.0.2.1"), tor("tor2", "192.0.2.2")],
        secrets: vec![secret(
            "bgp",
            &[("tor1", b"one"), ("tor2", b"two"), ("tor3", b"three")],
        )],
        ..World::default()
    }
}

fn diff(old: &Plan, new: &Plan) -> peering::PeersDiff {
    peering::diff(Some((&old.local, &old.peers)), (&new.local, &new.peers))
}

fn summary(d: &peering::PeersDiff) -> Vec<String> {
    d.peers
        .iter()
        .map(|op| {
            let verb = match op {
                PeerOp::Add(_) => "add",
                PeerOp::Update { .. } => "update",
                PeerOp::Retag(_) => "retag",
                PeerOp::Remove(_) => "remove",
            };
            format!("{verb} {}", op.address())
        })
        .collect()
}

#[test]
fn diff_table() {
    type Edit = fn(&mut World);
    // (what changes, edit, expected ops, speaker restart)
    let cases: &[(&str, Edit, &[&str], bool)] = &[
        ("nothing", |_| {}, &[], false),
        (
            "a peer is added: nobody else is touched",
            |w| w.peers.push(tor("tor3", "192.0.2.3")),
            &["add 192.0.2.3"],
            false,
        ),
        (
            "a peer is deleted: only its session goes",
            |w| {
                w.peers
                    .retain(|p| p.metadata.name.as_deref() != Some("tor1"))
            },
            &["remove 192.0.2.1"],
            false,
        ),
        (
            "one password changes: only that session",
            |w| w.secrets = vec![secret("bgp", &[("tor1", b"one"), ("tor2", b"new")])],
            &["update 192.0.2.2"],
            false,
        ),
        (
            "the Secret disappears: both MD5 sessions go, the mesh stays",
            |w| w.secrets.clear(),
            &["remove 192.0.2.1", "remove 192.0.2.2"],
            false,
        ),
        (
            "a node joins: one mesh session per family",
            |w| w.nodes.push(node("d", &["10.0.0.4", "fd00::4"], &[], &[])),
            &["add 10.0.0.4", "add fd00::4"],
            false,
        ),
        (
            "a node leaves",
            |w| w.nodes.retain(|n| n.metadata.name.as_deref() != Some("c")),
            &["remove 10.0.0.3", "remove fd00::3"],
            false,
        ),
        (
            "a BGPPeer is renamed with the same settings: status only",
            |w| {
                w.peers[0].metadata.name = Some("tor1-renamed".into());
                w.secrets = vec![secret(
                    "bgp",
                    &[("tor1", b"one"), ("tor2", b"two"), ("tor1-renamed", b"one")],
                )];
                w.peers[0].spec.password.as_mut().unwrap().key = "tor1-renamed".into();
            },
            &["retag 192.0.2.1"],
            false,
        ),
        (
            "the cluster AS changes: the speaker restarts with the whole plan",
            |w| w.config = Some(config(json!({"asNumber": 65100}))),
            &[
                "add 10.0.0.2",
                "add 10.0.0.3",
                "add 192.0.2.1",
                "add 192.0.2.2",
                "add fd00::2",
                "add fd00::3",
            ],
            true,
        ),
        (
            "the mesh is turned off",
            |w| w.config = Some(config(json!({"nodeToNodeMeshEnabled": false}))),
            &[
                "remove 10.0.0.2",
                "remove 10.0.0.3",
                "remove fd00::2",
                "remove fd00::3",
            ],
            false,
        ),
    ];
    for (what, edit, want, restart) in cases {
        let before = world();
        let mut after = before.clone();
        edit(&mut after);
        let d = diff(&before.plan("a"), &after.plan("a"));
        assert_eq!(summary(&d), *want, "{what}");
        assert_eq!(d.restart, *restart, "{what}");
    }
}

#[test]
fn first_plan_is_all_additions() {
    let p = world().plan("a");
    let d = peering::diff(None, (&p.local, &p.peers));
    assert!(!d.restart);
    assert_eq!(d.peers.len(), p.peers.len());
    assert!(d.peers.iter().all(|op| matches!(op, PeerOp::Add(_))));
}

#[test]
fn password_change_resets_only_that_peer_in_the_speaker() {
    let before = world().plan("a");
    let mut w = world();
    w.secrets = vec![secret("bgp", &[("tor1", b"one"), ("tor2", b"new")])];
    let after = w.plan("a");
    for (addr, old) in &before.peers {
        let new = &after.peers[addr];
        let change = classify_change(&peer_config(old), &peer_config(new));
        let want = if addr.to_string() == "192.0.2.2" {
            PeerChange::Reset
        } else {
            PeerChange::Unchanged
        };
        assert_eq!(change, want, "{addr}");
    }
}

#[test]
fn every_planned_session_is_a_valid_speaker_peer() {
    let rr = &[("tabby.dev/route-reflector", "true")][..];
    let worlds = [
        world(),
        World {
            nodes: vec![
                node(
                    "r1",
                    &["10.0.0.1", "fd00::1"],
                    rr,
                    &[("tabby.dev/route-reflector-cluster-id", "1.1.1.1")],
                ),
                node(
                    "c1",
                    &["10.0.0.2", "fd00::2"],
                    &[],
                    &[("tabby.dev/as-number", "64512")],
                ),
                node(
                    "e1",
                    &["10.0.0.3"],
                    &[],
                    &[("tabby.dev/as-number", "65003")],
                ),
            ],
            peers: vec![
                bgppeer(
                    "full",
                    json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
                           "sourceAddress": "None", "ttlSecurity": 1, "maxPrefixes": 10,
                           "nextHopMode": "Keep",
                           "timers": {"holdTime": 0}}),
                ),
                bgppeer(
                    "rr",
                    json!({"peerSelector": {"matchLabels": {"tabby.dev/route-reflector": "true"}},
                           "nodeSelector": {}}),
                ),
            ],
            ..World::default()
        },
    ];
    let mut checked = 0;
    for w in &worlds {
        for n in &w.nodes {
            let name = n.metadata.name.as_deref().unwrap();
            let p = w.plan(name);
            let speaker = speaker_config(&p.local, false).expect("router id");
            assert_eq!(speaker.asn, p.local.asn);
            for peer in p.peers.values() {
                let c = peer_config(peer);
                c.validate(&speaker)
                    .unwrap_or_else(|e| panic!("{name} -> {}: {e}", peer.address));
                assert_eq!(c.ipv4_unicast, peer.address.is_ipv4());
                assert_eq!(c.ipv6_unicast, peer.address.is_ipv6());
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");
}

#[test]
fn speaker_settings_from_the_plan() {
    let w = World {
        nodes: vec![
            node(
                "v4",
                &["10.0.0.1"],
                &[],
                &[("tabby.dev/route-reflector-cluster-id", "9.9.9.9")],
            ),
            node("dual", &["10.0.0.2", "fd00::2"], &[], &[]),
            node("v6", &["fd00::3"], &[], &[]),
        ],
        config: Some(config(
            json!({"listenPort": 1790, "gracefulRestartTime": 300}),
        )),
        ..World::default()
    };
    let v4 = speaker_config(&w.plan("v4").local, true).unwrap();
    assert_eq!(v4.listen, ["0.0.0.0:1790".parse().unwrap()]);
    assert_eq!(v4.cluster_id, Some("9.9.9.9".parse().unwrap()));
    let gr = v4.graceful_restart.unwrap();
    assert_eq!(gr.restart_time.as_secs(), 300);
    assert!(gr.restarting);
    let dual = speaker_config(&w.plan("dual").local, false).unwrap();
    assert_eq!(dual.listen, ["[::]:1790".parse().unwrap()]);
    assert_eq!(
        dual.router_id,
        "10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert!(
        speaker_config(&w.plan("v6").local, false).is_none(),
        "no router id"
    );
}
