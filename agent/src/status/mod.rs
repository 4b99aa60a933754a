//! What the agent reports to the API server (`--source kube` only): its own
//! node's state, and nothing else's.
//!
//! ```text
//!  agent loop ── Applied (plan, problems) ──watch──┐
//!  speaker ───── peer table ───────────────watch──┼─► report task: desired objects
//!                (+ explain per Service IP)        │        │
//!                                                  │        ▼  per object: changed?
//!                                                  │           due? (rate limit, backoff)
//!                                                  └──────► server-side apply, /status
//! ```
//!
//! Three kinds of object, all by server-side apply with the field manager
//! `petrel-agent/NODE`, so agents never overwrite each other:
//!
//! - each BGPPeer this node peers with: its entries of `status.nodes` (a list
//!   keyed by node and address, so each agent owns its own items; entries it
//!   stops applying disappear);
//! - its Node: the condition `PetrelBGPReady`;
//! - its `BGPNodeStatus` (created with an ownerReference to the Node): its
//!   sessions, and for each Service IP whether it is advertised, to which
//!   peers, and if not, why.
//!
//! Writes are level-triggered and rate-limited per object: an object is
//! written only when its content changed, at most every
//! [`SIGNIFICANT_INTERVAL`], the first time after a random delay (so a
//! cluster's agents starting together do not write together). Changes that
//! matter less (prefix counters, a down session going from Connect to Active
//! and back, its last error) wait [`MINOR_INTERVAL`]; whether a session is
//! Established never waits longer than the significant interval. Failed
//! writes are retried with backoff; a 403 is logged once per kind and the
//! agent goes on routing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use bgpd::speaker::{NeighborAddress, PeerStatus, Speaker};
use crds::status::{CONDITION_READY, NODE_CONDITION_BGP_READY};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use model::{Problem, Snapshot};
use planner::Plan;
use planner::advertise::Intent;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

mod objects;
use objects::*;

/// The shortest time between two writes of one object.
pub const SIGNIFICANT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a change that matters less (counters, the state of a session
/// that is down anyway) may wait to be written.
pub const MINOR_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait before retrying a failed write.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After a 403 or a missing kind: how long before trying again (RBAC or the
/// CRDs may be fixed while the agent runs).
const DENIED_RETRY: Duration = Duration::from_secs(300);
/// The most Service IPs one BGPNodeStatus lists: 1000 entries stay well
/// below the API server's object size limit (1.5 MB in etcd).
const MAX_SERVICES: usize = 1000;
/// The most peers a condition message names.
const MAX_NAMED: usize = 10;
/// A session that is down, in reasons: the exact state (Connect, Active)
/// changes with every retry and is in `peers`, so it is not repeated here.
const SESSION_DOWN: &str = "session not established";

/// The field manager of an agent's writes: one per node.
pub fn field_manager(node: &str) -> String {
    crds::status::agent_field_manager(node)
}

/// One session the applied plan has: its name and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNeighbor {
    /// The neighbour's name (a BGPPeer's, `node-mesh-NODE`, or an API peer's).
    pub name: String,
    /// Its address or range.
    pub address: NeighborAddress,
}

/// What the agent applied (or could not), for the report.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Whether a usable configuration runs (else `problems` say why not).
    pub configured: bool,
    /// The sessions the plan has.
    pub neighbors: Vec<PlannedNeighbor>,
    /// Every prefix considered, with the planner's verdict.
    pub intents: Vec<Intent>,
    /// What was wrong in the source and the plan.
    pub problems: Vec<Problem>,
    /// The objects the plan came from.
    pub snapshot: Arc<Snapshot>,
}

impl Applied {
    /// A plan that runs.
    pub fn planned(plan: &Plan, snapshot: Arc<Snapshot>, problems: Vec<Problem>) -> Applied {
        Applied {
            configured: true,
            neighbors: plan
                .speaker
                .neighbors
                .iter()
                .map(|n| PlannedNeighbor {
                    name: n.name.clone(),
                    address: n.address.clone(),
                })
                .collect(),
            intents: plan.intents.clone(),
            problems,
            snapshot,
        }
    }

    /// No usable configuration: nothing runs.
    pub fn unconfigured(snapshot: Arc<Snapshot>, problems: Vec<Problem>) -> Applied {
        Applied {
            configured: false,
            problems,
            snapshot,
            ..Applied::default()
        }
    }
}

/// Hands a plan that now runs to the report task (if there is one: with
/// the file source there is none).
pub fn publish(
    tx: &watch::Sender<Option<Arc<Applied>>>,
    plan: &Plan,
    snapshot: &Arc<Snapshot>,
    problems: &[Problem],
) {
    if tx.receiver_count() == 0 {
        return;
    }
    tx.send_replace(Some(Arc::new(Applied::planned(
        plan,
        snapshot.clone(),
        problems.to_vec(),
    ))));
}

/// Starts the report task; it runs until aborted (the agent aborts it on
/// shutdown).
pub fn spawn(
    supervisor: &crate::supervise::Supervisor,
    client: kube::Client,
    node: String,
    speaker: watch::Receiver<Option<Speaker>>,
    applied: watch::Receiver<Option<Arc<Applied>>>,
    view: watch::Receiver<api::AgentView>,
) -> tokio::task::JoinHandle<()> {
    supervisor.spawn("status", async move {
        run(client, node, speaker, applied, view).await;
        Ok::<(), std::convert::Infallible>(())
    })
}

async fn run(
    client: kube::Client,
    node: String,
    mut speaker_rx: watch::Receiver<Option<Speaker>>,
    mut applied_rx: watch::Receiver<Option<Arc<Applied>>>,
    mut view_rx: watch::Receiver<api::AgentView>,
) {
    let mut reporter = Reporter::new(client, node);
    let mut peers_rx: Option<watch::Receiver<Arc<Vec<PeerStatus>>>> = None;
    // The BFD sessions (published every second for their counters; only a
    // change of state or timers makes a write).
    let mut bfd_rx: Option<watch::Receiver<crate::BfdStatus>> = None;
    let mut bfd_gone = false;
    loop {
        let speaker = speaker_rx.borrow_and_update().clone();
        if peers_rx.is_none() {
            peers_rx = speaker.as_ref().map(Speaker::subscribe_peers);
        }
        let peers = peers_rx
            .as_mut()
            .map(|r| r.borrow_and_update().clone())
            .unwrap_or_default();
        let applied = applied_rx.borrow_and_update().clone();
        let (overlay, bfd_view) = {
            let v = view_rx.borrow_and_update();
            (v.overlay.clone(), v.bfd.clone())
        };
        if bfd_rx.is_none() && !bfd_gone {
            bfd_rx = bfd_view;
        }
        let bfd = bfd_rx
            .as_mut()
            .map(|r| r.borrow_and_update().clone())
            .unwrap_or_default();
        if let Some(applied) = applied {
            reporter
                .compute(&applied, &peers, speaker.as_ref(), overlay.as_deref(), &bfd)
                .await;
        }
        reporter.flush().await;
        let due = reporter.next_due();
        let timer = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let peers_changed = async {
            match peers_rx.as_mut() {
                Some(r) => r.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let bfd_changed = async {
            match bfd_rx.as_mut() {
                Some(r) => r.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            r = applied_rx.changed() => Wake::Applied(r.is_ok()),
            ok = bfd_changed => Wake::Bfd(ok),
            r = speaker_rx.changed() => Wake::Speaker(r.is_ok()),
            // The overlay's view; an agent that went away is seen above.
            r = view_rx.changed() => Wake::Applied(r.is_ok()),
            ok = peers_changed => Wake::Peers(ok),
            _ = timer => Wake::Timer,
        };
        match wake {
            // The agent is gone.
            Wake::Applied(false) | Wake::Speaker(false) => return,
            // A new speaker: its own table.
            Wake::Speaker(true) => peers_rx = None,
            // The speaker stopped: its table is gone with it.
            Wake::Peers(false) => peers_rx = None,
            // The BFD runtime's publisher went away.
            Wake::Bfd(false) => {
                bfd_rx = None;
                bfd_gone = true;
            }
            Wake::Applied(true) | Wake::Peers(true) | Wake::Bfd(true) | Wake::Timer => {}
        }
    }
}

/// Why the report task woke up.
enum Wake {
    Applied(bool),
    Speaker(bool),
    Peers(bool),
    Bfd(bool),
    Timer,
}

/// An object the agent writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    /// A BGPPeer's `status.nodes` entries of this node.
    Peer(String),
    /// This node's Node: `PetrelBGPReady`.
    Node,
    /// This node's BGPNodeStatus.
    Report,
}

impl Target {
    /// For logs, and to log a denied kind once.
    fn kind(&self) -> &'static str {
        match self {
            Target::Peer(_) => "BGPPeer",
            Target::Node => "Node",
            Target::Report => "BGPNodeStatus",
        }
    }
}

/// One object's write state.
#[derive(Debug)]
struct Slot {
    /// The status to apply (the whole apply body).
    desired: Value,
    /// The last body applied successfully (`Null`: an earlier run may have
    /// written something).
    written: Option<Value>,
    /// Not before.
    due: Instant,
    /// When it was last written.
    last_write: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// Forget the slot once written (a BGPPeer this node stopped peering
    /// with: its empty entry list is applied once).
    drop_when_written: bool,
}

impl Slot {
    /// When the slot should be written, if it has something to write.
    fn when(&self) -> Option<Instant> {
        let written = self.written.as_ref();
        if written == Some(&self.desired) {
            return None;
        }
        let minor = written.is_some_and(|w| significant(w) == significant(&self.desired));
        match (minor, self.last_write) {
            (true, Some(last)) => Some(self.due.max(last + MINOR_INTERVAL)),
            _ => Some(self.due),
        }
    }
}

/// The part of a body whose changes are written soon: sessions reduced to
/// "Established or not", without counters, errors and timestamps.
fn significant(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("state") && m.contains_key("address") => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                match k.as_str() {
                    "state" => {
                        out.insert(k.clone(), json!(val == "Established"));
                    }
                    "prefixesReceived" | "prefixesAccepted" | "prefixesAdvertised"
                    | "lastError" | "establishedSince" => {}
                    _ => {
                        out.insert(k.clone(), significant(val));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| (k.clone(), significant(val)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(significant).collect()),
        other => other.clone(),
    }
}

/// What the Service entries depend on besides the routing table.
type ServicesKey = (Vec<Intent>, Vec<(String, String, bool)>);

/// The report task's state.
struct Reporter {
    client: kube::Client,
    node: String,
    manager: String,
    slots: BTreeMap<Target, Slot>,
    /// The first write of every object waits this long after start.
    first_due: Instant,
    /// The Node's uid (for the BGPNodeStatus ownerReference), once read.
    node_uid: Option<String>,
    /// Whether the BGPNodeStatus exists (created by us or found).
    report_exists: bool,
    /// Since when the readiness condition has its status (kept across
    /// writes, so it says since when, not when last written).
    ready_since: Option<(bool, Timestamp)>,
    /// Whether BGPPeers this node wrote to in an earlier run were looked up.
    adopted: bool,
    /// When to try that lookup again after a failure.
    adopt_after: Instant,
    /// Kinds whose denial (403) or absence (404) was logged.
    logged: HashSet<&'static str>,
    /// The inputs the Service entries were computed from (the plan's
    /// intents, and which sessions are up), when, and the result.
    services_key: Option<ServicesKey>,
    services_at: Option<Instant>,
    /// Some entry waits for the routing table ("not ... yet"): look again soon.
    services_unsettled: bool,
    services: Vec<Value>,
}

impl Reporter {
    fn new(client: kube::Client, node: String) -> Reporter {
        // Spread agents that start together over the first interval.
        let jitter_ms = std::collections::hash_map::RandomState::new().hash_one(&node)
            % SIGNIFICANT_INTERVAL.as_millis() as u64;
        Reporter {
            client,
            manager: field_manager(&node),
            node,
            slots: BTreeMap::new(),
            first_due: Instant::now() + Duration::from_millis(jitter_ms),
            node_uid: None,
            report_exists: false,
            ready_since: None,
            adopted: false,
            adopt_after: Instant::now(),
            logged: HashSet::new(),
            services_key: None,
            services_at: None,
            services_unsettled: false,
            services: Vec::new(),
        }
    }

    /// Sets what an object should say.
    fn offer(&mut self, target: Target, desired: Value) {
        let first_due = self.first_due;
        let slot = self.slots.entry(target).or_insert_with(|| Slot {
            desired: Value::Null,
            written: None,
            due: first_due,
            last_write: None,
            failures: 0,
            drop_when_written: false,
        });
        slot.desired = desired;
        slot.drop_when_written = false;
    }

    /// When the next write is due.
    fn next_due(&self) -> Option<Instant> {
        self.slots.values().filter_map(Slot::when).min()
    }

    /// Computes every object from the plan and the peer table.
    async fn compute(
        &mut self,
        applied: &Applied,
        peers: &[PeerStatus],
        speaker: Option<&Speaker>,
        overlay: Option<&api::OverlayView>,
        bfd: &[bfd::runtime::PeerStatus],
    ) {
        if !self.adopted && Instant::now() >= self.adopt_after {
            self.adopt().await;
        }
        let sessions = sessions(applied, peers);
        // BGPPeers: the ones this node peers with, or would if they were valid.
        let mut wanted = BTreeSet::new();
        for (name, list) in peer_entries(&self.node, applied, &sessions, bfd) {
            wanted.insert(name.clone());
            let body = json!({
                "apiVersion": crds::API_VERSION, "kind": "BGPPeer",
                "metadata": {"name": name},
                "status": {"nodes": list},
            });
            self.offer(Target::Peer(name), body);
        }
        // Entries of BGPPeers this node no longer peers with go: an empty
        // list applied once removes what this manager owned.
        for (target, slot) in self.slots.iter_mut() {
            if let Target::Peer(name) = target
                && !wanted.contains(name)
                && !slot.drop_when_written
            {
                slot.desired = json!({
                    "apiVersion": crds::API_VERSION, "kind": "BGPPeer",
                    "metadata": {"name": name},
                    "status": {"nodes": []},
                });
                slot.drop_when_written = true;
                if slot.written.as_ref() == Some(&slot.desired) {
                    slot.written = None;
                }
            }
        }
        // Readiness, the same on the Node and the BGPNodeStatus.
        let (ok, reason, message) = readiness(applied, &sessions, speaker.is_some());
        let since = match self.ready_since {
            Some((was, at)) if was == ok => at,
            _ => {
                let now = Timestamp::from_second(Timestamp::now().as_second())
                    .unwrap_or_else(|_| Timestamp::now());
                self.ready_since = Some((ok, now));
                now
            }
        };
        let condition = |type_: &str| {
            json!({
                "type": type_,
                "status": if ok { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastTransitionTime": since.to_string(),
            })
        };
        self.offer(
            Target::Node,
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node},
                "status": {"conditions": [condition(NODE_CONDITION_BGP_READY)]},
            }),
        );
        // Service entries: recomputed when the plan or whether a session is
        // up changed (each asks the speaker about one prefix), and now and
        // then for what the routing table decides by itself (a better path
        // from elsewhere, a route not in the table yet).
        let states: Vec<(String, String, bool)> = sessions
            .iter()
            .map(|s| (s.name.clone(), s.address.clone(), s.established()))
            .collect();
        let same_inputs = self
            .services_key
            .as_ref()
            .is_some_and(|(intents, up)| *intents == applied.intents && *up == states);
        let every = if self.services_unsettled {
            SIGNIFICANT_INTERVAL
        } else {
            MINOR_INTERVAL
        };
        let stale = self.services_at.is_none_or(|at| at.elapsed() >= every);
        if !same_inputs || stale {
            self.services = service_entries(applied, &sessions, speaker).await;
            self.services_unsettled = self.services.iter().any(|e| {
                e["notSent"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|r| r["reason"].as_str().is_some_and(|r| r.ends_with(" yet")))
                })
            });
            self.services_key = Some((applied.intents.clone(), states));
            self.services_at = Some(Instant::now());
        }
        let total = self.services.len();
        let advertised = self
            .services
            .iter()
            .filter(|s| s["advertised"] == true)
            .count();
        let mut status = json!({
            "conditions": [condition(CONDITION_READY)],
            "sessions": format!(
                "{}/{} established",
                sessions.iter().filter(|s| s.established()).count(),
                sessions.len()
            ),
            "advertised": format!("{advertised}/{total} advertised"),
            "peers": sessions.iter().map(Session::report).collect::<Vec<_>>(),
            "services": self.services.iter().take(MAX_SERVICES).collect::<Vec<_>>(),
        });
        if total > MAX_SERVICES {
            status["servicesOmitted"] = json!(total - MAX_SERVICES);
        }
        if let Some(o) = overlay {
            status["overlay"] = overlay_report(o);
        }
        self.offer(
            Target::Report,
            json!({
                "apiVersion": crds::API_VERSION, "kind": "BGPNodeStatus",
                "metadata": {"name": self.node},
                "status": status,
            }),
        );
    }

    /// Finds BGPPeers with entries of this node from an earlier run, so the
    /// ones this node no longer peers with are cleaned up too.
    async fn adopt(&mut self) {
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource("BGPPeer"));
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for p in list.items {
                    let ours = p.data["status"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|e| e["node"] == self.node.as_str()));
                    if let (true, Some(name)) = (ours, p.metadata.name) {
                        let first_due = self.first_due;
                        self.slots.entry(Target::Peer(name)).or_insert(Slot {
                            desired: Value::Null,
                            written: Some(Value::Null),
                            due: first_due,
                            last_write: None,
                            failures: 0,
                            drop_when_written: false,
                        });
                    }
                }
                self.adopted = true;
            }
            Err(e) if is_code(&e, 403) => {
                tracing::warn!(error = %e, "cannot list BGPPeers; entries from an earlier run may stay");
                self.adopted = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot list BGPPeers yet; trying again in 10 s");
                self.adopt_after = Instant::now() + Duration::from_secs(10);
            }
        }
    }

    /// Writes every object whose time has come.
    async fn flush(&mut self) {
        let now = Instant::now();
        let due: Vec<Target> = self
            .slots
            .iter()
            .filter(|(_, s)| s.when().is_some_and(|w| w <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for target in due {
            let Some(body) = self.slots.get(&target).map(|s| s.desired.clone()) else {
                continue;
            };
            let result = self.write(&target, &body).await;
            let Some(slot) = self.slots.get_mut(&target) else {
                continue;
            };
            let now = Instant::now();
            match result {
                Ok(()) => {
                    tracing::debug!(kind = target.kind(), ?target, "status written");
                    slot.written = Some(body);
                    slot.last_write = Some(now);
                    slot.due = now + SIGNIFICANT_INTERVAL;
                    slot.failures = 0;
                    if slot.drop_when_written {
                        self.slots.remove(&target);
                    }
                }
                // The BGPPeer went: nothing to write there any more.
                Err(e) if is_code(&e, 404) && matches!(target, Target::Peer(_)) => {
                    tracing::debug!(?target, "BGPPeer gone; its entries with it");
                    slot.written = Some(body);
                    slot.last_write = Some(now);
                    if slot.drop_when_written {
                        self.slots.remove(&target);
                    }
                }
                Err(e) if is_code(&e, 403) || is_code(&e, 404) => {
                    let kind = target.kind();
                    if self.logged.insert(kind) {
                        tracing::warn!(
                            kind,
                            error = %e,
                            "cannot write status (denied by the agent's ClusterRole, or the Node or the CRD missing?); routing goes on, retrying every 5 minutes"
                        );
                    }
                    slot.due = now + DENIED_RETRY;
                }
                Err(e) => {
                    slot.failures += 1;
                    let backoff = Duration::from_millis(500)
                        .saturating_mul(1 << slot.failures.min(7))
                        .min(MAX_BACKOFF);
                    tracing::warn!(
                        kind = target.kind(),
                        ?target,
                        error = %e,
                        failures = slot.failures,
                        retry_in = ?backoff,
                        "cannot write status; retrying"
                    );
                    slot.due = now + backoff;
                }
            }
        }
    }

    /// One server-side apply.
    async fn write(&mut self, target: &Target, body: &Value) -> Result<(), kube::Error> {
        // Status is the agent's alone to say: take over what someone else
        // applied to the same fields rather than fail.
        let params = PatchParams::apply(&self.manager).force();
        match target {
            Target::Peer(name) => {
                let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource("BGPPeer"));
                api.patch_status(name, &params, &Patch::Apply(body)).await?;
            }
            Target::Node => {
                let api = Api::<Node>::all(self.client.clone());
                api.patch_status(&self.node, &params, &Patch::Apply(body))
                    .await?;
            }
            Target::Report => {
                if !self.report_exists {
                    self.create_report().await?;
                }
                let api =
                    Api::<DynamicObject>::all_with(self.client.clone(), &resource("BGPNodeStatus"));
                match api
                    .patch_status(&self.node, &params, &Patch::Apply(body))
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        // Deleted (by hand, or with a replaced Node): made again next time.
                        if is_code(&e, 404) {
                            self.report_exists = false;
                            self.node_uid = None;
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates this node's BGPNodeStatus, owned by its Node so it goes with it.
    async fn create_report(&mut self) -> Result<(), kube::Error> {
        let uid = match &self.node_uid {
            Some(u) => u.clone(),
            None => {
                let node = Api::<Node>::all(self.client.clone())
                    .get(&self.node)
                    .await?;
                let uid = node.metadata.uid.unwrap_or_default();
                self.node_uid = Some(uid.clone());
                uid
            }
        };
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource("BGPNodeStatus"));
        let body = json!({
            "apiVersion": crds::API_VERSION, "kind": "BGPNodeStatus",
            "metadata": {
                "name": self.node,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid}],
            },
            "spec": {},
        });
        api.patch(
            &self.node,
            &PatchParams::apply(&self.manager).force(),
            &Patch::Apply(&body),
        )
        .await?;
        self.report_exists = true;
        Ok(())
    }
}

/// The API resource of a petrel kind.
fn resource(kind: &str) -> ApiResource {
    let plural = match kind {
        "BGPPeer" => "bgppeers",
        _ => "bgpnodestatuses",
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crds::GROUP, crds::VERSION, kind),
        plural,
    )
}

/// Whether an error is the API server's answer with this HTTP code.
fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crds::status::{
        REASON_ESTABLISHED, REASON_NO_CONFIGURATION, REASON_NO_PEERS, REASON_SESSIONS_DOWN,
    };
    use planner::advertise::IntentKind;

    use super::*;

    fn peer(name: &str, addr: &str, state: bgpd::fsm::State) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            address: addr.parse().expect("address"),
            asn: 65000,
            state,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            dynamic: false,
            last_error: None,
            capabilities: Vec::new(),
            hold_time: None,
            peer_router_id: None,
            local_address: None,
            prefixes: Vec::new(),
            messages_received: 0,
            messages_sent: 0,
            received_by_type: [0; 6],
            sent_by_type: [0; 6],
            flaps: 0,
            out_queued: 0,
            send_hold_expired: 0,
            out_overflows: 0,
            refreshes_answered: 0,
            stale_routes: 0,
            disabled: false,
        }
    }

    fn applied(neighbors: &[(&str, &str)]) -> Applied {
        Applied {
            configured: true,
            neighbors: neighbors
                .iter()
                .map(|(n, a)| PlannedNeighbor {
                    name: n.to_string(),
                    address: if a.contains('/') {
                        NeighborAddress::Range(a.parse().expect("range"))
                    } else {
                        NeighborAddress::Address(a.parse().expect("address"))
                    },
                })
                .collect(),
            ..Applied::default()
        }
    }

    #[test]
    fn counters_and_down_states_are_minor_changes_established_is_not() {
        use bgpd::fsm::State::*;
        let a = applied(&[("tor", "10.0.0.254")]);
        let body = |p: PeerStatus| {
            let s = sessions(&a, &[p]);
            json!({"status": {"peers": s.iter().map(Session::report).collect::<Vec<_>>()}})
        };
        let active = body(peer("tor", "10.0.0.254", Active));
        let connect = body(peer("tor", "10.0.0.254", Connect));
        let mut failing = peer("tor", "10.0.0.254", Active);
        failing.last_error = Some("connection refused".into());
        let up = body(peer("tor", "10.0.0.254", Established));
        assert_ne!(active, connect);
        assert_eq!(significant(&active), significant(&connect));
        assert_eq!(significant(&active), significant(&body(failing)));
        assert_ne!(significant(&active), significant(&up));

        let now = Instant::now();
        let slot = |written: &Value, desired: &Value| Slot {
            desired: desired.clone(),
            written: Some(written.clone()),
            due: now,
            last_write: Some(now),
            failures: 0,
            drop_when_written: false,
        };
        assert_eq!(slot(&active, &active).when(), None, "nothing changed");
        assert_eq!(slot(&active, &connect).when(), Some(now + MINOR_INTERVAL));
        assert_eq!(slot(&active, &up).when(), Some(now));
    }

    #[test]
    fn a_bfd_session_shows_in_its_peer_entry_and_a_state_change_is_significant() {
        use bgpd::fsm::State::*;
        let mut a = applied(&[("tor", "10.0.0.254")]);
        let mut snap = model::Snapshot::default();
        snap.peers.push(model::Named {
            name: "tor".into(),
            origin: model::Origin::api("BGPPeer", None, "tor"),
            spec: crds::BgpPeerSpec::default(),
        });
        a.snapshot = Arc::new(snap);
        let s = sessions(&a, &[peer("tor", "10.0.0.254", Established)]);
        let t0 = std::time::Instant::now();
        let mut session = bfd::Session::new(bfd::SessionConfig::default(), 7, 1, t0);
        let status = |session: &bfd::Session| {
            vec![bfd::runtime::PeerStatus {
                peer: "10.0.0.254".parse().expect("ip"),
                multihop: false,
                session: session.status(),
                up_since: None,
                last_error: None,
            }]
        };
        let down = peer_entries("n1", &a, &s, &status(&session));
        let entry = &down["tor"][0];
        assert_eq!(entry["bfd"]["state"], "down", "{entry}");
        assert_eq!(entry["bfd"]["localDiscriminator"], 7, "{entry}");
        // The entry reads back as the CRD's type.
        let typed: crds::BgpPeerNodeStatus =
            serde_json::from_value(entry.clone()).expect("a BgpPeerNodeStatus");
        assert_eq!(typed.bfd.expect("bfd").state, "down");
        let _ = session.admin_down(t0);
        let admin = peer_entries("n1", &a, &s, &status(&session));
        assert_ne!(
            significant(&json!(down)),
            significant(&json!(admin)),
            "a BFD state change is written soon"
        );
        // Without a BFD session, no `bfd` key.
        let none = peer_entries("n1", &a, &s, &[]);
        assert!(none["tor"][0].get("bfd").is_none());
    }

    #[test]
    fn readiness_names_the_sessions_down_and_ignores_waiting_ranges() {
        use bgpd::fsm::State::*;
        let a = applied(&[
            ("tor-a", "10.0.0.1"),
            ("tor-b", "10.0.0.2"),
            ("rr", "10.1.0.0/24"),
        ]);
        let s = sessions(
            &a,
            &[
                peer("tor-a", "10.0.0.1", Established),
                peer("tor-b", "10.0.0.2", Active),
            ],
        );
        assert_eq!(s.len(), 3, "{s:?}");
        let (ok, reason, message) = readiness(&a, &s, true);
        assert!(!ok);
        assert_eq!(reason, REASON_SESSIONS_DOWN);
        assert_eq!(message, "1 of 2 sessions not established: tor-b");
        let s = sessions(
            &a,
            &[
                peer("tor-a", "10.0.0.1", Established),
                peer("tor-b", "10.0.0.2", Established),
            ],
        );
        assert_eq!(readiness(&a, &s, true).1, REASON_ESTABLISHED);
        assert_eq!(readiness(&a, &s, false).1, REASON_NO_CONFIGURATION);
        let none = applied(&[]);
        assert_eq!(
            readiness(&none, &[], true),
            (
                true,
                REASON_NO_PEERS,
                "no BGP session is configured for this node".into()
            )
        );
        let unconfigured = Applied::unconfigured(Arc::default(), Vec::new());
        assert_eq!(
            readiness(&unconfigured, &[], false).1,
            REASON_NO_CONFIGURATION
        );
    }

    #[test]
    fn export_rejections_from_advertisement_peers_are_told_apart_from_filters() {
        let filtered = bgpd::rib::NotSent::ExportFilter.to_string();
        let mut i = Intent {
            prefix: "198.51.100.10/32".parse().expect("prefix"),
            kind: IntentKind::LoadBalancerIp,
            service: Some("shop/web".into()),
            advertised: true,
            reason: String::new(),
            peers: None,
        };
        assert_eq!(
            export_reason(&i, "tor", &filtered),
            "filtered by export policy"
        );
        i.peers = Some(vec!["tor-a".into()]);
        assert_eq!(
            export_reason(&i, "tor-b", &filtered),
            "its BGPAdvertisement names other peers (tor-a)"
        );
        assert_eq!(
            export_reason(&i, "tor-a", &filtered),
            "filtered by export policy"
        );
        assert_eq!(export_reason(&i, "tor-a", "x"), "x");
    }
}
