//! Multi-process tests: the controller binary against `tabby-kube-sim` over HTTP.
//!
//! Each test starts its own emulator and controller(s) with short lease, cooldown, grace and
//! reclaim times, drives the cluster like users and agents would, and checks the IPAM
//! invariants after each step.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tabby_api::v1alpha1::{IPPool, IPPoolSpec};

const WAIT: Duration = Duration::from_secs(20);

async fn families_of(client: &kube::Client, node: &str) -> (usize, usize) {
    let bs = blocks_of(client, node).await;
    let v4 = bs.iter().filter(|b| !b.spec.cidr.contains(':')).count();
    (v4, bs.len() - v4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_get_a_block_per_family_and_leave_without_leaks() {
    let env = env().await;
    let c = &env.client;
    create_pool(c, "v4", "10.244.0.0/24", Some(28)).await;
    create_pool(c, "v6", "fd00:10::/120", Some(124)).await;
    let _ctl = controller(&env, "ctl-a", &[]);
    for i in 0..5 {
        create_node(c, &format!("node-{i}"), &[]).await;
    }
    for i in 0..5 {
        let n = format!("node-{i}");
        eventually(&format!("{n} has one block per family"), WAIT, || async {
            families_of(c, &n).await == (1, 1)
        })
        .await;
    }
    check_invariants(c).await;
    // Stable: more passes do not add blocks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(blocks(c).await.len(), 10);

    // Watermark: 13 of 16 addresses used leaves 3 free, under a quarter of a block.
    let b0 = blocks_of(c, "node-0")
        .await
        .into_iter()
        .find(|b| !b.spec.cidr.contains(':'))
        .unwrap();
    let b0name = b0.metadata.name.clone().unwrap();
    for o in 0..13 {
        agent_allocate(c, &b0name, o, None, Duration::ZERO).await;
    }
    eventually(
        "node-0 gets a second IPv4 block below the watermark",
        WAIT,
        || async { families_of(c, "node-0").await == (2, 1) },
    )
    .await;
    check_invariants(c).await;

    // node-1 leaves with a pod still present: its block waits for the pod.
    let uid = create_pod(c, "p1", "node-1", &[]).await;
    let b1 = blocks_of(c, "node-1")
        .await
        .into_iter()
        .find(|b| !b.spec.cidr.contains(':'))
        .unwrap();
    let b1name = b1.metadata.name.clone().unwrap();
    agent_allocate(c, &b1name, 0, Some(("p1", &uid)), Duration::ZERO).await;
    delete_node(c, "node-1").await;
    delete_node(c, "node-2").await;
    eventually("node-2's blocks are deleted", WAIT, || async {
        blocks_of(c, "node-2").await.is_empty()
    })
    .await;
    eventually("node-1's empty IPv6 block is deleted", WAIT, || async {
        families_of(c, "node-1").await == (1, 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        blocks_of(c, "node-1").await.len(),
        1,
        "the block holding a live pod's address stays"
    );
    delete_pod(c, "p1").await;
    eventually(
        "node-1's last block is released and deleted",
        WAIT,
        || async { blocks_of(c, "node-1").await.is_empty() },
    )
    .await;
    check_invariants(c).await;
    // The freed blocks are reused by new nodes.
    create_node(c, "node-5", &[]).await;
    eventually("node-5 gets blocks", WAIT, || async {
        families_of(c, "node-5").await == (1, 1)
    })
    .await;
    check_invariants(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_overlap_disable_and_delete_with_drain() {
    let env = env().await;
    let c = &env.client;
    create_pool(c, "a-pool", "10.1.0.0/24", Some(28)).await;
    let _ctl = controller(&env, "ctl-a", &[]);
    eventually("a-pool is Allocatable", WAIT, || async {
        allocatable(c, "a-pool").await == Some(("True".into(), "Ready".into()))
    })
    .await;
    create_pool(c, "b-pool", "10.1.0.128/25", Some(28)).await;
    eventually("b-pool overlaps a-pool", WAIT, || async {
        allocatable(c, "b-pool").await == Some(("False".into(), "CIDROverlap".into()))
    })
    .await;
    assert_eq!(
        allocatable(c, "a-pool").await,
        Some(("True".into(), "Ready".into())),
        "the older pool keeps working"
    );
    create_node(c, "n1", &[]).await;
    eventually("n1 gets a block from a-pool", WAIT, || async {
        let b = blocks_of(c, "n1").await;
        b.len() == 1 && b[0].spec.pool == "a-pool"
    })
    .await;
    let p = pool(c, "a-pool").await.unwrap();
    assert!(
        p.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tabby.dev/ipam-controller".to_string())
    );
    eventually("a-pool status counts the block", WAIT, || async {
        pool(c, "a-pool")
            .await
            .and_then(|p| p.status)
            .is_some_and(|st| {
                (st.blocks_assigned, st.blocks_free, st.addresses_free) == (1, 15, 256)
            })
    })
    .await;

    // Disable: no new blocks, the existing one stays.
    let pools: Api<IPPool> = Api::all(c.clone());
    pools
        .patch(
            "a-pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"disabled": true}})),
        )
        .await
        .unwrap();
    eventually("a-pool shows Disabled", WAIT, || async {
        allocatable(c, "a-pool").await == Some(("False".into(), "Disabled".into()))
    })
    .await;
    create_node(c, "n2", &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        blocks_of(c, "n2").await.is_empty(),
        "disabled pool gave a block"
    );
    assert_eq!(blocks_of(c, "n1").await.len(), 1, "existing block kept");
    eventually("a NoIPPool Event on n2", WAIT, || async {
        event_reasons(c, "Node", "n2")
            .await
            .contains(&"NoIPPool".to_string())
    })
    .await;

    // Delete with drain: held while the block holds an address, gone once it drains.
    let b = blocks_of(c, "n1").await.remove(0);
    let bname = b.metadata.name.clone().unwrap();
    agent_allocate(c, &bname, 3, None, Duration::ZERO).await;
    pools
        .delete("a-pool", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a-pool is Terminating", WAIT, || async {
        allocatable(c, "a-pool").await == Some(("False".into(), "Terminating".into()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        pool(c, "a-pool").await.is_some(),
        "finalizer holds the pool"
    );
    assert_eq!(blocks_of(c, "n1").await.len(), 1);
    // The agent releases the address (CNI DEL).
    let blocks_api: Api<tabby_api::v1alpha1::IPAMBlock> = Api::all(c.clone());
    let mut b = blocks_api.get(&bname).await.unwrap();
    b.status.as_mut().unwrap().allocations.clear();
    blocks_api
        .replace_status(&bname, &Default::default(), &b)
        .await
        .unwrap();
    eventually("a-pool drains and is deleted", WAIT, || async {
        pool(c, "a-pool").await.is_none()
    })
    .await;
    assert!(blocks_of(c, "n1").await.is_empty());
    // b-pool no longer overlaps anything: it serves.
    eventually("b-pool becomes Allocatable", WAIT, || async {
        allocatable(c, "b-pool").await == Some(("True".into(), "Ready".into()))
    })
    .await;
    eventually("n1 and n2 get b-pool blocks", WAIT, || async {
        blocks_of(c, "n1").await.len() == 1 && blocks_of(c, "n2").await.len() == 1
    })
    .await;
    check_invariants(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_only_addresses_of_gone_pods() {
    let env = env().await;
    let c = &env.client;
    create_pool(c, "v4", "10.2.0.0/24", Some(26)).await;
    let _ctl = controller(&env, "ctl-a", &[]);
    create_node(c, "n1", &[]).await;
    eventually("n1 gets a block", WAIT, || async {
        blocks_of(c, "n1").await.len() == 1
    })
    .await;
    let bname = blocks_of(c, "n1").await[0].metadata.name.clone().unwrap();
    let live = create_pod(c, "live", "n1", &[]).await;
    let recreated = create_pod(c, "recreated", "n1", &[]).await;
    // Allocations: a live pod (old), a pod that never existed (old), a pod recreated under the
    // same name (old uid), a gone pod allocated just now (inside the grace), and a live pod.
    agent_allocate(c, &bname, 0, Some(("live", &live)), Duration::from_secs(60)).await;
    agent_allocate(
        c,
        &bname,
        1,
        Some(("gone", "uid-gone")),
        Duration::from_secs(60),
    )
    .await;
    agent_allocate(
        c,
        &bname,
        2,
        Some(("recreated", "uid-old")),
        Duration::from_secs(60),
    )
    .await;
    agent_allocate(
        c,
        &bname,
        3,
        Some(("fresh-gone", "uid-fresh")),
        Duration::ZERO,
    )
    .await;
    agent_allocate(c, &bname, 4, None, Duration::from_secs(60)).await;
    let _ = recreated;
    let ordinals = || async {
        let b = blocks_of(c, "n1").await;
        b[0].status
            .as_ref()
            .map(|s| s.allocations.iter().map(|a| a.ordinal).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("gone pods' addresses released", WAIT, || async {
        let o = ordinals().await;
        !o.contains(&1) && !o.contains(&2)
    })
    .await;
    let o = ordinals().await;
    assert!(o.contains(&0), "the live pod keeps its address: {o:?}");
    assert!(
        o.contains(&4),
        "allocations without a pod are not collected: {o:?}"
    );
    // The fresh allocation is released only after its own grace period.
    eventually(
        "fresh allocation released after the grace",
        WAIT,
        || async { !ordinals().await.contains(&3) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let o = ordinals().await;
    assert!(o.contains(&0) && o.contains(&4), "{o:?}");
    let b = &blocks_of(c, "n1").await[0];
    let released: Vec<u32> = b
        .status
        .as_ref()
        .unwrap()
        .released
        .iter()
        .map(|r| r.ordinal)
        .collect();
    assert!(
        released.iter().all(|r| [1, 2, 3].contains(r)),
        "{released:?}"
    );
    check_invariants(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_standby_takes_over() {
    let env = env().await;
    let c = &env.client;
    create_pool(c, "v4", "10.3.0.0/22", Some(28)).await;
    let mut a = controller(&env, "ctl-a", &[]);
    eventually("ctl-a leads", WAIT, || async {
        lease_holder(c).await.as_deref() == Some("ctl-a")
    })
    .await;
    let mut b = controller(&env, "ctl-b", &[]);
    for i in 0..4 {
        create_node(c, &format!("n{i}"), &[]).await;
    }
    eventually("every node has a block", WAIT, || async {
        let bs = blocks(c).await;
        (0..4).all(|i| bs.iter().any(|b| b.spec.node == format!("n{i}")))
    })
    .await;
    assert_eq!(lease_holder(c).await.as_deref(), Some("ctl-a"));
    check_invariants(c).await;
    // Health: both ready, one leading, one standing by; metrics from the leader.
    eventually("readyz reports the roles", WAIT, || async {
        http_get(a.port, "/readyz").await == Some((200, "ready: leader\n".into()))
            && http_get(b.port, "/readyz").await == Some((200, "ready: standby\n".into()))
    })
    .await;
    assert_eq!(http_get(a.port, "/healthz").await.map(|r| r.0), Some(200));
    let (code, text) = http_get(a.port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for line in [
        "tabby_ipam_leader 1",
        "tabby_ipam_blocks{pool=\"v4\"} ",
        "tabby_ipam_addresses{pool=\"v4\",state=\"free\"} ",
        "tabby_ipam_blocks_assigned_total ",
        "tabby_ipam_reconcile_duration_seconds_count ",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    let (_, text) = http_get(b.port, "/metrics").await.unwrap();
    assert!(text.contains("tabby_ipam_leader 0"), "{text}");
    assert!(
        event_reasons(c, "Node", "n0")
            .await
            .contains(&"BlockAssigned".to_string()),
        "an Event on the Node for its block"
    );
    // Kill the leader mid-run (no lease release) while nodes keep joining.
    a.kill();
    for i in 4..8 {
        create_node(c, &format!("n{i}"), &[]).await;
    }
    eventually("ctl-b takes over", WAIT, || async {
        lease_holder(c).await.as_deref() == Some("ctl-b")
    })
    .await;
    eventually(
        "nodes that joined during the failover get blocks",
        WAIT,
        || async {
            let bs = blocks(c).await;
            (0..8).all(|i| bs.iter().filter(|b| b.spec.node == format!("n{i}")).count() == 1)
        },
    )
    .await;
    check_invariants(c).await;
    // The sim drops every watch and restarts its watch cache: the controller re-lists.
    env.sim.restart().unwrap();
    create_node(c, "n8", &[]).await;
    eventually("n8 gets a block after the watch reset", WAIT, || async {
        blocks_of(c, "n8").await.len() == 1
    })
    .await;
    check_invariants(c).await;
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_annotation_and_reclaim() {
    let env = env().await;
    let c = &env.client;
    // "a-default" serves every node; "z-gpu" only nodes labelled gpu=true, 2 blocks only.
    create_pool(c, "a-default", "10.4.0.0/24", Some(28)).await;
    create_pool_spec(
        c,
        "z-gpu",
        IPPoolSpec {
            cidr: "10.5.0.0/27".into(),
            block_size: Some(28),
            node_selector: Some(LabelSelector {
                match_labels: Some([("gpu".to_string(), "true".to_string())].into()),
                match_expressions: None,
            }),
            disabled: false,
            nat_outgoing: false,
            disable_bgp_export: false,
        },
    )
    .await;
    let _ctl = controller(&env, "ctl-a", &[]);
    for n in ["g1", "g2", "g3"] {
        create_node(c, n, &[("gpu", "true")]).await;
    }
    create_node(c, "plain", &[]).await;
    eventually("every node gets an a-default block", WAIT, || async {
        let bs = blocks(c).await;
        ["g1", "g2", "g3", "plain"].iter().all(|n| {
            bs.iter()
                .any(|b| b.spec.node == *n && b.spec.pool == "a-default")
        })
    })
    .await;
    // A pending pod asking for z-gpu gives its node a z-gpu block on demand.
    create_pod(c, "want-gpu-1", "g1", &[("tabby.dev/ippools", "z-gpu")]).await;
    create_pod(c, "want-gpu-2", "g2", &[("tabby.dev/ippools", "z-gpu")]).await;
    eventually("g1 and g2 get z-gpu blocks", WAIT, || async {
        let bs = blocks(c).await;
        ["g1", "g2"].iter().all(|n| {
            bs.iter()
                .any(|b| b.spec.node == *n && b.spec.pool == "z-gpu")
        })
    })
    .await;
    // The plain node does not match z-gpu's selector: nothing is given.
    create_pod(
        c,
        "want-gpu-plain",
        "plain",
        &[("tabby.dev/ippools", "z-gpu")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !blocks_of(c, "plain")
            .await
            .iter()
            .any(|b| b.spec.pool == "z-gpu"),
        "selector mismatch must not give a block"
    );
    // z-gpu is exhausted; g1's pod finished, its z-gpu block is empty: after the reclaim age
    // it goes to g3, which asks now.
    eventually("z-gpu shows Exhausted", WAIT, || async {
        allocatable(c, "z-gpu").await == Some(("False".into(), "Exhausted".into()))
    })
    .await;
    delete_pod(c, "want-gpu-1").await;
    create_pod(c, "want-gpu-3", "g3", &[("tabby.dev/ippools", "z-gpu")]).await;
    eventually("g3 gets a reclaimed z-gpu block", WAIT, || async {
        blocks_of(c, "g3")
            .await
            .iter()
            .any(|b| b.spec.pool == "z-gpu")
    })
    .await;
    assert!(
        blocks_of(c, "g2")
            .await
            .iter()
            .any(|b| b.spec.pool == "z-gpu"),
        "g2 still has a pending pod asking for z-gpu: its block is not taken"
    );
    assert!(
        !blocks_of(c, "g1")
            .await
            .iter()
            .any(|b| b.spec.pool == "z-gpu"),
        "g1's block went to g3"
    );
    assert!(
        event_reasons(c, "Node", "g3")
            .await
            .contains(&"BlockReclaimed".to_string())
    );
    check_invariants(c).await;
    let zgpu = blocks(c)
        .await
        .into_iter()
        .filter(|b| b.spec.pool == "z-gpu")
        .count();
    assert_eq!(zgpu, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_block_is_reported_and_left_alone() {
    let env = env().await;
    let c = &env.client;
    create_pool(c, "p", "10.6.0.0/27", Some(28)).await;
    // Passes the schema, but its name does not match its CIDR: Rust-side validation rejects it.
    let api: Api<tabby_api::v1alpha1::IPAMBlock> = Api::all(c.clone());
    let bogus = tabby_api::v1alpha1::IPAMBlock::new(
        "bogus",
        tabby_api::v1alpha1::IPAMBlockSpec {
            cidr: "10.6.0.0/28".into(),
            pool: "p".into(),
            node: "ghost".into(),
        },
    );
    api.create(&Default::default(), &bogus).await.unwrap();
    let _ctl = controller(&env, "ctl-a", &[]);
    create_node(c, "n1", &[]).await;
    create_node(c, "n2", &[]).await;
    eventually("one node gets the only other block", WAIT, || async {
        blocks(c)
            .await
            .iter()
            .any(|b| b.spec.cidr == "10.6.0.16/28")
    })
    .await;
    eventually(
        "an InvalidIPAMBlock Event names the block",
        WAIT,
        || async {
            event_reasons(c, "IPAMBlock", "bogus")
                .await
                .contains(&"InvalidIPAMBlock".to_string())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        api.get_opt("bogus").await.unwrap().is_some(),
        "an invalid block of a missing node is neither deleted nor reclaimed"
    );
    assert_eq!(
        blocks(c).await.len(),
        2,
        "nothing carved over the invalid block"
    );
    eventually("the pool shows Exhausted", WAIT, || async {
        allocatable(c, "p").await == Some(("False".into(), "Exhausted".into()))
    })
    .await;
    let waiting = if blocks_of(c, "n1").await.is_empty() {
        "n1"
    } else {
        "n2"
    };
    assert!(
        event_reasons(c, "Node", waiting)
            .await
            .contains(&"IPPoolExhausted".to_string())
    );
    check_invariants(c).await;
}

/// The `NodesSelected` condition's (status, reason, message).
async fn nodes_selected(client: &kube::Client, name: &str) -> Option<(String, String, String)> {
    pool(client, name)
        .await?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "NodesSelected")
        .map(|c| (c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_mismatch_is_visible_on_the_pool_and_the_node() {
    let env = env().await;
    let c = &env.client;
    let zone_a = LabelSelector {
        match_labels: Some([("zone".to_string(), "a".to_string())].into()),
        match_expressions: None,
    };
    create_pool_spec(
        c,
        "zone-a",
        IPPoolSpec {
            cidr: "10.9.0.0/24".into(),
            block_size: Some(28),
            node_selector: Some(zone_a),
            disabled: false,
            nat_outgoing: false,
            disable_bgp_export: false,
        },
    )
    .await;
    create_node(c, "in-zone-b", &[("zone", "b")]).await;
    let _ctl = controller(&env, "ctl-a", &[]);
    eventually("zone-a reports that it selects no node", WAIT, || async {
        nodes_selected(c, "zone-a").await.is_some_and(|(s, r, m)| {
            s == "False" && r == "NoMatchingNodes" && m.contains("none of the 1 nodes")
        })
    })
    .await;
    eventually(
        "the node no pool serves gets a NoIPPool Event",
        WAIT,
        || async {
            event_reasons(c, "Node", "in-zone-b")
                .await
                .iter()
                .any(|r| r == "NoIPPool")
        },
    )
    .await;
    assert!(blocks_of(c, "in-zone-b").await.is_empty());
    // A node in zone a: the pool now selects it, and still names the node it cannot serve.
    create_node(c, "in-zone-a", &[("zone", "a")]).await;
    eventually(
        "zone-a selects one node and names the unserved one",
        WAIT,
        || async {
            nodes_selected(c, "zone-a").await.is_some_and(|(s, r, m)| {
                s == "True"
                    && r == "NodesUnserved"
                    && m.contains("selects 1 of 2 nodes")
                    && m.contains("in-zone-b")
            })
        },
    )
    .await;
    eventually("in-zone-a gets a block", WAIT, || async {
        blocks_of(c, "in-zone-a").await.len() == 1
    })
    .await;
    // Relabelling the other node into zone a clears the complaint.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    nodes
        .patch(
            "in-zone-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": "a"}}})),
        )
        .await
        .expect("relabel");
    eventually("zone-a serves every node", WAIT, || async {
        nodes_selected(c, "zone-a")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Matching")
    })
    .await;
    check_invariants(c).await;
}
