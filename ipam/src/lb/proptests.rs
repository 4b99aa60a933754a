//! Property test: random sequences of assign, release, set_pools and restore
//! over small, overlapping-prone pools never hand an address to two
//! Services that may not share it, and only ever hand out addresses the
//! rules allow.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crds::LabelSelector;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

use super::tests::{check_invariants, ip};
use super::*;

/// Address segments pools are built from. Some overlap (so pools get
/// refused), one crosses a .255/.0 boundary (for avoid_buggy_ips).
const SEGMENTS: &[&str] = &[
    "10.0.0.250-10.0.1.5",
    "10.0.2.0/29",
    "10.0.2.4-10.0.2.11",
    "10.0.3.0/30",
    "10.0.4.0/31",
    "fd00::/126",
    "fd00::1:0/125",
    "fd00::2-fd00::5",
    "fd00::3:0/127",
];

/// Addresses requests and restores pick from: inside the segments, and
/// outside every one.
fn addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for seg in SEGMENTS {
        let range: AddressRange = seg.parse().expect("segment");
        let start = pool::to_u128(range.start());
        for i in 0..range.size().min(12) {
            out.push(pool::from_u128(range.family(), start + i));
        }
    }
    out.push(ip("10.9.9.9"));
    out.push(ip("fd00::9:9"));
    out.sort();
    out.dedup();
    out
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), "a".to_string())])),
        match_expressions: None,
    }
}

fn pool_spec(name: &'static str) -> impl Strategy<Value = PoolSpec> {
    (
        subsequence(SEGMENTS, 1..=2),
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::option::of(0u32..3),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::option::of(0i64..3),
    )
        .prop_map(
            move |(segs, auto_assign, avoid, priority, by_service, by_ns, disabled, created)| {
                PoolSpec {
                    name: name.to_string(),
                    created_at: created,
                    addresses: segs.iter().map(|s| s.to_string()).collect(),
                    auto_assign,
                    avoid_buggy_ips: avoid,
                    priority,
                    service_selector: by_service.then(selector),
                    namespace_selector: by_ns.then(|| LabelSelector {
                        match_labels: Some(BTreeMap::from([("team".into(), "x".into())])),
                        match_expressions: None,
                    }),
                    disabled,
                }
            },
        )
}

/// Up to one pool per name, most of the time, and now and then a second
/// definition of a name.
fn pools() -> impl Strategy<Value = Vec<PoolSpec>> {
    (
        prop::option::weighted(0.8, pool_spec("p0")),
        prop::option::weighted(0.8, pool_spec("p1")),
        prop::option::weighted(0.8, pool_spec("p2")),
        prop::option::weighted(0.8, pool_spec("p3")),
        prop::option::weighted(0.1, pool_spec("p1")),
    )
        .prop_map(|(a, b, c, d, e)| [a, b, c, d, e].into_iter().flatten().collect())
}

fn request() -> impl Strategy<Value = ServiceRequest> {
    let ports = [
        ServicePort {
            protocol: Protocol::Tcp,
            port: 80,
        },
        ServicePort {
            protocol: Protocol::Tcp,
            port: 443,
        },
        ServicePort {
            protocol: Protocol::Udp,
            port: 53,
        },
    ];
    let families: Vec<Vec<IpFamily>> = vec![
        vec![],
        vec![IpFamily::V4],
        vec![IpFamily::V6],
        vec![IpFamily::V4, IpFamily::V6],
        vec![IpFamily::V6, IpFamily::V4],
    ];
    (
        (
            0usize..6,
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.1),
        ),
        (
            select(vec![
                IpFamilyPolicy::SingleStack,
                IpFamilyPolicy::PreferDualStack,
                IpFamilyPolicy::RequireDualStack,
            ]),
            select(families),
            prop::option::weighted(0.25, prop::collection::vec(select(addresses()), 1..=2)),
            prop::option::weighted(
                0.2,
                subsequence(vec!["p0", "p1", "p2", "p3", "p0", "p1", "p9"], 1..=2),
            ),
        ),
        (
            prop::option::weighted(0.6, select(vec!["k1", "k1", "k2"])),
            subsequence(ports.to_vec(), 0..=2),
            any::<bool>(),
            select(vec!["", "a", "b"]),
            prop::option::of(0i64..3),
        ),
    )
        .prop_map(
            |(
                (n, app_a, team_x, other_class),
                (policy, families, requested, pools),
                (key, ports, local, app_selector, created),
            )| {
                let mut r = ServiceRequest::new(format!("ns{}", n % 2), format!("s{n}"));
                r.created_at = created;
                r.labels = BTreeMap::from([("app".into(), if app_a { "a" } else { "b" }.into())]);
                r.namespace_labels =
                    BTreeMap::from([("team".into(), if team_x { "x" } else { "y" }.into())]);
                r.load_balancer_class = other_class.then(|| "other.example/lb".into());
                r.ip_family_policy = policy;
                r.ip_families = families;
                r.requested_ips = requested.unwrap_or_default();
                r.pools = pools
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                r.sharing_key = key.map(str::to_string);
                r.ports = ports;
                if local {
                    r.external_traffic_policy = TrafficPolicy::Local;
                }
                if !app_selector.is_empty() {
                    r.selector = BTreeMap::from([("app".into(), app_selector.into())]);
                }
                r
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Assign(Box<ServiceRequest>),
    Release(usize),
    SetPools(Vec<PoolSpec>),
    Restore(Vec<(ServiceRequest, Vec<IpAddr>)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => request().prop_map(|r| Op::Assign(Box::new(r))),
        1 => (0usize..8).prop_map(Op::Release),
        1 => pools().prop_map(Op::SetPools),
        1 => prop::collection::vec(
            (request(), prop::collection::vec(select(addresses()), 0..=3)),
            0..=4
        )
        .prop_map(Op::Restore),
    ]
}

fn held(a: &Allocator, key: &ServiceKey) -> Vec<IpAddr> {
    a.assigned(key)
        .unwrap_or_default()
        .into_iter()
        .map(|x| x.ip)
        .collect()
}

fn check_stats(a: &Allocator) -> Result<(), TestCaseError> {
    let mut used = 0;
    for s in a.stats() {
        for f in [s.ipv4, s.ipv6] {
            prop_assert_eq!(f.used + f.free, f.size, "pool {}", s.name);
            used += f.used;
        }
    }
    prop_assert_eq!(used, a.ips.len() as u128, "every held address is in a pool");
    Ok(())
}

fn key_of(n: usize) -> ServiceKey {
    ServiceKey::new(format!("ns{}", n % 2), format!("s{n}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn never_twice_and_only_where_allowed(
        initial in pools(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut a = Allocator::default();
        a.set_pools(initial);
        for op in ops {
            match op {
                Op::Assign(r) => {
                    let before = held(&a, &r.key);
                    let result = a.assign(&r);
                    match &result {
                        Ok(Assignment::Assigned { ips, .. }) => {
                            for x in ips {
                                if before.contains(&x.ip) {
                                    continue;
                                }
                                // A new address comes from an enabled pool the
                                // Service may take from unasked, or was named.
                                let p = a.pools.iter().find(|p| p.name() == x.pool);
                                let p = p.ok_or_else(|| TestCaseError::fail("unknown pool"))?;
                                prop_assert!(!p.spec.disabled, "{} from disabled pool {}", x.ip, x.pool);
                                prop_assert!(
                                    p.spec.auto_assign || !r.pools.is_empty() || r.requested_ips.contains(&x.ip),
                                    "{} from pool {} without autoAssign", x.ip, x.pool
                                );
                                prop_assert!(!(p.spec.avoid_buggy_ips && is_buggy(&x.ip)));
                            }
                            prop_assert_eq!(held(&a, &r.key), result.as_ref().map(Assignment::ips).unwrap_or_default());
                            if r.ip_family_policy == IpFamilyPolicy::RequireDualStack {
                                prop_assert_eq!(ips.len(), 2);
                            }
                            // Idempotent.
                            let again = a.assign(&r);
                            let same = matches!(&again, Ok(Assignment::Assigned { changed: false, ips: i, .. }) if i == ips);
                            prop_assert!(same, "second assign differs: {:?} then {:?}", result, again);
                        }
                        Ok(Assignment::NotOurs { .. }) => {
                            prop_assert!(r.load_balancer_class.is_some());
                            prop_assert!(a.assigned(&r.key).is_none());
                        }
                        Err(e) => {
                            prop_assert!(a.assigned(&r.key).is_none(), "{e}");
                            prop_assert_eq!(&e.service, &r.key);
                        }
                    }
                }
                Op::Release(n) => {
                    let key = key_of(n);
                    let released = a.release(&key);
                    prop_assert!(a.assigned(&key).is_none());
                    for ip in released {
                        prop_assert!(!a.holders(&ip).contains(&&key));
                    }
                }
                Op::SetPools(specs) => {
                    let before: BTreeMap<ServiceKey, Vec<IpAddr>> =
                        a.services.iter().map(|(k, h)| (k.clone(), h.ips.clone())).collect();
                    let update = a.set_pools(specs);
                    for (k, ips) in before {
                        let kept: Vec<IpAddr> = ips
                            .into_iter()
                            .filter(|ip| !update.dropped.iter().any(|d| d.service == k && d.ip == *ip))
                            .collect();
                        prop_assert_eq!(held(&a, &k), kept, "only dropped addresses go");
                    }
                }
                Op::Restore(entries) => {
                    a.restore(entries);
                }
            }
            if let Err(e) = check_invariants(&a) {
                return Err(TestCaseError::fail(e));
            }
            check_stats(&a)?;
        }
    }
}
