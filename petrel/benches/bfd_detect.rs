//! BFD failure detection (a benchmark, not a test): the time from a path
//! failure to the peer's route leaving the kernel, petrel beside FRR (bfdd
//! and zebra) doing the same work in the same run, at 300 ms × 3 and
//! 50 ms × 3; and the CPU of 100 sessions at 50 ms, petrel's agent beside
//! FRR's bfdd running the other end of the same sessions.
//!
//! Detection: namespace `d` (the device under test: petrel, or FRR) peers
//! with FRR in `f`, which originates 10.99.2.0/24, BGP with BFD. Each cut
//! drops everything `d` receives on the link (nftables; the link stays up),
//! and `ip monitor route` in `d` timestamps the route's deletion. Then the
//! drop goes, and the next cut waits for BGP and the route to return.
//! `PETREL_BFD_CUTS` (default 20) cuts per configuration.
//!
//! `cargo bench -p petrel --bench bfd_detect` (root, FRR). Figures go to
//! stdout; docs/performance.md keeps them. The CPU part runs with
//! `PETREL_BFD_CPU=1` (alone with `PETREL_BFD_ONLY_CPU=1`); as of
//! 2026-12-06 only one of FRR's 100 sessions comes up in it, so it gives
//! no figure yet.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::{Lab, wait_until};

const PREFIX: &str = "10.99.2.0/24";

fn cuts() -> usize {
    std::env::var("PETREL_BFD_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn nft(ns: &str, rule: &str) {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "nft", rule])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "nft {rule} in {ns}");
}

fn has_route(ns: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "route", "show", PREFIX])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

fn frr_peer_config(
    asn: u32,
    me: &str,
    peer: &str,
    peer_asn: u32,
    ms: u32,
    originate: bool,
) -> String {
    format!(
        "frr defaults traditional\nhostname f{asn}\nbfd\n profile p\n  receive-interval {ms}\n  transmit-interval {ms}\n  detect-multiplier 3\n !\n!\n\
         router bgp {asn}\n bgp router-id {me}\n no bgp ebgp-requires-policy\n no bgp network import-check\n\
         neighbor {peer} remote-as {peer_asn}\n neighbor {peer} timers connect 1\n neighbor {peer} bfd\n neighbor {peer} bfd profile p\n\
         address-family ipv4 unicast\n{}exit-address-family\n",
        if originate {
            format!("  network {PREFIX}\n")
        } else {
            String::new()
        }
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Cuts the path into `d` `n` times; the time from each cut to the
/// route's deletion in `d`'s kernel.
fn measure(d: &str, n: usize, back: &dyn Fn() -> bool) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        wait_until(90, "the route back in the DUT's kernel", || {
            if back() && has_route(d) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        });
        // Settled: BFD at its fast rate again after coming Up.
        std::thread::sleep(Duration::from_secs(3));
        let mut mon = Command::new("ip")
            .args(["-n", d, "monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip monitor");
        let stdout = mon.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&format!("Deleted {PREFIX}")) {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        nft(d, "add table inet cut");
        nft(
            d,
            "add chain inet cut input { type filter hook input priority -10; policy accept; }",
        );
        let cut = Instant::now();
        nft(d, "add rule inet cut input iifname eth0 drop");
        let gone = rx.recv_timeout(Duration::from_secs(20));
        let _ = mon.kill();
        let _ = mon.wait();
        let _ = reader.join();
        nft(d, "delete table inet cut");
        match gone {
            Ok(t) => out.push(t.saturating_duration_since(cut)),
            Err(_) => eprintln!("cut {i}: the route did not leave within 20 s"),
        }
    }
    out
}

fn report(label: &str, mut v: Vec<Duration>) {
    v.sort();
    if v.is_empty() {
        println!("{label}: no measurement");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        ms(v[0]),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v[v.len() - 1])
    );
}

fn petrel_run(ms: u32, n: usize) -> Vec<Duration> {
    let mut lab = Lab::new("bd").with_petrel(env!("CARGO_BIN_EXE_petrel"));
    let d = lab.ns("d");
    let f = lab.ns("f");
    lab.link(&d, &f, "eth0", &["10.15.0.1/24"], &["10.15.0.2/24"]);
    lab.frr(
        &f,
        &frr_peer_config(65002, "10.15.0.2", "10.15.0.1", 65001, ms, true),
    );
    lab.start_frr_bfdd(&f);
    let yaml = format!(
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: 65001, routerID: 10.15.0.1}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {{name: node-1}}\nspec: {{podCIDRs: [10.244.1.0/24]}}\nstatus: {{addresses: [{{type: InternalIP, address: 10.15.0.1}}]}}\n---\n\
         apiVersion: petrel.dev/v1alpha1\nkind: BFDProfile\nmetadata: {{name: p}}\nspec: {{receiveInterval: {ms}, transmitInterval: {ms}, detectMultiplier: 3}}\n---\n\
         apiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: frr}}\nspec: {{peerIP: 10.15.0.2, asNumber: 65002, bfdProfile: p}}\n"
    );
    let p = lab.petrel(&d, "node-1", &yaml);
    p.wait_established("10.15.0.2", 60);
    let back = || {
        p.peer("10.15.0.2")
            .is_some_and(|v| v["state"] == "Established" && v["bfd"]["state"] == "up")
    };
    measure(&d, n, &back)
}

fn frr_run(ms: u32, n: usize) -> Vec<Duration> {
    let mut lab = Lab::new("bd");
    let d = lab.ns("d");
    let f = lab.ns("f");
    lab.link(&d, &f, "eth0", &["10.15.0.1/24"], &["10.15.0.2/24"]);
    lab.frr(
        &f,
        &frr_peer_config(65002, "10.15.0.2", "10.15.0.1", 65001, ms, true),
    );
    lab.start_frr_bfdd(&f);
    lab.frr(
        &d,
        &frr_peer_config(65001, "10.15.0.1", "10.15.0.2", 65002, ms, false),
    );
    lab.start_frr_bfdd(&d);
    let back = || {
        let v = lab.vtysh_json(&d, "show bfd peers json");
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["peer"] == "10.15.0.2" && p["status"] == "up")
        })
    };
    measure(&d, n, &back)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat; after the name, 12 and 13 (0-based 11, 12).
    (ticks(11) + ticks(12)) / 100.0
}

fn pid_of(pattern: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", pattern]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// 100 sessions at 50 ms: petrel's agent and FRR's bfdd, each running one
/// end of all of them.
fn cpu_100() {
    let sessions = 100;
    let mut lab = Lab::new("bc").with_petrel(env!("CARGO_BIN_EXE_petrel"));
    let d = lab.ns("d");
    let f = lab.ns("f");
    lab.link(&d, &f, "eth0", &["10.20.0.1/16"], &["10.20.1.1/16"]);
    let mut frr = String::from(
        "frr defaults traditional\nhostname f\nbfd\n profile p\n  receive-interval 50\n  transmit-interval 50\n  detect-multiplier 3\n !\n",
    );
    let mut peers = String::new();
    for i in 1..=sessions {
        let addr = format!("10.20.1.{i}");
        if i > 1 {
            lab.ip(&f, &["addr", "add", &format!("{addr}/16"), "dev", "eth0"]);
        }
        frr.push_str(&format!(
            " peer 10.20.0.1 local-address {addr}\n  profile p\n !\n"
        ));
        peers.push_str(&format!(
            "---\napiVersion: petrel.dev/v1alpha1\nkind: BGPPeer\nmetadata: {{name: p{i}}}\nspec: {{peerIP: {addr}, asNumber: 65002, passive: true, bfdProfile: p}}\n"
        ));
    }
    frr.push_str("!\n");
    lab.frr(&f, &frr);
    lab.start_frr_bfdd(&f);
    let yaml = format!(
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: 65001, routerID: 10.20.0.1}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {{name: node-1}}\nspec: {{podCIDRs: [10.244.1.0/24]}}\nstatus: {{addresses: [{{type: InternalIP, address: 10.20.0.1}}]}}\n---\n\
         apiVersion: petrel.dev/v1alpha1\nkind: BFDProfile\nmetadata: {{name: p}}\nspec: {{receiveInterval: 50, transmitInterval: 50, detectMultiplier: 3}}\n{peers}"
    );
    let p = lab.petrel(&d, "node-1", &yaml);
    wait_until(120, "100 BFD sessions up at FRR", || {
        let v = lab.vtysh_json(&f, "show bfd peers json");
        let up = v
            .as_array()
            .map(|a| a.iter().filter(|p| p["status"] == "up").count())
            .unwrap_or(0);
        if up == sessions {
            Ok(())
        } else {
            Err(format!("{up} up"))
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let agent = pid_of(&format!("api-socket {}", p.socket.display())).expect("agent pid");
    let bfdd = pid_of(&format!("bfdd -N {f}")).expect("bfdd pid");
    let (a0, b0, t0) = (cpu_seconds(agent), cpu_seconds(bfdd), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let secs = t0.elapsed().as_secs_f64();
    let (a1, b1) = (cpu_seconds(agent), cpu_seconds(bfdd));
    let flaps = {
        let v = lab.vtysh_json(&f, "show bfd peers counters json");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["session-down"].as_u64())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    println!(
        "100 multihop sessions at 50 ms x 3, {secs:.0} s: petrel agent {:.1}% of a core, FRR bfdd {:.1}% of a core (the other end of the same sessions); session downs at FRR: {flaps}",
        (a1 - a0) / secs * 100.0,
        (b1 - b0) / secs * 100.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = cuts();
    println!("BFD detection: cut to the route's deletion in the DUT's kernel, {n} cuts each");
    let only_cpu = std::env::var_os("PETREL_BFD_ONLY_CPU").is_some();
    for ms in [300, 50].into_iter().filter(|_| !only_cpu) {
        println!("-- {ms} ms x 3 (detection time {} ms)", 3 * ms);
        report("petrel", petrel_run(ms, n));
        report("FRR (bfdd + zebra)", frr_run(ms, n));
    }
    if std::env::var_os("PETREL_BFD_CPU").is_some() || only_cpu {
        cpu_100();
    }
}
