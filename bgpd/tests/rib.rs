//! The decision process and the export rules, on the sans-IO RIB.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bgpd::policy::{Action, Match, Policy, Rule};
use bgpd::rib::{
    Attrs, DecisionOptions, Path, PathContext, PeerId, PeerInfo, Rib, RibConfig, Source, Step,
    compare, select_best,
};
use bgpd::wire::attr::{AsPath, AttrValue, Community, Origin, PathAttribute};
use bgpd::wire::{AfiSafi, Message, Nlri, Update, WireContext};
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

#[test]
fn each_decision_step_in_rfc_order() {
    let base = path(1, true, attrs(|_| {}));
    let lp = path(2, true, attrs(|a| a.local_pref = Some(200)));
    assert_eq!(
        decided_by(&lp, &base, OPTS),
        (Ordering::Less, Step::LocalPref)
    );
    let short = path(2, true, attrs(|a| a.as_path = AsPath::default()));
    assert_eq!(
        decided_by(&short, &base, OPTS),
        (Ordering::Less, Step::AsPathLength)
    );
    assert_eq!(
        decided_by(&base, &short, OPTS),
        (Ordering::Greater, Step::AsPathLength)
    );
    // ORIGIN: IGP beats INCOMPLETE.
    let incomplete = path(2, true, attrs(|a| a.origin = Some(Origin::Incomplete)));
    assert_eq!(
        decided_by(&base, &incomplete, OPTS),
        (Ordering::Less, Step::Origin)
    );
    // MED: lower wins between paths from the same neighbouring AS.
    let med10 = path(2, true, attrs(|a| a.med = Some(10)));
    let med20 = path(1, true, attrs(|a| a.med = Some(20)));
    assert_eq!(
        decided_by(&med10, &med20, OPTS),
        (Ordering::Less, Step::Med)
    );
    // ... but not between different neighbouring ASes, unless always-compare-med.
    let other_as = path(
        1,
        true,
        attrs(|a| {
            a.med = Some(5);
            a.as_path = AsPath::sequence(vec![65002]);
        }),
    );
    assert_eq!(decided_by(&med10, &other_as, OPTS).1, Step::RouterId);
    let always = DecisionOptions {
        always_compare_med: true,
        ..OPTS
    };
    assert_eq!(
        decided_by(&other_as, &med10, always),
        (Ordering::Less, Step::Med)
    );
    // eBGP over iBGP.
    let ibgp = path(1, false, attrs(|_| {}));
    assert_eq!(
        decided_by(&path(2, true, attrs(|_| {})), &ibgp, OPTS),
        (Ordering::Less, Step::External)
    );
    // Router ID, with ORIGINATOR_ID standing in for it.
    let orig = path(
        9,
        false,
        attrs(|a| a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 0))),
    );
    assert_eq!(
        decided_by(&orig, &ibgp, OPTS),
        (Ordering::Less, Step::RouterId)
    );
    // CLUSTER_LIST length, then peer address.
    let short = path(
        1,
        false,
        attrs(|a| a.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1)]),
    );
    let long = path(
        1,
        false,
        attrs(|a| a.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1); 2]),
    );
    assert_eq!(
        decided_by(&short, &long, OPTS),
        (Ordering::Less, Step::ClusterList)
    );
    // Another peer with the same router ID, at 192.0.2.200.
    let far = path_with_id(200, 1, false, attrs(|_| {}));
    assert_eq!(
        decided_by(&ibgp, &far, OPTS),
        (Ordering::Less, Step::PeerAddress)
    );
    // Local pref above all; locally originated next.
    let local = Path::new(
        Source::Local,
        0,
        attrs(|a| a.as_path = AsPath::sequence(vec![1, 2, 3, 4])),
    );
    assert_eq!(
        decided_by(&local, &base, OPTS),
        (Ordering::Less, Step::Local)
    );
}

#[test]
fn unreachable_next_hops_are_never_best() {
    let good = path(
        2,
        true,
        attrs(|a| a.next_hop = Some("192.0.2.2".parse().expect("ip"))),
    );
    let better_but_unreachable = path(1, true, attrs(|a| a.local_pref = Some(500)));
    let reach = |p: &Path| p.attrs.next_hop != Some("192.0.2.1".parse().expect("ip"));
    let paths = [better_but_unreachable, good];
    assert_eq!(select_best(&paths, OPTS, &Facts(reach)), Some(1));
    assert_eq!(select_best(&paths[..1], OPTS, &Facts(reach)), None);
}

#[test]
fn deterministic_med_does_not_depend_on_arrival_order() {
    // The classic MED intransitivity: A (AS1, MED 10), B (AS2, MED 5), C (AS1, MED 5),
    // with router IDs making B beat A and A beat... Pairwise results cycle.
    let a = path(
        3,
        true,
        attrs(|x| {
            x.as_path = AsPath::sequence(vec![1]);
            x.med = Some(10);
        }),
    );
    let b = path(
        2,
        true,
        attrs(|x| {
            x.as_path = AsPath::sequence(vec![2]);
            x.med = Some(5);
        }),
    );
    let c = path(
        4,
        true,
        attrs(|x| {
            x.as_path = AsPath::sequence(vec![1]);
            x.med = Some(5);
        }),
    );
    let det = DecisionOptions {
        deterministic_med: true,
        ..OPTS
    };
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let all = [a, b, c];
    let winners: Vec<u8> = orders
        .iter()
        .map(|o| {
            let v: Vec<Path> = o.iter().map(|&i| all[i].clone()).collect();
            let best = select_best(&v, det, &Facts(all_reachable)).expect("a best");
            Facts(all_reachable).router_id(&v[best]).octets()[3]
        })
        .collect();
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
    // Best of AS1 is C (MED 5, ID 4); against B (ID 2) the router ID decides: B.
    assert_eq!(winners[0], 2);
}

// ---- The RIB end to end, with encoded output ----

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
fn sent_to(out: &bgpd::rib::Outbound, peer: PeerId) -> (Vec<(IpNet, Update)>, Vec<IpNet>) {
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

#[test]
fn ebgp_route_goes_to_ibgp_and_ebgp_peers_with_the_right_changes() {
    let mut r = rib();
    let e1 = 1; // eBGP AS65001
    let e2 = 2; // eBGP AS65002
    let i1 = 3; // iBGP
    let up1 = r.peer_up(e1, info("192.0.2.1", 65001, "192.0.2.100"));
    assert_eq!(sent_to(&up1, e1).0.len(), 0);
    r.peer_up(e2, info("198.51.100.2", 65002, "198.51.100.100"));
    r.peer_up(i1, info("10.0.0.3", LOCAL_AS, "10.0.0.100"));
    r.update(
        e1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["203.0.113.0/24"],
            vec![AttrValue::Med(50), AttrValue::LocalPref(999)],
        ),
        false,
    );
    let out = r.flush();
    // Not back to the source.
    assert!(sent_to(&out, e1).0.is_empty());
    // eBGP: our AS prepended, our address as next hop, no MED, no LOCAL_PREF.
    let (ann, _) = sent_to(&out, e2);
    assert_eq!(ann.len(), 1);
    let u = &ann[0].1;
    assert_eq!(
        attr(u, 2),
        Some(&AttrValue::AsPath(AsPath::sequence(vec![LOCAL_AS, 65001])))
    );
    assert_eq!(
        attr(u, 3),
        Some(&AttrValue::NextHop("198.51.100.100".parse().expect("ip")))
    );
    assert_eq!(attr(u, 4), None);
    assert_eq!(attr(u, 5), None);
    // iBGP: path unchanged, next hop unchanged, LOCAL_PREF 100 (the eBGP one was discarded), MED kept.
    let (ann, _) = sent_to(&out, i1);
    let u = &ann[0].1;
    assert_eq!(
        attr(u, 2),
        Some(&AttrValue::AsPath(AsPath::sequence(vec![65001])))
    );
    assert_eq!(
        attr(u, 3),
        Some(&AttrValue::NextHop("192.0.2.1".parse().expect("ip")))
    );
    assert_eq!(attr(u, 5), Some(&AttrValue::LocalPref(100)));
    assert_eq!(attr(u, 4), Some(&AttrValue::Med(50)));

    // Withdrawal reaches both.
    let w = Update {
        withdrawn: vec![Nlri::new("203.0.113.0/24".parse().expect("p"))],
        ..Update::default()
    };
    r.update(e1, &w, false);
    let out = r.flush();
    assert_eq!(sent_to(&out, e2).1.len(), 1);
    assert_eq!(sent_to(&out, i1).1.len(), 1);
    assert!(r.is_empty());
}

#[test]
fn ibgp_routes_are_not_reflected_to_ibgp_peers() {
    let mut r = rib();
    r.peer_up(1, info("10.0.0.1", LOCAL_AS, "10.0.0.100"));
    r.peer_up(2, info("10.0.0.2", LOCAL_AS, "10.0.0.100"));
    r.peer_up(3, info("192.0.2.3", 65003, "192.0.2.100"));
    r.update(
        1,
        &announce(vec![], "10.0.0.1", &["203.0.113.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert!(sent_to(&out, 2).0.is_empty(), "split horizon");
    assert_eq!(sent_to(&out, 3).0.len(), 1, "but to eBGP");
}

#[test]
fn well_known_communities_are_honoured() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    r.peer_up(3, info("10.0.0.3", LOCAL_AS, "10.0.0.100"));
    let c = |c| vec![AttrValue::Communities(vec![c])];
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["203.0.113.0/25"],
            c(Community::NO_EXPORT),
        ),
        false,
    );
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["203.0.113.128/25"],
            c(Community::NO_ADVERTISE),
        ),
        false,
    );
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["198.18.0.0/24"],
            c(Community::NO_EXPORT_SUBCONFED),
        ),
        false,
    );
    let out = r.flush();
    let to_ebgp: Vec<String> = sent_to(&out, 2)
        .0
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    let to_ibgp: Vec<String> = sent_to(&out, 3)
        .0
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert!(to_ebgp.is_empty(), "{to_ebgp:?}");
    let mut to_ibgp = to_ibgp;
    to_ibgp.sort();
    assert_eq!(to_ibgp, vec!["198.18.0.0/24", "203.0.113.0/25"]);
}

#[test]
fn loops_and_wrong_first_as_are_rejected_and_counted() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.update(
        1,
        &announce(
            vec![65001, LOCAL_AS],
            "192.0.2.1",
            &["203.0.113.0/24"],
            vec![],
        ),
        false,
    );
    r.update(
        1,
        &announce(vec![65009], "192.0.2.1", &["198.51.100.0/24"], vec![]),
        false,
    );
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["192.0.2.0/24"], vec![]),
        false,
    );
    assert_eq!(r.len(), 1);
    let c = r.counts(1, AfiSafi::IPV4_UNICAST);
    assert_eq!((c.received, c.accepted), (3, 1));
    // Treat-as-withdraw removes a path that was there.
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["192.0.2.0/24"], vec![]),
        true,
    );
    assert!(r.is_empty());
    let counted = |r: &Rib| {
        let c = r.counts(1, AfiSafi::IPV4_UNICAST);
        (c.received, c.accepted)
    };
    assert_eq!(counted(&r), (3, 0));
    let adj_in = r.adj_rib_in(1);
    assert_eq!(adj_in.len(), 3);
    assert!(adj_in.iter().all(|e| e.rejected && e.attrs.is_none()));

    // Rejected, then accepted; the same again changes nothing.
    for _ in 0..2 {
        r.update(
            1,
            &announce(vec![65001], "192.0.2.1", &["203.0.113.0/24"], vec![]),
            false,
        );
        assert_eq!(counted(&r), (3, 1));
    }
    let adj_in = r.adj_rib_in(1);
    let accepted: Vec<String> = adj_in
        .iter()
        .filter(|e| !e.rejected && e.attrs.is_some())
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(accepted, vec!["203.0.113.0/24"]);
    // Accepted, then rejected again.
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["192.0.2.0/24"], vec![]),
        false,
    );
    assert_eq!(counted(&r), (3, 2));
    r.update(
        1,
        &announce(
            vec![65001, LOCAL_AS],
            "192.0.2.1",
            &["192.0.2.0/24"],
            vec![],
        ),
        false,
    );
    assert_eq!(counted(&r), (3, 1));

    // Withdrawn: a rejected entry, then an accepted one.
    let withdraw = |p: &str| Update {
        withdrawn: vec![Nlri::new(p.parse().expect("p"))],
        ..Update::default()
    };
    r.update(1, &withdraw("198.51.100.0/24"), false);
    assert_eq!(counted(&r), (2, 1));
    r.update(1, &withdraw("203.0.113.0/24"), false);
    assert_eq!(counted(&r), (1, 0));
    r.update(1, &withdraw("203.0.113.0/24"), false);
    assert_eq!(counted(&r), (1, 0), "withdrawing what is not there");

    // A graceful restart keeps the accepted entries only, stale.
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["203.0.113.0/24"], vec![]),
        false,
    );
    assert_eq!(counted(&r), (2, 1));
    assert_eq!(r.peer_down_graceful(1, &[AfiSafi::IPV4_UNICAST]), 1);
    assert_eq!(counted(&r), (1, 1));
    assert_eq!(r.len(), 1);
    r.peer_down(1);
    assert_eq!(counted(&r), (0, 0));
    assert!(r.is_empty());
}

#[test]
fn attributes_are_interned() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    for i in 0..50u8 {
        let prefixes: Vec<String> = (0..=255u8).map(|j| format!("10.{i}.{j}.0/24")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        r.update(
            1,
            &announce(vec![65001, 65100], "192.0.2.1", &refs, vec![]),
            false,
        );
    }
    assert_eq!(r.len(), 50 * 256);
    assert_eq!(r.attribute_sets(), 1, "12800 routes, one attribute set");
}

#[test]
fn exported_attributes_are_shared_across_prefixes() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    for i in 0..50u8 {
        let prefixes: Vec<String> = (0..=255u8).map(|j| format!("10.{i}.{j}.0/24")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        r.update(
            1,
            &announce(vec![65001, 65100], "192.0.2.1", &refs, vec![]),
            false,
        );
    }
    r.flush();
    // Each eBGP peer is its own group here (each gets its own next hop); the
    // routes are peer 1's own, so only peer 2's group exports them.
    assert_eq!(
        r.attribute_sets(),
        2,
        "the received set and the one peer 2 is sent"
    );
    // A peer in a new group (iBGP) gets its Adj-RIB-Out filled from the Loc-RIB
    // at once: one more set, not one per prefix.
    let out = r.peer_up(3, info("192.0.2.3", LOCAL_AS, "192.0.2.100"));
    assert_eq!(r.attribute_sets(), 3);
    let (announced, _) = sent_to(&out, 3);
    assert_eq!(announced.len(), 50 * 256);
    // And a change to nothing that peer sees sends it nothing again.
    r.update(
        1,
        &announce(vec![65001, 65100], "192.0.2.1", &["10.0.0.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert!(
        sent_to(&out, 3).0.is_empty(),
        "an unchanged export is not re-sent"
    );
}

#[test]
fn new_peer_gets_the_table_then_end_of_rib() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["203.0.113.0/24", "198.51.100.0/24"],
            vec![],
        ),
        false,
    );
    r.set_local_routes([(
        "10.100.0.0/24".parse().expect("p"),
        Attrs {
            origin: Some(Origin::Igp),
            ..Attrs::default()
        },
    )]);
    r.flush();
    let out = r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    let msgs = &out.messages[0].1;
    let decoded: Vec<Update> = msgs
        .iter()
        .map(|m| {
            match Message::decode(m, &WireContext::modern())
                .expect("ok")
                .message
            {
                Message::Update(u) => u,
                _ => panic!(),
            }
        })
        .collect();
    let announced: usize = decoded.iter().map(|u| u.announced().count()).sum();
    assert_eq!(announced, 3);
    let eors: Vec<AfiSafi> = decoded.iter().filter_map(Update::as_end_of_rib).collect();
    assert_eq!(eors, vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
    // The EoRs come last.
    assert!(decoded[decoded.len() - 2].as_end_of_rib().is_some());
    // Our own route: AS path [65000], next hop our session address.
    let own = decoded
        .iter()
        .find(|u| {
            u.nlri
                .iter()
                .any(|n| n.prefix.to_string() == "10.100.0.0/24")
        })
        .expect("own route");
    assert_eq!(
        attr(own, 2),
        Some(&AttrValue::AsPath(AsPath::sequence(vec![LOCAL_AS])))
    );
    assert_eq!(
        attr(own, 3),
        Some(&AttrValue::NextHop("198.51.100.100".parse().expect("ip")))
    );
}

#[test]
fn peers_with_the_same_treatment_share_one_encoding() {
    let mut r = rib();
    // Two eBGP peers on one LAN: same local address, same layout.
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    r.peer_up(3, info("192.0.2.3", 65003, "192.0.2.100"));
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["203.0.113.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    let to2 = &out.messages.iter().find(|(id, _)| *id == 2).expect("2").1;
    let to3 = &out.messages.iter().find(|(id, _)| *id == 3).expect("3").1;
    assert_eq!(to2, to3, "one group, one encoding");
    assert!(Arc::ptr_eq(to2, to3), "shared, not a copy each");
    assert!(
        out.messages.iter().all(|(id, _)| *id != 1),
        "never back to the source"
    );
}

#[test]
fn best_path_switch_withdraws_from_the_new_source() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    r.update(
        1,
        &announce(vec![65001, 65100], "192.0.2.1", &["203.0.113.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert_eq!(sent_to(&out, 2).0.len(), 1, "peer 2 learns peer 1's route");
    // Peer 2 announces a shorter path: it becomes best; peer 2 must not keep
    // the copy we sent it, and peer 1 now gets peer 2's.
    r.update(
        2,
        &announce(vec![65002], "192.0.2.2", &["203.0.113.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert_eq!(
        sent_to(&out, 2).1,
        vec!["203.0.113.0/24".parse::<IpNet>().expect("p")]
    );
    assert_eq!(sent_to(&out, 1).0.len(), 1);
}

#[test]
fn ipv6_routes_carry_an_ipv6_next_hop() {
    let mut r = rib();
    let mut i = info("2001:db8::1", 65001, "2001:db8::100");
    i.router_id = Ipv4Addr::new(10, 0, 0, 1);
    r.peer_up(1, i);
    r.peer_up(2, info("2001:db8::2", 65002, "2001:db8::100"));
    let mut u = announce(vec![65001], "192.0.2.1", &[], vec![]);
    u.attributes.retain(|a| a.type_code() != 3);
    u.attributes.push(PathAttribute::new(AttrValue::MpReach(
        bgpd::wire::attr::MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: bgpd::wire::attr::NextHop::Ipv6 {
                global: "2001:db8::1".parse().expect("ip"),
                link_local: None,
            },
            reserved: 0,
            nlri: bgpd::wire::attr::MpNlri::Prefixes(vec![Nlri::new(
                "2001:db8:100::/48".parse().expect("p"),
            )]),
        },
    )));
    r.update(1, &u, false);
    let out = r.flush();
    let (ann, _) = sent_to(&out, 2);
    let mp = ann[0].1.mp_reach().expect("MP_REACH");
    assert_eq!(mp.next_hop.to_string(), "2001:db8::100");
}

// ---- Graceful restart (RFC 4724) ----

fn prefixes(r: &Rib) -> Vec<String> {
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

#[test]
fn a_restarting_peer_keeps_its_paths_stale_until_end_of_rib() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.1.0.0/24", "10.2.0.0/24"],
            vec![],
        ),
        false,
    );
    let mut v6 = announce(vec![65001], "192.0.2.1", &[], vec![]);
    v6.attributes.retain(|a| a.type_code() != 3);
    v6.attributes.push(PathAttribute::new(AttrValue::MpReach(
        bgpd::wire::attr::MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: bgpd::wire::attr::NextHop::Ipv6 {
                global: "2001:db8::1".parse().expect("ip"),
                link_local: None,
            },
            reserved: 0,
            nlri: bgpd::wire::attr::MpNlri::Prefixes(vec![Nlri::new(
                "2001:db8:1::/48".parse().expect("p"),
            )]),
        },
    )));
    r.update(1, &v6, false);
    r.flush();
    r.fib_changes();
    assert_eq!(r.len(), 3);

    // The session drops; the peer preserved IPv4 only: IPv6 goes at once.
    let kept = r.peer_down_graceful(1, &[AfiSafi::IPV4_UNICAST]);
    assert_eq!(kept, 2);
    assert!(r.is_restarting(1));
    assert_eq!(prefixes(&r), ["10.1.0.0/24", "10.2.0.0/24"]);
    let out = r.flush();
    assert!(out.messages.is_empty(), "nobody else to tell");
    let fib = r.fib_changes();
    assert_eq!(fib.len(), 1, "only the IPv6 route left the FIB: {fib:?}");
    assert_eq!(fib[0].next_hops, None);

    // Back: it announces one of the two again, then End-of-RIB.
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    assert!(!r.is_restarting(1));
    assert_eq!(r.stale_count(1), 2);
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    assert_eq!(r.stale_count(1), 1);
    r.flush();
    assert!(
        r.fib_changes().iter().all(|c| c.next_hops.is_some()),
        "re-announcing a kept path changes nothing in the FIB"
    );
    r.update(1, &Update::end_of_rib(AfiSafi::IPV4_UNICAST), false);
    assert_eq!(r.stale_count(1), 0);
    assert_eq!(prefixes(&r), ["10.1.0.0/24"]);
    let counts = r.counts(1, AfiSafi::IPV4_UNICAST);
    assert_eq!(counts.received, 1, "{counts:?}");
}

#[test]
fn stale_paths_go_when_the_restart_timer_runs_out() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    r.flush();
    r.peer_down_graceful(1, &[AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
    // Peer 2 keeps hearing the stale route: no withdrawal.
    let out = r.flush();
    assert!(sent_to(&out, 2).1.is_empty());
    assert_eq!(r.drop_stale(1, None), 1);
    assert!(!r.is_restarting(1), "nothing left of the peer");
    assert_eq!(r.len(), 0);
    let out = r.flush();
    assert_eq!(sent_to(&out, 2).1, vec![p("10.1.0.0/24")]);
}

#[test]
fn deferred_selection_sends_nothing_until_it_ends() {
    let mut r = rib();
    r.defer();
    assert!(r.deferring());
    let out = r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    assert!(out.messages.is_empty(), "no table and no End-of-RIB yet");
    let out = r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    assert!(out.messages.is_empty());
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    r.update(
        2,
        &announce(vec![65002], "198.51.100.2", &["10.2.0.0/24"], vec![]),
        false,
    );
    assert!(r.flush().messages.is_empty());
    assert!(r.fib_changes().is_empty());
    assert!(r.refresh(1, AfiSafi::IPV4_UNICAST).messages.is_empty());

    let out = r.end_deferral();
    assert!(!r.deferring());
    for (peer, other) in [(1, "10.2.0.0/24"), (2, "10.1.0.0/24")] {
        let msgs = &out
            .messages
            .iter()
            .find(|(id, _)| *id == peer)
            .expect("a table")
            .1;
        let u = decoded(msgs);
        let announced: Vec<IpNet> = u
            .iter()
            .flat_map(|u| u.announced().map(|n| n.prefix))
            .collect();
        assert_eq!(
            announced,
            vec![p(other)],
            "peer {peer} gets the other's route"
        );
        let eors: Vec<AfiSafi> = u.iter().filter_map(Update::as_end_of_rib).collect();
        assert_eq!(eors, vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
    }
    let mut fib: Vec<IpNet> = r.fib_changes().into_iter().map(|c| c.prefix).collect();
    fib.sort();
    assert_eq!(fib, vec![p("10.1.0.0/24"), p("10.2.0.0/24")]);
    // From now on, changes flow as usual.
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.3.0.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert_eq!(sent_to(&out, 2).0.len(), 1);
}

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

// ---- Route reflection (RFC 4456) and ECMP ----

fn client(addr: &str) -> PeerInfo {
    let mut i = info(addr, LOCAL_AS, "192.0.2.100");
    i.rr_client = true;
    i
}

#[test]
fn a_reflector_follows_the_rfc_4456_rules_and_stamps_the_path() {
    let mut r = rib();
    r.peer_up(1, client("192.0.2.1"));
    r.peer_up(2, client("192.0.2.2"));
    r.peer_up(3, info("192.0.2.3", LOCAL_AS, "192.0.2.100"));
    r.peer_up(5, info("192.0.2.5", LOCAL_AS, "192.0.2.100"));
    r.peer_up(4, info("198.51.100.4", 65004, "198.51.100.100"));

    // From a client: to every other internal peer and to external ones.
    r.update(
        1,
        &announce(vec![], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    for peer in [2, 3, 5] {
        let (ann, _) = sent_to(&out, peer);
        assert_eq!(ann.len(), 1, "peer {peer}");
        let u = &ann[0].1;
        assert_eq!(
            attr(u, 9),
            Some(&AttrValue::OriginatorId(Ipv4Addr::new(192, 0, 2, 1))),
            "ORIGINATOR_ID is the client's router ID"
        );
        assert_eq!(
            attr(u, 10),
            Some(&AttrValue::ClusterList(vec![Ipv4Addr::new(10, 0, 0, 100)])),
            "our cluster ID leads the CLUSTER_LIST"
        );
        assert_eq!(
            attr(u, 3),
            Some(&AttrValue::NextHop(Ipv4Addr::new(192, 0, 2, 1))),
            "the next hop is left alone"
        );
    }
    let (ann, _) = sent_to(&out, 4);
    assert_eq!(ann.len(), 1);
    assert!(attr(&ann[0].1, 9).is_none() && attr(&ann[0].1, 10).is_none());
    assert!(sent_to(&out, 1).0.is_empty(), "never back to the source");

    // From a non-client: to clients (and external peers) only.
    r.update(
        3,
        &announce(vec![], "192.0.2.3", &["10.3.0.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert_eq!(sent_to(&out, 1).0.len(), 1);
    assert_eq!(sent_to(&out, 2).0.len(), 1);
    assert!(sent_to(&out, 5).0.is_empty(), "non-client to non-client");
    assert_eq!(sent_to(&out, 4).0.len(), 1);

    // Our cluster ID already in the list: a reflection loop, rejected.
    r.update(
        2,
        &announce(
            vec![],
            "192.0.2.2",
            &["10.2.0.0/24"],
            vec![AttrValue::ClusterList(vec![Ipv4Addr::new(10, 0, 0, 100)])],
        ),
        false,
    );
    assert!(r.get(&"10.2.0.0/24".parse().expect("p")).is_none());
    assert_eq!(r.counts(2, AfiSafi::IPV4_UNICAST).received, 1);
    assert_eq!(r.counts(2, AfiSafi::IPV4_UNICAST).accepted, 0);
}

#[test]
fn equal_paths_form_a_multipath_set_up_to_maximum_paths() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    r.peer_up(3, info("192.0.2.3", 65003, "192.0.2.100"));
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.9.0.0/24"], vec![]),
        false,
    );
    r.update(
        2,
        &announce(vec![65002], "192.0.2.2", &["10.9.0.0/24"], vec![]),
        false,
    );
    // A longer AS path is not equal.
    r.update(
        3,
        &announce(vec![65003, 65100], "192.0.2.3", &["10.9.0.0/24"], vec![]),
        false,
    );
    let p: IpNet = "10.9.0.0/24".parse().expect("p");
    assert_eq!(
        r.fib_next_hops(&p),
        Some(vec![ip("192.0.2.1"), ip("192.0.2.2")])
    );
    r.flush();
    let fib = r.fib_changes();
    assert_eq!(
        fib[0].next_hops,
        Some(vec![ip("192.0.2.1"), ip("192.0.2.2")])
    );

    // A higher MED from the same neighbouring AS is not equal either.
    r.update(
        2,
        &announce(
            vec![65001],
            "192.0.2.2",
            &["10.8.0.0/24"],
            vec![AttrValue::Med(50)],
        ),
        false,
    );
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.8.0.0/24"], vec![]),
        false,
    );
    let p8: IpNet = "10.8.0.0/24".parse().expect("p");
    assert_eq!(r.fib_next_hops(&p8), Some(vec![ip("192.0.2.1")]));

    let mut one = Rib::new(RibConfig {
        maximum_paths: 1,
        ..*r.config()
    });
    one.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    one.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    one.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.9.0.0/24"], vec![]),
        false,
    );
    one.update(
        2,
        &announce(vec![65002], "192.0.2.2", &["10.9.0.0/24"], vec![]),
        false,
    );
    assert_eq!(one.fib_next_hops(&p).map(|v| v.len()), Some(1));
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

// ---- ADD-PATH send (RFC 7911) ----

#[test]
fn add_path_send_gives_a_client_every_path_with_stable_ids() {
    let mut r = rib();
    r.peer_up(1, client("192.0.2.1"));
    r.peer_up(2, client("192.0.2.2"));
    let mut c = client("192.0.2.3");
    c.tx.add_path_ipv4 = true;
    c.add_path_send = Some(usize::MAX);
    r.peer_up(3, c);
    for (peer, nh) in [(1, "192.0.2.1"), (2, "192.0.2.2")] {
        r.update(
            peer,
            &announce(vec![], nh, &["10.99.0.1/32"], vec![]),
            false,
        );
    }
    let out = r.flush();
    let mut ctx = WireContext::modern();
    ctx.add_path_ipv4 = true;
    let decode = |out: &bgpd::rib::Outbound, peer: PeerId| -> Vec<(Option<u32>, Update)> {
        let mut v = Vec::new();
        for (id, msgs) in &out.messages {
            if *id != peer {
                continue;
            }
            for m in msgs.iter() {
                if let Message::Update(u) = Message::decode(m, &ctx).expect("decodes").message {
                    for n in u.announced() {
                        v.push((n.path_id, u.clone()));
                    }
                    for n in u.withdrawn_all() {
                        v.push((n.path_id, Update::default()));
                    }
                }
            }
        }
        v
    };
    let got = decode(&out, 3);
    assert_eq!(got.len(), 2, "both paths: {got:?}");
    let mut ids: Vec<u32> = got.iter().filter_map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "distinct path IDs");
    let mut hops: Vec<String> = got
        .iter()
        .filter_map(|(_, u)| match attr(u, 3) {
            Some(AttrValue::NextHop(a)) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    hops.sort();
    assert_eq!(hops, ["192.0.2.1", "192.0.2.2"]);
    // Peers without ADD-PATH get the best path only (from 1, the lower
    // ORIGINATOR_ID): 2 gets it, 1 gets nothing, not even 2's path.
    assert_eq!(sent_to(&out, 2).0.len(), 1);
    assert!(sent_to(&out, 1).0.is_empty());
    assert_eq!(r.counts(3, AfiSafi::IPV4_UNICAST).advertised, 1);

    // One source withdraws: the client loses that path only, by its ID.
    let from_1 = got
        .iter()
        .find(|(_, u)| attr(u, 3) == Some(&AttrValue::NextHop(Ipv4Addr::new(192, 0, 2, 1))))
        .and_then(|(id, _)| *id)
        .expect("path from 1");
    let wd = Update {
        withdrawn: vec![Nlri::new("10.99.0.1/32".parse().expect("p"))],
        ..Update::default()
    };
    r.update(1, &wd, false);
    let out = r.flush();
    let got = decode(&out, 3);
    assert_eq!(got, vec![(Some(from_1), Update::default())], "{got:?}");
    // Peer 2's path keeps its ID: re-announcing it changes nothing.
    r.update(
        2,
        &announce(vec![], "192.0.2.2", &["10.99.0.1/32"], vec![]),
        false,
    );
    assert!(decode(&r.flush(), 3).is_empty());
}

// ---- Policy ----

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

#[test]
fn import_policy_changes_and_rejects_and_a_new_one_applies_live() {
    let mut r = rib();
    let mut i = info("192.0.2.1", 65001, "192.0.2.100");
    i.import_policy = policy(vec![
        Rule {
            matches: vec![within("10.1.0.0/16", 24)],
            actions: vec![Action::SetLocalPref(300), Action::Accept],
        },
        Rule {
            matches: vec![within("10.2.0.0/16", 24)],
            actions: vec![Action::Reject],
        },
    ]);
    r.peer_up(1, i);
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.1.1.0/24", "10.2.1.0/24", "10.3.1.0/24"],
            vec![],
        ),
        false,
    );
    let best = r
        .best(&"10.1.1.0/24".parse().expect("p"))
        .expect("accepted");
    assert_eq!(best.attrs.local_pref, Some(300));
    assert!(
        r.best(&"10.2.1.0/24".parse().expect("p")).is_none(),
        "rejected"
    );
    let lp3 = r.best(&"10.3.1.0/24".parse().expect("p")).expect("default");
    assert_eq!(lp3.attrs.local_pref, None, "untouched by the default");
    let c = r.counts(1, AfiSafi::IPV4_UNICAST);
    assert_eq!((c.received, c.accepted), (3, 2));

    // A new policy, without the peer sending anything again: 10.2 comes
    // back, 10.1 loses its LOCAL_PREF, 10.3 goes.
    r.set_policies(
        1,
        policy(vec![Rule {
            matches: vec![within("10.3.0.0/16", 24)],
            actions: vec![Action::Reject],
        }]),
        None,
    );
    assert!(r.best(&"10.2.1.0/24".parse().expect("p")).is_some());
    assert_eq!(
        r.best(&"10.1.1.0/24".parse().expect("p"))
            .expect("p")
            .attrs
            .local_pref,
        None
    );
    assert!(r.best(&"10.3.1.0/24".parse().expect("p")).is_none());
    // And with no policy at all, everything the peer sent.
    r.set_policies(1, None, None);
    assert_eq!(r.len(), 3);
    assert_eq!(r.counts(1, AfiSafi::IPV4_UNICAST).accepted, 3);
}

#[test]
fn no_transit_by_default_unless_an_export_rule_accepts() {
    let mut r = rib();
    let mut up = info("192.0.2.1", 65001, "192.0.2.100");
    up.transit = false;
    let mut down = info("198.51.100.2", 65002, "198.51.100.100");
    down.transit = false;
    let ibgp = {
        let mut i = info("192.0.2.3", LOCAL_AS, "192.0.2.100");
        i.transit = false;
        i
    };
    r.peer_up(1, up);
    r.peer_up(2, down);
    r.peer_up(3, ibgp);
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.1.0.0/24", "10.9.0.0/24"],
            vec![],
        ),
        false,
    );
    r.set_local_routes([(
        "10.100.0.0/24".parse().expect("p"),
        Attrs {
            origin: Some(Origin::Igp),
            ..Attrs::default()
        },
    )]);
    let out = r.flush();
    let to_2: Vec<IpNet> = sent_to(&out, 2).0.into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        to_2,
        vec![p("10.100.0.0/24")],
        "our own route only, no transit"
    );
    assert_eq!(sent_to(&out, 3).0.len(), 3, "internal peers get everything");

    // An export rule accepting 10.1.0.0/24 (with a MED and a prepend) lets
    // that one through, live: peer 2 gets exactly it.
    let out = r.set_policies(
        2,
        None,
        policy(vec![Rule {
            matches: vec![Match::Prefix {
                net: p("10.1.0.0/24"),
                ge: None,
                le: None,
            }],
            actions: vec![
                Action::SetMed(7),
                Action::Prepend {
                    asn: None,
                    count: 2,
                },
                Action::Accept,
            ],
        }]),
    );
    let (ann, wd) = sent_to(&out, 2);
    assert!(wd.is_empty());
    assert_eq!(ann.len(), 1, "{ann:?}");
    assert_eq!(ann[0].0, p("10.1.0.0/24"));
    assert_eq!(attr(&ann[0].1, 4), Some(&AttrValue::Med(7)));
    match attr(&ann[0].1, 2) {
        Some(AttrValue::AsPath(path)) => {
            assert_eq!(path.to_string(), "65000 65000 65000 65001")
        }
        other => panic!("{other:?}"),
    }
    // Taking the policy away withdraws it again.
    let out = r.set_policies(2, None, None);
    assert_eq!(sent_to(&out, 2).1, vec![p("10.1.0.0/24")]);
}

// ---- Long-lived graceful restart (RFC 9494) ----

#[test]
fn long_lived_stale_paths_are_least_preferred_and_kept_from_non_llgr_peers() {
    let mut r = rib();
    // Peer 1 would win on AS path length; peer 2 is the fallback.
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    let mut llgr_peer = info("198.51.100.3", 65003, "198.51.100.100");
    llgr_peer.long_lived = true;
    r.peer_up(3, llgr_peer);
    r.peer_up(4, info("203.0.113.4", 65004, "203.0.113.100"));
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.1.0.0/24", "10.7.0.0/24"],
            vec![],
        ),
        false,
    );
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.2.0.0/24"],
            vec![AttrValue::Communities(vec![Community::NO_LLGR])],
        ),
        false,
    );
    r.update(
        2,
        &announce(vec![65002, 65100], "192.0.2.2", &["10.1.0.0/24"], vec![]),
        false,
    );
    r.flush();
    let p1: IpNet = p("10.1.0.0/24");
    assert_eq!(
        r.peer_address(r.best(&p1).expect("best")),
        Some(ip("192.0.2.1"))
    );

    r.peer_down_graceful(1, &[AfiSafi::IPV4_UNICAST]);
    assert_eq!(r.stale_count(1), 3);
    assert_eq!(
        r.counts(1, AfiSafi::IPV4_UNICAST).advertised,
        0,
        "a restarting peer is sent nothing"
    );
    let kept = r.enter_long_lived_stale(1, &[AfiSafi::IPV4_UNICAST]);
    assert_eq!(kept, 2, "the NO_LLGR route goes");
    assert!(r.best(&p("10.2.0.0/24")).is_none());
    // Least preferred: peer 2's longer path wins now.
    assert_eq!(
        r.peer_address(r.best(&p1).expect("best")),
        Some(ip("192.0.2.2"))
    );
    // 10.7 has only the long-lived stale path: kept, marked, and sent only to
    // the peer that negotiated LLGR.
    let stale = r.best(&p("10.7.0.0/24")).expect("kept");
    assert!(stale.attrs.has_community(Community::LLGR_STALE));
    let out = r.flush();
    let (to_3, _) = sent_to(&out, 3);
    let marked = to_3
        .iter()
        .find(|(q, _)| *q == p("10.7.0.0/24"))
        .expect("sent to 3");
    match attr(&marked.1, 8) {
        Some(AttrValue::Communities(c)) => assert!(c.contains(&Community::LLGR_STALE)),
        other => panic!("{other:?}"),
    }
    let (_, wd_4) = sent_to(&out, 4);
    assert!(
        wd_4.contains(&p("10.7.0.0/24")),
        "withdrawn from a non-LLGR peer"
    );
}

#[test]
fn a_group_of_one_keeps_nothing_of_its_own_and_refills_when_joined() {
    let mut r = rib();
    // Peers 1 and 3 share a treatment (same session address): one group.
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    r.flush();
    assert_eq!(r.counts(1, AfiSafi::IPV4_UNICAST).advertised, 0);
    // A change not flushed yet when peer 3 joins peer 1's group.
    r.update(
        2,
        &announce(vec![65002], "198.51.100.2", &["10.2.0.0/24"], vec![]),
        false,
    );
    let out = r.peer_up(3, info("192.0.2.3", 65003, "192.0.2.100"));
    let (to_3, _) = sent_to(&out, 3);
    let mut got: Vec<IpNet> = to_3.iter().map(|(p, _)| *p).collect();
    got.sort();
    assert_eq!(
        got,
        vec![p("10.1.0.0/24"), p("10.2.0.0/24")],
        "3 gets the whole table"
    );
    // 1 hears of the pending change now, and the flush sends nothing twice.
    let (to_1, _) = sent_to(&out, 1);
    assert_eq!(
        to_1.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![p("10.2.0.0/24")]
    );
    let out = r.flush();
    assert!(sent_to(&out, 1).0.is_empty() && sent_to(&out, 3).0.is_empty());
    assert_eq!(r.counts(3, AfiSafi::IPV4_UNICAST).advertised, 2);
    assert_eq!(r.counts(1, AfiSafi::IPV4_UNICAST).advertised, 1);
}

#[test]
fn a_rejected_announcement_is_not_revived_by_a_new_import_policy() {
    let mut r = rib();
    let mut i = info("192.0.2.1", 65001, "192.0.2.100");
    i.import_policy = policy(vec![Rule {
        matches: vec![],
        actions: vec![Action::SetMed(1)],
    }]);
    r.peer_up(1, i);
    r.update(
        1,
        &announce(vec![65001], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    assert!(r.best(&p("10.1.0.0/24")).is_some());
    // The peer replaces it with a looped path: rejected.
    r.update(
        1,
        &announce(vec![65001, LOCAL_AS], "192.0.2.1", &["10.1.0.0/24"], vec![]),
        false,
    );
    assert!(r.best(&p("10.1.0.0/24")).is_none());
    r.set_policies(1, None, None);
    assert!(
        r.best(&p("10.1.0.0/24")).is_none(),
        "the old announcement must stay replaced"
    );
}

#[test]
fn a_family_without_add_path_in_an_add_path_group_replaces_its_one_path() {
    let mut r = rib();
    r.peer_up(1, client("192.0.2.1"));
    r.peer_up(2, client("192.0.2.2"));
    let mut c = client("192.0.2.3");
    // ADD-PATH for IPv6 only; IPv4 routes go the classic way.
    c.tx.add_path_ipv6 = true;
    c.add_path_send = Some(usize::MAX);
    r.peer_up(3, c);
    r.update(
        2,
        &announce(vec![], "192.0.2.2", &["10.5.0.0/24"], vec![]),
        false,
    );
    r.flush();
    // A better path from another source: one announcement, no withdrawal.
    r.update(
        1,
        &announce(
            vec![],
            "192.0.2.1",
            &["10.5.0.0/24"],
            vec![AttrValue::LocalPref(200)],
        ),
        false,
    );
    let out = r.flush();
    let (ann, wd) = sent_to(&out, 3);
    assert_eq!(ann.len(), 1);
    assert!(wd.is_empty(), "{wd:?}");
}

#[test]
fn a_flush_in_slices_sends_what_one_flush_would() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    let prefixes: Vec<String> = (0..10).map(|i| format!("203.0.{i}.0/24")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    r.update(1, &announce(vec![65001], "192.0.2.1", &refs, vec![]), false);
    assert!(r.has_pending());
    let mut sent = Vec::new();
    let mut slices = 0;
    while r.has_pending() {
        let out = r.flush_some(3);
        let (ann, wd) = sent_to(&out, 2);
        assert!(wd.is_empty());
        assert!(ann.len() <= 3, "a slice sent {} prefixes", ann.len());
        sent.extend(ann.into_iter().map(|(p, _)| p.to_string()));
        slices += 1;
        assert!(
            slices <= 4,
            "ten prefixes in slices of three take four flushes"
        );
    }
    assert_eq!(slices, 4);
    sent.sort();
    let mut want = prefixes.clone();
    want.sort();
    assert_eq!(sent, want, "every prefix exactly once");
    // Each slice's best-path changes are there for the FIB, once.
    let mut changed: Vec<String> = r
        .take_best_changes()
        .iter()
        .map(ToString::to_string)
        .collect();
    changed.sort();
    assert_eq!(changed, want);
    assert!(r.flush().messages.is_empty(), "nothing is left over");
}

#[test]
fn unused_attribute_sets_are_swept_a_bounded_step_per_flush() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("198.51.100.2", 65002, "198.51.100.100"));
    // 6000 routes, each with its own attribute set (its own origin AS),
    // passed on to peer 2 with one exported set each.
    let prefixes: Vec<String> = (0..6000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    for (i, p) in prefixes.iter().enumerate() {
        let origin = 100_000 + u32::try_from(i).expect("small");
        r.update(
            1,
            &announce(vec![65001, origin], "192.0.2.1", &[p], vec![]),
            false,
        );
    }
    r.flush();
    let sets = r.attribute_sets();
    assert_eq!(sets, 12_000, "received and exported, one set each");
    let w = Update {
        withdrawn: prefixes
            .iter()
            .map(|p| Nlri::new(p.parse().expect("p")))
            .collect(),
        ..Update::default()
    };
    r.update(1, &w, false);
    let mut freed = 0;
    let mut flushes = 0;
    while r.has_pending() {
        let out = r.flush_some(100);
        assert!(
            out.garbage.len() <= 4096,
            "one step freed {} sets",
            out.garbage.len()
        );
        freed += out.garbage.len();
        flushes += 1;
        assert!(flushes <= 200, "the sweep never ends");
    }
    assert_eq!(freed, sets, "every unused set is handed back");
    assert_eq!(r.attribute_sets(), 0);
    assert_eq!(
        flushes, 62,
        "the withdrawal takes 60 slices and its last starts the sweep; two \
         more finish it, 4096 sets a step"
    );
}

#[test]
fn the_fib_side_can_ask_where_prefixes_forward_now() {
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    r.update(
        1,
        &announce(
            vec![65001],
            "192.0.2.1",
            &["10.1.0.0/24", "10.3.0.0/24"],
            vec![],
        ),
        false,
    );
    r.update(
        2,
        &announce(
            vec![65002],
            "192.0.2.2",
            &["10.2.0.0/24", "10.3.0.0/24"],
            vec![],
        ),
        false,
    );
    r.flush();
    let sorted = |mut v: Vec<bgpd::rib::FibChange>| {
        v.sort_by_key(|c| c.prefix);
        v.into_iter()
            .map(|c| (c.prefix.to_string(), c.next_hops))
            .collect::<Vec<_>>()
    };
    // 10.3 has two equal paths: both next hops, whichever was asked about.
    assert_eq!(
        sorted(r.fib_table(Some(&[ip("192.0.2.2")]))),
        [
            ("10.2.0.0/24".to_string(), Some(vec![ip("192.0.2.2")])),
            (
                "10.3.0.0/24".to_string(),
                Some(vec![ip("192.0.2.1"), ip("192.0.2.2")])
            ),
        ]
    );
    assert_eq!(r.fib_table(None).len(), 3);
    assert!(r.fib_table(Some(&[ip("192.0.2.9")])).is_empty());
    // Asked by prefix (not truncated on purpose): unknown ones get `None`.
    assert_eq!(
        sorted(r.fib_routes(&[p("10.1.0.0/24"), "10.9.0.1/24".parse().expect("p")])),
        [
            ("10.1.0.0/24".to_string(), Some(vec![ip("192.0.2.1")])),
            ("10.9.0.0/24".to_string(), None),
        ]
    );
    // A next hop lost: 10.3 forwards through the other one only.
    r.set_next_hop_reachable(ip("192.0.2.1"), false);
    assert_eq!(
        sorted(r.fib_table(Some(&[ip("192.0.2.1"), ip("192.0.2.2")]))),
        [
            ("10.2.0.0/24".to_string(), Some(vec![ip("192.0.2.2")])),
            ("10.3.0.0/24".to_string(), Some(vec![ip("192.0.2.2")])),
        ]
    );
}
