//! `/metrics`, `/healthz` and `/readyz` of a live agent peering with FRR.

mod common;

use common::{petrel_yaml, wait_until};

/// GET on the agent's metrics address inside its namespace: status and body.
fn get(ns: &str, path: &str) -> (u16, String) {
    let script = format!(
        "import urllib.request, urllib.error\n\
         try:\n    r = urllib.request.urlopen('http://127.0.0.1:9479{path}', timeout=5)\n    print(r.status); print(r.read().decode())\n\
         except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n\
         except Exception as e:\n    print(0); print(e)\n"
    );
    let out = common::run("ip", &["netns", "exec", ns, "python3", "-c", &script]);
    let text = out;
    let (code, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_scrape_shows_sessions_messages_prefixes_and_the_fib() {
    let mut lab = common::lab("mx");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.24.0.1/24"], &["10.24.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.24.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
 neighbor 10.24.0.1 remote-as 65001
 neighbor 10.24.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.240.0.0/24
 exit-address-family
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.24.0.1",
        &["10.24.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.24.0.2, asNumber: 65002}\n",
    );
    // No BGPConfiguration yet: alive, not ready, and it says why.
    let petrel = lab.petrel(
        &p,
        "node-1",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n",
    );
    wait_until(10, "the health endpoint", || {
        let (code, body) = get(&p, "/healthz");
        (code == 200 && body.contains("no usable configuration"))
            .then_some(())
            .ok_or(format!("{code} {body}"))
    });
    let (code, body) = get(&p, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no usable BGPConfiguration"), "{body}");
    petrel.reconfigure(&yaml);
    petrel.wait_established("10.24.0.2", 30);
    petrel.wait_route("10.240.0.0/24", 15);
    assert_eq!(get(&p, "/healthz").0, 200);
    wait_until(20, "ready (the initial table installed)", || {
        let (code, body) = get(&p, "/readyz");
        (code == 200).then_some(()).ok_or(format!("{code} {body}"))
    });
    let (code, body) = get(&p, "/metrics");
    assert_eq!(code, 200, "{body}");
    let peer = r#"{peer="10.24.0.2",name="frr""#;
    for (prefix, want) in [
        (format!("petrel_bgp_peer_up{peer}}}"), 1.0),
        (format!("petrel_bgp_peer_state{peer}}}"), 6.0),
        (
            format!("petrel_bgp_prefixes{peer},afi_safi=\"ipv4-unicast\",kind=\"accepted\"}}"),
            1.0,
        ),
        ("petrel_rib_prefixes".to_string(), 3.0),
        ("petrel_fib_synced".to_string(), 1.0),
    ] {
        assert_eq!(sample(&body, &prefix), Some(want), "{prefix} in\n{body}");
    }
    let updates = sample(
        &body,
        &format!("petrel_bgp_messages_received_total{peer},type=\"update\"}}"),
    );
    assert!(updates.is_some_and(|u| u >= 1.0), "{body}");
    // Our blackholes for the two pod CIDRs and FRR's route.
    assert_eq!(
        sample(&body, "petrel_fib_routes_installed"),
        Some(3.0),
        "{body}"
    );
    assert!(body.contains("# EOF"), "OpenMetrics ends with EOF");

    // A session that goes down shows in the next scrape, with the reason.
    lab.kill(&format!("bgpd-{f}"));
    wait_until(20, "the session down in the metrics", || {
        let (_, body) = get(&p, "/metrics");
        (sample(&body, &format!("petrel_bgp_peer_up{peer}}}")) == Some(0.0)
            && body.contains("petrel_bgp_peer_last_error_info"))
        .then_some(())
        .ok_or(body)
    });
}

/// A FIB task that stops (here: the `--onlink-interface` it must route
/// through does not exist) makes `/readyz` fail, naming the task and why,
/// while the rest of the agent (its session, `/healthz`) goes on.
#[test]
fn a_stopped_fib_task_makes_readyz_fail_and_says_why() {
    let mut lab = common::lab("mr");
    let p = lab.ns("p");
    let f = lab.ns("f");
    lab.link(&p, &f, "eth0", &["10.29.0.1/24"], &["10.29.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
router bgp 65002
 bgp router-id 10.29.0.2
 no bgp ebgp-requires-policy
 timers bgp 3 9
 neighbor 10.29.0.1 remote-as 65001
 neighbor 10.29.0.1 timers connect 1
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.29.0.1",
        &["10.29.0.1"],
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: frr}\nspec: {peerIP: 10.29.0.2, asNumber: 65002}\n",
    );
    let petrel = lab.petrel_with(
        &p,
        "node-1",
        &yaml,
        &["--onlink-interface", "no-such-link0"],
    );
    petrel.wait_established("10.29.0.2", 30);
    wait_until(20, "/readyz to name the stopped FIB task", || {
        let (code, body) = get(&p, "/readyz");
        (code == 503 && body.contains("the FIB task stopped") && body.contains("no-such-link0"))
            .then_some(())
            .ok_or(format!("{code} {body}"))
    });
    let (code, body) = get(&p, "/healthz");
    assert_eq!(code, 200, "alive while not ready: {body}");
}
