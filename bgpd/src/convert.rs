//! Checked config → the speaker's types ([`SpeakerConfig`], [`PeerConfig`], originated
//! [`PathAttrs`]). Pure and total: validation already happened in [`crate::config`], so every
//! value here fits. It must not decide policy or talk to the speaker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tabby_bgp::rib::{BestPathConfig, NextHop, NextHopMode as RibNextHopMode, PathAttrs, Prefix};
use tabby_bgp::speaker::{
    AddPathConfig, GracefulRestartSettings, MaxPrefixConfig, PeerConfig, SpeakerConfig,
};
use tabby_bgp::wire::Origin;

use crate::config::{AfiSafi, Config, NextHopMode, OriginName, Originate, Peer};

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// The speaker's global settings. `restarting`: this process is coming back from a restart
/// with forwarding state kept (RFC 4724 §3 R and F bits).
pub fn speaker_config(cfg: &Config, restarting: bool) -> SpeakerConfig {
    let mut s = SpeakerConfig::new(cfg.asn, cfg.router_id);
    s.cluster_id = cfg.cluster_id;
    s.listen = cfg.listen.clone();
    s.best_path = BestPathConfig {
        default_local_pref: cfg.default_local_pref,
        max_paths: usize::from(cfg.max_paths),
    };
    s.graceful_restart = cfg.graceful_restart.map(|g| GracefulRestartSettings {
        restart_time: secs(g.restart_time),
        stale_routes_time: Duration::from_secs(u64::from(g.stale_routes_time)),
        restarting,
    });
    s
}

/// One peer as the speaker takes it.
pub fn peer_config(p: &Peer) -> PeerConfig {
    let mut c = PeerConfig::new(p.address, p.remote_asn);
    c.local_asn = p.local_asn;
    c.port = p.port;
    c.source = p.source;
    c.passive = p.passive;
    c.md5_password = p.md5_password.as_ref().map(|s| s.expose().to_string());
    c.ttl_security = p.ttl_security;
    c.hold_time = secs(p.hold_time);
    c.keepalive = p.keepalive.map(secs);
    c.connect_retry = secs(p.connect_retry);
    c.delay_open = p.delay_open.map(secs);
    c.ipv4_unicast = p.families.contains(&AfiSafi::Ipv4Unicast);
    c.ipv6_unicast = p.families.contains(&AfiSafi::Ipv6Unicast);
    c.extended_next_hop = p.extended_next_hop;
    c.extended_message = Some(p.extended_message);
    c.add_path = AddPathConfig {
        ipv4_receive: p.add_path_receive.contains(&AfiSafi::Ipv4Unicast),
        ipv6_receive: p.add_path_receive.contains(&AfiSafi::Ipv6Unicast),
        ipv4_send: p.add_path_send.contains(&AfiSafi::Ipv4Unicast),
        ipv6_send: p.add_path_send.contains(&AfiSafi::Ipv6Unicast),
    };
    c.graceful_restart = p.graceful_restart;
    c.route_reflector_client = p.route_reflector_client;
    c.next_hop_mode = match p.next_hop_mode {
        NextHopMode::Auto => RibNextHopMode::Auto,
        NextHopMode::SelfAddr => RibNextHopMode::SelfAddr,
        NextHopMode::Keep => RibNextHopMode::Keep,
    };
    c.import_policy = p.import_policy.clone();
    c.export_policy = p.export_policy.clone();
    c.max_prefix = p.max_prefix.map(|m| MaxPrefixConfig {
        limit: m.limit,
        restart_after: m.restart_after.map(|s| Duration::from_secs(u64::from(s))),
    });
    c.description = p.description.clone();
    c
}

/// The attributes of an originated prefix. Without a configured next hop it is the
/// unspecified address: "this router", rewritten to the session address on export.
pub fn originate_attrs(o: &Originate) -> (Prefix, PathAttrs) {
    let nh = o.next_hop.unwrap_or(match o.prefix {
        Prefix::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Prefix::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let mut a = PathAttrs::new(NextHop::from_addr(nh));
    a.origin = match o.origin {
        OriginName::Igp => Origin::Igp,
        OriginName::Egp => Origin::Egp,
        OriginName::Incomplete => Origin::Incomplete,
    };
    a.med = o.med;
    a.local_pref = o.local_pref;
    a.communities = o.communities.clone();
    a.large_communities = o.large_communities.clone();
    a.canonicalize();
    (o.prefix, a)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TEXT: &str = r#"
router_id = "192.0.2.1"
asn = 65001
listen = ["127.0.0.1"]
listen_port = 1179
max_paths = 4
[graceful_restart]
restart_time = 90
stale_routes_time = 200
[[peers]]
address = "2001:db8::2"
remote_asn = 65001
local_asn = 65009
port = 1790
source = "2001:db8::1"
password = "pw"
ttl_security = 2
hold_time = 9
keepalive = 3
connect_retry = 5
delay_open = 2
families = ["ipv4-unicast", "ipv6-unicast"]
extended_next_hop = true
add_path = { receive = ["ipv6-unicast"], send = ["ipv4-unicast"] }
graceful_restart = false
next_hop_mode = "self"
import_policy = "p"
max_prefix = { limit = 7, restart_after = 30 }
description = "d"
[[originate]]
prefix = "10.0.0.0/8"
origin = "incomplete"
med = 3
communities = ["1:2"]
[[originate]]
prefix = "2001:db8:1::/48"
next_hop = "2001:db8::9"
[[policies]]
name = "p"
"#;

    #[test]
    fn every_field_reaches_the_speaker() {
        let cfg = Config::parse(TEXT, Path::new(".")).unwrap();
        let s = speaker_config(&cfg, true);
        assert_eq!(s.listen, vec!["127.0.0.1:1179".parse().unwrap()]);
        assert_eq!(s.best_path.max_paths, 4);
        let gr = s.graceful_restart.unwrap();
        assert_eq!(gr.restart_time, Duration::from_secs(90));
        assert_eq!(gr.stale_routes_time, Duration::from_secs(200));
        assert!(gr.restarting);
        assert!(
            !speaker_config(&cfg, false)
                .graceful_restart
                .unwrap()
                .restarting
        );

        let p = peer_config(cfg.peers.values().next().unwrap());
        let s = speaker_config(&cfg, false);
        p.validate(&s).unwrap();
        assert_eq!(p.local_asn, Some(65009));
        assert_eq!(p.port, 1790);
        assert_eq!(p.md5_password.as_deref(), Some("pw"));
        assert_eq!(p.ttl_security, Some(2));
        assert_eq!(p.hold_time, Duration::from_secs(9));
        assert_eq!(p.keepalive, Some(Duration::from_secs(3)));
        assert_eq!(p.connect_retry, Duration::from_secs(5));
        assert_eq!(p.delay_open, Some(Duration::from_secs(2)));
        assert!(p.ipv4_unicast && p.ipv6_unicast && p.extended_next_hop);
        assert!(!p.add_path.ipv4_receive && p.add_path.ipv6_receive);
        assert!(p.add_path.ipv4_send && !p.add_path.ipv6_send);
        assert!(!p.graceful_restart);
        assert_eq!(p.next_hop_mode, RibNextHopMode::SelfAddr);
        assert_eq!(p.import_policy.as_deref(), Some("p"));
        assert_eq!(p.export_policy, None);
        let m = p.max_prefix.unwrap();
        assert_eq!(
            (m.limit, m.restart_after),
            (7, Some(Duration::from_secs(30)))
        );
        assert_eq!(p.description.as_deref(), Some("d"));

        let mut origs = cfg.originate.values().map(originate_attrs);
        let (p4, a4) = origs.next().unwrap();
        assert_eq!(p4.to_string(), "10.0.0.0/8");
        assert!(a4.next_hop.is_unspecified());
        assert_eq!((a4.origin, a4.med), (Origin::Incomplete, Some(3)));
        assert_eq!(a4.communities.len(), 1);
        let (_, a6) = origs.next().unwrap();
        assert_eq!(a6.next_hop.addr(), "2001:db8::9".parse::<IpAddr>().unwrap());
    }
}
