//! Known wire vectors, written out by hand from the RFC formats, checked in both directions:
//! the bytes decode to the message, and the message encodes to the bytes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tabby_bgp::wire::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    hex::decode(clean).unwrap()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

fn both_ways(name: &str, cx: &DecodeContext, bytes: &[u8], msg: &Message) {
    let decoded = decode_message(bytes, cx).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&decoded, msg, "{name}: decode");
    assert_eq!(&msg.to_bytes(cx).unwrap()[..], bytes, "{name}: encode");
}

fn four() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ibgp: true,
        ..Default::default()
    }
}

#[test]
fn keepalive() {
    both_ways(
        "keepalive",
        &four(),
        &hex(&format!("{MARKER} 0013 04")),
        &Message::Keepalive,
    );
}

#[test]
fn notification_with_shutdown_communication() {
    let n = Notification::new(6, 2, b"\x03bye".to_vec());
    assert_eq!(n.shutdown_message(), Some("bye"));
    assert_eq!(n.names(), ("Cease", "Administrative Shutdown"));
    both_ways(
        "notification",
        &four(),
        &hex(&format!("{MARKER} 0019 03 06 02 03 627965")),
        &Message::Notification(n),
    );
}

#[test]
fn open_with_capabilities() {
    let bytes = hex(&format!(
        "{MARKER} 002d 01  04 fde9 005a c0000201  10  02 0e  01 04 0001 00 01  02 00  41 04 0000fde9"
    ));
    let open = Open::new(
        Asn(65001),
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(Asn(65001)),
        ],
    );
    both_ways(
        "open",
        &DecodeContext::default(),
        &bytes,
        &Message::Open(open),
    );
}

#[test]
fn open_with_one_capability_per_parameter_keeps_its_layout() {
    let bytes = hex(&format!(
        "{MARKER} 0025 01  04 fde9 005a c0000201  08  02 02 02 00  02 02 46 00"
    ));
    let m = decode_message(&bytes, &DecodeContext::default()).unwrap();
    let Message::Open(o) = &m else { panic!() };
    assert_eq!(o.params.len(), 2);
    assert_eq!(o.capabilities().count(), 2);
    assert_eq!(
        &m.to_bytes(&DecodeContext::default()).unwrap()[..],
        &bytes[..]
    );
}

#[test]
fn open_with_rfc9072_extended_parameters() {
    // Opt Parm Len 255, type 255, extended length 5, then one parameter with a 2-octet length.
    let bytes = hex(&format!(
        "{MARKER} 0025 01  04 fde9 005a c0000201  ff ff 0005  02 0002 02 00"
    ));
    let m = decode_message(&bytes, &DecodeContext::default()).unwrap();
    let Message::Open(o) = &m else { panic!() };
    assert!(o.force_extended_params);
    assert_eq!(
        o.capabilities().collect::<Vec<_>>(),
        vec![&Capability::RouteRefresh]
    );
    assert_eq!(
        &m.to_bytes(&DecodeContext::default()).unwrap()[..],
        &bytes[..]
    );
}

fn base_attrs() -> Vec<Attribute> {
    vec![
        AttributeValue::Origin(Origin::Igp).into(),
        AttributeValue::AsPath(AsPath::sequence([65001])).into(),
    ]
}

#[test]
fn ipv4_update() {
    let bytes = hex(&format!(
        "{MARKER} 002f 02  0000  0014  40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c0000201  18 0a0000"
    ));
    let mut attributes = base_attrs();
    attributes.push(AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into());
    let u = Update {
        attributes,
        nlri: vec![Nlri::new("10.0.0.0/24".parse().unwrap())],
        ..Default::default()
    };
    both_ways("ipv4 update", &four(), &bytes, &Message::Update(u));
}

#[test]
fn two_octet_as_path() {
    let bytes = hex(&format!(
        "{MARKER} 002d 02  0000  0012  40 01 01 02  40 02 04 02 01 fde9  40 03 04 c0000201  18 0a0000"
    ));
    let mut attributes = vec![
        AttributeValue::Origin(Origin::Incomplete).into(),
        AttributeValue::AsPath(AsPath::sequence([65001])).into(),
    ];
    attributes.push(AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into());
    let u = Update {
        attributes,
        nlri: vec![Nlri::new("10.0.0.0/24".parse().unwrap())],
        ..Default::default()
    };
    both_ways(
        "2-octet update",
        &DecodeContext {
            ibgp: true,
            ..Default::default()
        },
        &bytes,
        &Message::Update(u),
    );
}

#[test]
fn add_path_nlri_and_withdrawals() {
    let cx = DecodeContext {
        add_path_rx: BTreeSet::from([Family::IPV4_UNICAST]),
        ..four()
    };
    let bytes = hex(&format!(
        "{MARKER} 0043 02  0008 00000003 18 0a0009  0014  40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c0000201  00000001 18 0a0000  00000002 18 0a0000"
    ));
    let p = |s: &str| s.parse::<Ipv4Prefix>().unwrap();
    let mut attributes = base_attrs();
    attributes.push(AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1)).into());
    let u = Update {
        withdrawn: vec![Nlri::with_path_id(p("10.0.9.0/24"), 3)],
        attributes,
        nlri: vec![
            Nlri::with_path_id(p("10.0.0.0/24"), 1),
            Nlri::with_path_id(p("10.0.0.0/24"), 2),
        ],
        ..Default::default()
    };
    both_ways("add-path", &cx, &bytes, &Message::Update(u));
}

#[test]
fn ipv6_mp_reach_with_link_local() {
    let bytes = hex(&format!(
        "{MARKER} 0053 02 0000 003c  40 01 01 00  40 02 06 02 01 0000fde9
         80 0e 2c 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 30 20010db80001"
    ));
    let mut attributes = base_attrs();
    attributes.push(
        AttributeValue::MpReachNlri(MpReach {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            },
            nlri: MpNlri::Ipv6Unicast(vec![Nlri::new("2001:db8:1::/48".parse().unwrap())]),
        })
        .into(),
    );
    both_ways(
        "ipv6 mp_reach",
        &four(),
        &bytes,
        &Message::Update(Update {
            attributes,
            ..Default::default()
        }),
    );
}

#[test]
fn rfc8950_ipv4_nlri_with_ipv6_next_hop() {
    let bytes = hex(&format!(
        "{MARKER} 0040 02 0000 0029  40 01 01 00  40 02 06 02 01 0000fde9
         80 0e 19 0001 01 10 20010db8000000000000000000000001 00 18 0a0000"
    ));
    let m = decode_message(&bytes, &four()).unwrap();
    let Message::Update(u) = &m else { panic!() };
    let mp = u.mp_reach().unwrap();
    assert_eq!(
        mp.next_hop,
        MpNextHop::Ipv6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None
        }
    );
    assert_eq!(
        mp.nlri,
        MpNlri::Ipv4Unicast(vec![Nlri::new("10.0.0.0/24".parse().unwrap())])
    );
    assert!(u.errors.is_empty());
    assert_eq!(&m.to_bytes(&four()).unwrap()[..], &bytes[..]);
}

#[test]
fn ipv6_end_of_rib_and_enhanced_route_refresh() {
    let eor = hex(&format!("{MARKER} 001d 02 0000 0006 80 0f 03 0002 01"));
    both_ways(
        "v6 EoR",
        &four(),
        &eor,
        &Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)),
    );
    let eorr = hex(&format!("{MARKER} 0017 05 0002 02 01"));
    both_ways(
        "EoRR",
        &four(),
        &eorr,
        &Message::RouteRefresh(RouteRefresh::new(
            Family::IPV6_UNICAST,
            RouteRefreshSubtype::EndOfRouteRefresh,
        )),
    );
}

#[test]
fn extended_length_and_partial_bits_survive_re_encoding() {
    // COMMUNITIES with the Extended Length bit on a 4-octet value, and an unknown optional
    // transitive attribute with Partial set.
    let bytes = hex(&format!(
        "{MARKER} 0031 02 0000 001a  40 01 01 00  40 02 06 02 01 0000fde9  d0 08 0004 fde80064  e0 63 02 0102"
    ));
    let m = decode_message(&bytes, &four()).unwrap();
    let Message::Update(u) = &m else { panic!() };
    assert!(u.attributes[2].force_extended_length);
    assert!(u.attributes[3].partial);
    assert_eq!(&m.to_bytes(&four()).unwrap()[..], &bytes[..]);
}

#[test]
fn nlri_trailing_bits_are_masked_and_re_encoding_is_canonical() {
    let bytes = hex(&format!(
        "{MARKER} 002f 02  0000  0014  40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c0000201  17 0a0001"
    ));
    let m = decode_message(&bytes, &four()).unwrap();
    let Message::Update(u) = &m else { panic!() };
    assert_eq!(u.nlri[0].prefix.to_string(), "10.0.0.0/23");
    let canon = m.to_bytes(&four()).unwrap();
    assert_eq!(canon[canon.len() - 1], 0, "host bit cleared");
}
