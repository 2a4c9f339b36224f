//! What a node announces and accepts: originated prefixes and the rendered policies, checked
//! by running the speaker's own policy engine over routes.

mod peering_fixtures;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::IpNet;
use peering_fixtures::*;
use serde_json::json;
use tabby_agent::export::{self, Origination, PolicyOp};
use tabby_agent::peering::Plan;
use tabby_api::v1alpha1::BGPConfigurationSpec;
use tabby_bgp::policy::{EvalContext, Outcome, Policy, PolicyConfig, RouteView, compile_all};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerType, Prefix};
use tabby_bgp::wire::{Asn, Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity};

fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR literal")
}

fn rib_prefix(s: &str) -> Prefix {
    if s.contains(':') {
        Prefix::V6(Ipv6Prefix::from_str(s).expect("v6"))
    } else {
        Prefix::V4(Ipv4Prefix::from_str(s).expect("v4"))
    }
}

/// Whether `policy` accepts `prefix` (compiled by the speaker's own validation).
fn accepts(policy: &PolicyConfig, prefix: &str) -> bool {
    let p = Policy::from_config(policy).expect("generated policy validates");
    let attrs = PathAttrs::new(NextHop::V4(Ipv4Addr::new(10, 0, 0, 9)));
    let view = RouteView {
        prefix: rib_prefix(prefix),
        attrs: &attrs,
        peer_type: PeerType::Ebgp,
    };
    let cx = EvalContext {
        local_asn: Asn(64512),
        self_next_hop: None,
    };
    matches!(p.evaluate(&view, &cx), Outcome::Accept { .. })
}

/// A cluster with pools `main` (exported) and `internal` (disableBGPExport), node a's blocks in
/// both, node b's block in `main`, service ranges, and one ToR BGPPeer with filters.
struct Setup {
    plan: Plan,
    origination: Origination,
    policies: BTreeMap<String, PolicyConfig>,
    problems: Vec<tabby_agent::peering::Problem>,
}

fn setup(tor_spec: serde_json::Value) -> Setup {
    let cfg = json!({
        "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
        "serviceLoadBalancerIPs": [{"cidr": "192.0.2.128/25"}],
    });
    let mut w = World {
        nodes: three_nodes(),
        config: Some(config(cfg.clone())),
        ..World::default()
    };
    w.peers.push(bgppeer("tor", tor_spec));
    let plan = w.plan("a");
    let (pools, mut problems) = export::pools(&[
        pool("main", "10.244.0.0/16", false),
        pool("internal", "10.250.0.0/16", true),
        pool("v6", "fd10::/48", false),
    ]);
    let spec: BGPConfigurationSpec = serde_json::from_value(cfg).unwrap();
    let (origination, p) = export::originate(
        "a",
        &[
            block("10.244.0.0/26", "main", "a"),
            block("10.244.0.64/26", "main", "b"),
            block("10.250.0.0/26", "internal", "a"),
            block("fd10::/122", "v6", "a"),
        ],
        &pools,
        &spec,
    );
    problems.extend(p);
    let policies = export::policies(&plan.policies, &pools, &origination);
    Setup {
        plan,
        origination,
        policies,
        problems,
    }
}

fn tor(filters: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}});
    for (k, v) in filters.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

#[test]
fn originates_own_blocks_as_aggregates_and_service_ranges() {
    let s = setup(tor(json!({})));
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let want: Vec<IpNet> = [
        "10.96.0.0/12",
        "10.244.0.0/26",
        "10.250.0.0/26",
        "192.0.2.128/25",
        "fd10::/122",
    ]
    .iter()
    .map(|s| net(s))
    .collect();
    assert_eq!(
        s.origination.prefixes().into_iter().collect::<Vec<_>>(),
        want
    );
    // Node b's block is b's to announce; the internal pool's block stays in the cluster.
    assert!(!s.origination.external().contains(&net("10.250.0.0/26")));
    assert!(s.origination.external().contains(&net("10.244.0.0/26")));
    assert!(!s.origination.blocks[&net("10.250.0.0/26")].external);
}

#[test]
fn every_generated_policy_validates_and_names_match_the_plan() {
    for spec in [
        tor(json!({})),
        tor(json!({
            "importFilters": [
                {"cidr": "0.0.0.0/0", "action": "Accept"},
                {"cidr": "10.0.0.0/8", "ge": 8, "le": 32, "action": "Reject"}],
            "exportFilters": [
                {"cidr": "10.244.0.0/16", "ge": 16, "le": 32, "action": "Accept"},
                {"cidr": "10.96.0.0/12", "action": "Reject"}]
        })),
    ] {
        let s = setup(spec);
        let all: Vec<PolicyConfig> = s.policies.values().cloned().collect();
        let compiled = compile_all(&all).expect("all policies compile");
        for peer in s.plan.peers.values() {
            assert!(compiled.contains_key(&peer.session.import_policy));
            assert!(compiled.contains_key(&peer.session.export_policy));
        }
        assert_eq!(
            s.policies.keys().collect::<Vec<_>>(),
            s.plan.policies.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn cluster_policies_carry_every_pool_route_and_nothing_else() {
    let s = setup(tor(json!({})));
    // (prefix, carried between nodes)
    let cases = [
        ("10.244.0.64/26", true), // another node's block
        ("10.244.0.0/16", true),  // the pool itself
        ("10.244.1.7/32", true),  // anything inside a pool
        ("10.250.0.0/26", true),  // disableBGPExport still reaches the cluster
        ("fd10::40/122", true),   // IPv6 pool
        ("10.96.0.0/12", false),  // services are not for other nodes
        ("10.0.0.0/8", false),    // covers a pool but is not inside one
        ("0.0.0.0/0", false),     // default route
        ("fd11::/122", false),    // outside the IPv6 pool
    ];
    for (prefix, want) in cases {
        for name in ["tabby-cluster-import", "tabby-cluster-export"] {
            assert_eq!(accepts(&s.policies[name], prefix), want, "{name} {prefix}");
        }
    }
}

#[test]
fn external_export_is_own_exportable_blocks_and_services_exactly() {
    let s = setup(tor(json!({})));
    let export = &s.policies["tabby-external-export"];
    let cases = [
        ("10.244.0.0/26", true),   // own block
        ("fd10::/122", true),      // own IPv6 block
        ("10.96.0.0/12", true),    // service cluster IPs
        ("192.0.2.128/25", true),  // load balancer IPs
        ("10.244.0.64/26", false), // node b's block: b announces it
        ("10.250.0.0/26", false),  // disableBGPExport
        ("10.244.0.0/16", false),  // the pool aggregate is nobody's route
        ("10.244.0.5/32", false),  // never per-pod /32s
        ("0.0.0.0/0", false),
    ];
    for (prefix, want) in cases {
        assert_eq!(accepts(export, prefix), want, "{prefix}");
    }
    // With no import filters, an external peer's routes are all accepted (BGPPeer API).
    let import = &s.policies["tabby-external-import"];
    for prefix in ["0.0.0.0/0", "10.244.0.64/26", "203.0.113.0/24"] {
        assert!(accepts(import, prefix), "{prefix}");
    }
}

#[test]
fn bgppeer_filters_first_match_within_what_the_session_may_carry() {
    let s = setup(tor(json!({
        "importFilters": [
            {"cidr": "10.0.0.0/8", "ge": 8, "le": 24, "action": "Reject"},
            {"cidr": "0.0.0.0/0", "action": "Accept"},
            {"cidr": "0.0.0.0/0", "ge": 0, "le": 32, "action": "Reject"}],
        "exportFilters": [
            {"cidr": "10.96.0.0/12", "action": "Reject"},
            {"cidr": "10.0.0.0/8", "ge": 8, "le": 32, "action": "Accept"},
            {"cidr": "0.0.0.0/0", "ge": 0, "le": 32, "action": "Reject"}]
    })));
    let peer = &s.plan.peers[&ip("192.0.2.1")];
    assert_eq!(peer.session.import_policy, "tabby-bgppeer-tor-import");
    assert_eq!(peer.session.export_policy, "tabby-bgppeer-tor-export");
    let import = &s.policies["tabby-bgppeer-tor-import"];
    let cases = [
        ("10.1.0.0/16", false),    // rule 0
        ("10.1.2.0/25", false),    // longer than rule 0's le: rule 2
        ("0.0.0.0/0", true),       // rule 1
        ("203.0.113.0/24", false), // rule 2
    ];
    for (prefix, want) in cases {
        assert_eq!(accepts(import, prefix), want, "import {prefix}");
    }
    let export = &s.policies["tabby-bgppeer-tor-export"];
    let cases = [
        ("10.96.0.0/12", false), // rejected by the peer's first rule
        ("10.244.0.0/26", true), // accepted by the second, and ours
        // The second rule accepts all of 10/8, but a filter cannot widen the export: b's
        // block and the internal pool's block stay out.
        ("10.244.0.64/26", false),
        ("10.250.0.0/26", false),
        ("192.0.2.128/25", false), // rule 2 rejects it before the default allowed set
        ("fd10::/122", true),      // no rule matches IPv6: our allowed set accepts it
    ];
    for (prefix, want) in cases {
        assert_eq!(accepts(export, prefix), want, "export {prefix}");
    }
}

#[test]
fn accept_filters_outside_the_allowed_set_match_nothing() {
    // An Accept rule with no intersection must not become a match-everything rule.
    let s = setup(tor(json!({
        "exportFilters": [{"cidr": "172.16.0.0/12", "ge": 12, "le": 32, "action": "Accept"}]
    })));
    let export = &s.policies["tabby-bgppeer-tor-export"];
    assert!(!accepts(export, "172.16.0.0/16"));
    assert!(!accepts(export, "10.244.0.64/26"));
    assert!(accepts(export, "10.244.0.0/26"));
}

#[test]
fn origination_problems_are_reported_and_kept_in_the_cluster() {
    let (pools, _) = export::pools(&[
        pool("main", "10.244.0.0/16", false),
        pool("broken", "10.1.2.3/16", false),
    ]);
    assert_eq!(pools.len(), 1, "the pool with host bits is left out");
    let (o, problems) = export::originate(
        "a",
        &[
            block("10.245.0.0/26", "main", "a"), // outside its pool
            block("10.246.0.0/26", "gone", "a"), // pool deleted
            block("10.244.0.1/26", "main", "a"), // host bits
        ],
        &pools,
        &BGPConfigurationSpec::default(),
    );
    assert_eq!(o.prefixes().len(), 2);
    assert!(o.external().is_empty());
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(text[0].contains("outside its pool main"));
    assert!(text[1].contains("pool \"gone\" does not exist"));
    assert!(text[2].contains("not a CIDR without host bits"));
}

#[test]
fn originated_route_attributes_and_communities() {
    let s = setup(tor(json!({})));
    let cfg: BGPConfigurationSpec = serde_json::from_value(json!({
        "communities": [{"name": "cluster", "value": "64512:100"}],
        "prefixAdvertisements": [
            {"cidr": "10.244.0.0/16", "communities": ["cluster", "64512:7:9"]},
            {"cidr": "10.244.0.0/26", "communities": ["65000:1"]},
            {"cidr": "10.96.0.0/12", "communities": ["65000:2"]}
        ]
    }))
    .unwrap();
    let (prefix, attrs) = export::route(net("10.244.0.0/26"), &s.plan.local, &cfg).unwrap();
    assert_eq!(prefix, rib_prefix("10.244.0.0/26"));
    assert_eq!(attrs.next_hop, NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)));
    assert!(attrs.as_path.segments.is_empty());
    assert_eq!(
        attrs.communities,
        [Community::new(64512, 100), Community::new(65000, 1)]
    );
    assert_eq!(
        attrs.large_communities,
        [LargeCommunity {
            global: 64512,
            local1: 7,
            local2: 9
        }]
    );
    let (_, v6) = export::route(net("fd10::/122"), &s.plan.local, &cfg).unwrap();
    assert!(
        matches!(v6.next_hop, NextHop::V6 { global, .. } if global == "fd00::1".parse::<std::net::Ipv6Addr>().unwrap())
    );
    assert!(v6.communities.is_empty());
    // A v4-only node cannot announce an IPv6 block.
    let mut local = s.plan.local.clone();
    local.addresses.retain(|a| a.is_ipv4());
    let e = export::route(net("fd10::/122"), &local, &cfg).unwrap_err();
    assert!(e.reason.contains("no IPv6 address"), "{e}");
}

#[test]
fn policy_and_origination_diffs() {
    let before = setup(tor(json!({})));
    let after = setup(tor(json!({
        "exportFilters": [{"cidr": "10.96.0.0/12", "action": "Reject"}]
    })));
    let ops = export::diff_policies(&before.policies, &after.policies);
    // The new per-peer export policy is set; the shared external export is no longer named.
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(matches!(&ops[0], PolicyOp::Set(p) if p.name == "tabby-bgppeer-tor-export"));
    assert_eq!(ops[1], PolicyOp::Remove("tabby-external-export".into()));
    assert!(export::diff_policies(&after.policies, &after.policies).is_empty());

    let old = before.origination.prefixes();
    let mut new = old.clone();
    new.remove(&net("10.96.0.0/12"));
    new.insert(net("10.244.0.128/26"));
    let d = export::diff_origination(&old, &new);
    assert_eq!(d.originate, [net("10.244.0.128/26")]);
    assert_eq!(d.withdraw, [net("10.96.0.0/12")]);
}
