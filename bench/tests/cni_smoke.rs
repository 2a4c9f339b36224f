//! `tabby-bench cni` end to end, tiny (root, `ptp` + `host-local` and a built `tabby-cni`; skips
//! otherwise): both targets serve every ADD and DEL, sequential and concurrent, through the real
//! shim and the agent's CNI service, and leave nothing behind (`ok`).

use std::path::PathBuf;
use std::process::Command;

/// `tabby-cni` as `cargo test --workspace` builds it: next to this test's `deps/` directory.
fn shim() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let p = dir.join("tabby-cni");
    p.is_file().then_some(p)
}

#[test]
fn cni_bench_tiny_run_reports_both_targets() {
    if tabby_netlab::skip_unless_root_and(&["ip", "/usr/lib/cni/ptp", "/usr/lib/cni/host-local"]) {
        return;
    }
    let Some(shim) = shim() else {
        eprintln!("SKIP: tabby-cni is not built next to the tests (cargo build -p tabby-cni)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cni.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-bench"))
        .args(["cni", "--pods", "6", "--concurrency", "4", "--shim"])
        .arg(&shim)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tabby-bench cni failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ADD p50") && !stdout.contains("NOT OK"),
        "{stdout}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["bench"], "cni");
    assert_eq!(doc["params"]["pods"], 6);
    assert_eq!(doc["params"]["concurrency"], 4);
    let results = doc["results"].as_array().unwrap();
    let rows: Vec<(&str, &str, u64)> = results
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap(),
                r["phase"].as_str().unwrap(),
                r["pods"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("tabby", "sequential", 6),
            ("tabby", "concurrent", 4),
            ("ptp", "sequential", 6),
            ("ptp", "concurrent", 4),
        ]
    );
    for r in results {
        assert_eq!(r["ok"], true, "{r}");
        for op in ["add", "del"] {
            let f = |k: &str| r[format!("{op}_{k}_ms")].as_f64().unwrap();
            assert!(
                f("min") > 0.0
                    && f("min") <= f("p50")
                    && f("p50") <= f("p99")
                    && f("p99") <= f("max"),
                "{r}"
            );
        }
    }
}
