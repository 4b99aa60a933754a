//! The speaker task: the IO side of the speaker. It owns the [`Core`] and
//! everything that touches the outside (peer tasks, listeners, the FIB
//! subscriber, the journal, the published peer table), decides what to take
//! next (commands before peer events, batches of events, flushes in slices),
//! hands each input to the core, records it when asked to, and carries out
//! what the core says.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::config::{RestartState, SpeakerConfig};
use super::core::{Core, Input, Output, PeerInput, Reply};
use super::handle::{Command, SpeakerError};
use super::pacing::Pacer;
use super::record::Recorder;
use super::view::{FibEvent, FibQuery, PeerStatus, SpeakerSummary};
use crate::journal::Journal;
use crate::rib::PeerId;
use crate::session::{self, PeerCommand, PeerEvent, PeerHandle};

/// The task's ends of the channels its handle and helpers hold the others of.
pub(super) struct Channels {
    /// Where peer tasks send their events.
    pub(super) events_tx: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    /// Where listeners send accepted connections.
    pub(super) accepted_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    /// Peer and best-path events for `WatchEvents`.
    pub(super) journal: Journal,
    /// The published peer table.
    pub(super) peers_tx: watch::Sender<Arc<Vec<PeerStatus>>>,
}

/// The speaker task.
pub(super) struct SpeakerTask {
    pub(super) core: Core,
    /// The running peer tasks.
    pub(super) handles: HashMap<PeerId, PeerHandle>,
    pub(super) events_tx: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    pub(super) accepted_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    pub(super) listeners: Vec<(SocketAddr, JoinHandle<()>, Arc<TcpListener>)>,
    /// Where best-path changes go (the route-sync side), if anyone listens.
    pub(super) fib: Option<mpsc::UnboundedSender<FibEvent>>,
    /// Where peer and best-path events go for `WatchEvents`.
    pub(super) journal: Journal,
    /// The published peer table, read by the API and metrics without asking
    /// this task.
    pub(super) peers_tx: watch::Sender<Arc<Vec<PeerStatus>>>,
    /// When the peer table was last published.
    pub(super) peers_published: tokio::time::Instant,
    /// Where inputs are written down, when they are (`Speaker::start_recording`).
    pub(super) recorder: Option<Recorder>,
    /// Neighbours (addresses or ranges) whose TCP-MD5 key some listener
    /// refused: their connections are refused too, never taken unsigned.
    pub(super) md5_missing: Vec<ipnet::IpNet>,
    /// Listing pages waiting while routing is busy ([`Pacer`]).
    pub(super) pacer: Pacer<Command>,
}

/// How stale the published peer counters may get while routes flow.
const PEERS_REFRESH: Duration = Duration::from_millis(100);

/// How stale they may get on quiet sessions (KEEPALIVEs only).
const PEERS_IDLE_REFRESH: Duration = Duration::from_secs(1);

/// Commands served in a row before pending peer events get a turn: reads
/// come first, but a stream of them must not stall routing.
const COMMANDS_IN_A_ROW: u32 = 16;

/// Whether a command may be served now, `served` having been served in a
/// row while `routing_waits` (peer events queued, or a flush unfinished).
fn commands_turn(served: u32, routing_waits: bool) -> bool {
    served < COMMANDS_IN_A_ROW || !routing_waits
}

/// Whether a command reads a page of a whole listing (paced while routing
/// is busy), not a lookup of one prefix.
fn is_listing(c: &Command) -> bool {
    match c {
        Command::Routes(f, ..) => f.prefix.is_none() || f.longer,
        Command::AdjRib(..) => true,
        _ => false,
    }
}

/// Events handled before the outbound queue is flushed: large enough to pack
/// UPDATEs well under load, small enough to keep propagation prompt.
const BATCH: usize = 512;

/// Changed prefixes after which a batch stops taking events. A full
/// table's UPDATEs carry ~900 prefixes each, so [`BATCH`] events alone
/// let half a million changes wait for one flush, with a set entry each
/// (and the set keeps its size after); this is still plenty to pack the
/// outbound UPDATEs well.
const BATCH_PREFIXES: usize = 16_384;

/// Prefixes flushed between two looks at the command queue. At a few
/// microseconds a prefix (encoding for every update group, the FIB's and
/// the journal's share) this is a few milliseconds of work, so a read
/// waits about that long for a flush, where a full table's batch in one go
/// made it wait hundreds. 4096 took 15-20 ms of CPU a slice, 40-60 ms of
/// wall time on two busy cores: too long for the API's 50 ms goal
/// (docs/performance.md).
const FLUSH_SLICE: usize = 1024;

/// Distinct peers whose events make a batch "from many peers": enough that
/// a couple of full-table upstreams (and the odd state change beside them)
/// do not count, few enough that a reflector's clients do at once.
const MANY_PEERS: usize = 8;

/// The distinct peers a batch's events came from, up to [`MANY_PEERS`].
struct SendersSeen {
    ids: [PeerId; MANY_PEERS],
    len: usize,
}

impl SendersSeen {
    fn new(first: PeerId) -> SendersSeen {
        SendersSeen {
            ids: [first; MANY_PEERS],
            len: 1,
        }
    }

    fn saw(&mut self, id: PeerId) {
        if self.len < MANY_PEERS && !self.ids[..self.len].contains(&id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    fn many(&self) -> bool {
        self.len >= MANY_PEERS
    }
}

impl SpeakerTask {
    /// Binds the listeners and builds the core with the configuration.
    pub(super) async fn start(
        config: SpeakerConfig,
        restart: RestartState,
        channels: Channels,
        recorder: Option<Recorder>,
    ) -> Result<SpeakerTask, SpeakerError> {
        let clock = Clock::system();
        let mut task = SpeakerTask {
            core: Core::new(&config, restart, clock.clone()),
            handles: HashMap::new(),
            events_tx: channels.events_tx,
            accepted_tx: channels.accepted_tx,
            listeners: Vec::new(),
            fib: None,
            journal: channels.journal,
            peers_tx: channels.peers_tx,
            peers_published: clock.now(),
            md5_missing: Vec::new(),
            pacer: Pacer::default(),
            recorder,
        };
        // The core starts without peers or routes; the configuration then
        // comes as any other input, so that a replay starts the same way.
        task.configure(config).await?;
        // With no configured peer there is nothing to wait for.
        task.step(Input::EndOfBatch);
        task.publish_peers();
        Ok(task)
    }

    /// Hands one input to the core (writing it down first when recording),
    /// then carries out what the core asks for.
    pub(super) fn step(&mut self, input: Input) -> Reply {
        // One instant per input: the one recorded, and the one the core
        // decides with.
        self.core.clock.tick();
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.record(&self.core, &input)
        {
            tracing::warn!(error = %e, "cannot record the speaker's inputs; recording stops");
            self.recorder = None;
        }
        let reply = self.core.input(input);
        self.perform();
        reply
    }

    /// Carries out the core's outputs.
    fn perform(&mut self) {
        let mut fib_gone = false;
        for o in self.core.take_outputs() {
            match o {
                Output::StartPeer { id, config, stats } => {
                    let handle = session::spawn_peer(id, config, self.events_tx.clone(), stats);
                    self.handles.insert(id, handle);
                }
                Output::Peer(id, c) => {
                    let stop = matches!(c, PeerCommand::Stop { .. } | PeerCommand::Close);
                    if let Some(h) = self.handles.get(&id) {
                        let _ = h.commands.send(c);
                    }
                    if stop {
                        self.handles.remove(&id);
                    }
                }
                Output::Fib(ev) => {
                    if let Some(fib) = &self.fib
                        && fib.send(ev).is_err()
                    {
                        self.fib = None;
                        fib_gone = true;
                    }
                }
                Output::Journal(batch) => self.journal.record(batch),
                Output::Forget(id) => {
                    self.handles.remove(&id);
                }
                Output::Garbage(garbage) => {
                    tokio::task::spawn_blocking(move || drop(garbage));
                }
            }
        }
        if fib_gone {
            self.step(Input::FibGone);
        }
    }

    /// A peer event: the core takes it without what only the socket side
    /// needs, which goes once the event is applied.
    fn event(&mut self, id: PeerId, ev: PeerEvent) {
        let (input, credit) = match ev {
            PeerEvent::State(s) => (PeerInput::State(s), None),
            PeerEvent::Up {
                session,
                negotiated,
                local,
                remote,
            } => (
                PeerInput::Up {
                    session,
                    negotiated,
                    local,
                    remote,
                    link_local: link_local_for(local.ip(), remote.ip()),
                },
                None,
            ),
            PeerEvent::Down {
                reason,
                established,
            } => (
                PeerInput::Down {
                    reason,
                    established,
                },
                None,
            ),
            PeerEvent::Update {
                update,
                treat_as_withdraw,
                credit,
            } => (
                PeerInput::Update {
                    update,
                    treat_as_withdraw,
                },
                credit,
            ),
            PeerEvent::RouteRefresh(af) => (PeerInput::RouteRefresh(af), None),
            PeerEvent::Stopped => (PeerInput::Stopped, None),
            PeerEvent::Crashed(why) => (PeerInput::Crashed(why), None),
        };
        self.step(Input::Peer(id, input));
        // Applied: the session may read on.
        drop(credit);
    }

    /// A connection accepted by a listener goes to its peer's task.
    fn accept(&mut self, stream: TcpStream, remote: SocketAddr) {
        let ip = remote.ip().to_canonical();
        if let Some(r) = self.md5_missing.iter().find(|r| r.contains(&ip)) {
            // Fail closed: without its key on the listener, the kernel took
            // the connection unsigned.
            tracing::warn!(peer = %ip, neighbour = %r, "connection refused: the neighbour's TCP-MD5 key could not be installed on the listener");
            drop(stream);
            return;
        }
        if let Reply::Accept(Some(id)) = self.step(Input::Accept(remote.ip().to_canonical()))
            && let Some(h) = self.handles.get(&id)
        {
            let _ = h.commands.send(PeerCommand::Incoming(stream));
        }
    }

    /// Applies a configuration: the listeners here, the rest in the core.
    async fn configure(&mut self, new: SpeakerConfig) -> Result<(), SpeakerError> {
        let fresh = if new.listen != self.core.config.listen {
            self.rebind(&new.listen).await?
        } else {
            Vec::new()
        };
        let old = self.core.config.clone();
        self.step(Input::Configure(Box::new(new.clone())));
        self.install_md5(&old, &new, &fresh);
        self.set_listener_min_ttl();
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<(PeerId, PeerEvent)>,
        mut accepted: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    ) {
        let mut served: u32 = 0;
        loop {
            // Commands first, taken with `try_recv`: `recv` answers to the
            // runtime's cooperative budget, and once a long poll of this task
            // (a busy ingest never leaves it) has used the budget up, `recv`
            // reports an empty queue until the task yields, which is after
            // the whole pending flush: reads waited hundreds of
            // milliseconds for that (docs/performance.md).
            for _ in 0..COMMANDS_IN_A_ROW {
                if !commands_turn(served, !events.is_empty() || self.core.rib.has_pending()) {
                    break;
                }
                let c = match commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
                served += 1;
                if self.command(c, &mut events).await.is_break() {
                    return;
                }
            }
            let page_due = self.pacer.due(tokio::time::Instant::now());
            tokio::select! {
                // Commands first: an API read waits for at most one peer
                // event or flush slice, never for a whole batch.
                biased;
                c = commands.recv(), if commands_turn(served, !events.is_empty() || self.core.rib.has_pending()) => {
                    served += 1;
                    if self.command(c, &mut events).await.is_break() {
                        return;
                    }
                }
                // A listing's page whose turn has come (pacing).
                _ = sleep_until(page_due) => {
                    if let Some(c) = self.pacer.take(tokio::time::Instant::now()) {
                        self.page(c);
                    }
                }
                Some((stream, remote)) = accepted.recv() => self.accept(stream, remote),
                _ = sleep_until(self.core.next_deadline()) => {
                    self.step(Input::Timers);
                }
                // Message counters move without events (KEEPALIVEs are
                // counted in the session tasks), so the table is refreshed
                // every second while there are peers at all.
                _ = tokio::time::sleep_until(self.peers_published + if self.core.counters_moved { PEERS_REFRESH } else { PEERS_IDLE_REFRESH }), if self.core.counters_moved || !self.core.peers.is_empty() => {
                    self.publish_peers();
                }
                // The rest of a flush a command interrupted, before more
                // events add to it.
                _ = std::future::ready(()), if self.core.rib.has_pending() => {
                    served = 0;
                    let start = tokio::time::Instant::now();
                    self.flush_until_command(&commands);
                    self.worked(start);
                }
                Some((id, ev)) = events.recv() => {
                    served = 0;
                    let start = tokio::time::Instant::now();
                    let mut peers = SendersSeen::new(id);
                    self.event(id, ev);
                    // Take what else is queued before computing the outbound
                    // side; a waiting command cuts the batch short. (Bounding
                    // batches by time as well, 10 ms, took ExplainRoute's p99
                    // during a full-table ingest from ~600 to ~140 ms but cost
                    // ~15% of ingest speed: docs/performance.md.)
                    for _ in 0..BATCH {
                        if !commands.is_empty() || self.core.rib.pending_len() >= BATCH_PREFIXES {
                            break;
                        }
                        match events.try_recv() {
                            Ok((id, ev)) => {
                                peers.saw(id);
                                self.event(id, ev);
                            }
                            Err(_) => break,
                        }
                    }
                    // The queue ran dry while many peers were sending: give
                    // the session tasks that are ready one turn to read what
                    // their peers sent, and take that too. At a reflector
                    // thousands of clients' UPDATEs arrive at once; one
                    // flush for all of them is one encoding and one write
                    // per member, where a flush per few hundred is that
                    // many, each competing with the reads still to come.
                    // (Not for a few peers' streams: a full table from one
                    // feeder took 25% longer with the extra turn per batch.)
                    // The turn is other tasks' time, not routing work.
                    let mut start = start;
                    if peers.many() && events.is_empty() && commands.is_empty() {
                        let turn = tokio::time::Instant::now();
                        tokio::task::yield_now().await;
                        start += turn.elapsed();
                        for _ in 0..BATCH {
                            if !commands.is_empty() || self.core.rib.pending_len() >= BATCH_PREFIXES {
                                break;
                            }
                            match events.try_recv() {
                                Ok((id, ev)) => self.event(id, ev),
                                Err(_) => break,
                            }
                        }
                    }
                    self.flush_until_command(&commands);
                    self.step(Input::EndOfBatch);
                    self.worked(start);
                }
            }
            if self.core.peers_changed
                || (self.core.counters_moved && self.peers_published.elapsed() >= PEERS_REFRESH)
            {
                self.publish_peers();
            }
        }
    }

    /// Stops every session (and the listeners) and gives the peer tasks a
    /// moment to send their NOTIFICATIONs.
    async fn shutdown(&mut self, events: &mut mpsc::UnboundedReceiver<(PeerId, PeerEvent)>) {
        for (_, h, _) in self.listeners.drain(..) {
            h.abort();
        }
        let mut left = self.core.peers.len();
        self.step(Input::Shutdown);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while left > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some((_, PeerEvent::Stopped))) => left -= 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    /// Serves one command; `None` means every handle is gone. Breaks when
    /// the speaker has stopped.
    async fn command(
        &mut self,
        c: Option<Command>,
        events: &mut mpsc::UnboundedReceiver<(PeerId, PeerEvent)>,
    ) -> ControlFlow<()> {
        // A client that reads routes and then peers sees counters at least
        // as new as the routes.
        if self.core.counters_moved {
            self.publish_peers();
        }
        match c {
            None => {
                self.shutdown(events).await;
                return ControlFlow::Break(());
            }
            Some(Command::Shutdown(done)) => {
                self.shutdown(events).await;
                let _ = done.send(());
                return ControlFlow::Break(());
            }
            Some(Command::Configure(cfg, done)) => {
                // A new identity replaces the RIB: what a sliced
                // flush left pending (a withdrawal the FIB has not
                // heard of) must go out first.
                self.step(Input::Flush(usize::MAX));
                let r = self.configure(*cfg).await;
                self.step(Input::EndOfBatch);
                // The caller may read the peers next: publish first.
                self.publish_peers();
                let _ = done.send(r);
            }
            Some(Command::SubscribeFib(tx)) => {
                self.fib = Some(tx);
                self.step(Input::SubscribeFib);
            }
            // What these change goes out by the sliced flush of the run
            // loop: a next hop lost under a full table changes a million
            // prefixes, which a flush in one go took the owner (and every
            // read waiting on it) hundreds of milliseconds to send.
            Some(Command::NextHopReachable(nh, ok)) => {
                self.step(Input::NextHopReachable(nh, ok));
            }
            Some(Command::Liveness(address, up)) => {
                self.step(Input::Liveness(address, up));
                self.publish_peers();
            }
            Some(Command::Worked(took)) => {
                self.pacer.worked(tokio::time::Instant::now(), took);
            }
            Some(c @ (Command::Routes(..) | Command::AdjRib(..))) => {
                if !is_listing(&c) {
                    self.page(c);
                } else if let Some(c) = self.pacer.offer(c, tokio::time::Instant::now()) {
                    self.page(c);
                }
            }
            Some(Command::Control(peer, what, done)) => {
                let r = match self.step(Input::Control(peer, what)) {
                    Reply::Control(r) => r,
                    _ => Ok(()),
                };
                self.publish_peers();
                let _ = done.send(r);
            }
            Some(Command::Explain(prefix, done)) => {
                let _ = done.send(self.core.explain(&prefix));
            }
            Some(Command::FibRoutes(query, done)) => {
                let _ = done.send(match query {
                    FibQuery::Prefixes(prefixes) => self.core.rib.fib_routes(&prefixes),
                    FibQuery::Via(hops) => self.core.rib.fib_table(Some(&hops)),
                });
            }
            Some(Command::Summary(done)) => {
                let rib = &self.core.rib;
                let _ = done.send(SpeakerSummary {
                    prefixes: rib.len(),
                    paths: rib.path_count(),
                    attribute_sets: rib.attribute_sets(),
                    converged: self.core.converged,
                    deferring: rib.deferring(),
                });
            }
        }
        ControlFlow::Continue(())
    }

    /// Flushes in slices of [`FLUSH_SLICE`] prefixes until nothing is
    /// pending or a command waits; what is left goes out on a later turn
    /// of the run loop, after the command.
    fn flush_until_command(&mut self, commands: &mpsc::UnboundedReceiver<Command>) {
        loop {
            self.step(Input::Flush(FLUSH_SLICE));
            if !self.core.rib.has_pending() || !commands.is_empty() {
                break;
            }
        }
    }

    /// Reads a page of a listing (or an exact prefix's routes) and answers it.
    fn page(&mut self, c: Command) {
        match c {
            Command::Routes(f, from, done) => {
                let _ = done.send(self.core.routes_page(&f, from));
            }
            Command::AdjRib(peer, side, from, done) => {
                let _ = done.send(self.core.adj_rib_page(&peer, side, from));
            }
            _ => {}
        }
    }

    /// Counts routing work that started at `start` and ends now, for
    /// pacing listings.
    fn worked(&mut self, start: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        self.pacer.worked(now, now - start);
    }

    /// Publishes the peer table for readers that must not wait for this task.
    fn publish_peers(&mut self) {
        self.peers_tx
            .send_replace(Arc::new(self.core.peer_status()));
        // The task's own time, not the core's (which stands at the last
        // input): the refresh timer counts from here.
        self.peers_published = tokio::time::Instant::now();
        self.core.peers_changed = false;
        self.core.counters_moved = false;
    }
}

/// Sleeps until a deadline; forever without one.
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Our link-local address on the link shared with `peer`, if the session runs
/// over IPv6 between addresses of one subnet (RFC 2545 §3: then the link-local
/// next hop is sent too). Read from `/proc/net/if_inet6`, which shows the
/// addresses of the network namespace we run in.
fn link_local_for(local: IpAddr, peer: IpAddr) -> Option<Ipv6Addr> {
    let (IpAddr::V6(local), IpAddr::V6(peer)) = (local, peer) else {
        return None;
    };
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    let rows: Vec<(Ipv6Addr, u8, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = u128::from_str_radix(f.first()?, 16).ok()?;
            let plen = u8::from_str_radix(f.get(2)?, 16).ok()?;
            Some((Ipv6Addr::from(addr), plen, f.get(5)?.to_string()))
        })
        .collect();
    let (_, plen, dev) = rows.iter().find(|(a, _, _)| *a == local)?;
    let net = ipnet::Ipv6Net::new(local, *plen).ok()?;
    if !net.contains(&peer) {
        return None;
    }
    rows.iter()
        .find(|(a, _, d)| d == dev && (a.segments()[0] & 0xffc0) == 0xfe80)
        .map(|(a, _, _)| *a)
}
