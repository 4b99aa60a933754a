//! `petrel lab` end to end: the real binary builds labs from `labs/*.yaml`
//! (FRR or a petrel route reflector, three nodes with agents, pods, a
//! LoadBalancer Service) and the tests check what a user would: pings between
//! pods, the router's routes to the VIP, endpoint moves, Service deletion and
//! an agent's restart. Each test has a lab of its own, named after the test
//! and our pid, and removed by a guard even when the test fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const VIP: &str = "198.51.100.10";

/// The pods of tor.yaml and rr.yaml: (node, pod index, address).
/// The pods of every topology: (node, pod number, address with `ipamMode:
/// Kubernetes`, from the node's podCIDR). With petrel's IPAM (tor, rr)
/// the lab's state has the address each pod got.
const PODS: [(&str, u8, &str); 6] = [
    ("node-1", 1, "10.244.1.2"),
    ("node-1", 2, "10.244.1.3"),
    ("node-2", 1, "10.244.2.2"),
    ("node-2", 2, "10.244.2.3"),
    ("node-3", 1, "10.244.3.2"),
    ("node-3", 2, "10.244.3.3"),
];

fn petrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("petrel runs")
}

/// A running lab; `petrel lab down` when dropped.
struct Lab {
    name: String,
    /// The router's (switch) namespace.
    router_ns: String,
}

impl Lab {
    /// `petrel lab up labs/<topology>.yaml --name <short unique name>`.
    fn up(topology: &str, tag: &str) -> Lab {
        Lab::up_with(topology, tag, &[])
    }

    /// [`Lab::up`] with more arguments for `petrel lab up`.
    fn up_with(topology: &str, tag: &str, extra: &[&str]) -> Lab {
        assert!(
            testkit::is_root(),
            "lab tests need root (network namespaces); run them as CI does, via .ci/run"
        );
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let router = match topology {
            "rr" => "rr",
            t if t.contains("racks") => "core",
            _ => "tor",
        };
        // The guard first: a failed `up` leaves nothing behind either.
        let lab = Lab {
            router_ns: format!("{name}-{router}"),
            name,
        };
        // A built-in topology's file, or a file of the test's own.
        let file = if topology.contains('/') {
            PathBuf::from(topology)
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../labs")
                .join(format!("{topology}.yaml"))
        };
        let file = file.display().to_string();
        let mut args = vec!["lab", "up", &file, "--name", &lab.name, "--timeout", "60"];
        args.extend_from_slice(extra);
        let out = petrel(&args);
        assert!(
            out.status.success(),
            "lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn pod_ns(&self, node: &str, i: u8) -> String {
        format!("{}-{node}-pod{i}", self.name)
    }

    /// Pod `i` of `node`'s address: as petrel's IPAM gave it (the lab's
    /// state), else from the node's podCIDR.
    fn pod_ip(&self, node: &str, i: u8) -> String {
        let state: Value = std::fs::read(
            PathBuf::from("/run/petrel-lab")
                .join(&self.name)
                .join("state.json"),
        )
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
        match state["pod_ips"][self.pod_ns(node, i)].as_str() {
            Some(ip) => ip.to_string(),
            None => PODS
                .iter()
                .find(|(n, k, _)| *n == node && *k == i)
                .map(|(_, _, ip)| ip.to_string())
                .unwrap_or_else(|| panic!("no pod {i} on {node}")),
        }
    }

    /// The prefix of FRR's selected BGP route to `ip` (longest match).
    fn frr_route_to(&self, ip: &str) -> Option<String> {
        let v = self.vtysh_json(&format!("show ip route {ip} json"));
        v.as_object()?.iter().find_map(|(prefix, routes)| {
            routes
                .as_array()?
                .iter()
                .any(|r| r["selected"] == true && r["protocol"] == "bgp")
                .then(|| prefix.clone())
        })
    }

    /// The directory every agent reads.
    fn cluster_dir(&self) -> PathBuf {
        PathBuf::from("/run/petrel-lab")
            .join(&self.name)
            .join("cluster")
    }

    /// Replaces (or adds) one of the cluster's files the way the lab does:
    /// a temporary file renamed over it, so agents never read half of it.
    fn write_object(&self, file: &str, yaml: &str) {
        let tmp = self.cluster_dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write object");
        std::fs::rename(&tmp, self.cluster_dir().join(file)).expect("replace object");
    }

    /// `vtysh -N <router ns> -c CMD` parsed as JSON.
    fn vtysh_json(&self, cmd: &str) -> Value {
        let o = Command::new("vtysh")
            .args(["-N", &self.router_ns, "-c", cmd])
            .output()
            .expect("vtysh");
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// The next hops of FRR's selected, installed route for `prefix` (empty: none).
    fn frr_next_hops(&self, prefix: &str) -> BTreeSet<String> {
        let v = self.vtysh_json(&format!("show ip route {prefix} json"));
        let mut hops = BTreeSet::new();
        for route in v[prefix].as_array().into_iter().flatten() {
            if route["selected"] != true || route["protocol"] != "bgp" {
                continue;
            }
            for nh in route["nexthops"].as_array().into_iter().flatten() {
                if nh["active"] == true
                    && let Some(ip) = nh["ip"].as_str()
                {
                    hops.insert(ip.to_string());
                }
            }
        }
        hops
    }

    /// The gateways of the kernel route for `dst` in the router's namespace.
    fn kernel_next_hops(&self, dst: &str) -> BTreeSet<String> {
        let o = Command::new("ip")
            .args(["-n", &self.router_ns, "-j", "route", "show", dst])
            .output()
            .expect("ip route");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let mut hops = BTreeSet::new();
        for r in v.as_array().into_iter().flatten() {
            if r["dst"] != dst {
                continue;
            }
            if let Some(gw) = r["gateway"].as_str() {
                hops.insert(gw.to_string());
            }
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                if let Some(gw) = nh["gateway"].as_str() {
                    hops.insert(gw.to_string());
                }
            }
        }
        hops
    }

    /// Pings every pod from every other one (one ping each, once more on a
    /// miss); panics with the pairs that failed.
    fn assert_pods_reach_each_other(&self) {
        let mut pairs = Vec::new();
        for (n1, i1, _) in PODS {
            for (n2, i2, _) in PODS {
                if (n1, i1) != (n2, i2) {
                    pairs.push((self.pod_ns(n1, i1), self.pod_ip(n2, i2)));
                }
            }
        }
        let mut failed = ping_all(&pairs);
        if !failed.is_empty() {
            failed = ping_all(&failed);
        }
        assert!(failed.is_empty(), "these pods do not reach: {failed:?}");
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(PathBuf::from("/run/petrel-lab").join(&self.name).join(file))
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = petrel(&["lab", "down", "--name", &self.name]);
    }
}

/// Starts `ping -c1 -W1` for every (namespace, address) pair at once; returns
/// the pairs that got no answer.
fn ping_all(pairs: &[(String, String)]) -> Vec<(String, String)> {
    let children: Vec<_> = pairs
        .iter()
        .map(|(ns, ip)| {
            Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c1", "-W1", "-q", ip])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect();
    pairs
        .iter()
        .zip(children)
        .filter_map(|(pair, c)| match c {
            Ok(mut c) => match c.wait() {
                Ok(s) if s.success() => None,
                _ => Some(pair.clone()),
            },
            Err(_) => Some(pair.clone()),
        })
        .collect()
}

fn ping_once(ns: &str, ip: &str) -> bool {
    ping_all(&[(ns.to_string(), ip.to_string())]).is_empty()
}

/// Polls `f` every `every` for at most `limit`; panics with `what` and the
/// last value otherwise.
fn wait_until<T: std::fmt::Debug>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

/// Waits until FRR's next hops for `prefix` are exactly `want`.
fn wait_frr(lab: &Lab, prefix: &str, want: &BTreeSet<String>, limit: Duration) {
    wait_until(
        limit,
        Duration::from_millis(100),
        &format!("FRR's next hops for {prefix} to be {want:?}"),
        || {
            let got = lab.frr_next_hops(prefix);
            if &got == want {
                Ok(())
            } else {
                Err(format!("they are {got:?}"))
            }
        },
    );
}

/// Polls FRR's next hops for `prefix` every 50 ms (for at most 5 s) until
/// they are `want`, and asserts that took under a second from `start`.
fn assert_frr_follows_within_a_second(
    lab: &Lab,
    prefix: &str,
    want: &BTreeSet<String>,
    start: Instant,
    what: &str,
) {
    let mut last = BTreeSet::new();
    let mut elapsed = None;
    while start.elapsed() < Duration::from_secs(5) {
        last = lab.frr_next_hops(prefix);
        if &last == want {
            elapsed = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = elapsed.unwrap_or_else(|| {
        panic!(
            "{what}: FRR's next hops for {prefix} stayed {last:?}, not {want:?}; node-3's log:\n{}",
            lab.log("node-3.log")
        )
    });
    eprintln!("{what} reached FRR in {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "{what} took {elapsed:?} to reach FRR"
    );
}

/// Waits (at most 30 s) until FRR's session with `address` is Established.
fn wait_frr_established(lab: &Lab, address: &str) {
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        &format!("FRR's session with {address}"),
        || {
            let v = lab.vtysh_json(&format!("show bgp neighbors {address} json"));
            match v[address]["bgpState"].as_str() {
                Some("Established") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
}

/// The lab's EndpointSlice of `web` with the first pod of each node as endpoint.
fn web_slice(nodes: &[(&str, &str)]) -> String {
    let mut y = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-lab, namespace: default, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 80, protocol: TCP}]\nendpoints:\n",
    );
    for (node, ip) in nodes {
        y.push_str(&format!(
            "  - {{addresses: [{ip}], conditions: {{ready: true}}, nodeName: {node}}}\n"
        ));
    }
    y
}

#[test]
fn every_pod_reaches_every_other_pod() {
    let lab = Lab::up("tor", "lp");
    lab.assert_pods_reach_each_other();
}

#[test]
fn the_vip_is_ecmp_over_the_nodes_with_endpoints() {
    let lab = Lab::up("tor", "lv");
    let prefix = format!("{VIP}/32");
    // Sessions are up when `up` returns; the Service's routes follow at once.
    wait_frr(
        &lab,
        &prefix,
        &set(&["192.168.100.11", "192.168.100.12"]),
        Duration::from_secs(10),
    );
    assert!(
        ping_once(&lab.router_ns, VIP),
        "the ToR cannot ping the VIP"
    );
}

#[test]
fn moved_endpoints_move_the_vip_within_a_second() {
    let lab = Lab::up("tor", "lm");
    let prefix = format!("{VIP}/32");
    wait_frr(
        &lab,
        &prefix,
        &set(&["192.168.100.11", "192.168.100.12"]),
        Duration::from_secs(10),
    );
    let want = set(&["192.168.100.12", "192.168.100.13"]);
    let start = Instant::now();
    lab.write_object(
        "endpointslice-web.yaml",
        &web_slice(&[
            ("node-2", &lab.pod_ip("node-2", 1)),
            ("node-3", &lab.pod_ip("node-3", 1)),
        ]),
    );
    assert_frr_follows_within_a_second(&lab, &prefix, &want, start, "endpoint move");
    assert!(
        ping_once(&lab.router_ns, VIP),
        "the ToR cannot ping the VIP"
    );
}

#[test]
fn deleting_the_service_withdraws_its_routes() {
    let lab = Lab::up("tor", "ld");
    let vip = format!("{VIP}/32");
    wait_frr(
        &lab,
        &vip,
        &set(&["192.168.100.11", "192.168.100.12"]),
        Duration::from_secs(10),
    );
    for file in ["service-web.yaml", "endpointslice-web.yaml"] {
        std::fs::remove_file(lab.cluster_dir().join(file)).expect("remove object");
    }
    let none = BTreeSet::new();
    wait_frr(&lab, &vip, &none, Duration::from_secs(10));
    // The ClusterIP range is every node's, whatever Services exist; the
    // pods' routes are untouched.
    let all = set(&["192.168.100.11", "192.168.100.12", "192.168.100.13"]);
    wait_frr(&lab, "10.96.0.0/16", &all, Duration::from_secs(10));
    for (node, i, _) in PODS {
        let ip = lab.pod_ip(node, i);
        assert!(
            lab.frr_route_to(&ip).is_some(),
            "the ToR's route to {ip} (pod {i} of {node}) is gone too"
        );
    }
}

#[test]
fn an_agent_killed_and_restarted_costs_the_other_nodes_no_packet() {
    let lab = Lab::up("tor", "lr");
    let target = lab.pod_ip("node-2", 1);
    // 100 pings 50 ms apart, from node-1's pod to node-2's, while node-3's agent is killed and restarted.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pod_ns("node-1", 1),
            "ping",
            "-i",
            "0.05",
            "-c",
            "100",
            "-W",
            "1",
            "-q",
            &target,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    let out = petrel(&["lab", "restart", "node-3", "--kill", "--name", &lab.name]);
    assert!(
        out.status.success(),
        "lab restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ping.wait_with_output().expect("ping ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("100 received") && text.contains(" 0% packet loss"),
        "packets were lost during the restart:\n{text}"
    );
    // node-3 is back: its pods answer, its session is up again.
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "node-3's pods to answer again",
        || {
            let pairs = [
                (lab.pod_ns("node-1", 1), lab.pod_ip("node-3", 1)),
                (lab.pod_ns("node-2", 1), lab.pod_ip("node-3", 2)),
            ];
            let failed = ping_all(&pairs);
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("{failed:?}"))
            }
        },
    );
    wait_frr_established(&lab, "192.168.100.13");
}

#[test]
fn in_kubernetes_ipam_mode_the_pods_get_their_nodes_pod_cidr_addresses() {
    // tor-bird keeps ipamMode Kubernetes: pods numbered in their node's
    // podCIDR, the podCIDRs advertised (BIRD's table holds them).
    let lab = Lab::up("tor-bird", "lb");
    assert_eq!(lab.pod_ip("node-2", 1), "10.244.2.2");
    lab.assert_pods_reach_each_other();
}

#[test]
fn a_petrel_route_reflector_connects_the_pods_and_has_the_vip_as_ecmp() {
    let lab = Lab::up("rr", "lq");
    lab.assert_pods_reach_each_other();
    let want = set(&["192.168.100.11", "192.168.100.12"]);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "the reflector's kernel route to the VIP over node-1 and node-2",
        || {
            let got = lab.kernel_next_hops(VIP);
            if got == want {
                Ok(())
            } else {
                Err(format!("its next hops are {got:?}"))
            }
        },
    );
    assert!(
        ping_once(&lab.router_ns, VIP),
        "the reflector cannot ping the VIP"
    );
}

/// The Kubernetes "done when": the lab's objects in an API server (the
/// test's own control plane, or the cluster `PETREL_TEST_KUBECONFIG`
/// names), agents with `--source kube`, `petrel controller` assigning
/// LoadBalancer IPs from the lab's pool. A LoadBalancer Service gets its
/// address, is advertised from exactly the nodes with endpoints and
/// answers the ToR; a Service's EndpointSlice made by the real
/// endpointslice controller from its Pod is followed as the Pod turns
/// unready and ready again; an endpoint move reaches the ToR within a second;
/// deleting a Service withdraws it; `lab down` leaves the API server as it
/// was.
#[test]
fn with_an_api_server_a_load_balancer_service_gets_a_pool_address_advertised_from_its_endpoints_nodes()
 {
    use k8s_openapi::api::core::v1::{Node, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut env = rt.block_on(testkit::KubeEnv::start("kube-lab"));
    rt.block_on(env.install_crds());
    let kubeconfig = env.kubeconfig().display().to_string();
    let lab = Lab::up_with("tor", "lk", &["--kube", &kubeconfig]);
    let ns = format!("petrel-lab-{}", lab.name);
    let services: Api<Service> = Api::namespaced(env.client(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(env.client(), &ns);
    let ingress = |name: &str| -> Result<String, String> {
        let s = rt
            .block_on(services.get(name))
            .map_err(|e| format!("cannot read Service {name}: {e}"))?;
        s.status
            .and_then(|st| st.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().next())
            .and_then(|i| i.ip)
            .ok_or_else(|| "no ingress yet".to_string())
    };

    // `web` asks for the VIP (spec.loadBalancerIP); the controller grants it
    // from the lab's pool, and only nodes 1 and 2 have endpoints (Local).
    let ip = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the controller to assign web's address",
        || ingress("web"),
    );
    assert_eq!(ip, VIP, "web asked for {VIP}");
    wait_frr(
        &lab,
        &format!("{VIP}/32"),
        &set(&["192.168.100.11", "192.168.100.12"]),
        Duration::from_secs(10),
    );
    assert!(
        ping_once(&lab.router_ns, VIP),
        "the ToR cannot ping the VIP"
    );
    // The pods' addresses came from petrel's IPAM through the API server.
    lab.assert_pods_reach_each_other();

    // A Service asking for nothing gets an address of the pool, advertised
    // from node-3 alone, where its one Pod runs. The EndpointSlice is
    // kube-controller-manager's (its endpointslice controller), made from
    // the Pod, which the test reports running and ready in the kubelet's
    // place.
    let api: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "api", "namespace": ns},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "loadBalancerClass": format!("petrel.dev/lab-{}", lab.name),
                 "selector": {"app": "api"},
                 "ports": [{"port": 443, "protocol": "TCP"}]}
    }))
    .expect("Service");
    rt.block_on(services.create(&PostParams::default(), &api))
        .expect("Service created");
    let api_pod = lab.pod_ip("node-3", 2);
    rt.block_on(env.ready_pod(
        &ns,
        "api-0",
        serde_json::json!({"app": "api"}),
        "node-3",
        &api_pod,
    ));
    let api_ip = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "the controller to assign api's address",
        || ingress("api"),
    );
    let addr: std::net::Ipv4Addr = api_ip.parse().expect("an IPv4 address");
    assert!(
        addr.octets()[..3] == [198, 51, 100] && api_ip != VIP,
        "api got {api_ip}, not a free address of 198.51.100.0/24"
    );
    let api_prefix = format!("{api_ip}/32");
    wait_frr(
        &lab,
        &api_prefix,
        &set(&["192.168.100.13"]),
        Duration::from_secs(10),
    );
    // The Pod fails its readiness probe: its endpoint is no longer ready,
    // node-3 has none left, and withdraws api's address; ready again, it
    // announces it again.
    rt.block_on(env.set_pod_ready(&ns, "api-0", &api_pod, false));
    wait_frr(&lab, &api_prefix, &BTreeSet::new(), Duration::from_secs(10));
    rt.block_on(env.set_pod_ready(&ns, "api-0", &api_pod, true));
    wait_frr(
        &lab,
        &api_prefix,
        &set(&["192.168.100.13"]),
        Duration::from_secs(10),
    );

    // web's endpoints move to nodes 2 and 3: the ToR follows within a second.
    let moved = serde_json::json!({"endpoints": [
        {"addresses": [lab.pod_ip("node-2", 1)], "conditions": {"ready": true}, "nodeName": "node-2"},
        {"addresses": [lab.pod_ip("node-3", 1)], "conditions": {"ready": true}, "nodeName": "node-3"}
    ]});
    let want = set(&["192.168.100.12", "192.168.100.13"]);
    let start = Instant::now();
    rt.block_on(slices.patch("web-lab", &PatchParams::default(), &Patch::Merge(moved)))
        .expect("EndpointSlice patched");
    assert_frr_follows_within_a_second(
        &lab,
        &format!("{VIP}/32"),
        &want,
        start,
        "endpoint move through the API server",
    );

    // An agent restarted reads everything from the API server again and
    // takes up its part: its session is back and the VIP still has it.
    let out = petrel(&["lab", "restart", "node-2", "--name", &lab.name]);
    assert!(
        out.status.success(),
        "lab restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_frr_established(&lab, "192.168.100.12");
    // Graceful restart keeps node-2's old path meanwhile, marked stale:
    // wait for the one the new agent sends.
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "a fresh (not stale) path to the VIP from the restarted node-2",
        || {
            let v = lab.vtysh_json(&format!("show bgp ipv4 unicast {VIP}/32 json"));
            let fresh = v["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["peer"]["peerId"] == "192.168.100.12" && p["stale"] != true);
            if fresh {
                Ok(())
            } else {
                Err(format!("{}", v["paths"]))
            }
        },
    );
    wait_frr(&lab, &format!("{VIP}/32"), &want, Duration::from_secs(10));

    // Deleting `api` withdraws its address.
    rt.block_on(services.delete("api", &DeleteParams::default()))
        .expect("Service deleted");
    wait_frr(&lab, &api_prefix, &BTreeSet::new(), Duration::from_secs(10));

    // `lab down` deletes what the lab made in the API server.
    let name = lab.name.clone();
    drop(lab);
    let nodes: Api<Node> = Api::all(env.client());
    for n in ["node-1", "node-2", "node-3"] {
        assert!(
            rt.block_on(nodes.get_opt(n))
                .expect("Nodes readable")
                .is_none(),
            "lab {name} left Node {n} behind"
        );
    }
    let blocks: Api<crds::IPAMBlock> = Api::all(env.client());
    let left: Vec<String> = rt
        .block_on(blocks.list(&Default::default()))
        .expect("IPAMBlocks readable")
        .items
        .into_iter()
        .filter(|b| b.spec.pool == format!("petrel-lab-{name}"))
        .filter_map(|b| b.metadata.name)
        .collect();
    assert!(
        left.is_empty(),
        "lab {name} left IPAMBlocks behind: {left:?}"
    );
    rt.block_on(env.cleanup());
}

/// The two-rack lab: VXLAN between racks and not within (decided from the
/// kernel's routes, shown per node pair by `petrel lab status`), every pod
/// reaching every other and the outside host, the core router without a
/// single pod route.
#[test]
fn two_racks_tunnel_between_racks_only_and_reach_the_outside() {
    let lab = Lab::up("two-racks", "l2");
    let nodes = ["node-a1", "node-a2", "node-b1", "node-b2"];
    let ip = |i: usize| format!("10.90.{}.2", i + 1);
    let mut pairs = Vec::new();
    for (i, from) in nodes.iter().enumerate() {
        for (j, _) in nodes.iter().enumerate() {
            if i != j {
                pairs.push((lab.pod_ns(from, 1), ip(j)));
            }
        }
        pairs.push((lab.pod_ns(from, 1), "203.0.113.10".to_string()));
    }
    let mut failed = ping_all(&pairs);
    if !failed.is_empty() {
        failed = ping_all(&failed);
    }
    assert!(failed.is_empty(), "these do not reach: {failed:?}");
    let out = petrel(&["lab", "status", "--name", &lab.name]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Per node pair: the tunnel between racks, none within.
    let decision = |from: &str, to: &str| -> String {
        let mut current = "";
        for line in text.lines() {
            if line.contains("pod MTU") {
                current = line.split_whitespace().next().unwrap_or_default();
            } else if current == from && line.trim_start().starts_with(&format!("-> {to} ")) {
                return line.to_string();
            }
        }
        String::new()
    };
    for (from, to, tunnel) in [
        ("node-a1", "node-a2", "none"),
        ("node-a1", "node-b1", "VXLAN"),
        ("node-b2", "node-a2", "VXLAN"),
        ("node-b2", "node-b1", "none"),
    ] {
        let line = decision(from, to);
        assert!(
            line.contains(&format!(" {tunnel} ")),
            "{from} -> {to}: want {tunnel}: {line:?}\n{text}"
        );
    }
    assert!(text.contains("pod MTU 1450"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    // The core router forwards between the racks by the node subnets only.
    let o = Command::new("ip")
        .args(["-n", &lab.router_ns, "route"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&o.stdout);
    assert!(
        !routes.contains("10.90."),
        "a pod route on the core router: {routes}"
    );
}

/// The two racks with an API server and petrel's IPAM: each node's VXLAN
/// endpoint is an address its agent allocated from the pool set apart for
/// tunnel addresses, which no Node names, so pods across the racks reach
/// each other only because each agent published its endpoint on its Node,
/// where the others read it.
#[test]
fn two_racks_with_an_api_server_publish_their_tunnel_endpoints_on_their_nodes() {
    use ipam::pod::BlockStore;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::Api;

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let env = rt.block_on(async {
        let mut env = testkit::KubeEnv::start("kube-racks").await;
        env.install_crds().await;
        // Tunnel addresses only, tunnelled the way the pods' pool is (the
        // remote pods' replies to a node's endpoint cross the racks too).
        env.create_json(
            "ippools",
            serde_json::json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "IPPool",
                "metadata": {"name": "racks-tunnels"},
                "spec": {"cidr": "10.99.0.0/24", "blockSize": 29, "allowedUses": ["Tunnel"],
                         "encapsulation": {"type": "VXLAN", "mode": "CrossSubnet"}}}),
        )
        .await;
        env
    });
    let kubeconfig = env.kubeconfig().display().to_string();
    let base = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../labs/two-racks.yaml"),
    )
    .expect("two-racks.yaml");
    let text = base.replace(
        "  natOutgoing: true",
        "  natOutgoing: true\n  ipamMode: Petrel\n  blockSize: 26",
    );
    assert_ne!(text, base, "the topology changed shape");
    let file = std::env::temp_dir().join(format!("petrel-racks-{}.yaml", std::process::id()));
    std::fs::write(&file, text).expect("topology");
    let lab = Lab::up_with(&file.display().to_string(), "lkr", &["--kube", &kubeconfig]);
    let _ = std::fs::remove_file(&file);
    let nodes = ["node-a1", "node-a2", "node-b1", "node-b2"];
    let mut pairs = Vec::new();
    for from in nodes {
        for to in nodes.iter().filter(|n| **n != from) {
            pairs.push((lab.pod_ns(from, 1), lab.pod_ip(to, 1)));
        }
    }
    let mut failed = ping_all(&pairs);
    if !failed.is_empty() {
        failed = ping_all(&failed);
    }
    assert!(failed.is_empty(), "these pods do not reach: {failed:?}");
    // Each endpoint: the address its node holds as its tunnel address, in
    // a block of the tunnel pool.
    let api: Api<Node> = Api::all(env.client());
    let blocks = rt
        .block_on(ipam_store::KubeBlocks::new(env.client()).list())
        .expect("IPAMBlocks");
    for n in nodes {
        let node = rt.block_on(api.get(n)).expect("the lab's Node");
        let a = node.metadata.annotations.unwrap_or_default();
        let vtep = a
            .get("petrel.dev/vxlan-tunnel-addr")
            .unwrap_or_else(|| panic!("{n} published no VXLAN endpoint: {a:?}"));
        let tunnel = ipam::pod::Holder::tunnel(n);
        let held: Vec<(String, std::net::IpAddr)> = blocks
            .iter()
            .flat_map(|(b, _)| b.held_by(&tunnel.handle).map(|a| (b.pool.clone(), a)))
            .collect();
        assert_eq!(
            held,
            [("racks-tunnels".to_string(), vtep.parse().expect("address"))],
            "{n}"
        );
        assert!(
            a.get("petrel.dev/vxlan-tunnel-mac")
                .is_some_and(|m| m.starts_with("0e:")),
            "{n}: {a:?}"
        );
    }
    // The node's status object says what it tunnels to whom, and why.
    let reports: Api<kube::api::DynamicObject> = Api::all_with(
        env.client(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "petrel.dev",
            "v1alpha1",
            "BGPNodeStatus",
        )),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let overlay = rt
            .block_on(reports.get("node-a1"))
            .ok()
            .map(|r| r.data["status"]["overlay"].clone())
            .unwrap_or_default();
        let to = |node: &str| {
            overlay["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["node"] == node))
                .map(|x| x["pools"][0]["tunnel"].clone())
        };
        if to("node-b1") == Some(serde_json::json!("VXLAN"))
            && to("node-a2") == Some(serde_json::Value::Null)
            && overlay["podMTU"] == 1450
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node-a1's BGPNodeStatus overlay: {overlay:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
