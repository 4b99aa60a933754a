//! `petrel ipam check`, pure: what the blocks record against what the pods,
//! this node's kernel and this node's RIB show. Each finding says what is
//! wrong and with what; a report keeps the version of every block it read,
//! so that `release --from-report` can refuse a stale one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipam::pod::Block;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What the check reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The node the check runs on (its kernel and RIB); `None`: blocks and
    /// pods only.
    pub node: Option<String>,
    /// Every block with its version.
    pub blocks: Vec<(Block, String)>,
    /// Where each pod (`namespace/name`) runs; `None`: pods unknown (no
    /// cluster), not checked.
    pub pods: Option<BTreeMap<String, Option<String>>>,
    /// This node's kernel routes to single addresses of the pools, with the
    /// interface (the pods' host routes); `None`: not checked.
    pub kernel: Option<Vec<(IpAddr, String)>>,
    /// This node's tunnel addresses that one of its interfaces carries;
    /// `None`: not checked.
    pub tunnel_on_interface: Option<BTreeSet<IpAddr>>,
    /// This node's RIB: prefix, next hop (`None` for its own routes).
    pub rib: Option<Vec<(IpNet, Option<IpAddr>)>>,
    /// Nodes' addresses, to name who advertises a block.
    pub node_ips: BTreeMap<IpAddr, String>,
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Finding {
    /// An address is allocated, and its pod is gone or has no interface on
    /// its node; or it is a node's tunnel address and its node is gone or
    /// has it on no interface.
    #[serde(rename_all = "camelCase")]
    AllocatedUnused {
        /// The address.
        address: IpAddr,
        /// Its sequence number (what a release names).
        sequence: u64,
        /// Its block.
        block: IpNet,
        /// The attachment.
        handle: String,
        /// Its pod, if recorded.
        pod: Option<String>,
        /// The node holding it.
        node: String,
        /// Why it looks unused.
        why: String,
    },
    /// This node routes an address of a pool to a pod interface, and no
    /// block records it as this node's.
    #[serde(rename_all = "camelCase")]
    UsedUnallocated {
        /// The address.
        address: IpAddr,
        /// The interface it is routed to.
        interface: String,
        /// The node.
        node: String,
    },
    /// A block is advertised by a node it is not affine to.
    #[serde(rename_all = "camelCase")]
    AdvertisedWithoutAffinity {
        /// The block.
        block: IpNet,
        /// Who advertises it (a node's name, or its next hop).
        by: String,
        /// The node it is affine to.
        affine: Option<String>,
    },
    /// Two blocks cover the same addresses.
    #[serde(rename_all = "camelCase")]
    DuplicateAffinity {
        /// The blocks.
        blocks: Vec<IpNet>,
        /// Their nodes.
        nodes: Vec<Option<String>>,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::AllocatedUnused {
                address,
                block,
                handle,
                node,
                why,
                ..
            } => write!(
                f,
                "allocated but unused: {address} (block {block}, {handle} on {node}): {why}"
            ),
            Finding::UsedUnallocated {
                address,
                interface,
                node,
            } => write!(
                f,
                "used but not allocated: {address} routed to {interface} on {node}, no block records it for {node}"
            ),
            Finding::AdvertisedWithoutAffinity { block, by, affine } => write!(
                f,
                "advertised without affinity: block {block} advertised by {by}, affine to {}",
                affine.as_deref().unwrap_or("no node")
            ),
            Finding::DuplicateAffinity { blocks, nodes } => {
                let list: Vec<String> = blocks
                    .iter()
                    .zip(nodes)
                    .map(|(b, n)| format!("{b} ({})", n.as_deref().unwrap_or("no node")))
                    .collect();
                write!(f, "duplicate affinity: {} overlap", list.join(" and "))
            }
        }
    }
}

/// A check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The node it ran on.
    pub node: Option<String>,
    /// What was not checked, and why.
    pub skipped: Vec<String>,
    /// What is wrong.
    pub findings: Vec<Finding>,
    /// The version of every block read, by CIDR.
    pub versions: BTreeMap<IpNet, String>,
}

/// Why a pod's address `addr` (held as `a`) looks unused, if it does:
/// its pod is gone or elsewhere, or (`here`: on this node) no pod interface
/// routes it.
fn pod_unused(
    i: &Inputs,
    routed: &Option<BTreeMap<IpAddr, &str>>,
    a: &ipam::pod::Allocation,
    addr: IpAddr,
    here: bool,
) -> Option<String> {
    let why = match (&i.pods, a.holder.pod.as_deref()) {
        (Some(pods), Some(pod)) => match pods.get(pod) {
            None => Some(format!("pod {pod} does not exist")),
            Some(Some(n)) if *n != a.holder.node => {
                Some(format!("pod {pod} runs on {n}, not on {}", a.holder.node))
            }
            Some(_) => None,
        },
        _ => None,
    };
    why.or_else(|| match routed {
        Some(r) if here && !r.contains_key(&addr) => {
            Some("no pod interface on this node routes it".to_string())
        }
        _ => None,
    })
}

/// Runs the check.
pub fn check(i: &Inputs) -> Report {
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    let blocks: Vec<&Block> = i.blocks.iter().map(|(b, _)| b).collect();

    // Duplicate affinities: blocks that overlap.
    let mut sorted: Vec<&Block> = blocks.clone();
    sorted.sort_by_key(|b| b.cidr);
    for (k, a) in sorted.iter().enumerate() {
        for b in &sorted[k + 1..] {
            if a.cidr.contains(&b.cidr) || b.cidr.contains(&a.cidr) {
                findings.push(Finding::DuplicateAffinity {
                    blocks: vec![a.cidr, b.cidr],
                    nodes: vec![a.node.clone(), b.node.clone()],
                });
            }
        }
    }

    // This node's pod routes.
    let routed: Option<BTreeMap<IpAddr, &str>> = i
        .kernel
        .as_ref()
        .map(|k| k.iter().map(|(a, dev)| (*a, dev.as_str())).collect());

    // Allocated but unused.
    let nodes: BTreeSet<&str> = i.node_ips.values().map(String::as_str).collect();
    for b in &blocks {
        for a in &b.allocations {
            let addr = b.address(a.ordinal);
            let here = i.node.as_deref() == Some(a.holder.node.as_str());
            // A node's tunnel address: judged by its node, and by the
            // interface that should carry it (no pod, no host route).
            let why = if a.holder.is_tunnel() {
                if !nodes.is_empty() && !nodes.contains(a.holder.node.as_str()) {
                    Some(format!(
                        "tunnel address of node {}, which does not exist",
                        a.holder.node
                    ))
                } else {
                    match &i.tunnel_on_interface {
                        Some(on) if here && !on.contains(&addr) => Some(
                            "tunnel address of this node, and no interface of this node has it"
                                .to_string(),
                        ),
                        _ => None,
                    }
                }
            } else {
                pod_unused(i, &routed, a, addr, here)
            };
            if let Some(why) = why {
                findings.push(Finding::AllocatedUnused {
                    address: addr,
                    sequence: a.sequence,
                    block: b.cidr,
                    handle: a.holder.handle.clone(),
                    pod: a.holder.pod.clone(),
                    node: a.holder.node.clone(),
                    why,
                });
            }
        }
    }
    if i.pods.is_none() {
        skipped.push("pods: no cluster to read them from".to_string());
    }

    // Used but not allocated (on this node).
    match (&routed, &i.node) {
        (Some(r), Some(node)) => {
            let mine: BTreeSet<IpAddr> = blocks
                .iter()
                .flat_map(|b| {
                    b.allocations
                        .iter()
                        .filter(|a| a.holder.node == *node)
                        .map(|a| b.address(a.ordinal))
                })
                .collect();
            for (addr, dev) in r {
                if !mine.contains(addr) {
                    findings.push(Finding::UsedUnallocated {
                        address: *addr,
                        interface: dev.to_string(),
                        node: node.clone(),
                    });
                }
            }
        }
        _ => skipped.push("kernel routes: not read".to_string()),
    }

    // Blocks advertised by a node without affinity: in this node's RIB, a
    // block's route from a next hop that is not its node's, or one this
    // node originates for a block not its own.
    match &i.rib {
        Some(rib) => {
            let by_cidr: BTreeMap<IpNet, &Block> = blocks.iter().map(|b| (b.cidr, *b)).collect();
            for (prefix, next_hop) in rib {
                let Some(b) = by_cidr.get(prefix) else {
                    continue;
                };
                // A next hop that is no node's address is named as it is;
                // without any node's address, only this node's own
                // routes are judged.
                let by = match next_hop {
                    None => i.node.clone(),
                    Some(nh) => match i.node_ips.get(nh) {
                        Some(n) => Some(n.clone()),
                        None if i.node_ips.is_empty() => None,
                        None => Some(nh.to_string()),
                    },
                };
                let Some(by) = by else { continue };
                if b.node.as_deref() != Some(by.as_str()) {
                    findings.push(Finding::AdvertisedWithoutAffinity {
                        block: b.cidr,
                        by,
                        affine: b.node.clone(),
                    });
                }
            }
        }
        None => skipped.push("RIB: no agent API to read it from".to_string()),
    }
    if i.rib.is_some() && i.node_ips.is_empty() {
        skipped.push(
            "routes learned from other nodes: their addresses are unknown (--source DIR)"
                .to_string(),
        );
    }

    Report {
        node: i.node.clone(),
        skipped,
        findings,
        versions: i.blocks.iter().map(|(b, v)| (b.cidr, v.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::pod::Holder;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn holder(h: &str, pod: &str, node: &str) -> Holder {
        Holder {
            handle: h.into(),
            pod: Some(pod.into()),
            node: node.into(),
        }
    }

    #[test]
    fn each_kind_of_inconsistency_is_found() {
        let mut b1 = Block::new(net("10.0.0.0/28"), "p", "n1", 0);
        b1.assign(holder("a/eth0", "ns/a", "n1"), 0, 0); // .1: fine
        b1.assign(holder("b/eth0", "ns/gone", "n1"), 0, 0); // .2: pod gone
        b1.assign(holder("c/eth0", "ns/c", "n1"), 0, 0); // .3: no route
        let b2 = Block::new(net("10.0.0.16/28"), "p", "n2", 0);
        let dup = Block::new(net("10.0.0.16/29"), "p", "n3", 0);
        let inputs = Inputs {
            node: Some("n1".into()),
            blocks: vec![(b1, "1".into()), (b2, "2".into()), (dup, "3".into())],
            pods: Some(
                [("ns/a", "n1"), ("ns/c", "n1")]
                    .into_iter()
                    .map(|(p, n)| (p.to_string(), Some(n.to_string())))
                    .collect(),
            ),
            kernel: Some(vec![
                (ip("10.0.0.1"), "veth1".into()),
                (ip("10.0.0.2"), "veth2".into()),
                (ip("10.0.0.9"), "veth9".into()),
            ]),
            rib: Some(vec![
                (net("10.0.0.0/28"), None),
                (net("10.0.0.16/28"), Some(ip("192.168.0.3"))),
            ]),
            node_ips: [(ip("192.168.0.3"), "n3".to_string())].into(),
            tunnel_on_interface: None,
        };
        let r = check(&inputs);
        let text: Vec<String> = r.findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "duplicate affinity: 10.0.0.16/28 (n2) and 10.0.0.16/29 (n3) overlap",
                "allocated but unused: 10.0.0.2 (block 10.0.0.0/28, b/eth0 on n1): pod ns/gone does not exist",
                "allocated but unused: 10.0.0.3 (block 10.0.0.0/28, c/eth0 on n1): no pod interface on this node routes it",
                "used but not allocated: 10.0.0.9 routed to veth9 on n1, no block records it for n1",
                "advertised without affinity: block 10.0.0.16/28 advertised by n3, affine to n2",
            ]
        );
        assert!(r.skipped.is_empty());
        assert_eq!(r.versions.len(), 3);
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<Report>(&json).expect("back"), r);
    }

    #[test]
    fn tunnel_addresses_are_judged_by_their_node_and_interface_not_by_pods() {
        let mut b = Block::new(net("10.0.0.0/28"), "tunnels", "n1", 0);
        b.assign(Holder::tunnel("n1"), 0, 0); // .1
        b.assign(Holder::tunnel("gone"), 0, 0); // .2
        b.assign(Holder::tunnel("n3"), 0, 0); // .3
        let mut inputs = Inputs {
            node: Some("n1".into()),
            blocks: vec![(b, "1".into())],
            pods: Some(BTreeMap::new()),
            kernel: Some(Vec::new()),
            rib: None,
            node_ips: [
                (ip("192.168.0.1"), "n1".to_string()),
                (ip("192.168.0.3"), "n3".to_string()),
            ]
            .into(),
            tunnel_on_interface: Some([ip("10.0.0.1")].into()),
        };
        let text = |i: &Inputs| -> Vec<String> {
            check(i).findings.iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            text(&inputs),
            [
                "allocated but unused: 10.0.0.2 (block 10.0.0.0/28, tunnel:gone on gone): tunnel address of node gone, which does not exist"
            ]
        );
        inputs.tunnel_on_interface = Some(BTreeSet::new());
        assert_eq!(
            text(&inputs)[0],
            "allocated but unused: 10.0.0.1 (block 10.0.0.0/28, tunnel:n1 on n1): tunnel address of this node, and no interface of this node has it"
        );
    }
}
