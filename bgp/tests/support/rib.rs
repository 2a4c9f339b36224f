//! RIB fixtures: peers, UPDATE builders, update-group keys, and the injector-shaped bulk
//! table (P peers × M /24s in UPDATEs of 500 NLRI, as bgperf sends them).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tabby_bgp::policy::{Policy, Verdict};
use tabby_bgp::rib::out::{GroupKey, OutBatch, UpdateGroups};
use tabby_bgp::rib::rules::ExportTarget;
use tabby_bgp::rib::{NextHopMode, PeerId, PeerInfo, PeerType, Rib, RibConfig};
use tabby_bgp::wire::{
    AsPath, Asn, AttributeValue, DecodeContext, Ipv4Nlri, Ipv4Prefix, Message, Origin, Update,
    decode_message,
};

/// Our AS and router id in every RIB fixture.
pub const LOCAL_AS: u32 = 64512;
pub const RID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

pub fn p4(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

/// Four-octet AS numbers negotiated, everything else default.
pub fn cx() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    }
}

/// Peer `id`: router id 10.0.0.id, address 192.0.2.id.
pub fn peer(id: u32, t: PeerType, asn: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId(id),
        peer_type: t,
        asn: Asn(asn),
        router_id: Ipv4Addr::new(10, 0, 0, id as u8),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id as u8)),
    }
}

pub fn accept_all() -> Arc<Policy> {
    Arc::new(Policy::all("accept-all", Verdict::Accept))
}

/// An empty RIB as `LOCAL_AS` / `RID` with `max_paths` ECMP paths.
pub fn empty_rib(max_paths: usize) -> Rib {
    let mut cfg = RibConfig::new(Asn(LOCAL_AS), RID);
    cfg.best_path.max_paths = max_paths;
    Rib::new(cfg)
}

/// [`empty_rib`] with peers 1..=`peers` added without policies, of the type `t(id)`, all in
/// `LOCAL_AS`.
pub fn rib_with_peers(max_paths: usize, peers: u32, t: impl Fn(u32) -> PeerType) -> Rib {
    let mut r = empty_rib(max_paths);
    for id in 1..=peers {
        r.add_peer(peer(id, t(id), LOCAL_AS), None, None).unwrap();
    }
    r
}

/// An IPv4 UPDATE announcing `prefixes` via `nh` with AS path `path` plus extra attributes.
pub fn announce(
    prefixes: &[&str],
    nh: [u8; 4],
    path: &[u32],
    extra: Vec<AttributeValue>,
) -> Update {
    let mut attributes = vec![
        AttributeValue::Origin(Origin::Igp).into(),
        AttributeValue::AsPath(AsPath::sequence(path.iter().copied())).into(),
        AttributeValue::NextHop(Ipv4Addr::from(nh)).into(),
    ];
    attributes.extend(extra.into_iter().map(Into::into));
    Update {
        attributes,
        nlri: prefixes.iter().map(|p| Ipv4Nlri::new(p4(p))).collect(),
        ..Update::default()
    }
}

pub fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|p| Ipv4Nlri::new(p4(p))).collect(),
        ..Update::default()
    }
}

/// Peer `id` announces `prefixes` with next hop 192.0.2.`id` (its own address), AS path
/// `path` and `extra` attributes; the RIB must take the UPDATE.
pub fn announce_from(
    r: &mut Rib,
    id: u32,
    prefixes: &[&str],
    path: &[u32],
    extra: Vec<AttributeValue>,
) {
    r.receive(
        PeerId(id),
        &announce(prefixes, [192, 0, 2, id as u8], path, extra),
        &cx(),
    )
    .unwrap();
}

/// Peer `id` withdraws `prefixes`.
pub fn withdraw_from(r: &mut Rib, id: u32, prefixes: &[&str]) {
    r.receive(PeerId(id), &withdraw(prefixes), &cx()).unwrap();
}

/// An IPv4-only group key, four-octet AS, next hop `Auto`, local address 192.0.2.100.
pub fn group_key(t: PeerType, asn: u32, add_path: bool) -> GroupKey {
    GroupKey {
        target: ExportTarget {
            peer_type: t,
            peer_asn: Asn(asn),
            next_hop_mode: NextHopMode::Auto,
        },
        export_policy: None,
        four_octet_as: true,
        extended_message: false,
        extended_next_hop: false,
        ipv4: true,
        ipv6: false,
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 100)),
        local_v6: None,
        add_path_v4: add_path,
        add_path_v6: false,
    }
}

/// What injectors send: peers 1..=`peers` each announce `per_peer` /24s from 16.0.0.0 up
/// in UPDATEs of 500 NLRI, with AS path [65000 + id, `path_tail`], next hop 192.0.2.id and
/// LOCAL_PREF 100. `overlap`: every peer the same prefixes (best-path work); else each its
/// own.
pub fn injector_updates(
    peers: u32,
    per_peer: u32,
    overlap: bool,
    path_tail: u32,
) -> Vec<(PeerId, Update)> {
    let mut out = Vec::new();
    for id in 1..=peers {
        let base = if overlap { 0 } else { (id - 1) * per_peer };
        let attributes = vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([65000 + id, path_tail])).into(),
            AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, id as u8)).into(),
            AttributeValue::LocalPref(100).into(),
        ];
        let mut start = 0;
        while start < per_peer {
            let end = (start + 500).min(per_peer);
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

/// Feeds `updates` into `r`, draining the changes after each as the session loop does.
pub fn feed(r: &mut Rib, updates: &[(PeerId, Update)]) {
    let cx = cx();
    for (p, u) in updates {
        r.receive(*p, u, &cx).unwrap();
        std::hint::black_box(r.take_changes());
    }
}

/// Encodes `batch` as the group keyed `k` would send it and decodes the bytes again, so
/// tests check real bytes. Every message must fit RFC 4271 §4's 4096 octets and be an UPDATE.
pub fn wire_roundtrip(groups: &UpdateGroups, batch: &OutBatch, k: &GroupKey) -> Vec<Update> {
    groups
        .encode(batch)
        .unwrap()
        .iter()
        .map(|b| {
            assert!(
                b.len() <= 4096,
                "RFC 4271 §4: message of {} octets",
                b.len()
            );
            match decode_message(b, &k.context()).unwrap() {
                Message::Update(u) => u,
                m => panic!("not an UPDATE: {m:?}"),
            }
        })
        .collect()
}
