//! What a reload changes: old config → new config → operations on the running speaker.
//!
//! Owns the rule that SIGHUP applies only the difference, and the list of global settings that
//! cannot change without a restart. Pure: it compares two checked [`Config`]s and returns
//! [`Op`]s; the daemon applies them and must not decide anything itself.
//!
//! Order of the operations: new and changed policies first (peers may refer to them), then
//! removed peers, changed peers, added peers, withdrawn and originated prefixes, and removed
//! policies last (no peer refers to them any more by then). Within one kind, by key.

use std::net::IpAddr;

use tabby_bgp::policy::PolicyConfig;
use tabby_bgp::rib::prefix::Prefix;

use crate::config::{Config, Originate, Peer};

/// One change to apply to the speaker.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    SetPolicy(PolicyConfig),
    RemovePeer(IpAddr),
    /// The peer's settings changed; the speaker decides whether that needs a reset of this
    /// one session, a route refresh, or nothing on the wire.
    UpdatePeer(Box<Peer>),
    AddPeer(Box<Peer>),
    Withdraw(Prefix),
    /// New, or the same prefix with different attributes (replaces the old announcement).
    Originate(Originate),
    RemovePolicy(String),
}

impl Op {
    /// Records this operation, once applied, in `running`, so the daemon's picture of the
    /// speaker stays exact even when a later operation of the same reload fails.
    pub fn apply_to(&self, running: &mut Config) {
        match self {
            Op::SetPolicy(p) => {
                running.policies.insert(p.name.clone(), p.clone());
            }
            Op::RemovePeer(a) => {
                running.peers.remove(a);
            }
            Op::UpdatePeer(p) | Op::AddPeer(p) => {
                running.peers.insert(p.address, (**p).clone());
            }
            Op::Withdraw(p) => {
                running.originate.remove(p);
            }
            Op::Originate(o) => {
                running.originate.insert(o.prefix, o.clone());
            }
            Op::RemovePolicy(n) => {
                running.policies.remove(n);
            }
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::SetPolicy(p) => write!(f, "set policy {:?}", p.name),
            Op::RemovePeer(a) => write!(f, "remove peer {a}"),
            Op::UpdatePeer(p) => write!(f, "update peer {}", p.address),
            Op::AddPeer(p) => write!(f, "add peer {}", p.address),
            Op::Withdraw(p) => write!(f, "withdraw {p}"),
            Op::Originate(o) => write!(f, "originate {}", o.prefix),
            Op::RemovePolicy(n) => write!(f, "remove policy {n:?}"),
        }
    }
}

/// A reload that changes what only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} cannot change while running (restart tabby-bgpd to apply it); the running config is kept", fields.join(", "))]
pub struct RestartRequired {
    /// The top-level fields that differ, e.g. `["asn", "router_id"]`.
    pub fields: Vec<&'static str>,
}

/// The operations that turn the running `old` config into `new`, or the global fields that
/// forbid a live reload.
pub fn diff(old: &Config, new: &Config) -> Result<Vec<Op>, RestartRequired> {
    let mut fields = Vec::new();
    // The router id and AS are in every OPEN and every AS_PATH we sent; the cluster id in every
    // reflected route; listeners, best-path settings and the graceful restart capability are
    // shared by all sessions. Changing any of them live would reset everything anyway.
    if old.router_id != new.router_id {
        fields.push("router_id");
    }
    if old.asn != new.asn {
        fields.push("asn");
    }
    if old.cluster_id != new.cluster_id {
        fields.push("cluster_id");
    }
    if old.listen != new.listen {
        fields.push("listen/listen_port");
    }
    if old.max_paths != new.max_paths {
        fields.push("max_paths");
    }
    if old.default_local_pref != new.default_local_pref {
        fields.push("default_local_pref");
    }
    if old.graceful_restart != new.graceful_restart {
        fields.push("graceful_restart");
    }
    if !fields.is_empty() {
        return Err(RestartRequired { fields });
    }

    let mut ops = Vec::new();
    for (name, p) in &new.policies {
        if old.policies.get(name) != Some(p) {
            ops.push(Op::SetPolicy(p.clone()));
        }
    }
    for addr in old.peers.keys() {
        if !new.peers.contains_key(addr) {
            ops.push(Op::RemovePeer(*addr));
        }
    }
    for (addr, p) in &new.peers {
        if let Some(o) = old.peers.get(addr)
            && o != p
        {
            ops.push(Op::UpdatePeer(Box::new(p.clone())));
        }
    }
    for (addr, p) in &new.peers {
        if !old.peers.contains_key(addr) {
            ops.push(Op::AddPeer(Box::new(p.clone())));
        }
    }
    for prefix in old.originate.keys() {
        if !new.originate.contains_key(prefix) {
            ops.push(Op::Withdraw(*prefix));
        }
    }
    for (prefix, o) in &new.originate {
        if old.originate.get(prefix) != Some(o) {
            ops.push(Op::Originate(o.clone()));
        }
    }
    for name in old.policies.keys() {
        if !new.policies.contains_key(name) {
            ops.push(Op::RemovePolicy(name.clone()));
        }
    }
    Ok(ops)
}

/// The operations that bring an empty speaker to `cfg` (start-up): the diff from nothing.
pub fn initial(cfg: &Config) -> Vec<Op> {
    let mut ops: Vec<Op> = cfg.policies.values().cloned().map(Op::SetPolicy).collect();
    ops.extend(cfg.peers.values().map(|p| Op::AddPeer(Box::new(p.clone()))));
    ops.extend(cfg.originate.values().cloned().map(Op::Originate));
    ops
}
