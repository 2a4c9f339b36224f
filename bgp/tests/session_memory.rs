//! Session tasks over in-memory connections, on tokio's paused clock: establishment (with the
//! §6.8 collision both sides cause by connecting at once), keepalives, hold timer expiry,
//! NOTIFICATIONs, OPEN errors and UPDATE delivery.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tabby_bgp::fsm::{Cease, DownReason, FsmConfig, State};
use tabby_bgp::negotiate::LocalConfig;
use tabby_bgp::session::{
    Command, Connection, IncomingReceiver, IncomingSender, MemoryConnector, SessionConfig,
    SessionEvent, SessionEventKind, SessionHandle, incoming_channel, spawn,
};
use tabby_bgp::wire::{
    Asn, DecodeContext, Family, Framer, Message, Notification, Open, Update, decode_message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn cfg(me: IpAddr, my_as: u32, peer: IpAddr, peer_as: u32, hold: u16) -> SessionConfig {
    let IpAddr::V4(id) = me else { unreachable!() };
    let mut local = LocalConfig::new(Asn(my_as), id, Some(Asn(peer_as)));
    local.hold_time = hold;
    local.families = [Family::IPV4_UNICAST, Family::IPV6_UNICAST].into();
    SessionConfig {
        peer,
        local,
        fsm: FsmConfig {
            connect_retry_time: Duration::from_secs(5),
            idle_hold_time: Duration::from_secs(1),
            ..FsmConfig::default()
        },
    }
}

/// Two sessions wired to each other, both connecting actively.
fn pair(hold: u16) -> (SessionHandle, SessionHandle, mpsc::Receiver<SessionEvent>) {
    let (a_in_tx, a_in_rx) = incoming_channel();
    let (b_in_tx, b_in_rx) = incoming_channel();
    let (ev_tx, ev_rx) = mpsc::channel(1000);
    let a = spawn(
        cfg(A, 65001, B, 65002, hold),
        Some(Arc::new(MemoryConnector::new(b_in_tx))),
        a_in_rx,
        ev_tx.clone(),
    );
    let b = spawn(
        cfg(B, 65002, A, 65001, hold),
        Some(Arc::new(MemoryConnector::new(a_in_tx))),
        b_in_rx,
        ev_tx,
    );
    (a, b, ev_rx)
}

/// Waits (in paused time) for an event matching `f`, collecting everything seen.
async fn wait_for(
    rx: &mut mpsc::Receiver<SessionEvent>,
    seen: &mut Vec<SessionEvent>,
    within: Duration,
    f: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some(e)) => {
                seen.push(e.clone());
                if f(&e) {
                    return e;
                }
            }
            Ok(None) => panic!("event channel closed; seen {seen:#?}"),
            Err(_) => panic!("timed out; seen {seen:#?}"),
        }
    }
}

fn established(peer: IpAddr) -> impl Fn(&SessionEvent) -> bool {
    move |e| e.peer == peer && matches!(e.kind, SessionEventKind::Established(_))
}

#[tokio::test(start_paused = true)]
async fn two_sessions_establish_through_a_collision_and_keep_alive() {
    let (a, b, mut rx) = pair(9);
    let mut seen = Vec::new();
    let mut ups = Vec::new();
    for _ in 0..2 {
        let e = wait_for(&mut rx, &mut seen, Duration::from_secs(60), |e| {
            matches!(e.kind, SessionEventKind::Established(_))
        })
        .await;
        ups.push(e);
    }
    // Both connected at once. Depending on who saw which connection first, §6.8 closed one
    // connection before OpenConfirm (a session goes down on it: Cease/7 sent or received,
    // or the write after it failed), or both picked the same one and the other was refused
    // once Established. Either way no more than one down per side.
    // (`collision_*` below checks both outcomes of §6.8 deterministically.)
    let downs = seen
        .iter()
        .filter(|e| matches!(e.kind, SessionEventKind::Down { .. }))
        .count();
    assert!(downs <= 2, "{seen:#?}");
    let mut peers: Vec<IpAddr> = ups.iter().map(|e| e.peer).collect();
    peers.sort();
    assert_eq!(peers, [A, B]);
    for e in &ups {
        let SessionEventKind::Established(n) = &e.kind else {
            unreachable!()
        };
        assert_eq!(n.hold_time, 9);
        assert_eq!(n.keepalive, 3);
        assert!(n.four_octet_as);
        assert_eq!(n.families.len(), 2);
        let expect = if e.peer == A { Asn(65001) } else { Asn(65002) };
        assert_eq!(n.peer_asn, expect);
    }
    // Ten minutes of keepalives every 3 s against a 9 s hold time: nothing goes down.
    let quiet = timeout(Duration::from_secs(600), async {
        loop {
            match rx.recv().await {
                Some(SessionEvent {
                    kind: SessionEventKind::Down { .. },
                    ..
                }) => return,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "a session went down while keepalives flowed"
    );

    // An UPDATE (End-of-RIB) from A arrives at B's owner, decoded.
    a.commands
        .send(Command::Send(vec![Update::end_of_rib(
            Family::IPV4_UNICAST,
        )]))
        .await
        .unwrap();
    let e = wait_for(&mut rx, &mut seen, Duration::from_secs(5), |e| {
        matches!(e.kind, SessionEventKind::Update(_))
    })
    .await;
    assert_eq!(e.peer, A, "B's session names its peer A");
    let SessionEventKind::Update(u) = e.kind else {
        unreachable!()
    };
    assert_eq!(u.is_end_of_rib(), Some(Family::IPV4_UNICAST));

    // B stops with a shutdown communication; A's owner learns why, in words.
    b.commands
        .send(Command::Stop(Cease::with_message(
            Cease::ADMIN_SHUTDOWN,
            "maintenance window",
        )))
        .await
        .unwrap();
    let e = wait_for(&mut rx, &mut seen, Duration::from_secs(5), |e| {
        e.peer == B && matches!(e.kind, SessionEventKind::Down { .. })
    })
    .await;
    let SessionEventKind::Down {
        reason,
        was_established,
    } = e.kind
    else {
        unreachable!()
    };
    assert!(was_established);
    assert_eq!(
        reason.to_string(),
        "peer sent NOTIFICATION Cease / Administrative Shutdown (6/2): \"maintenance window\""
    );
    // B stays down (ManualStop): A retries but is refused until B starts again.
    b.commands.send(Command::Start).await.unwrap();
    wait_for(&mut rx, &mut seen, Duration::from_secs(120), established(B)).await;
    drop(a);
}

/// A scripted peer on the far end of an in-memory connection.
struct RawPeer {
    conn: Connection,
    framer: Framer,
    cx: DecodeContext,
}

impl RawPeer {
    /// The peer's end of `conn`, with default decoding (2-octet AS, no ADD-PATH).
    fn new(conn: Connection) -> RawPeer {
        RawPeer {
            conn,
            framer: Framer::default(),
            cx: DecodeContext::default(),
        }
    }

    /// A connection from the peer, injected through `inject` as incoming to the session;
    /// returns the peer's end.
    async fn connect_in(inject: &IncomingSender) -> RawPeer {
        let (ours, theirs) = tokio::io::duplex(65536);
        inject
            .send(Connection {
                stream: Box::new(ours),
                direction: tabby_bgp::session::connection::Direction::Incoming,
                local: None,
                remote: None,
            })
            .await
            .unwrap();
        RawPeer::new(Connection {
            stream: Box::new(theirs),
            direction: tabby_bgp::session::connection::Direction::Outgoing,
            local: None,
            remote: None,
        })
    }

    async fn next(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.framer.next_frame().unwrap() {
                return Some(decode_message(&f, &self.cx).unwrap());
            }
            let n = self.conn.stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.framer.extend(&buf[..n]);
        }
    }

    async fn send(&mut self, m: Message) {
        let mut out = BytesMut::new();
        m.encode(&self.cx, &mut out).unwrap();
        self.conn.stream.write_all(&out).await.unwrap();
    }
}

/// One session under test (A) whose outgoing connections arrive at `far`.
type Single = (
    SessionHandle,
    IncomingReceiver,
    IncomingSender,
    mpsc::Receiver<SessionEvent>,
);

fn single(
    hold: u16,
) -> (
    SessionHandle,
    IncomingReceiver,
    mpsc::Receiver<SessionEvent>,
) {
    let (h, far, _, rx) = single_with_incoming(hold, A);
    (h, far, rx)
}

/// Session with identifier `me` whose connections go to `far`; `IncomingSender` injects the
/// peer's connections.
fn single_with_incoming(hold: u16, me: IpAddr) -> Single {
    let (far_tx, far_rx) = incoming_channel();
    let (a_in_tx, a_in_rx) = incoming_channel();
    let (ev_tx, ev_rx) = mpsc::channel(1000);
    let h = spawn(
        cfg(me, 65001, B, 65002, hold),
        Some(Arc::new(MemoryConnector::new(far_tx))),
        a_in_rx,
        ev_tx,
    );
    (h, far_rx, a_in_tx, ev_rx)
}

async fn raw_peer(far: &mut IncomingReceiver, open: Open) -> RawPeer {
    let mut p = RawPeer::new(far.recv().await.expect("session connects"));
    let Some(Message::Open(_)) = p.next().await else {
        panic!("session sends OPEN first")
    };
    p.send(Message::Open(open)).await;
    p
}

fn b_open(asn: u32, hold: u16) -> Open {
    let IpAddr::V4(id) = B else { unreachable!() };
    Open::new(Asn(asn), hold, id, vec![])
}

/// Waits (1 s) for the session to go down; why, in words.
async fn down_reason(rx: &mut mpsc::Receiver<SessionEvent>) -> String {
    let mut seen = Vec::new();
    let e = wait_for(rx, &mut seen, Duration::from_secs(1), |e| {
        matches!(e.kind, SessionEventKind::Down { .. })
    })
    .await;
    let SessionEventKind::Down { reason, .. } = e.kind else {
        unreachable!()
    };
    reason.to_string()
}

#[tokio::test(start_paused = true)]
async fn hold_timer_expiry_sends_notification() {
    let (_h, mut far, mut rx) = single(9);
    let mut p = raw_peer(&mut far, b_open(65002, 9)).await;
    p.send(Message::Keepalive).await;
    let mut seen = established_within(&mut rx, Duration::from_secs(5)).await;
    let t0 = tokio::time::Instant::now();
    // The peer goes silent. Its half keeps receiving our keepalives, then the NOTIFICATION.
    let mut got = Vec::new();
    while let Some(m) = p.next().await {
        let done = matches!(m, Message::Notification(_));
        got.push(m);
        if done {
            break;
        }
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(
        got.last(),
        Some(&Message::Notification(Notification::new(4, 0, vec![])))
    );
    assert!(got.iter().filter(|m| **m == Message::Keepalive).count() >= 2);
    let e = wait_for(&mut rx, &mut seen, Duration::from_secs(1), |e| {
        matches!(e.kind, SessionEventKind::Down { .. })
    })
    .await;
    assert_eq!(
        e.kind,
        SessionEventKind::Down {
            reason: DownReason::NotificationSent {
                notification: Notification::new(4, 0, vec![])
            },
            was_established: true
        }
    );
    // The connection is closed after the NOTIFICATION.
    assert_eq!(p.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn bad_peer_as_is_refused_and_retried_after_idle_hold() {
    let (_h, mut far, mut rx) = single(90);
    let mut p = raw_peer(&mut far, b_open(65003, 90)).await;
    // RFC 4271 §6.2: Bad Peer AS, data = the AS field.
    assert_eq!(
        p.next().await,
        Some(Message::Notification(Notification::new(
            2,
            2,
            65003u16.to_be_bytes().to_vec()
        )))
    );
    assert_eq!(p.next().await, None);
    assert_eq!(
        down_reason(&mut rx).await,
        "we sent NOTIFICATION OPEN Message Error / Bad Peer AS (2/2), data fdeb"
    );
    // AllowAutomaticStart: it comes back after the idle hold time (1 s in this config).
    let t0 = tokio::time::Instant::now();
    let again = timeout(Duration::from_secs(5), far.recv()).await;
    assert!(again.is_ok_and(|c| c.is_some()), "session reconnects");
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn peer_notification_and_unexpected_messages() {
    // The peer answers our OPEN with a NOTIFICATION.
    let (_h, mut far, mut rx) = single(90);
    let mut p = raw_peer(&mut far, b_open(65002, 90)).await;
    p.send(Message::Notification(Notification::new(2, 7, vec![65, 0])))
        .await;
    assert_eq!(
        down_reason(&mut rx).await,
        "peer sent NOTIFICATION OPEN Message Error / Unsupported Capability (2/7), data 4100"
    );

    // An UPDATE in OpenConfirm is an FSM error (RFC 6608 subcode 2).
    let (_h, mut far, _rx) = single(90);
    let mut p = raw_peer(&mut far, b_open(65002, 90)).await;
    assert_eq!(p.next().await, Some(Message::Keepalive));
    p.send(Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)))
        .await;
    assert_eq!(
        p.next().await,
        Some(Message::Notification(Notification::new(5, 2, vec![])))
    );
}

#[tokio::test(start_paused = true)]
async fn states_are_reported_in_order() {
    let (_h, mut far, mut rx) = single(90);
    let mut p = raw_peer(&mut far, b_open(65002, 90)).await;
    p.send(Message::Keepalive).await;
    let seen = established_within(&mut rx, Duration::from_secs(5)).await;
    let states: Vec<State> = seen
        .iter()
        .filter_map(|e| match e.kind {
            SessionEventKind::StateChanged { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
}

/// The peer opens a second connection while the first is in OpenConfirm (RFC 4271 §6.8).
/// `me` is our BGP identifier; the peer's is B (10.0.0.2).
async fn collision(
    me: IpAddr,
) -> (
    SessionHandle,
    RawPeer,
    RawPeer,
    mpsc::Receiver<SessionEvent>,
) {
    collision_in(me, true).await
}

/// As [`collision`]; `open_first`: the peer's OPEN came on the first connection (we are in
/// OpenConfirm on it), else it did not (OpenSent).
async fn collision_in(
    me: IpAddr,
    open_first: bool,
) -> (
    SessionHandle,
    RawPeer,
    RawPeer,
    mpsc::Receiver<SessionEvent>,
) {
    let (h, mut far, inject, rx) = single_with_incoming(90, me);
    // First connection: ours (outgoing).
    let first = if open_first {
        // OPENs exchanged, we are in OpenConfirm.
        let mut p = raw_peer(&mut far, b_open(65002, 90)).await;
        assert_eq!(p.next().await, Some(Message::Keepalive));
        p
    } else {
        let mut p = RawPeer::new(far.recv().await.expect("session connects"));
        let Some(Message::Open(_)) = p.next().await else {
            panic!("session sends OPEN first")
        };
        p
    };
    // Second connection: the peer's (incoming to us).
    let mut second = RawPeer::connect_in(&inject).await;
    // We send our OPEN on the new connection at once; the peer sends its own.
    let Some(Message::Open(_)) = second.next().await else {
        panic!("OPEN on the second connection")
    };
    second.send(Message::Open(b_open(65002, 90))).await;
    (h, first, second, rx)
}

/// Nothing arrives on `p` within `d` (paused clock): the session is waiting, not deciding.
async fn quiet_for(p: &mut RawPeer, d: Duration) {
    assert!(
        timeout(d, p.next()).await.is_err(),
        "the session wrote or closed where it should wait"
    );
}

/// Cease / Connection Collision Resolution (RFC 4271 §6.8, RFC 4486 §3 subcode 7).
fn collision_resolution() -> Message {
    Message::Notification(Notification::new(6, 7, vec![]))
}

/// The session closes `p` as the collision's loser: Cease / Connection Collision
/// Resolution, then end of stream.
async fn resolved_away(p: &mut RawPeer) {
    assert_eq!(p.next().await, Some(collision_resolution()));
    assert_eq!(p.next().await, None, "second connection closed");
}

/// Waits `within` for the session with the peer B to be Established; returns every event
/// seen meanwhile.
async fn established_within(
    rx: &mut mpsc::Receiver<SessionEvent>,
    within: Duration,
) -> Vec<SessionEvent> {
    let mut seen = Vec::new();
    wait_for(rx, &mut seen, within, established(B)).await;
    seen
}

/// No event in `seen` took the session down.
fn never_down(seen: &[SessionEvent]) {
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e.kind, SessionEventKind::Down { .. })),
        "{seen:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn collision_peer_with_higher_id_keeps_its_connection() {
    // We are 10.0.0.1 < 10.0.0.2: the peer-initiated (second) connection wins by §6.8, but we
    // are in OpenConfirm on the first and so wait (the peer may be Established on it). The
    // peer resolves the same collision and closes the first: we continue on the second.
    let (_h, mut first, mut second, mut rx) = collision(A).await;
    quiet_for(&mut first, Duration::from_secs(1)).await;
    quiet_for(&mut second, Duration::from_secs(1)).await;
    first.send(collision_resolution()).await;
    assert_eq!(first.next().await, None, "first connection closed");
    assert_eq!(second.next().await, Some(Message::Keepalive));
    second.send(Message::Keepalive).await;
    established_within(&mut rx, Duration::from_secs(5)).await;
}

/// The race of two active speakers: §6.8 says the second connection wins, but the peer's side
/// of the first reached Established before the second's OPEN arrived there, so the peer sends
/// its KEEPALIVE on the first and closes the second. Dumping the first (as an immediate
/// resolution would) would leave no connection and cost a ConnectRetry round; deferring keeps
/// the first, and the second is closed with Cease / Connection Collision Resolution.
#[tokio::test(start_paused = true)]
async fn collision_deferred_in_open_confirm_keeps_a_connection_the_peer_established() {
    let (_h, mut first, mut second, mut rx) = collision(A).await;
    first.send(Message::Keepalive).await;
    let seen = established_within(&mut rx, Duration::from_secs(5)).await;
    resolved_away(&mut second).await;
    never_down(&seen);
    // The established session runs on the first connection: keepalives come there.
    assert_eq!(first.next().await, Some(Message::Keepalive));
}

/// Deferred, and the peer, in OpenConfirm on the second connection, already sent its
/// KEEPALIVE there before closing the first: that KEEPALIVE counts once we continue on the
/// second, so the session is Established without waiting for another one.
#[tokio::test(start_paused = true)]
async fn collision_deferred_candidate_keepalive_is_replayed() {
    let (_h, mut first, mut second, mut rx) = collision(A).await;
    second.send(Message::Keepalive).await;
    quiet_for(&mut second, Duration::from_secs(1)).await;
    first.send(collision_resolution()).await;
    established_within(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(second.next().await, Some(Message::Keepalive));
}

/// Deferred, then the peer closes the second connection (it resolved for the first): the
/// candidate is forgotten and the first still establishes.
#[tokio::test(start_paused = true)]
async fn collision_deferred_candidate_closed_by_the_peer() {
    let (_h, mut first, mut second, mut rx) = collision(A).await;
    second.send(collision_resolution()).await;
    assert_eq!(second.next().await, None, "second connection dropped");
    first.send(Message::Keepalive).await;
    established_within(&mut rx, Duration::from_secs(5)).await;
}

/// We (10.0.0.3) win and keep our first connection, but it is in OpenSent: the peer's OPEN
/// has not come on it, so we do not know the peer holds it. We wait; when it closes without
/// an OPEN (a listener that did not know us yet accepts and closes), we continue on the
/// second instead of throwing both away.
#[tokio::test(start_paused = true)]
async fn collision_deferred_in_open_sent_continues_on_the_second_when_the_first_dies() {
    let me = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let (_h, first, mut second, mut rx) = collision_in(me, false).await;
    quiet_for(&mut second, Duration::from_secs(1)).await;
    drop(first);
    assert_eq!(second.next().await, Some(Message::Keepalive));
    second.send(Message::Keepalive).await;
    established_within(&mut rx, Duration::from_secs(5)).await;
}

/// As above, but the peer's OPEN then comes on the first: decided for the first at once
/// (OpenConfirm), the second is closed with Cease / Connection Collision Resolution.
#[tokio::test(start_paused = true)]
async fn collision_deferred_in_open_sent_decided_when_the_open_arrives() {
    let me = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let (_h, mut first, mut second, mut rx) = collision_in(me, false).await;
    quiet_for(&mut second, Duration::from_secs(1)).await;
    first.send(Message::Open(b_open(65002, 90))).await;
    assert_eq!(first.next().await, Some(Message::Keepalive));
    resolved_away(&mut second).await;
    first.send(Message::Keepalive).await;
    established_within(&mut rx, Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn collision_we_with_higher_id_keep_ours() {
    // We are 10.0.0.3 > 10.0.0.2: our (first, outgoing) connection survives.
    let me = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let (_h, mut first, mut second, mut rx) = collision(me).await;
    resolved_away(&mut second).await;
    first.send(Message::Keepalive).await;
    let seen = established_within(&mut rx, Duration::from_secs(5)).await;
    never_down(&seen);
}

/// Both sides send a large batch at once through small pipes: writes must not block the
/// session's reading, or the two would wait on each other forever.
#[tokio::test(start_paused = true)]
async fn large_batches_both_ways_do_not_deadlock() {
    let (a, b, mut rx) = pair(90);
    let mut seen = Vec::new();
    for _ in 0..2 {
        wait_for(&mut rx, &mut seen, Duration::from_secs(60), |e| {
            matches!(e.kind, SessionEventKind::Established(_))
        })
        .await;
    }
    const N: usize = 20_000; // 23 octets each: ~450 KiB per direction through 64 KiB pipes
    let batch = vec![Update::end_of_rib(Family::IPV4_UNICAST); N];
    a.commands.send(Command::Send(batch.clone())).await.unwrap();
    b.commands.send(Command::Send(batch)).await.unwrap();
    let mut got = std::collections::HashMap::new();
    let done = timeout(Duration::from_secs(60), async {
        while let Some(e) = rx.recv().await {
            if let SessionEventKind::Update(_) = e.kind {
                *got.entry(e.peer).or_insert(0usize) += 1;
                if got.values().sum::<usize>() == 2 * N {
                    return;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "received {got:?}");
    assert_eq!(got.get(&A), Some(&N));
    assert_eq!(got.get(&B), Some(&N));
}

/// RFC 4724 §4.2: a graceful-restart peer that restarted connects again while we still have
/// its old session Established; the old session ends and the new connection takes over.
#[tokio::test(start_paused = true)]
async fn graceful_restart_peer_reconnect_replaces_the_established_session() {
    use tabby_bgp::negotiate::GracefulRestartConfig;
    use tabby_bgp::wire::{Capability, GracefulRestart};
    let (far_tx, mut far) = incoming_channel();
    let (inject, a_in_rx) = incoming_channel();
    let (ev_tx, mut rx) = mpsc::channel(1000);
    let mut c = cfg(A, 65001, B, 65002, 90);
    c.local.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
        forwarding_preserved: Default::default(),
        notification: true,
    });
    let _h = spawn(
        c,
        Some(Arc::new(MemoryConnector::new(far_tx))),
        a_in_rx,
        ev_tx,
    );
    let gr_open = |restarting: bool| {
        let IpAddr::V4(id) = B else { unreachable!() };
        Open::new(
            Asn(65002),
            90,
            id,
            vec![Capability::GracefulRestart(GracefulRestart {
                restart_state: restarting,
                notification: true,
                reserved_flags: 0,
                restart_time: 90,
                families: vec![],
            })],
        )
    };
    let mut old = raw_peer(&mut far, gr_open(false)).await;
    old.send(Message::Keepalive).await;
    let mut seen = established_within(&mut rx, Duration::from_secs(5)).await;

    // The peer restarts: its old connection is silently gone, a new one arrives.
    let mut new = RawPeer::connect_in(&inject).await;
    let e = wait_for(&mut rx, &mut seen, Duration::from_secs(5), |e| {
        matches!(e.kind, SessionEventKind::Down { .. })
    })
    .await;
    assert!(
        matches!(
            e.kind,
            SessionEventKind::Down {
                was_established: true,
                ..
            }
        ),
        "{e:?}"
    );
    let Some(Message::Open(_)) = new.next().await else {
        panic!("OPEN on the new connection")
    };
    new.send(Message::Open(gr_open(true))).await;
    assert_eq!(new.next().await, Some(Message::Keepalive));
    new.send(Message::Keepalive).await;
    let e = wait_for(&mut rx, &mut seen, Duration::from_secs(5), established(B)).await;
    let SessionEventKind::Established(n) = e.kind else {
        unreachable!()
    };
    assert!(
        n.graceful_restart.is_some_and(|g| g.restarting),
        "R bit seen"
    );
    // The old connection was closed (after the keepalives sent while it was up).
    while let Some(m) = old.next().await {
        assert_eq!(m, Message::Keepalive);
    }
}
