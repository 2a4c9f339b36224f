//! Speaker fixtures: addresses, prefixes, the accept-all policy, and polling a speaker until
//! a peer reaches a state (on tokio's clock, paused or not).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tabby_bgp::fsm::State;
use tabby_bgp::policy::{PolicyConfig, Verdict};
use tabby_bgp::rib::Prefix;
use tabby_bgp::speaker::{PeerStatus, Speaker};

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
