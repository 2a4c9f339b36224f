//! `tabby-agent`: the node agent binary — flags, logging, the API client, signals.
//!
//! SIGTERM / SIGINT: graceful — the speaker stops for a restart (peers keep our routes as
//! stale, RFC 4724), kernel routes are kept, exit 0. SIGKILL: kernel routes stay; the next
//! start adopts them and sweeps only what stays stale. See `tabby_agent::daemon`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tabby_agent::addr::{Method, parse_method};
use tabby_agent::daemon::{self, Config};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Tabby's node agent: BGP from the cluster's CRDs, kernel routes, pod networking.
#[derive(Debug, Parser)]
#[command(name = "tabby-agent", version, about)]
struct Args {
    /// This node's name (its Node object).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The namespace the BGP password Secrets live in (the agent's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tabby-system")]
    namespace: String,
    /// /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9097")]
    listen: SocketAddr,
    /// The unix socket the tabby-cni plugin talks to.
    #[arg(long, default_value = "/var/run/tabby/cni.sock")]
    cni_socket: PathBuf,
    /// Where the agent keeps its run marker (restart detection).
    #[arg(long, default_value = "/var/lib/tabby")]
    state_dir: PathBuf,
    /// A kubeconfig file; without it, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// IPv4 address autodetection when the Node has no IPv4 address: first-found,
    /// interface=<regex>, skip-interface=<regex>, can-reach=<ip>, cidr=<cidr>, or none.
    #[arg(long, default_value = "first-found")]
    ipv4_autodetect: String,
    /// IPv6 address autodetection, same forms as --ipv4-autodetect.
    #[arg(long, default_value = "none")]
    ipv6_autodetect: String,
    /// After a restart, adopted kernel routes not re-learned are removed once every peer's
    /// table has arrived, or after this many seconds.
    #[arg(long, default_value_t = 120)]
    stale_routes_time: u64,
    /// Log format on stderr. Levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn autodetect(flag: &str, value: &str) -> anyhow::Result<Option<Method>> {
    if value.trim() == "none" {
        return Ok(None);
    }
    parse_method(value)
        .map(Some)
        .with_context(|| format!("--{flag}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the async runtime: {e}");
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

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster()
            .context("no --kubeconfig / KUBECONFIG and not running in a pod (in-cluster config)")?,
    };
    kube::Client::try_from(config).context("creating the API client")
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Handlers first, so no signal is lost to the default action while starting.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let mut cfg = Config::new(&args.node_name);
    cfg.namespace = args.namespace.clone();
    cfg.listen = args.listen;
    cfg.cni_socket = args.cni_socket.clone();
    cfg.state_dir = args.state_dir.clone();
    cfg.ipv4_autodetect = autodetect("ipv4-autodetect", &args.ipv4_autodetect)?;
    cfg.ipv6_autodetect = autodetect("ipv6-autodetect", &args.ipv6_autodetect)?;
    cfg.stale_routes_time = Duration::from_secs(args.stale_routes_time);

    let client = client(args.kubeconfig.as_ref()).await?;
    info!(node = %cfg.node_name, namespace = %cfg.namespace, "tabby-agent starting");
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping for restart"),
            _ = int.recv() => info!("SIGINT: stopping for restart"),
        }
    };
    daemon::run(cfg, client, shutdown, |_handles| {})
        .await
        .context("node agent")?;
    info!("tabby-agent stopped");
    Ok(())
}
