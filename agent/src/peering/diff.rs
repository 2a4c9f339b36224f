//! From the plan in force to a new plan: the operations that change only what changed.
//!
//! Owns the comparison; must not decide how the speaker applies an update (it classifies a
//! changed peer itself: live, refresh or reset of that peer only). A peer whose settings are
//! equal is never touched, so adding, changing or removing one peer leaves every other session
//! alone.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::plan::{DesiredPeer, LocalSettings};

/// One change to apply to the speaker, or to status only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerOp {
    /// A session that did not exist.
    Add(DesiredPeer),
    /// A session whose settings changed.
    Update {
        old: Box<DesiredPeer>,
        new: Box<DesiredPeer>,
    },
    /// Same settings, different source or kind: nothing for the speaker, only status.
    Retag(DesiredPeer),
    /// A session no longer wanted.
    Remove(DesiredPeer),
}

impl PeerOp {
    pub fn address(&self) -> IpAddr {
        match self {
            PeerOp::Add(p) | PeerOp::Retag(p) | PeerOp::Remove(p) => p.address,
            PeerOp::Update { new, .. } => new.address,
        }
    }
}

/// What changed between two plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeersDiff {
    /// The speaker-wide settings changed (AS, router id, cluster id, port, restart time):
    /// the speaker must be restarted with the new plan; `peers` is then the whole new plan as
    /// additions.
    pub restart: bool,
    /// Removals first, then updates, retags and additions; each group by address.
    pub peers: Vec<PeerOp>,
}

/// Compares two plans' peers. `old` is `None` at start (everything is an addition).
pub fn diff(
    old: Option<(&LocalSettings, &BTreeMap<IpAddr, DesiredPeer>)>,
    new: (&LocalSettings, &BTreeMap<IpAddr, DesiredPeer>),
) -> PeersDiff {
    let (new_local, new_peers) = new;
    let additions = || new_peers.values().cloned().map(PeerOp::Add).collect();
    let Some((old_local, old_peers)) = old else {
        return PeersDiff {
            restart: false,
            peers: additions(),
        };
    };
    if speaker_settings_differ(old_local, new_local) {
        return PeersDiff {
            restart: true,
            peers: additions(),
        };
    }
    let mut removes = Vec::new();
    let mut updates = Vec::new();
    let mut retags = Vec::new();
    let mut adds = Vec::new();
    for (addr, o) in old_peers {
        if !new_peers.contains_key(addr) {
            removes.push(PeerOp::Remove(o.clone()));
        }
    }
    for (addr, n) in new_peers {
        match old_peers.get(addr) {
            None => adds.push(PeerOp::Add(n.clone())),
            Some(o) if o.session != n.session => updates.push(PeerOp::Update {
                old: Box::new(o.clone()),
                new: Box::new(n.clone()),
            }),
            Some(o) if o != n => retags.push(PeerOp::Retag(n.clone())),
            Some(_) => {}
        }
    }
    let mut peers = removes;
    peers.extend(updates);
    peers.extend(retags);
    peers.extend(adds);
    PeersDiff {
        restart: false,
        peers,
    }
}

/// The node's addresses are not speaker settings: sessions carry their own source.
fn speaker_settings_differ(a: &LocalSettings, b: &LocalSettings) -> bool {
    a.asn != b.asn
        || a.router_id != b.router_id
        || a.cluster_id != b.cluster_id
        || a.listen_port != b.listen_port
        || a.graceful_restart_time != b.graceful_restart_time
}
