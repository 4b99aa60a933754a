//! BGPPeer status entries of Nodes that are gone: given up in the name of
//! the agent that wrote them. Run by the leading `petrel controller` ([`run`]).
//!
//! Each agent writes its node's entries of `BGPPeer.status.nodes` by
//! server-side apply with a field manager of its own
//! ([`crds::status::agent_field_manager`]). A deleted node's agent is gone
//! with it, and its entries would stay for ever, telling `kubectl get
//! bgppeers` about sessions no one has. This task applies an empty status
//! as that node's manager: the API server then removes exactly the fields
//! only that manager owned, so an entry another agent writes at the same
//! moment is never touched (no read-modify-write race).
//!
//! An entry is stale once its node has been missing from the Node list for
//! [`GRACE`]: a Node the controller has not seen yet (created a moment ago)
//! keeps its entries. An agent run with a `--node` that has no Node object
//! has its entries removed too: a node petrel peers for exists as a Node.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a node must be missing before its entries go.
pub const GRACE: Duration = Duration::from_secs(10);
/// A failed removal is tried again after this.
const RETRY: Duration = Duration::from_secs(60);

/// The watches, stopped when the task's future is dropped (end of term).
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Removes the BGPPeer status entries of deleted Nodes until the future is
/// dropped. Errors are logged and retried; this never returns an error
/// today (the `Result` is for the caller's `select!`).
pub async fn run(ctx: crate::LeaderContext) -> Result<(), crate::ControllerError> {
    let client = ctx.client.clone();
    let (tx, mut generation) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let (nodes, t1) = model::kube::reflect(
        Api::<Node>::all(client.clone()),
        Default::default(),
        Default::default(),
        "Node",
        tx.clone(),
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crds::GROUP, crds::VERSION, "BGPPeer"),
        "bgppeers",
    );
    let peers_api = Api::<DynamicObject>::all_with(client.clone(), &ar);
    let (peers, t2) = model::kube::reflect(
        peers_api.clone(),
        Default::default(),
        reflector::store::Writer::new(ar.clone()),
        "BGPPeer",
        tx.clone(),
    );
    let _watches = Watches(vec![t1, t2]);
    // A node missing from a list not read yet is not a deleted node.
    let _ = nodes.wait_until_ready().await;
    let _ = peers.wait_until_ready().await;
    // (BGPPeer, node) → when the node was first seen missing.
    let mut missing_since: HashMap<(String, String), Instant> = HashMap::new();
    // (BGPPeer, node) → when a removal may be tried again.
    let mut failed: HashMap<(String, String), Instant> = HashMap::new();
    // Pairs removed once already (a second removal means someone else
    // owns the entries too).
    let mut applied: HashSet<(String, String)> = HashSet::new();
    loop {
        generation.borrow_and_update();
        let now = Instant::now();
        let stale = stale_entries(&peers, &nodes);
        missing_since.retain(|k, _| stale.contains(k));
        failed.retain(|k, _| stale.contains(k));
        applied.retain(|k| stale.contains(k));
        for key in &stale {
            let since = *missing_since.entry(key.clone()).or_insert(now);
            if now.duration_since(since) < GRACE || failed.get(key).is_some_and(|t| now < *t) {
                continue;
            }
            if !ctx.leadership.is_leading() {
                return Ok(());
            }
            let (peer, node) = key;
            let params = PatchParams::apply(&crds::status::agent_field_manager(node));
            let body = json!({
                "apiVersion": crds::API_VERSION,
                "kind": "BGPPeer",
                "metadata": {"name": peer},
                "status": {},
            });
            match peers_api
                .patch_status(peer, &params, &Patch::Apply(&body))
                .await
            {
                // Still there after a removal that succeeded: another
                // manager owns them too (an edit by hand), and an apply in
                // the agent's name cannot remove them. Said, not repeated.
                Ok(_) if applied.contains(key) => {
                    tracing::warn!(bgppeer = %peer, %node, manager = %crds::status::agent_field_manager(node), "the status entries of a node that is gone remain: another field manager owns them as well; remove them by hand");
                    failed.insert(key.clone(), now + Duration::from_secs(3600));
                }
                Ok(_) => {
                    tracing::info!(bgppeer = %peer, %node, "removed the status entries of a node that is gone");
                    applied.insert(key.clone());
                    failed.insert(key.clone(), now + RETRY);
                }
                Err(e) => {
                    tracing::warn!(bgppeer = %peer, %node, error = %e, "cannot remove the status entries of a node that is gone; trying again later");
                    failed.insert(key.clone(), now + RETRY);
                }
            }
        }
        // Entries inside their grace period are looked at again once it
        // is over, with no change needed to wake this.
        let wake = missing_since
            .values()
            .map(|t| *t + GRACE)
            .chain(failed.values().copied())
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            r = generation.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The (BGPPeer, node) pairs whose status has entries of a node that is
/// not in `nodes`.
fn stale_entries(peers: &Store<DynamicObject>, nodes: &Store<Node>) -> BTreeSet<(String, String)> {
    let known: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let peers: Vec<(String, serde_json::Value)> = peers
        .state()
        .iter()
        .map(|p| {
            (
                p.name_any(),
                p.data.get("status").cloned().unwrap_or_default(),
            )
        })
        .collect();
    stale_in(&peers, &known)
}

/// [`stale_entries`] over (name, status) pairs.
fn stale_in(
    peers: &[(String, serde_json::Value)],
    known: &HashSet<String>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (peer, status) in peers {
        let entries = status.get("nodes").and_then(|n| n.as_array());
        for node in entries
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("node")?.as_str())
        {
            if !known.contains(node) {
                out.insert((peer.clone(), node.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_unknown_nodes_are_stale_and_only_those() {
        let peers = vec![
            (
                "tor".to_string(),
                json!({"nodes": [
                    {"node": "n1", "address": "192.0.2.1", "state": "Established"},
                    {"node": "gone", "address": "192.0.2.1", "state": "Active"},
                    {"node": "gone", "address": "2001:db8::1", "state": "Active"},
                ]}),
            ),
            ("rr".to_string(), json!({"nodes": [{"node": "n1"}]})),
            ("fresh".to_string(), json!(null)),
            ("odd".to_string(), json!({"nodes": "not a list"})),
        ];
        let known: HashSet<String> = ["n1".to_string()].into();
        let stale = stale_in(&peers, &known);
        assert_eq!(
            stale,
            [("tor".to_string(), "gone".to_string())].into(),
            "one pair per BGPPeer and node, whatever the addresses"
        );
    }
}
