//! Tabby's BGP-4 implementation.
//!
//! - [`wire`]: the message codec (RFC 4271 and its extensions). Bytes in, typed messages out, and
//!   back. It knows nothing about sessions, timers or sockets.
//! - [`negotiate`]: capability negotiation, from both OPENs to a [`negotiate::Negotiated`].
//! - [`fsm`]: the RFC 4271 §8 state machine, pure: events in, actions out.
//! - [`rib`]: Adj-RIB-In, Loc-RIB, best path, update groups (Adj-RIB-Out); pure.
//! - [`policy`]: import/export policy language, validation and evaluation; pure.
//! - [`session`]: one tokio task per session: sockets, timers and the FSM's actions as I/O.
//! - [`speaker`]: the speaker: sessions joined to the RIB in one loop, behind a cloneable handle.
//! - [`capture`]: reading BGP byte streams out of packet captures, for `bgp-decode` and tests.

pub mod capture;
pub mod fsm;
pub mod negotiate;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod wire;
