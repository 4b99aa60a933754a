//! The decision process: each step in order, unreachable next hops, deterministic MED.

use super::*;

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

#[test]
fn loc_rib_entries_stay_small() {
    // A million of each at a full table: a byte here is a megabyte
    // there, and a third of the table's slots are empty ones.
    assert!(
        std::mem::size_of::<Path>() <= 32,
        "{}",
        std::mem::size_of::<Path>()
    );
    assert!(
        std::mem::size_of::<Dest>() <= 48,
        "{}",
        std::mem::size_of::<Dest>()
    );
}
