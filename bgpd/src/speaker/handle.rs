//! The [`Speaker`] handle: starts the task and turns calls into commands.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{RestartState, SpeakerConfig};
use super::record::{RecordError, Recorder};
use super::task::{Channels, SpeakerTask};
use super::view::{
    AdjRibSide, FibEvent, FibQuery, PeerStatus, RouteExplanation, RouteFilter, RouteView,
    RoutesPage, SpeakerSummary,
};
use crate::journal::{self, Cursor, Journal, WatchError, WatchStream};
use crate::rib::FibChange;

/// Errors the speaker reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The speaker task has ended.
    #[error("the speaker has stopped")]
    Stopped,
    /// No peer has this address or name.
    #[error("no peer {0:?} (give its address or its BGPPeer name)")]
    NoSuchPeer(String),
    /// A name that several (dynamic) peers share.
    #[error("{0:?} names {1} peers; give the address of one")]
    Ambiguous(String, usize),
    /// The operation needs an Established session.
    #[error("the session with {0} is not Established")]
    NotEstablished(IpAddr),
    /// The peer is disabled; enable it first.
    #[error("{0} is disabled; enable it first")]
    Disabled(IpAddr),
    /// Peers from a listen range come and go with their sessions.
    #[error(
        "{0} is a dynamic peer (from a listen range); it cannot be disabled on its own, only its range removed"
    )]
    Dynamic(IpAddr),
    /// Soft reset inbound needs route refresh, or import rules (whose kept
    /// Adj-RIB-In makes it local).
    #[error(
        "{0} supports no route refresh, so it cannot be asked for its routes again; use a hard reset"
    )]
    NoRouteRefresh(IpAddr),
}

/// How to reset a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResetKind {
    /// Cease / Administrative Reset; the session comes back by itself.
    Hard,
    /// Ask the peer to send its routes again (route refresh).
    SoftIn,
    /// Send the peer our routes again.
    SoftOut,
    /// Both soft directions.
    SoftBoth,
}

/// An operator's action on one peer.
#[derive(Debug, Clone)]
pub(crate) enum PeerControl {
    Reset(ResetKind),
    Disable(Option<String>),
    Enable,
}

pub(super) enum Command {
    Configure(
        Box<SpeakerConfig>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    Routes(RouteFilter, usize, oneshot::Sender<RoutesPage>),
    AdjRib(
        String,
        AdjRibSide,
        usize,
        oneshot::Sender<Result<RoutesPage, SpeakerError>>,
    ),
    Summary(oneshot::Sender<SpeakerSummary>),
    Explain(IpNet, oneshot::Sender<Option<RouteExplanation>>),
    Control(
        String,
        PeerControl,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    SubscribeFib(mpsc::UnboundedSender<FibEvent>),
    FibRoutes(FibQuery, oneshot::Sender<Vec<FibChange>>),
    NextHopReachable(IpAddr, bool),
    Liveness(IpAddr, bool),
    Worked(std::time::Duration),
    Shutdown(oneshot::Sender<()>),
}

/// The handle to a running speaker.
#[derive(Debug, Clone)]
pub struct Speaker {
    commands: mpsc::UnboundedSender<Command>,
    journal: Journal,
    /// The peer table as the speaker task last published it.
    peers: watch::Receiver<Arc<Vec<PeerStatus>>>,
}

impl Speaker {
    /// Starts a speaker with a configuration (listeners bound before returning).
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        Self::start_with(config, RestartState::default()).await
    }

    /// Starts a speaker that knows whether it restarted: after a restart with
    /// graceful restart enabled it advertises the R bit and defers route
    /// selection until its peers sent their tables (RFC 4724 §4.1).
    pub async fn start_with(
        config: SpeakerConfig,
        restart: RestartState,
    ) -> Result<Speaker, SpeakerError> {
        Self::start_inner(config, restart, None).await
    }

    /// Starts a speaker that records its inputs into `dir` (`config.json`,
    /// `events.jsonl`), for [`super::replay`].
    pub async fn start_recording(
        config: SpeakerConfig,
        restart: RestartState,
        dir: &Path,
    ) -> Result<Speaker, RecordError> {
        let recorder = Recorder::create(dir, &config, restart)?;
        Self::start_inner(config, restart, Some(recorder))
            .await
            .map_err(RecordError::Start)
    }

    async fn start_inner(
        config: SpeakerConfig,
        restart: RestartState,
        recorder: Option<Recorder>,
    ) -> Result<Speaker, SpeakerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (acc_tx, acc_rx) = mpsc::unbounded_channel();
        let journal = Journal::start(journal::DEFAULT_CAPACITY);
        let (peers_tx, peers_rx) = watch::channel(Arc::new(Vec::new()));
        let task = SpeakerTask::start(
            config,
            restart,
            Channels {
                events_tx: ev_tx,
                accepted_tx: acc_tx,
                journal: journal.clone(),
                peers_tx,
            },
            recorder,
        )
        .await?;
        tokio::spawn(task.run(rx, ev_rx, acc_rx));
        Ok(Speaker {
            commands: tx,
            journal,
            peers: peers_rx,
        })
    }

    /// Watches peer state and best-path changes: the events after `after`
    /// that are still buffered, then live ones; with no cursor, live ones only.
    /// Served by the journal's own task, never by the RIB owner.
    pub async fn watch(&self, after: Option<Cursor>) -> Result<WatchStream, WatchError> {
        self.journal.subscribe(after).await
    }

    /// Sends a command that answers on a oneshot and waits for the answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Applies a new configuration; only peers whose settings changed are reset.
    pub async fn configure(&self, config: SpeakerConfig) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Configure(Box::new(config), tx))
            .await?
    }

    /// The status of every peer.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        if self.commands.is_closed() {
            return Err(SpeakerError::Stopped);
        }
        Ok(self.peers.borrow().as_ref().clone())
    }

    /// The peer table as it changes: published at once when a peer is added,
    /// removed or changes state; for counters at most every 100 ms while
    /// routes flow and every second on quiet sessions. A watcher wakes for
    /// every state change, never once per UPDATE.
    pub fn subscribe_peers(&self) -> watch::Receiver<Arc<Vec<PeerStatus>>> {
        self.peers.clone()
    }

    /// Routes matching a filter, sorted. Read a page at a time
    /// ([`Speaker::routes_page`]): the RIB owner routes between pages.
    pub async fn routes(&self, filter: RouteFilter) -> Result<Vec<RouteView>, SpeakerError> {
        let mut out = Vec::new();
        let mut from = Some(0);
        while let Some(f) = from {
            let page = self.routes_page(filter.clone(), f).await?;
            out.extend(page.routes);
            from = page.next;
        }
        out.sort_by_key(|r| r.prefix);
        Ok(out)
    }

    /// One page of the routes matching a filter, the first at `from = 0`,
    /// each next at the page's `next` ([`RoutesPage`]).
    pub async fn routes_page(
        &self,
        filter: RouteFilter,
        from: usize,
    ) -> Result<RoutesPage, SpeakerError> {
        self.ask(|tx| Command::Routes(filter, from, tx)).await
    }

    /// One peer's Adj-RIB-In (what it sent us, as it entered the decision)
    /// or Adj-RIB-Out (what we send it), one path per prefix and path ID,
    /// sorted; read a page at a time ([`Speaker::adj_rib_page`]).
    pub async fn adj_rib(
        &self,
        peer: &str,
        side: AdjRibSide,
    ) -> Result<Vec<RouteView>, SpeakerError> {
        let mut out: Vec<RouteView> = Vec::new();
        let mut from = Some(0);
        while let Some(f) = from {
            let page = self.adj_rib_page(peer, side, f).await?;
            out.extend(page.routes);
            from = page.next;
        }
        // A prefix with accepted and rejected paths comes in two pages.
        out.sort_by_key(|r| r.prefix);
        out.dedup_by(|later, first| {
            let same = later.prefix == first.prefix;
            if same {
                first.paths.append(&mut later.paths);
            }
            same
        });
        Ok(out)
    }

    /// One page of a peer's Adj-RIB-In or -Out ([`Speaker::adj_rib`]), the
    /// first at `from = 0`, each next at the page's `next`.
    pub async fn adj_rib_page(
        &self,
        peer: &str,
        side: AdjRibSide,
        from: usize,
    ) -> Result<RoutesPage, SpeakerError> {
        self.ask(|tx| Command::AdjRib(peer.to_string(), side, from, tx))
            .await?
    }

    async fn control(&self, peer: &str, what: PeerControl) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Control(peer.to_string(), what, tx))
            .await?
    }

    /// Resets a peer's session (`peer`: its address, or its name when that
    /// names one peer).
    pub async fn reset_peer(&self, peer: &str, kind: ResetKind) -> Result<(), SpeakerError> {
        self.control(peer, PeerControl::Reset(kind)).await
    }

    /// Takes a peer's session down (Cease / Administrative Shutdown with an
    /// optional RFC 8203 message) and keeps it down until enabled again. A
    /// configuration reload does not enable it.
    pub async fn disable_peer(
        &self,
        peer: &str,
        message: Option<String>,
    ) -> Result<(), SpeakerError> {
        self.control(peer, PeerControl::Disable(message)).await
    }

    /// Lets a disabled peer connect again.
    pub async fn enable_peer(&self, peer: &str) -> Result<(), SpeakerError> {
        self.control(peer, PeerControl::Enable).await
    }

    /// Explains a prefix (exactly this prefix): `None` if the RIB has no
    /// path for it.
    pub async fn explain(&self, prefix: IpNet) -> Result<Option<RouteExplanation>, SpeakerError> {
        self.ask(|tx| Command::Explain(prefix.trunc(), tx)).await
    }

    /// Counts for status and metrics.
    pub async fn summary(&self) -> Result<SpeakerSummary, SpeakerError> {
        self.ask(Command::Summary).await
    }

    /// Receives, in batches, every change of the best paths the forwarding
    /// table must follow; the first batch holds the whole current table, and
    /// [`FibEvent::Converged`] follows once the initial convergence is over.
    /// One subscriber at a time.
    pub fn subscribe_fib(&self) -> Result<mpsc::UnboundedReceiver<FibEvent>, SpeakerError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.commands
            .send(Command::SubscribeFib(tx))
            .map_err(|_| SpeakerError::Stopped)?;
        Ok(rx)
    }

    /// Where the FIB forwards some prefixes now, as [`FibEvent::Changes`]
    /// would say it: the FIB side asks instead of keeping its own copy of
    /// a full table. Nothing while route selection is deferred. The answer
    /// may run ahead of changes still queued for the subscriber, which
    /// then repeat or overtake it: the last word is always the queue's.
    pub async fn fib_routes(&self, query: FibQuery) -> Result<Vec<FibChange>, SpeakerError> {
        self.ask(|tx| Command::FibRoutes(query, tx)).await
    }

    /// Tells the decision process whether a next hop can be reached (from the
    /// kernel's view); paths through unreachable next hops are never best.
    pub fn set_next_hop_reachable(
        &self,
        next_hop: IpAddr,
        reachable: bool,
    ) -> Result<(), SpeakerError> {
        self.commands
            .send(Command::NextHopReachable(next_hop, reachable))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Tells the speaker what BFD says of the neighbour at `address`: a
    /// neighbour with [`NeighborConfig::bfd`](super::NeighborConfig) whose
    /// BFD goes down has its session ended at once (Cease, BFD Down, RFC
    /// 9384; as a Hard Reset where RFC 8538 is in use, so its routes go);
    /// a strict one stays down until BFD is Up.
    pub fn set_liveness(&self, address: IpAddr, up: bool) -> Result<(), SpeakerError> {
        self.commands
            .send(Command::Liveness(address, up))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Tells the speaker that routing work took `took` outside it (the
    /// FIB's rounds with the kernel), so that listings are paced while that
    /// goes on as while the speaker itself is busy.
    pub fn routing_work(&self, took: std::time::Duration) {
        let _ = self.commands.send(Command::Worked(took));
    }

    /// Stops every session (Cease / Administrative Shutdown) and the speaker.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
