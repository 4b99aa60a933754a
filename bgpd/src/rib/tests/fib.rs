//! The FIB view: multipath sets and where prefixes forward.

use super::*;

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
    let sorted = |mut v: Vec<crate::rib::FibChange>| {
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
