//! `petrel agent`: the node agent. Reads the source, plans, drives the speaker,
//! serves the API, and applies changes without a restart.
//!
//! - [`fib`]: the speaker's best paths into the kernel, through route-sync.
//! - [`status`]: the node's state written back to the API server.
//! - [`metrics`]: `/metrics`, `/healthz` and `/readyz`.
//! - `pod_ipam`: pod addresses for the CNI plugin, on a unix socket.
//! - `bfd_glue`: the BFD runtime, and its sessions' state passed to the
//!   speaker, metrics, the API and status.

mod bfd_glue;
mod error;
pub mod fib;
mod last_good;
pub mod metrics;
pub mod nat;
pub mod overlay;
mod pod_ipam;
pub mod status;
pub mod supervise;
pub mod wireguard;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::ManagedHandle;
use bgpd::speaker::{RestartState, Speaker};
use model::{FileSource, KubeSource};

pub use error::AgentError;
/// The node's BFD sessions as the runtime last published them.
pub type BfdStatus = Arc<Vec<bfd::runtime::PeerStatus>>;
pub use overlay::OverlayOptions;
pub use pod_ipam::IpamOptions;
use tokio::signal::unix::{SignalKind, signal};

/// Which source `--source` names: `files:DIR` or `kube`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory of YAML objects.
    Files(PathBuf),
    /// The Kubernetes API server (in-cluster configuration, or KUBECONFIG).
    Kube,
}

impl std::str::FromStr for SourceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("files", dir)) if !dir.is_empty() => Ok(SourceKind::Files(PathBuf::from(dir))),
            _ if s == "kube" => Ok(SourceKind::Kube),
            _ => Err(format!("unknown source {s:?}: use files:DIR or kube")),
        }
    }
}

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Desired state.
    pub source: SourceKind,
    /// This node's name.
    pub node: String,
    /// The API's unix socket.
    pub api_socket: PathBuf,
    /// The API on TCP with mutual TLS, if wanted.
    pub api_tcp: Option<api::TcpApi>,
    /// How often the source is checked for changes.
    pub poll: Duration,
    /// Program the kernel FIB (`None`: leave the kernel alone).
    pub fib: Option<fib::FibOptions>,
    /// Remove petrel's routes from the kernel on exit.
    pub flush_routes_on_exit: bool,
    /// Where to serve metrics and health (`None`: nowhere).
    pub metrics: Option<std::net::SocketAddr>,
    /// Record the speaker's inputs into this directory, for replay.
    pub record_speaker: Option<PathBuf>,
    /// With the kube source: where the last planned snapshot is saved, and
    /// started from when the API server cannot be reached at start.
    pub saved_snapshot: Option<PathBuf>,
    /// Serve pod addresses to the CNI plugin (`None`: no pod IPAM).
    pub ipam: Option<IpamOptions>,
    /// The overlay's settings (it runs whenever the FIB is programmed).
    pub overlay: OverlayOptions,
}

/// Starts the speaker, recording its inputs into `record` when given.
async fn start_speaker(
    plan: &planner::Plan,
    restart: RestartState,
    record: Option<&std::path::Path>,
) -> Result<Speaker, String> {
    match record {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "recording the speaker's inputs");
            Speaker::start_recording(plan.speaker.clone(), restart, dir)
                .await
                .map_err(|e| e.to_string())
        }
        None => Speaker::start_with(plan.speaker.clone(), restart)
            .await
            .map_err(|e| e.to_string()),
    }
}

/// The snapshot saved at `path` and when it was saved, if it can be read
/// (else says why).
fn start_from_saved(path: &std::path::Path) -> Option<(model::Snapshot, String)> {
    match model::saved::load(path) {
        Ok((snapshot, at)) => {
            let at = k8s_openapi::jiff::Timestamp::try_from(at)
                .map(|t| t.to_string())
                .unwrap_or_default();
            tracing::warn!(file = %path.display(), saved_at = %at, "the API server cannot be reached: starting from the snapshot saved before; its objects replace it once it answers");
            Some((snapshot, at))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no saved snapshot to start from; waiting for the API server");
            None
        }
    }
}

/// Saves each snapshot planned from the API server to `path`, at most
/// every [`SAVE_INTERVAL`] (the newest one wins). One with the objects of
/// `loaded` (the file a resumed agent started from) is not saved again.
async fn save_snapshots(
    path: PathBuf,
    mut planned: tokio::sync::watch::Receiver<Option<Arc<model::Snapshot>>>,
    loaded: Option<model::Snapshot>,
) -> Result<(), std::convert::Infallible> {
    while planned.changed().await.is_ok() {
        let Some(snapshot) = planned.borrow_and_update().clone() else {
            continue;
        };
        if loaded
            .as_ref()
            .is_some_and(|l| model::saved::same_objects(l, &snapshot))
        {
            continue;
        }
        let p = path.clone();
        match tokio::task::spawn_blocking(move || model::saved::save(&p, &snapshot)).await {
            Ok(Ok(())) => tracing::debug!(file = %path.display(), "snapshot saved"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the snapshot is not saved"),
            Err(e) => tracing::warn!(error = %e, "the snapshot is not saved"),
        }
        tokio::time::sleep(SAVE_INTERVAL).await;
    }
    Ok(())
}

/// The shortest time between two saves of the snapshot.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until SIGTERM or SIGINT.
pub async fn run(opts: AgentOptions) -> Result<(), AgentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    // Adopt the kernel's routes before anything else runs, so what survived a
    // restart keeps forwarding untouched until the new desired set is known.
    let reconciler = match &opts.fib {
        Some(f) => Some(
            route_sync::Reconciler::start(route_sync::Options {
                table: f.table,
                protocol: f.protocol,
                ..route_sync::Options::default()
            })
            .await?,
        ),
        None => None,
    };
    // Our routes in the kernel mean a previous run: this is a restart, and its
    // forwarding state survived (the graceful restart R and F bits).
    let mut restart = RestartState::default();
    if let Some(r) = &reconciler {
        let adopted = r.report().adopted;
        tracing::info!(adopted, "kernel routes found from a previous run");
        restart.restarted = adopted > 0;
        restart.forwarding_preserved = adopted > 0;
    }
    let fib_report = reconciler.as_ref().map(route_sync::Reconciler::subscribe);
    // Health and metrics from the start: alive (and not ready) even before a
    // usable configuration starts the speaker.
    let (speaker_tx, speaker_rx) = tokio::sync::watch::channel(None);
    let supervisor = supervise::Supervisor::default();
    let (bfd_status_tx, bfd_status_rx) = tokio::sync::watch::channel(BfdStatus::default());
    let metrics_server = match opts.metrics {
        Some(addr) => Some(
            metrics::serve(
                addr,
                speaker_rx,
                fib_report.clone(),
                supervisor.subscribe(),
                bfd_status_rx.clone(),
            )
            .await?,
        ),
        None => None,
    };
    // After health and signals: a kube source may wait long for its first
    // lists, and must stay stoppable and say it is alive meanwhile.
    // What a resumed agent started from: not saved again as if new.
    let mut loaded = None;
    let (mut feed, client) = match &opts.source {
        SourceKind::Files(dir) => {
            if !dir.is_dir() {
                return Err(AgentError::NoSourceDir(dir.clone()));
            }
            (
                Box::new(FileSource::new(dir.clone(), opts.poll)) as Box<dyn model::Source>,
                None,
            )
        }
        SourceKind::Kube => {
            let mut k = KubeSource::connect().await?;
            k.set_poll(opts.poll);
            // A plan from a partial view would withdraw what is not listed
            // yet; until every kind is listed, nothing is planned. The
            // Secrets BGPPeers name alone are given up on after 30 s
            // (reading one may not be allowed).
            let mut tries = 0;
            let mut resumed = None;
            loop {
                tokio::select! {
                    r = k.wait_ready(Duration::from_secs(10)) => match r {
                        Ok(()) => break,
                        Err(missing) if missing == ["Secret"] && tries >= 2 => {
                            tracing::warn!("the Secrets BGPPeers name cannot be read; planning without them (peers with passwords stay unconfigured until they can)");
                            break;
                        }
                        Err(missing) => {
                            tracing::warn!(
                                missing = %missing.join(", "),
                                "waiting for the API server's first lists (is it reachable, are the petrel CRDs installed, may this service account list them?)"
                            );
                            // Restarted while the API server cannot be
                            // reached: what was planned before, until it can.
                            if tries == 0
                                && !k.is_listed()
                                && let Some(path) = &opts.saved_snapshot
                            {
                                resumed = start_from_saved(path);
                                if resumed.is_some() {
                                    break;
                                }
                            }
                        }
                    },
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                }
                tries += 1;
            }
            let client = k.client();
            let feed: Box<dyn model::Source> = match resumed {
                Some((saved, at)) => {
                    loaded = Some(saved.clone());
                    Box::new(model::saved::Resumed::new(saved, at, k))
                }
                None => {
                    tracing::info!("every kind listed from the API server");
                    Box::new(k)
                }
            };
            (feed, Some(client))
        }
    };
    // In a cluster, the node's state goes back to the API server: its own
    // BGPPeer session entries, Node condition and BGPNodeStatus.
    let (status_tx, status_rx) = tokio::sync::watch::channel(None);
    // What the planner decided about each prefix, and the overlay's view,
    // for `petrel status` and the node's status object.
    let (view_tx, view_rx) = tokio::sync::watch::channel(api::AgentView::default());
    let status_task = match &client {
        Some(client) => Some(status::spawn(
            &supervisor,
            client.clone(),
            opts.node.clone(),
            speaker_tx.subscribe(),
            status_rx,
            view_rx.clone(),
        )),
        // Nobody to report to: `publish` then skips the work.
        None => {
            drop(status_rx);
            None
        }
    };
    // Pod addresses: in the API server's IPAMBlocks, or the state file.
    let (pools_tx, pools_rx) = tokio::sync::watch::channel(None);
    // The node's blocks and borrowed addresses, which it routes.
    let (local_ipam_tx, local_ipam_rx) = tokio::sync::watch::channel(model::LocalIpam::default());
    let mut local_ipam_rx = opts.ipam.is_some().then_some(local_ipam_rx);
    let ipam_task = match &opts.ipam {
        Some(o) => {
            let store = match &client {
                Some(c) => pod_ipam::Store::Kube(Box::new(ipam_store::KubeBlocks::new(c.clone()))),
                None => pod_ipam::Store::File(ipam_store::FileBlocks::new(&o.state_file)),
            };
            Some(
                pod_ipam::spawn(
                    &supervisor,
                    o,
                    opts.node.clone(),
                    store,
                    pools_rx,
                    local_ipam_tx,
                )
                .map_err(|source| AgentError::IpamSocket {
                    socket: o.socket.clone(),
                    source,
                })?,
            )
        }
        None => {
            drop(pools_rx);
            None
        }
    };
    let mut reconciler = reconciler;
    let (fib_tx, fib_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut fib_rx = Some(fib_rx);
    let mut fib_task = None;
    let mut speaker: Option<Speaker> = None;
    let mut applied: Option<planner::Plan> = None;
    let mut bfd_glue = bfd_glue::BfdGlue::new(bfd_status_tx);
    let mut api_server = None;
    // Tunnels, natOutgoing and MTU: wherever the kernel is programmed.
    let (overlay_tx, overlay_rx) = tokio::sync::watch::channel(None);
    let overlay_task = opts.fib.as_ref().map(|f| {
        supervisor.spawn(
            "overlay",
            overlay::run(
                f.protocol,
                opts.overlay.clone(),
                client.clone(),
                opts.node.clone(),
                overlay::Links {
                    plans: overlay_rx,
                    speaker: speaker_tx.subscribe(),
                    fib: fib_tx.clone(),
                    view: view_tx.clone(),
                },
            ),
        )
    });
    // Peers and routes added through the API, merged into every plan.
    let (managed, mut managed_rx) = ManagedHandle::new();
    let mut planned: Option<(Arc<model::Snapshot>, planner::Plan)> = None;
    // The last snapshot's problems, for the status the kube source writes.
    let mut problems_seen: Vec<model::Problem> = Vec::new();
    let mut managed_changed = false;
    // The source's last snapshot, kept to plan again when only the node's
    // IPAM view changed.
    let mut last_input: Option<(model::Snapshot, Vec<model::Problem>)> = None;
    let mut ipam_changed = false;
    let mut last_good = last_good::LastGood::default();
    // What the API server gave, kept on the node for a restart without it.
    let (save_tx, save_rx) = tokio::sync::watch::channel(None);
    let _saver = match (&opts.saved_snapshot, &client) {
        (Some(path), Some(_)) => Some(supervisor.spawn(
            "snapshot saver",
            save_snapshots(path.clone(), save_rx, loaded.take()),
        )),
        _ => None,
    };
    loop {
        let mut dirty = std::mem::take(&mut managed_changed);
        let mut input = feed.poll();
        if input.is_some() && local_ipam_rx.is_some() {
            last_input.clone_from(&input);
        } else if std::mem::take(&mut ipam_changed) {
            input.clone_from(&last_input);
        }
        if let Some((mut snapshot, mut problems)) = input {
            if let Some(rx) = &mut local_ipam_rx {
                snapshot.local_ipam = rx.borrow_and_update().clone();
            }
            dirty = true;
            let (mut config, more) = planner::plan(&snapshot, &opts.node);
            problems.extend(more);
            // A BGPPeer an edit made invalid: its last valid version, not
            // no peer (and no session) at all.
            let restored = last_good.restore(&mut snapshot, &problems);
            if !restored.is_empty() {
                tracing::warn!(peers = ?restored, "invalid BGPPeers: their last valid versions stay in force");
                let (again, more) = planner::plan(&snapshot, &opts.node);
                config = again;
                problems = last_good::LastGood::word(&restored, problems, more);
            }
            last_good.remember(&snapshot, &problems);
            if overlay_task.is_some() {
                let o = planner::overlay::plan(&snapshot, &opts.node);
                overlay_tx.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&o) {
                        return false;
                    }
                    *cur = Some(Arc::new(o));
                    true
                });
            }
            if opts.ipam.is_some() {
                let view = Some(pod_ipam::view_for(&snapshot, &opts.node));
                pools_tx.send_if_modified(|cur| {
                    let differs = *cur != view;
                    if differs {
                        *cur = view;
                    }
                    differs
                });
            }
            for p in &problems {
                tracing::warn!(problem = %p, "configuration problem");
            }
            problems_seen = problems;
            match config {
                Some(c) => {
                    let snapshot = Arc::new(snapshot);
                    save_tx.send_replace(Some(snapshot.clone()));
                    planned = Some((snapshot, c));
                }
                None if speaker.is_some() => tracing::warn!(
                    "no usable BGPConfiguration; keeping the last applied configuration"
                ),
                None if status_tx.receiver_count() > 0 => {
                    status_tx.send_replace(Some(Arc::new(status::Applied::unconfigured(
                        Arc::new(snapshot),
                        problems_seen.clone(),
                    ))));
                }
                None => {}
            }
        }
        if dirty && let Some((snapshot, plan)) = &planned {
            let mut c = plan.clone();
            for p in api::merge(&mut c, &managed.snapshot(), snapshot) {
                tracing::warn!(problem = %p, "API object not used");
            }
            // Published once applied, so status never shows what is not running.
            let view = api::AgentView {
                node: opts.node.clone(),
                asn: c.speaker.asn,
                router_id: Some(c.speaker.router_id),
                intents: c.intents.clone(),
                snapshot: snapshot.clone(),
                overlay: view_tx.borrow().overlay.clone(),
                bfd: Some(bfd_status_rx.clone()),
            };
            match &speaker {
                None => match start_speaker(&c, restart, opts.record_speaker.as_deref()).await {
                    Ok(s) => {
                        tracing::info!(asn = c.speaker.asn, router_id = %c.speaker.router_id, peers = c.speaker.neighbors.len(), "speaker started");
                        view_tx.send_replace(view);
                        api_server = Some(api::serve(
                            &opts.api_socket,
                            opts.api_tcp.as_ref(),
                            s.clone(),
                            view_rx.clone(),
                            managed.clone(),
                        )?);
                        speaker_tx.send_replace(Some(s.clone()));
                        // After the speaker, so the report never sees a plan
                        // without the speaker that runs it.
                        status::publish(&status_tx, &c, snapshot, &problems_seen);
                        if let (Some(r), Some(f), Some(rx)) =
                            (reconciler.take(), &opts.fib, fib_rx.take())
                        {
                            fib_task = Some(
                                supervisor.spawn("FIB", fib::run(s.clone(), r, f.clone(), rx)),
                            );
                        }
                        let _ = fib_tx.send(fib::FibInput::Blackholes(c.blackholes.clone()));
                        bfd_glue.apply(&c.bfd, &s).await;
                        speaker = Some(s);
                        applied = Some(c);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the speaker; retrying when the source changes")
                    }
                },
                Some(s) if applied.as_ref() != Some(&c) => {
                    let same_speaker = applied.as_ref().map(|a| &a.speaker) == Some(&c.speaker);
                    let outcome = if same_speaker {
                        Ok(())
                    } else {
                        s.configure(c.speaker.clone()).await
                    };
                    match outcome {
                        Ok(()) => {
                            tracing::info!(
                                peers = c.speaker.neighbors.len(),
                                routes = c.speaker.originate.len(),
                                "configuration applied"
                            );
                            let _ = fib_tx.send(fib::FibInput::Blackholes(c.blackholes.clone()));
                            bfd_glue.apply(&c.bfd, s).await;
                            view_tx.send_replace(view);
                            status::publish(&status_tx, &c, snapshot, &problems_seen);
                            applied = Some(c);
                        }
                        Err(e) => {
                            // Tried again at the next poll: an API change the
                            // client was told succeeded must not be lost.
                            tracing::error!(error = %e, "cannot apply the configuration; retrying");
                            managed_changed = true;
                        }
                    }
                }
                Some(_) => {
                    view_tx.send_replace(view);
                    status::publish(&status_tx, &c, snapshot, &problems_seen);
                }
            }
        }
        tokio::select! {
            _ = feed.changed() => {}
            r = managed_rx.changed() => managed_changed = r.is_ok(),
            r = async { local_ipam_rx.as_mut()?.changed().await.ok() }, if local_ipam_rx.is_some() => {
                match r {
                    Some(()) => ipam_changed = true,
                    // The IPAM task is gone: its last view stands.
                    None => local_ipam_rx = None,
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    bfd_glue.stop().await;
    if let Some(t) = status_task {
        t.abort();
    }
    if let Some(t) = ipam_task {
        t.abort();
        if let Some(o) = &opts.ipam {
            let _ = std::fs::remove_file(&o.socket);
        }
    }
    if let Some(s) = speaker {
        s.shutdown().await;
    }
    if let Some(server) = api_server {
        server.stop();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    if let Some(t) = fib_task {
        t.abort();
    }
    if let Some(t) = overlay_task {
        t.abort();
    }
    if opts.flush_routes_on_exit
        && let Some(f) = &opts.fib
    {
        // The reconciler went with its task; a fresh one removes our routes.
        let r = route_sync::Reconciler::start(route_sync::Options {
            table: f.table,
            protocol: f.protocol,
            ..route_sync::Options::default()
        })
        .await?;
        r.stop(true).await?;
        tracing::info!("petrel's kernel routes removed");
        // And what the overlay made: tunnel devices, natOutgoing's table.
        let k = route_sync::Kernel::connect(f.protocol)?;
        for name in planner::overlay::VXLAN_DEVICES
            .into_iter()
            .chain([planner::overlay::IPIP_DEVICE])
        {
            match k.remove_link(name).await {
                Ok(true) => tracing::info!(device = name, "tunnel device removed"),
                Ok(false) => {}
                Err(e) => tracing::warn!(device = name, error = %e, "cannot remove tunnel device"),
            }
        }
        if let Err(e) = nat::apply(&nat::remove_script()).await {
            tracing::warn!(error = %e, "cannot remove natOutgoing's table");
        }
        let mut wg = wireguard::WireGuard::new(opts.overlay.wireguard.clone(), f.protocol);
        wg.remove(&k).await;
    }
    let _ = std::fs::remove_file(&opts.api_socket);
    Ok(())
}
