//! One address family's Loc-RIB: every usable path per prefix (post-import-policy, so this is
//! also every peer's Adj-RIB-In), with the ECMP set kept at the front and the best path first.
//! Owns storage and re-selection; import rules and policy run before a path gets here.
//!
//! Layout (see `docs/architecture.md`, "RIB memory"): a hash map from the compact prefix to
//! [`Paths`]. The common case, one path for a prefix, is stored inline (16 octets: the interned
//! attribute pointer, the peer id with the stale flag, the ADD-PATH id); only prefixes with
//! several paths pay for a boxed vector.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::attrs::{AttrStore, PathAttrs};
use super::best::{BestPathConfig, Candidate, IgpCost, select};
use super::peer::{PeerId, PeerInfo};
use super::prefix::RibPrefix;

const STALE: u32 = 1 << 31;

/// One path for a prefix: what it says and who said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    attrs: Arc<PathAttrs>,
    /// Peer id in the low 30 bits, [`STALE`] on top.
    meta: u32,
    path_id: u32,
}

impl Path {
    pub fn new(attrs: Arc<PathAttrs>, peer: PeerId, path_id: u32) -> Path {
        Path {
            attrs,
            meta: peer.0 & PeerId::MAX,
            path_id,
        }
    }
    pub fn attrs(&self) -> &Arc<PathAttrs> {
        &self.attrs
    }
    /// The attribute pointer, giving up the path (to hand back to the store).
    pub fn into_attrs(self) -> Arc<PathAttrs> {
        self.attrs
    }
    pub fn peer(&self) -> PeerId {
        PeerId(self.meta & PeerId::MAX)
    }
    /// RFC 7911 path identifier (0 without ADD-PATH).
    pub fn path_id(&self) -> u32 {
        self.path_id
    }
    /// Kept from a restarting peer until its End-of-RIB (RFC 4724 §4.2).
    pub fn is_stale(&self) -> bool {
        self.meta & STALE != 0
    }
    /// Same route: same source, same id, same attributes (by pointer: they are interned).
    pub fn same_as(&self, other: &Path) -> bool {
        self.peer() == other.peer()
            && self.path_id == other.path_id
            && Arc::ptr_eq(&self.attrs, &other.attrs)
    }
    fn key(&self) -> (PeerId, u32) {
        (self.peer(), self.path_id)
    }
}

#[derive(Debug)]
enum Paths {
    /// One path, selected.
    One(Path),
    /// Several paths, or one unusable one. `paths[..ecmp]` is the ECMP set, best first.
    Many(Box<Multi>),
}

#[derive(Debug)]
struct Multi {
    paths: Vec<Path>,
    ecmp: usize,
}

impl Paths {
    fn all(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(m) => &m.paths,
        }
    }
    fn ecmp(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(m) => &m.paths[..m.ecmp],
        }
    }
}

/// What selection needs besides the paths.
pub struct SelectCtx<'a> {
    pub peers: &'a HashMap<PeerId, PeerInfo, foldhash::fast::RandomState>,
    pub cfg: &'a BestPathConfig,
    pub igp: &'a dyn IgpCost,
}

/// A change of the best path or of the ECMP set of one prefix.
#[derive(Debug, Clone)]
pub struct BestChange<P> {
    pub prefix: P,
    /// Best path before (`None`: the prefix was unreachable).
    pub old: Option<Path>,
    /// Best path now (`None`: withdrawn).
    pub new: Option<Path>,
    /// Distinct next hops of the new ECMP set, sorted; empty when withdrawn. This is what the
    /// node agent programs into the kernel.
    pub next_hops: Vec<IpAddr>,
}

impl<P> BestChange<P> {
    /// Whether the best path itself changed (not only the rest of the ECMP set).
    pub fn best_changed(&self) -> bool {
        match (&self.old, &self.new) {
            (Some(a), Some(b)) => !a.same_as(b),
            (None, None) => false,
            _ => true,
        }
    }
}

fn next_hops(set: &[Path]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = set.iter().map(|p| p.attrs.next_hop.addr()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One family's table.
#[derive(Debug)]
pub struct Table<P: RibPrefix> {
    map: HashMap<P, Paths, foldhash::fast::RandomState>,
}

impl<P: RibPrefix> Default for Table<P> {
    fn default() -> Self {
        Table {
            map: HashMap::default(),
        }
    }
}

/// Result of inserting or removing one path.
pub struct Applied<P> {
    /// The path that was replaced or removed, if any (its attributes still to be released).
    pub previous: Option<Path>,
    pub change: Option<BestChange<P>>,
}

impl<P: RibPrefix> Table<P> {
    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All paths of a prefix, ECMP set first, best first.
    pub fn paths(&self, prefix: &P) -> &[Path] {
        self.map.get(prefix).map(Paths::all).unwrap_or(&[])
    }

    /// The ECMP set, best first (empty when unreachable).
    pub fn ecmp(&self, prefix: &P) -> &[Path] {
        self.map.get(prefix).map(Paths::ecmp).unwrap_or(&[])
    }

    pub fn best(&self, prefix: &P) -> Option<&Path> {
        self.ecmp(prefix).first()
    }

    /// Every prefix with its paths (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&P, &[Path])> {
        self.map.iter().map(|(p, e)| (p, e.all()))
    }

    /// Every prefix with its best path (unordered).
    pub fn iter_best(&self) -> impl Iterator<Item = (&P, &Path)> {
        self.map
            .iter()
            .filter_map(|(p, e)| e.ecmp().first().map(|b| (p, b)))
    }

    /// Adds `path`, replacing the one with the same peer and path id.
    pub fn insert(&mut self, prefix: P, path: Path, cx: &SelectCtx<'_>) -> Applied<P> {
        match self.map.get_mut(&prefix) {
            None => {
                let entry = reselect(vec![path], cx);
                let change = change_from(prefix, None, &[], &entry);
                self.map.insert(prefix, entry);
                Applied {
                    previous: None,
                    change,
                }
            }
            Some(entry) => {
                let (old_best, old_set) = snapshot(entry);
                let mut paths = take_paths(entry);
                let previous = match paths.iter().position(|p| p.key() == path.key()) {
                    Some(i) => Some(std::mem::replace(&mut paths[i], path)),
                    None => {
                        paths.push(path);
                        None
                    }
                };
                *entry = reselect(paths, cx);
                let change = change_from(prefix, old_best, &old_set, entry);
                Applied { previous, change }
            }
        }
    }

    /// Removes the path of `peer` with `path_id`.
    pub fn remove(
        &mut self,
        prefix: P,
        peer: PeerId,
        path_id: u32,
        cx: &SelectCtx<'_>,
    ) -> Applied<P> {
        let Some(entry) = self.map.get_mut(&prefix) else {
            return Applied {
                previous: None,
                change: None,
            };
        };
        let Some(i) = entry.all().iter().position(|p| p.key() == (peer, path_id)) else {
            return Applied {
                previous: None,
                change: None,
            };
        };
        let (old_best, old_set) = snapshot(entry);
        let mut paths = take_paths(entry);
        let previous = Some(paths.swap_remove(i));
        if paths.is_empty() {
            self.map.remove(&prefix);
            return Applied {
                previous,
                change: Some(BestChange {
                    prefix,
                    old: old_best,
                    new: None,
                    next_hops: Vec::new(),
                }),
            };
        }
        *entry = reselect(paths, cx);
        let change = change_from(prefix, old_best, &old_set, entry);
        Applied { previous, change }
    }

    /// Removes every path of `peer` for which `pred` holds; removed attributes go back to
    /// `store`, changes to `changes`. Returns how many paths were removed.
    pub fn remove_where(
        &mut self,
        peer: PeerId,
        pred: impl Fn(&Path) -> bool,
        cx: &SelectCtx<'_>,
        store: &mut AttrStore,
        changes: &mut Vec<BestChange<P>>,
    ) -> usize {
        let mut removed = 0;
        self.map.retain(|prefix, entry| {
            if !entry.all().iter().any(|p| p.peer() == peer && pred(p)) {
                return true;
            }
            let (old_best, old_set) = snapshot(entry);
            let mut paths = take_paths(entry);
            let mut kept = Vec::with_capacity(paths.len());
            for p in paths.drain(..) {
                if p.peer() == peer && pred(&p) {
                    removed += 1;
                    store.release(p.attrs);
                } else {
                    kept.push(p);
                }
            }
            if kept.is_empty() {
                changes.push(BestChange {
                    prefix: *prefix,
                    old: old_best,
                    new: None,
                    next_hops: Vec::new(),
                });
                return false;
            }
            *entry = reselect(kept, cx);
            if let Some(c) = change_from(*prefix, old_best, &old_set, entry) {
                changes.push(c);
            }
            true
        });
        removed
    }

    /// Sets or clears the stale flag on every path of `peer`; returns how many paths.
    pub fn set_stale(&mut self, peer: PeerId, stale: bool) -> usize {
        let mut n = 0;
        let mark = |p: &mut Path| {
            if p.peer() == peer {
                if stale {
                    p.meta |= STALE;
                } else {
                    p.meta &= !STALE;
                }
                true
            } else {
                false
            }
        };
        for entry in self.map.values_mut() {
            match entry {
                Paths::One(p) => n += usize::from(mark(p)),
                Paths::Many(m) => {
                    for p in &mut m.paths {
                        n += usize::from(mark(p));
                    }
                }
            }
        }
        n
    }

    /// Re-runs selection for every prefix (after the IGP costs or the peers changed).
    pub fn reselect_all(&mut self, cx: &SelectCtx<'_>, changes: &mut Vec<BestChange<P>>) {
        for (prefix, entry) in self.map.iter_mut() {
            let (old_best, old_set) = snapshot(entry);
            let paths = take_paths(entry);
            *entry = reselect(paths, cx);
            if let Some(c) = change_from(*prefix, old_best, &old_set, entry) {
                changes.push(c);
            }
        }
    }
}

/// The best path and ECMP set identities before a change.
fn snapshot(entry: &Paths) -> (Option<Path>, Vec<(PeerId, u32, *const PathAttrs)>) {
    let set = entry.ecmp();
    let ids = if set.len() > 1 {
        set.iter()
            .map(|p| (p.peer(), p.path_id, Arc::as_ptr(&p.attrs)))
            .collect()
    } else {
        Vec::new()
    };
    (set.first().cloned(), ids)
}

fn take_paths(entry: &mut Paths) -> Vec<Path> {
    // A placeholder that never escapes: the caller overwrites `entry` right away.
    match std::mem::replace(
        entry,
        Paths::Many(Box::new(Multi {
            paths: Vec::new(),
            ecmp: 0,
        })),
    ) {
        Paths::One(p) => vec![p],
        Paths::Many(m) => m.paths,
    }
}

fn change_from<P>(
    prefix: P,
    old_best: Option<Path>,
    old_set: &[(PeerId, u32, *const PathAttrs)],
    entry: &Paths,
) -> Option<BestChange<P>> {
    let set = entry.ecmp();
    let new_best = set.first();
    let best_same = match (&old_best, new_best) {
        (Some(a), Some(b)) => a.same_as(b),
        (None, None) => true,
        _ => false,
    };
    let set_same = best_same
        && if set.len() > 1 || !old_set.is_empty() {
            old_set.len() == set.len()
                && old_set
                    .iter()
                    .zip(set)
                    .all(|(o, p)| *o == (p.peer(), p.path_id, Arc::as_ptr(&p.attrs)))
        } else {
            true
        };
    if set_same {
        return None;
    }
    Some(BestChange {
        prefix,
        old: old_best,
        new: new_best.cloned(),
        next_hops: next_hops(set),
    })
}

fn reselect(mut paths: Vec<Path>, cx: &SelectCtx<'_>) -> Paths {
    if paths.len() == 1 {
        let p = &paths[0];
        let usable =
            p.attrs.next_hop.is_unspecified() || cx.igp.cost(p.attrs.next_hop.addr()).is_some();
        let known = cx.peers.contains_key(&p.peer());
        if usable && known {
            return Paths::One(paths.swap_remove(0));
        }
        return Paths::Many(Box::new(Multi { paths, ecmp: 0 }));
    }
    let order = {
        let cands: Vec<Candidate<'_>> = paths
            .iter()
            .filter_map(|p| {
                cx.peers.get(&p.peer()).map(|peer| Candidate {
                    attrs: &p.attrs,
                    peer,
                    path_id: p.path_id,
                })
            })
            .collect();
        // Paths from unknown peers cannot exist (peers are removed with their routes), but if
        // one did it would be skipped rather than break the indices below.
        if cands.len() != paths.len() {
            Vec::new()
        } else {
            select(&cands, cx.cfg, cx.igp)
        }
    };
    let ecmp = order.len();
    // Move the selected paths to the front, in rank order; the rest keep their order.
    let mut slots: Vec<Option<Path>> = paths.drain(..).map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for &i in &order {
        if let Some(p) = slots[i].take() {
            out.push(p);
        }
    }
    out.extend(slots.into_iter().flatten());
    Paths::Many(Box::new(Multi { paths: out, ecmp }))
}
