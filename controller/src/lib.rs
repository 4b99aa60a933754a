//! `petrel controller`: the cluster-wide work no single node's agent should
//! do. One replica acts (the leader, through a Lease); the others stand by.
//!
//! ```text
//!  main loop ── Leadership::acquired ──► term: one tokio task per LeaderTask
//!     ▲                                    ├── "loadbalancer-ips" (lb.rs)
//!     │                                    ├── "conditions" (conditions.rs)
//!     │                                    ├── "ipam-pools" (ipam_pools.rs)
//!     │                                    ├── "ipam-gc" (ipam_gc.rs)
//!     │                                    ├── "prune-status" (prune.rs)
//!     │                                    └── ... (another module adds its own)
//!     │            Leadership::lost or SIGTERM: every task aborted and awaited
//!     └──────────────────────────────────────┘
//!  Elector task (lease.rs): tries / renews the Lease every retry period
//!  SIGTERM: stop the term's tasks, then release the Lease, then exit
//! ```
//!
//! **Leader-only tasks.** Everything that writes runs as a [`LeaderTask`],
//! listed in [`leader_tasks`]: started at the beginning of every term with
//! a [`LeaderContext`], aborted (and awaited) the moment the term ends. A
//! task that returns an error is started again after a backoff, for as long
//! as the term lasts. A task keeps nothing across terms: it lists what it
//! needs afresh, so a new term starts from what the previous leader wrote.

pub mod conditions;
mod error;
pub mod health;
pub mod ipam_gc;
pub mod ipam_pools;
pub mod lb;
pub mod lease;
pub mod prune;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::runtime::events::{Recorder, Reporter};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::lease::{Elector, Leadership, Timing};
use health::{Health, Metrics};

pub use error::ControllerError;

/// The name Events are reported under (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "petrel.dev/controller";

/// How long the Lease release on shutdown may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of `petrel controller`.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Elect a leader through a Lease (else act at once).
    pub leader_elect: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Lease duration, renew deadline, retry period.
    pub timing: Timing,
    /// The LoadBalancer IP task's settings.
    pub lb: lb::LbOptions,
    /// Garbage collection of pod addresses (`None`: off).
    pub ipam_gc: Option<ipam_gc::GcOptions>,
    /// Where to serve metrics and health (`None`: nowhere).
    pub metrics: Option<SocketAddr>,
}

/// What a leader-only task gets at the start of a term.
#[derive(Clone)]
pub struct LeaderContext {
    /// A client for the API server.
    pub client: kube::Client,
    /// Whether this replica still leads; check [`Leadership::is_leading`]
    /// before a write that must not happen after the term (the task is
    /// aborted when the term ends, but a write already begun is not).
    pub leadership: Leadership,
    /// Publishes Events as this replica of the controller.
    pub recorder: Recorder,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// This replica's identity.
    pub identity: String,
    /// Set by the LoadBalancer task after its first pass of the term
    /// (`/readyz`).
    pub synced: Arc<AtomicBool>,
}

/// A task that runs only while this replica leads.
pub struct LeaderTask {
    /// Its name, for logs.
    pub name: &'static str,
    start:
        Box<dyn Fn(LeaderContext) -> BoxFuture<'static, Result<(), ControllerError>> + Send + Sync>,
}

impl LeaderTask {
    /// A task named `name`; `start` makes its future for one term (again
    /// after an error).
    pub fn new<F, Fut>(name: &'static str, start: F) -> Self
    where
        F: Fn(LeaderContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ControllerError>> + Send + 'static,
    {
        LeaderTask {
            name,
            start: Box::new(move |ctx| Box::pin(start(ctx))),
        }
    }
}

/// The leader-only tasks. **The hook**: a module with work only the
/// leader may do adds its task here, e.g.
/// `LeaderTask::new("conditions", conditions::run)` for a
/// `pub async fn run(ctx: LeaderContext) -> Result<(), ControllerError>`.
pub fn leader_tasks(opts: &ControllerOptions) -> Vec<LeaderTask> {
    let lb = opts.lb.clone();
    let mut tasks = vec![
        LeaderTask::new("loadbalancer-ips", move |ctx| lb::run(ctx, lb.clone())),
        // Ready conditions, Events and the BGPPeer summary (conditions.rs).
        LeaderTask::new("conditions", conditions::run),
        // IPPool usage and whether nodes use it (ipam_pools.rs).
        LeaderTask::new("ipam-pools", ipam_pools::run),
        // BGPPeer status entries of deleted Nodes (prune.rs).
        LeaderTask::new("prune-status", prune::run),
    ];
    if let Some(gc) = opts.ipam_gc {
        tasks.push(LeaderTask::new("ipam-gc", move |ctx| ipam_gc::run(ctx, gc)));
    }
    tasks
}

/// Why a term ended.
enum TermEnd {
    Lost,
    Shutdown,
}

/// Runs every task for one term: until leadership is lost or shutdown is
/// asked for; then every task is aborted and awaited, so nothing acts any
/// more when this returns.
async fn lead(
    ctx: LeaderContext,
    tasks: &[Arc<LeaderTask>],
    shutdown: &mut watch::Receiver<bool>,
) -> TermEnd {
    let mut set = JoinSet::new();
    for task in tasks {
        let task = task.clone();
        let ctx = ctx.clone();
        set.spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                match (task.start)(ctx.clone()).await {
                    Ok(()) => {
                        tracing::info!(task = task.name, "leader task finished");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(task = task.name, error = %e, ?backoff, "leader task failed; starting it again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
    let end = tokio::select! {
        _ = ctx.leadership.lost() => TermEnd::Lost,
        _ = shutdown.wait_for(|s| *s) => TermEnd::Shutdown,
    };
    set.shutdown().await;
    ctx.synced.store(false, Ordering::SeqCst);
    end
}

/// This replica's identity when none is given: `$POD_NAME`, else
/// `hostname-pid`.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "petrel".into());
    format!("{host}-{}", std::process::id())
}

/// The Lease's namespace when none is given: `$POD_NAMESPACE`, else
/// `default`.
pub fn default_lease_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Parses a duration: `15s`, `500ms`, `2m`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 15s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(opts: ControllerOptions) -> Result<(), ControllerError> {
    let mut term = signal(SignalKind::terminate()).map_err(ControllerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControllerError::Signals)?;
    let (shutdown_tx, mut shutdown) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown_tx.send_replace(true);
    });

    let client = kube::Client::try_default()
        .await
        .map_err(ControllerError::Kube)?;
    let metrics = Arc::new(Metrics::default());
    let synced = Arc::new(AtomicBool::new(false));
    let (leadership, elector, contact) = if opts.leader_elect {
        let leadership = Leadership::elected();
        let elector = Elector::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
            opts.timing,
            leadership.clone(),
        )?;
        let contact = elector.contact();
        (leadership, Some(elector), contact)
    } else {
        (Leadership::always(), None, watch::channel(true).1)
    };
    let _metrics_server = match opts.metrics {
        Some(addr) => Some(
            health::serve(
                addr,
                Health::new(&metrics, leadership.clone(), contact, synced.clone()),
            )
            .await?,
        ),
        None => None,
    };
    tracing::info!(
        identity = %opts.identity,
        leader_elect = opts.leader_elect,
        lease = %format!("{}/{}", opts.lease_namespace, opts.lease_name),
        class = ?opts.lb.class,
        "controller started"
    );

    // The election runs on its own task, so that a busy term never delays
    // a renewal; it hands the Elector back when stopped, for the release.
    let (stop_election, stop_rx) = watch::channel(false);
    let election = elector.map(|mut e| {
        tokio::spawn(async move {
            e.run(stop_rx).await;
            e
        })
    });

    let ctx = LeaderContext {
        client: client.clone(),
        leadership: leadership.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTING_CONTROLLER.into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        metrics: metrics.clone(),
        identity: opts.identity.clone(),
        synced,
    };
    let tasks: Vec<Arc<LeaderTask>> = leader_tasks(&opts).into_iter().map(Arc::new).collect();
    loop {
        tokio::select! {
            _ = leadership.acquired() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        metrics.leader.set(1);
        tracing::info!("leading: starting the leader tasks");
        let end = lead(ctx.clone(), &tasks, &mut shutdown).await;
        metrics.leader.set(0);
        match end {
            TermEnd::Shutdown => break,
            TermEnd::Lost => tracing::warn!("no longer leading: leader tasks stopped"),
        }
    }

    // Nothing acts any more (the term's tasks are aborted and awaited):
    // now the Lease may go, so a standby takes over without waiting for it
    // to expire.
    stop_election.send_replace(true);
    if let Some(task) = election {
        match task.await {
            Ok(mut elector) => {
                match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot release the Lease; it expires by itself")
                    }
                    Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
                }
            }
            Err(e) => tracing::error!(error = %e, "the election task failed"),
        }
    }
    tracing::info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
