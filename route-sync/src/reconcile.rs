//! The reconciler task: keeps the kernel equal to the wanted routes, repairs
//! drift it sees on the netlink monitor, and touches nothing that is not ours.
//!
//! ```text
//!  desired (watch) ──► reconciler task ──rtnetlink──► kernel
//!  monitor socket ───►   │  targeted repair of our routes,
//!                        │  full re-sync after link/address events or overruns
//!                        └──► Report (watch): installed, failed, conflicts
//! ```

use foldhash::{HashMap, HashSet, HashSetExt};
use std::time::Duration;

use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use tokio::sync::{mpsc, watch};

use crate::kernel::{Kernel, KernelError, from_message};
use crate::route::{Changes, KernelRoute, Route, RouteKey, diff_maps};
use crate::table::{RouteTable, View};

/// Receive buffer asked for on the monitor socket.
const MONITOR_BUFFER: i32 = 32 << 20;

/// Routes queued by [`Reconciler::upsert`] and [`Reconciler::remove`] that
/// one round takes together, and the most one kernel round applies (a call
/// with more goes in several): enough to fill many netlink datagrams, few
/// enough that a round's working set stays small. A million removals in one
/// call (a next hop lost under a full table) made one round's map alone
/// 330 MB.
const ROUND_ROUTES: usize = 16_384;

/// What the reconciler last did, for status and for the speaker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Our routes found in the kernel at start (they survived a restart: the
    /// forwarding state was preserved, the graceful restart F bit).
    pub adopted: usize,
    /// Whether the first full sync has happened (the initial table is in).
    pub synced: bool,
    /// Routes wanted and installed.
    pub installed: usize,
    /// Routes the kernel refused, with the reason.
    pub failed: Vec<(Route, String)>,
    /// Wanted routes held back because another protocol owns the prefix.
    pub conflicts: Vec<(Route, KernelRoute)>,
    /// Routes changed by someone else and put back.
    pub repaired: u64,
    /// Full syncs done.
    pub syncs: u64,
    /// Rounds of changes sent to the kernel.
    pub applies: u64,
    /// Time spent in them, in seconds.
    pub apply_seconds: f64,
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The table to manage.
    pub table: u32,
    /// Our protocol number.
    pub protocol: u8,
    /// How long to wait after a link or address change before re-syncing, so
    /// a burst of events costs one sync.
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            table: crate::route::MAIN_TABLE,
            protocol: crate::route::DEFAULT_PROTOCOL,
            settle: Duration::from_millis(200),
        }
    }
}

/// Changes to the wanted routes.
#[derive(Debug)]
enum Desired {
    /// The complete set: anything of ours not in it goes.
    Set(Vec<Route>),
    /// Add or change these.
    Upsert(Vec<Route>),
    /// Remove these.
    Remove(Vec<crate::route::RouteKey>),
    /// What upserts and removals built is now the complete set.
    Complete,
}

impl Desired {
    /// How many routes it names (`Complete` names none; it counts as one).
    fn len(&self) -> usize {
        match self {
            Desired::Set(r) | Desired::Upsert(r) => r.len(),
            Desired::Remove(k) => k.len(),
            Desired::Complete => 1,
        }
    }
}

/// Handle to a running reconciler.
#[derive(Debug)]
pub struct Reconciler {
    opts: Options,
    commands: mpsc::UnboundedSender<Desired>,
    report: watch::Receiver<Report>,
    task: tokio::task::JoinHandle<()>,
}

impl Reconciler {
    /// Starts the reconciler in the calling thread's network namespace. It
    /// first dumps the kernel and adopts our routes without touching them; the
    /// first [`Reconciler::set`] then applies only the difference.
    pub async fn start(opts: Options) -> Result<Reconciler, KernelError> {
        let kernel = Kernel::connect(opts.protocol)?;
        // A raw socket for notifications. Our own changes would come back on
        // it too; their header carries our batch socket's port id, so a socket
        // filter drops them in the kernel (and the reader skips any left). A
        // large buffer keeps bursts (the kernel caps it at net.core.rmem_max);
        // what is lost anyway shows as ENOBUFS and costs one full re-sync once
        // things are quiet.
        let mut monitor = TokioSocket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
        {
            use rtnetlink::constants::*;
            let groups = RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE;
            monitor
                .socket_mut()
                .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
        }
        if let Err(e) =
            crate::filter::drop_own_notifications(monitor.socket_mut(), kernel.batch_port())
        {
            // Still correct without it (own notifications are skipped when
            // read), only slower and more prone to overruns.
            tracing::warn!(error = %e, "cannot attach the netlink monitor filter");
        }
        if let Err(e) = monitor.socket_mut().set_rx_buf_sz(MONITOR_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the netlink monitor buffer");
        }
        let existing = kernel.dump(opts.table).await?;
        let adopted = existing
            .iter()
            .filter(|k| k.protocol == opts.protocol)
            .count();
        let (desired_tx, desired_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = watch::channel(Report {
            adopted,
            ..Report::default()
        });
        let foreign: HashMap<(u32, ipnet::IpNet), KernelRoute> = existing
            .iter()
            .filter(|k| k.protocol != opts.protocol)
            .map(|k| ((k.route.table, k.route.prefix), k.clone()))
            .collect();
        let mut table = RouteTable::new();
        for k in existing.into_iter().filter(|k| k.protocol == opts.protocol) {
            table.insert(View::Kernel, k.route);
        }
        let task = tokio::spawn(run(
            kernel, opts, desired_rx, report_tx, monitor, table, foreign,
        ));
        Ok(Reconciler {
            opts,
            commands: desired_tx,
            report: report_rx,
            task,
        })
    }

    /// Sets the complete set of wanted routes (their table is the reconciler's).
    /// Until the first call, routes found at start are left alone, so a
    /// restarted agent does not flap routes before it knows what it wants.
    pub fn set(&self, routes: Vec<Route>) {
        let _ = self.commands.send(Desired::Set(routes));
    }

    /// Declares that the routes given so far (by [`Reconciler::upsert`] and
    /// [`Reconciler::remove`]) are the complete set: anything else of ours goes,
    /// as after [`Reconciler::set`], without handing over the whole set again.
    pub fn complete(&self) {
        let _ = self.commands.send(Desired::Complete);
    }

    /// Adds or changes some wanted routes, applied at once.
    pub fn upsert(&self, routes: Vec<Route>) {
        let _ = self.commands.send(Desired::Upsert(routes));
    }

    /// Removes some wanted routes, applied at once.
    pub fn remove(&self, keys: Vec<crate::route::RouteKey>) {
        let _ = self.commands.send(Desired::Remove(keys));
    }

    /// The latest report.
    pub fn report(&self) -> Report {
        self.report.borrow().clone()
    }

    /// A receiver that sees every new report.
    pub fn subscribe(&self) -> watch::Receiver<Report> {
        self.report.clone()
    }

    /// Stops the task. Routes stay in the kernel (so forwarding continues while
    /// the agent restarts) unless `flush` is set.
    pub async fn stop(self, flush: bool) -> Result<(), KernelError> {
        self.task.abort();
        if flush {
            let kernel = Kernel::connect(self.opts.protocol)?;
            let ours: Vec<Route> = kernel
                .dump(self.opts.table)
                .await?
                .into_iter()
                .filter(|k| k.protocol == kernel.protocol())
                .map(|k| k.route)
                .collect();
            kernel
                .apply(&Changes {
                    delete: ours,
                    ..Changes::default()
                })
                .await;
        }
        Ok(())
    }
}

/// What one notification means for the reconciler.
enum Notice {
    /// A route appeared or changed (`false`) or went away (`true`).
    Route(KernelRoute, bool),
    /// Something that can remove routes without a notification happened (a
    /// link went down or away, an address went, notifications were lost):
    /// only a dump tells what the kernel still has.
    Loss,
    /// A link came up or an address appeared: routes the kernel refused
    /// before may go in now.
    Gain,
}

/// Reads the notifications of one datagram, skipping our own.
fn notices(buf: &[u8], own_port: u32, out: &mut Vec<Notice>) {
    use rtnetlink::packet_core::NetlinkMessage;
    let mut off = 0;
    while off + 16 <= buf.len() {
        let h = &buf[off..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let pid = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        if len < 16 || off + len > buf.len() {
            return;
        }
        if pid != own_port
            && let Ok(msg) =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
        {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => {
                    out.extend(from_message(&m).map(|k| Notice::Route(k, false)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => {
                    out.extend(from_message(&m).map(|k| Notice::Route(k, true)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    use netlink_packet_route::link::LinkFlags;
                    let up = l.header.flags.contains(LinkFlags::Up | LinkFlags::LowerUp);
                    out.push(if up { Notice::Gain } else { Notice::Loss });
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(_)) => {
                    out.push(Notice::Gain)
                }
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::DelLink(_) | RouteNetlinkMessage::DelAddress(_),
                ) => out.push(Notice::Loss),
                _ => {}
            }
        }
        off += (len + 3) & !3;
    }
}

async fn run(
    kernel: Kernel,
    opts: Options,
    mut desired_rx: mpsc::UnboundedReceiver<Desired>,
    report_tx: watch::Sender<Report>,
    monitor: TokioSocket,
    // The routes wanted and, in the kernel view, ours as the kernel has
    // them (from the start dump, our own changes and the monitor): changes
    // already in place are not sent again, so a restarted agent
    // re-announcing what survived causes no kernel events at all.
    mut table: RouteTable,
    // Other protocols' routes in our table, which our wanted routes must not fight.
    mut foreign: HashMap<(u32, ipnet::IpNet), KernelRoute>,
) {
    let mut report = report_tx.borrow().clone();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut owed = false;
    // When to re-sync after topology changes, and whether the kernel must be
    // read again first.
    let mut resync_at: Option<tokio::time::Instant> = None;
    let mut resync_dump = false;
    // Nothing is applied until the first desired set arrives: until then the
    // adopted routes keep forwarding untouched.
    let mut started = false;
    loop {
        tokio::select! {
            cmd = desired_rx.recv() => {
                let Some(cmd) = cmd else { return };
                // Take whatever else is queued too: one kernel round for many
                // small deltas, and a route changed twice is sent once. Up
                // to a bound in routes: while the kernel catches up with a
                // full table, hundreds of thousands are queued, and taking
                // them all at once built the round's map, change list and
                // netlink messages for all of them (~400 MB at a million).
                let mut routes = cmd.len();
                let mut cmds = vec![cmd];
                while cmds.len() < 1024 && routes < ROUND_ROUTES {
                    match desired_rx.try_recv() {
                        Ok(c) => {
                            routes += c.len();
                            cmds.push(c);
                        }
                        Err(_) => break,
                    }
                }
                // The keys touched: what to do with each is the table's
                // wanted view against its kernel view.
                let mut pending: HashSet<RouteKey> = HashSet::new();
                for cmd in cmds {
                    match cmd {
                        Desired::Set(routes) => {
                            flush_pending(&kernel, &mut pending, &mut table, &mut report).await;
                            table.clear(View::Wanted);
                            for r in routes {
                                table.insert(View::Wanted, own(&opts, r));
                            }
                            started = true;
                            sync(&kernel, &opts, &mut table, &mut foreign, &mut owed, &mut report).await;
                        }
                        Desired::Complete => {
                            flush_pending(&kernel, &mut pending, &mut table, &mut report).await;
                            started = true;
                            sync(&kernel, &opts, &mut table, &mut foreign, &mut owed, &mut report).await;
                        }
                        Desired::Upsert(routes) => {
                            for r in routes.into_iter().map(|r| own(&opts, r)) {
                                if let Some(f) = foreign.get(&(r.table, r.prefix)) {
                                    // NLM_F_REPLACE would overwrite another protocol's
                                    // route with the same key: report, do not fight.
                                    tracing::warn!(route = %r, holder = %f.route, protocol = f.protocol, "prefix held by another protocol; not installed");
                                    report.conflicts.retain(|(c, _)| c.key() != r.key());
                                    report.conflicts.push((r.clone(), f.clone()));
                                    pending.remove(&r.key());
                                } else {
                                    pending.insert(r.key());
                                }
                                table.insert(View::Wanted, r);
                                if pending.len() >= ROUND_ROUTES {
                                    flush_pending(&kernel, &mut pending, &mut table, &mut report).await;
                                }
                            }
                        }
                        Desired::Remove(keys) => {
                            for mut k in keys {
                                k.table = opts.table;
                                table.remove(View::Wanted, &k);
                                pending.insert(k);
                                if pending.len() >= ROUND_ROUTES {
                                    flush_pending(&kernel, &mut pending, &mut table, &mut report).await;
                                }
                            }
                        }
                    }
                }
                flush_pending(&kernel, &mut pending, &mut table, &mut report).await;
                let _ = report_tx.send(report.clone());
            }
            got = monitor.recv(&mut buf) => {
                let mut found = Vec::new();
                match got {
                    Ok(()) => notices(&buf, kernel.batch_port(), &mut found),
                    // ENOBUFS: notifications were lost; only a full look tells what changed.
                    Err(_) => found.push(Notice::Loss),
                }
                buf.clear();
                for n in found {
                    match n {
                        Notice::Route(k, deleted) => {
                            if k.route.table == opts.table {
                                let ours = k.protocol == opts.protocol;
                                match (ours, deleted) {
                                    (true, true) => {
                                        table.remove(View::Kernel, &k.route.key());
                                    }
                                    (true, false) => {
                                        table.insert(View::Kernel, k.route.clone());
                                    }
                                    (false, true) => {
                                        foreign.remove(&(k.route.table, k.route.prefix));
                                    }
                                    (false, false) => {
                                        foreign.insert((k.route.table, k.route.prefix), k.clone());
                                    }
                                }
                            }
                            if started {
                                repair(&kernel, &opts, &k, deleted, &mut table, &mut report).await;
                            }
                        }
                        Notice::Loss | Notice::Gain if started => {
                            // Re-sync once things settle. Each trigger pushes
                            // the re-sync back, so a burst costs one; only a
                            // loss costs a dump of the table.
                            resync_dump |= matches!(n, Notice::Loss);
                            tracing::debug!(dump = resync_dump, "topology changed; re-sync scheduled");
                            resync_at = Some(tokio::time::Instant::now() + opts.settle);
                        }
                        // Before the first complete set nothing is applied, but
                        // what is known may be stale: the first sync looks again.
                        // (What appeared needs nothing: that sync retries all.)
                        Notice::Loss => {
                            tracing::debug!("link or address lost before the first sync; it will read the kernel");
                            owed = true;
                        }
                        Notice::Gain => {}
                    }
                }
                let _ = report_tx.send(report.clone());
            }
            _ = async { tokio::time::sleep_until(resync_at.unwrap_or_else(tokio::time::Instant::now)).await }, if resync_at.is_some() => {
                resync_at = None;
                let mut dump = std::mem::take(&mut resync_dump);
                sync(&kernel, &opts, &mut table, &mut foreign, &mut dump, &mut report).await;
                let _ = report_tx.send(report.clone());
            }
        }
    }
}

/// Records in the kernel view what a successful apply put in or took out
/// (our own notifications are not read, so this is how it learns of our
/// changes).
fn remember(table: &mut RouteTable, changes: &Changes, applied: &crate::kernel::Applied) {
    let failed: foldhash::HashSet<RouteKey> = applied.failed.iter().map(|(r, _)| r.key()).collect();
    for r in changes.add.iter().chain(&changes.replace) {
        if !failed.contains(&r.key()) {
            table.insert(View::Kernel, r.clone());
        }
    }
    for r in &changes.delete {
        if !failed.contains(&r.key()) {
            table.remove(View::Kernel, &r.key());
        }
    }
}

/// Applies changes, records them in the kernel view and logs what the
/// kernel refused.
async fn apply_logged(
    kernel: &Kernel,
    changes: &Changes,
    table: &mut RouteTable,
    report: &mut Report,
) -> crate::kernel::Applied {
    let started = std::time::Instant::now();
    let applied = kernel.apply(changes).await;
    report.applies += 1;
    report.apply_seconds += started.elapsed().as_secs_f64();
    remember(table, changes, &applied);
    for (r, why) in &applied.failed {
        tracing::warn!(route = %r, reason = %why, "kernel refused a route");
    }
    applied
}

/// The reconciler owns one table: every route goes there, normalized.
fn own(opts: &Options, mut r: Route) -> Route {
    r.table = opts.table;
    r.normalize();
    r
}

/// Applies the coalesced deltas: installs what the kernel does not have yet,
/// deletes what it has (by its own contents, which the kernel matches against).
async fn flush_pending(
    kernel: &Kernel,
    pending: &mut HashSet<RouteKey>,
    table: &mut RouteTable,
    report: &mut Report,
) {
    if pending.is_empty() {
        return;
    }
    let mut changes = Changes::default();
    for key in pending.drain() {
        let state = table.state(&key);
        if state.wanted && !state.satisfied {
            changes.replace.extend(table.get(View::Wanted, &key));
        } else if !state.wanted && state.installed {
            changes.delete.extend(table.get(View::Kernel, &key));
        }
    }
    apply_delta(kernel, &changes, table, report).await;
}

async fn apply_delta(
    kernel: &Kernel,
    changes: &Changes,
    table: &mut RouteTable,
    report: &mut Report,
) {
    let applied = apply_logged(kernel, changes, table, report).await;
    // Keep the failure list current: drop entries this delta settled.
    report.failed.retain(|(r, _)| {
        !changes
            .replace
            .iter()
            .chain(&changes.delete)
            .any(|c| c.key() == r.key())
    });
    report.failed.extend(applied.failed);
    report.installed = table
        .len(View::Wanted)
        .saturating_sub(report.failed.len() + report.conflicts.len());
}

async fn full_sync(
    kernel: &Kernel,
    opts: &Options,
    table: &mut RouteTable,
    foreign: &mut HashMap<(u32, ipnet::IpNet), KernelRoute>,
    report: &mut Report,
) {
    let existing = match kernel.dump(opts.table).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the kernel's routes");
            return;
        }
    };
    table.clear(View::Kernel);
    foreign.clear();
    for k in existing {
        if k.protocol == opts.protocol {
            table.insert(View::Kernel, k.route);
        } else {
            foreign.insert((k.route.table, k.route.prefix), k);
        }
    }
    let changes = diff_maps(table, foreign);
    settle(kernel, &changes, table, report).await;
}

/// Makes the kernel equal to the complete set: from what is known (start dump,
/// our own changes, others' notifications) without a dump, unless notifications
/// may have been lost, in which case the kernel is read again.
async fn sync(
    kernel: &Kernel,
    opts: &Options,
    table: &mut RouteTable,
    foreign: &mut HashMap<(u32, ipnet::IpNet), KernelRoute>,
    owed: &mut bool,
    report: &mut Report,
) {
    if std::mem::take(owed) {
        full_sync(kernel, opts, table, foreign, report).await;
    } else {
        let changes = diff_maps(table, foreign);
        settle(kernel, &changes, table, report).await;
    }
}

/// Applies a complete diff and records the outcome.
async fn settle(kernel: &Kernel, changes: &Changes, table: &mut RouteTable, report: &mut Report) {
    let applied = apply_logged(kernel, changes, table, report).await;
    for (r, k) in &changes.conflicts {
        tracing::warn!(route = %r, holder = %k.route, protocol = k.protocol, "prefix held by another protocol; not installed");
    }
    report.installed = table
        .len(View::Wanted)
        .saturating_sub(changes.conflicts.len() + applied.failed.len());
    report.failed = applied.failed;
    report.conflicts = changes.conflicts.clone();
    report.synced = true;
    report.syncs += 1;
}

/// Reacts to one route notification: our routes must match what we want.
async fn repair(
    kernel: &Kernel,
    opts: &Options,
    seen: &KernelRoute,
    deleted: bool,
    table: &mut RouteTable,
    report: &mut Report,
) {
    let r = &seen.route;
    if r.table != opts.table {
        return;
    }
    let key = r.key();
    let want = table.get(View::Wanted, &key);
    let mut changes = Changes::default();
    if seen.protocol != opts.protocol {
        // Someone else's route: only interesting if it now blocks ours, which
        // the next full sync reports.
        return;
    }
    match (deleted, want) {
        // Replace rather than add: a stale notification may arrive after a
        // later sync already put the route back.
        (true, Some(w)) => changes.replace.push(w),
        (false, Some(w)) if !w.satisfied_by(r) => changes.replace.push(w),
        (false, None) => changes.delete.push(r.clone()),
        _ => return,
    }
    tracing::info!(route = %r, deleted, "route changed by someone else; restoring");
    let applied = kernel.apply(&changes).await;
    remember(table, &changes, &applied);
    if applied.failed.is_empty() {
        report.repaired += 1;
    } else {
        for (r, why) in &applied.failed {
            tracing::warn!(route = %r, reason = %why, "cannot restore a route");
        }
    }
}
