//! The speaker task: its state and its run loop, which decides what to take
//! next (commands before peer events, batches of events, flushes in slices).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{NeighborConfig, RestartState, SpeakerConfig};
use super::handle::Command;
use super::view::{FibEvent, FibQuery, PeerStatus, SpeakerSummary};
use crate::fsm::{Negotiated, State};
use crate::journal::{BestPath, Journal, WatchEventKind};
use crate::rib::{FibChange, PeerId, Rib};
use crate::session::{PeerCommand, PeerEvent, PeerHandle};
use crate::wire::AfiSafi;
use crate::wire::error::subcode;

pub(super) struct PeerSlot {
    pub(super) config: NeighborConfig,
    pub(super) address: IpAddr,
    pub(super) dynamic: bool,
    pub(super) handle: PeerHandle,
    pub(super) state: State,
    pub(super) since: SystemTime,
    pub(super) last_error: Option<String>,
    pub(super) negotiated: Option<Box<Negotiated>>,
    pub(super) local: Option<SocketAddr>,
    /// In the RIB (Established and announced there).
    pub(super) in_rib: bool,
    /// The peer task's number for the current session.
    pub(super) session: u64,
    /// Families whose prefix limit (or warning threshold) this session
    /// already reported, so each is logged once per session.
    pub(super) limit_warned: Vec<(AfiSafi, bool)>,
    /// Disabled through the API.
    pub(super) disabled: bool,
}

pub(super) struct SpeakerTask {
    pub(super) rib: Rib,
    pub(super) config: SpeakerConfig,
    pub(super) peers: HashMap<PeerId, PeerSlot>,
    /// Never reused; `u32::MAX` is the RIB's mark of our own paths, four
    /// billion peers away.
    pub(super) next_id: PeerId,
    pub(super) events_tx: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    pub(super) accepted_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    pub(super) listeners: Vec<(SocketAddr, JoinHandle<()>, std::sync::Arc<TcpListener>)>,
    /// Where best-path changes go (the route-sync side), if anyone listens.
    pub(super) fib: Option<mpsc::UnboundedSender<FibEvent>>,
    /// What we know of the previous run.
    pub(super) restart: RestartState,
    /// While route selection is deferred after our restart, its latest end.
    pub(super) deferral_until: Option<tokio::time::Instant>,
    /// Every configured peer has sent its whole table once (the FIB may now
    /// remove what nobody announced again).
    pub(super) converged: bool,
    /// Peers whose stale routes we keep (graceful restart helper), and when
    /// they go if the peer neither returns nor sends End-of-RIB.
    pub(super) stale_timers: HashMap<PeerId, tokio::time::Instant>,
    /// Peers whose stale routes turn long-lived stale when their restart
    /// timer runs out: the families and how long they then stay.
    pub(super) pending_llgr: HashMap<PeerId, (Vec<AfiSafi>, Duration)>,
    /// Where peer and best-path events go for `WatchEvents`.
    pub(super) journal: Journal,
    /// Events of the current batch, handed to the journal on flush.
    pub(super) journal_batch: Vec<(SystemTime, WatchEventKind)>,
    /// The published peer table, read by the API and metrics without asking
    /// this task.
    pub(super) peers_tx: watch::Sender<Arc<Vec<PeerStatus>>>,
    /// When the peer table was last published.
    pub(super) peers_published: tokio::time::Instant,
    /// A peer was added, removed or changed state since: publish at once.
    pub(super) peers_changed: bool,
    /// Peer events arrived since: counters moved, publish within
    /// [`PEERS_REFRESH`].
    pub(super) counters_moved: bool,
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

impl SpeakerTask {
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
                if !commands_turn(served, !events.is_empty() || self.rib.has_pending()) {
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
            tokio::select! {
                // Commands first: an API read waits for at most one peer
                // event or flush slice, never for a whole batch.
                biased;
                c = commands.recv(), if commands_turn(served, !events.is_empty() || self.rib.has_pending()) => {
                    served += 1;
                    if self.command(c, &mut events).await.is_break() {
                        return;
                    }
                }
                Some((stream, remote)) = accepted.recv() => self.accept(stream, remote),
                _ = sleep_until(self.next_deadline()) => self.expire_timers(),
                // Message counters move without events (KEEPALIVEs are
                // counted in the session tasks), so the table is refreshed
                // every second while there are peers at all.
                _ = tokio::time::sleep_until(self.peers_published + if self.counters_moved { PEERS_REFRESH } else { PEERS_IDLE_REFRESH }), if self.counters_moved || !self.peers.is_empty() => {
                    self.publish_peers();
                }
                // The rest of a flush a command interrupted, before more
                // events add to it.
                _ = std::future::ready(()), if self.rib.has_pending() => {
                    served = 0;
                    self.flush_until_command(&commands);
                }
                Some((id, ev)) = events.recv() => {
                    served = 0;
                    self.counters_moved = true;
                    self.event(id, ev);
                    // Take what else is queued before computing the outbound
                    // side; a waiting command cuts the batch short. (Bounding
                    // batches by time as well, 10 ms, took ExplainRoute's p99
                    // during a full-table ingest from ~600 to ~140 ms but cost
                    // ~15% of ingest speed: docs/performance.md.)
                    for _ in 0..BATCH {
                        if !commands.is_empty() || self.rib.pending_len() >= BATCH_PREFIXES {
                            break;
                        }
                        match events.try_recv() {
                            Ok((id, ev)) => self.event(id, ev),
                            Err(_) => break,
                        }
                    }
                    self.flush_until_command(&commands);
                    self.after_events();
                }
            }
            // Peers added or removed outside a flush (configuration).
            if !self.journal_batch.is_empty() {
                self.journal.record(std::mem::take(&mut self.journal_batch));
            }
            if self.peers_changed
                || (self.counters_moved && self.peers_published.elapsed() >= PEERS_REFRESH)
            {
                self.publish_peers();
            }
        }
    }

    pub(super) async fn shutdown(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<(PeerId, PeerEvent)>,
    ) {
        for (_, h, _) in self.listeners.drain(..) {
            h.abort();
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in &ids {
            self.stop_peer(
                *id,
                subcode::cease::ADMINISTRATIVE_SHUTDOWN,
                Some("petrel is shutting down".into()),
            );
        }
        // Give the tasks a moment to send their NOTIFICATIONs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut left = ids.len();
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
    pub(super) async fn command(
        &mut self,
        c: Option<Command>,
        events: &mut mpsc::UnboundedReceiver<(PeerId, PeerEvent)>,
    ) -> ControlFlow<()> {
        // A client that reads routes and then peers sees counters at least
        // as new as the routes.
        if self.counters_moved {
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
                self.flush();
                let r = self.configure(*cfg).await;
                self.after_events();
                // The caller may read the peers next: publish first.
                self.publish_peers();
                let _ = done.send(r);
            }
            Some(Command::SubscribeFib(tx)) => {
                // While selection is deferred the FIB hears nothing:
                // everything comes when the deferral ends.
                let all = self.rib.fib_table(None);
                // Changes still pending are sent again on the next
                // flush: harmless, and the journal needs them.
                let _ = tx.send(FibEvent::Changes(all));
                if self.converged {
                    let _ = tx.send(FibEvent::Converged);
                }
                self.fib = Some(tx);
            }
            // What these change goes out by the sliced flush of the run
            // loop: a next hop lost under a full table changes a million
            // prefixes, which a flush in one go took the owner (and every
            // read waiting on it) hundreds of milliseconds to send.
            Some(Command::NextHopReachable(nh, ok)) => {
                self.rib.set_next_hop_reachable(nh, ok);
            }
            Some(Command::Routes(f, done)) => {
                let _ = done.send(self.routes(&f));
            }
            Some(Command::AdjRib(peer, side, done)) => {
                let _ = done.send(self.adj_rib(&peer, side));
            }
            Some(Command::Control(peer, what, done)) => {
                let r = self.control(&peer, what);
                self.publish_peers();
                let _ = done.send(r);
            }
            Some(Command::Explain(prefix, done)) => {
                let _ = done.send(self.explain(&prefix));
            }
            Some(Command::FibRoutes(query, done)) => {
                let _ = done.send(match query {
                    FibQuery::Prefixes(prefixes) => self.rib.fib_routes(&prefixes),
                    FibQuery::Via(hops) => self.rib.fib_table(Some(&hops)),
                });
            }
            Some(Command::Summary(done)) => {
                let _ = done.send(SpeakerSummary {
                    prefixes: self.rib.len(),
                    paths: self.rib.iter().map(|(_, d)| d.paths.len()).sum(),
                    attribute_sets: self.rib.attribute_sets(),
                    converged: self.converged,
                    deferring: self.rib.deferring(),
                });
            }
        }
        ControlFlow::Continue(())
    }

    /// Sends everything pending: outbound UPDATEs, FIB changes, journal.
    pub(super) fn flush(&mut self) {
        self.flush_slice(usize::MAX);
    }

    /// Flushes in slices of [`FLUSH_SLICE`] prefixes until nothing is
    /// pending or a command waits; what is left goes out on a later turn
    /// of the run loop, after the command.
    pub(super) fn flush_until_command(&mut self, commands: &mpsc::UnboundedReceiver<Command>) {
        loop {
            self.flush_slice(FLUSH_SLICE);
            if !self.rib.has_pending() || !commands.is_empty() {
                break;
            }
        }
    }

    /// [`SpeakerTask::flush`] for at most `max` changed prefixes.
    pub(super) fn flush_slice(&mut self, max: usize) {
        // Prefix counts may move with anything that flushes.
        self.counters_moved = true;
        let out = self.rib.flush_some(max);
        self.dispatch(out);
        // Taken whether or not the FIB listens, so the set never grows
        // without bound on a speaker without a FIB (a route reflector).
        let changed = self.rib.take_best_changes();
        let now = SystemTime::now();
        let mut fib_changes = Vec::new();
        for prefix in changed {
            let next_hops = self.rib.fib_next_hops(&prefix);
            let best = self.rib.best(&prefix).map(|p| BestPath {
                from: self.rib.peer_address(p),
                path_id: p.path_id,
                attrs: p.attrs.clone(),
                next_hops: next_hops.clone().unwrap_or_default(),
            });
            self.journal_batch
                .push((now, WatchEventKind::BestPath { prefix, best }));
            if self.fib.is_some() {
                fib_changes.push(FibChange { prefix, next_hops });
            }
        }
        if let Some(fib) = &self.fib
            && !fib_changes.is_empty()
            && fib.send(FibEvent::Changes(fib_changes)).is_err()
        {
            self.fib = None;
        }
        self.journal.record(std::mem::take(&mut self.journal_batch));
    }

    pub(super) fn dispatch(&self, mut out: crate::rib::Outbound) {
        // Freeing takes the owner long enough to hold API reads up.
        let garbage = std::mem::take(&mut out.garbage);
        if !garbage.is_empty() {
            tokio::task::spawn_blocking(move || drop(garbage));
        }
        for (id, msgs) in out.messages {
            if let Some(slot) = self.peers.get(&id) {
                let _ = slot.handle.commands.send(PeerCommand::Send {
                    session: slot.session,
                    messages: msgs,
                });
            }
        }
    }
}

/// Sleeps until a deadline; forever without one.
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
