//! `tabby-bench ipam`: N Nodes join at once; how long until every one has its block(s), and how
//! many API writes the controller made per node.
//!
//! Each run starts a fresh `tabby-kube-sim` with the Tabby CRDs and one IPv4 pool (plus an IPv6
//! pool with `--dual-stack`), starts the real controller (`tabby_ipam_controller::controller`)
//! in this process, waits until it holds the Lease, then creates the Nodes (16 requests in
//! flight) and polls the IPAMBlocks until every node has one per family. Writes are counted from
//! kube-sim's request log (create/update/patch/delete of any resource), minus the driver's own
//! Node creates; they include Events, pool status and Lease renewals. The driver reports its own
//! time (Node creation span) apart from the controller's.
//!
//! Owns the measurement and the report; must not change how the controller works.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde::Serialize;
use serde_json::json;
use tabby_api::v1alpha1::{IPAMBlock, IPPool, IPPoolSpec};
use tabby_ipam_controller::config::Args as ControllerArgs;
use tabby_ipam_controller::metrics::{Health, Metrics};
use tabby_kube_sim::{Config, KubeSim};

/// Flags of `tabby-bench ipam`.
#[derive(clap::Args, Debug, Clone)]
pub struct IpamArgs {
    /// Nodes created at once.
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Runs (the figures are the median, with min and max).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// An IPv6 pool too: every node needs a block of each family.
    #[arg(long)]
    pub dual_stack: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Goal of issue 5: every node has its block(s) within this long.
const GOAL_S: f64 = 10.0;
/// Goal of issue 5: at most this many API writes per node.
const GOAL_WRITES: f64 = 3.0;

/// One run's figures.
#[derive(Debug, Clone, Default, Serialize)]
struct Run {
    /// First Node create → every node has a block of each family.
    assigned_all_s: f64,
    /// First Node create → last Node create answered (driver time).
    nodes_created_s: f64,
    /// Controller writes (everything but the driver's Node creates) / nodes, counted 2 s after
    /// the last assignment.
    writes_per_node: f64,
    /// Writes by `verb resource`.
    writes: BTreeMap<String, u64>,
    /// IPAMBlocks at the end.
    blocks: usize,
    /// Every node had its blocks, no two blocks overlap.
    ok: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[v.len() - 1],
    })
}

/// Runs the benchmark.
pub fn run(args: IpamArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.runs == 0 {
        bail!("--nodes and --runs must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = rt.block_on(one_run(&args))?;
        eprintln!(
            "run {}/{}: all {} nodes assigned in {:.2} s (driver created them in {:.2} s), {:.2} writes/node, ok={}",
            i + 1,
            args.runs,
            args.nodes,
            r.assigned_all_s,
            r.nodes_created_s,
            r.writes_per_node,
            r.ok
        );
        runs.push(r);
    }
    let assigned = spread(&runs.iter().map(|r| r.assigned_all_s).collect::<Vec<_>>());
    let created = spread(&runs.iter().map(|r| r.nodes_created_s).collect::<Vec<_>>());
    let writes = spread(&runs.iter().map(|r| r.writes_per_node).collect::<Vec<_>>());
    let ok = runs.iter().all(|r| r.ok);
    let (Some(assigned), Some(created), Some(writes)) = (assigned, created, writes) else {
        bail!("no run produced figures");
    };
    println!(
        "tabby-bench ipam: {} nodes created at once, {}, {} runs",
        args.nodes,
        if args.dual_stack {
            "IPv4 + IPv6 pools"
        } else {
            "one IPv4 pool"
        },
        args.runs
    );
    println!("| figure | min | median | max | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| every node has its block(s) (s) | {:.2} | **{:.2}** | {:.2} | ≤ {GOAL_S} |",
        assigned.min, assigned.median, assigned.max
    );
    println!(
        "| API writes per node | {:.3} | **{:.3}** | {:.3} | ≤ {GOAL_WRITES} |",
        writes.min, writes.median, writes.max
    );
    println!(
        "| driver: Node creates (s) | {:.2} | {:.2} | {:.2} | — |",
        created.min, created.median, created.max
    );
    if let Some(r) = runs.last() {
        println!("writes of the last run by request: {:?}", r.writes);
    }
    println!(
        "ok: {ok}; goal {}",
        if ok && assigned.median <= GOAL_S && writes.median <= GOAL_WRITES {
            "met"
        } else {
            "missed"
        }
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "ipam",
            "params": {"nodes": args.nodes, "runs": args.runs, "dual_stack": args.dual_stack},
            "results": [{
                "target": "tabby-ipam-controller",
                "assigned_all_s": assigned.median,
                "assigned_all_s_min": assigned.min,
                "assigned_all_s_max": assigned.max,
                "writes_per_node": writes.median,
                "writes_per_node_min": writes.min,
                "writes_per_node_max": writes.max,
                "driver_nodes_created_s": created.median,
                "driver_nodes_created_s_min": created.min,
                "driver_nodes_created_s_max": created.max,
                "ok": ok,
                "runs": runs,
            }],
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !ok {
        bail!("not every node got its blocks in every run");
    }
    Ok(())
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn writes_of(stats: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    stats
        .iter()
        .filter(|(k, _)| {
            k.split_once(' ')
                .is_some_and(|(verb, _)| WRITE_VERBS.contains(&verb))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn one_run(args: &IpamArgs) -> anyhow::Result<Run> {
    let sim = KubeSim::start(Config::default())
        .await
        .context("starting kube-sim")?;
    sim.install_crds(tabby_api::v1alpha1::crds())
        .await
        .context("creating the CRDs")?;
    let client = sim.client().await.context("kube-sim client")?;
    let pools: Api<IPPool> = Api::all(client.clone());
    let mut families = vec![("bench-v4", "10.0.0.0/8", 26u8)];
    if args.dual_stack {
        families.push(("bench-v6", "fd00:be::/96", 122));
    }
    for (name, cidr, block) in &families {
        let spec = IPPoolSpec {
            cidr: (*cidr).into(),
            block_size: Some(*block),
            node_selector: None,
            disabled: false,
            nat_outgoing: false,
            disable_bgp_export: false,
        };
        pools
            .create(&PostParams::default(), &IPPool::new(name, spec))
            .await
            .context("creating the pools")?;
    }
    let identity = "bench-controller";
    let cargs = ControllerArgs::try_parse_from(["tabby-ipam-controller", "--identity", identity])
        .context("controller flags")?;
    let ctl = {
        let client = client.clone();
        tokio::spawn(async move {
            let r = tabby_ipam_controller::controller::run(
                client,
                cargs,
                Arc::new(Metrics::new()),
                Arc::new(Health::default()),
            )
            .await;
            eprintln!("controller stopped: {r:?}");
        })
    };
    // Election and the first passes over the empty cluster are not part of the measurement.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = leases
            .get_opt("tabby-ipam-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some(identity) {
            break;
        }
        if Instant::now() > deadline {
            ctl.abort();
            bail!("the controller did not take the Lease within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.reset_stats();

    let start = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..args.nodes).map(|i| format!("node-{i:05}")).collect();
    let creating = {
        let nodes = nodes.clone();
        let names = names.clone();
        tokio::spawn(async move {
            futures::stream::iter(names)
                .map(|name| {
                    let nodes = nodes.clone();
                    async move {
                        let node: Node =
                            serde_json::from_value(json!({"metadata": {"name": name}}))?;
                        nodes.create(&PostParams::default(), &node).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await?;
            anyhow::Ok(start.elapsed())
        })
    };
    let blocks: Api<IPAMBlock> = Api::all(client.clone());
    let want: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let nfam = families.len();
    let timeout = Duration::from_secs(args.timeout);
    let mut assigned_all = None;
    let mut last_blocks = 0;
    while start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let list = blocks.list(&ListParams::default()).await?;
        last_blocks = list.items.len();
        let mut per_node: BTreeMap<&str, BTreeSet<bool>> = BTreeMap::new();
        for b in &list.items {
            per_node
                .entry(b.spec.node.as_str())
                .or_default()
                .insert(b.spec.cidr.contains(':'));
        }
        let done = want
            .iter()
            .all(|n| per_node.get(n).is_some_and(|f| f.len() == nfam));
        if done {
            assigned_all = Some(start.elapsed());
            break;
        }
    }
    let created = creating.await.context("node creator")??;
    // Trailing writes of the same passes (Events, pool status) count too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writes_of(&sim.stats());
    let total: u64 = writes.values().sum();
    let driver = writes.get("create nodes").copied().unwrap_or(0);
    let controller = total.saturating_sub(driver);
    // Overlap check on the final blocks (the invariant must hold under load too).
    let list = blocks.list(&ListParams::default()).await?;
    let mut nets: Vec<ipnet::IpNet> = list
        .items
        .iter()
        .filter_map(|b| b.spec.cidr.parse().ok())
        .collect();
    nets.sort();
    let disjoint = nets.windows(2).all(|w| !w[0].contains(&w[1].network()));
    ctl.abort();
    sim.shutdown().await;
    Ok(Run {
        assigned_all_s: assigned_all.map_or(f64::NAN, |d| d.as_secs_f64()),
        nodes_created_s: created.as_secs_f64(),
        writes_per_node: controller as f64 / args.nodes as f64,
        writes,
        blocks: last_blocks.max(list.items.len()),
        ok: assigned_all.is_some() && disjoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = spread(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(spread(&[f64::NAN]).is_none());
    }

    #[test]
    fn only_write_verbs_count() {
        let stats: BTreeMap<String, u64> = [
            ("create ipamblocks.tabby.dev", 5),
            ("list ipamblocks.tabby.dev", 50),
            ("update ippools.tabby.dev/status", 2),
            ("watch nodes", 1),
            ("create events.events.k8s.io", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let w = writes_of(&stats);
        assert_eq!(w.values().sum::<u64>(), 12);
        assert!(!w.contains_key("list ipamblocks.tabby.dev"));
    }
}
