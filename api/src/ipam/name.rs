//! Block name ↔ CIDR conversions.
//!
//! An IPAMBlock is named after its CIDR so that two controllers racing to create the same block
//! collide on the name (the API server answers 409) instead of creating overlapping objects.
//!
//! * IPv4: the four octets and the prefix length joined by `-`: `10.244.0.64/26` →
//!   `10-244-0-64-26`.
//! * IPv6: all eight 16-bit groups in lower-case hex without leading zeros, then the prefix
//!   length, joined by `-`: `fd00:10::40/122` → `fd00-10-0-0-0-0-0-40-122`. The compressed `::`
//!   form is not used because it would put `--` or a leading `-` in the name, which is not a
//!   valid Kubernetes object name (`::/122` → `0-0-0-0-0-0-0-0-122`).
//!
//! The forms are unambiguous (5 parts for IPv4, 9 for IPv6) and only canonical spellings parse,
//! so `parse(name(x)) == x` and `name(parse(s)) == s`. Must not touch anything but strings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a string is not a block name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a block name: {reason}")]
pub struct BlockNameError {
    /// The offending name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The object name of the block `cidr`.
pub fn block_name(cidr: IpNet) -> String {
    match cidr {
        IpNet::V4(n) => {
            let [a, b, c, d] = n.network().octets();
            format!("{a}-{b}-{c}-{d}-{}", n.prefix_len())
        }
        IpNet::V6(n) => {
            let mut parts: Vec<String> = n
                .network()
                .segments()
                .iter()
                .map(|s| format!("{s:x}"))
                .collect();
            parts.push(n.prefix_len().to_string());
            parts.join("-")
        }
    }
}

/// Parses a block name back into its CIDR. Only the canonical spelling produced by
/// [`block_name`] is accepted (no leading zeros, lower-case, host bits clear).
pub fn parse_block_name(name: &str) -> Result<IpNet, BlockNameError> {
    let err = |reason| BlockNameError {
        name: name.to_string(),
        reason,
    };
    let parts: Vec<&str> = name.split('-').collect();
    let net = match parts.as_slice() {
        [a, b, c, d, len] => {
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip([a, b, c, d]) {
                *o = parse_canonical(p, 10).ok_or(err("IPv4 octet is not a decimal 0-255"))?;
            }
            let len = parse_canonical::<u8>(len, 10)
                .filter(|l| *l <= 32)
                .ok_or(err("IPv4 prefix length is not 0-32"))?;
            Ipv4Net::new(Ipv4Addr::from(octets), len)
                .map(IpNet::V4)
                .map_err(|_| err("IPv4 prefix length is not 0-32"))?
        }
        [groups @ .., len] if groups.len() == 8 => {
            let mut segs = [0u16; 8];
            for (s, p) in segs.iter_mut().zip(groups) {
                *s = parse_canonical(p, 16).ok_or(err(
                    "IPv6 group is not lower-case hex 0-ffff without leading zeros",
                ))?;
            }
            let len = parse_canonical::<u8>(len, 10)
                .filter(|l| *l <= 128)
                .ok_or(err("IPv6 prefix length is not 0-128"))?;
            Ipv6Net::new(Ipv6Addr::from(segs), len)
                .map(IpNet::V6)
                .map_err(|_| err("IPv6 prefix length is not 0-128"))?
        }
        _ => {
            return Err(err(
                "expected 5 parts (IPv4) or 9 parts (IPv6) separated by '-'",
            ));
        }
    };
    if net.trunc() != net {
        return Err(err("address has bits set beyond the prefix length"));
    }
    Ok(net)
}

/// Parses `s` in `radix`, accepting only the canonical spelling (`0`, or no leading zero;
/// lower-case hex), so every value has exactly one name.
fn parse_canonical<T: TryFrom<u32>>(s: &str, radix: u32) -> Option<T> {
    let canonical_chars = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (radix == 16 && (b'a'..=b'f').contains(&b)));
    if s.is_empty() || s.len() > 5 || !canonical_chars || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    u32::from_str_radix(s, radix)
        .ok()
        .and_then(|v| T::try_from(v).ok())
}

/// The address of `ordinal` within `block` (ordinal 0 is the block's first address), or `None`
/// when the ordinal is outside the block.
pub fn address_of(block: IpNet, ordinal: u32) -> Option<IpAddr> {
    if u128::from(ordinal) >= block_capacity(block) {
        return None;
    }
    Some(match block {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + ordinal)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()) + u128::from(ordinal),
        )),
    })
}

/// The ordinal of `addr` within `block`, or `None` when `addr` is outside it.
pub fn ordinal_of(block: IpNet, addr: IpAddr) -> Option<u32> {
    if !block.contains(&addr) {
        return None;
    }
    let offset = match (block, addr) {
        (IpNet::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n.network())),
        (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n.network()),
        _ => return None,
    };
    u32::try_from(offset).ok()
}

/// Number of addresses in `block` (saturating at `u128::MAX` for `::/0`).
pub fn block_capacity(block: IpNet) -> u128 {
    let host_bits = u32::from(block.max_prefix_len() - block.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_table() {
        let cases = [
            ("10.244.0.64/26", "10-244-0-64-26"),
            ("10.244.0.0/26", "10-244-0-0-26"),
            ("0.0.0.0/0", "0-0-0-0-0"),
            ("255.255.255.255/32", "255-255-255-255-32"),
            ("fd00:10::40/122", "fd00-10-0-0-0-0-0-40-122"),
            ("::/122", "0-0-0-0-0-0-0-0-122"),
            (
                "2001:db8:abcd:12::ffc0/122",
                "2001-db8-abcd-12-0-0-0-ffc0-122",
            ),
        ];
        for (cidr, name) in cases {
            assert_eq!(block_name(net(cidr)), name, "{cidr}");
            assert_eq!(parse_block_name(name), Ok(net(cidr)), "{name}");
        }
    }

    #[test]
    fn rejects_non_canonical_names() {
        for bad in [
            "",
            "10-244-0-64",
            "10-244-0-64-26-1",
            "10-244-0-064-26",
            "10-244-0-256-26",
            "10-244-0-65-26",
            "10-244-0-64-33",
            "10-244-0--26",
            "FD00-0-0-0-0-0-0-0-122",
            "fd00-0-0-0-0-0-0-0040-122",
            "fd00-0-0-0-0-0-0-40-129",
            "fd00-0-0-0-0-0-0-41-122",
            "fd00--40-122",
            "10.244.0.64-26",
            "+1-0-0-0-8",
        ] {
            assert!(parse_block_name(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ordinals_table() {
        let b = net("10.244.0.64/26");
        assert_eq!(address_of(b, 0), Some("10.244.0.64".parse().unwrap()));
        assert_eq!(address_of(b, 63), Some("10.244.0.127".parse().unwrap()));
        assert_eq!(address_of(b, 64), None);
        assert_eq!(ordinal_of(b, "10.244.0.100".parse().unwrap()), Some(36));
        assert_eq!(ordinal_of(b, "10.244.0.128".parse().unwrap()), None);
        assert_eq!(ordinal_of(b, "fd00::1".parse().unwrap()), None);
        let v6 = net("fd00::40/122");
        assert_eq!(address_of(v6, 63), Some("fd00::7f".parse().unwrap()));
        assert_eq!(ordinal_of(v6, "fd00::7f".parse().unwrap()), Some(63));
        assert_eq!(block_capacity(v6), 64);
        assert_eq!(block_capacity(net("::/0")), u128::MAX);
        assert_eq!(block_capacity(net("10.0.0.0/20")), 4096);
    }

    proptest::proptest! {
        #[test]
        fn v4_round_trip(addr: u32, len in 0u8..=32) {
            let n = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc());
            proptest::prop_assert_eq!(parse_block_name(&block_name(n)), Ok(n));
        }

        #[test]
        fn v6_round_trip(addr: u128, len in 0u8..=128) {
            let n = IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc());
            let name = block_name(n);
            proptest::prop_assert!(!name.starts_with('-') && !name.contains("--"));
            proptest::prop_assert_eq!(parse_block_name(&name), Ok(n));
        }

        #[test]
        fn ordinal_round_trip(addr: u32, len in 20u8..=32, ord: u32) {
            let n = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc());
            let ord = ord % (1u32 << (32 - len));
            let a = address_of(n, ord).unwrap();
            proptest::prop_assert_eq!(ordinal_of(n, a), Some(ord));
        }
    }
}
