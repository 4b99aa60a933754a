//! The cluster-wide status of petrel's objects: each object's `Ready`
//! condition, a Warning Event when one becomes invalid, and the BGPPeer
//! `summary` column. Run by the leading `petrel controller` ([`run`], a
//! leader task in `controller::leader_tasks`).
//!
//! ```text
//!  API server ──watch──► stores (BGPConfiguration, BGPPeer, BGPFilter,
//!                        BGPAdvertisement, IPPool)
//!                          │ on change
//!                          ▼
//!              validate(): the agent's own parsing (model::add_object)
//!              and checks (planner), node-independent
//!                          │ per object: Ready, summary
//!                          ▼ only what differs from the object's status
//!              server-side apply on /status (manager petrel-controller),
//!              Event on the object when it becomes invalid
//! ```
//!
//! Validation uses the code the agents plan with, so the condition says
//! what every agent will do with the object. Checks that depend on a node
//! (which peers select it, its router ID, Secrets only agents read) stay
//! with the agents, which log them and report them in their BGPPeer entries'
//! `lastError`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crds::status::{
    CONDITION_READY, REASON_INVALID, REASON_MISSING_REFERENCE, REASON_NOT_USED, REASON_VALID,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use model::{Origin, Problem, Snapshot};

/// The field manager of the controller's status writes.
pub const FIELD_MANAGER: &str = "petrel-controller";

/// The kinds whose `Ready` condition is kept here, with their plurals.
/// (LoadBalancerPool's status is the address allocator's.)
const KINDS: [(&str, &str); 6] = [
    ("BGPConfiguration", "bgpconfigurations"),
    ("BGPPeer", "bgppeers"),
    ("BGPFilter", "bgpfilters"),
    ("BFDProfile", "bfdprofiles"),
    ("BGPAdvertisement", "bgpadvertisements"),
    ("IPPool", "ippools"),
];

/// The longest condition message (the API allows 32768 bytes; a reader
/// wants less).
const MAX_MESSAGE: usize = 2000;
/// A write that failed is retried after this, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The same status is not written again within this time, even if the
/// object still differs (a guard against a write loop with a server that
/// changes what it stores).
const REWRITE_GUARD: Duration = Duration::from_secs(60);

/// What petrel makes of one object: its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Ready` is `True`.
    pub ok: bool,
    /// `Valid`, `InvalidField`, `MissingReference` or `NotUsed`.
    pub reason: &'static str,
    /// What is wrong, naming the field (or that the object is in use).
    pub message: String,
}

impl Verdict {
    fn valid() -> Verdict {
        Verdict {
            ok: true,
            reason: REASON_VALID,
            message: "the object is valid".into(),
        }
    }
}

/// Keeps the `Ready` condition of every petrel object (and the BGPPeer
/// `summary`) up to date until the future is dropped. Cancel-safe: dropping
/// it stops its watches; a write cut short is made again by the next
/// leader, as everything is computed from the objects themselves.
///
/// Errors from the API server are logged and retried; this never returns
/// an error today (the `Result` is for the caller's `select!`).
pub async fn run(ctx: crate::LeaderContext) -> Result<(), crate::ControllerError> {
    let client = ctx.client.clone();
    let (tx, mut generation) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let mut watches = Watches::default();
    for (kind, plural) in KINDS {
        let ar = resource(kind, plural);
        let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
        let writer = reflector::store::Writer::new(ar);
        let (store, task) = model::kube::reflect(api, Default::default(), writer, kind, tx.clone());
        watches.tasks.push(task);
        watches.stores.push((kind, plural, store));
    }
    // A verdict from a partial view would call references missing that are
    // only not listed yet.
    loop {
        let all = async {
            for (_, _, s) in &watches.stores {
                let _ = s.wait_until_ready().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_ok()
        {
            break;
        }
        let missing: Vec<&str> = watches
            .stores
            .iter()
            .filter(|(_, _, s)| !model::kube::ready(s))
            .map(|(k, _, _)| *k)
            .collect();
        tracing::warn!(missing = %missing.join(", "), "waiting for the API server's first lists of petrel's kinds");
    }
    let mut writer = StatusWriter {
        client: client.clone(),
        recorder: ctx.recorder.clone(),
        leadership: ctx.leadership.clone(),
        written: HashMap::new(),
        retry: HashMap::new(),
        denied: HashSet::new(),
    };
    loop {
        generation.borrow_and_update();
        let objects = watches.objects();
        let verdicts = validate(&objects);
        for (kind, plural, obj) in &objects {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let verdict = verdicts
                .get(&(kind.to_string(), name.clone()))
                .cloned()
                .unwrap_or_else(Verdict::valid);
            writer.reconcile(kind, plural, obj, &verdict).await;
        }
        let retry = writer.next_retry();
        tokio::select! {
            r = generation.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                // Changes come in bursts (an apply, then our own status
                // write): take them as one.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// The reflectors, stopped when dropped (so [`run`] is cancel-safe).
#[derive(Default)]
struct Watches {
    stores: Vec<(&'static str, &'static str, Store<DynamicObject>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Watches {
    /// Every object, with its kind and plural, sorted by kind and name.
    fn objects(&self) -> Vec<(&'static str, &'static str, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (kind, plural, store) in &self.stores {
            let mut objects = store.state();
            objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            out.extend(objects.into_iter().map(|o| (*kind, *plural, o)));
        }
        out
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crds::GROUP, crds::VERSION, kind),
        plural,
    )
}

/// Whether an error is the API server's answer with this HTTP code.
fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Writes conditions that changed, and the Events that go with them.
struct StatusWriter {
    client: kube::Client,
    recorder: Recorder,
    /// The term this runs in: nothing is written once it is over.
    leadership: crate::lease::Leadership,
    /// Per object, the last status body written and when.
    written: HashMap<(String, String), (Value, Instant)>,
    /// Per object, failures in a row and when to try again.
    retry: HashMap<(String, String), (u32, Instant)>,
    /// Kinds whose 403 was logged.
    denied: HashSet<String>,
}

impl StatusWriter {
    fn next_retry(&self) -> Option<Instant> {
        self.retry.values().map(|(_, at)| *at).min()
    }

    /// Brings one object's status in line with its verdict.
    async fn reconcile(
        &mut self,
        kind: &str,
        plural: &str,
        obj: &DynamicObject,
        verdict: &Verdict,
    ) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let key = (kind.to_string(), name.clone());
        let generation = obj.metadata.generation;
        let status = &obj.data["status"];
        let current = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == CONDITION_READY));
        let state = if verdict.ok { "True" } else { "False" };
        let same_condition = current.is_some_and(|c| {
            c["status"] == state
                && c["reason"] == verdict.reason
                && c["message"] == verdict.message.as_str()
                && c["observedGeneration"].as_i64() == generation
        });
        let summary = (kind == "BGPPeer").then(|| {
            serde_json::from_value::<crds::BgpPeerStatus>(status.clone())
                .unwrap_or_default()
                .summarize()
        });
        let same_summary = summary
            .as_ref()
            .is_none_or(|s| status["summary"] == s.as_str());
        if same_condition && same_summary {
            self.written.remove(&key);
            self.retry.remove(&key);
            return;
        }
        if let Some((_, at)) = self.retry.get(&key)
            && *at > Instant::now()
        {
            return;
        }
        // The transition time says since when the status holds.
        let since = match current {
            Some(c) if c["status"] == state => c["lastTransitionTime"].clone(),
            _ => json!(
                Timestamp::from_second(Timestamp::now().as_second())
                    .unwrap_or_else(|_| Timestamp::now())
                    .to_string()
            ),
        };
        let mut condition = json!({
            "type": CONDITION_READY, "status": state, "reason": verdict.reason,
            "message": verdict.message, "lastTransitionTime": since,
        });
        if let Some(g) = generation {
            condition["observedGeneration"] = json!(g);
        }
        let mut body = json!({
            "apiVersion": crds::API_VERSION, "kind": kind, "metadata": {"name": name},
            "status": {"conditions": [condition]},
        });
        if let Some(s) = &summary {
            body["status"]["summary"] = json!(s);
        }
        if let Some((last, at)) = self.written.get(&key)
            && *last == body
            && at.elapsed() < REWRITE_GUARD
        {
            return;
        }
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource(kind, plural));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // The task is aborted when the term ends; a write must not slip in
        // between the end and the abort.
        if !self.leadership.is_leading() {
            return;
        }
        match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                tracing::info!(kind, name, ready = verdict.ok, reason = verdict.reason, message = %verdict.message, "Ready condition written");
                self.written.insert(key.clone(), (body, Instant::now()));
                self.retry.remove(&key);
            }
            // Deleted meanwhile: the watch will say so.
            Err(e) if is_code(&e, 404) => {
                self.retry.remove(&key);
                return;
            }
            Err(e) => {
                let failures = self.retry.get(&key).map_or(0, |(f, _)| *f) + 1;
                let wait = if is_code(&e, 403) {
                    if self.denied.insert(kind.to_string()) {
                        tracing::warn!(kind, error = %e, "may not write status (the controller's ClusterRole?); retrying every 5 minutes");
                    }
                    Duration::from_secs(300)
                } else {
                    tracing::warn!(kind, name, error = %e, failures, "cannot write status; retrying");
                    FIRST_BACKOFF
                        .saturating_mul(1 << failures.min(7))
                        .min(MAX_BACKOFF)
                };
                self.retry.insert(key, (failures, Instant::now() + wait));
                return;
            }
        }
        // An Event when the object becomes invalid (or wrong in a new way);
        // not for every write of the same problem.
        let newly_invalid = !verdict.ok
            && current
                .is_none_or(|c| c["status"] != "False" || c["message"] != verdict.message.as_str());
        if newly_invalid {
            let reference = ObjectReference {
                api_version: Some(crds::API_VERSION.into()),
                kind: Some(kind.into()),
                name: Some(name.clone()),
                uid: obj.metadata.uid.clone(),
                resource_version: obj.metadata.resource_version.clone(),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: verdict.reason.into(),
                note: Some(truncate(&verdict.message, 1000)),
                action: "Validate".into(),
                secondary: None,
            };
            if !self.leadership.is_leading() {
                return;
            }
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(kind, name, error = %e, "cannot record the Event");
            }
        }
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Why a problem makes an object not ready.
fn reason_of(p: &Problem) -> &'static str {
    let m = p.message.as_str();
    if m.starts_with("ignored: ") {
        REASON_NOT_USED
    } else if m.contains("does not exist")
        || m.starts_with("no BGPPeer is named")
        || m.starts_with("no Secret named")
    {
        REASON_MISSING_REFERENCE
    } else {
        REASON_INVALID
    }
}

/// The verdict of every object that is not simply valid, by (kind, name):
/// the same parsing and checks the agents plan with, for what does not
/// depend on a node.
pub fn validate(
    objects: &[(&str, &str, Arc<DynamicObject>)],
) -> BTreeMap<(String, String), Verdict> {
    let mut snapshot = Snapshot::default();
    let mut problems = Vec::new();
    let mut pools = Vec::new();
    for (kind, _, obj) in objects {
        let name = obj.metadata.name.clone().unwrap_or_default();
        if *kind == "IPPool" {
            pools.push((name, obj.data["spec"].clone()));
            continue;
        }
        model::kube::add_all(
            std::slice::from_ref(obj),
            crds::API_VERSION,
            kind,
            &mut snapshot,
            &mut problems,
        );
    }
    // The planner, for the BGPConfiguration (and which one is used) and
    // the BGPAdvertisements, on a node of its own: none of its node checks
    // can fail, so what it reports is about the objects.
    const NODE: &str = "petrel-validation";
    let mut planning = snapshot.clone();
    planning.nodes = vec![model::Node {
        name: NODE.into(),
        internal_ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
        ..model::Node::default()
    }];
    let (plan, more) = planner::plan(&planning, NODE);
    problems.extend(more.into_iter().filter(|p| {
        p.object.as_deref().is_some_and(|o| {
            o.starts_with("BGPConfiguration/") || o.starts_with("BGPAdvertisement/")
        })
    }));
    let local_asn = plan.as_ref().map(|p| p.speaker.asn);
    // Every peer, whichever nodes it selects.
    for p in &snapshot.peers {
        let problem = |field: String, message: String| Problem {
            origin: p.origin.to_string(),
            object: Some(format!("BGPPeer/{}", p.name)),
            field: Some(field),
            message,
        };
        if let Some(Err(e)) = p
            .spec
            .node_selector
            .as_ref()
            .map(crds::LabelSelector::validate)
        {
            problems.push(problem("spec.nodeSelector".into(), e));
        }
        // Without a usable configuration there is no local ASN to compare
        // with: the checks that need one are left out.
        let asn = local_asn.or(p.spec.as_number).unwrap_or(1);
        if let Err(model::FieldError { field, reason }) =
            planner::neighbor(p, &snapshot, asn, Ipv4Addr::UNSPECIFIED)
        {
            let needs_asn = field == "spec.routeReflectorClient" || field == "spec.ebgpMultihop";
            // Secrets (and password files) are the agents' to read.
            let node_side = field.starts_with("spec.password.");
            let unknowable = node_side || (needs_asn && local_asn.is_none());
            if !unknowable {
                problems.push(problem(field, reason));
            }
        }
    }
    for f in &snapshot.filters {
        if let Err(message) = planner::policies(std::slice::from_ref(&f.name), &snapshot) {
            // "BGPFilter "x": spec.export[0].match.community: ..." on the
            // filter itself: the field is the part after the name.
            let own = message
                .strip_prefix(&format!("BGPFilter {:?}: ", f.name))
                .unwrap_or(&message)
                .to_string();
            let (field, message) = match own.split_once(": ") {
                Some((field, rest)) => (Some(field.to_string()), rest.to_string()),
                None => (None, own),
            };
            problems.push(Problem {
                origin: f.origin.to_string(),
                object: Some(format!("BGPFilter/{}", f.name)),
                field,
                message,
            });
        }
    }
    for (name, spec) in pools {
        let origin = Origin::api("IPPool", None, &name).to_string();
        let object = Some(format!("IPPool/{name}"));
        let checked = serde_path_to_error::deserialize::<_, crds::IpPoolSpec>(spec)
            .map_err(|e| {
                let path = e.path().to_string();
                (format!("spec.{path}"), e.into_inner().to_string())
            })
            .and_then(|s| s.validate().map_err(|e| (e.field, e.message)));
        if let Err((field, message)) = checked {
            problems.push(Problem {
                origin,
                object,
                field: Some(field),
                message,
            });
        }
    }
    let mut out: BTreeMap<(String, String), Vec<&Problem>> = BTreeMap::new();
    for p in &problems {
        let Some((kind, name)) = p.object.as_deref().and_then(|o| o.split_once('/')) else {
            continue;
        };
        out.entry((kind.to_string(), name.to_string()))
            .or_default()
            .push(p);
    }
    out.into_iter()
        .map(|(key, ps)| {
            // The most serious reason wins: a wrong field over a missing
            // reference over "not used".
            let reasons: Vec<&str> = ps.iter().map(|p| reason_of(p)).collect();
            let reason = [REASON_INVALID, REASON_MISSING_REFERENCE, REASON_NOT_USED]
                .into_iter()
                .find(|r| reasons.contains(r))
                .unwrap_or(REASON_INVALID);
            let message = ps
                .iter()
                .map(|p| match &p.field {
                    Some(f) => format!("{f}: {}", p.message),
                    None => p.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            let verdict = Verdict {
                ok: false,
                reason,
                message: truncate(&message, MAX_MESSAGE),
            };
            (key, verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<(&'static str, &'static str, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for doc in yaml.split("\n---\n") {
            let v: Value = serde_saphyr::from_str(doc).expect("yaml");
            let kind = v["kind"].as_str().expect("kind").to_string();
            let (k, p) = KINDS
                .iter()
                .find(|(k, _)| *k == kind)
                .copied()
                .expect("a petrel kind");
            let o: DynamicObject = serde_json::from_value(v).expect("object");
            out.push((k, p, Arc::new(o)));
        }
        out
    }

    const CONFIG: &str = "apiVersion: petrel.dev/v1alpha1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65001}";

    #[test]
    fn invalid_objects_get_the_field_and_the_reason() {
        let yaml = format!(
            "{CONFIG}\n---\n{}",
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPConfiguration
metadata: {name: other}
spec: {asNumber: 65002}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: ok}
spec: {peerIP: 10.0.0.254, asNumber: 65000, nodeSelector: {matchLabels: {rack: r9}}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: keepalive}
spec: {peerIP: 10.0.0.253, asNumber: 65000, holdTime: 9s, keepaliveTime: 5s}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: missing}
spec: {peerIP: 10.0.0.252, asNumber: 65000, filters: [nope], password: {secretKeyRef: {name: s, key: k}}}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: unparsable}
spec: {peerIP: 10.0.0.300, asNumber: 65000}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: bad}
spec: {export: [{match: {community: "65000:x"}}]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPAdvertisement
metadata: {name: ad}
spec: {peers: [ghost]}
---
apiVersion: petrel.dev/v1alpha1
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, blockSize: 8}"#
        );
        let v = validate(&objects(&yaml));
        let get = |k: &str, n: &str| v.get(&(k.to_string(), n.to_string())).cloned();
        assert_eq!(get("BGPConfiguration", "default"), None, "{v:#?}");
        assert_eq!(
            get("BGPPeer", "ok"),
            None,
            "another node's peer is valid too"
        );
        let other = get("BGPConfiguration", "other").expect("other");
        assert_eq!(other.reason, REASON_NOT_USED);
        let k = get("BGPPeer", "keepalive").expect("keepalive");
        assert_eq!(k.reason, REASON_INVALID);
        assert!(
            k.message.starts_with("spec.keepaliveTime: "),
            "{}",
            k.message
        );
        let m = get("BGPPeer", "missing").expect("missing");
        assert_eq!(m.reason, REASON_MISSING_REFERENCE);
        assert!(
            m.message
                .starts_with("spec.filters: BGPFilter \"nope\" does not exist"),
            "{}; the Secret is the agents' to check",
            m.message
        );
        let u = get("BGPPeer", "unparsable").expect("unparsable");
        assert!(u.message.starts_with("spec.peerIP: "), "{}", u.message);
        let f = get("BGPFilter", "bad").expect("bad filter");
        assert!(
            f.message.starts_with("spec.export[0].match.community: "),
            "{}",
            f.message
        );
        let a = get("BGPAdvertisement", "ad").expect("advertisement");
        assert_eq!(a.reason, REASON_MISSING_REFERENCE);
        assert!(a.message.starts_with("spec.peers[0]: "), "{}", a.message);
        let p = get("IPPool", "pods").expect("pool");
        assert!(p.message.starts_with("spec.blockSize: "), "{}", p.message);
    }

    #[test]
    fn a_peer_naming_an_invalid_filter_is_invalid_itself() {
        let yaml = format!(
            "{CONFIG}\n---\n{}",
            r#"apiVersion: petrel.dev/v1alpha1
kind: BGPFilter
metadata: {name: bad}
spec: {import: [{match: {prefix: {cidr: 10.0.0.0/8, ge: 4}}}]}
---
apiVersion: petrel.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.254, asNumber: 65000, filters: [bad]}"#
        );
        let v = validate(&objects(&yaml));
        let tor = &v[&("BGPPeer".to_string(), "tor".to_string())];
        assert_eq!(tor.reason, REASON_INVALID);
        assert!(
            tor.message.contains("spec.import[0].match.prefix"),
            "{}",
            tor.message
        );
        assert!(v.contains_key(&("BGPFilter".to_string(), "bad".to_string())));
    }
}
