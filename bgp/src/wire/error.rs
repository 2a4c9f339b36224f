//! Decode and encode errors, and the RFC 7606 error-handling action.
//!
//! A [`MessageError`] is a session-reset error: it converts into the NOTIFICATION that RFC 4271
//! §6 (and RFC 7606, RFC 7313, RFC 8654) require. An [`AttributeError`] is an UPDATE attribute
//! error a session survives; it rides inside the decoded `Update` with the [`ErrorAction`] taken.

use serde::Serialize;

use super::json;
use super::notification::Notification;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ErrorCode {
    MessageHeader = 1,
    Open = 2,
    Update = 3,
    HoldTimerExpired = 4,
    FiniteStateMachine = 5,
    Cease = 6,
    RouteRefresh = 7,
}

/// Message Header Error subcodes (RFC 4271 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum HeaderSubcode {
    ConnectionNotSynchronized = 1,
    BadMessageLength = 2,
    BadMessageType = 3,
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492, RFC 9234).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum OpenSubcode {
    Unspecific = 0,
    UnsupportedVersionNumber = 1,
    BadPeerAs = 2,
    BadBgpIdentifier = 3,
    UnsupportedOptionalParameter = 4,
    UnacceptableHoldTime = 6,
    UnsupportedCapability = 7,
    RoleMismatch = 11,
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3; 7 is deprecated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum UpdateSubcode {
    MalformedAttributeList = 1,
    UnrecognizedWellKnownAttribute = 2,
    MissingWellKnownAttribute = 3,
    AttributeFlagsError = 4,
    AttributeLengthError = 5,
    InvalidOriginAttribute = 6,
    InvalidNextHopAttribute = 8,
    OptionalAttributeError = 9,
    InvalidNetworkField = 10,
    MalformedAsPath = 11,
}

/// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RouteRefreshSubcode {
    InvalidMessageLength = 1,
}

/// A decode error that ends the session: the NOTIFICATION to send, and a reason a person reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum MessageError {
    #[error("message header: {reason}")]
    Header {
        subcode: HeaderSubcode,
        #[serde(serialize_with = "json::hex")]
        data: Vec<u8>,
        reason: String,
    },
    #[error("OPEN: {reason}")]
    Open {
        subcode: OpenSubcode,
        #[serde(serialize_with = "json::hex")]
        data: Vec<u8>,
        reason: String,
    },
    #[error("UPDATE: {reason}")]
    Update {
        subcode: UpdateSubcode,
        #[serde(serialize_with = "json::hex")]
        data: Vec<u8>,
        reason: String,
    },
    #[error("ROUTE-REFRESH: {reason}")]
    RouteRefresh {
        subcode: RouteRefreshSubcode,
        #[serde(serialize_with = "json::hex")]
        data: Vec<u8>,
        reason: String,
    },
}

impl MessageError {
    pub(crate) fn header(subcode: HeaderSubcode, data: Vec<u8>, reason: String) -> Self {
        MessageError::Header {
            subcode,
            data,
            reason,
        }
    }
    pub(crate) fn open(subcode: OpenSubcode, data: Vec<u8>, reason: String) -> Self {
        MessageError::Open {
            subcode,
            data,
            reason,
        }
    }
    pub(crate) fn update(subcode: UpdateSubcode, data: Vec<u8>, reason: String) -> Self {
        MessageError::Update {
            subcode,
            data,
            reason,
        }
    }

    /// The NOTIFICATION error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::Header { .. } => ErrorCode::MessageHeader,
            MessageError::Open { .. } => ErrorCode::Open,
            MessageError::Update { .. } => ErrorCode::Update,
            MessageError::RouteRefresh { .. } => ErrorCode::RouteRefresh,
        }
    }

    /// The NOTIFICATION subcode.
    pub fn subcode(&self) -> u8 {
        match self {
            MessageError::Header { subcode, .. } => *subcode as u8,
            MessageError::Open { subcode, .. } => *subcode as u8,
            MessageError::Update { subcode, .. } => *subcode as u8,
            MessageError::RouteRefresh { subcode, .. } => *subcode as u8,
        }
    }

    pub fn data(&self) -> &[u8] {
        match self {
            MessageError::Header { data, .. }
            | MessageError::Open { data, .. }
            | MessageError::Update { data, .. }
            | MessageError::RouteRefresh { data, .. } => data,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            MessageError::Header { reason, .. }
            | MessageError::Open { reason, .. }
            | MessageError::Update { reason, .. }
            | MessageError::RouteRefresh { reason, .. } => reason,
        }
    }

    /// The NOTIFICATION to send before closing the session (RFC 4271 §6).
    pub fn notification(&self) -> Notification {
        Notification::new(self.code() as u8, self.subcode(), self.data().to_vec())
    }
}

impl From<&MessageError> for Notification {
    fn from(e: &MessageError) -> Self {
        e.notification()
    }
}

/// RFC 7606 §2 error-handling approaches, weakest first (§3(h): the strongest one applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorAction {
    /// Drop the attribute, keep the routes.
    AttributeDiscard,
    /// Treat every route in the UPDATE (NLRI, MP_REACH_NLRI) as withdrawn.
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close the session.
    SessionReset,
}

/// One attribute error found while decoding an UPDATE that the session survives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeError {
    /// Attribute type code (0 when the error is about the attribute list as a whole).
    pub type_code: u8,
    /// The UPDATE error subcode RFC 4271 §6.3 would have sent.
    pub subcode: UpdateSubcode,
    pub action: ErrorAction,
    /// Where the rule comes from, e.g. `RFC 7606 §7.1`.
    pub rfc: &'static str,
    pub reason: String,
}

/// Why a message could not be encoded. These are caller bugs or limits of the wire format, never
/// caused by received bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} message is {len} octets, more than the maximum {max}")]
    MessageTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("AS {0} does not fit a 2-octet AS field (use AS_TRANS and AS4_PATH, RFC 6793)")]
    AsnNotTwoOctet(u32),
    #[error("AS_PATH segment of {0} ASes exceeds 255; split it")]
    SegmentTooLong(usize),
    #[error("{what} is {len} octets, more than its length field allows ({max})")]
    FieldTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: value {value} out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("{family}: {reason}")]
    PathId {
        family: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Invalid(&'static str),
}
