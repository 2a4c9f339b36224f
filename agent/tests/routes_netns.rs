//! The route reconciler against a real kernel, in network namespaces (root only; skips
//! otherwise). `node` is the namespace whose routes are managed; `peers` holds the other ends of
//! two veths, so next hops 10.0.1.2 / 10.0.2.2 (and fd00:1::2 / fd00:2::2) are neighbours.
//! Assertions read the table with `ip route`, independently of our own netlink parser.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tabby_agent::routes::{
    Config, NextHop, Reconciler, ReconcilerHandle, RouteKey, RouteSocket, TABBY_RT_PROTO,
};
use tabby_netlab::{Netns, in_netns, skip_unless_root_and, spawn_in_netns};

struct Lab {
    node: Netns,
    _peers: Netns,
}

fn lab() -> Lab {
    let node = Netns::new().unwrap();
    let peers = Netns::new().unwrap();
    node.veth_to("eth1", &peers, "p1").unwrap();
    node.veth_to("eth2", &peers, "p2").unwrap();
    for (dev, v4, v6) in [
        ("eth1", "10.0.1.1/24", "fd00:1::1/64"),
        ("eth2", "10.0.2.1/24", "fd00:2::1/64"),
    ] {
        node.add_addr(dev, v4).unwrap();
        node.add_addr(dev, v6).unwrap();
    }
    for (dev, v4, v6) in [
        ("p1", "10.0.1.2/24", "fd00:1::2/64"),
        ("p2", "10.0.2.2/24", "fd00:2::2/64"),
    ] {
        peers.add_addr(dev, v4).unwrap();
        peers.add_addr(dev, v6).unwrap();
    }
    Lab {
        node,
        _peers: peers,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn via(hops: &[&str]) -> Vec<NextHop> {
    hops.iter()
        .map(|h| NextHop::via(h.parse().unwrap()))
        .collect()
}

/// `ip route show` lines (both families) for one selector, e.g. `proto 84`.
fn routes(ns: &Netns, selector: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let mut args = vec![fam, "route", "show", "table", "main"];
        args.extend_from_slice(selector);
        let text = ns.ip(&args).unwrap();
        // Multipath routes span several lines; join continuation lines onto their route.
        for line in text.lines() {
            if line.starts_with(|c: char| c.is_whitespace()) {
                if let Some(last) = out.last_mut() {
                    let last: &mut String = last;
                    last.push(' ');
                    last.push_str(line.trim());
                }
            } else {
                out.push(line.trim().to_string());
            }
        }
    }
    out
}

fn ours(ns: &Netns) -> Vec<String> {
    routes(ns, &["proto", &TABBY_RT_PROTO.to_string()])
}

fn find<'a>(lines: &'a [String], prefix: &str) -> Option<&'a String> {
    lines
        .iter()
        .find(|l| l.split_whitespace().any(|w| w == prefix))
}

fn has(lines: &[String], prefix: &str, words: &[&str]) -> bool {
    find(lines, prefix).is_some_and(|l| words.iter().all(|w| l.contains(w)))
}

#[test]
fn add_replace_delete_ecmp_blackholes_both_families() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    in_netns(node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        r.set_own_blocks([net("10.10.0.0/26"), net("fd00:10::/122")]);
        r.update(net("10.20.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("10.30.0.0/26"), via(&["10.0.2.2", "10.0.1.2"]))
            .unwrap();
        r.update(net("fd00:20::/64"), via(&["fd00:1::2", "fd00:2::2"]))
            .unwrap();
        r.update(net("fd00:30::/64"), via(&["fd00:2::2"])).unwrap();
        let rep = r.reconcile().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (6, 0, 0), "{rep:?}");
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        let mut sock = RouteSocket::new(TABBY_RT_PROTO).unwrap();
        assert_eq!(sock.count(254, TABBY_RT_PROTO).unwrap(), 6);
        assert_eq!(sock.count(254, 4).unwrap(), 0, "no static routes here");
        assert!(
            sock.count(254, 2).unwrap() >= 2,
            "the veth subnets' kernel routes"
        );
        let m = r.metrics();
        assert_eq!(m.routes_v4.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(m.routes_v6.load(std::sync::atomic::Ordering::Relaxed), 3);

        let got = ours(node);
        assert!(
            has(&got, "blackhole", &["10.10.0.0/26", "metric 50"]),
            "{got:#?}"
        );
        assert!(
            has(&got, "10.20.0.0/26", &["via 10.0.1.2", "dev eth1"]),
            "{got:#?}"
        );
        assert!(
            has(&got, "10.30.0.0/26", &["via 10.0.1.2", "via 10.0.2.2"]),
            "ECMP: {got:#?}"
        );
        assert!(
            has(&got, "fd00:20::/64", &["via fd00:1::2", "via fd00:2::2"]),
            "IPv6 ECMP: {got:#?}"
        );
        assert!(
            got.iter().any(|l| l.contains("blackhole fd00:10::/122")),
            "{got:#?}"
        );

        // Nothing changed: nothing to do (the ECMP order we gave differs from the kernel's).
        r.update(net("10.30.0.0/26"), via(&["10.0.1.2", "10.0.2.2"]))
            .unwrap();
        let rep = r.reconcile().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0));

        // Replace: next hop moves, ECMP shrinks, blackhole <-> unicast both ways, IPv6 too.
        r.update(net("10.20.0.0/26"), via(&["10.0.2.2"])).unwrap();
        r.update(net("10.30.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("fd00:20::/64"), via(&["fd00:2::2"])).unwrap();
        r.set_own_blocks([net("10.20.0.0/26"), net("fd00:30::/64")]);
        r.update(net("10.10.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("fd00:10::/122"), via(&["fd00:1::2"])).unwrap();
        let rep = r.reconcile().unwrap();
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 6, 0), "{rep:?}");
        let got = ours(node);
        assert!(
            got.iter().any(|l| l.contains("blackhole 10.20.0.0/26")),
            "{got:#?}"
        );
        assert!(has(&got, "10.10.0.0/26", &["via 10.0.1.2"]), "{got:#?}");
        let ecmp = find(&got, "10.30.0.0/26").unwrap();
        assert!(
            ecmp.contains("via 10.0.1.2") && !ecmp.contains("10.0.2.2"),
            "{ecmp}"
        );
        let v6 = find(&got, "fd00:20::/64").unwrap();
        assert!(
            v6.contains("via fd00:2::2") && !v6.contains("fd00:1::2"),
            "{v6}"
        );
        assert!(
            got.iter().any(|l| l.contains("blackhole fd00:30::/64")),
            "{got:#?}"
        );
        assert_eq!(got.len(), 6, "no duplicate route left behind: {got:#?}");

        // Delete: withdraw everything.
        r.set_own_blocks([]);
        // 10.20.0.0/26 and fd00:30::/64 fall back to their learned routes: withdraw those too.
        for p in [
            "10.10.0.0/26",
            "10.20.0.0/26",
            "10.30.0.0/26",
            "fd00:10::/122",
            "fd00:20::/64",
            "fd00:30::/64",
        ] {
            r.update(net(p), vec![]).unwrap();
        }
        let rep = r.reconcile().unwrap();
        assert_eq!(rep.deleted, 6, "{rep:?}");
        assert!(ours(node).is_empty(), "{:#?}", ours(node));
        // The routes the kernel made for the veth subnets are untouched.
        assert!(!routes(node, &["proto", "kernel"]).is_empty());
    })
    .unwrap();
}

#[test]
fn foreign_routes_same_or_overlapping_prefix_are_never_touched() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    // Same key as ours (metric 50), same prefix at another metric, an overlapping aggregate,
    // and IPv6 on our key.
    for cmd in [
        "route add 10.40.0.0/26 via 10.0.1.2 proto static metric 50",
        "route add 10.41.0.0/26 via 10.0.2.2 proto static",
        "route add blackhole 10.40.0.0/16 proto boot",
        "-6 route add fd00:40::/64 via fd00:1::2 proto static metric 50",
    ] {
        node.ip(&cmd.split_whitespace().collect::<Vec<_>>())
            .unwrap();
    }
    let before = routes(node, &[]);
    in_netns(node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        assert_eq!(r.status().retained, 0, "nothing of ours to adopt");
        r.update(net("10.40.0.0/26"), via(&["10.0.2.2"])).unwrap();
        r.update(net("10.41.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("10.40.1.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("fd00:40::/64"), via(&["fd00:2::2"])).unwrap();
        let rep = r.reconcile().unwrap();
        let k = |p: &str| RouteKey::new(net(p), 254, 50);
        assert_eq!(rep.conflicts, vec![k("10.40.0.0/26"), k("fd00:40::/64")]);
        assert_eq!(rep.added, 2, "beside the foreign routes: {rep:?}");
        assert_eq!(r.status().conflicts.len(), 2);
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);

        // A full resync and a sweep with nothing desired remove only ours.
        r.resync().unwrap();
        for p in [
            "10.40.0.0/26",
            "10.41.0.0/26",
            "10.40.1.0/26",
            "fd00:40::/64",
        ] {
            r.update(net(p), vec![]).unwrap();
        }
        r.sweep().unwrap();
    })
    .unwrap();
    assert!(ours(node).is_empty(), "{:#?}", ours(node));
    assert_eq!(
        routes(node, &[]),
        before,
        "foreign routes exactly as they were"
    );
}

/// A speaker restarted in process: everything installed is retained, the old speaker's
/// learned routes stop being desired, the new speaker re-learns one of the two; nothing is
/// touched until the sweep, which removes only the route nobody re-learned.
#[test]
fn retained_across_a_speaker_restart_until_the_sweep() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    in_netns(node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        r.set_own_blocks([net("10.10.0.0/26")]);
        r.update(net("10.30.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("10.50.0.0/26"), via(&["10.0.2.2"])).unwrap();
        assert_eq!(r.reconcile().unwrap().added, 3);
        assert_eq!(r.retain_installed(), 3);
        let rep = r.resync().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0), "{rep:?}");
        r.update(net("10.30.0.0/26"), via(&["10.0.1.2"])).unwrap();
        let rep = r.reconcile().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0), "{rep:?}");
        let rep = r.sweep().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 1), "{rep:?}");
    })
    .unwrap();
    let left = ours(node);
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(
        !left.iter().any(|l| l.contains("10.50.0.0/26")),
        "{left:#?}"
    );
}

#[test]
fn adoption_after_restart_keeps_everything_and_rewrites_nothing() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    let desired = |r: &mut Reconciler| {
        r.set_own_blocks([net("10.10.0.0/26"), net("fd00:10::/122")]);
        r.update(net("10.30.0.0/26"), via(&["10.0.1.2", "10.0.2.2"]))
            .unwrap();
        r.update(net("10.50.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("fd00:20::/64"), via(&["fd00:1::2", "fd00:2::2"]))
            .unwrap();
    };
    in_netns(node, || {
        let mut first = Reconciler::new(Config::default()).unwrap();
        desired(&mut first);
        assert_eq!(first.reconcile().unwrap().added, 5);
        // "Exit": dropping the reconciler must not flush anything.
    })
    .unwrap();
    let before = ours(node);
    assert_eq!(before.len(), 5, "{before:#?}");

    in_netns(node, || {
        let mut second = Reconciler::new(Config::default()).unwrap();
        assert_eq!(second.status().retained, 5);
        assert_eq!(second.status().routes_v4 + second.status().routes_v6, 5);
        // BGP has re-learned all but 10.50.0.0/26 so far: nothing is rewritten or deleted.
        second.set_own_blocks([net("10.10.0.0/26"), net("fd00:10::/122")]);
        second
            .update(net("10.30.0.0/26"), via(&["10.0.2.2", "10.0.1.2"]))
            .unwrap();
        second
            .update(net("fd00:20::/64"), via(&["fd00:2::2", "fd00:1::2"]))
            .unwrap();
        let rep = second.reconcile().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0), "{rep:?}");
        let rep = second.resync().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0), "{rep:?}");
        assert_eq!(
            second.status().retained,
            1,
            "10.50.0.0/26 waits for the sweep"
        );
        // Deleted by someone while retained: put back as it was (GR keeps forwarding on it).
        node.ip(&["route", "del", "10.50.0.0/26"]).unwrap();
        let rep = second.resync().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (1, 0, 0), "{rep:?}");
        // End-of-RIB: the stale route goes, nothing else.
        let rep = second.sweep().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 1), "{rep:?}");
    })
    .unwrap();
    let after = ours(node);
    let expected: Vec<String> = before
        .into_iter()
        .filter(|l| !l.contains("10.50.0.0/26"))
        .collect();
    assert_eq!(after, expected);
}

#[test]
fn deleted_route_is_restored_and_exit_does_not_flush() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    let (tx, rx) = std::sync::mpsc::channel();
    let loop_thread = spawn_in_netns(node, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let r = Reconciler::new(Config::default()).unwrap();
            let (handle, commands) = ReconcilerHandle::new(&r);
            tx.send(handle).unwrap();
            r.run(commands).await
        })
    })
    .unwrap();
    let handle = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
        .update(net("10.60.0.0/26"), via(&["10.0.1.2"]))
        .unwrap();
    handle
        .update(net("fd00:60::/64"), via(&["fd00:1::2", "fd00:2::2"]))
        .unwrap();
    handle.set_own_blocks(vec![net("10.10.0.0/26")]).unwrap();
    let wait_for = |what: &str, f: &dyn Fn(&[String]) -> bool| {
        let start = Instant::now();
        loop {
            let got = ours(node);
            if f(&got) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: {got:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("three routes programmed", &|g| g.len() == 3);

    // Someone deletes our routes (with and without naming our protocol): they come back.
    node.ip(&["route", "del", "10.60.0.0/26"]).unwrap();
    node.ip(&["-6", "route", "del", "fd00:60::/64", "proto", "84"])
        .unwrap();
    node.ip(&["route", "del", "blackhole", "10.10.0.0/26"])
        .unwrap();
    let took = wait_for("restored", &|g| {
        has(g, "10.60.0.0/26", &["via 10.0.1.2"])
            && has(g, "fd00:60::/64", &["fd00:1::2", "fd00:2::2"])
            && g.iter().any(|l| l.contains("blackhole 10.10.0.0/26"))
    });
    eprintln!("restored in {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "restoring is notification-driven, not timer-driven"
    );
    assert!(
        handle
            .metrics()
            .restored
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );

    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(handle.status())
        .unwrap();
    assert_eq!(status.routes_v4, 2);
    assert_eq!(status.routes_v6, 1);
    // A sweep through the loop: everything is desired, nothing goes.
    let swept = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(handle.sweep())
        .unwrap()
        .unwrap();
    assert_eq!((swept.added, swept.deleted), (0, 0), "{swept:?}");

    // Exit: dropping the last handle ends the loop; the routes stay.
    drop(handle);
    loop_thread.join().unwrap().unwrap().unwrap();
    assert_eq!(ours(node).len(), 3, "{:#?}", ours(node));
}

#[test]
fn refused_routes_are_reported_in_words_and_others_still_go_in() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    in_netns(&lab.node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        // Not a neighbour: the kernel answers ENETUNREACH for this one only.
        r.update(net("10.70.0.0/26"), via(&["192.0.2.1"])).unwrap();
        r.update(net("10.71.0.0/26"), via(&["10.0.1.2"])).unwrap();
        r.update(net("fd00:70::/64"), via(&["2001:db8::1"]))
            .unwrap();
        let rep = r.reconcile().unwrap();
        assert_eq!(rep.added, 1, "{rep:?}");
        let failed: HashSet<String> = rep
            .failed
            .iter()
            .map(|(k, _)| k.prefix.to_string())
            .collect();
        assert_eq!(
            failed,
            ["10.70.0.0/26".to_string(), "fd00:70::/64".to_string()].into()
        );
        for (k, why) in &rep.failed {
            assert!(
                // ENETUNREACH (IPv4) / EHOSTUNREACH (IPv6), in words.
                why.contains("unreachable") || why.contains("No route to host"),
                "{k}: {why}"
            );
        }
        assert_eq!(r.status().failures.len(), 2);
        assert_eq!(
            r.metrics()
                .netlink_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        // Once fixed, the failure clears.
        r.update(net("10.70.0.0/26"), via(&["10.0.2.2"])).unwrap();
        r.update(net("fd00:70::/64"), vec![]).unwrap();
        let rep = r.reconcile().unwrap();
        assert_eq!(rep.added, 1);
        assert!(
            r.status()
                .failures
                .iter()
                .all(|(k, _)| k.prefix != net("10.70.0.0/26"))
        );
    })
    .unwrap();
}

#[test]
fn pod_host_route_over_a_veth_inside_the_blackholed_block() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    // The interface index as the kernel reports it, read with `ip` (JSON) rather than our code.
    let links: serde_json::Value =
        serde_json::from_str(&node.ip(&["-j", "link", "show", "eth2"]).unwrap()).unwrap();
    let ifindex = links[0]["ifindex"].as_u64().unwrap() as u32;
    in_netns(node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        r.set_own_blocks([net("10.10.0.0/26"), net("fd00:10::/122")]);
        r.set_pod_route(net("10.10.0.5/32"), ifindex);
        r.set_pod_route(net("fd00:10::5/128"), ifindex);
        let rep = r.reconcile().unwrap();
        assert_eq!(rep.added, 4, "{rep:?}");
        assert!(rep.failed.is_empty(), "{:?}", rep.failed);
        let got = ours(node);
        assert!(
            has(&got, "10.10.0.5", &["dev eth2", "scope link"]),
            "{got:#?}"
        );
        assert!(has(&got, "fd00:10::5", &["dev eth2"]), "{got:#?}");
        // The kernel picks the /32 over the blackhole for the pod, the blackhole for the rest.
        let pod = node.ip(&["route", "get", "10.10.0.5"]).unwrap();
        assert!(pod.contains("dev eth2"), "{pod}");
        let other = node.ip(&["route", "get", "10.10.0.6"]);
        assert!(
            other.as_ref().is_err() || other.as_ref().unwrap().contains("blackhole"),
            "{other:?}"
        );
        // Pod gone: its route goes, the block's blackhole stays.
        r.remove_pod_route(net("10.10.0.5/32"));
        r.remove_pod_route(net("fd00:10::5/128"));
        let rep = r.reconcile().unwrap();
        assert_eq!(rep.deleted, 2, "{rep:?}");
        assert_eq!(ours(node).len(), 2, "{:#?}", ours(node));
    })
    .unwrap();
}

/// The CNI datapath writes a pod's host route itself (proto 84, metric 50) and then tells the
/// reconciler. If the reconciler has not seen the notification yet, its add meets EEXIST; the
/// re-read finds the route it wanted, so nothing is left reported as failing.
#[test]
fn a_pod_route_written_before_we_were_told_is_not_a_failure() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let node = &lab.node;
    in_netns(node, || {
        let mut r = Reconciler::new(Config::default()).unwrap();
        r.reconcile().unwrap();
        node.ip(&[
            "route",
            "add",
            "10.10.0.7/32",
            "dev",
            "eth2",
            "scope",
            "link",
            "proto",
            "84",
            "metric",
            "50",
        ])
        .unwrap();
        let links: serde_json::Value =
            serde_json::from_str(&node.ip(&["-j", "link", "show", "eth2"]).unwrap()).unwrap();
        let ifindex = links[0]["ifindex"].as_u64().unwrap() as u32;
        r.set_pod_route(net("10.10.0.7/32"), ifindex);
        let _ = r.reconcile().unwrap();
        let st = r.status();
        assert!(st.failures.is_empty(), "{:?}", st.failures);
        assert_eq!(ours(node).len(), 1, "{:#?}", ours(node));
        // Later passes have nothing to do.
        let rep = r.reconcile().unwrap();
        assert_eq!((rep.added, rep.replaced, rep.deleted), (0, 0, 0), "{rep:?}");
        assert!(r.status().failures.is_empty());
    })
    .unwrap();
}

/// Adoption at scale: dumps span many datagrams, and a restarted reconciler given the same
/// desired state writes nothing.
#[test]
fn adoption_of_twenty_thousand_routes_rewrites_nothing() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let lab = lab();
    let desired = || {
        let mut d = tabby_agent::routes::Desired::new();
        for i in 0..10_000u32 {
            let v4 = IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a40_0000 + (i << 6)), 26).unwrap(),
            );
            let v6 = IpNet::V6(
                ipnet::Ipv6Net::new(
                    std::net::Ipv6Addr::from((0xfd00_0040_u128 << 96) | (u128::from(i) << 64)),
                    64,
                )
                .unwrap(),
            );
            let hops4 = if i % 2 == 0 {
                via(&["10.0.1.2"])
            } else {
                via(&["10.0.1.2", "10.0.2.2"])
            };
            d.update(v4, hops4).unwrap();
            d.update(v6, via(&["fd00:1::2", "fd00:2::2"])).unwrap();
        }
        d
    };
    in_netns(&lab.node, || {
        let mut first = Reconciler::new(Config::default()).unwrap();
        first.set_desired(desired());
        let rep = first.reconcile().unwrap();
        assert_eq!(rep.added, 20_000, "failed: {:?}", rep.failed.first());
        drop(first);

        let t = Instant::now();
        let mut second = Reconciler::new(Config::default()).unwrap();
        let adopted = t.elapsed();
        let st = second.status();
        assert_eq!(
            (st.routes_v4, st.routes_v6, st.retained),
            (10_000, 10_000, 20_000)
        );
        second.set_desired(desired());
        let rep = second.reconcile().unwrap();
        assert_eq!(
            (rep.added, rep.replaced, rep.deleted),
            (0, 0, 0),
            "first difference: {:?}",
            rep.failed.first()
        );
        assert_eq!(second.status().retained, 0);
        eprintln!("adopted 20,000 routes in {adopted:?}");
        let mut sock = RouteSocket::new(TABBY_RT_PROTO).unwrap();
        assert_eq!(sock.count(254, TABBY_RT_PROTO).unwrap(), 20_000);
    })
    .unwrap();
}
