//! petrel as a route reflector (RFC 4456) for FRR and BIRD 2 clients, one of
//! them a dynamic neighbour from a listen range; ECMP for a prefix both
//! clients announce; and ADD-PATH send to a third client (FRR), which gets
//! both paths and installs ECMP itself.

mod common;

use common::wait_until;

#[test]
fn petrel_reflects_between_clients_and_installs_ecmp() {
    let mut lab = common::lab("rr");
    let p = lab.ns("p");
    let f = lab.ns("f");
    let b = lab.ns("b");
    let c = lab.ns("c");
    lab.link(&p, &f, "eth0", &["10.16.0.1/24"], &["10.16.0.2/24"]);
    lab.link(&p, &b, "eth1", &["10.17.0.1/24"], &["10.17.0.2/24"]);
    lab.link(&p, &c, "eth2", &["10.19.0.1/24"], &["10.19.0.2/24"]);
    // The clients reach each other's next hops through petrel's namespace
    // (kernel routes, which zebra resolves BGP next hops through).
    for (ns, via, dsts) in [
        (&f, "10.16.0.1", ["10.17.0.0/24", "10.19.0.0/24"]),
        (&c, "10.19.0.1", ["10.16.0.0/24", "10.17.0.0/24"]),
    ] {
        for dst in dsts {
            common::run("ip", &["-n", ns, "route", "add", dst, "via", via]);
        }
    }
    // The ADD-PATH client: FRR takes several paths (its receive side is on
    // by default) and installs up to four iBGP paths.
    lab.frr(
        &c,
        r#"frr defaults traditional
hostname frr-c
router bgp 65000
 no bgp network import-check
 bgp router-id 10.19.0.2
 timers bgp 3 9
 neighbor 10.19.0.1 remote-as 65000
 neighbor 10.19.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.98.0.1/32
  maximum-paths ibgp 4
 exit-address-family
"#,
    );
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65000
 bgp router-id 10.16.0.2
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.16.0.1 remote-as 65000
 neighbor 10.16.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.60.0.0/24
  network 10.98.0.1/32
  network 10.99.0.1/32
 exit-address-family
"#,
    );
    let sock = lab.bird(
        &b,
        r#"router id 10.17.0.2;
protocol device { }
protocol static { ipv4; route 10.70.0.0/24 blackhole; route 10.99.0.1/32 blackhole; route 10.16.0.0/24 via 10.17.0.1; }
protocol bgp petrel {
  local 10.17.0.2 as 65000;
  neighbor 10.17.0.1 as 65000;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 { import all; export filter { if proto = "static1" then accept; reject; }; next hop self; add paths rx; };
}
"#,
    );
    let yaml = r#"apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65000, routerID: 10.16.0.1, routeReflectorClusterID: 10.255.255.1, maximumPaths: 4}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDRs: [10.244.1.0/24]}
status: {addresses: [{type: InternalIP, address: 10.16.0.1}]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: frr}
spec: {peerIP: 10.16.0.2, asNumber: 65000, routeReflectorClient: true}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: nodes}
spec: {listenRange: 10.17.0.0/24, asNumber: 65000, routeReflectorClient: true, addPaths: {send: all}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: frr-c}
spec: {peerIP: 10.19.0.2, asNumber: 65000, routeReflectorClient: true, addPaths: {send: all}}
"#;
    let petrel = lab.petrel(&p, "node-1", yaml);
    petrel.wait_established("10.16.0.2", 30);
    // BIRD joins through the listen range: nothing about it is configured.
    petrel.wait_established("10.17.0.2", 30);
    assert_eq!(
        petrel.peer("10.17.0.2").expect("dynamic peer")["dynamic"],
        true
    );

    // FRR's route reaches BIRD, reflected: ORIGINATOR_ID is FRR, the
    // CLUSTER_LIST our cluster ID, the next hop FRR's.
    wait_until(20, "10.60.0.0/24 reflected to BIRD", || {
        let out = lab.birdc(&sock, "show route for 10.60.0.0/24 table master4 all");
        (out.contains("BGP.originator_id: 10.16.0.2")
            && out.contains("BGP.cluster_list: 10.255.255.1")
            && out.contains("BGP.next_hop: 10.16.0.2"))
        .then_some(())
        .ok_or(out)
    });
    // And BIRD's route reaches FRR the same way.
    wait_until(20, "10.70.0.0/24 reflected to FRR", || {
        let v = lab.vtysh_json(&f, "show bgp ipv4 unicast 10.70.0.0/24 json");
        let path = &v["paths"][0];
        let cluster = path["clusterList"]["list"][0].clone();
        (path["originatorId"] == "10.17.0.2" && cluster == "10.255.255.1")
            .then_some(())
            .ok_or(v.to_string())
    });
    // Our own pod CIDR goes to both (not reflected: no ORIGINATOR_ID).
    wait_until(20, "the pod CIDR at BIRD", || {
        let out = lab.birdc(&sock, "show route for 10.244.1.0/24 table master4 all");
        (out.contains("10.244.1.0/24") && !out.contains("originator_id"))
            .then_some(())
            .ok_or(out)
    });

    // Both clients announce 10.99.0.1/32: equal paths, one ECMP route.
    wait_until(20, "an ECMP route in the kernel", || {
        match petrel.kernel_route("10.99.0.1") {
            Some(r) => {
                let mut gws: Vec<String> = r["nexthops"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| h["gateway"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                gws.sort();
                (gws == ["10.16.0.2", "10.17.0.2"])
                    .then_some(())
                    .ok_or(r.to_string())
            }
            None => Err(format!("{:?}", petrel.kernel_routes())),
        }
    });

    // The ADD-PATH client gets both paths for the prefix and installs both.
    wait_until(20, "both paths at the ADD-PATH client", || {
        let v = lab.vtysh_json(&c, "show bgp ipv4 unicast 10.99.0.1/32 json");
        let mut hops: Vec<String> = v["paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        hops.sort();
        (hops == ["10.16.0.2", "10.17.0.2"])
            .then_some(())
            .ok_or(v.to_string())
    });
    let n = lab.vtysh_json(&c, "show bgp neighbors 10.19.0.1 json");
    assert!(
        n.to_string().contains("addPath"),
        "ADD-PATH not negotiated: {n}"
    );
    // FRR takes both as one multipath set (in its kernel they collapse into
    // one gateway here, since both next hops resolve through petrel).
    wait_until(20, "a multipath set at the client", || {
        let v = lab.vtysh_json(&c, "show bgp ipv4 unicast 10.99.0.1/32 json");
        let multipath = v["paths"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["multipath"] == true).count())
            .unwrap_or(0);
        (multipath == 2).then_some(()).ok_or(v.to_string())
    });

    // BIRD takes several paths too (add paths rx): FRR's and frr-c's for
    // 10.98.0.1/32, each with its own ORIGINATOR_ID.
    wait_until(20, "two paths for 10.98.0.1/32 in BIRD", || {
        let out = lab.birdc(&sock, "show route for 10.98.0.1/32 table master4 all");
        (out.contains("BGP.originator_id: 10.16.0.2")
            && out.contains("BGP.originator_id: 10.19.0.2"))
        .then_some(())
        .ok_or(out)
    });

    // `petrel explain` says why each path won or lost and who gets the best.
    let explain = |prefix: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["explain", prefix, "-o", "json", "--socket"])
            .arg(&petrel.socket)
            .output()
            .expect("petrel runs")
    };
    let out = explain("10.99.0.1/32");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let paths = v["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 2, "{v}");
    assert_eq!(paths[0]["best"], true);
    assert!(paths.iter().all(|p| p["multipath"] == true), "{v}");
    assert_eq!(
        paths[1]["lost_because"], "higher router ID (or ORIGINATOR_ID)",
        "{v}"
    );
    let best_from = paths[0]["from"].as_str().expect("from").to_string();
    for peer in v["peers"].as_array().expect("peers") {
        if peer["peer"] == best_from.as_str() {
            assert_eq!(peer["why_not"], "the route came from this peer", "{v}");
        } else {
            assert_eq!(peer["sent"], true, "{v}");
        }
    }
    let out = explain("10.123.0.0/24");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no path for 10.123.0.0/24"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
