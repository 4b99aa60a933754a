//! Shared proptest strategies: well-formed messages of every kind, for a given
//! wire context, such that encoding then decoding must give them back unchanged.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use bgpd::wire::attr::{
    Aggregator, AsPath, AsSegment, AttrValue, Community, ExtendedCommunity, LargeCommunity, MpNlri,
    MpReach, MpUnreach, NextHop, Origin, PathAttribute, SegmentType, flags,
};
use bgpd::wire::capability::{
    AddPathFamily, Capability, ExtendedNextHopFamily, GrFamily, GracefulRestart, LlgrFamily,
};
use bgpd::wire::open::{Open, OptionalParameter};
use bgpd::wire::route_refresh::{RefreshSubtype, RouteRefresh};
use bgpd::wire::{AfiSafi, Message, Nlri, Notification, Update, WireContext};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::collection::vec;
use proptest::prelude::*;

/// Every combination of the context flags.
pub fn context() -> impl Strategy<Value = WireContext> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| {
        WireContext {
            four_octet_as: a,
            extended_message: b,
            add_path_ipv4: c,
            add_path_ipv6: d,
        }
    })
}

/// A unicast IPv4 host address (what a next hop may be).
pub fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d))
}

/// An IPv4 prefix with host bits cleared, outside multicast space (netgauze
/// refuses multicast prefixes as unicast NLRI).
pub fn v4_prefix() -> impl Strategy<Value = Ipv4Net> {
    (unicast_v4(), 0u8..=32).prop_map(|(a, len)| Ipv4Net::new(a, len).expect("len <= 32").trunc())
}

/// An IPv6 prefix with host bits cleared, outside multicast space.
pub fn v6_prefix() -> impl Strategy<Value = Ipv6Net> {
    (0u128..(0xff << 120), 0u8..=128).prop_map(|(a, len)| {
        Ipv6Net::new(Ipv6Addr::from(a), len)
            .expect("len <= 128")
            .trunc()
    })
}

/// NLRI with a path id exactly when the context says so.
pub fn v4_nlri(add_path: bool, max: usize) -> impl Strategy<Value = Vec<Nlri>> {
    vec((v4_prefix(), any::<u32>()), 0..max).prop_map(move |v| {
        v.into_iter()
            .map(|(p, id)| Nlri {
                path_id: add_path.then_some(id),
                prefix: IpNet::V4(p),
            })
            .collect()
    })
}

/// IPv6 NLRI with a path id exactly when the context says so.
pub fn v6_nlri(add_path: bool, max: usize) -> impl Strategy<Value = Vec<Nlri>> {
    vec((v6_prefix(), any::<u32>()), 0..max).prop_map(move |v| {
        v.into_iter()
            .map(|(p, id)| Nlri {
                path_id: add_path.then_some(id),
                prefix: IpNet::V6(p),
            })
            .collect()
    })
}

fn asn(four_octet: bool) -> BoxedStrategy<u32> {
    if four_octet {
        any::<u32>().boxed()
    } else {
        (0u32..=65535).boxed()
    }
}

/// An AS path whose ASNs fit the encoding.
pub fn as_path(four_octet: bool, confed: bool) -> impl Strategy<Value = AsPath> {
    let kinds = if confed {
        vec![
            SegmentType::Set,
            SegmentType::Sequence,
            SegmentType::ConfedSequence,
            SegmentType::ConfedSet,
        ]
    } else {
        vec![SegmentType::Set, SegmentType::Sequence]
    };
    vec(
        (prop::sample::select(kinds), vec(asn(four_octet), 1..12)),
        0..4,
    )
    .prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

/// Flags for an attribute of a known type: the prescribed Optional/Transitive
/// bits, and at random the Partial and Extended Length bits (both legal to
/// receive and kept on re-encoding).
fn flags_for(value: &AttrValue, extra: u8) -> u8 {
    let base = PathAttribute::new(value.clone()).flags;
    let partial = if base & flags::TRANSITIVE != 0 && base & flags::OPTIONAL != 0 {
        extra & flags::PARTIAL
    } else {
        0
    };
    base | partial | (extra & flags::EXTENDED_LENGTH)
}

/// Optional attributes of an UPDATE (everything but ORIGIN, AS_PATH, NEXT_HOP
/// and the MP attributes), at most one of each type.
pub fn optional_attributes(four_octet: bool) -> impl Strategy<Value = Vec<AttrValue>> {
    let agg =
        (asn(four_octet), unicast_v4()).prop_map(|(asn, address)| Aggregator { asn, address });
    (
        prop::option::of(any::<u32>().prop_map(AttrValue::Med)),
        prop::option::of(any::<u32>().prop_map(AttrValue::LocalPref)),
        prop::option::of(Just(AttrValue::AtomicAggregate)),
        prop::option::of(agg.prop_map(AttrValue::Aggregator)),
        prop::option::of(
            vec(any::<u32>().prop_map(Community), 1..8).prop_map(AttrValue::Communities),
        ),
        prop::option::of(unicast_v4().prop_map(AttrValue::OriginatorId)),
        prop::option::of(vec(unicast_v4(), 1..5).prop_map(AttrValue::ClusterList)),
        prop::option::of(
            vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 1..5)
                .prop_map(AttrValue::ExtendedCommunities),
        ),
        prop::option::of(
            vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(g, a, b)| LargeCommunity {
                    global_admin: g,
                    local_data1: a,
                    local_data2: b,
                }),
                1..5,
            )
            .prop_map(AttrValue::LargeCommunities),
        ),
        prop::option::of(
            (
                // Unknown optional type codes that no known attribute uses.
                prop::sample::select(vec![19u8, 20, 22, 26, 40, 128, 200, 255]),
                vec(any::<u8>(), 0..40),
            )
                .prop_map(|(type_code, data)| AttrValue::Unknown { type_code, data }),
        ),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j)| {
            [a, b, c, d, e, f, g, h, i, j]
                .into_iter()
                .flatten()
                .collect()
        })
}

/// A well-formed UPDATE for the given context: IPv4 in the classic fields,
/// IPv6 in MP_REACH / MP_UNREACH, the mandatory attributes whenever anything
/// is announced, attributes in a random order.
pub fn update(ctx: WireContext) -> impl Strategy<Value = Update> {
    let four = ctx.four_octet_as;
    (
        v4_nlri(ctx.add_path_ipv4, 40),
        v4_nlri(ctx.add_path_ipv4, 40),
        v6_nlri(ctx.add_path_ipv6, 20),
        v6_nlri(ctx.add_path_ipv6, 20),
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        as_path(four, true),
        unicast_v4(),
        (any::<u128>(), prop::option::of(any::<u128>())),
        optional_attributes(four),
        prop::option::of(as_path(true, false)),
        vec(any::<u8>(), 16),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            move |(
                withdrawn,
                nlri,
                v6_announce,
                v6_withdraw,
                origin,
                path,
                nh,
                (g, ll),
                opt,
                as4,
                extra,
                shuffle,
            )| {
                let mut values = opt;
                let announces = !nlri.is_empty() || !v6_announce.is_empty();
                if announces {
                    values.push(AttrValue::Origin(origin));
                    values.push(AttrValue::AsPath(path));
                }
                if !nlri.is_empty() {
                    values.push(AttrValue::NextHop(nh));
                }
                if !v6_announce.is_empty() {
                    values.push(AttrValue::MpReach(MpReach {
                        afi_safi: AfiSafi::IPV6_UNICAST,
                        next_hop: NextHop::Ipv6 {
                            global: Ipv6Addr::from(g),
                            link_local: ll.map(Ipv6Addr::from),
                        },
                        reserved: 0,
                        nlri: MpNlri::Prefixes(v6_announce),
                    }));
                }
                if !v6_withdraw.is_empty() {
                    values.push(AttrValue::MpUnreach(MpUnreach {
                        afi_safi: AfiSafi::IPV6_UNICAST,
                        withdrawn: MpNlri::Prefixes(v6_withdraw),
                    }));
                }
                if let (false, Some(p)) = (four, as4) {
                    values.push(AttrValue::As4Path(p));
                }
                // Rotate so attribute order varies; decoding must keep it.
                if !values.is_empty() {
                    let k = shuffle.index(values.len());
                    values.rotate_left(k);
                }
                let attributes = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| PathAttribute {
                        flags: flags_for(&v, extra[i % extra.len()]),
                        value: v,
                    })
                    .collect();
                Update {
                    withdrawn,
                    attributes,
                    nlri,
                }
            },
        )
}

fn family() -> impl Strategy<Value = AfiSafi> {
    prop_oneof![
        Just(AfiSafi::IPV4_UNICAST),
        Just(AfiSafi::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| AfiSafi::new(a, s)),
    ]
}

/// Capabilities of every known kind, plus unknown ones.
pub fn capability() -> impl Strategy<Value = Capability> {
    let known = [1u8, 2, 5, 6, 64, 65, 69, 70, 71, 73];
    prop_oneof![
        family().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (any::<u8>(), 0u16..4096, vec((family(), any::<u8>()), 0..4)).prop_map(|(f, t, fams)| {
            Capability::GracefulRestart(GracefulRestart {
                flags: f & 0xF0,
                restart_time: t,
                families: fams
                    .into_iter()
                    .map(|(afi_safi, flags)| GrFamily { afi_safi, flags })
                    .collect(),
            })
        }),
        vec((family(), any::<u8>(), 0u32..(1 << 24)), 0..4).prop_map(|v| {
            Capability::LongLivedGracefulRestart(
                v.into_iter()
                    .map(|(afi_safi, flags, stale_time)| LlgrFamily {
                        afi_safi,
                        flags,
                        stale_time,
                    })
                    .collect(),
            )
        }),
        vec((family(), any::<u8>()), 0..4).prop_map(|v| Capability::AddPath(
            v.into_iter()
                .map(|(afi_safi, send_receive)| AddPathFamily {
                    afi_safi,
                    send_receive
                })
                .collect()
        )),
        vec(any::<(u16, u16, u16)>(), 0..4).prop_map(|v| Capability::ExtendedNextHop(
            v.into_iter()
                .map(|(a, s, n)| ExtendedNextHopFamily {
                    nlri_afi: a,
                    nlri_safi: s,
                    next_hop_afi: n
                })
                .collect()
        )),
        (vec(any::<u8>(), 0..30), vec(any::<u8>(), 0..30))
            .prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (
            any::<u8>().prop_filter("unknown code", move |c| !known.contains(c)),
            vec(any::<u8>(), 0..20)
        )
            .prop_map(|(code, data)| Capability::Unknown { code, data }),
    ]
}

/// An OPEN with a few parameters, classic or extended encoding.
pub fn open() -> impl Strategy<Value = Open> {
    let param = prop_oneof![
        vec(capability(), 0..5).prop_map(OptionalParameter::Capabilities),
        (
            prop::sample::select(vec![1u8, 3, 9, 200]),
            vec(any::<u8>(), 0..10)
        )
            .prop_map(|(param_type, data)| OptionalParameter::Unknown { param_type, data }),
    ];
    (
        any::<u16>(),
        prop_oneof![Just(0u16), 3u16..=65535],
        unicast_v4(),
        vec(param, 0..4),
        any::<bool>(),
    )
        .prop_map(|(my_as, hold_time, bgp_id, params, extended_params)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id,
            params,
            extended_params,
        })
}

/// Any message for the context.
pub fn message(ctx: WireContext) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(ctx).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..64)).prop_map(|(code, subcode, data)| {
            Message::Notification(Notification {
                code,
                subcode,
                data,
            })
        }),
        Just(Message::Keepalive),
        (family(), vec(any::<u8>(), 0..16)).prop_map(|(afi_safi, orf)| Message::RouteRefresh(
            RouteRefresh {
                afi_safi,
                subtype: RefreshSubtype::Request,
                orf
            }
        )),
        (family(), prop::sample::select(vec![1u8, 2, 3, 77, 255])).prop_map(|(afi_safi, st)| {
            let subtype = match st {
                1 => RefreshSubtype::BeginOfRefresh,
                2 => RefreshSubtype::EndOfRefresh,
                v => RefreshSubtype::Reserved(v),
            };
            Message::RouteRefresh(RouteRefresh {
                afi_safi,
                subtype,
                orf: Vec::new(),
            })
        }),
    ]
}

/// The type codes of a list of attributes, for assertions.
pub fn codes(attrs: &[PathAttribute]) -> Vec<u8> {
    attrs.iter().map(|a| a.type_code()).collect()
}
