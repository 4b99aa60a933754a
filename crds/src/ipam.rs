//! `IPAMBlock`: one block of an `IPPool`, the node it is affine to, and who
//! holds each of its addresses. The cluster's record of pod addresses:
//! agents write it by compare-and-swap (`resourceVersion`), a block's
//! creation is its node's claim on it, and the controller's garbage
//! collection and `petrel ipam check` read it.
//!
//! Named after its CIDR ([`block_name`]), so two nodes claiming one block
//! create one object, and exactly one succeeds.

// Each `printcolumn(...)` of kube's derive repeats `type_ = "string"`,
// which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::common::Cidr;

/// `IPAMBlock.spec`: the block and its addresses. Written by petrel only.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    derive = "PartialEq",
    shortname = "ipamblock",
    category = "petrel",
    doc = "One block of an IPPool: the node it is affine to (which routes it) and who holds each of its addresses. Written by petrel's agents and controller only; read it with `petrel ipam show`.",
    printcolumn(name = "CIDR", type_ = "string", json_path = ".spec.cidr"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IpamBlockSpec {
    /// The block's CIDR. Required.
    #[schemars(required, with = "Option<Cidr>")]
    pub cidr: Option<IpNet>,
    /// The IPPool it was cut from.
    #[schemars(extend("maxLength" = 253))]
    pub pool: String,
    /// The node the block is affine to; absent once that node is gone while
    /// other nodes still borrow addresses of the block.
    #[schemars(extend("maxLength" = 253))]
    pub node: Option<String>,
    /// Bumped by every change; the sequence number of the next address
    /// handed out.
    #[serde(default)]
    pub sequence: u64,
    /// Ordinals below this were handed out at least once (ordinal 0 is
    /// the gateway, never handed out).
    #[serde(default)]
    pub fresh: u32,
    /// The addresses in use, by ordinal.
    #[serde(default)]
    #[schemars(extend("maxItems" = 4096))]
    pub allocations: Vec<IpamAllocation>,
    /// Addresses given back, oldest first: reused once cooled down.
    #[serde(default)]
    #[schemars(extend("maxItems" = 4096))]
    pub released: Vec<IpamReleased>,
    /// When the block last became empty.
    pub empty_since: Option<Time>,
}

/// One address in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpamAllocation {
    /// Position in the block (0: its first address).
    pub ordinal: u32,
    /// The CNI attachment: `CONTAINERID/IFNAME`.
    #[schemars(extend("maxLength" = 300))]
    pub handle: String,
    /// `NAMESPACE/NAME` of the pod, when the runtime said.
    #[schemars(extend("maxLength" = 317))]
    pub pod: Option<String>,
    /// The node the pod runs on (another than the block's: borrowed).
    #[schemars(extend("maxLength" = 253))]
    pub node: String,
    /// The block's sequence number when it was handed out.
    pub sequence: u64,
}

/// An address given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpamReleased {
    /// Position in the block.
    pub ordinal: u32,
    /// When it was given back.
    pub at: Time,
}

/// The object name of the block `cidr`: its address and length with `-`
/// for `.`, `:` and `/` (`10-244-3-64-26`, `fd00-10---40-122`).
pub fn block_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}
