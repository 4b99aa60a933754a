//! One kind watched from the API server and kept as what petrel makes of
//! each object (what [`crate::add_object`] reads from it), not as the
//! object.
//!
//! Most watch events change nothing petrel reads: a kubelet's heartbeat in
//! a Node's status, another controller's annotation, another agent's entry
//! in a BGPPeer's status. Each costs one parse of the object that changed
//! and a comparison with what it was; only an event that changes what the
//! planner would see wakes the agent, which then reads every kind's parsed
//! objects from here instead of parsing the whole cluster again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::objects::{Origin, Snapshot};
use crate::problem::Problem;

/// An object's namespace (empty for cluster-scoped kinds) and name: the
/// order objects are planned in, so plans never depend on watch order.
type Key = (String, String);

/// What petrel makes of one object: its part of a snapshot, or the problem
/// that kept it out.
#[derive(Debug, Clone, PartialEq, Default)]
struct Parsed {
    part: Snapshot,
    problems: Vec<Problem>,
}

/// The objects of one kind, parsed, as the watch last had them.
pub(crate) struct ParsedKind {
    objects: Arc<Mutex<BTreeMap<Key, Parsed>>>,
    listed: Arc<AtomicBool>,
}

impl ParsedKind {
    /// Watches `api` (`api_version` and `kind` name what it lists: list
    /// items may come without them); bumps `generation` whenever what
    /// petrel reads of the kind changed.
    pub(crate) fn start<K>(
        api: Api<K>,
        api_version: &'static str,
        kind: &'static str,
        generation: Arc<watch::Sender<u64>>,
    ) -> (ParsedKind, JoinHandle<()>)
    where
        K: kube::Resource + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static,
    {
        let objects: Arc<Mutex<BTreeMap<Key, Parsed>>> = Arc::default();
        let listed = Arc::new(AtomicBool::new(false));
        let shared = (Arc::clone(&objects), Arc::clone(&listed));
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let task = tokio::spawn(async move {
            let (objects, listed) = shared;
            let mut stream = std::pin::pin!(stream);
            // A relist's objects, kept apart until it is complete: the
            // store never holds a partial list.
            let mut relist: Option<BTreeMap<Key, Parsed>> = None;
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    // The backoff wrapper retries; say what happened once per try.
                    Err(e) => {
                        tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                        continue;
                    }
                };
                let changed = {
                    let mut objects = objects.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        watcher::Event::Init => {
                            relist = Some(BTreeMap::new());
                            false
                        }
                        watcher::Event::InitApply(o) => {
                            let (key, parsed) = parse(&o, api_version, kind);
                            relist.get_or_insert_default().insert(key, parsed);
                            false
                        }
                        watcher::Event::InitDone => {
                            let fresh = relist.take().unwrap_or_default();
                            let first = !listed.swap(true, Ordering::AcqRel);
                            let differs = *objects != fresh;
                            *objects = fresh;
                            first || differs
                        }
                        watcher::Event::Apply(o) => {
                            let (key, parsed) = parse(&o, api_version, kind);
                            if objects.get(&key) == Some(&parsed) {
                                false
                            } else {
                                objects.insert(key, parsed);
                                true
                            }
                        }
                        watcher::Event::Delete(o) => objects.remove(&key_of(&o)).is_some(),
                    }
                };
                if changed {
                    generation.send_modify(|g| *g += 1);
                }
            }
        });
        (ParsedKind { objects, listed }, task)
    }

    /// Whether the kind has been listed once.
    pub(crate) fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// Adds every object of the kind, in namespace and name order, and the
    /// problems of those petrel could not use.
    pub(crate) fn add_to(&self, snap: &mut Snapshot, problems: &mut Vec<Problem>) {
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        for parsed in objects.values() {
            snap.extend_from(&parsed.part);
            problems.extend(parsed.problems.iter().cloned());
        }
    }
}

fn key_of<K: kube::Resource>(o: &K) -> Key {
    let meta = o.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// One object through the parsing every source shares.
fn parse<K: kube::Resource + Serialize>(o: &K, api_version: &str, kind: &str) -> (Key, Parsed) {
    let key = key_of(o);
    let namespace = o.meta().namespace.as_deref();
    let origin = Origin::api(kind, namespace, &key.1);
    let mut parsed = Parsed::default();
    match serde_json::to_value(o) {
        Ok(mut value) => {
            if let Value::Object(m) = &mut value {
                m.insert("apiVersion".into(), Value::String(api_version.into()));
                m.insert("kind".into(), Value::String(kind.into()));
            }
            crate::add_object(&value, origin, &mut parsed.part, &mut parsed.problems);
        }
        Err(e) => parsed.problems.push(Problem {
            origin: origin.to_string(),
            object: Some(format!("{kind}/{}", key.1)),
            field: None,
            message: format!("cannot be read: {e}"),
        }),
    }
    (key, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(annotations: &[(&str, &str)], pod_cidr: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "n1",
                "resourceVersion": "7",
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            },
            "spec": {"podCIDRs": [pod_cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-05T10:00:00Z"}]},
        }))
        .expect("a Node")
    }

    #[test]
    fn only_what_petrel_reads_makes_a_difference() {
        let (_, plain) = parse(&node(&[], "10.1.0.0/24"), "v1", "Node");
        assert_eq!(plain.part.nodes.len(), 1, "{plain:?}");
        // A foreign annotation, a heartbeat: the same to petrel.
        let mut beat = node(&[("example.com/touch", "1")], "10.1.0.0/24");
        if let Some(s) = &mut beat.status
            && let Some(c) = &mut s.conditions
        {
            c[0].last_heartbeat_time = None;
        }
        beat.metadata.resource_version = Some("8".into());
        assert_eq!(parse(&beat, "v1", "Node").1, plain);
        // What petrel reads: its own annotation, the pod CIDRs.
        let asn = node(&[(crds::AS_NUMBER_ANNOTATION, "65003")], "10.1.0.0/24");
        assert_ne!(parse(&asn, "v1", "Node").1, plain);
        assert_ne!(parse(&node(&[], "10.2.0.0/24"), "v1", "Node").1, plain);
    }

    #[test]
    fn an_object_petrel_cannot_use_is_its_problem() {
        let bad = node(
            &[(crds::AS_NUMBER_ANNOTATION, "not a number")],
            "10.1.0.0/24",
        );
        let (key, parsed) = parse(&bad, "v1", "Node");
        assert_eq!(key, (String::new(), "n1".to_string()));
        assert_eq!(parsed.problems.len(), 1, "{parsed:?}");
        assert!(
            parsed.problems[0].to_string().contains("as-number"),
            "{parsed:?}"
        );
    }
}
