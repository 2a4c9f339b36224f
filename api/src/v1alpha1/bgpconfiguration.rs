//! `BGPConfiguration`: the cluster-wide BGP settings, a singleton named `default`.
//!
//! Owns the schema, defaults and Rust-side validation. Must not open sessions or read peers.

use ipnet::IpNet;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::validation::{Errors, FieldError};

/// The only allowed name of the BGPConfiguration object.
pub const SINGLETON_NAME: &str = "default";
/// Private AS used when none is configured (RFC 6996 §5).
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// AS_TRANS (RFC 6793 §9): reserved, never a real AS.
pub const AS_TRANS: u32 = 23456;

fn default_as_number() -> u32 {
    DEFAULT_AS_NUMBER
}
fn default_true() -> bool {
    true
}
fn default_listen_port() -> u16 {
    179
}
fn default_hold_time() -> u16 {
    90
}
fn default_keepalive_time() -> u16 {
    30
}
fn default_graceful_restart_time() -> u16 {
    120
}

/// Cluster-wide BGP settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tabby.dev",
    version = "v1alpha1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    shortname = "bgpconfig",
    category = "tabby",
    derive = "PartialEq",
    doc = "Cluster-wide BGP settings; a singleton named `default`.",
    printcolumn(name = "AS", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(name = "Mesh", type_ = "boolean", json_path = ".spec.nodeToNodeMeshEnabled"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.listenPort"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name == 'default'")
        .message("there is one BGPConfiguration and it must be named 'default'")
        .field_path(".metadata.name")
)]
#[x_kube(
    validation = Rule::new("self.holdTime == 0 || self.keepaliveTime < self.holdTime")
        .message("keepaliveTime must be less than holdTime (RFC 4271 §4.4)")
        .field_path(".keepaliveTime"),
    validation = Rule::new("self.holdTime != 0 || self.keepaliveTime == 0")
        .message("keepaliveTime must be 0 when holdTime is 0 (RFC 4271 §4.4)")
        .field_path(".keepaliveTime")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// The cluster's AS number (4-octet, RFC 6793); nodes use it unless told otherwise.
    #[serde(default = "default_as_number")]
    #[x_kube(validation = Rule::new("self != 0 && self != 23456").message("AS 0 and AS_TRANS (23456) are reserved (RFC 7607, RFC 6793)"))]
    pub as_number: u32,
    /// Every node peers with every other node (iBGP full mesh).
    #[serde(default = "default_true")]
    pub node_to_node_mesh_enabled: bool,
    /// TCP port the agents listen on.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1))]
    pub listen_port: u16,
    /// BGP hold time in seconds: 0 (no keepalives) or at least 3 (RFC 4271 §4.2).
    #[serde(default = "default_hold_time")]
    #[x_kube(validation = Rule::new("self == 0 || self >= 3").message("must be 0 or at least 3 seconds (RFC 4271 §4.2)"))]
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; customarily a third of the hold time (RFC 4271 §10).
    #[serde(default = "default_keepalive_time")]
    pub keepalive_time: u16,
    /// Graceful-restart time advertised to peers, in seconds (RFC 4724 §3: 12 bits).
    #[serde(default = "default_graceful_restart_time")]
    #[schemars(range(max = 4095))]
    pub graceful_restart_time: u16,
    /// Service cluster IP ranges every node announces.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 16))]
    pub service_cluster_ips: Vec<ServiceCidr>,
    /// Service external IP ranges every node announces.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 64))]
    pub service_external_ips: Vec<ServiceCidr>,
    /// Service LoadBalancer IP ranges every node announces.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 64))]
    pub service_load_balancer_ips: Vec<ServiceCidr>,
    /// Named communities, usable by name in `prefixAdvertisements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub communities: Vec<Community>,
    /// Communities attached to the announcement of matching prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
}

/// A CIDR announced for services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCidr {
    /// The range, e.g. `10.96.0.0/12`.
    #[x_kube(validation = Rule::new("isCIDR(self)").message("must be a CIDR such as 10.96.0.0/12"))]
    #[schemars(length(max = 43))]
    pub cidr: String,
}

/// A named BGP community: standard `aa:nn` (RFC 1997) or large `aa:nn:mm` (RFC 8092).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Community {
    /// Name used in `prefixAdvertisements`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// `aa:nn` with 16-bit parts, or `aa:nn:mm` with 32-bit parts.
    #[schemars(regex(pattern = r"^(\d+:\d+|\d+:\d+:\d+)$"))]
    pub value: String,
}

/// Communities to attach to a prefix's announcement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrefixAdvertisement {
    /// The prefix (a pool, a block or a service range).
    #[x_kube(validation = Rule::new("isCIDR(self)").message("must be a CIDR"))]
    #[schemars(length(max = 43))]
    pub cidr: String,
    /// Community names from `communities`, or literal `aa:nn` / `aa:nn:mm` values.
    #[schemars(length(max = 32))]
    pub communities: Vec<String>,
}

/// A parsed community value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommunityValue {
    /// RFC 1997 community: 16-bit AS, 16-bit value.
    Standard(u16, u16),
    /// RFC 8092 large community: global administrator and two local data parts.
    Large(u32, u32, u32),
}

impl CommunityValue {
    /// Parses `aa:nn` or `aa:nn:mm`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, n] => Some(Self::Standard(a.parse().ok()?, n.parse().ok()?)),
            [a, n, m] => Some(Self::Large(
                a.parse().ok()?,
                n.parse().ok()?,
                m.parse().ok()?,
            )),
            _ => None,
        }
    }
}

impl BGPConfigurationSpec {
    /// Validates the spec; errors name the field path and what is wrong.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        if self.as_number == 0 || self.as_number == AS_TRANS {
            errors.push(
                "spec.asNumber",
                format!("{} is reserved (RFC 7607, RFC 6793)", self.as_number),
            );
        }
        if self.listen_port == 0 {
            errors.push("spec.listenPort", "must be 1-65535");
        }
        if self.hold_time != 0 && self.hold_time < 3 {
            errors.push(
                "spec.holdTime",
                format!(
                    "{} must be 0 or at least 3 seconds (RFC 4271 §4.2)",
                    self.hold_time
                ),
            );
        }
        if self.hold_time == 0 && self.keepalive_time != 0 {
            errors.push("spec.keepaliveTime", "must be 0 when holdTime is 0");
        }
        if self.hold_time != 0 && self.keepalive_time >= self.hold_time {
            errors.push(
                "spec.keepaliveTime",
                format!(
                    "{} must be less than holdTime {}",
                    self.keepalive_time, self.hold_time
                ),
            );
        }
        if self.graceful_restart_time > 4095 {
            errors.push(
                "spec.gracefulRestartTime",
                format!(
                    "{} does not fit the 12-bit field (RFC 4724 §3)",
                    self.graceful_restart_time
                ),
            );
        }
        for (field, list) in [
            ("serviceClusterIPs", &self.service_cluster_ips),
            ("serviceExternalIPs", &self.service_external_ips),
            ("serviceLoadBalancerIPs", &self.service_load_balancer_ips),
        ] {
            for (i, s) in list.iter().enumerate() {
                if s.cidr.parse::<IpNet>().is_err() {
                    errors.push(
                        format!("spec.{field}[{i}].cidr"),
                        format!("{:?} is not a CIDR", s.cidr),
                    );
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.communities.iter().enumerate() {
            if c.name.is_empty() {
                errors.push(format!("spec.communities[{i}].name"), "must not be empty");
            } else if !names.insert(c.name.as_str()) {
                errors.push(
                    format!("spec.communities[{i}].name"),
                    format!("{:?} is defined twice", c.name),
                );
            }
            if CommunityValue::parse(&c.value).is_none() {
                errors.push(
                    format!("spec.communities[{i}].value"),
                    format!(
                        "{:?} is not aa:nn (16-bit parts) or aa:nn:mm (32-bit parts)",
                        c.value
                    ),
                );
            }
        }
        for (i, p) in self.prefix_advertisements.iter().enumerate() {
            if p.cidr.parse::<IpNet>().is_err() {
                errors.push(
                    format!("spec.prefixAdvertisements[{i}].cidr"),
                    format!("{:?} is not a CIDR", p.cidr),
                );
            }
            for (j, c) in p.communities.iter().enumerate() {
                if !names.contains(c.as_str()) && CommunityValue::parse(c).is_none() {
                    errors.push(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!("{c:?} is neither a community name from spec.communities nor a community value"),
                    );
                }
            }
        }
        errors.finish()
    }
}

impl Default for BGPConfigurationSpec {
    fn default() -> Self {
        Self {
            as_number: DEFAULT_AS_NUMBER,
            node_to_node_mesh_enabled: true,
            listen_port: default_listen_port(),
            hold_time: default_hold_time(),
            keepalive_time: default_keepalive_time(),
            graceful_restart_time: default_graceful_restart_time(),
            service_cluster_ips: Vec::new(),
            service_external_ips: Vec::new(),
            service_load_balancer_ips: Vec::new(),
            communities: Vec::new(),
            prefix_advertisements: Vec::new(),
        }
    }
}

impl BGPConfiguration {
    /// Validates the object read from the API (singleton name and spec).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        if self.metadata.name.as_deref() != Some(SINGLETON_NAME) {
            errors.push(
                "metadata.name",
                format!(
                    "{:?}: the BGPConfiguration must be named {SINGLETON_NAME:?}",
                    self.metadata.name.as_deref().unwrap_or_default()
                ),
            );
        }
        if let Err(e) = self.spec.validate() {
            errors.extend(e);
        }
        errors.finish()
    }
}
