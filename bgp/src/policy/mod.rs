//! Import and export policy: ordered rules that match routes and change or drop them.
//!
//! Owns the policy language — its serde form for the `tabby-bgpd` TOML config
//! ([`PolicyConfig`]), validation into the checked form ([`Policy`]) with errors that name the
//! policy, the rule and the field, and evaluation over one route ([`Policy::evaluate`]). It
//! must not touch the RIB's tables: it gets a route, returns a verdict and maybe new attributes.
//!
//! Semantics: rules run in order. A rule matches when every condition it lists holds (a rule
//! with no conditions matches everything); within one condition a list means "any of". A
//! matching rule applies its `set` actions, then its `then` verdict: `accept` or `reject` ends
//! evaluation, `next` goes on to the following rule with the changes kept. When no rule ends
//! evaluation the policy's `default` applies (`reject` unless configured).
//!
//! RFC 8212 (see [`default_verdict`]): an eBGP session with no import (export) policy accepts
//! (sends) nothing; iBGP sessions and local routes default to accept. This is the safe choice
//! for a speaker that talks to routers run by other people; an operator who wants the old
//! behaviour writes a one-line policy with `default = "accept"`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rib::attrs::{NextHop, PathAttrs};
use crate::rib::peer::PeerType;
use crate::rib::prefix::Prefix;
use crate::wire::{Asn, Community, Ipv4Prefix, Ipv6Prefix, LargeCommunity};

/// What a policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Accept,
    Reject,
    /// Only as a rule's `then`: go on to the next rule.
    Next,
}

/// The verdict when a session has no policy in this direction (RFC 8212 §2).
pub fn default_verdict(peer_type: PeerType) -> Verdict {
    match peer_type {
        PeerType::Ebgp => Verdict::Reject,
        PeerType::Local | PeerType::Ibgp | PeerType::RrClient => Verdict::Accept,
    }
}

/// Address family names used in policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FamilyName {
    Ipv4,
    Ipv6,
}

// ---------------------------------------------------------------------------------------------
// Config form (serde).

/// A policy as written in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Verdict when no rule decides; `reject` when absent.
    #[serde(default = "reject")]
    pub default: Verdict,
}

fn reject() -> Verdict {
    Verdict::Reject
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    #[serde(default)]
    pub set: ActionsConfig,
    pub then: Verdict,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Any of these prefix ranges.
    #[serde(default)]
    pub prefix: Vec<PrefixRangeConfig>,
    #[serde(default)]
    pub family: Option<FamilyName>,
    /// Any of these communities (`65000:100`, `no-export`, `no-advertise`,
    /// `no-export-subconfed`).
    #[serde(default)]
    pub community: Vec<String>,
    /// Any of these large communities (`65000:1:2`).
    #[serde(default)]
    pub large_community: Vec<String>,
    #[serde(default)]
    pub as_path: Option<AsPathMatch>,
    /// Any of these peer types.
    #[serde(default)]
    pub peer_type: Vec<PeerType>,
}

/// `prefix` exactly, or with `ge`/`le` any prefix inside it whose length is in `ge..=le`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixRangeConfig {
    pub prefix: String,
    #[serde(default)]
    pub ge: Option<u8>,
    #[serde(default)]
    pub le: Option<u8>,
}

/// AS path conditions; all listed ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsPathMatch {
    /// The AS appears anywhere in the path.
    #[serde(default)]
    pub contains: Option<u32>,
    /// The route was originated by this AS (last AS of the path).
    #[serde(default)]
    pub origin: Option<u32>,
    /// The route was received from this AS (first AS of the path).
    #[serde(default)]
    pub neighbor: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub med: Option<u32>,
    /// `self`, `keep`, or an address.
    #[serde(default)]
    pub next_hop: Option<String>,
    #[serde(default)]
    pub add_community: Vec<String>,
    #[serde(default)]
    pub remove_community: Vec<String>,
    #[serde(default)]
    pub add_large_community: Vec<String>,
    #[serde(default)]
    pub remove_large_community: Vec<String>,
    #[serde(default)]
    pub prepend: Option<PrependConfig>,
}

/// Prepend `asn` (this router's AS when absent) `count` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrependConfig {
    #[serde(default)]
    pub asn: Option<u32>,
    pub count: u8,
}

// ---------------------------------------------------------------------------------------------
// Checked form.

/// A validation error: which policy, which rule, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy:?}, {location}: {reason}")]
pub struct PolicyError {
    pub policy: String,
    /// `rule 2 ("customers") match.prefix[0]`, or the policy-level field.
    pub location: String,
    pub reason: String,
}

/// An IPv4 or IPv6 prefix range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRange {
    pub prefix: Prefix,
    pub ge: u8,
    pub le: u8,
}

impl PrefixRange {
    pub fn matches(&self, p: &Prefix) -> bool {
        let len = p.len();
        len >= self.ge && len <= self.le && self.prefix.contains(p)
    }
}

/// How to set the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopAction {
    /// This router's address on the session (given by the caller in [`EvalContext`]).
    SelfAddr,
    /// Leave it as it is (also stops an export from rewriting it to self).
    Keep,
    Address(IpAddr),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Match {
    prefix: Vec<PrefixRange>,
    family: Option<FamilyName>,
    community: Vec<Community>,
    large_community: Vec<LargeCommunity>,
    as_path: Option<AsPathMatch>,
    peer_type: Vec<PeerType>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Actions {
    local_pref: Option<u32>,
    med: Option<u32>,
    next_hop: Option<NextHopAction>,
    add_community: Vec<Community>,
    remove_community: Vec<Community>,
    add_large_community: Vec<LargeCommunity>,
    remove_large_community: Vec<LargeCommunity>,
    prepend: Option<(Option<Asn>, u8)>,
}

impl Actions {
    fn is_empty(&self) -> bool {
        *self == Actions::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    matches: Match,
    actions: Actions,
    then: Verdict,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: String,
    rules: Vec<Rule>,
    default: Verdict,
    prefix_dependent: bool,
}

/// The route a policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteView<'a> {
    pub prefix: Prefix,
    pub attrs: &'a PathAttrs,
    /// The type of the peer the route came from (import) or goes to (export).
    pub peer_type: PeerType,
}

/// What evaluation needs from outside the route.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext {
    pub local_asn: Asn,
    /// Next hop that `next-hop = "self"` means; `None` leaves the next hop alone (the export
    /// side then applies its own next-hop-self rule).
    pub self_next_hop: Option<NextHop>,
}

/// The outcome of a policy on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `Some` when actions changed the attributes.
    Accept {
        attrs: Option<Box<PathAttrs>>,
        /// An explicit `next-hop = "keep"` ran.
        keep_next_hop: bool,
    },
    Reject,
}

/// `ASN:VALUE` (16 bits each) or a well-known name (RFC 1997), as the policy language and
/// `tabby-bgpd`'s config write them. The error names the text and what is wrong with it.
pub fn parse_community(s: &str) -> Result<Community, String> {
    match s {
        "no-export" => return Ok(Community::NO_EXPORT),
        "no-advertise" => return Ok(Community::NO_ADVERTISE),
        "no-export-subconfed" => return Ok(Community::NO_EXPORT_SUBCONFED),
        _ => {}
    }
    let (a, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a community: expected ASN:VALUE"))?;
    let a = a
        .parse::<u16>()
        .map_err(|_| format!("{s:?}: {a:?} is not a 16-bit AS number"))?;
    let v = v
        .parse::<u16>()
        .map_err(|_| format!("{s:?}: {v:?} is not a 16-bit value"))?;
    Ok(Community::new(a, v))
}

/// `GLOBAL:LOCAL1:LOCAL2`, 32 bits each (RFC 8092).
pub fn parse_large_community(s: &str) -> Result<LargeCommunity, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [g, l1, l2] = parts.as_slice() else {
        return Err(format!(
            "{s:?} is not a large community: expected GLOBAL:LOCAL1:LOCAL2"
        ));
    };
    let n = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("{s:?}: {x:?} is not a 32-bit number"))
    };
    Ok(LargeCommunity {
        global: n(g)?,
        local1: n(l1)?,
        local2: n(l2)?,
    })
}

/// An IPv4 or IPv6 prefix in CIDR notation; host bits must be zero.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    if s.contains(':') {
        Ipv6Prefix::from_str(s)
            .map(Prefix::V6)
            .map_err(|e| e.to_string())
    } else {
        Ipv4Prefix::from_str(s)
            .map(Prefix::V4)
            .map_err(|e| e.to_string())
    }
}

impl Policy {
    /// Validates a config-file policy.
    pub fn from_config(cfg: &PolicyConfig) -> Result<Policy, PolicyError> {
        let err = |location: String, reason: String| PolicyError {
            policy: cfg.name.clone(),
            location,
            reason,
        };
        if cfg.name.trim().is_empty() {
            return Err(err("name".into(), "must not be empty".into()));
        }
        if cfg.default == Verdict::Next {
            return Err(err(
                "default".into(),
                "must be \"accept\" or \"reject\"; \"next\" only fits a rule".into(),
            ));
        }
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.iter().enumerate() {
            let at = |field: &str| match &r.name {
                Some(n) => format!("rule {} ({n:?}) {field}", i + 1),
                None => format!("rule {} {field}", i + 1),
            };
            let mut m = Match {
                family: r.matches.family,
                as_path: r.matches.as_path.clone(),
                peer_type: r.matches.peer_type.clone(),
                ..Match::default()
            };
            for (j, pr) in r.matches.prefix.iter().enumerate() {
                let field = at(&format!("match.prefix[{j}]"));
                let prefix = parse_prefix(&pr.prefix).map_err(|e| err(field.clone(), e))?;
                let max = prefix.max_len();
                let ge = pr.ge.unwrap_or(prefix.len());
                let le = pr
                    .le
                    .unwrap_or(if pr.ge.is_some() { max } else { prefix.len() });
                if ge < prefix.len() || le > max || ge > le {
                    return Err(err(
                        field,
                        format!("needs {} <= ge ({ge}) <= le ({le}) <= {max}", prefix.len()),
                    ));
                }
                m.prefix.push(PrefixRange { prefix, ge, le });
            }
            for (j, c) in r.matches.community.iter().enumerate() {
                m.community.push(
                    parse_community(c).map_err(|e| err(at(&format!("match.community[{j}]")), e))?,
                );
            }
            for (j, c) in r.matches.large_community.iter().enumerate() {
                m.large_community.push(
                    parse_large_community(c)
                        .map_err(|e| err(at(&format!("match.large-community[{j}]")), e))?,
                );
            }
            let s = &r.set;
            let next_hop = match s.next_hop.as_deref() {
                None => None,
                Some("self") => Some(NextHopAction::SelfAddr),
                Some("keep") => Some(NextHopAction::Keep),
                Some(a) => Some(NextHopAction::Address(a.parse::<IpAddr>().map_err(
                    |_| {
                        err(
                            at("set.next_hop"),
                            format!("{a:?} is not \"self\", \"keep\" or an IP address"),
                        )
                    },
                )?)),
            };
            let comms = |v: &[String], field: &str| -> Result<Vec<Community>, PolicyError> {
                v.iter()
                    .enumerate()
                    .map(|(j, c)| {
                        parse_community(c).map_err(|e| err(at(&format!("{field}[{j}]")), e))
                    })
                    .collect()
            };
            let large = |v: &[String], field: &str| -> Result<Vec<LargeCommunity>, PolicyError> {
                v.iter()
                    .enumerate()
                    .map(|(j, c)| {
                        parse_large_community(c).map_err(|e| err(at(&format!("{field}[{j}]")), e))
                    })
                    .collect()
            };
            let prepend = match &s.prepend {
                None => None,
                Some(p) if p.count == 0 || p.count > 32 => {
                    return Err(err(
                        at("set.prepend.count"),
                        format!("{} is outside 1..=32", p.count),
                    ));
                }
                Some(p) => Some((p.asn.map(Asn), p.count)),
            };
            let actions = Actions {
                local_pref: s.local_pref,
                med: s.med,
                next_hop,
                add_community: comms(&s.add_community, "set.add_community")?,
                remove_community: comms(&s.remove_community, "set.remove_community")?,
                add_large_community: large(&s.add_large_community, "set.add_large_community")?,
                remove_large_community: large(
                    &s.remove_large_community,
                    "set.remove_large_community",
                )?,
                prepend,
            };
            rules.push(Rule {
                matches: m,
                actions,
                then: r.then,
            });
        }
        let prefix_dependent = rules
            .iter()
            .any(|r| !r.matches.prefix.is_empty() || r.matches.family.is_some());
        Ok(Policy {
            name: cfg.name.clone(),
            rules,
            default: cfg.default,
            prefix_dependent,
        })
    }

    /// A policy with no rules and the given default (`accept`: "send/take everything").
    pub fn all(name: &str, verdict: Verdict) -> Policy {
        Policy {
            name: name.to_string(),
            rules: Vec::new(),
            default: if verdict == Verdict::Next {
                Verdict::Reject
            } else {
                verdict
            },
            prefix_dependent: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the outcome can depend on the prefix (prefix or family conditions). When it
    /// cannot, callers evaluate once per attribute set instead of once per route.
    pub fn is_prefix_dependent(&self) -> bool {
        self.prefix_dependent
    }

    /// Runs the policy over one route.
    pub fn evaluate(&self, route: &RouteView<'_>, cx: &EvalContext) -> Outcome {
        let mut working: Option<Box<PathAttrs>> = None;
        let mut keep_next_hop = false;
        for rule in &self.rules {
            let attrs = working.as_deref().unwrap_or(route.attrs);
            if !rule.matches.matches(&route.prefix, attrs, route.peer_type) {
                continue;
            }
            if !rule.actions.is_empty() {
                let w = working.get_or_insert_with(|| Box::new(route.attrs.clone()));
                keep_next_hop |= rule.actions.apply(w, cx);
            }
            match rule.then {
                Verdict::Accept => {
                    return Outcome::Accept {
                        attrs: working,
                        keep_next_hop,
                    };
                }
                Verdict::Reject => return Outcome::Reject,
                Verdict::Next => {}
            }
        }
        match self.default {
            Verdict::Accept => Outcome::Accept {
                attrs: working,
                keep_next_hop,
            },
            _ => Outcome::Reject,
        }
    }
}

/// Validates a config file's list of policies into a name → policy map. Names must be unique:
/// peers refer to policies by name.
pub fn compile_all(
    cfgs: &[PolicyConfig],
) -> Result<std::collections::BTreeMap<String, std::sync::Arc<Policy>>, PolicyError> {
    let mut out = std::collections::BTreeMap::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let p = Policy::from_config(cfg)?;
        if out.contains_key(&cfg.name) {
            return Err(PolicyError {
                policy: cfg.name.clone(),
                location: format!("policies[{i}].name"),
                reason: "another policy already has this name".into(),
            });
        }
        out.insert(cfg.name.clone(), std::sync::Arc::new(p));
    }
    Ok(out)
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl Match {
    fn matches(&self, prefix: &Prefix, attrs: &PathAttrs, peer_type: PeerType) -> bool {
        if !self.prefix.is_empty() && !self.prefix.iter().any(|r| r.matches(prefix)) {
            return false;
        }
        if let Some(f) = self.family {
            let is = match prefix {
                Prefix::V4(_) => FamilyName::Ipv4,
                Prefix::V6(_) => FamilyName::Ipv6,
            };
            if is != f {
                return false;
            }
        }
        if !self.community.is_empty()
            && !self
                .community
                .iter()
                .any(|c| attrs.communities.binary_search(c).is_ok())
        {
            return false;
        }
        if !self.large_community.is_empty()
            && !self
                .large_community
                .iter()
                .any(|c| attrs.large_communities.binary_search(c).is_ok())
        {
            return false;
        }
        if let Some(a) = &self.as_path {
            if let Some(x) = a.contains
                && !attrs.as_path_contains(Asn(x))
            {
                return false;
            }
            if let Some(x) = a.origin
                && attrs.origin_as() != Some(Asn(x))
            {
                return false;
            }
            if let Some(x) = a.neighbor
                && attrs.neighbor_as() != Some(Asn(x))
            {
                return false;
            }
        }
        if !self.peer_type.is_empty() && !self.peer_type.contains(&peer_type) {
            return false;
        }
        true
    }
}

impl Actions {
    /// Applies the actions; returns whether an explicit "keep next hop" ran.
    fn apply(&self, a: &mut PathAttrs, cx: &EvalContext) -> bool {
        if let Some(l) = self.local_pref {
            a.local_pref = Some(l);
        }
        if let Some(m) = self.med {
            a.med = Some(m);
        }
        let mut keep = false;
        match self.next_hop {
            Some(NextHopAction::SelfAddr) => {
                if let Some(nh) = cx.self_next_hop {
                    a.next_hop = nh;
                }
            }
            Some(NextHopAction::Keep) => keep = true,
            Some(NextHopAction::Address(addr)) => a.next_hop = NextHop::from_addr(addr),
            None => {}
        }
        a.communities.retain(|c| !self.remove_community.contains(c));
        a.communities.extend_from_slice(&self.add_community);
        a.large_communities
            .retain(|c| !self.remove_large_community.contains(c));
        a.large_communities
            .extend_from_slice(&self.add_large_community);
        if let Some((asn, count)) = self.prepend {
            a.prepend(asn.unwrap_or(cx.local_asn), usize::from(count));
        }
        a.canonicalize();
        keep
    }
}
