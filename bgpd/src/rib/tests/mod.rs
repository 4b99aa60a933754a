//! The decision process and the export rules, on the sans-IO RIB, one file
//! per concept of the RIB; this file holds what they share.

mod adj_in;
mod decision;
mod encode;
mod export;
mod fib;
mod graceful;
mod groups;
mod interned;

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::policy::{Action, Match, Policy, Rule};
use crate::rib::decision::{Dest, Path, PathContext, Source, Step, compare, select_best};
use crate::rib::{Attrs, DecisionOptions, Outbound, PeerId, PeerInfo, Rib, RibConfig};
use crate::wire::attr::{AsPath, AttrValue, Community, Origin, PathAttribute};
use crate::wire::{AfiSafi, Message, Nlri, Update, WireContext};
use ipnet::IpNet;

const LOCAL_AS: u32 = 65000;

fn attrs(f: impl FnOnce(&mut Attrs)) -> Arc<Attrs> {
    let mut a = Attrs {
        origin: Some(Origin::Igp),
        as_path: AsPath::sequence(vec![65001]),
        next_hop: Some("192.0.2.1".parse().expect("ip")),
        ..Attrs::default()
    };
    f(&mut a);
    Arc::new(a)
}

fn path(peer: u8, ebgp: bool, a: Arc<Attrs>) -> Path {
    path_with_id(peer, peer, ebgp, a)
}

/// A path from a peer at 192.0.2.`peer` with router ID 10.0.0.`rid`, over
/// eBGP or not: the peer ID packs all three, for [`Facts`] to unpack.
fn path_with_id(peer: u8, rid: u8, ebgp: bool, a: Arc<Attrs>) -> Path {
    let id = u32::from(peer) | u32::from(rid) << 8 | u32::from(ebgp) << 16;
    Path::new(Source::Peer(id), 0, a)
}

/// Peers as [`path_with_id`] packs them; next hops are reachable unless
/// `reach` says not; our own router ID is 10.0.0.254.
struct Facts<F>(F);

impl<F: Fn(&Path) -> bool> PathContext for Facts<F> {
    fn reachable(&self, p: &Path) -> bool {
        (self.0)(p)
    }

    fn peer_address(&self, p: &Path) -> Option<IpAddr> {
        match p.source() {
            Source::Local => None,
            Source::Peer(n) => Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n as u8))),
        }
    }

    fn ebgp(&self, p: &Path) -> bool {
        matches!(p.source(), Source::Peer(n) if n >> 16 == 1)
    }

    fn router_id(&self, p: &Path) -> Ipv4Addr {
        match p.source() {
            Source::Local => Ipv4Addr::new(10, 0, 0, 254),
            Source::Peer(n) => Ipv4Addr::new(10, 0, 0, (n >> 8) as u8),
        }
    }
}

fn all_reachable(_: &Path) -> bool {
    true
}

fn decided_by(a: &Path, b: &Path, opts: DecisionOptions) -> (Ordering, Step) {
    compare(a, b, opts, &Facts(all_reachable))
}

const OPTS: DecisionOptions = DecisionOptions {
    always_compare_med: false,
    deterministic_med: false,
};

fn info(addr: &str, asn: u32, local: &str) -> PeerInfo {
    PeerInfo {
        address: addr.parse().expect("ip"),
        local_address: local.parse().expect("ip"),
        local_ipv4: None,
        local_ipv6: None,
        local_link_local: None,
        asn,
        router_id: match addr.parse::<IpAddr>().expect("ip") {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
        },
        next_hop_self: false,
        rr_client: false,
        add_path_send: None,
        import_policy: None,
        export_policy: None,
        // These tests are about the protocol's rules; the no-transit default
        // has its own test.
        transit: true,
        long_lived: false,
        families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
        rx: WireContext::modern(),
        tx: WireContext::modern(),
    }
}

fn rib() -> Rib {
    Rib::new(RibConfig {
        local_asn: LOCAL_AS,
        router_id: Ipv4Addr::new(10, 0, 0, 100),
        decision: DecisionOptions::default(),
        enforce_first_as: true,
        cluster_id: Ipv4Addr::new(10, 0, 0, 100),
        maximum_paths: 8,
    })
}

fn announce(asns: Vec<u32>, nh: &str, prefixes: &[&str], extra: Vec<AttrValue>) -> Update {
    let mut attributes = vec![
        PathAttribute::new(AttrValue::Origin(Origin::Igp)),
        PathAttribute::new(AttrValue::AsPath(AsPath::sequence(asns))),
        PathAttribute::new(AttrValue::NextHop(nh.parse().expect("ip"))),
    ];
    attributes.extend(extra.into_iter().map(PathAttribute::new));
    Update {
        attributes,
        nlri: prefixes
            .iter()
            .map(|p| Nlri::new(p.parse().expect("prefix")))
            .collect(),
        ..Update::default()
    }
}

/// Decodes everything sent to `peer` into (announced prefixes with attributes, withdrawn prefixes).
fn sent_to(out: &Outbound, peer: PeerId) -> (Vec<(IpNet, Update)>, Vec<IpNet>) {
    let mut ann = Vec::new();
    let mut wd = Vec::new();
    for (id, msgs) in &out.messages {
        if *id != peer {
            continue;
        }
        for m in msgs.iter() {
            let Message::Update(u) = Message::decode(m, &WireContext::modern())
                .expect("decodes")
                .message
            else {
                panic!("not an UPDATE")
            };
            for n in u.announced() {
                ann.push((n.prefix, u.clone()));
            }
            wd.extend(u.withdrawn_all().map(|n| n.prefix));
        }
    }
    (ann, wd)
}

fn attr(u: &Update, code: u8) -> Option<&AttrValue> {
    u.attribute(code).map(|a| &a.value)
}

fn prefixes(r: &Rib) -> Vec<String> {
    // Every test that looks at the table checks the kept path count too.
    assert_eq!(
        r.path_count(),
        r.iter().map(|(_, d)| d.paths.len()).sum::<usize>(),
        "the kept path count drifted from the table"
    );
    let mut v: Vec<String> = r.iter().map(|(p, _)| p.to_string()).collect();
    v.sort();
    v
}

fn decoded(msgs: &[Vec<u8>]) -> Vec<Update> {
    msgs.iter()
        .map(|m| {
            match Message::decode(m, &WireContext::modern())
                .expect("ok")
                .message
            {
                Message::Update(u) => u,
                _ => panic!("not an UPDATE"),
            }
        })
        .collect()
}

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn client(addr: &str) -> PeerInfo {
    let mut i = info(addr, LOCAL_AS, "192.0.2.100");
    i.rr_client = true;
    i
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn policy(rules: Vec<Rule>) -> Option<Arc<Policy>> {
    Some(Arc::new(Policy {
        name: "test".into(),
        rules,
    }))
}

fn within(net: &str, le: u8) -> Match {
    Match::Prefix {
        net: net.parse().expect("net"),
        ge: None,
        le: Some(le),
    }
}
