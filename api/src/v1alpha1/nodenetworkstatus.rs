//! `NodeNetworkStatus`: one per node, written by that node's agent, answering "is my node's
//! networking healthy" with `kubectl get nodenetworkstatus`.
//!
//! Owns the schema and Rust-side validation. Must not compute health (the agent does).

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::validation::{Errors, FieldError};

/// Which node this status describes; the object is named after the node.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tabby.dev",
    version = "v1alpha1",
    kind = "NodeNetworkStatus",
    plural = "nodenetworkstatuses",
    shortname = "nns",
    category = "tabby",
    status = "NodeNetworkStatusStatus",
    derive = "PartialEq",
    doc = "Health of one node's pod networking, written by its agent.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Established", type_ = "integer", json_path = ".status.sessionsEstablished"),
    printcolumn(name = "Sessions", type_ = "integer", json_path = ".status.sessionsTotal"),
    printcolumn(name = "Routes", type_ = "integer", json_path = ".status.routesProgrammed"),
    printcolumn(name = "Blocks", type_ = "integer", json_path = ".status.blockCount"),
    printcolumn(name = "Last Error", type_ = "string", json_path = ".status.lastError"),
    printcolumn(name = "Updated", type_ = "date", json_path = ".status.updateTime"),
    validation = Rule::new("self.metadata.name == self.spec.node")
        .message("the object must be named after its node")
        .field_path(".spec.node")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkStatusSpec {
    /// The node; immutable, and equal to the object's name.
    #[x_kube(validation = Rule::new("self == oldSelf").message("node is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
}

/// What the agent observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.sessionsEstablished <= self.sessionsTotal")
        .message("sessionsEstablished cannot exceed sessionsTotal")
)]
pub struct NodeNetworkStatusStatus {
    /// `Ready`: BGP sessions up, routes programmed, blocks announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Sessions in state Established.
    #[serde(default)]
    pub sessions_established: u32,
    /// Sessions configured.
    #[serde(default)]
    pub sessions_total: u32,
    /// Kernel routes the agent has programmed for other nodes' blocks.
    #[serde(default)]
    pub routes_programmed: u32,
    /// Number of IPAM blocks affine to this node.
    #[serde(default)]
    pub block_count: u32,
    /// One entry per BGP session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["peerIP".into()]))]
    #[schemars(length(max = 4096))]
    pub sessions: Vec<BGPSessionStatus>,
    /// Names of the IPAMBlocks this node announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub blocks: Vec<String>,
    /// The most recent error, cleared when the condition it caused is resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
    /// When `lastError` happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<Time>,
    /// When the agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
}

/// One BGP session as the agent sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatus {
    /// The peer's address.
    #[serde(rename = "peerIP")]
    #[schemars(length(max = 45))]
    pub peer_ip: String,
    /// The peer's AS.
    #[serde(rename = "peerAS")]
    pub peer_as: u32,
    /// Why the session exists.
    pub peer_type: PeerType,
    /// RFC 4271 §8.2.2 state.
    pub state: SessionState,
    /// When the session entered its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Prefixes received from the peer.
    #[serde(default)]
    pub prefixes_received: u32,
    /// Prefixes received and accepted by the import filters.
    #[serde(default)]
    pub prefixes_accepted: u32,
    /// Prefixes advertised to the peer.
    #[serde(default)]
    pub prefixes_advertised: u32,
    /// Last NOTIFICATION or connection error, e.g. `hold timer expired (RFC 4271 §6.5)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
}

/// Where a session comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PeerType {
    /// Node-to-node full mesh.
    NodeMesh,
    /// A BGPPeer for every node (an empty nodeSelector).
    GlobalPeer,
    /// A BGPPeer naming this node, or whose non-empty nodeSelector selects it.
    NodePeer,
}

/// BGP finite-state-machine state (RFC 4271 §8.2.2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SessionState {
    /// Idle.
    Idle,
    /// Connect.
    Connect,
    /// Active.
    Active,
    /// OpenSent.
    OpenSent,
    /// OpenConfirm.
    OpenConfirm,
    /// Established.
    Established,
}

/// Condition type on NodeNetworkStatus.
pub const CONDITION_READY: &str = "Ready";

impl NodeNetworkStatus {
    /// Validates the object read from the API.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        crate::validation::check_dns_subdomain(&mut errors, "metadata.name", name);
        if self.spec.node != name {
            errors.push(
                "spec.node",
                format!("{:?} differs from the object name {name:?}", self.spec.node),
            );
        }
        if let Some(status) = &self.status {
            if status.sessions_established > status.sessions_total {
                errors.push(
                    "status.sessionsEstablished",
                    format!(
                        "{} exceeds sessionsTotal {}",
                        status.sessions_established, status.sessions_total
                    ),
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, s) in status.sessions.iter().enumerate() {
                let p = format!("status.sessions[{i}].peerIP");
                match s.peer_ip.parse::<IpAddr>() {
                    Ok(ip) if !seen.insert(ip) => {
                        errors.push(p, format!("{ip} is listed twice"));
                    }
                    Ok(_) => {}
                    Err(_) => errors.push(p, format!("{:?} is not an IP address", s.peer_ip)),
                }
            }
        }
        errors.finish()
    }
}
