//! Tabby node agent.

pub mod ipam;
pub mod routes;
