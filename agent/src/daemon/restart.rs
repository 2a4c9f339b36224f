//! Restarts without loss: the run marker in the state directory, and when the routes adopted
//! at start may be swept: once every planned peer is Established and has sent End-of-RIB for
//! each family (RFC 4724 §4.1: stale routes go after End-of-RIB), or at `--stale-routes-time`.
//!
//! Owns the marker file and the pure sweep decision. Must not touch routes (the reconciler
//! sweeps when told) or the speaker.
//!
//! The marker (`<state-dir>/agent.running`, holding the pid) is written at every start and
//! never removed: SIGTERM stops the speaker for a graceful restart and keeps the routes, and
//! SIGKILL leaves everything as it was, so in both cases the next start is a restart. A start
//! is announced as a graceful restart (RFC 4724 R and F bits) only when the marker is there
//! *and* the kernel still holds routes of ours: after a reboot the marker survives on disk but
//! the forwarding state does not, and claiming it would make peers keep routes into nothing.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tabby_bgp::fsm::State;
use tabby_bgp::speaker::PeerStatus;

/// The marker's file name inside the state directory.
pub const MARKER: &str = "agent.running";

/// Once every peer's table is in, the best-path stream must have been quiet this long (so the
/// last batch reached the reconciler) before the adopted routes are swept.
pub const SETTLE: Duration = Duration::from_millis(500);

/// A peer that never sends End-of-RIB (RFC 4724 §2; speakers without graceful restart may
/// not) counts as synced after it has been Established this long.
pub const WITHOUT_END_OF_RIB: Duration = Duration::from_secs(10);

pub fn marker_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKER)
}

/// Whether a previous run left its marker.
pub fn previous_run(state_dir: &Path) -> io::Result<bool> {
    marker_path(state_dir).try_exists()
}

/// Creates the state directory if needed and writes the marker.
pub fn write_marker(state_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(marker_path(state_dir), format!("{}\n", std::process::id()))
}

/// Why the adopted routes may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepReason {
    /// Every planned peer is Established and its table has arrived.
    Synced,
    /// `--stale-routes-time` passed since start.
    Timeout,
}

/// One peer as the sweep sees it: address, FSM state, time in that state, End-of-RIB
/// received for every family since it came up.
pub type PeerState = (IpAddr, State, Duration, bool);

/// The speaker's statuses reduced to what [`sweep_due`] reads.
pub fn peer_states(statuses: &[PeerStatus]) -> Vec<PeerState> {
    statuses
        .iter()
        .map(|s| (s.address, s.state, s.for_, s.end_of_rib))
        .collect()
}

/// Decides whether to sweep. `planned`: the peers the applied plan holds; `peers`: the
/// speaker's; `quiet_for`: time since the last best-path batch reached the kernel feed.
pub fn sweep_due(
    since_start: Duration,
    stale_routes_time: Duration,
    planned: &BTreeSet<IpAddr>,
    peers: &[PeerState],
    quiet_for: Duration,
) -> Option<SweepReason> {
    if since_start >= stale_routes_time {
        return Some(SweepReason::Timeout);
    }
    let synced = planned.iter().all(|a| {
        peers.iter().any(|(addr, state, for_, eor)| {
            addr == a && *state == State::Established && (*eor || *for_ >= WITHOUT_END_OF_RIB)
        })
    });
    (synced && quiet_for >= SETTLE).then_some(SweepReason::Synced)
}

/// `Instant` arithmetic that never panics.
pub fn since(t: Instant) -> Duration {
    Instant::now().saturating_duration_since(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sweep_decisions() {
        let a = ip("10.0.0.2");
        let b = ip("10.0.0.3");
        let both: BTreeSet<IpAddr> = [a, b].into();
        let eor = |x| (x, State::Established, S(1), true);
        let up = |x, secs| (x, State::Established, S(secs), false);
        // (since start, peers, quiet for, expected)
        let cases: Vec<(u64, Vec<PeerState>, u64, Option<SweepReason>)> = vec![
            // Every peer sent End-of-RIB and the stream is quiet: the tables are in.
            (10, vec![eor(a), eor(b)], 1, Some(SweepReason::Synced)),
            // One peer not back yet: wait.
            (10, vec![eor(a), (b, State::Active, S(9), false)], 1, None),
            (10, vec![eor(a)], 1, None),
            // Up, but its table is not complete (no End-of-RIB yet).
            (10, vec![eor(a), up(b, 3)], 1, None),
            // A peer that never sends End-of-RIB counts after WITHOUT_END_OF_RIB.
            (30, vec![eor(a), up(b, 10)], 1, Some(SweepReason::Synced)),
            // Routes still arriving.
            (10, vec![eor(a), eor(b)], 0, None),
            // The timeout wins over everything.
            (120, vec![], 0, Some(SweepReason::Timeout)),
            (
                200,
                vec![(a, State::Connect, S(1), false)],
                0,
                Some(SweepReason::Timeout),
            ),
        ];
        for (start, peers, quiet, want) in cases {
            assert_eq!(
                sweep_due(S(start), S(120), &both, &peers, S(quiet)),
                want,
                "start {start}s, peers {peers:?}, quiet {quiet}s"
            );
        }
        // No peer planned (a single node): only the stream must settle.
        assert_eq!(
            sweep_due(S(5), S(120), &BTreeSet::new(), &[], S(1)),
            Some(SweepReason::Synced)
        );
    }

    #[test]
    fn marker_is_written_and_found() {
        let dir = std::env::temp_dir().join(format!("tabby-marker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!previous_run(&dir).unwrap());
        write_marker(&dir).unwrap();
        assert!(previous_run(&dir).unwrap());
        let pid = std::fs::read_to_string(marker_path(&dir)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
