//! `tabby-ipam-controller`: hands nodes blocks of pod addresses through `IPAMBlock` objects.
//!
//! * [`plan`]: one reconcile pass as a pure function (snapshot in, writes out).
//! * [`write`]: the writes, each compare-and-swap on `resourceVersion`.
//! * [`controller`]: caches (reflectors), leader election, the reconcile loop, Events.
//! * [`metrics`]: Prometheus metrics, `/healthz`, `/readyz`.
//! * [`config`]: command-line flags and environment.
//!
//! The allocation rules live in `tabby_api::ipam`; this crate carries them out against the API.

pub mod config;
pub mod controller;
pub mod metrics;
pub mod plan;
pub mod write;
