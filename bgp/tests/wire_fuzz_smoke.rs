//! Deterministic smoke run of the fuzz target bodies (`bgp/fuzz`): a few thousand mutations of
//! valid messages through `fuzzing::decode_any` and `fuzzing::frame_any`. These functions
//! assert the codec's properties themselves (no panic, round-trip, canonical re-encoding,
//! chunking-independent framing); this test only drives them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tabby_bgp::wire::fuzzing::{decode_any, frame_any};
use tabby_bgp::wire::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<(DecodeContext, Vec<u8>)> {
    let four = DecodeContext {
        four_octet_as: true,
        ibgp: true,
        ..Default::default()
    };
    let two = DecodeContext {
        ibgp: true,
        ..Default::default()
    };
    let ap = DecodeContext {
        four_octet_as: true,
        ibgp: true,
        add_path_rx: BTreeSet::from([Family::IPV4_UNICAST, Family::IPV6_UNICAST]),
        ..Default::default()
    };
    let p4 = |s: &str| Nlri::new(s.parse::<Ipv4Prefix>().unwrap());
    let p6 = |s: &str| Nlri::new(s.parse::<Ipv6Prefix>().unwrap());
    let base = |asns: Vec<u32>| -> Vec<Attribute> {
        vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath {
                segments: vec![
                    AsSegment {
                        kind: AsSegmentType::Sequence,
                        asns: asns.into_iter().map(Asn).collect(),
                    },
                    AsSegment {
                        kind: AsSegmentType::Set,
                        asns: vec![Asn(64512), Asn(64513)],
                    },
                ],
            })
            .into(),
        ]
    };
    let mut v4 = base(vec![65001, 4_200_000_001]);
    v4.extend([
        AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into(),
        AttributeValue::MultiExitDisc(10).into(),
        AttributeValue::LocalPref(100).into(),
        AttributeValue::AtomicAggregate.into(),
        AttributeValue::Aggregator(Aggregator {
            asn: Asn(65001),
            address: Ipv4Addr::new(192, 0, 2, 9),
        })
        .into(),
        AttributeValue::Communities(vec![Community::new(65000, 100), Community::NO_EXPORT]).into(),
        AttributeValue::OriginatorId(Ipv4Addr::new(10, 0, 0, 1)).into(),
        AttributeValue::ClusterList(vec![Ipv4Addr::new(10, 0, 0, 2)]).into(),
        AttributeValue::ExtendedCommunities(vec![ExtendedCommunity([
            0, 2, 0xfd, 0xe8, 0, 0, 0, 1,
        ])])
        .into(),
        AttributeValue::LargeCommunity(vec![LargeCommunity {
            global: 1,
            local1: 2,
            local2: 3,
        }])
        .into(),
        AttributeValue::Otc(Asn(65001)).into(),
        Attribute {
            value: AttributeValue::Unknown {
                type_code: 99,
                optional: true,
                transitive: true,
                value: vec![1, 2, 3],
            },
            partial: true,
            force_extended_length: true,
        },
    ]);
    let v4_update = Update {
        withdrawn: vec![p4("10.9.0.0/16")],
        attributes: v4,
        nlri: vec![
            p4("10.0.0.0/24"),
            p4("10.0.1.0/24"),
            p4("0.0.0.0/0"),
            p4("192.0.2.7/32"),
        ],
        ..Default::default()
    };
    let mut v2 = base(vec![65001]);
    v2.extend([
        AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into(),
        AttributeValue::As4Path(AsPath::sequence([4_200_000_001])).into(),
        AttributeValue::As4Aggregator(Aggregator {
            asn: Asn(4_200_000_001),
            address: Ipv4Addr::new(1, 2, 3, 4),
        })
        .into(),
    ]);
    let v2_update = Update {
        attributes: v2,
        nlri: vec![p4("10.0.0.0/8")],
        ..Default::default()
    };
    let mut v6 = base(vec![65001]);
    v6.push(
        AttributeValue::MpReachNlri(MpReach {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            },
            nlri: MpNlri::Ipv6Unicast(vec![
                p6("2001:db8:1::/48"),
                p6("::/0"),
                p6("2001:db8::1/128"),
            ]),
        })
        .into(),
    );
    v6.push(
        AttributeValue::MpUnreachNlri(MpUnreach {
            withdrawn: MpNlri::Ipv6Unicast(vec![p6("2001:db8:2::/48")]),
        })
        .into(),
    );
    let v6_update = Update {
        attributes: v6,
        ..Default::default()
    };
    let mut ext_nh = base(vec![65001]);
    ext_nh.push(
        AttributeValue::MpReachNlri(MpReach {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: MpNlri::Ipv4Unicast(vec![p4("10.1.0.0/16")]),
        })
        .into(),
    );
    let ext_nh_update = Update {
        attributes: ext_nh,
        ..Default::default()
    };
    let ap_update = Update {
        attributes: v4_update.attributes[..3].to_vec(),
        nlri: vec![
            Nlri::with_path_id("10.0.0.0/24".parse().unwrap(), 1),
            Nlri::with_path_id("10.0.0.0/24".parse().unwrap(), 2),
        ],
        withdrawn: vec![Nlri::with_path_id("10.0.9.0/24".parse().unwrap(), 3)],
        ..Default::default()
    };
    let open = Open {
        my_as: 23456,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        params: vec![
            OptionalParameter {
                capabilities: vec![
                    Capability::Multiprotocol(Family::IPV4_UNICAST),
                    Capability::Multiprotocol(Family::IPV6_UNICAST),
                    Capability::RouteRefresh,
                    Capability::EnhancedRouteRefresh,
                    Capability::ExtendedMessage,
                    Capability::FourOctetAs(Asn(4_200_000_001)),
                    Capability::Role(BgpRole::PEER),
                ],
            },
            OptionalParameter {
                capabilities: vec![
                    Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
                        nlri_afi: Afi::IPV4,
                        nlri_safi: Safi::UNICAST,
                        next_hop_afi: Afi::IPV6,
                    }]),
                    Capability::GracefulRestart(GracefulRestart {
                        restart_state: true,
                        notification: true,
                        reserved_flags: 0,
                        restart_time: 120,
                        families: vec![GracefulRestartFamily {
                            afi: Afi::IPV4,
                            safi: Safi::UNICAST,
                            forwarding_state: true,
                            reserved_flags: 0,
                        }],
                    }),
                    Capability::AddPath(vec![AddPathEntry {
                        afi: Afi::IPV4,
                        safi: Safi::UNICAST,
                        mode: AddPathMode::BOTH,
                    }]),
                    Capability::LongLivedGracefulRestart(vec![LlgrFamily {
                        afi: Afi::IPV6,
                        safi: Safi::UNICAST,
                        flags: 0x80,
                        stale_time: 3600,
                    }]),
                    Capability::Fqdn {
                        hostname: "node-1".into(),
                        domain: "cluster.local".into(),
                    },
                    Capability::Unknown {
                        code: 128,
                        value: vec![],
                    },
                ],
            },
        ],
        force_extended_params: false,
    };
    let mut ext_open = open.clone();
    ext_open.force_extended_params = true;
    let msgs: Vec<(DecodeContext, Message)> = vec![
        (four.clone(), Message::Update(v4_update)),
        (two.clone(), Message::Update(v2_update)),
        (four.clone(), Message::Update(v6_update)),
        (four.clone(), Message::Update(ext_nh_update)),
        (ap.clone(), Message::Update(ap_update)),
        (
            four.clone(),
            Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)),
        ),
        (four.clone(), Message::Open(open)),
        (four.clone(), Message::Open(ext_open)),
        (four.clone(), Message::Keepalive),
        (
            four.clone(),
            Message::Notification(Notification::new(6, 2, b"\x05maint".to_vec())),
        ),
        (
            four.clone(),
            Message::RouteRefresh(RouteRefresh::new(
                Family::IPV4_UNICAST,
                RouteRefreshSubtype::BeginOfRouteRefresh,
            )),
        ),
        (
            four,
            Message::RouteRefresh(RouteRefresh {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                subtype: RouteRefreshSubtype::Request,
                orf: vec![1, 0, 0],
            }),
        ),
    ];
    msgs.into_iter()
        .map(|(cx, m)| {
            let b = m.to_bytes(&cx).unwrap().to_vec();
            (cx, b)
        })
        .collect()
}

/// The context octet `fuzzing::context_from_byte` maps back to `cx`.
fn context_byte(cx: &DecodeContext) -> u8 {
    u8::from(cx.four_octet_as)
        | u8::from(cx.extended_message) << 1
        | u8::from(cx.ibgp) << 2
        | u8::from(cx.add_path(Family::IPV4_UNICAST)) << 3
        | u8::from(cx.add_path(Family::IPV6_UNICAST)) << 4
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(3) {
        let len = v.len().max(1);
        match rng.below(8) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x40, 0xc0][rng.below(8)];
                }
            }
            2 => v.truncate(rng.below(len)),
            3 => {
                let i = rng.below(len);
                v.insert(i.min(v.len()), rng.next() as u8);
            }
            4 => {
                let i = rng.below(len);
                if i < v.len() {
                    v.remove(i);
                }
            }
            // Keep the header length consistent after a size change, so the body is reached.
            _ => {
                if v.len() >= 19 {
                    let l = (v.len() as u16).to_be_bytes();
                    v[16] = l[0];
                    v[17] = l[1];
                }
                let i = 19 + rng.below(len.saturating_sub(19).max(1));
                if let Some(b) = v.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    // Mostly keep the header's length honest so mutations reach the message bodies.
    if v.len() >= 19 && rng.below(4) != 0 {
        let l = (v.len() as u16).to_be_bytes();
        v[16] = l[0];
        v[17] = l[1];
    }
    v
}

#[test]
fn decode_target_smoke() {
    let seeds = seeds();
    let mut rng = Rng(0x05ee_d0f7_abb1);
    let (mut decoded, mut rejected) = (0, 0);
    // Unmutated seeds must decode cleanly under their own context.
    for (cx, b) in &seeds {
        let mut input = vec![context_byte(cx)];
        input.extend_from_slice(b);
        let m = decode_any(&input).expect("seed decodes");
        if let Message::Update(u) = &m {
            assert!(u.errors.is_empty(), "seed has errors: {:?}", u.errors);
        }
    }
    for round in 0..300 {
        for (cx, b) in &seeds {
            let ctx = if round % 3 == 0 {
                rng.next() as u8
            } else {
                context_byte(cx)
            };
            let mut input = vec![ctx];
            input.extend(mutate(&mut rng, b));
            match decode_any(&input) {
                Some(_) => decoded += 1,
                None => rejected += 1,
            }
        }
    }
    println!("decode smoke: {decoded} decoded, {rejected} rejected");
    assert!(
        decoded > 500 && rejected > 500,
        "corpus must exercise both paths: {decoded}/{rejected}"
    );
}

/// `TABBY_FUZZ_SEEDS=DIR cargo test -p tabby-bgp --test wire_fuzz_smoke` writes the seed
/// messages as starting corpora for `cargo fuzz` (see bgp/fuzz/README.md).
#[test]
fn write_seed_corpus_on_request() {
    let Some(dir) = std::env::var_os("TABBY_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let seeds = seeds();
    let decode_dir = dir.join("decode_message");
    let framer_dir = dir.join("framer");
    std::fs::create_dir_all(&decode_dir).unwrap();
    std::fs::create_dir_all(&framer_dir).unwrap();
    let mut stream = vec![0u8, 200];
    for (i, (cx, b)) in seeds.iter().enumerate() {
        let mut input = vec![context_byte(cx)];
        input.extend_from_slice(b);
        std::fs::write(decode_dir.join(format!("seed-{i:02}")), &input).unwrap();
        stream.extend_from_slice(b);
    }
    std::fs::write(framer_dir.join("seed-stream"), &stream).unwrap();
    eprintln!("wrote {} seeds to {}", seeds.len() + 1, dir.display());
}

#[test]
fn framer_target_smoke() {
    let seeds = seeds();
    let mut rng = Rng(0x00f4_a3e5);
    let mut frames = 0;
    for _ in 0..1500 {
        let mut input = vec![rng.next() as u8, rng.next() as u8];
        for _ in 0..=rng.below(5) {
            let (_, b) = &seeds[rng.below(seeds.len())];
            if rng.below(5) == 0 {
                input.extend(mutate(&mut rng, b));
            } else {
                input.extend_from_slice(b);
            }
        }
        frames += frame_any(&input);
    }
    println!("framer smoke: {frames} frames");
    assert!(frames > 1000);
}
