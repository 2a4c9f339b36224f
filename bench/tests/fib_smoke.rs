//! `tabby-bench fib` end to end with a small N (root only; skips otherwise): every target
//! programs every route and the JSON report has the documented shape.

use std::process::Command;

#[test]
fn fib_bench_small_run_reports_every_target() {
    if tabby_netlab::skip_unless_root_and(&["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("fib.json");
    let mut targets = vec!["tabby", "ip-batch"];
    if tabby_netlab::find_program("bird").is_some() {
        targets.push("bird");
    } else {
        eprintln!("bird not installed: checking tabby and ip-batch only");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-bench"))
        .args([
            "fib",
            "--routes",
            "2000",
            "--runs",
            "2",
            "--prefix-len",
            "32",
        ])
        .arg("--targets")
        .arg(targets.join(","))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tabby-bench fib failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("routes/s"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["bench"], "fib");
    assert_eq!(doc["params"]["routes"], 2000);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), targets.len(), "{doc}");
    for (r, t) in results.iter().zip(&targets) {
        assert_eq!(r["target"], *t);
        assert_eq!(r["ok"], true);
        let (med, min, max) = (
            r["fib_s"].as_f64().unwrap(),
            r["fib_s_min"].as_f64().unwrap(),
            r["fib_s_max"].as_f64().unwrap(),
        );
        assert!(min > 0.0 && min <= med && med <= max, "{r}");
    }
}
