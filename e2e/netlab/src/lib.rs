//! Network-namespace test lab: namespaces, veths and real routing daemons, for Tabby's interop
//! tests, agent tests, end-to-end tests and benchmarks.
//!
//! - Gating: [`is_root`], [`skip_unless_root_and`], [`shared_dir`].
//! - [`Netns`]: a named network namespace deleted on drop; veth pairs, addresses, `exec`, and
//!   [`in_netns`] / [`spawn_in_netns`] to run Rust code (sockets included) inside one.
//! - [`Process`]: a child process with its output in a log file, killed and reaped on drop.
//! - [`Frr`], [`Bird`], [`Gobgp`]: the three reference daemons, each started in a namespace with
//!   its own runtime directory, waited on until it answers its control socket, and queried
//!   through its own CLI.
//!
//! ```no_run
//! use std::time::Duration;
//! use tabby_netlab::{Frr, Netns, in_netns, skip_unless_root_and};
//!
//! # fn main() -> tabby_netlab::Result<()> {
//! if skip_unless_root_and(&[Frr::BGPD, Frr::ZEBRA, "vtysh"]) {
//!     return Ok(());
//! }
//! let (router, us) = (Netns::new()?, Netns::new()?);
//! router.veth_to("eth0", &us, "eth0")?;
//! router.add_addr("eth0", "10.0.0.1/30")?;
//! us.add_addr("eth0", "10.0.0.2/30")?;
//! let frr = Frr::start(&router, "router bgp 65001\n neighbor 10.0.0.2 remote-as 65002\n")?;
//! // Our side of the session lives in `us`; the socket stays there.
//! let listener = in_netns(&us, || std::net::TcpListener::bind("10.0.0.2:179"))?;
//! # let _ = (listener, frr.wait_established("10.0.0.2", Duration::from_secs(30)));
//! # Ok(())
//! # }
//! ```
//!
//! It owns only what it creates (namespaces named `tabby-t-<pid>-<n>`, processes it spawned,
//! temporary directories); it never touches the root namespace's links, addresses or routes.

mod daemons;
mod netns;
mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use daemons::{Bird, Frr, Gobgp};
pub use netns::{Netns, in_netns, spawn_in_netns, veth};
pub use process::Process;

/// Everything that can go wrong while building a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("could not start `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {ns}: {source}")]
    Setns {
        ns: String,
        #[source]
        source: nix::Error,
    },
    #[error("timed out after {waited:?} waiting for {what}{}", log_suffix(.log))]
    Timeout {
        what: String,
        waited: Duration,
        log: String,
    },
    #[error("{what} exited early ({status}){}", log_suffix(.log))]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{log}")
    }
}

impl LabError {
    /// Attaches log lines to a timeout or early-exit error (other errors are returned as is).
    pub fn with_log(self, lines: String) -> LabError {
        match self {
            LabError::Timeout { what, waited, .. } => LabError::Timeout {
                what,
                waited,
                log: lines,
            },
            other => other,
        }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// True when running as root (uid 0), which namespaces and the daemons need.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Finds `name` on `PATH` (or as an absolute path), like `which`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    // Daemons often live in sbin or in FRR's libexec dir, which a plain user PATH may lack.
    let extra = ["/usr/sbin", "/sbin", "/usr/lib/frr"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Returns true — after printing why — when the calling test must skip: not root, or one of
/// `programs` is not installed. Use as `if skip_unless_root_and(&["bgpd"]) { return; }`.
pub fn skip_unless_root_and(programs: &[&str]) -> bool {
    if !is_root() {
        eprintln!(
            "SKIP: this test needs root (network namespaces); run as root, e.g. `sudo -E cargo test`"
        );
        return true;
    }
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP: this test needs {} (not found on PATH); `scripts/install-deps.sh` installs them",
            missing.join(", ")
        );
        return true;
    }
    false
}

/// The workspace root: the nearest ancestor of this crate holding a `Cargo.toml` with a
/// `[workspace]` table.
pub fn workspace_root() -> Option<PathBuf> {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|l| l.trim() == "[workspace]")
            .then(|| dir.to_path_buf())
    })
}

/// The project's shared data folder, `<workspace root>/../shared`, if it exists.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = workspace_root()?.parent()?.join("shared");
    dir.is_dir().then_some(dir)
}

/// Polls `check` every 100 ms until it returns `Ok(true)` or `timeout` passes. An `Err` from
/// `check` ends the wait at once. On timeout, `log` supplies context for the error.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
    log: impl FnOnce() -> String,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
                log: log(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to completion; `Ok(stdout)` when it exits 0, else an error with its stderr.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(LabError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// A command line as a shell user would type it, for messages.
pub fn show(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_the_tabby_workspace() {
        let root = workspace_root().expect("workspace root");
        assert!(root.join("e2e/netlab/Cargo.toml").is_file(), "{root:?}");
    }

    #[test]
    fn shared_dir_is_next_to_the_workspace_when_present() {
        let expected = workspace_root().unwrap().parent().unwrap().join("shared");
        assert_eq!(shared_dir().is_some(), expected.is_dir());
        if let Some(d) = shared_dir() {
            assert_eq!(d, expected);
        }
    }

    #[test]
    fn find_program_finds_sh_and_not_nonsense() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("tabby-no-such-program-xyz").is_none());
        assert!(find_program("/nonexistent/tabby").is_none());
    }

    #[test]
    fn skip_when_a_program_is_missing() {
        // Missing program: must skip whether or not we are root.
        assert!(skip_unless_root_and(&["tabby-no-such-program-xyz"]));
        assert_eq!(skip_unless_root_and(&["sh"]), !is_root());
    }

    #[test]
    fn wait_until_times_out_with_context_and_stops_on_error() {
        let mut n = 0;
        wait_until(
            "three polls",
            Duration::from_secs(5),
            || {
                n += 1;
                Ok(n == 3)
            },
            String::new,
        )
        .unwrap();
        assert_eq!(n, 3);
        let e = wait_until(
            "never",
            Duration::from_millis(150),
            || Ok(false),
            || "last line".to_string(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("waiting for never") && msg.contains("last line"),
            "{msg}"
        );
        let e = wait_until(
            "x",
            Duration::from_secs(5),
            || Err(LabError::Invalid("boom".into())),
            String::new,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "boom");
    }

    #[test]
    fn run_reports_failures_with_stderr() {
        assert_eq!(
            run(std::process::Command::new("sh").args(["-c", "echo hi"])).unwrap(),
            "hi\n"
        );
        let e = run(std::process::Command::new("sh").args(["-c", "echo bad >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sh -c echo bad") && e.contains("bad") && e.contains('3'),
            "{e}"
        );
        assert!(matches!(
            run(&mut std::process::Command::new("/nonexistent/prog")),
            Err(LabError::Spawn { .. })
        ));
    }
}
