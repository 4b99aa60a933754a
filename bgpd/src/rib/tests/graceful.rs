//! Graceful restart (RFC 4724) and long-lived graceful restart (RFC 9494), and deferred selection.

use super::*;

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
        crate::wire::attr::MpReach {
            afi_safi: AfiSafi::IPV6_UNICAST,
            next_hop: crate::wire::attr::NextHop::Ipv6 {
                global: "2001:db8::1".parse().expect("ip"),
                link_local: None,
            },
            reserved: 0,
            nlri: crate::wire::attr::MpNlri::Prefixes(vec![Nlri::new(
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

/// The path count a summary reads is kept, not walked: it stays equal to
/// the table's through announcements, replacements, withdrawals, our own
/// routes, a graceful restart and a peer going.
#[test]
fn the_kept_path_count_follows_every_change() {
    let walked = |r: &Rib| r.iter().map(|(_, d)| d.paths.len()).sum::<usize>();
    let mut r = rib();
    r.peer_up(1, info("192.0.2.1", 65001, "192.0.2.100"));
    r.peer_up(2, info("192.0.2.2", 65002, "192.0.2.100"));
    type Step = Box<dyn Fn(&mut Rib)>;
    let steps: Vec<Step> = vec![
        Box::new(|r| {
            r.update(
                1,
                &announce(
                    vec![65001],
                    "192.0.2.1",
                    &["10.1.0.0/24", "10.2.0.0/24"],
                    vec![],
                ),
                false,
            )
        }),
        Box::new(|r| {
            r.update(
                2,
                &announce(vec![65002], "192.0.2.2", &["10.1.0.0/24"], vec![]),
                false,
            )
        }),
        // The same prefix again with other attributes: a replacement.
        Box::new(|r| {
            r.update(
                1,
                &announce(vec![65001, 65009], "192.0.2.1", &["10.1.0.0/24"], vec![]),
                false,
            )
        }),
        Box::new(|r| {
            let w = Update {
                withdrawn: vec![Nlri::new(p("10.2.0.0/24"))],
                ..Update::default()
            };
            r.update(1, &w, false)
        }),
        Box::new(|r| {
            let a = attrs(|_| {});
            r.set_local_routes(vec![
                (p("10.1.0.0/24"), (*a).clone()),
                (p("10.9.0.0/24"), (*a).clone()),
            ]);
        }),
        Box::new(|r| {
            r.set_local_routes(Vec::new());
        }),
        Box::new(|r| {
            let _ = r.peer_down_graceful(1, &[AfiSafi::IPV4_UNICAST]);
        }),
        Box::new(|r| {
            let _ = r.drop_stale(1, None);
        }),
        Box::new(|r| {
            r.peer_down(2);
        }),
    ];
    for (k, step) in steps.iter().enumerate() {
        step(&mut r);
        assert_eq!(r.path_count(), walked(&r), "after step {k}");
    }
    assert_eq!(r.path_count(), 0);
}
