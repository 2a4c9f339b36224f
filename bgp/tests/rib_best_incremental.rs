//! `best::compare_new`, the incremental shortcut, against the full decision process on random
//! candidate sets: whenever it decides, the full `select` over the prefix's paths plus the new
//! one gives exactly what it implies (the old selection, or the new path alone).

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use tabby_bgp::rib::best::{BestPathConfig, Candidate, Incremental, compare_new, select};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerId, PeerInfo, PeerType};
use tabby_bgp::wire::{AsPath, Asn, Origin};

#[derive(Debug, Clone)]
struct Gen {
    peer_type: u8,
    router_id: u8,
    path_len: u8,
    neighbor_as: u8,
    med: Option<u8>,
    local_pref: Option<u8>,
    origin: u8,
    /// 0: unreachable next hop; else its IGP cost class.
    next_hop: u8,
    originator: Option<u8>,
}

fn gen_path() -> impl Strategy<Value = Gen> {
    (
        (0u8..3, 0u8..4, 1u8..4, 0u8..3),
        (
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..3),
            0u8..3,
            0u8..4,
            proptest::option::of(0u8..3),
        ),
    )
        .prop_map(
            |(
                (peer_type, router_id, path_len, neighbor_as),
                (med, local_pref, origin, next_hop, originator),
            )| Gen {
                peer_type,
                router_id,
                path_len,
                neighbor_as,
                med,
                local_pref,
                origin,
                next_hop,
                originator,
            },
        )
}

fn build(i: usize, g: &Gen) -> (PeerInfo, PathAttrs) {
    let peer_type = match g.peer_type {
        0 => PeerType::Ebgp,
        1 => PeerType::Ibgp,
        _ => PeerType::RrClient,
    };
    let id = u32::try_from(i).unwrap() + 1;
    let peer = PeerInfo {
        id: PeerId(id),
        peer_type,
        asn: Asn(64512),
        router_id: Ipv4Addr::new(10, 0, 0, g.router_id),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, u8::try_from(id).unwrap())),
    };
    let mut a = PathAttrs::new(NextHop::V4(Ipv4Addr::new(10, 1, g.next_hop, 1)));
    let first = 65000 + u32::from(g.neighbor_as);
    a.as_path = AsPath::sequence(
        std::iter::once(first).chain(std::iter::repeat_n(65100, usize::from(g.path_len) - 1)),
    );
    a.med = g.med.map(u32::from);
    a.local_pref = g.local_pref.map(|l| 100 + u32::from(l) * 50 - 50);
    a.origin = match g.origin {
        0 => Origin::Igp,
        1 => Origin::Egp,
        _ => Origin::Incomplete,
    };
    a.originator_id = g.originator.map(|o| Ipv4Addr::new(10, 0, 0, o));
    (peer, a)
}

/// Next hops 10.1.0.1 are unreachable; 10.1.c.1 costs c × 10.
fn igp(nh: IpAddr) -> Option<u32> {
    match nh {
        IpAddr::V4(v4) if v4.octets()[2] == 0 => None,
        IpAddr::V4(v4) => Some(u32::from(v4.octets()[2]) * 10),
        IpAddr::V6(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn compare_new_agrees_with_the_full_decision_process(
        paths in proptest::collection::vec(gen_path(), 2..8),
        max_paths in 1usize..4,
    ) {
        let built: Vec<(PeerInfo, PathAttrs)> =
            paths.iter().enumerate().map(|(i, g)| build(i, g)).collect();
        let cands: Vec<Candidate<'_>> = built
            .iter()
            .map(|(p, a)| Candidate { attrs: a, peer: p, path_id: 0 })
            .collect();
        let cfg = BestPathConfig { default_local_pref: 100, max_paths };
        let n = cands.len();
        let before = select(&cands[..n - 1], &cfg, &igp);
        // The shortcut needs a current best.
        prop_assume!(!before.is_empty());
        let best = cands[before[0]];
        let after = select(&cands, &cfg, &igp);
        match compare_new(&best, &cands[n - 1], &cfg, &igp) {
            Incremental::Loses => prop_assert_eq!(after, before),
            Incremental::Wins => prop_assert_eq!(after, vec![n - 1]),
            Incremental::Undecided => {}
        }
    }
}

/// The cases the shortcut decides, named (the rest fall to the full process).
#[test]
fn compare_new_cases() {
    let g = |lp: Option<u8>, len: u8, origin: u8, nh: u8| Gen {
        peer_type: 1,
        router_id: 1,
        path_len: len,
        neighbor_as: 0,
        med: None,
        local_pref: lp,
        origin,
        next_hop: nh,
        originator: None,
    };
    let cfg = BestPathConfig::default();
    let cases = [
        (
            "higher LOCAL_PREF wins",
            g(Some(1), 2, 0, 1),
            g(Some(2), 3, 2, 1),
            Incremental::Wins,
        ),
        (
            "lower LOCAL_PREF loses",
            g(Some(2), 3, 2, 1),
            g(Some(1), 1, 0, 1),
            Incremental::Loses,
        ),
        (
            "shorter AS_PATH wins",
            g(None, 3, 0, 1),
            g(None, 2, 2, 1),
            Incremental::Wins,
        ),
        (
            "longer AS_PATH loses",
            g(None, 2, 2, 1),
            g(None, 3, 0, 1),
            Incremental::Loses,
        ),
        (
            "lower ORIGIN wins",
            g(None, 2, 1, 1),
            g(None, 2, 0, 1),
            Incremental::Wins,
        ),
        (
            "higher ORIGIN loses",
            g(None, 2, 0, 1),
            g(None, 2, 1, 1),
            Incremental::Loses,
        ),
        (
            "unreachable next hop loses",
            g(None, 3, 2, 1),
            g(Some(2), 1, 0, 0),
            Incremental::Loses,
        ),
        (
            "tie through ORIGIN: MED and later need all paths",
            g(None, 2, 0, 1),
            g(None, 2, 0, 2),
            Incremental::Undecided,
        ),
    ];
    for (name, best, new, want) in cases {
        let (bp, ba) = build(0, &best);
        let (np, na) = build(1, &new);
        let b = Candidate {
            attrs: &ba,
            peer: &bp,
            path_id: 0,
        };
        let n = Candidate {
            attrs: &na,
            peer: &np,
            path_id: 0,
        };
        assert_eq!(compare_new(&b, &n, &cfg, &igp), want, "{name}");
    }
}
