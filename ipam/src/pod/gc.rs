//! Garbage collection of leaked pod addresses, sans-IO: the controller
//! feeds each pass what it sees (every block, where each pod is, which
//! nodes exist) and gets back what to report and what to give back.
//!
//! An address whose pod is gone (or runs on another node than the one
//! holding the address: the pod was made again elsewhere) is a *candidate*
//! from the first pass that sees it so; it is given back only once it has
//! stayed a candidate for the grace period, and the caller re-checks the
//! pod just before. An address held by a node that no longer exists goes at
//! once. An address without a recorded pod is never judged by pods (only
//! by its node). Each candidate is keyed by address *and* sequence number,
//! so an address given back and handed out again starts over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::block::{Block, Holder};

/// Where a pod is, as the controller's cache has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// No such pod.
    Missing,
    /// The pod exists, on this node (or not yet scheduled: `None`).
    On(Option<String>),
}

/// Why an address is a leak.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeakReason {
    /// Its pod no longer exists.
    PodGone,
    /// Its pod exists on another node (made again there).
    PodMoved {
        /// Where the pod is now.
        node: String,
    },
    /// The node that holds it no longer exists.
    NodeGone,
}

impl LeakReason {
    /// A short name, for Events and metrics (`PodGone`, `PodMoved`,
    /// `NodeGone`).
    pub fn name(&self) -> &'static str {
        match self {
            LeakReason::PodGone => "PodGone",
            LeakReason::PodMoved { .. } => "PodMoved",
            LeakReason::NodeGone => "NodeGone",
        }
    }
}

/// An address the pass judged leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The address.
    pub addr: IpAddr,
    /// The sequence number it was handed out under.
    pub sequence: u64,
    /// Its block.
    pub block: IpNet,
    /// Who holds it.
    pub holder: Holder,
    /// Why it is a leak.
    pub reason: LeakReason,
    /// When it was first seen as one (seconds since the Unix epoch).
    pub since: u64,
}

/// What one pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Addresses seen as leaks for the first time (report them).
    pub candidates: Vec<Leak>,
    /// Addresses to give back now (re-check the pod first, unless the
    /// reason is [`LeakReason::NodeGone`]).
    pub release: Vec<Leak>,
    /// Candidates no longer leaks (the pod came back): forgotten.
    pub cleared: Vec<(IpAddr, u64)>,
    /// Blocks whose node no longer exists: deleted once empty, else kept
    /// without a node (no new address is handed out of them) while other
    /// nodes still borrow from them.
    pub orphaned: Vec<IpNet>,
}

/// The collector's memory between passes: when each candidate was first
/// seen.
#[derive(Debug, Clone, Default)]
pub struct Gc {
    first_seen: BTreeMap<(IpAddr, u64), u64>,
}

impl Gc {
    /// A collector with no candidates (a new leader starts afresh: the
    /// grace period starts again, which only delays a release).
    pub fn new() -> Gc {
        Gc::default()
    }

    /// Candidates being watched.
    pub fn watching(&self) -> usize {
        self.first_seen.len()
    }

    /// Forgets a candidate (given back, or found alive on re-check).
    pub fn forget(&mut self, addr: IpAddr, sequence: u64) {
        self.first_seen.remove(&(addr, sequence));
    }

    /// One pass at `now` over `blocks`, with `pod` telling where a pod
    /// (`namespace/name`) is, and `nodes` the nodes that exist.
    pub fn pass(
        &mut self,
        blocks: &BTreeMap<IpNet, Block>,
        pod: impl Fn(&str) -> PodState,
        nodes: &BTreeSet<String>,
        now: u64,
        grace: u64,
    ) -> GcPlan {
        let mut plan = GcPlan::default();
        let mut seen = BTreeSet::new();
        for b in blocks.values() {
            if b.node.as_ref().is_some_and(|n| !nodes.contains(n)) {
                plan.orphaned.push(b.cidr);
            }
            for a in &b.allocations {
                let addr = b.address(a.ordinal);
                let reason = if !nodes.contains(&a.holder.node) {
                    Some(LeakReason::NodeGone)
                } else {
                    match a.holder.pod.as_deref().map(&pod) {
                        None => None,
                        Some(PodState::Missing) => Some(LeakReason::PodGone),
                        Some(PodState::On(Some(n))) if n != a.holder.node => {
                            Some(LeakReason::PodMoved { node: n })
                        }
                        Some(PodState::On(_)) => None,
                    }
                };
                let key = (addr, a.sequence);
                let Some(reason) = reason else {
                    if self.first_seen.remove(&key).is_some() {
                        plan.cleared.push(key);
                    }
                    continue;
                };
                seen.insert(key);
                let since = *self.first_seen.entry(key).or_insert_with(|| {
                    plan.candidates.push(Leak {
                        addr,
                        sequence: a.sequence,
                        block: b.cidr,
                        holder: a.holder.clone(),
                        reason: reason.clone(),
                        since: now,
                    });
                    now
                });
                if reason == LeakReason::NodeGone || since.saturating_add(grace) <= now {
                    plan.release.push(Leak {
                        addr,
                        sequence: a.sequence,
                        block: b.cidr,
                        holder: a.holder.clone(),
                        reason,
                        since,
                    });
                }
            }
        }
        // Candidates whose address was given back (or reused) meanwhile.
        self.first_seen.retain(|k, _| seen.contains(k));
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, node: &str, holders: &[(&str, Option<&str>, &str)]) -> Block {
        let mut b = Block::new(cidr.parse().expect("cidr"), "p", node, 0);
        for (handle, pod, on) in holders {
            b.assign(
                Holder {
                    handle: handle.to_string(),
                    pod: pod.map(str::to_string),
                    node: on.to_string(),
                },
                0,
                0,
            )
            .expect("room");
        }
        b
    }

    #[test]
    fn gone_pods_wait_for_the_grace_period_gone_nodes_do_not() {
        let blocks: BTreeMap<IpNet, Block> = [
            block(
                "10.0.0.0/28",
                "n1",
                &[
                    ("live", Some("ns/live"), "n1"),
                    ("gone", Some("ns/gone"), "n1"),
                    ("moved", Some("ns/moved"), "n1"),
                    ("unknown", None, "n1"),
                    ("borrower", Some("ns/b"), "n3"),
                ],
            ),
            block("10.0.0.16/28", "n3", &[("x", Some("ns/x"), "n3")]),
        ]
        .into_iter()
        .map(|b| (b.cidr, b))
        .collect();
        let pod = |p: &str| match p {
            "ns/live" => PodState::On(Some("n1".into())),
            "ns/moved" => PodState::On(Some("n2".into())),
            "ns/b" | "ns/x" => PodState::On(Some("n3".into())),
            _ => PodState::Missing,
        };
        let nodes: BTreeSet<String> = ["n1", "n2"].map(String::from).into();
        let mut gc = Gc::new();
        let plan = gc.pass(&blocks, pod, &nodes, 100, 900);
        let reasons: Vec<(&str, &str)> = plan
            .candidates
            .iter()
            .map(|l| (l.holder.handle.as_str(), l.reason.name()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("gone", "PodGone"),
                ("moved", "PodMoved"),
                ("borrower", "NodeGone"),
                ("x", "NodeGone")
            ]
        );
        // n3 is gone: its addresses go at once, its block is orphaned.
        let now: Vec<&str> = plan
            .release
            .iter()
            .map(|l| l.holder.handle.as_str())
            .collect();
        assert_eq!(now, ["borrower", "x"]);
        assert_eq!(
            plan.orphaned,
            vec!["10.0.0.16/28".parse::<IpNet>().expect("cidr")]
        );
        // Before the grace period: nothing new, nothing more released.
        let plan = gc.pass(&blocks, pod, &nodes, 999, 900);
        assert!(plan.candidates.is_empty());
        assert_eq!(plan.release.len(), 2);
        // After it: the pod-less ones too, with the time first seen.
        let plan = gc.pass(&blocks, pod, &nodes, 1000, 900);
        let now: Vec<(&str, u64)> = plan
            .release
            .iter()
            .map(|l| (l.holder.handle.as_str(), l.since))
            .collect();
        assert_eq!(
            now,
            [("gone", 100), ("moved", 100), ("borrower", 100), ("x", 100)]
        );
    }

    #[test]
    fn a_pod_that_comes_back_or_an_address_reused_starts_over() {
        let mut blocks: BTreeMap<IpNet, Block> =
            [block("10.0.0.0/28", "n1", &[("a", Some("ns/a"), "n1")])]
                .into_iter()
                .map(|b| (b.cidr, b))
                .collect();
        let nodes: BTreeSet<String> = ["n1"].map(String::from).into();
        let mut gc = Gc::new();
        let missing = |_: &str| PodState::Missing;
        assert_eq!(gc.pass(&blocks, missing, &nodes, 0, 10).candidates.len(), 1);
        // The pod shows up (a cache that lagged): cleared.
        let back = gc.pass(
            &blocks,
            |_: &str| PodState::On(Some("n1".into())),
            &nodes,
            5,
            10,
        );
        assert_eq!(back.cleared.len(), 1);
        assert_eq!(gc.watching(), 0);
        // Missing again from 6: released at 16, not at 10.
        gc.pass(&blocks, missing, &nodes, 6, 10);
        assert!(gc.pass(&blocks, missing, &nodes, 10, 10).release.is_empty());
        // Meanwhile given back, and another pod given an address: the old
        // candidate is forgotten, the new holder's is a candidate with its
        // own clock.
        let b = blocks.values_mut().next().expect("block");
        let addr = b.allocations[0].ordinal;
        let addr = b.address(addr);
        b.release(addr, None, 11).expect("held");
        b.assign(
            Holder {
                handle: "c".into(),
                pod: Some("ns/c".into()),
                node: "n1".into(),
            },
            11,
            0,
        )
        .expect("room");
        let plan = gc.pass(&blocks, missing, &nodes, 16, 10);
        assert!(plan.release.is_empty(), "{plan:?}");
        assert_eq!(plan.candidates.len(), 1);
        assert_eq!(gc.watching(), 1);
    }
}
