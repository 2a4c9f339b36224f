//! Pods on one node through the agent's CNI service and the real `tabby-cni` binary: traffic
//! between pods (ICMP and TCP, IPv4 and IPv6), 50 concurrent ADDs, the service killed mid-ADD
//! and restarted (no duplicate, no leak after its reconcile), block exhaustion (code 11, then
//! success after DELs and cooldown). Root and network namespaces; skipped otherwise.

mod cni_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cni_common::*;
use serde_json::json;
use tabby_cni::datapath::host_ifname;
use tabby_netlab::in_netns;

fn add(lab: &Lab, pod: &PodNs) -> ShimRun {
    shim(&lab.socket, &pod.env("ADD"), &config("1.0.0", json!({})))
}

fn del(lab: &Lab, pod: &PodNs) -> ShimRun {
    shim(&lab.socket, &pod.env("DEL"), &config("1.0.0", json!({})))
}

/// A TCP echo of one line from `client` to `server` at `addr`.
fn tcp_exchange(client: &PodNs, server: &PodNs, addr: IpAddr) {
    let listener = in_netns(&server.ns, || {
        TcpListener::bind(SocketAddr::new(addr, 7000))
    })
    .unwrap()
    .expect("bind in pod");
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("echo");
        peer.ip()
    });
    let echoed = in_netns(&client.ns, || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, 7000), Duration::from_secs(5))
                .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    })
    .unwrap();
    assert_eq!(&echoed, b"hello");
    let peer = accept.join().unwrap();
    // No NAT between pods: the server sees the client pod's own address.
    let client_addrs: Vec<IpAddr> = {
        let v = ip_json(&client.ns, &["addr", "show", "dev", "eth0"]);
        v[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["scope"] == "global")
            .map(|a| a["local"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    assert!(
        client_addrs.contains(&peer),
        "server saw {peer}, pod has {client_addrs:?}"
    );
}

#[test]
fn pod_to_pod_icmp_and_tcp_over_ipv4_and_ipv6() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("v4", "10.98.0.0/16", 26, false);
    lab.pool("v6", "fd98::/64", 122, false);
    lab.block("10.98.0.0/26", "v4");
    lab.block("fd98::/122", "v6");
    let _agent = lab.agent(AgentCfg::default());
    let a = PodNs::new("pa");
    let b = PodNs::new("pb");
    let mut addrs = BTreeMap::new();
    for p in [&a, &b] {
        lab.pod_object(&p.name, json!({}));
        let r = add(&lab, p);
        assert_eq!(r.code, 0, "{}", r.raw);
        addrs.insert(p.name.clone(), result_addrs(&r.stdout.unwrap()));
    }
    for (from, to) in [(&a, &b), (&b, &a)] {
        for addr in &addrs[&to.name] {
            assert!(
                ping(&from.ns, *addr),
                "{} cannot ping {} at {addr}",
                from.name,
                to.name
            );
            tcp_exchange(from, to, *addr);
        }
    }
    // The node reaches them too (its host routes).
    for addr in addrs.values().flatten() {
        assert!(ping(&lab.node, *addr), "node cannot ping {addr}");
    }
    // After b's DEL, a no longer reaches b's old addresses; a still works.
    assert_eq!(del(&lab, &b).code, 0);
    for addr in &addrs["pb"] {
        assert!(!ping(&a.ns, *addr), "{addr} still answers after DEL");
    }
    assert!(ping(&lab.node, addrs["pa"][0]));
}

#[test]
fn fifty_concurrent_adds_get_unique_reachable_addresses() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("v4", "10.99.0.0/16", 26, false);
    lab.pool("v6", "fd99::/64", 122, false);
    lab.block("10.99.0.0/26", "v4");
    lab.block("fd99::/122", "v6");
    let agent = lab.agent(AgentCfg::default());
    let pods: Vec<PodNs> = (0..50).map(|i| PodNs::new(&format!("c-{i}"))).collect();
    for p in &pods {
        lab.pod_object(&p.name, json!({}));
    }
    let started = Instant::now();
    let runs: Vec<ShimRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| add(&lab, p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let mut seen = BTreeSet::new();
    for (p, r) in pods.iter().zip(&runs) {
        assert_eq!(r.code, 0, "{}: {}", p.name, r.raw);
        for a in result_addrs(r.stdout.as_ref().unwrap()) {
            assert!(seen.insert(a), "{a} given twice");
        }
    }
    assert_eq!(seen.len(), 100);
    // The API agrees (and holds no address twice).
    let allocs = lab.allocations();
    assert_eq!(allocs.len(), 100);
    assert_eq!(allocs.keys().copied().collect::<BTreeSet<_>>(), seen);
    assert_eq!(tab_links(&lab.node).len(), 50);
    // Every pod reachable from the node and from the first pod, both families.
    for a in &seen {
        assert!(ping(&lab.node, *a), "node cannot reach {a}");
    }
    for a in seen.iter().step_by(7) {
        assert!(ping(&pods[0].ns, *a), "pod c-0 cannot reach {a}");
    }
    let (p50, p99) = p50_p99(runs.iter().map(|r| r.elapsed).collect());
    eprintln!(
        "50 concurrent ADDs (dual-stack, kube-sim): wall {:.0} ms, per-ADD p50 {p50:.1} ms p99 {p99:.1} ms",
        wall.as_secs_f64() * 1e3
    );
    // Sequential DELs, timed.
    let mut dels = Vec::new();
    for p in &pods {
        let r = del(&lab, p);
        assert_eq!(r.code, 0, "{}", r.raw);
        dels.push(r.elapsed);
    }
    let (d50, d99) = p50_p99(dels);
    eprintln!("sequential DEL: p50 {d50:.1} ms p99 {d99:.1} ms");
    assert!(lab.allocations().is_empty());
    assert!(tab_links(&lab.node).is_empty());
    assert!(
        agent
            .service()
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 100
    );
}

#[test]
fn sequential_add_and_del_latency() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("v4", "10.100.0.0/16", 24, false);
    lab.block("10.100.0.0/24", "v4");
    let _agent = lab.agent(AgentCfg::default());
    let pods: Vec<PodNs> = (0..30).map(|i| PodNs::new(&format!("s-{i}"))).collect();
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for p in &pods {
        lab.pod_object(&p.name, json!({}));
        let r = add(&lab, p);
        assert_eq!(r.code, 0, "{}", r.raw);
        adds.push(r.elapsed);
    }
    for p in &pods {
        let r = del(&lab, p);
        assert_eq!(r.code, 0, "{}", r.raw);
        dels.push(r.elapsed);
    }
    let (a50, a99) = p50_p99(adds);
    let (d50, d99) = p50_p99(dels);
    eprintln!(
        "sequential, 30 pods, IPv4, through the shim binary: ADD p50 {a50:.1} ms p99 {a99:.1} ms; DEL p50 {d50:.1} ms p99 {d99:.1} ms"
    );
    // Generous bounds: a regression to seconds would fail, a loaded machine would not.
    assert!(
        a50 < 1000.0 && d50 < 1000.0,
        "ADD p50 {a50} ms, DEL p50 {d50} ms"
    );
}

#[test]
fn agent_killed_mid_add_then_restarted_leaves_no_duplicate_and_no_leak() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("v4", "10.101.0.0/16", 26, false);
    lab.pool("v6", "fd01:101::/64", 122, false);
    lab.block("10.101.0.0/26", "v4");
    lab.block("fd01:101::/122", "v6");
    let agent = lab.agent(AgentCfg::default());
    let pods: Vec<PodNs> = (0..20).map(|i| PodNs::new(&format!("k-{i}"))).collect();
    for p in &pods {
        lab.pod_object(&p.name, json!({}));
    }
    // 20 ADDs in flight; the agent dies under them once a few are through.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let runs: Vec<ShimRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| {
                let done = &done;
                let lab = &lab;
                s.spawn(move || {
                    let r = add(lab, p);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(std::sync::atomic::Ordering::SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        agent.kill();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<&PodNs> = pods
        .iter()
        .zip(&runs)
        .filter(|(_, r)| r.code != 0)
        .map(|(p, _)| p)
        .collect();
    eprintln!(
        "{} of 20 ADDs failed when the agent was killed",
        failed.len()
    );
    // Whatever the kill left: no address twice (`allocations` panics otherwise).
    let _ = lab.allocations();

    // Restart: the reconcile removes half-built interfaces and releases what no live pod holds.
    let agent = lab.agent(AgentCfg::default());
    let report = agent.service().start_report().clone();
    eprintln!("restart reconcile: {report:?}");
    let after: BTreeMap<String, BTreeSet<IpAddr>> =
        lab.allocations()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (a, h)| {
                m.entry(h).or_default().insert(a);
                m
            });
    let owners: BTreeSet<String> = after.keys().cloned().collect();
    let links = tab_links(&lab.node);
    // Every interface left has an allocation and vice versa (nothing leaked either way).
    assert_eq!(
        links.len(),
        owners.len(),
        "links {links:?} vs owners {owners:?}"
    );
    for p in &pods {
        let has_link = links.contains(&host_ifname(&format!("default.{}", p.name)));
        assert_eq!(has_link, owners.contains(&p.container), "{}", p.name);
    }
    // Successful ADDs before the kill kept their addresses.
    for (p, r) in pods.iter().zip(&runs) {
        if r.code == 0 {
            let want: BTreeSet<IpAddr> = result_addrs(r.stdout.as_ref().unwrap())
                .into_iter()
                .collect();
            assert_eq!(
                after.get(&p.container),
                Some(&want),
                "{} lost its addresses",
                p.name
            );
        }
    }
    // The runtime retries the failed ones (DEL, then ADD): all succeed, all unique, reachable.
    for p in &failed {
        assert_eq!(del(&lab, p).code, 0);
        let r = add(&lab, p);
        assert_eq!(r.code, 0, "{}: {}", p.name, r.raw);
    }
    let allocs = lab.allocations();
    assert_eq!(allocs.len(), 40, "{allocs:?}");
    assert_eq!(tab_links(&lab.node).len(), 20);
    for a in allocs.keys() {
        assert!(ping(&lab.node, *a), "{a} unreachable after the restart");
    }
    drop(agent);
}

#[test]
fn block_exhaustion_fails_with_11_then_recovers_after_dels_and_cooldown() {
    if skip() {
        return;
    }
    let lab = Lab::new();
    lab.pool("small", "10.102.0.0/28", 28, false);
    lab.block("10.102.0.0/28", "small");
    let cooldown = Duration::from_secs(5);
    let _agent = lab.agent(AgentCfg {
        block_wait: Duration::from_millis(500),
        cooldown,
    });
    let pods: Vec<PodNs> = (0..17).map(|i| PodNs::new(&format!("x-{i}"))).collect();
    for p in &pods {
        lab.pod_object(&p.name, json!({}));
    }
    for p in &pods[..16] {
        let r = add(&lab, p);
        assert_eq!(r.code, 0, "{}: {}", p.name, r.raw);
    }
    let last = &pods[16];
    let started = Instant::now();
    let r = add(&lab, last);
    let waited = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.raw);
    let out = r.stdout.unwrap();
    assert_eq!(out["code"], 11, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("no IPv4 address available yet") && msg.contains("waited"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_millis(500),
        "gave up after {waited:?}, before block_wait"
    );
    assert!(
        tab_links(&lab.node).len() == 16,
        "the failed ADD left an interface"
    );
    // Two DELs: their addresses cool down first; a retry within the cooldown still gets 11
    // (the API's timestamps have second precision: at least cooldown − 1 s is left).
    let released_at = Instant::now();
    for p in &pods[..2] {
        assert_eq!(del(&lab, p).code, 0);
    }
    let r = add(&lab, last);
    assert!(
        released_at.elapsed() < cooldown - Duration::from_secs(1),
        "the machine is too slow for this check"
    );
    assert_eq!(
        r.stdout.as_ref().map(|o| o["code"].clone()),
        Some(json!(11)),
        "{}",
        r.raw
    );
    std::thread::sleep(
        (cooldown + Duration::from_millis(200)).saturating_sub(released_at.elapsed()),
    );
    let r = add(&lab, last);
    assert_eq!(r.code, 0, "{}", r.raw);
    assert_eq!(lab.allocations().len(), 15);
}
