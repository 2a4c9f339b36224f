//! RFC 7911 ADD-PATH send in the update groups: path-id assignment (smallest free, stable while
//! the path lives, withdrawn by its own id), every exportable path advertised with export rules
//! applied per path, the RIB's touched-prefix stream, packing at the message-size limit with
//! path ids, group keying, route refresh and Adj-RIB-Out counts. Everything is decoded from the
//! bytes the group would send.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tabby_bgp::policy::Policy;
use tabby_bgp::rib::out::{GroupId, Sent, UpdateGroups, diff_paths, smallest_free_id};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerId, PeerType, Rib};
use tabby_bgp::wire::{
    AsPath, Asn, AttributeValue, Community, Ipv4Prefix, Ipv6Nlri, Ipv6Prefix, MpNextHop, MpNlri,
    MpReach, MpUnreach, Origin, Update,
};

mod support;
use support::rib::{
    LOCAL_AS, accept_all, announce_from, cx, empty_rib, group_key as key, p4, peer, wire_roundtrip,
    withdraw_from,
};

/// A RIB with three eBGP sources (accept-all import), an iBGP non-client and an RR client.
fn rib() -> Rib {
    let mut r = empty_rib(1);
    for p in [
        peer(1, PeerType::Ebgp, 65001),
        peer(2, PeerType::Ebgp, 65002),
        peer(3, PeerType::Ebgp, 65003),
        peer(4, PeerType::Ibgp, LOCAL_AS),
        peer(5, PeerType::RrClient, LOCAL_AS),
    ] {
        r.add_peer(p, Some(accept_all()), None).unwrap();
    }
    r
}

/// What the routes sent to a member look like, from the decoded bytes: (prefix, path id) →
/// next hop, applying announcements and withdrawals in order.
#[derive(Default, Debug)]
struct Receiver {
    routes: BTreeMap<(Ipv4Prefix, Option<u32>), Ipv4Addr>,
    withdrawn: Vec<(Ipv4Prefix, Option<u32>)>,
    announced: Vec<(Ipv4Prefix, Option<u32>)>,
}

impl Receiver {
    fn apply(&mut self, updates: &[Update]) {
        for u in updates {
            for w in &u.withdrawn {
                self.withdrawn.push((w.prefix, w.path_id));
                self.routes.remove(&(w.prefix, w.path_id));
            }
            let nh = match u.attribute(tabby_bgp::wire::attribute::code::NEXT_HOP) {
                Some(AttributeValue::NextHop(a)) => Some(*a),
                _ => None,
            };
            for n in &u.nlri {
                self.announced.push((n.prefix, n.path_id));
                self.routes
                    .insert((n.prefix, n.path_id), nh.expect("NEXT_HOP with NLRI"));
            }
        }
    }

    fn ids(&self, prefix: &str) -> BTreeSet<Option<u32>> {
        let p = p4(prefix);
        self.routes
            .keys()
            .filter(|(x, _)| *x == p)
            .map(|(_, id)| *id)
            .collect()
    }

    fn id_of(&self, prefix: &str, nh: [u8; 4]) -> Option<u32> {
        let p = p4(prefix);
        self.routes
            .iter()
            .find(|((x, _), n)| *x == p && **n == Ipv4Addr::from(nh))
            .and_then(|((_, id), _)| *id)
    }

    fn clear_log(&mut self) {
        self.withdrawn.clear();
        self.announced.clear();
    }
}

/// Encodes with the group's context and decodes again: the tests see the real bytes.
fn wire(groups: &UpdateGroups, group: GroupId, updates: Vec<Update>) -> Vec<Update> {
    let batch = tabby_bgp::rib::out::OutBatch {
        group,
        members: Vec::new(),
        updates,
    };
    let k = groups.group(group).unwrap().key().clone();
    wire_roundtrip(groups, &batch, &k)
}

/// Runs the RIB's changes through the groups and returns each group's decoded UPDATEs.
fn step(r: &mut Rib, g: &mut UpdateGroups) -> BTreeMap<GroupId, Vec<Update>> {
    let changes = r.take_changes();
    g.process(&changes, r);
    let batches = g.flush().unwrap();
    let mut out = BTreeMap::new();
    for b in batches {
        out.insert(b.group, wire(g, b.group, b.updates));
    }
    r.purge();
    out
}

/// 10.1.0.0/24 from eBGP peers 1 (AS path 65001: the best) and 2 (65002 65009).
fn two_paths(r: &mut Rib) {
    announce_from(r, 1, &["10.1.0.0/24"], &[65001], vec![]);
    announce_from(r, 2, &["10.1.0.0/24"], &[65002, 65009], vec![]);
}

/// Route-reflector client `peer` joins its group (ADD-PATH send or not): (group, dump).
fn join_client(g: &mut UpdateGroups, peer: u32, add_path: bool, r: &Rib) -> (GroupId, Vec<Update>) {
    g.join(
        PeerId(peer),
        key(PeerType::RrClient, LOCAL_AS, add_path),
        None,
        r,
    )
    .unwrap()
}

fn attrs(n: u8) -> Arc<PathAttrs> {
    Arc::new(PathAttrs::new(NextHop::V4(Ipv4Addr::new(192, 0, 2, n))))
}

/// (path id, announced rather than withdrawn) of each entry of a [`diff_paths`] result.
fn announced(out: &[(u32, Option<Arc<PathAttrs>>)]) -> Vec<(u32, bool)> {
    out.iter().map(|(id, x)| (*id, x.is_some())).collect()
}

#[test]
fn path_ids_smallest_free_stable_and_withdrawn_by_id() {
    let (a, b, c, d) = (attrs(1), attrs(2), attrs(3), attrs(4));
    let mut released = 0;
    let mut sent: Vec<Sent> = Vec::new();
    // Two paths: ids 1 and 2 in RIB order.
    let out = diff_paths(
        &mut sent,
        vec![(PeerId(1), 0, a.clone()), (PeerId(2), 0, b.clone())],
        |_| released += 1,
    );
    assert_eq!(announced(&out), vec![(1, true), (2, true)]);
    // The same again, in the other order: nothing to send, ids kept, both offered sets
    // released (the list already holds them).
    let out = diff_paths(
        &mut sent,
        vec![(PeerId(2), 0, b.clone()), (PeerId(1), 0, a.clone())],
        |_| released += 1,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(released, 2);
    // A third path (a second path id from peer 1): id 3; the others untouched.
    let out = diff_paths(
        &mut sent,
        vec![
            (PeerId(1), 0, a.clone()),
            (PeerId(2), 0, b.clone()),
            (PeerId(1), 7, c.clone()),
        ],
        |_| {},
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 3);
    // Peer 1's first path goes: withdrawn by its own id (1) alone.
    let out = diff_paths(
        &mut sent,
        vec![(PeerId(2), 0, b.clone()), (PeerId(1), 7, c.clone())],
        |_| {},
    );
    assert_eq!(announced(&out), vec![(1, false)]);
    // New attributes for peer 2's path: re-announced under the same id 2.
    let out = diff_paths(
        &mut sent,
        vec![(PeerId(2), 0, d.clone()), (PeerId(1), 7, c.clone())],
        |_| {},
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 2);
    assert!(Arc::ptr_eq(out[0].1.as_ref().unwrap(), &d));
    // A re-added path gets the smallest free id: 1 again.
    let out = diff_paths(
        &mut sent,
        vec![
            (PeerId(2), 0, d.clone()),
            (PeerId(1), 7, c.clone()),
            (PeerId(1), 0, a.clone()),
        ],
        |_| {},
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    let mut ids: Vec<(u32, u32, u32)> = sent
        .iter()
        .map(|s| (s.path_id, s.peer.0, s.source_path_id))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![(1, 1, 0), (2, 2, 0), (3, 1, 7)]);
    // Everything goes: every id withdrawn, the list empty.
    let out = diff_paths(&mut sent, Vec::new(), |_| {});
    let mut w: Vec<u32> = out
        .iter()
        .inspect(|(_, x)| assert!(x.is_none()))
        .map(|(id, _)| *id)
        .collect();
    w.sort_unstable();
    assert_eq!(w, vec![1, 2, 3]);
    assert!(sent.is_empty());
    assert_eq!(smallest_free_id(&sent), 1);
}

#[test]
fn every_path_is_advertised_with_its_own_id_and_withdrawn_alone() {
    let mut r = rib();
    let mut g = UpdateGroups::new();
    // An RR client with ADD-PATH and one without: different groups.
    let (ga, dump_a) = join_client(&mut g, 20, true, &r);
    let (gp, dump_p) = join_client(&mut g, 21, false, &r);
    assert_ne!(ga, gp, "ADD-PATH and plain peers never share a group");
    assert!(dump_a.is_empty() && dump_p.is_empty());
    assert!(g.any_add_path());
    r.set_track_paths(g.any_add_path());

    // Two eBGP peers announce the same prefix; peer 1 has the shorter AS path (best).
    two_paths(&mut r);
    let out = step(&mut r, &mut g);
    let (mut ra, mut rp) = (Receiver::default(), Receiver::default());
    ra.apply(&out[&ga]);
    rp.apply(&out[&gp]);
    assert_eq!(ra.ids("10.1.0.0/24"), BTreeSet::from([Some(1), Some(2)]));
    assert_eq!(ra.id_of("10.1.0.0/24", [192, 0, 2, 1]), Some(1));
    assert_eq!(ra.id_of("10.1.0.0/24", [192, 0, 2, 2]), Some(2));
    // The plain peer: the best path alone, without a path id.
    assert_eq!(rp.routes.len(), 1);
    assert_eq!(
        rp.routes.get(&(p4("10.1.0.0/24"), None)),
        Some(&Ipv4Addr::new(192, 0, 2, 1))
    );

    // An unrelated prefix from peer 3: the ids of 10.1 do not move, and nothing is re-sent
    // for it.
    ra.clear_log();
    announce_from(&mut r, 3, &["10.9.0.0/24"], &[65003], vec![]);
    let out = step(&mut r, &mut g);
    ra.apply(&out[&ga]);
    assert_eq!(ra.announced, vec![(p4("10.9.0.0/24"), Some(1))]);
    assert_eq!(ra.id_of("10.1.0.0/24", [192, 0, 2, 1]), Some(1));
    assert_eq!(ra.id_of("10.1.0.0/24", [192, 0, 2, 2]), Some(2));

    // The non-best path is withdrawn: the ADD-PATH peer gets exactly that id withdrawn, the
    // plain peer nothing (its best did not change).
    ra.clear_log();
    rp.clear_log();
    withdraw_from(&mut r, 2, &["10.1.0.0/24"]);
    let out = step(&mut r, &mut g);
    ra.apply(&out[&ga]);
    assert_eq!(ra.withdrawn, vec![(p4("10.1.0.0/24"), Some(2))]);
    assert!(ra.announced.is_empty());
    assert_eq!(ra.ids("10.1.0.0/24"), BTreeSet::from([Some(1)]));
    assert!(!out.contains_key(&gp), "plain group: nothing to send");

    // Peer 2 comes back: the smallest free id (2) again.
    ra.clear_log();
    announce_from(&mut r, 2, &["10.1.0.0/24"], &[65002, 65009], vec![]);
    let out = step(&mut r, &mut g);
    ra.apply(&out[&ga]);
    assert_eq!(ra.announced, vec![(p4("10.1.0.0/24"), Some(2))]);

    // The best path's session goes down: its id (1) is withdrawn, id 2 stays; the plain peer
    // gets the new best.
    ra.clear_log();
    rp.clear_log();
    r.peer_down(PeerId(1)).unwrap();
    let out = step(&mut r, &mut g);
    ra.apply(&out[&ga]);
    rp.apply(&out[&gp]);
    assert_eq!(ra.withdrawn, vec![(p4("10.1.0.0/24"), Some(1))]);
    assert_eq!(ra.ids("10.1.0.0/24"), BTreeSet::from([Some(2)]));
    assert_eq!(
        rp.routes.get(&(p4("10.1.0.0/24"), None)),
        Some(&Ipv4Addr::new(192, 0, 2, 2))
    );

    // Adj-RIB-Out: counted per path; route refresh and a second member's dump carry the same
    // ids as the stream.
    let counts: BTreeMap<GroupId, u32> = g.advertised_counts(&r).into_iter().collect();
    assert_eq!(counts[&ga], 2, "10.1 (peer 2) and 10.9");
    assert_eq!(counts[&gp], 2);
    let mut refreshed = Receiver::default();
    refreshed.apply(&wire(&g, ga, g.refresh(PeerId(20), &r).unwrap()));
    assert_eq!(refreshed.routes, ra.routes);
    let (ga2, dump) = join_client(&mut g, 22, true, &r);
    assert_eq!(ga2, ga);
    let mut second = Receiver::default();
    second.apply(&wire(&g, ga, dump));
    assert_eq!(second.routes, ra.routes);
    let exported = g.exported(PeerId(20), &r).unwrap();
    let mut ids: Vec<(Ipv4Prefix, u32)> = exported
        .iter()
        .map(|(p, id, _)| match p {
            tabby_bgp::rib::Prefix::V4(x) => (*x, *id),
            _ => panic!("IPv6 in an IPv4 group"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![(p4("10.1.0.0/24"), 2), (p4("10.9.0.0/24"), 1)]);

    // The last ADD-PATH member leaves: the group goes, the RIB may stop tracking.
    g.leave(PeerId(20)).unwrap();
    g.leave(PeerId(22)).unwrap();
    assert!(!g.any_add_path());
}

#[test]
fn a_group_made_on_a_full_table_starts_from_every_path() {
    let mut r = rib();
    announce_from(&mut r, 1, &["10.1.0.0/24", "10.2.0.0/24"], &[65001], vec![]);
    announce_from(&mut r, 2, &["10.1.0.0/24"], &[65002], vec![]);
    let _ = r.take_changes();
    let mut g = UpdateGroups::new();
    let (ga, dump) = join_client(&mut g, 20, true, &r);
    let mut ra = Receiver::default();
    ra.apply(&wire(&g, ga, dump));
    assert_eq!(ra.ids("10.1.0.0/24"), BTreeSet::from([Some(1), Some(2)]));
    assert_eq!(ra.ids("10.2.0.0/24"), BTreeSet::from([Some(1)]));
    // Tracking on only now: a path added afterwards reaches the group although it is not
    // the best (a longer AS path).
    r.set_track_paths(true);
    announce_from(&mut r, 3, &["10.2.0.0/24"], &[65003, 65009, 65009], vec![]);
    let changes = r.take_changes();
    assert!(changes.v4.is_empty(), "not a best-path change");
    assert_eq!(changes.touched_v4, vec![p4("10.2.0.0/24")]);
    g.process(&changes, &r);
    let b = g.flush().unwrap();
    ra.apply(&wire(&g, ga, b[0].updates.clone()));
    assert_eq!(ra.id_of("10.2.0.0/24", [192, 0, 2, 3]), Some(2));
}

#[test]
fn untracked_rib_reports_no_touched_prefixes() {
    let mut r = rib();
    assert!(!r.tracks_paths());
    two_paths(&mut r);
    let c = r.take_changes();
    assert_eq!(c.v4.len(), 1, "only the first path changed the best");
    assert!(c.touched_v4.is_empty() && c.touched_v6.is_empty());
    r.set_track_paths(true);
    r.peer_down(PeerId(2)).unwrap();
    let c = r.take_changes();
    assert!(c.v4.is_empty());
    assert_eq!(c.touched_v4, vec![p4("10.1.0.0/24")]);
}

#[test]
fn export_rules_apply_per_path() {
    let mut r = rib();
    let mut g = UpdateGroups::new();
    // An iBGP non-client with ADD-PATH: paths learned over iBGP are not for it (RFC 4271
    // §9.2, RFC 4456 §8); an eBGP peer with ADD-PATH: NO_EXPORT paths are not for it, and
    // its own AS is prepended by us (the AS path is ours first).
    let (gi, _) = g
        .join(PeerId(20), key(PeerType::Ibgp, LOCAL_AS, true), None, &r)
        .unwrap();
    let mut ke = key(PeerType::Ebgp, 65100, true);
    ke.export_policy = Some("accept-all".into());
    let (ge, _) = g.join(PeerId(21), ke, Some(accept_all()), &r).unwrap();
    r.set_track_paths(true);
    // Four paths for one prefix: eBGP (1), eBGP with NO_EXPORT (2), iBGP non-client (4), RR
    // client (5).
    announce_from(&mut r, 1, &["10.5.0.0/24"], &[65001], vec![]);
    announce_from(
        &mut r,
        2,
        &["10.5.0.0/24"],
        &[65002],
        vec![AttributeValue::Communities(vec![Community::NO_EXPORT])],
    );
    announce_from(
        &mut r,
        4,
        &["10.5.0.0/24"],
        &[],
        vec![AttributeValue::LocalPref(100)],
    );
    announce_from(
        &mut r,
        5,
        &["10.5.0.0/24"],
        &[],
        vec![AttributeValue::LocalPref(100)],
    );
    assert_eq!(
        r.paths(&tabby_bgp::rib::Prefix::V4(p4("10.5.0.0/24")))
            .len(),
        4
    );
    let out = step(&mut r, &mut g);
    let (mut ri, mut re) = (Receiver::default(), Receiver::default());
    ri.apply(&out[&gi]);
    re.apply(&out[&ge]);
    // iBGP non-client: the two eBGP paths and the client's (reflected), not the iBGP one.
    let nh: BTreeSet<Ipv4Addr> = ri.routes.values().copied().collect();
    assert_eq!(
        nh,
        BTreeSet::from([
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 5),
        ])
    );
    assert_eq!(ri.ids("10.5.0.0/24").len(), 3);
    // eBGP: everything but NO_EXPORT, next hop self; three paths, three ids.
    assert_eq!(re.ids("10.5.0.0/24").len(), 3, "{re:?}");
    assert!(
        re.routes
            .values()
            .all(|n| *n == Ipv4Addr::new(192, 0, 2, 100))
    );
    for u in &out[&ge] {
        if let Some(AttributeValue::AsPath(p)) =
            u.attribute(tabby_bgp::wire::attribute::code::AS_PATH)
        {
            let first = p.segments.first().and_then(|s| s.asns.first()).copied();
            assert_eq!(first, Some(Asn(LOCAL_AS)), "prepended: {p:?}");
        }
    }
    // The NO_EXPORT path goes: nothing for the eBGP peer, its id withdrawn for the iBGP one.
    ri.clear_log();
    let nx = ri.id_of("10.5.0.0/24", [192, 0, 2, 2]);
    withdraw_from(&mut r, 2, &["10.5.0.0/24"]);
    let out = step(&mut r, &mut g);
    assert!(!out.contains_key(&ge));
    ri.apply(&out[&gi]);
    assert_eq!(ri.withdrawn, vec![(p4("10.5.0.0/24"), nx)]);
}

#[test]
fn packing_with_path_ids_fills_messages_to_the_limit() {
    let mut r = rib();
    // 3000 /24s from two peers, with attribute sets the groups keep apart by source: 6000
    // paths, 8 octets each on the wire (path id, length, 3 octets).
    let prefixes: Vec<String> = (0..3000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    for chunk in refs.chunks(500) {
        announce_from(&mut r, 1, chunk, &[65001], vec![]);
        announce_from(&mut r, 2, chunk, &[65002, 65009], vec![]);
    }
    let mut g = UpdateGroups::new();
    let (ga, dump) = join_client(&mut g, 20, true, &r);
    let batch = tabby_bgp::rib::out::OutBatch {
        group: ga,
        members: Vec::new(),
        updates: dump.clone(),
    };
    let bytes = g.encode(&batch).unwrap();
    assert_eq!(bytes.len(), dump.len());
    // Two attribute sets, each with 3000 NLRI of 8 octets: every message but the last of
    // each set within 8 octets of the limit, none above it.
    let mut per_set: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (b, u) in bytes.iter().zip(&dump) {
        assert!(b.len() <= 4096);
        let nh = match u.attribute(tabby_bgp::wire::attribute::code::NEXT_HOP) {
            Some(AttributeValue::NextHop(a)) => a.octets()[3] as usize,
            _ => panic!("no NEXT_HOP"),
        };
        per_set.entry(nh).or_default().push(b.len());
    }
    assert_eq!(per_set.len(), 2);
    for lens in per_set.values() {
        for l in &lens[..lens.len() - 1] {
            assert!(
                *l > 4096 - 8,
                "message of {l} octets could hold another NLRI"
            );
        }
    }
    let mut ra = Receiver::default();
    ra.apply(&wire(&g, ga, dump));
    assert_eq!(ra.routes.len(), 6000);
    assert_eq!(ra.id_of("10.11.183.0/24", [192, 0, 2, 1]), Some(1));
    assert_eq!(ra.id_of("10.11.183.0/24", [192, 0, 2, 2]), Some(2));

    // Withdrawals by id pack the same way: 3000 × 8 octets.
    r.set_track_paths(true);
    for chunk in refs.chunks(500) {
        withdraw_from(&mut r, 2, chunk);
    }
    let out = step(&mut r, &mut g);
    let ups = &out[&ga];
    ra.clear_log();
    ra.apply(ups);
    assert_eq!(ra.withdrawn.len(), 3000);
    assert!(ra.withdrawn.iter().all(|(_, id)| *id == Some(2)));
    assert_eq!(ra.routes.len(), 3000);
    // 3000 × 8 = 24000 octets of withdrawn routes at most 4096 − 23 per message: 6 messages.
    assert_eq!(ups.len(), 6, "{}", ups.len());
}

#[test]
fn a_non_best_path_whose_next_hop_becomes_unreachable_is_withdrawn() {
    let mut r = rib();
    let mut g = UpdateGroups::new();
    let (ga, _) = join_client(&mut g, 20, true, &r);
    r.set_track_paths(true);
    two_paths(&mut r);
    let mut ra = Receiver::default();
    ra.apply(&step(&mut r, &mut g)[&ga]);
    assert_eq!(ra.ids("10.1.0.0/24").len(), 2);
    let gone = ra.id_of("10.1.0.0/24", [192, 0, 2, 2]);
    // The IGP no longer reaches 192.0.2.2: the best (via .1) is unchanged, the other path is
    // unusable and goes, by its id.
    let unreachable = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    r.set_igp(Box::new(move |a: IpAddr| (a != unreachable).then_some(0)));
    ra.clear_log();
    ra.apply(&step(&mut r, &mut g)[&ga]);
    assert_eq!(ra.withdrawn, vec![(p4("10.1.0.0/24"), gone)]);
    assert!(ra.announced.is_empty());
    // Reachable again: announced again.
    r.set_igp(Box::new(|_: IpAddr| Some(0)));
    ra.clear_log();
    ra.apply(&step(&mut r, &mut g)[&ga]);
    assert_eq!(ra.announced, vec![(p4("10.1.0.0/24"), gone)]);
}

fn policy(json: serde_json::Value) -> Arc<Policy> {
    let cfg: tabby_bgp::policy::PolicyConfig = serde_json::from_value(json).unwrap();
    Arc::new(Policy::from_config(&cfg).unwrap())
}

#[test]
fn export_policy_change_and_regroup_keep_ids_per_path() {
    let mut r = rib();
    let mut g = UpdateGroups::new();
    let all = policy(serde_json::json!({"name": "out", "rules": [], "default": "accept"}));
    let mut ke = key(PeerType::Ebgp, 65100, true);
    ke.export_policy = Some("out".into());
    let (ge, _) = g
        .join(PeerId(21), ke.clone(), Some(all.clone()), &r)
        .unwrap();
    r.set_track_paths(true);
    // Three paths; peer 2's carries community 65002:1.
    announce_from(&mut r, 1, &["10.1.0.0/24"], &[65001], vec![]);
    announce_from(
        &mut r,
        2,
        &["10.1.0.0/24"],
        &[65002],
        vec![AttributeValue::Communities(vec![Community::new(65002, 1)])],
    );
    announce_from(&mut r, 3, &["10.1.0.0/24"], &[65003], vec![]);
    let mut re = Receiver::default();
    re.apply(&step(&mut r, &mut g)[&ge]);
    assert_eq!(
        re.ids("10.1.0.0/24"),
        BTreeSet::from([Some(1), Some(2), Some(3)])
    );
    let sent = |g: &UpdateGroups, group| {
        let mut v: Vec<(u32, u32)> = g
            .group(group)
            .unwrap()
            .sent(&tabby_bgp::rib::Prefix::V4(p4("10.1.0.0/24")))
            .iter()
            .map(|s| (s.path_id, s.peer.0))
            .collect();
        v.sort_unstable();
        v
    };
    let ids = sent(&g, ge);
    let id_of_peer = |peer: u32| ids.iter().find(|(_, p)| *p == peer).map(|(i, _)| *i);
    // The policy now rejects the community: only that path's id is withdrawn, live.
    let strict = policy(serde_json::json!({
        "name": "out",
        "rules": [{"match": {"community": ["65002:1"]}, "then": "reject"}],
        "default": "accept",
    }));
    assert_eq!(g.replace_export_policy("out", strict.clone(), &r), 1);
    re.clear_log();
    re.apply(&step(&mut r, &mut g)[&ge]);
    assert_eq!(re.withdrawn, vec![(p4("10.1.0.0/24"), id_of_peer(2))]);
    assert!(re.announced.is_empty(), "{:?}", re.announced);
    assert_eq!(re.ids("10.1.0.0/24").len(), 2);

    // The peer moves to a group whose policy accepts everything again: it is sent the new
    // group's paths under that group's ids, and whatever id of the old group the new one
    // does not use is withdrawn. The end state is what the new group's members hold.
    let mut k2 = ke.clone();
    k2.export_policy = Some("out2".into());
    let all2 = policy(serde_json::json!({"name": "out2", "rules": [], "default": "accept"}));
    // Another member is there first: the group's ids are its own, not the old group's.
    let (g2, _) = g
        .join(PeerId(22), k2.clone(), Some(all2.clone()), &r)
        .unwrap();
    let (g2b, moved) = g.regroup(PeerId(21), k2, Some(all2), &r).unwrap();
    assert_eq!(g2, g2b);
    re.apply(&wire(&g, g2, moved));
    let want: BTreeSet<Option<u32>> = sent(&g, g2).iter().map(|(i, _)| Some(*i)).collect();
    assert_eq!(want.len(), 3);
    assert_eq!(re.ids("10.1.0.0/24"), want);
    for (id, peer) in sent(&g, g2) {
        assert_eq!(
            re.routes[&(p4("10.1.0.0/24"), Some(id))],
            Ipv4Addr::new(192, 0, 2, 100),
            "path of peer {peer}: next hop self toward eBGP"
        );
    }
    assert!(g.group(ge).is_none(), "the old group emptied and went");
}

/// An IPv6 UPDATE (MP_REACH_NLRI, RFC 4760) for `p` via `nh` with AS path `path`.
fn announce6(p: &str, nh: &str, path: &[u32]) -> Update {
    Update {
        attributes: vec![
            AttributeValue::MpReachNlri(MpReach {
                next_hop: MpNextHop::Ipv6 {
                    global: nh.parse().unwrap(),
                    link_local: None,
                },
                nlri: MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p.parse().unwrap())]),
            })
            .into(),
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(AsPath::sequence(path.iter().copied())).into(),
        ],
        ..Update::default()
    }
}

type Nlri6 = Vec<(Ipv6Prefix, Option<u32>)>;

/// (prefix, path id) of every IPv6 NLRI announced / withdrawn in `updates`.
fn mp6(updates: &[Update]) -> (Nlri6, Nlri6) {
    let (mut ann, mut wd) = (Vec::new(), Vec::new());
    for u in updates {
        if let Some(r) = u.mp_reach()
            && let MpNlri::Ipv6Unicast(v) = &r.nlri
        {
            ann.extend(v.iter().map(|n| (n.prefix, n.path_id)));
        }
        if let Some(w) = u.mp_unreach()
            && let MpNlri::Ipv6Unicast(v) = &w.withdrawn
        {
            wd.extend(v.iter().map(|n| (n.prefix, n.path_id)));
        }
    }
    (ann, wd)
}

#[test]
fn ipv6_paths_carry_ids_in_mp_reach_and_mp_unreach() {
    let mut r = rib();
    let mut g = UpdateGroups::new();
    // ADD-PATH for IPv6 only; IPv4 stays best-path in the same group.
    let mut k = key(PeerType::RrClient, LOCAL_AS, false);
    k.ipv6 = true;
    k.add_path_v6 = true;
    k.local_v6 = Some("2001:db8::100".parse().unwrap());
    let (gid, _) = g.join(PeerId(20), k, None, &r).unwrap();
    r.set_track_paths(g.any_add_path());
    assert!(r.tracks_paths());
    let p: Ipv6Prefix = "2001:db8:5::/48".parse().unwrap();
    r.receive(
        PeerId(1),
        &announce6("2001:db8:5::/48", "2001:db8::1", &[65001]),
        &cx(),
    )
    .unwrap();
    r.receive(
        PeerId(2),
        &announce6("2001:db8:5::/48", "2001:db8::2", &[65002, 65009]),
        &cx(),
    )
    .unwrap();
    announce_from(&mut r, 1, &["10.1.0.0/24"], &[65001], vec![]);
    let out = step(&mut r, &mut g);
    let (mut ann, wd) = mp6(&out[&gid]);
    ann.sort_unstable();
    assert_eq!(ann, vec![(p, Some(1)), (p, Some(2))]);
    assert!(wd.is_empty());
    // IPv4 in the same group: plain NLRI, no path id.
    let mut ra = Receiver::default();
    ra.apply(&out[&gid]);
    assert_eq!(ra.ids("10.1.0.0/24"), BTreeSet::from([None]));
    // Peer 2's path goes: MP_UNREACH_NLRI with its id alone.
    r.receive(
        PeerId(2),
        &Update {
            attributes: vec![
                AttributeValue::MpUnreachNlri(MpUnreach {
                    withdrawn: MpNlri::Ipv6Unicast(vec![Ipv6Nlri::new(p)]),
                })
                .into(),
            ],
            ..Update::default()
        },
        &cx(),
    )
    .unwrap();
    let out = step(&mut r, &mut g);
    let (ann, wd) = mp6(&out[&gid]);
    assert!(ann.is_empty());
    assert_eq!(wd, vec![(p, Some(2))]);
}
