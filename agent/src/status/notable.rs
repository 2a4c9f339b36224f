//! Which changes between two successive statuses deserve an Event on the Node. Pure: the
//! tracker remembers the previous observation and returns the Events to send; sending is
//! [`super::NodeEvents`]'s job.
//!
//! | reason | type | when |
//! |---|---|---|
//! | `PeerNotConfigured` | Warning | a problem names a peer the cluster asks for (missing Secret or key, source address not on the node, AS conflict…) |
//! | `ConfigurationProblem` | Warning | a problem with an object, no particular peer (invalid BGPPeer, Node annotation…) |
//! | `ProblemResolved` | Normal | a problem reported before is gone |
//! | `SessionEstablished` | Normal | a global or node peer (a router) reached Established |
//! | `SessionDown` | Warning | a global or node peer left Established, with the reason in words |
//! | `MeshDegraded` | Warning | some node-to-node mesh sessions are not Established (one Event for all, so a big mesh does not flood) |
//! | `MeshEstablished` | Normal | every mesh session is Established again |
//!
//! Sessions still coming up are not news: no `SessionDown` for a session that was never up, no
//! `MeshDegraded` before the mesh was whole once.

use std::collections::{BTreeMap, BTreeSet};

use tabby_api::v1alpha1::nodenetworkstatus::{
    BGPSessionStatus, NodeNetworkStatusStatus, PeerType, SessionState,
};

use super::{StatusInput, all_problems, session_line, sources};

/// One Event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Remembers the last observation.
#[derive(Debug, Default)]
pub struct EventTracker {
    problems: BTreeSet<String>,
    /// Routers' sessions (global and node peers): address → Established.
    routers: BTreeMap<String, bool>,
    /// `None` until the mesh was whole once; then whether it is degraded.
    mesh_degraded: Option<bool>,
}

impl EventTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The Events between the previous observation and this one (`status` is
    /// `build(input)`). Deterministic order: problems, resolutions, sessions, mesh.
    pub fn observe(
        &mut self,
        input: &StatusInput<'_>,
        status: &NodeNetworkStatusStatus,
    ) -> Vec<NodeEvent> {
        let mut out = Vec::new();

        let problems = all_problems(input);
        let sources = sources(input);
        let now: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
        for p in &problems {
            let text = p.to_string();
            if !self.problems.contains(&text) {
                out.push(NodeEvent {
                    warning: true,
                    reason: if p.peer.is_some() {
                        "PeerNotConfigured"
                    } else {
                        "ConfigurationProblem"
                    },
                    note: text,
                });
            }
        }
        for gone in self.problems.difference(&now) {
            out.push(NodeEvent {
                warning: false,
                reason: "ProblemResolved",
                note: format!("resolved: {gone}"),
            });
        }
        self.problems = now;

        let mut routers = BTreeMap::new();
        for s in status
            .sessions
            .iter()
            .filter(|s| s.peer_type != PeerType::NodeMesh)
        {
            let up = s.state == SessionState::Established;
            let before = self.routers.get(&s.peer_ip).copied();
            match (before, up) {
                (Some(false) | None, true) => out.push(NodeEvent {
                    warning: false,
                    reason: "SessionEstablished",
                    note: session_line(s, &sources),
                }),
                (Some(true), false) => out.push(NodeEvent {
                    warning: true,
                    reason: "SessionDown",
                    note: format!("left Established: {}", session_line(s, &sources)),
                }),
                _ => {}
            }
            routers.insert(s.peer_ip.clone(), up);
        }
        self.routers = routers;

        let mesh: Vec<&BGPSessionStatus> = status
            .sessions
            .iter()
            .filter(|s| s.peer_type == PeerType::NodeMesh)
            .collect();
        let down: Vec<&BGPSessionStatus> = mesh
            .iter()
            .copied()
            .filter(|s| s.state != SessionState::Established)
            .collect();
        // Until the mesh has been whole once, sessions still coming up are not "degraded".
        let degraded = !down.is_empty();
        match (self.mesh_degraded, degraded) {
            (Some(false), true) => {
                out.push(NodeEvent {
                    warning: true,
                    reason: "MeshDegraded",
                    note: super::listing(
                        &format!(
                            "{} of {} mesh session(s) not Established",
                            down.len(),
                            mesh.len()
                        ),
                        down.iter().map(|s| session_line(s, &sources)),
                    ),
                });
                self.mesh_degraded = Some(true);
            }
            (None | Some(true), false) if !mesh.is_empty() => {
                out.push(NodeEvent {
                    warning: false,
                    reason: "MeshEstablished",
                    note: format!("all {} mesh session(s) Established", mesh.len()),
                });
                self.mesh_degraded = Some(false);
            }
            _ => {}
        }
        out
    }
}
