//! Command-line flags (each also read from the environment) and what they become.
//!
//! Owns the controller's settings and their defaults. Must not touch the API.

use std::net::SocketAddr;
use std::time::Duration;

use tabby_api::ipam::IpamConfig;

/// The IPAM controller: hands nodes blocks of pod addresses (`IPAMBlock`) from `IPPool`s.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "tabby-ipam-controller", version)]
pub struct Args {
    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "TABBY_LEASE_NAME",
        default_value = "tabby-ipam-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease.
    #[arg(long, env = "TABBY_LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds: a standby takes over at most this long after the leader dies.
    #[arg(long, env = "TABBY_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds before expiry at which the leader renews.
    #[arg(long, env = "TABBY_LEASE_GRACE", default_value_t = 5)]
    pub lease_grace: u64,
    /// A node gets another block when fewer than this percentage of a block's addresses are
    /// free (per family).
    #[arg(long, env = "TABBY_LOW_WATER_PERCENT", default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub low_water_percent: u8,
    /// Most blocks per node and family.
    #[arg(long, env = "TABBY_MAX_BLOCKS_PER_NODE", default_value_t = 20)]
    pub max_blocks_per_node: usize,
    /// Seconds a released address stays unusable.
    #[arg(long, env = "TABBY_COOLDOWN", default_value_t = 30)]
    pub cooldown: u64,
    /// Seconds an allocation's pod must be gone before the allocation is released (0 disables
    /// garbage collection).
    #[arg(long, env = "TABBY_GC_GRACE", default_value_t = 300)]
    pub gc_grace: u64,
    /// Seconds a block must have been empty before an exhausted pool takes it back.
    #[arg(long, env = "TABBY_RECLAIM_AFTER", default_value_t = 300)]
    pub reclaim_after: u64,
    /// Seconds between full passes when nothing changes.
    #[arg(long, env = "TABBY_RESYNC", default_value_t = 10)]
    pub resync: u64,
    /// Address serving `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "TABBY_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
}

impl Args {
    /// The IPAM tunables.
    pub fn ipam(&self) -> IpamConfig {
        IpamConfig {
            cooldown: Duration::from_secs(self.cooldown),
            low_water_percent: self.low_water_percent,
            max_blocks_per_node: self.max_blocks_per_node,
            reclaim_after: Duration::from_secs(self.reclaim_after),
            gc_grace: Duration::from_secs(self.gc_grace),
        }
    }

    /// This replica's identity: `--identity`/`POD_NAME`, else `HOSTNAME`, else a name made
    /// from the process id.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("tabby-ipam-controller-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = Args::try_parse_from(["x"]).unwrap();
        assert_eq!(a.ipam(), IpamConfig::default());
        assert_eq!(a.lease_namespace, "kube-system");
        let a =
            Args::try_parse_from(["x", "--gc-grace", "0", "--low-water-percent", "50"]).unwrap();
        assert!(a.ipam().gc_grace.is_zero());
        assert_eq!(a.ipam().low_water_percent, 50);
        assert!(Args::try_parse_from(["x", "--low-water-percent", "101"]).is_err());
    }
}
