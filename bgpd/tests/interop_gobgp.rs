//! `tabby-bgpd` against GoBGP 3.10, each in its own network namespace over a veth: eBGP with
//! 4-octet ASNs and iBGP, on IPv4 and IPv6 sessions, communities and large communities,
//! withdrawals both ways; RFC 7911 ADD-PATH in both directions (GoBGP sending us two paths,
//! and us sending two paths on to GoBGP).
//!
//! Needs root, `gobgpd`/`gobgp` and the daemon binary; skips otherwise.

mod interop;

use std::time::Duration;

use interop::*;
use tabby_netlab::Gobgp;

const T: Duration = Duration::from_secs(30);

/// GoBGP's `[global.config]`: AS `asn`, router id `router_id`, listening on port 179.
fn gobgp_global(asn: u32, router_id: &str) -> String {
    format!("[global.config]\n  as = {asn}\n  router-id = \"{router_id}\"\n  port = 179\n")
}

/// One GoBGP neighbor at `addr` in `peer_as`, with short timers (ConnectRetry 1 s, hold time
/// 9 s) so the tests converge fast. `config` goes into `[neighbors.config]`; `rest` follows
/// the timers (further neighbor tables, see [`gobgp_family`]).
fn gobgp_neighbor(addr: &str, peer_as: u32, config: &str, rest: &str) -> String {
    format!(
        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    \
         peer-as = {peer_as}\n{config}  [neighbors.timers.config]\n    connect-retry = 1\n    \
         hold-time = 9\n    keepalive-interval = 3\n{rest}"
    )
}

/// A neighbor's `[[neighbors.afi-safis]]` entry for `family`, followed by `rest` (its
/// sub-tables).
fn gobgp_family(family: &str, rest: &str) -> String {
    format!(
        "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
         afi-safi-name = \"{family}\"\n{rest}"
    )
}

/// The `[neighbors.afi-safis.add-paths.config]` sub-table with `setting` (RFC 7911).
fn gobgp_add_paths(setting: &str) -> String {
    format!("    [neighbors.afi-safis.add-paths.config]\n      {setting}\n")
}

/// GoBGP in `asn` with IPv4 and IPv6 sessions to us (in `peer_asn`).
fn gobgp_conf(asn: u32, peer_asn: u32) -> String {
    format!(
        "{}{}{}",
        gobgp_global(asn, THEM4),
        gobgp_neighbor(US4, peer_asn, "", &gobgp_family("ipv4-unicast", "")),
        gobgp_neighbor(US6, peer_asn, "", &gobgp_family("ipv6-unicast", ""))
    )
}

/// GoBGP's text view of `prefix` in its global RIB, when it has it.
fn gobgp_route(g: &Gobgp, afi: &str, prefix: &str) -> Option<String> {
    let out = g.gobgp(&["global", "rib", "-a", afi, prefix]).ok()?;
    out.contains(prefix).then_some(out)
}

fn gobgp_wait_route(g: &Gobgp, afi: &str, prefix: &str) -> String {
    wait_or(
        &format!("GoBGP to learn {prefix}"),
        T,
        || gobgp_route(g, afi, prefix),
        || g.log(),
    )
}

/// `gobgp global rib -a <afi> add <prefix> nexthop <nh> <attrs…>`.
fn rib_add(g: &Gobgp, afi: &str, prefix: &str, nh: &str, attrs: &[&str]) {
    let mut args = vec!["global", "rib", "-a", afi, "add", prefix, "nexthop", nh];
    args.extend_from_slice(attrs);
    g.gobgp(&args).expect("gobgp rib add");
}

/// `gobgp global rib -a <afi> del <prefix> <which…>` (`which`: e.g. a path identifier).
fn rib_del(g: &Gobgp, afi: &str, prefix: &str, which: &[&str]) {
    let mut args = vec!["global", "rib", "-a", afi, "del", prefix];
    args.extend_from_slice(which);
    g.gobgp(&args).expect("gobgp rib del");
}

/// Whether our route JSON `r` holds exactly `n` paths.
fn paths_are(r: &serde_json::Value, n: usize) -> bool {
    r["paths"].as_array().is_some_and(|p| p.len() == n)
}

fn add_theirs(g: &Gobgp) {
    for (afi, prefix, nh) in [
        ("ipv4", "198.51.100.0/24", THEM4),
        ("ipv6", "2001:db8:3::/48", THEM6),
    ] {
        rib_add(
            g,
            afi,
            prefix,
            nh,
            &["community", "65010:9", "large-community", "4200000001:1:2"],
        );
    }
}

/// Both directions, both families, then withdrawals both ways; `as_path_them`/`as_path_us` are
/// what each side must see.
fn exchange(asn_them: u32, asn_us: u32, as_path_them: &str, as_path_us: &str) {
    let link = Link::new();
    let g = Gobgp::start(&link.them, &gobgp_conf(asn_them, asn_us)).expect("gobgpd");
    let peers = format!("{}{}", peer(THEM4, asn_them, ""), peer(THEM6, asn_them, ""));
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            asn_us,
            &format!(
                "{peers}{}{}",
                originate("10.244.1.0/24", 65002),
                originate("2001:db8:244::/48", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_established(THEM6, T);
    g.wait_established(US4, T).unwrap();
    g.wait_established(US6, T).unwrap();
    add_theirs(&g);

    for (prefix, from) in [("198.51.100.0/24", THEM4), ("2001:db8:3::/48", THEM6)] {
        let r = tabby.wait_route(prefix, T);
        let p = best(&r);
        assert_eq!(p["from"], from, "{r}");
        assert_eq!(p["attrs"]["as_path"], as_path_us, "{r}");
        assert_eq!(p["attrs"]["next_hop"], from, "{r}");
        assert!(
            p["attrs"]["communities"].to_string().contains("65010:9"),
            "{r}"
        );
        assert!(
            p["attrs"]["large_communities"]
                .to_string()
                .contains("4200000001:1:2"),
            "{r}"
        );
    }
    for (afi, prefix, nh) in [
        ("ipv4", "10.244.1.0/24", US4),
        ("ipv6", "2001:db8:244::/48", US6),
    ] {
        let r = gobgp_wait_route(&g, afi, prefix);
        assert!(r.contains(nh), "next hop {nh}: {r}");
        assert!(r.contains("65002:7"), "community: {r}");
        assert!(r.contains("65002:1:2"), "large community: {r}");
        let line = r.lines().find(|l| l.contains(prefix)).unwrap_or_default();
        if as_path_them.is_empty() {
            assert!(!line.contains("4200000002"), "iBGP adds no AS: {r}");
        } else {
            assert!(line.contains(as_path_them), "AS path {as_path_them}: {r}");
        }
    }

    // Withdrawals.
    rib_del(&g, "ipv4", "198.51.100.0/24", &[]);
    rib_del(&g, "ipv6", "2001:db8:3::/48", &[]);
    tabby.wait_no_route("198.51.100.0/24", T);
    tabby.wait_no_route("2001:db8:3::/48", T);
    tabby.reload(&config(US4, asn_us, &peers));
    for (afi, prefix) in [("ipv4", "10.244.1.0/24"), ("ipv6", "2001:db8:244::/48")] {
        wait_or(
            &format!("GoBGP to withdraw {prefix}"),
            T,
            || gobgp_route(&g, afi, prefix).is_none().then_some(()),
            || g.log(),
        );
    }
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
    assert_eq!(tabby.peer(THEM6).unwrap()["established_count"], 1);
}

/// GoBGP (AS 65010, `neighbor`: its one neighbor, us) and tabby-bgpd (AS 65002, `tabby`:
/// its configuration after the global part) on `link`, once both see the IPv4 session
/// Established.
fn one_session<'a>(link: &'a Link, neighbor: &str, tabby: &str) -> (Gobgp, Tabby<'a>) {
    let conf = format!("{}{neighbor}", gobgp_global(65010, THEM4));
    let g = Gobgp::start(&link.them, &conf).expect("gobgpd");
    let tabby = Tabby::start(&link.us, &config(US4, 65002, tabby));
    tabby.wait_established(THEM4, T);
    g.wait_established(US4, T).unwrap();
    (g, tabby)
}

#[test]
fn ebgp_ipv4_and_ipv6_sessions_with_4_octet_asns() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    exchange(4_200_000_001, 4_200_000_002, "4200000002", "4200000001");
}

#[test]
fn ibgp_ipv4_and_ipv6_sessions() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    exchange(65000, 65000, "", "");
}

#[test]
fn md5_with_gobgp_right_key_establishes() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    let link = Link::new();
    let (g, _tabby) = one_session(
        &link,
        &gobgp_neighbor(US4, 65002, "    auth-password = \"s3cret-key\"\n", ""),
        &format!(
            "{}{}",
            peer(THEM4, 65010, "password = \"s3cret-key\""),
            originate("10.244.1.0/24", 65002)
        ),
    );
    gobgp_wait_route(&g, "ipv4", "10.244.1.0/24");
}

#[test]
fn add_path_receive_two_paths_for_one_prefix() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    let link = Link::new();
    // RFC 7911: GoBGP sends both of its paths for 198.51.100.0/24, each with its path id.
    let (g, tabby) = one_session(
        &link,
        &gobgp_neighbor(
            US4,
            65002,
            "",
            &gobgp_family("ipv4-unicast", &gobgp_add_paths("send-max = 8")),
        ),
        &format!(
            "max_paths = 4\n\n{}",
            peer(THEM4, 65010, "add_path = { receive = [\"ipv4-unicast\"] }")
        ),
    );
    for (id, med) in [("1", "10"), ("2", "20")] {
        rib_add(
            &g,
            "ipv4",
            "198.51.100.0/24",
            THEM4,
            &["med", med, "identifier", id],
        );
    }
    let r = tabby.wait_route_where("198.51.100.0/24", T, |r| paths_are(r, 2));
    let ids: Vec<u64> = r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path_id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 2, "{r}");
    assert_ne!(ids[0], ids[1], "{r}");
    // The lower MED wins between paths from the same neighbour AS.
    assert_eq!(best(&r)["attrs"]["med"], 10, "{r}");
    // Withdrawing one path leaves the other.
    rib_del(&g, "ipv4", "198.51.100.0/24", &["identifier", "1"]);
    let r = tabby.wait_route_where("198.51.100.0/24", T, |r| paths_are(r, 1));
    assert_eq!(best(&r)["attrs"]["med"], 20, "{r}");
}

/// GoBGP's paths for `prefix` in its global RIB (JSON), when it has any.
fn gobgp_paths(g: &Gobgp, prefix: &str) -> Vec<serde_json::Value> {
    g.gobgp_json(&["global", "rib", "-a", "ipv4", prefix])
        .ok()
        .and_then(|v| v.get(prefix).and_then(|p| p.as_array().cloned()))
        .unwrap_or_default()
}

/// Waits until GoBGP `g` holds exactly `n` paths for `prefix`, and returns them.
fn gobgp_wait_paths(g: &Gobgp, tabby: &Tabby, prefix: &str, n: usize) -> Vec<serde_json::Value> {
    wait_or(
        &format!("GoBGP to hold {n} path(s) for {prefix}"),
        T,
        || {
            let p = gobgp_paths(g, prefix);
            (p.len() == n).then_some(p)
        },
        || format!("{}\n{}", g.log(), tabby.log_tail(30)),
    )
}

#[test]
fn add_path_send_two_paths_to_gobgp_and_withdraw_one() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    // RFC 7911 send: a second GoBGP ("source", AS 65020, its own namespace and veth to ours)
    // sends us two paths for 198.51.100.0/24 with ADD-PATH; we send both on to GoBGP (AS
    // 65010), which asked to receive several paths. Withdrawing one at the source leaves one.
    const SRC: &str = "10.78.0.1";
    const US_SRC: &str = "10.78.0.2";
    let link = Link::new();
    let src_ns = tabby_netlab::Netns::new().expect("netns");
    link.us.veth_to("eth1", &src_ns, "eth0").expect("veth");
    link.us
        .add_addr("eth1", &format!("{US_SRC}/24"))
        .expect("addr");
    src_ns.add_addr("eth0", &format!("{SRC}/24")).expect("addr");
    let neighbor = |addr: &str, asn: u32, add_paths: &str| {
        gobgp_neighbor(
            addr,
            asn,
            "",
            &gobgp_family("ipv4-unicast", &gobgp_add_paths(add_paths)),
        )
    };
    let receiver = Gobgp::start(
        &link.them,
        &format!(
            "{}{}",
            gobgp_global(65010, THEM4),
            neighbor(US4, 65002, "receive = true")
        ),
    )
    .expect("gobgpd (receiver)");
    let source = Gobgp::start(
        &src_ns,
        &format!(
            "{}{}",
            gobgp_global(65020, SRC),
            neighbor(US_SRC, 65002, "send-max = 8")
        ),
    )
    .expect("gobgpd (source)");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "{}{}",
                peer(THEM4, 65010, "add_path = { send = [\"ipv4-unicast\"] }"),
                peer(SRC, 65020, "add_path = { receive = [\"ipv4-unicast\"] }")
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_established(SRC, T);
    receiver.wait_established(US4, T).unwrap();
    source.wait_established(US_SRC, T).unwrap();
    // Told apart by community (MED does not cross to another AS, RFC 4271 §5.1.4).
    for (id, community) in [("1", "65020:1"), ("2", "65020:2")] {
        rib_add(
            &source,
            "ipv4",
            "198.51.100.0/24",
            SRC,
            &["community", community, "identifier", id],
        );
    }
    tabby.wait_route_where("198.51.100.0/24", T, |r| paths_are(r, 2));
    let paths = gobgp_wait_paths(&receiver, &tabby, "198.51.100.0/24", 2);
    // Two paths (GoBGP keeps them apart by our path ids), both through us.
    let text = format!("{paths:?}");
    // Communities as GoBGP prints them: 65020:n is 65020 × 65536 + n.
    assert!(
        text.contains("4261150721") && text.contains("4261150722"),
        "{text}"
    );
    for p in &paths {
        assert!(p.to_string().contains("[65002,65020]"), "{p}");
    }
    // Our Adj-RIB-Out toward GoBGP says the same: two routes, path ids 1 and 2.
    let (count, sent) = tabby.adj_rib_out_path_ids(THEM4);
    assert_eq!(count, 2);
    assert_eq!(sent, vec![1, 2]);
    // The source withdraws path 1: we withdraw its id alone; GoBGP keeps the other.
    rib_del(&source, "ipv4", "198.51.100.0/24", &["identifier", "1"]);
    let left = gobgp_wait_paths(&receiver, &tabby, "198.51.100.0/24", 1);
    let kept = left[0].to_string();
    assert!(kept.contains("4261150722"), "path 2 stays: {kept}");
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
}

#[test]
fn graceful_restart_gobgp_keeps_our_routes_while_we_restart() {
    if skip(&["gobgpd", "gobgp"]) {
        return;
    }
    let link = Link::new();
    // RFC 4724 helper: GoBGP keeps our routes for up to 20 s while we restart.
    let graceful_restart = format!(
        "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 20\n{}",
        gobgp_family(
            "ipv4-unicast",
            "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
        )
    );
    let (g, mut tabby) = one_session(
        &link,
        &gobgp_neighbor(US4, 65002, "", &graceful_restart),
        &format!(
            "[graceful_restart]\nrestart_time = 20\nstale_routes_time = 30\n\n{}{}",
            peer(THEM4, 65010, ""),
            originate("10.244.1.0/24", 65002)
        ),
    );
    gobgp_wait_route(&g, "ipv4", "10.244.1.0/24");
    let kept = || {
        assert!(
            gobgp_route(&g, "ipv4", "10.244.1.0/24").is_some(),
            "GoBGP dropped our route during our restart:\n{}",
            g.log()
        );
    };
    tabby.kill9();
    wait_or(
        "GoBGP to notice the session is gone",
        T,
        || {
            kept();
            g.peer_state(US4)
                .is_ok_and(|s| s != "established")
                .then_some(())
        },
        || g.log(),
    );
    tabby.restart(&["--graceful-restart"]);
    wait_or(
        "GoBGP to be established again",
        T,
        || {
            kept();
            g.peer_state(US4)
                .is_ok_and(|s| s == "established")
                .then_some(())
        },
        || g.log(),
    );
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        kept();
        std::thread::sleep(Duration::from_millis(50));
    }
}
