//! Tabby node agent.

pub mod ipam;
