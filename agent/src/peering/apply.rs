//! The one edge of peering: applies a desired configuration to a running speaker as a
//! difference from what was applied before.
//!
//! Owns the order of speaker calls and the record of what the speaker holds ([`Applied`]).
//! Must not compute what is desired (that is [`super::plan`] and [`crate::export`]) nor start
//! or stop the speaker: a change of speaker-wide settings is returned to the caller.
//!
//! Order: new or changed policies first (peers may name them), then removed peers, changed
//! peers, retagged peers, added peers, then policies no peer names any more, then originations
//! and withdrawals. A failed call is reported and not recorded, so the next pass retries it;
//! it never stops the other calls.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tabby_bgp::policy::PolicyConfig;
use tabby_bgp::rib::{PathAttrs, Prefix};
use tabby_bgp::speaker::{PeerChange, Speaker, SpeakerError};

use tabby_api::v1alpha1::{BGPConfiguration, BGPConfigurationSpec, IPAMBlock, IPPool};

use super::diff::{PeerOp, diff};
use super::plan::{DesiredPeer, LocalSettings, Plan, Problem};
use super::speaker::peer_config;
use crate::export::{self, PolicyOp, diff_policies};

/// Everything the agent wants the speaker to hold.
#[derive(Clone, Debug)]
pub struct Desired {
    pub local: LocalSettings,
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Originated routes, from [`crate::export::route`].
    pub routes: BTreeMap<IpNet, (Prefix, PathAttrs)>,
}

impl Desired {
    /// Completes a plan with the export side: policies rendered with the pools and this
    /// node's blocks, and the routes to originate. Returns the problems found on the way
    /// (to publish with the plan's).
    pub fn from_plan(
        plan: &Plan,
        pools: &[IPPool],
        blocks: &[IPAMBlock],
        configuration: Option<&BGPConfiguration>,
    ) -> (Desired, Vec<Problem>) {
        let default = BGPConfigurationSpec::default();
        let config = configuration.map_or(&default, |c| &c.spec);
        let (pools, mut problems) = export::pools(pools);
        let (origination, p) = export::originate(&plan.local.node, blocks, &pools, config);
        problems.extend(p);
        let policies = export::policies(&plan.policies, &pools, &origination);
        let mut routes = BTreeMap::new();
        for net in origination.prefixes() {
            match export::route(net, &plan.local, config) {
                Ok(r) => {
                    routes.insert(net, r);
                }
                Err(p) => problems.push(p),
            }
        }
        let desired = Desired {
            local: plan.local.clone(),
            peers: plan.peers.clone(),
            policies,
            routes,
        };
        (desired, problems)
    }
}

/// What the speaker holds, as far as this module applied it. Start with `Applied::default()`
/// for a fresh speaker.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub local: Option<LocalSettings>,
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    pub policies: BTreeMap<String, PolicyConfig>,
    pub routes: BTreeMap<IpNet, (Prefix, PathAttrs)>,
}

/// One speaker call that failed, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    /// `set_policy tabby-cluster-import`, `add_peer 192.0.2.1`, ...
    pub call: String,
    pub error: SpeakerError,
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Speaker-wide settings differ from the running speaker's: nothing was applied; restart
    /// the speaker with the new settings and apply again with `Applied::default()`.
    pub restart_needed: bool,
    /// Per updated peer, what the speaker did (live change, refresh, reset of that peer).
    pub peer_changes: Vec<(IpAddr, PeerChange)>,
    pub calls: usize,
    pub errors: Vec<ApplyError>,
}

/// Applies `desired` to `speaker`, recording successes in `applied`.
pub async fn apply(speaker: &Speaker, applied: &mut Applied, desired: &Desired) -> ApplyReport {
    let mut report = ApplyReport::default();
    if let Some(local) = &applied.local
        && diff(
            Some((local, &applied.peers)),
            (&desired.local, &desired.peers),
        )
        .restart
    {
        report.restart_needed = true;
        return report;
    }
    applied.local = Some(desired.local.clone());
    let fail = |report: &mut ApplyReport, call: String, error: SpeakerError| {
        tracing::warn!(%call, %error, "speaker call failed");
        report.errors.push(ApplyError { call, error });
    };

    let policy_ops = diff_policies(&applied.policies, &desired.policies);
    for op in &policy_ops {
        if let PolicyOp::Set(p) = op {
            report.calls += 1;
            match speaker.set_policy(p.clone()).await {
                Ok(_) => {
                    applied.policies.insert(p.name.clone(), p.clone());
                }
                Err(e) => fail(&mut report, format!("set_policy {}", p.name), e),
            }
        }
    }

    let peers = diff(
        Some((&desired.local, &applied.peers)),
        (&desired.local, &desired.peers),
    );
    for op in peers.peers {
        report.calls += 1;
        match op {
            PeerOp::Remove(p) => match speaker.remove_peer(p.address).await {
                Ok(()) | Err(SpeakerError::UnknownPeer(_)) => {
                    applied.peers.remove(&p.address);
                }
                Err(e) => fail(&mut report, format!("remove_peer {}", p.address), e),
            },
            PeerOp::Update { new, .. } => {
                let new = *new;
                match speaker.update_peer(peer_config(&new)).await {
                    Ok(change) => {
                        report.peer_changes.push((new.address, change));
                        applied.peers.insert(new.address, new);
                    }
                    Err(e) => fail(&mut report, format!("update_peer {}", new.address), e),
                }
            }
            PeerOp::Retag(new) => match speaker.update_peer(peer_config(&new)).await {
                // Only the description changes: applied live.
                Ok(change) => {
                    report.peer_changes.push((new.address, change));
                    applied.peers.insert(new.address, new);
                }
                Err(e) => fail(&mut report, format!("update_peer {}", new.address), e),
            },
            PeerOp::Add(new) => match speaker.add_peer(peer_config(&new)).await {
                Ok(()) => {
                    applied.peers.insert(new.address, new);
                }
                Err(e) => fail(&mut report, format!("add_peer {}", new.address), e),
            },
        }
    }

    for op in &policy_ops {
        if let PolicyOp::Remove(name) = op {
            report.calls += 1;
            match speaker.remove_policy(name).await {
                Ok(()) | Err(SpeakerError::NoSuchPolicy { .. }) => {
                    applied.policies.remove(name);
                }
                Err(e) => fail(&mut report, format!("remove_policy {name}"), e),
            }
        }
    }

    for (net, route) in &desired.routes {
        if applied.routes.get(net) == Some(route) {
            continue;
        }
        report.calls += 1;
        match speaker.originate(route.0, route.1.clone()).await {
            Ok(()) => {
                applied.routes.insert(*net, route.clone());
            }
            Err(e) => fail(&mut report, format!("originate {net}"), e),
        }
    }
    let gone: Vec<IpNet> = applied
        .routes
        .keys()
        .filter(|n| !desired.routes.contains_key(*n))
        .copied()
        .collect();
    for net in gone {
        report.calls += 1;
        let Some((prefix, _)) = applied.routes.get(&net).cloned() else {
            continue;
        };
        match speaker.withdraw(prefix).await {
            Ok(_) => {
                applied.routes.remove(&net);
            }
            Err(e) => fail(&mut report, format!("withdraw {net}"), e),
        }
    }
    report
}
