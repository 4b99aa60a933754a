//! petrel against FRR (Debian's `frr`), each in its own network namespace.

mod common;

use common::{Lab, petrel_yaml, wait_until};
use serde_json::Value;

fn frr_has(lab: &Lab, ns: &str, family: &str, prefix: &str) -> Result<Value, String> {
    let v = lab.vtysh_json(ns, &format!("show bgp {family} unicast {prefix} json"));
    let paths = v["paths"].as_array().cloned().unwrap_or_default();
    paths
        .into_iter()
        .find(|p| p["bestpath"]["overall"] == true || p["valid"] == true)
        .ok_or_else(|| format!("FRR has no valid path for {prefix}: {v}"))
}

fn frr_neighbor(lab: &Lab, ns: &str, addr: &str) -> Value {
    lab.vtysh_json(ns, &format!("show bgp neighbors {addr} json"))[addr].clone()
}

#[test]
fn ebgp_ipv4_transport_md5_four_octet_asn_refresh_and_restart() {
    let mut lab = common::lab("fe");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(
        &p,
        &f,
        "eth0",
        &["10.1.0.1/24", "fd00:1::1/64"],
        &["10.1.0.2/24", "fd00:1::2/64"],
    );
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 4200000001
 bgp router-id 10.1.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.1.0.1 remote-as 65001
 neighbor 10.1.0.1 password s3cret-key
 neighbor 10.1.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.20.0.0/24
 exit-address-family
 address-family ipv6 unicast
  neighbor 10.1.0.1 activate
  network fd00:20::/48
 exit-address-family
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.1.0.1",
            &["10.1.0.1", "fd00:1::1"],
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 10.1.0.2
  asNumber: 4200000001
  holdTime: 9s
  password: {secretKeyRef: {name: bgp-auth, key: tor}}
---
apiVersion: v1
kind: Secret
metadata: {name: bgp-auth}
stringData: {tor: s3cret-key}
"#,
        ),
    );
    petrel.wait_established("10.1.0.2", 30);

    // FRR's routes in petrel's RIB, with FRR's 4-octet ASN in the path.
    let r = petrel.wait_route("10.20.0.0/24", 15);
    assert_eq!(r["as_path"][0]["asns"][0], 4_200_000_001u64);
    assert_eq!(r["next_hop"], "10.1.0.2");
    let r6 = petrel.wait_route("fd00:20::/48", 15);
    assert_eq!(r6["from"], "10.1.0.2");
    // petrel's pod CIDRs in FRR's RIB: IPv4 and IPv6, next hops petrel's addresses.
    wait_until(15, "10.244.1.0/24 at FRR", || {
        frr_has(&lab, &f, "ipv4", "10.244.1.0/24").map(|_| ())
    });
    let path = frr_has(&lab, &f, "ipv4", "10.244.1.0/24").expect("present");
    assert_eq!(path["aspath"]["string"], "65001");
    assert_eq!(path["nexthops"][0]["ip"], "10.1.0.1");
    wait_until(15, "fd00:244:1::/64 at FRR", || {
        frr_has(&lab, &f, "ipv6", "fd00:244:1::/64").map(|_| ())
    });
    let path6 = frr_has(&lab, &f, "ipv6", "fd00:244:1::/64").expect("present");
    assert_eq!(path6["nexthops"][0]["ip"], "fd00:1::1");

    // Learned routes reach petrel's kernel FIB; its pod CIDRs get blackholes.
    wait_until(10, "FRR's routes in the kernel", || {
        let v4 = petrel
            .kernel_route("10.20.0.0/24")
            .ok_or("no 10.20.0.0/24")?;
        let v6 = petrel
            .kernel_route("fd00:20::/48")
            .ok_or("no fd00:20::/48")?;
        (v4["gateway"] == "10.1.0.2" && v6["gateway"] == "fd00:1::2")
            .then_some(())
            .ok_or(format!("{v4} {v6}"))
    });
    assert_eq!(
        petrel.kernel_route("10.244.1.0/24").expect("blackhole")["type"],
        "blackhole"
    );
    assert_eq!(
        petrel.kernel_route("fd00:244:1::/64").expect("blackhole")["type"],
        "blackhole"
    );

    let peer = petrel.peer("10.1.0.2").expect("peer");
    let caps: Vec<String> = serde_json::from_value(peer["capabilities"].clone()).expect("caps");
    assert!(caps.contains(&"four-octet-as".to_string()), "{caps:?}");
    assert!(caps.contains(&"ipv6-unicast".to_string()), "{caps:?}");
    assert_eq!(peer["prefixes"]["ipv4-unicast"]["accepted"], 1);

    // FRR asks for a route refresh: petrel sends its table again.
    let before = frr_neighbor(&lab, &f, "10.1.0.1")["messageStats"]["updatesRecv"]
        .as_u64()
        .unwrap_or(0);
    lab.vtysh(&f, "clear bgp ipv4 unicast 10.1.0.1 soft in");
    wait_until(10, "the refreshed table", || {
        let n = frr_neighbor(&lab, &f, "10.1.0.1");
        let sent = n["messageStats"]["routeRefreshSent"].as_u64().unwrap_or(0);
        let recv = n["messageStats"]["updatesRecv"].as_u64().unwrap_or(0);
        (sent >= 1 && recv > before)
            .then_some(())
            .ok_or_else(|| format!("routeRefreshSent {sent}, updatesRecv {recv} (was {before})"))
    });
    assert!(frr_has(&lab, &f, "ipv4", "10.244.1.0/24").is_ok());

    // FRR's bgpd dies and comes back: petrel notices, withdraws, re-learns.
    lab.kill(&format!("bgpd-{f}"));
    wait_until(15, "petrel to drop FRR's routes", || {
        match petrel.best("10.20.0.0/24") {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    });
    lab.start_frr_bgpd(&f);
    petrel.wait_established("10.1.0.2", 30);
    petrel.wait_route("10.20.0.0/24", 15);
    wait_until(15, "10.244.1.0/24 at FRR again", || {
        frr_has(&lab, &f, "ipv4", "10.244.1.0/24").map(|_| ())
    });
}

#[test]
fn ibgp_over_ipv6_transport() {
    let mut lab = common::lab("fi");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(
        &p,
        &f,
        "eth0",
        &["10.2.0.1/24", "fd00:2::1/64"],
        &["10.2.0.2/24", "fd00:2::2/64"],
    );
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65001
 bgp router-id 10.2.0.2
 no bgp network import-check
 timers bgp 3 9
 neighbor fd00:2::1 remote-as 65001
 neighbor fd00:2::1 timers connect 1
 address-family ipv4 unicast
  neighbor fd00:2::1 activate
  network 10.30.0.0/24
 exit-address-family
 address-family ipv6 unicast
  neighbor fd00:2::1 activate
  network fd00:30::/48
 exit-address-family
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.2.0.1",
            &["10.2.0.1", "fd00:2::1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: \"fd00:2::2\", asNumber: 65001}\n",
        ),
    );
    petrel.wait_established("fd00:2::2", 30);
    let r6 = petrel.wait_route("fd00:30::/48", 15);
    assert_eq!(r6["local_pref"], 100, "iBGP carries LOCAL_PREF");
    assert_eq!(r6["as_path"].as_array().map(Vec::len), Some(0));
    petrel.wait_route("10.30.0.0/24", 15);
    wait_until(15, "fd00:244:1::/64 at FRR", || {
        frr_has(&lab, &f, "ipv6", "fd00:244:1::/64").map(|_| ())
    });
    let p6 = frr_has(&lab, &f, "ipv6", "fd00:244:1::/64").expect("present");
    assert_eq!(p6["locPrf"], 100);
    assert_eq!(p6["nexthops"][0]["ip"], "fd00:2::1");
    wait_until(15, "10.244.1.0/24 at FRR", || {
        frr_has(&lab, &f, "ipv4", "10.244.1.0/24").map(|_| ())
    });
}

#[test]
fn wrong_key_and_wrong_asn_fail_cleanly_and_a_fix_applies_live() {
    let mut lab = common::lab("fw");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.3.0.1/24"], &["10.3.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.3.0.2
 no bgp ebgp-requires-policy
 timers bgp 3 9
 neighbor 10.3.0.1 remote-as 65001
 neighbor 10.3.0.1 password right-key
 neighbor 10.3.0.1 timers connect 1
"#,
    );
    let peer = |asn: u32, key: &str| {
        petrel_yaml(
            65001,
            "10.3.0.1",
            &["10.3.0.1"],
            &format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: frr}}\nspec: {{peerIP: 10.3.0.2, asNumber: {asn}, password: {{file: key}}}}\n"
            ),
        ) + &format!("# key {key}\n")
    };
    let petrel = lab.petrel(&p, "node-1", &peer(65002, "wrong"));
    std::fs::write(petrel.dir.join("key"), "wrong-key\n").expect("key");
    // With the wrong key the kernel drops every segment: no session, and the
    // agent keeps answering.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let st = petrel.peer("10.3.0.2").expect("peer listed");
    assert_ne!(st["state"], "Established", "{st}");

    // Right key, wrong ASN: FRR's OPEN says 65002, we expect 65099.
    std::fs::write(petrel.dir.join("key"), "right-key\n").expect("key");
    petrel.reconfigure(&peer(65099, "right"));
    wait_until(20, "a Bad Peer AS error", || {
        let st = petrel.peer("10.3.0.2").ok_or("no peer")?;
        let e = st["last_error"].as_str().unwrap_or_default().to_string();
        e.contains("Bad Peer AS")
            .then_some(())
            .ok_or(format!("last error {e:?}, state {}", st["state"]))
    });

    // The fix applies without restarting the agent.
    petrel.reconfigure(&peer(65002, "right"));
    petrel.wait_established("10.3.0.2", 30);
}

#[test]
fn gtsm_against_frr() {
    let mut lab = common::lab("fg");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.4.0.1/24"], &["10.4.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.4.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.4.0.1 remote-as 65001
 neighbor 10.4.0.1 ttl-security hops 1
 neighbor 10.4.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.40.0.0/24
 exit-address-family
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.4.0.1",
            &["10.4.0.1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.4.0.2, asNumber: 65002, ttlSecurity: 1}\n",
        ),
    );
    petrel.wait_established("10.4.0.2", 30);
    petrel.wait_route("10.40.0.0/24", 15);
}

#[test]
fn agent_restart_keeps_kernel_routes_without_churn() {
    let mut lab = common::lab("fr");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.12.0.1/24"], &["10.12.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.12.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.12.0.1 remote-as 65001
 neighbor 10.12.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.120.0.0/24
  network 10.121.0.0/24
 exit-address-family
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.12.0.1",
        &["10.12.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.12.0.2, asNumber: 65002}\n",
    );
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.12.0.2", 30);
    wait_until(10, "routes in the kernel", || {
        (petrel.kernel_routes().len() == 4)
            .then_some(())
            .ok_or(format!("{:?}", petrel.kernel_routes()))
    });
    // Past the initial sync, so the restart below has the same work to do.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before = petrel.kernel_routes();

    // Watch the namespace's routes from now on.
    let watch = lab.root.join("monitor.txt");
    lab.spawn(&p, "monitor", "ip", &["monitor", "route"], &watch);
    std::thread::sleep(std::time::Duration::from_millis(300));

    // kill -9: no chance to clean up. The routes stay and keep forwarding.
    lab.kill(&format!("petrel-{p}"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(petrel.kernel_routes(), before, "routes survive the agent");

    // Start again: the session comes back, the initial sync passes, and the
    // kernel saw no route deleted, added or replaced.
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.12.0.2", 30);
    petrel.wait_route("10.120.0.0/24", 15);
    std::thread::sleep(std::time::Duration::from_secs(4));
    lab.kill("monitor");
    let events = std::fs::read_to_string(&watch).unwrap_or_default();
    assert!(
        events.trim().is_empty(),
        "the restart touched kernel routes:\n{events}"
    );
    assert_eq!(petrel.kernel_routes(), before);
}

#[test]
fn unreachable_next_hop_waits_for_a_route_then_resolves_recursively() {
    let mut lab = common::lab("fn");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.13.0.1/24"], &["10.13.0.2/24"]);
    // FRR sends its route with a third-party next hop petrel cannot reach yet.
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
route-map far permit 10
 set ip next-hop 198.51.100.1
router bgp 65002
 bgp router-id 10.13.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.13.0.1 remote-as 65001
 neighbor 10.13.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.130.0.0/24
  neighbor 10.13.0.1 route-map far out
 exit-address-family
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.13.0.1",
            &["10.13.0.1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.13.0.2, asNumber: 65002}\n",
        ),
    );
    petrel.wait_established("10.13.0.2", 30);
    // The path is known but not usable: not best, not in the kernel.
    wait_until(15, "the path with the far next hop", || {
        let rib = petrel.rib(&["10.130.0.0/24"]);
        let path = &rib[0]["paths"][0];
        (path["next_hop"] == "198.51.100.1" && path["best"] == false)
            .then_some(())
            .ok_or(rib.to_string())
    });
    assert!(petrel.kernel_route("10.130.0.0/24").is_none());
    // An IGP (here a static route) makes the next hop reachable: the route is
    // installed through the gateway that reaches it.
    common::run(
        "ip",
        &[
            "-n",
            &p,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "10.13.0.2",
        ],
    );
    wait_until(15, "the route through the recursive next hop", || {
        let r = petrel
            .kernel_route("10.130.0.0/24")
            .ok_or("not installed yet")?;
        (r["gateway"] == "10.13.0.2")
            .then_some(())
            .ok_or(r.to_string())
    });
    assert!(petrel.best("10.130.0.0/24").is_some());
}

#[test]
fn an_onlink_interface_carries_next_hops_no_route_reaches() {
    let mut lab = common::lab("fo");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.14.0.1/24"], &["10.14.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
route-map far permit 10
 set ip next-hop 198.51.100.1
router bgp 65002
 bgp router-id 10.14.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.14.0.1 remote-as 65001
 neighbor 10.14.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.140.0.0/24
  neighbor 10.14.0.1 route-map far out
 exit-address-family
"#,
    );
    let petrel = lab.petrel_with(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.14.0.1",
            &["10.14.0.1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.14.0.2, asNumber: 65002}\n",
        ),
        &["--onlink-interface", "eth0"],
    );
    petrel.wait_established("10.14.0.2", 30);
    wait_until(15, "the onlink route", || {
        let r = petrel
            .kernel_route("10.140.0.0/24")
            .ok_or_else(|| format!("not installed; rib {}", petrel.rib(&[])))?;
        let onlink = r["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "onlink"));
        (r["gateway"] == "198.51.100.1" && r["dev"] == "eth0" && onlink)
            .then_some(())
            .ok_or(r.to_string())
    });
}

#[test]
fn sigterm_keeps_routes_unless_asked_to_flush() {
    let mut lab = common::lab("ft");
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
 timers bgp 3 9
 neighbor 10.15.0.1 remote-as 65001
 neighbor 10.15.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.150.0.0/24
 exit-address-family
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.15.0.1",
        &["10.15.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.15.0.2, asNumber: 65002}\n",
    );
    for (extra, stays) in [(&[][..], true), (&["--flush-routes-on-exit"][..], false)] {
        let petrel = lab.petrel_with(&p, "node-1", &yaml, extra);
        petrel.wait_established("10.15.0.2", 30);
        wait_until(10, "the learned route in the kernel", || {
            petrel
                .kernel_route("10.150.0.0/24")
                .map(|_| ())
                .ok_or("not yet".into())
        });
        lab.terminate(&format!("petrel-{p}"));
        let left = petrel.kernel_routes().len();
        if stays {
            // Learned route plus the two pod CIDR blackholes keep forwarding.
            assert_eq!(left, 3, "{:?}", petrel.kernel_routes());
        } else {
            assert_eq!(left, 0, "{:?}", petrel.kernel_routes());
        }
    }
}

#[test]
fn a_peer_over_its_prefix_limit_is_reset_with_the_right_cease() {
    let mut lab = common::lab("fm");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.18.0.1/24"], &["10.18.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.18.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.18.0.1 remote-as 65001
 neighbor 10.18.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.180.0.0/24
  network 10.181.0.0/24
  network 10.182.0.0/24
  network 10.183.0.0/24
 exit-address-family
"#,
    );
    let peer = |action: &str| {
        format!(
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: frr}}\nspec: {{peerIP: 10.18.0.2, asNumber: 65002, maxPrefixes: {{ipv4: {{limit: 3, action: {action}, restartAfter: 2s}}}}}}\n"
        )
    };
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(65001, "10.18.0.1", &["10.18.0.1"], &peer("Restart")),
    );
    wait_until(30, "petrel to end the session over the limit", || {
        let v = petrel.peer("10.18.0.2").unwrap_or_default();
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Maximum Number of Prefixes"))
            .then_some(())
            .ok_or(v.to_string())
    });
    // FRR received the Cease with subcode 1.
    wait_until(10, "FRR to report the NOTIFICATION", || {
        let n = frr_neighbor(&lab, &f, "10.18.0.1");
        let reset = n["lastResetDueTo"].as_str().unwrap_or_default();
        let code = n["lastErrorCodeSubcode"].as_str().unwrap_or_default();
        (reset == "BGP Notification received" && code == "0601")
            .then_some(())
            .ok_or(n.to_string())
    });
    // Two seconds later petrel tries again.
    wait_until(20, "a second session", || {
        let v = petrel.peer("10.18.0.2").unwrap_or_default();
        (v["flaps"].as_u64().unwrap_or(0) >= 2)
            .then_some(())
            .ok_or(v.to_string())
    });

    // With the log action the session stays up with all four prefixes.
    petrel.reconfigure(&petrel_yaml(
        65001,
        "10.18.0.1",
        &["10.18.0.1"],
        &peer("Log"),
    ));
    wait_until(30, "all four accepted, session up", || {
        let v = petrel.peer("10.18.0.2").unwrap_or_default();
        (v["state"] == "Established" && v["prefixes"]["ipv4-unicast"]["accepted"] == 4)
            .then_some(())
            .ok_or(v.to_string())
    });
    let log = std::fs::read_to_string(&petrel.log).unwrap_or_default();
    assert!(log.contains("prefix limit exceeded (action: log)"), "{log}");
}

#[test]
fn filters_change_routes_both_ways_without_a_session_reset() {
    let mut lab = common::lab("fp");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.21.0.1/24"], &["10.21.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.21.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.21.0.1 remote-as 65001
 neighbor 10.21.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.30.0.0/24
  network 10.31.0.0/24
 exit-address-family
"#,
    );
    let yaml = |reject: &str, prepend: &str| {
        petrel_yaml(
            65001,
            "10.21.0.1",
            &["10.21.0.1"],
            &format!(
                r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {{name: frr}}
spec: {{peerIP: 10.21.0.2, asNumber: 65002, filters: [tor]}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {{name: tor}}
spec:
  import:
  - match: {{prefix: {{cidr: {reject}}}}}
    action: Reject
  - set: {{localPref: 150}}
  export:
  - match: {{prefix: {{cidr: 10.244.0.0/16, le: 24}}}}
    set: {{addCommunities: ["65001:100"]{prepend}}}
    action: Accept
"#
            ),
        )
    };
    let petrel = lab.petrel(&p, "node-1", &yaml("10.31.0.0/24", ", prepend: {count: 2}"));
    petrel.wait_established("10.21.0.2", 30);
    let r = petrel.wait_route("10.30.0.0/24", 15);
    assert_eq!(r["local_pref"], 150, "{r}");
    assert!(petrel.best("10.31.0.0/24").is_none(), "rejected on import");
    wait_until(
        15,
        "the pod CIDR at FRR, prepended, with the community",
        || {
            let path = frr_has(&lab, &f, "ipv4", "10.244.1.0/24")?;
            (path["aspath"]["string"] == "65001 65001 65001"
                && path["community"]["string"] == "65001:100")
                .then_some(())
                .ok_or(path.to_string())
        },
    );

    // New rules, same session: what FRR sent is re-filtered from what petrel
    // kept, and FRR gets the route again without the prepend.
    petrel.reconfigure(&yaml("10.30.0.0/24", ""));
    wait_until(
        15,
        "10.31.0.0/24 accepted and 10.30.0.0/24 gone",
        || match (petrel.best("10.31.0.0/24"), petrel.best("10.30.0.0/24")) {
            (Some(_), None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    wait_until(15, "the pod CIDR at FRR without the prepend", || {
        let path = frr_has(&lab, &f, "ipv4", "10.244.1.0/24")?;
        (path["aspath"]["string"] == "65001" && path["community"]["string"] == "65001:100")
            .then_some(())
            .ok_or(path.to_string())
    });
    let peer = petrel.peer("10.21.0.2").expect("peer");
    assert_eq!(peer["flaps"], 0, "{peer}");
    assert_eq!(peer["state"], "Established");
    let n = frr_neighbor(&lab, &f, "10.21.0.1");
    assert_eq!(n["connectionsEstablished"], 1, "{n}");
}

#[test]
fn peers_are_reset_disabled_and_enabled_through_the_api() {
    let mut lab = common::lab("fc");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.25.0.1/24"], &["10.25.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.25.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.25.0.1 remote-as 65001
 neighbor 10.25.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.250.0.0/24
 exit-address-family
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.25.0.1",
            &["10.25.0.1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.25.0.2, asNumber: 65002}\n",
        ),
    );
    petrel.wait_established("10.25.0.2", 30);
    petrel.wait_route("10.250.0.0/24", 15);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
            .arg("peer")
            .args(args)
            .arg("--socket")
            .arg(&petrel.socket)
            .output()
            .expect("petrel runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // By name or address.
    let (code, out, err) = cli(&["show", "frr", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["address"], "10.25.0.2");
    let (code, _, err) = cli(&["show", "10.9.9.9"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no peer \"10.9.9.9\""), "{err}");

    // Soft in: FRR is asked for a route refresh; soft out: it gets our table again.
    let stats = || frr_neighbor(&lab, &f, "10.25.0.1")["messageStats"].clone();
    let before = stats();
    assert_eq!(cli(&["reset", "frr", "--soft", "both"]).0, Some(0));
    wait_until(10, "a route refresh and our table again at FRR", || {
        let now = stats();
        (now["routeRefreshRecv"].as_u64() > before["routeRefreshRecv"].as_u64()
            && now["updatesRecv"].as_u64() > before["updatesRecv"].as_u64())
        .then_some(())
        .ok_or(now.to_string())
    });
    assert_eq!(petrel.peer("10.25.0.2").expect("peer")["flaps"], 0);

    // Hard: the session drops and comes back by itself.
    assert_eq!(cli(&["reset", "10.25.0.2"]).0, Some(0));
    wait_until(20, "the session back after a hard reset", || {
        let v = petrel.peer("10.25.0.2").unwrap_or_default();
        let n = frr_neighbor(&lab, &f, "10.25.0.1");
        (v["flaps"] == 1 && v["state"] == "Established" && n["connectionsEstablished"] == 2)
            .then_some(())
            .ok_or(format!("{v}\n{n}"))
    });

    // Disable, with a shutdown message FRR shows; it stays down.
    let (code, _, err) = cli(&["disable", "frr", "-m", "maintenance until 18:00"]);
    assert_eq!(code, Some(0), "{err}");
    wait_until(10, "FRR to see the shutdown message", || {
        let n = frr_neighbor(&lab, &f, "10.25.0.1");
        n.to_string()
            .contains("maintenance until 18:00")
            .then_some(())
            .ok_or(n.to_string())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let v = petrel.peer("10.25.0.2").expect("peer");
    assert_eq!(v["state"], "Idle", "{v}");
    assert_eq!(v["disabled"], true);
    assert!(petrel.best("10.250.0.0/24").is_none());
    // A soft reset of a disabled peer is refused with a reason.
    let (code, _, err) = cli(&["reset", "frr", "--soft", "in"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is disabled; enable it first"), "{err}");

    assert_eq!(cli(&["enable", "frr"]).0, Some(0));
    petrel.wait_established("10.25.0.2", 30);
    petrel.wait_route("10.250.0.0/24", 15);
}

/// An edit that makes a BGPPeer invalid (a keepalive time above a third of
/// the hold time: the planner's check, past any schema) keeps its last
/// valid version in force: the session stays up, and the problem says so.
#[test]
fn an_edit_that_breaks_a_peer_keeps_its_last_valid_version_and_its_session() {
    let mut lab = common::lab("lg");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.6.0.1/24"], &["10.6.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.6.0.2
 no bgp ebgp-requires-policy
 neighbor 10.6.0.1 remote-as 65001
 neighbor 10.6.0.1 timers connect 1
"#,
    );
    let peer = |keepalive: &str| {
        petrel_yaml(
            65001,
            "10.6.0.1",
            &["10.6.0.1"],
            &format!(
                "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: frr}}\nspec: {{peerIP: 10.6.0.2, asNumber: 65002, holdTime: 9s, keepaliveTime: {keepalive}}}\n"
            ),
        )
    };
    let petrel = lab.petrel(&p, "node-1", &peer("3s"));
    petrel.wait_established("10.6.0.2", 30);
    let flaps = |st: &serde_json::Value| st["flaps"].as_u64().unwrap_or(0);
    let before = flaps(&petrel.peer("10.6.0.2").expect("peer"));
    petrel.reconfigure(&peer("5s"));
    wait_until(20, "the problem to be reported", || {
        let log = std::fs::read_to_string(&petrel.log).unwrap_or_default();
        log.contains("last valid version of this BGPPeer stays in force")
            .then_some(())
            .ok_or_else(|| petrel.log_tail())
    });
    // Longer than a reset and a new session would take.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let st = petrel
        .peer("10.6.0.2")
        .expect("the peer is still configured");
    assert_eq!(st["state"], "Established", "{st}");
    assert_eq!(flaps(&st), before, "the session was reset: {st}");
    // Fixed again: applied as usual.
    petrel.reconfigure(&peer("2s"));
    petrel.wait_established("10.6.0.2", 30);
}
