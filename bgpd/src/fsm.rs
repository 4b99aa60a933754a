//! The BGP finite state machine (RFC 4271 §8), sans-IO.
//!
//! [`Fsm::handle`] takes one [`Event`] and returns the [`Action`]s the caller
//! must carry out: open or drop the TCP connection, send a message, start or stop
//! a timer, report the session up or down. The machine owns no socket and no
//! clock; `session` drives it, and tests drive it directly, deterministically.
//!
//! Beyond the RFC's mandatory parts it implements DelayOpen, passive peers,
//! hold-time negotiation, capability negotiation (including retrying without a
//! capability the peer rejected, RFC 5492 §5), RFC 4271 §10 timer jitter, and an
//! exponential IdleHold backoff for flapping peers (the RFC's optional
//! DampPeerOscillations). Connection collisions (§6.8) involve two machines and
//! are decided by [`resolve_collision`]; the loser gets [`Event::CollisionDump`].
//!
//! Where the RFC sends a machine to Idle on a failed TCP attempt, this one stays
//! in Active and waits for the ConnectRetry timer, as BIRD and FRR do: the result
//! is the same retry, without a pass through IdleHold.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::capability::{Capability, GracefulRestart, LlgrFamily};
use crate::wire::error::{code, subcode};
use crate::wire::open::Open;
use crate::wire::{AS_TRANS, AfiSafi, Message, Notification, WireContext, WireError};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not trying.
    Idle,
    /// Waiting for our outgoing TCP connection to complete.
    Connect,
    /// Listening for the peer to connect.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Up: UPDATEs flow.
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The machine's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Time between outgoing connection attempts.
    ConnectRetry,
    /// Time without a message from the peer before giving up.
    Hold,
    /// Time between our KEEPALIVEs.
    Keepalive,
    /// Time to wait for the peer's OPEN before sending ours (DelayOpen).
    DelayOpen,
    /// Time to wait in Idle before restarting automatically (backoff).
    IdleHold,
    /// Time Established after which the peer counts as stable again and the
    /// IdleHold backoff resets.
    Stable,
}

const TIMERS: [Timer; 6] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::DelayOpen,
    Timer::IdleHold,
    Timer::Stable,
];

/// Inputs to the machine. Each names the RFC 4271 §8.1 event(s) it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ManualStart (1), or ManualStart_with_PassiveTcpEstablishment (4) for a
    /// passive peer.
    ManualStart,
    /// ManualStop (2), with an optional RFC 9003 shutdown communication.
    ManualStop(Option<String>),
    /// AutomaticStop (8): e.g. too many prefixes; the Cease subcode to send.
    AutomaticStop(u8),
    /// ConnectRetryTimer_Expires (9).
    ConnectRetryTimerExpires,
    /// HoldTimer_Expires (10).
    HoldTimerExpires,
    /// KeepaliveTimer_Expires (11).
    KeepaliveTimerExpires,
    /// SendHoldTimer_Expires (RFC 9687, event 29): nothing could be sent
    /// for SendHoldTime while something waited. The session layer keeps
    /// this timer, since only it sees the socket's progress.
    SendHoldTimerExpires,
    /// DelayOpenTimer_Expires (12).
    DelayOpenTimerExpires,
    /// IdleHoldTimer_Expires (13): AutomaticStart (3 or 5) follows.
    IdleHoldTimerExpires,
    /// The peer stayed Established long enough: reset the backoff.
    StableTimerExpires,
    /// Tcp_CR_Acked (16): our outgoing connection is up.
    TcpConnected,
    /// TcpConnectionConfirmed (17): the peer connected to us and the
    /// connection was handed to this machine.
    TcpAccepted,
    /// TcpConnectionFails (18).
    TcpFailed,
    /// A message arrived: BGPOpen (19/20), KeepAliveMsg (26), UpdateMsg (27),
    /// NotifMsg (25), or a ROUTE-REFRESH.
    Message(Message),
    /// UpdateMsg (27) whose content went straight to the RIB: the machine only
    /// needs to know one arrived.
    UpdateReceived,
    /// BGPHeaderErr (21), BGPOpenMsgErr (22), UpdateMsgErr (28) with a session
    /// reset action, NotifMsgVerErr (24) for a NOTIFICATION that did not parse.
    MessageError(WireError),
    /// OpenCollisionDump (23): this connection lost collision resolution.
    CollisionDump,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending what came before).
    Disconnect,
    /// Send a message.
    Send(Message),
    /// (Re)start a timer.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// The session is Established with these parameters.
    Established(Box<Negotiated>),
    /// The session (or attempt) ended; `established` says whether it had been up,
    /// in which case the peer's routes must go (or turn stale, with GR).
    Down {
        /// Why.
        reason: DownReason,
        /// Whether the session had been Established.
        established: bool,
    },
}

/// Why a session or attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Stopped by configuration or an operator.
    ManualStop,
    /// Stopped automatically (e.g. too many prefixes); the Cease subcode sent.
    AutomaticStop(u8),
    /// The peer sent a NOTIFICATION.
    NotificationReceived(Notification),
    /// We sent a NOTIFICATION because of this error.
    NotificationSent(Notification),
    /// The TCP connection failed or closed.
    ConnectionLost,
    /// This connection lost a collision to the other one.
    Collision,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::ManualStop => f.write_str("stopped by configuration"),
            DownReason::AutomaticStop(s) => write!(
                f,
                "stopped automatically: {}",
                Notification::new(code::CEASE, *s).describe()
            ),
            DownReason::NotificationReceived(n) => write!(f, "peer sent NOTIFICATION {n}"),
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION {n}"),
            DownReason::ConnectionLost => f.write_str("TCP connection lost"),
            DownReason::Collision => f.write_str("connection collision: the other connection won"),
        }
    }
}

/// Configuration of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// Our ASN.
    pub local_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peer's ASN, which its OPEN must match.
    pub peer_asn: u32,
    /// Hold time we propose, seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Keepalive interval, seconds; `None` means a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    /// Time between outgoing connection attempts.
    pub connect_retry: Duration,
    /// Only accept connections, never initiate.
    pub passive: bool,
    /// Wait this long for the peer's OPEN before sending ours (RFC 4271 DelayOpen).
    pub delay_open: Option<Duration>,
    /// First IdleHold delay after a failure; doubled on each further failure.
    pub idle_hold: Duration,
    /// Upper bound of the IdleHold backoff.
    pub idle_hold_max: Duration,
    /// Established this long, a peer is stable and its backoff resets.
    pub stable_after: Duration,
    /// Capabilities we offer (the 4-octet AS capability is added automatically).
    pub capabilities: Vec<Capability>,
    /// Seed of the jitter generator; give each peer its own.
    pub jitter_seed: u64,
}

impl FsmConfig {
    /// A configuration with the usual defaults: hold time 90 s, connect retry
    /// 30 s, IdleHold 1 s doubling up to 120 s, stable after 60 s, IPv4 and IPv6
    /// unicast with route refresh and enhanced route refresh.
    pub fn new(local_asn: u32, router_id: Ipv4Addr, peer_asn: u32) -> Self {
        FsmConfig {
            local_asn,
            router_id,
            peer_asn,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(30),
            passive: false,
            delay_open: None,
            idle_hold: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(120),
            stable_after: Duration::from_secs(60),
            capabilities: vec![
                Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::RouteRefresh,
                Capability::EnhancedRouteRefresh,
            ],
            jitter_seed: u64::from(u32::from(router_id)) ^ u64::from(peer_asn) << 32,
        }
    }

    /// Whether the peer is external.
    pub fn is_ebgp(&self) -> bool {
        self.local_asn != self.peer_asn
    }
}

/// What the two OPENs of an Established session agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's ASN.
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Negotiated hold time in seconds (0: none).
    pub hold_time: u16,
    /// Our keepalive interval in seconds (0: none).
    pub keepalive_time: u16,
    /// Families both sides offered (IPv4 unicast if the peer offered none, RFC 4760 §8).
    pub families: Vec<AfiSafi>,
    /// Route refresh supported by the peer.
    pub route_refresh: bool,
    /// Enhanced route refresh supported by both.
    pub enhanced_route_refresh: bool,
    /// The peer's Graceful Restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// The families of the peer's Long-Lived Graceful Restart capability
    /// (RFC 9494), if it sent one.
    pub peer_long_lived: Option<Vec<LlgrFamily>>,
    /// Layout of messages we receive.
    pub rx: WireContext,
    /// Layout of messages we send.
    pub tx: WireContext,
    /// The OPEN we sent.
    pub local_open: Open,
    /// The OPEN the peer sent.
    pub remote_open: Open,
}

impl Negotiated {
    /// Whether both sides agreed on a family.
    pub fn supports(&self, af: AfiSafi) -> bool {
        self.families.contains(&af)
    }

    /// Whether both sides set graceful restart's N bit (RFC 8538): then a
    /// NOTIFICATION other than a Hard Reset is a restart too, and the
    /// routes of the session are kept, stale, as after a lost connection.
    pub fn graceful_notification(&self) -> bool {
        let ours = self
            .local_open
            .capabilities()
            .any(|c| matches!(c, Capability::GracefulRestart(gr) if gr.notification()));
        ours && self
            .peer_graceful_restart
            .as_ref()
            .is_some_and(GracefulRestart::notification)
    }
}

/// Which of two colliding connections to keep (RFC 4271 §6.8): the one
/// initiated by the speaker with the higher BGP identifier. Returns `true` if
/// the connection we initiated must be kept (and the one the peer initiated closed).
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

/// The machine's view of its TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tcp {
    None,
    /// `Action::Connect` was issued, no answer yet.
    Connecting,
    Up,
}

/// A small xorshift generator: jitter needs no more, and a seed keeps tests repeatable.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    /// `d` scaled by a random factor in [0.75, 1.0] (RFC 4271 §10).
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let frac = 0.75 + (self.0 % 1001) as f64 / 4000.0;
        d.mul_f64(frac)
    }
}

/// Hold time used while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
const LARGE_HOLD: Duration = Duration::from_secs(240);

/// One peer's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    config: FsmConfig,
    state: State,
    /// Timers the caller has been told to run.
    running: BTreeSet<Timer>,
    /// The TCP connection as far as the machine knows.
    tcp: Tcp,
    negotiated: Option<Box<Negotiated>>,
    /// Consecutive failures, for the IdleHold backoff.
    failures: u32,
    /// Restart automatically after a failure.
    auto_restart: bool,
    /// Capability codes the peer refused; left out of our next OPEN.
    suppressed: BTreeSet<u8>,
    /// The peer refused optional parameters altogether (RFC 5492 §5).
    no_capabilities: bool,
    jitter: Jitter,
    last_down: Option<DownReason>,
}

impl Fsm {
    /// A machine in Idle.
    pub fn new(config: FsmConfig) -> Self {
        let seed = config.jitter_seed | 1;
        Fsm {
            config,
            state: State::Idle,
            running: BTreeSet::new(),
            tcp: Tcp::None,
            negotiated: None,
            failures: 0,
            auto_restart: false,
            suppressed: BTreeSet::new(),
            no_capabilities: false,
            jitter: Jitter(seed),
            last_down: None,
        }
    }

    /// A new machine for another connection to the same peer, in Idle, that
    /// keeps what this one learned: the capabilities the peer refused and the
    /// failure count of the backoff.
    pub fn successor(&self) -> Fsm {
        let mut f = Fsm::new(self.config.clone());
        f.suppressed = self.suppressed.clone();
        f.no_capabilities = self.no_capabilities;
        f.failures = self.failures;
        f.jitter = self.jitter.clone();
        f
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// Replaces the capabilities offered in the next OPEN (the current
    /// session, if any, keeps what it negotiated).
    pub fn set_capabilities(&mut self, capabilities: Vec<Capability>) {
        self.config.capabilities = capabilities;
    }

    /// What was negotiated, while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_deref()
    }

    /// Why the last session or attempt ended.
    pub fn last_down(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }

    /// Timers that should be running now.
    pub fn running_timers(&self) -> impl Iterator<Item = Timer> + '_ {
        self.running.iter().copied()
    }

    /// Whether the machine believes a TCP connection is up.
    pub fn is_connected(&self) -> bool {
        self.tcp == Tcp::Up
    }

    /// Consecutive failures counted for the backoff.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Capability codes left out of our OPEN because the peer refused them.
    pub fn suppressed_capabilities(&self) -> impl Iterator<Item = u8> + '_ {
        self.suppressed.iter().copied()
    }

    /// The OPEN this machine sends now.
    pub fn local_open(&self) -> Open {
        let mut caps: Vec<Capability> = Vec::with_capacity(self.config.capabilities.len() + 1);
        caps.extend(
            self.config
                .capabilities
                .iter()
                .filter(|c| !matches!(c, Capability::FourOctetAs(_)))
                .cloned(),
        );
        caps.push(Capability::FourOctetAs(self.config.local_asn));
        caps.retain(|c| !self.suppressed.contains(&c.code()));
        let mut open = Open::new(
            self.config.local_asn,
            self.config.hold_time,
            self.config.router_id,
            caps,
        );
        if self.no_capabilities {
            open.params.clear();
        }
        open
    }

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        // Read before the step: a NOTIFICATION ends the session it is sent on.
        let graceful_notification = self
            .negotiated
            .as_deref()
            .is_some_and(Negotiated::graceful_notification);
        self.step(event, &mut out);
        if graceful_notification {
            // RFC 8538 §5: a Cease that ends the session for good goes as a
            // Hard Reset, or the peer would keep our routes as a restart's.
            for a in &mut out {
                if let Action::Send(Message::Notification(n)) = a
                    && n.is_hard()
                    && n.subcode != subcode::cease::HARD_RESET
                {
                    *n = Notification::hard_reset(n);
                }
            }
        }
        // Keep the bookkeeping of timers and connection in step with the actions.
        for a in &out {
            match a {
                Action::StartTimer(t, _) => {
                    self.running.insert(*t);
                }
                Action::StopTimer(t) => {
                    self.running.remove(t);
                }
                Action::Connect => self.tcp = Tcp::Connecting,
                Action::Disconnect => self.tcp = Tcp::None,
                _ => {}
            }
        }
        out
    }

    fn start(&mut self, t: Timer, d: Duration, out: &mut Vec<Action>) {
        let d = match t {
            Timer::ConnectRetry | Timer::Keepalive | Timer::IdleHold => self.jitter.apply(d),
            _ => d,
        };
        out.push(Action::StartTimer(t, d));
    }

    fn stop(&self, t: Timer, out: &mut Vec<Action>) {
        if self.running.contains(&t) {
            out.push(Action::StopTimer(t));
        }
    }

    fn stop_all(&self, out: &mut Vec<Action>) {
        for t in TIMERS {
            self.stop(t, out);
        }
    }

    fn step(&mut self, event: Event, out: &mut Vec<Action>) {
        use State::*;
        // An expiry that raced with a stop is stale: the timer is not ours any more.
        let expired = match event {
            Event::ConnectRetryTimerExpires => Some(Timer::ConnectRetry),
            Event::HoldTimerExpires => Some(Timer::Hold),
            Event::KeepaliveTimerExpires => Some(Timer::Keepalive),
            Event::DelayOpenTimerExpires => Some(Timer::DelayOpen),
            Event::IdleHoldTimerExpires => Some(Timer::IdleHold),
            Event::StableTimerExpires => Some(Timer::Stable),
            _ => None,
        };
        if let Some(t) = expired
            && !self.running.contains(&t)
        {
            return;
        }
        // Events that mean the same in every state.
        match (&event, self.state) {
            (Event::ManualStart, Idle) => {
                self.auto_restart = true;
                self.failures = 0;
                self.stop(Timer::IdleHold, out);
                return self.begin(out);
            }
            (Event::ManualStart, _) => return,
            (Event::IdleHoldTimerExpires, Idle) => {
                out.push(Action::StopTimer(Timer::IdleHold));
                if self.auto_restart {
                    self.begin(out);
                }
                return;
            }
            (Event::StableTimerExpires, _) => {
                out.push(Action::StopTimer(Timer::Stable));
                self.failures = 0;
                return;
            }
            (Event::ManualStop(text), _) => {
                self.auto_restart = false;
                if self.state == Idle {
                    self.stop_all(out);
                    return;
                }
                if matches!(self.state, OpenSent | OpenConfirm | Established) {
                    let n = match text {
                        Some(t) => Notification::administrative_shutdown(t),
                        None => {
                            Notification::new(code::CEASE, subcode::cease::ADMINISTRATIVE_SHUTDOWN)
                        }
                    };
                    out.push(Action::Send(Message::Notification(n)));
                }
                return self.go_idle(DownReason::ManualStop, false, out);
            }
            (Event::TcpAccepted, Idle) if self.auto_restart => {
                // Waiting out the IdleHold backoff, but the peer is ready now:
                // take its connection (AutomaticStart with passive establishment)
                // rather than refuse it and make both sides back off further.
                self.stop(Timer::IdleHold, out);
                self.state = Active;
                return self.step_connecting(Event::TcpAccepted, out);
            }
            (Event::AutomaticStop(_), Idle) => {
                // Waiting out a backoff, and told to stay down (a strict
                // BFD link that is down): no restart when the timer ends,
                // and no connection taken meanwhile.
                self.auto_restart = false;
                self.stop(Timer::IdleHold, out);
                return;
            }
            (_, Idle) => {
                // Idle refuses connections and ignores everything else.
                if matches!(event, Event::TcpAccepted | Event::TcpConnected) {
                    out.push(Action::Disconnect);
                }
                return;
            }
            _ => {}
        }

        match self.state {
            Connect | Active => self.step_connecting(event, out),
            OpenSent | OpenConfirm | Established => self.step_open(event, out),
            Idle => {}
        }
    }

    /// Leaves Idle (ManualStart or AutomaticStart).
    fn begin(&mut self, out: &mut Vec<Action>) {
        if self.config.passive {
            self.state = State::Active;
            return;
        }
        self.start(Timer::ConnectRetry, self.config.connect_retry, out);
        out.push(Action::Connect);
        self.state = State::Connect;
    }

    fn step_connecting(&mut self, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::ConnectRetryTimerExpires => {
                if self.config.passive {
                    return;
                }
                if self.tcp != Tcp::None {
                    out.push(Action::Disconnect);
                }
                self.start(Timer::ConnectRetry, self.config.connect_retry, out);
                out.push(Action::Connect);
                self.state = State::Connect;
            }
            Event::TcpConnected | Event::TcpAccepted => {
                self.tcp = Tcp::Up;
                self.stop(Timer::ConnectRetry, out);
                if let Some(d) = self.config.delay_open {
                    self.start(Timer::DelayOpen, d, out);
                } else {
                    self.send_open(out);
                }
            }
            Event::DelayOpenTimerExpires if self.tcp == Tcp::Up => {
                out.push(Action::StopTimer(Timer::DelayOpen));
                self.send_open(out);
            }
            Event::TcpFailed => {
                // Wait for the retry timer (or, passive, for the next connection).
                self.tcp = Tcp::None;
                self.stop(Timer::DelayOpen, out);
                if !self.config.passive && !self.running.contains(&Timer::ConnectRetry) {
                    self.start(Timer::ConnectRetry, self.config.connect_retry, out);
                }
                self.state = State::Active;
            }
            Event::Message(Message::Open(open)) if self.running.contains(&Timer::DelayOpen) => {
                // BGPOpen with DelayOpenTimer running (event 20).
                out.push(Action::StopTimer(Timer::DelayOpen));
                let local = self.local_open();
                out.push(Action::Send(Message::Open(local.clone())));
                self.receive_open(open, local, out);
            }
            Event::MessageError(e) if self.tcp == Tcp::Up => {
                out.push(Action::Send(Message::Notification(e.notification.clone())));
                self.go_idle(DownReason::NotificationSent(e.notification), true, out);
            }
            Event::Message(Message::Notification(n)) if self.tcp == Tcp::Up => {
                self.go_idle(DownReason::NotificationReceived(n), true, out);
            }
            Event::AutomaticStop(sub) => {
                self.auto_restart = false;
                self.go_idle(DownReason::AutomaticStop(sub), false, out);
            }
            Event::CollisionDump => self.go_idle(DownReason::Collision, false, out),
            Event::Message(_) | Event::UpdateReceived if self.tcp == Tcp::Up => {
                // Anything else before our OPEN went out is an FSM error.
                let n = Notification::new(code::FSM, 0);
                out.push(Action::Send(Message::Notification(n.clone())));
                self.go_idle(DownReason::NotificationSent(n), true, out);
            }
            // Stale timers and messages without a connection change nothing.
            _ => {}
        }
    }

    fn send_open(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Send(Message::Open(self.local_open())));
        self.start(Timer::Hold, LARGE_HOLD, out);
        self.state = State::OpenSent;
    }

    fn step_open(&mut self, event: Event, out: &mut Vec<Action>) {
        use State::*;
        match event {
            Event::HoldTimerExpires => {
                let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0);
                out.push(Action::Send(Message::Notification(n.clone())));
                self.go_idle(DownReason::NotificationSent(n), true, out);
            }
            Event::SendHoldTimerExpires => {
                // Sent if it can be (it waits behind what the peer did not
                // read); the connection closes either way.
                let n = Notification::new(code::SEND_HOLD_TIMER_EXPIRED, 0);
                out.push(Action::Send(Message::Notification(n.clone())));
                self.go_idle(DownReason::NotificationSent(n), true, out);
            }
            Event::KeepaliveTimerExpires if self.state != OpenSent => {
                out.push(Action::Send(Message::Keepalive));
                if let Some(n) = &self.negotiated
                    && n.keepalive_time > 0
                {
                    self.start(
                        Timer::Keepalive,
                        Duration::from_secs(n.keepalive_time.into()),
                        out,
                    );
                }
            }
            Event::TcpFailed => {
                self.tcp = Tcp::None;
                self.go_idle(DownReason::ConnectionLost, true, out);
            }
            Event::AutomaticStop(sub) => {
                self.auto_restart = false;
                let n = if sub == subcode::cease::HARD_RESET {
                    // An operator's hard reset (RFC 8538 §3 carries the
                    // Cease it stands for).
                    Notification::hard_reset(&Notification::new(
                        code::CEASE,
                        subcode::cease::ADMINISTRATIVE_RESET,
                    ))
                } else {
                    Notification::new(code::CEASE, sub)
                };
                out.push(Action::Send(Message::Notification(n)));
                self.go_idle(DownReason::AutomaticStop(sub), false, out);
            }
            Event::CollisionDump => {
                let n = Notification::new(code::CEASE, subcode::cease::CONNECTION_COLLISION);
                out.push(Action::Send(Message::Notification(n)));
                self.go_idle(DownReason::Collision, false, out);
            }
            Event::MessageError(e) => {
                out.push(Action::Send(Message::Notification(e.notification.clone())));
                self.go_idle(DownReason::NotificationSent(e.notification), true, out);
            }
            Event::Message(Message::Notification(n)) => {
                self.learn_from_notification(&n);
                self.go_idle(DownReason::NotificationReceived(n), true, out);
            }
            Event::Message(Message::Open(open)) if self.state == OpenSent => {
                let local = self.local_open();
                self.receive_open(open, local, out);
            }
            Event::Message(Message::Keepalive) if self.state == OpenConfirm => {
                self.restart_hold(out);
                self.state = Established;
                self.start(Timer::Stable, self.config.stable_after, out);
                if let Some(n) = &self.negotiated {
                    out.push(Action::Established(n.clone()));
                }
            }
            Event::Message(Message::Keepalive | Message::Update(_) | Message::RouteRefresh(_))
            | Event::UpdateReceived
                if self.state == Established =>
            {
                self.restart_hold(out);
            }
            Event::Message(_) | Event::UpdateReceived => {
                // RFC 6608: the subcode says in which state the message was unexpected.
                let sub = match self.state {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    _ => 3,
                };
                let n = Notification::new(code::FSM, sub);
                out.push(Action::Send(Message::Notification(n.clone())));
                self.go_idle(DownReason::NotificationSent(n), true, out);
            }
            // Timers that belong to other states, stray connection events.
            _ => {}
        }
    }

    fn restart_hold(&mut self, out: &mut Vec<Action>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(n.hold_time.into()),
            ));
        }
    }

    /// RFC 5492 §5: remember what the peer refused so the next OPEN leaves it out.
    fn learn_from_notification(&mut self, n: &Notification) {
        if n.code != code::OPEN_MESSAGE {
            return;
        }
        match n.subcode {
            subcode::open::UNSUPPORTED_CAPABILITY => {
                // Data: the capabilities (code, length, value) the peer does not support.
                let mut rest = n.data.as_slice();
                while let [c, len, tail @ ..] = rest {
                    self.suppressed.insert(*c);
                    rest = tail.get(usize::from(*len)..).unwrap_or(&[]);
                }
            }
            subcode::open::UNSUPPORTED_OPTIONAL_PARAMETER => self.no_capabilities = true,
            _ => {}
        }
    }

    /// Checks the peer's OPEN and negotiates; on success sends KEEPALIVE and
    /// moves to OpenConfirm.
    fn receive_open(&mut self, remote: Open, local: Open, out: &mut Vec<Action>) {
        match self.negotiate(&local, &remote) {
            Ok(n) => {
                out.push(Action::Send(Message::Keepalive));
                if n.hold_time > 0 {
                    out.push(Action::StartTimer(
                        Timer::Hold,
                        Duration::from_secs(n.hold_time.into()),
                    ));
                    self.start(
                        Timer::Keepalive,
                        Duration::from_secs(n.keepalive_time.into()),
                        out,
                    );
                } else {
                    self.stop(Timer::Hold, out);
                }
                self.negotiated = Some(Box::new(n));
                self.state = State::OpenConfirm;
            }
            Err(n) => {
                out.push(Action::Send(Message::Notification(n.clone())));
                self.go_idle(DownReason::NotificationSent(n), true, out);
            }
        }
    }

    fn negotiate(&self, local: &Open, remote: &Open) -> Result<Negotiated, Notification> {
        let peer_asn = remote.asn();
        let four_octet = remote
            .capabilities()
            .any(|c| matches!(c, Capability::FourOctetAs(_)));
        if peer_asn != self.config.peer_asn || (!four_octet && u32::from(remote.my_as) == AS_TRANS)
        {
            // RFC 4271 §6.2 leaves the data empty; RFC 6793 §4.1 too.
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                subcode::open::BAD_PEER_AS,
            ));
        }
        if !self.config.is_ebgp() && remote.bgp_id == self.config.router_id {
            // RFC 6286 §2.2: within an AS the identifiers must differ.
            return Err(Notification {
                code: code::OPEN_MESSAGE,
                subcode: subcode::open::BAD_BGP_IDENTIFIER,
                data: remote.bgp_id.octets().to_vec(),
            });
        }
        if remote.hold_time == 0 && local.hold_time != 0 {
            // A session without keepalives never notices a dead peer: only
            // when configured here too (RFC 4271 §6.2 lets a speaker
            // refuse a hold time it finds unacceptable).
            return Err(Notification::new(
                code::OPEN_MESSAGE,
                subcode::open::UNACCEPTABLE_HOLD_TIME,
            ));
        }
        let hold_time = local.hold_time.min(remote.hold_time);
        let keepalive_time = match (hold_time, self.config.keepalive_time) {
            (0, _) => 0,
            (h, Some(k)) => k.clamp(1, (h / 3).max(1)),
            (h, None) => (h / 3).max(1),
        };
        let mp = |o: &Open| -> Vec<AfiSafi> {
            o.capabilities()
                .filter_map(|c| match c {
                    Capability::Multiprotocol(af) => Some(*af),
                    _ => None,
                })
                .collect()
        };
        // No MP capability at all means IPv4 unicast only (RFC 4760 §8).
        let or_ipv4 = |v: Vec<AfiSafi>| {
            if v.is_empty() {
                vec![AfiSafi::IPV4_UNICAST]
            } else {
                v
            }
        };
        let ours = or_ipv4(mp(local));
        let theirs = or_ipv4(mp(remote));
        let families: Vec<AfiSafi> = ours
            .iter()
            .copied()
            .filter(|af| theirs.contains(af))
            .collect();
        if families.is_empty() {
            // Tell the peer which families we wanted (RFC 5492 §3).
            let mut data = Vec::new();
            for af in &ours {
                Capability::Multiprotocol(*af)
                    .encode(&mut data)
                    .map_err(|_| Notification::new(code::OPEN_MESSAGE, 0))?;
            }
            return Err(Notification {
                code: code::OPEN_MESSAGE,
                subcode: subcode::open::UNSUPPORTED_CAPABILITY,
                data,
            });
        }
        let has = |o: &Open, f: fn(&Capability) -> bool| o.capabilities().any(f);
        let route_refresh = has(remote, |c| matches!(c, Capability::RouteRefresh))
            || remote.capabilities().any(|c| c.code() == 128);
        let enhanced_route_refresh = has(remote, |c| matches!(c, Capability::EnhancedRouteRefresh))
            && has(local, |c| matches!(c, Capability::EnhancedRouteRefresh));
        let peer_long_lived = remote.capabilities().find_map(|c| match c {
            Capability::LongLivedGracefulRestart(f) => Some(f.clone()),
            _ => None,
        });
        let peer_graceful_restart = remote.capabilities().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr.clone()),
            _ => None,
        });
        let mut rx = WireContext::negotiated(remote, local);
        let mut tx = WireContext::negotiated(local, remote);
        // ADD-PATH only for families that were negotiated at all.
        for ctx in [&mut rx, &mut tx] {
            ctx.add_path_ipv4 &= families.contains(&AfiSafi::IPV4_UNICAST);
            ctx.add_path_ipv6 &= families.contains(&AfiSafi::IPV6_UNICAST);
        }
        Ok(Negotiated {
            peer_asn,
            peer_id: remote.bgp_id,
            hold_time,
            keepalive_time,
            families,
            route_refresh,
            enhanced_route_refresh,
            peer_graceful_restart,
            peer_long_lived,
            rx,
            tx,
            local_open: local.clone(),
            remote_open: remote.clone(),
        })
    }

    /// Back to Idle: drop the connection, stop timers, and schedule an
    /// automatic restart with backoff if this was a failure.
    fn go_idle(&mut self, reason: DownReason, failure: bool, out: &mut Vec<Action>) {
        let established = self.state == State::Established;
        if self.tcp != Tcp::None {
            out.push(Action::Disconnect);
            self.tcp = Tcp::None;
        }
        self.stop_all(out);
        self.negotiated = None;
        self.state = State::Idle;
        out.push(Action::Down {
            reason: reason.clone(),
            established,
        });
        self.last_down = Some(reason);
        if failure {
            self.failures = self.failures.saturating_add(1);
        }
        if self.auto_restart {
            let shift = self.failures.saturating_sub(1).min(16);
            let d = self
                .config
                .idle_hold
                .saturating_mul(1u32 << shift)
                .min(self.config.idle_hold_max);
            self.start(Timer::IdleHold, d, out);
        }
    }
}
