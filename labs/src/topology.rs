//! Lab topologies: the YAML format of `labs/*.yaml`, its checks, and what is
//! derived from it (the cluster's objects for the agents, the router's
//! configuration, Graphviz DOT).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The topologies shipped in `labs/`, built into the binary so `petrel lab up`
/// works from anywhere.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("tor", include_str!("../tor.yaml")),
    ("tor-bird", include_str!("../tor-bird.yaml")),
    ("rr", include_str!("../rr.yaml")),
    ("two-racks", include_str!("../two-racks.yaml")),
];

/// The name of the lab's IPPool (with `ipamMode: Petrel`).
pub const POD_POOL: &str = "pods";

/// The topology `petrel lab up` uses when none is given.
pub const DEFAULT: &str = "tor";

/// A lab: an L2 segment with a router and nodes (and more segments on the
/// same router: racks), pods on the nodes, Services, an outside host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// The default lab name, the prefix of every namespace.
    pub name: String,
    /// The node subnet; the router and every node have an address in it.
    pub subnet: Ipv4Net,
    /// The router all nodes peer with.
    pub router: Router,
    /// Cluster-wide BGP settings (the BGPConfiguration).
    pub cluster: Cluster,
    /// The nodes.
    pub nodes: Vec<LabNode>,
    /// Services the lab's "kube-proxy" serves and the agents announce.
    #[serde(default)]
    pub services: Vec<Service>,
    /// More L2 segments (racks) on the router, each a subnet of its own:
    /// the router routes between them, nodes in different racks are in
    /// different L3 subnets.
    #[serde(default)]
    pub racks: Vec<Rack>,
    /// A host beyond the router, outside the cluster (what natOutgoing is
    /// for).
    #[serde(default)]
    pub outside: Option<Outside>,
}

/// One entry of `racks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rack {
    /// Its name (its bridge is `br-<name>`, so ≤ 12 characters).
    pub name: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// The router's address in it: the rack's nodes' default gateway.
    pub address: Ipv4Addr,
}

/// `outside`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outside {
    /// The link between the router and the host.
    pub subnet: Ipv4Net,
    /// The router's address on it.
    pub router_address: Ipv4Addr,
    /// The host's address.
    pub address: Ipv4Addr,
}

/// What runs the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RouterKind {
    /// FRR (zebra and bgpd): a ToR with eBGP to every node.
    Frr,
    /// BIRD 2: a ToR with eBGP to every node.
    Bird,
    /// `petrel agent`: a route reflector in the cluster's AS.
    Petrel,
}

impl RouterKind {
    /// A name for people.
    pub fn label(self) -> &'static str {
        match self {
            RouterKind::Frr => "FRR",
            RouterKind::Bird => "BIRD 2",
            RouterKind::Petrel => "petrel route reflector",
        }
    }
}

/// `router`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Router {
    /// frr, bird or petrel.
    pub kind: RouterKind,
    /// Its name (the switch namespace is `<lab>-<name>`).
    pub name: String,
    /// Its address on the node subnet; the nodes' default gateway.
    pub address: Ipv4Addr,
    /// Its AS; required for frr and bird, the cluster's AS for petrel.
    #[serde(default)]
    pub asn: Option<u32>,
    /// Whether it installs the routes it learns into its kernel (a petrel
    /// reflector only); default true. `false`: it reflects routes without
    /// forwarding by them, like a fabric that does not carry pod routes.
    #[serde(default = "yes")]
    pub install_routes: bool,
}

fn yes() -> bool {
    true
}

/// `cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// BGPConfiguration.asNumber: the AS of nodes that have none of their own.
    pub asn: u32,
    /// BGPConfiguration.nodeToNodeMeshEnabled.
    #[serde(default)]
    pub node_to_node_mesh: bool,
    /// BGPConfiguration.serviceLoadBalancerIPs.
    #[serde(default, rename = "serviceLoadBalancerIPs")]
    pub service_load_balancer_ips: Vec<Ipv4Net>,
    /// BGPConfiguration.serviceClusterIPs.
    #[serde(default, rename = "serviceClusterIPs")]
    pub service_cluster_ips: Vec<Ipv4Net>,
    /// BGPConfiguration.ipamMode: where pods' addresses come from.
    #[serde(default)]
    pub ipam_mode: IpamMode,
    /// With `ipamMode: Petrel`: the IPPool the pods' addresses come from.
    #[serde(default)]
    pub pod_pool: Option<Ipv4Net>,
    /// Its blockSize (default 26).
    #[serde(default)]
    pub block_size: Option<u8>,
    /// The IPPool's encapsulation between nodes.
    #[serde(default)]
    pub encapsulation: Option<Encapsulation>,
    /// The IPPool's natOutgoing.
    #[serde(default)]
    pub nat_outgoing: bool,
}

/// `cluster.encapsulation`: the IPPool's, as written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encapsulation {
    /// The tunnel.
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// When.
    pub mode: TunnelMode,
}

/// A tunnel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelType {
    /// VXLAN (50 bytes of overhead).
    #[serde(rename = "VXLAN")]
    Vxlan,
    /// IP in IP (20 bytes).
    #[serde(rename = "IPIP")]
    Ipip,
}

/// When to tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelMode {
    /// To every other node.
    Always,
    /// To nodes in another subnet.
    CrossSubnet,
    /// Never.
    Never,
}

/// `cluster.ipamMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpamMode {
    /// Each node's `podCIDR`; the lab gives its pods their addresses.
    #[default]
    Kubernetes,
    /// `cluster.podPool` in blocks per node: the pods are made by the CNI
    /// plugins (`ptp` with `petrel-ipam`) and get their addresses from
    /// petrel's IPAM.
    Petrel,
}

/// One entry of `nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabNode {
    /// The Node's name (also the bridge port's interface name, so ≤ 15 characters).
    pub name: String,
    /// Its InternalIP on the node subnet.
    pub address: Ipv4Addr,
    /// Its own AS (the `petrel.dev/as-number` annotation); default the cluster's.
    #[serde(default)]
    pub asn: Option<u32>,
    /// Its pod CIDR (`spec.podCIDRs`; pods' addresses come from it with
    /// `ipamMode: Kubernetes`).
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
    /// How many pod namespaces to create (with `ipamMode: Kubernetes`,
    /// addresses .2, .3, … of the pod CIDR).
    #[serde(default = "one")]
    pub pods: u8,
}

fn one() -> u8 {
    1
}

/// A Service's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    /// A ClusterIP only.
    ClusterIP,
    /// A ClusterIP and a LoadBalancer IP.
    LoadBalancer,
}

/// `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Every node may take the traffic.
    #[default]
    Cluster,
    /// Only nodes with an endpoint.
    Local,
}

/// One entry of `services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// The Service's name (namespace `default`).
    pub name: String,
    /// ClusterIP or LoadBalancer.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// spec.clusterIP.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    /// status.loadBalancer.ingress[0].ip; LoadBalancer only.
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// spec.externalTrafficPolicy.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// The nodes whose first pod backs the Service.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl Topology {
    /// Pods get their addresses from petrel's IPAM, through the CNI plugins.
    pub fn petrel_ipam(&self) -> bool {
        self.cluster.ipam_mode == IpamMode::Petrel
    }

    /// The IPPool's block size.
    pub fn block_size(&self) -> u8 {
        self.cluster.block_size.unwrap_or(26)
    }

    /// Parses and checks a topology; errors name the field (`nodes[1].podCIDR`) and why.
    pub fn parse(text: &str) -> anyhow::Result<Topology> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
        let topo: Topology = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                anyhow::anyhow!("{}", e.into_inner())
            } else {
                anyhow::anyhow!("{path}: {}", e.into_inner())
            }
        })?;
        topo.check()?;
        Ok(topo)
    }

    /// Loads a topology by built-in name (`tor`, `rr`, …) or from a file.
    pub fn load(arg: Option<&str>) -> anyhow::Result<Topology> {
        let arg = arg.unwrap_or(DEFAULT);
        let looks_like_path = arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml");
        if !looks_like_path {
            let Some((_, text)) = EMBEDDED.iter().find(|(n, _)| *n == arg) else {
                let names: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
                bail!(
                    "no built-in topology named {arg:?} (there are: {}); give a path to a YAML file for your own",
                    names.join(", ")
                );
            };
            return Topology::parse(text).with_context(|| format!("built-in topology {arg}"));
        }
        let path = Path::new(arg);
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?;
        Topology::parse(&text).with_context(|| format!("topology {arg}"))
    }

    /// The checks serde cannot make: names, addresses inside the subnet,
    /// duplicates, references between fields.
    fn check(&self) -> anyhow::Result<()> {
        check_name("name", &self.name, 20)?;
        check_name("router.name", &self.router.name, 15)?;
        let subnet = self.subnet;
        if subnet.prefix_len() > 29 {
            bail!("subnet: {subnet} is too small for a router and nodes");
        }
        let in_subnet = |field: &str, a: Ipv4Addr| -> anyhow::Result<()> {
            if !subnet.contains(&a) || a == subnet.network() || a == subnet.broadcast() {
                bail!("{field}: {a} is not a host address of subnet {subnet}");
            }
            Ok(())
        };
        in_subnet("router.address", self.router.address)?;
        if !self.router.install_routes && self.router.kind != RouterKind::Petrel {
            bail!("router.installRoutes: only a petrel router can leave its kernel alone");
        }
        let mut segments = vec![subnet];
        for (i, r) in self.racks.iter().enumerate() {
            check_name(&format!("racks[{i}].name"), &r.name, 12)?;
            if let Some(s) = segments.iter().find(|s| overlaps(**s, r.subnet)) {
                bail!("racks[{i}].subnet: {} overlaps {s}", r.subnet);
            }
            if !r.subnet.contains(&r.address) || r.address == r.subnet.network() {
                bail!(
                    "racks[{i}].address: {} is not a host address of {}",
                    r.address,
                    r.subnet
                );
            }
            segments.push(r.subnet);
        }
        if let Some(o) = &self.outside {
            if let Some(s) = segments.iter().find(|s| overlaps(**s, o.subnet)) {
                bail!("outside.subnet: {} overlaps {s}", o.subnet);
            }
            for (field, a) in [
                ("outside.routerAddress", o.router_address),
                ("outside.address", o.address),
            ] {
                if !o.subnet.contains(&a) || a == o.subnet.network() {
                    bail!("{field}: {a} is not a host address of {}", o.subnet);
                }
            }
            if o.address == o.router_address {
                bail!("outside.address: {} is the router's", o.address);
            }
        }
        match (self.router.kind, self.router.asn) {
            (RouterKind::Frr | RouterKind::Bird, None) => {
                bail!(
                    "router.asn: is required for a {} router",
                    self.router.kind.label()
                )
            }
            (RouterKind::Petrel, Some(a)) if a != self.cluster.asn => bail!(
                "router.asn: a petrel route reflector is in the cluster's AS {} (cluster.asn), not {a}; leave it out",
                self.cluster.asn
            ),
            _ => {}
        }
        if self.nodes.is_empty() {
            bail!("nodes: a lab needs at least one node");
        }
        match (self.cluster.ipam_mode, self.cluster.pod_pool) {
            (IpamMode::Petrel, None) => {
                bail!("cluster.podPool: is required with ipamMode Petrel (the IPPool's CIDR)")
            }
            (IpamMode::Petrel, Some(pool)) => {
                if overlaps(pool, subnet) {
                    bail!("cluster.podPool: {pool} overlaps the node subnet");
                }
                let size = self.block_size();
                if size < pool.prefix_len().max(20) || size > 30 {
                    bail!(
                        "cluster.blockSize: /{size} does not fit {pool}: use {} to 30",
                        pool.prefix_len().max(20)
                    );
                }
            }
            // The IPPool of an overlay: the nodes' pod CIDRs are in it.
            (IpamMode::Kubernetes, Some(pool)) => {
                if let Some((i, n)) = self
                    .nodes
                    .iter()
                    .enumerate()
                    .find(|(_, n)| !pool.contains(&n.pod_cidr))
                {
                    bail!(
                        "nodes[{i}].podCIDR: {} is outside cluster.podPool {pool}",
                        n.pod_cidr
                    );
                }
            }
            (IpamMode::Kubernetes, None) => {}
        }
        if (self.cluster.encapsulation.is_some() || self.cluster.nat_outgoing)
            && self.cluster.pod_pool.is_none()
        {
            bail!(
                "cluster.podPool: is required with encapsulation or natOutgoing (they are the IPPool's)"
            );
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::from([self.router.address]);
        for (i, n) in self.nodes.iter().enumerate() {
            check_name(&format!("nodes[{i}].name"), &n.name, 15)?;
            if n.name == self.router.name {
                bail!("nodes[{i}].name: {:?} is also the router's name", n.name);
            }
            if !names.insert(n.name.as_str()) {
                bail!("nodes[{i}].name: {:?} appears twice", n.name);
            }
            // The router's own interfaces and the outside host's namespace.
            if n.name == "outside" || n.name.starts_with("br-") || n.name == "br0" {
                bail!(
                    "nodes[{i}].name: {:?} is reserved (the router's bridges and the outside host)",
                    n.name
                );
            }
            if self.segment_of(n.address).is_none() {
                bail!(
                    "nodes[{i}].address: {} is in neither subnet {subnet} nor a rack's",
                    n.address
                );
            }
            if !addrs.insert(n.address) {
                bail!("nodes[{i}].address: {} is already taken", n.address);
            }
            if self.router.kind == RouterKind::Petrel
                && n.asn.is_some_and(|a| a != self.cluster.asn)
            {
                bail!(
                    "nodes[{i}].asn: nodes of a route reflector are in the cluster's AS {}; leave it out",
                    self.cluster.asn
                );
            }
            if overlaps(n.pod_cidr, subnet) {
                bail!(
                    "nodes[{i}].podCIDR: {} overlaps the node subnet",
                    n.pod_cidr
                );
            }
            for (j, m) in self.nodes[..i].iter().enumerate() {
                if overlaps(n.pod_cidr, m.pod_cidr) {
                    bail!(
                        "nodes[{i}].podCIDR: {} overlaps nodes[{j}].podCIDR",
                        n.pod_cidr
                    );
                }
            }
            // .1 is left free (a gateway address by convention); pods take .2 on.
            let usable = (1u64 << (32 - n.pod_cidr.prefix_len())).saturating_sub(3);
            if n.pods > 16 || u64::from(n.pods) > usable {
                bail!(
                    "nodes[{i}].pods: {} pods do not fit (at most 16, and {usable} addresses in {})",
                    n.pods,
                    n.pod_cidr
                );
            }
        }
        let mut svc_names = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            check_name(&format!("services[{i}].name"), &s.name, 40)?;
            if !svc_names.insert(s.name.as_str()) {
                bail!("services[{i}].name: {:?} appears twice", s.name);
            }
            if !self
                .cluster
                .service_cluster_ips
                .iter()
                .any(|c| c.contains(&s.cluster_ip))
            {
                bail!(
                    "services[{i}].clusterIP: {} is outside cluster.serviceClusterIPs, so no node would announce it",
                    s.cluster_ip
                );
            }
            match (s.kind, s.load_balancer_ip) {
                (ServiceType::LoadBalancer, None) => {
                    bail!("services[{i}].loadBalancerIP: is required for type LoadBalancer")
                }
                (ServiceType::ClusterIP, Some(_)) => {
                    bail!("services[{i}].loadBalancerIP: only a LoadBalancer Service has one")
                }
                (_, Some(ip))
                    if !self
                        .cluster
                        .service_load_balancer_ips
                        .iter()
                        .any(|c| c.contains(&ip)) =>
                {
                    bail!(
                        "services[{i}].loadBalancerIP: {ip} is outside cluster.serviceLoadBalancerIPs, so no node would announce it"
                    )
                }
                _ => {}
            }
            for (j, e) in s.endpoints.iter().enumerate() {
                match self.nodes.iter().find(|n| &n.name == e) {
                    None => bail!("services[{i}].endpoints[{j}]: there is no node {e:?}"),
                    Some(n) if n.pods == 0 => {
                        bail!("services[{i}].endpoints[{j}]: node {e:?} has no pods to back it")
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The segment holding `a`: its bridge's name, the router's address on
    /// it, its subnet; `None` if no segment's subnet holds it as a host
    /// address.
    pub fn segment_of(&self, a: Ipv4Addr) -> Option<(String, Ipv4Addr, Ipv4Net)> {
        let host = |s: Ipv4Net| s.contains(&a) && a != s.network() && a != s.broadcast();
        if host(self.subnet) {
            return Some(("br0".into(), self.router.address, self.subnet));
        }
        self.racks
            .iter()
            .find(|r| host(r.subnet))
            .map(|r| (format!("br-{}", r.name), r.address, r.subnet))
    }

    /// The pods' MTU the lab gives its own pods: the link's (1500) less the
    /// pool's tunnel overhead.
    pub fn pod_mtu(&self) -> u32 {
        match self.cluster.encapsulation {
            Some(Encapsulation {
                mode: TunnelMode::Never,
                ..
            })
            | None => 1500,
            Some(Encapsulation {
                kind: TunnelType::Vxlan,
                ..
            }) => 1450,
            Some(Encapsulation {
                kind: TunnelType::Ipip,
                ..
            }) => 1480,
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The BGP session kind between the router and a node, for people.
    pub fn session_kind(&self, node: &LabNode) -> &'static str {
        if node.asn.unwrap_or(self.cluster.asn) == self.router_asn() {
            "iBGP"
        } else {
            "eBGP"
        }
    }

    /// The router's AS.
    pub fn router_asn(&self) -> u32 {
        self.router.asn.unwrap_or(self.cluster.asn)
    }
}

impl LabNode {
    /// The address of pod `i` (1-based): the pod CIDR's network + 1 + i.
    pub fn pod_ip(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr.network()) + 1 + u32::from(i))
    }
}

/// Whether two networks share an address (one holds the other's network address).
fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Names become namespace and interface names: lowercase letters, digits and
/// `-`, starting with a letter.
fn check_name(field: &str, name: &str, max: usize) -> anyhow::Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || !ok_chars || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!(
            "{field}: {name:?} must be lowercase letters, digits and '-', starting with a letter"
        );
    }
    if name.len() > max {
        bail!("{field}: {name:?} is longer than {max} characters");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn every_embedded_topology_parses() {
        for (name, text) in EMBEDDED {
            let t = Topology::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&t.name, name);
            assert!(t.nodes.len() >= 3, "{name}");
        }
    }

    #[test]
    fn racks_and_the_outside_are_checked() {
        let racks = EMBEDDED
            .iter()
            .find(|(n, _)| *n == "two-racks")
            .map(|(_, t)| *t)
            .expect("two-racks");
        let t = Topology::parse(racks).expect("parses");
        let b1 = t.node("node-b1").expect("node-b1");
        let (bridge, gateway, _) = t.segment_of(b1.address).expect("in rack B");
        assert_eq!(bridge, "br-rack-b");
        assert_eq!(gateway.to_string(), "192.168.120.1");
        assert_eq!(t.pod_mtu(), 1450);
        let objects = crate::render::cluster_objects(&t);
        let pool = &objects
            .iter()
            .find(|(f, _)| f == "ippool.yaml")
            .expect("pool")
            .1;
        assert!(
            pool.contains("encapsulation: {type: VXLAN, mode: CrossSubnet}"),
            "{pool}"
        );
        assert!(pool.contains("natOutgoing: true"), "{pool}");
        let reflector = crate::render::reflector_objects(&t);
        assert!(
            reflector
                .iter()
                .any(|(_, y)| y.contains("listenRange: 192.168.120.0/24"))
        );
        for (change, want) in [
            (
                "192.168.120.11,",
                "nodes[2].address: 192.168.130.11 is in neither subnet",
            ),
            (
                "subnet: 192.168.120.0/24, address: 192.168.120.1}",
                "racks[0].subnet: 192.168.110.0/24 overlaps 192.168.110.0/24",
            ),
            (
                "podCIDR: 10.90.4.0/24",
                "nodes[3].podCIDR: 10.91.4.0/24 is outside cluster.podPool",
            ),
            (
                "installRoutes: false}",
                "router.installRoutes: only a petrel router",
            ),
        ] {
            let bad = match change {
                "192.168.120.11," => racks.replace("192.168.120.11,", "192.168.130.11,"),
                "podCIDR: 10.90.4.0/24" => racks.replace(change, "podCIDR: 10.91.4.0/24"),
                "installRoutes: false}" => racks
                    .replace("kind: petrel", "kind: frr")
                    .replace("installRoutes: false}", "installRoutes: false, asn: 65000}"),
                _ => racks.replace(change, "subnet: 192.168.110.0/24, address: 192.168.110.2}"),
            };
            let e = Topology::parse(&bad).expect_err(want).to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    pub(crate) fn err(text: &str) -> String {
        match Topology::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    pub(crate) fn tor() -> String {
        EMBEDDED[0].1.to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(&tor().replace("podCIDR: 10.244.2.0/24", "podCIDR: 10.244.2.0/33"));
        assert!(e.starts_with("nodes[1].podCIDR:"), "{e}");
        let e = err(&tor().replace("pods: 2}", "pods: 2, color: red}"));
        assert!(e.starts_with("nodes[0]") && e.contains("color"), "{e}");
        let e = err(&tor().replace("address: 192.168.100.13", "address: 192.168.101.13"));
        assert!(
            e.starts_with("nodes[2].address:") && e.contains("subnet"),
            "{e}"
        );
        let e = err(&tor().replace("kind: frr", "kind: quagga"));
        assert!(e.starts_with("router.kind:"), "{e}");
        let e = err(&tor().replace("endpoints: [node-1, node-2]", "endpoints: [node-1, node-9]"));
        assert!(e.starts_with("services[0].endpoints[1]:"), "{e}");
        let e = err(&tor().replace("10.244.3.0/24", "10.244.2.128/25"));
        assert!(
            e.starts_with("nodes[2].podCIDR:") && e.contains("nodes[1]"),
            "{e}"
        );
        let e = err(&tor().replace(", asn: 65000}", "}"));
        assert!(e.starts_with("router.asn:"), "{e}");
        let e = err(&tor().replace(
            "loadBalancerIP: 198.51.100.10",
            "loadBalancerIP: 203.0.113.1",
        ));
        assert!(e.starts_with("services[0].loadBalancerIP:"), "{e}");
        let e = err(&tor().replace("name: node-2", "name: Node_2"));
        assert!(e.starts_with("nodes[1].name:"), "{e}");
        let e = err("name: x\n");
        assert!(e.contains("subnet"), "{e}");
    }

    #[test]
    fn unknown_names_and_paths_are_explained() {
        let e = format!("{:#}", Topology::load(Some("nope")).expect_err("unknown"));
        assert!(e.contains("tor, tor-bird, rr"), "{e}");
        let e = format!(
            "{:#}",
            Topology::load(Some("/nonexistent/x.yaml")).expect_err("missing")
        );
        assert!(e.contains("cannot read /nonexistent/x.yaml"), "{e}");
    }
}
