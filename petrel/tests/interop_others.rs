//! petrel against BIRD 2, GoBGP and ExaBGP (Debian packages), each in its own
//! network namespace.

mod common;

use common::{petrel_yaml, wait_until};

#[test]
fn bird_ebgp_over_ipv6_transport_with_md5_both_families() {
    let mut lab = common::lab("be");
    let p = lab.ns("p");
    let b = lab.ns("b");
    lab.link(
        &p,
        &b,
        "eth0",
        &["10.5.0.1/24", "fd00:5::1/64"],
        &["10.5.0.2/24", "fd00:5::2/64"],
    );
    let sock = lab.bird(
        &b,
        r#"router id 10.5.0.2;
protocol device { }
protocol static s4 { ipv4; route 10.50.0.0/24 blackhole; }
protocol static s6 { ipv6; route fd00:50::/48 blackhole; }
protocol bgp petrel {
  local fd00:5::2 as 65005;
  neighbor fd00:5::1 as 65001;
  password "bird-key";
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 { import all; export all; next hop address 10.5.0.2; };
  ipv6 { import all; export all; };
}
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.5.0.1",
            &["10.5.0.1", "fd00:5::1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bird}\nspec: {peerIP: \"fd00:5::2\", asNumber: 65005, password: {file: key}}\n",
        ),
    );
    std::fs::write(petrel.dir.join("key"), "bird-key").expect("key");
    // Touch the config so the key file is read with it.
    petrel.reconfigure(&std::fs::read_to_string(petrel.dir.join("petrel.yaml")).expect("yaml"));
    petrel.wait_established("fd00:5::2", 30);
    let r6 = petrel.wait_route("fd00:50::/48", 15);
    assert_eq!(r6["as_path"][0]["asns"][0], 65005);
    let r4 = petrel.wait_route("10.50.0.0/24", 15);
    assert_eq!(r4["next_hop"], "10.5.0.2");
    for (table, prefix, via) in [
        ("master6", "fd00:244:1::/64", "fd00:5::1"),
        ("master4", "10.244.1.0/24", "10.5.0.1"),
    ] {
        wait_until(15, &format!("{prefix} in BIRD"), || {
            let out = lab.birdc(&sock, &format!("show route for {prefix} table {table} all"));
            (out.contains(prefix) && out.contains("AS65001") && out.contains(via))
                .then_some(())
                .ok_or(out)
        });
    }
    // On a shared link, the IPv6 next hop comes with petrel's link-local address (RFC 2545).
    let out = lab.birdc(&sock, "show route for fd00:244:1::/64 table master6 all");
    let nh = out
        .lines()
        .find(|l| l.contains("BGP.next_hop"))
        .unwrap_or_default();
    assert!(nh.contains("fd00:5::1") && nh.contains("fe80:"), "{out}");
}

#[test]
fn bird_ibgp_over_ipv4_transport() {
    let mut lab = common::lab("bi");
    let p = lab.ns("p");
    let b = lab.ns("b");
    lab.link(&p, &b, "eth0", &["10.6.0.1/24"], &["10.6.0.2/24"]);
    let sock = lab.bird(
        &b,
        r#"router id 10.6.0.2;
protocol device { }
protocol static s4 { ipv4; route 10.60.0.0/24 blackhole; }
protocol bgp petrel {
  local 10.6.0.2 as 65001;
  neighbor 10.6.0.1 as 65001;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  ipv4 { import all; export all; next hop self; };
}
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.6.0.1",
            &["10.6.0.1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bird}\nspec: {peerIP: 10.6.0.2, asNumber: 65001}\n",
        ),
    );
    petrel.wait_established("10.6.0.2", 30);
    let r = petrel.wait_route("10.60.0.0/24", 15);
    assert_eq!(r["local_pref"], 100);
    wait_until(15, "10.244.1.0/24 in BIRD", || {
        let out = lab.birdc(&sock, "show route for 10.244.1.0/24 all");
        (out.contains("10.244.1.0/24") && out.contains("BGP.local_pref: 100"))
            .then_some(())
            .ok_or(out)
    });
}

#[test]
fn bird_routes_pass_petrel_filters_both_ways() {
    let mut lab = common::lab("bf");
    let p = lab.ns("p");
    let b = lab.ns("b");
    lab.link(&p, &b, "eth0", &["10.23.0.1/24"], &["10.23.0.2/24"]);
    let sock = lab.bird(
        &b,
        r#"router id 10.23.0.2;
protocol device { }
protocol static s4 { ipv4; route 10.230.0.0/24 blackhole; route 10.231.0.0/24 blackhole; }
protocol bgp petrel {
  local 10.23.0.2 as 65023;
  neighbor 10.23.0.1 as 65001;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 1;
  ipv4 { import all; export all; };
}
"#,
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.23.0.1",
            &["10.23.0.1"],
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: bird}
spec: {peerIP: 10.23.0.2, asNumber: 65023, filters: [edge]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: edge}
spec:
  import:
  - match: {prefix: {cidr: 10.231.0.0/24}}
    action: Reject
  - match: {originAS: 65023}
    set: {localPref: 250, addCommunities: ["65001:23"]}
  export:
  - match: {prefix: {cidr: 10.244.0.0/16, le: 24}}
    set: {med: 42, addLargeCommunities: ["65001:1:2"]}
    action: Accept
  - action: Reject
"#,
        ),
    );
    petrel.wait_established("10.23.0.2", 30);
    let r = petrel.wait_route("10.230.0.0/24", 15);
    assert_eq!(r["local_pref"], 250, "{r}");
    assert!(r["communities"].to_string().contains("65001:23"), "{r}");
    assert!(petrel.best("10.231.0.0/24").is_none(), "rejected on import");
    wait_until(
        15,
        "the pod CIDR in BIRD with the MED and large community",
        || {
            let out = lab.birdc(&sock, "show route for 10.244.1.0/24 all");
            (out.contains("BGP.med: 42") && out.contains("(65001, 1, 2)"))
                .then_some(())
                .ok_or(out)
        },
    );
    // The IPv6 pod CIDR matches no accept rule: the final reject keeps it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let out = lab.birdc(&sock, "show route for fd00:244:1::/64 all");
    assert!(!out.contains("fd00:244:1::/64"), "{out}");
}

#[test]
fn gobgp_ebgp_both_families() {
    let mut lab = common::lab("gb");
    let p = lab.ns("p");
    let g = lab.ns("g");
    lab.link(
        &p,
        &g,
        "eth0",
        &["10.7.0.1/24", "fd00:7::1/64"],
        &["10.7.0.2/24", "fd00:7::2/64"],
    );
    lab.gobgp(
        &g,
        r#"[global.config]
  as = 4200000007
  router-id = "10.7.0.2"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.7.0.1"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#,
    );
    lab.gobgp_cli(&g, &["global", "rib", "add", "10.70.0.0/24", "-a", "ipv4"]);
    lab.gobgp_cli(&g, &["global", "rib", "add", "fd00:70::/48", "-a", "ipv6"]);
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.7.0.1",
            &["10.7.0.1", "fd00:7::1"],
            "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: gobgp}\nspec: {peerIP: 10.7.0.2, asNumber: 4200000007}\n",
        ),
    );
    petrel.wait_established("10.7.0.2", 30);
    let r = petrel.wait_route("10.70.0.0/24", 15);
    assert_eq!(r["as_path"][0]["asns"][0], 4_200_000_007u64);
    petrel.wait_route("fd00:70::/48", 15);
    for (fam, prefix) in [("ipv4", "10.244.1.0/24"), ("ipv6", "fd00:244:1::/64")] {
        wait_until(15, &format!("{prefix} in GoBGP"), || {
            let out = lab.gobgp_cli(&g, &["global", "rib", "-a", fam]);
            (out.contains(prefix) && out.contains("65001"))
                .then_some(())
                .ok_or(out)
        });
    }
}

#[test]
fn exabgp_unknown_transitive_attribute_is_passed_on_with_partial_bit() {
    let mut lab = common::lab("ex");
    let p = lab.ns("p");
    let s = lab.ns("s");
    let r = lab.ns("r");
    lab.link(&p, &s, "eth0", &["10.8.0.1/24"], &["10.8.0.2/24"]);
    lab.link(&p, &r, "eth1", &["10.9.0.1/24"], &["10.9.0.2/24"]);
    // The sender announces a route carrying unknown optional transitive
    // attribute 99 (flags 0xC0).
    lab.exabgp(
        &s,
        r#"neighbor 10.8.0.1 {
    router-id 10.8.0.2;
    local-address 10.8.0.2;
    local-as 65010;
    peer-as 65001;
    hold-time 9;
    family { ipv4 unicast; }
    static {
        route 10.80.0.0/24 next-hop 10.8.0.2 attribute [ 0x63 0xc0 0x0a0b0c0d ];
    }
}
"#,
    );
    // The receiver writes every UPDATE it gets as JSON.
    let received = lab.root.join("received.json");
    lab.exabgp(
        &r,
        &exabgp_dumping_peer(&received, "10.9.0.2", "10.9.0.1", 65020, 65001, ""),
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            65001,
            "10.8.0.1",
            &["10.8.0.1"],
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: sender}
spec: {peerIP: 10.8.0.2, asNumber: 65010, passive: true}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: receiver}
spec: {peerIP: 10.9.0.2, asNumber: 65020, passive: true, filters: [transit]}
---
# Routes from one external peer reach another only when a filter says so.
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: transit}
spec: {export: [{action: Accept}]}
"#,
        ),
    );
    petrel.wait_established("10.8.0.2", 40);
    petrel.wait_established("10.9.0.2", 40);
    petrel.wait_route("10.80.0.0/24", 15);
    wait_until(20, "the route with attribute 99 at the receiver", || {
        let v = exabgp_update(&received, "10.80.0.0/24")?;
        let attrs = &v["neighbor"]["message"]["update"]["attribute"];
        // ExaBGP names generic attributes by code and flags: Partial (0x20) added.
        let generic = attrs
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.contains("0x63")))
            .ok_or_else(|| format!("no attribute 99 in {attrs}"))?;
        (generic.0.to_ascii_lowercase().contains("0xe0")
            && generic
                .1
                .to_string()
                .to_ascii_lowercase()
                .contains("0a0b0c0d"))
        .then_some(())
        .ok_or_else(|| format!("attribute 99 arrived as {generic:?}"))
    });
}

/// Reads the last UPDATE an ExaBGP JSON dump received for `prefix`.
fn exabgp_update(file: &std::path::Path, prefix: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(prefix) && l.contains("\"announce\""))
        .ok_or_else(|| format!("no announcement of {prefix} yet"))?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

fn exabgp_dumping_peer(
    dump: &std::path::Path,
    me: &str,
    petrel: &str,
    asn: u32,
    petrel_asn: u32,
    extra: &str,
) -> String {
    format!(
        r#"process dump {{
    run /bin/sh -c "cat >> {}";
    encoder json;
}}
neighbor {petrel} {{
    router-id {me};
    local-address {me};
    local-as {asn};
    peer-as {petrel_asn};
    hold-time 9;
    family {{ ipv4 unicast; }}
    api {{
        processes [ dump ];
        receive {{ parsed; update; }}
    }}
    {extra}
}}
"#,
        dump.display()
    )
}

#[test]
fn four_octet_asn_against_a_two_octet_only_peer() {
    let mut lab = common::lab("as");
    let p = lab.ns("p");
    let old = lab.ns("o");
    let new = lab.ns("n");
    lab.link(&p, &old, "eth0", &["10.10.0.1/24"], &["10.10.0.2/24"]);
    lab.link(&p, &new, "eth1", &["10.11.0.1/24"], &["10.11.0.2/24"]);
    // A 2-octet-only speaker sees petrel's AS 4200000001 as AS_TRANS (23456).
    let old_dump = lab.root.join("old.json");
    lab.exabgp(
        &old,
        &exabgp_dumping_peer(
            &old_dump,
            "10.10.0.2",
            "10.10.0.1",
            65010,
            23456,
            "capability { asn4 disable; }\n    static { route 10.81.0.0/24 next-hop 10.10.0.2; }",
        ),
    );
    let new_dump = lab.root.join("new.json");
    lab.exabgp(
        &new,
        &exabgp_dumping_peer(
            &new_dump,
            "10.11.0.2",
            "10.11.0.1",
            65020,
            4_200_000_001,
            "",
        ),
    );
    let petrel = lab.petrel(
        &p,
        "node-1",
        &petrel_yaml(
            4_200_000_001,
            "10.10.0.1",
            &["10.10.0.1"],
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: old}
spec: {peerIP: 10.10.0.2, asNumber: 65010, passive: true}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: new}
spec: {peerIP: 10.11.0.2, asNumber: 65020, passive: true, filters: [transit]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: transit}
spec: {export: [{action: Accept}]}
"#,
        ),
    );
    petrel.wait_established("10.10.0.2", 40);
    petrel.wait_established("10.11.0.2", 40);
    let caps = petrel.peer("10.10.0.2").expect("peer")["capabilities"].to_string();
    assert!(!caps.contains("four-octet-as"), "{caps}");
    let r = petrel.wait_route("10.81.0.0/24", 15);
    assert_eq!(r["as_path"][0]["asns"], serde_json::json!([65010]));
    // The 4-octet peer gets the real path.
    wait_until(20, "10.81.0.0/24 at the 4-octet peer", || {
        let v = exabgp_update(&new_dump, "10.81.0.0/24")?;
        let path = &v["neighbor"]["message"]["update"]["attribute"]["as-path"];
        (*path == serde_json::json!([4_200_000_001u64, 65010]))
            .then_some(())
            .ok_or(path.to_string())
    });
    // The 2-octet peer gets AS_TRANS in AS_PATH and the real ASN in AS4_PATH;
    // ExaBGP merges the two (RFC 6793), so without AS4_PATH it would show 23456.
    wait_until(20, "10.244.1.0/24 at the 2-octet peer", || {
        let v = exabgp_update(&old_dump, "10.244.1.0/24")?;
        let path = &v["neighbor"]["message"]["update"]["attribute"]["as-path"];
        (*path == serde_json::json!([4_200_000_001u64]))
            .then_some(())
            .ok_or(path.to_string())
    });
}
