//! The BGP kinds: `BGPConfiguration`, `BGPPeer`, `BGPFilter` and
//! `BGPAdvertisement`.
//!
//! Every field is optional on the Rust side, also the ones the schema
//! requires: the file source reads these types without an API server in
//! front, and the planner reports a missing field with its name instead of
//! the whole object failing to parse.

// Each `printcolumn(...)` of kube's derive repeats `type_ = "string"`,
// which clippy takes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use kube::CustomResource;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::common::{Cidr, CidrSpec, IpAddress, Ipv4Address, LabelSelector, Seconds, SecretKeyRef};
use crate::status::{BgpPeerStatus, ConditionsStatus};

/// The schema's pattern for a community: `ASN:VALUE` or a well-known name.
pub const COMMUNITY_PATTERN: &str = "^(no-export|no-advertise|[0-9]{1,5}:[0-9]{1,5})$";
/// The schema's pattern for a large community, `ASN:DATA1:DATA2`.
pub const LARGE_COMMUNITY_PATTERN: &str = "^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$";

/// `BGPConfiguration.spec`: the node's BGP identity.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    status = "ConditionsStatus",
    derive = "PartialEq",
    shortname = "bgpconfig",
    category = "petrel",
    doc = "The cluster's BGP identity: ASN, router ID policy, node-to-node mesh, the Service ranges to advertise, graceful restart. One object, named `default`, is used; others are reported and ignored.",
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(
        name = "Mesh",
        type_ = "boolean",
        json_path = ".spec.nodeToNodeMeshEnabled"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    /// Our ASN (1..=4294967294, not 23456). Required.
    #[schemars(required, range(min = 1, max = 4294967294u32))]
    #[x_kube(validation = Rule::new("self != 23456").message("23456 is AS_TRANS, not a usable ASN"))]
    pub as_number: Option<u32>,
    /// BGP identifier; defaults to the node's IPv4 InternalIP.
    #[serde(rename = "routerID", default)]
    #[schemars(with = "Option<Ipv4Address>")]
    #[x_kube(validation = Rule::new("self != '0.0.0.0'").message("0.0.0.0 is not a valid BGP identifier"))]
    pub router_id: Option<Ipv4Addr>,
    /// Address to listen on; default `::` (dual-stack).
    #[schemars(with = "Option<IpAddress>", extend("default" = "::"))]
    pub listen_address: Option<IpAddr>,
    /// Port to listen on; default 179.
    #[schemars(range(min = 1), extend("default" = 179))]
    pub listen_port: Option<u16>,
    /// Graceful restart (RFC 4724); on by default.
    pub graceful_restart: Option<GracefulRestartSpec>,
    /// Cluster ID when reflecting routes; default the router ID.
    #[serde(rename = "routeReflectorClusterID", default)]
    #[schemars(with = "Option<Ipv4Address>")]
    #[x_kube(validation = Rule::new("self != '0.0.0.0'").message("0.0.0.0 is not a cluster ID"))]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// The most next hops (ECMP) a learned route is installed with: paths
    /// equal to the best one in LOCAL_PREF, AS_PATH length, ORIGIN, MED and
    /// eBGP/iBGP; 1 to 256, default 8.
    #[schemars(range(min = 1, max = 256), extend("default" = 8))]
    pub maximum_paths: Option<u32>,
    /// The most dynamic neighbours (BGPPeers with `listenRange`) a node
    /// keeps at once; a connection beyond it is refused. Default 100.
    #[schemars(range(min = 1, max = 100000), extend("default" = 100))]
    pub max_dynamic_neighbors: Option<u32>,
    /// Every node peers over iBGP with every other node (their first
    /// InternalIP of the session's family); default true. Switch it off when
    /// nodes peer with route reflectors or ToR switches instead.
    #[schemars(extend("default" = true))]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Service ClusterIP ranges to advertise: each range from every node, and
    /// a host route for each Service with `internalTrafficPolicy: Local` from
    /// the nodes that have a ready endpoint of it.
    #[serde(rename = "serviceClusterIPs", default)]
    pub service_cluster_ips: Option<Vec<CidrSpec>>,
    /// Service `spec.externalIPs` ranges to advertise: each range from every
    /// node, and a host route for each external IP of a Service with
    /// `externalTrafficPolicy: Local` from the nodes with a ready endpoint.
    #[serde(rename = "serviceExternalIPs", default)]
    pub service_external_ips: Option<Vec<CidrSpec>>,
    /// LoadBalancer ingress ranges: a host route for each LoadBalancer IP in
    /// them, from every node (`externalTrafficPolicy: Cluster`) or from the
    /// nodes with a ready endpoint (`Local`).
    #[serde(rename = "serviceLoadBalancerIPs", default)]
    pub service_load_balancer_ips: Option<Vec<CidrSpec>>,
    /// Where pods' addresses come from: `Kubernetes` (default: each Node's
    /// `spec.podCIDRs`, handed out by host-local; petrel advertises and
    /// blackholes them) or `Petrel` (IPPools cut into blocks per node,
    /// handed out by the CNI plugin `petrel-ipam`; petrel advertises and
    /// blackholes each node's blocks instead).
    #[serde(rename = "ipamMode", default)]
    #[schemars(extend("default" = "Kubernetes"))]
    pub ipam_mode: Option<IpamMode>,
    /// The tunnels between nodes that IPPools' `encapsulation` asks for:
    /// VXLAN's VNI and port, and the MTU.
    pub overlay: Option<OverlaySpec>,
}

/// `BGPConfiguration.spec.overlay`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverlaySpec {
    /// The VXLAN network identifier of petrel's VXLAN devices; default 4096.
    #[serde(rename = "vxlanVNI", default)]
    #[schemars(range(min = 1, max = 16777215), extend("default" = 4096))]
    pub vxlan_vni: Option<u32>,
    /// The UDP port VXLAN is sent to and received on; default 4789.
    #[schemars(range(min = 1, max = 65535), extend("default" = 4789))]
    pub vxlan_port: Option<u16>,
    /// The MTU of the link tunnels leave by, instead of the one the kernel
    /// reports for the interface that routes to the other nodes; the
    /// tunnel devices and pods get it minus the tunnel's overhead. 1350
    /// (IPv6 needs 1280 inside VXLAN over IPv6) to 65535; default unset.
    #[schemars(range(min = 1350, max = 65535))]
    pub mtu: Option<u32>,
    /// The UDP port WireGuard listens on; default 51820.
    #[serde(rename = "wireguardPort", default)]
    #[schemars(range(min = 1, max = 65535), extend("default" = 51820))]
    pub wireguard_port: Option<u16>,
    /// For pools with WireGuard: `Preferred` (default: traffic to a node
    /// whose public key is unknown goes unencrypted) or `Required` (it is
    /// dropped: never plaintext between nodes).
    #[serde(rename = "wireguardEncryption", default)]
    #[schemars(extend("default" = "Preferred"))]
    pub wireguard_encryption: Option<WireGuardEncryption>,
}

/// `BGPConfiguration.spec.overlay.wireguardEncryption`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WireGuardEncryption {
    /// Encrypt to every node whose key is known; the others in the clear.
    #[default]
    Preferred,
    /// Encrypt, or drop.
    Required,
}

impl OverlaySpec {
    /// The default VXLAN network identifier.
    pub const DEFAULT_VNI: u32 = 4096;
    /// The default VXLAN UDP port (IANA's).
    pub const DEFAULT_PORT: u16 = 4789;
    /// The default WireGuard port.
    pub const DEFAULT_WIREGUARD_PORT: u16 = 51820;
}

/// `BGPConfiguration.spec.ipamMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpamMode {
    /// Nodes' `spec.podCIDRs` (host-local).
    #[default]
    Kubernetes,
    /// IPPools, blocks per node, `petrel-ipam`.
    Petrel,
}

/// `BGPAdvertisement.spec` (MetalLB's semantics): how the Service IPs it
/// selects are advertised. A Service IP that no advertisement selects is
/// advertised to every peer with no extra attributes; once one selects it,
/// the advertisements that select it decide to which peers it goes, and with
/// what.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    status = "ConditionsStatus",
    derive = "PartialEq",
    shortname = "bgpadv",
    category = "petrel",
    doc = "Which Service IPs are advertised to which peers, with which communities, LOCAL_PREF and aggregation (MetalLB's semantics).",
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Communities",
        type_ = "string",
        json_path = ".spec.communities"
    ),
    printcolumn(name = "LocalPref", type_ = "integer", json_path = ".spec.localPref"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpAdvertisementSpec {
    /// Services whose labels match any of these (at most 64); none: every
    /// Service. An empty list would select nothing: omit the field instead.
    #[schemars(length(min = 1, max = 64))]
    pub service_selectors: Option<Vec<LabelSelector>>,
    /// Service IPs within any of these ranges; none: every range.
    #[schemars(with = "Option<Vec<Cidr>>", length(min = 1))]
    pub cidrs: Option<Vec<IpNet>>,
    /// BGPPeer names to advertise to; none: every peer.
    #[schemars(length(min = 1))]
    pub peers: Option<Vec<String>>,
    /// Nodes whose labels match any of these advertise (at most 64); none:
    /// every node.
    #[schemars(length(min = 1, max = 64))]
    pub node_selectors: Option<Vec<LabelSelector>>,
    /// Communities to attach, `ASN:VALUE` or a well-known name (`no-export`,
    /// `no-advertise`).
    #[schemars(inner(pattern(COMMUNITY_PATTERN)))]
    pub communities: Option<Vec<String>>,
    /// Large communities to attach, `ASN:DATA1:DATA2`.
    #[schemars(inner(pattern(LARGE_COMMUNITY_PATTERN)))]
    pub large_communities: Option<Vec<String>>,
    /// LOCAL_PREF towards internal peers.
    pub local_pref: Option<u32>,
    /// Advertise the IPv4 range of this length that covers each IP instead
    /// of the /32 (0 to 32; default 32).
    #[schemars(range(max = 32), extend("default" = 32))]
    pub aggregation_length: Option<u8>,
    /// The same for IPv6 (0 to 128; default 128).
    #[serde(rename = "aggregationLengthV6", default)]
    #[schemars(range(max = 128), extend("default" = 128))]
    pub aggregation_length_v6: Option<u8>,
}

/// `BGPConfiguration.spec.gracefulRestart`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestartSpec {
    /// Advertise graceful restart and keep restarting peers' routes; default true.
    #[schemars(extend("default" = true))]
    pub enabled: Option<bool>,
    /// How long peers keep our routes while we restart (the advertised
    /// Restart Time, at most `4095s`); default `120s`.
    #[schemars(extend("default" = 120, "maximum" = 4095))]
    pub restart_time: Option<Seconds>,
    /// How long a peer that came back from a restart has to send End-of-RIB
    /// before its stale routes go; default `360s`.
    #[schemars(extend("default" = 360))]
    pub stale_routes_time: Option<Seconds>,
    /// After our own restart, the longest wait for every peer's End-of-RIB
    /// before best paths are chosen, advertised and installed; default `120s`.
    #[schemars(extend("default" = 120))]
    pub selection_deferral_time: Option<Seconds>,
    /// Long-lived graceful restart (RFC 9494): how long a restarting peer's
    /// routes stay, least preferred, after its restart time (at most this and
    /// what the peer asks for); `0` (the default) does not offer it. At most
    /// 16777215 seconds.
    #[schemars(extend("default" = 0, "maximum" = 16777215))]
    pub long_lived_stale_time: Option<Seconds>,
}

/// `BGPPeer.spec`: one neighbour, or a range of dynamic neighbours.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    status = "BgpPeerStatus",
    derive = "PartialEq",
    category = "petrel",
    doc = "A BGP neighbour (peerIP) or a range of dynamic neighbours (listenRange), the nodes that peer with it, its timers, password, limits and filters.",
    printcolumn(name = "Peer", type_ = "string", json_path = ".spec.peerIP"),
    printcolumn(name = "Range", type_ = "string", json_path = ".spec.listenRange"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.asNumber"),
    printcolumn(name = "Sessions", type_ = "string", json_path = ".status.summary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.peerIP) != has(self.listenRange)")
    .message("set exactly one of peerIP or listenRange"))]
#[x_kube(validation = Rule::new("!(has(self.ebgpMultihop) && has(self.ttlSecurity))")
    .message("ttlSecurity cannot be combined with ebgpMultihop (GTSM fixes the TTL at 255)"))]
#[x_kube(validation = Rule::new("!has(self.bfdProfile) || has(self.peerIP)")
    .message("bfdProfile needs peerIP: BFD runs with one known neighbour, not a listen range"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The peer's address. Either this or `listenRange` is required.
    #[serde(rename = "peerIP", default)]
    #[schemars(with = "Option<IpAddress>")]
    pub peer_ip: Option<IpAddr>,
    /// Accept sessions from any address in this range (dynamic neighbours).
    #[schemars(with = "Option<Cidr>")]
    pub listen_range: Option<IpNet>,
    /// The peer's ASN (1..=4294967294, not 23456). Required.
    #[schemars(required, range(min = 1, max = 4294967294u32))]
    #[x_kube(validation = Rule::new("self != 23456").message("23456 is AS_TRANS, not a usable ASN"))]
    pub as_number: Option<u32>,
    /// The peer's TCP port; default 179.
    #[schemars(range(min = 1), extend("default" = 179))]
    pub port: Option<u16>,
    /// Hold time to propose: `0` (no keepalives) or `3s` to `65535s`;
    /// default `90s`.
    // Numbers 1 and 2 are refused by the `not`; text spellings of them
    // ("2s") too. The keepalive-below-hold-time check is the agent's: both
    // fields may be text ("1m30s"), which CEL cannot compare.
    #[schemars(extend("default" = 90, "maximum" = 65535, "not" = {"enum": [1, 2, "1", "2", "1s", "2s"]}))]
    pub hold_time: Option<Seconds>,
    /// Keepalive interval: at least `1s` and at most a third of the hold
    /// time; default a third of the hold time.
    #[schemars(extend("maximum" = 21845, "not" = {"enum": [0, "0", "0s"]}))]
    pub keepalive_time: Option<Seconds>,
    /// Send hold time (RFC 9687): a peer that reads nothing for this long
    /// while routes wait for it is reset (NOTIFICATION Send Hold Timer
    /// Expired), so a stuck peer holds no memory for ever. `3s` to
    /// `65535s`; default 8 minutes, or twice the hold time if longer.
    #[schemars(extend("maximum" = 65535, "not" = {"enum": [0, 1, 2, "0", "1", "2", "0s", "1s", "2s"]}))]
    pub send_hold_time: Option<Seconds>,
    /// Only accept connections from the peer.
    pub passive: Option<bool>,
    /// TTL (1 to 255) for an external peer that is not directly connected.
    #[schemars(range(min = 1))]
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): the most hops the peer may be away (1 to 254).
    #[schemars(range(min = 1, max = 254))]
    pub ttl_security: Option<u8>,
    /// Source address for the session.
    #[schemars(with = "Option<IpAddress>")]
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 password.
    pub password: Option<PasswordSource>,
    /// Put our address as next hop towards an internal peer.
    pub next_hop_self: Option<bool>,
    /// We are this internal peer's route reflector (RFC 4456): it gets the
    /// routes of our other internal peers, and its routes go to all of them.
    /// With `listenRange`, every node that connects from the range is a client.
    pub route_reflector_client: Option<bool>,
    /// Limits on the prefixes accepted from the peer, per family.
    pub max_prefixes: Option<MaxPrefixesSpec>,
    /// ADD-PATH (RFC 7911): several paths per prefix.
    pub add_paths: Option<AddPathsSpec>,
    /// BGPFilter names, applied in order: their import rules to what the
    /// peer sends, their export rules to what it is sent. Routes learned from
    /// one external peer reach another only when an export rule accepts them.
    pub filters: Option<Vec<String>>,
    /// Only nodes whose labels match peer with this peer; none: every node.
    pub node_selector: Option<LabelSelector>,
    /// A BFDProfile: run BFD (RFC 5880) with the peer, and end the BGP
    /// session the moment BFD says the peer is down (Cease, BFD Down).
    /// Single hop, unless `ebgpMultihop` is set. Only with `peerIP`.
    #[schemars(length(min = 1))]
    pub bfd_profile: Option<String>,
    /// With `bfdProfile`: keep the BGP session down while BFD is not Up
    /// (like FRR's `bfd strict`); default false, BGP comes up on its own.
    pub bfd_strict: Option<bool>,
}

/// `BGPFilter.spec`: ordered rules for routes received (`import`) and sent
/// (`export`).
#[derive(
    CustomResource, JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BGPFilter",
    plural = "bgpfilters",
    status = "ConditionsStatus",
    derive = "PartialEq",
    category = "petrel",
    doc = "Ordered import and export rules for the peers that name this filter: match on prefix, family, communities, AS path or next hop; set LOCAL_PREF, MED, communities, prepends; accept, reject or continue.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterSpec {
    /// Rules for what peers send (at most 1024).
    // Bounded for the API server's cost estimate of the rules' CEL checks.
    #[schemars(length(max = 1024))]
    pub import: Option<Vec<FilterRuleSpec>>,
    /// Rules for what peers are sent (at most 1024).
    #[schemars(length(max = 1024))]
    pub export: Option<Vec<FilterRuleSpec>>,
}

/// One rule: when every condition in `match` holds, `set` changes the route
/// and `action` decides it (`Continue`, the default, goes on to the next rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterRuleSpec {
    /// Conditions, all of which must hold; none: every route.
    #[serde(rename = "match")]
    pub matches: Option<FilterMatchSpec>,
    /// Changes.
    pub set: Option<FilterSetSpec>,
    /// `Accept`, `Reject` or `Continue` (default).
    #[schemars(extend("default" = "Continue"))]
    pub action: Option<FilterAction>,
}

/// Conditions of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatchSpec {
    /// The prefix lies within `cidr`, with a length from `ge` to `le`
    /// (neither: exactly `cidr`'s length).
    pub prefix: Option<PrefixMatchSpec>,
    /// `ipv4` or `ipv6`.
    // A string rather than an enum: the planner names a wrong value in its
    // own words, and the file source must keep reading such objects.
    #[schemars(extend("enum" = ["ipv4", "ipv6"]))]
    pub family: Option<String>,
    /// A community the route carries, `ASN:VALUE`.
    #[schemars(pattern(COMMUNITY_PATTERN))]
    pub community: Option<String>,
    /// A large community the route carries, `ASN:DATA1:DATA2`.
    #[schemars(pattern(LARGE_COMMUNITY_PATTERN))]
    pub large_community: Option<String>,
    /// An ASN anywhere in the AS path.
    pub as_path_contains: Option<u32>,
    /// The ASN the route originated in.
    #[serde(rename = "originAS", default)]
    pub origin_as: Option<u32>,
    /// Bounds on the AS path length.
    pub as_path_length: Option<LengthSpec>,
    /// The next hop lies within this CIDR.
    #[schemars(with = "Option<Cidr>")]
    pub next_hop: Option<IpNet>,
}

/// `match.prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.ge) || !has(self.le) || self.ge <= self.le")
    .message("ge must not be above le"))]
pub struct PrefixMatchSpec {
    /// The covering CIDR. Required.
    #[schemars(required, with = "Option<Cidr>")]
    pub cidr: Option<IpNet>,
    /// Shortest length matched (at least the CIDR's own length).
    #[schemars(range(max = 128))]
    pub ge: Option<u8>,
    /// Longest length matched (at most 32 for IPv4, 128 for IPv6).
    #[schemars(range(max = 128))]
    pub le: Option<u8>,
}

/// `match.asPathLength`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
    .message("min must not be above max"))]
pub struct LengthSpec {
    /// At least.
    pub min: Option<u32>,
    /// At most.
    pub max: Option<u32>,
}

/// Changes a rule makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSetSpec {
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    #[serde(rename = "med", default)]
    pub med: Option<u32>,
    /// Communities to add, `ASN:VALUE`.
    #[schemars(inner(pattern(COMMUNITY_PATTERN)))]
    pub add_communities: Option<Vec<String>>,
    /// Communities to remove.
    #[schemars(inner(pattern(COMMUNITY_PATTERN)))]
    pub remove_communities: Option<Vec<String>>,
    /// Large communities to add, `ASN:DATA1:DATA2`.
    #[schemars(inner(pattern(LARGE_COMMUNITY_PATTERN)))]
    pub add_large_communities: Option<Vec<String>>,
    /// Large communities to remove.
    #[schemars(inner(pattern(LARGE_COMMUNITY_PATTERN)))]
    pub remove_large_communities: Option<Vec<String>>,
    /// Prepend our ASN (or `asn`) `count` times.
    pub prepend: Option<PrependSpec>,
    /// Export only: our own address as next hop.
    pub next_hop_self: Option<bool>,
}

/// `set.prepend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrependSpec {
    /// The ASN; default ours.
    #[schemars(range(min = 1))]
    pub asn: Option<u32>,
    /// How often (1 to 10). Required.
    #[schemars(required, range(min = 1, max = 10))]
    pub count: Option<u8>,
}

/// What a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FilterAction {
    /// Take the route; stop.
    Accept,
    /// Drop the route; stop.
    Reject,
    /// Go on to the next rule.
    Continue,
}

/// `BGPPeer.spec.addPaths`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPathsSpec {
    /// Accept several paths per prefix from the peer; default false.
    #[schemars(extend("default" = false))]
    pub receive: Option<bool>,
    /// Send several paths per prefix: a number (1 to 255) or `all`.
    pub send: Option<AddPathSendSpec>,
}

/// How many paths to send: a count or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddPathSendSpec {
    /// At most this many.
    Count(u32),
    /// A keyword; only `all` is valid.
    Keyword(String),
}

impl JsonSchema for AddPathSendSpec {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "AddPathSendSpec".into()
    }

    // int-or-string: the bounds apply to numbers (0 paths is no ADD-PATH
    // send at all: omit the field), the pattern to text.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The most paths per prefix to send (1 to 255), or \"all\".",
            "x-kubernetes-int-or-string": true,
            "minimum": 1,
            "maximum": 255,
            "pattern": "^all$",
        })
    }
}

/// `BGPPeer.spec.maxPrefixes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefixesSpec {
    /// IPv4 unicast.
    pub ipv4: Option<MaxPrefixSpec>,
    /// IPv6 unicast.
    pub ipv6: Option<MaxPrefixSpec>,
}

/// One family's prefix limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxPrefixSpec {
    /// The most prefixes accepted (at least 1). Required.
    #[schemars(required, range(min = 1))]
    pub limit: Option<u32>,
    /// Warn at this percentage of the limit (1 to 100); default 75.
    #[schemars(range(min = 1, max = 100), extend("default" = 75))]
    pub warning_percent: Option<u8>,
    /// `Restart` (default): Cease / Maximum Number of Prefixes Reached, then
    /// a new session after `restartAfter`; `Log`: only warn.
    #[schemars(extend("default" = "Restart"))]
    pub action: Option<MaxPrefixAction>,
    /// How long the session stays down with `Restart` (at least `1s`);
    /// default `60s`.
    #[schemars(extend("default" = 60, "not" = {"enum": [0, "0", "0s"]}))]
    pub restart_after: Option<Seconds>,
    /// Count every prefix the peer sends against the limit, also those
    /// rejected on import and those in UPDATEs treated as withdrawn, not
    /// only those accepted (FRR's `force`): what a peer is refused is then
    /// bounded too. Default false.
    #[schemars(extend("default" = false))]
    pub force: Option<bool>,
}

/// What happens beyond a prefix limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MaxPrefixAction {
    /// Only warn.
    Log,
    /// End the session and start again later.
    Restart,
}

/// Where a password comes from: exactly one of `file` and `secretKeyRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.file) != has(self.secretKeyRef)")
    .message("set exactly one of file or secretKeyRef"))]
pub struct PasswordSource {
    /// A file holding the password (trailing newline ignored): relative to
    /// the directory with the file source, an absolute path on the node in a
    /// cluster.
    #[schemars(length(min = 1))]
    pub file: Option<String>,
    /// A key of a `v1` Secret (in a cluster: in the namespace petrel runs in).
    pub secret_key_ref: Option<SecretKeyRef>,
}
