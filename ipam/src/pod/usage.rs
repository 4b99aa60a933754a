//! How much of a pool is used, from its blocks: what `IPPool.status` says.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::block::Block;

/// A pool's usage. Counts that can exceed 64 bits (an IPv6 pool's blocks
/// and free addresses) are `u128`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Blocks the pool has.
    pub blocks: u128,
    /// Blocks claimed by a node (or kept for borrowers of a node that is
    /// gone).
    pub claimed_blocks: u64,
    /// Blocks nobody has claimed.
    pub free_blocks: u128,
    /// Addresses in use.
    pub used: u64,
    /// Addresses that can still be handed out: free ones of claimed blocks
    /// (cooling down ones included) and every one of unclaimed blocks
    /// (each block's gateway and IPv4 broadcast address left out).
    pub free: u128,
    /// Addresses held by another node than their block's.
    pub borrowed: u64,
    /// Nodes with a block of the pool.
    pub nodes: BTreeSet<String>,
}

/// The usage of the pool `cidr`, cut into blocks of `/block_prefix`, given
/// its blocks (others are ignored).
pub fn usage(cidr: IpNet, block_prefix: u8, blocks: &[&Block]) -> Usage {
    let bits = u32::from(block_prefix.saturating_sub(cidr.prefix_len()));
    let total = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    let host = u32::from(cidr.max_prefix_len().saturating_sub(block_prefix));
    // The gateway (first) and, for IPv4, the broadcast (last) address of
    // each block are never handed out.
    let reserved = if matches!(cidr, IpNet::V4(_)) && host >= 2 {
        2
    } else {
        1
    };
    let per_block = 1u128
        .checked_shl(host)
        .unwrap_or(u128::MAX)
        .saturating_sub(reserved);
    let mut u = Usage {
        blocks: total,
        ..Usage::default()
    };
    for b in blocks.iter().filter(|b| cidr.contains(&b.cidr)) {
        u.claimed_blocks += 1;
        u.used += u64::from(b.used());
        u.borrowed += b.borrowed().count() as u64;
        u.free = u
            .free
            .saturating_add(u128::from(b.capacity().saturating_sub(b.used())));
        if let Some(n) = &b.node {
            u.nodes.insert(n.clone());
        }
    }
    u.free_blocks = total.saturating_sub(u128::from(u.claimed_blocks));
    u.free = u
        .free
        .saturating_add(u.free_blocks.saturating_mul(per_block));
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::Holder;

    #[test]
    fn counts_blocks_addresses_and_borrowing() {
        let pool: IpNet = "10.0.0.0/24".parse().expect("cidr");
        let mut a = Block::new("10.0.0.0/26".parse().expect("cidr"), "p", "n1", 0);
        let h = |n: &str, node: &str| Holder {
            handle: n.into(),
            pod: None,
            node: node.into(),
        };
        for i in 0..10 {
            a.assign(h(&format!("a{i}"), "n1"), 0, 0).expect("room");
        }
        a.assign(h("x", "n2"), 0, 0).expect("room");
        let other = Block::new("10.1.0.0/26".parse().expect("cidr"), "q", "n9", 0);
        let u = usage(pool, 26, &[&a, &other]);
        assert_eq!(u.blocks, 4);
        assert_eq!(u.claimed_blocks, 1);
        assert_eq!(u.free_blocks, 3);
        assert_eq!(u.used, 11);
        assert_eq!(u.borrowed, 1);
        // 62 a block (first and last kept out): 51 left in the claimed
        // one, 62 in each of the three others.
        assert_eq!(u.free, 51 + 3 * 62);
        assert_eq!(u.nodes.len(), 1);
        // An IPv6 pool's counts go past 64 bits.
        let big = usage("fd00::/48".parse().expect("cidr"), 122, &[]);
        assert_eq!(big.blocks, 1u128 << 74);
        // IPv6 blocks keep only their first address out.
        assert_eq!(big.free, (1u128 << 74) * 63);
    }
}
