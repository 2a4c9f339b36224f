//! From one captured frame to one TCP segment: link layer (Ethernet with any number of 802.1Q /
//! 802.1ad tags, Linux SLL and SLL2, raw IP, BSD NULL and LOOP), then IPv4 (with options) or IPv6
//! (with extension headers) and TCP, the last two sliced by `etherparse`.
//!
//! Owns header parsing only; it keeps no state across frames (reassembly is [`super::reassembly`]).

use std::fmt;
use std::net::SocketAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, NetSlice, SlicedPacket, TransportSlice};

use super::file::LinkType;

/// The TCP part of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// The captured payload (a prefix of the real one when `truncated`).
    pub payload: &'a [u8],
    /// The capture cut this frame short (snap length): `payload` holds only the bytes that were
    /// captured, and the sequence space after them is missing.
    pub truncated: bool,
}

/// Why a frame yields no TCP segment. Some reasons are ordinary (ARP, UDP); the ones for which
/// [`Skip::is_problem`] is true can lose stream bytes and are worth telling the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A link type this reader does not understand.
    UnsupportedLink(u32),
    /// Not IP at all (ARP, LLDP, ...): the EtherType or address family found.
    NotIp(u32),
    /// IP, but not TCP: the IP protocol number.
    NotTcp(u8),
    /// An IP fragment; TCP is not reassembled across IP fragments (BGP speakers set DF and
    /// fragments of a TCP/179 segment are vanishingly rare).
    Fragment,
    /// The frame is cut short or a header is malformed.
    Malformed(String),
}

impl Skip {
    /// True for reasons that can lose TCP payload bytes.
    pub fn is_problem(&self) -> bool {
        matches!(self, Skip::Fragment | Skip::Malformed(_))
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::UnsupportedLink(n) => write!(f, "unsupported link type {n}"),
            Skip::NotIp(t) => write!(f, "not IP (type {t:#06x})"),
            Skip::NotTcp(p) => write!(f, "not TCP (IP protocol {p})"),
            Skip::Fragment => write!(f, "IP fragment skipped (no IP reassembly)"),
            Skip::Malformed(m) => write!(f, "malformed or truncated frame: {m}"),
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad, and the pre-standard QinQ value some switches still send.
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn short(what: &str, need: usize, have: usize) -> Skip {
    Skip::Malformed(format!("{what} needs {need} bytes, frame has {have}"))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Strips the link-layer header, returning the IP packet, or why there is none.
pub fn ip_payload(link: LinkType, data: &[u8]) -> Result<&[u8], Skip> {
    let by_ethertype = |t: u16, rest| match t {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(rest),
        other => Err(Skip::NotIp(u32::from(other))),
    };
    match link {
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => Ok(data),
        LinkType::Ethernet => {
            if data.len() < 14 {
                return Err(short("Ethernet header", 14, data.len()));
            }
            let mut t = be16(data, 12);
            let mut at = 14;
            // Any depth of tags: each is TCI (2) + the next EtherType (2).
            while ETHERTYPE_VLAN.contains(&t) {
                if data.len() < at + 4 {
                    return Err(short("VLAN tag", at + 4, data.len()));
                }
                t = be16(data, at + 2);
                at += 4;
            }
            by_ethertype(t, &data[at..])
        }
        LinkType::LinuxSll => {
            // packet type, ARPHRD type, address length, 8 address bytes, protocol.
            if data.len() < 16 {
                return Err(short("Linux SLL header", 16, data.len()));
            }
            by_ethertype(be16(data, 14), &data[16..])
        }
        LinkType::LinuxSll2 => {
            // protocol, reserved, interface index, ARPHRD type, packet type, address length,
            // 8 address bytes.
            if data.len() < 20 {
                return Err(short("Linux SLL2 header", 20, data.len()));
            }
            by_ethertype(be16(data, 0), &data[20..])
        }
        LinkType::Null | LinkType::Loop => {
            if data.len() < 4 {
                return Err(short("loopback header", 4, data.len()));
            }
            let raw = [data[0], data[1], data[2], data[3]];
            // NULL is in the capturing host's byte order, which the file does not record; the
            // family values are all < 256, so whichever order gives a small number is right.
            let family = if link == LinkType::Loop {
                u32::from_be_bytes(raw)
            } else {
                let le = u32::from_le_bytes(raw);
                let be = u32::from_be_bytes(raw);
                le.min(be)
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD),
            // 28 (FreeBSD), 30 (macOS).
            match family {
                2 | 10 | 24 | 28 | 30 => Ok(&data[4..]),
                other => Err(Skip::NotIp(other)),
            }
        }
        LinkType::Other(n) => Err(Skip::UnsupportedLink(n)),
    }
}

/// Parses a frame down to its TCP segment.
pub fn tcp_segment(link: LinkType, data: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    let ip = ip_payload(link, data)?;
    let sliced = match SlicedPacket::from_ip(ip) {
        Ok(s) => s,
        // Cut short by the snap length? The TCP header may still be whole, and the bytes that
        // were captured are still the right bytes at the right sequence numbers.
        Err(e) => return truncated_tcp_segment(ip).ok_or_else(|| Skip::Malformed(e.to_string())),
    };
    let (src_ip, dst_ip, fragmented, protocol) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
            v4.payload().fragmented,
            v4.payload().ip_number.0,
        ),
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
            v6.payload().fragmented,
            v6.payload().ip_number.0,
        ),
        Some(NetSlice::Arp(_)) | None => return Err(Skip::NotIp(0)),
    };
    if fragmented {
        return Err(Skip::Fragment);
    }
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => Ok(TcpSegment {
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            payload: tcp.payload(),
            truncated: false,
        }),
        _ => Err(Skip::NotTcp(protocol)),
    }
}

/// The TCP segment of an IP packet whose end was not captured, if its headers were.
fn truncated_tcp_segment(ip: &[u8]) -> Option<TcpSegment<'_>> {
    let lax = LaxSlicedPacket::from_ip(ip).ok()?;
    let (src_ip, dst_ip, payload) = match &lax.net {
        Some(LaxNetSlice::Ipv4(v4)) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
            v4.payload(),
        ),
        Some(LaxNetSlice::Ipv6(v6)) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
            v6.payload(),
        ),
        _ => return None,
    };
    if !payload.incomplete || payload.fragmented {
        return None;
    }
    match lax.transport {
        Some(TransportSlice::Tcp(tcp)) => Some(TcpSegment {
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            payload: tcp.payload(),
            truncated: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader,
        PacketBuilder, SingleVlanHeader, VlanId,
    };

    const PAYLOAD: &[u8] = b"\xff\xff\xff\xff BGP bytes";

    fn v4_tcp() -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(179, 51234, 1000, 65535)
            .psh();
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).unwrap();
        v
    }

    fn v6_tcp() -> Vec<u8> {
        let b = PacketBuilder::ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .tcp(51234, 179, 7, 65535)
        .syn();
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).unwrap();
        v
    }

    fn ethernet(types_and_tags: &[u16], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for (i, t) in types_and_tags.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < types_and_tags.len() {
                f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI
            }
        }
        f.extend_from_slice(ip);
        f
    }

    fn sll(proto: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        f.extend_from_slice(&proto.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn sll2(proto: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = proto.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        f.extend_from_slice(ip);
        f
    }

    fn check_v4(seg: TcpSegment<'_>) {
        assert_eq!(seg.src, "10.0.0.1:179".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:51234".parse().unwrap());
        assert_eq!(seg.seq, 1000);
        assert!(!seg.syn && !seg.fin && !seg.rst);
        assert_eq!(seg.payload, PAYLOAD);
    }

    fn check_v6(seg: TcpSegment<'_>) {
        assert_eq!(seg.src, "[2001:db8::1]:51234".parse().unwrap());
        assert_eq!(seg.dst, "[2001:db8::2]:179".parse().unwrap());
        assert!(seg.syn);
        assert_eq!(seg.payload, PAYLOAD);
    }

    #[test]
    fn every_link_type_yields_the_segment() {
        let v4 = v4_tcp();
        let v6 = v6_tcp();
        type Case = (&'static str, LinkType, Vec<u8>, bool);
        let cases: Vec<Case> = vec![
            (
                "ethernet v4",
                LinkType::Ethernet,
                ethernet(&[0x0800], &v4),
                true,
            ),
            (
                "ethernet v6",
                LinkType::Ethernet,
                ethernet(&[0x86dd], &v6),
                false,
            ),
            (
                "802.1Q",
                LinkType::Ethernet,
                ethernet(&[0x8100, 0x0800], &v4),
                true,
            ),
            (
                "802.1ad + 802.1Q",
                LinkType::Ethernet,
                ethernet(&[0x88a8, 0x8100, 0x86dd], &v6),
                false,
            ),
            (
                "three tags",
                LinkType::Ethernet,
                ethernet(&[0x9100, 0x88a8, 0x8100, 0x0800], &v4),
                true,
            ),
            ("SLL v4", LinkType::LinuxSll, sll(0x0800, &v4), true),
            ("SLL v6", LinkType::LinuxSll, sll(0x86dd, &v6), false),
            ("SLL2 v4", LinkType::LinuxSll2, sll2(0x0800, &v4), true),
            ("SLL2 v6", LinkType::LinuxSll2, sll2(0x86dd, &v6), false),
            ("raw v4", LinkType::Raw, v4.clone(), true),
            ("raw v6", LinkType::Raw, v6.clone(), false),
            ("IPV4", LinkType::Ipv4, v4.clone(), true),
            ("IPV6", LinkType::Ipv6, v6.clone(), false),
            (
                "NULL little-endian v4",
                LinkType::Null,
                [&[2, 0, 0, 0][..], &v4].concat(),
                true,
            ),
            (
                "NULL big-endian v6 (macOS 30)",
                LinkType::Null,
                [&[0, 0, 0, 30][..], &v6].concat(),
                false,
            ),
            (
                "NULL Linux AF_INET6",
                LinkType::Null,
                [&[10, 0, 0, 0][..], &v6].concat(),
                false,
            ),
            (
                "LOOP v4",
                LinkType::Loop,
                [&[0, 0, 0, 2][..], &v4].concat(),
                true,
            ),
            (
                "LOOP v6 (24)",
                LinkType::Loop,
                [&[0, 0, 0, 24][..], &v6].concat(),
                false,
            ),
        ];
        for (name, link, frame, is_v4) in cases {
            let seg = tcp_segment(link, &frame).unwrap_or_else(|e| panic!("{name}: {e}"));
            if is_v4 { check_v4(seg) } else { check_v6(seg) }
        }
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        // Minimum-size frames are padded; the IP total length says where the packet ends.
        let mut f = ethernet(&[0x0800], &v4_tcp());
        f.extend_from_slice(&[0; 12]);
        assert_eq!(
            tcp_segment(LinkType::Ethernet, &f).unwrap().payload,
            PAYLOAD
        );
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, [10, 0, 0, 1], [10, 0, 0, 2]).unwrap();
        h.options = [1u8, 1, 1, 0][..].try_into().unwrap(); // NOP NOP NOP EOL
        let b = PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default())).tcp(179, 51234, 1000, 10);
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).unwrap();
        assert_eq!(v[0] & 0x0f, 6, "IHL includes the options");
        check_v4(tcp_segment(LinkType::Raw, &v).unwrap());
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let h = Ipv6Header {
            source: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            destination: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            hop_limit: 64,
            ..Default::default()
        };
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap(),
            ),
            destination_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap(),
            ),
            ..Default::default()
        };
        let b = PacketBuilder::ip(IpHeaders::Ipv6(h, exts))
            .tcp(51234, 179, 7, 10)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).unwrap();
        assert_eq!(v[6], 0, "next header is hop-by-hop");
        check_v6(tcp_segment(LinkType::Raw, &v).unwrap());
    }

    #[test]
    fn fragments_are_skipped_as_a_problem() {
        let mut v = v4_tcp();
        v[6] |= 0x20; // More Fragments
        // Header checksum is not verified by the slicer, so no need to fix it up.
        let e = tcp_segment(LinkType::Raw, &v).unwrap_err();
        assert_eq!(e, Skip::Fragment);
        assert!(e.is_problem());
    }

    #[test]
    fn non_ip_and_non_tcp_are_ordinary_skips() {
        let arp = ethernet(&[0x0806], &[0; 28]);
        assert_eq!(
            tcp_segment(LinkType::Ethernet, &arp),
            Err(Skip::NotIp(0x0806))
        );
        let mut udp = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        let e = tcp_segment(LinkType::Raw, &udp).unwrap_err();
        assert_eq!(e, Skip::NotTcp(17));
        assert!(!e.is_problem());
        assert_eq!(
            tcp_segment(LinkType::Other(147), &udp),
            Err(Skip::UnsupportedLink(147))
        );
        assert_eq!(
            tcp_segment(LinkType::Loop, &[0, 0, 0, 7, 1]),
            Err(Skip::NotIp(7))
        );
    }

    #[test]
    fn truncated_frames_are_problems_at_every_layer() {
        let v4 = v4_tcp();
        let cases: Vec<(LinkType, Vec<u8>)> = vec![
            (LinkType::Ethernet, vec![0; 13]),
            (LinkType::Ethernet, ethernet(&[0x8100], &[0])),
            (LinkType::LinuxSll, vec![0; 15]),
            (LinkType::LinuxSll2, vec![0; 19]),
            (LinkType::Null, vec![2, 0]),
            (LinkType::Raw, v4[..10].to_vec()),
            // IP header fine, TCP header cut.
            (LinkType::Raw, v4[..30].to_vec()),
            (LinkType::Raw, vec![]),
        ];
        for (link, frame) in cases {
            let e = tcp_segment(link, &frame).unwrap_err();
            assert!(e.is_problem(), "{link:?} {frame:?}: {e}");
            assert!(e.to_string().contains("malformed"), "{e}");
        }
    }

    #[test]
    fn snap_length_cut_keeps_the_captured_prefix() {
        for ip in [v4_tcp(), v6_tcp()] {
            let cut = &ip[..ip.len() - 4];
            let seg = tcp_segment(LinkType::Raw, cut).unwrap();
            assert!(seg.truncated);
            assert_eq!(seg.payload, &PAYLOAD[..PAYLOAD.len() - 4]);
            assert!(!tcp_segment(LinkType::Raw, &ip).unwrap().truncated);
        }
    }

    #[test]
    fn vlan_builder_frames_parse() {
        // Cross-check the hand-made tag layout against etherparse's own builder.
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(179, 51234, 1000, 65535);
        let mut v = Vec::new();
        b.write(&mut v, PAYLOAD).unwrap();
        let _ = SingleVlanHeader::default();
        check_v4(tcp_segment(LinkType::Ethernet, &v).unwrap());
    }
}
