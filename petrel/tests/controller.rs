//! `petrel controller` as a process against a real API server (the test's
//! own control plane, or the cluster `PETREL_TEST_KUBECONFIG` names): Services
//! of type LoadBalancer get addresses from LoadBalancerPools, pools show
//! their use, and with `--leader-elect` exactly one replica acts, a standby
//! takes over when the leader dies or leaves, and no address is ever given
//! to two Services, also across restarts of the API server and of etcd.
//!
//! The controllers run as the Helm chart's controller ServiceAccount, with
//! the chart's RBAC (rendered by Helm, created on the API server): a verb
//! the chart lacks fails these tests.
//!
//! Every run uses a `loadBalancerClass` and a pool label of its own, so the
//! controllers under test never touch a real cluster's own Services or
//! pools, nor each other's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::KubeEnv;

/// The petrel binary this test run was built with. It is held open and
/// run through `/proc/PID/fd/N`: worktrees that share a target directory
/// may replace `target/debug/petrel` while the tests run, and an open file
/// keeps the version built for them.
fn petrel() -> Command {
    use std::os::fd::AsRawFd;
    static BIN: OnceLock<Option<(std::fs::File, String)>> = OnceLock::new();
    let path = env!("CARGO_BIN_EXE_petrel");
    let held = BIN.get_or_init(|| {
        let f = std::fs::File::open(path).ok()?;
        let proc_path = format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd());
        Some((f, proc_path))
    });
    match held {
        Some((_, p)) if std::path::Path::new(p).exists() => Command::new(p),
        _ => Command::new(path),
    }
}

/// A `petrel controller` process, killed when dropped (also on panic).
struct Controller {
    child: Child,
    log: PathBuf,
    identity: String,
    metrics: Option<u16>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many ingress writes this process has logged.
    fn writes(&self) -> usize {
        self.log().matches("wrote LoadBalancer ingress").count()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    /// Waits for the process to exit, at most `limit`; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "controller {} did not exit within {limit:?}\n{}",
                self.identity,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the metrics port: status line and body.
    async fn http(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self.metrics.expect("started with a metrics port");
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("metrics port answers");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request sent");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("response read");
        out
    }
}

/// One test's world: the API, a namespace, and this run's class and pool
/// label.
struct World {
    env: KubeEnv,
    ns: String,
    /// The controllers' kubeconfig: a token of the chart's controller
    /// ServiceAccount, with the chart's RBAC (release namespace `ns`).
    kubeconfig: PathBuf,
    class: String,
    /// `key=value` every pool of this run carries.
    pool_label: (String, String),
}

impl World {
    async fn new(test: &str) -> World {
        let mut env = KubeEnv::start(test).await;
        env.install_crds().await;
        let ns = env.namespace("lb").await;
        // The controller runs as it would in a cluster: as the chart's
        // ServiceAccount, with the chart's roles (rendered by Helm).
        let chart = env
            .install_chart(
                "petrel",
                &ns,
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
        let account = chart.name("ServiceAccount", "controller");
        let kubeconfig = env.token(&ns, &account, None).await;
        let class = format!("test.petrel.dev/{}", env.name("lb"));
        let pool_label = ("petrel.dev/test-run".to_string(), env.name("pools"));
        World {
            env,
            ns,
            kubeconfig,
            class,
            pool_label,
        }
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.env.client(), &self.ns)
    }

    /// Starts a controller of this run's class and pools, with `extra`
    /// flags; `metrics`: serve them on a free port.
    fn controller(&self, name: &str, metrics: bool, extra: &[&str]) -> Controller {
        let identity = self.env.name(name);
        let log = self.env.dir().join(format!("{identity}.log"));
        let port = metrics.then(free_port);
        let metrics_address = port.map_or("off".to_string(), |p| format!("127.0.0.1:{p}"));
        let child = petrel()
            .arg("controller")
            .args(["--load-balancer-class", &self.class])
            .args([
                "--pool-selector",
                &format!("{}={}", self.pool_label.0, self.pool_label.1),
            ])
            .args(["--identity", &identity])
            .args(["--metrics-address", &metrics_address])
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("controller starts");
        Controller {
            child,
            log,
            identity,
            metrics: port,
        }
    }

    /// Creates a LoadBalancerPool of this run (deleted at the end).
    async fn pool(&mut self, base: &str, cidrs: &[&str]) -> String {
        let name = self.env.name(base);
        self.env
            .create_json(
                "loadbalancerpools",
                json!({
                    "apiVersion": "petrel.dev/v1alpha1", "kind": "LoadBalancerPool",
                    "metadata": {"name": name, "labels": {&self.pool_label.0: &self.pool_label.1}},
                    "spec": {"cidrs": cidrs}
                }),
            )
            .await;
        name
    }

    fn service_object(&self, name: &str, class: Option<&str>) -> Service {
        let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]});
        if let Some(c) = class {
            spec["loadBalancerClass"] = c.into();
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec
        }))
        .expect("Service")
    }

    /// Creates a LoadBalancer Service of this run's class.
    async fn service(&self, name: &str) {
        self.services()
            .create(
                &PostParams::default(),
                &self.service_object(name, Some(&self.class)),
            )
            .await
            .unwrap_or_else(|e| panic!("Service {name} cannot be created: {e}"));
    }

    /// Every Service of the namespace and its ingress addresses.
    async fn ingress(&self) -> BTreeMap<String, Vec<String>> {
        let list = self
            .services()
            .list(&ListParams::default())
            .await
            .expect("Services listed");
        list.items
            .into_iter()
            .map(|s| {
                let ips = s
                    .status
                    .and_then(|st| st.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.ip)
                    .collect();
                (s.metadata.name.unwrap_or_default(), ips)
            })
            .collect()
    }

    async fn pool_status(&self, name: &str) -> Value {
        let api: Api<crds::LoadBalancerPool> = Api::all(self.env.client());
        let pool = api.get(name).await.expect("pool read");
        serde_json::to_value(pool.status).expect("status")
    }

    /// The events.k8s.io Events about `service`: (reason, note, reporting instance).
    async fn events(&self, service: &str) -> Vec<(String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.env.client(), &self.ns);
        let list = api
            .list(&ListParams::default())
            .await
            .expect("Events listed");
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .is_some_and(|n| n == service)
            })
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.reporting_instance.unwrap_or_default(),
                )
            })
            .collect()
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.env.client(), &self.ns)
    }

    /// The Lease's holder (empty: none) and transitions.
    async fn lease(&self, name: &str) -> Option<(String, i32)> {
        let lease = self.leases().get_opt(name).await.expect("Lease read")?;
        let spec = lease.spec.unwrap_or_default();
        Some((
            spec.holder_identity.unwrap_or_default(),
            spec.lease_transitions.unwrap_or(0),
        ))
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 100 ms until it returns `Some`, at most `limit`;
/// panics with `what` and the last state otherwise.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each of `names` has exactly one address; returns them.
async fn assigned(w: &World, names: &[String], limit: Duration) -> BTreeMap<String, String> {
    wait_for(limit, "every Service to get an address", || async {
        let all = w.ingress().await;
        let mut out = BTreeMap::new();
        for n in names {
            match all.get(n).map(Vec::as_slice) {
                Some([ip]) => {
                    out.insert(n.clone(), ip.clone());
                }
                other => return Err(format!("{n}: {other:?}")),
            }
        }
        Ok(out)
    })
    .await
}

fn assert_distinct(ips: &BTreeMap<String, String>) {
    let distinct: BTreeSet<&String> = ips.values().collect();
    assert_eq!(
        distinct.len(),
        ips.len(),
        "an address was given twice: {ips:?}"
    );
}

const ASSIGN_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_service_gets_a_pool_address_and_the_pool_counts_it() {
    let mut w = World::new("ctl-basic").await;
    let pool = w
        .pool("basic", &["198.51.100.0/29", "2001:db8:5::/126"])
        .await;
    let ctl = w.controller("ctl", false, &[]);
    w.service("web").await;
    // Another controller's Service, and one without a class: not ours.
    w.services()
        .create(
            &PostParams::default(),
            &w.service_object("other", Some("example.com/other")),
        )
        .await
        .expect("created");
    w.services()
        .create(&PostParams::default(), &w.service_object("plain", None))
        .await
        .expect("created");

    let ips = assigned(&w, &["web".to_string()], ASSIGN_LIMIT).await;
    let ip: std::net::Ipv4Addr = ips["web"].parse().expect("IPv4");
    assert_eq!(ip.octets()[..3], [198, 51, 100], "{ip}");
    assert!(ip.octets()[3] < 8, "{ip} is outside 198.51.100.0/29");

    let status = wait_for(ASSIGN_LIMIT, "the pool's counts", || async {
        let s = w.pool_status(&pool).await;
        if s["usedIPv4"] == "1" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(status["freeIPv4"], "7", "{status}");
    assert_eq!(status["usedIPv6"], "0", "{status}");
    assert_eq!(status["freeIPv6"], "4", "{status}");
    let ready = &status["conditions"][0];
    assert_eq!(
        (ready["type"].as_str(), ready["status"].as_str()),
        (Some("Ready"), Some("True")),
        "{status}"
    );

    let events = wait_for(ASSIGN_LIMIT, "the IPAllocated Event", || async {
        let ev = w.events("web").await;
        if ev.iter().any(|(r, _, _)| r == "IPAllocated") {
            Ok(ev)
        } else {
            Err(format!("{ev:?}"))
        }
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(_, note, who)| note.contains(&ips["web"]) && *who == ctl.identity),
        "{events:?}"
    );

    // A pool overlapping an older one is refused, by name, in its status.
    let refused = w.pool("overlap", &["198.51.100.4-198.51.100.5"]).await;
    let status = wait_for(ASSIGN_LIMIT, "the refused pool's Ready=False", || async {
        let s = w.pool_status(&refused).await;
        if s["conditions"][0]["status"] == "False" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let message = status["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("overlaps") && message.contains(&pool),
        "{status}"
    );
    assert!(
        status.get("usedIPv4").is_none_or(Value::is_null),
        "{status}"
    );

    let all = w.ingress().await;
    assert_eq!(
        all["other"],
        Vec::<String>::new(),
        "another class is not ours"
    );
    assert_eq!(all["plain"], Vec::<String>::new(), "nor is no class");
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_services_created_at_once_get_fifty_distinct_addresses() {
    let mut w = World::new("ctl-fifty").await;
    let pool = w.pool("fifty", &["198.51.100.0/26"]).await;
    let _ctl = w.controller("ctl", false, &[]);
    let names: Vec<String> = (0..50).map(|i| format!("svc-{i}")).collect();
    join_all(names.iter().map(|n| w.service(n))).await;
    let ips = assigned(&w, &names, Duration::from_secs(30)).await;
    assert_distinct(&ips);
    wait_for(ASSIGN_LIMIT, "the pool to count 50", || async {
        let s = w.pool_status(&pool).await;
        if s["usedIPv4"] == "50" && s["freeIPv4"] == "14" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pool_runs_out_with_an_event_for_each_service_left_without() {
    let mut w = World::new("ctl-exhaust").await;
    w.pool("small", &["198.51.100.8/30"]).await;
    let _ctl = w.controller("ctl", false, &[]);
    let names: Vec<String> = (0..10).map(|i| format!("svc-{i}")).collect();
    join_all(names.iter().map(|n| w.service(n))).await;
    let (with, without) = wait_for(ASSIGN_LIMIT, "four addressed, six warned", || async {
        let all = w.ingress().await;
        let with: BTreeMap<String, String> = all
            .iter()
            .filter_map(|(n, ips)| ips.first().map(|ip| (n.clone(), ip.clone())))
            .collect();
        let without: Vec<String> = names
            .iter()
            .filter(|n| !with.contains_key(*n))
            .cloned()
            .collect();
        let mut warned = 0;
        for n in &without {
            if w.events(n)
                .await
                .iter()
                .any(|(r, _, _)| r == "PoolExhausted")
            {
                warned += 1;
            }
        }
        if with.len() == 4 && warned == 6 {
            Ok((with, without))
        } else {
            Err(format!(
                "{} addressed, {warned} warned: {all:?}",
                with.len()
            ))
        }
    })
    .await;
    assert_distinct(&with);
    let all = w.ingress().await;
    for n in &without {
        assert!(all[n].is_empty(), "{n}: {:?}", all[n]);
        let ev = w.events(n).await;
        assert!(
            ev.iter()
                .any(|(r, note, _)| r == "PoolExhausted" && note.contains(n.as_str())),
            "{n}: {ev:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_and_a_deletion_release_addresses_for_later_services() {
    let mut w = World::new("ctl-release").await;
    w.pool("two", &["198.51.100.16/31"]).await;
    let _ctl = w.controller("ctl", false, &[]);
    w.service("a").await;
    w.service("b").await;
    let first = assigned(&w, &["a".into(), "b".into()], ASSIGN_LIMIT).await;
    assert_distinct(&first);
    w.service("c").await;
    wait_for(ASSIGN_LIMIT, "c to be told the pool is full", || async {
        let ev = w.events("c").await;
        if ev.iter().any(|(r, _, _)| r == "PoolExhausted") {
            Ok(())
        } else {
            Err(format!("{ev:?}"))
        }
    })
    .await;
    assert!(w.ingress().await["c"].is_empty());

    // a becomes a ClusterIP Service (a LoadBalancer class goes with the type).
    w.services()
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP", "loadBalancerClass": null}})),
        )
        .await
        .expect("a patched");
    let c = assigned(&w, &["c".into()], ASSIGN_LIMIT).await;
    assert_eq!(c["c"], first["a"], "c gets the address a gave up");
    wait_for(ASSIGN_LIMIT, "a's ingress to be cleared", || async {
        let all = w.ingress().await;
        if all["a"].is_empty() {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;

    // b is deleted: its address goes to the next Service.
    w.services()
        .delete("b", &DeleteParams::default())
        .await
        .expect("b deleted");
    w.service("d").await;
    let d = assigned(&w, &["d".into()], ASSIGN_LIMIT).await;
    assert_eq!(d["d"], first["b"], "d gets the address of the deleted b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_every_address() {
    let mut w = World::new("ctl-restart").await;
    w.pool("restart", &["198.51.100.32/27"]).await;
    let mut ctl = w.controller("ctl", false, &[]);
    let names: Vec<String> = (0..5).map(|i| format!("svc-{i}")).collect();
    // One at a time, so that each is older than the next: without
    // restoring, a controller giving addresses by age would give svc-1
    // the lowest free address, svc-0's.
    for n in &names {
        w.service(n).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let before = assigned(&w, &names, ASSIGN_LIMIT).await;
    assert_distinct(&before);

    ctl.signal("-KILL");
    ctl.wait_exit(Duration::from_secs(5));
    // While no controller runs: the oldest Service goes, a new one comes.
    w.services()
        .delete("svc-0", &DeleteParams::default())
        .await
        .expect("deleted");
    w.service("late").await;

    let _ctl = w.controller("ctl2", false, &[]);
    let mut kept: Vec<String> = names[1..].to_vec();
    kept.push("late".into());
    let after = assigned(&w, &kept, ASSIGN_LIMIT).await;
    for n in &names[1..] {
        assert_eq!(
            after[n], before[n],
            "{n} kept its address across the restart"
        );
    }
    assert_eq!(
        after["late"], before["svc-0"],
        "the new Service gets the freed address, no other"
    );
    assert_distinct(&after);
}

/// Short timings, so failovers take seconds.
const FAST_LEASE: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];

fn elected<'a>(lease: &'a str, ns: &'a str) -> Vec<&'a str> {
    let mut v = vec![
        "--leader-elect",
        "--lease-name",
        lease,
        "--lease-namespace",
        ns,
    ];
    v.extend(FAST_LEASE);
    v
}

/// Waits until the Lease has a holder among `candidates`; returns it.
async fn holder(w: &World, lease: &str, candidates: &[&Controller], limit: Duration) -> String {
    wait_for(limit, "a leader", || async {
        match w.lease(lease).await {
            Some((h, _)) if candidates.iter().any(|c| c.identity == h) => Ok(h),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_without_giving_an_address_twice() {
    let mut w = World::new("ctl-failover").await;
    let pool = w.pool("failover", &["198.51.100.64/26"]).await;
    let lease = w.env.name("lease");
    let args = elected(&lease, &w.ns);
    let a = w.controller("a", true, &args);
    let b = w.controller("b", true, &args);
    let leader_id = holder(&w, &lease, &[&a, &b], Duration::from_secs(15)).await;
    let (leader, standby) = if leader_id == a.identity {
        (a, b)
    } else {
        (b, a)
    };

    let first: Vec<String> = (0..10).map(|i| format!("first-{i}")).collect();
    join_all(first.iter().map(|n| w.service(n))).await;
    let before = assigned(&w, &first, ASSIGN_LIMIT).await;
    assert_distinct(&before);
    assert!(leader.writes() > 0, "the leader writes\n{}", leader.log());
    assert_eq!(
        standby.writes(),
        0,
        "the standby writes nothing\n{}",
        standby.log()
    );
    for n in &first {
        for (reason, _, who) in w.events(n).await {
            assert_eq!(who, leader.identity, "{n}: {reason} reported by {who}");
        }
    }
    // Both ready (a standby is ready to take over); only one leads.
    let leader_metrics = leader.http("/metrics").await;
    let standby_metrics = standby.http("/metrics").await;
    assert!(
        leader_metrics.contains("petrel_controller_leader 1"),
        "{leader_metrics}"
    );
    assert!(
        standby_metrics.contains("petrel_controller_leader 0"),
        "{standby_metrics}"
    );
    assert!(
        standby.http("/readyz").await.starts_with("HTTP/1.1 200"),
        "standby ready"
    );
    // The Service with the lowest address goes: a new leader that did not
    // take back what the Services hold would hand the next ones out from
    // the bottom, moving every address.
    let lowest = before
        .iter()
        .min_by_key(|(_, ip)| ip.parse::<std::net::IpAddr>().expect("an address"))
        .map(|(n, _)| n.clone())
        .expect("ten Services");
    w.services()
        .delete(&lowest, &DeleteParams::default())
        .await
        .expect("deleted");
    let first: Vec<String> = first.into_iter().filter(|n| *n != lowest).collect();
    wait_for(ASSIGN_LIMIT, "the leader to see the deletion", || async {
        let free = w.pool_status(&pool).await;
        if free["usedIPv4"] == "9" {
            Ok(())
        } else {
            Err(free.to_string())
        }
    })
    .await;
    let (_, transitions) = w.lease(&lease).await.expect("Lease");

    // The leader dies without a word; Services keep coming meanwhile.
    let mut leader = leader;
    leader.signal("-KILL");
    let killed = Instant::now();
    leader.wait_exit(Duration::from_secs(5));
    let second: Vec<String> = (0..10).map(|i| format!("second-{i}")).collect();
    join_all(second.iter().map(|n| w.service(n))).await;
    let new_holder = holder(&w, &lease, &[&standby], Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert_eq!(new_holder, standby.identity);
    // Lease duration (3 s), plus up to two jittered tries (1.1 s each)
    // before and after it expires, plus slack for a loaded machine.
    assert!(
        took < Duration::from_secs(7),
        "takeover took {took:?}, more than the lease duration allows"
    );
    let (_, after_transitions) = w.lease(&lease).await.expect("Lease");
    assert_eq!(after_transitions, transitions + 1, "one more transition");

    let mut all_names = first.clone();
    all_names.extend(second.iter().cloned());
    let after = assigned(&w, &all_names, ASSIGN_LIMIT).await;
    for n in &first {
        assert_eq!(
            after[n], before[n],
            "{n} kept its address across the failover"
        );
    }
    assert_distinct(&after);
    assert!(standby.writes() > 0, "the new leader writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let mut w = World::new("ctl-sigterm").await;
    w.pool("sigterm", &["198.51.100.128/28"]).await;
    let lease = w.env.name("lease");
    // A long lease: a takeover well before it expires can only come from
    // the release.
    let args = [
        "--leader-elect",
        "--lease-name",
        &lease,
        "--lease-namespace",
        &w.ns,
        "--lease-duration",
        "20s",
        "--renew-deadline",
        "15s",
        "--retry-period",
        "500ms",
    ];
    let a = w.controller("a", false, &args);
    let b = w.controller("b", false, &args);
    let leader_id = holder(&w, &lease, &[&a, &b], Duration::from_secs(30)).await;
    let (mut leader, standby) = if leader_id == a.identity {
        (a, b)
    } else {
        (b, a)
    };
    w.service("web").await;
    let before = assigned(&w, &["web".into()], ASSIGN_LIMIT).await;

    leader.signal("-TERM");
    let stopped = Instant::now();
    let code = leader.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "a clean exit\n{}", leader.log());
    assert!(
        leader.log().contains("released the Lease"),
        "{}",
        leader.log()
    );
    holder(&w, &lease, &[&standby], Duration::from_secs(5)).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took over in {:?}: the release did not speed it up",
        stopped.elapsed()
    );
    w.service("api").await;
    let after = assigned(&w, &["web".into(), "api".into()], ASSIGN_LIMIT).await;
    assert_eq!(after["web"], before["web"]);
    assert_distinct(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_stops_writing_once_its_term_is_over() {
    let mut w = World::new("ctl-frozen").await;
    w.pool("frozen", &["198.51.100.192/27"]).await;
    let lease = w.env.name("lease");
    let args = elected(&lease, &w.ns);
    let a = w.controller("a", false, &args);
    let b = w.controller("b", false, &args);
    let leader_id = holder(&w, &lease, &[&a, &b], Duration::from_secs(15)).await;
    let (leader, standby) = if leader_id == a.identity {
        (a, b)
    } else {
        (b, a)
    };
    w.service("one").await;
    assigned(&w, &["one".into()], ASSIGN_LIMIT).await;

    // Frozen (a long GC pause, a stalled VM): it cannot renew. The standby
    // takes over; when the old leader wakes, its term is long over.
    leader.signal("-STOP");
    holder(&w, &lease, &[&standby], Duration::from_secs(10)).await;
    w.service("two").await;
    assigned(&w, &["one".into(), "two".into()], ASSIGN_LIMIT).await;
    let writes_before = leader.writes();
    leader.signal("-CONT");
    // While it wakes up, a change every controller sees.
    w.service("three").await;
    let all = assigned(
        &w,
        &["one".into(), "two".into(), "three".into()],
        ASSIGN_LIMIT,
    )
    .await;
    assert_distinct(&all);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        leader.writes(),
        writes_before,
        "the old leader wrote after its term ended\n{}",
        leader.log()
    );
    let log = leader.log();
    assert!(
        log.contains("no longer leading") || log.contains("stopped leading"),
        "{log}"
    );
    let (h, _) = w.lease(&lease).await.expect("Lease");
    assert_eq!(h, standby.identity, "the standby keeps the Lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_acting_and_resumes_once_it_can() {
    use k8s_openapi::api::core::v1::Namespace;
    let mut w = World::new("ctl-renew").await;
    w.pool("renew", &["198.51.100.224/28"]).await;
    // The Lease lives in a namespace of its own, which goes away: the
    // leader can no longer renew, while Services stay writable. (A
    // namespace being deleted keeps its objects a while, and they stay
    // writable: the leader renews until the namespace controller deletes
    // the Lease, and from then on cannot create it in a terminating, then
    // missing, namespace.)
    let lease_ns = w.env.namespace("lease").await;
    let lease = w.env.name("lease");
    let args = elected(&lease, &lease_ns);
    // The chart lets the controller hold Leases in the release namespace
    // only, which must not go away under it: this one runs as the admin.
    w.kubeconfig = w.env.kubeconfig().to_path_buf();
    let ctl = w.controller("ctl", false, &args);
    w.service("early").await;
    assigned(&w, &["early".into()], ASSIGN_LIMIT).await;

    let namespaces: Api<Namespace> = Api::all(w.env.client());
    namespaces
        .delete(&lease_ns, &DeleteParams::default())
        .await
        .expect("Lease namespace deleted");
    // Once the Lease is gone it cannot renew: past the renew deadline (2 s)
    // it stops acting, and says so.
    wait_for(
        Duration::from_secs(60),
        "the leader to give up for want of its Lease",
        || async {
            let log = ctl.log();
            if log.contains("could not renew the Lease within the renew deadline") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    let writes = ctl.writes();
    w.service("late").await;
    // Nothing may happen: give it the time it would take (an address is
    // given out in well under a second while leading).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.ingress().await["late"].is_empty(),
        "a leader that cannot renew gave out an address\n{}",
        ctl.log()
    );
    assert_eq!(ctl.writes(), writes, "{}", ctl.log());

    // The namespace comes back (on a real cluster, once it is gone): the
    // controller leads again and catches up.
    wait_for(
        Duration::from_secs(60),
        "the namespace to be gone",
        || async {
            match namespaces.get_opt(&lease_ns).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(w.env.namespace("lease").await, lease_ns);
    let all = assigned(&w, &["early".into(), "late".into()], ASSIGN_LIMIT).await;
    assert_distinct(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_and_addresses_survive_api_server_and_etcd_restarts() {
    use testkit::Component;
    let mut w = World::new("ctl-plane-restart").await;
    w.pool("plane", &["198.51.100.128/27"]).await;
    let lease = w.env.name("lease");
    let args = elected(&lease, &w.ns);
    let a = w.controller("a", false, &args);
    let b = w.controller("b", false, &args);
    holder(&w, &lease, &[&a, &b], Duration::from_secs(15)).await;
    let mut names: Vec<String> = (0..5).map(|i| format!("svc-{i}")).collect();
    join_all(names.iter().map(|n| w.service(n))).await;
    let before = assigned(&w, &names, ASSIGN_LIMIT).await;
    assert_distinct(&before);

    // Each restart takes the API away for seconds, past the renew deadline
    // (2 s): leadership may move or lapse and come back. Afterwards there
    // is a leader again, it gives new Services free addresses, and no
    // Service loses its own. (An external cluster is not restarted.)
    for (component, late) in [
        (Component::ApiServer, "after-api-server"),
        (Component::Etcd, "after-etcd"),
    ] {
        w.env.restart(component).await;
        w.service(late).await;
        names.push(late.to_string());
        let after = assigned(&w, &names, Duration::from_secs(60)).await;
        for (n, ip) in &before {
            assert_eq!(
                &after[n],
                ip,
                "{n} kept its address across the restart of {}\n--- a:\n{}\n--- b:\n{}",
                component.name(),
                a.log(),
                b.log()
            );
        }
        assert_distinct(&after);
        holder(&w, &lease, &[&a, &b], Duration::from_secs(30)).await;
    }
}
