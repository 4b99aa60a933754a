//! Pod addresses, sans-IO: IPPools cut into blocks, each block affine to a
//! node, and who holds each address.
//!
//! The cluster's truth is the set of blocks, one object each, written by
//! compare-and-swap (the Kubernetes API server's `resourceVersion`, or the
//! standalone state file under its lock). A node that needs an address:
//!
//! 1. takes one from its own blocks, the fullest first;
//! 2. else claims a free block of a pool that selects it: creating the
//!    block's object *is* the claim, and the API server lets exactly one of
//!    several racing nodes create it (no pending/confirmed affinity dance);
//!    the first address goes into the same create;
//! 3. else, when the pool allows (`strictAffinity: false`), borrows an
//!    address from another node's block; the borrowing node routes it as a
//!    host route, the block's node keeps routing the block.
//!
//! [`next_step`] decides; [`Block`] applies the change to the block value the
//! caller read; [`allocate`] and [`release`] drive a [`BlockStore`] with
//! both, retrying on conflicts. Safety rules, Calico's:
//!
//! - Every address handed out carries the block's sequence number; a
//!   release naming another number is refused ([`ReleaseError::Reused`]),
//!   so a stale release never frees an address handed out again.
//! - Addresses given back wait `cooldown` seconds, then are reused the
//!   longest-free first; never-used addresses go before any given back.
//! - A node gives up a block only once it has been empty for a grace period
//!   ([`releasable`]), never its last block of a pool; deletes are
//!   conditional on the block's version, so an address handed out meanwhile
//!   keeps its block.

mod block;
mod choose;
mod drive;
mod error;
mod gc;
mod usage;

pub use block::{Allocation, Block, Holder, Released, TUNNEL_HANDLE_PREFIX, is_tunnel_handle};
pub use choose::{BLOCK_HOST_BITS, Family, Pool, Step, next_step, releasable};
pub use drive::{
    Allocated, BlockStore, DriveError, Release, Settings, StoreError, allocate, allocate_many,
    release, release_blocks,
};
pub use error::{Exhausted, ReleaseError};
pub use gc::{Gc, GcPlan, Leak, LeakReason, PodState};
pub use usage::{Usage, usage};

#[cfg(test)]
mod tests;
