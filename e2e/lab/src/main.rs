//! `tabby-lab`: `up`, `status`, `down`, and the `api-proxy` the lab runs inside node namespaces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tabby_lab::{Lab, Options, Report, Up};

/// `print!` that ignores a closed stdout (`tabby-lab up | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "tabby-lab",
    about = "The Tabby lab: the whole system, live, in network namespaces"
)]
struct Cli {
    /// Where the lab records what it made (state file, kubeconfig, logs, FRR's files).
    #[arg(
        long,
        global = true,
        default_value = "/run/tabby-lab",
        env = "TABBY_LAB_DIR"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and leave it running (says so if it already runs).
    Up {
        /// Number of node namespaces.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Dual-stack: IPv6 fabric, pool and ToR sessions too.
        #[arg(long)]
        ipv6: bool,
        /// No node-to-node mesh: nodes learn each other's blocks from the ToR.
        #[arg(long)]
        no_mesh: bool,
        /// TCP MD5 password on the ToR sessions (a Secret referenced by the BGPPeer).
        #[arg(long)]
        tor_password: Option<String>,
        /// Pods per node.
        #[arg(long, default_value_t = 2)]
        pods: usize,
        /// Prefix of the network namespaces' names.
        #[arg(long, default_value = "tlab-")]
        prefix: String,
    },
    /// Print the running lab's nodes, sessions, routes and pods.
    Status,
    /// Remove everything `up` made (processes, namespaces, files). Safe to rerun.
    Down,
    /// (internal) Forward TCP from inside a network namespace to an address in this one.
    #[command(hide = true)]
    ApiProxy {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            nodes,
            ipv6,
            no_mesh,
            tor_password,
            pods,
            prefix,
        } => {
            let opts = Options {
                prefix,
                nodes,
                ipv6,
                mesh: !no_mesh,
                tor_password,
                pods_per_node: pods,
                ..Options::default()
            };
            let start = Instant::now();
            outln!(
                "tabby-lab: building {} node(s){}{} in {} ...",
                opts.nodes,
                if opts.ipv6 { ", dual-stack" } else { "" },
                if opts.mesh { "" } else { ", no mesh" },
                cli.state_dir.display()
            );
            match Lab::up(opts, &cli.state_dir).context("tabby-lab up")? {
                Up::Started(lab) => {
                    outln!("tabby-lab: up in {:.1} s\n", start.elapsed().as_secs_f64());
                    out!("{}", Report::gather(&lab));
                }
                Up::AlreadyRunning(lab) => {
                    outln!(
                        "tabby-lab: a lab is already running in {} (prefix {}); \
                         `make lab-down` removes it\n",
                        cli.state_dir.display(),
                        lab.options().prefix
                    );
                    out!("{}", Report::gather(&lab));
                }
            }
        }
        Cmd::Status => {
            let lab = Lab::attach(&cli.state_dir).context("tabby-lab status")?;
            out!("{}", Report::gather(&lab));
        }
        Cmd::Down => {
            if tabby_lab::down(&cli.state_dir).context("tabby-lab down")? {
                outln!("tabby-lab: removed the lab in {}", cli.state_dir.display());
            } else {
                outln!(
                    "tabby-lab: no lab recorded in {}; nothing to do",
                    cli.state_dir.display()
                );
            }
        }
        Cmd::ApiProxy { netns, listen, to } => {
            let path = format!("/run/netns/{netns}");
            let listener = tabby_lab::proxy::bind_in_netns(&path, listen)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(tabby_lab::proxy::serve(listener, to))
                .with_context(|| format!("proxy {netns} {listen} -> {to}"))?;
        }
    }
    Ok(())
}
