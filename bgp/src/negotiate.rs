//! Capability negotiation: what a session may do, computed once from both OPENs and our config.
//!
//! Owns the OPEN checks of RFC 4271 §6.2 that need local configuration (peer AS, BGP identifier,
//! hold time, required capabilities, RFC 9234 roles) and the [`Negotiated`] result that the rest of
//! the speaker consults. Pure: no I/O, no clock. It never touches the wire codec's internals; it
//! reads decoded [`Open`]s and yields the codec's [`DecodeContext`] for each direction.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::wire::capability::code;
use crate::wire::error::OpenSubcode;
use crate::wire::{
    AddPathEntry, AddPathMode, Afi, Asn, BgpRole, Capability, DecodeContext, ExtendedNextHopEntry,
    Family, GracefulRestart, GracefulRestartFamily, LlgrFamily, MessageError, Open,
};

/// RFC 4271 §10: the suggested hold time.
pub const DEFAULT_HOLD_TIME: u16 = 90;

/// Graceful restart as we offer it (RFC 4724 §3, N bit RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes while we restart (12 bits, clamped to 4095).
    pub restart_time: u16,
    /// R bit: we are restarting (set in the first OPEN after a restart).
    pub restarting: bool,
    /// Families for which we preserved forwarding state across the restart (F bit).
    pub forwarding_preserved: BTreeSet<Family>,
    /// N bit (RFC 8538): NOTIFICATIONs other than Hard Reset keep graceful restart.
    pub notification: bool,
}

/// What we offer and require in our OPEN. One per peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub asn: Asn,
    pub bgp_id: Ipv4Addr,
    /// The peer's AS we expect; `None` accepts any (RFC 4271 §6.2 Bad Peer AS otherwise).
    pub peer_asn: Option<Asn>,
    /// Our hold time proposal (0 or ≥ 3 seconds).
    pub hold_time: u16,
    /// Keepalive interval; `None` means hold time / 3 (RFC 4271 §10).
    pub keepalive: Option<u16>,
    /// The smallest hold time we accept from the peer other than 0; OPENs with a smaller non-zero
    /// hold time get "Unacceptable Hold Time". RFC 4271 only forbids 1 and 2.
    pub min_hold_time: u16,
    /// Multiprotocol families we offer (RFC 4760). Always sent as capabilities.
    pub families: BTreeSet<Family>,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// RFC 8950: NLRI family → next-hop AFIs we accept (e.g. IPv4 unicast over IPv6).
    pub extended_next_hop: BTreeSet<(Family, Afi)>,
    pub extended_message: bool,
    /// RFC 7911 per family.
    pub add_path: BTreeMap<Family, AddPathMode>,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Without `graceful_restart`: still send the Graceful Restart capability, with no
    /// <AFI, SAFI> and Restart Time 0 (RFC 4724 §3: we send End-of-RIB after the initial
    /// update, nothing more). Some speakers (FRR 8.4) send End-of-RIB only to peers with the
    /// capability and ignore ROUTE-REFRESH until they have sent it. It asks the peer for no
    /// helper work: R bit clear, no families whose routes it could keep. It does not make us
    /// a helper either: that takes `graceful_restart`.
    pub end_of_rib_capability: bool,
    /// RFC 9494: families and their long-lived stale time in seconds.
    pub llgr: BTreeMap<Family, u32>,
    /// RFC 9234 role, only sent on eBGP sessions.
    pub role: Option<BgpRole>,
    /// RFC 9234 §4.2 strict mode: the peer must announce a role.
    pub strict_role: bool,
    /// Capability codes the peer must announce, else "Unsupported Capability" (RFC 5492 §5).
    pub required_capabilities: BTreeSet<u8>,
}

impl LocalConfig {
    /// A config with RFC defaults: IPv4 unicast, route refresh, 4-octet AS, hold 90 s.
    pub fn new(asn: Asn, bgp_id: Ipv4Addr, peer_asn: Option<Asn>) -> LocalConfig {
        LocalConfig {
            asn,
            bgp_id,
            peer_asn,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive: None,
            min_hold_time: 3,
            families: BTreeSet::from([Family::IPV4_UNICAST]),
            route_refresh: true,
            enhanced_route_refresh: false,
            extended_next_hop: BTreeSet::new(),
            extended_message: false,
            add_path: BTreeMap::new(),
            graceful_restart: None,
            end_of_rib_capability: false,
            llgr: BTreeMap::new(),
            role: None,
            strict_role: false,
            required_capabilities: BTreeSet::new(),
        }
    }

    fn ebgp(&self) -> bool {
        self.peer_asn.is_some_and(|p| p != self.asn)
    }

    /// Our OPEN. 4-octet AS (RFC 6793) is always offered; the 2-octet field carries AS_TRANS
    /// when our AS does not fit.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        if self.route_refresh {
            caps.push(Capability::RouteRefresh);
        }
        if self.enhanced_route_refresh {
            caps.push(Capability::EnhancedRouteRefresh);
        }
        if !self.extended_next_hop.is_empty() {
            caps.push(Capability::ExtendedNextHop(
                self.extended_next_hop
                    .iter()
                    .map(|(f, nh)| ExtendedNextHopEntry {
                        nlri_afi: f.afi,
                        nlri_safi: f.safi,
                        next_hop_afi: *nh,
                    })
                    .collect(),
            ));
        }
        if self.extended_message {
            caps.push(Capability::ExtendedMessage);
        }
        if let Some(role) = self.role
            && self.ebgp()
        {
            caps.push(Capability::Role(role));
        }
        if let Some(gr) = &self.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: gr.restarting,
                notification: gr.notification,
                reserved_flags: 0,
                restart_time: gr.restart_time.min(4095),
                families: self
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        afi: f.afi,
                        safi: f.safi,
                        forwarding_state: gr.forwarding_preserved.contains(f),
                        reserved_flags: 0,
                    })
                    .collect(),
            }));
        } else if self.end_of_rib_capability {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: false,
                reserved_flags: 0,
                restart_time: 0,
                families: Vec::new(),
            }));
        }
        caps.push(Capability::FourOctetAs(self.asn));
        if !self.add_path.is_empty() {
            caps.push(Capability::AddPath(
                self.add_path
                    .iter()
                    .map(|(f, mode)| AddPathEntry {
                        afi: f.afi,
                        safi: f.safi,
                        mode: *mode,
                    })
                    .collect(),
            ));
        }
        if !self.llgr.is_empty() {
            caps.push(Capability::LongLivedGracefulRestart(
                self.llgr
                    .iter()
                    .map(|(f, stale)| LlgrFamily {
                        afi: f.afi,
                        safi: f.safi,
                        flags: 0,
                        stale_time: (*stale).min(0x00ff_ffff),
                    })
                    .collect(),
            ));
        }
        Open::new(self.asn, self.hold_time, self.bgp_id, caps)
    }
}

/// The peer's graceful restart capability, as it matters to us as helper (RFC 4724 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerGracefulRestart {
    /// Seconds to keep its routes as stale after the session drops.
    pub restart_time: u16,
    /// R bit: the peer has just restarted (do not wait for our End-of-RIB to send it routes).
    pub restarting: bool,
    /// Negotiated families → F bit (forwarding state preserved). A family absent here is
    /// flushed at once when the peer restarts.
    pub families: BTreeMap<Family, bool>,
    /// RFC 8538: both sides set the N bit, so NOTIFICATIONs (except Hard Reset) keep GR.
    pub notification: bool,
}

/// Everything a session negotiated. Built once per session from both OPENs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    /// The peer's real AS (the 4-octet capability when present, RFC 6793 §4.1).
    pub peer_asn: Asn,
    pub peer_id: Ipv4Addr,
    pub local_asn: Asn,
    pub local_id: Ipv4Addr,
    pub ibgp: bool,
    /// min(ours, theirs), RFC 4271 §4.2; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; 0 when the hold time is 0.
    pub keepalive: u16,
    /// RFC 6793: both sides announced the 4-octet AS capability.
    pub four_octet_as: bool,
    /// Families both sides announced (RFC 4760 §8); IPv4 unicast when a side announced none.
    pub families: BTreeSet<Family>,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// RFC 8950: (NLRI family, next-hop AFI) we may send (the peer announced it).
    pub extended_next_hop_send: BTreeSet<(Family, Afi)>,
    /// RFC 8950: (NLRI family, next-hop AFI) the peer may send us (we announced it).
    pub extended_next_hop_receive: BTreeSet<(Family, Afi)>,
    pub extended_message: bool,
    /// RFC 7911 §4: families where our UPDATEs carry path ids (we Send, peer Receives).
    pub add_path_send: BTreeSet<Family>,
    /// Families where the peer's UPDATEs carry path ids (peer Sends, we Receive).
    pub add_path_receive: BTreeSet<Family>,
    /// We announced graceful restart.
    pub local_graceful_restart: bool,
    /// The peer's graceful restart capability; `Some` only when both sides announced it.
    pub graceful_restart: Option<PeerGracefulRestart>,
    /// RFC 9494: both sides announced long-lived graceful restart.
    pub llgr: bool,
    pub local_role: Option<BgpRole>,
    pub peer_role: Option<BgpRole>,
    /// Context for decoding what the peer sends.
    pub rx: DecodeContext,
    /// Context for encoding what we send.
    pub tx: DecodeContext,
}

impl Negotiated {
    /// Whether the peer's UPDATEs for `family` may carry a next hop of `nh_afi` (RFC 8950).
    pub fn accepts_next_hop(&self, family: Family, nh_afi: Afi) -> bool {
        family.afi == nh_afi || self.extended_next_hop_receive.contains(&(family, nh_afi))
    }
}

fn open_error(subcode: OpenSubcode, data: Vec<u8>, reason: String) -> MessageError {
    MessageError::Open {
        subcode,
        data,
        reason,
    }
}

/// Families an OPEN offers: its Multiprotocol capabilities, or IPv4 unicast implicitly when it
/// has none (RFC 4760 §8 and common practice).
pub fn offered_families(open: &Open) -> BTreeSet<Family> {
    let mp: BTreeSet<Family> = open
        .capabilities()
        .filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
        .collect();
    if mp.is_empty() {
        BTreeSet::from([Family::IPV4_UNICAST])
    } else {
        mp
    }
}

fn has(open: &Open, code: u8) -> bool {
    open.capabilities().any(|c| c.code() == code)
}

/// RFC 9234 §4.2: the allowed (local, remote) role pairs.
fn roles_match(local: BgpRole, remote: BgpRole) -> bool {
    matches!(
        (local, remote),
        (BgpRole::PROVIDER, BgpRole::CUSTOMER)
            | (BgpRole::CUSTOMER, BgpRole::PROVIDER)
            | (BgpRole::ROUTE_SERVER, BgpRole::ROUTE_SERVER_CLIENT)
            | (BgpRole::ROUTE_SERVER_CLIENT, BgpRole::ROUTE_SERVER)
            | (BgpRole::PEER, BgpRole::PEER)
    )
}

/// Checks the peer's OPEN against our config and computes what the session may do.
///
/// `local` is the OPEN we sent (normally [`LocalConfig::open`]). Errors are the OPEN Message
/// Error NOTIFICATION to send (RFC 4271 §6.2), with a reason naming the offending field.
pub fn negotiate(
    local: &Open,
    remote: &Open,
    cfg: &LocalConfig,
) -> Result<Negotiated, MessageError> {
    let peer_asn = remote.asn();
    // RFC 6793 §4.1: My AS is AS_TRANS exactly when the real AS needs 4 octets. A 2-octet
    // speaker announcing AS_TRANS without the capability is nonsense.
    if peer_asn == Asn::TRANS {
        return Err(open_error(
            OpenSubcode::BadPeerAs,
            remote.my_as.to_be_bytes().to_vec(),
            "peer AS is AS_TRANS (23456) without a 4-octet AS capability".into(),
        ));
    }
    if peer_asn.0 == 0 {
        return Err(open_error(
            OpenSubcode::BadPeerAs,
            remote.my_as.to_be_bytes().to_vec(),
            "peer AS 0 (RFC 7607)".into(),
        ));
    }
    if let Some(expected) = cfg.peer_asn
        && expected != peer_asn
    {
        return Err(open_error(
            OpenSubcode::BadPeerAs,
            remote.my_as.to_be_bytes().to_vec(),
            format!("peer AS {peer_asn}, expected {expected}"),
        ));
    }
    let ibgp = peer_asn == cfg.asn;

    // RFC 6286 §2.2: non-zero; equal to ours only allowed between different ASes.
    if remote.bgp_id.is_unspecified() {
        return Err(open_error(
            OpenSubcode::BadBgpIdentifier,
            Vec::new(),
            "BGP identifier 0.0.0.0".into(),
        ));
    }
    if ibgp && remote.bgp_id == cfg.bgp_id {
        return Err(open_error(
            OpenSubcode::BadBgpIdentifier,
            Vec::new(),
            format!(
                "BGP identifier {} equals ours on an internal session (RFC 6286 §2.2)",
                remote.bgp_id
            ),
        ));
    }

    // RFC 4271 §6.2: 1 and 2 are never acceptable; we may refuse more.
    let remote_hold = remote.hold_time;
    if remote_hold != 0 && (remote_hold < 3 || remote_hold < cfg.min_hold_time) {
        return Err(open_error(
            OpenSubcode::UnacceptableHoldTime,
            Vec::new(),
            format!(
                "hold time {remote_hold} s (we accept 0 or at least {} s)",
                cfg.min_hold_time.max(3)
            ),
        ));
    }
    let hold_time = remote_hold.min(local.hold_time);
    let keepalive = if hold_time == 0 {
        0
    } else {
        let wanted = cfg.keepalive.unwrap_or(local.hold_time / 3);
        wanted.min(hold_time / 3).max(1)
    };

    // RFC 5492 §5: the capabilities we cannot do without.
    let missing: Vec<u8> = cfg
        .required_capabilities
        .iter()
        .copied()
        .filter(|c| !has(remote, *c))
        .collect();
    if !missing.is_empty() {
        // Data: the capabilities, each as code + zero length.
        let data = missing.iter().flat_map(|c| [*c, 0]).collect();
        return Err(open_error(
            OpenSubcode::UnsupportedCapability,
            data,
            format!("required capabilities {missing:?} not announced"),
        ));
    }

    // RFC 9234 §4.2: roles only on eBGP; differing roles, a forbidden pair, or strict mode
    // without a peer role are a Role Mismatch.
    let local_role = local.capabilities().find_map(|c| match c {
        Capability::Role(r) => Some(*r),
        _ => None,
    });
    let mut peer_roles = remote.capabilities().filter_map(|c| match c {
        Capability::Role(r) => Some(*r),
        _ => None,
    });
    let peer_role = peer_roles.next();
    let role_err = |why: String| open_error(OpenSubcode::RoleMismatch, Vec::new(), why);
    if !ibgp {
        if let Some(first) = peer_role
            && peer_roles.any(|r| r != first)
        {
            return Err(role_err("peer announced several different roles".into()));
        }
        match (local_role, peer_role) {
            (Some(l), Some(r)) if !roles_match(l, r) => {
                return Err(role_err(format!(
                    "our role {} and the peer's role {} do not pair",
                    role_name(l),
                    role_name(r)
                )));
            }
            (Some(l), None) if cfg.strict_role => {
                return Err(role_err(format!(
                    "strict role {}: the peer announced no role",
                    role_name(l)
                )));
            }
            _ => {}
        }
    }

    let local_fams = offered_families(local);
    let families: BTreeSet<Family> = offered_families(remote)
        .intersection(&local_fams)
        .copied()
        .collect();

    let ext_nh = |o: &Open| -> BTreeSet<(Family, Afi)> {
        o.capabilities()
            .flat_map(|c| match c {
                Capability::ExtendedNextHop(e) => e.as_slice(),
                _ => &[],
            })
            // RFC 8950 §3: the capability's SAFI is 2 octets on the wire; ours is one.
            .map(|e| (Family::new(e.nlri_afi, e.nlri_safi), e.next_hop_afi))
            .filter(|(f, _)| families.contains(f))
            .collect()
    };

    let add_path_dir = |sender: &Open, receiver: &Open| -> BTreeSet<Family> {
        sender
            .add_path()
            .filter(|e| e.mode.sends() && families.contains(&e.family()))
            .filter(|e| {
                receiver
                    .add_path()
                    .any(|r| r.family() == e.family() && r.mode.receives())
            })
            .map(AddPathEntry::family)
            .collect()
    };

    let gr_of = |o: &Open| {
        o.capabilities().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
    };
    // Our capability counts only when graceful restart is configured: the End-of-RIB-only
    // form (`end_of_rib_capability`) does not make us a helper.
    let local_gr = gr_of(local).filter(|_| cfg.graceful_restart.is_some());
    let graceful_restart = match (&local_gr, gr_of(remote)) {
        (Some(l), Some(r)) => Some(PeerGracefulRestart {
            restart_time: r.restart_time,
            restarting: r.restart_state,
            families: r
                .families
                .iter()
                .map(|f| (Family::new(f.afi, f.safi), f.forwarding_state))
                .filter(|(f, _)| families.contains(f))
                .collect(),
            notification: l.notification && r.notification,
        }),
        _ => None,
    };

    let both = |code: u8| has(local, code) && has(remote, code);
    let mut rx = DecodeContext::negotiate(remote, local);
    rx.peer_as = Some(peer_asn);
    let tx = DecodeContext::negotiate(local, remote);
    Ok(Negotiated {
        peer_asn,
        peer_id: remote.bgp_id,
        local_asn: cfg.asn,
        local_id: cfg.bgp_id,
        ibgp,
        hold_time,
        keepalive,
        four_octet_as: both(code::FOUR_OCTET_AS),
        extended_next_hop_send: ext_nh(remote),
        extended_next_hop_receive: ext_nh(local),
        add_path_send: add_path_dir(local, remote),
        add_path_receive: add_path_dir(remote, local),
        families,
        route_refresh: both(code::ROUTE_REFRESH),
        enhanced_route_refresh: both(code::ENHANCED_ROUTE_REFRESH),
        extended_message: both(code::EXTENDED_MESSAGE),
        local_graceful_restart: local_gr.is_some(),
        graceful_restart,
        llgr: both(code::LONG_LIVED_GRACEFUL_RESTART),
        local_role: if ibgp { None } else { local_role },
        peer_role: if ibgp { None } else { peer_role },
        rx,
        tx,
    })
}

/// The RFC 9234 name of a role.
pub fn role_name(r: BgpRole) -> String {
    match r {
        BgpRole::PROVIDER => "provider".into(),
        BgpRole::ROUTE_SERVER => "rs".into(),
        BgpRole::ROUTE_SERVER_CLIENT => "rs-client".into(),
        BgpRole::CUSTOMER => "customer".into(),
        BgpRole::PEER => "peer".into(),
        BgpRole(n) => format!("role {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DecodeContext, Message, Safi, decode_message};

    const ID_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ID_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn cfg() -> LocalConfig {
        LocalConfig::new(Asn(65001), ID_A, Some(Asn(65002)))
    }

    fn peer(caps: Vec<Capability>) -> Open {
        Open::new(Asn(65002), 90, ID_B, caps)
    }

    fn run(cfg: &LocalConfig, remote: &Open) -> Result<Negotiated, MessageError> {
        negotiate(&cfg.open(), remote, cfg)
    }

    fn err(cfg: &LocalConfig, remote: &Open) -> (u8, u8, Vec<u8>) {
        let e = run(cfg, remote).expect_err("must fail");
        (e.code() as u8, e.subcode(), e.data().to_vec())
    }

    const V4: Family = Family::IPV4_UNICAST;
    const V6: Family = Family::IPV6_UNICAST;

    #[test]
    fn families_are_the_intersection() {
        let mut c = cfg();
        c.families = BTreeSet::from([V4, V6]);
        // (peer caps, expected families, why)
        let cases = [
            (
                vec![Capability::Multiprotocol(V6)],
                vec![V6],
                "RFC 4760 intersection",
            ),
            (
                vec![Capability::Multiprotocol(V4), Capability::Multiprotocol(V6)],
                vec![V4, V6],
                "both",
            ),
            (vec![], vec![V4], "no MP capability: IPv4 unicast implied"),
            (
                vec![Capability::Multiprotocol(Family::new(
                    Afi::L2VPN,
                    Safi::EVPN,
                ))],
                vec![],
                "nothing in common",
            ),
        ];
        for (caps, want, why) in cases {
            let n = run(&c, &peer(caps)).expect(why);
            assert_eq!(n.families, want.into_iter().collect(), "{why}");
        }
    }

    #[test]
    fn four_octet_as() {
        let mut c = cfg();
        c.peer_asn = Some(Asn(4_200_000_000));
        let big = Open::new(
            Asn(4_200_000_000),
            90,
            ID_B,
            vec![Capability::FourOctetAs(Asn(4_200_000_000))],
        );
        assert_eq!(big.my_as, 23456, "AS_TRANS in My AS");
        let n = run(&c, &big).unwrap();
        assert_eq!(n.peer_asn, Asn(4_200_000_000));
        assert!(n.four_octet_as && n.rx.four_octet_as && n.tx.four_octet_as);

        // A 2-octet-only peer: no capability, real AS in My AS; contexts use 2-octet paths.
        let n = run(&cfg(), &peer(vec![])).unwrap();
        assert_eq!(n.peer_asn, Asn(65002));
        assert!(!n.four_octet_as && !n.rx.four_octet_as && !n.tx.four_octet_as);

        // AS_TRANS without the capability, a wrong AS, and AS 0: Bad Peer AS (2/2).
        let mut any = cfg();
        any.peer_asn = None;
        let trans = Open::new(Asn(23456), 90, ID_B, vec![]);
        assert_eq!(err(&any, &trans), (2, 2, vec![0x5b, 0xa0]));
        let wrong = Open::new(Asn(65003), 90, ID_B, vec![]);
        assert_eq!(err(&cfg(), &wrong), (2, 2, vec![0xfd, 0xeb]));
        assert!(
            run(&any, &wrong).is_ok(),
            "peer AS not configured: any AS is fine"
        );
    }

    #[test]
    fn hold_time_and_keepalive() {
        // (our hold, our keepalive, min hold, peer hold, expected (hold, keepalive) or error)
        type Case = (u16, Option<u16>, u16, u16, Option<(u16, u16)>, &'static str);
        let cases: [Case; 7] = [
            (90, None, 3, 90, Some((90, 30)), "§4.2 keepalive = hold/3"),
            (90, None, 3, 30, Some((30, 10)), "min of both hold times"),
            (90, None, 3, 0, Some((0, 0)), "0: no keepalives"),
            (0, None, 3, 90, Some((0, 0)), "we said 0"),
            (
                90,
                Some(5),
                3,
                90,
                Some((90, 5)),
                "configured keepalive below hold/3",
            ),
            (
                90,
                Some(60),
                3,
                90,
                Some((90, 30)),
                "keepalive never above hold/3",
            ),
            (
                90,
                None,
                10,
                9,
                None,
                "below our minimum: Unacceptable Hold Time",
            ),
        ];
        for (hold, ka, min, peer_hold, want, why) in cases {
            let mut c = cfg();
            c.hold_time = hold;
            c.keepalive = ka;
            c.min_hold_time = min;
            let mut o = peer(vec![]);
            o.hold_time = peer_hold;
            match want {
                Some(w) => {
                    let n = run(&c, &o).expect(why);
                    assert_eq!((n.hold_time, n.keepalive), w, "{why}");
                }
                None => assert_eq!(err(&c, &o), (2, 6, vec![]), "{why}"),
            }
        }
    }

    #[test]
    fn bgp_identifier_rules() {
        // RFC 6286 §2.2: equal ids are fine between ASes, not inside one.
        let same_id_ebgp = Open::new(Asn(65002), 90, ID_A, vec![]);
        assert!(run(&cfg(), &same_id_ebgp).is_ok());
        let mut ibgp = cfg();
        ibgp.peer_asn = Some(Asn(65001));
        let same_id_ibgp = Open::new(Asn(65001), 90, ID_A, vec![]);
        assert_eq!(err(&ibgp, &same_id_ibgp), (2, 3, vec![]));
        let zero = Open::new(Asn(65002), 90, Ipv4Addr::UNSPECIFIED, vec![]);
        assert_eq!(err(&cfg(), &zero), (2, 3, vec![]));
        let n = run(&ibgp, &Open::new(Asn(65001), 90, ID_B, vec![])).unwrap();
        assert!(n.ibgp && n.rx.ibgp);
    }

    #[test]
    fn required_capabilities() {
        let mut c = cfg();
        c.required_capabilities = BTreeSet::from([code::ROUTE_REFRESH, code::FOUR_OCTET_AS]);
        // RFC 5492 §5: Unsupported Capability, data lists the missing ones.
        assert_eq!(err(&c, &peer(vec![])), (2, 7, vec![2, 0, 65, 0]));
        let ok = peer(vec![
            Capability::RouteRefresh,
            Capability::FourOctetAs(Asn(65002)),
        ]);
        assert!(run(&c, &ok).is_ok());
    }

    #[test]
    fn roles() {
        use BgpRole as R;
        // (ours, strict, peer's roles, ok?, why) — RFC 9234 §4.2
        let cases = [
            (
                R::PROVIDER,
                false,
                vec![R::CUSTOMER],
                true,
                "provider-customer",
            ),
            (
                R::CUSTOMER,
                false,
                vec![R::PROVIDER],
                true,
                "customer-provider",
            ),
            (
                R::ROUTE_SERVER,
                false,
                vec![R::ROUTE_SERVER_CLIENT],
                true,
                "rs-client",
            ),
            (R::PEER, false, vec![R::PEER], true, "peer-peer"),
            (
                R::PROVIDER,
                false,
                vec![R::PROVIDER],
                false,
                "provider-provider",
            ),
            (R::PEER, false, vec![R::CUSTOMER], false, "peer-customer"),
            (R::PEER, false, vec![], true, "no peer role, not strict"),
            (R::PEER, true, vec![], false, "strict: peer must announce"),
            (
                R::PEER,
                false,
                vec![R::PEER, R::CUSTOMER],
                false,
                "conflicting roles",
            ),
        ];
        for (ours, strict, theirs, ok, why) in cases {
            let mut c = cfg();
            c.role = Some(ours);
            c.strict_role = strict;
            let o = peer(theirs.into_iter().map(Capability::Role).collect());
            match run(&c, &o) {
                Ok(n) => {
                    assert!(ok, "{why}: accepted");
                    assert_eq!(n.local_role, Some(ours), "{why}");
                }
                Err(e) => {
                    assert!(!ok, "{why}: rejected: {e}");
                    assert_eq!((e.code() as u8, e.subcode()), (2, 11), "{why}");
                }
            }
        }
        // Roles are eBGP only: an iBGP session ignores them and our OPEN omits ours.
        let mut c = cfg();
        c.peer_asn = Some(Asn(65001));
        c.role = Some(R::PROVIDER);
        c.strict_role = true;
        assert!(
            !c.open()
                .capabilities()
                .any(|c| matches!(c, Capability::Role(_)))
        );
        let o = Open::new(Asn(65001), 90, ID_B, vec![Capability::Role(R::PROVIDER)]);
        assert_eq!(run(&c, &o).unwrap().peer_role, None);
    }

    #[test]
    fn add_path_is_directional() {
        let mut c = cfg();
        c.families = BTreeSet::from([V4, V6]);
        c.add_path = BTreeMap::from([(V4, AddPathMode::BOTH), (V6, AddPathMode::RECEIVE)]);
        let o = peer(vec![
            Capability::Multiprotocol(V4),
            Capability::Multiprotocol(V6),
            Capability::AddPath(vec![
                AddPathEntry {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                    mode: AddPathMode::RECEIVE,
                },
                AddPathEntry {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                    mode: AddPathMode::BOTH,
                },
            ]),
        ]);
        let n = run(&c, &o).unwrap();
        // RFC 7911 §4: we send ids for v4 (we Send, peer Receives); peer sends ids for v6.
        assert_eq!(n.add_path_send, BTreeSet::from([V4]));
        assert_eq!(n.add_path_receive, BTreeSet::from([V6]));
        assert_eq!(n.rx.add_path_rx, BTreeSet::from([V6]));
        assert_eq!(n.tx.add_path_rx, BTreeSet::from([V4]));
    }

    #[test]
    fn extended_next_hop_message_refresh() {
        let mut c = cfg();
        c.families = BTreeSet::from([V4, V6]);
        c.extended_next_hop = BTreeSet::from([(V4, Afi::IPV6)]);
        c.extended_message = true;
        c.enhanced_route_refresh = true;
        let o = peer(vec![
            Capability::Multiprotocol(V4),
            Capability::Multiprotocol(V6),
            Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
                nlri_afi: Afi::IPV4,
                nlri_safi: Safi::UNICAST,
                next_hop_afi: Afi::IPV6,
            }]),
            Capability::ExtendedMessage,
            Capability::RouteRefresh,
        ]);
        let n = run(&c, &o).unwrap();
        assert_eq!(n.extended_next_hop_send, BTreeSet::from([(V4, Afi::IPV6)]));
        assert!(
            n.accepts_next_hop(V4, Afi::IPV6),
            "RFC 8950: we announced it"
        );
        assert!(n.accepts_next_hop(V6, Afi::IPV6));
        assert!(!n.accepts_next_hop(V6, Afi::IPV4));
        assert!(n.extended_message && n.rx.extended_message);
        assert_eq!(n.rx.max_message_len(), 65535);
        assert!(n.route_refresh);
        assert!(!n.enhanced_route_refresh, "RFC 7313: needs both sides");
        // Without the peer's capability: nothing.
        let n = run(&c, &peer(vec![Capability::Multiprotocol(V4)])).unwrap();
        assert!(n.extended_next_hop_send.is_empty() && !n.extended_message && !n.route_refresh);
        assert_eq!(n.rx.max_message_len(), 4096);
    }

    /// RFC 4724 §3: "restart time 0, no <AFI, SAFI>" tells the peer we send End-of-RIB and
    /// asks it to keep nothing for us: R and N bits clear. Real GR configuration wins.
    #[test]
    fn end_of_rib_only_capability() {
        let gr_caps = |c: &LocalConfig| -> Vec<GracefulRestart> {
            c.open()
                .capabilities()
                .filter_map(|c| match c {
                    Capability::GracefulRestart(g) => Some(g.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut c = cfg();
        assert!(gr_caps(&c).is_empty(), "off unless asked for");
        c.end_of_rib_capability = true;
        assert_eq!(
            gr_caps(&c),
            [GracefulRestart {
                restart_state: false,
                notification: false,
                reserved_flags: 0,
                restart_time: 0,
                families: vec![],
            }]
        );
        // It survives an encode/decode round trip as exactly that.
        let mut buf = bytes::BytesMut::new();
        Message::Open(c.open())
            .encode(&DecodeContext::default(), &mut buf)
            .unwrap();
        let Ok(Message::Open(back)) = decode_message(&buf, &DecodeContext::default()) else {
            panic!("our OPEN decodes")
        };
        assert_eq!(back, c.open());
        c.graceful_restart = Some(GracefulRestartConfig {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: BTreeSet::new(),
            notification: true,
        });
        let g = gr_caps(&c);
        assert_eq!(g.len(), 1, "one capability, the configured one");
        assert_eq!(g[0].restart_time, 120);
        assert_eq!(g[0].families.len(), 1);
        // A peer with the same EoR-only capability: both sides "have" GR on the wire, yet
        // nobody is a helper (its routes are not kept as stale when it goes down).
        c.graceful_restart = None;
        let theirs = gr_caps(&c)
            .into_iter()
            .map(Capability::GracefulRestart)
            .collect();
        let n = run(&c, &peer(theirs)).unwrap();
        assert_eq!(n.graceful_restart, None);
        assert!(!n.local_graceful_restart);
    }

    #[test]
    fn graceful_restart() {
        let mut c = cfg();
        c.families = BTreeSet::from([V4, V6]);
        c.graceful_restart = Some(GracefulRestartConfig {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: BTreeSet::new(),
            notification: true,
        });
        c.llgr = BTreeMap::from([(V4, 3600)]);
        let gr = |n: bool| {
            Capability::GracefulRestart(GracefulRestart {
                restart_state: true,
                notification: n,
                reserved_flags: 0,
                restart_time: 90,
                families: vec![
                    GracefulRestartFamily {
                        afi: Afi::IPV4,
                        safi: Safi::UNICAST,
                        forwarding_state: true,
                        reserved_flags: 0,
                    },
                    GracefulRestartFamily {
                        afi: Afi::IPV6,
                        safi: Safi::UNICAST,
                        forwarding_state: false,
                        reserved_flags: 0,
                    },
                ],
            })
        };
        let o = peer(vec![
            Capability::Multiprotocol(V4),
            gr(true),
            Capability::LongLivedGracefulRestart(vec![]),
        ]);
        let n = run(&c, &o).unwrap();
        let g = n.graceful_restart.clone().unwrap();
        assert_eq!(g.restart_time, 90);
        assert!(g.restarting, "R bit");
        assert!(g.notification, "RFC 8538: both set N");
        // Only negotiated families; the F bit per family.
        assert_eq!(g.families, BTreeMap::from([(V4, true)]));
        assert!(n.llgr && n.local_graceful_restart);
        let n = run(&c, &peer(vec![gr(false)])).unwrap();
        assert!(
            !n.graceful_restart.unwrap().notification,
            "N needs both sides"
        );
        // We did not announce GR: no helper mode.
        let n = run(&cfg(), &peer(vec![gr(true)])).unwrap();
        assert_eq!(n.graceful_restart, None);
        // RFC 4724 §3 End-of-RIB-only capability: sent, but still no helper mode and no
        // local graceful restart.
        let mut eor = cfg();
        eor.end_of_rib_capability = true;
        let n = run(&eor, &peer(vec![gr(true)])).unwrap();
        assert_eq!(n.graceful_restart, None);
        assert!(!n.local_graceful_restart);
        // Our OPEN carries restart time and F bits as configured.
        let mut c2 = c.clone();
        if let Some(g) = c2.graceful_restart.as_mut() {
            g.forwarding_preserved.insert(V6);
            g.restart_time = 9999;
        }
        let ours = c2.open();
        let Some(Capability::GracefulRestart(g)) = ours
            .capabilities()
            .find(|c| matches!(c, Capability::GracefulRestart(_)))
        else {
            panic!("no GR capability")
        };
        assert_eq!(g.restart_time, 4095, "12 bits");
        assert_eq!(
            g.families
                .iter()
                .map(|f| f.forwarding_state)
                .collect::<Vec<_>>(),
            [false, true]
        );
    }
}
