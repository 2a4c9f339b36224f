//! `IPAMBlock`: one block of a pool, affine to one node.
//!
//! The controller writes the spec (which CIDR, from which pool, for which node); the node's
//! agent writes the status (which ordinals are allocated to which pod, which were released
//! recently and are cooling down). Owns the schema and Rust-side validation; the allocation
//! algorithm lives in `crate::ipam::block`.

use std::collections::BTreeSet;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::ipam::name::{block_capacity, block_name};
use crate::validation::{Errors, FieldError};

/// Largest number of addresses in a block (a /20 or a /116).
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// Desired state of a block: its range, its pool and its node. Written by the controller only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tabby.dev",
    version = "v1alpha1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    shortname = "ipb",
    category = "tabby",
    status = "IPAMBlockStatus",
    derive = "PartialEq",
    doc = "A block of pod addresses from one pool, affine to one node.",
    selectable = ".spec.node",
    selectable = ".spec.pool",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.node == oldSelf.spec.node || !has(self.status) || !has(self.status.allocations) || size(self.status.allocations) == 0")
        .message("spec.node can only change while the block has no allocations")
        .field_path(".spec.node")
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    /// The block's range; the object's name is derived from it (`10-244-0-64-26`). Immutable.
    #[x_kube(
        validation = Rule::new("isCIDR(self) && string(cidr(self).masked()) == self")
            .message("must be a CIDR in canonical form with no host bits set"),
        validation = Rule::new("!isCIDR(self) || (cidr(self).ip().family() == 4 ? (cidr(self).prefixLength() >= 20 && cidr(self).prefixLength() <= 32) : (cidr(self).prefixLength() >= 116 && cidr(self).prefixLength() <= 128))")
            .message("a block is a /20-/32 (IPv4) or a /116-/128 (IPv6)"),
        validation = Rule::new("self == oldSelf").message("cidr is immutable")
    )]
    #[schemars(length(max = 43))]
    pub cidr: String,
    /// Name of the IPPool the block was carved from. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("pool is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,
    /// Name of the Node the block is affine to: only that node's agent allocates from it.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
}

/// Allocations of a block, written by the owning node's agent only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockStatus {
    /// Allocated ordinals (address = block start + ordinal), one entry per ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["ordinal".into()]))]
    #[schemars(length(max = 4096))]
    pub allocations: Vec<Allocation>,
    /// Ordinals released recently; they are not handed out again until their cooldown ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["ordinal".into()]))]
    #[schemars(length(max = 4096))]
    pub released: Vec<ReleasedOrdinal>,
    /// When an allocation was last released (used to tell how long the block has been empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_release_time: Option<Time>,
}

/// One allocated address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Offset of the address from the block's first address.
    #[schemars(range(max = 4095))]
    pub ordinal: u32,
    /// Who holds the address: the container ID for pods (release by handle on CNI DEL).
    #[schemars(length(min = 1, max = 256))]
    pub handle: String,
    /// The pod the address belongs to, when the allocation is for a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodReference>,
    /// When the address was allocated.
    pub time: Time,
}

/// The pod an allocation belongs to; the garbage collector checks all three fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    /// Pod namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Pod name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Pod UID: a pod re-created under the same name is a different pod.
    #[schemars(length(min = 1, max = 128))]
    pub uid: String,
}

/// An ordinal in cooldown after release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedOrdinal {
    /// Offset of the released address from the block's first address.
    #[schemars(range(max = 4095))]
    pub ordinal: u32,
    /// When it was released; reusable once the cooldown has passed since then.
    pub time: Time,
}

impl IPAMBlockSpec {
    /// The parsed block CIDR, validated as a block (canonical, allowed prefix length).
    pub fn parsed_cidr(&self) -> Result<IpNet, FieldError> {
        let net: IpNet = self
            .cidr
            .parse()
            .map_err(|_| FieldError::new("spec.cidr", format!("{:?} is not a CIDR", self.cidr)))?;
        if net.trunc() != net {
            return Err(FieldError::new(
                "spec.cidr",
                format!("{} has host bits set", self.cidr),
            ));
        }
        let host_bits = net.max_prefix_len() - net.prefix_len();
        if host_bits > 12 {
            return Err(FieldError::new(
                "spec.cidr",
                format!(
                    "{} is larger than a block may be (at most {MAX_BLOCK_ADDRESSES} addresses)",
                    self.cidr
                ),
            ));
        }
        Ok(net)
    }
}

impl IPAMBlock {
    /// Validates the object read from the API: the name matches the CIDR, the spec parses, and
    /// the status is consistent (ordinals inside the block, no ordinal or handle twice, no
    /// ordinal both allocated and cooling down).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let cidr = match self.spec.parsed_cidr() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.extend(vec![e]);
                None
            }
        };
        if let Some(cidr) = cidr {
            let want = block_name(cidr);
            if name != want {
                errors.push(
                    "metadata.name",
                    format!("{name:?} does not match spec.cidr {cidr}: expected {want:?}"),
                );
            }
        }
        crate::validation::check_dns_subdomain(&mut errors, "spec.pool", &self.spec.pool);
        crate::validation::check_dns_subdomain(&mut errors, "spec.node", &self.spec.node);
        if let Some(status) = &self.status {
            let capacity = cidr.map(block_capacity);
            let mut ordinals = BTreeSet::new();
            let mut handles = BTreeSet::new();
            for (i, a) in status.allocations.iter().enumerate() {
                let p = format!("status.allocations[{i}]");
                if capacity.is_some_and(|c| u128::from(a.ordinal) >= c) {
                    errors.push(
                        format!("{p}.ordinal"),
                        format!("{} is outside the block", a.ordinal),
                    );
                }
                if !ordinals.insert(a.ordinal) {
                    errors.push(
                        format!("{p}.ordinal"),
                        format!("{} is allocated twice", a.ordinal),
                    );
                }
                if a.handle.is_empty() {
                    errors.push(format!("{p}.handle"), "must not be empty");
                } else if !handles.insert(a.handle.as_str()) {
                    errors.push(
                        format!("{p}.handle"),
                        format!("{:?} holds two addresses in one block", a.handle),
                    );
                }
                if let Some(pod) = &a.pod
                    && (pod.namespace.is_empty() || pod.name.is_empty() || pod.uid.is_empty())
                {
                    errors.push(
                        format!("{p}.pod"),
                        "namespace, name and uid must all be set",
                    );
                }
            }
            let mut released = BTreeSet::new();
            for (i, r) in status.released.iter().enumerate() {
                let p = format!("status.released[{i}].ordinal");
                if capacity.is_some_and(|c| u128::from(r.ordinal) >= c) {
                    errors.push(&p, format!("{} is outside the block", r.ordinal));
                }
                if ordinals.contains(&r.ordinal) {
                    errors.push(
                        &p,
                        format!("{} is both allocated and cooling down", r.ordinal),
                    );
                }
                if !released.insert(r.ordinal) {
                    errors.push(&p, format!("{} is listed twice", r.ordinal));
                }
            }
        }
        errors.finish()
    }
}
