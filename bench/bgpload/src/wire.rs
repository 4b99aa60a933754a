//! The few BGP-4 messages the load generator sends (RFC 4271, 6793), and the
//! synthetic tables of the shared harness (`bgpwire.py`), byte for byte.

use std::net::Ipv4Addr;

use crate::pyrandom::PyRandom;

/// Largest message the tables are packed into (RFC 4271's limit).
pub const MAX_MSG: usize = 4096;
/// Message types.
pub const T_OPEN: u8 = 1;
/// UPDATE.
pub const T_UPDATE: u8 = 2;
/// NOTIFICATION.
pub const T_NOTIFICATION: u8 = 3;
/// KEEPALIVE.
pub const T_KEEPALIVE: u8 = 4;
const AS_TRANS: u16 = 23456;

/// One message: marker, length, type, body.
pub fn msg(mtype: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(19 + body.len());
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(mtype);
    m.extend_from_slice(body);
    m
}

/// A KEEPALIVE.
pub fn keepalive() -> Vec<u8> {
    msg(T_KEEPALIVE, &[])
}

/// A NOTIFICATION with no data.
pub fn notification(code: u8, subcode: u8) -> Vec<u8> {
    msg(T_NOTIFICATION, &[code, subcode])
}

/// OPEN with the capabilities the harness's tool announces: multiprotocol
/// IPv4 unicast, route refresh and 4-octet AS numbers.
pub fn open(my_as: u32, hold: u16, router_id: Ipv4Addr) -> Vec<u8> {
    let mut caps = vec![1, 4, 0, 1, 0, 1, 2, 0, 65, 4];
    caps.extend_from_slice(&my_as.to_be_bytes());
    let as2 = u16::try_from(my_as).unwrap_or(AS_TRANS);
    let mut body = vec![4];
    body.extend_from_slice(&as2.to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&router_id.octets());
    body.push(2 + caps.len() as u8);
    body.push(2);
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    msg(T_OPEN, &body)
}

/// What the peer's OPEN says that the tool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOpen {
    /// The peer's AS, from the 4-octet capability when present.
    pub asn: u32,
    /// The peer's hold time.
    pub hold: u16,
}

/// Reads an OPEN body; `None` when it is too short to be one.
pub fn parse_open(body: &[u8]) -> Option<PeerOpen> {
    if body.len() < 10 {
        return None;
    }
    let as2 = u16::from_be_bytes([body[1], body[2]]);
    let hold = u16::from_be_bytes([body[3], body[4]]);
    let end = (10 + body[9] as usize).min(body.len());
    let mut asn = u32::from(as2);
    let mut i = 10;
    while i + 2 <= end {
        let (ptype, plen) = (body[i], body[i + 1] as usize);
        let pend = (i + 2 + plen).min(end);
        if ptype == 2 {
            let mut j = i + 2;
            while j + 2 <= pend {
                let (code, clen) = (body[j], body[j + 1] as usize);
                if code == 65 && clen == 4 && j + 6 <= pend {
                    asn = u32::from_be_bytes([body[j + 2], body[j + 3], body[j + 4], body[j + 5]]);
                }
                j += 2 + clen;
            }
        }
        i += 2 + plen;
    }
    Some(PeerOpen { asn, hold })
}

fn attr(out: &mut Vec<u8>, flags: u8, atype: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | 0x10, atype]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, atype, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

/// ORIGIN IGP, AS_PATH (one AS_SEQUENCE of 4-octet ASNs, or empty),
/// NEXT_HOP, and MED and LOCAL_PREF when given: `bgpwire.encode_attrs`.
pub fn attrs(
    as_path: &[u32],
    next_hop: Ipv4Addr,
    med: Option<u32>,
    local_pref: Option<u32>,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(64);
    attr(&mut a, 0x40, 1, &[0]);
    let mut seg = Vec::new();
    if !as_path.is_empty() {
        seg.extend_from_slice(&[2, as_path.len() as u8]);
        for x in as_path {
            seg.extend_from_slice(&x.to_be_bytes());
        }
    }
    attr(&mut a, 0x40, 2, &seg);
    attr(&mut a, 0x40, 3, &next_hop.octets());
    if let Some(med) = med {
        attr(&mut a, 0x80, 4, &med.to_be_bytes());
    }
    if let Some(lp) = local_pref {
        attr(&mut a, 0x40, 5, &lp.to_be_bytes());
    }
    a
}

/// An NLRI entry: length byte and the significant address bytes.
pub fn prefix(addr: u32, plen: u8) -> Vec<u8> {
    let nb = (plen as usize).div_ceil(8);
    let mut p = vec![plen];
    p.extend_from_slice(&addr.to_be_bytes()[..nb]);
    p
}

/// Packs prefixes into as few UPDATEs as fit in 4096 bytes, appended to
/// `out`; returns how many messages that made (`bgpwire.encode_updates`).
pub fn updates(out: &mut Vec<u8>, attrs: &[u8], nlri: &[Vec<u8>], withdraw: bool) -> usize {
    let room = MAX_MSG - 19 - 4 - if withdraw { 0 } else { attrs.len() };
    let mut count = 0;
    let mut start = 0;
    let mut size = 0;
    for (i, p) in nlri.iter().enumerate() {
        if size + p.len() > room {
            update(out, attrs, &nlri[start..i], withdraw);
            count += 1;
            start = i;
            size = 0;
        }
        size += p.len();
    }
    if start < nlri.len() {
        update(out, attrs, &nlri[start..], withdraw);
        count += 1;
    }
    count
}

fn update(out: &mut Vec<u8>, attrs: &[u8], prefixes: &[Vec<u8>], withdraw: bool) {
    let blob: usize = prefixes.iter().map(Vec::len).sum();
    let body = if withdraw {
        4 + blob
    } else {
        4 + attrs.len() + blob
    };
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&((19 + body) as u16).to_be_bytes());
    out.push(T_UPDATE);
    if withdraw {
        out.extend_from_slice(&(blob as u16).to_be_bytes());
        prefixes.iter().for_each(|p| out.extend_from_slice(p));
        out.extend_from_slice(&[0, 0]);
    } else {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(attrs);
        prefixes.iter().for_each(|p| out.extend_from_slice(p));
    }
}

/// Prefix lengths loosely like the public IPv4 table, /24 dominant.
const LENGTHS: [u8; 9] = [24, 23, 22, 21, 20, 19, 18, 17, 16];
const CUM_WEIGHTS: [u32; 9] = [57, 67, 79, 84, 90, 94, 96, 98, 100];

/// `n` distinct random prefixes, overlaps allowed, none in 0/8, 10/8,
/// 127/8 or 224/3 (`bgpwire.gen_prefixes`).
pub fn gen_prefixes(n: usize, seed: u64) -> Vec<(u32, u8)> {
    let mut rnd = PyRandom::new(seed);
    let mut seen = foldhash::HashSet::default();
    let mut out = Vec::with_capacity(n);
    let mut lens = Vec::with_capacity(4096);
    while out.len() < n {
        // CPython draws the whole batch of lengths first, then an address each.
        lens.clear();
        lens.extend((0..4096).map(|_| LENGTHS[rnd.choices_index(&CUM_WEIGHTS)]));
        for &plen in &lens {
            let a = rnd.getrandbits(32) & (u32::MAX << (32 - plen));
            let first = a >> 24;
            if first == 0 || first == 10 || first == 127 || first >= 224 {
                continue;
            }
            if !seen.insert((u64::from(a) << 6) | u64::from(plen)) {
                continue;
            }
            out.push((a, plen));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// How many prefixes share one attribute set: skewed like real tables.
fn group_size(rnd: &mut PyRandom) -> usize {
    let r = rnd.random();
    let g = if r < 0.45 {
        1
    } else if r < 0.70 {
        rnd.randint(2, 5)
    } else if r < 0.90 {
        rnd.randint(6, 20)
    } else if r < 0.98 {
        rnd.randint(21, 60)
    } else {
        rnd.randint(61, 400)
    };
    g as usize
}

/// A table's announce and withdraw streams and their sizes.
pub struct Table {
    /// UPDATEs announcing every prefix.
    pub announce: Vec<u8>,
    /// UPDATEs withdrawing every prefix.
    pub withdraw: Vec<u8>,
    /// Prefixes in the table.
    pub prefixes: usize,
    /// Attribute sets.
    pub attr_sets: usize,
    /// UPDATEs in the announce stream.
    pub announce_msgs: usize,
    /// UPDATEs in the withdraw stream.
    pub withdraw_msgs: usize,
}

/// The eBGP table of `n` prefixes `bgpwire.build_table_stream` makes for
/// the same AS, next hop and seed.
pub fn build_table(n: usize, my_as: u32, next_hop: Ipv4Addr, seed: u64) -> Table {
    let mut rnd = PyRandom::new(seed + 1000);
    let prefixes: Vec<Vec<u8>> = gen_prefixes(n, seed)
        .into_iter()
        .map(|(a, l)| prefix(a, l))
        .collect();
    let mut announce = Vec::with_capacity(n * 10);
    let (mut i, mut groups, mut announce_msgs) = (0, 0, 0);
    const MEDS: [Option<u32>; 5] = [None, None, Some(0), Some(10), Some(100)];
    while i < n {
        let g = group_size(&mut rnd);
        let hops = rnd.randint(2, 4);
        let mut path = vec![my_as];
        for _ in 0..hops - 1 {
            let asn = if rnd.random() < 0.2 {
                rnd.randint(131_072, 401_308)
            } else {
                rnd.randint(1000, 64_000)
            };
            path.push(asn);
        }
        let med = MEDS[rnd.choice_index(MEDS.len())];
        let a = attrs(&path, next_hop, med, None);
        announce_msgs += updates(&mut announce, &a, &prefixes[i..(i + g).min(n)], false);
        i += g;
        groups += 1;
    }
    let mut withdraw = Vec::with_capacity(n * 4);
    let withdraw_msgs = updates(&mut withdraw, &[], &prefixes, true);
    Table {
        announce,
        withdraw,
        prefixes: n,
        attr_sets: groups,
        announce_msgs,
        withdraw_msgs,
    }
}

/// Route-reflector client `i`'s announcement (`bgptool.py clients`): `k - 1`
/// pod blocks (/26 from 100.64/10) and one service VIP (/32 from 198.18/15),
/// next hop its own address, LOCAL_PREF 100.
pub fn client_update(i: u32, k: u32, addr: Ipv4Addr) -> Vec<u8> {
    let pod = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let vip = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let nlri: Vec<Vec<u8>> = (0..k)
        .map(|j| {
            if j < k - 1 || k == 1 {
                prefix(pod + ((i * k + j) << 6), 26)
            } else {
                prefix(vip + i, 32)
            }
        })
        .collect();
    let mut out = Vec::new();
    updates(&mut out, &attrs(&[], addr, None, Some(100)), &nlri, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_reads_back() {
        let m = open(4_200_000_000, 240, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(m.len(), u16::from_be_bytes([m[16], m[17]]) as usize);
        let o = parse_open(&m[19..]).expect("an OPEN");
        assert_eq!(
            o,
            PeerOpen {
                asn: 4_200_000_000,
                hold: 240
            }
        );
        assert_eq!(u16::from_be_bytes([m[20], m[21]]), AS_TRANS);
    }

    #[test]
    fn short_or_broken_opens_do_not_panic() {
        let m = open(65001, 90, Ipv4Addr::new(1, 2, 3, 4));
        for cut in 0..m.len() - 19 {
            let _ = parse_open(&m[19..19 + cut]);
        }
        let mut bad = m[19..].to_vec();
        bad[9] = 200;
        assert_eq!(parse_open(&bad).map(|o| o.asn), Some(65001));
    }

    #[test]
    fn updates_stay_under_the_limit() {
        let t = build_table(5000, 65002, Ipv4Addr::new(10, 0, 1, 2), 1);
        let mut i = 0;
        let mut msgs = 0;
        while i < t.announce.len() {
            let len = u16::from_be_bytes([t.announce[i + 16], t.announce[i + 17]]) as usize;
            assert!(len <= MAX_MSG && t.announce[i + 18] == T_UPDATE);
            i += len;
            msgs += 1;
        }
        assert_eq!(msgs, t.announce_msgs);
    }
}
