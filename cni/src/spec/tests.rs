//! Table tests of the CNI protocol rules; each case names the spec clause it guards.

use super::*;
use serde_json::json;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const FULL: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "abc123"),
    ("CNI_NETNS", "/run/netns/p1"),
    ("CNI_IFNAME", "eth0"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
    ),
    ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
];

fn with(overrides: &[(&'static str, Option<&'static str>)]) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = FULL.to_vec();
    for (k, val) in overrides {
        v.retain(|(key, _)| key != k);
        if let Some(val) = val {
            v.push((k, val));
        }
    }
    v
}

/// `Ok`, or the error code and a fragment the message must contain.
type Want = Result<(), (ErrorCode, &'static str)>;
/// Environment overrides: `None` removes the variable.
type Overrides = Vec<(&'static str, Option<&'static str>)>;

#[test]
fn env_full_add_parses() {
    let env = Env::parse(env_of(&FULL)).unwrap();
    assert_eq!(env.command, Command::Add);
    assert_eq!(env.container_id.as_deref(), Some("abc123"));
    assert_eq!(env.netns, Some(PathBuf::from("/run/netns/p1")));
    assert_eq!(env.ifname.as_deref(), Some("eth0"));
    assert_eq!(
        env.pod,
        Some(PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: Some("0f1e2d3c-aaaa-bbbb-cccc-123456789abc".into()),
        })
    );
    assert_eq!(env.args.get("IgnoreUnknown"), Some("1"));
    assert_eq!(
        env.path,
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
}

#[test]
fn env_table() {
    // (overrides, Ok or the error code and a fragment the message must contain, clause)
    let cases: Vec<(Overrides, Want, &str)> = vec![
        (vec![], Ok(()), "all present"),
        (
            vec![("CNI_COMMAND", None)],
            Err((ErrorCode::INVALID_ENV, "CNI_COMMAND")),
            "§2 Parameters: CNI_COMMAND required",
        ),
        (
            vec![("CNI_COMMAND", Some("ATTACH"))],
            Err((ErrorCode::INVALID_ENV, "ATTACH")),
            "unknown command",
        ),
        (
            vec![("CNI_COMMAND", Some("add"))],
            Err((ErrorCode::INVALID_ENV, "`add`")),
            "commands are upper case",
        ),
        (
            vec![("CNI_CONTAINERID", None), ("CNI_IFNAME", None)],
            Err((ErrorCode::INVALID_ENV, "CNI_CONTAINERID, CNI_IFNAME")),
            "every missing variable named at once",
        ),
        (
            vec![("CNI_NETNS", None)],
            Err((ErrorCode::INVALID_ENV, "CNI_NETNS")),
            "ADD needs the netns",
        ),
        (
            vec![("CNI_NETNS", Some(""))],
            Err((ErrorCode::INVALID_ENV, "CNI_NETNS")),
            "empty counts as missing",
        ),
        (
            vec![("CNI_COMMAND", Some("DEL")), ("CNI_NETNS", None)],
            Ok(()),
            "§2 DEL: netns may be gone",
        ),
        (
            vec![("CNI_COMMAND", Some("CHECK")), ("CNI_NETNS", None)],
            Err((ErrorCode::INVALID_ENV, "CNI_NETNS")),
            "CHECK needs the netns",
        ),
        (
            vec![
                ("CNI_COMMAND", Some("STATUS")),
                ("CNI_CONTAINERID", None),
                ("CNI_NETNS", None),
                ("CNI_IFNAME", None),
            ],
            Ok(()),
            "§2 STATUS: no container parameters",
        ),
        (
            vec![
                ("CNI_COMMAND", Some("GC")),
                ("CNI_CONTAINERID", None),
                ("CNI_NETNS", None),
                ("CNI_IFNAME", None),
            ],
            Ok(()),
            "§2 GC: no container parameters",
        ),
        (
            vec![("CNI_CONTAINERID", Some("-abc"))],
            Err((ErrorCode::INVALID_ENV, "CNI_CONTAINERID")),
            "container ID starts alphanumeric",
        ),
        (
            vec![("CNI_CONTAINERID", Some("abc/def"))],
            Err((ErrorCode::INVALID_ENV, "CNI_CONTAINERID")),
            "container ID charset",
        ),
        (
            vec![("CNI_CONTAINERID", Some("a_b.c-D9"))],
            Ok(()),
            "container ID: _ . - allowed",
        ),
        (
            vec![("CNI_NETNS", Some("run/netns/x"))],
            Err((ErrorCode::INVALID_ENV, "absolute")),
            "netns is a path",
        ),
        (
            vec![("CNI_IFNAME", Some("eth0123456789abc"))],
            Err((ErrorCode::INVALID_ENV, "at most 15")),
            "IFNAMSIZ",
        ),
        (
            vec![("CNI_IFNAME", Some(".."))],
            Err((ErrorCode::INVALID_ENV, "CNI_IFNAME")),
            "ifname not ..",
        ),
        (
            vec![("CNI_IFNAME", Some("et h0"))],
            Err((ErrorCode::INVALID_ENV, "whitespace")),
            "ifname no whitespace",
        ),
        (
            vec![("CNI_IFNAME", Some("eth:0"))],
            Err((ErrorCode::INVALID_ENV, "CNI_IFNAME")),
            "ifname no colon",
        ),
        (
            vec![("CNI_ARGS", Some("K8S_POD_NAMESPACE=default;garbage"))],
            Err((ErrorCode::INVALID_ENV, "`garbage`")),
            "CNI_ARGS pairs are KEY=VALUE",
        ),
        (
            vec![("CNI_ARGS", Some("=x"))],
            Err((ErrorCode::INVALID_ENV, "empty key")),
            "CNI_ARGS keys non-empty",
        ),
        (
            vec![("CNI_ARGS", Some("K8S_POD_NAMESPACE=default"))],
            Err((ErrorCode::INVALID_ENV, "K8S_POD_NAME")),
            "pod namespace without name",
        ),
        (
            vec![("CNI_ARGS", Some("K8S_POD_NAMESPACE=Default;K8S_POD_NAME=x"))],
            Err((ErrorCode::INVALID_ENV, "Kubernetes name")),
            "namespaces are DNS-1123",
        ),
        (
            vec![(
                "CNI_ARGS",
                Some("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=zz"),
            )],
            Err((ErrorCode::INVALID_ENV, "UID")),
            "UID shape",
        ),
        (
            vec![("CNI_ARGS", Some(";;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;"))],
            Ok(()),
            "empty segments tolerated",
        ),
        (vec![("CNI_ARGS", None)], Ok(()), "CNI_ARGS optional"),
        (vec![("CNI_PATH", None)], Ok(()), "CNI_PATH unused by tabby"),
    ];
    for (overrides, want, why) in cases {
        let got = Env::parse(env_of(&with(&overrides)));
        match (got, want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((code, frag))) => {
                assert_eq!(e.code, code, "{why}: {e}");
                assert!(e.msg.contains(frag), "{why}: `{}` lacks `{frag}`", e.msg);
            }
            (got, want) => panic!("{why}: got {got:?}, want {want:?}"),
        }
    }
}

fn conf(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn base() -> Value {
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby-cni"})
}

fn merged(extra: Value) -> Value {
    let mut b = base();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v.clone();
        }
    }
    b
}

#[test]
fn netconf_table() {
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                       {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.0.0.5/32", "interface": 1}]
    });
    let cases: Vec<(Vec<u8>, Command, Want, &str)> = vec![
        (conf(base()), Command::Add, Ok(()), "minimal"),
        (
            b"{not json".to_vec(),
            Command::Add,
            Err((ErrorCode::DECODE_FAILURE, "not valid JSON")),
            "§2 code 6",
        ),
        (
            b"[1,2]".to_vec(),
            Command::Add,
            Err((ErrorCode::DECODE_FAILURE, "object")),
            "not an object",
        ),
        (
            b"".to_vec(),
            Command::Add,
            Err((ErrorCode::DECODE_FAILURE, "JSON")),
            "empty stdin",
        ),
        (
            conf(merged(json!({"cniVersion": null}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "cniVersion")),
            "version required",
        ),
        (
            conf(merged(json!({"cniVersion": "2.0.0"}))),
            Command::Add,
            Err((ErrorCode::INCOMPATIBLE_VERSION, "2.0.0")),
            "§2 code 1",
        ),
        (
            conf(merged(json!({"cniVersion": "0.2.0"}))),
            Command::Add,
            Err((
                ErrorCode::INCOMPATIBLE_VERSION,
                "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
            )),
            "old version lists ours",
        ),
        (
            conf(merged(json!({"cniVersion": 1}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "must be a string")),
            "version type",
        ),
        (
            conf(merged(
                json!({"cniVersion": "0.3.1", "prevResult": prev.clone()}),
            )),
            Command::Check,
            Err((ErrorCode::INCOMPATIBLE_VERSION, "CHECK")),
            "CHECK needs 0.4.0",
        ),
        (
            conf(merged(
                json!({"cniVersion": "0.4.0", "prevResult": prev.clone()}),
            )),
            Command::Check,
            Ok(()),
            "CHECK in 0.4.0",
        ),
        (
            conf(merged(json!({"cniVersion": "1.0.0"}))),
            Command::Status,
            Err((ErrorCode::INCOMPATIBLE_VERSION, "STATUS")),
            "STATUS needs 1.1.0",
        ),
        (
            conf(merged(json!({"cniVersion": "1.0.0"}))),
            Command::Gc,
            Err((ErrorCode::INCOMPATIBLE_VERSION, "GC")),
            "GC needs 1.1.0",
        ),
        (
            conf(merged(json!({"cniVersion": "1.1.0"}))),
            Command::Gc,
            Ok(()),
            "GC in 1.1.0",
        ),
        (
            conf(merged(json!({"name": null}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "name")),
            "name required",
        ),
        (
            conf(merged(json!({"name": "bad name"}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "bad name")),
            "name charset",
        ),
        (
            conf(merged(json!({"type": null}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "type")),
            "type required",
        ),
        (
            conf(merged(json!({"type": "bridge"}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "bridge")),
            "type is ours",
        ),
        (
            conf(merged(json!({"ipam": {"type": "host-local"}}))),
            Command::Add,
            Err((ErrorCode::UNSUPPORTED_FIELD, "ipam")),
            "§2 code 2 names the field",
        ),
        (
            conf(merged(json!({"ipam": {}}))),
            Command::Add,
            Ok(()),
            "empty ipam is harmless",
        ),
        (
            conf(merged(json!({"agentSocket": "run/x.sock"}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "absolute")),
            "socket path absolute",
        ),
        (
            conf(merged(json!({"mtu": 9001}))),
            Command::Add,
            Ok(()),
            "jumbo MTU",
        ),
        (
            conf(merged(json!({"mtu": 20}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "mtu")),
            "MTU too small",
        ),
        (
            conf(merged(json!({"mtu": "1500"}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "mtu")),
            "MTU is a number",
        ),
        (
            conf(merged(json!({"runtimeConfig": []}))),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "runtimeConfig")),
            "runtimeConfig object",
        ),
        (
            conf(merged(
                json!({"prevResult": {"ips": [{"address": "nope"}]}}),
            )),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "ips[0].address")),
            "prevResult validated",
        ),
        (
            conf(merged(
                json!({"prevResult": {"interfaces": [], "ips": [{"address": "10.0.0.1/32", "interface": 3}]}}),
            )),
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "interface")),
            "prevResult index in range",
        ),
        (
            conf(base()),
            Command::Check,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "prevResult")),
            "§2 CHECK: prevResult required",
        ),
        (
            vec![b' '; MAX_CONFIG_BYTES + 1],
            Command::Add,
            Err((ErrorCode::INVALID_NETWORK_CONFIG, "bytes")),
            "bounded input",
        ),
    ];
    for (stdin, cmd, want, why) in cases {
        match (NetConf::parse(&stdin, cmd), want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((code, frag))) => {
                assert_eq!(e.code, code, "{why}: {e}");
                assert!(e.msg.contains(frag), "{why}: `{}` lacks `{frag}`", e.msg);
            }
            (got, want) => panic!("{why}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn netconf_fields() {
    let c = NetConf::parse(
        &conf(merged(json!({
            "cniVersion": "1.1.0",
            "agentSocket": "/tmp/t/cni.sock",
            "mtu": 1400,
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            "args": {"cni": {"ips": ["10.0.0.9"]}},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
            "custom": true
        }))),
        Command::Gc,
    )
    .unwrap();
    assert_eq!(c.cni_version, Version::V1_1_0);
    assert_eq!(c.agent_socket, Some(PathBuf::from("/tmp/t/cni.sock")));
    assert_eq!(c.mtu, Some(1400));
    assert!(c.runtime_config.contains_key("portMappings"));
    assert!(c.args.contains_key("cni"));
    assert_eq!(c.raw.get("custom"), Some(&json!(true)));
    assert_eq!(
        c.valid_attachments().unwrap(),
        vec![Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into()
        }]
    );
    let bad = NetConf::parse(
        &conf(merged(
            json!({"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"x": 1}]}),
        )),
        Command::Gc,
    )
    .unwrap();
    assert_eq!(
        bad.valid_attachments().unwrap_err().code,
        ErrorCode::INVALID_NETWORK_CONFIG
    );
}

fn sample() -> CniResult {
    CniResult::from_json(&json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/run/netns/p",
             "socketPath": "/run/x.sock", "pciID": "0000:00:1f.0"}
        ],
        "ips": [
            {"address": "10.0.0.5/32", "interface": 1},
            {"address": "fd00::5/128", "interface": 1, "gateway": "fe80::1"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "priority": 10}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    }))
    .unwrap()
}

#[test]
fn result_in_each_version() {
    let r = sample();
    // 1.1.0: everything.
    assert_eq!(
        r.to_json(Version::V1_1_0),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/run/netns/p",
                 "socketPath": "/run/x.sock", "pciID": "0000:00:1f.0"}
            ],
            "ips": [
                {"address": "10.0.0.5/32", "interface": 1},
                {"address": "fd00::5/128", "interface": 1, "gateway": "fe80::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "priority": 10}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    );
    // 1.0.0: no 1.1 fields on interfaces or routes.
    assert_eq!(
        r.to_json(Version::V1_0_0),
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "10.0.0.5/32", "interface": 1},
                {"address": "fd00::5/128", "interface": 1, "gateway": "fe80::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    );
    // 0.4.0: ips carry their family.
    let v = r.to_json(Version::V0_4_0);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["ips"],
        json!([
            {"version": "4", "address": "10.0.0.5/32", "interface": 1},
            {"version": "6", "address": "fd00::5/128", "interface": 1, "gateway": "fe80::1"}
        ])
    );
    // Round trip through every version keeps what that version can carry.
    for ver in Version::ALL {
        let back = CniResult::from_json(&r.to_json(ver)).unwrap();
        assert_eq!(back.ips, r.ips, "{ver}");
        assert_eq!(back.to_json(ver), r.to_json(ver), "{ver}");
    }
    // An empty result is just the version.
    assert_eq!(
        CniResult::default().to_json(Version::V1_0_0),
        json!({"cniVersion": "1.0.0"})
    );
}

#[test]
fn result_decode_errors_name_the_field() {
    for (v, frag) in [
        (json!([]), "object"),
        (json!({"interfaces": {}}), "`interfaces` must be an array"),
        (json!({"interfaces": [{"mac": "x"}]}), "interfaces[0].name"),
        (
            json!({"interfaces": [{"name": "a", "mtu": -1}]}),
            "interfaces[0].mtu",
        ),
        (json!({"ips": [{"address": "10.0.0.1"}]}), "ips[0].address"),
        (
            json!({"ips": [{"address": "10.0.0.1/32", "version": "6"}]}),
            "ips[0].version",
        ),
        (
            json!({"ips": [{"address": "10.0.0.1/32", "gateway": "x"}]}),
            "ips[0].gateway",
        ),
        (json!({"routes": [{"gw": "10.0.0.1"}]}), "routes[0].dst"),
        (json!({"dns": {"nameservers": "x"}}), "dns"),
    ] {
        let e = CniResult::from_json(&v).unwrap_err();
        assert!(e.contains(frag), "{v}: `{e}` lacks `{frag}`");
    }
}

#[test]
fn chaining_shifts_interface_indices() {
    let prev = CniResult::from_json(&json!({
        "interfaces": [{"name": "lo"}],
        "ips": [{"address": "127.0.0.2/8", "interface": 0}],
        "dns": {"nameservers": ["1.1.1.1"]}
    }))
    .unwrap();
    let ours = sample();
    let c = CniResult::chain(&prev, &ours);
    assert_eq!(c.interfaces.len(), 3);
    assert_eq!(
        c.ips.iter().map(|i| i.interface).collect::<Vec<_>>(),
        vec![Some(0), Some(2), Some(2)]
    );
    assert_eq!(c.dns.nameservers, vec!["1.1.1.1".to_string()]);
    // Empty previous DNS takes ours.
    let c = CniResult::chain(&CniResult::default(), &ours);
    assert_eq!(c, ours);
}

#[test]
fn errors_serialise_per_spec() {
    let e = CniError::new(ErrorCode::TRY_AGAIN_LATER, "no block yet").with_details("pool p1");
    assert_eq!(
        e.to_json(Version::V1_0_0),
        json!({"cniVersion": "1.0.0", "code": 11, "msg": "no block yet", "details": "pool p1"})
    );
    assert_eq!(
        CniError::new(ErrorCode::INVALID_ENV, "x").to_json(Version::V0_4_0),
        json!({"cniVersion": "0.4.0", "code": 4, "msg": "x"})
    );
    assert_eq!(e.to_string(), "CNI error 11: no block yet (pool p1)");
}

#[test]
fn version_answer_lists_everything() {
    assert_eq!(
        version_answer(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    for v in Version::ALL {
        assert_eq!(Version::parse(v.as_str()), Some(v));
    }
    assert_eq!(Version::parse("1.2.0"), None);
    assert_eq!(
        NetConf::sniff_version(br#"{"cniVersion":"0.4.0"}"#),
        Some(Version::V0_4_0)
    );
    assert_eq!(NetConf::sniff_version(b"{"), None);
}

#[test]
fn request_parse_combines_env_and_config() {
    let r = Request::parse(env_of(&FULL), &conf(base())).unwrap();
    assert_eq!(r.container_id(), "abc123");
    assert_eq!(r.ifname(), "eth0");
    assert_eq!(r.config.name, "k8s-pod-network");
    // VERSION is never a forwarded request.
    let e = Request::parse(env_of(&[("CNI_COMMAND", "VERSION")]), b"{}").unwrap_err();
    assert_eq!(e.code, ErrorCode::INVALID_ENV);
    // Env errors come before config errors (the runtime's own mistake is reported first).
    let e = Request::parse(env_of(&with(&[("CNI_IFNAME", None)])), b"{").unwrap_err();
    assert_eq!(e.code, ErrorCode::INVALID_ENV);
}
