//! The route model: what a kernel route of ours looks like, the desired state built from the
//! speaker's best paths, the node's own blocks and its pods, and the actual state read from the
//! kernel.
//!
//! Owns: the data types and their validation. Must not touch: netlink, sockets, clocks. Everything
//! here is plain data so the diff (`super::diff`) can be tested as a table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Where a route lives and what distinguishes it from other routes for the same prefix: the
/// kernel keys routes by (table, prefix, TOS, metric). Tabby's routes always have TOS 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Always masked (host bits zero), see [`RouteKey::new`].
    pub prefix: IpNet,
    pub table: u32,
    pub metric: u32,
}

impl RouteKey {
    /// A key with the prefix masked, so `10.0.0.1/24` and `10.0.0.0/24` are the same route.
    pub fn new(prefix: IpNet, table: u32, metric: u32) -> RouteKey {
        RouteKey {
            prefix: prefix.trunc(),
            table,
            metric,
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} table {} metric {}",
            self.prefix, self.table, self.metric
        )
    }
}

/// One next hop: a gateway, an interface, or both (a link-local IPv6 gateway needs its
/// interface). At least one of the two is set; [`NextHop::via`] and [`NextHop::dev`] build the
/// common forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub ifindex: Option<u32>,
}

impl NextHop {
    /// Via a gateway; the kernel resolves the interface.
    pub fn via(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            ifindex: None,
        }
    }

    /// Straight out of an interface (scope link), e.g. a pod's host route over its veth.
    pub fn dev(ifindex: u32) -> NextHop {
        NextHop {
            gateway: None,
            ifindex: Some(ifindex),
        }
    }

    /// True when the kernel's next hop `actual` is what `self` asked for. An interface left
    /// unspecified in `self` matches whatever interface the kernel resolved.
    pub fn matched_by(&self, actual: &NextHop) -> bool {
        self.gateway == actual.gateway && self.ifindex.is_none_or(|i| actual.ifindex == Some(i))
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.gateway, self.ifindex) {
            (Some(g), Some(i)) => write!(f, "via {g} dev #{i}"),
            (Some(g), None) => write!(f, "via {g}"),
            (None, Some(i)) => write!(f, "dev #{i}"),
            (None, None) => write!(f, "nowhere"),
        }
    }
}

/// What a route does with packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Drop silently: the node's own blocks, so addresses not (yet) assigned to a pod never
    /// leak to the default route.
    Blackhole,
    /// Forward via one or more next hops (more than one = ECMP). Sorted and free of duplicates
    /// when built by [`Target::unicast`], so two sets in different orders compare equal.
    Unicast(Vec<NextHop>),
    /// A route type Tabby never installs (unreachable, prohibit, local...), as read from the
    /// kernel: the raw `rtm_type`.
    Other(u8),
}

impl Target {
    /// A unicast target with the next hops sorted and deduplicated. Empty means "no route".
    pub fn unicast(mut hops: Vec<NextHop>) -> Target {
        hops.sort_unstable();
        hops.dedup();
        Target::Unicast(hops)
    }

    /// True when the kernel's route target `actual` implements `self` (ECMP order ignored).
    pub fn satisfied_by(&self, actual: &Target) -> bool {
        match (self, actual) {
            (Target::Blackhole, Target::Blackhole) => true,
            (Target::Unicast(want), Target::Unicast(have)) => {
                want.len() == have.len()
                    && want.iter().all(|w| have.iter().any(|h| w.matched_by(h)))
                    && have.iter().all(|h| want.iter().any(|w| w.matched_by(h)))
            }
            (Target::Other(a), Target::Other(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Blackhole => f.write_str("blackhole"),
            Target::Unicast(hops) => {
                for (i, h) in hops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{h}")?;
                }
                Ok(())
            }
            Target::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// A next-hop set the model refuses, with the prefix it was for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("route {prefix}: next hop {hop} is {hop_family}, the prefix is {prefix_family}")]
    FamilyMismatch {
        prefix: IpNet,
        hop: NextHop,
        hop_family: &'static str,
        prefix_family: &'static str,
    },
    #[error("route {prefix}: a next hop has neither a gateway nor an interface")]
    EmptyNextHop { prefix: IpNet },
    #[error("route {prefix}: {count} next hops exceed the limit of {max}")]
    TooManyNextHops {
        prefix: IpNet,
        count: usize,
        max: usize,
    },
}

/// Most next hops one route may carry. Linux caps multipath routes well above this (IPv4
/// `fib_nhs` 16-bit), but a BGP best-path set wider than this is a misconfiguration.
pub const MAX_NEXT_HOPS: usize = 64;

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn net_family(net: &IpNet) -> &'static str {
    family(net.addr())
}

/// Checks one next-hop set for `prefix`: same family as the prefix, every hop usable, bounded.
pub fn validate_next_hops(prefix: IpNet, hops: &[NextHop]) -> Result<(), ModelError> {
    if hops.len() > MAX_NEXT_HOPS {
        return Err(ModelError::TooManyNextHops {
            prefix,
            count: hops.len(),
            max: MAX_NEXT_HOPS,
        });
    }
    for hop in hops {
        match hop.gateway {
            None if hop.ifindex.is_none() => return Err(ModelError::EmptyNextHop { prefix }),
            Some(g) if g.is_ipv4() != prefix.addr().is_ipv4() => {
                return Err(ModelError::FamilyMismatch {
                    prefix,
                    hop: *hop,
                    hop_family: family(g),
                    prefix_family: net_family(&prefix),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Desired state: what the node's routing table should hold, from three sources. Prefixes are
/// stored masked.
///
/// Precedence for one prefix, strongest first: an own block (blackhole) — a node must never
/// send traffic for its own block elsewhere, even if a peer reflects the block back; a pod host
/// route; a route learned over BGP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    own_blocks: BTreeSet<IpNet>,
    pods: BTreeMap<IpNet, u32>,
    learned: HashMap<IpNet, Vec<NextHop>>,
}

impl Desired {
    pub fn new() -> Desired {
        Desired::default()
    }

    /// Replaces the set of own blocks. Returns the prefixes whose target may have changed.
    pub fn set_own_blocks(&mut self, blocks: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
        let new: BTreeSet<IpNet> = blocks.into_iter().map(|b| b.trunc()).collect();
        let changed = new
            .symmetric_difference(&self.own_blocks)
            .copied()
            .collect();
        self.own_blocks = new;
        changed
    }

    /// Sets (non-empty `hops`) or withdraws (empty) the learned route for `prefix`. Returns
    /// whether anything changed.
    pub fn update(&mut self, prefix: IpNet, hops: Vec<NextHop>) -> Result<bool, ModelError> {
        let prefix = prefix.trunc();
        validate_next_hops(prefix, &hops)?;
        if hops.is_empty() {
            return Ok(self.learned.remove(&prefix).is_some());
        }
        let Target::Unicast(hops) = Target::unicast(hops) else {
            return Ok(false);
        };
        Ok(self.learned.insert(prefix, hops.clone()).as_ref() != Some(&hops))
    }

    /// Forgets every BGP-learned route (own blocks and pod routes stay): the speaker that fed
    /// them is gone, and its successor sends its own.
    pub fn clear_learned(&mut self) {
        self.learned.clear();
    }

    /// Sets the host route for a pod address over its host-side veth.
    pub fn set_pod_route(&mut self, prefix: IpNet, ifindex: u32) -> bool {
        self.pods.insert(prefix.trunc(), ifindex) != Some(ifindex)
    }

    /// Removes a pod's host route.
    pub fn remove_pod_route(&mut self, prefix: IpNet) -> bool {
        self.pods.remove(&prefix.trunc()).is_some()
    }

    /// The target `prefix` should have, if any (see the precedence above).
    pub fn target(&self, prefix: &IpNet) -> Option<Target> {
        if self.own_blocks.contains(prefix) {
            return Some(Target::Blackhole);
        }
        if let Some(&ifindex) = self.pods.get(prefix) {
            return Some(Target::Unicast(vec![NextHop::dev(ifindex)]));
        }
        self.learned.get(prefix).map(|h| Target::Unicast(h.clone()))
    }

    /// Every desired route once, with its effective target (precedence applied).
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, Target)> + '_ {
        let blocks = self.own_blocks.iter().map(|p| (*p, Target::Blackhole));
        let pods = self
            .pods
            .iter()
            .filter(|(p, _)| !self.own_blocks.contains(p))
            .map(|(p, i)| (*p, Target::Unicast(vec![NextHop::dev(*i)])));
        let learned = self
            .learned
            .iter()
            .filter(|(p, _)| !self.own_blocks.contains(p) && !self.pods.contains_key(p))
            .map(|(p, h)| (*p, Target::Unicast(h.clone())));
        blocks.chain(pods).chain(learned)
    }

    /// Every prefix with a desired route.
    pub fn prefixes(&self) -> HashSet<IpNet> {
        self.own_blocks
            .iter()
            .chain(self.pods.keys())
            .chain(self.learned.keys())
            .copied()
            .collect()
    }

    /// Number of distinct prefixes with a desired route.
    pub fn len(&self) -> usize {
        self.prefixes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.own_blocks.is_empty() && self.pods.is_empty() && self.learned.is_empty()
    }
}

/// A route as read from the kernel (dump or notification), reduced to what the reconciler
/// compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub key: RouteKey,
    pub tos: u8,
    pub protocol: u8,
    pub target: Target,
}

/// Actual state: the kernel's routes of our protocol, and which of our keys a route of another
/// protocol occupies (the kernel would let a replace of ours clobber it, so the diff steps
/// around those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub own: HashMap<RouteKey, Target>,
    pub foreign: HashSet<RouteKey>,
}

impl Actual {
    /// Builds actual state from a dump: routes of `protocol` become ours, any other route with
    /// TOS 0 is recorded as an occupant of its key.
    pub fn from_routes(routes: impl IntoIterator<Item = KernelRoute>, protocol: u8) -> Actual {
        let mut actual = Actual::default();
        for r in routes {
            actual.learn(r, protocol);
        }
        actual
    }

    /// Records one route that exists in the kernel.
    pub fn learn(&mut self, route: KernelRoute, protocol: u8) {
        if route.protocol == protocol {
            self.own.insert(route.key, route.target);
        } else if route.tos == 0 {
            self.foreign.insert(route.key);
        }
    }

    /// Records that one route left the kernel.
    pub fn forget(&mut self, route: &KernelRoute, protocol: u8) {
        if route.protocol == protocol {
            self.own.remove(&route.key);
        } else if route.tos == 0 {
            self.foreign.remove(&route.key);
        }
    }

    /// Number of own routes of each family: (IPv4, IPv6).
    pub fn own_by_family(&self) -> (usize, usize) {
        let v4 = self
            .own
            .keys()
            .filter(|k| matches!(k.prefix, IpNet::V4(_)))
            .count();
        (v4, self.own.len() - v4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn via(s: &str) -> NextHop {
        NextHop::via(s.parse().unwrap())
    }

    #[test]
    fn keys_are_masked() {
        assert_eq!(
            RouteKey::new(net("10.0.0.77/24"), 254, 32),
            RouteKey::new(net("10.0.0.0/24"), 254, 32)
        );
    }

    #[test]
    fn ecmp_sets_compare_without_order_and_without_duplicates() {
        let a = Target::unicast(vec![via("10.0.0.1"), via("10.0.0.2")]);
        let b = Target::unicast(vec![via("10.0.0.2"), via("10.0.0.1"), via("10.0.0.2")]);
        assert_eq!(a, b);
        assert!(a.satisfied_by(&b));
    }

    #[test]
    fn unspecified_interface_matches_the_resolved_one_but_not_the_reverse() {
        let want = Target::unicast(vec![via("10.0.0.1")]);
        let have = Target::unicast(vec![NextHop {
            gateway: Some("10.0.0.1".parse().unwrap()),
            ifindex: Some(7),
        }]);
        assert!(want.satisfied_by(&have));
        let want_if = Target::unicast(vec![NextHop {
            gateway: Some("10.0.0.1".parse().unwrap()),
            ifindex: Some(8),
        }]);
        assert!(!want_if.satisfied_by(&have));
        // A subset of the ECMP set is a different route.
        let two = Target::unicast(vec![via("10.0.0.1"), via("10.0.0.2")]);
        assert!(!want.satisfied_by(&two));
        assert!(!two.satisfied_by(&want));
        assert!(!Target::Blackhole.satisfied_by(&want));
        assert!(!want.satisfied_by(&Target::Blackhole));
        assert!(!Target::Blackhole.satisfied_by(&Target::Other(7)));
    }

    #[test]
    fn next_hop_validation_names_the_prefix_and_problem() {
        let p = net("10.1.0.0/26");
        assert!(validate_next_hops(p, &[via("10.0.0.1")]).is_ok());
        let e = validate_next_hops(p, &[via("fd00::1")]).unwrap_err();
        assert!(e.to_string().contains("10.1.0.0/26"), "{e}");
        assert!(e.to_string().contains("IPv6"), "{e}");
        let empty = NextHop {
            gateway: None,
            ifindex: None,
        };
        assert_eq!(
            validate_next_hops(p, &[empty]),
            Err(ModelError::EmptyNextHop { prefix: p })
        );
        let many: Vec<NextHop> = (0..=MAX_NEXT_HOPS as u32)
            .map(|i| NextHop::via(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        assert!(matches!(
            validate_next_hops(p, &many),
            Err(ModelError::TooManyNextHops { .. })
        ));
        // IPv6 prefix over a link-local gateway with its interface is fine.
        let ll = NextHop {
            gateway: Some("fe80::1".parse().unwrap()),
            ifindex: Some(3),
        };
        assert!(validate_next_hops(net("fd00:1::/64"), &[ll]).is_ok());
    }

    #[test]
    fn precedence_own_block_then_pod_then_learned() {
        let mut d = Desired::new();
        let p = net("10.1.0.0/26");
        assert!(d.update(p, vec![via("10.0.0.1")]).unwrap());
        assert!(!d.update(p, vec![via("10.0.0.1")]).unwrap(), "no change");
        assert_eq!(d.target(&p), Some(Target::unicast(vec![via("10.0.0.1")])));
        assert_eq!(d.set_own_blocks([net("10.1.0.9/26")]), vec![p]);
        assert_eq!(d.target(&p), Some(Target::Blackhole));
        let pod = net("10.1.0.5/32");
        assert!(d.set_pod_route(pod, 9));
        assert_eq!(d.target(&pod), Some(Target::Unicast(vec![NextHop::dev(9)])));
        assert_eq!(d.len(), 2);
        assert!(d.update(p, vec![]).unwrap(), "withdrawn");
        assert_eq!(d.target(&p), Some(Target::Blackhole), "own block stays");
        assert_eq!(d.set_own_blocks([]), vec![p]);
        assert_eq!(d.target(&p), None);
        assert!(d.remove_pod_route(pod));
        assert!(d.is_empty());
    }

    #[test]
    fn actual_state_separates_own_and_foreign() {
        let k = RouteKey::new(net("10.1.0.0/26"), 254, 32);
        let own = KernelRoute {
            key: k,
            tos: 0,
            protocol: 84,
            target: Target::Blackhole,
        };
        let foreign = KernelRoute {
            protocol: 4,
            ..own.clone()
        };
        let foreign_tos = KernelRoute {
            tos: 8,
            key: RouteKey::new(net("10.2.0.0/26"), 254, 32),
            ..foreign.clone()
        };
        let mut a = Actual::from_routes([own.clone(), foreign.clone(), foreign_tos], 84);
        assert_eq!(a.own.len(), 1);
        assert_eq!(
            a.foreign.len(),
            1,
            "TOS-specific routes never share our key"
        );
        assert_eq!(a.own_by_family(), (1, 0));
        a.forget(&foreign, 84);
        assert!(a.foreign.is_empty());
        a.forget(&own, 84);
        assert!(a.own.is_empty());
    }
}
