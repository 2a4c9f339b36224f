//! Properties of the RIB: the Loc-RIB's best paths do not depend on the order routes arrive in,
//! and any add/withdraw sequence leaves no interned attribute set behind once everything is
//! withdrawn.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use tabby_bgp::rib::{NextHop, PathAttrs, PeerId, PeerType, Prefix, Rib};
use tabby_bgp::wire::{AsPath, AttributeValue, Ipv4Nlri, Ipv4Prefix, Origin, Update};

mod support;
use support::rib::{cx, rib_with_peers};

const PEERS: u32 = 4;

#[derive(Debug, Clone)]
struct Route {
    peer: u32,
    prefix: u8,
    path_len: u8,
    neighbor_as: u8,
    med: Option<u8>,
    local_pref: Option<u8>,
    origin: u8,
}

fn route() -> impl Strategy<Value = Route> {
    (
        1..=PEERS,
        0u8..6,
        1u8..4,
        0u8..2,
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..2),
        0u8..3,
    )
        .prop_map(
            |(peer, prefix, path_len, neighbor_as, med, local_pref, origin)| Route {
                peer,
                prefix,
                path_len,
                neighbor_as,
                med,
                local_pref,
                origin,
            },
        )
}

/// Peers 1..=PEERS, even ones iBGP, odd ones route-reflector clients.
fn rib(max_paths: usize) -> Rib {
    rib_with_peers(max_paths, PEERS, |id| {
        if id % 2 == 0 {
            PeerType::Ibgp
        } else {
            PeerType::RrClient
        }
    })
}

fn prefix(i: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::new(10, i, 0, 0), 16).unwrap()
}

fn update(r: &Route) -> Update {
    let mut path = vec![65000 + u32::from(r.neighbor_as)];
    path.extend((1..r.path_len).map(|i| 65100 + u32::from(i)));
    let mut attributes = vec![
        AttributeValue::Origin(match r.origin {
            0 => Origin::Igp,
            1 => Origin::Egp,
            _ => Origin::Incomplete,
        })
        .into(),
        AttributeValue::AsPath(AsPath::sequence(path)).into(),
        AttributeValue::NextHop(Ipv4Addr::new(192, 0, 2, r.peer as u8)).into(),
    ];
    if let Some(m) = r.med {
        attributes.push(AttributeValue::MultiExitDisc(u32::from(m)).into());
    }
    if let Some(l) = r.local_pref {
        attributes.push(AttributeValue::LocalPref(100 + u32::from(l)).into());
    }
    Update {
        attributes,
        nlri: vec![Ipv4Nlri::new(prefix(r.prefix))],
        ..Update::default()
    }
}

/// (prefix, ECMP set as (peer, next hop)) for every prefix, sorted.
fn snapshot(r: &Rib) -> Vec<(Ipv4Prefix, Vec<(PeerId, NextHop)>)> {
    let mut v: Vec<_> = (0u8..6)
        .filter_map(|i| {
            let p = prefix(i);
            let set = r.ecmp(&Prefix::V4(p));
            (!set.is_empty()).then(|| {
                (
                    p,
                    set.iter().map(|x| (x.peer(), x.attrs().next_hop)).collect(),
                )
            })
        })
        .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// RFC 4271 §9.1.2: the outcome is a function of the set of routes, not of arrival order.
    #[test]
    fn best_path_independent_of_arrival_order(
        routes in proptest::collection::vec(route(), 1..16),
        seed in any::<u64>(),
        max_paths in 1usize..4,
    ) {
        // Keep only the last route per (peer, prefix): that is what the RIB holds.
        let mut last = std::collections::BTreeMap::new();
        for r in &routes {
            last.insert((r.peer, r.prefix), r.clone());
        }
        let set: Vec<Route> = last.into_values().collect();
        let mut a = rib(max_paths);
        for r in &set {
            a.receive(PeerId(r.peer), &update(r), &cx()).unwrap();
        }
        // A deterministic shuffle from the seed.
        let mut shuffled = set.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut b = rib(max_paths);
        for r in &shuffled {
            b.receive(PeerId(r.peer), &update(r), &cx()).unwrap();
        }
        prop_assert_eq!(snapshot(&a), snapshot(&b));
    }

    /// Add/withdraw/peer-down sequences: once all routes are gone, no attribute set is left.
    #[test]
    fn no_leaked_attribute_sets(
        ops in proptest::collection::vec((route(), 0u8..10), 1..40),
    ) {
        let mut r = rib(2);
        let mut locals = Vec::new();
        for (route, op) in &ops {
            match op {
                0..=5 => { r.receive(PeerId(route.peer), &update(route), &cx()).unwrap(); }
                6 | 7 => {
                    let w = Update { withdrawn: vec![Ipv4Nlri::new(prefix(route.prefix))], ..Update::default() };
                    r.receive(PeerId(route.peer), &w, &cx()).unwrap();
                }
                8 => { r.peer_down(PeerId(route.peer)).unwrap(); }
                _ => {
                    let mut a = PathAttrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED));
                    a.med = route.med.map(u32::from);
                    r.originate(Prefix::V4(prefix(route.prefix)), a);
                    locals.push(prefix(route.prefix));
                }
            }
            // Interleave draining like the session loop does.
            if route.path_len == 2 {
                drop(r.take_changes());
            }
        }
        for id in 1..=PEERS {
            r.peer_down(PeerId(id)).unwrap();
        }
        for p in locals {
            r.withdraw_local(Prefix::V4(p));
        }
        drop(r.take_changes());
        r.purge();
        prop_assert!(r.v4().is_empty());
        prop_assert_eq!(r.attr_sets(), 0);
        for id in 1..=PEERS {
            prop_assert_eq!(r.accepted(PeerId(id)), Some(0));
        }
    }
}

mod groups {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tabby_bgp::rib::out::{GroupKey, UpdateGroups};
    use tabby_bgp::rib::{PeerId, PeerType, Rib};
    use tabby_bgp::wire::{Attribute, Ipv4Nlri, Ipv4Prefix, Update};

    use super::support::rib::group_key;
    use super::{PEERS, Route, cx, prefix, rib, route, update};

    /// What a receiver holds after applying UPDATEs in order (IPv4 unicast only).
    fn apply(model: &mut BTreeMap<Ipv4Prefix, Vec<Attribute>>, updates: &[Update]) {
        for u in updates {
            for w in &u.withdrawn {
                model.remove(&w.prefix);
            }
            for n in &u.nlri {
                model.insert(n.prefix, u.attributes.clone());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// No Adj-RIB-Out is stored, so the incremental stream must be exactly right: a
        /// receiver that applied every flushed batch holds what a fresh member's full dump
        /// holds, for an iBGP client group and an eBGP group with the default-accept policy.
        #[test]
        fn incremental_stream_matches_full_dump(
            ops in proptest::collection::vec((route(), 0u8..8), 1..40),
            ebgp in any::<bool>(),
        ) {
            let mut r = rib(2);
            let mut g = UpdateGroups::new();
            let key = GroupKey {
                export_policy: ebgp.then(|| "all".to_string()),
                ..if ebgp {
                    group_key(PeerType::Ebgp, 65099, false)
                } else {
                    group_key(PeerType::RrClient, 64512, false)
                }
            };
            // A prefix-dependent export policy (no per-attribute-set caching): drops one
            // prefix, changes the MED of another.
            let policy = ebgp.then(|| {
                let cfg: tabby_bgp::policy::PolicyConfig = serde_json::from_value(serde_json::json!({
                    "name": "all",
                    "rules": [
                        {"match": {"prefix": [{"prefix": "10.1.0.0/16"}]}, "then": "reject"},
                        {"match": {"prefix": [{"prefix": "10.2.0.0/16"}]}, "set": {"med": 5}, "then": "accept"},
                    ],
                    "default": "accept",
                }))
                .unwrap();
                std::sync::Arc::new(tabby_bgp::policy::Policy::from_config(&cfg).unwrap())
            });
            let (_, initial) = g.join(PeerId(50), key.clone(), policy.clone(), &r).unwrap();
            let mut model = BTreeMap::new();
            apply(&mut model, &initial);
            stream(&mut r, &mut g, &ops, |u| apply(&mut model, u));
            let (_, dump) = g.join(PeerId(51), key, policy, &r).unwrap();
            let mut fresh = BTreeMap::new();
            apply(&mut fresh, &dump);
            prop_assert_eq!(model, fresh);
        }

        /// ADD-PATH send (RFC 7911): a receiver that applied every flushed batch, keyed by
        /// (prefix, path id), holds exactly what a fresh member's dump holds (same ids), and
        /// that is every path of the Loc-RIB, each prefix's ids distinct.
        #[test]
        fn add_path_stream_matches_full_dump(
            ops in proptest::collection::vec((route(), 0u8..8), 1..40),
        ) {
            let mut r = rib(2);
            let mut g = UpdateGroups::new();
            let key = group_key(PeerType::RrClient, 64512, true);
            // Part of the table exists before the group does.
            let (before, after) = ops.split_at(ops.len() / 3);
            for (rt, op) in before {
                step(&mut r, rt, *op);
            }
            drop(r.take_changes());
            let (_, initial) = g.join(PeerId(50), key.clone(), None, &r).unwrap();
            r.set_track_paths(true);
            let mut model = BTreeMap::new();
            apply_paths(&mut model, &initial);
            stream(&mut r, &mut g, after, |u| apply_paths(&mut model, u));
            let (_, dump) = g.join(PeerId(51), key, None, &r).unwrap();
            let mut fresh = BTreeMap::new();
            apply_paths(&mut fresh, &dump);
            prop_assert_eq!(&model, &fresh);
            // Every path of the Loc-RIB is advertised (all sources here are reflectable).
            let held: usize = r.v4().iter().map(|(_, paths)| paths.len()).sum();
            prop_assert_eq!(model.len(), held);
            for (p, id) in model.keys() {
                prop_assert!(id.is_some(), "{p:?} without a path id");
            }
        }
    }

    /// One operation on the RIB: `op` 0..=4 announces `rt`, 5 and 6 withdraw its prefix,
    /// 7 takes another peer down.
    fn step(r: &mut Rib, rt: &Route, op: u8) {
        match op {
            0..=4 => {
                r.receive(PeerId(rt.peer), &update(rt), &cx()).unwrap();
            }
            5 | 6 => {
                let w = Update {
                    withdrawn: vec![Ipv4Nlri::new(prefix(rt.prefix))],
                    ..Update::default()
                };
                r.receive(PeerId(rt.peer), &w, &cx()).unwrap();
            }
            _ => {
                r.peer_down(PeerId(rt.peer % PEERS + 1)).unwrap();
            }
        }
    }

    /// Runs `ops` through the RIB and the groups as the session loop does, handing every
    /// flushed batch to `sink`: changes processed after each operation, flushed after most
    /// (those with `origin` 1 let changes pile up across operations), and once at the end.
    fn stream(
        r: &mut Rib,
        g: &mut UpdateGroups,
        ops: &[(Route, u8)],
        mut sink: impl FnMut(&[Update]),
    ) {
        for (rt, op) in ops {
            step(r, rt, *op);
            let ch = r.take_changes();
            g.process(&ch, r);
            drop(ch);
            if rt.origin != 1 {
                for b in g.flush().unwrap() {
                    sink(&b.updates);
                }
            }
        }
        for b in g.flush().unwrap() {
            sink(&b.updates);
        }
    }

    /// [`apply`] keyed by (prefix, path id).
    fn apply_paths(
        model: &mut BTreeMap<(Ipv4Prefix, Option<u32>), Vec<Attribute>>,
        updates: &[Update],
    ) {
        for u in updates {
            for w in &u.withdrawn {
                model.remove(&(w.prefix, w.path_id));
            }
            for n in &u.nlri {
                model.insert((n.prefix, n.path_id), u.attributes.clone());
            }
        }
    }
}
