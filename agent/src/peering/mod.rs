//! The agent's BGP sessions, planned from the cluster's objects.
//!
//! - [`node`]: what a Node says about BGP (addresses, AS, router id, reflector cluster id).
//! - [`plan`]: Nodes + BGPConfiguration + BGPPeers + Secrets → the sessions this node wants,
//!   each with its kind (mesh / global / node), source object and options, and per-peer
//!   problems in words.
//! - [`diff`]: old plan → new plan → add / update / remove, touching only what changed.
//! - [`speaker`]: the plan as `tabby_bgp::speaker` configuration.
//! - [`apply`]: the edge — applies the differences to a running speaker, in a safe order.
//!
//! Owns the peering rules. Pure except [`apply`]: no watches, no status writes — the agent's
//! main loop gathers the objects, calls [`plan()`] and the export functions, and hands the
//! result to [`apply::apply`].
//! What is announced and accepted is [`crate::export`]'s.

pub mod apply;
pub mod diff;
pub mod node;
pub mod plan;
pub mod speaker;

pub use apply::{Applied, ApplyReport, Desired, apply};
pub use diff::{PeerOp, PeersDiff, diff};
pub use node::NodeInfo;
pub use plan::{
    DesiredPeer, Direction, LocalSettings, ObjectRef, Password, PeerKind, Plan, PlanError,
    PlanInput, PolicyClass, PolicySpec, Problem, SessionSettings, Source, plan,
};
pub use speaker::{peer_config, speaker_config};
