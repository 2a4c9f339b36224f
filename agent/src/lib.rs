//! Tabby node agent.

pub mod addr;
pub mod cni;
pub mod export;
pub mod ipam;
pub mod nat;
pub mod peering;
pub mod routes;
