//! Tabby's BGP-4 implementation.
//!
//! - [`wire`]: the message codec (RFC 4271 and its extensions). Bytes in, typed messages out, and
//!   back. It knows nothing about sessions, timers or sockets.
//! - [`capture`]: reading BGP byte streams out of packet captures, for `bgp-decode` and tests.

pub mod capture;
pub mod wire;
