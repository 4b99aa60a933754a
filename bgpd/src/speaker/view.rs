//! What the speaker tells its callers: peer status, routes, explanations,
//! summaries, and the events the forwarding side hears.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use ipnet::IpNet;

use crate::fsm::State;
use crate::rib::{Attrs, FibChange, PrefixCounts};
use crate::wire::AfiSafi;

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
    /// Bytes queued for the peer and not yet written to its socket.
    pub out_queued: u64,
    /// Sessions reset because the peer read nothing for SendHoldTime (RFC
    /// 9687).
    pub send_hold_expired: u64,
    /// Sessions reset because the peer's outbound queue was full.
    pub out_overflows: u64,
    /// ROUTE-REFRESH requests answered (requests close together are
    /// merged into one answer).
    pub refreshes_answered: u64,
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

/// One page of a listing of routes, done a part of the table at a time so
/// that no read holds the RIB owner for the whole table; sorted by prefix
/// within the page. Every route present from the first page to the last is
/// listed exactly once; one that comes or goes meanwhile may or may not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesPage {
    /// The routes of this page.
    pub routes: Vec<RouteView>,
    /// Where the next page starts (`None`: this is the last).
    pub next: Option<usize>,
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

/// Which prefixes [`Speaker::fib_routes`](super::Speaker::fib_routes) asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibQuery {
    /// These prefixes (each answered, `None` next hops if nothing to install).
    Prefixes(Vec<IpNet>),
    /// Every prefix the FIB forwards through one of these next hops.
    Via(Vec<IpAddr>),
}

impl fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} AS{} {}", self.address, self.asn, self.state)
    }
}
