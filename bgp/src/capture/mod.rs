//! Packet-capture reading and TCP stream reassembly, for `bgp-decode` and the capture tests.
//!
//! - [`file`]: pcap / pcapng bytes to numbered [`Frame`]s.
//! - [`packet`]: one frame to one [`TcpSegment`] (link layer, IP, TCP).
//! - [`reassembly`]: one direction's segments to in-order byte [`Run`]s.
//! - [`reassemble`] (here): routes segments to their direction and connection.
//! - [`messages`]: BGP messages out of the streams (framing, per-direction decode context).
//!
//! Pure: no sockets. Only [`messages`] knows BGP (through `wire`); the layers below it deal in
//! bytes, frames and TCP, and must stay that way so they can serve any TCP protocol.

pub mod file;
pub mod messages;
pub mod packet;
pub mod reassembly;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

pub use file::{CaptureError, CaptureFile, Format, Frame, LinkType, read_capture};
pub use packet::{Skip, TcpSegment, tcp_segment};
pub use reassembly::{Close, Gap, Reassembled, Reassembler, Run};

/// One direction of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Flow {
    /// The opposite direction.
    pub fn reverse(self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

/// One reassembled direction of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpStream {
    pub flow: Flow,
    /// Numbers the connections in order of first appearance; both directions of a connection
    /// share it, so a stream's peer is the stream with the reversed flow and the same number.
    pub connection: usize,
    /// First and last frame that carried a segment of this direction.
    pub first_frame: u64,
    pub last_frame: u64,
    pub stream: Reassembled,
    /// Frames of this direction that the capture cut short (snap length); their captured bytes
    /// are in the stream and what followed them is a gap.
    pub truncated_frames: Vec<u64>,
}

/// A frame that was not used, and why (only the reasons that may lose bytes are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFrame {
    pub frame: u64,
    pub reason: Skip,
}

/// All TCP streams of a capture that passed the caller's filter.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    pub streams: Vec<TcpStream>,
    /// Frames that could not be parsed to TCP for a reason that may lose stream bytes
    /// (fragments, malformed or truncated frames).
    pub problems: Vec<SkippedFrame>,
}

struct Open {
    connection: usize,
    first_frame: u64,
    last_frame: u64,
    r: Reassembler,
    truncated_frames: Vec<u64>,
}

/// Reassembles every TCP direction whose segments satisfy `keep` (e.g. "port 179 on either
/// side"), in the order the frames are given. Streams come out ordered by first frame.
pub fn reassemble<'a>(
    frames: impl IntoIterator<Item = &'a Frame>,
    keep: impl Fn(&TcpSegment<'_>) -> bool,
) -> Streams {
    let mut out = Streams::default();
    let mut open: HashMap<Flow, Open> = HashMap::new();
    // Connection number of the latest stream opened for each direction.
    let mut last_connection: HashMap<Flow, usize> = HashMap::new();
    let mut next_connection = 0usize;
    let mut done: Vec<TcpStream> = Vec::new();

    for frame in frames {
        let seg = match tcp_segment(frame.link, &frame.data) {
            Ok(seg) => seg,
            Err(reason) => {
                if reason.is_problem() {
                    out.problems.push(SkippedFrame {
                        frame: frame.number,
                        reason,
                    });
                }
                continue;
            }
        };
        if !keep(&seg) {
            continue;
        }
        let flow = Flow {
            src: seg.src,
            dst: seg.dst,
        };
        let pushed = match open.get_mut(&flow) {
            Some(o) => {
                o.last_frame = frame.number;
                if seg.truncated {
                    o.truncated_frames.push(frame.number);
                }
                o.r.push(
                    seg.seq,
                    seg.syn,
                    seg.fin,
                    seg.rst,
                    seg.payload,
                    frame.number,
                )
            }
            None => reassembly::Pushed::NewConnection,
        };
        if pushed == reassembly::Pushed::NewConnection {
            if let Some(old) = open.remove(&flow) {
                done.push(finish(flow, old));
            }
            // Join the reverse direction's connection unless this direction already had a
            // stream in it (then this is a reconnect on the same 4-tuple).
            let connection = match open.get(&flow.reverse()) {
                Some(rev) if last_connection.get(&flow) != Some(&rev.connection) => rev.connection,
                _ => {
                    next_connection += 1;
                    next_connection - 1
                }
            };
            last_connection.insert(flow, connection);
            let mut r = Reassembler::default();
            r.push(
                seg.seq,
                seg.syn,
                seg.fin,
                seg.rst,
                seg.payload,
                frame.number,
            );
            open.insert(
                flow,
                Open {
                    connection,
                    first_frame: frame.number,
                    last_frame: frame.number,
                    r,
                    truncated_frames: if seg.truncated {
                        vec![frame.number]
                    } else {
                        Vec::new()
                    },
                },
            );
        }
    }
    done.extend(open.into_iter().map(|(flow, o)| finish(flow, o)));
    done.sort_by_key(|s| (s.first_frame, s.flow));
    out.streams = done;
    out
}

fn finish(flow: Flow, o: Open) -> TcpStream {
    TcpStream {
        flow,
        connection: o.connection,
        first_frame: o.first_frame,
        last_frame: o.last_frame,
        stream: o.r.finish(),
        truncated_frames: o.truncated_frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[allow(clippy::too_many_arguments)]
    fn frame(
        number: u64,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        flags: &str,
        payload: &[u8],
    ) -> Frame {
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('R') {
            b = b.rst();
        }
        let mut data = Vec::new();
        b.write(&mut data, payload).unwrap();
        Frame {
            number,
            timestamp: None,
            link: LinkType::Ethernet,
            data,
            original_len: 0,
        }
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    fn bgp_only(s: &TcpSegment<'_>) -> bool {
        s.src.port() == 179 || s.dst.port() == 179
    }

    #[test]
    fn both_directions_share_a_connection_and_filter_applies() {
        let frames = vec![
            frame(1, A, 40000, B, 179, 10, "S", b""),
            frame(2, B, 179, A, 40000, 500, "S", b""),
            frame(3, A, 40000, B, 179, 11, "", b"hello"),
            frame(4, B, 179, A, 40000, 501, "", b"world"),
            frame(5, A, 5000, B, 80, 1, "", b"GET /"),
        ];
        let s = reassemble(&frames, bgp_only);
        assert_eq!(s.streams.len(), 2);
        assert!(s.problems.is_empty());
        let (x, y) = (&s.streams[0], &s.streams[1]);
        assert_eq!(x.flow.to_string(), "10.0.0.1:40000 -> 10.0.0.2:179");
        assert_eq!(y.flow, x.flow.reverse());
        assert_eq!(x.connection, y.connection);
        assert_eq!(x.stream.runs[0].data, b"hello");
        assert_eq!(y.stream.runs[0].data, b"world");
        assert_eq!((x.first_frame, x.last_frame), (1, 3));
    }

    #[test]
    fn reconnect_on_same_ports_is_a_new_connection() {
        let frames = vec![
            frame(1, A, 40000, B, 179, 10, "S", b""),
            frame(2, B, 179, A, 40000, 500, "S", b""),
            frame(3, A, 40000, B, 179, 11, "", b"one"),
            frame(4, A, 40000, B, 179, 14, "R", b""),
            frame(5, A, 40000, B, 179, 9000, "S", b""),
            frame(6, B, 179, A, 40000, 7000, "S", b""),
            frame(7, A, 40000, B, 179, 9001, "", b"two"),
        ];
        let s = reassemble(&frames, bgp_only);
        let summary: Vec<_> = s
            .streams
            .iter()
            .map(|t| (t.flow.src.port(), t.connection, t.first_frame, bytes(t)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (40000, 0, 1, b"one".to_vec()),
                (179, 0, 2, vec![]),
                (40000, 1, 5, b"two".to_vec()),
                (179, 1, 6, vec![]),
            ]
        );
        assert_eq!(s.streams[0].stream.close, Some(Close::Rst { frame: 4 }));
    }

    fn bytes(t: &TcpStream) -> Vec<u8> {
        t.stream.runs.iter().flat_map(|r| r.data.clone()).collect()
    }

    #[test]
    fn snap_length_cuts_leave_a_gap_and_are_listed() {
        let mut cut = frame(3, A, 40000, B, 179, 14, "", b"defgh");
        cut.data.truncate(cut.data.len() - 3);
        let frames = vec![
            frame(1, A, 40000, B, 179, 10, "S", b""),
            frame(2, A, 40000, B, 179, 11, "", b"abc"),
            cut,
            frame(4, A, 40000, B, 179, 19, "", b"ij"),
        ];
        let s = reassemble(&frames, bgp_only);
        let t = &s.streams[0];
        assert_eq!(t.truncated_frames, vec![3]);
        assert_eq!(t.stream.runs.len(), 2);
        assert_eq!(t.stream.runs[0].data, b"abcde");
        assert_eq!(t.stream.runs[1].data, b"ij");
        assert_eq!(t.stream.gaps[0].len, 3);
        assert!(s.problems.is_empty());
    }

    #[test]
    fn problem_frames_are_listed() {
        // Cut inside the TCP header: nothing usable.
        let mut bad = frame(1, A, 40000, B, 179, 10, "", b"abcdef");
        bad.data.truncate(14 + 20 + 10);
        let s = reassemble(&[bad], bgp_only);
        assert!(s.streams.is_empty());
        assert_eq!(s.problems.len(), 1);
        assert_eq!(s.problems[0].frame, 1);
    }

    mod robustness {
        use super::*;
        use crate::capture::messages::decode_streams;
        use crate::wire::DecodeContext;
        use proptest::prelude::*;

        const LINKS: [u32; 10] = [0, 1, 101, 108, 113, 228, 229, 276, 147, 12345];

        fn magic() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(vec![0xa1, 0xb2, 0xc3, 0xd4]),
                Just(vec![0xd4, 0xc3, 0xb2, 0xa1]),
                Just(vec![0x4d, 0x3c, 0xb2, 0xa1]),
                Just(vec![0x0a, 0x0d, 0x0d, 0x0a]),
            ]
        }

        proptest! {
            /// Files are untrusted input: any bytes after a valid magic number give frames or an
            /// error, never a panic.
            #[test]
            fn any_capture_file_bytes(m in magic(), rest in proptest::collection::vec(any::<u8>(), 0..400)) {
                let bytes = [m, rest].concat();
                let _ = read_capture(&bytes);
            }

            /// Any frame bytes under any link type: a segment or a reason, never a panic; and
            /// whatever comes out survives reassembly and BGP decoding.
            #[test]
            fn any_frames_through_the_whole_pipeline(
                frames in proptest::collection::vec(
                    (0usize..LINKS.len(), proptest::collection::vec(any::<u8>(), 0..200)),
                    0..30,
                ),
            ) {
                let frames: Vec<Frame> = frames
                    .into_iter()
                    .enumerate()
                    .map(|(i, (l, data))| Frame {
                        number: i as u64 + 1,
                        timestamp: None,
                        link: LinkType::from_number(LINKS[l]),
                        original_len: data.len() as u32,
                        data,
                    })
                    .collect();
                let streams = reassemble(&frames, |_| true);
                let _ = decode_streams(&streams, &DecodeContext::default());
            }

            /// Arbitrary TCP segments of one flow (any sequence numbers, flags and payloads,
            /// BGP-looking or not) reassemble and decode without panicking.
            #[test]
            fn any_segments_of_one_flow(
                segs in proptest::collection::vec(
                    (any::<u32>(), any::<bool>(), any::<bool>(), any::<bool>(),
                     proptest::collection::vec(prop_oneof![Just(0xffu8), any::<u8>()], 0..120)),
                    0..40,
                ),
            ) {
                let frames: Vec<Frame> = segs
                    .iter()
                    .enumerate()
                    .map(|(i, (seq, syn, fin, rst, payload))| {
                        frame(i as u64 + 1, A, 40000, B, 179, *seq,
                              &format!("{}{}{}", if *syn { "S" } else { "" },
                                       if *fin { "F" } else { "" }, if *rst { "R" } else { "" }),
                              payload)
                    })
                    .collect();
                let streams = reassemble(&frames, bgp_only);
                let _ = decode_streams(&streams, &DecodeContext::default());
            }
        }
    }
}
