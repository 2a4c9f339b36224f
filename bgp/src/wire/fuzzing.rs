//! Bodies of the fuzz targets, as plain functions so `cargo test` can run them on a
//! deterministic corpus (`tests/wire_fuzz_smoke.rs`) and `cargo fuzz` on whatever it finds.
//!
//! Each function panics only when a codec property is violated — which is the point.

use std::collections::BTreeSet;

use bytes::BytesMut;

use super::family::{Afi, Safi};
use super::header::MAX_EXTENDED_MESSAGE_LEN;
use super::{DecodeContext, Family, Framer, Message, decode_message};

/// A decode context from the first input octet: bit 0 four-octet AS, bit 1 extended message,
/// bit 2 iBGP, bits 3–5 ADD-PATH for IPv4 unicast / IPv6 unicast / an opaque family.
pub fn context_from_byte(b: u8) -> DecodeContext {
    let mut add_path_rx = BTreeSet::new();
    if b & 0x08 != 0 {
        add_path_rx.insert(Family::IPV4_UNICAST);
    }
    if b & 0x10 != 0 {
        add_path_rx.insert(Family::IPV6_UNICAST);
    }
    if b & 0x20 != 0 {
        add_path_rx.insert(Family::new(Afi::IPV4, Safi::MPLS_VPN));
    }
    DecodeContext {
        four_octet_as: b & 0x01 != 0,
        extended_message: b & 0x02 != 0,
        add_path_rx,
        ibgp: b & 0x04 != 0,
        peer_as: None,
    }
}

/// Decodes `data[1..]` as a message under the context of `data[0]`. When it decodes, checks
/// that it re-encodes, that the re-encoding decodes to the same message, and that a message
/// without RFC 7606 errors re-encodes to itself once canonical.
pub fn decode_any(data: &[u8]) -> Option<Message> {
    let (&first, frame) = data.split_first()?;
    let cx = context_from_byte(first);
    let msg = decode_message(frame, &cx).ok()?;
    let _ = serde_json::to_string(&msg).map_err(|e| panic!("JSON of {msg:?}: {e}"));
    let mut out = BytesMut::new();
    match msg.encode(&cx, &mut out) {
        Ok(()) => {
            let again = decode_message(&out, &cx)
                .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
            if clean(&msg) {
                assert_eq!(again, msg, "decode(encode(m)) != m");
                let mut twice = BytesMut::new();
                again.encode(&cx, &mut twice).expect("second encode");
                assert_eq!(out, twice, "encoding is not canonical");
            }
        }
        // A decoded message may legitimately not re-encode: e.g. an UPDATE whose RFC 7606
        // errors dropped attributes, or a message longer than the context allows once
        // normalised. Messages without errors must always re-encode.
        Err(e) => assert!(
            !clean(&msg),
            "decoded message {msg:?} does not re-encode: {e}"
        ),
    }
    Some(msg)
}

fn clean(m: &Message) -> bool {
    match m {
        Message::Update(u) => u.errors.is_empty(),
        _ => true,
    }
}

/// Feeds `data[2..]` to a framer in chunks whose sizes come from `data[0..2]`, and checks that
/// the frames it returns are exactly the messages a one-shot split would find.
pub fn frame_any(data: &[u8]) -> usize {
    let [a, b, stream @ ..] = data else { return 0 };
    let max = if a & 1 == 0 {
        4096
    } else {
        MAX_EXTENDED_MESSAGE_LEN
    };
    let chunk = usize::from(*b).max(1);
    let mut framer = Framer::new(max);
    let mut frames = Vec::new();
    let mut failed = None;
    'feed: for part in stream.chunks(chunk) {
        framer.extend(part);
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => {
                    assert!(
                        f.len() >= 19 && f.len() <= max,
                        "frame length {} out of bounds",
                        f.len()
                    );
                    assert_eq!(usize::from(u16::from_be_bytes([f[16], f[17]])), f.len());
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'feed;
                }
            }
        }
    }
    // Reference: the same stream fed in one piece gives the same frames.
    let mut whole = Framer::new(max);
    whole.extend(stream);
    let mut reference = Vec::new();
    let mut ref_failed = None;
    loop {
        match whole.next_frame() {
            Ok(Some(f)) => reference.push(f),
            Ok(None) => break,
            Err(e) => {
                ref_failed = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        frames, reference,
        "chunked framing differs from one-shot framing"
    );
    assert_eq!(failed, ref_failed, "chunked framing fails differently");
    let consumed: usize = frames.iter().map(|f| f.len()).sum();
    if failed.is_none() {
        assert_eq!(
            consumed + framer.buffered(),
            stream.len(),
            "framer lost or invented bytes"
        );
    }
    frames.len()
}
