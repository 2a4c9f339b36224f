//! The diff: from desired and actual state to the netlink operations that make the kernel match.
//!
//! Owns: deciding add / replace / delete, and which routes must be left alone. Must not touch:
//! netlink or any I/O — it is a pure function, tested as a table below.
//!
//! Rules, each a test case:
//! - A route of another protocol is never the subject of an operation. Because a kernel
//!   `NLM_F_REPLACE` replaces the first route with the same (table, prefix, TOS, metric) whatever
//!   its protocol (IPv4 `fib_table_insert`, IPv6 `fib6_add_rt2node`), a desired route whose key
//!   a foreign route occupies is reported as a conflict instead of written; if we have a wrong
//!   route of ours on that key it is deleted (deletes name our protocol, so they cannot hit the
//!   foreign one).
//! - A new route is an add with `NLM_F_EXCL`, so a foreign route that appeared since our last
//!   look makes the add fail instead of being merged into (IPv6 appends next hops otherwise).
//! - A route of ours that nothing desires is deleted, unless it is retained: adopted at start
//!   and not yet confirmed or swept (graceful restart keeps forwarding on it). A retained route
//!   that disappears from the kernel is put back as it was, like a desired one.
//! - Adds and replaces come before deletes, so traffic moves to the new route first.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::model::{Actual, Desired, RouteKey, Target};

/// One change to the kernel's routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a route that does not exist (`NLM_F_CREATE | NLM_F_EXCL`).
    Add { key: RouteKey, target: Target },
    /// Rewrite our existing route in place (`NLM_F_CREATE | NLM_F_REPLACE`): atomic for
    /// forwarding, no gap between a delete and an add.
    Replace { key: RouteKey, target: Target },
    /// Remove our route; the request names our protocol and the route's type.
    Delete { key: RouteKey, target: Target },
}

impl Op {
    pub fn key(&self) -> &RouteKey {
        match self {
            Op::Add { key, .. } | Op::Replace { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// What to do, and what cannot be done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Desired routes not written because a route of another protocol holds their key.
    pub conflicts: Vec<RouteKey>,
}

/// Which prefixes to compare.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything: desired prefixes and every route of ours, in any table or metric.
    All,
    /// Only these prefixes, at the configured table and metric (incremental updates).
    Prefixes(&'a HashSet<IpNet>),
}

/// Where Tabby writes its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub table: u32,
    pub metric: u32,
}

/// Computes the operations that turn `actual` into `desired` within `scope`. Routes of ours
/// listed in `retained` (with the target they were adopted with) are kept, or restored, even
/// when nothing desires them.
pub fn plan(
    desired: &Desired,
    actual: &Actual,
    retained: &HashMap<RouteKey, Target>,
    at: Placement,
    scope: Scope<'_>,
) -> Plan {
    let mut plan = Plan::default();
    let mut deletes = Vec::new();
    let mut moved = Vec::new();
    // One desired prefix at our placement against what the kernel has there.
    let mut consider = |key: RouteKey, want: Option<Target>, plan: &mut Plan| {
        let have = actual.own.get(&key);
        let occupied = actual.foreign.contains(&key);
        match (want, have) {
            (Some(want), Some(have)) if want.satisfied_by(have) => {}
            (Some(want), Some(have)) => {
                if occupied {
                    plan.conflicts.push(key);
                    deletes.push(Op::Delete {
                        key,
                        target: have.clone(),
                    });
                } else {
                    plan.ops.push(Op::Replace { key, target: want });
                }
            }
            (Some(want), None) => {
                if occupied {
                    plan.conflicts.push(key);
                } else {
                    plan.ops.push(Op::Add { key, target: want });
                }
            }
            (None, Some(have)) => {
                if !retained.contains_key(&key) {
                    deletes.push(Op::Delete {
                        key,
                        target: have.clone(),
                    });
                }
            }
            (None, None) => {
                if let Some(kept) = retained.get(&key)
                    && !occupied
                {
                    plan.ops.push(Op::Add {
                        key,
                        target: kept.clone(),
                    });
                }
            }
        }
    };
    match scope {
        Scope::Prefixes(prefixes) => {
            for p in prefixes {
                let p = p.trunc();
                consider(
                    RouteKey::new(p, at.table, at.metric),
                    desired.target(&p),
                    &mut plan,
                );
            }
        }
        Scope::All => {
            for (prefix, want) in desired.routes() {
                consider(
                    RouteKey::new(prefix, at.table, at.metric),
                    Some(want),
                    &mut plan,
                );
            }
            // Ours that nothing desires — including ours in another table or at another metric
            // (a configuration change, an older version): never desired there.
            for key in actual.own.keys() {
                let elsewhere = (key.table, key.metric) != (at.table, at.metric);
                if elsewhere {
                    if !retained.contains_key(key) {
                        moved.push(Op::Delete {
                            key: *key,
                            target: actual.own[key].clone(),
                        });
                    }
                } else if desired.target(&key.prefix).is_none() {
                    consider(*key, None, &mut plan);
                }
            }
            // Retained routes someone removed: back as they were.
            for key in retained.keys() {
                let elsewhere = (key.table, key.metric) != (at.table, at.metric);
                if !actual.own.contains_key(key)
                    && (elsewhere || desired.target(&key.prefix).is_none())
                {
                    consider(*key, None, &mut plan);
                }
            }
        }
    }
    deletes.extend(moved);
    plan.ops.sort_unstable_by(|a, b| a.key().cmp(b.key()));
    deletes.sort_unstable_by(|a, b| a.key().cmp(b.key()));
    plan.ops.extend(deletes);
    plan.conflicts.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::model::{KernelRoute, NextHop};

    const OURS: u8 = 84;
    const STATIC: u8 = 4;
    const AT: Placement = Placement {
        table: 254,
        metric: 32,
    };

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn key(s: &str) -> RouteKey {
        RouteKey::new(net(s), AT.table, AT.metric)
    }
    fn via(hops: &[&str]) -> Target {
        Target::unicast(
            hops.iter()
                .map(|h| NextHop::via(h.parse().unwrap()))
                .collect(),
        )
    }
    fn route(k: RouteKey, protocol: u8, target: Target) -> KernelRoute {
        KernelRoute {
            key: k,
            tos: 0,
            protocol,
            target,
        }
    }
    fn learned(routes: &[(&str, &[&str])]) -> Desired {
        let mut d = Desired::new();
        for (p, hops) in routes {
            let hops = hops
                .iter()
                .map(|h| NextHop::via(h.parse().unwrap()))
                .collect();
            d.update(net(p), hops).unwrap();
        }
        d
    }
    fn full(desired: &Desired, actual: &Actual) -> Plan {
        plan(desired, actual, &HashMap::new(), AT, Scope::All)
    }

    /// One row: desired, kernel routes, expected ops, expected conflicts.
    struct Case {
        name: &'static str,
        desired: Desired,
        kernel: Vec<KernelRoute>,
        ops: Vec<Op>,
        conflicts: Vec<RouteKey>,
    }

    #[test]
    fn table() {
        let p = "10.1.0.0/26";
        let p6 = "fd00:1::/64";
        let mut blackhole = Desired::new();
        blackhole.set_own_blocks([net(p)]);
        let cases = vec![
            Case {
                name: "empty both ways: nothing to do",
                desired: Desired::new(),
                kernel: vec![],
                ops: vec![],
                conflicts: vec![],
            },
            Case {
                name: "new learned route is an add",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![],
                ops: vec![Op::Add {
                    key: key(p),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "same route already there: nothing (adoption is free)",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1"]))],
                ops: vec![],
                conflicts: vec![],
            },
            Case {
                name: "ECMP set in another order is the same route",
                desired: learned(&[(p, &["10.0.0.2", "10.0.0.1"])]),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1", "10.0.0.2"]))],
                ops: vec![],
                conflicts: vec![],
            },
            Case {
                name: "ECMP set grows: replace in place",
                desired: learned(&[(p, &["10.0.0.1", "10.0.0.2"])]),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1"]))],
                ops: vec![Op::Replace {
                    key: key(p),
                    target: via(&["10.0.0.1", "10.0.0.2"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "next hop changes: replace, never delete+add",
                desired: learned(&[(p, &["10.0.0.3"])]),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1"]))],
                ops: vec![Op::Replace {
                    key: key(p),
                    target: via(&["10.0.0.3"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "unicast becomes own block: replace with blackhole",
                desired: blackhole.clone(),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1"]))],
                ops: vec![Op::Replace {
                    key: key(p),
                    target: Target::Blackhole,
                }],
                conflicts: vec![],
            },
            Case {
                name: "blackhole becomes unicast",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![route(key(p), OURS, Target::Blackhole)],
                ops: vec![Op::Replace {
                    key: key(p),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "unreachable route of ours is rewritten",
                desired: blackhole.clone(),
                kernel: vec![route(key(p), OURS, Target::Other(7))],
                ops: vec![Op::Replace {
                    key: key(p),
                    target: Target::Blackhole,
                }],
                conflicts: vec![],
            },
            Case {
                name: "withdrawn: delete ours",
                desired: Desired::new(),
                kernel: vec![route(key(p), OURS, via(&["10.0.0.1"]))],
                ops: vec![Op::Delete {
                    key: key(p),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "foreign routes are never touched, whatever we desire elsewhere",
                desired: learned(&[("10.9.0.0/26", &["10.0.0.1"])]),
                kernel: vec![
                    route(key(p), STATIC, via(&["10.0.0.7"])),
                    route(key("0.0.0.0/0"), 3, via(&["10.0.0.254"])),
                    route(key(p6), 9, via(&["fe80::1"])),
                ],
                ops: vec![Op::Add {
                    key: key("10.9.0.0/26"),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "same prefix held by a foreign route at our metric: conflict, no write",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![route(key(p), STATIC, via(&["10.0.0.7"]))],
                ops: vec![],
                conflicts: vec![key(p)],
            },
            Case {
                name: "same prefix, foreign route at another metric: ours is added beside it",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![route(
                    RouteKey::new(net(p), 254, 0),
                    STATIC,
                    via(&["10.0.0.7"]),
                )],
                ops: vec![Op::Add {
                    key: key(p),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "overlapping foreign prefix does not block ours",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![route(key("10.1.0.0/16"), STATIC, Target::Blackhole)],
                ops: vec![Op::Add {
                    key: key(p),
                    target: via(&["10.0.0.1"]),
                }],
                conflicts: vec![],
            },
            Case {
                name: "foreign beside a wrong route of ours: delete ours (protocol-qualified), report",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![
                    route(key(p), STATIC, via(&["10.0.0.7"])),
                    route(key(p), OURS, via(&["10.0.0.9"])),
                ],
                ops: vec![Op::Delete {
                    key: key(p),
                    target: via(&["10.0.0.9"]),
                }],
                conflicts: vec![key(p)],
            },
            Case {
                name: "foreign beside a correct route of ours: keep ours",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![
                    route(key(p), STATIC, via(&["10.0.0.7"])),
                    route(key(p), OURS, via(&["10.0.0.1"])),
                ],
                ops: vec![],
                conflicts: vec![],
            },
            Case {
                name: "ours at an old metric or table is deleted; the new key is added first",
                desired: learned(&[(p, &["10.0.0.1"])]),
                kernel: vec![
                    route(RouteKey::new(net(p), 254, 10), OURS, via(&["10.0.0.1"])),
                    route(RouteKey::new(net(p), 100, 32), OURS, via(&["10.0.0.1"])),
                ],
                ops: vec![
                    Op::Add {
                        key: key(p),
                        target: via(&["10.0.0.1"]),
                    },
                    Op::Delete {
                        key: RouteKey::new(net(p), 100, 32),
                        target: via(&["10.0.0.1"]),
                    },
                    Op::Delete {
                        key: RouteKey::new(net(p), 254, 10),
                        target: via(&["10.0.0.1"]),
                    },
                ],
                conflicts: vec![],
            },
            Case {
                name: "families mix: IPv4 and IPv6 each diffed on their own key",
                desired: learned(&[(p, &["10.0.0.1"]), (p6, &["fd00::1", "fd00::2"])]),
                kernel: vec![
                    route(key(p6), OURS, via(&["fd00::1"])),
                    route(key("fd00:9::/64"), OURS, Target::Blackhole),
                ],
                ops: vec![
                    Op::Add {
                        key: key(p),
                        target: via(&["10.0.0.1"]),
                    },
                    Op::Replace {
                        key: key(p6),
                        target: via(&["fd00::1", "fd00::2"]),
                    },
                    Op::Delete {
                        key: key("fd00:9::/64"),
                        target: Target::Blackhole,
                    },
                ],
                conflicts: vec![],
            },
        ];
        for case in cases {
            let actual = Actual::from_routes(case.kernel, OURS);
            let got = full(&case.desired, &actual);
            assert_eq!(got.ops, case.ops, "{}", case.name);
            assert_eq!(got.conflicts, case.conflicts, "{}", case.name);
        }
    }

    #[test]
    fn retained_routes_survive_until_swept() {
        let a = key("10.1.0.0/26");
        let b = key("10.2.0.0/26");
        let actual = Actual::from_routes(
            [
                route(a, OURS, via(&["10.0.0.1"])),
                route(b, OURS, via(&["10.0.0.1"])),
            ],
            OURS,
        );
        // Restart: BGP has re-learned only `a` (with a new next hop).
        let desired = learned(&[("10.1.0.0/26", &["10.0.0.2"])]);
        let retained = actual.own.clone();
        let p = plan(&desired, &actual, &retained, AT, Scope::All);
        assert_eq!(
            p.ops,
            vec![Op::Replace {
                key: a,
                target: via(&["10.0.0.2"])
            }],
            "a desired route replaces a retained one; b stays until the sweep"
        );
        // Sweep = plan with nothing retained.
        let p = full(&desired, &actual);
        assert_eq!(p.ops.len(), 2);
        assert_eq!(
            p.ops[1],
            Op::Delete {
                key: b,
                target: via(&["10.0.0.1"])
            }
        );
    }

    #[test]
    fn retained_route_deleted_by_someone_is_put_back_until_swept() {
        let a = key("10.1.0.0/26");
        let elsewhere = RouteKey::new(net("10.2.0.0/26"), 100, 32);
        let retained: HashMap<RouteKey, Target> =
            [(a, via(&["10.0.0.1"])), (elsewhere, Target::Blackhole)].into();
        // Both gone from the kernel, nothing desired yet (BGP still restarting).
        let actual = Actual::default();
        let p = plan(&Desired::new(), &actual, &retained, AT, Scope::All);
        assert_eq!(
            p.ops,
            vec![
                Op::Add {
                    key: a,
                    target: via(&["10.0.0.1"])
                },
                Op::Add {
                    key: elsewhere,
                    target: Target::Blackhole
                },
            ]
        );
        // Incrementally too (a deletion notification marks the prefix dirty).
        let scope: HashSet<IpNet> = [net("10.1.0.0/26")].into();
        let p = plan(
            &Desired::new(),
            &actual,
            &retained,
            AT,
            Scope::Prefixes(&scope),
        );
        assert_eq!(p.ops.len(), 1);
        // A foreign route took the key meanwhile: leave it.
        let mut taken = Actual::default();
        taken.foreign.insert(a);
        let p = plan(
            &Desired::new(),
            &taken,
            &retained,
            AT,
            Scope::Prefixes(&scope),
        );
        assert!(p.ops.is_empty() && p.conflicts.is_empty(), "{p:?}");
    }

    #[test]
    fn scoped_plan_looks_only_at_given_prefixes() {
        let actual = Actual::from_routes(
            [
                route(key("10.1.0.0/26"), OURS, via(&["10.0.0.1"])),
                route(key("10.2.0.0/26"), OURS, via(&["10.0.0.1"])),
            ],
            OURS,
        );
        let desired = learned(&[("10.3.0.0/26", &["10.0.0.1"])]);
        let scope: HashSet<IpNet> = [net("10.1.0.0/26"), net("10.3.0.7/26")].into();
        let p = plan(
            &desired,
            &actual,
            &HashMap::new(),
            AT,
            Scope::Prefixes(&scope),
        );
        assert_eq!(
            p.ops,
            vec![
                Op::Add {
                    key: key("10.3.0.0/26"),
                    target: via(&["10.0.0.1"])
                },
                Op::Delete {
                    key: key("10.1.0.0/26"),
                    target: via(&["10.0.0.1"])
                },
            ]
        );
    }

    #[test]
    fn pod_host_routes_are_dev_routes() {
        let mut d = Desired::new();
        d.set_pod_route(net("10.1.0.5/32"), 12);
        d.set_own_blocks([net("10.1.0.0/26")]);
        let p = full(&d, &Actual::default());
        assert_eq!(
            p.ops,
            vec![
                Op::Add {
                    key: key("10.1.0.0/26"),
                    target: Target::Blackhole
                },
                Op::Add {
                    key: key("10.1.0.5/32"),
                    target: Target::Unicast(vec![NextHop::dev(12)])
                },
            ]
        );
    }

    #[test]
    fn large_plan_is_fast_and_complete() {
        let mut d = Desired::new();
        for i in 0..100_000u32 {
            let p = IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 6)), 26).unwrap(),
            );
            d.update(p, vec![NextHop::via("192.168.0.1".parse().unwrap())])
                .unwrap();
        }
        let t = std::time::Instant::now();
        let p = full(&d, &Actual::default());
        assert_eq!(p.ops.len(), 100_000);
        assert!(p.ops.iter().all(|o| matches!(o, Op::Add { .. })));
        eprintln!("plan of 100k adds: {:?}", t.elapsed());
    }
}
