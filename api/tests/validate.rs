//! Rust-side validation of objects read from the API: every bad field is reported with its
//! JSON path, and valid objects pass. Inputs are JSON as the API server would send them.

use serde_json::{Value, json};
use tabby_api::FieldError;
use tabby_api::v1alpha1::{BGPConfiguration, BGPPeer, IPAMBlock, IPPool, NodeNetworkStatus};

fn obj(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tabby.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// `(case, object, expected error paths)`: an empty list means valid.
fn table<K, F>(cases: Vec<(&str, Value, Vec<&str>)>, validate: F)
where
    K: serde::de::DeserializeOwned,
    F: Fn(&K) -> Result<(), Vec<FieldError>>,
{
    for (case, value, want) in cases {
        let object: K = serde_json::from_value(value).unwrap_or_else(|e| panic!("{case}: {e}"));
        let got: Vec<String> = match validate(&object) {
            Ok(()) => Vec::new(),
            Err(errors) => {
                for e in &errors {
                    assert!(!e.message.is_empty(), "{case}: empty message at {}", e.path);
                }
                errors.into_iter().map(|e| e.path).collect()
            }
        };
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn ippool() {
    let p = |spec: Value| obj("IPPool", "pool", spec);
    table::<IPPool, _>(
        vec![
            ("v4", p(json!({"cidr": "10.244.0.0/16"})), vec![]),
            (
                "v6 /128 blocks",
                p(json!({"cidr": "fd00::/120", "blockSize": 128})),
                vec![],
            ),
            ("garbage cidr", p(json!({"cidr": "ten"})), vec!["spec.cidr"]),
            (
                "host bits",
                p(json!({"cidr": "10.244.0.1/16"})),
                vec!["spec.cidr"],
            ),
            (
                "block range v4",
                p(json!({"cidr": "10.0.0.0/8", "blockSize": 33})),
                vec!["spec.blockSize"],
            ),
            (
                "block range v6",
                p(json!({"cidr": "fd00::/48", "blockSize": 64})),
                vec!["spec.blockSize"],
            ),
            (
                "block bigger than pool",
                p(json!({"cidr": "10.0.0.0/28", "blockSize": 26})),
                vec!["spec.blockSize"],
            ),
            (
                "bad selector",
                p(
                    json!({"cidr": "10.0.0.0/16", "nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                ),
                vec!["spec.nodeSelector.matchExpressions[0].operator"],
            ),
            (
                "bad name",
                obj("IPPool", "Bad_Name", json!({"cidr": "10.0.0.0/16"})),
                vec!["metadata.name"],
            ),
        ],
        IPPool::validate,
    );
    let pool: IPPool = serde_json::from_value(p(json!({"cidr": "fd00::/48"}))).unwrap();
    assert_eq!(pool.spec.effective_block_size(), Some(122));
    let pool: IPPool = serde_json::from_value(p(json!({"cidr": "10.0.0.0/8"}))).unwrap();
    assert_eq!(pool.spec.effective_block_size(), Some(26));
}

#[test]
fn ipamblock() {
    let b = |name: &str, cidr: &str, status: Value| {
        let mut o = obj(
            "IPAMBlock",
            name,
            json!({"cidr": cidr, "pool": "p", "node": "n1"}),
        );
        o["status"] = status;
        o
    };
    let a = |ordinal: u32, handle: &str| json!({"ordinal": ordinal, "handle": handle, "time": "2026-01-01T00:00:00Z"});
    let r = |ordinal: u32| json!({"ordinal": ordinal, "time": "2026-01-01T00:00:00Z"});
    table::<IPAMBlock, _>(
        vec![
            (
                "ok",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [a(0, "x"), a(63, "y")], "released": [r(5)]}),
                ),
                vec![],
            ),
            (
                "ok v6",
                b("fd00-0-0-0-0-0-0-40-122", "fd00::40/122", json!({})),
                vec![],
            ),
            (
                "name mismatch",
                b("10-0-0-0-26", "10.0.0.64/26", json!({})),
                vec!["metadata.name"],
            ),
            (
                "too large",
                b("10-0-0-0-16", "10.0.0.0/16", json!({})),
                vec!["spec.cidr"],
            ),
            (
                "ordinal outside",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [a(64, "x")]}),
                ),
                vec!["status.allocations[0].ordinal"],
            ),
            (
                "ordinal twice",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [a(1, "x"), a(1, "y")]}),
                ),
                vec!["status.allocations[1].ordinal"],
            ),
            (
                "handle twice",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [a(1, "x"), a(2, "x")]}),
                ),
                vec!["status.allocations[1].handle"],
            ),
            (
                "allocated and cooling",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [a(1, "x")], "released": [r(1)]}),
                ),
                vec!["status.released[0].ordinal"],
            ),
            (
                "incomplete pod",
                b(
                    "10-0-0-64-26",
                    "10.0.0.64/26",
                    json!({"allocations": [{"ordinal": 0, "handle": "x", "time": "2026-01-01T00:00:00Z", "pod": {"namespace": "", "name": "p", "uid": "u"}}]}),
                ),
                vec!["status.allocations[0].pod"],
            ),
        ],
        IPAMBlock::validate,
    );
}

#[test]
fn bgpconfiguration() {
    let c = |name: &str, spec: Value| obj("BGPConfiguration", name, spec);
    table::<BGPConfiguration, _>(
        vec![
            ("defaults", c("default", json!({})), vec![]),
            ("wrong name", c("cluster", json!({})), vec!["metadata.name"]),
            (
                "AS_TRANS",
                c("default", json!({"asNumber": 23456})),
                vec!["spec.asNumber"],
            ),
            (
                "port 0",
                c("default", json!({"listenPort": 0})),
                vec!["spec.listenPort"],
            ),
            (
                "hold 1",
                c("default", json!({"holdTime": 1, "keepaliveTime": 0})),
                vec!["spec.holdTime"],
            ),
            (
                "keepalive >= hold",
                c("default", json!({"holdTime": 9, "keepaliveTime": 9})),
                vec!["spec.keepaliveTime"],
            ),
            (
                "GR too long",
                c("default", json!({"gracefulRestartTime": 5000})),
                vec!["spec.gracefulRestartTime"],
            ),
            (
                "bad service cidr",
                c(
                    "default",
                    json!({"serviceLoadBalancerIPs": [{"cidr": "x"}]}),
                ),
                vec!["spec.serviceLoadBalancerIPs[0].cidr"],
            ),
            (
                "communities",
                c(
                    "default",
                    json!({
                        "communities": [{"name": "a", "value": "65000:1"}, {"name": "a", "value": "65000:70000"}],
                        "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["a", "1:2:3", "nope"]}]
                    }),
                ),
                vec![
                    "spec.communities[1].name",
                    "spec.communities[1].value",
                    "spec.prefixAdvertisements[0].communities[2]",
                ],
            ),
        ],
        BGPConfiguration::validate,
    );
}

#[test]
fn bgppeer() {
    let p = |spec: Value| obj("BGPPeer", "peer", spec);
    table::<BGPPeer, _>(
        vec![
            (
                "ToR",
                p(json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {}})),
                vec![],
            ),
            (
                "everything",
                p(json!({
                    "peerIP": "2001:db8::1", "asNumber": 65001, "node": "n1",
                    "password": {"name": "bgp", "key": "pw"}, "sourceAddress": "None", "ttlSecurity": 1,
                    "maxPrefixes": 1000, "nextHopMode": "Self", "routeReflectorClient": true,
                    "timers": {"holdTime": 9, "keepaliveTime": 3, "connectRetryTime": 5},
                    "importFilters": [{"cidr": "10.0.0.0/8", "le": 26, "action": "Accept"}],
                    "exportFilters": [{"cidr": "0.0.0.0/0", "ge": 0, "le": 32, "action": "Reject"}]
                })),
                vec![],
            ),
            ("neither peer", p(json!({"node": "n1"})), vec!["spec"]),
            (
                "both nodes",
                p(json!({"peerSelector": {}, "node": "n1", "nodeSelector": {}})),
                vec!["spec"],
            ),
            (
                "no AS",
                p(json!({"peerIP": "192.0.2.1", "node": "n1"})),
                vec!["spec.asNumber"],
            ),
            (
                "bad IP",
                p(json!({"peerIP": "192.0.2", "asNumber": 1, "node": "n1"})),
                vec!["spec.peerIP"],
            ),
            (
                "ttl 0",
                p(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "ttlSecurity": 0})),
                vec!["spec.ttlSecurity"],
            ),
            (
                "timers",
                p(
                    json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1", "timers": {"holdTime": 2, "keepaliveTime": 5}}),
                ),
                vec!["spec.timers.holdTime", "spec.timers.keepaliveTime"],
            ),
            (
                "filters",
                p(json!({"peerIP": "192.0.2.1", "asNumber": 1, "node": "n1",
                    "importFilters": [{"cidr": "10.0.0.0/8", "ge": 4, "action": "Accept"}],
                    "exportFilters": [{"cidr": "10.0.0.0/8", "ge": 24, "le": 16, "action": "Accept"}, {"cidr": "10.0.0.1/8", "action": "Reject"}]})),
                vec![
                    "spec.importFilters[0].ge",
                    "spec.exportFilters[0].le",
                    "spec.exportFilters[1].cidr",
                ],
            ),
        ],
        BGPPeer::validate,
    );
}

#[test]
fn prefix_filters_first_match_wins() {
    use tabby_api::v1alpha1::bgppeer::{FilterAction, PrefixFilterRule, filter};
    let rule = |cidr: &str, ge: Option<u8>, le: Option<u8>, action| {
        PrefixFilterRule {
            cidr: cidr.into(),
            ge,
            le,
            action,
        }
        .parse("r")
        .unwrap()
    };
    let rules = [
        rule("10.0.0.0/8", Some(25), Some(32), FilterAction::Reject),
        rule("10.0.0.0/8", None, Some(24), FilterAction::Accept),
        rule("0.0.0.0/0", None, None, FilterAction::Reject),
    ];
    let net = |s: &str| s.parse().unwrap();
    // (route, expected)
    for (route, want) in [
        ("10.1.0.0/16", FilterAction::Accept),
        ("10.1.2.0/24", FilterAction::Accept),
        ("10.1.2.0/26", FilterAction::Reject),
        ("0.0.0.0/0", FilterAction::Reject),
        ("192.168.0.0/16", FilterAction::Accept),
        ("fd00::/64", FilterAction::Accept),
    ] {
        assert_eq!(filter(&rules, &net(route)), want, "{route}");
    }
}

#[test]
fn nodenetworkstatus() {
    let n = |name: &str, node: &str, status: Value| {
        let mut o = obj("NodeNetworkStatus", name, json!({"node": node}));
        o["status"] = status;
        o
    };
    let s = |ip: &str| json!({"peerIP": ip, "peerAS": 64512, "peerType": "NodeMesh", "state": "Established"});
    table::<NodeNetworkStatus, _>(
        vec![
            (
                "ok",
                n(
                    "n1",
                    "n1",
                    json!({"sessions": [s("10.0.0.2"), s("fd00::2")], "sessionsEstablished": 2, "sessionsTotal": 2}),
                ),
                vec![],
            ),
            ("mismatch", n("n1", "n2", json!({})), vec!["spec.node"]),
            (
                "counts",
                n(
                    "n1",
                    "n1",
                    json!({"sessionsEstablished": 3, "sessionsTotal": 2}),
                ),
                vec!["status.sessionsEstablished"],
            ),
            (
                "dup peer",
                n(
                    "n1",
                    "n1",
                    json!({"sessions": [s("10.0.0.2"), s("10.0.0.2")]}),
                ),
                vec!["status.sessions[1].peerIP"],
            ),
            (
                "bad peer",
                n("n1", "n1", json!({"sessions": [s("x")]})),
                vec!["status.sessions[0].peerIP"],
            ),
        ],
        NodeNetworkStatus::validate,
    );
}

/// The defaults the API server applies (from the schema) are the ones Rust applies (serde).
#[test]
fn schema_defaults_match_serde_defaults() {
    use kube::CustomResourceExt;
    use tabby_api::v1alpha1::BGPConfigurationSpec;
    let crd = serde_json::to_value(BGPConfiguration::crd()).unwrap();
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let rust = serde_json::to_value(BGPConfigurationSpec::default()).unwrap();
    let from_empty: BGPConfiguration =
        serde_json::from_value(obj("BGPConfiguration", "default", json!({}))).unwrap();
    assert_eq!(from_empty.spec, BGPConfigurationSpec::default());
    let mut checked = 0;
    for (field, schema) in props.as_object().unwrap() {
        if let Some(default) = schema.get("default") {
            assert_eq!(Some(default), rust.get(field), "default of spec.{field}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} defaults in the schema");
}
