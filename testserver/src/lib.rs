//! An in-process Kubernetes API server for tests.
//!
//! [`TestServer`] serves plain HTTP on 127.0.0.1 and speaks enough of the Kubernetes REST API
//! for kube-rs clients, `Api<K>` of k8s-openapi kinds and of CRDs, `Discovery`, and
//! `kube::runtime` watchers, reflectors and controllers to work unchanged, so Kubernetes-facing
//! code can be tested with no cluster.
//!
//! # What is real
//! - Paths `/api/v1/...` and `/apis/GROUP/VERSION/...`, namespaced and cluster-scoped, lists
//!   and watches across namespaces; discovery (`/api`, `/apis`, `/apis/G`, `/api/v1`,
//!   `/apis/G/V`) and `/version`.
//! - Built-in resources: namespaces, nodes, services, secrets, configmaps, core and
//!   `events.k8s.io` events, endpointslices, leases, customresourcedefinitions. Creating a
//!   CRD serves its resource (and marks it Established); deleting it removes the resource and
//!   its objects.
//! - One global resourceVersion counter; uid, creationTimestamp, generation (bumped when
//!   anything but metadata and, for kinds with `/status`, status changes), generateName,
//!   optimistic concurrency (409 Conflict), 409 AlreadyExists, 404 NotFound, 422 Invalid, as
//!   `Status` objects that kube-rs turns into `kube::Error::Api`. Namespaced objects need
//!   their Namespace (`default`, `kube-system`, `kube-public` and `kube-node-lease` exist).
//! - The status subresource: writes to the main resource keep the stored status, writes to
//!   `/status` change only the status. A write that changes nothing is not stored again.
//! - Lists with label and field selectors, `limit`/`continue`. Watches from a
//!   resourceVersion replayed from a bounded history, 410 Gone (as an ERROR event) before it,
//!   selectors (objects entering or leaving a selector are seen as ADDED / DELETED),
//!   BOOKMARKs, `timeoutSeconds`, `sendInitialEvents`.
//! - PATCH: JSON patch, merge patch, strategic merge patch and server-side apply (the
//!   `patch` module's doc says what is simplified), also on `/status`.
//! - DELETE with preconditions and finalizers (deletionTimestamp, removal once the last
//!   finalizer is gone); delete-collection; `dryRun=All`; `fieldValidation=Strict`.
//! - Custom objects are pruned, defaulted and validated against their CRD version's
//!   structural schema, including `x-kubernetes-validations` in a CEL subset; a CRD whose
//!   rules fall outside the subset is refused when it is created.
//!
//! # What is simplified or missing
//! - No authentication, authorization (but [`TestServer::forbid_writes`] answers chosen
//!   writes with 403, as RBAC would), admission webhooks, TLS, protobuf, aggregated
//!   discovery (`Discovery::run_aggregated`), or version conversion (every version of a CRD
//!   serves the same stored objects, with only `apiVersion` changed, as with
//!   `conversion: None`).
//! - Built-in kinds are stored as given: no defaulting or validation beyond the object's
//!   name (an RFC 1123 subdomain). Field selectors know only `metadata.name` and
//!   `metadata.namespace`.
//! - Later list pages show the current state after the previous page, not a snapshot;
//!   `resourceVersion`/`resourceVersionMatch` on lists and gets are ignored (always latest).
//! - Deleting a Namespace removes it and its objects at once (no Terminating phase).
//! - `managedFields` records server-side apply managers only.
//! - Core v1 and `events.k8s.io/v1` Events are stored separately.
//! - Metadata-only requests (`Api::list_metadata`, `metadata_watcher`) get whole objects,
//!   which kube-rs reads as `PartialObjectMetadata` all the same.
//! - No `/api/v1/watch/...` paths (deprecated), no `pods`, no server-side `Table` output.
//! - The `schema`, `cel` and `patch` module docs list what is simplified there.
//!
//! kube 5 with only the `rustls-tls` feature has no rustls crypto provider, and
//! `kube::Client::try_from(Config)` panics building one even for `http://` URLs; so
//! [`TestServer::client`] builds its client on a plain HTTP connector. A separate process
//! using the kubeconfig from [`TestServer::write_kubeconfig`] needs a kube build with a
//! crypto provider (the `ring` or `aws-lc-rs` feature).

mod cel;
mod error;
mod http;
mod patch;
mod registry;
mod schema;
mod selector;
mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{ApiError, Error};

/// How to start a [`TestServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free port. Give an earlier server's
    /// [`TestServer::addr`] to start a fresh server (empty store) on the same port.
    pub addr: SocketAddr,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many changes the watch history keeps; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// How long [`TestServer::restart`] keeps the port closed.
    pub restart_downtime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            restart_downtime: Duration::from_millis(200),
        }
    }
}

/// A request verb, as kube-apiserver's audit log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object (or its status).
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH of any type, server-side apply included.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

/// One resource request the server received (discovery requests are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What was asked.
    pub verb: Verb,
    /// API group, empty for the core group.
    pub group: String,
    /// Resource plural, e.g. `services`.
    pub resource: String,
    /// Namespace in the path, if any.
    pub namespace: Option<String>,
    /// Object name in the path, if any.
    pub name: Option<String>,
    /// `status` for requests to the status subresource.
    pub subresource: Option<String>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A running test API server. Dropping it stops it.
pub struct TestServer {
    shared: Arc<http::Shared>,
    addr: SocketAddr,
    restart_downtime: Duration,
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server on a free port of 127.0.0.1 with default [`Options`].
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server with the given options.
    pub async fn start_with(options: Options) -> Result<Self, Error> {
        let shared = Arc::new(http::Shared {
            state: std::sync::Mutex::new(store::State::new(options.history_limit)),
            bookmark_interval: options.bookmark_interval,
            watches: AtomicUsize::new(0),
        });
        let (running, addr) = listen(shared.clone(), options.addr).await?;
        Ok(Self {
            shared,
            addr,
            restart_downtime: options.restart_downtime,
            running: Some(running),
        })
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, Error> {
        use hyper_util::client::legacy::Client as HyperClient;
        use kube::client::ConfigExt;
        let url = self.url();
        let config = kube::Config::new(url.parse().map_err(|_| Error::Url(url.clone()))?);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let http: HyperClient<_, kube::client::Body> =
            HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .service(http);
        Ok(kube::Client::new(service, config.default_namespace))
    }

    /// Writes a kubeconfig file pointing at this server, for a separate process
    /// (`KUBECONFIG=path`).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: testserver\n\
             clusters:\n- name: testserver\n  cluster:\n    server: {}\n\
             users:\n- name: testserver\n  user: {{}}\n\
             contexts:\n- name: testserver\n  context:\n    cluster: testserver\n    user: testserver\n    namespace: default\n",
            self.url()
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Stops the server: open watches end, the port closes. Waits up to 5 s for
    /// connections to finish.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            stop(running).await;
        }
    }

    /// What an API server restart looks like to clients: every watch and connection is
    /// dropped, the port is closed for [`Options::restart_downtime`], then the server serves
    /// again on the same port with the same objects and history.
    pub async fn restart(&mut self) -> Result<(), Error> {
        if let Some(running) = self.running.take() {
            stop(running).await;
        }
        tokio::time::sleep(self.restart_downtime).await;
        let (running, _) = listen(self.shared.clone(), self.addr).await?;
        self.running = Some(running);
        Ok(())
    }

    /// Drops the watch history, as etcd compaction: open watches end with a 410 Gone ERROR
    /// event, and watching from any resourceVersion handed out before gets 410 Gone, so
    /// clients must relist.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// The next `n` resource requests fail with 500 InternalError (kube's default retry
    /// layer would retry a 503, which would hide the failure).
    pub fn inject_failures(&self, n: usize) {
        self.shared.lock().failures = n;
    }

    /// Refuses writes (create, update, patch, delete) to `resource` (a plural) and
    /// `subresource` (`Some("status")`, or `None` for the main resource) with 403
    /// Forbidden from now on, as RBAC would for a client not allowed them. Reads still work.
    pub fn forbid_writes(&self, resource: &str, subresource: Option<&str>) {
        self.shared
            .lock()
            .forbidden
            .push((resource.to_string(), subresource.map(String::from)));
    }

    /// Allows again every write [`TestServer::forbid_writes`] refused.
    pub fn allow_writes(&self) {
        self.shared.lock().forbidden.clear();
    }

    /// How many watch streams are open now.
    pub fn watch_count(&self) -> usize {
        self.shared.watches.load(Ordering::SeqCst)
    }

    /// The stored object, for assertions. `resource` is a plural (`services`), a kind
    /// (`Service`) or `plural.group` (`leases.coordination.k8s.io`); `namespace` is `""` for
    /// cluster-scoped objects.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.shared.lock();
        let res = state.resources.iter().find(|r| {
            r.plural == resource
                || r.kind == resource
                || format!("{}.{}", r.plural, r.group) == resource
        })?;
        state.get(res, namespace, name).cloned()
    }

    /// Every resource request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// How many requests of `verb` on `resource` (plural) were received; `subresource` picks
    /// the main resource (`None`) or e.g. `Some("status")`.
    pub fn request_count(&self, verb: Verb, resource: &str, subresource: Option<&str>) -> usize {
        let state = self.shared.lock();
        let hit = |r: &&Request| {
            r.verb == verb && r.resource == resource && r.subresource.as_deref() == subresource
        };
        state.requests.iter().filter(hit).count()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            _ = running.stop.send(true);
            running.task.abort();
        }
    }
}

async fn listen(
    shared: Arc<http::Shared>,
    addr: SocketAddr,
) -> Result<(Running, SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let app = http::router(shared, stopped.clone());
    let mut signal = stopped;
    let task = tokio::spawn(async move {
        let shutdown = async move {
            _ = signal.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "test API server stopped serving");
        }
    });
    Ok((Running { stop, task }, addr))
}

async fn stop(running: Running) {
    _ = running.stop.send(true);
    let abort = running.task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Now as an RFC 3339 UTC timestamp with seconds precision, as `metav1.Time`.
pub(crate) fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
