//! One BFD session (RFC 5880 §6.8), sans-IO: packets and the clock go in,
//! packets to send and state changes come out. The caller owns the socket
//! and the timer ([`Session::deadline`]).

use std::time::{Duration, Instant};

use crate::auth::{AuthError, Key};
use crate::packet::{ControlPacket, Diag, State};

/// While a session is not Up, it sends no faster than this (§6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's timers and options, as a profile sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The shortest interval we want to send at, once Up.
    pub desired_min_tx: Duration,
    /// The shortest interval we can receive at.
    pub required_min_rx: Duration,
    /// Packets missed before the remote end is declared down.
    pub detect_mult: u8,
    /// Send nothing until the remote end is heard from (§6.1).
    pub passive: bool,
    /// Authentication, if any.
    pub key: Option<Key>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
            key: None,
        }
    }
}

/// What a session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The state changed; `diag` says why when it left Up.
    StateChanged {
        /// Before.
        from: State,
        /// Now.
        to: State,
        /// The local diagnostic at the change.
        diag: Diag,
    },
}

/// Why a received packet was discarded by the session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiveError {
    /// Authentication failed (§6.7).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The packet is authenticated and the session is not.
    #[error("the packet is authenticated ({0}); the session has no key")]
    Unexpected(&'static str),
    /// The session is administratively down and takes no packets.
    #[error("the session is administratively down")]
    AdminDown,
    /// Demand mode, which petrel does not run.
    #[error("the remote end asks for demand mode, which is not supported")]
    Demand,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Control packets sent.
    pub tx: u64,
    /// Control packets received and accepted.
    pub rx: u64,
    /// Received packets discarded (authentication, state).
    pub rx_discarded: u64,
    /// Transitions to Up.
    pub up: u64,
    /// Transitions from Up to another state.
    pub down: u64,
}

/// A session's state as status and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// Ours.
    pub state: State,
    /// The remote end's, as it last said.
    pub remote_state: State,
    /// Our diagnostic.
    pub diag: Diag,
    /// The remote end's diagnostic, as it last said.
    pub remote_diag: Diag,
    /// Our discriminator.
    pub local_disc: u32,
    /// The remote end's (0 until heard).
    pub remote_disc: u32,
    /// The interval we send at (before jitter); `None` while we send
    /// nothing periodically.
    pub tx_interval: Option<Duration>,
    /// How long silence takes to bring the session down; `None` until the
    /// remote end is heard.
    pub detection_time: Option<Duration>,
    /// The remote end's multiplier.
    pub remote_detect_mult: u8,
    /// When the session last came Up, if it is Up.
    pub up_since: Option<Instant>,
    /// Whether a Poll Sequence (a timer change) waits for its Final.
    pub polling: bool,
    /// Counters.
    pub counters: Counters,
}

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    diag: Diag,
    local_disc: u32,
    remote_disc: u32,
    remote_state: State,
    remote_diag: Diag,
    /// bfd.RemoteMinRxInterval (µs); 1 until heard (§6.8.1).
    remote_min_rx: u32,
    remote_desired_min_tx: u32,
    remote_detect_mult: u8,
    /// The DesiredMinTx and RequiredMinRx our timers use: during a Poll
    /// Sequence, the faster of the old and new transmit intervals and the
    /// slower of the receive intervals (§6.8.3).
    tx_basis: u32,
    rx_basis: u32,
    /// The values advertised before the current Poll Sequence began.
    polling: Option<(u32, u32)>,
    /// A Final is owed for a received Poll.
    owe_final: bool,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    last_rx: Option<Instant>,
    up_since: Option<Instant>,
    xmit_seq: u32,
    rcv_seq: Option<u32>,
    rng: u64,
    counters: Counters,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

impl Session {
    /// A session in Down with discriminator `local_disc` (unique on this
    /// system, non-zero), seeding its transmit jitter with `seed`. It
    /// sends its first packet at once, unless passive.
    pub fn new(cfg: SessionConfig, local_disc: u32, seed: u64, now: Instant) -> Session {
        let mut s = Session {
            state: State::Down,
            diag: Diag::None,
            local_disc: local_disc.max(1),
            remote_disc: 0,
            remote_state: State::Down,
            remote_diag: Diag::None,
            remote_min_rx: 1,
            remote_desired_min_tx: 0,
            remote_detect_mult: 0,
            tx_basis: 0,
            rx_basis: micros(cfg.required_min_rx),
            polling: None,
            owe_final: false,
            next_tx: None,
            detect_at: None,
            last_rx: None,
            up_since: None,
            xmit_seq: (seed as u32) | 1,
            rcv_seq: None,
            rng: seed | 1,
            counters: Counters::default(),
            cfg,
        };
        s.tx_basis = s.advertised_min_tx();
        if !s.cfg.passive {
            s.next_tx = Some(now);
        }
        s
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Our discriminator.
    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    /// The remote end's discriminator (0 until heard).
    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The DesiredMinTx we advertise: at least a second unless Up.
    fn advertised_min_tx(&self) -> u32 {
        let want = micros(self.cfg.desired_min_tx);
        if self.state == State::Up {
            want
        } else {
            want.max(micros(SLOW_TX))
        }
    }

    fn advertised_min_rx(&self) -> u32 {
        micros(self.cfg.required_min_rx)
    }

    /// The interval between our periodic packets, before jitter (§6.8.7).
    fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx == 0 || (self.cfg.passive && self.remote_disc == 0) {
            return None;
        }
        Some(from_micros(self.tx_basis.max(self.remote_min_rx)))
    }

    /// The detection time (§6.8.4, asynchronous mode).
    fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let interval = self.rx_basis.max(self.remote_desired_min_tx);
        Some(from_micros(interval) * u32::from(self.remote_detect_mult))
    }

    /// The interval with §6.8.7's jitter: 75-100% of it, 75-90% with a
    /// multiplier of one.
    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64: enough to spread sessions apart, and seeded by the
        // caller so a test sees the same sequence every run.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = if self.cfg.detect_mult == 1 { 16 } else { 26 };
        let pct = 75 + (self.rng % span) as u32;
        d * pct / 100
    }

    /// When [`Session::transmit`] or [`Session::timeout`] next has work.
    pub fn deadline(&self) -> Option<Instant> {
        let tx = if self.owe_final {
            self.last_rx
        } else {
            self.next_tx
        };
        match (tx, self.detect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The packet to send now, if one is due: a Final owed, or the
    /// periodic one. The next periodic one is scheduled.
    pub fn transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.owe_final {
            self.owe_final = false;
            return Some(self.packet(false, true));
        }
        let due = self.next_tx.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        self.next_tx = self.tx_interval().map(|i| now + self.jittered(i));
        if self.cfg.passive && self.remote_disc == 0 {
            return None;
        }
        let poll = self.polling.is_some();
        Some(self.packet(poll, false))
    }

    fn packet(&mut self, poll: bool, final_: bool) -> Vec<u8> {
        self.counters.tx += 1;
        let seq = self.xmit_seq;
        if self.cfg.key.as_ref().is_some_and(|k| k.kind.sequenced()) {
            self.xmit_seq = self.xmit_seq.wrapping_add(1);
        }
        let p = ControlPacket {
            diag: self.diag,
            state: self.state,
            poll,
            final_,
            // Our BFD lives in the same process as BGP: a restart of the
            // control plane takes it down too (RFC 5882 §4.3.1).
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: self.advertised_min_tx(),
            required_min_rx: self.advertised_min_rx(),
            // No Echo function (RFC 5880 §6.4 lets a system decline it).
            required_min_echo_rx: 0,
            auth: self.cfg.key.as_ref().map(|k| k.section(seq)),
        };
        let mut b = p.encode();
        if let Some(k) = &self.cfg.key {
            k.sign(&mut b);
        }
        b
    }

    /// Takes a received packet that was demultiplexed to this session;
    /// `raw` is the datagram (for the digest). Returns the state changes.
    pub fn receive(
        &mut self,
        p: &ControlPacket,
        raw: &[u8],
        now: Instant,
    ) -> Result<Vec<Event>, ReceiveError> {
        let r = self.accept(p, raw, now);
        if r.is_err() {
            self.counters.rx_discarded += 1;
        }
        r
    }

    fn accept(
        &mut self,
        p: &ControlPacket,
        raw: &[u8],
        now: Instant,
    ) -> Result<Vec<Event>, ReceiveError> {
        match (&self.cfg.key, &p.auth) {
            (None, Some(a)) => return Err(ReceiveError::Unexpected(a.kind.name())),
            (None, None) => {}
            (Some(k), a) => {
                k.verify(a.as_ref(), raw)?;
                if let Some(a) = a
                    && k.kind.sequenced()
                {
                    self.check_seq(a.seq, k.kind.meticulous(), p.detect_mult)?;
                }
            }
        }
        if p.demand {
            return Err(ReceiveError::Demand);
        }
        if self.state == State::AdminDown {
            return Err(ReceiveError::AdminDown);
        }
        self.counters.rx += 1;
        self.last_rx = Some(now);
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_desired_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        let old_min_rx = self.remote_min_rx;
        self.remote_min_rx = p.required_min_rx;
        if p.final_ && self.polling.is_some() {
            // The remote end has our new values: use them (§6.8.3).
            self.polling = None;
            self.tx_basis = self.advertised_min_tx();
            self.rx_basis = self.advertised_min_rx();
        }
        if p.poll {
            self.owe_final = true;
        }
        let mut events = Vec::new();
        let before = self.state;
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.go(State::Down, Diag::NeighborDown, now, &mut events);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.go(State::Init, Diag::None, now, &mut events),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.go(State::Up, Diag::None, now, &mut events)
                }
                (State::Up, State::Down) => {
                    self.go(State::Down, Diag::NeighborDown, now, &mut events)
                }
                _ => {}
            }
        }
        self.detect_at = self.detection_time().map(|d| now + d);
        // A faster rate asked for, or the first packet of a passive
        // session: send on the new schedule from now.
        if self.state == before
            && (self.remote_min_rx < old_min_rx || self.next_tx.is_none())
            && let Some(i) = self.tx_interval()
        {
            let t = now + self.jittered(i);
            self.next_tx = Some(self.next_tx.map_or(t, |n| n.min(t)));
        }
        Ok(events)
    }

    /// §6.7.3: a sequence number within 3 × DetectMult of the last, after
    /// it for the meticulous types.
    fn check_seq(&mut self, seq: u32, meticulous: bool, mult: u8) -> Result<(), AuthError> {
        if let Some(last) = self.rcv_seq {
            let from = if meticulous {
                last.wrapping_add(1)
            } else {
                last
            };
            let to = last.wrapping_add(3 * u32::from(mult));
            if seq.wrapping_sub(from) > to.wrapping_sub(from) {
                return Err(AuthError::Sequence { got: seq, from, to });
            }
        }
        self.rcv_seq = Some(seq);
        Ok(())
    }

    /// The detection time's expiry, if it has come: Init or Up go Down
    /// (diagnostic 1); the remote discriminator is forgotten (§6.8.1).
    pub fn timeout(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(at) = self.detect_at else {
            return events;
        };
        if now < at {
            return events;
        }
        self.detect_at = None;
        if matches!(self.state, State::Init | State::Up) {
            self.go(State::Down, Diag::DetectionTimeExpired, now, &mut events);
        }
        self.remote_disc = 0;
        self.remote_state = State::Down;
        self.remote_min_rx = 1;
        self.remote_detect_mult = 0;
        self.rcv_seq = None;
        self.owe_final = false;
        events
    }

    fn go(&mut self, to: State, diag: Diag, now: Instant, events: &mut Vec<Event>) {
        let from = self.state;
        let (old_tx, old_rx) = (self.advertised_min_tx(), self.advertised_min_rx());
        self.state = to;
        if diag != Diag::None || to == State::Up {
            self.diag = diag;
        }
        if to == State::Up {
            self.counters.up += 1;
            self.up_since = Some(now);
            // The advertised DesiredMinTx drops from a second to the
            // configured rate: a change while Up, announced by a Poll
            // Sequence. A faster rate applies at once (the remote end
            // shortens its detection time as soon as it reads it); a
            // slower one only after the Final (§6.8.3).
            let new_tx = self.advertised_min_tx();
            if new_tx != old_tx {
                self.polling = Some((old_tx, old_rx));
                self.tx_basis = old_tx.min(new_tx);
            }
        } else {
            if from == State::Up {
                self.counters.down += 1;
                self.up_since = None;
            }
            self.polling = None;
            self.tx_basis = self.advertised_min_tx();
            self.rx_basis = self.advertised_min_rx();
        }
        // A state change goes out at once, not up to a second later.
        if !(self.cfg.passive && self.remote_disc == 0) {
            self.next_tx = Some(now);
        }
        events.push(Event::StateChanged { from, to, diag });
    }

    /// Applies new timers or options without taking the session down: a
    /// change of the advertised intervals while Up runs a Poll Sequence;
    /// until its Final we send at the faster and detect at the slower of
    /// the old and new intervals.
    pub fn reconfigure(&mut self, cfg: SessionConfig, now: Instant) {
        let (old_tx, old_rx) = (self.advertised_min_tx(), self.advertised_min_rx());
        let key_changed = self.cfg.key != cfg.key;
        self.cfg = cfg;
        if key_changed {
            self.rcv_seq = None;
        }
        let (new_tx, new_rx) = (self.advertised_min_tx(), self.advertised_min_rx());
        if (new_tx, new_rx) == (old_tx, old_rx) {
            return;
        }
        if self.state == State::Up {
            let (from_tx, from_rx) = self.polling.unwrap_or((old_tx, old_rx));
            self.polling = Some((from_tx, from_rx));
            self.tx_basis = from_tx.min(new_tx);
            self.rx_basis = from_rx.max(new_rx);
            // The Poll goes out now.
            self.next_tx = Some(now);
        } else {
            self.tx_basis = new_tx;
            self.rx_basis = new_rx;
        }
        if let Some(d) = self.detection_time()
            && let Some(last) = self.last_rx
            && self.detect_at.is_some()
        {
            self.detect_at = Some(last + d);
        }
    }

    /// Takes the session administratively down (diagnostic 7): the remote
    /// end hears AdminDown and does not count it as a failure.
    pub fn admin_down(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self.state != State::AdminDown {
            self.go(State::AdminDown, Diag::AdminDown, now, &mut events);
        }
        self.detect_at = None;
        events
    }

    /// Lets an administratively down session start again, in Down.
    pub fn admin_up(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self.state == State::AdminDown {
            self.go(State::Down, Diag::None, now, &mut events);
            self.diag = Diag::None;
        }
        events
    }

    /// What status and the CLI show.
    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            remote_state: self.remote_state,
            diag: self.diag,
            remote_diag: self.remote_diag,
            local_disc: self.local_disc,
            remote_disc: self.remote_disc,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time().filter(|_| self.detect_at.is_some()),
            remote_detect_mult: self.remote_detect_mult,
            up_since: self.up_since,
            polling: self.polling.is_some(),
            counters: self.counters,
        }
    }
}
