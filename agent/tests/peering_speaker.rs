//! Plans applied to real speakers over the speaker's in-process network: three nodes mesh,
//! learn each other's blocks, a ToR learns only its node's exportable block, and removing the
//! ToR's BGPPeer leaves the mesh sessions untouched. Real time, every wait bounded.

mod peering_fixtures;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use peering_fixtures::*;
use serde_json::json;
use tabby_agent::peering::{Applied, Desired, apply, speaker_config};
use tabby_api::v1alpha1::{IPAMBlock, IPPool};
use tabby_bgp::fsm::State;
use tabby_bgp::policy::{PolicyConfig, Verdict};
use tabby_bgp::rib::Prefix;
use tabby_bgp::speaker::{MemoryNetwork, PeerConfig, Speaker, SpeakerConfig};

const NODES: [(&str, &str); 3] = [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")];
const TOR: &str = "192.0.2.1";

fn p(s: &str) -> Prefix {
    Prefix::V4(s.parse().expect("v4 prefix"))
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    world: World,
    pools: Vec<IPPool>,
    blocks: Vec<IPAMBlock>,
}

impl Cluster {
    fn desired(&self, node: &str) -> Desired {
        let plan = self.world.plan(node);
        assert!(plan.problems.is_empty(), "{node}: {:?}", plan.problems);
        let (d, problems) =
            Desired::from_plan(&plan, &self.pools, &self.blocks, self.world.config.as_ref());
        assert!(problems.is_empty(), "{node}: {problems:?}");
        d
    }
}

async fn all_established(s: &Speaker) -> Option<Vec<(IpAddr, u64)>> {
    let peers = s.peers().await.expect("speaker runs");
    peers
        .iter()
        .all(|p| p.state == State::Established)
        .then(|| {
            peers
                .iter()
                .map(|p| (p.address, p.established_count))
                .collect()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_and_tor_from_the_plan() {
    let mut cluster = Cluster {
        world: World {
            nodes: NODES.iter().map(|(n, a)| node(n, &[a], &[], &[])).collect(),
            peers: vec![bgppeer(
                "tor",
                json!({"peerIP": TOR, "asNumber": 65001, "node": "a",
                       "timers": {"connectRetryTime": 1}}),
            )],
            ..World::default()
        },
        pools: vec![
            pool("main", "10.244.0.0/16", false),
            pool("internal", "10.250.0.0/16", true),
        ],
        blocks: vec![
            block("10.244.0.0/26", "main", "a"),
            block("10.250.0.0/26", "internal", "a"),
            block("10.244.0.64/26", "main", "b"),
            block("10.244.0.128/26", "main", "c"),
        ],
    };
    let net = MemoryNetwork::new();

    // The ToR: a plain speaker that takes and gives everything, waiting for node a.
    let tor = Speaker::start_with_transport(
        SpeakerConfig::new(65001, TOR.parse().unwrap()),
        net.transport(ip(TOR)),
    )
    .unwrap();
    tor.set_policy(PolicyConfig {
        name: "all".into(),
        rules: Vec::new(),
        default: Verdict::Accept,
    })
    .await
    .unwrap();
    let mut to_a = PeerConfig::new(ip("10.0.0.1"), 64512);
    to_a.passive = true;
    to_a.import_policy = Some("all".into());
    to_a.export_policy = Some("all".into());
    tor.add_peer(to_a).await.unwrap();

    // Nodes, highest address first: the passive ends are listening before the active ends
    // connect (a refused connection would wait for the connect-retry timer).
    let mut speakers = Vec::new();
    for (name, _) in NODES.iter().rev() {
        let d = cluster.desired(name);
        let cfg = speaker_config(&d.local, false).expect("router id");
        let s = Speaker::start_with_transport(cfg, net.transport(ip(node_addr(name)))).unwrap();
        let mut applied = Applied::default();
        let report = apply(&s, &mut applied, &d).await;
        assert!(report.errors.is_empty(), "{name}: {:?}", report.errors);
        assert!(!report.restart_needed);
        speakers.push((name.to_string(), s, applied));
    }
    speakers.reverse(); // a, b, c

    let mut counts = Vec::new();
    for (name, s, _) in &speakers {
        let c = eventually(&format!("{name}'s sessions up"), || all_established(s)).await;
        counts.push(c);
    }
    assert_eq!(counts[0].len(), 3, "a: b, c and the ToR");
    assert_eq!(counts[1].len(), 2);
    assert_eq!(counts[2].len(), 2);

    // Every node learns every other node's blocks, the internal pool's too.
    for (name, s, _) in &speakers {
        for (owner, blk) in [
            ("a", "10.244.0.0/26"),
            ("a", "10.250.0.0/26"),
            ("b", "10.244.0.64/26"),
            ("c", "10.244.0.128/26"),
        ] {
            if owner == name {
                continue;
            }
            eventually(&format!("{name} learns {blk}"), || async {
                s.rib_lookup(p(blk)).await.unwrap()
            })
            .await;
        }
    }

    // The ToR gets a's exportable block only: not the internal pool's, not b's or c's.
    let from_a = eventually("the ToR learns a's block", || async {
        let r = tor.adj_rib_in(ip("10.0.0.1")).await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    // Give late UPDATEs a moment, then look again: nothing else may arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_a: BTreeSet<Prefix> = tor
        .adj_rib_in(ip("10.0.0.1"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.prefix)
        .chain(from_a.into_iter().map(|r| r.prefix))
        .collect();
    assert_eq!(from_a, BTreeSet::from([p("10.244.0.0/26")]));

    // Deleting the ToR's BGPPeer removes that session only.
    cluster.world.peers.clear();
    let d = cluster.desired("a");
    let (_, s_a, applied_a) = &mut speakers[0];
    let report = apply(s_a, applied_a, &d).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let peers = s_a.peers().await.unwrap();
    assert_eq!(peers.len(), 2);
    for ps in &peers {
        assert_eq!(ps.state, State::Established, "{}", ps.address);
        assert_eq!(ps.established_count, 1, "{} was not reset", ps.address);
    }

    // b gets a new block: only an origination, and a learns it.
    cluster.blocks.push(block("10.244.0.192/26", "main", "b"));
    let d = cluster.desired("b");
    let (_, s_b, applied_b) = &mut speakers[1];
    let report = apply(s_b, applied_b, &d).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.calls, 1, "one originate, nothing else");
    let s_a = speakers[0].1.clone();
    eventually("a learns b's new block", || async {
        s_a.rib_lookup(p("10.244.0.192/26")).await.unwrap()
    })
    .await;

    // A second pass with nothing new makes no calls.
    let d = cluster.desired("c");
    let (_, s_c, applied_c) = &mut speakers[2];
    assert_eq!(apply(s_c, applied_c, &d).await.calls, 0);
}

fn node_addr(name: &str) -> &'static str {
    NODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .expect("known node")
}
