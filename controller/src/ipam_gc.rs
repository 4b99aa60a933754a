//! Garbage collection of leaked pod addresses (leader only): each pass
//! lists the IPAMBlocks, compares them with the Pods and Nodes the
//! reflectors hold (`ipam::pod::Gc` decides), and gives back what the
//! grace period confirmed, by address and sequence number, so that an
//! address handed out again meanwhile stays with its new holder.
//!
//! - A pod that is gone (or was made again on another node) makes its
//!   address a candidate: a Warning Event on the IPAMBlock and
//!   `petrel_controller_ipam_leak_candidates_total{reason}`. After the
//!   grace period (`--ipam-gc-grace`, default 15 min) the pod is looked up
//!   once more, straight from the API server; still gone: the address is
//!   given back (a Normal Event, `petrel_controller_ipam_released_total`).
//! - A node that is gone: its addresses go at once, its empty blocks are
//!   deleted (with preconditions), and a block of it that other nodes still
//!   borrow from is kept without a node, so nothing new comes out of it.
//!
//! Nothing is judged from a partial view: the pass waits for the Pod and
//! Node reflectors' first lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipam::pod::{
    BlockStore, DriveError, Gc, Leak, LeakReason, PodState, Release, Settings, StoreError, release,
};
use ipam_store::KubeBlocks;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::LeaderContext;
use crate::lb::Reflected;

/// Settings of the collector.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// How long an address stays a candidate before it is given back.
    pub grace: Duration,
    /// How often a pass runs.
    pub interval: Duration,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            grace: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(60),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn block_ref(cidr: &IpNet) -> ObjectReference {
    ObjectReference {
        api_version: Some(crds::API_VERSION.into()),
        kind: Some("IPAMBlock".into()),
        name: Some(crds::block_name(cidr)),
        ..ObjectReference::default()
    }
}

fn describe(l: &Leak) -> String {
    let pod = l.holder.pod.as_deref().unwrap_or("an unknown pod");
    let why = match &l.reason {
        LeakReason::PodGone => "the pod no longer exists".to_string(),
        LeakReason::PodMoved { node } => format!("the pod now runs on {node}"),
        LeakReason::NodeGone => "the node no longer exists".to_string(),
    };
    format!(
        "{} (sequence {}) held by {pod} ({}) on {}: {why}",
        l.addr, l.sequence, l.holder.handle, l.holder.node
    )
}

/// The pod an address was held by, as an Event's related object: Events
/// of one reason on one block are told apart by it (the recorder folds
/// Events with the same key into one series).
fn pod_ref(pod: Option<&str>) -> Option<ObjectReference> {
    let (ns, name) = pod?.split_once('/')?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    })
}

async fn event(
    ctx: &LeaderContext,
    warning: bool,
    reason: &str,
    cidr: &IpNet,
    pod: Option<&str>,
    note: String,
) {
    let e = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "CollectPodAddresses".into(),
        secondary: pod_ref(pod),
    };
    if let Err(err) = ctx.recorder.publish(&e, &block_ref(cidr)).await {
        ctx.metrics.api_errors.inc();
        tracing::warn!(reason, error = %err, "cannot publish Event");
    }
}

/// Where `namespace/name` is, straight from the API server.
async fn pod_now(client: &kube::Client, pod: &str) -> Result<PodState, kube::Error> {
    let Some((ns, name)) = pod.split_once('/') else {
        return Ok(PodState::Missing);
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(match api.get_opt(name).await? {
        None => PodState::Missing,
        Some(p) => PodState::On(p.spec.and_then(|s| s.node_name)),
    })
}

/// Runs the collector for one term, until aborted.
pub async fn run(ctx: LeaderContext, opts: GcOptions) -> Result<(), crate::ControllerError> {
    let client = ctx.client.clone();
    let (tx, _changes) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let pods: Reflected<Pod> = model::kube::reflect(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        Default::default(),
        "Pod",
        tx.clone(),
    )
    .into();
    let nodes: Reflected<Node> = model::kube::reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        Default::default(),
        "Node",
        tx.clone(),
    )
    .into();
    loop {
        let all = async {
            let _ = pods.store.wait_until_ready().await;
            let _ = nodes.store.wait_until_ready().await;
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_ok()
        {
            break;
        }
        tracing::warn!(
            "IPAM garbage collection waits for the first lists of Pods and Nodes (may this service account list them?)"
        );
    }
    let store = KubeBlocks::new(client.clone());
    let mut gc = Gc::new();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.leadership.is_leading() {
            return Err(crate::ControllerError::NotLeading);
        }
        pass(&ctx, &store, &mut gc, &pods.store, &nodes.store, opts).await;
    }
}

async fn pass(
    ctx: &LeaderContext,
    store: &KubeBlocks,
    gc: &mut Gc,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    opts: GcOptions,
) {
    let blocks = match store.list().await {
        Ok(l) => l
            .into_iter()
            .map(|(b, _)| (b.cidr, b))
            .collect::<BTreeMap<_, _>>(),
        Err(e) => {
            ctx.metrics.api_errors.inc();
            tracing::warn!("IPAM garbage collection cannot list IPAMBlocks: {e}");
            return;
        }
    };
    let where_pods: HashMap<String, Option<String>> = pods
        .state()
        .iter()
        .filter_map(|p| {
            let ns = p.metadata.namespace.as_deref()?;
            let name = p.metadata.name.as_deref()?;
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            Some((format!("{ns}/{name}"), node))
        })
        .collect();
    let node_names: BTreeSet<String> = nodes
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let t = now();
    let plan = gc.pass(
        &blocks,
        |p| match where_pods.get(p) {
            None => PodState::Missing,
            Some(n) => PodState::On(n.clone()),
        },
        &node_names,
        t,
        opts.grace.as_secs(),
    );
    for c in &plan.candidates {
        ctx.metrics
            .ipam_leak_candidates
            .get_or_create(&vec![("reason".to_string(), c.reason.name().to_string())])
            .inc();
        let msg = describe(c);
        tracing::info!(block = %c.block, "leak candidate: {msg}");
        let note = if c.reason == LeakReason::NodeGone {
            format!("{msg}; given back now")
        } else {
            format!(
                "{msg}; given back after {} s unless it comes back",
                opts.grace.as_secs()
            )
        };
        event(
            ctx,
            true,
            "PodAddressLeaked",
            &c.block,
            c.holder.pod.as_deref(),
            note,
        )
        .await;
    }
    for l in &plan.release {
        if !ctx.leadership.is_leading() {
            return;
        }
        // A pod the cache lost sight of, or one just made again: looked
        // up once more before its address goes.
        if l.reason != LeakReason::NodeGone
            && let Some(pod) = &l.holder.pod
        {
            match pod_now(&ctx.client, pod).await {
                Ok(PodState::On(node)) if node.as_deref().is_none_or(|n| n == l.holder.node) => {
                    gc.forget(l.addr, l.sequence);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.metrics.api_errors.inc();
                    tracing::warn!(%pod, "cannot look up the pod before giving back its address: {e}");
                    continue;
                }
            }
        }
        let what = Release::Address {
            addr: l.addr,
            sequence: l.sequence,
        };
        match release(store, what, now(), Settings::default()).await {
            Ok(_) => {
                gc.forget(l.addr, l.sequence);
                ctx.metrics
                    .ipam_released
                    .get_or_create(&vec![("reason".to_string(), l.reason.name().to_string())])
                    .inc();
                let msg = describe(l);
                tracing::info!(block = %l.block, "given back: {msg}");
                let note = format!("{msg}; given back");
                event(
                    ctx,
                    false,
                    "PodAddressReleased",
                    &l.block,
                    l.holder.pod.as_deref(),
                    note,
                )
                .await;
            }
            // Given back, or handed out again, since the list: not ours.
            Err(DriveError::Release(_)) => gc.forget(l.addr, l.sequence),
            Err(e) => {
                ctx.metrics.api_errors.inc();
                tracing::warn!(addr = %l.addr, "cannot give back a leaked address: {e}");
            }
        }
    }
    for cidr in &plan.orphaned {
        orphan(ctx, store, *cidr).await;
    }
}

/// A block of a node that is gone: deleted when empty, else kept without a
/// node. Both by compare-and-swap: a block that changed is seen next pass.
async fn orphan(ctx: &LeaderContext, store: &KubeBlocks, cidr: IpNet) {
    let Ok(listed) = store.list().await else {
        return;
    };
    let Some((mut block, version)) = listed.into_iter().find(|(b, _)| b.cidr == cidr) else {
        return;
    };
    let node = block.node.take().unwrap_or_default();
    let result = if block.allocations.is_empty() {
        store.delete(cidr, &version).await
    } else {
        store.update(&block, &version).await
    };
    match result {
        Ok(()) => {
            let done = if block.allocations.is_empty() {
                "deleted"
            } else {
                "kept without a node: other nodes still hold addresses of it"
            };
            tracing::info!(%cidr, %node, "block of a node that is gone {done}");
            event(
                ctx,
                false,
                "BlockReleased",
                &cidr,
                None,
                format!("block {cidr} of node {node}, which no longer exists: {done}"),
            )
            .await;
        }
        Err(StoreError::Conflict(_)) => {}
        Err(e) => {
            ctx.metrics.api_errors.inc();
            tracing::warn!(%cidr, "cannot release the block of a node that is gone: {e}");
        }
    }
}
