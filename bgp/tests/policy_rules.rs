//! Policy language: parsing and validation errors, matching and actions, RFC 8212 defaults.

use std::net::Ipv4Addr;

use tabby_bgp::policy::{
    EvalContext, Outcome, Policy, PolicyConfig, RouteView, Verdict, default_verdict,
};
use tabby_bgp::rib::{NextHop, PathAttrs, PeerType, Prefix};
use tabby_bgp::wire::{AsPath, Asn, Community, LargeCommunity};

fn policy(v: serde_json::Value) -> Result<Policy, String> {
    let cfg: PolicyConfig = serde_json::from_value(v).map_err(|e| format!("serde: {e}"))?;
    Policy::from_config(&cfg).map_err(|e| e.to_string())
}

fn attrs(path: &[u32]) -> PathAttrs {
    let mut a = PathAttrs::new(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)));
    a.as_path = AsPath::sequence(path.iter().copied());
    a
}

fn pfx(s: &str) -> Prefix {
    if s.contains(':') {
        Prefix::V6(s.parse().unwrap())
    } else {
        Prefix::V4(s.parse().unwrap())
    }
}

const CX: EvalContext = EvalContext {
    local_asn: Asn(64512),
    self_next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 100))),
};

fn eval(p: &Policy, prefix: &str, a: &PathAttrs, t: PeerType) -> Outcome {
    p.evaluate(
        &RouteView {
            prefix: pfx(prefix),
            attrs: a,
            peer_type: t,
        },
        &CX,
    )
}

fn accepted(o: &Outcome) -> bool {
    matches!(o, Outcome::Accept { .. })
}

#[test]
fn matching_table() {
    use serde_json::json;
    let mut with_comm = attrs(&[65001, 65002]);
    with_comm.communities = vec![Community::new(65000, 7), Community::NO_EXPORT];
    with_comm.large_communities = vec![LargeCommunity {
        global: 65000,
        local1: 1,
        local2: 2,
    }];
    let plain = attrs(&[65001, 65002]);
    // (name, rule match, prefix, attrs, peer type, accepted)
    let cases: Vec<(&str, serde_json::Value, &str, &PathAttrs, PeerType, bool)> = vec![
        (
            "prefix exact: same",
            json!({"prefix": [{"prefix": "10.0.0.0/16"}]}),
            "10.0.0.0/16",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "prefix exact: longer does not match",
            json!({"prefix": [{"prefix": "10.0.0.0/16"}]}),
            "10.0.1.0/24",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "prefix ge/le: inside range",
            json!({"prefix": [{"prefix": "10.0.0.0/8", "ge": 16, "le": 24}]}),
            "10.7.1.0/24",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "prefix ge/le: too long",
            json!({"prefix": [{"prefix": "10.0.0.0/8", "ge": 16, "le": 24}]}),
            "10.7.1.0/25",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "prefix ge/le: too short",
            json!({"prefix": [{"prefix": "10.0.0.0/8", "ge": 16, "le": 24}]}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "prefix ge only: up to the maximum",
            json!({"prefix": [{"prefix": "10.0.0.0/8", "ge": 30}]}),
            "10.1.1.1/32",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "prefix: outside",
            json!({"prefix": [{"prefix": "10.0.0.0/8", "le": 32}]}),
            "11.0.0.0/16",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "prefix set: any of",
            json!({"prefix": [{"prefix": "10.0.0.0/8"}, {"prefix": "2001:db8::/32", "le": 48}]}),
            "2001:db8:5::/48",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "family ipv6",
            json!({"family": "ipv6"}),
            "2001:db8::/32",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "family ipv6 on v4",
            json!({"family": "ipv6"}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "community present (RFC 1997)",
            json!({"community": ["65000:7"]}),
            "10.0.0.0/8",
            &with_comm,
            PeerType::Ebgp,
            true,
        ),
        (
            "community well-known name",
            json!({"community": ["no-export"]}),
            "10.0.0.0/8",
            &with_comm,
            PeerType::Ebgp,
            true,
        ),
        (
            "community absent",
            json!({"community": ["65000:8"]}),
            "10.0.0.0/8",
            &with_comm,
            PeerType::Ebgp,
            false,
        ),
        (
            "large community present (RFC 8092)",
            json!({"large_community": ["65000:1:2"]}),
            "10.0.0.0/8",
            &with_comm,
            PeerType::Ebgp,
            true,
        ),
        (
            "large community absent",
            json!({"large_community": ["65000:1:3"]}),
            "10.0.0.0/8",
            &with_comm,
            PeerType::Ebgp,
            false,
        ),
        (
            "as path contains",
            json!({"as_path": {"contains": 65002}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "as path contains: no",
            json!({"as_path": {"contains": 65003}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "as path origin",
            json!({"as_path": {"origin": 65002}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "as path origin is the last AS",
            json!({"as_path": {"origin": 65001}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "as path neighbour is the first AS",
            json!({"as_path": {"neighbor": 65001}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            true,
        ),
        (
            "peer type",
            json!({"peer_type": ["ibgp", "rr-client"]}),
            "10.0.0.0/8",
            &plain,
            PeerType::RrClient,
            true,
        ),
        (
            "peer type: no",
            json!({"peer_type": ["ibgp"]}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "all conditions must hold",
            json!({"prefix": [{"prefix": "10.0.0.0/8"}], "as_path": {"contains": 1}}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            false,
        ),
        (
            "empty match matches everything",
            json!({}),
            "10.0.0.0/8",
            &plain,
            PeerType::Ebgp,
            true,
        ),
    ];
    for (name, m, prefix, a, t, want) in cases {
        let p = policy(json!({"name": "t", "rules": [{"match": m, "then": "accept"}]})).unwrap();
        assert_eq!(accepted(&eval(&p, prefix, a, t)), want, "{name}");
    }
}

#[test]
fn actions_and_rule_order() {
    use serde_json::json;
    let p = policy(json!({
        "name": "import-upstream",
        "rules": [
            {"name": "bogons", "match": {"prefix": [{"prefix": "10.0.0.0/8", "le": 32}]}, "then": "reject"},
            {"name": "tag", "set": {
                "local_pref": 250, "med": 40, "next_hop": "self",
                "add_community": ["65000:100"], "remove_community": ["65000:7"],
                "add_large_community": ["65000:9:9"], "remove_large_community": ["65000:1:2"],
                "prepend": {"asn": 65999, "count": 2}
            }, "then": "next"},
            {"name": "keep", "match": {"community": ["65000:100"]}, "then": "accept"},
        ],
    }))
    .unwrap();
    let mut a = attrs(&[65001]);
    a.communities = vec![Community::new(65000, 7)];
    a.large_communities = vec![LargeCommunity {
        global: 65000,
        local1: 1,
        local2: 2,
    }];
    assert_eq!(
        eval(&p, "10.1.0.0/16", &a, PeerType::Ebgp),
        Outcome::Reject,
        "first matching rule wins"
    );
    let Outcome::Accept {
        attrs: Some(out),
        keep_next_hop,
    } = eval(&p, "192.0.2.0/24", &a, PeerType::Ebgp)
    else {
        panic!("expected accept with changes");
    };
    assert!(!keep_next_hop);
    assert_eq!(out.local_pref, Some(250));
    assert_eq!(out.med, Some(40));
    assert_eq!(out.next_hop, NextHop::V4(Ipv4Addr::new(192, 0, 2, 100)));
    assert_eq!(out.communities, vec![Community::new(65000, 100)]);
    assert_eq!(
        out.large_communities,
        vec![LargeCommunity {
            global: 65000,
            local1: 9,
            local2: 9
        }]
    );
    assert_eq!(out.as_path, AsPath::sequence([65999, 65999, 65001]));

    // Next hop to an address, and "keep".
    let p = policy(
        json!({"name": "nh", "rules": [{"set": {"next_hop": "2001:db8::9"}, "then": "accept"}]}),
    )
    .unwrap();
    let Outcome::Accept {
        attrs: Some(out), ..
    } = eval(&p, "2001:db8::/32", &a, PeerType::Ibgp)
    else {
        panic!()
    };
    assert_eq!(
        out.next_hop.addr(),
        "2001:db8::9".parse::<std::net::IpAddr>().unwrap()
    );
    let p =
        policy(json!({"name": "nh", "rules": [{"set": {"next_hop": "keep"}, "then": "accept"}]}))
            .unwrap();
    assert!(matches!(
        eval(&p, "10.0.0.0/8", &a, PeerType::Ibgp),
        Outcome::Accept {
            keep_next_hop: true,
            ..
        }
    ));

    // Default verdicts.
    let p = policy(json!({"name": "d"})).unwrap();
    assert_eq!(
        eval(&p, "10.0.0.0/8", &a, PeerType::Ibgp),
        Outcome::Reject,
        "default is reject"
    );
    let p = policy(json!({"name": "d", "default": "accept"})).unwrap();
    assert_eq!(
        eval(&p, "10.0.0.0/8", &a, PeerType::Ibgp),
        Outcome::Accept {
            attrs: None,
            keep_next_hop: false
        }
    );
    assert!(!p.is_prefix_dependent());
}

#[test]
fn rfc8212_defaults() {
    // RFC 8212 §2: eBGP without policy exchanges nothing; iBGP and local routes flow.
    assert_eq!(default_verdict(PeerType::Ebgp), Verdict::Reject);
    assert_eq!(default_verdict(PeerType::Ibgp), Verdict::Accept);
    assert_eq!(default_verdict(PeerType::RrClient), Verdict::Accept);
    assert_eq!(default_verdict(PeerType::Local), Verdict::Accept);
}

#[test]
fn validation_errors_name_the_place() {
    use serde_json::json;
    let cases = vec![
        (json!({"name": ""}), "name: must not be empty"),
        (json!({"name": "p", "default": "next"}), "default: must be"),
        (
            json!({"name": "p", "rules": [{"match": {"prefix": [{"prefix": "10.0.0.1/8"}]}, "then": "accept"}]}),
            "rule 1 match.prefix[0]",
        ),
        (
            json!({"name": "p", "rules": [{"match": {"prefix": [{"prefix": "10.0.0.0/8", "ge": 4}]}, "then": "accept"}]}),
            "ge (4)",
        ),
        (
            json!({"name": "p", "rules": [{"match": {"prefix": [{"prefix": "10.0.0.0/8", "ge": 24, "le": 16}]}, "then": "accept"}]}),
            "le (16)",
        ),
        (
            json!({"name": "p", "rules": [{"match": {"prefix": [{"prefix": "10.0.0.0/8", "le": 33}]}, "then": "accept"}]}),
            "<= 32",
        ),
        (
            json!({"name": "p", "rules": [{"then": "accept"}, {"name": "c", "match": {"community": ["65536:1"]}, "then": "accept"}]}),
            "rule 2 (\"c\") match.community[0]",
        ),
        (
            json!({"name": "p", "rules": [{"match": {"large_community": ["1:2"]}, "then": "accept"}]}),
            "match.large-community[0]",
        ),
        (
            json!({"name": "p", "rules": [{"set": {"next_hop": "router"}, "then": "accept"}]}),
            "set.next_hop",
        ),
        (
            json!({"name": "p", "rules": [{"set": {"prepend": {"count": 0}}, "then": "accept"}]}),
            "set.prepend.count",
        ),
        (
            json!({"name": "p", "rules": [{"set": {"add_community": ["x"]}, "then": "accept"}]}),
            "set.add_community[0]",
        ),
    ];
    for (v, want) in cases {
        let err = policy(v.clone()).expect_err(&v.to_string());
        assert!(
            err.contains(want),
            "{v}: error {err:?} should mention {want:?}"
        );
        assert!(err.starts_with("policy \""), "{err}");
    }
    // Unknown fields are refused by serde (typos must not silently mean "no condition").
    let err =
        policy(json!({"name": "p", "rules": [{"match": {"prefixes": []}, "then": "accept"}]}))
            .unwrap_err();
    assert!(err.contains("prefixes"), "{err}");
}

#[test]
fn policy_names_are_unique() {
    use serde_json::json;
    let cfgs: Vec<PolicyConfig> = serde_json::from_value(json!([
        {"name": "a", "default": "accept"},
        {"name": "b"},
        {"name": "a"},
    ]))
    .unwrap();
    let err = tabby_bgp::policy::compile_all(&cfgs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("policies[2].name"), "{err}");
    let ok = tabby_bgp::policy::compile_all(&cfgs[..2]).unwrap();
    assert_eq!(ok.keys().collect::<Vec<_>>(), ["a", "b"]);
}
