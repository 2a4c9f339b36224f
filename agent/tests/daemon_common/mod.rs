//! Harness for the `tabby-agent` binary tests: one network namespace per node on a shared
//! bridge, `tabby-kube-sim` in the bridge's ("hub") namespace, the real binary started with
//! `ip netns exec` per node. Everything is torn down on drop (processes, namespaces, files).
//!
//! API work must run where the emulator listens: the test body runs inside the hub namespace
//! ([`Lab::block_on`]); kernel state is read with `ip -n` / `ss` from anywhere.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tabby_api::v1alpha1::{IPAMBlock, IPPool};
use tabby_kube_sim::{Config, KubeSim};
use tabby_netlab::{Netns, Process, in_netns};

pub use tabby_netlab::skip_unless_root_and;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The pool every test uses; node `i` (1-based) gets block `10.244.<i>.0/26`.
pub const POOL: &str = "10.244.0.0/16";

pub fn block_of(i: usize) -> String {
    format!("10.244.{i}.0/26")
}

/// The IPv6 pool of dual-stack labs; node `i` gets `fd00:244::<i>00/122`.
pub const POOL6: &str = "fd00:244::/112";

pub fn block6_of(i: usize) -> String {
    format!("fd00:244::{i}00/122")
}

/// One node: its namespace and, while running, its agent.
pub struct NodeNs {
    pub name: String,
    pub ns: Netns,
    pub address: String,
    /// `fd00:<net>::<i>` in dual-stack labs.
    pub address6: Option<String>,
    pub state_dir: PathBuf,
    pub agent: Option<Process>,
    pub starts: usize,
}

pub struct Lab {
    pub dir: PathBuf,
    /// `None` only while [`Lab::block_on`] runs inside it.
    pub hub: Option<Netns>,
    /// Node namespaces, node `i` at index `i - 1`.
    pub nodes: Vec<NodeNs>,
    /// `10.<net>.0.0/24` is the fabric; the hub has `.254`.
    pub net: u8,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut p) = n.agent.take() {
                p.stop(Duration::from_secs(2));
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "--- agent log {} ---\n{}",
                    n.name,
                    std::fs::read_to_string(self.dir.join(format!("{}.log", n.name)))
                        .unwrap_or_default()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// A bridge in a hub namespace and `n` node namespaces on it (`eth0`, `10.<net>.0.<i>/24`).
    pub fn new(n: usize, net: u8) -> Lab {
        Lab::build(n, net, false)
    }

    /// Like [`Lab::new`], and `fd00:<net>::<i>/64` on every node's `eth0` too.
    pub fn dual_stack(n: usize, net: u8) -> Lab {
        Lab::build(n, net, true)
    }

    fn build(n: usize, net: u8, v6: bool) -> Lab {
        let dir = std::env::temp_dir().join(format!(
            "tabby-agent-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("test dir");
        let hub = Netns::new().expect("hub netns");
        hub.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        hub.link_up("br0").unwrap();
        hub.add_addr("br0", &format!("10.{net}.0.254/24")).unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = Netns::new().expect("node netns");
            let hub_if = format!("vh{i}");
            ns.veth_to("eth0", &hub, &hub_if).unwrap();
            hub.ip(&["link", "set", &hub_if, "master", "br0"]).unwrap();
            let address = format!("10.{net}.0.{i}");
            ns.add_addr("eth0", &format!("{address}/24")).unwrap();
            ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
            let address6 = v6.then(|| format!("fd00:{net}::{i}"));
            if let Some(a) = &address6 {
                ns.add_addr("eth0", &format!("{a}/64")).unwrap();
                ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
            }
            let state_dir = dir.join(format!("node-{i}-state"));
            nodes.push(NodeNs {
                name: format!("node-{i}"),
                ns,
                address,
                address6,
                state_dir,
                agent: None,
                starts: 0,
            });
        }
        Lab {
            dir,
            hub: Some(hub),
            nodes,
            net,
        }
    }

    pub fn node(&self, i: usize) -> &NodeNs {
        &self.nodes[i - 1]
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Runs `body` on a Tokio runtime inside the hub namespace, with the emulator serving
    /// there (CRDs installed, kubeconfig written) and a client to it.
    pub fn block_on<F>(&mut self, body: F)
    where
        F: AsyncFnOnce(&mut Lab, Client, &KubeSim) + Send,
    {
        let hub = self.hub.take().expect("hub namespace");
        let lab = &mut *self;
        let result = in_netns(&hub, move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listen: SocketAddr = format!("10.{}.0.254:0", lab.net).parse().unwrap();
                let sim = KubeSim::start(Config {
                    listen,
                    bookmark_interval: Duration::from_millis(500),
                    ..Config::default()
                })
                .await
                .expect("start kube-sim");
                sim.write_kubeconfig(&lab.kubeconfig()).expect("kubeconfig");
                let client = sim.client().await.expect("client");
                sim.install_crds(tabby_api::v1alpha1::crds())
                    .await
                    .expect("install CRDs");
                body(lab, client, &sim).await;
                // Agents first, so their last moments are not spent on a vanished API.
                for n in &mut lab.nodes {
                    if let Some(mut p) = n.agent.take() {
                        p.stop(Duration::from_secs(5));
                    }
                }
                sim.shutdown().await;
            });
        });
        self.hub = Some(hub);
        result.expect("enter the hub namespace");
    }

    /// Starts (or restarts) node `i`'s agent with short test timings.
    pub fn start_agent(&mut self, i: usize, extra: &[&str]) {
        let kubeconfig = self.kubeconfig();
        let log = self.dir.join(format!("node-{i}.log"));
        let node = &mut self.nodes[i - 1];
        let mut cmd = node.ns.command(env!("CARGO_BIN_EXE_tabby-agent"));
        cmd.args([
            "--node-name",
            &node.name,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--state-dir",
            node.state_dir.to_str().unwrap(),
            "--cni-socket",
            node.state_dir.join("cni.sock").to_str().unwrap(),
            "--listen",
            "127.0.0.1:9097",
        ])
        .args(extra)
        .env("RUST_LOG", "info,tabby_bgp=info,kube=warn");
        if !extra.contains(&"--ipv4-autodetect") {
            cmd.args(["--ipv4-autodetect", "none"]);
        }
        node.starts += 1;
        node.agent = Some(Process::spawn(&node.name, cmd, &log).expect("spawn tabby-agent"));
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{i}.log"))).unwrap_or_default()
    }

    /// SIGKILL node `i`'s agent and reap it.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i - 1].agent.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill");
            // Reaps (SIGTERM to a dead process is harmless).
            p.stop(Duration::from_millis(100));
        }
    }
}

/// The Node object for node `i`, its BGP address in the annotation the agent reads.
pub async fn create_node(client: &Client, lab: &Lab, i: usize) {
    let n = lab.node(i);
    let mut annotations = json!({"tabby.dev/ipv4-address": format!("{}/24", n.address)});
    if let Some(a) = &n.address6 {
        annotations["tabby.dev/ipv6-address"] = json!(format!("{a}/64"));
    }
    create_node_with(client, &n.name, annotations).await;
}

/// A Node with the given annotations only (no address: autodetection must find it).
pub async fn create_node_with(client: &Client, name: &str, annotations: serde_json::Value) {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": annotations,
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create Node");
}

pub async fn create_pool(client: &Client) {
    let pool: IPPool = serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "default-v4"},
        "spec": {"cidr": POOL, "blockSize": 26},
    }))
    .unwrap();
    Api::<IPPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .expect("create IPPool");
}

pub async fn create_pool6(client: &Client) {
    let pool: IPPool = serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "default-v6"},
        "spec": {"cidr": POOL6, "blockSize": 122},
    }))
    .unwrap();
    Api::<IPPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .expect("create IPv6 IPPool");
}

/// Node `i`'s IPv6 block (spec only).
pub async fn create_block6(client: &Client, lab: &Lab, i: usize) {
    put_block(client, &block6_of(i), "default-v6", &lab.node(i).name).await;
}

/// The block the controller would give node `i` (spec only).
pub async fn create_block(client: &Client, lab: &Lab, i: usize) {
    put_block(client, &block_of(i), "default-v4", &lab.node(i).name).await;
}

async fn put_block(client: &Client, cidr: &str, pool: &str, node: &str) {
    let name = tabby_api::ipam::name::block_name(cidr.parse().unwrap());
    let block: IPAMBlock = serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "pool": pool, "node": node},
    }))
    .unwrap();
    Api::<IPAMBlock>::all(client.clone())
        .create(&PostParams::default(), &block)
        .await
        .expect("create IPAMBlock");
}

/// `ip route show proto 84` in `ns`, one normalised line per route.
pub fn tabby_routes(ns: &Netns) -> Vec<String> {
    routes_of(ns, "-4")
}

/// The same for IPv6.
pub fn tabby_routes6(ns: &Netns) -> Vec<String> {
    routes_of(ns, "-6")
}

fn routes_of(ns: &Netns, family: &str) -> Vec<String> {
    ns.ip(&[family, "route", "show", "proto", "84"])
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// True when node `i` has the blackhole for its block and a route via node `j`'s address to
/// node `j`'s block, for every other node `j`.
pub fn mesh_routes_ok(lab: &Lab, i: usize) -> bool {
    let routes = tabby_routes(&lab.node(i).ns);
    let own = format!("blackhole {}", block_of(i));
    if !routes.iter().any(|r| r.starts_with(&own)) {
        return false;
    }
    let v4 = (1..=lab.nodes.len()).filter(|j| *j != i).all(|j| {
        let want = format!("{} via {} ", block_of(j), lab.node(j).address);
        routes.iter().any(|r| r.starts_with(&want))
    });
    if !v4 || lab.node(i).address6.is_none() {
        return v4;
    }
    let routes6 = tabby_routes6(&lab.node(i).ns);
    let own6 = format!("blackhole {}", block6_of(i));
    routes6.iter().any(|r| r.starts_with(&own6))
        && (1..=lab.nodes.len()).filter(|j| *j != i).all(|j| {
            let Some(a) = &lab.node(j).address6 else {
                return false;
            };
            let want = format!("{} via {a} ", block6_of(j));
            routes6.iter().any(|r| r.starts_with(&want))
        })
}

/// Established TCP connections on port 179 in `ns`: (local, remote) pairs.
pub fn bgp_connections(ns: &Netns) -> BTreeSet<(String, String)> {
    let out = ns
        .exec(&[
            "ss",
            "-Htn",
            "state",
            "established",
            "( sport = :179 or dport = :179 )",
        ])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Recv-Q Send-Q Local Peer
            Some((f.get(2)?.to_string(), f.get(3)?.to_string()))
        })
        .collect()
}

/// Connections in SYN-SENT towards `peer:179` (an attempt to reach a peer that does not
/// answer).
pub fn connecting_to(ns: &Netns, peer: &str) -> bool {
    let out = ns
        .exec(&["ss", "-Htn", "state", "syn-sent"])
        .unwrap_or_default();
    let want = format!("{peer}:179");
    out.lines().any(|l| l.split_whitespace().any(|f| f == want))
}

/// Polls `check` every 50 ms for up to `timeout`; the time it took, or `None`.
pub async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `GET <path>` on the agent's HTTP port inside `ns`: (status code, body), or `None` when it
/// does not answer.
pub fn agent_http(ns: &Netns, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    in_netns(ns, || {
        let addr: SocketAddr = "127.0.0.1:9097".parse().unwrap();
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    })
    .ok()
    .flatten()
}
