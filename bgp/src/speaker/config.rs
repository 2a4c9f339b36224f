//! The speaker's configuration in plain, serde-friendly types, and the pure functions that turn
//! it into what the layers below take: [`LocalConfig`] for the OPEN, [`FsmConfig`] for the
//! state machine, [`TcpOptions`] for the socket. Also [`classify_change`]: what changing one
//! peer's configuration requires (nothing, a live update, a route refresh, or a reset of that
//! peer only). No I/O and no state: the speaker loop owns both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsm::FsmConfig;
use crate::negotiate::{GracefulRestartConfig, LocalConfig};
use crate::rib::{BestPathConfig, NextHopMode, PeerType};
use crate::session::socket::{BGP_PORT, MD5_MAX_KEY_LEN, TcpOptions};
use crate::wire::{AddPathMode, Afi, Asn, Family};

/// Graceful restart (RFC 4724) as this speaker does it, for every peer that enables it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestartSettings {
    /// Restart Time we announce: how long peers keep our routes while we restart (≤ 4095 s).
    pub restart_time: Duration,
    /// How long we keep a restarting peer's routes as stale after its session came back, if
    /// its End-of-RIB never arrives (RFC 4724 §4.2 "a locally configurable time").
    pub stale_routes_time: Duration,
    /// This process has just restarted with the kernel's routes in place: announce the
    /// Restart State (R) bit and Forwarding State (F) bit for every family (RFC 4724 §3).
    pub restarting: bool,
}

impl Default for GracefulRestartSettings {
    fn default() -> Self {
        GracefulRestartSettings {
            restart_time: Duration::from_secs(120),
            stale_routes_time: Duration::from_secs(360),
            restarting: false,
        }
    }
}

/// One speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Route-reflection cluster id (RFC 4456 §7); the router id when `None`.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// Addresses to accept BGP connections on (e.g. `[::]:179`). Empty: outgoing only.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub best_path: BestPathConfig,
    /// `None`: graceful restart is not announced to anyone.
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestartSettings>,
    /// RFC 8654 extended messages (up to 65535 octets) offered to peers without their own
    /// [`PeerConfig::extended_message`].
    #[serde(default = "yes")]
    pub extended_message: bool,
}

impl SpeakerConfig {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            asn,
            router_id,
            cluster_id: None,
            listen: Vec::new(),
            best_path: BestPathConfig::default(),
            graceful_restart: None,
            extended_message: true,
        }
    }
}

/// RFC 7911 ADD-PATH per family: receive several paths per prefix from the peer, and send it
/// every exportable path of a prefix (each with its own path identifier) instead of the best
/// one alone. Sending is used only when the peer announced Receive for the family (§4); it
/// costs a sent list per prefix in that peer's update group (see `docs/architecture.md`).
/// All off by default. A change is a capability change: only this peer's session resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddPathConfig {
    pub ipv4_receive: bool,
    pub ipv6_receive: bool,
    pub ipv4_send: bool,
    pub ipv6_send: bool,
}

impl AddPathConfig {
    /// The capability mode to announce for one family, `None` for neither direction.
    pub fn mode(receive: bool, send: bool) -> Option<AddPathMode> {
        match (receive, send) {
            (true, true) => Some(AddPathMode::BOTH),
            (true, false) => Some(AddPathMode::RECEIVE),
            (false, true) => Some(AddPathMode::SEND),
            (false, false) => None,
        }
    }
}

/// Max-prefix (RFC 4486 §4): more than `limit` routes accepted from the peer ends the session
/// with Cease / Maximum Number of Prefixes Reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrefixConfig {
    pub limit: u32,
    /// Start the session again after this long; `None`: stay down until the peer is
    /// reconfigured (`update_peer` with a different limit) or re-added.
    #[serde(default)]
    pub restart_after: Option<Duration>,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's address: identifies the peer (one session per address).
    pub address: IpAddr,
    pub remote_asn: u32,
    /// Our AS in the OPEN to this peer; the speaker's AS when `None`. Only the OPEN and the
    /// iBGP/eBGP decision use it: AS_PATHs are built with the speaker's AS.
    #[serde(default)]
    pub local_asn: Option<u32>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Source address for outgoing connections (also this router's next hop to the peer).
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Never connect out; wait for the peer.
    #[serde(default)]
    pub passive: bool,
    /// TCP MD5 signature key (RFC 2385).
    #[serde(default)]
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default = "default_hold")]
    pub hold_time: Duration,
    /// `None`: a third of the hold time.
    #[serde(default)]
    pub keepalive: Option<Duration>,
    #[serde(default = "default_connect_retry")]
    pub connect_retry: Duration,
    #[serde(default)]
    pub delay_open: Option<Duration>,
    #[serde(default = "yes")]
    pub ipv4_unicast: bool,
    #[serde(default)]
    pub ipv6_unicast: bool,
    /// RFC 8950: IPv4 routes with IPv6 next hops.
    #[serde(default)]
    pub extended_next_hop: bool,
    #[serde(default)]
    pub add_path: AddPathConfig,
    /// RFC 8654 extended messages; `None`: [`SpeakerConfig::extended_message`].
    #[serde(default)]
    pub extended_message: Option<bool>,
    /// Announce graceful restart to this peer (needs [`SpeakerConfig::graceful_restart`]).
    #[serde(default = "yes")]
    pub graceful_restart: bool,
    /// The peer is a route-reflector client of ours (iBGP only, RFC 4456).
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    /// Names of policies given with `set_policy`; `None`: the RFC 8212 default.
    #[serde(default)]
    pub import_policy: Option<String>,
    #[serde(default)]
    pub export_policy: Option<String>,
    #[serde(default)]
    pub max_prefix: Option<MaxPrefixConfig>,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_port() -> u16 {
    BGP_PORT
}
fn default_hold() -> Duration {
    Duration::from_secs(90)
}
fn default_connect_retry() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}

impl PeerConfig {
    /// A peer with defaults: port 179, hold 90 s, IPv4 unicast, graceful restart, no policy.
    pub fn new(address: IpAddr, remote_asn: u32) -> PeerConfig {
        PeerConfig {
            address,
            remote_asn,
            local_asn: None,
            port: BGP_PORT,
            source: None,
            passive: false,
            md5_password: None,
            ttl_security: None,
            hold_time: default_hold(),
            keepalive: None,
            connect_retry: default_connect_retry(),
            delay_open: None,
            ipv4_unicast: true,
            ipv6_unicast: false,
            extended_next_hop: false,
            add_path: AddPathConfig::default(),
            extended_message: None,
            graceful_restart: true,
            route_reflector_client: false,
            next_hop_mode: NextHopMode::Auto,
            import_policy: None,
            export_policy: None,
            max_prefix: None,
            description: None,
        }
    }

    /// Our AS on this session.
    pub fn local_asn(&self, speaker: &SpeakerConfig) -> u32 {
        self.local_asn.unwrap_or(speaker.asn)
    }

    /// The session type as policy and the propagation rules see it.
    pub fn peer_type(&self, speaker: &SpeakerConfig) -> PeerType {
        if self.remote_asn != self.local_asn(speaker) {
            PeerType::Ebgp
        } else if self.route_reflector_client {
            PeerType::RrClient
        } else {
            PeerType::Ibgp
        }
    }

    pub fn families(&self) -> BTreeSet<Family> {
        let mut f = BTreeSet::new();
        if self.ipv4_unicast {
            f.insert(Family::IPV4_UNICAST);
        }
        if self.ipv6_unicast {
            f.insert(Family::IPV6_UNICAST);
        }
        f
    }

    /// Checks what the types cannot: every problem names the field.
    pub fn validate(&self, speaker: &SpeakerConfig) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: String| {
            Err(ConfigError {
                peer: Some(self.address),
                field,
                reason,
            })
        };
        if self.address.is_unspecified() || self.address.is_multicast() {
            return err(
                "address",
                format!("{} is not a unicast address", self.address),
            );
        }
        if self.remote_asn == 0 || self.remote_asn == Asn::TRANS.0 {
            return err(
                "remote_asn",
                format!("{} is reserved (RFC 7607, RFC 6793)", self.remote_asn),
            );
        }
        if let Some(a) = self.local_asn
            && (a == 0 || a == Asn::TRANS.0)
        {
            return err("local_asn", format!("{a} is reserved"));
        }
        if self.port == 0 {
            return err("port", "0 is not a port".into());
        }
        let hold = self.hold_time.as_secs();
        if hold != 0 && hold < 3 || hold > u64::from(u16::MAX) {
            return err(
                "hold_time",
                format!("{hold} s: must be 0 or 3..=65535 (RFC 4271 §4.2)"),
            );
        }
        if let Some(k) = self.keepalive {
            if k.as_secs() == 0 || k.as_secs() > u64::from(u16::MAX) {
                return err("keepalive", format!("{} s: must be 1..=65535", k.as_secs()));
            }
            if hold != 0 && k.as_secs() >= hold {
                return err(
                    "keepalive",
                    format!("{} s is not below the hold time {hold} s", k.as_secs()),
                );
            }
        }
        if self.connect_retry.is_zero() {
            return err("connect_retry", "must be positive".into());
        }
        if let Some(p) = &self.md5_password
            && (p.is_empty() || p.len() > MD5_MAX_KEY_LEN)
        {
            return err(
                "md5_password",
                format!("{} octets: must be 1..={MD5_MAX_KEY_LEN}", p.len()),
            );
        }
        if let Some(t) = self.ttl_security
            && !(1..=254).contains(&t)
        {
            return err("ttl_security", format!("{t}: must be 1..=254 hops"));
        }
        if !self.ipv4_unicast && !self.ipv6_unicast {
            return err(
                "ipv4_unicast",
                "neither IPv4 nor IPv6 unicast is enabled".into(),
            );
        }
        if self.route_reflector_client && self.peer_type(speaker) == PeerType::Ebgp {
            return err(
                "route_reflector_client",
                "an eBGP peer cannot be a route-reflector client (RFC 4456 §2)".into(),
            );
        }
        if let Some(m) = &self.max_prefix
            && m.limit == 0
        {
            return err("max_prefix.limit", "must be at least 1".into());
        }
        if let Some(s) = self.source
            && s.is_ipv4() != self.address.is_ipv4()
        {
            return err(
                "source",
                format!("{s} is not the address family of {}", self.address),
            );
        }
        Ok(())
    }

    /// What we offer in the OPEN.
    pub fn local_config(&self, speaker: &SpeakerConfig) -> LocalConfig {
        let mut l = LocalConfig::new(
            Asn(self.local_asn(speaker)),
            speaker.router_id,
            Some(Asn(self.remote_asn)),
        );
        l.hold_time = u16::try_from(self.hold_time.as_secs()).unwrap_or(u16::MAX);
        l.keepalive = self
            .keepalive
            .map(|k| u16::try_from(k.as_secs()).unwrap_or(u16::MAX));
        l.families = self.families();
        l.route_refresh = true;
        l.enhanced_route_refresh = true;
        l.extended_message = self.extended_message.unwrap_or(speaker.extended_message);
        if self.extended_next_hop {
            l.extended_next_hop = BTreeSet::from([(Family::IPV4_UNICAST, Afi::IPV6)]);
        }
        let mut add_path = BTreeMap::new();
        let ap = &self.add_path;
        if let Some(mode) = AddPathConfig::mode(ap.ipv4_receive, ap.ipv4_send)
            && self.ipv4_unicast
        {
            add_path.insert(Family::IPV4_UNICAST, mode);
        }
        if let Some(mode) = AddPathConfig::mode(ap.ipv6_receive, ap.ipv6_send)
            && self.ipv6_unicast
        {
            add_path.insert(Family::IPV6_UNICAST, mode);
        }
        l.add_path = add_path;
        // RFC 4724 §3 End-of-RIB-only capability when graceful restart is off (see
        // `LocalConfig::end_of_rib_capability`): FRR applies our ROUTE-REFRESH only after
        // its End-of-RIB, which it sends only to peers with the capability.
        l.end_of_rib_capability = true;
        if let (true, Some(gr)) = (self.graceful_restart, &speaker.graceful_restart) {
            l.graceful_restart = Some(GracefulRestartConfig {
                restart_time: u16::try_from(gr.restart_time.as_secs().min(4095)).unwrap_or(4095),
                restarting: gr.restarting,
                forwarding_preserved: if gr.restarting {
                    self.families()
                } else {
                    BTreeSet::new()
                },
                notification: true,
            });
        }
        l
    }

    /// State-machine options.
    pub fn fsm_config(&self) -> FsmConfig {
        FsmConfig {
            connect_retry_time: self.connect_retry,
            passive: self.passive,
            delay_open: self.delay_open,
            ..FsmConfig::default()
        }
    }

    /// Socket options.
    pub fn tcp_options(&self) -> TcpOptions {
        TcpOptions {
            source: self.source,
            md5_key: self.md5_password.as_ref().map(|p| p.as_bytes().to_vec()),
            ttl_security: self.ttl_security,
            // Directly connected eBGP by default is not assumed: multihop is the common case
            // for route servers and reflectors; GTSM is the knob for the other.
            ttl: None,
            ..TcpOptions::default()
        }
    }
}

/// A configuration value that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {reason}", peer.map(|p| format!("peer {p}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub peer: Option<IpAddr>,
    pub field: &'static str,
    pub reason: String,
}

/// What a change to one peer's configuration requires, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerChange {
    /// Nothing that matters to the session changed.
    Unchanged,
    /// Applied to the running session (description, max-prefix, export side).
    AppliedLive,
    /// The import side changed: the peer is asked to resend its routes (ROUTE-REFRESH).
    Refresh,
    /// Something negotiated in the OPEN or the transport changed: this peer's session is
    /// restarted (Cease / Other Configuration Change), no other.
    Reset,
}

/// Compares two configurations of the same peer. Pure; the speaker loop acts on the answer.
/// `Refresh` is what the import side needs; the loop turns it into a reset when the peer did not
/// negotiate route refresh.
pub fn classify_change(old: &PeerConfig, new: &PeerConfig) -> PeerChange {
    if old == new {
        return PeerChange::Unchanged;
    }
    let transport = old.address != new.address
        || old.remote_asn != new.remote_asn
        || old.local_asn != new.local_asn
        || old.port != new.port
        || old.source != new.source
        || old.passive != new.passive
        || old.md5_password != new.md5_password
        || old.ttl_security != new.ttl_security
        || old.hold_time != new.hold_time
        || old.keepalive != new.keepalive
        || old.connect_retry != new.connect_retry
        || old.delay_open != new.delay_open
        || old.ipv4_unicast != new.ipv4_unicast
        || old.ipv6_unicast != new.ipv6_unicast
        || old.extended_next_hop != new.extended_next_hop
        || old.add_path != new.add_path
        // A capability: only a new OPEN exchange changes it.
        || old.extended_message != new.extended_message
        || old.graceful_restart != new.graceful_restart
        // The peer type decides loop checks and the import fix-ups of routes already held.
        || old.route_reflector_client != new.route_reflector_client;
    if transport {
        return PeerChange::Reset;
    }
    if old.import_policy != new.import_policy {
        return PeerChange::Refresh;
    }
    PeerChange::AppliedLive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker() -> SpeakerConfig {
        SpeakerConfig::new(65000, Ipv4Addr::new(10, 0, 0, 1))
    }

    fn peer() -> PeerConfig {
        PeerConfig::new("192.0.2.2".parse().unwrap(), 65001)
    }

    #[test]
    fn change_classification_table() {
        type Edit = fn(&mut PeerConfig);
        let cases: &[(&str, Edit, PeerChange)] = &[
            ("identical", |_| {}, PeerChange::Unchanged),
            (
                "description only",
                |p| p.description = Some("tor-1".into()),
                PeerChange::AppliedLive,
            ),
            (
                "export policy: re-advertised live",
                |p| p.export_policy = Some("out".into()),
                PeerChange::AppliedLive,
            ),
            (
                "next-hop mode: export side",
                |p| p.next_hop_mode = NextHopMode::SelfAddr,
                PeerChange::AppliedLive,
            ),
            (
                "max-prefix: counted live",
                |p| {
                    p.max_prefix = Some(MaxPrefixConfig {
                        limit: 10,
                        restart_after: None,
                    })
                },
                PeerChange::AppliedLive,
            ),
            (
                "import policy: route refresh",
                |p| p.import_policy = Some("in".into()),
                PeerChange::Refresh,
            ),
            (
                "hold time: in the OPEN",
                |p| p.hold_time = Duration::from_secs(30),
                PeerChange::Reset,
            ),
            (
                "families: in the OPEN",
                |p| p.ipv6_unicast = true,
                PeerChange::Reset,
            ),
            (
                "MD5 key: transport",
                |p| p.md5_password = Some("x".into()),
                PeerChange::Reset,
            ),
            ("remote AS", |p| p.remote_asn = 65002, PeerChange::Reset),
            (
                "ADD-PATH send: a capability (RFC 7911)",
                |p| p.add_path.ipv4_send = true,
                PeerChange::Reset,
            ),
            (
                "extended messages: a capability (RFC 8654)",
                |p| p.extended_message = Some(false),
                PeerChange::Reset,
            ),
            (
                "import and hold: the stronger wins",
                |p| {
                    p.import_policy = Some("in".into());
                    p.hold_time = Duration::from_secs(30);
                },
                PeerChange::Reset,
            ),
        ];
        for (name, edit, want) in cases {
            let old = peer();
            let mut new = old.clone();
            edit(&mut new);
            assert_eq!(classify_change(&old, &new), *want, "{name}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        type Edit = fn(&mut PeerConfig);
        let cases: &[(Edit, &str)] = &[
            (|p| p.remote_asn = 0, "remote_asn"),
            (|p| p.remote_asn = 23456, "remote_asn"),
            (|p| p.hold_time = Duration::from_secs(2), "hold_time"),
            (|p| p.keepalive = Some(Duration::from_secs(90)), "keepalive"),
            (|p| p.md5_password = Some("x".repeat(81)), "md5_password"),
            (|p| p.ttl_security = Some(0), "ttl_security"),
            (|p| p.ipv4_unicast = false, "ipv4_unicast"),
            (
                |p| p.route_reflector_client = true,
                "route_reflector_client",
            ),
            (
                |p| p.source = Some("2001:db8::1".parse().unwrap()),
                "source",
            ),
            (
                |p| {
                    p.max_prefix = Some(MaxPrefixConfig {
                        limit: 0,
                        restart_after: None,
                    })
                },
                "max_prefix.limit",
            ),
        ];
        assert_eq!(peer().validate(&speaker()), Ok(()));
        for (edit, field) in cases {
            let mut p = peer();
            edit(&mut p);
            let e = p.validate(&speaker()).expect_err(field);
            assert_eq!(e.field, *field, "{e}");
            assert!(e.to_string().starts_with("peer 192.0.2.2: "), "{e}");
        }
    }

    #[test]
    fn open_offers_what_the_peer_config_says() {
        let mut s = speaker();
        s.graceful_restart = Some(GracefulRestartSettings {
            restarting: true,
            ..GracefulRestartSettings::default()
        });
        let mut p = peer();
        p.ipv6_unicast = true;
        p.extended_next_hop = true;
        p.add_path.ipv4_receive = true;
        p.hold_time = Duration::from_secs(9);
        let l = p.local_config(&s);
        assert_eq!(l.hold_time, 9);
        assert_eq!(l.families.len(), 2);
        assert!(
            l.extended_next_hop
                .contains(&(Family::IPV4_UNICAST, Afi::IPV6))
        );
        assert_eq!(
            l.add_path.get(&Family::IPV4_UNICAST),
            Some(&AddPathMode::RECEIVE)
        );
        // Send alone, both, and send for a family the peer does not carry (not offered).
        p.add_path.ipv6_send = true;
        assert_eq!(
            p.local_config(&s).add_path.get(&Family::IPV6_UNICAST),
            Some(&AddPathMode::SEND)
        );
        p.add_path.ipv4_send = true;
        assert_eq!(
            p.local_config(&s).add_path.get(&Family::IPV4_UNICAST),
            Some(&AddPathMode::BOTH)
        );
        p.ipv6_unicast = false;
        assert_eq!(p.local_config(&s).add_path.get(&Family::IPV6_UNICAST), None);
        p.ipv6_unicast = true;
        p.add_path = AddPathConfig::default();
        let gr = l.graceful_restart.expect("graceful restart offered");
        assert!(gr.restarting && gr.notification);
        assert_eq!(gr.forwarding_preserved.len(), 2);
        // Disabled per peer: not offered even though the speaker does it.
        p.graceful_restart = false;
        assert!(p.local_config(&s).graceful_restart.is_none());
        assert_eq!(p.peer_type(&s), PeerType::Ebgp);
        p.remote_asn = 65000;
        assert_eq!(p.peer_type(&s), PeerType::Ibgp);
        p.route_reflector_client = true;
        assert_eq!(p.peer_type(&s), PeerType::RrClient);
    }
}
