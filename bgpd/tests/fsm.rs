//! The session state machine, driven event by event without a network.

use std::net::Ipv4Addr;
use std::time::Duration;

use bgpd::fsm::{Action, DownReason, Event, Fsm, FsmConfig, State, Timer, resolve_collision};
use bgpd::wire::capability::{AddPathFamily, Capability};
use bgpd::wire::error::{code, subcode};
use bgpd::wire::open::Open;
use bgpd::wire::{AfiSafi, Message, Notification, Update, WireError};
use proptest::prelude::*;

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65002;

fn config() -> FsmConfig {
    FsmConfig::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1), PEER_AS)
}

fn peer_open(asn: u32, hold: u16, caps: Vec<Capability>) -> Open {
    let mut caps = caps;
    caps.push(Capability::FourOctetAs(asn));
    Open::new(asn, hold, Ipv4Addr::new(10, 0, 0, 2), caps)
}

fn default_peer_open() -> Open {
    peer_open(
        PEER_AS,
        90,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
        ],
    )
}

fn sent(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn notification(actions: &[Action]) -> Option<&Notification> {
    sent(actions).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

fn timer(actions: &[Action], t: Timer) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::StartTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// Drives a machine to Established with the given peer OPEN.
fn establish(fsm: &mut Fsm, open: Open) -> Vec<Action> {
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    fsm.handle(Event::Message(Message::Open(open)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm.handle(Event::Message(Message::Keepalive))
}

#[test]
fn active_open_reaches_established() {
    let mut fsm = Fsm::new(config());
    let a = fsm.handle(Event::ManualStart);
    assert_eq!(fsm.state(), State::Connect);
    assert!(a.contains(&Action::Connect));
    assert!(timer(&a, Timer::ConnectRetry).is_some());

    let a = fsm.handle(Event::TcpConnected);
    assert_eq!(fsm.state(), State::OpenSent);
    assert!(a.contains(&Action::StopTimer(Timer::ConnectRetry)));
    let Some(Message::Open(ours)) = sent(&a).first().copied() else {
        panic!("OPEN first: {a:?}")
    };
    assert_eq!(ours.asn(), LOCAL_AS);
    assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(240)));

    let a = fsm.handle(Event::Message(Message::Open(default_peer_open())));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(sent(&a), vec![&Message::Keepalive]);
    assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(90)));
    let ka = timer(&a, Timer::Keepalive).expect("keepalive timer");
    assert!(
        ka >= Duration::from_millis(22_500) && ka <= Duration::from_secs(30),
        "{ka:?}"
    );

    let a = fsm.handle(Event::Message(Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    let Some(Action::Established(n)) = a.iter().find(|a| matches!(a, Action::Established(_)))
    else {
        panic!("{a:?}")
    };
    assert_eq!(n.peer_asn, PEER_AS);
    assert_eq!(n.families, vec![AfiSafi::IPV4_UNICAST]);
    assert!(n.route_refresh && !n.enhanced_route_refresh);
    assert!(n.rx.four_octet_as && n.tx.four_octet_as);
    assert!(timer(&a, Timer::Stable).is_some());
}

#[test]
fn established_session_keeps_alive_and_resets_hold_on_messages() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, default_peer_open());
    let a = fsm.handle(Event::KeepaliveTimerExpires);
    assert_eq!(sent(&a), vec![&Message::Keepalive]);
    assert!(timer(&a, Timer::Keepalive).is_some());
    for m in [Message::Keepalive, Message::Update(Update::default())] {
        let a = fsm.handle(Event::Message(m));
        assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(90)));
        assert_eq!(fsm.state(), State::Established);
    }
}

#[test]
fn hold_time_is_negotiated_down_and_zero_disables_keepalives_only_when_configured() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, peer_open(PEER_AS, 9, vec![]));
    let n = fsm.negotiated().expect("established");
    assert_eq!((n.hold_time, n.keepalive_time), (9, 3));

    // The peer asks for no keepalives; we are configured with 90 s: refused
    // (Unacceptable Hold Time), not a session that never notices a dead
    // peer.
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::Message(Message::Open(peer_open(PEER_AS, 0, vec![]))));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Send(Message::Notification(n))
            if n.code == code::OPEN_MESSAGE && n.subcode == subcode::open::UNACCEPTABLE_HOLD_TIME)),
        "{a:?}"
    );
    assert_eq!(fsm.state(), State::Idle);

    // Configured with 0 here too: no keepalives.
    let mut cfg = config();
    cfg.hold_time = 0;
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::Message(Message::Open(peer_open(PEER_AS, 0, vec![]))));
    assert_eq!(timer(&a, Timer::Keepalive), None);
    assert!(a.contains(&Action::StopTimer(Timer::Hold)));
    assert_eq!(fsm.negotiated().map(|n| n.hold_time), Some(0));

    let mut cfg = config();
    cfg.keepalive_time = Some(60);
    let mut fsm = Fsm::new(cfg);
    establish(&mut fsm, peer_open(PEER_AS, 30, vec![]));
    assert_eq!(
        fsm.negotiated().map(|n| n.keepalive_time),
        Some(10),
        "capped at a third"
    );
}

#[test]
fn no_mp_capability_means_ipv4_unicast() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, peer_open(PEER_AS, 90, vec![]));
    assert_eq!(
        fsm.negotiated().map(|n| n.families.clone()),
        Some(vec![AfiSafi::IPV4_UNICAST])
    );
}

#[test]
fn passive_peer_never_connects() {
    let mut cfg = config();
    cfg.passive = true;
    let mut fsm = Fsm::new(cfg);
    let a = fsm.handle(Event::ManualStart);
    assert_eq!(fsm.state(), State::Active);
    assert!(!a.contains(&Action::Connect));
    assert!(fsm.handle(Event::ConnectRetryTimerExpires).is_empty());
    fsm.handle(Event::TcpAccepted);
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn delay_open_waits_for_the_peer() {
    let mut cfg = config();
    cfg.delay_open = Some(Duration::from_secs(5));
    let mut fsm = Fsm::new(cfg.clone());
    fsm.handle(Event::ManualStart);
    let a = fsm.handle(Event::TcpConnected);
    assert_eq!(fsm.state(), State::Connect);
    assert!(sent(&a).is_empty());
    assert_eq!(timer(&a, Timer::DelayOpen), Some(Duration::from_secs(5)));
    // The peer's OPEN arrives first: ours and a KEEPALIVE go out together.
    let a = fsm.handle(Event::Message(Message::Open(default_peer_open())));
    assert_eq!(fsm.state(), State::OpenConfirm);
    let msgs = sent(&a);
    assert!(matches!(msgs[0], Message::Open(_)));
    assert_eq!(msgs[1], &Message::Keepalive);

    // Or the timer fires and we send our OPEN.
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::DelayOpenTimerExpires);
    assert_eq!(fsm.state(), State::OpenSent);
    assert!(matches!(sent(&a)[0], Message::Open(_)));
}

#[test]
fn wrong_peer_as_is_bad_peer_as() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::Message(Message::Open(peer_open(65099, 90, vec![]))));
    let n = notification(&a).expect("NOTIFICATION");
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, subcode::open::BAD_PEER_AS)
    );
    assert!(a.contains(&Action::Disconnect));
    assert_eq!(fsm.state(), State::Idle);
    assert!(
        timer(&a, Timer::IdleHold).is_some(),
        "restarts after a backoff"
    );
    assert!(matches!(
        fsm.last_down(),
        Some(DownReason::NotificationSent(_))
    ));
}

#[test]
fn as_trans_without_four_octet_capability_is_bad_peer_as() {
    let mut cfg = config();
    cfg.peer_asn = 23456;
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let open = Open::new(23456, 90, Ipv4Addr::new(10, 0, 0, 2), vec![]);
    let a = fsm.handle(Event::Message(Message::Open(open)));
    assert_eq!(
        notification(&a).map(|n| n.subcode),
        Some(subcode::open::BAD_PEER_AS)
    );
}

#[test]
fn ibgp_peer_with_our_router_id_is_bad_bgp_identifier() {
    let mut cfg = config();
    cfg.peer_asn = LOCAL_AS;
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let mut open = peer_open(LOCAL_AS, 90, vec![]);
    open.bgp_id = Ipv4Addr::new(10, 0, 0, 1);
    let a = fsm.handle(Event::Message(Message::Open(open)));
    let n = notification(&a).expect("NOTIFICATION");
    assert_eq!(n.subcode, subcode::open::BAD_BGP_IDENTIFIER);
    assert_eq!(n.data, vec![10, 0, 0, 1]);
}

#[test]
fn four_octet_asn_peer_is_accepted() {
    let mut cfg = config();
    cfg.peer_asn = 4_200_000_001;
    let mut fsm = Fsm::new(cfg);
    establish(&mut fsm, peer_open(4_200_000_001, 90, vec![]));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn no_common_family_is_unsupported_capability() {
    let mut cfg = config();
    cfg.capabilities = vec![Capability::Multiprotocol(AfiSafi::IPV6_UNICAST)];
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::Message(Message::Open(default_peer_open())));
    let n = notification(&a).expect("NOTIFICATION");
    assert_eq!(
        (n.code, n.subcode),
        (code::OPEN_MESSAGE, subcode::open::UNSUPPORTED_CAPABILITY)
    );
    assert_eq!(
        n.data,
        vec![1, 4, 0, 2, 0, 1],
        "our MP IPv6 unicast capability"
    );
}

fn next_open(fsm: &mut Fsm) -> Open {
    fsm.handle(Event::IdleHoldTimerExpires);
    let a = fsm.handle(Event::TcpConnected);
    match sent(&a).first() {
        Some(Message::Open(o)) => o.clone(),
        other => panic!("expected an OPEN, got {other:?}"),
    }
}

#[test]
fn a_refused_capability_is_left_out_of_the_next_open() {
    let mut cfg = config();
    cfg.capabilities
        .push(Capability::AddPath(vec![AddPathFamily {
            afi_safi: AfiSafi::IPV4_UNICAST,
            send_receive: 3,
        }]));
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    // The peer refuses ADD-PATH (RFC 5492 §5: the data lists the capability).
    let refusal = Notification {
        code: code::OPEN_MESSAGE,
        subcode: subcode::open::UNSUPPORTED_CAPABILITY,
        data: vec![69, 4, 0, 1, 1, 3],
    };
    fsm.handle(Event::Message(Message::Notification(refusal)));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.suppressed_capabilities().collect::<Vec<_>>(), vec![69]);
    let open = next_open(&mut fsm);
    assert!(
        !open
            .capabilities()
            .any(|c| matches!(c, Capability::AddPath(_)))
    );
    assert!(
        open.capabilities()
            .any(|c| matches!(c, Capability::RouteRefresh))
    );
}

#[test]
fn a_peer_refusing_optional_parameters_gets_a_bare_open() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let refusal = Notification::new(
        code::OPEN_MESSAGE,
        subcode::open::UNSUPPORTED_OPTIONAL_PARAMETER,
    );
    fsm.handle(Event::Message(Message::Notification(refusal)));
    assert!(next_open(&mut fsm).params.is_empty());
}

#[test]
fn hold_timer_expiry_takes_the_session_down() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, default_peer_open());
    let a = fsm.handle(Event::HoldTimerExpires);
    assert_eq!(
        notification(&a).map(|n| n.code),
        Some(code::HOLD_TIMER_EXPIRED)
    );
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Down {
            established: true,
            ..
        }
    )));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn unexpected_messages_are_fsm_errors_with_rfc_6608_subcodes() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::Message(Message::Keepalive));
    assert_eq!(
        notification(&a).map(|n| (n.code, n.subcode)),
        Some((code::FSM, 1))
    );

    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    fsm.handle(Event::Message(Message::Open(default_peer_open())));
    let a = fsm.handle(Event::Message(Message::Update(Update::default())));
    assert_eq!(
        notification(&a).map(|n| (n.code, n.subcode)),
        Some((code::FSM, 2))
    );

    let mut fsm = Fsm::new(config());
    establish(&mut fsm, default_peer_open());
    let a = fsm.handle(Event::Message(Message::Open(default_peer_open())));
    assert_eq!(
        notification(&a).map(|n| (n.code, n.subcode)),
        Some((code::FSM, 3))
    );
}

#[test]
fn decode_errors_send_their_notification() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, default_peer_open());
    let err = bgpd::wire::Message::decode(&[0u8; 19], &bgpd::wire::WireContext::modern())
        .expect_err("bad marker");
    let a = fsm.handle(Event::MessageError(err.clone()));
    assert_eq!(notification(&a), Some(&err.notification));
    assert_eq!(fsm.state(), State::Idle);
    let _: &WireError = &err;
}

#[test]
fn manual_stop_sends_a_shutdown_communication_and_stays_down() {
    let mut fsm = Fsm::new(config());
    establish(&mut fsm, default_peer_open());
    let a = fsm.handle(Event::ManualStop(Some("moving to rack 7".into())));
    let n = notification(&a).expect("NOTIFICATION");
    assert_eq!(
        (n.code, n.subcode),
        (code::CEASE, subcode::cease::ADMINISTRATIVE_SHUTDOWN)
    );
    assert_eq!(n.shutdown_communication(), Some("moving to rack 7"));
    assert_eq!(timer(&a, Timer::IdleHold), None, "no automatic restart");
    assert_eq!(fsm.running_timers().count(), 0);
    assert!(
        fsm.handle(Event::IdleHoldTimerExpires)
            .iter()
            .all(|a| !matches!(a, Action::Connect))
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn idle_hold_backs_off_exponentially_and_resets_when_stable() {
    let mut cfg = config();
    cfg.idle_hold = Duration::from_secs(2);
    cfg.idle_hold_max = Duration::from_secs(20);
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    let mut delays = Vec::new();
    for _ in 0..6 {
        fsm.handle(Event::TcpConnected);
        let a = fsm.handle(Event::HoldTimerExpires);
        delays.push(timer(&a, Timer::IdleHold).expect("backoff"));
        fsm.handle(Event::IdleHoldTimerExpires);
    }
    // Nominal 2, 4, 8, 16, 20, 20 s, each jittered down by at most 25 %.
    let nominal = [2u64, 4, 8, 16, 20, 20];
    for (d, n) in delays.iter().zip(nominal) {
        let n = Duration::from_secs(n);
        assert!(*d <= n && *d >= n.mul_f64(0.75), "{delays:?}");
    }
    // A session that stays up long enough resets the count.
    establish(&mut fsm, default_peer_open());
    fsm.handle(Event::StableTimerExpires);
    assert_eq!(fsm.failures(), 0);
    let a = fsm.handle(Event::HoldTimerExpires);
    assert!(timer(&a, Timer::IdleHold).expect("backoff") <= Duration::from_secs(2));
}

#[test]
fn collision_keeps_the_higher_identifiers_connection() {
    assert!(resolve_collision(
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 1)
    ));
    assert!(!resolve_collision(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2)
    ));
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    fsm.handle(Event::Message(Message::Open(default_peer_open())));
    let a = fsm.handle(Event::CollisionDump);
    let n = notification(&a).expect("NOTIFICATION");
    assert_eq!(
        (n.code, n.subcode),
        (code::CEASE, subcode::cease::CONNECTION_COLLISION)
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn idle_refuses_connections() {
    let mut fsm = Fsm::new(config());
    assert_eq!(fsm.handle(Event::TcpAccepted), vec![Action::Disconnect]);
    assert_eq!(fsm.state(), State::Idle);
}

fn event() -> impl Strategy<Value = Event> {
    let open = prop_oneof![
        Just(default_peer_open()),
        Just(peer_open(65099, 90, vec![])),
        Just(peer_open(PEER_AS, 0, vec![])),
        Just(peer_open(
            PEER_AS,
            3,
            vec![Capability::Multiprotocol(AfiSafi::IPV6_UNICAST)]
        )),
    ];
    prop_oneof![
        Just(Event::ManualStart),
        Just(Event::ManualStop(None)),
        Just(Event::AutomaticStop(subcode::cease::MAX_PREFIXES)),
        Just(Event::ConnectRetryTimerExpires),
        Just(Event::HoldTimerExpires),
        Just(Event::KeepaliveTimerExpires),
        Just(Event::DelayOpenTimerExpires),
        Just(Event::IdleHoldTimerExpires),
        Just(Event::StableTimerExpires),
        Just(Event::TcpConnected),
        Just(Event::TcpAccepted),
        Just(Event::TcpFailed),
        Just(Event::CollisionDump),
        open.prop_map(|o| Event::Message(Message::Open(o))),
        Just(Event::Message(Message::Keepalive)),
        Just(Event::Message(Message::Update(Update::default()))),
        Just(Event::Message(Message::Notification(Notification::new(
            6, 2
        )))),
        Just(Event::Message(Message::Notification(Notification {
            code: 2,
            subcode: 7,
            data: vec![2, 0, 70, 0]
        }))),
        Just(Event::MessageError(
            bgpd::wire::Message::decode(&[0u8; 19], &bgpd::wire::WireContext::modern())
                .expect_err("bad")
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Random event sequences: no panic, and the machine's invariants hold after every step.
    #[test]
    fn invariants_hold_under_random_events(
        passive in any::<bool>(),
        delay in any::<bool>(),
        events in proptest::collection::vec(event(), 0..60),
    ) {
        let mut cfg = config();
        cfg.passive = passive;
        cfg.delay_open = delay.then_some(Duration::from_secs(3));
        let mut fsm = Fsm::new(cfg);
        for ev in events {
            let before = fsm.state();
            let was_connected = fsm.is_connected();
            let opens_connection = matches!(ev, Event::TcpConnected | Event::TcpAccepted);
            let actions = fsm.handle(ev);
            let after = fsm.state();
            let timers: Vec<Timer> = fsm.running_timers().collect();

            // Messages go out only on a connection.
            if actions.iter().any(|a| matches!(a, Action::Send(_))) {
                prop_assert!(was_connected || opens_connection, "send without a connection: {actions:?}");
            }
            // Timers belong to their states.
            for t in &timers {
                let ok = match t {
                    Timer::Hold => matches!(after, State::OpenSent | State::OpenConfirm | State::Established),
                    Timer::Keepalive => matches!(after, State::OpenConfirm | State::Established),
                    Timer::ConnectRetry | Timer::DelayOpen => matches!(after, State::Connect | State::Active),
                    Timer::Stable => after == State::Established,
                    Timer::IdleHold => after == State::Idle,
                };
                prop_assert!(ok, "{t:?} running in {after:?}");
            }
            prop_assert!(after != State::Idle || !fsm.is_connected());
            prop_assert_eq!(
                fsm.negotiated().is_some(),
                matches!(after, State::OpenConfirm | State::Established)
            );
            // Up and down are reported exactly at the transitions.
            let up = actions.iter().any(|a| matches!(a, Action::Established(_)));
            prop_assert_eq!(up, before != State::Established && after == State::Established);
            let down_up = actions.iter().any(|a| matches!(a, Action::Down { established: true, .. }));
            prop_assert_eq!(down_up, before == State::Established && after != State::Established);
            // Passive machines never connect out.
            if passive {
                prop_assert!(!actions.contains(&Action::Connect));
            }
        }
    }
}

#[test]
fn a_backing_off_machine_takes_the_peers_connection() {
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let a = fsm.handle(Event::HoldTimerExpires);
    assert!(timer(&a, Timer::IdleHold).is_some());
    // The peer connects while we wait out the backoff: take the connection.
    let a = fsm.handle(Event::TcpAccepted);
    assert!(a.contains(&Action::StopTimer(Timer::IdleHold)));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn a_successor_keeps_what_the_peer_refused() {
    let mut cfg = config();
    cfg.capabilities.push(Capability::ExtendedMessage);
    let mut fsm = Fsm::new(cfg);
    fsm.handle(Event::ManualStart);
    fsm.handle(Event::TcpConnected);
    let refusal = Notification {
        code: code::OPEN_MESSAGE,
        subcode: subcode::open::UNSUPPORTED_CAPABILITY,
        data: vec![6, 0],
    };
    fsm.handle(Event::Message(Message::Notification(refusal)));
    let next = fsm.successor();
    assert_eq!(next.state(), State::Idle);
    assert!(
        !next
            .local_open()
            .capabilities()
            .any(|c| matches!(c, Capability::ExtendedMessage))
    );
}

/// A Graceful Restart capability with RFC 8538's N bit (or without).
fn graceful_restart(n_bit: bool) -> Capability {
    Capability::GracefulRestart(bgpd::wire::capability::GracefulRestart {
        flags: if n_bit {
            bgpd::wire::capability::GracefulRestart::NOTIFICATION
        } else {
            0
        },
        restart_time: 120,
        families: vec![],
    })
}

#[test]
fn with_the_n_bit_on_both_sides_a_final_cease_goes_as_a_hard_reset() {
    for (ours, theirs, wrapped) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
    ] {
        let mut cfg = config();
        if ours {
            cfg.capabilities.push(graceful_restart(true));
        }
        let mut fsm = Fsm::new(cfg);
        let mut caps = vec![Capability::Multiprotocol(AfiSafi::IPV4_UNICAST)];
        if theirs {
            caps.push(graceful_restart(true));
        }
        establish(&mut fsm, peer_open(PEER_AS, 90, caps));
        assert_eq!(fsm.state(), State::Established);
        assert_eq!(
            fsm.negotiated().map(|n| n.graceful_notification()),
            Some(ours && theirs)
        );
        let a = fsm.handle(Event::ManualStop(Some("bye".into())));
        let n = notification(&a).expect("a NOTIFICATION");
        if wrapped {
            // Cease / Hard Reset carrying Cease / Administrative Shutdown
            // and its communication.
            assert_eq!(
                (n.code, n.subcode),
                (code::CEASE, subcode::cease::HARD_RESET)
            );
            assert_eq!(
                &n.data[..3],
                &[code::CEASE, subcode::cease::ADMINISTRATIVE_SHUTDOWN, 3]
            );
            assert!(n.is_hard());
        } else {
            assert_eq!(
                (n.code, n.subcode),
                (code::CEASE, subcode::cease::ADMINISTRATIVE_SHUTDOWN)
            );
        }
    }
}

#[test]
fn with_the_n_bit_a_restart_cease_and_a_hold_timer_expiry_are_not_wrapped() {
    for event in [
        Event::AutomaticStop(subcode::cease::ADMINISTRATIVE_RESET),
        Event::HoldTimerExpires,
    ] {
        let mut cfg = config();
        cfg.capabilities.push(graceful_restart(true));
        let mut fsm = Fsm::new(cfg);
        establish(
            &mut fsm,
            peer_open(
                PEER_AS,
                90,
                vec![
                    Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                    graceful_restart(true),
                ],
            ),
        );
        let a = fsm.handle(event.clone());
        let n = notification(&a).expect("a NOTIFICATION");
        assert!(!n.is_hard(), "{event:?} sent {n:?}");
        assert_ne!(n.subcode, subcode::cease::HARD_RESET, "{event:?}");
    }
    // An operator's hard reset is one, carrying Administrative Reset.
    let n = Notification::hard_reset(&Notification::new(
        code::CEASE,
        subcode::cease::ADMINISTRATIVE_RESET,
    ));
    assert_eq!(
        n.data,
        vec![code::CEASE, subcode::cease::ADMINISTRATIVE_RESET]
    );
}
