//! `petrel agent --source kube` against the project's test API server: the
//! agent plans from the objects it watches, follows changes without polling
//! files, survives an API-server restart, and a bad object is reported while
//! the others keep working.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

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

fn crd(kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.petrel.dev")},
        "spec": {
            "group": "petrel.dev",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}

fn api(client: &kube::Client, kind: &str, plural: &str, namespaced: bool) -> Api<DynamicObject> {
    let (group, version) = match kind {
        "Node" => ("", "v1"),
        _ => ("petrel.dev", "v1alpha1"),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    if namespaced {
        Api::namespaced_with(client.clone(), "default", &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

async fn create(a: &Api<DynamicObject>, v: Value) {
    let o: DynamicObject = serde_json::from_value(v).expect("object");
    a.create(&PostParams::default(), &o).await.expect("created");
}

fn start_agent(dir: &Path, kubeconfig: &Path) -> Agent {
    let socket = dir.join("petrel.sock");
    let log = dir.join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["agent", "--source", "kube", "--node", "node-1", "--no-fib"])
        .args(["--metrics-address", "off", "--api-socket"])
        .arg(&socket)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("agent starts");
    Agent { child, socket, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_api_server() {
    let mut server = testserver::TestServer::start()
        .await
        .expect("test API server");
    let client = server.client().expect("client");
    let dir = std::env::temp_dir().join(format!("petrel-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    for (kind, plural) in [
        ("BGPConfiguration", "bgpconfigurations"),
        ("BGPPeer", "bgppeers"),
        ("BGPFilter", "bgpfilters"),
        ("BGPAdvertisement", "bgpadvertisements"),
    ] {
        create(&crds, crd(kind, plural)).await;
    }
    let nodes = api(&client, "Node", "nodes", false);
    create(
        &nodes,
        json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
        }),
    )
    .await;
    let configs = api(&client, "BGPConfiguration", "bgpconfigurations", false);
    // The agent runs in the host's namespace (the test API server is on its
    // loopback): a BGP port of its own, unlike any other test's.
    let port = 20000 + std::process::id() % 20000;
    create(&configs, json!({
        "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration", "metadata": {"name": "default"},
        "spec": {"asNumber": 65001, "routerID": "10.0.0.1", "listenAddress": "127.0.0.1",
                 "listenPort": port, "nodeToNodeMeshEnabled": false}
    }))
    .await;
    let peers = api(&client, "BGPPeer", "bgppeers", false);
    create(
        &peers,
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": "127.0.0.9", "asNumber": 65009}
        }),
    )
    .await;

    let agent = start_agent(&dir, &kubeconfig);
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

    // A broken object is reported; the others still count.
    create(
        &peers,
        json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "broken"},
            "spec": {"peerIP": "not-an-address", "asNumber": 65011}
        }),
    )
    .await;
    create(
        &peers,
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
        log.contains("BGPPeer/broken") && log.contains("spec.peerIP"),
        "the bad object is named with its field: {log}"
    );

    // The API server restarts; the watches resume and see later changes.
    server.restart().await.expect("restart");
    peers
        .delete("second", &DeleteParams::default())
        .await
        .expect("deleted");
    agent
        .wait(20, "the deletion after the restart", |p| {
            !p.iter().any(|p| p["name"] == "second") && p.iter().any(|p| p["name"] == "tor")
        })
        .await;
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
