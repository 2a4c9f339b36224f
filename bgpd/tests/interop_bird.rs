//! `tabby-bgpd` against BIRD 2.0.12, each in its own network namespace over a veth: eBGP with
//! 4-octet ASNs on IPv4 and IPv6 sessions, iBGP, communities and large communities, withdrawals
//! both ways, a 2-octet-only BIRD (`enable as4 off`) with AS_TRANS on the wire and the 4-octet
//! path rebuilt from AS4_PATH on both sides, and `tabby-bgpd` as route reflector between an FRR
//! client and a BIRD client.
//!
//! Needs root, BIRD (and FRR for the reflector) and the daemon binary; skips otherwise.

mod interop;

use std::time::Duration;

use interop::*;
use tabby_netlab::{Bird, Frr, Netns};

const T: Duration = Duration::from_secs(30);

/// `birdc show route <prefix> all`, when BIRD has the prefix.
fn bird_route(bird: &Bird, prefix: &str) -> Option<String> {
    let out = bird.birdc(&format!("show route {prefix} all")).ok()?;
    out.contains(prefix).then_some(out)
}

fn bird_wait_route(bird: &Bird, prefix: &str) -> String {
    wait_or(
        &format!("BIRD to learn {prefix}"),
        T,
        || bird_route(bird, prefix),
        || bird.log(),
    )
}

fn bird_wait_no_route(bird: &Bird, prefix: &str) {
    wait_or(
        &format!("BIRD to withdraw {prefix}"),
        T,
        || bird_route(bird, prefix).is_none().then_some(()),
        || bird.log(),
    )
}

/// The value of one attribute line (`BGP.as_path: 65010 4200000099`) in `show route all`.
fn bird_attr<'a>(route: &'a str, name: &str) -> Option<&'a str> {
    route
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

/// Static routes to originate and an export filter that tags them.
const BIRD_STATICS: &str = "protocol device {}\nprotocol direct { ipv4; ipv6; }\n\
    protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }\n\
    protocol static s6 { ipv6; route 2001:db8:2::/48 blackhole; }\n\
    filter tagged { if proto = \"s4\" || proto = \"s6\" then { \
      bgp_community.add((65010,9)); bgp_large_community.add((4200000001,1,2)); accept; } \
      reject; }\n";

fn bird_session(
    name: &str,
    local: &str,
    local_as: u32,
    neighbor: &str,
    peer_as: u32,
    afi: &str,
    extra: &str,
) -> String {
    format!(
        "protocol bgp {name} {{ local {local} as {local_as}; neighbor {neighbor} as {peer_as}; \
         direct; hold time 9; connect retry time 1; {extra}\n  \
         {afi} {{ import all; export filter tagged; }}; }}\n"
    )
}

fn check_ours_in_bird(bird: &Bird, prefix: &str, as_path: &str) {
    let r = bird_wait_route(bird, prefix);
    assert_eq!(bird_attr(&r, "BGP.as_path"), Some(as_path), "{r}");
    assert!(
        bird_attr(&r, "BGP.community").is_some_and(|c| c.contains("(65002,7)")),
        "{r}"
    );
    assert!(
        bird_attr(&r, "BGP.large_community").is_some_and(|c| c.contains("(65002, 1, 2)")),
        "{r}"
    );
}

fn check_theirs_in_us(tabby: &Tabby, prefix: &str, as_path: &str, from: &str) {
    let r = tabby.wait_route(prefix, T);
    let p = best(&r);
    assert_eq!(p["attrs"]["as_path"], as_path, "{r}");
    assert_eq!(p["from"], from, "{r}");
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

#[test]
fn ebgp_ipv4_and_ipv6_sessions_with_4_octet_asns() {
    if skip(&["bird", "birdc"]) {
        return;
    }
    let link = Link::new();
    let bird_conf = format!(
        "router id {THEM4};\n{BIRD_STATICS}{}{}",
        bird_session(
            "tabby4",
            THEM4,
            4_200_000_001,
            US4,
            4_200_000_002,
            "ipv4",
            ""
        ),
        bird_session(
            "tabby6",
            THEM6,
            4_200_000_001,
            US6,
            4_200_000_002,
            "ipv6",
            ""
        ),
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let peers = format!(
        "{}{}",
        peer(THEM4, 4_200_000_001, ""),
        peer(THEM6, 4_200_000_001, "")
    );
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            4_200_000_002,
            &format!(
                "{peers}{}{}",
                originate("10.244.1.0/24", 65002),
                originate("2001:db8:244::/48", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_established(THEM6, T);
    bird.wait_established("tabby4", T).unwrap();
    bird.wait_established("tabby6", T).unwrap();

    check_theirs_in_us(&tabby, "198.51.100.0/24", "4200000001", THEM4);
    check_theirs_in_us(&tabby, "2001:db8:2::/48", "4200000001", THEM6);
    let r = tabby.wait_route("198.51.100.0/24", T);
    assert_eq!(best(&r)["attrs"]["next_hop"], THEM4, "{r}");
    check_ours_in_bird(&bird, "10.244.1.0/24", "4200000002");
    check_ours_in_bird(&bird, "2001:db8:244::/48", "4200000002");

    // Withdrawals both ways.
    bird.birdc("disable s4").unwrap();
    bird.birdc("disable s6").unwrap();
    tabby.wait_no_route("198.51.100.0/24", T);
    tabby.wait_no_route("2001:db8:2::/48", T);
    tabby.reload(&config(US4, 4_200_000_002, &peers));
    bird_wait_no_route(&bird, "10.244.1.0/24");
    bird_wait_no_route(&bird, "2001:db8:244::/48");
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
    assert_eq!(tabby.peer(THEM6).unwrap()["established_count"], 1);
}

#[test]
fn ibgp_ipv4_and_ipv6() {
    if skip(&["bird", "birdc"]) {
        return;
    }
    let link = Link::new();
    let bird_conf = format!(
        "router id {THEM4};\n{BIRD_STATICS}{}{}",
        bird_session("tabby4", THEM4, 65000, US4, 65000, "ipv4", ""),
        bird_session("tabby6", THEM6, 65000, US6, 65000, "ipv6", ""),
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65000,
            &format!(
                "{}{}{}{}",
                peer(THEM4, 65000, ""),
                peer(THEM6, 65000, ""),
                originate("10.244.1.0/24", 65002),
                originate("2001:db8:244::/48", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_established(THEM6, T);
    check_theirs_in_us(&tabby, "198.51.100.0/24", "", THEM4);
    check_theirs_in_us(&tabby, "2001:db8:2::/48", "", THEM6);
    let r = tabby.wait_route("198.51.100.0/24", T);
    assert_eq!(best(&r)["attrs"]["local_pref"], 100, "{r}");
    check_ours_in_bird(&bird, "10.244.1.0/24", "");
    check_ours_in_bird(&bird, "2001:db8:244::/48", "");
    let r = bird_wait_route(&bird, "10.244.1.0/24");
    assert_eq!(bird_attr(&r, "BGP.local_pref"), Some("100"), "{r}");

    // `birdc reload in` sends ROUTE-REFRESH: we answer with our routes again, no reset.
    let before = tabby.peer(THEM4).unwrap();
    let count = |p: &serde_json::Value, dir: &str, ty: &str| p[dir][ty].as_u64().unwrap_or(0);
    bird.birdc("reload in tabby4").unwrap();
    let after = wait_or(
        "our answer to BIRD's ROUTE-REFRESH",
        T,
        || {
            tabby.peer(THEM4).filter(|p| {
                count(p, "messages_received", "route_refresh")
                    > count(&before, "messages_received", "route_refresh")
                    && count(p, "messages_sent", "update")
                        > count(&before, "messages_sent", "update")
            })
        },
        || tabby.log_tail(20),
    );
    assert_eq!(after["established_count"], 1, "{after}");
    bird_wait_route(&bird, "10.244.1.0/24");
}

#[test]
fn two_octet_peer_as_trans_with_as4_path_merged_on_both_sides() {
    if skip(&["bird", "birdc"]) {
        return;
    }
    let link = Link::new();
    // BIRD speaks 2-octet only (no AS4 capability: AS_TRANS in AS_PATH on the wire). BIRD reads
    // our AS4 capability to check our AS even then, so a 4-octet AS on our side cannot peer
    // with it (the FRR suite covers that direction); here we are AS 65002. Its route carries
    // a 4-octet AS that can only travel in AS4_PATH.
    let bird_conf = format!(
        "router id {THEM4};\nprotocol device {{}}\n\
         protocol static s4 {{ ipv4; route 198.51.100.0/24 blackhole; }}\n\
         protocol bgp tabby4 {{ local {THEM4} as 65010; neighbor {US4} as 65002; direct; \
         enable as4 off; hold time 9; connect retry time 1;\n  \
         ipv4 {{ import all; export filter {{ if proto = \"s4\" then {{ \
         bgp_path.prepend(4200000099); accept; }} reject; }}; }}; }}\n"
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "{}{}[[policies]]\nname = \"prepend4\"\ndefault = \"accept\"\n\
                 [[policies.rules]]\nname = \"a 4-octet AS\"\n\
                 set = {{ prepend = {{ asn = 4200000077, count = 1 }} }}\nthen = \"accept\"\n\n",
                peer(THEM4, 65010, "")
                    .replace("export_policy = \"all\"", "export_policy = \"prepend4\""),
                originate("10.244.1.0/24", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    bird.wait_established("tabby4", T).unwrap();
    // Ours: the real path rebuilt from AS_PATH [65010 23456] + AS4_PATH [4200000099].
    let r = tabby.wait_route("198.51.100.0/24", T);
    assert_eq!(best(&r)["attrs"]["as_path"], "65010 4200000099", "{r}");
    // Theirs: our export prepends a 4-octet AS, which only our AS4_PATH can carry to BIRD;
    // BIRD merges it back (its AS_PATH alone reads 65002 23456).
    let r = bird_wait_route(&bird, "10.244.1.0/24");
    assert_eq!(
        bird_attr(&r, "BGP.as_path"),
        Some("65002 4200000077"),
        "{r}"
    );
}

#[test]
fn route_reflector_between_an_frr_client_and_a_bird_client() {
    if skip(&["bird", "birdc", Frr::BGPD, Frr::ZEBRA, "vtysh"]) {
        return;
    }
    // frr (10.77.0.1) — us (10.77.0.2 / 10.78.0.2) — bird (10.78.0.1), all AS 65000.
    let us = Netns::new().unwrap();
    let frr_ns = Netns::new().unwrap();
    let bird_ns = Netns::new().unwrap();
    frr_ns.veth_to("eth0", &us, "eth0").unwrap();
    bird_ns.veth_to("eth0", &us, "eth1").unwrap();
    frr_ns.add_addr("eth0", "10.77.0.1/24").unwrap();
    us.add_addr("eth0", "10.77.0.2/24").unwrap();
    bird_ns.add_addr("eth0", "10.78.0.1/24").unwrap();
    us.add_addr("eth1", "10.78.0.2/24").unwrap();
    // Reflected next hops are unchanged: each client reaches the other's link through us.
    frr_ns
        .ip(&["route", "add", "10.78.0.0/24", "via", "10.77.0.2"])
        .unwrap();
    bird_ns
        .ip(&["route", "add", "10.77.0.0/24", "via", "10.78.0.2"])
        .unwrap();
    us.sysctl("net.ipv4.ip_forward", "1").unwrap();

    let frr = Frr::start(
        &frr_ns,
        "hostname frr\nrouter bgp 65000\n bgp router-id 10.77.0.1\n no bgp network import-check\n \
         neighbor 10.77.0.2 remote-as 65000\n neighbor 10.77.0.2 timers 3 9\n \
         neighbor 10.77.0.2 timers connect 1\n address-family ipv4 unicast\n  \
         network 192.0.2.0/24\n exit-address-family\n",
    )
    .expect("FRR");
    let bird = Bird::start(
        &bird_ns,
        "router id 10.78.0.1;\nprotocol device {}\nprotocol kernel { ipv4 { import all; export none; }; learn; }\n\
         protocol direct { ipv4; }\n\
         protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }\n\
         protocol bgp reflector { local 10.78.0.1 as 65000; neighbor 10.78.0.2 as 65000; \
         hold time 9; connect retry time 1;\n  \
         ipv4 { import all; export where proto = \"s4\"; }; }\n",
    )
    .expect("BIRD");
    let tabby = Tabby::start(
        &us,
        &config(
            "10.77.0.2",
            65000,
            &format!(
                "cluster_id = \"10.99.99.99\"\n\n{}{}",
                peer("10.77.0.1", 65000, "route_reflector_client = true"),
                peer("10.78.0.1", 65000, "route_reflector_client = true"),
            ),
        ),
    );
    tabby.wait_established("10.77.0.1", T);
    tabby.wait_established("10.78.0.1", T);

    // FRR learns BIRD's route, reflected with ORIGINATOR_ID = BIRD and our cluster id.
    let p = wait_or(
        "FRR to learn the reflected 198.51.100.0/24",
        T,
        || {
            let v = frr
                .vtysh_json("show bgp ipv4 unicast 198.51.100.0/24 json")
                .ok()?;
            v["paths"].as_array()?.first().cloned()
        },
        || frr.bgpd_log(),
    );
    assert_eq!(p["originatorId"], "10.78.0.1", "{p}");
    assert!(p["clusterList"].to_string().contains("10.99.99.99"), "{p}");
    assert!(p["nexthops"].to_string().contains("10.78.0.1"), "{p}");
    // BIRD learns FRR's.
    let r = bird_wait_route(&bird, "192.0.2.0/24");
    assert_eq!(bird_attr(&r, "BGP.originator_id"), Some("10.77.0.1"), "{r}");
    assert_eq!(
        bird_attr(&r, "BGP.cluster_list"),
        Some("10.99.99.99"),
        "{r}"
    );
    assert_eq!(bird_attr(&r, "BGP.next_hop"), Some("10.77.0.1"), "{r}");
}

#[test]
fn md5_with_bird_right_key_establishes_wrong_key_never() {
    if skip(&["bird", "birdc"]) {
        return;
    }
    let link = Link::new();
    let bird_conf = format!(
        "router id {THEM4};\n{BIRD_STATICS}{}",
        bird_session(
            "tabby4",
            THEM4,
            65010,
            US4,
            65002,
            "ipv4",
            "password \"s3cret-key\";"
        ),
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let conf = |key: &str| {
        config(
            US4,
            65002,
            &peer(THEM4, 65010, &format!("password = \"{key}\"")),
        )
    };
    let tabby = Tabby::start(&link.us, &conf("wrong-key"));
    never(
        "an Established session with a wrong MD5 key",
        Duration::from_secs(5),
        || (tabby.peer_state(THEM4) == "Established").then(|| tabby.peer(THEM4)),
    );
    // Fixing the key by reload resets only this session's socket, and it comes up.
    tabby.reload(&conf("s3cret-key"));
    tabby.wait_established(THEM4, T);
    bird.wait_established("tabby4", T).unwrap();
    tabby.wait_route("198.51.100.0/24", T);
}

#[test]
fn graceful_restart_bird_keeps_our_routes_while_we_restart() {
    if skip(&["bird", "birdc"]) {
        return;
    }
    let link = Link::new();
    let bird_conf = format!(
        "router id {THEM4};\n{BIRD_STATICS}{}",
        bird_session(
            "tabby4",
            THEM4,
            65010,
            US4,
            65002,
            "ipv4",
            "graceful restart on; graceful restart time 20;"
        ),
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let mut tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "[graceful_restart]\nrestart_time = 20\nstale_routes_time = 30\n\n{}{}",
                peer(THEM4, 65010, ""),
                originate("10.244.1.0/24", 65002)
            ),
        ),
    );
    bird.wait_established("tabby4", T).unwrap();
    bird_wait_route(&bird, "10.244.1.0/24");
    let kept = || {
        assert!(
            bird_route(&bird, "10.244.1.0/24").is_some(),
            "BIRD dropped our route during our restart:\n{}",
            bird.log()
        );
    };
    tabby.kill9();
    wait_or(
        "BIRD to notice the session is gone",
        T,
        || {
            kept();
            bird.bgp_state("tabby4")
                .is_ok_and(|s| s != "Established")
                .then_some(())
        },
        || bird.log(),
    );
    tabby.restart(&["--graceful-restart"]);
    wait_or(
        "BIRD to be Established again",
        T,
        || {
            kept();
            bird.bgp_state("tabby4")
                .is_ok_and(|s| s == "Established")
                .then_some(())
        },
        || bird.log(),
    );
    // Past our End-of-RIB the route is still there.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        kept();
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = bird_route(&bird, "10.244.1.0/24").unwrap();
    assert_eq!(bird_attr(&r, "BGP.as_path"), Some("65002"), "{r}");
}

/// RFC 7911 send to BIRD (`add paths rx`): two GoBGP routers announce 198.51.100.0/24; BIRD
/// holds both paths from us (one session), and withdrawing one at its source withdraws that
/// path alone — BIRD keeps the other, the session stays up.
#[test]
fn add_path_send_to_bird_two_paths_then_one() {
    if skip(&["bird", "birdc", "gobgpd", "gobgp"]) {
        return;
    }
    const PREFIX: &str = "198.51.100.0/24";
    let link = Link::new();
    let bird_conf = format!(
        "router id {THEM4};\nprotocol device {{}}\n\
         protocol bgp tabby4 {{ local {THEM4} as 65010; neighbor {US4} as 65002; direct; \
         hold time 9; connect retry time 1;\n  \
         ipv4 {{ import all; export none; add paths rx; }}; }}\n"
    );
    let bird = Bird::start(&link.them, &bird_conf).expect("BIRD");
    let (sources, tabby) = add_path_sources(&link, 65010, PREFIX, T);
    // `show route <prefix> all` prints one BGP.as_path line per path.
    let as_paths = |bird: &Bird| -> Vec<String> {
        let mut v: Vec<String> = bird_route(bird, PREFIX)
            .map(|r| {
                r.lines()
                    .filter_map(|l| l.trim().strip_prefix("BGP.as_path:"))
                    .map(|p| p.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let both = wait_or(
        "BIRD to hold two paths from us",
        T,
        || {
            let p = as_paths(&bird);
            (p.len() == 2).then_some(p)
        },
        || format!("{}\n{}", bird.log(), tabby.log_tail(30)),
    );
    assert_eq!(both, ["65002 65021", "65002 65022"]);
    let (_, ids) = tabby.adj_rib_out_path_ids(THEM4);
    assert_eq!(ids, [1, 2]);

    sources[0].withdraw(PREFIX);
    let left = wait_or(
        "BIRD to hold one path",
        T,
        || {
            let p = as_paths(&bird);
            (p.len() == 1).then_some(p)
        },
        || format!("{}\n{}", bird.log(), tabby.log_tail(30)),
    );
    assert_eq!(left, ["65002 65022"]);
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
}
