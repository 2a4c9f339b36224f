//! Harness for the IPAM client's tests against an API server: `tabby-kube-sim` with our CRDs,
//! the real controller in this process, and the churn workload shared by the kube-sim test and
//! the `#[ignore]` real-cluster test.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tabby_agent::ipam::{ClientConfig, IpamClient, IpamError, PodRequest};
use tabby_api::ipam::name::address_of;
use tabby_api::ipam::node::block_cidr;
use tabby_api::ipam::pool::nets_overlap;
use tabby_api::v1alpha1::{IPAMBlock, IPPool, IPPoolSpec, PodReference};
use tabby_ipam_controller::config::Args;
use tabby_ipam_controller::metrics::{Health, Metrics};
use tabby_kube_sim::{Config, KubeSim};
use tokio::sync::{Mutex, RwLock};

/// A kube-sim with the Tabby CRDs served.
pub async fn sim() -> (KubeSim, Client) {
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
    (sim, client)
}

/// The real controller, in this process, with the given flags added to short test timings.
/// Aborted on drop.
pub struct Controller(tokio::task::JoinHandle<()>);

impl Drop for Controller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn controller(client: &Client, identity: &str, extra: &[&str]) -> Controller {
    let mut argv = vec![
        "tabby-ipam-controller",
        "--identity",
        identity,
        "--lease-duration",
        "5",
        "--lease-grace",
        "2",
        "--resync",
        "1",
        "--cooldown",
        "1",
    ];
    argv.extend_from_slice(extra);
    let args = Args::try_parse_from(argv).expect("controller flags");
    let client = client.clone();
    Controller(tokio::spawn(async move {
        let r = tabby_ipam_controller::controller::run(
            client,
            args,
            Arc::new(Metrics::new()),
            Arc::new(Health::default()),
        )
        .await;
        eprintln!("controller stopped: {r:?}");
    }))
}

pub async fn create_pool(client: &Client, name: &str, cidr: &str, block: u8) {
    let api: Api<IPPool> = Api::all(client.clone());
    let spec = IPPoolSpec {
        cidr: cidr.into(),
        block_size: Some(block),
        node_selector: None,
        disabled: false,
        nat_outgoing: false,
        disable_bgp_export: false,
    };
    api.create(&PostParams::default(), &IPPool::new(name, spec))
        .await
        .expect("create pool");
}

pub async fn create_node(client: &Client, name: &str) {
    create_labelled_node(client, name, &BTreeMap::new()).await;
}

pub async fn create_labelled_node(client: &Client, name: &str, labels: &BTreeMap<String, String>) {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

pub async fn delete_node(client: &Client, name: &str) {
    let api: Api<Node> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("delete node {name}: {e}"),
    }
}

pub async fn blocks(client: &Client) -> Vec<IPAMBlock> {
    let api: Api<IPAMBlock> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .expect("list blocks")
        .items
}

pub fn pod(handle: &str) -> PodRequest {
    PodRequest {
        handle: handle.into(),
        pod: PodReference {
            namespace: "churn".into(),
            name: format!("pod-{handle}"),
            uid: format!("uid-{handle}"),
        },
        annotations: BTreeMap::new(),
    }
}

/// Every allocation in the API: address → (handle, node of its block). Panics on an address
/// held twice or on overlapping blocks.
pub fn allocations(all: &[IPAMBlock]) -> BTreeMap<IpAddr, (String, String)> {
    let mut out = BTreeMap::new();
    for (i, a) in all.iter().enumerate() {
        let ca = block_cidr(a).expect("valid block CIDR");
        for b in &all[i + 1..] {
            let cb = block_cidr(b).expect("valid block CIDR");
            assert!(!nets_overlap(&ca, &cb), "blocks {ca} and {cb} overlap");
        }
        for al in a.status.iter().flat_map(|s| &s.allocations) {
            let addr = address_of(ca, al.ordinal).expect("ordinal inside its block");
            let prev = out.insert(addr, (al.handle.clone(), a.spec.node.clone()));
            assert!(
                prev.is_none(),
                "address {addr} allocated twice: {prev:?} and {}",
                al.handle
            );
        }
    }
    out
}

/// Size and timing of a churn run.
#[derive(Clone, Debug)]
pub struct ChurnParams {
    pub seed: u64,
    /// Distinct nodes over the run (each joins once and may leave).
    pub nodes: usize,
    /// Nodes present at the start.
    pub initial_nodes: usize,
    /// Allocations plus releases to make.
    pub operations: usize,
    /// Operations in flight at once.
    pub workers: usize,
    /// Node names start with this.
    pub prefix: String,
    /// The client's cooldown (must equal the controller's).
    pub cooldown: Duration,
    /// How long an allocation may wait for a block.
    pub wait: Duration,
    /// Labels of the nodes the run creates.
    pub node_labels: BTreeMap<String, String>,
}

/// What a churn run did.
#[derive(Clone, Debug, Default)]
pub struct ChurnReport {
    pub allocations: usize,
    pub releases: usize,
    pub joins: usize,
    pub leaves: usize,
    pub waited_out: usize,
    pub elapsed: Duration,
}

#[derive(Default)]
struct Model {
    /// Live nodes → handles → addresses.
    nodes: BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>,
    /// Address → handle, over every live handle.
    held: BTreeMap<IpAddr, String>,
    /// Nodes that have left.
    gone: BTreeSet<String>,
    joined: usize,
    next_handle: u64,
    report: ChurnReport,
}

/// One node's lock: allocations and releases hold it shared, leaving holds it exclusively, so
/// no allocation for a node is in flight when it leaves.
type NodeLocks = Arc<Mutex<BTreeMap<String, Arc<RwLock<()>>>>>;

/// Runs the churn workload: nodes join and leave at random while `operations` allocations and
/// releases go through [`IpamClient`]; checks duplicates on the fly and leaks at the end.
pub async fn churn(client: &Client, p: &ChurnParams) -> ChurnReport {
    let started = Instant::now();
    let model = Arc::new(Mutex::new(Model::default()));
    let locks: NodeLocks = Arc::default();
    for i in 0..p.initial_nodes {
        let name = format!("{}{i}", p.prefix);
        create_labelled_node(client, &name, &p.node_labels).await;
        let mut m = model.lock().await;
        m.nodes.insert(name.clone(), BTreeMap::new());
        m.joined += 1;
        locks.lock().await.insert(name, Arc::default());
    }
    let ops_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..p.workers {
        let (client, model, locks, ops_done, p) = (
            client.clone(),
            model.clone(),
            locks.clone(),
            ops_done.clone(),
            p.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(p.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let cfg = ClientConfig {
                cooldown: p.cooldown,
                max_attempts: 20,
                poll_interval: Duration::from_millis(250),
            };
            while ops_done.load(std::sync::atomic::Ordering::Relaxed) < p.operations {
                let roll: u32 = rng.random_range(0..100);
                if roll < 4 {
                    join(&client, &model, &locks, &p).await;
                } else if roll < 7 {
                    leave(&client, &model, &locks, &mut rng).await;
                } else if roll < 70 {
                    let Some((node, lock)) = pick_node(&model, &locks, &mut rng).await else {
                        continue;
                    };
                    let _held = lock.read().await;
                    if !model.lock().await.nodes.contains_key(&node) {
                        continue;
                    }
                    let handle = {
                        let mut m = model.lock().await;
                        m.next_handle += 1;
                        format!("{}-h{}", p.prefix, m.next_handle)
                    };
                    let ipam = IpamClient::new(client.clone(), &node, cfg.clone());
                    match ipam.allocate(&pod(&handle), p.wait).await {
                        Ok(got) => {
                            let addrs: Vec<IpAddr> = got.iter().map(|a| a.address).collect();
                            let mut m = model.lock().await;
                            for a in &addrs {
                                if let Some(other) = m.held.insert(*a, handle.clone()) {
                                    panic!("seed {}: {a} given to {handle} on {node} while {other} holds it", p.seed);
                                }
                            }
                            m.nodes.get_mut(&node).expect("node is live").insert(handle, addrs);
                            m.report.allocations += 1;
                            ops_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e @ IpamError::NoAddressYet { .. }) => {
                            eprintln!("seed {}: {node} waited out: {e}", p.seed);
                            model.lock().await.report.waited_out += 1;
                        }
                        Err(e) => panic!("seed {}: allocate on {node}: {e}", p.seed),
                    }
                } else {
                    let Some((node, lock)) = pick_node(&model, &locks, &mut rng).await else {
                        continue;
                    };
                    let _held = lock.read().await;
                    // Taken out of the model now, so no other worker releases it too.
                    let victim = {
                        let mut m = model.lock().await;
                        let Some(handles) = m.nodes.get_mut(&node) else {
                            continue;
                        };
                        if handles.is_empty() {
                            continue;
                        }
                        let i = rng.random_range(0..handles.len());
                        let h = handles.keys().nth(i).cloned();
                        h.and_then(|h| handles.remove_entry(&h))
                    };
                    let Some((handle, addrs)) = victim else { continue };
                    let ipam = IpamClient::new(client.clone(), &node, cfg.clone());
                    let got = ipam.release(&handle).await.unwrap_or_else(|e| panic!("seed {}: release {handle}: {e}", p.seed));
                    let mut released: Vec<IpAddr> = got.iter().map(|r| r.address).collect();
                    released.sort();
                    let mut want = addrs.clone();
                    want.sort();
                    assert_eq!(released, want, "seed {}: release of {handle} on {node}", p.seed);
                    // Out of the model before anything else awaits: once the cooldown has passed
                    // another worker may rightly get these addresses, and on a loaded machine
                    // the second release below can take longer than the cooldown.
                    {
                        let mut m = model.lock().await;
                        for a in &addrs {
                            m.held.remove(a);
                        }
                        m.report.releases += 1;
                    }
                    assert!(ipam.release(&handle).await.unwrap().is_empty(), "second release is a no-op");
                    ops_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let mut report = {
        let m = model.lock().await;
        let mut r = m.report.clone();
        r.joins = m.joined;
        r.leaves = m.gone.len();
        r
    };

    // Quiescence: the controller releases the allocations of nodes that left and deletes
    // their blocks.
    let (live, gone) = {
        let m = model.lock().await;
        (m.nodes.clone(), m.gone.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = blocks(client).await;
        let left: Vec<String> = all
            .iter()
            .filter(|b| gone.contains(&b.spec.node))
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {}: blocks of removed nodes still present after 60 s: {left:?}",
            p.seed
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Zero duplicates, zero leaks: the API holds exactly the live handles' addresses, each in a
    // block of the handle's node.
    let all: Vec<IPAMBlock> = blocks(client)
        .await
        .into_iter()
        .filter(|b| b.spec.node.starts_with(&p.prefix))
        .collect();
    let in_api = allocations(&all);
    let mut want: BTreeMap<IpAddr, (String, String)> = BTreeMap::new();
    for (node, handles) in &live {
        for (h, addrs) in handles {
            for a in addrs {
                want.insert(*a, (h.clone(), node.clone()));
            }
        }
    }
    let leaked: Vec<_> = in_api
        .iter()
        .filter(|(a, _)| !want.contains_key(a))
        .collect();
    let lost: Vec<_> = want
        .iter()
        .filter(|(a, _)| !in_api.contains_key(a))
        .collect();
    assert!(
        leaked.is_empty(),
        "seed {}: {} leaked allocations, e.g. {:?}",
        p.seed,
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    assert!(
        lost.is_empty(),
        "seed {}: {} allocations lost, e.g. {:?}",
        p.seed,
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        in_api, want,
        "seed {}: allocations sit in blocks of their handle's node",
        p.seed
    );
    report.elapsed = started.elapsed();
    report
}

async fn pick_node(
    model: &Arc<Mutex<Model>>,
    locks: &NodeLocks,
    rng: &mut StdRng,
) -> Option<(String, Arc<RwLock<()>>)> {
    let node = {
        let m = model.lock().await;
        if m.nodes.is_empty() {
            return None;
        }
        let i = rng.random_range(0..m.nodes.len());
        m.nodes.keys().nth(i).cloned()?
    };
    let lock = locks.lock().await.get(&node).cloned()?;
    Some((node, lock))
}

async fn join(client: &Client, model: &Arc<Mutex<Model>>, locks: &NodeLocks, p: &ChurnParams) {
    let name = {
        let mut m = model.lock().await;
        if m.joined >= p.nodes {
            return;
        }
        m.joined += 1;
        format!("{}{}", p.prefix, m.joined - 1)
    };
    create_labelled_node(client, &name, &p.node_labels).await;
    locks.lock().await.insert(name.clone(), Arc::default());
    model.lock().await.nodes.insert(name, BTreeMap::new());
}

async fn leave(client: &Client, model: &Arc<Mutex<Model>>, locks: &NodeLocks, rng: &mut StdRng) {
    let Some((node, lock)) = pick_node(model, locks, rng).await else {
        return;
    };
    {
        // Keep a few nodes so the workload always has somewhere to allocate.
        if model.lock().await.nodes.len() <= 5 {
            return;
        }
    }
    let _exclusive = lock.write().await;
    {
        let mut m = model.lock().await;
        let Some(handles) = m.nodes.remove(&node) else {
            return;
        };
        // Its pods are gone with it: their addresses are for the controller to release.
        for addrs in handles.values() {
            for a in addrs {
                m.held.remove(a);
            }
        }
        m.gone.insert(node.clone());
    }
    delete_node(client, &node).await;
}
