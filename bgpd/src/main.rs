//! `tabby-bgpd` binary: flags, logging, signals, the HTTP server, and the daemon.
//!
//! Signals: SIGHUP reloads the config file (only the difference is applied; a bad file is
//! refused and the running config kept); SIGTERM and SIGINT stop every session with Cease /
//! Administrative Shutdown and exit 0; SIGUSR1 stops for a graceful restart (sessions close
//! without NOTIFICATION so peers keep our routes, RFC 4724 §4.1) and exits 0.

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

    let daemon = Arc::new(
        Daemon::start(&args.config, cfg, args.graceful_restart)
            .await
            .context("starting")?,
    );
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
    info!("tabby-bgpd stopped");
    Ok(())
}
