//! A node's blocks taken together, and the controller's per-node and per-pool decisions.
//!
//! Owns: allocation across a node's blocks (idempotent per handle and family; fullest usable
//! block first, so empty blocks stay empty and can be reclaimed), the low-water mark ("does
//! this node need another block"), the per-node cap, planning the next block for a node,
//! reclaim candidates, garbage-collection candidates, and pool usage counts. Must not read the
//! clock or touch the API: callers pass objects and `now`, then write results with CAS.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::block::{self, AllocError, AllocRequest, BlockUsage};
use super::carve::next_free_block;
use super::name::block_name;
use super::pool::{self, Pool};
use super::{Family, IpamConfig, elapsed};
use crate::selector::Labels;
use crate::v1alpha1::{IPAMBlock, PodReference};

/// The block CIDR of `b`, or `None` when its spec is invalid (such blocks are reported by
/// `IPAMBlock::validate` and never allocated from).
pub fn block_cidr(b: &IPAMBlock) -> Option<IpNet> {
    b.spec.parsed_cidr().ok()
}

/// Which node, family and (optionally) pool an operation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The node.
    pub node: &'a str,
    /// The address family.
    pub family: Family,
    /// Only this pool (a pod asked for it by annotation), or any.
    pub pool: Option<&'a str>,
}

/// Where an address was allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAllocation {
    /// Index of the block in the slice passed in (its status was changed unless `existing`).
    pub block_index: usize,
    /// Name of that block.
    pub block: String,
    /// Offset within the block.
    pub ordinal: u32,
    /// The address.
    pub address: IpAddr,
    /// `true` when the handle already held it (nothing changed, nothing to write).
    pub existing: bool,
}

/// Why a node could not allocate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeAllocError {
    /// The node has no usable block of the family (in the requested pool): the controller
    /// must assign one first.
    #[error("node {node} has no usable {family} block{}", pool.as_ref().map(|p| format!(" from pool {p}")).unwrap_or_default())]
    NoBlock {
        /// The node.
        node: String,
        /// The family asked for.
        family: Family,
        /// The pool asked for.
        pool: Option<String>,
    },
    /// Every usable block is full.
    #[error("node {node}: all {blocks} usable {family} blocks are full")]
    Full {
        /// The node.
        node: String,
        /// The family asked for.
        family: Family,
        /// How many blocks were tried.
        blocks: usize,
    },
    /// The specific address asked for is in none of the node's blocks.
    #[error("{address} is not in any block of node {node}")]
    NotOnNode {
        /// The node.
        node: String,
        /// The address.
        address: IpAddr,
    },
    /// The block refused.
    #[error("block {block}: {source}")]
    Block {
        /// Block name.
        block: String,
        /// Cause.
        source: AllocError,
    },
}

/// Allocates an address of `scope.family` for `req` on `scope.node`, changing the status of
/// one block in `blocks` (which may hold any blocks; only those with `spec.node` equal to the
/// node are used). Blocks of pools in `draining` (being deleted) are never allocated from. With
/// `scope.pool`, only that pool's blocks are used.
pub fn allocate(
    blocks: &mut [IPAMBlock],
    scope: Scope<'_>,
    draining: &BTreeSet<String>,
    req: &AllocRequest,
    now: Timestamp,
    cfg: &IpamConfig,
) -> Result<NodeAllocation, NodeAllocError> {
    let Scope { node, family, pool } = scope;
    let mine = |b: &IPAMBlock| -> Option<IpNet> {
        let cidr = block_cidr(b)?;
        (b.spec.node == node && Family::of(&cidr) == family).then_some(cidr)
    };
    // Idempotency first, across every block of the node and family (even draining ones): the
    // handle keeps the address it has.
    for (i, b) in blocks.iter().enumerate() {
        if let (Some(cidr), Some(st)) = (mine(b), b.status.as_ref())
            && let Some((ordinal, address)) = block::find_handle(cidr, st, &req.handle)
        {
            if req.address.is_some_and(|a| a != address) {
                return Err(NodeAllocError::Block {
                    block: b.metadata.name.clone().unwrap_or_default(),
                    source: AllocError::HandleHoldsOther {
                        handle: req.handle.clone(),
                        held: address,
                        requested: req.address.unwrap_or(address),
                    },
                });
            }
            return Ok(NodeAllocation {
                block_index: i,
                block: b.metadata.name.clone().unwrap_or_default(),
                ordinal,
                address,
                existing: true,
            });
        }
    }
    let usable: Vec<(usize, IpNet)> = blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| mine(b).map(|c| (i, c, b)))
        .filter(|(_, _, b)| {
            pool.is_none_or(|p| p == b.spec.pool) && !draining.contains(&b.spec.pool)
        })
        .map(|(i, c, _)| (i, c))
        .collect();
    if usable.is_empty() {
        return Err(NodeAllocError::NoBlock {
            node: node.into(),
            family,
            pool: pool.map(Into::into),
        });
    }
    let mut order: Vec<(usize, IpNet)> = match req.address {
        Some(address) => {
            let found: Vec<_> = usable
                .iter()
                .copied()
                .filter(|(_, c)| c.contains(&address))
                .collect();
            if found.is_empty() {
                return Err(NodeAllocError::NotOnNode {
                    node: node.into(),
                    address,
                });
            }
            found
        }
        None => usable,
    };
    // Fullest block first (fewest free), then by address: packs pods so that empty blocks stay
    // empty and can be given back.
    let free = |i: usize, c: IpNet| {
        blocks[i]
            .status
            .as_ref()
            .map_or(
                block::usage(c, &Default::default(), now, cfg.cooldown),
                |s| block::usage(c, s, now, cfg.cooldown),
            )
            .free
    };
    order.sort_by_cached_key(|(i, c)| (free(*i, *c), *c));
    let tried = order.len();
    for (i, cidr) in order {
        let b = &mut blocks[i];
        let name = b.metadata.name.clone().unwrap_or_default();
        let status = b.status.get_or_insert_with(Default::default);
        match block::allocate(cidr, status, req, now, cfg.cooldown) {
            Ok(a) => {
                return Ok(NodeAllocation {
                    block_index: i,
                    block: name,
                    ordinal: a.ordinal,
                    address: a.address,
                    existing: a.existing,
                });
            }
            Err(AllocError::Full { .. }) if req.address.is_none() => continue,
            Err(source) => {
                return Err(NodeAllocError::Block {
                    block: name,
                    source,
                });
            }
        }
    }
    Err(NodeAllocError::Full {
        node: node.into(),
        family,
        blocks: tried,
    })
}

/// Releases whatever `handle` holds on `node` (every family), into cooldown. Returns the
/// indices of the blocks whose status changed (to be written back).
pub fn release(blocks: &mut [IPAMBlock], node: &str, handle: &str, now: Timestamp) -> Vec<usize> {
    let mut changed = Vec::new();
    for (i, b) in blocks.iter_mut().enumerate() {
        if b.spec.node != node {
            continue;
        }
        if let Some(st) = b.status.as_mut()
            && block::release_handle(st, handle, now).is_some()
        {
            changed.push(i);
        }
    }
    changed
}

/// Whether a node needs another block of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockNeed {
    /// Free addresses are at or above the low-water mark.
    Enough {
        /// Free addresses across the node's usable blocks of the family.
        free: u64,
    },
    /// Below the low-water mark: assign another block now, before pods have to wait.
    Below {
        /// Free addresses across the node's usable blocks of the family.
        free: u64,
    },
    /// Below the mark, but the node already holds the most blocks allowed.
    AtCap {
        /// Free addresses.
        free: u64,
        /// Blocks held.
        blocks: usize,
    },
}

/// Decides whether `node` needs another `family` block. `block_capacity` is the size of the
/// block it would get (the first eligible pool's); the mark is `cfg.low_water_percent` of it.
/// Blocks of draining pools do not count: nothing is allocated from them.
pub fn need(
    blocks: &[IPAMBlock],
    node: &str,
    family: Family,
    draining: &BTreeSet<String>,
    block_capacity: u32,
    now: Timestamp,
    cfg: &IpamConfig,
) -> BlockNeed {
    let mut free = 0u64;
    let mut held = 0usize;
    for b in blocks.iter().filter(|b| b.spec.node == node) {
        let Some(cidr) = block_cidr(b).filter(|c| Family::of(c) == family) else {
            continue;
        };
        held += 1;
        if draining.contains(&b.spec.pool) {
            continue;
        }
        let u = b.status.as_ref().map_or(
            BlockUsage {
                capacity: 0,
                allocated: 0,
                cooling: 0,
                free: u32::try_from(super::name::block_capacity(cidr)).unwrap_or(u32::MAX),
            },
            |s| block::usage(cidr, s, now, cfg.cooldown),
        );
        free += u64::from(u.free);
    }
    let mark = u64::from(block_capacity) * u64::from(cfg.low_water_percent);
    if free * 100 >= mark && held > 0 {
        BlockNeed::Enough { free }
    } else if held >= cfg.max_blocks_per_node {
        BlockNeed::AtCap { free, blocks: held }
    } else {
        BlockNeed::Below { free }
    }
}

/// A block the controller should create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    /// Object name (derived from the CIDR).
    pub name: String,
    /// The block.
    pub cidr: IpNet,
    /// Its pool.
    pub pool: String,
    /// Its node.
    pub node: String,
}

/// The outcome of planning for one node and family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The node has enough addresses.
    Enough,
    /// Create this block.
    Create(BlockPlan),
    /// The node holds the most blocks allowed.
    AtCap,
    /// No pool serves this node and family (selector mismatch, disabled, overlapping…).
    NoPool,
    /// Every eligible pool is full; reclaiming empty blocks may help.
    Exhausted {
        /// The eligible pools, in order.
        pools: Vec<String>,
    },
}

/// Plans the next block for the scope's node (with `labels`) and family: whether it needs one,
/// and if so the first eligible pool (in name order, or only the scope's pool) with a free
/// block.
pub fn plan(
    pools: &[Pool],
    blocks: &[IPAMBlock],
    scope: Scope<'_>,
    labels: &Labels,
    now: Timestamp,
    cfg: &IpamConfig,
) -> Plan {
    let Scope {
        node,
        family,
        pool: requested,
    } = scope;
    let overlaps = pool::overlaps(pools);
    // Blocks of pools that hand out nothing new (being deleted, or disabled) are no capacity.
    let draining: BTreeSet<String> = pools
        .iter()
        .filter(|p| p.terminating || p.disabled)
        .map(|p| p.name.clone())
        .collect();
    let eligible = pool::eligible(pools, &overlaps, labels, family, requested);
    let Some(first) = eligible.first() else {
        return Plan::NoPool;
    };
    // With a requested pool, only blocks of that pool count towards the mark.
    let scoped: Vec<IPAMBlock>;
    let counted: &[IPAMBlock] = match requested {
        Some(r) => {
            scoped = blocks
                .iter()
                .filter(|b| b.spec.pool == r)
                .cloned()
                .collect();
            &scoped
        }
        None => blocks,
    };
    let cap = u32::try_from(first.block_addresses()).unwrap_or(u32::MAX);
    match need(counted, node, family, &draining, cap, now, cfg) {
        BlockNeed::Enough { .. } => return Plan::Enough,
        BlockNeed::AtCap { .. } => return Plan::AtCap,
        BlockNeed::Below { .. } => {}
    }
    let existing: Vec<IpNet> = blocks.iter().filter_map(block_cidr).collect();
    for p in &eligible {
        if let Some(cidr) = next_free_block(p, node, &existing) {
            return Plan::Create(BlockPlan {
                name: block_name(cidr),
                cidr,
                pool: p.name.clone(),
                node: node.into(),
            });
        }
    }
    Plan::Exhausted {
        pools: eligible.iter().map(|p| p.name.clone()).collect(),
    }
}

impl Pool {
    /// Addresses in one of this pool's blocks.
    pub fn block_addresses(&self) -> u128 {
        let host = u32::from(self.cidr.max_prefix_len() - self.block_prefix);
        1u128.checked_shl(host).unwrap_or(u128::MAX)
    }
}

/// Blocks that hold nothing (no allocation, no address cooling down) and have been empty for
/// at least `cfg.reclaim_after`, oldest-empty first. `created` gives each block's creation
/// time (from metadata); emptiness is measured from the later of creation and last release.
pub fn reclaim_candidates<'b>(
    blocks: &'b [IPAMBlock],
    now: Timestamp,
    cfg: &IpamConfig,
) -> Vec<&'b IPAMBlock> {
    let mut out: Vec<(Timestamp, &IPAMBlock)> = blocks
        .iter()
        .filter_map(|b| {
            let st = b.status.clone().unwrap_or_default();
            if !st.allocations.is_empty()
                || st
                    .released
                    .iter()
                    .any(|r| !elapsed(r.time.0, now, cfg.cooldown))
            {
                return None;
            }
            let created = b.metadata.creation_timestamp.as_ref().map(|t| t.0)?;
            let since = st.last_release_time.map_or(created, |t| t.0.max(created));
            elapsed(since, now, cfg.reclaim_after).then_some((since, b))
        })
        .collect();
    out.sort_by(|a, b| (a.0, &a.1.metadata.name).cmp(&(b.0, &b.1.metadata.name)));
    out.into_iter().map(|(_, b)| b).collect()
}

/// Blocks of nodes that no longer exist and hold nothing: safe to delete now.
pub fn orphaned_empty_blocks<'b>(
    blocks: &'b [IPAMBlock],
    live_nodes: &BTreeSet<String>,
    now: Timestamp,
    cfg: &IpamConfig,
) -> Vec<&'b IPAMBlock> {
    blocks
        .iter()
        .filter(|b| !live_nodes.contains(&b.spec.node))
        .filter(|b| {
            b.status.as_ref().is_none_or(|s| {
                s.allocations.is_empty()
                    && s.released
                        .iter()
                        .all(|r| elapsed(r.time.0, now, cfg.cooldown))
            })
        })
        .collect()
}

/// An allocation the garbage collector should release (after re-checking the pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcCandidate {
    /// Block name.
    pub block: String,
    /// Ordinal in the block.
    pub ordinal: u32,
    /// Holder handle.
    pub handle: String,
    /// The pod that is gone.
    pub pod: PodReference,
}

/// Remembers since when each allocation's pod has been missing, so an allocation is only
/// released after its pod has been gone for the whole grace period. Pure state: the caller
/// feeds it the blocks and live pod UIDs it read and the current time.
#[derive(Clone, Debug, Default)]
pub struct GcTracker {
    missing_since: BTreeMap<(String, u32, String), Timestamp>,
}

impl GcTracker {
    /// Records what was seen at `now` and returns the allocations whose pod has been missing
    /// for at least `cfg.gc_grace` (never any when the grace is zero, which disables GC).
    /// Allocations without a pod reference are never collected: there is nothing to check.
    pub fn observe(
        &mut self,
        blocks: &[IPAMBlock],
        live_pod_uids: &BTreeSet<String>,
        now: Timestamp,
        cfg: &IpamConfig,
    ) -> Vec<GcCandidate> {
        if cfg.gc_grace.is_zero() {
            self.missing_since.clear();
            return Vec::new();
        }
        let mut seen = BTreeMap::new();
        let mut due = Vec::new();
        for b in blocks {
            let name = b.metadata.name.clone().unwrap_or_default();
            for a in b.status.iter().flat_map(|s| &s.allocations) {
                let Some(pod) = &a.pod else { continue };
                if live_pod_uids.contains(&pod.uid) {
                    continue;
                }
                let key = (name.clone(), a.ordinal, pod.uid.clone());
                let since = self.missing_since.get(&key).copied().unwrap_or(now);
                // Also require the allocation itself to be older than the grace: a pod created
                // just now may not be in the caller's pod cache yet.
                if elapsed(since, now, cfg.gc_grace) && elapsed(a.time.0, now, cfg.gc_grace) {
                    due.push(GcCandidate {
                        block: name.clone(),
                        ordinal: a.ordinal,
                        handle: a.handle.clone(),
                        pod: pod.clone(),
                    });
                }
                seen.insert(key, since);
            }
        }
        self.missing_since = seen;
        due
    }
}

/// Counts for a pool's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Blocks carved from the pool.
    pub blocks_assigned: u64,
    /// Blocks not carved yet (saturating).
    pub blocks_free: u64,
    /// Addresses allocated.
    pub addresses_used: u64,
    /// Addresses not allocated, in carved and uncarved blocks (saturating).
    pub addresses_free: u64,
}

/// Usage of `pool` from the blocks whose `spec.pool` names it.
pub fn pool_usage(pool: &Pool, blocks: &[IPAMBlock]) -> PoolUsage {
    let mut assigned = 0u64;
    let mut used = 0u64;
    for b in blocks.iter().filter(|b| b.spec.pool == pool.name) {
        if block_cidr(b).is_some_and(|c| pool.cidr.contains(&c)) {
            assigned += 1;
            used += b.status.as_ref().map_or(0, |s| s.allocations.len() as u64);
        }
    }
    let total_addrs = super::name::block_capacity(pool.cidr);
    let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    PoolUsage {
        blocks_assigned: assigned,
        blocks_free: sat(pool.block_count().saturating_sub(u128::from(assigned))),
        addresses_used: used,
        addresses_free: sat(total_addrs.saturating_sub(u128::from(used))),
    }
}
