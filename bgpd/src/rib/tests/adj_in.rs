//! What peers send: inbound checks, rejected entries, import policies applied live.

use super::*;

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
