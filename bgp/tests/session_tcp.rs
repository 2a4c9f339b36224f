//! Sessions over real TCP on loopback (no root needed): the listener's peer filter, TCP MD5
//! (RFC 2385) with the right and the wrong key, and GTSM (RFC 5082) socket options.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tabby_bgp::fsm::FsmConfig;
use tabby_bgp::negotiate::LocalConfig;
use tabby_bgp::session::socket::{self, ListenPeer, Listener, TcpConnector, TcpOptions};
use tabby_bgp::session::{
    SessionConfig, SessionEvent, SessionEventKind, SessionHandle, incoming_channel, spawn,
};
use tabby_bgp::wire::Asn;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn opts(source: Ipv4Addr, key: Option<&str>, gtsm: bool) -> TcpOptions {
    TcpOptions {
        source: Some(IpAddr::V4(source)),
        md5_key: key.map(|k| k.as_bytes().to_vec()),
        ttl_security: gtsm.then_some(1),
        connect_timeout: Duration::from_secs(2),
        ..TcpOptions::default()
    }
}

/// A speaker at `me` with a listener, peering with `peer` at `peer_listen`.
struct Speaker {
    _listener: Listener,
    _session: SessionHandle,
}

fn speaker(
    (me, my_as): (Ipv4Addr, u32),
    (peer, peer_as): (Ipv4Addr, u32),
    listener: Listener,
    peer_listen: SocketAddr,
    tcp: TcpOptions,
    events: mpsc::Sender<SessionEvent>,
) -> Speaker {
    let (in_tx, in_rx) = incoming_channel();
    listener
        .add_peer(
            IpAddr::V4(peer),
            ListenPeer {
                incoming: in_tx,
                options: tcp.clone(),
            },
        )
        .expect("add peer");
    let cfg = SessionConfig {
        peer: IpAddr::V4(peer),
        local: LocalConfig::new(Asn(my_as), me, Some(Asn(peer_as))),
        fsm: FsmConfig {
            connect_retry_time: Duration::from_secs(1),
            idle_hold_time: Duration::from_millis(200),
            ..FsmConfig::default()
        },
    };
    let connector = TcpConnector {
        peer: peer_listen,
        options: tcp,
    };
    Speaker {
        _listener: listener,
        _session: spawn(cfg, Some(Arc::new(connector)), in_rx, events),
    }
}

/// Whether this kernel supports TCP_MD5SIG (CONFIG_TCP_MD5SIG).
fn md5_supported() -> bool {
    let Ok(l) = std::net::TcpListener::bind((A, 0)) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    socket::set_md5(l.as_raw_fd(), false, IpAddr::V4(B), b"probe").is_ok()
}

/// Runs two speakers with the given keys; returns whether both established within `wait`.
async fn run_pair(key_a: Option<&str>, key_b: Option<&str>, gtsm: bool, wait: Duration) -> bool {
    let la = Listener::bind(SocketAddr::new(IpAddr::V4(A), 0)).expect("bind A");
    let lb = Listener::bind(SocketAddr::new(IpAddr::V4(B), 0)).expect("bind B");
    let (a_addr, b_addr) = (la.local_addr(), lb.local_addr());
    let (tx, mut rx) = mpsc::channel(100);
    let _a = speaker(
        (A, 65001),
        (B, 65002),
        la,
        b_addr,
        opts(A, key_a, gtsm),
        tx.clone(),
    );
    let _b = speaker((B, 65002), (A, 65001), lb, a_addr, opts(B, key_b, gtsm), tx);
    let mut up = std::collections::HashSet::new();
    let r = timeout(wait, async {
        while let Some(e) = rx.recv().await {
            if matches!(e.kind, SessionEventKind::Established(_)) {
                up.insert(e.peer);
                if up.len() == 2 {
                    return;
                }
            }
        }
    })
    .await;
    r.is_ok()
}

#[tokio::test]
async fn sessions_establish_over_tcp() {
    assert!(run_pair(None, None, false, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn gtsm_sessions_establish_on_loopback() {
    // Loopback packets arrive with TTL 255, so IP_MINTTL 255 lets them through.
    assert!(run_pair(None, None, true, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn md5_right_key_establishes_wrong_key_never_does() {
    if !md5_supported() {
        eprintln!("skipping: kernel without TCP_MD5SIG");
        return;
    }
    assert!(
        run_pair(
            Some("s3cret"),
            Some("s3cret"),
            false,
            Duration::from_secs(10)
        )
        .await,
        "same key"
    );
    // RFC 2385: segments with a wrong or missing signature are dropped; no session forms.
    assert!(
        !run_pair(Some("s3cret"), Some("other"), false, Duration::from_secs(4)).await,
        "different keys"
    );
    assert!(
        !run_pair(Some("s3cret"), None, false, Duration::from_secs(4)).await,
        "key on one side only"
    );
}

#[tokio::test]
async fn listener_refuses_unconfigured_addresses() {
    let l = Listener::bind(SocketAddr::new(IpAddr::V4(A), 0)).expect("bind");
    let (tx, mut rx) = incoming_channel();
    l.add_peer(
        IpAddr::V4(B),
        ListenPeer {
            incoming: tx,
            options: TcpOptions::default(),
        },
    )
    .unwrap();
    // From 127.0.0.1: not a peer. The connection is accepted by the kernel, then closed.
    let mut s = socket::connect(l.local_addr(), &opts(A, None, false))
        .await
        .expect("tcp connect");
    let mut buf = [0u8; 1];
    let n = timeout(Duration::from_secs(2), s.stream.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    assert!(rx.try_recv().is_err(), "not handed to any session");
    // From 127.0.0.2: delivered to the peer's channel, as an incoming connection.
    let _s = socket::connect(l.local_addr(), &opts(B, None, false))
        .await
        .expect("tcp connect");
    let c = timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("delivered")
        .expect("open channel");
    assert_eq!(
        c.direction,
        tabby_bgp::session::connection::Direction::Incoming
    );
    assert_eq!(c.remote.map(|r| r.ip()), Some(IpAddr::V4(B)));
    // Removed peers are refused again.
    l.remove_peer(IpAddr::V4(B)).unwrap();
    let mut s = socket::connect(l.local_addr(), &opts(B, None, false))
        .await
        .expect("tcp connect");
    let n = timeout(Duration::from_secs(2), s.stream.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
}

#[test]
fn md5_key_length_is_checked() {
    let e = socket::set_md5(0, false, IpAddr::V4(B), &[b'x'; 81]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "TCP MD5 key for 127.0.0.2 is 81 octets; at most 80 are allowed"
    );
}
