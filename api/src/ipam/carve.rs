//! Carving: which block of a pool a node gets next.
//!
//! The starting block is picked from a hash of the node's name (64-bit FNV-1a, fixed by its
//! published constants so every controller version agrees), then the pool is probed linearly,
//! wrapping at the end, for the first block that overlaps no existing block. Nodes therefore
//! spread over the pool, and a node that comes back tends to get its old block again. The probe
//! jumps over whole runs of taken blocks, so its cost grows with the number of existing blocks,
//! not with the pool's size (an IPv6 /48 holds 2^74 /122 blocks). Must not touch the API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::pool::{Pool, nets_overlap};

/// 64-bit FNV-1a of `s` (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Index of the first block probed for `node` in a pool of `block_count` blocks.
pub fn start_index(node: &str, block_count: u128) -> u128 {
    if block_count == 0 {
        return 0;
    }
    u128::from(fnv1a64(node)) % block_count
}

/// The `index`-th block of `pool`, or `None` past the end.
pub fn block_at(pool: &Pool, index: u128) -> Option<IpNet> {
    if index >= pool.block_count() {
        return None;
    }
    let shift = u32::from(pool.cidr.max_prefix_len() - pool.block_prefix);
    let offset = index.checked_shl(shift)?;
    match pool.cidr {
        IpNet::V4(n) => {
            let addr = u32::from(n.network()).checked_add(u32::try_from(offset).ok()?)?;
            Ipv4Net::new(Ipv4Addr::from(addr), pool.block_prefix)
                .ok()
                .map(IpNet::V4)
        }
        IpNet::V6(n) => {
            let addr = u128::from(n.network()).checked_add(offset)?;
            Ipv6Net::new(Ipv6Addr::from(addr), pool.block_prefix)
                .ok()
                .map(IpNet::V6)
        }
    }
}

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Inclusive ranges of block indices of `pool` that `existing` networks cover, sorted and
/// merged.
fn taken_ranges(pool: &Pool, existing: &[IpNet]) -> Vec<(u128, u128)> {
    let shift = u32::from(pool.cidr.max_prefix_len() - pool.block_prefix);
    let base = as_u128(pool.cidr.network());
    let top = as_u128(pool.cidr.broadcast());
    let mut ranges: Vec<(u128, u128)> = existing
        .iter()
        .filter(|e| nets_overlap(e, &pool.cidr))
        .map(|e| {
            let lo = as_u128(e.network()).max(base) - base;
            let hi = as_u128(e.broadcast()).min(top) - base;
            (lo >> shift, hi >> shift)
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// The next free block of `pool` for `node`, given every block that exists (of any pool: a
/// stale block left by a deleted pool still occupies its addresses). `None` when the pool is
/// full. To carve many blocks at once, use a [`Carver`].
pub fn next_free_block(pool: &Pool, node: &str, existing: &[IpNet]) -> Option<IpNet> {
    Carver::new(pool, existing).peek(node)
}

/// Carves many blocks from one pool: the taken ranges are computed once and updated as blocks
/// are taken, so carving for N nodes costs O(N log N), not O(N²).
#[derive(Clone, Debug)]
pub struct Carver<'p> {
    pool: &'p Pool,
    count: u128,
    /// Sorted, merged, inclusive ranges of taken block indices.
    taken: Vec<(u128, u128)>,
    /// Number of indices in `taken`.
    covered: u128,
}

impl<'p> Carver<'p> {
    /// Starts from the blocks that exist now.
    pub fn new(pool: &'p Pool, existing: &[IpNet]) -> Self {
        let taken = taken_ranges(pool, existing);
        let covered = taken
            .iter()
            .fold(0u128, |acc, (lo, hi)| acc.saturating_add(hi - lo + 1));
        Self {
            pool,
            count: pool.block_count(),
            taken,
            covered,
        }
    }

    /// The block `node` would get next, without taking it.
    pub fn peek(&self, node: &str) -> Option<IpNet> {
        self.free_index(node).and_then(|i| block_at(self.pool, i))
    }

    /// The block `node` gets next, marked taken so the next call skips it.
    pub fn take(&mut self, node: &str) -> Option<IpNet> {
        let index = self.free_index(node)?;
        let block = block_at(self.pool, index)?;
        self.mark(index);
        Some(block)
    }

    fn free_index(&self, node: &str) -> Option<u128> {
        if self.covered >= self.count {
            return None;
        }
        let mut index = start_index(node, self.count);
        // A free index exists, and each step leaves one taken range behind, so this visits
        // each range at most once (plus one wrap).
        for _ in 0..=self.taken.len() + 1 {
            let pos = self.taken.partition_point(|(_, hi)| *hi < index);
            match self.taken.get(pos) {
                Some((lo, hi)) if *lo <= index => {
                    index = if *hi + 1 >= self.count { 0 } else { *hi + 1 };
                }
                _ => return Some(index),
            }
        }
        None
    }

    /// Marks a free `index` taken.
    fn mark(&mut self, index: u128) {
        self.covered = self.covered.saturating_add(1);
        let pos = self
            .taken
            .partition_point(|(_, hi)| hi.saturating_add(1) < index);
        match self.taken.get_mut(pos) {
            // Touches or contains the range at `pos`: extend it, then merge with the next.
            Some(r) if r.0 <= index.saturating_add(1) => {
                r.0 = r.0.min(index);
                r.1 = r.1.max(index);
                if let Some(&(next_lo, next_hi)) = self.taken.get(pos + 1)
                    && next_lo <= self.taken[pos].1.saturating_add(1)
                {
                    self.taken[pos].1 = self.taken[pos].1.max(next_hi);
                    self.taken.remove(pos + 1);
                }
            }
            _ => self.taken.insert(pos, (index, index)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn carving_table() {
        let pool = Pool::new("p", net("10.244.0.0/24"), 26); // 4 blocks
        let blocks: Vec<IpNet> = (0..4).map(|i| block_at(&pool, i).unwrap()).collect();
        assert_eq!(blocks[3], net("10.244.0.192/26"));
        assert_eq!(block_at(&pool, 4), None);
        let node = "node-a";
        let start = start_index(node, 4) as usize;
        // (case, existing, expected)
        let cases: Vec<(&str, Vec<IpNet>, Option<IpNet>)> = vec![
            ("empty pool: the hashed start", vec![], Some(blocks[start])),
            (
                "start taken: the next one",
                vec![blocks[start]],
                Some(blocks[(start + 1) % 4]),
            ),
            (
                "wraps around the end",
                vec![
                    blocks[start],
                    blocks[(start + 1) % 4],
                    blocks[(start + 2) % 4],
                ],
                Some(blocks[(start + 3) % 4]),
            ),
            ("full", blocks.clone(), None),
            (
                "a covering stale block fills the pool",
                vec![net("10.0.0.0/8")],
                None,
            ),
            (
                "a smaller stale block takes its whole block",
                vec![
                    net("10.244.0.0/28"),
                    net("10.244.0.64/27"),
                    net("10.244.0.128/32"),
                ],
                Some(blocks[3]),
            ),
            (
                "blocks of other pools are ignored",
                vec![net("10.245.0.0/16"), net("fd00::/122")],
                Some(blocks[start]),
            ),
        ];
        for (case, existing, want) in cases {
            assert_eq!(next_free_block(&pool, node, &existing), want, "{case}");
        }
    }

    #[test]
    fn huge_v6_pool_is_cheap() {
        let pool = Pool::new("v6", net("fd00::/48"), 122);
        assert_eq!(pool.block_count(), 1u128 << 74);
        let mut existing = Vec::new();
        for _ in 0..200 {
            let b = next_free_block(&pool, "same-node", &existing).unwrap();
            assert!(pool.cidr.contains(&b) && b.prefix_len() == 122);
            assert!(!existing.contains(&b));
            existing.push(b);
        }
    }

    #[test]
    fn nodes_spread_over_the_pool() {
        let pool = Pool::new("p", net("10.0.0.0/16"), 26); // 1024 blocks
        let mut existing = Vec::new();
        for i in 0..64 {
            let b = next_free_block(&pool, &format!("node-{i}"), &existing).unwrap();
            existing.push(b);
        }
        // Spread: the blocks are not one contiguous run from the pool's start.
        let first = block_at(&pool, 0).unwrap();
        let in_first_quarter = existing
            .iter()
            .filter(|b| {
                u32::from(match b.network() {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => unreachable!(),
                }) < u32::from(Ipv4Addr::new(10, 0, 64, 0))
            })
            .count();
        assert!(
            in_first_quarter < 40,
            "{in_first_quarter} of 64 in the first quarter"
        );
        assert_ne!(existing[0], first);
    }

    proptest::proptest! {
        #[test]
        fn carver_agrees_with_one_at_a_time(nodes in proptest::collection::vec("[a-z]{1,6}", 1..70), len in 20u8..=27) {
            let pool = Pool::new("p", net("10.0.0.0/18"), len);
            let mut carver = Carver::new(&pool, &[net("10.0.16.0/22")]);
            let mut existing = vec![net("10.0.16.0/22")];
            for n in &nodes {
                let want = next_free_block(&pool, n, &existing);
                proptest::prop_assert_eq!(carver.peek(n), want);
                proptest::prop_assert_eq!(carver.take(n), want);
                existing.extend(want);
                let mut merged = carver.taken.clone();
                merged.dedup();
                proptest::prop_assert!(merged.windows(2).all(|w| w[0].1.saturating_add(1) < w[1].0), "ranges merged and sorted: {:?}", merged);
            }
        }

        #[test]
        fn carved_blocks_never_overlap(nodes in proptest::collection::vec("[a-z]{1,8}", 1..80), len in 20u8..=28) {
            let pool = Pool::new("p", net("10.0.0.0/18"), len);
            let mut existing: Vec<IpNet> = Vec::new();
            for n in &nodes {
                match next_free_block(&pool, n, &existing) {
                    Some(b) => {
                        proptest::prop_assert!(pool.cidr.contains(&b));
                        proptest::prop_assert!(existing.iter().all(|e| !nets_overlap(e, &b)));
                        existing.push(b);
                    }
                    None => proptest::prop_assert_eq!(existing.len() as u128, pool.block_count()),
                }
            }
        }
    }
}
