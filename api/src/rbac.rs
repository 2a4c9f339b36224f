//! The Kubernetes API calls each Tabby component makes, as data, so the chart's RBAC can be
//! audited against them.
//!
//! Owns the [`ApiCall`] type and the node agent's list ([`AGENT_API_CALLS`], declared here from
//! the design until the agent's client code lands and the list moves next to it). The IPAM
//! controller's list lives next to its client calls
//! (`tabby_ipam_controller::controller::API_CALLS`). Must not talk to the API or read the chart:
//! the audit test (`e2e/chart`) renders the chart and checks that each component's roles allow
//! exactly its list — nothing missing, nothing extra.

use std::fmt;

/// An RBAC verb (the request verbs of the Kubernetes authorizer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Read one object by name.
    Get,
    /// Read a collection.
    List,
    /// Stream changes to a collection.
    Watch,
    /// POST a new object.
    Create,
    /// PUT a whole object (or a subresource).
    Update,
    /// PATCH an object.
    Patch,
    /// DELETE one object.
    Delete,
}

impl Verb {
    /// Every verb, in RBAC spelling order.
    pub const ALL: [Verb; 7] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::Patch,
        Verb::Delete,
    ];

    /// The verb as RBAC rules spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// Parses an RBAC verb; `None` for verbs Tabby never declares (`*`, `deletecollection`, …).
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the objects a call touches live, and so which kind of role must allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Cluster-scoped objects, or namespaced objects in any namespace: a ClusterRole bound
    /// with a ClusterRoleBinding.
    Cluster,
    /// Objects in the component's own namespace (the Helm release namespace): a Role there.
    OwnNamespace,
}

/// One kind of request a component sends to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// Request verb.
    pub verb: Verb,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural, lower case).
    pub resource: &'static str,
    /// Subresource such as `status`.
    pub subresource: Option<&'static str>,
    /// Which role must allow it.
    pub scope: Scope,
    /// Why the component makes this call (shown in audit failures).
    pub why: &'static str,
}

impl ApiCall {
    /// The RBAC resource string: `resource` or `resource/subresource`.
    pub fn rbac_resource(&self) -> String {
        match self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.to_string(),
        }
    }

    /// The part RBAC compares: verb, group, resource/subresource and scope.
    pub fn key(&self) -> (Scope, &'static str, String, Verb) {
        (self.scope, self.group, self.rbac_resource(), self.verb)
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        let scope = match self.scope {
            Scope::Cluster => "cluster",
            Scope::OwnNamespace => "own namespace",
        };
        write!(
            f,
            "{} {}/{} ({scope})",
            self.verb,
            group,
            self.rbac_resource()
        )
    }
}

/// The group of Tabby's CRDs.
pub const TABBY_GROUP: &str = "tabby.dev";

impl ApiCall {
    /// A call, for the `const` tables.
    pub const fn new(
        verb: Verb,
        group: &'static str,
        resource: &'static str,
        subresource: Option<&'static str>,
        scope: Scope,
        why: &'static str,
    ) -> ApiCall {
        ApiCall {
            verb,
            group,
            resource,
            subresource,
            scope,
            why,
        }
    }
}

/// Every call the node agent makes (design: `docs/architecture.md`, `/work/shared/design.md`).
///
/// Declared here ahead of the agent binary; when the agent's client code lands, this list
/// moves next to those calls and the chart audit follows it.
#[rustfmt::skip]
pub const AGENT_API_CALLS: &[ApiCall] = {
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
        c(Get,    "", "pods",  None, Cluster, "CNI ADD: the pod's uid and pool annotation, recorded with the allocation"),
        c(List,   G, "ippools", None, Cluster, "natOutgoing and disableBGPExport of the pools its blocks come from"),
        c(Watch,  G, "ippools", None, Cluster, "pool changes"),
        c(Get,    G, "ipamblocks", None, Cluster, "fresh read before a compare-and-swap allocation"),
        c(List,   G, "ipamblocks", None, Cluster, "its blocks (to announce) and every block (to route)"),
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
    fn verbs_round_trip_and_unknown_ones_are_refused() {
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
        for bad in ["*", "deletecollection", "escalate", "GET", ""] {
            assert_eq!(Verb::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn agent_calls_are_unique_and_explained() {
        let keys: BTreeSet<_> = AGENT_API_CALLS.iter().map(ApiCall::key).collect();
        assert_eq!(
            keys.len(),
            AGENT_API_CALLS.len(),
            "duplicate agent API call"
        );
        assert!(AGENT_API_CALLS.iter().all(|c| !c.why.is_empty()));
        // Least privilege: the agent never deletes, and reads Secrets only in its namespace.
        assert!(AGENT_API_CALLS.iter().all(|c| c.verb != Verb::Delete));
        assert!(
            AGENT_API_CALLS
                .iter()
                .filter(|c| c.resource == "secrets")
                .all(|c| c.scope == Scope::OwnNamespace)
        );
    }

    #[test]
    fn display_names_group_resource_and_scope() {
        let c = ApiCall::new(
            Verb::Update,
            TABBY_GROUP,
            "ipamblocks",
            Some("status"),
            Scope::Cluster,
            "x",
        );
        assert_eq!(
            c.to_string(),
            "update tabby.dev/ipamblocks/status (cluster)"
        );
        let c = ApiCall::new(Verb::Get, "", "secrets", None, Scope::OwnNamespace, "x");
        assert_eq!(c.to_string(), "get core/secrets (own namespace)");
    }
}
