//! IPAM core.
pub mod name;
