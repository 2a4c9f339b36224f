//! IPv4/IPv6 unicast NLRI encoding (RFC 4271 §4.3, RFC 4760 §5) with RFC 7911 path identifiers.
//!
//! ```text
//! +---------------------------+
//! | Path Identifier (4 octets)|   only when ADD-PATH is negotiated for the family
//! +---------------------------+
//! |   Length (1 octet)        |
//! +---------------------------+
//! |   Prefix (variable)       |   ceil(Length / 8) octets
//! +---------------------------+
//! ```
//! Host bits: RFC 4271 §4.3 says the trailing bits of the Prefix field are irrelevant, so they
//! are cleared on decode (a message with stray trailing bits decodes but is not canonical).
//! A length above 32/128 or a prefix running past the field is a syntax error, which RFC 7606
//! §5.3 makes a session reset.
//!
//! The decode loops are hand-written over plain slices: they are the codec's hot path
//! (see `docs/benchmarks.md`).

use bytes::{BufMut, BytesMut};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::error::EncodeError;
use super::prefix::{Ipv4Prefix, Ipv6Prefix};

/// One NLRI entry: a prefix and, with ADD-PATH, its path identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri<P> {
    pub path_id: Option<u32>,
    pub prefix: P,
}

pub type Ipv4Nlri = Nlri<Ipv4Prefix>;
pub type Ipv6Nlri = Nlri<Ipv6Prefix>;

impl<P> Nlri<P> {
    pub fn new(prefix: P) -> Self {
        Nlri {
            path_id: None,
            prefix,
        }
    }
    pub fn with_path_id(prefix: P, path_id: u32) -> Self {
        Nlri {
            path_id: Some(path_id),
            prefix,
        }
    }
}

/// Plain `"10.0.0.0/24"`, or `{"prefix": "10.0.0.0/24", "path_id": 7}` with ADD-PATH.
impl<P: Serialize> Serialize for Nlri<P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.path_id {
            None => self.prefix.serialize(s),
            Some(id) => {
                let mut st = s.serialize_struct("Nlri", 2)?;
                st.serialize_field("prefix", &self.prefix)?;
                st.serialize_field("path_id", &id)?;
                st.end()
            }
        }
    }
}

/// A syntax error in an NLRI field; the caller knows which field and maps it to its
/// NOTIFICATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NlriError {
    pub offset: usize,
    pub reason: String,
}

#[inline(never)]
#[cold]
fn too_long(offset: usize, len: u8, max: u8) -> NlriError {
    NlriError {
        offset,
        reason: format!("prefix length {len} exceeds {max} at offset {offset}"),
    }
}

#[inline(never)]
#[cold]
fn overrun(offset: usize, len: u8, need: usize, left: usize) -> NlriError {
    NlriError {
        offset,
        reason: format!(
            "prefix /{len} at offset {offset} needs {need} octets but only {left} remain"
        ),
    }
}

#[inline(never)]
#[cold]
fn short_path_id(offset: usize, left: usize) -> NlriError {
    NlriError {
        offset,
        reason: format!("path identifier at offset {offset} needs 4 octets but only {left} remain"),
    }
}

/// Decodes an IPv4 NLRI field, appending to `out`.
pub(crate) fn decode_v4(
    input: &[u8],
    add_path: bool,
    out: &mut Vec<Ipv4Nlri>,
) -> Result<(), NlriError> {
    // Every entry takes at least 1 octet (5 with a path id); /24s take 4. The reservation is
    // bounded by the input that is already here.
    out.reserve(input.len() / if add_path { 8 } else { 4 });
    let n = input.len();
    let mut i = 0;
    while i < n {
        let path_id = if add_path {
            let Some(id) = input.get(i..i + 4) else {
                return Err(short_path_id(i, n - i));
            };
            i += 4;
            Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
        } else {
            None
        };
        let Some(&len) = input.get(i) else {
            return Err(overrun(i, 0, 1, 0));
        };
        if len > 32 {
            return Err(too_long(i, len, 32));
        }
        let nb = (usize::from(len) + 7) >> 3;
        let start = i + 1;
        if start + nb > n {
            return Err(overrun(i, len, nb, n - start));
        }
        // Fast path: load 4 octets at once; the mask clears whatever follows the prefix (the
        // next entry's octets). Near the end of the field, copy only what is there.
        let bits = match input.get(start..start + 4) {
            Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
            None => {
                let mut buf = [0u8; 4];
                buf[..n - start].copy_from_slice(&input[start..]);
                u32::from_be_bytes(buf)
            }
        };
        out.push(Nlri {
            path_id,
            prefix: Ipv4Prefix::from_bits_masked(bits, len),
        });
        i = start + nb;
    }
    Ok(())
}

/// Decodes an IPv6 NLRI field, appending to `out`.
pub(crate) fn decode_v6(
    input: &[u8],
    add_path: bool,
    out: &mut Vec<Ipv6Nlri>,
) -> Result<(), NlriError> {
    out.reserve(input.len() / if add_path { 12 } else { 8 });
    let n = input.len();
    let mut i = 0;
    while i < n {
        let path_id = if add_path {
            let Some(id) = input.get(i..i + 4) else {
                return Err(short_path_id(i, n - i));
            };
            i += 4;
            Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
        } else {
            None
        };
        let Some(&len) = input.get(i) else {
            return Err(overrun(i, 0, 1, 0));
        };
        if len > 128 {
            return Err(too_long(i, len, 128));
        }
        let nb = (usize::from(len) + 7) >> 3;
        let start = i + 1;
        if start + nb > n {
            return Err(overrun(i, len, nb, n - start));
        }
        let mut buf = [0u8; 16];
        match input.get(start..start + 16) {
            Some(w) => buf.copy_from_slice(w),
            None => buf[..n - start].copy_from_slice(&input[start..]),
        }
        out.push(Nlri {
            path_id,
            prefix: Ipv6Prefix::from_bits_masked(u128::from_be_bytes(buf), len),
        });
        i = start + nb;
    }
    Ok(())
}

fn path_id_check(path_id: Option<u32>, add_path: bool, family: &str) -> Result<(), EncodeError> {
    match (path_id, add_path) {
        (Some(_), false) => Err(EncodeError::PathId {
            family: family.to_string(),
            reason: "NLRI has a path identifier but ADD-PATH is not negotiated",
        }),
        (None, true) => Err(EncodeError::PathId {
            family: family.to_string(),
            reason: "ADD-PATH is negotiated but the NLRI has no path identifier",
        }),
        _ => Ok(()),
    }
}

pub(crate) fn encode_v4(
    nlri: &[Ipv4Nlri],
    add_path: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.reserve(nlri.len() * if add_path { 9 } else { 5 });
    for n in nlri {
        path_id_check(n.path_id, add_path, "ipv4-unicast")?;
        if let Some(id) = n.path_id {
            out.put_u32(id);
        }
        let len = n.prefix.len();
        out.put_u8(len);
        let nb = (usize::from(len) + 7) >> 3;
        out.put_slice(&n.prefix.bits().to_be_bytes()[..nb]);
    }
    Ok(())
}

pub(crate) fn encode_v6(
    nlri: &[Ipv6Nlri],
    add_path: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    for n in nlri {
        path_id_check(n.path_id, add_path, "ipv6-unicast")?;
        if let Some(id) = n.path_id {
            out.put_u32(id);
        }
        let len = n.prefix.len();
        out.put_u8(len);
        let nb = (usize::from(len) + 7) >> 3;
        out.put_slice(&n.prefix.octets()[..nb]);
    }
    Ok(())
}
