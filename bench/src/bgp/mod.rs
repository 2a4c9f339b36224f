//! `tabby-bench bgp`: bgperf-style convergence benchmark of `tabby-bgpd`, BIRD, FRR and GoBGP,
//! side by side in one run.
//!
//! Each run builds two fresh network namespaces joined by a veth: the target router in one, the
//! P injectors and the monitor in the other, each on its own address of the link. Once every
//! session is Established, the injectors write their pre-encoded UPDATEs; elapsed time is from
//! the first UPDATE written to the moment the monitor holds every expected prefix with its final
//! path. Peak memory is the target's `VmHWM`. Every figure is min / median / max over the runs.
//!
//! This module owns the orchestration (namespaces, threads, clocks). The pieces are pure where
//! they can be: [`workload`] (what is sent), [`tally`] (what was received), [`targets`] (how each
//! router is configured), [`report`] (JSON and table); [`session`] is the socket edge.

pub mod report;
pub mod session;
pub mod tally;
pub mod targets;
pub mod workload;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use tabby_bgp::wire::Message;
use tabby_netlab::{Netns, spawn_in_netns};

use report::{Machine, Report, RunRecord, Summary, TargetReport};
use session::{Endpoint, Session};
use tally::Tally;
use targets::{MONITOR_AS, Running, TargetKind, Topology};
use workload::{Mode, Workload};

/// Arguments of `tabby-bench bgp`.
#[derive(Debug, Clone, clap::Args)]
pub struct BgpArgs {
    /// Routers to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "tabby,bird,frr,gobgp")]
    pub targets: Vec<TargetKind>,
    /// Injector peers (P).
    #[arg(long, default_value_t = 10)]
    pub peers: usize,
    /// Prefixes per injector (M).
    #[arg(long, default_value_t = 100_000)]
    pub prefixes: u32,
    /// M for GoBGP only, which is far slower than the others (reported as such).
    #[arg(long)]
    pub gobgp_prefixes: Option<u32>,
    /// Runs per target; each figure is the median of these, with min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, value_enum, default_value = "unique")]
    pub mode: Mode,
    /// Seconds one run may take to converge before it is reported as not converged.
    #[arg(long, default_value_t = 180.0)]
    pub timeout: f64,
    /// Write the full results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The tabby-bgpd binary (default: `target/release/tabby-bgpd` of this workspace).
    #[arg(long)]
    pub tabby_bgpd: Option<PathBuf>,
}

// The three roles never share an AS: the target below the injectors, the monitor above them.
const _: () = assert!(
    targets::TARGET_AS < workload::FIRST_INJECTOR_AS
        && MONITOR_AS > workload::FIRST_INJECTOR_AS + workload::MAX_PEERS as u32 - 1
);

/// How long a target may take to start and establish every session.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between "all Established" and the first UPDATE, so that session setup work (FRR's
/// update-group coalescing timer, 1 s by default) is not counted.
const SETTLE: Duration = Duration::from_millis(1500);
/// Pause between convergence and reading `VmHWM`, so that work right after the last UPDATE is in.
const MEMORY_SETTLE: Duration = Duration::from_secs(1);

pub fn run(args: BgpArgs) -> anyhow::Result<()> {
    if !tabby_netlab::is_root() {
        anyhow::bail!("tabby-bench bgp needs root (it builds network namespaces)");
    }
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let tabby_bin = args.tabby_bgpd.clone().unwrap_or_else(default_tabby_bgpd);
    // Validate every workload before spending minutes on the first target.
    Workload::new(args.mode, args.peers, args.prefixes)?;
    if let Some(m) = args.gobgp_prefixes {
        Workload::new(args.mode, args.peers, m)?;
    }
    let load_before = load_average();
    let mut plans = Vec::new();
    for &kind in &args.targets {
        let m = match (kind, args.gobgp_prefixes) {
            (TargetKind::Gobgp, Some(m)) => m,
            _ => args.prefixes,
        };
        let w = Workload::new(args.mode, args.peers, m)?;
        let skipped = missing_binary(kind, &tabby_bin);
        if let Some(why) = &skipped {
            eprintln!("bgp: skipping {}: {why}", kind.name());
        }
        plans.push((
            w,
            TargetReport {
                target: kind,
                name: kind.name(),
                version: if skipped.is_none() {
                    targets::version(kind, &tabby_bin)
                } else {
                    String::new()
                },
                main_process: kind.main_process(),
                prefixes_per_peer: m,
                paths: w.paths(),
                expected: w.distinct(),
                skipped,
                runs: Vec::new(),
                summary: Summary::of(&[]),
            },
        ));
    }
    // Round-robin (run 1 of every target, then run 2, ...), so that load from other work on the
    // machine drifting over time weighs on every target alike.
    for i in 0..args.runs {
        for (w, tr) in plans.iter_mut().filter(|(_, tr)| tr.skipped.is_none()) {
            eprintln!(
                "bgp: {} run {}/{} ({:?}, {}×{})",
                tr.name,
                i + 1,
                args.runs,
                args.mode,
                args.peers,
                tr.prefixes_per_peer
            );
            let r = run_once(tr.target, *w, timeout, &tabby_bin);
            match (&r.error, r.elapsed_s) {
                (Some(e), _) => eprintln!("bgp:   failed: {e}"),
                (None, Some(s)) => eprintln!(
                    "bgp:   converged in {s:.3} s, peak RSS {} MiB",
                    r.peak_rss_bytes.unwrap_or(0) >> 20
                ),
                (None, None) => {}
            }
            tr.runs.push(r);
        }
    }
    let reports: Vec<TargetReport> = plans
        .into_iter()
        .map(|(_, mut tr)| {
            tr.summary = Summary::of(&tr.runs);
            tr
        })
        .collect();
    let report = Report {
        benchmark: "bgp",
        mode: args.mode,
        peers: args.peers,
        prefixes_per_peer: args.prefixes,
        runs: args.runs,
        timeout_s: args.timeout,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            load_average_before: load_before,
            load_average_after: load_average(),
        },
        targets: reports,
    };
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn default_tabby_bgpd() -> PathBuf {
    tabby_netlab::workspace_root()
        .map(|r| r.join("target/release/tabby-bgpd"))
        .unwrap_or_else(|| PathBuf::from("tabby-bgpd"))
}

fn missing_binary(kind: TargetKind, tabby_bin: &std::path::Path) -> Option<String> {
    let needed: Vec<String> = match kind {
        TargetKind::Tabby => vec![tabby_bin.display().to_string()],
        TargetKind::Bird => vec!["bird".into(), "birdc".into()],
        TargetKind::Frr => vec![
            tabby_netlab::Frr::BGPD.into(),
            tabby_netlab::Frr::ZEBRA.into(),
            "vtysh".into(),
        ],
        TargetKind::Gobgp => vec!["gobgpd".into(), "gobgp".into()],
    };
    // A path with a directory in it is taken as is; a bare name is looked up on PATH.
    let exists = |p: &str| {
        if p.contains('/') {
            std::path::Path::new(p).is_file()
        } else {
            tabby_netlab::find_program(p).is_some()
        }
    };
    let missing: Vec<String> = needed.into_iter().filter(|p| !exists(p)).collect();
    (!missing.is_empty()).then(|| {
        let hint = if kind == TargetKind::Tabby {
            " (cargo build --release -p tabby-bgpd)"
        } else {
            " (scripts/install-deps.sh)"
        };
        format!("{} not found{hint}", missing.join(", "))
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One run: fresh namespaces and a fresh target, so `VmHWM` is this run's peak.
fn run_once(
    kind: TargetKind,
    w: Workload,
    timeout: Duration,
    tabby_bin: &std::path::Path,
) -> RunRecord {
    let mut record = RunRecord::default();
    if let Err(e) = measure(kind, w, timeout, tabby_bin, &mut record) {
        record.error = Some(format!("{e:#}"));
    }
    record
}

/// What the monitor thread reports when it stops.
struct MonitorResult {
    tally: Tally,
    decode: Duration,
    /// When the first UPDATE carrying an expected prefix arrived.
    first_update: Option<Instant>,
    /// When half of the expected prefixes were held with their final path.
    half: Option<Instant>,
    error: Option<session::SessionError>,
}

/// What an injector's sender reports.
struct SendResult {
    first_write: Instant,
    done: Instant,
}

fn measure(
    kind: TargetKind,
    w: Workload,
    timeout: Duration,
    tabby_bin: &std::path::Path,
    record: &mut RunRecord,
) -> anyhow::Result<()> {
    let topo = Topology { peers: w.peers() };
    let target_ns = Netns::new()?;
    let lab_ns = Netns::new()?;
    target_ns.veth_to("eth0", &lab_ns, "eth0")?;
    let cidr = |a| format!("{a}/{}", Topology::PREFIX_LEN);
    target_ns.add_addr("eth0", &cidr(topo.target()))?;
    lab_ns.add_addr("eth0", &cidr(topo.monitor()))?;
    for (_, a, _) in topo.injectors() {
        lab_ns.add_addr("eth0", &cidr(a))?;
    }
    let running = Running::start(kind, &target_ns, &topo, tabby_bin)
        .with_context(|| format!("starting {}", kind.name()))?;
    let remote = SocketAddrV4::new(topo.target(), 179);

    // Every session in parallel; sockets are made on threads inside the lab namespace.
    let mut endpoints: Vec<Endpoint> = topo
        .injectors()
        .map(|(_, local, asn)| Endpoint { local, remote, asn })
        .collect();
    endpoints.push(Endpoint {
        local: topo.monitor(),
        remote,
        asn: MONITOR_AS,
    });
    let handles = endpoints
        .iter()
        .map(|&ep| spawn_in_netns(&lab_ns, move || session::establish(ep, SETUP_TIMEOUT)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sessions = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(Ok(s))) => sessions.push(s),
            Ok(Ok(Err(e))) => first_error = first_error.or(Some(anyhow::Error::new(e))),
            Ok(Err(e)) => first_error = first_error.or(Some(anyhow::Error::new(e))),
            Err(_) => {
                first_error = first_error.or(Some(anyhow::anyhow!("session thread panicked")))
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "establishing sessions with {}; its log:\n{}",
            kind.name(),
            running.log_tail()
        )));
    }
    let Some(monitor) = sessions.pop() else {
        anyhow::bail!("no monitor session");
    };
    let injectors = sessions;

    // Pre-encode before the clock starts.
    let encoded = injectors
        .iter()
        .enumerate()
        .map(|(i, s)| w.encode_injector(i, topo.injector(i), &s.tx_cx))
        .collect::<Result<Vec<_>, _>>()?;
    record.sent_updates = encoded.iter().map(|e| e.messages as u64).sum();
    record.sent_octets = encoded.iter().map(|e| e.octets() as u64).sum();
    std::thread::sleep(SETTLE);

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let sockets: Vec<_> = std::iter::once(&monitor)
        .chain(&injectors)
        .map(|s| s.socket_handle())
        .collect::<Result<_, _>>()?;
    let monitor_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || monitor_loop(monitor, Tally::new(w), stop, done_tx))
    };
    let barrier = Arc::new(Barrier::new(injectors.len()));
    let mut senders = Vec::new();
    let mut drains = Vec::new();
    for (s, enc) in injectors.into_iter().zip(encoded) {
        let Session {
            reader,
            writer,
            keepalive,
            ..
        } = s;
        let barrier = barrier.clone();
        senders.push(std::thread::spawn(move || {
            barrier.wait();
            let first_write = Instant::now();
            for b in &enc.batches {
                writer.write_whole(b)?;
            }
            Ok::<_, session::SessionError>(SendResult {
                first_write,
                done: Instant::now(),
            })
        }));
        let stop = stop.clone();
        drains.push(std::thread::spawn(move || {
            drain_loop(reader, stop, keepalive)
        }));
    }

    // Wait for convergence, the timeout, or the target dying.
    let deadline = Instant::now() + timeout;
    let converged_at = loop {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(t) => break Some(t),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            break None;
        }
        if !target_alive(&target_ns, kind) {
            record.error = Some(format!(
                "{} exited during the run; its log:\n{}",
                kind.name(),
                running.log_tail()
            ));
            break None;
        }
    };
    if converged_at.is_some() {
        std::thread::sleep(MEMORY_SETTLE);
    }
    record.processes = targets::memory(&target_ns)?;
    // Fairness check: no target may be installing the routes (FRR runs with `bgp no-rib`).
    record.kernel_routes = target_ns
        .ip(&["-4", "route", "show", "table", "all"])
        .map(|out| out.lines().count() as u64)
        .ok();
    record.peak_rss_bytes = record
        .processes
        .iter()
        .find(|p| p.name == kind.main_process())
        .map(|p| p.peak_rss_bytes);
    record.peak_rss_all_bytes = (!record.processes.is_empty())
        .then(|| record.processes.iter().map(|p| p.peak_rss_bytes).sum());

    // Tear down: wake every blocked read and write, then collect.
    stop.store(true, Ordering::Relaxed);
    for h in &sockets {
        let _ = h.shutdown(std::net::Shutdown::Both);
    }
    let mut sends = Vec::new();
    let mut send_error = None;
    for t in senders {
        match t.join() {
            Ok(Ok(r)) => sends.push(r),
            Ok(Err(e)) => send_error = send_error.or(Some(e.to_string())),
            Err(_) => send_error = send_error.or(Some("injector thread panicked".into())),
        }
    }
    for t in drains {
        if let Ok(n) = t.join() {
            record.injector_received += n;
        }
    }
    let m = monitor_thread
        .join()
        .map_err(|_| anyhow::anyhow!("monitor thread panicked"))?;
    drop(running);

    record.received = m.tally.held() as u64;
    record.received_final = m.tally.final_count() as u64;
    record.unexpected = m.tally.unexpected;
    record.monitor_updates = m.tally.updates;
    record.monitor_decode_s = m.decode.as_secs_f64();
    if let (Some(first), Some(last)) = (
        sends.iter().map(|s| s.first_write).min(),
        sends.iter().map(|s| s.done).max(),
    ) {
        record.injector_span_s = last.duration_since(first).as_secs_f64();
        record.injector_send_s = sends
            .iter()
            .map(|s| s.done.duration_since(s.first_write).as_secs_f64())
            .fold(0.0, f64::max);
        let since =
            |t: Option<Instant>| t.map(|t| t.saturating_duration_since(first).as_secs_f64());
        record.monitor_first_update_s = since(m.first_update);
        record.monitor_half_s = since(m.half);
        if let Some(t) = converged_at {
            record.converged = true;
            record.elapsed_s = Some(t.saturating_duration_since(first).as_secs_f64());
        }
    }
    // Converged must also mean stable: still complete at teardown, 1 s later.
    if record.converged && !m.tally.is_complete() {
        record.converged = false;
        record.elapsed_s = None;
        record.error = Some(format!(
            "the monitor held every prefix with its final path, then lost some: {} of {} at the end",
            record.received_final,
            w.distinct()
        ));
    }
    if record.error.is_none() && !record.converged {
        let mut why = format!(
            "did not converge within {:.0} s: monitor holds {} of {} prefixes with the final path \
             ({} in all)",
            timeout.as_secs_f64(),
            record.received_final,
            w.distinct(),
            record.received
        );
        if let Some(e) = send_error
            .as_ref()
            .or(m.error.as_ref().map(|e| e.to_string()).as_ref())
        {
            why += &format!("; {e}");
        }
        record.error = Some(why);
    }
    Ok(())
}

/// Whether the target's main process is still in its namespace.
fn target_alive(ns: &Netns, kind: TargetKind) -> bool {
    ns.pids().is_ok_and(|pids| {
        pids.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == kind.main_process())
        })
    })
}

/// The monitor: frames, decodes and counts until stopped; reports convergence once.
fn monitor_loop(
    mut s: Session,
    mut tally: Tally,
    stop: Arc<AtomicBool>,
    done: mpsc::Sender<Instant>,
) -> MonitorResult {
    let mut decode = Duration::ZERO;
    let mut frames = Vec::new();
    let mut reported = false;
    let (mut first_update, mut half) = (None, None);
    let error = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        frames.clear();
        if let Err(e) = s.reader.read_frames(&mut frames) {
            break (!stop.load(Ordering::Relaxed)).then_some(e);
        }
        let t = Instant::now();
        let mut failed = None;
        for f in &frames {
            match s.reader.decode(f) {
                Ok(Message::Update(u)) => tally.apply(&u),
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let now = Instant::now();
        decode += now - t;
        if failed.is_some() {
            break failed;
        }
        if first_update.is_none() && tally.announced > tally.unexpected {
            first_update = Some(now);
        }
        if half.is_none() && tally.final_count() * 2 >= tally.expected() {
            half = Some(now);
        }
        if !reported && tally.is_complete() {
            reported = true;
            let _ = done.send(now);
        }
    };
    drop(s.keepalive);
    MonitorResult {
        tally,
        decode,
        first_update,
        half,
        error,
    }
}

/// An injector's receiving side: keeps the session readable and counts any prefix the target
/// sends back (configured to be none).
fn drain_loop(
    mut reader: session::Reader,
    stop: Arc<AtomicBool>,
    keepalive: session::Keepalive,
) -> u64 {
    let mut received = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match reader.poll() {
            Ok(Some(Message::Update(u))) => received += u.nlri.len() as u64,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(keepalive);
    received
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BgpArgs,
    }

    #[test]
    fn defaults_match_the_issue() {
        let a = Cli::parse_from(["x"]).args;
        assert_eq!(
            a.targets,
            [
                TargetKind::Tabby,
                TargetKind::Bird,
                TargetKind::Frr,
                TargetKind::Gobgp
            ]
        );
        assert_eq!((a.peers, a.prefixes, a.runs), (10, 100_000, 3));
        assert_eq!(a.mode, Mode::Unique);
        assert_eq!(a.gobgp_prefixes, None);
    }

    #[test]
    fn flags_parse() {
        let a = Cli::parse_from([
            "x",
            "--targets",
            "bird,gobgp",
            "--peers",
            "3",
            "--prefixes",
            "2000",
            "--runs",
            "1",
            "--mode",
            "same",
            "--gobgp-prefixes",
            "500",
            "--timeout",
            "30",
        ])
        .args;
        assert_eq!(a.targets, [TargetKind::Bird, TargetKind::Gobgp]);
        assert_eq!((a.peers, a.prefixes, a.runs), (3, 2000, 1));
        assert_eq!(
            (a.mode, a.gobgp_prefixes, a.timeout),
            (Mode::Same, Some(500), 30.0)
        );
        assert!(Cli::try_parse_from(["x", "--targets", "cisco"]).is_err());
    }
}
