//! Every (state, event) pair of the RFC 4271 §8.2.2 FSM, checked as a table.
//!
//! Actions are written as short tokens so a row reads like the RFC text:
//! `C` connect, `D` drop connection, `O` send OPEN, `K` send KEEPALIVE, `N<code>/<sub>` send
//! NOTIFICATION, `+T`/`-T` start/stop timer T (CR ConnectRetry, H Hold, KA Keepalive,
//! DO DelayOpen, IH IdleHold, ST Stable), `U` process UPDATE, `R` process ROUTE-REFRESH,
//! `E` session established, `X` session down.

use std::net::Ipv4Addr;
use std::time::Duration;

use tabby_bgp::fsm::{
    Action, Cease, DownReason, Event, Fsm, FsmConfig, LARGE_HOLD_TIME, State, Timer,
};
use tabby_bgp::negotiate::LocalConfig;
use tabby_bgp::wire::error::{HeaderSubcode, OpenSubcode, UpdateSubcode};
use tabby_bgp::wire::{Asn, Capability, Family, MessageError, Notification, Open};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn local() -> LocalConfig {
    LocalConfig::new(Asn(65001), LOCAL_ID, Some(Asn(65002)))
}

fn peer_open(hold: u16) -> Open {
    Open::new(
        Asn(65002),
        hold,
        PEER_ID,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(Asn(65002)),
        ],
    )
}

fn token(a: &Action) -> String {
    let t = |t: &Timer| match t {
        Timer::ConnectRetry => "CR",
        Timer::Hold => "H",
        Timer::Keepalive => "KA",
        Timer::DelayOpen => "DO",
        Timer::IdleHold => "IH",
        Timer::Stable => "ST",
    };
    match a {
        Action::Connect => "C".into(),
        Action::DropConnection => "D".into(),
        Action::SendOpen => "O".into(),
        Action::SendKeepalive => "K".into(),
        Action::SendNotification(n) => format!("N{}/{}", n.code, n.subcode),
        Action::StartTimer(x, _) => format!("+{}", t(x)),
        Action::StopTimer(x) => format!("-{}", t(x)),
        Action::ProcessUpdate => "U".into(),
        Action::ProcessRouteRefresh => "R".into(),
        Action::SessionEstablished(_) => "E".into(),
        Action::SessionDown(_) => "X".into(),
    }
}

fn tokens(actions: &[Action]) -> String {
    actions.iter().map(token).collect::<Vec<_>>().join(" ")
}

/// An FSM brought to `state` by the RFC's normal path.
fn fsm_in(cfg: FsmConfig, state: State) -> Fsm {
    let mut f = Fsm::new(cfg, local());
    let path: &[Event] = match state {
        State::Idle => &[],
        State::Connect => &[Event::ManualStart],
        State::Active => &[Event::ManualStartPassive],
        State::OpenSent => &[Event::ManualStart, Event::TcpCrAcked],
        State::OpenConfirm => &[
            Event::ManualStart,
            Event::TcpCrAcked,
            Event::BgpOpen(Box::new(peer_open(90))),
        ],
        State::Established => &[
            Event::ManualStart,
            Event::TcpCrAcked,
            Event::BgpOpen(Box::new(peer_open(90))),
            Event::KeepAliveMsg,
        ],
    };
    for e in path {
        f.handle(e.clone());
    }
    assert_eq!(f.state(), state, "setup");
    f
}

fn header_err() -> MessageError {
    MessageError::Header {
        subcode: HeaderSubcode::BadMessageLength,
        data: vec![0, 5],
        reason: "test".into(),
    }
}

fn open_err() -> MessageError {
    MessageError::Open {
        subcode: OpenSubcode::BadPeerAs,
        data: vec![],
        reason: "test".into(),
    }
}

fn update_err() -> MessageError {
    MessageError::Update {
        subcode: UpdateSubcode::MalformedAttributeList,
        data: vec![],
        reason: "test".into(),
    }
}

/// The events, by name, in the order of the table columns.
fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("1 ManualStart", Event::ManualStart),
        (
            "2 ManualStop",
            Event::ManualStop(Cease::new(Cease::ADMIN_SHUTDOWN)),
        ),
        ("3 AutomaticStart", Event::AutomaticStart),
        ("4 ManualStartPassive", Event::ManualStartPassive),
        ("5 AutomaticStartPassive", Event::AutomaticStartPassive),
        (
            "8 AutomaticStop",
            Event::AutomaticStop(Cease::new(Cease::MAX_PREFIXES)),
        ),
        ("9 ConnectRetryTimer", Event::ConnectRetryTimerExpires),
        ("10 HoldTimer", Event::HoldTimerExpires),
        ("11 KeepaliveTimer", Event::KeepaliveTimerExpires),
        ("12 DelayOpenTimer", Event::DelayOpenTimerExpires),
        ("13 IdleHoldTimer", Event::IdleHoldTimerExpires),
        ("16 TcpCrAcked", Event::TcpCrAcked),
        ("17 TcpConnectionConfirmed", Event::TcpConnectionConfirmed),
        ("18 TcpConnectionFails", Event::TcpConnectionFails),
        ("19 BGPOpen", Event::BgpOpen(Box::new(peer_open(90)))),
        ("21 BGPHeaderErr", Event::BgpHeaderErr(header_err())),
        ("22 BGPOpenMsgErr", Event::BgpOpenMsgErr(open_err())),
        ("23 OpenCollisionDump", Event::OpenCollisionDump),
        (
            "24 NotifMsgVerErr",
            Event::NotifMsg(Notification::new(2, 1, vec![0, 4])),
        ),
        (
            "25 NotifMsg",
            Event::NotifMsg(Notification::new(6, 2, vec![])),
        ),
        ("26 KeepAliveMsg", Event::KeepAliveMsg),
        ("27 UpdateMsg", Event::UpdateMsg),
        ("28 UpdateMsgErr", Event::UpdateMsgErr(update_err())),
        ("RouteRefreshMsg", Event::RouteRefreshMsg),
        ("UpdateSent", Event::UpdateSent),
        ("StableTimer", Event::StableTimerExpires),
    ]
}

use State::*;

/// (state, expected (next state, actions) per event in `events()` order).
/// Each row is RFC 4271 §8.2.2 for that state; deviations are noted in `fsm`'s module doc.
fn table() -> Vec<(State, Vec<(State, &'static str)>)> {
    // Connect and Active share "any other event": stop CR, drop, count, damp → Idle.
    let ca_other = "-CR D X +IH";
    vec![
        (
            Idle,
            vec![
                (Connect, "+CR C"),
                (Idle, ""),
                (Connect, "+CR C"),
                (Active, "+CR"),
                (Active, "+CR"),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Connect, "+CR C"), // 13: AllowAutomaticStart restarts
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
                (Idle, ""),
            ],
        ),
        (
            Connect,
            vec![
                (Connect, ""),
                (Idle, "-CR D X"),
                (Connect, ""),
                (Connect, ""),
                (Connect, ""),
                (Idle, "-CR D X"),
                (Connect, "D +CR C"),
                (Idle, ca_other),
                (Idle, ca_other),
                (OpenSent, "-CR O +H"),
                (Idle, ca_other),
                (OpenSent, "-CR O +H"),
                (OpenSent, "-CR O +H"),
                (Active, "+CR"),  // 18: to Active, not Idle (module doc)
                (Idle, ca_other), // 19 without DelayOpen
                (Idle, "N1/2 -CR D X +IH"),
                (Idle, "N2/2 -CR D X +IH"),
                (Idle, ca_other),
                (Idle, "-CR D X +IH"),
                (Idle, "-CR D X +IH"),
                (Idle, ca_other),
                (Idle, ca_other),
                (Idle, ca_other),
                (Idle, ca_other),
                (Connect, ""),
                (Connect, ""),
            ],
        ),
        (
            Active,
            vec![
                (Active, ""),
                (Idle, "-CR D X"),
                (Active, ""),
                (Active, ""),
                (Active, ""),
                (Idle, "-CR D X"),
                (Connect, "+CR C"),
                (Idle, ca_other),
                (Idle, ca_other),
                (OpenSent, "-CR O +H"),
                (Idle, ca_other),
                (OpenSent, "-CR O +H"),
                (OpenSent, "-CR O +H"),
                (Idle, "-CR D X +IH"),
                (Idle, ca_other),
                (Idle, "N1/2 -CR D X +IH"),
                (Idle, "N2/2 -CR D X +IH"),
                (Idle, ca_other),
                (Idle, "-CR D X +IH"),
                (Idle, "-CR D X +IH"),
                (Idle, ca_other),
                (Idle, ca_other),
                (Idle, ca_other),
                (Idle, ca_other),
                (Active, ""),
                (Active, ""),
            ],
        ),
        (
            OpenSent,
            vec![
                (OpenSent, ""),
                (Idle, "N6/2 -H D X"),
                (OpenSent, ""),
                (OpenSent, ""),
                (OpenSent, ""),
                (Idle, "N6/1 -H D X"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N4/0 D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (OpenSent, ""),
                (OpenSent, ""),
                (Active, "D +CR -H"),
                (OpenConfirm, "K +H +KA"),
                (Idle, "N1/2 -H D X +IH"),
                (Idle, "N2/2 -H D X +IH"),
                (Idle, "N6/7 -H D X"),
                (Idle, "-H D X +IH"),
                (Idle, "-H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (Idle, "N5/1 -H D X +IH"),
                (OpenSent, ""),
                (OpenSent, ""),
            ],
        ),
        (
            OpenConfirm,
            vec![
                (OpenConfirm, ""),
                (Idle, "N6/2 -H -KA D X"),
                (OpenConfirm, ""),
                (OpenConfirm, ""),
                (OpenConfirm, ""),
                (Idle, "N6/1 -H -KA D X"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (Idle, "N4/0 -KA D X +IH"),
                (OpenConfirm, "K +KA"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (OpenConfirm, ""),
                (OpenConfirm, ""),
                (Idle, "-H -KA D X +IH"),
                (Idle, "N5/2 -H -KA D X +IH"), // a second OPEN on this connection
                (Idle, "N1/2 -H -KA D X +IH"),
                (Idle, "N2/2 -H -KA D X +IH"),
                (Idle, "N6/7 -H -KA D X"),
                (Idle, "-H -KA D X +IH"),
                (Idle, "-H -KA D X +IH"),
                (Established, "+H +ST E"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (Idle, "N5/2 -H -KA D X +IH"),
                (OpenConfirm, ""),
                (OpenConfirm, ""),
            ],
        ),
        (
            Established,
            vec![
                (Established, ""),
                (Idle, "N6/2 -H -KA -ST D X"),
                (Established, ""),
                (Established, ""),
                (Established, ""),
                (Idle, "N6/1 -H -KA -ST D X"),
                (Idle, "N5/3 -H -KA -ST D X +IH"),
                (Idle, "N4/0 -KA -ST D X +IH"),
                (Established, "K +KA"),
                (Idle, "N5/3 -H -KA -ST D X +IH"),
                (Idle, "N5/3 -H -KA -ST D X +IH"),
                (Established, ""),
                (Established, ""),
                (Idle, "-H -KA -ST D X +IH"),
                (Idle, "N5/3 -H -KA -ST D X +IH"),
                (Idle, "N1/2 -H -KA -ST D X +IH"),
                (Idle, "N5/3 -H -KA -ST D X +IH"),
                (Idle, "N6/7 -H -KA -ST D X"),
                (Idle, "-H -KA -ST D X +IH"),
                (Idle, "-H -KA -ST D X +IH"),
                (Established, "+H"),
                (Established, "U +H"),
                (Idle, "N3/1 -H -KA -ST D X +IH"),
                (Established, "R +H"),
                (Established, "+KA"),
                (Established, ""),
            ],
        ),
    ]
}

#[test]
fn every_state_event_pair() {
    let evs = events();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (state, row) in table() {
        assert_eq!(
            row.len(),
            evs.len(),
            "row for {state:?} has one entry per event"
        );
        for ((name, ev), (next, acts)) in evs.iter().zip(row) {
            let mut f = fsm_in(FsmConfig::default(), state);
            let got = f.handle(ev.clone());
            checked += 1;
            if f.state() != next || tokens(&got) != acts {
                failures.push(format!(
                    "{state:?} + {name}: expected {next:?} [{acts}], got {:?} [{}]",
                    f.state(),
                    tokens(&got)
                ));
            }
        }
    }
    assert_eq!(checked, 6 * 26);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// DelayOpen (RFC 4271 §8.1.1 optional attribute 7): Connect/Active wait for the peer's OPEN.
#[test]
fn delay_open() {
    let cfg = FsmConfig {
        delay_open: Some(Duration::from_secs(5)),
        ..FsmConfig::default()
    };
    let cases: Vec<(State, Vec<Event>, State, &str, &str)> = vec![
        (
            Connect,
            vec![Event::TcpCrAcked],
            Connect,
            "-CR +DO",
            "16: wait for the peer's OPEN",
        ),
        (
            Active,
            vec![Event::TcpConnectionConfirmed],
            Active,
            "-CR +DO",
            "17 in Active",
        ),
        (
            Connect,
            vec![Event::TcpCrAcked, Event::DelayOpenTimerExpires],
            OpenSent,
            "O +H",
            "12: send OPEN when the delay ends",
        ),
        (
            Connect,
            vec![Event::TcpCrAcked, Event::BgpOpen(Box::new(peer_open(90)))],
            OpenConfirm,
            "-DO O K +H +KA",
            "20: OPEN while DelayOpen runs: OPEN + KEEPALIVE, to OpenConfirm",
        ),
        (
            Active,
            vec![
                Event::TcpConnectionConfirmed,
                Event::BgpOpen(Box::new(peer_open(90))),
            ],
            OpenConfirm,
            "-DO O K +H +KA",
            "20 in Active",
        ),
        (
            Connect,
            vec![Event::TcpCrAcked, Event::TcpConnectionFails],
            Active,
            "+CR -DO",
            "18 with DelayOpen running: to Active",
        ),
        (
            Connect,
            vec![
                Event::TcpCrAcked,
                Event::NotifMsg(Notification::new(2, 1, vec![])),
            ],
            Idle,
            "-DO D X +IH",
            "24 with DelayOpen running: no ConnectRetryCounter increment",
        ),
        (
            Active,
            vec![
                Event::TcpConnectionConfirmed,
                Event::ManualStop(Cease::new(2)),
            ],
            Idle,
            "N6/2 -DO D X",
            "2 in Active with DelayOpen running: Cease (SendNOTIFICATIONwithoutOPEN)",
        ),
        (
            Connect,
            vec![Event::TcpCrAcked, Event::BgpHeaderErr(header_err())],
            Idle,
            "N1/2 -DO D X +IH",
            "21 before our OPEN: NOTIFICATION (SendNOTIFICATIONwithoutOPEN)",
        ),
    ];
    for (start, evs, want, acts, why) in cases {
        let mut f = fsm_in(cfg.clone(), start);
        let mut last = Vec::new();
        for e in evs {
            last = f.handle(e);
        }
        assert_eq!((f.state(), tokens(&last).as_str()), (want, acts), "{why}");
    }
    // Event 24 with DelayOpen running does not count; without it, it does.
    let mut f = fsm_in(cfg.clone(), Connect);
    f.handle(Event::TcpCrAcked);
    f.handle(Event::NotifMsg(Notification::new(2, 1, vec![])));
    assert_eq!(f.connect_retry_counter(), 0);
    let mut f = fsm_in(FsmConfig::default(), Connect);
    f.handle(Event::NotifMsg(Notification::new(2, 1, vec![])));
    assert_eq!(f.connect_retry_counter(), 1);
}

#[test]
fn timers_follow_the_negotiated_hold_time() {
    // Before the OPEN: the large hold time (§8.2.2, 4 minutes).
    let mut f = fsm_in(FsmConfig::default(), Connect);
    let a = f.handle(Event::TcpCrAcked);
    assert!(a.contains(&Action::StartTimer(Timer::Hold, LARGE_HOLD_TIME)));
    assert_eq!(LARGE_HOLD_TIME, Duration::from_secs(240));
    // min(90, 30) = 30, keepalive 10.
    let a = f.handle(Event::BgpOpen(Box::new(peer_open(30))));
    assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
    assert!(a.contains(&Action::StartTimer(
        Timer::Keepalive,
        Duration::from_secs(10)
    )));
    let a = f.handle(Event::KeepAliveMsg);
    assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
    let Some(Action::SessionEstablished(n)) = a
        .iter()
        .find(|a| matches!(a, Action::SessionEstablished(_)))
    else {
        panic!("no SessionEstablished in {a:?}");
    };
    assert_eq!((n.hold_time, n.keepalive, n.peer_asn), (30, 10, Asn(65002)));

    // Hold time 0: no hold timer, no keepalives (RFC 4271 §4.4).
    let mut f = fsm_in(FsmConfig::default(), OpenSent);
    let a = f.handle(Event::BgpOpen(Box::new(peer_open(0))));
    assert_eq!(tokens(&a), "K -H");
    assert_eq!(f.state(), OpenConfirm);
    let a = f.handle(Event::KeepAliveMsg);
    assert_eq!(tokens(&a), "+ST E");
    assert_eq!(tokens(&f.handle(Event::KeepAliveMsg)), "");
    assert_eq!(tokens(&f.handle(Event::UpdateMsg)), "U");
    assert_eq!(tokens(&f.handle(Event::UpdateSent)), "");
}

#[test]
fn open_checks_become_open_errors() {
    // (peer OPEN, expected NOTIFICATION code/subcode, RFC clause)
    let two_octet = Open::new(Asn(65002), 90, PEER_ID, vec![]);
    let mut wrong_as = peer_open(90);
    wrong_as.params[0].capabilities[1] = Capability::FourOctetAs(Asn(65003));
    let cases = [
        (wrong_as, (2, 2), "§6.2 Bad Peer AS"),
        (
            Open::new(Asn(65002), 90, Ipv4Addr::UNSPECIFIED, vec![]),
            (2, 3),
            "RFC 6286 zero id",
        ),
        (
            Open::new(Asn(65002), 2, PEER_ID, vec![]),
            (2, 6),
            "§6.2 hold time 1 or 2",
        ),
        (
            two_octet,
            (0, 0),
            "a 2-octet peer without capabilities is fine",
        ),
    ];
    for (open, (code, sub), why) in cases {
        let mut f = fsm_in(FsmConfig::default(), OpenSent);
        let a = f.handle(Event::BgpOpen(Box::new(open)));
        let sent = a.iter().find_map(|a| match a {
            Action::SendNotification(n) => Some((n.code, n.subcode)),
            _ => None,
        });
        if code == 0 {
            assert_eq!(sent, None, "{why}");
            assert_eq!(f.state(), OpenConfirm, "{why}");
        } else {
            assert_eq!(sent, Some((code, sub)), "{why}");
            assert_eq!(f.state(), Idle, "{why}");
        }
    }
}

#[test]
fn manual_stop_sends_shutdown_communication_and_resets_counter() {
    let mut f = fsm_in(FsmConfig::default(), Established);
    f.handle(Event::HoldTimerExpires);
    assert_eq!(f.connect_retry_counter(), 1);
    let mut f = fsm_in(FsmConfig::default(), Established);
    let a = f.handle(Event::ManualStop(Cease::with_message(
        Cease::ADMIN_SHUTDOWN,
        "maintenance",
    )));
    let Some(Action::SessionDown(reason)) = a.last() else {
        panic!("{a:?}");
    };
    assert_eq!(
        reason.to_string(),
        "we sent NOTIFICATION Cease / Administrative Shutdown (6/2): \"maintenance\""
    );
    assert_eq!(f.connect_retry_counter(), 0);
    // Admin stop: no automatic restart.
    assert!(!f.timer_running(Timer::IdleHold));
}

#[test]
fn down_reason_names_the_peers_notification() {
    let mut f = fsm_in(FsmConfig::default(), OpenSent);
    let a = f.handle(Event::NotifMsg(Notification::new(2, 2, vec![0xfd, 0xea])));
    assert!(
        a.contains(&Action::SessionDown(DownReason::NotificationReceived {
            notification: Notification::new(2, 2, vec![0xfd, 0xea]),
        }))
    );
    let Some(Action::SessionDown(r)) = a.iter().find(|a| matches!(a, Action::SessionDown(_)))
    else {
        panic!()
    };
    assert_eq!(
        r.to_string(),
        "peer sent NOTIFICATION OPEN Message Error / Bad Peer AS (2/2), data fdea"
    );
}

/// DampPeerOscillations: the idle hold time doubles per flap up to the cap, and a session that
/// stays up for the stable time forgets the flaps.
#[test]
fn flapping_peer_backs_off_exponentially() {
    let cfg = FsmConfig {
        idle_hold_time: Duration::from_secs(5),
        idle_hold_max: Duration::from_secs(60),
        ..FsmConfig::default()
    };
    let mut f = Fsm::new(cfg.clone(), local());
    let mut waits = Vec::new();
    for _ in 0..6 {
        // Bring the session up and let the peer drop it.
        if f.state() == Idle && !f.timer_running(Timer::IdleHold) {
            f.handle(Event::ManualStart);
        } else {
            // Damped: AutomaticStart is ignored while the idle hold timer runs (event 6).
            assert_eq!(tokens(&f.handle(Event::AutomaticStart)), "");
            assert_eq!(f.state(), Idle);
            f.handle(Event::IdleHoldTimerExpires);
        }
        assert_eq!(f.state(), Connect);
        f.handle(Event::TcpCrAcked);
        f.handle(Event::BgpOpen(Box::new(peer_open(90))));
        f.handle(Event::KeepAliveMsg);
        assert_eq!(f.state(), Established);
        let a = f.handle(Event::NotifMsg(Notification::new(6, 4, vec![])));
        let wait = a.iter().find_map(|a| match a {
            Action::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
            _ => None,
        });
        waits.push(wait.unwrap_or(0));
    }
    assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
    // Up for the stable time: back to the initial wait.
    f.handle(Event::IdleHoldTimerExpires);
    f.handle(Event::TcpCrAcked);
    f.handle(Event::BgpOpen(Box::new(peer_open(90))));
    let a = f.handle(Event::KeepAliveMsg);
    assert!(a.contains(&Action::StartTimer(Timer::Stable, cfg.stable_time)));
    f.handle(Event::StableTimerExpires);
    assert_eq!(f.idle_hold_time(), Duration::from_secs(5));

    // Without damping the wait stays fixed and AutomaticStart is honoured at once.
    let cfg = FsmConfig {
        damp_peer_oscillations: false,
        ..FsmConfig::default()
    };
    let mut f = fsm_in(cfg, Established);
    f.handle(Event::HoldTimerExpires);
    assert_eq!(f.idle_hold_time(), Duration::from_secs(5));
    assert_eq!(tokens(&f.handle(Event::AutomaticStart)), "-IH +CR C");
}

#[test]
fn collision_cease_from_the_peer_does_not_grow_the_idle_hold() {
    // (NOTIFICATION received in OpenConfirm, idle hold after it, next idle hold)
    let cases = [
        (
            Notification::new(6, 7, vec![]),
            5,
            5,
            "RFC 4486 Cease/7: not a flap",
        ),
        (
            Notification::new(6, 4, vec![]),
            5,
            10,
            "Administrative Reset: a flap",
        ),
    ];
    for (n, wait, next, why) in cases {
        let mut f = fsm_in(FsmConfig::default(), OpenConfirm);
        let a = f.handle(Event::NotifMsg(n));
        assert!(
            a.contains(&Action::StartTimer(
                Timer::IdleHold,
                Duration::from_secs(wait)
            )),
            "{why}: {a:?}"
        );
        assert_eq!(f.idle_hold_time(), Duration::from_secs(next), "{why}");
    }
}

#[test]
fn no_automatic_restart_when_not_allowed() {
    let cfg = FsmConfig {
        allow_automatic_start: false,
        ..FsmConfig::default()
    };
    let mut f = fsm_in(cfg, Established);
    let a = f.handle(Event::HoldTimerExpires);
    assert_eq!(tokens(&a), "N4/0 -KA -ST D X");
    assert_eq!(tokens(&f.handle(Event::IdleHoldTimerExpires)), "");
    assert_eq!(f.state(), Idle);
}

#[test]
fn passive_peer_never_connects() {
    let cfg = FsmConfig {
        passive: true,
        ..FsmConfig::default()
    };
    let mut f = Fsm::new(cfg.clone(), local());
    assert_eq!(tokens(&f.handle(Event::ManualStart)), "");
    assert_eq!(f.state(), Active);
    assert_eq!(tokens(&f.handle(Event::ConnectRetryTimerExpires)), "");
    assert_eq!(f.state(), Active);
    assert_eq!(tokens(&f.handle(Event::TcpConnectionConfirmed)), "O +H");
    assert_eq!(f.state(), OpenSent);
    // Automatic restart of a passive peer goes back to Active, not Connect.
    let mut f = fsm_in(cfg, Idle);
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnectionConfirmed);
    f.handle(Event::TcpConnectionFails);
    assert_eq!(f.state(), Active);
}

#[test]
fn event_numbers_match_the_rfc() {
    let nums: Vec<u8> = events().iter().map(|(_, e)| e.number()).collect();
    assert_eq!(
        nums,
        [
            1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27, 28, 0,
            0, 0
        ]
    );
}
