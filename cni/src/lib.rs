//! Tabby's CNI plugin: the protocol ([`spec`]), the shim's logic ([`shim`], binary `tabby-cni`),
//! the agent's side of the socket ([`server`]) and the pod datapath the agent drives
//! ([`datapath`]).
//!
//! ```text
//! runtime ──exec──▶ tabby-cni (shim) ──unix socket──▶ server ──▶ agent's Handler ──▶ datapath
//! ```

pub mod datapath;
pub mod install;
pub mod server;
pub mod shim;
pub mod spec;
pub mod wire;
