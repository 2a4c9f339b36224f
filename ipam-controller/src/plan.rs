//! One reconcile pass as a pure function: from what the caches hold to the writes to make.
//!
//! Owns every decision of the controller: which node gets which block, which allocations are
//! released (garbage collection, deleted nodes), which blocks are deleted (orphans, pool drain,
//! reclaim), pool finalizers and pool status, and which Events to raise. It must not do I/O or
//! read the clock: [`plan_pass`] takes a [`Snapshot`] and `now` and returns [`Action`]s, which
//! `crate::write` carries out with compare-and-swap. The allocation rules themselves live in
//! `tabby_api::ipam`; this module only strings them together.
//!
//! Level-triggered by design: each pass looks at the whole cluster state, so a missed watch
//! event, a dropped watch or a controller restart costs at most one pass, never a stuck block.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tabby_api::ipam::carve::Carver;
use tabby_api::ipam::name::block_name;
use tabby_api::ipam::node::{self, BlockPlan, GcTracker, Plan, Scope};
use tabby_api::ipam::pool::{self, POOL_ANNOTATION, Pool};
use tabby_api::ipam::{Family, IpamConfig};
use tabby_api::selector::Labels;
use tabby_api::v1alpha1::ippool::CONDITION_ALLOCATABLE;
use tabby_api::v1alpha1::{IPAMBlock, IPPool, IPPoolStatus, PodReference};
use tabby_api::validation::join;

/// Finalizer the controller puts on every IPPool, so a deleted pool stays until its blocks
/// have drained.
pub const POOL_FINALIZER: &str = "tabby.dev/ipam-controller";

/// Condition type on IPPool status: whether the pool's `nodeSelector` selects nodes, and
/// whether nodes of its family are left with no pool that can serve them.
pub const CONDITION_NODES_SELECTED: &str = "NodesSelected";
/// `NodesSelected=False`: the selector matches none of the cluster's nodes.
pub const REASON_NO_MATCHING_NODES: &str = "NoMatchingNodes";
/// `NodesSelected=True`, but some nodes match no usable pool of this family.
pub const REASON_NODES_UNSERVED: &str = "NodesUnserved";
/// `NodesSelected=True`, every node has a usable pool of this family.
pub const REASON_MATCHING: &str = "Matching";
/// `NodesSelected=Unknown`: there are no nodes.
pub const REASON_NO_NODES: &str = "NoNodes";
/// Most node names a condition message lists.
const MESSAGE_NODES: usize = 5;

/// A node as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node labels (matched against pool selectors).
    pub labels: Labels,
}

/// A pod as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `spec.nodeName`, when scheduled.
    pub node: Option<String>,
    /// `status.phase == "Pending"`.
    pub pending: bool,
    /// The `tabby.dev/ippools` annotation, when present.
    pub pool_annotation: Option<String>,
}

/// Everything one pass looks at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every Node.
    pub nodes: Vec<NodeInfo>,
    /// Every Pod.
    pub pods: Vec<PodInfo>,
    /// Every IPPool.
    pub pools: Vec<IPPool>,
    /// Every IPAMBlock.
    pub blocks: Vec<IPAMBlock>,
}

/// Why an allocation is released by the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseWhy {
    /// Its pod has been gone for the whole grace period.
    Gc,
    /// Its node was deleted and its pod is gone (or it had no pod).
    NodeGone,
}

/// Why a block is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteWhy {
    /// Its node is gone and it holds nothing.
    Orphan,
    /// Its pool is being deleted and it holds nothing.
    Drain,
    /// Its pool is exhausted, it has been empty long enough, and `for_node` needs a block.
    Reclaim {
        /// The node waiting for a block.
        for_node: String,
    },
}

/// What kind of object an Event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A Node.
    Node,
    /// An IPPool.
    IPPool,
    /// An IPAMBlock.
    IPAMBlock,
    /// A Pod (namespaced).
    Pod,
}

/// A Warning Event the pass wants raised (the writer de-duplicates repeats).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Namespace (pods only).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is wrong, naming the object and field.
    pub message: String,
}

/// One write the pass decided on.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this block (its name is derived from its CIDR, so a repeat fails with 409).
    CreateBlock(BlockPlan),
    /// Delete a block, only if it is still at `resource_version`.
    DeleteBlock {
        /// Block name.
        name: String,
        /// Its pool.
        pool: String,
        /// Its node.
        node: String,
        /// Precondition.
        resource_version: String,
        /// Why.
        why: DeleteWhy,
    },
    /// Release one allocation, re-checked against a fresh read of the block and the pod.
    Release {
        /// Block name.
        block: String,
        /// Ordinal.
        ordinal: u32,
        /// Holder handle.
        handle: String,
        /// Its pod (re-checked by namespace/name/uid right before release).
        pod: Option<PodReference>,
        /// Why.
        why: ReleaseWhy,
    },
    /// Add (`add`) or remove the pool finalizer.
    PoolFinalizer {
        /// Pool name.
        pool: String,
        /// Add or remove.
        add: bool,
    },
    /// Write this pool status.
    PoolStatus {
        /// Pool name.
        pool: String,
        /// The status wanted.
        status: IPPoolStatus,
    },
    /// Raise a Warning Event.
    Warn(Warning),
}

/// Per-pool figures for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolFigures {
    /// Blocks of the pool.
    pub blocks: u64,
    /// Addresses allocated.
    pub used: u64,
    /// Addresses free (in assigned and unassigned blocks, saturating).
    pub free: u64,
}

/// The result of a pass.
#[derive(Clone, Debug, Default)]
pub struct PassPlan {
    /// Writes, in the order to make them.
    pub actions: Vec<Action>,
    /// Figures per valid pool.
    pub pools: BTreeMap<String, PoolFigures>,
}

fn node_warning(node: &str, reason: &'static str, message: String) -> Action {
    Action::Warn(Warning {
        kind: ObjectKind::Node,
        namespace: None,
        name: node.to_string(),
        reason,
        message,
    })
}

/// Plans one pass. `gc` carries garbage-collection memory across passes.
pub fn plan_pass(
    snap: &Snapshot,
    gc: &mut GcTracker,
    now: Timestamp,
    cfg: &IpamConfig,
) -> PassPlan {
    let mut out = PassPlan::default();
    let actions = &mut out.actions;

    // Pools: validate (external input), finalizers.
    let mut pools: Vec<Pool> = Vec::new();
    for p in &snap.pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        let has_finalizer = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == POOL_FINALIZER);
        match Pool::from_ippool(p) {
            Ok(pool) => {
                if !pool.terminating && !has_finalizer {
                    actions.push(Action::PoolFinalizer {
                        pool: name.clone(),
                        add: true,
                    });
                }
                pools.push(pool);
            }
            Err(errors) => {
                actions.push(Action::Warn(Warning {
                    kind: ObjectKind::IPPool,
                    namespace: None,
                    name: name.clone(),
                    reason: "InvalidIPPool",
                    message: format!("IPPool {name} is invalid and is ignored: {}", join(&errors)),
                }));
                // An invalid pool has no blocks we would carve; let its deletion through.
                if p.metadata.deletion_timestamp.is_some() && has_finalizer {
                    let owned = snap.blocks.iter().any(|b| b.spec.pool == name);
                    if !owned {
                        actions.push(Action::PoolFinalizer {
                            pool: name,
                            add: false,
                        });
                    }
                }
            }
        }
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));

    // Blocks: validate; invalid ones still occupy their CIDR for carving but are never
    // released from, deleted or reclaimed by the controller.
    let mut valid: Vec<IPAMBlock> = Vec::new();
    for b in &snap.blocks {
        match b.validate() {
            Ok(()) => valid.push(b.clone()),
            Err(errors) => {
                let name = b.metadata.name.clone().unwrap_or_default();
                actions.push(Action::Warn(Warning {
                    kind: ObjectKind::IPAMBlock,
                    namespace: None,
                    name: name.clone(),
                    reason: "InvalidIPAMBlock",
                    message: format!(
                        "IPAMBlock {name} is invalid; left untouched: {}",
                        join(&errors)
                    ),
                }));
            }
        }
    }
    let mut all_blocks: Vec<IPAMBlock> = snap.blocks.clone();

    let live_nodes: BTreeSet<String> = snap.nodes.iter().map(|n| n.name.clone()).collect();
    let live_uids: BTreeSet<String> = snap.pods.iter().map(|p| p.uid.clone()).collect();
    let mut deleting: BTreeSet<String> = BTreeSet::new();
    let delete = |b: &IPAMBlock, why: DeleteWhy| Action::DeleteBlock {
        name: b.metadata.name.clone().unwrap_or_default(),
        pool: b.spec.pool.clone(),
        node: b.spec.node.clone(),
        resource_version: b.metadata.resource_version.clone().unwrap_or_default(),
        why,
    };

    // Deleted nodes: release allocations whose pod is gone, then delete empty blocks.
    for b in valid.iter().filter(|b| !live_nodes.contains(&b.spec.node)) {
        for a in b.status.iter().flat_map(|s| &s.allocations) {
            if a.pod.as_ref().is_none_or(|p| !live_uids.contains(&p.uid)) {
                actions.push(Action::Release {
                    block: b.metadata.name.clone().unwrap_or_default(),
                    ordinal: a.ordinal,
                    handle: a.handle.clone(),
                    pod: a.pod.clone(),
                    why: ReleaseWhy::NodeGone,
                });
            }
        }
    }
    for b in node::orphaned_empty_blocks(&valid, &live_nodes, now, cfg) {
        if deleting.insert(b.metadata.name.clone().unwrap_or_default()) {
            actions.push(delete(b, DeleteWhy::Orphan));
        }
    }

    // Garbage collection on live nodes (dead nodes were handled above).
    let on_live: Vec<IPAMBlock> = valid
        .iter()
        .filter(|b| live_nodes.contains(&b.spec.node))
        .cloned()
        .collect();
    for c in gc.observe(&on_live, &live_uids, now, cfg) {
        actions.push(Action::Release {
            block: c.block,
            ordinal: c.ordinal,
            handle: c.handle,
            pod: Some(c.pod),
            why: ReleaseWhy::Gc,
        });
    }

    // Terminating pools: delete their empty blocks; drop the finalizer once none is left.
    for p in pools.iter().filter(|p| p.terminating) {
        let mine: Vec<&IPAMBlock> = snap
            .blocks
            .iter()
            .filter(|b| b.spec.pool == p.name)
            .collect();
        let mut left = 0usize;
        for b in &mine {
            let empty = b.status.as_ref().is_none_or(|s| {
                s.allocations.is_empty()
                    && s.released.iter().all(|r| {
                        now.duration_since(r.time.0)
                            >= k8s_openapi::jiff::SignedDuration::try_from(cfg.cooldown)
                                .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
                    })
            });
            let name = b.metadata.name.clone().unwrap_or_default();
            if empty && valid.iter().any(|v| v.metadata.name == b.metadata.name) {
                if deleting.insert(name) {
                    actions.push(delete(b, DeleteWhy::Drain));
                }
            } else if !deleting.contains(&name) {
                left += 1;
            }
        }
        let has_finalizer = snap
            .pools
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(p.name.as_str()))
            .is_some_and(|x| {
                x.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == POOL_FINALIZER)
            });
        if mine.is_empty() && left == 0 && has_finalizer {
            actions.push(Action::PoolFinalizer {
                pool: p.name.clone(),
                add: false,
            });
        }
    }
    all_blocks.retain(|b| !deleting.contains(b.metadata.name.as_deref().unwrap_or_default()));

    // Nodes: a block per family on join, another below the mark, up to the cap; on-demand
    // blocks of a pool that a pending pod on the node asks for.
    let families: BTreeSet<Family> = pools.iter().map(Pool::family).collect();
    let mut pool_names: BTreeSet<&str> = BTreeSet::new();
    for p in &pools {
        pool_names.insert(&p.name);
    }
    let mut nodes: Vec<&NodeInfo> = snap.nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut requests: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for pod in snap.pods.iter().filter(|p| p.pending) {
        let (Some(node), Some(value)) = (&pod.node, &pod.pool_annotation) else {
            continue;
        };
        match pool::parse_pool_annotation(value) {
            Ok(names) => {
                for name in names {
                    requests.entry(node.as_str()).or_default().insert(name);
                }
            }
            Err(e) => actions.push(Action::Warn(Warning {
                kind: ObjectKind::Pod,
                namespace: Some(pod.namespace.clone()),
                name: pod.name.clone(),
                reason: "InvalidPoolAnnotation",
                message: format!("pod {}/{}: {e}", pod.namespace, pod.name),
            })),
        }
    }
    let mut reclaimed: BTreeSet<String> = BTreeSet::new();
    // Each node's own blocks: whether a node needs a block depends only on them, so the
    // per-node check stays O(its blocks). Carving (which must see every block) goes through
    // one `Carver` per pool for the whole pass, built on first use: O(B log B) once instead
    // of once per node.
    let mut node_blocks: BTreeMap<String, Vec<IPAMBlock>> = BTreeMap::new();
    for b in &all_blocks {
        node_blocks
            .entry(b.spec.node.clone())
            .or_default()
            .push(b.clone());
    }
    let existing: Vec<ipnet::IpNet> = all_blocks.iter().filter_map(node::block_cidr).collect();
    let mut carvers: BTreeMap<String, Carver<'_>> = BTreeMap::new();
    for n in nodes {
        let mut scopes: Vec<(Family, Option<String>)> =
            families.iter().map(|f| (*f, None)).collect();
        if let Some(names) = requests.get(n.name.as_str()) {
            for name in names {
                match pools.iter().find(|p| p.name == *name) {
                    Some(p) => scopes.push((p.family(), Some(p.name.clone()))),
                    None => actions.push(node_warning(
                        &n.name,
                        "UnknownIPPool",
                        format!(
                            "a pending pod on node {} asks for IPPool {name:?} ({POOL_ANNOTATION}), which does not exist or is invalid",
                            n.name
                        ),
                    )),
                }
            }
        }
        for (family, requested) in scopes {
            let scope = Scope {
                node: &n.name,
                family,
                pool: requested.as_deref(),
            };
            let mine = node_blocks
                .get(n.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let decided = match node::plan(&pools, mine, scope, &n.labels, now, cfg) {
                // Carved from this node's blocks only: carve again against every block.
                Plan::Create(_) | Plan::Exhausted { .. } => {
                    let overlaps = pool::overlaps(&pools);
                    let eligible = pool::eligible(&pools, &overlaps, &n.labels, family, scope.pool);
                    let carved = eligible.iter().find_map(|p| {
                        carvers
                            .entry(p.name.clone())
                            .or_insert_with(|| Carver::new(p, &existing))
                            .take(&n.name)
                            .map(|cidr| BlockPlan {
                                name: block_name(cidr),
                                cidr,
                                pool: p.name.clone(),
                                node: n.name.clone(),
                            })
                    });
                    match carved {
                        Some(plan) => Plan::Create(plan),
                        None => Plan::Exhausted {
                            pools: eligible.iter().map(|p| p.name.clone()).collect(),
                        },
                    }
                }
                other => other,
            };
            match decided {
                Plan::Enough | Plan::AtCap => {}
                Plan::Create(plan) => {
                    let block = planned_block(&plan);
                    node_blocks
                        .entry(n.name.clone())
                        .or_default()
                        .push(block.clone());
                    all_blocks.push(block);
                    actions.push(Action::CreateBlock(plan));
                }
                Plan::NoPool => {
                    let what = match &requested {
                        Some(p) => format!(
                            "IPPool {p} cannot serve node {} ({family}): it is disabled, terminating, overlapping another pool, or its nodeSelector does not match the node's labels",
                            n.name
                        ),
                        None => format!(
                            "no {family} IPPool serves node {}: every {family} pool is disabled, terminating, overlapping, or selects other nodes",
                            n.name
                        ),
                    };
                    actions.push(node_warning(&n.name, "NoIPPool", what));
                }
                Plan::Exhausted { pools: names } => {
                    let scoped: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                    let candidates: Vec<IPAMBlock> = valid
                        .iter()
                        .filter(|b| {
                            scoped.contains(b.spec.pool.as_str())
                                && b.spec.node != n.name
                                // A block its own node has a pending pod waiting for is
                                // not empty for long: taking it would ping-pong.
                                && !requests
                                    .get(b.spec.node.as_str())
                                    .is_some_and(|r| r.contains(&b.spec.pool))
                                && !reclaimed
                                    .contains(b.metadata.name.as_deref().unwrap_or_default())
                                && !deleting
                                    .contains(b.metadata.name.as_deref().unwrap_or_default())
                        })
                        .cloned()
                        .collect();
                    match node::reclaim_candidates(&candidates, now, cfg).first() {
                        Some(b) => {
                            let name = b.metadata.name.clone().unwrap_or_default();
                            reclaimed.insert(name.clone());
                            actions.push(delete(
                                b,
                                DeleteWhy::Reclaim {
                                    for_node: n.name.clone(),
                                },
                            ));
                        }
                        None => actions.push(node_warning(
                            &n.name,
                            "IPPoolExhausted",
                            format!(
                                "node {} needs a {family} block but IPPools {} are exhausted and no empty block has been held for {}s yet",
                                n.name,
                                names.join(","),
                                cfg.reclaim_after.as_secs()
                            ),
                        )),
                    }
                }
            }
        }
    }

    // Pool status and figures (counted on the blocks as read, before this pass's writes).
    let overlaps = pool::overlaps(&pools);
    // Nodes no usable pool of a family can serve (selector mismatch, or every selecting pool
    // disabled, terminating or overlapping): shown on every pool of that family.
    let mut unserved: BTreeMap<Family, Vec<&str>> = BTreeMap::new();
    for family in &families {
        let mut names: Vec<&str> = snap
            .nodes
            .iter()
            .filter(|n| pool::eligible(&pools, &overlaps, &n.labels, *family, None).is_empty())
            .map(|n| n.name.as_str())
            .collect();
        names.sort_unstable();
        unserved.insert(*family, names);
    }
    for p in &pools {
        // Every block counts, valid or not: an invalid block's CIDR is still taken.
        let usage = node::pool_usage(p, &snap.blocks);
        out.pools.insert(
            p.name.clone(),
            PoolFigures {
                blocks: usage.blocks_assigned,
                used: usage.addresses_used,
                free: usage.addresses_free,
            },
        );
        let Some(obj) = snap
            .pools
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(p.name.as_str()))
        else {
            continue;
        };
        let current = obj.status.clone().unwrap_or_default();
        let mut status = current.clone();
        let a = pool::allocatable(p, &overlaps, &usage);
        pool::set_condition(
            &mut status.conditions,
            Condition {
                type_: CONDITION_ALLOCATABLE.to_string(),
                status: if a.allocatable { "True" } else { "False" }.to_string(),
                reason: a.reason.to_string(),
                message: a.message,
                observed_generation: obj.metadata.generation,
                last_transition_time: Time(now),
            },
        );
        pool::set_condition(
            &mut status.conditions,
            nodes_selected(p, &snap.nodes, &unserved, obj.metadata.generation, now),
        );
        status.block_size = Some(p.block_prefix);
        status.blocks_assigned = usage.blocks_assigned;
        status.blocks_free = usage.blocks_free;
        status.addresses_used = usage.addresses_used;
        status.addresses_free = usage.addresses_free;
        status.observed_generation = obj.metadata.generation;
        if status != current {
            out.actions.push(Action::PoolStatus {
                pool: p.name.clone(),
                status,
            });
        }
    }
    out
}

/// The `NodesSelected` condition of pool `p`: does its selector match any node, and which nodes
/// of its family no usable pool serves.
fn nodes_selected(
    p: &Pool,
    nodes: &[NodeInfo],
    unserved: &BTreeMap<Family, Vec<&str>>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let selected = nodes
        .iter()
        .filter(|n| p.selector.matches(&n.labels))
        .count();
    let total = nodes.len();
    let family = p.family();
    let missing = unserved.get(&family).map(Vec::as_slice).unwrap_or_default();
    let listed = |names: &[&str]| {
        let mut s = names
            .iter()
            .take(MESSAGE_NODES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > MESSAGE_NODES {
            s.push_str(&format!(" and {} more", names.len() - MESSAGE_NODES));
        }
        s
    };
    let (status, reason, message) = if total == 0 {
        ("Unknown", REASON_NO_NODES, "there are no nodes".to_string())
    } else if selected == 0 {
        (
            "False",
            REASON_NO_MATCHING_NODES,
            format!(
                "spec.nodeSelector matches none of the {total} nodes; no node gets blocks from this pool"
            ),
        )
    } else if !missing.is_empty() {
        (
            "True",
            REASON_NODES_UNSERVED,
            format!(
                "selects {selected} of {total} nodes; {} nodes match no usable {family} pool: {}",
                missing.len(),
                listed(missing)
            ),
        )
    } else {
        (
            "True",
            REASON_MATCHING,
            format!("selects {selected} of {total} nodes"),
        )
    };
    Condition {
        type_: CONDITION_NODES_SELECTED.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The block a [`BlockPlan`] will create, for later decisions in the same pass.
pub fn planned_block(plan: &BlockPlan) -> IPAMBlock {
    IPAMBlock::new(
        &plan.name,
        tabby_api::v1alpha1::IPAMBlockSpec {
            cidr: plan.cidr.to_string(),
            pool: plan.pool.clone(),
            node: plan.node.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use tabby_api::ipam::name::block_name;
    use tabby_api::v1alpha1::{Allocation, IPAMBlockSpec, IPAMBlockStatus, IPPoolSpec};

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn cfg() -> IpamConfig {
        IpamConfig {
            cooldown: Duration::from_secs(30),
            gc_grace: Duration::from_secs(60),
            reclaim_after: Duration::from_secs(100),
            ..IpamConfig::default()
        }
    }

    fn ippool(name: &str, cidr: &str, size: u8) -> IPPool {
        let mut p = IPPool::new(
            name,
            IPPoolSpec {
                cidr: cidr.into(),
                block_size: Some(size),
                node_selector: None,
                disabled: false,
                nat_outgoing: false,
                disable_bgp_export: false,
            },
        );
        p.metadata.creation_timestamp = Some(Time(t(-1000)));
        p.metadata.finalizers = Some(vec![POOL_FINALIZER.into()]);
        p.metadata.generation = Some(1);
        p
    }

    fn block(cidr: &str, pool: &str, node: &str, allocs: &[(u32, Option<&str>)]) -> IPAMBlock {
        let net: ipnet::IpNet = cidr.parse().unwrap();
        let mut b = IPAMBlock::new(
            &block_name(net),
            IPAMBlockSpec {
                cidr: cidr.into(),
                pool: pool.into(),
                node: node.into(),
            },
        );
        b.metadata.resource_version = Some(format!("rv-{cidr}"));
        b.metadata.creation_timestamp = Some(Time(t(-1000)));
        b.status = Some(IPAMBlockStatus {
            allocations: allocs
                .iter()
                .map(|(o, uid)| Allocation {
                    ordinal: *o,
                    handle: format!("h{o}"),
                    pod: uid.map(|u| PodReference {
                        namespace: "default".into(),
                        name: format!("pod-{u}"),
                        uid: u.into(),
                    }),
                    time: Time(t(-1000)),
                })
                .collect(),
            ..IPAMBlockStatus::default()
        });
        b
    }

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: Labels::new(),
        }
    }

    fn pod(uid: &str, node: &str, annotation: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            node: Some(node.into()),
            pending: true,
            pool_annotation: annotation.map(Into::into),
        }
    }

    fn creates(p: &PassPlan) -> Vec<(String, String, String)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateBlock(b) => {
                    Some((b.node.clone(), b.pool.clone(), b.cidr.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    fn warnings(p: &PassPlan) -> Vec<&'static str> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Warn(w) => Some(w.reason),
                _ => None,
            })
            .collect()
    }

    fn pass(snap: &Snapshot) -> PassPlan {
        plan_pass(snap, &mut GcTracker::default(), t(0), &cfg())
    }

    #[test]
    fn joining_nodes_get_one_block_per_family_without_overlap() {
        let snap = Snapshot {
            nodes: vec![node("n1"), node("n2"), node("n3")],
            pools: vec![
                ippool("v4", "10.0.0.0/26", 28),
                ippool("v6", "fd00::/120", 124),
            ],
            ..Snapshot::default()
        };
        let p = pass(&snap);
        let c = creates(&p);
        assert_eq!(c.len(), 6, "{c:?}");
        for n in ["n1", "n2", "n3"] {
            assert_eq!(c.iter().filter(|x| x.0 == n && x.1 == "v4").count(), 1);
            assert_eq!(c.iter().filter(|x| x.0 == n && x.1 == "v6").count(), 1);
        }
        let cidrs: BTreeSet<&String> = c.iter().map(|x| &x.2).collect();
        assert_eq!(cidrs.len(), 6, "every block distinct: {c:?}");
        // The same state with those blocks in place: nothing more to create.
        let mut snap = snap;
        snap.blocks = c
            .iter()
            .map(|(n, p, cidr)| block(cidr, p, n, &[]))
            .collect();
        assert!(creates(&pass(&snap)).is_empty());
    }

    #[test]
    fn watermark_cap_and_disabled_pools() {
        let full: Vec<(u32, Option<&str>)> = (0..13).map(|o| (o, None)).collect();
        let mut snap = Snapshot {
            nodes: vec![node("n1")],
            pools: vec![ippool("v4", "10.0.0.0/24", 28)],
            blocks: vec![block("10.0.0.0/28", "v4", "n1", &full)],
            ..Snapshot::default()
        };
        // (case, low-water %, cap, disabled, blocks created)
        let cases = [
            ("3 of 16 free is under a quarter", 25, 20, false, 1),
            ("3 of 16 free is above a tenth", 10, 20, false, 0),
            ("at the cap", 25, 1, false, 0),
            ("disabled pool gives nothing", 25, 20, true, 0),
        ];
        for (case, mark, cap, disabled, want) in cases {
            snap.pools[0].spec.disabled = disabled;
            let cfg = IpamConfig {
                low_water_percent: mark,
                max_blocks_per_node: cap,
                ..cfg()
            };
            let p = plan_pass(&snap, &mut GcTracker::default(), t(0), &cfg);
            assert_eq!(creates(&p).len(), want, "{case}");
            if disabled {
                assert!(warnings(&p).contains(&"NoIPPool"), "{case}");
            }
        }
    }

    #[test]
    fn deleted_nodes_release_gone_pods_then_lose_empty_blocks() {
        let snap = Snapshot {
            nodes: vec![node("alive")],
            pods: vec![pod("live", "gone-node", None)],
            pools: vec![ippool("v4", "10.0.0.0/24", 28)],
            blocks: vec![
                block(
                    "10.0.0.0/28",
                    "v4",
                    "gone-node",
                    &[(0, Some("dead")), (1, Some("live")), (2, None)],
                ),
                block("10.0.0.16/28", "v4", "gone-node", &[]),
                block("10.0.0.32/28", "v4", "alive", &[]),
            ],
        };
        let p = pass(&snap);
        let releases: Vec<(u32, ReleaseWhy)> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Release { ordinal, why, .. } => Some((*ordinal, *why)),
                _ => None,
            })
            .collect();
        assert_eq!(
            releases,
            vec![(0, ReleaseWhy::NodeGone), (2, ReleaseWhy::NodeGone)]
        );
        let deletes: Vec<(&str, &str, &DeleteWhy)> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteBlock {
                    name,
                    resource_version,
                    why,
                    ..
                } => Some((name.as_str(), resource_version.as_str(), why)),
                _ => None,
            })
            .collect();
        assert_eq!(
            deletes,
            vec![("10-0-0-16-28", "rv-10.0.0.16/28", &DeleteWhy::Orphan)]
        );
    }

    #[test]
    fn gc_waits_for_the_grace_and_spares_live_pods() {
        let snap = Snapshot {
            nodes: vec![node("n1")],
            pods: vec![pod("live", "n1", None)],
            pools: vec![ippool("v4", "10.0.0.0/24", 26)],
            blocks: vec![block(
                "10.0.0.0/26",
                "v4",
                "n1",
                &[(0, Some("live")), (1, Some("dead"))],
            )],
        };
        let mut gc = GcTracker::default();
        let released = |p: &PassPlan| -> Vec<u32> {
            p.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Release {
                        ordinal,
                        why: ReleaseWhy::Gc,
                        ..
                    } => Some(*ordinal),
                    _ => None,
                })
                .collect()
        };
        // (time, released)
        for (now, want) in [(0, vec![]), (59, vec![]), (60, vec![1]), (120, vec![1])] {
            let p = plan_pass(&snap, &mut gc, t(now), &cfg());
            assert_eq!(released(&p), want, "at {now}s");
        }
        let off = IpamConfig {
            gc_grace: Duration::ZERO,
            ..cfg()
        };
        let p = plan_pass(&snap, &mut gc, t(10_000), &off);
        assert!(released(&p).is_empty(), "grace 0 disables GC");
    }

    #[test]
    fn terminating_pools_drain_then_drop_the_finalizer() {
        let mut dying = ippool("old", "10.9.0.0/24", 28);
        dying.metadata.deletion_timestamp = Some(Time(t(-5)));
        let mut snap = Snapshot {
            nodes: vec![node("n1"), node("n2")],
            pools: vec![dying, ippool("new", "10.8.0.0/24", 28)],
            blocks: vec![
                block("10.9.0.0/28", "old", "n1", &[]),
                block("10.9.0.16/28", "old", "n2", &[(0, None)]),
            ],
            ..Snapshot::default()
        };
        let p = pass(&snap);
        assert!(p.actions.iter().any(|a| matches!(a, Action::DeleteBlock { name, why: DeleteWhy::Drain, .. } if name == "10-9-0-0-28")));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::DeleteBlock { name, .. } if name == "10-9-0-16-28"))
        );
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::PoolFinalizer { add: false, .. }))
        );
        // Blocks of a draining pool do not count: both nodes get blocks of the other pool.
        let c = creates(&p);
        assert_eq!(c.iter().filter(|x| x.1 == "new").count(), 2, "{c:?}");
        snap.blocks.clear();
        let p = pass(&snap);
        assert!(p.actions.contains(&Action::PoolFinalizer {
            pool: "old".into(),
            add: false
        }));
    }

    #[test]
    fn exhausted_pool_reclaims_the_longest_empty_block() {
        let mut young = block("10.0.0.16/28", "p", "n2", &[]);
        young.metadata.creation_timestamp = Some(Time(t(-10)));
        let snap = Snapshot {
            nodes: vec![node("n1"), node("n2"), node("n3"), node("n4")],
            pools: vec![ippool("p", "10.0.0.0/27", 28)],
            blocks: vec![block("10.0.0.0/28", "p", "n1", &[]), young],
            ..Snapshot::default()
        };
        let p = pass(&snap);
        let reclaims: Vec<(&str, &str)> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteBlock {
                    name,
                    why: DeleteWhy::Reclaim { for_node },
                    ..
                } => Some((name.as_str(), for_node.as_str())),
                _ => None,
            })
            .collect();
        // n3 takes n1's long-empty block; n4 finds nothing old enough.
        assert_eq!(reclaims, vec![("10-0-0-0-28", "n3")]);
        assert!(warnings(&p).contains(&"IPPoolExhausted"));
        let st = p
            .actions
            .iter()
            .find_map(|a| match a {
                Action::PoolStatus { status, .. } => Some(status.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(st.conditions[0].reason, "Exhausted");
        assert_eq!(
            (st.blocks_assigned, st.blocks_free, st.addresses_used),
            (2, 0, 0)
        );
    }

    #[test]
    fn a_block_its_node_waits_for_is_never_reclaimed() {
        let snap = Snapshot {
            nodes: vec![node("n1"), node("n2"), node("n3")],
            pods: vec![pod("w1", "n1", Some("p"))],
            pools: vec![ippool("p", "10.0.0.0/27", 28)],
            blocks: vec![
                block("10.0.0.0/28", "p", "n1", &[]),
                block("10.0.0.16/28", "p", "n2", &[]),
            ],
        };
        let p = pass(&snap);
        let reclaimed: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteBlock { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            reclaimed,
            vec!["10-0-0-16-28"],
            "n1 has a pending pod asking for p"
        );
    }

    #[test]
    fn overlap_status_is_written_once() {
        let mut late = ippool("b", "10.0.0.128/25", 28);
        late.metadata.creation_timestamp = Some(Time(t(-10)));
        let mut snap = Snapshot {
            pools: vec![ippool("a", "10.0.0.0/24", 28), late],
            ..Snapshot::default()
        };
        let p = pass(&snap);
        for a in &p.actions {
            if let Action::PoolStatus { pool, status } = a {
                let c = &status.conditions[0];
                let want = if pool == "a" {
                    ("True", "Ready")
                } else {
                    ("False", "CIDROverlap")
                };
                assert_eq!((c.status.as_str(), c.reason.as_str()), want, "{pool}");
                assert_eq!(status.block_size, Some(28));
                let obj = snap
                    .pools
                    .iter_mut()
                    .find(|x| x.metadata.name.as_deref() == Some(pool))
                    .unwrap();
                obj.status = Some(status.clone());
            }
        }
        let again = plan_pass(&snap, &mut GcTracker::default(), t(50), &cfg());
        assert!(
            !again
                .actions
                .iter()
                .any(|a| matches!(a, Action::PoolStatus { .. })),
            "{:?}",
            again.actions
        );
    }

    #[test]
    fn selector_mismatch_shows_in_pool_status() {
        let zone = |z: &str| LabelSelector {
            match_labels: Some([("zone".to_string(), z.to_string())].into()),
            match_expressions: None,
        };
        let labelled = |name: &str, z: &str| {
            let mut n = node(name);
            n.labels.insert("zone".into(), z.into());
            n
        };
        let condition = |p: &PassPlan, pool: &str| {
            p.actions.iter().find_map(|a| match a {
                Action::PoolStatus { pool: name, status } if name == pool => status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == CONDITION_NODES_SELECTED)
                    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone())),
                _ => None,
            })
        };
        let mut a = ippool("zone-a", "10.1.0.0/24", 28);
        a.spec.node_selector = Some(zone("a"));
        let mut c = ippool("zone-c", "10.3.0.0/24", 28);
        c.spec.node_selector = Some(zone("c"));
        let v6 = ippool("v6", "fd00::/120", 124);
        // (case, nodes, pool, expected status, reason, words in the message)
        type Case<'a> = (&'a str, Vec<NodeInfo>, &'a str, &'a str, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                "no node in zone c",
                vec![labelled("n1", "a"), labelled("n2", "b")],
                "zone-c",
                "False",
                REASON_NO_MATCHING_NODES,
                "matches none of the 2 nodes",
            ),
            (
                "n2 in zone b has no IPv4 pool",
                vec![labelled("n1", "a"), labelled("n2", "b")],
                "zone-a",
                "True",
                REASON_NODES_UNSERVED,
                "selects 1 of 2 nodes; 1 nodes match no usable IPv4 pool: n2",
            ),
            (
                "the IPv6 pool serves everyone",
                vec![labelled("n1", "a"), labelled("n2", "b")],
                "v6",
                "True",
                REASON_MATCHING,
                "selects 2 of 2 nodes",
            ),
            (
                "every node served",
                vec![labelled("n1", "a"), labelled("n3", "c")],
                "zone-a",
                "True",
                REASON_MATCHING,
                "selects 1 of 2 nodes",
            ),
            (
                "no nodes",
                vec![],
                "zone-a",
                "Unknown",
                REASON_NO_NODES,
                "no nodes",
            ),
        ];
        for (case, nodes, pool, status, reason, words) in cases {
            let snap = Snapshot {
                nodes,
                pools: vec![a.clone(), c.clone(), v6.clone()],
                ..Snapshot::default()
            };
            let p = pass(&snap);
            let (s, r, m) = condition(&p, pool).unwrap_or_else(|| panic!("{case}: no status"));
            assert_eq!((s.as_str(), r.as_str()), (status, reason), "{case}: {m}");
            assert!(m.contains(words), "{case}: {m}");
        }
        // The node no pool serves also gets a Warning Event (NoIPPool) naming it.
        let snap = Snapshot {
            nodes: vec![labelled("n2", "b")],
            pools: vec![a.clone()],
            ..Snapshot::default()
        };
        let p = pass(&snap);
        assert!(p.actions.iter().any(|x| matches!(x,
            Action::Warn(w) if w.reason == "NoIPPool" && w.name == "n2" && w.kind == ObjectKind::Node)));
    }

    #[test]
    fn pod_annotation_asks_for_a_pool_and_bad_input_is_reported() {
        let mut gpu = ippool("gpu", "10.7.0.0/24", 28);
        gpu.spec.node_selector = Some(LabelSelector {
            match_labels: Some([("gpu".to_string(), "yes".to_string())].into()),
            match_expressions: None,
        });
        let mut bad = ippool("broken", "10.6.0.1/24", 28);
        bad.metadata.finalizers = None;
        let mut g1 = node("g1");
        g1.labels.insert("gpu".into(), "yes".into());
        let snap = Snapshot {
            nodes: vec![g1, node("plain")],
            pods: vec![
                pod("a", "g1", Some("gpu")),
                pod("b", "plain", Some("gpu")),
                pod("c", "plain", Some("not a name!")),
                pod("d", "plain", Some("missing")),
            ],
            pools: vec![ippool("a-default", "10.0.0.0/24", 28), gpu, bad],
            blocks: vec![
                block("10.0.0.0/28", "a-default", "g1", &[]),
                block("10.0.0.16/28", "a-default", "plain", &[]),
            ],
        };
        let p = pass(&snap);
        let c = creates(&p);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].0.as_str(), c[0].1.as_str()), ("g1", "gpu"));
        let w = warnings(&p);
        for reason in [
            "InvalidIPPool",
            "InvalidPoolAnnotation",
            "UnknownIPPool",
            "NoIPPool",
        ] {
            assert!(w.contains(&reason), "{reason} missing from {w:?}");
        }
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::PoolFinalizer { pool, .. } if pool == "broken"))
        );
    }
}
