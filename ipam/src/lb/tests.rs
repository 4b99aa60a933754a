//! Unit tests of the allocator's rules, and the invariant checker the
//! property test shares.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crds::LabelSelector;

use super::*;

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn pool(name: &str, addresses: &[&str]) -> PoolSpec {
    PoolSpec::new(name, addresses)
}

fn req(name: &str) -> ServiceRequest {
    ServiceRequest::new("default", name)
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn allocator(pools: Vec<PoolSpec>) -> Allocator {
    Allocator::new(pools).expect("valid pools")
}

fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    }
}

fn labels(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

fn tcp(port: u16) -> ServicePort {
    ServicePort {
        protocol: Protocol::Tcp,
        port,
    }
}

/// Assigns and returns the addresses, checking the invariants.
fn assign(a: &mut Allocator, r: &ServiceRequest) -> Vec<IpAddr> {
    let got = a.assign(r).expect("assignment succeeds");
    check_invariants(a).expect("invariants hold");
    assert!(matches!(got, Assignment::Assigned { .. }), "{got:?}");
    got.ips()
}

fn assign_err(a: &mut Allocator, r: &ServiceRequest) -> AllocError {
    let e = a.assign(r).expect_err("assignment fails");
    check_invariants(a).expect("invariants hold");
    assert_eq!(a.assigned(&r.key), None, "a failed Service holds nothing");
    e
}

/// Checks, independently of `Allocator::fit`, that the state obeys the
/// rules: the two indexes agree, every held address is in exactly one
/// accepted pool that may serve its Service, at most one address per family
/// and Service, and every shared address is shared by Services allowed to.
pub(super) fn check_invariants(a: &Allocator) -> Result<(), String> {
    for (ip, holders) in &a.ips {
        if holders.is_empty() {
            return Err(format!("{ip} has an empty holder set"));
        }
        for h in holders {
            let held = a
                .services
                .get(h)
                .ok_or(format!("{ip}: holder {h} unknown"))?;
            if !held.ips.contains(ip) {
                return Err(format!("{ip}: holder {h} does not list it"));
            }
        }
        if holders.len() > 1 {
            let reqs: Vec<&ServiceRequest> =
                holders.iter().map(|h| &a.services[h].request).collect();
            let key = reqs[0].sharing_key.as_deref();
            if key.is_none_or(str::is_empty) || reqs.iter().any(|r| r.sharing_key.as_deref() != key)
            {
                return Err(format!("{ip} shared without one common key: {holders:?}"));
            }
            for (i, x) in reqs.iter().enumerate() {
                for y in &reqs[i + 1..] {
                    if x.ports.iter().any(|p| y.ports.contains(p)) {
                        return Err(format!("{ip}: {} and {} share a port", x.key, y.key));
                    }
                    let ok = match (x.external_traffic_policy, y.external_traffic_policy) {
                        (TrafficPolicy::Cluster, TrafficPolicy::Cluster) => true,
                        (TrafficPolicy::Local, TrafficPolicy::Local) => {
                            !x.selector.is_empty() && x.selector == y.selector
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(format!(
                            "{ip}: {} and {} differ in traffic policy",
                            x.key, y.key
                        ));
                    }
                }
            }
        }
    }
    for (k, held) in &a.services {
        let r = &held.request;
        if r.key != *k {
            return Err(format!("{k} holds the request of {}", r.key));
        }
        if held.ips.is_empty() {
            return Err(format!("{k} is kept with no address"));
        }
        if r.load_balancer_class != a.class {
            return Err(format!(
                "{k} of class {:?} holds addresses",
                r.load_balancer_class
            ));
        }
        let families = r.families();
        for (i, ip) in held.ips.iter().enumerate() {
            if !a.ips.get(ip).is_some_and(|h| h.contains(k)) {
                return Err(format!("{k} lists {ip}, which does not list it"));
            }
            let family = IpFamily::of(ip);
            if held.ips[..i].iter().any(|o| IpFamily::of(o) == family) {
                return Err(format!("{k} holds two {family} addresses"));
            }
            if !families.contains(&family) {
                return Err(format!("{k} holds {ip}, of a family it does not want"));
            }
            if let Some(want) = r.requested_ips.iter().find(|w| IpFamily::of(w) == family)
                && want != ip
            {
                return Err(format!("{k} holds {ip} but asked for {want}"));
            }
            let pools: Vec<&pool::Pool> = a
                .pools
                .iter()
                .filter(|p| {
                    p.ranges
                        .iter()
                        .any(|(rg, _)| rg.start() <= *ip && *ip <= rg.end())
                })
                .collect();
            let [p] = pools.as_slice() else {
                return Err(format!("{k} holds {ip}, in {} pools", pools.len()));
            };
            if p.spec.avoid_buggy_ips
                && let IpAddr::V4(v4) = ip
                && matches!(v4.octets()[3], 0 | 255)
            {
                return Err(format!("{k} holds {ip}, which pool {} avoids", p.spec.name));
            }
            if p.spec
                .service_selector
                .as_ref()
                .is_some_and(|s| !s.matches(&r.labels))
                || p.spec
                    .namespace_selector
                    .as_ref()
                    .is_some_and(|s| !s.matches(&r.namespace_labels))
            {
                return Err(format!(
                    "{k} holds {ip} from pool {}, whose selectors exclude it",
                    p.spec.name
                ));
            }
            if !r.pools.is_empty() && !r.pools.contains(&p.spec.name) {
                return Err(format!(
                    "{k} holds {ip} from pool {}, which it does not name",
                    p.spec.name
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn lowest_address_of_the_first_pool() {
    let mut a = allocator(vec![pool("a", &["192.0.2.10-192.0.2.12"])]);
    assert_eq!(assign(&mut a, &req("s1")), [ip("192.0.2.10")]);
    assert_eq!(assign(&mut a, &req("s2")), [ip("192.0.2.11")]);
    a.release(&key("s1"));
    assert_eq!(
        assign(&mut a, &req("s3")),
        [ip("192.0.2.10")],
        "freed addresses are reused, lowest first"
    );
}

#[test]
fn priority_then_name_decide_the_pool() {
    let mut low = pool("z-low", &["198.51.100.0/30"]);
    low.priority = Some(1);
    let mut high = pool("a-high", &["192.0.2.0/30"]);
    high.priority = Some(9);
    let unset = pool("0-unset", &["203.0.113.0/30"]);
    let mut a = allocator(vec![high, unset, low]);
    for _ in 0..4 {
        let r = req(&format!("s{}", a.services.len()));
        let got = assign(&mut a, &r);
        assert_eq!(a.pool_for(&got[0]), Some("z-low"));
    }
    let r = req("s4");
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.0")], "then priority 9");
    let mut a = allocator(vec![
        pool("b", &["192.0.2.0/30"]),
        pool("a", &["198.51.100.0/30"]),
    ]);
    assert_eq!(
        assign(&mut a, &req("s")),
        [ip("198.51.100.0")],
        "equal priority: by name"
    );
}

#[test]
fn auto_assign_false_serves_only_those_who_ask() {
    let mut special = pool("special", &["203.0.113.0/30"]);
    special.auto_assign = false;
    let mut a = allocator(vec![special, pool("plain", &["192.0.2.0/30"])]);
    assert_eq!(assign(&mut a, &req("auto")), [ip("192.0.2.0")]);
    let mut named = req("named");
    named.pools = vec!["special".into()];
    assert_eq!(assign(&mut a, &named), [ip("203.0.113.0")]);
    let mut pinned = req("pinned");
    pinned.requested_ips = vec![ip("203.0.113.3")];
    assert_eq!(assign(&mut a, &pinned), [ip("203.0.113.3")]);

    let mut only = allocator(vec![{
        let mut p = pool("special", &["203.0.113.0/30"]);
        p.auto_assign = false;
        p
    }]);
    let msg = assign_err(&mut only, &req("x")).to_string();
    assert!(
        msg.contains("LoadBalancerPool special has autoAssign: false"),
        "{msg}"
    );
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("p", &["192.0.2.254-192.0.3.1"]);
    p.avoid_buggy_ips = true;
    let mut a = allocator(vec![p]);
    assert_eq!(assign(&mut a, &req("s1")), [ip("192.0.2.254")]);
    assert_eq!(assign(&mut a, &req("s2")), [ip("192.0.3.1")]);
    assert!(matches!(
        *assign_err(&mut a, &req("s3")).kind,
        AllocErrorKind::Exhausted { .. }
    ));
    let mut asks = req("asks");
    asks.requested_ips = vec![ip("192.0.2.255")];
    let msg = assign_err(&mut a, &asks).to_string();
    assert!(
        msg.contains("ends in .0 or .255") && msg.contains("avoidBuggyIPs"),
        "{msg}"
    );
    // IPv6 has no such addresses.
    let mut p6 = pool("p6", &["2001:db8::ff-2001:db8::100"]);
    p6.avoid_buggy_ips = true;
    let mut a = allocator(vec![p6]);
    let mut r = req("v6");
    r.ip_families = vec![IpFamily::V6];
    assert_eq!(assign(&mut a, &r), [ip("2001:db8::ff")]);
}

#[test]
fn selectors_limit_pools_and_the_error_says_which() {
    let mut by_service = pool("by-service", &["192.0.2.0/30"]);
    by_service.service_selector = Some(selector("tier", "web"));
    let mut by_namespace = pool("by-namespace", &["198.51.100.0/30"]);
    by_namespace.namespace_selector = Some(selector("team", "blue"));
    let mut off = pool("off", &["203.0.113.0/30"]);
    off.disabled = true;
    let v6 = pool("v6", &["2001:db8::/64"]);
    let mut a = allocator(vec![by_service, by_namespace, off, v6]);

    let e = assign_err(&mut a, &req("nobody"));
    let msg = e.to_string();
    assert_eq!(e.reason(), "NoPool");
    for part in [
        "Service default/nobody",
        "no LoadBalancerPool may give it an IPv4 address",
        "LoadBalancerPool by-service has a spec.serviceSelector that does not match",
        "LoadBalancerPool by-namespace has a spec.namespaceSelector that does not match",
        "LoadBalancerPool off is disabled",
        "LoadBalancerPool v6 has no IPv4 addresses",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }

    let mut web = req("web");
    web.labels = labels("tier", "web");
    assert_eq!(assign(&mut a, &web), [ip("192.0.2.0")]);
    let mut blue = req("blue");
    blue.namespace_labels = labels("team", "blue");
    assert_eq!(assign(&mut a, &blue), [ip("198.51.100.0")]);
    // A selector applies to requested addresses too.
    let mut sneaky = req("sneaky");
    sneaky.requested_ips = vec![ip("192.0.2.3")];
    let msg = assign_err(&mut a, &sneaky).to_string();
    assert!(msg.contains("asks for 192.0.2.3, which is in LoadBalancerPool by-service, which has a spec.serviceSelector"), "{msg}");

    let msg = assign_err(&mut allocator(vec![]), &req("alone")).to_string();
    assert!(
        msg.contains("there is no LoadBalancerPool; create one"),
        "{msg}"
    );
}

#[test]
fn named_pools_are_the_only_candidates() {
    let mut a = allocator(vec![
        pool("a", &["192.0.2.0/31"]),
        pool("b", &["198.51.100.0/31"]),
    ]);
    let mut r = req("s");
    r.pools = vec!["b".into()];
    assert_eq!(assign(&mut a, &r), [ip("198.51.100.0")]);
    let mut r2 = req("s2");
    r2.pools = vec!["b".into()];
    assign(&mut a, &r2);
    let mut r3 = req("s3");
    r3.pools = vec!["b".into()];
    let e = assign_err(&mut a, &r3);
    assert_eq!(e.reason(), "PoolExhausted");
    assert!(
        e.to_string()
            .contains("no IPv4 address left in LoadBalancerPool b;"),
        "{e}"
    );

    let mut typo = req("typo");
    typo.pools = vec!["gold".into()];
    let msg = assign_err(&mut a, &typo).to_string();
    assert!(
        msg.contains("petrel.dev/address-pool names LoadBalancerPool gold, which does not exist"),
        "{msg}"
    );

    let mut outside = req("outside");
    outside.pools = vec!["b".into()];
    outside.requested_ips = vec![ip("192.0.2.1")];
    let msg = assign_err(&mut a, &outside).to_string();
    assert!(
        msg.contains("is in LoadBalancerPool a, which is not named in petrel.dev/address-pool"),
        "{msg}"
    );
}

#[test]
fn disabled_pools_keep_what_they_gave() {
    let specs = |disabled| {
        let mut p = pool("p", &["192.0.2.0/30"]);
        p.disabled = disabled;
        vec![p]
    };
    let mut a = allocator(specs(false));
    assert_eq!(assign(&mut a, &req("old")), [ip("192.0.2.0")]);
    let update = a.set_pools(specs(true));
    assert!(update.dropped.is_empty() && update.rejected.is_empty());
    assert_eq!(assign(&mut a, &req("old")), [ip("192.0.2.0")], "kept");
    assert!(matches!(
        *assign_err(&mut a, &req("new")).kind,
        AllocErrorKind::NoPool { .. }
    ));
    let mut pinned = req("pinned");
    pinned.requested_ips = vec![ip("192.0.2.1")];
    assert!(
        assign_err(&mut a, &pinned)
            .to_string()
            .contains("which is disabled")
    );
    let stats = &a.stats()[0];
    assert!(stats.disabled);
    assert_eq!(
        (stats.ipv4.used, stats.ipv4.free, stats.services),
        (1, 3, 1)
    );
}

#[test]
fn load_balancer_class_decides_who_is_served() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let mut r = req("s");
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.0")]);
    r.load_balancer_class = Some("other.example/lb".into());
    assert_eq!(
        a.assign(&r),
        Ok(Assignment::NotOurs {
            released: vec![ip("192.0.2.0")]
        })
    );
    assert_eq!(a.assigned(&r.key), None);
    check_invariants(&a).expect("invariants");

    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]).with_class("petrel.dev/lb");
    assert_eq!(a.class(), Some("petrel.dev/lb"));
    assert!(matches!(
        a.assign(&req("unclassed")),
        Ok(Assignment::NotOurs { .. })
    ));
    let mut ours = req("ours");
    ours.load_balancer_class = Some("petrel.dev/lb".into());
    assert_eq!(assign(&mut a, &ours), [ip("192.0.2.0")]);
}

fn dual_pools() -> Vec<PoolSpec> {
    vec![
        pool("v4", &["192.0.2.0/30"]),
        pool("v6", &["2001:db8::/126"]),
    ]
}

#[test]
fn single_stack_takes_the_first_family() {
    let mut a = allocator(dual_pools());
    assert_eq!(assign(&mut a, &req("default")), [ip("192.0.2.0")]);
    let mut six = req("six");
    six.ip_families = vec![IpFamily::V6, IpFamily::V4];
    assert_eq!(assign(&mut a, &six), [ip("2001:db8::")]);
}

#[test]
fn prefer_dual_stack_takes_what_it_can() {
    let mut a = allocator(dual_pools());
    let mut r = req("dual");
    r.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    r.ip_families = vec![IpFamily::V6, IpFamily::V4];
    assert_eq!(
        assign(&mut a, &r),
        [ip("2001:db8::"), ip("192.0.2.0")],
        "primary first"
    );

    let mut a = allocator(vec![pool("v4", &["192.0.2.0/30"])]);
    let mut r = req("half");
    r.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    let got = a.assign(&r).expect("one family is enough");
    assert_eq!(got.ips(), [ip("192.0.2.0")]);
    let Assignment::Assigned {
        shortfall: Some(e), ..
    } = got
    else {
        panic!("the missing family is explained: {got:?}");
    };
    assert!(e.to_string().contains("IPv6"), "{e}");

    // Once IPv6 can be had it is added; the IPv4 address stays.
    a.set_pools(dual_pools());
    let got = a.assign(&r).expect("both");
    assert_eq!(got.ips(), [ip("192.0.2.0"), ip("2001:db8::")]);
    assert!(
        matches!(got, Assignment::Assigned { changed: true, ref released, .. } if released.is_empty())
    );
}

#[test]
fn require_dual_stack_is_all_or_nothing() {
    let mut a = allocator(vec![pool("v4", &["192.0.2.0/30"])]);
    let mut r = req("strict");
    r.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let e = assign_err(&mut a, &r);
    assert_eq!(e.reason(), "DualStackUnavailable");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "RequireDualStack needs an IPv4 and an IPv6 address, and no IPv6 address can be had"
        ) && msg.contains("PreferDualStack"),
        "{msg}"
    );
    assert_eq!(a.stats()[0].ipv4.used, 0, "the IPv4 address is not kept");

    a.set_pools(dual_pools());
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.0"), ip("2001:db8::")]);
}

#[test]
fn requested_addresses() {
    let mut a = allocator(dual_pools());
    let mut r = req("pinned");
    r.requested_ips = vec![ip("192.0.2.2")];
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.2")]);

    let mut outside = req("outside");
    outside.requested_ips = vec![ip("203.0.113.9")];
    outside.requested_ips_from = RequestedIpsSource::LoadBalancerIp;
    let e = assign_err(&mut a, &outside);
    assert_eq!(e.reason(), "RequestedIPUnusable");
    assert_eq!(
        e.to_string(),
        "Service default/outside: spec.loadBalancerIP asks for 203.0.113.9, which is not inside any LoadBalancerPool"
    );

    let mut taken = req("taken");
    taken.requested_ips = vec![ip("192.0.2.2")];
    let e = assign_err(&mut a, &taken);
    assert_eq!(e.reason(), "RequestedIPInUse");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "petrel.dev/loadBalancerIPs asks for 192.0.2.2, which Service default/pinned holds"
        ),
        "{msg}"
    );
    assert!(msg.contains("petrel.dev/allow-shared-ip"), "{msg}");

    let mut wrong_family = req("wrong-family");
    wrong_family.requested_ips = vec![ip("2001:db8::1")];
    let msg = assign_err(&mut a, &wrong_family).to_string();
    assert!(
        msg.contains("is an IPv6 address and the Service's spec.ipFamilies"),
        "{msg}"
    );

    let mut two = req("two");
    two.requested_ips = vec![ip("192.0.2.0"), ip("192.0.2.1")];
    assert!(
        assign_err(&mut a, &two)
            .to_string()
            .contains("second IPv4 address")
    );

    // A dual-stack Service pinning one family gets the other chosen for it.
    let mut half = req("half");
    half.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    half.requested_ips = vec![ip("2001:db8::3")];
    assert_eq!(assign(&mut a, &half), [ip("192.0.2.0"), ip("2001:db8::3")]);
    // A requested address that cannot be had fails even under PreferDualStack.
    let mut prefer = req("prefer");
    prefer.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    prefer.requested_ips = vec![ip("2001:db8::3")];
    assert_eq!(assign_err(&mut a, &prefer).reason(), "RequestedIPInUse");
}

fn sharer(name: &str, key: Option<&str>, ports: &[u16]) -> ServiceRequest {
    let mut r = req(name);
    r.sharing_key = key.map(str::to_string);
    r.ports = ports.iter().map(|p| tcp(*p)).collect();
    r
}

#[test]
fn sharing_needs_the_same_key_and_distinct_ports() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let mut http = sharer("http", Some("web"), &[80]);
    http.requested_ips = vec![ip("192.0.2.1")];
    assign(&mut a, &http);
    let mut https = sharer("https", Some("web"), &[443]);
    https.requested_ips = vec![ip("192.0.2.1")];
    assert_eq!(assign(&mut a, &https), [ip("192.0.2.1")]);
    assert_eq!(a.holders(&ip("192.0.2.1")), [&key("http"), &key("https")]);

    let mut udp = sharer("dns-udp", Some("web"), &[]);
    udp.ports = vec![ServicePort {
        protocol: Protocol::Udp,
        port: 443,
    }];
    udp.requested_ips = vec![ip("192.0.2.1")];
    assert_eq!(
        assign(&mut a, &udp),
        [ip("192.0.2.1")],
        "same port, other protocol"
    );

    let cases = [
        (
            sharer("clash", Some("web"), &[443]),
            "both use port 443/TCP",
        ),
        (
            sharer("other-key", Some("db"), &[5432]),
            "keys differ (\"db\" here, \"web\" there)",
        ),
        (
            sharer("no-key", None, &[22]),
            "this Service has no petrel.dev/allow-shared-ip",
        ),
    ];
    for (mut r, why) in cases {
        r.requested_ips = vec![ip("192.0.2.1")];
        let msg = assign_err(&mut a, &r).to_string();
        assert!(
            msg.contains("which Service default/") && msg.contains(why),
            "{why:?} missing from {msg}"
        );
    }

    // Release keeps a shared address until the last holder leaves.
    assert_eq!(a.release(&key("http")), [ip("192.0.2.1")]);
    assert_eq!(a.stats()[0].ipv4.used, 1);
    a.release(&key("https"));
    a.release(&key("dns-udp"));
    assert_eq!(a.stats()[0].ipv4.used, 0);
    check_invariants(&a).expect("invariants");
}

#[test]
fn a_keyless_holder_shares_with_nobody() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    assign(&mut a, &sharer("alone", None, &[80]));
    let mut r = sharer("keyed", Some("k"), &[443]);
    r.requested_ips = vec![ip("192.0.2.0")];
    assert!(
        assign_err(&mut a, &r)
            .to_string()
            .contains("the holder has no petrel.dev/allow-shared-ip")
    );
}

#[test]
fn a_sharing_key_finds_its_address_without_asking() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/29"])]);
    assign(&mut a, &req("first"));
    assert_eq!(
        assign(&mut a, &sharer("tcp", Some("dns"), &[53])),
        [ip("192.0.2.1")]
    );
    a.release(&key("first"));
    let mut udp = sharer("udp", Some("dns"), &[]);
    udp.ports = vec![ServicePort {
        protocol: Protocol::Udp,
        port: 53,
    }];
    assert_eq!(
        assign(&mut a, &udp),
        [ip("192.0.2.1")],
        "joins the key's address, not the lower free one"
    );
    assert_eq!(
        assign(&mut a, &sharer("tcp2", Some("dns"), &[53])),
        [ip("192.0.2.0")],
        "port clash: a fresh address"
    );
}

#[test]
fn local_traffic_policy_shares_only_the_same_pods() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let local = |name: &str, port: u16, app: &str| {
        let mut r = sharer(name, Some("k"), &[port]);
        r.external_traffic_policy = TrafficPolicy::Local;
        if !app.is_empty() {
            r.selector = labels("app", app);
        }
        r.requested_ips = vec![ip("192.0.2.0")];
        r
    };
    assign(&mut a, &local("a", 80, "web"));
    assert_eq!(assign(&mut a, &local("b", 81, "web")), [ip("192.0.2.0")]);
    let msg = assign_err(&mut a, &local("c", 82, "db")).to_string();
    assert!(msg.contains("different spec.selector"), "{msg}");
    let msg = assign_err(&mut a, &local("d", 83, "")).to_string();
    assert!(msg.contains("has no spec.selector"), "{msg}");
    let mut cluster = sharer("e", Some("k"), &[84]);
    cluster.requested_ips = vec![ip("192.0.2.0")];
    let msg = assign_err(&mut a, &cluster).to_string();
    assert!(
        msg.contains("one has externalTrafficPolicy Local and the other Cluster"),
        "{msg}"
    );
}

#[test]
fn reassigning_changes_nothing() {
    let mut a = allocator(dual_pools());
    let mut r = req("s");
    r.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let first = a.assign(&r).expect("assigned");
    let again = a.assign(&r).expect("assigned");
    assert_eq!(first.ips(), again.ips());
    assert!(
        matches!(again, Assignment::Assigned { changed: false, ref released, shortfall: None, .. } if released.is_empty())
    );
    let Assignment::Assigned { ips, .. } = again else {
        panic!("assigned")
    };
    assert_eq!(ips[0].pool, "v4");
    assert_eq!(ips[1].pool, "v6");
}

#[test]
fn a_better_pool_appearing_moves_nobody() {
    let mut a = allocator(vec![pool("b", &["198.51.100.0/30"])]);
    let before = assign(&mut a, &req("s"));
    let mut better = pool("a", &["192.0.2.0/30"]);
    better.priority = Some(0);
    let update = a.set_pools(vec![better, pool("b", &["198.51.100.0/30"])]);
    assert!(update.dropped.is_empty());
    assert_eq!(assign(&mut a, &req("s")), before);
    assert_eq!(assign(&mut a, &req("new")), [ip("192.0.2.0")]);
}

#[test]
fn request_changes_move_only_what_no_longer_fits() {
    let mut a = allocator(vec![
        pool("a", &["192.0.2.0/30"]),
        pool("b", &["198.51.100.0/30"]),
        pool("v6", &["2001:db8::/126"]),
    ]);
    let mut r = req("s");
    r.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.0"), ip("2001:db8::")]);

    // A new requested address replaces the old one of its family only.
    r.requested_ips = vec![ip("192.0.2.3")];
    let got = a.assign(&r).expect("moves");
    assert_eq!(got.ips(), [ip("192.0.2.3"), ip("2001:db8::")]);
    assert!(
        matches!(got, Assignment::Assigned { changed: true, ref released, .. } if *released == [ip("192.0.2.0")])
    );

    // Naming another pool moves the address there.
    r.requested_ips.clear();
    r.pools = vec!["b".into(), "v6".into()];
    assert_eq!(assign(&mut a, &r), [ip("198.51.100.0"), ip("2001:db8::")]);

    // Back to SingleStack: the IPv6 address goes.
    r.ip_family_policy = IpFamilyPolicy::SingleStack;
    assert_eq!(assign(&mut a, &r), [ip("198.51.100.0")]);
    assert_eq!(a.stats()[2].ipv6.used, 0);
}

#[test]
fn a_sharer_whose_ports_start_to_clash_moves_alone() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let mut x = sharer("x", Some("k"), &[80]);
    let mut y = sharer("y", Some("k"), &[443]);
    assert_eq!(assign(&mut a, &x), [ip("192.0.2.0")]);
    assert_eq!(assign(&mut a, &y), [ip("192.0.2.0")]);
    y.ports = vec![tcp(80)];
    assert_eq!(assign(&mut a, &y), [ip("192.0.2.1")], "y moves");
    assert_eq!(assign(&mut a, &x), [ip("192.0.2.0")], "x stays");
    // A key change that breaks sharing moves too.
    x.ports = vec![tcp(8080)];
    assign(&mut a, &x);
    y.ports = vec![tcp(443)];
    y.requested_ips = vec![ip("192.0.2.0")];
    assert_eq!(assign(&mut a, &y), [ip("192.0.2.0")]);
    y.sharing_key = Some("other".into());
    y.requested_ips.clear();
    assert_eq!(assign(&mut a, &y), [ip("192.0.2.1")]);
}

#[test]
fn failed_assignment_releases_everything() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let mut r = req("s");
    assign(&mut a, &r);
    r.pools = vec!["missing".into()];
    assert_eq!(assign_err(&mut a, &r).reason(), "UnknownPool");
    assert_eq!(a.stats()[0].ipv4.used, 0);
}

#[test]
fn set_pools_drops_addresses_that_no_longer_fit() {
    let mut a = allocator(vec![
        pool("a", &["192.0.2.0/24"]),
        pool("b", &["198.51.100.0/30"]),
    ]);
    let mut keep = req("keep");
    keep.requested_ips = vec![ip("192.0.2.1")];
    let mut zero = req("zero");
    zero.requested_ips = vec![ip("192.0.2.0")];
    let mut far = req("far");
    far.requested_ips = vec![ip("192.0.2.200")];
    let mut web = req("web");
    web.pools = vec!["b".into()];
    for r in [&keep, &zero, &far, &web] {
        assign(&mut a, r);
    }

    let mut shrunk = pool("a", &["192.0.2.0/25"]);
    shrunk.avoid_buggy_ips = true;
    let mut reselected = pool("b", &["198.51.100.0/30"]);
    reselected.service_selector = Some(selector("tier", "web"));
    let update = a.set_pools(vec![shrunk, reselected, pool("c", &["192.0.2.100/32"])]);
    check_invariants(&a).expect("invariants");
    let dropped: Vec<(String, IpAddr)> = update
        .dropped
        .iter()
        .map(|d| (d.service.name.clone(), d.ip))
        .collect();
    assert_eq!(
        dropped,
        [
            ("far".to_string(), ip("192.0.2.200")),
            ("web".to_string(), ip("198.51.100.0")),
            ("zero".to_string(), ip("192.0.2.0")),
        ]
    );
    let msgs: Vec<String> = update.dropped.iter().map(ToString::to_string).collect();
    assert!(msgs[0].contains("Service default/far: LoadBalancer IP 192.0.2.200 released because it is not inside any LoadBalancerPool"), "{}", msgs[0]);
    assert!(msgs[1].contains("spec.serviceSelector"), "{}", msgs[1]);
    assert!(msgs[2].contains("avoidBuggyIPs"), "{}", msgs[2]);
    assert_eq!(update.rejected.len(), 1, "c overlaps a");
    assert_eq!(update.rejected[0].pool(), "c");
    assert_eq!(
        a.assigned(&key("keep")).expect("kept")[0].ip,
        ip("192.0.2.1")
    );
    // The controller then assigns again: far's address is gone for good.
    assert!(matches!(
        *assign_err(&mut a, &far).kind,
        AllocErrorKind::RequestedIpUnusable { .. }
    ));

    let update = a.set_pools(vec![]);
    assert_eq!(update.dropped.len(), 1);
    assert!(a.services.is_empty() && a.ips.is_empty());
}

#[test]
fn new_refuses_bad_pools() {
    let e = Allocator::new(vec![
        pool("b", &["192.0.2.0/24"]),
        pool("a", &["192.0.2.128/25"]),
    ])
    .expect_err("overlap");
    assert_eq!(e.pool(), "b");
    assert!(Allocator::new(vec![pool("r", &["192.0.2.9-192.0.2.1"])]).is_err());
}

#[test]
fn restore_keeps_the_older_claim() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let mut young = req("a-young");
    young.created_at = Some(200);
    let mut old = req("z-old");
    old.created_at = Some(100);
    let dropped = a.restore([
        (young.clone(), vec![ip("192.0.2.1")]),
        (old.clone(), vec![ip("192.0.2.1")]),
    ]);
    check_invariants(&a).expect("invariants");
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].service, young.key);
    let msg = dropped[0].to_string();
    assert!(msg.contains("Service default/a-young: LoadBalancer IP 192.0.2.1 released because it is held by Service default/z-old"), "{msg}");
    assert_eq!(a.holders(&ip("192.0.2.1")), [&old.key]);
    // Assigning afterwards keeps the winner and moves the loser.
    assert_eq!(assign(&mut a, &old), [ip("192.0.2.1")]);
    assert_eq!(assign(&mut a, &young), [ip("192.0.2.0")]);
}

#[test]
fn restore_without_timestamps_goes_by_name() {
    let mut a = allocator(vec![pool("p", &["192.0.2.0/30"])]);
    let dropped = a.restore([
        (req("b"), vec![ip("192.0.2.1")]),
        (req("a"), vec![ip("192.0.2.1")]),
    ]);
    assert_eq!(dropped[0].service, key("b"));
}

#[test]
fn restore_keeps_compatible_sharers_and_drops_the_unfit() {
    let mut a = allocator(dual_pools());
    let x = sharer("x", Some("k"), &[80]);
    let y = sharer("y", Some("k"), &[443]);
    let mut dual = req("dual");
    dual.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let mut pinned = req("pinned");
    pinned.requested_ips = vec![ip("192.0.2.3")];
    let mut other = req("other-class");
    other.load_balancer_class = Some("x.example/lb".into());
    let dropped = a.restore([
        (x.clone(), vec![ip("192.0.2.0")]),
        (y.clone(), vec![ip("192.0.2.0")]),
        (
            dual.clone(),
            vec![ip("2001:db8::1"), ip("192.0.2.1"), ip("192.0.2.2")],
        ),
        (req("stray"), vec![ip("203.0.113.1")]),
        (req("v6-on-v4"), vec![ip("2001:db8::2")]),
        (pinned.clone(), vec![ip("192.0.2.2")]),
        (other, vec![ip("192.0.2.3")]),
    ]);
    check_invariants(&a).expect("invariants");
    assert_eq!(a.holders(&ip("192.0.2.0")), [&x.key, &y.key]);
    assert_eq!(
        a.assigned(&dual.key)
            .expect("restored")
            .iter()
            .map(|a| a.ip)
            .collect::<Vec<_>>(),
        [ip("192.0.2.1"), ip("2001:db8::1")],
        "primary family first"
    );
    let why: BTreeMap<String, Unfit> = dropped
        .into_iter()
        .map(|d| (d.service.name, d.reason))
        .collect();
    assert_eq!(why["dual"], Unfit::SecondOfFamily(IpFamily::V4));
    assert_eq!(why["stray"], Unfit::NotInAnyPool);
    assert_eq!(why["v6-on-v4"], Unfit::FamilyNotWanted(IpFamily::V6));
    assert_eq!(why["pinned"], Unfit::NotRequested(ip("192.0.2.3")));
    assert_eq!(why.len(), 4, "{why:?}");
    assert_eq!(
        a.holders(&ip("192.0.2.3")),
        Vec::<&ServiceKey>::new(),
        "another class is not restored"
    );

    // Restored Services keep their addresses on assign.
    assert_eq!(assign(&mut a, &x), [ip("192.0.2.0")]);
    assert_eq!(assign(&mut a, &dual), [ip("192.0.2.1"), ip("2001:db8::1")]);
    assert_eq!(assign(&mut a, &pinned), [ip("192.0.2.3")]);
}

#[test]
fn restore_keeps_addresses_of_disabled_and_manual_pools() {
    let mut off = pool("off", &["192.0.2.0/30"]);
    off.disabled = true;
    let mut manual = pool("manual", &["198.51.100.0/30"]);
    manual.auto_assign = false;
    let mut a = allocator(vec![off, manual]);
    let dropped = a.restore([
        (req("s1"), vec![ip("192.0.2.1")]),
        (req("s2"), vec![ip("198.51.100.1")]),
    ]);
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(assign(&mut a, &req("s1")), [ip("192.0.2.1")]);
    assert_eq!(assign(&mut a, &req("s2")), [ip("198.51.100.1")]);
}

#[test]
fn stats_count_without_enumerating() {
    let mut v4 = pool("v4", &["10.0.0.0/22"]);
    v4.avoid_buggy_ips = true;
    let mut a = allocator(vec![v4, pool("v6", &["2001:db8::/64", "2001:db8:1::/64"])]);
    let mut r = req("s");
    r.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    assign(&mut a, &r);
    let stats = a.stats();
    assert_eq!(stats[0].name, "v4");
    assert_eq!(
        stats[0].ipv4,
        FamilyStats {
            size: 1016,
            used: 1,
            free: 1015
        }
    );
    assert_eq!(stats[0].ipv6, FamilyStats::default());
    let two_64s = 2u128 << 64;
    assert_eq!(
        stats[1].ipv6,
        FamilyStats {
            size: two_64s,
            used: 1,
            free: two_64s - 1
        }
    );
    assert_eq!(stats[1].services, 1);

    let a = allocator(vec![pool("all", &["::/0"])]);
    assert_eq!(a.stats()[0].ipv6.free, u128::MAX, "saturates");
}

#[test]
fn a_thousand_dual_stack_services_get_unique_addresses() {
    let mut a = allocator(vec![
        pool("v4", &["10.0.0.0/22"]),
        pool("v6", &["2001:db8::/64"]),
    ]);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..1000 {
        let mut r = req(&format!("s{i}"));
        r.ip_family_policy = IpFamilyPolicy::RequireDualStack;
        let got = a.assign(&r).expect("room for all").ips();
        assert_eq!(got.len(), 2);
        assert!(
            got.iter().all(|ip| seen.insert(*ip)),
            "{got:?} handed out twice"
        );
    }
    check_invariants(&a).expect("invariants");
    let stats = a.stats();
    assert_eq!(stats[0].ipv4.free, 24);
    assert_eq!(stats[1].ipv6.free, (1u128 << 64) - 1000);
    assert_eq!(seen.last(), Some(&ip("2001:db8::3e7")));
}

#[test]
fn parse_then_assign() {
    let mut raw = RawService {
        namespace: "shop".into(),
        name: "web".into(),
        ..RawService::default()
    };
    raw.annotations
        .insert(ANNOTATION_LOAD_BALANCER_IPS.into(), "192.0.2.9".into());
    let r = ServiceRequest::parse(&raw).expect("parses");
    let mut a = allocator(vec![pool("p", &["192.0.2.0/28"])]);
    assert_eq!(assign(&mut a, &r), [ip("192.0.2.9")]);
}
