//! The RIB fed with UPDATEs: import rules, route reflection loop detection, RFC 8212 defaults,
//! graceful-restart stale handling, max-prefix, the next-hop change stream, and update groups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use tabby_bgp::policy::{Policy, PolicyConfig};
use tabby_bgp::rib::out::{GroupKey, UpdateGroups};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerId, PeerInfo, PeerType, Prefix, Rib};
use tabby_bgp::wire::{
    AsPath, AttributeValue, Community, DecodeContext, Family, Ipv4Nlri, Ipv4Prefix, Ipv6Nlri,
    Ipv6Prefix, MpNextHop, MpNlri, MpReach, MpUnreach, Origin, Update, UpdateAction,
};

mod support;
use support::rib::{
    LOCAL_AS, RID, accept_all, announce, announce_from, cx, empty_rib, group_key, p4, peer,
    wire_roundtrip, withdraw, withdraw_from,
};

fn rib() -> Rib {
    empty_rib(1)
}

#[test]
fn import_rules_table() {
    struct Case {
        name: &'static str,
        from: PeerInfo,
        update: Update,
        accepted: u32,
    }
    let ebgp = peer(1, PeerType::Ebgp, 65001);
    let ibgp = peer(2, PeerType::Ibgp, LOCAL_AS);
    let client = peer(3, PeerType::RrClient, LOCAL_AS);
    let cases = vec![
        Case {
            name: "RFC 4271 §9.1.2: own AS in AS_PATH is a loop",
            from: ebgp.clone(),
            update: announce(
                &["10.1.0.0/24"],
                [192, 0, 2, 1],
                &[65001, LOCAL_AS, 65003],
                vec![],
            ),
            accepted: 0,
        },
        Case {
            name: "RFC 4271 §9.1.2: a clean eBGP route is accepted",
            from: ebgp.clone(),
            update: announce(&["10.1.0.0/24"], [192, 0, 2, 1], &[65001], vec![]),
            accepted: 1,
        },
        Case {
            name: "RFC 4456 §8: ORIGINATOR_ID equal to our router id is a loop",
            from: client.clone(),
            update: announce(
                &["10.1.0.0/24"],
                [192, 0, 2, 3],
                &[],
                vec![
                    AttributeValue::LocalPref(100),
                    AttributeValue::OriginatorId(RID),
                ],
            ),
            accepted: 0,
        },
        Case {
            name: "RFC 4456 §8: our cluster id in CLUSTER_LIST is a loop",
            from: ibgp.clone(),
            update: announce(
                &["10.1.0.0/24"],
                [192, 0, 2, 2],
                &[],
                vec![
                    AttributeValue::LocalPref(100),
                    AttributeValue::ClusterList(vec![Ipv4Addr::new(1, 1, 1, 1), RID]),
                ],
            ),
            accepted: 0,
        },
        Case {
            name: "RFC 4456 §8: foreign ORIGINATOR_ID and CLUSTER_LIST are fine",
            from: ibgp.clone(),
            update: announce(
                &["10.1.0.0/24", "10.2.0.0/24"],
                [192, 0, 2, 2],
                &[],
                vec![
                    AttributeValue::LocalPref(100),
                    AttributeValue::OriginatorId(Ipv4Addr::new(10, 0, 0, 77)),
                    AttributeValue::ClusterList(vec![Ipv4Addr::new(1, 1, 1, 1)]),
                ],
            ),
            accepted: 2,
        },
        Case {
            name: "RFC 7606 §2: treat-as-withdraw accepts nothing",
            from: ibgp.clone(),
            update: Update {
                action: UpdateAction::TreatAsWithdraw,
                ..announce(&["10.1.0.0/24"], [192, 0, 2, 2], &[], vec![])
            },
            accepted: 0,
        },
    ];
    for c in cases {
        let mut r = rib();
        r.add_peer(c.from.clone(), Some(accept_all()), None)
            .unwrap();
        let out = r.receive(c.from.id, &c.update, &cx()).unwrap();
        assert_eq!(out.accepted, c.accepted, "{}", c.name);
        assert_eq!(r.accepted(c.from.id), Some(c.accepted), "{}", c.name);
        assert_eq!(r.v4().len() as u32, c.accepted, "{}", c.name);
    }
}

#[test]
fn rfc8212_defaults_and_local_pref_on_ebgp_import() {
    let mut r = rib();
    let e = peer(1, PeerType::Ebgp, 65001);
    let i = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(e.clone(), None, None).unwrap();
    r.add_peer(i.clone(), None, None).unwrap();
    // RFC 8212 §2: eBGP without import policy accepts nothing.
    let out = r
        .receive(
            e.id,
            &announce(&["10.1.0.0/24"], [192, 0, 2, 1], &[65001], vec![]),
            &cx(),
        )
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (0, 1));
    // iBGP without import policy accepts.
    let out = r
        .receive(
            i.id,
            &announce(&["10.2.0.0/24"], [192, 0, 2, 2], &[], vec![]),
            &cx(),
        )
        .unwrap();
    assert_eq!(out.accepted, 1);
    // RFC 4271 §5.1.5: LOCAL_PREF from an eBGP peer is ignored.
    r.set_import_policy(e.id, Some(accept_all())).unwrap();
    announce_from(
        &mut r,
        e.id.0,
        &["10.3.0.0/24"],
        &[65001],
        vec![AttributeValue::LocalPref(900)],
    );
    let best = r.best(&Prefix::V4(p4("10.3.0.0/24"))).unwrap();
    assert_eq!(best.attrs().local_pref, None);
}

#[test]
fn best_path_stream_with_ecmp_next_hops() {
    let mut r = empty_rib(4);
    for id in 1..=3 {
        r.add_peer(peer(id, PeerType::Ibgp, LOCAL_AS), None, None)
            .unwrap();
    }
    let pfx = "10.9.0.0/24";
    announce_from(&mut r, 1, &[pfx], &[65100], vec![]);
    announce_from(&mut r, 2, &[pfx], &[65200], vec![]);
    let ch = r.take_changes();
    let hops: Vec<_> = ch.next_hops().map(|(p, h)| (p, h.to_vec())).collect();
    drop(ch);
    let v = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
    assert_eq!(
        hops,
        vec![
            (Prefix::V4(p4(pfx)), vec![v([192, 0, 2, 1])]),
            (
                Prefix::V4(p4(pfx)),
                vec![v([192, 0, 2, 1]), v([192, 0, 2, 2])]
            ),
        ]
    );
    // A longer path does not join the set: no change.
    announce_from(&mut r, 3, &[pfx], &[65300, 1], vec![]);
    assert!(r.take_changes().is_empty());
    // Withdraw one member: the set shrinks.
    withdraw_from(&mut r, 1, &[pfx]);
    let ch = r.take_changes();
    assert_eq!(ch.v4.len(), 1);
    assert_eq!(ch.v4[0].next_hops[..], [v([192, 0, 2, 2])]);
    drop(ch);
    // Withdraw everything: empty next hops means "remove the kernel route".
    withdraw_from(&mut r, 2, &[pfx]);
    withdraw_from(&mut r, 3, &[pfx]);
    let ch = r.take_changes();
    assert_eq!(ch.v4.last().map(|c| c.next_hops.is_empty()), Some(true));
    assert!(r.v4().is_empty());
    drop(ch);
    r.purge();
    assert_eq!(r.attr_sets(), 0, "no interned set outlives its routes");
}

/// iBGP peer 2 added (no import policy needed), announcing `prefixes` with next hop
/// 192.0.2.2 and an empty AS path.
fn ibgp_source(r: &mut Rib, prefixes: &[&str]) -> PeerInfo {
    let src = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(src.clone(), None, None).unwrap();
    announce_from(r, src.id.0, prefixes, &[], vec![]);
    src
}

#[test]
fn graceful_restart_stale_and_sweep() {
    let mut r = rib();
    let i = ibgp_source(&mut r, &["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]);
    r.take_changes();
    // RFC 4724 §4.2: session lost, routes kept and still used.
    assert_eq!(r.mark_stale(i.id).unwrap(), 3);
    assert!(
        r.take_changes().is_empty(),
        "marking stale must not move forwarding"
    );
    let b = r.best(&Prefix::V4(p4("10.1.0.0/24"))).unwrap();
    assert!(b.is_stale());
    // The restarted peer re-announces two of them (fresh), then End-of-RIB.
    announce_from(&mut r, i.id.0, &["10.1.0.0/24", "10.2.0.0/24"], &[], vec![]);
    assert!(!r.best(&Prefix::V4(p4("10.1.0.0/24"))).unwrap().is_stale());
    let eor = r
        .receive(i.id, &Update::end_of_rib(Family::IPV4_UNICAST), &cx())
        .unwrap();
    assert_eq!(eor.end_of_rib, Some(Family::IPV4_UNICAST));
    assert_eq!(r.v4().len(), 2, "the one not refreshed is swept");
    assert!(r.best(&Prefix::V4(p4("10.3.0.0/24"))).is_none());
    assert_eq!(r.accepted(i.id), Some(2));
    let stats = r.stats();
    assert_eq!((stats.ipv4_prefixes, stats.attr_sets), (2, 1));
    assert_eq!(stats.accepted, vec![(0, 0), (2, 2)]);
    // Restart timer variant: everything still stale goes.
    r.mark_stale(i.id).unwrap();
    assert_eq!(r.sweep_stale(i.id).unwrap(), 2);
    assert!(r.v4().is_empty());
    assert_eq!(r.accepted(i.id), Some(0));
}

#[test]
fn max_prefix_counts_accepted_paths() {
    let mut r = rib();
    let i = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(i.clone(), None, Some(2)).unwrap();
    let out = r
        .receive(
            i.id,
            &announce(&["10.1.0.0/24", "10.2.0.0/24"], [192, 0, 2, 2], &[], vec![]),
            &cx(),
        )
        .unwrap();
    assert!(
        !out.max_prefix_exceeded,
        "RFC 4486 §4: at the limit is fine"
    );
    // Re-announcing the same prefixes does not count twice.
    let out = r
        .receive(
            i.id,
            &announce(&["10.1.0.0/24"], [192, 0, 2, 9], &[], vec![]),
            &cx(),
        )
        .unwrap();
    assert!(!out.max_prefix_exceeded);
    let out = r
        .receive(
            i.id,
            &announce(&["10.3.0.0/24"], [192, 0, 2, 2], &[], vec![]),
            &cx(),
        )
        .unwrap();
    assert!(
        out.max_prefix_exceeded,
        "RFC 4486 §4: one over the limit trips"
    );
    r.peer_down(i.id).unwrap();
    assert_eq!(r.accepted(i.id), Some(0));
    assert!(r.v4().is_empty());
}

#[test]
fn ipv6_and_as4_path_reconciliation() {
    let mut r = rib();
    let e = peer(1, PeerType::Ebgp, 65001);
    r.add_peer(e.clone(), Some(accept_all()), None).unwrap();
    let p6: Ipv6Prefix = "2001:db8:1::/48".parse().unwrap();
    let gw: Ipv6Addr = "2001:db8::1".parse().unwrap();
    // A 2-octet session: AS_PATH has AS_TRANS, AS4_PATH the real 4-octet AS (RFC 6793 §4.2.3).
    let u = Update {
        attributes: vec![
            AttributeValue::MpReachNlri(MpReach {
                next_hop: MpNextHop::Ipv6 {
                    global: gw,
                    link_local: None,
                },
                nlri: MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p6)]),
            })
            .into(),
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([65001, 23456])).into(),
            AttributeValue::As4Path(AsPath::sequence([4_200_000_000])).into(),
        ],
        ..Update::default()
    };
    let two_octet = DecodeContext::default();
    assert_eq!(r.receive(e.id, &u, &two_octet).unwrap().accepted, 1);
    let best = r.best(&Prefix::V6(p6)).unwrap();
    assert_eq!(
        best.attrs().as_path,
        AsPath::sequence([65001, 4_200_000_000])
    );
    assert_eq!(best.attrs().next_hop.addr(), IpAddr::V6(gw));
    let w = Update {
        attributes: vec![
            AttributeValue::MpUnreachNlri(MpUnreach {
                withdrawn: MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p6)]),
            })
            .into(),
        ],
        ..Update::default()
    };
    assert_eq!(r.receive(e.id, &w, &two_octet).unwrap().withdrawn, 1);
    assert!(r.v6().is_empty());
}

/// An IPv4 and IPv6 group key with an optional export policy.
fn key(t: PeerType, asn: u32, policy: Option<&str>) -> GroupKey {
    GroupKey {
        export_policy: policy.map(str::to_string),
        ipv6: true,
        ..group_key(t, asn, false)
    }
}

#[test]
fn update_groups_share_and_apply_export_rules() {
    let mut r = rib();
    let src_e = peer(1, PeerType::Ebgp, 65001);
    let src_i = peer(2, PeerType::Ibgp, LOCAL_AS);
    let src_c = peer(3, PeerType::RrClient, LOCAL_AS);
    for p in [&src_e, &src_i, &src_c] {
        r.add_peer(p.clone(), Some(accept_all()), None).unwrap();
    }
    let accept = accept_all();
    let mut g = UpdateGroups::new();
    // Targets: two eBGP peers in AS 65010 with the same policy share a group; an iBGP
    // non-client; an RR client.
    let ke = key(PeerType::Ebgp, 65010, Some("accept-all"));
    let ki = key(PeerType::Ibgp, LOCAL_AS, None);
    let kc = key(PeerType::RrClient, LOCAL_AS, None);
    let (ge1, d) = g
        .join(PeerId(10), ke.clone(), Some(accept.clone()), &r)
        .unwrap();
    assert!(d.is_empty());
    let (ge2, _) = g
        .join(PeerId(11), ke.clone(), Some(accept.clone()), &r)
        .unwrap();
    let (gi, _) = g.join(PeerId(12), ki.clone(), None, &r).unwrap();
    let (gc, _) = g.join(PeerId(13), kc.clone(), None, &r).unwrap();
    assert_eq!(ge1, ge2, "same key and policy: one group");
    assert_eq!(g.len(), 3);

    // Routes: from eBGP (with MED and LOCAL_PREF), from an iBGP non-client, from a client,
    // one with NO_EXPORT.
    announce_from(
        &mut r,
        src_e.id.0,
        &["10.1.0.0/24", "10.1.1.0/24"],
        &[65001],
        vec![AttributeValue::MultiExitDisc(5)],
    );
    announce_from(
        &mut r,
        src_i.id.0,
        &["10.2.0.0/24"],
        &[],
        vec![AttributeValue::LocalPref(120)],
    );
    announce_from(
        &mut r,
        src_c.id.0,
        &["10.3.0.0/24"],
        &[],
        vec![AttributeValue::LocalPref(100)],
    );
    announce_from(
        &mut r,
        src_i.id.0,
        &["10.4.0.0/24"],
        &[],
        vec![AttributeValue::Communities(vec![Community::NO_EXPORT])],
    );
    let mut local = PathAttrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED));
    local.med = Some(7);
    r.originate(Prefix::V4(p4("10.5.0.0/24")), local);
    let ch = r.take_changes();
    g.process(&ch, &r);
    drop(ch);
    let batches = g.flush().unwrap();
    assert_eq!(batches.len(), 3);
    let by_group = |id| batches.iter().find(|b| b.group == id).unwrap();
    assert_eq!(by_group(ge1).members, vec![PeerId(10), PeerId(11)]);

    let sent = |u: &[Update]| -> Vec<(Ipv4Prefix, Update)> {
        let mut v: Vec<(Ipv4Prefix, Update)> = u
            .iter()
            .flat_map(|m| m.nlri.iter().map(move |n| (n.prefix, m.clone())))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    };
    // eBGP group.
    let e = sent(&wire_roundtrip(&g, by_group(ge1), &ke));
    let prefixes: Vec<String> = e.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        prefixes,
        [
            "10.1.0.0/24",
            "10.1.1.0/24",
            "10.2.0.0/24",
            "10.3.0.0/24",
            "10.5.0.0/24"
        ],
        "RFC 1997: NO_EXPORT not sent to eBGP; everything else is"
    );
    let (_, u) = &e[0];
    assert_eq!(
        u.attribute(2),
        Some(&AttributeValue::AsPath(AsPath::sequence([LOCAL_AS, 65001]))),
        "RFC 4271 §5.1.2: own AS prepended"
    );
    assert_eq!(
        u.attribute(3),
        Some(&AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 100))),
        "eBGP next hop self"
    );
    assert_eq!(
        u.attribute(4),
        None,
        "RFC 4271 §5.1.4: a received MED is not passed to another AS"
    );
    assert_eq!(
        u.attribute(5),
        None,
        "RFC 4271 §5.1.5: no LOCAL_PREF to eBGP"
    );
    assert_eq!(
        e[0].1.nlri.len(),
        2,
        "NLRI sharing attributes are packed in one UPDATE"
    );
    let (_, local_u) = &e[4];
    assert_eq!(
        local_u.attribute(4),
        Some(&AttributeValue::MultiExitDisc(7)),
        "a locally set MED is sent"
    );

    // iBGP non-client: eBGP-learned, client and local routes; not the non-client's (RFC 4271 §9.2,
    // RFC 4456 §6).
    let i = sent(&wire_roundtrip(&g, by_group(gi), &ki));
    let prefixes: Vec<String> = i.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        prefixes,
        ["10.1.0.0/24", "10.1.1.0/24", "10.3.0.0/24", "10.5.0.0/24"]
    );
    let (_, u) = &i[0];
    assert_eq!(
        u.attribute(3),
        Some(&AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 1))),
        "iBGP keeps the next hop"
    );
    assert_eq!(
        u.attribute(5),
        Some(&AttributeValue::LocalPref(100)),
        "LOCAL_PREF sent inside the AS"
    );
    let (_, u) = &i[2];
    assert_eq!(
        u.attribute(9),
        Some(&AttributeValue::OriginatorId(src_c.router_id)),
        "RFC 4456 §8: ORIGINATOR_ID set on reflection"
    );
    assert_eq!(
        u.attribute(10),
        Some(&AttributeValue::ClusterList(vec![RID])),
        "RFC 4456 §8: cluster id prepended"
    );
    let (_, u) = &i[3];
    assert_eq!(
        u.attribute(3),
        Some(&AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, 100))),
        "local route: next hop self"
    );

    // RR client: everything, including the non-client route and NO_EXPORT.
    let c = sent(&wire_roundtrip(&g, by_group(gc), &kc));
    assert_eq!(c.len(), 6);

    // A withdrawal goes to each group that had the route, once.
    r.receive(src_e.id, &withdraw(&["10.1.0.0/24"]), &cx())
        .unwrap();
    let ch = r.take_changes();
    g.process(&ch, &r);
    let batches = g.flush().unwrap();
    assert_eq!(batches.len(), 3);
    for b in &batches {
        assert_eq!(b.updates.len(), 1);
        assert_eq!(
            b.updates[0].withdrawn,
            vec![Ipv4Nlri::new(p4("10.1.0.0/24"))]
        );
    }
    // A new member gets the current table as its initial dump.
    let (gi2, dump) = g.join(PeerId(14), ki.clone(), None, &r).unwrap();
    assert_eq!(gi2, gi);
    let n: usize = dump.iter().map(|u| u.nlri.len()).sum();
    assert_eq!(n, 3);
    g.leave(PeerId(14)).unwrap();
    g.leave(PeerId(12)).unwrap();
    assert_eq!(g.len(), 2, "an emptied group is dropped");
}

#[test]
fn update_packing_respects_message_size() {
    let mut r = rib();
    let src = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(src.clone(), None, None).unwrap();
    let mut g = UpdateGroups::new();
    let k = key(PeerType::RrClient, LOCAL_AS, None);
    g.join(PeerId(9), k.clone(), None, &r).unwrap();
    // 3000 /24s with the same attributes: 4 octets each, so more than one 4096-octet UPDATE.
    let prefixes: Vec<String> = (0..3000u32)
        .map(|i| format!("{}.{}.{}.0/24", 20 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    announce_from(&mut r, src.id.0, &refs, &[], vec![]);
    let ch = r.take_changes();
    g.process(&ch, &r);
    drop(ch);
    let batches = g.flush().unwrap();
    let updates = wire_roundtrip(&g, &batches[0], &k);
    assert!(updates.len() >= 3, "{} UPDATEs", updates.len());
    let total: usize = updates.iter().map(|u| u.nlri.len()).sum();
    assert_eq!(total, 3000);
    // Full packing: every message but the last is within one NLRI of the limit.
    for b in &g.encode(&batches[0]).unwrap()[..updates.len() - 1] {
        assert!(
            b.len() > 4096 - 4,
            "underfilled UPDATE of {} octets",
            b.len()
        );
    }
    // Withdraw all: withdrawals packed too.
    r.peer_down(src.id).unwrap();
    let ch = r.take_changes();
    g.process(&ch, &r);
    drop(ch);
    let batches = g.flush().unwrap();
    let updates = wire_roundtrip(&g, &batches[0], &k);
    let total: usize = updates.iter().map(|u| u.withdrawn.len()).sum();
    assert_eq!(total, 3000);
    r.purge();
    assert_eq!(r.attr_sets(), 0);
    assert_eq!(g.attr_sets(), 0);
}

#[test]
fn export_policy_rfc8212_and_actions() {
    let mut r = rib();
    ibgp_source(&mut r, &["10.1.0.0/24", "10.2.0.0/24"]);
    let mut g = UpdateGroups::new();
    // RFC 8212: an eBGP peer without export policy gets nothing.
    let (_, dump) = g
        .join(PeerId(20), key(PeerType::Ebgp, 65020, None), None, &r)
        .unwrap();
    assert!(dump.is_empty());
    let cfg: PolicyConfig = serde_json::from_value(serde_json::json!({
        "name": "to-upstream",
        "rules": [
            {"match": {"prefix": [{"prefix": "10.1.0.0/16", "ge": 24, "le": 24}]},
             "set": {"add_community": ["65000:1"], "prepend": {"count": 2}, "med": 30},
             "then": "next"},
            {"match": {"prefix": [{"prefix": "10.2.0.0/24"}]}, "then": "reject"},
        ],
        "default": "accept",
    }))
    .unwrap();
    let pol = Arc::new(Policy::from_config(&cfg).unwrap());
    let (_, dump) = g
        .join(
            PeerId(21),
            key(PeerType::Ebgp, 65021, Some("to-upstream")),
            Some(pol),
            &r,
        )
        .unwrap();
    assert_eq!(dump.len(), 1);
    let u = &dump[0];
    assert_eq!(u.nlri, vec![Ipv4Nlri::new(p4("10.1.0.0/24"))]);
    assert_eq!(
        u.attribute(2),
        Some(&AttributeValue::AsPath(AsPath::sequence([
            LOCAL_AS, LOCAL_AS, LOCAL_AS
        ]))),
        "policy prepend twice, then the mandatory eBGP prepend"
    );
    assert_eq!(u.attribute(4), Some(&AttributeValue::MultiExitDisc(30)));
    assert_eq!(
        u.attribute(8),
        Some(&AttributeValue::Communities(vec![Community::new(65000, 1)]))
    );
}

#[test]
fn route_sizes_stay_as_documented() {
    // docs/architecture.md, "RIB memory": a path is 16 octets (attribute pointer, peer id with
    // the stale flag, ADD-PATH id) and an IPv4 key 8.
    assert_eq!(std::mem::size_of::<tabby_bgp::rib::Path>(), 16);
    assert_eq!(std::mem::size_of::<Ipv4Prefix>(), 8);
}

#[test]
fn removed_peer_routes_are_withdrawn_from_groups() {
    // A peer deleted before its changes reach the groups: its routes must still be withdrawn
    // downstream, although their export can no longer be recomputed.
    let mut r = rib();
    let src = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(src.clone(), None, None).unwrap();
    let mut g = UpdateGroups::new();
    g.join(PeerId(9), key(PeerType::RrClient, LOCAL_AS, None), None, &r)
        .unwrap();
    announce_from(&mut r, src.id.0, &["10.1.0.0/24"], &[], vec![]);
    let ch = r.take_changes();
    g.process(&ch, &r);
    drop(ch);
    assert_eq!(g.flush().unwrap()[0].updates[0].nlri.len(), 1);
    r.remove_peer(src.id).unwrap();
    let ch = r.take_changes();
    g.process(&ch, &r);
    drop(ch);
    let batches = g.flush().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].updates[0].withdrawn,
        vec![Ipv4Nlri::new(p4("10.1.0.0/24"))]
    );
}

#[test]
fn export_encodings_two_octet_as_ipv6_and_extended_next_hop() {
    let mut r = rib();
    let src = peer(1, PeerType::Ebgp, 4_200_000_001);
    r.add_peer(src.clone(), Some(accept_all()), None).unwrap();
    announce_from(&mut r, src.id.0, &["10.1.0.0/24"], &[4_200_000_001], vec![]);
    let p6: Ipv6Prefix = "2001:db8:7::/48".parse().unwrap();
    let u6 = Update {
        attributes: vec![
            AttributeValue::MpReachNlri(MpReach {
                next_hop: MpNextHop::Ipv6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p6)]),
            })
            .into(),
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence([4_200_000_001])).into(),
        ],
        ..Update::default()
    };
    r.receive(src.id, &u6, &cx()).unwrap();
    let local6: Ipv6Addr = "2001:db8::100".parse().unwrap();

    // RFC 6793 §4.2.2: to a 2-octet iBGP peer, AS_TRANS in AS_PATH and the real path in AS4_PATH.
    let mut k = key(PeerType::Ibgp, LOCAL_AS, None);
    k.four_octet_as = false;
    k.local_v6 = Some(local6);
    let mut g = UpdateGroups::new();
    let (_, dump) = g.join(PeerId(30), k.clone(), None, &r).unwrap();
    let batch = tabby_bgp::rib::out::OutBatch {
        group: g.group_of(PeerId(30)).unwrap(),
        members: vec![PeerId(30)],
        updates: dump,
    };
    let sent = wire_roundtrip(&g, &batch, &k);
    let v4 = sent.iter().find(|u| !u.nlri.is_empty()).unwrap();
    assert_eq!(
        v4.attribute(2),
        Some(&AttributeValue::AsPath(AsPath::sequence([23456])))
    );
    assert_eq!(
        v4.attribute(17),
        Some(&AttributeValue::As4Path(AsPath::sequence([4_200_000_001])))
    );
    // IPv6 NLRI travel in MP_REACH_NLRI (RFC 4760 §3), next hop unchanged over iBGP.
    let v6 = sent.iter().find_map(|u| u.mp_reach()).unwrap();
    assert_eq!(v6.nlri, MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p6)]));

    // RFC 8950: an eBGP session over IPv6 only, extended next hop negotiated: IPv4 NLRI go in
    // MP_REACH_NLRI with our IPv6 address as next hop.
    let mut k = key(PeerType::Ebgp, 65030, Some("accept-all"));
    k.local_v4 = None;
    k.local_v6 = Some(local6);
    k.extended_next_hop = true;
    let (_, dump) = g
        .join(PeerId(31), k.clone(), Some(accept_all()), &r)
        .unwrap();
    let reach: Vec<&MpReach> = dump.iter().filter_map(|u| u.mp_reach()).collect();
    assert_eq!(reach.len(), 2, "{dump:?}");
    let v4 = reach
        .iter()
        .find(|m| matches!(m.nlri, MpNlri::Ipv4Unicast(_)))
        .unwrap();
    assert_eq!(
        v4.next_hop,
        MpNextHop::Ipv6 {
            global: local6,
            link_local: None
        }
    );
    // Without extended next hop and without a local IPv4 address, IPv4 routes cannot be sent.
    let mut k2 = k.clone();
    k2.extended_next_hop = false;
    let (_, dump) = g.join(PeerId(32), k2, Some(accept_all()), &r).unwrap();
    let families: Vec<_> = dump
        .iter()
        .filter_map(|u| u.mp_reach())
        .map(|m| m.family())
        .collect();
    assert_eq!(families, vec![Family::IPV6_UNICAST]);
    assert!(dump.iter().all(|u| u.nlri.is_empty()));
}

#[test]
fn oversized_attributes_skip_only_their_routes() {
    // A peer with extended messages (RFC 8654) sends 1500 communities (6000 octets); a member
    // without extended messages cannot receive that route, but gets the others.
    let mut r = rib();
    let src = peer(2, PeerType::Ibgp, LOCAL_AS);
    r.add_peer(src.clone(), None, None).unwrap();
    let many: Vec<Community> = (0..1500u32)
        .map(|i| Community::new(65000, i as u16))
        .collect();
    announce_from(
        &mut r,
        src.id.0,
        &["10.1.0.0/24"],
        &[],
        vec![AttributeValue::Communities(many)],
    );
    announce_from(&mut r, src.id.0, &["10.2.0.0/24"], &[], vec![]);
    let mut g = UpdateGroups::new();
    let k = key(PeerType::RrClient, LOCAL_AS, None);
    let (_, dump) = g.join(PeerId(9), k.clone(), None, &r).unwrap();
    let nlri: Vec<Ipv4Nlri> = dump.iter().flat_map(|u| u.nlri.clone()).collect();
    assert_eq!(nlri, vec![Ipv4Nlri::new(p4("10.2.0.0/24"))]);
    // With extended messages it fits.
    let mut kx = k.clone();
    kx.extended_message = true;
    let (_, dump) = g.join(PeerId(10), kx, None, &r).unwrap();
    assert_eq!(dump.iter().map(|u| u.nlri.len()).sum::<usize>(), 2);
}

#[test]
fn export_policy_change_and_route_refresh_without_reset() {
    let mut r = rib();
    ibgp_source(&mut r, &["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]);
    drop(r.take_changes());
    let mut g = UpdateGroups::new();
    let k = key(PeerType::Ebgp, 65040, Some("out"));
    let (_, dump) = g
        .join(PeerId(40), k.clone(), Some(accept_all()), &r)
        .unwrap();
    assert_eq!(dump.iter().map(|u| u.nlri.len()).sum::<usize>(), 3);
    // The new policy rejects 10.2/24 and sets a MED on 10.1/24; 10.3/24 is unchanged.
    let cfg: PolicyConfig = serde_json::from_value(serde_json::json!({
        "name": "out",
        "rules": [
            {"match": {"prefix": [{"prefix": "10.2.0.0/24"}]}, "then": "reject"},
            {"match": {"prefix": [{"prefix": "10.1.0.0/24"}]}, "set": {"med": 77}, "then": "accept"},
        ],
        "default": "accept",
    }))
    .unwrap();
    let pol = Arc::new(Policy::from_config(&cfg).unwrap());
    assert_eq!(g.replace_export_policy("out", pol.clone(), &r), 1);
    let batches = g.flush().unwrap();
    assert_eq!(batches.len(), 1);
    let ups = &batches[0].updates;
    let withdrawn: Vec<Ipv4Nlri> = ups.iter().flat_map(|u| u.withdrawn.clone()).collect();
    let announced: Vec<Ipv4Nlri> = ups.iter().flat_map(|u| u.nlri.clone()).collect();
    assert_eq!(withdrawn, vec![Ipv4Nlri::new(p4("10.2.0.0/24"))]);
    assert_eq!(
        announced,
        vec![Ipv4Nlri::new(p4("10.1.0.0/24"))],
        "only what changed"
    );
    let with_med = ups.iter().find(|u| !u.nlri.is_empty()).unwrap();
    assert_eq!(
        with_med.attribute(4),
        Some(&AttributeValue::MultiExitDisc(77))
    );
    // RFC 2918: a ROUTE-REFRESH gets the full current table for that member only.
    let again = g.refresh(PeerId(40), &r).unwrap();
    let mut all: Vec<String> = again
        .iter()
        .flat_map(|u| u.nlri.iter().map(|n| n.prefix.to_string()))
        .collect();
    all.sort();
    assert_eq!(all, ["10.1.0.0/24", "10.3.0.0/24"]);
    assert!(g.refresh(PeerId(41), &r).is_err());
}
