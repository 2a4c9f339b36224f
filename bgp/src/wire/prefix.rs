//! IP prefixes as the RIB stores them: always masked, compact (`Ipv4Prefix` is 8 bytes,
//! `Ipv6Prefix` 17), ordered, hashable, and shown as `10.0.0.0/24`.
//!
//! Owns the prefix value types and their text form. It does not know the NLRI wire encoding
//! (that is [`super::nlri`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Why a prefix could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} exceeds {max}")]
    LengthTooLong { len: u8, max: u8 },
    #[error("{addr}/{len} has host bits set")]
    HostBits { addr: String, len: u8 },
    #[error("cannot parse prefix {0:?}: expected ADDRESS/LENGTH")]
    Syntax(String),
}

/// An IPv4 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

/// Network mask of `len` leading ones (`len` ≤ 32).
#[inline]
pub(crate) const fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

#[inline]
pub(crate) const fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl Ipv4Prefix {
    pub const MAX_LEN: u8 = 32;

    /// Builds a prefix, rejecting a length over 32 and any host bit.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        let p = Self::new_masked(addr, len)?;
        if p.addr != u32::from(addr) {
            return Err(PrefixError::HostBits {
                addr: addr.to_string(),
                len,
            });
        }
        Ok(p)
    }

    /// Builds a prefix, clearing host bits.
    pub fn new_masked(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > Self::MAX_LEN {
            return Err(PrefixError::LengthTooLong {
                len,
                max: Self::MAX_LEN,
            });
        }
        Ok(Self {
            addr: u32::from(addr) & mask_v4(len),
            len,
        })
    }

    /// Internal constructor for already-validated values (`len` ≤ 32); masks.
    #[inline]
    pub(crate) const fn from_bits_masked(addr: u32, len: u8) -> Self {
        Self {
            addr: addr & mask_v4(len),
            len,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    pub fn bits(&self) -> u32 {
        self.addr
    }
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }
    /// True if `other` lies inside this prefix.
    pub fn contains(&self, other: &Ipv4Prefix) -> bool {
        other.len >= self.len && other.addr & mask_v4(self.len) == self.addr
    }
}

/// An IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: [u8; 16],
    len: u8,
}

impl Ipv6Prefix {
    pub const MAX_LEN: u8 = 128;

    /// Builds a prefix, rejecting a length over 128 and any host bit.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        let p = Self::new_masked(addr, len)?;
        if p.addr != addr.octets() {
            return Err(PrefixError::HostBits {
                addr: addr.to_string(),
                len,
            });
        }
        Ok(p)
    }

    /// Builds a prefix, clearing host bits.
    pub fn new_masked(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > Self::MAX_LEN {
            return Err(PrefixError::LengthTooLong {
                len,
                max: Self::MAX_LEN,
            });
        }
        Ok(Self::from_bits_masked(u128::from(addr), len))
    }

    #[inline]
    pub(crate) fn from_bits_masked(addr: u128, len: u8) -> Self {
        Self {
            addr: (addr & mask_v6(len)).to_be_bytes(),
            len,
        }
    }

    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
    pub fn bits(&self) -> u128 {
        u128::from_be_bytes(self.addr)
    }
    pub fn octets(&self) -> &[u8; 16] {
        &self.addr
    }
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }
    pub fn contains(&self, other: &Ipv6Prefix) -> bool {
        other.len >= self.len && other.bits() & mask_v6(self.len) == self.bits()
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}
impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

fn split_prefix(s: &str) -> Result<(&str, u8), PrefixError> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| PrefixError::Syntax(s.to_string()))?;
    let len = l
        .parse::<u8>()
        .map_err(|_| PrefixError::Syntax(s.to_string()))?;
    Ok((a, len))
}

/// Parses `10.0.0.0/24`; host bits are an error.
impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, len) = split_prefix(s)?;
        let addr = a
            .parse::<Ipv4Addr>()
            .map_err(|_| PrefixError::Syntax(s.to_string()))?;
        Self::new(addr, len)
    }
}
/// Parses `2001:db8::/32`; host bits are an error.
impl FromStr for Ipv6Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, len) = split_prefix(s)?;
        let addr = a
            .parse::<Ipv6Addr>()
            .map_err(|_| PrefixError::Syntax(s.to_string()))?;
        Self::new(addr, len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl Serialize for Ipv6Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_mask_or_reject_host_bits() {
        let a: Ipv4Addr = "10.1.2.3".parse().unwrap();
        assert!(matches!(
            Ipv4Prefix::new(a, 24),
            Err(PrefixError::HostBits { .. })
        ));
        assert_eq!(
            Ipv4Prefix::new_masked(a, 24).unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(
            Ipv4Prefix::new_masked(a, 0).unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Ipv4Prefix::new_masked(a, 32).unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert!(Ipv4Prefix::new_masked(a, 33).is_err());
        let b: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(Ipv6Prefix::new(b, 64).is_err());
        assert_eq!(
            Ipv6Prefix::new_masked(b, 48).unwrap().to_string(),
            "2001:db8::/48"
        );
        assert!(Ipv6Prefix::new_masked(b, 129).is_err());
    }

    #[test]
    fn text_form_round_trips() {
        for s in ["0.0.0.0/0", "10.0.0.0/8", "192.0.2.1/32"] {
            assert_eq!(s.parse::<Ipv4Prefix>().unwrap().to_string(), s);
        }
        for s in ["::/0", "2001:db8::/32", "fe80::1/128"] {
            assert_eq!(s.parse::<Ipv6Prefix>().unwrap().to_string(), s);
        }
        assert!("10.0.0.0".parse::<Ipv4Prefix>().is_err());
        assert!("10.0.0.1/24".parse::<Ipv4Prefix>().is_err());
    }

    #[test]
    fn compact() {
        assert_eq!(std::mem::size_of::<Ipv4Prefix>(), 8);
        assert_eq!(std::mem::size_of::<Ipv6Prefix>(), 17);
    }
}
