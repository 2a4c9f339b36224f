//! Property tests: every message and attribute type round-trips through the codec.
//!
//! For each generated message `m` and session context: `decode(encode(m)) == m`, and the
//! encoding is canonical (`encode(decode(b)) == b`). The generators only produce messages that
//! are valid for their context (path ids exactly when ADD-PATH is on, 2-octet ASes on 2-octet
//! sessions, mandatory attributes present), because anything else is an encode error by design
//! — which `encode_rejects_what_it_cannot_represent` checks.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use proptest::prelude::*;
use tabby_bgp::wire::capability::code as cap_code;
use tabby_bgp::wire::*;

fn v4_prefix() -> impl Strategy<Value = Ipv4Prefix> {
    (any::<u32>(), 0..=32u8)
        .prop_map(|(a, l)| Ipv4Prefix::new_masked(Ipv4Addr::from(a), l).unwrap())
}
fn v6_prefix() -> impl Strategy<Value = Ipv6Prefix> {
    (any::<u128>(), 0..=128u8)
        .prop_map(|(a, l)| Ipv6Prefix::new_masked(Ipv6Addr::from(a), l).unwrap())
}
fn path_id(add_path: bool) -> BoxedStrategy<Option<u32>> {
    if add_path {
        any::<u32>().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}
fn v4_nlri(add_path: bool, max: usize) -> impl Strategy<Value = Vec<Ipv4Nlri>> {
    prop::collection::vec(
        (path_id(add_path), v4_prefix()).prop_map(|(path_id, prefix)| Nlri { path_id, prefix }),
        0..max,
    )
}
fn v6_nlri(add_path: bool, max: usize) -> impl Strategy<Value = Vec<Ipv6Nlri>> {
    prop::collection::vec(
        (path_id(add_path), v6_prefix()).prop_map(|(path_id, prefix)| Nlri { path_id, prefix }),
        0..max,
    )
}
fn asn(four: bool) -> BoxedStrategy<Asn> {
    if four {
        any::<u32>().prop_map(Asn).boxed()
    } else {
        (0..=65535u32).prop_map(Asn).boxed()
    }
}
fn seg_kind(confed: bool) -> BoxedStrategy<AsSegmentType> {
    if confed {
        prop_oneof![
            Just(AsSegmentType::Set),
            Just(AsSegmentType::Sequence),
            Just(AsSegmentType::ConfedSequence),
            Just(AsSegmentType::ConfedSet)
        ]
        .boxed()
    } else {
        prop_oneof![Just(AsSegmentType::Set), Just(AsSegmentType::Sequence)].boxed()
    }
}
fn as_path(four: bool, confed: bool) -> impl Strategy<Value = AsPath> {
    prop::collection::vec(
        (seg_kind(confed), prop::collection::vec(asn(four), 1..12))
            .prop_map(|(kind, asns)| AsSegment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}
fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}
fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    ipv4().prop_filter("unicast next hop", |a| {
        !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
    })
}
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}
fn opaque_family() -> impl Strategy<Value = (Afi, Safi)> {
    prop_oneof![
        Just((Afi::IPV4, Safi::MPLS_VPN)),
        Just((Afi::IPV6, Safi::FLOWSPEC)),
        Just((Afi::L2VPN, Safi::EVPN)),
        Just((Afi::IPV4, Safi::MULTICAST)),
        any::<u16>()
            .prop_filter("not ipv4/ipv6", |a| *a > 2)
            .prop_map(|a| (Afi(a), Safi::UNICAST)),
    ]
}
fn mp_next_hop_v6() -> impl Strategy<Value = MpNextHop> {
    (ipv6(), prop::option::of(ipv6()))
        .prop_map(|(global, link_local)| MpNextHop::Ipv6 { global, link_local })
}
fn mp_reach(cx: &DecodeContext) -> BoxedStrategy<MpReach> {
    let ap4 = cx.add_path(Family::IPV4_UNICAST);
    let ap6 = cx.add_path(Family::IPV6_UNICAST);
    prop_oneof![
        (
            prop_oneof![ipv4().prop_map(MpNextHop::Ipv4), mp_next_hop_v6()],
            v4_nlri(ap4, 20)
        )
            .prop_map(|(next_hop, n)| MpReach {
                next_hop,
                nlri: MpNlri::Ipv4Unicast(n)
            }),
        (mp_next_hop_v6(), v6_nlri(ap6, 20)).prop_map(|(next_hop, n)| MpReach {
            next_hop,
            nlri: MpNlri::Ipv6Unicast(n)
        }),
        (opaque_family(), bytes(40), bytes(40)).prop_map(|((afi, safi), nh, nlri)| MpReach {
            next_hop: MpNextHop::Opaque(nh),
            nlri: MpNlri::Other { afi, safi, nlri }
        }),
    ]
    .boxed()
}
fn mp_unreach(cx: &DecodeContext) -> BoxedStrategy<MpUnreach> {
    let ap4 = cx.add_path(Family::IPV4_UNICAST);
    let ap6 = cx.add_path(Family::IPV6_UNICAST);
    prop_oneof![
        v4_nlri(ap4, 20).prop_map(|n| MpUnreach {
            withdrawn: MpNlri::Ipv4Unicast(n)
        }),
        v6_nlri(ap6, 20).prop_map(|n| MpUnreach {
            withdrawn: MpNlri::Ipv6Unicast(n)
        }),
        (opaque_family(), bytes(40)).prop_map(|((afi, safi), nlri)| MpUnreach {
            withdrawn: MpNlri::Other { afi, safi, nlri }
        }),
    ]
    .boxed()
}

const KNOWN_ATTRS: [u8; 17] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32, 35];

/// Every attribute type except the three mandatory ones, valid for `cx`.
fn other_attribute(cx: &DecodeContext) -> BoxedStrategy<AttributeValue> {
    let four = cx.four_octet_as;
    prop_oneof![
        any::<u32>().prop_map(AttributeValue::MultiExitDisc),
        any::<u32>().prop_map(AttributeValue::LocalPref),
        Just(AttributeValue::AtomicAggregate),
        (asn(four), ipv4())
            .prop_map(|(asn, address)| AttributeValue::Aggregator(Aggregator { asn, address })),
        prop::collection::vec(any::<u32>().prop_map(Community), 1..10)
            .prop_map(AttributeValue::Communities),
        ipv4().prop_map(AttributeValue::OriginatorId),
        prop::collection::vec(ipv4(), 1..5).prop_map(AttributeValue::ClusterList),
        mp_reach(cx).prop_map(AttributeValue::MpReachNlri),
        mp_unreach(cx).prop_map(AttributeValue::MpUnreachNlri),
        prop::collection::vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 1..6)
            .prop_map(AttributeValue::ExtendedCommunities),
        as_path(true, false).prop_map(AttributeValue::As4Path),
        (any::<u32>().prop_map(Asn), ipv4())
            .prop_map(|(asn, address)| AttributeValue::As4Aggregator(Aggregator { asn, address })),
        prop::collection::vec(
            any::<(u32, u32, u32)>().prop_map(|(global, local1, local2)| LargeCommunity {
                global,
                local1,
                local2
            }),
            1..6
        )
        .prop_map(AttributeValue::LargeCommunity),
        any::<u32>().prop_map(|a| AttributeValue::Otc(Asn(a))),
        (
            any::<u8>().prop_filter("unknown type", |t| !KNOWN_ATTRS.contains(t)),
            any::<bool>(),
            bytes(300)
        )
            .prop_map(|(type_code, transitive, value)| AttributeValue::Unknown {
                type_code,
                optional: true,
                transitive,
                value
            }),
    ]
    .boxed()
}

fn attribute(value: BoxedStrategy<AttributeValue>) -> impl Strategy<Value = Attribute> {
    (value, any::<bool>(), any::<bool>()).prop_map(|(value, partial, force_extended_length)| {
        Attribute {
            value,
            partial,
            force_extended_length,
        }
    })
}

fn update(cx: &DecodeContext) -> impl Strategy<Value = Update> + use<> {
    let ap = cx.add_path(Family::IPV4_UNICAST);
    let mandatory = (
        attribute(
            prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ]
            .prop_map(AttributeValue::Origin)
            .boxed(),
        ),
        attribute(
            as_path(cx.four_octet_as, true)
                .prop_map(AttributeValue::AsPath)
                .boxed(),
        ),
        attribute(unicast_v4().prop_map(AttributeValue::NextHop).boxed()),
    );
    let others = prop::collection::vec(attribute(other_attribute(cx)), 0..6);
    (
        v4_nlri(ap, 30),
        mandatory,
        others,
        v4_nlri(ap, 30),
        any::<bool>(),
    )
        .prop_flat_map(|(withdrawn, (o, p, n), others, nlri, with_attrs)| {
            let mut attrs = Vec::new();
            if with_attrs || !nlri.is_empty() || !others.is_empty() {
                attrs.extend([o, p, n]);
            }
            // RFC 7606 §3(g): each type at most once.
            let mut seen = BTreeSet::new();
            attrs.retain(|a: &Attribute| seen.insert(a.type_code()));
            for a in others {
                if seen.insert(a.type_code()) {
                    attrs.push(a);
                }
            }
            (Just(withdrawn), Just(attrs).prop_shuffle(), Just(nlri))
        })
        .prop_map(|(withdrawn, attributes, nlri)| Update {
            withdrawn,
            attributes,
            nlri,
            ..Default::default()
        })
}

fn family() -> impl Strategy<Value = (Afi, Safi)> {
    (any::<u16>(), any::<u8>()).prop_map(|(a, s)| (Afi(a), Safi(s)))
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        family().prop_map(|(afi, safi)| Capability::Multiprotocol(Family::new(afi, safi))),
        Just(Capability::RouteRefresh),
        prop::collection::vec(
            (family(), any::<u16>()).prop_map(|((nlri_afi, nlri_safi), nh)| ExtendedNextHopEntry {
                nlri_afi,
                nlri_safi,
                next_hop_afi: Afi(nh)
            }),
            1..4
        )
        .prop_map(Capability::ExtendedNextHop),
        Just(Capability::ExtendedMessage),
        any::<u8>().prop_map(|r| Capability::Role(BgpRole(r))),
        (
            any::<bool>(),
            any::<bool>(),
            0..4u8,
            0..4096u16,
            prop::collection::vec(
                (family(), any::<bool>(), 0..128u8).prop_map(
                    |((afi, safi), forwarding_state, reserved_flags)| GracefulRestartFamily {
                        afi,
                        safi,
                        forwarding_state,
                        reserved_flags
                    }
                ),
                0..4
            )
        )
            .prop_map(
                |(restart_state, notification, reserved_flags, restart_time, families)| {
                    Capability::GracefulRestart(GracefulRestart {
                        restart_state,
                        notification,
                        reserved_flags,
                        restart_time,
                        families,
                    })
                }
            ),
        (1..=u32::MAX).prop_map(|a| Capability::FourOctetAs(Asn(a))),
        prop::collection::vec(
            (family(), any::<u8>()).prop_map(|((afi, safi), m)| AddPathEntry {
                afi,
                safi,
                mode: AddPathMode(m)
            }),
            1..4
        )
        .prop_map(Capability::AddPath),
        Just(Capability::EnhancedRouteRefresh),
        prop::collection::vec(
            (family(), any::<u8>(), 0..=0xff_ffffu32).prop_map(
                |((afi, safi), flags, stale_time)| LlgrFamily {
                    afi,
                    safi,
                    flags,
                    stale_time
                }
            ),
            0..4
        )
        .prop_map(Capability::LongLivedGracefulRestart),
        ("[a-z0-9.-]{0,30}", "[a-z0-9.-]{0,30}")
            .prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (
            any::<u8>().prop_filter("unknown code", |c| !cap_code::KNOWN.contains(c)),
            bytes(20)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1..=u16::MAX,
        prop_oneof![Just(0u16), 3..=u16::MAX],
        (1..=u32::MAX).prop_map(Ipv4Addr::from),
        prop::collection::vec(
            prop::collection::vec(capability(), 0..6)
                .prop_map(|capabilities| OptionalParameter { capabilities }),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(my_as, hold_time, bgp_id, params, force_extended_params)| Open {
                my_as,
                hold_time,
                bgp_id,
                params,
                force_extended_params,
            },
        )
}

fn route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (family(), any::<u8>(), bytes(20)).prop_map(|((afi, safi), sub, orf)| {
        let subtype = RouteRefreshSubtype::from_u8(sub);
        // RFC 7313 §5: BoRR/EoRR bodies are exactly 4 octets; others may carry more.
        let orf = match subtype {
            RouteRefreshSubtype::BeginOfRouteRefresh | RouteRefreshSubtype::EndOfRouteRefresh => {
                Vec::new()
            }
            _ => orf,
        };
        RouteRefresh {
            afi,
            safi,
            subtype,
            orf,
        }
    })
}

fn context() -> impl Strategy<Value = DecodeContext> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(four_octet_as, extended_message, v4, v6)| {
            let mut add_path_rx = BTreeSet::new();
            if v4 {
                add_path_rx.insert(Family::IPV4_UNICAST);
            }
            if v6 {
                add_path_rx.insert(Family::IPV6_UNICAST);
            }
            DecodeContext {
                four_octet_as,
                extended_message,
                add_path_rx,
                ibgp: true,
                peer_as: None,
            }
        },
    )
}

fn message(cx: &DecodeContext) -> BoxedStrategy<Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(cx).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), bytes(60))
            .prop_map(|(c, s, d)| Message::Notification(Notification::new(c, s, d))),
        Just(Message::Keepalive),
        route_refresh().prop_map(Message::RouteRefresh),
    ]
    .boxed()
}

/// `force_extended_length` is meaningless on a value longer than 255 octets (the bit is always
/// set) and decodes as false there; clear it on such attributes before comparing.
fn normalize(m: &Message, cx: &DecodeContext) -> Message {
    let mut m = m.clone();
    if let Message::Update(u) = &mut m {
        for a in &mut u.attributes {
            let plain = Attribute {
                force_extended_length: false,
                ..a.clone()
            };
            let alone = Message::Update(Update {
                attributes: vec![plain],
                ..Default::default()
            });
            let mut cx_big = cx.clone();
            cx_big.extended_message = true;
            if let Ok(b) = alone.to_bytes(&cx_big)
                && b[19 + 4] & 0x10 != 0
            {
                a.force_extended_length = false;
            }
        }
    }
    // Likewise an OPEN whose parameters need the RFC 9072 extended form anyway: "forced" is
    // then not something the wire can carry, and the decoder reports it as not forced.
    if let Message::Open(o) = &mut m
        && o.force_extended_params
    {
        let plain = Message::Open(Open {
            force_extended_params: false,
            ..o.clone()
        });
        let mut cx_big = cx.clone();
        cx_big.extended_message = true;
        // Header (19), version, my AS, hold time, BGP id (9): then the parameters' length,
        // 255 followed by type 255 in the extended form.
        if let Ok(b) = plain.to_bytes(&cx_big)
            && b.get(28..30) == Some(&[255, 255][..])
        {
            o.force_extended_params = false;
        }
    }
    m
}

/// Encodes, decodes, re-encodes; returns false when the message is too long for the context.
fn round_trip(m: &Message, cx: &DecodeContext) -> Result<bool, TestCaseError> {
    let m = &normalize(m, cx);
    let mut out = BytesMut::new();
    match m.encode(cx, &mut out) {
        Ok(()) => {}
        Err(EncodeError::MessageTooLong { .. }) => return Ok(false),
        Err(e) => return Err(TestCaseError::fail(format!("encode failed: {e} for {m:?}"))),
    }
    let back = decode_message(&out, cx)
        .map_err(|e| TestCaseError::fail(format!("decode failed: {e}\n{}", hex::encode(&out))))?;
    prop_assert_eq!(&back, m);
    let mut again = BytesMut::new();
    back.encode(cx, &mut again).unwrap();
    prop_assert_eq!(again, out);
    // The JSON form always renders.
    serde_json::to_string(&back).unwrap();
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips((cx, m) in context().prop_flat_map(|cx| (Just(cx.clone()), message(&cx)))) {
        round_trip(&m, &cx)?;
    }

    #[test]
    fn every_update_round_trips((cx, u) in context().prop_flat_map(|cx| (Just(cx.clone()), update(&cx)))) {
        round_trip(&Message::Update(u), &cx)?;
    }

    #[test]
    fn every_attribute_type_round_trips_alone(
        (cx, a) in context().prop_flat_map(|cx| (Just(cx.clone()), attribute(other_attribute(&cx))))
    ) {
        // ORIGIN and AS_PATH too: an MP_REACH_NLRI that announces routes needs them (RFC 4760 §3).
        let attributes = vec![AttributeValue::Origin(Origin::Igp).into(), AttributeValue::AsPath(AsPath::default()).into(), a];
        let u = Update { attributes, ..Default::default() };
        round_trip(&Message::Update(u), &cx)?;
    }

    #[test]
    fn every_capability_round_trips(c in capability(), force in any::<bool>()) {
        let open = Open {
            my_as: 65001,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            params: vec![OptionalParameter { capabilities: vec![c] }],
            force_extended_params: force,
        };
        prop_assert!(round_trip(&Message::Open(open), &DecodeContext::default())?);
    }

    #[test]
    fn prefixes_parse_their_display(p in v4_prefix(), q in v6_prefix()) {
        prop_assert_eq!(p.to_string().parse::<Ipv4Prefix>().unwrap(), p);
        prop_assert_eq!(q.to_string().parse::<Ipv6Prefix>().unwrap(), q);
    }

    #[test]
    fn framer_reassembles_any_chunking(
        (cx, msgs) in context().prop_flat_map(|cx| (Just(cx.clone()), prop::collection::vec(message(&cx), 1..6))),
        chunk in 1..700usize,
    ) {
        let mut stream = BytesMut::new();
        let mut frames = Vec::new();
        for m in &msgs {
            let start = stream.len();
            if m.encode(&cx, &mut stream).is_ok() {
                frames.push(stream[start..].to_vec());
            }
        }
        let mut framer = Framer::new(cx.max_message_len());
        let mut got = Vec::new();
        for part in stream.chunks(chunk) {
            framer.extend(part);
            while let Some(f) = framer.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(framer.buffered(), 0);
    }
}

#[test]
fn encode_rejects_what_it_cannot_represent() {
    let cx2 = DecodeContext::default();
    let big_as = Update {
        attributes: vec![AttributeValue::AsPath(AsPath::sequence([70000])).into()],
        ..Default::default()
    };
    assert_eq!(
        Message::Update(big_as).to_bytes(&cx2).unwrap_err(),
        EncodeError::AsnNotTwoOctet(70000)
    );
    let with_id = Update {
        nlri: vec![Nlri::with_path_id("10.0.0.0/8".parse().unwrap(), 1)],
        ..Default::default()
    };
    assert!(matches!(
        Message::Update(with_id).to_bytes(&cx2),
        Err(EncodeError::PathId { .. })
    ));
    let long_seg = Update {
        attributes: vec![AttributeValue::AsPath(AsPath::sequence(0..300)).into()],
        ..Default::default()
    };
    assert_eq!(
        Message::Update(long_seg).to_bytes(&cx2).unwrap_err(),
        EncodeError::SegmentTooLong(300)
    );
    let opaque_known = Update {
        attributes: vec![
            AttributeValue::Unknown {
                type_code: 1,
                optional: true,
                transitive: true,
                value: vec![0],
            }
            .into(),
        ],
        ..Default::default()
    };
    assert!(Message::Update(opaque_known).to_bytes(&cx2).is_err());
    // Too long for a 4096-octet session; fine for an extended one.
    let many: Vec<Ipv4Nlri> = (0..2000u32)
        .map(|i| Nlri::new(Ipv4Prefix::new_masked(Ipv4Addr::from(i << 8), 24).unwrap()))
        .collect();
    let u = Message::Update(Update {
        withdrawn: many,
        ..Default::default()
    });
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(matches!(
        u.encode(&cx2, &mut out),
        Err(EncodeError::MessageTooLong { .. })
    ));
    assert_eq!(
        &out[..],
        b"keep",
        "a failed encode leaves the buffer as it was"
    );
    let ext = DecodeContext {
        extended_message: true,
        ..Default::default()
    };
    assert_eq!(u.to_bytes(&ext).unwrap().len(), 19 + 4 + 2000 * 4);
}

#[test]
fn partial_bit_is_set_when_propagating_unknown_transitive_attributes() {
    let unknown = |transitive| {
        Attribute::new(AttributeValue::Unknown {
            type_code: 99,
            optional: true,
            transitive,
            value: vec![1],
        })
    };
    let mut u = Update {
        attributes: vec![
            AttributeValue::Origin(Origin::Igp).into(),
            unknown(true),
            unknown(false),
            AttributeValue::Communities(vec![Community::new(65000, 100)]).into(),
        ],
        ..Default::default()
    };
    u.prepare_for_propagation();
    assert_eq!(
        u.attributes.len(),
        3,
        "unknown non-transitive attribute dropped"
    );
    assert!(
        u.attributes[1].partial,
        "unknown optional transitive gets Partial"
    );
    assert!(
        !u.attributes[0].partial && !u.attributes[2].partial,
        "known attributes untouched"
    );
    let bytes = Message::Update(u)
        .to_bytes(&DecodeContext::default())
        .unwrap();
    // ORIGIN (4 octets) then the unknown attribute: flags 0xe0 = optional|transitive|partial.
    assert_eq!(bytes[19 + 4 + 4], 0xe0);
}

#[test]
fn negotiate_is_directional_for_add_path() {
    let caps = |mode: u8, four: bool| {
        let mut c = vec![Capability::AddPath(vec![AddPathEntry {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            mode: AddPathMode(mode),
        }])];
        if four {
            c.push(Capability::FourOctetAs(Asn(65001)));
        }
        c.push(Capability::ExtendedMessage);
        c
    };
    let sender = Open::new(Asn(65001), 90, Ipv4Addr::new(1, 1, 1, 1), caps(2, true));
    let receiver = Open::new(Asn(65002), 90, Ipv4Addr::new(2, 2, 2, 2), caps(1, false));
    let cx = DecodeContext::negotiate(&sender, &receiver);
    assert!(cx.add_path(Family::IPV4_UNICAST));
    assert!(!cx.four_octet_as, "4-octet AS needs both sides");
    assert!(cx.extended_message);
    assert!(!cx.ibgp);
    assert_eq!(cx.peer_as, Some(Asn(65001)));
    let back = DecodeContext::negotiate(&receiver, &sender);
    assert!(
        !back.add_path(Family::IPV4_UNICAST),
        "receiver did not offer Send"
    );
}

#[test]
fn json_is_readable() {
    let u = Update {
        attributes: vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath {
                segments: vec![
                    AsSegment {
                        kind: AsSegmentType::Sequence,
                        asns: vec![Asn(65001), Asn(65002)],
                    },
                    AsSegment {
                        kind: AsSegmentType::Set,
                        asns: vec![Asn(1), Asn(2)],
                    },
                ],
            })
            .into(),
            AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into(),
            AttributeValue::Communities(vec![Community::new(65000, 100)]).into(),
            AttributeValue::LargeCommunity(vec![LargeCommunity {
                global: 1,
                local1: 2,
                local2: 3,
            }])
            .into(),
            AttributeValue::ExtendedCommunities(vec![ExtendedCommunity([
                0, 2, 0xfd, 0xe8, 0, 0, 0, 100,
            ])])
            .into(),
        ],
        nlri: vec![
            Nlri::new("10.0.0.0/24".parse().unwrap()),
            Nlri::with_path_id("10.0.1.0/24".parse().unwrap(), 7),
        ],
        ..Default::default()
    };
    let j = serde_json::to_value(Message::Update(u)).unwrap();
    assert_eq!(
        j,
        serde_json::json!({
            "type": "UPDATE",
            "attributes": [
                {"attribute": "ORIGIN", "value": "igp"},
                {"attribute": "AS_PATH", "value": [{"sequence": [65001, 65002]}, {"set": [1, 2]}]},
                {"attribute": "NEXT_HOP", "value": "192.0.2.1"},
                {"attribute": "COMMUNITIES", "value": ["65000:100"]},
                {"attribute": "LARGE_COMMUNITY", "value": ["1:2:3"]},
                {"attribute": "EXTENDED_COMMUNITIES", "value": ["rt:65000:100"]}
            ],
            "nlri": ["10.0.0.0/24", {"prefix": "10.0.1.0/24", "path_id": 7}]
        })
    );
}

#[test]
fn end_of_rib_markers() {
    for f in [
        Family::IPV4_UNICAST,
        Family::IPV6_UNICAST,
        Family::new(Afi::L2VPN, Safi::EVPN),
    ] {
        let u = Update::end_of_rib(f);
        assert_eq!(u.is_end_of_rib(), Some(f));
        let b = Message::Update(u.clone())
            .to_bytes(&DecodeContext::default())
            .unwrap();
        assert_eq!(
            decode_message(&b, &DecodeContext::default()).unwrap(),
            Message::Update(u)
        );
    }
    assert_eq!(
        Update::end_of_rib(Family::IPV4_UNICAST)
            .to_owned()
            .nlri
            .len(),
        0
    );
}

/// Found by the property above: an OPEN marked "force extended parameters" whose parameters
/// need the extended form anyway decodes as not forced — the same bytes, so the same message.
#[test]
fn forced_extended_params_that_are_needed_anyway_round_trip() {
    let fqdn = |i: usize| Capability::Fqdn {
        hostname: format!("host-{i}-{}", "a".repeat(50)),
        domain: format!("example-{i}-{}", "b".repeat(50)),
    };
    let m = Message::Open(Open {
        my_as: 1,
        hold_time: 0,
        bgp_id: Ipv4Addr::new(0, 0, 0, 1),
        params: vec![OptionalParameter {
            capabilities: (0..3).map(fqdn).collect(),
        }],
        force_extended_params: true,
    });
    assert!(round_trip(&m, &DecodeContext::default()).unwrap());
}
