//! `tabby-kube-sim`: runs the in-memory Kubernetes API emulator as a process (for the lab and for
//! tests that run our components as separate binaries).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// In-memory Kubernetes API server for Tabby's tests and lab.
#[derive(Debug, Parser)]
#[command(name = "tabby-kube-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443", env = "KUBE_SIM_LISTEN")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Serve HTTPS with a CA generated at start-up (its certificate goes into the kubeconfig).
    #[arg(long)]
    tls: bool,
    /// Require this bearer token on every request.
    #[arg(long, env = "KUBE_SIM_TOKEN")]
    token: Option<String>,
    /// Keep state here across restarts (objects and resourceVersion).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of change events kept for watch replay (older versions get 410 Gone).
    #[arg(long, default_value_t = 20_000)]
    watch_window: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 10)]
    bookmark_interval: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = tabby_kube_sim::Config {
        listen: args.listen,
        tls: args.tls,
        token: args.token,
        watch_window: args.watch_window,
        bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
        data_dir: args.data_dir,
        snapshot_interval: Duration::from_secs(1),
    };
    let sim = tabby_kube_sim::KubeSim::start(config)
        .await
        .context("starting tabby-kube-sim")?;
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("tabby-kube-sim serving {}", sim.base_url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
