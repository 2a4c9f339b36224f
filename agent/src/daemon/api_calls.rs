//! Every Kubernetes API call the node agent makes, as data, next to the code that makes them,
//! so the chart's RBAC is audited against it (`e2e/chart/tests/rbac.rs`: the rendered roles
//! must allow exactly this list).
//!
//! Owns the list only. Where each call is made: watches in [`super::watch`] (list + watch of
//! nodes, ippools, ipamblocks, bgpconfigurations, bgppeers, secrets), the address annotation in
//! [`super::control`] (patch nodes), allocations in [`crate::ipam`] (get/list/watch ipamblocks,
//! update their status, get pods), status and Events in `crate::status`.

use tabby_api::rbac::{ApiCall, Scope, TABBY_GROUP, Verb};

/// The agent's calls.
#[rustfmt::skip]
pub const API_CALLS: &[ApiCall] = {
    use Scope::{Cluster, OwnNamespace};
    use Verb::*;
    const G: &str = TABBY_GROUP;
    const E: &str = "events.k8s.io";
    const fn c(v: Verb, g: &'static str, r: &'static str, s: Option<&'static str>, sc: Scope, why: &'static str) -> ApiCall {
        ApiCall::new(v, g, r, s, sc, why)
    }
    &[
        c(Get,    "", "nodes", None, Cluster, "its own Node: addresses for the BGP router ID and next hop"),
        c(List,   "", "nodes", None, Cluster, "node-to-node mesh: every node's address and labels (peer/node selectors)"),
        c(Watch,  "", "nodes", None, Cluster, "node-to-node mesh: nodes joining and leaving"),
        c(Patch,  "", "nodes", None, Cluster, "address autodetection: writes tabby.dev/ipv4-address / ipv6-address on its own Node when it has no address of the family"),
        c(Get,    "", "pods",  None, Cluster, "CNI ADD: the pod's uid and pool annotation, recorded with the allocation"),
        c(List,   G, "ippools", None, Cluster, "natOutgoing and disableBGPExport of the pools its blocks come from"),
        c(Watch,  G, "ippools", None, Cluster, "pool changes"),
        c(Get,    G, "ipamblocks", None, Cluster, "fresh read before a compare-and-swap allocation"),
        c(List,   G, "ipamblocks", None, Cluster, "its blocks (spec.node field selector): blackholes, announcements, allocations"),
        c(Watch,  G, "ipamblocks", None, Cluster, "blocks assigned, moved or released"),
        c(Update, G, "ipamblocks", Some("status"), Cluster, "allocations: compare-and-swap on resourceVersion"),
        c(List,   G, "bgpconfigurations", None, Cluster, "AS number, mesh on/off, timers, service CIDRs"),
        c(Watch,  G, "bgpconfigurations", None, Cluster, "BGP configuration changes"),
        c(List,   G, "bgppeers", None, Cluster, "which sessions this node opens"),
        c(Watch,  G, "bgppeers", None, Cluster, "peer changes"),
        c(Get,    G, "nodenetworkstatuses", None, Cluster, "its own NodeNetworkStatus, read before writing"),
        c(Create, G, "nodenetworkstatuses", None, Cluster, "its own NodeNetworkStatus, on first start"),
        c(Update, G, "nodenetworkstatuses", None, Cluster, "owner reference to its Node (deleted with the Node)"),
        c(Update, G, "nodenetworkstatuses", Some("status"), Cluster, "sessions, routes, blocks, last error"),
        c(Create, E, "events", None, Cluster, "Events on its Node and on pods (e.g. pool exhausted)"),
        c(Patch,  E, "events", None, Cluster, "repeated Events (series count)"),
        c(Get,    "", "secrets", None, OwnNamespace, "BGP MD5 passwords (BGPPeer.spec.password) from Secrets in its namespace"),
        c(List,   "", "secrets", None, OwnNamespace, "reflector over the password Secrets"),
        c(Watch,  "", "secrets", None, OwnNamespace, "password changes re-key the sessions"),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn calls_are_unique_and_explained() {
        let keys: BTreeSet<_> = API_CALLS.iter().map(ApiCall::key).collect();
        assert_eq!(keys.len(), API_CALLS.len(), "duplicate agent API call");
        assert!(API_CALLS.iter().all(|c| !c.why.is_empty()));
        // Least privilege: the agent never deletes, and reads Secrets only in its namespace.
        assert!(API_CALLS.iter().all(|c| c.verb != Verb::Delete));
        assert!(
            API_CALLS
                .iter()
                .filter(|c| c.resource == "secrets")
                .all(|c| c.scope == Scope::OwnNamespace)
        );
    }
}
