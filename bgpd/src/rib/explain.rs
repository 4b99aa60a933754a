//! `petrel explain`: why each candidate path of a prefix won or lost, and
//! why each peer is or is not sent the best one.

use foldhash::HashMapExt;
use ipnet::IpNet;

use super::decision::{Path, Source, Step, compare};
use super::export::{ExportMemo, NotSent};
use super::{PeerId, Rib};

/// Why each candidate path of a prefix won or lost, and what each peer is sent.
#[derive(Debug, Clone)]
pub(crate) struct Explanation {
    /// Every candidate, best first, with the decision step that put it below
    /// the best one (`None` for the best; `Some(NextHopUnreachable)` for
    /// unusable ones), and whether it is in the multipath set.
    pub candidates: Vec<(Path, Option<Step>, bool)>,
    /// Per Established peer: sent, or why not.
    pub peers: Vec<(PeerId, Result<(), NotSent>)>,
}

impl Rib {
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
}
