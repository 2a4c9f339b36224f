//! Pod address management on the node: the agent's side of IPAM.
//!
//! Owns allocating and releasing pod addresses in this node's `IPAMBlock`s, writing block
//! **status** only (the controller owns spec), every write a compare-and-swap on
//! `resourceVersion`. The rules (first free ordinal, cooldown, idempotency per handle, fullest
//! block first) are `tabby_api::ipam`'s; this module reads, asks the core, and writes.
//!
//! * [`request`]: the pure part — validated handle and pod reference, the `tabby.dev/ippools`
//!   and [`request::ADDRESS_ANNOTATION`] annotations, which families from which pool.
//! * [`client`]: [`IpamClient`], the requests against the API.
//!
//! Must not touch netlink or the CNI protocol: the CNI server calls [`IpamClient`] and maps
//! [`IpamError::NoAddressYet`] to CNI error code 11.

pub mod client;
pub mod request;

pub use client::{Assigned, ClientConfig, IpamClient, IpamError, Released};
pub use request::{ADDRESS_ANNOTATION, PodRequest, RequestError};
