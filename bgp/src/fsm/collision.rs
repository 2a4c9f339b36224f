//! Connection collision detection (RFC 4271 §6.8, RFC 6286 §2.3) as a pure function.
//!
//! Owns only the decision which of two connections to the same peer survives. Closing the loser
//! (NOTIFICATION Cease / Connection Collision Resolution, RFC 4486) is the session driver's job.

use std::net::Ipv4Addr;

use crate::wire::Asn;

use super::State;

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We connected to the peer.
    Outgoing,
    /// The peer connected to us.
    Incoming,
}

/// The outcome for the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// No collision to resolve yet (the existing connection has not reached OpenConfirm and we
    /// do not know the peer's identifier from it), or the existing one is Established and
    /// `CollisionDetectEstablishedState` is off: keep the existing one, drop the new one.
    KeepExisting,
    /// Close the existing connection (Cease / Connection Collision Resolution) and continue
    /// on the new one.
    KeepNew,
    /// Undecided: keep the new connection aside until the existing one moves on, then decide
    /// again; if the existing one fails, continue on the new one. Two cases:
    /// - §6.8 says the new connection wins, but the existing one is in OpenConfirm: we have
    ///   sent our KEEPALIVE on it, so the peer may already be Established there (and will
    ///   close the new one). Established settles it for the existing one (the new one is
    ///   closed with Cease / Connection Collision Resolution, as for any collision with an
    ///   Established connection).
    /// - §6.8 says the existing connection wins, but it is in OpenSent: the peer's OPEN has not
    ///   come on it, so we do not know the peer holds it at all (a listener that did not know
    ///   us yet accepts and closes). OpenConfirm settles it for the existing one.
    Defer,
}

/// Decides a collision between an `existing` connection (in `existing_state`, opened in
/// `existing_dir`) and a `new` one on which the peer's OPEN (with `remote_id`) just arrived.
///
/// RFC 4271 §6.8: the connection initiated by the speaker with the higher BGP identifier
/// survives. RFC 6286 §2.3: with equal identifiers (possible only between different ASes), the
/// connection initiated by the speaker with the larger AS number survives.
///
/// A collision only exists when the existing connection is in OpenConfirm (its OPEN is in) or
/// OpenSent (we learn the id from the new connection's OPEN; §6.8 allows checking then).
/// An Established existing connection always wins (CollisionDetectEstablishedState = FALSE,
/// the RFC default).
///
/// Two outcomes are deferred ([`Resolution::Defer`]), each because acting at once could close
/// the only connection the peer still holds and cost a ConnectRetry round:
/// - dropping an OpenConfirm connection: with both sides active, the peer may have seen its
///   side of it reach Established before the new connection's OPEN arrived, and so closed the
///   new one. (In OpenSent that cannot be: the peer cannot be Established on a connection we
///   have not sent a KEEPALIVE on.)
/// - dropping the new connection for an OpenSent one that has not shown it is alive.
pub fn resolve(
    existing_state: State,
    existing_dir: Direction,
    local_id: Ipv4Addr,
    local_asn: Asn,
    remote_id: Ipv4Addr,
    remote_asn: Asn,
) -> Resolution {
    match existing_state {
        State::OpenSent | State::OpenConfirm => {}
        // Idle/Connect/Active: the existing attempt has no OPEN exchange to protect; the new
        // connection with a valid OPEN is further along, so keep it.
        State::Idle | State::Connect | State::Active => return Resolution::KeepNew,
        State::Established => return Resolution::KeepExisting,
    }
    let local_wins = match u32::from(local_id).cmp(&u32::from(remote_id)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => local_asn > remote_asn,
    };
    // The winner's connection is the one the winner initiated.
    let keep_dir = if local_wins {
        Direction::Outgoing
    } else {
        Direction::Incoming
    };
    match (existing_dir == keep_dir, existing_state) {
        (true, State::OpenSent) | (false, State::OpenConfirm) => Resolution::Defer,
        (true, _) => Resolution::KeepExisting,
        (false, _) => Resolution::KeepNew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use Resolution::*;

    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Both sides active, A (id LOW) and B (id HIGH). A's outgoing X and B's outgoing Y cross.
    /// §6.8 keeps X' = the connection B (higher id) initiated, i.e. Y. Played from A's side.
    #[test]
    fn deferral_cases_follow_what_the_peer_can_have_done() {
        // A's existing connection is X (its own outgoing) in OpenConfirm: A has sent its
        // KEEPALIVE on X, so B may be Established on X already. Dropping X now could strand
        // both sides: defer.
        assert_eq!(
            resolve(State::OpenConfirm, Outgoing, LOW, Asn(1), HIGH, Asn(1)),
            Defer
        );
        // The same in OpenSent: no KEEPALIVE went out on X, B cannot be Established on it.
        assert_eq!(
            resolve(State::OpenSent, Outgoing, LOW, Asn(1), HIGH, Asn(1)),
            KeepNew
        );
        // A's existing connection is Y, the winner, in OpenConfirm (B's OPEN came on it, so
        // B holds it): close X.
        assert_eq!(
            resolve(State::OpenConfirm, Incoming, LOW, Asn(1), HIGH, Asn(1)),
            KeepExisting
        );
        // Y in OpenSent: B's OPEN has not come on it; B's listener may have accepted and
        // closed it before B knew A. Closing X now could leave nothing: defer.
        assert_eq!(
            resolve(State::OpenSent, Incoming, LOW, Asn(1), HIGH, Asn(1)),
            Defer
        );
    }

    #[test]
    fn table() {
        // (existing state, existing dir, local id, local as, remote id, remote as, expected, why)
        let cases = [
            (
                State::OpenConfirm,
                Outgoing,
                HIGH,
                1,
                LOW,
                2,
                KeepExisting,
                "§6.8 higher id keeps its own outgoing",
            ),
            (
                State::OpenConfirm,
                Incoming,
                HIGH,
                1,
                LOW,
                2,
                Defer,
                "§6.8 higher id: the new conn is ours",
            ),
            (
                State::OpenConfirm,
                Outgoing,
                LOW,
                1,
                HIGH,
                2,
                Defer,
                "§6.8 peer higher: keep peer-initiated",
            ),
            (
                State::OpenConfirm,
                Incoming,
                LOW,
                1,
                HIGH,
                2,
                KeepExisting,
                "§6.8 peer higher: existing is peer's",
            ),
            (
                State::OpenSent,
                Outgoing,
                HIGH,
                1,
                LOW,
                2,
                Defer,
                "§6.8 in OpenSent: existing wins, but only once its OPEN shows it alive",
            ),
            (
                State::OpenSent,
                Outgoing,
                LOW,
                1,
                HIGH,
                2,
                KeepNew,
                "§6.8 may check in OpenSent",
            ),
            (
                State::OpenConfirm,
                Outgoing,
                LOW,
                65001,
                LOW,
                65000,
                KeepExisting,
                "RFC 6286 §2.3 equal ids: larger AS wins",
            ),
            (
                State::OpenConfirm,
                Outgoing,
                LOW,
                65000,
                LOW,
                65001,
                Defer,
                "RFC 6286 §2.3 equal ids: peer's AS larger",
            ),
            (
                State::OpenConfirm,
                Incoming,
                LOW,
                65000,
                LOW,
                65001,
                KeepExisting,
                "RFC 6286 §2.3",
            ),
            (
                State::Established,
                Incoming,
                HIGH,
                1,
                LOW,
                2,
                KeepExisting,
                "CollisionDetectEstablishedState off",
            ),
            (
                State::Established,
                Outgoing,
                LOW,
                1,
                HIGH,
                2,
                KeepExisting,
                "CollisionDetectEstablishedState off",
            ),
            (
                State::Connect,
                Outgoing,
                HIGH,
                1,
                LOW,
                2,
                KeepNew,
                "nothing to protect before OPEN",
            ),
            (
                State::Active,
                Incoming,
                LOW,
                1,
                HIGH,
                2,
                KeepNew,
                "nothing to protect before OPEN",
            ),
            (
                State::Idle,
                Incoming,
                LOW,
                1,
                HIGH,
                2,
                KeepNew,
                "nothing to protect before OPEN",
            ),
        ];
        for (st, dir, lid, las, rid, ras, want, why) in cases {
            assert_eq!(
                resolve(st, dir, lid, Asn(las), rid, Asn(ras)),
                want,
                "{st:?} {dir:?} local {lid}/{las} remote {rid}/{ras}: {why}"
            );
        }
    }
}
