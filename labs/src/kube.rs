//! `petrel lab up --kube KUBECONFIG`: the lab's cluster objects live in a
//! Kubernetes API server instead of a directory, the agents run
//! `--source kube`, and `petrel controller` assigns the LoadBalancer IPs.
//!
//! ```text
//!  API server (loopback, or a real cluster)
//!      ▲                       ▲
//!      │ host network          │ forwarder: listens in the switch namespace
//!  petrel controller           │ on the router's address, connects from the host
//!                              │
//!                 agents in the node namespaces (KUBECONFIG → router:6443)
//! ```
//!
//! The node namespaces reach nothing outside the lab (no route to the host),
//! and need none: the forwarder's listening socket is made inside the
//! switch namespace, while its connections to the API server are made from
//! the host's. TLS passes through untouched; the agents' kubeconfig keeps
//! the server's own name (`tls-server-name`) so certificates still verify.
//!
//! What the lab creates in the API server is recorded in its state and
//! deleted by `petrel lab down`: a namespace of its own for Services and
//! EndpointSlices (`petrel-lab-<name>`), the Nodes, the BGPConfiguration,
//! the BGPPeer of the router, a LoadBalancerPool of
//! `serviceLoadBalancerIPs` and, with `ipamMode: Petrel`, the IPPool (named
//! like the namespace) and the IPAMBlocks the agents made of it. Nodes or a BGPConfiguration that exist
//! already are refused rather than taken over.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::render;
use super::topology::Topology;

/// The port the forwarder listens on, on the router's address.
pub const API_PORT: u16 = 6443;

/// One object the lab created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// The resource (plural) name.
    pub plural: String,
    /// Its namespace, if namespaced.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Created {
    fn resource(&self) -> ApiResource {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", self.api_version.as_str()));
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &self.kind),
            &self.plural,
        )
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource()),
            None => Api::all_with(client.clone(), &self.resource()),
        }
    }
}

/// A lab's link to an API server, kept in its state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KubeLab {
    /// The kubeconfig given to `up` (absolute): the controller's, and ours.
    pub kubeconfig: PathBuf,
    /// What the lab created, oldest first.
    pub created: Vec<Created>,
}

/// The namespace of lab `name`'s Services.
pub fn namespace_of(lab: &str) -> String {
    format!("petrel-lab-{lab}")
}

/// The `loadBalancerClass` of lab `name`'s Services, which its controller
/// serves alone: in a real cluster, no other Service is touched.
pub fn class_of(lab: &str) -> String {
    format!("petrel.dev/lab-{lab}")
}

/// The label (key, value) of the lab's pool, which its controller selects
/// pools by: it neither uses nor writes the status of anyone else's.
pub const POOL_LABEL: &str = "petrel.dev/lab";

/// A single-threaded runtime for the lab's few API calls (the lab command
/// itself is synchronous).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

/// A client for the cluster of `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Writes `dst`: `src`'s current context, its server replaced by `listen`.
/// Returns the real server's address (for the forwarder).
pub async fn agent_kubeconfig(
    src: &Path,
    listen: SocketAddr,
    dst: &Path,
) -> anyhow::Result<SocketAddr> {
    let mut config = Kubeconfig::read_from(src)
        .with_context(|| format!("cannot read kubeconfig {}", src.display()))?;
    // Relative file names in a kubeconfig are relative to its file; ours
    // is written elsewhere.
    let base = src.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = testkit::kubeconfig::redirect(&mut config, &base, listen)
        .with_context(|| src.display().to_string())?;
    let target = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .with_context(|| format!("cannot resolve the API server {}", server.host))?
        .next()
        .with_context(|| format!("the API server {} has no address", server.host))?;
    // JSON is YAML: every kubeconfig reader takes it.
    let text = serde_json::to_string_pretty(&config)?;
    super::sys::write_atomic(dst, &text)?;
    Ok(target)
}

/// The lab's objects for the API server, in creation order: what the file
/// source reads, with the Services' namespace the lab's own, no fixed
/// ClusterIP (a real cluster allocates them), the LoadBalancer IP asked
/// for in `spec.loadBalancerIP` instead of written into the status (the
/// controller assigns it), and a LoadBalancerPool to assign it from.
pub fn objects(t: &Topology, lab: &str) -> anyhow::Result<Vec<Value>> {
    let namespace = namespace_of(lab);
    let namespace = namespace.as_str();
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": "petrel-lab"}}
    })];
    for (file, yaml) in render::cluster_objects(t) {
        let mut v: Value = serde_saphyr::from_str(&yaml)
            .with_context(|| format!("the lab's own {file} does not parse"))?;
        match v["kind"].as_str() {
            Some("Service") => {
                v["metadata"]["namespace"] = namespace.into();
                let ip = v["status"]["loadBalancer"]["ingress"][0]["ip"].clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("status");
                }
                if let Some(spec) = v["spec"].as_object_mut() {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                    if spec.get("type").and_then(Value::as_str) == Some("LoadBalancer") {
                        spec.insert("loadBalancerClass".into(), class_of(lab).into());
                    }
                    if !ip.is_null() {
                        spec.insert("loadBalancerIP".into(), ip);
                    }
                }
            }
            Some("EndpointSlice") => slice_for(&mut v, namespace),
            // The lab's own pool in a cluster that may have others.
            Some("IPPool") => {
                v["metadata"]["name"] = namespace.into();
                v["metadata"]["labels"] = json!({POOL_LABEL: lab});
            }
            _ => {}
        }
        out.push(v);
    }
    let addresses: Vec<String> = t
        .cluster
        .service_load_balancer_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    if !addresses.is_empty() {
        out.push(json!({
            "apiVersion": "petrel.dev/v1alpha1", "kind": "LoadBalancerPool",
            "metadata": {"name": namespace, "labels": {POOL_LABEL: lab}},
            "spec": {"cidrs": addresses}
        }));
    }
    Ok(out)
}

/// An EndpointSlice of the lab's files as the lab's object in the cluster.
fn slice_for(v: &mut Value, namespace: &str) {
    v["metadata"]["namespace"] = namespace.into();
    // Not the endpoint-slice controller's to reconcile.
    v["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "petrel-lab".into();
}

/// The EndpointSlices of `slices` (the lab's files) as the lab's objects in
/// the cluster: made once the pods have their addresses.
pub fn slice_objects(slices: &[(String, String)], lab: &str) -> anyhow::Result<Vec<Value>> {
    let namespace = namespace_of(lab);
    slices
        .iter()
        .map(|(file, yaml)| {
            let mut v: Value = serde_saphyr::from_str(yaml)
                .with_context(|| format!("the lab's own {file} does not parse"))?;
            slice_for(&mut v, &namespace);
            Ok(v)
        })
        .collect()
}

/// Deletes the IPAMBlocks of the lab's pool: the agents made them, so the
/// lab's record of what it created does not hold them. The errors.
pub async fn delete_blocks(client: &kube::Client, lab: &str) -> Vec<String> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("petrel.dev", "v1alpha1", "IPAMBlock"),
        "ipamblocks",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let pool = namespace_of(lab);
    let list = match api.list(&Default::default()).await {
        Ok(l) => l,
        // No such kind (CRDs without it): nothing of ours.
        Err(kube::Error::Api(e)) if e.code == 404 => return Vec::new(),
        Err(e) => return vec![format!("IPAMBlocks: {e}")],
    };
    let mut errors = Vec::new();
    for b in list.items {
        if b.data["spec"]["pool"].as_str() != Some(pool.as_str()) {
            continue;
        }
        let name = b.metadata.name.unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => errors.push(format!("IPAMBlock {name}: {e}")),
        }
    }
    errors
}

/// The resource name of the kinds the lab writes.
fn plural(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind {
        "Namespace" => "namespaces",
        "Node" => "nodes",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "BGPConfiguration" => "bgpconfigurations",
        "BGPPeer" => "bgppeers",
        "LoadBalancerPool" => "loadbalancerpools",
        "IPPool" => "ippools",
        other => bail!("the lab does not write {other} objects"),
    })
}

/// What `value` is, as a [`Created`].
pub fn created_of(value: &Value) -> anyhow::Result<Created> {
    let s = |p: &str| value.pointer(p).and_then(Value::as_str).map(String::from);
    let kind = s("/kind").context("object without kind")?;
    Ok(Created {
        api_version: s("/apiVersion").context("object without apiVersion")?,
        plural: plural(&kind)?.to_string(),
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name").context("object without a name")?,
        kind,
    })
}

/// Creates one object. An object that exists already is an error: the
/// lab must not take over what it did not make. The caller records it,
/// then calls [`finish`].
pub async fn create(client: &kube::Client, value: &Value) -> anyhow::Result<Created> {
    let c = created_of(value)?;
    let api = c.api(client);
    let obj: DynamicObject =
        serde_json::from_value(value.clone()).with_context(|| format!("{} {}", c.kind, c.name))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => bail!(
            "{} {} exists already in the cluster; the lab does not take over objects it did not make (remove it, or use a cluster without it)",
            c.kind,
            c.name
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot create {} {}", c.kind, c.name)),
    }
    Ok(c)
}

/// What follows the creation of an object the lab recorded: a Node's
/// status, which some API servers drop on create.
pub async fn finish(client: &kube::Client, c: &Created, value: &Value) -> anyhow::Result<()> {
    let api = c.api(client);
    if c.kind == "Node" {
        let status = json!({"status": value["status"]});
        api.patch_status(
            &c.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
        .with_context(|| format!("cannot write the status of Node {}", c.name))?;
    }
    Ok(())
}

/// Deletes what the lab created, newest first; what is gone already is
/// fine. Returns how many were deleted and the errors.
pub async fn delete(client: &kube::Client, created: &[Created]) -> (usize, Vec<String>) {
    let mut deleted = 0;
    let mut errors = Vec::new();
    for c in created.iter().rev() {
        match c
            .api(client)
            .delete(&c.name, &DeleteParams::default())
            .await
        {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => errors.push(format!("{} {}: {e}", c.kind, c.name)),
        }
    }
    (deleted, errors)
}

/// `petrel lab forward`: listens on `listen` inside network namespace
/// `netns` and relays every connection to `target`, reached from the
/// namespace this process runs in. Runs until killed.
pub fn forward(netns: &str, listen: SocketAddr, target: SocketAddr) -> anyhow::Result<()> {
    let listener = testkit::forward::listen_in(netns, listen)?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(%listen, %target, netns, "forwarding");
        testkit::forward::relay(listener, target).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_leave_addresses_to_the_cluster() {
        let t = Topology::load(Some("tor")).expect("built-in topology");
        let objs = objects(&t, "x").expect("objects");
        assert_eq!(objs[0]["kind"], "Namespace");
        let svc = objs
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("a Service");
        assert_eq!(svc["metadata"]["namespace"], "petrel-lab-x");
        assert_eq!(svc["spec"]["loadBalancerIP"], "198.51.100.10");
        assert_eq!(svc["spec"]["loadBalancerClass"], "petrel.dev/lab-x");
        assert!(svc["spec"].get("clusterIP").is_none());
        assert!(svc.get("status").is_none());
        let pool = objs.last().expect("objects");
        assert_eq!(pool["kind"], "LoadBalancerPool");
        assert_eq!(pool["spec"]["cidrs"][0], "198.51.100.0/24");
        assert_eq!(pool["metadata"]["labels"][POOL_LABEL], "x");
        for o in &objs {
            created_of(o).expect("every object is one the lab can track");
        }
    }
}
