//! Restarts without loss: the run marker in the state directory, and when the routes adopted
//! at start may be swept.
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

/// How long the best-path stream must be quiet, with every peer Established at least this
/// long, before the adopted routes are swept. A peer sends its table right after the session
/// comes up and ends it with End-of-RIB (RFC 4724 §2); the speaker does not report End-of-RIB
/// per peer yet, so a quiet stream after establishment stands for it.
pub const SETTLE: Duration = Duration::from_secs(2);

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

/// One peer as the sweep sees it: address, FSM state, time in that state.
pub type PeerState = (IpAddr, State, Duration);

/// The speaker's statuses reduced to what [`sweep_due`] reads.
pub fn peer_states(statuses: &[PeerStatus]) -> Vec<PeerState> {
    statuses
        .iter()
        .map(|s| (s.address, s.state, s.for_))
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
        peers
            .iter()
            .any(|(addr, state, for_)| addr == a && *state == State::Established && *for_ >= SETTLE)
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
        let up = |x, secs| (x, State::Established, S(secs));
        // (since start, peers, quiet for, expected)
        let cases: Vec<(u64, Vec<PeerState>, u64, Option<SweepReason>)> = vec![
            // Every peer up long enough and the stream quiet: the tables are in.
            (10, vec![up(a, 3), up(b, 3)], 3, Some(SweepReason::Synced)),
            // One peer not back yet: wait.
            (10, vec![up(a, 3), (b, State::Active, S(9))], 3, None),
            (10, vec![up(a, 3)], 3, None),
            // Just established: its table may still be coming.
            (10, vec![up(a, 3), up(b, 1)], 3, None),
            // Routes still arriving.
            (10, vec![up(a, 3), up(b, 3)], 1, None),
            // The timeout wins over everything.
            (120, vec![], 0, Some(SweepReason::Timeout)),
            (
                200,
                vec![(a, State::Connect, S(1))],
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
            sweep_due(S(5), S(120), &BTreeSet::new(), &[], S(3)),
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
