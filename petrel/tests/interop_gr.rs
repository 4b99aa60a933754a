//! Graceful restart against real FRR and BIRD 2, both roles: petrel restarts
//! while they keep its routes, and FRR restarts while petrel keeps FRR's
//! routes in its RIB and in the kernel.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, petrel_yaml, wait_until};

/// FRR's view of one prefix: present, and whether its path is stale.
fn frr_route(lab: &Lab, ns: &str, prefix: &str) -> Option<bool> {
    let v = lab.vtysh_json(ns, &format!("show bgp ipv4 unicast {prefix} json"));
    let paths = v["paths"].as_array()?;
    let first = paths.first()?;
    Some(first["stale"].as_bool().unwrap_or(false))
}

fn bird_has(lab: &Lab, sock: &std::path::Path, prefix: &str) -> bool {
    lab.birdc(sock, &format!("show route for {prefix} table master4"))
        .contains(prefix)
}

#[test]
fn petrel_restarts_while_frr_and_bird_keep_forwarding_to_it() {
    let mut lab = common::lab("gp");
    let p = lab.ns("p");
    let f = lab.ns("f");
    let b = lab.ns("b");
    lab.link(&p, &f, "eth0", &["10.13.0.1/24"], &["10.13.0.2/24"]);
    lab.link(&p, &b, "eth1", &["10.14.0.1/24"], &["10.14.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.13.0.2
 no bgp ebgp-requires-policy
 bgp graceful-restart
 timers bgp 3 9
 neighbor 10.13.0.1 remote-as 65001
 neighbor 10.13.0.1 timers connect 1
"#,
    );
    let sock = lab.bird(
        &b,
        r#"router id 10.14.0.2;
protocol device { }
protocol bgp petrel {
  local 10.14.0.2 as 65003;
  neighbor 10.14.0.1 as 65001;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  graceful restart aware;
  ipv4 { import all; export none; };
}
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.13.0.1",
        &["10.13.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.13.0.2, asNumber: 65002}\n---\napiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bird}\nspec: {peerIP: 10.14.0.2, asNumber: 65003}\n",
    );
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.13.0.2", 30);
    petrel.wait_established("10.14.0.2", 30);
    wait_until(15, "the pod CIDR at FRR and BIRD", || {
        match (
            frr_route(&lab, &f, "10.244.1.0/24"),
            bird_has(&lab, &sock, "10.244.1.0/24"),
        ) {
            (Some(false), true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let n = lab.vtysh_json(&f, "show bgp neighbors 10.13.0.1 json");
    let gr = &n["10.13.0.1"]["gracefulRestartInfo"];
    assert!(gr.is_object(), "FRR sees no graceful restart: {n}");

    // kill -9: the sessions drop without a NOTIFICATION.
    lab.kill(&format!("petrel-{p}"));
    let down = Instant::now();
    let mut stale_seen = false;
    let mut restarted = None;
    let mut polls = 0;
    // Throughout the restart, both keep the route; FRR marks it stale until
    // petrel's End-of-RIB.
    loop {
        polls += 1;
        let frr = frr_route(&lab, &f, "10.244.1.0/24");
        let bird = bird_has(&lab, &sock, "10.244.1.0/24");
        assert!(
            frr.is_some() && bird,
            "petrel's route vanished {:?} after the kill: FRR {frr:?}, BIRD {bird}",
            down.elapsed()
        );
        stale_seen |= frr == Some(true);
        if restarted.is_none() && down.elapsed() > Duration::from_secs(3) {
            restarted = Some(lab.petrel(&p, "node-1", &yaml));
        }
        if let Some(pt) = &restarted
            && frr == Some(false)
            && pt
                .peer("10.13.0.2")
                .is_some_and(|v| v["state"] == "Established")
            && pt
                .peer("10.14.0.2")
                .is_some_and(|v| v["state"] == "Established")
        {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(60) && polls < 1000,
            "petrel did not come back in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        stale_seen,
        "FRR never marked the route stale while petrel was down"
    );
    let pt = restarted.expect("restarted");
    let log = std::fs::read_to_string(&pt.log).unwrap_or_default();
    assert!(
        log.contains("route selection deferred"),
        "the second run did not know it restarted:\n{log}"
    );
    // And once BIRD's End-of-RIB is in too, the FIB's initial sync runs.
    wait_until(15, "the initial convergence", || {
        let log = std::fs::read_to_string(&pt.log).unwrap_or_default();
        log.contains("initial convergence: every configured peer sent its table")
            .then_some(())
            .ok_or(log)
    });
}

#[test]
fn frr_restarts_while_petrel_keeps_its_routes_in_the_kernel() {
    let mut lab = common::lab("gf");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.15.0.1/24"], &["10.15.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.15.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 bgp graceful-restart preserve-fw-state
 bgp graceful-restart restart-time 60
 timers bgp 3 9
 neighbor 10.15.0.1 remote-as 65001
 neighbor 10.15.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.150.0.0/24
  network 10.151.0.0/24
 exit-address-family
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.15.0.1",
        &["10.15.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.15.0.2, asNumber: 65002}\n",
    );
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.15.0.2", 30);
    wait_until(15, "FRR's routes in the kernel", || {
        match (
            petrel.kernel_route("10.150.0.0/24"),
            petrel.kernel_route("10.151.0.0/24"),
        ) {
            (Some(_), Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let watch = lab.root.join("monitor.txt");
    lab.spawn(&p, "monitor", "ip", &["monitor", "route"], &watch);
    std::thread::sleep(Duration::from_millis(300));

    // FRR's bgpd dies (zebra stays): petrel keeps its routes, stale.
    lab.kill(&format!("bgpd-{f}"));
    wait_until(15, "petrel to see the session drop", || {
        match petrel.peer("10.15.0.2") {
            Some(v) if v["state"] != "Established" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let v = petrel.peer("10.15.0.2").expect("peer");
    assert_eq!(v["stale_routes"], 2, "{v}");
    assert!(petrel.best("10.150.0.0/24").is_some());
    assert!(petrel.kernel_route("10.150.0.0/24").is_some());

    // Back: FRR announces its routes again and sends End-of-RIB.
    std::thread::sleep(Duration::from_secs(2));
    lab.start_frr_bgpd(&f);
    petrel.wait_established("10.15.0.2", 30);
    wait_until(
        15,
        "the stale routes to be announced again",
        || match petrel.peer("10.15.0.2") {
            Some(v) if v["stale_routes"] == 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(petrel.best("10.150.0.0/24").is_some());
    std::thread::sleep(Duration::from_millis(500));
    lab.kill("monitor");
    let events = std::fs::read_to_string(&watch).unwrap_or_default();
    assert!(
        !events.contains("Deleted"),
        "FRR's restart removed kernel routes:\n{events}"
    );
    assert!(petrel.kernel_route("10.150.0.0/24").is_some());
    assert!(petrel.kernel_route("10.151.0.0/24").is_some());
}

#[test]
fn frr_routes_turn_long_lived_stale_after_its_restart_time() {
    let mut lab = common::lab("gl");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.22.0.1/24"], &["10.22.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.22.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
 bgp graceful-restart preserve-fw-state
 bgp graceful-restart restart-time 1
 bgp long-lived-graceful-restart stale-time 60
 timers bgp 3 9
 neighbor 10.22.0.1 remote-as 65002
 neighbor 10.22.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.220.0.0/24
 exit-address-family
"#,
    );
    let yaml = petrel_yaml(
        65002,
        "10.22.0.1",
        &["10.22.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.22.0.2, asNumber: 65002}\n",
    )
    .replace(
        "spec: {asNumber: 65002, routerID: 10.22.0.1}",
        "spec: {asNumber: 65002, routerID: 10.22.0.1, gracefulRestart: {longLivedStaleTime: 30s}}",
    );
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.22.0.2", 30);
    petrel.wait_route("10.220.0.0/24", 15);
    let caps = petrel.peer("10.22.0.2").expect("peer")["capabilities"].to_string();
    assert!(caps.contains("\"long-lived-graceful-restart\""), "{caps}");

    lab.kill(&format!("bgpd-{f}"));
    wait_until(15, "the route to turn long-lived stale", || {
        let r = petrel.best("10.220.0.0/24").ok_or("gone")?;
        r["communities"]
            .to_string()
            .contains("65535:6")
            .then_some(())
            .ok_or(r.to_string())
    });
    // Well past FRR's one-second restart time, still routed.
    std::thread::sleep(Duration::from_secs(2));
    assert!(petrel.best("10.220.0.0/24").is_some());
    assert!(petrel.kernel_route("10.220.0.0/24").is_some());
}

/// `ip -n NS route show PREFIX`: the kernel's route, if any.
fn kernel_route(ns: &str, prefix: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "route", "show", prefix])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// With graceful restart (the default), neither SIGTERM nor kill -9 of the
/// agent makes FRR or BIRD withdraw the node's pod block: `ip monitor` in
/// their namespaces sees no deletion of it. FRR sets RFC 8538's N bit, so
/// on SIGTERM it is told with Cease / Administrative Reset (a restart under
/// RFC 8538); BIRD 2 does not, so its connection is closed without a
/// NOTIFICATION (a restart under RFC 4724).
#[test]
fn sigterm_and_kill_of_petrel_withdraw_nothing_at_frr_and_bird() {
    let mut lab = common::lab("gs");
    let p = lab.ns("p");
    let f = lab.ns("f");
    let b = lab.ns("b");
    lab.link(&p, &f, "eth0", &["10.16.0.1/24"], &["10.16.0.2/24"]);
    lab.link(&p, &b, "eth1", &["10.17.0.1/24"], &["10.17.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.16.0.2
 no bgp ebgp-requires-policy
 bgp graceful-restart
 timers bgp 3 9
 neighbor 10.16.0.1 remote-as 65001
 neighbor 10.16.0.1 timers connect 1
"#,
    );
    let sock = lab.bird(
        &b,
        r#"router id 10.17.0.2;
protocol device { }
protocol kernel { ipv4 { export all; }; }
protocol bgp petrel {
  local 10.17.0.2 as 65003;
  neighbor 10.17.0.1 as 65001;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  graceful restart aware;
  ipv4 { import all; export none; };
}
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.16.0.1",
        &["10.16.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.16.0.2, asNumber: 65002}\n---\napiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bird}\nspec: {peerIP: 10.17.0.2, asNumber: 65003}\n",
    );
    let block = "10.244.1.0/24";
    let label = format!("petrel-{p}");
    let mut petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.16.0.2", 30);
    petrel.wait_established("10.17.0.2", 30);
    wait_until(20, "the pod block in FRR's and BIRD's kernels", || {
        let (kf, kb) = (kernel_route(&f, block), kernel_route(&b, block));
        if kf.contains("10.16.0.1") && kb.contains("10.17.0.1") {
            Ok(())
        } else {
            Err(format!("FRR: {kf:?}, BIRD: {kb:?}"))
        }
    });
    let n = lab.vtysh_json(&f, "show bgp neighbors 10.16.0.1 json");
    assert!(
        n.to_string().contains("\"nBit\":true") || n.to_string().contains("N-bit"),
        "FRR does not see petrel's N bit: {n}"
    );
    // Every route change in both namespaces from here on.
    let monitors: Vec<(String, std::path::PathBuf)> = [&f, &b]
        .iter()
        .map(|ns| {
            let log = lab.root.join(format!("monitor-{ns}.log"));
            lab.spawn(
                ns,
                &format!("monitor-{ns}"),
                "ip",
                &["monitor", "route"],
                &log,
            );
            (ns.to_string(), log)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    for how in ["SIGTERM", "kill -9"] {
        if how == "SIGTERM" {
            lab.terminate(&label);
            let log = std::fs::read_to_string(&petrel.log).unwrap_or_default();
            assert!(
                log.contains("Administrative Reset"),
                "FRR was not told of a restart:\n{log}"
            );
            assert!(
                log.contains("closing the connection without a NOTIFICATION"),
                "BIRD's connection was not closed without a NOTIFICATION:\n{log}"
            );
        } else {
            lab.kill(&label);
        }
        // Down for longer than a connect retry: both see the session gone.
        std::thread::sleep(Duration::from_secs(3));
        for (ns, kernel) in [(&f, kernel_route(&f, block)), (&b, kernel_route(&b, block))] {
            assert!(
                !kernel.is_empty(),
                "after {how}, {ns}'s kernel lost {block}"
            );
        }
        petrel = lab.petrel(&p, "node-1", &yaml);
        petrel.wait_established("10.16.0.2", 30);
        petrel.wait_established("10.17.0.2", 30);
        wait_until(20, "FRR's route fresh again", || {
            match (frr_route(&lab, &f, block), bird_has(&lab, &sock, block)) {
                (Some(false), true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    // A deletion the monitors must see: proof that they watch.
    for (ns, _) in &monitors {
        lab.ip(ns, &["route", "add", "192.0.2.77/32", "dev", "lo"]);
        lab.ip(ns, &["route", "del", "192.0.2.77/32", "dev", "lo"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    for (ns, log) in &monitors {
        let seen = std::fs::read_to_string(log).unwrap_or_default();
        let deleted: Vec<&str> = seen
            .lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(block))
            .collect();
        assert!(
            deleted.is_empty(),
            "{ns} withdrew {block} during petrel's restarts: {deleted:?}\nall changes:\n{seen}"
        );
        assert!(
            seen.lines()
                .any(|l| l.starts_with("Deleted") && l.contains("192.0.2.77")),
            "{ns}: the monitor did not see the deletion made to check it:\n{seen}"
        );
    }
}
