//! Malformed UPDATEs from a live peer: a raw TCP peer in its own namespace opens a real
//! session with `tabby-bgpd` (OPEN/KEEPALIVE built with `tabby_bgp::wire`) and then sends
//! broken UPDATEs as raw bytes, taken from the codec's table (`bgp/tests/wire_malformed.rs`).
//! Each must end exactly as RFC 7606 says:
//! - treat-as-withdraw: the session stays up and the prefix is gone;
//! - attribute discard: the session stays up and the route is kept (without the attribute);
//! - session reset: we receive a NOTIFICATION with the right code/subcode.
//!
//! Needs root and the daemon binary; skips otherwise.

mod interop;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use interop::*;
use tabby_bgp::wire::{Asn, Capability, DecodeContext, Family, Message, Open};
use tabby_netlab::in_netns;

const T: Duration = Duration::from_secs(20);
const PEER_AS: u32 = 65001;

// ---------- raw bytes (RFC 4271 §4) ----------

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    v.push(ty);
    v.extend_from_slice(body);
    v
}

fn attr(flags: u8, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, ty];
    if flags & 0x10 != 0 {
        v.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    } else {
        v.push(u8::try_from(value.len()).unwrap());
    }
    v.extend_from_slice(value);
    v
}

fn update_raw(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = u16::try_from(withdrawn.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
/// AS_SEQUENCE [65001], 4-octet.
fn as_path() -> Vec<u8> {
    attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9])
}
fn next_hop() -> Vec<u8> {
    attr(0x40, 3, &[10, 77, 0, 1])
}
fn med(v: u32) -> Vec<u8> {
    attr(0x80, 4, &v.to_be_bytes())
}
/// NLRI 10.0.`n`.0/24.
fn nlri(n: u8) -> Vec<u8> {
    vec![24, 10, 0, n]
}
fn prefix(n: u8) -> String {
    format!("10.0.{n}.0/24")
}

/// A valid UPDATE for 10.0.`n`.0/24 with `extra` attributes.
fn good(n: u8, extra: &[u8]) -> Vec<u8> {
    update_raw(
        &[],
        &[origin(), as_path(), next_hop(), extra.to_vec()].concat(),
        &nlri(n),
    )
}

// ---------- the raw peer ----------

struct RawPeer {
    s: TcpStream,
}

impl RawPeer {
    /// Connects to tabby-bgpd (retrying while it is not yet listening or still idle), and
    /// brings the session to Established: OPEN both ways, KEEPALIVE both ways.
    fn establish() -> RawPeer {
        let to: SocketAddr = format!("{US4}:179").parse().unwrap();
        let start = Instant::now();
        let s = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < T => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("connecting to tabby-bgpd: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut p = RawPeer { s };
        let open = Open::new(
            Asn(PEER_AS),
            90,
            Ipv4Addr::new(10, 77, 0, 1),
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::Multiprotocol(Family::IPV6_UNICAST),
                Capability::FourOctetAs(Asn(PEER_AS)),
            ],
        );
        let cx = DecodeContext::default();
        p.send(&Message::Open(open).to_bytes(&cx).unwrap());
        p.send(&Message::Keepalive.to_bytes(&cx).unwrap());
        let (mut got_open, mut got_ka) = (false, false);
        while !(got_open && got_ka) {
            let (ty, body) = p.recv().expect("tabby-bgpd's OPEN and KEEPALIVE");
            match ty {
                1 => got_open = true,
                4 => got_ka = got_open,
                3 => panic!("NOTIFICATION during open: {body:?}"),
                _ => {}
            }
        }
        p
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// One message: (type, body), or None on EOF/timeout.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 19];
        self.s.read_exact(&mut h).ok()?;
        let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
        let mut body = vec![0u8; len.checked_sub(19)?];
        self.s.read_exact(&mut body).ok()?;
        Some((h[18], body))
    }

    /// Reads until a NOTIFICATION arrives: (code, subcode). Panics after `T`.
    fn notification(&mut self) -> (u8, u8) {
        let start = Instant::now();
        while start.elapsed() < T {
            match self.recv() {
                Some((3, body)) if body.len() >= 2 => return (body[0], body[1]),
                Some(_) => {}
                None => break,
            }
        }
        panic!("no NOTIFICATION from tabby-bgpd");
    }
}

fn tabby_config() -> String {
    config(
        US4,
        65002,
        &peer(
            THEM4,
            PEER_AS,
            "passive = true\nhold_time = 90\nfamilies = [\"ipv4-unicast\", \"ipv6-unicast\"]",
        ),
    )
}

/// What a malformed UPDATE must lead to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// RFC 7606 treat-as-withdraw: session up, the prefix gone.
    Withdraw,
    /// RFC 7606 attribute discard: session up, the route kept (with MED 77 from the same UPDATE).
    Discard,
}

struct Case {
    name: &'static str,
    /// The malformed UPDATE for the case's prefix `n`.
    bytes: fn(u8) -> Vec<u8>,
    want: Want,
}

fn survivable() -> Vec<Case> {
    vec![
        Case {
            name: "ORIGIN value 3 (RFC 7606 §7.1)",
            bytes: |n| {
                update_raw(
                    &[],
                    &[attr(0x40, 1, &[3]), as_path(), next_hop()].concat(),
                    &nlri(n),
                )
            },
            want: Want::Withdraw,
        },
        Case {
            name: "AS_PATH segment overrun (RFC 7606 §7.2)",
            bytes: |n| {
                update_raw(
                    &[],
                    &[
                        origin(),
                        attr(0x40, 2, &[2, 3, 0, 0, 0xfd, 0xe9]),
                        next_hop(),
                    ]
                    .concat(),
                    &nlri(n),
                )
            },
            want: Want::Withdraw,
        },
        Case {
            name: "NEXT_HOP length 5 (RFC 7606 §7.3)",
            bytes: |n| {
                update_raw(
                    &[],
                    &[origin(), as_path(), attr(0x40, 3, &[10, 77, 0, 1, 0])].concat(),
                    &nlri(n),
                )
            },
            want: Want::Withdraw,
        },
        Case {
            name: "MULTI_EXIT_DISC length 3 (RFC 7606 §7.4)",
            bytes: |n| good(n, &attr(0x80, 4, &[0, 0, 1])),
            want: Want::Withdraw,
        },
        Case {
            name: "COMMUNITIES length 5 (RFC 7606 §7.8)",
            bytes: |n| good(n, &attr(0xc0, 8, &[0, 1, 0, 2, 9])),
            want: Want::Withdraw,
        },
        Case {
            name: "missing ORIGIN (RFC 7606 §3(d))",
            bytes: |n| update_raw(&[], &[as_path(), next_hop()].concat(), &nlri(n)),
            want: Want::Withdraw,
        },
        Case {
            name: "ORIGIN flagged optional (RFC 7606 §3(c))",
            bytes: |n| {
                update_raw(
                    &[],
                    &[attr(0xc0, 1, &[0]), as_path(), next_hop()].concat(),
                    &nlri(n),
                )
            },
            want: Want::Withdraw,
        },
        Case {
            name: "LOCAL_PREF from an external peer (RFC 7606 §7.5)",
            bytes: |n| good(n, &[med(77), attr(0x40, 5, &[0, 0, 1, 0x2c])].concat()),
            want: Want::Discard,
        },
        Case {
            name: "ATOMIC_AGGREGATE length 1 (RFC 7606 §7.6)",
            bytes: |n| good(n, &[med(77), attr(0x40, 6, &[1])].concat()),
            want: Want::Discard,
        },
        Case {
            name: "AGGREGATOR length 7 on a 4-octet session (RFC 7606 §7.7)",
            bytes: |n| {
                good(
                    n,
                    &[med(77), attr(0xc0, 7, &[0, 0, 0xfd, 0xe9, 10, 77, 0])].concat(),
                )
            },
            want: Want::Discard,
        },
    ]
}

#[test]
fn treat_as_withdraw_and_attribute_discard_keep_the_session() {
    if skip(&[]) {
        return;
    }
    let link = Link::new();
    let tabby = Tabby::start(&link.us, &tabby_config());
    let cases = survivable();
    let mut peer = in_netns(&link.them, RawPeer::establish).unwrap();
    tabby.wait_established(THEM4, T);
    for (i, c) in cases.iter().enumerate() {
        let n = u8::try_from(i + 1).unwrap();
        // A valid route first, then the malformed UPDATE for the same prefix.
        peer.send(&good(n, &[]));
        tabby.wait_route(&prefix(n), T);
        peer.send(&(c.bytes)(n));
        match c.want {
            Want::Withdraw => {
                wait_or(
                    &format!("{}: treat-as-withdraw of {}", c.name, prefix(n)),
                    T,
                    || {
                        let (code, _) = tabby.get(&format!("/rib/{}", prefix(n)))?;
                        (code == 404).then_some(())
                    },
                    || tabby.log_tail(20),
                );
            }
            Want::Discard => {
                let r = tabby.wait_route_where(&prefix(n), T, |r| best(r)["attrs"]["med"] == 77);
                if c.name.starts_with("LOCAL_PREF") {
                    assert_ne!(best(&r)["attrs"]["local_pref"], 300, "{}: {r}", c.name);
                }
            }
        }
        // The session is still the same one, and still takes routes.
        let probe = 100 + n;
        peer.send(&good(probe, &[]));
        tabby.wait_route(&prefix(probe), T);
        let p = tabby.peer(THEM4).unwrap();
        assert_eq!(p["state"], "Established", "{}: {p}", c.name);
        assert_eq!(p["established_count"], 1, "{}: {p}", c.name);
        assert_eq!(p["notifications_sent"], 0, "{}: {p}", c.name);
    }
}

/// Sends `bytes` on an established session and returns the NOTIFICATION we get back, also
/// checking that tabby-bgpd's status records it.
fn reset_with(bytes: Vec<u8>) -> (u8, u8) {
    let link = Link::new();
    let tabby = Tabby::start(&link.us, &tabby_config());
    let mut peer = in_netns(&link.them, RawPeer::establish).unwrap();
    tabby.wait_established(THEM4, T);
    peer.send(&good(1, &[]));
    tabby.wait_route(&prefix(1), T);
    peer.send(&bytes);
    let got = peer.notification();
    let p = wait("tabby-bgpd to record the NOTIFICATION it sent", T, || {
        tabby
            .peer(THEM4)
            .filter(|p| p["last_notification_sent"].is_object())
    });
    assert_eq!(p["last_notification_sent"]["code"], got.0, "{p}");
    assert_eq!(p["last_notification_sent"]["subcode"], got.1, "{p}");
    // The session's routes are gone with it.
    tabby.wait_no_route(&prefix(1), T);
    got
}

#[test]
fn attribute_length_overrunning_the_message_resets_with_3_1() {
    if skip(&[]) {
        return;
    }
    // Total Path Attribute Length says 200; the message ends long before (RFC 7606 §3(b)
    // keeps session reset for this: the NLRI cannot be located).
    let mut b = good(2, &[]);
    let attr_len_at = 19 + 2;
    b[attr_len_at..attr_len_at + 2].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(reset_with(b), (3, 1));
}

#[test]
fn nlri_prefix_length_33_resets_with_3_10() {
    if skip(&[]) {
        return;
    }
    // RFC 4271 §6.3 / RFC 7606 §5.3: an IPv4 prefix longer than 32 bits.
    let b = update_raw(
        &[],
        &[origin(), as_path(), next_hop()].concat(),
        &[33, 10, 0, 2, 0, 0],
    );
    assert_eq!(reset_with(b), (3, 10));
}

#[test]
fn mp_reach_with_a_4_octet_ipv6_next_hop_resets_with_3_9() {
    if skip(&[]) {
        return;
    }
    // RFC 7606 §7.11: a malformed MP_REACH_NLRI cannot be treated as withdraw (its NLRI are
    // not trustworthy) → session reset, Optional Attribute Error.
    let mut v = 2u16.to_be_bytes().to_vec();
    v.extend_from_slice(&[1, 4, 10, 77, 0, 1, 0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 9]);
    let b = update_raw(
        &[],
        &[origin(), as_path(), attr(0x90, 14, &v)].concat(),
        &[],
    );
    assert_eq!(reset_with(b), (3, 9));
}

#[test]
fn unrecognized_well_known_attribute_resets_with_3_2() {
    if skip(&[]) {
        return;
    }
    // RFC 4271 §6.3: a well-known (non-optional) attribute we do not know.
    assert_eq!(reset_with(good(2, &attr(0x40, 99, &[1, 2]))), (3, 2));
}
