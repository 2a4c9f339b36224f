//! BGP-4 wire codec (RFC 4271 and extensions): bytes in, typed messages out, and back.
//!
//! Owns the message formats only. It knows nothing of sessions, timers, sockets or the RIB: what a
//! session negotiated arrives as a [`DecodeContext`], never as global state. Decoding never
//! panics and never allocates more than the input it was given; every malformed input maps to a
//! [`MessageError`] (a NOTIFICATION, RFC 4271 §6) or, for UPDATE attribute errors that RFC 7606
//! lets a session survive, to an [`update::UpdateAction`] plus a list of [`AttributeError`]s
//! carried by the decoded [`Update`].
//!
//! Encoding is canonical and mirrors decoding: `decode(encode(m)) == m` for every message that
//! encodes without error and decodes without RFC 7606 errors.

pub mod attribute;
pub mod capability;
pub mod context;
pub mod error;
pub mod family;
pub mod framer;
pub mod fuzzing;
pub mod header;
mod json;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod prefix;
mod reader;
pub mod route_refresh;
pub mod update;

pub use attribute::{
    Aggregator, AsPath, AsSegment, AsSegmentType, Attribute, AttributeValue, Community,
    ExtendedCommunity, LargeCommunity, MpNextHop, MpNlri, MpReach, MpUnreach, Origin,
};
pub use capability::{
    AddPathEntry, AddPathMode, BgpRole, Capability, ExtendedNextHopEntry, GracefulRestart,
    GracefulRestartFamily, LlgrFamily,
};
pub use context::DecodeContext;
pub use error::{AttributeError, EncodeError, ErrorAction, MessageError};
pub use family::{Afi, Asn, Family, Safi};
pub use framer::Framer;
pub use header::{HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, MessageType};
pub use nlri::{Ipv4Nlri, Ipv6Nlri, Nlri};
pub use notification::Notification;
pub use open::{Open, OptionalParameter};
pub use prefix::{Ipv4Prefix, Ipv6Prefix, PrefixError};
pub use route_refresh::{RouteRefresh, RouteRefreshSubtype};
pub use update::{Update, UpdateAction};

use bytes::BytesMut;
use serde::Serialize;

/// One BGP message (RFC 4271 §4.1 message types 1–4, RFC 2918 type 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The header type code of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Appends the encoded message (header included) to `out`. On error `out` is left as it was.
    pub fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_inner(cx, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(
        &self,
        cx: &DecodeContext,
        out: &mut BytesMut,
        start: usize,
    ) -> Result<(), EncodeError> {
        header::encode_header_placeholder(self.message_type(), out);
        match self {
            Message::Open(m) => m.encode(out)?,
            Message::Update(m) => m.encode(cx, out)?,
            Message::Notification(m) => m.encode(out),
            Message::Keepalive => {}
            Message::RouteRefresh(m) => m.encode(out)?,
        }
        // RFC 8654 §4: OPEN and KEEPALIVE never exceed 4096 octets, even when negotiated.
        let max = match self {
            Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
            _ => cx.max_message_len(),
        };
        header::finish_header(out, start, max, self.message_type())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, cx: &DecodeContext) -> Result<bytes::Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(64);
        self.encode(cx, &mut out)?;
        Ok(out.freeze())
    }
}

/// Decodes one complete message, `frame` including its 19-octet header (as returned by
/// [`Framer::next_frame`]).
///
/// Session-reset errors come back as `Err`; RFC 7606 non-fatal UPDATE errors come back inside
/// the `Ok(Message::Update)` (see [`Update::action`] and [`Update::errors`]).
pub fn decode_message(frame: &[u8], cx: &DecodeContext) -> Result<Message, MessageError> {
    let (ty, body) = header::decode_header(frame, cx.max_message_len())?;
    match ty {
        MessageType::Open => open::Open::decode(body, cx).map(Message::Open),
        MessageType::Update => update::Update::decode(body, cx).map(Message::Update),
        MessageType::Notification => Ok(Message::Notification(Notification::decode(body))),
        MessageType::Keepalive => Ok(Message::Keepalive),
        MessageType::RouteRefresh => RouteRefresh::decode(body).map(Message::RouteRefresh),
    }
}
