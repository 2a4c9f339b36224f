//! The 19-octet message header (RFC 4271 §4.1) and its checks (RFC 4271 §6.1, RFC 8654 §4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                           Marker                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::error::{EncodeError, HeaderSubcode, MessageError};

pub const HEADER_LEN: usize = 19;
pub const MARKER: [u8; 16] = [0xff; 16];
/// RFC 4271 §4: maximum message size.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 8654: maximum size once the Extended Message capability is negotiated.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Update => "UPDATE",
            Self::Notification => "NOTIFICATION",
            Self::Keepalive => "KEEPALIVE",
            Self::RouteRefresh => "ROUTE-REFRESH",
        }
    }

    /// Smallest and largest legal total length for this type (RFC 4271 §4.2–4.5, RFC 2918 §3,
    /// RFC 8654 §4 for OPEN and KEEPALIVE).
    fn length_bounds(self, max: usize) -> (usize, usize) {
        match self {
            Self::Open => (29, MAX_MESSAGE_LEN),
            Self::Update => (23, max),
            Self::Notification => (21, max),
            Self::Keepalive => (19, 19),
            Self::RouteRefresh => (23, max),
        }
    }
}

pub(crate) fn bad_length(len: u16, reason: String) -> MessageError {
    // RFC 4271 §6.1: the Data field carries the erroneous Length field.
    MessageError::header(
        HeaderSubcode::BadMessageLength,
        len.to_be_bytes().to_vec(),
        reason,
    )
}

/// Checks marker, length and type; returns the type and the body after the header.
///
/// `max` is 4096, or 65535 after RFC 8654 negotiation. `frame` must hold exactly one message.
pub(crate) fn decode_header(
    frame: &[u8],
    max: usize,
) -> Result<(MessageType, &[u8]), MessageError> {
    let Some((head, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(MessageError::header(
            HeaderSubcode::BadMessageLength,
            Vec::new(),
            format!(
                "frame of {} octets is shorter than the 19-octet header",
                frame.len()
            ),
        ));
    };
    check_marker(head)?;
    let len = u16::from_be_bytes([head[16], head[17]]);
    check_length(len, max)?;
    if usize::from(len) != frame.len() {
        return Err(bad_length(
            len,
            format!(
                "length field says {len} octets but the frame holds {}",
                frame.len()
            ),
        ));
    }
    let Some(ty) = MessageType::from_u8(head[18]) else {
        return Err(MessageError::header(
            HeaderSubcode::BadMessageType,
            vec![head[18]],
            format!("unknown message type {}", head[18]),
        ));
    };
    let (min, type_max) = ty.length_bounds(max);
    let l = usize::from(len);
    if l < min || l > type_max {
        return Err(bad_length(
            len,
            format!(
                "{} message length {len} outside {min}..={type_max}",
                ty.name()
            ),
        ));
    }
    Ok((ty, body))
}

pub(crate) fn check_marker(head: &[u8; HEADER_LEN]) -> Result<(), MessageError> {
    if head[..16] != MARKER {
        return Err(MessageError::header(
            HeaderSubcode::ConnectionNotSynchronized,
            Vec::new(),
            "marker is not all ones".to_string(),
        ));
    }
    Ok(())
}

pub(crate) fn check_length(len: u16, max: usize) -> Result<(), MessageError> {
    if usize::from(len) < HEADER_LEN || usize::from(len) > max {
        return Err(bad_length(
            len,
            format!("length {len} outside {HEADER_LEN}..={max}"),
        ));
    }
    Ok(())
}

/// Writes marker, a zero length and the type; [`finish_header`] patches the length.
pub(crate) fn encode_header_placeholder(ty: MessageType, out: &mut BytesMut) {
    out.put_slice(&MARKER);
    out.put_u16(0);
    out.put_u8(ty as u8);
}

pub(crate) fn finish_header(
    out: &mut BytesMut,
    start: usize,
    max: usize,
    ty: MessageType,
) -> Result<(), EncodeError> {
    let len = out.len() - start;
    if len > max {
        return Err(EncodeError::MessageTooLong {
            what: ty.name(),
            len,
            max,
        });
    }
    let bytes = (len as u16).to_be_bytes();
    out[start + 16] = bytes[0];
    out[start + 17] = bytes[1];
    Ok(())
}
