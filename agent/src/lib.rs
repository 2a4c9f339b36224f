//! Tabby node agent.

pub mod addr;
pub mod cni;
pub mod daemon;
pub mod export;
pub mod http;
pub mod ipam;
pub mod metrics;
pub mod nat;
pub mod peering;
pub mod routes;
pub mod status;
