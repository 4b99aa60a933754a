//! The kube source: the objects the file source reads from a directory,
//! read from the Kubernetes API server instead (`petrel agent --source
//! kube`), with one watch per kind.
//!
//! ```text
//!  API server ──watch──► per kind: each object through parse::add_object
//!                        (as files are), kept as parsed
//!                          │ only when what petrel reads of it changed
//!                          ▼
//!                        generation bump ──► agent: snapshot() joins the
//!                                            parsed objects of every kind
//! ```
//!
//! A watch event that changes nothing petrel reads (a heartbeat, a foreign
//! annotation, another agent's status entry) costs one object's parse and
//! wakes nobody; see [`crate::kube_parsed`].
//!
//! Watches resume by themselves after errors and API-server restarts, with
//! backoff (kube-runtime's watcher relists when its resourceVersion is gone).
//! An object petrel cannot use is reported by `add_object` and skipped; it
//! never stops the others.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use futures::future::BoxFuture;

use crate::Source;
use crate::kube_parsed::ParsedKind;
use crate::objects::{Origin, Snapshot};
use crate::problem::Problem;

/// The petrel.dev kinds the agent reads.
const PETREL_KINDS: [(&str, &str); 6] = [
    ("BGPConfiguration", "bgpconfigurations"),
    ("BGPPeer", "bgppeers"),
    ("BGPFilter", "bgpfilters"),
    ("BFDProfile", "bfdprofiles"),
    ("BGPAdvertisement", "bgpadvertisements"),
    ("IPPool", "ippools"),
];

/// Watches on every kind the planner reads.
pub struct KubeSource {
    /// Nodes, Services, EndpointSlices and petrel's kinds, in that order.
    kinds: Vec<(&'static str, ParsedKind)>,
    secrets: crate::kube_secrets::NamedSecrets,
    generation: watch::Receiver<u64>,
    seen: u64,
    /// The password files the last snapshot read, as read.
    files: std::collections::BTreeMap<String, Result<crate::Sensitive, String>>,
    tasks: Vec<JoinHandle<()>>,
    client: kube::Client,
    poll: Duration,
}

/// The API server cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API server (in-cluster configuration or KUBECONFIG): {0}")]
pub struct ConnectError(#[source] kube::Error);

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a reflector on `api` (with `config`: a label selector, say) into
/// `writer`'s store, bumping `generation` on every change.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    kind: &'static str,
    generation: Arc<watch::Sender<u64>>,
) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => generation.send_modify(|g| *g += 1),
                // The backoff wrapper retries; say what happened once per try.
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    (reader, task)
}

impl KubeSource {
    /// Connects (in-cluster configuration, or KUBECONFIG) and starts the
    /// watches.
    pub async fn connect() -> Result<KubeSource, ConnectError> {
        let client = kube::Client::try_default().await.map_err(ConnectError)?;
        Ok(Self::start(client))
    }

    /// Looks again at least every `poll` (a change wakes it sooner).
    pub fn set_poll(&mut self, poll: Duration) {
        self.poll = poll;
    }

    /// The client the watches use (for the agent's status writes).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Starts the watches with a client.
    pub fn start(client: kube::Client) -> KubeSource {
        let (tx, generation) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        let mut kinds = Vec::new();
        for (group, version, kind, plural) in [
            ("", "v1", "Node", "nodes"),
            ("", "v1", "Service", "services"),
            ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        ] {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let (k, t) = ParsedKind::start(client.clone(), ar, tx.clone());
            tasks.push(t);
            kinds.push((kind, k));
        }
        // Secrets only in the agent's own namespace (the chart grants no
        // more), and only those BGPPeers name, each read by name.
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
        let (secrets, t) = crate::kube_secrets::NamedSecrets::start(
            Api::<Secret>::namespaced(client.clone(), &namespace),
            tx.clone(),
        );
        tasks.push(t);
        for (kind, plural) in PETREL_KINDS {
            let gvk = GroupVersionKind::gvk(crds::GROUP, crds::VERSION, kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let (k, t) = ParsedKind::start(client.clone(), ar, tx.clone());
            tasks.push(t);
            kinds.push((kind, k));
        }
        KubeSource {
            kinds,
            secrets,
            generation,
            seen: u64::MAX,
            files: Default::default(),
            tasks,
            client,
            poll: Duration::from_secs(1),
        }
    }

    /// Waits until every kind has been listed once, and the Secrets the
    /// BGPPeers name read (so the first plan is not made from a partial
    /// view), at most `limit`; says which kinds are missing.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), Vec<&'static str>> {
        let all = async {
            while !self.is_listed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.secrets.want(self.named_secrets());
            while !self.secrets.is_read() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_ok() {
            return Ok(());
        }
        Err(self.missing())
    }

    /// Whether every kind has been listed once.
    pub fn is_listed(&self) -> bool {
        self.kinds.iter().all(|(_, k)| k.is_listed())
    }

    /// Whether every kind has been listed and the Secrets the BGPPeers
    /// name read: a snapshot now is the cluster's, not a part of it.
    pub fn is_ready(&self) -> bool {
        if !self.is_listed() {
            return false;
        }
        self.secrets.want(self.named_secrets());
        self.secrets.is_read()
    }

    /// Waits until something changed since the last [`KubeSource::snapshot`],
    /// or `limit` passes.
    pub async fn changed(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.generation.wait_for(|g| *g != self.seen)).await;
        // Changes come in bursts (a Service and its EndpointSlices): take
        // them as one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Whether anything changed since the last snapshot: an object petrel
    /// reads, or a password file the last snapshot read (a rotated file is
    /// noticed at the next poll, with no change in the cluster).
    pub fn is_changed(&self) -> bool {
        *self.generation.borrow() != self.seen
            || (!self.files.is_empty()
                && crate::read_files(self.files.keys().cloned(), std::path::Path::new(""))
                    != self.files)
    }

    /// The kinds not listed yet, and `Secret` while the Secrets the
    /// BGPPeers name are not all read.
    pub fn missing(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .map(|(kind, k)| (*kind, k.is_listed()))
            .chain([("Secret", self.secrets.is_read())])
            .filter(|(_, ready)| !*ready)
            .map(|(k, _)| k)
            .collect()
    }

    /// Every object, through the same parsing as the file source.
    pub fn snapshot(&mut self) -> (Snapshot, Vec<Problem>) {
        self.seen = *self.generation.borrow();
        let mut snap = Snapshot {
            source: "the API server".into(),
            ..Snapshot::default()
        };
        let mut problems = Vec::new();
        for (_, k) in &self.kinds {
            k.add_to(&mut snap, &mut problems);
        }
        // The Secrets these BGPPeers name: asked for (a new name is read
        // at once, and its arrival wakes the agent again), and those read.
        self.secrets.want(names_in(&snap));
        add_all(
            &self.secrets.current(),
            "v1",
            "Secret",
            &mut snap,
            &mut problems,
        );
        // Password files are paths on the node, relative to where the agent
        // runs.
        crate::read_referenced_files(&mut snap, std::path::Path::new(""));
        self.files = snap.files.clone();
        (snap, problems)
    }
}

impl KubeSource {
    /// The Secret names the BGPPeers in the store use.
    fn named_secrets(&self) -> std::collections::BTreeSet<String> {
        let mut snap = Snapshot::default();
        let mut problems = Vec::new();
        if let Some((_, k)) = self.kinds.iter().find(|(kind, _)| *kind == "BGPPeer") {
            k.add_to(&mut snap, &mut problems);
        }
        names_in(&snap)
    }
}

/// The Secret names `snap`'s BGPPeers use for their passwords, and its
/// BFDProfiles for their keys.
fn names_in(snap: &Snapshot) -> std::collections::BTreeSet<String> {
    let peers = snap.peers.iter().filter_map(|p| {
        Some(
            p.spec
                .password
                .as_ref()?
                .secret_key_ref
                .as_ref()?
                .name
                .clone(),
        )
    });
    let profiles = snap.bfd_profiles.iter().filter_map(|p| {
        Some(
            p.spec
                .authentication
                .as_ref()?
                .secret
                .as_ref()?
                .secret_key_ref
                .as_ref()?
                .name
                .clone(),
        )
    });
    peers.chain(profiles).collect()
}

impl Source for KubeSource {
    fn poll(&mut self) -> Option<(Snapshot, Vec<Problem>)> {
        self.is_changed().then(|| self.snapshot())
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        let poll = self.poll;
        Box::pin(KubeSource::changed(self, poll))
    }
}

/// Whether a store has its first full list.
pub fn ready<K>(s: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(s.wait_until_ready()).is_some()
}

/// Adds objects of one kind; list items may come without `apiVersion` and
/// `kind`, so both are set from what was watched.
pub fn add_all<K: Serialize + kube::ResourceExt>(
    objects: &[Arc<K>],
    api_version: &str,
    kind: &str,
    snap: &mut Snapshot,
    problems: &mut Vec<Problem>,
) {
    let mut objects: Vec<&Arc<K>> = objects.iter().collect();
    // Stores are unordered; plans must not depend on watch order.
    objects.sort_by_key(|o| (o.namespace(), o.name_any()));
    for o in objects {
        let origin = Origin::api(kind, o.namespace().as_deref(), &o.name_any());
        let mut value = match serde_json::to_value(o.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem {
                    origin: origin.to_string(),
                    object: Some(format!("{kind}/{}", o.name_any())),
                    field: None,
                    message: format!("cannot be read: {e}"),
                });
                continue;
            }
        };
        if let Value::Object(m) = &mut value {
            m.insert("apiVersion".into(), Value::String(api_version.into()));
            m.insert("kind".into(), Value::String(kind.into()));
        }
        crate::add_object(&value, origin, snap, problems);
    }
}
