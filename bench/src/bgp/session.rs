//! The injectors' and the monitor's side of a BGP session: just enough of RFC 4271 to reach
//! Established with a real router and keep the session up (OPEN, KEEPALIVE both ways, large hold
//! time), over blocking sockets with one reader and one keepalive thread per session.
//!
//! It owns the TCP connection and the framing. It does not decide what to send (that is
//! [`super::workload`]) or what received UPDATEs mean (that is [`super::tally`]). Sockets are
//! created by the caller's thread, which must already be in the right network namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tabby_bgp::wire::{
    Asn, Capability, DecodeContext, Family, Framer, Message, MessageError, Open, decode_message,
};

/// Hold time we offer (RFC 4271 §4.2); the session uses the smaller of both offers.
pub const HOLD_TIME: u16 = 240;
/// We send a KEEPALIVE at least this often, well inside any hold time ≥ 30 s.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// Blocking reads wake up this often to look at the stop flag.
const READ_POLL: Duration = Duration::from_millis(100);
/// Socket buffers: large, so a write of a whole batch rarely waits on the kernel.
const SOCKET_BUFFER: usize = 4 << 20;
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{peer}: {what}: {source}")]
    Io {
        peer: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer}: bad message from the target: {source}")]
    Decode {
        peer: String,
        #[source]
        source: MessageError,
    },
    #[error("{peer}: the target sent NOTIFICATION {code}/{subcode} ({code_name}, {subcode_name})")]
    Notification {
        peer: String,
        code: u8,
        subcode: u8,
        code_name: &'static str,
        subcode_name: &'static str,
    },
    #[error("{peer}: unexpected {what} while {state}")]
    Unexpected {
        peer: String,
        what: String,
        state: &'static str,
    },
    #[error("{peer}: the target closed the connection")]
    Closed { peer: String },
    #[error("{peer}: no session within {waited:?} ({last})")]
    Timeout {
        peer: String,
        waited: Duration,
        last: String,
    },
}

/// Our end of one session.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub local: Ipv4Addr,
    pub remote: SocketAddrV4,
    pub asn: u32,
}

impl Endpoint {
    fn label(&self) -> String {
        format!("AS{} {}→{}", self.asn, self.local, self.remote)
    }
}

/// Connects from `ep.local` to `ep.remote`, retrying until `timeout` (the target may still be
/// starting), and completes the OPEN exchange. Call it on a thread inside the lab namespace.
pub fn establish(ep: Endpoint, timeout: Duration) -> Result<Session, SessionError> {
    let start = Instant::now();
    let mut last = String::from("not tried");
    while start.elapsed() < timeout {
        match connect(&ep).and_then(|s| handshake(ep, s, start + timeout)) {
            Ok(session) => return Ok(session),
            // A definite refusal in the OPEN exchange will not change on retry.
            Err(e @ SessionError::Notification { code: 2, .. }) => return Err(e),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(SessionError::Timeout {
        peer: ep.label(),
        waited: start.elapsed(),
        last,
    })
}

fn connect(ep: &Endpoint) -> Result<TcpStream, SessionError> {
    let io = |what| {
        let peer = ep.label();
        move |source| SessionError::Io { peer, what, source }
    };
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(io("socket"))?;
    s.set_reuse_address(true).map_err(io("SO_REUSEADDR"))?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::from((ep.local, 0)).into())
        .map_err(io("bind"))?;
    s.connect_timeout(&SocketAddr::V4(ep.remote).into(), Duration::from_secs(1))
        .map_err(io("connect"))?;
    s.set_tcp_nodelay(true).map_err(io("TCP_NODELAY"))?;
    Ok(s.into())
}

fn our_open(ep: &Endpoint) -> Open {
    Open::new(
        Asn(ep.asn),
        HOLD_TIME,
        ep.local,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(ep.asn)),
        ],
    )
}

fn handshake(ep: Endpoint, stream: TcpStream, deadline: Instant) -> Result<Session, SessionError> {
    let peer = ep.label();
    let io = |what| {
        let peer = peer.clone();
        move |source| SessionError::Io { peer, what, source }
    };
    stream
        .set_read_timeout(Some(READ_POLL))
        .map_err(io("SO_RCVTIMEO"))?;
    let ours = our_open(&ep);
    let writer = Writer {
        stream: Arc::new(Mutex::new(stream.try_clone().map_err(io("dup"))?)),
        peer: peer.clone(),
    };
    writer.send(&Message::Open(ours.clone()), &DecodeContext::default())?;
    let mut reader = Reader {
        stream,
        framer: Framer::default(),
        cx: DecodeContext::default(),
        buf: vec![0; READ_CHUNK],
        peer: peer.clone(),
    };
    // OpenSent: wait for the target's OPEN.
    let theirs = match reader.poll_until(deadline, "waiting for OPEN")? {
        Message::Open(o) => o,
        m => return Err(reader.unexpected(&m, "waiting for OPEN")),
    };
    let tx_cx = DecodeContext::negotiate(&ours, &theirs);
    reader.cx = DecodeContext::negotiate(&theirs, &ours);
    writer.send(&Message::Keepalive, &tx_cx)?;
    // OpenConfirm: a KEEPALIVE makes it Established (RFC 4271 §8.2.2).
    match reader.poll_until(deadline, "waiting for KEEPALIVE")? {
        Message::Keepalive => {}
        m => return Err(reader.unexpected(&m, "waiting for KEEPALIVE")),
    }
    let hold = ours.hold_time.min(theirs.hold_time);
    let keepalive = Keepalive::start(writer.clone(), tx_cx.clone(), hold);
    Ok(Session {
        reader,
        writer,
        tx_cx,
        keepalive,
    })
}

/// An Established session.
pub struct Session {
    pub reader: Reader,
    pub writer: Writer,
    /// How to encode what we send (what both OPENs negotiated).
    pub tx_cx: DecodeContext,
    /// Sends KEEPALIVEs until dropped.
    pub keepalive: Keepalive,
}

impl Session {
    /// Another handle on the socket, to close it from another thread (see [`Reader::shutdown`]).
    pub fn socket_handle(&self) -> Result<TcpStream, SessionError> {
        self.reader
            .stream
            .try_clone()
            .map_err(|source| SessionError::Io {
                peer: self.reader.peer.clone(),
                what: "dup",
                source,
            })
    }
}

/// The receiving half: frames and decodes what the target sends.
pub struct Reader {
    stream: TcpStream,
    framer: Framer,
    cx: DecodeContext,
    buf: Vec<u8>,
    peer: String,
}

impl Reader {
    /// The next message, or `None` when nothing arrived within the poll interval.
    pub fn poll(&mut self) -> Result<Option<Message>, SessionError> {
        if let Some(m) = self.next_buffered()? {
            return Ok(Some(m));
        }
        match self.stream.read(&mut self.buf) {
            Ok(0) => Err(SessionError::Closed {
                peer: self.peer.clone(),
            }),
            Ok(n) => {
                self.framer.extend(&self.buf[..n]);
                self.next_buffered()
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(SessionError::Io {
                peer: self.peer.clone(),
                what: "read",
                source,
            }),
        }
    }

    /// Reads once (up to the poll interval) and returns the raw frames now complete, without
    /// decoding them: the monitor times decoding separately from waiting.
    pub fn read_frames(&mut self, out: &mut Vec<bytes::Bytes>) -> Result<(), SessionError> {
        // Frames left over from the OPEN exchange come first, without waiting on the socket.
        self.drain_frames(out)?;
        if !out.is_empty() {
            return Ok(());
        }
        match self.stream.read(&mut self.buf) {
            Ok(0) => {
                return Err(SessionError::Closed {
                    peer: self.peer.clone(),
                });
            }
            Ok(n) => self.framer.extend(&self.buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(source) => {
                return Err(SessionError::Io {
                    peer: self.peer.clone(),
                    what: "read",
                    source,
                });
            }
        }
        self.drain_frames(out)
    }

    fn drain_frames(&mut self, out: &mut Vec<bytes::Bytes>) -> Result<(), SessionError> {
        while let Some(f) = self.framer.next_frame().map_err(|e| self.decode_err(e))? {
            out.push(f);
        }
        Ok(())
    }

    /// Decodes one frame from [`Reader::read_frames`] with the session's context.
    pub fn decode(&self, frame: &[u8]) -> Result<Message, SessionError> {
        let m = decode_message(frame, &self.cx).map_err(|e| self.decode_err(e))?;
        self.check_notification(m)
    }

    fn next_buffered(&mut self) -> Result<Option<Message>, SessionError> {
        match self.framer.next_frame().map_err(|e| self.decode_err(e))? {
            None => Ok(None),
            Some(frame) => self.decode(&frame).map(Some),
        }
    }

    fn check_notification(&self, m: Message) -> Result<Message, SessionError> {
        match m {
            Message::Notification(n) => {
                let (code_name, subcode_name) = n.names();
                Err(SessionError::Notification {
                    peer: self.peer.clone(),
                    code: n.code,
                    subcode: n.subcode,
                    code_name,
                    subcode_name,
                })
            }
            m => Ok(m),
        }
    }

    fn decode_err(&self, source: MessageError) -> SessionError {
        SessionError::Decode {
            peer: self.peer.clone(),
            source,
        }
    }

    fn poll_until(
        &mut self,
        deadline: Instant,
        state: &'static str,
    ) -> Result<Message, SessionError> {
        loop {
            if let Some(m) = self.poll()? {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(SessionError::Timeout {
                    peer: self.peer.clone(),
                    waited: Duration::ZERO,
                    last: state.to_string(),
                });
            }
        }
    }

    fn unexpected(&self, m: &Message, state: &'static str) -> SessionError {
        SessionError::Unexpected {
            peer: self.peer.clone(),
            what: format!("{:?}", m.message_type()),
            state,
        }
    }
}

/// The sending half, shared with the keepalive thread; every write is whole messages.
#[derive(Clone)]
pub struct Writer {
    stream: Arc<Mutex<TcpStream>>,
    peer: String,
}

impl Writer {
    pub fn send(&self, m: &Message, cx: &DecodeContext) -> Result<(), SessionError> {
        let mut out = bytes::BytesMut::new();
        // Only our own fixed OPEN and KEEPALIVE go through here; they always encode.
        m.encode(cx, &mut out).map_err(|e| SessionError::Io {
            peer: self.peer.clone(),
            what: "encoding",
            source: std::io::Error::other(e.to_string()),
        })?;
        self.write_whole(&out)
    }

    /// Writes `bytes`, which must hold whole messages, without interleaving other writes.
    pub fn write_whole(&self, bytes: &[u8]) -> Result<(), SessionError> {
        let mut s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        s.write_all(bytes).map_err(|source| SessionError::Io {
            peer: self.peer.clone(),
            what: "write",
            source,
        })
    }
}

/// Sends a KEEPALIVE every `min(hold / 3, 10 s)` on its own thread; stops on drop.
pub struct Keepalive {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keepalive {
    fn start(writer: Writer, cx: DecodeContext, hold: u16) -> Keepalive {
        let stop = Arc::new(AtomicBool::new(false));
        // RFC 4271 §4.4: hold time 0 means no KEEPALIVEs at all.
        let thread = (hold != 0).then(|| {
            let every = (Duration::from_secs(u64::from(hold)) / 3).min(KEEPALIVE_EVERY);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(READ_POLL);
                    if last.elapsed() >= every {
                        if writer.send(&Message::Keepalive, &cx).is_err() {
                            return;
                        }
                        last = Instant::now();
                    }
                }
            })
        });
        Keepalive { stop, thread }
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A scripted "router" on loopback: answers our OPEN with its own, then KEEPALIVE.
    fn fake_router(reply: Vec<Message>) -> (SocketAddrV4, JoinHandle<Vec<Message>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let cx = DecodeContext {
                four_octet_as: true,
                ..DecodeContext::default()
            };
            for m in reply {
                s.write_all(&m.to_bytes(&cx).unwrap()).unwrap();
            }
            // Collect what the client sends until it closes.
            let mut f = Framer::default();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                f.extend(&buf[..n]);
                while let Some(fr) = f.next_frame().unwrap() {
                    got.push(decode_message(&fr, &cx).unwrap());
                }
            }
            got
        });
        (addr, t)
    }

    fn close(s: &Session) {
        s.socket_handle()
            .unwrap()
            .shutdown(std::net::Shutdown::Both)
            .unwrap();
    }

    fn router_open() -> Open {
        Open::new(
            Asn(65000),
            90,
            Ipv4Addr::new(10, 0, 0, 1),
            vec![Capability::FourOctetAs(Asn(65000))],
        )
    }

    fn ep(remote: SocketAddrV4) -> Endpoint {
        Endpoint {
            local: Ipv4Addr::LOCALHOST,
            remote,
            asn: 65001,
        }
    }

    #[test]
    fn establishes_and_negotiates() {
        let (addr, router) = fake_router(vec![Message::Open(router_open()), Message::Keepalive]);
        let s = establish(ep(addr), Duration::from_secs(5)).unwrap();
        assert!(s.tx_cx.four_octet_as);
        assert_eq!(s.reader.cx.peer_as, Some(Asn(65000)));
        close(&s);
        drop(s);
        let got = router.join().unwrap();
        let Message::Open(o) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!((o.asn(), o.hold_time), (Asn(65001), HOLD_TIME));
        assert_eq!(got[1], Message::Keepalive);
    }

    #[test]
    fn notification_in_open_exchange_is_reported_in_words() {
        let n = tabby_bgp::wire::Notification::new(2, 2, vec![]);
        let (addr, router) = fake_router(vec![Message::Notification(n)]);
        let e = establish(ep(addr), Duration::from_secs(5))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("2/2") && e.contains("Bad Peer AS"), "{e}");
        router.join().unwrap();
    }

    #[test]
    fn gives_up_after_the_timeout_when_nobody_listens() {
        // Bind then drop: the port is very likely closed now.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        drop(l);
        let start = Instant::now();
        let e = establish(ep(addr), Duration::from_millis(600))
            .err()
            .unwrap();
        assert!(matches!(e, SessionError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reader_frames_and_decodes_updates_split_across_reads() {
        let u = tabby_bgp::wire::Update::default(); // End-of-RIB, 23 octets
        let (addr, router) = fake_router(vec![
            Message::Open(router_open()),
            Message::Keepalive,
            Message::Update(u.clone()),
            Message::Keepalive,
        ]);
        let mut s = establish(ep(addr), Duration::from_secs(5)).unwrap();
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while frames.len() < 2 && Instant::now() < deadline {
            s.reader.read_frames(&mut frames).unwrap();
        }
        assert_eq!(s.reader.decode(&frames[0]).unwrap(), Message::Update(u));
        assert_eq!(s.reader.decode(&frames[1]).unwrap(), Message::Keepalive);
        close(&s);
        drop(s);
        router.join().unwrap();
    }
}
