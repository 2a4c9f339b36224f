//! What this node announces, and what it accepts and sends per peer, as speaker policies.
//!
//! Owns: the set of prefixes the node originates (its own IPAMBlocks as aggregates — never
//! per-pod /32s — and the BGPConfiguration's service ranges) and the rendering of the peering
//! plan's [`PolicySpec`]s into `tabby_bgp::policy::PolicyConfig`s. Pure: the main loop passes
//! the objects and installs the result (`set_policy`, `originate`, `withdraw`). Must not decide
//! who peers with whom ([`crate::peering`]).
//!
//! Rules:
//! - Cluster sessions (to other nodes) import and export routes inside any IPPool, at any
//!   length from the pool's own: every node's blocks, including pools with `disableBGPExport`
//!   (that flag keeps a pool inside the cluster, it does not hide it from the cluster). Route
//!   reflectors reflect them with the same policy.
//! - External sessions export only this node's own blocks from pools without
//!   `disableBGPExport`, plus the service ranges — exact prefixes, so a node never re-announces
//!   another node's block (a ToR would otherwise reach every block through every node).
//! - External sessions import what the BGPPeer's `importFilters` accept; unmatched routes are
//!   accepted (the BGPPeer API's documented meaning). With no filters: everything. The
//!   policies are explicit, so RFC 8212's "eBGP without policy takes nothing" never applies.
//! - A BGPPeer's filters run first, in order, first match deciding, but cannot widen what the
//!   session may carry: an `Accept` rule is cut down to its intersection with the allowed set.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use tabby_api::v1alpha1::bgpconfiguration::CommunityValue;
use tabby_api::v1alpha1::bgppeer::{FilterAction, PrefixMatch};
use tabby_api::v1alpha1::{BGPConfigurationSpec, IPAMBlock, IPPool};
use tabby_bgp::policy::{MatchConfig, PolicyConfig, PrefixRangeConfig, RuleConfig, Verdict};
use tabby_bgp::rib::{NextHop, PathAttrs, Prefix};
use tabby_bgp::wire::{Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity};

use crate::peering::{Direction, LocalSettings, ObjectRef, PolicyClass, PolicySpec, Problem};

/// An IPPool as export sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    pub cidr: IpNet,
    pub disable_bgp_export: bool,
}

/// Reads the pools; a pool whose CIDR does not parse is reported and left out.
pub fn pools(objects: &[IPPool]) -> (Vec<PoolInfo>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in objects {
        let Some(name) = p.metadata.name.clone() else {
            continue;
        };
        match p.spec.cidr.parse::<IpNet>() {
            Ok(cidr) if cidr.trunc() == cidr => out.push(PoolInfo {
                name,
                cidr,
                disable_bgp_export: p.spec.disable_bgp_export,
            }),
            _ => problems.push(Problem {
                object: ObjectRef::new("IPPool", name),
                peer: None,
                reason: format!(
                    "spec.cidr {:?} is not a CIDR without host bits; its routes are \
                     neither imported nor exported",
                    p.spec.cidr
                ),
            }),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, problems)
}

/// One of this node's blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnBlock {
    pub pool: String,
    /// Announced to external peers (pool known, without `disableBGPExport`).
    pub external: bool,
}

/// What the node originates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origination {
    pub blocks: BTreeMap<IpNet, OwnBlock>,
    pub services: BTreeSet<IpNet>,
}

impl Origination {
    /// Every prefix to originate: blocks and service ranges.
    pub fn prefixes(&self) -> BTreeSet<IpNet> {
        self.blocks
            .keys()
            .chain(self.services.iter())
            .copied()
            .collect()
    }

    /// The prefixes external peers may receive, before their own filters.
    pub fn external(&self) -> BTreeSet<IpNet> {
        self.blocks
            .iter()
            .filter(|(_, b)| b.external)
            .map(|(p, _)| *p)
            .chain(self.services.iter().copied())
            .collect()
    }
}

/// This node's blocks (those whose `spec.node` is `node`) and the configuration's service
/// ranges.
pub fn originate(
    node: &str,
    blocks: &[IPAMBlock],
    pools: &[PoolInfo],
    config: &BGPConfigurationSpec,
) -> (Origination, Vec<Problem>) {
    let mut o = Origination::default();
    let mut problems = Vec::new();
    for b in blocks.iter().filter(|b| b.spec.node == node) {
        let name = b.metadata.name.clone().unwrap_or_default();
        let cidr = match b.spec.cidr.parse::<IpNet>() {
            Ok(c) if c.trunc() == c => c,
            _ => {
                problems.push(Problem {
                    object: ObjectRef::new("IPAMBlock", name),
                    peer: None,
                    reason: format!(
                        "spec.cidr {:?} is not a CIDR without host bits; not announced",
                        b.spec.cidr
                    ),
                });
                continue;
            }
        };
        let external = match pools.iter().find(|p| p.name == b.spec.pool) {
            Some(p) if !p.cidr.contains(&cidr) => {
                problems.push(Problem {
                    object: ObjectRef::new("IPAMBlock", &name),
                    peer: None,
                    reason: format!(
                        "{cidr} is outside its pool {} ({}): announced inside the cluster \
                         only, and other nodes will not accept it",
                        p.name, p.cidr
                    ),
                });
                false
            }
            Some(p) => !p.disable_bgp_export,
            None => {
                problems.push(Problem {
                    object: ObjectRef::new("IPAMBlock", &name),
                    peer: None,
                    reason: format!(
                        "pool {:?} does not exist: {cidr} is announced inside the cluster \
                         only, since whether its pool allows export is unknown",
                        b.spec.pool
                    ),
                });
                false
            }
        };
        o.blocks.insert(
            cidr,
            OwnBlock {
                pool: b.spec.pool.clone(),
                external,
            },
        );
    }
    for (field, list) in [
        ("serviceClusterIPs", &config.service_cluster_ips),
        ("serviceExternalIPs", &config.service_external_ips),
        ("serviceLoadBalancerIPs", &config.service_load_balancer_ips),
    ] {
        for (i, s) in list.iter().enumerate() {
            match s.cidr.parse::<IpNet>() {
                Ok(c) => {
                    if c.trunc() != c {
                        problems.push(Problem {
                            object: ObjectRef::new("BGPConfiguration", "default"),
                            peer: None,
                            reason: format!(
                                "spec.{field}[{i}].cidr {c} has host bits set; announcing {}",
                                c.trunc()
                            ),
                        });
                    }
                    o.services.insert(c.trunc());
                }
                Err(_) => problems.push(Problem {
                    object: ObjectRef::new("BGPConfiguration", "default"),
                    peer: None,
                    reason: format!("spec.{field}[{i}].cidr {:?} is not a CIDR", s.cidr),
                }),
            }
        }
    }
    (o, problems)
}

/// A prefix range: `cidr` and every prefix inside it with a length in `ge..=le`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    cidr: IpNet,
    ge: u8,
    le: u8,
}

impl Range {
    fn exact(p: IpNet) -> Range {
        Range {
            cidr: p,
            ge: p.prefix_len(),
            le: p.prefix_len(),
        }
    }

    fn within(p: IpNet) -> Range {
        Range {
            cidr: p,
            ge: p.prefix_len(),
            le: p.max_prefix_len(),
        }
    }

    /// The prefixes in both ranges, when there are any. Two prefixes either nest or are
    /// disjoint, so the result is again one range.
    fn intersect(&self, other: &Range) -> Option<Range> {
        let cidr = if self.cidr.contains(&other.cidr) {
            other.cidr
        } else if other.cidr.contains(&self.cidr) {
            self.cidr
        } else {
            return None;
        };
        let ge = self.ge.max(other.ge).max(cidr.prefix_len());
        let le = self.le.min(other.le);
        (ge <= le).then_some(Range { cidr, ge, le })
    }

    fn config(&self) -> PrefixRangeConfig {
        PrefixRangeConfig {
            prefix: self.cidr.to_string(),
            // Always explicit: PolicyConfig's defaults for a missing `le` differ from the
            // BGPPeer API's.
            ge: Some(self.ge),
            le: Some(self.le),
        }
    }
}

fn rule(name: String, ranges: &[Range], then: Verdict) -> RuleConfig {
    RuleConfig {
        name: Some(name),
        matches: MatchConfig {
            prefix: ranges.iter().map(Range::config).collect(),
            ..MatchConfig::default()
        },
        set: Default::default(),
        then,
    }
}

/// Renders one policy. `allowed`: the ranges the session may carry (`None`: anything).
fn render(name: &str, filters: &[PrefixMatch], allowed: Option<&[Range]>) -> PolicyConfig {
    let mut rules = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let r = Range {
            cidr: f.cidr,
            ge: f.ge,
            le: f.le,
        };
        let label = format!(
            "filter {i}: {} ge {} le {} {:?}",
            f.cidr, f.ge, f.le, f.action
        );
        match (f.action, allowed) {
            (FilterAction::Reject, _) => rules.push(rule(label, &[r], Verdict::Reject)),
            (FilterAction::Accept, None) => rules.push(rule(label, &[r], Verdict::Accept)),
            (FilterAction::Accept, Some(allowed)) => {
                let cut: Vec<Range> = allowed.iter().filter_map(|a| r.intersect(a)).collect();
                // An empty prefix list would match everything: leave the rule out.
                if !cut.is_empty() {
                    rules.push(rule(label, &cut, Verdict::Accept));
                }
            }
        }
    }
    let default = match allowed {
        None => Verdict::Accept,
        Some(allowed) => {
            if !allowed.is_empty() {
                rules.push(rule("allowed".into(), allowed, Verdict::Accept));
            }
            Verdict::Reject
        }
    };
    PolicyConfig {
        name: name.to_string(),
        rules,
        default,
    }
}

/// Renders every policy the plan names, in name order.
pub fn policies(
    specs: &BTreeMap<String, PolicySpec>,
    pools: &[PoolInfo],
    origination: &Origination,
) -> BTreeMap<String, PolicyConfig> {
    let mut pool_ranges: Vec<Range> = pools.iter().map(|p| Range::within(p.cidr)).collect();
    pool_ranges.sort();
    pool_ranges.dedup();
    let external: Vec<Range> = origination
        .external()
        .into_iter()
        .map(Range::exact)
        .collect();
    specs
        .iter()
        .map(|(name, spec)| {
            let allowed = match (spec.class, spec.direction) {
                (PolicyClass::Cluster, _) => Some(pool_ranges.as_slice()),
                (PolicyClass::External, Direction::Export) => Some(external.as_slice()),
                (PolicyClass::External, Direction::Import) => None,
            };
            (name.clone(), render(name, &spec.filters, allowed))
        })
        .collect()
}

/// A change to the speaker's policies.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyOp {
    /// `set_policy`: new, or its rules changed.
    Set(PolicyConfig),
    /// No peer names it any more.
    Remove(String),
}

/// Changed policies. Apply the `Set`s before the peer changes that name them and the
/// `Remove`s after the peer changes that stop naming them.
pub fn diff_policies(
    old: &BTreeMap<String, PolicyConfig>,
    new: &BTreeMap<String, PolicyConfig>,
) -> Vec<PolicyOp> {
    let mut ops: Vec<PolicyOp> = new
        .iter()
        .filter(|(n, p)| old.get(*n) != Some(*p))
        .map(|(_, p)| PolicyOp::Set(p.clone()))
        .collect();
    ops.extend(
        old.keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| PolicyOp::Remove(n.clone())),
    );
    ops
}

/// Prefixes to originate and to withdraw, each in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginationDiff {
    pub originate: Vec<IpNet>,
    pub withdraw: Vec<IpNet>,
}

pub fn diff_origination(old: &BTreeSet<IpNet>, new: &BTreeSet<IpNet>) -> OriginationDiff {
    OriginationDiff {
        originate: new.difference(old).copied().collect(),
        withdraw: old.difference(new).copied().collect(),
    }
}

/// The route to originate for `prefix`: ORIGIN IGP, empty AS_PATH, this node's address of the
/// prefix's family as next hop (RFC 4271 §5.1.3; the speaker rewrites it per session where
/// its next-hop mode says so), and the communities of every `prefixAdvertisements` entry whose
/// CIDR covers the prefix (Calico's meaning: the CIDR and everything inside it).
pub fn route(
    prefix: IpNet,
    local: &LocalSettings,
    config: &BGPConfigurationSpec,
) -> Result<(Prefix, PathAttrs), Problem> {
    let problem = |reason: String| Problem {
        object: ObjectRef::new("Node", &local.node),
        peer: None,
        reason,
    };
    let (rib_prefix, next_hop) = match prefix {
        IpNet::V4(p) => {
            let nh = local.addresses.iter().find_map(|a| match a {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(_) => None,
            });
            let nh = nh
                .ok_or_else(|| problem(format!("has no IPv4 address to announce {prefix} from")))?;
            let rp = Ipv4Prefix::new(p.addr(), p.prefix_len())
                .map_err(|e| problem(format!("{prefix}: {e}")))?;
            (Prefix::V4(rp), NextHop::V4(nh))
        }
        IpNet::V6(p) => {
            let nh = local.addresses.iter().find_map(|a| match a {
                std::net::IpAddr::V6(v6) => Some(*v6),
                std::net::IpAddr::V4(_) => None,
            });
            let nh = nh
                .ok_or_else(|| problem(format!("has no IPv6 address to announce {prefix} from")))?;
            let rp = Ipv6Prefix::new(p.addr(), p.prefix_len())
                .map_err(|e| problem(format!("{prefix}: {e}")))?;
            (
                Prefix::V6(rp),
                NextHop::V6 {
                    global: nh,
                    link_local: None,
                },
            )
        }
    };
    let mut attrs = PathAttrs::new(next_hop);
    for (i, adv) in config.prefix_advertisements.iter().enumerate() {
        let Ok(cidr) = adv.cidr.parse::<IpNet>() else {
            continue; // reported by the configuration's validation
        };
        if !cidr.contains(&prefix) {
            continue;
        }
        for (j, c) in adv.communities.iter().enumerate() {
            let value = config
                .communities
                .iter()
                .find(|n| n.name == *c)
                .map_or(c.as_str(), |n| n.value.as_str());
            match CommunityValue::parse(value) {
                Some(CommunityValue::Standard(a, v)) => {
                    attrs.communities.push(Community::new(a, v))
                }
                Some(CommunityValue::Large(g, l1, l2)) => {
                    attrs.large_communities.push(LargeCommunity {
                        global: g,
                        local1: l1,
                        local2: l2,
                    })
                }
                None => {
                    return Err(Problem {
                        object: ObjectRef::new("BGPConfiguration", "default"),
                        peer: None,
                        reason: format!(
                            "spec.prefixAdvertisements[{i}].communities[{j}] {c:?} is neither \
                             a community name nor a value"
                        ),
                    });
                }
            }
        }
    }
    attrs.canonicalize();
    Ok((rib_prefix, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cidr: &str, ge: u8, le: u8) -> Range {
        Range {
            cidr: cidr.parse().unwrap(),
            ge,
            le,
        }
    }

    #[test]
    fn range_intersection_table() {
        // (a, b, a ∩ b)
        let cases = [
            // Nested: the longer prefix, the tighter lengths.
            (
                r("10.0.0.0/8", 8, 32),
                r("10.244.0.0/16", 16, 32),
                Some(r("10.244.0.0/16", 16, 32)),
            ),
            (
                r("10.0.0.0/8", 8, 24),
                r("10.244.0.0/16", 16, 32),
                Some(r("10.244.0.0/16", 16, 24)),
            ),
            // An exact prefix inside a range.
            (
                r("10.0.0.0/8", 8, 32),
                r("10.244.0.0/26", 26, 26),
                Some(r("10.244.0.0/26", 26, 26)),
            ),
            // Lengths that do not overlap.
            (r("10.0.0.0/8", 8, 24), r("10.244.0.0/26", 26, 26), None),
            // A shorter `ge` is raised to the inner prefix's own length.
            (
                r("0.0.0.0/0", 0, 32),
                r("10.244.0.0/16", 16, 32),
                Some(r("10.244.0.0/16", 16, 32)),
            ),
            (
                r("10.244.0.0/16", 16, 32),
                r("10.0.0.0/8", 0, 32),
                Some(r("10.244.0.0/16", 16, 32)),
            ),
            // Disjoint prefixes, and different families.
            (r("10.0.0.0/8", 8, 32), r("172.16.0.0/12", 12, 32), None),
            (r("0.0.0.0/0", 0, 32), r("fd00::/48", 48, 128), None),
            (
                r("fd00::/8", 8, 128),
                r("fd00:10::/48", 48, 122),
                Some(r("fd00:10::/48", 48, 122)),
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.intersect(&b), want, "{a:?} ∩ {b:?}");
            assert_eq!(b.intersect(&a), want, "symmetric: {b:?} ∩ {a:?}");
        }
    }
}
