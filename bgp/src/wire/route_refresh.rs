//! ROUTE-REFRESH message (RFC 2918 §3), with the RFC 7313 §3.2 message subtypes (BoRR/EoRR).
//!
//! ```text
//!  0       7      15      23      31
//! +-------+-------+-------+-------+
//! |      AFI      | Subtype | SAFI |
//! +-------+-------+-------+-------+
//! ```
//! Subtype 0 may be followed by ORF entries (RFC 5291), kept opaque.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::error::{EncodeError, MessageError, RouteRefreshSubcode};
use super::family::{Afi, Family, Safi};
use super::json;

/// RFC 7313 §3.2 "Message Subtype".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteRefreshSubtype {
    /// 0: a normal route refresh request.
    Request,
    /// 1: Beginning of Route Refresh.
    BeginOfRouteRefresh,
    /// 2: End of Route Refresh.
    EndOfRouteRefresh,
    /// 3–255: reserved; RFC 7313 §5 says the receiver ignores the message.
    Reserved(u8),
}

impl RouteRefreshSubtype {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Request,
            1 => Self::BeginOfRouteRefresh,
            2 => Self::EndOfRouteRefresh,
            n => Self::Reserved(n),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Request => 0,
            Self::BeginOfRouteRefresh => 1,
            Self::EndOfRouteRefresh => 2,
            Self::Reserved(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
    pub subtype: RouteRefreshSubtype,
    /// Octets after the 4-octet body: ORF entries (RFC 5291) of a subtype-0 request, or the
    /// tail of a reserved subtype; opaque.
    #[serde(serialize_with = "json::hex", skip_serializing_if = "Vec::is_empty")]
    pub orf: Vec<u8>,
}

impl RouteRefresh {
    pub fn new(family: Family, subtype: RouteRefreshSubtype) -> Self {
        RouteRefresh {
            afi: family.afi,
            safi: family.safi,
            subtype,
            orf: Vec::new(),
        }
    }

    pub fn family(&self) -> Family {
        Family::new(self.afi, self.safi)
    }

    /// `body` is at least 4 octets (checked with the header, RFC 4271 §6.1).
    pub(crate) fn decode(body: &[u8]) -> Result<RouteRefresh, MessageError> {
        let bad_len = || MessageError::RouteRefresh {
            subcode: RouteRefreshSubcode::InvalidMessageLength,
            data: body.to_vec(),
            reason: format!(
                "message body is {} octets, expected 4 (RFC 7313 §5)",
                body.len()
            ),
        };
        let [a0, a1, sub, safi, rest @ ..] = body else {
            return Err(bad_len());
        };
        let subtype = RouteRefreshSubtype::from_u8(*sub);
        // RFC 7313 §5: BoRR/EoRR bodies are exactly 4 octets.
        if matches!(
            subtype,
            RouteRefreshSubtype::BeginOfRouteRefresh | RouteRefreshSubtype::EndOfRouteRefresh
        ) && !rest.is_empty()
        {
            return Err(bad_len());
        }
        Ok(RouteRefresh {
            afi: Afi(u16::from_be_bytes([*a0, *a1])),
            safi: Safi(*safi),
            subtype,
            orf: rest.to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        // RFC 7313 §5: BoRR and EoRR bodies are exactly 4 octets.
        if !self.orf.is_empty()
            && matches!(
                self.subtype,
                RouteRefreshSubtype::BeginOfRouteRefresh | RouteRefreshSubtype::EndOfRouteRefresh
            )
        {
            return Err(EncodeError::Invalid(
                "BoRR/EoRR ROUTE-REFRESH messages carry no ORF entries",
            ));
        }
        out.put_u16(self.afi.0);
        out.put_u8(self.subtype.to_u8());
        out.put_u8(self.safi.0);
        out.put_slice(&self.orf);
        Ok(())
    }
}
