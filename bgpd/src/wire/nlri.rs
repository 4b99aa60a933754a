//! IPv4 and IPv6 unicast NLRI (RFC 4271 §4.3, RFC 4760 §5), with and without
//! ADD-PATH path identifiers (RFC 7911 §3).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::reader::Reader;

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
        out.push(len);
        let n = usize::from(len).div_ceil(8);
        // Copy the whole address (a fixed-size copy the compiler inlines) and
        // cut it back, rather than a variable-length copy per prefix.
        match self.prefix {
            IpNet::V4(p) => {
                out.extend_from_slice(&p.addr().octets());
                out.truncate(out.len() - (4 - n));
            }
            IpNet::V6(p) => {
                out.extend_from_slice(&p.addr().octets());
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
    decode_field(buf, add_path, 32, out, |bytes, len| {
        let mut octets = [0u8; 4];
        fill(&mut octets, bytes);
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
    decode_field(buf, add_path, 128, out, |bytes, len| {
        let mut octets = [0u8; 16];
        fill(&mut octets, bytes);
        Ipv6Net::new(Ipv6Addr::from(octets), len)
            .ok()
            .map(IpNet::V6)
    })
}

/// Copies a prefix's octets into a zeroed address. `bytes` is never longer than
/// the address (the caller checked the prefix length).
#[inline(always)]
fn fill<const N: usize>(octets: &mut [u8; N], bytes: &[u8]) {
    if let Some(dst) = octets.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

#[inline(always)]
fn decode_field(
    buf: &[u8],
    add_path: bool,
    max_len: u8,
    out: &mut Vec<Nlri>,
    make: impl Fn(&[u8], u8) -> Option<IpNet>,
) -> Result<(), NlriFault> {
    let mut r = Reader::new(buf);
    // A rough lower bound on the count avoids repeated growth.
    out.reserve(buf.len() / if add_path { 8 } else { 4 });
    while !r.is_empty() {
        let path_id = if add_path {
            Some(r.u32().map_err(|_| NlriFault::Truncated)?)
        } else {
            None
        };
        let len = r.u8().map_err(|_| NlriFault::Truncated)?;
        if len > max_len {
            return Err(NlriFault::PrefixTooLong);
        }
        let bytes = r
            .take(usize::from(len).div_ceil(8))
            .map_err(|_| NlriFault::Truncated)?;
        let prefix = make(bytes, len).ok_or(NlriFault::PrefixTooLong)?;
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
