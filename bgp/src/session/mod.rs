//! One BGP session as a tokio task: the FSM's actions turned into I/O.
//!
//! Owns the [`Fsm`], the timers, the framer and codec contexts, and up to two connections to
//! the peer (the second only until a §6.8 collision is resolved). It reports to its owner on a
//! channel ([`SessionEvent`]) and takes [`Command`]s. It does not own routes: UPDATEs go to the
//! owner decoded, and the owner hands it UPDATEs to send. Sockets are made in [`socket`]; the
//! in-memory transport lives in [`connection`].

pub mod connection;
pub mod failure;
pub mod socket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::fsm::collision::{self, Direction, Resolution};
use crate::fsm::{Action, Cease, DownReason, Event, Fsm, FsmConfig, State, Timer};
use crate::negotiate::{LocalConfig, Negotiated};
use crate::wire::{
    DecodeContext, Framer, MAX_MESSAGE_LEN, Message, MessageError, MessageType, Notification, Open,
    RouteRefresh, Update, decode_message,
};

pub use connection::{
    Connection, Connector, IncomingReceiver, IncomingSender, MemoryConnector, NotBefore,
    incoming_channel,
};
pub use failure::ConnectFailure;

/// How long a write may block before the connection counts as failed. Bounded so a peer that
/// stops reading cannot wedge the task; the hold timer covers the rest.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer per connection.
const READ_CHUNK: usize = 64 * 1024;

/// A session's configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The peer's address: names the session in events and logs.
    pub peer: IpAddr,
    pub local: LocalConfig,
    pub fsm: FsmConfig,
}

/// What the session tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEventKind {
    /// The FSM changed state.
    StateChanged {
        from: State,
        to: State,
    },
    /// The addresses of the connection the session is about to be established on; sent just
    /// before [`SessionEventKind::Established`] (the owner needs its own address on the
    /// session for next-hop self). `None` where the transport has no addresses.
    Transport {
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    },
    Established(Box<Negotiated>),
    /// A decoded UPDATE (RFC 7606 outcomes inside: see [`Update::action`]).
    Update(Box<Update>),
    RouteRefresh(RouteRefresh),
    /// An outgoing connection attempt failed; `cause` says why (its `Display` in words).
    /// The FSM retries on its ConnectRetry timer.
    ConnectFailed {
        cause: ConnectFailure,
    },
    /// The session went to Idle; `reason` says why in words (the NOTIFICATION decoded).
    Down {
        reason: DownReason,
        was_established: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub peer: IpAddr,
    pub kind: SessionEventKind,
}

/// What the owner can ask of a session.
#[derive(Debug, Clone)]
pub enum Command {
    /// ManualStart (RFC 4271 event 1).
    Start,
    /// ManualStop with this Cease; the session stays Idle until `Start`.
    Stop(Cease),
    /// AutomaticStop (event 8), e.g. max-prefix (Cease/1); restarts only on `Start`.
    AutomaticStop(Cease),
    /// Send these UPDATEs (only when Established; otherwise dropped with a log line).
    Send(Vec<Update>),
    /// Send UPDATE messages already encoded for this session's negotiated context, back to
    /// back in one buffer: an update group encodes once and hands the same bytes to every
    /// member. `messages` is how many UPDATEs the buffer holds (for the counters).
    SendEncoded { bytes: Bytes, messages: u32 },
    /// Send a ROUTE-REFRESH (RFC 2918 / RFC 7313).
    RouteRefresh(RouteRefresh),
    /// Stop with this Cease and end the task.
    Shutdown(Cease),
    /// Use this local configuration from the next OPEN on (e.g. the graceful-restart R bit
    /// cleared once the first session after a restart is up, RFC 4724 §3).
    SetLocalConfig(Box<LocalConfig>),
}

/// Messages sent and received by one session, by type (RFC 4271 §4.1 type codes 1–5), for
/// status pages and metrics. Shared with the owner; relaxed atomics, read as a snapshot.
#[derive(Debug, Default)]
pub struct MessageCounters {
    sent: [AtomicU64; 6],
    received: [AtomicU64; 6],
}

/// A point-in-time copy of [`MessageCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageCounts {
    pub open: u64,
    pub update: u64,
    pub notification: u64,
    pub keepalive: u64,
    pub route_refresh: u64,
}

impl MessageCounts {
    pub fn total(&self) -> u64 {
        self.open + self.update + self.notification + self.keepalive + self.route_refresh
    }

    /// (message type as metrics label it, count), in RFC 4271 type-code order.
    pub fn by_type(&self) -> [(&'static str, u64); 5] {
        [
            ("open", self.open),
            ("update", self.update),
            ("notification", self.notification),
            ("keepalive", self.keepalive),
            ("route_refresh", self.route_refresh),
        ]
    }
}

impl MessageCounters {
    fn slot(t: MessageType) -> usize {
        t as usize
    }
    pub fn count_sent(&self, t: MessageType, n: u64) {
        self.sent[Self::slot(t)].fetch_add(n, Ordering::Relaxed);
    }
    pub fn count_received(&self, t: MessageType) {
        self.received[Self::slot(t)].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(a: &[AtomicU64; 6]) -> MessageCounts {
        let g = |t: MessageType| a[Self::slot(t)].load(Ordering::Relaxed);
        MessageCounts {
            open: g(MessageType::Open),
            update: g(MessageType::Update),
            notification: g(MessageType::Notification),
            keepalive: g(MessageType::Keepalive),
            route_refresh: g(MessageType::RouteRefresh),
        }
    }
    pub fn sent(&self) -> MessageCounts {
        Self::snapshot(&self.sent)
    }
    pub fn received(&self) -> MessageCounts {
        Self::snapshot(&self.received)
    }
}

/// The owner's handle on a running session.
#[derive(Debug)]
pub struct SessionHandle {
    pub commands: mpsc::Sender<Command>,
    pub task: JoinHandle<()>,
}

/// Starts a session task. It begins with ManualStart. `connector` is how it connects out
/// (`None` for a passive-only peer); `incoming` delivers connections the peer opened.
///
/// `events` is bounded on purpose: an owner that falls behind slows the session's reading
/// (TCP backpressure to the peer) instead of losing UPDATEs or buffering without limit. The
/// owner must keep draining it, or the peer's hold timer will eventually expire. Dropping
/// the handle's `commands` sender stops the session (Cease / Peer De-configured).
pub fn spawn(
    cfg: SessionConfig,
    connector: Option<Arc<dyn Connector>>,
    incoming: IncomingReceiver,
    events: mpsc::Sender<SessionEvent>,
) -> SessionHandle {
    spawn_counted(cfg, connector, incoming, events, Arc::default())
}

/// [`spawn`], counting messages into `counters`.
pub fn spawn_counted(
    cfg: SessionConfig,
    connector: Option<Arc<dyn Connector>>,
    incoming: IncomingReceiver,
    events: mpsc::Sender<SessionEvent>,
    counters: Arc<MessageCounters>,
) -> SessionHandle {
    let (tx, rx) = mpsc::channel(64);
    let mut session = Session::new(cfg, connector, incoming, events, rx);
    session.counters = counters;
    let task = tokio::spawn(session.run());
    SessionHandle { commands: tx, task }
}

/// One open connection with its framer.
struct Conn {
    rd: ReadHalf<Box<dyn connection::Stream>>,
    /// To the connection's writer task, which writes in order, then closes the stream once
    /// this sender is dropped and everything queued is out. Writing never blocks the session,
    /// so two speakers sending large tables to each other cannot deadlock.
    wr: mpsc::UnboundedSender<Bytes>,
    framer: Framer,
    direction: Direction,
    buf: Box<[u8]>,
    /// The peer's OPEN on a collision candidate, once it arrived.
    open: Option<Open>,
    /// A KEEPALIVE followed that OPEN on a candidate whose collision is deferred (the peer is
    /// in OpenConfirm on it); replayed to the FSM if the candidate is promoted.
    keepalive: bool,
    /// We sent our OPEN on this connection (a candidate gets one at once, like the RFC's
    /// per-connection FSM; it must not get a second one when promoted).
    open_sent: bool,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    /// The writer task, awaited when the session ends so a last NOTIFICATION is really out
    /// before the owner is told the session has stopped.
    writer: JoinHandle<()>,
}

impl Conn {
    fn new(c: Connection) -> Conn {
        let (local, remote) = (c.local, c.remote);
        let (rd, wr) = tokio::io::split(c.stream);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer(wr, rx));
        Conn {
            rd,
            wr: tx,
            framer: Framer::new(MAX_MESSAGE_LEN),
            direction: c.direction,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            open: None,
            keepalive: false,
            open_sent: false,
            local,
            remote,
            writer,
        }
    }

    /// Queues `bytes`; fails once the writer has stopped (write error or timeout).
    fn write(&self, bytes: Bytes) -> std::io::Result<()> {
        self.wr.send(bytes).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection writer stopped")
        })
    }
}

/// Writes queued messages in order; on the first error or a write blocked for
/// [`WRITE_TIMEOUT`] it stops (the session then sees its queue closed). When the session drops
/// its sender, the rest of the queue is written and the stream shut down.
async fn writer(
    mut wr: WriteHalf<Box<dyn connection::Stream>>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(b) = rx.recv().await {
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&b)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("write: {e}");
                return;
            }
            Err(_) => {
                debug!("write blocked for {WRITE_TIMEOUT:?}");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}

/// Awaits every handle in turn (they run concurrently as tasks; the order does not matter).
async fn join_writers(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Reads once into the framer; pends forever without a connection. Returns bytes read.
async fn read_some(conn: &mut Option<Conn>) -> std::io::Result<usize> {
    match conn {
        Some(c) => {
            let n = c.rd.read(&mut c.buf[..]).await?;
            c.framer.extend(&c.buf[..n]);
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

async fn join_connect(h: &mut Option<JoinHandle<std::io::Result<Connection>>>) -> Wake {
    match h {
        Some(j) => {
            let r = j.await;
            Wake::Connected(match r {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e)),
            })
        }
        None => std::future::pending().await,
    }
}

enum Wake {
    Command(Option<Command>),
    Incoming(Option<Connection>),
    Connected(std::io::Result<Connection>),
    MainRead(std::io::Result<usize>),
    CandidateRead(std::io::Result<usize>),
    Timer(Timer),
}

struct Session {
    peer: IpAddr,
    fsm: Fsm,
    connector: Option<Arc<dyn Connector>>,
    incoming: IncomingReceiver,
    incoming_open: bool,
    events: mpsc::Sender<SessionEvent>,
    commands: mpsc::Receiver<Command>,
    main: Option<Conn>,
    candidate: Option<Conn>,
    connecting: Option<JoinHandle<std::io::Result<Connection>>>,
    timers: [Option<Instant>; 6],
    rx: DecodeContext,
    tx: DecodeContext,
    /// Messages decoded from the last frame, waiting for the FSM's Process* action.
    pending_update: Option<Box<Update>>,
    pending_refresh: Option<RouteRefresh>,
    established: bool,
    /// Events the I/O produced while actions ran (write failures).
    queue: std::collections::VecDeque<Event>,
    counters: Arc<MessageCounters>,
    /// Writers of dropped connections still sending their last bytes.
    closing: Vec<JoinHandle<()>>,
    /// When the outgoing attempt in `connecting` began.
    connect_started: Option<Instant>,
}

impl Session {
    fn new(
        cfg: SessionConfig,
        connector: Option<Arc<dyn Connector>>,
        incoming: IncomingReceiver,
        events: mpsc::Sender<SessionEvent>,
        commands: mpsc::Receiver<Command>,
    ) -> Session {
        let rx = initial_context(&cfg.local);
        Session {
            peer: cfg.peer,
            fsm: Fsm::new(cfg.fsm, cfg.local),
            connector,
            incoming,
            incoming_open: true,
            events,
            commands,
            main: None,
            candidate: None,
            connecting: None,
            timers: [None; 6],
            tx: DecodeContext::default(),
            rx,
            pending_update: None,
            pending_refresh: None,
            established: false,
            queue: Default::default(),
            counters: Arc::default(),
            closing: Vec::new(),
            connect_started: None,
        }
    }

    /// Waits (bounded) until the writers of the connections this session dropped have sent
    /// what was queued — the NOTIFICATION of a shutdown — and closed their streams. Each
    /// writer already gives up after its own write timeout; this bound only keeps a stop
    /// prompt when a peer stops reading.
    async fn finish_writes(&mut self) {
        if let Some(c) = self.main.take() {
            self.closing.push(c.writer);
        }
        let all = join_writers(std::mem::take(&mut self.closing));
        if tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .is_err()
        {
            debug!(peer = %self.peer, "stopped without waiting longer for the last writes");
        }
    }

    async fn run(mut self) {
        self.feed(Event::ManualStart).await;
        loop {
            let next_timer = self
                .timers
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (t, Timer::ALL[i])))
                .min();
            let sleep = async {
                match next_timer {
                    Some((at, t)) => {
                        tokio::time::sleep_until(at).await;
                        t
                    }
                    None => std::future::pending().await,
                }
            };
            let incoming_open = self.incoming_open;
            let wake = tokio::select! {
                c = self.commands.recv() => Wake::Command(c),
                c = self.incoming.recv(), if incoming_open => Wake::Incoming(c),
                w = join_connect(&mut self.connecting) => w,
                r = read_some(&mut self.main) => Wake::MainRead(r),
                r = read_some(&mut self.candidate) => Wake::CandidateRead(r),
                t = sleep => Wake::Timer(t),
            };
            match wake {
                Wake::Command(None) => {
                    self.candidate = None;
                    self.feed(Event::ManualStop(Cease::new(Cease::PEER_DECONFIGURED)))
                        .await;
                    self.finish_writes().await;
                    return;
                }
                Wake::Command(Some(Command::Shutdown(c))) => {
                    self.candidate = None;
                    self.feed(Event::ManualStop(c)).await;
                    self.finish_writes().await;
                    return;
                }
                Wake::Command(Some(c)) => self.command(c).await,
                Wake::Incoming(None) => self.incoming_open = false,
                Wake::Incoming(Some(c)) => self.accept(c, Direction::Incoming).await,
                Wake::Connected(r) => {
                    self.connecting = None;
                    match r {
                        Ok(c) => self.accept(c, Direction::Outgoing).await,
                        Err(e) => {
                            debug!(peer = %self.peer, "connect failed: {e}");
                            self.emit(SessionEventKind::ConnectFailed {
                                cause: ConnectFailure::from_io(&e),
                            })
                            .await;
                            self.feed(Event::TcpConnectionFails).await;
                        }
                    }
                }
                Wake::MainRead(r) => self.main_read(r).await,
                Wake::CandidateRead(r) => self.candidate_read(r).await,
                Wake::Timer(t) => {
                    self.timers[t as usize] = None;
                    // ConnectRetry expired before our attempt got any answer: the peer (or a
                    // firewall, or an MD5 mismatch) drops our SYNs without a word.
                    if t == Timer::ConnectRetry
                        && self.connecting.as_ref().is_some_and(|h| !h.is_finished())
                    {
                        let cause = ConnectFailure::NoAnswer {
                            waited: self.connect_started.map(|at| at.elapsed()),
                        };
                        self.emit(SessionEventKind::ConnectFailed { cause }).await;
                    }
                    let ev = match t {
                        Timer::ConnectRetry => Event::ConnectRetryTimerExpires,
                        Timer::Hold => Event::HoldTimerExpires,
                        Timer::Keepalive => Event::KeepaliveTimerExpires,
                        Timer::DelayOpen => Event::DelayOpenTimerExpires,
                        Timer::IdleHold => Event::IdleHoldTimerExpires,
                        Timer::Stable => Event::StableTimerExpires,
                    };
                    self.feed(ev).await;
                }
            }
        }
    }

    async fn emit(&mut self, kind: SessionEventKind) {
        // The owner going away is not our problem to report; the session keeps its peer.
        let _ = self
            .events
            .send(SessionEvent {
                peer: self.peer,
                kind,
            })
            .await;
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Start => self.feed(Event::ManualStart).await,
            // A stop must not continue on a connection kept aside for §6.8.
            Command::Stop(c) => {
                self.candidate = None;
                self.feed(Event::ManualStop(c)).await
            }
            Command::AutomaticStop(c) => {
                self.candidate = None;
                self.feed(Event::AutomaticStop(c)).await
            }
            Command::Send(updates) => {
                if self.fsm.state() != State::Established {
                    warn!(peer = %self.peer, n = updates.len(), "UPDATEs dropped: session not established");
                    return;
                }
                let mut out = bytes::BytesMut::new();
                let n = updates.len() as u64;
                for u in updates {
                    if let Err(e) = Message::Update(u).encode(&self.tx, &mut out) {
                        warn!(peer = %self.peer, "UPDATE not sent: {e}");
                    }
                }
                if !out.is_empty() {
                    self.write_main(out.freeze()).await;
                    self.counters.count_sent(MessageType::Update, n);
                    self.feed(Event::UpdateSent).await;
                }
            }
            Command::SendEncoded { bytes, messages } => {
                if self.fsm.state() != State::Established {
                    warn!(peer = %self.peer, n = messages, "UPDATEs dropped: session not established");
                    return;
                }
                if !bytes.is_empty() {
                    self.write_main(bytes).await;
                    self.counters
                        .count_sent(MessageType::Update, u64::from(messages));
                    self.feed(Event::UpdateSent).await;
                }
            }
            Command::RouteRefresh(rr) => {
                if self.fsm.state() != State::Established {
                    return;
                }
                match Message::RouteRefresh(rr).to_bytes(&self.tx) {
                    Ok(b) => {
                        self.counters.count_sent(MessageType::RouteRefresh, 1);
                        self.write_main(b).await
                    }
                    Err(e) => warn!(peer = %self.peer, "ROUTE-REFRESH not sent: {e}"),
                }
                self.drain().await;
            }
            Command::Shutdown(_) => {}
            Command::SetLocalConfig(l) => self.fsm.set_local_config(*l),
        }
    }

    /// A new connection, either direction.
    async fn accept(&mut self, c: Connection, dir: Direction) {
        let state = self.fsm.state();
        if self.main.is_none() {
            match state {
                State::Connect | State::Active => {
                    // An outgoing attempt still in flight is left alone: if it completes it
                    // becomes the collision candidate and §6.8 picks one.
                    self.main = Some(Conn::new(c));
                    let ev = match dir {
                        Direction::Outgoing => Event::TcpCrAcked,
                        Direction::Incoming => Event::TcpConnectionConfirmed,
                    };
                    self.feed(ev).await;
                }
                // RFC 4271 §8.2.2 Idle refuses connections. Dropping the stream closes it.
                _ => debug!(peer = %self.peer, ?state, "connection refused in {state}"),
            }
            return;
        }
        if state == State::Established {
            // CollisionDetectEstablishedState is off: the established session wins, unless
            // the peer restarted with graceful restart (RFC 4724 §4.2): then the new
            // connection replaces the old session.
            let gr = self
                .fsm
                .negotiated()
                .is_some_and(|n| n.graceful_restart.is_some());
            if gr {
                info!(peer = %self.peer, "peer reconnected while established: graceful restart");
                self.candidate = Some(Conn::new(c));
                self.feed(Event::TcpConnectionFails).await;
                return;
            }
            let conn = Conn::new(c);
            let n = Cease::new(Cease::COLLISION_RESOLUTION).notification();
            if let Ok(b) = Message::Notification(n).to_bytes(&DecodeContext::default()) {
                // Dropping `conn` then closes it once the NOTIFICATION is out.
                let _ = conn.write(b);
            }
            return;
        }
        if self.candidate.is_some() {
            debug!(peer = %self.peer, "third connection refused");
            return;
        }
        // §6.8: keep it aside until its OPEN tells us the peer's identifier. Our OPEN goes
        // out on it too, so the peer can decide the same collision from its side.
        let mut conn = Conn::new(c);
        if let Ok(b) =
            Message::Open(self.fsm.local_open().clone()).to_bytes(&DecodeContext::default())
        {
            conn.open_sent = conn.write(b).is_ok();
        }
        self.candidate = Some(conn);
    }

    /// Closes the candidate connection with Cease / Connection Collision Resolution.
    async fn reject_candidate(&mut self) {
        if let Some(c) = self.candidate.take() {
            let n = Cease::new(Cease::COLLISION_RESOLUTION).notification();
            if let Ok(b) = Message::Notification(n).to_bytes(&DecodeContext::default()) {
                let _ = c.write(b);
            }
        }
    }

    async fn main_read(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                if let Err(e) = &r {
                    debug!(peer = %self.peer, "read: {e}");
                }
                self.feed(Event::TcpConnectionFails).await;
                return;
            }
            Ok(_) => {}
        }
        // Frames until the buffer is empty or the connection went away.
        loop {
            let Some(conn) = self.main.as_mut() else {
                return;
            };
            let frame = match conn.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    self.feed(Event::BgpHeaderErr(e)).await;
                    return;
                }
            };
            let ev = self.classify(&frame);
            self.feed(ev).await;
        }
    }

    /// Decodes a frame from the main connection into its FSM event.
    fn classify(&mut self, frame: &[u8]) -> Event {
        // RFC 4271 §4.1: the type is the octet after marker and length.
        if let Some(t) = frame.get(18).copied().and_then(MessageType::from_u8) {
            self.counters.count_received(t);
        }
        match decode_message(frame, &self.rx) {
            Ok(Message::Open(o)) => Event::BgpOpen(Box::new(o)),
            Ok(Message::Update(u)) => {
                self.pending_update = Some(Box::new(u));
                Event::UpdateMsg
            }
            Ok(Message::Notification(n)) => Event::NotifMsg(n),
            Ok(Message::Keepalive) => Event::KeepAliveMsg,
            Ok(Message::RouteRefresh(r)) => {
                self.pending_refresh = Some(r);
                Event::RouteRefreshMsg
            }
            Err(e) => match e {
                MessageError::Open { .. } => Event::BgpOpenMsgErr(e),
                MessageError::Update { .. } => Event::UpdateMsgErr(e),
                // Header and ROUTE-REFRESH errors: their own NOTIFICATION, session ends.
                MessageError::Header { .. } | MessageError::RouteRefresh { .. } => {
                    Event::BgpHeaderErr(e)
                }
            },
        }
    }

    async fn candidate_read(&mut self, r: std::io::Result<usize>) {
        if !matches!(r, Ok(n) if n > 0) {
            self.candidate = None;
            return;
        }
        let cx = initial_context(self.fsm.local_config());
        loop {
            let Some(c) = self.candidate.as_mut() else {
                return;
            };
            let frame = match c.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    self.candidate = None;
                    return;
                }
            };
            match (c.open.is_some(), decode_message(&frame, &cx)) {
                (false, Ok(Message::Open(o))) => {
                    c.open = Some(o);
                    self.resolve_collision().await;
                }
                // Deferred (§6.8 with the main connection in OpenConfirm): the peer is in
                // OpenConfirm on this one. Its KEEPALIVE counts if we continue here.
                (true, Ok(Message::Keepalive)) => c.keepalive = true,
                // Anything else (before an OPEN, or the peer closing this connection with a
                // NOTIFICATION): not a usable second connection.
                _ => {
                    debug!(peer = %self.peer, "collision candidate dropped");
                    self.candidate = None;
                    return;
                }
            }
        }
    }

    /// §6.8 with both connections known.
    async fn resolve_collision(&mut self) {
        let (Some(main), Some(cand)) = (&self.main, &self.candidate) else {
            return;
        };
        let Some(open) = &cand.open else { return };
        let local = self.fsm.local_config();
        let res = collision::resolve(
            self.fsm.state(),
            main.direction,
            local.bgp_id,
            local.asn,
            open.bgp_id,
            open.asn(),
        );
        debug!(peer = %self.peer, ?res, "connection collision");
        match res {
            Resolution::KeepExisting => self.reject_candidate().await,
            Resolution::KeepNew => {
                self.feed(Event::OpenCollisionDump).await;
                self.promote_candidate().await;
            }
            // Settled later: Established rejects the candidate (SessionEstablished), a failed
            // main connection promotes it (drain).
            Resolution::Defer => {}
        }
    }

    /// Continue the session on the candidate connection (collision won, or the peer
    /// reconnected): a fresh start on it, with its OPEN if it already arrived.
    async fn promote_candidate(&mut self) {
        let Some(cand) = self.candidate.take() else {
            return;
        };
        match self.fsm.state() {
            State::Idle => {}
            // Already waiting for a connection (the main one failed in OpenSent).
            State::Connect | State::Active => {}
            _ => return,
        }
        let open = cand.open.clone();
        let keepalive = cand.keepalive;
        let dir = cand.direction;
        self.main = Some(cand);
        if self.fsm.state() == State::Idle {
            self.feed(Event::ManualStartPassive).await;
        }
        let ev = match dir {
            Direction::Outgoing => Event::TcpCrAcked,
            Direction::Incoming => Event::TcpConnectionConfirmed,
        };
        self.feed(ev).await;
        if let Some(o) = open {
            self.feed(Event::BgpOpen(Box::new(o))).await;
            if keepalive {
                self.feed(Event::KeepAliveMsg).await;
            }
        }
        // Bytes that followed the OPEN on the candidate.
        if self.main.as_ref().is_some_and(|c| c.framer.buffered() > 0) {
            self.main_read(Ok(1)).await;
        }
    }

    async fn write_main(&mut self, bytes: Bytes) {
        let Some(c) = self.main.as_mut() else {
            return;
        };
        if let Err(e) = c.write(bytes) {
            debug!(peer = %self.peer, "write: {e}");
            self.queue.push_back(Event::TcpConnectionFails);
        }
    }

    async fn send(&mut self, m: Message) {
        let t = m.message_type();
        match m.to_bytes(&self.tx) {
            Ok(b) => {
                self.counters.count_sent(t, 1);
                self.write_main(b).await
            }
            Err(e) => warn!(peer = %self.peer, "cannot encode {:?}: {e}", m.message_type()),
        }
    }

    /// Runs `ev` and everything it causes through the FSM.
    async fn feed(&mut self, ev: Event) {
        self.queue.push_back(ev);
        self.drain().await;
    }

    async fn drain(&mut self) {
        while let Some(ev) = self.queue.pop_front() {
            let before = self.fsm.state();
            let actions = self.fsm.handle(ev);
            let after = self.fsm.state();
            self.sync_contexts();
            if before != after {
                debug!(peer = %self.peer, "{before} -> {after}");
                self.emit(SessionEventKind::StateChanged {
                    from: before,
                    to: after,
                })
                .await;
            }
            for a in actions {
                self.apply(a).await;
            }
            // A collision deferred while the main connection was in OpenSent is decided again
            // now that the peer's OPEN came on it (§6.8; see `Resolution::Defer`).
            if before == State::OpenSent
                && after == State::OpenConfirm
                && self.candidate.as_ref().is_some_and(|c| c.open.is_some())
            {
                Box::pin(self.resolve_collision()).await;
            }
            // After a reconnect under graceful restart the old session is gone, or the main
            // connection failed while a collision was deferred (to Idle from OpenConfirm, to
            // Active from OpenSent): continue on the new connection.
            if matches!(after, State::Idle | State::Connect | State::Active)
                && self.candidate.is_some()
                && self.main.is_none()
            {
                Box::pin(self.promote_candidate()).await;
            }
        }
    }

    /// Decode/encode contexts follow the negotiation.
    fn sync_contexts(&mut self) {
        match self.fsm.negotiated() {
            Some(n) if self.rx != n.rx || self.tx != n.tx => {
                self.rx = n.rx.clone();
                self.tx = n.tx.clone();
                let max = self.rx.max_message_len();
                if let Some(c) = self.main.as_mut() {
                    c.framer.set_max_len(max);
                }
            }
            Some(_) => {}
            None if self.fsm.state() != State::OpenConfirm => {
                self.rx = initial_context(self.fsm.local_config());
                self.tx = DecodeContext::default();
            }
            None => {}
        }
    }

    async fn apply(&mut self, a: Action) {
        match a {
            Action::Connect => {
                if let Some(c) = self.connector.clone() {
                    if let Some(h) = self.connecting.take() {
                        h.abort();
                    }
                    self.connect_started = Some(Instant::now());
                    self.connecting = Some(tokio::spawn(c.connect()));
                }
            }
            Action::DropConnection => {
                if let Some(h) = self.connecting.take() {
                    h.abort();
                }
                // The writer sends what is queued (a NOTIFICATION), then closes; dropping the
                // rest of the connection drops its sender, which tells the writer to finish.
                if let Some(Conn { writer, .. }) = self.main.take() {
                    self.closing.retain(|h| !h.is_finished());
                    self.closing.push(writer);
                }
            }
            Action::SendOpen => {
                if self.main.as_ref().is_some_and(|c| c.open_sent) {
                    return;
                }
                let open = self.fsm.local_open().clone();
                self.send(Message::Open(open)).await;
                if let Some(c) = self.main.as_mut() {
                    c.open_sent = true;
                }
            }
            Action::SendKeepalive => self.send(Message::Keepalive).await,
            Action::SendNotification(n) => {
                log_notification_sent(self.peer, &n);
                self.send(Message::Notification(n)).await;
            }
            Action::StartTimer(t, d) => self.timers[t as usize] = Some(Instant::now() + d),
            Action::StopTimer(t) => self.timers[t as usize] = None,
            Action::ProcessUpdate => {
                if let Some(u) = self.pending_update.take() {
                    self.emit(SessionEventKind::Update(u)).await;
                }
            }
            Action::ProcessRouteRefresh => {
                if let Some(r) = self.pending_refresh.take() {
                    self.emit(SessionEventKind::RouteRefresh(r)).await;
                }
            }
            Action::SessionEstablished(n) => {
                info!(peer = %self.peer, asn = %n.peer_asn, id = %n.peer_id, hold = n.hold_time, "session established");
                self.established = true;
                // CollisionDetectEstablishedState is off: an established session beats any
                // connection still waiting for collision resolution.
                self.reject_candidate().await;
                let (local, remote) = self
                    .main
                    .as_ref()
                    .map_or((None, None), |c| (c.local, c.remote));
                self.emit(SessionEventKind::Transport { local, remote })
                    .await;
                self.emit(SessionEventKind::Established(n)).await;
            }
            Action::SessionDown(reason) => {
                let was_established = std::mem::take(&mut self.established);
                if was_established {
                    warn!(peer = %self.peer, "session down: {reason}");
                } else {
                    info!(peer = %self.peer, "session attempt failed: {reason}");
                }
                self.emit(SessionEventKind::Down {
                    reason,
                    was_established,
                })
                .await;
            }
        }
    }
}

fn log_notification_sent(peer: IpAddr, n: &Notification) {
    let (code, sub) = n.names();
    info!(%peer, "sending NOTIFICATION {code} / {sub}");
}

/// The context for decoding before the OPEN exchange: only the expected peer AS.
fn initial_context(local: &LocalConfig) -> DecodeContext {
    DecodeContext {
        peer_as: local.peer_asn,
        ..DecodeContext::default()
    }
}
