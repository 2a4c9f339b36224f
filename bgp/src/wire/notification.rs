//! NOTIFICATION message (RFC 4271 §4.5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use bytes::{BufMut, BytesMut};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// A NOTIFICATION: code, subcode and opaque data (any code is kept, known or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Body is at least 2 octets: the header check guarantees it (RFC 4271 §6.1).
    pub(crate) fn decode(body: &[u8]) -> Notification {
        match body {
            [code, subcode, data @ ..] => Notification::new(*code, *subcode, data.to_vec()),
            // Unreachable after the header length check; decode what there is rather than panic.
            [code] => Notification::new(*code, 0, Vec::new()),
            [] => Notification::new(0, 0, Vec::new()),
        }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }

    /// The IANA names of code and subcode, e.g. `("Cease", "Administrative Shutdown")`.
    pub fn names(&self) -> (&'static str, &'static str) {
        let code = match self.code {
            1 => "Message Header Error",
            2 => "OPEN Message Error",
            3 => "UPDATE Message Error",
            4 => "Hold Timer Expired",
            5 => "Finite State Machine Error",
            6 => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            _ => "Unknown",
        };
        let sub = match (self.code, self.subcode) {
            (_, 0) => "Unspecific",
            (1, 1) => "Connection Not Synchronized",
            (1, 2) => "Bad Message Length",
            (1, 3) => "Bad Message Type",
            (2, 1) => "Unsupported Version Number",
            (2, 2) => "Bad Peer AS",
            (2, 3) => "Bad BGP Identifier",
            (2, 4) => "Unsupported Optional Parameter",
            (2, 6) => "Unacceptable Hold Time",
            (2, 7) => "Unsupported Capability",
            (2, 11) => "Role Mismatch",
            (3, 1) => "Malformed Attribute List",
            (3, 2) => "Unrecognized Well-known Attribute",
            (3, 3) => "Missing Well-known Attribute",
            (3, 4) => "Attribute Flags Error",
            (3, 5) => "Attribute Length Error",
            (3, 6) => "Invalid ORIGIN Attribute",
            (3, 8) => "Invalid NEXT_HOP Attribute",
            (3, 9) => "Optional Attribute Error",
            (3, 10) => "Invalid Network Field",
            (3, 11) => "Malformed AS_PATH",
            (5, 1) => "Receive Unexpected Message in OpenSent State",
            (5, 2) => "Receive Unexpected Message in OpenConfirm State",
            (5, 3) => "Receive Unexpected Message in Established State",
            (6, 1) => "Maximum Number of Prefixes Reached",
            (6, 2) => "Administrative Shutdown",
            (6, 3) => "Peer De-configured",
            (6, 4) => "Administrative Reset",
            (6, 5) => "Connection Rejected",
            (6, 6) => "Other Configuration Change",
            (6, 7) => "Connection Collision Resolution",
            (6, 8) => "Out of Resources",
            (6, 9) => "Hard Reset",
            (6, 10) => "BFD Down",
            (7, 1) => "Invalid Message Length",
            _ => "Unknown",
        };
        (code, sub)
    }

    /// RFC 8203/9003 shutdown communication (Cease/2 and Cease/4), when present and valid UTF-8.
    pub fn shutdown_message(&self) -> Option<&str> {
        if self.code != 6 || !(self.subcode == 2 || self.subcode == 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(len))?).ok()
    }
}

impl Serialize for Notification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (code_name, sub_name) = self.names();
        let msg = self.shutdown_message();
        let mut st = s.serialize_struct("Notification", 5 + usize::from(msg.is_some()))?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("subcode", &self.subcode)?;
        st.serialize_field("code_name", code_name)?;
        st.serialize_field("subcode_name", sub_name)?;
        st.serialize_field("data", &hex::encode(&self.data))?;
        if let Some(m) = msg {
            st.serialize_field("shutdown_message", m)?;
        }
        st.end()
    }
}
