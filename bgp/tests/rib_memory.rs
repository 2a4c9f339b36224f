//! Bytes per route, measured: a counting global allocator around the system one, a RIB fed
//! like the bgperf benchmark (P peers × M prefixes in UPDATEs of 500 NLRI), and the live heap
//! before and after. The figures go into `docs/architecture.md` ("RIB memory"); the asserts
//! keep them from regressing. One test per binary so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tabby_bgp::rib::{PeerId, PeerInfo, PeerType, Rib, RibConfig};
use tabby_bgp::wire::{
    AsPath, Asn, AttributeValue, DecodeContext, Ipv4Nlri, Ipv4Prefix, Origin, Update,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// adds bookkeeping on an atomic; the allocator contract is System's.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Feeds `peers` × `per_peer` routes; `overlap` = every peer announces the same prefixes with
/// its own AS path (the best-path mode of the benchmark). Returns (bytes per path, ns per path).
fn measure(peers: u32, per_peer: u32, overlap: bool) -> (f64, f64) {
    let cx = DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    };
    let mut rib = Rib::new(RibConfig::new(Asn(64512), Ipv4Addr::new(10, 255, 0, 1)));
    for id in 1..=peers {
        rib.add_peer(
            PeerInfo {
                id: PeerId(id),
                peer_type: PeerType::Ibgp,
                asn: Asn(64512),
                router_id: Ipv4Addr::new(10, 0, 0, id as u8),
                address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id as u8)),
            },
            None,
            None,
        )
        .unwrap();
    }
    // Build every UPDATE first so only the RIB's own allocations are counted.
    let mut updates = Vec::new();
    for id in 1..=peers {
        let base = if overlap { 0 } else { (id - 1) * per_peer };
        let attributes = vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([65000 + id, 65500])).into(),
            AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, id as u8)).into(),
            AttributeValue::LocalPref(100).into(),
        ];
        let mut start = 0;
        while start < per_peer {
            let end = (start + 500).min(per_peer);
            let nlri = (start..end)
                .map(|i| {
                    let n = base + i;
                    // Unique /24s from 16.0.0.0 up.
                    Ipv4Nlri::new(
                        Ipv4Prefix::new(Ipv4Addr::from((16u32 << 24) + (n << 8)), 24).unwrap(),
                    )
                })
                .collect();
            updates.push((
                PeerId(id),
                Update {
                    attributes: attributes.clone(),
                    nlri,
                    ..Update::default()
                },
            ));
            start = end;
        }
    }
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
