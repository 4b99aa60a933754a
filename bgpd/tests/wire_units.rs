//! Byte-vector tests for individual structures (decode and encode pairs), the
//! RFC 6793 AS path merge, End-of-RIB and the RFC 9072 OPEN encoding.

use std::net::Ipv4Addr;

use bgpd::wire::attr::{
    Aggregator, AsPath, AsSegment, AttrValue, PathAttribute, SegmentType, effective_path,
};
use bgpd::wire::capability::{AddPathFamily, Capability, GrFamily, GracefulRestart, LlgrFamily};
use bgpd::wire::open::{Open, OptionalParameter};
use bgpd::wire::{AS_TRANS, AfiSafi, Message, Nlri, Update, WireContext};

const CTX: WireContext = WireContext::modern();

fn open_vector() -> (Vec<u8>, Open) {
    #[rustfmt::skip]
    let bytes = vec![
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0x00, 0x5B, 0x01, // length 91, OPEN
        0x04, 0x5B, 0xA0, 0x00, 0x5A, 10, 0, 0, 1, // v4, AS_TRANS, hold 90, id 10.0.0.1
        0x3E, // 62 octets of parameters
        0x02, 0x3C, // one Capabilities parameter, 60 octets
        0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP ipv4-unicast
        0x01, 0x04, 0x00, 0x02, 0x00, 0x01, // MP ipv6-unicast
        0x02, 0x00, // route refresh
        0x46, 0x00, // enhanced route refresh
        0x41, 0x04, 0xFA, 0x56, 0xEA, 0x01, // 4-octet AS 4200000001
        0x40, 0x0A, 0x80, 0x78, 0x00, 0x01, 0x01, 0x80, 0x00, 0x02, 0x01, 0x00, // GR: R, 120 s, v4 F, v6
        0x45, 0x04, 0x00, 0x01, 0x01, 0x03, // ADD-PATH ipv4 send/receive
        0x47, 0x07, 0x00, 0x01, 0x01, 0x80, 0x00, 0x0E, 0x10, // LLGR ipv4 F, 3600 s
        0x06, 0x00, // extended message
        0x49, 0x07, 0x04, b'n', b'o', b'd', b'e', 0x01, b'x', // FQDN node.x
    ];
    let open = Open {
        version: 4,
        my_as: AS_TRANS as u16,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        params: vec![OptionalParameter::Capabilities(vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::FourOctetAs(4_200_000_001),
            Capability::GracefulRestart(GracefulRestart {
                flags: GracefulRestart::RESTART_STATE,
                restart_time: 120,
                families: vec![
                    GrFamily {
                        afi_safi: AfiSafi::IPV4_UNICAST,
                        flags: GrFamily::FORWARDING_PRESERVED,
                    },
                    GrFamily {
                        afi_safi: AfiSafi::IPV6_UNICAST,
                        flags: 0,
                    },
                ],
            }),
            Capability::AddPath(vec![AddPathFamily {
                afi_safi: AfiSafi::IPV4_UNICAST,
                send_receive: 3,
            }]),
            Capability::LongLivedGracefulRestart(vec![LlgrFamily {
                afi_safi: AfiSafi::IPV4_UNICAST,
                flags: 0x80,
                stale_time: 3600,
            }]),
            Capability::ExtendedMessage,
            Capability::Fqdn {
                hostname: b"node".to_vec(),
                domain: b"x".to_vec(),
            },
        ])],
        extended_params: false,
    };
    (bytes, open)
}

#[test]
fn decode_open() {
    let (bytes, open) = open_vector();
    let d = Message::decode(&bytes, &CTX).expect("decodes");
    assert_eq!(d.message, Message::Open(open.clone()));
    assert_eq!(open.asn(), 4_200_000_001);
    let Some(Capability::GracefulRestart(gr)) = open.capabilities().nth(5) else {
        panic!()
    };
    assert!(gr.restart_state() && !gr.notification());
    assert!(gr.families[0].forwarding_preserved() && !gr.families[1].forwarding_preserved());
}

#[test]
fn encode_open() {
    let (bytes, open) = open_vector();
    assert_eq!(Message::Open(open).to_bytes(&CTX).expect("encodes"), bytes);
}

#[test]
fn open_with_long_parameters_uses_rfc_9072_and_round_trips() {
    // 60 MP capabilities: 360 octets, more than one octet of length can say.
    let caps = (0..60)
        .map(|i| Capability::Multiprotocol(AfiSafi::new(1, i)))
        .collect();
    let open = Open::new(65001, 90, Ipv4Addr::new(1, 1, 1, 1), caps);
    let bytes = Message::Open(open.clone()).to_bytes(&CTX).expect("encodes");
    // Non-Ext OP Len 255, Non-Ext OP Type 255, then a two-octet length.
    assert_eq!(&bytes[28..30], &[255, 255]);
    let Message::Open(back) = Message::decode(&bytes, &CTX).expect("decodes").message else {
        panic!()
    };
    assert!(back.extended_params);
    assert_eq!(back.params, open.params);
    assert_eq!(Message::Open(back).to_bytes(&CTX).expect("encodes"), bytes);
}

#[test]
fn unknown_optional_parameter_is_kept() {
    let (mut bytes, _) = open_vector();
    // Append an unknown parameter type 9 with two octets.
    bytes.extend_from_slice(&[9, 2, 0xAB, 0xCD]);
    bytes[28] += 4;
    let len = bytes.len() as u16;
    bytes[16..18].copy_from_slice(&len.to_be_bytes());
    let Message::Open(o) = Message::decode(&bytes, &CTX).expect("decodes").message else {
        panic!()
    };
    assert_eq!(
        o.params.last(),
        Some(&OptionalParameter::Unknown {
            param_type: 9,
            data: vec![0xAB, 0xCD]
        })
    );
    assert_eq!(Message::Open(o).to_bytes(&CTX).expect("encodes"), bytes);
}

fn path(segs: &[(SegmentType, &[u32])]) -> AsPath {
    AsPath {
        segments: segs
            .iter()
            .map(|(kind, asns)| AsSegment {
                kind: *kind,
                asns: asns.to_vec(),
            })
            .collect(),
    }
}

fn attrs(
    as_path: AsPath,
    as4: Option<AsPath>,
    agg: Option<u32>,
    as4_agg: Option<u32>,
) -> Vec<PathAttribute> {
    let mut v = vec![PathAttribute::new(AttrValue::AsPath(as_path))];
    if let Some(p) = as4 {
        v.push(PathAttribute::new(AttrValue::As4Path(p)));
    }
    let a = |asn| Aggregator {
        asn,
        address: Ipv4Addr::new(192, 0, 2, 9),
    };
    if let Some(asn) = agg {
        v.push(PathAttribute::new(AttrValue::Aggregator(a(asn))));
    }
    if let Some(asn) = as4_agg {
        v.push(PathAttribute::new(AttrValue::As4Aggregator(a(asn))));
    }
    v
}

use SegmentType::{ConfedSequence, Sequence, Set};

#[test]
fn as4_path_replaces_the_tail_of_as_path() {
    let a = attrs(
        path(&[(Sequence, &[65001, AS_TRANS, AS_TRANS])]),
        Some(path(&[(Sequence, &[4_200_000_001, 4_200_000_002])])),
        None,
        None,
    );
    assert_eq!(
        effective_path(&a, false).as_path,
        path(&[(Sequence, &[65001, 4_200_000_001, 4_200_000_002])])
    );
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    let a = attrs(
        path(&[(Sequence, &[65001])]),
        Some(path(&[(Sequence, &[4_200_000_001, 4_200_000_002])])),
        None,
        None,
    );
    assert_eq!(
        effective_path(&a, false).as_path,
        path(&[(Sequence, &[65001])])
    );
}

#[test]
fn as4_attributes_are_ignored_when_aggregator_is_not_as_trans() {
    let a = attrs(
        path(&[(Sequence, &[65001, AS_TRANS])]),
        Some(path(&[(Sequence, &[4_200_000_001])])),
        Some(65010),
        Some(4_200_000_009),
    );
    let e = effective_path(&a, false);
    assert_eq!(e.as_path, path(&[(Sequence, &[65001, AS_TRANS])]));
    assert_eq!(e.aggregator.map(|g| g.asn), Some(65010));
}

#[test]
fn as4_aggregator_replaces_as_trans_aggregator() {
    let a = attrs(
        path(&[(Sequence, &[AS_TRANS]), (Set, &[1, 2])]),
        Some(path(&[(Sequence, &[4_200_000_001]), (Set, &[1, 2])])),
        Some(AS_TRANS),
        Some(4_200_000_009),
    );
    let e = effective_path(&a, false);
    assert_eq!(e.aggregator.map(|g| g.asn), Some(4_200_000_009));
    assert_eq!(
        e.as_path,
        path(&[(Sequence, &[4_200_000_001]), (Set, &[1, 2])])
    );
}

#[test]
fn four_octet_sessions_ignore_as4_attributes() {
    let a = attrs(
        path(&[(Sequence, &[4_200_000_001])]),
        Some(path(&[(Sequence, &[1])])),
        None,
        None,
    );
    assert_eq!(
        effective_path(&a, true).as_path,
        path(&[(Sequence, &[4_200_000_001])])
    );
}

#[test]
fn confederation_segments_are_kept_from_as_path_and_dropped_from_as4_path() {
    let a = attrs(
        path(&[(ConfedSequence, &[64512]), (Sequence, &[65001, AS_TRANS])]),
        Some(path(&[
            (ConfedSequence, &[64999]),
            (Sequence, &[4_200_000_001]),
        ])),
        None,
        None,
    );
    assert_eq!(
        effective_path(&a, false).as_path,
        path(&[
            (ConfedSequence, &[64512]),
            (Sequence, &[65001, 4_200_000_001])
        ])
    );
}

#[test]
fn two_octet_encoding_writes_as_trans_for_large_asns() {
    let two = WireContext {
        four_octet_as: false,
        ..CTX
    };
    let u = Update {
        attributes: vec![PathAttribute::new(AttrValue::AsPath(AsPath::sequence(
            vec![65001, 4_200_000_001],
        )))],
        ..Update::default()
    };
    let bytes = Message::Update(u).to_bytes(&two).expect("encodes");
    // ... flags 0x40, type 2, length 6, AS_SEQUENCE of 2: 65001, 23456.
    assert_eq!(&bytes[23..], &[0x40, 2, 6, 2, 2, 0xFD, 0xE9, 0x5B, 0xA0]);
}

#[test]
fn end_of_rib_markers() {
    for af in [
        AfiSafi::IPV4_UNICAST,
        AfiSafi::IPV6_UNICAST,
        AfiSafi::new(1, 128),
    ] {
        let eor = Update::end_of_rib(af);
        assert_eq!(eor.as_end_of_rib(), Some(af));
        let bytes = Message::Update(eor).to_bytes(&CTX).expect("encodes");
        let Message::Update(back) = Message::decode(&bytes, &CTX).expect("decodes").message else {
            panic!()
        };
        assert_eq!(back.as_end_of_rib(), Some(af));
    }
    assert_eq!(
        Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST))
            .to_bytes(&CTX)
            .expect("enc")
            .len(),
        23
    );
}

#[test]
fn host_bits_in_prefixes_survive_and_normalize() {
    // 10.255.0.0/12 with the four host bits of the second octet set.
    let bytes = {
        let mut b = vec![0xFF; 16];
        let body = [0u8, 3, 12, 10, 0xFF, 0, 0];
        b.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&body);
        b
    };
    let Message::Update(u) = Message::decode(&bytes, &CTX).expect("decodes").message else {
        panic!()
    };
    let n: Nlri = u.withdrawn[0];
    assert_eq!(n.prefix.to_string(), "10.255.0.0/12");
    assert_eq!(n.normalized().prefix.to_string(), "10.240.0.0/12");
    assert_eq!(Message::Update(u).to_bytes(&CTX).expect("encodes"), bytes);
}

#[test]
fn add_path_nlri_carry_their_identifier() {
    let ap = WireContext {
        add_path_ipv4: true,
        ..CTX
    };
    let n = Nlri {
        path_id: Some(7),
        prefix: "192.0.2.0/24".parse().expect("prefix"),
    };
    let u = Update {
        withdrawn: vec![n],
        ..Update::default()
    };
    let bytes = Message::Update(u.clone()).to_bytes(&ap).expect("encodes");
    assert_eq!(&bytes[19..], &[0, 8, 0, 0, 0, 7, 24, 192, 0, 2, 0, 0]);
    assert_eq!(
        Message::decode(&bytes, &ap).expect("decodes").message,
        Message::Update(u)
    );
    // Without ADD-PATH the same octets are a different (wrong) reading, or an error.
    assert_ne!(
        Message::decode(&bytes, &CTX).map(|d| d.message).ok(),
        Some(Message::Update(Update {
            withdrawn: vec![n],
            ..Update::default()
        }))
    );
}

#[test]
fn negotiation_is_per_direction() {
    let open = |caps: Vec<Capability>| Open::new(65001, 90, Ipv4Addr::new(1, 1, 1, 1), caps);
    let ap = |send_receive| {
        Capability::AddPath(vec![AddPathFamily {
            afi_safi: AfiSafi::IPV6_UNICAST,
            send_receive,
        }])
    };
    // We only receive multiple paths; the peer only sends them.
    let local = open(vec![
        Capability::FourOctetAs(65001),
        ap(AddPathFamily::RECEIVE),
    ]);
    let remote = open(vec![
        Capability::FourOctetAs(65002),
        ap(AddPathFamily::SEND),
        Capability::ExtendedMessage,
    ]);
    let rx = WireContext::negotiated(&remote, &local);
    let tx = WireContext::negotiated(&local, &remote);
    assert!(rx.add_path_ipv6 && !tx.add_path_ipv6);
    assert!(!rx.add_path_ipv4 && !tx.add_path_ipv4);
    assert!(rx.four_octet_as && tx.four_octet_as);
    assert!(!rx.extended_message, "only one side offered it");
    let old = open(vec![]);
    assert!(!WireContext::negotiated(&old, &local).four_octet_as);
}
