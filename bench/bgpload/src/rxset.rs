//! The distinct prefixes each session holds, for thousands of sessions.
//!
//! Every route-reflector client receives nearly the same prefixes, so a
//! prefix is numbered once for the whole process and each session keeps a
//! bit per number: a few kilobytes per client at 5,000 clients where a set
//! per client would take gigabytes.

use foldhash::HashMap;

/// Numbers prefixes as they are first seen, for all sessions together.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<u64, u32>,
}

impl Interner {
    /// A prefix's number, given it the first time; `key` is the NLRI entry's
    /// length and address bytes as received.
    fn id(&mut self, key: u64) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(key).or_insert(next)
    }

    /// A prefix's number if it was ever seen.
    fn get(&self, key: u64) -> Option<u32> {
        self.ids.get(&key).copied()
    }
}

/// One session's set of held prefixes.
#[derive(Default)]
pub struct RxSet {
    bits: Vec<u64>,
    len: usize,
}

impl RxSet {
    /// Prefixes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a prefix (an announcement; a repeat is an implicit replace).
    pub fn insert(&mut self, interner: &mut Interner, key: u64) {
        let id = interner.id(key) as usize;
        let (w, b) = (id / 64, id % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.len += 1;
        }
    }

    /// Removes a prefix (a withdrawal).
    pub fn remove(&mut self, interner: &Interner, key: u64) {
        let Some(id) = interner.get(key) else { return };
        let (w, b) = (id as usize / 64, id % 64);
        if let Some(word) = self.bits.get_mut(w)
            && *word & (1 << b) != 0
        {
            *word &= !(1 << b);
            self.len -= 1;
        }
    }
}

/// Applies one UPDATE body's IPv4 withdrawals and NLRI to `set`, as
/// `bgptool.py` counts them (MP_REACH is not looked at). `None` when the
/// body's lengths do not add up.
pub fn apply_update(set: &mut RxSet, interner: &mut Interner, body: &[u8]) -> Option<()> {
    let wl = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let withdrawn = body.get(2..2 + wl)?;
    let al_at = 2 + wl;
    let al = u16::from_be_bytes([*body.get(al_at)?, *body.get(al_at + 1)?]) as usize;
    let nlri = body.get(al_at + 2 + al..)?;
    for key in entries(withdrawn) {
        set.remove(interner, key?);
    }
    for key in entries(nlri) {
        set.insert(interner, key?);
    }
    Some(())
}

/// The NLRI entries of a field as keys: length in the top byte, then the
/// address bytes as sent (so the key is the bytes, like the Python tool's).
fn entries(field: &[u8]) -> impl Iterator<Item = Option<u64>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= field.len() {
            return None;
        }
        let plen = field[i];
        let nb = (plen as usize).div_ceil(8);
        let Some(bytes) = field.get(i + 1..i + 1 + nb).filter(|_| nb <= 4) else {
            i = field.len();
            return Some(None);
        };
        let mut addr = [0u8; 4];
        addr[..nb].copy_from_slice(bytes);
        i += 1 + nb;
        Some(Some(
            (u64::from(plen) << 32) | u64::from(u32::from_be_bytes(addr)),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use std::net::Ipv4Addr;

    #[test]
    fn counts_distinct_prefixes_across_announce_and_withdraw() {
        let mut interner = Interner::default();
        let (mut a, mut b) = (RxSet::default(), RxSet::default());
        let nh = Ipv4Addr::new(10, 0, 0, 1);
        let p: Vec<Vec<u8>> = (0..100u32)
            .map(|i| wire::prefix((11 << 24) | (i << 8), 24))
            .collect();
        let mut stream = Vec::new();
        wire::updates(
            &mut stream,
            &wire::attrs(&[65000], nh, None, None),
            &p,
            false,
        );
        apply_update(&mut a, &mut interner, &stream[19..]).expect("well formed");
        apply_update(&mut a, &mut interner, &stream[19..]).expect("well formed");
        apply_update(&mut b, &mut interner, &stream[19..]).expect("well formed");
        assert_eq!((a.len(), b.len()), (100, 100));
        let mut wd = Vec::new();
        wire::updates(&mut wd, &[], &p[..40], true);
        apply_update(&mut a, &mut interner, &wd[19..]).expect("well formed");
        apply_update(&mut a, &mut interner, &wd[19..]).expect("well formed");
        assert_eq!((a.len(), b.len()), (60, 100));
    }

    #[test]
    fn a_broken_body_is_refused_not_a_panic() {
        let mut interner = Interner::default();
        let mut s = RxSet::default();
        assert!(apply_update(&mut s, &mut interner, &[0, 5, 1]).is_none());
        assert!(apply_update(&mut s, &mut interner, &[0, 0, 0, 0, 33, 1, 2, 3, 4, 5]).is_none());
        assert!(apply_update(&mut s, &mut interner, &[0, 0, 0, 0, 24, 1, 2]).is_none());
        assert!(s.is_empty());
    }
}
