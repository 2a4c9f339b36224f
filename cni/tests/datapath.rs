//! Conformance-style tests of the whole path — runtime → `tabby-cni` → socket → server →
//! handler → real datapath — in network namespaces: one "node" namespace per test, pods in
//! their own. Root only; each test skips with a message otherwise.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::Ordering;

use common::{
    Agent, config, env_pairs, ip_json, link_local_of, links, mac_of, pod_env, shim, shim_with,
    tabby_routes,
};
use serde_json::{Value, json};
use tabby_cni::datapath::host_ifname;
use tabby_netlab::{Netns, skip_unless_root_and};

fn skip() -> bool {
    skip_unless_root_and(&["ip", "ping"])
}

fn add(agent: &Agent, pod: &Netns, container: &str, name: &str, conf: &str) -> common::ShimRun {
    let env = pod_env("ADD", container, &pod.path(), "default", name);
    shim(&agent.socket, &env_pairs(&env), conf)
}

fn del(
    agent: &Agent,
    pod: Option<&Netns>,
    container: &str,
    name: &str,
    conf: &str,
) -> common::ShimRun {
    let mut env = pod_env("DEL", container, "", "default", name);
    match pod {
        Some(p) => {
            env.insert("CNI_NETNS", p.path());
        }
        None => {
            env.remove("CNI_NETNS");
        }
    }
    shim(&agent.socket, &env_pairs(&env), conf)
}

fn check(agent: &Agent, pod: &Netns, container: &str, name: &str, prev: &Value) -> common::ShimRun {
    let env = pod_env("CHECK", container, &pod.path(), "default", name);
    let v = prev["cniVersion"].as_str().unwrap().to_string();
    shim(
        &agent.socket,
        &env_pairs(&env),
        &config(&v, json!({"prevResult": prev})),
    )
}

fn pod_links(pod: &Netns) -> Vec<String> {
    let mut l = links(pod);
    l.sort();
    l
}

#[test]
fn add_check_del_sequence_with_exact_results() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let pod = Netns::new().unwrap();
    let agent = Agent::start(&node, true, 10);
    let host = host_ifname("default.web-0");
    let conf = config("1.0.0", json!({}));

    let r = add(&agent, &pod, "c1", "web-0", &conf);
    assert_eq!(r.code, 0, "{}", r.raw);
    let ll = link_local_of(&node, &host);
    let expect = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": host, "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": mac_of(&pod, "eth0"), "sandbox": pod.path()}
        ],
        "ips": [
            {"address": "10.77.0.1/32", "interface": 1},
            {"address": "fd77::1/128", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": "::/0", "gw": ll}
        ]
    });
    let result = r.stdout.unwrap();
    assert_eq!(result, expect);

    // Kernel state as the design says.
    let h = &ip_json(&node, &["-d", "link", "show", "dev", &host])[0];
    assert_eq!(h["address"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(h["ifalias"], "c1");
    assert!(h["flags"].as_array().unwrap().contains(&json!("UP")));
    assert_eq!(
        node.exec(&["cat", &format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp")])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        node.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    let mut routes = tabby_routes(&node);
    routes.sort();
    assert_eq!(
        routes,
        vec![
            format!("10.77.0.1 dev {host}"),
            format!("fd77::1 dev {host}")
        ]
    );
    assert!(
        ip_json(&node, &["-4", "addr", "show", "dev", &host])
            .as_array()
            .unwrap()
            .is_empty()
            || ip_json(&node, &["-4", "addr", "show", "dev", &host])[0]["addr_info"]
                .as_array()
                .unwrap()
                .is_empty(),
        "host side has no IPv4 address"
    );
    let pod_default = ip_json(&pod, &["-4", "route", "show", "default"]);
    assert_eq!(pod_default[0]["gateway"], "169.254.1.1");
    assert!(
        pod_default[0]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("onlink"))
    );
    let pod_default6 = ip_json(&pod, &["-6", "route", "show", "default"]);
    assert_eq!(pod_default6[0]["gateway"], json!(ll));

    // CHECK against the cached result passes and prints nothing.
    let r = check(&agent, &pod, "c1", "web-0", &result);
    assert_eq!((r.code, r.stdout.clone()), (0, None), "{}", r.raw);

    // Repeated ADD for the same container: same answer, nothing recreated.
    let ifindex = h["ifindex"].clone();
    let r = add(&agent, &pod, "c1", "web-0", &conf);
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(r.stdout.unwrap(), expect);
    assert_eq!(
        ip_json(&node, &["link", "show", "dev", &host])[0]["ifindex"],
        ifindex
    );

    // CHECK notices a broken pod: remove the pod's default route.
    pod.ip(&["-4", "route", "del", "default"]).unwrap();
    let r = check(&agent, &pod, "c1", "web-0", &result);
    assert_eq!(r.code, 1);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 101, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("IPv4 default route"),
        "{out}"
    );
    // A repeated ADD repairs it (the broken attachment is rebuilt with the same address).
    let r = add(&agent, &pod, "c1", "web-0", &conf);
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(r.stdout.as_ref().unwrap()["ips"], expect["ips"]);
    let rebuilt = r.stdout.unwrap();
    let r = check(&agent, &pod, "c1", "web-0", &rebuilt);
    assert_eq!(r.code, 0, "{}", r.raw);

    // DEL removes everything; DEL again (unknown container now) still succeeds.
    let r = del(&agent, Some(&pod), "c1", "web-0", &conf);
    assert_eq!((r.code, r.stdout), (0, None));
    assert!(!links(&node).contains(&host));
    assert!(tabby_routes(&node).is_empty());
    assert_eq!(pod_links(&pod), vec!["lo".to_string()]);
    let r = del(&agent, Some(&pod), "c1", "web-0", &conf);
    assert_eq!((r.code, r.stdout), (0, None));
    let r = del(&agent, None, "never-added", "ghost", &conf);
    assert_eq!((r.code, r.stdout), (0, None));

    // CHECK of a container that is gone: code 3 (unknown container).
    let r = check(&agent, &pod, "c1", "web-0", &result);
    assert_eq!(r.stdout.unwrap()["code"], 3);
}

#[test]
fn del_succeeds_after_the_netns_is_gone_and_spares_a_newer_sandbox() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let agent = Agent::start(&node, false, 10);
    let conf = config("1.1.0", json!({}));
    let host = host_ifname("default.db-0");
    let old = Netns::new().unwrap();
    assert_eq!(add(&agent, &old, "old", "db-0", &conf).code, 0);
    drop(old);
    // The kernel destroyed the pair with the namespace; DEL has nothing to do and says so by
    // succeeding.
    let r = del(&agent, None, "old", "db-0", &conf);
    assert_eq!((r.code, r.stdout), (0, None));

    // A StatefulSet pod comes back under the same name (same host interface name) while the
    // old sandbox's DEL arrives late: the new veth must survive.
    let new = Netns::new().unwrap();
    assert_eq!(add(&agent, &new, "new", "db-0", &conf).code, 0);
    let r = del(&agent, None, "old", "db-0", &conf);
    assert_eq!(r.code, 0);
    assert!(links(&node).contains(&host), "newer sandbox's veth kept");
    assert_eq!(
        ip_json(&node, &["-d", "link", "show", "dev", &host])[0]["ifalias"],
        "new"
    );
}

#[test]
fn two_pods_talk_through_the_host_v4_and_v6() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let (a, b) = (Netns::new().unwrap(), Netns::new().unwrap());
    // The node's own address, the source of its pings to pods.
    node.add_addr("lo", "192.0.2.10/32").unwrap();
    node.add_addr("lo", "2001:db8::10/128").unwrap();
    let agent = Agent::start(&node, true, 10);
    let conf = config("1.0.0", json!({}));
    let ra = add(&agent, &a, "ca", "a", &conf);
    let rb = add(&agent, &b, "cb", "b", &conf);
    assert_eq!((ra.code, rb.code), (0, 0), "{} {}", ra.raw, rb.raw);
    let addr = |r: &common::ShimRun, i: usize| {
        r.stdout.as_ref().unwrap()["ips"][i]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    for (from, to) in [
        (&a, addr(&rb, 0)),
        (&a, addr(&rb, 1)),
        (&b, addr(&ra, 0)),
        (&b, addr(&ra, 1)),
    ] {
        from.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &to])
            .unwrap_or_else(|e| panic!("ping {to}: {e}"));
    }
    // TCP both families, pod a → pod b.
    for to in [addr(&rb, 0), addr(&rb, 1)] {
        let bind = if to.contains(':') {
            format!("[{to}]:8080")
        } else {
            format!("{to}:8080")
        };
        let listener = tabby_netlab::in_netns(&b, || std::net::TcpListener::bind(&bind))
            .unwrap()
            .unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            (buf, peer.ip())
        });
        tabby_netlab::in_netns(&a, || {
            use std::io::Write;
            let mut c = std::net::TcpStream::connect_timeout(
                &bind.parse().unwrap(),
                std::time::Duration::from_secs(3),
            )
            .unwrap();
            c.write_all(b"meow").unwrap();
        })
        .unwrap();
        let (buf, peer) = server.join().unwrap();
        assert_eq!(&buf, b"meow");
        // The pod's own address is the source: no NAT on the way through the node.
        assert!(
            [addr(&ra, 0), addr(&ra, 1)].contains(&peer.to_string()),
            "{peer}"
        );
    }
    // The node reaches the pods too (host route via the veth).
    node.exec(&["ping", "-c", "1", "-W", "2", &addr(&ra, 0)])
        .unwrap();
    node.exec(&["ping", "-c", "1", "-W", "2", &addr(&ra, 1)])
        .unwrap();
}

#[test]
fn ipv6_only_pods() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    node.add_addr("lo", "2001:db8::10/128").unwrap();
    let (a, b) = (Netns::new().unwrap(), Netns::new().unwrap());
    let agent = Agent::start_families(&node, false, true, 10);
    let conf = config("1.1.0", json!({}));
    let ra = add(&agent, &a, "ca", "a6", &conf);
    let rb = add(&agent, &b, "cb", "b6", &conf);
    assert_eq!((ra.code, rb.code), (0, 0), "{} {}", ra.raw, rb.raw);
    let out = ra.stdout.unwrap();
    assert_eq!(
        out["ips"],
        json!([{"address": "fd77::1/128", "interface": 1}])
    );
    assert_eq!(
        out["routes"].as_array().unwrap().len(),
        1,
        "no IPv4 default route"
    );
    assert_eq!(out["routes"][0]["dst"], "::/0");
    assert!(
        ip_json(&a, &["-4", "route", "show"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    a.exec(&["ping", "-c", "1", "-W", "2", "fd77::2"]).unwrap();
    node.exec(&["ping", "-c", "1", "-W", "2", "fd77::1"])
        .unwrap();
    let r = check(&agent, &a, "ca", "a6", &out);
    assert_eq!((r.code, r.stdout), (0, None), "{}", r.raw);
}

#[test]
fn failed_add_leaves_nothing_behind() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let pod = Netns::new().unwrap();
    let agent = Agent::start(&node, true, 10);
    let conf = config("1.0.0", json!({}));
    // Someone else's route to the address the pod will get, on our metric (the IPv6 one, so
    // the IPv4 host route is already in place when ADD fails and must be rolled back).
    let foreign = "-6 route add blackhole fd77::1/128 proto static metric 50";
    node.ip(&foreign.split(' ').collect::<Vec<_>>()).unwrap();
    let r = add(&agent, &pod, "c1", "p", &conf);
    assert_eq!(r.code, 1, "{}", r.raw);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 100, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("fd77::1"), "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("does not replace"),
        "{out}"
    );
    // Nothing of ours left: no veth, no routes, no pod interface, no allocation; the foreign
    // route untouched.
    assert!(
        !links(&node).iter().any(|l| l.starts_with("tab")),
        "{:?}",
        links(&node)
    );
    assert!(tabby_routes(&node).is_empty(), "{:?}", tabby_routes(&node));
    assert_eq!(pod_links(&pod), vec!["lo".to_string()]);
    assert!(agent.handler.alloc.lock().unwrap().by_container.is_empty());
    let foreign = ip_json(&node, &["-6", "route", "show", "fd77::1/128"]);
    assert_eq!(foreign[0]["type"], "blackhole");

    // A netns that does not exist: invalid environment, nothing created.
    let mut env = pod_env("ADD", "c2", "/run/netns/does-not-exist", "default", "q");
    env.insert("CNI_IFNAME", "eth0".into());
    let r = shim(&agent.socket, &env_pairs(&env), &conf);
    assert_eq!(r.stdout.unwrap()["code"], 4);
    assert!(!links(&node).iter().any(|l| l.starts_with("tab")));

    // The pod's interface name already taken inside the pod: creation fails as a whole.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ])
    .unwrap();
    let r = add(&agent, &pod, "c3", "r", &conf);
    assert_eq!(r.code, 1, "{}", r.raw);
    assert!(!links(&node).iter().any(|l| l.starts_with("tab")));
    pod.ip(&["link", "del", "eth0"]).unwrap();

    // A foreign interface under the pod's host-side name is neither replaced nor deleted.
    let taken = host_ifname("default.s");
    node.ip(&["link", "add", &taken, "type", "bridge"]).unwrap();
    let r = add(&agent, &pod, "c4", "s", &conf);
    assert_eq!(r.stdout.unwrap()["code"], 100);
    assert_eq!(del(&agent, Some(&pod), "c4", "s", &conf).code, 0);
    assert!(links(&node).contains(&taken), "foreign interface kept");
    assert_eq!(pod_links(&pod), vec!["lo".to_string()]);

    // Once the conflict is gone the same pod gets the address that was rolled back.
    let foreign_del = "-6 route del blackhole fd77::1/128 metric 50";
    node.ip(&foreign_del.split(' ').collect::<Vec<_>>())
        .unwrap();
    let r = add(&agent, &pod, "c1", "p", &conf);
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(r.stdout.unwrap()["ips"][0]["address"], "10.77.0.1/32");
}

#[test]
fn mtu_configured_or_detected() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let uplink = Netns::new().unwrap();
    // The node's uplink has MTU 1450 and carries the default route.
    node.veth_to("up0", &uplink, "up0").unwrap();
    node.ip(&["link", "set", "up0", "mtu", "1450"]).unwrap();
    node.add_addr("up0", "192.0.2.2/24").unwrap();
    node.ip(&["route", "add", "default", "via", "192.0.2.1"])
        .unwrap();
    let agent = Agent::start(&node, false, 10);
    let (p1, p2) = (Netns::new().unwrap(), Netns::new().unwrap());
    let r = add(&agent, &p1, "c1", "m1", &config("1.1.0", json!({})));
    assert_eq!(r.stdout.unwrap()["interfaces"][1]["mtu"], 1450);
    assert_eq!(ip_json(&p1, &["link", "show", "eth0"])[0]["mtu"], 1450);
    let r = add(
        &agent,
        &p2,
        "c2",
        "m2",
        &config("1.1.0", json!({"mtu": 1300})),
    );
    assert_eq!(r.stdout.unwrap()["interfaces"][1]["mtu"], 1300);
    assert_eq!(ip_json(&p2, &["link", "show", "eth0"])[0]["mtu"], 1300);
    let host = host_ifname("default.m2");
    assert_eq!(ip_json(&node, &["link", "show", &host])[0]["mtu"], 1300);
}

#[test]
fn reconcile_and_gc_remove_only_orphans() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    node.add_addr("lo", "192.0.2.10/32").unwrap();
    let agent = Agent::start(&node, false, 10);
    let conf = config("1.1.0", json!({}));
    let (p1, p2) = (Netns::new().unwrap(), Netns::new().unwrap());
    assert_eq!(add(&agent, &p1, "live", "one", &conf).code, 0);
    assert_eq!(add(&agent, &p2, "dead", "two", &conf).code, 0);
    // A half-made veth (an ADD that died before naming its owner), and foreign interfaces.
    node.ip(&[
        "link",
        "add",
        "tab0123456789a",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
    ])
    .unwrap();
    node.ip(&[
        "link", "add", "tabby0", "type", "veth", "peer", "name", "x1",
    ])
    .unwrap();
    node.ip(&["link", "add", "tab0123456789b", "type", "bridge"])
        .unwrap();
    let gc = config(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]}),
    );
    let r = shim(&agent.socket, &[("CNI_COMMAND", "GC")], &gc);
    assert_eq!((r.code, r.stdout), (0, None), "{}", r.raw);
    let l: HashSet<String> = links(&node).into_iter().collect();
    assert!(l.contains(&host_ifname("default.one")), "live pod kept");
    assert!(!l.contains(&host_ifname("default.two")), "orphan removed");
    assert!(!l.contains("tab0123456789a"), "ownerless veth removed");
    assert!(
        l.contains("tabby0") && l.contains("tab0123456789b"),
        "not ours: kept"
    );
    assert_eq!(pod_links(&p2), vec!["lo".to_string()]);
    // The live pod still works after GC.
    node.exec(&["ping", "-c", "1", "-W", "2", "10.77.0.1"])
        .unwrap();
}

#[test]
fn many_concurrent_adds_get_unique_working_addresses() {
    if skip() {
        return;
    }
    const N: usize = 50;
    let node = Netns::new().unwrap();
    let agent = Agent::start(&node, true, 200);
    let pods: Vec<Netns> = (0..N).map(|_| Netns::new().unwrap()).collect();
    let conf = config("1.0.0", json!({}));
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let fds_before = open_fds();
    let results: Vec<common::ShimRun> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (agent, conf) = (&agent, &conf);
                s.spawn(move || add(agent, p, &format!("c{i}"), &format!("pod-{i}"), conf))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for r in &results {
        assert_eq!(r.code, 0, "{}", r.raw);
        for ip in r.stdout.as_ref().unwrap()["ips"].as_array().unwrap() {
            assert!(
                seen.insert(ip["address"].as_str().unwrap().to_string()),
                "duplicate {ip}"
            );
        }
    }
    assert_eq!(seen.len(), 2 * N);
    assert_eq!(tabby_routes(&node).len(), 2 * N);
    // Every pod reaches the first one, over both families.
    let first: Vec<String> = results[0].stdout.as_ref().unwrap()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for p in &pods[1..] {
        for to in &first {
            p.exec(&["ping", "-c", "1", "-W", "2", to]).unwrap();
        }
    }
    // And concurrent DELs (deleted in bulk by interface group) clean everything of ours and
    // nothing else.
    node.ip(&[
        "link", "add", "keep0", "type", "veth", "peer", "name", "keep1",
    ])
    .unwrap();
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (agent, conf) = (&agent, &conf);
            s.spawn(move || {
                let r = del(agent, Some(p), &format!("c{i}"), &format!("pod-{i}"), conf);
                assert_eq!(r.code, 0, "{}", r.raw);
            });
        }
    });
    assert!(tabby_routes(&node).is_empty());
    assert!(!links(&node).iter().any(|l| l.starts_with("tab")));
    assert!(links(&node).contains(&"keep0".to_string()));
    // Per-pod netlink sockets and netns handles are closed once each request is done.
    let settled = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        open_fds() <= fds_before + 2
    });
    assert!(settled, "fds: {} before, {} after", fds_before, open_fds());
}

#[test]
fn non_root_caller_is_refused() {
    if skip() {
        return;
    }
    let node = Netns::new().unwrap();
    let agent = Agent::start(&node, false, 10);
    // Open the door the directory and socket modes normally keep shut, to prove the
    // credential check stands on its own.
    let dir = agent.socket.parent().unwrap();
    std::fs::set_permissions(
        dir.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A copy of the shim that uid 65534 can execute.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("tabby-cni");
    std::fs::copy(common::shim_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();

    let pod = Netns::new().unwrap();
    let env = pod_env("ADD", "c1", &pod.path(), "default", "x");
    let mut cmd = Command::new(&bin);
    cmd.uid(65534).gid(65534);
    let r = shim_with(
        cmd,
        &agent.socket,
        &env_pairs(&env),
        &config("1.0.0", json!({})),
    );
    assert_eq!(r.code, 1, "{}", r.raw);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 102, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("uid 65534"), "{out}");
    assert_eq!(agent.stats.refused.load(Ordering::Relaxed), 1);
    assert_eq!(agent.stats.requests.load(Ordering::Relaxed), 0);
    assert!(!links(&node).iter().any(|l| l.starts_with("tab")));

    // Root still gets in.
    let r = shim(&agent.socket, &env_pairs(&env), &config("1.0.0", json!({})));
    assert_eq!(r.code, 0, "{}", r.raw);
}

#[test]
fn chained_with_the_reference_portmap_plugin() {
    if skip_unless_root_and(&["ip", "iptables", "/usr/lib/cni/portmap"]) {
        return;
    }
    let node = Netns::new().unwrap();
    let pod = Netns::new().unwrap();
    let agent = Agent::start(&node, false, 10);
    let runtime_config =
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let r = add(
        &agent,
        &pod,
        "c1",
        "web",
        &config("1.0.0", json!({"runtimeConfig": runtime_config})),
    );
    assert_eq!(r.code, 0, "{}", r.raw);
    let ours = r.stdout.unwrap();
    // portmap runs inside the node namespace, as the runtime would on the host.
    let portmap_conf = json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": runtime_config, "prevResult": ours
    })
    .to_string();
    let env = pod_env("ADD", "c1", &pod.path(), "default", "web");
    let mut cmd = node.command("/usr/lib/cni/portmap");
    cmd.env_clear();
    let pm = shim_with(cmd, &agent.socket, &env_pairs(&env), &portmap_conf);
    if pm.code != 0 {
        eprintln!(
            "SKIP: portmap could not run here ({}); chaining checked without it",
            pm.raw
        );
        return;
    }
    let final_result = pm.stdout.unwrap();
    // portmap passes the result through: Tabby's CHECK accepts the chain's final result.
    assert_eq!(final_result["ips"], ours["ips"]);
    let r = check(&agent, &pod, "c1", "web", &final_result);
    assert_eq!((r.code, r.stdout), (0, None), "{}", r.raw);
    // DEL in reverse order, both succeed.
    let mut env = pod_env("DEL", "c1", &pod.path(), "default", "web");
    env.insert("CNI_COMMAND", "DEL".into());
    let mut cmd = node.command("/usr/lib/cni/portmap");
    cmd.env_clear();
    let pm = shim_with(cmd, &agent.socket, &env_pairs(&env), &portmap_conf);
    assert_eq!(pm.code, 0, "{}", pm.raw);
    let r = del(
        &agent,
        Some(&pod),
        "c1",
        "web",
        &config("1.0.0", json!({"prevResult": final_result})),
    );
    assert_eq!((r.code, r.stdout), (0, None));
}
