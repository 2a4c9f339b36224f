//! Tabby node agent.

pub mod addr;
pub mod export;
pub mod ipam;
pub mod peering;
pub mod routes;
