//! Read-only answers: routes, a peer's Adj-RIBs, explanations.

use ipnet::IpNet;

use super::core::Core;
use super::handle::SpeakerError;
use super::view::{AdjRibSide, CandidateView, PathView, RouteExplanation, RouteFilter, RouteView};
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

    /// A peer's Adj-RIB-In or Adj-RIB-Out as route views (a path without
    /// attributes in the Adj-RIB-In was rejected on import).
    pub(super) fn adj_rib(
        &self,
        peer: &str,
        side: AdjRibSide,
    ) -> Result<Vec<RouteView>, SpeakerError> {
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

    pub(super) fn routes(&self, f: &RouteFilter) -> Vec<RouteView> {
        let fam_ok = |p: &IpNet| {
            f.family.is_none_or(|af| match p {
                IpNet::V4(_) => af == AfiSafi::IPV4_UNICAST,
                IpNet::V6(_) => af == AfiSafi::IPV6_UNICAST,
            })
        };
        // An exact prefix is a lookup; only "and longer" walks the table.
        let found: Box<dyn Iterator<Item = (IpNet, &crate::rib::Dest)>> = match f.prefix {
            Some(q) if !f.longer => Box::new(
                self.rib
                    .lookup(&q.trunc())
                    .map(|d| (q.trunc(), d))
                    .into_iter(),
            ),
            Some(q) => Box::new(self.rib.iter().filter(move |(p, _)| q.contains(p))),
            None => Box::new(self.rib.iter()),
        };
        let mut v: Vec<RouteView> = found
            .filter(|(p, _)| fam_ok(p))
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
