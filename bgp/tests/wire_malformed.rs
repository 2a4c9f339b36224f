//! Malformed-input table: every case names the RFC clause it checks and the outcome that clause
//! requires — a NOTIFICATION (code/subcode), RFC 7606 treat-as-withdraw, attribute discard, or
//! acceptance. Built from raw bytes so nothing in the encoder can hide a decoder bug.

use std::collections::BTreeSet;

use tabby_bgp::wire::{
    Asn, DecodeContext, ErrorAction, Family, Message, UpdateAction, decode_message,
};

// ---------- byte builders ----------

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(ty);
    v.extend_from_slice(body);
    v
}

fn attr(flags: u8, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, ty];
    if flags & 0x10 != 0 {
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.push(value.len() as u8);
    }
    v.extend_from_slice(value);
    v
}

fn update_raw(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
/// AS_PATH AS_SEQUENCE [65001] in 4-octet form.
fn as_path4() -> Vec<u8> {
    attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9])
}
/// AS_PATH AS_SEQUENCE [65001] in 2-octet form.
fn as_path2() -> Vec<u8> {
    attr(0x40, 2, &[2, 1, 0xfd, 0xe9])
}
fn next_hop() -> Vec<u8> {
    attr(0x40, 3, &[192, 0, 2, 1])
}
const NLRI: &[u8] = &[24, 10, 0, 1];

/// A valid 4-octet-AS UPDATE with `extra` attributes appended and one NLRI.
fn upd4(extra: &[u8]) -> Vec<u8> {
    upd4_nlri(extra, NLRI)
}
fn upd4_nlri(extra: &[u8], nlri: &[u8]) -> Vec<u8> {
    let a = [origin(), as_path4(), next_hop(), extra.to_vec()].concat();
    update_raw(&[], &a, nlri)
}
/// Only the given attributes, one NLRI.
fn upd_attrs(attrs: &[Vec<u8>]) -> Vec<u8> {
    update_raw(&[], &attrs.concat(), NLRI)
}

fn mp_reach(afi: u16, safi: u8, nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut v = afi.to_be_bytes().to_vec();
    v.push(safi);
    v.push(nh.len() as u8);
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(nlri);
    attr(0x90, 14, &v)
}
fn mp_unreach(afi: u16, safi: u8, nlri: &[u8]) -> Vec<u8> {
    let mut v = afi.to_be_bytes().to_vec();
    v.push(safi);
    v.extend_from_slice(nlri);
    attr(0x90, 15, &v)
}
fn v6nh() -> Vec<u8> {
    let mut v = vec![0x20, 0x01, 0x0d, 0xb8];
    v.resize(16, 0);
    v[15] = 1;
    v
}
/// An MP_REACH-only IPv6 UPDATE with the given next hop and NLRI.
fn upd_v6(nh: &[u8], nlri: &[u8]) -> Vec<u8> {
    let a = [origin(), as_path4(), mp_reach(2, 1, nh, nlri)].concat();
    update_raw(&[], &a, &[])
}

fn cap(code: u8, v: &[u8]) -> Vec<u8> {
    let mut c = vec![code, v.len() as u8];
    c.extend_from_slice(v);
    c
}
fn param(ty: u8, v: &[u8]) -> Vec<u8> {
    let mut p = vec![ty, v.len() as u8];
    p.extend_from_slice(v);
    p
}
fn open_full(version: u8, my_as: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    msg(1, &b)
}
/// An OPEN whose Opt Parm Len octet and parameter bytes are given verbatim.
fn open_raw(opt_len: u8, params: &[u8]) -> Vec<u8> {
    let mut b = vec![4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1, opt_len];
    b.extend_from_slice(params);
    msg(1, &b)
}
fn open_caps(caps: &[Vec<u8>]) -> Vec<u8> {
    open_full(4, 65001, 90, [192, 0, 2, 1], &param(2, &caps.concat()))
}

// ---------- contexts ----------

fn cx2() -> DecodeContext {
    DecodeContext {
        ibgp: true,
        ..Default::default()
    }
}
fn cx4() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ibgp: true,
        ..Default::default()
    }
}
fn cx4_ebgp() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ..Default::default()
    }
}
fn cx_add_path() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ibgp: true,
        add_path_rx: BTreeSet::from([Family::IPV4_UNICAST, Family::IPV6_UNICAST]),
        ..Default::default()
    }
}
fn cx_ext() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ibgp: true,
        extended_message: true,
        ..Default::default()
    }
}
fn cx_peer() -> DecodeContext {
    DecodeContext {
        peer_as: Some(Asn(65002)),
        ..Default::default()
    }
}

// ---------- expected outcomes ----------

#[derive(Debug, Clone, Copy)]
enum Want {
    /// Session reset with this NOTIFICATION code/subcode.
    Reset(u8, u8),
    /// RFC 7606 treat-as-withdraw caused by this attribute type (0 = no type readable) and subcode.
    Withdraw(u8, u8),
    /// RFC 7606 attribute discard of this attribute type, subcode.
    Discard(u8, u8),
    /// Decodes with no error.
    Accept,
}
use Want::*;

struct Case {
    name: &'static str,
    rfc: &'static str,
    cx: DecodeContext,
    bytes: Vec<u8>,
    want: Want,
}

fn case(
    name: &'static str,
    rfc: &'static str,
    cx: DecodeContext,
    bytes: Vec<u8>,
    want: Want,
) -> Case {
    Case {
        name,
        rfc,
        cx,
        bytes,
        want,
    }
}

fn cases() -> Vec<Case> {
    let mut c = Vec::new();
    let ka = msg(4, &[]);

    // ---- Message header, RFC 4271 §6.1 ----
    let mut bad_marker = ka.clone();
    bad_marker[3] = 0;
    c.push(case(
        "marker not all ones",
        "RFC 4271 §6.1",
        cx4(),
        bad_marker,
        Reset(1, 1),
    ));
    let mut short = ka.clone();
    short[17] = 18;
    c.push(case(
        "length 18 < header",
        "RFC 4271 §6.1",
        cx4(),
        short,
        Reset(1, 2),
    ));
    c.push(case(
        "frame shorter than a header",
        "RFC 4271 §6.1",
        cx4(),
        vec![0xff; 10],
        Reset(1, 2),
    ));
    let big = upd4(&attr(0xd0, 99, &vec![0; 4200]));
    c.push(case(
        "length 4300 without extended messages",
        "RFC 4271 §6.1",
        cx4(),
        big.clone(),
        Reset(1, 2),
    ));
    c.push(case(
        "length 4300 with extended messages",
        "RFC 8654 §4",
        cx_ext(),
        big,
        Accept,
    ));
    let mut lie = ka.clone();
    lie[17] = 25;
    c.push(case(
        "length field disagrees with frame",
        "RFC 4271 §6.1",
        cx4(),
        lie,
        Reset(1, 2),
    ));
    c.push(case(
        "message type 0",
        "RFC 4271 §6.1",
        cx4(),
        msg(0, &[]),
        Reset(1, 3),
    ));
    c.push(case(
        "message type 6",
        "RFC 4271 §6.1",
        cx4(),
        msg(6, &[0; 4]),
        Reset(1, 3),
    ));
    c.push(case(
        "KEEPALIVE with a body",
        "RFC 4271 §4.4",
        cx4(),
        msg(4, &[0]),
        Reset(1, 2),
    ));
    c.push(case(
        "OPEN shorter than 29",
        "RFC 4271 §6.1",
        cx4(),
        msg(1, &[4, 0, 1, 0, 90, 1, 2, 3, 4]),
        Reset(1, 2),
    ));
    c.push(case(
        "UPDATE shorter than 23",
        "RFC 4271 §6.1",
        cx4(),
        msg(2, &[0, 0, 0]),
        Reset(1, 2),
    ));
    c.push(case(
        "NOTIFICATION shorter than 21",
        "RFC 4271 §6.1",
        cx4(),
        msg(3, &[6]),
        Reset(1, 2),
    ));
    c.push(case(
        "ROUTE-REFRESH shorter than 23",
        "RFC 4271 §6.1",
        cx4(),
        msg(5, &[0, 1, 0]),
        Reset(1, 2),
    ));
    let big_open = open_full(
        4,
        65001,
        90,
        [1, 1, 1, 1],
        &{
            let mut p = vec![255, 255];
            let caps: Vec<u8> = (0..900).flat_map(|_| cap(200, &[0, 0, 0])).collect();
            p.extend_from_slice(&((caps.len() + 3) as u16).to_be_bytes());
            p.push(2);
            p.extend_from_slice(&(caps.len() as u16).to_be_bytes());
            p.extend_from_slice(&caps);
            p
        }[..],
    );
    c.push(case(
        "OPEN over 4096 even with extended messages",
        "RFC 8654 §4",
        cx_ext(),
        big_open,
        Reset(1, 2),
    ));

    // ---- OPEN, RFC 4271 §6.2 ----
    c.push(case(
        "version 3",
        "RFC 4271 §6.2",
        cx4(),
        open_full(3, 65001, 90, [1, 1, 1, 1], &[]),
        Reset(2, 1),
    ));
    c.push(case(
        "My AS 0",
        "RFC 7607 §2",
        cx4(),
        open_full(4, 0, 90, [1, 1, 1, 1], &[]),
        Reset(2, 2),
    ));
    c.push(case(
        "peer AS not the configured one",
        "RFC 4271 §6.2",
        cx_peer(),
        open_full(4, 65001, 90, [1, 1, 1, 1], &[]),
        Reset(2, 2),
    ));
    c.push(case(
        "peer AS via 4-octet capability matches",
        "RFC 6793 §4.1",
        DecodeContext {
            peer_as: Some(Asn(4_200_000_000)),
            ..Default::default()
        },
        open_full(
            4,
            23456,
            90,
            [1, 1, 1, 1],
            &param(2, &cap(65, &4_200_000_000u32.to_be_bytes())),
        ),
        Accept,
    ));
    c.push(case(
        "4-octet AS capability carries AS 0",
        "RFC 7607 §2",
        cx4(),
        open_caps(&[cap(65, &[0, 0, 0, 0])]),
        Reset(2, 2),
    ));
    c.push(case(
        "BGP identifier 0.0.0.0",
        "RFC 6286 §2.2",
        cx4(),
        open_full(4, 65001, 90, [0, 0, 0, 0], &[]),
        Reset(2, 3),
    ));
    c.push(case(
        "optional parameter type 1 (authentication)",
        "RFC 5492 §3",
        cx4(),
        open_full(4, 65001, 90, [1, 1, 1, 1], &param(1, &[0])),
        Reset(2, 4),
    ));
    c.push(case(
        "optional parameter type 3",
        "RFC 4271 §6.2",
        cx4(),
        open_full(4, 65001, 90, [1, 1, 1, 1], &param(3, &[])),
        Reset(2, 4),
    ));
    c.push(case(
        "hold time 1",
        "RFC 4271 §6.2",
        cx4(),
        open_full(4, 65001, 1, [1, 1, 1, 1], &[]),
        Reset(2, 6),
    ));
    c.push(case(
        "hold time 2",
        "RFC 4271 §6.2",
        cx4(),
        open_full(4, 65001, 2, [1, 1, 1, 1], &[]),
        Reset(2, 6),
    ));
    c.push(case(
        "hold time 0 is fine",
        "RFC 4271 §4.2",
        cx4(),
        open_full(4, 65001, 0, [1, 1, 1, 1], &[]),
        Accept,
    ));
    c.push(case(
        "hold time 3 is fine",
        "RFC 4271 §4.2",
        cx4(),
        open_full(4, 65001, 3, [1, 1, 1, 1], &[]),
        Accept,
    ));
    let mut overrun = open_full(4, 65001, 90, [1, 1, 1, 1], &param(2, &cap(2, &[])));
    overrun[28] = 9;
    c.push(case(
        "optional parameters length overruns message",
        "RFC 4271 §6.2",
        cx4(),
        overrun,
        Reset(2, 0),
    ));
    let mut trailing = open_full(4, 65001, 90, [1, 1, 1, 1], &param(2, &cap(2, &[])));
    trailing.extend_from_slice(&[0, 0]);
    trailing[17] += 2;
    c.push(case(
        "trailing garbage after optional parameters",
        "RFC 4271 §6.2",
        cx4(),
        trailing,
        Reset(2, 0),
    ));
    c.push(case(
        "parameter length overruns parameters",
        "RFC 5492 §4",
        cx4(),
        open_full(4, 65001, 90, [1, 1, 1, 1], &[2, 5, 2, 0]),
        Reset(2, 0),
    ));
    c.push(case(
        "capability TLV truncated",
        "RFC 5492 §4",
        cx4(),
        open_full(4, 65001, 90, [1, 1, 1, 1], &param(2, &[1, 4, 0, 1])),
        Reset(2, 0),
    ));
    c.push(case(
        "multiprotocol capability length 3",
        "RFC 4760 §8",
        cx4(),
        open_caps(&[cap(1, &[0, 1, 0])]),
        Reset(2, 0),
    ));
    c.push(case(
        "route refresh capability with a value",
        "RFC 2918 §2",
        cx4(),
        open_caps(&[cap(2, &[1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "extended next hop capability length 4",
        "RFC 8950 §3",
        cx4(),
        open_caps(&[cap(5, &[0, 1, 0, 1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "extended message capability with a value",
        "RFC 8654 §3",
        cx4(),
        open_caps(&[cap(6, &[0])]),
        Reset(2, 0),
    ));
    c.push(case(
        "role capability length 2",
        "RFC 9234 §4.1",
        cx4(),
        open_caps(&[cap(9, &[0, 0])]),
        Reset(2, 0),
    ));
    c.push(case(
        "graceful restart capability length 1",
        "RFC 4724 §3",
        cx4(),
        open_caps(&[cap(64, &[0])]),
        Reset(2, 0),
    ));
    c.push(case(
        "graceful restart family list not multiple of 4",
        "RFC 4724 §3",
        cx4(),
        open_caps(&[cap(64, &[0, 90, 0, 1, 1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "4-octet AS capability length 2",
        "RFC 6793 §9",
        cx4(),
        open_caps(&[cap(65, &[0, 1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "ADD-PATH capability length 3",
        "RFC 7911 §4",
        cx4(),
        open_caps(&[cap(69, &[0, 1, 1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "enhanced route refresh capability with a value",
        "RFC 7313 §3.1",
        cx4(),
        open_caps(&[cap(70, &[1])]),
        Reset(2, 0),
    ));
    c.push(case(
        "LLGR capability length 6",
        "RFC 9494 §3",
        cx4(),
        open_caps(&[cap(71, &[0, 1, 1, 0, 0, 0])]),
        Reset(2, 0),
    ));
    c.push(case(
        "FQDN capability that is not UTF-8 is kept opaque",
        "RFC 5492 §3",
        cx4(),
        open_caps(&[cap(73, &[1, 0xff, 0])]),
        Accept,
    ));
    c.push(case(
        "unknown capability kept opaque",
        "RFC 5492 §3",
        cx4(),
        open_caps(&[cap(200, &[1, 2, 3])]),
        Accept,
    ));
    c.push(case(
        "RFC 9072 extended parameters length overruns",
        "RFC 9072 §2",
        cx4(),
        open_raw(255, &[255, 0, 50, 2, 0, 2, 2, 0]),
        Reset(2, 0),
    ));
    c.push(case(
        "RFC 9072 extended parameters decode",
        "RFC 9072 §2",
        cx4(),
        open_raw(255, &[255, 0, 5, 2, 0, 2, 2, 0]),
        Accept,
    ));
    c.push(case(
        "RFC 9072 parameter length overruns",
        "RFC 9072 §2",
        cx4(),
        open_raw(255, &[255, 0, 5, 2, 0, 9, 2, 0]),
        Reset(2, 0),
    ));

    // ---- ROUTE-REFRESH, RFC 7313 §5 ----
    c.push(case(
        "BoRR with 5-octet body",
        "RFC 7313 §5",
        cx4(),
        msg(5, &[0, 1, 1, 1, 0]),
        Reset(7, 1),
    ));
    c.push(case(
        "EoRR with 6-octet body",
        "RFC 7313 §5",
        cx4(),
        msg(5, &[0, 1, 2, 1, 0, 0]),
        Reset(7, 1),
    ));
    c.push(case(
        "reserved subtype decodes (to be ignored)",
        "RFC 7313 §5",
        cx4(),
        msg(5, &[0, 1, 9, 1]),
        Accept,
    ));
    c.push(case(
        "request with ORF entries decodes",
        "RFC 5291 §4",
        cx4(),
        msg(5, &[0, 1, 0, 1, 1, 0, 0]),
        Accept,
    ));

    // ---- UPDATE session reset ----
    c.push(case(
        "withdrawn routes length overruns message",
        "RFC 4271 §6.3, RFC 7606 §3(b)",
        cx4(),
        msg(2, &[0, 50, 0, 0]),
        Reset(3, 1),
    ));
    c.push(case(
        "total attribute length overruns message",
        "RFC 4271 §6.3, RFC 7606 §3(b)",
        cx4(),
        msg(2, &[0, 0, 0, 50]),
        Reset(3, 1),
    ));
    c.push(case(
        "no room for total attribute length",
        "RFC 7606 §3(b)",
        cx4(),
        msg(2, &[0, 2, 8, 10]),
        Reset(3, 1),
    ));
    c.push(case(
        "withdrawn prefix length 33",
        "RFC 7606 §3(i), §5.3",
        cx4(),
        update_raw(&[33, 1, 2, 3, 4, 5], &[], &[]),
        Reset(3, 10),
    ));
    c.push(case(
        "withdrawn prefix overruns field",
        "RFC 7606 §3(i), §5.3",
        cx4(),
        update_raw(&[24, 10], &[], &[]),
        Reset(3, 10),
    ));
    c.push(case(
        "NLRI prefix length 33",
        "RFC 4271 §6.3, RFC 7606 §5.3",
        cx4(),
        upd4_nlri(&[], &[33, 1, 2, 3, 4, 5]),
        Reset(3, 10),
    ));
    c.push(case(
        "NLRI prefix length 255",
        "RFC 4271 §6.3, RFC 7606 §5.3",
        cx4(),
        upd4_nlri(&[], &[255]),
        Reset(3, 10),
    ));
    c.push(case(
        "NLRI trailing garbage",
        "RFC 4271 §6.3, RFC 7606 §5.3",
        cx4(),
        upd4_nlri(&[], &[24, 10, 0, 1, 24, 10]),
        Reset(3, 10),
    ));
    c.push(case(
        "ADD-PATH NLRI with truncated path id",
        "RFC 7911 §3, RFC 7606 §5.3",
        cx_add_path(),
        upd4_nlri(&[], &[0, 0, 1]),
        Reset(3, 10),
    ));
    c.push(case(
        "ADD-PATH NLRI missing its prefix",
        "RFC 7911 §3, RFC 7606 §5.3",
        cx_add_path(),
        upd4_nlri(&[], &[0, 0, 0, 1]),
        Reset(3, 10),
    ));
    c.push(case(
        "unrecognized well-known attribute",
        "RFC 4271 §6.3",
        cx4(),
        upd4(&attr(0x40, 99, &[1])),
        Reset(3, 2),
    ));
    let mp = mp_reach(2, 1, &v6nh(), &[48, 0x20, 1, 0xd, 0xb8, 0, 1]);
    c.push(case(
        "MP_REACH_NLRI twice",
        "RFC 7606 §3(g)",
        cx4(),
        update_raw(
            &[],
            &[origin(), as_path4(), mp.clone(), mp.clone()].concat(),
            &[],
        ),
        Reset(3, 1),
    ));
    let mu = mp_unreach(2, 1, &[]);
    c.push(case(
        "MP_UNREACH_NLRI twice",
        "RFC 7606 §3(g)",
        cx4(),
        update_raw(&[], &[mu.clone(), mu].concat(), &[]),
        Reset(3, 1),
    ));
    c.push(case(
        "MP_REACH_NLRI of 3 octets",
        "RFC 7606 §7.11",
        cx4(),
        update_raw(&[], &attr(0x80, 14, &[0, 2, 1]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv4 next hop length 5",
        "RFC 7606 §7.11",
        cx4(),
        update_raw(
            &[],
            &[
                origin(),
                as_path4(),
                mp_reach(1, 1, &[1, 2, 3, 4, 5], &[8, 10]),
            ]
            .concat(),
            &[],
        ),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv6 next hop length 4",
        "RFC 7606 §7.11",
        cx4(),
        upd_v6(&[1, 2, 3, 4], &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv6 next hop length 20",
        "RFC 7606 §7.11",
        cx4(),
        upd_v6(&[0; 20], &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv6 next hop length 0",
        "RFC 7606 §7.11",
        cx4(),
        upd_v6(&[], &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH next hop overruns attribute",
        "RFC 7606 §7.11",
        cx4(),
        update_raw(&[], &attr(0x80, 14, &[0, 2, 1, 16, 0x20, 1]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH missing reserved octet",
        "RFC 4760 §3, RFC 7606 §7.11",
        cx4(),
        update_raw(&[], &attr(0x80, 14, &[0, 1, 1, 4, 1, 2, 3, 4]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv6 prefix length 129",
        "RFC 7606 §3(j), §5.3",
        cx4(),
        upd_v6(&v6nh(), &[129, 0]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv6 prefix overruns",
        "RFC 7606 §3(j), §5.3",
        cx4(),
        upd_v6(&v6nh(), &[64, 0x20, 1]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH IPv4 (RFC 8950) prefix length 40",
        "RFC 7606 §3(j), §5.3",
        cx4(),
        update_raw(
            &[],
            &[
                origin(),
                as_path4(),
                mp_reach(1, 1, &v6nh(), &[40, 1, 2, 3, 4, 5]),
            ]
            .concat(),
            &[],
        ),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_UNREACH of 2 octets",
        "RFC 7606 §7.11",
        cx4(),
        update_raw(&[], &attr(0x80, 15, &[0, 2]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_UNREACH IPv6 prefix length 200",
        "RFC 7606 §3(j), §5.3",
        cx4(),
        update_raw(&[], &mp_unreach(2, 1, &[200, 1]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_UNREACH ADD-PATH truncated path id",
        "RFC 7911 §3, RFC 7606 §3(j)",
        cx_add_path(),
        update_raw(&[], &mp_unreach(2, 1, &[0, 0]), &[]),
        Reset(3, 9),
    ));
    c.push(case(
        "MP_REACH flagged well-known",
        "RFC 7606 §3(c), §7.11",
        cx4(),
        update_raw(
            &[],
            &[
                origin(),
                as_path4(),
                attr(
                    0x40,
                    14,
                    &[
                        0, 2, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0,
                    ],
                ),
            ]
            .concat(),
            &[],
        ),
        Reset(3, 4),
    ));
    c.push(case(
        "MP_UNREACH flagged transitive",
        "RFC 7606 §3(c), §7.11",
        cx4(),
        update_raw(&[], &attr(0xc0, 15, &[0, 2, 1]), &[]),
        Reset(3, 4),
    ));

    // ---- UPDATE treat-as-withdraw ----
    c.push(case(
        "ORIGIN length 2",
        "RFC 7606 §7.1",
        cx4(),
        upd_attrs(&[attr(0x40, 1, &[0, 0]), as_path4(), next_hop()]),
        Withdraw(1, 5),
    ));
    c.push(case(
        "ORIGIN value 3",
        "RFC 7606 §7.1",
        cx4(),
        upd_attrs(&[attr(0x40, 1, &[3]), as_path4(), next_hop()]),
        Withdraw(1, 6),
    ));
    c.push(case(
        "ORIGIN flagged optional",
        "RFC 7606 §3(c)",
        cx4(),
        upd_attrs(&[attr(0xc0, 1, &[0]), as_path4(), next_hop()]),
        Withdraw(1, 4),
    ));
    c.push(case(
        "AS_PATH segment overrun",
        "RFC 7606 §7.2",
        cx4(),
        upd_attrs(&[
            origin(),
            attr(0x40, 2, &[2, 2, 0, 0, 0xfd, 0xe9]),
            next_hop(),
        ]),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH unknown segment type 5",
        "RFC 7606 §7.2",
        cx4(),
        upd_attrs(&[
            origin(),
            attr(0x40, 2, &[5, 1, 0, 0, 0xfd, 0xe9]),
            next_hop(),
        ]),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH segment type 0",
        "RFC 7606 §7.2",
        cx4(),
        upd_attrs(&[
            origin(),
            attr(0x40, 2, &[0, 1, 0, 0, 0xfd, 0xe9]),
            next_hop(),
        ]),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH segment length 0",
        "RFC 7606 §7.2",
        cx4(),
        upd_attrs(&[origin(), attr(0x40, 2, &[2, 0]), next_hop()]),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH one octet left after a segment",
        "RFC 7606 §7.2",
        cx4(),
        upd_attrs(&[
            origin(),
            attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9, 2]),
            next_hop(),
        ]),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH 2-octet segment overrun",
        "RFC 7606 §7.2",
        cx2(),
        update_raw(
            &[],
            &[origin(), attr(0x40, 2, &[2, 2, 0xfd, 0xe9, 0]), next_hop()].concat(),
            NLRI,
        ),
        Withdraw(2, 11),
    ));
    c.push(case(
        "4-octet AS_PATH on a 2-octet session",
        "RFC 6793 §4.2, RFC 7606 §7.2",
        cx2(),
        update_raw(
            &[],
            &[
                origin(),
                attr(0x40, 2, &[2, 2, 0, 0, 0xfd, 0xe9, 0, 0]),
                next_hop(),
            ]
            .concat(),
            NLRI,
        ),
        Withdraw(2, 11),
    ));
    c.push(case(
        "AS_PATH flagged optional",
        "RFC 7606 §3(c)",
        cx4(),
        upd_attrs(&[
            origin(),
            attr(0xc0, 2, &[2, 1, 0, 0, 0xfd, 0xe9]),
            next_hop(),
        ]),
        Withdraw(2, 4),
    ));
    c.push(case(
        "NEXT_HOP length 5",
        "RFC 7606 §7.3",
        cx4(),
        upd_attrs(&[origin(), as_path4(), attr(0x40, 3, &[1, 2, 3, 4, 5])]),
        Withdraw(3, 5),
    ));
    c.push(case(
        "NEXT_HOP 0.0.0.0",
        "RFC 4271 §6.3, RFC 7606 §7.3",
        cx4(),
        upd_attrs(&[origin(), as_path4(), attr(0x40, 3, &[0, 0, 0, 0])]),
        Withdraw(3, 8),
    ));
    c.push(case(
        "NEXT_HOP multicast",
        "RFC 4271 §6.3, RFC 7606 §7.3",
        cx4(),
        upd_attrs(&[origin(), as_path4(), attr(0x40, 3, &[224, 0, 0, 5])]),
        Withdraw(3, 8),
    ));
    c.push(case(
        "NEXT_HOP flagged optional",
        "RFC 7606 §3(c)",
        cx4(),
        upd_attrs(&[origin(), as_path4(), attr(0x80, 3, &[192, 0, 2, 1])]),
        Withdraw(3, 4),
    ));
    c.push(case(
        "MULTI_EXIT_DISC length 3",
        "RFC 7606 §7.4",
        cx4(),
        upd4(&attr(0x80, 4, &[0, 0, 1])),
        Withdraw(4, 5),
    ));
    c.push(case(
        "MULTI_EXIT_DISC flagged well-known",
        "RFC 7606 §3(c)",
        cx4(),
        upd4(&attr(0x40, 4, &[0, 0, 0, 1])),
        Withdraw(4, 4),
    ));
    c.push(case(
        "LOCAL_PREF length 2 from iBGP",
        "RFC 7606 §7.5",
        cx4(),
        upd4(&attr(0x40, 5, &[0, 100])),
        Withdraw(5, 5),
    ));
    c.push(case(
        "COMMUNITIES length 5",
        "RFC 7606 §7.8",
        cx4(),
        upd4(&attr(0xc0, 8, &[0, 1, 0, 1, 0])),
        Withdraw(8, 5),
    ));
    c.push(case(
        "COMMUNITIES length 0",
        "RFC 7606 §7.8",
        cx4(),
        upd4(&attr(0xc0, 8, &[])),
        Withdraw(8, 5),
    ));
    c.push(case(
        "COMMUNITIES flagged non-transitive",
        "RFC 7606 §3(c)",
        cx4(),
        upd4(&attr(0x80, 8, &[0, 1, 0, 1])),
        Withdraw(8, 4),
    ));
    c.push(case(
        "ORIGINATOR_ID length 3",
        "RFC 7606 §7.9",
        cx4(),
        upd4(&attr(0x80, 9, &[1, 2, 3])),
        Withdraw(9, 5),
    ));
    c.push(case(
        "CLUSTER_LIST length 6",
        "RFC 7606 §7.10",
        cx4(),
        upd4(&attr(0x80, 10, &[1, 2, 3, 4, 5, 6])),
        Withdraw(10, 5),
    ));
    c.push(case(
        "EXTENDED_COMMUNITIES length 7",
        "RFC 7606 §7.14",
        cx4(),
        upd4(&attr(0xc0, 16, &[0; 7])),
        Withdraw(16, 5),
    ));
    c.push(case(
        "LARGE_COMMUNITY length 13",
        "RFC 8092 §6",
        cx4(),
        upd4(&attr(0xc0, 32, &[0; 13])),
        Withdraw(32, 5),
    ));
    c.push(case(
        "OTC length 3",
        "RFC 9234 §5",
        cx4(),
        upd4(&attr(0xc0, 35, &[0, 0, 1])),
        Withdraw(35, 5),
    ));
    c.push(case(
        "OTC flagged non-transitive",
        "RFC 7606 §3(c), RFC 9234 §5",
        cx4(),
        upd4(&attr(0x80, 35, &[0, 0, 0, 1])),
        Withdraw(35, 4),
    ));
    c.push(case(
        "missing ORIGIN",
        "RFC 7606 §3(d)",
        cx4(),
        upd_attrs(&[as_path4(), next_hop()]),
        Withdraw(1, 3),
    ));
    c.push(case(
        "missing AS_PATH",
        "RFC 7606 §3(d)",
        cx4(),
        upd_attrs(&[origin(), next_hop()]),
        Withdraw(2, 3),
    ));
    c.push(case(
        "missing NEXT_HOP with IPv4 NLRI",
        "RFC 7606 §3(d)",
        cx4(),
        upd_attrs(&[origin(), as_path4()]),
        Withdraw(3, 3),
    ));
    c.push(case(
        "MP_REACH without ORIGIN",
        "RFC 4760 §3, RFC 7606 §3(d)",
        cx4(),
        update_raw(
            &[],
            &[
                as_path4(),
                mp_reach(2, 1, &v6nh(), &[32, 0x20, 1, 0xd, 0xb8]),
            ]
            .concat(),
            &[],
        ),
        Withdraw(1, 3),
    ));
    c.push(case(
        "attribute length overruns attribute list",
        "RFC 7606 §4",
        cx4(),
        update_raw(
            &[],
            &[origin(), as_path4(), next_hop(), vec![0xc0, 8, 20, 0, 1]].concat(),
            NLRI,
        ),
        Withdraw(8, 1),
    ));
    c.push(case(
        "two octets left in attribute list",
        "RFC 7606 §4",
        cx4(),
        update_raw(
            &[],
            &[origin(), as_path4(), next_hop(), vec![0xc0, 8]].concat(),
            NLRI,
        ),
        Withdraw(8, 1),
    ));
    c.push(case(
        "extended-length header truncated",
        "RFC 7606 §4",
        cx4(),
        update_raw(
            &[],
            &[origin(), as_path4(), next_hop(), vec![0xd0, 8, 0]].concat(),
            NLRI,
        ),
        Withdraw(8, 1),
    ));
    c.push(case(
        "discard plus withdraw: strongest wins",
        "RFC 7606 §3(h)",
        cx4(),
        upd4(&[attr(0x40, 6, &[1]), attr(0x80, 4, &[1])].concat()),
        Withdraw(4, 5),
    ));

    // ---- UPDATE attribute discard ----
    c.push(case(
        "ATOMIC_AGGREGATE length 1",
        "RFC 7606 §7.6",
        cx4(),
        upd4(&attr(0x40, 6, &[1])),
        Discard(6, 5),
    ));
    c.push(case(
        "ATOMIC_AGGREGATE flagged optional",
        "RFC 7606 §3(c), §7.6",
        cx4(),
        upd4(&attr(0xc0, 6, &[])),
        Discard(6, 4),
    ));
    c.push(case(
        "AGGREGATOR length 7 (4-octet session)",
        "RFC 7606 §7.7",
        cx4(),
        upd4(&attr(0xc0, 7, &[0; 7])),
        Discard(7, 5),
    ));
    c.push(case(
        "AGGREGATOR length 8 (2-octet session)",
        "RFC 7606 §7.7",
        cx2(),
        update_raw(
            &[],
            &[origin(), as_path2(), next_hop(), attr(0xc0, 7, &[0; 8])].concat(),
            NLRI,
        ),
        Discard(7, 5),
    ));
    c.push(case(
        "AGGREGATOR flagged non-transitive",
        "RFC 7606 §3(c), §7.7",
        cx4(),
        upd4(&attr(0x80, 7, &[0, 0, 0, 1, 1, 2, 3, 4])),
        Discard(7, 4),
    ));
    c.push(case(
        "AS4_PATH segment overrun",
        "RFC 6793 §6",
        cx2(),
        update_raw(
            &[],
            &[
                origin(),
                as_path2(),
                next_hop(),
                attr(0xc0, 17, &[2, 2, 0, 0, 0xfd, 0xe9]),
            ]
            .concat(),
            NLRI,
        ),
        Discard(17, 11),
    ));
    c.push(case(
        "AS4_PATH with confederation segment",
        "RFC 6793 §3, §6",
        cx2(),
        update_raw(
            &[],
            &[
                origin(),
                as_path2(),
                next_hop(),
                attr(0xc0, 17, &[3, 1, 0, 0, 0xfd, 0xe9]),
            ]
            .concat(),
            NLRI,
        ),
        Discard(17, 11),
    ));
    c.push(case(
        "AS4_AGGREGATOR length 6",
        "RFC 6793 §6",
        cx2(),
        update_raw(
            &[],
            &[origin(), as_path2(), next_hop(), attr(0xc0, 18, &[0; 6])].concat(),
            NLRI,
        ),
        Discard(18, 5),
    ));
    c.push(case(
        "ORIGIN twice",
        "RFC 7606 §3(g)",
        cx4(),
        upd4(&attr(0x40, 1, &[2])),
        Discard(1, 1),
    ));
    c.push(case(
        "COMMUNITIES twice",
        "RFC 7606 §3(g)",
        cx4(),
        upd4(&[attr(0xc0, 8, &[0, 1, 0, 1]), attr(0xc0, 8, &[0, 1, 0, 2])].concat()),
        Discard(8, 1),
    ));
    c.push(case(
        "unknown optional attribute twice",
        "RFC 7606 §3(g)",
        cx4(),
        upd4(&[attr(0xc0, 99, &[1]), attr(0xc0, 99, &[2])].concat()),
        Discard(99, 1),
    ));
    c.push(case(
        "LOCAL_PREF from an external peer",
        "RFC 7606 §7.5",
        cx4_ebgp(),
        upd4(&attr(0x40, 5, &[0, 0, 0, 100])),
        Discard(5, 1),
    ));

    // ---- accepted ----
    c.push(case(
        "empty UPDATE (IPv4 End-of-RIB)",
        "RFC 4724 §2",
        cx4(),
        update_raw(&[], &[], &[]),
        Accept,
    ));
    c.push(case(
        "attributes without NLRI need no mandatory set",
        "RFC 4271 §5",
        cx4(),
        update_raw(&[], &next_hop(), &[]),
        Accept,
    ));
    c.push(case(
        "NLRI trailing bits are ignored",
        "RFC 4271 §4.3",
        cx4(),
        upd4_nlri(&[], &[23, 10, 0, 1]),
        Accept,
    ));
    c.push(case(
        "unknown optional transitive attribute kept",
        "RFC 4271 §5",
        cx4(),
        upd4(&attr(0xe0, 99, &[1, 2])),
        Accept,
    ));
    c.push(case(
        "one octet left in attribute list",
        "RFC 7606 §4",
        cx4(),
        update_raw(
            &[],
            &[origin(), as_path4(), next_hop(), vec![0xc0]].concat(),
            NLRI,
        ),
        Withdraw(0, 1),
    ));
    c.push(case(
        "attributes in any order",
        "RFC 7606 §5.1",
        cx4(),
        upd_attrs(&[next_hop(), as_path4(), origin()]),
        Accept,
    ));
    c.push(case(
        "MP_REACH-only UPDATE needs no NEXT_HOP",
        "RFC 4760 §3",
        cx4(),
        upd_v6(&v6nh(), &[32, 0x20, 1, 0xd, 0xb8]),
        Accept,
    ));
    c.push(case(
        "RFC 8950 IPv4 NLRI with IPv6 next hop + link-local",
        "RFC 8950 §3",
        cx4(),
        update_raw(
            &[],
            &[
                origin(),
                as_path4(),
                mp_reach(1, 1, &[v6nh(), v6nh()].concat(), &[24, 10, 0, 1]),
            ]
            .concat(),
            &[],
        ),
        Accept,
    ));
    c.push(case(
        "ADD-PATH NLRI with path ids",
        "RFC 7911 §3",
        cx_add_path(),
        upd4_nlri(&[], &[0, 0, 0, 1, 24, 10, 0, 1, 0, 0, 0, 2, 24, 10, 0, 1]),
        Accept,
    ));
    c.push(case(
        "extended length flag on a short attribute",
        "RFC 4271 §4.3",
        cx4(),
        upd4(&attr(0xd0, 8, &[0, 1, 0, 1])),
        Accept,
    ));
    c
}

fn check(c: &Case) -> Result<(), String> {
    let got = decode_message(&c.bytes, &c.cx);
    let describe = |g: &Result<Message, tabby_bgp::wire::MessageError>| format!("{g:?}");
    match (c.want, &got) {
        (Reset(code, sub), Err(e)) => {
            let n = e.notification();
            if (n.code, n.subcode) != (code, sub) {
                return Err(format!(
                    "want NOTIFICATION {code}/{sub}, got {}/{}: {e}",
                    n.code, n.subcode
                ));
            }
            if e.to_string().len() < 12 {
                return Err(format!("error text too terse: {e}"));
            }
            Ok(())
        }
        (Withdraw(t, sub) | Discard(t, sub), Ok(Message::Update(u))) => {
            let (action, ea) = match c.want {
                Withdraw(..) => (UpdateAction::TreatAsWithdraw, ErrorAction::TreatAsWithdraw),
                _ => (
                    UpdateAction::AttributeDiscard,
                    ErrorAction::AttributeDiscard,
                ),
            };
            if u.action != action {
                return Err(format!(
                    "want {action:?}, got {:?} with errors {:?}",
                    u.action, u.errors
                ));
            }
            if !u
                .errors
                .iter()
                .any(|e| e.type_code == t && e.subcode as u8 == sub && e.action == ea)
            {
                return Err(format!(
                    "no error for type {t} subcode {sub} {ea:?} in {:?}",
                    u.errors
                ));
            }
            // A discarded or malformed attribute never survives into the attribute list
            // (a duplicate's first copy does).
            Ok(())
        }
        (Accept, Ok(m)) => match m {
            Message::Update(u) if !u.errors.is_empty() || u.action != UpdateAction::Accept => Err(
                format!("want clean accept, got {:?} {:?}", u.action, u.errors),
            ),
            _ => Ok(()),
        },
        _ => Err(format!("want {:?}, got {}", c.want, describe(&got))),
    }
}

#[test]
fn malformed_message_table() {
    let cases = cases();
    let mut failures = Vec::new();
    for c in &cases {
        if let Err(why) = check(c) {
            failures.push(format!("{} ({}): {why}", c.name, c.rfc));
        }
    }
    println!("{} malformed-input cases", cases.len());
    assert!(
        cases.len() >= 80,
        "the issue asks for at least 80 cases, have {}",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn notification_data_follows_rfc_4271_section_6() {
    // Bad Message Length carries the erroneous length field.
    let mut m = msg(4, &[]);
    m[17] = 18;
    let e = decode_message(&m, &DecodeContext::default()).unwrap_err();
    assert_eq!(e.notification().data, vec![0, 18]);
    // Bad Message Type carries the type.
    let e = decode_message(&msg(9, &[]), &DecodeContext::default()).unwrap_err();
    assert_eq!(e.notification().data, vec![9]);
    // Unsupported Version Number carries the largest supported version.
    let e = decode_message(
        &open_full(5, 1, 90, [1, 1, 1, 1], &[]),
        &DecodeContext::default(),
    )
    .unwrap_err();
    assert_eq!(e.notification().data, vec![0, 4]);
    // Unrecognized Well-known Attribute carries the attribute.
    let e = decode_message(&upd4(&attr(0x40, 99, &[7])), &cx4()).unwrap_err();
    assert_eq!(e.notification().data, vec![0x40, 99, 1, 7]);
    assert_eq!(
        e.to_string(),
        "UPDATE: unrecognized well-known attribute type 99"
    );
}

#[test]
fn error_messages_name_the_field() {
    let e = decode_message(&upd4_nlri(&[], &[33, 1, 2, 3, 4, 5]), &cx4()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "UPDATE: NLRI: prefix length 33 exceeds 32 at offset 0"
    );
    let u = match decode_message(
        &upd_attrs(&[
            origin(),
            attr(0x40, 2, &[2, 7, 0, 0, 0xfd, 0xe9]),
            next_hop(),
        ]),
        &cx4(),
    )
    .unwrap()
    {
        Message::Update(u) => u,
        m => panic!("{m:?}"),
    };
    assert_eq!(
        u.errors[0].reason,
        "AS_PATH: segment length 7 needs 28 octets but only 4 remain"
    );
    assert_eq!(u.errors[0].rfc, "RFC 7606 §7.2");
}
