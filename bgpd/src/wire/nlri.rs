//! IPv4 and IPv6 unicast NLRI (RFC 4271 §4.3, RFC 4760 §5), with and without
//! ADD-PATH path identifiers (RFC 7911 §3).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One announced or withdrawn prefix.
///
/// The prefix keeps the address octets exactly as received, host bits included
/// (RFC 4271 lets a sender leave trailing bits non-zero), so re-encoding gives the
/// same bytes; use [`Nlri::normalized`] before using it as a routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    /// The ADD-PATH path identifier, present when ADD-PATH is negotiated for the
    /// family in this direction.
    pub path_id: Option<u32>,
    /// The prefix.
    pub prefix: IpNet,
}

impl Nlri {
    /// A prefix without a path identifier.
    pub fn new(prefix: IpNet) -> Self {
        Nlri {
            path_id: None,
            prefix,
        }
    }

    /// The same NLRI with host bits cleared.
    pub fn normalized(self) -> Self {
        Nlri {
            path_id: self.path_id,
            prefix: self.prefix.trunc(),
        }
    }

    /// Octets this NLRI takes on the wire.
    pub fn wire_len(&self) -> usize {
        let id = if self.path_id.is_some() { 4 } else { 0 };
        id + 1 + usize::from(self.prefix.prefix_len()).div_ceil(8)
    }

    /// Appends the wire form. `add_path` says whether the session expects a path
    /// identifier; a missing one is written as 0 so the layout stays valid.
    pub fn encode(&self, add_path: bool, out: &mut Vec<u8>) {
        if add_path {
            out.extend_from_slice(&self.path_id.unwrap_or(0).to_be_bytes());
        }
        let len = self.prefix.prefix_len();
        let n = usize::from(len).div_ceil(8);
        // Write the length and the whole address in one fixed-size copy, then cut
        // the address back: cheaper than a variable-length copy per prefix.
        match self.prefix {
            IpNet::V4(p) => {
                let [a, b, c, d] = p.addr().octets();
                out.extend_from_slice(&[len, a, b, c, d]);
                out.truncate(out.len() - (4 - n));
            }
            IpNet::V6(p) => {
                let mut buf = [0u8; 17];
                buf[0] = len;
                buf[1..].copy_from_slice(&p.addr().octets());
                out.extend_from_slice(&buf);
                out.truncate(out.len() - (16 - n));
            }
        }
    }
}

impl fmt::Display for Nlri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path_id {
            Some(id) => write!(f, "{} path-id {id}", self.prefix),
            None => write!(f, "{}", self.prefix),
        }
    }
}

/// Why a prefix list did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NlriFault {
    Truncated,
    PrefixTooLong,
}

impl NlriFault {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NlriFault::Truncated => "prefix overruns the field",
            NlriFault::PrefixTooLong => "prefix length exceeds the address size",
        }
    }
}

/// Decodes a whole field of IPv4 prefixes into `out`.
pub(crate) fn decode_ipv4(
    buf: &[u8],
    add_path: bool,
    out: &mut Vec<Nlri>,
) -> Result<(), NlriFault> {
    decode_field::<4>(buf, add_path, out, |octets, len| {
        Ipv4Net::new(Ipv4Addr::from(octets), len)
            .ok()
            .map(IpNet::V4)
    })
}

/// Decodes a whole field of IPv6 prefixes into `out`.
pub(crate) fn decode_ipv6(
    buf: &[u8],
    add_path: bool,
    out: &mut Vec<Nlri>,
) -> Result<(), NlriFault> {
    decode_field::<16>(buf, add_path, out, |octets, len| {
        Ipv6Net::new(Ipv6Addr::from(octets), len)
            .ok()
            .map(IpNet::V6)
    })
}

/// `OCTET_MASKS[n]`: 0xFF for the first `n` octets of an address, 0 after.
const OCTET_MASKS: [[u8; 16]; 17] = {
    let mut m = [[0u8; 16]; 17];
    let mut n = 0;
    while n <= 16 {
        let mut i = 0;
        while i < n {
            m[n][i] = 0xFF;
            i += 1;
        }
        n += 1;
    }
    m
};

/// The loop shared by both families; `N` is the address size in octets.
#[inline(always)]
fn decode_field<const N: usize>(
    buf: &[u8],
    add_path: bool,
    out: &mut Vec<Nlri>,
    make: impl Fn([u8; N], u8) -> Option<IpNet>,
) -> Result<(), NlriFault> {
    // A rough lower bound on the count avoids repeated growth.
    out.reserve(buf.len() / if add_path { 8 } else { 4 });
    let mut pos = 0;
    while pos < buf.len() {
        let path_id = if add_path {
            let id = buf.get(pos..pos + 4).ok_or(NlriFault::Truncated)?;
            pos += 4;
            Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
        } else {
            None
        };
        let len = *buf.get(pos).ok_or(NlriFault::Truncated)?;
        pos += 1;
        if usize::from(len) > N * 8 {
            return Err(NlriFault::PrefixTooLong);
        }
        let n = usize::from(len).div_ceil(8);
        let bytes = buf.get(pos..pos + n).ok_or(NlriFault::Truncated)?;
        let mut octets = [0u8; N];
        // Most prefixes sit well inside the field: copy a whole address (a fixed
        // size the compiler inlines) and mask off what is not the prefix's; only
        // the last few use the exact-length copy.
        match buf.get(pos..pos + N) {
            Some(whole) => {
                octets.copy_from_slice(whole);
                let keep = OCTET_MASKS[n];
                for (o, k) in octets.iter_mut().zip(keep) {
                    *o &= k;
                }
            }
            None => octets[..n].copy_from_slice(bytes),
        }
        pos += n;
        let prefix = make(octets, len).ok_or(NlriFault::PrefixTooLong)?;
        out.push(Nlri { path_id, prefix });
    }
    Ok(())
}

/// Appends every NLRI of a list.
pub(crate) fn encode_all(nlri: &[Nlri], add_path: bool, out: &mut Vec<u8>) {
    // Room for the longest case up front; the per-prefix writes then never grow.
    out.reserve(nlri.len() * if add_path { 21 } else { 17 });
    for n in nlri {
        n.encode(add_path, out);
    }
}
