//! CNI conformance-style tests of the agent's CNI service through the real `tabby-cni` binary,
//! with environment and stdin exactly as a container runtime passes them, against
//! `tabby-kube-sim` with blocks for the node. Each case asserts the exact result or error code
//! (CNI spec 1.1.0 §"Error codes": 1 incompatible version, 3 unknown container, 4 invalid
//! environment, 6 decode failure, 7 invalid network config, 11 try again later, 50 plugin not
//! available). Root and network namespaces; skipped otherwise.

mod cni_common;

use std::collections::BTreeSet;

use cni_common::*;
use serde_json::{Value, json};
use tabby_api::v1alpha1::IPAMBlock;
use tabby_cni::datapath::host_ifname;

fn lab_with_dual_stack_blocks() -> Lab {
    let lab = Lab::new();
    lab.pool("v4", "10.96.0.0/16", 28, false);
    lab.pool("v6", "fd96::/64", 124, false);
    lab.block("10.96.0.16/28", "v4");
    lab.block("fd96::10/124", "v6");
    lab
}

fn env_of(pod: &PodNs, command: &str) -> Vec<(&'static str, String)> {
    pod.env(command)
}

#[test]
fn add_check_del_sequence_repeated_add_and_unknown_container() {
    if skip() {
        return;
    }
    let lab = lab_with_dual_stack_blocks();
    let agent = lab.agent(AgentCfg::default());
    assert!(agent.service().ready());
    let pod = PodNs::new("web-1");
    let uid = lab.pod_object("web-1", json!({}));

    // ADD in 1.0.0: the exact result.
    let add = shim(
        &lab.socket,
        &env_of(&pod, "ADD"),
        &config("1.0.0", json!({})),
    );
    assert_eq!(add.code, 0, "{}", add.raw);
    let result = add.stdout.clone().unwrap();
    let host = host_ifname("default.web-1");
    let pod_mac = cni_common::ip_json(&pod.ns, &["link", "show", "dev", "eth0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let host_ll = cni_common::ip_json(
        &lab.node,
        &["-6", "addr", "show", "dev", &host, "scope", "link"],
    )[0]["addr_info"][0]["local"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": host, "mac": "ee:ee:ee:ee:ee:ee"},
                // 1.0.0 has no interface MTU (added in 1.1.0).
                {"name": "eth0", "mac": pod_mac, "sandbox": pod.ns.path()},
            ],
            "ips": [
                {"address": "10.96.0.16/32", "interface": 1},
                {"address": "fd96::10/128", "interface": 1},
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                {"dst": "::/0", "gw": host_ll},
            ],
        }),
        "ADD result"
    );
    // The allocation names the container and the pod (UID from the API).
    let blocks = lab.allocation_objects();
    let allocs: Vec<_> = blocks
        .iter()
        .flat_map(|b: &IPAMBlock| b.status.iter().flat_map(|s| s.allocations.clone()))
        .collect();
    assert_eq!(allocs.len(), 2);
    for a in &allocs {
        assert_eq!(a.handle, pod.container);
        let p = a.pod.as_ref().unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
            ("default", "web-1", uid.as_str())
        );
    }
    // The kernel: host routes of protocol 84 via the veth, the pod's addresses.
    assert_eq!(
        tabby_routes(&lab.node),
        BTreeSet::from([
            format!("10.96.0.16 dev {host}"),
            format!("fd96::10 dev {host}")
        ])
    );

    // Repeated ADD: the same result, nothing new allocated.
    let again = shim(
        &lab.socket,
        &env_of(&pod, "ADD"),
        &config("1.0.0", json!({})),
    );
    assert_eq!(again.code, 0, "{}", again.raw);
    assert_eq!(again.stdout.as_ref(), Some(&result), "repeated ADD");
    assert_eq!(lab.allocations().len(), 2);

    // CHECK with the result as prevResult: success, no output.
    let check = shim(
        &lab.socket,
        &env_of(&pod, "CHECK"),
        &config("1.0.0", json!({"prevResult": result})),
    );
    assert_eq!(
        (check.code, check.stdout.clone()),
        (0, None),
        "{}",
        check.raw
    );
    // CHECK with a prevResult that lacks an address: 101 (Tabby's "check failed").
    let mut wrong = result.clone();
    wrong["ips"] = json!([{"address": "10.96.0.99/32", "interface": 1}]);
    let check = shim(
        &lab.socket,
        &env_of(&pod, "CHECK"),
        &config("1.0.0", json!({"prevResult": wrong})),
    );
    assert_eq!(check.code, 1);
    assert_eq!(check.stdout.as_ref().unwrap()["code"], 101, "{}", check.raw);

    // DEL: interface, routes and allocation gone; twice is fine.
    for round in 0..2 {
        let del = shim(
            &lab.socket,
            &env_of(&pod, "DEL"),
            &config("1.0.0", json!({})),
        );
        assert_eq!(
            (del.code, del.stdout.clone()),
            (0, None),
            "DEL #{round}: {}",
            del.raw
        );
    }
    assert!(tab_links(&lab.node).is_empty());
    assert!(tabby_routes(&lab.node).is_empty());
    assert!(lab.allocations().is_empty());

    // CHECK after DEL: unknown container (3).
    let check = shim(
        &lab.socket,
        &env_of(&pod, "CHECK"),
        &config("1.0.0", json!({"prevResult": result})),
    );
    assert_eq!(check.code, 1);
    assert_eq!(check.stdout.as_ref().unwrap()["code"], 3, "{}", check.raw);

    // DEL of a container that never existed, with a netns that does not exist either.
    let mut env = env_of(&PodNs::new("ghost"), "DEL");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    env.push(("CNI_NETNS", "/var/run/netns/does-not-exist".into()));
    let del = shim(&lab.socket, &env, &config("1.0.0", json!({})));
    assert_eq!((del.code, del.stdout), (0, None), "{}", del.raw);

    // The metrics' IPAM counters saw the allocations and releases, none failed.
    let c = agent.service().ipam_counters();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n(&c.allocate_ok) >= 1 && n(&c.release_ok) >= 2, "{c:?}");
    assert_eq!((n(&c.allocate_error), n(&c.release_error)), (0, 0), "{c:?}");
}

/// (environment, stdin, expected code, message fragment, why).
type Case = (
    Vec<(&'static str, String)>,
    String,
    u64,
    &'static str,
    &'static str,
);

#[test]
fn bad_invocations_get_exact_codes_and_leave_nothing() {
    if skip() {
        return;
    }
    let lab = lab_with_dual_stack_blocks();
    let _agent = lab.agent(AgentCfg::default());
    let pod = PodNs::new("bad-1");
    lab.pod_object("bad-1", json!({}));
    let with = |k: &'static str, v: &str| {
        let mut e = env_of(&pod, "ADD");
        e.retain(|(key, _)| *key != k);
        e.push((k, v.to_string()));
        e
    };
    let without = |k: &str| {
        let mut e = env_of(&pod, "ADD");
        e.retain(|(key, _)| *key != k);
        e
    };
    let good = config("1.0.0", json!({}));
    let cases: Vec<Case> = vec![
        (
            without("CNI_COMMAND"),
            good.clone(),
            4,
            "CNI_COMMAND",
            "missing command",
        ),
        (
            without("CNI_NETNS"),
            good.clone(),
            4,
            "CNI_NETNS",
            "ADD without netns",
        ),
        (
            without("CNI_CONTAINERID"),
            good.clone(),
            4,
            "CNI_CONTAINERID",
            "ADD without id",
        ),
        (
            with("CNI_NETNS", "relative/path"),
            good.clone(),
            4,
            "CNI_NETNS",
            "relative netns",
        ),
        (
            with("CNI_ARGS", "K8S_POD_NAME"),
            good.clone(),
            4,
            "CNI_ARGS",
            "malformed CNI_ARGS",
        ),
        (
            with("CNI_ARGS", "IgnoreUnknown=1"),
            good.clone(),
            4,
            "K8S_POD_NAMESPACE",
            "no pod arguments",
        ),
        (
            with("CNI_NETNS", "/var/run/netns/absent"),
            good.clone(),
            4,
            "/var/run/netns/absent",
            "netns that does not exist",
        ),
        (
            env_of(&pod, "ADD"),
            "{\"cniVersion\": ".into(),
            6,
            "not valid JSON",
            "malformed config",
        ),
        (
            env_of(&pod, "ADD"),
            config("0.2.0", json!({})),
            1,
            "0.2.0",
            "unsupported version",
        ),
        (
            env_of(&pod, "ADD"),
            config("1.0.0", json!({"type": "ptp"})),
            7,
            "ptp",
            "wrong type",
        ),
    ];
    for (env, stdin, code, frag, why) in cases {
        let r = shim(&lab.socket, &env, &stdin);
        assert_eq!(r.code, 1, "{why}: {}", r.raw);
        let out = r.stdout.unwrap_or(Value::Null);
        assert_eq!(out["code"], json!(code), "{why}: {out}");
        assert!(
            out["msg"].as_str().unwrap_or("").contains(frag)
                || out["details"].as_str().unwrap_or("").contains(frag),
            "{why}: message names {frag}: {out}"
        );
    }
    // A pod the API does not know: 100, and no allocation or interface left behind.
    let stranger = PodNs::new("not-in-api");
    let r = shim(&lab.socket, &stranger.env("ADD"), &good);
    assert_eq!(r.code, 1);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 100, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("does not exist"),
        "{out}"
    );
    // The netns that did not exist failed after allocation: rolled back.
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert!(tab_links(&lab.node).is_empty());
}

#[test]
fn chained_prev_result_in_portmaps_shape_and_older_versions() {
    if skip() {
        return;
    }
    let lab = lab_with_dual_stack_blocks();
    let _agent = lab.agent(AgentCfg::default());
    // Tabby after another plugin: its result is appended, interface indices shifted.
    let a = PodNs::new("chain-a");
    lab.pod_object("chain-a", json!({}));
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": a.ns.path()}],
        "ips": [{"address": "192.0.2.5/24", "interface": 0}],
        "dns": {"nameservers": ["192.0.2.53"]},
    });
    let r = shim(
        &lab.socket,
        &a.env("ADD"),
        &config("1.0.0", json!({"prevResult": prev})),
    );
    assert_eq!(r.code, 0, "{}", r.raw);
    let out = r.stdout.unwrap();
    let ifs: Vec<&str> = out["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ifs,
        ["net1", host_ifname("default.chain-a").as_str(), "eth0"]
    );
    assert_eq!(
        out["ips"][0],
        json!({"address": "192.0.2.5/24", "interface": 0})
    );
    assert_eq!(
        out["ips"][1],
        json!({"address": "10.96.0.16/32", "interface": 2})
    );
    assert_eq!(out["dns"], json!({"nameservers": ["192.0.2.53"]}));
    // CHECK and DEL get the chain's final result (what portmap passes on unchanged).
    let check = shim(
        &lab.socket,
        &a.env("CHECK"),
        &config("1.0.0", json!({"prevResult": out})),
    );
    assert_eq!((check.code, check.stdout), (0, None), "{}", check.raw);
    let del = shim(
        &lab.socket,
        &a.env("DEL"),
        &config("1.0.0", json!({"prevResult": out})),
    );
    assert_eq!((del.code, del.stdout), (0, None), "{}", del.raw);

    // The same ADD answered in each version's shape.
    for (i, version) in ["0.3.1", "0.4.0", "1.1.0"].iter().enumerate() {
        let name = format!("ver-{i}");
        let p = PodNs::new(&name);
        lab.pod_object(&name, json!({}));
        let r = shim(&lab.socket, &p.env("ADD"), &config(version, json!({})));
        assert_eq!(r.code, 0, "{version}: {}", r.raw);
        let out = r.stdout.unwrap();
        assert_eq!(out["cniVersion"], *version);
        if version.starts_with("0.") {
            // 0.3.x/0.4.0 results carry "version" per IP.
            assert_eq!(out["ips"][0]["version"], "4", "{version}: {out}");
        } else {
            assert!(out["ips"][0].get("version").is_none(), "{out}");
        }
        let addrs = result_addrs(&out);
        assert_eq!(addrs.len(), 2, "{out}");
        let del = shim(&lab.socket, &p.env("DEL"), &config(version, json!({})));
        assert_eq!(del.code, 0, "{}", del.raw);
    }
    assert!(lab.allocations().is_empty());
}

#[test]
fn status_and_gc() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("v4", "10.97.0.0/16", 28, false);
    let agent = lab.agent(AgentCfg::default());
    let status_env = vec![("CNI_COMMAND", "STATUS".to_string())];
    // No block yet: 50, saying why.
    let r = shim(&lab.socket, &status_env, &config("1.1.0", json!({})));
    assert_eq!(r.code, 1, "{}", r.raw);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 50, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("no IPAMBlock"),
        "{out}"
    );
    lab.block("10.97.0.0/28", "v4");
    let r = shim(&lab.socket, &status_env, &config("1.1.0", json!({})));
    assert_eq!((r.code, r.stdout), (0, None), "{}", r.raw);

    // GC: two pods, one of them valid; the other's interface and allocation go.
    let keep = PodNs::new("gc-keep");
    let drop_ = PodNs::new("gc-drop");
    for p in [&keep, &drop_] {
        lab.pod_object(&p.name, json!({}));
        let r = shim(&lab.socket, &p.env("ADD"), &config("1.1.0", json!({})));
        assert_eq!(r.code, 0, "{}", r.raw);
    }
    assert_eq!(lab.allocations().len(), 2);
    let gc = config(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": keep.container, "ifname": "eth0"}]}),
    );
    let r = shim(
        &lab.socket,
        &[
            ("CNI_COMMAND", "GC".to_string()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ],
        &gc,
    );
    assert_eq!((r.code, r.stdout), (0, None), "{}", r.raw);
    let held: BTreeSet<String> = lab.allocations().into_values().collect();
    assert_eq!(held, BTreeSet::from([keep.container.clone()]));
    assert_eq!(
        tab_links(&lab.node),
        BTreeSet::from([host_ifname("default.gc-keep")])
    );

    // Stopped service: the socket is gone and the shim says 50 for STATUS.
    agent.stop();
    assert!(!lab.socket.exists());
    let r = shim(&lab.socket, &status_env, &config("1.1.0", json!({})));
    assert_eq!(r.stdout.unwrap()["code"], 50);
}

#[test]
fn pod_annotations_request_addresses_and_bad_ones_are_refused() {
    if skip() {
        return;
    }
    let lab = lab_with_dual_stack_blocks();
    let _agent = lab.agent(AgentCfg::default());
    // A specific address per family, from the Pod's annotation (read from the API by ADD).
    let pinned = PodNs::new("pinned");
    lab.pod_object(
        "pinned",
        json!({"tabby.dev/ipaddrs": "10.96.0.20,fd96::1a"}),
    );
    let r = shim(&lab.socket, &pinned.env("ADD"), &config("1.0.0", json!({})));
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(
        result_addrs(r.stdout.as_ref().unwrap()),
        [
            "10.96.0.20".parse::<std::net::IpAddr>().unwrap(),
            "fd96::1a".parse().unwrap()
        ]
    );
    // An address outside the node's blocks, and one that is not an address: refused with the
    // annotation named, nothing allocated, no interface.
    for (name, value) in [("outside", "10.200.0.1"), ("garbage", "not-an-ip")] {
        let p = PodNs::new(name);
        lab.pod_object(name, json!({"tabby.dev/ipaddrs": value}));
        let r = shim(&lab.socket, &p.env("ADD"), &config("1.0.0", json!({})));
        assert_eq!(r.code, 1, "{name}: {}", r.raw);
        let out = r.stdout.unwrap();
        assert_eq!(out["code"], 100, "{name}: {out}");
        assert!(
            out["msg"].as_str().unwrap().contains(value),
            "{name}: {out}"
        );
    }
    assert_eq!(lab.allocations().len(), 2);
    assert_eq!(tab_links(&lab.node).len(), 1);
}

#[test]
fn del_releases_when_the_pods_netns_is_already_gone() {
    if skip() {
        return;
    }
    let lab = lab_with_dual_stack_blocks();
    let _agent = lab.agent(AgentCfg::default());
    let pod = PodNs::new("gone");
    lab.pod_object("gone", json!({}));
    let r = shim(&lab.socket, &pod.env("ADD"), &config("1.0.0", json!({})));
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(lab.allocations().len(), 2);
    let env = pod.env("DEL");
    // The runtime tore the sandbox down first: the namespace (and with it both veth ends and
    // the host routes) is gone before DEL arrives.
    drop(pod);
    // The kernel dismantles a namespace asynchronously (a workqueue): wait for the veth to go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tab_links(&lab.node).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the veth outlived its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let del = shim(&lab.socket, &env, &config("1.0.0", json!({})));
    assert_eq!((del.code, del.stdout), (0, None), "{}", del.raw);
    assert!(lab.allocations().is_empty(), "{:?}", lab.allocations());
    assert!(tabby_routes(&lab.node).is_empty());
}
