//! The LoadBalancer task's reconcile, without an API server.

use super::*;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn svc(ns: &str, name: &str, created: i64, ingress: &[&str]) -> Arc<Service> {
    Arc::new(Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("1".into()),
            creation_timestamp: Some(Time(Timestamp::from_second(created).expect("in range"))),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ingress
                        .iter()
                        .map(|i| LoadBalancerIngress {
                            ip: Some(i.to_string()),
                            ..LoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
            ..ServiceStatus::default()
        }),
    })
}

fn pool(name: &str, cidrs: &[&str]) -> Arc<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "LoadBalancerPool",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"cidrs": cidrs},
    }))
    .expect("pool");
    Arc::new(obj)
}

fn ingress_writes(pass: &Pass) -> BTreeMap<String, Vec<IpAddr>> {
    pass.actions
        .iter()
        .filter_map(|a| match a {
            Action::Ingress { key, ips } => Some((key.to_string(), ips.clone())),
            _ => None,
        })
        .collect()
}

fn events(pass: &Pass) -> Vec<(String, String)> {
    pass.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(n) => Some((n.reason.clone(), n.message.clone())),
            _ => None,
        })
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).expect("in range")
}

#[test]
fn addresses_in_status_are_restored_before_anything_is_assigned() {
    // `b` was given .0 by an earlier leader; `a` is older but has no
    // address yet. Assigning first would hand `a` the .0 of `b`.
    let pools = [pool("p", &["192.0.2.0/30"])];
    let services = [svc("ns", "a", 10, &[]), svc("ns", "b", 20, &["192.0.2.0"])];
    let mut lb = Lb::new(None);
    let pass = lb.reconcile(
        &View {
            services: &services,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    let writes = ingress_writes(&pass);
    assert_eq!(writes.get("ns/a"), Some(&vec![ip("192.0.2.1")]));
    assert!(
        !writes.contains_key("ns/b"),
        "b keeps its address: {writes:?}"
    );
}

#[test]
fn the_same_write_is_not_sent_twice_until_the_watch_shows_a_change() {
    let pools = [pool("p", &["192.0.2.0/30"])];
    let services = [svc("ns", "a", 10, &[])];
    let view = View {
        services: &services,
        namespaces: &[],
        pools: &pools,
    };
    let mut lb = Lb::new(None);
    let first = lb.reconcile(&view, now());
    assert_eq!(ingress_writes(&first).len(), 1);
    let again = lb.reconcile(&view, now());
    assert!(ingress_writes(&again).is_empty(), "{:?}", again.actions);
    // After a failed write it is sent again.
    for a in &first.actions {
        lb.write_failed(a);
    }
    let retry = lb.reconcile(&view, now());
    assert_eq!(ingress_writes(&retry).len(), 1);
    // Once the status shows it, nothing more.
    let written = [svc("ns", "a", 10, &["192.0.2.0"])];
    let done = lb.reconcile(
        &View {
            services: &written,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    assert!(ingress_writes(&done).is_empty());
}

#[test]
fn exhaustion_clears_ingress_and_warns_once() {
    let pools = [pool("p", &["192.0.2.7/32"])];
    let services = [svc("ns", "a", 10, &[]), svc("ns", "b", 20, &["192.0.2.9"])];
    let view = View {
        services: &services,
        namespaces: &[],
        pools: &pools,
    };
    let mut lb = Lb::new(None);
    let pass = lb.reconcile(&view, now());
    let writes = ingress_writes(&pass);
    assert_eq!(writes.get("ns/a"), Some(&vec![ip("192.0.2.7")]));
    assert_eq!(writes.get("ns/b"), Some(&vec![]), "cleared");
    let ev = events(&pass);
    assert!(
        ev.iter()
            .any(|(r, m)| r == "PoolExhausted" && m.contains("ns/b")),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|(r, _)| r == "AddressNotRestored"),
        "192.0.2.9 is in no pool: {ev:?}"
    );
    assert_eq!(pass.errors, ["PoolExhausted"]);
    let again = lb.reconcile(&view, now());
    assert!(
        events(&again).is_empty(),
        "a persisting error is not repeated"
    );
}

#[test]
fn a_type_change_releases_and_clears() {
    let pools = [pool("p", &["192.0.2.0/31"])];
    let mut lb = Lb::new(None);
    let a = [svc("ns", "a", 10, &["192.0.2.0"])];
    lb.reconcile(
        &View {
            services: &a,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    let mut changed = (*a[0]).clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.type_ = Some("ClusterIP".into());
    }
    let services = [Arc::new(changed), svc("ns", "c", 30, &[])];
    let pass = lb.reconcile(
        &View {
            services: &services,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    let writes = ingress_writes(&pass);
    assert_eq!(writes.get("ns/a"), Some(&vec![]));
    assert_eq!(
        writes.get("ns/c"),
        Some(&vec![ip("192.0.2.0")]),
        "the released address is free again"
    );
}

#[test]
fn services_of_another_class_are_left_alone() {
    let pools = [pool("p", &["192.0.2.0/31"])];
    let mut other = (*svc("ns", "x", 10, &["203.0.113.1"])).clone();
    if let Some(spec) = other.spec.as_mut() {
        spec.load_balancer_class = Some("example.com/other".into());
    }
    other
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ipam::lb::ANNOTATION_LOAD_BALANCER_IPS.into(), "junk".into());
    let services = [Arc::new(other)];
    let mut lb = Lb::new(None);
    let pass = lb.reconcile(
        &View {
            services: &services,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    assert!(ingress_writes(&pass).is_empty(), "{:?}", pass.actions);
    assert!(events(&pass).iter().all(|(r, _)| r != "InvalidService"));
}

#[test]
fn pool_status_counts_and_refusals() {
    let pools = [
        pool("p", &["192.0.2.0/30", "2001:db8::/126"]),
        pool("q", &["192.0.2.2-192.0.2.3"]),
    ];
    let services = [svc("ns", "a", 10, &[])];
    let mut lb = Lb::new(None);
    let pass = lb.reconcile(
        &View {
            services: &services,
            namespaces: &[],
            pools: &pools,
        },
        now(),
    );
    let statuses: BTreeMap<String, LoadBalancerPoolStatus> = pass
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::PoolStatus { name, status } => Some((name.clone(), status.clone())),
            _ => None,
        })
        .collect();
    let p = &statuses["p"];
    assert_eq!(p.used_ipv4, Some(AddressCount(1)));
    assert_eq!(p.free_ipv4, Some(AddressCount(3)));
    assert_eq!(p.used_ipv6, Some(AddressCount(0)));
    assert_eq!(p.free_ipv6, Some(AddressCount(4)));
    assert_eq!(p.conditions[0].status, "True");
    let q = &statuses["q"];
    assert_eq!(q.used_ipv4, None, "a refused pool has no counts");
    assert_eq!(q.conditions[0].status, "False");
    assert!(q.conditions[0].message.contains("overlaps"), "{q:?}");
    assert!(
        events(&pass).iter().any(|(r, _)| r == "PoolRefused"),
        "{:?}",
        pass.actions
    );
}

#[test]
fn an_unreadable_pool_is_refused_by_name_and_field() {
    let bad = pool("bad", &["192.0.2.20-192.0.2.10"]);
    let e = pool_spec(&bad).expect_err("backwards range");
    assert!(
        e.contains("LoadBalancerPool bad") && e.contains("spec.cidrs"),
        "{e}"
    );
}

#[test]
fn long_notes_are_cut_at_a_character_boundary() {
    let s = "é".repeat(600);
    let t = truncate(&s, NOTE_LIMIT);
    assert!(t.len() <= NOTE_LIMIT && t.ends_with("..."));
    assert_eq!(truncate("short", NOTE_LIMIT), "short");
}
