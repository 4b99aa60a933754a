//! The overlay: which tunnels this node needs to the other nodes, and when a
//! packet takes one. Pure; the agent reads the kernel's view of each remote
//! node ([`Adjacency`]) and asks [`decide`].
//!
//! A pool's routes reach this node over BGP with the owning node's address
//! as their next hop (the node-to-node mesh, or a reflector that keeps next
//! hops). Whether a packet to them is encapsulated is decided per remote
//! node from the kernel's own routes: `CrossSubnet` encapsulates only
//! towards nodes the kernel reaches through a gateway, never by comparing
//! prefixes (a node address configured as a /32 does not make every node
//! "remote").

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crds::{EncapsulationMode, EncapsulationType, IpamMode, OverlaySpec};
use ipnet::IpNet;
use model::{Snapshot, Vtep};

/// The VXLAN device's name for each family.
pub const VXLAN_DEVICES: [&str; 2] = ["vxlan.petrel", "vxlan6.petrel"];

/// The IPIP device's name.
pub const IPIP_DEVICE: &str = "ipip.petrel";

/// A tunnel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tunnel {
    /// VXLAN (UDP).
    Vxlan,
    /// IP in IP (IPv4 only).
    Ipip,
    /// WireGuard (encrypted, UDP).
    WireGuard,
}

impl Tunnel {
    /// The bytes the tunnel adds to each packet over an underlay of the
    /// given family: IPIP 20; VXLAN 50 (IPv4) or 70 (IPv6): outer IP, UDP,
    /// VXLAN header and inner Ethernet; WireGuard 60 or 80.
    pub fn overhead(self, v6_underlay: bool) -> u32 {
        match (self, v6_underlay) {
            (Tunnel::Ipip, _) => 20,
            (Tunnel::Vxlan, false) => 50,
            (Tunnel::Vxlan, true) => 70,
            (Tunnel::WireGuard, false) => 60,
            (Tunnel::WireGuard, true) => 80,
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tunnel::Vxlan => "VXLAN",
            Tunnel::Ipip => "IPIP",
            Tunnel::WireGuard => "WireGuard",
        })
    }
}

/// When a pool's traffic to another node is encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// To every other node.
    Always,
    /// Only to nodes reached through a gateway.
    CrossSubnet,
}

/// An IPPool as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOverlay {
    /// `metadata.name`.
    pub name: String,
    /// `spec.cidr`.
    pub cidr: IpNet,
    /// The tunnel and when it is used; `None`: never encapsulated.
    pub tunnel: Option<(Tunnel, Mode)>,
    /// `spec.natOutgoing`.
    pub nat_outgoing: bool,
}

/// This node's VXLAN endpoint for one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalVtep {
    /// The device's address (IPv4: the node's tunnel address, see
    /// [`tunnel_address_wanted`]; IPv6: the device's link-local address,
    /// derived from its MAC address).
    pub address: IpAddr,
    /// The device's MAC address ([`vtep_mac`]).
    pub mac: [u8; 6],
}

/// Another node, and how to reach it through a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its name.
    pub name: String,
    /// Its InternalIPs (the underlay addresses, and the BGP next hops of
    /// its routes over the mesh).
    pub addresses: Vec<IpAddr>,
    /// Its VXLAN endpoints: as published on the Node, or derived the way
    /// its agent derives them (a Node with pod CIDRs under `ipamMode:
    /// Kubernetes`; IPv6 endpoints always).
    pub vteps: Vec<Vtep>,
    /// Its WireGuard public key, as published on the Node.
    pub wireguard_key: Option<[u8; 32]>,
    /// Its pod CIDRs (`ipamMode: Kubernetes`), which its WireGuard peer
    /// entry allows besides the routes learned from it.
    pub pod_cidrs: Vec<IpNet>,
}

impl RemoteNode {
    /// Its VXLAN endpoint of `v6`'s family.
    pub fn vtep(&self, v6: bool) -> Option<Vtep> {
        self.vteps
            .iter()
            .copied()
            .find(|v| v.address.is_ipv6() == v6)
    }

    /// Its underlay address of `v6`'s family.
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        self.addresses.iter().copied().find(|a| a.is_ipv6() == v6)
    }
}

/// What the overlay needs of one snapshot, for one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlayPlan {
    /// VXLAN's network identifier.
    pub vni: u32,
    /// VXLAN's UDP port.
    pub port: u16,
    /// `BGPConfiguration.spec.overlay.mtu`.
    pub mtu: Option<u32>,
    /// Every valid IPPool.
    pub pools: Vec<PoolOverlay>,
    /// This node's VXLAN endpoints, `[IPv4, IPv6]`: for each family that a
    /// pool encapsulates with VXLAN and in which this node has an address
    /// and (IPv4) a block.
    pub vxlan: [Option<LocalVtep>; 2],
    /// This node's underlay address per family `[IPv4, IPv6]`.
    pub underlay: [Option<IpAddr>; 2],
    /// WireGuard, when a pool uses it and the node has an IPv4 address.
    pub wireguard: Option<WireGuardPlan>,
    /// This node's IPIP device's address, when a pool encapsulates with
    /// IPIP and the node has an IPv4 address and block (the same address
    /// as its IPv4 VXLAN endpoint).
    pub ipip: Option<IpAddr>,
    /// Every other node.
    pub remotes: Vec<RemoteNode>,
    /// The endpoints this node's Node object carries now (what its agent
    /// last published).
    pub published: Vec<Vtep>,
    /// The WireGuard public key this node's Node object carries now.
    pub published_wireguard_key: Option<[u8; 32]>,
}

/// What WireGuard needs of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardPlan {
    /// The UDP port.
    pub port: u16,
    /// `wireguardEncryption: Required`: no plaintext to a node without a
    /// key.
    pub required: bool,
    /// The device's address: the node's tunnel address, the source of what
    /// the node sends.
    pub address: Option<IpAddr>,
    /// This node's own pod prefixes (blocks and borrowed addresses, or pod
    /// CIDRs), which never go through the tunnel.
    pub own: Vec<IpNet>,
}

impl OverlayPlan {
    /// The pool holding `prefix`, if any.
    pub fn pool_of(&self, prefix: &IpNet) -> Option<&PoolOverlay> {
        self.pools.iter().find(|p| p.cidr.contains(prefix))
    }

    /// Whether any pool uses `tunnel`.
    pub fn uses(&self, tunnel: Tunnel) -> bool {
        self.pools
            .iter()
            .any(|p| matches!(p.tunnel, Some((t, _)) if t == tunnel))
    }
}

/// How the kernel reaches a remote node's underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjacency {
    /// On a directly connected link.
    Direct,
    /// Through a gateway (another L3 subnet).
    Routed(IpAddr),
    /// Not at all.
    Unreachable,
}

impl fmt::Display for Adjacency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Adjacency::Direct => f.write_str("directly connected"),
            Adjacency::Routed(gw) => write!(f, "routed via {gw}"),
            Adjacency::Unreachable => f.write_str("unreachable"),
        }
    }
}

/// Whether a pool's traffic to one node is encapsulated, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The tunnel taken; `None`: routed as it is.
    pub tunnel: Option<Tunnel>,
    /// Why, in words.
    pub reason: String,
}

/// Decides for one pool and one remote node.
pub fn decide(pool: &PoolOverlay, adjacency: Adjacency) -> Decision {
    let plain = |reason: String| Decision {
        tunnel: None,
        reason,
    };
    match (pool.tunnel, adjacency) {
        (None, _) => plain(format!("pool {} has no encapsulation", pool.name)),
        (Some(_), Adjacency::Unreachable) => {
            plain("the node's address is unreachable: no route to it".into())
        }
        (Some((Tunnel::WireGuard, _)), a) => Decision {
            tunnel: Some(Tunnel::WireGuard),
            reason: format!("pool {} encrypts to every node ({a})", pool.name),
        },
        (Some((t, Mode::Always)), a) => Decision {
            tunnel: Some(t),
            reason: format!("pool {} encapsulates always ({a})", pool.name),
        },
        (Some((_, Mode::CrossSubnet)), Adjacency::Direct) => plain(format!(
            "CrossSubnet: the node is directly connected (pool {})",
            pool.name
        )),
        (Some((t, Mode::CrossSubnet)), Adjacency::Routed(gw)) => Decision {
            tunnel: Some(t),
            reason: format!(
                "CrossSubnet: the node is reached through gateway {gw} (pool {})",
                pool.name
            ),
        },
    }
}

/// The MTU inside a tunnel over a link of `link_mtu`.
pub fn tunnel_mtu(link_mtu: u32, tunnel: Tunnel, v6_underlay: bool) -> u32 {
    link_mtu.saturating_sub(tunnel.overhead(v6_underlay))
}

/// The MTU pods get: the link's, less the largest overhead of the tunnels
/// this node's pools use (a pod's packet may take any of them), each
/// subtracted once.
pub fn pod_mtu(link_mtu: u32, plan: &OverlayPlan) -> u32 {
    let mut overhead = 0;
    for fam in 0..2 {
        if plan.underlay[fam].is_none() {
            continue;
        }
        for p in &plan.pools {
            if let Some((t, _)) = p.tunnel
                && (t != Tunnel::Vxlan || plan.vxlan[fam].is_some())
            {
                overhead = overhead.max(t.overhead(fam == 1));
            }
        }
    }
    link_mtu.saturating_sub(overhead)
}

/// A node's VXLAN MAC address for one family: locally administered,
/// unicast, from a hash of the node's name, so it stays the same across
/// restarts and its peers' neighbour entries stay right.
pub fn vtep_mac(node: &str, v6: bool) -> [u8; 6] {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([u8::from(v6)]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x0e, b[1], b[2], b[3], b[4], b[5]]
}

/// The IPv6 link-local address the kernel gives a device with this MAC
/// (EUI-64).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The first address of the first IPv4 prefix in `prefixes`: a node's IPv4
/// tunnel address under `ipamMode: Kubernetes` (never a pod's: host-local
/// starts after it).
fn first_v4(prefixes: &[IpNet]) -> Option<Ipv4Addr> {
    prefixes.iter().find_map(|p| match p {
        IpNet::V4(n) => Some(n.network()),
        IpNet::V6(_) => None,
    })
}

fn mode(m: Option<EncapsulationMode>) -> Option<Mode> {
    match m.unwrap_or(EncapsulationMode::Always) {
        EncapsulationMode::Always => Some(Mode::Always),
        EncapsulationMode::CrossSubnet => Some(Mode::CrossSubnet),
        EncapsulationMode::Never => None,
    }
}

/// Whether `node` needs an IPv4 tunnel address: some IPv4 pool tunnels
/// (VXLAN, IPIP or WireGuard, in a mode other than `Never`) and the node
/// has an IPv4 InternalIP. Under `ipamMode: Petrel` its agent then
/// allocates one from a pool that allows `Tunnel`, and gives it back when
/// this turns false; under `Kubernetes` it is the first address of the
/// node's first pod CIDR.
pub fn tunnel_address_wanted(snapshot: &Snapshot, node: &str) -> bool {
    let plan = plan(snapshot, node);
    plan.underlay[0].is_some()
        && plan
            .pools
            .iter()
            .any(|p| p.cidr.addr().is_ipv4() && p.tunnel.is_some())
}

/// The overlay for `node`, with the BGPConfiguration [`crate::plan`] uses.
pub fn plan(snapshot: &Snapshot, node: &str) -> OverlayPlan {
    let config = crate::configuration(snapshot).and_then(|c| c.spec.overlay.as_ref());
    let pools: Vec<PoolOverlay> = snapshot
        .ip_pools
        .iter()
        .filter_map(|p| {
            let cidr = p.spec.cidr?.trunc();
            let tunnel = p.spec.encapsulation.as_ref().and_then(|e| {
                let t = match e.kind {
                    EncapsulationType::Direct => return None,
                    EncapsulationType::Vxlan => Tunnel::Vxlan,
                    // IPIP carries IPv4 only.
                    EncapsulationType::Ipip if cidr.addr().is_ipv6() => return None,
                    EncapsulationType::Ipip => Tunnel::Ipip,
                    // WireGuard's rule and table are IPv4 only.
                    EncapsulationType::WireGuard if cidr.addr().is_ipv6() => return None,
                    // Encryption is to every node: a mode other than Never
                    // is Always.
                    EncapsulationType::WireGuard => {
                        mode(e.mode)?;
                        return Some((Tunnel::WireGuard, Mode::Always));
                    }
                };
                Some((t, mode(e.mode)?))
            });
            Some(PoolOverlay {
                name: p.name.clone(),
                cidr,
                tunnel,
                nat_outgoing: p.spec.nat_outgoing.unwrap_or(false),
            })
        })
        .collect();
    let petrel = crate::ipam_mode(snapshot) == IpamMode::Petrel;
    let me = snapshot.nodes.iter().find(|n| n.name == node);
    let underlay = [false, true]
        .map(|v6| me.and_then(|n| n.internal_ips.iter().copied().find(|a| a.is_ipv6() == v6)));
    let vxlan_family = |v6: bool| {
        pools
            .iter()
            .any(|p| p.cidr.addr().is_ipv6() == v6 && matches!(p.tunnel, Some((Tunnel::Vxlan, _))))
    };
    // Under petrel's IPAM the node's agent allocates it from a pool that
    // allows `Tunnel` (when `tunnel_address_wanted` says so).
    let local_v4 = if petrel {
        snapshot.local_ipam.tunnel
    } else {
        me.and_then(|n| first_v4(&n.pod_cidrs))
    };
    let vxlan = [false, true].map(|v6| {
        if !vxlan_family(v6) || underlay[usize::from(v6)].is_none() {
            return None;
        }
        let mac = vtep_mac(node, v6);
        let address = if v6 {
            IpAddr::V6(link_local(mac))
        } else {
            IpAddr::V4(local_v4?)
        };
        Some(LocalVtep { address, mac })
    });
    let wireguard = (underlay[0].is_some()
        && pools
            .iter()
            .any(|p| matches!(p.tunnel, Some((Tunnel::WireGuard, _)))))
    .then(|| WireGuardPlan {
        port: config
            .and_then(|c| c.wireguard_port)
            .unwrap_or(OverlaySpec::DEFAULT_WIREGUARD_PORT),
        required: config.and_then(|c| c.wireguard_encryption)
            == Some(crds::WireGuardEncryption::Required),
        address: local_v4.map(IpAddr::V4),
        own: if petrel {
            snapshot
                .local_ipam
                .blocks
                .iter()
                .copied()
                .chain(snapshot.local_ipam.borrowed.iter().map(|(a, _)| *a))
                .collect()
        } else {
            me.map(|n| n.pod_cidrs.clone()).unwrap_or_default()
        },
    });
    let ipip = match (underlay[0], local_v4) {
        (Some(_), Some(a))
            if pools
                .iter()
                .any(|p| matches!(p.tunnel, Some((Tunnel::Ipip, _)))) =>
        {
            Some(IpAddr::V4(a))
        }
        _ => None,
    };
    let remotes = snapshot
        .nodes
        .iter()
        .filter(|n| n.name != node && !n.internal_ips.is_empty())
        .map(|n| {
            let mut vteps = n.vteps.clone();
            // What its agent uses when it publishes nothing (the file
            // source has no one to publish to).
            for v6 in [false, true] {
                if vteps.iter().any(|v| v.address.is_ipv6() == v6) {
                    continue;
                }
                let mac = vtep_mac(&n.name, v6);
                let address = if v6 {
                    Some(IpAddr::V6(link_local(mac)))
                } else if petrel {
                    None
                } else {
                    first_v4(&n.pod_cidrs).map(IpAddr::V4)
                };
                if let Some(address) = address {
                    vteps.push(Vtep { address, mac });
                }
            }
            RemoteNode {
                name: n.name.clone(),
                addresses: n.internal_ips.clone(),
                vteps,
                wireguard_key: n.wireguard_key,
                pod_cidrs: if petrel {
                    Vec::new()
                } else {
                    n.pod_cidrs.clone()
                },
            }
        })
        .collect();
    OverlayPlan {
        vni: config
            .and_then(|c| c.vxlan_vni)
            .unwrap_or(OverlaySpec::DEFAULT_VNI),
        port: config
            .and_then(|c| c.vxlan_port)
            .unwrap_or(OverlaySpec::DEFAULT_PORT),
        mtu: config.and_then(|c| c.mtu),
        pools,
        vxlan,
        underlay,
        ipip,
        wireguard,
        remotes,
        published: me.map(|n| n.vteps.clone()).unwrap_or_default(),
        published_wireguard_key: me.and_then(|n| n.wireguard_key),
    }
}

/// Per remote node: the decision for each pool (by pool name), for status.
pub type Decisions = BTreeMap<String, BTreeMap<String, Decision>>;

#[cfg(test)]
mod tests;
