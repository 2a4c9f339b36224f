//! RFC 7911 ADD-PATH send between whole speakers over the in-process network, on tokio's paused
//! clock: two peers announce the same prefix to a speaker, which sends both paths with distinct
//! path identifiers to a peer that asked to receive several, and the best one alone to a plain
//! peer; a withdrawal removes exactly that path's id.

use std::net::Ipv4Addr;
use std::time::Duration;

use tabby_bgp::rib::PathAttrs;
use tabby_bgp::speaker::{AdjRoute, MemoryNetwork, Speaker};

/// The speaker under test, the two sources, the ADD-PATH receiver and the plain peer.
const T: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const D: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
const E: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

mod support;
use support::speaker::{ebgp_peer as peer, ebgp_speaker, established, ip, p, self_attrs, status};

/// (path id, AS path) of every route `s` holds from `from`, sorted.
async fn held(s: &Speaker, from: Ipv4Addr) -> Vec<(u32, String)> {
    let routes: Vec<AdjRoute> = s.adj_rib_in(ip(from)).await.unwrap();
    let mut v: Vec<(u32, String)> = routes
        .into_iter()
        .filter(|r| r.prefix == p("10.1.0.0/24"))
        .map(|r| (r.path_id, r.attrs.as_path.clone()))
        .collect();
    v.sort();
    v
}

/// Waits until `s` holds exactly `want` from `from`.
async fn expect_held(s: &Speaker, from: Ipv4Addr, want: &[(u32, &str)]) {
    let want: Vec<(u32, String)> = want.iter().map(|(i, a)| (*i, a.to_string())).collect();
    let what = format!("{want:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = held(s, from).await;
        if got == want {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}; holds {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// T with the sources B and C and the peer D, to which T offers ADD-PATH send; D asks to
/// receive several paths when `d_receives`. With `plain_e`, E too: a peer without ADD-PATH.
/// Returns (T, B, C, D, E) once T's sessions are all Established.
async fn lab(
    net: &MemoryNetwork,
    d_receives: bool,
    plain_e: bool,
) -> (Speaker, Speaker, Speaker, Speaker, Option<Speaker>) {
    let t = ebgp_speaker(net, T, 65000, 1).await;
    let b = ebgp_speaker(net, B, 65001, 1).await;
    let c = ebgp_speaker(net, C, 65002, 1).await;
    let d = ebgp_speaker(net, D, 65004, 1).await;
    let e = if plain_e {
        Some(ebgp_speaker(net, E, 65005, 1).await)
    } else {
        None
    };
    let mut to_d = peer(D, 65004);
    to_d.add_path.ipv4_send = true;
    let mut from_t = peer(T, 65000);
    from_t.add_path.ipv4_receive = d_receives;
    let mut sources = vec![(B, 65001), (C, 65002)];
    if plain_e {
        sources.push((E, 65005));
    }
    for (addr, asn) in &sources {
        t.add_peer(peer(*addr, *asn)).await.unwrap();
    }
    t.add_peer(to_d).await.unwrap();
    d.add_peer(from_t).await.unwrap();
    for s in [&b, &c].into_iter().chain(e.as_ref()) {
        s.add_peer(peer(T, 65000)).await.unwrap();
    }
    for x in sources.iter().map(|(a, _)| *a).chain([D]) {
        established(&t, x).await;
    }
    (t, b, c, d, e)
}

/// A path one AS longer than [`self_attrs`] (C's in the tests).
fn longer() -> PathAttrs {
    let mut a = self_attrs();
    a.as_path = tabby_bgp::wire::AsPath::sequence([65002]);
    a
}

#[tokio::test(start_paused = true)]
async fn add_path_receiver_gets_every_path_and_a_plain_peer_the_best() {
    let net = MemoryNetwork::new();
    // T sends several paths to D only; D asks to receive them.
    let (t, b, c, d, e) = lab(&net, true, true).await;
    let e = e.expect("E started");

    // B's path is shorter (best); C's is one AS longer. B's first, so that it gets id 1.
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    expect_held(&d, T, &[(1, "65000 65001")]).await;
    c.originate(p("10.1.0.0/24"), longer()).await.unwrap();

    // D: both paths, distinct ids.
    expect_held(&d, T, &[(1, "65000 65001"), (2, "65000 65002 65002")]).await;
    // E: the best alone, without a path id.
    expect_held(&e, T, &[(0, "65000 65001")]).await;
    // T's Adj-RIB-Out and counters agree.
    let out = t.adj_rib_out(ip(D)).await.unwrap();
    let ids: Vec<u32> = out.iter().map(|r| r.path_id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(status(&t, D).await.prefixes_advertised, 2);
    assert_eq!(status(&t, E).await.prefixes_advertised, 1);
    let d_msgs = status(&d, T).await.messages_received.update;

    // C withdraws: D loses id 2 alone, E sees no change.
    assert!(c.withdraw(p("10.1.0.0/24")).await.unwrap());
    expect_held(&d, T, &[(1, "65000 65001")]).await;
    expect_held(&e, T, &[(0, "65000 65001")]).await;
    assert_eq!(status(&t, D).await.prefixes_advertised, 1);
    assert!(status(&d, T).await.messages_received.update > d_msgs);

    // B withdraws too, then C announces again: D gets C's path under the smallest free id,
    // and E the new best.
    assert!(b.withdraw(p("10.1.0.0/24")).await.unwrap());
    expect_held(&d, T, &[]).await;
    c.originate(p("10.1.0.0/24"), longer()).await.unwrap();
    expect_held(&d, T, &[(1, "65000 65002 65002")]).await;
    expect_held(&e, T, &[(0, "65000 65002 65002")]).await;

    for s in [t, b, c, d, e] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn add_path_send_without_a_receiving_peer_is_plain() {
    // We offer Send, the peer does not offer Receive (RFC 7911 §4): best path, no ids.
    let net = MemoryNetwork::new();
    let (t, b, c, d, _) = lab(&net, false, false).await;
    b.originate(p("10.1.0.0/24"), self_attrs()).await.unwrap();
    c.originate(p("10.1.0.0/24"), longer()).await.unwrap();
    expect_held(&d, T, &[(0, "65000 65001")]).await;
    assert_eq!(status(&t, D).await.prefixes_advertised, 1);
    for s in [t, b, c, d] {
        s.shutdown().await.unwrap();
    }
}
