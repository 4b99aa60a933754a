//! VXLAN across an L3 boundary, on the wire. Two racks: n1 and n2 share rack
//! A's L2 segment, n3 is alone in rack B; a router joins them and an
//! "outside" host, and carries the node subnets but no pod routes. Agents
//! (standalone, node-to-node mesh across the router) with an IPPool
//! `encapsulation: {type: VXLAN, mode: CrossSubnet}, natOutgoing: true`;
//! pods made by Debian's `ptp` and `host-local`, with the MTU the agent
//! wrote into the CNI configuration.
//!
//! Captured with tshark inside the router's namespace: cross-rack pod
//! traffic is UDP 4789 carrying the pods' addresses, same-rack traffic is
//! plain; the outside host sees the node's address; a don't-fragment ping
//! of exactly the pod MTU passes and one byte more is refused with an
//! error; switching the pool to `Always` live encapsulates same-rack
//! traffic too, with no agent restarted.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::cmd::wait_until;
use testkit::guard::{KillOnDrop as Agent, TempDir as Dir};
use testkit::netns::{self, Netns};

const PTP: &str = "/usr/lib/cni/ptp";
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

fn objects(kind: &str, mode: &str) -> String {
    format!(
        "apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{asNumber: 64512}}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {{name: pods}}
spec:
  cidr: 10.80.0.0/16
  natOutgoing: true
  encapsulation: {{type: {kind}, mode: {mode}}}
---
apiVersion: v1
kind: Node
metadata: {{name: n1}}
spec: {{podCIDR: 10.80.1.0/24}}
status: {{addresses: [{{type: InternalIP, address: 10.0.1.1}}]}}
---
apiVersion: v1
kind: Node
metadata: {{name: n2}}
spec: {{podCIDR: 10.80.2.0/24}}
status: {{addresses: [{{type: InternalIP, address: 10.0.1.2}}]}}
---
apiVersion: v1
kind: Node
metadata: {{name: n3}}
spec: {{podCIDR: 10.80.3.0/24}}
status: {{addresses: [{{type: InternalIP, address: 10.0.2.3}}]}}
"
    )
}

fn write_objects(dir: &Path, kind: &str, mode: &str) {
    let tmp = dir.join("objects.yaml.tmp");
    std::fs::write(&tmp, objects(kind, mode)).expect("objects");
    std::fs::rename(&tmp, dir.join("src/objects.yaml")).expect("objects");
}

fn conflist(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.conflist"))
}

fn agent(dir: &Path, ns: &Netns, node: &str, extra: &[String]) -> Agent {
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
        .arg("--cni-conflist")
        .arg(conflist(dir, node))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent(child)
}

/// `ptp ADD` with `host-local` in the node's pod CIDR, configured from the
/// node's network configuration list as a runtime reads it; the pod's
/// address.
fn add_pod(dir: &Path, node_ns: &Netns, node: &str, subnet: &str, pod: &Netns) -> IpAddr {
    let list: Value =
        serde_json::from_slice(&std::fs::read(conflist(dir, node)).expect("conflist"))
            .expect("json");
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf["ipam"] = json!({
        "type": "host-local", "subnet": subnet, "dataDir": dir.join(format!("{node}-ipam")),
        "routes": [{"dst": "0.0.0.0/0"}],
    });
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns.name(), PTP])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", pod.name())
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
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
    assert!(
        out.status.success(),
        "ptp ADD on {node}: {v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.parse::<ipnet::IpNet>().ok())
        .map(|n| n.addr())
        .unwrap_or_else(|| panic!("no address in {v}"))
}

fn ping(from: &Netns, to: IpAddr, extra: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", from.name(), "ping", "-c", "1", "-W", "1"])
        .args(extra)
        .arg(to.to_string())
        .output()
        .expect("ping runs")
}

/// tshark on one interface of a namespace, until [`Capture::stop`].
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &Netns, iface: &str, file: PathBuf) -> Capture {
        let _ = std::fs::remove_file(&file);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "tshark",
                "-q",
                "-i",
                iface,
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark runs");
        let c = Capture { child, file };
        // dumpcap writes the file's header once it captures.
        wait_until(20, "tshark to start", || match std::fs::metadata(&c.file) {
            Ok(m) if m.len() > 0 => Ok(()),
            _ => Err(format!("{} not written yet", c.file.display())),
        });
        std::thread::sleep(Duration::from_millis(300));
        c
    }

    /// Stops the capture; one line per packet: IP sources, IP
    /// destinations (outer and inner, comma-separated), UDP destination
    /// port, ICMP type.
    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args([
                "-T",
                "fields",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "udp.dstport",
                "-e",
                "icmp.type",
            ])
            .stderr(Stdio::null())
            .output()
            .expect("tshark reads");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pings `to` from `from` three times with a capture on `iface` of `ns`
/// running; the captured packets.
fn captured(ns: &Netns, iface: &str, file: PathBuf, from: &Netns, to: IpAddr) -> Vec<String> {
    let c = Capture::start(ns, iface, file);
    for _ in 0..3 {
        let out = ping(from, to, &[]);
        assert!(
            out.status.success(),
            "ping {to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    c.stop()
}

/// Waits for the agent of n1 to write `mtu` into its CNI configuration,
/// then makes a pod on each node with it; the pods and their addresses.
fn pods_with_mtu(dir: &Path, n: &[Netns], mtu: u32) -> (Vec<Netns>, [IpAddr; 3]) {
    wait_until(30, "the pods' MTU in the CNI configuration", || {
        let v: Value =
            serde_json::from_slice(&std::fs::read(conflist(dir, "n1")).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        (v["plugins"][0]["mtu"] == mtu)
            .then_some(())
            .ok_or(v.to_string())
    });
    let pods: Vec<Netns> = (0..3).map(|_| Netns::new("ovp").expect("pod")).collect();
    let ips = [0, 1, 2].map(|i| {
        let node = format!("n{}", i + 1);
        let subnet = format!("10.80.{}.0/24", i + 1);
        add_pod(dir, &n[i], &node, &subnet, &pods[i])
    });
    (pods, ips)
}

/// The nodes' tunnel state, for a failure's message.
fn diagnose(nodes: &[Netns]) -> String {
    let mut out = String::new();
    for ns in nodes {
        for args in [
            &["ip", "-d", "-s", "link", "show", "vxlan.petrel"][..],
            &["ip", "-s", "link"],
            &["nft", "list", "ruleset"],
            &["ip", "addr", "show", "vxlan.petrel"],
            &["ip", "neigh", "show", "dev", "vxlan.petrel"],
            &["bridge", "fdb", "show", "dev", "vxlan.petrel"],
            &["ip", "route"],
        ] {
            let o = Command::new("ip")
                .args(["netns", "exec", ns.name()])
                .args(args)
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!("{} $ {}\n{o}", ns.name(), args.join(" ")));
        }
    }
    out
}

fn route(ns: &Netns, dst: &str) -> Option<Value> {
    ns.routes(&[]).into_iter().find(|r| r["dst"] == dst)
}

fn petrel_status(dir: &Path, ns: &Netns, node: &str) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .args(["status", "-o", "json", "--socket"])
        .arg(dir.join(format!("{node}-api.sock")))
        .output()
        .expect("petrel status runs");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The two racks, the router, the outside host and an agent per node.
struct Racks {
    // Agents first: they stop before their namespaces go.
    _agents: Vec<Agent>,
    dir: Dir,
    r: Netns,
    out: Netns,
    n: Vec<Netns>,
}

impl Racks {
    /// Builds the racks and starts the agents with one IPPool
    /// `encapsulation: {type: KIND, mode: MODE}`.
    fn start(kind: &str, mode: &str) -> Racks {
        Racks::start_with(kind, mode, &|_| Vec::new(), &|s| s)
    }

    /// [`Racks::start`], with more arguments for each node's agent and the
    /// objects' YAML edited by `objects`.
    fn start_with(
        kind: &str,
        mode: &str,
        args: &dyn Fn(&str) -> Vec<String>,
        objects: &dyn Fn(String) -> String,
    ) -> Racks {
        for tool in [PTP, HOST_LOCAL] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's containernetworking-plugins (.ci/run does)"
            );
        }
        for tool in ["tshark", "nft"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is missing: install Debian's {} (.ci/run does)",
                if tool == "nft" { "nftables" } else { tool }
            );
        }
        let r = Netns::new("ovr").expect("router");
        let out = Netns::new("ovo").expect("outside");
        let n: Vec<Netns> = (0..3).map(|_| Netns::new("ovn").expect("node")).collect();
        // Rack A: a bridge in the router's namespace, n1 and n2 on it.
        r.ip(&["link", "add", "rackA", "type", "bridge"])
            .expect("bridge");
        r.ip(&["addr", "add", "10.0.1.254/24", "dev", "rackA"])
            .expect("addr");
        r.ip(&["link", "set", "rackA", "up"]).expect("up");
        for (i, node) in n[..2].iter().enumerate() {
            let port = format!("a{}", i + 1);
            let addr = format!("10.0.1.{}/24", i + 1);
            netns::veth(node.name(), r.name(), &port, &[&addr], &[]).expect("rack A link");
            r.ip(&["link", "set", &port, "master", "rackA"])
                .expect("port");
        }
        // Rack B: n3 on a link of its own.
        netns::veth(
            n[2].name(),
            r.name(),
            "b3",
            &["10.0.2.3/24"],
            &["10.0.2.254/24"],
        )
        .expect("rack B");
        netns::veth(
            out.name(),
            r.name(),
            "ext",
            &["203.0.113.2/24"],
            &["203.0.113.1/24"],
        )
        .expect("outside");
        for (node, gw) in n.iter().zip(["10.0.1.254", "10.0.1.254", "10.0.2.254"]) {
            node.ip(&["route", "add", "default", "via", gw])
                .expect("default route");
            netns::sysctl(node.name(), &["net.ipv4.ip_forward=1"]).expect("forwarding");
        }
        netns::sysctl(r.name(), &["net.ipv4.ip_forward=1"]).expect("forwarding");
        // The outside knows the node subnets (to answer masqueraded traffic),
        // never the pods'.
        out.ip(&["route", "add", "10.0.0.0/16", "via", "203.0.113.1"])
            .expect("route");

        let dir = Dir(std::env::temp_dir().join(format!("petrel-overlay-{}", r.name())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(dir.0.join("src")).expect("dir");
        write_objects(&dir.0, kind, mode);
        let edited =
            objects(std::fs::read_to_string(dir.0.join("src/objects.yaml")).expect("objects"));
        std::fs::write(dir.0.join("src/objects.yaml"), edited).expect("objects");
        for node in ["n1", "n2", "n3"] {
            let list = json!({
                "cniVersion": "1.0.0", "name": "petrel-overlay",
                "plugins": [{"type": "ptp", "ipam": {"type": "host-local"}}],
            });
            std::fs::write(conflist(&dir.0, node), list.to_string()).expect("conflist");
        }
        let _agents: Vec<Agent> = n
            .iter()
            .zip(["n1", "n2", "n3"])
            .map(|(ns, name)| agent(&dir.0, ns, name, &args(name)))
            .collect();
        Racks {
            _agents,
            dir,
            r,
            out,
            n,
        }
    }
}

/// The tests that run agents, pods and wireguard-go take turns: run side by
/// side on two cores, an agent can lag the other by more than a WireGuard
/// handshake, and the key rotation's check then measures the machine's
/// load (a lost handshake is retried after 5 s), not petrel.
static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn my_turn() -> std::sync::MutexGuard<'static, ()> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn vxlan_cross_subnet_encapsulates_between_racks_only_and_nat_hides_pods() {
    let _turn = my_turn();
    let Racks {
        _agents,
        dir,
        r,
        out,
        n,
    } = Racks::start("VXLAN", "CrossSubnet");

    // n1: rack B's block through the tunnel to n3's endpoint (its block's
    // first address), rack A's straight to n2.
    wait_until(60, "n1's routes to the other blocks", || {
        let b = route(&n[0], "10.80.3.0/24").ok_or("no route to n3's block")?;
        let a = route(&n[0], "10.80.2.0/24").ok_or("no route to n2's block")?;
        let ok = b["gateway"] == "10.80.3.0"
            && b["dev"] == "vxlan.petrel"
            && b["flags"].to_string().contains("onlink")
            && a["gateway"] == "10.0.1.2"
            && a["dev"] == "a1";
        ok.then_some(()).ok_or(format!("{b} / {a}"))
    });
    // The agent gave the pods the link's MTU less VXLAN's 50 bytes.
    let (pods, [ip1, ip2, ip3]) = pods_with_mtu(&dir.0, &n, 1450);
    for (to, what) in [(ip3, "pod on n3 (rack B)"), (ip2, "pod on n2 (rack A)")] {
        wait_until(30, what, || {
            let o = ping(&pods[0], to, &[]);
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{}\n{}", String::from_utf8_lossy(&o.stdout), diagnose(&n)))
        });
    }

    // Cross-rack: UDP 4789 between the nodes, the pods' addresses inside.
    let lines = captured(&r, "b3", dir.0.join("b3.pcap"), &pods[0], ip3);
    let (p1, p3) = (ip1.to_string(), ip3.to_string());
    let tunnelled = lines
        .iter()
        .filter(|l| {
            l.contains("4789") && l.contains(&p1) && l.contains(&p3) && l.contains("10.0.1.1")
        })
        .count();
    assert!(
        tunnelled >= 6,
        "three echo requests and replies in VXLAN: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| !l.contains("4789") && l.contains(&p1)),
        "a pod address in the clear between racks: {lines:#?}"
    );
    // Same rack: plain.
    let lines = captured(&r, "a2", dir.0.join("a2.pcap"), &pods[0], ip2);
    let plain = lines
        .iter()
        .filter(|l| l.starts_with(&p1) && !l.contains("4789"))
        .count();
    assert!(
        plain >= 3,
        "echo requests routed plainly within rack A: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("4789")),
        "VXLAN within rack A: {lines:#?}"
    );

    // natOutgoing: the outside sees n1's address, never a pod's.
    let lines = captured(
        &out,
        "ext",
        dir.0.join("ext.pcap"),
        &pods[0],
        "203.0.113.2".parse().expect("ip"),
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("10.0.1.1\t203.0.113.2"))
            .count()
            >= 3,
        "masqueraded to n1's address: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(&p1)),
        "a pod address outside: {lines:#?}"
    );

    // MTU: exactly the pod MTU passes with don't-fragment across racks; one
    // byte more is refused with an error, not dropped in silence.
    let fits = ping(&pods[0], ip3, &["-M", "do", "-s", "1422"]);
    assert!(
        fits.status.success(),
        "1450-byte DF ping: {}",
        String::from_utf8_lossy(&fits.stdout)
    );
    let over = ping(&pods[0], ip3, &["-M", "do", "-s", "1423"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&over.stdout),
        String::from_utf8_lossy(&over.stderr)
    );
    assert!(!over.status.success(), "1451 bytes passed: {said}");
    assert!(
        said.contains("mtu=1450") || said.contains("too long"),
        "no error naming the MTU: {said}"
    );

    // Status: per remote node, the tunnel and why.
    let s = petrel_status(&dir.0, &n[0], "n1");
    let o = &s["overlay"];
    assert_eq!(o["pod_mtu"], 1450, "{s:#}");
    let n3 = o["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["node"] == "n3"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(n3["pools"][0]["tunnel"], "VXLAN", "{o:#}");
    assert!(
        n3["pools"][0]["reason"].to_string().contains("10.0.1.254"),
        "{o:#}"
    );
    let n2 = o["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["node"] == "n2"))
        .cloned()
        .unwrap_or_default();
    assert!(n2["pools"][0]["tunnel"].is_null(), "{o:#}");
    assert!(
        n2["pools"][0]["reason"]
            .to_string()
            .contains("directly connected"),
        "{o:#}"
    );

    // Switched live to Always: rack A's traffic goes through the tunnel too.
    write_objects(&dir.0, "VXLAN", "Always");
    wait_until(30, "n1's route to n2's block through the tunnel", || {
        let a = route(&n[0], "10.80.2.0/24").ok_or("no route")?;
        (a["dev"] == "vxlan.petrel" && a["gateway"] == "10.80.2.0")
            .then_some(())
            .ok_or(a.to_string())
    });
    let lines = captured(&r, "a2", dir.0.join("a2-always.pcap"), &pods[0], ip2);
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("4789") && l.contains(&p1))
            .count()
            >= 6,
        "VXLAN within rack A under Always: {lines:#?}"
    );
}

/// Whether this kernel makes IPIP devices (the test machines' kernels have
/// no `ipip` module).
fn kernel_has_ipip() -> bool {
    let ns = Netns::new("ovq").expect("probe namespace");
    ns.ip(&["link", "add", "probe", "type", "ipip", "local", "192.0.2.1"])
        .is_ok()
}

#[test]
fn ipip_routes_through_the_tunnel_or_says_why_it_cannot() {
    let _turn = my_turn();
    let Racks {
        _agents,
        dir,
        r,
        out: _out,
        n,
    } = Racks::start("IPIP", "CrossSubnet");
    if !kernel_has_ipip() {
        eprintln!(
            "SKIPPED on the wire: this kernel has no ipip module; checking that the agent says so and routes plainly"
        );
        wait_until(30, "n1's status to name the missing IPIP device", || {
            let s = petrel_status(&dir.0, &n[0], "n1");
            let o = &s["overlay"];
            let n3 = o["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["node"] == "n3"))
                .cloned()
                .unwrap_or_default();
            let said = o["errors"].to_string().contains("ipip module")
                && n3["pools"][0]["tunnel"].is_null()
                && n3["pools"][0]["reason"]
                    .to_string()
                    .contains("no IPIP device");
            said.then_some(()).ok_or(o.to_string())
        });
        let b = route(&n[0], "10.80.3.0/24").expect("a plain route to n3's block");
        assert_eq!(b["gateway"], "10.0.1.254", "{b}");
        return;
    }
    wait_until(
        60,
        "n1's route to n3's block through the IPIP device",
        || {
            let b = route(&n[0], "10.80.3.0/24").ok_or("no route to n3's block")?;
            let ok = b["gateway"] == "10.0.2.3"
                && b["dev"] == "ipip.petrel"
                && b["flags"].to_string().contains("onlink");
            ok.then_some(()).ok_or(b.to_string())
        },
    );
    let pods: Vec<Netns> = (0..2).map(|_| Netns::new("ovp").expect("pod")).collect();
    let ip1 = add_pod(&dir.0, &n[0], "n1", "10.80.1.0/24", &pods[0]);
    let ip3 = add_pod(&dir.0, &n[2], "n3", "10.80.3.0/24", &pods[1]);
    wait_until(30, "the pod on n3 through IPIP", || {
        let o = ping(&pods[0], ip3, &[]);
        o.status.success().then_some(()).ok_or_else(|| diagnose(&n))
    });
    let lines = captured(&r, "b3", dir.0.join("b3-ipip.pcap"), &pods[0], ip3);
    let inside = lines
        .iter()
        .filter(|l| {
            l.contains("10.0.1.1") && l.contains(&ip1.to_string()) && l.contains(&ip3.to_string())
        })
        .count();
    assert!(
        inside >= 6,
        "pod traffic inside IPIP between n1 and n3: {lines:#?}"
    );
}

/// Files removed when dropped.
struct Sockets(Vec<PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// `wg genkey` and `wg pubkey` (Debian's wireguard-tools): a private key
/// written to `file` (mode 0600) and its public key.
fn wg_key(file: &Path) -> String {
    use std::io::Write as _;
    let private = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    assert!(private.status.success(), "wg genkey");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .expect("key file");
        f.write_all(&private.stdout).expect("key");
    }
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&private.stdout)
        .expect("private key");
    let out = child.wait_with_output().expect("wg pubkey");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Three nodes' WireGuard keys (`wg genkey`) in a directory of the test's.
struct WgKeys {
    dir: Dir,
    public: Vec<String>,
    tag: u32,
}

impl WgKeys {
    fn new(tag: u32) -> WgKeys {
        let dir = std::env::temp_dir().join(format!("petrel-wg-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let dir = Dir(dir);
        let public = ["n1", "n2", "n3"]
            .iter()
            .map(|n| wg_key(&dir.0.join(format!("{n}.key"))))
            .collect();
        WgKeys { dir, public, tag }
    }

    /// The agent's device name and key file for `node`.
    fn args(&self, node: &str) -> Vec<String> {
        vec![
            "--wireguard-interface".into(),
            format!("wg{}{node}", self.tag),
            "--wireguard-key".into(),
            self.dir.0.join(format!("{node}.key")).display().to_string(),
        ]
    }

    /// The objects' edit: `wireguardEncryption: Required`, and n1's and
    /// n2's public keys on their Nodes (n3 publishes none).
    fn required_with_n1_n2_keyed(&self) -> impl Fn(String) -> String + 'static {
        let (k1, k2) = (self.public[0].clone(), self.public[1].clone());
        move |s: String| {
            s.replace(
                "spec: {asNumber: 64512}",
                "spec: {asNumber: 64512, overlay: {wireguardEncryption: Required}}",
            )
            .replace(
                "metadata: {name: n1}",
                &format!(
                    "metadata: {{name: n1, annotations: {{petrel.dev/wireguard-public-key: \"{k1}\"}}}}"
                ),
            )
            .replace(
                "metadata: {name: n2}",
                &format!(
                    "metadata: {{name: n2, annotations: {{petrel.dev/wireguard-public-key: \"{k2}\"}}}}"
                ),
            )
        }
    }
}

fn kernel_has_wireguard() -> bool {
    let ns = Netns::new("ovq").expect("probe namespace");
    ns.ip(&["link", "add", "probe", "type", "wireguard"])
        .is_ok()
}

/// WireGuard through the kernel's module, configured over generic
/// netlink. Where the kernel has the module, n1's pods reach n2's through
/// it and only WireGuard's port crosses the wire; where it has none (the
/// test machines), the agent says so in status and, with `Required`,
/// closes the pool rather than sending anything in the clear.
#[test]
fn wireguard_through_the_kernel_module_or_says_why_it_cannot() {
    let tag = std::process::id() % 100_000 + 1;
    let keys = WgKeys::new(tag);
    let args = |node: &str| keys.args(node);
    let edit = keys.required_with_n1_n2_keyed();
    let Racks {
        _agents,
        dir,
        r,
        out: _out,
        n,
    } = Racks::start_with("WireGuard", "Always", &args, &edit);
    if !kernel_has_wireguard() {
        eprintln!(
            "SKIPPED on the wire: this kernel has no wireguard module; checking that the agent says so and sends nothing in the clear"
        );
        wait_until(30, "n1's status to name the missing module", || {
            let s = petrel_status(&dir.0, &n[0], "n1");
            let o = &s["overlay"];
            o["errors"]
                .to_string()
                .contains("wireguard module")
                .then_some(())
                .ok_or(o.to_string())
        });
        let table = n[0].routes(&["table", "51820"]);
        assert!(
            table
                .iter()
                .any(|r| r["dst"] == "10.80.0.0/16" && r["type"] == "unreachable"),
            "the pool closed without a device: {table:#?}"
        );
        return;
    }
    let (pods, [ip1, ip2, _]) = pods_with_mtu(&dir.0, &n, 1440);
    wait_until(60, "the pod on n2 through the kernel's WireGuard", || {
        let o = ping(&pods[0], ip2, &[]);
        o.status.success().then_some(()).ok_or_else(|| diagnose(&n))
    });
    let lines = captured(&r, "a2", dir.0.join("a2-kwg.pcap"), &pods[0], ip2);
    assert!(
        lines.iter().filter(|l| l.contains("51820")).count() >= 6,
        "echo requests and replies inside WireGuard: {lines:#?}"
    );
    let (p1, p2) = (ip1.to_string(), ip2.to_string());
    assert!(
        !lines.iter().any(|l| l.contains(&p1) || l.contains(&p2)),
        "a pod address in the clear between n1 and n2: {lines:#?}"
    );
}

/// WireGuard with `wireguardEncryption: Required`, the userspace
/// implementation (Debian's `wireguard-go`; the test kernels have no
/// WireGuard module): n1 and n2 published their keys, n3 did not. Between
/// n1 and n2 only WireGuard's port crosses the wire and no pod address is
/// seen; to n3, whose key is unknown, pods' packets are dropped, never sent
/// in the clear.
#[test]
fn wireguard_encrypts_and_required_never_sends_plaintext() {
    let _turn = my_turn();
    for tool in ["wireguard-go", "wg"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is missing: install Debian's wireguard-go and wireguard-tools (.ci/run does)"
        );
    }
    let tag = std::process::id() % 100_000;
    let keys = WgKeys::new(tag);
    // The agents are killed, so their wireguard-go leave their sockets.
    let _sockets = Sockets(
        ["n1", "n2", "n3"]
            .iter()
            .map(|n| PathBuf::from(format!("/var/run/wireguard/wg{tag}{n}.sock")))
            .collect(),
    );
    let args = |node: &str| -> Vec<String> {
        let mut a = vec!["--wireguard-userspace".into(), "wireguard-go".into()];
        a.extend(keys.args(node));
        a
    };
    let public = keys.public.clone();
    let edit = keys.required_with_n1_n2_keyed();
    let Racks {
        _agents,
        dir,
        r,
        out: _out,
        n,
    } = Racks::start_with("WireGuard", "Always", &args, &edit);

    wait_until(60, "n1's decisions: n2 encrypted, n3 dropped", || {
        let s = petrel_status(&dir.0, &n[0], "n1");
        let o = &s["overlay"];
        let find = |node: &str| {
            o["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["node"] == node))
                .cloned()
                .unwrap_or_default()
        };
        let (n2, n3) = (find("n2"), find("n3"));
        let ok = n2["pools"][0]["tunnel"] == "WireGuard"
            && n3["pools"][0]["tunnel"].is_null()
            && n3["pools"][0]["reason"].to_string().contains("dropped");
        ok.then_some(()).ok_or(o.to_string())
    });
    let (pods, [ip1, ip2, ip3]) = pods_with_mtu(&dir.0, &n, 1440);
    wait_until(30, "the pod on n2 through WireGuard", || {
        let o = ping(&pods[0], ip2, &[]);
        o.status.success().then_some(()).ok_or_else(|| diagnose(&n))
    });
    let (p1, p2, p3) = (ip1.to_string(), ip2.to_string(), ip3.to_string());
    let lines = captured(&r, "a2", dir.0.join("a2-wg.pcap"), &pods[0], ip2);
    assert!(
        lines.iter().filter(|l| l.contains("51820")).count() >= 6,
        "echo requests and replies inside WireGuard: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(&p1) || l.contains(&p2)),
        "a pod address in the clear between n1 and n2: {lines:#?}"
    );
    // To n3 (no key): dropped, never sent in the clear.
    let c = Capture::start(&r, "b3", dir.0.join("b3-wg.pcap"));
    for _ in 0..3 {
        let o = ping(&pods[0], ip3, &[]);
        assert!(
            !o.status.success(),
            "a pod on n3 answered without a key known"
        );
    }
    let lines = c.stop();
    assert!(
        !lines.iter().any(|l| l.contains(&p1) || l.contains(&p3)),
        "pod traffic to a node without a key left in the clear: {lines:#?}"
    );
    // Where that is decided: n1's WireGuard table.
    let table = n[0].routes(&["table", "51820"]);
    assert!(
        table
            .iter()
            .any(|r| r["dst"] == "10.80.3.0/24" && r["type"] == "unreachable"),
        "{table:#?}"
    );
    assert!(
        table.iter().any(|r| r["dst"] == "10.80.2.0/24"
            && r["dev"].as_str().is_some_and(|d| d.starts_with("wg"))),
        "{table:#?}"
    );

    assert!(
        table
            .iter()
            .any(|r| r["dst"] == "10.80.0.0/16" && r["type"] == "unreachable"),
        "the pool closed as a whole: {table:#?}"
    );
    assert!(
        table
            .iter()
            .any(|r| r["dst"] == "10.80.1.0/24" && r["type"] == "throw"),
        "n1's own block back to the main table: {table:#?}"
    );
    // The device gone (as when the agent restarts): still nothing in the
    // clear, the pool stays closed until the device is back.
    n[0].ip(&["link", "del", &format!("wg{tag}n1")])
        .expect("device removed");
    let c = Capture::start(&r, "a2", dir.0.join("a2-nodev.pcap"));
    let _ = ping(&pods[0], ip2, &[]);
    let lines = c.stop();
    assert!(
        !lines.iter().any(|l| l.contains(&p1) || l.contains(&p2)),
        "pod traffic in the clear without the device: {lines:#?}"
    );
    wait_until(30, "the device back and n2 reached again", || {
        let o = ping(&pods[0], ip2, &[]);
        o.status.success().then_some(()).ok_or_else(|| diagnose(&n))
    });

    // Key rotation: n1's key file replaced and its new public key published
    // (the Node YAML, as the file source has it), while p1 pings p2 every
    // 50 ms for 4 s. Traffic stops for no longer than the switch-over and
    // one handshake.
    let new_key = keys.dir.0.join("n1.new");
    let new_public = wg_key(&new_key);
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            pods[0].name(),
            "ping",
            "-i",
            "0.05",
            "-c",
            "80",
            "-W",
            "1",
        ])
        .arg(&p2)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&new_key, keys.dir.0.join("n1.key")).expect("rotate");
    let yaml = std::fs::read_to_string(dir.0.join("src/objects.yaml")).expect("objects");
    let rotated = yaml.replace(&public[0], &new_public);
    assert_ne!(rotated, yaml);
    let tmp = dir.0.join("objects.yaml.tmp");
    std::fs::write(&tmp, rotated).expect("objects");
    std::fs::rename(&tmp, dir.0.join("src/objects.yaml")).expect("objects");
    let out = pinger.wait_with_output().expect("ping ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let received = text
        .lines()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .strip_suffix(" received")?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    eprintln!(
        "key rotation: {} of 80 pings (50 ms apart) lost",
        80 - received
    );
    assert!(
        received >= 60,
        "more than a second of traffic lost over a key rotation: {text}"
    );
    let o = ping(&pods[0], ip2, &[]);
    assert!(
        o.status.success(),
        "n2 after the rotation: {}",
        diagnose(&n)
    );
    // The device runs the new key, and n2's peer for n1 is the new one.
    let wg_show = |ns: &Netns, node: &str, what: &str| {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "wg",
                "show",
                &format!("wg{tag}{node}"),
                what,
            ])
            .output()
            .expect("wg show");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(wg_show(&n[0], "n1", "public-key").trim(), new_public);
    assert!(wg_show(&n[1], "n2", "peers").contains(&new_public));
}
