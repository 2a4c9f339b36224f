//! The Tabby lab: the whole system, live, in network namespaces on one machine — `tabby-kube-sim`
//! as the API server, the chart's CRDs and default objects, the IPAM controller, one
//! `tabby-agent` per node namespace, an FRR top-of-rack router (bgpd + zebra) peering with every
//! node over one L2 fabric, and pods made through `tabby-cni` exactly as a container runtime
//! makes them. `make lab` builds one and leaves it running; the end-to-end tests build their own
//! (with their own prefix) and tear them down.
//!
//! - [`plan`]: the topology as data (names, addresses, FRR config, Kubernetes objects). Pure.
//! - [`chart`]: the chart's default objects (IPPools, BGPConfiguration, BGPPeers), rendered by
//!   the pinned helm with `charts/tabby/ci/lab-values.yaml` and this run's options.
//! - [`state`]: the record of what `up` made, so `down` removes exactly that.
//! - [`lab`]: building, querying and removing a lab ([`Lab`], [`down`]).
//! - [`proxy`]: how agents inside node namespaces reach the API server in the root namespace.
//! - [`report`]: what `up` prints.
//!
//! Everything the lab makes in the root namespace is named with its prefix (network
//! namespaces) or lives in its state directory (files, logs); its processes are recorded with
//! their command lines. It never touches root-namespace links, addresses or routes.

pub mod chart;
pub mod lab;
pub mod plan;
pub mod proxy;
pub mod report;
pub mod state;

pub use lab::{Lab, LabError, PingResult, Up, down};
pub use plan::Options;
pub use report::Report;
