//! Scale probe against the real control plane (a benchmark, not a test):
//! 500 Nodes, 2,000 LoadBalancer Services with `externalTrafficPolicy:
//! Local`, each with one Pod on a node (reported ready in the kubelet's
//! place) and so an EndpointSlice made by the endpointslice controller.
//!
//! It measures, on a control plane of its own (`testkit::KubeEnv`):
//! - the controller's time (and CPU) to give every Service its address;
//! - the agents' status writes (from the API server's audit log) while
//!   that happens and once the cluster is quiet;
//! - one agent's CPU per watch event that changes nothing it routes (an
//!   annotation on another Node, an annotation on a Service), beside its
//!   idle CPU over the same time.
//!
//! `cargo bench -p petrel --bench kube_scale` (root: the agents run in
//! network namespaces). Sizes: `PETREL_SCALE_NODES` (500),
//! `PETREL_SCALE_SERVICES` (2000), `PETREL_SCALE_AGENTS` (4),
//! `PETREL_SCALE_EVENTS` (1000); `PETREL_SCALE_BIN` runs another `petrel`
//! binary (an earlier build, to compare). The agents and the controller run as the
//! Helm chart's ServiceAccounts. Figures go to stdout; docs/performance.md
//! keeps them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;
use testkit::KubeEnv;
use testkit::netns::Netns;

/// Requests in flight while filling the cluster.
const CONCURRENCY: usize = 32;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// CPU time used so far (user + system), from /proc.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is
        // field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        let ticks: u64 = fields.iter().sum();
        Duration::from_secs_f64(ticks as f64 / clock_ticks())
    }

    /// Peak resident memory (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn petrel(kubeconfig: &Path, log: &Path, netns: Option<&str>, args: &[&str]) -> Proc {
    // Another build (an earlier commit's, say) to compare in the same way.
    let bin = std::env::var("PETREL_SCALE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_petrel").to_string());
    let bin = bin.as_str();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("petrel starts");
    Proc(child)
}

/// Waits, polling every 250 ms for at most `limit`, until `check` says
/// done; panics with its last word otherwise.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what}: not after {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The agents' writes in the audit log from line `from` on.
fn agent_writes(env: &KubeEnv, user: &str, from: usize) -> usize {
    env.audit()
        .unwrap_or_default()
        .iter()
        .skip(from)
        .filter(|e| e.user == user && matches!(e.verb.as_str(), "create" | "update" | "patch"))
        .count()
}

fn audit_len(env: &KubeEnv) -> usize {
    env.audit().map_or(0, |a| a.len())
}

fn main() {
    assert!(
        testkit::is_root(),
        "the scale probe runs agents in network namespaces: run it as root"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Ctrl-C drops the probe: its control plane, agents and namespaces
    // are stopped and removed on the way out.
    rt.block_on(async {
        tokio::select! {
            () = probe() => {}
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted: cleaning up"),
        }
    });
}

async fn probe() {
    let n_nodes = size("PETREL_SCALE_NODES", 500);
    let n_services = size("PETREL_SCALE_SERVICES", 2000);
    let n_agents = size("PETREL_SCALE_AGENTS", 4).min(n_nodes);
    let n_events = size("PETREL_SCALE_EVENTS", 1000);
    assert!(n_services <= 4000, "the pool is a /20");
    println!(
        "scale probe: {n_nodes} Nodes, {n_services} Services, {n_agents} agents, {n_events} events"
    );

    let mut env = KubeEnv::start("kube-scale").await;
    env.install_crds().await;
    let client = env.client();
    let release = env.namespace("petrel-system").await;
    let chart = env
        .install_chart(
            "petrel",
            &release,
            json!({}),
            &[
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        )
        .await;
    let agent_user = chart.user("agent");
    let agent_kc = env
        .token(&release, &chart.name("ServiceAccount", "agent"), None)
        .await;
    let controller_kc = env
        .token(&release, &chart.name("ServiceAccount", "controller"), None)
        .await;

    // ---- the cluster ----
    let node_ip = |i: usize| {
        if i < n_agents {
            format!("10.42.{i}.1")
        } else {
            format!("10.50.{}.{}", i / 250, i % 250 + 1)
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let t = Instant::now();
    stream::iter(0..n_nodes)
        .map(|i| {
            let nodes = nodes.clone();
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/os": "linux"}},
                "status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)}]}
            }))
            .expect("Node");
            async move { nodes.create(&PostParams::default(), &node).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("Nodes created");
    println!(
        "created {n_nodes} Nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let petrel_api = |kind: &str, plural: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("petrel.dev", "v1alpha1", kind),
            plural,
        );
        Api::<DynamicObject>::all_with(client.clone(), &ar)
    };
    let create = |api: Api<DynamicObject>, value: serde_json::Value| async move {
        let obj: DynamicObject = serde_json::from_value(value).expect("object");
        api.create(&PostParams::default(), &obj)
            .await
            .expect("object created");
    };
    create(
        petrel_api("BGPConfiguration", "bgpconfigurations"),
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration",
               "metadata": {"name": "default"},
               "spec": {"asNumber": 65001, "nodeToNodeMeshEnabled": false,
                        "serviceLoadBalancerIPs": [{"cidr": "198.18.0.0/20"}]}}),
    )
    .await;
    create(
        petrel_api("LoadBalancerPool", "loadbalancerpools"),
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "LoadBalancerPool",
               "metadata": {"name": "scale"}, "spec": {"cidrs": ["198.18.0.0/20"]}}),
    )
    .await;
    // A ToR every node peers with, that never answers.
    create(
        petrel_api("BGPPeer", "bgppeers"),
        json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": "tor"}, "spec": {"peerIP": "10.42.255.1", "asNumber": 65009}}),
    )
    .await;

    let ns = env.namespace("scale").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    stream::iter(0..n_services)
        .map(|i| {
            let (services, pods) = (services.clone(), pods.clone());
            let name = format!("svc-{i}");
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name},
                // No node ports: 2,000 Local Services would take a node
                // port and a health-check port each, 4,000 of the default
                // range's 2,768 (a BGP load balancer needs neither; the
                // health-check port stays).
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                         "allocateLoadBalancerNodePorts": false,
                         "selector": {"app": name}, "ports": [{"port": 80}]}
            }))
            .expect("Service");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {"nodeName": format!("node-{}", i % n_nodes),
                         "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
            }))
            .expect("Pod");
            async move {
                services.create(&PostParams::default(), &svc).await?;
                pods.create(&PostParams::default(), &pod).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("Services and Pods created");
    let env_ref = &env;
    let ns_ref = &ns;
    stream::iter(0..n_services)
        .map(|i| async move {
            let ip = format!("10.244.{}.{}", i / 250, i % 250 + 2);
            env_ref
                .set_pod_ready(ns_ref, &format!("svc-{i}"), &ip, true)
                .await
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    println!(
        "created {n_services} Services and ready Pods in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    until(Duration::from_secs(600), "EndpointSlices", || async {
        let ready = slices
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .filter(|s| {
                s.endpoints
                    .iter()
                    .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            })
            .count();
        if ready >= n_services {
            Ok(())
        } else {
            Err(format!("{ready} of {n_services} ready"))
        }
    })
    .await;
    println!(
        "the endpointslice controller made {n_services} ready EndpointSlices {:.1} s later",
        t.elapsed().as_secs_f64()
    );

    // ---- the agents, each in a namespace of its own ----
    let dir = env.dir().to_path_buf();
    let mut namespaces = Vec::new();
    let mut agents = Vec::new();
    let tag = format!("sc{}", std::process::id() % 10_000);
    for i in 0..n_agents {
        let netns = Netns::new(&format!("{tag}{i}-")).expect("namespace");
        testkit::netns::host_link(
            &format!("{tag}l{i}"),
            netns.name(),
            &format!("10.42.{i}.254/24"),
            &format!("10.42.{i}.1/24"),
        )
        .expect("host link");
        let kc = env
            .kubeconfig_via(format!("10.42.{i}.254").parse().expect("ip"), &agent_kc)
            .await;
        let node = format!("node-{i}");
        let socket = dir.join(format!("{node}.sock")).display().to_string();
        agents.push(petrel(
            &kc,
            &dir.join(format!("agent-{node}.log")),
            Some(netns.name()),
            &[
                "agent",
                "--source",
                "kube",
                "--node",
                &node,
                "--no-fib",
                "--metrics-address",
                "off",
                "--api-socket",
                &socket,
            ],
        ));
        namespaces.push(netns);
    }
    let reports = petrel_api("BGPNodeStatus", "bgpnodestatuses");
    let t = Instant::now();
    until(
        Duration::from_secs(300),
        "the agents' first reports",
        || async {
            let have = reports
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if have >= n_agents {
                Ok(())
            } else {
                Err(format!("{have} of {n_agents}"))
            }
        },
    )
    .await;
    println!(
        "every agent reported its node {:.1} s after starting",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // ---- the controller gives out the addresses ----
    let agents_before: Vec<Duration> = agents.iter().map(Proc::cpu).collect();
    let from = audit_len(&env);
    let controller = petrel(
        &controller_kc,
        &dir.join("controller.log"),
        None,
        &["controller", "--metrics-address", "off"],
    );
    let t = Instant::now();
    until(
        Duration::from_secs(900),
        "every Service's address",
        || async {
            let assigned = services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .is_some_and(|i| !i.is_empty())
                })
                .count();
            if assigned >= n_services {
                Ok(())
            } else {
                Err(format!("{assigned} of {n_services}"))
            }
        },
    )
    .await;
    let assign = t.elapsed();
    println!(
        "controller: every address given in {:.2} s ({:.0} Services/s), {:.2} s CPU, peak RSS {:.0} MiB",
        assign.as_secs_f64(),
        n_services as f64 / assign.as_secs_f64(),
        controller.cpu().as_secs_f64(),
        controller.peak_rss_mib()
    );
    // The agents follow: wait until their writes stop (5 s without one).
    let mut last = agent_writes(&env, &agent_user, from);
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    while quiet_since.elapsed() < Duration::from_secs(5) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = agent_writes(&env, &agent_user, from);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let busy = t.elapsed().saturating_sub(quiet_since.elapsed());
    println!(
        "agents: {last} status writes from {n_agents} agents in the {:.1} s until they settled ({:.2} writes/s per agent)",
        busy.as_secs_f64(),
        last as f64 / busy.as_secs_f64().max(0.001) / n_agents as f64
    );
    let from = audit_len(&env);
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "agents: {} status writes in 10 s of a quiet cluster",
        agent_writes(&env, &agent_user, from)
    );
    for (i, a) in agents.iter().enumerate() {
        let used = a.cpu().saturating_sub(agents_before[i]).as_secs_f64();
        println!(
            "agent node-{i}: {used:.2} s CPU while {n_services} Services got their addresses ({:.2} ms per Service), {:.2} s in all, peak RSS {:.0} MiB",
            used * 1000.0 / n_services as f64,
            a.cpu().as_secs_f64(),
            a.peak_rss_mib()
        );
    }

    // ---- one agent's CPU per unrelated event ----
    let agent = &agents[0];
    let others: Vec<String> = (n_agents..n_nodes).map(|i| format!("node-{i}")).collect();
    for (what, kind) in [("Node annotation", 0), ("Service annotation", 1)] {
        // Idle first: what the agent uses with nothing happening.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_start = agent.cpu();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle =
            (agent.cpu().saturating_sub(idle_start)).as_secs_f64() / t.elapsed().as_secs_f64();
        let writes_from = audit_len(&env);
        let start = agent.cpu();
        let t = Instant::now();
        let nodes = &nodes;
        let services = &services;
        let others = &others;
        stream::iter(0..n_events)
            .map(|i| async move {
                let patch = Patch::Merge(
                    json!({"metadata": {"annotations": {"scale.petrel.dev/touch": i.to_string()}}}),
                );
                if kind == 0 {
                    let name = &others[i % others.len().max(1)];
                    nodes
                        .patch(name, &PatchParams::default(), &patch)
                        .await
                        .map(|_| ())
                } else {
                    let name = format!("svc-{}", i % n_services);
                    services
                        .patch(&name, &PatchParams::default(), &patch)
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(4)
            .try_collect::<Vec<_>>()
            .await
            .expect("annotations patched");
        // Let the agent take in the last of them: until a second passes
        // in which it uses no more than idle (at most 30 s).
        let settle = Instant::now() + Duration::from_secs(30);
        loop {
            let before = agent.cpu();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let step = agent.cpu().saturating_sub(before).as_secs_f64();
            if step <= idle + 0.011 || Instant::now() > settle {
                break;
            }
        }
        let window = t.elapsed().as_secs_f64();
        let used = agent.cpu().saturating_sub(start).as_secs_f64();
        let per_event = (used - idle * window).max(0.0) / n_events as f64;
        println!(
            "agent node-0, {n_events} × {what}: {used:.2} s CPU in {window:.1} s (idle {:.3} s/s) = {:.2} ms per event; {} status writes by the agents",
            idle,
            per_event * 1000.0,
            agent_writes(&env, &agent_user, writes_from)
        );
    }
    drop(controller);
    drop(agents);
    drop(namespaces);
    env.cleanup().await;
}
