//! Whole speakers connected through an in-process network, on tokio's paused clock: routes and
//! withdrawals between two and three speakers reach the best-path subscriber with their ECMP
//! next hops; max-prefix (RFC 4486); graceful restart helper (RFC 4724); route reflection (RFC
//! 4456); dynamic configuration that leaves other sessions alone; route refresh on an import
//! policy change.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tabby_bgp::fsm::{Cease, FsmConfig, State};
use tabby_bgp::negotiate::{GracefulRestartConfig, LocalConfig};
use tabby_bgp::policy::{
    ActionsConfig, MatchConfig, PolicyConfig, PrefixRangeConfig, RuleConfig, Verdict,
};
use tabby_bgp::rib::{NextHop, PathAttrs, Prefix};
use tabby_bgp::session::{
    Command, SessionConfig, SessionEvent, SessionEventKind, incoming_channel, spawn,
};
use tabby_bgp::speaker::{
    GracefulRestartSettings, MaxPrefixConfig, MemoryNetwork, PeerChange, PeerConfig, PeerStatus,
    RouteUpdate, Speaker, SpeakerConfig, Subscription,
};
use tabby_bgp::wire::{Asn, Family};
use tokio::time::timeout;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

mod support;
use support::speaker::{
    ebgp_peer, ebgp_speaker, established, eventually, ip, p, peer, peer_both, self_attrs, start,
    status,
};

/// A subscriber's view of the forwarding table, as an agent would keep it.
struct Fib {
    sub: Subscription,
    table: HashMap<Prefix, Vec<IpAddr>>,
    /// Every update received, in order.
    log: Vec<RouteUpdate>,
}

impl Fib {
    async fn new(s: &Speaker) -> Fib {
        Fib {
            sub: s.subscribe().await.unwrap(),
            table: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn apply(&mut self, batch: Vec<RouteUpdate>) {
        for u in batch {
            if u.next_hops.is_empty() {
                self.table.remove(&u.prefix);
            } else {
                self.table.insert(u.prefix, u.next_hops.clone());
            }
            self.log.push(u);
        }
    }

    /// Waits until `prefix` has next hops `want` (empty: no route).
    async fn expect(&mut self, prefix: Prefix, want: &[Ipv4Addr]) {
        let want: Vec<IpAddr> = want.iter().map(|a| ip(*a)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            if self.table.get(&prefix).cloned().unwrap_or_default() == want {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match timeout(left, self.sub.next_batch()).await {
                Ok(Some(batch)) => self.apply(batch),
                Ok(None) => panic!("speaker stopped; log {:?}", self.log),
                Err(_) => panic!("{prefix} never had next hops {want:?}; log {:?}", self.log),
            }
        }
    }

    /// Takes whatever is pending without waiting.
    fn drain(&mut self) {
        while let Some(b) = self.sub.try_next_batch() {
            self.apply(b);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn two_speakers_exchange_routes_and_withdrawals() {
    let net = MemoryNetwork::new();
    let a = ebgp_speaker(&net, A, 65001, 1).await;
    let b = ebgp_speaker(&net, B, 65002, 1).await;
    peer_both(&a, (A, 65001), &b, (B, 65002), ebgp_peer).await;
    let mut sub = Fib::new(&b).await;
    established(&a, B).await;
    established(&b, A).await;
    // The initial (empty) table ends with End-of-RIB (RFC 4724 §2); the status says when it
    // arrived (the agent sweeps routes kept from before a restart on it).
    eventually(Duration::from_secs(30), "End-of-RIB at B", || async {
        status(&b, A).await.end_of_rib.then_some(())
    })
    .await;

    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    // eBGP: next hop self (A's address on the session), A's AS prepended.
    sub.expect(p("10.1.0.0/24"), &[A]).await;
    let r = b
        .rib_lookup(p("10.1.0.0/24"))
        .await
        .unwrap()
        .expect("in B's RIB");
    assert_eq!(r.paths.len(), 1);
    assert_eq!(r.paths[0].from, Some(ip(A)));
    assert_eq!(r.paths[0].attrs.as_path, "65001");
    assert_eq!(b.adj_rib_in(ip(A)).await.unwrap().len(), 1);
    assert_eq!(a.adj_rib_out(ip(B)).await.unwrap().len(), 1);
    // Counted as changes flow (the first status query above counted from the table).
    assert_eq!(status(&a, B).await.prefixes_advertised, 1);

    assert!(a.withdraw(p("10.1.0.0/24")).await.unwrap());
    sub.expect(p("10.1.0.0/24"), &[]).await;
    assert!(b.rib_lookup(p("10.1.0.0/24")).await.unwrap().is_none());

    let st = status(&a, B).await;
    assert!(st.messages_sent.update >= 2, "{st:?}");
    assert!(st.messages_received.keepalive >= 1, "{st:?}");
    assert_eq!(st.prefixes_advertised, 0);
    let m = b.metrics().await.unwrap();
    assert!(m.sessions_by_state.contains(&(State::Established, 1)));
    assert_eq!(m.sessions_by_state.len(), 6);
    assert!(m.updates_processed >= 2, "{m:?}");
    assert_eq!(m.peers[0].prefixes_received, 1);
    assert_eq!(m.peers[0].prefixes_accepted, 0);
    a.shutdown().await.unwrap();
    // B hears Cease / Administrative Shutdown, in words.
    let st = down(&b, A, "session down at B").await;
    assert!(
        !st.end_of_rib,
        "a session that is down has no complete table"
    );
    let n = st
        .last_notification_received
        .expect("NOTIFICATION received");
    assert_eq!((n.code, n.subcode), (6, 2));
    assert!(n.text.contains("Administrative Shutdown"), "{}", n.text);
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn three_speakers_ecmp_set_reaches_the_subscriber() {
    let net = MemoryNetwork::new();
    let a = ebgp_speaker(&net, A, 65001, 1).await;
    let b = ebgp_speaker(&net, B, 65002, 1).await;
    let c = ebgp_speaker(&net, C, 65003, 4).await;
    peer_both(&c, (C, 65003), &a, (A, 65001), ebgp_peer).await;
    peer_both(&c, (C, 65003), &b, (B, 65002), ebgp_peer).await;
    let mut sub = Fib::new(&c).await;
    established(&c, A).await;
    established(&c, B).await;

    // Equal AS path length and origin from two neighbour ASes: one ECMP set of two next hops.
    a.originate(p("10.9.0.0/24"), self_attrs()).await.unwrap();
    b.originate(p("10.9.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.9.0.0/24"), &[A, B]).await;
    let r = c.rib_lookup(p("10.9.0.0/24")).await.unwrap().unwrap();
    assert_eq!(r.paths.len(), 2);
    assert!(r.paths.iter().all(|x| x.multipath));
    assert_eq!(r.paths.iter().filter(|x| x.best).count(), 1);

    // One withdraws: the set shrinks to the other; the second withdraws: gone.
    a.withdraw(p("10.9.0.0/24")).await.unwrap();
    sub.expect(p("10.9.0.0/24"), &[B]).await;
    b.withdraw(p("10.9.0.0/24")).await.unwrap();
    sub.expect(p("10.9.0.0/24"), &[]).await;

    // A late subscriber starts with the current table.
    a.originate(p("10.8.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.8.0.0/24"), &[A]).await;
    let mut late = c.subscribe().await.unwrap();
    let first = late.next_batch().await.unwrap();
    assert_eq!(
        first,
        vec![RouteUpdate {
            prefix: p("10.8.0.0/24"),
            next_hops: vec![ip(A)],
        }]
    );
    // A (eBGP) does not get its own route back from C: AS loop on C's export side.
    assert!(c.adj_rib_out(ip(A)).await.unwrap().is_empty());
    assert_eq!(c.adj_rib_out(ip(B)).await.unwrap().len(), 1);
}

fn reject_prefix(name: &str, prefix: &str) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        rules: vec![RuleConfig {
            name: None,
            matches: MatchConfig {
                prefix: vec![PrefixRangeConfig {
                    prefix: prefix.into(),
                    ge: None,
                    le: None,
                }],
                ..MatchConfig::default()
            },
            set: ActionsConfig::default(),
            then: Verdict::Reject,
        }],
        default: Verdict::Accept,
    }
}

#[tokio::test(start_paused = true)]
async fn max_prefix_trips_cease_1_and_restarts_after_the_timer() {
    let net = MemoryNetwork::new();
    let a = ebgp_speaker(&net, A, 65001, 1).await;
    let b = ebgp_speaker(&net, B, 65002, 1).await;
    let mut to_b = ebgp_peer(B, 65002);
    to_b.max_prefix = Some(MaxPrefixConfig {
        limit: 2,
        restart_after: Some(Duration::from_secs(60)),
    });
    a.add_peer(to_b).await.unwrap();
    b.add_peer(ebgp_peer(A, 65001)).await.unwrap();
    established(&a, B).await;
    for x in ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"] {
        b.originate(p(x), self_attrs()).await.unwrap();
    }
    // RFC 4486 §4: Cease / Maximum Number of Prefixes Reached, and the routes are gone.
    let st = eventually(Duration::from_secs(30), "max-prefix trip", || async {
        let st = status(&a, B).await;
        st.max_prefix_tripped.then_some(st)
    })
    .await;
    assert_ne!(st.state, State::Established);
    assert!(st.max_prefix_restart_at.is_some());
    let n = st.last_notification_sent.expect("Cease sent");
    assert_eq!((n.code, n.subcode), (6, 1), "{}", n.text);
    assert!(a.adj_rib_in(ip(B)).await.unwrap().is_empty());
    let at_b = status(&b, A).await;
    assert_eq!(
        at_b.last_notification_received.map(|n| (n.code, n.subcode)),
        Some((6, 1))
    );
    // Below the limit again; after the restart timer the session comes back and stays.
    b.withdraw(p("10.3.0.0/24")).await.unwrap();
    let st = eventually(Duration::from_secs(300), "session back", || async {
        let st = status(&a, B).await;
        (st.state == State::Established && !st.max_prefix_tripped).then_some(st)
    })
    .await;
    assert_eq!(st.established_count, 2);
    eventually(Duration::from_secs(30), "two routes", || async {
        (a.adj_rib_in(ip(B)).await.unwrap().len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let st = status(&a, B).await;
    assert_eq!((st.state, st.established_count), (State::Established, 2));
}

fn gr_speaker(net: &MemoryNetwork, me: Ipv4Addr, asn: u32, restarting: bool) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.graceful_restart = Some(GracefulRestartSettings {
        restart_time: Duration::from_secs(90),
        stale_routes_time: Duration::from_secs(300),
        restarting,
    });
    Speaker::start_with_transport(cfg, net.transport(ip(me))).unwrap()
}

/// A and B in AS 65000, both graceful-restart capable (neither restarting), peered over
/// iBGP.
async fn gr_pair(net: &MemoryNetwork) -> (Speaker, Speaker) {
    let a = gr_speaker(net, A, 65000, false);
    let b = gr_speaker(net, B, 65000, false);
    peer_both(&a, (A, 65000), &b, (B, 65000), peer).await;
    (a, b)
}

/// Waits until `s`'s session with `peer` is no longer Established.
async fn down(s: &Speaker, peer: Ipv4Addr, what: &str) -> PeerStatus {
    eventually(Duration::from_secs(30), what, || async {
        let st = status(s, peer).await;
        (st.state != State::Established).then_some(st)
    })
    .await
}

/// Both speakers restart at once (R bit on both sides): RFC 4724 §4.1 (a) says a restarting
/// speaker does not wait for End-of-RIB from peers that are restarting too, so each ends its
/// selection deferral as soon as the session is up and sends its table — not at the deferral
/// timer (3/4 of the 90 s restart time), which is what waiting for each other would cost.
#[tokio::test(start_paused = true)]
async fn two_restarting_speakers_do_not_wait_for_each_other() {
    let net = MemoryNetwork::new();
    let a = gr_speaker(&net, A, 65000, true);
    let b = gr_speaker(&net, B, 65000, true);
    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    b.originate(p("10.2.0.0/24"), self_attrs()).await.unwrap();
    let (mut fa, mut fb) = (Fib::new(&a).await, Fib::new(&b).await);
    let start = tokio::time::Instant::now();
    peer_both(&a, (A, 65000), &b, (B, 65000), peer).await;
    fa.expect(p("10.2.0.0/24"), &[B]).await;
    fb.expect(p("10.1.0.0/24"), &[A]).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "tables exchanged {:?} after peering (the deferral timer is 67.5 s)",
        start.elapsed()
    );
}

/// A restarting speaker waits for End-of-RIB from its graceful-restart peers (RFC 4724 §4.1);
/// when the one it waits for is deconfigured, the deferral ends then and the other peer gets
/// its table, instead of at the deferral timer.
#[tokio::test(start_paused = true)]
async fn removing_the_peer_a_deferral_waits_for_ends_it() {
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    let net = MemoryNetwork::new();
    let a = gr_speaker(&net, A, 65000, true);
    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    // B: graceful-restart capable, not restarting: A waits for its End-of-RIB, which never
    // comes because B is configured but never started.
    a.add_peer(peer(B, 65000)).await.unwrap();
    let c = gr_speaker(&net, C, 65000, false);
    let mut fc = Fib::new(&c).await;
    peer_both(&a, (A, 65000), &c, (C, 65000), peer).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    fc.drain();
    assert!(
        !fc.table.contains_key(&p("10.1.0.0/24")),
        "A still defers while it waits for B"
    );
    let start = tokio::time::Instant::now();
    a.remove_peer(ip(B)).await.unwrap();
    fc.expect(p("10.1.0.0/24"), &[A]).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn graceful_restart_helper_keeps_stale_routes_and_sweeps_on_end_of_rib() {
    let net = MemoryNetwork::new();
    let (a, b) = gr_pair(&net).await;
    let mut sub = Fib::new(&a).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    b.originate(p("10.2.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.2.0.0/24"), &[B]).await;

    // B restarts: its connection closes without a NOTIFICATION. A keeps both routes, stale.
    b.shutdown_for_restart().await.unwrap();
    let st = down(&a, B, "A notices").await;
    assert!(st.stale_until.is_some(), "{st:?}");
    assert_eq!(st.last_notification_received, None);
    let r = a.rib_lookup(p("10.1.0.0/24")).await.unwrap().unwrap();
    assert!(r.paths[0].stale);

    // B is back (R bit set) and announces only 10.1; its End-of-RIB sweeps 10.2.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let b2 = gr_speaker(&net, B, 65000, true);
    b2.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    b2.add_peer(peer(A, 65000)).await.unwrap();
    sub.expect(p("10.2.0.0/24"), &[]).await;
    let r = a.rib_lookup(p("10.1.0.0/24")).await.unwrap().unwrap();
    assert!(!r.paths[0].stale);
    let st = status(&a, B).await;
    assert_eq!(st.stale_until, None);
    assert_eq!(st.state, State::Established);
    // 10.1 never left the forwarding table.
    sub.drain();
    assert!(
        !sub.log
            .iter()
            .any(|u| u.prefix == p("10.1.0.0/24") && u.next_hops.is_empty()),
        "{:?}",
        sub.log
    );
}

/// RFC 4724 §4.2: a helper does not hold a restarting peer off with its idle hold (5 s here):
/// the peer's new connection is taken as soon as it comes. Without the quick restart, B's
/// first attempts are refused while A sits in Idle, and the session is back only after A's
/// idle hold plus B's ConnectRetry (≈ 6 s).
#[tokio::test(start_paused = true)]
async fn graceful_restart_helper_takes_the_restarting_peer_back_at_once() {
    let net = MemoryNetwork::new();
    let (a, b) = gr_pair(&net).await;
    let mut sub = Fib::new(&a).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.1.0.0/24"), &[B]).await;
    b.shutdown_for_restart().await.unwrap();
    down(&a, B, "A notices").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b2 = gr_speaker(&net, B, 65000, true);
    b2.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    let back = tokio::time::Instant::now();
    b2.add_peer(peer(A, 65000)).await.unwrap();
    eventually(Duration::from_secs(30), "A re-establishes", || async {
        (status(&a, B).await.state == State::Established).then_some(())
    })
    .await;
    let took = back.elapsed();
    assert!(took < Duration::from_millis(1500), "back after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn graceful_restart_helper_sweeps_on_the_restart_timer() {
    let net = MemoryNetwork::new();
    let (a, b) = gr_pair(&net).await;
    let mut sub = Fib::new(&a).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.1.0.0/24"), &[B]).await;
    b.shutdown_for_restart().await.unwrap();
    let down_at = tokio::time::Instant::now();
    // B never returns: the route stays for B's restart time (90 s), then goes.
    sub.expect(p("10.1.0.0/24"), &[]).await;
    let waited = down_at.elapsed();
    assert!(
        waited >= Duration::from_secs(85) && waited <= Duration::from_secs(100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hard_close_without_graceful_restart_drops_routes_at_once() {
    let net = MemoryNetwork::new();
    let a = start(&net, A, 65000, 1);
    let b = start(&net, B, 65000, 1);
    peer_both(&a, (A, 65000), &b, (B, 65000), peer).await;
    let mut sub = Fib::new(&a).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.1.0.0/24"), &[B]).await;
    let t = tokio::time::Instant::now();
    b.shutdown_for_restart().await.unwrap();
    sub.expect(p("10.1.0.0/24"), &[]).await;
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn route_reflector_reflects_between_clients_with_originator_and_cluster_list() {
    let net = MemoryNetwork::new();
    const R: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    const N: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
    let rr = start(&net, R, 65000, 1);
    let c1 = start(&net, A, 65000, 1);
    let c2 = start(&net, B, 65000, 1);
    let non = start(&net, N, 65000, 1);
    for (addr, client) in [(A, true), (B, true), (N, false)] {
        let mut c = peer(addr, 65000);
        c.route_reflector_client = client;
        rr.add_peer(c).await.unwrap();
    }
    for s in [&c1, &c2, &non] {
        s.add_peer(peer(R, 65000)).await.unwrap();
    }
    let mut sub2 = Fib::new(&c2).await;
    let mut sub_n = Fib::new(&non).await;
    let mut sub1 = Fib::new(&c1).await;

    // Client route: to the other client and to the non-client, next hop unchanged.
    c1.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    sub2.expect(p("10.1.0.0/24"), &[A]).await;
    sub_n.expect(p("10.1.0.0/24"), &[A]).await;
    let r = c2.rib_lookup(p("10.1.0.0/24")).await.unwrap().unwrap();
    assert_eq!(r.paths[0].attrs.originator_id, Some(A));
    assert_eq!(r.paths[0].attrs.cluster_list, vec![R]);
    // The originator got it back in the shared stream and dropped it (ORIGINATOR_ID loop).
    let r = c1.rib_lookup(p("10.1.0.0/24")).await.unwrap().unwrap();
    assert_eq!(r.paths.len(), 1);
    assert_eq!(r.paths[0].from, None);

    // Non-client route: to clients only (RFC 4456 §6).
    non.originate(p("10.4.0.0/24"), self_attrs()).await.unwrap();
    sub1.expect(p("10.4.0.0/24"), &[N]).await;
    sub2.expect(p("10.4.0.0/24"), &[N]).await;
    let out_n = rr.adj_rib_out(ip(N)).await.unwrap();
    assert_eq!(
        out_n.iter().map(|r| r.prefix).collect::<Vec<_>>(),
        vec![p("10.1.0.0/24")]
    );
}

#[tokio::test(start_paused = true)]
async fn changing_one_peer_or_a_policy_leaves_other_sessions_alone() {
    let net = MemoryNetwork::new();
    let a = ebgp_speaker(&net, A, 65001, 1).await;
    let b = ebgp_speaker(&net, B, 65002, 1).await;
    let c = ebgp_speaker(&net, C, 65003, 1).await;
    peer_both(&a, (A, 65001), &b, (B, 65002), ebgp_peer).await;
    peer_both(&a, (A, 65001), &c, (C, 65003), ebgp_peer).await;
    let before = established(&a, B).await;
    established(&a, C).await;
    let mut sub_b = Fib::new(&b).await;
    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    sub_b.expect(p("10.1.0.0/24"), &[A]).await;

    // A peer that never answers, added and removed.
    a.add_peer(ebgp_peer(Ipv4Addr::new(10, 0, 0, 77), 65077))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.remove_peer(ip(Ipv4Addr::new(10, 0, 0, 77)))
        .await
        .unwrap();
    // C reset by a hold-time change: only C.
    let mut c_cfg = ebgp_peer(C, 65003);
    c_cfg.hold_time = Duration::from_secs(60);
    assert_eq!(a.update_peer(c_cfg).await.unwrap(), PeerChange::Reset);
    // A description: live.
    let mut b_cfg = ebgp_peer(B, 65002);
    b_cfg.description = Some("spine".into());
    assert_eq!(
        a.update_peer(b_cfg.clone()).await.unwrap(),
        PeerChange::AppliedLive
    );
    assert_eq!(a.update_peer(b_cfg).await.unwrap(), PeerChange::Unchanged);
    // The export policy B uses changes: re-exported live, 10.1 now withdrawn from B.
    let applied = a
        .set_policy(reject_prefix("all", "10.1.0.0/24"))
        .await
        .unwrap();
    assert!(applied.export_groups >= 1, "{applied:?}");
    sub_b.expect(p("10.1.0.0/24"), &[]).await;
    established(&a, C).await;

    let after = status(&a, B).await;
    assert_eq!(after.state, State::Established);
    assert_eq!(after.since, before.since);
    assert_eq!(after.established_count, 1);
    assert_eq!(after.description.as_deref(), Some("spine"));
    assert_eq!(status(&a, C).await.established_count, 2);
    // An unknown policy name is refused, naming the field.
    let mut bad = ebgp_peer(B, 65002);
    bad.import_policy = Some("nope".into());
    let e = a.update_peer(bad).await.unwrap_err();
    assert!(e.to_string().contains("import_policy"), "{e}");
    assert!(a.remove_policy("all").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn import_policy_change_asks_for_a_route_refresh_not_a_reset() {
    let net = MemoryNetwork::new();
    let a = ebgp_speaker(&net, A, 65001, 1).await;
    let b = ebgp_speaker(&net, B, 65002, 1).await;
    a.set_policy(reject_prefix("no-10-2", "10.2.0.0/24"))
        .await
        .unwrap();
    peer_both(&a, (A, 65001), &b, (B, 65002), ebgp_peer).await;
    established(&a, B).await;
    let mut sub = Fib::new(&a).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    b.originate(p("10.2.0.0/24"), self_attrs()).await.unwrap();
    sub.expect(p("10.2.0.0/24"), &[B]).await;

    let mut cfg = ebgp_peer(B, 65002);
    cfg.import_policy = Some("no-10-2".into());
    assert_eq!(a.update_peer(cfg).await.unwrap(), PeerChange::Refresh);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sub.expect(p("10.2.0.0/24"), &[]).await;
    let held: Vec<Prefix> = a
        .adj_rib_in(ip(B))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.prefix)
        .collect();
    assert_eq!(held, vec![p("10.1.0.0/24")]);
    let st = status(&a, B).await;
    assert_eq!(st.established_count, 1);
    assert!(st.messages_sent.route_refresh >= 1, "{st:?}");
    // B answered with BoRR/EoRR around its table (RFC 7313).
    let at_b = status(&b, A).await;
    assert!(at_b.messages_received.route_refresh >= 1);
    assert!(at_b.messages_sent.route_refresh >= 2, "{at_b:?}");

    // Changing the policy's content refreshes its users again.
    let applied = a
        .set_policy(reject_prefix("no-10-2", "10.1.0.0/24"))
        .await
        .unwrap();
    assert_eq!(applied.refreshed, vec![ip(B)]);
    sub.expect(p("10.2.0.0/24"), &[B]).await;
    sub.expect(p("10.1.0.0/24"), &[]).await;
    assert_eq!(status(&a, B).await.established_count, 1);
}

#[tokio::test(start_paused = true)]
async fn removing_a_gr_peer_sends_hard_reset_so_it_flushes_at_once() {
    let net = MemoryNetwork::new();
    let (a, b) = gr_pair(&net).await;
    let mut fib = Fib::new(&b).await;
    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    fib.expect(p("10.1.0.0/24"), &[A]).await;
    // RFC 8538 §5: Peer De-configured inside a Hard Reset; B must not keep A's routes stale.
    let t = tokio::time::Instant::now();
    a.remove_peer(ip(B)).await.unwrap();
    fib.expect(p("10.1.0.0/24"), &[]).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    let st = status(&b, A).await;
    let n = st.last_notification_received.expect("NOTIFICATION");
    assert_eq!((n.code, n.subcode), (6, 9), "{}", n.text);
    assert_eq!(st.stale_until, None);
}

#[tokio::test(start_paused = true)]
async fn ipv4_routes_over_an_ipv6_session_with_extended_next_hop() {
    let net = MemoryNetwork::new();
    let a6: IpAddr = "2001:db8::1".parse().unwrap();
    let b6: IpAddr = "2001:db8::2".parse().unwrap();
    let a = Speaker::start_with_transport(SpeakerConfig::new(65000, A), net.transport(a6)).unwrap();
    let b = Speaker::start_with_transport(SpeakerConfig::new(65000, B), net.transport(b6)).unwrap();
    for (s, other) in [(&a, b6), (&b, a6)] {
        let mut c = PeerConfig::new(other, 65000);
        c.ipv6_unicast = true;
        c.extended_next_hop = true;
        c.connect_retry = Duration::from_secs(2);
        s.add_peer(c).await.unwrap();
    }
    let mut fib = Fib::new(&b).await;
    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    let v6: Prefix = Prefix::V6("2001:db8:1::/48".parse().unwrap());
    a.originate(
        v6,
        PathAttrs::new(NextHop::V6 {
            global: std::net::Ipv6Addr::UNSPECIFIED,
            link_local: None,
        }),
    )
    .await
    .unwrap();
    // RFC 8950: the IPv4 route's next hop is A's IPv6 session address.
    let want = vec![a6];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        fib.drain();
        if fib.table.get(&p("10.1.0.0/24")) == Some(&want) && fib.table.get(&v6) == Some(&want) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", fib.log);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bare session at `me` toward `target` over the in-memory network, reporting to `events`.
fn raw_session(
    net: &MemoryNetwork,
    me: Ipv4Addr,
    asn: u32,
    target: (Ipv4Addr, u32),
    events: tokio::sync::mpsc::Sender<SessionEvent>,
) -> tokio::sync::mpsc::Sender<Command> {
    let t = net.transport(ip(me));
    let cfg = peer(target.0, target.1);
    let (in_tx, in_rx) = incoming_channel();
    t.register(&cfg, in_tx).unwrap();
    let mut local = LocalConfig::new(Asn(asn), me, Some(Asn(target.1)));
    local.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
        forwarding_preserved: Default::default(),
        notification: true,
    });
    let fsm = FsmConfig {
        idle_hold_time: Duration::from_secs(1),
        ..FsmConfig::default()
    };
    spawn(
        SessionConfig {
            peer: ip(target.0),
            local,
            fsm,
        },
        t.connector(&cfg),
        in_rx,
        events,
    )
    .commands
}

#[tokio::test(start_paused = true)]
async fn restart_state_bit_only_on_the_first_session_after_our_restart() {
    let net = MemoryNetwork::new();
    let s = gr_speaker(&net, A, 65000, true);
    s.add_peer(peer(B, 65000)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let raw = raw_session(&net, B, 65000, (A, 65000), tx);
    let mut r_bits = Vec::new();
    while r_bits.len() < 2 {
        let e = timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("session events")
            .unwrap();
        if let SessionEventKind::Established(n) = e.kind {
            let gr = n.graceful_restart.expect("GR negotiated");
            // RFC 4724 §3: F bit for every family we preserved (and, on a later reconnect,
            // kept forwarding for), R bit only the first time.
            assert_eq!(gr.families.get(&Family::IPV4_UNICAST), Some(&true));
            r_bits.push(gr.restarting);
            if r_bits.len() == 1 {
                // Our side of this session drops it (not the speaker's doing).
                raw.send(Command::Stop(Cease::new(Cease::ADMIN_RESET)))
                    .await
                    .unwrap();
                raw.send(Command::Start).await.unwrap();
            }
        }
    }
    assert_eq!(r_bits, vec![true, false]);
}

#[tokio::test(start_paused = true)]
async fn restarting_speaker_defers_its_table_until_every_peer_sent_end_of_rib() {
    let net = MemoryNetwork::new();
    let a = gr_speaker(&net, A, 65000, false);
    // S restarted: it waits for End-of-RIB from A and from B before sending anything.
    let s = gr_speaker(&net, C, 65000, true);
    s.originate(p("10.5.0.0/24"), self_attrs()).await.unwrap();
    s.add_peer(peer(A, 65000)).await.unwrap();
    s.add_peer(peer(B, 65000)).await.unwrap();
    a.add_peer(peer(C, 65000)).await.unwrap();
    let mut fib = Fib::new(&a).await;
    established(&s, A).await;
    // B never comes up: nothing reaches A until the deferral timer (¾ of the 90 s restart
    // time), then the table does.
    tokio::time::sleep(Duration::from_secs(30)).await;
    fib.drain();
    assert!(fib.log.is_empty(), "{:?}", fib.log);
    let t = tokio::time::Instant::now();
    fib.expect(p("10.5.0.0/24"), &[C]).await;
    assert!(t.elapsed() >= Duration::from_secs(30), "{:?}", t.elapsed());

    // With B up as well, its End-of-RIB ends the wait at once.
    let b = gr_speaker(&net, B, 65000, false);
    let s2 = gr_speaker(&net, Ipv4Addr::new(10, 0, 0, 5), 65000, true);
    s2.originate(p("10.6.0.0/24"), self_attrs()).await.unwrap();
    s2.add_peer(peer(B, 65000)).await.unwrap();
    b.add_peer(peer(Ipv4Addr::new(10, 0, 0, 5), 65000))
        .await
        .unwrap();
    let mut fib_b = Fib::new(&b).await;
    let t = tokio::time::Instant::now();
    fib_b
        .expect(p("10.6.0.0/24"), &[Ipv4Addr::new(10, 0, 0, 5)])
        .await;
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}
