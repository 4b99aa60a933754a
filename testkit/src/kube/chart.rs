//! petrel's Helm chart on the test's API server: rendered by Helm's own
//! engine (`charts/render.py`, helm-python-sdk), its objects created for
//! real, so its RBAC, admission policy and workloads are what the API
//! server accepts and enforces, not copies kept in the tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

use super::KubeEnv;
use super::access::Access;

/// The chart as rendered for one release: its objects, in Helm's install
/// order.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The release name (a per-run name: cluster-scoped objects carry it).
    pub release: String,
    /// The release namespace.
    pub namespace: String,
    /// Every rendered object, installed or not.
    pub objects: Vec<Value>,
}

impl Chart {
    /// Renders `charts/petrel` for release `release` in `namespace` with
    /// `values` (a JSON object over values.yaml). Panics with Helm's error
    /// or what to install when Helm's library is missing.
    pub fn render(release: &str, namespace: &str, values: &Value) -> Chart {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/render.py");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args(["--name", release, "--namespace", namespace])
            .args(["--values", &values.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let objects: Vec<Value> =
            serde_json::from_slice(&out.stdout).expect("charts/render.py prints a JSON array");
        Chart {
            release: release.to_string(),
            namespace: namespace.to_string(),
            objects,
        }
    }

    /// The objects of `kind` whose `app.kubernetes.io/component` label is
    /// `component` (`agent`, `controller`).
    pub fn of(&self, kind: &str, component: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| {
                o["kind"] == kind
                    && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
            })
            .collect()
    }

    /// The name of the one object of `kind` and `component`.
    pub fn name(&self, kind: &str, component: &str) -> String {
        match self.of(kind, component).as_slice() {
            [one] => one["metadata"]["name"]
                .as_str()
                .expect("rendered objects are named")
                .to_string(),
            other => panic!(
                "the chart renders {} {kind} of the {component}",
                other.len()
            ),
        }
    }

    /// The user name of a component's ServiceAccount
    /// (`system:serviceaccount:NS:NAME`).
    pub fn user(&self, component: &str) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.name("ServiceAccount", component)
        )
    }
}

/// The label that pins the chart's Pods to the test's Nodes.
const NODE_LABEL: &str = "petrel.dev/test-node";

impl KubeEnv {
    /// Labels for the Nodes a test makes, so the chart's Pods (agents,
    /// controllers) are placed on them: on an external cluster, never on
    /// its real nodes, whose kubelets would run them.
    pub fn node_labels(&self) -> Value {
        serde_json::json!({ NODE_LABEL: self.suffix })
    }

    /// Renders the chart (release named after `base`, in `namespace`, with
    /// `values`) and creates those of its objects whose kind is in `kinds`
    /// (every one when `kinds` is empty), in Helm's order; each is deleted
    /// at the end. The agent's and the controller's `nodeSelector` get
    /// [`KubeEnv::node_labels`]: their Pods go to the test's Nodes only. The CRDs are [`KubeEnv::install_crds`]'s (the chart's
    /// `crds/` are `petrel crds`). Panics naming the object the API server
    /// refused. Returns once RBAC lets each bound account do the first
    /// thing its role grants.
    pub async fn install_chart(
        &mut self,
        base: &str,
        namespace: &str,
        values: Value,
        kinds: &[&str],
    ) -> Chart {
        let release = self.name(base);
        let mut values = values;
        for component in ["agent", "controller"] {
            values[component]["nodeSelector"][NODE_LABEL] = self.suffix.clone().into();
        }
        let chart = Chart::render(&release, namespace, &values);
        let chosen: Vec<Value> = chart
            .objects
            .iter()
            .filter(|o| kinds.is_empty() || kinds.iter().any(|k| o["kind"] == *k))
            .cloned()
            .collect();
        for (object, refused) in self.apply(&chosen, false).await {
            if let Some(e) = refused {
                panic!("the API server refuses the chart's {object}: {e}");
            }
        }
        for binding in chart.objects.iter().filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            ) && chosen.contains(o)
        }) {
            self.wait_bound(&chart, binding).await;
        }
        chart
    }

    /// Creates `objects` (any kind the API server serves; namespaced ones
    /// in their `metadata.namespace`), or with `dry_run` has the API server
    /// check them all the way through admission without storing them, as
    /// `kubectl apply --dry-run=server` does. Created objects are deleted at
    /// the end. For each object, `KIND/NAME` and the API server's refusal.
    pub async fn apply(
        &mut self,
        objects: &[Value],
        dry_run: bool,
    ) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for object in objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let what = format!("{kind}/{name}");
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let (resource, caps) = match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok(found) => found,
                Err(e) => {
                    out.push((what, Some(format!("not served: {e}"))));
                    continue;
                }
            };
            let namespace = object["metadata"]["namespace"].as_str();
            let api: Api<DynamicObject> = match (&caps.scope, namespace) {
                (Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(self.client.clone(), ns, &resource)
                }
                (Scope::Namespaced, None) => {
                    out.push((what, Some("namespaced, but names no namespace".into())));
                    continue;
                }
                (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
            };
            let obj: DynamicObject = match serde_json::from_value(object.clone()) {
                Ok(o) => o,
                Err(e) => {
                    out.push((what, Some(format!("not an object: {e}"))));
                    continue;
                }
            };
            let params = PostParams {
                dry_run,
                ..Default::default()
            };
            match api.create(&params, &obj).await {
                Ok(_) => {
                    if !dry_run {
                        self.track(resource, namespace, name);
                    }
                    out.push((what, None));
                }
                Err(e) => out.push((what, Some(e.to_string()))),
            }
        }
        out
    }

    /// The agent Pod the chart's DaemonSet has on each of `nodes` (made by
    /// kube-controller-manager's DaemonSet controller; no kubelet runs
    /// them), waited for up to 60 s, each with a kubeconfig holding a
    /// token of the agent's ServiceAccount bound to that Pod: what the
    /// kubelet would give the agent on that node, so the token names it.
    pub async fn agent_tokens(&mut self, chart: &Chart, nodes: &[&str]) -> Vec<(Pod, PathBuf)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &chart.namespace);
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=agent",
            chart.release
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let found = loop {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let on: Vec<Option<Pod>> = nodes
                .iter()
                .map(|n| {
                    list.iter()
                        .find(|p| {
                            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(*n)
                                && p.metadata.deletion_timestamp.is_none()
                        })
                        .cloned()
                })
                .collect();
            if on.iter().all(Option::is_some) {
                break on.into_iter().flatten().collect::<Vec<_>>();
            }
            assert!(
                Instant::now() < deadline,
                "the DaemonSet made no agent Pod on some of {nodes:?} in 60 s: {:?}",
                list.iter()
                    .map(|p| (&p.metadata.name, p.spec.as_ref().map(|s| &s.node_name)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let account = chart.name("ServiceAccount", "agent");
        let mut out = Vec::new();
        for pod in found {
            let kubeconfig = self.token(&chart.namespace, &account, Some(&pod)).await;
            out.push((pod, kubeconfig));
        }
        out
    }

    /// Waits until the authorizer lets a binding's subjects do the first
    /// thing its role's first rule grants.
    async fn wait_bound(&self, chart: &Chart, binding: &Value) {
        let role_name = &binding["roleRef"]["name"];
        let Some(role) = chart.objects.iter().find(|o| {
            o["kind"] == binding["roleRef"]["kind"] && o["metadata"]["name"] == *role_name
        }) else {
            return;
        };
        let rule = &role["rules"][0];
        let (Some(verb), Some(group), Some(resource)) = (
            rule["verbs"][0].as_str(),
            rule["apiGroups"][0].as_str(),
            rule["resources"][0].as_str(),
        ) else {
            return;
        };
        let resource = format!("{group}/{resource}");
        let namespace = binding["metadata"]["namespace"].as_str();
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            if subject["kind"] != "ServiceAccount" {
                continue;
            }
            let user = format!(
                "system:serviceaccount:{}:{}",
                subject["namespace"].as_str().unwrap_or_default(),
                subject["name"].as_str().unwrap_or_default()
            );
            self.wait_allowed(
                &user,
                Access {
                    verb,
                    resource: &resource,
                    namespace,
                    name: rule["resourceNames"][0].as_str(),
                },
            )
            .await;
        }
    }
}
