//! Harness for multi-process tests: a `tabby-kube-sim` in this process, controller binaries as
//! child processes (killed on drop), a simulated agent writing block status, and the IPAM
//! invariants checked against what the API holds.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tabby_api::ipam::name::address_of;
use tabby_api::ipam::node::block_cidr;
use tabby_api::ipam::pool::nets_overlap;
use tabby_api::v1alpha1::{Allocation, IPAMBlock, IPPool, IPPoolSpec, PodReference};
use tabby_kube_sim::{Config, KubeSim};

/// One emulator plus the kubeconfig file controllers read.
pub struct Env {
    pub sim: KubeSim,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

pub async fn env() -> Env {
    let sim = KubeSim::start(Config {
        bookmark_interval: Duration::from_millis(500),
        ..Config::default()
    })
    .await
    .expect("start kube-sim");
    sim.install_crds(tabby_api::v1alpha1::crds())
        .await
        .expect("install CRDs");
    let client = sim.client().await.expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    Env {
        sim,
        client,
        dir,
        kubeconfig,
    }
}

/// A controller child process, killed (SIGKILL, no lease release) on drop.
pub struct Controller {
    pub child: Child,
    pub identity: String,
    /// Port of `/metrics`, `/healthz`, `/readyz` on 127.0.0.1.
    pub port: u16,
}

impl Controller {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts a controller with short timings; `extra` overrides/adds flags.
pub fn controller(env: &Env, identity: &str, extra: &[&str]) -> Controller {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tabby-ipam-controller"));
    cmd.env("KUBECONFIG", &env.kubeconfig)
        .env_remove("POD_NAME")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .args([
            "--identity",
            identity,
            // Renewal 3 s into a 5 s lease: 2 s of margin on a loaded CI machine.
            "--lease-duration",
            "5",
            "--lease-grace",
            "2",
            "--resync",
            "1",
            "--cooldown",
            "1",
            "--gc-grace",
            "2",
            "--reclaim-after",
            "2",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdin(Stdio::null());
    let child = cmd.spawn().expect("spawn controller");
    Controller {
        child,
        identity: identity.into(),
        port,
    }
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn create_pool(client: &Client, name: &str, cidr: &str, block: Option<u8>) {
    create_pool_spec(
        client,
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            block_size: block,
            node_selector: None,
            disabled: false,
            nat_outgoing: false,
            disable_bgp_export: false,
        },
    )
    .await;
}

pub async fn create_pool_spec(client: &Client, name: &str, spec: IPPoolSpec) {
    let api: Api<IPPool> = Api::all(client.clone());
    api.create(&PostParams::default(), &IPPool::new(name, spec))
        .await
        .expect("create pool");
}

pub async fn create_node(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let api: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

pub async fn delete_node(client: &Client, name: &str) {
    let api: Api<Node> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete node");
}

/// Creates a pod on `node`; returns its uid.
pub async fn create_pod(
    client: &Client,
    name: &str,
    node: &str,
    annotations: &[(&str, &str)],
) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": ann},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}
    }))
    .unwrap();
    let p = api
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    p.metadata.uid.expect("pod uid")
}

pub async fn delete_pod(client: &Client, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete pod");
}

pub async fn blocks(client: &Client) -> Vec<IPAMBlock> {
    let api: Api<IPAMBlock> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .expect("list blocks")
        .items
}

pub async fn blocks_of(client: &Client, node: &str) -> Vec<IPAMBlock> {
    blocks(client)
        .await
        .into_iter()
        .filter(|b| b.spec.node == node)
        .collect()
}

pub async fn pool(client: &Client, name: &str) -> Option<IPPool> {
    let api: Api<IPPool> = Api::all(client.clone());
    api.get_opt(name).await.expect("get pool")
}

/// The `Allocatable` condition's (status, reason).
pub async fn allocatable(client: &Client, name: &str) -> Option<(String, String)> {
    let p = pool(client, name).await?;
    p.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Allocatable")
        .map(|c| (c.status, c.reason))
}

/// What the node agent does: adds an allocation to a block's status with compare-and-swap.
/// `pod` is (name, uid); `age` backdates the allocation.
pub async fn agent_allocate(
    client: &Client,
    block: &str,
    ordinal: u32,
    pod: Option<(&str, &str)>,
    age: Duration,
) {
    let api: Api<IPAMBlock> = Api::all(client.clone());
    for _ in 0..20 {
        let mut b = api.get(block).await.expect("get block");
        let st = b.status.get_or_insert_with(Default::default);
        let time = Timestamp::now() - k8s_openapi::jiff::SignedDuration::try_from(age).unwrap();
        st.allocations.push(Allocation {
            ordinal,
            handle: format!("handle-{block}-{ordinal}"),
            pod: pod.map(|(name, uid)| PodReference {
                namespace: "default".into(),
                name: name.into(),
                uid: uid.into(),
            }),
            time: Time(time),
        });
        match api.replace_status(block, &PostParams::default(), &b).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("agent write: {e}"),
        }
    }
    panic!("agent write kept conflicting");
}

pub async fn lease_holder(client: &Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    api.get_opt("tabby-ipam-controller")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// The IPAM invariants: no overlapping blocks, no address twice, every allocation of a live
/// pod in a block of the pod's node, every block inside its pool (when the pool exists).
pub async fn check_invariants(client: &Client) {
    let all = blocks(client).await;
    let pods: Api<Pod> = Api::all(client.clone());
    let pods = pods.list(&ListParams::default()).await.expect("pods").items;
    let pod_node: BTreeMap<String, String> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.clone()?, p.spec.as_ref()?.node_name.clone()?)))
        .collect();
    let pools: Api<IPPool> = Api::all(client.clone());
    let pools = pools
        .list(&ListParams::default())
        .await
        .expect("pools")
        .items;
    let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
    for (i, a) in all.iter().enumerate() {
        let ca = block_cidr(a).expect("valid block cidr");
        for b in &all[i + 1..] {
            let cb = block_cidr(b).expect("valid block cidr");
            assert!(
                !nets_overlap(&ca, &cb),
                "blocks overlap: {:?} {:?}",
                a.metadata.name,
                b.metadata.name
            );
        }
        if let Some(p) = pools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(a.spec.pool.as_str()))
        {
            let pc: ipnet::IpNet = p.spec.cidr.parse().unwrap();
            assert!(pc.contains(&ca), "block {ca} outside pool {pc}");
        }
        for al in a.status.iter().flat_map(|s| &s.allocations) {
            let addr = address_of(ca, al.ordinal).expect("ordinal inside block");
            assert!(addrs.insert(addr), "address {addr} allocated twice");
            if let Some(node) = al.pod.as_ref().and_then(|p| pod_node.get(&p.uid)) {
                assert_eq!(
                    node, &a.spec.node,
                    "allocation {addr} of a pod on {node} sits in a block of {}",
                    a.spec.node
                );
            }
        }
    }
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0: (status code, body), or `None` when nothing
/// answers yet.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Reasons of the events.k8s.io/v1 Events about `kind`/`name`.
pub async fn event_reasons(client: &Client, kind: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .filter_map(|e| e.reason)
        .collect()
}
