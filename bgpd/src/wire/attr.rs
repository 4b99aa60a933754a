//! Path attributes (RFC 4271 §4.3, §5) and their RFC 7606 error handling.
//!
//! Attributes are kept in the order received, each with its flags octet exactly
//! as received, so that re-encoding reproduces the input. Attributes this module
//! does not know are kept as bytes with their flags ([`AttrValue::Unknown`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{ErrorAction, ErrorKind, WireError, subcode};
use super::nlri::{self, Nlri};
use super::reader::Reader;
use super::{AS_TRANS, AfiSafi, EncodeError, WireContext};

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive (1) or non-transitive (0).
    pub const TRANSITIVE: u8 = 0x40;
    /// Some BGP speaker along the path did not recognise this optional transitive attribute.
    pub const PARTIAL: u8 = 0x20;
    /// The length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// ORIGIN (RFC 4271).
    pub const ORIGIN: u8 = 1;
    /// AS_PATH (RFC 4271).
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP (RFC 4271).
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC (RFC 4271).
    pub const MED: u8 = 4;
    /// LOCAL_PREF (RFC 4271).
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE (RFC 4271).
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (RFC 4271).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// EXTENDED COMMUNITIES (RFC 4360).
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

use type_code as tc;

/// The name IANA gives an attribute type, for logs and JSON.
pub fn type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        tc::ORIGIN => "ORIGIN",
        tc::AS_PATH => "AS_PATH",
        tc::NEXT_HOP => "NEXT_HOP",
        tc::MED => "MULTI_EXIT_DISC",
        tc::LOCAL_PREF => "LOCAL_PREF",
        tc::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        tc::AGGREGATOR => "AGGREGATOR",
        tc::COMMUNITIES => "COMMUNITIES",
        tc::ORIGINATOR_ID => "ORIGINATOR_ID",
        tc::CLUSTER_LIST => "CLUSTER_LIST",
        tc::MP_REACH_NLRI => "MP_REACH_NLRI",
        tc::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        tc::EXTENDED_COMMUNITIES => "EXTENDED_COMMUNITIES",
        tc::AS4_PATH => "AS4_PATH",
        tc::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        tc::LARGE_COMMUNITIES => "LARGE_COMMUNITIES",
        _ => return None,
    })
}

/// One path attribute: its flags octet and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttribute {
    /// The flags octet as received (all eight bits, so re-encoding is exact).
    /// Encoding sets [`flags::EXTENDED_LENGTH`] by itself when the value needs it.
    pub flags: u8,
    /// The decoded value.
    pub value: AttrValue,
}

impl PathAttribute {
    /// An attribute with the flags its type prescribes (for unknown attributes,
    /// optional transitive).
    pub fn new(value: AttrValue) -> Self {
        let flags = match &value {
            AttrValue::Unknown { .. } => flags::OPTIONAL | flags::TRANSITIVE,
            v => expected_flags(v.type_code()).unwrap_or(flags::OPTIONAL | flags::TRANSITIVE),
        };
        PathAttribute { flags, value }
    }

    /// The attribute type code.
    pub fn type_code(&self) -> u8 {
        self.value.type_code()
    }

    /// Whether the optional bit is set.
    pub fn is_optional(&self) -> bool {
        self.flags & flags::OPTIONAL != 0
    }

    /// Whether the transitive bit is set.
    pub fn is_transitive(&self) -> bool {
        self.flags & flags::TRANSITIVE != 0
    }

    /// Whether the partial bit is set.
    pub fn is_partial(&self) -> bool {
        self.flags & flags::PARTIAL != 0
    }

    /// The attribute as it must be passed on to another peer (RFC 4271 §5):
    /// unrecognised optional transitive attributes get the Partial bit,
    /// unrecognised optional non-transitive ones are dropped (`None`).
    pub fn for_propagation(&self) -> Option<PathAttribute> {
        match self.value {
            AttrValue::Unknown { .. } if !self.is_transitive() => None,
            AttrValue::Unknown { .. } => Some(PathAttribute {
                flags: self.flags | flags::PARTIAL,
                value: self.value.clone(),
            }),
            _ => Some(self.clone()),
        }
    }

    /// Appends the attribute (header and value).
    pub fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let ext = self.flags & flags::EXTENDED_LENGTH != 0;
        out.push(self.flags);
        out.push(self.type_code());
        out.push(0);
        if ext {
            out.push(0);
        }
        let value_start = out.len();
        self.value.encode_value(ctx, out);
        let len = out.len() - value_start;
        if ext {
            let len =
                u16::try_from(len).map_err(|_| EncodeError::FieldTooLong("path attribute"))?;
            out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        } else if let Ok(short) = u8::try_from(len) {
            out[start + 2] = short;
        } else {
            let len =
                u16::try_from(len).map_err(|_| EncodeError::FieldTooLong("path attribute"))?;
            // Too long for a one-octet length: switch to the extended form.
            out[start] |= flags::EXTENDED_LENGTH;
            out[start + 2] = (len >> 8) as u8;
            out.insert(start + 3, len as u8);
        }
        Ok(())
    }
}

/// The value of a path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH, with 2- or 4-octet ASNs as the session negotiated.
    AsPath(AsPath),
    /// NEXT_HOP (IPv4 unicast NLRI field).
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR (ASN 2 or 4 octets as negotiated).
    Aggregator(Aggregator),
    /// COMMUNITIES.
    Communities(Vec<Community>),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST.
    ClusterList(Vec<Ipv4Addr>),
    /// MP_REACH_NLRI.
    MpReach(MpReach),
    /// MP_UNREACH_NLRI.
    MpUnreach(MpUnreach),
    /// EXTENDED COMMUNITIES.
    ExtendedCommunities(Vec<ExtendedCommunity>),
    /// AS4_PATH (always 4-octet ASNs).
    As4Path(AsPath),
    /// AS4_AGGREGATOR (always a 4-octet ASN).
    As4Aggregator(Aggregator),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<LargeCommunity>),
    /// MP_REACH_NLRI in the abbreviated form of MRT TABLE_DUMP_V2 RIB entries
    /// (RFC 6396 §4.3.4): the next hop only, the family is the record's.
    MrtNextHop(NextHop),
    /// An attribute this codec does not interpret, kept as received.
    Unknown {
        /// Attribute type code.
        type_code: u8,
        /// The value octets.
        data: Vec<u8>,
    },
}

impl AttrValue {
    /// The attribute type code.
    pub fn type_code(&self) -> u8 {
        match self {
            AttrValue::Origin(_) => tc::ORIGIN,
            AttrValue::AsPath(_) => tc::AS_PATH,
            AttrValue::NextHop(_) => tc::NEXT_HOP,
            AttrValue::Med(_) => tc::MED,
            AttrValue::LocalPref(_) => tc::LOCAL_PREF,
            AttrValue::AtomicAggregate => tc::ATOMIC_AGGREGATE,
            AttrValue::Aggregator(_) => tc::AGGREGATOR,
            AttrValue::Communities(_) => tc::COMMUNITIES,
            AttrValue::OriginatorId(_) => tc::ORIGINATOR_ID,
            AttrValue::ClusterList(_) => tc::CLUSTER_LIST,
            AttrValue::MpReach(_) | AttrValue::MrtNextHop(_) => tc::MP_REACH_NLRI,
            AttrValue::MpUnreach(_) => tc::MP_UNREACH_NLRI,
            AttrValue::ExtendedCommunities(_) => tc::EXTENDED_COMMUNITIES,
            AttrValue::As4Path(_) => tc::AS4_PATH,
            AttrValue::As4Aggregator(_) => tc::AS4_AGGREGATOR,
            AttrValue::LargeCommunities(_) => tc::LARGE_COMMUNITIES,
            AttrValue::Unknown { type_code, .. } => *type_code,
        }
    }

    fn encode_value(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        match self {
            AttrValue::Origin(o) => out.push(*o as u8),
            AttrValue::AsPath(p) => p.encode(ctx.four_octet_as, out),
            AttrValue::As4Path(p) => p.encode(true, out),
            AttrValue::NextHop(a) | AttrValue::OriginatorId(a) => {
                out.extend_from_slice(&a.octets())
            }
            AttrValue::Med(v) | AttrValue::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
            AttrValue::AtomicAggregate => {}
            AttrValue::Aggregator(a) => a.encode(ctx.four_octet_as, out),
            AttrValue::As4Aggregator(a) => a.encode(true, out),
            AttrValue::Communities(cs) => {
                for c in cs {
                    out.extend_from_slice(&c.0.to_be_bytes());
                }
            }
            AttrValue::ClusterList(ids) => {
                for id in ids {
                    out.extend_from_slice(&id.octets());
                }
            }
            AttrValue::MpReach(mp) => mp.encode(ctx, out),
            AttrValue::MpUnreach(mp) => mp.encode(ctx, out),
            AttrValue::ExtendedCommunities(cs) => {
                for c in cs {
                    out.extend_from_slice(&c.0);
                }
            }
            AttrValue::LargeCommunities(cs) => {
                for c in cs {
                    out.extend_from_slice(&c.global_admin.to_be_bytes());
                    out.extend_from_slice(&c.local_data1.to_be_bytes());
                    out.extend_from_slice(&c.local_data2.to_be_bytes());
                }
            }
            AttrValue::MrtNextHop(nh) => {
                let bytes = nh.to_bytes();
                // A next hop longer than 255 octets cannot be decoded either.
                out.push(bytes.len() as u8);
                out.extend_from_slice(&bytes);
            }
            AttrValue::Unknown { data, .. } => out.extend_from_slice(data),
        }
    }
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Origin {
    /// Learned by an interior protocol.
    Igp = 0,
    /// Learned by EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Igp => "IGP",
            Origin::Egp => "EGP",
            Origin::Incomplete => "INCOMPLETE",
        })
    }
}

/// AS_PATH segment types (RFC 4271, RFC 5065).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegmentType {
    /// Unordered set of ASes a route passed through (aggregation).
    Set = 1,
    /// Ordered sequence of ASes, nearest first.
    Sequence = 2,
    /// Confederation member ASes, ordered.
    ConfedSequence = 3,
    /// Confederation member ASes, unordered.
    ConfedSet = 4,
}

impl SegmentType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 => SegmentType::ConfedSequence,
            4 => SegmentType::ConfedSet,
            _ => return None,
        })
    }

    /// The RFC name, for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SegmentType::Set => "AS_SET",
            SegmentType::Sequence => "AS_SEQUENCE",
            SegmentType::ConfedSequence => "AS_CONFED_SEQUENCE",
            SegmentType::ConfedSet => "AS_CONFED_SET",
        }
    }

    fn is_confed(self) -> bool {
        matches!(self, SegmentType::ConfedSequence | SegmentType::ConfedSet)
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// The segment type.
    pub kind: SegmentType,
    /// The ASNs, as 4-octet values whatever the encoding.
    pub asns: Vec<u32>,
}

/// An AS_PATH or AS4_PATH.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// The segments in wire order.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path made of one AS_SEQUENCE.
    pub fn sequence(asns: impl Into<Vec<u32>>) -> Self {
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns: asns.into(),
            }],
        }
    }

    /// The path length used by the decision process (RFC 4271 §9.1.2.2 a):
    /// an AS_SET counts as one, confederation segments do not count (RFC 5065).
    pub fn path_length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere in the path (loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    fn decode(buf: &[u8], four_octet: bool) -> Result<AsPath, &'static str> {
        let width = if four_octet { 4 } else { 2 };
        let mut r = Reader::new(buf);
        let mut segments = Vec::with_capacity(1);
        while !r.is_empty() {
            let kind = r.u8().map_err(|_| "segment header truncated")?;
            let kind = SegmentType::from_u8(kind).ok_or("unknown segment type")?;
            let count = r.u8().map_err(|_| "segment header truncated")?;
            if count == 0 {
                return Err("empty segment");
            }
            let bytes = r
                .take(usize::from(count) * width)
                .map_err(|_| "segment overruns the attribute")?;
            let asns = if four_octet {
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                bytes
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                    .collect()
            };
            segments.push(AsSegment { kind, asns });
        }
        Ok(AsPath { segments })
    }

    /// Appends the wire form. Towards a 2-octet session, ASNs that do not fit
    /// are written as AS_TRANS (the caller adds AS4_PATH, RFC 6793 §4.2.2);
    /// segments longer than 255 ASNs are split.
    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for seg in &self.segments {
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind as u8);
                out.push(chunk.len() as u8);
                for &asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let short = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
                        out.extend_from_slice(&short.to_be_bytes());
                    }
                }
            }
        }
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let (open, close) = match seg.kind {
                SegmentType::Sequence => ("", ""),
                SegmentType::Set => ("{", "}"),
                SegmentType::ConfedSequence => ("(", ")"),
                SegmentType::ConfedSet => ("[", "]"),
            };
            f.write_str(open)?;
            for (i, asn) in seg.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{asn}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// AGGREGATOR / AS4_AGGREGATOR value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// The AS that aggregated.
    pub asn: u32,
    /// The BGP speaker that aggregated.
    pub address: Ipv4Addr,
}

impl Aggregator {
    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        if four_octet {
            out.extend_from_slice(&self.asn.to_be_bytes());
        } else {
            let short = u16::try_from(self.asn).unwrap_or(AS_TRANS as u16);
            out.extend_from_slice(&short.to_be_bytes());
        }
        out.extend_from_slice(&self.address.octets());
    }
}

/// A standard community (RFC 1997).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT: do not advertise outside the AS (or confederation).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE: do not advertise to any peer.
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED: do not advertise to external peers, not even confederation members.
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// LLGR_STALE (RFC 9494).
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// NO_LLGR (RFC 9494).
    pub const NO_LLGR: Community = Community(0xFFFF_0007);

    /// Builds `asn:value`.
    pub const fn new(asn: u16, value: u16) -> Self {
        Community(((asn as u32) << 16) | value as u32)
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

/// An extended community (RFC 4360): eight octets, type first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtendedCommunity(pub [u8; 8]);

impl ExtendedCommunity {
    /// The type octet (high) and sub-type octet (low).
    pub fn type_subtype(&self) -> (u8, u8) {
        (self.0[0], self.0[1])
    }

    /// Two-octet-AS route target (`rt ASN:N`, type 0x00 sub-type 0x02).
    pub fn route_target(asn: u16, value: u32) -> Self {
        let mut b = [0u8; 8];
        b[1] = 0x02;
        b[2..4].copy_from_slice(&asn.to_be_bytes());
        b[4..8].copy_from_slice(&value.to_be_bytes());
        ExtendedCommunity(b)
    }
}

impl fmt::Display for ExtendedCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let (ty, sub) = (b[0] & 0x3F, b[1]);
        let kind = match sub {
            0x02 => Some("rt"),
            0x03 => Some("soo"),
            _ => None,
        };
        match (ty, kind) {
            (0x00, Some(k)) => write!(
                f,
                "{k} {}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            (0x01, Some(k)) => write!(
                f,
                "{k} {}:{}",
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            (0x02, Some(k)) => write!(
                f,
                "{k} {}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            _ => {
                f.write_str("0x")?;
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A large community (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an ASN).
    pub global_admin: u32,
    /// First local data part.
    pub local_data1: u32,
    /// Second local data part.
    pub local_data2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.global_admin, self.local_data1, self.local_data2
        )
    }
}

/// A next hop carried in MP_REACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// IPv4 next hop (4 octets).
    Ipv4(Ipv4Addr),
    /// IPv6 next hop: global, and the link-local one when 32 octets were sent
    /// (RFC 2545 §3). Also used for IPv4 NLRI (RFC 8950).
    Ipv6 {
        /// Global (or IPv4-mapped) address.
        global: Ipv6Addr,
        /// Link-local address, if present.
        link_local: Option<Ipv6Addr>,
    },
    /// A next hop of a family this codec keeps opaque, or one whose length
    /// does not fit its family (reported as treat-as-withdraw).
    Opaque(Vec<u8>),
}

impl NextHop {
    fn decode(af: AfiSafi, bytes: &[u8]) -> Option<NextHop> {
        let known = af == AfiSafi::IPV4_UNICAST || af == AfiSafi::IPV6_UNICAST;
        let mut r = Reader::new(bytes);
        match (known, bytes.len()) {
            (true, 4) if af == AfiSafi::IPV4_UNICAST => r.ipv4().ok().map(NextHop::Ipv4),
            (true, 16) => Some(NextHop::Ipv6 {
                global: r.ipv6().ok()?,
                link_local: None,
            }),
            (true, 32) => Some(NextHop::Ipv6 {
                global: r.ipv6().ok()?,
                link_local: Some(r.ipv6().ok()?),
            }),
            (true, _) => None,
            (false, _) => Some(NextHop::Opaque(bytes.to_vec())),
        }
    }

    /// The wire octets.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            NextHop::Ipv4(a) => a.octets().to_vec(),
            NextHop::Ipv6 { global, link_local } => {
                let mut v = global.octets().to_vec();
                if let Some(ll) = link_local {
                    v.extend_from_slice(&ll.octets());
                }
                v
            }
            NextHop::Opaque(b) => b.clone(),
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Ipv4(a) => write!(f, "{a}"),
            NextHop::Ipv6 {
                global,
                link_local: None,
            } => write!(f, "{global}"),
            NextHop::Ipv6 {
                global,
                link_local: Some(ll),
            } => write!(f, "{global} ({ll})"),
            NextHop::Opaque(b) => {
                f.write_str("0x")?;
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// NLRI inside an MP attribute: parsed for IPv4/IPv6 unicast, opaque otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpNlri {
    /// IPv4 or IPv6 unicast prefixes.
    Prefixes(Vec<Nlri>),
    /// Octets of a family this codec does not interpret (VPN, EVPN, flowspec...).
    Opaque(Vec<u8>),
}

impl MpNlri {
    /// The parsed prefixes, or an empty slice for opaque families.
    pub fn prefixes(&self) -> &[Nlri] {
        match self {
            MpNlri::Prefixes(p) => p,
            MpNlri::Opaque(_) => &[],
        }
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        match self {
            MpNlri::Prefixes(p) => p.is_empty(),
            MpNlri::Opaque(b) => b.is_empty(),
        }
    }

    fn decode(af: AfiSafi, buf: &[u8], ctx: &WireContext) -> Result<MpNlri, nlri::NlriFault> {
        let mut out = Vec::new();
        match af {
            AfiSafi::IPV4_UNICAST => nlri::decode_ipv4(buf, ctx.add_path_ipv4, &mut out)?,
            AfiSafi::IPV6_UNICAST => nlri::decode_ipv6(buf, ctx.add_path_ipv6, &mut out)?,
            _ => return Ok(MpNlri::Opaque(buf.to_vec())),
        }
        Ok(MpNlri::Prefixes(out))
    }

    fn encode(&self, af: AfiSafi, ctx: &WireContext, out: &mut Vec<u8>) {
        match self {
            MpNlri::Prefixes(p) => nlri::encode_all(p, ctx.add_path(af), out),
            MpNlri::Opaque(b) => out.extend_from_slice(b),
        }
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The family of the next hop and NLRI.
    pub afi_safi: AfiSafi,
    /// The next hop.
    pub next_hop: NextHop,
    /// The Reserved octet (once the SNPA count). Sent as 0 and ignored on
    /// receipt (RFC 4760 §3); kept only so that re-encoding is exact.
    pub reserved: u8,
    /// The reachable NLRI.
    pub nlri: MpNlri,
}

impl MpReach {
    fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.afi_safi.afi.to_be_bytes());
        out.push(self.afi_safi.safi);
        let nh = self.next_hop.to_bytes();
        out.push(nh.len() as u8);
        out.extend_from_slice(&nh);
        out.push(self.reserved);
        self.nlri.encode(self.afi_safi, ctx, out);
    }
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The family of the withdrawn NLRI.
    pub afi_safi: AfiSafi,
    /// The withdrawn NLRI; empty in an End-of-RIB marker.
    pub withdrawn: MpNlri,
}

impl MpUnreach {
    fn encode(&self, ctx: &WireContext, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.afi_safi.afi.to_be_bytes());
        out.push(self.afi_safi.safi);
        self.withdrawn.encode(self.afi_safi, ctx, out);
    }
}

/// The flags an attribute of a known type must carry in its Optional and
/// Transitive bits, or `None` for types we do not know.
fn expected_flags(code: u8) -> Option<u8> {
    const WELL_KNOWN: u8 = flags::TRANSITIVE;
    const OPT_TRANS: u8 = flags::OPTIONAL | flags::TRANSITIVE;
    const OPT_NON_TRANS: u8 = flags::OPTIONAL;
    Some(match code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            WELL_KNOWN
        }
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::EXTENDED_COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITIES => OPT_TRANS,
        tc::MED
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => OPT_NON_TRANS,
        _ => return None,
    })
}

/// Where an attribute list came from, which changes how MP_REACH_NLRI is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrSource {
    /// An UPDATE message.
    Update,
    /// An MRT TABLE_DUMP_V2 RIB entry of the given family (RFC 6396 §4.3.4):
    /// MP_REACH_NLRI may hold only the next hop.
    MrtRib(AfiSafi),
}

/// A decoded attribute list and the problems that did not stop decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// The well-formed attributes, in wire order.
    pub attributes: Vec<PathAttribute>,
    /// Treat-as-withdraw and attribute-discard findings (RFC 7606).
    pub problems: Vec<WireError>,
}

/// Decodes a path attribute list. Errors that require a session reset (or
/// disabling a family) are returned as `Err`; weaker ones are collected in
/// [`Attributes::problems`] and decoding continues.
pub fn decode_attributes(
    buf: &[u8],
    ctx: &WireContext,
    source: AttrSource,
) -> Result<Attributes, WireError> {
    let mut out = Attributes {
        attributes: Vec::with_capacity(8),
        problems: Vec::new(),
    };
    let mut seen = [0u64; 4];
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let whole = r.rest();
        let Ok([flag_bits, code]) = r.array::<2>() else {
            out.problems.push(list_error("attribute header truncated"));
            break;
        };
        let ext = flag_bits & flags::EXTENDED_LENGTH != 0;
        let len = if ext {
            r.u16().map(usize::from)
        } else {
            r.u8().map(usize::from)
        };
        let Ok(len) = len else {
            out.problems.push(list_error("attribute length truncated"));
            break;
        };
        let Ok(value) = r.take(len) else {
            // RFC 7606 §4: the attribute overruns the list; treat as withdraw and
            // rely on the total length to find the NLRI.
            out.problems
                .push(list_error("attribute overruns the attribute list"));
            break;
        };
        let header_len = if ext { 4 } else { 3 };
        let raw = &whole[..header_len + len];

        let slot = &mut seen[usize::from(code >> 6)];
        let bit = 1u64 << (code & 63);
        if *slot & bit != 0 {
            if code == tc::MP_REACH_NLRI || code == tc::MP_UNREACH_NLRI {
                return Err(WireError::update(
                    ErrorKind::DuplicateMpAttribute(code),
                    ErrorAction::SessionReset,
                    subcode::update::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                ));
            }
            out.problems.push(WireError::update(
                ErrorKind::DuplicateAttribute(code),
                ErrorAction::AttributeDiscard,
                subcode::update::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
            ));
            continue;
        }
        *slot |= bit;

        if let Some(expected) = expected_flags(code)
            && flag_bits & (flags::OPTIONAL | flags::TRANSITIVE) != expected
        {
            // RFC 7606 §3 (c). The value is still decoded so that the NLRI it may
            // carry (MP_REACH_NLRI) can be withdrawn.
            out.problems.push(WireError::update(
                ErrorKind::AttributeFlags {
                    type_code: code,
                    flags: flag_bits,
                },
                ErrorAction::TreatAsWithdraw,
                subcode::update::ATTRIBUTE_FLAGS,
                raw.to_vec(),
            ));
        }

        match decode_value(code, flag_bits, value, raw, ctx, source) {
            Ok((Some(v), semantic)) => {
                out.attributes.push(PathAttribute {
                    flags: flag_bits,
                    value: v,
                });
                if let Some(e) = semantic {
                    out.problems.push(e);
                }
            }
            Ok((None, _)) => {}
            Err(e)
                if matches!(
                    e.action,
                    ErrorAction::TreatAsWithdraw | ErrorAction::AttributeDiscard
                ) =>
            {
                out.problems.push(e)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn list_error(reason: &'static str) -> WireError {
    WireError::update(
        ErrorKind::MalformedAttributeList(reason),
        ErrorAction::TreatAsWithdraw,
        subcode::update::MALFORMED_ATTRIBUTE_LIST,
        Vec::new(),
    )
}

type ValueResult = Result<(Option<AttrValue>, Option<WireError>), WireError>;

fn length_error(code: u8, len: usize, action: ErrorAction, raw: &[u8]) -> WireError {
    WireError::update(
        ErrorKind::AttributeLength {
            type_code: code,
            length: len,
        },
        action,
        subcode::update::ATTRIBUTE_LENGTH,
        raw.to_vec(),
    )
}

fn ok(v: AttrValue) -> ValueResult {
    Ok((Some(v), None))
}

fn fixed<const N: usize>(
    code: u8,
    value: &[u8],
    raw: &[u8],
    action: ErrorAction,
) -> Result<[u8; N], WireError> {
    <[u8; N]>::try_from(value).map_err(|_| length_error(code, value.len(), action, raw))
}

/// A list of `N`-octet items whose length must be a non-zero multiple of `N`.
fn items<'a, const N: usize>(
    code: u8,
    value: &'a [u8],
    raw: &[u8],
) -> Result<std::slice::ChunksExact<'a, u8>, WireError> {
    if value.is_empty() || !value.len().is_multiple_of(N) {
        return Err(length_error(
            code,
            value.len(),
            ErrorAction::TreatAsWithdraw,
            raw,
        ));
    }
    Ok(value.chunks_exact(N))
}

fn be32(c: &[u8]) -> u32 {
    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
}

fn decode_value(
    code: u8,
    flag_bits: u8,
    value: &[u8],
    raw: &[u8],
    ctx: &WireContext,
    source: AttrSource,
) -> ValueResult {
    use ErrorAction::{AttributeDiscard, TreatAsWithdraw};
    match code {
        tc::ORIGIN => {
            let [v] = fixed::<1>(code, value, raw, TreatAsWithdraw)?;
            let origin = match v {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => {
                    return Err(WireError::update(
                        ErrorKind::InvalidOrigin(v),
                        TreatAsWithdraw,
                        subcode::update::INVALID_ORIGIN,
                        raw.to_vec(),
                    ));
                }
            };
            ok(AttrValue::Origin(origin))
        }
        tc::AS_PATH => {
            // MRT RIB entries always use 4-octet ASNs (RFC 6396 §4.3.4).
            let four = ctx.four_octet_as || matches!(source, AttrSource::MrtRib(_));
            match AsPath::decode(value, four) {
                Ok(p) => ok(AttrValue::AsPath(p)),
                Err(reason) => Err(WireError::update(
                    ErrorKind::MalformedAsPath {
                        attr: "AS_PATH",
                        reason,
                    },
                    TreatAsWithdraw,
                    subcode::update::MALFORMED_AS_PATH,
                    Vec::new(),
                )),
            }
        }
        tc::NEXT_HOP => {
            let addr = Ipv4Addr::from(fixed::<4>(code, value, raw, TreatAsWithdraw)?);
            // RFC 7606 §7.3 / RFC 4271 §6.3: a next hop that cannot be a host
            // address is semantically wrong; keep the attribute (its syntax is fine)
            // but withdraw the routes.
            let semantic = (addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
                .then(|| {
                    WireError::update(
                        ErrorKind::MalformedOptional {
                            type_code: code,
                            reason: "next hop is not a unicast address",
                        },
                        TreatAsWithdraw,
                        subcode::update::INVALID_NEXT_HOP,
                        raw.to_vec(),
                    )
                });
            Ok((Some(AttrValue::NextHop(addr)), semantic))
        }
        tc::MED => ok(AttrValue::Med(u32::from_be_bytes(fixed(
            code,
            value,
            raw,
            TreatAsWithdraw,
        )?))),
        tc::LOCAL_PREF => ok(AttrValue::LocalPref(u32::from_be_bytes(fixed(
            code,
            value,
            raw,
            TreatAsWithdraw,
        )?))),
        tc::ATOMIC_AGGREGATE => {
            fixed::<0>(code, value, raw, AttributeDiscard)?;
            ok(AttrValue::AtomicAggregate)
        }
        tc::AGGREGATOR => {
            let four = ctx.four_octet_as || matches!(source, AttrSource::MrtRib(_));
            let agg = if four {
                let b = fixed::<8>(code, value, raw, AttributeDiscard)?;
                Aggregator {
                    asn: be32(&b[..4]),
                    address: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
                }
            } else {
                let b = fixed::<6>(code, value, raw, AttributeDiscard)?;
                Aggregator {
                    asn: u32::from(u16::from_be_bytes([b[0], b[1]])),
                    address: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                }
            };
            ok(AttrValue::Aggregator(agg))
        }
        tc::COMMUNITIES => ok(AttrValue::Communities(
            items::<4>(code, value, raw)?
                .map(|c| Community(be32(c)))
                .collect(),
        )),
        tc::ORIGINATOR_ID => ok(AttrValue::OriginatorId(Ipv4Addr::from(fixed::<4>(
            code,
            value,
            raw,
            TreatAsWithdraw,
        )?))),
        tc::CLUSTER_LIST => ok(AttrValue::ClusterList(
            items::<4>(code, value, raw)?
                .map(|c| Ipv4Addr::from(be32(c)))
                .collect(),
        )),
        tc::EXTENDED_COMMUNITIES => ok(AttrValue::ExtendedCommunities(
            items::<8>(code, value, raw)?
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    ExtendedCommunity(b)
                })
                .collect(),
        )),
        tc::LARGE_COMMUNITIES => ok(AttrValue::LargeCommunities(
            items::<12>(code, value, raw)?
                .map(|c| LargeCommunity {
                    global_admin: be32(&c[0..4]),
                    local_data1: be32(&c[4..8]),
                    local_data2: be32(&c[8..12]),
                })
                .collect(),
        )),
        tc::AS4_PATH => match AsPath::decode(value, true) {
            Ok(p) => ok(AttrValue::As4Path(p)),
            // RFC 6793 §6: a malformed AS4_PATH is discarded, the route kept.
            Err(reason) => Err(WireError::update(
                ErrorKind::MalformedAsPath {
                    attr: "AS4_PATH",
                    reason,
                },
                AttributeDiscard,
                subcode::update::OPTIONAL_ATTRIBUTE,
                raw.to_vec(),
            )),
        },
        tc::AS4_AGGREGATOR => {
            let b = fixed::<8>(code, value, raw, AttributeDiscard)?;
            ok(AttrValue::As4Aggregator(Aggregator {
                asn: be32(&b[..4]),
                address: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
            }))
        }
        tc::MP_REACH_NLRI => decode_mp_reach(value, raw, ctx, source),
        tc::MP_UNREACH_NLRI => decode_mp_unreach(value, raw, ctx),
        _ if flag_bits & flags::OPTIONAL == 0 => Err(WireError::update(
            ErrorKind::UnrecognizedWellKnown(code),
            ErrorAction::SessionReset,
            subcode::update::UNRECOGNIZED_WELL_KNOWN,
            raw.to_vec(),
        )),
        _ => ok(AttrValue::Unknown {
            type_code: code,
            data: value.to_vec(),
        }),
    }
}

fn mp_error(
    attr: &'static str,
    af: Option<AfiSafi>,
    reason: &'static str,
    raw: &[u8],
) -> WireError {
    // RFC 7606 §5.3 / RFC 4760 §7: a family we can name is disabled; otherwise
    // the session is reset.
    let (action, afi_safi) = match af {
        Some(af) => (ErrorAction::AfiSafiDisable(af), af),
        None => (ErrorAction::SessionReset, AfiSafi::new(0, 0)),
    };
    WireError::update(
        ErrorKind::MalformedMpAttribute {
            attr,
            afi_safi,
            reason,
        },
        action,
        subcode::update::OPTIONAL_ATTRIBUTE,
        raw.to_vec(),
    )
}

fn decode_mp_reach(value: &[u8], raw: &[u8], ctx: &WireContext, source: AttrSource) -> ValueResult {
    const NAME: &str = "MP_REACH_NLRI";
    if let AttrSource::MrtRib(af) = source
        && value
            .first()
            .is_some_and(|&n| usize::from(n) + 1 == value.len())
    {
        let next_hop = NextHop::decode(af, &value[1..])
            .unwrap_or_else(|| NextHop::Opaque(value[1..].to_vec()));
        return ok(AttrValue::MrtNextHop(next_hop));
    }
    let mut r = Reader::new(value);
    let (Ok(afi), Ok(safi)) = (r.u16(), r.u8()) else {
        return Err(mp_error(NAME, None, "family truncated", raw));
    };
    let af = AfiSafi::new(afi, safi);
    let nh_len = r
        .u8()
        .map_err(|_| mp_error(NAME, Some(af), "next hop length missing", raw))?;
    let nh_bytes = r
        .take(usize::from(nh_len))
        .map_err(|_| mp_error(NAME, Some(af), "next hop overruns the attribute", raw))?;
    let reserved = r
        .u8()
        .map_err(|_| mp_error(NAME, Some(af), "reserved octet missing", raw))?;
    let nlri = MpNlri::decode(af, r.rest(), ctx)
        .map_err(|fault| mp_error(NAME, Some(af), fault.reason(), raw))?;
    match NextHop::decode(af, nh_bytes) {
        Some(next_hop) => ok(AttrValue::MpReach(MpReach {
            afi_safi: af,
            next_hop,
            reserved,
            nlri,
        })),
        // RFC 7606 §7.11: an inconsistent next hop length is treat-as-withdraw;
        // the NLRI are still known, so they can be withdrawn.
        None => Ok((
            Some(AttrValue::MpReach(MpReach {
                afi_safi: af,
                next_hop: NextHop::Opaque(nh_bytes.to_vec()),
                reserved,
                nlri,
            })),
            Some(WireError::update(
                ErrorKind::InvalidNextHopLength {
                    afi_safi: af,
                    length: nh_bytes.len(),
                },
                ErrorAction::TreatAsWithdraw,
                subcode::update::OPTIONAL_ATTRIBUTE,
                raw.to_vec(),
            )),
        )),
    }
}

fn decode_mp_unreach(value: &[u8], raw: &[u8], ctx: &WireContext) -> ValueResult {
    const NAME: &str = "MP_UNREACH_NLRI";
    let mut r = Reader::new(value);
    let (Ok(afi), Ok(safi)) = (r.u16(), r.u8()) else {
        return Err(mp_error(NAME, None, "family truncated", raw));
    };
    let af = AfiSafi::new(afi, safi);
    let withdrawn = MpNlri::decode(af, r.rest(), ctx)
        .map_err(|fault| mp_error(NAME, Some(af), fault.reason(), raw))?;
    ok(AttrValue::MpUnreach(MpUnreach {
        afi_safi: af,
        withdrawn,
    }))
}

/// Encodes an attribute list.
pub fn encode_attributes(
    attrs: &[PathAttribute],
    ctx: &WireContext,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for a in attrs {
        a.encode(ctx, out)?;
    }
    Ok(())
}

/// The AS path and aggregator a route really has, merging AS4_PATH and
/// AS4_AGGREGATOR into their 2-octet counterparts (RFC 6793 §4.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EffectivePath {
    /// The reconstructed AS path (empty if the UPDATE had none).
    pub as_path: AsPath,
    /// The reconstructed aggregator, if any.
    pub aggregator: Option<Aggregator>,
}

/// Reconstructs the 4-octet AS path of an UPDATE (RFC 6793 §4.2.3).
///
/// On a 4-octet session AS4_PATH and AS4_AGGREGATOR are ignored (a NEW speaker
/// must not send them there). On a 2-octet session, an AGGREGATOR that is not
/// AS_TRANS means AS4_* were added by someone who did not aggregate, so both are
/// ignored; otherwise AS4_PATH replaces the tail of AS_PATH.
pub fn effective_path(attrs: &[PathAttribute], four_octet_as: bool) -> EffectivePath {
    let mut as_path = None;
    let mut as4_path = None;
    let mut aggregator = None;
    let mut as4_aggregator = None;
    for a in attrs {
        match &a.value {
            AttrValue::AsPath(p) => as_path = Some(p),
            AttrValue::As4Path(p) => as4_path = Some(p),
            AttrValue::Aggregator(g) => aggregator = Some(*g),
            AttrValue::As4Aggregator(g) => as4_aggregator = Some(*g),
            _ => {}
        }
    }
    let as_path = as_path.cloned().unwrap_or_default();
    if four_octet_as {
        return EffectivePath {
            as_path,
            aggregator,
        };
    }
    if let Some(agg) = aggregator
        && agg.asn != AS_TRANS
    {
        return EffectivePath {
            as_path,
            aggregator: Some(agg),
        };
    }
    let aggregator = as4_aggregator.or(aggregator);
    let Some(as4) = as4_path else {
        return EffectivePath {
            as_path,
            aggregator,
        };
    };
    // Confederation segments must not appear in AS4_PATH; they are dropped (RFC 6793 §6).
    let as4_segments: Vec<AsSegment> = as4
        .segments
        .iter()
        .filter(|s| !s.kind.is_confed())
        .cloned()
        .collect();
    let as4 = AsPath {
        segments: as4_segments,
    };
    let (n, n4) = (as_path.path_length(), as4.path_length());
    if n < n4 {
        return EffectivePath {
            as_path,
            aggregator,
        };
    }
    // Take (n - n4) ASNs from the front of AS_PATH, then all of AS4_PATH.
    let mut need = n - n4;
    let mut segments = Vec::new();
    for seg in &as_path.segments {
        if need == 0 && !seg.kind.is_confed() {
            break;
        }
        match seg.kind {
            SegmentType::ConfedSequence | SegmentType::ConfedSet => segments.push(seg.clone()),
            SegmentType::Set => {
                segments.push(seg.clone());
                need -= 1;
            }
            SegmentType::Sequence => {
                let take = need.min(seg.asns.len());
                segments.push(AsSegment {
                    kind: SegmentType::Sequence,
                    asns: seg.asns[..take].to_vec(),
                });
                need -= take;
            }
        }
    }
    segments.extend(as4.segments);
    // Join adjacent sequences split by the merge so the path reads as one.
    let mut merged: Vec<AsSegment> = Vec::with_capacity(segments.len());
    for seg in segments {
        match merged.last_mut() {
            Some(last)
                if last.kind == SegmentType::Sequence
                    && seg.kind == SegmentType::Sequence
                    && last.asns.len() + seg.asns.len() <= 255 =>
            {
                last.asns.extend(seg.asns)
            }
            _ => merged.push(seg),
        }
    }
    EffectivePath {
        as_path: AsPath { segments: merged },
        aggregator,
    }
}
