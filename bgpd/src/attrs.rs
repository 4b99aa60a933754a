//! The path-attribute set of a route, as the RIB and policy see it.
//!
//! Its own module so that policy (which rewrites attribute sets) and the RIB
//! (which stores and exports them) both depend on it without depending on
//! each other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::attr::{
    self, Aggregator, AsPath, AsSegment, AttrValue, Community, ExtendedCommunity, LargeCommunity,
    NextHop, Origin, PathAttribute, SegmentType,
};

/// The attributes of a route, in the form the decision process and export
/// use. Interned: compare by pointer first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Attrs {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// The 4-octet AS path (AS4_PATH already merged).
    pub as_path: AsPath,
    /// The next hop (NEXT_HOP or MP_REACH_NLRI global).
    pub next_hop: Option<IpAddr>,
    /// IPv6 link-local next hop, if sent.
    pub link_local: Option<Ipv6Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (only kept from internal peers).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (4-octet ASN).
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// EXTENDED COMMUNITIES.
    pub ext_communities: Vec<ExtendedCommunity>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional transitive attributes, Partial bit set, to pass on.
    pub other: Vec<PathAttribute>,
}

impl Attrs {
    /// Builds the route's attributes from an UPDATE's attribute list.
    pub(crate) fn from_update(attrs: &[PathAttribute], four_octet_as: bool) -> Attrs {
        let eff = attr::effective_path(attrs, four_octet_as);
        let mut a = Attrs {
            as_path: eff.as_path,
            aggregator: eff.aggregator,
            ..Attrs::default()
        };
        for p in attrs {
            match &p.value {
                AttrValue::Origin(o) => a.origin = Some(*o),
                AttrValue::NextHop(n) => a.next_hop = Some(IpAddr::V4(*n)),
                AttrValue::Med(m) => a.med = Some(*m),
                AttrValue::LocalPref(l) => a.local_pref = Some(*l),
                AttrValue::AtomicAggregate => a.atomic_aggregate = true,
                AttrValue::Communities(c) => a.communities = c.clone(),
                AttrValue::ExtendedCommunities(c) => a.ext_communities = c.clone(),
                AttrValue::LargeCommunities(c) => a.large_communities = c.clone(),
                AttrValue::OriginatorId(o) => a.originator_id = Some(*o),
                AttrValue::ClusterList(c) => a.cluster_list = c.clone(),
                AttrValue::MpReach(m) => match &m.next_hop {
                    NextHop::Ipv4(v4) => a.next_hop = Some(IpAddr::V4(*v4)),
                    NextHop::Ipv6 { global, link_local } => {
                        // An IPv4-mapped IPv6 next hop is an IPv4 next hop.
                        a.next_hop = Some(match global.to_ipv4_mapped() {
                            Some(v4) => IpAddr::V4(v4),
                            None => IpAddr::V6(*global),
                        });
                        a.link_local = *link_local;
                    }
                    NextHop::Opaque(_) => {}
                },
                AttrValue::Unknown { .. } => a.other.extend(p.for_propagation()),
                _ => {}
            }
        }
        a
    }

    /// Whether a community is attached.
    pub(crate) fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }

    /// The AS the route was learned from (first ASN of the path), for MED comparison.
    pub(crate) fn neighbor_as(&self) -> Option<u32> {
        self.as_path
            .segments
            .iter()
            .find(|s| matches!(s.kind, SegmentType::Sequence))
            .and_then(|s| s.asns.first().copied())
    }
}

/// Puts an ASN at the front of a path.
pub(crate) fn prepend(path: &mut AsPath, asn: u32) {
    match path.segments.first_mut() {
        Some(s) if s.kind == SegmentType::Sequence && s.asns.len() < 255 => s.asns.insert(0, asn),
        _ => path.segments.insert(
            0,
            AsSegment {
                kind: SegmentType::Sequence,
                asns: vec![asn],
            },
        ),
    }
}
