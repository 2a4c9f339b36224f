//! A long-running child process whose output goes to a log file, stopped and reaped on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{LabError, Result, show};

/// A spawned daemon. Dropping it sends SIGTERM, waits up to two seconds, then SIGKILLs.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Process> {
        let io = |source| LabError::Io {
            what: format!("opening log {}", log.display()),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: show(&cmd),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "spawned");
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `Ok` while the process runs; an error with its exit status and log tail once it exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LabError::Exited {
                what: self.name.clone(),
                status: status.to_string(),
                log: self.log_tail(20),
            }),
            Err(source) => Err(LabError::Io {
                what: format!("waiting for {}", self.name),
                source,
            }),
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and reaps it.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_output_and_is_reaped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; echo oops >&2; exec sleep 30"]);
        let mut p = Process::spawn("sleeper", cmd, &log).unwrap();
        let pid = p.pid();
        crate::wait_until(
            "output",
            Duration::from_secs(5),
            || Ok(p.log_tail(5).contains("oops")),
            String::new,
        )
        .unwrap();
        assert!(p.log_tail(5).contains("started"));
        p.check_running().unwrap();
        drop(p);
        // Reaped: the pid no longer names our child.
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.contains("sleep"))
                    .unwrap_or(true)
        );
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bad config line 3; exit 1"]);
        let mut p = Process::spawn("broken", cmd, &log).unwrap();
        let r = crate::wait_until(
            "exit",
            Duration::from_secs(5),
            || p.check_running().map(|()| false),
            String::new,
        );
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("broken exited early") && msg.contains("bad config line 3"),
            "{msg}"
        );
    }
}
