//! Connects the speaker's best paths to the kernel: every best path learned
//! from a peer becomes a route (its next hop resolved through the kernel's own
//! routes), every prefix this node originates becomes a blackhole, and
//! route-sync makes the kernel match.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::IpAddr;
use std::time::Duration;

use bgpd::rib::FibChange;
use bgpd::speaker::{FibEvent, FibQuery, Speaker};
use ipnet::IpNet;
use route_sync::{Kernel, NextHop, Reconciler, Route, RouteKey};
use tokio::sync::mpsc;

/// Settings of the FIB side.
#[derive(Debug, Clone)]
pub struct FibOptions {
    /// The table routes go into.
    pub table: u32,
    /// Our routing protocol number.
    pub protocol: u8,
    /// The longest the first complete sync waits after start, so routes that
    /// survived a restart are not removed before the peers sent them again;
    /// it happens sooner once the speaker reports the initial convergence.
    pub initial_delay: Duration,
    /// Install next hops that no route reaches as `onlink` through this
    /// interface (for fabrics that hand out next hops beyond the node's subnets).
    pub onlink_interface: Option<String>,
}

/// Updates for the FIB task from the agent.
#[derive(Debug)]
pub enum FibInput {
    /// The prefixes that get a blackhole (this node's pod CIDRs). Other
    /// routes we originate (Service IPs) are served by the node itself and
    /// need none.
    Blackholes(Vec<IpNet>),
    /// The pools' tunnel next hops per remote node, from the overlay task:
    /// a learned pool route whose next hop is a remote node it names goes
    /// through the tunnel instead.
    Tunnels(std::sync::Arc<crate::overlay::Tunnels>),
}

/// How the kernel reaches a BGP next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolution {
    /// Install via this next hop.
    Via(NextHop),
    /// The next hop is one of our own addresses: never install.
    Local,
    /// No route to it.
    Unreachable,
}

/// Runs until the speaker goes away.
pub async fn run(
    speaker: Speaker,
    reconciler: Reconciler,
    opts: FibOptions,
    mut inputs: mpsc::UnboundedReceiver<FibInput>,
) -> Result<(), crate::AgentError> {
    let kernel = Kernel::connect(opts.protocol)?;
    let onlink = match &opts.onlink_interface {
        Some(name) => Some(
            kernel
                .ifindex(name)
                .await
                .ok_or_else(|| crate::AgentError::NoInterface(name.clone()))?,
        ),
        None => None,
    };
    let mut best = speaker.subscribe_fib()?;
    // No copy of what BGP learned is kept here (a full table's worth, 64 MB
    // at a million): the few times a prefix's next hops are needed again
    // (a blackhole handed back, a next hop's way out moved) the speaker is
    // asked.
    let mut blackholed: HashSet<IpNet> = HashSet::new();
    let mut ways = Ways {
        kernel,
        onlink,
        resolved: HashMap::new(),
        tunnels: std::sync::Arc::new(crate::overlay::Tunnels::default()),
    };
    let mut full_sync_at = Some(tokio::time::Instant::now() + opts.initial_delay);
    let mut recheck = tokio::time::interval(Duration::from_secs(5));
    // The reconciler re-syncs after link and address changes; next hops are
    // re-resolved right then too, not only on the periodic check.
    let mut report = reconciler.subscribe();
    let mut syncs = report.borrow().syncs;
    let mut applying = report.borrow().apply_seconds;
    loop {
        tokio::select! {
            changed = report.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let (now, applied) = {
                    let r = report.borrow_and_update();
                    (r.syncs, r.apply_seconds)
                };
                // The kernel's rounds are routing work: listings wait for
                // them as for the speaker's own.
                if applied > applying {
                    speaker.routing_work(Duration::from_secs_f64(applied - applying));
                }
                applying = applied;
                if now != syncs {
                    syncs = now;
                    recheck.reset_immediately();
                }
            }
            event = best.recv() => {
                let batch = match event {
                    None => return Ok(()),
                    Some(FibEvent::Changes(batch)) => batch,
                    Some(FibEvent::Converged) => {
                        // Every peer sent its table: what was not announced
                        // again (stale routes from before a restart) goes now.
                        if full_sync_at.take().is_some() {
                            tracing::info!(blackholes = blackholed.len(), "initial FIB sync after convergence");
                            reconciler.complete();
                        }
                        continue;
                    }
                };
                let mut upserts = Vec::new();
                let mut removals = Vec::new();
                for FibChange { prefix, next_hops } in batch {
                    match next_hops {
                        Some(nhs) => {
                            if blackholed.contains(&prefix) {
                                // Our own block: its blackhole stays, whoever else announces it.
                                continue;
                            }
                            match ways.route_for(&speaker, prefix, &nhs).await {
                                Some(r) => upserts.push(r),
                                None => removals.push(key(prefix, opts.table)),
                            }
                        }
                        None => {
                            if !blackholed.contains(&prefix) {
                                removals.push(key(prefix, opts.table));
                            }
                        }
                    }
                }
                if !upserts.is_empty() {
                    reconciler.upsert(upserts);
                }
                if !removals.is_empty() {
                    reconciler.remove(removals);
                }
            }
            input = inputs.recv() => match input {
                Some(FibInput::Blackholes(prefixes)) => {
                    let new: HashSet<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
                    let mut gone = Vec::new();
                    let mut upserts: Vec<Route> = new.difference(&blackholed).map(|p| Route::blackhole(*p)).collect();
                    // No longer ours: what BGP knows of them (if anything) takes over.
                    let released: Vec<IpNet> = blackholed.difference(&new).copied().collect();
                    let learned = if released.is_empty() {
                        Vec::new()
                    } else {
                        speaker.fib_routes(FibQuery::Prefixes(released.clone())).await.unwrap_or_default()
                    };
                    let mut replaced = HashSet::new();
                    for FibChange { prefix, next_hops } in learned {
                        if let Some(nhs) = next_hops
                            && let Some(r) = ways.route_for(&speaker, prefix, &nhs).await
                        {
                            replaced.insert(prefix);
                            upserts.push(r);
                        }
                    }
                    gone.extend(released.iter().filter(|p| !replaced.contains(*p)).map(|p| key(*p, opts.table)));
                    blackholed = new;
                    if !gone.is_empty() {
                        reconciler.remove(gone);
                    }
                    if !upserts.is_empty() {
                        reconciler.upsert(upserts);
                    }
                }
                Some(FibInput::Tunnels(new)) => {
                    // Re-install what goes through the next hops whose
                    // treatment changed.
                    let changed = ways.tunnels.changed_next_hops(&new);
                    ways.tunnels = new;
                    ways.reinstall_via(&speaker, &reconciler, &blackholed, opts.table, changed).await;
                }
                None => return Ok(()),
            },
            _ = recheck.tick() => {
                // Links and routes change under us: resolve every next hop again
                // and re-install the routes whose way out moved.
                let mut changed = Vec::new();
                for (nh, old) in ways.resolved.iter_mut() {
                    let now = resolve(&ways.kernel, *nh, ways.onlink).await;
                    if now != *old {
                        let _ = speaker.set_next_hop_reachable(*nh, now != Resolution::Unreachable);
                        *old = now;
                        changed.push(*nh);
                    }
                }
                // Asked after the reachability news above, which the
                // speaker takes first: paths through next hops now
                // unreachable are no longer best, and their removal comes
                // as changes.
                ways.reinstall_via(&speaker, &reconciler, &blackholed, opts.table, changed).await;
            }
            _ = async { tokio::time::sleep_until(full_sync_at.unwrap_or_else(tokio::time::Instant::now)).await }, if full_sync_at.is_some() => {
                full_sync_at = None;
                // Everything learned so far was handed over as it came; what is
                // not among it (stale routes from before a restart) goes now.
                tracing::info!(blackholes = blackholed.len(), "initial FIB sync (convergence not reported in time)");
                reconciler.complete();
            }
        }
    }
}

fn key(prefix: IpNet, table: u32) -> RouteKey {
    let mut r = Route::blackhole(prefix);
    r.table = table;
    r.normalize();
    r.key()
}

/// How learned routes leave this node: next hops resolved through the
/// kernel's routes (kept until the periodic check finds them moved), and
/// the overlay's tunnels.
struct Ways {
    kernel: Kernel,
    onlink: Option<u32>,
    resolved: HashMap<IpAddr, Resolution>,
    tunnels: std::sync::Arc<crate::overlay::Tunnels>,
}

impl Ways {
    /// The kernel route for a learned prefix, or `None` if no next hop is
    /// usable.
    async fn route_for(
        &mut self,
        speaker: &Speaker,
        prefix: IpNet,
        next_hops: &[IpAddr],
    ) -> Option<Route> {
        // Exact: routes wait in the reconciler's queue while the kernel
        // catches up (hundreds of thousands during a full table), and a
        // `Vec`'s first push reserves four next hops.
        let mut hops = Vec::with_capacity(next_hops.len());
        for nh in next_hops {
            let res = match self.resolved.get(nh) {
                Some(r) => r.clone(),
                None => {
                    let r = resolve(&self.kernel, *nh, self.onlink).await;
                    if r == Resolution::Unreachable {
                        let _ = speaker.set_next_hop_reachable(*nh, false);
                    }
                    self.resolved.insert(*nh, r.clone());
                    r
                }
            };
            // A reachable remote node whose pool traffic is tunnelled:
            // through the tunnel device to its endpoint, on-link.
            if let Resolution::Via(h) = res {
                hops.push(self.tunnels.hop(&prefix, *nh).unwrap_or(h));
            }
        }
        (!hops.is_empty()).then(|| Route::unicast(prefix, hops))
    }

    /// Installs again (or removes) the routes whose best paths go through
    /// `via`, as the speaker has them now; our own blocks keep their
    /// blackholes.
    async fn reinstall_via(
        &mut self,
        speaker: &Speaker,
        reconciler: &Reconciler,
        blackholed: &HashSet<IpNet>,
        table: u32,
        via: Vec<IpAddr>,
    ) {
        if via.is_empty() {
            return;
        }
        let routes = speaker
            .fib_routes(FibQuery::Via(via))
            .await
            .unwrap_or_default();
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for FibChange { prefix, next_hops } in routes {
            let Some(nhs) = next_hops else { continue };
            if !blackholed.contains(&prefix) {
                match self.route_for(speaker, prefix, &nhs).await {
                    Some(r) => upserts.push(r),
                    None => removals.push(key(prefix, table)),
                }
            }
        }
        reconciler.upsert(upserts);
        reconciler.remove(removals);
    }
}

/// Resolves a BGP next hop through the kernel's routes (the kernel recurses
/// for us): directly connected next hops are used as they are; others through
/// the gateway of the route that covers them; with an onlink interface,
/// unreachable ones are sent out of it directly.
async fn resolve(kernel: &Kernel, nh: IpAddr, onlink: Option<u32>) -> Resolution {
    if is_local(nh) {
        return Resolution::Local;
    }
    let unreachable = || match onlink {
        Some(ifindex) => Resolution::Via(NextHop {
            gateway: Some(nh),
            ifindex: Some(ifindex),
            weight: 1,
            onlink: true,
        }),
        None => Resolution::Unreachable,
    };
    match kernel.lookup(nh).await {
        None => unreachable(),
        // Through one of our own BGP routes would be a loop of recursion.
        Some((_, _, proto)) if proto == kernel.protocol() => unreachable(),
        Some((Some(gw), oif, _)) => Resolution::Via(NextHop {
            gateway: Some(gw),
            ifindex: oif,
            weight: 1,
            onlink: false,
        }),
        Some((None, oif, _)) => Resolution::Via(NextHop {
            gateway: Some(nh),
            ifindex: oif,
            weight: 1,
            onlink: false,
        }),
    }
}

/// Whether an address is assigned to this host (network namespace).
fn is_local(addr: IpAddr) -> bool {
    // Binding a socket to an address succeeds only for local addresses.
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}
