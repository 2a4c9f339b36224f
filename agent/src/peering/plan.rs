//! The peering plan: from the cluster's objects to the set of BGP sessions this node wants.
//!
//! Owns the rules that decide who peers with whom and with which options (mesh, global and
//! node-specific BGPPeers, `peerSelector` peers, route-reflector clients, which side
//! initiates) and the per-peer problems in words. Pure: no I/O, no clock; the caller gathers
//! the objects and applies the result (see [`super::diff`]).
//!
//! Rules (see `docs/architecture.md`, "Agent: BGP configuration from the cluster"):
//! - Sessions are per address family: a node's IPv4 address peers with IPv4 addresses and
//!   carries IPv4 unicast; IPv6 likewise. One session per peer address.
//! - Mesh (`nodeToNodeMeshEnabled`): every other node, every family both nodes have.
//! - A BGPPeer applies to this node when `node` names it or `nodeSelector` matches its
//!   labels. An empty `nodeSelector` makes it *global*, anything else *node*-specific.
//! - Sessions between two nodes (mesh, `peerSelector`, or a `peerIP` that is a node's
//!   address) are *cluster* sessions: both ends listen on `listenPort`, and only the end with
//!   the lower address connects; the other is passive, so the two never collide (RFC 4271
//!   §6.8 would resolve a collision, but only after both connections were made).
//! - When several sources configure one address, the most specific wins: BGPPeer by `node`
//!   name, then by `nodeSelector`, then global, then the mesh; ties go to the BGPPeer whose
//!   name sorts first. A BGPPeer shadowed with different settings is reported.
//! - A node with a route-reflector cluster id treats node peers from BGPPeers as clients when
//!   their cluster id differs (Calico's rule); `routeReflectorClient` asks for it explicitly.
//!   Two reflectors of one cluster are never each other's clients (RFC 4456 §7).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Node, Secret};
use tabby_api::selector::Selector;
use tabby_api::v1alpha1::bgppeer::{NextHopMode, PrefixMatch, SourceAddress};
use tabby_api::v1alpha1::{BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec};
use tabby_bgp::session::socket::MD5_MAX_KEY_LEN;

use super::node::NodeInfo;

/// The port external routers listen on (RFC 4271 §8.2.1); BGPPeer has no port field.
pub const BGP_PORT: u16 = 179;

/// ConnectRetry (seconds) of sessions between nodes. Only the lower address connects, so a
/// node that starts after its mesh peers is reached only when their retry timer fires; the
/// speaker's 30 s default would keep a joining node out of the mesh that long. A refused
/// connection on the node network costs one RST. A BGPPeer's `connectRetryTime` still wins.
pub const CLUSTER_CONNECT_RETRY: u16 = 3;

/// Policy names the agent installs. Shared ones are constants; a BGPPeer with filters gets its
/// own (see [`bgppeer_policy_name`]).
pub const CLUSTER_IMPORT: &str = "tabby-cluster-import";
pub const CLUSTER_EXPORT: &str = "tabby-cluster-export";
pub const EXTERNAL_IMPORT: &str = "tabby-external-import";
pub const EXTERNAL_EXPORT: &str = "tabby-external-export";

/// `tabby-bgppeer-<name>-import` / `-export`: BGPPeer names are DNS subdomains, so the name
/// is unique and stable.
pub fn bgppeer_policy_name(bgppeer: &str, direction: Direction) -> String {
    format!("tabby-bgppeer-{bgppeer}-{direction}")
}

/// Why a session exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// The node-to-node mesh.
    Mesh,
    /// A BGPPeer for every node.
    Global,
    /// A BGPPeer for this node by name or selector.
    Node,
}

impl From<PeerKind> for tabby_api::v1alpha1::nodenetworkstatus::PeerType {
    /// The session's type as NodeNetworkStatus shows it.
    fn from(k: PeerKind) -> Self {
        use tabby_api::v1alpha1::nodenetworkstatus::PeerType;
        match k {
            PeerKind::Mesh => PeerType::NodeMesh,
            PeerKind::Global => PeerType::GlobalPeer,
            PeerKind::Node => PeerType::NodePeer,
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerKind::Mesh => "mesh",
            PeerKind::Global => "global",
            PeerKind::Node => "node",
        })
    }
}

/// The object a session (or a problem) comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The mesh, towards this node.
    Mesh { node: String },
    /// A BGPPeer; `node` is the remote node when the peer is one.
    BgpPeer { name: String, node: Option<String> },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Mesh { node } => write!(f, "mesh (node {node})"),
            Source::BgpPeer { name, node: None } => write!(f, "BGPPeer {name}"),
            Source::BgpPeer {
                name,
                node: Some(n),
            } => write!(f, "BGPPeer {name} (node {n})"),
        }
    }
}

/// An object a problem is about, for NodeNetworkStatus and Events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `Node`, `BGPPeer`, `BGPConfiguration`, `IPPool`, `IPAMBlock`.
    pub kind: &'static str,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &'static str, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            name: name.into(),
        }
    }
}

/// Something from the cluster that could not be applied. `peer`, when set, names the session
/// that was left out (or, for a shadowed BGPPeer, that it did not configure); every other
/// session is unaffected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub object: ObjectRef,
    pub peer: Option<IpAddr>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.object.kind, self.object.name)?;
        if let Some(p) = self.peer {
            write!(f, ", peer {p}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A TCP MD5 key; `Debug` never prints it, so plans can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Policy direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Import,
    Export,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Import => "import",
            Direction::Export => "export",
        })
    }
}

/// Whether the far end is another node of this cluster or a router outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyClass {
    Cluster,
    External,
}

/// What a policy must say; [`crate::export`] renders it with the pools and own blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    pub class: PolicyClass,
    pub direction: Direction,
    /// The BGPPeer's rules in order (first match decides); empty for the shared policies.
    pub filters: Vec<PrefixMatch>,
}

/// Everything the speaker needs to run one session. Two equal values mean "nothing to do".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    pub remote_asn: u32,
    /// This node's AS (the speaker's AS).
    pub local_asn: u32,
    pub port: u16,
    pub source: Option<IpAddr>,
    /// Wait for the peer to connect (cluster sessions, higher address).
    pub passive: bool,
    pub md5_password: Option<Password>,
    pub ttl_security: Option<u8>,
    /// Seconds; 0 means no keepalives (RFC 4271 §4.2).
    pub hold_time: u16,
    /// Seconds; `None`: a third of the hold time.
    pub keepalive: Option<u16>,
    /// Seconds; `None`: the speaker's default.
    pub connect_retry: Option<u16>,
    /// Graceful restart (RFC 4724) with every peer, so restarts lose no packets.
    pub graceful_restart: bool,
    pub route_reflector_client: bool,
    pub next_hop_mode: NextHopMode,
    pub max_prefixes: Option<u32>,
    pub import_policy: String,
    pub export_policy: String,
}

impl SessionSettings {
    /// Names of the fields that differ, for messages.
    pub fn differing_fields(&self, other: &SessionSettings) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, differ: bool| {
            if differ {
                out.push(name);
            }
        };
        check("asNumber", self.remote_asn != other.remote_asn);
        check("localAS", self.local_asn != other.local_asn);
        check("port", self.port != other.port);
        check("sourceAddress", self.source != other.source);
        check("passive", self.passive != other.passive);
        check("password", self.md5_password != other.md5_password);
        check("ttlSecurity", self.ttl_security != other.ttl_security);
        check("timers.holdTime", self.hold_time != other.hold_time);
        check("timers.keepaliveTime", self.keepalive != other.keepalive);
        check(
            "timers.connectRetryTime",
            self.connect_retry != other.connect_retry,
        );
        check(
            "gracefulRestart",
            self.graceful_restart != other.graceful_restart,
        );
        check(
            "routeReflectorClient",
            self.route_reflector_client != other.route_reflector_client,
        );
        check("nextHopMode", self.next_hop_mode != other.next_hop_mode);
        check("maxPrefixes", self.max_prefixes != other.max_prefixes);
        check("importFilters", self.import_policy != other.import_policy);
        check("exportFilters", self.export_policy != other.export_policy);
        out
    }
}

/// One session this node wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    pub address: IpAddr,
    pub kind: PeerKind,
    pub source: Source,
    /// Other sources that configure the same address with the same settings (or the mesh,
    /// which an explicit BGPPeer overrides).
    pub also: Vec<Source>,
    pub session: SessionSettings,
}

/// Speaker-wide settings for this node. A change here means restarting the speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    pub node: String,
    pub asn: u32,
    /// `None` when the node has neither an IPv4 address nor a router-id annotation: the
    /// speaker cannot start, and a problem says so.
    pub router_id: Option<Ipv4Addr>,
    pub cluster_id: Option<Ipv4Addr>,
    pub listen_port: u16,
    pub graceful_restart_time: u16,
    pub addresses: Vec<IpAddr>,
}

/// The result: sessions keyed by peer address, the policies they name, and what was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub local: LocalSettings,
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    pub policies: BTreeMap<String, PolicySpec>,
    pub problems: Vec<Problem>,
}

/// The objects the plan is computed from, as the watches last saw them.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub node_name: &'a str,
    pub nodes: &'a [Node],
    /// The `default` BGPConfiguration; `None`: every default.
    pub configuration: Option<&'a BGPConfiguration>,
    pub peers: &'a [BGPPeer],
    /// Secrets of the namespace the agent runs in (where BGPPeer passwords live).
    pub secrets: &'a [Secret],
    pub secret_namespace: &'a str,
    /// Addresses configured on this node's interfaces; `None`: not known, not checked.
    pub local_addresses: Option<&'a [IpAddr]>,
}

/// Why no plan could be made at all (the previous plan stays in force).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("node {0:?} is not among the cluster's Nodes")]
    NodeNotFound(String),
    #[error("BGPConfiguration default is invalid: {0}")]
    InvalidConfiguration(String),
}

/// A session some source asks for, before precedence is applied.
struct Candidate {
    address: IpAddr,
    kind: PeerKind,
    /// Lower wins: (specificity, BGPPeer name).
    rank: (u8, String),
    source: Source,
    session: SessionSettings,
    policies: [(String, PolicySpec); 2],
}

/// Computes the plan. Problems with one object or one peer leave everything else planned.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let mut problems = Vec::new();
    let config = match input.configuration {
        Some(c) => {
            c.spec.validate().map_err(|e| {
                PlanError::InvalidConfiguration(
                    e.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            c.spec.clone()
        }
        None => BGPConfigurationSpec::default(),
    };

    let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
    for n in input.nodes {
        let (info, node_problems) = NodeInfo::from_node(n);
        for p in node_problems {
            problems.push(Problem {
                object: ObjectRef::new("Node", p.node.clone()),
                peer: None,
                reason: format!("annotation {}={:?}: {}", p.annotation, p.value, p.reason),
            });
        }
        if let Some(info) = info {
            nodes.insert(info.name.clone(), info);
        }
    }
    let me = nodes
        .get(input.node_name)
        .cloned()
        .ok_or_else(|| PlanError::NodeNotFound(input.node_name.to_string()))?;
    let my_asn = me.asn_or(config.as_number);
    let router_id = me.router_id.or(me.ipv4);
    if router_id.is_none() {
        problems.push(Problem {
            object: ObjectRef::new("Node", &me.name),
            peer: None,
            reason: format!(
                "has no IPv4 address and no {} annotation: BGP needs a router id",
                super::node::ROUTER_ID_ANNOTATION
            ),
        });
    }
    if me.ipv4.is_none() && me.ipv6.is_none() {
        problems.push(Problem {
            object: ObjectRef::new("Node", &me.name),
            peer: None,
            reason: "has no IPv4 or IPv6 address (no InternalIP, no address annotation): \
                     no session can be planned"
                .into(),
        });
    }

    // Address → the other node that has it; a duplicate address is reported and the node
    // whose name sorts first keeps it.
    let mut node_by_address: BTreeMap<IpAddr, &NodeInfo> = BTreeMap::new();
    for n in nodes.values().filter(|n| n.name != me.name) {
        for a in n.addresses() {
            if me.addresses().any(|m| m == a) {
                problems.push(Problem {
                    object: ObjectRef::new("Node", &n.name),
                    peer: Some(a),
                    reason: format!("has address {a}, which is also node {}'s", me.name),
                });
                continue;
            }
            match node_by_address.get(&a) {
                Some(first) => problems.push(Problem {
                    object: ObjectRef::new("Node", &n.name),
                    peer: Some(a),
                    reason: format!("has address {a}, which is also node {}'s", first.name),
                }),
                None => {
                    node_by_address.insert(a, n);
                }
            }
        }
    }

    let ctx = Ctx {
        input,
        config: &config,
        me: &me,
        my_asn,
    };
    let mut candidates = Vec::new();

    if config.node_to_node_mesh_enabled {
        // An address of this Node that no interface has cannot source any mesh session of
        // its family: one problem on this Node, not one per peer.
        let mut unusable = BTreeSet::new();
        for mine in me.addresses() {
            if let Err(reason) = ctx.check_source(mine) {
                problems.push(Problem {
                    object: ObjectRef::new("Node", &me.name),
                    peer: None,
                    reason: format!(
                        "{reason}: no {} mesh sessions",
                        if mine.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                });
                unusable.insert(mine);
            }
        }
        for (&address, n) in &node_by_address {
            let Some(mine) = me.address_like(address) else {
                continue;
            };
            if unusable.contains(&mine) {
                continue;
            }
            let mut session = ctx.base_session(address, n.asn_or(config.as_number), true);
            session.source = Some(mine);
            candidates.push(Candidate {
                address,
                kind: PeerKind::Mesh,
                rank: (3, n.name.clone()),
                source: Source::Mesh {
                    node: n.name.clone(),
                },
                session,
                policies: shared_policies(PolicyClass::Cluster),
            });
        }
    }

    let mut bgppeers: Vec<&BGPPeer> = input.peers.iter().collect();
    bgppeers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for bp in bgppeers {
        let Some(name) = bp.metadata.name.clone() else {
            continue;
        };
        let object = ObjectRef::new("BGPPeer", &name);
        if let Err(e) = bp.validate() {
            problems.push(Problem {
                object,
                peer: None,
                reason: format!(
                    "invalid, ignored: {}",
                    e.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
            continue;
        }
        let spec = &bp.spec;
        let (applies, kind, specificity) = match (&spec.node, &spec.node_selector) {
            (Some(n), _) => (*n == me.name, PeerKind::Node, 0),
            (None, sel) => {
                // Validated above, so parsing cannot fail here; treat a failure as "no".
                match Selector::parse_optional(sel.as_ref(), "spec.nodeSelector") {
                    Ok(s) if s == Selector::everything() => (true, PeerKind::Global, 2),
                    Ok(s) => (s.matches(&me.labels), PeerKind::Node, 1),
                    Err(_) => (false, PeerKind::Node, 1),
                }
            }
        };
        if !applies {
            continue;
        }
        let filters = match parse_filters(spec) {
            Ok(f) => f,
            Err(reason) => {
                problems.push(Problem {
                    object,
                    peer: None,
                    reason,
                });
                continue;
            }
        };

        // The far ends: (address, remote node if any).
        let mut targets: Vec<(IpAddr, Option<&NodeInfo>)> = Vec::new();
        if let Some(ip) = &spec.peer_ip {
            let Ok(address) = ip.parse::<IpAddr>() else {
                continue;
            };
            if me.addresses().any(|m| m == address) {
                problems.push(Problem {
                    object,
                    peer: Some(address),
                    reason: format!("{address} is this node's own address"),
                });
                continue;
            }
            targets.push((address, node_by_address.get(&address).copied()));
        } else if let Ok(sel) =
            Selector::parse_optional(spec.peer_selector.as_ref(), "spec.peerSelector")
        {
            for (&address, n) in &node_by_address {
                if sel.matches(&n.labels) && me.address_like(address).is_some() {
                    targets.push((address, Some(*n)));
                }
            }
        }

        for (address, remote_node) in targets {
            let source = Source::BgpPeer {
                name: name.clone(),
                node: remote_node.map(|n| n.name.clone()),
            };
            match ctx.bgppeer_session(spec, &name, address, remote_node, &filters) {
                Ok((session, policies)) => candidates.push(Candidate {
                    address,
                    kind,
                    rank: (specificity, name.clone()),
                    source,
                    session,
                    policies,
                }),
                Err(reason) => problems.push(Problem {
                    object: object.clone(),
                    peer: Some(address),
                    reason,
                }),
            }
        }
    }

    // Precedence per address.
    let mut by_address: BTreeMap<IpAddr, Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        by_address.entry(c.address).or_default().push(c);
    }
    let mut peers = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for (address, mut cs) in by_address {
        cs.sort_by(|a, b| a.rank.cmp(&b.rank));
        let mut it = cs.into_iter();
        let Some(winner) = it.next() else { continue };
        let mut also = Vec::new();
        for loser in it {
            let fields = winner.session.differing_fields(&loser.session);
            if let (Source::BgpPeer { name, .. }, false) = (&loser.source, fields.is_empty()) {
                problems.push(Problem {
                    object: ObjectRef::new("BGPPeer", name),
                    peer: Some(address),
                    reason: format!(
                        "also configures this peer, with different {}; {} takes precedence",
                        fields.join(", "),
                        winner.source
                    ),
                });
            } else {
                also.push(loser.source);
            }
        }
        for (name, spec) in winner.policies {
            policies.insert(name, spec);
        }
        peers.insert(
            address,
            DesiredPeer {
                address,
                kind: winner.kind,
                source: winner.source,
                also,
                session: winner.session,
            },
        );
    }

    problems.sort();
    problems.dedup();
    Ok(Plan {
        local: LocalSettings {
            node: me.name.clone(),
            asn: my_asn,
            router_id,
            cluster_id: me.cluster_id,
            listen_port: config.listen_port,
            graceful_restart_time: config.graceful_restart_time,
            addresses: me.addresses().collect(),
        },
        peers,
        policies,
        problems,
    })
}

fn shared_policies(class: PolicyClass) -> [(String, PolicySpec); 2] {
    let (import, export) = match class {
        PolicyClass::Cluster => (CLUSTER_IMPORT, CLUSTER_EXPORT),
        PolicyClass::External => (EXTERNAL_IMPORT, EXTERNAL_EXPORT),
    };
    [
        (
            import.to_string(),
            PolicySpec {
                class,
                direction: Direction::Import,
                filters: Vec::new(),
            },
        ),
        (
            export.to_string(),
            PolicySpec {
                class,
                direction: Direction::Export,
                filters: Vec::new(),
            },
        ),
    ]
}

struct Filters {
    import: Vec<PrefixMatch>,
    export: Vec<PrefixMatch>,
}

fn parse_filters(spec: &BGPPeerSpec) -> Result<Filters, String> {
    let parse = |rules: &[tabby_api::v1alpha1::bgppeer::PrefixFilterRule], field: &str| {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.parse(&format!("spec.{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    };
    Ok(Filters {
        import: parse(&spec.import_filters, "importFilters")?,
        export: parse(&spec.export_filters, "exportFilters")?,
    })
}

struct Ctx<'a> {
    input: &'a PlanInput<'a>,
    config: &'a BGPConfigurationSpec,
    me: &'a NodeInfo,
    my_asn: u32,
}

impl Ctx<'_> {
    /// Defaults shared by every session; `cluster`: the far end is a node.
    fn base_session(&self, address: IpAddr, remote_asn: u32, cluster: bool) -> SessionSettings {
        let (port, passive) = if cluster {
            // Lower address initiates; both ends compute the same answer.
            let passive = self.me.address_like(address).is_some_and(|m| m > address);
            (self.config.listen_port, passive)
        } else {
            (BGP_PORT, false)
        };
        let (import_policy, export_policy) = if cluster {
            (CLUSTER_IMPORT, CLUSTER_EXPORT)
        } else {
            (EXTERNAL_IMPORT, EXTERNAL_EXPORT)
        };
        SessionSettings {
            remote_asn,
            local_asn: self.my_asn,
            port,
            source: None,
            passive,
            md5_password: None,
            ttl_security: None,
            hold_time: self.config.hold_time,
            keepalive: keepalive_or_default(self.config.hold_time, self.config.keepalive_time),
            connect_retry: cluster.then_some(CLUSTER_CONNECT_RETRY),
            graceful_restart: true,
            route_reflector_client: false,
            next_hop_mode: NextHopMode::Auto,
            max_prefixes: None,
            import_policy: import_policy.into(),
            export_policy: export_policy.into(),
        }
    }

    fn check_source(&self, source: IpAddr) -> Result<(), String> {
        match self.input.local_addresses {
            Some(local) if !local.contains(&source) => Err(format!(
                "source address {source} is not configured on any interface of this node"
            )),
            _ => Ok(()),
        }
    }

    fn bgppeer_session(
        &self,
        spec: &BGPPeerSpec,
        name: &str,
        address: IpAddr,
        remote_node: Option<&NodeInfo>,
        filters: &Filters,
    ) -> Result<(SessionSettings, [(String, PolicySpec); 2]), String> {
        let remote_asn = match (remote_node, spec.as_number) {
            (Some(n), Some(asn)) if asn != n.asn_or(self.config.as_number) => {
                return Err(format!(
                    "asNumber {asn} conflicts with node {}'s AS {} (the AS its agent runs{})",
                    n.name,
                    n.asn_or(self.config.as_number),
                    if self.config.node_to_node_mesh_enabled {
                        ", and the mesh uses"
                    } else {
                        ""
                    }
                ));
            }
            (Some(n), _) => n.asn_or(self.config.as_number),
            (None, Some(asn)) => asn,
            // Validation requires asNumber with peerIP; a peerSelector always has a node.
            (None, None) => self.config.as_number,
        };
        let cluster = remote_node.is_some();
        let mut s = self.base_session(address, remote_asn, cluster);

        s.source = match spec.source_address {
            SourceAddress::UseNodeIP => {
                let Some(mine) = self.me.address_like(address) else {
                    return Err(format!(
                        "sourceAddress UseNodeIP: node {} has no {} address",
                        self.me.name,
                        if address.is_ipv4() { "IPv4" } else { "IPv6" }
                    ));
                };
                self.check_source(mine)?;
                Some(mine)
            }
            SourceAddress::None => None,
        };

        if let Some(r) = &spec.password {
            s.md5_password = Some(self.password(&r.name, &r.key)?);
        }
        s.ttl_security = spec.ttl_security;
        s.max_prefixes = spec.max_prefixes;
        s.next_hop_mode = spec.next_hop_mode;

        if let Some(t) = &spec.timers {
            if let Some(h) = t.hold_time {
                s.hold_time = h;
                // A third of the new hold time unless the peer sets keepalive too.
                s.keepalive = None;
            }
            if let Some(k) = t.keepalive_time {
                s.keepalive = keepalive_or_default(s.hold_time, k);
            }
            s.connect_retry = t.connect_retry_time;
        }
        if s.hold_time == 0 {
            s.keepalive = None;
        } else if let Some(k) = s.keepalive
            && k >= s.hold_time
        {
            return Err(format!(
                "keepalive time {k} s is not below the hold time {} s (RFC 4271 §4.4)",
                s.hold_time
            ));
        }

        // Route reflection (RFC 4456): explicit, or Calico's cluster-id rule for node peers.
        let same_cluster = matches!(
            (self.me.cluster_id, remote_node.and_then(|n| n.cluster_id)),
            (Some(a), Some(b)) if a == b
        );
        let by_cluster_id = self.me.cluster_id.is_some() && remote_node.is_some();
        s.route_reflector_client = (spec.route_reflector_client || by_cluster_id) && !same_cluster;
        if s.route_reflector_client && remote_asn != self.my_asn {
            return Err(format!(
                "routeReflectorClient: AS {remote_asn} is not this node's AS {}; an eBGP peer \
                 cannot be a route-reflector client (RFC 4456 §2)",
                self.my_asn
            ));
        }

        let class = if cluster {
            PolicyClass::Cluster
        } else {
            PolicyClass::External
        };
        let [mut import, mut export] = shared_policies(class);
        if !filters.import.is_empty() {
            import = (
                bgppeer_policy_name(name, Direction::Import),
                PolicySpec {
                    class,
                    direction: Direction::Import,
                    filters: filters.import.clone(),
                },
            );
        }
        if !filters.export.is_empty() {
            export = (
                bgppeer_policy_name(name, Direction::Export),
                PolicySpec {
                    class,
                    direction: Direction::Export,
                    filters: filters.export.clone(),
                },
            );
        }
        s.import_policy = import.0.clone();
        s.export_policy = export.0.clone();
        Ok((s, [import, export]))
    }

    fn password(&self, secret: &str, key: &str) -> Result<Password, String> {
        let ns = self.input.secret_namespace;
        let Some(obj) = self
            .input
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(secret))
        else {
            return Err(format!(
                "password: Secret {ns}/{secret} does not exist (or the agent cannot read it)"
            ));
        };
        let Some(bytes) = obj.data.as_ref().and_then(|d| d.get(key)) else {
            let keys: BTreeSet<&str> = obj
                .data
                .iter()
                .flat_map(|d| d.keys().map(String::as_str))
                .collect();
            return Err(format!(
                "password: Secret {ns}/{secret} has no key {key:?} (it has: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.into_iter().collect::<Vec<_>>().join(", ")
                }
            ));
        };
        let text = std::str::from_utf8(&bytes.0)
            .map_err(|_| format!("password: Secret {ns}/{secret} key {key:?} is not UTF-8 text"))?;
        // A trailing newline from `kubectl create secret --from-file` is never meant.
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() || text.len() > MD5_MAX_KEY_LEN {
            return Err(format!(
                "password: Secret {ns}/{secret} key {key:?} is {} octets; TCP MD5 keys are \
                 1-{MD5_MAX_KEY_LEN} octets (RFC 2385, Linux TCP_MD5SIG_MAXKEYLEN)",
                text.len()
            ));
        }
        Ok(Password(text.to_string()))
    }
}

/// RFC 4271 §4.4: keepalive 0 with a hold time means "the default" (a third) here, since the
/// speaker sends keepalives whenever the hold time is non-zero.
fn keepalive_or_default(hold: u16, keepalive: u16) -> Option<u16> {
    (hold != 0 && keepalive != 0).then_some(keepalive)
}
