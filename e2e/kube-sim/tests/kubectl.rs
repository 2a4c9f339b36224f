//! `kubectl` (v1.33, from the package `scripts/fetch-tools.sh` extracts into `.tools/bin/`) works
//! against the emulator: client-side and server-side `apply -f` of CRDs and objects, `get` with
//! printer columns, and `delete`. Skips with a message when the binary is absent.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn kubectl_path() -> Option<PathBuf> {
    let p = workspace_root().join(".tools/bin/kubectl");
    p.is_file().then_some(p)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(&self.bin)
                .env("KUBECONFIG", &self.kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("kubectl finished in time")
        .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{text}");
        text
    }
}

const CRD_AND_OBJECTS: &str = r#"
apiVersion: test.tabby.dev/v1alpha1
kind: Pool
metadata: {name: pool-a, labels: {tier: edge}}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: test.tabby.dev/v1alpha1
kind: Pool
metadata: {name: pool-b}
spec: {cidr: 10.1.0.0/16, blockSize: 24}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default}
data: {a: "1"}
"#;

#[tokio::test]
async fn kubectl_apply_get_delete() {
    let Some(bin) = kubectl_path() else {
        eprintln!(
            "skipping: .tools/bin/kubectl not found; run scripts/fetch-tools.sh to install it"
        );
        return;
    };
    let sim = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl { bin, kubeconfig };

    let crd = dir.path().join("crd.json");
    std::fs::write(
        &crd,
        serde_json::to_vec_pretty(&common::pool_crd()).unwrap(),
    )
    .unwrap();
    let out = k.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/pools.test.tabby.dev created"),
        "{out}"
    );

    let objs = dir.path().join("objects.yaml");
    std::fs::write(&objs, CRD_AND_OBJECTS).unwrap();
    let out = k.ok(&["apply", "-f", objs.to_str().unwrap()]).await;
    assert!(
        out.contains("pool.test.tabby.dev/pool-a created") && out.contains("configmap/cfg created"),
        "{out}"
    );

    // Re-apply with a change: kubectl computes a patch from last-applied-configuration.
    std::fs::write(
        &objs,
        CRD_AND_OBJECTS
            .replace("blockSize: 24", "blockSize: 28")
            .replace("a: \"1\"", "a: \"2\""),
    )
    .unwrap();
    let out = k.ok(&["apply", "-f", objs.to_str().unwrap()]).await;
    assert!(
        out.contains("pool.test.tabby.dev/pool-a unchanged")
            && out.contains("pool.test.tabby.dev/pool-b configured")
            && out.contains("configmap/cfg configured"),
        "{out}"
    );

    // Printer columns, via the short name too.
    let out = k.ok(&["get", "pools"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CIDR", "BLOCK", "READY", "AGE"], "{out}");
    let row_b: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("pool-b"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&row_b[..3], ["pool-b", "10.1.0.0/16", "28"], "{out}");
    let out = k.ok(&["get", "tp", "-l", "tier=edge", "-o", "name"]).await;
    assert_eq!(out.trim(), "pool.test.tabby.dev/pool-a");
    assert_eq!(
        k.ok(&["get", "pool", "pool-a", "-o", "jsonpath={.spec.blockSize}"])
            .await
            .trim(),
        "26",
        "default applied"
    );
    assert_eq!(
        k.ok(&["get", "configmap", "cfg", "-o", "jsonpath={.data.a}"])
            .await
            .trim(),
        "2"
    );

    // Schema and CEL validation reach kubectl as the real server's messages.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: test.tabby.dev/v1alpha1\nkind: Pool\nmetadata: {name: bad}\nspec: {cidr: 10.0.0.1/16}\n").unwrap();
    let (ok, out) = k.run(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(
        !ok && out.contains("must be a CIDR with no host bits set"),
        "{out}"
    );
    std::fs::write(&bad, "apiVersion: test.tabby.dev/v1alpha1\nkind: Pool\nmetadata: {name: bad}\nspec: {cidr: 10.0.0.0/16, typo: 1}\n").unwrap();
    let (ok, out) = k.run(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(
        !ok && out.contains("unknown field"),
        "strict field validation: {out}"
    );

    // Server-side apply.
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            objs.to_str().unwrap(),
        ])
        .await;
    assert!(
        out.contains("pool.test.tabby.dev/pool-b serverside-applied"),
        "{out}"
    );

    let out = k.ok(&["delete", "-f", objs.to_str().unwrap()]).await;
    assert!(
        out.contains("pool.test.tabby.dev \"pool-a\" deleted"),
        "{out}"
    );
    let out = k.ok(&["get", "pools", "-o", "name"]).await;
    assert!(
        out.trim().is_empty() || out.contains("No resources found"),
        "{out}"
    );
    sim.shutdown().await;
}

/// Tabby's own CRDs (from the chart, generated by `tabby-api`) apply, and their CEL rules run.
#[tokio::test]
async fn kubectl_applies_tabby_crds() {
    let Some(bin) = kubectl_path() else {
        eprintln!(
            "skipping: .tools/bin/kubectl not found; run scripts/fetch-tools.sh to install it"
        );
        return;
    };
    let crds = workspace_root().join("charts/tabby/crds");
    if !crds.is_dir() {
        eprintln!("skipping: {} not found", crds.display());
        return;
    }
    let sim = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl { bin, kubeconfig };
    let out = k.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(out.contains("ippools.tabby.dev created"), "{out}");
    let crd_count = std::fs::read_dir(&crds)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .count();
    assert_eq!(out.matches(" created").count(), crd_count, "{out}");
    let pool = dir.path().join("pool.yaml");
    std::fs::write(&pool, "apiVersion: tabby.dev/v1alpha1\nkind: IPPool\nmetadata: {name: default-v4}\nspec: {cidr: 10.244.0.0/16, blockSize: 26}\n").unwrap();
    k.ok(&["apply", "-f", pool.to_str().unwrap()]).await;
    let out = k.ok(&["get", "ippools"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("default-v4") && l.contains("10.244.0.0/16")),
        "{out}"
    );
    std::fs::write(&pool, "apiVersion: tabby.dev/v1alpha1\nkind: IPPool\nmetadata: {name: default-v4}\nspec: {cidr: 10.245.0.0/16, blockSize: 26}\n").unwrap();
    let (ok, out) = k.run(&["apply", "-f", pool.to_str().unwrap()]).await;
    assert!(
        !ok && out.contains("immutable"),
        "transition rule enforced: {out}"
    );
    sim.shutdown().await;
}
