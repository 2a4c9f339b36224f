//! The plan in the speaker's own terms: [`PeerConfig`] per session, [`SpeakerConfig`] for the
//! node.
//!
//! Owns only the translation; the values come from [`super::plan`]. Must not call the speaker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tabby_api::v1alpha1::bgppeer::NextHopMode as CrdNextHopMode;
use tabby_bgp::rib::NextHopMode;
use tabby_bgp::speaker::{GracefulRestartSettings, MaxPrefixConfig, PeerConfig, SpeakerConfig};

use super::plan::{DesiredPeer, LocalSettings};

/// After a peer exceeded `maxPrefixes` (RFC 4486 Cease 1), the session starts again this
/// long after, so a transient leak heals without an operator; a persistent one costs one
/// attempt a minute.
pub const MAX_PREFIX_RESTART: Duration = Duration::from_secs(60);

/// The speaker's settings for this node; `None` without a router id (the plan reports why).
/// `restarting`: the agent started with its kernel routes in place (RFC 4724 R and F bits).
pub fn speaker_config(local: &LocalSettings, restarting: bool) -> Option<SpeakerConfig> {
    let router_id = local.router_id?;
    let mut cfg = SpeakerConfig::new(local.asn, router_id);
    cfg.cluster_id = local.cluster_id;
    // `[::]` is dual-stack on Linux (bindv6only=0) and takes IPv4 peers too; an IPv4-only
    // node may have IPv6 disabled, so it listens on 0.0.0.0.
    let any = if local.addresses.iter().any(IpAddr::is_ipv6) {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    cfg.listen = vec![SocketAddr::new(any, local.listen_port)];
    cfg.graceful_restart = Some(GracefulRestartSettings {
        restart_time: Duration::from_secs(local.graceful_restart_time.into()),
        restarting,
        ..GracefulRestartSettings::default()
    });
    Some(cfg)
}

/// One session as the speaker takes it.
pub fn peer_config(peer: &DesiredPeer) -> PeerConfig {
    let s = &peer.session;
    let mut c = PeerConfig::new(peer.address, s.remote_asn);
    c.local_asn = None; // the speaker runs this node's AS
    c.port = s.port;
    c.source = s.source;
    c.passive = s.passive;
    c.md5_password = s.md5_password.as_ref().map(|p| p.expose().to_string());
    c.ttl_security = s.ttl_security;
    c.hold_time = Duration::from_secs(s.hold_time.into());
    c.keepalive = s.keepalive.map(|k| Duration::from_secs(k.into()));
    if let Some(r) = s.connect_retry {
        c.connect_retry = Duration::from_secs(r.into());
    }
    // One family per session, the peer address's (see the plan's rules).
    c.ipv4_unicast = peer.address.is_ipv4();
    c.ipv6_unicast = peer.address.is_ipv6();
    c.graceful_restart = s.graceful_restart;
    c.route_reflector_client = s.route_reflector_client;
    c.next_hop_mode = match s.next_hop_mode {
        CrdNextHopMode::Auto => NextHopMode::Auto,
        CrdNextHopMode::SelfAddress => NextHopMode::SelfAddr,
        CrdNextHopMode::Keep => NextHopMode::Keep,
    };
    c.import_policy = Some(s.import_policy.clone());
    c.export_policy = Some(s.export_policy.clone());
    c.max_prefix = s.max_prefixes.map(|limit| MaxPrefixConfig {
        limit,
        restart_after: Some(MAX_PREFIX_RESTART),
    });
    c.description = Some(format!("{} {}", peer.kind, peer.source));
    c
}
