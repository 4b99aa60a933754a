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
    Adjacency, IPIP_DEVICE, OverlayPlan, Tunnel, VXLAN_DEVICES, decide, pod_mtu, tunnel_mtu,
};
use route_sync::{Kernel, NextHop, TunnelDevice, TunnelKind};
use tokio::sync::{mpsc, watch};

use crate::fib::FibInput;
use crate::nat::{self, NatPlan};

/// How often the kernel's view of the other nodes is read again.
const RECHECK: Duration = Duration::from_secs(5);

/// The MTU assumed when no link to another node is known yet.
const FALLBACK_MTU: u32 = 1500;

/// How often the natOutgoing table is written again though nothing changed.
const NAT_REFRESH: Duration = Duration::from_secs(30);

/// Settings of the overlay task.
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// A CNI network configuration list whose main plugin's `mtu` the agent
    /// keeps at the pods' MTU.
    pub cni_conflist: Option<PathBuf>,
    /// WireGuard's settings.
    pub wireguard: crate::wireguard::WireGuardOptions,
}

/// What the FIB task routes through tunnels: per pool (its CIDR) and BGP
/// next hop (a remote node's address), the next hop to use instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnels {
    /// Every pool, longest prefix first: a prefix belongs to the longest
    /// that holds it (a pool without a tunnel nested in one with).
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

/// How long a published endpoint the Node does not show yet waits before
/// it is written again.
const REPUBLISH: Duration = Duration::from_secs(30);

/// What the overlay task is connected to.
pub(crate) struct Links {
    /// The plans, from the agent loop.
    pub(crate) plans: watch::Receiver<Option<Arc<OverlayPlan>>>,
    /// The speaker, once started (WireGuard asks it what each node
    /// announces).
    pub(crate) speaker: watch::Receiver<Option<bgpd::speaker::Speaker>>,
    /// The FIB task, which takes the tunnel next hops.
    pub(crate) fib: mpsc::UnboundedSender<FibInput>,
    /// The API's view, where the overlay's status goes.
    pub(crate) view: watch::Sender<api::AgentView>,
}

/// Runs until the plans close. With a client, the node's VXLAN endpoints
/// and WireGuard key are published on its Node.
pub(crate) async fn run(
    protocol: u8,
    opts: OverlayOptions,
    client: Option<kube::Client>,
    node: String,
    links: Links,
) -> Result<(), crate::AgentError> {
    let Links {
        mut plans,
        speaker,
        fib,
        view,
    } = links;
    let kernel = Kernel::connect(protocol)?;
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut st = State {
        wireguard: Some(crate::wireguard::WireGuard::new(
            opts.wireguard.clone(),
            protocol,
        )),
        ..State::default()
    };
    loop {
        tokio::select! {
            r = plans.changed() => if r.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
        let Some(plan) = plans.borrow_and_update().clone() else {
            continue;
        };
        let current = speaker.borrow().clone();
        let mut status = st.reconcile(&kernel, &plan, &opts, current.as_ref()).await;
        if let Some(c) = &client
            && let Err(e) = st.publish(c, &node, &plan).await
        {
            tracing::warn!(error = %e, "cannot publish the node's VXLAN endpoints");
            status.errors.push(format!(
                "publishing the VXLAN endpoints on Node {node}: {e}"
            ));
        }
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
    /// The nft table last written, and when.
    nat: Option<NatPlan>,
    nat_at: Option<tokio::time::Instant>,
    nat_state: String,
    /// The tunnel next hops computed by the last pass, and the last sent.
    tunnels: Tunnels,
    sent: Option<Tunnels>,
    /// The endpoints last written to the Node, and when.
    published: Option<(Vec<model::Vtep>, tokio::time::Instant)>,
    /// The endpoints the devices made in the last pass have.
    endpoints: Vec<model::Vtep>,
    /// WireGuard, and whether it is in use.
    wireguard: Option<crate::wireguard::WireGuard>,
    wireguard_on: bool,
    /// The WireGuard public key last written to the Node, and when.
    published_key: Option<(Option<[u8; 32]>, tokio::time::Instant)>,
}

impl State {
    /// Writes this node's VXLAN endpoints into its Node's annotations
    /// ([`crds::VXLAN_ANNOTATIONS`]) when the Node does not carry them yet,
    /// and removes those of families without a device.
    async fn publish(
        &mut self,
        client: &kube::Client,
        node: &str,
        plan: &OverlayPlan,
    ) -> Result<(), kube::Error> {
        let key = if self.wireguard_on {
            self.wireguard.as_ref().and_then(|w| w.public_key())
        } else {
            None
        };
        if key != plan.published_wireguard_key
            && self
                .published_key
                .as_ref()
                .is_none_or(|(k, at)| *k != key || at.elapsed() >= REPUBLISH)
        {
            let value = key.map_or(serde_json::Value::Null, |k| {
                crate::wireguard::encode(&k).into()
            });
            let patch = serde_json::json!({"metadata": {"annotations": {crds::WIREGUARD_ANNOTATION: value}}});
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
            nodes
                .patch(
                    node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            tracing::info!(node, "WireGuard public key published on the Node");
            self.published_key = Some((key, tokio::time::Instant::now()));
        }
        let mut want = self.endpoints.clone();
        want.sort_by_key(|v| v.address.is_ipv6());
        let mut have = plan.published.clone();
        have.sort_by_key(|v| v.address.is_ipv6());
        if want == have {
            return Ok(());
        }
        if let Some((last, at)) = &self.published
            && *last == want
            && at.elapsed() < REPUBLISH
        {
            // Written; the Node's watch has not shown it yet.
            return Ok(());
        }
        let mut annotations = serde_json::Map::new();
        for (v6, (addr_key, mac_key)) in crds::VXLAN_ANNOTATIONS.iter().enumerate() {
            match want.iter().find(|v| v.address.is_ipv6() == (v6 == 1)) {
                Some(v) => {
                    annotations.insert((*addr_key).into(), v.address.to_string().into());
                    annotations.insert((*mac_key).into(), model::format_mac(&v.mac).into());
                }
                None => {
                    annotations.insert((*addr_key).into(), serde_json::Value::Null);
                    annotations.insert((*mac_key).into(), serde_json::Value::Null);
                }
            }
        }
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        nodes
            .patch(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(node, endpoints = ?want, "VXLAN endpoints published on the Node");
        self.published = Some((want, tokio::time::Instant::now()));
        Ok(())
    }

    async fn reconcile(
        &mut self,
        kernel: &Kernel,
        plan: &OverlayPlan,
        opts: &OverlayOptions,
        speaker: Option<&bgpd::speaker::Speaker>,
    ) -> api::OverlayView {
        let mut errors = Vec::new();
        // How the kernel reaches each remote node's address, and by which
        // interface: the one that carries tunnel traffic, whose MTU counts.
        let mut adjacency: BTreeMap<IpAddr, Adjacency> = BTreeMap::new();
        let mut uplinks = std::collections::BTreeSet::new();
        for r in &plan.remotes {
            for a in &r.addresses {
                let adj = match kernel.lookup(*a).await {
                    None => Adjacency::Unreachable,
                    Some((gw, oif, _)) => {
                        uplinks.extend(oif);
                        match gw {
                            Some(g) if g != *a => Adjacency::Routed(g),
                            _ => Adjacency::Direct,
                        }
                    }
                };
                adjacency.insert(*a, adj);
            }
        }
        // No other node yet: the interface that holds the node's own
        // address is the likeliest way out.
        if uplinks.is_empty() {
            for a in plan.underlay.iter().flatten() {
                if let Ok(Some(i)) = kernel.interface_with(*a).await {
                    uplinks.insert(i);
                }
            }
        }
        // Every way out a tunnel may take: the smallest MTU of them.
        let mut smallest = None;
        for i in &uplinks {
            if let Ok(Some(m)) = kernel.link_mtu(*i).await {
                smallest = Some(smallest.map_or(m, |s: u32| s.min(m)));
            }
        }
        let link_mtu = plan.mtu.or(smallest);
        let mtu = link_mtu.unwrap_or(FALLBACK_MTU);

        // The VXLAN devices, one per family that needs one.
        let mut devices = Vec::new();
        let mut vxlan_if: [Option<u32>; 2] = [None, None];
        // What is published: the endpoints the plan wants, whatever a pass
        // managed (a failed one is retried; withdrawing the endpoint would
        // make every other node drop this one's entries meanwhile).
        self.endpoints = plan
            .vxlan
            .iter()
            .flatten()
            .map(|v| model::Vtep {
                address: v.address,
                mac: v.mac,
            })
            .collect();
        for fam in 0..2 {
            let name = VXLAN_DEVICES[fam];
            let wanted = match (plan.vxlan[fam], plan.underlay[fam]) {
                (Some(v), Some(local)) => Some(TunnelDevice {
                    name: name.to_string(),
                    kind: TunnelKind::Vxlan {
                        vni: plan.vni,
                        port: plan.port,
                    },
                    local,
                    mac: Some(v.mac),
                    mtu: tunnel_mtu(mtu, Tunnel::Vxlan, fam == 1),
                    address: match v.address {
                        IpAddr::V4(a) => Some(IpNet::from(IpAddr::V4(a))),
                        IpAddr::V6(_) => None,
                    },
                }),
                _ => None,
            };
            match wanted {
                Some(w) => match kernel.ensure_tunnel(&w).await {
                    Ok((index, changed)) => {
                        if changed {
                            tracing::info!(
                                device = name,
                                vni = plan.vni,
                                port = plan.port,
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
                    Err(e) => {
                        errors.push(format!("{name}: {e}"));
                        // A device that is there still carries traffic: a
                        // failed correction must not route around it.
                        vxlan_if[fam] = kernel.link_index(name).await.ok().flatten();
                    }
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
        // The IPIP device: any remote, each route's gateway the outer
        // destination.
        let mut ipip_if = None;
        match (plan.ipip, plan.underlay[0]) {
            (Some(address), Some(local)) => {
                let w = TunnelDevice {
                    name: IPIP_DEVICE.to_string(),
                    kind: TunnelKind::Ipip,
                    local,
                    mac: None,
                    mtu: tunnel_mtu(mtu, Tunnel::Ipip, false),
                    address: Some(IpNet::from(address)),
                };
                match kernel.ensure_tunnel(&w).await {
                    Ok((index, changed)) => {
                        if changed {
                            tracing::info!(device = IPIP_DEVICE, mtu = w.mtu, "IPIP device set up");
                        }
                        ipip_if = Some(index);
                        devices.push((IPIP_DEVICE.to_string(), w.mtu, address.to_string()));
                    }
                    // Kernels without the ipip module refuse the kind.
                    Err(e) => errors.push(format!(
                        "{IPIP_DEVICE}: {e} (does the kernel have the ipip module?)"
                    )),
                }
            }
            _ => match kernel.remove_link(IPIP_DEVICE).await {
                Ok(true) => tracing::info!(
                    device = IPIP_DEVICE,
                    "IPIP device removed: no pool needs it"
                ),
                Ok(false) => {}
                Err(e) => errors.push(format!("{IPIP_DEVICE}: {e}")),
            },
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

        // WireGuard: a peer per remote node, its pods' prefixes allowed.
        let mut wg_if = None;
        let mut wg_peers: HashMap<IpAddr, bool> = HashMap::new();
        if let (Some(w), Some(wg)) = (plan.wireguard.as_ref(), self.wireguard.as_mut()) {
            let in_wg_pool = |p: &IpNet| {
                plan.pools.iter().any(|pool| {
                    matches!(pool.tunnel, Some((Tunnel::WireGuard, _))) && pool.cidr.contains(p)
                })
            };
            let mut peers = Vec::new();
            for r in &plan.remotes {
                let Some(a) = r.address(false) else { continue };
                let mut allowed: Vec<IpNet> = r
                    .pod_cidrs
                    .iter()
                    .copied()
                    .filter(|c| in_wg_pool(c))
                    .collect();
                if let Some(s) = speaker {
                    let learned = s
                        .fib_routes(bgpd::speaker::FibQuery::Via(vec![a]))
                        .await
                        .unwrap_or_default();
                    allowed.extend(
                        learned
                            .into_iter()
                            .map(|c| c.prefix)
                            .filter(|p| in_wg_pool(p)),
                    );
                }
                allowed.sort();
                allowed.dedup();
                wg_peers.insert(a, r.wireguard_key.is_some());
                peers.push(crate::wireguard::Peer {
                    node: r.name.clone(),
                    key: r.wireguard_key,
                    endpoint: a,
                    allowed,
                });
            }
            let wg_mtu = tunnel_mtu(mtu, Tunnel::WireGuard, false);
            let closed = w.required.then(|| crate::wireguard::FailClosed {
                pools: plan
                    .pools
                    .iter()
                    .filter(|p| matches!(p.tunnel, Some((Tunnel::WireGuard, _))))
                    .map(|p| p.cidr)
                    .collect(),
                own: w.own.clone(),
            });
            match wg
                .reconcile(kernel, w.port, wg_mtu, w.address, closed.as_ref(), &peers)
                .await
            {
                Ok(index) => {
                    wg_if = Some(index);
                    let key = wg
                        .public_key()
                        .map(|k| crate::wireguard::encode(&k))
                        .unwrap_or_default();
                    devices.push((
                        wg.interface().to_string(),
                        wg_mtu,
                        format!("public key {key}"),
                    ));
                }
                Err(e) => {
                    errors.push(format!("WireGuard: {e}"));
                    if let Some(closed) = &closed {
                        // Fail closed: no device, still no plaintext.
                        if let Err(e) = wg.fail_closed(kernel, &peers, closed).await {
                            errors.push(format!("WireGuard (failing closed): {e}"));
                        }
                    }
                }
            }
            self.wireguard_on = true;
        } else {
            // No pool uses WireGuard: what this run or an earlier one made
            // goes (a rule and an unreachable table left behind would drop
            // those prefixes for ever).
            if let Some(wg) = self.wireguard.as_mut() {
                wg.sweep(kernel).await;
            }
            if self.wireguard_on {
                tracing::info!("WireGuard removed: no pool uses it");
            }
            self.wireguard_on = false;
        }
        let required = plan.wireguard.as_ref().is_some_and(|w| w.required);

        // Per remote node and pool: tunnelled or not, and why.
        let mut tunnels = Tunnels {
            pools: plan.pools.iter().map(|p| p.cidr).collect(),
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
                        Some(Tunnel::Ipip) => match ipip_if {
                            Some(index) => {
                                tunnels.hops.insert(
                                    (p.cidr, *a),
                                    NextHop {
                                        gateway: Some(*a),
                                        ifindex: Some(index),
                                        weight: 1,
                                        onlink: true,
                                    },
                                );
                            }
                            None => {
                                d.tunnel = None;
                                d.reason = format!(
                                    "{}; but this node has no IPIP device (see errors): routed as it is",
                                    d.reason
                                );
                            }
                        },
                        Some(Tunnel::WireGuard) => {
                            let keyed = wg_peers.get(a).copied().unwrap_or(false);
                            match (wg_if, keyed, required) {
                                (Some(_), true, _) => {
                                    d.reason = format!("{}: encrypted", d.reason);
                                }
                                (_, _, true) => {
                                    d.tunnel = None;
                                    d.reason = format!(
                                        "{}; but {}: dropped (wireguardEncryption: Required)",
                                        d.reason,
                                        if keyed {
                                            "this node has no WireGuard device"
                                        } else {
                                            "the node published no WireGuard key"
                                        }
                                    );
                                }
                                (_, _, false) => {
                                    d.tunnel = None;
                                    d.reason = format!(
                                        "{}; but {}: routed unencrypted",
                                        d.reason,
                                        if keyed {
                                            "this node has no WireGuard device"
                                        } else {
                                            "the node published no WireGuard key"
                                        }
                                    );
                                }
                            }
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
        // Written again now and then too: a `nft flush ruleset` (a firewall
        // reload) removes it without telling anyone.
        if self.nat.as_ref() != Some(&want)
            || self.nat_at.is_none_or(|at| at.elapsed() >= NAT_REFRESH)
        {
            match nat::apply(&nat::script(&want)).await {
                Ok(()) => {
                    self.nat_state = if want.masquerade.is_empty() {
                        "no pool masquerades".to_string()
                    } else {
                        let list: Vec<String> =
                            want.masquerade.iter().map(ToString::to_string).collect();
                        format!("masquerading {} to outside every pool", list.join(", "))
                    };
                    if self.nat.as_ref() != Some(&want) {
                        tracing::info!(state = %self.nat_state, "natOutgoing table written");
                    }
                    self.nat = Some(want);
                    self.nat_at = Some(tokio::time::Instant::now());
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
        // Checked every pass (a read), written when it differs.
        let pods = pod_mtu(mtu, plan);
        if let Some(path) = &opts.cni_conflist {
            match cni::install::set_mtu(path, pods) {
                Ok(true) => {
                    tracing::info!(mtu = pods, conflist = %path.display(), "pods' MTU written to the CNI configuration")
                }
                Ok(false) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    fn hop(vtep: &str) -> NextHop {
        NextHop {
            gateway: Some(vtep.parse().expect("address")),
            ifindex: Some(7),
            weight: 1,
            onlink: true,
        }
    }

    #[test]
    fn a_prefix_takes_the_tunnel_of_the_longest_pool_that_holds_it() {
        let node: IpAddr = "10.0.2.3".parse().expect("address");
        let mut pools = vec![net("10.80.0.0/16"), net("10.80.128.0/17")];
        pools.sort_by_key(|p| std::cmp::Reverse(p.prefix_len()));
        let t = Tunnels {
            pools,
            // Only the outer pool tunnels; the inner one is plain.
            hops: HashMap::from([((net("10.80.0.0/16"), node), hop("10.80.3.0"))]),
        };
        assert_eq!(t.hop(&net("10.80.3.0/26"), node), Some(hop("10.80.3.0")));
        assert_eq!(
            t.hop(&net("10.80.200.0/26"), node),
            None,
            "the nested plain pool"
        );
        assert_eq!(t.hop(&net("10.81.0.0/24"), node), None, "no pool");
        let other: IpAddr = "10.0.1.2".parse().expect("address");
        assert_eq!(t.hop(&net("10.80.3.0/26"), other), None, "another node");
    }

    #[test]
    fn only_the_next_hops_whose_tunnel_changed_are_redone() {
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.2.3".parse().expect("address"),
            "10.0.2.4".parse().expect("address"),
        );
        let pool = net("10.80.0.0/16");
        let before = Tunnels {
            pools: vec![pool],
            hops: HashMap::from([((pool, a), hop("10.80.3.0")), ((pool, b), hop("10.80.4.0"))]),
        };
        let mut after = before.clone();
        assert!(before.changed_next_hops(&after).is_empty());
        after.hops.remove(&(pool, b));
        assert_eq!(before.changed_next_hops(&after), vec![b]);
        assert_eq!(after.changed_next_hops(&before), vec![b]);
    }
}
