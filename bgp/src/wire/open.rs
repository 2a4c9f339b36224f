//! OPEN message (RFC 4271 §4.2) with RFC 5492 capabilities and RFC 9072 extended optional
//! parameters length.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! RFC 9072: Opt Parm Len 255 followed by Parameter Type 255 means a 2-octet length follows,
//! and every parameter then has a 2-octet length.

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::capability::{AddPathEntry, Capability};
use super::context::DecodeContext;
use super::error::{EncodeError, MessageError, OpenSubcode};
use super::family::Asn;
use super::reader::{Need, be_u8, be_u16, be_u32, take_n};

/// RFC 5492: optional parameter type 2.
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: the marker of the extended encoding.
const PARAM_EXTENDED: u8 = 255;
pub const BGP_VERSION: u8 = 4;

/// One optional parameter. Only capabilities (type 2) exist today; other types are an OPEN
/// error ("Unsupported Optional Parameter", RFC 4271 §6.2). Routers differ in whether they put
/// all capabilities in one parameter or one per parameter; the grouping is kept so re-encoding
/// is exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionalParameter {
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS when the AS needs 4 octets).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub params: Vec<OptionalParameter>,
    /// Use the RFC 9072 extended encoding even though the parameters would fit without it.
    /// (It is used regardless whenever they do not fit.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force_extended_params: bool,
}

impl Open {
    /// An OPEN for `asn` with all `capabilities` in one optional parameter. Adds nothing by
    /// itself: include `Capability::FourOctetAs` when you want it.
    pub fn new(asn: Asn, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Open {
        let params = if capabilities.is_empty() {
            Vec::new()
        } else {
            vec![OptionalParameter { capabilities }]
        };
        Open {
            my_as: asn.as_two_octet(),
            hold_time,
            bgp_id,
            params,
            force_extended_params: false,
        }
    }

    /// All capabilities, over all optional parameters.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| p.capabilities.iter())
    }

    /// The sender's AS: the 4-octet AS capability if present, else My Autonomous System.
    pub fn asn(&self) -> Asn {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(Asn(u32::from(self.my_as)))
    }

    /// All ADD-PATH entries.
    pub fn add_path(&self) -> impl Iterator<Item = &AddPathEntry> {
        self.capabilities().flat_map(|c| match c {
            Capability::AddPath(e) => e.as_slice(),
            _ => &[],
        })
    }

    pub(crate) fn decode(body: &[u8], cx: &DecodeContext) -> Result<Open, MessageError> {
        let unspecific =
            |reason: String| MessageError::open(OpenSubcode::Unspecific, Vec::new(), reason);
        let short = || unspecific(format!("body of {} octets is too short", body.len()));
        let (i, version) = be_u8(body).need(short)?;
        if version != BGP_VERSION {
            // RFC 4271 §6.2: data is the largest locally supported version.
            return Err(MessageError::open(
                OpenSubcode::UnsupportedVersionNumber,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
                format!("version {version} is not supported (only 4)"),
            ));
        }
        let (i, my_as) = be_u16(i).need(short)?;
        let (i, hold_time) = be_u16(i).need(short)?;
        let (i, bgp_id) = be_u32(i).need(short)?;
        let (i, opt_len) = be_u8(i).need(short)?;

        // RFC 9072 §2: the extended form is recognised by Opt Parm Len 255 + type 255.
        let extended = opt_len == 255 && i.first() == Some(&PARAM_EXTENDED);
        let (i, params_len) = if extended {
            let (i, _) = be_u8(i).need(short)?;
            let (i, l) = be_u16(i).need(short)?;
            (i, usize::from(l))
        } else {
            (i, usize::from(opt_len))
        };
        let (rest, mut pbytes) = take_n(i, params_len).need(|| {
            unspecific(format!(
                "optional parameters length {params_len} exceeds the {} octets left",
                i.len()
            ))
        })?;
        if !rest.is_empty() {
            return Err(unspecific(format!(
                "{} octets of trailing data after the optional parameters",
                rest.len()
            )));
        }
        let mut params = Vec::new();
        let mut fits_short = params_len <= 255;
        while !pbytes.is_empty() {
            let trunc = || {
                unspecific(format!(
                    "optional parameter truncated: {}",
                    hex::encode(pbytes)
                ))
            };
            let (r, ty) = be_u8(pbytes).need(trunc)?;
            let (r, len) = if extended {
                let (r, l) = be_u16(r).need(trunc)?;
                fits_short &= l <= 255;
                (r, usize::from(l))
            } else {
                let (r, l) = be_u8(r).need(trunc)?;
                (r, usize::from(l))
            };
            let (r, value) = take_n(r, len).need(trunc)?;
            if ty != PARAM_CAPABILITIES {
                return Err(MessageError::open(
                    OpenSubcode::UnsupportedOptionalParameter,
                    Vec::new(),
                    format!("optional parameter type {ty} is not supported"),
                ));
            }
            params.push(OptionalParameter {
                capabilities: Capability::decode_list(value)?,
            });
            pbytes = r;
        }
        if extended {
            // Re-encoding without the extended form would shrink each parameter header by one.
            let short_len: usize = params_len - params.len();
            fits_short &= short_len <= 255;
        }

        let open = Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(bgp_id),
            params,
            force_extended_params: extended && fits_short,
        };
        // RFC 4271 §6.2: hold time 1 or 2 seconds is unacceptable.
        if hold_time == 1 || hold_time == 2 {
            return Err(MessageError::open(
                OpenSubcode::UnacceptableHoldTime,
                Vec::new(),
                format!("hold time {hold_time} s (must be 0 or at least 3)"),
            ));
        }
        // RFC 6286 §2.2: the BGP Identifier is a non-zero 4-octet value.
        if bgp_id == 0 {
            return Err(MessageError::open(
                OpenSubcode::BadBgpIdentifier,
                Vec::new(),
                "BGP identifier 0.0.0.0".to_string(),
            ));
        }
        let asn = open.asn();
        // RFC 7607 §2: AS 0 is Bad Peer AS, in My AS or in the 4-octet AS capability.
        if my_as == 0 || asn.0 == 0 {
            return Err(MessageError::open(
                OpenSubcode::BadPeerAs,
                my_as.to_be_bytes().to_vec(),
                "peer AS 0 (RFC 7607)".to_string(),
            ));
        }
        if let Some(expected) = cx.peer_as
            && expected != asn
        {
            return Err(MessageError::open(
                OpenSubcode::BadPeerAs,
                my_as.to_be_bytes().to_vec(),
                format!("peer AS {asn}, expected {expected}"),
            ));
        }
        Ok(open)
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(BGP_VERSION);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_u32(u32::from(self.bgp_id));
        // Encode parameters in the short form first; fall back to RFC 9072 if anything overflows.
        let mut short = BytesMut::new();
        let mut fits = true;
        for p in &self.params {
            short.put_u8(PARAM_CAPABILITIES);
            let at = short.len();
            short.put_u8(0);
            for c in &p.capabilities {
                c.encode(&mut short)?;
            }
            let len = short.len() - at - 1;
            match u8::try_from(len) {
                Ok(l) => short[at] = l,
                Err(_) => fits = false,
            }
        }
        fits &= short.len() <= 255;
        if fits && !self.force_extended_params {
            out.put_u8(short.len() as u8);
            out.put_slice(&short);
            return Ok(());
        }
        out.put_u8(255);
        out.put_u8(PARAM_EXTENDED);
        let len_at = out.len();
        out.put_u16(0);
        for p in &self.params {
            out.put_u8(PARAM_CAPABILITIES);
            let at = out.len();
            out.put_u16(0);
            for c in &p.capabilities {
                c.encode(out)?;
            }
            let len = out.len() - at - 2;
            let l = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
                what: "optional parameter",
                len,
                max: 65535,
            })?;
            out[at..at + 2].copy_from_slice(&l.to_be_bytes());
        }
        let len = out.len() - len_at - 2;
        let l = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "optional parameters",
            len,
            max: 65535,
        })?;
        out[len_at..len_at + 2].copy_from_slice(&l.to_be_bytes());
        Ok(())
    }
}
