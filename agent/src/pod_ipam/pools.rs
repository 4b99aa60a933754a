//! The IPPools as this node's allocator sees them.

use crds::PoolUse;
use ipam::pod::Pool;

/// What the allocator needs of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolsView {
    /// `ipamMode: Petrel`: pods' addresses are petrel's to hand out.
    pub(crate) petrel: bool,
    /// The IPPools, as this node sees them.
    pub(crate) pools: Vec<Pool>,
}

/// The snapshot's IPAM mode and IPPools for `node`.
pub(crate) fn view_for(snapshot: &model::Snapshot, node: &str) -> PoolsView {
    PoolsView {
        petrel: planner::ipam_mode(snapshot) == crds::IpamMode::Petrel,
        pools: pools_for(snapshot, node),
    }
}

/// The snapshot's IPPools for `node`: whether each selects the node (by the
/// Node's labels; a node the source does not know has none), and what it
/// allows.
fn pools_for(snapshot: &model::Snapshot, node: &str) -> Vec<Pool> {
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
                workloads: p
                    .spec
                    .allowed_uses
                    .as_ref()
                    .is_none_or(|u| u.contains(&PoolUse::Workload)),
            })
        })
        .collect()
}
