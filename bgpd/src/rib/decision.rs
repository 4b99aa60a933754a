//! The decision process (RFC 4271 §9.1): candidate paths, how two of them
//! compare, and the best one per prefix in the Loc-RIB.

use foldhash::{HashMap, HashSet};
use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::peers::{PeerInfo, PeerState};
use super::{Attrs, PeerId, Rib};
use crate::wire::attr::Community;

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
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
pub(crate) struct Path {
    /// Its attributes.
    pub attrs: Arc<Attrs>,
    /// ADD-PATH identifier it was received with (0 without ADD-PATH).
    pub path_id: u32,
    /// Where it came from: [`LOCAL_SOURCE`] or the peer's ID (an enum
    /// would take 8 bytes).
    pub(super) source: u32,
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
pub(crate) trait PathContext {
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
pub(crate) enum Step {
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
pub(crate) const DEFAULT_LOCAL_PREF: u32 = 100;

/// Compares two paths; `Less` means `a` is better. Also returns the step that decided.
pub(crate) fn compare(
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
pub(crate) fn select_best(
    paths: &[Path],
    opts: DecisionOptions,
    cx: &dyn PathContext,
) -> Option<usize> {
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

/// The decision process' view of the RIB's peers and next hops.
pub(super) struct RibContext<'a> {
    pub(super) unreachable: &'a HashSet<IpAddr>,
    pub(super) peers: &'a HashMap<PeerId, PeerState>,
    pub(super) local_asn: u32,
    pub(super) router_id: Ipv4Addr,
}

impl RibContext<'_> {
    /// The peer a path came from (`None` for our own, or a peer gone).
    pub(super) fn peer(&self, p: &Path) -> Option<&PeerInfo> {
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
pub(crate) struct Dest {
    /// Candidates. Most prefixes have one, kept inline: no allocation per
    /// prefix (64 MB of them at a million, and a million small long-lived
    /// allocations among the transient ones fragment the heap), at the cost
    /// of one path's room in every slot of the Loc-RIB's table.
    pub paths: smallvec::SmallVec<[Path; 1]>,
    /// Index of the best path (32 bits: a `usize` made every Loc-RIB slot
    /// 8 bytes larger).
    pub(super) best: Option<u32>,
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
    pub(super) fn push(&mut self, path: Path) {
        self.paths.reserve_exact(1);
        self.paths.push(path);
    }
}

impl Rib {
    /// What the decision process needs of this RIB's peers and next hops.
    pub(super) fn context(&self) -> RibContext<'_> {
        RibContext {
            unreachable: &self.unreachable,
            peers: &self.peers,
            local_asn: self.config.local_asn,
            router_id: self.config.router_id,
        }
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

    /// Re-runs the decision for a prefix and marks it for export if the best changed.
    pub(super) fn decide(&mut self, prefix: IpNet) {
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
}
