//! The running daemon: the speaker, the config in force, and reloads.
//!
//! Owns the "running config" — exactly what the speaker has been told, updated one applied
//! operation at a time — and the reload procedure: read the file, validate, diff against the
//! running config, apply only the difference, log each step. A bad file or a change that needs
//! a restart changes nothing. It must not parse TOML or decide what changed (that is
//! [`crate::config`] and [`crate::diff`]) and must not serve HTTP ([`crate::http`]).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tabby_bgp::speaker::{Speaker, SpeakerError};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::convert::{originate_attrs, peer_config, speaker_config};
use crate::diff::{Op, RestartRequired, diff, initial};
use crate::metrics::{DaemonCounters, ReloadResult};

/// Why the daemon could not start or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    RestartRequired(#[from] RestartRequired),
    #[error("starting the speaker: {0}")]
    Speaker(#[from] SpeakerError),
    #[error("{op}: {source}")]
    Op { op: String, source: SpeakerError },
}

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Each applied operation with what the speaker said it took.
    pub applied: Vec<String>,
    /// Each failed operation with the speaker's error; these are not in force.
    pub failed: Vec<String>,
}

/// The daemon.
pub struct Daemon {
    speaker: Speaker,
    config_path: PathBuf,
    /// What the speaker has been told. Locked for a whole reload so reloads never interleave.
    running: Mutex<Config>,
    started: Instant,
    started_at: SystemTime,
    pub counters: DaemonCounters,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .field("speaker", &self.speaker)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Starts the speaker with `cfg` and applies every peer, policy and prefix. Any failure is
    /// fatal at start-up: a daemon that runs half of its config is worse than one that exits.
    /// `restarting`: announce the graceful-restart R and F bits (RFC 4724 §3).
    pub async fn start(
        config_path: &Path,
        cfg: Config,
        restarting: bool,
    ) -> Result<Daemon, DaemonError> {
        let speaker = Speaker::start(speaker_config(&cfg, restarting))?;
        let mut running = cfg.clone();
        running.peers.clear();
        running.originate.clear();
        running.policies.clear();
        for op in initial(&cfg) {
            match apply(&speaker, &op).await {
                Ok(_) => op.apply_to(&mut running),
                Err(source) => {
                    // Leave nothing half-configured behind.
                    let _ = speaker.shutdown().await;
                    return Err(DaemonError::Op {
                        op: op.to_string(),
                        source,
                    });
                }
            }
        }
        info!(
            router_id = %cfg.router_id,
            asn = cfg.asn,
            peers = cfg.peers.len(),
            prefixes = cfg.originate.len(),
            policies = cfg.policies.len(),
            listen = ?speaker.listening(),
            restarting,
            "tabby-bgpd started"
        );
        Ok(Daemon {
            speaker,
            config_path: config_path.to_path_buf(),
            running: Mutex::new(running),
            started: Instant::now(),
            started_at: SystemTime::now(),
            counters: DaemonCounters::default(),
        })
    }

    pub fn speaker(&self) -> &Speaker {
        &self.speaker
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// A copy of the config in force.
    pub async fn running_config(&self) -> Config {
        self.running.lock().await.clone()
    }

    /// Re-reads the config file and applies the difference. Every outcome is logged: the
    /// operator reads the daemon's log after `kill -HUP`.
    pub async fn reload(&self) -> Result<ReloadReport, DaemonError> {
        let path = &self.config_path;
        info!(config = %path.display(), "reloading the configuration");
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!(config = %path.display(), "reload refused, the running config is kept: {e}");
                self.counters.reload(ReloadResult::Rejected);
                return Err(e.into());
            }
        };
        let mut running = self.running.lock().await;
        let ops = match diff(&running, &new) {
            Ok(ops) => ops,
            Err(e) => {
                error!(config = %path.display(), "reload refused: {e}");
                self.counters.reload(ReloadResult::Rejected);
                return Err(e.into());
            }
        };
        if ops.is_empty() {
            info!("reload: no change");
        }
        let mut report = ReloadReport::default();
        for op in &ops {
            match apply(&self.speaker, op).await {
                Ok(what) => {
                    info!("reload: {op}: {what}");
                    report.applied.push(format!("{op}: {what}"));
                    op.apply_to(&mut running);
                }
                Err(e) => {
                    error!("reload: {op} failed, not in force: {e}");
                    report.failed.push(format!("{op}: {e}"));
                }
            }
        }
        let result = if report.failed.is_empty() {
            ReloadResult::Applied
        } else {
            warn!(
                failed = report.failed.len(),
                applied = report.applied.len(),
                "reload partly applied; the next reload retries the rest"
            );
            ReloadResult::Partial
        };
        self.counters.reload(result);
        Ok(report)
    }

    /// Stops every session: Cease / Administrative Shutdown, or for a graceful restart a close
    /// without NOTIFICATION so that peers keep our routes (RFC 4724 §4.1).
    pub async fn shutdown(&self, for_restart: bool) -> Result<(), SpeakerError> {
        if for_restart {
            info!("stopping for a graceful restart: sessions close without NOTIFICATION");
            self.speaker.shutdown_for_restart().await
        } else {
            info!("stopping: Cease / Administrative Shutdown to every peer");
            // Returns once every session's Cease is written out (each session waits for its
            // connection's writer), so exiting right after cannot cut a NOTIFICATION off.
            self.speaker.shutdown().await
        }
    }
}

/// Applies one operation; says in words what it took.
async fn apply(speaker: &Speaker, op: &Op) -> Result<String, SpeakerError> {
    Ok(match op {
        Op::SetPolicy(p) => {
            let r = speaker.set_policy(p.clone()).await?;
            if r.created {
                "created".into()
            } else {
                format!(
                    "replaced; route refresh to {:?}, reset {:?}, {} update group(s) re-exported",
                    r.refreshed, r.reset, r.export_groups
                )
            }
        }
        Op::RemovePeer(a) => {
            speaker.remove_peer(*a).await?;
            "removed (Cease / Peer De-configured)".into()
        }
        Op::UpdatePeer(p) => {
            let change = speaker.update_peer(peer_config(p)).await?;
            format!("{change:?}")
        }
        Op::AddPeer(p) => {
            speaker.add_peer(peer_config(p)).await?;
            "added".into()
        }
        Op::Withdraw(p) => {
            speaker.withdraw(*p).await?;
            "withdrawn".into()
        }
        Op::Originate(o) => {
            let (prefix, attrs) = originate_attrs(o);
            speaker.originate(prefix, attrs).await?;
            "originated".into()
        }
        Op::RemovePolicy(n) => {
            speaker.remove_policy(n).await?;
            "removed".into()
        }
    })
}
