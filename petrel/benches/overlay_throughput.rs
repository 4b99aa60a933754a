//! Pod-to-pod TCP throughput over the paths petrel builds, beside the same
//! path built by hand with `ip` in the same run (a benchmark, not a test):
//! petrel must add nothing to the datapath.
//!
//! Two nodes on one link, a pod on each (a veth, a /32, the gateway on the
//! node's side), iperf3 from one pod to the other. Paths:
//!
//! - plain: `<pod block> via <node>`: petrel agents over the node-to-node
//!   mesh, an IPPool without encapsulation; by hand, `ip route add`.
//! - VXLAN: petrel agents with `encapsulation: {type: VXLAN, mode:
//!   Always}`; by hand, the same device, neighbour, FDB entry and onlink
//!   route made with `ip` and `bridge`.
//! - WireGuard: petrel agents with `encapsulation: {type: WireGuard}` and
//!   `wireguard-go` (no kernel module here); by hand, `wireguard-go`, `wg
//!   set` and a route (petrel's route is in a table of its own behind a
//!   rule: one more rule lookup per packet).
//!
//! Each (path, builder) runs `PETREL_IPERF_ROUNDS` (default 3) times for
//! `PETREL_IPERF_SECONDS` (default 5) s, alternating builders; the median
//! is reported with the ratio petrel ÷ hand-built. Needs root and iperf3.
//! `cargo bench -p petrel --bench overlay_throughput`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::netns::{self, Netns};

fn size(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two nodes, a pod each, and a WireGuard key pair each.
struct Setup {
    n: [Netns; 2],
    pods: [Netns; 2],
    dir: PathBuf,
    public: [String; 2],
}

const NODE: [&str; 2] = ["192.168.93.1", "192.168.93.2"];
const CIDR: [&str; 2] = ["10.93.1.0/24", "10.93.2.0/24"];
const POD: [&str; 2] = ["10.93.1.2", "10.93.2.2"];

fn setup() -> Setup {
    let n = [
        Netns::new("btn").expect("node"),
        Netns::new("btn").expect("node"),
    ];
    let pods = [
        Netns::new("btp").expect("pod"),
        Netns::new("btp").expect("pod"),
    ];
    netns::veth(
        n[0].name(),
        n[1].name(),
        "eth0",
        &[&format!("{}/24", NODE[0])],
        &[&format!("{}/24", NODE[1])],
    )
    .expect("link");
    for i in 0..2 {
        netns::sysctl(n[i].name(), &["net.ipv4.ip_forward=1"]).expect("forwarding");
        let made = Command::new("ip")
            .args(["link", "add", "eth0", "netns", pods[i].name()])
            .args(["type", "veth", "peer", "name", "pod", "netns", n[i].name()])
            .status()
            .expect("pod link");
        assert!(made.success(), "the pod's link");
        pods[i]
            .ip(&["addr", "add", &format!("{}/32", POD[i]), "dev", "eth0"])
            .expect("pod address");
        pods[i].ip(&["link", "set", "eth0", "up"]).expect("up");
        pods[i]
            .ip(&[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ])
            .expect("gateway");
        pods[i]
            .ip(&[
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ])
            .expect("default");
        // The pods' gateway on the node's side, as ptp puts it there.
        n[i].ip(&["addr", "add", "169.254.1.1/32", "dev", "pod"])
            .expect("gateway address");
        n[i].ip(&["link", "set", "pod", "up"]).expect("up");
        n[i].ip(&["route", "add", &format!("{}/32", POD[i]), "dev", "pod"])
            .expect("pod route");
    }
    let dir = std::env::temp_dir().join(format!("petrel-bench-overlay-{}", n[0].name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    let public = [0, 1].map(|i| wg_key(&dir.join(format!("n{i}.key"))));
    Setup {
        n,
        pods,
        dir,
        public,
    }
}

/// `wg genkey` into `file` and `wg pubkey` of it.
fn wg_key(file: &std::path::Path) -> String {
    let private = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    std::fs::write(file, &private.stdout).expect("key file");
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &private.stdout)
        .expect("private key");
    let out = child.wait_with_output().expect("wg pubkey");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn objects(encapsulation: &str, keys: Option<&[String; 2]>) -> String {
    let mut s = format!(
        "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{asNumber: 64512}}\n---\napiVersion: petrel.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.93.0.0/16{encapsulation}}}\n"
    );
    for i in 0..2 {
        let annotations = keys
            .map(|k| {
                format!(
                    ", annotations: {{petrel.dev/wireguard-public-key: \"{}\"}}",
                    k[i]
                )
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: n{i}{annotations}}}\nspec: {{podCIDR: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
            CIDR[i], NODE[i]
        ));
    }
    s
}

/// Starts the two agents; they are stopped (and their routes and devices
/// removed) when the returned processes are dropped and flushed.
fn agents(s: &Setup, encapsulation: &str, wireguard: bool) -> Vec<Proc> {
    let keys = wireguard.then_some(&s.public);
    std::fs::write(s.dir.join("src/objects.yaml"), objects(encapsulation, keys)).expect("objects");
    (0..2)
        .map(|i| {
            let log = std::fs::File::create(s.dir.join(format!("n{i}.log"))).expect("log");
            Proc(
                Command::new("ip")
                    .args(["netns", "exec", s.n[i].name()])
                    .arg(env!("CARGO_BIN_EXE_petrel"))
                    .args([
                        "agent",
                        "--node",
                        &format!("n{i}"),
                        "--metrics-address",
                        "off",
                    ])
                    .args([
                        "--poll-ms",
                        "100",
                        "--fib-initial-delay",
                        "0",
                        "--flush-routes-on-exit",
                    ])
                    .arg("--source")
                    .arg(format!("files:{}", s.dir.join("src").display()))
                    .arg("--api-socket")
                    .arg(s.dir.join(format!("n{i}.sock")))
                    .args(if wireguard {
                        vec![
                            "--wireguard-userspace".to_string(),
                            "wireguard-go".into(),
                            "--wireguard-interface".into(),
                            format!("wgp{}n{i}", std::process::id() % 100_000),
                            "--wireguard-key".into(),
                            s.dir.join(format!("n{i}.key")).display().to_string(),
                        ]
                    } else {
                        Vec::new()
                    })
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("agent"),
            )
        })
        .collect()
}

/// Stops the agents with SIGTERM, so they remove what they made.
fn stop(agents: Vec<Proc>) {
    for a in &agents {
        let _ = Command::new("kill")
            .args(["-TERM", &a.0.id().to_string()])
            .status();
    }
    for mut a in agents {
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(a);
    }
}

fn reachable(s: &Setup) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            s.pods[0].name(),
            "ping",
            "-c1",
            "-W1",
            POD[1],
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

fn wait_reachable(s: &Setup, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reachable(s) {
        assert!(
            Instant::now() < deadline,
            "{what}: the pods never reached each other"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sh(ns: &Netns, cmd: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c", cmd])
        .status()
        .expect("sh");
    assert!(st.success(), "{cmd}");
}

/// The VXLAN path made by hand: what petrel makes, with `ip` and `bridge`.
fn vxlan_by_hand(s: &Setup, up: bool) {
    for (i, node) in s.n.iter().enumerate() {
        let j = 1 - i;
        let mac = |k: usize| format!("0e:00:00:00:00:0{k}");
        let vtep = |k: usize| CIDR[k].replace(".0/24", ".0");
        if up {
            sh(
                node,
                &format!(
                    "ip link add vxlan.hand type vxlan id 4096 dstport 4789 local {} nolearning && \
                     ip link set vxlan.hand address {} mtu 1450 up && \
                     ip addr add {}/32 dev vxlan.hand && \
                     ip neigh replace {} lladdr {} dev vxlan.hand nud permanent && \
                     bridge fdb replace {} dev vxlan.hand dst {} self permanent && \
                     ip route add {} via {} dev vxlan.hand onlink",
                    NODE[i],
                    mac(i),
                    vtep(i),
                    vtep(j),
                    mac(j),
                    mac(j),
                    NODE[j],
                    CIDR[j],
                    vtep(j)
                ),
            );
        } else {
            sh(node, "ip link del vxlan.hand");
        }
    }
}

/// The WireGuard path made by hand: `wireguard-go`, `wg set`, a route.
fn wireguard_by_hand(s: &Setup, up: bool) {
    let name = |i: usize| format!("wgh{}n{i}", std::process::id() % 100_000);
    for (i, node) in s.n.iter().enumerate() {
        let j = 1 - i;
        if up {
            sh(
                node,
                &format!(
                    "wireguard-go {dev} && \
                     wg set {dev} private-key {key} listen-port 51821 \
                        peer {peer} endpoint {endpoint}:51821 allowed-ips {cidr} && \
                     ip link set {dev} mtu 1440 up && \
                     ip route add {cidr} dev {dev}",
                    dev = name(i),
                    key = s.dir.join(format!("n{i}.key")).display(),
                    peer = s.public[j],
                    endpoint = NODE[j],
                    cidr = CIDR[j],
                ),
            );
        } else {
            sh(node, &format!("ip link del {}", name(i)));
        }
    }
}

fn plain_by_hand(s: &Setup, up: bool) {
    for i in 0..2 {
        let verb = if up { "add" } else { "del" };
        sh(
            &s.n[i],
            &format!("ip route {verb} {} via {}", CIDR[1 - i], NODE[1 - i]),
        );
    }
}

/// One iperf3 run from pod 0 to pod 1: Gbit/s received.
fn iperf(s: &Setup, seconds: u64) -> f64 {
    let _server = Proc(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                s.pods[1].name(),
                "iperf3",
                "-s",
                "-1",
                "-B",
                POD[1],
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                s.pods[0].name(),
                "iperf3",
                "-J",
                "-c",
                POD[1],
            ])
            .args(["-t", &seconds.to_string()])
            .output()
            .expect("iperf3 client");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        assert!(Instant::now() < deadline, "iperf3 did not run: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !testkit::is_root() || Command::new("iperf3").arg("-v").output().is_err() {
        eprintln!("overlay_throughput needs root and iperf3 (Debian's iperf3); skipped");
        return;
    }
    let rounds = size("PETREL_IPERF_ROUNDS", 3);
    let seconds = size("PETREL_IPERF_SECONDS", 5);
    let s = setup();
    println!(
        "pod-to-pod TCP, iperf3 {seconds} s x {rounds} rounds, medians (Gbit/s); nproc {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<10} {:>10} {:>10} {:>8}",
        "path", "petrel", "by hand", "ratio"
    );
    let wireguard = Command::new("wireguard-go")
        .arg("--version")
        .output()
        .is_ok();
    if !wireguard {
        eprintln!("no wireguard-go (Debian's wireguard-go): the WireGuard path is skipped");
    }
    for (path, encapsulation) in [
        ("plain", ""),
        ("VXLAN", ", encapsulation: {type: VXLAN, mode: Always}"),
        ("WireGuard", ", encapsulation: {type: WireGuard}"),
    ] {
        if path == "WireGuard" && !wireguard {
            continue;
        }
        let (mut petrel, mut hand) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = agents(&s, encapsulation, path == "WireGuard");
            wait_reachable(&s, path);
            // Routes settle (the first route may still be the plain one).
            std::thread::sleep(Duration::from_secs(2));
            petrel.push(iperf(&s, seconds));
            stop(a);
            match path {
                "plain" => plain_by_hand(&s, true),
                "VXLAN" => vxlan_by_hand(&s, true),
                _ => wireguard_by_hand(&s, true),
            }
            wait_reachable(&s, path);
            hand.push(iperf(&s, seconds));
            match path {
                "plain" => plain_by_hand(&s, false),
                "VXLAN" => vxlan_by_hand(&s, false),
                _ => wireguard_by_hand(&s, false),
            }
        }
        let (p, h) = (median(petrel), median(hand));
        println!("{path:<10} {p:>10.2} {h:>10.2} {:>8.3}", p / h);
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}
