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
use super::best::{BestPathConfig, Candidate, IgpCost, Incremental, compare_new, select};
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
    pub next_hops: NextHops,
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

/// The distinct next hops of an ECMP set, sorted. One next hop (the common case) is kept
/// inline: a change record then costs no allocation of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NextHops {
    #[default]
    None,
    One(IpAddr),
    Many(Box<[IpAddr]>),
}

impl std::ops::Deref for NextHops {
    type Target = [IpAddr];
    fn deref(&self) -> &[IpAddr] {
        match self {
            NextHops::None => &[],
            NextHops::One(a) => std::slice::from_ref(a),
            NextHops::Many(v) => v,
        }
    }
}

fn next_hops(set: &[Path]) -> NextHops {
    match set {
        [] => NextHops::None,
        [p] => NextHops::One(p.attrs.next_hop.addr()),
        _ => {
            let mut v: Vec<IpAddr> = set.iter().map(|p| p.attrs.next_hop.addr()).collect();
            v.sort_unstable();
            v.dedup();
            match v.as_slice() {
                [a] => NextHops::One(*a),
                _ => NextHops::Many(v.into_boxed_slice()),
            }
        }
    }
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
        use std::collections::hash_map::Entry;
        match self.map.entry(prefix) {
            Entry::Vacant(v) => {
                // The common case: a prefix's first path. No vector, no selection run.
                let entry = if usable(&path, cx) {
                    Paths::One(path)
                } else {
                    Paths::Many(Box::new(Multi {
                        paths: vec![path],
                        ecmp: 0,
                    }))
                };
                let change = change_from(prefix, None, &[], &entry);
                v.insert(entry);
                Applied {
                    previous: None,
                    change,
                }
            }
            Entry::Occupied(mut o) => {
                let entry = o.get_mut();
                let (old_best, old_set) = snapshot(entry);
                let had_best = old_best.is_some();
                let previous = match entry {
                    Paths::One(p) if p.key() == path.key() => Some(std::mem::replace(p, path)),
                    Paths::One(p) => {
                        let first = p.clone();
                        *entry = Paths::Many(Box::new(Multi {
                            paths: vec![first, path],
                            ecmp: 0,
                        }));
                        None
                    }
                    Paths::Many(m) => match m.paths.iter().position(|p| p.key() == path.key()) {
                        Some(i) => Some(std::mem::replace(&mut m.paths[i], path)),
                        None => {
                            // Exact growth: a prefix's paths stay at 16 octets each, not up
                            // to twice that after a doubling.
                            m.paths.reserve_exact(1);
                            m.paths.push(path);
                            None
                        }
                    },
                };
                // A new path (not a replacement) is judged against the best alone when that
                // decides it (`best::compare_new`); otherwise the full decision process runs.
                if previous.is_some() || !select_added(entry, had_best, cx) {
                    reselect(entry, cx);
                }
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
        let none = || Applied {
            previous: None,
            change: None,
        };
        let Some(entry) = self.map.get_mut(&prefix) else {
            return none();
        };
        let Some(i) = entry.all().iter().position(|p| p.key() == (peer, path_id)) else {
            return none();
        };
        let (old_best, old_set) = snapshot(entry);
        let previous = match entry {
            Paths::One(_) => match self.map.remove(&prefix) {
                Some(Paths::One(p)) => Some(p),
                _ => None,
            },
            Paths::Many(m) if m.paths.len() == 1 => {
                let p = m.paths.pop();
                self.map.remove(&prefix);
                p
            }
            Paths::Many(m) => {
                let p = m.paths.swap_remove(i);
                reselect(entry, cx);
                let change = change_from(prefix, old_best, &old_set, entry);
                return Applied {
                    previous: Some(p),
                    change,
                };
            }
        };
        Applied {
            previous,
            change: Some(BestChange {
                prefix,
                old: old_best,
                new: None,
                next_hops: NextHops::default(),
            }),
        }
    }

    /// Removes every path of `peer` for which `pred` holds; removed attributes go back to
    /// `store`, changes to `changes`, and with `touched` every prefix that lost a path.
    /// Returns how many paths were removed.
    pub fn remove_where(
        &mut self,
        peer: PeerId,
        pred: impl Fn(&Path) -> bool,
        cx: &SelectCtx<'_>,
        store: &mut AttrStore,
        changes: &mut Vec<BestChange<P>>,
        mut touched: Option<&mut Vec<P>>,
    ) -> usize {
        let mut removed = 0;
        self.map.retain(|prefix, entry| {
            if !entry.all().iter().any(|p| p.peer() == peer && pred(p)) {
                return true;
            }
            if let Some(t) = touched.as_mut() {
                t.push(*prefix);
            }
            let (old_best, old_set) = snapshot(entry);
            let remaining = match entry {
                Paths::One(_) => 0,
                Paths::Many(m) => {
                    let mut i = 0;
                    while i < m.paths.len() {
                        if m.paths[i].peer() == peer && pred(&m.paths[i]) {
                            removed += 1;
                            store.release(m.paths.swap_remove(i).attrs);
                        } else {
                            i += 1;
                        }
                    }
                    m.paths.len()
                }
            };
            if remaining == 0 {
                if let Paths::One(p) = std::mem::replace(
                    entry,
                    Paths::Many(Box::new(Multi {
                        paths: Vec::new(),
                        ecmp: 0,
                    })),
                ) {
                    removed += 1;
                    store.release(p.attrs);
                }
                changes.push(BestChange {
                    prefix: *prefix,
                    old: old_best,
                    new: None,
                    next_hops: NextHops::default(),
                });
                return false;
            }
            reselect(entry, cx);
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
            reselect(entry, cx);
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

fn usable(p: &Path, cx: &SelectCtx<'_>) -> bool {
    (p.attrs.next_hop.is_unspecified() || cx.igp.cost(p.attrs.next_hop.addr()).is_some())
        && cx.peers.contains_key(&p.peer())
}

/// Selection after a path was appended to an entry whose ECMP set was current and not empty
/// (`had_best`), when [`compare_new`] decides it: the new path stays after the ECMP set (it
/// loses), or becomes the whole ECMP set at the front (it wins; the others keep their order).
/// Returns false when undecided: the caller runs [`reselect`].
fn select_added(entry: &mut Paths, had_best: bool, cx: &SelectCtx<'_>) -> bool {
    let Paths::Many(m) = entry else {
        return false;
    };
    let n = m.paths.len();
    if !had_best || n < 2 {
        return false;
    }
    // A `One` entry that just became `Many` has its ECMP count still 0: its first path was
    // the selected one.
    let ecmp = m.ecmp.max(1);
    let (best, new) = (&m.paths[0], &m.paths[n - 1]);
    let (Some(bp), Some(np)) = (cx.peers.get(&best.peer()), cx.peers.get(&new.peer())) else {
        return false;
    };
    let best = Candidate {
        attrs: &best.attrs,
        peer: bp,
        path_id: best.path_id,
    };
    let new = Candidate {
        attrs: &new.attrs,
        peer: np,
        path_id: new.path_id,
    };
    match compare_new(&best, &new, cx.cfg, cx.igp) {
        Incremental::Loses => m.ecmp = ecmp,
        Incremental::Wins => {
            m.paths.rotate_right(1);
            m.ecmp = 1;
        }
        Incremental::Undecided => return false,
    }
    true
}

/// Re-runs selection in place: the ECMP set moves to the front, best first; a lone usable path
/// goes back to the inline form.
fn reselect(entry: &mut Paths, cx: &SelectCtx<'_>) {
    let m = match entry {
        Paths::One(p) => {
            if !usable(p, cx) {
                let p = p.clone();
                *entry = Paths::Many(Box::new(Multi {
                    paths: vec![p],
                    ecmp: 0,
                }));
            }
            return;
        }
        Paths::Many(m) => m,
    };
    if m.paths.len() == 1 {
        if usable(&m.paths[0], cx) {
            if let Some(p) = m.paths.pop() {
                *entry = Paths::One(p);
            }
        } else {
            m.ecmp = 0;
        }
        return;
    }
    let order = {
        // Sized once (a `filter_map` collect grows by doubling from an unknown length).
        let mut cands: Vec<Candidate<'_>> = Vec::with_capacity(m.paths.len());
        cands.extend(m.paths.iter().filter_map(|p| {
            cx.peers.get(&p.peer()).map(|peer| Candidate {
                attrs: &p.attrs,
                peer,
                path_id: p.path_id,
            })
        }));
        // Paths of unknown peers cannot exist (a peer goes with its routes); if one did, the
        // indices would not line up, so nothing is selected rather than the wrong path.
        if cands.len() != m.paths.len() {
            Vec::new()
        } else {
            select(&cands, cx.cfg, cx.igp)
        }
    };
    // Bring the selected paths to the front in rank order, the others after them in their
    // current order: `dest[i]` is where the path now at `i` goes; then apply the permutation
    // in place, cycle by cycle.
    let n = m.paths.len();
    let mut dest: Vec<usize> = vec![usize::MAX; n];
    for (k, &i) in order.iter().enumerate() {
        dest[i] = k;
    }
    let mut next = order.len();
    for d in dest.iter_mut() {
        if *d == usize::MAX {
            *d = next;
            next += 1;
        }
    }
    for i in 0..n {
        while dest[i] != i {
            let j = dest[i];
            m.paths.swap(i, j);
            dest.swap(i, j);
        }
    }
    m.ecmp = order.len();
}
