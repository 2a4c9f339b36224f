//! CRD types and the pure IPAM core.
