//! Peers and routes added through the API: a peer added with `petrel peer
//! add` establishes with FRR, a route added with `petrel route add` reaches
//! FRR with its community, both survive a configuration reload, and both go
//! away when deleted. Bad requests are refused with the field named; a peer
//! from the configuration cannot be deleted through the API.

mod common;

use std::process::{Command, Output};

use common::{Lab, Petrel, petrel_yaml, wait_until};

fn cli(p: &Petrel, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .arg("--socket")
        .arg(&p.socket)
        .output()
        .expect("petrel runs")
}

fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn frr_has(lab: &Lab, ns: &str, prefix: &str) -> Option<serde_json::Value> {
    let v = lab.vtysh_json(ns, &format!("show bgp ipv4 unicast {prefix} json"));
    v["paths"].as_array().and_then(|p| p.first().cloned())
}

#[test]
fn api_peers_and_paths_live_apart_from_the_configuration() {
    let mut lab = common::lab("api");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.40.0.1/24"], &["10.40.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.40.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.40.0.1 remote-as 65001
 neighbor 10.40.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.70.0.0/24
 exit-address-family
"#,
    );
    // The configuration has one peer of its own, which never comes up.
    let config = petrel_yaml(
        65001,
        "10.40.0.1",
        &["10.40.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: static}\nspec: {peerIP: 10.40.0.9, asNumber: 65009}\n",
    );
    let petrel = lab.petrel(&p, "node-1", &config);
    wait_until(20, "the API", || {
        petrel
            .peer("10.40.0.9")
            .map(|_| ())
            .ok_or_else(|| petrel.log_tail())
    });

    // Mistakes are refused, naming the field.
    let e = refused(&cli(
        &petrel,
        &[
            "peer",
            "add",
            "bad",
            "--address",
            "10.40.0.300",
            "--asn",
            "65002",
        ],
    ));
    assert!(e.contains("peer.address"), "{e}");
    let e = refused(&cli(
        &petrel,
        &[
            "peer",
            "add",
            "bad",
            "--address",
            "10.40.0.2",
            "--asn",
            "65002",
            "--hold-time",
            "2",
        ],
    ));
    assert!(e.contains("peer.hold_time_seconds"), "{e}");
    let e = refused(&cli(
        &petrel,
        &[
            "peer",
            "add",
            "bad",
            "--address",
            "10.40.0.2",
            "--asn",
            "65002",
            "--filter",
            "nope",
        ],
    ));
    assert!(e.contains("peer.filters") && e.contains("nope"), "{e}");

    // A good one establishes with FRR and brings its routes.
    let out = cli(
        &petrel,
        &[
            "peer",
            "add",
            "frr",
            "--address",
            "10.40.0.2",
            "--asn",
            "65002",
            "--hold-time",
            "9",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    petrel.wait_established("10.40.0.2", 30);
    petrel.wait_route("10.70.0.0/24", 20);
    let e = refused(&cli(
        &petrel,
        &[
            "peer",
            "add",
            "frr",
            "--address",
            "10.40.0.3",
            "--asn",
            "65002",
        ],
    ));
    assert!(e.contains("exists"), "{e}");

    // A route added by a client reaches FRR with its community.
    let out = cli(
        &petrel,
        &[
            "route",
            "add",
            "10.71.0.0/24",
            "--client",
            "ctl",
            "--community",
            "65001:7",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let e = refused(&cli(
        &petrel,
        &["route", "add", "10.72.0.0/24", "--community", "x:y"],
    ));
    assert!(e.contains("communities[0]"), "{e}");
    wait_until(10, "the API route at FRR", || {
        match frr_has(&lab, &f, "10.71.0.0/24") {
            Some(path) if path["community"]["string"] == "65001:7" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // The peer's Adj-RIBs: what it sent, and what it is sent (never its own
    // routes back).
    let prefixes = |args: &[&str]| -> Vec<String> {
        let out = cli(&petrel, args);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["prefix"].as_str().map(str::to_string))
            .collect()
    };
    // FRR sends our own routes back; the AS loop check rejects them, and the
    // listing says so.
    let expected: Vec<(String, bool)> = vec![
        ("10.70.0.0/24".into(), false),
        ("10.71.0.0/24".into(), true),
        ("10.244.1.0/24".into(), true),
    ];
    wait_until(10, "the Adj-RIB-In", || {
        let out = cli(&petrel, &["rib", "-o", "json", "--received-from", "frr"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let seen: Vec<(String, bool)> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["prefix"].as_str().unwrap_or_default().to_string(),
                    r["paths"][0]["rejected"] == true,
                )
            })
            .collect();
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    wait_until(10, "the Adj-RIB-Out", || {
        let out = prefixes(&["rib", "-4", "-o", "json", "--advertised-to", "10.40.0.2"]);
        if out == ["10.71.0.0/24", "10.244.1.0/24"] {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
    let e = refused(&cli(&petrel, &["rib", "--received-from", "nobody"]));
    assert!(e.contains("nobody"), "{e}");

    // The summary's counters agree with the listing; its table ends with the
    // path count (the benchmark harness reads the last number).
    let out = cli(&petrel, &["rib", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let routes = listed.as_array().expect("routes");
    let paths: usize = routes
        .iter()
        .map(|r| r["paths"].as_array().map_or(0, Vec::len))
        .sum();
    let out = cli(&petrel, &["rib", "--summary", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        summary["prefixes"].as_u64(),
        Some(routes.len() as u64),
        "{summary}"
    );
    assert_eq!(summary["paths"].as_u64(), Some(paths as u64), "{summary}");
    assert!(
        summary["attribute_sets"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );
    let out = cli(&petrel, &["rib", "--summary"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let last = table.split_whitespace().last().unwrap_or_default();
    assert_eq!(last, paths.to_string(), "{table}");
    let out = cli(&petrel, &["rib", "--summary", "10.71.0.0/24"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {e}");
    assert!(e.contains("--summary"), "{e}");

    // A configuration reload keeps both.
    let flaps = petrel.peer("10.40.0.2").expect("peer")["flaps"].clone();
    petrel.reconfigure(&format!("{config}\n# reloaded\n"));
    std::thread::sleep(std::time::Duration::from_millis(800));
    let peer = petrel.peer("10.40.0.2").expect("API peer kept");
    assert_eq!(peer["state"], "Established");
    assert_eq!(peer["flaps"], flaps, "no reset: {peer}");
    assert!(frr_has(&lab, &f, "10.71.0.0/24").is_some());
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&petrel, &["status", "-o", "json"]).stdout)
            .expect("status json");
    let intent = status["advertisements"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["prefix"] == "10.71.0.0/24").cloned())
        .expect("API path in status");
    assert_eq!(intent["kind"], "API path");
    assert_eq!(intent["service"], "ctl");

    // The configuration's peer is not the API's to delete.
    let e = refused(&cli(&petrel, &["peer", "del", "static"]));
    assert!(e.contains("from the configuration"), "{e}");

    // Deleting withdraws.
    let e = refused(&cli(
        &petrel,
        &["route", "del", "10.99.0.0/24", "--client", "ctl"],
    ));
    assert!(e.contains("has not added"), "{e}");
    let out = cli(&petrel, &["route", "del", "--all", "--client", "ctl"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 route(s) withdrawn"));
    wait_until(10, "the withdrawal at FRR", || {
        frr_has(&lab, &f, "10.71.0.0/24").map_or(Ok(()), |p| Err(p.to_string()))
    });
    let out = cli(&petrel, &["peer", "del", "10.40.0.2"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(10, "the API peer to go", || {
        petrel
            .peer("10.40.0.2")
            .map_or(Ok(()), |p| Err(p.to_string()))
    });
    assert!(
        petrel.peer("10.40.0.9").is_some(),
        "the configured peer stays"
    );
}
