//! 200 pods started at once on three nodes, each made by Debian's `ptp`
//! with `petrel-ipam` asking its node's agent (standalone agents sharing one
//! state file, the node-to-node mesh over a bridge): 200 distinct
//! addresses, every node's blocks routed by the others, and every pod
//! reaching a pod on every node.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::guard::{KillOnDrop as Agent, TempDir as Dir};
use testkit::netns::Netns;

const PTP: &str = "/usr/lib/cni/ptp";
const NODES: usize = 3;
const PODS: usize = 200;

fn objects() -> String {
    let mut y = String::from(
        "apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, ipamMode: Petrel}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.74.0.0/20, blockSize: 26}
",
    );
    for k in 0..NODES {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: n{k}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.74.{}}}]}}\n",
            k + 1
        ));
    }
    y
}

/// `ptp ADD` of pod `id` (namespace `pod`) on node `k`: its address.
fn add(dir: &Path, node: &Netns, k: usize, id: &str, pod: &str) -> Result<IpAddr, String> {
    let conf = json!({
        "cniVersion": "1.0.0", "name": "scale", "type": "ptp",
        "ipam": {"type": "petrel-ipam", "socket": dir.join(format!("n{k}-ipam.sock"))},
    });
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), PTP])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", dir.join("bin"))
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(conf.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.parse::<ipnet::IpNet>().ok())
        .map(|n| n.addr())
        .ok_or_else(|| format!("{v} {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn two_hundred_pods_at_once_on_three_nodes_get_distinct_addresses_and_reach_each_other() {
    assert!(
        Path::new(PTP).exists(),
        "{PTP} is missing: install Debian's containernetworking-plugins (.ci/run does)"
    );
    let switch = Netns::new("ss").expect("switch");
    switch
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    switch.ip(&["link", "set", "br0", "up"]).expect("up");
    let nodes: Vec<Netns> = (0..NODES)
        .map(|_| Netns::new("sn").expect("node"))
        .collect();
    for (k, n) in nodes.iter().enumerate() {
        let port = format!("p{k}");
        let out = Command::new("ip")
            .args([
                "link",
                "add",
                "eth0",
                "netns",
                n.name(),
                "type",
                "veth",
                "peer",
                "name",
            ])
            .args([&port, "netns", switch.name()])
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        switch
            .ip(&["link", "set", &port, "master", "br0", "up"])
            .expect("port");
        n.ip(&[
            "addr",
            "add",
            &format!("192.168.74.{}/24", k + 1),
            "dev",
            "eth0",
        ])
        .expect("addr");
        n.ip(&["link", "set", "eth0", "up"]).expect("up");
    }
    let dir = Dir(std::env::temp_dir().join(format!("petrel-cni-scale-{}", switch.name())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("src")).expect("dir");
    std::fs::create_dir_all(dir.0.join("bin")).expect("dir");
    std::fs::write(dir.0.join("src/objects.yaml"), objects()).expect("objects");
    std::os::unix::fs::symlink(PTP, dir.0.join("bin/ptp")).expect("link");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_petrel-ipam"),
        dir.0.join("bin/petrel-ipam"),
    )
    .expect("link");
    let _agents: Vec<Agent> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let log = std::fs::File::create(dir.0.join(format!("n{k}.log"))).expect("log");
            Agent(
                Command::new("ip")
                    .args(["netns", "exec", n.name()])
                    .arg(env!("CARGO_BIN_EXE_petrel"))
                    .args([
                        "agent",
                        "--node",
                        &format!("n{k}"),
                        "--metrics-address",
                        "off",
                    ])
                    .args(["--poll-ms", "100", "--fib-initial-delay", "0"])
                    .arg("--source")
                    .arg(format!("files:{}", dir.0.join("src").display()))
                    .arg("--api-socket")
                    .arg(dir.0.join(format!("n{k}-api.sock")))
                    .arg("--ipam-socket")
                    .arg(dir.0.join(format!("n{k}-ipam.sock")))
                    .arg("--ipam-state")
                    .arg(dir.0.join("ipam.json"))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("agent starts"),
            )
        })
        .collect();
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("sp").expect("pod")).collect();
    // All 200 ADDs at once, each retried while its agent starts (code 11).
    let addrs: Vec<(usize, IpAddr)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (dir, nodes) = (&dir.0, &nodes);
                s.spawn(move || {
                    let k = i % NODES;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match add(dir, &nodes[k], k, &format!("s{i}"), pod.name()) {
                            Ok(a) => return (k, a),
                            Err(e) => {
                                assert!(
                                    e.contains("\"code\":11") && Instant::now() < deadline,
                                    "ADD s{i} on n{k}: {e}"
                                );
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD"))
            .collect()
    });
    let distinct: BTreeSet<IpAddr> = addrs.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), PODS, "an address was handed out twice");

    // Every pod reaches the first pod of every node, its own included: each
    // node routes the others' blocks (and any borrowed address).
    let first: Vec<IpAddr> = (0..NODES).map(|k| addrs[k].1).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<(usize, IpAddr)> = pods
        .iter()
        .enumerate()
        .flat_map(|(i, _)| first.iter().map(move |a| (i, *a)))
        .filter(|(i, a)| addrs[*i].1 != *a)
        .collect();
    while !missing.is_empty() {
        // Fifty at a time: hundreds of pings at once on two cores miss
        // their own timeouts.
        let mut still = Vec::new();
        for chunk in missing.chunks(50) {
            let children: Vec<((usize, IpAddr), Child)> = chunk
                .iter()
                .map(|(i, a)| {
                    let c = Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            pods[*i].name(),
                            "ping",
                            "-c",
                            "1",
                            "-W",
                            "2",
                        ])
                        .arg(a.to_string())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("ping");
                    ((*i, *a), c)
                })
                .collect();
            still.extend(
                children.into_iter().filter_map(|(key, mut c)| {
                    (!c.wait().is_ok_and(|s| s.success())).then_some(key)
                }),
            );
        }
        missing = still;
        if !missing.is_empty() && Instant::now() >= deadline {
            let who: Vec<String> = missing
                .iter()
                .take(5)
                .map(|(i, a)| format!("pod {i} ({} on n{}) to {a}", addrs[*i].1, addrs[*i].0))
                .collect();
            let routes: Vec<String> = nodes
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    let out = Command::new("ip")
                        .args(["-n", n.name(), "route", "show", "table", "all"])
                        .output()
                        .expect("ip");
                    let text = String::from_utf8_lossy(&out.stdout);
                    let kept: Vec<&str> = text
                        .lines()
                        .filter(|l| {
                            !l.contains("dev veth")
                                && !l.starts_with("local")
                                && !l.contains("table local")
                        })
                        .collect();
                    format!("n{k}:\n{}", kept.join("\n"))
                })
                .collect();
            let sh = |args: &[&str]| {
                let out = Command::new("ip").args(args).output().expect("ip");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let (i, a) = missing[0];
            let target = addrs.iter().position(|(_, x)| *x == a).expect("target");
            let mut detail = String::new();
            for (label, p) in [("source", i), ("target", target)] {
                let (k, addr) = addrs[p];
                detail.push_str(&format!(
                    "{label} pod {p} {addr} on n{k}:\n{}{}{}node n{k} route to it: {}node links: {}node neighbours: {}",
                    sh(&["-n", pods[p].name(), "-s", "link"]),
                    sh(&["-n", pods[p].name(), "route"]),
                    sh(&["-n", pods[p].name(), "neigh"]),
                    sh(&["-n", nodes[k].name(), "route", "get", &addr.to_string()]),
                    sh(&["-n", nodes[k].name(), "-br", "link"]).lines().filter(|l| l.contains("DOWN") || l.contains("@if2 ") ).collect::<Vec<_>>().join("\n"),
                    sh(&["-n", nodes[k].name(), "neigh"]).lines().filter(|l| l.contains(&addr.to_string())).collect::<Vec<_>>().join("\n"),
                ));
            }
            panic!(
                "{} pods cannot reach a node's pod: {who:?}\n{}\n{detail}",
                missing.len(),
                routes.join("\n")
            );
        }
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
