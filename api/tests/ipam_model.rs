//! Property test: random sequences of pool create/disable/delete, node add/remove, allocate,
//! release and the passing of time, with the controller's decisions (plan, reclaim, GC, drain,
//! orphan cleanup) run after every step — all through the pure IPAM core. After each step:
//! no address twice, no overlapping blocks, every allocation inside a block of the allocating
//! node, a live pod's address never lost, counts consistent. At the end every pod and node
//! goes away and the cluster must drain to zero blocks: no leaks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use tabby_api::ipam::block::{self, AllocRequest};
use tabby_api::ipam::name::{address_of, block_capacity};
use tabby_api::ipam::node::{self, GcTracker, NodeAllocError, Plan, Scope};
use tabby_api::ipam::pool::{Pool, nets_overlap};
use tabby_api::ipam::{Family, IpamConfig};
use tabby_api::selector::{Labels, Selector};
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec, PodReference};

/// (name, cidr, block prefix, only nodes in zone a). Some overlap on purpose.
const POOLS: &[(&str, &str, u8, bool)] = &[
    ("pool-a", "10.0.0.0/24", 27, false),
    ("pool-b", "10.0.0.0/25", 28, false), // overlaps pool-a
    ("pool-c", "10.0.1.0/26", 28, true),
    ("pool-d", "10.0.2.0/27", 29, false),
    ("v6-a", "fd00::/120", 124, false),
    ("v6-b", "fd00::/121", 125, false), // overlaps v6-a
    ("v6-c", "fd00:1::/122", 124, true),
];

#[derive(Clone, Debug)]
enum Op {
    CreatePool(usize),
    TogglePool(usize),
    DeletePool(usize),
    AddNode(u8, bool),
    RemoveNode(u8),
    Alloc(u8, u16, bool),
    Release(u16),
    Vanish(u16),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..POOLS.len()).prop_map(Op::CreatePool),
        1 => (0..POOLS.len()).prop_map(Op::TogglePool),
        1 => (0..POOLS.len()).prop_map(Op::DeletePool),
        2 => (0u8..6, any::<bool>()).prop_map(|(n, z)| Op::AddNode(n, z)),
        1 => (0u8..6).prop_map(Op::RemoveNode),
        8 => (0u8..6, 0u16..60, any::<bool>()).prop_map(|(n, p, v6)| Op::Alloc(n, p, v6)),
        3 => (0u16..60).prop_map(Op::Release),
        1 => (0u16..60).prop_map(Op::Vanish),
        2 => (1u16..200).prop_map(Op::Advance),
    ]
}

#[derive(Debug)]
struct Pod {
    node: String,
    uid: String,
    /// Container ID: unique per pod incarnation, as CNI handles are.
    handle: String,
    addrs: BTreeMap<Family, IpAddr>,
}

struct World {
    cfg: IpamConfig,
    now: i64,
    pools: Vec<Pool>,
    blocks: Vec<IPAMBlock>,
    nodes: BTreeMap<String, Labels>,
    pods: BTreeMap<String, Pod>,
    gc: GcTracker,
    serial: u64,
    stats: Stats,
}

/// What a run exercised, so the tests can insist the interesting paths were taken.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    allocated: usize,
    blocks_created: usize,
    reclaimed: usize,
    gc_released: usize,
    max_blocks: usize,
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

impl World {
    fn new() -> Self {
        Self {
            cfg: IpamConfig {
                cooldown: Duration::from_secs(30),
                low_water_percent: 25,
                max_blocks_per_node: 4,
                reclaim_after: Duration::from_secs(120),
                gc_grace: Duration::from_secs(60),
            },
            now: 0,
            pools: Vec::new(),
            blocks: Vec::new(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            gc: GcTracker::default(),
            serial: 0,
            stats: Stats::default(),
        }
    }

    fn t(&self) -> Timestamp {
        ts(self.now)
    }

    fn draining(&self) -> BTreeSet<String> {
        self.pools
            .iter()
            .filter(|p| p.terminating)
            .map(|p| p.name.clone())
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::CreatePool(i) => {
                let (name, cidr, prefix, zoned) = POOLS[i];
                if self.pools.iter().all(|p| p.name != name) {
                    let mut p = Pool::new(name, cidr.parse().unwrap(), prefix);
                    p.created = Some(self.t());
                    if zoned {
                        let sel = LabelSelector {
                            match_labels: Some([("zone".to_string(), "a".to_string())].into()),
                            match_expressions: None,
                        };
                        p.selector = Selector::parse(&sel, "spec.nodeSelector").unwrap();
                    }
                    self.pools.push(p);
                }
            }
            Op::TogglePool(i) => {
                if let Some(p) = self.pools.iter_mut().find(|p| p.name == POOLS[i].0) {
                    p.disabled = !p.disabled;
                }
            }
            Op::DeletePool(i) => {
                if let Some(p) = self.pools.iter_mut().find(|p| p.name == POOLS[i].0) {
                    p.terminating = true;
                }
            }
            Op::AddNode(n, zone_a) => {
                let zone = if zone_a { "a" } else { "b" };
                self.nodes
                    .entry(format!("node-{n}"))
                    .or_insert_with(|| [("zone".to_string(), zone.to_string())].into());
            }
            Op::RemoveNode(n) => {
                let name = format!("node-{n}");
                self.nodes.remove(&name);
                // Kubernetes deletes the node's pods; their addresses wait for the GC.
                self.pods.retain(|_, p| p.node != name);
            }
            Op::Alloc(n, pod, v6) => self.alloc(n, pod, v6),
            Op::Release(pod) => {
                let now = self.t();
                if let Some(p) = self.pods.remove(&format!("pod-{pod}")) {
                    // CNI DEL on the pod's node.
                    node::release(&mut self.blocks, &p.node, &p.handle, now);
                    // Releasing twice is harmless.
                    assert!(node::release(&mut self.blocks, &p.node, &p.handle, now).is_empty());
                }
            }
            Op::Vanish(pod) => {
                // The pod is deleted without CNI DEL ever running: only the GC can free it.
                self.pods.remove(&format!("pod-{pod}"));
            }
            Op::Advance(s) => self.now += i64::from(s),
        }
        self.controller();
        self.check();
    }

    fn alloc(&mut self, n: u8, pod: u16, v6: bool) {
        let node_name = format!("node-{n}");
        if !self.nodes.contains_key(&node_name) {
            return;
        }
        let key = format!("pod-{pod}");
        let family = if v6 { Family::V6 } else { Family::V4 };
        if let Some(p) = self.pods.get(&key)
            && p.node != node_name
        {
            return;
        }
        let uid = match self.pods.get(&key) {
            Some(p) => p.uid.clone(),
            None => {
                self.serial += 1;
                format!("uid-{pod}-{}", self.serial)
            }
        };
        let handle = format!("ctr-{uid}");
        let req = AllocRequest {
            handle: handle.clone(),
            pod: Some(PodReference {
                namespace: "default".into(),
                name: key.clone(),
                uid: uid.clone(),
            }),
            address: None,
        };
        let scope = Scope {
            node: &node_name,
            family,
            pool: None,
        };
        let draining = self.draining();
        let now = self.t();
        let mut result = node::allocate(&mut self.blocks, scope, &draining, &req, now, &self.cfg);
        if matches!(
            result,
            Err(NodeAllocError::NoBlock { .. } | NodeAllocError::Full { .. })
        ) {
            // The pod waits for the controller, then retries.
            self.controller();
            result = node::allocate(&mut self.blocks, scope, &draining, &req, now, &self.cfg);
        }
        match result {
            Ok(a) => {
                let pod = self.pods.entry(key).or_insert_with(|| Pod {
                    node: node_name.clone(),
                    uid,
                    handle,
                    addrs: BTreeMap::new(),
                });
                match pod.addrs.get(&family) {
                    Some(prev) => assert!(a.existing && *prev == a.address, "idempotent allocate"),
                    None => {
                        assert!(!a.existing);
                        pod.addrs.insert(family, a.address);
                        self.stats.allocated += 1;
                    }
                }
            }
            Err(NodeAllocError::NoBlock { .. } | NodeAllocError::Full { .. }) => {}
            Err(e) => panic!("unexpected allocation error: {e}"),
        }
    }

    /// What the IPAM controller does on each reconcile, through the pure core.
    fn controller(&mut self) {
        let now = self.t();
        // Garbage collection, with the re-check just before release.
        let live: BTreeSet<String> = self.pods.values().map(|p| p.uid.clone()).collect();
        for c in self.gc.observe(&self.blocks, &live, now, &self.cfg) {
            assert!(!live.contains(&c.pod.uid), "GC picked a live pod");
            if let Some(b) = self
                .blocks
                .iter_mut()
                .find(|b| b.metadata.name.as_deref() == Some(c.block.as_str()))
                && let Some(st) = b.status.as_mut()
                && block::release_if_unchanged(st, c.ordinal, &c.handle, Some(&c.pod.uid), now)
                    .is_some()
            {
                self.stats.gc_released += 1;
            }
        }
        // Blocks of deleted nodes, and drained blocks of deleted pools.
        let live_nodes: BTreeSet<String> = self.nodes.keys().cloned().collect();
        let mut doomed: BTreeSet<String> =
            node::orphaned_empty_blocks(&self.blocks, &live_nodes, now, &self.cfg)
                .iter()
                .filter_map(|b| b.metadata.name.clone())
                .collect();
        let draining = self.draining();
        let empty_everywhere: BTreeSet<String> =
            node::orphaned_empty_blocks(&self.blocks, &BTreeSet::new(), now, &self.cfg)
                .iter()
                .filter(|b| draining.contains(&b.spec.pool))
                .filter_map(|b| b.metadata.name.clone())
                .collect();
        doomed.extend(empty_everywhere);
        self.blocks
            .retain(|b| !doomed.contains(b.metadata.name.as_deref().unwrap_or_default()));
        // Pool finalizers: a deleted pool goes once its blocks are gone.
        let blocks = &self.blocks;
        self.pools
            .retain(|p| !p.terminating || blocks.iter().any(|b| b.spec.pool == p.name));
        // Blocks ahead of demand, with reclaim when pools are exhausted.
        let nodes: Vec<(String, Labels)> = self
            .nodes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, labels) in &nodes {
            for family in [Family::V4, Family::V6] {
                for _ in 0..3 {
                    let scope = Scope {
                        node: name,
                        family,
                        pool: None,
                    };
                    match node::plan(&self.pools, &self.blocks, scope, labels, now, &self.cfg) {
                        Plan::Create(p) => {
                            assert!(
                                self.blocks
                                    .iter()
                                    .all(|b| b.metadata.name.as_deref() != Some(p.name.as_str())),
                                "planned an existing block"
                            );
                            let mut b = IPAMBlock::new(
                                &p.name,
                                IPAMBlockSpec {
                                    cidr: p.cidr.to_string(),
                                    pool: p.pool,
                                    node: p.node,
                                },
                            );
                            b.metadata.creation_timestamp = Some(Time(now));
                            self.blocks.push(b);
                            self.stats.blocks_created += 1;
                            self.stats.max_blocks = self.stats.max_blocks.max(self.blocks.len());
                        }
                        Plan::Exhausted { pools } => {
                            let victim = node::reclaim_candidates(&self.blocks, now, &self.cfg)
                                .into_iter()
                                .find(|b| pools.contains(&b.spec.pool) && b.spec.node != *name)
                                .and_then(|b| b.metadata.name.clone());
                            match victim {
                                Some(v) => {
                                    self.blocks
                                        .retain(|b| b.metadata.name.as_deref() != Some(v.as_str()));
                                    self.stats.reclaimed += 1;
                                }
                                None => break,
                            }
                        }
                        Plan::Enough | Plan::AtCap | Plan::NoPool => break,
                    }
                }
            }
        }
    }

    fn check(&self) {
        let now = self.t();
        let mut addresses: BTreeMap<IpAddr, (String, String)> = BTreeMap::new();
        let cidrs: Vec<IpNet> = self
            .blocks
            .iter()
            .map(|b| b.spec.cidr.parse().unwrap())
            .collect();
        for (i, a) in cidrs.iter().enumerate() {
            for b in &cidrs[i + 1..] {
                assert!(!nets_overlap(a, b), "blocks {a} and {b} overlap");
            }
        }
        for (b, cidr) in self.blocks.iter().zip(&cidrs) {
            if let Err(e) = b.validate() {
                panic!("block {:?} invalid: {e:?}", b.metadata.name);
            }
            let pool = self.pools.iter().find(|p| p.name == b.spec.pool);
            let pool =
                pool.unwrap_or_else(|| panic!("block {cidr} outlived its pool {}", b.spec.pool));
            assert!(pool.cidr.contains(cidr) && cidr.prefix_len() == pool.block_prefix);
            let st = b.status.clone().unwrap_or_default();
            let u = block::usage(*cidr, &st, now, self.cfg.cooldown);
            assert_eq!(u64::from(u.capacity), block_capacity(*cidr) as u64);
            assert_eq!(
                u.allocated + u.cooling + u.free,
                u.capacity,
                "counts of {cidr}"
            );
            for a in &st.allocations {
                let ip = address_of(*cidr, a.ordinal).expect("ordinal inside its block");
                let prev = addresses.insert(ip, (b.spec.node.clone(), a.handle.clone()));
                assert!(
                    prev.is_none(),
                    "{ip} allocated twice: {prev:?} and {}",
                    a.handle
                );
                if let Some(pod) = self.pods.get(&a.handle) {
                    assert_eq!(
                        pod.node, b.spec.node,
                        "{ip} of {} is in another node's block",
                        a.handle
                    );
                }
            }
        }
        // Every live pod still holds exactly what it was given, on its node.
        for (key, pod) in &self.pods {
            for ip in pod.addrs.values() {
                assert_eq!(
                    addresses.get(ip),
                    Some(&(pod.node.clone(), pod.handle.clone())),
                    "live pod {key} lost {ip}"
                );
            }
        }
        let used: u64 = self
            .pools
            .iter()
            .map(|p| node::pool_usage(p, &self.blocks).addresses_used)
            .sum();
        assert_eq!(
            used as usize,
            addresses.len(),
            "pool usage disagrees with the blocks"
        );
        let per_node: BTreeMap<(&str, Family), usize> =
            self.blocks
                .iter()
                .zip(&cidrs)
                .fold(BTreeMap::new(), |mut m, (b, c)| {
                    *m.entry((b.spec.node.as_str(), Family::of(c))).or_default() += 1;
                    m
                });
        for ((n, f), count) in per_node {
            assert!(
                count <= self.cfg.max_blocks_per_node,
                "{n} holds {count} {f} blocks"
            );
        }
    }

    /// Everything goes away; the cluster must drain to nothing.
    fn drain(&mut self) {
        self.pods.clear();
        self.nodes.clear();
        for p in &mut self.pools {
            p.terminating = true;
        }
        for _ in 0..10 {
            self.now += 100;
            self.controller();
            self.check();
        }
        assert!(self.blocks.is_empty(), "leaked blocks: {:?}", self.blocks);
        assert!(
            self.pools.is_empty(),
            "pools stuck terminating: {:?}",
            self.pools
        );
    }
}

fn run(ops: &[Op]) -> Stats {
    let mut w = World::new();
    // A small baseline pool (4 blocks of 8) so most runs allocate something and many exhaust
    // it; the random ops add the larger and overlapping pools.
    w.apply(&Op::CreatePool(3));
    w.apply(&Op::CreatePool(4));
    for op in ops {
        w.apply(op);
    }
    w.drain();
    w.stats
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn ipam_invariants_hold(ops in proptest::collection::vec(op(), 1..150)) {
        run(&ops);
    }
}

/// The random runs above must actually reach the interesting paths; this sums what a fixed
/// set of seeded runs exercised.
#[test]
fn random_runs_exercise_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 100..150);
    let mut total = Stats::default();
    for _ in 0..100 {
        let ops = strategy.new_tree(&mut runner).expect("ops").current();
        let s = run(&ops);
        total.allocated += s.allocated;
        total.blocks_created += s.blocks_created;
        total.reclaimed += s.reclaimed;
        total.gc_released += s.gc_released;
        total.max_blocks = total.max_blocks.max(s.max_blocks);
    }
    eprintln!("{total:?}");
    assert!(total.allocated > 1000, "{total:?}");
    assert!(total.blocks_created > 200, "{total:?}");
    assert!(total.gc_released > 100, "{total:?}");
    assert!(total.reclaimed > 0, "{total:?}");
}

#[test]
fn busy_cluster_fills_and_drains() {
    let mut w = World::new();
    for i in 0..POOLS.len() {
        w.apply(&Op::CreatePool(i));
    }
    for n in 0..6 {
        w.apply(&Op::AddNode(n, n % 2 == 0));
    }
    for round in 0..4u16 {
        for pod in 0..60u16 {
            w.apply(&Op::Alloc((pod % 6) as u8, pod, round % 2 == 1));
        }
        for pod in (0..60u16).step_by(3) {
            w.apply(&Op::Release(pod));
        }
        w.apply(&Op::Advance(31));
    }
    assert!(
        w.pods.len() > 20,
        "the cluster should hold many pods, got {}",
        w.pods.len()
    );
    w.drain();
}

#[test]
fn reclaim_moves_an_idle_block_to_a_starved_node() {
    let mut w = World::new();
    w.apply(&Op::CreatePool(3)); // pool-d: 4 blocks of 8 addresses
    for n in 0..4 {
        w.apply(&Op::AddNode(n, false));
        w.apply(&Op::Alloc(n, u16::from(n), false));
    }
    w.apply(&Op::AddNode(4, false));
    assert!(
        !w.blocks.iter().any(|b| b.spec.node == "node-4"),
        "pool exhausted: no block for node-4 yet"
    );
    // node-0's pod goes away; its block sits empty past cooldown and reclaim_after.
    w.apply(&Op::Release(0));
    w.apply(&Op::Advance(100));
    assert!(
        !w.blocks.iter().any(|b| b.spec.node == "node-4"),
        "too early to reclaim"
    );
    w.apply(&Op::Advance(50));
    assert_eq!(w.stats.reclaimed, 1, "{:?}", w.stats);
    assert!(w.blocks.iter().any(|b| b.spec.node == "node-4"));
    // Busy blocks were never touched.
    for n in 1..4 {
        assert!(w.blocks.iter().any(|b| b.spec.node == format!("node-{n}")));
    }
    w.apply(&Op::Alloc(4, 9, false));
    assert!(w.pods.contains_key("pod-9"));
    w.drain();
}
