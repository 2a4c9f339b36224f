//! Best-path selection (RFC 4271 §9.1.2) and multipath (ECMP) sets, as a pure function over the
//! candidate paths of one prefix. Owns the decision order only; it does not store routes.
//!
//! The steps, in order, each keeping only the candidates that are best at that step:
//! 1. next hop resolvable (the caller's [`IgpCost`] hook answers; §9.1.2.1),
//! 2. highest degree of preference: LOCAL_PREF, or [`BestPathConfig::default_local_pref`] when
//!    absent (eBGP-learned routes carry none: their LOCAL_PREF is ignored on receipt, §5.1.5),
//! 3. shortest AS_PATH (an AS_SET counts 1, confederation segments 0; §9.1.2.2 (a)),
//! 4. lowest ORIGIN (IGP < EGP < INCOMPLETE; (b)),
//! 5. MED: a candidate is removed when another with the same neighbour AS has a lower MED; a
//!    missing MED counts as 0, the lowest value, as §9.1.2.2 (c) says,
//! 6. locally originated over eBGP-learned over iBGP-learned ((d)),
//! 7. lowest IGP cost to the next hop ((e)).
//!
//! The candidates left after step 7 are equal for forwarding: that is the ECMP set. It is ordered
//! by the remaining tie breaks — lowest router id (ORIGINATOR_ID when present, RFC 4456 §9),
//! shortest CLUSTER_LIST, lowest peer address ((g)), lowest ADD-PATH id — and its first member
//! is the best path. Step (f)'s "oldest route" rule is not used: it would make the outcome
//! depend on arrival order, which the tests forbid.
//!
//! Because every step filters a *set*, the result does not depend on the order the candidates
//! are given in (the MED rule is not transitive, so a pairwise comparison would).
//!
//! [`compare_new`] is the one pairwise shortcut that is exact: a path added to a prefix whose
//! best is known, judged by the steps before MED (1–4), which depend on the path alone.
//! The current best holds the extreme values of those steps among the prefix's usable paths,
//! so a new path worse there is eliminated without changing what the others compete on, and a
//! new path better there eliminates all of them. Only a tie needs the full run.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::attrs::{NextHop, PathAttrs};
use super::peer::PeerInfo;
use super::peer::PeerType;

/// The caller's view of the IGP: the cost to reach a next hop, `None` when it is unreachable.
pub trait IgpCost {
    fn cost(&self, next_hop: IpAddr) -> Option<u32>;
}

/// Every next hop reachable at cost 0: a directly connected fabric (the node agent's case).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatIgp;

impl IgpCost for FlatIgp {
    fn cost(&self, _: IpAddr) -> Option<u32> {
        Some(0)
    }
}

impl<F: Fn(IpAddr) -> Option<u32>> IgpCost for F {
    fn cost(&self, next_hop: IpAddr) -> Option<u32> {
        self(next_hop)
    }
}

/// Decision-process settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BestPathConfig {
    /// LOCAL_PREF assumed for routes without one (RFC 4271 §9.1.1 leaves it to configuration).
    pub default_local_pref: u32,
    /// Largest ECMP set; 1 disables multipath.
    pub max_paths: usize,
}

impl Default for BestPathConfig {
    fn default() -> Self {
        BestPathConfig {
            default_local_pref: 100,
            max_paths: 1,
        }
    }
}

/// One candidate path as the decision process sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub attrs: &'a PathAttrs,
    pub peer: &'a PeerInfo,
    pub path_id: u32,
}

impl Candidate<'_> {
    fn local_pref(&self, cfg: &BestPathConfig) -> u32 {
        self.attrs.local_pref.unwrap_or(cfg.default_local_pref)
    }

    fn source_rank(&self) -> u8 {
        match self.peer.peer_type {
            PeerType::Local => 0,
            PeerType::Ebgp => 1,
            PeerType::Ibgp | PeerType::RrClient => 2,
        }
    }

    /// RFC 4456 §9: ORIGINATOR_ID stands in for the router id when present.
    fn router_id(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.peer.router_id)
    }

    /// The final tie breaks (§9.1.2.2 (f)–(g), RFC 4456 §9), a total order.
    fn tie_break(&self, other: &Self) -> Ordering {
        self.router_id()
            .cmp(&other.router_id())
            .then(
                self.attrs
                    .cluster_list
                    .len()
                    .cmp(&other.attrs.cluster_list.len()),
            )
            .then(self.peer.address.cmp(&other.peer.address))
            .then(self.peer.id.cmp(&other.peer.id))
            .then(self.path_id.cmp(&other.path_id))
    }
}

fn igp_cost(nh: &NextHop, igp: &dyn IgpCost) -> Option<u32> {
    if nh.is_unspecified() {
        // Locally originated: "this router", always reachable.
        return Some(0);
    }
    igp.cost(nh.addr())
}

/// The per-candidate values the elimination steps compare, computed once.
#[derive(Clone, Copy)]
struct Key {
    index: usize,
    local_pref: u32,
    path_len: usize,
    origin: u8,
    neighbor_as: Option<u32>,
    med: u32,
    source_rank: u8,
    igp_cost: u32,
    med_loses: bool,
}

/// Keeps the candidates whose key is minimal.
fn keep_min<K: Ord>(set: &mut Vec<Key>, key: impl Fn(&Key) -> K) {
    if set.len() < 2 {
        return;
    }
    let Some(best) = set.iter().map(&key).min() else {
        return;
    };
    set.retain(|k| key(k) == best);
}

/// How a newly added path compares with the current best, by steps 1–4 (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    /// Eliminated by steps 1–4: the selection of the other paths stands as it is.
    Loses,
    /// Better at steps 1–4 than the best, hence than every other path: it alone is selected.
    Wins,
    /// Equal through step 4: only the full decision process can tell.
    Undecided,
}

/// Compares `new`, a path being added, with `best`, the first path [`select`] returned for the
/// prefix's other paths (with the same `cfg` and `igp`). Exact: `Loses` means `select` over all
/// paths returns what it returned before, `Wins` that it returns `new` alone.
pub fn compare_new(
    best: &Candidate<'_>,
    new: &Candidate<'_>,
    cfg: &BestPathConfig,
    igp: &dyn IgpCost,
) -> Incremental {
    if igp_cost(&new.attrs.next_hop, igp).is_none() {
        return Incremental::Loses;
    }
    let early = |c: &Candidate<'_>| {
        (
            std::cmp::Reverse(c.local_pref(cfg)),
            c.attrs.as_path.path_len(),
            c.attrs.origin as u8,
        )
    };
    match early(new).cmp(&early(best)) {
        Ordering::Less => Incremental::Wins,
        Ordering::Greater => Incremental::Loses,
        Ordering::Equal => Incremental::Undecided,
    }
}

/// Runs the decision process. Returns the indices (into `cands`) of the ECMP set, best path
/// first, at most `cfg.max_paths` long (at least 1 when any candidate is eligible); empty when
/// no candidate is usable.
pub fn select(cands: &[Candidate<'_>], cfg: &BestPathConfig, igp: &dyn IgpCost) -> Vec<usize> {
    // One scratch vector per thread: selection runs once per changed prefix, and allocating
    // the key set each time was a fifth of the same-prefix benchmark. (A re-entrant call, which
    // nothing makes, would get a fresh vector.)
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut set) => select_in(&mut set, cands, cfg, igp),
        Err(_) => select_in(&mut Vec::new(), cands, cfg, igp),
    })
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Key>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn select_in(
    set: &mut Vec<Key>,
    cands: &[Candidate<'_>],
    cfg: &BestPathConfig,
    igp: &dyn IgpCost,
) -> Vec<usize> {
    // Unresolvable next hops are dropped first (§9.1.2.1).
    set.clear();
    set.extend(cands.iter().enumerate().filter_map(|(index, c)| {
        igp_cost(&c.attrs.next_hop, igp).map(|igp_cost| Key {
            index,
            local_pref: c.local_pref(cfg),
            path_len: c.attrs.as_path.path_len(),
            origin: c.attrs.origin as u8,
            neighbor_as: c.attrs.neighbor_as().map(|a| a.0),
            med: c.attrs.med.unwrap_or(0),
            source_rank: c.source_rank(),
            igp_cost,
            med_loses: false,
        })
    }));
    keep_min(set, |k| std::cmp::Reverse(k.local_pref));
    keep_min(set, |k| k.path_len);
    keep_min(set, |k| k.origin);
    if set.len() > 1 {
        // (c): remove a route when another from the same neighbour AS has a lower MED. Marks
        // first, removes after, so every route is judged against the same set and the outcome
        // is order independent.
        for i in 0..set.len() {
            let k = set[i];
            set[i].med_loses = set
                .iter()
                .any(|o| o.neighbor_as == k.neighbor_as && o.med < k.med);
        }
        set.retain(|k| !k.med_loses);
    }
    keep_min(set, |k| k.source_rank);
    keep_min(set, |k| k.igp_cost);
    let mut out: Vec<usize> = set.iter().map(|k| k.index).collect();
    out.sort_by(|&a, &b| cands[a].tie_break(&cands[b]));
    out.truncate(cfg.max_paths.max(1));
    out
}
