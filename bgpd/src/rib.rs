//! RIBs and the decision process (RFC 4271 §9), sans-IO.
//!
//! One [`Rib`] holds every peer's received paths (the Adj-RIBs-In, stored per
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

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

pub use crate::attrs::Attrs;
use crate::attrs::prepend;
use crate::policy::{Policy, Verdict};
use crate::prefixmap::PrefixMap;
use crate::wire::attr::{AttrValue, Community, NextHop, Origin, PathAttribute};
use crate::wire::update::UpdatePacker;
use crate::wire::{AfiSafi, EncodeError, Nlri, Update, WireContext};

/// Index of a peer in the RIB.
pub type PeerId = u32;

/// Interned attribute sets a flush looks at for garbage, whatever the
/// flush's own size: a full flush (a reconfiguration, a timer) must not
/// turn into a pass over a quarter million sets either.
const SWEEP_STEP: usize = 4096;

/// A set of prefixes that remembers the order they were added in.
#[derive(Debug, Default)]
struct DirtyQueue {
    members: HashSet<IpNet>,
    order: std::collections::VecDeque<IpNet>,
}

impl DirtyQueue {
    fn insert(&mut self, prefix: IpNet) {
        if self.members.insert(prefix) {
            self.order.push_back(prefix);
        }
    }

    /// The first `max` prefixes added, taken out.
    fn take(&mut self, max: usize) -> Vec<IpNet> {
        let n = max.min(self.order.len());
        let taken: Vec<IpNet> = self.order.drain(..n).collect();
        if self.order.is_empty() {
            self.members.clear();
        } else {
            for p in &taken {
                self.members.remove(p);
            }
        }
        taken
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Originated by this speaker.
    Local,
    /// Learned from a peer.
    Peer(PeerId),
}

/// The packed [`Source`] of our own paths; peer IDs stop short of it.
const LOCAL_SOURCE: u32 = u32::MAX;

/// One candidate path for a prefix. 16 bytes: a million of them sit in the
/// Loc-RIB, so what is the same for every path of a peer (eBGP or not, its
/// router ID, its address) is looked up in the peer table through a
/// [`PathContext`], not carried by each path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Its attributes.
    pub attrs: Arc<Attrs>,
    /// ADD-PATH identifier it was received with (0 without ADD-PATH).
    pub path_id: u32,
    /// Where it came from: [`LOCAL_SOURCE`] or the peer's ID (an enum
    /// would take 8 bytes).
    source: u32,
}

impl Path {
    /// A path from `source`. Peer ID `u32::MAX` is reserved (it packs
    /// [`Source::Local`]); the speaker never hands it out.
    pub fn new(source: Source, path_id: u32, attrs: Arc<Attrs>) -> Path {
        let source = match source {
            Source::Local => LOCAL_SOURCE,
            Source::Peer(id) => {
                debug_assert_ne!(id, LOCAL_SOURCE, "peer ID reserved for local paths");
                id
            }
        };
        Path {
            attrs,
            path_id,
            source,
        }
    }

    /// Where it came from.
    pub fn source(&self) -> Source {
        match self.source {
            LOCAL_SOURCE => Source::Local,
            id => Source::Peer(id),
        }
    }

    /// Whether this is our own path.
    pub fn is_local(&self) -> bool {
        self.source == LOCAL_SOURCE
    }
}

/// What the decision process needs to know of a path beyond the path: a
/// million paths do not each carry what their peer table has.
pub trait PathContext {
    /// Whether the path's next hop can be reached.
    fn reachable(&self, path: &Path) -> bool;
    /// The address of the peer the path came from (`None` for our own).
    fn peer_address(&self, path: &Path) -> Option<IpAddr>;
    /// Whether the path was learned over eBGP (false for our own).
    fn ebgp(&self, path: &Path) -> bool;
    /// The BGP identifier of the peer it came from (ours for our own).
    fn router_id(&self, path: &Path) -> Ipv4Addr;
}

/// Why a path lost (or won) against another, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The other next hop is unreachable.
    NextHopUnreachable,
    /// The other path is long-lived stale (RFC 9494 §4.5: least preferred).
    LongLivedStale,
    /// Higher LOCAL_PREF.
    LocalPref,
    /// Locally originated.
    Local,
    /// Shorter AS_PATH.
    AsPathLength,
    /// Lower ORIGIN.
    Origin,
    /// Lower MED (same neighbouring AS, or always-compare-med).
    Med,
    /// eBGP over iBGP.
    External,
    /// Lower router ID (or ORIGINATOR_ID).
    RouterId,
    /// Shorter CLUSTER_LIST.
    ClusterList,
    /// Lower peer address.
    PeerAddress,
    /// Lower path identifier (all else equal).
    PathId,
}

impl Step {
    /// Whether two paths that first differ at this step are equal enough to
    /// share a multipath (ECMP) set: the tie-breaks after eBGP/iBGP.
    pub fn ties_for_multipath(self) -> bool {
        matches!(
            self,
            Step::RouterId | Step::ClusterList | Step::PeerAddress | Step::PathId
        )
    }
}

/// Why a path lost to the best one, in words (`petrel explain`).
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::NextHopUnreachable => "its next hop is unreachable",
            Step::LongLivedStale => "it is long-lived stale (least preferred)",
            Step::LocalPref => "lower LOCAL_PREF",
            Step::Local => "the best is originated here",
            Step::AsPathLength => "longer AS_PATH",
            Step::Origin => "worse ORIGIN",
            Step::Med => "higher MED",
            Step::External => "internal, and the best is external",
            Step::RouterId => "higher router ID (or ORIGINATOR_ID)",
            Step::ClusterList => "longer CLUSTER_LIST",
            Step::PeerAddress => "higher peer address",
            Step::PathId => "higher path ID",
        })
    }
}

/// Options of the decision process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecisionOptions {
    /// Compare MED between paths from different neighbouring ASes.
    pub always_compare_med: bool,
    /// Pick the best per neighbouring AS first, so the result does not depend on
    /// the order paths arrived in.
    pub deterministic_med: bool,
}

/// Default LOCAL_PREF for paths that carry none (external or local ones).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Compares two paths; `Less` means `a` is better. Also returns the step that decided.
pub fn compare(
    a: &Path,
    b: &Path,
    opts: DecisionOptions,
    cx: &dyn PathContext,
) -> (Ordering, Step) {
    let by = |o: Ordering, s: Step| (o != Ordering::Equal).then_some((o, s));
    let lp = |p: &Path| p.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
    let med = |p: &Path| p.attrs.med.unwrap_or(0);
    let rid = |p: &Path| p.attrs.originator_id.unwrap_or_else(|| cx.router_id(p));
    let med_comparable = opts.always_compare_med || a.attrs.neighbor_as() == b.attrs.neighbor_as();
    let llgr = |p: &Path| p.attrs.has_community(Community::LLGR_STALE);
    let reachable = |p: &Path| cx.reachable(p);
    by(reachable(b).cmp(&reachable(a)), Step::NextHopUnreachable)
        .or_else(|| by(llgr(a).cmp(&llgr(b)), Step::LongLivedStale))
        .or_else(|| by(lp(b).cmp(&lp(a)), Step::LocalPref))
        .or_else(|| by(b.is_local().cmp(&a.is_local()), Step::Local))
        .or_else(|| {
            by(
                a.attrs
                    .as_path
                    .path_length()
                    .cmp(&b.attrs.as_path.path_length()),
                Step::AsPathLength,
            )
        })
        .or_else(|| by(a.attrs.origin.cmp(&b.attrs.origin), Step::Origin))
        .or_else(|| {
            if med_comparable {
                by(med(a).cmp(&med(b)), Step::Med)
            } else {
                None
            }
        })
        .or_else(|| by(cx.ebgp(b).cmp(&cx.ebgp(a)), Step::External))
        .or_else(|| by(rid(a).cmp(&rid(b)), Step::RouterId))
        .or_else(|| {
            by(
                a.attrs.cluster_list.len().cmp(&b.attrs.cluster_list.len()),
                Step::ClusterList,
            )
        })
        .or_else(|| {
            by(
                cx.peer_address(a).cmp(&cx.peer_address(b)),
                Step::PeerAddress,
            )
        })
        .unwrap_or((a.path_id.cmp(&b.path_id), Step::PathId))
}

/// Picks the best of `paths` (index), honouring the MED options.
pub fn select_best(paths: &[Path], opts: DecisionOptions, cx: &dyn PathContext) -> Option<usize> {
    let better = |i: usize, j: usize| compare(&paths[i], &paths[j], opts, cx).0 == Ordering::Less;
    let usable: Vec<usize> = (0..paths.len())
        .filter(|&i| cx.reachable(&paths[i]))
        .collect();
    if usable.is_empty() {
        return None;
    }
    if !opts.deterministic_med || opts.always_compare_med {
        return usable
            .into_iter()
            .reduce(|best, i| if better(i, best) { i } else { best });
    }
    // Deterministic MED: best per neighbouring AS, then the best of those.
    let mut per_as: Vec<(Option<u32>, usize)> = Vec::new();
    for i in usable {
        let nas = paths[i].attrs.neighbor_as();
        match per_as.iter_mut().find(|(a, _)| *a == nas) {
            Some((_, best)) if better(i, *best) => *best = i,
            Some(_) => {}
            None => per_as.push((nas, i)),
        }
    }
    per_as
        .into_iter()
        .map(|(_, i)| i)
        .reduce(|best, i| if better(i, best) { i } else { best })
}

/// A peer as the RIB sees it once its session is Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address.
    pub address: IpAddr,
    /// Our address on the session: the next hop we put in towards it.
    pub local_address: IpAddr,
    /// An IPv4 address of ours to use as next hop for IPv4 routes when the
    /// session runs over IPv6.
    pub local_ipv4: Option<Ipv4Addr>,
    /// An IPv6 address of ours to use as next hop for IPv6 routes when the
    /// session runs over IPv4.
    pub local_ipv6: Option<Ipv6Addr>,
    /// Our IPv6 link-local address on the shared link, sent beside the global one.
    pub local_link_local: Option<Ipv6Addr>,
    /// The peer's ASN.
    pub asn: u32,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// Always put our own address as next hop (also towards internal peers).
    pub next_hop_self: bool,
    /// We are the route reflector of this internal peer (RFC 4456).
    pub rr_client: bool,
    /// ADD-PATH send (RFC 7911): how many paths per prefix to send in the
    /// families where the peer agreed to receive several (`usize::MAX`: all).
    pub add_path_send: Option<usize>,
    /// Runs on what the peer sends, before the decision process.
    pub import_policy: Option<Arc<Policy>>,
    /// Runs on what the peer is sent.
    pub export_policy: Option<Arc<Policy>>,
    /// Long-lived graceful restart (RFC 9494) was negotiated: the peer may be
    /// sent routes that are long-lived stale (with LLGR_STALE); others are not.
    pub long_lived: bool,
    /// An external peer gets routes learned from other external peers even
    /// when no export rule accepted them (false: only when one did, so a node
    /// does not become a transit between its upstreams).
    pub transit: bool,
    /// Families negotiated.
    pub families: Vec<AfiSafi>,
    /// Layout of what we receive.
    pub rx: WireContext,
    /// Layout of what we send.
    pub tx: WireContext,
}

/// Counters per peer and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixCounts {
    /// Prefixes the peer currently announces to us.
    pub received: u64,
    /// Of those, the ones accepted (no loop, valid).
    pub accepted: u64,
    /// Prefixes we currently advertise to the peer.
    pub advertised: u64,
}

/// What outbound treatment a group of peers shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    ebgp: bool,
    /// Route reflector clients get routes from other internal peers.
    rr_client: bool,
    /// Paths per prefix in ADD-PATH families (`None`: the best path only).
    add_path_send: Option<usize>,
    export_policy: Option<Arc<Policy>>,
    transit: bool,
    long_lived: bool,
    /// The next hop we set (external peers or next-hop-self), else `None`.
    next_hop: Option<SelfNextHop>,
    tx: WireContextKey,
    families: Vec<AfiSafi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WireContextKey(bool, bool, bool, bool);

impl From<WireContext> for WireContextKey {
    fn from(c: WireContext) -> Self {
        WireContextKey(
            c.four_octet_as,
            c.extended_message,
            c.add_path_ipv4,
            c.add_path_ipv6,
        )
    }
}

/// The addresses we put as next hop: the session's own, and one of the
/// other family for routes of that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SelfNextHop {
    session: IpAddr,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    link_local: Option<Ipv6Addr>,
}

impl SelfNextHop {
    fn of(info: &PeerInfo) -> Self {
        SelfNextHop {
            session: info.local_address,
            ipv4: info.local_ipv4,
            ipv6: info.local_ipv6,
            link_local: info.local_link_local,
        }
    }

    /// The next hop for an IPv4 route: the session address if it is IPv4,
    /// else our IPv4 address, else (RFC 8950) the IPv6 session address.
    fn for_ipv4(&self) -> IpAddr {
        match self.session {
            IpAddr::V4(_) => self.session,
            IpAddr::V6(_) => self.ipv4.map(IpAddr::V4).unwrap_or(self.session),
        }
    }

    /// The next hop for an IPv6 route: the session address if it is IPv6,
    /// else our IPv6 address, else the IPv4-mapped session address.
    fn for_ipv6(&self) -> Ipv6Addr {
        match self.session {
            IpAddr::V6(a) => a,
            IpAddr::V4(a) => self.ipv6.unwrap_or(a.to_ipv6_mapped()),
        }
    }
}

/// What a group advertised for a prefix: the exported attributes and the peer
/// the route came from (which does not get it back).
#[derive(Debug, Clone)]
struct OutEntry {
    attrs: Arc<Attrs>,
    source: Option<PeerId>,
}

#[derive(Debug)]
struct Group {
    key: GroupKey,
    tx: WireContext,
    members: Vec<PeerId>,
    adj_out: PrefixMap<IpNet, OutEntry>,
    /// ADD-PATH groups: every path advertised per prefix, by our path ID.
    adj_paths: PrefixMap<IpNet, Vec<(u32, OutEntry)>>,
    /// Prefixes advertised per family, and per family the prefixes whose
    /// every path comes from one source peer (which does not get them):
    /// advertised counts without a scan.
    count: [u64; 2],
    by_source: HashMap<PeerId, [u64; 2]>,
}

/// A prefix and one of our path IDs (0 without ADD-PATH).
type PathKey = (IpNet, u32);

/// A change of what a group advertises: one path (ID 0 without ADD-PATH).
#[derive(Debug, Clone)]
struct Change {
    prefix: IpNet,
    path_id: u32,
    old: Option<OutEntry>,
    new: Option<OutEntry>,
}

/// The peer all of a prefix's advertised paths come from, if one.
fn sole_source(entries: &[(u32, OutEntry)]) -> Option<PeerId> {
    let first = entries.first()?.1.source?;
    entries
        .iter()
        .all(|(_, e)| e.source == Some(first))
        .then_some(first)
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    group: usize,
    /// Prefixes (and path ids) the peer announced to us that were rejected
    /// (loops, bad first AS, import policy). What it announced and we
    /// accepted is its paths in the Loc-RIB, found there: a per-peer index
    /// of them cost 48 MB for a full table.
    rejected: PrefixMap<(IpNet, u32), ()>,
    /// Received and rejected counts per family (IPv4, IPv6), kept as they
    /// change so status reads cost nothing.
    received_count: [u64; 2],
    rejected_count: [u64; 2],
    end_of_rib: HashSet<AfiSafi>,
    /// Whether the session is Established (false: kept only for its stale
    /// paths during a graceful restart).
    up: bool,
    /// Received entries kept over a graceful restart that the peer has not
    /// announced again since (RFC 4724 §4.2).
    stale: HashSet<(IpNet, u32)>,
    /// While the peer has an import policy: what it sent, before the policy
    /// (the Adj-RIB-In), so a new policy applies without asking it again.
    adj_in: PrefixMap<(IpNet, u32), Arc<Attrs>>,
}

/// Exported attribute sets computed in one pass over a group, keyed by the
/// best path's attribute set (its address), whether the route is our own and
/// the family, and for reflected routes the ORIGINATOR_ID to set: a million
/// prefixes sharing a few sets cost a few
/// transformations, and equal exports share one `Arc` (so comparing old and
/// new exports is a pointer comparison).
type ExportMemo = HashMap<(usize, bool, bool, Option<Ipv4Addr>), (Arc<Attrs>, Arc<Attrs>)>;

/// Why a peer is not sent a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// There is no usable path.
    NoRoute,
    /// The route came from this peer.
    ItsOwn,
    /// The family is not negotiated with the peer.
    Family,
    /// The route carries NO_ADVERTISE.
    NoAdvertise,
    /// NO_EXPORT or NO_EXPORT_SUBCONFED, and the peer is external.
    NoExport,
    /// Internal route, internal peer, and neither is a reflector client.
    NotReflected,
    /// Long-lived stale, and the peer did not negotiate LLGR.
    LongLivedStale,
    /// An export rule rejected it.
    ExportFilter,
    /// Learned from an external peer, the peer is external, and no export
    /// rule accepted it (no transit).
    NoTransit,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotSent::NoRoute => "no usable path",
            NotSent::ItsOwn => "the route came from this peer",
            NotSent::Family => "the family is not negotiated with this peer",
            NotSent::NoAdvertise => "the route carries NO_ADVERTISE",
            NotSent::NoExport => "NO_EXPORT towards an external peer",
            NotSent::NotReflected => {
                "internal route to an internal peer, and neither is a reflector client"
            }
            NotSent::LongLivedStale => "long-lived stale, and the peer did not negotiate LLGR",
            NotSent::ExportFilter => "rejected by an export rule",
            NotSent::NoTransit => {
                "from one external peer to another, and no export rule accepted it"
            }
        })
    }
}

/// One path of a peer's Adj-RIB-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjInEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// The ADD-PATH identifier (0 without ADD-PATH).
    pub path_id: u32,
    /// The attributes, when known.
    pub attrs: Option<Arc<Attrs>>,
    /// Rejected on import.
    pub rejected: bool,
}

/// Why each candidate path of a prefix won or lost, and what each peer is sent.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Every candidate, best first, with the decision step that put it below
    /// the best one (`None` for the best; `Some(NextHopUnreachable)` for
    /// unusable ones), and whether it is in the multipath set.
    pub candidates: Vec<(Path, Option<Step>, bool)>,
    /// Per Established peer: sent, or why not.
    pub peers: Vec<(PeerId, Result<(), NotSent>)>,
}

/// What a group's export of a prefix starts from.
struct ExportSource {
    /// The best path's attributes.
    attrs: Arc<Attrs>,
    /// The route is our own.
    local: bool,
    /// The peer it came from.
    source: Option<PeerId>,
    /// For a reflected route, the ORIGINATOR_ID it carries out.
    reflected: Option<Ipv4Addr>,
}

/// 0 for IPv4, 1 for IPv6: the index of per-family counters.
fn af_index(p: &IpNet) -> usize {
    usize::from(matches!(p, IpNet::V6(_)))
}

impl Group {
    /// Sets what the group advertises for a prefix, keeping the counters.
    fn put(&mut self, prefix: IpNet, entry: Option<OutEntry>) -> Option<OutEntry> {
        let i = af_index(&prefix);
        if let Some(e) = &entry {
            self.count[i] += 1;
            if let Some(src) = e.source {
                self.by_source.entry(src).or_default()[i] += 1;
            }
        }
        let old = match entry {
            Some(e) => self.adj_out.insert(prefix, e),
            None => self.adj_out.remove(&prefix),
        };
        if let Some(o) = &old {
            self.count[i] -= 1;
            if let Some(src) = o.source
                && let Some(c) = self.by_source.get_mut(&src)
            {
                c[i] -= 1;
            }
        }
        old
    }

    /// Sets the paths an ADD-PATH group advertises for a prefix, keeping the
    /// counters, and records what changed.
    fn put_paths(&mut self, prefix: IpNet, new: Vec<(u32, OutEntry)>, changes: &mut Vec<Change>) {
        let i = af_index(&prefix);
        let old = if new.is_empty() {
            self.adj_paths.remove(&prefix).unwrap_or_default()
        } else {
            self.adj_paths
                .insert(prefix, new.clone())
                .unwrap_or_default()
        };
        for (entries, sign) in [(&old, -1i64), (&new, 1)] {
            if entries.is_empty() {
                continue;
            }
            let apply = |c: &mut u64| *c = c.wrapping_add_signed(sign);
            apply(&mut self.count[i]);
            if let Some(src) = sole_source(entries) {
                apply(&mut self.by_source.entry(src).or_default()[i]);
            }
        }
        for (id, o) in &old {
            match new.iter().find(|(n, _)| n == id) {
                Some((_, n)) if Arc::ptr_eq(&o.attrs, &n.attrs) && o.source == n.source => {}
                Some((_, n)) => changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: Some(o.clone()),
                    new: Some(n.clone()),
                }),
                None => changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: Some(o.clone()),
                    new: None,
                }),
            }
        }
        for (id, n) in &new {
            if !old.iter().any(|(o, _)| o == id) {
                changes.push(Change {
                    prefix,
                    path_id: *id,
                    old: None,
                    new: Some(n.clone()),
                });
            }
        }
    }

    fn clear(&mut self) {
        self.adj_out.clear();
        self.adj_paths.clear();
        self.count = [0; 2];
        self.by_source.clear();
    }
}

/// The decision process' view of the RIB's peers and next hops.
struct RibContext<'a> {
    unreachable: &'a HashSet<IpAddr>,
    peers: &'a HashMap<PeerId, PeerState>,
    local_asn: u32,
    router_id: Ipv4Addr,
}

impl RibContext<'_> {
    /// The peer a path came from (`None` for our own, or a peer gone).
    fn peer(&self, p: &Path) -> Option<&PeerInfo> {
        match p.source() {
            Source::Local => None,
            Source::Peer(id) => self.peers.get(&id).map(|s| &s.info),
        }
    }
}

impl PathContext for RibContext<'_> {
    fn reachable(&self, p: &Path) -> bool {
        p.attrs
            .next_hop
            .is_none_or(|nh| !self.unreachable.contains(&nh))
            || p.is_local()
    }

    fn peer_address(&self, p: &Path) -> Option<IpAddr> {
        self.peer(p).map(|i| i.address)
    }

    fn ebgp(&self, p: &Path) -> bool {
        self.peer(p).is_some_and(|i| i.asn != self.local_asn)
    }

    fn router_id(&self, p: &Path) -> Ipv4Addr {
        // Ours for our own paths. A peer's paths go with its state, so a
        // path without a peer does not reach the decision process.
        self.peer(p).map_or(self.router_id, |i| i.router_id)
    }
}

/// Per-prefix state: every candidate and the chosen one.
#[derive(Debug, Default, Clone)]
pub struct Dest {
    /// Candidates. Most prefixes have one, kept inline: no allocation per
    /// prefix (64 MB of them at a million, and a million small long-lived
    /// allocations among the transient ones fragment the heap), at the cost
    /// of one path's room in every slot of the Loc-RIB's table.
    pub paths: smallvec::SmallVec<[Path; 1]>,
    /// Index of the best path (32 bits: a `usize` made every Loc-RIB slot
    /// 8 bytes larger).
    best: Option<u32>,
}

impl Dest {
    /// Index of the best path in [`Dest::paths`], if any path is usable.
    pub fn best_index(&self) -> Option<usize> {
        self.best.map(|i| i as usize)
    }

    /// The best path, if any path is usable.
    pub fn best_path(&self) -> Option<&Path> {
        self.best_index().map(|i| &self.paths[i])
    }

    /// Adds a candidate, growing a spilled list by exactly one: a `Vec`'s
    /// growth would reserve room for several.
    fn push(&mut self, path: Path) {
        self.paths.reserve_exact(1);
        self.paths.push(path);
    }
}

/// A change for the forwarding table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The next hops to forward to, or `None` to remove the prefix.
    pub next_hops: Option<Vec<IpAddr>>,
}

/// Encoded messages, in order, shared by every peer they go to: a group's
/// members get one encoding, not a copy each.
pub type Messages = Arc<Vec<Vec<u8>>>;

/// What a flush sends, and what it freed.
#[derive(Debug, Default)]
pub struct Outbound {
    /// (peer, messages) pairs.
    pub messages: Vec<(PeerId, Messages)>,
    /// Attribute sets the flush found unused, freed when this is dropped.
    /// After a full table's withdrawal that is a quarter million of them,
    /// ~450 ms of freeing: the owner may hand them to another thread.
    pub garbage: Vec<Arc<Attrs>>,
}

/// RIB-wide configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RibConfig {
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
pub struct Rib {
    config: RibConfig,
    peers: HashMap<PeerId, PeerState>,
    groups: Vec<Group>,
    loc: PrefixMap<IpNet, Dest>,
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
    /// Prefixes whose best path may have changed since [`Rib::fib_changes`].
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
    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    fn intern(&mut self, a: Attrs) -> Arc<Attrs> {
        if let Some(x) = self.interned.get(&a) {
            return x.clone();
        }
        let arc = Arc::new(a);
        self.interned.insert(arc.clone());
        self.interned_list.push(arc.clone());
        arc
    }

    /// Takes the interned attribute sets nothing refers to any more out of
    /// the table; they are freed when the returned sets are dropped.
    pub fn collect_garbage(&mut self) -> Vec<Arc<Attrs>> {
        self.sweep = Some(0);
        self.sweep_some(usize::MAX)
    }

    /// Looks at up to `max` interned sets of the sweep under way and takes
    /// out those nothing else refers to.
    fn sweep_some(&mut self, max: usize) -> Vec<Arc<Attrs>> {
        let mut garbage = Vec::new();
        let Some(mut i) = self.sweep else {
            return garbage;
        };
        let mut looked = 0;
        while i < self.interned_list.len() && looked < max {
            looked += 1;
            // Held by the set and the list only.
            if Arc::strong_count(&self.interned_list[i]) == 2 {
                let a = self.interned_list.swap_remove(i);
                self.interned.remove(&a);
                garbage.push(a);
            } else {
                i += 1;
            }
        }
        self.sweep = (i < self.interned_list.len()).then_some(i);
        garbage
    }

    /// Number of distinct attribute sets stored.
    pub fn attribute_sets(&self) -> usize {
        self.interned.len()
    }

    /// Number of prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.loc.len()
    }

    /// Whether the RIB holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.loc.is_empty()
    }

    /// The state of one prefix.
    pub fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        self.loc.get(prefix)
    }

    /// Every prefix and its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Dest)> {
        self.loc.iter()
    }

    /// The info of an Established peer.
    pub fn peer(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&id).map(|p| &p.info)
    }

    fn context(&self) -> RibContext<'_> {
        RibContext {
            unreachable: &self.unreachable,
            peers: &self.peers,
            local_asn: self.config.local_asn,
            router_id: self.config.router_id,
        }
    }

    /// The address of the peer a path came from (`None` for our own).
    pub fn peer_address(&self, path: &Path) -> Option<IpAddr> {
        self.context().peer_address(path)
    }

    /// Next hops currently marked unreachable.
    pub fn unreachable_next_hops(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.unreachable.iter().copied()
    }

    /// Marks a next hop reachable or not (from the kernel's view); affected
    /// prefixes are re-decided.
    pub fn set_next_hop_reachable(&mut self, next_hop: IpAddr, reachable: bool) {
        let changed = if reachable {
            self.unreachable.remove(&next_hop)
        } else {
            self.unreachable.insert(next_hop)
        };
        if !changed {
            return;
        }
        let affected: Vec<IpNet> = self
            .loc
            .iter()
            .filter(|(_, d)| d.paths.iter().any(|p| p.attrs.next_hop == Some(next_hop)))
            .map(|(p, _)| p)
            .collect();
        for p in affected {
            self.decide(p);
        }
    }

    /// A session came up: the peer joins its update group and will get the
    /// full table (then End-of-RIB) at the next [`Rib::flush`].
    pub fn peer_up(&mut self, id: PeerId, info: PeerInfo) -> Outbound {
        // A peer back from a graceful restart keeps its stale entries until
        // it announces them again or sends End-of-RIB.
        let kept = match self.peers.get(&id) {
            Some(s) if !s.up => self.peers.remove(&id),
            _ => {
                self.peer_down(id);
                None
            }
        };
        let (group, fresh) = self.join_group(id, &info);
        let mut state = PeerState {
            info,
            group,
            rejected: PrefixMap::new(),
            received_count: [0; 2],
            rejected_count: [0; 2],
            end_of_rib: HashSet::new(),
            up: true,
            stale: HashSet::new(),
            adj_in: PrefixMap::new(),
        };
        if let Some(k) = kept {
            state.rejected = k.rejected;
            state.received_count = k.received_count;
            state.rejected_count = k.rejected_count;
            state.stale = k.stale;
            state.adj_in = k.adj_in;
        }
        self.peers.insert(id, state);
        if self.deferring {
            // Everything goes out when the deferral ends (Rib::end_deferral).
            return Outbound::default();
        }
        let mut out = Outbound::default();
        if fresh {
            out = self.fill_group(group, id);
        }
        out.messages.push((id, Arc::new(self.initial_table(id))));
        out
    }

    /// Adds a peer to the update group for its treatment (creating one if
    /// needed); returns the group and whether its Adj-RIB-Out must be filled
    /// from the Loc-RIB: a new group, or one that had a single member (which
    /// keeps nothing that came from that member).
    fn join_group(&mut self, id: PeerId, info: &PeerInfo) -> (usize, bool) {
        let ebgp = info.asn != self.config.local_asn;
        let key = GroupKey {
            ebgp,
            rr_client: !ebgp && info.rr_client,
            add_path_send: info
                .add_path_send
                .filter(|_| info.tx.add_path_ipv4 || info.tx.add_path_ipv6),
            export_policy: info.export_policy.clone(),
            transit: info.transit,
            long_lived: info.long_lived,
            next_hop: (ebgp || info.next_hop_self).then(|| SelfNextHop::of(info)),
            tx: info.tx.into(),
            families: info.families.clone(),
        };
        let group = match self
            .groups
            .iter()
            .position(|g| g.key == key && !g.members.is_empty())
        {
            Some(g) => g,
            None => {
                let g = Group {
                    key,
                    tx: info.tx,
                    members: Vec::new(),
                    adj_out: PrefixMap::new(),
                    adj_paths: PrefixMap::new(),
                    count: [0; 2],
                    by_source: HashMap::new(),
                };
                // Reuse an empty slot so indices stay small.
                match self.groups.iter().position(|g| g.members.is_empty()) {
                    Some(i) => {
                        self.groups[i] = g;
                        i
                    }
                    None => {
                        self.groups.push(g);
                        self.groups.len() - 1
                    }
                }
            }
        };
        let fill = self.groups[group].members.len() <= 1;
        self.groups[group].members.push(id);
        (group, fill)
    }

    /// Fills a group's Adj-RIB-Out from the Loc-RIB after `joiner` joined
    /// it: a new group, or one whose single member kept nothing of its own.
    /// Whatever this changes for the members already there (prefixes the
    /// last flush has not seen yet) is returned for them.
    fn fill_group(&mut self, group: usize, joiner: PeerId) -> Outbound {
        let prefixes: Vec<IpNet> = self.loc.keys().collect();
        let changes = self.update_group(group, &prefixes);
        let mut out = Outbound::default();
        if changes.is_empty() {
            return out;
        }
        let g = &self.groups[group];
        for &m in g.members.iter().filter(|m| **m != joiner) {
            if let Some(state) = self.peers.get(&m) {
                let msgs = encode_changes(&g.key, &g.tx, &state.info, &changes, Some(m));
                if !msgs.is_empty() {
                    out.messages.push((m, Arc::new(msgs)));
                }
            }
        }
        out
    }

    /// The peers with an Established session, in id order.
    fn established_peers(&self) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.up)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A peer's initial table, then End-of-RIB per family.
    fn initial_table(&self, id: PeerId) -> Vec<Vec<u8>> {
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        let mut msgs = self.table_messages(id, None);
        let tx = self.groups[state.group].tx;
        for af in &state.info.families {
            let eor = crate::wire::Message::Update(Update::end_of_rib(*af));
            if let Ok(b) = eor.to_bytes(&tx) {
                msgs.push(b);
            }
        }
        msgs
    }

    /// Starts deferring route selection (RFC 4724 §4.1, after our own
    /// restart): paths are taken in and decided, but nothing is advertised and
    /// the FIB hears nothing until [`Rib::end_deferral`].
    pub fn defer(&mut self) {
        self.deferring = true;
    }

    /// Whether route selection is deferred.
    pub fn deferring(&self) -> bool {
        self.deferring
    }

    /// Ends the deferral: every Established peer gets its full table and
    /// End-of-RIB, and the FIB every prefix decided meanwhile.
    pub fn end_deferral(&mut self) -> Outbound {
        if !std::mem::take(&mut self.deferring) {
            return Outbound::default();
        }
        let dirty = self.dirty.take(usize::MAX);
        self.fib_dirty.extend(dirty);
        let prefixes: Vec<IpNet> = self.loc.keys().collect();
        for g in 0..self.groups.len() {
            self.groups[g].clear();
            if !self.groups[g].members.is_empty() {
                self.update_group(g, &prefixes);
            }
        }
        let ids = self.established_peers();
        Outbound {
            messages: ids
                .into_iter()
                .map(|id| (id, Arc::new(self.initial_table(id))))
                .collect(),
            garbage: Vec::new(),
        }
    }

    /// Everything a peer's group advertises (that did not come from the peer),
    /// encoded, optionally for one family only.
    fn table_messages(&self, id: PeerId, only: Option<AfiSafi>) -> Vec<Vec<u8>> {
        let Some(state) = self.peers.get(&id) else {
            return Vec::new();
        };
        let g = &self.groups[state.group];
        let mut by_attrs: HashMap<Arc<Attrs>, Vec<(IpNet, u32)>> = HashMap::new();
        let wanted =
            |p: &IpNet, e: &OutEntry| e.source != Some(id) && only.is_none_or(|af| family(p) == af);
        for (p, e) in g.adj_out.iter() {
            if wanted(&p, e) {
                by_attrs.entry(e.attrs.clone()).or_default().push((p, 0));
            }
        }
        for (p, paths) in g.adj_paths.iter() {
            for (path_id, e) in paths {
                if wanted(&p, e) {
                    by_attrs
                        .entry(e.attrs.clone())
                        .or_default()
                        .push((p, *path_id));
                }
            }
        }
        let mut msgs = Vec::new();
        for (attrs, prefixes) in by_attrs {
            encode_announce(&g.key, &g.tx, &state.info, &attrs, &prefixes, &mut msgs);
        }
        msgs
    }

    /// The peer asked for a family again (route refresh): resend what we advertise.
    pub fn refresh(&self, id: PeerId, af: AfiSafi) -> Outbound {
        if self.deferring {
            return Outbound::default();
        }
        Outbound {
            messages: vec![(id, Arc::new(self.table_messages(id, Some(af))))],
            garbage: Vec::new(),
        }
    }

    /// A session went down: its paths go and its group membership ends.
    pub fn peer_down(&mut self, id: PeerId) {
        let Some(state) = self.peers.remove(&id) else {
            return;
        };
        let g = &mut self.groups[state.group];
        g.members.retain(|m| *m != id);
        if g.members.is_empty() {
            g.clear();
        }
        // Its rejected entries carry no path: nothing more to remove.
        let keys: Vec<(IpNet, u32)> = self
            .paths_of(id)
            .map(|(p, path)| (p, path.path_id))
            .collect();
        for (prefix, path_id) in keys {
            self.remove_path(prefix, Source::Peer(id), path_id);
        }
        // Its paths are gone: their ADD-PATH IDs need not be remembered
        // (fresh IDs are never reused, so nothing can be confused).
        self.out_path_ids.retain(|(s, _), _| *s != Source::Peer(id));
    }

    /// A session with a peer that negotiated graceful restart went down
    /// without a NOTIFICATION (RFC 4724 §4.2): its paths in `families` stay,
    /// marked stale, and keep forwarding until the peer announces them again,
    /// sends End-of-RIB, or [`Rib::drop_stale`] runs (restart or stale timer).
    /// Its other paths go at once. Returns how many entries were kept.
    pub fn peer_down_graceful(&mut self, id: PeerId, families: &[AfiSafi]) -> usize {
        if !self.peers.contains_key(&id) {
            return 0;
        }
        let accepted: Vec<(IpNet, u32)> = self
            .paths_of(id)
            .map(|(p, path)| (p, path.path_id))
            .collect();
        let Some(state) = self.peers.get_mut(&id) else {
            return 0;
        };
        let group = state.group;
        let was_up = std::mem::replace(&mut state.up, false);
        state.end_of_rib.clear();
        // Rejected entries carry no path: nothing to keep forwarding.
        let mut gone: Vec<(IpNet, u32)> = state.rejected.keys().collect();
        for key in accepted {
            if families.contains(&family(&key.0)) {
                state.stale.insert(key);
            } else {
                gone.push(key);
            }
        }
        let kept = state.stale.len();
        if was_up {
            let g = &mut self.groups[group];
            g.members.retain(|m| *m != id);
            if g.members.is_empty() {
                g.clear();
            }
        }
        for key in gone {
            self.forget(id, key);
        }
        if kept == 0 {
            self.peers.remove(&id);
        }
        kept
    }

    /// Removes a peer's stale entries (of one family, or all): End-of-RIB
    /// came, or the restart or stale timer ran out. Returns how many went.
    pub fn drop_stale(&mut self, id: PeerId, only: Option<AfiSafi>) -> usize {
        let Some(state) = self.peers.get_mut(&id) else {
            return 0;
        };
        let gone: Vec<(IpNet, u32)> = state
            .stale
            .iter()
            .filter(|k| only.is_none_or(|af| family(&k.0) == af))
            .copied()
            .collect();
        for key in &gone {
            state.stale.remove(key);
        }
        let done = !state.up && state.stale.is_empty();
        for key in &gone {
            self.forget(id, *key);
        }
        if done {
            self.peers.remove(&id);
        }
        gone.len()
    }

    /// The restart timer of a peer that negotiated long-lived graceful restart
    /// ran out (RFC 9494 §4.2): its stale paths in `families` turn long-lived
    /// stale: they carry LLGR_STALE, are least preferred, and go only to peers
    /// that negotiated LLGR. Paths marked NO_LLGR, and stale paths of other
    /// families, go now. Returns how many stay.
    pub fn enter_long_lived_stale(&mut self, id: PeerId, families: &[AfiSafi]) -> usize {
        let Some(state) = self.peers.get(&id) else {
            return 0;
        };
        let keys: Vec<(IpNet, u32)> = state.stale.iter().copied().collect();
        let mut kept = 0;
        for key in keys {
            let current = self.loc.get(&key.0).and_then(|d| {
                d.paths
                    .iter()
                    .find(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
                    .map(|p| p.attrs.clone())
            });
            let Some(a) = current else {
                continue;
            };
            if !families.contains(&family(&key.0)) || a.has_community(Community::NO_LLGR) {
                if let Some(s) = self.peers.get_mut(&id) {
                    s.stale.remove(&key);
                }
                self.forget(id, key);
                continue;
            }
            kept += 1;
            if a.has_community(Community::LLGR_STALE) {
                continue;
            }
            let mut marked = (*a).clone();
            marked.communities.push(Community::LLGR_STALE);
            let marked = self.intern(marked);
            if let Some(p) = self.loc.get_mut(&key.0).and_then(|d| {
                d.paths
                    .iter_mut()
                    .find(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
            }) {
                p.attrs = marked;
            }
            self.decide(key.0);
        }
        if kept == 0
            && self
                .peers
                .get(&id)
                .is_some_and(|s| !s.up && s.stale.is_empty())
        {
            self.peers.remove(&id);
        }
        kept
    }

    /// How many stale entries a peer has.
    pub fn stale_count(&self, id: PeerId) -> usize {
        self.peers.get(&id).map_or(0, |s| s.stale.len())
    }

    /// Whether a peer's session is down with its paths kept stale.
    pub fn is_restarting(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|s| !s.up)
    }

    /// Drops one received entry of a peer and its path.
    fn forget(&mut self, id: PeerId, key: (IpNet, u32)) {
        let had_path = self.remove_path(key.0, Source::Peer(id), key.1);
        if let Some(s) = self.peers.get_mut(&id) {
            s.adj_in.remove(&key);
            let i = af_index(&key.0);
            if s.rejected.remove(&key).is_some() {
                s.received_count[i] -= 1;
                s.rejected_count[i] -= 1;
            } else if had_path {
                s.received_count[i] -= 1;
            }
        }
    }

    /// Removes a path; whether there was one.
    fn remove_path(&mut self, prefix: IpNet, source: Source, path_id: u32) -> bool {
        let Some(d) = self.loc.get_mut(&prefix) else {
            return false;
        };
        let before = d.paths.len();
        d.paths
            .retain(|p| !(p.source() == source && p.path_id == path_id));
        let removed = d.paths.len() != before;
        if removed {
            self.decide(prefix);
        }
        removed
    }

    /// A peer's paths in the Loc-RIB (what it sent and we accepted), by
    /// prefix: a pass over the whole table.
    fn paths_of(&self, id: PeerId) -> impl Iterator<Item = (IpNet, &Path)> + '_ {
        let source = Source::Peer(id);
        self.loc.iter().flat_map(move |(prefix, d)| {
            d.paths
                .iter()
                .filter(move |p| p.source() == source)
                .map(move |p| (prefix, p))
        })
    }

    /// Processes an UPDATE from an Established peer. `treat_as_withdraw` comes
    /// from RFC 7606 problems found while decoding.
    pub fn update(&mut self, id: PeerId, update: &Update, treat_as_withdraw: bool) {
        let Some(state) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(af) = update.as_end_of_rib() {
            state.end_of_rib.insert(af);
            // What the peer did not announce again before End-of-RIB is gone.
            self.drop_stale(id, Some(af));
            return;
        }
        let info = state.info.clone();
        let ebgp = info.asn != self.config.local_asn;
        let restarting = !state.stale.is_empty();
        for n in update.withdrawn_all() {
            let key = (n.prefix.trunc(), n.path_id.unwrap_or(0));
            if restarting && let Some(s) = self.peers.get_mut(&id) {
                s.stale.remove(&key);
            }
            self.forget(id, key);
        }
        let announced: Vec<Nlri> = update.announced().copied().collect();
        if announced.is_empty() {
            return;
        }
        let mut attrs = Attrs::from_update(&update.attributes, info.rx.four_octet_as);
        if ebgp {
            // RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
            attrs.local_pref = None;
        }
        let reject = treat_as_withdraw || self.rejects(&info, &attrs);
        let attrs = self.intern(attrs);
        for n in announced {
            let key = (n.prefix.trunc(), n.path_id.unwrap_or(0));
            if restarting && let Some(s) = self.peers.get_mut(&id) {
                s.stale.remove(&key);
            }
            let accepted = if reject {
                // What the peer sent now replaces what it sent before, also
                // in the kept Adj-RIB-In: a new policy must not revive it.
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.remove(&key);
                }
                None
            } else if let Some(policy) = &info.import_policy {
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.insert(key, attrs.clone());
                }
                self.import(policy, key.0, &attrs)
            } else {
                Some(attrs.clone())
            };
            self.set_received(id, key, accepted);
        }
    }

    /// Runs an import policy on a route: its attributes, or `None` if rejected.
    fn import(&mut self, policy: &Policy, prefix: IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        let ev = policy.evaluate(&prefix, attrs, self.config.local_asn);
        match (ev.verdict, ev.attrs) {
            (Verdict::Rejected, _) => None,
            (_, Some(changed)) => Some(self.intern(changed)),
            (_, None) => Some(attrs.clone()),
        }
    }

    /// Records what a peer sent for one key (`None`: rejected) and updates
    /// the candidate paths.
    fn set_received(&mut self, id: PeerId, key: (IpNet, u32), attrs: Option<Arc<Attrs>>) {
        let reject = attrs.is_none();
        let had_path = self.loc.get(&key.0).is_some_and(|d| {
            d.paths
                .iter()
                .any(|p| p.source() == Source::Peer(id) && p.path_id == key.1)
        });
        if let Some(s) = self.peers.get_mut(&id) {
            let i = af_index(&key.0);
            let was_rejected = if reject {
                s.rejected.insert(key, ()).is_some()
            } else {
                s.rejected.remove(&key).is_some()
            };
            if !was_rejected && !had_path {
                s.received_count[i] += 1;
            }
            match (was_rejected, reject) {
                (true, false) => s.rejected_count[i] -= 1,
                (false, true) => s.rejected_count[i] += 1,
                _ => {}
            }
        }
        let Some(attrs) = attrs else {
            self.remove_path(key.0, Source::Peer(id), key.1);
            return;
        };
        let path = Path::new(Source::Peer(id), key.1, attrs);
        let d = self.loc.get_or_default(key.0);
        match d
            .paths
            .iter_mut()
            .find(|p| p.source == path.source && p.path_id == path.path_id)
        {
            Some(p) if Arc::ptr_eq(&p.attrs, &path.attrs) => return,
            Some(p) => *p = path,
            None => d.push(path),
        }
        self.decide(key.0);
    }

    /// Changes a peer's policies, live: a new import policy runs on what the
    /// peer sent (kept, so the peer is not asked again); a new export policy
    /// moves the peer to another update group, and the returned messages
    /// bring it from what it had to what it gets now. The session stays up.
    pub fn set_policies(
        &mut self,
        id: PeerId,
        import: Option<Arc<Policy>>,
        export: Option<Arc<Policy>>,
    ) -> Outbound {
        let Some(state) = self.peers.get_mut(&id) else {
            return Outbound::default();
        };
        if state.info.import_policy != import {
            if state.info.import_policy.is_none() {
                // No policy ran so far: what the peer sent is what we have.
                let kept: Vec<((IpNet, u32), Arc<Attrs>)> = self
                    .paths_of(id)
                    .map(|(prefix, p)| ((prefix, p.path_id), p.attrs.clone()))
                    .collect();
                if let Some(s) = self.peers.get_mut(&id) {
                    s.adj_in.extend(kept);
                }
            }
            let Some(state) = self.peers.get_mut(&id) else {
                return Outbound::default();
            };
            state.info.import_policy = import.clone();
            // Stale entries (a restarting peer's) keep their state until the
            // peer announces them again or they are swept.
            let entries: Vec<((IpNet, u32), Arc<Attrs>)> = state
                .adj_in
                .iter()
                .filter(|(k, _)| !state.stale.contains(k))
                .map(|(k, a)| (k, a.clone()))
                .collect();
            if import.is_none()
                && let Some(s) = self.peers.get_mut(&id)
            {
                s.adj_in.clear();
            }
            for (key, raw) in entries {
                let accepted = match &import {
                    Some(p) => self.import(p, key.0, &raw),
                    None => Some(raw),
                };
                self.set_received(id, key, accepted);
            }
        }
        let same_export = self
            .peers
            .get(&id)
            .is_some_and(|s| s.info.export_policy == export);
        if same_export {
            return Outbound::default();
        }
        if let Some(s) = self.peers.get_mut(&id) {
            s.info.export_policy = export;
        }
        self.regroup(id)
    }

    /// Moves a peer to the update group its (changed) treatment calls for,
    /// and returns the messages that take it from the old group's view to the
    /// new one's: announcements, changes and withdrawals, nothing else.
    fn regroup(&mut self, id: PeerId) -> Outbound {
        let Some(state) = self.peers.get(&id) else {
            return Outbound::default();
        };
        if !state.up {
            return Outbound::default();
        }
        let old_group = state.group;
        // While selection is deferred nothing was sent yet: only the
        // membership moves, and the deferral's end fills every group.
        let before = (!self.deferring).then(|| self.view(old_group, id));
        let info = state.info.clone();
        let g = &mut self.groups[old_group];
        g.members.retain(|m| *m != id);
        if g.members.is_empty() {
            g.clear();
        }
        // Join the group of the new treatment (a new one is filled).
        let (group, fresh) = self.join_group(id, &info);
        if let Some(s) = self.peers.get_mut(&id) {
            s.group = group;
        }
        let Some(before) = before else {
            return Outbound::default();
        };
        let mut out = Outbound::default();
        if fresh {
            out = self.fill_group(group, id);
        }
        let Some(state) = self.peers.get(&id) else {
            return Outbound::default();
        };
        let after = self.view(group, id);
        let mut changes = Vec::new();
        for (k, old) in &before {
            let new = after.get(k);
            let same = new.is_some_and(|n| Arc::ptr_eq(&n.attrs, &old.attrs));
            if !same {
                changes.push(Change {
                    prefix: k.0,
                    path_id: k.1,
                    old: Some(old.clone()),
                    new: new.cloned(),
                });
            }
        }
        for (k, new) in &after {
            if !before.contains_key(k) {
                changes.push(Change {
                    prefix: k.0,
                    path_id: k.1,
                    old: None,
                    new: Some(new.clone()),
                });
            }
        }
        let g = &self.groups[group];
        let msgs = encode_changes(&g.key, &g.tx, &state.info, &changes, Some(id));
        out.messages.push((id, Arc::new(msgs)));
        out
    }

    /// What a group sends one of its members, by prefix and path ID.
    fn view(&self, group: usize, viewer: PeerId) -> HashMap<PathKey, OutEntry> {
        let g = &self.groups[group];
        let mut v = HashMap::new();
        for (p, e) in g.adj_out.iter() {
            if e.source != Some(viewer) {
                v.insert((p, 0), e.clone());
            }
        }
        for (p, paths) in g.adj_paths.iter() {
            for (path_id, e) in paths {
                if e.source != Some(viewer) {
                    v.insert((p, *path_id), e.clone());
                }
            }
        }
        v
    }

    /// Inbound checks that make a path unusable (RFC 4271 §9.1.2, RFC 4456 §8).
    fn rejects(&self, info: &PeerInfo, a: &Attrs) -> bool {
        let ebgp = info.asn != self.config.local_asn;
        if a.as_path.contains(self.config.local_asn) {
            return true;
        }
        if ebgp
            && self.config.enforce_first_as
            && a.as_path.segments.first().and_then(|s| s.asns.first()) != Some(&info.asn)
        {
            return true;
        }
        if !ebgp
            && (a.originator_id == Some(self.config.router_id)
                || a.cluster_list.contains(&self.config.cluster_id))
        {
            // Our own route reflected back, or a reflection loop (RFC 4456 §8).
            return true;
        }
        a.next_hop.is_none() || a.origin.is_none()
    }

    /// Replaces the set of locally originated routes.
    pub fn set_local_routes(&mut self, routes: impl IntoIterator<Item = (IpNet, Attrs)>) {
        let new: HashMap<IpNet, Attrs> = routes.into_iter().map(|(p, a)| (p.trunc(), a)).collect();
        let old: Vec<IpNet> = self.local_routes.keys().copied().collect();
        for p in old {
            if !new.contains_key(&p) {
                self.local_routes.remove(&p);
                self.remove_path(p, Source::Local, 0);
            }
        }
        for (p, a) in new {
            if self.local_routes.get(&p).is_some_and(|x| **x == a) {
                continue;
            }
            let attrs = self.intern(a);
            self.local_routes.insert(p, attrs.clone());
            let path = Path::new(Source::Local, 0, attrs);
            let d = self.loc.get_or_default(p);
            d.paths.retain(|x| !x.is_local());
            d.push(path);
            self.decide(p);
        }
    }

    /// Re-runs the decision for a prefix and marks it for export if the best changed.
    fn decide(&mut self, prefix: IpNet) {
        let new_best = {
            let Some(d) = self.loc.get(&prefix) else {
                return;
            };
            select_best(&d.paths, self.config.decision, &self.context())
        };
        if let Some(d) = self.loc.get_mut(&prefix) {
            // A prefix's paths are a few per peer: never near 2^32.
            d.best = new_best.and_then(|i| u32::try_from(i).ok());
            if d.paths.is_empty() {
                self.loc.remove(&prefix);
            }
        }
        // Whether the export really changes is settled per group at flush time.
        self.dirty.insert(prefix);
    }

    /// The best path of a prefix.
    pub fn best(&self, prefix: &IpNet) -> Option<&Path> {
        self.loc.get(prefix).and_then(Dest::best_path)
    }

    /// What a group must advertise for a prefix, if anything. Exported
    /// attribute sets are interned and remembered in `memo` for the pass.
    fn export_for_group(
        &mut self,
        group: usize,
        prefix: &IpNet,
        memo: &mut ExportMemo,
    ) -> Option<OutEntry> {
        let best = self.best(prefix)?.clone();
        self.export_path(group, prefix, &best, memo).ok()
    }

    /// What a group is sent for one path of a prefix, or why nothing.
    fn export_path(
        &mut self,
        group: usize,
        prefix: &IpNet,
        path: &Path,
        memo: &mut ExportMemo,
    ) -> Result<OutEntry, NotSent> {
        let ExportSource {
            attrs: a,
            local,
            source,
            reflected,
        } = self.export_source(group, prefix, path)?;
        let key = (
            Arc::as_ptr(&a) as usize,
            local,
            matches!(prefix, IpNet::V6(_)),
            reflected,
        );
        let attrs = match memo.get(&key) {
            Some((_, out)) => out.clone(),
            None => {
                let out = self.exported_attrs(group, prefix, &a, local, reflected);
                let out = self.intern(out);
                // The memo holds the source set too, so its address (the
                // key) cannot be reused by another set during the pass.
                memo.insert(key, (a, out.clone()));
                out
            }
        };
        // Routes from one external peer to another only when a rule says so.
        let g = &self.groups[group].key;
        let g_ebgp = g.ebgp;
        let transit = g.ebgp && self.context().ebgp(path) && source.is_some() && !g.transit;
        let Some(policy) = g.export_policy.clone() else {
            return if transit {
                Err(NotSent::NoTransit)
            } else {
                Ok(OutEntry { attrs, source })
            };
        };
        let ev = policy.evaluate(prefix, &attrs, self.config.local_asn);
        match ev.verdict {
            Verdict::Rejected => return Err(NotSent::ExportFilter),
            Verdict::Default if transit => return Err(NotSent::NoTransit),
            _ => {}
        }
        let mut changed = ev.attrs;
        if ev.next_hop_self
            && let Some(nh) = self.group_next_hop(group)
        {
            let a = changed.get_or_insert_with(|| (*attrs).clone());
            match prefix {
                IpNet::V4(_) => a.next_hop = Some(nh.for_ipv4()),
                IpNet::V6(_) => {
                    a.next_hop = Some(IpAddr::V6(nh.for_ipv6()));
                    a.link_local = nh.link_local;
                }
            }
        }
        if let Some(c) = changed.as_mut()
            && g_ebgp
        {
            // RFC 4271 §5.1.5: never to an external peer, whatever a rule set.
            c.local_pref = None;
        }
        let attrs = match changed {
            Some(c) => self.intern(c),
            None => attrs,
        };
        Ok(OutEntry { attrs, source })
    }

    /// Our next hop towards a group's members.
    fn group_next_hop(&self, group: usize) -> Option<SelfNextHop> {
        let g = &self.groups[group];
        g.key.next_hop.or_else(|| {
            let m = g.members.first().and_then(|m| self.peers.get(m))?;
            Some(SelfNextHop::of(&m.info))
        })
    }

    /// Where a group's export of a prefix starts from, if it gets it at all.
    fn export_source(
        &self,
        group: usize,
        prefix: &IpNet,
        best: &Path,
    ) -> Result<ExportSource, NotSent> {
        let key = &self.groups[group].key;
        let af = match prefix {
            IpNet::V4(_) => AfiSafi::IPV4_UNICAST,
            IpNet::V6(_) => AfiSafi::IPV6_UNICAST,
        };
        if !key.families.contains(&af) {
            return Err(NotSent::Family);
        }
        let a = &best.attrs;
        if a.has_community(Community::NO_ADVERTISE) {
            return Err(NotSent::NoAdvertise);
        }
        // Long-lived stale routes only to peers that know what they are.
        if !key.long_lived && a.has_community(Community::LLGR_STALE) {
            return Err(NotSent::LongLivedStale);
        }
        if key.ebgp
            && (a.has_community(Community::NO_EXPORT)
                || a.has_community(Community::NO_EXPORT_SUBCONFED))
        {
            return Err(NotSent::NoExport);
        }
        let source_peer = match best.source() {
            Source::Peer(p) => Some(p),
            Source::Local => None,
        };
        // Internal routes reach internal peers only by reflection (RFC 4456
        // §6): a client's routes go to every internal peer, a non-client's to
        // clients only.
        let mut reflected = None;
        let cx = self.context();
        if !key.ebgp
            && !cx.ebgp(best)
            && let Some(src) = source_peer
        {
            let from_client = self.peers.get(&src).is_some_and(|s| s.info.rr_client);
            if !(from_client || key.rr_client) {
                return Err(NotSent::NotReflected);
            }
            reflected = Some(a.originator_id.unwrap_or_else(|| cx.router_id(best)));
        }
        Ok(ExportSource {
            attrs: a.clone(),
            local: best.source() == Source::Local,
            source: source_peer,
            reflected,
        })
    }

    /// The attributes a group is sent for a best path with attributes `a`.
    fn exported_attrs(
        &self,
        group: usize,
        prefix: &IpNet,
        a: &Attrs,
        local: bool,
        reflected: Option<Ipv4Addr>,
    ) -> Attrs {
        let key = &self.groups[group].key;
        let mut out = a.clone();
        if let Some(originator) = reflected {
            out.originator_id = Some(originator);
            out.cluster_list.insert(0, self.config.cluster_id);
        }
        if key.ebgp {
            prepend(&mut out.as_path, self.config.local_asn);
            out.local_pref = None;
            if !local {
                // RFC 4271 §5.1.4: a received MED is not passed to another AS.
                out.med = None;
            }
            out.originator_id = None;
            out.cluster_list.clear();
        } else {
            out.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        }
        if out.origin.is_none() {
            out.origin = Some(Origin::Igp);
        }
        // The next hop: ours towards external peers, with next-hop-self, and
        // for our own routes; otherwise unchanged.
        let own = key.next_hop.or_else(|| {
            local.then(|| {
                let m = self.groups[group]
                    .members
                    .first()
                    .and_then(|m| self.peers.get(m));
                m.map(|p| SelfNextHop::of(&p.info))
            })?
        });
        if let Some(nh) = own {
            match prefix {
                IpNet::V4(_) => out.next_hop = Some(nh.for_ipv4()),
                IpNet::V6(_) => {
                    out.next_hop = Some(IpAddr::V6(nh.for_ipv6()));
                    out.link_local = nh.link_local;
                }
            }
        }
        if !key.ebgp {
            // Link-local next hops mean nothing beyond the link.
            if matches!(prefix, IpNet::V6(_)) && key.next_hop.is_none() && !local {
                out.link_local = None;
            }
        }
        out
    }

    /// Brings a group's Adj-RIB-Out up to date for some prefixes and returns
    /// what changed.
    fn update_group(&mut self, g: usize, prefixes: &[IpNet]) -> Vec<Change> {
        let mut memo = ExportMemo::new();
        let mut changes = Vec::new();
        // A group of one (most external peers: each has its own next hop)
        // does not keep what came from that one peer: it is never sent back.
        // A second member joining refills the group (`join_group`).
        let sole = match self.groups[g].members.as_slice() {
            [m] => Some(*m),
            _ => None,
        };
        let wanted = |e: &OutEntry| sole.is_none() || e.source != sole;
        if let Some(limit) = self.groups[g].key.add_path_send {
            for p in prefixes {
                let mut new = self.export_paths(g, p, limit, &mut memo);
                new.retain(|(_, e)| wanted(e));
                self.groups[g].put_paths(*p, new, &mut changes);
            }
            return changes;
        }
        for p in prefixes {
            // The sole member's own best path would be filtered out below:
            // skip exporting it (policy, attribute rewrite, interning), which
            // for the peer a full table comes from is every prefix.
            let own =
                sole.is_some_and(|m| self.best(p).is_some_and(|b| b.source() == Source::Peer(m)));
            let new = if own {
                None
            } else {
                self.export_for_group(g, p, &mut memo).filter(|e| wanted(e))
            };
            let old = self.groups[g].put(*p, new.clone());
            let same = match (&old, &new) {
                (Some(o), Some(n)) => Arc::ptr_eq(&o.attrs, &n.attrs) && o.source == n.source,
                (None, None) => true,
                _ => false,
            };
            if !same {
                changes.push(Change {
                    prefix: *p,
                    path_id: 0,
                    old,
                    new,
                });
            }
        }
        changes
    }

    /// The paths an ADD-PATH group gets for a prefix, best first, each with
    /// our path ID: up to `limit` in families where the peers receive
    /// several, else the best one.
    fn export_paths(
        &mut self,
        g: usize,
        prefix: &IpNet,
        limit: usize,
        memo: &mut ExportMemo,
    ) -> Vec<(u32, OutEntry)> {
        let Some(d) = self.loc.get(prefix) else {
            return Vec::new();
        };
        let limit = if self.groups[g].tx.add_path(family(prefix)) {
            limit
        } else {
            1
        };
        let mut order: Vec<usize> = {
            let cx = self.context();
            (0..d.paths.len())
                .filter(|&i| cx.reachable(&d.paths[i]))
                .collect()
        };
        // The best path first, then the rest by a total order that follows
        // the decision steps (`compare` itself is not transitive: MED counts
        // only within one neighbouring AS, and sorting needs a total order).
        let best = d.best_index();
        let cx = self.context();
        order.sort_by_cached_key(|&i| {
            let p = &d.paths[i];
            let a = &p.attrs;
            (
                Some(i) != best,
                a.has_community(Community::LLGR_STALE),
                std::cmp::Reverse(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
                p.source() != Source::Local,
                a.as_path.path_length(),
                a.origin,
                a.med.unwrap_or(0),
                !cx.ebgp(p),
                a.originator_id.unwrap_or_else(|| cx.router_id(p)),
                a.cluster_list.len(),
                self.peer_address(p),
                p.path_id,
            )
        });
        let paths: Vec<Path> = order.iter().map(|&i| d.paths[i].clone()).collect();
        let mut out = Vec::new();
        for path in &paths {
            if out.len() >= limit {
                break;
            }
            if let Ok(e) = self.export_path(g, prefix, path, memo) {
                // Without ADD-PATH in this family there is one path and no
                // ID on the wire: keep it under 0, so a new best path
                // replaces the old one instead of a withdrawal and an
                // announcement.
                let id = if limit == 1 && !self.groups[g].tx.add_path(family(prefix)) {
                    0
                } else {
                    self.out_path_id(path.source(), path.path_id)
                };
                out.push((id, e));
            }
        }
        out
    }

    /// Our ADD-PATH ID for paths from a source.
    fn out_path_id(&mut self, source: Source, path_id: u32) -> u32 {
        if let Some(id) = self.out_path_ids.get(&(source, path_id)) {
            return *id;
        }
        let id = self.next_out_path_id;
        // 0 means "no ADD-PATH" in the groups; skip it when wrapping.
        self.next_out_path_id = self.next_out_path_id.checked_add(1).unwrap_or(1);
        self.out_path_ids.insert((source, path_id), id);
        id
    }

    /// Computes what changed since the last flush and encodes it per peer.
    pub fn flush(&mut self) -> Outbound {
        self.flush_some(usize::MAX)
    }

    /// Whether changes wait for a flush (never while selection is deferred),
    /// or a garbage sweep for more flush calls.
    pub fn has_pending(&self) -> bool {
        !self.deferring && (!self.dirty.is_empty() || self.sweep.is_some())
    }

    /// Changed prefixes waiting for a flush.
    pub fn pending_len(&self) -> usize {
        self.dirty.order.len()
    }

    /// [`Rib::flush`] for at most `max` of the changed prefixes; the rest
    /// wait for the next call. A full table's batch can take the owner
    /// hundreds of milliseconds to flush in one go; in slices, it can
    /// answer reads between them.
    pub fn flush_some(&mut self, max: usize) -> Outbound {
        let mut out = Outbound::default();
        if self.deferring {
            return out;
        }
        let dirty = self.dirty.take(max);
        if dirty.is_empty() {
            out.garbage = self.sweep_some(SWEEP_STEP);
            return out;
        }
        self.fib_dirty.extend(dirty.iter().copied());
        for g in 0..self.groups.len() {
            if self.groups[g].members.is_empty() {
                continue;
            }
            let changes = self.update_group(g, &dirty);
            if changes.is_empty() {
                continue;
            }
            let group = &self.groups[g];
            // Members that are the source of some change need their own view;
            // all others share one encoding.
            let special: HashSet<PeerId> = changes
                .iter()
                .flat_map(|c| {
                    [
                        c.old.as_ref().and_then(|e| e.source),
                        c.new.as_ref().and_then(|e| e.source),
                    ]
                })
                .flatten()
                .collect();
            let mut shared: Option<Messages> = None;
            for &m in &group.members {
                let Some(state) = self.peers.get(&m) else {
                    continue;
                };
                let viewer = special.contains(&m).then_some(m);
                let msgs = if viewer.is_none() {
                    shared
                        .get_or_insert_with(|| {
                            Arc::new(encode_changes(
                                &group.key,
                                &group.tx,
                                &state.info,
                                &changes,
                                None,
                            ))
                        })
                        .clone()
                } else {
                    Arc::new(encode_changes(
                        &group.key,
                        &group.tx,
                        &state.info,
                        &changes,
                        viewer,
                    ))
                };
                if !msgs.is_empty() {
                    out.messages.push((m, msgs));
                }
            }
        }
        // Once the whole batch is out: the sets no longer referenced are
        // known only then. A sweep goes on a bounded step per flush.
        if self.sweep.is_none()
            && self.dirty.is_empty()
            && self.interned.len() > 4096
            && self.interned.len() > 2 * self.loc.len()
        {
            self.sweep = Some(0);
        }
        out.garbage = self.sweep_some(SWEEP_STEP);
        out
    }

    /// What the forwarding table needs to learn since the last call: for each
    /// prefix whose best path may have changed, where to forward now (`None`:
    /// nothing to install, the prefix is gone or only originated here).
    pub fn fib_changes(&mut self) -> Vec<FibChange> {
        let changed = self.take_best_changes();
        self.fib_routes(&changed)
    }

    /// The prefixes whose best path may have changed since the last call
    /// (or [`Rib::fib_changes`]); nothing while selection is deferred.
    pub fn take_best_changes(&mut self) -> Vec<IpNet> {
        if self.deferring {
            return Vec::new();
        }
        self.fib_dirty.drain().collect()
    }

    /// Explains a prefix: every candidate path and why it won or lost, and per
    /// Established peer whether the best path is sent to it, or why not.
    pub fn explain(&mut self, prefix: &IpNet) -> Option<Explanation> {
        let d = self.loc.get(prefix)?;
        let best = d.best_path().cloned();
        let multipath = self.fib_next_hops(prefix).unwrap_or_default();
        let cx = self.context();
        let mut candidates: Vec<(Path, Option<Step>, bool)> = d
            .paths
            .iter()
            .map(|p| {
                let step = match &best {
                    Some(b) if b.source == p.source && b.path_id == p.path_id => None,
                    Some(b) => Some(compare(b, p, self.config.decision, &cx).1),
                    None => Some(Step::NextHopUnreachable),
                };
                let in_set = step.is_none_or(Step::ties_for_multipath)
                    && p.attrs.next_hop.is_some_and(|nh| multipath.contains(&nh));
                (p.clone(), step, in_set)
            })
            .collect();
        candidates.sort_by_key(|(_, step, _)| step.is_some());
        let ids = self.established_peers();
        let mut peers = Vec::with_capacity(ids.len());
        let mut memo = ExportMemo::new();
        for id in ids {
            let verdict = match &best {
                None => Err(NotSent::NoRoute),
                Some(b) if b.source() == Source::Peer(id) => Err(NotSent::ItsOwn),
                Some(b) => {
                    let g = self.peers[&id].group;
                    self.export_path(g, prefix, b, &mut memo).map(|_| ())
                }
            };
            peers.push((id, verdict));
        }
        Some(Explanation { candidates, peers })
    }

    /// Where the FIB forwards a prefix: the next hops of its multipath set
    /// (the best path and the paths equal to it down to the router-ID
    /// tie-break: same LOCAL_PREF, AS_PATH length, ORIGIN, MED, eBGP or iBGP),
    /// at most `maximum_paths`, sorted. `None` for prefixes only we originate.
    pub fn fib_next_hops(&self, prefix: &IpNet) -> Option<Vec<IpAddr>> {
        let d = self.loc.get(prefix)?;
        let bi = d.best_index()?;
        let best = &d.paths[bi];
        if best.source() == Source::Local {
            return None;
        }
        let mut hops = vec![best.attrs.next_hop?];
        if self.config.maximum_paths > 1 && d.paths.len() > 1 {
            let cx = self.context();
            for (i, p) in d.paths.iter().enumerate() {
                if hops.len() >= self.config.maximum_paths {
                    break;
                }
                if i == bi || p.source() == Source::Local || !cx.reachable(p) {
                    continue;
                }
                let (_, step) = compare(best, p, self.config.decision, &cx);
                let equal = step.ties_for_multipath();
                if let Some(nh) = p.attrs.next_hop
                    && equal
                    && !hops.contains(&nh)
                {
                    hops.push(nh);
                }
            }
            hops.sort();
        }
        Some(hops)
    }

    /// [`Rib::fib_next_hops`] for some prefixes, as FIB changes; nothing
    /// while selection is deferred (the FIB hears nothing then either).
    pub fn fib_routes(&self, prefixes: &[IpNet]) -> Vec<FibChange> {
        if self.deferring {
            return Vec::new();
        }
        prefixes
            .iter()
            .map(|p| {
                let prefix = p.trunc();
                FibChange {
                    prefix,
                    next_hops: self.fib_next_hops(&prefix),
                }
            })
            .collect()
    }

    /// Every prefix the FIB forwards, with its next hops; with `via`, only
    /// those forwarded through one of these next hops. Nothing while
    /// selection is deferred. A pass over the Loc-RIB: for a new FIB
    /// subscriber, and for the rare times a next hop's way out moves.
    pub fn fib_table(&self, via: Option<&[IpAddr]>) -> Vec<FibChange> {
        if self.deferring {
            return Vec::new();
        }
        let through = |nh: &IpAddr| via.is_none_or(|v| v.contains(nh));
        self.loc
            .iter()
            // Cheap first: a candidate through one of them at all.
            .filter(|(_, d)| {
                via.is_none()
                    || d.paths
                        .iter()
                        .any(|p| p.attrs.next_hop.as_ref().is_some_and(through))
            })
            .filter_map(|(prefix, _)| {
                let next_hops = self.fib_next_hops(&prefix)?;
                next_hops.iter().any(through).then_some(FibChange {
                    prefix,
                    next_hops: Some(next_hops),
                })
            })
            .collect()
    }

    /// Prefix counts for a peer and family.
    pub fn counts(&self, id: PeerId, af: AfiSafi) -> PrefixCounts {
        let Some(s) = self.peers.get(&id) else {
            return PrefixCounts::default();
        };
        let i = match af {
            AfiSafi::IPV4_UNICAST => 0,
            AfiSafi::IPV6_UNICAST => 1,
            _ => return PrefixCounts::default(),
        };
        let received = s.received_count[i];
        let rejected = s.rejected_count[i];
        // A peer that is down (restarting) is in no group: it is sent nothing.
        let advertised = if s.up {
            let g = &self.groups[s.group];
            let own = g.by_source.get(&id).map_or(0, |c| c[i]);
            g.count[i].saturating_sub(own)
        } else {
            0
        };
        PrefixCounts {
            received,
            accepted: received - rejected,
            advertised,
        }
    }

    /// What a peer sent us (its Adj-RIB-In), sorted: per prefix and path ID,
    /// the attributes the path competes with (after the import policy), or,
    /// for a path rejected on import (loop, invalid, filtered), `rejected`
    /// with the attributes as sent when the peer's import policy keeps them.
    pub fn adj_rib_in(&self, id: PeerId) -> Vec<AdjInEntry> {
        let Some(st) = self.peers.get(&id) else {
            return Vec::new();
        };
        let mut out: Vec<AdjInEntry> = self
            .paths_of(id)
            .map(|(prefix, p)| AdjInEntry {
                prefix,
                path_id: p.path_id,
                attrs: Some(p.attrs.clone()),
                rejected: false,
            })
            .collect();
        out.extend(st.rejected.keys().map(|(prefix, path_id)| AdjInEntry {
            prefix,
            path_id,
            attrs: st.adj_in.get(&(prefix, path_id)).cloned(),
            rejected: true,
        }));
        out.sort_by_key(|e| (e.prefix, e.path_id));
        out
    }

    /// What a peer is sent (its Adj-RIB-Out), sorted: per prefix and path ID
    /// (0 without ADD-PATH), the attributes its update group exports, before
    /// the per-session next hop.
    pub fn adj_rib_out(&self, id: PeerId) -> Vec<(IpNet, u32, Arc<Attrs>)> {
        let Some(g) = self.peers.get(&id).and_then(|st| self.groups.get(st.group)) else {
            return Vec::new();
        };
        // A route is never sent back to the peer it came from.
        let mut out: Vec<(IpNet, u32, Arc<Attrs>)> = if g.key.add_path_send.is_none() {
            g.adj_out
                .iter()
                .filter(|(_, e)| e.source != Some(id))
                .map(|(p, e)| (p, 0, e.attrs.clone()))
                .collect()
        } else {
            g.adj_paths
                .iter()
                .flat_map(|(p, paths)| {
                    paths
                        .iter()
                        .filter(|(_, e)| e.source != Some(id))
                        .map(move |(pid, e)| (p, *pid, e.attrs.clone()))
                })
                .collect()
        };
        out.sort_by_key(|(p, id, _)| (*p, *id));
        out
    }

    /// Whether the peer sent End-of-RIB for a family.
    pub fn end_of_rib_received(&self, id: PeerId, af: AfiSafi) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|s| s.end_of_rib.contains(&af))
    }
}

/// The attribute list to send for exported attributes (IPv4 next hop in
/// NEXT_HOP; IPv6 next hops go into MP_REACH_NLRI, built by the packer).
fn wire_attributes(a: &Attrs, v4: bool, tx: &WireContext) -> Vec<PathAttribute> {
    let mut v = Vec::with_capacity(8);
    v.push(PathAttribute::new(AttrValue::Origin(
        a.origin.unwrap_or(Origin::Igp),
    )));
    v.push(PathAttribute::new(AttrValue::AsPath(a.as_path.clone())));
    if v4 && let Some(IpAddr::V4(nh)) = a.next_hop {
        v.push(PathAttribute::new(AttrValue::NextHop(nh)));
    }
    if let Some(m) = a.med {
        v.push(PathAttribute::new(AttrValue::Med(m)));
    }
    if let Some(l) = a.local_pref {
        v.push(PathAttribute::new(AttrValue::LocalPref(l)));
    }
    if a.atomic_aggregate {
        v.push(PathAttribute::new(AttrValue::AtomicAggregate));
    }
    if let Some(g) = a.aggregator {
        v.push(PathAttribute::new(AttrValue::Aggregator(g)));
    }
    if !a.communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::Communities(
            a.communities.clone(),
        )));
    }
    if let Some(o) = a.originator_id {
        v.push(PathAttribute::new(AttrValue::OriginatorId(o)));
    }
    if !a.cluster_list.is_empty() {
        v.push(PathAttribute::new(AttrValue::ClusterList(
            a.cluster_list.clone(),
        )));
    }
    if !a.ext_communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::ExtendedCommunities(
            a.ext_communities.clone(),
        )));
    }
    if !tx.four_octet_as
        && a.as_path
            .segments
            .iter()
            .any(|s| s.asns.iter().any(|&x| x > 0xFFFF))
    {
        // RFC 6793 §4.2.2: towards a 2-octet speaker, the real path rides in AS4_PATH.
        v.push(PathAttribute::new(AttrValue::As4Path(a.as_path.clone())));
        if let Some(g) = a.aggregator.filter(|g| g.asn > 0xFFFF) {
            v.push(PathAttribute::new(AttrValue::As4Aggregator(g)));
        }
    }
    if !a.large_communities.is_empty() {
        v.push(PathAttribute::new(AttrValue::LargeCommunities(
            a.large_communities.clone(),
        )));
    }
    v.extend(a.other.iter().cloned());
    v
}

fn family(p: &IpNet) -> AfiSafi {
    match p {
        IpNet::V4(_) => AfiSafi::IPV4_UNICAST,
        IpNet::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// An NLRI as a peer with this layout reads it: with our path ID in ADD-PATH
/// families.
fn out_nlri(tx: &WireContext, prefix: IpNet, path_id: u32) -> Nlri {
    Nlri {
        path_id: tx.add_path(family(&prefix)).then_some(path_id),
        prefix,
    }
}

fn encode_announce(
    _key: &GroupKey,
    tx: &WireContext,
    _info: &PeerInfo,
    attrs: &Attrs,
    prefixes: &[(IpNet, u32)],
    out: &mut Vec<Vec<u8>>,
) {
    let packer = UpdatePacker::new(tx);
    let (v4, v6): (Vec<PathKey>, Vec<PathKey>) = prefixes
        .iter()
        .partition(|(p, _)| matches!(p, IpNet::V4(_)));
    let nlri = |ps: &[(IpNet, u32)]| -> Vec<Nlri> {
        ps.iter().map(|(p, id)| out_nlri(tx, *p, *id)).collect()
    };
    let report = |r: Result<(), EncodeError>| {
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot encode an UPDATE; routes not sent");
        }
    };
    if !v4.is_empty() {
        let wire = wire_attributes(attrs, true, tx);
        match attrs.next_hop {
            Some(IpAddr::V6(g)) => {
                // RFC 8950: IPv4 routes with an IPv6 next hop.
                let nh = NextHop::Ipv6 {
                    global: g,
                    link_local: attrs.link_local,
                };
                report(packer.announce(AfiSafi::IPV4_UNICAST, &wire, Some(&nh), &nlri(&v4), out));
            }
            _ => report(packer.announce(AfiSafi::IPV4_UNICAST, &wire, None, &nlri(&v4), out)),
        }
    }
    if !v6.is_empty() {
        let wire = wire_attributes(attrs, false, tx);
        let global = match attrs.next_hop {
            Some(IpAddr::V6(g)) => g,
            Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
            None => Ipv6Addr::UNSPECIFIED,
        };
        let nh = NextHop::Ipv6 {
            global,
            link_local: attrs.link_local,
        };
        report(packer.announce(AfiSafi::IPV6_UNICAST, &wire, Some(&nh), &nlri(&v6), out));
    }
}

/// Encodes a batch of changes as one member (`viewer`, or any non-source member
/// when `None`) must see them.
fn encode_changes(
    key: &GroupKey,
    tx: &WireContext,
    info: &PeerInfo,
    changes: &[Change],
    viewer: Option<PeerId>,
) -> Vec<Vec<u8>> {
    fn visible(e: &Option<OutEntry>, viewer: Option<PeerId>) -> Option<&OutEntry> {
        e.as_ref()
            .filter(|e| viewer.is_none() || e.source != viewer)
    }
    let mut announce: HashMap<Arc<Attrs>, Vec<(IpNet, u32)>> = HashMap::new();
    let mut withdraw: Vec<(IpNet, u32)> = Vec::new();
    for c in changes {
        match (visible(&c.old, viewer), visible(&c.new, viewer)) {
            (_, Some(n)) => announce
                .entry(n.attrs.clone())
                .or_default()
                .push((c.prefix, c.path_id)),
            (Some(_), None) => withdraw.push((c.prefix, c.path_id)),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    let packer = UpdatePacker::new(tx);
    for af in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
        let w: Vec<Nlri> = withdraw
            .iter()
            .filter(|(p, _)| family(p) == af)
            .map(|(p, id)| out_nlri(tx, *p, *id))
            .collect();
        if !w.is_empty()
            && let Err(e) = packer.withdraw(af, &w, &mut out)
        {
            tracing::error!(error = %e, "cannot encode a withdrawal");
        }
    }
    for (attrs, prefixes) in announce {
        encode_announce(key, tx, info, &attrs, &prefixes, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_rib_entries_stay_small() {
        // A million of each at a full table: a byte here is a megabyte
        // there, and a third of the table's slots are empty ones.
        assert!(
            std::mem::size_of::<Path>() <= 32,
            "{}",
            std::mem::size_of::<Path>()
        );
        assert!(
            std::mem::size_of::<Dest>() <= 48,
            "{}",
            std::mem::size_of::<Dest>()
        );
    }
}
