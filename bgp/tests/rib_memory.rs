//! Bytes per route, measured: a counting global allocator around the system one, a RIB fed
//! like the bgperf benchmark (P peers × M prefixes in UPDATEs of 500 NLRI), and the live heap
//! before and after. The figures go into `docs/architecture.md` ("RIB memory"); the asserts
//! keep them from regressing. One test per binary so nothing else allocates meanwhile.

use std::time::Instant;

use tabby_bgp::rib::PeerType;

mod support;
use support::alloc::{Counting, live};
use support::rib::{cx, injector_updates, rib_with_peers};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Feeds `peers` × `per_peer` routes; `overlap` = every peer announces the same prefixes with
/// its own AS path (the best-path mode of the benchmark). Returns (bytes per path, ns per path).
fn measure(peers: u32, per_peer: u32, overlap: bool) -> (f64, f64) {
    let cx = cx();
    let mut rib = rib_with_peers(1, peers, |_| PeerType::Ibgp);
    // Build every UPDATE first so only the RIB's own allocations are counted.
    let updates = injector_updates(peers, per_peer, overlap, 65500);
    let before = live();
    let t = Instant::now();
    for (peer, u) in &updates {
        rib.receive(*peer, u, &cx).unwrap();
        // Drained after every UPDATE, as the session loop does.
        drop(rib.take_changes());
    }
    let elapsed = t.elapsed();
    let after = live();
    let paths = f64::from(peers * per_peer);
    let prefixes = rib.v4().len();
    assert_eq!(
        prefixes as u32,
        if overlap { per_peer } else { peers * per_peer }
    );
    assert_eq!(rib.attr_sets(), peers as usize);
    drop(updates);
    (
        (after - before) as f64 / paths,
        elapsed.as_nanos() as f64 / paths,
    )
}

#[test]
fn bytes_per_route() {
    // Full size (1M paths, ~2 s in the test profile); `TABBY_RIB_MEMORY_PER_PEER` scales it.
    // The per-route figure depends on where the count falls between the hash table's
    // power-of-two sizes (see docs/architecture.md).
    let per_peer = std::env::var("TABBY_RIB_MEMORY_PER_PEER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (unique_b, unique_ns) = measure(10, per_peer, false);
    let (overlap_b, overlap_ns) = measure(10, per_peer, true);
    eprintln!(
        "RIB memory, 10 peers x {per_peer}: unique prefixes {unique_b:.1} B/path ({unique_ns:.0} ns/path), \
         same prefixes from every peer {overlap_b:.1} B/path ({overlap_ns:.0} ns/path)"
    );
    // Budget: BIRD holds 1M routes in ~95 MiB of process memory (~100 B/route all included).
    assert!(unique_b < 80.0, "unique: {unique_b:.1} bytes per path");
    assert!(overlap_b < 80.0, "overlap: {overlap_b:.1} bytes per path");
}
