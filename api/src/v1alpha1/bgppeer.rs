//! `BGPPeer`: a BGP session (or a set of sessions) some nodes open to a router or to other
//! nodes.
//!
//! Owns the schema, defaults, cross-field CEL rules and Rust-side validation, including the
//! import/export prefix filters' meaning. Must not open sessions.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::v1alpha1::bgpconfiguration::AS_TRANS;
use crate::validation::{Errors, FieldError};

/// Which nodes open sessions to which peers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tabby.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    shortname = "bgpp",
    category = "tabby",
    derive = "PartialEq",
    doc = "BGP sessions that selected nodes open to a router or to other nodes.",
    printcolumn(name = "Peer IP", type_ = "string", json_path = ".spec.peerIP"),
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "RR Client",
        type_ = "boolean",
        json_path = ".spec.routeReflectorClient"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.peerIP) != has(self.peerSelector)")
        .message("set exactly one of peerIP and peerSelector"),
    validation = Rule::new("has(self.node) != has(self.nodeSelector)")
        .message("set exactly one of node and nodeSelector (an empty nodeSelector selects every node)"),
    validation = Rule::new("!has(self.peerIP) || has(self.asNumber)")
        .message("asNumber is required with peerIP")
        .field_path(".asNumber")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// Address of the remote router.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("must be an IPv4 or IPv6 address"))]
    #[schemars(length(max = 45))]
    pub peer_ip: Option<String>,
    /// Peer with the nodes matching this selector (e.g. route reflectors) instead of an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<LabelSelector>,
    /// The peer's AS; for node peers, defaults to the cluster AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != 0 && self != 23456").message("AS 0 and AS_TRANS (23456) are reserved"))]
    pub as_number: Option<u32>,
    /// The one node that opens this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
    /// The nodes that open this session; `{}` selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// TCP MD5 password (RFC 2385), read from a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeyReference>,
    /// Which local address the session uses.
    #[serde(default)]
    pub source_address: SourceAddress,
    /// GTSM (RFC 5082): accept only packets at most this many hops away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub ttl_security: Option<u8>,
    /// Tear the session down when the peer sends more prefixes than this (RFC 4486 cease 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_prefixes: Option<u32>,
    /// Next hop of the routes sent to this peer.
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    /// Treat the peer as a route-reflector client (RFC 4456): this node reflects to it.
    #[serde(default)]
    pub route_reflector_client: bool,
    /// Session timers; unset fields take the BGPConfiguration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<BGPTimers>,
    /// Rules applied, in order, to routes received from the peer; the first match decides.
    /// Routes no rule matches are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub import_filters: Vec<PrefixFilterRule>,
    /// Rules applied, in order, to routes sent to the peer; the first match decides.
    /// Routes no rule matches are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub export_filters: Vec<PrefixFilterRule>,
}

/// Reference to one key of a Secret in the namespace the agent runs in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which local address a session uses.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum SourceAddress {
    /// Bind to the node's own address.
    #[default]
    UseNodeIP,
    /// Let the kernel pick the source address by route lookup.
    None,
}

/// Next hop of the routes sent to a peer.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum NextHopMode {
    /// RFC 4271 §5.1.3 defaults: self for eBGP, unchanged for iBGP.
    #[default]
    Auto,
    /// Always this node's address.
    #[serde(rename = "Self")]
    SelfAddress,
    /// Never change it (e.g. a route reflector passing routes through).
    Keep,
}

/// Session timers in seconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.holdTime) || !has(self.keepaliveTime) || (self.holdTime == 0 ? self.keepaliveTime == 0 : self.keepaliveTime < self.holdTime)")
        .message("keepaliveTime must be less than holdTime, and 0 when holdTime is 0 (RFC 4271 §4.4)")
)]
pub struct BGPTimers {
    /// Hold time: 0 or at least 3 (RFC 4271 §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 0 || self >= 3").message("must be 0 or at least 3 seconds (RFC 4271 §4.2)"))]
    pub hold_time: Option<u16>,
    /// Keepalive interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<u16>,
    /// ConnectRetryTimer (RFC 4271 §10, suggested 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub connect_retry_time: Option<u16>,
}

/// A prefix-list entry: matches routes inside `cidr` whose prefix length is within `ge`..`le`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!isCIDR(self.cidr) || !has(self.ge) || self.ge >= cidr(self.cidr).prefixLength()")
        .message("ge must be at least the cidr's prefix length")
        .field_path(".ge"),
    validation = Rule::new("!isCIDR(self.cidr) || !has(self.le) || self.le >= (has(self.ge) ? self.ge : cidr(self.cidr).prefixLength())")
        .message("le must be at least ge and the cidr's prefix length")
        .field_path(".le"),
    validation = Rule::new("!isCIDR(self.cidr) || cidr(self.cidr).ip().family() == 6 || ((!has(self.ge) || self.ge <= 32) && (!has(self.le) || self.le <= 32))")
        .message("ge and le are at most 32 for an IPv4 cidr")
)]
pub struct PrefixFilterRule {
    /// The covering prefix.
    #[x_kube(validation = Rule::new("isCIDR(self) && string(cidr(self).masked()) == self").message("must be a CIDR with no host bits set"))]
    #[schemars(length(max = 43))]
    pub cidr: String,
    /// Shortest prefix length matched (default: the cidr's own length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 128))]
    pub ge: Option<u8>,
    /// Longest prefix length matched (default: `ge` if set, else the cidr's own length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 128))]
    pub le: Option<u8>,
    /// What to do with a matching route.
    pub action: FilterAction,
}

/// Outcome of a matching filter rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum FilterAction {
    /// Keep the route.
    Accept,
    /// Drop the route.
    Reject,
}

/// A validated prefix-filter rule, ready to match routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    /// The covering prefix.
    pub cidr: IpNet,
    /// Shortest matched length.
    pub ge: u8,
    /// Longest matched length.
    pub le: u8,
    /// Outcome on match.
    pub action: FilterAction,
}

impl PrefixMatch {
    /// Whether `route` is inside `cidr` with a prefix length in `ge..=le`.
    pub fn matches(&self, route: &IpNet) -> bool {
        self.cidr.contains(route) && (self.ge..=self.le).contains(&route.prefix_len())
    }
}

impl PrefixFilterRule {
    /// Parses the rule; the error names the field under `path` (e.g. `spec.importFilters[2]`).
    pub fn parse(&self, path: &str) -> Result<PrefixMatch, Vec<FieldError>> {
        let cidr = match self.cidr.parse::<IpNet>() {
            Ok(c) if c.trunc() == c => c,
            Ok(c) => {
                return Err(vec![FieldError::new(
                    format!("{path}.cidr"),
                    format!(
                        "{} has host bits set; did you mean {}?",
                        self.cidr,
                        c.trunc()
                    ),
                )]);
            }
            Err(_) => {
                return Err(vec![FieldError::new(
                    format!("{path}.cidr"),
                    format!("{:?} is not a CIDR", self.cidr),
                )]);
            }
        };
        let mut errors = Errors::default();
        let ge = self.ge.unwrap_or(cidr.prefix_len());
        let le = self.le.unwrap_or(ge);
        if ge < cidr.prefix_len() || ge > cidr.max_prefix_len() {
            errors.push(
                format!("{path}.ge"),
                format!(
                    "{ge} is outside {}-{}",
                    cidr.prefix_len(),
                    cidr.max_prefix_len()
                ),
            );
        }
        if le < ge || le > cidr.max_prefix_len() {
            errors.push(
                format!("{path}.le"),
                format!("{le} is outside {ge}-{}", cidr.max_prefix_len()),
            );
        }
        errors.finish().map(|()| PrefixMatch {
            cidr,
            ge,
            le,
            action: self.action,
        })
    }
}

/// Applies `rules` in order to `route`: the first matching rule decides, and a route no rule
/// matches is accepted.
pub fn filter(rules: &[PrefixMatch], route: &IpNet) -> FilterAction {
    rules
        .iter()
        .find(|r| r.matches(route))
        .map_or(FilterAction::Accept, |r| r.action)
}

impl BGPPeerSpec {
    /// Validates the spec; errors name the field path and what is wrong.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push("spec", "set exactly one of peerIP and peerSelector");
            }
            _ => {}
        }
        if let Some(ip) = &self.peer_ip
            && ip.parse::<IpAddr>().is_err()
        {
            errors.push("spec.peerIP", format!("{ip:?} is not an IP address"));
        }
        if self.peer_ip.is_some() && self.as_number.is_none() {
            errors.push("spec.asNumber", "is required with peerIP");
        }
        if let Some(asn) = self.as_number
            && (asn == 0 || asn == AS_TRANS)
        {
            errors.push("spec.asNumber", format!("{asn} is reserved"));
        }
        if let Err(e) = Selector::parse_optional(self.peer_selector.as_ref(), "spec.peerSelector") {
            errors.extend(e);
        }
        match (&self.node, &self.node_selector) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push("spec", "set exactly one of node and nodeSelector");
            }
            _ => {}
        }
        if let Some(node) = &self.node {
            crate::validation::check_dns_subdomain(&mut errors, "spec.node", node);
        }
        if let Err(e) = Selector::parse_optional(self.node_selector.as_ref(), "spec.nodeSelector") {
            errors.extend(e);
        }
        if let Some(p) = &self.password {
            crate::validation::check_dns_subdomain(&mut errors, "spec.password.name", &p.name);
            if p.key.is_empty() {
                errors.push("spec.password.key", "must not be empty");
            }
        }
        if self.ttl_security == Some(0) {
            errors.push("spec.ttlSecurity", "must be 1-255 hops");
        }
        if self.max_prefixes == Some(0) {
            errors.push("spec.maxPrefixes", "must be at least 1");
        }
        if let Some(t) = &self.timers {
            if let Some(h) = t.hold_time
                && h != 0
                && h < 3
            {
                errors.push(
                    "spec.timers.holdTime",
                    format!("{h} must be 0 or at least 3"),
                );
            }
            if let (Some(h), Some(k)) = (t.hold_time, t.keepalive_time)
                && ((h == 0 && k != 0) || (h != 0 && k >= h))
            {
                errors.push(
                    "spec.timers.keepaliveTime",
                    format!("{k} must be less than holdTime {h} (0 when holdTime is 0)"),
                );
            }
            if t.connect_retry_time == Some(0) {
                errors.push("spec.timers.connectRetryTime", "must be at least 1 second");
            }
        }
        for (field, rules) in [
            ("importFilters", &self.import_filters),
            ("exportFilters", &self.export_filters),
        ] {
            for (i, r) in rules.iter().enumerate() {
                if let Err(e) = r.parse(&format!("spec.{field}[{i}]")) {
                    errors.extend(e);
                }
            }
        }
        errors.finish()
    }
}

impl BGPPeer {
    /// Validates the object read from the API (name and spec).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        crate::validation::name_and_spec(self.metadata.name.as_deref(), self.spec.validate())
    }
}
