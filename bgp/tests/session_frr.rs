//! Our session against FRR's bgpd (with zebra) over a veth between two network namespaces:
//! eBGP establishes, FRR's route arrives as a decoded UPDATE, and TCP MD5 (RFC 2385) works
//! with the right password and never establishes with a wrong one.
//!
//! Needs root and FRR (`/usr/lib/frr/bgpd`, `zebra`, `vtysh`); skips with a message otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tabby_bgp::fsm::FsmConfig;
use tabby_bgp::negotiate::LocalConfig;
use tabby_bgp::session::socket::{ListenPeer, Listener, TcpConnector, TcpOptions};
use tabby_bgp::session::{SessionConfig, SessionEventKind, incoming_channel, spawn};
use tabby_bgp::wire::Asn;
use tabby_netlab::{Frr, Netns, skip_unless_root_and, spawn_in_netns};
use tokio::sync::mpsc;

const FRR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const OUR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

fn frr_conf(password: Option<&str>) -> String {
    let pw = password
        .map(|p| format!(" neighbor {OUR_ADDR} password {p}\n"))
        .unwrap_or_default();
    format!(
        "hostname frr\n\
         router bgp 65001\n bgp router-id 10.89.0.1\n no bgp ebgp-requires-policy\n \
         no bgp network import-check\n neighbor {OUR_ADDR} remote-as 65002\n{pw} \
         neighbor {OUR_ADDR} timers 3 9\n neighbor {OUR_ADDR} timers connect 1\n \
         address-family ipv4 unicast\n  network 192.0.2.0/24\n exit-address-family\n"
    )
}

/// What our side saw within `wait`.
#[derive(Debug, Default)]
struct Outcome {
    established: bool,
    route: bool,
    downs: Vec<String>,
}

/// Runs our session inside `ns` for at most `wait`, until it is established and has FRR's
/// route.
fn run_ours(ns: &Netns, password: Option<&str>, wait: Duration) -> Outcome {
    let key = password.map(|p| p.as_bytes().to_vec());
    let h = spawn_in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let tcp = TcpOptions {
                source: Some(IpAddr::V4(OUR_ADDR)),
                md5_key: key,
                connect_timeout: Duration::from_secs(2),
                ..TcpOptions::default()
            };
            let listener =
                Listener::bind(SocketAddr::new(IpAddr::V4(OUR_ADDR), 179)).expect("bind :179");
            let (in_tx, in_rx) = incoming_channel();
            listener
                .add_peer(
                    IpAddr::V4(FRR_ADDR),
                    ListenPeer {
                        incoming: in_tx,
                        options: tcp.clone(),
                    },
                )
                .expect("add peer");
            let (ev_tx, mut ev_rx) = mpsc::channel(100);
            let mut local = LocalConfig::new(Asn(65002), OUR_ADDR, Some(Asn(65001)));
            local.hold_time = 9;
            let _session = spawn(
                SessionConfig {
                    peer: IpAddr::V4(FRR_ADDR),
                    local,
                    fsm: FsmConfig {
                        connect_retry_time: Duration::from_secs(1),
                        idle_hold_time: Duration::from_millis(500),
                        ..FsmConfig::default()
                    },
                },
                Some(Arc::new(TcpConnector {
                    peer: SocketAddr::new(IpAddr::V4(FRR_ADDR), 179),
                    options: tcp,
                })),
                in_rx,
                ev_tx,
            );
            let mut out = Outcome::default();
            let _ = tokio::time::timeout(wait, async {
                while let Some(e) = ev_rx.recv().await {
                    match e.kind {
                        SessionEventKind::Established(n) => {
                            assert_eq!(n.peer_asn, Asn(65001));
                            assert!(n.four_octet_as && n.route_refresh);
                            out.established = true;
                        }
                        SessionEventKind::Update(u)
                            if u.nlri
                                .iter()
                                .any(|n| n.prefix.to_string() == "192.0.2.0/24") =>
                        {
                            out.route = true;
                            return;
                        }
                        SessionEventKind::Down { reason, .. } => out.downs.push(reason.to_string()),
                        _ => {}
                    }
                }
            })
            .await;
            out
        })
    })
    .expect("thread in namespace");
    h.join().expect("no panic").expect("entered namespace")
}

fn lab() -> (Netns, Netns) {
    let frr_ns = Netns::new().unwrap();
    let our_ns = Netns::new().unwrap();
    frr_ns.veth_to("eth0", &our_ns, "eth0").unwrap();
    frr_ns.add_addr("eth0", &format!("{FRR_ADDR}/30")).unwrap();
    our_ns.add_addr("eth0", &format!("{OUR_ADDR}/30")).unwrap();
    (frr_ns, our_ns)
}

fn skip() -> bool {
    skip_unless_root_and(&[Frr::BGPD, Frr::ZEBRA, "vtysh"])
}

#[test]
fn ebgp_with_frr_establishes_and_receives_its_route() {
    if skip() {
        return;
    }
    let (frr_ns, our_ns) = lab();
    let frr = Frr::start(&frr_ns, &frr_conf(None)).unwrap();
    let out = run_ours(&our_ns, None, Duration::from_secs(40));
    assert!(out.established, "{out:?}\n{}", frr.bgpd_log());
    assert!(out.route, "FRR's 192.0.2.0/24 never arrived: {out:?}");
    drop(frr);
}

#[test]
fn md5_with_frr_right_password_establishes_wrong_never_does() {
    if skip() {
        return;
    }
    let (frr_ns, our_ns) = lab();
    let frr = Frr::start(&frr_ns, &frr_conf(Some("tabby-s3cret"))).unwrap();
    let out = run_ours(&our_ns, Some("tabby-s3cret"), Duration::from_secs(40));
    assert!(out.established && out.route, "{out:?}\n{}", frr.bgpd_log());
    drop(frr);

    let (frr_ns, our_ns) = lab();
    let frr = Frr::start(&frr_ns, &frr_conf(Some("tabby-s3cret"))).unwrap();
    let out = run_ours(&our_ns, Some("wrong"), Duration::from_secs(8));
    assert!(!out.established, "wrong password established: {out:?}");
    // The kernel drops unsigned/mis-signed segments silently: what an operator sees from our
    // side is connection attempts failing.
    assert!(
        out.downs
            .iter()
            .all(|d| d.contains("TCP connection failed")),
        "{out:?}"
    );
    drop(frr);
}
