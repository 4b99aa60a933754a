//! The hash map behind the RIB's per-prefix tables (Loc-RIB, Adj-RIBs-In and
//! -Out), which hold a million entries each at a full table.
//!
//! A single hash table is a poor fit at that size, for two reasons:
//! - Growth. A table doubles by rehashing every entry at once, and the old and
//!   the new table are both live while it does. Done at once it held the RIB
//!   owner (and an API read waiting on it) for hundreds of milliseconds;
//!   done incrementally (griddle, before this map) the old table stayed
//!   allocated for the next million inserts, half again the table's memory.
//! - Load. A power-of-two table just past a doubling is less than half
//!   full, and a million entries is just past one (2^20 × 7/8 = 917k).
//!
//! [`BigMap`] splits a large map into [`SHARDS`] ordinary tables of unequal
//! expected size: shard `i` gets a share of the keys proportional to
//! `2^(i/SHARDS)`, so the shards' sizes spread evenly over one doubling and
//! they double one at a time as the map grows, each rehashing a few
//! thousand entries. The slots per entry average ~1.65 whatever the size,
//! instead of swinging between 1.14 and 2.29. Small maps (most peers'
//! tables, in a route-reflector mesh) stay one table, with no shard array.

use std::borrow::Borrow;
use std::collections::hash_map;
use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

use foldhash::HashMap;
use foldhash::fast::FixedState;

/// Number of shards of a split map.
pub(crate) const SHARDS: usize = 256;

/// Entries at which a map splits into shards: the one rehash it costs is of
/// this many entries, a few hundred microseconds.
const SPLIT_AT: usize = 8192;

/// Seed of the hash that picks a shard. It must be independent of the
/// shards' own hashes (per-map random seeds): a shard holds only keys with
/// one value of it, and if the table inside hashed the same way its keys
/// would all share their control bits and probe slowly.
const PICK_SEED: u64 = 0x5851_f42d_4c95_7f2d;

/// Upper bounds of each shard's range of the picking hash (the last is
/// `u64::MAX`), from the weights `2^(i/SHARDS)`.
static BOUNDS: LazyLock<[u64; SHARDS]> = LazyLock::new(|| {
    let weight = |i: usize| (i as f64 / SHARDS as f64).exp2();
    let total: f64 = (0..SHARDS).map(weight).sum();
    let mut bounds = [u64::MAX; SHARDS];
    let mut acc = 0.0;
    for (i, b) in bounds.iter_mut().enumerate().take(SHARDS - 1) {
        acc += weight(i);
        // Saturates at u64::MAX; the last shard takes what rounding leaves.
        *b = (acc / total * u64::MAX as f64) as u64;
    }
    bounds
});

/// A hash map that grows without a pause (see the module documentation).
/// Iteration order is unspecified, as for any hash map.
#[derive(Debug, Clone)]
pub(crate) struct BigMap<K, V> {
    repr: Repr<K, V>,
}

#[derive(Debug, Clone)]
enum Repr<K, V> {
    One(HashMap<K, V>),
    Split {
        shards: Box<[HashMap<K, V>]>,
        len: usize,
    },
}

impl<K, V> Default for BigMap<K, V> {
    fn default() -> Self {
        BigMap {
            repr: Repr::One(HashMap::default()),
        }
    }
}

fn pick<Q: Hash + ?Sized>(key: &Q) -> usize {
    let h = FixedState::with_seed(PICK_SEED).hash_one(key);
    BOUNDS.partition_point(|b| *b < h).min(SHARDS - 1)
}

impl<K: Hash + Eq, V> BigMap<K, V> {
    /// An empty map; allocates nothing until the first insert.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match &self.repr {
            Repr::One(m) => m.len(),
            Repr::Split { len, .. } => *len,
        }
    }

    /// Whether the map is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard<Q>(&self, key: &Q) -> &HashMap<K, V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &self.repr {
            Repr::One(m) => m,
            Repr::Split { shards, .. } => &shards[pick(key)],
        }
    }

    /// The value for `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).get(key)
    }

    /// The value for `key`, to change.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &mut self.repr {
            Repr::One(m) => m.get_mut(key),
            Repr::Split { shards, .. } => shards[pick(key)].get_mut(key),
        }
    }

    /// Splits a map that reached [`SPLIT_AT`] entries.
    fn split_if_large(&mut self) {
        let Repr::One(m) = &mut self.repr else {
            return;
        };
        if m.len() < SPLIT_AT {
            return;
        }
        let one = std::mem::take(m);
        let len = one.len();
        let mut shards: Box<[HashMap<K, V>]> = (0..SHARDS).map(|_| HashMap::default()).collect();
        for (k, v) in one {
            let i = pick(&k);
            shards[i].insert(k, v);
        }
        self.repr = Repr::Split { shards, len };
    }

    /// Inserts `value` for `key`, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.split_if_large();
        match &mut self.repr {
            Repr::One(m) => m.insert(key, value),
            Repr::Split { shards, len } => {
                let old = shards[pick(&key)].insert(key, value);
                if old.is_none() {
                    *len += 1;
                }
                old
            }
        }
    }

    /// The value for `key`, inserting the default first if absent.
    pub(crate) fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.split_if_large();
        match &mut self.repr {
            Repr::One(m) => m.entry(key).or_default(),
            Repr::Split { shards, len } => match shards[pick(&key)].entry(key) {
                hash_map::Entry::Occupied(e) => e.into_mut(),
                hash_map::Entry::Vacant(e) => {
                    *len += 1;
                    e.insert(V::default())
                }
            },
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match &mut self.repr {
            Repr::One(m) => m.remove(key),
            Repr::Split { shards, len } => {
                let old = shards[pick(key)].remove(key);
                if old.is_some() {
                    *len -= 1;
                }
                old
            }
        }
    }

    /// Removes everything and gives the memory back.
    pub(crate) fn clear(&mut self) {
        self.repr = Repr::One(HashMap::default());
    }

    /// Whether the map is split into shards (see [`BigMap::shard_entries`]).
    pub(crate) fn is_split(&self) -> bool {
        matches!(self.repr, Repr::Split { .. })
    }

    /// Shard `i`'s entries (none for a map not split), for reads done a
    /// shard at a time: a key is always in the same shard, so a listing
    /// shard by shard sees every entry present throughout exactly once.
    pub(crate) fn shard_entries(&self, i: usize) -> hash_map::Iter<'_, K, V> {
        match &self.repr {
            Repr::Split { shards, .. } if i < shards.len() => shards[i].iter(),
            _ => hash_map::Iter::default(),
        }
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        let shards: &[HashMap<K, V>] = match &self.repr {
            Repr::One(m) => std::slice::from_ref(m),
            Repr::Split { shards, .. } => shards,
        };
        shards.iter().flat_map(HashMap::iter)
    }
}

/// Iterator over a [`BigMap`]'s entries.
pub(crate) type Iter<'a, K, V> = std::iter::FlatMap<
    std::slice::Iter<'a, HashMap<K, V>>,
    hash_map::Iter<'a, K, V>,
    fn(&'a HashMap<K, V>) -> hash_map::Iter<'a, K, V>,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_across_the_split() {
        let mut m: BigMap<u32, u32> = BigMap::new();
        let mut reference = std::collections::HashMap::new();
        for i in 0..(3 * SPLIT_AT as u32) {
            assert_eq!(m.insert(i, i * 2), reference.insert(i, i * 2));
            if i % 3 == 0 {
                assert_eq!(m.remove(&(i / 2)), reference.remove(&(i / 2)));
            }
            if i % 7 == 0 {
                *m.get_or_default(i / 5) += 1;
                *reference.entry(i / 5).or_default() += 1;
            }
        }
        assert_eq!(m.len(), reference.len());
        assert!(matches!(m.repr, Repr::Split { .. }));
        for (k, v) in &reference {
            assert_eq!(m.get(k), Some(v), "key {k}");
        }
        let mut seen: Vec<(u32, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        let mut want: Vec<(u32, u32)> = reference.into_iter().collect();
        want.sort_unstable();
        assert_eq!(seen, want);
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn shards_fill_in_proportion_to_their_weights() {
        let mut counts = [0u32; SHARDS];
        let n = 2_000_000u32;
        for k in 0..n {
            counts[pick(&k)] += 1;
        }
        // Shard i expects n·2^(i/S)/Σ; the last is twice the first.
        let total: f64 = (0..SHARDS).map(|i| (i as f64 / SHARDS as f64).exp2()).sum();
        for (i, c) in counts.iter().enumerate() {
            let want = f64::from(n) * (i as f64 / SHARDS as f64).exp2() / total;
            let off = (f64::from(*c) - want).abs() / want;
            assert!(off < 0.1, "shard {i}: {c} keys, expected {want:.0}");
        }
        assert!(counts[SHARDS - 1] > counts[0] * 3 / 2);
    }
}
