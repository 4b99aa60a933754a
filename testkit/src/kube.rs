//! Where Kubernetes-facing tests run: a real control plane of their own
//! (kube-apiserver, kube-controller-manager, kube-scheduler and etcd built
//! from pinned Go modules by `testenv/kube/build.sh`, started on 127.0.0.1
//! by `testenv/kube/start.sh`, one per [`KubeEnv`]), or a disposable
//! cluster when `PETREL_TEST_KUBECONFIG` names its kubeconfig.
//!
//! Tests are written once against [`KubeEnv`] and run on both. A control
//! plane of the test's own is stopped when the `KubeEnv` is dropped (also
//! when the test panics); on an external cluster everything a test created
//! through it (namespaces, cluster-scoped objects, the petrel CRDs when the
//! cluster had none) is deleted instead, so it is left as it was found.
//! Names carry a per-run suffix ([`KubeEnv::name`]) so runs never collide.
//!
//! An external cluster must be a disposable one without petrel: the tests
//! create Node objects, a `BGPConfiguration` named `default`, and run
//! petrel's controller with a `loadBalancerClass` of their own.
//! [`KubeEnv::install_crds`] refuses a cluster where a `BGPConfiguration`
//! already exists. What only a control plane of the test's own offers
//! (restarting a component, its audit log) says so: [`KubeEnv::restart`]
//! returns `false`, [`KubeEnv::audit`] `None`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::task::JoinHandle;

mod access;
mod chart;
mod pods;

pub use access::{Access, ServiceAccountAccess};
pub use chart::Chart;

static RUNS: AtomicU32 = AtomicU32::new(0);

/// On an external cluster the tests of one binary take turns: they share
/// cluster-wide names (`BGPConfiguration/default`, the CRDs).
static REAL_CLUSTER: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::OnceLock::new();

/// The control-plane binaries `build.sh` made (once per test process).
static BINARIES: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();

/// One object to delete at the end: its resource, namespace and name.
#[derive(Clone)]
struct Created {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
}

/// A component of the test's control plane, for [`KubeEnv::restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd, the store.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
}

impl Component {
    /// The name `restart.sh` knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }
}

/// One request in the API server's audit log (stage `ResponseComplete`;
/// the policy in `testenv/kube/start.sh` records Nodes, Services and
/// petrel's kinds, with their status subresources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The resource (plural), e.g. `nodes`.
    pub resource: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// The object's namespace, for namespaced ones.
    pub namespace: Option<String>,
    /// The object's name (none for lists and collection watches).
    pub name: Option<String>,
    /// Who asked: `system:serviceaccount:NS:NAME`, `petrel-admin`, ...
    pub user: String,
    /// The HTTP status code of the answer.
    pub code: u16,
}

impl AuditEvent {
    /// Reads one line of the audit log; `None` for anything else.
    fn parse(line: &str) -> Option<AuditEvent> {
        let v: Value = serde_json::from_str(line).ok()?;
        let s = |v: &Value| v.as_str().map(String::from);
        let object = &v["objectRef"];
        Some(AuditEvent {
            verb: s(&v["verb"])?,
            resource: s(&object["resource"])?,
            subresource: s(&object["subresource"]),
            namespace: s(&object["namespace"]),
            name: s(&object["name"]),
            user: s(&v["user"]["username"]).unwrap_or_default(),
            code: v["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
        })
    }
}

/// The test's own control plane: the directory `start.sh` keeps its state
/// in, and the binaries. Stopped when dropped.
struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    /// Already stopped (by `cleanup`).
    stopped: bool,
}

/// A Kubernetes API for one test, and what the test created in it.
pub struct KubeEnv {
    plane: Option<ControlPlane>,
    client: kube::Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
    suffix: String,
    created: Vec<Created>,
    forwarders: Vec<JoinHandle<()>>,
    /// An external cluster's turn, held until the end (after the cleanup).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// `testenv/kube` in this source tree.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testenv/kube")
}

/// Runs a `testenv/kube` script; its stdout (trimmed), or what went wrong
/// with its stderr.
fn script(name: &str, args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Result<String, String> {
    let path = scripts().join(name);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{} {:?} failed ({}):\n{}",
            path.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl KubeEnv {
    /// A control plane of the test's own, or the cluster
    /// `PETREL_TEST_KUBECONFIG` names. `test` names the temporary directory
    /// (logs, kubeconfigs; the control plane's state in `cluster/`).
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
                    plane: None,
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
                let cluster = dir.join("cluster");
                let started = cluster.clone();
                let (bin, kubeconfig) = tokio::task::spawn_blocking(move || {
                    let bin = BINARIES
                        .get_or_init(|| script("build.sh", &[], &[]).map(PathBuf::from))
                        .clone()
                        .unwrap_or_else(|e| panic!("the control plane cannot be built: {e}"));
                    let env = [("PETREL_KUBE_BIN", bin.as_path())];
                    let start = || script("start.sh", &[started.as_os_str()], &env);
                    // Once in a while (about one start in a few hundred
                    // under a full CI run) a component is told to stop
                    // within its first 100 ms, before it serves (seen with
                    // kube-scheduler: "context canceled" at start, no
                    // sender found), or a port it picked as free was taken
                    // meanwhile by a control plane starting beside it. The
                    // whole plane is stopped and started once more on
                    // fresh ports and data (a first start keeps nothing);
                    // a second failure fails the test.
                    let kubeconfig = start()
                        .or_else(|e| {
                            eprintln!(
                                "the control plane did not start; stopping it and starting it once more. The failure:\n{e}"
                            );
                            let _ = script("stop.sh", &[started.as_os_str()], &env);
                            let _ = std::fs::remove_file(started.join("ports.env"));
                            let _ = std::fs::remove_dir_all(started.join("etcd"));
                            start()
                        })
                        .unwrap_or_else(|e| panic!("the control plane does not start: {e}"));
                    (bin, PathBuf::from(kubeconfig))
                })
                .await
                .expect("start.sh ran");
                // From here on, the control plane is stopped on drop.
                let plane = ControlPlane {
                    dir: cluster,
                    bin,
                    stopped: false,
                };
                let client = real_client(&kubeconfig).await;
                let env = KubeEnv {
                    plane: Some(plane),
                    client,
                    kubeconfig,
                    dir,
                    suffix,
                    created: Vec::new(),
                    forwarders: Vec::new(),
                    _turn: None,
                };
                env.wait_default_service_account().await;
                env
            }
        }
    }

    /// Waits (up to 60 s) until kube-controller-manager made the `default`
    /// ServiceAccount: Pods, and tokens for accounts, need it; it is the
    /// sign that the controllers run.
    async fn wait_default_service_account(&self) {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(api.get_opt("default").await, Ok(Some(_))) {
            assert!(
                Instant::now() < deadline,
                "kube-controller-manager made no default ServiceAccount in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory of the control plane's binaries (`kubectl` among
    /// them); `None` on an external cluster.
    pub fn binaries(&self) -> Option<&Path> {
        self.plane.as_ref().map(|p| p.bin.as_path())
    }

    /// `kubectl` with the admin's kubeconfig: the control plane's own
    /// build, or the one on `PATH` for an external cluster.
    pub fn kubectl(&self) -> std::process::Command {
        let program = self
            .binaries()
            .map_or(PathBuf::from("kubectl"), |b| b.join("kubectl"));
        let mut cmd = std::process::Command::new(program);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Restarts one component of the test's control plane (stop it, start
    /// it with the same data, ports and certificates, wait until the whole
    /// plane is ready again; 1 to 15 s). Returns `false`, and does nothing,
    /// on an external cluster: its components are not the test's to
    /// restart.
    pub async fn restart(&self, component: Component) -> bool {
        self.plane_script("restart.sh", Some(component)).await
    }

    /// Stops one component of the test's control plane until
    /// [`KubeEnv::start_stopped`]. Returns `false`, and does nothing, on an
    /// external cluster.
    pub async fn stop_component(&self, component: Component) -> bool {
        self.plane_script("stop.sh", Some(component)).await
    }

    /// Starts what [`KubeEnv::stop_component`] stopped, with the same data,
    /// ports and certificates, and waits until the whole plane is ready.
    pub async fn start_stopped(&self) {
        self.plane_script("start.sh", None).await;
    }

    /// Runs one of `testenv/kube`'s scripts on the test's control plane
    /// (`SCRIPT DIR [COMPONENT]`), panicking if it fails; `false`, and
    /// nothing done, on an external cluster.
    async fn plane_script(&self, name: &'static str, component: Option<Component>) -> bool {
        let Some(plane) = &self.plane else {
            eprintln!("an external cluster: {name} is not run on it");
            return false;
        };
        let (dir, bin) = (plane.dir.clone(), plane.bin.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![dir.as_os_str()];
            args.extend(component.map(|c| std::ffi::OsStr::new(c.name())));
            script(name, &args, &[("PETREL_KUBE_BIN", bin.as_path())])
        })
        .await
        .unwrap_or_else(|e| panic!("{name} did not run: {e}"))
        .unwrap_or_else(|e| panic!("{name} failed: {e}"));
        true
    }

    /// Every request in the API server's audit log so far, oldest first
    /// (see [`AuditEvent`] for which are recorded); `None` on an external
    /// cluster. A request is in the log once it was answered.
    pub fn audit(&self) -> Option<Vec<AuditEvent>> {
        let plane = self.plane.as_ref()?;
        let text = std::fs::read_to_string(plane.dir.join("audit.log")).unwrap_or_default();
        Some(text.lines().filter_map(AuditEvent::parse).collect())
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
                Some(_) if self.plane.is_none() => {}
                Some(_) => panic!("CRD {name} exists on a fresh control plane"),
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
    /// `addr` to the real API server, and `kubeconfig` (the admin's,
    /// [`KubeEnv::kubeconfig`], or a [`ServiceAccountAccess`]'s) pointing at
    /// it (with the server's own name for TLS). The forwarder stops with
    /// the `KubeEnv`.
    pub async fn kubeconfig_via(&mut self, addr: IpAddr, kubeconfig: &Path) -> PathBuf {
        let mut config = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(addr, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        let local = listener.local_addr().expect("bound");
        let base = kubeconfig
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

    /// The end: stops the test's control plane (its objects go with it;
    /// it fails the test if `stop.sh` does), or on an external cluster
    /// deletes what the test created, newest first, and waits (up to 60 s)
    /// until namespaces are gone. Also done on drop; calling it lets a test
    /// see failures.
    pub async fn cleanup(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        if let Some(plane) = &mut self.plane {
            self.created.clear();
            if !plane.stopped {
                plane.stopped = true;
                let dir = plane.dir.clone();
                tokio::task::spawn_blocking(move || stop(&dir))
                    .await
                    .expect("stop.sh ran")
                    .unwrap_or_else(|e| panic!("the control plane does not stop: {e}"));
            }
            return;
        }
        let created = std::mem::take(&mut self.created);
        delete_all(&self.client, created).await;
    }
}

/// Stops the control plane in `dir`; when it stopped, removes etcd's data
/// (tens of MB a test; the logs and the audit log stay for a look).
fn stop(dir: &Path) -> Result<(), String> {
    script("stop.sh", &[dir.as_os_str()], &[])?;
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    Ok(())
}

impl Drop for ControlPlane {
    /// Stops it unless `cleanup` did: also when the test panicked, or
    /// `KubeEnv::start` failed after `start.sh`. Blocking here is fine: a
    /// test ends.
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Err(e) = stop(&self.dir) {
                eprintln!(
                    "the control plane in {} did not stop: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        if let Some(plane) = self.plane.take() {
            // A control plane of its own stops, its objects with it; the
            // test's directory (logs, audit log) stays only for a failed
            // test or with PETREL_KEEP_LAB.
            drop(plane);
            if !std::thread::panicking() && std::env::var_os("PETREL_KEEP_LAB").is_none() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            return;
        }
        if self.created.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};

    #[test]
    fn audit_lines_are_read_and_others_skipped() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"patch","user":{"username":"system:serviceaccount:ns:agent","groups":["system:serviceaccounts"]},"objectRef":{"resource":"nodes","name":"n1","apiVersion":"v1","subresource":"status"},"responseStatus":{"metadata":{},"code":403}}"#;
        assert_eq!(
            AuditEvent::parse(line),
            Some(AuditEvent {
                verb: "patch".into(),
                resource: "nodes".into(),
                subresource: Some("status".into()),
                namespace: None,
                name: Some("n1".into()),
                user: "system:serviceaccount:ns:agent".into(),
                code: 403,
            })
        );
        // Non-resource requests (no objectRef) and broken lines are skipped.
        assert_eq!(
            AuditEvent::parse(r#"{"verb":"get","requestURI":"/readyz"}"#),
            None
        );
        assert_eq!(AuditEvent::parse("{"), None);
    }

    /// The harness itself on its own control plane: the audit log sees
    /// requests, a ServiceAccount gets exactly its role's rights, data
    /// survives an API server restart, and `cleanup` stops every process.
    /// (On an external cluster only the ServiceAccount part is checked.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_control_plane_of_its_own() {
        let mut env = KubeEnv::start("testkit-kube").await;
        let node = env.name("node");
        env.create_json(
            "nodes",
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        )
        .await;
        if let Some(log) = env.audit() {
            assert!(
                log.iter().any(|e| e.verb == "create"
                    && e.resource == "nodes"
                    && e.name.as_deref() == Some(node.as_str())
                    && e.code == 201),
                "{log:#?}"
            );
        }

        // A ServiceAccount that may read Nodes and nothing else.
        let reader = env
            .service_account(
                "reader",
                serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]),
            )
            .await;
        let client = real_client(&reader.kubeconfig).await;
        let nodes: Api<Node> = Api::all(client.clone());
        nodes.get(&node).await.expect("the reader reads Nodes");
        let status = serde_json::json!({"status": {"conditions": []}});
        match nodes
            .patch_status(
                &node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(status),
            )
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
            other => panic!("the reader wrote a Node's status: {other:?}"),
        }
        if let Some(log) = env.audit() {
            assert!(
                log.iter().any(|e| e.user == reader.user
                    && e.subresource.as_deref() == Some("status")
                    && e.code == 403),
                "{log:#?}"
            );
        }

        // Data survives an API server restart; clients carry on.
        let maps: Api<ConfigMap> = Api::namespaced(env.client(), "default");
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kept"}, "data": {"k": "v"}
        }))
        .expect("ConfigMap");
        maps.create(&PostParams::default(), &map)
            .await
            .expect("ConfigMap created");
        if env.restart(Component::ApiServer).await {
            let kept = maps.get("kept").await.expect("read after the restart");
            assert_eq!(
                kept.data.unwrap_or_default().get("k").map(String::as_str),
                Some("v")
            );
            let kubectl = env.binaries().expect("binaries").join("kubectl");
            let out = std::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(env.kubeconfig())
                .args(["get", "node", &node, "-o", "name"])
                .output()
                .expect("kubectl runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("node/{node}")
            );
        } else {
            maps.delete("kept", &DeleteParams::default())
                .await
                .expect("ConfigMap deleted");
        }
        let cluster = env.dir().join("cluster");
        env.cleanup().await;
        if env.binaries().is_some() {
            for c in [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ] {
                assert!(
                    !cluster.join("pids").join(format!("{c}.pid")).exists(),
                    "{c} still recorded as running"
                );
            }
        }
    }
}
