//! Pod addresses for the CNI plugin (`petrel-ipam`): the agent answers it
//! on a unix socket, one JSON request and one reply per connection
//! (`cni::wire`).
//!
//! One worker task answers requests one at a time, so this node's requests
//! never race each other for its own blocks; other nodes' do, and the
//! store's compare-and-swap settles that. The blocks live in the API server
//! (`--source kube`: IPAMBlock objects) or in a local state file (`--source
//! files:DIR`). Every minute the worker gives up this node's blocks that
//! have stayed empty past the grace period (never its last of a pool).
//!
//! The worker also publishes the node's view for routing
//! ([`model::LocalIpam`]: its blocks, the addresses it borrowed, its tunnel
//! address), re-read shortly after each change and every 10 s. It holds
//! the node's tunnel address while the overlay needs one (see
//! [`tunnel`]), and gives it back when not.

mod handle;
mod pools;
mod tunnel;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cni::wire::{Failure, Reply, Request, code};
use ipam::pod::{Block, BlockStore, Settings, StoreError, release_blocks};
use ipam_store::{FileBlocks, KubeBlocks};
use ipnet::IpNet;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub(crate) use pools::{PoolsView, view_for};

/// The most requests answered together.
const MAX_BURST: usize = 256;

/// The longest request line read (GC's list of attachments is the long
/// one: ~100 bytes an attachment).
const MAX_REQUEST: u64 = 4 << 20;

/// Settings of the IPAM service.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// The unix socket `petrel-ipam` connects to.
    pub socket: PathBuf,
    /// The state file for `--source files:DIR` (blocks in a cluster are
    /// IPAMBlock objects).
    pub state_file: PathBuf,
    /// How long a given-back address waits before it is reused.
    pub cooldown: Duration,
    /// How long a block stays empty before its node gives it up.
    pub block_grace: Duration,
}

/// Where the blocks are.
#[derive(Clone)]
pub(crate) enum Store {
    /// IPAMBlock objects.
    Kube(Box<KubeBlocks>),
    /// A local state file.
    File(FileBlocks),
}

impl BlockStore for Store {
    async fn list(&self) -> Result<Vec<(Block, String)>, StoreError> {
        match self {
            Store::Kube(s) => s.list().await,
            Store::File(s) => s.list().await,
        }
    }
    async fn create(&self, block: &Block) -> Result<(), StoreError> {
        match self {
            Store::Kube(s) => s.create(block).await,
            Store::File(s) => s.create(block).await,
        }
    }
    async fn update(&self, block: &Block, version: &str) -> Result<(), StoreError> {
        match self {
            Store::Kube(s) => s.update(block, version).await,
            Store::File(s) => s.update(block, version).await,
        }
    }
    async fn delete(&self, cidr: IpNet, version: &str) -> Result<(), StoreError> {
        match self {
            Store::Kube(s) => s.delete(cidr, version).await,
            Store::File(s) => s.delete(cidr, version).await,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Job = (Request, oneshot::Sender<Reply>);

/// IPv4 forwarding on, before the first pod is made. Main plugins (`ptp`)
/// turn it on at each ADD, but ADDs running at once race in the kernel
/// (a write of `ip_forward` that finds the lock taken is undone and
/// retried, and one that reads the value mid-way sees nothing to change):
/// measured here, 200 concurrent ADDs on a node whose forwarding was off
/// left its uplink, and some pods' links, not forwarding, so other nodes
/// could not reach those pods. Nothing happens when it is on already (the
/// usual case on a node); a failure (a read-only /proc/sys in a
/// container) is logged, not fatal. IPv6 forwarding is left alone: turning
/// it on makes interfaces ignore router advertisements.
fn ensure_forwarding() {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(PATH) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(PATH, "1") {
            Ok(()) => tracing::info!("IPv4 forwarding turned on for the node's pods"),
            Err(e) => tracing::warn!(
                "IPv4 forwarding is off and cannot be turned on ({PATH}: {e}); pods on other nodes will not reach this node's pods"
            ),
        },
        Err(e) => tracing::warn!("cannot read {PATH}: {e}"),
    }
}

/// Serves `opts.socket` for `node` until aborted; `pools`: the node's
/// IPPools from every new snapshot (`None` until the first); `view`: where
/// the node's blocks and borrowed addresses go.
pub(crate) fn spawn(
    supervisor: &crate::supervise::Supervisor,
    opts: &IpamOptions,
    node: String,
    store: Store,
    pools: watch::Receiver<Option<PoolsView>>,
    view: watch::Sender<model::LocalIpam>,
) -> std::io::Result<JoinHandle<()>> {
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by an earlier run would refuse the bind.
    match std::fs::remove_file(&opts.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    ensure_forwarding();
    let listener = UnixListener::bind(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "serving pod addresses to petrel-ipam");
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1024);
    let settings = Settings {
        cooldown: opts.cooldown.as_secs(),
        ..Settings::default()
    };
    let grace = opts.block_grace.as_secs();
    Ok(supervisor.spawn("pod IPAM", async move {
        let mut worker = tokio::spawn(work(store, node, pools, settings, grace, jobs_rx, view));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, jobs_tx.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("petrel-ipam socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // It ends only when the requests close, which this loop
                // holds open: any end is a failure.
                ended = &mut worker => {
                    return Err(match ended {
                        Err(e) if e.is_panic() => "its worker panicked".to_string(),
                        _ => "its worker stopped".to_string(),
                    });
                }
            }
        }
    }))
}

/// Reads one request, has the worker answer it, writes the reply.
async fn connection(stream: UnixStream, jobs: mpsc::Sender<Job>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = BufReader::new(read)
        .take(MAX_REQUEST)
        .read_line(&mut line)
        .await;
    let reply = match read.map(|_| serde_json::from_str::<Request>(&line)) {
        Ok(Ok(request)) => {
            let (tx, rx) = oneshot::channel();
            if jobs.send((request, tx)).await.is_err() {
                Reply::Error(Failure {
                    code: code::TRY_AGAIN,
                    msg: "the petrel agent is stopping".into(),
                    details: String::new(),
                })
            } else {
                rx.await.unwrap_or(Reply::Error(Failure {
                    code: code::TRY_AGAIN,
                    msg: "the petrel agent dropped the request".into(),
                    details: String::new(),
                }))
            }
        }
        Ok(Err(e)) => Reply::Error(Failure {
            code: code::DECODE,
            msg: "the petrel agent cannot read the request".into(),
            details: e.to_string(),
        }),
        Err(e) => Reply::Error(Failure {
            code: code::IO,
            msg: "the petrel agent cannot read the request".into(),
            details: e.to_string(),
        }),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    // The plugin may have gone (its runtime timed out): nothing to do.
    let _ = write.write_all(&out).await;
}

/// The node's blocks, borrowed addresses and tunnel address in `blocks`.
fn local_view(node: &str, blocks: &[(Block, String)]) -> model::LocalIpam {
    let mut view = model::LocalIpam::default();
    let tunnel = ipam::pod::Holder::tunnel(node);
    for (b, _) in blocks {
        if let Some(IpAddr::V4(a)) = b.held_by(&tunnel.handle).next() {
            view.tunnel = Some(a);
        }
        if b.node.as_deref() == Some(node) {
            view.blocks.push(b.cidr);
        } else {
            for a in b.allocations.iter().filter(|a| a.holder.node == node) {
                view.borrowed
                    .push((IpNet::from(b.address(a.ordinal)), b.cidr));
            }
        }
    }
    view.blocks.sort();
    view.borrowed.sort();
    view
}

/// Answers requests one at a time; gives up long-empty blocks; publishes
/// the node's view.
async fn work(
    store: Store,
    node: String,
    mut pools: watch::Receiver<Option<PoolsView>>,
    settings: Settings,
    grace: u64,
    mut jobs: mpsc::Receiver<Job>,
    view: watch::Sender<model::LocalIpam>,
) {
    let mut tidy = tokio::time::interval(Duration::from_secs(60));
    tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reread = tokio::time::interval(Duration::from_secs(10));
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set by a change: the view is re-read once the burst settles (a
    // storm of ADDs costs one read, not one each).
    let mut changed = false;
    let mut tunnel = tunnel::TunnelAddress::default();
    loop {
        let settle = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            () = settle, if changed => {
                changed = false;
                publish(&store, &node, &view).await;
            }
            _ = reread.tick() => {
                publish(&store, &node, &view).await;
                let current = pools.borrow().clone();
                let held = view.borrow().tunnel;
                changed |= tunnel.tend(&store, &node, current.as_ref(), held, settings).await;
            }
            seen = pools.changed() => {
                if seen.is_err() {
                    break;
                }
                let current = pools.borrow_and_update().clone();
                let held = view.borrow().tunnel;
                changed |= tunnel.tend(&store, &node, current.as_ref(), held, settings).await;
            }
            job = jobs.recv() => {
                let Some(first) = job else { break };
                // Everything queued meanwhile goes with it: a burst of ADDs
                // costs one read and one write per block, not one per ADD.
                let mut burst = vec![first];
                while burst.len() < MAX_BURST
                    && let Ok(more) = jobs.try_recv()
                {
                    burst.push(more);
                }
                changed |= burst.iter().any(|(r, _)| {
                    matches!(r, Request::Add { .. } | Request::Del { .. } | Request::Gc { .. })
                });
                let current = pools.borrow().clone();
                let cx = handle::Context {
                    store: &store,
                    node: &node,
                    pools: current.as_ref(),
                    now: now(),
                    settings,
                };
                answer_burst(&cx, burst).await;
            }
            _ = tidy.tick() => {
                match release_blocks(&store, &node, now(), grace).await {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(?gone, "empty blocks given up");
                        changed = true;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("giving up empty blocks: {e}"),
                }
            }
        }
    }
}

/// Answers queued requests in order, consecutive ADDs together.
async fn answer_burst(cx: &handle::Context<'_, Store>, burst: Vec<Job>) {
    let mut adds: Vec<(
        cni::wire::Attachment,
        Option<String>,
        oneshot::Sender<Reply>,
    )> = Vec::new();
    let flush = |adds: Vec<(
        cni::wire::Attachment,
        Option<String>,
        oneshot::Sender<Reply>,
    )>| async {
        if adds.is_empty() {
            return;
        }
        let (requests, senders): (Vec<_>, Vec<_>) =
            adds.into_iter().map(|(a, p, tx)| ((a, p), tx)).unzip();
        let replies = handle::add_many(cx, requests).await;
        for (answer, tx) in replies.into_iter().zip(senders) {
            log_answer("ADD", &answer);
            let _ = tx.send(answer);
        }
    };
    for (request, tx) in burst {
        match request {
            Request::Add { attachment, pod } => adds.push((attachment, pod, tx)),
            other => {
                flush(std::mem::take(&mut adds)).await;
                let verb = verb(&other);
                let answer = handle::handle(cx, other).await;
                log_answer(verb, &answer);
                let _ = tx.send(answer);
            }
        }
    }
    flush(adds).await;
}

fn log_answer(verb: &str, answer: &Reply) {
    match answer {
        Reply::Error(f) => tracing::warn!(verb, code = f.code, "petrel-ipam: {f}"),
        Reply::Addresses { addresses } => tracing::debug!(verb, ?addresses, "handed out"),
        Reply::Done { released } if !released.is_empty() => {
            tracing::info!(verb, ?released, "given back")
        }
        Reply::Done { .. } => {}
    }
}

/// Re-reads the blocks and publishes the node's view if it changed.
async fn publish(store: &Store, node: &str, view: &watch::Sender<model::LocalIpam>) {
    match store.list().await {
        Ok(blocks) => {
            let now = local_view(node, &blocks);
            view.send_if_modified(|v| {
                let differs = *v != now;
                if differs {
                    *v = now;
                }
                differs
            });
        }
        // Kept as it was: routing does not flap on a failed read.
        Err(e) => tracing::warn!("reading the IPAM blocks: {e}"),
    }
}

fn verb(r: &Request) -> &'static str {
    match r {
        Request::Add { .. } => "ADD",
        Request::Del { .. } => "DEL",
        Request::Check { .. } => "CHECK",
        Request::Gc { .. } => "GC",
        Request::Status => "STATUS",
    }
}
