//! `IPPool`: a range of pod addresses the controller carves into per-node blocks.
//!
//! Owns the IPPool schema (defaults, ranges, immutability and cross-field CEL rules) and its
//! Rust-side validation. Must not decide which node gets which block (that is `crate::ipam`).

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::validation::FieldError;

/// Default block prefix length for IPv4 pools (64 addresses per block).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix length for IPv6 pools (64 addresses per block).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// Allowed IPv4 block prefix lengths: at most 4096 addresses per block.
pub const BLOCK_SIZE_RANGE_V4: std::ops::RangeInclusive<u8> = 20..=32;
/// Allowed IPv6 block prefix lengths: at most 4096 addresses per block.
pub const BLOCK_SIZE_RANGE_V6: std::ops::RangeInclusive<u8> = 116..=128;

/// Desired state of an IP pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tabby.dev",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    shortname = "ipp",
    category = "tabby",
    status = "IPPoolStatus",
    derive = "PartialEq",
    doc = "A range of pod addresses, handed to nodes in blocks.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(
        name = "Block Size",
        type_ = "integer",
        json_path = ".status.blockSize"
    ),
    printcolumn(
        name = "Blocks",
        type_ = "integer",
        json_path = ".status.blocksAssigned"
    ),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.addressesUsed"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.addressesFree"),
    printcolumn(
        name = "Allocatable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Allocatable\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Allocatable\")].reason"
    ),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!isCIDR(self.cidr) || !has(self.blockSize) || (cidr(self.cidr).ip().family() == 4 ? (self.blockSize >= 20 && self.blockSize <= 32) : (self.blockSize >= 116 && self.blockSize <= 128))")
        .message("blockSize must be 20-32 for an IPv4 cidr and 116-128 for an IPv6 cidr")
        .field_path(".blockSize"),
    validation = Rule::new("!isCIDR(self.cidr) || !has(self.blockSize) || cidr(self.cidr).prefixLength() <= self.blockSize")
        .message("blockSize must not be shorter than the cidr's prefix length")
        .field_path(".blockSize"),
    validation = Rule::new("has(self.blockSize) == has(oldSelf.blockSize) && (!has(self.blockSize) || self.blockSize == oldSelf.blockSize)")
        .message("blockSize is immutable")
        .field_path(".blockSize")
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The pool's range, e.g. `10.244.0.0/16` or `fd00:10::/48`, with no host bits set.
    /// Immutable.
    #[x_kube(
        validation = Rule::new("isCIDR(self) && string(cidr(self).masked()) == self")
            .message("must be a CIDR in canonical form with no host bits set, e.g. 10.244.0.0/16"),
        validation = Rule::new("self == oldSelf").message("cidr is immutable")
    )]
    #[schemars(length(max = 43))]
    pub cidr: String,

    /// Prefix length of the blocks handed to nodes: 20-32 for IPv4 (default 26), 116-128 for
    /// IPv6 (default 122). Immutable. Unset means the family's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 20, max = 128))]
    pub block_size: Option<u8>,

    /// Which nodes may get blocks from this pool; unset or empty selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// A disabled pool hands out no new blocks; blocks already assigned keep working.
    #[serde(default)]
    pub disabled: bool,

    /// Masquerade traffic from this pool's pods to destinations outside all pools.
    #[serde(default)]
    pub nat_outgoing: bool,

    /// Do not announce this pool's blocks to BGP peers outside the cluster.
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
}

/// Observed state of an IP pool, written by the IPAM controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// `Allocatable` (reasons `CIDROverlap`, `Disabled`, `Terminating`, `Exhausted`, `Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The block prefix length in force (the spec's, or the family default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// Blocks assigned to nodes.
    #[serde(default)]
    pub blocks_assigned: u64,
    /// Blocks not yet assigned (saturates at 2^64-1 for large IPv6 pools).
    #[serde(default)]
    pub blocks_free: u64,
    /// Addresses allocated to pods.
    #[serde(default)]
    pub addresses_used: u64,
    /// Addresses not allocated, in assigned and unassigned blocks (saturating).
    #[serde(default)]
    pub addresses_free: u64,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition type on IPPool status.
pub const CONDITION_ALLOCATABLE: &str = "Allocatable";
/// `Allocatable=False`: the pool's CIDR overlaps an older pool.
pub const REASON_CIDR_OVERLAP: &str = "CIDROverlap";
/// `Allocatable=False`: `spec.disabled` is set.
pub const REASON_DISABLED: &str = "Disabled";
/// `Allocatable=False`: the pool is being deleted and drains its blocks.
pub const REASON_TERMINATING: &str = "Terminating";
/// `Allocatable=False`: every block of the pool is assigned.
pub const REASON_EXHAUSTED: &str = "Exhausted";
/// `Allocatable=True`.
pub const REASON_READY: &str = "Ready";

impl IPPoolSpec {
    /// Parses and validates the spec; `Ok` carries the pool's CIDR and effective block size.
    pub fn parsed(&self) -> Result<(IpNet, u8), Vec<FieldError>> {
        let cidr = self.parse_cidr();
        let block = cidr.as_ref().ok().map(|c| self.check_block_size(*c));
        let selector = Selector::parse_optional(self.node_selector.as_ref(), "spec.nodeSelector");
        match (cidr, block, selector) {
            (Ok(c), Some(Ok(b)), Ok(_)) => Ok((c, b)),
            (cidr, block, selector) => {
                let mut errors: Vec<FieldError> = cidr.err().into_iter().collect();
                errors.extend(block.and_then(Result::err));
                errors.extend(selector.err().into_iter().flatten());
                Err(errors)
            }
        }
    }

    fn parse_cidr(&self) -> Result<IpNet, FieldError> {
        match self.cidr.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Ok(net),
            Ok(net) => Err(FieldError::new(
                "spec.cidr",
                format!(
                    "{} has host bits set; did you mean {}?",
                    self.cidr,
                    net.trunc()
                ),
            )),
            Err(_) => Err(FieldError::new(
                "spec.cidr",
                format!(
                    "{:?} is not a CIDR such as 10.244.0.0/16 or fd00:10::/48",
                    self.cidr
                ),
            )),
        }
    }

    fn check_block_size(&self, cidr: IpNet) -> Result<u8, FieldError> {
        let (range, default, family) = match cidr {
            IpNet::V4(_) => (BLOCK_SIZE_RANGE_V4, DEFAULT_BLOCK_SIZE_V4, "IPv4"),
            IpNet::V6(_) => (BLOCK_SIZE_RANGE_V6, DEFAULT_BLOCK_SIZE_V6, "IPv6"),
        };
        let size = self.block_size.unwrap_or(default);
        if !range.contains(&size) {
            Err(FieldError::new(
                "spec.blockSize",
                format!(
                    "{size} is outside {}-{} for an {family} pool",
                    range.start(),
                    range.end()
                ),
            ))
        } else if size < cidr.prefix_len() {
            Err(FieldError::new(
                "spec.blockSize",
                format!("/{size} blocks do not fit in a /{} pool", cidr.prefix_len()),
            ))
        } else {
            Ok(size)
        }
    }

    /// Validates the spec; errors name the field path and what is wrong.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        self.parsed().map(|_| ())
    }

    /// The block prefix length in force: the spec's, or the family default for the cidr.
    /// `None` when the cidr does not parse.
    pub fn effective_block_size(&self) -> Option<u8> {
        let cidr = self.cidr.parse::<IpNet>().ok()?;
        Some(self.block_size.unwrap_or(match cidr {
            IpNet::V4(_) => DEFAULT_BLOCK_SIZE_V4,
            IpNet::V6(_) => DEFAULT_BLOCK_SIZE_V6,
        }))
    }
}

impl IPPool {
    /// Validates the object read from the API (name and spec).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        crate::validation::name_and_spec(self.metadata.name.as_deref(), self.spec.validate())
    }
}
