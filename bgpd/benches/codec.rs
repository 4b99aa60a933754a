//! Codec throughput: petrel's `bgpd::wire` beside `netgauze-bgp-pkt` on the same
//! full-table-like UPDATE stream, in the same run.
//!
//! The stream: 1,000,000 IPv4 and 200,000 IPv6 unicast prefixes, packed about
//! 100 per UPDATE by petrel's encoder, each UPDATE with its own attribute set
//! drawn from a realistic mix (AS paths of 1-9 hops over a shared ASN pool,
//! 0-6 communities, some MEDs, large communities on a few). 4-octet AS, no ADD-PATH.
//!
//! Run: `cargo bench -p bgpd --bench codec` (set `CODEC_BENCH_SCALE=0.1` for a
//! quick look). Prints messages/s and prefixes/s for each codec and the ratio.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bgpd::wire::attr::{
    AsPath, AttrValue, Community, LargeCommunity, NextHop, Origin, PathAttribute,
};
use bgpd::wire::update::UpdatePacker;
use bgpd::wire::{AfiSafi, Message, Nlri, WireContext};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

/// A small deterministic generator (xorshift64*), so every run measures the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn attributes(rng: &mut Rng, asn_pool: &[u32], v4: bool) -> Vec<PathAttribute> {
    let hops = 1 + rng.below(9) as usize;
    let path: Vec<u32> = (0..hops)
        .map(|_| asn_pool[rng.below(asn_pool.len() as u64) as usize])
        .collect();
    let mut attrs = vec![
        PathAttribute::new(AttrValue::Origin(if rng.below(10) == 0 {
            Origin::Incomplete
        } else {
            Origin::Igp
        })),
        PathAttribute::new(AttrValue::AsPath(AsPath::sequence(path))),
    ];
    if v4 {
        attrs.push(PathAttribute::new(AttrValue::NextHop(Ipv4Addr::new(
            192, 0, 2, 1,
        ))));
    }
    if rng.below(3) == 0 {
        attrs.push(PathAttribute::new(AttrValue::Med(rng.below(1000) as u32)));
    }
    let ncomm = rng.below(7);
    if ncomm > 0 {
        let c = (0..ncomm)
            .map(|_| {
                Community::new(
                    asn_pool[rng.below(64) as usize] as u16,
                    rng.below(1000) as u16,
                )
            })
            .collect();
        attrs.push(PathAttribute::new(AttrValue::Communities(c)));
    }
    if rng.below(20) == 0 {
        attrs.push(PathAttribute::new(AttrValue::LargeCommunities(vec![
            LargeCommunity {
                global_admin: 4_200_000_001,
                local_data1: rng.below(100) as u32,
                local_data2: rng.below(100) as u32,
            },
        ])));
    }
    attrs
}

/// Builds the stream as encoded UPDATE messages; returns them and the prefix count.
fn build_stream(scale: f64) -> (Vec<Vec<u8>>, usize) {
    let ctx = WireContext::modern();
    let packer = UpdatePacker::new(&ctx);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let asn_pool: Vec<u32> = (0..2000)
        .map(|i| {
            if i % 7 == 0 {
                4_200_000_000 + i
            } else {
                1000 + i * 13
            }
        })
        .collect();
    let n4 = (1_000_000.0 * scale) as usize;
    let n6 = (200_000.0 * scale) as usize;
    let mut msgs = Vec::new();
    let mut made = 0;
    while made < n4 {
        let take = (80 + rng.below(41) as usize).min(n4 - made);
        let nlri: Vec<Nlri> = (0..take)
            .map(|_| {
                let len = [24u8, 24, 24, 24, 23, 22, 20, 16][rng.below(8) as usize];
                let addr = Ipv4Addr::from(((1 + rng.below(222)) << 24 | rng.below(1 << 24)) as u32);
                Nlri::new(IpNet::V4(Ipv4Net::new(addr, len).expect("len").trunc()))
            })
            .collect();
        let attrs = attributes(&mut rng, &asn_pool, true);
        packer
            .announce(AfiSafi::IPV4_UNICAST, &attrs, None, &nlri, &mut msgs)
            .expect("packs");
        made += take;
    }
    let nh = NextHop::Ipv6 {
        global: "2001:db8::1".parse().expect("addr"),
        link_local: Some("fe80::1".parse().expect("addr")),
    };
    made = 0;
    while made < n6 {
        let take = (80 + rng.below(41) as usize).min(n6 - made);
        let nlri: Vec<Nlri> = (0..take)
            .map(|_| {
                let len = [48u8, 48, 48, 44, 40, 32, 36, 64][rng.below(8) as usize];
                let addr = Ipv6Addr::from(
                    (0x2000u128 + rng.below(0x1000) as u128) << 112 | (rng.next() as u128) << 48,
                );
                Nlri::new(IpNet::V6(Ipv6Net::new(addr, len).expect("len").trunc()))
            })
            .collect();
        let attrs = attributes(&mut rng, &asn_pool, false);
        packer
            .announce(AfiSafi::IPV6_UNICAST, &attrs, Some(&nh), &nlri, &mut msgs)
            .expect("packs");
        made += take;
    }
    (msgs, n4 + n6)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` `rounds` times after one warm-up and returns the median time.
fn measure(rounds: usize, mut f: impl FnMut() -> usize, expect: usize) -> Duration {
    assert_eq!(f(), expect, "warm-up result");
    let times = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let n = f();
            let d = t.elapsed();
            assert_eq!(n, expect);
            d
        })
        .collect();
    median(times)
}

fn main() {
    // `cargo bench` passes `--bench`; any filter argument is ignored.
    let scale: f64 = std::env::var("CODEC_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rounds: usize = std::env::var("CODEC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (stream, prefixes) = build_stream(scale);
    let bytes: usize = stream.iter().map(Vec::len).sum();
    println!(
        "stream: {} UPDATEs, {} prefixes, {:.1} MB, {:.1} prefixes/UPDATE",
        stream.len(),
        prefixes,
        bytes as f64 / 1e6,
        prefixes as f64 / stream.len() as f64
    );
    let ctx = WireContext::modern();
    let count_ours = |m: &Message| match m {
        Message::Update(u) => u.announced().count(),
        _ => 0,
    };

    let petrel_decode = measure(
        rounds,
        || {
            stream
                .iter()
                .map(|m| count_ours(&black_box(Message::decode(m, &ctx).expect("decodes")).message))
                .sum()
        },
        prefixes,
    );

    let ng_ctx = || {
        BgpParsingContext::new(
            true,
            HashMap::new(),
            HashMap::from([
                (AddressType::Ipv4Unicast, false),
                (AddressType::Ipv6Unicast, false),
            ]),
            true,
            true,
            true,
            true,
        )
    };
    let count_theirs = |m: &BgpMessage| match m {
        BgpMessage::Update(u) => {
            u.nlri().len()
                + u.path_attributes()
                    .iter()
                    .map(|a| match a.value() {
                        netgauze_bgp_pkt::path_attribute::PathAttributeValue::MpReach(
                            netgauze_bgp_pkt::path_attribute::MpReach::Ipv6Unicast { nlri, .. },
                        ) => nlri.len(),
                        _ => 0,
                    })
                    .sum::<usize>()
        }
        _ => 0,
    };
    let netgauze_decode = measure(
        rounds,
        || {
            let mut c = ng_ctx();
            stream
                .iter()
                .map(|m| {
                    let mut r = SliceReader::new(m);
                    count_theirs(&black_box(
                        BgpMessage::parse(&mut r, &mut c).expect("netgauze decodes"),
                    ))
                })
                .sum()
        },
        prefixes,
    );

    // Encoding: each codec re-encodes its own decoded messages.
    let ours: Vec<Message> = stream
        .iter()
        .map(|m| Message::decode(m, &ctx).expect("ok").message)
        .collect();
    let mut c = ng_ctx();
    let theirs: Vec<BgpMessage> = stream
        .iter()
        .map(|m| BgpMessage::parse(&mut SliceReader::new(m), &mut c).expect("ok"))
        .collect();
    let mut out = Vec::with_capacity(bytes);
    let petrel_encode = measure(
        rounds,
        || {
            out.clear();
            for m in &ours {
                m.encode(&ctx, &mut out).expect("encodes");
            }
            assert_eq!(out.len(), bytes);
            prefixes
        },
        prefixes,
    );
    let netgauze_encode = measure(
        rounds,
        || {
            out.clear();
            for m in &theirs {
                m.write(&mut out).expect("encodes");
            }
            assert_eq!(out.len(), bytes);
            prefixes
        },
        prefixes,
    );

    let n = stream.len() as f64;
    let p = prefixes as f64;
    println!("median of {rounds} rounds");
    println!(
        "{:<22} {:>12} {:>14} {:>16}",
        "", "time", "UPDATEs/s", "prefixes/s"
    );
    for (name, d) in [
        ("petrel decode", petrel_decode),
        ("netgauze decode", netgauze_decode),
        ("petrel encode", petrel_encode),
        ("netgauze encode", netgauze_encode),
    ] {
        let s = d.as_secs_f64();
        println!(
            "{name:<22} {:>10.1}ms {:>14.0} {:>16.0}",
            s * 1e3,
            n / s,
            p / s
        );
    }
    println!(
        "decode: petrel is {:.2}x netgauze; encode: petrel is {:.2}x netgauze",
        netgauze_decode.as_secs_f64() / petrel_decode.as_secs_f64(),
        netgauze_encode.as_secs_f64() / petrel_encode.as_secs_f64()
    );
}
