//! The controller starts exactly as the Helm chart's rendered Deployment starts it — its
//! image entrypoint, args and environment (downward-API fields resolved as the kubelet would)
//! — against `tabby-kube-sim` holding the chart's CRDs and default objects, with only the
//! in-cluster config replaced by a kubeconfig. It must pass its rendered readiness and
//! liveness probes, hand a new node a block from the chart's default pool, and make no API
//! request outside `controller::API_CALLS` (which the chart's RBAC is audited against).
//!
//! Needs the pinned helm (`scripts/fetch-tools.sh`); skips with a message otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use tabby_api::v1alpha1::IPAMBlock;
use tabby_chart_tests::{self as chart, container};
use tabby_ipam_controller::controller::API_CALLS;
use tabby_kube_sim::{Config, KubeSim};

const NS: &str = "kube-system";
const POD_NAME: &str = "tabby-ipam-controller-7d9f8-abcde";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, child: &mut Child, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the controller exited ({status}) while waiting for: {what}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn the_rendered_deployment_starts_the_controller_against_kube_sim() {
    let helm = root().join(".tools/bin/helm");
    if !helm.is_file() {
        eprintln!("skipping: .tools/bin/helm missing; run scripts/fetch-tools.sh");
        return;
    }
    let port = free_port();
    // Only the port is changed (the test machine runs other things); everything else is the
    // chart's defaults.
    let port_value = port.to_string();
    let docs = chart::render(&helm, NS, &[("controller.metricsPort", &port_value)])
        .expect("render the chart");
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    assert!(
        c.get("command").is_none(),
        "the chart relies on the image's ENTRYPOINT"
    );
    let ep = container::dockerfile_entrypoint(&root().join("images/ipam-controller.Dockerfile"))
        .expect("the image's ENTRYPOINT");
    assert_eq!(ep, ["/usr/local/bin/tabby-ipam-controller"]);

    let pod_id = container::PodIdentity {
        name: POD_NAME,
        namespace: NS,
        node: "node-a",
    };
    let env = container::env(c, &pod_id).expect("the container's env");
    let args = container::args(c, &env).expect("the container's args");
    let probe_port =
        |probe: &str| -> (u16, String) { container::http_probe(c, probe).expect("probe endpoint") };
    let (ready_port, ready_path) = probe_port("readinessProbe");
    let (live_port, live_path) = probe_port("livenessProbe");
    assert_eq!(ready_port, port);

    // kube-sim with the chart's CRDs and its default custom resources, plus one node.
    let sim = KubeSim::start(Config::default()).await.expect("kube-sim");
    let client = sim.client().await.expect("client");
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut plurals = BTreeMap::new();
    let crd_dir = root().join("charts/tabby/crds");
    for entry in std::fs::read_dir(&crd_dir).expect("crds/") {
        let path = entry.expect("entry").path();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("CRD");
        plurals.insert(crd.spec.names.kind.clone(), crd.spec.names.plural.clone());
        crd_api
            .create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for d in docs.iter().filter(|d| {
        d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("tabby.dev/"))
    }) {
        let kind = d["kind"].as_str().unwrap();
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("tabby.dev", "v1alpha1", kind),
            &plurals[kind],
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let obj: DynamicObject = serde_json::from_value(d.clone()).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    }
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap(),
        )
        .await
        .expect("create node");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    sim.reset_stats();

    // In a pod, kube::Client::try_default() uses the in-cluster config; here KUBECONFIG.
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_tabby-ipam-controller"))
            .env_clear()
            .envs(&env)
            .env("KUBECONFIG", &kubeconfig)
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the controller"),
    );
    eventually(
        &format!("readinessProbe GET {ready_path} on :{ready_port} answers 200"),
        Duration::from_secs(30),
        &mut child.0,
        || {
            let path = ready_path.clone();
            async move { http_status(ready_port, &path).await == Some(200) }
        },
    )
    .await;
    assert_eq!(http_status(live_port, &live_path).await, Some(200));
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    eventually(
        "node-a gets a block from the chart's default pool",
        Duration::from_secs(30),
        &mut child.0,
        || {
            let blocks = blocks.clone();
            async move {
                blocks
                    .list(&ListParams::default())
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .any(|b| b.spec.node == "node-a" && b.spec.pool == "default-ipv4")
                    })
                    .unwrap_or(false)
            }
        },
    )
    .await;
    // The Lease is in the release namespace, held by the identity the Deployment gives it.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let lease = leases.get("tabby-ipam-controller").await.expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(POD_NAME)
    );

    // Every request kube-sim saw from it is a declared call (the test's own reads are list
    // and get, which the controller declares too).
    let declared: BTreeSet<String> = API_CALLS
        .iter()
        .map(|c| {
            let res = if c.group.is_empty() {
                c.resource.to_string()
            } else {
                format!("{}.{}", c.resource, c.group)
            };
            match c.subresource {
                Some(s) => format!("{} {res}/{s}", c.verb),
                None => format!("{} {res}", c.verb),
            }
        })
        .collect();
    let seen = sim.stats();
    assert!(
        seen.contains_key("create ipamblocks.tabby.dev") && seen.contains_key("watch nodes"),
        "kube-sim recorded the controller's requests: {seen:?}"
    );
    let undeclared: Vec<&String> = seen.keys().filter(|k| !declared.contains(*k)).collect();
    assert!(
        undeclared.is_empty(),
        "requests not in controller::API_CALLS (the chart's RBAC would refuse them): \
         {undeclared:?}; seen: {seen:?}"
    );
    drop(child);
    sim.shutdown().await;
}
