//! Where a node's next address comes from: its own blocks first, then a
//! block it claims, then (when the pool allows) one borrowed from another
//! node's block. Pure: the caller knows every block (from the API server or
//! the local state file) and does the writes.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use ipnet::IpNet;

use super::block::Block;
use super::error::Exhausted;

/// The widest block: 12 host bits (4096 addresses), as Calico allows
/// (`blockSize` 20–32 for IPv4, 116–128 for IPv6).
pub const BLOCK_HOST_BITS: u8 = 12;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `net`.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// An IPPool as the allocator sees it, for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its range.
    pub cidr: IpNet,
    /// The prefix length of its blocks.
    pub block_prefix: u8,
    /// Its `nodeSelector` matches the node (evaluated by the caller).
    pub selects_node: bool,
    /// `disabled`: no new address comes from it; blocks in use stay.
    pub disabled: bool,
    /// `strictAffinity`: a node never borrows from another node's block.
    pub strict_affinity: bool,
    /// `allowedUses` includes what the address is for: `Workload` for a
    /// pod's, `Tunnel` for a node's tunnel address (the caller decides).
    pub allows_use: bool,
}

impl Pool {
    /// Why the pool gives the node no address, if it does not.
    fn unusable(&self, family: Family) -> Option<&'static str> {
        if Family::of(&self.cidr) != family {
            Some("family")
        } else if self.disabled {
            Some("disabled")
        } else if !self.selects_node {
            Some("nodeSelector")
        } else if !self.allows_use {
            Some("allowedUses")
        } else {
            None
        }
    }

    /// How many blocks the pool has.
    fn block_count(&self) -> u128 {
        let bits = u32::from(self.block_prefix.saturating_sub(self.cidr.prefix_len()));
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `index`th block of the pool.
    fn block_at(&self, index: u128) -> Option<IpNet> {
        let host = u32::from(self.cidr.max_prefix_len() - self.block_prefix);
        let offset = index.checked_shl(host)?;
        match self.cidr {
            IpNet::V4(n) => {
                let base = u128::from(u32::from(n.network()));
                let addr = u32::try_from(base.checked_add(offset)?).ok()?;
                IpNet::new(std::net::Ipv4Addr::from(addr).into(), self.block_prefix).ok()
            }
            IpNet::V6(n) => {
                let addr = u128::from(n.network()).checked_add(offset)?;
                IpNet::new(std::net::Ipv6Addr::from(addr).into(), self.block_prefix).ok()
            }
        }
    }
}

/// What the node does next for one address of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take an address of this block of its own.
    Assign(IpNet),
    /// Claim this block (create it, affine to the node; exactly one of
    /// several nodes racing for it succeeds), then take an address of it.
    Claim {
        /// The pool it is cut from.
        pool: String,
        /// The block.
        cidr: IpNet,
    },
    /// Take an address of this block of another node (routed as a host
    /// route by this node).
    Borrow(IpNet),
    /// Nothing can be had.
    Exhausted(Exhausted),
}

/// The next step for an address of `family` on `node`, knowing `blocks`
/// (all of them, by CIDR) at `now`, with `cooldown` seconds before a given
/// back address is reused. `lost`: blocks this attempt tried to claim and
/// found taken (the caller re-reads the blocks and asks again).
///
/// Own blocks: the fullest first, so addresses pack and emptied blocks can
/// go. Claims: in each pool (by name), starting at a place seeded by the
/// node's name, so nodes starting together do not all race for the same
/// block. Borrowing: the block with the most addresses available.
pub fn next_step(
    node: &str,
    family: Family,
    pools: &[Pool],
    blocks: &BTreeMap<IpNet, Block>,
    now: u64,
    cooldown: u64,
    lost: &BTreeSet<IpNet>,
) -> Step {
    let mut usable: Vec<&Pool> = pools
        .iter()
        .filter(|p| p.unusable(family).is_none())
        .collect();
    usable.sort_by(|a, b| a.name.cmp(&b.name));
    if usable.is_empty() {
        let why: Vec<String> = pools
            .iter()
            .filter_map(|p| match p.unusable(family) {
                Some("family") | None => None,
                Some(reason) => Some(format!("{} ({reason})", p.name)),
            })
            .collect();
        return Step::Exhausted(Exhausted::NoPool {
            family: family.name(),
            node: node.to_string(),
            why: if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join(", "))
            },
        });
    }
    let in_usable = |b: &Block| {
        usable
            .iter()
            .any(|p| p.name == b.pool && p.cidr.contains(&b.cidr))
    };

    // 1. Its own blocks, the fullest first.
    let own = blocks
        .values()
        .filter(|b| b.node.as_deref() == Some(node) && in_usable(b))
        .filter(|b| b.available(now, cooldown) > 0)
        .min_by_key(|b| (b.available(now, cooldown), b.cidr));
    if let Some(b) = own {
        return Step::Assign(b.cidr);
    }

    // 2. A free block.
    for pool in &usable {
        if let Some(cidr) = free_block(pool, node, blocks, lost) {
            return Step::Claim {
                pool: pool.name.clone(),
                cidr,
            };
        }
    }

    // 3. Borrowing, where allowed.
    let borrow = blocks
        .values()
        .filter(|b| b.node.is_some() && b.node.as_deref() != Some(node))
        .filter(|b| {
            usable
                .iter()
                .any(|p| p.name == b.pool && p.cidr.contains(&b.cidr) && !p.strict_affinity)
        })
        .filter(|b| b.available(now, cooldown) > 0)
        .max_by_key(|b| (b.available(now, cooldown), std::cmp::Reverse(b.cidr)));
    if let Some(b) = borrow {
        return Step::Borrow(b.cidr);
    }

    let own_blocks = blocks
        .values()
        .filter(|b| b.node.as_deref() == Some(node) && in_usable(b))
        .count();
    let strict = usable.iter().all(|p| p.strict_affinity);
    Step::Exhausted(Exhausted::Full {
        family: family.name(),
        pools: usable
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        node: node.to_string(),
        detail: format!(
            "{} full, no free block left, {}",
            match own_blocks {
                0 => "it has no block".to_string(),
                1 => "its block is".to_string(),
                n => format!("its {n} blocks are"),
            },
            if strict {
                "and strictAffinity forbids borrowing"
            } else {
                "and no other node's block has an address free"
            }
        ),
    })
}

/// A block of `pool` nobody has (nor lost in this attempt), probing from a
/// place seeded by `node`; at most one probe more than there are blocks.
fn free_block(
    pool: &Pool,
    node: &str,
    blocks: &BTreeMap<IpNet, Block>,
    lost: &BTreeSet<IpNet>,
) -> Option<IpNet> {
    let count = pool.block_count();
    if count == 0 {
        return None;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut hasher);
    let start = u128::from(hasher.finish()) % count;
    let taken = blocks.keys().filter(|c| pool.cidr.contains(*c)).count() + lost.len();
    let probes = (taken as u128).saturating_add(1).min(count);
    (0..probes)
        .filter_map(|k| pool.block_at((start + k) % count))
        .find(|c| !blocks.contains_key(c) && !lost.contains(c))
}

/// Blocks `node` may give up at `now`: its own, empty for at least `grace`
/// seconds, keeping its last block of each pool (the lowest CIDR stays).
pub fn releasable(node: &str, blocks: &BTreeMap<IpNet, Block>, now: u64, grace: u64) -> Vec<IpNet> {
    let mut by_pool: BTreeMap<&str, Vec<&Block>> = BTreeMap::new();
    for b in blocks.values().filter(|b| b.node.as_deref() == Some(node)) {
        by_pool.entry(b.pool.as_str()).or_default().push(b);
    }
    let mut out = Vec::new();
    for (_, mut own) in by_pool {
        own.sort_by_key(|b| b.cidr);
        let mut idle: Vec<&Block> = own
            .iter()
            .copied()
            .filter(|b| {
                b.allocations.is_empty()
                    && b.empty_since
                        .is_some_and(|since| since.saturating_add(grace) <= now)
            })
            .collect();
        if idle.len() == own.len() {
            // Every block of the node would go: its last (the lowest) stays.
            idle.remove(0);
        }
        out.extend(idle.iter().map(|b| b.cidr));
    }
    out
}
