//! Property tests: every generated message survives encode → decode → encode
//! unchanged, under every wire context; and UPDATE packing loses nothing.

mod common;

use bgpd::wire::attr::{AsPath, AttrValue, NextHop, Origin, PathAttribute};
use bgpd::wire::update::UpdatePacker;
use bgpd::wire::{AfiSafi, EncodeError, Message, Nlri, WireContext};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips((ctx, msg) in common::context().prop_flat_map(|c| (Just(c), common::message(c)))) {
        let bytes = match msg.to_bytes(&ctx) {
            Ok(b) => b,
            // A generated message may exceed 4096 octets; that is the encoder's
            // job to refuse, and nothing to round-trip.
            Err(EncodeError::MessageTooLong { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("encode failed: {e}"))),
        };
        let decoded = Message::decode(&bytes, &ctx).map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
        prop_assert!(decoded.problems.is_empty(), "problems: {:?}", decoded.problems);
        // The encoder sets Extended Length by itself for long values; apart
        // from that bit the decoded message is the one generated.
        prop_assert_eq!(without_ext_bit(&decoded.message), without_ext_bit(&msg));
        prop_assert_eq!(decoded.message.to_bytes(&ctx).expect("re-encodes"), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(ctx in common::context(), bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes, &ctx);
        // And with a valid header in front, so the body parsers are reached.
        let mut framed = vec![0xFF; 16];
        framed.extend_from_slice(&((bytes.len() + 19) as u16).to_be_bytes());
        framed.push(bytes.first().map_or(2, |b| b % 6));
        framed.extend_from_slice(&bytes);
        if let Ok(d) = Message::decode(&framed, &ctx) {
            let _ = d.message.to_bytes(&ctx);
        }
    }

    #[test]
    fn packer_loses_and_wastes_nothing(
        ctx in common::context(),
        v4 in common::v4_nlri(false, 3000),
        v6 in common::v6_nlri(false, 1500),
    ) {
        let attrs = vec![
            PathAttribute::new(AttrValue::Origin(Origin::Igp)),
            PathAttribute::new(AttrValue::AsPath(AsPath::sequence(vec![65001, 65002]))),
            PathAttribute::new(AttrValue::NextHop("192.0.2.1".parse().expect("addr"))),
        ];
        let packer = UpdatePacker::new(&ctx);
        let with_ids = |list: &[Nlri], on: bool| -> Vec<Nlri> {
            list.iter().enumerate().map(|(i, n)| Nlri { path_id: on.then_some(i as u32), ..*n }).collect()
        };
        let v4 = with_ids(&v4, ctx.add_path_ipv4);
        let v6 = with_ids(&v6, ctx.add_path_ipv6);
        let nh6 = NextHop::Ipv6 { global: "2001:db8::1".parse().expect("addr"), link_local: None };
        for (af, list, nh) in [(AfiSafi::IPV4_UNICAST, &v4, None), (AfiSafi::IPV6_UNICAST, &v6, Some(&nh6))] {
            let attrs: Vec<PathAttribute> = if af == AfiSafi::IPV4_UNICAST { attrs.clone() } else { attrs[..2].to_vec() };
            for withdraw in [false, true] {
                let mut msgs = Vec::new();
                if withdraw {
                    packer.withdraw(af, list, &mut msgs).expect("packs");
                } else {
                    packer.announce(af, &attrs, nh, list, &mut msgs).expect("packs");
                }
                let mut seen = Vec::new();
                for (i, m) in msgs.iter().enumerate() {
                    prop_assert!(m.len() <= ctx.max_message_len());
                    let d = Message::decode(m, &ctx).expect("packed message decodes");
                    prop_assert!(d.problems.is_empty(), "{:?}", d.problems);
                    let Message::Update(u) = d.message else { panic!("not an UPDATE") };
                    let got: Vec<Nlri> = if withdraw { u.withdrawn_all().copied().collect() } else { u.announced().copied().collect() };
                    // Greedy packing: the next prefix would not have fitted.
                    if let Some(next) = list.get(seen.len() + got.len()) && i + 1 < msgs.len() {
                        prop_assert!(m.len() + next.wire_len() > ctx.max_message_len());
                    }
                    seen.extend(got);
                }
                prop_assert_eq!(&seen, list);
            }
        }
    }
}

/// The message with the Extended Length bit cleared on every attribute.
fn without_ext_bit(m: &Message) -> Message {
    let mut m = m.clone();
    if let Message::Update(u) = &mut m {
        for a in &mut u.attributes {
            a.flags &= !bgpd::wire::attr::flags::EXTENDED_LENGTH;
        }
    }
    m
}

#[test]
fn large_update_uses_extended_length_and_extended_messages() {
    // 3000 communities need a two-octet attribute length and more than 4096 octets.
    let comms: Vec<_> = (0..3000).map(bgpd::wire::attr::Community).collect();
    let msg = Message::Update(bgpd::wire::Update {
        attributes: vec![PathAttribute::new(AttrValue::Communities(comms))],
        ..Default::default()
    });
    let classic = WireContext::modern();
    assert!(matches!(
        msg.to_bytes(&classic),
        Err(EncodeError::MessageTooLong { .. })
    ));
    let ext = WireContext {
        extended_message: true,
        ..classic
    };
    let bytes = msg.to_bytes(&ext).expect("fits 65535");
    assert!(bytes.len() > 12000);
    let d = Message::decode(&bytes, &ext).expect("decodes");
    assert!(without_ext_bit(&d.message) == msg, "decoded UPDATE differs");
    // The encoder set the Extended Length bit by itself; decoding keeps it.
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_ne!(
        u.attributes[0].flags & bgpd::wire::attr::flags::EXTENDED_LENGTH,
        0
    );
    assert!(
        Message::decode(&bytes, &classic).is_err(),
        "over 4096 without the capability"
    );
}
