//! Object builders shared by the peering and export tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use tabby_agent::peering::{self, Plan, PlanInput};
use tabby_api::v1alpha1::{BGPConfiguration, BGPConfigurationSpec, BGPPeer, IPAMBlock, IPPool};

pub const NS: &str = "tabby-system";

/// A Node with InternalIP addresses, labels and annotations.
pub fn node(name: &str, addrs: &[&str], labels: &[(&str, &str)], ann: &[(&str, &str)]) -> Node {
    let map = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            annotations: map(ann),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(
                addrs
                    .iter()
                    .map(|a| NodeAddress {
                        address: a.to_string(),
                        type_: "InternalIP".into(),
                    })
                    .chain(std::iter::once(NodeAddress {
                        address: format!("{name}.example"),
                        type_: "Hostname".into(),
                    }))
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

/// A BGPPeer from its spec in JSON (the API's own field names).
pub fn bgppeer(name: &str, spec: Value) -> BGPPeer {
    serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "BGPPeer",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("BGPPeer fixture")
}

pub fn config(spec: Value) -> BGPConfiguration {
    let spec: BGPConfigurationSpec = serde_json::from_value(spec).expect("config fixture");
    BGPConfiguration::new("default", spec)
}

pub fn pool(name: &str, cidr: &str, disable_export: bool) -> IPPool {
    serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "disableBGPExport": disable_export},
    }))
    .expect("IPPool fixture")
}

pub fn block(cidr: &str, pool: &str, node: &str) -> IPAMBlock {
    serde_json::from_value(json!({
        "apiVersion": "tabby.dev/v1alpha1",
        "kind": "IPAMBlock",
        "metadata": {"name": cidr.replace(['.', '/', ':'], "-")},
        "spec": {"cidr": cidr, "pool": pool, "node": node},
    }))
    .expect("IPAMBlock fixture")
}

pub fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Everything a plan is computed from, owned, so tests can tweak one field.
#[derive(Clone, Default)]
pub struct World {
    pub nodes: Vec<Node>,
    pub config: Option<BGPConfiguration>,
    pub peers: Vec<BGPPeer>,
    pub secrets: Vec<Secret>,
    pub local_addresses: Option<Vec<IpAddr>>,
}

impl World {
    pub fn plan(&self, node_name: &str) -> Plan {
        self.try_plan(node_name).expect("plan")
    }

    pub fn try_plan(&self, node_name: &str) -> Result<Plan, peering::PlanError> {
        peering::plan(&PlanInput {
            node_name,
            nodes: &self.nodes,
            configuration: self.config.as_ref(),
            peers: &self.peers,
            secrets: &self.secrets,
            secret_namespace: NS,
            local_addresses: self.local_addresses.as_deref(),
        })
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// Three dual-stack nodes a < b < c by address.
pub fn three_nodes() -> Vec<Node> {
    vec![
        node("a", &["10.0.0.1", "fd00::1"], &[("rack", "r1")], &[]),
        node("b", &["10.0.0.2", "fd00::2"], &[("rack", "r1")], &[]),
        node("c", &["10.0.0.3", "fd00::3"], &[("rack", "r2")], &[]),
    ]
}
