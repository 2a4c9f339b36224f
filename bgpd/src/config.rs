//! The `tabby-bgpd` configuration file: its TOML form and its validation into checked types.
//!
//! Owns the file format (documented in `bgpd/README.md`), the rules a config must satisfy and
//! the errors that name the offending field by path (`peers[2].hold_time: must be 0 or ≥ 3`).
//! Pure apart from [`Config::load`], which reads the file and any `password_file`. It must not
//! talk to the speaker: the daemon converts a checked [`Config`] into the speaker's types.
//!
//! Two stages: serde parses into `Raw*` structs (`deny_unknown_fields`, so a typo is an error
//! naming the key and its line), then [`Config::from_raw`] checks values and cross-references
//! and collects every problem, not only the first, so one edit-and-reload fixes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tabby_bgp::policy::{Policy, PolicyConfig};
use tabby_bgp::rib::prefix::Prefix;
use tabby_bgp::wire::{Community, LargeCommunity};

/// The BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;
/// AS_TRANS (RFC 6793 §9): never a real AS.
const AS_TRANS: u32 = 23456;
/// `TCP_MD5SIG_MAXKEYLEN` in Linux: longer keys are refused by the kernel.
const MD5_MAX_KEY_LEN: usize = 80;
/// RFC 4724 §3: the restart time is a 12-bit field.
const MAX_RESTART_TIME: u16 = 4095;

// ---------------------------------------------------------------------------------------------
// Errors.

/// One problem in the config: where (a field path) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    /// `peers[2].hold_time`, `originate[0].prefix`, `router_id`, …
    pub path: String,
    pub reason: String,
}

impl FieldError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Why a config was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key; the message names the key and its line.
    #[error("{0}")]
    Parse(String),
    /// Values that parse but are not valid; every problem found.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errs: &[FieldError]) -> String {
    let mut s = format!("{} error(s) in the config:", errs.len());
    for e in errs {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    s
}

impl ConfigError {
    /// The field errors, when the config parsed but did not validate.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(v) => v,
            _ => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) form.

/// The file as written. Field docs are the reference for `bgpd/README.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// Addresses to accept sessions on; empty = accept none (active-only peers).
    #[serde(default = "default_listen")]
    pub listen: Vec<IpAddr>,
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Largest ECMP set (1 = no multipath).
    #[serde(default = "default_max_paths")]
    pub max_paths: u16,
    /// LOCAL_PREF assumed for routes without one.
    #[serde(default = "default_local_pref")]
    pub default_local_pref: u32,
    #[serde(default)]
    pub graceful_restart: Option<RawGracefulRestart>,
    /// RFC 8654 extended messages offered to peers without their own `extended_message`.
    #[serde(default = "default_extended_message")]
    pub extended_message: bool,
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    #[serde(default)]
    pub originate: Vec<RawOriginate>,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

fn default_listen() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
}
fn default_port() -> u16 {
    BGP_PORT
}
fn default_extended_message() -> bool {
    true
}
fn default_max_paths() -> u16 {
    1
}
fn default_local_pref() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGracefulRestart {
    /// Seconds peers keep our routes while we restart (RFC 4724 §3, at most 4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// Seconds we keep a restarting peer's routes as stale, waiting for its End-of-RIB.
    #[serde(default = "default_stale_routes_time")]
    pub stale_routes_time: u32,
}

fn default_restart_time() -> u16 {
    120
}
fn default_stale_routes_time() -> u32 {
    360
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub address: IpAddr,
    pub remote_asn: u32,
    #[serde(default)]
    pub local_asn: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub source: Option<IpAddr>,
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub password: Option<String>,
    /// Read at load (and at every reload), relative to the config file's directory; one
    /// trailing newline is dropped.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// GTSM (RFC 5082): the peer is at most this many hops away (1 = directly connected).
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    #[serde(default)]
    pub keepalive: Option<u16>,
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u16,
    #[serde(default)]
    pub delay_open: Option<u16>,
    /// Default: the unicast family of the peer's address.
    #[serde(default)]
    pub families: Option<Vec<AfiSafi>>,
    /// RFC 8950: IPv4 unicast over this IPv6 session.
    #[serde(default)]
    pub extended_next_hop: bool,
    #[serde(default)]
    pub add_path: RawAddPath,
    /// RFC 8654 extended messages. Default: the top-level `extended_message`.
    #[serde(default)]
    pub extended_message: Option<bool>,
    /// Default: true when the top-level `[graceful_restart]` section is present.
    #[serde(default)]
    pub graceful_restart: Option<bool>,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    #[serde(default)]
    pub import_policy: Option<String>,
    #[serde(default)]
    pub export_policy: Option<String>,
    #[serde(default)]
    pub max_prefix: Option<RawMaxPrefix>,
}

fn default_hold_time() -> u16 {
    90
}
fn default_connect_retry() -> u16 {
    30
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAddPath {
    /// Families in which the peer may send several paths per prefix (RFC 7911).
    #[serde(default)]
    pub receive: Vec<AfiSafi>,
    /// Families in which we send the peer every exportable path of a prefix, each with its
    /// own path identifier, when it announces Receive for them (RFC 7911 §4); otherwise the
    /// best path only, as without the key.
    #[serde(default)]
    pub send: Vec<AfiSafi>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaxPrefix {
    pub limit: u32,
    /// Seconds after which a session stopped for too many prefixes starts again; absent =
    /// stays down until the next reload or restart.
    #[serde(default)]
    pub restart_after: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOriginate {
    pub prefix: String,
    /// Default: this router (the session's local address on export).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
    #[serde(default)]
    pub origin: OriginName,
    #[serde(default)]
    pub med: Option<u32>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub large_communities: Vec<String>,
}

/// Address families, as named in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfiSafi {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfiSafi::Ipv4Unicast => "ipv4-unicast",
            AfiSafi::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// How the next hop of routes sent to a peer is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextHopMode {
    /// RFC 4271 §5.1.3: self towards eBGP peers, unchanged towards iBGP peers.
    #[default]
    Auto,
    /// Always this router's address on the session.
    #[serde(rename = "self")]
    SelfAddr,
    /// Never rewritten (route servers, reflectors that must not be in the path).
    Keep,
}

/// ORIGIN of an originated prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginName {
    #[default]
    Igp,
    Egp,
    Incomplete,
}

// ---------------------------------------------------------------------------------------------
// Checked form.

/// A password that never shows up in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub cluster_id: Option<Ipv4Addr>,
    pub listen: Vec<SocketAddr>,
    pub max_paths: u16,
    pub default_local_pref: u32,
    pub graceful_restart: Option<GracefulRestart>,
    /// Keyed by the peer's address: at most one session per address.
    pub peers: BTreeMap<IpAddr, Peer>,
    pub originate: BTreeMap<Prefix, Originate>,
    /// Keyed by name; every policy compiled once during validation.
    pub policies: BTreeMap<String, PolicyConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    pub restart_time: u16,
    pub stale_routes_time: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub remote_asn: u32,
    pub local_asn: Option<u32>,
    pub description: Option<String>,
    pub port: u16,
    pub source: Option<IpAddr>,
    pub passive: bool,
    pub md5_password: Option<Secret>,
    pub ttl_security: Option<u8>,
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub connect_retry: u16,
    pub delay_open: Option<u16>,
    pub families: BTreeSet<AfiSafi>,
    pub extended_next_hop: bool,
    pub add_path_receive: BTreeSet<AfiSafi>,
    pub add_path_send: BTreeSet<AfiSafi>,
    /// RFC 8654, resolved: the peer's key, else the top-level one.
    pub extended_message: bool,
    pub graceful_restart: bool,
    pub route_reflector_client: bool,
    pub next_hop_mode: NextHopMode,
    pub import_policy: Option<String>,
    pub export_policy: Option<String>,
    pub max_prefix: Option<MaxPrefix>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefix {
    pub limit: u32,
    pub restart_after: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    pub prefix: Prefix,
    pub next_hop: Option<IpAddr>,
    pub origin: OriginName,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

impl Config {
    /// Reads and validates the file at `path`; `password_file`s are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses and validates TOML text; `base` resolves relative `password_file`s.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Config::from_raw(raw, base)
    }

    /// Validates a parsed file. Collects every error.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let mut errs = Vec::new();
        let e = &mut errs;

        if raw.router_id.is_unspecified() {
            // RFC 6286 §2.1: a non-zero identifier.
            e.push(FieldError::new("router_id", "must not be 0.0.0.0"));
        }
        check_asn(e, "asn", raw.asn);
        if raw.cluster_id.is_some_and(|c| c.is_unspecified()) {
            e.push(FieldError::new("cluster_id", "must not be 0.0.0.0"));
        }
        if raw.listen_port == 0 {
            e.push(FieldError::new("listen_port", "must be 1..=65535"));
        }
        let mut listen = Vec::new();
        for (i, a) in raw.listen.iter().enumerate() {
            let sa = SocketAddr::new(*a, raw.listen_port);
            if listen.contains(&sa) {
                e.push(FieldError::new(
                    format!("listen[{i}]"),
                    format!("{a} is listed twice"),
                ));
            } else {
                listen.push(sa);
            }
        }
        if raw.max_paths == 0 {
            e.push(FieldError::new(
                "max_paths",
                "must be ≥ 1 (1 disables multipath)",
            ));
        }
        let graceful_restart = raw.graceful_restart.as_ref().map(|g| {
            if g.restart_time > MAX_RESTART_TIME {
                e.push(FieldError::new(
                    "graceful_restart.restart_time",
                    format!("must be ≤ {MAX_RESTART_TIME} (a 12-bit field, RFC 4724 §3)"),
                ));
            }
            if g.stale_routes_time == 0 {
                e.push(FieldError::new(
                    "graceful_restart.stale_routes_time",
                    "must be ≥ 1",
                ));
            }
            GracefulRestart {
                restart_time: g.restart_time,
                stale_routes_time: g.stale_routes_time,
            }
        });

        // Policies first: peers refer to them by name.
        let mut policies = BTreeMap::new();
        let mut policy_index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, p) in raw.policies.iter().enumerate() {
            let path = format!("policies[{i}]");
            if let Some(first) = policy_index.get(p.name.as_str()) {
                e.push(FieldError::new(
                    format!("{path}.name"),
                    format!(
                        "duplicate policy name {:?} (first in policies[{first}])",
                        p.name
                    ),
                ));
                continue;
            }
            policy_index.insert(&p.name, i);
            if let Err(err) = Policy::from_config(p) {
                e.push(FieldError::new(
                    format!("{path} ({:?}) {}", err.policy, err.location),
                    err.reason,
                ));
            }
            policies.insert(p.name.clone(), p.clone());
        }

        let mut peers = BTreeMap::new();
        let mut peer_index: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (i, p) in raw.peers.iter().enumerate() {
            let path = format!("peers[{i}]");
            if let Some(first) = peer_index.get(&p.address) {
                e.push(FieldError::new(
                    format!("{path}.address"),
                    format!("{} is already configured in peers[{first}]", p.address),
                ));
                continue;
            }
            peer_index.insert(p.address, i);
            let mut peer = check_peer(
                e,
                &path,
                p,
                raw.asn,
                graceful_restart.is_some(),
                &policy_index,
                base,
            );
            peer.extended_message = p.extended_message.unwrap_or(raw.extended_message);
            // A passive peer must be able to reach a listener: an IPv4 listener takes only
            // IPv4 peers, an IPv6 one only IPv6 peers, except `::`, which takes both.
            let reachable = listen.iter().any(|l| match (l.ip(), p.address) {
                (IpAddr::V4(_), IpAddr::V4(_)) => true,
                (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified(),
                (IpAddr::V6(_), IpAddr::V6(_)) => true,
                (IpAddr::V4(_), IpAddr::V6(_)) => false,
            });
            if p.passive && !reachable {
                e.push(FieldError::new(
                    format!("{path}.passive"),
                    format!(
                        "no listen address accepts connections from {} (add one of its family, or \"::\")",
                        p.address
                    ),
                ));
            }
            peers.insert(p.address, peer);
        }

        let mut originate = BTreeMap::new();
        let mut orig_index: BTreeMap<Prefix, usize> = BTreeMap::new();
        for (i, o) in raw.originate.iter().enumerate() {
            let path = format!("originate[{i}]");
            let Some(o) = check_originate(e, &path, o) else {
                continue;
            };
            if let Some(first) = orig_index.get(&o.prefix) {
                e.push(FieldError::new(
                    format!("{path}.prefix"),
                    format!("{} is already originated in originate[{first}]", o.prefix),
                ));
                continue;
            }
            orig_index.insert(o.prefix, i);
            originate.insert(o.prefix, o);
        }

        if !errs.is_empty() {
            return Err(ConfigError::Invalid(errs));
        }
        Ok(Config {
            router_id: raw.router_id,
            asn: raw.asn,
            cluster_id: raw.cluster_id,
            listen,
            max_paths: raw.max_paths,
            default_local_pref: raw.default_local_pref,
            graceful_restart,
            peers,
            originate,
            policies,
        })
    }
}

impl Peer {
    /// This router's AS on the session (`local_asn`, else the global one).
    pub fn effective_local_asn(&self, global: u32) -> u32 {
        self.local_asn.unwrap_or(global)
    }

    pub fn is_ibgp(&self, global: u32) -> bool {
        self.remote_asn == self.effective_local_asn(global)
    }
}

fn check_asn(e: &mut Vec<FieldError>, path: &str, asn: u32) {
    if asn == 0 {
        // RFC 7607: AS 0 must not be used.
        e.push(FieldError::new(path, "must not be 0 (RFC 7607)"));
    } else if asn == AS_TRANS {
        e.push(FieldError::new(
            path,
            "must not be 23456, AS_TRANS (RFC 6793 §9)",
        ));
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn check_peer(
    e: &mut Vec<FieldError>,
    path: &str,
    p: &RawPeer,
    global_asn: u32,
    global_gr: bool,
    policies: &BTreeMap<&str, usize>,
    base: &Path,
) -> Peer {
    let f = |field: &str| format!("{path}.{field}");
    let a = p.address;
    if a.is_unspecified() || a.is_multicast() || a == IpAddr::V4(Ipv4Addr::BROADCAST) {
        e.push(FieldError::new(
            f("address"),
            format!("{a} is not a unicast address"),
        ));
    }
    check_asn(e, &f("remote_asn"), p.remote_asn);
    if let Some(l) = p.local_asn {
        check_asn(e, &f("local_asn"), l);
    }
    if p.port == 0 {
        e.push(FieldError::new(f("port"), "must be 1..=65535"));
    }
    if let Some(s) = p.source
        && !same_family(s, a)
    {
        e.push(FieldError::new(
            f("source"),
            format!("{s} is not the same address family as the peer address {a}"),
        ));
    }
    let md5_password = match (&p.password, &p.password_file) {
        (Some(_), Some(_)) => {
            e.push(FieldError::new(
                f("password_file"),
                "give either password or password_file, not both",
            ));
            None
        }
        (Some(pw), None) => check_password(e, &f("password"), pw.clone()),
        (None, Some(file)) => {
            let full = base.join(file);
            match std::fs::read_to_string(&full) {
                Ok(mut s) => {
                    if s.ends_with('\n') {
                        s.pop();
                        if s.ends_with('\r') {
                            s.pop();
                        }
                    }
                    check_password(e, &f("password_file"), s)
                }
                Err(err) => {
                    e.push(FieldError::new(
                        f("password_file"),
                        format!("cannot read {}: {err}", full.display()),
                    ));
                    None
                }
            }
        }
        (None, None) => None,
    };
    if let Some(t) = p.ttl_security
        && !(1..=254).contains(&t)
    {
        // RFC 5082 §3: the peer sends with TTL 255; we accept 256 - hops and up.
        e.push(FieldError::new(f("ttl_security"), "must be 1..=254 hops"));
    }
    if p.hold_time != 0 && p.hold_time < 3 {
        // RFC 4271 §4.2.
        e.push(FieldError::new(
            f("hold_time"),
            "must be 0 or ≥ 3 (RFC 4271 §4.2)",
        ));
    }
    if let Some(k) = p.keepalive {
        if p.hold_time == 0 && k != 0 {
            e.push(FieldError::new(
                f("keepalive"),
                "must be 0 when hold_time is 0",
            ));
        } else if p.hold_time != 0 && (k == 0 || k >= p.hold_time) {
            e.push(FieldError::new(
                f("keepalive"),
                format!("must be 1..{} (less than hold_time)", p.hold_time),
            ));
        }
    }
    if p.connect_retry == 0 {
        e.push(FieldError::new(f("connect_retry"), "must be ≥ 1 second"));
    }
    if p.delay_open == Some(0) {
        e.push(FieldError::new(
            f("delay_open"),
            "must be ≥ 1 second (omit it to disable)",
        ));
    }
    let families: BTreeSet<AfiSafi> = match &p.families {
        None => BTreeSet::from([if a.is_ipv4() {
            AfiSafi::Ipv4Unicast
        } else {
            AfiSafi::Ipv6Unicast
        }]),
        Some(list) => {
            let set: BTreeSet<AfiSafi> = list.iter().copied().collect();
            if set.is_empty() {
                e.push(FieldError::new(
                    f("families"),
                    "must name at least one family",
                ));
            } else if set.len() != list.len() {
                e.push(FieldError::new(f("families"), "lists a family twice"));
            }
            set
        }
    };
    if p.extended_next_hop {
        if a.is_ipv4() {
            e.push(FieldError::new(
                f("extended_next_hop"),
                "only for IPv6 sessions (IPv4 routes with IPv6 next hops, RFC 8950)",
            ));
        } else if !families.contains(&AfiSafi::Ipv4Unicast) {
            e.push(FieldError::new(
                f("extended_next_hop"),
                "needs ipv4-unicast in families",
            ));
        }
    }
    for (key, list) in [("receive", &p.add_path.receive), ("send", &p.add_path.send)] {
        for (j, fam) in list.iter().enumerate() {
            if !families.contains(fam) {
                e.push(FieldError::new(
                    format!("{path}.add_path.{key}[{j}]"),
                    format!("{fam} is not in the peer's families"),
                ));
            }
        }
    }
    let graceful_restart = match p.graceful_restart {
        Some(true) if !global_gr => {
            e.push(FieldError::new(
                f("graceful_restart"),
                "needs the top-level [graceful_restart] section (restart time)",
            ));
            false
        }
        Some(v) => v,
        None => global_gr,
    };
    let local = p.local_asn.unwrap_or(global_asn);
    if p.route_reflector_client && p.remote_asn != local {
        e.push(FieldError::new(
            f("route_reflector_client"),
            format!(
                "only iBGP peers can be clients (remote_asn {} ≠ local AS {local}, RFC 4456 §2)",
                p.remote_asn
            ),
        ));
    }
    for (field, name) in [
        ("import_policy", &p.import_policy),
        ("export_policy", &p.export_policy),
    ] {
        if let Some(n) = name
            && !policies.contains_key(n.as_str())
        {
            e.push(FieldError::new(f(field), format!("no policy named {n:?}")));
        }
    }
    let max_prefix = p.max_prefix.as_ref().map(|m| {
        if m.limit == 0 {
            e.push(FieldError::new(f("max_prefix.limit"), "must be ≥ 1"));
        }
        if m.restart_after == Some(0) {
            e.push(FieldError::new(
                f("max_prefix.restart_after"),
                "must be ≥ 1 second (omit it to stay down)",
            ));
        }
        MaxPrefix {
            limit: m.limit,
            restart_after: m.restart_after,
        }
    });
    Peer {
        address: a,
        remote_asn: p.remote_asn,
        local_asn: p.local_asn,
        description: p.description.clone(),
        port: p.port,
        source: p.source,
        passive: p.passive,
        md5_password,
        ttl_security: p.ttl_security,
        hold_time: p.hold_time,
        keepalive: p.keepalive,
        connect_retry: p.connect_retry,
        delay_open: p.delay_open,
        families,
        extended_next_hop: p.extended_next_hop,
        add_path_receive: p.add_path.receive.iter().copied().collect(),
        add_path_send: p.add_path.send.iter().copied().collect(),
        extended_message: p.extended_message.unwrap_or_else(default_extended_message),
        graceful_restart,
        route_reflector_client: p.route_reflector_client,
        next_hop_mode: p.next_hop_mode,
        import_policy: p.import_policy.clone(),
        export_policy: p.export_policy.clone(),
        max_prefix,
    }
}

fn check_password(e: &mut Vec<FieldError>, path: &str, pw: String) -> Option<Secret> {
    if pw.is_empty() {
        e.push(FieldError::new(path, "the password is empty"));
        None
    } else if pw.len() > MD5_MAX_KEY_LEN {
        e.push(FieldError::new(
            path,
            format!(
                "the password is {} bytes; TCP MD5 keys are at most {MD5_MAX_KEY_LEN}",
                pw.len()
            ),
        ));
        None
    } else {
        Some(Secret(pw))
    }
}

pub use tabby_bgp::policy::{parse_community, parse_large_community, parse_prefix};

fn check_originate(e: &mut Vec<FieldError>, path: &str, o: &RawOriginate) -> Option<Originate> {
    let prefix = match parse_prefix(&o.prefix) {
        Ok(p) => p,
        Err(err) => {
            e.push(FieldError::new(format!("{path}.prefix"), err));
            return None;
        }
    };
    if let Some(nh) = o.next_hop {
        let v4 = matches!(prefix, Prefix::V4(_));
        if nh.is_ipv4() != v4 {
            e.push(FieldError::new(
                format!("{path}.next_hop"),
                format!("{nh} is not the same address family as {prefix}"),
            ));
        }
        if nh.is_unspecified() || nh.is_multicast() {
            e.push(FieldError::new(
                format!("{path}.next_hop"),
                format!("{nh} is not a unicast address (omit it for this router)"),
            ));
        }
    }
    let mut communities = Vec::new();
    for (j, c) in o.communities.iter().enumerate() {
        match parse_community(c) {
            Ok(c) => communities.push(c),
            Err(err) => e.push(FieldError::new(format!("{path}.communities[{j}]"), err)),
        }
    }
    let mut large_communities = Vec::new();
    for (j, c) in o.large_communities.iter().enumerate() {
        match parse_large_community(c) {
            Ok(c) => large_communities.push(c),
            Err(err) => e.push(FieldError::new(
                format!("{path}.large_communities[{j}]"),
                err,
            )),
        }
    }
    // Canonical order, as the RIB stores them (RFC 1997 §4: order carries no meaning), so a
    // reordered list in a reload is not a change.
    communities.sort_unstable();
    communities.dedup();
    large_communities.sort_unstable();
    large_communities.dedup();
    Some(Originate {
        prefix,
        next_hop: o.next_hop,
        origin: o.origin,
        med: o.med,
        local_pref: o.local_pref,
        communities,
        large_communities,
    })
}
