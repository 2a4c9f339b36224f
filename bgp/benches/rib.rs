//! RIB benchmarks: inserting 10 peers × 100k routes (unique prefixes, the bgperf "unique" mode),
//! the same with every peer announcing the same prefixes (best-path work), best-path churn
//! (every peer re-announcing with a new path), and exporting a full table through an update
//! group into packed UPDATEs. `cargo bench -p tabby-bgp --bench rib`; figures per route are
//! in `docs/benchmarks.md` ("RIB").

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tabby_bgp::rib::out::UpdateGroups;
use tabby_bgp::rib::{NextHopMode, PeerId, PeerType, Rib};
use tabby_bgp::wire::Update;

#[path = "../tests/support/mod.rs"]
mod support;
use support::rib::{LOCAL_AS, feed, group_key, injector_updates, rib_with_peers};

const PEERS: u32 = 10;
const PER_PEER: u32 = 100_000;

fn rib(max_paths: usize) -> Rib {
    rib_with_peers(max_paths, PEERS, |_| PeerType::Ibgp)
}

/// UPDATEs of 500 NLRI each, as an injector sends them.
fn updates(overlap: bool, path_tail: u32) -> Vec<(PeerId, Update)> {
    injector_updates(PEERS, PER_PEER, overlap, path_tail)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("rib");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(PEERS * PER_PEER)));

    let unique = updates(false, 65500);
    g.bench_function("insert_10x100k_unique", |b| {
        b.iter_batched(
            || rib(1),
            |mut r| feed(&mut r, &unique),
            BatchSize::PerIteration,
        )
    });
    let overlap = updates(true, 65500);
    g.bench_function("insert_10x100k_same_prefixes_ecmp4", |b| {
        b.iter_batched(
            || rib(4),
            |mut r| feed(&mut r, &overlap),
            BatchSize::PerIteration,
        )
    });
    // Churn: every peer re-announces all its routes with a longer path, so every prefix's
    // best path and ECMP set change twice per round.
    let churn = updates(true, 65501);
    g.bench_function("churn_10x100k_same_prefixes", |b| {
        b.iter_batched(
            || {
                let mut r = rib(4);
                feed(&mut r, &overlap);
                r
            },
            |mut r| feed(&mut r, &churn),
            BatchSize::PerIteration,
        )
    });
    // Export: a full unique table through one eBGP update group into packed UPDATEs.
    g.bench_function("export_1m_one_group", |b| {
        b.iter_batched(
            || {
                let mut r = rib(1);
                feed(&mut r, &unique);
                r
            },
            |r| {
                let mut groups = UpdateGroups::new();
                let mut key = group_key(PeerType::RrClient, LOCAL_AS, false);
                key.target.next_hop_mode = NextHopMode::SelfAddr;
                let (_, dump) = groups.join(PeerId(99), key, None, &r).unwrap();
                black_box(dump.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(rib_benches, benches);
criterion_main!(rib_benches);
