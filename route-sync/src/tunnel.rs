//! Tunnel devices and what routes through them need: a VXLAN or IPIP
//! device made and kept as wanted; a VXLAN device's permanent neighbour
//! entries (a remote tunnel
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
    InfoData, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags};
use rtnetlink::{IpVersion, LinkIpIp, LinkUnspec, LinkVxlan, LinkWireguard};

use crate::kernel::{Kernel, KernelError};

/// A tunnel device as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelDevice {
    /// Its name (at most 15 bytes).
    pub name: String,
    /// VXLAN or IPIP, with what makes it that tunnel.
    pub kind: TunnelKind,
    /// The node's underlay address, the outer source.
    pub local: IpAddr,
    /// The device's MAC address (VXLAN; IPIP devices have none).
    pub mac: Option<[u8; 6]>,
    /// The device's MTU.
    pub mtu: u32,
    /// The node's tunnel address on it (an IPv4 host route), the source of
    /// what the node itself sends through it; `None` for IPv6 VXLAN, whose
    /// endpoint is the device's link-local address.
    pub address: Option<IpNet>,
}

/// The kind of tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    /// VXLAN: its network identifier and UDP port; no learning (the
    /// entries are written).
    Vxlan {
        /// The VXLAN network identifier.
        vni: u32,
        /// The UDP port sent to and listened on.
        port: u16,
    },
    /// IP in IP with any remote: the outer destination is each route's
    /// gateway (`via <node> dev ipip.petrel onlink`). IPv4 only.
    Ipip,
    /// The kernel's WireGuard: the device only; its keys and peers are set
    /// through generic netlink ([`crate::wireguard`]).
    WireGuard,
}

/// The netlink message that creates `want`.
pub fn link_message(want: &TunnelDevice) -> Result<LinkMessage, KernelError> {
    let msg = match (want.kind, want.local) {
        (TunnelKind::Vxlan { vni, port }, local) => {
            let b = LinkVxlan::new(&want.name, vni).port(port).learning(false);
            let b = match local {
                IpAddr::V4(a) => b.local(a),
                IpAddr::V6(a) => b.local6(a),
            };
            let b = b.mtu(want.mtu);
            match want.mac {
                Some(m) => b.address(m.to_vec()).up().build(),
                None => b.up().build(),
            }
        }
        (TunnelKind::Ipip, IpAddr::V4(a)) => LinkIpIp::new(&want.name)
            .local(a)
            .ttl(64)
            .pmtudisc(true)
            .mtu(want.mtu)
            .up()
            .build(),
        (TunnelKind::WireGuard, _) => LinkWireguard::new(&want.name).mtu(want.mtu).up().build(),
        (TunnelKind::Ipip, IpAddr::V6(_)) => {
            return Err(KernelError::Invalid(format!(
                "{}: IPIP carries IPv4 only, and its local address is IPv6",
                want.name
            )));
        }
    };
    Ok(msg)
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

/// What makes a tunnel device the one wanted: changing any of it means
/// making the device again. VXLAN: VNI, port, local address, learning;
/// IPIP: local and remote address (any).
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Vxlan(Option<u32>, Option<u16>, Option<IpAddr>, Option<bool>),
    Ipip(Option<IpAddr>, Option<IpAddr>),
    WireGuard,
    Other,
}

/// What the kernel has of a device's tunnel settings.
fn identity_of(m: &LinkMessage) -> Identity {
    let Some(infos) = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(v) => Some(v.as_slice()),
        _ => None,
    }) else {
        return Identity::Other;
    };
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.clone()),
        _ => None,
    });
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(d) => Some(d),
        _ => None,
    });
    match (kind, data) {
        (Some(InfoKind::Vxlan), data) => {
            let (mut vni, mut port, mut local, mut learning) = (None, None, None, None);
            if let Some(InfoData::Vxlan(attrs)) = data {
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
            Identity::Vxlan(vni, port, local, learning)
        }
        (Some(InfoKind::IpIp), data) => {
            let (mut local, mut remote) = (None, None);
            if let Some(InfoData::IpTunnel(attrs)) = data {
                for a in attrs {
                    match a {
                        InfoIpTunnel::Local(ip) => local = Some(*ip),
                        InfoIpTunnel::Remote(ip) => remote = Some(*ip),
                        _ => {}
                    }
                }
            }
            Identity::Ipip(local, remote)
        }
        (Some(InfoKind::Wireguard), _) => Identity::WireGuard,
        _ => Identity::Other,
    }
}

fn wanted_identity(want: &TunnelDevice) -> Identity {
    match want.kind {
        TunnelKind::Vxlan { vni, port } => {
            Identity::Vxlan(Some(vni), Some(port), Some(want.local), Some(false))
        }
        TunnelKind::Ipip => Identity::Ipip(
            Some(want.local),
            Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ),
        TunnelKind::WireGuard => Identity::WireGuard,
    }
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

    /// Makes the tunnel device say `want`, and returns its index: created
    /// when missing; made again when its identity (kind, VNI, port, local
    /// address) differs, or when a device of another kind holds the name;
    /// MTU, MAC address, state and address corrected in place. Returns
    /// also whether anything was changed.
    pub async fn ensure_tunnel(&self, want: &TunnelDevice) -> Result<(u32, bool), KernelError> {
        let mut changed = false;
        let mut have = self.link(&want.name).await?;
        if let Some(m) = &have {
            let identity = identity_of(m);
            if identity != wanted_identity(want) {
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
                if let Some(mac) = want.mac
                    && mac_of(&m).as_deref() != Some(&mac[..])
                {
                    set = set.address(mac.to_vec());
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
                let msg = link_message(want)?;
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(request(format!("creating tunnel device {}", want.name)))?;
                changed = true;
                self.link(&want.name)
                    .await?
                    .map(|m| m.header.index)
                    .ok_or_else(|| KernelError::Request {
                        what: format!("creating tunnel device {}", want.name),
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

    /// The index of the interface that holds `addr`, if one does.
    pub async fn interface_with(&self, addr: IpAddr) -> Result<Option<u32>, KernelError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_address_filter(addr)
            .execute();
        Ok(s.try_next()
            .await
            .map_err(request(format!("reading the addresses for {addr}")))?
            .map(|a| a.header.index))
    }

    /// The index of the link named `name`, if there is one.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, KernelError> {
        Ok(self.link(name).await?.map(|m| m.header.index))
    }

    /// Brings a device made elsewhere (a userspace WireGuard's TUN device)
    /// to `mtu`, up, with `address` its only IPv4 address; whether anything
    /// changed.
    pub async fn configure_link(
        &self,
        name: &str,
        mtu: u32,
        address: Option<IpNet>,
    ) -> Result<Option<(u32, bool)>, KernelError> {
        let Some(m) = self.link(name).await? else {
            return Ok(None);
        };
        let index = m.header.index;
        let mut changed = false;
        if mtu_of(&m) != Some(mtu) || !m.header.flags.contains(LinkFlags::Up) {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(request(format!("setting link {name}")))?;
            changed = true;
        }
        if self.sync_address(index, address).await? {
            changed = true;
        }
        Ok(Some((index, changed)))
    }

    /// The IPv4 rules `not fwmark MARK lookup TABLE` there are.
    async fn fwmark_rules(
        &self,
        table: u32,
        mark: u32,
    ) -> Result<Vec<netlink_packet_route::rule::RuleMessage>, KernelError> {
        let mut found = Vec::new();
        let mut s = self.handle.rule().get(IpVersion::V4).execute();
        while let Some(r) = s
            .try_next()
            .await
            .map_err(request("reading the IPv4 rules"))?
        {
            let t = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RuleAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            let m = r.attributes.iter().find_map(|a| match a {
                RuleAttribute::FwMark(m) => Some(*m),
                _ => None,
            });
            if t == table && m == Some(mark) && r.header.flags.contains(RuleFlags::Invert) {
                found.push(r);
            }
        }
        Ok(found)
    }

    /// Makes sure the IPv4 rule `not fwmark MARK/MARK lookup TABLE` exists
    /// at `priority` (what WireGuard's own packets, marked, skip); whether
    /// it was added.
    pub async fn ensure_fwmark_rule(
        &self,
        table: u32,
        mark: u32,
        priority: u32,
    ) -> Result<bool, KernelError> {
        if !self.fwmark_rules(table, mark).await?.is_empty() {
            return Ok(false);
        }
        let mut add = self
            .handle
            .rule()
            .add()
            .v4()
            .action(RuleAction::ToTable)
            .table_id(table)
            .priority(priority)
            .fw_mark(mark);
        add.message_mut()
            .attributes
            .push(RuleAttribute::FwMask(mark));
        add.message_mut().header.flags |= RuleFlags::Invert;
        match add.execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(request(format!(
                "adding rule not fwmark {mark:#x} lookup {table}"
            ))(e)),
        }
    }

    /// Removes the rule [`Kernel::ensure_fwmark_rule`] made (`not fwmark
    /// MARK lookup TABLE`; other rules on that table, another program's,
    /// stay); whether there was one.
    pub async fn remove_fwmark_rule(&self, table: u32, mark: u32) -> Result<bool, KernelError> {
        let found = self.fwmark_rules(table, mark).await?;
        let any = !found.is_empty();
        for r in found {
            self.handle
                .rule()
                .del(r)
                .execute()
                .await
                .map_err(request(format!(
                    "removing rule not fwmark {mark:#x} lookup {table}"
                )))?;
        }
        Ok(any)
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
        let wanted: BTreeSet<(IpAddr, [u8; 6])> = want.iter().copied().collect();
        let mut have = BTreeSet::new();
        let mut stale = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for n in self.entries(family, ifindex, "neighbours").await? {
                let permanent = n.header.state == NeighbourState::Permanent;
                match (destination(&n), link_layer_address(&n)) {
                    (Some(ip), Some(mac)) if permanent && wanted.contains(&(ip, mac)) => {
                        have.insert((ip, mac));
                    }
                    // Link-local multicast and the like the kernel makes
                    // itself carry no address we want; entries that are not
                    // permanent age out by themselves.
                    (Some(_), _) if permanent => stale.push(n),
                    _ => {}
                }
            }
        }
        let mut changes = EntryChanges {
            removed: self.remove_entries(stale, ifindex, "a neighbour").await?,
            written: 0,
        };
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
        let wanted: BTreeSet<([u8; 6], IpAddr)> = want.iter().copied().collect();
        let mut have = BTreeSet::new();
        let mut stale = Vec::new();
        for n in self
            .entries(AddressFamily::Bridge, ifindex, "the FDB")
            .await?
        {
            match (link_layer_address(&n), destination(&n)) {
                (Some(m), Some(d)) if wanted.contains(&(m, d)) => {
                    have.insert((m, d));
                }
                // Entries the kernel keeps for the device itself (its own
                // MAC, no destination) stay.
                (Some(_), Some(_)) => stale.push(n),
                _ => {}
            }
        }
        let mut changes = EntryChanges {
            removed: self.remove_entries(stale, ifindex, "an FDB entry").await?,
            written: 0,
        };
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

    /// The neighbour table's entries of `family` on device `ifindex`.
    async fn entries(
        &self,
        family: AddressFamily,
        ifindex: u32,
        what: &str,
    ) -> Result<Vec<NeighbourMessage>, KernelError> {
        let mut req = self.handle.neighbours().get().set_address_family(family);
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::IfIndex(ifindex));
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(n) = s
            .try_next()
            .await
            .map_err(request(format!("reading {what} of link #{ifindex}")))?
        {
            // The filter is a hint older kernels ignore.
            if n.header.ifindex == ifindex {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Removes `stale` (gone already is fine); how many went.
    async fn remove_entries(
        &self,
        stale: Vec<NeighbourMessage>,
        ifindex: u32,
        what: &str,
    ) -> Result<usize, KernelError> {
        let mut removed = 0;
        for n in stale {
            match self.handle.neighbours().del(n).execute().await {
                Ok(()) => removed += 1,
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(request(format!("removing {what} of link #{ifindex}"))(e)),
            }
        }
        Ok(removed)
    }
}

/// An entry's destination: an IP neighbour's address, or an FDB entry's
/// remote (which the kernel may give as raw bytes).
fn destination(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

/// An entry's MAC address.
fn link_layer_address(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(m: &LinkMessage) -> (Option<InfoKind>, Option<InfoData>) {
        let infos = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(v) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let kind = infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        });
        let data = infos.iter().find_map(|i| match i {
            LinkInfo::Data(d) => Some(d.clone()),
            _ => None,
        });
        (kind, data)
    }

    fn device(kind: TunnelKind, local: &str) -> TunnelDevice {
        TunnelDevice {
            name: "ipip.petrel".into(),
            kind,
            local: local.parse().expect("address"),
            mac: None,
            mtu: 1480,
            address: None,
        }
    }

    /// The kernels here have no `ipip` module, so the message that makes
    /// the device is checked as it is sent, and read back as the kernel's
    /// own answer would be.
    #[test]
    fn an_ipip_device_is_any_remote_from_the_node_address_with_path_mtu_discovery() {
        let want = device(TunnelKind::Ipip, "10.0.1.1");
        let m = link_message(&want).expect("message");
        let (kind, data) = attrs(&m);
        assert_eq!(kind, Some(InfoKind::IpIp));
        let Some(InfoData::IpTunnel(t)) = data else {
            panic!("no IPIP data: {m:?}")
        };
        assert!(
            t.contains(&InfoIpTunnel::Local("10.0.1.1".parse().expect("ip"))),
            "{t:?}"
        );
        assert!(t.contains(&InfoIpTunnel::Ttl(64)), "{t:?}");
        assert!(t.contains(&InfoIpTunnel::PMtuDisc(true)), "{t:?}");
        assert!(
            !t.iter().any(|a| matches!(a, InfoIpTunnel::Remote(_))),
            "any remote: the routes' gateways are the outer destinations: {t:?}"
        );
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1480)));
        assert!(
            m.attributes
                .contains(&LinkAttribute::IfName("ipip.petrel".into()))
        );
        assert!(m.header.flags.contains(LinkFlags::Up));
        // What the kernel answers for such a device (remote 0.0.0.0) is
        // the same identity.
        let mut back = m.clone();
        if let Some(LinkAttribute::LinkInfo(infos)) = back
            .attributes
            .iter_mut()
            .find(|a| matches!(a, LinkAttribute::LinkInfo(_)))
        {
            for i in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::IpTunnel(t)) = i {
                    t.push(InfoIpTunnel::Remote("0.0.0.0".parse().expect("ip")));
                }
            }
        }
        assert_eq!(identity_of(&back), wanted_identity(&want));
        // Another local address is another device.
        assert_ne!(
            identity_of(&back),
            wanted_identity(&device(TunnelKind::Ipip, "10.0.1.2"))
        );
        let e = link_message(&device(TunnelKind::Ipip, "2001:db8::1")).expect_err("IPv6");
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }

    #[test]
    fn a_vxlan_device_carries_its_vni_port_and_no_learning() {
        let mut want = device(
            TunnelKind::Vxlan {
                vni: 4096,
                port: 4789,
            },
            "10.0.1.1",
        );
        want.name = "vxlan.petrel".into();
        want.mac = Some([0x0e, 1, 2, 3, 4, 5]);
        let m = link_message(&want).expect("message");
        assert_eq!(identity_of(&m), wanted_identity(&want));
        assert!(
            m.attributes
                .contains(&LinkAttribute::Address(vec![0x0e, 1, 2, 3, 4, 5]))
        );
        let other = TunnelDevice {
            kind: TunnelKind::Vxlan {
                vni: 4097,
                port: 4789,
            },
            ..want.clone()
        };
        assert_ne!(identity_of(&m), wanted_identity(&other));
    }
}
