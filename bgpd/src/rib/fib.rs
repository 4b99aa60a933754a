//! The FIB's view of the Loc-RIB: where each prefix forwards (its multipath
//! set), and what changed since the FIB last asked.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Rib;
use super::decision::{PathContext, Source, compare};

/// A change for the forwarding table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The next hops to forward to, or `None` to remove the prefix.
    pub next_hops: Option<Vec<IpAddr>>,
}

impl Rib {
    /// What the forwarding table needs to learn since the last call: for each
    /// prefix whose best path may have changed, where to forward now (`None`:
    /// nothing to install, the prefix is gone or only originated here).
    #[cfg(test)]
    pub fn fib_changes(&mut self) -> Vec<FibChange> {
        let changed = self.take_best_changes();
        self.fib_routes(&changed)
    }

    /// The prefixes whose best path may have changed since the last call
    /// (or `Rib::fib_changes`); nothing while selection is deferred.
    pub fn take_best_changes(&mut self) -> Vec<IpNet> {
        if self.deferring {
            return Vec::new();
        }
        self.fib_dirty.drain().collect()
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
}
