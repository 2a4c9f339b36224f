//! Validated views of IPPools, overlap detection and the order in which pools serve a node.
//!
//! Pool order is documented and stable: pools are tried by name, in byte-wise ascending order
//! (`a-pool` before `b-pool`, `pool-10` before `pool-9`). A pool serves a node when it is not
//! disabled, not being deleted, not in a CIDR conflict, has the wanted family, and its
//! `nodeSelector` matches the node's labels.
//!
//! Overlaps: when two pools' CIDRs overlap, the older pool (creation time, then name) keeps
//! working and the newer one is marked `Allocatable=False/CIDROverlap`; creating a bad pool
//! never breaks a good one. Must not touch blocks or the API.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::Family;
use crate::selector::{Labels, Selector};
use crate::v1alpha1::IPPool;
use crate::validation::FieldError;

/// An IPPool that passed validation, reduced to what allocation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Object name.
    pub name: String,
    /// The pool's range.
    pub cidr: IpNet,
    /// Prefix length of its blocks.
    pub block_prefix: u8,
    /// Which nodes it serves.
    pub selector: Selector,
    /// `spec.disabled`.
    pub disabled: bool,
    /// `metadata.deletionTimestamp` is set: the pool drains and gets no new blocks.
    pub terminating: bool,
    /// `metadata.creationTimestamp` (older pools win overlaps); `None` sorts first.
    pub created: Option<Timestamp>,
}

impl Pool {
    /// Validates an IPPool read from the API.
    pub fn from_ippool(pool: &IPPool) -> Result<Self, Vec<FieldError>> {
        pool.validate()?;
        let (cidr, block_prefix) = pool.spec.parsed()?;
        let selector =
            Selector::parse_optional(pool.spec.node_selector.as_ref(), "spec.nodeSelector")?;
        Ok(Self {
            name: pool.metadata.name.clone().unwrap_or_default(),
            cidr,
            block_prefix,
            selector,
            disabled: pool.spec.disabled,
            terminating: pool.metadata.deletion_timestamp.is_some(),
            created: pool.metadata.creation_timestamp.as_ref().map(|t| t.0),
        })
    }

    /// A pool with every selector matching, for tests and tools.
    pub fn new(name: &str, cidr: IpNet, block_prefix: u8) -> Self {
        Self {
            name: name.to_string(),
            cidr,
            block_prefix,
            selector: Selector::everything(),
            disabled: false,
            terminating: false,
            created: None,
        }
    }

    /// The pool's address family.
    pub fn family(&self) -> Family {
        Family::of(&self.cidr)
    }

    /// Number of blocks the pool holds (saturating).
    pub fn block_count(&self) -> u128 {
        let bits = u32::from(self.block_prefix.saturating_sub(self.cidr.prefix_len()));
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }
}

/// Pod annotation naming the pools a pod's addresses must come from: a comma-separated list of
/// IPPool names, at most one per address family (e.g. `gpu-v4,gpu-v6`). The named pool then
/// gives the node a block on demand, even if the node's other blocks have room.
pub const POOL_ANNOTATION: &str = "tabby.dev/ippools";

/// Parses the value of [`POOL_ANNOTATION`] into pool names (trimmed, duplicates removed, in
/// the order given). Errors name the annotation and the bad entry.
pub fn parse_pool_annotation(value: &str) -> Result<Vec<String>, FieldError> {
    let path = format!("metadata.annotations[{POOL_ANNOTATION}]");
    let mut names: Vec<String> = Vec::new();
    for entry in value.split(',').map(str::trim) {
        let mut errors = crate::validation::Errors::default();
        crate::validation::check_dns_subdomain(&mut errors, &path, entry);
        if let Err(mut e) = errors.finish() {
            return Err(e.remove(0));
        }
        if !names.iter().any(|n| n == entry) {
            names.push(entry.to_string());
        }
    }
    Ok(names)
}

/// Of the pools named by a pod's annotation, the one for `family`. Errors when a name is not a
/// pool, or two named pools have the same family.
pub fn requested_pool<'p>(
    names: &[String],
    pools: &'p [Pool],
    family: Family,
) -> Result<Option<&'p Pool>, FieldError> {
    let path = format!("metadata.annotations[{POOL_ANNOTATION}]");
    let mut found: Option<&Pool> = None;
    for name in names {
        let pool = pools
            .iter()
            .find(|p| p.name == *name)
            .ok_or_else(|| FieldError::new(&path, format!("no IPPool named {name:?}")))?;
        if pool.family() == family {
            if let Some(other) = found {
                return Err(FieldError::new(
                    &path,
                    format!(
                        "{} and {} are both {family} pools; name one per family",
                        other.name, pool.name
                    ),
                ));
            }
            found = Some(pool);
        }
    }
    Ok(found)
}

/// Pools whose CIDR overlaps an older pool, mapped to the name of the pool they overlap.
/// "Older" means earlier creation time, then smaller name.
pub fn overlaps(pools: &[Pool]) -> BTreeMap<String, String> {
    let mut by_age: Vec<&Pool> = pools.iter().collect();
    by_age.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let mut losers = BTreeMap::new();
    let mut winners: Vec<&Pool> = Vec::new();
    for p in by_age {
        // Pools that already lost do not block later ones: only working pools count.
        if let Some(w) = winners.iter().find(|w| nets_overlap(&w.cidr, &p.cidr)) {
            losers.insert(p.name.clone(), w.name.clone());
        } else {
            winners.push(p);
        }
    }
    losers
}

/// Whether two networks share any address.
pub fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Why a pool cannot give blocks right now, or `None` when it can.
pub fn unavailable_reason<'a>(
    pool: &Pool,
    overlaps: &'a BTreeMap<String, String>,
) -> Option<Unavailable<'a>> {
    if pool.terminating {
        Some(Unavailable::Terminating)
    } else if let Some(other) = overlaps.get(&pool.name) {
        Some(Unavailable::CidrOverlap(other))
    } else if pool.disabled {
        Some(Unavailable::Disabled)
    } else {
        None
    }
}

/// Why a pool gives no new blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable<'a> {
    /// Being deleted.
    Terminating,
    /// Overlaps the named older pool.
    CidrOverlap(&'a str),
    /// `spec.disabled`.
    Disabled,
}

/// The pools that may give `family` blocks to a node with `labels`, in the documented order
/// (by name). With `requested`, only that pool is considered (a pod asked for it).
pub fn eligible<'p>(
    pools: &'p [Pool],
    overlaps: &BTreeMap<String, String>,
    labels: &Labels,
    family: Family,
    requested: Option<&str>,
) -> Vec<&'p Pool> {
    let mut out: Vec<&Pool> = pools
        .iter()
        .filter(|p| requested.is_none_or(|r| r == p.name))
        .filter(|p| p.family() == family)
        .filter(|p| unavailable_reason(p, overlaps).is_none())
        .filter(|p| p.selector.matches(labels))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The `Allocatable` condition a pool's status should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocatable {
    /// Whether the pool can give out new blocks.
    pub allocatable: bool,
    /// `Ready`, `Terminating`, `CIDROverlap`, `Disabled` or `Exhausted`.
    pub reason: &'static str,
    /// For people: what is wrong and what to do.
    pub message: String,
}

/// Decides the pool's `Allocatable` condition from its state, the overlap map and its usage.
pub fn allocatable(
    pool: &Pool,
    overlaps: &BTreeMap<String, String>,
    usage: &super::node::PoolUsage,
) -> Allocatable {
    use crate::v1alpha1::ippool::{
        REASON_CIDR_OVERLAP, REASON_DISABLED, REASON_EXHAUSTED, REASON_READY, REASON_TERMINATING,
    };
    let (allocatable, reason, message) = match unavailable_reason(pool, overlaps) {
        Some(Unavailable::Terminating) => (
            false,
            REASON_TERMINATING,
            format!(
                "being deleted: waiting for {} blocks to drain",
                usage.blocks_assigned
            ),
        ),
        Some(Unavailable::CidrOverlap(other)) => (
            false,
            REASON_CIDR_OVERLAP,
            format!(
                "{} overlaps the older pool {other}; change or delete one of them",
                pool.cidr
            ),
        ),
        Some(Unavailable::Disabled) => (
            false,
            REASON_DISABLED,
            "spec.disabled is set: existing pods keep their addresses; no new blocks and no new addresses".to_string(),
        ),
        None if usage.blocks_free == 0 => (
            false,
            REASON_EXHAUSTED,
            format!(
                "all {} /{} blocks are assigned; empty blocks are reclaimed when held long enough",
                usage.blocks_assigned, pool.block_prefix
            ),
        ),
        None => (
            true,
            REASON_READY,
            format!("{} blocks free", usage.blocks_free),
        ),
    };
    Allocatable {
        allocatable,
        reason,
        message,
    }
}

/// Merges `wanted` into `conditions` (by type), keeping `lastTransitionTime` when the status
/// did not change, as the API conventions ask. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    wanted: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(c) => {
            let mut next = wanted;
            if c.status == next.status {
                next.last_transition_time = c.last_transition_time.clone();
            }
            let changed = *c != next;
            *c = next;
            changed
        }
        None => {
            conditions.push(wanted);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str, created: i64) -> Pool {
        let mut p = Pool::new(name, cidr.parse().unwrap(), 26);
        p.created = Some(Timestamp::from_second(created).unwrap());
        p
    }

    #[test]
    fn overlap_table() {
        // (case, pools, expected losers → winners)
        type Case = (&'static str, Vec<Pool>, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                "disjoint",
                vec![pool("a", "10.0.0.0/16", 1), pool("b", "10.1.0.0/16", 2)],
                vec![],
            ),
            (
                "newer contained pool loses",
                vec![pool("a", "10.0.0.0/8", 1), pool("b", "10.1.0.0/16", 2)],
                vec![("b", "a")],
            ),
            (
                "newer containing pool loses",
                vec![pool("a", "10.1.0.0/16", 1), pool("b", "10.0.0.0/8", 2)],
                vec![("b", "a")],
            ),
            (
                "same cidr, same time: name decides",
                vec![pool("b", "10.0.0.0/16", 1), pool("a", "10.0.0.0/16", 1)],
                vec![("b", "a")],
            ),
            (
                "a loser does not block a third pool",
                vec![
                    pool("a", "10.0.0.0/16", 1),
                    pool("b", "10.0.0.0/8", 2),
                    pool("c", "10.1.0.0/16", 3),
                ],
                vec![("b", "a")],
            ),
            (
                "families never overlap",
                vec![pool("a", "0.0.0.0/0", 1), pool("b", "::/0", 2)],
                vec![],
            ),
        ];
        for (case, pools, want) in cases {
            let got = overlaps(&pools);
            let want: BTreeMap<String, String> = want
                .into_iter()
                .map(|(l, w)| (l.to_string(), w.to_string()))
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn pool_annotation_table() {
        assert_eq!(parse_pool_annotation("a, b,a").unwrap(), ["a", "b"]);
        for bad in ["", "a,,b", "A", "a b", "-a"] {
            let e = parse_pool_annotation(bad).unwrap_err();
            assert_eq!(e.path, "metadata.annotations[tabby.dev/ippools]", "{bad:?}");
        }
        let pools = vec![
            pool("v4", "10.0.0.0/16", 1),
            pool("v4b", "10.1.0.0/16", 1),
            pool("v6", "fd00::/48", 1),
        ];
        let names = |s: &str| parse_pool_annotation(s).unwrap();
        let got =
            |s: &str, f| requested_pool(&names(s), &pools, f).map(|p| p.map(|p| p.name.clone()));
        assert_eq!(got("v4,v6", Family::V4), Ok(Some("v4".into())));
        assert_eq!(got("v4,v6", Family::V6), Ok(Some("v6".into())));
        assert_eq!(got("v4", Family::V6), Ok(None));
        assert!(
            got("v4,v4b", Family::V4)
                .unwrap_err()
                .message
                .contains("one per family")
        );
        assert!(
            got("nope", Family::V4)
                .unwrap_err()
                .message
                .contains("no IPPool named")
        );
    }

    #[test]
    fn allocatable_table() {
        use crate::ipam::node::PoolUsage;
        let free = PoolUsage {
            blocks_assigned: 1,
            blocks_free: 3,
            ..PoolUsage::default()
        };
        let full = PoolUsage {
            blocks_assigned: 4,
            blocks_free: 0,
            ..PoolUsage::default()
        };
        let base = pool("p", "10.0.0.0/24", 1);
        let mut off = base.clone();
        off.disabled = true;
        let mut gone = off.clone();
        gone.terminating = true;
        let ov: BTreeMap<String, String> = [("dup".to_string(), "p".to_string())].into();
        let dup = pool("dup", "10.0.0.0/25", 2);
        // (case, pool, usage, allocatable, reason)
        for (case, p, u, ok, reason) in [
            ("ready", &base, &free, true, "Ready"),
            ("exhausted", &base, &full, false, "Exhausted"),
            ("disabled", &off, &free, false, "Disabled"),
            (
                "terminating beats disabled",
                &gone,
                &free,
                false,
                "Terminating",
            ),
            ("overlap", &dup, &free, false, "CIDROverlap"),
        ] {
            let a = allocatable(p, &ov, u);
            assert_eq!((a.allocatable, a.reason), (ok, reason), "{case}");
            assert!(!a.message.is_empty());
        }
    }

    #[test]
    fn set_condition_keeps_transition_time() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let cond = |status: &str, at: i64, msg: &str| Condition {
            type_: "Allocatable".into(),
            status: status.into(),
            reason: "Ready".into(),
            message: msg.into(),
            last_transition_time: Time(Timestamp::from_second(at).unwrap()),
            observed_generation: None,
        };
        let mut cs = Vec::new();
        assert!(set_condition(&mut cs, cond("True", 1, "a")));
        assert!(
            !set_condition(&mut cs, cond("True", 2, "a")),
            "same status: no change"
        );
        assert!(
            set_condition(&mut cs, cond("True", 3, "b")),
            "message changed"
        );
        assert_eq!(cs[0].last_transition_time.0.as_second(), 1);
        assert!(set_condition(&mut cs, cond("False", 4, "c")));
        assert_eq!(cs[0].last_transition_time.0.as_second(), 4);
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn eligible_order_and_filters() {
        let mut pools = vec![
            pool("pool-9", "10.9.0.0/16", 1),
            pool("pool-10", "10.10.0.0/16", 1),
            pool("v6", "fd00::/48", 1),
            pool("off", "10.11.0.0/16", 1),
            pool("gone", "10.12.0.0/16", 1),
            pool("gpu", "10.13.0.0/16", 1),
            pool("dup", "10.9.0.0/16", 5),
        ];
        pools[3].disabled = true;
        pools[4].terminating = true;
        let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([("gpu".to_string(), "true".to_string())].into()),
            match_expressions: None,
        };
        pools[5].selector = Selector::parse(&sel, "s").unwrap();
        pools[5].block_prefix = 27;
        let ov = overlaps(&pools);
        assert_eq!(ov.get("dup").map(String::as_str), Some("pool-9"));
        let names = |v: Vec<&Pool>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let plain = Labels::new();
        assert_eq!(
            names(eligible(&pools, &ov, &plain, Family::V4, None)),
            ["pool-10", "pool-9"]
        );
        let gpu: Labels = [("gpu".to_string(), "true".to_string())].into();
        assert_eq!(
            names(eligible(&pools, &ov, &gpu, Family::V4, None)),
            ["gpu", "pool-10", "pool-9"]
        );
        assert_eq!(
            names(eligible(&pools, &ov, &plain, Family::V6, None)),
            ["v6"]
        );
        assert_eq!(
            names(eligible(&pools, &ov, &plain, Family::V4, Some("pool-9"))),
            ["pool-9"]
        );
        assert!(eligible(&pools, &ov, &plain, Family::V4, Some("off")).is_empty());
        assert!(eligible(&pools, &ov, &plain, Family::V4, Some("gpu")).is_empty());
        assert_eq!(
            unavailable_reason(&pools[3], &ov),
            Some(Unavailable::Disabled)
        );
        assert_eq!(
            unavailable_reason(&pools[4], &ov),
            Some(Unavailable::Terminating)
        );
        assert_eq!(
            unavailable_reason(&pools[6], &ov),
            Some(Unavailable::CidrOverlap("pool-9"))
        );
    }
}
