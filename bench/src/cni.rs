//! `tabby-bench cni`: CNI ADD and DEL latency, Tabby next to the reference plugins `ptp` +
//! `host-local`, in the same run, on the same node, with the same environment and stdin.
//!
//! The node is a network namespace. Everything that would run on a real node runs in it: the
//! driver (which execs the plugins, as a container runtime does), the agent's CNI service
//! (`tabby_agent::cni::start`, in process: start-up reconcile, the root-only socket, the
//! handler), the route reconciler it hands pod routes to (`tabby_agent::routes`), and — standing
//! in for the API server — an in-process `tabby-kube-sim` with the Tabby CRDs, a pool, the Node,
//! the Pods the handler GETs, and the real IPAM controller carving the node's blocks. So every
//! Tabby ADD is: exec the real `tabby-cni` shim → socket → GET Pod → compare-and-swap write of
//! the IPAMBlock status → veth, addresses, routes → answer; every DEL releases with a CAS write
//! and deletes the veth.
//!
//! The reference: `ptp` with `host-local` IPAM (Debian's containernetworking-plugins), exec'd
//! from the same thread of the node namespace (no `nsenter` in its way), `ipMasq` off so it
//! does no more than Tabby does.
//!
//! Phases, each target timed per invocation (spawn to exit, as a runtime sees it):
//! 1. sequential: `--pods` ADDs, Tabby and the reference alternating pod by pod (each target
//!    has its own pod namespaces), then the DELs likewise;
//! 2. concurrent: `--concurrency` ADDs at once (released by a barrier), then as many DELs at
//!    once; Tabby's wave first, then the reference's.
//!
//! `ok` means every invocation exited 0, every live pod had a distinct address, and afterwards
//! nothing was left: no allocation in the API, no interface but `lo` on the node. The driver
//! reports its own floor (`exec_floor_ms`: spawning `/bin/true` the same way). Owns: its
//! namespaces, the in-process services and the reference plugins' data dir. Needs root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tabby_agent::cni::{CniConfig, CniDeps};
use tabby_agent::ipam::{ClientConfig, IpamClient};
use tabby_agent::routes::{Config as RoutesConfig, Reconciler, ReconcilerHandle};
use tabby_api::v1alpha1::{IPAMBlock, IPPool, IPPoolSpec};
use tabby_ipam_controller::config::Args as ControllerArgs;
use tabby_ipam_controller::metrics::{Health, Metrics};
use tabby_kube_sim::KubeSim;
use tabby_netlab::{Netns, in_netns};

const NODE: &str = "bench-node";
const POD_NAMESPACE: &str = "bench";
const POOL_CIDR: &str = "10.244.0.0/16";
const REF_SUBNET: &str = "10.88.0.0/16";
/// Seconds a released address rests; the controller and the agent's client must agree.
const COOLDOWN_S: u64 = 1;
/// The IPAM controller's default cap on blocks per node and family.
pub const MAX_BLOCKS_PER_NODE: u64 = 20;
/// Bound on any one plugin invocation; a hung plugin fails the bench instead of hanging it.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct CniArgs {
    /// Pods in the sequential phase (per target). The node's blocks (at most
    /// [`MAX_BLOCKS_PER_NODE`] of `--block-size`) must hold them and the concurrent ones.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pods: u32,
    /// Pods in the concurrent phase (per target), all started at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub concurrency: u32,
    /// Block size of the pool the IPAM controller carves the node's blocks from.
    #[arg(long, default_value_t = 26, value_parser = clap::value_parser!(u8).range(20..=30))]
    pub block_size: u8,
    /// The `tabby-cni` shim (default: next to this executable, else the workspace's target dir).
    #[arg(long)]
    pub shim: Option<PathBuf>,
    /// Where `ptp` and `host-local` live (also the `CNI_PATH` of every invocation).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub plugins_dir: PathBuf,
    /// Targets (comma-separated): tabby, ptp.
    #[arg(long, value_delimiter = ',', default_value = "tabby,ptp")]
    pub targets: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Percentile by nearest rank over `v` (sorted ascending, not empty): the smallest value with at
/// least `p` of the samples at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = (p * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// p50, p99, min and max of latencies in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Option<Latency> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        Some(Latency {
            p50: percentile(&ms, 0.50),
            p99: percentile(&ms, 0.99),
            min: ms[0],
            max: ms[ms.len() - 1],
        })
    }
}

/// The `tabby-cni` shim: `explicit`, else next to `exe` (or its parent, for test executables
/// under `deps/`), else `<workspace>/target/{release,debug}`.
pub fn find_shim(explicit: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    if let Some(root) = tabby_netlab::workspace_root() {
        dirs.push(root.join("target/release"));
        dirs.push(root.join("target/debug"));
    }
    dirs.into_iter()
        .map(|d| d.join("tabby-cni"))
        .find(|p| p.is_file())
}

/// What a target is run with.
struct Plugin {
    name: &'static str,
    binary: PathBuf,
    config: String,
}

/// The `CNI_*` environment of one invocation, the same for both targets.
pub fn pod_env(
    command: &str,
    container: &str,
    netns: &str,
    pod: &str,
    uid: &str,
    cni_path: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={pod};\
                 K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}"
            ),
        ),
        ("CNI_PATH", cni_path.display().to_string()),
    ]
}

/// One invocation: spawn to exit. Returns the elapsed time and the parsed stdout.
fn invoke(
    binary: &Path,
    env: &[(&'static str, String)],
    stdin: &str,
) -> anyhow::Result<(Duration, Option<Value>)> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading all of stdin; runtimes ignore that broken pipe.
        match input.write_all(stdin.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e).context("writing the plugin's stdin"),
        }
    }
    let out = wait_bounded(child)?;
    let elapsed = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {} exited with {}: {} {}",
            binary.display(),
            env.first().map_or("", |(_, v)| v.as_str()),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let parsed = if stdout.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&stdout).with_context(|| {
            format!(
                "{} printed something that is not JSON: {stdout}",
                binary.display()
            )
        })?)
    };
    Ok((elapsed, parsed))
}

fn wait_bounded(mut child: std::process::Child) -> anyhow::Result<std::process::Output> {
    let start = Instant::now();
    // Poll finely: the figures are milliseconds, and the poll's granularity is in them.
    while child.try_wait()?.is_none() {
        if start.elapsed() > INVOCATION_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("a plugin invocation took longer than {INVOCATION_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(child.wait_with_output()?)
}

/// The pod's first address in an ADD result.
pub fn result_address(v: &Value) -> anyhow::Result<IpAddr> {
    let a = v
        .pointer("/ips/0/address")
        .and_then(Value::as_str)
        .context("the ADD result has no ips[0].address")?;
    let ip = a.split('/').next().unwrap_or(a);
    ip.parse()
        .with_context(|| format!("ips[0].address {a:?} is not an address/prefix"))
}

/// One target's samples.
#[derive(Debug, Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    cadd: Vec<Duration>,
    cdel: Vec<Duration>,
    cadd_wall: Duration,
    cdel_wall: Duration,
}

struct PodSlot {
    ns: Netns,
    name: String,
    uid: String,
}

fn container_id(target: &str, phase: &str, i: usize) -> String {
    format!("{target}-{phase}-{i:05}")
}

/// Runs `command` for every pod in `slots` at once (released by a barrier): each invocation's
/// time, the wall time of the whole wave, and each invocation's output.
fn wave(
    plugin: &Plugin,
    slots: &[PodSlot],
    command: &str,
    cni_path: &Path,
) -> anyhow::Result<(Vec<Duration>, Duration, Vec<Option<Value>>)> {
    let barrier = Arc::new(Barrier::new(slots.len()));
    let wall = Instant::now();
    let results: Vec<anyhow::Result<(Duration, Option<Value>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let barrier = barrier.clone();
                // Threads spawned here inherit this thread's network namespace (the node's).
                s.spawn(move || {
                    let env = pod_env(
                        command,
                        &container_id(plugin.name, "c", i),
                        &slot.ns.path(),
                        &slot.name,
                        &slot.uid,
                        cni_path,
                    );
                    barrier.wait();
                    invoke(&plugin.binary, &env, &plugin.config)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a driver thread panicked"))
            })
            .collect()
    });
    let wall = wall.elapsed();
    let mut times = Vec::new();
    let mut outs = Vec::new();
    for r in results {
        let (t, out) = r.with_context(|| format!("{} concurrent {command}", plugin.name))?;
        times.push(t);
        outs.push(out);
    }
    Ok((times, wall, outs))
}

fn distinct_addresses(outs: &[Option<Value>], what: &str) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for out in outs {
        let v = out
            .as_ref()
            .with_context(|| format!("{what}: an ADD printed no result"))?;
        let a = result_address(v)?;
        if !seen.insert(a) {
            bail!("{what}: address {a} given to two live pods");
        }
    }
    Ok(())
}

/// Spawns `/bin/true` like a plugin: the driver's own cost per invocation.
fn exec_floor() -> anyhow::Result<Latency> {
    let mut t = Vec::new();
    for _ in 0..30 {
        let (d, _) = invoke(Path::new("/bin/true"), &[], "")?;
        t.push(d);
    }
    Latency::of(&t).context("no samples")
}

/// The in-process stand-ins for the cluster and the agent, in the node namespace.
struct Cluster {
    sim: KubeSim,
    client: kube::Client,
    controller: tokio::task::JoinHandle<()>,
    routes: tokio::task::JoinHandle<()>,
    service: tabby_agent::cni::CniService,
}

async fn start_cluster(
    args: &CniArgs,
    socket: &Path,
    pods: &[String],
) -> anyhow::Result<(Cluster, HashMap<String, String>)> {
    let sim = KubeSim::start(tabby_kube_sim::Config::default())
        .await
        .context("starting kube-sim")?;
    sim.install_crds(tabby_api::v1alpha1::crds())
        .await
        .context("creating the CRDs")?;
    let client = sim.client().await.context("kube-sim client")?;
    let pools: Api<IPPool> = Api::all(client.clone());
    let spec = IPPoolSpec {
        cidr: POOL_CIDR.into(),
        block_size: Some(args.block_size),
        node_selector: None,
        disabled: false,
        nat_outgoing: false,
        disable_bgp_export: false,
    };
    pools
        .create(&PostParams::default(), &IPPool::new("bench", spec))
        .await
        .context("creating the pool")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": POD_NAMESPACE}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), POD_NAMESPACE);
    // The API server gives each Pod its UID; the runtime passes that UID in CNI_ARGS.
    let mut uids = HashMap::new();
    for name in pods {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": POD_NAMESPACE},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]},
        }))?;
        let made = pod_api
            .create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        let uid = made
            .metadata
            .uid
            .with_context(|| format!("the API gave pod {name} no UID"))?;
        uids.insert(name.clone(), uid);
    }
    let cooldown = COOLDOWN_S.to_string();
    let cargs = ControllerArgs::try_parse_from([
        "tabby-ipam-controller",
        "--identity",
        "bench-controller",
        "--cooldown",
        &cooldown,
        "--resync",
        "1",
    ])
    .context("controller flags")?;
    let controller = {
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = tabby_ipam_controller::controller::run(
                client,
                cargs,
                Arc::new(Metrics::new()),
                Arc::new(Health::default()),
            )
            .await
            {
                eprintln!("IPAM controller stopped: {e}");
            }
        })
    };
    // The node's first block is assigned before the clock starts, as on a node that has joined.
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blocks
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|b| b.spec.node == NODE)
    {
        if Instant::now() > deadline {
            controller.abort();
            bail!("the IPAM controller gave {NODE} no block within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconciler = Reconciler::new(RoutesConfig::default())?;
    let (handle, rx) = ReconcilerHandle::new(&reconciler);
    let routes = tokio::spawn(async move {
        if let Err(e) = reconciler.run(rx).await {
            eprintln!("route reconciler stopped: {e}");
        }
    });
    let ipam = IpamClient::new(
        client.clone(),
        NODE,
        ClientConfig {
            cooldown: Duration::from_secs(COOLDOWN_S),
            ..ClientConfig::default()
        },
    );
    let service = tabby_agent::cni::start(
        CniConfig {
            socket: socket.to_path_buf(),
            ..CniConfig::default()
        },
        CniDeps {
            client: client.clone(),
            node: NODE.into(),
            ipam,
            routes: handle,
        },
    )
    .await
    .context("starting the agent's CNI service")?;
    Ok((
        Cluster {
            sim,
            client,
            controller,
            routes,
            service,
        },
        uids,
    ))
}

/// Allocations still recorded in the node's blocks.
async fn allocations_left(client: &kube::Client) -> anyhow::Result<usize> {
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    Ok(blocks
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|b| b.spec.node == NODE)
        .flat_map(|b| b.status.iter().flat_map(|s| &s.allocations))
        .count())
}

/// Interfaces left on the node besides `lo`.
fn links_left(node: &Netns) -> anyhow::Result<Vec<String>> {
    let out = node.ip(&["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n != "lo" && !n.is_empty())
        .collect())
}

struct Outcome {
    samples: Vec<(&'static str, Samples)>,
    floor: Latency,
    ok: bool,
    problems: Vec<String>,
    pod_mtu: Option<u32>,
}

fn drive(
    args: &CniArgs,
    node: &Netns,
    plugins: &[Plugin],
    slots: &mut [Vec<PodSlot>],
    socket: &Path,
) -> anyhow::Result<Outcome> {
    let tabby = plugins.iter().position(|p| p.name == "tabby");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = match tabby {
        Some(k) => {
            let names: Vec<String> = slots[k].iter().map(|s| s.name.clone()).collect();
            let (cluster, uids) = rt.block_on(start_cluster(args, socket, &names))?;
            for slot in &mut slots[k] {
                if let Some(uid) = uids.get(&slot.name) {
                    slot.uid.clone_from(uid);
                }
            }
            Some(cluster)
        }
        None => None,
    };
    let slots = &*slots;
    let pod_mtu = cluster.as_ref().map(|c| c.service.mtu());
    let floor = exec_floor()?;
    let cni_path = args.plugins_dir.as_path();
    let n = args.pods as usize;
    let c = args.concurrency as usize;
    let mut samples: Vec<(&'static str, Samples)> = plugins
        .iter()
        .map(|p| (p.name, Samples::default()))
        .collect();

    // Sequential: pod by pod, the targets alternating.
    for command in ["ADD", "DEL"] {
        let mut live: Vec<Vec<Option<Value>>> = vec![Vec::new(); plugins.len()];
        for i in 0..n {
            for (k, p) in plugins.iter().enumerate() {
                let slot = slots[k].get(i).context("fewer pod namespaces than pods")?;
                let env = pod_env(
                    command,
                    &container_id(p.name, "s", i),
                    &slot.ns.path(),
                    &slot.name,
                    &slot.uid,
                    cni_path,
                );
                let (t, out) = invoke(&p.binary, &env, &p.config)
                    .with_context(|| format!("{} sequential {command} of pod {i}", p.name))?;
                if command == "ADD" {
                    samples[k].1.add.push(t);
                    live[k].push(out);
                } else {
                    samples[k].1.del.push(t);
                }
            }
        }
        for (k, p) in plugins.iter().enumerate() {
            if command == "ADD" {
                distinct_addresses(&live[k], p.name)?;
            }
        }
    }
    // Concurrent: one wave of ADDs, then one of DELs, per target.
    for (k, p) in plugins.iter().enumerate() {
        let (t, wall, outs) = wave(p, &slots[k][..c], "ADD", cni_path)?;
        distinct_addresses(&outs, p.name)?;
        samples[k].1.cadd = t;
        samples[k].1.cadd_wall = wall;
        let (t, wall, _) = wave(p, &slots[k][..c], "DEL", cni_path)?;
        samples[k].1.cdel = t;
        samples[k].1.cdel_wall = wall;
    }

    let mut problems = Vec::new();
    if let Some(cl) = cluster {
        let left = rt.block_on(allocations_left(&cl.client))?;
        if left != 0 {
            problems.push(format!(
                "{left} allocation(s) left in the API after every DEL"
            ));
        }
        rt.block_on(async {
            cl.service.stop().await;
            cl.controller.abort();
            cl.routes.abort();
            cl.sim.shutdown().await;
        });
    }
    let links = links_left(node)?;
    if !links.is_empty() {
        problems.push(format!("interfaces left on the node: {}", links.join(", ")));
    }
    Ok(Outcome {
        samples,
        floor,
        ok: problems.is_empty(),
        problems,
        pod_mtu,
    })
}

fn figures(prefix: &str, l: Option<Latency>, out: &mut serde_json::Map<String, Value>) {
    if let Some(l) = l {
        out.insert(format!("{prefix}_p50_ms"), json!(l.p50));
        out.insert(format!("{prefix}_p99_ms"), json!(l.p99));
        out.insert(format!("{prefix}_min_ms"), json!(l.min));
        out.insert(format!("{prefix}_max_ms"), json!(l.max));
    }
}

pub fn run(args: CniArgs) -> anyhow::Result<()> {
    if !tabby_netlab::is_root() {
        bail!("tabby-bench cni needs root (network namespaces)");
    }
    let room = MAX_BLOCKS_PER_NODE << (32 - u32::from(args.block_size));
    if u64::from(args.pods + args.concurrency) > room {
        bail!(
            "{} + {} pods do not fit in the node's at most {MAX_BLOCKS_PER_NODE} blocks of /{} \
             ({room} addresses); use fewer pods or a larger block",
            args.pods,
            args.concurrency,
            args.block_size
        );
    }
    if args.concurrency > args.pods {
        bail!(
            "--concurrency must not exceed --pods (the concurrent phase reuses their namespaces)"
        );
    }
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/cni.sock");
    let mut plugins = Vec::new();
    for t in &args.targets {
        match t.as_str() {
            "tabby" => {
                let exe = std::env::current_exe().ok();
                let shim = find_shim(args.shim.as_deref(), exe.as_deref()).context(
                    "tabby-cni not found next to tabby-bench or in target/{release,debug}; \
                     build it (cargo build --release -p tabby-cni) or pass --shim",
                )?;
                plugins.push(Plugin {
                    name: "tabby",
                    binary: shim,
                    config: json!({
                        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby-cni",
                        "agentSocket": socket.display().to_string(),
                    })
                    .to_string(),
                });
            }
            "ptp" => {
                for p in ["ptp", "host-local"] {
                    if !args.plugins_dir.join(p).is_file() {
                        bail!(
                            "{p} not found in {} (Debian: containernetworking-plugins)",
                            args.plugins_dir.display()
                        );
                    }
                }
                plugins.push(Plugin {
                    name: "ptp",
                    binary: args.plugins_dir.join("ptp"),
                    config: json!({
                        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp",
                        "ipMasq": false,
                        "ipam": {"type": "host-local", "subnet": REF_SUBNET,
                                 "dataDir": dir.path().join("host-local").display().to_string()},
                    })
                    .to_string(),
                });
            }
            other => bail!("unknown target {other:?} (tabby, ptp)"),
        }
    }
    if plugins.is_empty() {
        bail!("no targets");
    }
    let n = args.pods as usize;
    eprintln!("creating {} pod namespaces…", n * plugins.len());
    let mut slots: Vec<Vec<PodSlot>> = Vec::new();
    for p in &plugins {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{}-{i:05}", p.name);
            // Tabby's pods get the UID the API server gives them; the reference never asks.
            let uid = format!("00000000-0000-4000-8000-{:012x}", slots.len() * n + i);
            v.push(PodSlot {
                ns: Netns::new()?,
                name,
                uid,
            });
        }
        slots.push(v);
    }
    let node = Netns::new()?;
    let load_before = crate::datapath::loadavg();
    let outcome = in_netns(&node, || drive(&args, &node, &plugins, &mut slots, &socket))??;
    let load_after = crate::datapath::loadavg();
    drop(slots);

    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<6} {:<11} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
        "target", "phase", "ADD p50", "p99", "min", "max", "DEL p50", "p99", "min", "max"
    );
    let mut results = Vec::new();
    for (name, s) in &outcome.samples {
        for (phase, add, del, walls) in [
            ("sequential", &s.add, &s.del, None),
            (
                "concurrent",
                &s.cadd,
                &s.cdel,
                Some((s.cadd_wall, s.cdel_wall)),
            ),
        ] {
            let (a, d) = (Latency::of(add), Latency::of(del));
            let cell = |l: Option<Latency>| match l {
                Some(l) => format!(
                    "{:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    l.p50, l.p99, l.min, l.max
                ),
                None => format!("{:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-"),
            };
            let _ = writeln!(table, "{name:<6} {phase:<11} {} | {}", cell(a), cell(d));
            let mut r = serde_json::Map::new();
            r.insert("target".into(), json!(name));
            r.insert("phase".into(), json!(phase));
            r.insert("pods".into(), json!(add.len()));
            figures("add", a, &mut r);
            figures("del", d, &mut r);
            if let Some((aw, dw)) = walls {
                r.insert("add_wall_ms".into(), json!(aw.as_secs_f64() * 1e3));
                r.insert("del_wall_ms".into(), json!(dw.as_secs_f64() * 1e3));
            }
            r.insert("ok".into(), json!(outcome.ok));
            results.push(Value::Object(r));
        }
    }
    let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    println!(
        "CNI latency (ms, spawn to exit): {} sequential + {} concurrent pods per target; \
         driver floor (exec /bin/true) p50 {:.2} ms; tabby pod MTU {}; load average {} before, \
         {} after\n{table}",
        args.pods,
        args.concurrency,
        outcome.floor.p50,
        outcome.pod_mtu.map_or("-".into(), |m| m.to_string()),
        load(load_before),
        load(load_after),
    );
    for p in &outcome.problems {
        println!("NOT OK: {p}");
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "cni",
            "params": {
                "pods": args.pods, "concurrency": args.concurrency,
                "block_size": args.block_size,
                "exec_floor_ms": outcome.floor.p50,
                "loadavg_before": load_before, "loadavg_after": load_after,
                "plugins": plugins.iter().map(|p| (p.name, p.binary.display().to_string())).collect::<BTreeMap<_, _>>(),
            },
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !outcome.ok {
        bail!("the run was not clean: {}", outcome.problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.99), 198.0);
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 25.0);
        // With 50 samples the 99th percentile is the largest.
        assert_eq!(percentile(&v, 0.99), 50.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[7.0], 0.0), 7.0);
    }

    #[test]
    fn latency_summary_is_in_milliseconds() {
        let l = Latency::of(&[
            Duration::from_millis(3),
            Duration::from_millis(1),
            Duration::from_millis(2),
        ])
        .unwrap();
        assert_eq!((l.p50, l.min, l.max), (2.0, 1.0, 3.0));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn result_address_reads_the_first_ip() {
        let v =
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.0.5/32", "interface": 1}]});
        assert_eq!(result_address(&v).unwrap().to_string(), "10.244.0.5");
        assert!(result_address(&json!({"ips": []})).is_err());
        assert!(result_address(&json!({"ips": [{"address": "nope/32"}]})).is_err());
    }

    #[test]
    fn env_is_what_a_runtime_sets() {
        let e = pod_env(
            "ADD",
            "c1",
            "/run/netns/x",
            "p1",
            "u1",
            Path::new("/usr/lib/cni"),
        );
        let m: BTreeMap<_, _> = e.into_iter().collect();
        assert_eq!(m["CNI_COMMAND"], "ADD");
        assert_eq!(m["CNI_IFNAME"], "eth0");
        assert!(
            m["CNI_ARGS"].contains("K8S_POD_NAME=p1;") && m["CNI_ARGS"].contains("K8S_POD_UID=u1")
        );
        assert_eq!(m["CNI_PATH"], "/usr/lib/cni");
    }

    #[test]
    fn shim_is_found_next_to_the_executable_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(dir.path().join("tabby-cni"), b"").unwrap();
        let exe = deps.join("cni_smoke-123");
        assert_eq!(
            find_shim(None, Some(&exe)).unwrap(),
            dir.path().join("tabby-cni")
        );
        assert!(find_shim(Some(&dir.path().join("missing")), Some(&exe)).is_none());
    }
}
