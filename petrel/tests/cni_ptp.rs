//! Pod addresses through real CNI plugins: Debian's `ptp`
//! (containernetworking-plugins) makes each pod's veth in a network
//! namespace and runs `petrel-ipam`, which asks a petrel agent (standalone:
//! a file source, blocks in a state file). The pods then reach each other
//! through the node's namespace.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::guard::{KillOnDrop as Agent, TempDir as Dir};
use testkit::netns::Netns;

const PTP: &str = "/usr/lib/cni/ptp";

struct Node {
    ns: Netns,
    dir: Dir,
    agent: Option<Agent>,
}

impl Node {
    /// A node namespace, a source directory with `pools`, the CNI bin
    /// directory (ptp and petrel-ipam), and an agent serving the socket.
    fn start(test: &str, pools: &str) -> Node {
        assert!(
            Path::new(PTP).exists(),
            "{PTP} is missing: install Debian's containernetworking-plugins (.ci/run does)"
        );
        let ns = Netns::new("cn").expect("node namespace");
        let dir = std::env::temp_dir().join(format!("petrel-cni-{test}-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("source dir");
        std::fs::create_dir_all(dir.join("bin")).expect("bin dir");
        std::fs::write(dir.join("src/pools.yaml"), pools).expect("pools");
        std::fs::write(dir.join("src/config.yaml"), PETREL_MODE).expect("config");
        std::os::unix::fs::symlink(PTP, dir.join("bin/ptp")).expect("ptp link");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_petrel-ipam"),
            dir.join("bin/petrel-ipam"),
        )
        .expect("petrel-ipam link");
        let mut node = Node {
            ns,
            dir: Dir(dir),
            agent: None,
        };
        node.start_agent();
        node
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    fn start_agent(&mut self) {
        let _ = std::fs::remove_file(self.path("ipam.sock"));
        let log = std::fs::File::create(self.path("agent.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(env!("CARGO_BIN_EXE_petrel"))
            .args([
                "agent",
                "--node",
                "n1",
                "--no-fib",
                "--metrics-address",
                "off",
            ])
            .arg("--source")
            .arg(format!("files:{}", self.path("src").display()))
            .arg("--api-socket")
            .arg(self.path("api.sock"))
            .arg("--ipam-socket")
            .arg(self.path("ipam.sock"))
            .arg("--ipam-state")
            .arg(self.path("ipam.json"))
            .args(["--ipam-cooldown", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.agent = Some(Agent(child));
        // Up once it answers STATUS with something other than "starting".
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, out) = self.plugin("STATUS", None, &self.conf("1.1.0"));
            let starting = out
                .get("msg")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("not reachable") || m.contains("is starting"));
            if code == 0 || !starting {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not serve its socket in 20 s: {out}\n{}",
                std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.0.kill();
            let _ = a.0.wait();
        }
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "petrel-test",
            "type": "ptp",
            "ipam": {"type": "petrel-ipam", "socket": self.path("ipam.sock")},
        })
    }

    /// Runs `petrel-ipam` itself (as a runtime would for GC and STATUS, or
    /// a main plugin for the rest): its exit status and what it printed.
    fn plugin(&self, command: &str, container: Option<&str>, conf: &Value) -> (i32, Value) {
        self.exec(
            env!("CARGO_BIN_EXE_petrel-ipam"),
            command,
            container,
            None,
            conf,
        )
    }

    /// Runs `ptp` for pod namespace `pod` (container ID `container`).
    fn ptp(&self, command: &str, container: &str, pod: &str, conf: &Value) -> (i32, Value) {
        self.exec(PTP, command, Some(container), Some(pod), conf)
    }

    fn exec(
        &self,
        bin: &str,
        command: &str,
        container: Option<&str>,
        pod: Option<&str>,
        conf: &Value,
    ) -> (i32, Value) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns.name(), bin])
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", self.path("bin"))
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(id) = container {
            c.env("CNI_CONTAINERID", id).env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{id}"),
            );
        }
        if let Some(p) = pod {
            c.env("CNI_NETNS", format!("/var/run/netns/{p}"));
        }
        let mut child = c.spawn().expect("plugin runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("config written");
        let out = child.wait_with_output().expect("plugin ends");
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path("ipam.json")).expect("state file"))
            .expect("state JSON")
    }
}

fn address(result: &Value) -> IpAddr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.parse::<ipnet::IpNet>().ok())
        .map(|n| n.addr())
        .unwrap_or_else(|| panic!("no address in {result}"))
}

fn ping(from: &Netns, to: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from.name(), "ping", "-c", "1", "-W", "2"])
        .arg(to.to_string())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pods' addresses are petrel's to hand out.
const PETREL_MODE: &str = "apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, ipamMode: Petrel}
";

const POOL: &str = "apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.77.0.0/24, blockSize: 28}
";

#[test]
fn ptp_pods_get_distinct_addresses_and_reach_each_other() {
    let mut node = Node::start("ptp", POOL);
    let pods: Vec<Netns> = (0..12)
        .map(|_| Netns::new("cp").expect("pod namespace"))
        .collect();
    let conf = node.conf("1.0.0");

    // Twelve ADDs at once, as a runtime starting pods would.
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.ptp("ADD", &format!("c{i}"), p.name(), conf))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let mut addrs = Vec::new();
    for (i, (code, out)) in results.iter().enumerate() {
        assert_eq!(*code, 0, "ADD c{i}: {out}");
        addrs.push(address(out));
    }
    let distinct: BTreeSet<&IpAddr> = addrs.iter().collect();
    assert_eq!(distinct.len(), 12, "{addrs:?}");
    assert!(addrs.iter().all(|a| {
        "10.77.0.0/24"
            .parse::<ipnet::IpNet>()
            .expect("net")
            .contains(a)
    }));

    // Every pod reaches the others through the node (ptp's host routes).
    for (i, p) in pods.iter().enumerate() {
        let j = (i + 5) % pods.len();
        assert!(
            ping(p, addrs[j]),
            "pod {i} cannot reach pod {j} at {}",
            addrs[j]
        );
    }

    // The state file records each under its pod.
    let state = node.state();
    let recorded: usize = state["blocks"]
        .as_object()
        .expect("blocks")
        .values()
        .map(|b| b["spec"]["allocations"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(recorded, 12);
    assert!(state.to_string().contains("default/pod-c3"));

    // CHECK agrees with the result; a made-up result does not pass.
    let mut check = conf.clone();
    check["prevResult"] = results[0].1.clone();
    assert_eq!(node.ptp("CHECK", "c0", pods[0].name(), &check).0, 0);
    let mut wrong = conf.clone();
    wrong["cniVersion"] = json!("1.1.0");
    wrong["prevResult"] = json!({"ips": [{"address": "10.77.0.250/28"}]});
    let (code, out) = node.plugin("CHECK", Some("c0"), &wrong);
    assert_ne!(code, 0, "{out}");

    // The agent dies and comes back: the addresses are in the state file,
    // and a repeated ADD gets the same one.
    node.kill_agent();
    let (code, out) = node.plugin("ADD", Some("c1"), &conf);
    assert_eq!(
        out["code"], 11,
        "agent down: try again later ({code}): {out}"
    );
    node.start_agent();
    let (code, out) = node.plugin("ADD", Some("c1"), &conf);
    assert_eq!(code, 0, "{out}");
    assert_eq!(address(&out), addrs[1]);

    // DEL twice: both fine, and the address is free.
    for _ in 0..2 {
        let (code, out) = node.ptp("DEL", "c0", pods[0].name(), &conf);
        assert_eq!(code, 0, "DEL: {out}");
    }
    assert!(!node.state().to_string().contains("\"c0/eth0\""));

    // GC (CNI 1.1): every attachment not listed valid goes.
    let mut gc = node.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!(
        (1..12)
            .filter(|i| i % 2 == 1)
            .map(|i| json!({"containerID": format!("c{i}"), "ifname": "eth0"}))
            .collect::<Vec<_>>()
    );
    let (code, out) = node.plugin("GC", None, &gc);
    assert_eq!(code, 0, "GC: {out}");
    let state = node.state().to_string();
    for i in 1..12 {
        assert_eq!(
            state.contains(&format!("\"c{i}/eth0\"")),
            i % 2 == 1,
            "c{i} after GC"
        );
    }
    drop(pods);
}

#[test]
fn an_exhausted_pool_is_a_clear_error_and_status_50() {
    // Two blocks of four, strict: four addresses for this node at most
    // (each block's first is its gateway, its last the broadcast address).
    let pool = "apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.78.0.0/29, blockSize: 30, strictAffinity: true}
";
    let node = Node::start("exhausted", pool);
    let conf = node.conf("1.1.0");
    for i in 0..4 {
        let (code, out) = node.plugin("ADD", Some(&format!("x{i}")), &conf);
        assert_eq!(code, 0, "ADD x{i}: {out}");
    }
    let (code, out) = node.plugin("ADD", Some("x4"), &conf);
    assert_ne!(code, 0);
    let msg = out["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("tiny") && msg.contains("exhausted"), "{out}");
    let (code, out) = node.plugin("STATUS", None, &conf);
    assert_ne!(code, 0);
    assert_eq!(out["code"], 50, "{out}");
    assert!(
        out["msg"].as_str().unwrap_or_default().contains("tiny"),
        "{out}"
    );
    // One back: STATUS is fine again (no cooldown in this test).
    assert_eq!(node.plugin("DEL", Some("x3"), &conf).0, 0);
    let (code, out) = node.plugin("STATUS", None, &conf);
    assert_eq!(code, 0, "{out}");
    // VERSION needs no agent.
    let (code, out) = node.plugin("VERSION", None, &json!({}));
    assert_eq!(code, 0);
    assert!(
        out["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.1.0")))
    );
}

#[test]
fn in_kubernetes_mode_petrel_ipam_says_where_addresses_come_from() {
    let node = Node::start("kubernetes-mode", POOL);
    // The BGPConfiguration without ipamMode: the default, Kubernetes.
    std::fs::write(
        node.path("src/config.yaml"),
        PETREL_MODE.replace(", ipamMode: Petrel", ""),
    )
    .expect("config");
    let conf = node.conf("1.1.0");
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let (code, out) = node.plugin("ADD", Some("k0"), &conf);
        let refused = out["msg"]
            .as_str()
            .is_some_and(|m| m.contains("ipamMode is Kubernetes"));
        if refused {
            assert_ne!(code, 0);
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "still handing out addresses: {out}"
        );
        // An address handed out before the agent saw the change goes back.
        node.plugin("DEL", Some("k0"), &conf);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out["details"]
            .as_str()
            .unwrap_or_default()
            .contains("ipamMode: Petrel"),
        "{out}"
    );
    let (_, status) = node.plugin("STATUS", None, &conf);
    assert_eq!(status["code"], 50, "{status}");
}

#[test]
fn dual_stack_pods_get_one_address_per_family_and_reach_each_other() {
    let pools = "apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.76.0.0/24, blockSize: 28}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: v6}
spec: {cidr: \"fd00:76::/120\", blockSize: 124}
";
    let node = Node::start("dual", pools);
    let pods: Vec<Netns> = (0..2).map(|_| Netns::new("cd").expect("pod")).collect();
    let conf = node.conf("1.0.0");
    let mut got = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let (code, out) = node.ptp("ADD", &format!("d{i}"), p.name(), &conf);
        assert_eq!(code, 0, "ADD d{i}: {out}");
        let ips: Vec<IpAddr> = out["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .filter_map(|ip| ip["address"].as_str()?.parse::<ipnet::IpNet>().ok())
            .map(|n| n.addr())
            .collect();
        assert_eq!(ips.len(), 2, "one address per family: {out}");
        assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "{out}");
        got.push(ips);
    }
    // Duplicate address detection on the pods' IPv6 addresses takes a
    // moment; pinging waits for it (bounded).
    for addr in &got[1] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(&pods[0], *addr) {
            assert!(
                Instant::now() < deadline,
                "pod 0 cannot reach pod 1 at {addr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // All families or none: a DEL gives back both.
    assert_eq!(node.ptp("DEL", "d0", pods[0].name(), &conf).0, 0);
    let state = node.state().to_string();
    assert!(!state.contains("\"d0/eth0\""), "{state}");
}
