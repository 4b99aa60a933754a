//! Differential decoding: generated UPDATEs are encoded by petrel, then decoded
//! by petrel and by `netgauze-bgp-pkt`, and both readings must agree on every
//! prefix, path identifier and attribute value.

mod common;

use std::collections::HashMap;

use bgpd::wire::attr::{AttrValue, MpNlri, NextHop, SegmentType};
use bgpd::wire::{Message, Update, WireContext};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{
    Aggregator as NgAggregator, As4PathSegment, AsPath as NgAsPath, AsPathSegmentType,
    MpReach as NgMpReach, MpUnreach as NgMpUnreach, Origin as NgOrigin, PathAttributeValue as V,
};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use proptest::prelude::*;

/// A reading of an UPDATE both decoders can be reduced to.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    withdrawn: Vec<String>,
    nlri: Vec<String>,
    attributes: Vec<String>,
}

fn pfx(p: impl std::fmt::Display, id: Option<u32>) -> String {
    match id {
        Some(id) => format!("{p}#{id}"),
        None => p.to_string(),
    }
}

fn seg_name(set: bool) -> &'static str {
    if set { "set" } else { "seq" }
}

fn ours(u: &Update) -> Reading {
    let mut attributes = Vec::new();
    for a in &u.attributes {
        let s = match &a.value {
            AttrValue::Origin(o) => format!("origin {}", *o as u8),
            AttrValue::AsPath(p) | AttrValue::As4Path(p) => {
                let tag = if matches!(a.value, AttrValue::AsPath(_)) {
                    "as_path"
                } else {
                    "as4_path"
                };
                let segs: Vec<String> = p
                    .segments
                    .iter()
                    .map(|s| format!("{}{:?}", seg_name(s.kind == SegmentType::Set), s.asns))
                    .collect();
                format!("{tag} {}", segs.join(" "))
            }
            AttrValue::NextHop(n) => format!("next_hop {n}"),
            AttrValue::Med(v) => format!("med {v}"),
            AttrValue::LocalPref(v) => format!("local_pref {v}"),
            AttrValue::AtomicAggregate => "atomic_aggregate".into(),
            AttrValue::Aggregator(g) => format!("aggregator {} {}", g.asn, g.address),
            AttrValue::Communities(c) => format!(
                "communities {:?}",
                c.iter().map(|c| c.0).collect::<Vec<_>>()
            ),
            AttrValue::ExtendedCommunities(c) => format!("ext_communities {}", c.len()),
            AttrValue::LargeCommunities(c) => format!(
                "large {:?}",
                c.iter()
                    .map(|c| (c.global_admin, c.local_data1, c.local_data2))
                    .collect::<Vec<_>>()
            ),
            AttrValue::OriginatorId(a) => format!("originator {a}"),
            AttrValue::ClusterList(c) => format!("cluster_list {c:?}"),
            AttrValue::MpReach(m) => {
                let (g, ll) = match &m.next_hop {
                    NextHop::Ipv6 { global, link_local } => {
                        (global.to_string(), format!("{link_local:?}"))
                    }
                    other => (other.to_string(), String::new()),
                };
                let MpNlri::Prefixes(p) = &m.nlri else {
                    panic!("opaque")
                };
                let p: Vec<String> = p.iter().map(|n| pfx(n.prefix, n.path_id)).collect();
                format!("mp_reach {g} {ll} {p:?}")
            }
            AttrValue::MpUnreach(m) => {
                let MpNlri::Prefixes(p) = &m.withdrawn else {
                    panic!("opaque")
                };
                let p: Vec<String> = p.iter().map(|n| pfx(n.prefix, n.path_id)).collect();
                format!("mp_unreach {p:?}")
            }
            AttrValue::Unknown { type_code, data } => format!("unknown {type_code} {data:?}"),
            other => panic!("not generated here: {other:?}"),
        };
        attributes.push(s);
    }
    Reading {
        withdrawn: u
            .withdrawn
            .iter()
            .map(|n| pfx(n.prefix, n.path_id))
            .collect(),
        nlri: u.nlri.iter().map(|n| pfx(n.prefix, n.path_id)).collect(),
        attributes,
    }
}

fn as4_segments(segs: &[As4PathSegment]) -> String {
    let segs: Vec<String> = segs
        .iter()
        .map(|s| {
            format!(
                "{}{:?}",
                seg_name(s.segment_type() == AsPathSegmentType::AsSet),
                s.as_numbers()
            )
        })
        .collect();
    segs.join(" ")
}

fn theirs(bytes: &[u8], ctx: &WireContext) -> Result<Reading, String> {
    let add_path: HashMap<AddressType, bool> = HashMap::from([
        (AddressType::Ipv4Unicast, ctx.add_path_ipv4),
        (AddressType::Ipv6Unicast, ctx.add_path_ipv6),
    ]);
    let mut pctx = BgpParsingContext::new(
        ctx.four_octet_as,
        HashMap::new(),
        add_path,
        true,
        true,
        true,
        true,
    );
    let mut r = SliceReader::new(bytes);
    let msg = BgpMessage::parse(&mut r, &mut pctx).map_err(|e| format!("{e:?}"))?;
    let BgpMessage::Update(u) = msg else {
        return Err("not an UPDATE".into());
    };
    let mut attributes = Vec::new();
    for a in u.path_attributes() {
        let s = match a.value() {
            V::Origin(o) => format!(
                "origin {}",
                match o {
                    NgOrigin::IGP => 0,
                    NgOrigin::EGP => 1,
                    NgOrigin::Incomplete => 2,
                }
            ),
            V::AsPath(NgAsPath::As2PathSegments(segs)) => {
                let segs: Vec<String> = segs
                    .iter()
                    .map(|s| {
                        let asns: Vec<u32> = s.as_numbers().iter().map(|&a| u32::from(a)).collect();
                        format!(
                            "{}{asns:?}",
                            seg_name(s.segment_type() == AsPathSegmentType::AsSet)
                        )
                    })
                    .collect();
                format!("as_path {}", segs.join(" "))
            }
            V::AsPath(NgAsPath::As4PathSegments(segs)) => format!("as_path {}", as4_segments(segs)),
            V::As4Path(p) => format!("as4_path {}", as4_segments(p.segments())),
            V::NextHop(n) => format!("next_hop {}", n.next_hop()),
            V::MultiExitDiscriminator(m) => format!("med {}", m.metric()),
            V::LocalPreference(l) => format!("local_pref {}", l.metric()),
            V::AtomicAggregate(_) => "atomic_aggregate".into(),
            V::Aggregator(NgAggregator::As2Aggregator(g)) => {
                format!("aggregator {} {}", g.asn(), g.origin())
            }
            V::Aggregator(NgAggregator::As4Aggregator(g)) => {
                format!("aggregator {} {}", g.asn(), g.origin())
            }
            V::Communities(c) => format!(
                "communities {:?}",
                c.communities()
                    .iter()
                    .map(|c| c.value())
                    .collect::<Vec<_>>()
            ),
            V::ExtendedCommunities(c) => format!("ext_communities {}", c.communities().len()),
            V::LargeCommunities(c) => format!(
                "large {:?}",
                c.communities()
                    .iter()
                    .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                    .collect::<Vec<_>>()
            ),
            V::Originator(o) => format!("originator {}", o.id()),
            V::ClusterList(c) => format!(
                "cluster_list {:?}",
                c.cluster_list().iter().map(|c| c.id()).collect::<Vec<_>>()
            ),
            V::MpReach(NgMpReach::Ipv6Unicast {
                next_hop_global,
                next_hop_local,
                nlri,
            }) => {
                let p: Vec<String> = nlri
                    .iter()
                    .map(|n| pfx(n.network().address(), n.path_id()))
                    .collect();
                format!("mp_reach {next_hop_global} {next_hop_local:?} {p:?}")
            }
            V::MpUnreach(NgMpUnreach::Ipv6Unicast { nlri }) => {
                let p: Vec<String> = nlri
                    .iter()
                    .map(|n| pfx(n.network().address(), n.path_id()))
                    .collect();
                format!("mp_unreach {p:?}")
            }
            V::UnknownAttribute(x) => format!("unknown {} {:?}", x.code(), x.value()),
            other => return Err(format!("unexpected attribute {other:?}")),
        };
        attributes.push(s);
    }
    Ok(Reading {
        withdrawn: u
            .withdraw_routes()
            .iter()
            .map(|n| pfx(n.network().address(), n.path_id()))
            .collect(),
        nlri: u
            .nlri()
            .iter()
            .map(|n| pfx(n.network().address(), n.path_id()))
            .collect(),
        attributes,
    })
}

/// netgauze reads some type codes we keep unknown (AIGP, prefix SID...) and
/// does not know confederation segments; keep the generated UPDATEs to what
/// both decoders claim to support.
fn comparable(mut u: Update) -> Update {
    u.attributes.retain(|a| match &a.value {
        AttrValue::Unknown { type_code, .. } => matches!(type_code, 200 | 255),
        AttrValue::AsPath(p) | AttrValue::As4Path(p) => p
            .segments
            .iter()
            .all(|s| matches!(s.kind, SegmentType::Set | SegmentType::Sequence)),
        _ => true,
    });
    u
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn petrel_and_netgauze_read_updates_alike(
        (ctx, update) in common::context()
            .prop_map(|c| WireContext { extended_message: true, ..c })
            .prop_flat_map(|c| (Just(c), common::update(c).prop_map(comparable)))
    ) {
        let msg = Message::Update(update);
        let bytes = msg.to_bytes(&ctx).expect("fits 65535");
        let decoded = Message::decode(&bytes, &ctx).expect("petrel decodes its own encoding");
        let Message::Update(u) = &decoded.message else { panic!() };
        let theirs = theirs(&bytes, &ctx).map_err(TestCaseError::fail)?;
        prop_assert_eq!(ours(u), theirs);
    }
}

#[test]
fn the_shared_captures_read_alike() {
    // Real UPDATEs (IPv4 and IPv6 unicast, 4-octet AS, ADD-PATH) from BIRD and
    // Quagga: both decoders must agree on them as well.
    let dir = std::env::var_os("PETREL_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")
        })
        .join("data/mrt");
    let mut compared = 0;
    for name in ["bird_bgp", "bird6_bgp", "bird-mrtdump_bgp"] {
        let data = std::fs::read(dir.join(name)).expect("shared capture");
        let mut tracker = bgpd::mrt::SessionTracker::new();
        for rec in bgpd::mrt::MrtReader::new(&data[..]) {
            let rec = rec.expect("record");
            let Ok(bgpd::mrt::MrtBody::Bgp4mpMessage(m)) = rec.parse() else {
                continue;
            };
            let d = tracker.decode(&m);
            let Ok(dec) = d.result else { panic!("decodes") };
            let Message::Update(u) = &dec.message else {
                continue;
            };
            // netgauze keeps MP attributes of other families in other variants.
            if u.attributes.iter().any(|a| match &a.value {
                AttrValue::MpReach(r) => matches!(r.nlri, MpNlri::Opaque(_)),
                AttrValue::MpUnreach(r) => matches!(r.withdrawn, MpNlri::Opaque(_)),
                _ => false,
            }) {
                continue;
            }
            let theirs = theirs(&m.message, &d.context).expect("netgauze decodes");
            assert_eq!(ours(u), theirs, "{name} offset {}", rec.offset);
            compared += 1;
        }
    }
    assert!(compared >= 10, "compared only {compared} UPDATEs");
}
