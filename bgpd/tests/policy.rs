//! Route policy evaluation: every match and action, and how rules chain.

use bgpd::policy::{Action, Match, Policy, Rule, Verdict};
use bgpd::rib::Attrs;
use bgpd::wire::AfiSafi;
use bgpd::wire::attr::{AsPath, Community, LargeCommunity};
use ipnet::IpNet;

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn attrs() -> Attrs {
    Attrs {
        as_path: AsPath::sequence(vec![65010, 65020, 65030]),
        next_hop: Some("192.0.2.1".parse().expect("ip")),
        communities: vec![Community((65000 << 16) | 1)],
        large_communities: vec![LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2,
        }],
        ..Attrs::default()
    }
}

fn matches(m: Match, prefix: &str) -> bool {
    let pol = Policy {
        name: "t".into(),
        rules: vec![Rule {
            matches: vec![m],
            actions: vec![Action::Reject],
        }],
    };
    pol.evaluate(&p(prefix), &attrs(), 65001).verdict == Verdict::Rejected
}

#[test]
fn prefix_matches_follow_ge_and_le() {
    let m = |ge, le| Match::Prefix {
        net: p("10.0.0.0/8"),
        ge,
        le,
    };
    assert!(matches(m(None, None), "10.0.0.0/8"));
    assert!(!matches(m(None, None), "10.1.0.0/16"), "exact length only");
    assert!(matches(m(None, Some(24)), "10.1.2.0/24"));
    assert!(!matches(m(None, Some(24)), "10.1.2.0/25"));
    assert!(matches(m(Some(24), None), "10.1.2.128/25"));
    assert!(!matches(m(Some(24), None), "10.1.0.0/16"));
    assert!(matches(m(Some(16), Some(24)), "10.1.0.0/16"));
    assert!(
        !matches(m(Some(16), Some(24)), "11.1.0.0/16"),
        "outside the net"
    );
    assert!(
        !matches(m(None, Some(32)), "2001:db8::/32"),
        "another family"
    );
}

#[test]
fn attribute_matches() {
    let c = |a: u32, v: u32| Community((a << 16) | v);
    assert!(matches(Match::Family(AfiSafi::IPV4_UNICAST), "10.0.0.0/8"));
    assert!(!matches(Match::Family(AfiSafi::IPV6_UNICAST), "10.0.0.0/8"));
    assert!(matches(Match::Community(c(65000, 1)), "10.0.0.0/8"));
    assert!(!matches(Match::Community(c(65000, 2)), "10.0.0.0/8"));
    assert!(matches(
        Match::LargeCommunity(LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2
        }),
        "10.0.0.0/8"
    ));
    assert!(matches(Match::AsPathContains(65020), "10.0.0.0/8"));
    assert!(!matches(Match::AsPathContains(65099), "10.0.0.0/8"));
    assert!(matches(Match::OriginAs(65030), "10.0.0.0/8"));
    assert!(
        !matches(Match::OriginAs(65010), "10.0.0.0/8"),
        "the first is the neighbour"
    );
    let len = |min, max| Match::AsPathLength { min, max };
    assert!(matches(len(Some(3), Some(3)), "10.0.0.0/8"));
    assert!(!matches(len(None, Some(2)), "10.0.0.0/8"));
    assert!(!matches(len(Some(4), None), "10.0.0.0/8"));
    assert!(matches(Match::NextHop(p("192.0.2.0/24")), "10.0.0.0/8"));
    assert!(!matches(Match::NextHop(p("198.51.100.0/24")), "10.0.0.0/8"));
}

#[test]
fn actions_chain_until_accept_or_reject() {
    let c = |a: u32, v: u32| Community((a << 16) | v);
    let pol = Policy {
        name: "t".into(),
        rules: vec![
            // Applies, changes, and goes on.
            Rule {
                matches: vec![],
                actions: vec![
                    Action::SetMed(5),
                    Action::AddCommunities(vec![c(65001, 7), c(65000, 1)]),
                    Action::RemoveCommunities(vec![c(65000, 1)]),
                ],
            },
            // Does not apply: the MED is now set, but the community is gone.
            Rule {
                matches: vec![Match::Community(c(65000, 1))],
                actions: vec![Action::Reject],
            },
            Rule {
                matches: vec![Match::Community(c(65001, 7))],
                actions: vec![
                    Action::SetLocalPref(200),
                    Action::Prepend {
                        asn: None,
                        count: 2,
                    },
                    Action::Accept,
                    // Never reached.
                    Action::SetMed(99),
                ],
            },
        ],
    };
    let ev = pol.evaluate(&p("10.0.0.0/8"), &attrs(), 65001);
    assert_eq!(ev.verdict, Verdict::Accepted);
    let a = ev.attrs.expect("changed");
    assert_eq!(a.med, Some(5));
    assert_eq!(a.local_pref, Some(200));
    assert_eq!(a.communities, vec![c(65001, 7)]);
    assert_eq!(a.as_path.to_string(), "65001 65001 65010 65020 65030");

    // Nothing matched and nothing changed: the default, and no copy.
    let none = Policy {
        name: "t".into(),
        rules: vec![Rule {
            matches: vec![Match::AsPathContains(1)],
            actions: vec![Action::Reject],
        }],
    };
    let ev = none.evaluate(&p("10.0.0.0/8"), &attrs(), 65001);
    assert_eq!(ev.verdict, Verdict::Default);
    assert!(ev.attrs.is_none());
}
