//! Codec throughput: decode and encode of full-size UPDATEs, reported per prefix.
//!
//! `cargo bench -p tabby-bgp --bench wire`; results and the machine go in docs/benchmarks.md.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tabby_bgp::wire::*;

fn base_attributes() -> Vec<Attribute> {
    vec![
        AttributeValue::Origin(Origin::Igp).into(),
        AttributeValue::AsPath(AsPath::sequence([65001, 65002])).into(),
    ]
}

/// The largest IPv4 UPDATE that fits 4096 octets: /24s after ORIGIN, AS_PATH, NEXT_HOP.
fn ipv4_update(cx: &DecodeContext) -> (Message, usize) {
    let mut attributes = base_attributes();
    attributes.push(AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into());
    let mut u = Update {
        attributes,
        ..Default::default()
    };
    let mut n = 0u32;
    loop {
        let p = Ipv4Prefix::new_masked(Ipv4Addr::from((10 << 24) | (n << 8)), 24).unwrap();
        u.nlri.push(Nlri::new(p));
        if Message::Update(u.clone()).to_bytes(cx).is_err() {
            u.nlri.pop();
            break;
        }
        n += 1;
    }
    let count = u.nlri.len();
    (Message::Update(u), count)
}

/// The largest MP_REACH_NLRI IPv6 UPDATE of /48s that fits 4096 octets.
fn ipv6_update(cx: &DecodeContext) -> (Message, usize) {
    let build = |n: u32| {
        let nlri = (0..n)
            .map(|i| {
                let a = (0x2001_0db8u128 << 96) | (u128::from(i) << 80);
                Nlri::new(Ipv6Prefix::new_masked(Ipv6Addr::from(a), 48).unwrap())
            })
            .collect();
        let mut attributes = base_attributes();
        attributes.push(
            AttributeValue::MpReachNlri(MpReach {
                next_hop: MpNextHop::Ipv6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: MpNlri::Ipv6Unicast(nlri),
            })
            .into(),
        );
        Message::Update(Update {
            attributes,
            ..Default::default()
        })
    };
    let mut n = 1;
    while build(n + 1).to_bytes(cx).is_ok() {
        n += 1;
    }
    (build(n), n as usize)
}

fn bench(c: &mut Criterion) {
    let cx = DecodeContext {
        four_octet_as: true,
        ..Default::default()
    };
    for (name, (msg, count)) in [
        ("ipv4_24", ipv4_update(&cx)),
        ("ipv6_48_mp_reach", ipv6_update(&cx)),
    ] {
        let bytes = msg.to_bytes(&cx).unwrap();
        assert_eq!(decode_message(&bytes, &cx).unwrap(), msg);
        eprintln!("{name}: {} octets, {count} prefixes", bytes.len());
        let mut g = c.benchmark_group(format!("decode_{name}"));
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("{count}_prefixes"), |b| {
            b.iter(|| decode_message(black_box(&bytes), black_box(&cx)).unwrap())
        });
        g.finish();
        let mut g = c.benchmark_group(format!("encode_{name}"));
        g.throughput(Throughput::Elements(count as u64));
        let mut out = BytesMut::with_capacity(8192);
        g.bench_function(format!("{count}_prefixes"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode(&cx, &mut out).unwrap();
                out.len()
            })
        });
        g.finish();
    }

    // Framing 64 full-size UPDATEs delivered in 1460-octet TCP segments.
    let (msg, _) = ipv4_update(&cx);
    let one = msg.to_bytes(&cx).unwrap();
    let stream: Vec<u8> = (0..64).flat_map(|_| one.iter().copied()).collect();
    let mut g = c.benchmark_group("framer");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("64_updates_1460_octet_segments", |b| {
        b.iter(|| {
            let mut f = Framer::new(4096);
            let mut n = 0;
            for seg in stream.chunks(1460) {
                f.extend(seg);
                while let Some(frame) = f.next_frame().unwrap() {
                    n += frame.len();
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
