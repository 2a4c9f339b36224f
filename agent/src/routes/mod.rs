//! Kernel routes: the node's routing table made to match what BGP, IPAM and the CNI want.
//!
//! - [`model`]: desired state (own blocks → blackholes, BGP best paths → unicast/ECMP, pod host
//!   routes) and actual state (the kernel's routes of our protocol).
//! - [`diff`]: the pure diff from the two to add / replace / delete operations.
//! - [`netlink`]: the rtnetlink edge: batched requests, dumps, notifications.
//! - [`reconciler`]: the loop the agent drives, with its metrics.
//!
//! Owns: every kernel route carrying [`TABBY_RT_PROTO`], and nothing else. Must not touch:
//! routes of any other protocol (never written, never deleted, never replaced), links, addresses.
//! Exiting never flushes our routes: the next agent adopts them.

pub mod diff;
pub mod model;
pub mod netlink;
pub mod reconciler;

pub use diff::{Op, Placement, Plan, Scope, plan};
pub use model::{Actual, Desired, KernelRoute, ModelError, NextHop, RouteKey, Target};
pub use netlink::{NetlinkError, Outcome, RouteMonitor, RouteSocket};
pub use reconciler::{
    Command, Config, Metrics, ReconcileReport, Reconciler, ReconcilerHandle, Status,
};

/// The route protocol number (`rtm_protocol`) on every route Tabby writes, and the only routes
/// it ever modifies or deletes. 84 is ASCII `T`. It is free in the kernel's `RTPROT_*` list
/// (`include/uapi/linux/rtnetlink.h`: 0–4, 8–18, 42, 99, 186–189, 192), in iproute2's
/// `rt_protos`, and outside FRR's block (186–197, `rt_protos.d/frr.conf`).
pub const TABBY_RT_PROTO: u8 = 84;

/// Name shown by `ip route` once [`RT_PROTOS_CONF`] is installed.
pub const TABBY_RT_PROTO_NAME: &str = "tabby";

/// Content of `/etc/iproute2/rt_protos.d/tabby.conf`, which the chart installs so `ip route`
/// prints `proto tabby` instead of `proto 84`.
pub const RT_PROTOS_CONF: &str =
    "# Routes programmed by the Tabby node agent (tabby.dev).\n84\ttabby\n";

/// Routing table Tabby writes to by default: `main`.
pub const DEFAULT_TABLE: u32 = 254;

/// Metric (`RTA_PRIORITY`) of Tabby's routes by default. Distinct from the usual metrics of other
/// sources on the same prefix — 0 (static IPv4), 1024 (IPv6 default), 20 (FRR), 32 (BIRD) — so
/// a foreign route for the same prefix normally sits beside ours instead of on our key; a lower
/// metric wins, so an administrator's static route still overrides Tabby.
pub const DEFAULT_METRIC: u32 = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rt_protos_conf_names_our_number() {
        let line = RT_PROTOS_CONF
            .lines()
            .find(|l| !l.starts_with('#'))
            .unwrap();
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some(TABBY_RT_PROTO.to_string().as_str()));
        assert_eq!(f.next(), Some(TABBY_RT_PROTO_NAME));
    }

    /// The number must not collide with a protocol registered on this machine (iproute2's list
    /// and every `rt_protos.d` file), when those files exist.
    #[test]
    fn protocol_number_is_not_registered_by_others() {
        let mut files = vec![
            std::path::PathBuf::from("/etc/iproute2/rt_protos"),
            std::path::PathBuf::from("/usr/share/iproute2/rt_protos"),
        ];
        for dir in [
            "/etc/iproute2/rt_protos.d",
            "/usr/share/iproute2/rt_protos.d",
        ] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        let mut checked = 0;
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            checked += 1;
            for line in text.lines() {
                let mut fields = line.split_whitespace();
                if let (Some(n), Some(name)) = (fields.next(), fields.next())
                    && n.parse::<u8>() == Ok(TABBY_RT_PROTO)
                {
                    assert_eq!(name, TABBY_RT_PROTO_NAME, "{f:?} registers {n} as {name}");
                }
            }
        }
        if checked == 0 {
            eprintln!("SKIP: no rt_protos files on this machine");
        }
    }
}
