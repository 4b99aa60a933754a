//! The IPPools as this node's allocator sees them.

use crds::{EncapsulationMode, EncapsulationType, IpPoolSpec, PoolUse};
use ipam::pod::Pool;

/// What the allocator needs of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolsView {
    /// `ipamMode: Petrel`: pods' addresses are petrel's to hand out.
    pub(crate) petrel: bool,
    /// The IPPools for pods' addresses, as this node sees them.
    pub(crate) pools: Vec<Pool>,
    /// When the node needs a tunnel address
    /// ([`planner::overlay::tunnel_address_wanted`]), the IPv4 pools it may
    /// come from, in tiers tried in order; `None`: it needs none, and gives
    /// back the one it holds.
    pub(crate) tunnel: Option<Vec<Vec<Pool>>>,
}

/// The snapshot's IPAM mode and IPPools for `node`.
pub(crate) fn view_for(snapshot: &model::Snapshot, node: &str) -> PoolsView {
    let petrel = planner::ipam_mode(snapshot) == crds::IpamMode::Petrel;
    PoolsView {
        petrel,
        pools: pools_for(snapshot, node, PoolUse::Workload),
        tunnel: (petrel && planner::overlay::tunnel_address_wanted(snapshot, node))
            .then(|| tunnel_tiers(snapshot, node)),
    }
}

/// The IPv4 pools a tunnel address may come from, in tiers: pools only for
/// tunnel addresses (`allowedUses: [Tunnel]`: the operator set them apart
/// for this), then pools that tunnel (the address is then routed the way
/// their blocks are), then any other that allows `Tunnel`.
fn tunnel_tiers(snapshot: &model::Snapshot, node: &str) -> Vec<Vec<Pool>> {
    let mut tiers = vec![Vec::new(), Vec::new(), Vec::new()];
    for pool in pools_for(snapshot, node, PoolUse::Tunnel) {
        let spec = snapshot.ip_pools.iter().find(|p| p.name == pool.name);
        if let Some(spec) = spec.filter(|_| pool.cidr.addr().is_ipv4()) {
            tiers[tier(&spec.spec)].push(pool);
        }
    }
    tiers.retain(|t| !t.is_empty());
    tiers
}

/// A pool's tier for tunnel addresses (see [`tunnel_tiers`]).
fn tier(spec: &IpPoolSpec) -> usize {
    let only_tunnel = spec
        .allowed_uses
        .as_ref()
        .is_some_and(|u| !u.contains(&PoolUse::Workload));
    let tunnels = spec.encapsulation.as_ref().is_some_and(|e| {
        e.kind != EncapsulationType::Direct && e.mode != Some(EncapsulationMode::Never)
    });
    if only_tunnel {
        0
    } else if tunnels {
        1
    } else {
        2
    }
}

/// The snapshot's IPPools for `node`: whether each selects the node (by the
/// Node's labels; a node the source does not know has none), and whether it
/// allows `usage`.
fn pools_for(snapshot: &model::Snapshot, node: &str, usage: PoolUse) -> Vec<Pool> {
    let empty = Default::default();
    let labels = snapshot
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map_or(&empty, |n| &n.labels);
    snapshot
        .ip_pools
        .iter()
        .filter_map(|p| {
            let cidr = p.spec.cidr?;
            Some(Pool {
                name: p.name.clone(),
                cidr,
                block_prefix: p.spec.block_size_or_default()?,
                selects_node: p
                    .spec
                    .node_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(labels)),
                disabled: p.spec.disabled.unwrap_or(false),
                strict_affinity: p.spec.strict_affinity.unwrap_or(false),
                allows_use: p
                    .spec
                    .allowed_uses
                    .as_ref()
                    .is_none_or(|u| u.contains(&usage)),
            })
        })
        .collect()
}
