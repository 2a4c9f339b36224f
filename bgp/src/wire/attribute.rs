//! Path attributes (RFC 4271 §4.3 and §5, RFC 4760, RFC 1997, RFC 4360, RFC 4456, RFC 6793,
//! RFC 8092, RFC 9234), decoded with their RFC 7606 §7 error handling.
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Attr. Flags  |Attr. Type Code|   flags: Optional, Transitive, Partial, Extended Length
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Attr. Length (1 octet, or 2 with Extended Length) | value ...
//! ```
//! Owns the value types and their encode/decode, one attribute at a time. The attribute *list*
//! rules (framing, duplicates, missing mandatory attributes) live in [`super::update`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::context::DecodeContext;
use super::error::{EncodeError, ErrorAction, UpdateSubcode};
use super::family::{Afi, Asn, Family, Safi};
use super::json;
use super::nlri::{self, Ipv4Nlri, Ipv6Nlri};

pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
    pub const OTC: u8 = 35;
}

/// (optional, transitive) as RFC-specified for each known type; `None` for unknown types.
pub(crate) fn known_flags(type_code: u8) -> Option<(bool, bool)> {
    use code::*;
    Some(match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => (false, true),
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            (true, false)
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITY | OTC => (true, true),
        _ => return None,
    })
}

/// What RFC 7606 does with a malformed attribute of this type, and the clause saying so.
pub(crate) fn malformed_action(type_code: u8) -> (ErrorAction, &'static str) {
    use code::*;
    match type_code {
        ORIGIN => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.1"),
        AS_PATH => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.2"),
        NEXT_HOP => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.3"),
        MULTI_EXIT_DISC => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.4"),
        LOCAL_PREF => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.5"),
        ATOMIC_AGGREGATE => (ErrorAction::AttributeDiscard, "RFC 7606 §7.6"),
        AGGREGATOR => (ErrorAction::AttributeDiscard, "RFC 7606 §7.7"),
        COMMUNITIES => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.8"),
        ORIGINATOR_ID => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.9"),
        CLUSTER_LIST => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.10"),
        MP_REACH_NLRI | MP_UNREACH_NLRI => (ErrorAction::SessionReset, "RFC 7606 §7.11"),
        EXTENDED_COMMUNITIES => (ErrorAction::TreatAsWithdraw, "RFC 7606 §7.14"),
        AS4_PATH | AS4_AGGREGATOR => (ErrorAction::AttributeDiscard, "RFC 6793 §6"),
        LARGE_COMMUNITY => (ErrorAction::TreatAsWithdraw, "RFC 8092 §6"),
        OTC => (ErrorAction::TreatAsWithdraw, "RFC 9234 §5"),
        // Unknown optional attributes are never parsed, so never malformed.
        _ => (ErrorAction::TreatAsWithdraw, "RFC 7606 §3"),
    }
}

/// A problem with one attribute's value, before the list-level code decides what to do.
#[derive(Debug)]
pub(crate) struct AttrProblem {
    pub subcode: UpdateSubcode,
    pub action: ErrorAction,
    pub rfc: &'static str,
    pub reason: String,
}

/// One path attribute as carried in an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attribute {
    #[serde(flatten)]
    pub value: AttributeValue,
    /// The Partial bit (RFC 4271 §4.3): some speaker on the path did not recognise this optional
    /// transitive attribute.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Set the Extended Length bit although the value fits in 255 octets (some routers do; kept
    /// so re-encoding is byte-exact). Longer values always get the bit, so the flag is
    /// meaningless there and decodes as false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force_extended_length: bool,
}

impl From<AttributeValue> for Attribute {
    fn from(value: AttributeValue) -> Self {
        Attribute {
            value,
            partial: false,
            force_extended_length: false,
        }
    }
}

impl Attribute {
    pub fn new(value: AttributeValue) -> Self {
        value.into()
    }

    pub fn type_code(&self) -> u8 {
        self.value.type_code()
    }

    /// RFC 4271 §5: when an unrecognised optional transitive attribute is passed on, its
    /// Partial bit is set. Recognised attributes are left alone.
    pub fn mark_partial_for_propagation(&mut self) {
        if let AttributeValue::Unknown {
            optional: true,
            transitive: true,
            ..
        } = self.value
        {
            self.partial = true;
        }
    }

    /// This attribute as it must be sent on to another peer: `None` for an unrecognised
    /// non-transitive attribute (RFC 4271 §5: "quietly ignored and not passed along"), the
    /// Partial bit set on an unrecognised optional transitive one.
    pub fn for_propagation(&self) -> Option<Attribute> {
        match self.value {
            AttributeValue::Unknown {
                transitive: false, ..
            } => None,
            _ => {
                let mut a = self.clone();
                a.mark_partial_for_propagation();
                Some(a)
            }
        }
    }

    /// Flags octet without the Extended Length bit.
    fn flags(&self) -> u8 {
        let (optional, transitive) = match &self.value {
            AttributeValue::Unknown {
                optional,
                transitive,
                ..
            } => (*optional, *transitive),
            v => known_flags(v.type_code()).unwrap_or((true, true)),
        };
        (if optional { FLAG_OPTIONAL } else { 0 })
            | (if transitive { FLAG_TRANSITIVE } else { 0 })
            | (if self.partial { FLAG_PARTIAL } else { 0 })
    }

    pub(crate) fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let flags_at = out.len();
        out.put_u8(self.flags() | FLAG_EXTENDED_LENGTH);
        out.put_u8(self.type_code());
        let len_at = out.len();
        out.put_u16(0);
        self.value.encode_value(cx, out)?;
        let len = out.len() - len_at - 2;
        if len <= 255 && !self.force_extended_length {
            // Short form: drop the Extended Length bit and move the value down one octet.
            out[flags_at] &= !FLAG_EXTENDED_LENGTH;
            out[len_at] = len as u8;
            out.copy_within(len_at + 2.., len_at + 1);
            out.truncate(out.len() - 1);
        } else {
            let l = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
                what: "path attribute",
                len,
                max: 65535,
            })?;
            out[len_at..len_at + 2].copy_from_slice(&l.to_be_bytes());
        }
        Ok(())
    }
}

/// The typed value of a path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "attribute",
    content = "value",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum AttributeValue {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator(Aggregator),
    Communities(Vec<Community>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReachNlri(MpReach),
    MpUnreachNlri(MpUnreach),
    ExtendedCommunities(Vec<ExtendedCommunity>),
    As4Path(AsPath),
    As4Aggregator(Aggregator),
    LargeCommunity(Vec<LargeCommunity>),
    Otc(Asn),
    /// An attribute type this codec does not interpret; the value is kept as received.
    Unknown {
        type_code: u8,
        optional: bool,
        transitive: bool,
        #[serde(serialize_with = "json::hex")]
        value: Vec<u8>,
    },
}

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS path segment types (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AsSegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl AsSegmentType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }
}

/// One AS_PATH segment, shown in JSON as `{"sequence": [65001, 65002]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: AsSegmentType,
    pub asns: Vec<Asn>,
}

impl Serialize for AsSegment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.kind, &self.asns)?;
        m.end()
    }
}

/// AS_PATH / AS4_PATH: a list of segments.
///
/// ```text
/// +-----------------+-----------------+--------------------------------+
/// | segment type(1) | segment len (1) | len × AS (2 or 4 octets each)  | ...
/// +-----------------+-----------------+--------------------------------+
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns: asns.into_iter().map(Asn).collect(),
            }],
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2: a set counts 1, confederation
    /// segments count 0).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                AsSegmentType::Sequence => s.asns.len(),
                AsSegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// RFC 7606 §7.2 (and RFC 6793 §6 for AS4_PATH) syntax checks while decoding.
    fn decode(mut v: &[u8], four_octet: bool) -> Result<AsPath, String> {
        let width = if four_octet { 4 } else { 2 };
        let mut segments = Vec::new();
        while !v.is_empty() {
            let [ty, count, rest @ ..] = v else {
                return Err(format!(
                    "{} octet left where a segment header needs 2",
                    v.len()
                ));
            };
            let kind =
                AsSegmentType::from_u8(*ty).ok_or_else(|| format!("unknown segment type {ty}"))?;
            if *count == 0 {
                return Err("segment of length 0".to_string());
            }
            let need = usize::from(*count) * width;
            if need > rest.len() {
                return Err(format!(
                    "segment length {count} needs {need} octets but only {} remain",
                    rest.len()
                ));
            }
            let (body, tail) = rest.split_at(need);
            let asns = if four_octet {
                body.chunks_exact(4)
                    .map(|c| Asn(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            } else {
                body.chunks_exact(2)
                    .map(|c| Asn(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                    .collect()
            };
            segments.push(AsSegment { kind, asns });
            v = tail;
        }
        Ok(AsPath { segments })
    }

    fn encode(&self, four_octet: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
        for s in &self.segments {
            let n = u8::try_from(s.asns.len())
                .map_err(|_| EncodeError::SegmentTooLong(s.asns.len()))?;
            if n == 0 {
                return Err(EncodeError::Invalid(
                    "AS_PATH segment with no AS (RFC 7606 §7.2)",
                ));
            }
            out.put_u8(s.kind as u8);
            out.put_u8(n);
            for a in &s.asns {
                if four_octet {
                    out.put_u32(a.0);
                } else {
                    out.put_u16(u16::try_from(a.0).map_err(|_| EncodeError::AsnNotTwoOctet(a.0))?);
                }
            }
        }
        Ok(())
    }
}

/// AGGREGATOR / AS4_AGGREGATOR: the aggregating AS and router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Aggregator {
    pub asn: Asn,
    pub address: Ipv4Addr,
}

/// An RFC 1997 community, shown as `65000:100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    pub fn new(asn: u16, value: u16) -> Self {
        Community(u32::from(asn) << 16 | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}
impl Serialize for Community {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An RFC 4360 extended community (8 octets). Route targets and sites of origin print as
/// `rt:65000:100` / `soo:192.0.2.1:7`; anything else as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedCommunity(pub [u8; 8]);

impl fmt::Display for ExtendedCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let kind = match b[1] {
            0x02 => "rt",
            0x03 => "soo",
            _ => "",
        };
        // The high bit of the type is "IANA authority"; bit 6 is "non-transitive".
        match (b[0] & 0x3f, kind) {
            (0x00, k) if !k.is_empty() => write!(
                f,
                "{k}:{}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            (0x01, k) if !k.is_empty() => write!(
                f,
                "{k}:{}:{}",
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            (0x02, k) if !k.is_empty() => write!(
                f,
                "{k}:{}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            _ => write!(f, "0x{}", hex::encode(b)),
        }
    }
}
impl Serialize for ExtendedCommunity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An RFC 8092 large community, shown as `1:2:3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}
impl Serialize for LargeCommunity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// MP_REACH_NLRI / MP_UNREACH_NLRI payload by family. IPv4 and IPv6 unicast are decoded; every
/// other family is kept opaque.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpNlri {
    Ipv4Unicast(Vec<Ipv4Nlri>),
    Ipv6Unicast(Vec<Ipv6Nlri>),
    Other {
        afi: Afi,
        safi: Safi,
        #[serde(serialize_with = "json::hex")]
        nlri: Vec<u8>,
    },
}

impl MpNlri {
    pub fn family(&self) -> Family {
        match self {
            MpNlri::Ipv4Unicast(_) => Family::IPV4_UNICAST,
            MpNlri::Ipv6Unicast(_) => Family::IPV6_UNICAST,
            MpNlri::Other { afi, safi, .. } => Family::new(*afi, *safi),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            MpNlri::Ipv4Unicast(v) => v.is_empty(),
            MpNlri::Ipv6Unicast(v) => v.is_empty(),
            MpNlri::Other { nlri, .. } => nlri.is_empty(),
        }
    }

    fn decode(family: Family, v: &[u8], cx: &DecodeContext) -> Result<MpNlri, String> {
        let add_path = cx.add_path(family);
        match family {
            Family::IPV4_UNICAST => {
                let mut out = Vec::new();
                nlri::decode_v4(v, add_path, &mut out).map_err(|e| e.reason)?;
                Ok(MpNlri::Ipv4Unicast(out))
            }
            Family::IPV6_UNICAST => {
                let mut out = Vec::new();
                nlri::decode_v6(v, add_path, &mut out).map_err(|e| e.reason)?;
                Ok(MpNlri::Ipv6Unicast(out))
            }
            f => Ok(MpNlri::Other {
                afi: f.afi,
                safi: f.safi,
                nlri: v.to_vec(),
            }),
        }
    }

    fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let add_path = cx.add_path(self.family());
        match self {
            MpNlri::Ipv4Unicast(v) => nlri::encode_v4(v, add_path, out),
            MpNlri::Ipv6Unicast(v) => nlri::encode_v6(v, add_path, out),
            MpNlri::Other { afi, safi, nlri } => {
                if matches!(
                    Family::new(*afi, *safi),
                    Family::IPV4_UNICAST | Family::IPV6_UNICAST
                ) {
                    return Err(EncodeError::Invalid("opaque MP NLRI for a decoded family"));
                }
                out.put_slice(nlri);
                Ok(())
            }
        }
    }
}

/// The next hop of MP_REACH_NLRI (RFC 4760 §3; RFC 8950 for IPv6 next hops of IPv4 NLRI;
/// RFC 2545 §3 for the optional link-local address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpNextHop {
    Ipv4(Ipv4Addr),
    Ipv6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
    /// Next hop of an opaque family, as received.
    Opaque(#[serde(serialize_with = "json::hex")] Vec<u8>),
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MpReach {
    pub next_hop: MpNextHop,
    pub nlri: MpNlri,
}

/// MP_UNREACH_NLRI (RFC 4760 §4): AFI (2), SAFI (1), withdrawn routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MpUnreach {
    pub withdrawn: MpNlri,
}

impl MpReach {
    pub fn family(&self) -> Family {
        self.nlri.family()
    }

    fn decode(v: &[u8], cx: &DecodeContext) -> Result<MpReach, String> {
        let [a0, a1, safi, nh_len, rest @ ..] = v else {
            return Err(format!(
                "{} octets, shorter than the 5-octet minimum",
                v.len()
            ));
        };
        let family = Family::new(Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi));
        let nh_len = usize::from(*nh_len);
        // Next hop, then the reserved octet (RFC 4760 §3: ignored on receipt).
        if rest.len() < nh_len + 1 {
            return Err(format!(
                "next hop length {nh_len} overruns the attribute ({} octets left)",
                rest.len()
            ));
        }
        let (nh, rest) = rest.split_at(nh_len);
        let nlri = &rest[1..];
        let v6 = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or([0; 16]));
        let next_hop = match (family, nh.len()) {
            (Family::IPV4_UNICAST, 4) => MpNextHop::Ipv4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
            // RFC 8950 §3 (IPv4 NLRI) and RFC 2545 §3 (IPv6 NLRI): 16 or 32 octets.
            (Family::IPV4_UNICAST | Family::IPV6_UNICAST, 16) => MpNextHop::Ipv6 {
                global: v6(nh),
                link_local: None,
            },
            (Family::IPV4_UNICAST | Family::IPV6_UNICAST, 32) => MpNextHop::Ipv6 {
                global: v6(&nh[..16]),
                link_local: Some(v6(&nh[16..])),
            },
            (Family::IPV4_UNICAST | Family::IPV6_UNICAST, n) => {
                return Err(format!("next hop length {n} is invalid for {family}"));
            }
            _ => MpNextHop::Opaque(nh.to_vec()),
        };
        let nlri = MpNlri::decode(family, nlri, cx).map_err(|e| format!("{family} NLRI: {e}"))?;
        Ok(MpReach { next_hop, nlri })
    }

    fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let f = self.family();
        out.put_u16(f.afi.0);
        out.put_u8(f.safi.0);
        let opaque_family = !matches!(f, Family::IPV4_UNICAST | Family::IPV6_UNICAST);
        match &self.next_hop {
            MpNextHop::Ipv4(a) if f == Family::IPV4_UNICAST => {
                out.put_u8(4);
                out.put_slice(&a.octets());
            }
            MpNextHop::Ipv6 { global, link_local } if !opaque_family => {
                out.put_u8(if link_local.is_some() { 32 } else { 16 });
                out.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.put_slice(&ll.octets());
                }
            }
            MpNextHop::Opaque(b) if opaque_family => {
                let l = u8::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong {
                    what: "MP_REACH_NLRI next hop",
                    len: b.len(),
                    max: 255,
                })?;
                out.put_u8(l);
                out.put_slice(b);
            }
            _ => {
                return Err(EncodeError::Invalid(
                    "MP_REACH_NLRI next hop does not suit its family",
                ));
            }
        }
        out.put_u8(0);
        self.nlri.encode(cx, out)
    }
}

impl MpUnreach {
    fn decode(v: &[u8], cx: &DecodeContext) -> Result<MpUnreach, String> {
        let [a0, a1, safi, rest @ ..] = v else {
            return Err(format!(
                "{} octets, shorter than the 3-octet minimum",
                v.len()
            ));
        };
        let family = Family::new(Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi));
        let withdrawn =
            MpNlri::decode(family, rest, cx).map_err(|e| format!("{family} NLRI: {e}"))?;
        Ok(MpUnreach { withdrawn })
    }

    fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let f = self.withdrawn.family();
        out.put_u16(f.afi.0);
        out.put_u8(f.safi.0);
        self.withdrawn.encode(cx, out)
    }
}

fn exact<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    <[u8; N]>::try_from(v).map_err(|_| format!("length {} (must be {N})", v.len()))
}

fn multiple_of(v: &[u8], n: usize) -> Result<(), String> {
    if v.is_empty() || !v.len().is_multiple_of(n) {
        return Err(format!(
            "length {} (must be a non-zero multiple of {n})",
            v.len()
        ));
    }
    Ok(())
}

impl AttributeValue {
    pub fn type_code(&self) -> u8 {
        use code::*;
        match self {
            AttributeValue::Origin(_) => ORIGIN,
            AttributeValue::AsPath(_) => AS_PATH,
            AttributeValue::NextHop(_) => NEXT_HOP,
            AttributeValue::MultiExitDisc(_) => MULTI_EXIT_DISC,
            AttributeValue::LocalPref(_) => LOCAL_PREF,
            AttributeValue::AtomicAggregate => ATOMIC_AGGREGATE,
            AttributeValue::Aggregator(_) => AGGREGATOR,
            AttributeValue::Communities(_) => COMMUNITIES,
            AttributeValue::OriginatorId(_) => ORIGINATOR_ID,
            AttributeValue::ClusterList(_) => CLUSTER_LIST,
            AttributeValue::MpReachNlri(_) => MP_REACH_NLRI,
            AttributeValue::MpUnreachNlri(_) => MP_UNREACH_NLRI,
            AttributeValue::ExtendedCommunities(_) => EXTENDED_COMMUNITIES,
            AttributeValue::As4Path(_) => AS4_PATH,
            AttributeValue::As4Aggregator(_) => AS4_AGGREGATOR,
            AttributeValue::LargeCommunity(_) => LARGE_COMMUNITY,
            AttributeValue::Otc(_) => OTC,
            AttributeValue::Unknown { type_code, .. } => *type_code,
        }
    }

    /// Decodes the value of a known attribute type (flags already checked); `Ok(None)` for an
    /// unknown type, which the caller keeps opaque.
    pub(crate) fn decode(
        type_code: u8,
        v: &[u8],
        cx: &DecodeContext,
    ) -> Result<Option<AttributeValue>, AttrProblem> {
        use code::*;
        let (action, rfc) = malformed_action(type_code);
        let problem = |subcode: UpdateSubcode, reason: String| AttrProblem {
            subcode,
            action,
            rfc,
            reason,
        };
        let len_err = |reason: String| problem(UpdateSubcode::AttributeLengthError, reason);
        let value = match type_code {
            ORIGIN => {
                let [o] = exact::<1>(v).map_err(len_err)?;
                AttributeValue::Origin(match o {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    n => {
                        return Err(problem(
                            UpdateSubcode::InvalidOriginAttribute,
                            format!("undefined ORIGIN value {n}"),
                        ));
                    }
                })
            }
            AS_PATH => AttributeValue::AsPath(
                AsPath::decode(v, cx.four_octet_as)
                    .map_err(|r| problem(UpdateSubcode::MalformedAsPath, r))?,
            ),
            NEXT_HOP => AttributeValue::NextHop(Ipv4Addr::from(exact::<4>(v).map_err(len_err)?)),
            MULTI_EXIT_DISC => {
                AttributeValue::MultiExitDisc(u32::from_be_bytes(exact::<4>(v).map_err(len_err)?))
            }
            LOCAL_PREF => {
                AttributeValue::LocalPref(u32::from_be_bytes(exact::<4>(v).map_err(len_err)?))
            }
            ATOMIC_AGGREGATE => {
                exact::<0>(v).map_err(len_err)?;
                AttributeValue::AtomicAggregate
            }
            AGGREGATOR => {
                let agg = if cx.four_octet_as {
                    let b = exact::<8>(v).map_err(len_err)?;
                    Aggregator {
                        asn: Asn(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                        address: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
                    }
                } else {
                    let b = exact::<6>(v).map_err(len_err)?;
                    Aggregator {
                        asn: Asn(u32::from(u16::from_be_bytes([b[0], b[1]]))),
                        address: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                    }
                };
                AttributeValue::Aggregator(agg)
            }
            AS4_AGGREGATOR => {
                let b = exact::<8>(v).map_err(len_err)?;
                AttributeValue::As4Aggregator(Aggregator {
                    asn: Asn(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                    address: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
                })
            }
            COMMUNITIES => {
                multiple_of(v, 4).map_err(len_err)?;
                AttributeValue::Communities(
                    v.chunks_exact(4)
                        .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                )
            }
            ORIGINATOR_ID => {
                AttributeValue::OriginatorId(Ipv4Addr::from(exact::<4>(v).map_err(len_err)?))
            }
            CLUSTER_LIST => {
                multiple_of(v, 4).map_err(len_err)?;
                AttributeValue::ClusterList(
                    v.chunks_exact(4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                        .collect(),
                )
            }
            MP_REACH_NLRI => AttributeValue::MpReachNlri(MpReach::decode(v, cx).map_err(|r| {
                problem(
                    UpdateSubcode::OptionalAttributeError,
                    format!("MP_REACH_NLRI: {r}"),
                )
            })?),
            MP_UNREACH_NLRI => {
                AttributeValue::MpUnreachNlri(MpUnreach::decode(v, cx).map_err(|r| {
                    problem(
                        UpdateSubcode::OptionalAttributeError,
                        format!("MP_UNREACH_NLRI: {r}"),
                    )
                })?)
            }
            EXTENDED_COMMUNITIES => {
                multiple_of(v, 8).map_err(len_err)?;
                AttributeValue::ExtendedCommunities(
                    v.chunks_exact(8)
                        .map(|c| {
                            ExtendedCommunity([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                )
            }
            AS4_PATH => {
                let path = AsPath::decode(v, true)
                    .map_err(|r| problem(UpdateSubcode::MalformedAsPath, r))?;
                // RFC 6793 §3: confederation segments MUST NOT appear in AS4_PATH.
                if path.segments.iter().any(|s| {
                    matches!(
                        s.kind,
                        AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet
                    )
                }) {
                    return Err(problem(
                        UpdateSubcode::MalformedAsPath,
                        "confederation segment in AS4_PATH".to_string(),
                    ));
                }
                AttributeValue::As4Path(path)
            }
            LARGE_COMMUNITY => {
                multiple_of(v, 12).map_err(len_err)?;
                AttributeValue::LargeCommunity(
                    v.chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                            local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                        })
                        .collect(),
                )
            }
            OTC => AttributeValue::Otc(Asn(u32::from_be_bytes(exact::<4>(v).map_err(len_err)?))),
            _ => return Ok(None),
        };
        Ok(Some(value))
    }

    fn encode_value(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            AttributeValue::Origin(o) => out.put_u8(*o as u8),
            AttributeValue::AsPath(p) => p.encode(cx.four_octet_as, out)?,
            AttributeValue::NextHop(a) | AttributeValue::OriginatorId(a) => {
                out.put_slice(&a.octets())
            }
            AttributeValue::MultiExitDisc(v) | AttributeValue::LocalPref(v) => out.put_u32(*v),
            AttributeValue::AtomicAggregate => {}
            AttributeValue::Aggregator(a) => {
                if cx.four_octet_as {
                    out.put_u32(a.asn.0);
                } else {
                    out.put_u16(
                        u16::try_from(a.asn.0).map_err(|_| EncodeError::AsnNotTwoOctet(a.asn.0))?,
                    );
                }
                out.put_slice(&a.address.octets());
            }
            AttributeValue::As4Aggregator(a) => {
                out.put_u32(a.asn.0);
                out.put_slice(&a.address.octets());
            }
            AttributeValue::Communities(cs) => {
                if cs.is_empty() {
                    return Err(EncodeError::Invalid(
                        "COMMUNITIES must not be empty (RFC 7606 §7.8)",
                    ));
                }
                for c in cs {
                    out.put_u32(c.0);
                }
            }
            AttributeValue::ClusterList(ids) => {
                if ids.is_empty() {
                    return Err(EncodeError::Invalid(
                        "CLUSTER_LIST must not be empty (RFC 7606 §7.10)",
                    ));
                }
                for id in ids {
                    out.put_slice(&id.octets());
                }
            }
            AttributeValue::MpReachNlri(m) => m.encode(cx, out)?,
            AttributeValue::MpUnreachNlri(m) => m.encode(cx, out)?,
            AttributeValue::ExtendedCommunities(cs) => {
                if cs.is_empty() {
                    return Err(EncodeError::Invalid(
                        "EXTENDED_COMMUNITIES must not be empty (RFC 7606 §7.14)",
                    ));
                }
                for c in cs {
                    out.put_slice(&c.0);
                }
            }
            AttributeValue::As4Path(p) => {
                if p.segments.iter().any(|s| {
                    matches!(
                        s.kind,
                        AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet
                    )
                }) {
                    return Err(EncodeError::Invalid(
                        "AS4_PATH must not carry confederation segments (RFC 6793 §3)",
                    ));
                }
                p.encode(true, out)?
            }
            AttributeValue::LargeCommunity(cs) => {
                if cs.is_empty() {
                    return Err(EncodeError::Invalid(
                        "LARGE_COMMUNITY must not be empty (RFC 8092)",
                    ));
                }
                for c in cs {
                    out.put_u32(c.global);
                    out.put_u32(c.local1);
                    out.put_u32(c.local2);
                }
            }
            AttributeValue::Otc(a) => out.put_u32(a.0),
            AttributeValue::Unknown {
                type_code,
                value,
                optional,
                ..
            } => {
                if known_flags(*type_code).is_some() {
                    return Err(EncodeError::Invalid(
                        "opaque attribute uses a known type code; use its typed variant",
                    ));
                }
                if !optional {
                    return Err(EncodeError::Invalid(
                        "an unrecognised attribute must be optional (RFC 4271 §6.3)",
                    ));
                }
                out.put_slice(value);
            }
        }
        Ok(())
    }
}
