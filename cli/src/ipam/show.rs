//! `petrel ipam show`: pools, each node's blocks with utilisation and
//! fragmentation, and the borrowed addresses.

use std::collections::BTreeMap;

use ipam::pod::Block;
use ipnet::IpNet;
use serde_json::{Value, json};

/// One node's share of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeUse {
    blocks: usize,
    capacity: u64,
    used: u64,
}

impl NodeUse {
    /// The share of the node's blocks it would not need if its addresses
    /// were packed (a node keeps one block however few it uses): 0 when
    /// every block but the last is full.
    fn fragmentation(&self) -> f64 {
        if self.blocks == 0 || self.capacity == 0 {
            return 0.0;
        }
        let per_block = self.capacity / self.blocks as u64;
        let needed = self.used.div_ceil(per_block.max(1)).max(1);
        (self.blocks as f64 - needed as f64).max(0.0) / self.blocks as f64
    }
}

/// The view as JSON (`-o json`, and what the table is made of).
pub fn view(blocks: &[Block], pools: &BTreeMap<String, IpNet>) -> Value {
    let mut per: BTreeMap<&str, BTreeMap<String, NodeUse>> = BTreeMap::new();
    let mut borrowed = Vec::new();
    for b in blocks {
        let capacity = u64::from(b.capacity());
        let used = u64::from(b.used());
        let node = b.node.clone().unwrap_or_else(|| "(no node)".into());
        let u = per
            .entry(b.pool.as_str())
            .or_default()
            .entry(node)
            .or_default();
        u.blocks += 1;
        u.capacity += capacity;
        u.used += used;
        for (addr, h) in b.borrowed() {
            borrowed.push(json!({
                "address": addr.to_string(), "block": b.cidr.to_string(),
                "lender": b.node, "node": h.node, "pod": h.pod, "handle": h.handle,
            }));
        }
    }
    let mut names: Vec<&str> = per.keys().copied().collect();
    for p in pools.keys() {
        if !names.contains(&p.as_str()) {
            names.push(p);
        }
    }
    names.sort();
    let pools_json: Vec<Value> = names
        .iter()
        .map(|name| {
            let nodes = per.get(name).cloned().unwrap_or_default();
            let total_blocks: usize = nodes.values().map(|u| u.blocks).sum();
            let used: u64 = nodes.values().map(|u| u.used).sum();
            json!({
                "name": name,
                "cidr": pools.get(*name).map(ToString::to_string),
                "blocks": total_blocks,
                "used": used,
                "nodes": nodes.iter().map(|(n, u)| json!({
                    "node": n, "blocks": u.blocks, "capacity": u.capacity, "used": u.used,
                    "utilisation": if u.capacity == 0 { 0.0 } else { u.used as f64 / u.capacity as f64 },
                    "fragmentation": u.fragmentation(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"pools": pools_json, "borrowed": borrowed})
}

/// The view as a table.
pub fn table(v: &Value) -> String {
    let mut out = String::new();
    for p in v["pools"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "pool {} {}: {} blocks, {} addresses used\n",
            p["name"].as_str().unwrap_or_default(),
            p["cidr"].as_str().unwrap_or("(no IPPool)"),
            p["blocks"],
            p["used"]
        ));
        out.push_str("  NODE                 BLOCKS  USED/CAPACITY  UTILISATION  FRAGMENTATION\n");
        for n in p["nodes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<20} {:>6}  {:>13}  {:>10.0} %  {:>11.0} %\n",
                n["node"].as_str().unwrap_or_default(),
                n["blocks"],
                format!("{}/{}", n["used"], n["capacity"]),
                n["utilisation"].as_f64().unwrap_or(0.0) * 100.0,
                n["fragmentation"].as_f64().unwrap_or(0.0) * 100.0,
            ));
        }
    }
    let borrowed = v["borrowed"].as_array().cloned().unwrap_or_default();
    if !borrowed.is_empty() {
        out.push_str("borrowed addresses:\n");
        for b in borrowed {
            out.push_str(&format!(
                "  {} of {} ({}) held on {} by {}\n",
                b["address"].as_str().unwrap_or_default(),
                b["block"].as_str().unwrap_or_default(),
                b["lender"].as_str().unwrap_or("no node"),
                b["node"].as_str().unwrap_or_default(),
                b["pod"]
                    .as_str()
                    .or(b["handle"].as_str())
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::pod::Holder;

    #[test]
    fn utilisation_fragmentation_and_borrowing() {
        let mut a = Block::new("10.0.0.0/29".parse().expect("cidr"), "p", "n1", 0);
        let mut b = Block::new("10.0.0.8/29".parse().expect("cidr"), "p", "n2", 0);
        let h = |n: &str, node: &str| Holder {
            handle: format!("{n}/eth0"),
            pod: Some(format!("ns/{n}")),
            node: node.into(),
        };
        // Six addresses a /29: the first and the last are kept out.
        for i in 0..6 {
            a.assign(h(&format!("a{i}"), "n1"), 0, 0).expect("room");
        }
        b.assign(h("b0", "n2"), 0, 0).expect("room");
        b.assign(h("x", "n1"), 0, 0).expect("room");
        let v = view(
            &[a, b],
            &[("p".to_string(), "10.0.0.0/24".parse().expect("cidr"))].into(),
        );
        let nodes = &v["pools"][0]["nodes"];
        assert_eq!(nodes[0]["utilisation"], 1.0);
        assert_eq!(nodes[1]["used"], 2);
        assert_eq!(nodes[1]["fragmentation"], 0.0);
        // Two half-used blocks where one would do: half of them surplus.
        let mut c = Block::new("10.0.0.16/29".parse().expect("cidr"), "p", "n3", 0);
        let mut d = Block::new("10.0.0.24/29".parse().expect("cidr"), "p", "n3", 0);
        for i in 0..3 {
            c.assign(h(&format!("c{i}"), "n3"), 0, 0).expect("room");
            d.assign(h(&format!("d{i}"), "n3"), 0, 0).expect("room");
        }
        let v3 = view(&[c, d], &BTreeMap::new());
        assert_eq!(v3["pools"][0]["nodes"][0]["fragmentation"], 0.5);
        assert_eq!(v["borrowed"][0]["address"], "10.0.0.10");
        assert_eq!(v["borrowed"][0]["lender"], "n2");
        let t = table(&v);
        assert!(
            t.contains("pool p 10.0.0.0/24: 2 blocks, 8 addresses used"),
            "{t}"
        );
        assert!(
            t.contains("10.0.0.10 of 10.0.0.8/29 (n2) held on n1 by ns/x"),
            "{t}"
        );
    }
}
