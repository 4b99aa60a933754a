//! BGP sessions over TCP: one tokio task per peer drives an [`Fsm`] with real
//! sockets and timers.
//!
//! ```text
//!  listener task ──Incoming(stream)──►┐
//!  connect task ──ConnectDone────────►│  peer task ──PeerEvent──► speaker (RIB owner)
//!  reader task ──Frame / Closed──────►│  (Fsm, timers, socket writes)
//!  speaker ──PeerCommand::Send(msgs)─►┘
//! ```
//!
//! The peer task owns the machine and the timers; a writer task per
//! connection writes what it queues ([`outbound`]: bounded, and watched by
//! the send hold timer), so a peer that stops reading never stops the peer
//! task; a reader task per connection cuts frames and hands them over; UPDATEs
//! are decoded here, in the peer's task, so decoding runs in parallel across
//! peers and the RIB task only sees decoded routes.
//!
//! Received UPDATEs are flow-controlled: each carries a `Credit` for its
//! bytes until the speaker has applied it, and a connection's reader stops
//! reading while `INBOUND_WINDOW` bytes of its UPDATEs are waiting. TCP
//! then holds the peer back, instead of a full table sitting decoded in the
//! queue to the speaker (the whole table, 50 MB at a million prefixes,
//! when the speaker is the slower side).

mod outbound;
pub(crate) mod socket;
pub mod sockopt;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(crate) use socket::TransportOptions;

use crate::fsm::{
    Action, DownReason, Event, Fsm, FsmConfig, Negotiated, State, Timer, resolve_collision,
};
use crate::wire::error::{code, subcode};
use crate::wire::message::{frame_len, msg_type};
use crate::wire::{
    AfiSafi, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, Message, Notification, Update, WireContext,
};

/// The BGP port.
pub const BGP_PORT: u16 = 179;

/// How many bytes of a connection's received UPDATEs may wait for the
/// speaker before its reader stops reading: ~130k IPv4 prefixes, several of
/// the speaker's batches, so it never waits for input while a peer sends.
/// The peer's KEEPALIVEs wait too meanwhile, as in FRR's input queue limit;
/// a speaker that applies nothing for a hold time loses the session either
/// way.
pub(crate) const INBOUND_WINDOW: usize = 512 << 10;

/// UPDATE bytes read on one connection and not yet applied.
#[derive(Debug, Default)]
struct Inbound {
    bytes: AtomicUsize,
    room: Notify,
}

impl Inbound {
    /// Waits until the window has room.
    async fn room(&self) {
        while self.bytes.load(Ordering::Acquire) > INBOUND_WINDOW {
            // A release between the check and the wait leaves a permit:
            // no wake-up is lost.
            self.room.notified().await;
        }
    }
}

/// A received UPDATE's share of its connection's inbound window
/// ([`INBOUND_WINDOW`]), handed back when dropped: once the speaker has
/// applied the UPDATE, or wherever the message is discarded on the way, so
/// none is ever lost.
#[derive(Debug)]
pub(crate) struct Credit {
    inbound: Arc<Inbound>,
    bytes: usize,
}

impl Credit {
    fn take(inbound: &Arc<Inbound>, bytes: usize) -> Credit {
        inbound.bytes.fetch_add(bytes, Ordering::AcqRel);
        Credit {
            inbound: inbound.clone(),
            bytes,
        }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        let before = self.inbound.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        if before > INBOUND_WINDOW && before - self.bytes <= INBOUND_WINDOW {
            self.inbound.room.notify_one();
        }
    }
}

/// Everything a peer task needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerConfig {
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's TCP port.
    pub port: u16,
    /// State machine settings.
    pub fsm: FsmConfig,
    /// Socket settings.
    pub transport: TransportOptions,
    /// RFC 9687 SendHoldTime; `None`: the RFC's default (8 minutes, or
    /// twice the negotiated hold time if longer).
    pub send_hold: Option<Duration>,
}

/// Commands to a peer task.
#[derive(Debug)]
pub(crate) enum PeerCommand {
    /// A connection from the peer, accepted by the listener.
    Incoming(TcpStream),
    /// Encoded UPDATEs for one session (ignored unless that session is the
    /// current one and Established: messages computed for a session that went
    /// down must not reach its successor).
    Send {
        /// The session they were computed for ([`PeerEvent::Up`]).
        session: u64,
        /// The messages (shared with the other members of its update group).
        messages: crate::rib::Messages,
    },
    /// Ask the peer to resend its routes for a family (route refresh).
    Refresh(AfiSafi),
    /// End the session with a Cease of this subcode (automatic stop) and stay
    /// down for `restart_after` before connecting (or listening) again;
    /// `None`: stay down until stopped or replaced.
    Reset {
        /// Cease subcode to send.
        subcode: u8,
        /// How long to stay down.
        restart_after: Option<std::time::Duration>,
    },
    /// Stop the session (Cease / Administrative Shutdown with an RFC 8203
    /// message) and stay down until [`PeerCommand::Enable`]; the task stays.
    Disable(Option<String>),
    /// Start again after [`PeerCommand::Disable`].
    Enable,
    /// Offer these capabilities from the next OPEN on (the graceful restart
    /// R bit is cleared this way once the restart is over).
    SetCapabilities(Vec<crate::wire::capability::Capability>),
    /// Close the connection without a NOTIFICATION and end the task: this
    /// speaker is restarting, and to a peer that helps with graceful
    /// restart (without RFC 8538's N bit) only a lost connection says so.
    Close,
    /// Stop the session (Cease, with a shutdown communication) and end the task.
    Stop {
        /// Cease subcode to send.
        subcode: u8,
        /// RFC 9003 shutdown communication.
        message: Option<String>,
    },
}

/// What a peer task reports to the speaker.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    /// The machine changed state.
    State(State),
    /// The session is Established.
    Up {
        /// This session's number, to tag what is sent on it.
        session: u64,
        /// What was negotiated.
        negotiated: Box<Negotiated>,
        /// Our end of the connection.
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
    },
    /// The session (or attempt) ended.
    Down {
        /// Why.
        reason: DownReason,
        /// Whether it had been Established.
        established: bool,
    },
    /// A decoded UPDATE.
    Update {
        /// The message.
        update: Update,
        /// RFC 7606 requires treating its routes as withdrawn.
        treat_as_withdraw: bool,
        /// Its share of the connection's inbound window: drop it once the
        /// UPDATE is applied, and the session reads on.
        credit: Option<Credit>,
    },
    /// The peer asked for our routes of a family again.
    RouteRefresh(AfiSafi),
    /// The task ended (after a Stop).
    Stopped,
    /// The task panicked (what it said): its session is gone.
    Crashed(String),
}

/// Message counters of a peer, readable without asking the task.
#[derive(Debug, Default)]
pub(crate) struct PeerStats {
    /// Messages received, by type code (index 1..=5).
    pub received: [AtomicU64; 6],
    /// Messages sent, by type code.
    pub sent: [AtomicU64; 6],
    /// Times the session left Established.
    pub flaps: AtomicU64,
    /// Bytes queued for the peer and not yet written.
    pub out_queued: AtomicU64,
    /// Sessions reset because the peer read nothing for SendHoldTime.
    pub send_hold_expired: AtomicU64,
    /// Sessions reset because the outbound queue was full.
    pub out_overflows: AtomicU64,
    /// ROUTE-REFRESH requests answered (a table walk each; requests close
    /// together are merged into one).
    pub refreshes_answered: AtomicU64,
}

impl PeerStats {
    fn count(arr: &[AtomicU64; 6], ty: u8) {
        if let Some(c) = arr.get(usize::from(ty)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running peer task.
#[derive(Debug)]
pub(crate) struct PeerHandle {
    /// Commands to the task.
    pub commands: mpsc::UnboundedSender<PeerCommand>,
}

/// Starts a peer task. Events go to `events` tagged with `id`; it counts
/// messages in `stats`.
pub(crate) fn spawn_peer<I: Copy + Send + 'static>(
    id: I,
    config: PeerConfig,
    events: mpsc::UnboundedSender<(I, PeerEvent)>,
    stats: Arc<PeerStats>,
) -> PeerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    // Detached: the task ends itself after a Stop, or when the speaker
    // drops its command channel. A panic ends it too, and the speaker
    // hears of it (its session, connection and routes go; the speaker
    // starts the peer again).
    let crashed = events.clone();
    let address = config.address;
    tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(PeerTask::new(id, config, rx, events, stats).run());
        if let Err(p) = futures::FutureExt::catch_unwind(run).await {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(peer = %address, "the session task panicked: {why}");
            let _ = crashed.send((id, PeerEvent::Crashed(why)));
        }
    });
    PeerHandle { commands: tx }
}

/// Inputs the task gives itself from helper tasks.
enum Internal {
    Connected(u64, std::io::Result<TcpStream>),
    /// A frame, with its credit if it is an UPDATE.
    Frame(u64, Vec<u8>, Option<Credit>),
    FrameError(u64, crate::wire::WireError),
    Closed(u64),
    /// An incoming connection's first message, read while another connection
    /// was already opening (collision, RFC 4271 §6.8).
    CollidingOpen(TcpStream, Vec<u8>),
}

struct Conn {
    generation: u64,
    writer: outbound::Outbound,
    reader: JoinHandle<()>,
    local: SocketAddr,
    remote: SocketAddr,
    /// We initiated it (for collision resolution).
    outbound: bool,
}

struct PeerTask<I> {
    id: I,
    config: PeerConfig,
    fsm: Fsm,
    commands: mpsc::UnboundedReceiver<PeerCommand>,
    events: mpsc::UnboundedSender<(I, PeerEvent)>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    stats: Arc<PeerStats>,
    conn: Option<Conn>,
    connecting: Option<JoinHandle<()>>,
    generation: u64,
    timers: HashMap<Timer, Instant>,
    stopping: bool,
    /// After a [`PeerCommand::Reset`], when to start again.
    restart_at: Option<Instant>,
    /// Number of the current (or last) Established session.
    session: u64,
}

impl<I: Copy + Send + 'static> PeerTask<I> {
    fn new(
        id: I,
        config: PeerConfig,
        commands: mpsc::UnboundedReceiver<PeerCommand>,
        events: mpsc::UnboundedSender<(I, PeerEvent)>,
        stats: Arc<PeerStats>,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        PeerTask {
            id,
            fsm: Fsm::new(config.fsm.clone()),
            config,
            commands,
            events,
            internal_tx,
            internal_rx,
            stats,
            conn: None,
            connecting: None,
            generation: 0,
            timers: HashMap::new(),
            stopping: false,
            restart_at: None,
            session: 0,
        }
    }

    fn emit(&self, e: PeerEvent) {
        let _ = self.events.send((self.id, e));
    }

    async fn run(mut self) {
        self.feed(Event::ManualStart).await;
        loop {
            let deadline = self.timers.values().min().copied();
            let send_hold = self.send_hold_deadline();
            tokio::select! {
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Timer> = self.timers.iter().filter(|(_, d)| **d <= now).map(|(t, _)| *t).collect();
                    for t in due {
                        self.timers.remove(&t);
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
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    // The speaker is gone: close politely and end.
                    None => {
                        self.feed(Event::ManualStop(None)).await;
                        break;
                    }
                },
                Some(i) = self.internal_rx.recv() => self.internal(i).await,
                _ = async { tokio::time::sleep_until(send_hold.unwrap_or_else(Instant::now)).await }, if send_hold.is_some() => {
                    // Written since? The deadline moved on; else the peer
                    // has read nothing for SendHoldTime.
                    if self.send_hold_deadline().is_some_and(|d| d <= Instant::now()) {
                        tracing::warn!(peer = %self.config.address, queued = self.stats.out_queued.load(Ordering::Relaxed), "the peer has read nothing for SendHoldTime: closing the session");
                        self.stats.send_hold_expired.fetch_add(1, Ordering::Relaxed);
                        self.feed(Event::SendHoldTimerExpires).await;
                    }
                }
                _ = async { tokio::time::sleep_until(self.restart_at.unwrap_or_else(Instant::now)).await }, if self.restart_at.is_some() => {
                    self.restart_at = None;
                    self.feed(Event::ManualStart).await;
                }
            }
            if self.stopping {
                break;
            }
        }
        self.drop_connection();
        self.emit(PeerEvent::Stopped);
    }

    async fn command(&mut self, c: PeerCommand) {
        match c {
            PeerCommand::Incoming(stream) => self.incoming(stream).await,
            PeerCommand::Send { session, messages } => {
                if self.fsm.state() == State::Established && session == self.session {
                    // One write for many messages: a reflector sends each
                    // client hundreds of small UPDATEs per round, and a
                    // syscall (and TCP segment) each cost more than the copy.
                    let mut buf: Vec<u8> = Vec::with_capacity(
                        messages
                            .iter()
                            .map(Vec::len)
                            .sum::<usize>()
                            .min(WRITE_CHUNK),
                    );
                    for m in messages.iter() {
                        if m.len() > HEADER_LEN {
                            PeerStats::count(&self.stats.sent, m[18]);
                        }
                        if buf.len() + m.len() > WRITE_CHUNK && !buf.is_empty() {
                            let full = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
                            if !self.queue_updates(full).await {
                                return;
                            }
                        }
                        buf.extend_from_slice(m);
                    }
                    if !buf.is_empty() {
                        self.queue_updates(buf).await;
                    }
                }
            }
            PeerCommand::Refresh(af) => {
                if self.fsm.state() == State::Established
                    && self.fsm.negotiated().is_some_and(|n| n.route_refresh)
                {
                    let m = Message::RouteRefresh(crate::wire::RouteRefresh::request(af));
                    self.send_message(&m).await;
                }
            }
            PeerCommand::SetCapabilities(caps) => self.fsm.set_capabilities(caps),
            PeerCommand::Disable(message) => {
                self.feed(Event::ManualStop(message)).await;
                self.restart_at = None;
            }
            PeerCommand::Enable => {
                self.restart_at = None;
                if self.fsm.state() == State::Idle {
                    self.feed(Event::ManualStart).await;
                }
            }
            PeerCommand::Reset {
                subcode: sub,
                restart_after,
            } => {
                // Through `feed`, so the state change reaches the speaker.
                self.feed(Event::AutomaticStop(sub)).await;
                self.restart_at = restart_after.map(|d| Instant::now() + d);
            }
            PeerCommand::Close => {
                tracing::info!(peer = %self.config.address, "closing the connection without a NOTIFICATION: a graceful restart");
                self.stopping = true;
            }
            PeerCommand::Stop {
                subcode: sub,
                message,
            } => {
                let acts = if sub == subcode::cease::ADMINISTRATIVE_SHUTDOWN {
                    self.fsm.handle(Event::ManualStop(message))
                } else {
                    // The FSM's automatic stop sends Cease with this subcode.
                    self.fsm.handle(Event::AutomaticStop(sub))
                };
                self.perform(acts).await;
                self.stopping = true;
            }
        }
    }

    async fn incoming(&mut self, stream: TcpStream) {
        let state = self.fsm.state();
        match state {
            State::Connect | State::Active | State::Idle => {
                // Take the peer's connection; forget our own attempt.
                if let Some(c) = self.connecting.take() {
                    c.abort();
                }
                if let Err(e) = self.prepare_accepted(&stream) {
                    // Fail closed: without its TTL or GTSM settings the
                    // connection is not the one configured.
                    tracing::warn!(peer = %self.config.address, error = %e, "connection refused: its socket options cannot be set");
                    return;
                }
                self.adopt(stream, false);
                self.feed(Event::TcpAccepted).await;
            }
            State::OpenSent | State::OpenConfirm => {
                // Collision: read the newcomer's OPEN to learn the peer's identifier.
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    if let Ok(Ok(frame)) =
                        tokio::time::timeout(Duration::from_secs(30), read_frame(&mut stream)).await
                    {
                        let _ = tx.send(Internal::CollidingOpen(stream, frame));
                    }
                });
            }
            // RFC 4271 §6.8: an Established session wins over a newcomer.
            State::Established => refuse_colliding(stream).await,
        }
    }

    fn prepare_accepted(&self, stream: &TcpStream) -> std::io::Result<()> {
        let v6 = stream.peer_addr()?.ip().to_canonical().is_ipv6();
        socket::apply(stream, v6, &self.config.transport)
    }

    fn adopt(&mut self, stream: TcpStream, outbound: bool) {
        self.drop_connection();
        self.generation += 1;
        let generation = self.generation;
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.address, 0));
        let remote = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.address, 0));
        let (read, writer) = stream.into_split();
        let tx = self.internal_tx.clone();
        let reader = tokio::spawn(read_frames(read, generation, tx, Arc::default()));
        self.conn = Some(Conn {
            generation,
            writer: outbound::Outbound::start(
                writer,
                generation,
                self.internal_tx.clone(),
                Arc::clone(&self.stats),
            ),
            reader,
            local: SocketAddr::new(local.ip().to_canonical(), local.port()),
            remote: SocketAddr::new(remote.ip().to_canonical(), remote.port()),
            outbound,
        });
    }

    fn drop_connection(&mut self) {
        if let Some(c) = self.conn.take() {
            c.reader.abort();
            c.writer.close();
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
    }

    async fn internal(&mut self, i: Internal) {
        match i {
            Internal::Connected(g, result) if g == self.generation => {
                self.connecting = None;
                match result {
                    Ok(stream) => {
                        self.adopt(stream, true);
                        self.feed(Event::TcpConnected).await;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %self.config.address, error = %e, "connect failed");
                        self.feed(Event::TcpFailed).await;
                    }
                }
            }
            Internal::Frame(g, frame, credit)
                if self.conn.as_ref().is_some_and(|c| c.generation == g) =>
            {
                self.frame(frame, credit).await;
            }
            Internal::FrameError(g, e) if self.conn.as_ref().is_some_and(|c| c.generation == g) => {
                tracing::warn!(peer = %self.config.address, error = %e, "bad message header");
                self.feed(Event::MessageError(e)).await;
            }
            Internal::Closed(g) if self.conn.as_ref().is_some_and(|c| c.generation == g) => {
                self.conn = None;
                self.feed(Event::TcpFailed).await;
            }
            Internal::CollidingOpen(stream, frame) => self.collision(stream, frame).await,
            // Stale results of connections we already gave up.
            _ => {}
        }
    }

    /// RFC 4271 §6.8: keep the connection initiated by the higher BGP identifier.
    async fn collision(&mut self, stream: TcpStream, frame: Vec<u8>) {
        let Ok(decoded) = Message::decode(&frame, &WireContext::modern()) else {
            return;
        };
        let Message::Open(open) = decoded.message else {
            return;
        };
        let existing_outbound = self.conn.as_ref().is_some_and(|c| c.outbound);
        let keep_existing = match self.fsm.state() {
            State::OpenSent | State::OpenConfirm => {
                existing_outbound && resolve_collision(self.config.fsm.router_id, open.bgp_id)
            }
            State::Established => true,
            _ => false,
        };
        if keep_existing {
            refuse_colliding(stream).await;
            return;
        }
        if let Err(e) = self.prepare_accepted(&stream) {
            // Fail closed, and keep the connection we have.
            tracing::warn!(peer = %self.config.address, error = %e, "connection refused: its socket options cannot be set");
            return;
        }
        // The newcomer wins: dump the existing connection, start over on the new one.
        let acts = self.fsm.handle(Event::CollisionDump);
        self.perform(acts).await;
        self.fsm = self.fsm.successor();
        self.timers.clear();
        let start = self.fsm.handle(Event::ManualStart);
        // A fresh machine starts connecting; we already have a connection.
        self.perform(
            start
                .into_iter()
                .filter(|a| !matches!(a, Action::Connect))
                .collect(),
        )
        .await;
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.adopt(stream, false);
        self.feed(Event::TcpAccepted).await;
        self.frame(frame, None).await;
    }

    fn rx_context(&self) -> WireContext {
        self.fsm
            .negotiated()
            .map(|n| n.rx)
            .unwrap_or_else(WireContext::modern)
    }

    fn tx_context(&self) -> WireContext {
        self.fsm
            .negotiated()
            .map(|n| n.tx)
            .unwrap_or_else(WireContext::modern)
    }

    async fn frame(&mut self, frame: Vec<u8>, credit: Option<Credit>) {
        if let Some(&ty) = frame.get(18) {
            PeerStats::count(&self.stats.received, ty);
        }
        let decoded = match Message::decode(&frame, &self.rx_context()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(peer = %self.config.address, error = %e, notification = %e.notification, "malformed message");
                return self.feed(Event::MessageError(e)).await;
            }
        };
        for p in &decoded.problems {
            tracing::warn!(peer = %self.config.address, problem = %p, "malformed UPDATE");
        }
        let treat_as_withdraw = decoded.treat_as_withdraw();
        match decoded.message {
            Message::Update(update) if self.fsm.state() == State::Established => {
                self.emit(PeerEvent::Update {
                    update,
                    treat_as_withdraw,
                    credit,
                });
                self.feed(Event::UpdateReceived).await;
            }
            Message::RouteRefresh(rr) if self.fsm.state() == State::Established => {
                if rr.subtype == crate::wire::route_refresh::RefreshSubtype::Request {
                    self.emit(PeerEvent::RouteRefresh(rr.afi_safi));
                }
                self.feed(Event::Message(Message::RouteRefresh(rr))).await;
            }
            Message::Notification(n) => {
                tracing::info!(peer = %self.config.address, notification = %n, "peer sent NOTIFICATION");
                self.feed(Event::Message(Message::Notification(n))).await;
            }
            m => self.feed(Event::Message(m)).await,
        }
    }

    async fn feed(&mut self, ev: Event) {
        let before = self.fsm.state();
        let acts = self.fsm.handle(ev);
        self.perform(acts).await;
        let after = self.fsm.state();
        if before != after {
            tracing::debug!(peer = %self.config.address, from = %before, to = %after, "state change");
            self.emit(PeerEvent::State(after));
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let mut pending = actions;
        // Sending can fail and feed TcpFailed, whose actions must run too.
        while !pending.is_empty() {
            let mut next = Vec::new();
            for a in pending {
                match a {
                    Action::Connect => self.start_connect(),
                    Action::Disconnect => {
                        if let Some(c) = self.conn.take() {
                            // What is queued (the NOTIFICATION last) is
                            // still written, briefly, then the connection
                            // is shut.
                            c.writer.close();
                            c.reader.abort();
                        }
                        if let Some(c) = self.connecting.take() {
                            c.abort();
                        }
                    }
                    Action::Send(m) => {
                        if !self.send_message(&m).await {
                            next.extend(self.fsm.handle(Event::TcpFailed));
                        }
                    }
                    Action::StartTimer(t, d) => {
                        self.timers.insert(t, Instant::now() + d);
                    }
                    Action::StopTimer(t) => {
                        self.timers.remove(&t);
                    }
                    Action::Established(n) => {
                        let (local, remote) = match &self.conn {
                            Some(c) => (c.local, c.remote),
                            None => continue,
                        };
                        tracing::info!(peer = %self.config.address, asn = n.peer_asn, "session established");
                        self.session += 1;
                        self.emit(PeerEvent::Up {
                            session: self.session,
                            negotiated: n,
                            local,
                            remote,
                        });
                    }
                    Action::Down {
                        reason,
                        established,
                    } => {
                        if established {
                            self.stats.flaps.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(peer = %self.config.address, %reason, "session down");
                        }
                        self.emit(PeerEvent::Down {
                            reason,
                            established,
                        });
                    }
                }
            }
            pending = next;
        }
    }

    fn start_connect(&mut self) {
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.generation += 1;
        let g = self.generation;
        let peer = SocketAddr::new(self.config.address, self.config.port);
        let opts = self.config.transport.clone();
        let tx = self.internal_tx.clone();
        let timeout = self.config.fsm.connect_retry;
        self.connecting = Some(tokio::spawn(async move {
            let r = socket::connect(peer, &opts, timeout).await;
            let _ = tx.send(Internal::Connected(g, r));
        }));
    }

    async fn send_message(&mut self, m: &Message) -> bool {
        let ctx = self.tx_context();
        match m.to_bytes(&ctx) {
            Ok(b) => {
                PeerStats::count(&self.stats.sent, m.type_code());
                match self.conn.as_mut() {
                    Some(c) => c.writer.queue(b, false, &self.stats).is_ok(),
                    None => false,
                }
            }
            Err(e) => {
                tracing::error!(peer = %self.config.address, error = %e, "cannot encode message");
                true
            }
        }
    }

    /// Queues encoded UPDATEs; false when the session ended instead: the
    /// connection is gone, or the queue is full and the session is reset
    /// (Cease, Out of Resources), to start again after the connect retry
    /// time.
    async fn queue_updates(&mut self, bytes: Vec<u8>) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match c.writer.queue(bytes, true, &self.stats) {
            Ok(()) => true,
            Err(outbound::Refused::Closed) => false,
            Err(outbound::Refused::Full) => {
                tracing::warn!(
                    peer = %self.config.address,
                    queued = self.stats.out_queued.load(Ordering::Relaxed),
                    "the peer reads too slowly: its outbound queue is full; resetting the session"
                );
                self.stats.out_overflows.fetch_add(1, Ordering::Relaxed);
                self.feed(Event::AutomaticStop(subcode::cease::OUT_OF_RESOURCES))
                    .await;
                self.restart_at = Some(Instant::now() + self.config.fsm.connect_retry);
                false
            }
        }
    }

    /// When the send hold timer expires, if something waits to be sent.
    fn send_hold_deadline(&self) -> Option<Instant> {
        let c = self.conn.as_ref()?;
        let hold = self.config.send_hold.unwrap_or_else(|| {
            outbound::default_send_hold(self.fsm.negotiated().map(|n| n.hold_time))
        });
        c.writer.send_hold_deadline(hold)
    }
}

/// Most bytes gathered into one write to the socket.
const WRITE_CHUNK: usize = 256 << 10;

/// Bounds of a connection's read room (see `read_frames`).
const READ_MIN: usize = 4 << 10;
const READ_MAX: usize = 64 << 10;

/// Closes a connection that lost collision resolution, telling the peer why.
async fn refuse_colliding(mut stream: TcpStream) {
    let n = Message::Notification(Notification::new(
        code::CEASE,
        subcode::cease::CONNECTION_COLLISION,
    ));
    if let Ok(b) = n.to_bytes(&WireContext::modern()) {
        let _ = stream.write_all(&b).await;
    }
}

/// Reads one whole BGP message from a stream (used before a reader task exists).
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
    if !(HEADER_LEN..=MAX_EXTENDED_MESSAGE_LEN).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad BGP length",
        ));
    }
    let mut frame = header.to_vec();
    frame.resize(len, 0);
    stream.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

/// A connection's reader: cuts frames off the stream and hands them to the
/// peer task, each UPDATE with its [`Credit`], and before each read waits
/// for room in the connection's inbound window.
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    generation: u64,
    tx: mpsc::UnboundedSender<Internal>,
    inbound: Arc<Inbound>,
) {
    // Read room grows while reads fill it and shrinks while they do not: a
    // full table comes in 64 KiB reads, while a reflector's thousand mostly
    // idle clients send a few small messages each, and two 64 KiB buffers
    // per connection were most of its memory.
    let mut room = READ_MIN;
    let mut buf: Vec<u8> = Vec::with_capacity(room);
    let framing = WireContext {
        extended_message: true,
        ..WireContext::modern()
    };
    loop {
        // Hand over every complete frame in the buffer.
        let mut start = 0;
        loop {
            match frame_len(&buf[start..], &framing) {
                Ok(Some(n)) => {
                    let frame = buf[start..start + n].to_vec();
                    let credit = (frame.get(18) == Some(&msg_type::UPDATE))
                        .then(|| Credit::take(&inbound, n));
                    let _ = tx.send(Internal::Frame(generation, frame, credit));
                    start += n;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Internal::FrameError(generation, e));
                    return;
                }
            }
        }
        buf.drain(..start);
        if buf.is_empty() && buf.capacity() > 2 * room {
            buf.shrink_to(room);
        }
        if buf.capacity() - buf.len() < room {
            buf.reserve(room);
        }
        let spare = buf.capacity() - buf.len();
        inbound.room().await;
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Internal::Closed(generation));
                return;
            }
            Ok(n) if n >= spare => room = (room * 2).min(READ_MAX),
            Ok(n) if n < room / 4 => room = (room / 2).max(READ_MIN),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An UPDATE-typed frame of `len` bytes (the reader only cuts frames).
    fn update_frame(len: usize) -> Vec<u8> {
        let mut f = vec![0xff; 16];
        f.extend_from_slice(&u16::try_from(len).expect("len").to_be_bytes());
        f.push(msg_type::UPDATE);
        f.resize(len, 0);
        f
    }

    /// Frames handed over until none comes for a while: (bytes, credits).
    async fn drain(rx: &mut mpsc::UnboundedReceiver<Internal>, credits: &mut Vec<Credit>) -> usize {
        let mut bytes = 0;
        while let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if let Internal::Frame(_, f, c) = i {
                bytes += f.len();
                credits.extend(c);
            }
        }
        bytes
    }

    #[tokio::test]
    async fn a_reader_stops_while_its_updates_wait_and_reads_on_as_they_are_applied() {
        const FRAME: usize = 4096;
        const FRAMES: usize = 1024; // 4 MiB: eight windows
        let (mut peer, ours) = tokio::io::duplex(64 << 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inbound = Arc::new(Inbound::default());
        let reader = tokio::spawn(read_frames(ours, 1, tx, inbound.clone()));
        let writer = tokio::spawn(async move {
            for _ in 0..FRAMES {
                peer.write_all(&update_frame(FRAME)).await.expect("write");
            }
            peer
        });

        // Nothing applied: the reader takes a window (and what one read
        // brings past it), then stops; the peer is held back.
        let mut held = Vec::new();
        let first = drain(&mut rx, &mut held).await;
        assert!(first > INBOUND_WINDOW, "read only {first} bytes");
        assert!(first <= INBOUND_WINDOW + (64 << 10), "read {first} bytes");
        assert_eq!(inbound.bytes.load(Ordering::Acquire), first);
        assert!(!writer.is_finished());

        // As they are applied, the rest comes through.
        let mut total = first;
        for _ in 0..FRAMES {
            if total == FRAMES * FRAME {
                break;
            }
            held.clear();
            total += drain(&mut rx, &mut held).await;
        }
        assert_eq!(total, FRAMES * FRAME);
        let peer = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the peer's writes finish")
            .expect("writer");
        held.clear();
        assert_eq!(inbound.bytes.load(Ordering::Acquire), 0);
        drop(peer);
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(closed, Ok(Some(Internal::Closed(1)))));
        reader.await.expect("reader ends");
    }

    #[tokio::test]
    async fn frames_of_any_size_come_whole_through_a_growing_and_shrinking_read_room() {
        // Small, largest (extended message), small again, in pieces that
        // straddle frame boundaries: reads fill the room and then leave it
        // mostly empty, so it grows and shrinks along the way, and every
        // frame must still come whole and in order.
        let sizes = [19, 4000, 65_535, 19, 30_000, 23, 65_535, 19];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut f = update_frame(n);
                if n == HEADER_LEN {
                    f[18] = msg_type::KEEPALIVE;
                }
                f[HEADER_LEN..].fill(i as u8);
                f
            })
            .collect();
        let (mut peer, ours) = tokio::io::duplex(8 << 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _reader = tokio::spawn(read_frames(ours, 1, tx, Arc::default()));
        let stream = frames.concat();
        let writer = tokio::spawn(async move {
            for piece in stream.chunks(3001) {
                peer.write_all(piece).await.expect("write");
            }
            peer
        });
        for want in &frames {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            let Ok(Some(Internal::Frame(1, f, _))) = got else {
                panic!("no frame of {} bytes", want.len());
            };
            assert!(
                f == *want,
                "frame of {} bytes came as {} bytes",
                want.len(),
                f.len()
            );
        }
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn frames_other_than_updates_take_no_credit() {
        let (mut peer, ours) = tokio::io::duplex(64 << 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inbound = Arc::new(Inbound::default());
        let _reader = tokio::spawn(read_frames(ours, 1, tx, inbound.clone()));
        let mut keepalive = update_frame(HEADER_LEN);
        keepalive[18] = msg_type::KEEPALIVE;
        peer.write_all(&keepalive).await.expect("write");
        peer.write_all(&update_frame(100)).await.expect("write");
        let mut credits = Vec::new();
        assert_eq!(drain(&mut rx, &mut credits).await, HEADER_LEN + 100);
        assert_eq!(credits.len(), 1);
        assert_eq!(inbound.bytes.load(Ordering::Acquire), 100);
        drop(credits);
        assert_eq!(inbound.bytes.load(Ordering::Acquire), 0);
    }
}
