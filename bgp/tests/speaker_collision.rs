//! RFC 4271 §6.8 with both speakers active and started at the same moment, over real TCP on
//! loopback (no root needed). Each side opens a connection to the other, so every start is a
//! collision. A correct resolution keeps one connection on both sides at once; a wrong one (one
//! side dumping the connection the other has just established) costs a ConnectRetry round, so
//! every trial must reach Established well inside one ConnectRetry time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tabby_bgp::fsm::State;
use tabby_bgp::speaker::{PeerConfig, Speaker, SpeakerConfig};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TRIALS: usize = 20;
/// The ConnectRetry time a lost collision would cost.
const CONNECT_RETRY: Duration = Duration::from_secs(5);
const BOUND: Duration = Duration::from_secs(2);

fn speaker(me: Ipv4Addr, asn: u32) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.listen = vec![SocketAddr::new(IpAddr::V4(me), 0)];
    Speaker::start(cfg).expect("loopback listener")
}

fn peer(addr: Ipv4Addr, asn: u32, port: u16, source: Ipv4Addr) -> PeerConfig {
    let mut c = PeerConfig::new(IpAddr::V4(addr), asn);
    c.port = port;
    c.source = Some(IpAddr::V4(source));
    c.connect_retry = CONNECT_RETRY;
    c.hold_time = Duration::from_secs(9);
    c
}

async fn established(s: &Speaker, other: Ipv4Addr) -> bool {
    s.peers()
        .await
        .unwrap()
        .iter()
        .any(|p| p.address == IpAddr::V4(other) && p.state == State::Established)
}

/// One trial: both speakers learn of each other at once; returns the time to Established on
/// both sides (or `None` after `limit`) and how often each side reached Established.
async fn trial(asn_a: u32, asn_b: u32, limit: Duration) -> (Option<Duration>, u64, u64) {
    let a = speaker(A, asn_a);
    let b = speaker(B, asn_b);
    let (pa, pb) = (a.listening()[0].port(), b.listening()[0].port());
    let start = Instant::now();
    let (ra, rb) = tokio::join!(
        a.add_peer(peer(B, asn_b, pb, A)),
        b.add_peer(peer(A, asn_a, pa, B))
    );
    ra.unwrap();
    rb.unwrap();
    let mut took = None;
    while start.elapsed() < limit {
        if established(&a, B).await && established(&b, A).await {
            took = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let count = |s: &Speaker, other: Ipv4Addr| {
        let s = s.clone();
        async move {
            s.peers()
                .await
                .unwrap()
                .iter()
                .find(|p| p.address == IpAddr::V4(other))
                .map_or(0, |p| p.established_count)
        }
    };
    let (ca, cb) = (count(&a, B).await, count(&b, A).await);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    (took, ca, cb)
}

async fn trials(asn_a: u32, asn_b: u32) {
    let mut times = Vec::new();
    for i in 0..TRIALS {
        let (took, ca, cb) = trial(asn_a, asn_b, CONNECT_RETRY * 3).await;
        let took = took.unwrap_or_else(|| panic!("trial {i}: no session within 15 s"));
        assert!(
            took < BOUND,
            "trial {i}: Established after {took:?} (a collision cost a ConnectRetry round)"
        );
        // One session, reached once: no side established and then lost its connection.
        assert_eq!((ca, cb), (1, 1), "trial {i}: times Established on A and B");
        times.push(took);
    }
    times.sort();
    eprintln!(
        "{TRIALS} simultaneous starts: Established in {:?} .. {:?} (median {:?})",
        times[0],
        times[TRIALS - 1],
        times[TRIALS / 2]
    );
}

/// iBGP: the higher BGP identifier (B, 127.0.0.2) keeps its own connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_start_ibgp_establishes_at_once() {
    trials(65000, 65000).await;
}

/// eBGP the other way round: the lower identifier has the larger AS (irrelevant to §6.8,
/// which compares identifiers only when they differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_start_ebgp_establishes_at_once() {
    trials(65002, 65001).await;
}
