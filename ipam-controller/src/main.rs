//! `tabby-ipam-controller` binary: flags, logging, the API client, the metrics/health server,
//! and the controller loop.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tabby_ipam_controller::config::Args;
use tabby_ipam_controller::controller;
use tabby_ipam_controller::metrics::{Health, Metrics, router};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let app = router(metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics/health server stopped");
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // On a signal the process exits without releasing the Lease: a standby takes over when it
    // expires (at most --lease-duration), and no write of this replica can follow the exit.
    tokio::select! {
        r = controller::run(client, args, metrics, health) => r.context("controller stopped"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; exiting");
            Ok(())
        }
        _ = term.recv() => {
            tracing::info!("terminated; exiting");
            Ok(())
        }
    }
}
