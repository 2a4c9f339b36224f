//! Two speakers over real TCP on loopback (no root needed): the session comes up through the
//! listener, routes flow both ways with next-hop self taken from the connection's own address,
//! and a shutdown reaches the peer as Cease / Administrative Shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tabby_bgp::fsm::State;
use tabby_bgp::speaker::{ConnectFailure, PeerConfig, Speaker, SpeakerConfig};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Bound on each wait over real sockets.
const WAIT: Duration = Duration::from_secs(30);

mod support;
use support::speaker::{accept_all, established, eventually, p, self_attrs, status};

fn speaker(me: Ipv4Addr, asn: u32) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.listen = vec![SocketAddr::new(IpAddr::V4(me), 0)];
    Speaker::start(cfg).expect("loopback listener")
}

fn peer(addr: Ipv4Addr, asn: u32, port: u16) -> PeerConfig {
    let mut c = PeerConfig::new(IpAddr::V4(addr), asn);
    c.port = port;
    c.connect_retry = Duration::from_secs(1);
    c.hold_time = Duration::from_secs(9);
    c.import_policy = Some("all".into());
    c.export_policy = Some("all".into());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_over_loopback_tcp() {
    let a = speaker(A, 65001);
    let b = speaker(B, 65002);
    a.set_policy(accept_all()).await.unwrap();
    b.set_policy(accept_all()).await.unwrap();
    let (pa, pb) = (a.listening()[0].port(), b.listening()[0].port());
    // A connects from whatever source the kernel picks (127.0.0.1); B from 127.0.0.2, so
    // either connection is acceptable to the other's listener.
    a.add_peer(peer(B, 65002, pb)).await.unwrap();
    let mut to_a = peer(A, 65001, pa);
    to_a.source = Some(IpAddr::V4(B));
    b.add_peer(to_a).await.unwrap();
    for (s, other) in [(&a, B), (&b, A)] {
        established(s, other).await;
    }

    let local = self_attrs();
    a.originate(p("10.1.0.0/24"), local.clone()).await.unwrap();
    b.originate(p("10.2.0.0/24"), local).await.unwrap();
    let at_b = eventually(WAIT, "10.1 at B", || async {
        b.rib_lookup(p("10.1.0.0/24")).await.unwrap()
    })
    .await;
    // Next hop self: A's own address on the connection.
    assert_eq!(at_b.paths[0].attrs.next_hop, IpAddr::V4(A));
    let at_a = eventually(WAIT, "10.2 at A", || async {
        a.rib_lookup(p("10.2.0.0/24")).await.unwrap()
    })
    .await;
    assert_eq!(at_a.paths[0].attrs.next_hop, IpAddr::V4(B));
    assert_eq!(at_a.paths[0].attrs.as_path, "65002");

    a.shutdown().await.unwrap();
    let st = eventually(WAIT, "B sees the shutdown", || async {
        let st = status(&b, A).await;
        // (An earlier one may be the Cease / Collision Resolution of the start.)
        st.last_notification_received
            .clone()
            .filter(|n| (n.code, n.subcode) == (6, 2))
            .map(|n| (st, n))
    })
    .await;
    assert!(
        st.1.text.contains("Administrative Shutdown"),
        "{}",
        st.1.text
    );
    assert_ne!(st.0.state, State::Established);
    eventually(WAIT, "10.1 withdrawn at B", || async {
        b.rib_lookup(p("10.1.0.0/24"))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    b.shutdown().await.unwrap();
}

/// A peer whose port has no listener: the status carries the cause as a type
/// (`ConnectFailure::Refused`) and the same fact in words, and the FSM's generic
/// "TCP connection failed" does not overwrite it on the next retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_is_reported_as_a_typed_cause() {
    let a = speaker(A, 65001);
    // A port that was free a moment ago: nothing listens, so the kernel answers RST.
    let closed = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = peer(Ipv4Addr::new(127, 0, 0, 3), 65003, closed);
    (c.import_policy, c.export_policy) = (None, None);
    a.add_peer(c).await.unwrap();
    let s = eventually(WAIT, "a refused connect in the status", || async {
        let s = status(&a, Ipv4Addr::new(127, 0, 0, 3)).await;
        s.connect_failure.is_some().then_some(s)
    })
    .await;
    assert_eq!(s.connect_failure, Some(ConnectFailure::Refused));
    assert_eq!(
        s.last_error.as_deref(),
        Some("connecting: connection refused")
    );
    // Two more ConnectRetry rounds (1 s each): still the typed cause, not the FSM's words.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = status(&a, Ipv4Addr::new(127, 0, 0, 3)).await;
    assert_eq!(s.connect_failure, Some(ConnectFailure::Refused));
    assert_eq!(
        s.last_error.as_deref(),
        Some("connecting: connection refused")
    );
    a.shutdown().await.unwrap();
}
