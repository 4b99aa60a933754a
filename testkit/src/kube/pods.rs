//! Pods without a kubelet: the test creates a Pod on a node and, in the
//! kubelet's place, reports it running and ready with an address (its
//! status subresource). From there the real controllers take over: the
//! endpointslice controller puts it in its Services' EndpointSlices.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::KubeEnv;

impl KubeEnv {
    /// Creates Pod `name` in `namespace` with `labels`, bound to `node`
    /// (`spec.nodeName`: no scheduling), and marks it Running and Ready
    /// with address `ip`, as a kubelet would once its containers started.
    /// Deleted at the end.
    pub async fn ready_pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: Value,
        node: &str,
        ip: &str,
    ) -> Pod {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node,
                // Never pulled: no kubelet runs here.
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                "tolerations": [{"operator": "Exists"}]
            }
        });
        self.create_json("pods", pod).await;
        self.set_pod_ready(namespace, name, ip, true).await
    }

    /// Reports Pod `name` Running with address `ip`, and Ready or not, as
    /// the kubelet does when its readiness probe passes or fails.
    pub async fn set_pod_ready(&self, namespace: &str, name: &str, ip: &str, ready: bool) -> Pod {
        let now = "2026-01-01T00:00:00Z";
        let status = if ready { "True" } else { "False" };
        let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastTransitionTime": now});
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", status),
                condition("Ready", status),
            ],
        }});
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("Pod {namespace}/{name}'s status cannot be set: {e}"))
    }
}
