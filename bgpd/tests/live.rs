//! The real binary, twice, on loopback addresses, peering with each other: routes exchanged
//! (checked over the HTTP API), a SIGHUP that adds a peer and a prefix leaves the first
//! session alone, a bad reload keeps the running config and logs the field, `/metrics` parses
//! and has the named series, SIGTERM sends Cease / Administrative Shutdown and exits 0.
//!
//! Traffic stays on 127.0.0.0/8 (Linux answers the whole range on `lo`); every wait is
//! bounded; the children are killed on drop, also when an assertion fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tabby-bgpd");

/// A running `tabby-bgpd`, killed on drop.
struct Bgpd {
    child: Child,
    log: PathBuf,
    http: u16,
}

impl Bgpd {
    fn spawn(config: &Path, http: u16, log: PathBuf) -> Bgpd {
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("--http")
            .arg(format!("127.0.0.1:{http}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Bgpd { child, log, http }
    }

    fn signal(&self, s: Signal) {
        let pid = i32::try_from(self.child.id()).unwrap();
        kill(Pid::from_raw(pid), s).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
            .await
            .unwrap_or_else(|| panic!("GET {path} on port {} failed", self.http))
    }

    async fn json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Drop for Bgpd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.log.display(), self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1, bounded in time.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// A port that was free a moment ago.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns Some, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const A: &str = "127.0.10.1";
const B: &str = "127.0.10.2";
const C: &str = "127.0.10.3";

/// A daemon at `me` peering with `peer`, originating `prefix`; `extra` goes into the
/// `[[peers]]` table.
#[allow(clippy::too_many_arguments)]
fn config(
    me: &str,
    asn: u32,
    port: u16,
    peer: &str,
    peer_asn: u32,
    peer_port: u16,
    prefix: &str,
    extra: &str,
) -> String {
    format!(
        r#"
router_id = "{me}"
asn = {asn}
listen = ["{me}"]
listen_port = {port}

[[peers]]
address = "{peer}"
remote_asn = {peer_asn}
port = {peer_port}
source = "{me}"
hold_time = 9
connect_retry = 1
import_policy = "all"
export_policy = "all"
{extra}

[[originate]]
prefix = "{prefix}"
communities = ["{asn}:7"]
large_communities = ["{asn}:1:2"]

[[policies]]
name = "all"
default = "accept"
"#
    )
}

/// The status entry of `peer` in `/peers`.
fn peer_entry(peers: &Value, peer: &str) -> Option<Value> {
    peers
        .as_array()?
        .iter()
        .find(|p| p["address"] == peer)
        .cloned()
}

/// Every sample line of an OpenMetrics text: (series with labels, value).
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics ends with # EOF");
    for line in lines {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF",
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push((series.to_string(), v));
    }
    out
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_peer_reload_and_stop() {
    // Linux routes all of 127.0.0.0/8 to lo; elsewhere these addresses may not exist.
    if TcpListener::bind((B, 0)).is_err() {
        eprintln!("skipping: cannot bind {B} (127.0.0.0/8 is not all on loopback here)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (free_port(A), free_port(B), free_port(C));
    let (ha, hb) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let a_cfg = dir.path().join("a.toml");
    let b_cfg = dir.path().join("b.toml");
    let a_text = config(A, 65001, pa, B, 65002, pb, "10.1.0.0/24", "");
    std::fs::write(&a_cfg, &a_text).unwrap();
    std::fs::write(
        &b_cfg,
        // B only accepts: no connection collision (RFC 4271 §6.8) to resolve at start-up.
        config(B, 65002, pb, A, 65001, pa, "10.2.0.0/24", "passive = true"),
    )
    .unwrap();

    let a = Bgpd::spawn(&a_cfg, ha, dir.path().join("a.log"));
    let mut b = Bgpd::spawn(&b_cfg, hb, dir.path().join("b.log"));

    // Routes both ways, with their communities.
    let route = eventually(
        "A to learn 10.2.0.0/24 from B",
        Duration::from_secs(20),
        || async {
            let (code, body) = http_get(a.http, "/rib/10.2.0.0/24").await?;
            (code == 200).then(|| serde_json::from_str::<Value>(&body).ok())?
        },
    )
    .await;
    let path = &route["paths"][0];
    assert_eq!(path["from"], B, "{route}");
    assert_eq!(path["best"], true);
    assert_eq!(path["attrs"]["as_path"], "65002");
    assert_eq!(path["attrs"]["next_hop"], B);
    assert_eq!(path["attrs"]["communities"][0], "65002:7");
    assert_eq!(path["attrs"]["large_communities"][0], "65002:1:2");
    assert_eq!(route["ecmp_next_hops"][0], B);
    let adj = b.json(&format!("/rib?peer={A}&dir=in")).await;
    assert_eq!(adj["count"], 1, "{adj}");
    assert_eq!(adj["routes"][0]["prefix"], "10.1.0.0/24");
    let out = a.json(&format!("/rib?peer={B}&dir=out")).await;
    assert!(
        out["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "10.1.0.0/24"),
        "{out}"
    );

    let status = a.json("/status").await;
    assert_eq!(status["router_id"], A);
    assert_eq!(status["asn"], 65001);
    assert_eq!(status["peers_established"], 1);
    let before = peer_entry(&a.json("/peers").await, B).unwrap();
    assert_eq!(before["state"], "Established");
    assert!(before["established_count"].as_u64() >= Some(1));
    assert_eq!(before["prefixes"]["accepted"], 1);
    assert_eq!(before["prefixes"]["advertised"], 1);
    let (code, _) = a.get("/peers/192.0.2.99").await;
    assert_eq!(code, 404);
    let (code, _) = a.get("/rib/10.1.0.1/24").await;
    assert_eq!(code, 400, "host bits are a bad request");

    // SIGHUP adding a third peer and a prefix: the first session is not touched.
    let extra = format!(
        "[[peers]]\naddress = \"{C}\"\nremote_asn = 65003\nport = {pc}\nconnect_retry = 1\n\n\
         [[originate]]\nprefix = \"10.11.0.0/24\"\n"
    );
    std::fs::write(&a_cfg, format!("{a_text}{extra}")).unwrap();
    a.signal(Signal::SIGHUP);
    eventually(
        "B to learn 10.11.0.0/24 after A's reload",
        Duration::from_secs(10),
        || async {
            let (code, _) = http_get(b.http, "/rib/10.11.0.0/24").await?;
            (code == 200).then_some(())
        },
    )
    .await;
    let peers = a.json("/peers").await;
    assert!(peer_entry(&peers, C).is_some(), "third peer added: {peers}");
    let after = peer_entry(&peers, B).unwrap();
    assert_eq!(after["state"], "Established");
    assert_eq!(
        after["established_count"], 1,
        "the first session did not reset"
    );
    assert_eq!(
        after["state_since"], before["state_since"],
        "uptime untouched"
    );
    assert!(after["uptime_s"].as_f64() >= before["uptime_s"].as_f64());
    assert!(
        a.log().contains(&format!("reload: add peer {C}: added")),
        "{}",
        a.log()
    );

    // A bad reload: the field is named in the log and the running config is kept.
    let bad = format!("{a_text}{extra}").replacen("hold_time = 9", "hold_time = 2", 1);
    std::fs::write(&a_cfg, bad).unwrap();
    a.signal(Signal::SIGHUP);
    eventually(
        "the refused reload in A's log",
        Duration::from_secs(10),
        || async {
            let log = a.log();
            log.contains("reload refused").then_some(())
        },
    )
    .await;
    let log = a.log();
    assert!(
        log.contains("peers[0].hold_time: must be 0 or ≥ 3"),
        "{log}"
    );
    let peers = a.json("/peers").await;
    assert_eq!(
        peers.as_array().unwrap().len(),
        2,
        "running config kept: {peers}"
    );
    let kept = peer_entry(&peers, B).unwrap();
    assert_eq!(kept["established_count"], before["established_count"]);
    assert_eq!(kept["state"], "Established");

    // Metrics parse and carry the named series.
    let (code, text) = a.get("/metrics").await;
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let peer_b = format!("peer=\"{B}\"");
    for (series, want) in [
        (
            "tabby_bgp_sessions{state=\"Established\"}".to_string(),
            Some(1.0),
        ),
        (format!("tabby_bgp_peer_up{{{peer_b}}}"), Some(1.0)),
        (
            format!("tabby_bgp_peer_prefixes_received_total{{{peer_b}}}"),
            Some(1.0),
        ),
        (
            format!("tabby_bgp_peer_prefixes_accepted{{{peer_b}}}"),
            Some(1.0),
        ),
        (
            format!("tabby_bgp_peer_prefixes_advertised{{{peer_b}}}"),
            Some(2.0),
        ),
        (
            format!("tabby_bgp_messages_received_total{{{peer_b},type=\"open\"}}"),
            Some(1.0),
        ),
        (
            format!("tabby_bgp_messages_sent_total{{{peer_b},type=\"update\"}}"),
            None,
        ),
        (
            "tabby_bgp_rib_prefixes{family=\"ipv4-unicast\"}".to_string(),
            Some(3.0),
        ),
        (
            "tabby_bgp_update_processing_seconds_count".to_string(),
            None,
        ),
        ("tabby_bgp_update_processing_seconds_sum".to_string(), None),
        (
            "tabby_bgpd_config_reloads_total{result=\"applied\"}".to_string(),
            Some(1.0),
        ),
        (
            "tabby_bgpd_config_reloads_total{result=\"rejected\"}".to_string(),
            Some(1.0),
        ),
    ] {
        let got = sample(&m, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        if let Some(w) = want {
            assert_eq!(got, w, "{series}");
        }
    }
    assert!(sample(&m, "tabby_bgp_update_processing_seconds_count").unwrap() >= 1.0);

    // SIGTERM: B sends Cease / Administrative Shutdown and exits 0; A says so in words.
    b.signal(Signal::SIGTERM);
    let st = b.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "B exit status {st}:\n{}", b.log());
    let down = eventually(
        "A to see B's NOTIFICATION",
        Duration::from_secs(10),
        || async {
            let (code, body) = http_get(a.http, &format!("/peers/{B}")).await?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["last_notification_received"].is_object()).then_some(v)
        },
    )
    .await;
    assert_eq!(down["last_notification_received"]["code"], 6);
    assert_eq!(down["last_notification_received"]["subcode"], 2);
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("Cease / Administrative Shutdown"),
        "{down}"
    );
    assert!(
        a.log()
            .contains("peer sent NOTIFICATION Cease / Administrative Shutdown (6/2)"),
        "{}",
        a.log()
    );
    let (_, text) = a.get("/metrics").await;
    let m = parse_metrics(&text);
    let series = format!(
        "tabby_bgp_notifications_received_total{{{peer_b},code=\"6\",subcode=\"2\",name=\"Cease / Administrative Shutdown\"}}"
    );
    assert_eq!(sample(&m, &series), Some(1.0), "{text}");

    let mut a = a;
    a.signal(Signal::SIGTERM);
    let st = a.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "A exit status {st}:\n{}", a.log());
    assert!(a.log().contains("tabby-bgpd stopped"));
}

#[test]
fn check_flag_validates_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        config(A, 65001, 1790, B, 65002, 1790, "10.1.0.0/24", ""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&good)
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(A, 65001, 1790, B, 65002, 1790, "10.1.0.0/24", "")
            .replace("hold_time = 9", "hold_time = 1"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("peers[0].hold_time"), "{err}");

    // The example shipped with the crate passes --check too.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bgpd.toml");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&example)
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_config_the_speaker_cannot_start_exits_non_zero_with_the_reason() {
    // Listening on an address that is not ours fails at start, not later.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let text = config(A, 65001, 1790, B, 65002, 1790, "10.1.0.0/24", "")
        .replace(&format!("listen = [\"{A}\"]"), "listen = [\"192.0.2.77\"]");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("c.log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Bgpd {
        child,
        log,
        http: 0,
    };
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").is_ok_and(|v| v.trim() != "0")
    {
        eprintln!("skipping: net.ipv4.ip_nonlocal_bind is set, binding a foreign address succeeds");
        return;
    }
    let st = d.wait_exit(Duration::from_secs(10));
    assert!(!st.success());
    let err = d.log();
    assert!(err.contains("192.0.2.77"), "{err}");
}

/// SIGUSR1 closes without NOTIFICATION: a graceful-restart peer keeps our routes as stale
/// (RFC 4724 §4.2); started again with `--graceful-restart`, we come back and the routes are
/// fresh again after our End-of-RIB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_routes_at_the_peer() {
    const GA: &str = "127.0.11.1";
    const GB: &str = "127.0.11.2";
    if TcpListener::bind((GB, 0)).is_err() {
        eprintln!("skipping: cannot bind {GB} (127.0.0.0/8 is not all on loopback here)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(GA), free_port(GB));
    let (ha, hb) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let gr = "\n[graceful_restart]\nrestart_time = 60\nstale_routes_time = 60\n";
    let a_cfg = dir.path().join("a.toml");
    let b_cfg = dir.path().join("b.toml");
    std::fs::write(
        &a_cfg,
        format!(
            "{}{gr}",
            config(GA, 65001, pa, GB, 65002, pb, "10.1.0.0/24", "")
        ),
    )
    .unwrap();
    std::fs::write(
        &b_cfg,
        format!(
            "{}{gr}",
            config(
                GB,
                65002,
                pb,
                GA,
                65001,
                pa,
                "10.2.0.0/24",
                "passive = true"
            )
        ),
    )
    .unwrap();
    let a = Bgpd::spawn(&a_cfg, ha, dir.path().join("a.log"));
    let mut b = Bgpd::spawn(&b_cfg, hb, dir.path().join("b.log"));

    let fresh = |stale: bool| {
        let port = a.http;
        async move {
            let (code, body) = http_get(port, "/rib/10.2.0.0/24").await?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["paths"][0]["stale"] == stale).then_some(v)
        }
    };
    eventually("A to learn 10.2.0.0/24", Duration::from_secs(20), || {
        fresh(false)
    })
    .await;

    b.signal(Signal::SIGUSR1);
    let st = b.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "B exit status {st}:\n{}", b.log());
    let kept = eventually(
        "A to keep B's route as stale",
        Duration::from_secs(10),
        || fresh(true),
    )
    .await;
    assert_eq!(kept["paths"][0]["from"], GB);
    let peer = a.json(&format!("/peers/{GB}")).await;
    assert!(peer["stale_until"].is_number(), "{peer}");
    assert!(
        peer["last_notification_received"].is_null(),
        "no NOTIFICATION on a graceful restart: {peer}"
    );

    let log = dir.path().join("b2.log");
    let err = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&b_cfg)
        .arg("--http")
        .arg(format!("127.0.0.1:{hb}"))
        .arg("--graceful-restart")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let _b2 = Bgpd {
        child,
        log,
        http: hb,
    };
    eventually(
        "B's route fresh again after its End-of-RIB",
        Duration::from_secs(20),
        || fresh(false),
    )
    .await;
    let peer = a.json(&format!("/peers/{GB}")).await;
    assert_eq!(peer["state"], "Established");
    assert!(peer["stale_until"].is_null(), "{peer}");
}

/// `--state-file`: a run killed with SIGKILL leaves the file, and the next start announces a
/// graceful restart by itself; a SIGTERM removes it, and the next start is a plain start.
#[test]
fn state_file_detects_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.toml");
    let port = free_port("127.0.12.1");
    let text = config(
        "127.0.12.1",
        65001,
        port,
        "127.0.12.2",
        65002,
        1,
        "10.1.0.0/24",
        "",
    ) + "\n[graceful_restart]\n";
    std::fs::write(&cfg, text).unwrap();
    let state = dir.path().join("bgpd.state");
    let start = |n: u32| {
        let log = dir.path().join(format!("s{n}.log"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("--state-file")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Bgpd {
            child,
            log,
            http: 0,
        }
    };
    let started = |d: &Bgpd| {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let log = d.log();
            if log.contains("tabby-bgpd started") && state.exists() {
                return log;
            }
            assert!(Instant::now() < end, "no start within 10 s:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut d = start(1);
    assert!(started(&d).contains("restarting=false"));
    d.signal(Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    assert!(state.exists(), "SIGKILL leaves the state file");

    let mut d = start(2);
    let log = started(&d);
    assert!(log.contains("restarting=true"), "{log}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    assert!(!state.exists(), "a clean stop removes the state file");

    let mut d = start(3);
    assert!(started(&d).contains("restarting=false"));
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success());
}

/// `--log-format json`: every log line is a JSON object with the message and its fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("j.toml");
    let port = free_port("127.0.12.3");
    let text = config(
        "127.0.12.3",
        65001,
        port,
        "127.0.12.4",
        65002,
        1,
        "10.1.0.0/24",
        "",
    );
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("j.log");
    let child = Command::new(BIN)
        .args(["--log-format", "json", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Bgpd {
        child,
        log,
        http: 0,
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("tabby-bgpd started") {
        assert!(Instant::now() < end, "no start within 10 s:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    let text = d.log();
    let mut started = None;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "tabby-bgpd started" {
            started = Some(v);
        }
    }
    let started = started.unwrap_or_else(|| panic!("no start line in\n{text}"));
    assert_eq!(started["fields"]["asn"], 65001, "{started}");
    assert_eq!(started["level"], "INFO");
}
