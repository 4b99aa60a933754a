//! The speaker's state and decisions, without IO: the RIB, the peer table,
//! the configuration and the graceful restart timers (as deadlines of an
//! injected [`Clock`]). It takes one [`Input`] at a time and leaves what is
//! to be done in [`Output`]s, which the task (`task`) carries out and a
//! replay (`replay`) writes down. The same inputs in the same order give
//! the same outputs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::clock::Clock;
use super::config::{NeighborConfig, RestartState, SpeakerConfig, rib_config};
use super::handle::{PeerControl, SpeakerError};
use super::view::FibEvent;
use crate::fsm::{DownReason, Negotiated, State};
use crate::journal::{BestPath, WatchEventKind};
use crate::rib::{Attrs, FibChange, PeerId, Rib};
use crate::session::{PeerCommand, PeerConfig, PeerStats};
use crate::wire::{AfiSafi, Update};

/// What a peer task reports, as the core takes it: the socket-side parts
/// (the inbound credit) stay with the task, and what the core would
/// otherwise read from the system (our link-local address) comes along.
#[derive(Debug)]
pub(crate) enum PeerInput {
    /// The machine changed state.
    State(State),
    /// The session is Established.
    Up {
        /// The session's number, to tag what is sent on it.
        session: u64,
        /// What was negotiated.
        negotiated: Box<Negotiated>,
        /// Our end of the connection.
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
        /// Our link-local address on the link shared with the peer.
        link_local: Option<Ipv6Addr>,
    },
    /// The session or attempt ended.
    Down {
        /// Why.
        reason: DownReason,
        /// Whether it had been Established.
        established: bool,
    },
    /// An UPDATE.
    Update {
        /// The message.
        update: Update,
        /// RFC 7606: its routes are treated as withdrawn.
        treat_as_withdraw: bool,
    },
    /// The peer asked for our routes of a family again.
    RouteRefresh(AfiSafi),
    /// The peer task ended.
    Stopped,
    /// The peer task panicked (what it said).
    Crashed(String),
}

/// Everything that changes the core's state. Read-only queries are not
/// inputs: they change nothing.
#[derive(Debug)]
pub(crate) enum Input {
    /// An event of a peer task.
    Peer(PeerId, PeerInput),
    /// A new configuration (listeners already rebound by the task).
    Configure(Box<SpeakerConfig>),
    /// An operator's action on a peer.
    Control(String, PeerControl),
    /// A next hop became reachable or unreachable.
    NextHopReachable(IpAddr, bool),
    /// BFD says whether the neighbour at an address is alive.
    Liveness(IpAddr, bool),
    /// A FIB subscriber arrived (replacing any other).
    SubscribeFib,
    /// The FIB subscriber went away.
    FibGone,
    /// A connection was accepted from this address.
    Accept(IpAddr),
    /// A graceful restart deadline passed.
    Timers,
    /// Flush at most this many changed prefixes. The task slices flushes
    /// by what else waits, so the slicing is an input: it shapes how the
    /// outbound UPDATEs are packed.
    Flush(usize),
    /// A batch of peer events is over: bookkeeping that waits for a
    /// batch's end (End-of-RIB sweeps, end of deferral, convergence).
    EndOfBatch,
    /// The speaker stops: every session ends.
    Shutdown,
}

/// What an input asks the task to do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Start a peer task.
    StartPeer {
        /// Its number.
        id: PeerId,
        /// Its settings.
        config: PeerConfig,
        /// The counters it keeps (and the peer table reads).
        stats: Arc<PeerStats>,
    },
    /// Give a peer task a command (never [`PeerCommand::Incoming`]).
    Peer(PeerId, PeerCommand),
    /// Tell the FIB subscriber.
    Fib(FibEvent),
    /// Journal events.
    Journal(Vec<(SystemTime, WatchEventKind)>),
    /// Attribute sets to free, off the task.
    Garbage(Vec<Arc<Attrs>>),
    /// A peer task is gone by itself (it panicked): forget its handle.
    Forget(PeerId),
}

/// What an input answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Nothing to say.
    Done,
    /// An operator's action was carried out, or why not.
    Control(Result<(), SpeakerError>),
    /// The peer an accepted connection goes to (`None`: close it).
    Accept(Option<PeerId>),
}

/// One peer of the table.
pub(crate) struct PeerSlot {
    pub(crate) config: NeighborConfig,
    pub(crate) address: IpAddr,
    pub(crate) dynamic: bool,
    pub(crate) stats: Arc<PeerStats>,
    pub(crate) state: State,
    pub(crate) since: SystemTime,
    pub(crate) last_error: Option<String>,
    pub(crate) negotiated: Option<Box<Negotiated>>,
    pub(crate) local: Option<SocketAddr>,
    /// In the RIB (Established and announced there).
    pub(crate) in_rib: bool,
    /// The peer task's number for the current session.
    pub(crate) session: u64,
    /// Families whose prefix limit (or warning threshold) this session
    /// already reported, so each is logged once per session.
    pub(crate) limit_warned: Vec<(AfiSafi, bool)>,
    /// Prefixes in this session's UPDATEs treated as withdrawn (RFC 7606),
    /// per family (IPv4, IPv6), for prefix limits with `force`.
    pub(crate) treated_as_withdrawn: [u64; 2],
    /// Disabled through the API.
    pub(crate) disabled: bool,
    /// Held down because BFD is not Up (a strict [`super::BfdLink`]).
    pub(crate) bfd_held: bool,
}

/// The speaker's state.
pub(crate) struct Core {
    pub(crate) clock: Clock,
    pub(crate) rib: Rib,
    pub(crate) config: SpeakerConfig,
    pub(crate) peers: HashMap<PeerId, PeerSlot>,
    /// Never reused; `u32::MAX` is the RIB's mark of our own paths, four
    /// billion peers away.
    pub(crate) next_id: PeerId,
    /// Someone listens for best-path changes (the route-sync side).
    pub(crate) fib: bool,
    /// What we know of the previous run.
    pub(crate) restart: RestartState,
    /// While route selection is deferred after our restart, its latest end.
    pub(crate) deferral_until: Option<tokio::time::Instant>,
    /// Every configured peer has sent its whole table once (the FIB may now
    /// remove what nobody announced again).
    pub(crate) converged: bool,
    /// Peers whose stale routes we keep (graceful restart helper), and when
    /// they go if the peer neither returns nor sends End-of-RIB.
    pub(crate) stale_timers: HashMap<PeerId, tokio::time::Instant>,
    /// Peers whose stale routes turn long-lived stale when their restart
    /// timer runs out: the families and how long they then stay.
    pub(crate) pending_llgr: HashMap<PeerId, (Vec<AfiSafi>, Duration)>,
    /// Events of the current batch, handed to the journal on flush.
    pub(crate) journal_batch: Vec<(SystemTime, WatchEventKind)>,
    /// A peer was added, removed or changed state since the table was last
    /// published: publish at once.
    pub(crate) peers_changed: bool,
    /// Counters moved since: publish within the refresh interval.
    pub(crate) counters_moved: bool,
    /// What the inputs so far ask the task to do.
    pub(crate) out: Vec<Output>,
    /// ROUTE-REFRESH requests answered, and those merged and waiting.
    pub(crate) refreshes: super::refresh::Refreshes,
    /// Connections refused (unknown address, dynamic neighbour limit),
    /// counted and logged at a bounded rate.
    pub(crate) refused: Refused,
    /// Neighbour addresses whose BFD session is Up, as last told.
    pub(crate) bfd_up: std::collections::HashSet<IpAddr>,
}

/// Connections refused: a count, and a log line at most every
/// [`Refused::LOG_EVERY`] with how many were refused since the last.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    /// Refused since the start.
    pub(crate) total: u64,
    since_log: u64,
    logged: Option<tokio::time::Instant>,
}

impl Refused {
    /// The shortest time between two log lines.
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// One more refused connection, from `ip`, because `why`.
    pub(crate) fn note(&mut self, now: tokio::time::Instant, ip: IpAddr, why: &str) {
        self.total += 1;
        self.since_log += 1;
        if self.logged.is_none_or(|t| now >= t + Self::LOG_EVERY) {
            tracing::info!(peer = %ip, refused = self.since_log, "connection refused: {why} (one line per 10 s at most; `refused` counts them since the last)");
            self.logged = Some(now);
            self.since_log = 0;
        }
    }
}

impl Core {
    /// A speaker's state before its configuration: the global settings
    /// only (neighbours, listeners and routes come with the first
    /// [`Input::Configure`]), and selection deferred after a graceful
    /// restart.
    pub(crate) fn new(config: &SpeakerConfig, restart: RestartState, clock: Clock) -> Core {
        let mut core = Core {
            rib: Rib::new(rib_config(config)),
            config: SpeakerConfig {
                neighbors: Vec::new(),
                listen: Vec::new(),
                originate: Vec::new(),
                ..config.clone()
            },
            peers: HashMap::new(),
            next_id: 1,
            fib: false,
            restart,
            deferral_until: None,
            converged: false,
            stale_timers: HashMap::new(),
            pending_llgr: HashMap::new(),
            journal_batch: Vec::new(),
            peers_changed: true,
            counters_moved: false,
            out: Vec::new(),
            refreshes: Default::default(),
            refused: Refused::default(),
            bfd_up: Default::default(),
            clock,
        };
        core.defer_after_restart();
        core
    }

    /// Takes one input.
    pub(crate) fn input(&mut self, input: Input) -> Reply {
        match input {
            Input::Peer(id, ev) => {
                self.counters_moved = true;
                self.event(id, ev);
            }
            Input::Configure(config) => self.configure(*config),
            Input::Control(peer, what) => return Reply::Control(self.control(&peer, what)),
            Input::NextHopReachable(nh, ok) => self.rib.set_next_hop_reachable(nh, ok),
            Input::Liveness(address, up) => self.liveness(address, up),
            Input::SubscribeFib => self.subscribe_fib(),
            Input::FibGone => self.fib = false,
            Input::Accept(remote) => return Reply::Accept(self.accept(remote)),
            Input::Timers => {
                self.expire_timers();
                self.answer_due_refreshes();
            }
            Input::Flush(max) => self.flush_slice(max),
            Input::EndOfBatch => self.after_events(),
            Input::Shutdown => self.shut_down(),
        }
        Reply::Done
    }

    /// What the inputs so far ask for, journal events included.
    pub(crate) fn take_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        // Peers added or removed outside a flush (configuration).
        if !self.journal_batch.is_empty() {
            let batch = std::mem::take(&mut self.journal_batch);
            self.out.push(Output::Journal(batch));
        }
        self.out.drain(..)
    }

    /// A command to a peer task.
    pub(crate) fn tell_peer(&mut self, id: PeerId, command: PeerCommand) {
        self.out.push(Output::Peer(id, command));
    }

    /// A new FIB subscriber hears the whole table (nothing while selection
    /// is deferred: everything comes when the deferral ends).
    fn subscribe_fib(&mut self) {
        let all = self.rib.fib_table(None);
        // Changes still pending are sent again on the next flush: harmless,
        // and the journal needs them.
        self.out.push(Output::Fib(FibEvent::Changes(all)));
        if self.converged {
            self.out.push(Output::Fib(FibEvent::Converged));
        }
        self.fib = true;
    }

    /// Sends everything pending: outbound UPDATEs, FIB changes, journal.
    pub(crate) fn flush(&mut self) {
        self.flush_slice(usize::MAX);
    }

    /// [`Core::flush`] for at most `max` changed prefixes.
    pub(crate) fn flush_slice(&mut self, max: usize) {
        // Prefix counts may move with anything that flushes.
        self.counters_moved = true;
        let out = self.rib.flush_some(max);
        self.dispatch(out);
        // Taken whether or not the FIB listens, so the set never grows
        // without bound on a speaker without a FIB (a route reflector).
        let changed = self.rib.take_best_changes();
        let now = self.clock.wall();
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
            if self.fib {
                fib_changes.push(FibChange { prefix, next_hops });
            }
        }
        if !fib_changes.is_empty() {
            self.out.push(Output::Fib(FibEvent::Changes(fib_changes)));
        }
        if !self.journal_batch.is_empty() {
            let batch = std::mem::take(&mut self.journal_batch);
            self.out.push(Output::Journal(batch));
        }
    }

    /// Hands what the RIB computed to the peers it is for.
    pub(crate) fn dispatch(&mut self, mut out: crate::rib::Outbound) {
        // Freeing takes the owner long enough to hold API reads up.
        let garbage = std::mem::take(&mut out.garbage);
        if !garbage.is_empty() {
            self.out.push(Output::Garbage(garbage));
        }
        for (id, msgs) in out.messages {
            if let Some(slot) = self.peers.get(&id) {
                let session = slot.session;
                self.tell_peer(
                    id,
                    PeerCommand::Send {
                        session,
                        messages: msgs,
                    },
                );
            }
        }
    }
}
