//! The kernel side: rtnetlink requests for dumping, adding, replacing and
//! deleting routes, with many requests in flight at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::stream::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use rtnetlink::{Handle, RouteMessageBuilder, RouteNextHopBuilder};

use crate::route::{Changes, KernelRoute, NextHop, Route, RouteKind};

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// What was asked for cannot be built.
    #[error("{0}")]
    Invalid(String),
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
}

/// The errno of a netlink error, if it carries one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection to the kernel's routing tables.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub(crate) handle: Handle,
    protocol: u8,
    /// The socket route changes go out on (see [`Kernel::apply`]).
    batch: std::sync::Arc<std::sync::Mutex<rtnetlink::sys::Socket>>,
    /// Its port id: the kernel stamps it on the notifications of our changes.
    batch_port: u32,
    /// Next sequence number, so answers left from an earlier call (after a
    /// receive error) are never taken for this call's.
    next_seq: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// The outcome of applying changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Routes created.
    pub added: usize,
    /// Routes replaced.
    pub replaced: usize,
    /// Routes deleted.
    pub deleted: usize,
    /// Routes the kernel refused, with its reason.
    pub failed: Vec<(Route, String)>,
}

impl Kernel {
    /// Opens a connection (with strict checking, so dumps can be filtered by the
    /// kernel) in the network namespace of the calling thread.
    pub fn connect(protocol: u8) -> Result<Kernel, KernelError> {
        let (connection, handle, _) = rtnetlink::new_connection_with_strict_check()?;
        tokio::spawn(connection);
        let (batch, batch_port) = batch_socket()?;
        Ok(Kernel {
            handle,
            protocol,
            batch: std::sync::Arc::new(std::sync::Mutex::new(batch)),
            batch_port,
            next_seq: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(1)),
        })
    }

    /// The port id route changes are sent from; notifications carrying it were
    /// caused by this connection.
    pub fn batch_port(&self) -> u32 {
        self.batch_port
    }

    /// The protocol number this connection installs routes with.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Every route of both families in `table` (0: all tables), whatever its
    /// protocol, except the kernel's own local and broadcast routes.
    pub async fn dump(&self, table: u32) -> Result<Vec<KernelRoute>, KernelError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let mut filter = if v6 {
                RouteMessageBuilder::<Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<Ipv4Addr>::new().build()
            };
            filter.header.protocol = RouteProtocol::Unspec;
            filter.header.kind = RouteType::Unspec;
            filter.header.scope = RouteScope::Universe;
            if table <= 255 {
                filter.header.table = table as u8;
            } else {
                filter.header.table = RouteHeader::RT_TABLE_UNSPEC;
                filter.attributes.push(RouteAttribute::Table(table));
            }
            let msgs: Vec<RouteMessage> = match self
                .handle
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
            {
                Ok(m) => m,
                // A table that does not exist yet holds no routes.
                Err(e) if errno(&e) == Some(libc::ENOENT) => Vec::new(),
                Err(source) => {
                    return Err(KernelError::Request {
                        what: "dumping routes".into(),
                        source,
                    });
                }
            };
            out.extend(msgs.iter().filter_map(from_message));
        }
        Ok(out)
    }

    /// Applies changes. Failures are collected, not fatal: one bad route never
    /// blocks the others.
    ///
    /// Requests are packed many to a datagram on a socket of their own: the
    /// kernel handles a whole datagram in one `sendmsg` and queues one ack per
    /// request, so a million routes cost a few thousand system calls rather
    /// than two million.
    pub async fn apply(&self, changes: &Changes) -> Applied {
        let ops: Vec<(Op, Route)> = changes
            .delete
            .iter()
            .map(|r| (Op::Delete, r.clone()))
            .chain(changes.add.iter().map(|r| (Op::Add, r.clone())))
            .chain(changes.replace.iter().map(|r| (Op::Replace, r.clone())))
            .collect();
        if ops.is_empty() {
            return Applied::default();
        }
        // Blocking socket work runs on a pool thread; the socket was opened in
        // the caller's network namespace.
        let socket = self.batch.clone();
        let protocol = self.protocol;
        // Each request, and each datagram's barrier, gets a number of its own.
        let base = self.next_seq.fetch_add(
            2 * ops.len() as u32 + 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        let joined = tokio::task::spawn_blocking(move || {
            let results = match socket.lock() {
                Ok(s) => send_batched(&s, &ops, protocol, base),
                Err(_) => vec![Err(libc::EIO); ops.len()],
            };
            (ops, results)
        })
        .await;
        let (ops, results) = match joined {
            Ok(r) => r,
            Err(e) => {
                // The blocking task died: nothing is known to have happened.
                let why = format!("netlink worker failed: {e}");
                let failed = changes
                    .delete
                    .iter()
                    .chain(&changes.add)
                    .chain(&changes.replace)
                    .map(|r| (r.clone(), why.clone()))
                    .collect();
                return Applied {
                    failed,
                    ..Applied::default()
                };
            }
        };
        let mut applied = Applied::default();
        for ((op, r), res) in ops.into_iter().zip(results) {
            match (op, res) {
                (Op::Add, Ok(())) => applied.added += 1,
                (Op::Replace, Ok(())) => applied.replaced += 1,
                (Op::Delete, Ok(())) => applied.deleted += 1,
                // Already gone: what we wanted.
                (Op::Delete, Err(libc::ESRCH)) => applied.deleted += 1,
                (_, Err(errno)) => applied
                    .failed
                    .push((r, std::io::Error::from_raw_os_error(errno).to_string())),
            }
        }
        applied
    }

    /// The index of a network interface, by name.
    pub async fn ifindex(&self, name: &str) -> Option<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        links.try_next().await.ok()?.map(|l| l.header.index)
    }

    /// How the kernel would reach `addr`: the gateway (if any) and the output
    /// interface of the route it would use, and that route's protocol.
    pub async fn lookup(&self, addr: IpAddr) -> Option<(Option<IpAddr>, Option<u32>, u8)> {
        let mut msg = match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        // With strict checking the kernel refuses a lookup whose header names a
        // table, protocol, scope or type (EINVAL), as `ip route get` knows.
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unspec;
        // Ask for the matching FIB entry itself (`ip route get fibmatch`), so
        // its protocol and gateways are the route's, not a synthesized result.
        msg.header.flags |= RouteFlags::FibMatch;
        let mut s = self.handle.route().get(msg).execute();
        let m = s.try_next().await.ok()??;
        if !matches!(m.header.kind, RouteType::Unicast) {
            return None;
        }
        let mut gw = None;
        let mut oif = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Gateway(g) => gw = address(g),
                RouteAttribute::Via(RouteVia::Inet6(g)) => gw = Some(IpAddr::V6(*g)),
                RouteAttribute::Oif(i) => oif = Some(*i),
                // An ECMP route: any of its ways out will do for resolution.
                RouteAttribute::MultiPath(nhs) if gw.is_none() => {
                    if let Some(nh) = nhs.first() {
                        oif = Some(nh.interface_index);
                        gw = nh.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => address(g),
                            RouteAttribute::Via(RouteVia::Inet6(g)) => Some(IpAddr::V6(*g)),
                            _ => None,
                        });
                    }
                }
                _ => {}
            }
        }
        Some((gw, oif, u8::from(m.header.protocol)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Delete,
}

/// Bytes of requests per datagram.
const BATCH_BYTES: usize = 64 * 1024;

fn batch_socket() -> std::io::Result<(rtnetlink::sys::Socket, u32)> {
    let mut s = rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
    let port = s.bind_auto()?.port_number();
    s.connect(&rtnetlink::sys::SocketAddr::new(0, 0))?;
    // Errors without the echoed request: smaller.
    s.set_cap_ack(true)?;
    let _ = s.set_rx_buf_sz(4 << 20);
    Ok((s, port))
}

/// Sends every operation and returns, in order, its result (an errno on failure).
///
/// Requests carry no ACK flag: the kernel answers only failures. Each datagram
/// ends with an NLMSG_NOOP that does ask for an ack; netlink answers in order,
/// so once that ack is in, every failure of the datagram has been seen. Acks
/// come one per datagram from the kernel, so per-request acks would cost a
/// `recv` per route.
fn send_batched(
    sock: &rtnetlink::sys::Socket,
    ops: &[(Op, Route)],
    protocol: u8,
    base: u32,
) -> Vec<Result<(), i32>> {
    use netlink_packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    };
    const NLMSG_NOOP: u16 = 1;
    const NLMSG_ERROR: u16 = 2;

    let mut results: Vec<Result<(), i32>> = vec![Ok(()); ops.len()];
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut i = 0;
    while i < ops.len() {
        // Pack requests until the datagram is full; the sequence number is the index.
        buf.clear();
        let first = i;
        while i < ops.len() && buf.len() < BATCH_BYTES {
            let (op, r) = &ops[i];
            let m = to_message(r, protocol);
            let (payload, flags) = match op {
                Op::Add => (
                    RouteNetlinkMessage::NewRoute(m),
                    NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
                ),
                Op::Replace => (
                    RouteNetlinkMessage::NewRoute(m),
                    NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
                ),
                Op::Delete => (RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST),
            };
            let mut msg = NetlinkMessage::from(payload);
            msg.header.flags = flags;
            msg.header.sequence_number = base.wrapping_add(i as u32);
            msg.finalize();
            let start = buf.len();
            buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut buf[start..]);
            i += 1;
        }
        // The barrier: a no-op that is acked after everything before it.
        let barrier = base.wrapping_add((ops.len() + first) as u32);
        buf.extend_from_slice(&16u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_NOOP.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&barrier.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        if let Err(e) = sock.send(&buf, 0) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            for r in &mut results[first..i] {
                *r = Err(errno);
            }
            continue;
        }
        'wait: loop {
            rbuf.clear();
            match sock.recv(&mut rbuf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The answers are lost (e.g. ENOBUFS): say so for the whole datagram.
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    for r in &mut results[first..i] {
                        *r = Err(errno);
                    }
                    break;
                }
            }
            let mut off = 0;
            while off + 16 <= rbuf.len() {
                let h = &rbuf[off..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let ty = u16::from_ne_bytes([h[4], h[5]]);
                let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if len < 16 || off + len > rbuf.len() {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    // A signed errno (0 for an ack) follows the header.
                    let code = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                    if seq == barrier {
                        break 'wait;
                    }
                    let idx = seq.wrapping_sub(base) as usize;
                    if (first..i).contains(&idx) && code != 0 {
                        results[idx] = Err(-code);
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
    results
}

/// A readable reason for a failed request.
pub fn describe(e: &rtnetlink::Error) -> String {
    match errno(e) {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Builds the netlink message for a route.
pub fn to_message(r: &Route, protocol: u8) -> RouteMessage {
    let kind = match r.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Throw => RouteType::Throw,
    };
    let single = (r.kind == RouteKind::Unicast && r.next_hops.len() == 1).then(|| &r.next_hops[0]);
    let multipath: Vec<RouteNextHop> = if r.kind == RouteKind::Unicast && r.next_hops.len() > 1 {
        r.next_hops
            .iter()
            .filter_map(|nh| next_hop(nh, r.prefix))
            .collect()
    } else {
        Vec::new()
    };
    let mut m = match r.prefix {
        IpNet::V4(p) => {
            let mut b =
                RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(p.addr(), p.prefix_len());
            if let Some(nh) = single {
                if let Some(IpAddr::V4(g)) = nh.gateway {
                    b = b.gateway(g);
                }
                if let Some(i) = nh.ifindex {
                    b = b.output_interface(i);
                }
                if nh.onlink {
                    b = b.onlink();
                }
            }
            if let Some(IpAddr::V4(s)) = r.source {
                b = b.pref_source(s);
            }
            b.table_id(r.table).priority(r.metric).kind(kind).build()
        }
        IpNet::V6(p) => {
            let mut b =
                RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(p.addr(), p.prefix_len());
            if let Some(nh) = single {
                if let Some(IpAddr::V6(g)) = nh.gateway {
                    b = b.gateway(g);
                }
                if let Some(i) = nh.ifindex {
                    b = b.output_interface(i);
                }
                if nh.onlink {
                    b = b.onlink();
                }
            }
            if let Some(IpAddr::V6(s)) = r.source {
                b = b.pref_source(s);
            }
            b.table_id(r.table).priority(r.metric).kind(kind).build()
        }
    };
    m.header.protocol = RouteProtocol::from(protocol);
    if !multipath.is_empty() {
        m.attributes.push(RouteAttribute::MultiPath(multipath));
    }
    // An IPv4 route with an IPv6 gateway (RFC 5549 style) needs RTA_VIA.
    if let (
        IpNet::V4(_),
        Some(NextHop {
            gateway: Some(IpAddr::V6(g)),
            ..
        }),
    ) = (r.prefix, single)
    {
        m.attributes.push(RouteAttribute::Via(RouteVia::Inet6(*g)));
    }
    m
}

fn next_hop(nh: &NextHop, prefix: IpNet) -> Option<RouteNextHop> {
    let mut b = if matches!(prefix, IpNet::V4(_)) {
        RouteNextHopBuilder::new_ipv4()
    } else {
        RouteNextHopBuilder::new_ipv6()
    };
    if let Some(i) = nh.ifindex {
        b = b.interface(i);
    }
    if let Some(g) = nh.gateway {
        b = b.via(g).ok()?;
    }
    // The kernel stores weight - 1 ("hops").
    b = b.weight(u8::try_from(nh.weight.clamp(1, 256) - 1).unwrap_or(255));
    if nh.onlink {
        b = b.onlink();
    }
    Some(b.build())
}

/// Reads a route from a netlink message; `None` for the kernel's local,
/// broadcast and multicast routes.
pub fn from_message(m: &RouteMessage) -> Option<KernelRoute> {
    let kind = match m.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Throw => RouteKind::Throw,
        _ => return None,
    };
    let len = m.header.destination_prefix_length;
    let v6 = m.header.address_family == netlink_packet_route::AddressFamily::Inet6;
    let mut dst: Option<IpAddr> = None;
    let mut table = u32::from(m.header.table);
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    let mut source = None;
    let mut multipath = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = address(d),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(g) => gateway = address(g),
            RouteAttribute::Via(RouteVia::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::PrefSource(s) => source = address(s),
            RouteAttribute::MultiPath(nhs) => {
                for nh in nhs {
                    let g = nh.attributes.iter().find_map(|a| match a {
                        netlink_packet_route::route::RouteAttribute::Gateway(g) => address(g),
                        netlink_packet_route::route::RouteAttribute::Via(RouteVia::Inet6(g)) => {
                            Some(IpAddr::V6(*g))
                        }
                        _ => None,
                    });
                    multipath.push(NextHop {
                        gateway: g,
                        ifindex: (nh.interface_index != 0).then_some(nh.interface_index),
                        weight: u16::from(nh.hops) + 1,
                        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                    });
                }
            }
            _ => {}
        }
    }
    let addr = dst.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let prefix = IpNet::new(addr, len).ok()?;
    let next_hops = match kind {
        RouteKind::Unicast if !multipath.is_empty() => multipath,
        RouteKind::Unicast => vec![NextHop {
            gateway,
            ifindex: oif,
            weight: 1,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
        }],
        _ => Vec::new(),
    };
    let mut route = Route {
        prefix,
        table,
        kind,
        next_hops,
        metric,
        source,
    };
    route.normalize();
    Some(KernelRoute {
        route,
        protocol: u8::from(m.header.protocol),
    })
}
