//! Runs the `bgp-decode` binary on synthetic captures and hex dumps: what it prints, what it
//! says on stderr, and its exit status.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use serde_json::Value;
use tabby_bgp::wire::{
    AsPath, AsSegment, AsSegmentType, Asn, Attribute, AttributeValue, Capability, Community,
    DecodeContext, Family, Ipv4Nlri, Message, MpNextHop, MpNlri, MpReach, Open, Origin, Update,
};

const BIN: &str = env!("CARGO_BIN_EXE_bgp-decode");

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn encode(m: &Message, cx: &DecodeContext) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(cx, &mut b).unwrap();
    b.to_vec()
}

fn open(asn: u32, id: u8) -> Message {
    Message::Open(Open::new(
        Asn(asn),
        90,
        Ipv4Addr::new(10, 0, 0, id),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(asn)),
        ],
    ))
}

fn keepalive() -> Vec<u8> {
    encode(&Message::Keepalive, &DecodeContext::default())
}

/// An UPDATE whose AS_PATH only decodes right with 4-octet ASes.
fn update_as4() -> Message {
    Message::Update(Update {
        attributes: vec![
            Attribute::new(AttributeValue::Origin(Origin::Igp)),
            Attribute::new(AttributeValue::AsPath(AsPath {
                segments: vec![AsSegment {
                    kind: AsSegmentType::Sequence,
                    asns: vec![Asn(4_200_000_001), Asn(65010)],
                }],
            })),
            Attribute::new(AttributeValue::NextHop(Ipv4Addr::new(10, 0, 0, 1))),
            Attribute::new(AttributeValue::Communities(vec![Community::new(65000, 7)])),
        ],
        nlri: vec![
            Ipv4Nlri::new("192.0.2.0/24".parse().unwrap()),
            Ipv4Nlri::new("198.51.100.0/25".parse().unwrap()),
        ],
        ..Update::default()
    })
}

fn as4() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    }
}

/// One TCP segment of the 10.0.0.1:40000 <-> 10.0.0.2:179 connection as raw IPv4.
fn tcp(fwd: bool, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let (s, d, sp, dp) = if fwd {
        ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 179)
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1], 179, 40000)
    };
    let mut b = PacketBuilder::ipv4(s, d, 64).tcp(sp, dp, seq, 65535);
    if syn {
        b = b.syn();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Linux cooked v2 header for an IPv4 packet, as `tcpdump -i any` writes.
fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    f.extend_from_slice(ip);
    f
}

fn write_pcap(path: &Path, link: DataLink, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: link,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::new(1_764_000_000 + i as u64, 250_000_000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
    std::fs::write(path, w.into_writer()).unwrap();
}

/// A full session in SLL2: handshake, OPENs, KEEPALIVEs, then a 4-octet-AS UPDATE split over
/// two segments that arrive out of order, plus a retransmission of the first half.
fn session_frames() -> Vec<Vec<u8>> {
    let o1 = encode(&open(4_200_000_001, 1), &DecodeContext::default());
    let o2 = encode(&open(65002, 2), &DecodeContext::default());
    let ka = keepalive();
    let up = encode(&update_as4(), &as4());
    let half = up.len() / 2;
    let c0 = 1001u32; // client data starts here
    let s0 = 5001u32;
    let after_open = c0 + o1.len() as u32;
    let after_ka = after_open + ka.len() as u32;
    vec![
        sll2(&tcp(true, c0 - 1, true, b"")),  // 1 SYN
        sll2(&tcp(false, s0 - 1, true, b"")), // 2 SYN-ACK
        sll2(&tcp(true, c0, false, &o1)),     // 3 OPEN
        sll2(&tcp(false, s0, false, &[o2.clone(), ka.clone()].concat())), // 4 OPEN+KA
        sll2(&tcp(true, after_open, false, &ka)), // 5 KA
        sll2(&tcp(true, after_ka + half as u32, false, &up[half..])), // 6 second half first
        sll2(&tcp(true, after_ka, false, &up[..half])), // 7 first half
        sll2(&tcp(true, after_ka, false, &up[..half])), // 8 retransmission
    ]
}

#[test]
fn decodes_a_session_from_an_sll2_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.pcap");
    write_pcap(&path, DataLink::LINUX_SLL2, &session_frames());
    let out = run(&[path.to_str().unwrap()], None);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let msgs = lines(&out);
    let kinds: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m["frame"].as_u64().unwrap(),
                m["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, "OPEN".into()),
            (4, "OPEN".into()),
            (4, "KEEPALIVE".into()),
            (5, "KEEPALIVE".into()),
            (7, "UPDATE".into()),
        ]
    );
    let up = &msgs[4];
    assert_eq!(up["flow"], "10.0.0.1:40000 -> 10.0.0.2:179");
    assert_eq!(
        up["frames"],
        serde_json::json!([7, 6]),
        "bytes came in 7 then 6"
    );
    assert_eq!(up["context"], "negotiated");
    assert_eq!(up["time"], "2025-11-24T16:00:06.25Z");
    let text = up["decoded"].to_string();
    for want in ["192.0.2.0/24", "198.51.100.0/25", "4200000001", "65010"] {
        assert!(text.contains(want), "{want} missing in {text}");
    }
    let err = stderr(&out);
    assert!(
        err.contains("10.0.0.1:40000 -> 10.0.0.2:179: 3 messages (1 KEEPALIVE, 1 OPEN, 1 UPDATE)"),
        "{err}"
    );
    // The same capture piped through stdin decodes the same way.
    let piped = run(&["-"], Some(&std::fs::read(&path).unwrap()));
    assert!(piped.status.success());
    assert_eq!(lines(&piped), msgs);
    // --pretty prints the same objects over several lines.
    let pretty = run(&["--pretty", path.to_str().unwrap()], None);
    assert!(pretty.status.success());
    assert!(String::from_utf8_lossy(&pretty.stdout).lines().count() > 5 * 5);
}

#[test]
fn mid_session_pcapng_with_vlan_and_ipv6_needs_the_as4_flag() {
    let up = encode(&update_as4(), &as4());
    let ip6 = {
        let mut v = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(179, 33000, 77_000, 1000)
            .write(&mut v, &up)
            .unwrap();
        v
    };
    // Ethernet, 802.1ad outer tag, 802.1Q inner tag, IPv6.
    let mut frame = vec![
        2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xa8, 0, 10, 0x81, 0, 0, 20,
    ];
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&ip6);
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    // Interface 0 is something else entirely; the BGP frame is on interface 1.
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0))
        .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 1,
        timestamp: Duration::from_nanos(1),
        original_len: frame.len() as u32,
        data: frame.clone().into(),
        options: vec![],
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mid.pcapng");
    std::fs::write(&path, w.get_ref()).unwrap();

    let good = run(&["--as4", path.to_str().unwrap()], None);
    assert!(good.status.success(), "{}", stderr(&good));
    let m = &lines(&good)[0];
    assert_eq!(m["context"], "assumed");
    assert_eq!(
        m["flow"],
        "[fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd]:179 -> [fefe:fefe:fefe:fefe:fefe:fefe:fefe:fefe]:33000"
    );
    assert!(m["decoded"].to_string().contains("4200000001"));

    // Without --as4 the 4-octet AS_PATH is read as 2-octet ASes and is malformed: exit 1, and
    // the error names the frame.
    let bad = run(&[path.to_str().unwrap()], None);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let err = stderr(&bad);
    assert!(err.contains("error: frame 1 ("), "{err}");
    assert!(err.contains("UPDATE failed to decode"), "{err}");
    let m = &lines(&bad)[0];
    assert!(m["error"].is_string() && m["hex"].is_string(), "{m}");
}

#[test]
fn malformed_message_exits_1_naming_the_frame_and_the_reason() {
    let mut frames = session_frames();
    frames.truncate(4);
    // A fifth frame: an UPDATE whose withdrawn-routes length runs past the message.
    let mut bad = vec![0xff; 16];
    bad.extend_from_slice(&[0, 23, 2, 0, 200, 0, 0]);
    let after_open = 1001 + encode(&open(4_200_000_001, 1), &DecodeContext::default()).len() as u32;
    frames.push(sll2(&tcp(true, after_open, false, &bad)));
    let ka = keepalive();
    frames.push(sll2(&tcp(true, after_open + 23, false, &ka)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcap");
    write_pcap(&path, DataLink::LINUX_SLL2, &frames);
    let out = run(&[path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: frame 5 (10.0.0.1:40000 -> 10.0.0.2:179): UPDATE failed to decode: UPDATE:"
        ),
        "{err}"
    );
    assert!(err.contains("1 of 5 messages failed to decode"), "{err}");
    let msgs = lines(&out);
    assert_eq!(
        msgs.len(),
        5,
        "the KEEPALIVE after the bad UPDATE is still decoded"
    );
    let failed = &msgs[3];
    assert_eq!(failed["frame"], 5);
    assert_eq!(failed["notification"]["error"], "update");
    assert_eq!(msgs[4]["type"], "KEEPALIVE");
}

#[test]
fn hex_from_stdin_and_from_a_file() {
    let o = encode(&open(4_200_000_001, 1), &DecodeContext::default());
    let up = encode(&update_as4(), &as4());
    // Colon-separated OPEN, then a spaced 0x-prefixed UPDATE.
    let text = format!(
        "{}\n{}\n",
        o.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        up.iter()
            .map(|b| format!("0x{b:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = run(&["--as4", "--hex", "-"], Some(text.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let msgs = lines(&out);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["type"], "OPEN");
    assert_eq!(
        msgs[0]["decoded"]["my_as"], 23456,
        "AS_TRANS in the 2-octet field"
    );
    assert_eq!(msgs[1]["message"], 2);
    assert_eq!(msgs[1]["offset"], o.len());
    assert!(msgs[1]["decoded"].to_string().contains("198.51.100.0/25"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ka.hex");
    std::fs::write(&path, hex::encode(keepalive())).unwrap();
    let out = run(&["--hex", path.to_str().unwrap(), "--raw"], None);
    assert!(out.status.success());
    assert_eq!(lines(&out)[0]["hex"], hex::encode(keepalive()));
}

#[test]
fn unreadable_input_exits_2_with_a_reason() {
    let out = run(&["--hex", "-"], Some(b"ff ff zz"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a hex digit"), "{}", stderr(&out));

    let out = run(&["/nonexistent/capture.pcap"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/capture.pcap"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are not packets").unwrap();
    let out = run(&[path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a pcap or pcapng file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_explains_inputs_flags_and_exit_codes() {
    let out = run(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--hex",
        "--as4",
        "--add-path",
        "--extended-message",
        "--pretty",
        "SLL2",
        "Exit status",
        "tcpdump",
    ] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
}

#[test]
fn mp_reach_ipv6_message_in_hex() {
    // An IPv6 route in MP_REACH_NLRI with a global + link-local next hop (RFC 4760, RFC 2545).
    let m = Message::Update(Update {
        attributes: vec![
            Attribute::new(AttributeValue::Origin(Origin::Igp)),
            Attribute::new(AttributeValue::AsPath(AsPath { segments: vec![] })),
            Attribute::new(AttributeValue::MpReachNlri(MpReach {
                next_hop: MpNextHop::Ipv6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: MpNlri::Ipv6Unicast(vec![tabby_bgp::wire::Ipv6Nlri::new(
                    "2001:db8:100::/48".parse().unwrap(),
                )]),
            })),
        ],
        ..Update::default()
    });
    let out = run(
        &["--hex", "-"],
        Some(hex::encode(encode(&m, &as4())).as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = lines(&out)[0]["decoded"].to_string();
    assert!(
        text.contains("2001:db8:100::/48") && text.contains("fe80::1"),
        "{text}"
    );
}
