//! Flushing and encoding: a new peer's table, flushes in slices.

use super::*;

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
