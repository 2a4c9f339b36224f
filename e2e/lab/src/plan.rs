//! The lab's topology as data: names, addresses, the ToR's FRR configuration, the CNI
//! configuration and the Kubernetes objects a cluster would hold besides the chart's (Nodes,
//! Pods, the ToR password Secret) — computed from [`Options`] alone. The chart's default
//! objects come from the chart itself ([`crate::chart`]); the constants here that they must
//! agree with (AS numbers, the ToR's address, ConnectRetry, the pool) are checked against the
//! rendered objects there.
//!
//! Owns every naming and addressing decision, so `up`, `down`, the printed summary and the
//! tests agree. Must not do any I/O.
//!
//! Layout (everything in the root namespace carries the lab's prefix, so labs with different
//! prefixes run side by side):
//!
//! ```text
//!   <prefix>tor      bridge br0 = fabric 10.77.0.1/24 (fd77::1/64); FRR bgpd + zebra, AS 65000
//!     | n1 ... nN    one veth per node, enslaved to br0
//!   <prefix>node-1   eth0 = 10.77.0.11/24 (fd77::11/64); tabby-agent; API proxy on 127.0.0.1:6443
//!   <prefix>pod-node-1-a, -b   pods, made by tabby-cni through node-1's agent
//! ```
//!
//! The fabric, pod and service ranges are the same in every lab: they live only inside the
//! lab's own namespaces, never in the root namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

/// The cluster's AS (the chart's default `bgp.configuration.asNumber`).
pub const CLUSTER_AS: u32 = 64512;
/// The top-of-rack router's AS.
pub const TOR_AS: u32 = 65000;
/// The IPv4 fabric (one L2 segment: the bridge in the ToR namespace).
pub const FABRIC_V4: &str = "10.77.0.0/24";
/// The IPv6 fabric, with `--ipv6`.
pub const FABRIC_V6: &str = "fd77::/64";
/// The IPv4 pod pool, as the chart's default `ipPools[0]`.
pub const POOL_V4: &str = "10.244.0.0/16";
/// The IPv6 pod pool, with `--ipv6`.
pub const POOL_V6: &str = "fd44::/48";
/// Where each node's agent reaches the API: a proxy inside the node's namespace forwards this
/// to kube-sim in the root namespace, so nodes need no management network.
pub const NODE_API_ADDR: &str = "127.0.0.1:6443";
/// The agents' status port (inside each node namespace, so every agent can use the same one).
pub const AGENT_STATUS_PORT: u16 = 9097;
/// Namespace of the BGP password Secret and the controller's Lease (the release namespace).
pub const SYSTEM_NAMESPACE: &str = "kube-system";
/// Name of the global BGPPeer to the ToR.
pub const TOR_PEER_NAME: &str = "tor";
/// Name of the Secret holding the ToR password, and its key.
pub const TOR_SECRET: (&str, &str) = ("tor-bgp-password", "password");
/// ConnectRetry on the ToR sessions, seconds.
pub const CONNECT_RETRY_S: u16 = 5;
/// Pods per node by default.
pub const PODS_PER_NODE: usize = 2;
/// The pods' Kubernetes namespace.
pub const POD_NAMESPACE: &str = "default";

/// What the user (or a test) asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Prefix of every root-namespace name (network namespaces); `tlab-` for `make lab`.
    pub prefix: String,
    pub nodes: usize,
    pub ipv6: bool,
    /// `nodeToNodeMeshEnabled`; without the mesh, nodes learn each other's blocks from the ToR.
    pub mesh: bool,
    /// TCP MD5 password on the ToR sessions (both sides).
    pub tor_password: Option<String>,
    /// IPv4 pool CIDR and block size (tests shrink them to exhaust the pool).
    pub pool_v4: String,
    pub block_size_v4: u8,
    /// The controller's `--cooldown` (seconds a released address stays unusable).
    pub cooldown_s: u32,
    /// Pods made on each node (at most 26: `a`..`z`).
    pub pods_per_node: usize,
    /// The controller's `--gc-grace`: seconds an allocation's pod must be gone before release.
    pub gc_grace_s: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            prefix: "tlab-".into(),
            nodes: 3,
            ipv6: false,
            mesh: true,
            tor_password: None,
            pool_v4: POOL_V4.into(),
            block_size_v4: 26,
            cooldown_s: 30,
            pods_per_node: PODS_PER_NODE,
            gc_grace_s: 300,
        }
    }
}

/// A problem with the options, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lab options: {0}")]
pub struct OptionsError(pub String);

/// Most nodes a lab can hold: node addresses are `.11`–`.250` of the fabric /24.
pub const MAX_NODES: usize = 240;

impl Options {
    /// Checks what the plan relies on: a short, safe prefix and a node count that fits.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(OptionsError(format!(
                "--nodes {} must be between 1 and {MAX_NODES}",
                self.nodes
            )));
        }
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if self.prefix.is_empty() || self.prefix.len() > 16 || !self.prefix.chars().all(ok_char) {
            return Err(OptionsError(format!(
                "prefix `{}` must be 1-16 characters of letters, digits and `-`",
                self.prefix
            )));
        }
        if let Some(p) = &self.tor_password
            && (p.is_empty() || p.len() > 80 || p.chars().any(|c| c.is_whitespace()))
        {
            return Err(OptionsError(
                "the ToR password must be 1-80 characters without spaces (TCP MD5 keys are at \
                 most 80 bytes, RFC 2385)"
                    .into(),
            ));
        }
        if self.pods_per_node > 26 {
            return Err(OptionsError(format!(
                "--pods {} must be at most 26",
                self.pods_per_node
            )));
        }
        if !(20..=32).contains(&self.block_size_v4) {
            return Err(OptionsError(format!(
                "IPv4 block size /{} must be between /20 and /32",
                self.block_size_v4
            )));
        }
        Ok(())
    }
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based.
    pub index: usize,
    /// Kubernetes Node name, e.g. `node-1`.
    pub name: String,
    /// Network namespace, e.g. `tlab-node-1`.
    pub netns: String,
    /// The ToR's end of this node's veth (on br0).
    pub tor_if: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    pub pods: Vec<PodPlan>,
}

/// One pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The container ID the runtime hands the plugin.
    pub container_id: String,
    /// Its network namespace (`ip netns add`), e.g. `tlab-pod-node-1-a`.
    pub netns: String,
}

/// Index of node `i` (1-based) in the fabric: `.10 + i`.
pub fn node_ipv4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, (10 + i.min(MAX_NODES)) as u8)
}

pub fn node_ipv6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, (0x10 + i.min(MAX_NODES)) as u16)
}

pub const TOR_IPV4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const TOR_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);

/// The ToR's namespace.
pub fn tor_netns(prefix: &str) -> String {
    format!("{prefix}tor")
}

/// The plan for node `i` (1-based).
pub fn node(opts: &Options, i: usize) -> NodePlan {
    let name = format!("node-{i}");
    let pods = (0..opts.pods_per_node)
        .map(|p| {
            let letter = (b'a' + (p % 26) as u8) as char;
            let pod = format!("pod-{name}-{letter}");
            PodPlan {
                // Deterministic ids: a rerun of `up` finds the same pods.
                uid: format!("00000000-0000-4000-8000-{:06x}{:06x}", i, p),
                container_id: format!("{:064x}", (i as u128) << 32 | p as u128),
                netns: format!("{}pod-{name}-{letter}", opts.prefix),
                namespace: POD_NAMESPACE.into(),
                name: pod,
            }
        })
        .collect();
    NodePlan {
        index: i,
        netns: format!("{}{name}", opts.prefix),
        tor_if: format!("n{i}"),
        ipv4: node_ipv4(i),
        ipv6: opts.ipv6.then(|| node_ipv6(i)),
        name,
        pods,
    }
}

/// Every node of the lab.
pub fn nodes(opts: &Options) -> Vec<NodePlan> {
    (1..=opts.nodes).map(|i| node(opts, i)).collect()
}

/// The ToR's `bgpd.conf`: dynamic neighbours for the whole fabric (so nodes that join later
/// need no change here), eBGP with the cluster AS. FRR 8 needs `no bgp ebgp-requires-policy`
/// to send eBGP routes at all. Without the mesh every node has the same AS, so the ToR
/// rewrites it (`as-override`) — otherwise each node would drop the others' routes as loops.
pub fn tor_bgpd_conf(opts: &Options) -> String {
    let mut c = String::new();
    c.push_str("hostname tor\nlog stdout informational\n!\n");
    c.push_str(&format!("router bgp {TOR_AS}\n"));
    c.push_str(&format!(" bgp router-id {TOR_IPV4}\n"));
    c.push_str(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n");
    c.push_str(" bgp graceful-restart\n");
    c.push_str(" neighbor NODES peer-group\n");
    c.push_str(&format!(" neighbor NODES remote-as {CLUSTER_AS}\n"));
    if let Some(p) = &opts.tor_password {
        c.push_str(&format!(" neighbor NODES password {p}\n"));
    }
    c.push_str(&format!(" bgp listen range {FABRIC_V4} peer-group NODES\n"));
    if opts.ipv6 {
        c.push_str(" neighbor NODES6 peer-group\n");
        c.push_str(&format!(" neighbor NODES6 remote-as {CLUSTER_AS}\n"));
        if let Some(p) = &opts.tor_password {
            c.push_str(&format!(" neighbor NODES6 password {p}\n"));
        }
        c.push_str(&format!(
            " bgp listen range {FABRIC_V6} peer-group NODES6\n"
        ));
    }
    c.push_str(" !\n address-family ipv4 unicast\n  neighbor NODES activate\n");
    if !opts.mesh {
        c.push_str("  neighbor NODES as-override\n");
    }
    c.push_str(" exit-address-family\n");
    if opts.ipv6 {
        c.push_str(" !\n address-family ipv6 unicast\n  neighbor NODES6 activate\n");
        if !opts.mesh {
            c.push_str("  neighbor NODES6 as-override\n");
        }
        c.push_str(" exit-address-family\n");
    }
    c.push_str("!\n");
    c
}

/// The conflist a runtime would read for node `socket`'s agent (what the chart's init step
/// writes, with the lab's socket path).
pub fn conflist(socket: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "plugins": [{"type": "tabby-cni", "agentSocket": socket}],
    })
}

/// The network configuration a runtime hands the one plugin of [`conflist`] on stdin: the
/// plugin object plus the list's `cniVersion` and `name` (CNI spec, "Network configuration
/// lists": the runtime merges them into each plugin's configuration).
pub fn plugin_stdin(conflist: &Value) -> Value {
    let mut plugin = conflist["plugins"][0].clone();
    if let Some(obj) = plugin.as_object_mut() {
        obj.insert("cniVersion".into(), conflist["cniVersion"].clone());
        obj.insert("name".into(), conflist["name"].clone());
    }
    plugin
}

/// `CNI_ARGS` for a pod, as the kubelet's runtimes pass them.
pub fn cni_args(pod: &PodPlan) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.container_id, pod.uid
    )
}

/// The Node object for `n`: InternalIP = its fabric address(es), plus the labels a kubelet sets.
pub fn node_object(n: &NodePlan) -> Value {
    let mut addresses = vec![json!({"type": "InternalIP", "address": n.ipv4.to_string()})];
    if let Some(v6) = n.ipv6 {
        addresses.push(json!({"type": "InternalIP", "address": v6.to_string()}));
    }
    addresses.push(json!({"type": "Hostname", "address": n.name}));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "labels": {
                "kubernetes.io/hostname": n.name,
                "kubernetes.io/os": "linux",
                "tabby.dev/lab": "true",
            },
        },
        "status": {"addresses": addresses},
    })
}

/// The Pod object for `p` on `node`: what the scheduler and kubelet would have written before
/// the runtime calls the plugin (the controller's garbage collection looks pods up).
pub fn pod_object(p: &PodPlan, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        },
        "status": {"phase": "Running"},
    })
}

/// The Secret with the ToR password, when one is set. `data` (base64), not `stringData`: that
/// conversion is the API server's, and not every server the lab may talk to does it.
pub fn tor_secret(opts: &Options) -> Option<Value> {
    opts.tor_password.as_ref().map(|p| {
        let mut secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": TOR_SECRET.0, "namespace": SYSTEM_NAMESPACE},
            "type": "Opaque",
        });
        secret["data"] = tor_secret_data(p)["data"].clone();
        secret
    })
}

/// A merge patch setting the ToR Secret's password to `password`.
pub fn tor_secret_data(password: &str) -> Value {
    use base64::Engine;
    json!({"data": {TOR_SECRET.1: base64::engine::general_purpose::STANDARD.encode(password)}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn names_carry_the_prefix_and_addresses_follow_the_index() {
        let o = Options {
            prefix: "tt9-".into(),
            nodes: 4,
            ..opts()
        };
        let ns = nodes(&o);
        assert_eq!(ns.len(), 4);
        assert_eq!(ns[0].name, "node-1");
        assert_eq!(ns[0].netns, "tt9-node-1");
        assert_eq!(ns[3].ipv4, Ipv4Addr::new(10, 77, 0, 14));
        assert_eq!(ns[3].ipv6, None);
        assert_eq!(ns[1].tor_if, "n2");
        assert_eq!(tor_netns("tt9-"), "tt9-tor");
        let pods: Vec<&str> = ns[1].pods.iter().map(|p| p.netns.as_str()).collect();
        assert_eq!(pods, ["tt9-pod-node-2-a", "tt9-pod-node-2-b"]);
        // Every root-namespace name is prefixed, and all are distinct.
        let mut all: Vec<String> = ns
            .iter()
            .flat_map(|n| {
                std::iter::once(n.netns.clone()).chain(n.pods.iter().map(|p| p.netns.clone()))
            })
            .collect();
        all.push(tor_netns("tt9-"));
        assert!(all.iter().all(|n| n.starts_with("tt9-")));
        let len = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), len);
    }

    #[test]
    fn pod_identities_are_unique_and_stable() {
        let a = nodes(&opts());
        let b = nodes(&opts());
        assert_eq!(a, b, "a rerun plans the same pods");
        let mut ids: Vec<&str> = a
            .iter()
            .flat_map(|n| n.pods.iter().map(|p| p.container_id.as_str()))
            .collect();
        assert!(ids.iter().all(|i| i.len() == 64));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3 * PODS_PER_NODE);
        assert!(cni_args(&a[0].pods[0]).contains("K8S_POD_NAME=pod-node-1-a"));
    }

    #[test]
    fn ipv6_adds_fabric_addresses_and_tor_listen_range() {
        let o = Options {
            ipv6: true,
            ..opts()
        };
        assert_eq!(node(&o, 2).ipv6, Some("fd77::12".parse().unwrap()));
        assert!(tor_bgpd_conf(&o).contains("bgp listen range fd77::/64 peer-group NODES6"));
        let node = node_object(&node(&o, 1));
        assert_eq!(node["status"]["addresses"][1]["address"], "fd77::11");
    }

    #[test]
    fn tor_config_follows_mesh_and_password() {
        let c = tor_bgpd_conf(&opts());
        assert!(c.contains("router bgp 65000"));
        assert!(c.contains("neighbor NODES remote-as 64512"));
        assert!(c.contains("bgp listen range 10.77.0.0/24 peer-group NODES"));
        assert!(c.contains("no bgp ebgp-requires-policy"));
        assert!(!c.contains("as-override") && !c.contains("password"));
        let c = tor_bgpd_conf(&Options {
            mesh: false,
            tor_password: Some("s3cret".into()),
            ..opts()
        });
        assert!(c.contains("neighbor NODES as-override"));
        assert!(c.contains("neighbor NODES password s3cret"));
    }

    #[test]
    fn the_secret_exists_only_with_a_password() {
        assert!(tor_secret(&opts()).is_none());
        let o = Options {
            tor_password: Some("pw".into()),
            ..opts()
        };
        let s = tor_secret(&o).unwrap();
        assert_eq!(s["metadata"]["name"], TOR_SECRET.0);
        assert_eq!(s["metadata"]["namespace"], SYSTEM_NAMESPACE);
        assert_eq!(s["data"]["password"], "cHc=");
    }

    #[test]
    fn plugin_stdin_merges_the_list_version_and_name() {
        let list = conflist("/run/x/cni.sock");
        let s = plugin_stdin(&list);
        assert_eq!(s["type"], "tabby-cni");
        assert_eq!(s["agentSocket"], "/run/x/cni.sock");
        assert_eq!(s["cniVersion"], "1.1.0");
        assert_eq!(s["name"], "k8s-pod-network");
    }

    #[test]
    fn options_are_validated() {
        assert!(opts().validate().is_ok());
        for bad in [
            Options { nodes: 0, ..opts() },
            Options {
                nodes: MAX_NODES + 1,
                ..opts()
            },
            Options {
                prefix: "bad/prefix".into(),
                ..opts()
            },
            Options {
                prefix: String::new(),
                ..opts()
            },
            Options {
                tor_password: Some("has space".into()),
                ..opts()
            },
            Options {
                block_size_v4: 33,
                ..opts()
            },
            Options {
                pods_per_node: 27,
                ..opts()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
