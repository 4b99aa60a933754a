//! LoadBalancer IPs: Services of type LoadBalancer get addresses from
//! LoadBalancerPools through [`ipam::lb::Allocator`], written to their
//! `status.loadBalancer.ingress`; pools get their use counts and `Ready`
//! condition.
//!
//! ```text
//!  per term:  reflectors (Services, Namespaces, LoadBalancerPools), listed afresh
//!                 │ change (debounced 20 ms), resync, or retry after a failed write
//!                 ▼
//!             Lb::reconcile(view) ── sans-IO: one Allocator, one pass over everything
//!                 │   first pass: set_pools, restore every Service's ingress, then assign
//!                 ▼
//!             [Action] ── execute(): status patches, Events (leadership checked first)
//! ```
//!
//! One task owns the allocator and assigns Services one after another, so
//! Services created at the same moment can never be given one address
//! twice. The reflectors start with each term rather than once per
//! process: the first pass restores from a list made after this replica
//! took the Lease, so it sees everything the previous leader wrote, and no
//! address it handed out is handed out again.
//!
//! Every pass is level-triggered: it looks at every Service and pool and
//! writes only what differs from what the API server shows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crds::status::{CONDITION_READY, REASON_INVALID, REASON_VALID, condition, set_condition};
use crds::{AddressCount, LoadBalancerPoolSpec, LoadBalancerPoolStatus};
use futures::StreamExt;
use ipam::lb::{Allocator, Assignment, PoolSpec, RawPort, RawService, ServiceKey, ServiceRequest};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::LeaderContext;
use model::kube::reflect;

/// Settings of the LoadBalancer IP task.
#[derive(Debug, Clone, Default)]
pub struct LbOptions {
    /// Serve only Services with this `spec.loadBalancerClass` (none:
    /// Services without one).
    pub class: Option<String>,
    /// Use only LoadBalancerPools whose labels match this selector (`kubectl
    /// -l` syntax; none: every pool).
    pub pool_selector: Option<String>,
}

/// Changes arriving within this long are taken as one (a Service and its
/// namespace, fifty Services created together).
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A full pass at least this often, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(60);
/// Status writes and Events in flight at once.
const CONCURRENT_WRITES: usize = 8;
/// The Events API refuses longer notes.
const NOTE_LIMIT: usize = 1024;

/// Something to send to the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set a Service's `status.loadBalancer.ingress` to these addresses
    /// (none: remove it).
    Ingress {
        /// The Service.
        key: ServiceKey,
        /// Its addresses, primary family first.
        ips: Vec<IpAddr>,
    },
    /// Set a LoadBalancerPool's status.
    PoolStatus {
        /// The pool.
        name: String,
        /// Its whole status.
        status: LoadBalancerPoolStatus,
    },
    /// Publish an Event.
    Event(Note),
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The object it is about.
    pub regarding: ObjectReference,
    /// Warning (else Normal).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

/// What one pass did, for metrics.
#[derive(Debug, Default)]
pub struct Pass {
    /// What to write.
    pub actions: Vec<Action>,
    /// Addresses newly given to Services.
    pub allocated: u64,
    /// Reasons of the assignments that failed.
    pub errors: Vec<&'static str>,
}

/// The objects a pass looks at.
pub struct View<'a> {
    /// Every Service.
    pub services: &'a [Arc<Service>],
    /// Every Namespace (for pools' `namespaceSelector`).
    pub namespaces: &'a [Arc<Namespace>],
    /// The LoadBalancerPools this controller uses.
    pub pools: &'a [Arc<DynamicObject>],
}

/// What is remembered of one Service between passes.
#[derive(Debug, Default)]
struct Tracked {
    /// The ingress last written and the Service's resourceVersion when it
    /// was: until the watch shows a newer version, the same write is not
    /// sent again.
    pending: Option<(Option<String>, Vec<IpAddr>)>,
    /// The last warning published, so that one that persists is not
    /// repeated on every pass.
    warned: Option<String>,
}

/// The LoadBalancer IP state of one term: the allocator, and what was
/// written and reported. Sans-IO: [`Lb::reconcile`] turns a view of the
/// objects into [`Action`]s.
pub struct Lb {
    alloc: Allocator,
    /// The first pass (pools, then restore) is done.
    restored: bool,
    /// The pools last given to the allocator.
    pools: Option<Vec<PoolSpec>>,
    /// Pools the allocator refused at the last `set_pools`, with why.
    rejected: BTreeMap<String, String>,
    /// Pool warnings last published, per pool.
    pool_warned: BTreeMap<String, String>,
    /// Pool status last written, and the pool's resourceVersion then.
    pool_pending: BTreeMap<String, (Option<String>, LoadBalancerPoolStatus)>,
    services: BTreeMap<ServiceKey, Tracked>,
}

impl Lb {
    /// A fresh state serving `class` (none: Services without a class).
    pub fn new(class: Option<&str>) -> Self {
        let alloc = match class {
            Some(c) => Allocator::default().with_class(c),
            None => Allocator::default(),
        };
        Lb {
            alloc,
            restored: false,
            pools: None,
            rejected: BTreeMap::new(),
            pool_warned: BTreeMap::new(),
            pool_pending: BTreeMap::new(),
            services: BTreeMap::new(),
        }
    }

    /// A write failed: send it again on the next pass.
    pub fn write_failed(&mut self, action: &Action) {
        match action {
            Action::Ingress { key, .. } => {
                if let Some(t) = self.services.get_mut(key) {
                    t.pending = None;
                }
            }
            Action::PoolStatus { name, .. } => {
                self.pool_pending.remove(name);
            }
            Action::Event(_) => {}
        }
    }

    /// One pass over every pool and Service; `now` stamps condition
    /// transitions.
    pub fn reconcile(&mut self, view: &View<'_>, now: Timestamp) -> Pass {
        let mut pass = Pass::default();
        let namespaces: BTreeMap<String, BTreeMap<String, String>> = view
            .namespaces
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let services: BTreeMap<ServiceKey, &Service> = view
            .services
            .iter()
            .map(|s| (key_of(s), s.as_ref()))
            .collect();

        // Pools first: what follows is judged against them.
        let mut specs = Vec::new();
        let mut unreadable = BTreeMap::new();
        for p in view.pools {
            match pool_spec(p) {
                Ok(s) => specs.push(s),
                Err(message) => {
                    unreadable.insert(p.name_any(), message);
                }
            }
        }
        if self.pools.as_ref() != Some(&specs) {
            let update = self.alloc.set_pools(specs.clone());
            self.rejected = update
                .rejected
                .iter()
                .map(|e| (e.pool().to_string(), e.to_string()))
                .collect();
            for d in &update.dropped {
                tracing::warn!(service = %d.service, ip = %d.ip, reason = %d.reason, "address dropped after a pool change");
                if let Some(svc) = services.get(&d.service) {
                    pass.actions.push(note(
                        svc.object_ref(&()),
                        true,
                        "AddressDropped",
                        d.to_string(),
                    ));
                }
            }
            self.pools = Some(specs);
        }
        let refused: BTreeMap<String, String> = self
            .rejected
            .iter()
            .chain(unreadable.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for p in view.pools {
            let name = p.name_any();
            match refused.get(&name) {
                Some(msg) if self.pool_warned.get(&name) != Some(msg) => {
                    tracing::warn!(pool = %name, error = %msg, "LoadBalancerPool refused");
                    pass.actions.push(note(
                        p.object_ref(&pools_resource()),
                        true,
                        "PoolRefused",
                        msg.clone(),
                    ));
                    self.pool_warned.insert(name, msg.clone());
                }
                Some(_) => {}
                None => {
                    self.pool_warned.remove(&name);
                }
            }
        }

        // Take back what Services show before anything is assigned: an
        // address in a Service's status is taken even if no allocator in
        // this process ever gave it out.
        if !self.restored {
            let mut existing = Vec::new();
            for svc in services.values() {
                let ips = ingress_ips(svc);
                if !is_load_balancer(svc) || ips.is_empty() {
                    continue;
                }
                if let Ok(req) = ServiceRequest::parse(&raw_service(svc, &namespaces)) {
                    existing.push((req, ips));
                }
            }
            let held = existing.len();
            for d in self.alloc.restore(existing) {
                tracing::warn!(service = %d.service, ip = %d.ip, reason = %d.reason, "address not restored");
                if let Some(svc) = services.get(&d.service) {
                    pass.actions.push(note(
                        svc.object_ref(&()),
                        true,
                        "AddressNotRestored",
                        d.to_string(),
                    ));
                }
            }
            tracing::info!(
                services = held,
                "restored LoadBalancer addresses from Service status"
            );
            self.restored = true;
        }

        // Deleted Services give their addresses back before anyone is
        // assigned: a Service created in the same pass may need them.
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !services.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let released = self.alloc.release(&key);
            if !released.is_empty() {
                tracing::info!(service = %key, ips = ?released, "Service deleted; addresses released");
            }
            self.services.remove(&key);
        }

        // Then older Services first: when addresses run short, the ones that
        // were there first get them, whatever order the watch gave.
        let mut ordered: Vec<(&ServiceKey, &Service)> =
            services.iter().map(|(k, s)| (k, *s)).collect();
        // Services no longer of type LoadBalancer come before all: what
        // they release is there for the others in this same pass.
        ordered.sort_by_key(|(k, s)| {
            let lb = s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer");
            (lb, created_at(*s).is_none(), created_at(*s), *k)
        });
        for (key, svc) in ordered {
            let current = ingress_ips(svc);
            let desired = self.desire(key, svc, &current, &namespaces, &mut pass);
            let tracked = self.services.entry(key.clone()).or_default();
            let Some(desired) = desired else {
                tracked.pending = None;
                continue;
            };
            if desired == current {
                tracked.pending = None;
                continue;
            }
            let rv = svc.resource_version();
            if tracked.pending.as_ref() == Some(&(rv.clone(), desired.clone())) {
                continue;
            }
            tracked.pending = Some((rv, desired.clone()));
            pass.actions.push(Action::Ingress {
                key: key.clone(),
                ips: desired,
            });
        }
        self.pool_statuses(view, &refused, now, &mut pass);
        pass
    }

    /// What a Service's ingress should be (`None`: not petrel's to touch),
    /// with the allocator updated and Events for what changed.
    fn desire(
        &mut self,
        key: &ServiceKey,
        svc: &Service,
        current: &[IpAddr],
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
        pass: &mut Pass,
    ) -> Option<Vec<IpAddr>> {
        let tracked = self.services.entry(key.clone()).or_default();
        if !is_load_balancer(svc) {
            let released = self.alloc.release(key);
            if !released.is_empty() {
                tracing::info!(service = %key, ips = ?released, "no longer of type LoadBalancer; addresses released");
                pass.actions.push(note(
                    svc.object_ref(&()),
                    false,
                    "IPReleased",
                    format!(
                        "the Service is no longer of type LoadBalancer; released {}",
                        join(&released)
                    ),
                ));
            }
            tracked.warned = None;
            // An address of ours left in the status of a Service that is no
            // longer a LoadBalancer (also one whose type changed while no
            // controller led): no load balancer serves it, so it goes.
            let stale = current.iter().any(|ip| self.alloc.pool_for(ip).is_some());
            return (!released.is_empty() || stale).then(Vec::new);
        }
        let raw = raw_service(svc, namespaces);
        let class = raw
            .load_balancer_class
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if class != self.alloc.class() {
            // Another controller's Service: its status is not ours, even
            // when its annotations would not parse.
            self.alloc.release(key);
            tracked.warned = None;
            return None;
        }
        let result = ServiceRequest::parse(&raw).and_then(|req| self.alloc.assign(&req));
        match result {
            Ok(Assignment::Assigned {
                ips,
                changed,
                released,
                shortfall,
            }) => {
                let addresses: Vec<IpAddr> = ips.iter().map(|a| a.ip).collect();
                if changed {
                    let new: Vec<String> = ips
                        .iter()
                        .filter(|a| !released.contains(&a.ip) && !current.contains(&a.ip))
                        .map(|a| format!("{} (LoadBalancerPool {})", a.ip, a.pool))
                        .collect();
                    pass.allocated += new.len() as u64;
                    tracing::info!(service = %key, ips = ?addresses, released = ?released, "LoadBalancer addresses assigned");
                    if !new.is_empty() {
                        pass.actions.push(note(
                            svc.object_ref(&()),
                            false,
                            "IPAllocated",
                            format!("assigned {}", new.join(", ")),
                        ));
                    }
                }
                match shortfall {
                    Some(e) => {
                        let text = format!("{}: {e}", e.reason());
                        if tracked.warned.as_ref() != Some(&text) {
                            pass.actions.push(note(
                                svc.object_ref(&()),
                                true,
                                e.reason(),
                                e.to_string(),
                            ));
                            tracked.warned = Some(text);
                        }
                    }
                    None => tracked.warned = None,
                }
                Some(addresses)
            }
            Ok(Assignment::NotOurs { .. }) => {
                tracked.warned = None;
                None
            }
            Err(e) => {
                // Parse errors come before `assign`, which would have
                // released; do it here too: on error a Service holds nothing.
                self.alloc.release(key);
                pass.errors.push(e.reason());
                let text = format!("{}: {e}", e.reason());
                if tracked.warned.as_ref() != Some(&text) {
                    tracing::warn!(service = %key, reason = e.reason(), error = %e, "no LoadBalancer address");
                    pass.actions
                        .push(note(svc.object_ref(&()), true, e.reason(), e.to_string()));
                    tracked.warned = Some(text);
                }
                Some(Vec::new())
            }
        }
    }

    /// Each pool's counts and `Ready` condition, written when they differ
    /// from what the pool shows.
    fn pool_statuses(
        &mut self,
        view: &View<'_>,
        refused: &BTreeMap<String, String>,
        now: Timestamp,
        pass: &mut Pass,
    ) {
        let stats: BTreeMap<String, ipam::lb::PoolStats> = self
            .alloc
            .stats()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut names = BTreeSet::new();
        for p in view.pools {
            let name = p.name_any();
            names.insert(name.clone());
            let current: LoadBalancerPoolStatus = p
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            let desired = pool_status(
                &current,
                p.metadata.generation,
                stats.get(&name),
                refused.get(&name).map(String::as_str),
                now,
            );
            if desired == current {
                self.pool_pending.remove(&name);
                continue;
            }
            let rv = p.resource_version();
            if self.pool_pending.get(&name) == Some(&(rv.clone(), desired.clone())) {
                continue;
            }
            self.pool_pending
                .insert(name.clone(), (rv, desired.clone()));
            pass.actions.push(Action::PoolStatus {
                name,
                status: desired,
            });
        }
        self.pool_pending.retain(|k, _| names.contains(k));
        self.pool_warned.retain(|k, _| names.contains(k));
    }
}

/// A pool's status: its counts (none when refused) and `Ready`, the
/// condition's transition time kept while its status holds.
pub fn pool_status(
    current: &LoadBalancerPoolStatus,
    generation: Option<i64>,
    stats: Option<&ipam::lb::PoolStats>,
    refused: Option<&str>,
    now: Timestamp,
) -> LoadBalancerPoolStatus {
    let mut status = current.clone();
    let ready = match (refused, stats) {
        (Some(msg), _) => condition(
            CONDITION_READY,
            false,
            REASON_INVALID,
            msg,
            generation,
            Time(now),
        ),
        (None, Some(s)) if s.disabled => condition(
            CONDITION_READY,
            true,
            REASON_VALID,
            "valid; disabled: Services keep their addresses, no new ones are handed out",
            generation,
            Time(now),
        ),
        (None, _) => condition(
            CONDITION_READY,
            true,
            REASON_VALID,
            "valid; addresses are handed out",
            generation,
            Time(now),
        ),
    };
    set_condition(&mut status.conditions, ready);
    let count = |v: u128| Some(AddressCount(v));
    match stats.filter(|_| refused.is_none()) {
        Some(s) => {
            status.used_ipv4 = count(s.ipv4.used);
            status.free_ipv4 = count(s.ipv4.free);
            status.used_ipv6 = count(s.ipv6.used);
            status.free_ipv6 = count(s.ipv6.free);
        }
        None => {
            status.used_ipv4 = None;
            status.free_ipv4 = None;
            status.used_ipv6 = None;
            status.free_ipv6 = None;
        }
    }
    status
}

fn key_of(svc: &Service) -> ServiceKey {
    ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any())
}

fn created_at<K: kube::Resource>(o: &K) -> Option<i64> {
    o.meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The addresses in a Service's `status.loadBalancer.ingress` (hostnames
/// and what does not parse are left out).
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// A Service's fields as the allocator reads them.
pub fn raw_service(
    svc: &Service,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> RawService {
    let namespace = svc.namespace().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    RawService {
        namespace_labels: namespaces.get(&namespace).cloned().unwrap_or_default(),
        namespace,
        name: svc.name_any(),
        created_at: created_at(svc),
        labels: svc.labels().clone(),
        annotations: svc.annotations().clone(),
        load_balancer_class: spec.load_balancer_class,
        load_balancer_ip: spec.load_balancer_ip,
        ip_families: spec.ip_families.unwrap_or_default(),
        ip_family_policy: spec.ip_family_policy,
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| RawPort {
                protocol: p.protocol,
                port: p.port,
            })
            .collect(),
        external_traffic_policy: spec.external_traffic_policy,
        selector: spec.selector.unwrap_or_default(),
    }
}

/// A LoadBalancerPool as the allocator takes it, or why it cannot be read
/// (the schema lets through a few things the spec type refuses, such as a
/// range written backwards).
pub fn pool_spec(obj: &DynamicObject) -> Result<PoolSpec, String> {
    let name = obj.name_any();
    let raw = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let spec: LoadBalancerPoolSpec = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        format!(
            "LoadBalancerPool {name}: {field}: {}; fix the field",
            e.into_inner()
        )
    })?;
    Ok(PoolSpec {
        name,
        created_at: created_at(obj),
        addresses: spec.cidrs.iter().map(ToString::to_string).collect(),
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips.unwrap_or(false),
        priority: spec.priority,
        service_selector: spec.service_selector,
        namespace_selector: spec.namespace_selector,
        disabled: spec.disabled.unwrap_or(false),
    })
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn note(regarding: ObjectReference, warning: bool, reason: &str, message: String) -> Action {
    Action::Event(Note {
        regarding,
        warning,
        reason: reason.to_string(),
        message,
    })
}

/// The LoadBalancerPool resource, for dynamic access (pools are read as
/// raw objects so that one the spec type cannot read is reported in its
/// status instead of failing the whole watch).
pub fn pools_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crds::GROUP, crds::VERSION, "LoadBalancerPool"),
        "loadbalancerpools",
    )
}

/// A reflector task and its store; the task stops when this is dropped
/// (also when the term's task is aborted).
pub(crate) struct Reflected<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub(crate) store: Store<K>,
    task: JoinHandle<()>,
}

impl<K: kube::Resource + Clone + 'static> Drop for Reflected<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: kube::Resource + Clone + 'static> From<(Store<K>, JoinHandle<()>)> for Reflected<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn from((store, task): (Store<K>, JoinHandle<()>)) -> Self {
        Reflected { store, task }
    }
}

/// Runs the LoadBalancer IP task for one term, until aborted.
pub async fn run(ctx: LeaderContext, opts: LbOptions) -> Result<(), crate::ControllerError> {
    let client = ctx.client.clone();
    let (tx, mut changes) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let services: Reflected<_> = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        Default::default(),
        "Service",
        tx.clone(),
    )
    .into();
    let namespaces: Reflected<_> = reflect(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        Default::default(),
        "Namespace",
        tx.clone(),
    )
    .into();
    let ar = pools_resource();
    let mut pool_config = watcher::Config::default();
    if let Some(sel) = &opts.pool_selector {
        pool_config = pool_config.labels(sel);
    }
    let pools: Reflected<_> = reflect(
        Api::<DynamicObject>::all_with(client.clone(), &ar),
        pool_config,
        reflector::store::Writer::new(ar.clone()),
        "LoadBalancerPool",
        tx.clone(),
    )
    .into();

    // Nothing is decided from a partial view: a Service missing from an
    // unfinished list would look deleted, a pool missing would drop its
    // addresses.
    loop {
        let all = async {
            let _ = services.store.wait_until_ready().await;
            let _ = namespaces.store.wait_until_ready().await;
            let _ = pools.store.wait_until_ready().await;
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_ok()
        {
            break;
        }
        tracing::warn!(
            "waiting for the first lists of Services, Namespaces and LoadBalancerPools (are the CRDs installed, may this service account list them?)"
        );
    }

    tracing::info!(identity = %ctx.identity, class = ?opts.class, "every kind listed; assigning LoadBalancer addresses");
    let mut lb = Lb::new(opts.class.as_deref());
    let mut retry = Duration::from_secs(1);
    let mut failed_last = false;
    loop {
        changes.borrow_and_update();
        let (svcs, nss, pls) = (
            services.store.state(),
            namespaces.store.state(),
            pools.store.state(),
        );
        let pass = lb.reconcile(
            &View {
                services: &svcs,
                namespaces: &nss,
                pools: &pls,
            },
            Timestamp::now(),
        );
        ctx.metrics.allocations.inc_by(pass.allocated);
        for reason in &pass.errors {
            ctx.metrics
                .allocation_errors
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc();
        }
        let failed = execute(&ctx, &ar, pass.actions).await?;
        for a in &failed {
            lb.write_failed(a);
        }
        ctx.synced.store(true, Ordering::SeqCst);

        // Wait for a change, the resync, or (after failed writes) a retry
        // with backoff.
        let wait = if failed.is_empty() {
            failed_last = false;
            retry = Duration::from_secs(1);
            RESYNC
        } else {
            if failed_last {
                retry = (retry * 2).min(Duration::from_secs(30));
            }
            failed_last = true;
            retry
        };
        let _ = tokio::time::timeout(wait, changes.changed()).await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Sends the actions, a few at a time; returns those that failed. Stops
/// with an error when this process no longer leads.
async fn execute(
    ctx: &LeaderContext,
    pools: &ApiResource,
    actions: Vec<Action>,
) -> Result<Vec<Action>, crate::ControllerError> {
    let results: Vec<Result<Option<Action>, ()>> = futures::stream::iter(actions)
        .map(|action| async move {
            // Checked before every write, not only when the election task
            // says so: a write after the term's deadline could undo what a
            // new leader wrote.
            if !ctx.leadership.is_leading() {
                return Err(());
            }
            Ok(send(ctx, pools, &action).await.err().map(|()| action))
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut failed = Vec::new();
    for r in results {
        match r {
            Err(()) => return Err(crate::ControllerError::NotLeading),
            Ok(Some(a)) => failed.push(a),
            Ok(None) => {}
        }
    }
    Ok(failed)
}

/// One action; `Err` when it should be tried again.
async fn send(ctx: &LeaderContext, pools: &ApiResource, action: &Action) -> Result<(), ()> {
    let params = PatchParams::default();
    match action {
        Action::Ingress { key, ips } => {
            let api = Api::<Service>::namespaced(ctx.client.clone(), &key.namespace);
            let ingress = if ips.is_empty() {
                Value::Null
            } else {
                ips.iter()
                    .map(|ip| json!({"ip": ip.to_string()}))
                    .collect::<Value>()
            };
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            match api
                .patch_status(&key.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    ctx.metrics.status_writes.inc();
                    tracing::info!(service = %key, ips = ?ips, "wrote LoadBalancer ingress");
                    Ok(())
                }
                // Deleted meanwhile: the watch will say so.
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => {
                    ctx.metrics.api_errors.inc();
                    tracing::warn!(service = %key, error = %e, "cannot write LoadBalancer ingress; will retry");
                    Err(())
                }
            }
        }
        Action::PoolStatus { name, status } => {
            let api = Api::<DynamicObject>::all_with(ctx.client.clone(), pools);
            // The whole status, nulls included, so counts of a pool that
            // became refused are removed.
            let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut body {
                for field in ["usedIPv4", "freeIPv4", "usedIPv6", "freeIPv6"] {
                    m.entry(field).or_insert(Value::Null);
                }
            }
            let patch = json!({ "status": body });
            match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    ctx.metrics.status_writes.inc();
                    tracing::debug!(pool = %name, "wrote LoadBalancerPool status");
                    Ok(())
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => {
                    ctx.metrics.api_errors.inc();
                    tracing::warn!(pool = %name, error = %e, "cannot write LoadBalancerPool status; will retry");
                    Err(())
                }
            }
        }
        Action::Event(n) => {
            let event = Event {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.clone(),
                note: Some(truncate(&n.message, NOTE_LIMIT)),
                action: "AllocateLoadBalancerIP".into(),
                secondary: None,
            };
            // An Event that cannot be published is logged, not retried:
            // the status and the log say the same.
            if let Err(e) = ctx.recorder.publish(&event, &n.regarding).await {
                ctx.metrics.api_errors.inc();
                tracing::warn!(reason = %n.reason, error = %e, "cannot publish Event");
            }
            Ok(())
        }
    }
}

/// At most `limit` bytes, cut at a character boundary.
fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests;
