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
/// full.
pub fn next_free_block(pool: &Pool, node: &str, existing: &[IpNet]) -> Option<IpNet> {
    let count = pool.block_count();
    let taken = taken_ranges(pool, existing);
    let covered: u128 = taken
        .iter()
        .fold(0u128, |acc, (lo, hi)| acc.saturating_add(hi - lo + 1));
    if covered >= count {
        return None;
    }
    let mut index = start_index(node, count);
    // A free index exists, and each step leaves one taken range behind, so this visits each
    // range at most once (plus one wrap).
    for _ in 0..=taken.len() + 1 {
        let pos = taken.partition_point(|(_, hi)| *hi < index);
        match taken.get(pos) {
            Some((lo, hi)) if *lo <= index => {
                index = if *hi + 1 >= count { 0 } else { *hi + 1 };
            }
            _ => return block_at(pool, index),
        }
    }
    None
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
