//! Test harness: a CNI server with a handler that does what the agent will do — a small
//! in-test allocator plus the real datapath in a "node" network namespace — and a runner for
//! the real `tabby-cni` binary.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tabby_cni::datapath::{Datapath, DelOutcome, PodSpec, host_ifname, pod_key};
use tabby_cni::server::{CniServer, Handler, ServerStats};
use tabby_cni::spec::{Attachment, CniError, CniResult, ErrorCode, Request};
use tabby_netlab::Netns;

pub const V4_BASE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
pub const V6_BASE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0);

/// A toy allocator: ordinals 1..=max in one IPv4 /24 and/or one IPv6 /120, keyed by container.
#[derive(Debug, Default)]
pub struct Allocator {
    pub by_container: HashMap<String, Vec<IpAddr>>,
    pub max: u32,
    pub v4: bool,
    pub v6: bool,
}

impl Allocator {
    fn addrs(&self, n: u32) -> Vec<IpAddr> {
        let mut v = Vec::new();
        if self.v4 {
            v.push(IpAddr::V4(Ipv4Addr::from(u32::from(V4_BASE) + n)));
        }
        if self.v6 {
            v.push(IpAddr::V6(Ipv6Addr::from(u128::from(V6_BASE) + n as u128)));
        }
        v
    }

    fn allocate(&mut self, container: &str) -> Result<Vec<IpAddr>, CniError> {
        if let Some(a) = self.by_container.get(container) {
            return Ok(a.clone());
        }
        let used: HashSet<IpAddr> = self.by_container.values().flatten().copied().collect();
        let n = (1..=self.max)
            .find(|n| !used.contains(&self.addrs(*n)[0]))
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::TRY_AGAIN_LATER,
                    "no free address in the node's blocks; waiting for a new block",
                )
            })?;
        let a = self.addrs(n);
        self.by_container.insert(container.to_string(), a.clone());
        Ok(a)
    }
}

pub struct TestHandler {
    pub datapath: Datapath,
    pub alloc: Mutex<Allocator>,
}

impl TestHandler {
    fn spec(&self, req: &Request, addresses: Vec<IpAddr>) -> PodSpec {
        PodSpec {
            container_id: req.container_id().to_string(),
            netns: req.env.netns.clone().unwrap_or_default(),
            ifname: req.ifname().to_string(),
            host_ifname: host_ifname(&pod_key(req.env.pod.as_ref(), req.container_id())),
            addresses,
            mtu: req.config.mtu,
        }
    }
}

impl Handler for TestHandler {
    async fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let addrs = self.alloc.lock().unwrap().allocate(req.container_id())?;
        match self.datapath.add(&self.spec(req, addrs)).await {
            Ok(a) => Ok(a.cni_result()),
            Err(e) => {
                // Atomic ADD: the allocation goes with the interface.
                self.alloc
                    .lock()
                    .unwrap()
                    .by_container
                    .remove(req.container_id());
                Err(e.to_cni())
            }
        }
    }

    async fn del(&self, req: &Request) -> Result<(), CniError> {
        let spec = self.spec(req, vec![]);
        match self
            .datapath
            .del(&spec.host_ifname, req.container_id())
            .await
            .map_err(|e| e.to_cni())?
        {
            DelOutcome::Deleted | DelOutcome::Absent | DelOutcome::OtherOwner(_) => {}
        }
        self.alloc
            .lock()
            .unwrap()
            .by_container
            .remove(req.container_id());
        Ok(())
    }

    async fn check(&self, req: &Request) -> Result<(), CniError> {
        let addrs = self
            .alloc
            .lock()
            .unwrap()
            .by_container
            .get(req.container_id())
            .cloned()
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::UNKNOWN_CONTAINER,
                    format!("container {} has no address here", req.container_id()),
                )
            })?;
        let prev = req.config.prev_result.clone().unwrap_or_default();
        for a in &addrs {
            if !prev.ips.iter().any(|ip| ip.address.addr() == *a) {
                return Err(CniError::new(
                    ErrorCode::CHECK_FAILED,
                    format!("prevResult lacks the pod's address {a}"),
                ));
            }
        }
        self.datapath
            .check(&self.spec(req, addrs))
            .await
            .map(drop)
            .map_err(|e| e.to_cni())
    }

    async fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }

    async fn gc(&self, _req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let live: HashSet<String> = valid.iter().map(|a| a.container_id.clone()).collect();
        self.alloc
            .lock()
            .unwrap()
            .by_container
            .retain(|c, _| live.contains(c));
        self.datapath
            .reconcile(&live)
            .await
            .map(drop)
            .map_err(|e| e.to_cni())
    }
}

/// A running server for one node namespace. Dropping it stops the server.
pub struct Agent {
    pub runtime: tokio::runtime::Runtime,
    pub socket: PathBuf,
    pub stats: Arc<ServerStats>,
    pub handler: Arc<TestHandler>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Agent {
    /// A dual-stack (`true`) or IPv4-only agent.
    pub fn start(node: &Netns, dual_stack: bool, max: u32) -> Agent {
        Self::start_families(node, true, dual_stack, max)
    }

    pub fn start_families(node: &Netns, v4: bool, v6: bool, max: u32) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/cni.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let datapath = runtime
            .block_on(Datapath::new(Some(Path::new(&node.path())), None))
            .unwrap();
        let handler = Arc::new(TestHandler {
            datapath,
            alloc: Mutex::new(Allocator {
                max,
                v4,
                v6,
                ..Allocator::default()
            }),
        });
        let server = CniServer::bind(&socket).unwrap();
        let stats = server.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = handler.clone();
        runtime.spawn(async move {
            server
                .serve(h, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Agent {
            runtime,
            socket,
            stats,
            handler,
            _dir: dir,
            stop: Some(tx),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What one run of the shim printed and how it exited.
#[derive(Debug)]
pub struct ShimRun {
    pub code: i32,
    pub stdout: Option<Value>,
    pub raw: String,
}

pub fn shim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tabby-cni")
}

/// Runs `tabby-cni` with exactly `env` (plus PATH and the socket) and `stdin`.
pub fn shim(socket: &Path, env: &[(&str, &str)], stdin: &str) -> ShimRun {
    shim_with(Command::new(shim_bin()), socket, env, stdin)
}

pub fn shim_with(mut cmd: Command, socket: &Path, env: &[(&str, &str)], stdin: &str) -> ShimRun {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TABBY_CNI_SOCKET", socket)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A plugin may exit without reading all of stdin; runtimes ignore that broken pipe too.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
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
    }
}

/// The `CNI_*` environment for a pod.
pub fn pod_env(
    command: &str,
    container: &str,
    netns: &str,
    ns: &str,
    pod: &str,
) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert("CNI_COMMAND", command.to_string());
    m.insert("CNI_CONTAINERID", container.to_string());
    m.insert("CNI_NETNS", netns.to_string());
    m.insert("CNI_IFNAME", "eth0".to_string());
    m.insert(
        "CNI_ARGS",
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container}"),
    );
    m.insert("CNI_PATH", "/usr/lib/cni".to_string());
    m
}

pub fn env_pairs<'a>(m: &'a BTreeMap<&'static str, String>) -> Vec<(&'static str, &'a str)> {
    m.iter().map(|(k, v)| (*k, v.as_str())).collect()
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

/// Names of the links in a namespace.
pub fn links(ns: &Netns) -> Vec<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

pub fn mac_of(ns: &Netns, ifname: &str) -> String {
    ip_json(ns, &["link", "show", "dev", ifname])[0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn link_local_of(ns: &Netns, ifname: &str) -> String {
    let v = ip_json(ns, &["-6", "addr", "show", "dev", ifname, "scope", "link"]);
    v[0]["addr_info"][0]["local"].as_str().unwrap().to_string()
}

/// The routes of a namespace's main table with protocol 84 (Tabby's).
pub fn tabby_routes(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        for r in ip_json(ns, &[fam, "route", "show", "proto", "84"])
            .as_array()
            .unwrap()
        {
            out.push(format!(
                "{} dev {}",
                r["dst"].as_str().unwrap_or(""),
                r["dev"].as_str().unwrap_or("")
            ));
        }
    }
    out
}
