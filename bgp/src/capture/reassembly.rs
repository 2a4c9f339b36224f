//! TCP reassembly of one direction of one connection: bytes in sequence order, exactly once.
//!
//! Out-of-order segments wait in a bounded buffer; retransmissions and overlapping segments never
//! deliver a byte twice (the first copy wins, as in a real receiver); sequence numbers wrap; SYN
//! and FIN each take one sequence number (RFC 9293 §3.4). A hole that never fills becomes a
//! [`Gap`] between two [`Run`]s rather than being silently closed up. Every delivered byte
//! remembers the frame it arrived in, so a BGP message can be named by its frames.
//!
//! Owns the per-direction state machine only; which direction a segment belongs to is the
//! caller's business ([`super::reassemble`]).

use std::collections::BTreeMap;
use std::ops::Range;

/// Out-of-order bytes held per direction before we give up waiting and declare a gap.
pub const DEFAULT_MAX_PENDING: usize = 16 << 20;

/// Segments more than this far beyond the next expected byte are not plausible for a live
/// connection (the TCP window is at most 1 GiB with scaling); they are dropped and noted.
const MAX_AHEAD: u64 = 1 << 30;

/// Contiguous stream bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Stream offset of `data[0]` (0 = first data byte after the SYN, or the first byte seen).
    pub offset: u64,
    pub data: Vec<u8>,
    /// (index into `data`, frame number), ascending: bytes from index i up to the next entry
    /// arrived in that frame.
    origins: Vec<(usize, u64)>,
}

impl Run {
    fn new(offset: u64) -> Run {
        Run {
            offset,
            data: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// Stream offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    fn push(&mut self, bytes: &[u8], frame: u64) {
        if bytes.is_empty() {
            return;
        }
        if self.origins.last().map(|&(_, f)| f) != Some(frame) {
            self.origins.push((self.data.len(), frame));
        }
        self.data.extend_from_slice(bytes);
    }

    /// The frame that carried byte `index` of `data`.
    pub fn frame_at(&self, index: usize) -> Option<u64> {
        if index >= self.data.len() {
            return None;
        }
        let i = self.origins.partition_point(|&(start, _)| start <= index);
        self.origins.get(i.checked_sub(1)?).map(|&(_, f)| f)
    }

    /// The frames that carried `data[range]`, in stream order, each once.
    pub fn frames(&self, range: Range<usize>) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        if range.start >= range.end || range.start >= self.data.len() {
            return out;
        }
        let first = self
            .origins
            .partition_point(|&(start, _)| start <= range.start);
        for &(start, frame) in &self.origins[first.saturating_sub(1)..] {
            if start >= range.end {
                break;
            }
            if !out.contains(&frame) {
                out.push(frame);
            }
        }
        out
    }
}

/// Bytes that never arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Stream offset of the first missing byte.
    pub offset: u64,
    pub len: u64,
    /// The frame that carried the first byte after the hole.
    pub resumed_in_frame: u64,
}

/// How the direction ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Fin { frame: u64 },
    Rst { frame: u64 },
}

/// What [`Reassembler::push`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// A SYN with a different initial sequence number: a new connection on the same 4-tuple.
    /// Nothing was consumed; finish this reassembler and start another.
    NewConnection,
}

/// Reassembly state of one direction.
#[derive(Debug, Clone)]
pub struct Reassembler {
    /// Sequence number of stream offset 0.
    origin: Option<u32>,
    syn_seen: bool,
    next: u64,
    runs: Vec<Run>,
    pending: BTreeMap<u64, (Vec<u8>, u64)>,
    pending_bytes: usize,
    max_pending: usize,
    gaps: Vec<Gap>,
    duplicate_bytes: u64,
    close: Option<Close>,
    notes: Vec<String>,
    /// Every payload byte in capture order, sequence numbers ignored (see [`Reassembled::arrival`]).
    arrival: Run,
    conflicting_bytes: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(DEFAULT_MAX_PENDING)
    }
}

/// Maps a 32-bit sequence number to a signed 64-bit stream offset, choosing the wrap that puts it
/// nearest to `next` (RFC 9293 §3.4 sequence arithmetic, extended to 64 bits).
fn unwrap_seq(origin: u32, next: u64, seq: u32) -> i64 {
    let rel = i64::from(seq.wrapping_sub(origin));
    let n = i64::try_from(next).unwrap_or(i64::MAX);
    let mut c = (n & !0xffff_ffff) | rel;
    if c - n > 1 << 31 {
        c -= 1 << 32;
    } else if n - c > 1 << 31 {
        c += 1 << 32;
    }
    c
}

impl Reassembler {
    pub fn new(max_pending: usize) -> Reassembler {
        Reassembler {
            origin: None,
            syn_seen: false,
            next: 0,
            runs: Vec::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
            gaps: Vec::new(),
            duplicate_bytes: 0,
            close: None,
            notes: Vec::new(),
            arrival: Run::new(0),
            conflicting_bytes: 0,
        }
    }

    /// Bytes already delivered at stream offsets `from..from+len`, if they are still at hand.
    fn delivered(&self, from: u64, len: usize) -> Option<&[u8]> {
        let run = self
            .runs
            .iter()
            .rev()
            .find(|r| r.offset <= from && from < r.end())?;
        let at = usize::try_from(from - run.offset).ok()?;
        run.data.get(at..at + len)
    }

    /// Counts bytes of a retransmission that differ from what was delivered for the same
    /// sequence numbers: real TCP never does that, so these mean broken sequence numbers.
    fn compare_resent(&mut self, from: u64, bytes: &[u8]) {
        if let Some(have) = self.delivered(from, bytes.len()) {
            let differing = have.iter().zip(bytes).filter(|(a, b)| a != b).count();
            self.conflicting_bytes += differing as u64;
        }
    }

    /// Feeds one segment of this direction.
    pub fn push(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        rst: bool,
        payload: &[u8],
        frame: u64,
    ) -> Pushed {
        if syn {
            let data_origin = seq.wrapping_add(1);
            match self.origin {
                None => {
                    self.origin = Some(data_origin);
                    self.syn_seen = true;
                }
                Some(o) if o == data_origin && self.syn_seen => {} // retransmitted SYN
                Some(_) if !self.syn_seen && self.runs.is_empty() && self.pending.is_empty() => {
                    // Only bare ACKs so far: the SYN defines the origin after all.
                    self.origin = Some(data_origin);
                    self.syn_seen = true;
                }
                Some(_) => return Pushed::NewConnection,
            }
        }
        self.arrival.push(payload, frame);
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let origin = *self.origin.get_or_insert(data_seq);
        let start = unwrap_seq(origin, self.next, data_seq);
        let end = start + payload.len() as i64;
        if rst {
            self.close = Some(Close::Rst { frame });
        }
        if fin && self.close.is_none() {
            self.close = Some(Close::Fin { frame });
        }
        if payload.is_empty() {
            return Pushed::Accepted;
        }
        let next = i64::try_from(self.next).unwrap_or(i64::MAX);
        if end <= next {
            self.duplicate_bytes += payload.len() as u64;
            if let Ok(from) = u64::try_from(start) {
                self.compare_resent(from, payload);
            }
            return Pushed::Accepted;
        }
        // Trim what we already have (a retransmission that also carries new bytes).
        let skip = usize::try_from((next - start).max(0)).unwrap_or(0);
        self.duplicate_bytes += skip as u64;
        if let Ok(from) = u64::try_from(start)
            && skip > 0
        {
            self.compare_resent(from, &payload[..skip]);
        }
        let start = start.max(next) as u64;
        let payload = &payload[skip..];
        if start == self.next {
            self.deliver(payload, frame);
            self.drain();
        } else if start - self.next > MAX_AHEAD {
            self.notes.push(format!(
                "frame {frame}: segment {} bytes beyond the next expected byte dropped",
                start - self.next
            ));
        } else {
            self.pending_bytes += payload.len();
            match self.pending.get(&start) {
                Some((have, _)) if have.len() >= payload.len() => {
                    self.pending_bytes -= payload.len();
                    self.duplicate_bytes += payload.len() as u64;
                }
                _ => {
                    if let Some((old, _)) = self.pending.insert(start, (payload.to_vec(), frame)) {
                        self.pending_bytes -= old.len();
                        self.duplicate_bytes += old.len() as u64;
                    }
                }
            }
            while self.pending_bytes > self.max_pending {
                // Waited long enough: the hole is not going to fill.
                self.skip_to_pending();
            }
        }
        Pushed::Accepted
    }

    fn deliver(&mut self, bytes: &[u8], frame: u64) {
        match self.runs.last_mut() {
            Some(run) if run.end() == self.next => run.push(bytes, frame),
            _ => {
                let mut run = Run::new(self.next);
                run.push(bytes, frame);
                self.runs.push(run);
            }
        }
        self.next += bytes.len() as u64;
    }

    /// Delivers buffered segments that have become contiguous.
    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let (data, frame) = entry.remove();
            self.pending_bytes -= data.len();
            let end = start + data.len() as u64;
            if end <= self.next {
                self.duplicate_bytes += data.len() as u64;
                self.compare_resent(start, &data);
                continue;
            }
            let skip = (self.next - start) as usize;
            self.duplicate_bytes += skip as u64;
            self.compare_resent(start, &data[..skip]);
            self.deliver(&data[skip..], frame);
        }
    }

    /// Declares the hole before the first buffered segment a gap and moves past it.
    fn skip_to_pending(&mut self) {
        let Some((&start, &(_, frame))) = self.pending.first_key_value() else {
            return;
        };
        if start > self.next {
            self.gaps.push(Gap {
                offset: self.next,
                len: start - self.next,
                resumed_in_frame: frame,
            });
            self.next = start;
        }
        self.drain();
    }

    /// Ends the direction: whatever is still buffered is delivered after a gap.
    pub fn finish(mut self) -> Reassembled {
        while !self.pending.is_empty() {
            self.skip_to_pending();
        }
        Reassembled {
            runs: self.runs,
            gaps: self.gaps,
            syn_seen: self.syn_seen,
            duplicate_bytes: self.duplicate_bytes,
            close: self.close,
            notes: self.notes,
            arrival: self.arrival,
            conflicting_bytes: self.conflicting_bytes,
        }
    }
}

/// The outcome of reassembling one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// Contiguous byte runs in stream order; consecutive runs are separated by a gap.
    pub runs: Vec<Run>,
    pub gaps: Vec<Gap>,
    /// Whether the stream starts at its SYN (otherwise the capture began mid-connection and the
    /// first run may start in the middle of a message).
    pub syn_seen: bool,
    /// Bytes received more than once (retransmissions, overlaps) and dropped.
    pub duplicate_bytes: u64,
    pub close: Option<Close>,
    pub notes: Vec<String>,
    /// Every payload byte in the order the frames came, sequence numbers ignored. Only useful
    /// when `conflicting_bytes` shows the sequence numbers cannot be trusted (some generated or
    /// rewritten captures number their segments wrongly).
    pub arrival: Run,
    /// Bytes that arrived again for sequence numbers already delivered, with different content.
    pub conflicting_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seq, flags "S"/"F"/"R" letters, payload, frame)
    type Seg<'a> = (u32, &'a str, &'a [u8], u64);

    fn run_all(segs: &[Seg<'_>]) -> Reassembled {
        run_all_bounded(segs, DEFAULT_MAX_PENDING)
    }

    fn run_all_bounded(segs: &[Seg<'_>], max: usize) -> Reassembled {
        let mut r = Reassembler::new(max);
        for &(seq, flags, payload, frame) in segs {
            let p = r.push(
                seq,
                flags.contains('S'),
                flags.contains('F'),
                flags.contains('R'),
                payload,
                frame,
            );
            assert_eq!(p, Pushed::Accepted);
        }
        r.finish()
    }

    fn bytes(r: &Reassembled) -> Vec<u8> {
        r.runs.iter().flat_map(|r| r.data.clone()).collect()
    }

    #[test]
    fn in_order_after_syn() {
        let r = run_all(&[
            (99, "S", b"", 1),
            (100, "", b"abc", 2),
            (103, "", b"def", 3),
        ]);
        assert!(r.syn_seen);
        assert_eq!(r.runs.len(), 1);
        assert_eq!(r.runs[0].offset, 0);
        assert_eq!(bytes(&r), b"abcdef");
        assert!(r.gaps.is_empty());
        assert_eq!(r.duplicate_bytes, 0);
    }

    #[test]
    fn reordered_segments_are_put_back_in_order() {
        let r = run_all(&[
            (99, "S", b"", 1),
            (106, "", b"ghi", 4),
            (103, "", b"def", 3),
            (100, "", b"abc", 2),
        ]);
        assert_eq!(bytes(&r), b"abcdefghi");
        assert_eq!(r.runs.len(), 1);
        assert!(r.gaps.is_empty());
        // Byte-to-frame map follows stream order, not arrival order.
        let run = &r.runs[0];
        assert_eq!(run.frames(0..9), vec![2, 3, 4]);
        assert_eq!(run.frames(2..4), vec![2, 3]);
        assert_eq!(run.frame_at(8), Some(4));
        assert_eq!(run.frame_at(9), None);
    }

    #[test]
    fn retransmission_never_duplicates() {
        let r = run_all(&[
            (99, "S", b"", 1),
            (100, "", b"abc", 2),
            (100, "", b"abc", 3),
            (103, "", b"def", 4),
            (100, "", b"abcdef", 5),
        ]);
        assert_eq!(bytes(&r), b"abcdef");
        assert_eq!(r.duplicate_bytes, 9);
        assert_eq!(r.runs[0].frames(0..6), vec![2, 4]);
    }

    #[test]
    fn overlaps_keep_first_copy_and_take_only_new_bytes() {
        let r = run_all(&[
            (0, "", b"abcd", 1),
            (2, "", b"cdEF", 2), // overlaps 2 bytes, 2 new
            (10, "", b"kl", 4),  // ahead
            (8, "", b"ijKL", 5), // ahead, overlaps the buffered one
            (5, "", b"fgh", 3),  // fills the hole, overlaps 1
        ]);
        assert_eq!(bytes(&r), b"abcdEFghijKL");
        assert_eq!(r.duplicate_bytes, 5);
        assert!(r.gaps.is_empty());
    }

    #[test]
    fn overlap_table() {
        // Each case: segments, expected stream, expected duplicate count.
        type Case<'a> = (&'a str, Vec<Seg<'a>>, &'a [u8], u64);
        let cases: Vec<Case> = vec![
            (
                "exact duplicate",
                vec![(0, "", b"ab", 1), (0, "", b"ab", 2)],
                b"ab",
                2,
            ),
            (
                "contained",
                vec![(0, "", b"abcd", 1), (1, "", b"bc", 2)],
                b"abcd",
                2,
            ),
            (
                "extends",
                vec![(0, "", b"ab", 1), (0, "", b"abcd", 2)],
                b"abcd",
                2,
            ),
            (
                "same start buffered twice keeps the longer",
                vec![(2, "", b"c", 1), (2, "", b"cd", 2), (0, "", b"ab", 3)],
                b"abcd",
                1,
            ),
            (
                "buffered segment superseded by an in-order one",
                vec![(3, "", b"d", 1), (0, "", b"abcde", 2)],
                b"abcde",
                1,
            ),
        ];
        for (name, mut segs, want, dups) in cases {
            // An empty segment first fixes the stream origin at sequence 0.
            segs.insert(0, (0, "", b"", 0));
            let r = run_all(&segs);
            assert_eq!(bytes(&r), want, "{name}");
            assert_eq!(r.duplicate_bytes, dups, "{name}");
            assert!(r.gaps.is_empty(), "{name}");
        }
    }

    #[test]
    fn sequence_wraps_around() {
        let isn = u32::MAX - 3;
        let r = run_all(&[
            (isn, "S", b"", 1),
            (isn.wrapping_add(1), "", b"abc", 2), // MAX-2..MAX
            (1, "", b"ef", 4),                    // after wrap, out of order
            (0, "", b"d", 3),
            (isn.wrapping_add(1), "", b"abc", 5), // retransmit from before the wrap
        ]);
        assert_eq!(bytes(&r), b"abcdef");
        assert!(r.gaps.is_empty());
        assert_eq!(r.duplicate_bytes, 3);
    }

    #[test]
    fn unwrap_picks_the_nearest_wrap() {
        assert_eq!(unwrap_seq(10, 0, 15), 5);
        assert_eq!(unwrap_seq(10, 0, 5), -5);
        assert_eq!(unwrap_seq(0, (1 << 32) - 10, 5), (1 << 32) + 5);
        assert_eq!(unwrap_seq(0, (1 << 32) + 10, u32::MAX - 5), (1 << 32) - 6);
        assert_eq!(unwrap_seq(0, 3 << 32, 7), (3 << 32) + 7);
    }

    #[test]
    fn gap_that_never_fills_is_reported() {
        let r = run_all(&[
            (99, "S", b"", 1),
            (100, "", b"abc", 2),
            (110, "", b"klm", 4),
            (113, "", b"n", 5),
        ]);
        assert_eq!(r.runs.len(), 2);
        assert_eq!(r.runs[0].data, b"abc");
        assert_eq!(r.runs[1].offset, 10);
        assert_eq!(r.runs[1].data, b"klmn");
        assert_eq!(
            r.gaps,
            vec![Gap {
                offset: 3,
                len: 7,
                resumed_in_frame: 4
            }]
        );
    }

    #[test]
    fn bounded_buffer_forces_a_gap_early() {
        // With room for 4 pending bytes, the fifth makes us give up on the hole.
        let r = run_all_bounded(
            &[
                (0, "", b"a", 1),
                (5, "", b"fgh", 2),
                (8, "", b"ij", 3),
                (2, "", b"c", 4), // arrives after the gap was declared: before `next`, dropped
            ],
            4,
        );
        assert_eq!(r.gaps.len(), 1);
        assert_eq!(r.gaps[0].offset, 1);
        assert_eq!(r.gaps[0].len, 4);
        assert_eq!(bytes(&r), b"afghij");
        assert_eq!(r.duplicate_bytes, 1);
    }

    #[test]
    fn fin_and_rst_are_recorded_and_take_sequence_space() {
        let r = run_all(&[(99, "S", b"", 1), (100, "F", b"ab", 2), (103, "", b"", 3)]);
        assert_eq!(r.close, Some(Close::Fin { frame: 2 }));
        assert_eq!(bytes(&r), b"ab");
        let r = run_all(&[(0, "", b"ab", 1), (2, "R", b"", 2)]);
        assert_eq!(r.close, Some(Close::Rst { frame: 2 }));
    }

    #[test]
    fn mid_stream_start_uses_first_segment_and_drops_earlier_bytes() {
        let r = run_all(&[(5000, "", b"xyz", 1), (4990, "", b"old", 2)]);
        assert!(!r.syn_seen);
        assert_eq!(bytes(&r), b"xyz");
        assert_eq!(r.duplicate_bytes, 3);
    }

    #[test]
    fn syn_after_bare_acks_defines_origin_and_new_isn_is_new_connection() {
        let mut r = Reassembler::default();
        assert_eq!(r.push(7, false, false, false, b"", 1), Pushed::Accepted);
        assert_eq!(r.push(99, true, false, false, b"", 2), Pushed::Accepted);
        assert_eq!(r.push(99, true, false, false, b"", 3), Pushed::Accepted);
        assert_eq!(r.push(100, false, false, false, b"a", 4), Pushed::Accepted);
        assert_eq!(
            r.push(5000, true, false, false, b"", 5),
            Pushed::NewConnection
        );
        let out = r.finish();
        assert_eq!(bytes(&out), b"a");
    }

    #[test]
    fn syn_with_data_starts_at_offset_zero() {
        // TCP Fast Open: data rides on the SYN.
        let r = run_all(&[(99, "S", b"ab", 1), (102, "", b"c", 2)]);
        assert_eq!(bytes(&r), b"abc");
        assert_eq!(r.runs[0].frames(0..3), vec![1, 2]);
    }

    #[test]
    fn resent_bytes_that_differ_are_counted_and_arrival_order_is_kept() {
        // Honest retransmission: no conflict.
        let r = run_all(&[(0, "", b"abcd", 1), (2, "", b"cdef", 2), (0, "", b"ab", 3)]);
        assert_eq!(r.conflicting_bytes, 0);
        // Broken numbering (each segment claims to start near 0): bytes differ.
        let r = run_all(&[(0, "", b"abcd", 1), (2, "", b"WXYZ", 2), (0, "", b"Q", 3)]);
        assert_eq!(r.conflicting_bytes, 3); // W, X vs c, d; Q vs a
        assert_eq!(bytes(&r), b"abcdYZ");
        assert_eq!(r.arrival.data, b"abcdWXYZQ");
        assert_eq!(r.arrival.frames(0..9), vec![1, 2, 3]);
    }

    #[test]
    fn absurd_jump_is_dropped_with_a_note() {
        let r = run_all(&[(0, "", b"a", 1), (1 << 31, "", b"b", 2)]);
        assert_eq!(bytes(&r), b"a");
        assert!(r.gaps.is_empty());
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(r.notes[0].starts_with("frame 2:"), "{:?}", r.notes);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any segmentation of a stream, delivered in any order with any duplicates and from
            /// any initial sequence number (wrap included), reassembles to exactly the stream,
            /// with each byte attributed to the first frame that carried it.
            #[test]
            fn any_order_any_duplicates_any_isn(
                data in proptest::collection::vec(any::<u8>(), 1..600),
                cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
                dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
                order in any::<proptest::sample::Index>(),
                isn in any::<u32>(),
            ) {
                let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(data.len())).collect();
                bounds.push(0);
                bounds.push(data.len());
                bounds.sort();
                bounds.dedup();
                let mut segs: Vec<(usize, usize)> =
                    bounds.windows(2).map(|w| (w[0], w[1])).collect();
                for d in &dups {
                    let s = segs[d.index(segs.len())];
                    segs.push(s);
                }
                // A deterministic shuffle driven by `order`.
                let n = segs.len();
                let k = order.index(n.max(1));
                segs.rotate_left(k);
                let (a, b) = segs.split_at_mut(n / 2);
                a.reverse();
                let mut segs: Vec<(usize, usize)> = b.iter().chain(a.iter()).copied().collect();
                segs.dedup();

                let mut r = Reassembler::default();
                prop_assert_eq!(r.push(isn, true, false, false, b"", 0), Pushed::Accepted);
                for (i, &(from, to)) in segs.iter().enumerate() {
                    let seq = isn.wrapping_add(1).wrapping_add(from as u32);
                    r.push(seq, false, false, false, &data[from..to], i as u64 + 1);
                }
                let out = r.finish();
                prop_assert!(out.gaps.is_empty());
                prop_assert_eq!(out.runs.len(), 1);
                prop_assert_eq!(&out.runs[0].data, &data);
                prop_assert_eq!(out.conflicting_bytes, 0);
                let total: usize = segs.iter().map(|(f, t)| t - f).sum();
                prop_assert_eq!(out.duplicate_bytes as usize, total - data.len());
                // Each byte's frame is the first segment (in arrival order) that covered it.
                for (at, byte_frame) in (0..data.len()).map(|i| (i, out.runs[0].frame_at(i))) {
                    let first = segs
                        .iter()
                        .position(|&(f, t)| f <= at && at < t)
                        .map(|p| p as u64 + 1);
                    prop_assert_eq!(byte_frame, first, "byte {}", at);
                }
            }
        }
    }
}
