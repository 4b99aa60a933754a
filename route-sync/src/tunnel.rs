//! Tunnel devices and what routes through them need: a VXLAN device made
//! and kept as wanted, its permanent neighbour entries (a remote tunnel
//! endpoint's address → its MAC address) and FDB entries (that MAC → the
//! remote node's underlay address).
//!
//! Ownership is by device: petrel's tunnel devices are its own, so every
//! neighbour and FDB entry on them is too, and entries nobody wants are
//! removed. Nothing on any other device is touched.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::stream::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState,
};
use rtnetlink::{LinkUnspec, LinkVxlan};

use crate::kernel::{Kernel, KernelError};

/// A VXLAN device as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// Its name (at most 15 bytes).
    pub name: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP port sent to and listened on.
    pub port: u16,
    /// The node's underlay address, the outer source.
    pub local: IpAddr,
    /// The device's MAC address.
    pub mac: [u8; 6],
    /// The device's MTU.
    pub mtu: u32,
    /// The tunnel endpoint's address on it (an IPv4 host route); `None`
    /// for IPv6, whose endpoint is the device's link-local address.
    pub address: Option<IpNet>,
}

/// What a sync of entries changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryChanges {
    /// Entries added or corrected.
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Request { what, source }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    crate::kernel::errno(e) == Some(errno)
}

/// What makes a VXLAN device the one wanted: changing any of it means
/// making the device again (VNI, port, local address, learning).
type VxlanIdentity = (Option<u32>, Option<u16>, Option<IpAddr>, Option<bool>);

/// The VXLAN settings the kernel has for a device (`None` if it is not
/// VXLAN).
fn vxlan_of(m: &LinkMessage) -> Option<VxlanIdentity> {
    let infos = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(v) => Some(v.as_slice()),
        _ => None,
    })?;
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    let (mut vni, mut port, mut local, mut learning) = (None, None, None, None);
    for i in infos {
        if let LinkInfo::Data(InfoData::Vxlan(attrs)) = i {
            for a in attrs {
                match a {
                    InfoVxlan::Id(v) => vni = Some(*v),
                    InfoVxlan::Port(p) => port = Some(*p),
                    InfoVxlan::Local(ip) => local = Some(IpAddr::V4(*ip)),
                    InfoVxlan::Local6(ip) => local = Some(IpAddr::V6(*ip)),
                    InfoVxlan::Learning(l) => learning = Some(*l),
                    _ => {}
                }
            }
        }
    }
    Some((vni, port, local, learning))
}

fn mtu_of(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(x) => Some(*x),
        _ => None,
    })
}

fn mac_of(m: &LinkMessage) -> Option<Vec<u8>> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(v) => Some(v.clone()),
        _ => None,
    })
}

impl Kernel {
    /// The link named `name`, if there is one.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, KernelError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            r => r.map_err(request(format!("reading link {name}"))),
        }
    }

    /// The MTU of the interface with index `ifindex`.
    pub async fn link_mtu(&self, ifindex: u32) -> Result<Option<u32>, KernelError> {
        let mut s = self.handle.link().get().match_index(ifindex).execute();
        match s.try_next().await {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            r => Ok(r
                .map_err(request(format!("reading link #{ifindex}")))?
                .as_ref()
                .and_then(mtu_of)),
        }
    }

    /// Makes the VXLAN device say `want`, and returns its index: created
    /// when missing; made again when its identity (VNI, port, local
    /// address, learning) differs, or when a device of another kind holds
    /// the name; MTU, MAC address, state and address corrected in place.
    /// Returns also whether anything was changed.
    pub async fn ensure_vxlan(&self, want: &Vxlan) -> Result<(u32, bool), KernelError> {
        let mut changed = false;
        let mut have = self.link(&want.name).await?;
        if let Some(m) = &have {
            let identity = vxlan_of(m);
            let right = identity
                == Some((
                    Some(want.vni),
                    Some(want.port),
                    Some(want.local),
                    Some(false),
                ));
            if !right {
                tracing::info!(device = %want.name, have = ?identity, "tunnel device differs from what is wanted: making it again");
                self.handle
                    .link()
                    .del(m.header.index)
                    .execute()
                    .await
                    .map_err(request(format!("deleting link {}", want.name)))?;
                have = None;
            }
        }
        let index = match have {
            Some(m) => {
                let mut set = LinkUnspec::new_with_index(m.header.index);
                let mut any = false;
                if mtu_of(&m) != Some(want.mtu) {
                    set = set.mtu(want.mtu);
                    any = true;
                }
                if mac_of(&m).as_deref() != Some(&want.mac[..]) {
                    set = set.address(want.mac.to_vec());
                    any = true;
                }
                if !m.header.flags.contains(LinkFlags::Up) {
                    set = set.up();
                    any = true;
                }
                if any {
                    self.handle
                        .link()
                        .set(set.build())
                        .execute()
                        .await
                        .map_err(request(format!("setting link {}", want.name)))?;
                    changed = true;
                }
                m.header.index
            }
            None => {
                let b = LinkVxlan::new(&want.name, want.vni)
                    .port(want.port)
                    .learning(false);
                let b = match want.local {
                    IpAddr::V4(a) => b.local(a),
                    IpAddr::V6(a) => b.local6(a),
                };
                let msg = b.mtu(want.mtu).address(want.mac.to_vec()).up().build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(request(format!("creating VXLAN device {}", want.name)))?;
                changed = true;
                self.link(&want.name)
                    .await?
                    .map(|m| m.header.index)
                    .ok_or_else(|| KernelError::Request {
                        what: format!("creating VXLAN device {}", want.name),
                        source: rtnetlink::Error::RequestFailed,
                    })?
            }
        };
        if self.sync_address(index, want.address).await? {
            changed = true;
        }
        Ok((index, changed))
    }

    /// Makes `want` the only IPv4 address of the device (IPv6 addresses,
    /// its link-local one, are left).
    async fn sync_address(&self, index: u32, want: Option<IpNet>) -> Result<bool, KernelError> {
        let mut changed = false;
        let mut found = false;
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut extra = Vec::new();
        while let Some(a) = s
            .try_next()
            .await
            .map_err(request(format!("reading addresses of link #{index}")))?
        {
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let net = ip.and_then(|ip| IpNet::new(ip, a.header.prefix_len).ok());
            if net.is_some() && net == want {
                found = true;
            } else {
                extra.push(a);
            }
        }
        for a in extra {
            self.handle
                .address()
                .del(a)
                .execute()
                .await
                .map_err(request(format!("removing an address of link #{index}")))?;
            changed = true;
        }
        if let Some(net) = want
            && !found
        {
            self.handle
                .address()
                .add(index, net.addr(), net.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(request(format!("adding {net} to link #{index}")))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Deletes the link named `name` if there is one; whether there was.
    pub async fn remove_link(&self, name: &str) -> Result<bool, KernelError> {
        match self.link(name).await? {
            Some(m) => {
                self.handle
                    .link()
                    .del(m.header.index)
                    .execute()
                    .await
                    .map_err(request(format!("deleting link {name}")))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Makes the permanent neighbour entries of device `ifindex` exactly
    /// `want` (address → MAC).
    pub async fn sync_neighbours(
        &self,
        ifindex: u32,
        want: &[(IpAddr, [u8; 6])],
    ) -> Result<EntryChanges, KernelError> {
        let mut changes = EntryChanges::default();
        let wanted: BTreeSet<(IpAddr, [u8; 6])> = want.iter().copied().collect();
        let mut have = BTreeSet::new();
        let mut stale = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = self.handle.neighbours().get().set_address_family(family);
            req.message_mut()
                .attributes
                .push(NeighbourAttribute::IfIndex(ifindex));
            let mut s = req.execute();
            while let Some(n) = s
                .try_next()
                .await
                .map_err(request(format!("reading neighbours of link #{ifindex}")))?
            {
                if n.header.ifindex != ifindex {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(*v4))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            ip = Some(IpAddr::V6(*v6))
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                        }
                        _ => {}
                    }
                }
                match (ip, mac) {
                    (Some(ip), Some(mac))
                        if n.header.state == NeighbourState::Permanent
                            && wanted.contains(&(ip, mac)) =>
                    {
                        have.insert((ip, mac));
                    }
                    // Link-local multicast and the like the kernel makes
                    // itself carry no address we want; entries that are not
                    // permanent age out by themselves.
                    (Some(_), _) if n.header.state == NeighbourState::Permanent => stale.push(n),
                    _ => {}
                }
            }
        }
        for n in stale {
            match self.handle.neighbours().del(n).execute().await {
                Ok(()) => changes.removed += 1,
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(e) => {
                    return Err(request(format!("removing a neighbour of link #{ifindex}"))(
                        e,
                    ));
                }
            }
        }
        for (ip, mac) in wanted.difference(&have) {
            self.handle
                .neighbours()
                .add(ifindex, *ip)
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(request(format!("adding neighbour {ip} to link #{ifindex}")))?;
            changes.written += 1;
        }
        Ok(changes)
    }

    /// Makes the FDB entries of VXLAN device `ifindex` exactly `want` (MAC →
    /// remote underlay address), each permanent and the device's own.
    pub async fn sync_fdb(
        &self,
        ifindex: u32,
        want: &[([u8; 6], IpAddr)],
    ) -> Result<EntryChanges, KernelError> {
        let mut changes = EntryChanges::default();
        let wanted: BTreeSet<([u8; 6], IpAddr)> = want.iter().copied().collect();
        let mut have = BTreeSet::new();
        let mut stale = Vec::new();
        let mut req = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge);
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::IfIndex(ifindex));
        let mut s = req.execute();
        while let Some(n) = s
            .try_next()
            .await
            .map_err(request(format!("reading the FDB of link #{ifindex}")))?
        {
            if n.header.ifindex != ifindex {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = match b.len() {
                            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            _ => None,
                        }
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    _ => {}
                }
            }
            match (mac, dst) {
                (Some(m), Some(d)) if wanted.contains(&(m, d)) => {
                    have.insert((m, d));
                }
                // Entries the kernel keeps for the device itself (its own
                // MAC, no destination) stay.
                (Some(_), Some(_)) => stale.push(n),
                _ => {}
            }
        }
        for n in stale {
            match self.handle.neighbours().del(n).execute().await {
                Ok(()) => changes.removed += 1,
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(e) => {
                    return Err(request(format!("removing an FDB entry of link #{ifindex}"))(e));
                }
            }
        }
        for (mac, dst) in wanted.difference(&have) {
            self.handle
                .neighbours()
                .add_bridge(ifindex, mac)
                .flags(NeighbourFlags::Own)
                .destination(*dst)
                .replace()
                .execute()
                .await
                .map_err(request(format!(
                    "adding an FDB entry for {dst} to link #{ifindex}"
                )))?;
            changes.written += 1;
        }
        Ok(changes)
    }
}
