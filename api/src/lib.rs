//! Tabby's Kubernetes API types and the pure IPAM core.
//!
//! * [`v1alpha1`]: the CRDs (`tabby.dev/v1alpha1`) with their schemas, CEL rules and Rust-side
//!   validation for objects read from the API.
//! * [`ipam`]: block carving, pool selection, address allocation, watermarks, reclaim and
//!   garbage-collection decisions, as pure functions over data (no I/O, no clock reads: time
//!   is passed in), shared by the IPAM controller and the node agent.
//! * [`crdgen`]: renders the CRD manifests under `charts/tabby/crds/`.
//! * [`rbac`]: the API calls each component makes, for the chart's RBAC audit.
//!
//! This crate knows nothing of netlink, sockets or the API client.

pub mod crdgen;
pub mod ipam;
pub mod rbac;
pub mod selector;
pub mod v1alpha1;
pub mod validation;

pub use validation::FieldError;
