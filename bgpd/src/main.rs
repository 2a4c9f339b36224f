//! `tabby-bgpd` binary: flags, logging, signals, the HTTP server, and the daemon.
//!
//! Signals: SIGHUP reloads the config file (only the difference is applied; a bad file is
//! refused and the running config kept); SIGTERM and SIGINT stop every session with Cease /
//! Administrative Shutdown and exit 0; SIGUSR1 stops for a graceful restart (sessions close
//! without NOTIFICATION so peers keep our routes, RFC 4724 §4.1) and exits 0. With
//! `--state-file`, a start that finds the file left by a run that died (or stopped with
//! SIGUSR1) announces the graceful restart without `--graceful-restart`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tabby_bgpd::config::Config;
use tabby_bgpd::daemon::Daemon;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Tabby's standalone BGP daemon.
#[derive(Debug, Parser)]
#[command(name = "tabby-bgpd", version, about)]
struct Args {
    /// The TOML configuration file (see bgpd/README.md).
    #[arg(long, short = 'c', env = "TABBY_BGPD_CONFIG")]
    config: PathBuf,
    /// Log format on stderr. Levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Validate the configuration, print a summary and exit (0: valid, 1: invalid).
    #[arg(long)]
    check: bool,
    /// Serve status, RIB lookups and metrics over HTTP on this address (e.g. 127.0.0.1:9179).
    #[arg(long, env = "TABBY_BGPD_HTTP")]
    http: Option<SocketAddr>,
    /// This start is a restart with forwarding state kept: announce the graceful restart
    /// Restart State and Forwarding State bits (RFC 4724 §3) so peers keep our routes until
    /// our End-of-RIB.
    #[arg(long)]
    graceful_restart: bool,
    /// A file that exists while the daemon runs and is removed on a clean stop (SIGTERM,
    /// SIGINT). Found at start-up, it means the previous run died or stopped for a graceful
    /// restart (SIGUSR1): this start then counts as `--graceful-restart`.
    #[arg(long, env = "TABBY_BGPD_STATE_FILE")]
    state_file: Option<PathBuf>,
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match Config::load(&args.config) {
            Ok(c) => {
                println!(
                    "{}: valid: router id {}, AS {}, {} peer(s), {} originated prefix(es), {} policy(ies)",
                    args.config.display(),
                    c.router_id,
                    c.asn,
                    c.peers.len(),
                    c.originate.len(),
                    c.policies.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", args.config.display());
                ExitCode::FAILURE
            }
        };
    }
    init_logs(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    // Install the handlers before anything starts, so no signal is lost to the default action.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;

    let left_over = match &args.state_file {
        Some(f) => f
            .try_exists()
            .with_context(|| format!("state file {}", f.display()))?,
        None => false,
    };
    if left_over {
        info!(
            "state file found: the previous run did not stop cleanly; announcing a graceful restart"
        );
    }
    let restarting = args.graceful_restart || left_over;
    let daemon = Arc::new(
        Daemon::start(&args.config, cfg, restarting)
            .await
            .context("starting")?,
    );
    if let Some(f) = &args.state_file {
        std::fs::write(f, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the state file {}", f.display()))?;
    }
    if let Some(addr) = args.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("HTTP: listening on {addr}"))?;
        info!(http = %addr, "serving status and metrics");
        let app = tabby_bgpd::http::router(daemon.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!("HTTP server stopped: {e}");
            }
        });
    }

    let for_restart = loop {
        tokio::select! {
            _ = hup.recv() => {
                // Errors are logged by reload itself; the running config stays.
                let _ = daemon.reload().await;
            }
            _ = term.recv() => { info!("SIGTERM"); break false; }
            _ = int.recv() => { info!("SIGINT"); break false; }
            _ = usr1.recv() => { info!("SIGUSR1"); break true; }
        }
    };
    daemon
        .shutdown(for_restart)
        .await
        .context("stopping the speaker")?;
    // A clean stop: the next start is not a restart. After SIGUSR1 the file stays, so the
    // next start announces the graceful restart by itself.
    if let (Some(f), false) = (&args.state_file, for_restart)
        && let Err(e) = std::fs::remove_file(f)
    {
        error!("removing the state file {}: {e}", f.display());
    }
    info!("tabby-bgpd stopped");
    Ok(())
}
