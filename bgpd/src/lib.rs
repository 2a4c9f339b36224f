//! `tabby-bgpd`: a standalone BGP daemon around the `tabby-bgp` speaker.
//!
//! - [`config`]: the TOML file, validated into checked types with errors that name the field.
//! - [`diff`]: old config → new config → operations, so a reload applies only the difference.
//! - [`convert`]: checked config → the speaker's types.
//! - [`daemon`]: the speaker, the running config and reloads.
//! - [`http`]: status, RIB lookups and metrics over HTTP/JSON.
//! - [`metrics`]: Prometheus metric names and their encoding from the speaker's snapshot.

pub mod config;
pub mod convert;
pub mod daemon;
pub mod diff;
pub mod http;
pub mod metrics;
