//! ADD-PATH send memory, measured: a counting global allocator around the system one, a RIB
//! holding 2 paths for each of 100k prefixes, and the live heap before and after an update
//! group with ADD-PATH is made (its sent lists: one entry per advertised path, one list per
//! prefix). A plain group on the same table is measured for contrast: it keeps nothing per
//! prefix. The figures go into `docs/architecture.md` ("RIB memory"). One test per binary so
//! nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use tabby_bgp::rib::out::{GroupKey, UpdateGroups};
use tabby_bgp::rib::rules::ExportTarget;
use tabby_bgp::rib::{NextHopMode, PeerId, PeerInfo, PeerType, Rib, RibConfig};
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

/// A RIB with `paths` iBGP peers each announcing the same `prefixes` /24s.
fn table(paths: u32, prefixes: u32) -> Rib {
    let cx = DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    };
    let mut rib = Rib::new(RibConfig::new(Asn(64512), Ipv4Addr::new(10, 255, 0, 1)));
    for id in 1..=paths {
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
        let attributes = vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([65000 + id, 65500])).into(),
            AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, id as u8)).into(),
            AttributeValue::LocalPref(100).into(),
        ];
        let mut start = 0;
        while start < prefixes {
            let end = (start + 500).min(prefixes);
            let nlri = (start..end)
                .map(|n| {
                    Ipv4Nlri::new(
                        Ipv4Prefix::new(Ipv4Addr::from((16u32 << 24) + (n << 8)), 24).unwrap(),
                    )
                })
                .collect();
            let u = Update {
                attributes: attributes.clone(),
                nlri,
                ..Update::default()
            };
            rib.receive(PeerId(id), &u, &cx).unwrap();
            drop(rib.take_changes());
            start = end;
        }
    }
    rib
}

fn key(add_path: bool) -> GroupKey {
    GroupKey {
        // A route-reflector client: iBGP-learned paths are reflected to it.
        target: ExportTarget {
            peer_type: PeerType::RrClient,
            peer_asn: Asn(64512),
            next_hop_mode: NextHopMode::Auto,
        },
        export_policy: None,
        four_octet_as: true,
        extended_message: false,
        extended_next_hop: false,
        ipv4: true,
        ipv6: false,
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 100)),
        local_v6: None,
        add_path_v4: add_path,
        add_path_v6: false,
    }
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
