//! `tabby-bench datapath`: TCP throughput pod to pod across two nodes, against host to host over
//! the same link and against a VXLAN overlay between the same hosts.
//!
//! The lab, built once per invocation: two "node" namespaces joined by a veth (`fab0`, the
//! fabric, MTU `--mtu`, 192.168.77.1/30 ↔ .2/30, each node's default route via the other), and
//! one pod per node plumbed by Tabby's own datapath code (`tabby_cni::datapath::Datapath`, what
//! the agent runs on ADD: veth, `/32`, gateway, host route, sysctls, MTU detected from the node's
//! interfaces). The routes the agent would program go in through the agent's route reconciler
//! (`tabby_agent::routes`, protocol 84): the node's own block as a blackhole, the pod's host
//! route, and the remote node's block via the remote node's fabric address. BGP is not part of
//! this measurement: the learned route is handed to the reconciler directly.
//!
//! Targets, each one `iperf3` TCP stream for `--duration` seconds (the first `--omit` seconds
//! not counted, so slow start is left out), the receiver's rate reported:
//!
//! - **host**: node A → node B over the fabric veth (the anchor);
//! - **vxlan**: node A → node B over a VXLAN device (VNI 42, UDP 4789) riding the fabric, MTU
//!   `--mtu` − 50, as an encapsulating overlay would;
//! - **pod**: pod A → pod B: pod veth, forwarding in node A, fabric, forwarding in node B, pod veth.
//!
//! Rounds interleave the targets, so background load on a shared machine spreads over all of
//! them; the machine's load average before and after is reported with the figures. Owns: its
//! namespaces and the `iperf3` processes (dropped at the end). Needs root and `iperf3`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;
use tabby_agent::routes::{Config, Desired, NextHop, Reconciler};
use tabby_cni::datapath::{Attachment, Datapath, PodSpec, host_ifname};
use tabby_netlab::{Netns, Process, in_netns};

use crate::fib::stats;

const FABRIC_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const FABRIC_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const VXLAN_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const VXLAN_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
const IPERF_PORT: u16 = 5201;
/// On top of the run's own duration: connecting, the omitted seconds, the final exchange.
const CLIENT_GRACE: Duration = Duration::from_secs(15);

/// One node's pod block and its pod's address.
struct NodePlan {
    block: &'static str,
    pod: Ipv4Addr,
    peer_fabric: Ipv4Addr,
    peer_block: &'static str,
}

const NODE_A: NodePlan = NodePlan {
    block: "10.244.0.0/26",
    pod: Ipv4Addr::new(10, 244, 0, 2),
    peer_fabric: FABRIC_B,
    peer_block: "10.244.0.64/26",
};
const NODE_B: NodePlan = NodePlan {
    block: "10.244.0.64/26",
    pod: Ipv4Addr::new(10, 244, 0, 66),
    peer_fabric: FABRIC_A,
    peer_block: "10.244.0.0/26",
};

#[derive(Debug, clap::Args)]
pub struct DatapathArgs {
    /// Runs per target; the median is reported with min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seconds each iperf3 run counts (after the omitted ones).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub duration: u32,
    /// Seconds at the start of each run left out of the figure (TCP slow start).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub omit: u32,
    /// MTU of the fabric veth (the pods' MTU is detected from it, as the agent does).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1280..=65535))]
    pub mtu: u32,
    /// Targets to run (comma-separated): host, vxlan, pod. `host` is the anchor of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "host,vxlan,pod")]
    pub targets: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The bench's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Host,
    Vxlan,
    Pod,
}

impl Target {
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        Ok(match s {
            "host" => Target::Host,
            "vxlan" => Target::Vxlan,
            "pod" => Target::Pod,
            other => bail!("unknown target {other:?} (host, vxlan, pod)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Host => "host",
            Target::Vxlan => "vxlan",
            Target::Pod => "pod",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Target::Host => "node A → node B over the fabric veth",
            Target::Vxlan => "node A → node B over VXLAN on the fabric",
            Target::Pod => "pod A → pod B across the nodes (Tabby's datapath)",
        }
    }
}

/// What one iperf3 run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfSample {
    /// Receiver's rate over the counted seconds.
    pub gbps: f64,
    /// TCP retransmissions on the sender.
    pub retransmits: u64,
    /// Whole-machine CPU use seen by the sender's side (`host_total`), percent.
    pub cpu_sender_pct: f64,
}

/// Reads iperf3's `-J` report. An `error` member (iperf3 reports failures inside the JSON) or a
/// missing figure is an error naming what was missing.
pub fn parse_iperf(json: &str) -> anyhow::Result<IperfSample> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3's output is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let end = v
        .get("end")
        .context("iperf3's report has no `end` section")?;
    let bps = end
        .pointer("/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .context("iperf3's report has no end.sum_received.bits_per_second")?;
    if !bps.is_finite() || bps <= 0.0 {
        bail!("iperf3 reports a receive rate of {bps} bit/s");
    }
    Ok(IperfSample {
        gbps: bps / 1e9,
        retransmits: end
            .pointer("/sum_sent/retransmits")
            .and_then(|r| r.as_u64())
            .unwrap_or(0),
        cpu_sender_pct: end
            .pointer("/cpu_utilization_percent/host_total")
            .and_then(|c| c.as_f64())
            .unwrap_or(0.0),
    })
}

/// The machine's 1-minute load average, from `/proc/loadavg`.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The lab. Field order matters: servers stop before the namespaces go.
struct Lab {
    _servers: Vec<Process>,
    node_a: Netns,
    _node_b: Netns,
    pod_a: Netns,
    _pod_b: Netns,
    /// The pods' MTU as the datapath detected it.
    pod_mtu: u32,
    _dir: tempfile::TempDir,
}

fn build_fabric(a: &Netns, b: &Netns, mtu: u32) -> anyhow::Result<()> {
    a.veth_to("fab0", b, "fab0")?;
    let mtu = mtu.to_string();
    for (ns, me, peer, vx) in [
        (a, FABRIC_A, FABRIC_B, VXLAN_A),
        (b, FABRIC_B, FABRIC_A, VXLAN_B),
    ] {
        ns.ip(&["link", "set", "fab0", "mtu", &mtu])?;
        ns.add_addr("fab0", &format!("{me}/30"))?;
        // A node's default route leaves by its uplink; the datapath learns the pods' MTU there.
        ns.ip(&["route", "add", "default", "via", &peer.to_string()])?;
        ns.ip(&[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            &me.to_string(),
            "remote",
            &peer.to_string(),
            "dstport",
            "4789",
            "dev",
            "fab0",
        ])?;
        ns.add_addr("vx0", &format!("{vx}/30"))?;
        ns.link_up("vx0")?;
    }
    Ok(())
}

/// Plumbs one pod with Tabby's datapath and programs the node's routes with the agent's
/// reconciler; returns the pod's attachment.
fn plumb_node(
    rt: &tokio::runtime::Runtime,
    node: &Netns,
    pod: &Netns,
    plan: &NodePlan,
    name: &str,
) -> anyhow::Result<Attachment> {
    let node_path = node.path();
    let spec = PodSpec {
        container_id: format!("bench-{name}"),
        netns: PathBuf::from(pod.path()),
        ifname: "eth0".into(),
        host_ifname: host_ifname(&format!("bench.{name}")),
        addresses: vec![IpAddr::V4(plan.pod)],
        mtu: None,
    };
    let att = rt
        .block_on(async {
            let dp = Datapath::new(Some(Path::new(&node_path)), None).await?;
            dp.add(&spec).await
        })
        .with_context(|| format!("plumbing pod {name} with tabby_cni::datapath"))?;
    let own: IpNet = plan.block.parse()?;
    let peer: IpNet = plan.peer_block.parse()?;
    let pod_net = IpNet::from(IpAddr::V4(plan.pod));
    let host_index = att.host_index;
    let peer_fabric = plan.peer_fabric;
    in_netns(node, move || -> anyhow::Result<()> {
        let mut r = Reconciler::new(Config::default())?;
        let mut d = Desired::new();
        d.set_own_blocks([own]);
        d.set_pod_route(pod_net, host_index);
        d.update(peer, vec![NextHop::via(IpAddr::V4(peer_fabric))])?;
        r.set_desired(d);
        let rep = r.reconcile()?;
        if !rep.failed.is_empty() || !rep.conflicts.is_empty() {
            bail!(
                "the reconciler did not program every route: failed {:?}, conflicts {:?}",
                rep.failed,
                rep.conflicts
            );
        }
        Ok(())
    })??;
    // The node's default route would carry pod traffic too; make sure the agent's routes are
    // the ones in place.
    let ours = node.ip(&["route", "show", "proto", "84"])?;
    let want = [
        format!("blackhole {own}"),
        format!("{} dev {}", plan.pod, att.host_ifname),
        format!("{peer} via {peer_fabric} dev fab0"),
    ];
    for w in &want {
        if !ours.lines().any(|l| l.starts_with(w.as_str())) {
            bail!("node {name} lacks the route `{w}`; its protocol-84 routes:\n{ours}");
        }
    }
    Ok(att)
}

/// Polls `ss` in `ns` until something listens on `port`.
fn wait_listening(ns: &Netns, port: u16, server: &mut Process) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        server.check_running()?;
        let out = ns.exec(&["ss", "-Hltn", &format!("sport = :{port}")])?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("iperf3 in {} never listened on {port}", ns.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lab(args: &DatapathArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<Lab> {
    let dir = tempfile::tempdir()?;
    let node_a = Netns::new()?;
    let node_b = Netns::new()?;
    let pod_a = Netns::new()?;
    let pod_b = Netns::new()?;
    build_fabric(&node_a, &node_b, args.mtu)?;
    let att_a = plumb_node(rt, &node_a, &pod_a, &NODE_A, "a")?;
    let att_b = plumb_node(rt, &node_b, &pod_b, &NODE_B, "b")?;
    if att_a.mtu != att_b.mtu {
        bail!(
            "the pods got different MTUs: {} and {}",
            att_a.mtu,
            att_b.mtu
        );
    }
    // Reachability first: a broken lab must fail here, not as a slow figure.
    for (ns, dst) in [
        (&pod_a, NODE_B.pod.to_string()),
        (&node_a, FABRIC_B.to_string()),
        (&node_a, VXLAN_B.to_string()),
    ] {
        ns.exec(&["ping", "-c", "1", "-W", "2", &dst])
            .with_context(|| format!("{} cannot reach {dst}", ns.name()))?;
    }
    let mut servers = Vec::new();
    for (ns, name) in [(&node_b, "node-b"), (&pod_b, "pod-b")] {
        let mut cmd = ns.command("iperf3");
        cmd.args(["-s", "-p", &IPERF_PORT.to_string()]);
        let mut p = Process::spawn(
            &format!("iperf3 server in {name}"),
            cmd,
            &dir.path().join(format!("iperf3-{name}.log")),
        )?;
        wait_listening(ns, IPERF_PORT, &mut p)?;
        servers.push(p);
    }
    Ok(Lab {
        _servers: servers,
        node_a,
        _node_b: node_b,
        pod_a,
        _pod_b: pod_b,
        pod_mtu: att_a.mtu,
        _dir: dir,
    })
}

/// One iperf3 client run; killed if it outlives its bound.
fn iperf(client: &Netns, dst: Ipv4Addr, duration: u32, omit: u32) -> anyhow::Result<IperfSample> {
    let mut cmd = client.command("iperf3");
    cmd.args([
        "-c",
        &dst.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &duration.to_string(),
        "-O",
        &omit.to_string(),
        "-J",
        "--connect-timeout",
        "3000",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning iperf3")?;
    let bound = Duration::from_secs(u64::from(duration + omit)) + CLIENT_GRACE;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 to {dst} did not finish within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_iperf(&stdout).with_context(|| {
        format!(
            "iperf3 to {dst} (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn run_target(lab: &Lab, t: Target, args: &DatapathArgs) -> anyhow::Result<IperfSample> {
    let (client, dst) = match t {
        Target::Host => (&lab.node_a, FABRIC_B),
        Target::Vxlan => (&lab.node_a, VXLAN_B),
        Target::Pod => (&lab.pod_a, NODE_B.pod),
    };
    iperf(client, dst, args.duration, args.omit)
}

/// Each target's median, min and max, and the median's ratio to the `host` median (when host ran).
pub fn summarise(targets: &[Target], samples: &[Vec<IperfSample>]) -> Vec<serde_json::Value> {
    let host = targets
        .iter()
        .position(|t| *t == Target::Host)
        .map(|i| stats(&samples[i].iter().map(|s| s.gbps).collect::<Vec<_>>()).0);
    targets
        .iter()
        .zip(samples)
        .map(|(t, ss)| {
            let (med, min, max) = stats(&ss.iter().map(|s| s.gbps).collect::<Vec<_>>());
            let (retr, _, _) = stats(&ss.iter().map(|s| s.retransmits as f64).collect::<Vec<_>>());
            let (cpu, _, _) = stats(&ss.iter().map(|s| s.cpu_sender_pct).collect::<Vec<_>>());
            serde_json::json!({
                "target": t.name(),
                "gbps": med, "gbps_min": min, "gbps_max": max,
                "ratio_to_host": host.map(|h| med / h),
                "retransmits": retr,
                "cpu_sender_pct": cpu,
                "runs": ss.len(),
                "ok": true,
            })
        })
        .collect()
}

pub fn run(args: DatapathArgs) -> anyhow::Result<()> {
    if !tabby_netlab::is_root() {
        bail!("tabby-bench datapath needs root (network namespaces)");
    }
    for p in ["iperf3", "ip", "ss", "ping"] {
        if tabby_netlab::find_program(p).is_none() {
            bail!("tabby-bench datapath needs {p} (scripts/install-deps.sh installs it)");
        }
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let targets = args
        .targets
        .iter()
        .map(|s| Target::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let load_before = loadavg();
    let lab = lab(&args, &rt)?;
    let mut samples: Vec<Vec<IperfSample>> = vec![Vec::new(); targets.len()];
    for round in 0..args.runs {
        for (i, t) in targets.iter().enumerate() {
            let s = run_target(&lab, *t, &args)
                .with_context(|| format!("{}, run {}", t.name(), round + 1))?;
            eprintln!(
                "{} run {}: {:.2} Gbit/s ({} retransmits)",
                t.name(),
                round + 1,
                s.gbps,
                s.retransmits
            );
            samples[i].push(s);
        }
    }
    let load_after = loadavg();
    let pod_mtu = lab.pod_mtu;
    drop(lab);
    let results = summarise(&targets, &samples);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<7} {:>8} {:>8} {:>8} {:>8} {:>8}  what",
        "target", "Gbit/s", "min", "max", "vs host", "retrans"
    );
    for (t, r) in targets.iter().zip(&results) {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let ratio = match r["ratio_to_host"].as_f64() {
            Some(x) => format!("{:.1}%", x * 100.0),
            None => "-".into(),
        };
        let _ = writeln!(
            table,
            "{:<7} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8.0}  {}",
            t.name(),
            f("gbps"),
            f("gbps_min"),
            f("gbps_max"),
            ratio,
            f("retransmits"),
            t.describe()
        );
    }
    let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    println!(
        "Pod datapath throughput: iperf3, 1 TCP stream, {} s (+{} s omitted) per run, {} run(s) \
         per target; fabric MTU {}, pod MTU {pod_mtu}, VXLAN MTU {}; load average {} before, {} \
         after ({} CPUs)\n{table}",
        args.duration,
        args.omit,
        args.runs,
        args.mtu,
        args.mtu - VXLAN_OVERHEAD,
        load(load_before),
        load(load_after),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "bench": "datapath",
            "params": {
                "runs": args.runs, "duration_s": args.duration, "omit_s": args.omit,
                "fabric_mtu": args.mtu, "pod_mtu": pod_mtu,
                "vxlan_mtu": args.mtu - VXLAN_OVERHEAD,
                "loadavg_before": load_before, "loadavg_after": load_after,
            },
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"start":{},"intervals":[],"end":{
        "sum_sent":{"bits_per_second":2.1e10,"retransmits":7},
        "sum_received":{"bits_per_second":2.03e10},
        "cpu_utilization_percent":{"host_total":98.5,"remote_total":60.1}}}"#;

    #[test]
    fn iperf_report_is_read() {
        let s = parse_iperf(REPORT).unwrap();
        assert!((s.gbps - 20.3).abs() < 1e-9, "{s:?}");
        assert_eq!(s.retransmits, 7);
        assert!((s.cpu_sender_pct - 98.5).abs() < 1e-9);
    }

    #[test]
    fn iperf_failures_are_errors_that_say_why() {
        let cases = [
            ("not json", "not JSON"),
            (
                r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#,
                "Connection refused",
            ),
            (r#"{"start":{}}"#, "no `end`"),
            (r#"{"end":{"sum_sent":{}}}"#, "sum_received"),
            (
                r#"{"end":{"sum_received":{"bits_per_second":0}}}"#,
                "receive rate of 0",
            ),
        ];
        for (json, want) in cases {
            let e = format!("{:#}", parse_iperf(json).unwrap_err());
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn targets_parse_and_ratio_is_to_host() {
        assert_eq!(Target::parse("pod").unwrap(), Target::Pod);
        assert!(Target::parse("ipip").is_err());
        let s = |g: f64| IperfSample {
            gbps: g,
            retransmits: 0,
            cpu_sender_pct: 0.0,
        };
        let targets = [Target::Host, Target::Pod];
        let samples = vec![
            vec![s(20.0), s(18.0), s(22.0)],
            vec![s(19.0), s(19.5), s(10.0)],
        ];
        let r = summarise(&targets, &samples);
        assert_eq!(r[0]["gbps"], 20.0);
        assert_eq!(r[0]["ratio_to_host"], 1.0);
        assert_eq!(r[1]["gbps"], 19.0);
        assert_eq!(r[1]["gbps_min"], 10.0);
        assert_eq!(r[1]["ratio_to_host"], 0.95);
        // Without the anchor there is no ratio.
        let r = summarise(&[Target::Pod], &samples[1..]);
        assert!(r[0]["ratio_to_host"].is_null());
    }
}
