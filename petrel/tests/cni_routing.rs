//! Pod blocks routed between nodes: two nodes (namespaces on one link), each
//! with a petrel agent (standalone, one shared state file, the node-to-node
//! mesh) and pods made by Debian's `ptp` with `petrel-ipam`. Each node
//! advertises its blocks and blackholes them; a node that borrowed an
//! address from the other's block advertises it as a host route; pods reach
//! pods on the other node.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::guard::{KillOnDrop as Agent, TempDir as Dir};
use testkit::netns::{self, Netns};

const PTP: &str = "/usr/lib/cni/ptp";

const OBJECTS: &str = "apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, ipamMode: Petrel}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.77.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 192.168.77.2}]}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.79.0.0/29, blockSize: 30}
";

fn agent(dir: &Path, ns: &Netns, node: &str) -> Agent {
    let log = std::fs::File::create(dir.join(format!("{node}.log"))).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .args(["agent", "--node", node, "--metrics-address", "off"])
        .args(["--poll-ms", "100", "--fib-initial-delay", "0"])
        .arg("--source")
        .arg(format!("files:{}", dir.join("src").display()))
        .arg("--api-socket")
        .arg(dir.join(format!("{node}-api.sock")))
        .arg("--ipam-socket")
        .arg(dir.join(format!("{node}-ipam.sock")))
        .arg("--ipam-state")
        .arg(dir.join("ipam.json"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent(child)
}

/// `ptp ADD` for a pod of `node` in its own namespace; the pod's address.
fn add_pod(dir: &Path, node_ns: &Netns, node: &str, id: &str, pod: &Netns) -> IpAddr {
    let conf = json!({
        "cniVersion": "1.0.0", "name": "petrel-test", "type": "ptp",
        "ipam": {"type": "petrel-ipam", "socket": dir.join(format!("{node}-ipam.sock"))},
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = Command::new("ip")
            .args(["netns", "exec", node_ns.name(), PTP])
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", format!("/var/run/netns/{}", pod.name()))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", dir.join("bin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ptp runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("conf");
        let out = child.wait_with_output().expect("ptp ends");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() {
            return v["ips"][0]["address"]
                .as_str()
                .and_then(|a| a.parse::<ipnet::IpNet>().ok())
                .map(|n| n.addr())
                .unwrap_or_else(|| panic!("no address in {v}"));
        }
        // The agent may still be starting (code 11): try again.
        assert!(
            v["code"] == 11 && Instant::now() < deadline,
            "ADD {id} on {node}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping(from: &Netns, to: IpAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from.name(), "ping", "-c", "1", "-W", "1"])
        .arg(to.to_string())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits (at most 60 s) for `ns` to have a route to `dst` that `check`
/// accepts.
fn wait_route(ns: &Netns, dst: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = ns.routes(&["table", "all"]);
        if let Some(r) = all.iter().find(|r| r["dst"] == dst && check(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {what} route to {dst} in 60 s: {all:#?}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn blocks_and_borrowed_addresses_are_routed_between_nodes() {
    assert!(
        Path::new(PTP).exists(),
        "{PTP} is missing: install Debian's containernetworking-plugins (.ci/run does)"
    );
    let n1 = Netns::new("rn").expect("n1");
    let n2 = Netns::new("rn").expect("n2");
    netns::veth(
        n1.name(),
        n2.name(),
        "eth0",
        &["192.168.77.1/24"],
        &["192.168.77.2/24"],
    )
    .expect("link");
    let dir = Dir(std::env::temp_dir().join(format!("petrel-cni-routing-{}", n1.name())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("src")).expect("dir");
    std::fs::create_dir_all(dir.0.join("bin")).expect("dir");
    std::fs::write(dir.0.join("src/objects.yaml"), OBJECTS).expect("objects");
    std::os::unix::fs::symlink(PTP, dir.0.join("bin/ptp")).expect("link");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_petrel-ipam"),
        dir.0.join("bin/petrel-ipam"),
    )
    .expect("link");
    let _a1 = agent(&dir.0, &n1, "n1");
    let _a2 = agent(&dir.0, &n2, "n2");

    // The pool has two blocks of four, two addresses each (a block's first
    // address is its gateway, its last the broadcast address): n1's two
    // pods fill one, n2's pod claims the other, and n1's third pod borrows
    // from n2's block.
    let mut pods: Vec<Netns> = (0..4).map(|_| Netns::new("rp").expect("pod")).collect();
    let a0 = add_pod(&dir.0, &n1, "n1", "a0", &pods[0]);
    let a1 = add_pod(&dir.0, &n1, "n1", "a1", &pods[1]);
    let b0 = add_pod(&dir.0, &n2, "n2", "b0", &pods[2]);
    let borrowed = add_pod(&dir.0, &n1, "n1", "a2", &pods[3]);
    let block_of = |a: &IpAddr| {
        ipnet::IpNet::new(*a, 30)
            .expect("prefix")
            .trunc()
            .to_string()
    };
    let (n1_block, n2_block) = (block_of(&a0), block_of(&b0));
    assert_ne!(n1_block, n2_block);
    assert_eq!(block_of(&a1), n1_block);
    assert_eq!(block_of(&borrowed), n2_block, "borrowed from n2's block");

    // Each node: a blackhole for its own block, a route to the other's over
    // the link, and n2 a host route to the address n1 borrowed.
    wait_route(&n1, &n1_block, "blackhole", |r| r["type"] == "blackhole");
    wait_route(&n2, &n2_block, "blackhole", |r| r["type"] == "blackhole");
    wait_route(&n1, &n2_block, "learned", |r| {
        r["gateway"] == "192.168.77.2"
    });
    wait_route(&n2, &n1_block, "learned", |r| {
        r["gateway"] == "192.168.77.1"
    });
    wait_route(&n2, &borrowed.to_string(), "borrowed", |r| {
        r["gateway"] == "192.168.77.1"
    });
    // n1 does not route its borrowed address to n2, though n2's block
    // covers it: the pod's own host route is more specific.
    wait_route(&n1, &borrowed.to_string(), "pod's host", |r| {
        r["dev"].as_str().is_some_and(|d| d.starts_with("veth"))
    });

    assert!(ping(&pods[0], b0), "n1's pod cannot reach n2's pod {b0}");
    assert!(ping(&pods[2], a1), "n2's pod cannot reach n1's pod {a1}");
    assert!(
        ping(&pods[2], borrowed),
        "n2's pod cannot reach n1's pod {borrowed} with a borrowed address"
    );
    assert!(
        ping(&pods[3], a1),
        "the borrowing pod cannot reach its neighbour"
    );

    // `petrel ipam check` on n1: consistent.
    let check = |report: Option<&Path>| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", n1.name()])
            .arg(env!("CARGO_BIN_EXE_petrel"))
            .args(["ipam", "check", "--node", "n1", "-o", "json"])
            .arg("--state")
            .arg(dir.0.join("ipam.json"))
            .arg("--socket")
            .arg(dir.0.join("n1-api.sock"))
            .arg("--source")
            .arg(dir.0.join("src"));
        if let Some(r) = report {
            c.arg("--report").arg(r);
        }
        let out = c.output().expect("petrel ipam check runs");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = check(None);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["findings"], json!([]));

    // One inconsistency of each kind.
    // A pod goes without a DEL (its sandbox vanished): its address is
    // allocated and nothing on n1 routes it.
    drop(pods.remove(1));
    // An address of the pool routed to an interface on n1 and allocated to
    // nobody (n2's block's broadcast address).
    // (A bridge without ports: kernels without the dummy module have it.)
    n1.ip(&["link", "add", "ghost0", "type", "bridge"])
        .expect("bridge");
    n1.ip(&["link", "set", "ghost0", "up"]).expect("up");
    let unallocated = "10.79.0.7";
    n1.ip(&[
        "route",
        "add",
        &format!("{unallocated}/32"),
        "dev",
        "ghost0",
    ])
    .expect("route");
    // n2's block recorded as another node's: n2 advertises it without
    // affinity. And a block overlapping both.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = ipam_store::FileBlocks::new(dir.0.join("ipam.json"));
    let listed = |store: &ipam_store::FileBlocks| {
        rt.block_on(ipam::pod::BlockStore::list(store))
            .expect("list")
    };
    let (mut b, version) = listed(&store)
        .into_iter()
        .find(|(b, _)| b.cidr.to_string() == n2_block)
        .expect("n2's block");
    b.node = Some("n3".into());
    rt.block_on(ipam::pod::BlockStore::update(&store, &b, &version))
        .expect("updated");
    let overlap = ipam::pod::Block::new("10.79.0.0/29".parse().expect("cidr"), "pods", "n9", 0);
    rt.block_on(ipam::pod::BlockStore::create(&store, &overlap))
        .expect("created");

    let report = dir.0.join("report.json");
    let (code, v) = check(Some(&report));
    assert_eq!(code, Some(1), "{v:#}");
    let find = |kind: &str| {
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {v:#}"))
    };
    assert_eq!(find("allocatedUnused")["address"], a1.to_string());
    assert_eq!(find("usedUnallocated")["address"], unallocated);
    assert_eq!(find("usedUnallocated")["interface"], "ghost0");
    assert_eq!(find("advertisedWithoutAffinity")["by"], "n2");
    assert_eq!(find("advertisedWithoutAffinity")["affine"], "n3");
    find("duplicateAffinity");

    // The leak's block changes after the report: a stale report is refused
    // as a whole.
    let release = |r: &Path| {
        Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["ipam", "release", "--from-report"])
            .arg(r)
            .arg("--state")
            .arg(dir.0.join("ipam.json"))
            .output()
            .expect("petrel ipam release runs")
    };
    let (b, version) = listed(&store)
        .into_iter()
        .find(|(b, _)| b.cidr.to_string() == n1_block)
        .expect("the leak's block");
    rt.block_on(ipam::pod::BlockStore::update(&store, &b, &version))
        .expect("touched");
    let out = release(&report);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale") && err.contains(&n1_block), "{err}");
    // A fresh report: the leak is given back, the rest is left to a person.
    check(Some(&report));
    let out = release(&report);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("gave back {a1}")), "{said}");
    assert!(
        said.contains("not released (fix by hand): duplicate affinity"),
        "{said}"
    );
    let held: Vec<String> = listed(&store)
        .iter()
        .flat_map(|(b, _)| b.allocations.iter().map(|a| a.holder.handle.clone()))
        .collect();
    assert!(!held.contains(&"a1/eth0".to_string()), "{held:?}");
}
