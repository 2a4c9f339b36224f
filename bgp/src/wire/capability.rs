//! Capabilities advertised in OPEN (RFC 5492): the code points Tabby understands, and every
//! other one kept opaque.
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! +------------------------------+
//! ```
//! A known capability whose value does not parse is an OPEN error (Unspecific, RFC 4271 §6.2);
//! the one exception is FQDN text that is not UTF-8, which is kept opaque.

use bytes::{BufMut, BytesMut};
use serde::{Serialize, Serializer};

use super::error::{EncodeError, MessageError, OpenSubcode};
use super::family::{Afi, Asn, Family, Safi};
use super::json;
use super::reader::{Need, be_u8, be_u16, be_u24, be_u32, take_n};

pub mod code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const ROLE: u8 = 9;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
    pub const FQDN: u8 = 73;

    /// Every code with a typed variant; anything else decodes as `Unknown`.
    pub const KNOWN: [u8; 11] = [1, 2, 5, 6, 9, 64, 65, 69, 70, 71, 73];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// 1, RFC 4760 §8.
    Multiprotocol(Family),
    /// 2, RFC 2918.
    RouteRefresh,
    /// 5, RFC 8950 §3.
    ExtendedNextHop(Vec<ExtendedNextHopEntry>),
    /// 6, RFC 8654.
    ExtendedMessage,
    /// 9, RFC 9234 §4.1.
    Role(BgpRole),
    /// 64, RFC 4724 §3 (N bit: RFC 8538).
    GracefulRestart(GracefulRestart),
    /// 65, RFC 6793.
    FourOctetAs(Asn),
    /// 69, RFC 7911 §4.
    AddPath(Vec<AddPathEntry>),
    /// 70, RFC 7313.
    EnhancedRouteRefresh,
    /// 71, RFC 9494.
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    /// 73, draft-walton-bgp-hostname-capability.
    Fqdn { hostname: String, domain: String },
    /// Any other capability, value kept as received.
    Unknown {
        code: u8,
        #[serde(serialize_with = "json::hex")]
        value: Vec<u8>,
    },
}

/// RFC 8950 §3: "NLRI AFI / NLRI SAFI may be advertised with a next hop of Nexthop AFI".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExtendedNextHopEntry {
    pub nlri_afi: Afi,
    pub nlri_safi: Safi,
    pub next_hop_afi: Afi,
}

/// RFC 9234 §4.1 BGP roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BgpRole(pub u8);

impl BgpRole {
    pub const PROVIDER: BgpRole = BgpRole(0);
    pub const ROUTE_SERVER: BgpRole = BgpRole(1);
    pub const ROUTE_SERVER_CLIENT: BgpRole = BgpRole(2);
    pub const CUSTOMER: BgpRole = BgpRole(3);
    pub const PEER: BgpRole = BgpRole(4);
}

impl Serialize for BgpRole {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            0 => s.serialize_str("provider"),
            1 => s.serialize_str("rs"),
            2 => s.serialize_str("rs-client"),
            3 => s.serialize_str("customer"),
            4 => s.serialize_str("peer"),
            n => s.serialize_u8(n),
        }
    }
}

/// RFC 4724 §3 Graceful Restart capability.
///
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits)                           |
/// +--------------------------------------------------+
/// | Restart Time in seconds (12 bits)                |
/// +--------------------------------------------------+
/// | Address Family Identifier (16 bits)              |
/// +--------------------------------------------------+
/// | Subsequent Address Family Identifier (8 bits)    |
/// +--------------------------------------------------+
/// | Flags for Address Family (8 bits)                |
/// +--------------------------------------------------+
/// | ...                                              |
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful NOTIFICATION supported.
    pub notification: bool,
    /// The two remaining restart flag bits (0..=3), kept for exact re-encoding.
    pub reserved_flags: u8,
    /// Seconds, 0..=4095.
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// F bit: forwarding state was preserved.
    pub forwarding_state: bool,
    /// The seven other flag bits (0..=127).
    pub reserved_flags: u8,
}

/// RFC 7911 §4 Send/Receive field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathMode(pub u8);

impl AddPathMode {
    pub const RECEIVE: AddPathMode = AddPathMode(1);
    pub const SEND: AddPathMode = AddPathMode(2);
    pub const BOTH: AddPathMode = AddPathMode(3);

    pub fn receives(self) -> bool {
        self.0 & 1 != 0 && self.0 <= 3
    }
    pub fn sends(self) -> bool {
        self.0 & 2 != 0 && self.0 <= 3
    }
}

impl Serialize for AddPathMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            1 => s.serialize_str("receive"),
            2 => s.serialize_str("send"),
            3 => s.serialize_str("send-receive"),
            n => s.serialize_u8(n),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddPathEntry {
    pub afi: Afi,
    pub safi: Safi,
    pub mode: AddPathMode,
}

impl AddPathEntry {
    pub fn family(&self) -> Family {
        Family::new(self.afi, self.safi)
    }
}

/// RFC 9494 §3 per-family Long-Lived Graceful Restart entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LlgrFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// Flags octet (the F bit is 0x80).
    pub flags: u8,
    /// Long-lived stale time in seconds, 24 bits.
    pub stale_time: u32,
}

fn malformed(code: u8, value: &[u8], what: &str) -> MessageError {
    MessageError::open(
        OpenSubcode::Unspecific,
        Vec::new(),
        format!(
            "capability {code}: {what} (value {} octets: {})",
            value.len(),
            hex::encode(value)
        ),
    )
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::ExtendedNextHop(_) => code::EXTENDED_NEXT_HOP,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::Role(_) => code::ROLE,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::LongLivedGracefulRestart(_) => code::LONG_LIVED_GRACEFUL_RESTART,
            Capability::Fqdn { .. } => code::FQDN,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decodes a sequence of capability TLVs (the value of one capabilities optional parameter).
    pub(crate) fn decode_list(mut input: &[u8]) -> Result<Vec<Capability>, MessageError> {
        let mut caps = Vec::new();
        while !input.is_empty() {
            let trunc = || {
                MessageError::open(
                    OpenSubcode::Unspecific,
                    Vec::new(),
                    format!("capability TLV truncated: {}", hex::encode(input)),
                )
            };
            let (rest, code) = be_u8(input).need(trunc)?;
            let (rest, len) = be_u8(rest).need(trunc)?;
            let (rest, value) = take_n(rest, usize::from(len)).need(trunc)?;
            caps.push(Capability::decode(code, value)?);
            input = rest;
        }
        Ok(caps)
    }

    fn decode(code: u8, v: &[u8]) -> Result<Capability, MessageError> {
        let bad = |what: &str| malformed(code, v, what);
        let empty = |c: Capability| {
            if v.is_empty() {
                Ok(c)
            } else {
                Err(bad("expected no value"))
            }
        };
        match code {
            code::MULTIPROTOCOL => match v {
                [a0, a1, _reserved, safi] => Ok(Capability::Multiprotocol(Family::new(
                    Afi(u16::from_be_bytes([*a0, *a1])),
                    Safi(*safi),
                ))),
                _ => Err(bad("length must be 4")),
            },
            code::ROUTE_REFRESH => empty(Capability::RouteRefresh),
            code::EXTENDED_MESSAGE => empty(Capability::ExtendedMessage),
            code::ENHANCED_ROUTE_REFRESH => empty(Capability::EnhancedRouteRefresh),
            code::EXTENDED_NEXT_HOP => {
                if v.is_empty() || !v.len().is_multiple_of(6) {
                    return Err(bad("length must be a non-zero multiple of 6"));
                }
                v.chunks_exact(6)
                    .map(|c| {
                        let safi = u16::from_be_bytes([c[2], c[3]]);
                        let safi = u8::try_from(safi).map_err(|_| bad("NLRI SAFI above 255"))?;
                        Ok(ExtendedNextHopEntry {
                            nlri_afi: Afi(u16::from_be_bytes([c[0], c[1]])),
                            nlri_safi: Safi(safi),
                            next_hop_afi: Afi(u16::from_be_bytes([c[4], c[5]])),
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map(Capability::ExtendedNextHop)
            }
            code::ROLE => match v {
                [r] => Ok(Capability::Role(BgpRole(*r))),
                _ => Err(bad("length must be 1")),
            },
            code::GRACEFUL_RESTART => {
                let (rest, head) = be_u16(v).need(|| bad("shorter than 2 octets"))?;
                if !rest.len().is_multiple_of(4) {
                    return Err(bad("family list is not a multiple of 4 octets"));
                }
                let flags = (head >> 12) as u8;
                let families = rest
                    .chunks_exact(4)
                    .map(|c| GracefulRestartFamily {
                        afi: Afi(u16::from_be_bytes([c[0], c[1]])),
                        safi: Safi(c[2]),
                        forwarding_state: c[3] & 0x80 != 0,
                        reserved_flags: c[3] & 0x7f,
                    })
                    .collect();
                Ok(Capability::GracefulRestart(GracefulRestart {
                    restart_state: flags & 0x8 != 0,
                    notification: flags & 0x4 != 0,
                    reserved_flags: flags & 0x3,
                    restart_time: head & 0x0fff,
                    families,
                }))
            }
            code::FOUR_OCTET_AS => {
                let (rest, asn) = be_u32(v).need(|| bad("length must be 4"))?;
                if !rest.is_empty() {
                    return Err(bad("length must be 4"));
                }
                Ok(Capability::FourOctetAs(Asn(asn)))
            }
            code::ADD_PATH => {
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    return Err(bad("length must be a non-zero multiple of 4"));
                }
                Ok(Capability::AddPath(
                    v.chunks_exact(4)
                        .map(|c| AddPathEntry {
                            afi: Afi(u16::from_be_bytes([c[0], c[1]])),
                            safi: Safi(c[2]),
                            mode: AddPathMode(c[3]),
                        })
                        .collect(),
                ))
            }
            code::LONG_LIVED_GRACEFUL_RESTART => {
                if !v.len().is_multiple_of(7) {
                    return Err(bad("length must be a multiple of 7"));
                }
                let mut fams = Vec::with_capacity(v.len() / 7);
                for c in v.chunks_exact(7) {
                    let (_, stale) = be_u24(&c[4..]).need(|| bad("truncated stale time"))?;
                    fams.push(LlgrFamily {
                        afi: Afi(u16::from_be_bytes([c[0], c[1]])),
                        safi: Safi(c[2]),
                        flags: c[3],
                        stale_time: stale,
                    });
                }
                Ok(Capability::LongLivedGracefulRestart(fams))
            }
            code::FQDN => {
                let parsed = (|| {
                    let (r, hl) = be_u8::<_, ()>(v).ok()?;
                    let (r, h) = take_n(r, usize::from(hl)).ok()?;
                    let (r, dl) = be_u8::<_, ()>(r).ok()?;
                    let (r, d) = take_n(r, usize::from(dl)).ok()?;
                    if !r.is_empty() {
                        return None;
                    }
                    Some((std::str::from_utf8(h).ok()?, std::str::from_utf8(d).ok()?))
                })();
                Ok(match parsed {
                    Some((h, d)) => Capability::Fqdn {
                        hostname: h.to_string(),
                        domain: d.to_string(),
                    },
                    None => Capability::Unknown {
                        code,
                        value: v.to_vec(),
                    },
                })
            }
            _ => Ok(Capability::Unknown {
                code,
                value: v.to_vec(),
            }),
        }
    }

    /// Appends code, length and value.
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(self.code());
        let len_at = out.len();
        out.put_u8(0);
        match self {
            Capability::Multiprotocol(f) => {
                out.put_u16(f.afi.0);
                out.put_u8(0);
                out.put_u8(f.safi.0);
            }
            Capability::RouteRefresh
            | Capability::ExtendedMessage
            | Capability::EnhancedRouteRefresh => {}
            Capability::ExtendedNextHop(entries) => {
                for e in entries {
                    out.put_u16(e.nlri_afi.0);
                    out.put_u16(u16::from(e.nlri_safi.0));
                    out.put_u16(e.next_hop_afi.0);
                }
                if entries.is_empty() {
                    return Err(EncodeError::Invalid(
                        "extended next hop capability needs an entry",
                    ));
                }
            }
            Capability::Role(r) => out.put_u8(r.0),
            Capability::GracefulRestart(gr) => {
                if gr.restart_time > 0x0fff {
                    return Err(EncodeError::OutOfRange {
                        what: "graceful restart time",
                        value: gr.restart_time.into(),
                    });
                }
                if gr.reserved_flags > 3 {
                    return Err(EncodeError::OutOfRange {
                        what: "graceful restart reserved flags",
                        value: gr.reserved_flags.into(),
                    });
                }
                let flags = u16::from(gr.restart_state) << 3
                    | u16::from(gr.notification) << 2
                    | u16::from(gr.reserved_flags);
                out.put_u16(flags << 12 | gr.restart_time);
                for f in &gr.families {
                    if f.reserved_flags > 0x7f {
                        return Err(EncodeError::OutOfRange {
                            what: "graceful restart family flags",
                            value: f.reserved_flags.into(),
                        });
                    }
                    out.put_u16(f.afi.0);
                    out.put_u8(f.safi.0);
                    out.put_u8(u8::from(f.forwarding_state) << 7 | f.reserved_flags);
                }
            }
            Capability::FourOctetAs(asn) => out.put_u32(asn.0),
            Capability::AddPath(entries) => {
                if entries.is_empty() {
                    return Err(EncodeError::Invalid("ADD-PATH capability needs an entry"));
                }
                for e in entries {
                    out.put_u16(e.afi.0);
                    out.put_u8(e.safi.0);
                    out.put_u8(e.mode.0);
                }
            }
            Capability::LongLivedGracefulRestart(fams) => {
                for f in fams {
                    if f.stale_time > 0x00ff_ffff {
                        return Err(EncodeError::OutOfRange {
                            what: "LLGR stale time",
                            value: f.stale_time.into(),
                        });
                    }
                    out.put_u16(f.afi.0);
                    out.put_u8(f.safi.0);
                    out.put_u8(f.flags);
                    out.put_uint(u64::from(f.stale_time), 3);
                }
            }
            Capability::Fqdn { hostname, domain } => {
                for s in [hostname, domain] {
                    let l = u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong {
                        what: "FQDN name",
                        len: s.len(),
                        max: 255,
                    })?;
                    out.put_u8(l);
                    out.put_slice(s.as_bytes());
                }
            }
            // FQDN text that is not UTF-8 decodes as opaque, so it must re-encode as such.
            Capability::Unknown { code, value } => {
                if code::KNOWN.contains(code) && *code != code::FQDN {
                    return Err(EncodeError::Invalid(
                        "opaque capability uses a known code; use its typed variant",
                    ));
                }
                out.put_slice(value);
            }
        }
        let len = out.len() - len_at - 1;
        out[len_at] = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "capability value",
            len,
            max: 255,
        })?;
        Ok(())
    }
}
