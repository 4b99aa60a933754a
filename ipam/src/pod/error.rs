//! What can go wrong handing out and giving back pod addresses.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why an address could not be given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The address is not in the block asked.
    #[error("{addr} is not in block {block}")]
    NotInBlock {
        /// The address.
        addr: IpAddr,
        /// The block.
        block: IpNet,
    },
    /// Nobody holds the address (already given back: a repeated release).
    #[error("{addr} is not allocated")]
    NotAllocated {
        /// The address.
        addr: IpAddr,
    },
    /// The address was given back and handed out again since the release
    /// was decided: the new holder keeps it.
    #[error("{addr} was handed out again (sequence {found}, the release was for {expected})")]
    Reused {
        /// The address.
        addr: IpAddr,
        /// The sequence number the release named.
        expected: u64,
        /// The one the address has now.
        found: u64,
    },
}

/// Why no address can be had for a node, naming the pools and what ran
/// out (the CNI error, and STATUS, say this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// No IPPool of the family selects the node (or all are disabled).
    #[error("no {family} IPPool serves node {node}{why}")]
    NoPool {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The node.
        node: String,
        /// Pools left out and why (`: a (disabled), b (nodeSelector)`).
        why: String,
    },
    /// Every block of the pools is taken, none of the node's has a free
    /// address, and borrowing is not allowed or found nothing.
    #[error("{family} pools {pools} are exhausted for node {node}: {detail}")]
    Full {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The pools tried, comma-separated.
        pools: String,
        /// The node.
        node: String,
        /// What ran out: `its 3 blocks are full, no free block left,
        /// strictAffinity forbids borrowing`.
        detail: String,
    },
}
