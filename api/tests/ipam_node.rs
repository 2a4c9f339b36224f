//! Table tests of the node-level IPAM decisions: allocation across a node's blocks, the
//! low-water mark and cap, planning, reclaim, garbage collection and pool usage.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tabby_api::ipam::block::AllocRequest;
use tabby_api::ipam::name::block_name;
use tabby_api::ipam::node::{
    self, BlockNeed, GcTracker, NodeAllocError, Plan, Scope, pool_usage, reclaim_candidates,
};
use tabby_api::ipam::pool::Pool;
use tabby_api::ipam::{Family, IpamConfig};
use tabby_api::selector::Labels;
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec, PodReference};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn blk(cidr: &str, pool: &str, node: &str, created: i64) -> IPAMBlock {
    let net: IpNet = cidr.parse().unwrap();
    let mut b = IPAMBlock::new(
        &block_name(net),
        IPAMBlockSpec {
            cidr: cidr.into(),
            pool: pool.into(),
            node: node.into(),
        },
    );
    b.metadata.creation_timestamp = Some(Time(t(created)));
    b
}

fn req(handle: &str) -> AllocRequest {
    AllocRequest {
        handle: handle.into(),
        pod: Some(PodReference {
            namespace: "ns".into(),
            name: format!("pod-{handle}"),
            uid: format!("uid-{handle}"),
        }),
        address: None,
    }
}

fn scope(node: &str, family: Family) -> Scope<'_> {
    Scope {
        node,
        family,
        pool: None,
    }
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn allocation_prefers_the_fullest_block_and_is_idempotent() {
    let cfg = IpamConfig::default();
    let mut blocks = vec![
        blk("10.0.0.0/30", "p", "n1", 0),
        blk("10.0.0.4/30", "p", "n1", 0),
        blk("10.0.0.8/30", "p", "n2", 0),
        blk("fd00::/126", "v6", "n1", 0),
    ];
    let a = node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &none(),
        &req("a"),
        t(0),
        &cfg,
    )
    .unwrap();
    assert_eq!(
        (a.block.as_str(), a.ordinal, a.existing),
        ("10-0-0-0-30", 0, false)
    );
    // Now block 0 is fuller: it keeps being chosen until full.
    for h in ["b", "c", "d"] {
        let x = node::allocate(
            &mut blocks,
            scope("n1", Family::V4),
            &none(),
            &req(h),
            t(0),
            &cfg,
        )
        .unwrap();
        assert_eq!(x.block_index, 0, "{h}");
    }
    let e = node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &none(),
        &req("e"),
        t(0),
        &cfg,
    )
    .unwrap();
    assert_eq!((e.block_index, e.address), (1, "10.0.0.4".parse().unwrap()));
    let again = node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &none(),
        &req("a"),
        t(1),
        &cfg,
    )
    .unwrap();
    assert!(again.existing && again.address == a.address);
    // The v6 address of the same handle is separate.
    let v6 = node::allocate(
        &mut blocks,
        scope("n1", Family::V6),
        &none(),
        &req("a"),
        t(1),
        &cfg,
    )
    .unwrap();
    assert_eq!(v6.address, "fd00::".parse::<std::net::IpAddr>().unwrap());
    // n2's block is never used by n1.
    assert!(blocks[2].status.is_none());
    // Release frees every family.
    assert_eq!(node::release(&mut blocks, "n1", "a", t(2)), vec![0, 3]);
}

#[test]
fn allocation_errors_table() {
    let cfg = IpamConfig::default();
    let mut blocks = vec![
        blk("10.0.0.0/31", "p", "n1", 0),
        blk("10.0.1.0/31", "old", "n1", 0),
    ];
    let draining: BTreeSet<String> = ["old".to_string()].into();
    assert!(matches!(
        node::allocate(
            &mut blocks,
            scope("n9", Family::V4),
            &draining,
            &req("a"),
            t(0),
            &cfg
        ),
        Err(NodeAllocError::NoBlock { .. })
    ));
    assert!(matches!(
        node::allocate(
            &mut blocks,
            scope("n1", Family::V6),
            &draining,
            &req("a"),
            t(0),
            &cfg
        ),
        Err(NodeAllocError::NoBlock { .. })
    ));
    let in_pool = Scope {
        pool: Some("other"),
        ..scope("n1", Family::V4)
    };
    assert!(matches!(
        node::allocate(&mut blocks, in_pool, &draining, &req("a"), t(0), &cfg),
        Err(NodeAllocError::NoBlock { pool: Some(_), .. })
    ));
    for h in ["a", "b"] {
        node::allocate(
            &mut blocks,
            scope("n1", Family::V4),
            &draining,
            &req(h),
            t(0),
            &cfg,
        )
        .unwrap();
    }
    let full = node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &draining,
        &req("c"),
        t(0),
        &cfg,
    );
    assert!(
        matches!(full, Err(NodeAllocError::Full { blocks: 1, .. })),
        "{full:?}"
    );
    assert!(
        blocks[1].status.is_none(),
        "draining pool's block untouched"
    );
    let mut specific = req("d");
    specific.address = Some("10.0.2.1".parse().unwrap());
    assert!(matches!(
        node::allocate(
            &mut blocks,
            scope("n1", Family::V4),
            &draining,
            &specific,
            t(0),
            &cfg
        ),
        Err(NodeAllocError::NotOnNode { .. })
    ));
    specific.address = Some("10.0.0.1".parse().unwrap());
    let err = node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &draining,
        &specific,
        t(0),
        &cfg,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("already allocated to handle \"b\""),
        "{err}"
    );
}

#[test]
fn watermark_and_cap_table() {
    let cfg = IpamConfig {
        max_blocks_per_node: 2,
        ..IpamConfig::default()
    };
    let fill = |b: &mut IPAMBlock, n: usize| {
        let cidr: IpNet = b.spec.cidr.parse().unwrap();
        let st = b.status.get_or_insert_with(Default::default);
        for i in 0..n {
            tabby_api::ipam::block::allocate(cidr, st, &req(&format!("h{i}")), t(0), cfg.cooldown)
                .unwrap();
        }
    };
    // /26 blocks: 64 addresses; the mark is 16 free.
    let mut one = blk("10.0.0.0/26", "p", "n1", 0);
    // (case, allocated in the one block, expected)
    for (case, used, want) in [
        ("empty block", 0, BlockNeed::Enough { free: 64 }),
        ("exactly 16 free", 48, BlockNeed::Enough { free: 16 }),
        ("15 free", 49, BlockNeed::Below { free: 15 }),
    ] {
        one.status = None;
        fill(&mut one, used);
        let got = node::need(
            std::slice::from_ref(&one),
            "n1",
            Family::V4,
            &none(),
            64,
            t(1),
            &cfg,
        );
        assert_eq!(got, want, "{case}");
    }
    assert_eq!(
        node::need(&[], "n1", Family::V4, &none(), 64, t(1), &cfg),
        BlockNeed::Below { free: 0 },
        "a new node needs its first block"
    );
    let mut two = vec![
        blk("10.0.0.0/26", "p", "n1", 0),
        blk("10.0.0.64/26", "p", "n1", 0),
    ];
    fill(&mut two[0], 64);
    fill(&mut two[1], 60);
    assert_eq!(
        node::need(&two, "n1", Family::V4, &none(), 64, t(1), &cfg),
        BlockNeed::AtCap { free: 4, blocks: 2 }
    );
    let draining: BTreeSet<String> = ["p".to_string()].into();
    assert!(matches!(
        node::need(
            &[blk("10.0.0.0/26", "p", "n1", 0)],
            "n1",
            Family::V4,
            &draining,
            64,
            t(1),
            &cfg
        ),
        BlockNeed::Below { free: 0 }
    ));
    // Released addresses still cooling do not count as free.
    let mut cooling = blk("10.0.0.0/28", "p", "n1", 0);
    fill(&mut cooling, 16);
    for i in 0..16 {
        node::release(
            std::slice::from_mut(&mut cooling),
            "n1",
            &format!("h{i}"),
            t(10),
        );
    }
    assert_eq!(
        node::need(
            std::slice::from_ref(&cooling),
            "n1",
            Family::V4,
            &none(),
            16,
            t(20),
            &cfg
        ),
        BlockNeed::Below { free: 0 }
    );
    assert_eq!(
        node::need(
            std::slice::from_ref(&cooling),
            "n1",
            Family::V4,
            &none(),
            16,
            t(40),
            &cfg
        ),
        BlockNeed::Enough { free: 16 }
    );
}

#[test]
fn plan_table() {
    let cfg = IpamConfig::default();
    let mut pools = vec![
        Pool::new("b-pool", "10.1.0.0/25".parse().unwrap(), 26),
        Pool::new("a-pool", "10.0.0.0/26".parse().unwrap(), 26),
        Pool::new("v6", "fd00::/120".parse().unwrap(), 122),
    ];
    let labels = Labels::new();
    let s = |f| scope("n1", f);
    // The first pool by name serves first.
    let Plan::Create(p) = node::plan(&pools, &[], s(Family::V4), &labels, t(0), &cfg) else {
        panic!("expected a block");
    };
    assert_eq!(
        (p.pool.as_str(), p.name.as_str()),
        ("a-pool", "10-0-0-0-26")
    );
    let Plan::Create(p6) = node::plan(&pools, &[], s(Family::V6), &labels, t(0), &cfg) else {
        panic!("expected a v6 block");
    };
    assert_eq!(p6.pool, "v6");
    // a-pool full (its one block belongs to n2): b-pool serves.
    let blocks = vec![blk("10.0.0.0/26", "a-pool", "n2", 0)];
    let Plan::Create(p) = node::plan(&pools, &blocks, s(Family::V4), &labels, t(0), &cfg) else {
        panic!("expected a block");
    };
    assert_eq!(p.pool, "b-pool");
    // n1 has an empty block: enough.
    let mine = vec![blk("10.1.0.0/26", "b-pool", "n1", 0)];
    assert_eq!(
        node::plan(&pools, &mine, s(Family::V4), &labels, t(0), &cfg),
        Plan::Enough
    );
    // Everything taken by others: exhausted.
    let taken = vec![
        blk("10.0.0.0/26", "a-pool", "n2", 0),
        blk("10.1.0.0/26", "b-pool", "n2", 0),
        blk("10.1.0.64/26", "b-pool", "n3", 0),
    ];
    assert_eq!(
        node::plan(&pools, &taken, s(Family::V4), &labels, t(0), &cfg),
        Plan::Exhausted {
            pools: vec!["a-pool".into(), "b-pool".into()]
        }
    );
    // Requested pool only.
    let req_b = Scope {
        pool: Some("b-pool"),
        ..s(Family::V4)
    };
    let Plan::Create(p) = node::plan(&pools, &[], req_b, &labels, t(0), &cfg) else {
        panic!("expected a block");
    };
    assert_eq!(p.pool, "b-pool");
    // n1's only block is from a-pool, now disabled: it hands out nothing new, so it is no
    // capacity and b-pool gives n1 a block.
    let mut a_off = pools.clone();
    a_off[1].disabled = true;
    let mine_a = vec![blk("10.0.0.0/26", "a-pool", "n1", 0)];
    let Plan::Create(p) = node::plan(&a_off, &mine_a, s(Family::V4), &labels, t(0), &cfg) else {
        panic!("expected a block from the enabled pool");
    };
    assert_eq!(p.pool, "b-pool");
    // Disabled everywhere: no pool.
    for p in &mut pools {
        p.disabled = true;
    }
    assert_eq!(
        node::plan(&pools, &[], s(Family::V4), &labels, t(0), &cfg),
        Plan::NoPool
    );
}

#[test]
fn reclaim_table() {
    let cfg = IpamConfig {
        reclaim_after: Duration::from_secs(100),
        ..IpamConfig::default()
    };
    let mut used = blk("10.0.0.0/30", "p", "n1", 0);
    node::allocate(
        std::slice::from_mut(&mut used),
        scope("n1", Family::V4),
        &none(),
        &req("a"),
        t(0),
        &cfg,
    )
    .unwrap();
    let mut released = blk("10.0.0.4/30", "p", "n1", 0);
    node::allocate(
        std::slice::from_mut(&mut released),
        scope("n1", Family::V4),
        &none(),
        &req("b"),
        t(0),
        &cfg,
    )
    .unwrap();
    node::release(std::slice::from_mut(&mut released), "n1", "b", t(50));
    let old_empty = blk("10.0.0.8/30", "p", "n2", 0);
    let young_empty = blk("10.0.0.12/30", "p", "n2", 60);
    let blocks = vec![used, released, old_empty, young_empty];
    let names = |v: Vec<&IPAMBlock>| {
        v.iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(reclaim_candidates(&blocks, t(99), &cfg)),
        Vec::<String>::new()
    );
    assert_eq!(
        names(reclaim_candidates(&blocks, t(100), &cfg)),
        ["10-0-0-8-30"]
    );
    assert_eq!(
        names(reclaim_candidates(&blocks, t(160), &cfg)),
        ["10-0-0-8-30", "10-0-0-4-30", "10-0-0-12-30"],
        "oldest-empty first; emptiness counts from the last release"
    );
    let live: BTreeSet<String> = ["n1".to_string()].into();
    assert_eq!(
        names(node::orphaned_empty_blocks(&blocks, &live, t(1), &cfg)),
        ["10-0-0-8-30", "10-0-0-12-30"]
    );
}

#[test]
fn gc_table() {
    let cfg = IpamConfig {
        gc_grace: Duration::from_secs(300),
        ..IpamConfig::default()
    };
    let mut blocks = vec![blk("10.0.0.0/29", "p", "n1", 0)];
    for h in ["live", "dead", "late"] {
        let at = if h == "late" { t(250) } else { t(0) };
        node::allocate(
            &mut blocks,
            scope("n1", Family::V4),
            &none(),
            &req(h),
            at,
            &cfg,
        )
        .unwrap();
    }
    let mut anon = req("anon");
    anon.pod = None;
    node::allocate(
        &mut blocks,
        scope("n1", Family::V4),
        &none(),
        &anon,
        t(0),
        &cfg,
    )
    .unwrap();
    let live: BTreeSet<String> = ["uid-live".to_string()].into();
    let mut gc = GcTracker::default();
    assert!(
        gc.observe(&blocks, &live, t(100), &cfg).is_empty(),
        "first sight starts the clock"
    );
    assert!(gc.observe(&blocks, &live, t(399), &cfg).is_empty());
    let due = gc.observe(&blocks, &live, t(400), &cfg);
    assert_eq!(
        due.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>(),
        ["dead"]
    );
    let due = gc.observe(&blocks, &live, t(560), &cfg);
    assert_eq!(
        due.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>(),
        ["dead", "late"],
        "never the live pod, never an allocation without a pod"
    );
    // A pod that comes back (informer lag) resets its clock.
    let back: BTreeSet<String> = ["uid-live".into(), "uid-dead".into()].into();
    assert_eq!(gc.observe(&blocks, &back, t(600), &cfg).len(), 1);
    assert!(
        gc.observe(&blocks, &live, t(601), &cfg)
            .iter()
            .all(|c| c.handle != "dead")
    );
    // Grace 0 disables GC.
    let off = IpamConfig {
        gc_grace: Duration::ZERO,
        ..cfg.clone()
    };
    assert!(
        gc.observe(&blocks, &BTreeSet::new(), t(10_000), &off)
            .is_empty()
    );
}

#[test]
fn pool_usage_counts() {
    let pool = Pool::new("p", "10.0.0.0/24".parse().unwrap(), 26);
    let cfg = IpamConfig::default();
    let mut blocks = vec![
        blk("10.0.0.0/26", "p", "n1", 0),
        blk("10.0.0.64/26", "p", "n2", 0),
        blk("10.1.0.0/26", "other", "n2", 0),
    ];
    for h in ["a", "b", "c"] {
        node::allocate(
            &mut blocks,
            scope("n1", Family::V4),
            &none(),
            &req(h),
            t(0),
            &cfg,
        )
        .unwrap();
    }
    let u = pool_usage(&pool, &blocks);
    assert_eq!(
        (
            u.blocks_assigned,
            u.blocks_free,
            u.addresses_used,
            u.addresses_free
        ),
        (2, 2, 3, 253)
    );
    let v6 = Pool::new("v6", "fd00::/48".parse().unwrap(), 122);
    assert_eq!(pool_usage(&v6, &[]).blocks_free, u64::MAX, "saturates");
}
