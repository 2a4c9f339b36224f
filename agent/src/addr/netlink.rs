//! The I/O half of address autodetection: the node's interfaces and addresses from netlink
//! dumps (`RTM_GETLINK`, `RTM_GETADDR`), and `can-reach` route lookups (`RTM_GETROUTE`).
//!
//! Owns: reading. Must not touch: any link, address or route.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use super::{AddrError, Family, Interface, Method, detect};
use crate::routes::{NetlinkError, RouteSocket, TABBY_RT_PROTO};

/// Lists the interfaces of the calling thread's network namespace with their addresses.
pub fn interfaces(sock: &mut RouteSocket) -> Result<Vec<Interface>, NetlinkError> {
    let (links, _) = sock.dump_messages(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "link dump",
    )?;
    let mut by_index: BTreeMap<u32, Interface> = BTreeMap::new();
    for m in links {
        if let RouteNetlinkMessage::NewLink(l) = m {
            let name = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                by_index.insert(
                    l.header.index,
                    Interface {
                        index: l.header.index,
                        name,
                        addrs: Vec::new(),
                    },
                );
            }
        }
    }
    let (addrs, _) = sock.dump_messages(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "address dump",
    )?;
    for m in addrs {
        if let RouteNetlinkMessage::NewAddress(a) = m {
            // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS
            // is the peer there, and the same as IFA_LOCAL elsewhere.
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let Some(ip) = local.or(address) else {
                continue;
            };
            let Ok(net) = IpNet::new(ip, a.header.prefix_len) else {
                continue;
            };
            if let Some(i) = by_index.get_mut(&a.header.index) {
                i.addrs.push(net);
            }
        }
    }
    Ok(by_index.into_values().collect())
}

/// Runs `method` for `family` against the calling thread's network namespace.
pub fn autodetect(method: &Method, family: Family) -> Result<IpNet, AddrError> {
    let wrap = |source| AddrError::Netlink {
        method: method.to_string(),
        source,
    };
    let mut sock = RouteSocket::new(TABBY_RT_PROTO).map_err(wrap)?;
    let ifaces = interfaces(&mut sock).map_err(wrap)?;
    detect(method, family, &ifaces, |dst: IpAddr| {
        match sock.lookup(dst) {
            Ok((_, src)) => Ok(src),
            // No route at all is an answer ("not reachable"), not a failure of the lookup.
            Err(NetlinkError::Refused { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(AddrError::Netlink {
                method: method.to_string(),
                source: e,
            }),
        }
    })
}
