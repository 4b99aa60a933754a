//! The speaker: one task that owns the RIB and the peer registry, fed by the
//! peer tasks and the listeners, driven by a typed handle.
//!
//! ```text
//!  Speaker (handle) ──Command──► speaker task ◄──(id, PeerEvent)── peer tasks
//!  listeners ──Accepted(stream)──►    │  owns Rib, peers, config
//!                                     └──PeerCommand::Send──► peer tasks
//! ```
//!
//! No lock guards routing state: the task owns it, and queries (peers, routes)
//! are answered by the task itself between events.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::fsm::{DownReason, FsmConfig, Negotiated, State};
use crate::journal::{self, BestPath, Cursor, Journal, WatchError, WatchEventKind, WatchStream};
use crate::policy::Policy;
use crate::rib::{
    AdjInEntry, Attrs, DecisionOptions, FibChange, PeerId, PeerInfo, PrefixCounts, Rib, RibConfig,
};
use crate::session::{
    self, BGP_PORT, PeerCommand, PeerConfig, PeerEvent, PeerHandle, TransportOptions,
};
use crate::wire::AfiSafi;
use crate::wire::attr::{Community, LargeCommunity, Origin};
use crate::wire::capability::{Capability, GrFamily, GracefulRestart, LlgrFamily};
use crate::wire::error::subcode;

/// Who a neighbour entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NeighborAddress {
    /// One peer at this address.
    Address(IpAddr),
    /// Any peer connecting from this range (dynamic neighbours); passive.
    Range(IpNet),
}

impl fmt::Display for NeighborAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeighborAddress::Address(a) => write!(f, "{a}"),
            NeighborAddress::Range(r) => write!(f, "{r}"),
        }
    }
}

/// One configured neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    /// A name for logs and status (the configuration object's name).
    pub name: String,
    /// Address or range.
    pub address: NeighborAddress,
    /// TCP port of the peer.
    pub port: u16,
    /// The peer's ASN.
    pub asn: u32,
    /// Hold time to propose (0 or ≥ 3).
    pub hold_time: u16,
    /// Keepalive interval; default a third of the hold time.
    pub keepalive_time: Option<u16>,
    /// Only accept connections.
    pub passive: bool,
    /// eBGP multihop: TTL for an external peer that is not directly connected.
    pub ebgp_multihop: Option<u8>,
    /// GTSM: accept packets that crossed at most this many hops (RFC 5082).
    pub ttl_security: Option<u8>,
    /// Source address for outgoing connections.
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 password.
    pub password: Option<String>,
    /// Time between connection attempts.
    pub connect_retry: Duration,
    /// Families to offer.
    pub families: Vec<AfiSafi>,
    /// Set ourselves as next hop towards an internal peer.
    pub next_hop_self: bool,
    /// Reflect routes to this internal peer (we are its route reflector).
    pub route_reflector_client: bool,
    /// Limits on the prefixes accepted from the peer, per family.
    pub max_prefixes: Vec<MaxPrefixes>,
    /// ADD-PATH (RFC 7911) in the families offered.
    pub add_paths: AddPaths,
    /// Runs on what the peer sends. Changing it keeps the session.
    pub import_policy: Option<std::sync::Arc<Policy>>,
    /// Runs on what the peer is sent; routes from one external peer reach
    /// another only when a rule of it accepts them. Changing it keeps the
    /// session.
    pub export_policy: Option<std::sync::Arc<Policy>>,
}

impl NeighborConfig {
    /// Whether two configurations differ in more than their policies (which
    /// apply without a session reset).
    fn differs_beyond_policies(&self, other: &NeighborConfig) -> bool {
        let strip = |n: &NeighborConfig| NeighborConfig {
            import_policy: None,
            export_policy: None,
            ..n.clone()
        };
        strip(self) != strip(other)
    }
}

/// ADD-PATH settings of a neighbour (RFC 7911).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddPaths {
    /// Accept several paths per prefix from the peer.
    pub receive: bool,
    /// Send up to this many paths per prefix (`usize::MAX`: all of them)
    /// where the peer accepts several.
    pub send: Option<usize>,
}

/// A limit on the prefixes accepted from a peer in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefixes {
    /// The family.
    pub family: AfiSafi,
    /// The most accepted prefixes.
    pub limit: u64,
    /// Warn once the count reaches this percentage of the limit.
    pub warning_percent: u8,
    /// What to do beyond the limit.
    pub action: MaxPrefixesAction,
}

/// What happens when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixesAction {
    /// Log a warning and keep the session.
    Log,
    /// End the session with Cease / Maximum Number of Prefixes Reached and
    /// start it again after this long.
    Restart(Duration),
}

impl NeighborConfig {
    /// A neighbour with the usual defaults: hold time 90 s, connect retry 5 s,
    /// IPv4 and IPv6 unicast.
    pub fn new(name: impl Into<String>, address: NeighborAddress, asn: u32) -> Self {
        NeighborConfig {
            name: name.into(),
            address,
            port: BGP_PORT,
            asn,
            hold_time: 90,
            keepalive_time: None,
            passive: false,
            ebgp_multihop: None,
            ttl_security: None,
            source_address: None,
            password: None,
            connect_retry: Duration::from_secs(5),
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            next_hop_self: false,
            route_reflector_client: false,
            max_prefixes: Vec::new(),
            add_paths: AddPaths::default(),
            import_policy: None,
            export_policy: None,
        }
    }
}

/// The whole speaker configuration; [`Speaker::configure`] applies a new one
/// and resets only what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our ASN.
    pub asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to listen. Empty: do not listen.
    pub listen: Vec<SocketAddr>,
    /// Neighbours.
    pub neighbors: Vec<NeighborConfig>,
    /// Routes we originate.
    pub originate: Vec<LocalRoute>,
    /// An IPv4 address to use as next hop for IPv4 routes on IPv6 sessions.
    pub local_ipv4: Option<Ipv4Addr>,
    /// An IPv6 address to use as next hop for IPv6 routes on IPv4 sessions.
    pub local_ipv6: Option<Ipv6Addr>,
    /// Decision options.
    pub decision: DecisionOptions,
    /// Graceful restart, both roles.
    pub graceful_restart: GracefulRestartConfig,
    /// Route reflection cluster ID; default the router ID.
    pub cluster_id: Option<Ipv4Addr>,
    /// The most next hops of a route installed in the FIB (ECMP); default 8.
    pub maximum_paths: usize,
}

/// A route this speaker originates (ORIGIN IGP, our next hop), with the
/// attributes every peer is sent it with; per-peer differences are export
/// policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalRoute {
    /// The prefix (host bits are cleared).
    pub prefix: IpNet,
    /// Communities to attach.
    pub communities: Vec<Community>,
    /// Large communities to attach.
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF (sent to internal peers only).
    pub local_pref: Option<u32>,
}

impl From<IpNet> for LocalRoute {
    fn from(prefix: IpNet) -> Self {
        LocalRoute {
            prefix,
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
        }
    }
}

impl LocalRoute {
    /// The path attributes of the route as the RIB holds it.
    fn attrs(&self) -> Attrs {
        let mut communities = self.communities.clone();
        communities.sort();
        communities.dedup();
        let mut large_communities = self.large_communities.clone();
        large_communities.sort();
        large_communities.dedup();
        Attrs {
            origin: Some(Origin::Igp),
            local_pref: self.local_pref,
            communities,
            large_communities,
            ..Attrs::default()
        }
    }
}

/// Graceful restart settings (RFC 4724).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Advertise the capability, and keep the routes of peers that advertise
    /// it while they restart (the helper role).
    pub enabled: bool,
    /// The Restart Time we advertise: how long peers keep our routes after
    /// our session drops, waiting for us to come back (at most 4095 s).
    pub restart_time: u16,
    /// How long the stale routes of a peer that came back wait for its
    /// End-of-RIB before they go.
    pub stale_routes_time: Duration,
    /// After our own restart, the longest route selection waits for every
    /// peer's End-of-RIB; it also bounds the initial convergence the FIB
    /// waits for before it removes routes nobody announced again.
    pub selection_deferral: Duration,
    /// Long-lived graceful restart (RFC 9494): how long a restarting peer's
    /// routes stay, as least preferred, after its restart time (at most this
    /// and what the peer asks for). Zero: LLGR is not offered.
    pub long_lived_stale_time: Duration,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: true,
            restart_time: 120,
            stale_routes_time: Duration::from_secs(360),
            selection_deferral: Duration::from_secs(120),
            long_lived_stale_time: Duration::ZERO,
        }
    }
}

/// What the speaker is told at start about the previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartState {
    /// This is a restart: a previous instance ran and its forwarding state is
    /// known (the R bit is advertised and route selection is deferred until
    /// the peers sent their tables).
    pub restarted: bool,
    /// The forwarding state survived the restart (the kernel kept our
    /// routes): the F bit of every family.
    pub forwarding_preserved: bool,
}

impl SpeakerConfig {
    /// A speaker listening dual-stack on port 179, with no neighbours yet.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            listen: vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), BGP_PORT)],
            neighbors: Vec::new(),
            originate: Vec::new(),
            local_ipv4: None,
            local_ipv6: None,
            decision: DecisionOptions::default(),
            graceful_restart: GracefulRestartConfig::default(),
            cluster_id: None,
            maximum_paths: 8,
        }
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A peer's status, for the API and `petrel peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The configuration name.
    pub name: String,
    /// The peer's address.
    pub address: IpAddr,
    /// Configured ASN.
    pub asn: u32,
    /// Session state.
    pub state: State,
    /// When the state last changed.
    pub since: SystemTime,
    /// Whether it was created from a listen range.
    pub dynamic: bool,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// Negotiated capabilities, by name, while Established.
    pub capabilities: Vec<String>,
    /// Negotiated hold time, while Established.
    pub hold_time: Option<u16>,
    /// The peer's BGP identifier, while Established.
    pub peer_router_id: Option<Ipv4Addr>,
    /// Our address on the session, while Established.
    pub local_address: Option<SocketAddr>,
    /// Prefix counts per family.
    pub prefixes: Vec<(AfiSafi, PrefixCounts)>,
    /// Messages received and sent.
    pub messages_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received, by type code (index 1 OPEN .. 5 ROUTE-REFRESH).
    pub received_by_type: [u64; 6],
    /// Messages sent, by type code.
    pub sent_by_type: [u64; 6],
    /// Times the session left Established.
    pub flaps: u64,
    /// Routes kept from the peer's previous session while it restarts
    /// (graceful restart helper), not yet announced again.
    pub stale_routes: usize,
    /// Disabled through the API: stays down until enabled.
    pub disabled: bool,
}

/// One path of a route, for the API and `petrel rib`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathView {
    /// Chosen by the decision process.
    pub best: bool,
    /// The peer it came from, or `None` for our own routes.
    pub from: Option<IpAddr>,
    /// ADD-PATH identifier.
    pub path_id: u32,
    /// The attributes.
    pub attrs: Attrs,
    /// Adj-RIB-In only: the path was rejected on import (AS loop, invalid,
    /// filtered); its attributes are those sent when the peer's import
    /// policy keeps them, else empty.
    pub rejected: bool,
}

/// Which side of a peer's RIB to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjRibSide {
    /// What the peer sent us.
    In,
    /// What we send the peer.
    Out,
}

/// A prefix and its paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// The prefix.
    pub prefix: IpNet,
    /// Paths, the best first.
    pub paths: Vec<PathView>,
}

/// Why a prefix's paths won or lost, and who is sent the best one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExplanation {
    /// The prefix.
    pub prefix: IpNet,
    /// Every candidate, best first.
    pub candidates: Vec<CandidateView>,
    /// Per Established peer: its address and name, and `None` if it is sent
    /// the best path, else why not.
    pub peers: Vec<(IpAddr, String, Option<String>)>,
}

/// One candidate path of an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateView {
    /// The path.
    pub path: PathView,
    /// Why it is not the best (`None` for the best).
    pub lost_because: Option<String>,
    /// It is in the multipath (ECMP) set installed in the FIB.
    pub multipath: bool,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeakerSummary {
    /// Prefixes in the Loc-RIB.
    pub prefixes: usize,
    /// Candidate paths over all prefixes.
    pub paths: usize,
    /// Distinct attribute sets stored.
    pub attribute_sets: usize,
    /// Every configured peer has sent its table once.
    pub converged: bool,
    /// Route selection is deferred after a restart.
    pub deferring: bool,
}

/// Which routes to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// Only this family.
    pub family: Option<AfiSafi>,
    /// Only this prefix, or the prefixes it contains when `longer` is set.
    pub prefix: Option<IpNet>,
    /// Include more-specific prefixes of `prefix`.
    pub longer: bool,
}

/// What the forwarding side hears from the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibEvent {
    /// Best-path changes, in order.
    Changes(Vec<FibChange>),
    /// The initial convergence is over: every configured peer is up and sent
    /// its table (End-of-RIB), or the selection deferral ran out. Routes not
    /// announced again by now are not coming back.
    Converged,
}

/// Which prefixes [`Speaker::fib_routes`] asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibQuery {
    /// These prefixes (each answered, `None` next hops if nothing to install).
    Prefixes(Vec<IpNet>),
    /// Every prefix the FIB forwards through one of these next hops.
    Via(Vec<IpAddr>),
}

/// An operator's action on one peer.
#[derive(Debug, Clone)]
enum PeerControl {
    Reset(ResetKind),
    Disable(Option<String>),
    Enable,
}

enum Command {
    Configure(
        Box<SpeakerConfig>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    Routes(RouteFilter, oneshot::Sender<Vec<RouteView>>),
    AdjRib(
        String,
        AdjRibSide,
        oneshot::Sender<Result<Vec<RouteView>, SpeakerError>>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (acc_tx, acc_rx) = mpsc::unbounded_channel();
        let journal = Journal::start(journal::DEFAULT_CAPACITY);
        let (peers_tx, peers_rx) = watch::channel(Arc::new(Vec::new()));
        let mut task = SpeakerTask {
            rib: Rib::new(rib_config(&config)),
            config: SpeakerConfig {
                neighbors: Vec::new(),
                listen: Vec::new(),
                originate: Vec::new(),
                ..config.clone()
            },
            peers: HashMap::new(),
            next_id: 1,
            events_tx: ev_tx,
            accepted_tx: acc_tx,
            listeners: Vec::new(),
            fib: None,
            restart,
            deferral_until: None,
            converged: false,
            stale_timers: HashMap::new(),
            pending_llgr: HashMap::new(),
            journal: journal.clone(),
            journal_batch: Vec::new(),
            peers_tx,
            peers_published: tokio::time::Instant::now(),
            peers_changed: true,
            counters_moved: false,
        };
        if restart.restarted && config.graceful_restart.enabled {
            task.rib.defer();
            task.deferral_until =
                Some(tokio::time::Instant::now() + config.graceful_restart.selection_deferral);
            tracing::info!(
                deferral = ?config.graceful_restart.selection_deferral,
                forwarding_preserved = restart.forwarding_preserved,
                "restarted: route selection deferred until the peers sent their tables"
            );
        }
        task.configure(config).await?;
        // With no configured peer there is nothing to wait for.
        task.after_events();
        task.publish_peers();
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

    /// Routes matching a filter.
    pub async fn routes(&self, filter: RouteFilter) -> Result<Vec<RouteView>, SpeakerError> {
        self.ask(|tx| Command::Routes(filter, tx)).await
    }

    /// One peer's Adj-RIB-In (what it sent us, as it entered the decision)
    /// or Adj-RIB-Out (what we send it), one path per prefix and path ID.
    pub async fn adj_rib(
        &self,
        peer: &str,
        side: AdjRibSide,
    ) -> Result<Vec<RouteView>, SpeakerError> {
        self.ask(|tx| Command::AdjRib(peer.to_string(), side, tx))
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

    /// Stops every session (Cease / Administrative Shutdown) and the speaker.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn rib_config(c: &SpeakerConfig) -> RibConfig {
    RibConfig {
        local_asn: c.asn,
        router_id: c.router_id,
        decision: c.decision,
        enforce_first_as: true,
        cluster_id: c.cluster_id.unwrap_or(c.router_id),
        maximum_paths: c.maximum_paths.max(1),
    }
}

struct PeerSlot {
    config: NeighborConfig,
    address: IpAddr,
    dynamic: bool,
    handle: PeerHandle,
    state: State,
    since: SystemTime,
    last_error: Option<String>,
    negotiated: Option<Box<Negotiated>>,
    local: Option<SocketAddr>,
    /// In the RIB (Established and announced there).
    in_rib: bool,
    /// The peer task's number for the current session.
    session: u64,
    /// Families whose prefix limit (or warning threshold) this session
    /// already reported, so each is logged once per session.
    limit_warned: Vec<(AfiSafi, bool)>,
    /// Disabled through the API.
    disabled: bool,
}

struct SpeakerTask {
    rib: Rib,
    config: SpeakerConfig,
    peers: HashMap<PeerId, PeerSlot>,
    /// Never reused; `u32::MAX` is the RIB's mark of our own paths, four
    /// billion peers away.
    next_id: PeerId,
    events_tx: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    accepted_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
    listeners: Vec<(SocketAddr, JoinHandle<()>, std::sync::Arc<TcpListener>)>,
    /// Where best-path changes go (the route-sync side), if anyone listens.
    fib: Option<mpsc::UnboundedSender<FibEvent>>,
    /// What we know of the previous run.
    restart: RestartState,
    /// While route selection is deferred after our restart, its latest end.
    deferral_until: Option<tokio::time::Instant>,
    /// Every configured peer has sent its whole table once (the FIB may now
    /// remove what nobody announced again).
    converged: bool,
    /// Peers whose stale routes we keep (graceful restart helper), and when
    /// they go if the peer neither returns nor sends End-of-RIB.
    stale_timers: HashMap<PeerId, tokio::time::Instant>,
    /// Peers whose stale routes turn long-lived stale when their restart
    /// timer runs out: the families and how long they then stay.
    pending_llgr: HashMap<PeerId, (Vec<AfiSafi>, Duration)>,
    /// Where peer and best-path events go for `WatchEvents`.
    journal: Journal,
    /// Events of the current batch, handed to the journal on flush.
    journal_batch: Vec<(SystemTime, WatchEventKind)>,
    /// The published peer table, read by the API and metrics without asking
    /// this task.
    peers_tx: watch::Sender<Arc<Vec<PeerStatus>>>,
    /// When the peer table was last published.
    peers_published: tokio::time::Instant,
    /// A peer was added, removed or changed state since: publish at once.
    peers_changed: bool,
    /// Peer events arrived since: counters moved, publish within
    /// [`PEERS_REFRESH`].
    counters_moved: bool,
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
    async fn run(
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
                _ = sleep_until_earliest(self.deferral_until, self.stale_timers.values().min().copied()) => {
                    let now = tokio::time::Instant::now();
                    if self.deferral_until.is_some_and(|t| t <= now) {
                        tracing::info!("selection deferral timer expired before every peer sent its table");
                        self.end_deferral();
                    }
                    let due: Vec<PeerId> = self.stale_timers.iter().filter(|(_, t)| **t <= now).map(|(id, _)| *id).collect();
                    for id in due {
                        self.stale_timers.remove(&id);
                        let peer = self.peers.get(&id).map(|p| p.address);
                        if let Some((families, stale_time)) = self.pending_llgr.remove(&id) {
                            let kept = self.rib.enter_long_lived_stale(id, &families);
                            if kept > 0 {
                                self.stale_timers.insert(id, now + stale_time);
                            }
                            tracing::info!(?peer, routes = kept, ?stale_time, "long-lived graceful restart: the peer's routes are now long-lived stale");
                            continue;
                        }
                        let n = self.rib.drop_stale(id, None);
                        tracing::info!(?peer, routes = n, "graceful restart: the peer's stale routes timed out");
                    }
                    self.flush();
                }
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

    fn explain(&mut self, prefix: &IpNet) -> Option<RouteExplanation> {
        let e = self.rib.explain(prefix)?;
        let candidates = e
            .candidates
            .into_iter()
            .map(|(p, step, multipath)| CandidateView {
                path: PathView {
                    best: step.is_none(),
                    from: self.rib.peer_address(&p),
                    path_id: p.path_id,
                    attrs: (*p.attrs).clone(),
                    rejected: false,
                },
                lost_because: step.map(|s| s.to_string()),
                multipath,
            })
            .collect();
        let peers = e
            .peers
            .into_iter()
            .filter_map(|(id, verdict)| {
                let slot = self.peers.get(&id)?;
                Some((
                    slot.address,
                    slot.config.name.clone(),
                    verdict.err().map(|n| n.to_string()),
                ))
            })
            .collect();
        Some(RouteExplanation {
            prefix: *prefix,
            candidates,
            peers,
        })
    }

    /// A peer's Adj-RIB-In or Adj-RIB-Out as route views (a path without
    /// attributes in the Adj-RIB-In was rejected on import).
    fn adj_rib(&self, peer: &str, side: AdjRibSide) -> Result<Vec<RouteView>, SpeakerError> {
        let id = self.find_peer(peer)?;
        let address = self.peers.get(&id).map(|p| p.address);
        let entries: Vec<AdjInEntry> = match side {
            AdjRibSide::In => self.rib.adj_rib_in(id),
            AdjRibSide::Out => self
                .rib
                .adj_rib_out(id)
                .into_iter()
                .map(|(prefix, path_id, a)| AdjInEntry {
                    prefix,
                    path_id,
                    attrs: Some(a),
                    rejected: false,
                })
                .collect(),
        };
        let mut out: Vec<RouteView> = Vec::new();
        for e in entries {
            let path = PathView {
                best: false,
                from: match side {
                    AdjRibSide::In => address,
                    AdjRibSide::Out => None,
                },
                path_id: e.path_id,
                rejected: e.rejected,
                attrs: e.attrs.map(|a| (*a).clone()).unwrap_or_default(),
            };
            match out.last_mut() {
                Some(r) if r.prefix == e.prefix => r.paths.push(path),
                _ => out.push(RouteView {
                    prefix: e.prefix,
                    paths: vec![path],
                }),
            }
        }
        Ok(out)
    }

    /// Finds a peer by address or by a name that only it has.
    fn find_peer(&self, peer: &str) -> Result<PeerId, SpeakerError> {
        if let Ok(addr) = peer.parse::<IpAddr>() {
            return self
                .peers
                .iter()
                .find(|(_, p)| p.address == addr.to_canonical())
                .map(|(id, _)| *id)
                .ok_or_else(|| SpeakerError::NoSuchPeer(peer.into()));
        }
        let named: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.config.name == peer)
            .map(|(id, _)| *id)
            .collect();
        match named.as_slice() {
            [id] => Ok(*id),
            [] => Err(SpeakerError::NoSuchPeer(peer.into())),
            many => Err(SpeakerError::Ambiguous(peer.into(), many.len())),
        }
    }

    /// Carries out an operator's action on a peer.
    fn control(&mut self, peer: &str, what: PeerControl) -> Result<(), SpeakerError> {
        let id = self.find_peer(peer)?;
        let Some(p) = self.peers.get_mut(&id) else {
            return Err(SpeakerError::NoSuchPeer(peer.into()));
        };
        let address = p.address;
        match what {
            PeerControl::Disable(_) if p.dynamic => {
                return Err(SpeakerError::Dynamic(address));
            }
            PeerControl::Reset(_) if p.disabled => {
                return Err(SpeakerError::Disabled(address));
            }
            PeerControl::Disable(message) => {
                tracing::info!(peer = %address, ?message, "disabled through the API");
                p.disabled = true;
                let _ = p.handle.commands.send(PeerCommand::Disable(message));
            }
            PeerControl::Enable => {
                tracing::info!(peer = %address, "enabled through the API");
                p.disabled = false;
                let _ = p.handle.commands.send(PeerCommand::Enable);
            }
            PeerControl::Reset(ResetKind::Hard) => {
                tracing::info!(peer = %address, "hard reset through the API");
                let _ = p.handle.commands.send(PeerCommand::Reset {
                    subcode: subcode::cease::ADMINISTRATIVE_RESET,
                    restart_after: Some(Duration::from_secs(1)),
                });
            }
            PeerControl::Reset(kind) => {
                let Some(n) = p.negotiated.as_deref().filter(|_| p.in_rib) else {
                    return Err(SpeakerError::NotEstablished(address));
                };
                let families = n.families.clone();
                if matches!(kind, ResetKind::SoftIn | ResetKind::SoftBoth) {
                    if !n.route_refresh {
                        return Err(SpeakerError::NoRouteRefresh(address));
                    }
                    for af in &families {
                        let _ = p.handle.commands.send(PeerCommand::Refresh(*af));
                    }
                }
                if matches!(kind, ResetKind::SoftOut | ResetKind::SoftBoth) {
                    for af in families {
                        let out = self.rib.refresh(id, af);
                        self.dispatch(out);
                    }
                }
                tracing::info!(peer = %address, ?kind, "soft reset through the API");
            }
        }
        Ok(())
    }

    /// Enforces a peer's prefix limits (checked after each of its UPDATEs).
    fn check_prefix_limits(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.config.max_prefixes.is_empty() || !p.in_rib {
            return;
        }
        for m in &p.config.max_prefixes {
            let accepted = self.rib.counts(id, m.family).accepted;
            let over = accepted > m.limit;
            let warn_at = m.limit * u64::from(m.warning_percent) / 100;
            if !over && accepted < warn_at {
                continue;
            }
            if p.limit_warned.contains(&(m.family, over)) {
                continue;
            }
            p.limit_warned.push((m.family, over));
            if !over {
                tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, "prefix count reached the warning threshold");
                continue;
            }
            match m.action {
                MaxPrefixesAction::Log => {
                    tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, "prefix limit exceeded (action: log)");
                }
                MaxPrefixesAction::Restart(after) => {
                    tracing::warn!(peer = %p.address, family = %m.family, accepted, limit = m.limit, restart_after = ?after, "prefix limit exceeded: ending the session");
                    // No further check until the session is gone.
                    p.in_rib = false;
                    let _ = p.handle.commands.send(PeerCommand::Reset {
                        subcode: subcode::cease::MAX_PREFIXES,
                        restart_after: Some(after),
                    });
                    return;
                }
            }
        }
    }

    /// Bookkeeping after a batch of peer events: stale timers of peers whose
    /// End-of-RIB swept their stale routes, the end of a deferral, and the
    /// initial convergence.
    fn after_events(&mut self) {
        self.stale_timers
            .retain(|id, _| self.rib.stale_count(*id) > 0);
        if self.deferral_until.is_some() && self.configured_peers_ready(true) {
            tracing::info!("deferral over: every graceful restart peer sent its table");
            self.end_deferral();
        }
        if !self.converged && self.configured_peers_ready(false) {
            tracing::info!("initial convergence: every configured peer sent its table");
            self.end_deferral();
            // The FIB hears this batch's changes before it hears that the
            // tables are complete.
            self.flush();
            self.converged = true;
            if let Some(fib) = &self.fib
                && fib.send(FibEvent::Converged).is_err()
            {
                self.fib = None;
            }
        }
    }

    /// Whether every configured peer is Established and has sent End-of-RIB
    /// for every family. For the selection deferral (`deferral`), peers that
    /// did not offer graceful restart or are restarting themselves (R bit) are
    /// not waited for once up (RFC 4724 §4.1); for the FIB's convergence they
    /// are, since routes they have not sent yet must not be removed.
    fn configured_peers_ready(&self, deferral: bool) -> bool {
        self.peers
            .iter()
            .filter(|(_, p)| !p.dynamic)
            .all(|(id, p)| {
                let Some(n) = p.negotiated.as_deref() else {
                    return false;
                };
                let exempt = match &n.peer_graceful_restart {
                    Some(gr) => gr.restart_state(),
                    None => true,
                };
                (deferral && exempt)
                    || n.families
                        .iter()
                        .all(|af| self.rib.end_of_rib_received(*id, *af))
            })
    }

    /// Ends a deferred route selection (tables and End-of-RIB go out, the FIB
    /// hears the best paths) and stops offering the R bit.
    fn end_deferral(&mut self) {
        self.deferral_until = None;
        if self.rib.deferring() {
            let out = self.rib.end_deferral();
            self.dispatch(out);
            self.flush();
        }
        if self.restart.restarted {
            self.restart.restarted = false;
            for p in self.peers.values() {
                let caps = self.capabilities(&p.config);
                let _ = p.handle.commands.send(PeerCommand::SetCapabilities(caps));
            }
        }
    }

    /// The capabilities offered to a neighbour.
    fn capabilities(&self, n: &NeighborConfig) -> Vec<Capability> {
        let gr = &self.config.graceful_restart;
        n.families
            .iter()
            .map(|af| Capability::Multiprotocol(*af))
            .chain([Capability::RouteRefresh, Capability::EnhancedRouteRefresh])
            .chain(add_path_capability(n))
            .chain(
                (gr.enabled && !gr.long_lived_stale_time.is_zero()).then(|| {
                    let stale = gr.long_lived_stale_time.as_secs().min(0xFF_FFFF) as u32;
                    Capability::LongLivedGracefulRestart(
                        n.families
                            .iter()
                            .map(|af| LlgrFamily {
                                afi_safi: *af,
                                flags: if self.restart.forwarding_preserved {
                                    GrFamily::FORWARDING_PRESERVED
                                } else {
                                    0
                                },
                                stale_time: stale,
                            })
                            .collect(),
                    )
                }),
            )
            .chain(gr.enabled.then(|| {
                Capability::GracefulRestart(GracefulRestart {
                    flags: if self.restart.restarted {
                        GracefulRestart::RESTART_STATE
                    } else {
                        0
                    },
                    restart_time: gr.restart_time.min(4095),
                    families: n
                        .families
                        .iter()
                        .map(|af| GrFamily {
                            afi_safi: *af,
                            flags: if self.restart.forwarding_preserved {
                                GrFamily::FORWARDING_PRESERVED
                            } else {
                                0
                            },
                        })
                        .collect(),
                })
            }))
            .collect()
    }

    async fn shutdown(&mut self, events: &mut mpsc::UnboundedReceiver<(PeerId, PeerEvent)>) {
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
    async fn command(
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
    fn flush(&mut self) {
        self.flush_slice(usize::MAX);
    }

    /// Flushes in slices of [`FLUSH_SLICE`] prefixes until nothing is
    /// pending or a command waits; what is left goes out on a later turn
    /// of the run loop, after the command.
    fn flush_until_command(&mut self, commands: &mpsc::UnboundedReceiver<Command>) {
        loop {
            self.flush_slice(FLUSH_SLICE);
            if !self.rib.has_pending() || !commands.is_empty() {
                break;
            }
        }
    }

    /// [`SpeakerTask::flush`] for at most `max` changed prefixes.
    fn flush_slice(&mut self, max: usize) {
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

    fn dispatch(&self, mut out: crate::rib::Outbound) {
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

    fn event(&mut self, id: PeerId, ev: PeerEvent) {
        match ev {
            PeerEvent::State(s) => {
                if let Some(p) = self.peers.get_mut(&id) {
                    let from = std::mem::replace(&mut p.state, s);
                    p.since = SystemTime::now();
                    if from != s {
                        self.peers_changed = true;
                        self.journal_batch.push((
                            p.since,
                            WatchEventKind::PeerState {
                                name: p.config.name.clone(),
                                address: p.address,
                                from,
                                to: s,
                                last_error: p.last_error.clone(),
                            },
                        ));
                    }
                }
            }
            PeerEvent::Up {
                session,
                negotiated,
                local,
                remote,
            } => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                p.session = session;
                let info = PeerInfo {
                    address: remote.ip(),
                    local_address: local.ip(),
                    local_ipv4: self.config.local_ipv4,
                    local_ipv6: self.config.local_ipv6,
                    local_link_local: link_local_for(local.ip(), remote.ip()),
                    asn: negotiated.peer_asn,
                    router_id: negotiated.peer_id,
                    next_hop_self: p.config.next_hop_self,
                    rr_client: p.config.route_reflector_client,
                    add_path_send: p.config.add_paths.send,
                    import_policy: p.config.import_policy.clone(),
                    export_policy: p.config.export_policy.clone(),
                    transit: false,
                    long_lived: !self.config.graceful_restart.long_lived_stale_time.is_zero()
                        && negotiated.peer_long_lived.is_some(),
                    families: negotiated.families.clone(),
                    rx: negotiated.rx,
                    tx: negotiated.tx,
                };
                if let Some(gr) = &negotiated.peer_graceful_restart {
                    tracing::debug!(
                        peer = %remote.ip(),
                        restarting = gr.restart_state(),
                        restart_time = gr.restart_time,
                        families = ?gr.families,
                        "the peer offers graceful restart"
                    );
                }
                if self.rib.is_restarting(id) {
                    // Back from a restart: families whose forwarding state it
                    // did not keep (no F bit) lose their stale routes now; the
                    // others wait for End-of-RIB, bounded by the stale timer.
                    let llgr_kept = negotiated
                        .peer_long_lived
                        .iter()
                        .flatten()
                        .filter(|f| f.flags & GrFamily::FORWARDING_PRESERVED != 0)
                        .map(|f| f.afi_safi);
                    let kept: Vec<AfiSafi> = negotiated
                        .peer_graceful_restart
                        .iter()
                        .flat_map(|gr| gr.families.iter())
                        .filter(|f| f.forwarding_preserved())
                        .map(|f| f.afi_safi)
                        .chain(llgr_kept)
                        .filter(|af| negotiated.families.contains(af))
                        .collect();
                    self.pending_llgr.remove(&id);
                    for af in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
                        if !kept.contains(&af) {
                            self.rib.drop_stale(id, Some(af));
                        }
                    }
                    tracing::info!(peer = %remote.ip(), stale = self.rib.stale_count(id), "graceful restart: peer back; stale routes wait for its End-of-RIB");
                }
                p.negotiated = Some(negotiated);
                p.local = Some(local);
                p.last_error = None;
                p.in_rib = true;
                p.limit_warned.clear();
                let out = self.rib.peer_up(id, info);
                self.dispatch(out);
                if self.rib.stale_count(id) > 0 {
                    let t = tokio::time::Instant::now()
                        + self.config.graceful_restart.stale_routes_time;
                    self.stale_timers.insert(id, t);
                } else {
                    self.stale_timers.remove(&id);
                }
            }
            PeerEvent::Down {
                reason,
                established,
            } => {
                let mut graceful = None;
                if let Some(p) = self.peers.get_mut(&id) {
                    p.last_error = Some(reason.to_string());
                    // RFC 4724 §4.2: a session that ends without a
                    // NOTIFICATION, with a peer that offered graceful restart,
                    // keeps the peer's routes while it restarts.
                    if self.config.graceful_restart.enabled
                        && established
                        && matches!(reason, DownReason::ConnectionLost)
                        && let Some(n) = p.negotiated.as_deref()
                        && let Some(gr) = &n.peer_graceful_restart
                    {
                        let families: Vec<AfiSafi> = gr
                            .families
                            .iter()
                            .map(|f| f.afi_safi)
                            .filter(|af| n.families.contains(af))
                            .collect();
                        let llgr = n
                            .peer_long_lived
                            .as_ref()
                            .filter(|_| {
                                !self.config.graceful_restart.long_lived_stale_time.is_zero()
                            })
                            .map(|fams| {
                                let families: Vec<AfiSafi> = fams
                                    .iter()
                                    .map(|f| f.afi_safi)
                                    .filter(|af| n.families.contains(af))
                                    .collect();
                                let asked = fams.iter().map(|f| f.stale_time).max().unwrap_or(0);
                                let time = Duration::from_secs(asked.into())
                                    .min(self.config.graceful_restart.long_lived_stale_time);
                                (families, time)
                            })
                            .filter(|(f, t)| !f.is_empty() && !t.is_zero());
                        graceful = Some((families, gr.restart_time, llgr));
                    }
                    p.negotiated = None;
                    p.local = None;
                    p.in_rib = false;
                    if matches!(reason, DownReason::ManualStop) {
                        p.last_error = Some(if p.disabled {
                            "disabled through the API".into()
                        } else {
                            "stopped by configuration".into()
                        });
                    }
                }
                match graceful {
                    // An attempt that never got Established (a collision, an
                    // OPEN refused) changes nothing in the RIB: above all, a
                    // restarting peer's stale routes and timers stay.
                    _ if !established => {}
                    Some((mut families, restart_time, llgr))
                        if restart_time > 0 || llgr.is_some() =>
                    {
                        if let Some((f, _)) = &llgr {
                            for af in f {
                                if !families.contains(af) {
                                    families.push(*af);
                                }
                            }
                        }
                        self.pending_llgr.remove(&id);
                        let mut kept = self.rib.peer_down_graceful(id, &families);
                        let now = tokio::time::Instant::now();
                        match llgr {
                            // No restart time: straight to the long-lived phase.
                            Some((f, t)) if restart_time == 0 => {
                                kept = self.rib.enter_long_lived_stale(id, &f);
                                if kept > 0 {
                                    self.stale_timers.insert(id, now + t);
                                }
                            }
                            llgr => {
                                if kept > 0 {
                                    self.stale_timers
                                        .insert(id, now + Duration::from_secs(restart_time.into()));
                                    if let Some(l) = llgr {
                                        self.pending_llgr.insert(id, l);
                                    }
                                }
                            }
                        }
                        tracing::info!(peer = ?self.peers.get(&id).map(|p| p.address), routes = kept, restart_time, "graceful restart: keeping the peer's routes while it restarts");
                    }
                    _ => {
                        self.stale_timers.remove(&id);
                        self.pending_llgr.remove(&id);
                        self.rib.peer_down(id);
                    }
                }
                // A dynamic peer exists only while its session does (a lost
                // collision is not the end: the other connection carries on).
                if !matches!(reason, DownReason::Collision)
                    && self.peers.get(&id).is_some_and(|p| p.dynamic)
                {
                    self.stop_peer(id, subcode::cease::PEER_DECONFIGURED, None);
                }
            }
            PeerEvent::Update {
                update,
                treat_as_withdraw,
                credit,
            } => {
                self.rib.update(id, &update, treat_as_withdraw);
                // Applied: the session may read on.
                drop(credit);
                self.check_prefix_limits(id);
            }
            PeerEvent::RouteRefresh(af) => {
                let out = self.rib.refresh(id, af);
                self.dispatch(out);
            }
            PeerEvent::Stopped => {
                self.stale_timers.remove(&id);
                self.pending_llgr.remove(&id);
                self.rib.peer_down(id);
            }
        }
    }

    fn accept(&mut self, stream: TcpStream, remote: SocketAddr) {
        let ip = remote.ip().to_canonical();
        if let Some((_, p)) = self.peers.iter().find(|(_, p)| p.address == ip) {
            let _ = p.handle.commands.send(PeerCommand::Incoming(stream));
            return;
        }
        let range = self.config.neighbors.iter().find(|n| match n.address {
            NeighborAddress::Range(r) => r.contains(&ip),
            NeighborAddress::Address(_) => false,
        });
        match range.cloned() {
            Some(n) => {
                tracing::info!(peer = %ip, range = %n.address, "dynamic neighbour connected");
                let id = self.spawn(n, ip, true);
                if let Some(p) = self.peers.get(&id) {
                    let _ = p.handle.commands.send(PeerCommand::Incoming(stream));
                }
            }
            None => {
                tracing::info!(peer = %ip, "connection from an address that is not a configured neighbour; closed")
            }
        }
    }

    fn spawn(&mut self, n: NeighborConfig, address: IpAddr, dynamic: bool) -> PeerId {
        let id = self.next_id;
        self.next_id += 1;
        let ebgp = n.asn != self.config.asn;
        let mut fsm = FsmConfig::new(self.config.asn, self.config.router_id, n.asn);
        fsm.hold_time = n.hold_time;
        fsm.keepalive_time = n.keepalive_time;
        fsm.passive = n.passive || dynamic;
        fsm.connect_retry = n.connect_retry;
        fsm.idle_hold_max = Duration::from_secs(60);
        fsm.capabilities = self.capabilities(&n);
        fsm.jitter_seed ^= u64::from(id).rotate_left(17);
        let transport = TransportOptions {
            ttl: match (ebgp, n.ebgp_multihop) {
                (true, None) => Some(1),
                (true, Some(h)) => Some(h),
                (false, _) => None,
            },
            ttl_security_hops: n.ttl_security,
            md5_key: n.password.as_ref().map(|p| p.as_bytes().to_vec()),
            source: n.source_address,
        };
        let config = PeerConfig {
            address,
            port: n.port,
            fsm,
            transport,
        };
        let handle = session::spawn_peer(id, config, self.events_tx.clone());
        self.peers_changed = true;
        self.journal_batch.push((
            SystemTime::now(),
            WatchEventKind::PeerAdded {
                name: n.name.clone(),
                address,
            },
        ));
        self.peers.insert(
            id,
            PeerSlot {
                config: n,
                address,
                dynamic,
                handle,
                state: State::Idle,
                since: SystemTime::now(),
                last_error: None,
                negotiated: None,
                local: None,
                in_rib: false,
                session: 0,
                limit_warned: Vec::new(),
                disabled: false,
            },
        );
        id
    }

    fn stop_peer(&mut self, id: PeerId, sub: u8, message: Option<String>) {
        if let Some(p) = self.peers.remove(&id) {
            self.peers_changed = true;
            self.journal_batch.push((
                SystemTime::now(),
                WatchEventKind::PeerRemoved {
                    name: p.config.name,
                    address: p.address,
                },
            ));
            let _ = p.handle.commands.send(PeerCommand::Stop {
                subcode: sub,
                message,
            });
            self.stale_timers.remove(&id);
            self.pending_llgr.remove(&id);
            self.rib.peer_down(id);
        }
    }

    async fn configure(&mut self, new: SpeakerConfig) -> Result<(), SpeakerError> {
        let global_changed = new.asn != self.config.asn
            || new.router_id != self.config.router_id
            || new.decision != self.config.decision
            || new.cluster_id != self.config.cluster_id
            || new.maximum_paths != self.config.maximum_paths
            || new.local_ipv6 != self.config.local_ipv6
            || new.local_ipv4 != self.config.local_ipv4;
        let fresh = if new.listen != self.config.listen {
            self.rebind(&new.listen).await?
        } else {
            Vec::new()
        };
        if global_changed {
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.stop_peer(id, subcode::cease::OTHER_CONFIGURATION_CHANGE, None);
            }
            // The new RIB starts empty: tell the FIB side every old prefix is
            // gone (what is learned again comes back), and keep what is known
            // about next-hop reachability.
            let gone: Vec<FibChange> = self
                .rib
                .iter()
                .map(|(p, _)| FibChange {
                    prefix: p,
                    next_hops: None,
                })
                .collect();
            if let Some(fib) = &self.fib
                && !gone.is_empty()
            {
                let _ = fib.send(FibEvent::Changes(gone));
            }
            let unreachable: Vec<IpAddr> = self.rib.unreachable_next_hops().collect();
            let deferring = self.rib.deferring();
            self.rib = Rib::new(rib_config(&new));
            if deferring {
                self.rib.defer();
            }
            for nh in unreachable {
                self.rib.set_next_hop_reachable(nh, false);
            }
        }
        // From here on, new peers are built with the new identity.
        let old = std::mem::replace(&mut self.config, new.clone());
        if old.graceful_restart != new.graceful_restart {
            // Offered from the next session on; established ones keep theirs.
            for p in self.peers.values() {
                let caps = self.capabilities(&p.config);
                let _ = p.handle.commands.send(PeerCommand::SetCapabilities(caps));
            }
        }
        // Peers disabled through the API stay disabled across a reset.
        let disabled: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.disabled && !p.dynamic)
            .map(|p| p.config.name.clone())
            .collect();
        // Peers: stop removed and changed ones, start new and changed ones.
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = &self.peers[&id];
            let still = new.neighbors.iter().find(|n| n.name == p.config.name);
            match still {
                None => self.stop_peer(id, subcode::cease::PEER_DECONFIGURED, None),
                Some(n) if n.differs_beyond_policies(&p.config) => {
                    tracing::info!(peer = %p.address, name = %n.name, "neighbour settings changed; resetting its session");
                    self.stop_peer(id, subcode::cease::OTHER_CONFIGURATION_CHANGE, None)
                }
                Some(n) if *n != p.config => {
                    // Only the policies: applied live, the session stays.
                    tracing::info!(peer = %p.address, name = %n.name, "policies changed; applying them without a reset");
                    let (import, export) = (n.import_policy.clone(), n.export_policy.clone());
                    if let Some(slot) = self.peers.get_mut(&id) {
                        slot.config = n.clone();
                    }
                    let out = self.rib.set_policies(id, import, export);
                    self.dispatch(out);
                }
                Some(_) => {}
            }
        }
        for n in &new.neighbors {
            if let NeighborAddress::Address(a) = n.address
                && !self
                    .peers
                    .values()
                    .any(|p| p.config.name == n.name && !p.dynamic)
            {
                let id = self.spawn(n.clone(), a, false);
                if disabled.contains(&n.name)
                    && let Some(p) = self.peers.get_mut(&id)
                {
                    p.disabled = true;
                    let _ = p.handle.commands.send(PeerCommand::Disable(None));
                }
            }
        }
        self.install_md5(&old, &new, &fresh);
        let local = new
            .originate
            .iter()
            .map(|r| (r.prefix, r.attrs()))
            .collect::<Vec<_>>();
        self.rib.set_local_routes(local);
        self.flush();
        Ok(())
    }

    /// Makes the listeners match `addrs`: unchanged ones are kept (re-binding
    /// them could race their own closing), others closed or opened. Returns the
    /// addresses bound afresh, which need every TCP-MD5 key.
    async fn rebind(&mut self, addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, SpeakerError> {
        let mut kept = Vec::new();
        for (addr, h, l) in std::mem::take(&mut self.listeners) {
            if addrs.contains(&addr) {
                kept.push((addr, h, l));
            } else {
                h.abort();
                // Wait until the task (and its hold on the socket) is gone.
                let _ = h.await;
            }
        }
        self.listeners = kept;
        let mut fresh = Vec::new();
        for addr in addrs {
            if self.listeners.iter().any(|(a, _, _)| a == addr) {
                continue;
            }
            let l = session::socket::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            let l = std::sync::Arc::new(l);
            let tx = self.accepted_tx.clone();
            let l2 = l.clone();
            let h = tokio::spawn(async move {
                loop {
                    match l2.accept().await {
                        Ok((s, remote)) => {
                            if tx.send((s, remote)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            self.listeners.push((*addr, h, l));
            fresh.push(*addr);
        }
        Ok(fresh)
    }

    /// Keys for incoming connections live on the listeners: install the new
    /// configuration's, and remove those of neighbours that lost theirs.
    fn install_md5(&self, old: &SpeakerConfig, new: &SpeakerConfig, fresh: &[SocketAddr]) {
        let keys = |c: &SpeakerConfig| -> HashMap<IpNet, Vec<u8>> {
            c.neighbors
                .iter()
                .filter_map(|n| {
                    let range = match n.address {
                        NeighborAddress::Address(a) => IpNet::from(a),
                        NeighborAddress::Range(r) => r,
                    };
                    let key = n.password.as_ref()?.as_bytes().to_vec();
                    Some((range, key))
                })
                .collect()
        };
        let (before, after) = (keys(old), keys(new));
        for (addr, _, l) in &self.listeners {
            let fits =
                |r: &IpNet| addr.ip().is_unspecified() || addr.is_ipv4() == r.addr().is_ipv4();
            for (range, key) in after.iter().filter(|(r, _)| fits(r)) {
                if before.get(range) == Some(key) && !fresh.contains(addr) {
                    continue;
                }
                if let Err(e) = session::socket::listener_md5(l, *range, key) {
                    tracing::warn!(peer = %range, listener = %addr, error = %e, "cannot install TCP-MD5 key");
                }
            }
            for range in before.keys().filter(|r| fits(r) && !after.contains_key(r)) {
                // An empty key deletes the entry; a listener bound afresh has none to delete.
                let _ = session::socket::listener_md5(l, *range, &[]);
            }
        }
    }

    /// Publishes the peer table for readers that must not wait for this task.
    fn publish_peers(&mut self) {
        self.peers_tx.send_replace(Arc::new(self.peer_status()));
        self.peers_published = tokio::time::Instant::now();
        self.peers_changed = false;
        self.counters_moved = false;
    }

    fn peer_status(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let n = p.negotiated.as_deref();
                let caps = n
                    .map(|n| {
                        let mut c: Vec<String> = n.families.iter().map(|f| f.to_string()).collect();
                        if n.route_refresh {
                            c.push("route-refresh".into());
                        }
                        if n.enhanced_route_refresh {
                            c.push("enhanced-route-refresh".into());
                        }
                        if n.rx.four_octet_as {
                            c.push("four-octet-as".into());
                        }
                        if n.rx.add_path_ipv4 || n.rx.add_path_ipv6 {
                            c.push("add-path-receive".into());
                        }
                        if n.tx.add_path_ipv4 || n.tx.add_path_ipv6 {
                            c.push("add-path-send".into());
                        }
                        if n.rx.extended_message {
                            c.push("extended-message".into());
                        }
                        if n.peer_graceful_restart.is_some() {
                            c.push(if self.config.graceful_restart.enabled {
                                "graceful-restart".into()
                            } else {
                                "graceful-restart (peer)".into()
                            });
                        }
                        if n.peer_long_lived.is_some() {
                            let ours = self.config.graceful_restart.enabled
                                && !self.config.graceful_restart.long_lived_stale_time.is_zero();
                            c.push(if ours {
                                "long-lived-graceful-restart".into()
                            } else {
                                "long-lived-graceful-restart (peer)".into()
                            });
                        }
                        c
                    })
                    .unwrap_or_default();
                let families = n.map(|n| n.families.clone()).unwrap_or_default();
                let sum = |a: &[std::sync::atomic::AtomicU64; 6]| {
                    a.iter()
                        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                        .sum()
                };
                PeerStatus {
                    name: p.config.name.clone(),
                    address: p.address,
                    asn: p.config.asn,
                    state: p.state,
                    since: p.since,
                    dynamic: p.dynamic,
                    last_error: p.last_error.clone(),
                    capabilities: caps,
                    hold_time: n.map(|n| n.hold_time),
                    peer_router_id: n.map(|n| n.peer_id),
                    local_address: p.local,
                    prefixes: families
                        .iter()
                        .map(|f| (*f, self.rib.counts(*id, *f)))
                        .collect(),
                    messages_received: sum(&p.handle.stats.received),
                    messages_sent: sum(&p.handle.stats.sent),
                    received_by_type: by_type(&p.handle.stats.received),
                    sent_by_type: by_type(&p.handle.stats.sent),
                    flaps: p
                        .handle
                        .stats
                        .flaps
                        .load(std::sync::atomic::Ordering::Relaxed),
                    stale_routes: self.rib.stale_count(*id),
                    disabled: p.disabled,
                }
            })
            .collect();
        v.sort_by(|a, b| a.address.cmp(&b.address).then(a.name.cmp(&b.name)));
        v
    }

    fn routes(&self, f: &RouteFilter) -> Vec<RouteView> {
        let mut v: Vec<RouteView> = self
            .rib
            .iter()
            .filter(|(p, _)| {
                let fam_ok = f.family.is_none_or(|af| match p {
                    IpNet::V4(_) => af == AfiSafi::IPV4_UNICAST,
                    IpNet::V6(_) => af == AfiSafi::IPV6_UNICAST,
                });
                let pfx_ok = match f.prefix {
                    None => true,
                    Some(q) if f.longer => q.contains(p),
                    Some(q) => q.trunc() == *p,
                };
                fam_ok && pfx_ok
            })
            .map(|(p, d)| {
                let mut paths: Vec<PathView> = d
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(i, path)| PathView {
                        best: d.best_index() == Some(i),
                        from: self.rib.peer_address(path),
                        path_id: path.path_id,
                        attrs: (*path.attrs).clone(),
                        rejected: false,
                    })
                    .collect();
                paths.sort_by_key(|p| !p.best);
                RouteView { prefix: p, paths }
            })
            .collect();
        v.sort_by_key(|r| r.prefix);
        v
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

impl fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} AS{} {}", self.address, self.asn, self.state)
    }
}

/// Sleeps until the earliest of two optional deadlines; forever if neither.
async fn sleep_until_earliest(a: Option<tokio::time::Instant>, b: Option<tokio::time::Instant>) {
    match a.into_iter().chain(b).min() {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The ADD-PATH capability for a neighbour, if it asks for ADD-PATH at all.
fn add_path_capability(n: &NeighborConfig) -> Option<Capability> {
    use crate::wire::capability::AddPathFamily;
    let mut bits = 0;
    if n.add_paths.receive {
        bits |= AddPathFamily::RECEIVE;
    }
    if n.add_paths.send.is_some() {
        bits |= AddPathFamily::SEND;
    }
    (bits != 0).then(|| {
        Capability::AddPath(
            n.families
                .iter()
                .filter(|af| **af == AfiSafi::IPV4_UNICAST || **af == AfiSafi::IPV6_UNICAST)
                .map(|af| AddPathFamily {
                    afi_safi: *af,
                    send_receive: bits,
                })
                .collect(),
        )
    })
}

fn by_type(a: &[std::sync::atomic::AtomicU64; 6]) -> [u64; 6] {
    std::array::from_fn(|i| a[i].load(std::sync::atomic::Ordering::Relaxed))
}
