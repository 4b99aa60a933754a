//! An ADD storm against agents whose blocks live in the real API server,
//! through `petrel-ipam`: one agent is killed with SIGKILL in the middle of
//! it and started again, the API server is restarted in the middle of it.
//! Every ADD is retried as a runtime would (same attachment) until it gets
//! an answer: no address is handed out twice, every attachment ends with
//! exactly one address, and after garbage collection of the pods that went
//! away nothing is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipam::pod::BlockStore;
use ipam_store::KubeBlocks;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use testkit::netns::Netns;
use testkit::{Component, KubeEnv};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent for `node` in namespace `ns` (its BGP listener meets nobody),
/// reaching the API server through `kubeconfig`.
fn agent(dir: &Path, ns: &Netns, kubeconfig: &Path, node: &str) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{node}.log")))
        .expect("log");
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(env!("CARGO_BIN_EXE_petrel"))
            .args(["agent", "--source", "kube", "--node", node, "--no-fib"])
            .args(["--metrics-address", "off", "--ipam-cooldown", "0"])
            .arg("--api-socket")
            .arg(dir.join(format!("{node}-api.sock")))
            .arg("--ipam-socket")
            .arg(dir.join(format!("{node}-ipam.sock")))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts"),
    )
}

/// One ADD through the plugin: the address, or the error object.
fn add(dir: &Path, node: &str, id: &str, pod: &str) -> Result<IpAddr, Value> {
    let conf = json!({
        "cniVersion": "1.1.0", "name": "storm",
        "ipam": {"type": "petrel-ipam", "socket": dir.join(format!("{node}-ipam.sock"))},
    });
    let (ns, name) = pod.split_once('/').expect("ns/name");
    let mut child = Command::new(env!("CARGO_BIN_EXE_petrel-ipam"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugin runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("conf");
    let out = child.wait_with_output().expect("plugin ends");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if out.status.success() {
        v["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.parse::<ipnet::IpNet>().ok())
            .map(|n| n.addr())
            .ok_or(v)
    } else {
        Err(v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_storm_survives_sigkill_and_an_api_server_restart() {
    let mut env = KubeEnv::start("kube-ipam-storm").await;
    env.install_crds().await;
    let ns = env.namespace("storm").await;
    let client = env.client();
    let nodes = [env.name("n1"), env.name("n2")];
    for n in &nodes {
        env.create_json(
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
        )
        .await;
    }
    env.create_json(
        "bgpconfigurations",
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration",
               "metadata": {"name": "default"},
               "spec": {"asNumber": 64512, "ipamMode": "Petrel"}}),
    )
    .await;
    let pool = env.name("storm");
    env.create_json(
        "ippools",
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "IPPool",
               "metadata": {"name": pool}, "spec": {"cidr": "10.254.0.0/24", "blockSize": 28}}),
    )
    .await;
    let dir = env.dir().to_path_buf();
    let kubeconfig = env.kubeconfig().to_path_buf();
    // Each agent in a namespace of its own, reaching the API server over a
    // link to the host.
    let mut spaces = Vec::new();
    for k in 0..nodes.len() {
        let ns = Netns::new("st").expect("namespace");
        let link = testkit::netns::unique_name("sl");
        let (host, inside) = (
            format!("10.233.{}.1", 100 + k),
            format!("10.233.{}.2", 100 + k),
        );
        testkit::netns::host_link(
            &link,
            ns.name(),
            &format!("{host}/24"),
            &format!("{inside}/24"),
        )
        .expect("link");
        let via = env
            .kubeconfig_via(host.parse().expect("ip"), &kubeconfig)
            .await;
        spaces.push((ns, via));
    }
    let mut agents: BTreeMap<String, Proc> = nodes
        .iter()
        .zip(&spaces)
        .map(|(n, (ns, via))| (n.clone(), agent(&dir, ns, via, n)))
        .collect();

    // 60 attachments per node, each with a Pod, five ADDs in flight per
    // node; every ADD retried (same attachment) until it is answered.
    let per_node = 60;
    let mut jobs = Vec::new();
    for n in &nodes {
        for i in 0..per_node {
            let pod = format!("p-{n}-{i}");
            env.ready_pod(&ns, &pod, json!({}), n, "10.0.0.1").await;
            jobs.push((n.clone(), format!("{n}-c{i}"), format!("{ns}/{pod}")));
        }
    }
    let answered = Arc::new(AtomicUsize::new(0));
    // ADDs that failed and were tried again: the disruptions were felt.
    let retried = Arc::new(AtomicUsize::new(0));
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let mut workers = Vec::new();
    for _ in 0..10 {
        let (jobs, answered, retried, dir) =
            (jobs.clone(), answered.clone(), retried.clone(), dir.clone());
        workers.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let Some((node, id, pod)) = jobs.lock().expect("jobs").pop() else {
                    return got;
                };
                let deadline = Instant::now() + Duration::from_secs(90);
                let addr = loop {
                    match add(&dir, &node, &id, &pod) {
                        Ok(a) => break a,
                        Err(v) => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            assert!(
                                Instant::now() < deadline,
                                "ADD {id} on {node} never succeeded: {v}"
                            );
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                };
                answered.fetch_add(1, Ordering::Relaxed);
                got.push((id, addr));
            }
        }));
    }
    let wait_answered = |n: usize| {
        let answered = answered.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while answered.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "the storm stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A third of the way: the first node's agent is killed, and started
    // again a moment later.
    wait_answered(40).await;
    drop(agents.remove(&nodes[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    agents.insert(
        nodes[0].clone(),
        agent(&dir, &spaces[0].0, &spaces[0].1, &nodes[0]),
    );
    // Two thirds: the API server restarts under both agents.
    wait_answered(80).await;
    let restarted = env.restart(Component::ApiServer).await;
    let mut got: Vec<(String, IpAddr)> = Vec::new();
    for w in workers {
        got.extend(w.join().expect("worker"));
    }
    assert_eq!(got.len(), 2 * per_node);
    assert!(
        retried.load(Ordering::Relaxed) > 0,
        "no ADD failed: the agent's kill and the API server's restart came too late"
    );
    let distinct: BTreeSet<IpAddr> = got.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), got.len(), "an address was handed out twice");

    // The API server records exactly these: one address per attachment,
    // the one it was answered with; nothing else (no leak).
    let store = KubeBlocks::new(client.clone());
    let recorded = |blocks: &[(ipam::pod::Block, String)]| -> BTreeMap<String, IpAddr> {
        blocks
            .iter()
            .filter(|(b, _)| b.pool == pool)
            .flat_map(|(b, _)| {
                b.allocations
                    .iter()
                    .map(|a| (a.holder.handle.clone(), b.address(a.ordinal)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let blocks = store.list().await.expect("list");
    let held = recorded(&blocks);
    let answered_with: BTreeMap<String, IpAddr> = got
        .iter()
        .map(|(id, a)| (format!("{id}/eth0"), *a))
        .collect();
    assert_eq!(held, answered_with);
    let total: usize = blocks
        .iter()
        .filter(|(b, _)| b.pool == pool)
        .map(|(b, _)| b.allocations.len())
        .sum();
    assert_eq!(total, held.len(), "an attachment holds two addresses");
    assert!(restarted || std::env::var_os("PETREL_TEST_KUBECONFIG").is_some());

    // A third of the pods go away without a DEL: garbage collection gives
    // back exactly their addresses.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut gone = BTreeSet::new();
    for (n, _) in nodes.iter().enumerate() {
        for i in (0..per_node).step_by(3) {
            let name = format!("p-{}-{i}", nodes[n]);
            pods.delete(&name, &DeleteParams::default().grace_period(0))
                .await
                .expect("pod deleted");
            gone.insert(format!("{}-c{i}/eth0", nodes[n]));
        }
    }
    let _collector = Proc(
        Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["controller", "--metrics-address", "off", "--ipam-gc"])
            .args(["--ipam-gc-grace", "1s", "--ipam-gc-interval", "1s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).expect("log"))
            .spawn()
            .expect("controller starts"),
    );
    let want: BTreeSet<String> = answered_with
        .keys()
        .filter(|h| !gone.contains(*h))
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: BTreeSet<String> = recorded(&store.list().await.expect("list"))
            .into_keys()
            .collect();
        if now == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after GC: {} held, {} wanted\n{}",
            now.len(),
            want.len(),
            std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(agents);
    drop(spaces);
    env.cleanup().await;
}
