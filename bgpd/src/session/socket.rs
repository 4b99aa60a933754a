//! TCP sockets for BGP: listening (dual-stack by default), connecting from a
//! chosen source, and the per-session options (TTL or GTSM, TCP-MD5,
//! TCP_NODELAY, DSCP CS6).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::sockopt;

/// DSCP CS6 (network control) in the TOS / traffic class octet.
const DSCP_CS6: u32 = 0xC0;

/// How a session's packets must look on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TransportOptions {
    /// TTL (hop limit) for outgoing packets; `None` leaves the system default.
    pub ttl: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only packets that crossed
    /// at most this many hops.
    pub ttl_security_hops: Option<u8>,
    /// TCP-MD5 key (RFC 2385).
    pub md5_key: Option<Vec<u8>>,
    /// Source address to bind outgoing connections to.
    pub source: Option<IpAddr>,
}

impl TransportOptions {
    /// The TTL to send with: 255 under GTSM, else the configured one.
    fn effective_ttl(&self) -> Option<u8> {
        if self.ttl_security_hops.is_some() {
            Some(255)
        } else {
            self.ttl
        }
    }
}

/// Applies TTL, GTSM, TCP_NODELAY and DSCP to a connected or connecting socket.
pub(crate) fn apply(
    fd: &impl std::os::fd::AsFd,
    v6: bool,
    opts: &TransportOptions,
) -> io::Result<()> {
    let sock = SockRef::from(fd);
    sock.set_tcp_nodelay(true)?;
    // Unacknowledged data this long means the peer is gone; do not wait for the
    // kernel's default of about 15 minutes.
    sock.set_tcp_user_timeout(Some(std::time::Duration::from_secs(60)))?;
    if v6 {
        sock.set_tclass_v6(DSCP_CS6)?;
    } else {
        sock.set_tos_v4(DSCP_CS6)?;
    }
    if let Some(ttl) = opts.effective_ttl() {
        if v6 {
            sock.set_unicast_hops_v6(ttl.into())?;
        } else {
            sock.set_ttl_v4(ttl.into())?;
        }
    }
    if let Some(hops) = opts.ttl_security_hops {
        sockopt::set_min_ttl(
            &fd.as_fd(),
            v6,
            255u8.saturating_sub(hops).saturating_add(1),
        )?;
    }
    Ok(())
}

/// Opens a connection to `peer` with the session's options set before the SYN.
pub(crate) async fn connect(
    peer: SocketAddr,
    opts: &TransportOptions,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let v6 = peer.is_ipv6();
    let sock = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(src) = opts.source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    if let Some(key) = &opts.md5_key {
        sockopt::set_tcp_md5(&sock, peer.ip(), None, key)?;
    }
    apply(&sock, v6, opts)?;
    tokio::time::timeout(timeout, sock.connect(peer))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {peer} timed out"),
            )
        })?
}

/// Binds a listener. An unspecified IPv6 address listens dual-stack.
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(!addr.ip().is_unspecified())?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    // BGP sees bursts of connections when many nodes restart at once.
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Installs (or removes, with an empty key) a TCP-MD5 key on a listener for
/// one peer, or for a range of dynamic peers.
/// GTSM's minimum TTL (hop limit) on a listener bound to `addr`, so SYNs
/// from further away are dropped by the kernel; 0 takes it off. A
/// dual-stack listener gets it for both families.
pub(crate) fn listener_min_ttl(
    listener: &TcpListener,
    addr: SocketAddr,
    min_ttl: u8,
) -> io::Result<()> {
    sockopt::set_min_ttl(listener, addr.is_ipv6(), min_ttl)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sockopt::set_min_ttl(listener, false, min_ttl)?;
    }
    Ok(())
}

pub(crate) fn listener_md5(listener: &TcpListener, peers: IpNet, key: &[u8]) -> io::Result<()> {
    // A listener bound to [::] sees IPv4 peers as IPv4-mapped addresses.
    let v6_listener = listener.local_addr()?.is_ipv6();
    let (addr, len) = match (peers, v6_listener) {
        (IpNet::V4(n), true) => (IpAddr::V6(n.addr().to_ipv6_mapped()), n.prefix_len() + 96),
        (n, _) => (n.addr(), n.prefix_len()),
    };
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = (len < full).then_some(len);
    sockopt::set_tcp_md5(listener, addr, prefix, key)
}
