//! Start-up (and GC) reconciliation between the node's pod interfaces and its allocations.
//!
//! How "live" is known without asking the container runtime: a pod is live when its host-side
//! veth (`tab…`) exists **and** carries an owner (the alias ADD sets to the container ID)
//! **and** that container holds an allocation on this node. The veth existing is proof that
//! the pod's network namespace exists: the kernel destroys both ends of a veth pair when the
//! namespace holding one end goes away. An owner is set only once the pod side is configured,
//! so a veth without one is an ADD that died half-way.
//!
//! The pure core, [`plan`], turns the two inventories into actions: keep (and re-assert the
//! host routes of) every live pod, delete every other `tab…` veth, release every allocation
//! of a container without a live veth. The edges ([`host_veths`], [`node_allocations`]) read
//! the kernel and the API. Must not decide addresses (IPAM) or build interfaces (datapath).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use kube::api::{Api, ListParams};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use tabby_api::ipam::name::address_of;
use tabby_api::ipam::node::block_cidr;
use tabby_api::v1alpha1::{IPAMBlock, PodReference};
use tabby_cni::datapath::is_host_ifname;

/// One `tab…` veth in the host namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVeth {
    pub name: String,
    pub index: u32,
    /// The container ID ADD recorded as the interface alias; `None` for an unfinished ADD.
    pub owner: Option<String>,
}

/// One container's addresses on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub addresses: Vec<IpAddr>,
    pub pod: Option<PodReference>,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Live pods: container ID, host interface index, addresses (their host routes are
    /// handed to the route reconciler again).
    pub keep: Vec<(String, u32, Vec<IpAddr>)>,
    /// Container IDs whose veths stay; every other `tab…` veth is deleted.
    pub live: HashSet<String>,
    /// Container IDs whose allocations are released.
    pub release: Vec<String>,
    /// Veths that go (for the report; the datapath deletes them from `live`).
    pub remove: Vec<String>,
}

/// The pure decision (see the module comment).
pub fn plan(veths: &[HostVeth], holdings: &BTreeMap<String, Holding>) -> Plan {
    let mut out = Plan::default();
    for v in veths {
        match &v.owner {
            Some(owner) if holdings.contains_key(owner) && !out.live.contains(owner) => {
                out.live.insert(owner.clone());
                let addrs = holdings[owner].addresses.clone();
                out.keep.push((owner.clone(), v.index, addrs));
            }
            _ => out.remove.push(v.name.clone()),
        }
    }
    out.release = holdings
        .keys()
        .filter(|h| !out.live.contains(*h))
        .cloned()
        .collect();
    out
}

/// Errors of the inventories.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("listing host interfaces: {0}")]
    Netlink(String),
    #[error("listing the IPAMBlocks of node {node}: {source}")]
    Api {
        node: String,
        #[source]
        source: kube::Error,
    },
}

fn is_veth(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// The `tab…` veths of the caller's network namespace, through a netlink connection of its
/// own (the datapath's socket may be busy with a dump).
pub async fn host_veths() -> Result<Vec<HostVeth>, InventoryError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| InventoryError::Netlink(e.to_string()))?;
    let task = tokio::spawn(conn);
    let links: Result<Vec<LinkMessage>, _> = handle.link().get().execute().try_collect().await;
    task.abort();
    let links = links.map_err(|e| InventoryError::Netlink(e.to_string()))?;
    Ok(links
        .iter()
        .filter(|m| is_veth(m))
        .filter_map(|m| {
            let mut name = None;
            let mut owner = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::IfAlias(al) if !al.is_empty() => owner = Some(al.clone()),
                    _ => {}
                }
            }
            let name = name.filter(|n| is_host_ifname(n))?;
            Some(HostVeth {
                name,
                index: m.header.index,
                owner,
            })
        })
        .collect())
}

/// Every allocation on `node`'s blocks, by handle (container ID).
pub async fn node_allocations(
    client: &kube::Client,
    node: &str,
) -> Result<BTreeMap<String, Holding>, InventoryError> {
    let api: Api<IPAMBlock> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().fields(&format!("spec.node={node}")))
        .await
        .map_err(|source| InventoryError::Api {
            node: node.to_string(),
            source,
        })?;
    Ok(holdings(&list.items, node))
}

/// The pure part of [`node_allocations`]: blocks of `node` only; an allocation whose ordinal
/// lies outside its block (a corrupt status) is skipped.
pub fn holdings(blocks: &[IPAMBlock], node: &str) -> BTreeMap<String, Holding> {
    let mut out: BTreeMap<String, Holding> = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.spec.node == node) {
        let Some(cidr) = block_cidr(b) else { continue };
        for a in b.status.iter().flat_map(|s| &s.allocations) {
            let Some(addr) = address_of(cidr, a.ordinal) else {
                continue;
            };
            let h = out.entry(a.handle.clone()).or_default();
            h.addresses.push(addr);
            if h.pod.is_none() {
                h.pod = a.pod.clone();
            }
        }
    }
    for h in out.values_mut() {
        // IPv4 first, as ADD answers them.
        h.addresses.sort_by_key(|a| (a.is_ipv6(), *a));
    }
    out
}

/// Handles in `holdings` that are not among `valid` (CNI GC).
pub fn stale_handles(
    holdings: &BTreeMap<String, Holding>,
    valid: &BTreeSet<String>,
) -> Vec<String> {
    holdings
        .keys()
        .filter(|h| !valid.contains(*h))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_api::v1alpha1::{Allocation, IPAMBlockSpec, IPAMBlockStatus};

    fn veth(name: &str, index: u32, owner: Option<&str>) -> HostVeth {
        HostVeth {
            name: name.into(),
            index,
            owner: owner.map(String::from),
        }
    }

    fn hold(addrs: &[&str]) -> Holding {
        Holding {
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            pod: None,
        }
    }

    #[test]
    fn plan_table() {
        let holdings: BTreeMap<String, Holding> = [
            ("live".to_string(), hold(&["10.0.0.1", "fd00::1"])),
            ("no-veth".to_string(), hold(&["10.0.0.2"])),
        ]
        .into_iter()
        .collect();
        let veths = [
            veth("tab00000000001", 11, Some("live")),
            // An ADD that died before naming its owner.
            veth("tab00000000002", 12, None),
            // An owner without an allocation (released elsewhere, or a leftover).
            veth("tab00000000003", 13, Some("gone")),
            // The same owner twice: only the first is kept.
            veth("tab00000000004", 14, Some("live")),
        ];
        let p = plan(&veths, &holdings);
        assert_eq!(
            p.keep,
            vec![(
                "live".to_string(),
                11,
                vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]
            )]
        );
        assert_eq!(p.live, HashSet::from(["live".to_string()]));
        assert_eq!(p.release, vec!["no-veth".to_string()]);
        assert_eq!(
            p.remove,
            vec!["tab00000000002", "tab00000000003", "tab00000000004"]
        );
    }

    #[test]
    fn nothing_on_either_side() {
        assert_eq!(plan(&[], &BTreeMap::new()), Plan::default());
    }

    fn block(cidr: &str, node: &str, allocs: &[(u32, &str)]) -> IPAMBlock {
        let mut b = IPAMBlock::new(
            "b",
            IPAMBlockSpec {
                cidr: cidr.into(),
                pool: "p".into(),
                node: node.into(),
            },
        );
        b.status = Some(IPAMBlockStatus {
            allocations: allocs
                .iter()
                .map(|(o, h)| Allocation {
                    ordinal: *o,
                    handle: h.to_string(),
                    pod: None,
                    time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ),
                })
                .collect(),
            ..IPAMBlockStatus::default()
        });
        b
    }

    #[test]
    fn holdings_join_families_and_skip_other_nodes_and_bad_ordinals() {
        let blocks = [
            block("fd00::/124", "n1", &[(3, "c1")]),
            block("10.0.0.0/28", "n1", &[(1, "c1"), (2, "c2"), (99, "bad")]),
            block("10.0.1.0/28", "n2", &[(1, "other")]),
        ];
        let h = holdings(&blocks, "n1");
        assert_eq!(h.keys().collect::<Vec<_>>(), ["c1", "c2"]);
        assert_eq!(
            h["c1"].addresses,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
        let valid = BTreeSet::from(["c2".to_string()]);
        assert_eq!(stale_handles(&h, &valid), vec!["c1".to_string()]);
    }
}
