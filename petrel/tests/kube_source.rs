//! `petrel agent --source kube` against a real API server (the test's own
//! control plane, or `PETREL_TEST_KUBECONFIG`'s cluster): the agent plans
//! from the objects it watches, follows changes without polling files,
//! survives a restart of the API server and of etcd, and a bad object is
//! reported while the others keep working.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use testkit::{Component, KubeEnv};

/// The agent process, killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn peers(&self) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
            .args(["peers", "-o", "json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("petrel runs");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until `f` holds for the peer list, at most `secs` seconds.
    async fn wait(&self, secs: u64, what: &str, f: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let peers = self.peers();
            if f(&peers) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {peers:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Api of a kind read as dynamic objects.
fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let (group, version) = match kind {
        "Node" => ("", "v1"),
        _ => ("petrel.dev", "v1alpha1"),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::all_with(client.clone(), &ar)
}

fn start_agent(dir: &Path, kubeconfig: &Path, node: &str) -> Agent {
    start_agent_with(dir, kubeconfig, node, "agent.log", &[])
}

/// An agent with more arguments, logging to `log` in `dir`.
fn start_agent_with(
    dir: &Path,
    kubeconfig: &Path,
    node: &str,
    log: &str,
    args: &[&std::ffi::OsStr],
) -> Agent {
    let socket = dir.join("petrel.sock");
    let log = dir.join(log);
    let child = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["agent", "--source", "kube", "--node", node, "--no-fib"])
        .args(["--metrics-address", "off"])
        .args(args)
        .arg("--api-socket")
        .arg(&socket)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("agent starts");
    Agent { child, socket, log }
}

/// The agent's Node (its address on loopback, where the control plane is)
/// and a BGPConfiguration listening on `port` of 127.0.0.1, without a mesh.
async fn node_and_configuration(
    env: &mut KubeEnv,
    node: &str,
    pod_cidr: &str,
    router_id: &str,
    port: u32,
) {
    env.create_json(
        "nodes",
        json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
            "spec": {"podCIDRs": [pod_cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
        }),
    )
    .await;
    env.create_json("bgpconfigurations", json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
        "spec": {"asNumber": 65001, "routerID": router_id, "listenAddress": "127.0.0.1",
                 "listenPort": port, "nodeToNodeMeshEnabled": false}
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_api_server() {
    let mut env = KubeEnv::start("kube-source").await;
    env.install_crds().await;
    let client = env.client();
    let node = env.name("node");
    // The agent runs in the host's namespace (the control plane is on its
    // loopback): a BGP port of its own, unlike any other test's.
    let port = 20000 + std::process::id() % 20000;
    node_and_configuration(&mut env, &node, "10.244.1.0/24", "10.0.0.1", port).await;
    let peers = api(&client, "BGPPeer", "bgppeers");
    env.create_json(
        "bgppeers",
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": "127.0.0.9", "asNumber": 65009}
        }),
    )
    .await;

    let agent = start_agent(env.dir(), env.kubeconfig(), &node);
    agent
        .wait(20, "the peer from the API server", |p| {
            p.iter().any(|p| p["name"] == "tor" && p["asn"] == 65009)
        })
        .await;

    // A change arrives by watch.
    peers
        .patch(
            "tor",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"asNumber": 65010}})),
        )
        .await
        .expect("patched");
    agent
        .wait(5, "the changed ASN", |p| {
            p.iter().any(|p| p["name"] == "tor" && p["asn"] == 65010)
        })
        .await;

    // A broken object (one the schema cannot tell is wrong) is reported;
    // the others still count.
    env.create_json(
        "bgppeers",
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "broken"},
            "spec": {"peerIP": "127.0.0.11", "asNumber": 65011, "holdTime": 9, "keepaliveTime": 5}
        }),
    )
    .await;
    env.create_json(
        "bgppeers",
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "second"},
            "spec": {"peerIP": "127.0.0.10", "asNumber": 65012}
        }),
    )
    .await;
    agent
        .wait(5, "the good new peer next to the old one", |p| {
            p.iter().any(|p| p["name"] == "second") && p.iter().any(|p| p["name"] == "tor")
        })
        .await;
    let log = agent.log();
    assert!(
        log.contains("BGPPeer/broken") && log.contains("spec.keepaliveTime"),
        "the bad object is named with its field: {log}"
    );

    // A password from a Secret, read by name: a BGPPeer naming a Secret
    // that does not exist yet is held back, and comes as soon as the
    // Secret does (its arrival wakes the agent), without any list or watch
    // of Secrets.
    env.create_json(
        "bgppeers",
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "signed"},
            "spec": {"peerIP": "127.0.0.12", "asNumber": 65014,
                     "password": {"secretKeyRef": {"name": "bgp-passwords", "key": "signed"}}}
        }),
    )
    .await;
    agent
        .wait(10, "the peer held back for its Secret", |p| {
            p.iter().any(|p| p["name"] == "second") && !p.iter().any(|p| p["name"] == "signed")
        })
        .await;
    env.create_json(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bgp-passwords", "namespace": "default"},
            "stringData": {"signed": "md5-key"}
        }),
    )
    .await;
    agent
        .wait(45, "the peer once its Secret exists", |p| {
            p.iter().any(|p| p["name"] == "signed" && p["asn"] == 65014)
        })
        .await;
    let log = agent.log();
    assert!(!log.contains("md5-key"), "a password in the log: {log}");

    // The API server restarts; the watches resume and see later changes.
    // (An external cluster's is not restarted: then this is just a change.)
    env.restart(Component::ApiServer).await;
    peers
        .delete("second", &DeleteParams::default())
        .await
        .expect("deleted");
    agent
        .wait(30, "the deletion after the API server's restart", |p| {
            !p.iter().any(|p| p["name"] == "second") && p.iter().any(|p| p["name"] == "tor")
        })
        .await;

    // So does etcd under it: the API server's watch cache starts anew, the
    // agent's watches resume (or relist) and see later changes.
    env.restart(Component::Etcd).await;
    peers
        .patch(
            "tor",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"asNumber": 65013}})),
        )
        .await
        .expect("patched after etcd's restart");
    agent
        .wait(30, "the change after etcd's restart", |p| {
            p.iter().any(|p| p["name"] == "tor" && p["asn"] == 65013)
                && !p.iter().any(|p| p["name"] == "second")
        })
        .await;
    drop(agent);
    env.cleanup().await;
}

/// An agent restarted (killed) while the API server is down starts from
/// the snapshot it saved: its peers, one with a password from a Secret,
/// are configured again without the API server; once the API server
/// answers, its objects take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_without_the_api_server_starts_from_its_saved_snapshot() {
    use std::os::unix::fs::PermissionsExt;

    let mut env = KubeEnv::start("kube-saved").await;
    env.install_crds().await;
    let client = env.client();
    let node = env.name("node");
    // Not the other test's port (both run in this process).
    let port = 40000 + std::process::id() % 20000;
    node_and_configuration(&mut env, &node, "10.244.2.0/24", "10.0.0.2", port).await;
    env.create_json(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "saved-passwords", "namespace": "default"},
            "stringData": {"signed": "saved-md5-key"}
        }),
    )
    .await;
    for (name, ip, asn, extra) in [
        ("tor", "127.0.0.9", 65009, json!({})),
        (
            "signed",
            "127.0.0.12",
            65014,
            json!({"password": {"secretKeyRef": {"name": "saved-passwords", "key": "signed"}}}),
        ),
    ] {
        let mut spec = json!({"peerIP": ip, "asNumber": asn});
        spec.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        env.create_json(
            "bgppeers",
            json!({"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    let saved = env.dir().join("snapshot.json");
    let args = [std::ffi::OsStr::new("--saved-snapshot"), saved.as_os_str()];
    let both = |p: &[Value]| {
        p.iter().any(|p| p["name"] == "tor" && p["asn"] == 65009)
            && p.iter().any(|p| p["name"] == "signed" && p["asn"] == 65014)
    };
    let agent = start_agent_with(env.dir(), env.kubeconfig(), &node, "agent-1.log", &args);
    agent.wait(45, "both peers from the API server", both).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&saved).is_ok_and(|t| t.contains("saved-passwords")) {
        assert!(
            Instant::now() < deadline,
            "no snapshot saved at {}\n{}",
            saved.display(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mode = std::fs::metadata(&saved)
        .expect("saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the snapshot holds passwords");
    drop(agent);

    if !env.stop_component(Component::ApiServer).await {
        eprintln!("SKIPPED: an external cluster's API server is not stopped");
        env.cleanup().await;
        return;
    }
    let agent = start_agent_with(env.dir(), env.kubeconfig(), &node, "agent-2.log", &args);
    agent
        .wait(40, "both peers from the saved snapshot", both)
        .await;
    let log = agent.log();
    assert!(
        log.contains("starting from the snapshot saved before"),
        "{log}"
    );
    assert!(
        !log.contains("saved-md5-key"),
        "a password in the log: {log}"
    );

    env.start_stopped().await;
    api(&client, "BGPPeer", "bgppeers")
        .patch(
            "tor",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"asNumber": 65010}})),
        )
        .await
        .expect("patched once the API server is back");
    agent
        .wait(60, "the API server's objects once it answers", |p| {
            p.iter().any(|p| p["name"] == "tor" && p["asn"] == 65010)
                && p.iter().any(|p| p["name"] == "signed")
        })
        .await;
    assert!(
        agent.log().contains("planning from its objects again"),
        "{}",
        agent.log()
    );
    drop(agent);
    env.cleanup().await;
}
