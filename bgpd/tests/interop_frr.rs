//! `tabby-bgpd` against FRR 8.4 (bgpd + zebra), each in its own network namespace over a veth:
//! eBGP with 4-octet ASNs on IPv4 and IPv6 sessions, iBGP carrying IPv4 over an IPv6 session
//! with RFC 8950 extended next hop, communities and large communities, withdrawals both ways,
//! TCP MD5, route refresh, hold timer expiry on a silent link, max-prefix, graceful restart
//! in both directions.
//!
//! Needs root, FRR and the daemon binary; skips with a message otherwise.

mod interop;

use std::time::{Duration, Instant};

use interop::*;
use serde_json::Value;
use tabby_netlab::Frr;

const FRR_PROGRAMS: &[&str] = &[Frr::BGPD, Frr::ZEBRA, "vtysh"];
const T: Duration = Duration::from_secs(30);

/// FRR's route for `prefix` (first path), if it has one.
fn frr_route(frr: &Frr, afi: &str, prefix: &str) -> Option<Value> {
    let v = frr
        .vtysh_json(&format!("show bgp {afi} unicast {prefix} json"))
        .ok()?;
    v["paths"].as_array()?.first().cloned()
}

fn frr_wait_route(frr: &Frr, afi: &str, prefix: &str) -> Value {
    wait_or(
        &format!("FRR to learn {prefix}"),
        T,
        || frr_route(frr, afi, prefix),
        || frr.bgpd_log(),
    )
}

fn frr_wait_no_route(frr: &Frr, afi: &str, prefix: &str) {
    wait_or(
        &format!("FRR to withdraw {prefix}"),
        T,
        || frr_route(frr, afi, prefix).is_none().then_some(()),
        || frr.bgpd_log(),
    )
}

const TAG_MAP: &str = "route-map TAG permit 10\n set community 65001:9\n \
                       set large-community 4200000001:1:2\n!\n";

fn frr_neighbor(addr: &str, asn: u32, extra: &[&str]) -> String {
    let mut s = format!(
        " neighbor {addr} remote-as {asn}\n neighbor {addr} timers 3 9\n \
         neighbor {addr} timers connect 1\n"
    );
    for e in extra {
        s.push_str(&format!(" neighbor {addr} {e}\n"));
    }
    s
}

fn frr_head(asn: u32, extra: &str) -> String {
    format!(
        "hostname frr\n{TAG_MAP}router bgp {asn}\n bgp router-id {THEM4}\n \
         no bgp ebgp-requires-policy\n no bgp network import-check\n \
         no bgp default ipv4-unicast\n{extra}"
    )
}

#[test]
fn ebgp_ipv4_and_ipv6_sessions_with_4_octet_asns() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         neighbor {US4} send-community all\n  network 192.0.2.0/24 route-map TAG\n \
         exit-address-family\n address-family ipv6 unicast\n  neighbor {US6} activate\n  \
         neighbor {US6} send-community all\n  network 2001:db8:1::/48 route-map TAG\n \
         exit-address-family\n",
        frr_head(4_200_000_001, ""),
        frr_neighbor(US4, 4_200_000_002, &[]),
        frr_neighbor(US6, 4_200_000_002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let peers = format!(
        "{}{}",
        peer(THEM4, 4_200_000_001, ""),
        peer(THEM6, 4_200_000_001, "")
    );
    let with_routes = config(
        US4,
        4_200_000_002,
        &format!(
            "{peers}{}{}",
            originate("10.244.1.0/24", 65002),
            originate("2001:db8:244::/48", 65002)
        ),
    );
    let tabby = Tabby::start(&link.us, &with_routes);
    tabby.wait_established(THEM4, T);
    tabby.wait_established(THEM6, T);
    frr.wait_established(US4, T).unwrap();
    frr.wait_established(US6, T).unwrap();

    // FRR → us, both families, attributes intact.
    for (prefix, nh) in [("192.0.2.0/24", THEM4), ("2001:db8:1::/48", THEM6)] {
        let r = tabby.wait_route(prefix, T);
        let p = best(&r);
        assert_eq!(p["attrs"]["as_path"], "4200000001", "{r}");
        assert!(
            p["attrs"]["communities"].to_string().contains("65001:9"),
            "{r}"
        );
        assert!(
            p["attrs"]["large_communities"]
                .to_string()
                .contains("4200000001:1:2"),
            "{r}"
        );
        assert_eq!(p["from"], nh, "{r}");
    }
    let v4 = tabby.wait_route("192.0.2.0/24", T);
    assert_eq!(best(&v4)["attrs"]["next_hop"], THEM4, "{v4}");

    // us → FRR, both families, 4-octet AS path and communities as sent.
    for (afi, prefix, nh) in [
        ("ipv4", "10.244.1.0/24", US4),
        ("ipv6", "2001:db8:244::/48", US6),
    ] {
        let p = frr_wait_route(&frr, afi, prefix);
        assert_eq!(p["aspath"]["string"], "4200000002", "{p}");
        assert!(
            p["community"]["string"].to_string().contains("65002:7"),
            "{p}"
        );
        assert!(
            p["largeCommunity"]["string"]
                .to_string()
                .contains("65002:1:2"),
            "{p}"
        );
        assert!(p["nexthops"].to_string().contains(nh), "{p}");
        assert_eq!(p["valid"], true, "{p}");
    }

    // Withdrawals: FRR stops originating → we drop; we stop originating → FRR drops.
    vtysh(
        &frr,
        &link.them,
        &[
            "configure terminal",
            "router bgp 4200000001",
            "address-family ipv4 unicast",
            "no network 192.0.2.0/24 route-map TAG",
            "exit-address-family",
            "address-family ipv6 unicast",
            "no network 2001:db8:1::/48 route-map TAG",
        ],
    );
    tabby.wait_no_route("192.0.2.0/24", T);
    tabby.wait_no_route("2001:db8:1::/48", T);
    tabby.reload(&config(US4, 4_200_000_002, &peers));
    frr_wait_no_route(&frr, "ipv4", "10.244.1.0/24");
    frr_wait_no_route(&frr, "ipv6", "2001:db8:244::/48");
    // Nothing reset along the way.
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
    assert_eq!(tabby.peer(THEM6).unwrap()["established_count"], 1);
}

#[test]
fn ibgp_ipv4_over_an_ipv6_session_with_extended_next_hop() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US6} activate\n  \
         network 192.0.2.0/24 route-map TAG\n exit-address-family\n \
         address-family ipv6 unicast\n  neighbor {US6} activate\n  \
         network 2001:db8:1::/48\n exit-address-family\n",
        frr_head(65000, ""),
        frr_neighbor(US6, 65000, &["capability extended-nexthop"]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65000,
            &format!(
                "{}{}{}",
                peer(
                    THEM6,
                    65000,
                    "families = [\"ipv4-unicast\", \"ipv6-unicast\"]\nextended_next_hop = true"
                ),
                originate("10.244.1.0/24", 65002),
                originate("2001:db8:244::/48", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM6, T);
    frr.wait_established(US6, T).unwrap();

    // An IPv4 route with an IPv6 next hop, learnt over iBGP (empty AS path, local-pref kept).
    let r = tabby.wait_route("192.0.2.0/24", T);
    let p = best(&r);
    assert_eq!(p["from"], THEM6, "{r}");
    assert_eq!(p["attrs"]["as_path"], "", "{r}");
    assert_eq!(p["attrs"]["next_hop"], THEM6, "{r}");
    assert!(
        p["attrs"]["communities"].to_string().contains("65001:9"),
        "{r}"
    );
    let r6 = tabby.wait_route("2001:db8:1::/48", T);
    assert_eq!(best(&r6)["from"], THEM6, "{r6}");

    // Ours: IPv4 NLRI with our IPv6 address as next hop, which FRR resolves.
    let p = frr_wait_route(&frr, "ipv4", "10.244.1.0/24");
    assert_eq!(p["aspath"]["string"], "Local", "{p}");
    assert!(p["nexthops"].to_string().contains(US6), "{p}");
    assert_eq!(p["valid"], true, "{p}");
    assert!(
        p["largeCommunity"]["string"]
            .to_string()
            .contains("65002:1:2"),
        "{p}"
    );
    let neigh = frr
        .vtysh_json(&format!("show bgp neighbors {US6} json"))
        .unwrap();
    assert!(
        neigh[US6]["neighborCapabilities"]["extendedNexthop"]
            .to_string()
            .contains("advertisedAndReceived"),
        "{neigh}"
    );
    frr_wait_route(&frr, "ipv6", "2001:db8:244::/48");
}

fn md5_frr(password: &str) -> String {
    format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         network 192.0.2.0/24\n exit-address-family\n",
        frr_head(65001, ""),
        frr_neighbor(US4, 65002, &[&format!("password {password}")]),
    )
}

#[test]
fn md5_right_password_establishes() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr = Frr::start(&link.them, &md5_frr("s3cret-key")).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(US4, 65002, &peer(THEM4, 65001, "password = \"s3cret-key\"")),
    );
    tabby.wait_established(THEM4, T);
    frr.wait_established(US4, T).unwrap();
    tabby.wait_route("192.0.2.0/24", T);
}

/// Starts FRR with one key and us with another; checks that nothing establishes.
fn md5_mismatch<'a>(link: &'a Link) -> (Frr, Tabby<'a>) {
    let frr = Frr::start(&link.them, &md5_frr("s3cret-key")).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(US4, 65002, &peer(THEM4, 65001, "password = \"wrong-key\"")),
    );
    never(
        "an Established session with a wrong MD5 key",
        Duration::from_secs(8),
        || {
            (tabby.peer_state(THEM4) == "Established"
                || frr.peer_state(US4).is_ok_and(|s| s == "Established"))
            .then(|| tabby.peer(THEM4))
        },
    );
    let p = tabby.peer(THEM4).unwrap();
    assert_eq!(p["established_count"], 0, "{p}");
    assert_eq!(p["messages_received"]["open"], 0, "{p}");
    (frr, tabby)
}

#[test]
fn md5_wrong_password_never_establishes() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    md5_mismatch(&link);
}

#[test]
fn md5_wrong_password_status_says_why() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let (_frr, tabby) = md5_mismatch(&link);
    // Our connect attempts time out (10 s each): the first timeout puts the cause in the
    // status and the log.
    let p = wait_or(
        "the peer's last_error to name the MD5 password",
        Duration::from_secs(20),
        || {
            let p = tabby.peer(THEM4)?;
            let why = p["last_error"].to_string().to_lowercase();
            (why.contains("md5") && why.contains("password")).then_some(p)
        },
        || format!("{:?}", tabby.peer(THEM4)),
    );
    assert_ne!(p["state"], "Established", "{p}");
    let log = tabby.log().to_lowercase();
    assert!(log.contains("md5"), "the log should say so too");
}

/// Graceful restart on our side, short timers.
const GR: &str = "[graceful_restart]\nrestart_time = 20\nstale_routes_time = 30\n\n";

#[test]
fn route_refresh_from_frr_makes_us_re_advertise() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         no neighbor {US4} soft-reconfiguration inbound\n  network 192.0.2.0/24\n \
         exit-address-family\n",
        frr_head(65001, "").replace(
            "hostname frr\n",
            "hostname frr\ndebug bgp updates\ndebug bgp neighbor-events\n"
        ),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "{GR}{}{}",
                peer(THEM4, 65001, ""),
                originate("10.244.1.0/24", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    frr_wait_route(&frr, "ipv4", "10.244.1.0/24");
    let before = tabby.peer(THEM4).unwrap();
    let rr_before = before["messages_received"]["route_refresh"]
        .as_u64()
        .unwrap_or(0);
    let upd_before = before["messages_sent"]["update"].as_u64().unwrap_or(0);
    vtysh(
        &frr,
        &link.them,
        &[&format!("clear bgp ipv4 unicast {US4} soft in")],
    );
    let after = wait_or(
        "our re-advertisement after FRR's ROUTE-REFRESH",
        T,
        || {
            tabby.peer(THEM4).filter(|p| {
                p["messages_received"]["route_refresh"]
                    .as_u64()
                    .unwrap_or(0)
                    > rr_before
                    && p["messages_sent"]["update"].as_u64().unwrap_or(0) > upd_before
            })
        },
        || tabby.log_tail(20),
    );
    assert_eq!(after["established_count"], 1, "no reset: {after}");
    frr_wait_route(&frr, "ipv4", "10.244.1.0/24");

    // The other way: a new import policy on our side is applied by asking FRR for a
    // ROUTE-REFRESH (we keep no pre-policy copy of what FRR sent). FRR 8.4 ignores a
    // ROUTE-REFRESH until it has sent its End-of-RIB ("rcvd route-refresh (REQUEST) … before
    // EoR" in its log), and it sends End-of-RIB only to peers that offered graceful restart:
    // hence `[graceful_restart]` in this test.
    let sent_rr = after["messages_sent"]["route_refresh"]
        .as_u64()
        .unwrap_or(0);
    let with_policy = |import: &str| {
        config(
            US4,
            65002,
            &format!(
                "{GR}{}{}[[policies]]\nname = \"none\"\ndefault = \"reject\"\n\n",
                peer(THEM4, 65001, "").replace(
                    "import_policy = \"all\"",
                    &format!("import_policy = \"{import}\"")
                ),
                originate("10.244.1.0/24", 65002)
            ),
        )
    };
    tabby.wait_route("192.0.2.0/24", T);
    tabby.reload(&with_policy("none"));
    wait_or(
        "FRR's route gone under the new import policy",
        Duration::from_secs(10),
        || {
            let (code, _) = tabby.get("/rib/192.0.2.0/24")?;
            (code == 404).then_some(())
        },
        || {
            format!(
                "ours: {:?}\nrib: {:?}\nFRR: {}",
                tabby.peer(THEM4),
                tabby.json("/rib/192.0.2.0/24"),
                frr.bgpd_log()
            )
        },
    );
    tabby.reload(&with_policy("all"));
    wait_or(
        "FRR's route back after our ROUTE-REFRESH",
        T,
        || tabby.json("/rib/192.0.2.0/24"),
        || {
            format!(
                "ours: {:?}\nFRR: {}",
                tabby.peer(THEM4),
                frr.vtysh(&format!("show bgp neighbors {US4} json"))
                    .unwrap_or_default()
            )
        },
    );
    let p = tabby.peer(THEM4).unwrap();
    assert!(
        p["messages_sent"]["route_refresh"].as_u64().unwrap_or(0) > sent_rr,
        "{p}"
    );
    assert_eq!(p["established_count"], 1, "no reset: {p}");
}

/// Graceful restart off on both sides. FRR 8.4 ignores a ROUTE-REFRESH until it has sent its
/// End-of-RIB and sends End-of-RIB only to peers with the Graceful Restart capability; we offer
/// the RFC 4724 §3 End-of-RIB-only form (restart time 0, no families), so a new import policy
/// takes effect through a ROUTE-REFRESH: FRR's route disappears and comes back without a
/// session reset. And that capability does not make FRR a helper: killed, our route goes at
/// once instead of being kept as stale.
#[test]
fn import_policy_change_on_a_non_gr_frr_peer_takes_effect() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         no neighbor {US4} soft-reconfiguration inbound\n  network 192.0.2.0/24\n \
         exit-address-family\n",
        frr_head(65001, "").replace(
            "hostname frr\n",
            "hostname frr\ndebug bgp updates\ndebug bgp neighbor-events\n"
        ),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let with_policy = |import: &str| {
        config(
            US4,
            65002,
            &format!(
                "{}{}[[policies]]\nname = \"none\"\ndefault = \"reject\"\n\n",
                peer(THEM4, 65001, "").replace(
                    "import_policy = \"all\"",
                    &format!("import_policy = \"{import}\"")
                ),
                originate("10.244.1.0/24", 65002)
            ),
        )
    };
    let mut tabby = Tabby::start(&link.us, &with_policy("all"));
    tabby.wait_established(THEM4, T);
    tabby.wait_route("192.0.2.0/24", T);
    frr_wait_route(&frr, "ipv4", "10.244.1.0/24");
    let neigh = frr
        .vtysh_json(&format!("show bgp neighbors {US4} json"))
        .unwrap();
    let n = &neigh[US4];
    // FRR saw our capability (it advertises its own helper-mode one too) and sent us its
    // End-of-RIB, which is what it waits for before answering a ROUTE-REFRESH.
    assert!(
        n["neighborCapabilities"]["gracefulRestart"]
            .to_string()
            .contains("Received"),
        "{neigh}"
    );
    let sent_rr = tabby.peer(THEM4).unwrap()["messages_sent"]["route_refresh"]
        .as_u64()
        .unwrap_or(0);

    tabby.reload(&with_policy("none"));
    tabby.wait_no_route("192.0.2.0/24", Duration::from_secs(10));
    tabby.reload(&with_policy("all"));
    wait_or(
        "FRR's route back after our ROUTE-REFRESH (FRR answers only after its End-of-RIB)",
        T,
        || tabby.json("/rib/192.0.2.0/24"),
        || {
            format!(
                "ours: {:?}\nFRR: {}\n{}",
                tabby.peer(THEM4),
                frr.vtysh(&format!("show bgp neighbors {US4} json"))
                    .unwrap_or_default(),
                frr.bgpd_log()
            )
        },
    );
    let p = tabby.peer(THEM4).unwrap();
    assert!(
        p["messages_sent"]["route_refresh"].as_u64().unwrap_or(0) > sent_rr,
        "{p}"
    );
    assert_eq!(p["established_count"], 1, "no reset: {p}");
    assert!(
        !frr.bgpd_log().contains("before EoR"),
        "FRR ignored our ROUTE-REFRESH:\n{}",
        frr.bgpd_log()
    );

    // Not a restarting speaker to FRR: killed, our route goes at once (no stale keeping).
    let t0 = Instant::now();
    tabby.kill9();
    frr_wait_no_route(&frr, "ipv4", "10.244.1.0/24");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "FRR kept our route {:?} after we died",
        t0.elapsed()
    );
}

#[test]
fn hold_timer_expires_on_a_silent_link_and_the_session_recovers() {
    if skip(&[Frr::BGPD, Frr::ZEBRA, "vtysh", "nft"]) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         network 192.0.2.0/24\n exit-address-family\n",
        frr_head(65001, ""),
        frr_neighbor(US4, 65002, &[]),
    );
    let _frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &peer(THEM4, 65001, "hold_time = 3\nkeepalive = 1"),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_route("192.0.2.0/24", T);
    link.blackhole(true);
    let dropped_at = Instant::now();
    let down = wait_or(
        "the hold timer to expire",
        Duration::from_secs(15),
        || tabby.peer(THEM4).filter(|p| p["state"] != "Established"),
        || tabby.log_tail(20),
    );
    let took = dropped_at.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "down too early ({took:?}): {down}"
    );
    assert!(
        down["last_error"]
            .to_string()
            .contains("Hold Timer Expired"),
        "{down}"
    );
    tabby.wait_no_route("192.0.2.0/24", T);
    link.blackhole(false);
    let up = tabby.wait_established(THEM4, T);
    assert!(up["established_count"].as_u64() >= Some(2), "{up}");
    tabby.wait_route("192.0.2.0/24", T);
}

#[test]
fn max_prefix_trips_with_cease_1_seen_by_frr() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let nets: String = (0..5)
        .map(|i| format!("  network 192.0.{i}.0/24\n"))
        .collect();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n{nets} exit-address-family\n",
        frr_head(65001, ""),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &peer(THEM4, 65001, "max_prefix = { limit = 3 }"),
        ),
    );
    let p = wait_or(
        "max-prefix to trip",
        T,
        || {
            tabby
                .peer(THEM4)
                .filter(|p| p["max_prefix_tripped"] == true)
        },
        || tabby.log_tail(20),
    );
    assert_eq!(p["last_notification_sent"]["code"], 6, "{p}");
    assert_eq!(p["last_notification_sent"]["subcode"], 1, "{p}");
    let n = wait_or(
        "FRR to record our Cease / Maximum Number of Prefixes Reached",
        T,
        || {
            let v = frr
                .vtysh_json(&format!("show bgp neighbors {US4} json"))
                .ok()?;
            let n = v[US4].clone();
            n["lastNotificationReason"]
                .as_str()
                .is_some_and(|r| r.contains("Cease") && r.contains("Maximum"))
                .then_some(n)
        },
        || frr.bgpd_log(),
    );
    assert_ne!(n["bgpState"], "Established", "{n}");
    // Stays down: no restart_after configured.
    never(
        "a new session after max-prefix",
        Duration::from_secs(3),
        || (tabby.peer_state(THEM4) == "Established").then_some(()),
    );
}

fn kernel_route(ns: &tabby_netlab::Netns, prefix: &str) -> bool {
    ns.ip(&["route", "show", prefix])
        .is_ok_and(|out| out.contains(prefix))
}

#[test]
fn graceful_restart_frr_keeps_our_routes_while_we_restart() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n exit-address-family\n",
        frr_head(
            65001,
            " bgp graceful-restart\n bgp graceful-restart restart-time 20\n"
        ),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let mut tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "[graceful_restart]\nrestart_time = 20\nstale_routes_time = 30\n\n{}{}",
                peer(THEM4, 65001, ""),
                originate("10.244.1.0/24", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    frr_wait_route(&frr, "ipv4", "10.244.1.0/24");
    wait("FRR to install our route in the kernel", T, || {
        kernel_route(&link.them, "10.244.1.0/24").then_some(())
    });
    let neigh = frr
        .vtysh_json(&format!("show bgp neighbors {US4} json"))
        .unwrap();
    assert!(
        neigh[US4]["neighborCapabilities"]["gracefulRestart"]
            .to_string()
            .contains("advertisedAndReceived"),
        "{neigh}"
    );

    // From here on, FRR's kernel route must never go away: a watcher polls every 20 ms.
    // (FRR's `lastUpdate` is no flap signal: it moves even for an identical re-announcement
    // of a stale path, and jitters by a second between two reads.)
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let ns = link.them.name().to_string();
        std::thread::spawn(move || {
            let mut polls = 0u32;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new("ip")
                    .args(["-n", &ns, "route", "show", "10.244.1.0/24"])
                    .output();
                if !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.244.1.0/24"))
                {
                    return Err(format!("kernel route missing at poll {polls}"));
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(polls)
        })
    };
    tabby.kill9();
    // FRR notices the dead session and keeps our route, stale, and in the kernel.
    wait_or(
        "FRR to mark our route stale",
        T,
        || {
            assert!(
                kernel_route(&link.them, "10.244.1.0/24"),
                "FRR removed our route from the kernel during our restart"
            );
            frr_route(&frr, "ipv4", "10.244.1.0/24").filter(|p| p["stale"] == true)
        },
        || frr.bgpd_log(),
    );
    tabby.restart(&["--graceful-restart"]);
    tabby.wait_established(THEM4, T);
    wait_or(
        "FRR to see our route fresh again (after our End-of-RIB)",
        T,
        || {
            assert!(
                kernel_route(&link.them, "10.244.1.0/24"),
                "FRR removed our route from the kernel during our restart"
            );
            frr_route(&frr, "ipv4", "10.244.1.0/24").filter(|p| p["stale"] != true)
        },
        || frr.bgpd_log(),
    );
    std::thread::sleep(Duration::from_millis(500));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let polls = watcher
        .join()
        .unwrap()
        .expect("FRR's forwarding entry for our route");
    assert!(polls > 10, "the watcher ran ({polls} polls)");
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
}

#[test]
fn graceful_restart_we_keep_frr_routes_stale_until_its_end_of_rib() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         network 192.0.2.0/24\n exit-address-family\n",
        frr_head(
            65001,
            " bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n \
             bgp graceful-restart restart-time 20\n"
        ),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &format!(
                "[graceful_restart]\nrestart_time = 20\nstale_routes_time = 30\n\n{}",
                peer(THEM4, 65001, "")
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    tabby.wait_route("192.0.2.0/24", T);

    // kill -9 FRR's bgpd: no NOTIFICATION, the TCP session just closes.
    let pid: i32 = std::fs::read_to_string(frr.dir().join("bgpd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let present = |r: Option<Value>| {
        r.unwrap_or_else(|| panic!("192.0.2.0/24 was dropped during FRR's restart"))
    };
    wait_or(
        "us to keep FRR's route as stale",
        T,
        || {
            let r = present(tabby.json("/rib/192.0.2.0/24"));
            (best(&r)["stale"] == true).then_some(r)
        },
        || tabby.log_tail(20),
    );
    drop(frr);
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR again");
    frr.wait_established(US4, T).unwrap();
    wait_or(
        "FRR's route to be fresh again after its End-of-RIB",
        T,
        || {
            let r = present(tabby.json("/rib/192.0.2.0/24"));
            (best(&r)["stale"] == false).then_some(r)
        },
        || tabby.log_tail(20),
    );
}

#[test]
fn two_octet_peer_as_trans_on_the_wire_and_the_path_rebuilt_on_our_side() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    // FRR in AS 65010 with no capabilities at all (an "old" 2-octet speaker, RFC 6793 §4.1):
    // we are AS_TRANS in its AS_PATHs and our real AS travels in AS4_PATH, and its route's
    // 4-octet AS reaches us the same way.
    let frr_conf = format!(
        "hostname frr\nroute-map PRE permit 10\n set as-path prepend 4200000099\n!\n\
         router bgp 65010\n bgp router-id {THEM4}\n no bgp ebgp-requires-policy\n \
         no bgp network import-check\n{} address-family ipv4 unicast\n  \
         network 198.51.100.0/24 route-map PRE\n exit-address-family\n",
        frr_neighbor(US4, 4_200_000_002, &["dont-capability-negotiate"]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            4_200_000_002,
            &format!(
                "{}{}",
                peer(THEM4, 65010, ""),
                originate("10.244.1.0/24", 65002)
            ),
        ),
    );
    tabby.wait_established(THEM4, T);
    frr.wait_established(US4, T).unwrap();
    let neigh = frr
        .vtysh_json(&format!("show bgp neighbors {US4} json"))
        .unwrap();
    assert!(
        !neigh[US4]["neighborCapabilities"]
            .to_string()
            .contains("4byteAs\":\"advertisedAndReceived"),
        "no 4-octet AS on this session: {neigh}"
    );
    let r = tabby.wait_route("198.51.100.0/24", T);
    assert_eq!(best(&r)["attrs"]["as_path"], "65010 4200000099", "{r}");
    // On the wire to a 2-octet peer our AS is AS_TRANS. (FRR 8.4 in `dont-capability-negotiate`
    // mode still notes our AS4 capability and so does not merge our AS4_PATH back in; the
    // BIRD suite checks the merge on the other side.)
    let p = frr_wait_route(&frr, "ipv4", "10.244.1.0/24");
    assert_eq!(p["aspath"]["string"], "23456", "{p}");
}

fn gtsm_frr(frr_gtsm: bool) -> String {
    let extra: &[&str] = if frr_gtsm {
        &["ttl-security hops 1"]
    } else {
        &[]
    };
    format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         network 192.0.2.0/24\n exit-address-family\n",
        frr_head(65001, ""),
        frr_neighbor(US4, 65002, extra),
    )
}

#[test]
fn gtsm_with_frr_establishes_when_both_sides_use_it() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr = Frr::start(&link.them, &gtsm_frr(true)).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(US4, 65002, &peer(THEM4, 65001, "ttl_security = 1")),
    );
    tabby.wait_established(THEM4, T);
    frr.wait_established(US4, T).unwrap();
    tabby.wait_route("192.0.2.0/24", T);
}

#[test]
fn gtsm_refuses_a_peer_that_sends_ttl_1() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    // FRR's eBGP packets leave with TTL 1; RFC 5082 wants 255 on our side.
    let frr = Frr::start(&link.them, &gtsm_frr(false)).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(US4, 65002, &peer(THEM4, 65001, "ttl_security = 1")),
    );
    never(
        "an Established session with a TTL-1 peer under GTSM",
        Duration::from_secs(6),
        || {
            (tabby.peer_state(THEM4) == "Established"
                || frr.peer_state(US4).is_ok_and(|s| s == "Established"))
            .then(|| tabby.peer(THEM4))
        },
    );
    assert_eq!(tabby.peer(THEM4).unwrap()["messages_received"]["open"], 0);
}

#[test]
fn max_prefix_with_restart_after_comes_back() {
    if skip(FRR_PROGRAMS) {
        return;
    }
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n  \
         network 192.0.1.0/24\n  network 192.0.2.0/24\n exit-address-family\n",
        frr_head(65001, ""),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let tabby = Tabby::start(
        &link.us,
        &config(
            US4,
            65002,
            &peer(
                THEM4,
                65001,
                "max_prefix = { limit = 1, restart_after = 2 }",
            ),
        ),
    );
    wait_or(
        "max-prefix to trip",
        T,
        || {
            tabby
                .peer(THEM4)
                .filter(|p| p["max_prefix_tripped"] == true)
        },
        || tabby.log_tail(20),
    );
    // After restart_after we connect again (and, FRR still sending two routes, trip again).
    let p = wait_or(
        "a second session after restart_after",
        T,
        || {
            tabby
                .peer(THEM4)
                .filter(|p| p["established_count"].as_u64() >= Some(2))
        },
        || tabby.log_tail(20),
    );
    // The second session trips too. (The last NOTIFICATION itself may be a Cease /
    // Connection Collision Resolution when both sides reconnect at once, so count trips.)
    wait_or(
        "the second max-prefix trip",
        T,
        || {
            (tabby
                .log()
                .matches("Maximum Number of Prefixes Reached")
                .count()
                >= 2)
                .then_some(())
        },
        || format!("{p}\n{}", tabby.log_tail(30)),
    );
    wait_or(
        "FRR to count two established sessions",
        T,
        || {
            let n = frr
                .vtysh_json(&format!("show bgp neighbors {US4} json"))
                .ok()?;
            (n[US4]["connectionsEstablished"].as_u64() >= Some(2)).then_some(())
        },
        || frr.bgpd_log(),
    );
}

/// RFC 7911 send to FRR: two GoBGP routers (each in its own namespace, plain BGP) announce
/// 198.51.100.0/24; we send FRR, which offers ADD-PATH receive, both paths under their own
/// path identifiers (FRR shows them as `addpathRxId`). Withdrawing one at its source withdraws
/// its id alone: FRR keeps the other path, the session stays up.
#[test]
fn add_path_send_to_frr_two_paths_then_one() {
    if skip(&[Frr::BGPD, Frr::ZEBRA, "vtysh", "gobgpd", "gobgp"]) {
        return;
    }
    const PREFIX: &str = "198.51.100.0/24";
    let link = Link::new();
    let frr_conf = format!(
        "{}{} address-family ipv4 unicast\n  neighbor {US4} activate\n exit-address-family\n",
        frr_head(65010, ""),
        frr_neighbor(US4, 65002, &[]),
    );
    let frr = Frr::start(&link.them, &frr_conf).expect("FRR");
    let (sources, tabby) = add_path_sources(&link, 65010, PREFIX, T);
    frr.wait_established(US4, T).unwrap();
    tabby.wait_route_where(PREFIX, T, |r| {
        r["paths"].as_array().is_some_and(|p| p.len() == 2)
    });
    let frr_paths = |frr: &Frr| -> Vec<Value> {
        frr.vtysh_json(&format!("show bgp ipv4 unicast {PREFIX} json"))
            .ok()
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default()
    };
    let paths = wait_or(
        "FRR to hold two paths from us",
        T,
        || {
            let p = frr_paths(&frr);
            (p.len() == 2).then_some(p)
        },
        || format!("{}\n{}", frr.bgpd_log(), tabby.log_tail(30)),
    );
    let mut as_paths: Vec<String> = paths
        .iter()
        .map(|p| p["aspath"]["string"].as_str().unwrap_or("").to_string())
        .collect();
    as_paths.sort();
    assert_eq!(as_paths, ["65002 65021", "65002 65022"], "{paths:?}");
    let mut ids: Vec<u64> = paths
        .iter()
        .filter_map(|p| p["addpathRxId"].as_u64())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2], "FRR saw our path ids: {paths:?}");
    let neighbor = frr
        .vtysh_json(&format!("show bgp neighbors {US4} json"))
        .expect("neighbor");
    assert!(
        neighbor.to_string().contains("addPath"),
        "ADD-PATH negotiated: {neighbor}"
    );

    // The first source withdraws: FRR keeps only the second source's path.
    sources[0].withdraw(PREFIX);
    let left = wait_or(
        "FRR to hold one path",
        T,
        || {
            let p = frr_paths(&frr);
            (p.len() == 1).then_some(p)
        },
        || format!("{}\n{}", frr.bgpd_log(), tabby.log_tail(30)),
    );
    assert_eq!(left[0]["aspath"]["string"], "65002 65022", "{left:?}");
    assert_eq!(tabby.peer(THEM4).unwrap()["established_count"], 1);
}
