//! Allocation and release against a store of blocks with compare-and-swap
//! writes: read the blocks, decide ([`next_step`]), change one block value,
//! write it conditionally; on a conflict, read again and decide again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

use super::block::{Block, Holder};
use super::choose::{Family, Pool, Step, next_step};
use super::error::{Exhausted, ReleaseError};

/// Why a store write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The block changed (or was created, or deleted) since it was read.
    #[error("block {0} changed since it was read")]
    Conflict(IpNet),
    /// Anything else (the API server unreachable, refused, ...).
    #[error("{0}")]
    Other(String),
}

/// Blocks, each with an opaque version, written only if unchanged.
pub trait BlockStore {
    /// Every block, with its version.
    fn list(&self) -> impl Future<Output = Result<Vec<(Block, String)>, StoreError>> + Send;
    /// Creates `block`: [`StoreError::Conflict`] if it exists.
    fn create(&self, block: &Block) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Replaces the block if its version is still `version`.
    fn update(
        &self,
        block: &Block,
        version: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes block `cidr` if its version is still `version`.
    fn delete(
        &self,
        cidr: IpNet,
        version: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Seconds a given-back address waits before it is reused.
    pub cooldown: u64,
    /// Attempts (read, decide, write) before giving up on conflicts.
    pub max_attempts: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cooldown: 0,
            max_attempts: 100,
        }
    }
}

/// An address handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The address.
    pub addr: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// The sequence number it was handed out under (for a release that
    /// must not free a later holder's address).
    pub sequence: u64,
    /// It comes from another node's block (route it as a host route).
    pub borrowed: bool,
}

/// Why no address was handed out, or not given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// Nothing to hand out (which pools, what ran out).
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// The store failed.
    #[error("IPAM store: {0}")]
    Store(StoreError),
    /// Every attempt met a conflict.
    #[error("gave up after {0} attempts: the blocks kept changing")]
    Contended(u32),
    /// A release was refused.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

async fn read<S: BlockStore>(
    store: &S,
) -> Result<(BTreeMap<IpNet, Block>, BTreeMap<IpNet, String>), DriveError> {
    let listed = store.list().await.map_err(DriveError::Store)?;
    let mut blocks = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for (b, v) in listed {
        versions.insert(b.cidr, v);
        blocks.insert(b.cidr, b);
    }
    Ok((blocks, versions))
}

/// The address of `family` `holder`'s handle holds already, if any.
fn held(blocks: &BTreeMap<IpNet, Block>, family: Family, holder: &Holder) -> Option<Allocated> {
    blocks
        .values()
        .filter(|b| Family::of(&b.cidr) == family)
        .find_map(|b| {
            let a = b
                .allocations
                .iter()
                .find(|a| a.holder.handle == holder.handle)?;
            Some(Allocated {
                addr: b.address(a.ordinal),
                block: b.cidr,
                sequence: a.sequence,
                borrowed: b.node.as_deref() != Some(a.holder.node.as_str()),
            })
        })
}

/// Hands `holder` (on `holder.node`) one address of `family` from `pools`;
/// the one it holds already when its handle has one of the family.
pub async fn allocate<S: BlockStore>(
    store: &S,
    family: Family,
    pools: &[Pool],
    holder: &Holder,
    now: u64,
    settings: Settings,
) -> Result<Allocated, DriveError> {
    let mut lost = BTreeSet::new();
    for _ in 0..settings.max_attempts {
        let (blocks, versions) = read(store).await?;
        // An ADD repeated for the same attachment (a retry after a
        // timeout) gets the address it already has, not a second one.
        if let Some(found) = held(&blocks, family, holder) {
            return Ok(found);
        }
        let step = next_step(
            &holder.node,
            family,
            pools,
            &blocks,
            now,
            settings.cooldown,
            &lost,
        );
        let (mut block, version) = match step {
            Step::Exhausted(e) => return Err(e.into()),
            Step::Assign(cidr) | Step::Borrow(cidr) => {
                let (Some(b), Some(v)) = (blocks.get(&cidr), versions.get(&cidr)) else {
                    continue;
                };
                (b.clone(), Some(v.clone()))
            }
            Step::Claim { pool, cidr } => (Block::new(cidr, &pool, &holder.node, now), None),
        };
        let Some((addr, sequence)) = block.assign(holder.clone(), now, settings.cooldown) else {
            continue;
        };
        let written = match &version {
            Some(v) => store.update(&block, v).await,
            None => store.create(&block).await,
        };
        match written {
            Ok(()) => {
                return Ok(Allocated {
                    addr,
                    block: block.cidr,
                    sequence,
                    borrowed: block.node.as_deref() != Some(holder.node.as_str()),
                });
            }
            Err(StoreError::Conflict(cidr)) => {
                if version.is_none() {
                    lost.insert(cidr);
                }
            }
            Err(e) => return Err(DriveError::Store(e)),
        }
    }
    Err(DriveError::Contended(settings.max_attempts))
}

/// Hands each of `holders` one address of `family`, in one read and one
/// write per block touched: what a node does with a burst of ADDs. Each
/// result is what [`allocate`] would have given that holder alone, in
/// order (an earlier holder gets the earlier address); a block whose write
/// conflicts is read again and its holders decided again.
pub async fn allocate_many<S: BlockStore>(
    store: &S,
    family: Family,
    pools: &[Pool],
    holders: &[Holder],
    now: u64,
    settings: Settings,
) -> Vec<Result<Allocated, DriveError>> {
    let mut results: Vec<Option<Result<Allocated, DriveError>>> = vec![None; holders.len()];
    let mut lost = BTreeSet::new();
    for _ in 0..settings.max_attempts {
        let pending: Vec<usize> = (0..holders.len())
            .filter(|i| results[*i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let (mut blocks, versions) = match read(store).await {
            Ok(r) => r,
            Err(e) => {
                for i in pending {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
        };
        // Decided against the blocks as this batch changes them, so a later
        // holder sees the room an earlier one took.
        let mut touched: BTreeMap<IpNet, Vec<(usize, Allocated)>> = BTreeMap::new();
        let mut exhausted = Vec::new();
        for i in pending {
            let holder = &holders[i];
            if let Some(found) = held(&blocks, family, holder) {
                // Held in a block this round changes (the same attachment
                // twice in a burst): final only once that block is written.
                match touched.get_mut(&found.block) {
                    Some(got) => got.push((i, found)),
                    None => results[i] = Some(Ok(found)),
                }
                continue;
            }
            let step = next_step(
                &holder.node,
                family,
                pools,
                &blocks,
                now,
                settings.cooldown,
                &lost,
            );
            let cidr = match step {
                Step::Exhausted(e) => {
                    results[i] = Some(Err(e.into()));
                    exhausted.push(i);
                    continue;
                }
                Step::Assign(cidr) | Step::Borrow(cidr) => cidr,
                Step::Claim { pool, cidr } => {
                    blocks.insert(cidr, Block::new(cidr, &pool, &holder.node, now));
                    cidr
                }
            };
            let Some(block) = blocks.get_mut(&cidr) else {
                continue;
            };
            let Some((addr, sequence)) = block.assign(holder.clone(), now, settings.cooldown)
            else {
                continue;
            };
            let borrowed = block.node.as_deref() != Some(holder.node.as_str());
            touched.entry(cidr).or_default().push((
                i,
                Allocated {
                    addr,
                    block: cidr,
                    sequence,
                    borrowed,
                },
            ));
        }
        let mut conflicted = false;
        for (cidr, got) in touched {
            let Some(block) = blocks.get(&cidr) else {
                continue;
            };
            let written = match versions.get(&cidr) {
                Some(v) => store.update(block, v).await,
                None => store.create(block).await,
            };
            match written {
                Ok(()) => {
                    for (i, a) in got {
                        results[i] = Some(Ok(a));
                    }
                }
                Err(StoreError::Conflict(c)) => {
                    conflicted = true;
                    if !versions.contains_key(&cidr) {
                        lost.insert(c);
                    }
                }
                Err(e) => {
                    for (i, _) in got {
                        results[i] = Some(Err(DriveError::Store(e.clone())));
                    }
                }
            }
        }
        // Nothing to hand out was judged against writes that did not land:
        // decided again with the next read.
        if conflicted {
            for i in exhausted {
                results[i] = None;
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(DriveError::Contended(settings.max_attempts))))
        .collect()
}

/// What to give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release<'a> {
    /// Every address of an attachment (CNI DEL); none held is fine.
    Handle(&'a str),
    /// One address, if it still has the sequence number it was handed out
    /// under (garbage collection of a leak).
    Address {
        /// The address.
        addr: IpAddr,
        /// Its sequence number.
        sequence: u64,
    },
}

/// Gives back what `what` names; the addresses given back.
pub async fn release<S: BlockStore>(
    store: &S,
    what: Release<'_>,
    now: u64,
    settings: Settings,
) -> Result<Vec<IpAddr>, DriveError> {
    let mut done = Vec::new();
    'attempt: for _ in 0..settings.max_attempts {
        let (blocks, versions) = read(store).await?;
        for (cidr, block) in &blocks {
            let mut changed = block.clone();
            let freed = match &what {
                Release::Handle(h) => changed.release_handle(h, now),
                Release::Address { addr, sequence } => {
                    if !cidr.contains(addr) {
                        continue;
                    }
                    // Not held here: another block may hold it (blocks
                    // should not overlap, but a damaged store may have
                    // them overlap; `petrel ipam check` reports it).
                    match changed.release(*addr, Some(*sequence), now) {
                        Ok(_) => vec![*addr],
                        Err(ReleaseError::NotAllocated { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if freed.is_empty() {
                continue;
            }
            let Some(version) = versions.get(cidr) else {
                continue;
            };
            match store.update(&changed, version).await {
                Ok(()) => done.extend(freed),
                Err(StoreError::Conflict(_)) => continue 'attempt,
                Err(e) => return Err(DriveError::Store(e)),
            }
        }
        if let (Release::Address { addr, .. }, true) = (&what, done.is_empty()) {
            return Err(ReleaseError::NotAllocated { addr: *addr }.into());
        }
        return Ok(done);
    }
    Err(DriveError::Contended(settings.max_attempts))
}

/// Gives up `node`'s blocks that have been empty for `grace` seconds at
/// `now` ([`releasable`](super::releasable): never its last of a pool).
/// Each delete names the version read, so a block that got an address
/// meanwhile stays. The blocks given up.
pub async fn release_blocks<S: BlockStore>(
    store: &S,
    node: &str,
    now: u64,
    grace: u64,
) -> Result<Vec<IpNet>, DriveError> {
    let (blocks, versions) = read(store).await?;
    let mut done = Vec::new();
    for cidr in super::choose::releasable(node, &blocks, now, grace) {
        let Some(version) = versions.get(&cidr) else {
            continue;
        };
        match store.delete(cidr, version).await {
            Ok(()) => done.push(cidr),
            // Changed since read: it is decided again next time.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(DriveError::Store(e)),
        }
    }
    Ok(done)
}
