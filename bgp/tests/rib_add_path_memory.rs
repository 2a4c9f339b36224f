//! ADD-PATH send memory, measured: a counting global allocator around the system one, a RIB
//! holding 2 paths for each of 100k prefixes, and the live heap before and after an update
//! group with ADD-PATH is made (its sent lists: one entry per advertised path, one list per
//! prefix). A plain group on the same table is measured for contrast: it keeps nothing per
//! prefix. The figures go into `docs/architecture.md` ("RIB memory"). One test per binary so
//! nothing else allocates meanwhile.

use tabby_bgp::rib::out::{GroupKey, UpdateGroups};
use tabby_bgp::rib::{PeerId, PeerType, Rib};

mod support;
use support::alloc::{Counting, live};
use support::rib::{LOCAL_AS, feed, group_key, injector_updates, rib_with_peers};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A RIB with `paths` iBGP peers each announcing the same `prefixes` /24s.
fn table(paths: u32, prefixes: u32) -> Rib {
    let mut rib = rib_with_peers(1, paths, |_| PeerType::Ibgp);
    feed(&mut rib, &injector_updates(paths, prefixes, true, 65500));
    rib
}

/// A route-reflector client: iBGP-learned paths are reflected to it.
fn key(add_path: bool) -> GroupKey {
    group_key(PeerType::RrClient, LOCAL_AS, add_path)
}

/// Heap the group keeps after `peer` joined it (its dump dropped), in bytes.
fn group_cost(groups: &mut UpdateGroups, rib: &Rib, peer: u32, add_path: bool) -> isize {
    let before = live();
    let (_, dump) = groups.join(PeerId(peer), key(add_path), None, rib).unwrap();
    assert!(!dump.is_empty());
    drop(dump);
    live() - before
}

#[test]
fn add_path_sent_lists_cost_per_advertised_path() {
    let prefixes = std::env::var("TABBY_RIB_MEMORY_PER_PEER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000u32);
    let rib = table(2, prefixes);
    let mut groups = UpdateGroups::new();
    let plain = group_cost(&mut groups, &rib, 100, false);
    let add_path = group_cost(&mut groups, &rib, 101, true);
    let counts = groups.advertised_counts(&rib);
    let paths: u32 = counts.iter().map(|(_, n)| *n).max().unwrap();
    assert_eq!(paths, 2 * prefixes, "every path advertised: {counts:?}");
    let per_path = add_path as f64 / f64::from(paths);
    eprintln!(
        "update group on {prefixes} prefixes x 2 paths: plain {plain} B in all, \
         ADD-PATH {add_path} B = {per_path:.1} B per advertised path"
    );
    // Plain: a group costs its queue and cache, whatever the table size.
    assert!(plain < 64 * 1024, "plain group: {plain} bytes");
    // ADD-PATH: 24 octets per sent path + a list per prefix in a hash map.
    assert!(per_path < 64.0, "ADD-PATH: {per_path:.1} bytes per path");
}
