//! `tabby-bench fib`: how fast routes get into the kernel FIB.
//!
//! Three targets, each in a fresh pair of network namespaces (`fib`, the one being programmed,
//! and `nbr`, the next hop at the other end of a veth), N routes each (`/26`s by default, or
//! `/32`s), all via the neighbour:
//!
//! - **tabby**: the agent's route reconciler (`tabby_agent::routes`), handed the N routes as
//!   desired state; the clock runs from `set_desired` to a dump counting N routes of ours.
//!   Building the desired state (the speaker's side) is timed separately as `build_s`; a full
//!   resync right after (dump + diff, nothing to write: the periodic safety net) as `resync_s`.
//! - **ip-batch**: `ip -batch` of the same routes (`route add ... proto static`); the clock runs
//!   from spawning `ip` to a dump counting N static routes.
//! - **bird**: BIRD 2 with a `static` protocol holding the N routes (started `disabled`) and a
//!   `kernel` protocol exporting everything; BIRD is started and ready first, then the clock
//!   runs from `birdc enable` to a dump counting N routes of protocol `bird`. A dump is polled
//!   every [`POLL`], so BIRD's figure can be late by up to one poll plus one dump.
//!
//! Every figure is a median over `--runs` with min and max. Owns: its namespaces and processes
//! (dropped at the end of each run). Needs root.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv4Net};
use tabby_agent::routes::{Config, Desired, NextHop, Reconciler, RouteSocket, TABBY_RT_PROTO};
use tabby_netlab::{Bird, Netns, in_netns};

const POLL: Duration = Duration::from_millis(5);
const TIMEOUT: Duration = Duration::from_secs(120);
const TABLE: u32 = 254;
const RTPROT_STATIC: u8 = 4;
const RTPROT_BIRD: u8 = 12;
const NEIGHBOUR: &str = "192.168.0.2";

#[derive(Debug, clap::Args)]
pub struct FibArgs {
    /// Number of routes.
    #[arg(long, default_value_t = 100_000)]
    pub routes: u32,
    /// Prefix length of each route: 26 (pod blocks) or 32 (host routes).
    #[arg(long, default_value_t = 26, value_parser = clap::value_parser!(u8).range(8..=32))]
    pub prefix_len: u8,
    /// Runs per target; the median is reported with min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Targets to run (comma-separated): tabby, ip-batch, bird.
    #[arg(long, value_delimiter = ',', default_value = "tabby,ip-batch,bird")]
    pub targets: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The N prefixes: consecutive `/len` blocks from 10.0.0.0, all inside 10.0.0.0/8.
pub fn prefixes(n: u32, len: u8) -> anyhow::Result<Vec<Ipv4Net>> {
    let room = 1u64 << (len - 8);
    if u64::from(n) > room {
        bail!("{n} /{len} routes do not fit in 10.0.0.0/8 (at most {room})");
    }
    let step = 1u32 << (32 - len);
    (0..n)
        .map(|i| {
            Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i * step), len)
                .context("building a benchmark prefix")
        })
        .collect()
}

struct Lab {
    fib: Netns,
    _nbr: Netns,
}

fn lab() -> anyhow::Result<Lab> {
    let fib = Netns::new()?;
    let nbr = Netns::new()?;
    fib.veth_to("eth0", &nbr, "eth0")?;
    fib.add_addr("eth0", "192.168.0.1/24")?;
    nbr.add_addr("eth0", "192.168.0.2/24")?;
    Ok(Lab { fib, _nbr: nbr })
}

/// Polls a dump until `protocol` has `n` routes; returns when it saw them.
fn wait_count(sock: &mut RouteSocket, protocol: u8, n: usize) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        let c = sock.count(TABLE, protocol)?;
        if c >= n {
            if c > n {
                bail!("{c} routes of protocol {protocol}, expected {n}");
            }
            return Ok(Instant::now());
        }
        if start.elapsed() > TIMEOUT {
            bail!("only {c} of {n} routes of protocol {protocol} after {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// One measurement: seconds to FIB, plus what the target's driver reports about itself.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    fib_s: f64,
    /// Tabby: building desired state (not in `fib_s`). Others: 0.
    build_s: f64,
    /// Tabby: computing the diff (inside `fib_s`). Others: 0.
    plan_s: f64,
    /// Tabby: a full resync afterwards (dump + diff, no writes; not in `fib_s`). Others: 0.
    resync_s: f64,
}

fn run_tabby(nets: &[Ipv4Net]) -> anyhow::Result<Sample> {
    let lab = lab()?;
    let n = nets.len();
    in_netns(&lab.fib, || -> anyhow::Result<Sample> {
        let hop = vec![NextHop::via(NEIGHBOUR.parse()?)];
        let mut r = Reconciler::new(Config::default())?;
        let mut sock = RouteSocket::new(TABBY_RT_PROTO)?;
        let t_build = Instant::now();
        let mut desired = Desired::new();
        for p in nets {
            desired.update(IpNet::V4(*p), hop.clone())?;
        }
        let build_s = t_build.elapsed().as_secs_f64();
        let t0 = Instant::now();
        r.set_desired(desired);
        let rep = r.reconcile()?;
        let rep_plan_s = rep.plan_elapsed.as_secs_f64();
        if !rep.failed.is_empty() {
            bail!(
                "{} routes refused, first: {} ({})",
                rep.failed.len(),
                rep.failed[0].0,
                rep.failed[0].1
            );
        }
        let t1 = wait_count(&mut sock, TABBY_RT_PROTO, n)?;
        // The periodic safety net's cost at this size: dump, full diff, nothing to write.
        let t_resync = Instant::now();
        let rep = r.resync()?;
        let resync_s = t_resync.elapsed().as_secs_f64();
        if rep.added + rep.replaced + rep.deleted != 0 {
            bail!("resync after programming wanted changes: {rep:?}");
        }
        Ok(Sample {
            fib_s: (t1 - t0).as_secs_f64(),
            build_s,
            plan_s: rep_plan_s,
            resync_s,
        })
    })?
}

fn run_ip_batch(nets: &[Ipv4Net]) -> anyhow::Result<Sample> {
    let lab = lab()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("routes.batch");
    let mut text = String::with_capacity(nets.len() * 48);
    for p in nets {
        writeln!(text, "route add {p} via {NEIGHBOUR} proto static")?;
    }
    std::fs::write(&file, text)?;
    let mut sock = in_netns(&lab.fib, || RouteSocket::new(RTPROT_STATIC))??;
    let t0 = Instant::now();
    let out = std::process::Command::new("ip")
        .args(["-n", lab.fib.name(), "-batch"])
        .arg(&file)
        .output()
        .context("running ip -batch")?;
    if !out.status.success() {
        bail!(
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let t1 = wait_count(&mut sock, RTPROT_STATIC, nets.len())?;
    Ok(Sample {
        fib_s: (t1 - t0).as_secs_f64(),
        ..Sample::default()
    })
}

fn bird_conf(nets: &[Ipv4Net]) -> String {
    let mut c = String::with_capacity(nets.len() * 40 + 512);
    c.push_str(
        "router id 192.168.0.1;\n\
         protocol device { scan time 10; }\n\
         protocol kernel k4 {\n  ipv4 { import none; export all; };\n  scan time 60;\n}\n\
         protocol static s4 {\n  disabled;\n  ipv4;\n",
    );
    for p in nets {
        let _ = writeln!(c, "  route {p} via {NEIGHBOUR};");
    }
    c.push_str("}\n");
    c
}

fn run_bird(nets: &[Ipv4Net]) -> anyhow::Result<Sample> {
    let lab = lab()?;
    let bird = Bird::start(&lab.fib, &bird_conf(nets))?;
    let mut sock = in_netns(&lab.fib, || RouteSocket::new(RTPROT_BIRD))??;
    // The device protocol must have seen eth0 before static routes via the neighbour resolve.
    let ready = Instant::now();
    while !bird
        .birdc("show interfaces")
        .map(|s| s.contains("eth0 up"))
        .unwrap_or(false)
    {
        if ready.elapsed() > Duration::from_secs(10) {
            bail!("BIRD never saw eth0 up:\n{}", bird.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    bird.birdc("enable s4")?;
    let t1 = wait_count(&mut sock, RTPROT_BIRD, nets.len())
        .with_context(|| format!("BIRD log:\n{}", bird.log()))?;
    Ok(Sample {
        fib_s: (t1 - t0).as_secs_f64(),
        ..Sample::default()
    })
}

/// Median, min and max of `xs` (not empty).
pub fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

pub fn run(args: FibArgs) -> anyhow::Result<()> {
    if !tabby_netlab::is_root() {
        bail!("tabby-bench fib needs root (network namespaces)");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let nets = prefixes(args.routes, args.prefix_len)?;
    let mut results = Vec::new();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<10} {:>10} {:>10} {:>10} {:>14} {:>9}",
        "target", "fib_s", "min", "max", "routes/s", "build_s"
    );
    type Runner = fn(&[Ipv4Net]) -> anyhow::Result<Sample>;
    let mut targets: Vec<(&str, Runner)> = Vec::new();
    for target in &args.targets {
        match target.as_str() {
            "tabby" => targets.push(("tabby", run_tabby)),
            "ip-batch" => targets.push(("ip-batch", run_ip_batch)),
            "bird" if tabby_netlab::find_program("bird").is_none() => {
                eprintln!("skipping bird: not installed");
            }
            "bird" => targets.push(("bird", run_bird)),
            other => bail!("unknown target {other:?} (tabby, ip-batch, bird)"),
        }
    }
    // Rounds interleave the targets, so background load on a shared machine spreads over all
    // of them instead of hitting one target's runs.
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..args.runs {
        for (i, (name, f)) in targets.iter().enumerate() {
            let s = f(&nets).with_context(|| format!("{name}, run {}", round + 1))?;
            eprintln!("{name} run {}: {:.3} s", round + 1, s.fib_s);
            samples[i].push(s);
        }
    }
    for ((target, _), samples) in targets.iter().zip(&samples) {
        let pick = |f: fn(&Sample) -> f64| stats(&samples.iter().map(f).collect::<Vec<_>>());
        let (med, min, max) = pick(|s| s.fib_s);
        let (bmed, bmin, bmax) = pick(|s| s.build_s);
        let (pmed, _, _) = pick(|s| s.plan_s);
        let (rmed, rmin, rmax) = pick(|s| s.resync_s);
        let rate = nets.len() as f64 / med;
        let _ = writeln!(
            table,
            "{target:<10} {med:>10.3} {min:>10.3} {max:>10.3} {rate:>14.0} {bmed:>9.3}"
        );
        results.push(serde_json::json!({
            "target": target,
            "fib_s": med, "fib_s_min": min, "fib_s_max": max,
            "routes_per_s": rate,
            "build_s": bmed, "build_s_min": bmin, "build_s_max": bmax,
            "plan_s": pmed,
            "resync_s": rmed, "resync_s_min": rmin, "resync_s_max": rmax,
            "ok": true,
        }));
    }
    println!(
        "FIB programming: {} /{} routes via a veth neighbour, {} run(s) per target\n{table}",
        nets.len(),
        args.prefix_len,
        args.runs
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "bench": "fib",
            "params": {"routes": args.routes, "prefix_len": args.prefix_len, "runs": args.runs},
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

    #[test]
    fn prefixes_are_consecutive_and_bounded() {
        let p = prefixes(3, 26).unwrap();
        let s: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(s, ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26"]);
        assert_eq!(prefixes(2, 32).unwrap()[1].to_string(), "10.0.0.1/32");
        assert_eq!(prefixes(1 << 18, 26).unwrap().len(), 1 << 18);
        assert!(prefixes((1 << 18) + 1, 26).is_err());
    }

    #[test]
    fn stats_median_min_max() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&[5.0]), (5.0, 5.0, 5.0));
    }

    #[test]
    fn bird_config_has_every_route_and_starts_disabled() {
        let nets = prefixes(5, 26).unwrap();
        let c = bird_conf(&nets);
        assert_eq!(c.matches("  route ").count(), 5);
        assert!(c.contains("disabled;") && c.contains("export all"));
    }
}
