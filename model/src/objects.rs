//! The typed desired state: what petrel needs of each object, and the
//! [`Snapshot`] of all of them at one moment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crds::{
    BfdProfileSpec, BgpAdvertisementSpec, BgpConfigurationSpec, BgpFilterSpec, BgpPeerSpec,
    IpPoolSpec,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The file (for objects from the API server: `KIND NAMESPACE/NAME`).
    pub file: PathBuf,
    /// 1-based document number within the file; 0 for objects from the API
    /// server.
    pub document: usize,
}

impl Origin {
    /// An object read from the Kubernetes API server.
    pub fn api(kind: &str, namespace: Option<&str>, name: &str) -> Origin {
        let id = match namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        Origin {
            file: PathBuf::from(id),
            document: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            return write!(f, "the API server's {}", self.file.display());
        }
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// An object with its name and origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named<T> {
    /// `metadata.name`.
    pub name: String,
    /// Where it was read.
    pub origin: Origin,
    /// The spec.
    pub spec: T,
}

/// What petrel needs of a `v1` Node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses` of type InternalIP.
    pub internal_ips: Vec<IpAddr>,
    /// The node's own ASN, from the `petrel.dev/as-number` annotation.
    pub as_number: Option<u32>,
    /// The VXLAN tunnel endpoints the node's agent published
    /// ([`crds::VXLAN_ANNOTATIONS`]), at most one per family.
    pub vteps: Vec<Vtep>,
    /// The WireGuard public key its agent published
    /// ([`crds::WIREGUARD_ANNOTATION`]).
    pub wireguard_key: Option<[u8; 32]>,
}

/// A node's VXLAN tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vtep {
    /// The address on its VXLAN device.
    pub address: IpAddr,
    /// The VXLAN device's MAC address.
    pub mac: [u8; 6],
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `spec.externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any node forwards to any endpoint (the default).
    #[default]
    Cluster,
    /// Only nodes with a local endpoint take traffic.
    Local,
}

/// What petrel needs of a `v1` Service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Service {
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.type`.
    pub service_type: String,
    /// `spec.clusterIPs` (or `spec.clusterIP`); `None` addresses dropped.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One endpoint of an [`EndpointSlice`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent counts as ready, as Kubernetes says.
    pub ready: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
}

/// What petrel needs of a `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointSlice {
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: Option<String>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A `v1` Secret's data, decoded.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Secret {
    /// `metadata.name`.
    pub name: String,
    /// `data` (base64-decoded) merged with `stringData`.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Its name and keys, never its values.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Text that may be a secret (a password file's): used as a `str`, never
/// printed (its `Debug` is `"***"`). It serializes as its text, for the
/// agent's saved snapshot (a file only root reads, [`crate::saved`]); no
/// log, status or API answer serializes a snapshot.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sensitive(pub String);

impl std::ops::Deref for Sensitive {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Everything read from the source at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// BGPConfiguration objects.
    pub configurations: Vec<Named<BgpConfigurationSpec>>,
    /// BGPPeer objects.
    pub peers: Vec<Named<BgpPeerSpec>>,
    /// BGPFilter objects.
    pub filters: Vec<Named<BgpFilterSpec>>,
    /// BGPAdvertisement objects.
    pub advertisements: Vec<Named<BgpAdvertisementSpec>>,
    /// BFDProfile objects.
    pub bfd_profiles: Vec<Named<BfdProfileSpec>>,
    /// IPPool objects (valid ones: a bad CIDR or block size is a problem).
    pub ip_pools: Vec<Named<IpPoolSpec>>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Secrets.
    pub secrets: Vec<Secret>,
    /// Where the snapshot was read (a directory, the API server), for
    /// problems that belong to no object.
    pub source: String,
    /// This node's pod blocks and borrowed addresses, from the agent's own
    /// IPAM (not read from the source: the agent fills it in before it
    /// plans, so the planner stays a function of the snapshot).
    pub local_ipam: LocalIpam,
    /// The files objects refer to (`BGPPeer.spec.password.file`), as the
    /// source read them: the path as written, and its text or why it could
    /// not be read. The planner reads no files.
    pub files: BTreeMap<String, Result<Sensitive, String>>,
}

impl Snapshot {
    /// Appends `other`'s objects (not its source, IPAM view or files: those
    /// belong to the whole snapshot, not to the objects in it).
    pub fn extend_from(&mut self, other: &Snapshot) {
        // Destructured, so a new kind of object cannot be forgotten here.
        let Snapshot {
            configurations,
            peers,
            filters,
            advertisements,
            bfd_profiles,
            ip_pools,
            nodes,
            services,
            endpoint_slices,
            secrets,
            source: _,
            local_ipam: _,
            files: _,
        } = other;
        self.configurations.extend(configurations.iter().cloned());
        self.peers.extend(peers.iter().cloned());
        self.filters.extend(filters.iter().cloned());
        self.advertisements.extend(advertisements.iter().cloned());
        self.bfd_profiles.extend(bfd_profiles.iter().cloned());
        self.ip_pools.extend(ip_pools.iter().cloned());
        self.nodes.extend(nodes.iter().cloned());
        self.services.extend(services.iter().cloned());
        self.endpoint_slices.extend(endpoint_slices.iter().cloned());
        self.secrets.extend(secrets.iter().cloned());
    }
}

/// This node's pod addresses as its IPAM has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalIpam {
    /// Blocks affine to this node.
    pub blocks: Vec<IpNet>,
    /// Addresses this node's pods borrowed from other nodes' blocks (host
    /// prefixes), each with its block.
    pub borrowed: Vec<(IpNet, IpNet)>,
    /// The node's IPv4 tunnel address (VXLAN endpoint, IPIP and WireGuard
    /// source), from a pool that allows `Tunnel`; `None` until one is
    /// allocated, or while no pool tunnels.
    pub tunnel: Option<std::net::Ipv4Addr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_their_keys_never_their_values() {
        let s = Secret {
            name: "bgp".into(),
            data: [("tor-a".to_string(), b"s3cret".to_vec())].into(),
        };
        let dump = format!("{s:?}");
        assert!(dump.contains("tor-a") && !dump.contains("s3cret"), "{dump}");
        assert_eq!(format!("{:?}", Sensitive("s3cret".into())), "\"***\"");
    }
}
