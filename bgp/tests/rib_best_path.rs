//! Best-path selection (RFC 4271 §9.1.2) and ECMP sets, case by case.

use std::net::{IpAddr, Ipv4Addr};

use tabby_bgp::rib::best::{BestPathConfig, Candidate, FlatIgp, IgpCost, select};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerId, PeerInfo, PeerType};
use tabby_bgp::wire::{AsPath, AsSegment, AsSegmentType, Asn, Origin};

fn peer(id: u32, t: PeerType, rid: [u8; 4], addr: [u8; 4]) -> PeerInfo {
    PeerInfo {
        id: PeerId(id),
        peer_type: t,
        asn: Asn(if t == PeerType::Ebgp {
            65000 + id
        } else {
            64512
        }),
        router_id: Ipv4Addr::from(rid),
        address: IpAddr::V4(Ipv4Addr::from(addr)),
    }
}

fn attrs(path: &[u32], nh: [u8; 4]) -> PathAttrs {
    let mut a = PathAttrs::new(NextHop::V4(Ipv4Addr::from(nh)));
    a.as_path = AsPath::sequence(path.iter().copied());
    a
}

struct Case {
    name: &'static str,
    cands: Vec<(PeerInfo, PathAttrs)>,
    max_paths: usize,
    /// Expected ECMP set as indices into `cands`, best first.
    expect: Vec<usize>,
}

fn run(cases: Vec<Case>, igp: &dyn IgpCost) {
    for case in cases {
        let cands: Vec<Candidate<'_>> = case
            .cands
            .iter()
            .map(|(p, a)| Candidate {
                attrs: a,
                peer: p,
                path_id: 0,
            })
            .collect();
        let cfg = BestPathConfig {
            default_local_pref: 100,
            max_paths: case.max_paths,
        };
        let got = select(&cands, &cfg, igp);
        assert_eq!(got, case.expect, "{}", case.name);
        // Order independence: reversed input gives the same set (mapped back).
        let n = cands.len();
        let rev: Vec<Candidate<'_>> = cands.iter().rev().copied().collect();
        let got_rev: Vec<usize> = select(&rev, &cfg, igp).iter().map(|i| n - 1 - i).collect();
        assert_eq!(got_rev, case.expect, "{} (reversed input)", case.name);
    }
}

#[test]
fn decision_process_steps() {
    let e1 = peer(1, PeerType::Ebgp, [10, 0, 0, 1], [192, 0, 2, 1]);
    let e2 = peer(2, PeerType::Ebgp, [10, 0, 0, 2], [192, 0, 2, 2]);
    let e3 = peer(3, PeerType::Ebgp, [10, 0, 0, 3], [192, 0, 2, 3]);
    let i4 = peer(4, PeerType::Ibgp, [10, 0, 0, 4], [192, 0, 2, 4]);
    let i5 = peer(5, PeerType::Ibgp, [10, 0, 0, 5], [192, 0, 2, 5]);
    let with = |mut a: PathAttrs, f: &dyn Fn(&mut PathAttrs)| {
        f(&mut a);
        a
    };
    let cases = vec![
        Case {
            name: "RFC 4271 §9.1.1: highest LOCAL_PREF wins over a shorter path",
            cands: vec![
                (
                    i4.clone(),
                    with(attrs(&[1, 2, 3], [1, 1, 1, 1]), &|a| {
                        a.local_pref = Some(200)
                    }),
                ),
                (e1.clone(), attrs(&[1], [1, 1, 1, 2])),
            ],
            max_paths: 1,
            expect: vec![0],
        },
        Case {
            name: "RFC 4271 §9.1.1: missing LOCAL_PREF counts as the default (100) and loses to 150",
            cands: vec![
                (e1.clone(), attrs(&[1], [1, 1, 1, 2])),
                (
                    i4.clone(),
                    with(attrs(&[7, 8], [1, 1, 1, 1]), &|a| a.local_pref = Some(150)),
                ),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (a): shortest AS_PATH",
            cands: vec![
                (e1.clone(), attrs(&[1, 2], [1, 1, 1, 1])),
                (e2.clone(), attrs(&[2], [1, 1, 1, 2])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (a): an AS_SET counts as one AS",
            cands: vec![
                (
                    e1.clone(),
                    with(attrs(&[1], [1, 1, 1, 1]), &|a| {
                        a.as_path.segments.push(AsSegment {
                            kind: AsSegmentType::Set,
                            asns: vec![Asn(5), Asn(6), Asn(7)],
                        })
                    }),
                ),
                (e2.clone(), attrs(&[2, 3, 4], [1, 1, 1, 2])),
            ],
            max_paths: 1,
            expect: vec![0],
        },
        Case {
            name: "RFC 5065 §5.3: confederation segments count zero",
            cands: vec![
                (
                    i4.clone(),
                    with(attrs(&[1, 2], [1, 1, 1, 1]), &|a| {
                        a.as_path.segments.insert(
                            0,
                            AsSegment {
                                kind: AsSegmentType::ConfedSequence,
                                asns: vec![Asn(65100), Asn(65101), Asn(65102)],
                            },
                        )
                    }),
                ),
                (i5.clone(), attrs(&[1, 2, 3], [1, 1, 1, 2])),
            ],
            max_paths: 1,
            expect: vec![0],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (b): lowest ORIGIN",
            cands: vec![
                (
                    e1.clone(),
                    with(attrs(&[1], [1, 1, 1, 1]), &|a| {
                        a.origin = Origin::Incomplete
                    }),
                ),
                (
                    e2.clone(),
                    with(attrs(&[2], [1, 1, 1, 2]), &|a| a.origin = Origin::Egp),
                ),
                (
                    e3.clone(),
                    with(attrs(&[3], [1, 1, 1, 3]), &|a| {
                        a.origin = Origin::Incomplete
                    }),
                ),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (c): lowest MED among routes from the same neighbour AS",
            cands: vec![
                (
                    e1.clone(),
                    with(attrs(&[9], [1, 1, 1, 1]), &|a| a.med = Some(50)),
                ),
                (
                    e2.clone(),
                    with(attrs(&[9], [1, 1, 1, 2]), &|a| a.med = Some(10)),
                ),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (c): MED is not compared across neighbour ASes",
            cands: vec![
                // Different neighbour ASes: MED ignored, router id decides (e1 lower).
                (
                    e1.clone(),
                    with(attrs(&[8], [1, 1, 1, 1]), &|a| a.med = Some(50)),
                ),
                (
                    e2.clone(),
                    with(attrs(&[9], [1, 1, 1, 2]), &|a| a.med = Some(10)),
                ),
            ],
            max_paths: 1,
            expect: vec![0],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (c): a missing MED is the lowest value (0)",
            cands: vec![
                (
                    e1.clone(),
                    with(attrs(&[9], [1, 1, 1, 1]), &|a| a.med = Some(1)),
                ),
                (e2.clone(), attrs(&[9], [1, 1, 1, 2])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (c): non-transitive MED is order independent (3 routes, 2 ASes)",
            cands: vec![
                (
                    e1.clone(),
                    with(attrs(&[9], [1, 1, 1, 1]), &|a| a.med = Some(20)),
                ),
                (
                    e2.clone(),
                    with(attrs(&[8], [1, 1, 1, 2]), &|a| a.med = Some(0)),
                ),
                (
                    e3.clone(),
                    with(attrs(&[9], [1, 1, 1, 3]), &|a| a.med = Some(10)),
                ),
            ],
            max_paths: 1,
            // e1 eliminated by e3 (same AS 9, lower MED); e2 vs e3: lower router id is e2.
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (d): eBGP-learned over iBGP-learned",
            cands: vec![
                (i4.clone(), attrs(&[1], [1, 1, 1, 1])),
                (e3.clone(), attrs(&[1], [1, 1, 1, 3])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (f): lowest router id",
            cands: vec![
                (i5.clone(), attrs(&[1], [1, 1, 1, 5])),
                (i4.clone(), attrs(&[1], [1, 1, 1, 4])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4456 §9: ORIGINATOR_ID replaces the router id",
            cands: vec![
                (
                    i4.clone(),
                    with(attrs(&[1], [1, 1, 1, 4]), &|a| {
                        a.originator_id = Some(Ipv4Addr::new(10, 9, 9, 9))
                    }),
                ),
                (i5.clone(), attrs(&[1], [1, 1, 1, 5])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4456 §9: shorter CLUSTER_LIST when originator ids tie",
            cands: vec![
                (
                    i4.clone(),
                    with(attrs(&[1], [1, 1, 1, 4]), &|a| {
                        a.originator_id = Some(Ipv4Addr::new(10, 1, 1, 1));
                        a.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)];
                    }),
                ),
                (
                    i5.clone(),
                    with(attrs(&[1], [1, 1, 1, 5]), &|a| {
                        a.originator_id = Some(Ipv4Addr::new(10, 1, 1, 1));
                        a.cluster_list = vec![Ipv4Addr::new(3, 3, 3, 3)];
                    }),
                ),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.2 (g): lowest peer address when router ids tie",
            cands: vec![
                (
                    peer(6, PeerType::Ibgp, [10, 0, 0, 9], [192, 0, 2, 9]),
                    attrs(&[1], [1, 1, 1, 9]),
                ),
                (
                    peer(7, PeerType::Ibgp, [10, 0, 0, 9], [192, 0, 2, 8]),
                    attrs(&[1], [1, 1, 1, 8]),
                ),
            ],
            max_paths: 1,
            expect: vec![1],
        },
        Case {
            name: "ECMP: equal up to the IGP step; ordered by the tie breaks; limited by max-paths",
            cands: vec![
                (e3.clone(), attrs(&[7], [1, 1, 1, 3])),
                (e1.clone(), attrs(&[8], [1, 1, 1, 1])),
                (e2.clone(), attrs(&[9], [1, 1, 1, 2])),
                (i4.clone(), attrs(&[9], [1, 1, 1, 4])),
            ],
            max_paths: 2,
            expect: vec![1, 2],
        },
        Case {
            name: "ECMP: max-paths larger than the set; iBGP path not in an eBGP set",
            cands: vec![
                (e3.clone(), attrs(&[7], [1, 1, 1, 3])),
                (e1.clone(), attrs(&[8], [1, 1, 1, 1])),
                (i4.clone(), attrs(&[9], [1, 1, 1, 4])),
            ],
            max_paths: 8,
            expect: vec![1, 0],
        },
        Case {
            name: "ECMP: a different AS_PATH length is not equal",
            cands: vec![
                (e1.clone(), attrs(&[8], [1, 1, 1, 1])),
                (e2.clone(), attrs(&[8, 9], [1, 1, 1, 2])),
            ],
            max_paths: 4,
            expect: vec![0],
        },
    ];
    run(cases, &FlatIgp);
}

#[test]
fn igp_cost_hook() {
    let i4 = peer(4, PeerType::Ibgp, [10, 0, 0, 4], [192, 0, 2, 4]);
    let i5 = peer(5, PeerType::Ibgp, [10, 0, 0, 5], [192, 0, 2, 5]);
    // 1.1.1.4 costs 20, 1.1.1.5 costs 10, 1.1.1.6 is unreachable.
    let igp = |nh: IpAddr| match nh {
        IpAddr::V4(a) if a == Ipv4Addr::new(1, 1, 1, 4) => Some(20),
        IpAddr::V4(a) if a == Ipv4Addr::new(1, 1, 1, 5) => Some(10),
        _ => None,
    };
    let cases = vec![
        Case {
            name: "RFC 4271 §9.1.2.2 (e): lowest IGP cost to the next hop",
            cands: vec![
                (i4.clone(), attrs(&[1], [1, 1, 1, 4])),
                (i5.clone(), attrs(&[1], [1, 1, 1, 5])),
            ],
            max_paths: 4,
            expect: vec![1],
        },
        Case {
            name: "RFC 4271 §9.1.2.1: an unresolvable next hop is excluded",
            cands: vec![(i4.clone(), attrs(&[1], [1, 1, 1, 6]))],
            max_paths: 1,
            expect: vec![],
        },
        Case {
            name: "RFC 4271 §9.1.2.1: unresolvable excluded even with higher LOCAL_PREF",
            cands: vec![
                (i4.clone(), {
                    let mut a = attrs(&[1], [1, 1, 1, 6]);
                    a.local_pref = Some(500);
                    a
                }),
                (i5.clone(), attrs(&[1], [1, 1, 1, 5])),
            ],
            max_paths: 1,
            expect: vec![1],
        },
    ];
    run(cases, &igp);
}
