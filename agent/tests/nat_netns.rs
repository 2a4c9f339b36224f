//! natOutgoing in network namespaces: a node with two pods (pod A in a `natOutgoing` pool,
//! pod B in a pool without it) and an "outside" namespace beyond the node's uplink. A TCP
//! server outside records who connects: pod A must arrive as the node's uplink address, pod B
//! as itself, over IPv4 and IPv6. The table is restored after someone deletes it, rewritten
//! after someone edits it, removed when the pool stops asking for NAT, and another program's
//! nftables table is never touched. Root, `nft` and `ip`; skipped otherwise.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tabby_agent::nat::{NatAction, NatOutgoing, TABLE, normalize};
use tabby_api::v1alpha1::{IPPool, IPPoolSpec};
use tabby_cni::datapath::{Datapath, PodSpec, host_ifname};
use tabby_netlab::{Netns, in_netns, skip_unless_root_and};

fn pool(name: &str, cidr: &str, nat: bool) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            block_size: None,
            node_selector: None,
            disabled: false,
            nat_outgoing: nat,
            disable_bgp_export: false,
        },
    )
}

fn pools(a_nat: bool) -> Vec<IPPool> {
    vec![
        pool("nat-a4", "10.90.0.0/16", a_nat),
        pool("nat-a6", "fd90::/64", a_nat),
        pool("plain-b4", "10.91.0.0/16", false),
        pool("plain-b6", "fd91::/64", false),
    ]
}

/// The source address the outside server sees when `client` connects to `dst`.
fn seen_from(client: &Netns, outside: &Netns, dst: IpAddr) -> IpAddr {
    let listener = in_netns(outside, || TcpListener::bind(SocketAddr::new(dst, 0)))
        .unwrap()
        .expect("bind outside");
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut sink = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.read_to_end(&mut sink);
        peer.ip()
    });
    in_netns(client, || {
        TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))
            .expect("connect to the outside")
    })
    .unwrap();
    accept.join().unwrap()
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut a = vec!["nft"];
    a.extend_from_slice(args);
    ns.exec(&a).unwrap()
}

fn foreign_listing(ns: &Netns) -> Value {
    normalize(&serde_json::from_str(&nft(ns, &["-j", "list", "table", "inet", "foreign"])).unwrap())
}

fn our_table_exists(ns: &Netns) -> bool {
    ns.exec(&["nft", "list", "table", "inet", TABLE]).is_ok()
}

#[test]
fn nat_outgoing_masquerades_only_its_pools_and_owns_only_its_table() {
    if skip_unless_root_and(&["ip", "nft"]) {
        return;
    }
    let node = Netns::new().unwrap();
    let outside = Netns::new().unwrap();
    node.veth_to("uplink", &outside, "eth0").unwrap();
    node.add_addr("uplink", "192.0.2.1/24").unwrap();
    node.add_addr("uplink", "2001:db8:1::1/64").unwrap();
    outside.add_addr("eth0", "192.0.2.2/24").unwrap();
    outside.add_addr("eth0", "2001:db8:1::2/64").unwrap();
    // Un-NATed pods must be routable back from outside, as through a BGP-fed fabric.
    for (net, via) in [
        ("10.90.0.0/16", "192.0.2.1"),
        ("10.91.0.0/16", "192.0.2.1"),
        ("fd90::/64", "2001:db8:1::1"),
        ("fd91::/64", "2001:db8:1::1"),
    ] {
        outside.ip(&["route", "add", net, "via", via]).unwrap();
    }
    // Another program's table, which must come through untouched.
    nft(&node, &["add", "table", "inet", "foreign"]);
    nft(
        &node,
        &[
            "add",
            "chain",
            "inet",
            "foreign",
            "filt",
            "{ type filter hook forward priority 10; policy accept; }",
        ],
    );
    nft(
        &node,
        &[
            "add",
            "rule",
            "inet",
            "foreign",
            "filt",
            "ip",
            "daddr",
            "203.0.113.9",
            "drop",
        ],
    );
    let foreign_before = foreign_listing(&node);

    // Two pods plumbed by the real datapath.
    let pod_a = Netns::new().unwrap();
    let pod_b = Netns::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dp = Datapath::new(Some(Path::new(&node.path())), None)
            .await
            .unwrap();
        for (ns, key, addrs) in [
            (&pod_a, "nat.a", ["10.90.0.5", "fd90::5"]),
            (&pod_b, "nat.b", ["10.91.0.5", "fd91::5"]),
        ] {
            dp.add(&PodSpec {
                container_id: format!("ctr-{key}"),
                netns: ns.path().into(),
                ifname: "eth0".into(),
                host_ifname: host_ifname(key),
                addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                mtu: None,
            })
            .await
            .unwrap();
        }
    });

    let out4: IpAddr = "192.0.2.2".parse().unwrap();
    let out6: IpAddr = "2001:db8:1::2".parse().unwrap();
    let node4: IpAddr = "192.0.2.1".parse().unwrap();
    let node6: IpAddr = "2001:db8:1::1".parse().unwrap();
    let mut nat = NatOutgoing::new().expect("nft runs");
    let mut apply = |p: &[IPPool]| in_netns(&node, || nat.apply(p)).unwrap().expect("apply");

    let r = apply(&pools(true));
    assert_eq!(r.action, NatAction::Created);
    assert_eq!(
        r.masqueraded
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        ["10.90.0.0/16", "fd90::/64"]
    );
    assert_eq!(apply(&pools(true)).action, NatAction::Unchanged);
    // Pod A leaves with the node's address, pod B with its own; both families.
    assert_eq!(seen_from(&pod_a, &outside, out4), node4);
    assert_eq!(seen_from(&pod_a, &outside, out6), node6);
    assert_eq!(
        seen_from(&pod_b, &outside, out4),
        "10.91.0.5".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        seen_from(&pod_b, &outside, out6),
        "fd91::5".parse::<IpAddr>().unwrap()
    );
    // Pod to pod across pools: never masqueraded.
    let pod_a_seen_by_b = {
        let l = in_netns(&pod_b, || TcpListener::bind("10.91.0.5:0"))
            .unwrap()
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || l.accept().unwrap().1.ip());
        in_netns(&pod_a, || {
            TcpStream::connect_timeout(
                &SocketAddr::new("10.91.0.5".parse().unwrap(), port),
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .unwrap();
        t.join().unwrap()
    };
    assert_eq!(pod_a_seen_by_b, "10.90.0.5".parse::<IpAddr>().unwrap());

    // Someone deletes our table: restored on the next pass.
    nft(&node, &["delete", "table", "inet", TABLE]);
    assert_eq!(apply(&pools(true)).action, NatAction::Restored);
    assert_eq!(seen_from(&pod_a, &outside, out4), node4);
    // Someone adds a rule to our chain: rewritten (their rule gone).
    nft(
        &node,
        &[
            "add",
            "rule",
            "inet",
            TABLE,
            "postrouting",
            "ip",
            "saddr",
            "10.91.0.0/16",
            "masquerade",
        ],
    );
    assert_eq!(apply(&pools(true)).action, NatAction::Replaced);
    assert!(!nft(&node, &["list", "table", "inet", TABLE]).contains("10.91.0.0/16 masquerade"));
    assert_eq!(
        seen_from(&pod_b, &outside, out4),
        "10.91.0.5".parse::<IpAddr>().unwrap()
    );

    // The pool stops asking for NAT: table removed, pod A keeps its own address.
    assert_eq!(apply(&pools(false)).action, NatAction::Removed);
    assert!(!our_table_exists(&node));
    assert_eq!(
        seen_from(&pod_a, &outside, out4),
        "10.90.0.5".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        seen_from(&pod_a, &outside, out6),
        "fd90::5".parse::<IpAddr>().unwrap()
    );
    assert_eq!(apply(&pools(false)).action, NatAction::Absent);

    // Through all of it, the other program's table is exactly as it was.
    assert_eq!(foreign_listing(&node), foreign_before);
    drop(rt);
}

/// Polls `f` every 20 ms for up to 5 s.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_follows_pool_changes_and_restores_a_deleted_table() {
    if skip_unless_root_and(&["ip", "nft"]) {
        return;
    }
    let node = Netns::new().unwrap();
    let handle = std::sync::Arc::new(std::fs::File::open(node.path()).unwrap());
    // Every runtime thread (and so every `nft` child) lives in the node namespace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            nix::sched::setns(&*handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        })
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(pools(true));
    let nat = NatOutgoing::new().expect("nft runs");
    let task = rt.spawn(tabby_agent::nat::run(nat, rx, Duration::from_millis(100)));
    eventually("table created", || our_table_exists(&node));
    nft(&node, &["delete", "table", "inet", TABLE]);
    eventually("table restored by the timer", || our_table_exists(&node));
    tx.send(pools(false)).unwrap();
    eventually("table removed after the pool change", || {
        !our_table_exists(&node)
    });
    tx.send(pools(true)).unwrap();
    eventually("table back after the pool change", || {
        our_table_exists(&node)
    });
    drop(tx);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run ends when the pools' sender is gone")
            .unwrap();
    });
}
