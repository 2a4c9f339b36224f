//! `tabby-bench datapath` end to end, tiny (root and iperf3 only; skips otherwise): every target
//! moves traffic, the figures are ordered, the ratio is to host-to-host and the pods got the
//! fabric's MTU.

use std::process::Command;

#[test]
fn datapath_bench_tiny_run_reports_every_target() {
    if tabby_netlab::skip_unless_root_and(&["ip", "ss", "ping", "iperf3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("datapath.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-bench"))
        .args([
            "datapath",
            "--runs",
            "1",
            "--duration",
            "1",
            "--omit",
            "0",
            "--mtu",
            "1400",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tabby-bench datapath failed:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("vs host") && stdout.contains("pod MTU 1400"),
        "{stdout}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["bench"], "datapath");
    assert_eq!(doc["params"]["fabric_mtu"], 1400);
    assert_eq!(doc["params"]["pod_mtu"], 1400, "{doc}");
    assert_eq!(doc["params"]["vxlan_mtu"], 1350);
    let results = doc["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["host", "vxlan", "pod"]);
    for r in results {
        assert_eq!(r["ok"], true);
        let (med, min, max) = (
            r["gbps"].as_f64().unwrap(),
            r["gbps_min"].as_f64().unwrap(),
            r["gbps_max"].as_f64().unwrap(),
        );
        // Anything that moved a second of TCP through a veth did better than 10 Mbit/s.
        assert!(min > 0.01 && min <= med && med <= max, "{r}");
        let ratio = r["ratio_to_host"].as_f64().unwrap();
        let host = results[0]["gbps"].as_f64().unwrap();
        assert!((ratio - med / host).abs() < 1e-9, "{r}");
    }
    assert_eq!(results[0]["ratio_to_host"], 1.0);
}
