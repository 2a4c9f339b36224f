//! Smoke test of `tabby-bench bgp`: a small load (3 peers × 2,000 prefixes, one run) against
//! BIRD and, when it is built, tabby-bgpd, in both modes. Asserts that the monitor received
//! exactly what was sent and that the JSON report has its fields. Needs root and BIRD; skips
//! with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const PEERS: u64 = 3;
const PREFIXES: u64 = 2000;

fn skip() -> bool {
    tabby_netlab::skip_unless_root_and(&["ip", "bird", "birdc"])
}

/// tabby-bgpd next to this test's binaries (built by `cargo test --workspace`), else the release
/// build; `None` (and a message) when neither exists.
fn tabby_bgpd() -> Option<PathBuf> {
    let bench = Path::new(env!("CARGO_BIN_EXE_tabby-bench"));
    let debug = bench.with_file_name("tabby-bgpd");
    let release = tabby_netlab::workspace_root().map(|r| r.join("target/release/tabby-bgpd"));
    let found = std::iter::once(debug).chain(release).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("NOTE: tabby-bgpd is not built; the smoke test measures BIRD only");
    }
    found
}

fn run_bench(mode: &str, targets: &str, tabby: Option<&Path>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bgp.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabby-bench"));
    cmd.args(["bgp", "--mode", mode, "--targets", targets, "--runs", "1"])
        .args([
            "--peers",
            &PEERS.to_string(),
            "--prefixes",
            &PREFIXES.to_string(),
        ])
        .args(["--timeout", "20"])
        .arg("--json")
        .arg(&json);
    if let Some(t) = tabby {
        cmd.arg("--tabby-bgpd").arg(t);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| target |"), "no table in:\n{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn check_target(report: &Value, t: &Value, expected: u64) {
    let name = t["name"].as_str().unwrap();
    assert_eq!(t["expected"], expected, "{name}");
    assert_eq!(t["paths"], PEERS * PREFIXES, "{name}");
    assert!(t["skipped"].is_null(), "{name}: {}", t["skipped"]);
    let runs = t["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{name}");
    let r = &runs[0];
    assert!(
        r["converged"].as_bool().unwrap(),
        "{name} did not converge: {}\n{report:#}",
        r["error"]
    );
    assert_eq!(r["received"], expected, "{name}: monitor's prefix count");
    assert_eq!(r["received_final"], expected, "{name}: with final paths");
    assert_eq!(r["unexpected"], 0, "{name}");
    assert_eq!(
        r["injector_received"], 0,
        "{name}: target exported to an injector"
    );
    let elapsed = r["elapsed_s"].as_f64().unwrap();
    assert!(elapsed > 0.0 && elapsed < 20.0, "{name}: {elapsed}");
    let peak = r["peak_rss_bytes"].as_u64().unwrap();
    assert!(peak > 1 << 20, "{name}: peak RSS {peak}");
    assert!(r["peak_rss_all_bytes"].as_u64().unwrap() >= peak);
    assert!(r["injector_send_s"].as_f64().unwrap() >= 0.0);
    assert!(r["monitor_decode_s"].as_f64().unwrap() > 0.0);
    assert!(r["sent_updates"].as_u64().unwrap() >= PEERS, "{name}");
    let s = &t["summary"];
    assert_eq!(s["converged_runs"], 1);
    for field in [
        "elapsed_s",
        "peak_rss_mib",
        "injector_send_s",
        "monitor_decode_s",
    ] {
        let spread = &s[field];
        assert!(
            spread["min"].as_f64().unwrap() <= spread["median"].as_f64().unwrap()
                && spread["median"].as_f64().unwrap() <= spread["max"].as_f64().unwrap(),
            "{name} {field}: {spread}"
        );
    }
}

#[test]
fn unique_mode_against_bird_and_tabby() {
    if skip() {
        return;
    }
    let tabby = tabby_bgpd();
    let targets = if tabby.is_some() {
        "bird,tabby"
    } else {
        "bird"
    };
    let report = run_bench("unique", targets, tabby.as_deref());
    assert_eq!(report["benchmark"], "bgp");
    assert_eq!(report["mode"], "unique");
    assert_eq!(report["peers"], PEERS);
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    let ts = report["targets"].as_array().unwrap();
    assert_eq!(ts.len(), if tabby.is_some() { 2 } else { 1 });
    for t in ts {
        check_target(&report, t, PEERS * PREFIXES);
    }
}

#[test]
fn same_mode_ends_on_the_shortest_path() {
    if skip() {
        return;
    }
    let report = run_bench("same", "bird", None);
    assert_eq!(report["mode"], "same");
    check_target(&report, &report["targets"][0], PREFIXES);
}
