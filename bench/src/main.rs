//! `tabby-bench`: side-by-side benchmarks, one subcommand per benchmark, each in its own module
//! (`bgp`, `ipam`, `fib`, …). Every benchmark runs Tabby and its anchors in the same run and reports
//! min / median / max; see `docs/benchmarks.md`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Tabby's side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per benchmark module; add yours with a one-line edit.
#[derive(Subcommand)]
enum Command {}

// The first benchmark variant removes this allow: an empty enum makes `main` uninhabited.
#[allow(unreachable_code)]
fn main() -> anyhow::Result<()> {
    match Cli::parse().command {}
}
