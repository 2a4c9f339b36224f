//! The BGP finite state machine (RFC 4271 §8) as a pure function: events in, actions out.
//!
//! Owns the session state, the ConnectRetryCounter, which timers run, the idle hold time for
//! flapping peers and the [`Negotiated`] result of the OPEN exchange. [`Fsm::handle`] is the
//! one place where the state changes. No I/O, no clock reads, no async: timers are actions
//! ([`Action::StartTimer`]) and their expiry comes back as events, so every transition is tested
//! as data (see `tests/fsm_table.rs`). Sockets, timers and the codec belong to [`crate::session`].
//!
//! Where we chose among the RFC's options (each is an "optional attribute" of §8.1):
//! - Events 14/15 (TcpConnection_Valid / Tcp_CR_Invalid) happen in the listener, which only
//!   accepts configured peer addresses; the FSM never sees an invalid connection.
//! - Events 6/7 (AutomaticStart with DampPeerOscillations) are [`Event::AutomaticStart`] /
//!   [`Event::AutomaticStartPassive`] when [`FsmConfig::damp_peer_oscillations`] is set: while
//!   the idle hold timer runs they are ignored. See [`FsmConfig`] for the backoff.
//! - Connection collisions (§6.8) are decided by the owner with [`collision::resolve`] before
//!   an OPEN reaches this FSM; the loser gets [`Event::OpenCollisionDump`]. An OPEN on an
//!   OpenConfirm or Established connection is therefore a second OPEN on the same connection:
//!   an FSM error (CollisionDetectEstablishedState is FALSE).
//! - [`FsmConfig::passive`] means "never initiate": the ConnectRetry timer is not run at all.
//!   The RFC's passive start events (4, 5) without it only delay the first connection attempt.
//! - FSM error NOTIFICATIONs carry the RFC 6608 subcodes.
//! - A failed connection attempt in Connect (event 18 without DelayOpen) goes to Active with
//!   the ConnectRetry timer restarted, as the RFC does when DelayOpen runs, instead of to Idle:
//!   a refused connection is normal while the peer starts, and in Active we keep accepting the
//!   peer's own connection. Retries then follow ConnectRetryTime, not the idle hold backoff.
//! - A NOTIFICATION in OpenSent ends the session without answering it with an FSM error.
//! - A header error gets its own NOTIFICATION (§6.1) in every state.

pub mod collision;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::negotiate::{LocalConfig, Negotiated, negotiate};
use crate::wire::{MessageError, Notification, Open};

/// RFC 4271 §8.2.2: "a large value" for the hold timer until the OPEN arrives; 4 minutes.
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);
/// RFC 4271 §10 suggested ConnectRetryTime.
pub const CONNECT_RETRY_TIME: Duration = Duration::from_secs(120);

/// NOTIFICATION error codes used by the FSM (RFC 4271 §4.5).
const HOLD_TIMER_EXPIRED: u8 = 4;
const FSM_ERROR: u8 = 5;
const CEASE: u8 = 6;
/// RFC 4271 §6.2: OPEN Message Error / Unsupported Version Number, checked for event 24.
const OPEN_ERROR: u8 = 2;
const UNSUPPORTED_VERSION: u8 = 1;

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Idle,
        State::Connect,
        State::Active,
        State::OpenSent,
        State::OpenConfirm,
        State::Established,
    ];

    /// RFC 6608 §3 FSM error subcode for an unexpected event in this state.
    fn fsm_error_subcode(self) -> u8 {
        match self {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The timers the FSM runs. The first four are RFC 4271 §8; `IdleHold` is the §8.1.1 optional
/// IdleHoldTimer; `Stable` is ours: it fires when a session has been Established long enough
/// to forget past flaps (DampPeerOscillations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    DelayOpen,
    IdleHold,
    Stable,
}

impl Timer {
    pub const ALL: [Timer; 6] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::DelayOpen,
        Timer::IdleHold,
        Timer::Stable,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// Why we stop a session: the Cease NOTIFICATION (RFC 4486 subcodes) to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cease {
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Cease {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMIN_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIG_CHANGE: u8 = 6;
    pub const COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    /// RFC 8538 §3.
    pub const HARD_RESET: u8 = 9;

    pub fn new(subcode: u8) -> Cease {
        Cease {
            subcode,
            data: Vec::new(),
        }
    }

    /// Administrative Shutdown or Reset with an RFC 9003 shutdown communication (UTF-8, at
    /// most 255 octets; longer text is cut at a character boundary).
    pub fn with_message(subcode: u8, message: &str) -> Cease {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message.as_bytes()[..end];
        let mut data = Vec::with_capacity(text.len() + 1);
        data.push(text.len() as u8);
        data.extend_from_slice(text);
        Cease { subcode, data }
    }

    pub fn notification(&self) -> Notification {
        Notification::new(CEASE, self.subcode, self.data.clone())
    }
}

/// RFC 4271 §8.1 events that reach the FSM, as data. Numbers are the RFC's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event 1: ManualStart.
    ManualStart,
    /// Event 2: ManualStop, with the Cease to send.
    ManualStop(Cease),
    /// Event 3: AutomaticStart (event 6 when damping is configured).
    AutomaticStart,
    /// Event 4: ManualStart_with_PassiveTcpEstablishment.
    ManualStartPassive,
    /// Event 5: AutomaticStart_with_PassiveTcpEstablishment (event 7 with damping).
    AutomaticStartPassive,
    /// Event 8: AutomaticStop (e.g. max-prefix, RFC 4486 Cease/1), with the Cease to send.
    AutomaticStop(Cease),
    /// Event 9: ConnectRetryTimer_Expires.
    ConnectRetryTimerExpires,
    /// Event 10: HoldTimer_Expires.
    HoldTimerExpires,
    /// Event 11: KeepaliveTimer_Expires.
    KeepaliveTimerExpires,
    /// Event 12: DelayOpenTimer_Expires.
    DelayOpenTimerExpires,
    /// Event 13: IdleHoldTimer_Expires.
    IdleHoldTimerExpires,
    /// Event 16: Tcp_CR_Acked — our outgoing connection is up.
    TcpCrAcked,
    /// Event 17: TcpConnectionConfirmed — an incoming connection is up.
    TcpConnectionConfirmed,
    /// Event 18: TcpConnectionFails.
    TcpConnectionFails,
    /// Event 19: BGPOpen (event 20, BGPOpen with DelayOpenTimer running, when it is).
    /// The OPEN is decoded; the checks that need our config happen here.
    BgpOpen(Box<Open>),
    /// Event 21: BGPHeaderErr.
    BgpHeaderErr(MessageError),
    /// Event 22: BGPOpenMsgErr.
    BgpOpenMsgErr(MessageError),
    /// Event 23: OpenCollisionDump.
    OpenCollisionDump,
    /// Event 25: NotifMsg (event 24, NotifMsgVerErr, when it is an Unsupported Version
    /// Number OPEN error).
    NotifMsg(Notification),
    /// Event 26: KeepAliveMsg.
    KeepAliveMsg,
    /// Event 27: UpdateMsg (the decoded UPDATE stays with the owner).
    UpdateMsg,
    /// Event 28: UpdateMsgErr.
    UpdateMsgErr(MessageError),
    /// RFC 2918 ROUTE-REFRESH received; treated like event 27 for the FSM.
    RouteRefreshMsg,
    /// We sent an UPDATE: RFC 4271 §8.2.2 restarts the KeepaliveTimer.
    UpdateSent,
    /// Our `Stable` timer: the session stayed up long enough to forget its flaps.
    StableTimerExpires,
}

impl Event {
    /// The RFC 4271 §8.1 event number (0 for our extensions).
    pub fn number(&self) -> u8 {
        match self {
            Event::ManualStart => 1,
            Event::ManualStop(_) => 2,
            Event::AutomaticStart => 3,
            Event::ManualStartPassive => 4,
            Event::AutomaticStartPassive => 5,
            Event::AutomaticStop(_) => 8,
            Event::ConnectRetryTimerExpires => 9,
            Event::HoldTimerExpires => 10,
            Event::KeepaliveTimerExpires => 11,
            Event::DelayOpenTimerExpires => 12,
            Event::IdleHoldTimerExpires => 13,
            Event::TcpCrAcked => 16,
            Event::TcpConnectionConfirmed => 17,
            Event::TcpConnectionFails => 18,
            Event::BgpOpen(_) => 19,
            Event::BgpHeaderErr(_) => 21,
            Event::BgpOpenMsgErr(_) => 22,
            Event::OpenCollisionDump => 23,
            Event::NotifMsg(n) if is_version_error(n) => 24,
            Event::NotifMsg(_) => 25,
            Event::KeepAliveMsg => 26,
            Event::UpdateMsg => 27,
            Event::UpdateMsgErr(_) => 28,
            Event::RouteRefreshMsg | Event::UpdateSent | Event::StableTimerExpires => 0,
        }
    }
}

fn is_version_error(n: &Notification) -> bool {
    n.code == OPEN_ERROR && n.subcode == UNSUPPORTED_VERSION
}

/// Why a session went to Idle, in words an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum DownReason {
    /// We sent this NOTIFICATION (an error we found, a hold timer expiry, or a Cease).
    NotificationSent { notification: Notification },
    /// The peer sent this NOTIFICATION.
    NotificationReceived { notification: Notification },
    /// The TCP connection failed or was closed by the peer.
    ConnectionFailed,
    /// Stopped before any OPEN was exchanged (ManualStop/AutomaticStop), nothing sent.
    Stopped,
    /// An event the state does not expect, before an OPEN exchange (§8.2.2 "any other event").
    UnexpectedEvent { event: u8 },
}

fn describe(n: &Notification) -> String {
    let (code, sub) = n.names();
    let mut s = format!("{code} / {sub} ({}/{})", n.code, n.subcode);
    if let Some(m) = n.shutdown_message() {
        s.push_str(&format!(": \"{m}\""));
    } else if !n.data.is_empty() {
        s.push_str(&format!(", data {}", hex::encode(&n.data)));
    }
    s
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::NotificationSent { notification } => {
                write!(f, "we sent NOTIFICATION {}", describe(notification))
            }
            DownReason::NotificationReceived { notification } => {
                write!(f, "peer sent NOTIFICATION {}", describe(notification))
            }
            DownReason::ConnectionFailed => f.write_str("TCP connection failed or closed"),
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::UnexpectedEvent { event } => {
                write!(f, "unexpected event {event} before the OPEN exchange")
            }
        }
    }
}

/// What the owner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Initiate a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending anything queued before this action).
    DropConnection,
    /// Send our OPEN ([`Fsm::local_open`]).
    SendOpen,
    SendKeepalive,
    SendNotification(Notification),
    /// (Re)start a timer.
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// Hand the UPDATE just received to the RIB.
    ProcessUpdate,
    /// Answer the ROUTE-REFRESH just received.
    ProcessRouteRefresh,
    /// The session is Established with these capabilities.
    SessionEstablished(Box<Negotiated>),
    /// The session went to Idle (from any other state); drop the peer's routes unless
    /// graceful restart keeps them.
    SessionDown(DownReason),
}

/// The FSM's optional attributes (RFC 4271 §8.1.1) and the flap damping backoff.
///
/// Damping (DampPeerOscillations): after each failure the session waits `idle_hold_time`
/// before it starts again automatically, and the wait doubles per failure up to
/// `idle_hold_max`. Once a session has stayed Established for `stable_time`, the wait goes
/// back to `idle_hold_time`. Defaults: 5 s, doubling to at most 300 s, forgotten after 180 s
/// up — a peer that flaps every few seconds settles at one attempt per 5 minutes, a peer that
/// fails once reconnects in 5 s (BIRD's "error wait time" uses 60..300 s; FRR 5..120 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    pub connect_retry_time: Duration,
    /// Never initiate a connection; only accept one (the ConnectRetry timer never runs).
    pub passive: bool,
    /// RFC 4271 DelayOpen: wait this long for the peer's OPEN before sending ours.
    pub delay_open: Option<Duration>,
    /// Restart automatically after a failure (AllowAutomaticStart).
    pub allow_automatic_start: bool,
    pub damp_peer_oscillations: bool,
    pub idle_hold_time: Duration,
    pub idle_hold_max: Duration,
    pub stable_time: Duration,
    /// RFC 4271 SendNOTIFICATIONwithoutOPEN: send a NOTIFICATION for a header/OPEN error that
    /// arrives before we sent our OPEN (DelayOpen).
    pub send_notification_without_open: bool,
}

impl Default for FsmConfig {
    fn default() -> Self {
        FsmConfig {
            connect_retry_time: CONNECT_RETRY_TIME,
            passive: false,
            delay_open: None,
            allow_automatic_start: true,
            damp_peer_oscillations: true,
            idle_hold_time: Duration::from_secs(5),
            idle_hold_max: Duration::from_secs(300),
            stable_time: Duration::from_secs(180),
            send_notification_without_open: true,
        }
    }
}

/// Actions produced by one event. Most events produce a handful.
pub type Actions = Vec<Action>;

/// One peer's FSM.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    local: LocalConfig,
    local_open: Open,
    state: State,
    connect_retry_counter: u32,
    running: [bool; 6],
    negotiated: Option<Negotiated>,
    /// The wait before the next automatic start (grows with damping).
    idle_hold: Duration,
}

/// How a failure path ends (RFC 4271 §8.2.2 differ only in these respects).
struct Failure {
    notification: Option<Notification>,
    reason: DownReason,
    /// Increment the ConnectRetryCounter (and damp / restart automatically).
    count: bool,
}

impl Fsm {
    pub fn new(cfg: FsmConfig, local: LocalConfig) -> Fsm {
        let local_open = local.open();
        let idle_hold = cfg.idle_hold_time;
        Fsm {
            cfg,
            local,
            local_open,
            state: State::Idle,
            connect_retry_counter: 0,
            running: [false; 6],
            negotiated: None,
            idle_hold,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// The OPEN to send for [`Action::SendOpen`].
    pub fn local_open(&self) -> &Open {
        &self.local_open
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// What we offer and require in the OPEN exchange.
    pub fn local_config(&self) -> &LocalConfig {
        &self.local
    }

    /// What the OPEN exchange negotiated; `Some` in OpenConfirm and Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether the FSM believes `timer` is running.
    pub fn timer_running(&self, timer: Timer) -> bool {
        self.running[timer.index()]
    }

    /// The wait before the next automatic start after a failure.
    pub fn idle_hold_time(&self) -> Duration {
        self.idle_hold
    }

    /// Replaces the local config (e.g. the GR R bit after the first session); used from the
    /// next OPEN on.
    pub fn set_local_config(&mut self, local: LocalConfig) {
        self.local_open = local.open();
        self.local = local;
    }

    fn start(&mut self, out: &mut Actions, t: Timer, d: Duration) {
        self.running[t.index()] = true;
        out.push(Action::StartTimer(t, d));
    }

    fn stop(&mut self, out: &mut Actions, t: Timer) {
        if self.running[t.index()] {
            self.running[t.index()] = false;
            out.push(Action::StopTimer(t));
        }
    }

    /// The RFC 4271 §8.2.2 state machine. The only place `self.state` changes.
    pub fn handle(&mut self, event: Event) -> Actions {
        let mut out = Actions::new();
        // A timer that fired is no longer running.
        let fired = match event {
            Event::ConnectRetryTimerExpires => Some(Timer::ConnectRetry),
            Event::HoldTimerExpires => Some(Timer::Hold),
            Event::KeepaliveTimerExpires => Some(Timer::Keepalive),
            Event::DelayOpenTimerExpires => Some(Timer::DelayOpen),
            Event::IdleHoldTimerExpires => Some(Timer::IdleHold),
            Event::StableTimerExpires => Some(Timer::Stable),
            _ => None,
        };
        if let Some(t) = fired {
            self.running[t.index()] = false;
        }
        let state = self.state;
        match (state, event) {
            // ---------------------------------------------------------------- Idle
            (State::Idle, Event::ManualStart) => self.begin(&mut out, false),
            (State::Idle, Event::ManualStartPassive) => self.begin(&mut out, true),
            (State::Idle, Event::AutomaticStart | Event::AutomaticStartPassive)
                if self.cfg.damp_peer_oscillations && self.timer_running(Timer::IdleHold) =>
            {
                // Events 6/7: damped while the idle hold timer runs.
            }
            (State::Idle, Event::AutomaticStart) => self.begin(&mut out, false),
            (State::Idle, Event::AutomaticStartPassive) => self.begin(&mut out, true),
            (State::Idle, Event::IdleHoldTimerExpires) if self.cfg.allow_automatic_start => {
                self.begin(&mut out, self.cfg.passive)
            }
            // Everything else, ManualStop and AutomaticStop included, is ignored in Idle.
            (State::Idle, _) => {}

            // ------------------------------------------------------------- Connect
            (State::Connect | State::Active, e) if is_start(&e) => {}
            (State::Connect, Event::ManualStop(_)) => {
                self.connect_retry_counter = 0;
                self.fail(
                    &mut out,
                    Failure {
                        notification: None,
                        reason: DownReason::Stopped,
                        count: false,
                    },
                );
            }
            (State::Connect, Event::ConnectRetryTimerExpires) => {
                out.push(Action::DropConnection);
                self.start(&mut out, Timer::ConnectRetry, self.cfg.connect_retry_time);
                self.stop(&mut out, Timer::DelayOpen);
                out.push(Action::Connect);
            }
            (State::Connect | State::Active, Event::DelayOpenTimerExpires) => {
                self.stop(&mut out, Timer::ConnectRetry);
                self.send_open(&mut out);
            }
            (State::Connect | State::Active, Event::TcpCrAcked | Event::TcpConnectionConfirmed) => {
                self.stop(&mut out, Timer::ConnectRetry);
                match self.cfg.delay_open {
                    Some(d) => self.start(&mut out, Timer::DelayOpen, d),
                    None => self.send_open(&mut out),
                }
            }
            (State::Connect, Event::TcpConnectionFails) => {
                // With DelayOpen running this is the RFC's path. Without it the RFC goes to
                // Idle; we go to Active too (see the module doc).
                self.start(&mut out, Timer::ConnectRetry, self.cfg.connect_retry_time);
                self.stop(&mut out, Timer::DelayOpen);
                self.state = State::Active;
            }
            (State::Connect | State::Active, Event::BgpOpen(open))
                if self.timer_running(Timer::DelayOpen) =>
            {
                // Event 20.
                match negotiate(&self.local_open, &open, &self.local) {
                    Ok(n) => {
                        self.stop(&mut out, Timer::ConnectRetry);
                        self.stop(&mut out, Timer::DelayOpen);
                        out.push(Action::SendOpen);
                        out.push(Action::SendKeepalive);
                        self.open_confirm(&mut out, n);
                    }
                    Err(e) => return self.handle(Event::BgpOpenMsgErr(e)),
                }
            }
            (State::Connect | State::Active, Event::BgpHeaderErr(e) | Event::BgpOpenMsgErr(e)) => {
                let n = self
                    .cfg
                    .send_notification_without_open
                    .then(|| e.notification());
                let reason = match &n {
                    Some(n) => DownReason::NotificationSent {
                        notification: n.clone(),
                    },
                    None => DownReason::UnexpectedEvent { event: 21 },
                };
                self.fail_restart(&mut out, n, reason);
            }
            (State::Connect | State::Active, Event::NotifMsg(n)) if is_version_error(&n) => {
                // Event 24: no counting when DelayOpen was running (the peer only tried us).
                let count = !self.timer_running(Timer::DelayOpen);
                self.fail(
                    &mut out,
                    Failure {
                        notification: None,
                        reason: DownReason::NotificationReceived { notification: n },
                        count,
                    },
                );
                self.schedule_restart(&mut out, count);
            }
            (State::Connect | State::Active, Event::NotifMsg(n)) => {
                // "Any other event"; the reason an operator needs is the peer's NOTIFICATION.
                self.fail_restart(
                    &mut out,
                    None,
                    DownReason::NotificationReceived { notification: n },
                );
            }

            // -------------------------------------------------------------- Active
            (State::Active, Event::ManualStop(cease)) => {
                let n = (self.timer_running(Timer::DelayOpen)
                    && self.cfg.send_notification_without_open)
                    .then(|| cease.notification());
                let reason = match &n {
                    Some(n) => DownReason::NotificationSent {
                        notification: n.clone(),
                    },
                    None => DownReason::Stopped,
                };
                self.connect_retry_counter = 0;
                self.fail(
                    &mut out,
                    Failure {
                        notification: n,
                        reason,
                        count: false,
                    },
                );
            }
            (State::Active, Event::ConnectRetryTimerExpires) if self.cfg.passive => {}
            (State::Active, Event::ConnectRetryTimerExpires) => {
                self.start(&mut out, Timer::ConnectRetry, self.cfg.connect_retry_time);
                out.push(Action::Connect);
                self.state = State::Connect;
            }
            (State::Active, Event::TcpConnectionFails) => {
                self.stop(&mut out, Timer::DelayOpen);
                self.fail_restart(&mut out, None, DownReason::ConnectionFailed);
            }
            (State::Connect | State::Active, Event::AutomaticStop(_)) => {
                // "Any other event" in Connect/Active; nothing was sent to the peer yet.
                self.fail(
                    &mut out,
                    Failure {
                        notification: None,
                        reason: DownReason::Stopped,
                        count: true,
                    },
                );
            }
            (State::Connect | State::Active, Event::UpdateSent | Event::StableTimerExpires) => {}
            (State::Connect | State::Active, e) => {
                let event = e.number();
                self.fail_restart(&mut out, None, DownReason::UnexpectedEvent { event });
            }

            // ------------------------------------------- OpenSent / OpenConfirm / Established
            (State::OpenSent | State::OpenConfirm | State::Established, e) if is_start(&e) => {}
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::UpdateSent | Event::StableTimerExpires,
            ) if state != State::Established => {}
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::ManualStop(cease),
            ) => {
                self.connect_retry_counter = 0;
                let n = cease.notification();
                self.fail(
                    &mut out,
                    Failure {
                        notification: Some(n.clone()),
                        reason: DownReason::NotificationSent { notification: n },
                        count: false,
                    },
                );
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::AutomaticStop(cease),
            ) => {
                let n = cease.notification();
                self.fail(
                    &mut out,
                    Failure {
                        notification: Some(n.clone()),
                        reason: DownReason::NotificationSent { notification: n },
                        count: true,
                    },
                );
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::HoldTimerExpires,
            ) => {
                let n = Notification::new(HOLD_TIMER_EXPIRED, 0, Vec::new());
                self.fail_restart(
                    &mut out,
                    Some(n.clone()),
                    DownReason::NotificationSent { notification: n },
                );
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::TcpCrAcked | Event::TcpConnectionConfirmed,
            ) => {
                // A second connection: the owner runs collision detection (§6.8).
            }
            (State::OpenSent, Event::TcpConnectionFails) => {
                out.push(Action::DropConnection);
                self.start(&mut out, Timer::ConnectRetry, self.cfg.connect_retry_time);
                self.stop(&mut out, Timer::Hold);
                self.state = State::Active;
            }
            (State::OpenConfirm | State::Established, Event::TcpConnectionFails) => {
                self.fail_restart(&mut out, None, DownReason::ConnectionFailed);
            }
            (State::OpenSent, Event::BgpOpen(open)) => {
                match negotiate(&self.local_open, &open, &self.local) {
                    Ok(n) => {
                        self.stop(&mut out, Timer::DelayOpen);
                        self.stop(&mut out, Timer::ConnectRetry);
                        out.push(Action::SendKeepalive);
                        self.open_confirm(&mut out, n);
                    }
                    Err(e) => return self.handle(Event::BgpOpenMsgErr(e)),
                }
            }
            // §6.1: a header error gets its own NOTIFICATION in every state (RFC 4271 §8.2.2
            // lists event 21 as an FSM error in Established; the §6 error wins, as in practice).
            (State::OpenSent | State::OpenConfirm | State::Established, Event::BgpHeaderErr(e))
            | (State::OpenSent | State::OpenConfirm, Event::BgpOpenMsgErr(e))
            | (State::Established, Event::UpdateMsgErr(e)) => {
                let n = e.notification();
                self.fail_restart(
                    &mut out,
                    Some(n.clone()),
                    DownReason::NotificationSent { notification: n },
                );
            }
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::OpenCollisionDump,
            ) => {
                let n = Cease::new(Cease::COLLISION_RESOLUTION).notification();
                // The owner continues on the other connection: no idle hold.
                self.fail(
                    &mut out,
                    Failure {
                        notification: Some(n.clone()),
                        reason: DownReason::NotificationSent { notification: n },
                        count: true,
                    },
                );
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::NotifMsg(n))
                if is_version_error(&n) =>
            {
                // Event 24: no counting.
                self.fail(
                    &mut out,
                    Failure {
                        notification: None,
                        reason: DownReason::NotificationReceived { notification: n },
                        count: false,
                    },
                );
                self.schedule_restart(&mut out, false);
            }
            // RFC 4271 lists event 25 among OpenSent's "other events" (answer with an FSM error);
            // the peer has closed already, so we only record its NOTIFICATION.
            (State::OpenSent | State::OpenConfirm | State::Established, Event::NotifMsg(n)) => {
                // The peer closing this connection to resolve a collision (Cease/7, RFC 4486)
                // is not an oscillation: restart without growing the idle hold time.
                let collision = n.code == CEASE && n.subcode == Cease::COLLISION_RESOLUTION;
                self.fail(
                    &mut out,
                    Failure {
                        notification: None,
                        reason: DownReason::NotificationReceived { notification: n },
                        count: true,
                    },
                );
                self.schedule_restart(&mut out, !collision);
            }
            (State::OpenConfirm | State::Established, Event::KeepaliveTimerExpires) => {
                out.push(Action::SendKeepalive);
                self.restart_keepalive(&mut out);
            }
            (State::OpenConfirm, Event::KeepAliveMsg) => {
                self.restart_hold(&mut out);
                self.state = State::Established;
                // Damping: forget the flaps once the session proves stable.
                if self.cfg.damp_peer_oscillations {
                    self.start(&mut out, Timer::Stable, self.cfg.stable_time);
                }
                if let Some(n) = &self.negotiated {
                    out.push(Action::SessionEstablished(Box::new(n.clone())));
                }
            }
            (State::Established, Event::KeepAliveMsg) => self.restart_hold(&mut out),
            (State::Established, Event::UpdateMsg) => {
                out.push(Action::ProcessUpdate);
                self.restart_hold(&mut out);
            }
            (State::Established, Event::RouteRefreshMsg) => {
                out.push(Action::ProcessRouteRefresh);
                self.restart_hold(&mut out);
            }
            (State::Established, Event::UpdateSent) => self.restart_keepalive(&mut out),
            (State::Established, Event::StableTimerExpires) => {
                self.idle_hold = self.cfg.idle_hold_time;
            }
            // Any other event: FSM error (RFC 6608 subcode by state).
            (State::OpenSent | State::OpenConfirm | State::Established, _) => {
                let n = Notification::new(FSM_ERROR, state.fsm_error_subcode(), Vec::new());
                self.fail_restart(
                    &mut out,
                    Some(n.clone()),
                    DownReason::NotificationSent { notification: n },
                );
            }
        }
        out
    }

    /// Idle → Connect/Active (events 1, 3, 4, 5).
    fn begin(&mut self, out: &mut Actions, passive_event: bool) {
        self.stop(out, Timer::IdleHold);
        self.connect_retry_counter = 0;
        self.negotiated = None;
        if self.cfg.passive {
            self.state = State::Active;
            return;
        }
        self.start(out, Timer::ConnectRetry, self.cfg.connect_retry_time);
        if passive_event {
            self.state = State::Active;
        } else {
            out.push(Action::Connect);
            self.state = State::Connect;
        }
    }

    /// Send OPEN, large hold timer, → OpenSent (§8.2.2 Connect events 12, 16, 17).
    fn send_open(&mut self, out: &mut Actions) {
        self.stop(out, Timer::DelayOpen);
        out.push(Action::SendOpen);
        self.start(out, Timer::Hold, LARGE_HOLD_TIME);
        self.state = State::OpenSent;
    }

    /// Timers from the negotiated hold time, → OpenConfirm.
    fn open_confirm(&mut self, out: &mut Actions, n: Negotiated) {
        if n.hold_time == 0 {
            self.stop(out, Timer::Hold);
            self.stop(out, Timer::Keepalive);
        } else {
            self.start(out, Timer::Hold, secs(n.hold_time));
            self.start(out, Timer::Keepalive, secs(n.keepalive));
        }
        self.negotiated = Some(n);
        self.state = State::OpenConfirm;
    }

    fn hold_time(&self) -> u16 {
        self.negotiated.as_ref().map_or(0, |n| n.hold_time)
    }

    fn restart_hold(&mut self, out: &mut Actions) {
        if self.hold_time() != 0 {
            self.start(out, Timer::Hold, secs(self.hold_time()));
        }
    }

    fn restart_keepalive(&mut self, out: &mut Actions) {
        if let Some(n) = &self.negotiated
            && n.keepalive != 0
        {
            let d = secs(n.keepalive);
            self.start(out, Timer::Keepalive, d);
        }
    }

    /// The common tail of every path to Idle: NOTIFICATION, timers stopped, connection dropped.
    fn fail(&mut self, out: &mut Actions, f: Failure) {
        if let Some(n) = f.notification {
            out.push(Action::SendNotification(n));
        }
        for t in [
            Timer::ConnectRetry,
            Timer::DelayOpen,
            Timer::Hold,
            Timer::Keepalive,
            Timer::Stable,
        ] {
            self.stop(out, t);
        }
        out.push(Action::DropConnection);
        if f.count {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
        }
        self.negotiated = None;
        self.state = State::Idle;
        out.push(Action::SessionDown(f.reason));
    }

    /// A failure that counts and, with AllowAutomaticStart, restarts after the idle hold.
    fn fail_restart(&mut self, out: &mut Actions, n: Option<Notification>, reason: DownReason) {
        self.fail(
            out,
            Failure {
                notification: n,
                reason,
                count: true,
            },
        );
        self.schedule_restart(out, true);
    }

    /// AllowAutomaticStart: come back after the idle hold time; with damping, a failure of an
    /// OPEN exchange or a session (`damp`) doubles it.
    fn schedule_restart(&mut self, out: &mut Actions, damp: bool) {
        if !self.cfg.allow_automatic_start {
            return;
        }
        let wait = self.idle_hold;
        self.start(out, Timer::IdleHold, wait);
        if damp && self.cfg.damp_peer_oscillations {
            self.idle_hold = (wait * 2).min(self.cfg.idle_hold_max.max(self.cfg.idle_hold_time));
        }
    }
}

fn is_start(e: &Event) -> bool {
    matches!(
        e,
        Event::ManualStart
            | Event::AutomaticStart
            | Event::ManualStartPassive
            | Event::AutomaticStartPassive
    )
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}
