//! `BGPNodeStatus`: one object per node, named after it, written by that
//! node's agent: its BGP sessions, and for each Service IP it considered,
//! whether it advertises it, to which peers, and if not, why.
//!
//! The object has no spec worth the name (an empty one: the kind only
//! exists to carry status), and an ownerReference to its Node, so it goes
//! when the Node goes.

// Each `printcolumn(...)` of kube's derive repeats `type_ = "string"`,
// which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::status::SessionState;

/// `BGPNodeStatus.spec`: empty. The object is its status.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BGPNodeStatus",
    plural = "bgpnodestatuses",
    status = "BgpNodeReport",
    derive = "PartialEq",
    shortname = "bgpnode",
    category = "petrel",
    doc = "What one node's petrel agent reports (the object is named after the node and goes with it): its BGP sessions, and for each Service IP whether the node advertises it, to which peers, and if not, why. Written by the agent only.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Sessions", type_ = "string", json_path = ".status.sessions"),
    printcolumn(name = "Services", type_ = "string", json_path = ".status.advertised"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// No `deny_unknown_fields`: it would put `additionalProperties: false` into
// the schema, which a structural schema may not have; the API server prunes
// what the (empty) schema does not name.
pub struct BgpNodeStatusSpec {}

/// `BGPNodeStatus.status`: what the node's agent reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpNodeReport {
    /// `Ready`: every session the node should have is Established (the same
    /// as the Node's `PetrelBGPReady` condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// `ESTABLISHED/TOTAL established` over `peers` ("2/3 established").
    pub sessions: Option<String>,
    /// `ADVERTISED/TOTAL advertised` over `services` ("4/5 advertised").
    pub advertised: Option<String>,
    /// Every BGP session of the node: BGPPeers, the node-to-node mesh,
    /// peers added through the agent's API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into(), "address".into()]))]
    pub peers: Vec<NodeSessionStatus>,
    /// One entry per Service IP (LoadBalancer, external, ClusterIP with a
    /// Local traffic policy) the node considered, sorted by Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["service".into(), "prefix".into()]))]
    pub services: Vec<ServiceAdvertisementStatus>,
    /// How many entries were left out of `services` to keep the object
    /// small (a cluster with more Service IPs than the agent reports).
    pub services_omitted: Option<u32>,
    /// The tunnels to other nodes: MTUs, devices, and per node and pool
    /// whether traffic is encapsulated and why. Absent when the agent does
    /// not program the kernel.
    pub overlay: Option<NodeOverlayStatus>,
}

/// `BGPNodeStatus.status.overlay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverlayStatus {
    /// MTU of the link that routes to the other nodes (or the configured
    /// one).
    #[serde(rename = "linkMTU")]
    pub link_mtu: Option<u32>,
    /// MTU handed to pods: the link's less the largest tunnel overhead in
    /// use.
    #[serde(rename = "podMTU")]
    pub pod_mtu: Option<u32>,
    /// petrel's tunnel devices on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<TunnelDeviceStatus>,
    /// Every other node, as the overlay reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<OverlayNodeStatus>,
    /// natOutgoing: what the node's nftables table holds, or why it could
    /// not be written.
    pub nat_outgoing: Option<String>,
    /// What went wrong in the last reconciliation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One tunnel device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelDeviceStatus {
    /// Its name.
    pub name: String,
    /// Its MTU.
    #[serde(rename = "mtu")]
    pub mtu: u32,
    /// This node's tunnel endpoint on it.
    pub endpoint: String,
}

/// Another node, as this node's overlay reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlayNodeStatus {
    /// The node.
    pub node: String,
    /// Its underlay address.
    pub address: String,
    /// How the kernel reaches it: "directly connected", "routed via G",
    /// "unreachable".
    pub adjacency: String,
    /// Per IPPool: the tunnel taken and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<OverlayDecisionStatus>,
}

/// One pool's traffic to one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlayDecisionStatus {
    /// The IPPool.
    pub pool: String,
    /// The tunnel taken (`VXLAN`); absent when routed as it is.
    pub tunnel: Option<String>,
    /// Why.
    pub reason: String,
}

/// One BGP session of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSessionStatus {
    /// The session's name: the BGPPeer's, `node-mesh-NODE` for the mesh, or
    /// the name given through the API.
    pub name: String,
    /// The neighbour's address (for a `listenRange` with no neighbour
    /// connected: the range).
    pub address: String,
    /// The session's state.
    pub state: SessionState,
    /// When the session last reached Established (absent while it is not).
    pub established_since: Option<Time>,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
}

/// What kind of Service IP an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ServiceIpType {
    /// `status.loadBalancer.ingress[].ip` of a LoadBalancer Service.
    #[serde(rename = "LoadBalancerIP")]
    LoadBalancerIp,
    /// `spec.externalIPs[]`.
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    /// `spec.clusterIPs[]` (announced as a host route with a Local policy).
    #[serde(rename = "ClusterIP")]
    ClusterIp,
}

/// Whether a node advertises one Service IP, to whom, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAdvertisementStatus {
    /// The Service, `namespace/name`.
    pub service: String,
    /// The prefix announced for it (a host route, or the aggregate a
    /// BGPAdvertisement asks for).
    pub prefix: String,
    /// Which of the Service's IPs it is.
    #[serde(rename = "type")]
    pub type_: ServiceIpType,
    /// Whether this node originates the prefix.
    pub advertised: bool,
    /// Why it is advertised, or why not ("no ready endpoint on this node
    /// (traffic policy Local)").
    pub reason: String,
    /// The peers it is sent to (Established sessions whose export lets it
    /// through).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// The peers it is not sent to although advertised, with the reason
    /// ("session down (Active)", "filtered by export policy").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_sent: Vec<PeerReason>,
}

/// A peer, and why a prefix is not sent to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PeerReason {
    /// The session's name.
    pub peer: String,
    /// Why not.
    pub reason: String,
}
