//! Results: per-run records, min / median / max summaries, the JSON document and the human
//! table. Pure: it formats what the runs measured and never measures anything itself.

use serde::Serialize;

use super::targets::{ProcessMemory, TargetKind};
use super::workload::Mode;

/// One run against one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunRecord {
    pub converged: bool,
    /// First UPDATE written by any injector → the monitor holds every expected prefix with its
    /// final path. `None` when the run did not converge.
    pub elapsed_s: Option<f64>,
    /// Distinct expected prefixes the monitor held at the end (final path or not).
    pub received: u64,
    /// Of those, with their final path.
    pub received_final: u64,
    /// Peak RSS (`VmHWM`) of the target's main process, read 1 s after convergence (or at the
    /// timeout).
    pub peak_rss_bytes: Option<u64>,
    /// Every process in the target's namespace (FRR: bgpd and zebra).
    pub processes: Vec<ProcessMemory>,
    /// Sum of the peak RSS of every process in the namespace (FRR: bgpd + zebra).
    pub peak_rss_all_bytes: Option<u64>,
    /// Longest time one injector spent writing its UPDATEs (blocked writes included: a slow
    /// target shows up here as back-pressure, not as injector work).
    pub injector_send_s: f64,
    /// First injector write → last injector write done.
    pub injector_span_s: f64,
    /// Monitor CPU work: framing, decoding and counting, without waiting on the socket.
    pub monitor_decode_s: f64,
    pub monitor_updates: u64,
    /// First UPDATE written → the monitor's first UPDATE with a benchmark prefix: how long the
    /// target takes to start passing routes on (a target that reads everything before exporting
    /// shows a late first update).
    pub monitor_first_update_s: Option<f64>,
    /// First UPDATE written → half of the expected prefixes held with their final path.
    pub monitor_half_s: Option<f64>,
    /// UPDATE messages the injectors sent, and the octets.
    pub sent_updates: u64,
    pub sent_octets: u64,
    /// Announcements received by the monitor of prefixes no injector sent (should be 0).
    pub unexpected: u64,
    /// Prefixes the target sent back to the injectors (configured to be 0).
    pub injector_received: u64,
    /// IPv4 routes in the target namespace's kernel tables after the run (a handful of
    /// connected/local ones: no target installs the benchmark's routes).
    pub kernel_routes: Option<u64>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// Min / median / max; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// Summary over the converged runs of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub converged_runs: usize,
    pub elapsed_s: Option<Spread>,
    pub peak_rss_mib: Option<Spread>,
    pub peak_rss_all_mib: Option<Spread>,
    pub injector_send_s: Option<Spread>,
    pub monitor_decode_s: Option<Spread>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Summary {
    pub fn of(runs: &[RunRecord]) -> Summary {
        let ok: Vec<&RunRecord> = runs.iter().filter(|r| r.converged).collect();
        let spread = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            Spread::of(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        Summary {
            runs: runs.len(),
            converged_runs: ok.len(),
            elapsed_s: spread(&|r| r.elapsed_s),
            peak_rss_mib: spread(&|r| r.peak_rss_bytes.map(|b| b as f64 / MIB)),
            peak_rss_all_mib: spread(&|r| r.peak_rss_all_bytes.map(|b| b as f64 / MIB)),
            injector_send_s: spread(&|r| Some(r.injector_send_s)),
            monitor_decode_s: spread(&|r| Some(r.monitor_decode_s)),
        }
    }
}

/// All runs of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: TargetKind,
    pub name: &'static str,
    pub version: String,
    pub main_process: &'static str,
    pub prefixes_per_peer: u32,
    pub paths: u64,
    pub expected: u64,
    /// Why the target was not measured at all (binary missing), if so.
    pub skipped: Option<String>,
    pub runs: Vec<RunRecord>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub load_average_before: String,
    pub load_average_after: String,
}

/// The whole `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub mode: Mode,
    pub peers: usize,
    pub prefixes_per_peer: u32,
    pub runs: usize,
    pub timeout_s: f64,
    pub command: String,
    pub machine: Machine,
    pub targets: Vec<TargetReport>,
}

fn fmt_spread(s: Option<Spread>, digits: usize) -> String {
    match s {
        None => "—".to_string(),
        Some(s) => format!(
            "{:.d$} / {:.d$} / {:.d$}",
            s.min,
            s.median,
            s.max,
            d = digits
        ),
    }
}

impl Report {
    /// A Markdown table, one row per target (figures: min / median / max over converged runs).
    pub fn table(&self) -> String {
        let mut t = format!(
            "BGP convergence, mode {:?}, {} peers, {} runs (timeout {:.0} s per run)\n\n",
            self.mode, self.peers, self.runs, self.timeout_s
        )
        .to_lowercase();
        t += "| target | prefixes (P×M → expected) | converged | time s (min / median / max) | \
              peak RSS MiB (min / median / max) | all processes MiB | injector send s | monitor decode s |\n\
              |---|---|---|---|---|---|---|---|\n";
        for r in &self.targets {
            let load = format!("{}×{} → {}", self.peers, r.prefixes_per_peer, r.expected);
            if let Some(why) = &r.skipped {
                t += &format!("| {} | {load} | skipped: {why} | | | | | |\n", r.name);
                continue;
            }
            let s = &r.summary;
            let mut conv = format!("{}/{}", s.converged_runs, s.runs);
            if s.converged_runs < s.runs {
                let best = r.runs.iter().map(|x| x.received_final).max().unwrap_or(0);
                conv += &format!(" (best {best}/{})", r.expected);
            }
            let all = if r.main_process == "bgpd" {
                format!("{} (bgpd+zebra)", fmt_spread(s.peak_rss_all_mib, 0))
            } else {
                fmt_spread(s.peak_rss_all_mib, 0)
            };
            t += &format!(
                "| {} | {load} | {conv} | {} | {} | {all} | {} | {} |\n",
                r.name,
                fmt_spread(s.elapsed_s, 3),
                fmt_spread(s.peak_rss_mib, 0),
                fmt_spread(s.injector_send_s, 3),
                fmt_spread(s.monitor_decode_s, 3),
            );
        }
        let errors: Vec<String> = self
            .targets
            .iter()
            .flat_map(|r| {
                r.runs.iter().enumerate().filter_map(move |(i, x)| {
                    x.error
                        .as_ref()
                        .map(|e| format!("- {} run {}: {e}", r.name, i + 1))
                })
            })
            .collect();
        if !errors.is_empty() {
            t += "\nFailed runs:\n";
            t += &errors.join("\n");
            t += "\n";
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_min_median_max() {
        type Case<'a> = (&'a [f64], Option<(f64, f64, f64)>);
        let cases: [Case; 5] = [
            (&[], None),
            (&[2.0], Some((2.0, 2.0, 2.0))),
            (&[3.0, 1.0, 2.0], Some((1.0, 2.0, 3.0))),
            (&[4.0, 1.0, 2.0, 3.0], Some((1.0, 2.5, 4.0))),
            (&[f64::NAN, 1.0], Some((1.0, 1.0, 1.0))),
        ];
        for (v, want) in cases {
            let got = Spread::of(v).map(|s| (s.min, s.median, s.max));
            assert_eq!(got, want, "{v:?}");
        }
    }

    fn run(converged: bool, elapsed: f64, mib: u64) -> RunRecord {
        RunRecord {
            converged,
            elapsed_s: converged.then_some(elapsed),
            peak_rss_bytes: Some(mib << 20),
            peak_rss_all_bytes: Some((mib + 10) << 20),
            ..RunRecord::default()
        }
    }

    #[test]
    fn summary_uses_converged_runs_only() {
        let s = Summary::of(&[
            run(true, 1.0, 90),
            run(false, 0.0, 500),
            run(true, 3.0, 100),
        ]);
        assert_eq!((s.runs, s.converged_runs), (3, 2));
        let e = s.elapsed_s.unwrap();
        assert_eq!((e.min, e.median, e.max), (1.0, 2.0, 3.0));
        let m = s.peak_rss_mib.unwrap();
        assert_eq!((m.min, m.max), (90.0, 100.0));
        assert_eq!(s.peak_rss_all_mib.unwrap().max, 110.0);
    }

    #[test]
    fn table_shows_rows_failures_and_skips() {
        let runs = vec![run(true, 0.5, 95), run(false, 0.0, 95)];
        let mut failed = runs.clone();
        failed[1].error = Some("did not converge within 10 s".into());
        failed[1].received_final = 42;
        let target = |kind, name, skipped: Option<&str>, runs: Vec<RunRecord>| TargetReport {
            target: kind,
            name,
            version: String::new(),
            main_process: "bird",
            prefixes_per_peer: 100,
            paths: 300,
            expected: 300,
            skipped: skipped.map(str::to_string),
            summary: Summary::of(&runs),
            runs,
        };
        let r = Report {
            benchmark: "bgp",
            mode: Mode::Unique,
            peers: 3,
            prefixes_per_peer: 100,
            runs: 2,
            timeout_s: 10.0,
            command: String::new(),
            machine: Machine {
                cpus: 2,
                kernel: String::new(),
                load_average_before: String::new(),
                load_average_after: String::new(),
            },
            targets: vec![
                target(TargetKind::Bird, "BIRD", None, failed),
                target(TargetKind::Tabby, "tabby-bgpd", Some("not built"), vec![]),
            ],
        };
        let t = r.table();
        assert!(
            t.contains(
                "| BIRD | 3×100 → 300 | 1/2 (best 42/300) | 0.500 / 0.500 / 0.500 | 95 / 95 / 95 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| tabby-bgpd | 3×100 → 300 | skipped: not built |"),
            "{t}"
        );
        assert!(
            t.contains("- BIRD run 2: did not converge within 10 s"),
            "{t}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["targets"][0]["target"], "bird");
        assert_eq!(json["mode"], "unique");
        assert_eq!(json["targets"][0]["summary"]["elapsed_s"]["median"], 0.5);
    }
}
