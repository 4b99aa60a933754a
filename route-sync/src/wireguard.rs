//! The kernel's WireGuard device, configured through generic netlink (the
//! family `wireguard`), as `wg setconf` does: what to change is described
//! by a [`WgUpdate`], cut into messages that each fit one page
//! ([`set_device_messages`], pure), and sent with [`set_device`].
//!
//! The device itself is made like any tunnel device
//! ([`crate::TunnelKind::WireGuard`]); a kernel without the module refuses
//! both, and the error says so.

use std::net::SocketAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkDeserializable, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_GENERIC};

use crate::KernelError;

/// The largest message sent: one page, as `wg` sends them (the kernel
/// takes larger ones, but a page is what every kernel is known to take).
pub const MAX_MESSAGE: usize = 4096;

/// The device's own settings. Setting them replaces every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDevice {
    /// The private key.
    pub private_key: [u8; 32],
    /// The UDP port it listens on.
    pub port: u16,
    /// The firewall mark on its encrypted packets.
    pub fwmark: u32,
}

/// One peer to write or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// Its public key.
    pub key: [u8; 32],
    /// Remove it (nothing else is read).
    pub remove: bool,
    /// Its endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed prefixes, replacing those it had.
    pub allowed: Vec<IpNet>,
    /// Persistent keepalive, in seconds. Set on a peer the device did not
    /// have, it also sends a keepalive at once, which opens a session: a
    /// node that learns another's rotated key starts the handshake itself
    /// instead of the other waiting out its 5 s retry.
    pub keepalive: Option<u16>,
}

/// A change to a device: its settings (and then every peer), or only some
/// peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WgUpdate {
    /// New settings: the peers below replace all the device had.
    pub device: Option<WgDevice>,
    /// Peers written (their allowed prefixes replaced) or removed.
    pub peers: Vec<WgPeer>,
}

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let family = match net {
        IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.network()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// The encoded length of a SET_DEVICE message with these attributes.
fn length(attributes: &[WireguardAttribute]) -> usize {
    let mut m = NetlinkMessage::from(GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: attributes.to_vec(),
    }));
    m.finalize();
    m.buffer_len()
}

/// The SET_DEVICE messages that make `interface` say `update`, in order,
/// each at most [`MAX_MESSAGE`] long. Only the first carries the device's
/// settings and `ReplacePeers`; a peer whose prefixes do not fit goes on
/// in the next message, named again, without `ReplaceAllowedIps`, so the
/// kernel adds to what the earlier message gave it.
pub fn set_device_messages(interface: &str, update: &WgUpdate) -> Vec<WireguardMessage> {
    let head = |first: bool| {
        let mut a = vec![WireguardAttribute::IfName(interface.to_string())];
        if first && let Some(d) = &update.device {
            a.push(WireguardAttribute::PrivateKey(d.private_key));
            a.push(WireguardAttribute::ListenPort(d.port));
            a.push(WireguardAttribute::Fwmark(d.fwmark));
            a.push(WireguardAttribute::Flags(
                WireguardDeviceFlags::ReplacePeers,
            ));
        }
        a
    };
    let with_peers = |head: &[WireguardAttribute], peers: &[WireguardPeer]| {
        let mut a = head.to_vec();
        if !peers.is_empty() {
            a.push(WireguardAttribute::Peers(peers.to_vec()));
        }
        a
    };
    let mut out = Vec::new();
    let mut current = head(true);
    let mut peers: Vec<WireguardPeer> = Vec::new();
    let mut close = |current: &mut Vec<WireguardAttribute>, peers: &mut Vec<WireguardPeer>| {
        out.push(WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: with_peers(current, peers),
        });
        *current = head(false);
        peers.clear();
    };
    for p in &update.peers {
        let mut attrs = vec![WireguardPeerAttribute::PublicKey(p.key)];
        if p.remove {
            attrs.push(WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe));
        } else {
            attrs.push(WireguardPeerAttribute::Flags(
                WireguardPeerFlags::ReplaceAllowedIps,
            ));
            if let Some(e) = p.endpoint {
                attrs.push(WireguardPeerAttribute::Endpoint(e));
            }
            if let Some(k) = p.keepalive {
                attrs.push(WireguardPeerAttribute::PersistentKeepalive(k));
            }
        }
        let fits =
            |current: &[WireguardAttribute], peers: &[WireguardPeer], peer: &WireguardPeer| {
                let mut all = peers.to_vec();
                all.push(peer.clone());
                length(&with_peers(current, &all)) <= MAX_MESSAGE
            };
        let mut peer = WireguardPeer(attrs.clone());
        if !fits(&current, &peers, &peer) {
            close(&mut current, &mut peers);
        }
        let allowed = if p.remove { &[][..] } else { &p.allowed[..] };
        let mut ips: Vec<WireguardAllowedIp> = Vec::new();
        for net in allowed {
            ips.push(allowed_ip(net));
            let mut candidate = attrs.clone();
            candidate.push(WireguardPeerAttribute::AllowedIps(ips.clone()));
            let grown = WireguardPeer(candidate);
            if fits(&current, &peers, &grown) {
                peer = grown;
                continue;
            }
            // The message is full: send this peer as far as it got, and
            // go on naming it again, adding to its prefixes.
            ips.pop();
            peers.push(peer);
            close(&mut current, &mut peers);
            attrs = vec![WireguardPeerAttribute::PublicKey(p.key)];
            ips = vec![allowed_ip(net)];
            let mut next = attrs.clone();
            next.push(WireguardPeerAttribute::AllowedIps(ips.clone()));
            peer = WireguardPeer(next);
        }
        peers.push(peer);
    }
    close(&mut current, &mut peers);
    out
}

/// Sends `update` to the kernel's device `interface`.
pub async fn set_device(interface: &str, update: &WgUpdate) -> Result<(), KernelError> {
    let messages = set_device_messages(interface, update);
    let interface = interface.to_string();
    tokio::task::spawn_blocking(move || {
        let mut link = GenericNetlink::open()?;
        let family = link.family(WireguardMessage::FAMILY)?;
        for (k, m) in messages.into_iter().enumerate() {
            let mut g = GenlMessage::from_payload(m);
            g.set_resolved_family_id(family);
            link.request(g).map_err(|e| {
                KernelError::Invalid(format!(
                    "configuring WireGuard device {interface} (message {}): {e}",
                    k + 1
                ))
            })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| KernelError::Invalid(format!("configuring WireGuard: {e}")))?
}

/// The netlink messages in one datagram from the kernel, each whole (its
/// header's length checked against what arrived).
pub fn frames(data: &[u8]) -> std::io::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= data.len() {
        let len = u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        if len < 16 || len > data.len() - at {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a truncated netlink message",
            ));
        }
        out.push(&data[at..at + len]);
        // Messages are 4-byte aligned; the last may end without padding.
        at = at.saturating_add((len + 3) & !3);
    }
    Ok(out)
}

/// One netlink message read. netlink-packet-core 0.9 panics on some
/// malformed attributes (a nested attribute whose length runs past its
/// parent: found by fuzzing), so a panic of its parser is an error here,
/// not the agent's end.
fn decode<T>(frame: &[u8]) -> std::io::Result<NetlinkMessage<T>>
where
    T: NetlinkDeserializable + std::fmt::Debug,
{
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NetlinkMessage::<T>::deserialize(frame)
    })) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(invalid(e.to_string())),
        Err(_) => Err(invalid("a malformed netlink message".into())),
    }
}

/// The generic netlink family's name (what [`GenericNetlink::family`]
/// resolves).
trait Family {
    const FAMILY: &'static str;
}

impl Family for WireguardMessage {
    const FAMILY: &'static str = "wireguard";
}

/// A blocking generic netlink socket: one request, its acknowledgement.
pub struct GenericNetlink {
    socket: Socket,
    sequence: u32,
}

impl GenericNetlink {
    /// Opens one.
    pub fn open() -> Result<GenericNetlink, KernelError> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        Ok(GenericNetlink {
            socket,
            sequence: 0,
        })
    }

    /// The id of family `name`, from the kernel's controller.
    pub fn family(&mut self, name: &str) -> Result<u16, KernelError> {
        let ask = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        let answers = self.exchange(ask).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                KernelError::Invalid(format!(
                    "the kernel has no generic netlink family {name:?} (is its module, {name}, loaded?)"
                ))
            } else {
                KernelError::Invalid(format!("looking up generic netlink family {name:?}: {e}"))
            }
        })?;
        answers
            .into_iter()
            .flat_map(|g: GenlMessage<GenlCtrl>| g.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(id),
                _ => None,
            })
            .ok_or_else(|| {
                KernelError::Invalid(format!(
                    "the kernel's answer for generic netlink family {name:?} names no id"
                ))
            })
    }

    /// Sends `message` and waits for its acknowledgement; an error the
    /// kernel answers is returned as the `io::Error` of its errno.
    pub fn request<T>(&mut self, message: T) -> std::io::Result<()>
    where
        T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
    {
        self.exchange(message).map(|_: Vec<T>| ())
    }

    fn exchange<T>(&mut self, message: T) -> std::io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let mut m = NetlinkMessage::new(Default::default(), NetlinkPayload::InnerMessage(message));
        m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        m.header.sequence_number = self.sequence;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        // Bounded: the kernel answers a request with its data, then the
        // acknowledgement; 64 reads is far more than any answer here.
        for _ in 0..64 {
            let (data, _) = self.socket.recv_from_full()?;
            for frame in frames(&data)? {
                let msg = decode::<T>(frame)?;
                if msg.header.sequence_number != self.sequence {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(c) => Err(std::io::Error::from_raw_os_error(-c.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    _ => {}
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no acknowledgement from the kernel",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use netlink_packet_generic::GenlHeader;
    use std::net::IpAddr;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    /// What the kernel would read: each message emitted and parsed back.
    fn round_trip(messages: &[WireguardMessage]) -> Vec<WireguardMessage> {
        messages
            .iter()
            .map(|m| {
                let mut nl = NetlinkMessage::from(GenlMessage::from_payload(m.clone()));
                nl.finalize();
                assert!(nl.buffer_len() <= MAX_MESSAGE, "{} bytes", nl.buffer_len());
                let mut buf = vec![0u8; m.buffer_len()];
                m.emit(&mut buf);
                let header = GenlHeader {
                    cmd: WireguardCmd::SetDevice.into(),
                    version: 1,
                };
                WireguardMessage::parse_with_param(&buf[..], header).expect("parses")
            })
            .collect()
    }

    #[test]
    fn settings_replace_every_peer_and_a_peer_replaces_its_prefixes() {
        let update = WgUpdate {
            device: Some(WgDevice {
                private_key: key(1),
                port: 51820,
                fwmark: 0x51820,
            }),
            peers: vec![
                WgPeer {
                    key: key(2),
                    remove: false,
                    endpoint: Some("192.0.2.2:51820".parse().expect("addr")),
                    allowed: vec!["10.0.2.0/24".parse().expect("net")],
                    keepalive: None,
                },
                WgPeer {
                    key: key(3),
                    remove: true,
                    endpoint: None,
                    allowed: vec!["10.0.3.0/24".parse().expect("net")],
                    keepalive: None,
                },
            ],
        };
        let got = round_trip(&set_device_messages("wg.petrel", &update));
        assert_eq!(got.len(), 1);
        let a = &got[0].attributes;
        assert_eq!(a[0], WireguardAttribute::IfName("wg.petrel".into()));
        assert!(a.contains(&WireguardAttribute::PrivateKey(key(1))));
        assert!(a.contains(&WireguardAttribute::ListenPort(51820)));
        assert!(a.contains(&WireguardAttribute::Fwmark(0x51820)));
        assert!(a.contains(&WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers
        )));
        let Some(WireguardAttribute::Peers(peers)) = a.last() else {
            panic!("no peers: {a:?}")
        };
        assert_eq!(
            peers[0].0,
            vec![
                WireguardPeerAttribute::PublicKey(key(2)),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint("192.0.2.2:51820".parse().expect("addr")),
                WireguardPeerAttribute::AllowedIps(vec![allowed_ip(
                    &"10.0.2.0/24".parse().expect("net")
                )]),
            ]
        );
        assert_eq!(
            peers[1].0,
            vec![
                WireguardPeerAttribute::PublicKey(key(3)),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ],
            "a removed peer carries nothing else"
        );
    }

    #[test]
    fn a_large_update_is_cut_into_pages_and_loses_nothing() {
        // 40 peers with 100 borrowed /32s each: far more than one page.
        let peers: Vec<WgPeer> = (0..40u8)
            .map(|p| WgPeer {
                key: key(p),
                remove: false,
                endpoint: Some(SocketAddr::new(IpAddr::from([192, 0, 2, p]), 51820)),
                allowed: (0..100u8)
                    .map(|k| IpNet::from(IpAddr::from([10, p, 0, k])))
                    .collect(),
                keepalive: None,
            })
            .collect();
        let update = WgUpdate {
            device: Some(WgDevice {
                private_key: key(9),
                port: 51820,
                fwmark: 1,
            }),
            peers: peers.clone(),
        };
        let got = round_trip(&set_device_messages("wg.petrel", &update));
        assert!(got.len() > 10, "{} messages", got.len());
        // Settings and ReplacePeers in the first message only.
        for (k, m) in got.iter().enumerate() {
            let has_key = m
                .attributes
                .iter()
                .any(|a| matches!(a, WireguardAttribute::PrivateKey(_)));
            assert_eq!(has_key, k == 0, "message {k}");
        }
        // Per peer: every prefix, in order; ReplaceAllowedIps only the first
        // time the peer is named.
        let mut seen: Vec<([u8; 32], bool, Vec<IpNet>)> = Vec::new();
        for m in &got {
            for a in &m.attributes {
                let WireguardAttribute::Peers(ps) = a else {
                    continue;
                };
                for p in ps {
                    let mut k = None;
                    let mut replace = false;
                    let mut nets = Vec::new();
                    for pa in &p.0 {
                        match pa {
                            WireguardPeerAttribute::PublicKey(x) => k = Some(*x),
                            WireguardPeerAttribute::Flags(f) => {
                                replace = f.contains(WireguardPeerFlags::ReplaceAllowedIps)
                            }
                            WireguardPeerAttribute::AllowedIps(ips) => {
                                for ip in ips {
                                    let (mut addr, mut len) = (None, None);
                                    for x in &ip.0 {
                                        match x {
                                            WireguardAllowedIpAttr::IpAddr(a) => addr = Some(*a),
                                            WireguardAllowedIpAttr::Cidr(c) => len = Some(*c),
                                            _ => {}
                                        }
                                    }
                                    nets.push(
                                        IpNet::new(addr.expect("addr"), len.expect("len"))
                                            .expect("net"),
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                    let k = k.expect("every peer is named");
                    match seen.last_mut() {
                        Some(last) if last.0 == k => {
                            assert!(!replace, "a continued peer must not replace again");
                            last.2.extend(nets);
                        }
                        _ => {
                            assert!(replace, "a peer's first part replaces its prefixes");
                            seen.push((k, replace, nets));
                        }
                    }
                }
            }
        }
        let want: Vec<([u8; 32], bool, Vec<IpNet>)> = peers
            .into_iter()
            .map(|p| (p.key, true, p.allowed))
            .collect();
        assert_eq!(seen, want);
    }

    /// What fuzzing found: netlink-packet-core panics on this frame (a
    /// nested attribute longer than its parent); read here, it is an
    /// error.
    #[test]
    fn a_frame_the_parser_panics_on_is_an_error() {
        let data: [u8; 60] = [
            60, 0, 0, 0, 24, 0, 2, 0, 1, 0, 0, 0, 249, 0, 3, 0, 10, 1, 96, 0, 8, 0, 5, 0, 10, 0, 0,
            2, 4, 0, 8, 0, 2, 0, 42, 0, 7, 246, 5, 0, 10, 0, 0, 2, 8, 0, 4, 0, 2, 0, 0, 0, 8, 0,
            15, 0, 254, 0, 0, 0,
        ];
        let frames = frames(&data).expect("one whole frame");
        assert_eq!(frames.len(), 1);
        let e = decode::<GenlMessage<GenlCtrl>>(frames[0]).expect_err("malformed");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    /// The transport on this kernel: its controller answers for itself, and
    /// a family it lacks (WireGuard, on kernels without the module) is
    /// named in the error.
    #[test]
    fn the_controller_resolves_families_and_names_a_missing_one() {
        let mut link = GenericNetlink::open().expect("generic netlink");
        assert_eq!(link.family("nlctrl").expect("nlctrl"), 0x10);
        let missing = link.family("petrel-nofamily").expect_err("no such family");
        assert!(
            missing.to_string().contains("no generic netlink family"),
            "{missing}"
        );
    }
}
