//! Propagation rules as pure functions: loop detection on receipt (RFC 4271 §9.1.2, RFC 4456
//! §8), the attributes a route gets on import, and who may receive a best path and with what
//! attributes (RFC 4271 §5 and §9.2, RFC 4456 §6–§8, RFC 1997 well-known communities).
//! Policy runs between these steps; this module never consults it.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::attrs::{NextHop, PathAttrs};
use super::peer::{PeerInfo, PeerType};
use crate::wire::{Asn, Community};

/// Why a received route was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// Our AS is in the AS_PATH (RFC 4271 §9.1.2).
    AsLoop,
    /// ORIGINATOR_ID is our router id (RFC 4456 §8).
    OriginatorLoop,
    /// Our cluster id is in CLUSTER_LIST (RFC 4456 §8).
    ClusterLoop,
    /// The import policy rejected it.
    Policy,
    /// eBGP session without import policy (RFC 8212 §2).
    NoPolicy,
    /// The UPDATE was malformed in a way RFC 7606 answers with treat-as-withdraw.
    TreatAsWithdraw,
}

/// This router's identity as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIdentity {
    pub asn: Asn,
    pub router_id: Ipv4Addr,
    /// Route-reflection cluster id (RFC 4456 §7); the router id when not configured.
    pub cluster_id: Ipv4Addr,
}

/// Loop detection on receipt.
pub fn check_loops(
    attrs: &PathAttrs,
    from: &PeerInfo,
    me: &LocalIdentity,
) -> Result<(), RejectReason> {
    if from.peer_type == PeerType::Local {
        return Ok(());
    }
    if attrs.as_path_contains(me.asn) {
        return Err(RejectReason::AsLoop);
    }
    if from.peer_type.is_ibgp() {
        if attrs.originator_id == Some(me.router_id) {
            return Err(RejectReason::OriginatorLoop);
        }
        if attrs.cluster_list.contains(&me.cluster_id) {
            return Err(RejectReason::ClusterLoop);
        }
    }
    Ok(())
}

/// Attribute fixes on import, before policy: a LOCAL_PREF from an eBGP peer is ignored (RFC 4271
/// §5.1.5), and so are ORIGINATOR_ID / CLUSTER_LIST, which only make sense inside an AS (RFC
/// 4456 §8). Returns `None` when nothing changes.
pub fn import_fixups(attrs: &PathAttrs, from: &PeerInfo) -> Option<PathAttrs> {
    if from.peer_type == PeerType::Ebgp
        && (attrs.local_pref.is_some()
            || attrs.originator_id.is_some()
            || !attrs.cluster_list.is_empty())
    {
        let mut a = attrs.clone();
        a.local_pref = None;
        a.originator_id = None;
        a.cluster_list.clear();
        return Some(a);
    }
    None
}

/// How the next hop is set on export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextHopMode {
    /// eBGP: self. iBGP: unchanged, except locally originated routes (self).
    #[default]
    Auto,
    /// Always this router's address on the session.
    #[serde(rename = "self")]
    SelfAddr,
    /// Never changed (third-party next hop; route-server style).
    Keep,
}

/// The receiving side of an export, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExportTarget {
    pub peer_type: PeerType,
    pub peer_asn: Asn,
    pub next_hop_mode: NextHopMode,
}

/// May the best path `attrs`, learned from `from`, be sent to `to` at all? RFC 4271 §9.2
/// (iBGP-learned routes are not sent to iBGP peers), RFC 4456 §6 (a reflector sends client
/// routes to everyone and non-client routes to clients), RFC 1997 (NO_ADVERTISE, NO_EXPORT,
/// NO_EXPORT_SUBCONFED), and the sender-side AS loop check (a route whose path holds the peer's
/// AS would be dropped there anyway).
pub fn may_export(attrs: &PathAttrs, from: PeerType, to: &ExportTarget) -> bool {
    if attrs
        .communities
        .binary_search(&Community::NO_ADVERTISE)
        .is_ok()
    {
        return false;
    }
    match to.peer_type {
        PeerType::Local => false,
        PeerType::Ebgp => {
            let no_export = attrs
                .communities
                .binary_search(&Community::NO_EXPORT)
                .is_ok()
                || attrs
                    .communities
                    .binary_search(&Community::NO_EXPORT_SUBCONFED)
                    .is_ok();
            !no_export && !attrs.as_path_contains(to.peer_asn)
        }
        PeerType::Ibgp => !matches!(from, PeerType::Ibgp),
        PeerType::RrClient => true,
    }
}

/// The attributes sent for an exportable best path, before export policy: RFC 4456 §8
/// reflection attributes, LOCAL_PREF only inside the AS, MED not passed between ASes (RFC 4271
/// §5.1.4; locally set ones are kept), and the default next hop (`self_nh`: this router's
/// address on the session). eBGP AS prepending comes after policy: see [`finish_export`].
/// `None` when the next hop must be this router but the session has no address of a family
/// that can carry it: the route cannot be sent rather than be sent with a wrong next hop.
pub fn export_attrs(
    attrs: &PathAttrs,
    from: &PeerInfo,
    to: &ExportTarget,
    me: &LocalIdentity,
    default_local_pref: u32,
    self_nh: Option<NextHop>,
) -> Option<PathAttrs> {
    let mut a = attrs.clone();
    if to.peer_type == PeerType::Ebgp {
        a.local_pref = None;
        a.originator_id = None;
        a.cluster_list.clear();
        if from.peer_type != PeerType::Local {
            a.med = None;
        }
    } else {
        if a.local_pref.is_none() {
            a.local_pref = Some(default_local_pref);
        }
        if from.peer_type.is_ibgp() {
            // Reflection (RFC 4456 §8): the originator is the peer that brought the route into
            // the AS, and our cluster goes on the front of the list.
            if a.originator_id.is_none() {
                a.originator_id = Some(from.router_id);
            }
            a.cluster_list.insert(0, me.cluster_id);
        }
    }
    let to_self = match to.next_hop_mode {
        NextHopMode::SelfAddr => true,
        NextHopMode::Keep => attrs.next_hop.is_unspecified(),
        NextHopMode::Auto => to.peer_type == PeerType::Ebgp || attrs.next_hop.is_unspecified(),
    };
    if to_self {
        a.next_hop = self_nh?;
    }
    Some(a)
}

/// After export policy: an eBGP peer gets our AS on the front of the path (RFC 4271 §5.1.2).
pub fn finish_export(attrs: &mut PathAttrs, to: &ExportTarget, me: &LocalIdentity) {
    if to.peer_type == PeerType::Ebgp {
        attrs.prepend(me.asn, 1);
    }
}
