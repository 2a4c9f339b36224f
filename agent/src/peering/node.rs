//! What the peering plan needs to know about one Kubernetes Node: its name, labels, BGP
//! addresses (one per family), AS number, router id and route-reflector cluster id.
//!
//! Owns the meaning of the `tabby.dev/*` Node annotations below and the fallback to the Node's
//! `InternalIP` addresses. Must not look at anything but the Node object it is given; address
//! autodetection (which writes the address annotations) lives elsewhere.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Node;

/// The node's IPv4 BGP address, written by the agent's address autodetection: an address,
/// optionally with its prefix length (`10.0.0.5` or `10.0.0.5/24`, as Calico writes it).
pub const IPV4_ADDRESS_ANNOTATION: &str = "tabby.dev/ipv4-address";
/// The node's IPv6 BGP address, same forms as [`IPV4_ADDRESS_ANNOTATION`].
pub const IPV6_ADDRESS_ANNOTATION: &str = "tabby.dev/ipv6-address";
/// The node's own AS number, overriding the BGPConfiguration's (Calico's
/// `Node.spec.bgp.asNumber`), e.g. one AS per rack.
pub const AS_NUMBER_ANNOTATION: &str = "tabby.dev/as-number";
/// The BGP router id when the node's IPv4 address must not be used (IPv6-only nodes).
pub const ROUTER_ID_ANNOTATION: &str = "tabby.dev/router-id";
/// Makes the node a route reflector with this cluster id (RFC 4456 §7; Calico's
/// `routeReflectorClusterID`), dotted-quad.
pub const CLUSTER_ID_ANNOTATION: &str = "tabby.dev/route-reflector-cluster-id";

/// A Node as the peering plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// From [`AS_NUMBER_ANNOTATION`]; `None`: the cluster AS.
    pub asn: Option<u32>,
    /// From [`ROUTER_ID_ANNOTATION`]; `None`: the IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    /// From [`CLUSTER_ID_ANNOTATION`]: the node is a route reflector of this cluster.
    pub cluster_id: Option<Ipv4Addr>,
}

/// An annotation that could not be used, in words. The rest of the node stays usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: annotation {annotation}={value:?}: {reason}")]
pub struct NodeProblem {
    pub node: String,
    pub annotation: &'static str,
    pub value: String,
    pub reason: String,
}

impl NodeInfo {
    /// The node's address of `ip`'s family.
    pub fn address_like(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => self.ipv6.map(IpAddr::V6),
        }
    }

    /// Both addresses, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }

    /// The node's AS: its own or the cluster's.
    pub fn asn_or(&self, cluster_asn: u32) -> u32 {
        self.asn.unwrap_or(cluster_asn)
    }

    /// Reads a Node. A Node without a name yields `None` (the API never sends one); every
    /// annotation that cannot be used is reported and ignored.
    pub fn from_node(node: &Node) -> (Option<NodeInfo>, Vec<NodeProblem>) {
        let Some(name) = node.metadata.name.clone() else {
            return (None, Vec::new());
        };
        let empty = BTreeMap::new();
        let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
        let mut problems = Vec::new();
        let mut problem = |annotation: &'static str, value: &str, reason: String| {
            problems.push(NodeProblem {
                node: name.clone(),
                annotation,
                value: value.to_string(),
                reason,
            });
        };

        let internal = |want_v4: bool| -> Option<IpAddr> {
            node.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
                .find(|ip| ip.is_ipv4() == want_v4)
        };

        let mut ipv4 = None;
        if let Some(v) = ann.get(IPV4_ADDRESS_ANNOTATION) {
            match parse_host_address(v) {
                Ok(IpAddr::V4(a)) => ipv4 = Some(a),
                Ok(IpAddr::V6(_)) => {
                    problem(IPV4_ADDRESS_ANNOTATION, v, "is an IPv6 address".into())
                }
                Err(e) => problem(IPV4_ADDRESS_ANNOTATION, v, e),
            }
        } else if let Some(IpAddr::V4(a)) = internal(true) {
            ipv4 = Some(a);
        }
        let mut ipv6 = None;
        if let Some(v) = ann.get(IPV6_ADDRESS_ANNOTATION) {
            match parse_host_address(v) {
                Ok(IpAddr::V6(a)) => ipv6 = Some(a),
                Ok(IpAddr::V4(_)) => {
                    problem(IPV6_ADDRESS_ANNOTATION, v, "is an IPv4 address".into())
                }
                Err(e) => problem(IPV6_ADDRESS_ANNOTATION, v, e),
            }
        } else if let Some(IpAddr::V6(a)) = internal(false) {
            ipv6 = Some(a);
        }

        let asn = ann
            .get(AS_NUMBER_ANNOTATION)
            .and_then(|v| match parse_asn(v) {
                Ok(a) => Some(a),
                Err(e) => {
                    problem(AS_NUMBER_ANNOTATION, v, e);
                    None
                }
            });
        let mut ipv4_id = |annotation: &'static str| -> Option<Ipv4Addr> {
            let v = ann.get(annotation)?;
            match v.trim().parse::<Ipv4Addr>() {
                Ok(a) if a.is_unspecified() => {
                    problem(annotation, v, "0.0.0.0 is not a valid identifier".into());
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    problem(
                        annotation,
                        v,
                        "is not a dotted-quad identifier such as 10.0.0.1".into(),
                    );
                    None
                }
            }
        };
        let router_id = ipv4_id(ROUTER_ID_ANNOTATION);
        let cluster_id = ipv4_id(CLUSTER_ID_ANNOTATION);

        let info = NodeInfo {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            name,
            ipv4,
            ipv6,
            asn,
            router_id,
            cluster_id,
        };
        (Some(info), problems)
    }
}

/// `10.0.0.5` or `10.0.0.5/24` → the address; a unicast host address only.
fn parse_host_address(v: &str) -> Result<IpAddr, String> {
    let addr = v.trim().split_once('/').map_or(v.trim(), |(a, _)| a);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| "is not an IP address (optionally with /prefix-length)".to_string())?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!("{ip} cannot be a node's BGP address"));
    }
    Ok(ip)
}

/// A 4-octet AS number other than the reserved 0 and AS_TRANS.
fn parse_asn(v: &str) -> Result<u32, String> {
    let asn: u32 = v
        .trim()
        .parse()
        .map_err(|_| "is not an AS number (1-4294967295)".to_string())?;
    if asn == 0 || asn == tabby_api::v1alpha1::bgpconfiguration::AS_TRANS {
        return Err(format!("{asn} is reserved (RFC 7607, RFC 6793)"));
    }
    Ok(asn)
}
