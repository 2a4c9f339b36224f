//! The pod datapath: the veth pair, addresses, routes, neighbours and sysctls that connect one
//! pod to its node, programmed with rtnetlink; plus CHECK, DEL and start-up reconciliation.
//!
//! Owns: host-side interfaces named `tab` + 11 hex digits (and nothing else in the host
//! namespace), their `/32`/`/128` host routes under [`ROUTE_PROTOCOL`], and the pod-side
//! interface in namespaces it is handed. It also turns on forwarding (read first, written only
//! when off). Must not touch IPAM, other links, or routes of any other protocol: a foreign route
//! to a pod address makes ADD fail rather than be replaced.
//!
//! The layout (as in Calico): the host side has MAC `ee:ee:ee:ee:ee:ee`, `proxy_arp` on and no
//! address; the pod side has its address as `/32` (`/128`) and a default route via `169.254.1.1`
//! (onlink) and via the host side's IPv6 link-local address, with permanent neighbour entries
//! for both gateways, so the first packet needs no ARP/ND round trip.
//!
//! ADD is atomic: once the veth exists, any failure deletes it, which takes the pod side, its
//! addresses and routes and the host routes with it. DEL deletes the host side only when its
//! alias is the container ID, so a late DEL of an old sandbox never removes a new one's veth.
//! Concurrent DELs are deleted in bulk: tagged with an interface group from
//! [`DELETE_GROUP_BASE`] and removed in one `RTM_DELLINK`, one RCU grace period for the lot.

use std::collections::HashSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha2::{Digest, Sha256};

use crate::spec::{CniError, CniResult, ErrorCode, Interface, IpConfig, Route};

/// Tabby's route protocol number (`ip route ... proto 84`; 84 is ASCII `T`). Not in iproute2's
/// `rt_protos` list, nor used by BIRD (12), FRR (186–192), Calico or Cilium.
///
/// The same number as `tabby_agent::routes::TABBY_RT_PROTO` (the agent depends on this crate,
/// not the other way round); the agent should `const`-assert that the two are equal.
pub const ROUTE_PROTOCOL: u8 = 84;

/// Metric of pod host routes: `tabby_agent::routes::DEFAULT_METRIC`, so the agent's route
/// reconciler sees these routes exactly as it would program them, and an administrator's route
/// with a lower metric still wins.
pub const HOST_ROUTE_METRIC: u32 = 50;

/// The MAC of every host-side veth: pods resolve their gateways to it.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The pods' IPv4 gateway: a link-local address nobody owns; the host side answers by proxy ARP.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway: the host side's link-local address, the EUI-64 one of [`HOST_MAC`]
/// (RFC 4291 §2.5.1, appendix A) that the kernel would derive itself.
pub const HOST_LINK_LOCAL: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// Prefix of host-side interface names.
pub const HOST_IFNAME_PREFIX: &str = "tab";
/// Used when the host has no interface to learn an MTU from.
pub const DEFAULT_MTU: u32 = 1500;

/// The host-side interface name for a pod: `tab` + the first 11 hex digits of SHA-256 of
/// `namespace.name` (stable across restarts; 44 bits make a collision on one node
/// negligible). Without Kubernetes arguments the container ID is hashed instead.
pub fn host_ifname(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_IFNAME_PREFIX}{}", &hex[..11])
}

/// The key [`host_ifname`] hashes for a request.
pub fn pod_key(pod: Option<&crate::spec::PodRef>, container_id: &str) -> String {
    match pod {
        Some(p) => format!("{}.{}", p.namespace, p.name),
        None => container_id.to_string(),
    }
}

/// Whether `name` is one of ours: `tab` and exactly 11 lowercase hex digits.
pub fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(HOST_IFNAME_PREFIX).is_some_and(|rest| {
        rest.len() == 11
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One host interface, as far as MTU detection cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub loopback: bool,
}

/// Picks the pods' MTU from the host's interfaces: the smallest MTU among the up interfaces
/// carrying a default route (that is where pod traffic leaves the node), else the smallest
/// among the up, non-loopback interfaces that are not pod veths, else [`DEFAULT_MTU`].
pub fn choose_mtu(links: &[HostLink], default_route_oifs: &[u32]) -> u32 {
    let candidates = |filter: &dyn Fn(&HostLink) -> bool| {
        links
            .iter()
            .filter(|l| l.up && !l.loopback && l.mtu >= 68 && filter(l))
            .map(|l| l.mtu)
            .min()
    };
    candidates(&|l| default_route_oifs.contains(&l.index))
        .or_else(|| candidates(&|l| !is_host_ifname(&l.name)))
        .unwrap_or(DEFAULT_MTU)
}

/// What to plumb for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub container_id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// Interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// Host-side name, from [`host_ifname`].
    pub host_ifname: String,
    /// The pod's addresses: at most one IPv4 and one IPv6.
    pub addresses: Vec<IpAddr>,
    /// Overrides the datapath's MTU (from the network configuration).
    pub mtu: Option<u32>,
}

impl PodSpec {
    fn v4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    }

    fn v6(&self) -> Option<Ipv6Addr> {
        self.addresses.iter().find_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    }

    fn validate(&self) -> Result<(), DatapathError> {
        let v4 = self.addresses.iter().filter(|a| a.is_ipv4()).count();
        let v6 = self.addresses.len() - v4;
        if self.addresses.is_empty() || v4 > 1 || v6 > 1 {
            return Err(DatapathError::Invalid(format!(
                "a pod needs one IPv4 and/or one IPv6 address, got {:?}",
                self.addresses
            )));
        }
        crate::spec::validate_ifname(&self.ifname)
            .map_err(|why| DatapathError::Invalid(format!("pod interface name {why}")))?;
        if !is_host_ifname(&self.host_ifname) {
            return Err(DatapathError::Invalid(format!(
                "host interface name `{}` is not tab + 11 hex digits",
                self.host_ifname
            )));
        }
        Ok(())
    }
}

/// A plumbed pod, as ADD made it (or CHECK found it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_ifname: String,
    pub host_index: u32,
    pub pod_ifname: String,
    pub pod_mac: [u8; 6],
    pub mtu: u32,
    pub netns: PathBuf,
    pub addresses: Vec<IpAddr>,
    /// The IPv6 gateway of the pod (the host side's link-local address), when it has IPv6.
    pub gateway_v6: Option<Ipv6Addr>,
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Attachment {
    /// The CNI result: the host interface (index 0), the pod interface (index 1) with its
    /// sandbox, one `/32`/`/128` per address on the pod interface, and the default routes.
    pub fn cni_result(&self) -> CniResult {
        let mut r = CniResult {
            interfaces: vec![
                Interface {
                    name: self.host_ifname.clone(),
                    mac: Some(format_mac(&HOST_MAC)),
                    ..Interface::default()
                },
                Interface {
                    name: self.pod_ifname.clone(),
                    mac: Some(format_mac(&self.pod_mac)),
                    mtu: Some(self.mtu),
                    sandbox: Some(self.netns.display().to_string()),
                    ..Interface::default()
                },
            ],
            ..CniResult::default()
        };
        for a in &self.addresses {
            r.ips.push(IpConfig {
                address: IpNet::from(*a),
                gateway: None,
                interface: Some(1),
            });
        }
        let route = |dst: IpNet, gw: IpAddr| Route {
            dst,
            gw: Some(gw),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        };
        if self.addresses.iter().any(IpAddr::is_ipv4) {
            r.routes.push(route(
                IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).unwrap_or_default(),
                GATEWAY_V4.into(),
            ));
        }
        if let Some(gw) = self.gateway_v6 {
            r.routes.push(route(
                IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).unwrap_or_default(),
                gw.into(),
            ));
        }
        r
    }
}

/// What went wrong in the datapath; each names the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("invalid pod spec: {0}")]
    Invalid(String),
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the pod's networking is not as expected: {}", .0.join("; "))]
    Check(Vec<String>),
}

impl DatapathError {
    /// The CNI error the agent answers for this failure.
    pub fn to_cni(&self) -> CniError {
        let code = match self {
            DatapathError::Invalid(_) => ErrorCode::INVALID_NETWORK_CONFIG,
            DatapathError::Netns { .. } => ErrorCode::INVALID_ENV,
            DatapathError::Check(_) => ErrorCode::CHECK_FAILED,
            _ => ErrorCode::AGENT_FAILURE,
        };
        CniError::new(code, self.to_string())
    }

    fn errno(&self) -> Option<i32> {
        match self {
            DatapathError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            _ => None,
        }
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Netlink { what, source }
}

/// What DEL found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelOutcome {
    Deleted,
    /// Nothing left to delete (already gone, or the netns went away with it).
    Absent,
    /// The interface belongs to another container (a newer sandbox of the same pod).
    OtherOwner(String),
}

/// Runs `f` on a fresh thread that first joins the network namespace `ns` (a fresh thread
/// because a thread that changed namespace must never go back to a pool).
async fn on_netns_thread<T, F>(ns: &File, f: F) -> Result<T, DatapathError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DatapathError> + Send + 'static,
{
    let ns = ns
        .try_clone()
        .map_err(|e| DatapathError::Io(format!("duplicating a netns handle: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tabby-netns".into())
        .spawn(move || {
            let r = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| DatapathError::Io(format!("entering a network namespace: {e}")))
                .and_then(|()| f());
            let _ = tx.send(r);
        })
        .map_err(|e| DatapathError::Io(format!("spawning a thread: {e}")))?;
    rx.await
        .map_err(|_| DatapathError::Io("a netns thread ended without answering".into()))?
}

/// A netlink connection whose socket lives in `ns` (or in the caller's namespace for `None`).
async fn connect_in(ns: Option<&File>) -> Result<Handle, DatapathError> {
    let connect = || {
        rtnetlink::new_connection()
            .map_err(|e| DatapathError::Io(format!("opening a netlink socket: {e}")))
    };
    let (conn, handle, _) = match ns {
        None => connect()?,
        Some(ns) => {
            let rt = tokio::runtime::Handle::current();
            on_netns_thread(ns, move || {
                // The socket registers with the runtime's reactor from this thread.
                let _guard = rt.enter();
                connect()
            })
            .await?
        }
    };
    tokio::spawn(conn);
    Ok(handle)
}

/// Writes sysctls in the current namespace; `net/...` keys are slash-separated so interface
/// names with dots stay intact.
fn write_sysctls(pairs: &[(String, &str)]) -> Result<(), DatapathError> {
    for (key, value) in pairs {
        std::fs::write(format!("/proc/sys/{key}"), value).map_err(|source| {
            DatapathError::Sysctl {
                key: key.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

fn read_sysctl(key: &str) -> Result<String, DatapathError> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .map(|s| s.trim().to_string())
        .map_err(|source| DatapathError::Sysctl {
            key: key.to_string(),
            source,
        })
}

/// Writes `value` only when the current value differs: writing the global forwarding switches
/// resets per-interface settings in the kernel, so a no-op write is not harmless.
fn ensure_sysctl(key: &str, value: &str) -> Result<(), DatapathError> {
    if read_sysctl(key)? != value {
        write_sysctls(&[(key.to_string(), value)])?;
    }
    Ok(())
}

/// The pod datapath of one node. Cheap to share (`Arc`) between concurrent requests.
#[derive(Debug)]
pub struct Datapath {
    handle: Handle,
    /// The node's namespace when it is not the caller's (tests, labs); `None` in the agent.
    host_ns: Option<File>,
    mtu: u32,
    /// The kernel runs one dump at a time per netlink socket (a second one gets EBUSY), and
    /// concurrent requests share `handle`: dumps on it take turns.
    dump_lock: tokio::sync::Mutex<()>,
    /// DELs go through one task that deletes whatever is queued in one kernel call.
    deleter: tokio::sync::mpsc::UnboundedSender<DelJob>,
}

impl Datapath {
    /// Opens netlink in the host namespace (`host_netns`, or the caller's), turns forwarding
    /// on and settles the MTU: `mtu`, or detected from the host's interfaces.
    pub async fn new(
        host_netns: Option<&Path>,
        mtu: Option<u32>,
    ) -> Result<Datapath, DatapathError> {
        let host_ns = match host_netns {
            None => None,
            Some(p) => Some(File::open(p).map_err(|source| DatapathError::Netns {
                path: p.to_path_buf(),
                source,
            })?),
        };
        let handle = connect_in(host_ns.as_ref()).await?;
        let handle_clone = handle.clone();
        let mut dp = Datapath {
            handle,
            host_ns,
            mtu: DEFAULT_MTU,
            dump_lock: tokio::sync::Mutex::new(()),
            deleter: spawn_deleter(handle_clone),
        };
        dp.ensure_forwarding(true).await?;
        dp.mtu = match mtu {
            Some(m) => m,
            None => dp.detect_mtu().await?,
        };
        Ok(dp)
    }

    /// The MTU pods get unless their spec overrides it.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The netlink handle in the host namespace (for the agent's own queries).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    async fn in_host<T, F>(&self, f: F) -> Result<T, DatapathError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, DatapathError> + Send + 'static,
    {
        match &self.host_ns {
            None => f(),
            Some(ns) => on_netns_thread(ns, f).await,
        }
    }

    async fn ensure_forwarding(&self, v6: bool) -> Result<(), DatapathError> {
        self.in_host(move || {
            ensure_sysctl("net/ipv4/ip_forward", "1")?;
            if v6 {
                ensure_sysctl("net/ipv6/conf/all/forwarding", "1")?;
            }
            Ok(())
        })
        .await
    }

    /// Lists the host's interfaces and default routes and applies [`choose_mtu`].
    pub async fn detect_mtu(&self) -> Result<u32, DatapathError> {
        let _dumping = self.dump_lock.lock().await;
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing host interfaces"))?;
        let links: Vec<HostLink> = links
            .iter()
            .map(|m| HostLink {
                index: m.header.index,
                name: link_name(m).unwrap_or_default(),
                mtu: m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::Mtu(m) => Some(*m),
                        _ => None,
                    })
                    .unwrap_or(0),
                up: m.header.flags.contains(LinkFlags::Up),
                loopback: m.header.flags.contains(LinkFlags::Loopback),
            })
            .collect();
        let mut oifs = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(route_query(family))
                .execute()
                .try_collect()
                .await
                .map_err(nl("listing host routes"))?;
            for r in routes {
                if r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
                {
                    oifs.extend(route_oif(&r));
                }
            }
        }
        Ok(choose_mtu(&links, &oifs))
    }

    async fn link_by_name(
        handle: &Handle,
        name: &str,
    ) -> Result<Option<LinkMessage>, DatapathError> {
        let res = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match res {
            Ok(m) => Ok(m),
            Err(e) => {
                let err = nl(format!("looking up interface {name}"))(e);
                if err.errno() == Some(libc_enodev()) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// ADD: creates and configures the pod's veth pair. Idempotent: when the pod's host
    /// interface already exists for this container and passes CHECK, it is returned as is;
    /// a stale one (other owner, or broken) is replaced. Any failure after the veth exists
    /// deletes it again.
    pub async fn add(&self, spec: &PodSpec) -> Result<Attachment, DatapathError> {
        spec.validate()?;
        let netns = File::open(&spec.netns).map_err(|source| DatapathError::Netns {
            path: spec.netns.clone(),
            source,
        })?;
        if let Some(existing) = Self::link_by_name(&self.handle, &spec.host_ifname).await? {
            if !is_veth(&existing) {
                return Err(DatapathError::Conflict(format!(
                    "{} exists and is not a veth; Tabby does not touch interfaces it did not \
                     create",
                    spec.host_ifname
                )));
            }
            if link_alias(&existing).as_deref() == Some(spec.container_id.as_str())
                && let Ok(found) = self.check(spec).await
            {
                return Ok(found);
            }
            tracing::info!(
                host_ifname = %spec.host_ifname,
                "replacing a stale pod interface"
            );
            self.delete_link(existing.header.index, &spec.host_ifname)
                .await?;
        }
        self.ensure_forwarding(spec.v6().is_some()).await?;
        let mtu = spec.mtu.unwrap_or(self.mtu);
        // One request creates both ends, the pod end directly inside its namespace.
        let peer = LinkUnspec::new_with_name(&spec.ifname)
            .mtu(mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let mut veth = LinkVeth::new(&spec.host_ifname, &spec.ifname)
            .mtu(mtu)
            .address(HOST_MAC.to_vec());
        veth = veth.set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
        self.handle
            .link()
            .add(veth.build())
            .execute()
            .await
            .map_err(nl(format!(
                "creating veth {} <-> {} in {}",
                spec.host_ifname,
                spec.ifname,
                spec.netns.display()
            )))?;
        let host = Self::link_by_name(&self.handle, &spec.host_ifname)
            .await?
            .ok_or_else(|| {
                DatapathError::Io(format!(
                    "veth {} vanished right after it was created",
                    spec.host_ifname
                ))
            })?;
        let host_index = host.header.index;
        match self.configure(spec, &netns, host_index, mtu).await {
            Ok(a) => Ok(a),
            Err(e) => {
                if let Err(re) = self.delete_link(host_index, &spec.host_ifname).await {
                    tracing::error!(error = %re, host_ifname = %spec.host_ifname, "rollback failed");
                }
                Err(e)
            }
        }
    }

    async fn configure(
        &self,
        spec: &PodSpec,
        netns: &File,
        host_index: u32,
        mtu: u32,
    ) -> Result<Attachment, DatapathError> {
        let host_name = spec.host_ifname.clone();
        let v4 = spec.v4();
        let v6 = spec.v6();
        self.in_host(move || {
            let mut s = vec![];
            if v4.is_some() {
                s.push((format!("net/ipv4/conf/{host_name}/proxy_arp"), "1"));
            }
            if v6.is_some() {
                s.push((format!("net/ipv6/conf/{host_name}/disable_ipv6"), "0"));
                // A point-to-point veth has no one to collide with; DAD would only delay the
                // link-local address pods route through.
                s.push((format!("net/ipv6/conf/{host_name}/accept_dad"), "0"));
            }
            write_sysctls(&s)
        })
        .await?;

        // Pod side: sysctls and a netlink socket from one thread inside the pod's namespace.
        let pod_if = spec.ifname.clone();
        let rt = tokio::runtime::Handle::current();
        let (conn, pod) = on_netns_thread(netns, move || {
            if v6.is_some() {
                write_sysctls(&[
                    (format!("net/ipv6/conf/{pod_if}/disable_ipv6"), "0"),
                    (format!("net/ipv6/conf/{pod_if}/accept_dad"), "0"),
                ])?;
            }
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| DatapathError::Io(format!("opening a netlink socket: {e}")))?;
            Ok((conn, handle))
        })
        .await?;
        tokio::spawn(conn);
        let pod_link = Self::link_by_name(&pod, &spec.ifname)
            .await?
            .ok_or_else(|| {
                DatapathError::Io(format!(
                    "pod interface {} not found in {}",
                    spec.ifname,
                    spec.netns.display()
                ))
            })?;
        let pod_index = pod_link.header.index;
        let pod_mac = link_mac(&pod_link).ok_or_else(|| {
            DatapathError::Io(format!("pod interface {} has no MAC", spec.ifname))
        })?;
        pod.link()
            .set(LinkUnspec::new_with_index(pod_index).up().build())
            .execute()
            .await
            .map_err(nl(format!("setting {} up in the pod", spec.ifname)))?;
        for addr in &spec.addresses {
            let plen = if addr.is_ipv4() { 32 } else { 128 };
            let mut req = pod.address().add(pod_index, *addr, plen);
            if addr.is_ipv6() {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            req.execute().await.map_err(nl(format!(
                "adding {addr}/{plen} to {} in the pod",
                spec.ifname
            )))?;
        }
        // Host side up (after the pod side, so the veth has carrier and IPv6 comes up at once),
        // with the container ID as alias: DEL and reconcile recognise their interface by it.
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .up()
                    .append_extra_attribute(LinkAttribute::IfAlias(spec.container_id.clone()))
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("setting {} up", spec.host_ifname)))?;

        if v4.is_some() {
            add_pod_gateway(&pod, pod_index, GATEWAY_V4.into()).await?;
        }
        let mut gateway_v6 = None;
        if v6.is_some() {
            let ll = self
                .add_host_link_local(host_index, &spec.host_ifname)
                .await?;
            add_pod_gateway(&pod, pod_index, ll.into()).await?;
            gateway_v6 = Some(ll);
        }
        for addr in &spec.addresses {
            self.add_host_route(*addr, host_index, &spec.host_ifname)
                .await?;
        }
        Ok(Attachment {
            host_ifname: spec.host_ifname.clone(),
            host_index,
            pod_ifname: spec.ifname.clone(),
            pod_mac,
            mtu,
            netns: spec.netns.clone(),
            addresses: spec.addresses.clone(),
            gateway_v6,
        })
    }

    /// `addr/32` (`/128`) via the host side, scope link, our protocol, metric
    /// [`HOST_ROUTE_METRIC`]. Exclusive: an existing route to the address with the same metric
    /// (someone else's) is a conflict, never replaced.
    async fn add_host_route(
        &self,
        addr: IpAddr,
        host_index: u32,
        host_ifname: &str,
    ) -> Result<(), DatapathError> {
        let msg = host_route(addr, host_index);
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = nl(format!("adding host route {addr} dev {host_ifname}"))(e);
                if err.errno() == Some(libc_eexist()) {
                    Err(DatapathError::Conflict(format!(
                        "a route to {addr} with metric {HOST_ROUTE_METRIC} already exists in \
                         the host's main table; Tabby does not replace routes it did not create"
                    )))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Gives the host side its link-local address, [`HOST_LINK_LOCAL`], without DAD. Waiting
    /// for the kernel to make one instead costs up to a second when many veths come up at once:
    /// addrconf acts on carrier changes, which the kernel's linkwatch batches at most once a
    /// second. The kernel's own EUI-64 address for [`HOST_MAC`] is the same one (EEXIST), so
    /// nothing is duplicated.
    async fn add_host_link_local(&self, index: u32, name: &str) -> Result<Ipv6Addr, DatapathError> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V6(HOST_LINK_LOCAL), 64);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        match req.execute().await {
            Ok(()) => Ok(HOST_LINK_LOCAL),
            Err(e) => {
                let err = nl(format!("adding {HOST_LINK_LOCAL}/64 to {name}"))(e);
                if err.errno() == Some(libc_eexist()) {
                    Ok(HOST_LINK_LOCAL)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn delete_link(&self, index: u32, name: &str) -> Result<(), DatapathError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = nl(format!("deleting {name}"))(e);
                if err.errno() == Some(libc_enodev()) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// DEL: removes the pod's host interface (and with it the pod side, host routes and
    /// neighbours) when it belongs to `container_id`. Never fails because something is
    /// already gone; the pod's namespace is not needed.
    pub async fn del(
        &self,
        host_ifname: &str,
        container_id: &str,
    ) -> Result<DelOutcome, DatapathError> {
        let Some(link) = Self::link_by_name(&self.handle, host_ifname).await? else {
            return Ok(DelOutcome::Absent);
        };
        if !is_veth(&link) {
            return Ok(DelOutcome::OtherOwner(format!(
                "{host_ifname} is not a veth (not Tabby's)"
            )));
        }
        match link_alias(&link) {
            // No alias: an ADD died before finishing; the interface is nobody's.
            Some(owner) if owner != container_id => {
                return Ok(DelOutcome::OtherOwner(owner));
            }
            _ => {}
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        let job = DelJob {
            index: link.header.index,
            name: host_ifname.to_string(),
            reply,
        };
        if self.deleter.send(job).is_err() {
            // The deleter only ends with the datapath; delete directly all the same.
            self.delete_link(link.header.index, host_ifname).await?;
            return Ok(DelOutcome::Deleted);
        }
        match done.await {
            Ok(Ok(())) => Ok(DelOutcome::Deleted),
            Ok(Err(msg)) => Err(DatapathError::Io(msg)),
            Err(_) => Err(DatapathError::Io(format!(
                "the deletion of {host_ifname} was dropped unanswered"
            ))),
        }
    }

    /// CHECK: compares the kernel's state with `spec` and lists every difference.
    pub async fn check(&self, spec: &PodSpec) -> Result<Attachment, DatapathError> {
        spec.validate()?;
        let mut problems = Vec::new();
        let host = Self::link_by_name(&self.handle, &spec.host_ifname).await?;
        let Some(host) = host else {
            return Err(DatapathError::Check(vec![format!(
                "host interface {} does not exist",
                spec.host_ifname
            )]));
        };
        let host_index = host.header.index;
        if link_alias(&host).as_deref() != Some(spec.container_id.as_str()) {
            problems.push(format!(
                "host interface {} belongs to {:?}, not {}",
                spec.host_ifname,
                link_alias(&host),
                spec.container_id
            ));
        }
        if link_mac(&host) != Some(HOST_MAC) {
            problems.push(format!(
                "host interface {} has MAC {}, not ee:ee:ee:ee:ee:ee",
                spec.host_ifname,
                link_mac(&host).map(|m| format_mac(&m)).unwrap_or_default()
            ));
        }
        if !host.header.flags.contains(LinkFlags::Up) {
            problems.push(format!("host interface {} is down", spec.host_ifname));
        }
        if spec.v4().is_some() {
            let name = spec.host_ifname.clone();
            let v = self
                .in_host(move || read_sysctl(&format!("net/ipv4/conf/{name}/proxy_arp")))
                .await?;
            if v != "1" {
                problems.push(format!("proxy_arp is {v} on {}", spec.host_ifname));
            }
        }
        for addr in &spec.addresses {
            if !self.has_host_route(*addr, host_index).await? {
                problems.push(format!(
                    "no host route {addr} dev {} proto {ROUTE_PROTOCOL}",
                    spec.host_ifname
                ));
            }
        }

        let netns = File::open(&spec.netns).map_err(|source| DatapathError::Netns {
            path: spec.netns.clone(),
            source,
        })?;
        let pod = connect_in(Some(&netns)).await?;
        let Some(pod_link) = Self::link_by_name(&pod, &spec.ifname).await? else {
            problems.push(format!(
                "interface {} does not exist in {}",
                spec.ifname,
                spec.netns.display()
            ));
            return Err(DatapathError::Check(problems));
        };
        let pod_index = pod_link.header.index;
        let mtu = link_mtu(&pod_link).unwrap_or(0);
        if let Some(want) = spec.mtu
            && want != mtu
        {
            problems.push(format!("pod MTU is {mtu}, configured {want}"));
        }
        if !pod_link.header.flags.contains(LinkFlags::Up) {
            problems.push(format!("pod interface {} is down", spec.ifname));
        }
        let addrs: Vec<AddressMessage> = pod
            .address()
            .get()
            .set_link_index_filter(pod_index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing the pod's addresses"))?;
        for addr in &spec.addresses {
            let plen = if addr.is_ipv4() { 32 } else { 128 };
            let present = addrs.iter().any(|m| {
                m.header.prefix_len == plen
                    && m.attributes
                        .iter()
                        .any(|a| matches!(a, AddressAttribute::Address(x) if x == addr))
            });
            if !present {
                problems.push(format!(
                    "pod has no address {addr}/{plen} on {}",
                    spec.ifname
                ));
            }
        }
        let mut gateway_v6 = None;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let wanted = match family {
                AddressFamily::Inet => spec.v4().is_some(),
                _ => spec.v6().is_some(),
            };
            if !wanted {
                continue;
            }
            let routes: Vec<RouteMessage> = pod
                .route()
                .get(route_query(family))
                .execute()
                .try_collect()
                .await
                .map_err(nl("listing the pod's routes"))?;
            let default = routes.iter().find(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
                    && route_oif(r) == Some(pod_index)
            });
            match (family, default.and_then(route_gateway)) {
                (AddressFamily::Inet, Some(IpAddr::V4(gw))) if gw == GATEWAY_V4 => {}
                (AddressFamily::Inet6, Some(IpAddr::V6(gw))) if is_link_local(&gw) => {
                    gateway_v6 = Some(gw);
                }
                (_, gw) => problems.push(format!(
                    "pod's {} default route via {} is {:?}",
                    if family == AddressFamily::Inet {
                        "IPv4"
                    } else {
                        "IPv6"
                    },
                    spec.ifname,
                    gw
                )),
            }
        }
        if !problems.is_empty() {
            return Err(DatapathError::Check(problems));
        }
        Ok(Attachment {
            host_ifname: spec.host_ifname.clone(),
            host_index,
            pod_ifname: spec.ifname.clone(),
            pod_mac: link_mac(&pod_link).unwrap_or_default(),
            mtu,
            netns: spec.netns.clone(),
            addresses: spec.addresses.clone(),
            gateway_v6,
        })
    }

    async fn has_host_route(&self, addr: IpAddr, host_index: u32) -> Result<bool, DatapathError> {
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let plen = if addr.is_ipv4() { 32 } else { 128 };
        let _dumping = self.dump_lock.lock().await;
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(route_query(family))
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing host routes"))?;
        Ok(routes.iter().any(|r| {
            r.header.destination_prefix_length == plen
                && r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
                && route_oif(r) == Some(host_index)
                && route_dst(r) == Some(addr)
        }))
    }

    /// Start-up reconciliation: deletes every `tab…` veth whose owner (alias) is not in
    /// `live_containers`, and those without an owner (an ADD that died half-way). Returns the
    /// names removed.
    pub async fn reconcile(
        &self,
        live_containers: &HashSet<String>,
    ) -> Result<Vec<String>, DatapathError> {
        let dumping = self.dump_lock.lock().await;
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing host interfaces"))?;
        drop(dumping);
        let mut removed = Vec::new();
        for l in &links {
            let Some(name) = link_name(l) else { continue };
            if !is_host_ifname(&name) || !is_veth(l) {
                continue;
            }
            let live = link_alias(l).is_some_and(|owner| live_containers.contains(&owner));
            if !live {
                self.delete_link(l.header.index, &name).await?;
                tracing::info!(host_ifname = %name, owner = ?link_alias(l), "removed orphaned pod interface");
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// One pending deletion: the interface and who waits for it.
#[derive(Debug)]
struct DelJob {
    index: u32,
    name: String,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Interface groups Tabby uses to delete veths in bulk (`0x7462_0000 + n`, "tb"). The kernel
/// deletes a whole group under one RCU grace period; deleting veths one by one costs ~20 ms each
/// under the RTNL lock, which serialises concurrent DELs.
pub const DELETE_GROUP_BASE: u32 = 0x7462_0000;
const MAX_DELETE_BATCH: usize = 256;

fn spawn_deleter(handle: Handle) -> tokio::sync::mpsc::UnboundedSender<DelJob> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DelJob>();
    tokio::spawn(async move {
        let mut batch_no: u32 = 0;
        while let Some(first) = rx.recv().await {
            // Everything queued while the previous batch ran goes in this one.
            let mut batch = vec![first];
            while batch.len() < MAX_DELETE_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            batch_no = batch_no.wrapping_add(1);
            delete_batch(&handle, batch, DELETE_GROUP_BASE | (batch_no & 0xffff)).await;
        }
    });
    tx
}

async fn delete_one(handle: &Handle, index: u32, name: &str) -> Result<(), String> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let err = nl(format!("deleting {name}"))(e);
            if err.errno() == Some(libc_enodev()) {
                Ok(())
            } else {
                Err(err.to_string())
            }
        }
    }
}

async fn delete_batch(handle: &Handle, batch: Vec<DelJob>, group: u32) {
    if batch.len() == 1 {
        for j in batch {
            let r = delete_one(handle, j.index, &j.name).await;
            let _ = j.reply.send(r);
        }
        return;
    }
    // Tag each interface with the batch's group; one that vanished meanwhile is done, one
    // that cannot be tagged is reported and left out of the group.
    let mut tagged = Vec::new();
    for j in batch {
        let set = handle
            .link()
            .set(
                LinkUnspec::new_with_index(j.index)
                    .link_group(group)
                    .build(),
            )
            .execute()
            .await;
        match set {
            Ok(()) => tagged.push(j),
            Err(e) => {
                let err = nl(format!("tagging {} for deletion", j.name))(e);
                let r = if err.errno() == Some(libc_enodev()) {
                    Ok(())
                } else {
                    Err(err.to_string())
                };
                let _ = j.reply.send(r);
            }
        }
    }
    if tagged.is_empty() {
        return;
    }
    // RTM_DELLINK with no index and IFLA_GROUP deletes the group (rtnl_group_dellink).
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    match handle.link().del_with_message(msg).execute().await {
        Ok(()) => {
            for j in tagged {
                let _ = j.reply.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, group, "bulk delete failed; deleting one by one");
            for j in tagged {
                let r = delete_one(handle, j.index, &j.name).await;
                let _ = j.reply.send(r);
            }
        }
    }
}

/// The pod's gateway: a permanent neighbour entry for `gw` with the host side's fixed MAC (no
/// ARP/ND round trip on the pod's first packet) and the default route via it, on-link. IPv4 uses
/// [`GATEWAY_V4`]; IPv6 the host side's link-local address.
async fn add_pod_gateway(pod: &Handle, pod_index: u32, gw: IpAddr) -> Result<(), DatapathError> {
    let family = if gw.is_ipv4() { "IPv4" } else { "IPv6" };
    pod.neighbours()
        .add(pod_index, gw)
        .link_layer_address(&HOST_MAC)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl(format!(
            "adding the {family} gateway neighbour in the pod"
        )))?;
    let route = match gw {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gw)
            .output_interface(pod_index)
            .onlink()
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .gateway(gw)
            .output_interface(pod_index)
            .onlink()
            .build(),
    };
    pod.route()
        .add(route)
        .execute()
        .await
        .map_err(nl(format!("adding the {family} default route in the pod")))
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

fn route_query(family: AddressFamily) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m
}

fn host_route(addr: IpAddr, oif: u32) -> RouteMessage {
    match addr {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .output_interface(oif)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .priority(HOST_ROUTE_METRIC)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(oif)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .priority(HOST_ROUTE_METRIC)
            .build(),
    }
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

fn route_dst(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => route_addr(d),
        _ => None,
    })
}

fn route_gateway(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        _ => None,
    })
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_alias(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) if !n.is_empty() => Some(n.clone()),
        _ => None,
    })
}

fn link_mac(m: &LinkMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

fn link_mtu(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(v) => Some(*v),
        _ => None,
    })
}

fn is_veth(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4291 appendix A: the interface ID is the MAC with ff:fe in the middle and the
    /// universal/local bit inverted.
    #[test]
    fn host_link_local_is_the_eui64_address_of_host_mac() {
        let m = HOST_MAC;
        let id = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut octets = [0u8; 16];
        octets[0] = 0xfe;
        octets[1] = 0x80;
        octets[8..].copy_from_slice(&id);
        assert_eq!(HOST_LINK_LOCAL, Ipv6Addr::from(octets));
        assert!(is_link_local(&HOST_LINK_LOCAL));
    }

    #[test]
    fn host_ifname_is_stable_and_well_formed() {
        let a = host_ifname("default.web-0");
        assert_eq!(a, host_ifname("default.web-0"));
        assert_ne!(a, host_ifname("default.web-1"));
        assert_eq!(a.len(), 14);
        assert!(is_host_ifname(&a), "{a}");
        // Pinned: the name must not change between releases (veths survive agent upgrades).
        assert_eq!(host_ifname("default.web-0"), {
            let d = Sha256::digest(b"default.web-0");
            format!("tab{}", &format!("{d:x}")[..11])
        });
    }

    #[test]
    fn only_our_names_are_ours() {
        for (name, ours) in [
            ("tab0123456789a", true),
            ("tab0123456789", false),
            ("tab0123456789ab", false),
            ("tab0123456789A", false),
            ("tabby0", false),
            ("eth0", false),
            ("cali0123456789", false),
        ] {
            assert_eq!(is_host_ifname(name), ours, "{name}");
        }
    }

    fn link(index: u32, name: &str, mtu: u32, up: bool) -> HostLink {
        HostLink {
            index,
            name: name.into(),
            mtu,
            up,
            loopback: name == "lo",
        }
    }

    #[test]
    fn mtu_choice() {
        let links = vec![
            link(1, "lo", 65536, true),
            link(2, "eth0", 9000, true),
            link(3, "eth1", 1450, true),
            link(4, "eth2", 1280, false),
            link(5, "tab0123456789a", 1400, true),
        ];
        // (default-route interfaces, expected, why)
        for (oifs, want, why) in [
            (vec![2], 9000, "the default route's interface wins"),
            (vec![2, 3], 1450, "ECMP defaults: the smallest"),
            (
                vec![4],
                1450,
                "a down default interface is ignored; fall back",
            ),
            (
                vec![],
                1450,
                "no default route: smallest up non-pod, non-loopback",
            ),
        ] {
            assert_eq!(choose_mtu(&links, &oifs), want, "{why}");
        }
        assert_eq!(choose_mtu(&[link(1, "lo", 65536, true)], &[]), DEFAULT_MTU);
        assert_eq!(choose_mtu(&[], &[]), DEFAULT_MTU);
    }

    #[test]
    fn spec_validation() {
        let ok = PodSpec {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_ifname: host_ifname("a.b"),
            addresses: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            mtu: None,
        };
        assert!(ok.validate().is_ok());
        for (mutate, why) in [
            (
                Box::new(|s: &mut PodSpec| s.addresses.clear()) as Box<dyn Fn(&mut PodSpec)>,
                "no address",
            ),
            (
                Box::new(|s: &mut PodSpec| s.addresses.push("10.0.0.2".parse().unwrap())),
                "two IPv4",
            ),
            (
                Box::new(|s: &mut PodSpec| s.ifname = "a/b".into()),
                "bad pod ifname",
            ),
            (
                Box::new(|s: &mut PodSpec| s.host_ifname = "eth0".into()),
                "not our name",
            ),
        ] {
            let mut s = ok.clone();
            mutate(&mut s);
            assert!(
                matches!(s.validate(), Err(DatapathError::Invalid(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn result_of_an_attachment() {
        let a = Attachment {
            host_ifname: "tab0123456789a".into(),
            host_index: 7,
            pod_ifname: "eth0".into(),
            pod_mac: [2, 0, 0, 0, 0, 1],
            mtu: 1450,
            netns: "/run/netns/p".into(),
            addresses: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            gateway_v6: Some("fe80::ecee:eeff:feee:eeee".parse().unwrap()),
        };
        let v = a.cni_result().to_json(crate::spec::Version::V1_1_0);
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "tab0123456789a", "mac": "ee:ee:ee:ee:ee:ee"},
                    {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/run/netns/p"}
                ],
                "ips": [
                    {"interface": 1, "address": "10.0.0.5/32"},
                    {"interface": 1, "address": "fd00::5/128"}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}
                ]
            })
        );
    }

    #[test]
    fn errors_map_to_cni_codes() {
        assert_eq!(
            DatapathError::Invalid("x".into()).to_cni().code,
            ErrorCode::INVALID_NETWORK_CONFIG
        );
        assert_eq!(
            DatapathError::Check(vec!["a".into()]).to_cni().code,
            ErrorCode::CHECK_FAILED
        );
        assert_eq!(
            DatapathError::Conflict("x".into()).to_cni().code,
            ErrorCode::AGENT_FAILURE
        );
    }
}
