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
//!
//! Objects are decoded as [`Slim`]: what the parser reads and nothing more,
//! so a Node's images, conditions and system info and every object's
//! managed fields are skipped by the JSON decoder rather than allocated.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::objects::{Origin, Snapshot};
use crate::problem::Problem;

/// The parts of `status` petrel reads: a Node's addresses, a Service's
/// load balancer ingress (`crate::parse`). Others are skipped undecoded.
const KEPT_STATUS: [&str; 2] = ["addresses", "loadBalancer"];

/// Any kind, decoded as far as petrel reads it (see the module
/// documentation); a kube `Resource` like `DynamicObject`, typed by its
/// `ApiResource`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Slim {
    #[serde(deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    spec: Value,
    #[serde(
        default,
        deserialize_with = "slim_status",
        skip_serializing_if = "Value::is_null"
    )]
    status: Value,
    /// Top-level fields of kinds without a spec (an EndpointSlice's
    /// `addressType` and `endpoints`).
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// The metadata petrel reads; managed fields, owner references and the
/// rest are skipped undecoded.
fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        annotations: Option<BTreeMap<String, String>>,
        resource_version: Option<String>,
        uid: Option<String>,
    }
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        labels: m.labels,
        annotations: m.annotations,
        resource_version: m.resource_version,
        uid: m.uid,
        ..ObjectMeta::default()
    })
}

/// [`KEPT_STATUS`] of a status.
fn slim_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    struct Kept;
    impl<'de> serde::de::Visitor<'de> for Kept {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a status object")
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if KEPT_STATUS.contains(&key.as_str()) {
                    out.insert(key, map.next_value()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(Value::Object(out))
        }
    }
    d.deserialize_any(Kept)
}

impl kube::Resource for Slim {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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
    /// Watches the objects of `resource` (its `api_version` and `kind`
    /// name what it lists: list items may come without them); bumps
    /// `generation` whenever what petrel reads of the kind changed.
    pub(crate) fn start(
        client: kube::Client,
        resource: ApiResource,
        generation: Arc<watch::Sender<u64>>,
    ) -> (ParsedKind, JoinHandle<()>) {
        let api: Api<Slim> = Api::all_with(client, &resource);
        let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
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
                        tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
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
                            let (key, parsed) = parse(o, &api_version, &kind);
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
                            let (key, parsed) = parse(o, &api_version, &kind);
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
fn parse(o: Slim, api_version: &str, kind: &str) -> (Key, Parsed) {
    let key = key_of(&o);
    let origin = Origin::api(kind, o.metadata.namespace.as_deref(), &key.1);
    let mut parsed = Parsed::default();
    let Slim {
        metadata,
        spec,
        status,
        rest,
    } = o;
    // Moved, not copied: only the metadata is serialized again.
    let mut m = rest;
    match serde_json::to_value(metadata) {
        Ok(meta) => {
            m.insert("metadata".into(), meta);
        }
        Err(e) => {
            parsed.problems.push(Problem {
                origin: origin.to_string(),
                object: Some(format!("{kind}/{}", key.1)),
                field: Some("metadata".into()),
                message: format!("cannot be read: {e}"),
            });
            return (key, parsed);
        }
    }
    m.insert("spec".into(), spec);
    m.insert("status".into(), status);
    m.insert("apiVersion".into(), Value::String(api_version.into()));
    m.insert("kind".into(), Value::String(kind.into()));
    crate::add_object(
        &Value::Object(m),
        origin,
        &mut parsed.part,
        &mut parsed.problems,
    );
    (key, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Node as the API server sends it, with what petrel does not read.
    fn node(annotations: &[(&str, &str)], pod_cidr: &str, heartbeat: &str) -> Slim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "n1",
                "resourceVersion": "7",
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"podCIDRs": [pod_cidr]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}],
                "images": [{"names": ["registry.example/a:1"], "sizeBytes": 1}],
                "nodeInfo": {"kubeletVersion": "v1.34.4"},
            },
        }))
        .expect("a Node")
    }

    #[test]
    fn only_what_petrel_reads_is_decoded_and_makes_a_difference() {
        let n = node(&[], "10.1.0.0/24", "2026-12-05T10:00:00Z");
        assert!(n.metadata.managed_fields.is_none());
        assert_eq!(
            n.status
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["addresses".to_string()])
        );
        let (_, plain) = parse(n, "v1", "Node");
        assert_eq!(plain.part.nodes.len(), 1, "{plain:?}");
        assert_eq!(plain.part.nodes[0].internal_ips.len(), 1, "{plain:?}");
        // A foreign annotation, a heartbeat: the same to petrel.
        let beat = node(
            &[("example.com/touch", "1")],
            "10.1.0.0/24",
            "2026-12-05T10:00:10Z",
        );
        assert_eq!(parse(beat, "v1", "Node").1, plain);
        // What petrel reads: its own annotation, the pod CIDRs.
        let asn = node(&[(crds::AS_NUMBER_ANNOTATION, "65003")], "10.1.0.0/24", "");
        assert_ne!(parse(asn, "v1", "Node").1, plain);
        let moved = node(&[], "10.2.0.0/24", "");
        assert_ne!(parse(moved, "v1", "Node").1, plain);
    }

    #[test]
    fn services_and_slices_keep_what_the_parser_reads() {
        let svc: Slim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.10"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}, "conditions": []},
        }))
        .expect("a Service");
        let (key, p) = parse(svc, "v1", "Service");
        assert_eq!(key, ("shop".to_string(), "web".to_string()));
        assert_eq!(p.part.services.len(), 1, "{p:?}");
        assert_eq!(
            p.part.services[0].load_balancer_ips,
            vec!["198.51.100.7".parse::<std::net::IpAddr>().expect("ip")]
        );
        let slice: Slim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "nodeName": "n1"}],
        }))
        .expect("an EndpointSlice");
        let (_, p) = parse(slice, "discovery.k8s.io/v1", "EndpointSlice");
        assert_eq!(p.part.endpoint_slices.len(), 1, "{p:?}");
        assert_eq!(p.part.endpoint_slices[0].endpoints.len(), 1, "{p:?}");
    }

    #[test]
    fn an_object_petrel_cannot_use_is_its_problem() {
        let bad = node(
            &[(crds::AS_NUMBER_ANNOTATION, "not a number")],
            "10.1.0.0/24",
            "",
        );
        let (key, parsed) = parse(bad, "v1", "Node");
        assert_eq!(key, (String::new(), "n1".to_string()));
        assert_eq!(parsed.problems.len(), 1, "{parsed:?}");
        assert!(
            parsed.problems[0].to_string().contains("as-number"),
            "{parsed:?}"
        );
    }
}
