//! Tabby's CRDs as shipped (`charts/tabby/crds/*.yaml`) applied to the emulator: one invalid
//! object per schema constraint and CEL rule (ranges, enums, lengths, patterns, required
//! fields, immutable fields on update, cross-field rules, status rules) is refused with 422 and
//! a message naming the field; valid objects are accepted. What the real API server would do
//! with the same chart.

mod common;

use std::path::PathBuf;

use serde_json::{Value, json};

use common::raw;

const JSON: &str = "application/json";
const GROUP: &str = "/apis/tabby.dev/v1alpha1";

fn crd_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/tabby/crds");
    dir.is_dir().then_some(dir)
}

async fn apply_crds(client: &kube::Client, dir: &PathBuf) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the CRD directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "five Tabby CRDs: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read CRD");
        let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
        let (code, body) = raw(
            client,
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            JSON,
            Some(&crd),
        )
        .await;
        assert_eq!(code, 201, "{}: {body}", f.display());
    }
    // Served once the CRDs are established.
    for plural in [
        "ippools",
        "ipamblocks",
        "bgpconfigurations",
        "bgppeers",
        "nodenetworkstatuses",
    ] {
        let ok = common::eventually(std::time::Duration::from_secs(10), || async {
            raw(client, "GET", &format!("{GROUP}/{plural}"), JSON, None)
                .await
                .0
                == 200
        })
        .await;
        assert!(ok, "{plural} served");
    }
}

fn obj(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tabby.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// How a case sends its invalid object.
enum Via {
    /// POST the object.
    Create,
    /// POST `base`, then PUT the object over it (update rules, immutability).
    Update(Value),
    /// POST `base`, then PUT the object to `/status`.
    Status(Value),
}

struct Case {
    what: &'static str,
    plural: &'static str,
    via: Via,
    object: Value,
    /// Field path the message must name.
    field: &'static str,
    /// Words the message must contain.
    words: &'static str,
}

fn pool(name: &str, spec: Value) -> Value {
    obj("IPPool", name, spec)
}
fn block(name: &str, spec: Value) -> Value {
    obj("IPAMBlock", name, spec)
}
fn bgpconf(name: &str, spec: Value) -> Value {
    obj("BGPConfiguration", name, spec)
}
fn peer(name: &str, spec: Value) -> Value {
    obj("BGPPeer", name, spec)
}
fn nns(name: &str, spec: Value) -> Value {
    obj("NodeNetworkStatus", name, spec)
}

fn with_status(mut o: Value, status: Value) -> Value {
    o["status"] = status;
    o
}

fn cases() -> Vec<Case> {
    let alloc = |ordinal: u64| {
        json!({"ordinal": ordinal, "handle": "c1", "time": "2026-01-01T00:00:00Z",
               "pod": {"namespace": "default", "name": "p", "uid": "u"}})
    };
    let blk = |name: &str| {
        block(
            name,
            json!({"cidr": "10.0.0.0/26", "pool": "p", "node": "n1"}),
        )
    };
    let filters = |rule: Value| {
        peer(
            "pf",
            json!({"peerIP": "192.0.2.1", "asNumber": 65001, "node": "n1", "importFilters": [rule]}),
        )
    };
    vec![
        // IPPool
        Case {
            what: "pool cidr with host bits",
            plural: "ippools",
            via: Via::Create,
            object: pool("p1", json!({"cidr": "10.0.0.1/24"})),
            field: "spec.cidr",
            words: "canonical form",
        },
        Case {
            what: "pool cidr not a CIDR",
            plural: "ippools",
            via: Via::Create,
            object: pool("p2", json!({"cidr": "banana"})),
            field: "spec.cidr",
            words: "canonical form",
        },
        Case {
            what: "pool cidr longer than 43",
            plural: "ippools",
            via: Via::Create,
            object: pool("p3", json!({"cidr": "1".repeat(44)})),
            field: "spec.cidr",
            words: "43",
        },
        Case {
            what: "pool without cidr",
            plural: "ippools",
            via: Via::Create,
            object: pool("p4", json!({})),
            field: "spec.cidr",
            words: "Required",
        },
        Case {
            what: "blockSize under the schema minimum",
            plural: "ippools",
            via: Via::Create,
            object: pool("p5", json!({"cidr": "10.0.0.0/16", "blockSize": 19})),
            field: "spec.blockSize",
            words: "20",
        },
        Case {
            what: "blockSize of the wrong family",
            plural: "ippools",
            via: Via::Create,
            object: pool("p6", json!({"cidr": "10.0.0.0/16", "blockSize": 120})),
            field: "spec.blockSize",
            words: "20-32 for an IPv4 cidr",
        },
        Case {
            what: "blockSize shorter than the cidr",
            plural: "ippools",
            via: Via::Create,
            object: pool("p7", json!({"cidr": "10.0.0.0/24", "blockSize": 22})),
            field: "spec.blockSize",
            words: "must not be shorter",
        },
        Case {
            what: "disabled not a boolean",
            plural: "ippools",
            via: Via::Create,
            object: pool("p8", json!({"cidr": "10.0.0.0/24", "disabled": "yes"})),
            field: "spec.disabled",
            words: "boolean",
        },
        Case {
            what: "pool cidr changed",
            plural: "ippools",
            via: Via::Update(pool("p9", json!({"cidr": "10.9.0.0/24"}))),
            object: pool("p9", json!({"cidr": "10.9.1.0/24"})),
            field: "spec.cidr",
            words: "cidr is immutable",
        },
        Case {
            what: "pool blockSize changed",
            plural: "ippools",
            via: Via::Update(pool(
                "p10",
                json!({"cidr": "10.10.0.0/16", "blockSize": 26}),
            )),
            object: pool("p10", json!({"cidr": "10.10.0.0/16", "blockSize": 27})),
            field: "spec.blockSize",
            words: "blockSize is immutable",
        },
        // IPAMBlock
        Case {
            what: "block too large",
            plural: "ipamblocks",
            via: Via::Create,
            object: block(
                "b1",
                json!({"cidr": "10.0.0.0/16", "pool": "p", "node": "n1"}),
            ),
            field: "spec.cidr",
            words: "a block is a /20-/32",
        },
        Case {
            what: "block cidr with host bits",
            plural: "ipamblocks",
            via: Via::Create,
            object: block(
                "b2",
                json!({"cidr": "10.0.0.1/26", "pool": "p", "node": "n1"}),
            ),
            field: "spec.cidr",
            words: "canonical form",
        },
        Case {
            what: "block with empty pool",
            plural: "ipamblocks",
            via: Via::Create,
            object: block(
                "b3",
                json!({"cidr": "10.0.0.0/26", "pool": "", "node": "n1"}),
            ),
            field: "spec.pool",
            words: "at least 1",
        },
        Case {
            what: "block without node",
            plural: "ipamblocks",
            via: Via::Create,
            object: block("b4", json!({"cidr": "10.0.0.0/26", "pool": "p"})),
            field: "spec.node",
            words: "Required",
        },
        Case {
            what: "block pool changed",
            plural: "ipamblocks",
            via: Via::Update(blk("b5")),
            object: block(
                "b5",
                json!({"cidr": "10.0.0.0/26", "pool": "q", "node": "n1"}),
            ),
            field: "spec.pool",
            words: "pool is immutable",
        },
        Case {
            what: "block cidr changed",
            plural: "ipamblocks",
            via: Via::Update(blk("b6")),
            object: block(
                "b6",
                json!({"cidr": "10.0.0.64/26", "pool": "p", "node": "n1"}),
            ),
            field: "spec.cidr",
            words: "cidr is immutable",
        },
        Case {
            what: "ordinal above 4095 in status",
            plural: "ipamblocks",
            via: Via::Status(blk("b7")),
            object: with_status(blk("b7"), json!({"allocations": [alloc(4096)]})),
            field: "status.allocations[0].ordinal",
            words: "4095",
        },
        Case {
            what: "allocation without handle",
            plural: "ipamblocks",
            via: Via::Status(blk("b8")),
            object: with_status(
                blk("b8"),
                json!({"allocations": [{"ordinal": 1, "time": "2026-01-01T00:00:00Z"}]}),
            ),
            field: "status.allocations[0].handle",
            words: "Required",
        },
        Case {
            what: "one ordinal listed twice",
            plural: "ipamblocks",
            via: Via::Status(blk("b9")),
            object: with_status(blk("b9"), json!({"allocations": [alloc(1), alloc(1)]})),
            field: "status.allocations[1]",
            words: "Duplicate",
        },
        Case {
            what: "pod reference without uid",
            plural: "ipamblocks",
            via: Via::Status(blk("b10")),
            object: with_status(
                blk("b10"),
                json!({"allocations": [{"ordinal": 1, "handle": "h", "time": "2026-01-01T00:00:00Z", "pod": {"namespace": "d", "name": "p"}}]}),
            ),
            field: "status.allocations[0].pod.uid",
            words: "Required",
        },
        // BGPConfiguration
        Case {
            what: "configuration not named default",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("other", json!({})),
            field: "metadata.name",
            words: "must be named 'default'",
        },
        Case {
            what: "AS_TRANS as the cluster AS",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"asNumber": 23456})),
            field: "spec.asNumber",
            words: "reserved",
        },
        Case {
            what: "hold time of 2 s",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"holdTime": 2})),
            field: "spec.holdTime",
            words: "at least 3 seconds",
        },
        Case {
            what: "keepalive not below hold time",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"holdTime": 9, "keepaliveTime": 9})),
            field: "spec.keepaliveTime",
            words: "less than holdTime",
        },
        Case {
            what: "keepalive with hold time 0",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"holdTime": 0, "keepaliveTime": 3})),
            field: "spec.keepaliveTime",
            words: "must be 0 when holdTime is 0",
        },
        Case {
            what: "listen port 0",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"listenPort": 0})),
            field: "spec.listenPort",
            words: "1",
        },
        Case {
            what: "graceful restart time above 4095",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf("default", json!({"gracefulRestartTime": 5000})),
            field: "spec.gracefulRestartTime",
            words: "4095",
        },
        Case {
            what: "service CIDR not a CIDR",
            plural: "bgpconfigurations",
            via: Via::Create,
            object: bgpconf(
                "default",
                json!({"serviceClusterIPs": [{"cidr": "10.96.0.0"}]}),
            ),
            field: "spec.serviceClusterIPs[0].cidr",
            words: "must be a CIDR",
        },
        // BGPPeer
        Case {
            what: "peerIP and peerSelector both",
            plural: "bgppeers",
            via: Via::Create,
            object: peer(
                "x1",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "peerSelector": {}, "node": "n1"}),
            ),
            field: "spec",
            words: "exactly one of peerIP and peerSelector",
        },
        Case {
            what: "neither node nor nodeSelector",
            plural: "bgppeers",
            via: Via::Create,
            object: peer("x2", json!({"peerIP": "192.0.2.1", "asNumber": 65001})),
            field: "spec",
            words: "exactly one of node and nodeSelector",
        },
        Case {
            what: "peerIP without asNumber",
            plural: "bgppeers",
            via: Via::Create,
            object: peer("x3", json!({"peerIP": "192.0.2.1", "node": "n1"})),
            field: "spec.asNumber",
            words: "asNumber is required with peerIP",
        },
        Case {
            what: "peerIP not an address",
            plural: "bgppeers",
            via: Via::Create,
            object: peer(
                "x4",
                json!({"peerIP": "router-1", "asNumber": 65001, "node": "n1"}),
            ),
            field: "spec.peerIP",
            words: "IPv4 or IPv6 address",
        },
        Case {
            what: "nextHopMode outside the enum",
            plural: "bgppeers",
            via: Via::Create,
            object: peer(
                "x5",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "node": "n1", "nextHopMode": "Bogus"}),
            ),
            field: "spec.nextHopMode",
            words: "Unsupported value",
        },
        Case {
            what: "maxPrefixes 0",
            plural: "bgppeers",
            via: Via::Create,
            object: peer(
                "x6",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "node": "n1", "maxPrefixes": 0}),
            ),
            field: "spec.maxPrefixes",
            words: "1",
        },
        Case {
            what: "hold time 1 in peer timers",
            plural: "bgppeers",
            via: Via::Create,
            object: peer(
                "x7",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "node": "n1", "timers": {"holdTime": 1}}),
            ),
            field: "spec.timers.holdTime",
            words: "at least 3 seconds",
        },
        Case {
            what: "filter ge below the prefix length",
            plural: "bgppeers",
            via: Via::Create,
            object: filters(json!({"action": "Accept", "cidr": "10.0.0.0/16", "ge": 8})),
            field: "spec.importFilters[0].ge",
            words: "ge must be at least",
        },
        Case {
            what: "filter le beyond 32 for IPv4",
            plural: "bgppeers",
            via: Via::Create,
            object: filters(json!({"action": "Accept", "cidr": "10.0.0.0/16", "le": 33})),
            field: "spec.importFilters[0]",
            words: "at most 32",
        },
        Case {
            what: "filter action outside the enum",
            plural: "bgppeers",
            via: Via::Create,
            object: filters(json!({"action": "Maybe", "cidr": "10.0.0.0/16"})),
            field: "spec.importFilters[0].action",
            words: "Unsupported value",
        },
        // NodeNetworkStatus
        Case {
            what: "status object not named after its node",
            plural: "nodenetworkstatuses",
            via: Via::Create,
            object: nns("n1", json!({"node": "n2"})),
            field: "spec.node",
            words: "named after its node",
        },
        Case {
            what: "status node changed",
            plural: "nodenetworkstatuses",
            via: Via::Update(nns("n3", json!({"node": "n3"}))),
            object: nns("n3", json!({"node": "n4"})),
            field: "spec.node",
            words: "node is immutable",
        },
        Case {
            what: "more sessions established than configured",
            plural: "nodenetworkstatuses",
            via: Via::Status(nns("n5", json!({"node": "n5"}))),
            object: with_status(
                nns("n5", json!({"node": "n5"})),
                json!({"sessionsTotal": 1, "sessionsEstablished": 2}),
            ),
            field: "status",
            words: "cannot exceed sessionsTotal",
        },
        Case {
            what: "session state outside the enum",
            plural: "nodenetworkstatuses",
            via: Via::Status(nns("n6", json!({"node": "n6"}))),
            object: with_status(
                nns("n6", json!({"node": "n6"})),
                json!({"sessions": [{"peerIP": "192.0.2.1", "peerAS": 65001, "peerType": "NodePeer", "state": "Dancing"}]}),
            ),
            field: "status.sessions[0].state",
            words: "Unsupported value",
        },
    ]
}

async fn create(client: &kube::Client, plural: &str, o: &Value) -> (u16, Value) {
    raw(client, "POST", &format!("{GROUP}/{plural}"), JSON, Some(o)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tabby_objects_are_refused_and_valid_ones_accepted() {
    let Some(dir) = crd_dir() else {
        eprintln!("skipping: charts/tabby/crds not found next to the workspace");
        return;
    };
    let sim = common::start().await;
    let client = sim.client().await.expect("client");
    apply_crds(&client, &dir).await;

    let mut failures = Vec::new();
    for c in cases() {
        let name = c.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (code, body) = match &c.via {
            Via::Create => create(&client, c.plural, &c.object).await,
            Via::Update(base) | Via::Status(base) => {
                let (code, created) = create(&client, c.plural, base).await;
                assert_eq!(code, 201, "{}: base object: {created}", c.what);
                let mut o = c.object.clone();
                o["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
                let sub = if matches!(c.via, Via::Status(_)) {
                    "/status"
                } else {
                    ""
                };
                raw(
                    &client,
                    "PUT",
                    &format!("{GROUP}/{}/{name}{sub}", c.plural),
                    JSON,
                    Some(&o),
                )
                .await
            }
        };
        let message = body["message"].as_str().unwrap_or_default();
        if code != 422 || !message.contains(c.field) || !message.contains(c.words) {
            failures.push(format!(
                "{}: got {code} {message:?}; want 422 naming {:?} with {:?}",
                c.what, c.field, c.words
            ));
        }
        if code == 422 {
            assert_eq!(body["reason"], "Invalid", "{}", c.what);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Valid objects of every kind are accepted (defaults filled in).
    let valid = [
        ("ippools", pool("ok-v4", json!({"cidr": "10.244.0.0/16"}))),
        (
            "ippools",
            pool("ok-v6", json!({"cidr": "fd00:10::/64", "blockSize": 122})),
        ),
        (
            "ipamblocks",
            block(
                "10-244-0-64-26",
                json!({"cidr": "10.244.0.64/26", "pool": "ok-v4", "node": "n1"}),
            ),
        ),
        (
            "bgpconfigurations",
            bgpconf("default", json!({"holdTime": 90, "keepaliveTime": 30})),
        ),
        (
            "bgppeers",
            peer(
                "tor",
                json!({"peerIP": "192.0.2.1", "asNumber": 65001, "nodeSelector": {},
            "importFilters": [{"action": "Accept", "cidr": "10.0.0.0/8", "ge": 16, "le": 24}]}),
            ),
        ),
        (
            "bgppeers",
            peer(
                "rr",
                json!({"peerSelector": {"matchLabels": {"rr": "true"}}, "node": "n1"}),
            ),
        ),
        ("nodenetworkstatuses", nns("n1", json!({"node": "n1"}))),
    ];
    for (plural, o) in valid {
        let (code, body) = create(&client, plural, &o).await;
        assert_eq!(code, 201, "{plural} {}: {body}", o["metadata"]["name"]);
    }
    let (_, conf) = raw(
        &client,
        "GET",
        &format!("{GROUP}/bgpconfigurations/default"),
        JSON,
        None,
    )
    .await;
    assert_eq!(conf["spec"]["asNumber"], 64512, "defaults applied: {conf}");
    assert_eq!(conf["spec"]["listenPort"], 179);
}
