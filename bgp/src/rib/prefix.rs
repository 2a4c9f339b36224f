//! Prefix types the RIB is keyed by: the wire's compact [`Ipv4Prefix`] / [`Ipv6Prefix`] (one
//! table per family, so an IPv4 key stays 8 octets) and [`Prefix`] for APIs that take either.

use std::fmt;
use std::hash::Hash;

use serde::Serialize;

use crate::wire::{Family, Ipv4Prefix, Ipv6Prefix};

/// An IPv4 or IPv6 unicast prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl Prefix {
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        match self {
            Prefix::V4(p) => p.len(),
            Prefix::V6(p) => p.len(),
        }
    }

    pub fn max_len(&self) -> u8 {
        match self {
            Prefix::V4(_) => Ipv4Prefix::MAX_LEN,
            Prefix::V6(_) => Ipv6Prefix::MAX_LEN,
        }
    }

    /// True if `other` is the same family and lies inside this prefix.
    pub fn contains(&self, other: &Prefix) -> bool {
        match (self, other) {
            (Prefix::V4(a), Prefix::V4(b)) => a.contains(b),
            (Prefix::V6(a), Prefix::V6(b)) => a.contains(b),
            _ => false,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Prefix::V4(_) => Family::IPV4_UNICAST,
            Prefix::V6(_) => Family::IPV6_UNICAST,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Prefix::V4(p)
    }
}
impl From<Ipv6Prefix> for Prefix {
    fn from(p: Ipv6Prefix) -> Self {
        Prefix::V6(p)
    }
}

/// A prefix type one RIB table is keyed by.
pub trait RibPrefix:
    Copy + Eq + Hash + Ord + fmt::Debug + fmt::Display + Into<Prefix> + Send + Sync + 'static
{
    const FAMILY: Family;
}

impl RibPrefix for Ipv4Prefix {
    const FAMILY: Family = Family::IPV4_UNICAST;
}
impl RibPrefix for Ipv6Prefix {
    const FAMILY: Family = Family::IPV6_UNICAST;
}
