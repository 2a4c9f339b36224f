//! The `tabby-kube-sim` binary: TLS with a generated CA, token auth, the kubeconfig it writes, and
//! `--data-dir` persistence across a restart (objects, CRD types and resourceVersion continuity).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Kills the emulator process when the test ends, even on failure.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Graceful stop (SIGTERM), so the final snapshot is written.
    fn terminate(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

async fn launch(data_dir: &Path, kubeconfig: &Path) -> (Proc, kube::Client) {
    let _ = std::fs::remove_file(kubeconfig);
    let child = Command::new(env!("CARGO_BIN_EXE_tabby-kube-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "--token",
            "t0ken",
            "--watch-window",
            "1000",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tabby-kube-sim");
    let proc = Proc(child);
    let ready = common::eventually(Duration::from_secs(20), || async { kubeconfig.exists() }).await;
    assert!(ready, "the binary wrote its kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let server = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    (proc, kube::Client::try_from(cfg).unwrap())
}

#[tokio::test]
async fn tls_token_and_restart_with_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("kubeconfig");
    let (proc, client) = launch(&data, &kubeconfig).await;

    // Token required: a client with the CA but without the token is refused.
    let mut kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    kc.auth_infos[0].auth_info = Some(Default::default());
    let mut anon_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    anon_cfg.default_retry = false;
    let anon = kube::Client::try_from(anon_cfg).unwrap();
    let (code, _) = common::raw(&anon, "GET", "/api/v1/nodes", "application/json", None).await;
    assert_eq!(code, 401);

    let (code, _) = common::raw(
        &client,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        Some(&common::pool_crd()),
    )
    .await;
    assert_eq!(code, 201);
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(common::node("node-1", json!({"zone": "a"}))).unwrap(),
        )
        .await
        .unwrap();
    let (code, _) = common::raw(
        &client,
        "POST",
        "/apis/test.tabby.dev/v1alpha1/pools",
        "application/json",
        Some(&common::pool("p1", "10.0.0.0/16")),
    )
    .await;
    assert_eq!(code, 201);
    let rv_before: u64 = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    proc.terminate();

    let (proc, client) = launch(&data, &kubeconfig).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let again = nodes
        .get("node-1")
        .await
        .expect("node survived the restart");
    assert_eq!(again.uid(), n.uid());
    assert_eq!(again.labels().get("zone").map(String::as_str), Some("a"));
    let (code, pool) = common::raw(
        &client,
        "GET",
        "/apis/test.tabby.dev/v1alpha1/pools/p1",
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, 200, "the CRD type was restored with its objects");
    assert_eq!(pool["spec"]["blockSize"], 26);
    let n2 = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(common::node("node-2", json!({}))).unwrap(),
        )
        .await
        .unwrap();
    let rv_after: u64 = n2.resource_version().unwrap().parse().unwrap();
    assert!(
        rv_after > rv_before,
        "resourceVersion continues after restart: {rv_after} > {rv_before}"
    );
    // Watches from before the restart are too old (the watch history is not persisted).
    let (code, body) = common::raw(
        &client,
        "GET",
        &format!(
            "/api/v1/nodes?watch=1&resourceVersion={}&timeoutSeconds=1",
            rv_before - 1
        ),
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["type"].as_str(), body["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410)),
        "{body}"
    );
    drop(proc);
}
