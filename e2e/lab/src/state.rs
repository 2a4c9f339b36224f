//! The lab's state file: everything `up` created — processes (with the argv that started them),
//! network namespaces, files — so `down` removes exactly that, and a rerun of either is safe.
//!
//! Owns `<state dir>/lab.json` (written atomically after each step of `up`, so an interrupted
//! `up` still leaves a complete record) and the process-identity check that keeps `down` from
//! signalling a pid the kernel has since given to someone else. Must not create anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// File name of the record inside the state directory.
pub const STATE_FILE: &str = "lab.json";

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: u32,
    /// The command line the running program shows (`/proc/<pid>/cmdline`): how we recognise it.
    pub argv: Vec<String>,
    /// How it was launched (e.g. behind `nsenter --net=... --`, which execs `argv`), to restart it.
    #[serde(default)]
    pub launch: Vec<String>,
    /// Environment given on top of ours, to restart it.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// The record of one lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub prefix: String,
    pub nodes: usize,
    pub ipv6: bool,
    pub mesh: bool,
    #[serde(default)]
    pub tor_password: Option<String>,
    #[serde(default)]
    pub pods_per_node: usize,
    /// The kube-sim address in the root namespace (`https://127.0.0.1:<port>`).
    #[serde(default)]
    pub api_server: String,
    /// The controller's health port in the root namespace.
    #[serde(default)]
    pub controller_port: u16,
    /// Processes by role (`kube-sim`, `controller`, `tor-zebra`, `agent/node-1`, ...).
    #[serde(default)]
    pub processes: BTreeMap<String, ProcRecord>,
    /// Network namespaces, in creation order.
    #[serde(default)]
    pub netns: Vec<String>,
    /// Pods whose CNI ADD succeeded: pod netns -> (node, container id, assigned addresses).
    #[serde(default)]
    pub pods: BTreeMap<String, PodRecord>,
    /// Nodes removed with `Lab::remove_node`.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Set when `up` completed.
    #[serde(default)]
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub node: String,
    pub name: String,
    pub container_id: String,
    pub addresses: Vec<String>,
}

/// Reading or writing the record failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a lab record ({source}); remove it by hand if no lab runs")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl State {
    /// Loads the record in `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                what: "reading",
                path,
                source,
            }),
        }
    }

    /// Writes the record atomically (temporary file + rename).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|source| StateError::Io {
            what: "writing",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            what: "renaming into",
            path,
            source,
        })
    }
}

/// True when `pid` runs the program recorded in `rec` (its cmdline matches the recorded argv);
/// false for a dead pid, a zombie, or a pid reused by another program.
pub fn is_running(rec: &ProcRecord) -> bool {
    read_cmdline(rec.pid).is_some_and(|live| cmdline_matches(&live, &rec.argv))
}

/// True when `pid` is on its way to the program: still our fork before `exec`, or the launcher
/// (`nsenter`) just before it execs the program.
pub fn is_starting(rec: &ProcRecord) -> bool {
    let ours: Vec<String> = read_cmdline(std::process::id()).unwrap_or_default();
    read_cmdline(rec.pid)
        .is_some_and(|live| cmdline_matches(&live, &rec.launch) || cmdline_matches(&live, &ours))
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True while `pid` exists and is not a zombie. Used for processes we just started (our
/// children: their pid cannot be reused before we reap them), where the command line may be
/// in flux (fork, `nsenter`, `exec`).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| process_state(&stat))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The state letter of a `/proc/<pid>/stat` line: the field after the parenthesised command
/// name (which may itself contain spaces and parentheses).
pub fn process_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// The pure part of [`is_running`]: the live argv equals the recorded one. An empty live argv
/// is a zombie or kernel thread, never ours.
pub fn cmdline_matches(live: &[String], recorded: &[String]) -> bool {
    !live.is_empty() && live == recorded
}

/// Stops `rec`'s process if it is still the one we started: `signal`, then SIGKILL after
/// `grace`. Reaps it when it is our child (tests run the lab in-process). Returns whether it
/// was running.
pub fn stop(rec: &ProcRecord, signal: Signal, grace: Duration) -> bool {
    let Ok(raw) = i32::try_from(rec.pid) else {
        return false;
    };
    let pid = Pid::from_raw(raw);
    // Give a launcher that is about to exec the program a moment to do so.
    let start = Instant::now();
    while is_starting(rec) && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !is_running(rec) {
        reap(pid);
        return false;
    }
    let _ = kill(pid, signal);
    let start = Instant::now();
    while start.elapsed() < grace {
        reap(pid);
        if !is_running(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_running(rec) {
        let _ = kill(pid, Signal::SIGKILL);
        let start = Instant::now();
        while is_running(rec) && start.elapsed() < Duration::from_secs(5) {
            reap(pid);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    reap(pid);
    true
}

/// Collects `pid`'s exit status if it is our child; a no-op otherwise.
fn reap(pid: Pid) {
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let mut s = State {
            prefix: "tt-".into(),
            nodes: 3,
            ..State::default()
        };
        s.processes.insert(
            "kube-sim".into(),
            ProcRecord {
                pid: 42,
                argv: vec!["/bin/x".into(), "--y".into()],
                launch: vec![],
                env: vec![],
                log: dir.path().join("x.log"),
            },
        );
        s.netns.push("tt-tor".into());
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("lab.json") && e.contains("not a lab record"),
            "{e}"
        );
    }

    #[test]
    fn process_state_skips_odd_command_names() {
        assert_eq!(process_state("42 (bgpd) S 1 42"), Some('S'));
        assert_eq!(process_state("42 (a) b) (c) Z 1"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
    }

    #[test]
    fn cmdline_must_match_exactly() {
        let rec = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(cmdline_matches(&rec(&["a", "b"]), &rec(&["a", "b"])));
        assert!(!cmdline_matches(&rec(&["a"]), &rec(&["a", "b"])));
        assert!(!cmdline_matches(&rec(&[]), &rec(&[])));
        assert!(!cmdline_matches(&rec(&["sleep", "30"]), &rec(&["a", "b"])));
    }

    #[test]
    fn stop_signals_only_the_recorded_program_and_reaps_it() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let rec = ProcRecord {
            pid: child.id(),
            argv: vec!["sleep".into(), "30".into()],
            launch: vec!["sleep".into(), "30".into()],
            env: vec![],
            log: PathBuf::new(),
        };
        // A record of another program with the same pid is not ours: left alone.
        let other = ProcRecord {
            argv: vec!["tabby-agent".into()],
            launch: vec!["tabby-agent".into()],
            ..rec.clone()
        };
        // Until it execs, the child still shows our own command line.
        let start = Instant::now();
        while !is_running(&rec) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!stop(&other, Signal::SIGTERM, Duration::from_millis(100)));
        assert!(is_running(&rec));
        assert!(stop(&rec, Signal::SIGTERM, Duration::from_secs(2)));
        assert!(!is_running(&rec));
        // Already stopped: a second stop is a no-op.
        assert!(!stop(&rec, Signal::SIGTERM, Duration::from_millis(100)));
        std::mem::forget(child);
    }
}
