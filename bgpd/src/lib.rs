//! `tabby-bgpd`: a standalone BGP daemon around the `tabby-bgp` speaker.
//!
//! - [`config`]: the TOML file, validated into checked types with errors that name the field.
//! - [`diff`]: old config → new config → operations, so a reload applies only the difference.

pub mod config;
pub mod diff;
