//! Export rules end to end: what each kind of peer is sent and with which attributes, reflection, no transit, ADD-PATH.

use super::*;

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
        crate::wire::attr::MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: crate::wire::attr::NextHop::Ipv6 {
                global: "2001:db8::1".parse().expect("ip"),
                link_local: None,
            },
            reserved: 0,
            nlri: crate::wire::attr::MpNlri::Prefixes(vec![Nlri::new(
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
    // The source shares the group's encoding: its route comes back with its
    // own router ID as ORIGINATOR_ID, which it drops (RFC 4456 §8), as FRR's
    // update groups do; one encoding for the group rather than one per source.
    let (back, _) = sent_to(&out, 1);
    assert_eq!(back.len(), 1);
    assert_eq!(
        attr(&back[0].1, 9),
        Some(&AttrValue::OriginatorId(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert!(same_encoding(&out, 1, 2), "one encoding for the clients");

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
    let decode = |out: &Outbound, peer: PeerId| -> Vec<(Option<u32>, Update)> {
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
    // ORIGINATOR_ID): 2 gets it, and so does 1, marked as its own (it drops
    // it), never 2's path.
    assert_eq!(sent_to(&out, 2).0.len(), 1);
    let (back, _) = sent_to(&out, 1);
    assert_eq!(back.len(), 1);
    assert_eq!(
        attr(&back[0].1, 9),
        Some(&AttrValue::OriginatorId(Ipv4Addr::new(192, 0, 2, 1)))
    );
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

/// Whether two peers were handed the very same encoding in a flush.
fn same_encoding(out: &Outbound, a: PeerId, b: PeerId) -> bool {
    let get = |p| out.messages.iter().find(|(id, _)| *id == p).map(|(_, m)| m);
    matches!((get(a), get(b)), (Some(x), Some(y)) if Arc::ptr_eq(x, y))
}

#[test]
fn a_client_whose_route_replaces_one_it_was_sent_gets_the_withdrawal() {
    let mut r = rib();
    r.peer_up(1, client("192.0.2.1"));
    r.peer_up(2, client("192.0.2.2"));
    r.peer_up(3, client("192.0.2.3"));
    let p: IpNet = "10.7.0.0/24".parse().expect("p");
    r.update(
        2,
        &announce(vec![], "192.0.2.2", &["10.7.0.0/24"], vec![]),
        false,
    );
    let out = r.flush();
    assert_eq!(sent_to(&out, 1).0.len(), 1, "1 holds 2's path from us");

    // 1's own path wins (higher LOCAL_PREF): 1 must lose 2's path, so it
    // gets a withdrawal of its own, not its own route back.
    r.update(
        1,
        &announce(
            vec![],
            "192.0.2.1",
            &["10.7.0.0/24"],
            vec![AttrValue::LocalPref(200)],
        ),
        false,
    );
    let out = r.flush();
    let (ann, wd) = sent_to(&out, 1);
    assert!(ann.is_empty(), "nothing announced to the source: {ann:?}");
    assert_eq!(wd, [p]);
    for peer in [2, 3] {
        let (ann, _) = sent_to(&out, peer);
        assert_eq!(ann.len(), 1, "peer {peer}");
        assert_eq!(
            attr(&ann[0].1, 9),
            Some(&AttrValue::OriginatorId(Ipv4Addr::new(192, 0, 2, 1)))
        );
    }
    assert!(same_encoding(&out, 2, 3) && !same_encoding(&out, 1, 2));

    // 1 withdraws: 2's path is best again. 1 and 3 get it in one shared
    // encoding; 2 held 1's path from us, so it gets that withdrawn instead of
    // its own route back.
    let w = Update {
        withdrawn: vec![Nlri::new(p)],
        ..Update::default()
    };
    r.update(1, &w, false);
    let out = r.flush();
    for peer in [1, 3] {
        let (ann, _) = sent_to(&out, peer);
        assert_eq!(ann.len(), 1, "peer {peer}");
        assert_eq!(
            attr(&ann[0].1, 9),
            Some(&AttrValue::OriginatorId(Ipv4Addr::new(192, 0, 2, 2)))
        );
    }
    assert!(same_encoding(&out, 1, 3));
    assert_eq!(sent_to(&out, 2), (vec![], vec![p]));
    assert!(!same_encoding(&out, 2, 3));
}
