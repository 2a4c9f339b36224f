//! UPDATE message (RFC 4271 §4.3) and the attribute-list rules of RFC 7606 §3–§5.
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```
//! Decoding applies RFC 7606: errors that end the session come back as [`MessageError`]; the
//! others are recorded in [`Update::errors`] with the strongest action in [`Update::action`]
//! (§3(h)). On treat-as-withdraw the decoded routes stay where they are: the speaker withdraws
//! everything the UPDATE announced (NLRI and MP_REACH_NLRI). Attribute order is kept as
//! received and is not checked (§5.1).

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::attribute::{
    self, AttrProblem, Attribute, AttributeValue, FLAG_EXTENDED_LENGTH, FLAG_OPTIONAL,
    FLAG_PARTIAL, FLAG_TRANSITIVE, MpReach, MpUnreach, code,
};
use super::context::DecodeContext;
use super::error::{AttributeError, EncodeError, ErrorAction, MessageError, UpdateSubcode};
use super::family::Family;
use super::nlri::{self, Ipv4Nlri};
use super::reader::{Need, be_u16, take_n};

/// What the receiver must do with the UPDATE (RFC 7606 §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateAction {
    /// No error: process normally.
    #[default]
    Accept,
    /// Some attributes were malformed and have been dropped; process the rest normally.
    AttributeDiscard,
    /// Treat every route the UPDATE announces as withdrawn.
    TreatAsWithdraw,
}

impl UpdateAction {
    fn is_accept(&self) -> bool {
        *self == UpdateAction::Accept
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Update {
    /// IPv4 unicast withdrawn routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<Ipv4Nlri>,
    /// Path attributes, in received order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
    /// IPv4 unicast NLRI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nlri: Vec<Ipv4Nlri>,
    /// RFC 7606 outcome of decoding (always `Accept` for locally built messages; not encoded).
    #[serde(skip_serializing_if = "UpdateAction::is_accept")]
    pub action: UpdateAction,
    /// RFC 7606 attribute errors found while decoding (not encoded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AttributeError>,
}

/// Set of attribute type codes seen so far.
#[derive(Default)]
struct Seen([u64; 4]);

impl Seen {
    /// Marks `t`; returns whether it was already there.
    fn insert(&mut self, t: u8) -> bool {
        let (w, b) = (usize::from(t >> 6), 1u64 << (t & 63));
        let had = self.0[w] & b != 0;
        self.0[w] |= b;
        had
    }
    fn contains(&self, t: u8) -> bool {
        self.0[usize::from(t >> 6)] & (1u64 << (t & 63)) != 0
    }
}

fn attr_name(t: u8) -> String {
    let n = match t {
        code::ORIGIN => "ORIGIN",
        code::AS_PATH => "AS_PATH",
        code::NEXT_HOP => "NEXT_HOP",
        code::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
        code::LOCAL_PREF => "LOCAL_PREF",
        code::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        code::AGGREGATOR => "AGGREGATOR",
        code::COMMUNITIES => "COMMUNITIES",
        code::ORIGINATOR_ID => "ORIGINATOR_ID",
        code::CLUSTER_LIST => "CLUSTER_LIST",
        code::MP_REACH_NLRI => "MP_REACH_NLRI",
        code::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        code::EXTENDED_COMMUNITIES => "EXTENDED_COMMUNITIES",
        code::AS4_PATH => "AS4_PATH",
        code::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        code::LARGE_COMMUNITY => "LARGE_COMMUNITY",
        code::OTC => "OTC",
        _ => return format!("attribute {t}"),
    };
    n.to_string()
}

impl Update {
    /// The End-of-RIB marker for `family` (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            return Update::default();
        }
        let withdrawn = match family {
            Family::IPV6_UNICAST => attribute::MpNlri::Ipv6Unicast(Vec::new()),
            f => attribute::MpNlri::Other {
                afi: f.afi,
                safi: f.safi,
                nlri: Vec::new(),
            },
        };
        Update {
            attributes: vec![AttributeValue::MpUnreachNlri(MpUnreach { withdrawn }).into()],
            ..Update::default()
        }
    }

    /// Which family this UPDATE is the End-of-RIB marker of, if it is one (RFC 4724 §2).
    pub fn is_end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [a] => match &a.value {
                AttributeValue::MpUnreachNlri(u) if u.withdrawn.is_empty() => {
                    Some(u.withdrawn.family())
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The first attribute with this type code.
    pub fn attribute(&self, type_code: u8) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|a| a.type_code() == type_code)
            .map(|a| &a.value)
    }

    pub fn mp_reach(&self) -> Option<&MpReach> {
        self.attributes.iter().find_map(|a| match &a.value {
            AttributeValue::MpReachNlri(m) => Some(m),
            _ => None,
        })
    }

    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        self.attributes.iter().find_map(|a| match &a.value {
            AttributeValue::MpUnreachNlri(m) => Some(m),
            _ => None,
        })
    }

    /// Makes the attributes fit to be passed on to another peer (RFC 4271 §5): drops unknown
    /// non-transitive attributes, sets Partial on unknown optional transitive ones.
    pub fn prepare_for_propagation(&mut self) {
        self.attributes.retain_mut(|a| match a.for_propagation() {
            Some(p) => {
                *a = p;
                true
            }
            None => false,
        });
    }

    pub(crate) fn decode(body: &[u8], cx: &DecodeContext) -> Result<Update, MessageError> {
        let list_err = |reason: String| {
            MessageError::update(UpdateSubcode::MalformedAttributeList, Vec::new(), reason)
        };
        // RFC 4271 §6.3 / RFC 7606 §3(b): lengths that overrun the message are a session reset.
        let (i, wlen) = be_u16(body).need(|| list_err("no Withdrawn Routes Length".into()))?;
        let (i, wbytes) = take_n(i, usize::from(wlen)).need(|| {
            list_err(format!(
                "Withdrawn Routes Length {wlen} exceeds the {} octets left",
                i.len()
            ))
        })?;
        let (i, alen) = be_u16(i).need(|| {
            list_err(format!(
                "no room for Total Path Attribute Length after {wlen} octets of withdrawn routes"
            ))
        })?;
        let (nlri_bytes, abytes) = take_n(i, usize::from(alen)).need(|| {
            list_err(format!(
                "Total Path Attribute Length {alen} exceeds the {} octets left",
                i.len()
            ))
        })?;

        let mut update = Update::default();
        let v4_add_path = cx.add_path(Family::IPV4_UNICAST);
        // RFC 7606 §3(i), §5.3: the withdrawn routes and NLRI must parse, or the session resets.
        nlri::decode_v4(wbytes, v4_add_path, &mut update.withdrawn).map_err(|e| {
            MessageError::update(
                UpdateSubcode::InvalidNetworkField,
                Vec::new(),
                format!("withdrawn routes: {}", e.reason),
            )
        })?;
        let seen = update.decode_attributes(abytes, cx)?;
        nlri::decode_v4(nlri_bytes, v4_add_path, &mut update.nlri).map_err(|e| {
            MessageError::update(
                UpdateSubcode::InvalidNetworkField,
                Vec::new(),
                format!("NLRI: {}", e.reason),
            )
        })?;
        update.check_mandatory(&seen, cx);
        update.action = match update.errors.iter().map(|e| e.action).max() {
            None => UpdateAction::Accept,
            Some(ErrorAction::AttributeDiscard) => UpdateAction::AttributeDiscard,
            Some(_) => UpdateAction::TreatAsWithdraw,
        };
        Ok(update)
    }

    fn record(&mut self, type_code: u8, p: AttrProblem) {
        self.errors.push(AttributeError {
            type_code,
            subcode: p.subcode,
            action: p.action,
            rfc: p.rfc,
            reason: p.reason,
        });
    }

    /// Decodes the path attribute list; returns the set of type codes seen.
    fn decode_attributes(
        &mut self,
        mut a: &[u8],
        cx: &DecodeContext,
    ) -> Result<Seen, MessageError> {
        let mut seen = Seen::default();
        while !a.is_empty() {
            let at = a;
            // RFC 7606 §4: an attribute header or value that overruns the list is
            // treat-as-withdraw; Total Path Attribute Length still locates the NLRI.
            let framing = |reason: String| AttrProblem {
                subcode: UpdateSubcode::MalformedAttributeList,
                action: ErrorAction::TreatAsWithdraw,
                rfc: "RFC 7606 §4",
                reason,
            };
            let (flags, type_code) = match a {
                [f, t, ..] => (*f, *t),
                _ => {
                    self.record(
                        0,
                        framing(format!(
                            "{} octet(s) left in the attribute list, too few for a header",
                            a.len()
                        )),
                    );
                    break;
                }
            };
            let ext = flags & FLAG_EXTENDED_LENGTH != 0;
            let hdr = if ext { 4 } else { 3 };
            let Some(len_bytes) = a.get(2..hdr) else {
                self.record(
                    type_code,
                    framing(format!(
                        "{} header truncated: {} octet(s) left",
                        attr_name(type_code),
                        a.len()
                    )),
                );
                break;
            };
            let len = if ext {
                usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]))
            } else {
                usize::from(len_bytes[0])
            };
            let Some(value) = a.get(hdr..hdr + len) else {
                self.record(
                    type_code,
                    framing(format!(
                        "{} length {len} exceeds the {} octets left in the attribute list",
                        attr_name(type_code),
                        a.len() - hdr
                    )),
                );
                break;
            };
            a = &a[hdr + len..];
            let whole = &at[..hdr + len];

            // RFC 7606 §3(g): a repeated MP_REACH/MP_UNREACH is a session reset; any other
            // repeat is discarded.
            if seen.insert(type_code) {
                if type_code == code::MP_REACH_NLRI || type_code == code::MP_UNREACH_NLRI {
                    return Err(MessageError::update(
                        UpdateSubcode::MalformedAttributeList,
                        Vec::new(),
                        format!(
                            "{} appears more than once (RFC 7606 §3(g))",
                            attr_name(type_code)
                        ),
                    ));
                }
                self.record(
                    type_code,
                    AttrProblem {
                        subcode: UpdateSubcode::MalformedAttributeList,
                        action: ErrorAction::AttributeDiscard,
                        rfc: "RFC 7606 §3(g)",
                        reason: format!(
                            "{} appears more than once; later copies discarded",
                            attr_name(type_code)
                        ),
                    },
                );
                continue;
            }

            let optional = flags & FLAG_OPTIONAL != 0;
            let transitive = flags & FLAG_TRANSITIVE != 0;
            let partial = flags & FLAG_PARTIAL != 0;
            let force_extended_length = ext && len <= 255;
            match attribute::known_flags(type_code) {
                None => {
                    if !optional {
                        // RFC 4271 §6.3: unrecognised well-known attribute; data is the attribute.
                        return Err(MessageError::update(
                            UpdateSubcode::UnrecognizedWellKnownAttribute,
                            whole.to_vec(),
                            format!("unrecognized well-known attribute type {type_code}"),
                        ));
                    }
                    self.attributes.push(Attribute {
                        value: AttributeValue::Unknown {
                            type_code,
                            optional,
                            transitive,
                            value: value.to_vec(),
                        },
                        partial,
                        force_extended_length,
                    });
                    continue;
                }
                Some((o, t)) if (o, t) != (optional, transitive) => {
                    // RFC 7606 §3(c): flags in conflict → treated as malformed, by the
                    // attribute's own rule.
                    let (action, _) = attribute::malformed_action(type_code);
                    let reason = format!(
                        "{} flags 0x{flags:02x}: Optional={optional} Transitive={transitive}, expected Optional={o} Transitive={t}",
                        attr_name(type_code)
                    );
                    if action == ErrorAction::SessionReset {
                        return Err(MessageError::update(
                            UpdateSubcode::AttributeFlagsError,
                            whole.to_vec(),
                            reason,
                        ));
                    }
                    self.record(
                        type_code,
                        AttrProblem {
                            subcode: UpdateSubcode::AttributeFlagsError,
                            action,
                            rfc: "RFC 7606 §3(c)",
                            reason,
                        },
                    );
                    continue;
                }
                Some(_) => {}
            }
            // RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
            if type_code == code::LOCAL_PREF && !cx.ibgp {
                self.record(
                    type_code,
                    AttrProblem {
                        subcode: UpdateSubcode::MalformedAttributeList,
                        action: ErrorAction::AttributeDiscard,
                        rfc: "RFC 7606 §7.5",
                        reason: "LOCAL_PREF from an external peer discarded".into(),
                    },
                );
                continue;
            }
            match AttributeValue::decode(type_code, value, cx) {
                Ok(Some(v)) => self.attributes.push(Attribute {
                    value: v,
                    partial,
                    force_extended_length,
                }),
                Ok(None) => {}
                Err(p) if p.action == ErrorAction::SessionReset => {
                    // RFC 7606 §3(j), §7.11: MP_REACH/MP_UNREACH that cannot be parsed.
                    return Err(MessageError::update(p.subcode, whole.to_vec(), p.reason));
                }
                Err(mut p) => {
                    p.reason = format!("{}: {}", attr_name(type_code), p.reason);
                    self.record(type_code, p)
                }
            }
        }
        Ok(seen)
    }

    /// RFC 4271 §5 / RFC 4760 §3 / RFC 7606 §3(d): mandatory attributes when routes are
    /// announced; RFC 4271 §6.3 / RFC 7606 §7.3: a NEXT_HOP that can never be a next hop.
    fn check_mandatory(&mut self, seen: &Seen, _cx: &DecodeContext) {
        let mp_announces = self.mp_reach().is_some_and(|m| !m.nlri.is_empty());
        if self.nlri.is_empty() && !mp_announces {
            return;
        }
        let mut required = vec![code::ORIGIN, code::AS_PATH];
        if !self.nlri.is_empty() {
            required.push(code::NEXT_HOP);
        }
        for t in required {
            if !seen.contains(t) {
                self.record(
                    t,
                    AttrProblem {
                        subcode: UpdateSubcode::MissingWellKnownAttribute,
                        action: ErrorAction::TreatAsWithdraw,
                        rfc: "RFC 7606 §3(d)",
                        reason: format!("missing well-known attribute {}", attr_name(t)),
                    },
                );
            }
        }
        if self.nlri.is_empty() {
            return;
        }
        if let Some(AttributeValue::NextHop(nh)) = self.attribute(code::NEXT_HOP) {
            let nh: Ipv4Addr = *nh;
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                self.record(
                    code::NEXT_HOP,
                    AttrProblem {
                        subcode: UpdateSubcode::InvalidNextHopAttribute,
                        action: ErrorAction::TreatAsWithdraw,
                        rfc: "RFC 4271 §6.3, RFC 7606 §7.3",
                        reason: format!("NEXT_HOP {nh} is not a unicast address"),
                    },
                );
            }
        }
    }

    pub(crate) fn encode(&self, cx: &DecodeContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v4_add_path = cx.add_path(Family::IPV4_UNICAST);
        let wlen_at = out.len();
        out.put_u16(0);
        nlri::encode_v4(&self.withdrawn, v4_add_path, out)?;
        patch_u16(out, wlen_at, "withdrawn routes")?;
        let alen_at = out.len();
        out.put_u16(0);
        for a in &self.attributes {
            a.encode(cx, out)?;
        }
        patch_u16(out, alen_at, "path attributes")?;
        nlri::encode_v4(&self.nlri, v4_add_path, out)
    }
}

/// Writes the length of what follows `at + 2` into the 2 octets at `at`.
fn patch_u16(out: &mut BytesMut, at: usize, what: &'static str) -> Result<(), EncodeError> {
    let len = out.len() - at - 2;
    let l = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        what,
        len,
        max: 65535,
    })?;
    out[at..at + 2].copy_from_slice(&l.to_be_bytes());
    Ok(())
}
