//! Speaker fixtures: in-process speakers and their peer configurations, addresses, prefixes,
//! the accept-all policy, and polling a speaker until a peer reaches a state (on tokio's
//! clock, paused or not).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tabby_bgp::fsm::State;
use tabby_bgp::policy::{PolicyConfig, Verdict};
use tabby_bgp::rib::{NextHop, PathAttrs, Prefix};
use tabby_bgp::speaker::{MemoryNetwork, PeerConfig, PeerStatus, Speaker, SpeakerConfig};

pub fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

pub fn p(s: &str) -> Prefix {
    Prefix::V4(s.parse().unwrap())
}

/// The policy named "all" that accepts everything (eBGP needs one each way, RFC 8212).
pub fn accept_all() -> PolicyConfig {
    PolicyConfig {
        name: "all".into(),
        rules: Vec::new(),
        default: Verdict::Accept,
    }
}

/// A speaker at `me` on the in-process network, with `max_paths` ECMP paths.
pub fn start(net: &MemoryNetwork, me: Ipv4Addr, asn: u32, max_paths: usize) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, me);
    cfg.best_path.max_paths = max_paths;
    Speaker::start_with_transport(cfg, net.transport(ip(me))).unwrap()
}

/// [`start`] with the accept-all policy "all" in place, for [`ebgp_peer`]s.
pub async fn ebgp_speaker(
    net: &MemoryNetwork,
    me: Ipv4Addr,
    asn: u32,
    max_paths: usize,
) -> Speaker {
    let s = start(net, me, asn, max_paths);
    s.set_policy(accept_all()).await.unwrap();
    s
}

/// `x` (at `x_at`: address, AS) and `y` (at `y_at`) each configure the other as a peer,
/// with the configuration `cfg` makes ([`peer`] or [`ebgp_peer`]).
pub async fn peer_both(
    x: &Speaker,
    x_at: (Ipv4Addr, u32),
    y: &Speaker,
    y_at: (Ipv4Addr, u32),
    cfg: fn(Ipv4Addr, u32) -> PeerConfig,
) {
    x.add_peer(cfg(y_at.0, y_at.1)).await.unwrap();
    y.add_peer(cfg(x_at.0, x_at.1)).await.unwrap();
}

/// A peer with a 30 s hold time and a 2 s ConnectRetry, no policies.
pub fn peer(addr: Ipv4Addr, asn: u32) -> PeerConfig {
    let mut c = PeerConfig::new(ip(addr), asn);
    c.hold_time = Duration::from_secs(30);
    c.connect_retry = Duration::from_secs(2);
    c
}

/// [`peer`] with the "all" policy both ways: eBGP needs policies (RFC 8212).
pub fn ebgp_peer(addr: Ipv4Addr, asn: u32) -> PeerConfig {
    let mut c = peer(addr, asn);
    c.import_policy = Some("all".into());
    c.export_policy = Some("all".into());
    c
}

/// Attributes of a locally originated route: next hop self.
pub fn self_attrs() -> PathAttrs {
    PathAttrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED))
}

/// Polls `f` every 100 ms of tokio time until it yields `Some`, for at most `within`;
/// panics naming `what` when time runs out.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
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

/// `s`'s status of the configured peer at `peer`.
pub async fn status(s: &Speaker, peer: Ipv4Addr) -> PeerStatus {
    s.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.address == ip(peer))
        .expect("peer configured")
}

/// Waits (at most 60 s) until `s`'s session with `peer` is Established.
pub async fn established(s: &Speaker, peer: Ipv4Addr) -> PeerStatus {
    eventually(Duration::from_secs(60), "Established", || async {
        let st = status(s, peer).await;
        (st.state == State::Established).then_some(st)
    })
    .await
}
