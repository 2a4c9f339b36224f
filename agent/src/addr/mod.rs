//! Node address autodetection, as Calico's `IP_AUTODETECTION_METHOD`: which of the node's
//! addresses is its BGP identity (and router id for IPv4).
//!
//! Owns: the parsing of methods and the pure choice over a list of interfaces. The only I/O —
//! listing interfaces and asking the kernel for the route to a `can-reach` target — lives in
//! [`netlink`]. Must not touch: addresses or routes (read-only).
//!
//! Methods (`IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD` values):
//! - `first-found`: the first usable address on the first interface, in interface-index order,
//!   whose name is not one of [`SKIPPED_INTERFACES`] (loopback, container bridges, veths, overlay
//!   and tunnel devices — addresses on those are not the node's).
//! - `interface=<regex>[,<regex>...]`: the first usable address on the first interface whose
//!   *whole* name matches one of the regexes. Calico matches unanchored (Go
//!   `regexp.MatchString`), where `interface=eth1` also picks `veth1234`; Tabby anchors, so the
//!   usual values (`eth0`, `eth.*`, `ens.*`) mean what they say.
//! - `skip-interface=<regex>[,...]`: like `first-found`, also skipping interfaces that match.
//! - `can-reach=<ip>`: the address the kernel would use as source towards `<ip>` (a route
//!   lookup, `ip route get`), with its prefix length from the interface it sits on.
//! - `cidr=<cidr>[,<cidr>...]`: the first usable address inside one of the CIDRs.
//!
//! "Usable" everywhere: not loopback, link-local (169.254/16, fe80::/10), unspecified, or
//! multicast, and of the requested family.

pub mod netlink;

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

/// Name prefixes `first-found` never picks from: loopback, Docker/libvirt/LXC bridges, veths,
/// Calico/Flannel/Weave/Tabby datapath devices, tunnels, IPVS and node-local DNS dummies.
pub const SKIPPED_INTERFACES: &[&str] = &[
    "lo",
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "veth",
    "cali",
    "tunl",
    "flannel",
    "weave",
    "kube-ipvs",
    "kube-bridge",
    "cni",
    "vxlan",
    "wg",
    "nodelocaldns",
    "tabby",
];

/// One network interface and its addresses (with prefix lengths), as the kernel lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub addrs: Vec<IpNet>,
}

/// Address family wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A parsed autodetection method.
#[derive(Debug, Clone)]
pub enum Method {
    FirstFound,
    Interface(Vec<Regex>),
    SkipInterface(Vec<Regex>),
    CanReach(IpAddr),
    Cidr(Vec<IpNet>),
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Print the regexes as written, without the anchors added when parsing.
        let join = |rs: &[Regex]| {
            rs.iter()
                .map(|r| {
                    let s = r.as_str();
                    s.strip_prefix("^(?:")
                        .and_then(|s| s.strip_suffix(")$"))
                        .unwrap_or(s)
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Method::FirstFound => f.write_str("first-found"),
            Method::Interface(rs) => write!(f, "interface={}", join(rs)),
            Method::SkipInterface(rs) => write!(f, "skip-interface={}", join(rs)),
            Method::CanReach(ip) => write!(f, "can-reach={ip}"),
            Method::Cidr(cs) => write!(
                f,
                "cidr={}",
                cs.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Why no address came out, naming the method.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("address autodetection method {input:?}: {reason}")]
    Parse { input: String, reason: String },
    #[error("address autodetection {method}: no usable {family} address ({detail})")]
    NotFound {
        method: String,
        family: &'static str,
        detail: String,
    },
    #[error("address autodetection {method}: {source}")]
    Netlink {
        method: String,
        #[source]
        source: crate::routes::NetlinkError,
    },
}

fn parse_err(input: &str, reason: impl Into<String>) -> AddrError {
    AddrError::Parse {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn list<'a>(input: &str, value: &'a str) -> Result<Vec<&'a str>, AddrError> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(parse_err(input, "empty item in the comma-separated list"));
    }
    Ok(items)
}

fn regexes(input: &str, value: &str) -> Result<Vec<Regex>, AddrError> {
    list(input, value)?
        .into_iter()
        .map(|r| {
            // Bounded compiled size: configuration, but still not to be trusted blindly.
            regex::RegexBuilder::new(&format!("^(?:{r})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| parse_err(input, format!("bad regex {r:?}: {e}")))
        })
        .collect()
}

/// Parses a method string, e.g. `interface=eth.*` or `cidr=10.0.0.0/8`.
pub fn parse_method(input: &str) -> Result<Method, AddrError> {
    let s = input.trim();
    if s.is_empty() || s == "first-found" {
        return Ok(Method::FirstFound);
    }
    let Some((name, value)) = s.split_once('=') else {
        return Err(parse_err(
            input,
            "unknown method; expected first-found, interface=<regex>, skip-interface=<regex>, \
             can-reach=<ip> or cidr=<cidr>",
        ));
    };
    match name.trim() {
        "interface" => Ok(Method::Interface(regexes(input, value)?)),
        "skip-interface" => Ok(Method::SkipInterface(regexes(input, value)?)),
        "can-reach" => {
            let v = value.trim();
            v.parse::<IpAddr>().map(Method::CanReach).map_err(|_| {
                parse_err(
                    input,
                    format!("{v:?} is not an IP address (host names are not resolved)"),
                )
            })
        }
        "cidr" => list(input, value)?
            .into_iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| parse_err(input, format!("{c:?} is not a CIDR")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Method::Cidr),
        other => Err(parse_err(input, format!("unknown method {other:?}"))),
    }
}

/// True for an address that can identify a node.
pub fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unicast_link_local()
                || a.is_unspecified()
                || a.is_multicast())
        }
    }
}

fn skipped_by_default(name: &str) -> bool {
    SKIPPED_INTERFACES.iter().any(|p| name.starts_with(p))
}

fn first_on(
    ifaces: &[&Interface],
    family: Family,
    accept: impl Fn(&IpNet) -> bool,
) -> Option<IpNet> {
    ifaces.iter().find_map(|i| {
        i.addrs
            .iter()
            .find(|a| Family::of(&a.addr()) == family && usable(&a.addr()) && accept(a))
            .copied()
    })
}

/// Chooses the node's address of `family` over `interfaces` (any order; sorted by index here).
/// `route_source` answers a `can-reach` lookup: the source address the kernel would use towards
/// the target, if it has a route.
pub fn detect(
    method: &Method,
    family: Family,
    interfaces: &[Interface],
    route_source: impl FnOnce(IpAddr) -> Result<Option<IpAddr>, AddrError>,
) -> Result<IpNet, AddrError> {
    let mut sorted: Vec<&Interface> = interfaces.iter().collect();
    sorted.sort_by_key(|i| i.index);
    let not_found = |detail: String| AddrError::NotFound {
        method: method.to_string(),
        family: family.name(),
        detail,
    };
    let names = |v: &[&Interface]| {
        v.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match method {
        Method::FirstFound => {
            let eligible: Vec<&Interface> = sorted
                .into_iter()
                .filter(|i| !skipped_by_default(&i.name))
                .collect();
            first_on(&eligible, family, |_| true)
                .ok_or_else(|| not_found(format!("interfaces considered: [{}]", names(&eligible))))
        }
        Method::SkipInterface(rs) => {
            let eligible: Vec<&Interface> = sorted
                .into_iter()
                .filter(|i| !skipped_by_default(&i.name) && !rs.iter().any(|r| r.is_match(&i.name)))
                .collect();
            first_on(&eligible, family, |_| true)
                .ok_or_else(|| not_found(format!("interfaces considered: [{}]", names(&eligible))))
        }
        Method::Interface(rs) => {
            let eligible: Vec<&Interface> = sorted
                .into_iter()
                .filter(|i| rs.iter().any(|r| r.is_match(&i.name)))
                .collect();
            if eligible.is_empty() {
                return Err(not_found("no interface name matches".into()));
            }
            first_on(&eligible, family, |_| true)
                .ok_or_else(|| not_found(format!("matching interfaces: [{}]", names(&eligible))))
        }
        Method::Cidr(cidrs) => first_on(&sorted, family, |a| {
            cidrs.iter().any(|c| c.contains(&a.addr()))
        })
        .ok_or_else(|| not_found("no interface address inside the CIDRs".into())),
        Method::CanReach(target) => {
            if Family::of(target) != family {
                return Err(not_found(format!(
                    "the target {target} is not {}",
                    family.name()
                )));
            }
            let src = route_source(*target)?
                .ok_or_else(|| not_found(format!("the kernel has no route to {target}")))?;
            sorted
                .iter()
                .flat_map(|i| i.addrs.iter())
                .find(|a| a.addr() == src)
                .copied()
                .filter(|a| usable(&a.addr()))
                .ok_or_else(|| {
                    not_found(format!(
                        "the route to {target} uses source {src}, which is not a usable address on any interface"
                    ))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn node() -> Vec<Interface> {
        vec![
            // Listed out of index order on purpose.
            iface(5, "eth1", &["192.168.50.10/24", "fd00:50::10/64"]),
            iface(1, "lo", &["127.0.0.1/8", "::1/128"]),
            iface(2, "docker0", &["172.17.0.1/16"]),
            iface(
                3,
                "eth0",
                &[
                    "169.254.3.3/16",
                    "fe80::1/64",
                    "10.0.0.5/24",
                    "2001:db8::5/64",
                ],
            ),
            iface(4, "veth1234", &["10.99.0.1/32"]),
            iface(6, "cali12ab", &["fe80::ecee:eeff:feee:eeee/64"]),
        ]
    }

    fn no_route(_: IpAddr) -> Result<Option<IpAddr>, AddrError> {
        Ok(None)
    }

    fn pick(method: &str, family: Family) -> Result<String, String> {
        let m = parse_method(method).map_err(|e| e.to_string())?;
        detect(&m, family, &node(), |dst| {
            // A routing table: 10/8 via eth0, 192.168/16 via eth1, v6 default via eth0.
            Ok(match dst {
                IpAddr::V4(a) if a.octets()[0] == 10 => Some("10.0.0.5".parse().unwrap()),
                IpAddr::V4(a) if a.octets()[..2] == [192, 168] => {
                    Some("192.168.50.10".parse().unwrap())
                }
                IpAddr::V4(a) if a.octets()[0] == 172 => Some("172.17.0.1".parse().unwrap()),
                IpAddr::V6(_) => Some("2001:db8::5".parse().unwrap()),
                _ => None,
            })
        })
        .map(|n| n.to_string())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn table() {
        use Family::*;
        let ok = |m: &str, f, want: &str| {
            assert_eq!(pick(m, f), Ok(want.to_string()), "{m} {f:?}");
        };
        // first-found: index order, skips lo/docker/veth/cali and link-local addresses.
        ok("first-found", V4, "10.0.0.5/24");
        ok("", V4, "10.0.0.5/24");
        ok("first-found", V6, "2001:db8::5/64");
        // interface=: whole-name regex (eth1 is not veth1234, which comes first); lists allowed.
        ok("interface=eth1", V4, "192.168.50.10/24");
        ok("interface=.*eth1.*", V4, "10.99.0.1/32");
        ok("interface=eth.*", V4, "10.0.0.5/24");
        ok("interface=nope,eth1", V6, "fd00:50::10/64");
        ok("interface=docker0", V4, "172.17.0.1/16");
        // skip-interface=
        ok("skip-interface=eth0", V4, "192.168.50.10/24");
        // cidr=
        ok("cidr=192.168.0.0/16", V4, "192.168.50.10/24");
        ok("cidr=172.16.0.0/12,10.0.0.0/8", V4, "172.17.0.1/16");
        ok("cidr=fd00::/8", V6, "fd00:50::10/64");
        // can-reach=: the route's source address, with its interface's prefix length.
        ok("can-reach=10.200.0.1", V4, "10.0.0.5/24");
        ok("can-reach=192.168.7.7", V4, "192.168.50.10/24");
        ok("can-reach=2001:4860::8888", V6, "2001:db8::5/64");
    }

    #[test]
    fn failures_name_the_method_and_why() {
        use Family::*;
        let err = |m: &str, f, words: &[&str]| {
            let e = pick(m, f).unwrap_err();
            for w in words {
                assert!(e.contains(w), "{m}: {e:?} lacks {w:?}");
            }
        };
        err(
            "interface=wlan.*",
            V4,
            &["interface=wlan.*", "no interface name matches"],
        );
        err("interface=veth.*", V6, &["IPv6", "veth1234"]);
        err("interface=cali.*", V6, &["no usable IPv6", "cali12ab"]);
        err(
            "cidr=10.1.0.0/16",
            V4,
            &["cidr=10.1.0.0/16", "inside the CIDRs"],
        );
        err(
            "can-reach=8.8.8.8",
            V4,
            &["can-reach=8.8.8.8", "no route to 8.8.8.8"],
        );
        err("can-reach=10.0.0.1", V6, &["not IPv6"]);
        // Parse errors name the input.
        err("interface=(", V4, &["interface=(", "bad regex"]);
        err(
            "can-reach=example.com",
            V4,
            &["can-reach=example.com", "not an IP address"],
        );
        err("cidr=10.0.0.0/33", V4, &["cidr=10.0.0.0/33", "not a CIDR"]);
        err("cidr=10.0.0.0/8,", V4, &["empty item"]);
        err("first-fond", V4, &["first-fond", "unknown method"]);
        err(
            "kubernetes-internal=x",
            V4,
            &["unknown method \"kubernetes-internal\""],
        );
        // Only skipped interfaces: first-found says which it considered.
        let only_lo = vec![iface(1, "lo", &["127.0.0.1/8"])];
        let e = detect(&Method::FirstFound, Family::V4, &only_lo, no_route).unwrap_err();
        assert!(
            e.to_string().contains("first-found") && e.to_string().contains("[]"),
            "{e}"
        );
    }

    #[test]
    fn can_reach_source_must_be_a_usable_interface_address() {
        let ifs = vec![iface(2, "eth0", &["10.0.0.5/24"])];
        let m = parse_method("can-reach=10.0.0.9").unwrap();
        let e = detect(&m, Family::V4, &ifs, |_| {
            Ok(Some("10.7.7.7".parse().unwrap()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("10.7.7.7"), "{e}");
        let got = detect(&m, Family::V4, &ifs, |_| {
            Ok(Some("10.0.0.5".parse().unwrap()))
        })
        .unwrap();
        assert_eq!(got.to_string(), "10.0.0.5/24");
    }

    #[test]
    fn usable_addresses() {
        for (a, want) in [
            ("10.0.0.1", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("0.0.0.0", false),
            ("224.0.0.5", false),
            ("255.255.255.255", false),
            ("2001:db8::1", true),
            ("fd00::1", true),
            ("fe80::1", false),
            ("::1", false),
            ("::", false),
            ("ff02::1", false),
        ] {
            assert_eq!(usable(&a.parse().unwrap()), want, "{a}");
        }
    }

    #[test]
    fn methods_print_back_as_parsed() {
        for m in [
            "first-found",
            "interface=eth.*,en.*",
            "skip-interface=eth9",
            "can-reach=10.0.0.1",
            "cidr=10.0.0.0/8,fd00::/8",
        ] {
            assert_eq!(parse_method(m).unwrap().to_string(), m);
        }
    }
}
