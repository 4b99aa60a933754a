//! The overlay task: petrel's tunnel devices, their neighbour and FDB
//! entries, natOutgoing's table, the pods' MTU, and per remote node and
//! pool the next hop the FIB task uses instead of the plain one.
//!
//! Level-triggered: on every new plan and every 5 s it reads how the kernel
//! reaches each remote node ([`Adjacency`], the same route lookup the FIB
//! task resolves next hops with), makes the kernel say what the plan and
//! those facts imply, and hands the FIB task the tunnel next hops when they
//! changed. A failure (one device, the nft table) is reported in status and
//! retried at the next pass; the rest still happens.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use planner::overlay::{
    Adjacency, OverlayPlan, Tunnel, VXLAN_DEVICES, decide, pod_mtu, tunnel_mtu,
};
use route_sync::{Kernel, NextHop, Vxlan};
use tokio::sync::{mpsc, watch};

use crate::fib::FibInput;
use crate::nat::{self, NatPlan};

/// How often the kernel's view of the other nodes is read again.
const RECHECK: Duration = Duration::from_secs(5);

/// The MTU assumed when no link to another node is known yet.
const FALLBACK_MTU: u32 = 1500;

/// Settings of the overlay task.
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// A CNI network configuration list whose main plugin's `mtu` the agent
    /// keeps at the pods' MTU.
    pub cni_conflist: Option<PathBuf>,
}

/// What the FIB task routes through tunnels: per pool (its CIDR) and BGP
/// next hop (a remote node's address), the next hop to use instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnels {
    /// Pools with a tunnel, longest prefix first.
    pools: Vec<IpNet>,
    /// (pool, node address) → the tunnel's next hop.
    hops: HashMap<(IpNet, IpAddr), NextHop>,
}

impl Tunnels {
    /// The next hop replacing `next_hop` for `prefix`, if its traffic is
    /// tunnelled.
    pub fn hop(&self, prefix: &IpNet, next_hop: IpAddr) -> Option<NextHop> {
        let pool = self.pools.iter().find(|p| p.contains(prefix))?;
        self.hops.get(&(*pool, next_hop)).cloned()
    }

    /// Every next hop whose treatment differs between `self` and `other`.
    pub fn changed_next_hops(&self, other: &Tunnels) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .hops
            .iter()
            .filter(|(k, v)| other.hops.get(k) != Some(v))
            .chain(
                other
                    .hops
                    .iter()
                    .filter(|(k, v)| self.hops.get(k) != Some(v)),
            )
            .map(|((_, nh), _)| *nh)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Runs until `plans` closes.
pub(crate) async fn run(
    protocol: u8,
    opts: OverlayOptions,
    mut plans: watch::Receiver<Option<Arc<OverlayPlan>>>,
    fib: mpsc::UnboundedSender<FibInput>,
    view: watch::Sender<api::AgentView>,
) -> Result<(), crate::AgentError> {
    let kernel = Kernel::connect(protocol)?;
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut st = State::default();
    loop {
        tokio::select! {
            r = plans.changed() => if r.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
        let Some(plan) = plans.borrow_and_update().clone() else {
            continue;
        };
        let status = st.reconcile(&kernel, &plan, &opts).await;
        if st.sent.as_ref() != Some(&st.tunnels) {
            let _ = fib.send(FibInput::Tunnels(Arc::new(st.tunnels.clone())));
            st.sent = Some(st.tunnels.clone());
        }
        let status = Arc::new(status);
        view.send_if_modified(|v| {
            if v.overlay.as_deref() == Some(&*status) {
                return false;
            }
            v.overlay = Some(status.clone());
            true
        });
    }
}

/// What the task remembers between passes.
#[derive(Default)]
struct State {
    /// The nft table last written.
    nat: Option<NatPlan>,
    nat_state: String,
    /// The pods' MTU last written to the CNI configuration.
    pod_mtu: Option<u32>,
    /// The tunnel next hops computed by the last pass, and the last sent.
    tunnels: Tunnels,
    sent: Option<Tunnels>,
}

impl State {
    async fn reconcile(
        &mut self,
        kernel: &Kernel,
        plan: &OverlayPlan,
        opts: &OverlayOptions,
    ) -> api::OverlayView {
        let mut errors = Vec::new();
        // How the kernel reaches each remote node's address, and by which
        // interface: the one that carries tunnel traffic, whose MTU counts.
        let mut adjacency: BTreeMap<IpAddr, Adjacency> = BTreeMap::new();
        let mut uplink = None;
        for r in &plan.remotes {
            for a in &r.addresses {
                let adj = match kernel.lookup(*a).await {
                    None => Adjacency::Unreachable,
                    Some((gw, oif, _)) => {
                        uplink = uplink.or(oif);
                        match gw {
                            Some(g) if g != *a => Adjacency::Routed(g),
                            _ => Adjacency::Direct,
                        }
                    }
                };
                adjacency.insert(*a, adj);
            }
        }
        let link_mtu = match (plan.mtu, uplink) {
            (Some(m), _) => Some(m),
            (None, Some(i)) => kernel.link_mtu(i).await.ok().flatten(),
            (None, None) => None,
        };
        let mtu = link_mtu.unwrap_or(FALLBACK_MTU);

        // The VXLAN devices, one per family that needs one.
        let mut devices = Vec::new();
        let mut vxlan_if: [Option<u32>; 2] = [None, None];
        for fam in 0..2 {
            let name = VXLAN_DEVICES[fam];
            let wanted = match (plan.vxlan[fam], plan.underlay[fam]) {
                (Some(v), Some(local)) => Some(Vxlan {
                    name: name.to_string(),
                    vni: plan.vni,
                    port: plan.port,
                    local,
                    mac: v.mac,
                    mtu: tunnel_mtu(mtu, Tunnel::Vxlan, fam == 1),
                    address: match v.address {
                        IpAddr::V4(a) => Some(IpNet::from(IpAddr::V4(a))),
                        IpAddr::V6(_) => None,
                    },
                }),
                _ => None,
            };
            match wanted {
                Some(w) => match kernel.ensure_vxlan(&w).await {
                    Ok((index, changed)) => {
                        if changed {
                            tracing::info!(
                                device = name,
                                vni = w.vni,
                                port = w.port,
                                mtu = w.mtu,
                                "VXLAN device set up"
                            );
                        }
                        vxlan_if[fam] = Some(index);
                        let endpoint = plan.vxlan[fam]
                            .map(|v| v.address.to_string())
                            .unwrap_or_default();
                        devices.push((name.to_string(), w.mtu, endpoint));
                    }
                    Err(e) => errors.push(format!("{name}: {e}")),
                },
                None => match kernel.remove_link(name).await {
                    Ok(true) => {
                        tracing::info!(device = name, "VXLAN device removed: no pool needs it")
                    }
                    Ok(false) => {}
                    Err(e) => errors.push(format!("{name}: {e}")),
                },
            }
        }
        // Its neighbour and FDB entries: every remote node with an endpoint.
        for fam in 0..2 {
            let Some(index) = vxlan_if[fam] else { continue };
            let v6 = fam == 1;
            let mut neigh = Vec::new();
            let mut fdb = Vec::new();
            for r in &plan.remotes {
                if let (Some(v), Some(a)) = (r.vtep(v6), r.address(v6)) {
                    neigh.push((v.address, v.mac));
                    fdb.push((v.mac, a));
                }
            }
            match kernel.sync_neighbours(index, &neigh).await {
                Ok(c) if c != Default::default() => {
                    tracing::info!(
                        device = VXLAN_DEVICES[fam],
                        written = c.written,
                        removed = c.removed,
                        "neighbour entries synced"
                    )
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{}: {e}", VXLAN_DEVICES[fam])),
            }
            match kernel.sync_fdb(index, &fdb).await {
                Ok(c) if c != Default::default() => {
                    tracing::info!(
                        device = VXLAN_DEVICES[fam],
                        written = c.written,
                        removed = c.removed,
                        "FDB entries synced"
                    )
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{}: {e}", VXLAN_DEVICES[fam])),
            }
        }

        // Per remote node and pool: tunnelled or not, and why.
        let mut tunnels = Tunnels {
            pools: plan
                .pools
                .iter()
                .filter(|p| p.tunnel.is_some())
                .map(|p| p.cidr)
                .collect(),
            hops: HashMap::new(),
        };
        tunnels
            .pools
            .sort_by_key(|p| std::cmp::Reverse(p.prefix_len()));
        let mut nodes = Vec::new();
        for r in &plan.remotes {
            for a in &r.addresses {
                let v6 = a.is_ipv6();
                let adj = adjacency.get(a).copied().unwrap_or(Adjacency::Unreachable);
                let mut pools = Vec::new();
                for p in plan.pools.iter().filter(|p| p.cidr.addr().is_ipv6() == v6) {
                    let mut d = decide(p, adj);
                    match d.tunnel {
                        Some(Tunnel::Vxlan) => {
                            let fam = usize::from(v6);
                            match (vxlan_if[fam], r.vtep(v6)) {
                                (Some(index), Some(vtep)) => {
                                    tunnels.hops.insert(
                                        (p.cidr, *a),
                                        NextHop {
                                            gateway: Some(vtep.address),
                                            ifindex: Some(index),
                                            weight: 1,
                                            onlink: true,
                                        },
                                    );
                                }
                                (None, _) => {
                                    d.tunnel = None;
                                    d.reason = format!(
                                        "{}; but this node has no VXLAN device (no {} address or block): routed as it is",
                                        d.reason,
                                        if v6 { "IPv6" } else { "IPv4" }
                                    );
                                }
                                (_, None) => {
                                    d.tunnel = None;
                                    d.reason = format!(
                                        "{}; but node {} published no VXLAN endpoint: routed as it is",
                                        d.reason, r.name
                                    );
                                }
                            }
                        }
                        Some(t) => {
                            d.reason = format!(
                                "{}; but {t} is not built by this agent yet: routed as it is",
                                d.reason
                            );
                            d.tunnel = None;
                        }
                        None => {}
                    }
                    pools.push((p.name.clone(), d.tunnel.map(|t| t.to_string()), d.reason));
                }
                nodes.push(api::OverlayNode {
                    node: r.name.clone(),
                    address: a.to_string(),
                    adjacency: adj.to_string(),
                    pools,
                });
            }
        }
        self.tunnels = tunnels;

        // natOutgoing.
        let want = NatPlan::from_pools(&plan.pools);
        if self.nat.as_ref() != Some(&want) {
            match nat::apply(&nat::script(&want)).await {
                Ok(()) => {
                    self.nat_state = if want.masquerade.is_empty() {
                        "no pool masquerades".to_string()
                    } else {
                        let list: Vec<String> =
                            want.masquerade.iter().map(ToString::to_string).collect();
                        format!("masquerading {} to outside every pool", list.join(", "))
                    };
                    tracing::info!(state = %self.nat_state, "natOutgoing table written");
                    self.nat = Some(want);
                }
                // Without nft no table of ours can exist: nothing to remove.
                Err(nat::NatError::Spawn(e))
                    if want.masquerade.is_empty() && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    self.nat_state = "no pool masquerades (nft not installed)".to_string();
                    self.nat = Some(want);
                }
                Err(e) => {
                    self.nat_state = format!("not written: {e}");
                    errors.push(format!("natOutgoing: {e}"));
                }
            }
        }

        // The pods' MTU, through the CNI configuration.
        let pods = pod_mtu(mtu, plan);
        if let Some(path) = &opts.cni_conflist
            && self.pod_mtu != Some(pods)
        {
            match cni::install::set_mtu(path, pods) {
                Ok(()) => {
                    tracing::info!(mtu = pods, conflist = %path.display(), "pods' MTU written to the CNI configuration");
                    self.pod_mtu = Some(pods);
                }
                Err(e) => errors.push(format!("pod MTU: {e}")),
            }
        }
        for e in &errors {
            tracing::warn!(error = %e, "overlay");
        }
        api::OverlayView {
            link_mtu,
            pod_mtu: Some(pods),
            devices,
            nodes,
            nat: self.nat_state.clone(),
            errors,
        }
    }
}
