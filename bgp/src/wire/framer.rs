//! Splits a TCP byte stream into BGP messages (RFC 4271 §4.1).
//!
//! Bytes are appended as they arrive; [`Framer::next_frame`] hands out one complete message at
//! a time. Nothing is allocated on the word of a length field: the buffer only ever holds bytes
//! that were received, and a length outside 19..=max is rejected as soon as the header is in.

use bytes::{Bytes, BytesMut};

use super::error::MessageError;
use super::header::{self, HEADER_LEN, MAX_MESSAGE_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framer {
    buf: BytesMut,
    max_len: usize,
}

impl Framer {
    /// `max_len` is 4096, or 65535 once RFC 8654 extended messages are negotiated.
    pub fn new(max_len: usize) -> Self {
        Framer {
            buf: BytesMut::new(),
            max_len: max_len.clamp(HEADER_LEN, usize::from(u16::MAX)),
        }
    }

    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.clamp(HEADER_LEN, usize::from(u16::MAX));
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message (header included), `Ok(None)` if more bytes are needed, or the
    /// header error to send (the stream is then unusable: the error repeats).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, MessageError> {
        let Some(head) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        header::check_marker(head)?;
        let len = u16::from_be_bytes([head[16], head[17]]);
        header::check_length(len, self.max_len)?;
        if self.buf.len() < usize::from(len) {
            return Ok(None);
        }
        let frame = self.buf.split_to(usize::from(len)).freeze();
        // Keep the buffer from growing without bound across a long session.
        if self.buf.is_empty() && self.buf.capacity() > 4 * MAX_MESSAGE_LEN {
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(MAX_MESSAGE_LEN)
    }
}
