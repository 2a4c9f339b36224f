//! Evaluates every CRD's `x-kubernetes-validations` rules with kube's client-side CEL engine
//! (`kube::core::cel`, the `kube/cel` feature) against valid and invalid example objects, so a
//! typo or a wrong rule fails here rather than in a cluster.

use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema};
use std::collections::BTreeSet;

use serde_json::{Value, json};
use tabby_api::v1alpha1::{BGPConfiguration, BGPPeer, IPAMBlock, IPPool, NodeNetworkStatus};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let version = crd.spec.versions.first().expect("one version");
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema to JSON")
}

/// Validates `object` (and `old` for updates); returns `(message, rule)` of each failure.
fn check<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    match Validator::new().validate(&schema::<K>(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| (e.to_string(), format!("{} / {}", e.rule, e.message)))
            .collect(),
    }
}

fn obj(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Runs a table of `(case, object, old, expected message fragment or "" for valid)`.
/// Returns the rules that rejected at least one case.
fn run_table<K: CustomResourceExt>(
    cases: &[(&str, Value, Option<Value>, &str)],
) -> BTreeSet<String> {
    let mut fired = BTreeSet::new();
    for (case, object, old, want) in cases {
        let errors = check::<K>(object, old.as_ref());
        if want.is_empty() {
            assert!(errors.is_empty(), "{case}: expected valid, got {errors:?}");
        } else {
            assert!(
                errors.iter().any(|(m, _)| m.contains(want)),
                "{case}: expected an error containing {want:?}, got {errors:?}"
            );
        }
        fired.extend(errors.into_iter().map(|(_, rule)| rule));
    }
    fired
}

#[test]
fn every_rule_compiles() {
    for (kind, schema) in [
        ("IPPool", schema::<IPPool>()),
        ("IPAMBlock", schema::<IPAMBlock>()),
        ("BGPConfiguration", schema::<BGPConfiguration>()),
        ("BGPPeer", schema::<BGPPeer>()),
        ("NodeNetworkStatus", schema::<NodeNetworkStatus>()),
    ] {
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{kind}: CEL rules do not compile: {:?}",
            compiled.compilation_errors()
        );
        assert!(
            schema.to_string().contains("x-kubernetes-validations"),
            "{kind}: no CEL rules at all"
        );
    }
}

/// Functions and macros the Kubernetes API server's CEL environment provides (the CEL
/// standard library plus the Kubernetes list, regex, URL, IP/CIDR and quantity libraries) that
/// our rules may use. kube's client-side engine also knows convenience functions the API server
/// does not (e.g. `isCIDRv4`); a rule using one would pass these tests and be rejected by a
/// real cluster, so every call in every rule must be on this list.
const KUBERNETES_CEL_FUNCTIONS: &[&str] = &[
    "has",
    "size",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "string",
    "int",
    "uint",
    "isIP",
    "ip",
    "family",
    "isCIDR",
    "cidr",
    "prefixLength",
    "masked",
    "containsIP",
    "containsCIDR",
    "isLoopback",
    "lowerAscii",
];

/// Every identifier directly followed by `(` in `rule`.
fn called_functions(rule: &str) -> Vec<String> {
    let bytes = rule.as_bytes();
    let mut out = Vec::new();
    let mut start = None;
    let mut in_string = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\'' {
            in_string = !in_string;
            start = None;
            continue;
        }
        if in_string {
            continue;
        }
        if b.is_ascii_alphanumeric() || b == b'_' {
            start.get_or_insert(i);
        } else {
            if b == b'('
                && let Some(s) = start
            {
                out.push(rule[s..i].to_string());
            }
            start = None;
        }
    }
    out
}

fn rules_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "x-kubernetes-validations" {
                    for r in v.as_array().into_iter().flatten() {
                        if let Some(rule) = r.get("rule").and_then(Value::as_str) {
                            let message =
                                r.get("message").and_then(Value::as_str).unwrap_or_default();
                            out.push(format!("{rule} / {message}"));
                        }
                    }
                } else {
                    rules_in(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| rules_in(v, out)),
        _ => {}
    }
}

#[test]
fn rules_use_only_functions_the_api_server_has() {
    assert_eq!(
        called_functions("isCIDR(self) && cidr(self).ip().family() == 4"),
        ["isCIDR", "cidr", "ip", "family"]
    );
    assert_eq!(called_functions("self == 'f(x)'"), Vec::<String>::new());
    let mut rules = Vec::new();
    for schema in [
        schema::<IPPool>(),
        schema::<IPAMBlock>(),
        schema::<BGPConfiguration>(),
        schema::<BGPPeer>(),
        schema::<NodeNetworkStatus>(),
    ] {
        rules_in(&schema, &mut rules);
    }
    assert!(rules.len() > 20, "found only {} rules", rules.len());
    for rule in &rules {
        let rule = rule.split(" / ").next().unwrap_or_default();
        for f in called_functions(rule) {
            assert!(
                KUBERNETES_CEL_FUNCTIONS.contains(&f.as_str()),
                "rule {rule:?} calls {f}(), which a Kubernetes API server does not provide"
            );
        }
    }
}

#[test]
fn ippool_rules() {
    ippool_rules_table();
}

fn ippool_rules_table() -> BTreeSet<String> {
    let pool = |spec: Value| obj("IPPool", "p", spec);
    run_table::<IPPool>(&[
        (
            "v4 default block",
            pool(json!({"cidr": "10.244.0.0/16"})),
            None,
            "",
        ),
        (
            "v6 default block",
            pool(json!({"cidr": "fd00:10::/48"})),
            None,
            "",
        ),
        (
            "v4 /20 blocks",
            pool(json!({"cidr": "10.244.0.0/16", "blockSize": 20})),
            None,
            "",
        ),
        (
            "v6 /128 blocks",
            pool(json!({"cidr": "fd00::/64", "blockSize": 128})),
            None,
            "",
        ),
        (
            "not a cidr",
            pool(json!({"cidr": "10.244.0.0"})),
            None,
            "canonical form",
        ),
        (
            "host bits set",
            pool(json!({"cidr": "10.244.0.1/16"})),
            None,
            "no host bits",
        ),
        (
            "v4 block too small",
            pool(json!({"cidr": "10.0.0.0/8", "blockSize": 19})),
            None,
            "20-32",
        ),
        (
            "v6 size on v4",
            pool(json!({"cidr": "10.0.0.0/8", "blockSize": 122})),
            None,
            "20-32",
        ),
        (
            "v4 size on v6",
            pool(json!({"cidr": "fd00::/48", "blockSize": 26})),
            None,
            "116-128",
        ),
        (
            "block larger than pool",
            pool(json!({"cidr": "10.244.0.0/28", "blockSize": 26})),
            None,
            "shorter than the cidr",
        ),
        (
            "cidr immutable",
            pool(json!({"cidr": "10.245.0.0/16"})),
            Some(pool(json!({"cidr": "10.244.0.0/16"}))),
            "cidr is immutable",
        ),
        (
            "blockSize immutable",
            pool(json!({"cidr": "10.244.0.0/16", "blockSize": 27})),
            Some(pool(json!({"cidr": "10.244.0.0/16", "blockSize": 26}))),
            "blockSize is immutable",
        ),
        (
            "blockSize cannot be set later",
            pool(json!({"cidr": "10.244.0.0/16", "blockSize": 26})),
            Some(pool(json!({"cidr": "10.244.0.0/16"}))),
            "blockSize is immutable",
        ),
        (
            "disabled may change",
            pool(json!({"cidr": "10.244.0.0/16", "disabled": true})),
            Some(pool(json!({"cidr": "10.244.0.0/16"}))),
            "",
        ),
    ])
}

#[test]
fn ipamblock_rules() {
    ipamblock_rules_table();
}

fn ipamblock_rules_table() -> BTreeSet<String> {
    let block = |name: &str, cidr: &str, node: &str, status: Option<Value>| {
        let mut o = obj(
            "IPAMBlock",
            name,
            json!({"cidr": cidr, "pool": "default-v4", "node": node}),
        );
        if let Some(s) = status {
            o["status"] = s;
        }
        o
    };
    let alloc =
        json!({"allocations": [{"ordinal": 0, "handle": "c1", "time": "2026-01-01T00:00:00Z"}]});
    run_table::<IPAMBlock>(&[
        (
            "v4 block",
            block("10-244-0-64-26", "10.244.0.64/26", "n1", None),
            None,
            "",
        ),
        (
            "v6 block",
            block("fd00-0-0-0-0-0-0-40-122", "fd00::40/122", "n1", None),
            None,
            "",
        ),
        (
            "host bits",
            block("x", "10.244.0.65/26", "n1", None),
            None,
            "canonical form",
        ),
        (
            "too big",
            block("x", "10.244.0.0/16", "n1", None),
            None,
            "/20-/32",
        ),
        (
            "v6 too big",
            block("x", "fd00::/64", "n1", None),
            None,
            "/116-/128",
        ),
        (
            "cidr immutable",
            block("b", "10.244.0.128/26", "n1", None),
            Some(block("b", "10.244.0.64/26", "n1", None)),
            "cidr is immutable",
        ),
        (
            "pool immutable",
            block("b", "10.244.0.64/26", "n1", None),
            Some({
                let mut old = block("b", "10.244.0.64/26", "n1", None);
                old["spec"]["pool"] = json!("other-pool");
                old
            }),
            "pool is immutable",
        ),
        (
            "empty block may move",
            block("b", "10.244.0.64/26", "n2", Some(json!({}))),
            Some(block("b", "10.244.0.64/26", "n1", Some(json!({})))),
            "",
        ),
        (
            "block in use may not move",
            block("b", "10.244.0.64/26", "n2", Some(alloc.clone())),
            Some(block("b", "10.244.0.64/26", "n1", Some(alloc.clone()))),
            "only change while the block has no allocations",
        ),
        (
            "status update keeps node",
            block("b", "10.244.0.64/26", "n1", Some(alloc.clone())),
            Some(block("b", "10.244.0.64/26", "n1", None)),
            "",
        ),
    ])
}

#[test]
fn bgpconfiguration_rules() {
    bgpconfiguration_rules_table();
}

fn bgpconfiguration_rules_table() -> BTreeSet<String> {
    let cfg = |name: &str, spec: Value| obj("BGPConfiguration", name, spec);
    run_table::<BGPConfiguration>(&[
        ("defaults", cfg("default", json!({})), None, ""),
        (
            "full",
            cfg(
                "default",
                json!({"asNumber": 65000, "holdTime": 9, "keepaliveTime": 3}),
            ),
            None,
            "",
        ),
        (
            "hold 0 keepalive 0",
            cfg("default", json!({"holdTime": 0, "keepaliveTime": 0})),
            None,
            "",
        ),
        (
            "wrong name",
            cfg("other", json!({})),
            None,
            "must be named 'default'",
        ),
        (
            "AS 0",
            cfg("default", json!({"asNumber": 0})),
            None,
            "reserved",
        ),
        (
            "AS_TRANS",
            cfg("default", json!({"asNumber": 23456})),
            None,
            "reserved",
        ),
        (
            "hold 2",
            cfg("default", json!({"holdTime": 2, "keepaliveTime": 1})),
            None,
            "at least 3",
        ),
        (
            "keepalive >= hold",
            cfg("default", json!({"holdTime": 9, "keepaliveTime": 9})),
            None,
            "less than holdTime",
        ),
        (
            "keepalive with hold 0",
            cfg("default", json!({"holdTime": 0, "keepaliveTime": 30})),
            None,
            "0 when holdTime is 0",
        ),
        (
            "service cidr",
            cfg(
                "default",
                json!({"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}),
            ),
            None,
            "",
        ),
        (
            "bad service cidr",
            cfg(
                "default",
                json!({"serviceClusterIPs": [{"cidr": "10.96.0.0"}]}),
            ),
            None,
            "must be a CIDR such as",
        ),
        (
            "bad prefix advertisement",
            cfg(
                "default",
                json!({"prefixAdvertisements": [{"cidr": "10.0.0.0/33", "communities": []}]}),
            ),
            None,
            "must be a CIDR",
        ),
    ])
}

#[test]
fn bgppeer_rules() {
    bgppeer_rules_table();
}

fn bgppeer_rules_table() -> BTreeSet<String> {
    let peer = |spec: Value| obj("BGPPeer", "p", spec);
    run_table::<BGPPeer>(&[
        (
            "ToR peer",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}})),
            None,
            "",
        ),
        (
            "RR peers",
            peer(json!({"peerSelector": {"matchLabels": {"rr": "true"}}, "node": "n1"})),
            None,
            "",
        ),
        (
            "v6 peer",
            peer(json!({"peerIP": "2001:db8::1", "asNumber": 65001, "node": "n1"})),
            None,
            "",
        ),
        (
            "both peerIP and peerSelector",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "peerSelector": {}, "node": "n1"})),
            None,
            "exactly one of peerIP and peerSelector",
        ),
        (
            "neither peer",
            peer(json!({"node": "n1"})),
            None,
            "exactly one of peerIP and peerSelector",
        ),
        (
            "both node and nodeSelector",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "nodeSelector": {}})),
            None,
            "exactly one of node and nodeSelector",
        ),
        (
            "neither node",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1})),
            None,
            "exactly one of node and nodeSelector",
        ),
        (
            "peerIP without AS",
            peer(json!({"peerIP": "192.0.2.1", "node": "n1"})),
            None,
            "asNumber is required",
        ),
        (
            "bad peerIP",
            peer(json!({"peerIP": "192.0.2.300", "asNumber": 1, "node": "n1"})),
            None,
            "IPv4 or IPv6",
        ),
        (
            "AS_TRANS peer",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 23456, "node": "n1"})),
            None,
            "reserved",
        ),
        (
            "timers ok",
            peer(
                json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "timers": {"holdTime": 9, "keepaliveTime": 3}}),
            ),
            None,
            "",
        ),
        (
            "timers keepalive >= hold",
            peer(
                json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "timers": {"holdTime": 9, "keepaliveTime": 10}}),
            ),
            None,
            "keepaliveTime must be less than holdTime",
        ),
        (
            "timers hold 1",
            peer(
                json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "timers": {"holdTime": 1}}),
            ),
            None,
            "at least 3",
        ),
        (
            "filter ok",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                "importFilters": [{"cidr": "10.0.0.0/8", "ge": 16, "le": 24, "action": "Accept"}]})),
            None,
            "",
        ),
        (
            "filter ge below cidr length",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                "importFilters": [{"cidr": "10.0.0.0/8", "ge": 4, "action": "Accept"}]})),
            None,
            "ge must be at least",
        ),
        (
            "filter le below ge",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                "exportFilters": [{"cidr": "10.0.0.0/8", "ge": 24, "le": 16, "action": "Reject"}]})),
            None,
            "le must be at least",
        ),
        (
            "filter le above 32 on v4",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                "exportFilters": [{"cidr": "10.0.0.0/8", "le": 33, "action": "Reject"}]})),
            None,
            "at most 32",
        ),
        (
            "filter host bits",
            peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                "exportFilters": [{"cidr": "10.0.0.1/8", "action": "Reject"}]})),
            None,
            "no host bits",
        ),
    ])
}

#[test]
fn nodenetworkstatus_rules() {
    nodenetworkstatus_rules_table();
}

fn nodenetworkstatus_rules_table() -> BTreeSet<String> {
    let nns = |name: &str, node: &str, status: Option<Value>| {
        let mut o = obj("NodeNetworkStatus", name, json!({"node": node}));
        if let Some(s) = status {
            o["status"] = s;
        }
        o
    };
    run_table::<NodeNetworkStatus>(&[
        ("named after node", nns("n1", "n1", None), None, ""),
        (
            "name mismatch",
            nns("n1", "n2", None),
            None,
            "named after its node",
        ),
        (
            "node immutable",
            nns("n1", "n2", None),
            Some(nns("n1", "n1", None)),
            "node is immutable",
        ),
        (
            "counts",
            nns(
                "n1",
                "n1",
                Some(json!({"sessionsEstablished": 2, "sessionsTotal": 3})),
            ),
            None,
            "",
        ),
        (
            "more established than total",
            nns(
                "n1",
                "n1",
                Some(json!({"sessionsEstablished": 4, "sessionsTotal": 3})),
            ),
            None,
            "cannot exceed",
        ),
    ])
}

/// Every rule in every CRD rejects at least one example above, so none is dead or mistyped
/// into always-true.
#[test]
fn every_rule_rejects_some_example() {
    let mut fired = BTreeSet::new();
    fired.extend(ippool_rules_table());
    fired.extend(ipamblock_rules_table());
    fired.extend(bgpconfiguration_rules_table());
    fired.extend(bgppeer_rules_table());
    fired.extend(nodenetworkstatus_rules_table());
    let mut all = Vec::new();
    for schema in [
        schema::<IPPool>(),
        schema::<IPAMBlock>(),
        schema::<BGPConfiguration>(),
        schema::<BGPPeer>(),
        schema::<NodeNetworkStatus>(),
    ] {
        rules_in(&schema, &mut all);
    }
    let never: Vec<&String> = all.iter().filter(|r| !fired.contains(*r)).collect();
    assert!(never.is_empty(), "rules no example rejects: {never:#?}");
}
