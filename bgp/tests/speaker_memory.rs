//! Whole speakers connected through an in-process network, on tokio's paused clock: routes and
//! withdrawals between two and three speakers reach the best-path subscriber with their ECMP
//! next hops; max-prefix (RFC 4486); graceful restart helper (RFC 4724); route reflection (RFC
//! 4456); dynamic configuration that leaves other sessions alone; route refresh on an import
//! policy change.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tabby_bgp::fsm::State;
use tabby_bgp::policy::{PolicyConfig, Verdict};
use tabby_bgp::rib::{NextHop, PathAttrs, Prefix};
use tabby_bgp::speaker::{
    MemoryNetwork, PeerConfig, PeerStatus, RouteUpdate, Speaker, SpeakerConfig, Subscription,
};
use tokio::time::timeout;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn p(s: &str) -> Prefix {
    Prefix::V4(s.parse().unwrap())
}

fn start(net: &MemoryNetwork, me: Ipv4Addr, asn: u32, max_paths: usize) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.best_path.max_paths = max_paths;
    Speaker::start_with_transport(cfg, net.transport(ip(me))).unwrap()
}

fn peer(addr: Ipv4Addr, asn: u32) -> PeerConfig {
    let mut c = PeerConfig::new(ip(addr), asn);
    c.hold_time = Duration::from_secs(30);
    c.connect_retry = Duration::from_secs(2);
    c
}

/// eBGP needs policies both ways (RFC 8212).
fn ebgp_peer(addr: Ipv4Addr, asn: u32) -> PeerConfig {
    let mut c = peer(addr, asn);
    c.import_policy = Some("all".into());
    c.export_policy = Some("all".into());
    c
}

fn accept_all() -> PolicyConfig {
    PolicyConfig {
        name: "all".into(),
        rules: Vec::new(),
        default: Verdict::Accept,
    }
}

fn self_attrs() -> PathAttrs {
    PathAttrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED))
}

/// Polls `f` (in paused time) until it yields `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(s: &Speaker, peer: Ipv4Addr) -> PeerStatus {
    s.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.address == ip(peer))
        .expect("peer configured")
}

async fn established(s: &Speaker, peer: Ipv4Addr) -> PeerStatus {
    eventually(Duration::from_secs(60), "Established", || async {
        let st = status(s, peer).await;
        (st.state == State::Established).then_some(st)
    })
    .await
}

/// Reads batches until `prefix` has `want` next hops (empty: gone).
async fn route(sub: &mut Subscription, prefix: Prefix, want: &[Ipv4Addr]) {
    let want: Vec<IpAddr> = want.iter().map(|a| ip(*a)).collect();
    let mut seen: Vec<RouteUpdate> = Vec::new();
    let r = timeout(Duration::from_secs(60), async {
        loop {
            let batch = sub.next_batch().await.expect("speaker running");
            for u in batch {
                let hit = u.prefix == prefix && u.next_hops == want;
                seen.push(u);
                if hit {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{prefix} never had next hops {want:?}; seen {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_speakers_exchange_routes_and_withdrawals() {
    let net = MemoryNetwork::new();
    let a = start(&net, A, 65001, 1);
    let b = start(&net, B, 65002, 1);
    for s in [&a, &b] {
        s.set_policy(accept_all()).await.unwrap();
    }
    a.add_peer(ebgp_peer(B, 65002)).await.unwrap();
    b.add_peer(ebgp_peer(A, 65001)).await.unwrap();
    let mut sub = b.subscribe().await.unwrap();
    established(&a, B).await;
    established(&b, A).await;

    a.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    // eBGP: next hop self (A's address on the session), A's AS prepended.
    route(&mut sub, p("10.1.0.0/24"), &[A]).await;
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

    assert!(a.withdraw(p("10.1.0.0/24")).await.unwrap());
    route(&mut sub, p("10.1.0.0/24"), &[]).await;
    assert!(b.rib_lookup(p("10.1.0.0/24")).await.unwrap().is_none());

    let st = status(&a, B).await;
    assert!(st.messages_sent.update >= 2, "{st:?}");
    assert!(st.messages_received.keepalive >= 1, "{st:?}");
    a.shutdown().await.unwrap();
    // B hears Cease / Administrative Shutdown, in words.
    let st = eventually(Duration::from_secs(30), "session down at B", || async {
        let st = status(&b, A).await;
        (st.state != State::Established).then_some(st)
    })
    .await;
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
    let a = start(&net, A, 65001, 1);
    let b = start(&net, B, 65002, 1);
    let c = start(&net, C, 65003, 4);
    for s in [&a, &b, &c] {
        s.set_policy(accept_all()).await.unwrap();
    }
    a.add_peer(ebgp_peer(C, 65003)).await.unwrap();
    b.add_peer(ebgp_peer(C, 65003)).await.unwrap();
    c.add_peer(ebgp_peer(A, 65001)).await.unwrap();
    c.add_peer(ebgp_peer(B, 65002)).await.unwrap();
    let mut sub = c.subscribe().await.unwrap();
    established(&c, A).await;
    established(&c, B).await;

    // Equal AS path length and origin from two neighbour ASes: one ECMP set of two next hops.
    a.originate(p("10.9.0.0/24"), self_attrs()).await.unwrap();
    b.originate(p("10.9.0.0/24"), self_attrs()).await.unwrap();
    route(&mut sub, p("10.9.0.0/24"), &[A, B]).await;
    let r = c.rib_lookup(p("10.9.0.0/24")).await.unwrap().unwrap();
    assert_eq!(r.paths.len(), 2);
    assert!(r.paths.iter().all(|x| x.multipath));
    assert_eq!(r.paths.iter().filter(|x| x.best).count(), 1);

    // One withdraws: the set shrinks to the other; the second withdraws: gone.
    a.withdraw(p("10.9.0.0/24")).await.unwrap();
    route(&mut sub, p("10.9.0.0/24"), &[B]).await;
    b.withdraw(p("10.9.0.0/24")).await.unwrap();
    route(&mut sub, p("10.9.0.0/24"), &[]).await;

    // A late subscriber starts with the current table.
    a.originate(p("10.8.0.0/24"), self_attrs()).await.unwrap();
    route(&mut sub, p("10.8.0.0/24"), &[A]).await;
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
