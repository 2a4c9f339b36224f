//! The agent's HTTP endpoints on a real listener (127.0.0.1:0): `/healthz`, `/readyz` with the
//! reason in the body, `/metrics` in OpenMetrics text read from live sources (two in-process
//! speakers with an Established session, route and CNI counters), and graceful shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tabby_agent::http::{Health, serve};
use tabby_agent::metrics::AgentMetrics;
use tabby_agent::peering::PeerKind;
use tabby_agent::routes::Metrics as RouteMetrics;
use tabby_bgp::fsm::State;
use tabby_bgp::speaker::{MemoryNetwork, PeerConfig, Speaker, SpeakerConfig};
use tabby_cni::server::ServerStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(health: Arc<Health>, metrics: Arc<AgentMetrics>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, health, metrics, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// GET `path`: (status code, content type, body).
    async fn get(&self, path: &str) -> (u16, String, String) {
        let fut = async {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.unwrap();
            String::from_utf8(raw).unwrap()
        };
        let raw = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("answer within 10 s");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let ctype = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        // The bodies here are small and sent in one piece; chunked framing would show up as
        // a hex length line, which the assertions below would reject.
        (code, ctype, body.to_string())
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        r.expect("serve ended cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_health_with_reasons() {
    let health = Arc::new(Health::new(Duration::from_secs(3600)));
    let server = Server::start(health.clone(), Arc::new(AgentMetrics::new())).await;

    let (code, _, body) = server.get("/healthz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "not alive: the agent's loops are not running\n")
    );
    let (code, _, body) = server.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with(
            "not ready: the agent's loops are not running; its Node has not been read"
        ),
        "{body}"
    );

    health.set_alive(true);
    health.set_node_known(true);
    health.set_blocks_known(true);
    health.set_speaker_running(true);
    let (code, _, body) = server.get("/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, body) = server.get("/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: the CNI socket does not serve\n")
    );

    health.set_cni_ready(true);
    health.set_sessions(2, vec!["192.0.2.1 (global)".into()]);
    let (code, _, body) = server.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with(
            "not ready: 1 of 2 BGP session(s) not Established: 192.0.2.1 (global); waiting up to"
        ),
        "{body}"
    );

    health.set_sessions(2, vec![]);
    let (code, _, body) = server.get("/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "ready: 2 of 2 BGP session(s) Established\n")
    );

    let (code, _, _) = server.get("/nope").await;
    assert_eq!(code, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_after_the_grace_period_names_down_peers_but_is_ready() {
    let health = Arc::new(Health::new(Duration::from_millis(200)));
    for f in [
        Health::set_alive,
        Health::set_node_known,
        Health::set_blocks_known,
        Health::set_cni_ready,
        Health::set_speaker_running,
    ] {
        f(&health, true);
    }
    health.set_sessions(1, vec!["10.0.0.2 (mesh)".into()]);
    let server = Server::start(health.clone(), Arc::new(AgentMetrics::new())).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (code, _, body) = server.get("/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "ready: 1 of 1 BGP session(s) not Established: 10.0.0.2 (mesh) (start grace period of 0s over)\n"
        )
    );
    server.stop().await;
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn peer(addr: Ipv4Addr) -> PeerConfig {
    let mut c = PeerConfig::new(ip(addr), 64512);
    c.connect_retry = Duration::from_secs(1);
    c
}

/// Two speakers on an in-memory network with one iBGP session between them.
async fn speaker_pair() -> (Speaker, Speaker) {
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let net = MemoryNetwork::new();
    let sa =
        Speaker::start_with_transport(SpeakerConfig::new(64512, a), net.transport(ip(a))).unwrap();
    let sb =
        Speaker::start_with_transport(SpeakerConfig::new(64512, b), net.transport(ip(b))).unwrap();
    sa.add_peer(peer(b)).await.unwrap();
    sb.add_peer(peer(a)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = sa.peers().await.unwrap()[0].state == State::Established;
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "session not Established in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (sa, sb)
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in\n{text}"
    );
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_read_from_live_sources_at_scrape_time() {
    let metrics = Arc::new(AgentMetrics::new());
    let server = Server::start(Arc::new(Health::default()), metrics.clone()).await;

    // Before any source is registered: still valid OpenMetrics, speaker down, zeros.
    let (code, ctype, text) = server.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    has(&text, "tabby_agent_bgp_speaker_up 0");
    has(
        &text,
        "tabby_agent_bgp_sessions{state=\"Established\",type=\"mesh\"} 0",
    );
    has(
        &text,
        "tabby_agent_ipam_operations_total{op=\"allocate\",result=\"ok\"} 0",
    );

    let (sa, sb) = speaker_pair().await;
    metrics.set_speaker(sa.clone());
    metrics.set_peer_kinds([(ip(Ipv4Addr::new(10, 0, 0, 2)), PeerKind::Mesh)]);
    let routes = Arc::new(RouteMetrics::default());
    routes.routes_v4.store(12, Ordering::Relaxed);
    routes.routes_v6.store(3, Ordering::Relaxed);
    routes.netlink_errors.store(2, Ordering::Relaxed);
    routes.ops_done.store(40, Ordering::Relaxed);
    routes.reconciles.store(4, Ordering::Relaxed);
    routes
        .reconcile_micros_total
        .store(2_000, Ordering::Relaxed);
    routes.reconcile_micros_last.store(500, Ordering::Relaxed);
    {
        let mut h = routes.reconcile_histogram.lock().unwrap();
        h.observe(Duration::from_micros(200), 3);
        h.observe(Duration::from_micros(1400), 1);
    }
    metrics.set_routes(routes.clone());
    let cni = Arc::new(ServerStats::default());
    cni.requests.store(10, Ordering::Relaxed);
    cni.errors.store(1, Ordering::Relaxed);
    cni.refused.store(2, Ordering::Relaxed);
    metrics.set_cni(cni);
    metrics.ipam().allocated(true);
    metrics.ipam().allocated(true);
    metrics.ipam().allocated(false);
    metrics.ipam().released(true);

    let (_, _, text) = server.get("/metrics").await;
    has(&text, "tabby_agent_bgp_speaker_up 1");
    has(
        &text,
        "tabby_agent_bgp_sessions{state=\"Established\",type=\"mesh\"} 1",
    );
    has(
        &text,
        "tabby_agent_bgp_sessions{state=\"Idle\",type=\"global\"} 0",
    );
    has(
        &text,
        "tabby_agent_bgp_peer_up{peer=\"10.0.0.2\",type=\"mesh\"} 1",
    );
    // An OPEN each way at least, and KEEPALIVEs (the session is up).
    assert!(
        value(
            &text,
            "tabby_agent_bgp_messages_sent_total{peer=\"10.0.0.2\",message=\"open\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "tabby_agent_bgp_messages_received_total{peer=\"10.0.0.2\",message=\"keepalive\"}"
        ) >= 1.0
    );
    has(&text, "tabby_agent_routes{family=\"ipv4\"} 12");
    has(&text, "tabby_agent_routes{family=\"ipv6\"} 3");
    has(&text, "tabby_agent_netlink_errors_total 2");
    has(&text, "tabby_agent_route_operations_total 40");
    has(&text, "tabby_agent_route_reconcile_seconds_count 4");
    // Cumulative buckets: three passes ≤ 250 µs, the fourth ≤ 2.5 ms.
    has(
        &text,
        "tabby_agent_route_reconcile_seconds_bucket{le=\"0.0001\"} 0",
    );
    has(
        &text,
        "tabby_agent_route_reconcile_seconds_bucket{le=\"0.00025\"} 3",
    );
    has(
        &text,
        "tabby_agent_route_reconcile_seconds_bucket{le=\"0.001\"} 3",
    );
    has(
        &text,
        "tabby_agent_route_reconcile_seconds_bucket{le=\"0.0025\"} 4",
    );
    has(
        &text,
        "tabby_agent_route_reconcile_seconds_bucket{le=\"+Inf\"} 4",
    );
    // The speaker's UPDATE processing histogram has its buckets too.
    assert!(text.contains("tabby_agent_bgp_update_processing_seconds_bucket{le=\"0.001\"}"));
    has(&text, "tabby_agent_route_reconcile_seconds_sum 0.002");
    has(&text, "tabby_agent_route_reconcile_last_seconds 0.0005");
    has(&text, "tabby_agent_cni_requests_total{result=\"ok\"} 9");
    has(&text, "tabby_agent_cni_requests_total{result=\"error\"} 1");
    has(
        &text,
        "tabby_agent_cni_requests_total{result=\"refused\"} 2",
    );
    has(
        &text,
        "tabby_agent_ipam_operations_total{op=\"allocate\",result=\"ok\"} 2",
    );
    has(
        &text,
        "tabby_agent_ipam_operations_total{op=\"allocate\",result=\"error\"} 1",
    );
    has(
        &text,
        "tabby_agent_ipam_operations_total{op=\"release\",result=\"ok\"} 1",
    );

    // No staleness: a change in a source shows in the next scrape, with no update call.
    routes.routes_v4.store(13, Ordering::Relaxed);
    let (_, _, text) = server.get("/metrics").await;
    has(&text, "tabby_agent_routes{family=\"ipv4\"} 13");

    // The speaker stops: the scrape still answers, and says so.
    sa.shutdown().await.unwrap();
    let (code, _, text) = server.get("/metrics").await;
    assert_eq!(code, 200);
    has(&text, "tabby_agent_bgp_speaker_up 0");
    sb.shutdown().await.unwrap();
    server.stop().await;
}
