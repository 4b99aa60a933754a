//! Blocks as `IPAMBlock` objects in the Kubernetes API server, written by
//! compare-and-swap.

use crds::{IPAMBlock, block_name};
use ipam::pod::{Block, BlockStore, StoreError};
use ipnet::IpNet;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};

use crate::convert::{from_spec, to_spec};

/// The cluster's blocks: one `IPAMBlock` each, named by [`block_name`].
///
/// A version is `resourceVersion/uid`: a replace names the first (the API
/// server refuses it with 409 if the object changed), a delete both (it
/// refuses with 409 if the object changed or was deleted and made again).
#[derive(Clone)]
pub struct KubeBlocks {
    api: Api<IPAMBlock>,
}

impl KubeBlocks {
    /// Blocks through `client`.
    pub fn new(client: kube::Client) -> KubeBlocks {
        KubeBlocks {
            api: Api::all(client),
        }
    }

    fn object(block: &Block, version: Option<&str>) -> IPAMBlock {
        let resource_version = version.map(|v| split(v).0.to_string());
        IPAMBlock {
            metadata: ObjectMeta {
                name: Some(block_name(&block.cidr)),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: to_spec(block),
        }
    }
}

fn split(version: &str) -> (&str, &str) {
    version.split_once('/').unwrap_or((version, ""))
}

/// 409 (changed, or exists) and 404 (deleted since it was read) mean the
/// caller's view is stale: read again. Anything else is the store failing.
fn failed(cidr: IpNet, what: &str, e: kube::Error) -> StoreError {
    match &e {
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => StoreError::Conflict(cidr),
        _ => StoreError::Other(format!("{what} IPAMBlock {}: {e}", block_name(&cidr))),
    }
}

impl BlockStore for KubeBlocks {
    async fn list(&self) -> Result<Vec<(Block, String)>, StoreError> {
        let list = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|e| StoreError::Other(format!("list IPAMBlocks: {e}")))?;
        let mut out = Vec::with_capacity(list.items.len());
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            match from_spec(&o.spec) {
                // A block under another name than its CIDR's would let a
                // second object claim the same addresses: skipped, and a
                // claim of its CIDR still conflicts with nothing but the
                // properly named one.
                Ok(b) if block_name(&b.cidr) == name => {
                    let version = format!(
                        "{}/{}",
                        o.metadata.resource_version.unwrap_or_default(),
                        o.metadata.uid.unwrap_or_default()
                    );
                    out.push((b, version));
                }
                Ok(b) => tracing::warn!(
                    block = %name,
                    "IPAMBlock skipped: its name is not its CIDR's ({})",
                    block_name(&b.cidr)
                ),
                // Its addresses are out of use until it is repaired (`petrel
                // ipam check` reports it); nothing else stops.
                Err(e) => tracing::warn!(block = %name, "IPAMBlock skipped: {e}"),
            }
        }
        Ok(out)
    }

    async fn create(&self, block: &Block) -> Result<(), StoreError> {
        self.api
            .create(&PostParams::default(), &Self::object(block, None))
            .await
            .map(drop)
            .map_err(|e| failed(block.cidr, "create", e))
    }

    async fn update(&self, block: &Block, version: &str) -> Result<(), StoreError> {
        let name = block_name(&block.cidr);
        self.api
            .replace(
                &name,
                &PostParams::default(),
                &Self::object(block, Some(version)),
            )
            .await
            .map(drop)
            .map_err(|e| failed(block.cidr, "replace", e))
    }

    async fn delete(&self, cidr: IpNet, version: &str) -> Result<(), StoreError> {
        let (resource_version, uid) = split(version);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_string()),
                uid: (!uid.is_empty()).then(|| uid.to_string()),
            }),
            ..DeleteParams::default()
        };
        self.api
            .delete(&block_name(&cidr), &params)
            .await
            .map(drop)
            .map_err(|e| failed(cidr, "delete", e))
    }
}
