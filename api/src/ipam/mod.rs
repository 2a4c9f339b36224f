//! The IPAM core: pure decisions over CRD data, shared by the IPAM controller and node agent.
//!
//! Owns *what* to do — which pool serves a node, which block to carve next, which ordinal to
//! hand out, when a node needs another block, which blocks to reclaim and which allocations to
//! garbage-collect. It must not do I/O or read the clock: callers pass the objects they read and
//! the current time, and write the results back with compare-and-swap.
//!
//! * [`name`]: block name ↔ CIDR ↔ ordinal conversions.
//! * [`pool`]: validated pool views, overlap detection, pool selection order, the
//!   `Allocatable` condition, the `tabby.dev/ippools` pod annotation.
//! * [`carve`]: the next free block of a pool for a node ([`carve::Carver`] for many nodes).
//! * [`block`]: allocation and release inside one block (cooldown, idempotency).
//! * [`node`]: a node's blocks together: allocation across blocks, the low-water mark, the
//!   per-node cap, reclaim and garbage-collection candidates, pool usage.
//!
//! Addressing rule: every address of a block is usable, including the first and the last. A
//! block is a slice of a routed pool, announced as a whole over BGP; pods sit behind
//! point-to-point veths with host routes, so there is no shared link on which a block's first
//! address would be a network address or its last a broadcast address.

use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

pub mod block;
pub mod carve;
pub mod name;
pub mod node;

pub mod pool;

/// Address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `net`.
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Self::V4,
            IpNet::V6(_) => Self::V6,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// Tunables shared by controller and agent. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// How long a released address stays unusable (default 30 s), so a late packet or a
    /// slow-dying pod never meets a new owner of the same address.
    pub cooldown: Duration,
    /// A node needs another block when its free addresses (per family) are fewer than this
    /// percentage of one block (default 25: "less than a quarter of a block free").
    pub low_water_percent: u8,
    /// Most blocks a node may hold per family (default 20).
    pub max_blocks_per_node: usize,
    /// An empty block held this long may be reclaimed when its pool is exhausted (default 5 min).
    pub reclaim_after: Duration,
    /// An allocation whose pod is gone is released after this long (default 5 min; zero
    /// disables garbage collection).
    pub gc_grace: Duration,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(30),
            low_water_percent: 25,
            max_blocks_per_node: 20,
            reclaim_after: Duration::from_secs(300),
            gc_grace: Duration::from_secs(300),
        }
    }
}

/// Whether at least `d` has passed from `since` to `now` (false if `now` is before `since`).
pub(crate) fn elapsed(since: Timestamp, now: Timestamp, d: Duration) -> bool {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    now.duration_since(since) >= d
}
