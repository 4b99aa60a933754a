//! route-sync against a real kernel, each test in a fresh network namespace
//! that is removed afterwards, also on failure.

use std::future::Future;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use route_sync::{NextHop, Options, Reconciler, Route};
use serde_json::Value;
use testkit::netns::Netns;

fn ip(args: &[&str]) -> String {
    testkit::must_run("ip", args)
}

/// A fresh namespace with a veth pair: v0 192.0.2.1/24 + 2001:db8::1/64,
/// v1 up; removed when dropped, also on failure.
fn netns() -> Netns {
    let ns = Netns::new("rs").expect("namespace");
    let n = ns.name();
    ip(&[
        "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    ip(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "v0"]);
    ip(&[
        "-n",
        n,
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "v0",
        "nodad",
    ]);
    ip(&["-n", n, "link", "set", "v0", "up"]);
    ip(&["-n", n, "link", "set", "v1", "up"]);
    ns
}

/// Runs an async body on a thread that lives in the namespace.
fn run<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
) -> T {
    ns.block_on(f).expect("a thread in the namespace runs")
}

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn a(s: &str) -> IpAddr {
    s.parse().expect("addr")
}

fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn desired() -> Vec<Route> {
    vec![
        Route::unicast(p("10.1.0.0/24"), vec![NextHop::via(a("192.0.2.2"))]),
        Route::unicast(
            p("10.2.0.0/24"),
            vec![
                NextHop {
                    weight: 1,
                    ..NextHop::via(a("192.0.2.2"))
                },
                NextHop {
                    weight: 3,
                    ..NextHop::via(a("192.0.2.3"))
                },
            ],
        ),
        Route::blackhole(p("10.244.1.0/24")),
        Route::unicast(p("2001:db8:100::/48"), vec![NextHop::via(a("2001:db8::2"))]),
        Route::blackhole(p("fd00:244:1::/64")),
        Route::unicast(p("10.99.0.0/24"), vec![NextHop::via(a("192.0.2.2"))]),
    ]
}

#[test]
fn installs_ecmp_blackhole_ipv6_and_leaves_foreign_routes_alone() {
    let ns = netns();
    // A route of another protocol on a prefix we also want, and one we do not.
    ip(&[
        "-n",
        ns.name(),
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "192.0.2.9",
        "proto",
        "static",
    ]);
    ip(&[
        "-n",
        ns.name(),
        "route",
        "add",
        "10.98.0.0/24",
        "via",
        "192.0.2.9",
        "proto",
        "static",
    ]);
    let report = run(&ns, || {
        Box::pin(async {
            let r = Reconciler::start(Options::default()).await.expect("start");
            r.set(desired());
            let mut sub = r.subscribe();
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            let report = r.report();
            r.stop(false).await.expect("stop");
            report
        })
    });
    assert_eq!(report.installed, 5, "{report:?}");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].0.prefix, p("10.99.0.0/24"));

    let ours = ns.routes(&["proto", "201"]);
    assert_eq!(ours.len(), 3, "{ours:?}");
    let single = ns
        .route("10.1.0.0/24", &["proto", "201"])
        .expect("10.1.0.0/24");
    assert_eq!(single["gateway"], "192.0.2.2");
    let ecmp = ns
        .route("10.2.0.0/24", &["proto", "201"])
        .expect("ECMP route");
    let hops = ecmp["nexthops"].as_array().expect("nexthops");
    assert_eq!(hops.len(), 2);
    assert_eq!(hops[1]["weight"], 3);
    assert_eq!(
        ns.route("10.244.1.0/24", &["proto", "201"])
            .expect("blackhole")["type"],
        "blackhole"
    );
    assert!(
        ns.route("2001:db8:100::/48", &["-6", "proto", "201"])
            .is_some()
    );
    assert_eq!(
        ns.route("fd00:244:1::/64", &["-6", "proto", "201"])
            .expect("v6 blackhole")["type"],
        "blackhole"
    );
    // The foreign routes are exactly as they were.
    assert_eq!(
        ns.route("10.99.0.0/24", &[]).expect("foreign")["gateway"],
        "192.0.2.9"
    );
    assert!(ns.route("10.98.0.0/24", &[]).is_some());
}

#[test]
fn changes_replace_and_remove_only_what_differs_in_another_table() {
    let ns = netns();
    run(&ns, || {
        Box::pin(async {
            let opts = Options {
                table: 100,
                ..Options::default()
            };
            let r = Reconciler::start(opts).await.expect("start");
            let mut sub = r.subscribe();
            r.set(desired());
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            let mut next = desired();
            next.remove(2); // drop the IPv4 blackhole
            next[0] = Route::unicast(p("10.1.0.0/24"), vec![NextHop::via(a("192.0.2.5"))]);
            let syncs = sub.borrow().syncs;
            r.set(next);
            while sub.borrow_and_update().syncs == syncs {
                sub.changed().await.expect("report");
            }
            r.stop(false).await.expect("stop");
        })
    });
    assert!(ns.route("10.244.1.0/24", &["table", "100"]).is_none());
    assert_eq!(
        ns.route("10.1.0.0/24", &["table", "100"])
            .expect("replaced")["gateway"],
        "192.0.2.5"
    );
    assert!(
        ns.route("10.1.0.0/24", &[]).is_none(),
        "nothing in the main table"
    );
}

#[test]
fn drift_is_repaired_within_a_second() {
    let ns = netns();
    let name = ns.name().to_string();
    run(&ns, move || {
        Box::pin(async move {
            let r = Reconciler::start(Options::default()).await.expect("start");
            let mut sub = r.subscribe();
            r.set(desired());
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            // Someone deletes one of our routes and changes another.
            ip(&["-n", &name, "route", "del", "10.1.0.0/24", "proto", "201"]);
            ip(&[
                "-n",
                &name,
                "route",
                "replace",
                "10.244.1.0/24",
                "via",
                "192.0.2.7",
                "proto",
                "201",
            ]);
            let start = Instant::now();
            loop {
                let routes: Vec<Value> = serde_json::from_str(&ip(&[
                    "-n", &name, "-j", "route", "show", "proto", "201",
                ]))
                .unwrap_or_default();
                let back = routes.iter().any(|r| r["dst"] == "10.1.0.0/24");
                let fixed = routes
                    .iter()
                    .any(|r| r["dst"] == "10.244.1.0/24" && r["type"] == "blackhole");
                if back && fixed {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(1),
                    "not repaired within a second: {routes:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(r.report().repaired >= 2);
            r.stop(false).await.expect("stop");
        })
    });
}

/// `ip monitor route` in the namespace, collecting what it prints.
struct RouteMonitor(Child, std::path::PathBuf);

impl RouteMonitor {
    fn start(ns: &Netns) -> RouteMonitor {
        let path = std::env::temp_dir().join(format!("route-sync-monitor-{}", ns.name()));
        let file = std::fs::File::create(&path).expect("file");
        let child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        RouteMonitor(child, path)
    }

    fn output(&mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

#[test]
fn restart_adopts_routes_without_churn_and_flush_removes_them() {
    let ns = netns();
    // First run: install, then stop without flushing (as on SIGTERM or kill -9).
    run(&ns, || {
        Box::pin(async {
            let r = Reconciler::start(Options::default()).await.expect("start");
            let mut sub = r.subscribe();
            r.set(desired());
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            r.stop(false).await.expect("stop");
        })
    });
    assert_eq!(ns.routes(&["proto", "201"]).len(), 4);
    // Second run: watch the kernel while the new reconciler adopts and syncs.
    let mut monitor = RouteMonitor::start(&ns);
    std::thread::sleep(Duration::from_millis(200));
    let adopted = run(&ns, || {
        Box::pin(async {
            let r = Reconciler::start(Options::default()).await.expect("start");
            let adopted = r.report().adopted;
            let mut sub = r.subscribe();
            r.set(desired());
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            r.stop(false).await.expect("stop");
            adopted
        })
    });
    let events = monitor.output();
    assert_eq!(adopted, 6, "4 IPv4 and 2 IPv6 routes of ours were there");
    assert!(
        events.trim().is_empty(),
        "the restart changed routes:\n{events}"
    );
    // A stop with flush removes ours, and only ours.
    ip(&[
        "-n",
        ns.name(),
        "route",
        "add",
        "10.98.0.0/24",
        "via",
        "192.0.2.9",
        "proto",
        "static",
    ]);
    run(&ns, || {
        Box::pin(async {
            let r = Reconciler::start(Options::default()).await.expect("start");
            r.stop(true).await.expect("stop");
        })
    });
    assert!(ns.routes(&["proto", "201"]).is_empty());
    assert!(ns.routes(&["-6", "proto", "201"]).is_empty());
    assert!(ns.route("10.98.0.0/24", &[]).is_some());
    wait(1, "nothing", || true);
}

#[test]
fn lookups_resolve_connected_and_recursive_next_hops() {
    let ns = netns();
    ip(&[
        "-n",
        ns.name(),
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.2",
        "proto",
        "static",
    ]);
    let (connected, recursive, none) = run(&ns, || {
        Box::pin(async {
            let k = route_sync::Kernel::connect(201).expect("netlink");
            (
                k.lookup(a("192.0.2.2")).await,
                k.lookup(a("198.51.100.7")).await,
                k.lookup(a("203.0.113.1")).await,
            )
        })
    });
    let (gw, oif, _) = connected.expect("connected next hop resolves");
    assert_eq!(gw, None, "directly connected: no gateway");
    assert!(oif.is_some());
    let (gw, _, proto) = recursive.expect("recursive next hop resolves");
    assert_eq!(gw, Some(a("192.0.2.2")));
    assert_eq!(proto, 4, "through the static route");
    assert!(none.is_none(), "no default route: unreachable");
}

#[test]
fn one_bad_route_fails_alone_in_a_batch() {
    let ns = netns();
    let applied = run(&ns, || {
        Box::pin(async {
            let k = route_sync::Kernel::connect(201).expect("netlink");
            let mut add: Vec<Route> = (0..300u32)
                .map(|i| {
                    let net = format!("10.{}.{}.0/24", 50 + i / 256, i % 256);
                    Route::unicast(p(&net), vec![NextHop::via(a("192.0.2.2"))])
                })
                .collect();
            // Not reachable from any connected subnet: the kernel says ENETUNREACH.
            add.insert(
                150,
                Route::unicast(p("10.99.99.0/24"), vec![NextHop::via(a("203.0.113.1"))]),
            );
            k.apply(&route_sync::Changes {
                add,
                ..Default::default()
            })
            .await
        })
    });
    assert_eq!(applied.added, 300);
    assert_eq!(applied.failed.len(), 1);
    assert_eq!(applied.failed[0].0.prefix, p("10.99.99.0/24"));
    assert!(
        applied.failed[0].1.contains("unreachable"),
        "{}",
        applied.failed[0].1
    );
    assert_eq!(ns.routes(&["proto", "201"]).len(), 300);
}

#[test]
fn upserts_never_overwrite_another_protocols_route() {
    let ns = netns();
    ip(&[
        "-n",
        ns.name(),
        "route",
        "add",
        "10.77.0.0/24",
        "via",
        "192.0.2.9",
        "proto",
        "static",
    ]);
    let report = run(&ns, || {
        Box::pin(async {
            let r = Reconciler::start(Options::default()).await.expect("start");
            let mut sub = r.subscribe();
            r.set(vec![Route::blackhole(p("10.244.9.0/24"))]);
            while !sub.borrow_and_update().synced {
                sub.changed().await.expect("report");
            }
            // The same key (table, prefix, metric) as the static route.
            r.upsert(vec![Route::unicast(
                p("10.77.0.0/24"),
                vec![NextHop::via(a("192.0.2.2"))],
            )]);
            r.remove(vec![Route::blackhole(p("10.244.9.0/24")).key()]);
            let syncs = sub.borrow().syncs;
            let deadline = Instant::now() + Duration::from_secs(5);
            while sub.borrow().conflicts.is_empty() && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(100), sub.changed()).await;
            }
            let report = r.report();
            assert_eq!(report.syncs, syncs);
            r.stop(false).await.expect("stop");
            report
        })
    });
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    let still = ns.route("10.77.0.0/24", &[]).expect("the static route");
    assert_eq!(still["gateway"], "192.0.2.9");
    assert_eq!(still["protocol"], "static");
    assert!(
        ns.route("10.244.9.0/24", &[]).is_none(),
        "the removal went through"
    );
}

/// The port ids of the notifications queued on a netlink socket.
fn queued_ports(socket: &rtnetlink::sys::Socket) -> Vec<u32> {
    let mut ports = Vec::new();
    socket.set_non_blocking(true).expect("non-blocking");
    for _ in 0..1000 {
        let Ok((buf, _)) = socket.recv_from_full() else {
            break;
        };
        let mut off = 0;
        while off + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
            ports.push(u32::from_ne_bytes(
                buf[off + 12..off + 16].try_into().expect("4"),
            ));
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
    ports
}

#[test]
fn the_monitor_filter_drops_only_our_own_notifications() {
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let ns = netns();
    let name = ns.name().to_string();
    let (ours, plain, filtered) = run(&ns, move || {
        Box::pin(async move {
            let k = route_sync::Kernel::connect(201).expect("netlink");
            let listen = || {
                let mut s = Socket::new(NETLINK_ROUTE).expect("socket");
                s.bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_IPV4_ROUTE))
                    .expect("bind");
                s
            };
            let plain = listen();
            let filtered = listen();
            route_sync::filter::drop_own_notifications(&filtered, k.batch_port())
                .expect("attach filter");
            let add: Vec<Route> = (0..50u32)
                .map(|i| Route::blackhole(p(&format!("10.77.{i}.0/24"))))
                .collect();
            let applied = k
                .apply(&route_sync::Changes {
                    add,
                    ..Default::default()
                })
                .await;
            assert_eq!(applied.added, 50);
            // Someone else's change, whose notification must still arrive.
            ip(&[
                "-n",
                &name,
                "route",
                "add",
                "198.51.100.0/24",
                "dev",
                "v0",
                "proto",
                "static",
            ]);
            (
                k.batch_port(),
                queued_ports(&plain),
                queued_ports(&filtered),
            )
        })
    });
    // Without the filter our 50 notifications are queued (the control).
    assert_eq!(
        plain.iter().filter(|&&p| p == ours).count(),
        50,
        "{plain:?}"
    );
    assert!(plain.iter().any(|&p| p != ours), "{plain:?}");
    assert!(!filtered.contains(&ours), "{filtered:?}");
    assert_eq!(
        filtered.len(),
        plain.len() - 50,
        "{filtered:?} vs {plain:?}"
    );
}
