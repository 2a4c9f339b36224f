//! Speaker → kernel: the best-path stream turned into route reconciler updates.
//!
//! Owns the translation of one [`RouteUpdate`] (prefix, every ECMP next hop) into a
//! [`ReconcilerHandle::update`], and the bookkeeping of which prefixes this feed installed, so a
//! speaker that stops (restarted with new speaker-wide settings) takes its routes with it. Must
//! not touch netlink or the speaker's configuration.
//!
//! Next hops that are this node's own addresses are dropped: the speaker's Loc-RIB holds the
//! routes this node originates (its blocks, service ranges) with itself as next hop; the blocks
//! are blackholed by the reconciler and the rest is not for the kernel.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tabby_bgp::rib::Prefix;
use tabby_bgp::speaker::{RouteUpdate, Subscription};
use tokio::sync::watch;

use crate::routes::{NextHop, ReconcilerHandle};

/// This node's addresses, shared with the control loop (which learns them from the plan).
pub type LocalAddresses = Arc<RwLock<Vec<IpAddr>>>;

/// The prefix as the kernel model takes it; `None` for a length the family cannot have (the
/// speaker never produces one).
pub fn ipnet(prefix: &Prefix) -> Option<IpNet> {
    match prefix {
        Prefix::V4(p) => Ipv4Net::new(p.addr(), p.len()).ok().map(IpNet::V4),
        Prefix::V6(p) => Ipv6Net::new(p.addr(), p.len()).ok().map(IpNet::V6),
    }
}

/// The kernel next hops for one update: the speaker's, minus this node's own addresses.
pub fn kernel_hops(update: &RouteUpdate, local: &[IpAddr]) -> Vec<NextHop> {
    update
        .next_hops
        .iter()
        .filter(|h| !local.contains(h) && !h.is_unspecified())
        .map(|h| NextHop::via(*h))
        .collect()
}

/// Feeds `sub` into `routes` until the speaker stops; then withdraws every prefix it installed
/// (the next speaker, if any, brings its own). `last_batch` is stamped after each batch (the
/// restart logic waits for the stream to settle).
pub async fn feed(
    mut sub: Subscription,
    routes: ReconcilerHandle,
    local: LocalAddresses,
    last_batch: watch::Sender<Instant>,
) {
    let mut installed: HashSet<IpNet> = HashSet::new();
    while let Some(batch) = sub.next_batch().await {
        let local: Vec<IpAddr> = local.read().map(|l| l.clone()).unwrap_or_default();
        for u in &batch {
            let Some(net) = ipnet(&u.prefix) else {
                continue;
            };
            let hops = kernel_hops(u, &local);
            if hops.is_empty() {
                installed.remove(&net);
            } else {
                installed.insert(net);
            }
            if routes.update(net, hops).is_err() {
                tracing::warn!(
                    "the route reconciler stopped; best paths no longer reach the kernel"
                );
                return;
            }
        }
        tracing::debug!(changes = batch.len(), "best paths to the kernel");
        last_batch.send_replace(Instant::now());
    }
    for net in installed {
        if routes.update(net, Vec::new()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_bgp::wire::{Ipv4Prefix, Ipv6Prefix};

    fn v4(s: &str, len: u8) -> Prefix {
        Prefix::V4(Ipv4Prefix::new(s.parse().unwrap(), len).unwrap())
    }

    #[test]
    fn prefixes_convert_both_families() {
        assert_eq!(
            ipnet(&v4("10.244.1.0", 26)),
            Some("10.244.1.0/26".parse().unwrap())
        );
        let p6 = Prefix::V6(Ipv6Prefix::new("fd00:1::".parse().unwrap(), 122).unwrap());
        assert_eq!(ipnet(&p6), Some("fd00:1::/122".parse().unwrap()));
    }

    #[test]
    fn own_addresses_are_not_kernel_next_hops() {
        let u = RouteUpdate {
            prefix: v4("10.244.1.0", 26),
            next_hops: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        };
        let local: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(
            kernel_hops(&u, &local),
            vec![NextHop::via("10.0.0.2".parse().unwrap())]
        );
        // Only our own address: nothing for the kernel (an originated route).
        assert!(
            kernel_hops(
                &u,
                &["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]
            )
            .is_empty()
        );
        // Withdrawn.
        let gone = RouteUpdate {
            prefix: v4("10.244.1.0", 26),
            next_hops: vec![],
        };
        assert!(kernel_hops(&gone, &local).is_empty());
    }
}
