//! Update groups: shared encodings, groups of one.

use super::*;

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
