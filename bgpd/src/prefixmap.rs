//! Per-prefix maps that keep IPv4 and IPv6 keys apart.
//!
//! An `IpNet` is 18 bytes and byte-aligned, so beside an 8-byte-aligned
//! value a hash table slot gives it 24: a full IPv4 table paid 19 bytes of
//! every Loc-RIB and Adj-RIB-Out slot for IPv6 room it never used (26 MB
//! each at a million prefixes, slots being ~1.65 per entry). [`PrefixMap`]
//! holds one [`BigMap`] per family, keyed by the family's own prefix type
//! (5 bytes for IPv4, padded to 8), and hands out `IpNet` keys by value.

use std::fmt;
use std::hash::Hash;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bigmap::{BigMap, SHARDS};

// The premise of the split, checked when the crate builds: beside an
// 8-byte-aligned value, an IPv4 key takes less room than an `IpNet`.
const _: () = assert!(size_of::<(Ipv4Net, u64)>() < size_of::<(IpNet, u64)>());

/// A key of one family or the other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Split<A, B> {
    /// IPv4.
    V4(A),
    /// IPv6.
    V6(B),
}

/// A key that names a prefix (and maybe more), stored per family.
pub(crate) trait PrefixKey: Copy {
    /// The key's IPv4 form.
    type V4: Hash + Eq + Copy;
    /// The key's IPv6 form.
    type V6: Hash + Eq + Copy;
    /// The key in its family's form.
    fn split(self) -> Split<Self::V4, Self::V6>;
    /// The key from its IPv4 form.
    fn from_v4(k: Self::V4) -> Self;
    /// The key from its IPv6 form.
    fn from_v6(k: Self::V6) -> Self;
}

impl PrefixKey for IpNet {
    type V4 = Ipv4Net;
    type V6 = Ipv6Net;

    fn split(self) -> Split<Ipv4Net, Ipv6Net> {
        match self {
            IpNet::V4(n) => Split::V4(n),
            IpNet::V6(n) => Split::V6(n),
        }
    }

    fn from_v4(k: Ipv4Net) -> Self {
        IpNet::V4(k)
    }

    fn from_v6(k: Ipv6Net) -> Self {
        IpNet::V6(k)
    }
}

/// A prefix and an ADD-PATH path ID.
impl PrefixKey for (IpNet, u32) {
    type V4 = (Ipv4Net, u32);
    type V6 = (Ipv6Net, u32);

    fn split(self) -> Split<(Ipv4Net, u32), (Ipv6Net, u32)> {
        match self.0 {
            IpNet::V4(n) => Split::V4((n, self.1)),
            IpNet::V6(n) => Split::V6((n, self.1)),
        }
    }

    fn from_v4(k: (Ipv4Net, u32)) -> Self {
        (IpNet::V4(k.0), k.1)
    }

    fn from_v6(k: (Ipv6Net, u32)) -> Self {
        (IpNet::V6(k.0), k.1)
    }
}

/// How many parts a listing of a [`PrefixMap`] goes through at most
/// ([`PrefixMap::part`]): a family's shards, IPv4 then IPv6.
pub(crate) const PARTS: usize = 2 * SHARDS;

/// A hash map keyed by prefix, one [`BigMap`] per family (see the module
/// documentation). Iteration order is unspecified.
pub(crate) struct PrefixMap<K: PrefixKey, V> {
    v4: BigMap<K::V4, V>,
    v6: BigMap<K::V6, V>,
}

impl<K: PrefixKey, V> Default for PrefixMap<K, V> {
    fn default() -> Self {
        PrefixMap {
            v4: BigMap::new(),
            v6: BigMap::new(),
        }
    }
}

impl<K: PrefixKey, V> fmt::Debug for PrefixMap<K, V> {
    // A million entries are no use in a log line; their count is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixMap")
            .field("ipv4", &self.v4.len())
            .field("ipv6", &self.v6.len())
            .finish()
    }
}

impl<K: PrefixKey, V> PrefixMap<K, V> {
    /// An empty map; allocates nothing until the first insert.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the map is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match key.split() {
            Split::V4(k) => self.v4.get(&k),
            Split::V6(k) => self.v6.get(&k),
        }
    }

    /// The value for `key`, to change.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match key.split() {
            Split::V4(k) => self.v4.get_mut(&k),
            Split::V6(k) => self.v6.get_mut(&k),
        }
    }

    /// Inserts `value` for `key`, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match key.split() {
            Split::V4(k) => self.v4.insert(k, value),
            Split::V6(k) => self.v6.insert(k, value),
        }
    }

    /// The value for `key`, inserting the default first if absent.
    pub(crate) fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        match key.split() {
            Split::V4(k) => self.v4.get_or_default(k),
            Split::V6(k) => self.v6.get_or_default(k),
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match key.split() {
            Split::V4(k) => self.v4.remove(&k),
            Split::V6(k) => self.v6.remove(&k),
        }
    }

    /// Removes everything and gives the memory back.
    pub(crate) fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Every entry, IPv4 first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        let v4 = self.v4.iter().map(|(k, v)| (K::from_v4(*k), v));
        let v6 = self.v6.iter().map(|(k, v)| (K::from_v6(*k), v));
        v4.chain(v6)
    }

    /// One part of the map, for a listing done a part at a time, and the
    /// part to read next (`None`: the listing is complete); a listing starts
    /// at part 0. A key is always in the same part, so every entry present
    /// from the first part to the last is listed exactly once (one added or
    /// removed meanwhile may or may not be). A family's table not split into
    /// shards yet (under 8192 entries) is one part.
    pub(crate) fn part(&self, part: usize) -> (Vec<(K, &V)>, Option<usize>) {
        if part < SHARDS {
            if self.v4.is_split() {
                let v = self
                    .v4
                    .shard_entries(part)
                    .map(|(k, v)| (K::from_v4(*k), v));
                (v.collect(), Some(part + 1))
            } else {
                let v = self.v4.iter().map(|(k, v)| (K::from_v4(*k), v));
                let v = if part == 0 { v.collect() } else { Vec::new() };
                (v, Some(SHARDS))
            }
        } else if part < PARTS {
            let i = part - SHARDS;
            if self.v6.is_split() {
                let v = self.v6.shard_entries(i).map(|(k, v)| (K::from_v6(*k), v));
                (v.collect(), (part + 1 < PARTS).then_some(part + 1))
            } else {
                let v = self.v6.iter().map(|(k, v)| (K::from_v6(*k), v));
                (if i == 0 { v.collect() } else { Vec::new() }, None)
            }
        } else {
            (Vec::new(), None)
        }
    }

    /// Every key, IPv4 first.
    pub(crate) fn keys(&self) -> impl Iterator<Item = K> {
        self.iter().map(|(k, _)| k)
    }
}

impl<K: PrefixKey, V> Extend<(K, V)> for PrefixMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Every key a listing part by part yields, counted.
    fn listed(m: &PrefixMap<IpNet, u32>) -> HashMap<IpNet, usize> {
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let mut part = Some(0);
        let mut pages = 0;
        while let Some(p) = part {
            let (items, next) = m.part(p);
            for (k, _) in items {
                *seen.entry(k).or_default() += 1;
            }
            part = next;
            pages += 1;
            assert!(pages <= PARTS, "a listing ends");
        }
        seen
    }

    fn v4(i: u32) -> IpNet {
        Ipv4Net::new_assert((0x0a00_0000 + (i << 8)).into(), 24).into()
    }

    fn v6(i: u32) -> IpNet {
        Ipv6Net::new_assert((0x2001_0db8_u128 << 96 | u128::from(i) << 64).into(), 64).into()
    }

    #[test]
    fn a_listing_by_parts_yields_every_key_once() {
        for (n4, n6) in [(0, 0), (10, 3), (20_000, 5), (7, 20_000), (20_000, 20_000)] {
            let mut m: PrefixMap<IpNet, u32> = PrefixMap::new();
            m.extend((0..n4).map(|i| (v4(i), i)));
            m.extend((0..n6).map(|i| (v6(i), i)));
            let seen = listed(&m);
            assert_eq!(seen.len(), (n4 + n6) as usize, "{n4} + {n6}");
            assert!(seen.values().all(|c| *c == 1), "{n4} + {n6}");
        }
    }

    #[test]
    fn keys_present_throughout_a_listing_are_listed_once_whatever_changes() {
        // Small at the first part: the whole family is the first part, and
        // its split while the listing goes on repeats nothing.
        let m = std::cell::RefCell::new(PrefixMap::<IpNet, u32>::new());
        m.borrow_mut().extend((0..100).map(|i| (v4(i), i)));
        m.borrow_mut().extend((0..20_000).map(|i| (v6(i), i)));
        let mut added = 100;
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let mut part = Some(0);
        while let Some(p) = part {
            let next = {
                let map = m.borrow();
                let (items, next) = map.part(p);
                for (k, _) in items {
                    *seen.entry(k).or_default() += 1;
                }
                next
            };
            // Others come and go between parts, splitting the IPv4 table.
            let mut map = m.borrow_mut();
            map.extend((added..added + 500).map(|i| (v4(i), i)));
            map.remove(&v6(20_000 - 1 - p as u32));
            added += 500;
            part = next;
        }
        for i in 0..100 {
            assert_eq!(seen.get(&v4(i)), Some(&1), "{}", v4(i));
        }
        for i in 0..(20_000 - PARTS as u32) {
            assert_eq!(seen.get(&v6(i)), Some(&1), "{}", v6(i));
        }
        assert!(seen.values().all(|c| *c == 1));
    }

    #[test]
    fn keys_of_both_families_live_side_by_side() {
        let mut m: PrefixMap<(IpNet, u32), u32> = PrefixMap::new();
        let mut reference = std::collections::HashMap::new();
        // Enough IPv4 keys that the IPv4 map splits into shards.
        for i in 0..20_000u32 {
            let v4: IpNet = Ipv4Net::new_assert((0x0a00_0000 + (i << 8)).into(), 24).into();
            let v6: IpNet =
                Ipv6Net::new_assert((0x2001_0db8_u128 << 96 | u128::from(i) << 64).into(), 64)
                    .into();
            for key in [(v4, i % 3), (v6, i % 5)] {
                assert_eq!(m.insert(key, i), reference.insert(key, i));
            }
            if i % 4 == 0 {
                assert_eq!(m.remove(&(v4, 0)), reference.remove(&(v4, 0)));
                *m.get_or_default((v6, 7)) += 1;
                *reference.entry((v6, 7)).or_default() += 1;
            }
        }
        // The same prefix length and bits in the other family is another key.
        let v4: IpNet = Ipv4Net::new_assert([10, 0, 1, 0].into(), 24).into();
        let mapped: IpNet =
            Ipv6Net::new_assert(std::net::Ipv4Addr::new(10, 0, 1, 0).to_ipv6_mapped(), 120).into();
        assert_eq!(m.get(&(mapped, 1)), None);
        assert_eq!(m.get(&(v4, 1)), reference.get(&(v4, 1)));
        assert_eq!(m.len(), reference.len());
        for (k, v) in &reference {
            assert_eq!(m.get(k), Some(v), "key {k:?}");
        }
        let mut seen: Vec<((IpNet, u32), u32)> = m.iter().map(|(k, v)| (k, *v)).collect();
        seen.sort_unstable();
        let mut want: Vec<((IpNet, u32), u32)> = reference.into_iter().collect();
        want.sort_unstable();
        assert_eq!(seen, want);
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get(&(v4, 1)), None);
    }
}
