//! Who a route came from, as the RIB needs to know it: identity, type and the addresses the
//! best-path tie breaks compare. Owns no session state (that is the FSM's).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::wire::Asn;

/// A peer's index in the RIB. `PeerId::LOCAL` (0) is this router itself: locally originated
/// routes. Ids are at most [`PeerId::MAX`] so a route can keep flags beside it in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PeerId(pub u32);

impl PeerId {
    pub const LOCAL: PeerId = PeerId(0);
    pub const MAX: u32 = (1 << 30) - 1;
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// The type of a BGP session, as policy and the propagation rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerType {
    /// This router (locally originated routes).
    Local,
    /// External: another AS (RFC 4271 §1.1).
    Ebgp,
    /// Internal, not a route-reflector client.
    Ibgp,
    /// Internal, and a client of this router acting as route reflector (RFC 4456 §2).
    RrClient,
}

impl PeerType {
    pub fn is_ibgp(self) -> bool {
        matches!(self, PeerType::Ibgp | PeerType::RrClient)
    }
}

/// The facts about a peer that route selection and propagation use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub id: PeerId,
    pub peer_type: PeerType,
    /// The peer's AS.
    pub asn: Asn,
    /// The peer's BGP identifier (from its OPEN).
    pub router_id: Ipv4Addr,
    /// The peer's transport address (last best-path tie break, RFC 4271 §9.1.2.2 (g)).
    pub address: IpAddr,
}

impl PeerInfo {
    /// This router as the source of its own routes.
    pub fn local(asn: Asn, router_id: Ipv4Addr) -> PeerInfo {
        PeerInfo {
            id: PeerId::LOCAL,
            peer_type: PeerType::Local,
            asn,
            router_id,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}
