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
/// `bgptool.py` counts them (MP_REACH is not looked at). With `own_id`, an
/// UPDATE whose ORIGINATOR_ID is that router ID is our own route reflected
/// back: its NLRI count as withdrawn, as an RFC 4456 client treats them.
/// `None` when the body's lengths do not add up.
pub fn apply_update(
    set: &mut RxSet,
    interner: &mut Interner,
    body: &[u8],
    own_id: Option<[u8; 4]>,
) -> Option<()> {
    let wl = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let withdrawn = body.get(2..2 + wl)?;
    let al_at = 2 + wl;
    let al = u16::from_be_bytes([*body.get(al_at)?, *body.get(al_at + 1)?]) as usize;
    let attrs = body.get(al_at + 2..al_at + 2 + al)?;
    let nlri = body.get(al_at + 2 + al..)?;
    for key in entries(withdrawn) {
        set.remove(interner, key?);
    }
    let looped = match own_id {
        Some(id) => originator_id(attrs)? == Some(id),
        None => false,
    };
    for key in entries(nlri) {
        if looped {
            set.remove(interner, key?);
        } else {
            set.insert(interner, key?);
        }
    }
    Some(())
}

/// The ORIGINATOR_ID attribute's value, if the attributes carry one; `None`
/// (outer) when they do not parse.
fn originator_id(mut attrs: &[u8]) -> Option<Option<[u8; 4]>> {
    while !attrs.is_empty() {
        let (flags, code) = (*attrs.first()?, *attrs.get(1)?);
        let (len, head) = if flags & 0x10 != 0 {
            (
                u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]) as usize,
                4,
            )
        } else {
            (*attrs.get(2)? as usize, 3)
        };
        let value = attrs.get(head..head + len)?;
        if code == 9 {
            return Some(Some(value.try_into().ok()?));
        }
        attrs = &attrs[head + len..];
    }
    Some(None)
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
        apply_update(&mut a, &mut interner, &stream[19..], None).expect("well formed");
        apply_update(&mut a, &mut interner, &stream[19..], None).expect("well formed");
        apply_update(&mut b, &mut interner, &stream[19..], None).expect("well formed");
        assert_eq!((a.len(), b.len()), (100, 100));
        let mut wd = Vec::new();
        wire::updates(&mut wd, &[], &p[..40], true);
        apply_update(&mut a, &mut interner, &wd[19..], None).expect("well formed");
        apply_update(&mut a, &mut interner, &wd[19..], None).expect("well formed");
        assert_eq!((a.len(), b.len()), (60, 100));
    }

    #[test]
    fn a_broken_body_is_refused_not_a_panic() {
        let mut interner = Interner::default();
        let mut s = RxSet::default();
        assert!(apply_update(&mut s, &mut interner, &[0, 5, 1], None).is_none());
        assert!(
            apply_update(
                &mut s,
                &mut interner,
                &[0, 0, 0, 0, 33, 1, 2, 3, 4, 5],
                None
            )
            .is_none()
        );
        assert!(apply_update(&mut s, &mut interner, &[0, 0, 0, 0, 24, 1, 2], None).is_none());
        let own = Some([10, 0, 0, 9]);
        assert!(apply_update(&mut s, &mut interner, &[0, 0, 0, 3, 0x80, 9, 4], own).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn our_own_route_reflected_back_is_not_counted_and_withdraws() {
        let mut interner = Interner::default();
        let mut s = RxSet::default();
        let own = [10, 0, 0, 9];
        let p = [wire::prefix(11 << 24, 24)];
        let mut plain = Vec::new();
        wire::updates(
            &mut plain,
            &wire::attrs(&[], Ipv4Addr::new(10, 0, 0, 2), None, Some(100)),
            &p,
            false,
        );
        let mut looped_attrs = wire::attrs(&[], Ipv4Addr::new(10, 0, 0, 2), None, Some(100));
        looped_attrs.extend_from_slice(&[0x80, 9, 4, 10, 0, 0, 9]);
        let mut looped = Vec::new();
        wire::updates(&mut looped, &looped_attrs, &p, false);
        apply_update(&mut s, &mut interner, &plain[19..], Some(own)).expect("well formed");
        assert_eq!(s.len(), 1);
        apply_update(&mut s, &mut interner, &looped[19..], Some(own)).expect("well formed");
        assert_eq!(s.len(), 0, "treated as a withdrawal");
        apply_update(&mut s, &mut interner, &looped[19..], None).expect("well formed");
        assert_eq!(s.len(), 1, "counted without the check, as bgptool.py does");
    }
}
