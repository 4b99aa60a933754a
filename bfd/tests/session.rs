//! Two sessions talking over a simulated link with a simulated clock:
//! every RFC 5880 behaviour that timing decides, deterministically.

use std::time::{Duration, Instant};

use bfd::{AuthType, ControlPacket, Diag, Event, Key, ReceiveError, Session, SessionConfig, State};

const MS: Duration = Duration::from_millis(1);

fn cfg(tx_ms: u32, rx_ms: u32, mult: u8) -> SessionConfig {
    SessionConfig {
        desired_min_tx: tx_ms * MS,
        required_min_rx: rx_ms * MS,
        detect_mult: mult,
        ..SessionConfig::default()
    }
}

/// Two sessions and the link between them, which can be cut one way or both.
struct Link {
    a: Session,
    b: Session,
    now: Instant,
    start: Instant,
    a_to_b: bool,
    b_to_a: bool,
    /// Packets sent by each side: (time, decoded).
    sent_a: Vec<(Instant, ControlPacket)>,
    sent_b: Vec<(Instant, ControlPacket)>,
    events_a: Vec<(Instant, Event)>,
    events_b: Vec<(Instant, Event)>,
    discarded: Vec<ReceiveError>,
}

impl Link {
    fn new(ca: SessionConfig, cb: SessionConfig) -> Link {
        let start = Instant::now();
        Link {
            a: Session::new(ca, 0x0a, 1, start),
            b: Session::new(cb, 0x0b, 2, start),
            now: start,
            start,
            a_to_b: true,
            b_to_a: true,
            sent_a: vec![],
            sent_b: vec![],
            events_a: vec![],
            events_b: vec![],
            discarded: vec![],
        }
    }

    /// Runs until `until` after the start, delivering packets at once.
    fn run(&mut self, until: Duration) {
        let end = self.start + until;
        for _ in 0..1_000_000 {
            let next = [self.a.deadline(), self.b.deadline()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            for e in self.a.timeout(now) {
                self.events_a.push((now, e));
            }
            for e in self.b.timeout(now) {
                self.events_b.push((now, e));
            }
            while let Some(pkt) = self.a.transmit(now) {
                let p = ControlPacket::decode(&pkt).expect("a sends valid packets");
                self.sent_a.push((now, p.clone()));
                if self.a_to_b {
                    match self.b.receive(&p, &pkt, now) {
                        Ok(ev) => self.events_b.extend(ev.into_iter().map(|e| (now, e))),
                        Err(e) => self.discarded.push(e),
                    }
                }
            }
            while let Some(pkt) = self.b.transmit(now) {
                let p = ControlPacket::decode(&pkt).expect("b sends valid packets");
                self.sent_b.push((now, p.clone()));
                if self.b_to_a {
                    match self.a.receive(&p, &pkt, now) {
                        Ok(ev) => self.events_a.extend(ev.into_iter().map(|e| (now, e))),
                        Err(e) => self.discarded.push(e),
                    }
                }
            }
        }
        panic!("the simulation did not reach its end");
    }
}

fn up(l: &Link) -> bool {
    l.a.state() == State::Up && l.b.state() == State::Up
}

#[test]
fn two_sessions_come_up_through_init_and_then_speed_up_by_poll_and_final() {
    let mut l = Link::new(cfg(50, 50, 3), cfg(100, 100, 3));
    l.run(Duration::from_millis(10));
    assert!(up(&l), "a {:?} b {:?}", l.a.state(), l.b.state());
    // Each side went Down -> Init -> Up or Down -> Up.
    let a: Vec<State> = l
        .events_a
        .iter()
        .map(|(_, Event::StateChanged { to, .. })| *to)
        .collect();
    assert_eq!(a.last(), Some(&State::Up));
    // Before Up, nobody advertised less than a second.
    for (_, p) in l.sent_a.iter().chain(&l.sent_b) {
        if p.state != State::Up {
            assert!(p.desired_min_tx >= 1_000_000, "{p:?}");
        }
    }
    // Coming Up lowers the advertised rate: a Poll, answered by a Final.
    l.run(Duration::from_secs(3));
    assert!(l.sent_a.iter().any(|(_, p)| p.poll));
    assert!(l.sent_b.iter().any(|(_, p)| p.final_));
    assert!(l.sent_a.iter().all(|(_, p)| !(p.poll && p.final_)));
    let sa = l.a.status();
    let sb = l.b.status();
    assert!(!sa.polling && !sb.polling);
    // a sends at the slower of its 50 ms and b's 100 ms receive interval.
    assert_eq!(sa.tx_interval, Some(100 * MS));
    assert_eq!(sb.tx_interval, Some(100 * MS));
    // Detection: the remote multiplier times the slower of our receive
    // interval and its transmit interval.
    assert_eq!(sa.detection_time, Some(300 * MS));
    assert_eq!(sb.detection_time, Some(300 * MS));
    assert_eq!(sa.remote_disc, 0x0b);
    assert_eq!(sb.remote_disc, 0x0a);
    // Steady state: 75-100% of 100 ms between a's periodic packets.
    let late: Vec<Instant> = l
        .sent_a
        .iter()
        .filter(|(t, p)| *t > l.start + Duration::from_secs(2) && !p.final_)
        .map(|(t, _)| *t)
        .collect();
    assert!(late.len() > 8);
    for w in late.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= 75 * MS && gap <= 100 * MS, "{gap:?}");
    }
}

#[test]
fn silence_takes_the_session_down_at_the_detection_time_not_before() {
    let mut l = Link::new(cfg(50, 50, 3), cfg(50, 50, 3));
    l.run(Duration::from_secs(3));
    assert!(up(&l));
    let cut = l.now;
    l.b_to_a = false;
    l.run(Duration::from_secs(4));
    let (t, e) = l.events_a.last().copied().expect("a event");
    assert_eq!(
        e,
        Event::StateChanged {
            from: State::Up,
            to: State::Down,
            diag: Diag::DetectionTimeExpired
        }
    );
    // Within 3 x 50 ms of the last packet heard, which came at most 50 ms
    // before the cut.
    let after = t - cut;
    assert!(after <= 150 * MS && after >= 100 * MS, "{after:?}");
    // b hears a say Down: Neighbor Signaled Session Down.
    assert!(l.events_b.iter().any(|(_, e)| *e
        == Event::StateChanged {
            from: State::Up,
            to: State::Down,
            diag: Diag::NeighborDown
        }));
    // a forgets b's discriminator after the detection time.
    assert_eq!(l.a.remote_disc(), 0);
    // Restored, the link brings the session back.
    l.b_to_a = true;
    l.run(Duration::from_secs(8));
    assert!(up(&l));
}

#[test]
fn admin_down_is_not_a_failure_to_the_remote_end() {
    let mut l = Link::new(cfg(50, 50, 3), cfg(50, 50, 3));
    l.run(Duration::from_secs(2));
    assert!(up(&l));
    let now = l.now;
    let ev = l.a.admin_down(now);
    assert_eq!(
        ev,
        vec![Event::StateChanged {
            from: State::Up,
            to: State::AdminDown,
            diag: Diag::AdminDown
        }]
    );
    l.run(Duration::from_secs(3));
    assert_eq!(l.a.state(), State::AdminDown);
    assert_eq!(l.b.state(), State::Down);
    assert_eq!(l.b.status().remote_state, State::AdminDown);
    assert_eq!(l.b.status().remote_diag, Diag::AdminDown);
    let now = l.now;
    l.a.admin_up(now);
    l.run(Duration::from_secs(6));
    assert!(up(&l));
}

#[test]
fn a_timer_change_runs_a_poll_sequence_without_a_flap() {
    let mut l = Link::new(cfg(50, 50, 3), cfg(50, 50, 3));
    l.run(Duration::from_secs(3));
    assert!(up(&l));
    let flaps = l.events_a.len() + l.events_b.len();
    let now = l.now;
    // Slower: 200 ms both ways.
    l.a.reconfigure(cfg(200, 200, 3), now);
    assert!(l.a.status().polling);
    l.run(Duration::from_secs(5));
    assert_eq!(
        l.events_a.len() + l.events_b.len(),
        flaps,
        "no state change"
    );
    assert!(!l.a.status().polling);
    assert_eq!(l.a.status().tx_interval, Some(200 * MS));
    assert_eq!(l.b.status().tx_interval, Some(200 * MS));
    assert_eq!(l.b.status().detection_time, Some(600 * MS));
    // Faster again, and a silent remote Final: the slow values hold until
    // the Final comes (a would otherwise expect b at 50 ms).
    let now = l.now;
    l.b_to_a = false;
    l.a.reconfigure(cfg(50, 50, 3), now);
    assert_eq!(l.a.status().detection_time, Some(600 * MS));
    l.b_to_a = true;
    l.run(Duration::from_secs(7));
    assert_eq!(
        l.events_a.len() + l.events_b.len(),
        flaps,
        "no state change"
    );
    assert_eq!(l.a.status().detection_time, Some(150 * MS));
}

#[test]
fn a_multiplier_of_one_sends_at_75_to_90_percent() {
    let mut l = Link::new(cfg(100, 100, 1), cfg(100, 100, 3));
    l.run(Duration::from_secs(6));
    assert!(up(&l));
    let late: Vec<Instant> = l
        .sent_a
        .iter()
        .filter(|(t, p)| *t > l.start + Duration::from_secs(3) && !p.final_)
        .map(|(t, _)| *t)
        .collect();
    for w in late.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= 75 * MS && gap <= 90 * MS, "{gap:?}");
    }
}

#[test]
fn a_passive_session_waits_to_be_spoken_to() {
    let mut ca = cfg(50, 50, 3);
    ca.passive = true;
    let mut l = Link::new(ca, cfg(50, 50, 3));
    l.a_to_b = true;
    l.b_to_a = false;
    l.run(Duration::from_secs(3));
    assert!(l.sent_a.is_empty(), "a passive session spoke first");
    l.b_to_a = true;
    l.run(Duration::from_secs(6));
    assert!(up(&l));
    // Both passive: nothing at all.
    let mut cb = cfg(50, 50, 3);
    cb.passive = true;
    let mut ca = cfg(50, 50, 3);
    ca.passive = true;
    let mut l = Link::new(ca, cb);
    l.run(Duration::from_secs(3));
    assert!(l.sent_a.is_empty() && l.sent_b.is_empty());
}

#[test]
fn a_remote_that_wants_no_packets_gets_none_periodically() {
    let t0 = Instant::now();
    let mut a = Session::new(cfg(50, 50, 3), 1, 7, t0);
    assert!(a.transmit(t0).is_some(), "the first packet goes at once");
    let b = ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_disc: 2,
        your_disc: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 0,
        required_min_echo_rx: 0,
        auth: None,
    };
    let raw = b.encode();
    let t1 = t0 + 10 * MS;
    a.receive(&b, &raw, t1).expect("accepted");
    assert_eq!(a.state(), State::Init);
    assert_eq!(a.status().tx_interval, None);
    // The state change is announced once; nothing periodic follows.
    let mut sent = 0;
    let mut t = t1;
    for _ in 0..2000 {
        t += MS;
        if a.transmit(t).is_some() {
            sent += 1;
        }
    }
    assert_eq!(sent, 1, "{sent} packets in 2 s");
}

fn keyed(kind: AuthType, secret: &[u8]) -> SessionConfig {
    let mut c = cfg(50, 50, 3);
    c.key = Some(Key::new(kind, 1, secret).expect("key"));
    c
}

#[test]
fn keyed_sessions_come_up_and_a_wrong_key_stays_down_saying_why() {
    for kind in [
        AuthType::SimplePassword,
        AuthType::KeyedMd5,
        AuthType::MeticulousKeyedMd5,
        AuthType::KeyedSha1,
        AuthType::MeticulousKeyedSha1,
    ] {
        let mut l = Link::new(keyed(kind, b"secret"), keyed(kind, b"secret"));
        l.run(Duration::from_secs(4));
        assert!(up(&l), "{kind:?}");
        assert!(l.discarded.is_empty(), "{kind:?}: {:?}", l.discarded);
        let mut l = Link::new(keyed(kind, b"secret"), keyed(kind, b"wrong"));
        l.run(Duration::from_secs(4));
        assert_eq!(l.a.state(), State::Down, "{kind:?}");
        assert!(
            l.discarded
                .iter()
                .all(|e| matches!(e, ReceiveError::Auth(bfd::AuthError::Digest(_)))),
            "{kind:?}: {:?}",
            l.discarded
        );
        assert!(l.a.status().counters.rx_discarded > 0);
    }
    // One side keyed, the other not.
    let mut l = Link::new(keyed(AuthType::KeyedSha1, b"k"), cfg(50, 50, 3));
    l.run(Duration::from_secs(4));
    assert_eq!(l.a.state(), State::Down);
    assert!(
        l.discarded
            .iter()
            .any(|e| matches!(e, ReceiveError::Unexpected(_)))
    );
}

#[test]
fn a_replayed_meticulous_packet_is_refused() {
    let mut l = Link::new(
        keyed(AuthType::MeticulousKeyedSha1, b"k"),
        keyed(AuthType::MeticulousKeyedSha1, b"k"),
    );
    l.run(Duration::from_secs(3));
    assert!(up(&l));
    let now = l.now;
    // Wait for b's next packet and give it to a twice.
    let mut t = now;
    let raw = loop {
        t += MS;
        if let Some(p) = l.b.transmit(t) {
            break p;
        }
        assert!(t < now + Duration::from_secs(1));
    };
    let p = ControlPacket::decode(&raw).expect("decodes");
    assert!(l.a.receive(&p, &raw, t).is_ok());
    assert!(matches!(
        l.a.receive(&p, &raw, t),
        Err(ReceiveError::Auth(bfd::AuthError::Sequence { .. }))
    ));
}
