//! What a session negotiated, as the decoder and encoder need it. No global flags: every
//! decode/encode call gets one of these.

use std::collections::BTreeSet;

use serde::Serialize;

use super::capability::Capability;
use super::family::{Asn, Family};
use super::header::{MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN};
use super::open::Open;

/// Negotiated session properties. `Default` is the state before the OPEN exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecodeContext {
    /// RFC 6793: AS_PATH and AGGREGATOR carry 4-octet ASes.
    pub four_octet_as: bool,
    /// RFC 8654: messages up to 65535 octets.
    pub extended_message: bool,
    /// RFC 7911: families whose received NLRI carry a path identifier.
    pub add_path_rx: BTreeSet<Family>,
    /// The peer is in our AS (affects LOCAL_PREF handling, RFC 7606 §7.5).
    pub ibgp: bool,
    /// The AS the peer must have (OPEN "Bad Peer AS", RFC 4271 §6.2), if known.
    pub peer_as: Option<Asn>,
}

impl DecodeContext {
    /// Context for decoding messages SENT by `sender` to `receiver`, given both OPENs.
    ///
    /// ADD-PATH is directional (RFC 7911 §4): path ids are present for a family when the sender
    /// said Send and the receiver said Receive.
    pub fn negotiate(sender: &Open, receiver: &Open) -> DecodeContext {
        let has = |o: &Open, f: fn(&Capability) -> bool| o.capabilities().any(f);
        let four_octet_as = has(sender, |c| matches!(c, Capability::FourOctetAs(_)))
            && has(receiver, |c| matches!(c, Capability::FourOctetAs(_)));
        let extended_message = has(sender, |c| matches!(c, Capability::ExtendedMessage))
            && has(receiver, |c| matches!(c, Capability::ExtendedMessage));
        let add_path_rx = sender
            .add_path()
            .filter(|e| e.mode.sends())
            .filter(|e| {
                receiver
                    .add_path()
                    .any(|r| r.family() == e.family() && r.mode.receives())
            })
            .map(|e| e.family())
            .collect();
        DecodeContext {
            four_octet_as,
            extended_message,
            add_path_rx,
            ibgp: sender.asn() == receiver.asn(),
            peer_as: Some(sender.asn()),
        }
    }

    /// Largest message this session accepts.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }

    /// Whether NLRI of `family` carry RFC 7911 path identifiers.
    #[inline]
    pub fn add_path(&self, family: Family) -> bool {
        !self.add_path_rx.is_empty() && self.add_path_rx.contains(&family)
    }
}
