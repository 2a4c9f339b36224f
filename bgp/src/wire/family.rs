//! Small wire identifiers shared by every message: AFI, SAFI, (AFI, SAFI) families and AS numbers.
//!
//! Unknown code points are representable (a newtype over the wire integer), so decoding never
//! loses information and re-encoding is exact.

use std::fmt;

use serde::{Serialize, Serializer};

/// Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
    pub const L2VPN: Afi = Afi(25);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Afi::IPV4 => "ipv4",
            Afi::IPV6 => "ipv6",
            Afi::L2VPN => "l2vpn",
            _ => return None,
        })
    }
}

/// Subsequent Address Family Identifier (RFC 4760). On the wire it is one octet, except in the
/// RFC 8950 extended next hop capability where it is two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
    pub const MPLS_LABEL: Safi = Safi(4);
    pub const EVPN: Safi = Safi(70);
    pub const MPLS_VPN: Safi = Safi(128);
    pub const FLOWSPEC: Safi = Safi(133);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Safi::UNICAST => "unicast",
            Safi::MULTICAST => "multicast",
            Safi::MPLS_LABEL => "labeled-unicast",
            Safi::EVPN => "evpn",
            Safi::MPLS_VPN => "vpn",
            Safi::FLOWSPEC => "flowspec",
            _ => return None,
        })
    }
}

/// An (AFI, SAFI) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: Afi,
    pub safi: Safi,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    };
    pub const IPV6_UNICAST: Family = Family {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
    };

    pub const fn new(afi: Afi, safi: Safi) -> Self {
        Family { afi, safi }
    }
}

impl fmt::Display for Afi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "afi-{}", self.0),
        }
    }
}
impl fmt::Display for Safi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "safi-{}", self.0),
        }
    }
}
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.afi, self.safi)
    }
}
impl Serialize for Afi {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl Serialize for Safi {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl Serialize for Family {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An autonomous system number (4 octets, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Asn(pub u32);

impl Asn {
    /// AS_TRANS, RFC 6793 §9: stands in for a 4-octet AS in 2-octet fields.
    pub const TRANS: Asn = Asn(23456);

    /// The value to put in a 2-octet AS field: itself if it fits, otherwise AS_TRANS.
    pub fn as_two_octet(self) -> u16 {
        u16::try_from(self.0).unwrap_or(Asn::TRANS.0 as u16)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
