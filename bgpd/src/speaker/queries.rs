//! Read-only answers: routes, a peer's Adj-RIBs, explanations.

use ipnet::IpNet;

use super::core::Core;
use super::handle::SpeakerError;
use super::view::{
    AdjRibSide, CandidateView, PathView, RouteExplanation, RouteFilter, RouteView, RoutesPage,
};
use crate::rib::AdjInEntry;
use crate::wire::AfiSafi;

impl Core {
    pub(super) fn explain(&mut self, prefix: &IpNet) -> Option<RouteExplanation> {
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

    /// A page of a peer's Adj-RIB-In or Adj-RIB-Out as route views (a path
    /// without attributes in the Adj-RIB-In was rejected on import),
    /// starting at part `from` of a listing ([`RoutesPage`]).
    pub(super) fn adj_rib_page(
        &self,
        peer: &str,
        side: AdjRibSide,
        from: usize,
    ) -> Result<RoutesPage, SpeakerError> {
        let id = self.find_peer(peer)?;
        let address = self.peers.get(&id).map(|p| p.address);
        let mut out: Vec<RouteView> = Vec::new();
        let (entries, next) = page(from, |p| match side {
            AdjRibSide::In => self.rib.adj_rib_in_part(id, p),
            AdjRibSide::Out => {
                let (entries, scanned, next) = self.rib.adj_rib_out_part(id, p);
                let entries = entries
                    .into_iter()
                    .map(|(prefix, path_id, a)| AdjInEntry {
                        prefix,
                        path_id,
                        attrs: Some(a),
                        rejected: false,
                    })
                    .collect();
                (entries, scanned, next)
            }
        });
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
        out.sort_by_key(|r| r.prefix);
        Ok(RoutesPage { routes: out, next })
    }

    /// Every route that matches `f`, sorted: every page at once, for a
    /// replay's report (a running speaker's callers read page by page).
    pub(super) fn routes(&self, f: &RouteFilter) -> Vec<RouteView> {
        let mut out = Vec::new();
        let mut from = Some(0);
        while let Some(part) = from {
            let page = self.routes_page(f, part);
            out.extend(page.routes);
            from = page.next;
        }
        out.sort_by_key(|r| r.prefix);
        out
    }

    /// A page of the routes that match `f`, starting at part `from` of a
    /// listing ([`RoutesPage`]); an exact prefix is a lookup, one page.
    pub(super) fn routes_page(&self, f: &RouteFilter, from: usize) -> RoutesPage {
        let fam_ok = |p: &IpNet| {
            f.family.is_none_or(|af| match p {
                IpNet::V4(_) => af == AfiSafi::IPV4_UNICAST,
                IpNet::V6(_) => af == AfiSafi::IPV6_UNICAST,
            })
        };
        let view = |p: IpNet, d: &crate::rib::Dest| {
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
        };
        if let Some(q) = f.prefix
            && !f.longer
        {
            let q = q.trunc();
            let routes = self
                .rib
                .lookup(&q)
                .filter(|_| fam_ok(&q))
                .map(|d| view(q, d))
                .into_iter()
                .collect();
            return RoutesPage { routes, next: None };
        }
        let (mut routes, next) = page(from, |p| {
            let (dests, next) = self.rib.loc_part(p);
            let scanned = dests.len();
            let routes = dests
                .into_iter()
                .filter(|(p, _)| fam_ok(p) && f.prefix.is_none_or(|q| q.contains(p)))
                .map(|(p, d)| view(p, d))
                .collect();
            (routes, scanned, next)
        });
        routes.sort_by_key(|r| r.prefix);
        RoutesPage { routes, next }
    }
}

/// Reads parts from `from` on with `read` (a part's items, the entries it
/// held, the next part) until a page is full: [`PAGE_ROUTES`] items, or
/// [`PAGE_SCANNED`] entries read however few matched. Empty parts cost
/// nothing, so a small table is one page. The items, and the part the next
/// page starts at.
fn page<T>(
    from: usize,
    mut read: impl FnMut(usize) -> (Vec<T>, usize, Option<usize>),
) -> (Vec<T>, Option<usize>) {
    let mut out = Vec::new();
    let mut part = Some(from);
    let mut scanned = 0;
    while let Some(p) = part
        && out.len() < PAGE_ROUTES
        && scanned < PAGE_SCANNED
    {
        let (items, n, next) = read(p);
        out.extend(items);
        scanned += n;
        part = next;
    }
    (out, part)
}

/// A page holds at least this many routes, unless the listing ends first:
/// a few milliseconds of the RIB owner's time.
const PAGE_ROUTES: usize = 1024;
/// A page reads parts until it has read this many entries (about 8 parts
/// at a million prefixes), however few of their routes match a filter.
const PAGE_SCANNED: usize = 32_768;
