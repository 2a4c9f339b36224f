//! Canonical path-attribute sets and their interning store.
//!
//! Owns [`PathAttrs`] (the attributes of one route, without its NLRI), their conversion from and
//! to the wire's attribute lists, and [`AttrStore`], which deduplicates equal sets so every route
//! holds one pointer. It must not know about peers, prefixes or best-path rules.
//!
//! Memory: an UPDATE carries one attribute set for many NLRI and most routes in a table share a
//! handful of sets, so a route costs a pointer here, not a copy. A set lives as long as some route
//! (or some queued outbound message) holds it; [`AttrStore::release`] and [`AttrStore::purge`]
//! drop the store's own reference once nobody else has one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::wire::{
    Aggregator, AsPath, AsSegment, AsSegmentType, Asn, Attribute, AttributeValue, Community,
    ExtendedCommunity, LargeCommunity, MpNextHop, Origin,
};

/// Next hop of a route as the RIB uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// IPv6 global address with the optional link-local one (RFC 2545 §3); also the next hop of
    /// IPv4 routes over an IPv6 session (RFC 8950).
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl NextHop {
    /// The address the kernel route points at.
    pub fn addr(&self) -> IpAddr {
        match *self {
            NextHop::V4(a) => IpAddr::V4(a),
            NextHop::V6 { global, .. } => IpAddr::V6(global),
        }
    }

    /// `0.0.0.0` / `::`: a locally originated route whose next hop is "this router".
    pub fn is_unspecified(&self) -> bool {
        self.addr().is_unspecified()
    }

    pub fn from_addr(a: IpAddr) -> NextHop {
        match a {
            IpAddr::V4(v4) => NextHop::V4(v4),
            IpAddr::V6(global) => NextHop::V6 {
                global,
                link_local: None,
            },
        }
    }
}

impl From<&MpNextHop> for Option<NextHop> {
    fn from(m: &MpNextHop) -> Self {
        match m {
            MpNextHop::Ipv4(a) => Some(NextHop::V4(*a)),
            MpNextHop::Ipv6 { global, link_local } => Some(NextHop::V6 {
                global: *global,
                link_local: *link_local,
            }),
            _ => None,
        }
    }
}

/// An attribute this speaker does not interpret, passed on as received (RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownAttr {
    pub type_code: u8,
    pub transitive: bool,
    pub partial: bool,
    pub value: Box<[u8]>,
}

/// The path attributes of a route, in canonical form: every field has one representation, so
/// equal sets hash equal and intern to one allocation. Community lists are sorted and
/// deduplicated (their order carries no meaning, RFC 1997 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: AsPath,
    pub next_hop: NextHop,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<Community>,
    pub ext_communities: Vec<ExtendedCommunity>,
    pub large_communities: Vec<LargeCommunity>,
    /// RFC 4456 §7.
    pub originator_id: Option<Ipv4Addr>,
    /// RFC 4456 §7, most recent cluster first.
    pub cluster_list: Vec<Ipv4Addr>,
    /// RFC 9234 Only-To-Customer.
    pub otc: Option<Asn>,
    pub unknown: Vec<UnknownAttr>,
}

impl PathAttrs {
    /// A minimal attribute set: ORIGIN IGP, empty AS_PATH, the given next hop. This is what a
    /// locally originated prefix starts with.
    pub fn new(next_hop: NextHop) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: Vec::new(),
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            otc: None,
            unknown: Vec::new(),
        }
    }

    /// Restores the canonical form after an edit: no empty AS_PATH segments (a path of
    /// `AS_SEQUENCE []` and an empty path mean the same), sorted, deduplicated community lists.
    pub fn canonicalize(&mut self) {
        self.as_path.segments.retain(|s| !s.asns.is_empty());
        self.communities.sort_unstable();
        self.communities.dedup();
        self.ext_communities.sort_unstable();
        self.ext_communities.dedup();
        self.large_communities.sort_unstable();
        self.large_communities.dedup();
    }

    /// Builds the canonical set from a decoded UPDATE's attribute list. `next_hop` is the one
    /// that applies to the NLRI being processed (NEXT_HOP for classic IPv4 NLRI, the
    /// MP_REACH_NLRI next hop for MP NLRI). With `four_octet_as` false, AS4_PATH and
    /// AS4_AGGREGATOR are merged in as RFC 6793 §4.2.3 says.
    pub fn from_wire(attrs: &[Attribute], next_hop: NextHop, four_octet_as: bool) -> PathAttrs {
        let mut p = PathAttrs::new(next_hop);
        let mut as4_path = None;
        let mut as4_aggregator = None;
        for a in attrs {
            match &a.value {
                AttributeValue::Origin(o) => p.origin = *o,
                AttributeValue::AsPath(path) => p.as_path = path.clone(),
                AttributeValue::NextHop(_)
                | AttributeValue::MpReachNlri(_)
                | AttributeValue::MpUnreachNlri(_) => {}
                AttributeValue::MultiExitDisc(m) => p.med = Some(*m),
                AttributeValue::LocalPref(l) => p.local_pref = Some(*l),
                AttributeValue::AtomicAggregate => p.atomic_aggregate = true,
                AttributeValue::Aggregator(g) => p.aggregator = Some(*g),
                AttributeValue::Communities(c) => p.communities = c.clone(),
                AttributeValue::OriginatorId(o) => p.originator_id = Some(*o),
                AttributeValue::ClusterList(c) => p.cluster_list = c.clone(),
                AttributeValue::ExtendedCommunities(c) => p.ext_communities = c.clone(),
                AttributeValue::As4Path(path) => as4_path = Some(path),
                AttributeValue::As4Aggregator(g) => as4_aggregator = Some(*g),
                AttributeValue::LargeCommunity(c) => p.large_communities = c.clone(),
                AttributeValue::Otc(asn) => p.otc = Some(*asn),
                AttributeValue::Unknown {
                    type_code,
                    transitive,
                    value,
                    ..
                } => p.unknown.push(UnknownAttr {
                    type_code: *type_code,
                    transitive: *transitive,
                    partial: a.partial,
                    value: value.clone().into_boxed_slice(),
                }),
            }
        }
        if !four_octet_as {
            // RFC 6793 §4.2.3: AS4_AGGREGATOR counts only when AGGREGATOR says AS_TRANS; if it
            // does not, a 2-octet speaker aggregated after the 4-octet one and AS4_PATH is stale.
            let mut use_as4_path = true;
            if let (Some(g), Some(g4)) = (p.aggregator, as4_aggregator) {
                if g.asn == Asn::TRANS {
                    p.aggregator = Some(g4);
                } else {
                    use_as4_path = false;
                }
            }
            if let (Some(as4), true) = (as4_path, use_as4_path) {
                p.as_path = merge_as4_path(&p.as_path, as4);
            }
        }
        p.unknown.sort_by_key(|u| u.type_code);
        p.canonicalize();
        p
    }

    /// The wire attribute list for this set, without NEXT_HOP and MP attributes (the caller
    /// adds those per family). With `four_octet_as` false, ASes above 65535 become AS_TRANS in
    /// AS_PATH and AGGREGATOR and the real values travel in AS4_PATH / AS4_AGGREGATOR (RFC
    /// 6793 §4.2.2).
    pub fn to_wire(&self, four_octet_as: bool, include_local_pref: bool) -> Vec<Attribute> {
        let mut out: Vec<Attribute> = Vec::with_capacity(8);
        out.push(AttributeValue::Origin(self.origin).into());
        let needs_as4 = !four_octet_as
            && self
                .as_path
                .segments
                .iter()
                .flat_map(|s| &s.asns)
                .any(|a| a.0 > 0xffff);
        if needs_as4 {
            let mapped = AsPath {
                segments: self
                    .as_path
                    .segments
                    .iter()
                    .map(|s| AsSegment {
                        kind: s.kind,
                        asns: s
                            .asns
                            .iter()
                            .map(|a| if a.0 > 0xffff { Asn::TRANS } else { *a })
                            .collect(),
                    })
                    .collect(),
            };
            out.push(AttributeValue::AsPath(mapped).into());
        } else {
            out.push(AttributeValue::AsPath(self.as_path.clone()).into());
        }
        if let Some(m) = self.med {
            out.push(AttributeValue::MultiExitDisc(m).into());
        }
        if let (Some(l), true) = (self.local_pref, include_local_pref) {
            out.push(AttributeValue::LocalPref(l).into());
        }
        if self.atomic_aggregate {
            out.push(AttributeValue::AtomicAggregate.into());
        }
        let mut as4_aggregator = None;
        if let Some(g) = self.aggregator {
            if !four_octet_as && g.asn.0 > 0xffff {
                out.push(
                    AttributeValue::Aggregator(Aggregator {
                        asn: Asn::TRANS,
                        address: g.address,
                    })
                    .into(),
                );
                as4_aggregator = Some(g);
            } else {
                out.push(AttributeValue::Aggregator(g).into());
            }
        }
        if !self.communities.is_empty() {
            out.push(AttributeValue::Communities(self.communities.clone()).into());
        }
        if let Some(o) = self.originator_id {
            out.push(AttributeValue::OriginatorId(o).into());
        }
        if !self.cluster_list.is_empty() {
            out.push(AttributeValue::ClusterList(self.cluster_list.clone()).into());
        }
        if !self.ext_communities.is_empty() {
            out.push(AttributeValue::ExtendedCommunities(self.ext_communities.clone()).into());
        }
        if needs_as4 {
            out.push(AttributeValue::As4Path(self.as_path.clone()).into());
        }
        if let Some(g) = as4_aggregator {
            out.push(AttributeValue::As4Aggregator(g).into());
        }
        if !self.large_communities.is_empty() {
            out.push(AttributeValue::LargeCommunity(self.large_communities.clone()).into());
        }
        if let Some(o) = self.otc {
            out.push(AttributeValue::Otc(o).into());
        }
        for u in &self.unknown {
            // RFC 4271 §5: unrecognised non-transitive attributes are not passed along;
            // transitive ones go on with Partial set.
            if u.transitive {
                let mut a = Attribute::new(AttributeValue::Unknown {
                    type_code: u.type_code,
                    optional: true,
                    transitive: true,
                    value: u.value.to_vec(),
                });
                a.partial = true;
                out.push(a);
            }
        }
        out
    }

    /// The AS the route was received from (RFC 4271 §9.1.2.2 (c)): the first AS of a leading
    /// AS_SEQUENCE, `None` for routes from our own AS.
    pub fn neighbor_as(&self) -> Option<Asn> {
        let first = self.as_path.segments.iter().find(|s| {
            !matches!(
                s.kind,
                AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet
            )
        })?;
        match first.kind {
            AsSegmentType::Sequence => first.asns.first().copied(),
            _ => None,
        }
    }

    /// The AS that originated the route: the last AS of a trailing AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<Asn> {
        let last = self.as_path.segments.last()?;
        match last.kind {
            AsSegmentType::Sequence => last.asns.last().copied(),
            _ => None,
        }
    }

    /// Whether `asn` appears anywhere in the AS path (RFC 4271 §9.1.2 loop detection).
    pub fn as_path_contains(&self, asn: Asn) -> bool {
        self.as_path.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// Prepends `asn` `count` times to the leading AS_SEQUENCE (RFC 4271 §5.1.2), starting a new
    /// segment when the first one is not a sequence or is full (255 ASes).
    pub fn prepend(&mut self, asn: Asn, count: usize) {
        for _ in 0..count {
            match self.as_path.segments.first_mut() {
                Some(s) if s.kind == AsSegmentType::Sequence && s.asns.len() < 255 => {
                    s.asns.insert(0, asn)
                }
                _ => self.as_path.segments.insert(
                    0,
                    AsSegment {
                        kind: AsSegmentType::Sequence,
                        asns: vec![asn],
                    },
                ),
            }
        }
    }
}

/// RFC 6793 §4.2.3: the leading ASes of AS_PATH that AS4_PATH lacks (added by 2-octet speakers
/// after the last 4-octet one), followed by AS4_PATH. When AS4_PATH is longer than AS_PATH it is
/// ignored.
fn merge_as4_path(as_path: &AsPath, as4: &AsPath) -> AsPath {
    let n2: usize = as_path.segments.iter().map(|s| s.asns.len()).sum();
    let n4: usize = as4.segments.iter().map(|s| s.asns.len()).sum();
    if n4 > n2 {
        return as_path.clone();
    }
    let mut keep = n2 - n4;
    let mut segments = Vec::new();
    for s in &as_path.segments {
        if keep == 0 {
            break;
        }
        let take = keep.min(s.asns.len());
        segments.push(AsSegment {
            kind: s.kind,
            asns: s.asns[..take].to_vec(),
        });
        keep -= take;
    }
    for s in &as4.segments {
        match segments.last_mut() {
            // Join the seam so the result reads as one sequence where both sides were.
            Some(last)
                if last.kind == AsSegmentType::Sequence
                    && s.kind == AsSegmentType::Sequence
                    && last.asns.len() + s.asns.len() <= 255 =>
            {
                last.asns.extend_from_slice(&s.asns)
            }
            _ => segments.push(s.clone()),
        }
    }
    AsPath { segments }
}

/// Deduplicating store of attribute sets (see the module docs).
#[derive(Debug, Default)]
pub struct AttrStore {
    set: HashSet<Arc<PathAttrs>, foldhash::fast::RandomState>,
}

impl AttrStore {
    pub fn new() -> AttrStore {
        AttrStore::default()
    }

    /// The shared copy of `attrs`, allocating it on first sight.
    pub fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.set.get(&attrs) {
            return a.clone();
        }
        let a = Arc::new(attrs);
        self.set.insert(a.clone());
        a
    }

    /// The shared copy of an already-allocated set (used after policy returns one unchanged).
    pub fn intern_arc(&mut self, attrs: &Arc<PathAttrs>) -> Arc<PathAttrs> {
        if let Some(a) = self.set.get(attrs.as_ref()) {
            return a.clone();
        }
        self.set.insert(attrs.clone());
        attrs.clone()
    }

    /// Drops a route's reference; frees the set when the store's is the only one left.
    pub fn release(&mut self, attrs: Arc<PathAttrs>) {
        // Two references: the store's and `attrs`.
        if Arc::strong_count(&attrs) == 2 {
            self.set.remove(attrs.as_ref());
        }
    }

    /// Frees every set nobody but the store holds (sets released while a queued message or a
    /// subscriber still had them).
    pub fn purge(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
    }

    /// Number of distinct sets held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}
