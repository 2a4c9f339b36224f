//! BGP messages out of reassembled TCP streams: framing with [`Framer`], a decode context per
//! direction negotiated from the OPENs seen on that connection (or supplied by the caller for
//! captures that start mid-session), and decoding, each message named by the frames it came in.
//!
//! This is the one capture module that knows BGP; the stream reading below it does not. It owns
//! no output format (that is `bgp-decode`'s).

use std::collections::HashMap;

use bytes::Bytes;

use super::{Flow, Run, Streams, TcpStream};
use crate::wire::{
    DecodeContext, Framer, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, Message, MessageError,
    MessageType, Open, decode_message,
};

/// Where a message came from: frames of a capture, or a position in a hex dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Capture {
        /// The frames that carried the message's bytes, in stream order.
        frames: Vec<u64>,
        flow: Flow,
        connection: usize,
        /// Stream offset of the first byte.
        offset: u64,
    },
    Hex {
        /// 1-based message number in the dump.
        index: usize,
        /// Byte offset of the message in the dump.
        offset: usize,
    },
}

impl Origin {
    /// "frame 12", "frames 12, 13", or "message 3 (byte 57)".
    pub fn describe(&self) -> String {
        match self {
            Origin::Capture { frames, .. } => match frames.as_slice() {
                [] => "no frame".to_string(),
                [f] => format!("frame {f}"),
                many => format!(
                    "frames {}",
                    many.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Origin::Hex { index, offset } => format!("message {index} (byte {offset})"),
        }
    }

    pub fn first_frame(&self) -> Option<u64> {
        match self {
            Origin::Capture { frames, .. } => frames.first().copied(),
            Origin::Hex { .. } => None,
        }
    }
}

/// One BGP message found in the input.
#[derive(Debug, Clone)]
pub struct Record {
    pub origin: Origin,
    /// The frame by which the whole message, and every message before it in its stream, had
    /// arrived: when a receiving application would have read it. Records are ordered by it.
    pub completed_in_frame: Option<u64>,
    /// The message bytes, header included.
    pub bytes: Bytes,
    /// Where the decode context came from.
    pub negotiated: Negotiated,
    pub context: DecodeContext,
    pub result: Result<Message, MessageError>,
}

impl Record {
    /// The header's type code name, readable even when decoding failed.
    pub fn type_name(&self) -> String {
        match self.bytes.get(18).copied() {
            Some(t) => MessageType::from_u8(t)
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| format!("TYPE-{t}")),
            None => "TRUNCATED".to_string(),
        }
    }

    /// Why this message is not cleanly decoded: a session-reset error, or RFC 7606 attribute
    /// errors in an UPDATE. `None` when it decoded cleanly.
    pub fn failure(&self) -> Option<String> {
        match &self.result {
            Err(e) => Some(e.to_string()),
            Ok(Message::Update(u)) if !u.errors.is_empty() => Some(
                u.errors
                    .iter()
                    .map(|e| e.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Ok(_) => None,
        }
    }
}

/// Where a message's decode context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// From both OPENs of the connection (RFC 4271 §4.2 capabilities as negotiated).
    Both,
    /// Only the sender's OPEN was seen; the receiver is assumed to have agreed.
    SenderOnly,
    /// No OPEN seen: the caller's assumptions (`--as4` etc.).
    Assumed,
    /// An OPEN itself, which needs no context.
    NotNeeded,
}

impl Negotiated {
    pub fn describe(self) -> &'static str {
        match self {
            Negotiated::Both => "negotiated",
            Negotiated::SenderOnly => "from the sender's OPEN only",
            Negotiated::Assumed => "assumed",
            Negotiated::NotNeeded => "not needed",
        }
    }
}

/// Something about the byte streams a reader should know: bytes lost or skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub flow: Option<Flow>,
    pub frame: Option<u64>,
    pub what: String,
}

/// Every message found, in input order (by first frame), and the issues met.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub issues: Vec<Issue>,
}

impl Decoded {
    pub fn failures(&self) -> impl Iterator<Item = (&Record, String)> {
        self.records
            .iter()
            .filter_map(|r| r.failure().map(|f| (r, f)))
    }
}

/// True if `data[at..]` plausibly starts a BGP header: the all-ones marker, a length in range,
/// and a known type. Used to find the first message after a gap or a mid-session start.
fn plausible_header(data: &[u8], at: usize) -> bool {
    let Some(h) = data.get(at..at + HEADER_LEN) else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    h[..16].iter().all(|&b| b == 0xff)
        && (HEADER_LEN..=MAX_EXTENDED_MESSAGE_LEN).contains(&len)
        && MessageType::from_u8(h[18]).is_some()
}

fn find_header(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER_LEN - 1)).find(|&i| plausible_header(data, i))
}

/// A message's bytes with its place in the stream.
struct Piece {
    run: usize,
    start: usize,
    bytes: Bytes,
}

/// Splits one run into messages. `aligned`: the run is known to start at a message boundary.
fn split_run(
    run: &Run,
    run_index: usize,
    aligned: bool,
    flow: Flow,
    pieces: &mut Vec<Piece>,
    errors: &mut Vec<(usize, usize, MessageError)>,
    issues: &mut Vec<Issue>,
) {
    let data = &run.data;
    let mut pos = 0usize;
    if !aligned && !plausible_header(data, 0) {
        let found = find_header(data, 0);
        let skip = found.unwrap_or(data.len());
        issues.push(Issue {
            flow: Some(flow),
            frame: run.frame_at(0),
            what: format!(
                "skipped {skip} bytes at stream offset {} before the first message boundary \
                 (capture started mid-session or after lost bytes)",
                run.offset
            ),
        });
        pos = skip;
    }
    while pos < data.len() {
        // The framer enforces the header rules; the largest legal size is allowed here and the
        // decode context enforces 4096 vs 65535 per message.
        let mut framer = Framer::new(MAX_EXTENDED_MESSAGE_LEN);
        framer.extend(&data[pos..]);
        let mut consumed = 0usize;
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let len = frame.len();
                    pieces.push(Piece {
                        run: run_index,
                        start: pos + consumed,
                        bytes: frame,
                    });
                    consumed += len;
                }
                Ok(None) => {
                    let left = framer.buffered();
                    if left > 0 {
                        issues.push(Issue {
                            flow: Some(flow),
                            frame: run.frame_at(pos + consumed),
                            what: format!(
                                "{left} bytes of an incomplete message at stream offset {} \
                                 (stream ends or bytes are missing)",
                                run.offset + (pos + consumed) as u64
                            ),
                        });
                    }
                    return;
                }
                Err(e) => {
                    // A bad header: report it as a message that failed, then look for the
                    // next plausible header.
                    errors.push((run_index, pos + consumed, e));
                    let start = pos + consumed;
                    let next = find_header(data, start + 1).unwrap_or(data.len());
                    if next > start + 1 {
                        issues.push(Issue {
                            flow: Some(flow),
                            frame: run.frame_at(start),
                            what: format!(
                                "skipped {} bytes after a bad message header",
                                next - start
                            ),
                        });
                    }
                    pos = next;
                    break;
                }
            }
        }
    }
}

/// The byte runs to read a stream from: sequence order, unless the sequence numbers are broken.
fn runs_of(s: &TcpStream) -> &[Run] {
    if s.stream.conflicting_bytes > 0 {
        std::slice::from_ref(&s.stream.arrival)
    } else {
        &s.stream.runs
    }
}

/// Frames, negotiates and decodes every stream. `fallback` is the context for directions whose
/// connection did not show both OPENs (captures that start mid-session).
pub fn decode_streams(streams: &Streams, fallback: &DecodeContext) -> Decoded {
    let mut out = Decoded::default();
    for p in &streams.problems {
        out.issues.push(Issue {
            flow: None,
            frame: Some(p.frame),
            what: p.reason.to_string(),
        });
    }
    struct Split<'a> {
        stream: &'a TcpStream,
        pieces: Vec<Piece>,
        bad_headers: Vec<(usize, usize, MessageError)>,
        open: Option<Open>,
    }
    let mut splits: Vec<Split<'_>> = Vec::new();
    for s in &streams.streams {
        let mut split = Split {
            stream: s,
            pieces: Vec::new(),
            bad_headers: Vec::new(),
            open: None,
        };
        // Broken sequence numbers (resent bytes that differ) make sequence order meaningless;
        // the frames' own order is then the best guess, and is said so.
        let by_arrival = s.stream.conflicting_bytes > 0;
        if by_arrival {
            out.issues.push(Issue {
                flow: Some(s.flow),
                frame: Some(s.first_frame),
                what: format!(
                    "TCP sequence numbers are inconsistent ({} bytes resent with different \
                     content); this direction is read in capture order instead",
                    s.stream.conflicting_bytes
                ),
            });
        } else {
            for g in &s.stream.gaps {
                out.issues.push(Issue {
                    flow: Some(s.flow),
                    frame: Some(g.resumed_in_frame),
                    what: format!(
                        "{} bytes never captured at stream offset {} (a hole in the capture); \
                         messages in it are lost",
                        g.len, g.offset
                    ),
                });
            }
        }
        if let Some(&first) = s.truncated_frames.first() {
            out.issues.push(Issue {
                flow: Some(s.flow),
                frame: Some(first),
                what: format!(
                    "{} frames were cut short by the capture's snap length (first: frame \
                     {first}); the bytes after each cut are missing (capture with -s 0)",
                    s.truncated_frames.len()
                ),
            });
        }
        for note in &s.stream.notes {
            out.issues.push(Issue {
                flow: Some(s.flow),
                frame: None,
                what: note.clone(),
            });
        }
        for (i, run) in runs_of(s).iter().enumerate() {
            let aligned = i == 0 && s.stream.syn_seen;
            split_run(
                run,
                i,
                aligned,
                s.flow,
                &mut split.pieces,
                &mut split.bad_headers,
                &mut out.issues,
            );
        }
        split.open = split.pieces.iter().find_map(|p| {
            if p.bytes.get(18) != Some(&1) {
                return None;
            }
            match decode_message(&p.bytes, &DecodeContext::default()) {
                Ok(Message::Open(o)) => Some(o),
                _ => None,
            }
        });
        splits.push(split);
    }
    // The OPEN each (flow, connection) sent, to negotiate the reverse direction's context.
    let opens: HashMap<(Flow, usize), &Open> = splits
        .iter()
        .filter_map(|s| {
            s.open
                .as_ref()
                .map(|o| ((s.stream.flow, s.stream.connection), o))
        })
        .collect();
    for split in &splits {
        let s = split.stream;
        let peer_open = opens.get(&(s.flow.reverse(), s.connection));
        let (negotiated, cx) = match (&split.open, peer_open) {
            (Some(mine), Some(theirs)) => {
                (Negotiated::Both, DecodeContext::negotiate(mine, theirs))
            }
            // Only the sender's OPEN was captured (one-way captures, collector feeds): assume
            // the receiver accepted the 4-octet AS and extended message capabilities it
            // offered. ADD-PATH is directional and stays as the caller said.
            (Some(mine), None) => {
                let mirrored = DecodeContext::negotiate(mine, mine);
                (
                    Negotiated::SenderOnly,
                    DecodeContext {
                        four_octet_as: fallback.four_octet_as || mirrored.four_octet_as,
                        extended_message: fallback.extended_message || mirrored.extended_message,
                        peer_as: mirrored.peer_as,
                        ..fallback.clone()
                    },
                )
            }
            _ => (Negotiated::Assumed, fallback.clone()),
        };
        let runs = runs_of(s);
        let origin = |run: usize, start: usize, len: usize| {
            let r = &runs[run];
            Origin::Capture {
                frames: r.frames(start..start + len.max(1)),
                flow: s.flow,
                connection: s.connection,
                offset: r.offset + start as u64,
            }
        };
        let mut seen_open = false;
        let mut completed = 0u64;
        for p in &split.pieces {
            let is_open = p.bytes.get(18) == Some(&1);
            // Messages before the OPEN exchange (there should be none) decode without
            // negotiated capabilities, as a receiver would.
            let context = if is_open || (!seen_open && split.open.is_some()) {
                DecodeContext::default()
            } else {
                cx.clone()
            };
            seen_open |= is_open;
            let result = decode_message(&p.bytes, &context);
            let origin = origin(p.run, p.start, p.bytes.len());
            if let Origin::Capture { frames, .. } = &origin {
                completed = completed.max(frames.iter().copied().max().unwrap_or(0));
            }
            out.records.push(Record {
                completed_in_frame: Some(completed),
                origin,
                bytes: p.bytes.clone(),
                negotiated: if is_open {
                    Negotiated::NotNeeded
                } else if seen_open || split.open.is_none() {
                    negotiated
                } else {
                    Negotiated::Assumed
                },
                context,
                result,
            });
        }
        for (run, start, e) in &split.bad_headers {
            let data = &runs[*run].data;
            let end = (*start + HEADER_LEN).min(data.len());
            let origin = origin(*run, *start, end - start);
            out.records.push(Record {
                completed_in_frame: origin.first_frame(),
                origin,
                bytes: Bytes::copy_from_slice(&data[*start..end]),
                negotiated,
                context: cx.clone(),
                result: Err(e.clone()),
            });
        }
    }
    out.records.sort_by(|a, b| {
        let key = |r: &Record| match &r.origin {
            Origin::Capture { flow, offset, .. } => {
                (r.completed_in_frame.unwrap_or(0), Some(*flow), *offset)
            }
            Origin::Hex { offset, .. } => (0, None, *offset as u64),
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Decodes a concatenation of messages (a hex dump's bytes) with one context.
pub fn decode_bytes(data: &[u8], cx: &DecodeContext) -> Decoded {
    let mut out = Decoded::default();
    let mut framer = Framer::new(MAX_EXTENDED_MESSAGE_LEN);
    framer.extend(data);
    let mut offset = 0usize;
    let mut index = 0usize;
    loop {
        index += 1;
        match framer.next_frame() {
            Ok(Some(frame)) => {
                let len = frame.len();
                let context = if frame.get(18) == Some(&1) {
                    DecodeContext::default()
                } else {
                    cx.clone()
                };
                out.records.push(Record {
                    origin: Origin::Hex { index, offset },
                    completed_in_frame: None,
                    result: decode_message(&frame, &context),
                    negotiated: if frame.get(18) == Some(&1) {
                        Negotiated::NotNeeded
                    } else {
                        Negotiated::Assumed
                    },
                    bytes: frame,
                    context,
                });
                offset += len;
            }
            Ok(None) => {
                let left = framer.buffered();
                if left > 0 {
                    out.issues.push(Issue {
                        flow: None,
                        frame: None,
                        what: format!(
                            "{left} trailing bytes at byte {offset} are not a complete message"
                        ),
                    });
                }
                return out;
            }
            Err(e) => {
                let end = (offset + HEADER_LEN).min(data.len());
                out.records.push(Record {
                    origin: Origin::Hex { index, offset },
                    completed_in_frame: None,
                    bytes: Bytes::copy_from_slice(&data[offset..end]),
                    negotiated: Negotiated::Assumed,
                    context: cx.clone(),
                    result: Err(e),
                });
                out.issues.push(Issue {
                    flow: None,
                    frame: None,
                    what: format!(
                        "stopped at byte {offset}: {} bytes after a bad header were not decoded",
                        data.len() - offset
                    ),
                });
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Frame, LinkType, reassemble};
    use crate::wire::{Asn, Capability, Family};
    use bytes::BytesMut;
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;

    fn open(asn: u32, caps: Vec<Capability>) -> Vec<u8> {
        let o = Open::new(
            Asn(asn),
            90,
            Ipv4Addr::new(10, 0, 0, (asn % 250) as u8),
            caps,
        );
        let mut b = BytesMut::new();
        Message::Open(o)
            .encode(&DecodeContext::default(), &mut b)
            .unwrap();
        b.to_vec()
    }

    fn keepalive() -> Vec<u8> {
        let mut k = vec![0xff; 16];
        k.extend_from_slice(&[0, 19, 4]);
        k
    }

    fn seg(n: u64, fwd: bool, seq: u32, flags: &str, payload: &[u8]) -> Frame {
        let (s, d, sp, dp) = if fwd {
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 179)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], 179, 40000)
        };
        let mut b = PacketBuilder::ipv4(s, d, 64).tcp(sp, dp, seq, 1000);
        if flags.contains('S') {
            b = b.syn();
        }
        let mut data = Vec::new();
        b.write(&mut data, payload).unwrap();
        Frame {
            number: n,
            timestamp: None,
            link: LinkType::Raw,
            data,
            original_len: 0,
        }
    }

    #[test]
    fn opens_negotiate_and_messages_are_named_by_frames() {
        let caps = vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(4_200_000_001)),
        ];
        let o1 = open(4_200_000_001, caps.clone());
        let o2 = open(65002, vec![Capability::FourOctetAs(Asn(65002))]);
        let ka = keepalive();
        // The client's OPEN + KEEPALIVE split across two segments, sent in reverse order.
        let both = [o1.clone(), ka.clone()].concat();
        let cut = o1.len() - 5;
        let frames = vec![
            seg(1, true, 99, "S", b""),
            seg(2, false, 499, "S", b""),
            seg(3, true, 100 + cut as u32, "", &both[cut..]),
            seg(4, true, 100, "", &both[..cut]),
            seg(5, false, 500, "", &o2),
        ];
        let streams = reassemble(&frames, |s| s.src.port() == 179 || s.dst.port() == 179);
        let d = decode_streams(&streams, &DecodeContext::default());
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        assert_eq!(d.failures().count(), 0);
        let got: Vec<_> = d
            .records
            .iter()
            .map(|r| (r.origin.describe(), r.type_name(), r.negotiated))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "frames 4, 3".to_string(),
                    "OPEN".to_string(),
                    Negotiated::NotNeeded
                ),
                (
                    "frame 3".to_string(),
                    "KEEPALIVE".to_string(),
                    Negotiated::Both
                ),
                (
                    "frame 5".to_string(),
                    "OPEN".to_string(),
                    Negotiated::NotNeeded
                ),
            ]
        );
        assert!(d.records[1].context.four_octet_as);
    }

    #[test]
    fn mid_session_start_resyncs_on_the_marker_and_uses_the_fallback() {
        let ka = keepalive();
        let data = [&[1u8, 2, 3][..], &ka, &ka].concat();
        let frames = vec![seg(7, true, 1000, "", &data)];
        let streams = reassemble(&frames, |_| true);
        let fallback = DecodeContext {
            four_octet_as: true,
            ..DecodeContext::default()
        };
        let d = decode_streams(&streams, &fallback);
        assert_eq!(d.records.len(), 2);
        assert!(
            d.records
                .iter()
                .all(|r| r.context.four_octet_as && r.negotiated == Negotiated::Assumed)
        );
        assert_eq!(d.issues.len(), 1);
        assert!(
            d.issues[0].what.starts_with("skipped 3 bytes"),
            "{:?}",
            d.issues
        );
    }

    #[test]
    fn bad_header_is_a_named_failure_and_decoding_resumes() {
        let ka = keepalive();
        let mut bad = ka.clone();
        bad[16..18].copy_from_slice(&[0, 5]); // length 5 < 19
        let data = [&ka[..], &bad, &ka].concat();
        let frames = vec![seg(1, true, 99, "S", b""), seg(2, true, 100, "", &data)];
        let d = decode_streams(&reassemble(&frames, |_| true), &DecodeContext::default());
        let fails: Vec<_> = d
            .failures()
            .map(|(r, e)| (r.origin.describe(), e))
            .collect();
        assert_eq!(fails.len(), 1, "{fails:?}");
        assert_eq!(fails[0].0, "frame 2");
        assert!(fails[0].1.contains("header"), "{}", fails[0].1);
        assert_eq!(d.records.iter().filter(|r| r.result.is_ok()).count(), 2);
    }

    #[test]
    fn hex_bytes_split_and_trailing_garbage_is_an_issue() {
        let ka = keepalive();
        let data = [&ka[..], &ka, &[0xff, 0xff]].concat();
        let d = decode_bytes(&data, &DecodeContext::default());
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[1].origin.describe(), "message 2 (byte 19)");
        assert_eq!(d.issues.len(), 1);
        assert!(d.issues[0].what.contains("2 trailing bytes"));
    }
}
