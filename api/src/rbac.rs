//! The Kubernetes API calls each Tabby component makes, as data, so the chart's RBAC can be
//! audited against them.
//!
//! Owns the [`ApiCall`] type. Each component's list lives next to its client calls: the node
//! agent's in `tabby_agent::daemon::API_CALLS`, the IPAM controller's in
//! `tabby_ipam_controller::controller::API_CALLS`. Must not talk to the API or read the chart:
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

#[cfg(test)]
mod tests {
    use super::*;

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
