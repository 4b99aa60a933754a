//! IPPool status (leader only): every pass counts each pool's blocks and
//! addresses from the IPAMBlocks (`ipam::pod::usage`) and says, in a `Used`
//! condition, whether nodes get addresses from it and if not why. Written
//! by server-side apply under a field manager of its own, so the `Ready`
//! condition (the conditions task's) is left alone, and only when it
//! changed.

use std::collections::BTreeMap;
use std::time::Duration;

use crds::{IPPool, IpamMode, PoolUse};
use ipam::pod::{Block, BlockStore, usage};
use ipam_store::KubeBlocks;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::LeaderContext;

/// The field manager of the counts and the `Used` condition.
const FIELD_MANAGER: &str = "petrel-controller-ipam";
/// How often the pools are counted.
const INTERVAL: Duration = Duration::from_secs(10);

/// The `Used` condition of a pool: whether it is used, why (reason), and
/// what to know.
fn used(
    pool: &IPPool,
    mode: IpamMode,
    nodes: &[Node],
    u: &ipam::pod::Usage,
) -> (bool, &'static str, String) {
    let spec = &pool.spec;
    let counts = format!(
        "{} addresses used, {} free, {} of {} blocks claimed by {} nodes",
        u.used,
        u.free,
        u.claimed_blocks,
        u.blocks,
        u.nodes.len()
    );
    if mode != IpamMode::Petrel {
        return (
            false,
            "IpamModeKubernetes",
            "BGPConfiguration ipamMode is Kubernetes: pods' addresses come from the nodes' spec.podCIDRs, not from IPPools".into(),
        );
    }
    if spec.disabled == Some(true) {
        return (
            false,
            "Disabled",
            format!("spec.disabled: no new address comes from it; {counts}"),
        );
    }
    if spec
        .allowed_uses
        .as_ref()
        .is_some_and(|uses| !uses.contains(&PoolUse::Workload))
    {
        return (
            false,
            "NotForWorkloads",
            "spec.allowedUses has no Workload: pods get no address from it".into(),
        );
    }
    let empty = BTreeMap::new();
    let selected = nodes.iter().any(|n| {
        let labels = n.metadata.labels.as_ref().unwrap_or(&empty);
        spec.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(labels))
    });
    if !selected {
        return (
            false,
            "NoNodeSelected",
            "spec.nodeSelector matches no Node".into(),
        );
    }
    if u.free == 0 {
        return (
            true,
            "Exhausted",
            format!("every address is used: {counts}"),
        );
    }
    (true, "InUse", counts)
}

/// Runs the task for one term, until aborted.
pub async fn run(ctx: LeaderContext) -> Result<(), crate::ControllerError> {
    let pools: Api<IPPool> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let configs: Api<crds::BGPConfiguration> = Api::all(ctx.client.clone());
    let store = KubeBlocks::new(ctx.client.clone());
    let mut written: BTreeMap<String, Value> = BTreeMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let listed = async {
            let p = pools.list(&ListParams::default()).await?;
            let n = nodes.list(&ListParams::default()).await?;
            let c = configs.list(&ListParams::default()).await?;
            Ok::<_, kube::Error>((p.items, n.items, c.items))
        };
        let (pool_list, node_list, config_list) = match listed.await {
            Ok(l) => l,
            Err(e) => {
                ctx.metrics.api_errors.inc();
                tracing::warn!(
                    "IPPool status: cannot list IPPools, Nodes or BGPConfigurations: {e}"
                );
                continue;
            }
        };
        if pool_list.is_empty() {
            continue;
        }
        let blocks: Vec<Block> = match store.list().await {
            Ok(l) => l.into_iter().map(|(b, _)| b).collect(),
            Err(e) => {
                ctx.metrics.api_errors.inc();
                tracing::warn!("IPPool status: cannot list IPAMBlocks: {e}");
                continue;
            }
        };
        let mode = config_list
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("default"))
            .or(config_list.first())
            .and_then(|c| c.spec.ipam_mode)
            .unwrap_or_default();
        for pool in &pool_list {
            let (Some(name), Some(cidr), Some(size)) = (
                pool.metadata.name.clone(),
                pool.spec.cidr,
                pool.spec.block_size_or_default(),
            ) else {
                continue;
            };
            let mine: Vec<&Block> = blocks.iter().filter(|b| b.pool == name).collect();
            let u = usage(cidr, size, &mine);
            let (ok, reason, message) = used(pool, mode, &node_list, &u);
            // The transition time of a condition that did not change is
            // kept: what was written is compared without it.
            let mut body = json!({
                "apiVersion": crds::API_VERSION, "kind": "IPPool", "metadata": {"name": name},
                "status": {
                    "conditions": [{
                        "type": "Used", "status": if ok { "True" } else { "False" },
                        "reason": reason, "message": message,
                        "observedGeneration": pool.metadata.generation,
                    }],
                    "blocks": u.blocks.to_string(),
                    "claimedBlocks": u.claimed_blocks,
                    "freeBlocks": u.free_blocks.to_string(),
                    "usedAddresses": u.used,
                    "freeAddresses": u.free.to_string(),
                    "borrowedAddresses": u.borrowed,
                    "nodes": u.nodes.len(),
                },
            });
            if written.get(&name) == Some(&body) {
                continue;
            }
            let key = body.clone();
            let previous = pool
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Used"));
            let since = match previous {
                Some(c) if c.status == if ok { "True" } else { "False" } => {
                    c.last_transition_time.clone()
                }
                _ => Time(Timestamp::now()),
            };
            body["status"]["conditions"][0]["lastTransitionTime"] = json!(since);
            if !ctx.leadership.is_leading() {
                return Err(crate::ControllerError::NotLeading);
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match pools
                .patch_status(&name, &params, &Patch::Apply(&body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(pool = %name, reason, "IPPool status written");
                    written.insert(name, key);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    ctx.metrics.api_errors.inc();
                    tracing::warn!(pool = %name, "cannot write IPPool status: {e}");
                }
            }
        }
    }
}
