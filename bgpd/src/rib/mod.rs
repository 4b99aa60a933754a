//! RIBs and the decision process (RFC 4271 §9), sans-IO.
//!
//! One `Rib` holds every peer's received paths (the Adj-RIBs-In, stored per
//! prefix beside each other), the best path per prefix (the Loc-RIB) and, per
//! update group, what was advertised (the Adj-RIB-Out). It is owned by a single
//! task; sessions hand it decoded UPDATEs and it hands back encoded UPDATEs per
//! peer. Path attributes are interned: a million routes sharing a few thousand
//! attribute sets store those sets once.
//!
//! Update groups: peers with the same outbound treatment (external or internal,
//! the same next hop we put in, the same wire layout) share one computation and
//! one encoding of every change. The only per-peer difference is that a route is
//! never sent back to the peer it came from.
//!
//! One concept per file, each adding to `impl Rib` what it is about:
//!
//! - `mod.rs`: the `Rib` itself, its configuration and Loc-RIB reads.
//! - `interned.rs`: the interned attribute-set store and its garbage sweep.
//! - `decision.rs`: paths, how two compare and which is best (`PathContext`),
//!   and re-deciding a prefix.
//! - `peers.rs`: the peer table, sessions up and down, prefix counts.
//! - `adj_in.rs`: what peers send (inbound checks, import policy, the kept
//!   Adj-RIB-In, rejected entries) and the routes we originate.
//! - `groups.rs`: update groups and their Adj-RIB-Out, regrouping.
//! - `export.rs`: the export and reflection rules, export policy, ADD-PATH.
//! - `encode.rs`: flushing, and encoding what peers are sent as UPDATEs.
//! - `graceful.rs`: stale paths over a peer's (long-lived) graceful restart,
//!   deferred selection after ours.
//! - `fib.rs`: the FIB's view: multipath next hops and their changes.
//! - `explain.rs`: why a path won or lost, why a peer is not sent a route.
//! - `tests/`: the RIB's tests, one file per concept above.
//!
//! The RIB is the speaker's, so it is crate-private; public are only the
//! types the speaker's handle hands out and petrel names ([`Attrs`],
//! [`NotSent`], [`PrefixCounts`], [`FibChange`], [`DecisionOptions`],
//! [`Messages`]).

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::prefixmap::PrefixMap;
use crate::wire::AfiSafi;

mod adj_in;
mod decision;
mod encode;
mod explain;
mod export;
mod fib;
mod graceful;
mod groups;
mod interned;
mod peers;
#[cfg(test)]
mod tests;

pub use crate::attrs::Attrs;
pub(crate) use adj_in::AdjInEntry;
pub use decision::DecisionOptions;
pub(crate) use decision::Dest;
use decision::{Path, PathContext, Source};
use encode::DirtyQueue;
pub use encode::Messages;
pub(crate) use encode::Outbound;
pub use export::NotSent;
pub use fib::FibChange;
use groups::Group;
pub(crate) use peers::PeerInfo;
use peers::PeerState;
pub use peers::PrefixCounts;

/// Index of a peer in the RIB.
pub(crate) type PeerId = u32;

/// 0 for IPv4, 1 for IPv6: the index of per-family counters.
fn af_index(p: &IpNet) -> usize {
    usize::from(matches!(p, IpNet::V6(_)))
}

/// RIB-wide configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RibConfig {
    /// Our ASN.
    pub local_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Decision options.
    pub decision: DecisionOptions,
    /// Reject paths from external peers whose first ASN is not the peer's.
    pub enforce_first_as: bool,
    /// Our route reflection cluster ID (RFC 4456), usually the router ID.
    pub cluster_id: Ipv4Addr,
    /// The most next hops a route gets in the FIB: paths equal to the best
    /// one down to the router-ID tie-break form its multipath set.
    pub maximum_paths: usize,
}

/// The RIBs.
#[derive(Debug)]
pub(crate) struct Rib {
    config: RibConfig,
    peers: HashMap<PeerId, PeerState>,
    groups: Vec<Group>,
    loc: PrefixMap<IpNet, Dest>,
    /// Paths in `loc`, kept as they come and go: a summary (asked by every
    /// `/metrics`, `/healthz` and `/readyz`) must not walk the table on
    /// the task that owns it.
    paths: usize,
    /// Grows incrementally (griddle moves a few entries per insert): a
    /// rehash hashes whole attribute sets, and a quarter million of them
    /// took ~190 ms at once.
    interned: griddle::HashSet<Arc<Attrs>, foldhash::fast::RandomState>,
    /// The same sets in a list, for sweeping in bounded steps: a full pass
    /// over a quarter million (cache misses on every reference count) held
    /// the owner tens of milliseconds, again after each flush.
    interned_list: Vec<Arc<Attrs>>,
    /// Where the garbage sweep under way resumes in `interned_list`.
    sweep: Option<usize>,
    /// Prefixes whose export may have changed since the last flush, in
    /// the order they changed: a sliced flush then takes a received
    /// UPDATE's prefixes together and packs them into few UPDATEs again.
    dirty: DirtyQueue,
    /// Prefixes whose best path may have changed since `Rib::fib_changes`.
    fib_dirty: HashSet<IpNet>,
    unreachable: HashSet<IpAddr>,
    local_routes: HashMap<IpNet, Arc<Attrs>>,
    /// Route selection deferred after our own restart (RFC 4724 §4.1):
    /// nothing is advertised and nothing reaches the FIB until it ends.
    deferring: bool,
    /// Our ADD-PATH path IDs, one per path source (a peer and the ID it
    /// sent the path with, or us): stable, so a path keeps its ID.
    out_path_ids: HashMap<(Source, u32), u32>,
    /// The next ADD-PATH ID to hand out (never reused while it could still
    /// name a path somewhere).
    next_out_path_id: u32,
}

impl Rib {
    /// An empty RIB.
    pub fn new(config: RibConfig) -> Self {
        Rib {
            config,
            peers: HashMap::new(),
            groups: Vec::new(),
            loc: PrefixMap::new(),
            paths: 0,
            interned: griddle::HashSet::with_hasher(foldhash::fast::RandomState::default()),
            interned_list: Vec::new(),
            sweep: None,
            dirty: DirtyQueue::default(),
            fib_dirty: HashSet::new(),
            unreachable: HashSet::new(),
            local_routes: HashMap::new(),
            deferring: false,
            out_path_ids: HashMap::new(),
            next_out_path_id: 1,
        }
    }

    /// The configuration.
    #[cfg(test)]
    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    /// Number of prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.loc.len()
    }

    /// Paths in the Loc-RIB: a count kept, not a walk.
    pub fn path_count(&self) -> usize {
        self.paths
    }

    /// Whether the RIB holds no prefix.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.loc.is_empty()
    }

    /// The state of one prefix.
    #[cfg(test)]
    pub fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        self.loc.get(prefix)
    }

    /// Every prefix and its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Dest)> {
        self.loc.iter()
    }

    /// One part of the Loc-RIB, for a listing done a part at a time, and
    /// the part to read next ([`PrefixMap::part`]).
    pub fn loc_part(&self, part: usize) -> (Vec<(IpNet, &Dest)>, Option<usize>) {
        self.loc.part(part)
    }

    /// One prefix's entry: a lookup, not a walk.
    pub fn lookup(&self, prefix: &IpNet) -> Option<&Dest> {
        self.loc.get(prefix)
    }

    /// The address of the peer a path came from (`None` for our own).
    pub fn peer_address(&self, path: &Path) -> Option<IpAddr> {
        self.context().peer_address(path)
    }

    /// The best path of a prefix.
    pub fn best(&self, prefix: &IpNet) -> Option<&Path> {
        self.loc.get(prefix).and_then(Dest::best_path)
    }
}

/// The family of a prefix: the RIB holds unicast routes only.
fn family(p: &IpNet) -> AfiSafi {
    match p {
        IpNet::V4(_) => AfiSafi::IPV4_UNICAST,
        IpNet::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}
