//! RIB benchmarks: inserting 10 peers × 100k routes (unique prefixes, the bgperf "unique" mode),
//! the same with every peer announcing the same prefixes (best-path work), best-path churn
//! (every peer re-announcing with a new path), and exporting a full table through an update
//! group into packed UPDATEs. `cargo bench -p tabby-bgp --bench rib`; figures per route are
//! in `docs/benchmarks.md` ("RIB").

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tabby_bgp::rib::out::{GroupKey, UpdateGroups};
use tabby_bgp::rib::rules::ExportTarget;
use tabby_bgp::rib::{NextHopMode, PeerId, PeerInfo, PeerType, Rib, RibConfig};
use tabby_bgp::wire::{
    AsPath, Asn, AttributeValue, DecodeContext, Ipv4Nlri, Ipv4Prefix, Origin, Update,
};

const PEERS: u32 = 10;
const PER_PEER: u32 = 100_000;

fn cx() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    }
}

fn rib(max_paths: usize) -> Rib {
    let mut cfg = RibConfig::new(Asn(64512), Ipv4Addr::new(10, 255, 0, 1));
    cfg.best_path.max_paths = max_paths;
    let mut r = Rib::new(cfg);
    for id in 1..=PEERS {
        r.add_peer(
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
    r
}

/// UPDATEs of 500 NLRI each, as an injector sends them.
fn updates(overlap: bool, path_tail: u32) -> Vec<(PeerId, Update)> {
    let mut out = Vec::new();
    for id in 1..=PEERS {
        let base = if overlap { 0 } else { (id - 1) * PER_PEER };
        let attributes = vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([65000 + id, path_tail])).into(),
            AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, id as u8)).into(),
            AttributeValue::LocalPref(100).into(),
        ];
        let mut start = 0;
        while start < PER_PEER {
            let end = (start + 500).min(PER_PEER);
            let nlri = (start..end)
                .map(|i| {
                    let a = (16u32 << 24) + ((base + i) << 8);
                    Ipv4Nlri::new(Ipv4Prefix::new(Ipv4Addr::from(a), 24).unwrap())
                })
                .collect();
            out.push((
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
    out
}

fn feed(r: &mut Rib, ups: &[(PeerId, Update)]) {
    let cx = cx();
    for (p, u) in ups {
        r.receive(*p, u, &cx).unwrap();
        black_box(r.take_changes());
    }
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
                let key = GroupKey {
                    target: ExportTarget {
                        peer_type: PeerType::RrClient,
                        peer_asn: Asn(64512),
                        next_hop_mode: NextHopMode::SelfAddr,
                    },
                    export_policy: None,
                    four_octet_as: true,
                    extended_message: false,
                    extended_next_hop: false,
                    ipv4: true,
                    ipv6: false,
                    local_v4: Some(Ipv4Addr::new(192, 0, 2, 100)),
                    local_v6: None,
                    add_path_v4: false,
                    add_path_v6: false,
                };
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
