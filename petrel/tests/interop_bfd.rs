//! BFD against FRR's bfdd and BIRD 2, each in its own namespace: sessions
//! come up with the profile's timers; when the path from a peer fails (a
//! drop rule, so the link itself stays up), petrel's BFD notices within
//! the detection time, ends that BGP session with Cease / BFD Down, and
//! the peer's routes leave petrel's RIB and kernel, while the hold timer
//! (90 s) has not come close; with the path back, everything returns. A
//! profile's timer change goes through Poll/Final without a flap.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lab, petrel_yaml, wait_until};

/// `nft` inside `ns`, panicking on failure.
fn nft(ns: &str, rule: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", rule])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {rule} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `petrel bfd -o json`: the agent's BFD sessions.
fn petrel_bfd(p: &common::Petrel) -> serde_json::Value {
    let out = Command::new(&p.bin)
        .args(["bfd", "-o", "json", "--socket"])
        .arg(&p.socket)
        .output()
        .expect("run petrel bfd");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The agent's `/metrics`, read inside its namespace.
fn metrics(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "5"])
        .arg("http://127.0.0.1:9479/metrics")
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// FRR's view of its BFD session with `peer` (`Null` if it has none).
fn frr_bfd_peer(lab: &Lab, ns: &str, peer: &str) -> serde_json::Value {
    let v = lab.vtysh_json(ns, "show bfd peers json");
    v.as_array()
        .and_then(|a| a.iter().find(|p| p["peer"] == peer))
        .cloned()
        .unwrap_or_default()
}

fn frr_bfd_state(lab: &Lab, ns: &str, peer: &str) -> String {
    frr_bfd_peer(lab, ns, peer)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn bird_bfd_up(lab: &Lab, sock: &std::path::Path, peer: &str) -> bool {
    lab.birdc(sock, "show bfd sessions")
        .lines()
        .any(|l| l.contains(peer) && l.contains("Up"))
}

/// Waits (bounded) until `prefix` leaves petrel's kernel table; returns how
/// long that took from `from`.
fn wait_gone(p: &common::Petrel, prefix: &str, from: Instant, secs: u64) -> Duration {
    for _ in 0..(secs * 100) {
        if p.kernel_route(prefix).is_none() {
            return from.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{prefix} still in petrel's kernel {secs} s after the cut; log:\n{}",
        p.log_tail()
    );
}

#[test]
fn bfd_with_frr_and_bird_brings_bgp_down_at_once_when_the_path_fails() {
    let mut lab = common::lab("bf");
    let p = lab.ns("p");
    let f = lab.ns("f");
    let b = lab.ns("b");
    lab.link(&p, &f, "eth0", &["10.15.0.1/24"], &["10.15.0.2/24"]);
    lab.link(&p, &b, "eth1", &["10.16.0.1/24"], &["10.16.0.2/24"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
bfd
 profile fast
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
 !
!
router bgp 65002
 bgp router-id 10.15.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.15.0.1 remote-as 65001
 neighbor 10.15.0.1 timers connect 1
 neighbor 10.15.0.1 bfd
 neighbor 10.15.0.1 bfd profile fast
 address-family ipv4 unicast
  network 10.99.2.0/24
 exit-address-family
"#,
    );
    lab.start_frr_bfdd(&f);
    let sock = lab.bird(
        &b,
        r#"router id 10.16.0.2;
protocol device { }
protocol bfd {
  interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
}
protocol static { ipv4; route 10.99.3.0/24 blackhole; }
protocol bgp petrel {
  local 10.16.0.2 as 65003;
  neighbor 10.16.0.1 as 65001;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  bfd on;
  ipv4 { import all; export all; };
}
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.15.0.1",
        &["10.15.0.1"],
        r#"apiVersion: petrel.dev/v1alpha1
kind: BFDProfile
metadata: {name: fast}
spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: frr}
spec: {peerIP: 10.15.0.2, asNumber: 65002, bfdProfile: fast}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: bird}
spec: {peerIP: 10.16.0.2, asNumber: 65003, bfdProfile: fast}
"#,
    );
    let petrel = lab.petrel(&p, "node-1", &yaml);
    petrel.wait_established("10.15.0.2", 30);
    petrel.wait_established("10.16.0.2", 30);
    wait_until(30, "BFD Up at FRR and BIRD", || {
        let frr = frr_bfd_state(&lab, &f, "10.15.0.1");
        let bird = bird_bfd_up(&lab, &sock, "10.16.0.1");
        if frr == "up" && bird {
            Ok(())
        } else {
            Err(format!(
                "FRR {frr:?}, BIRD up {bird}; FRR: {}; BIRD: {}",
                lab.vtysh(&f, "show bfd peers"),
                lab.birdc(&sock, "show bfd sessions")
            ))
        }
    });
    // FRR negotiated our 100 ms: its detection time is 3 x 100 ms.
    let frr_peer = frr_bfd_peer(&lab, &f, "10.15.0.1");
    assert!(frr_peer.is_object(), "FRR has no BFD peer 10.15.0.1");
    assert_eq!(frr_peer["remote-receive-interval"], 100, "{frr_peer}");
    assert_eq!(frr_peer["remote-transmit-interval"], 100, "{frr_peer}");
    assert_eq!(frr_peer["remote-detect-multiplier"], 3, "{frr_peer}");
    // And petrel shows its side: in `petrel peers`, `petrel bfd` and the
    // metrics.
    wait_until(10, "petrel to show both BFD sessions up", || {
        let all = petrel_bfd(&petrel);
        let ups = all
            .as_array()
            .map(|a| a.iter().filter(|s| s["state"] == "up").count())
            .unwrap_or(0);
        if ups == 2 {
            Ok(())
        } else {
            Err(format!("{all}"))
        }
    });
    let peer = petrel.peer("10.15.0.2").expect("the FRR peer");
    assert_eq!(peer["bfd"]["state"], "up", "{peer}");
    assert_eq!(peer["bfd"]["remote_state"], "up", "{peer}");
    assert_eq!(peer["bfd"]["detection_time_ms"], 300, "{peer}");
    assert_eq!(peer["bfd"]["transmit_interval_ms"], 100, "{peer}");
    assert_eq!(peer["bfd"]["remote_detect_multiplier"], 3, "{peer}");
    assert_ne!(peer["bfd"]["remote_discriminator"], 0, "{peer}");
    let m = metrics(&p);
    assert!(
        m.contains(r#"petrel_bfd_session_up{peer="10.15.0.2",hop="single"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"petrel_bfd_control_packets_total{peer="10.15.0.2",hop="single",direction="received"}"#),
        "{m}"
    );
    petrel.wait_route("10.99.2.0/24", 30);
    petrel.wait_route("10.99.3.0/24", 30);
    // A slower profile takes effect by Poll/Final: FRR reads the new
    // intervals, and neither BFD session went down for it.
    let downs = |lab: &Lab| -> u64 {
        let v = lab.vtysh_json(&f, "show bfd peers counters json");
        v.as_array()
            .and_then(|a| a.iter().find(|p| p["peer"] == "10.15.0.1"))
            .and_then(|p| p["session-down"].as_u64())
            .unwrap_or(u64::MAX)
    };
    let before = downs(&lab);
    assert_ne!(
        before,
        u64::MAX,
        "{}",
        lab.vtysh(&f, "show bfd peers counters json")
    );
    petrel.reconfigure(&yaml.replace(
        "spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}",
        "spec: {receiveInterval: 200, transmitInterval: 200, detectMultiplier: 3}",
    ));
    wait_until(30, "FRR to read the 200 ms intervals", || {
        let p = frr_bfd_peer(&lab, &f, "10.15.0.1");
        if p["remote-transmit-interval"] == 200 && p["remote-receive-interval"] == 200 {
            Ok(())
        } else {
            Err(format!("{p}"))
        }
    });
    assert_eq!(
        downs(&lab),
        before,
        "the timer change flapped FRR's BFD session"
    );
    assert_eq!(frr_bfd_state(&lab, &f, "10.15.0.1"), "up");
    assert!(bird_bfd_up(&lab, &sock, "10.16.0.1"));
    petrel.reconfigure(&yaml);
    wait_until(30, "FRR to read the 100 ms intervals again", || {
        let p = frr_bfd_peer(&lab, &f, "10.15.0.1");
        if p["remote-transmit-interval"] == 100 {
            Ok(())
        } else {
            Err(format!("{p}"))
        }
    });
    assert_eq!(
        downs(&lab),
        before,
        "the timer change flapped FRR's BFD session"
    );
    wait_until(30, "both peers' routes in petrel's kernel", || {
        match (
            petrel.kernel_route("10.99.2.0/24"),
            petrel.kernel_route("10.99.3.0/24"),
        ) {
            (Some(_), Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // The path from FRR fails: nothing from it reaches petrel any more, the
    // link stays up.
    nft(&p, "add table inet cut");
    nft(
        &p,
        "add chain inet cut input { type filter hook input priority -10; policy accept; }",
    );
    let cut = Instant::now();
    nft(&p, "add rule inet cut input iifname eth0 drop");
    let took = wait_gone(&petrel, "10.99.2.0/24", cut, 10);
    eprintln!("FRR's route left petrel's kernel {took:?} after the cut");
    assert!(
        petrel.best("10.99.2.0/24").is_none(),
        "FRR's route is still in petrel's RIB"
    );
    let peer = petrel.peer("10.15.0.2").expect("the FRR peer");
    assert_ne!(peer["state"], "Established", "{peer}");
    assert_eq!(peer["bfd"]["state"], "down", "{peer}");
    assert_eq!(
        peer["bfd"]["diagnostic"], "control detection time expired",
        "{peer}"
    );
    assert!(
        peer.to_string().contains("BFD"),
        "the session's last error does not say BFD: {peer}"
    );
    // And FRR no longer has petrel's routes: the Cease reached it.
    wait_until(10, "petrel's pod CIDR gone from FRR", || {
        let v = lab.vtysh_json(&f, "show bgp ipv4 unicast 10.244.1.0/24 json");
        match v["paths"].as_array() {
            Some(p) if !p.is_empty() => Err(format!("{v}")),
            _ => Ok(()),
        }
    });
    // BIRD's session is untouched.
    assert!(petrel.kernel_route("10.99.3.0/24").is_some());
    assert_eq!(
        petrel.peer("10.16.0.2").expect("bird")["state"],
        "Established"
    );
    // The path returns: BFD, then BGP, then the route.
    nft(&p, "delete table inet cut");
    petrel.wait_established("10.15.0.2", 60);
    petrel.wait_route("10.99.2.0/24", 30);

    // BIRD's turn.
    nft(&p, "add table inet cut");
    nft(
        &p,
        "add chain inet cut input { type filter hook input priority -10; policy accept; }",
    );
    let cut = Instant::now();
    nft(&p, "add rule inet cut input iifname eth1 drop");
    let took = wait_gone(&petrel, "10.99.3.0/24", cut, 10);
    eprintln!("BIRD's route left petrel's kernel {took:?} after the cut");
    assert!(petrel.kernel_route("10.99.2.0/24").is_some());
    nft(&p, "delete table inet cut");
    petrel.wait_established("10.16.0.2", 60);
    petrel.wait_route("10.99.3.0/24", 30);
}

/// Multihop BFD (RFC 5883) with FRR one router away, and keyed SHA1
/// authentication with BIRD: both come up; the multihop session notices a
/// path cut inside the router; a wrong key keeps BIRD's session Down on
/// both sides, petrel naming the refused digest.
#[test]
fn bfd_multihop_through_a_router_and_keyed_sha1_with_bird() {
    let mut lab = common::lab("bm");
    let p = lab.ns("p");
    let r = lab.ns("r");
    let f = lab.ns("f");
    let b = lab.ns("b");
    lab.link(&p, &r, "eth0", &["10.17.0.1/24"], &["10.17.0.2/24"]);
    lab.link(&r, &f, "eth1", &["10.18.0.1/24"], &["10.18.0.2/24"]);
    lab.link(&p, &b, "eth2", &["10.19.0.1/24"], &["10.19.0.2/24"]);
    testkit::netns::sysctl(&r, &["net.ipv4.ip_forward=1"]).expect("forwarding");
    lab.ip(&p, &["route", "add", "10.18.0.0/24", "via", "10.17.0.2"]);
    lab.ip(&f, &["route", "add", "10.17.0.0/24", "via", "10.18.0.1"]);
    lab.frr(
        &f,
        r#"frr defaults traditional
hostname frr
bfd
 profile mh
  receive-interval 200
  transmit-interval 200
 !
!
router bgp 65004
 bgp router-id 10.18.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.17.0.1 remote-as 65001
 neighbor 10.17.0.1 ebgp-multihop 2
 neighbor 10.17.0.1 update-source 10.18.0.2
 neighbor 10.17.0.1 timers connect 1
 neighbor 10.17.0.1 bfd
 neighbor 10.17.0.1 bfd profile mh
 address-family ipv4 unicast
  network 10.99.4.0/24
 exit-address-family
"#,
    );
    lab.start_frr_bfdd(&f);
    let sock = lab.bird(
        &b,
        r#"router id 10.19.0.2;
protocol device { }
protocol bfd {
  interface "*" {
    min rx interval 200 ms; min tx interval 200 ms; multiplier 3;
    authentication keyed sha1;
    password "s3cret-bfd" { id 7; };
  };
}
protocol static { ipv4; route 10.99.5.0/24 blackhole; }
protocol bgp petrel {
  local 10.19.0.2 as 65005;
  neighbor 10.19.0.1 as 65001;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  bfd on;
  ipv4 { import all; export all; };
}
"#,
    );
    let yaml = petrel_yaml(
        65001,
        "10.17.0.1",
        &["10.17.0.1"],
        r#"apiVersion: petrel.dev/v1alpha1
kind: BFDProfile
metadata: {name: mh}
spec: {receiveInterval: 200, transmitInterval: 200, detectMultiplier: 3}
---
apiVersion: petrel.dev/v1alpha1
kind: BFDProfile
metadata: {name: keyed}
spec:
  receiveInterval: 200
  transmitInterval: 200
  authentication: {type: keyed-sha1, keyID: 7, secret: {file: bfd-key}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: frr}
spec: {peerIP: 10.18.0.2, asNumber: 65004, ebgpMultihop: 2, sourceAddress: 10.17.0.1, bfdProfile: mh}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: bird}
spec: {peerIP: 10.19.0.2, asNumber: 65005, bfdProfile: keyed}
"#,
    );
    // The key file sits beside the configuration (a relative path).
    let petrel = {
        let dir = lab_dir_for(&lab, &p);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("bfd-key"), "s3cret-bfd\n").expect("key");
        lab.petrel(&p, "node-1", &yaml)
    };
    petrel.wait_established("10.18.0.2", 30);
    petrel.wait_established("10.19.0.2", 30);
    wait_until(30, "BFD Up at FRR (multihop) and BIRD (keyed SHA1)", || {
        let all = petrel_bfd(&petrel);
        let find = |peer: &str| {
            all.as_array()
                .and_then(|a| a.iter().find(|s| s["peer"] == peer))
                .cloned()
                .unwrap_or_default()
        };
        let (mh, keyed) = (find("10.18.0.2"), find("10.19.0.2"));
        if mh["state"] == "up"
            && mh["multihop"] == true
            && keyed["state"] == "up"
            && frr_bfd_state(&lab, &f, "10.17.0.1") == "up"
            && bird_bfd_up(&lab, &sock, "10.19.0.1")
        {
            Ok(())
        } else {
            Err(format!(
                "petrel: {all}; FRR: {}; BIRD: {}",
                lab.vtysh(&f, "show bfd peers"),
                lab.birdc(&sock, "show bfd sessions")
            ))
        }
    });
    let frr_peer = frr_bfd_peer(&lab, &f, "10.17.0.1");
    assert!(frr_peer.is_object(), "FRR has no BFD peer 10.17.0.1");
    assert_eq!(frr_peer["multihop"], true, "{frr_peer}");
    petrel.wait_route("10.99.4.0/24", 30);

    // The path breaks inside the router: FRR's packets no longer reach us.
    nft(&r, "add table inet cut");
    nft(
        &r,
        "add chain inet cut through { type filter hook forward priority 0; policy accept; }",
    );
    let cut = Instant::now();
    nft(&r, "add rule inet cut through iifname eth1 drop");
    let took = wait_gone(&petrel, "10.99.4.0/24", cut, 10);
    eprintln!("FRR's multihop route left petrel's kernel {took:?} after the cut");
    nft(&r, "delete table inet cut");
    petrel.wait_established("10.18.0.2", 60);

    // A wrong key: BIRD refuses our packets, we refuse its; the session
    // goes down on both sides and stays down, petrel saying why.
    std::fs::write(petrel.dir.join("bfd-key"), "wrong-key\n").expect("key");
    // The file is read at the next poll; touch the configuration too.
    petrel.reconfigure(&yaml);
    wait_until(30, "BIRD's BFD session down over the wrong key", || {
        let all = petrel_bfd(&petrel);
        let s = all
            .as_array()
            .and_then(|a| a.iter().find(|s| s["peer"] == "10.19.0.2"))
            .cloned()
            .unwrap_or_default();
        let refused = s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("digest or password does not match"));
        if s["state"] != "up" && refused && !bird_bfd_up(&lab, &sock, "10.19.0.1") {
            Ok(())
        } else {
            Err(format!(
                "{s}; BIRD: {}",
                lab.birdc(&sock, "show bfd sessions")
            ))
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let all = petrel_bfd(&petrel);
    let s = all
        .as_array()
        .and_then(|a| a.iter().find(|s| s["peer"] == "10.19.0.2"))
        .cloned()
        .unwrap_or_default();
    assert_ne!(s["state"], "up", "a wrong key brought the session up: {s}");
    assert!(
        s["packets_discarded"].as_u64().unwrap_or(0) > 0,
        "no packet refused: {s}"
    );
    // The right key again: back up.
    std::fs::write(petrel.dir.join("bfd-key"), "s3cret-bfd\n").expect("key");
    petrel.reconfigure(&yaml);
    wait_until(30, "BIRD's BFD session up again", || {
        if bird_bfd_up(&lab, &sock, "10.19.0.1") {
            Ok(())
        } else {
            Err(lab.birdc(&sock, "show bfd sessions"))
        }
    });
}

/// Where [`Lab::petrel`] keeps the agent's configuration for `ns`.
fn lab_dir_for(lab: &Lab, ns: &str) -> std::path::PathBuf {
    lab.root.join(format!("petrel-{ns}"))
}
