//! Where Kubernetes-facing tests run: the project's in-process test API
//! server, or a real cluster when `PETREL_TEST_KUBECONFIG` names its
//! kubeconfig.
//!
//! Tests are written once against [`KubeEnv`] and run on both. Everything a
//! test creates through it (namespaces, cluster-scoped objects, the petrel
//! CRDs when the cluster had none) is deleted when the `KubeEnv` is dropped,
//! also when the test panics, so a real cluster is left as it was found.
//! Names carry a per-run suffix ([`KubeEnv::name`]) so runs never collide.
//!
//! A real cluster must be a disposable one without petrel: the tests create
//! Node objects, a `BGPConfiguration` named `default`, and run petrel's
//! controller with a `loadBalancerClass` of their own. [`KubeEnv::install_crds`]
//! refuses a cluster where a `BGPConfiguration` already exists.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::task::JoinHandle;

static RUNS: AtomicU32 = AtomicU32::new(0);

/// On a real cluster the tests of one binary take turns: they share
/// cluster-wide names (`BGPConfiguration/default`, the CRDs).
static REAL_CLUSTER: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::OnceLock::new();

/// One object to delete at the end: its resource, namespace and name.
#[derive(Clone)]
struct Created {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
}

/// A Kubernetes API for one test, and what the test created in it.
pub struct KubeEnv {
    server: Option<testserver::TestServer>,
    client: kube::Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
    suffix: String,
    created: Vec<Created>,
    forwarders: Vec<JoinHandle<()>>,
    /// A real cluster's turn, held until the end (after the cleanup).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KubeEnv {
    /// The test API server, or the cluster `PETREL_TEST_KUBECONFIG` names.
    /// `test` names the temporary directory (logs, kubeconfigs).
    pub async fn start(test: &str) -> KubeEnv {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("t{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("petrel-{test}-{suffix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        match std::env::var_os("PETREL_TEST_KUBECONFIG") {
            Some(path) => {
                let turn = REAL_CLUSTER
                    .get_or_init(Default::default)
                    .clone()
                    .lock_owned()
                    .await;
                let kubeconfig = PathBuf::from(path);
                let client = real_client(&kubeconfig).await;
                KubeEnv {
                    server: None,
                    client,
                    kubeconfig,
                    dir,
                    suffix,
                    created: Vec::new(),
                    forwarders: Vec::new(),
                    _turn: Some(turn),
                }
            }
            None => {
                let server = testserver::TestServer::start()
                    .await
                    .expect("test API server starts");
                let client = server.client().expect("test API server client");
                let kubeconfig = dir.join("kubeconfig");
                server
                    .write_kubeconfig(&kubeconfig)
                    .expect("kubeconfig written");
                KubeEnv {
                    server: Some(server),
                    client,
                    kubeconfig,
                    dir,
                    suffix,
                    created: Vec::new(),
                    forwarders: Vec::new(),
                    _turn: None,
                }
            }
        }
    }

    /// Whether this is a real cluster (`PETREL_TEST_KUBECONFIG`).
    pub fn real(&self) -> bool {
        self.server.is_none()
    }

    /// A client for the test's own calls.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig for petrel processes (`KUBECONFIG=`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `base` with this run's suffix: unique across runs and tests.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    /// The test API server, to restart it or count requests; `None` on a
    /// real cluster (tests skip what needs it, and say so).
    pub fn server(&mut self) -> Option<&mut testserver::TestServer> {
        self.server.as_mut()
    }

    /// Records an object to delete at the end (created some other way, by
    /// a petrel process for instance).
    pub fn track(&mut self, resource: ApiResource, namespace: Option<&str>, name: &str) {
        self.created.push(Created {
            resource,
            namespace: namespace.map(String::from),
            name: name.to_string(),
        });
    }

    /// Installs every petrel CRD and waits until each is served. On a real
    /// cluster, CRDs already there are kept (and not deleted at the end);
    /// a cluster with a `BGPConfiguration` runs petrel, and is refused.
    pub async fn install_crds(&mut self) {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        for crd in crds::crds() {
            let name = crd.metadata.name.clone().expect("CRDs are named");
            // One an earlier run deleted may still be going away: wait, then
            // make it anew.
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Some(c) = api.get_opt(&name).await.expect("CRDs can be read")
                && c.metadata.deletion_timestamp.is_some()
            {
                assert!(Instant::now() < deadline, "CRD {name} is stuck deleting");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match api.get_opt(&name).await.expect("CRDs can be read") {
                Some(_) if self.real() => {}
                Some(_) => panic!("CRD {name} exists on a fresh test API server"),
                None => {
                    api.create(&PostParams::default(), &crd)
                        .await
                        .unwrap_or_else(|e| panic!("CRD {name} cannot be created: {e}"));
                    self.track(
                        ApiResource::erase::<CustomResourceDefinition>(&()),
                        None,
                        &name,
                    );
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let established = api
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CRD {name} not established in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let configs = Api::<crds::BGPConfiguration>::all(self.client.clone());
        let existing = configs
            .list(&Default::default())
            .await
            .expect("BGPConfigurations can be listed");
        assert!(
            existing.items.is_empty(),
            "this cluster already has BGPConfigurations (it runs petrel); the tests need a disposable cluster without petrel"
        );
    }

    /// Creates a namespace named after `base`, deleted (with everything in
    /// it) at the end.
    pub async fn namespace(&mut self, base: &str) -> String {
        let name = self.name(base);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"petrel.dev/test": "true"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {name} cannot be created: {e}"));
        self.track(ApiResource::erase::<Namespace>(&()), None, &name);
        name
    }

    /// Creates an object of a typed kind (namespaced when `namespace` is
    /// given), deleted at the end.
    pub async fn create<K>(&mut self, namespace: Option<&str>, obj: &K) -> K
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let mut value = serde_json::to_value(obj).expect("object serializes");
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        if let Some(ns) = namespace {
            value["metadata"]["namespace"] = ns.into();
        }
        let made = self.create_json(&K::plural(&()), value).await;
        serde_json::from_value(serde_json::to_value(made).expect("object serializes"))
            .expect("created object reads back")
    }

    /// Creates an object from JSON (its `apiVersion`, `kind` and, when
    /// namespaced, `metadata.namespace`), `plural` being its resource name;
    /// deleted at the end.
    pub async fn create_json(&mut self, plural: &str, value: Value) -> DynamicObject {
        let api_version = value["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = value["kind"].as_str().expect("kind").to_string();
        let (group, version) = api_version
            .split_once('/')
            .unwrap_or(("", api_version.as_str()));
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(group, version, &kind),
            plural,
        );
        let namespace = value["metadata"]["namespace"].as_str().map(String::from);
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let obj: DynamicObject = serde_json::from_value(value).expect("object JSON");
        let made = api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{kind} cannot be created: {e}"));
        let name = made
            .metadata
            .name
            .clone()
            .expect("created objects have names");
        self.track(ar, namespace.as_deref(), &name);
        made
    }

    /// A kubeconfig for processes that reach the API server at `addr`
    /// only (agents in a lab's network namespaces): a TCP forwarder on
    /// `addr` to the real API server, and a kubeconfig pointing at it
    /// (with the server's own name for TLS). The forwarder stops with the
    /// `KubeEnv`.
    pub async fn kubeconfig_via(&mut self, addr: IpAddr) -> PathBuf {
        let mut config = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(addr, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let local = listener.local_addr().expect("bound");
        let base = self
            .kubeconfig
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let server = crate::kubeconfig::redirect(&mut config, &base, local)
            .unwrap_or_else(|e| panic!("{e}"));
        let target = tokio::net::lookup_host((server.host.as_str(), server.port))
            .await
            .expect("API server address resolves")
            .next()
            .expect("API server has an address");
        self.forwarders
            .push(tokio::spawn(crate::forward::relay(listener, target)));
        let path = self
            .dir
            .join(format!("kubeconfig-{local}").replace([':', '[', ']'], "_"));
        std::fs::write(
            &path,
            serde_json::to_vec(&config).expect("kubeconfig serializes"),
        )
        .expect("kubeconfig written");
        path
    }

    /// Deletes what the test created, newest first, and waits (up to 60 s)
    /// until namespaces are gone. Also done on drop; calling it lets a test
    /// see failures.
    pub async fn cleanup(&mut self) {
        let created = std::mem::take(&mut self.created);
        delete_all(&self.client, created).await;
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        if self.created.is_empty() || self.server.is_some() {
            // The test API server goes away with its objects.
            return;
        }
        // Dropped inside the test's runtime (maybe while unwinding): a
        // thread of its own with a fresh runtime and client does the
        // deleting.
        let created = std::mem::take(&mut self.created);
        let kubeconfig = self.kubeconfig.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = real_client(&kubeconfig).await;
                delete_all(&client, created).await;
            });
        });
        let _ = done.join();
    }
}

/// A client for the cluster `kubeconfig` describes.
async fn real_client(kubeconfig: &Path) -> kube::Client {
    let config = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot use {}: {e}", kubeconfig.display()));
    kube::Client::try_from(config).expect("client")
}

/// Deletes `created`, newest first; namespaces and CRDs are waited for.
async fn delete_all(client: &kube::Client, created: Vec<Created>) {
    let mut namespaces = Vec::new();
    for c in created.into_iter().rev() {
        let api: Api<DynamicObject> = match &c.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &c.resource),
            None => Api::all_with(client.clone(), &c.resource),
        };
        match api.delete(&c.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => eprintln!("cleanup: cannot delete {} {}: {e}", c.resource.kind, c.name),
        }
        // Namespaces and CRDs take a while to go; the next test (or run)
        // must not find them half-deleted.
        if matches!(
            c.resource.kind.as_str(),
            "Namespace" | "CustomResourceDefinition"
        ) {
            namespaces.push(c);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for c in namespaces {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &c.resource);
        while Instant::now() < deadline {
            match api.get_opt(&c.name).await {
                Ok(None) => break,
                Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
