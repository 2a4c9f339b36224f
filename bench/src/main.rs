//! `tabby-bench`: side-by-side benchmarks, one subcommand per benchmark, each in its own module
//! (`bgp`, `ipam`, `fib`, …). Every benchmark runs Tabby and its anchors in the same run and reports
//! min / median / max; see `docs/benchmarks.md`.

mod bgp;
mod cni;
mod datapath;
mod fib;
mod ipam;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Tabby's side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per benchmark module; add yours with a one-line edit.
#[derive(Subcommand)]
enum Command {
    /// BGP convergence: tabby-bgpd, BIRD, FRR and GoBGP, bgperf-style.
    Bgp(bgp::BgpArgs),
    /// Routes into the kernel FIB: Tabby's reconciler, `ip -batch` and BIRD's kernel protocol.
    Fib(fib::FibArgs),
    /// IPAM: N Nodes join at once; time until every one has its block(s), API writes per node.
    Ipam(ipam::IpamArgs),
    /// Pod-to-pod throughput across two nodes: host-to-host veth and VXLAN as anchors.
    Datapath(datapath::DatapathArgs),
    /// CNI ADD/DEL latency, sequential and concurrent: Tabby's shim + agent vs `ptp` + `host-local`.
    Cni(cni::CniArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bgp(args) => bgp::run(args),
        Command::Fib(args) => fib::run(args),
        Command::Ipam(args) => ipam::run(args),
        Command::Datapath(args) => datapath::run(args),
        Command::Cni(args) => cni::run(args),
    }
}
