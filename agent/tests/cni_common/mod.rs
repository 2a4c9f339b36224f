//! Harness for the agent's CNI service: a "node" network namespace whose threads run the
//! service (real datapath, real route reconciler, real IPAM client) against an in-process
//! `tabby-kube-sim`, pods as namespaces, and the real `tabby-cni` binary as the runtime would
//! exec it (environment and stdin only).
//!
//! Every runtime thread, and the test thread itself, joins the node namespace first: the
//! datapath, the reconciler's netlink sockets, `nft` children and the kube-sim's loopback
//! listener all live there. A test thread is never reused by libtest, so it may stay there.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tabby_agent::cni::{CniConfig, CniDeps, CniService};
use tabby_agent::ipam::{ClientConfig, IpamClient};
use tabby_agent::routes::{Config as RoutesConfig, Reconciler, ReconcilerHandle};
use tabby_api::ipam::name::{address_of, block_name};
use tabby_api::ipam::node::block_cidr;
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec, IPPool, IPPoolSpec};
use tabby_kube_sim::{Config as SimConfig, KubeSim};
use tabby_netlab::{Netns, skip_unless_root_and};

pub const NODE: &str = "node-1";

/// Joins the current thread to `ns`'s network namespace.
pub fn enter(ns: &Netns) {
    let f = File::open(ns.path()).expect("open netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A multi-threaded runtime whose every thread lives in `ns`.
pub fn runtime_in(ns: &Netns, threads: usize) -> tokio::runtime::Runtime {
    let f = Arc::new(File::open(ns.path()).expect("open netns"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_start(move || {
            nix::sched::setns(&*f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        })
        .build()
        .expect("runtime")
}

/// The `tabby-cni` binary next to the test executable (`target/<profile>/tabby-cni`).
pub fn shim_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?;
    let p = profile.join("tabby-cni");
    p.is_file().then_some(p)
}

/// `None` (after saying why) when the test cannot run here.
pub fn skip() -> bool {
    if skip_unless_root_and(&["ip", "ping"]) {
        return true;
    }
    if shim_bin().is_none() {
        eprintln!("SKIP: target/<profile>/tabby-cni is not built; run `cargo build -p tabby-cni`");
        return true;
    }
    false
}

/// A node namespace, a kube-sim inside it, and the socket path.
pub struct Lab {
    pub sim: Option<KubeSim>,
    pub client: kube::Client,
    pub kubeconfig: kube::config::Kubeconfig,
    pub socket: PathBuf,
    pub rt: tokio::runtime::Runtime,
    dir: PathBuf,
    pub node: Netns,
}

impl Lab {
    pub fn new() -> Lab {
        let node = Netns::new().expect("node netns");
        // The node's own addresses (a real node has them; without one, the node's pings to
        // pods would leave from 127.0.0.1 and be dropped as martians).
        // On `lo`: this kernel may lack the dummy driver.
        node.add_addr("lo", "192.168.255.1/32").expect("node v4");
        node.add_addr("lo", "fd00:ffff::1/128").expect("node v6");
        enter(&node);
        let rt = runtime_in(&node, 2);
        let (sim, client) = rt.block_on(async {
            let sim = KubeSim::start(SimConfig {
                bookmark_interval: Duration::from_millis(500),
                ..SimConfig::default()
            })
            .await
            .expect("kube-sim");
            sim.install_crds(tabby_api::v1alpha1::crds())
                .await
                .expect("install CRDs");
            let client = sim.client().await.expect("client");
            (sim, client)
        });
        let kubeconfig = sim.kubeconfig();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tabby-cni-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let socket = dir.join("run/cni.sock");
        Lab {
            sim: Some(sim),
            client,
            kubeconfig,
            socket,
            rt,
            dir,
            node,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn pool(&self, name: &str, cidr: &str, block: u8, nat: bool) {
        let api: Api<IPPool> = Api::all(self.client.clone());
        let spec = IPPoolSpec {
            cidr: cidr.into(),
            block_size: Some(block),
            node_selector: None,
            disabled: false,
            nat_outgoing: nat,
            disable_bgp_export: false,
        };
        self.block_on(api.create(&PostParams::default(), &IPPool::new(name, spec)))
            .expect("create pool");
    }

    /// A block for [`NODE`], as the controller would write it.
    pub fn block(&self, cidr: &str, pool: &str) {
        let api: Api<IPAMBlock> = Api::all(self.client.clone());
        let name = block_name(cidr.parse().unwrap());
        let spec = IPAMBlockSpec {
            cidr: cidr.into(),
            pool: pool.into(),
            node: NODE.into(),
        };
        self.block_on(api.create(&PostParams::default(), &IPAMBlock::new(&name, spec)))
            .expect("create block");
    }

    /// Creates the Pod object `default/<name>`; returns its UID.
    pub fn pod_object(&self, name: &str, annotations: Value) -> String {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "pause"}], "nodeName": NODE},
        }))
        .unwrap();
        let created = self
            .block_on(api.create(&PostParams::default(), &pod))
            .expect("create pod");
        created.metadata.uid.unwrap_or_default()
    }

    /// Every allocation: address → handle; panics on an address held twice.
    pub fn allocations(&self) -> BTreeMap<IpAddr, String> {
        let api: Api<IPAMBlock> = Api::all(self.client.clone());
        let list = self
            .block_on(api.list(&ListParams::default()))
            .expect("list blocks");
        let mut out = BTreeMap::new();
        for b in &list.items {
            let cidr = block_cidr(b).unwrap();
            for a in b.status.iter().flat_map(|s| &s.allocations) {
                let addr = address_of(cidr, a.ordinal).unwrap();
                let prev = out.insert(addr, a.handle.clone());
                assert!(
                    prev.is_none(),
                    "{addr} allocated twice: {prev:?}, {}",
                    a.handle
                );
            }
        }
        out
    }

    pub fn allocation_objects(&self) -> Vec<IPAMBlock> {
        let api: Api<IPAMBlock> = Api::all(self.client.clone());
        self.block_on(api.list(&ListParams::default()))
            .expect("list blocks")
            .items
    }

    /// Starts the agent's CNI service (its own runtime, so it can be killed).
    pub fn agent(&self, cfg: AgentCfg) -> Agent {
        let rt = runtime_in(&self.node, 2);
        let kubeconfig = self.kubeconfig.clone();
        let socket = self.socket.clone();
        let (service, routes) = rt.block_on(async move {
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .expect("kubeconfig");
            let client = kube::Client::try_from(config).expect("client");
            let reconciler = Reconciler::new(RoutesConfig::default()).expect("route reconciler");
            let (routes, rx) = ReconcilerHandle::new(&reconciler);
            tokio::spawn(reconciler.run(rx));
            let ipam = IpamClient::new(
                client.clone(),
                NODE,
                ClientConfig {
                    cooldown: cfg.cooldown,
                    max_attempts: 20,
                    poll_interval: Duration::from_millis(100),
                },
            );
            let service = tabby_agent::cni::start(
                CniConfig {
                    socket,
                    mtu: None,
                    block_wait: cfg.block_wait,
                    retry_interval: Duration::from_millis(100),
                },
                CniDeps {
                    client,
                    node: NODE.into(),
                    ipam,
                    routes: routes.clone(),
                },
            )
            .await
            .expect("CNI service starts");
            (service, routes)
        });
        Agent {
            rt: Some(rt),
            service: Some(service),
            routes,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AgentCfg {
    pub block_wait: Duration,
    pub cooldown: Duration,
}

impl Default for AgentCfg {
    fn default() -> Self {
        AgentCfg {
            block_wait: Duration::from_secs(2),
            cooldown: Duration::from_secs(30),
        }
    }
}

pub struct Agent {
    pub rt: Option<tokio::runtime::Runtime>,
    pub service: Option<CniService>,
    pub routes: ReconcilerHandle,
}

impl Agent {
    pub fn service(&self) -> &CniService {
        self.service.as_ref().unwrap()
    }

    /// Graceful stop (socket removed).
    pub fn stop(mut self) {
        if let (Some(rt), Some(s)) = (self.rt.take(), self.service.take()) {
            rt.block_on(s.stop());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// Like SIGKILL: every task dropped wherever it is.
    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        // The socket file stays behind, as after a real kill.
        drop(self.service.take());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let (Some(rt), Some(s)) = (self.rt.take(), self.service.take()) {
            rt.block_on(s.stop());
            rt.shutdown_background();
        }
    }
}

/// A pod: its namespace and container ID.
pub struct PodNs {
    pub ns: Netns,
    pub name: String,
    pub container: String,
}

impl PodNs {
    pub fn new(name: &str) -> PodNs {
        PodNs {
            ns: Netns::new().expect("pod netns"),
            name: name.to_string(),
            container: format!("ctr-{name}"),
        }
    }

    pub fn env(&self, command: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", self.container.clone()),
            ("CNI_NETNS", self.ns.path()),
            ("CNI_IFNAME", "eth0".to_string()),
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    self.name, self.container
                ),
            ),
            ("CNI_PATH", "/opt/cni/bin".to_string()),
        ]
    }
}

/// What one run of the shim printed and how it exited.
#[derive(Debug)]
pub struct ShimRun {
    pub code: i32,
    pub stdout: Option<Value>,
    pub raw: String,
    pub elapsed: Duration,
}

/// Runs `tabby-cni` with exactly `env` (plus PATH and the socket) and `stdin`.
pub fn shim(socket: &Path, env: &[(&str, String)], stdin: &str) -> ShimRun {
    let mut cmd = Command::new(shim_bin().expect("tabby-cni built"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TABBY_CNI_SOCKET", socket)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn tabby-cni");
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().expect("tabby-cni output");
    let elapsed = started.elapsed();
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    ShimRun {
        code: out.status.code().unwrap_or(-1),
        stdout: if raw.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&raw)
                    .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {raw}")),
            )
        },
        raw,
        elapsed,
    }
}

pub fn config(version: &str, extra: Value) -> String {
    let mut c = json!({"cniVersion": version, "name": "k8s-pod-network", "type": "tabby-cni"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    c.to_string()
}

/// The addresses (without prefix length) in an ADD result.
pub fn result_addrs(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .map(|ip| {
                    ip["address"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `ip -j` output of a command in a namespace.
pub fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ns.ip(&full).unwrap();
    if out.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&out).unwrap()
}

/// Names of the `tab…` links in a namespace.
pub fn tab_links(ns: &Netns) -> BTreeSet<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("tab"))
        .map(String::from)
        .collect()
}

/// Tabby's routes (protocol 84) in a namespace, as `dst dev`.
pub fn tabby_routes(ns: &Netns) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for fam in ["-4", "-6"] {
        for r in ip_json(ns, &[fam, "route", "show", "proto", "84"])
            .as_array()
            .unwrap()
        {
            out.insert(format!(
                "{} dev {}",
                r["dst"].as_str().unwrap_or(""),
                r["dev"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// One ping from `ns` to `addr`; true when answered.
pub fn ping(ns: &Netns, addr: IpAddr) -> bool {
    ns.command("ping")
        .args(["-c", "1", "-W", "2", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Median and 99th percentile (nearest rank) in milliseconds.
pub fn p50_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99))
}
