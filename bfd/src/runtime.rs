//! The IO edge: the node's BFD sessions over UDP (RFC 5881 single hop,
//! RFC 5883 multihop), their sockets and timers. The state machines are
//! [`Session`]s; this task only moves packets and time to them.
//!
//! Received packets come in on one listening socket per port and family,
//! which report each packet's TTL; a session sends from a socket of its
//! own, bound to a source port in 49152-65535 and connected to its peer,
//! with a TTL of 255 (RFC 5881 §5, RFC 5883 §5).

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::socket::{MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::packet::{ControlPacket, Diag, State};
use crate::session::{Event, Session, SessionConfig, SessionStatus};
use crate::{MULTIHOP_PORT, SINGLE_HOP_PORT, SOURCE_PORTS};

/// A session the node should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The remote end.
    pub peer: IpAddr,
    /// The address to send from (the kernel picks one by route if unset).
    pub local: Option<IpAddr>,
    /// Multihop (RFC 5883, port 4784) rather than single hop (port 3784).
    pub multihop: bool,
    /// Multihop: the smallest TTL a received packet may arrive with. A
    /// single-hop packet must arrive with 255.
    pub minimum_ttl: u8,
    /// Timers, passive mode, authentication.
    pub config: SessionConfig,
}

/// Where a session is, for status, the CLI and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The remote end.
    pub peer: IpAddr,
    /// Multihop or single hop.
    pub multihop: bool,
    /// The session.
    pub session: SessionStatus,
    /// When it last came Up, as a date.
    pub up_since: Option<SystemTime>,
    /// The last packet refused, or socket error, and why.
    pub last_error: Option<String>,
}

/// A session's state change, for BGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The remote end.
    pub peer: IpAddr,
    /// Multihop or single hop.
    pub multihop: bool,
    /// Before.
    pub from: State,
    /// Now.
    pub to: State,
    /// The diagnostic.
    pub diag: Diag,
    /// The remote end's state as it last said: a session that went down
    /// because the remote end said AdminDown is not a failure (RFC 5882
    /// §3.2), and BGP must be left alone.
    pub remote: State,
}

/// Settings of the runtime.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The single-hop port (3784; another only for tests).
    pub single_hop_port: u16,
    /// The multihop port (4784).
    pub multihop_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            single_hop_port: SINGLE_HOP_PORT,
            multihop_port: MULTIHOP_PORT,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    /// No listening socket could be opened.
    #[error("cannot listen for BFD on {addr}: {source}")]
    Listen {
        /// The address and port.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

enum Command {
    Set(Vec<PeerSpec>),
}

/// A received datagram, with what the kernel said of it.
struct Received {
    data: Vec<u8>,
    from: IpAddr,
    ttl: Option<u8>,
    multihop: bool,
}

/// The handle to the node's BFD sessions.
#[derive(Debug, Clone)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Arc<Vec<PeerStatus>>>,
    changes: broadcast::Sender<StateChange>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Set(s) => write!(f, "Set({} sessions)", s.len()),
        }
    }
}

impl Bfd {
    /// Opens the listening sockets (IPv4 and, where the host has it, IPv6,
    /// on both ports) and starts the task, with no sessions.
    pub async fn start(opts: Options) -> Result<Bfd, BfdError> {
        let (rx_tx, rx) = mpsc::channel(4096);
        let mut listening = 0;
        let mut first_err = None;
        for (port, multihop) in [(opts.single_hop_port, false), (opts.multihop_port, true)] {
            for ip in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                let addr = SocketAddr::new(ip, port);
                match listener(addr) {
                    Ok(sock) => {
                        listening += 1;
                        tokio::spawn(receive(sock, multihop, rx_tx.clone()));
                    }
                    Err(source) if ip.is_ipv6() => {
                        tracing::warn!(%addr, error = %source, "no IPv6 BFD listener");
                    }
                    Err(source) => {
                        first_err.get_or_insert(BfdError::Listen { addr, source });
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        debug_assert!(listening >= 2);
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Arc::new(Vec::new()));
        let (changes, _) = broadcast::channel(1024);
        let task = Task {
            sessions: HashMap::new(),
            by_disc: HashMap::new(),
            next_disc: seed() as u32 | 1,
            status: status_tx,
            changes: changes.clone(),
            opts,
        };
        tokio::spawn(task.run(cmd_rx, rx));
        Ok(Bfd {
            commands,
            status,
            changes,
        })
    }

    /// Sets the sessions to run: new ones start, removed ones go
    /// administratively down, changed timers apply by Poll/Final.
    pub fn set_sessions(&self, specs: Vec<PeerSpec>) {
        let _ = self.commands.send(Command::Set(specs));
    }

    /// The sessions as last published (on every state change, and every
    /// second for the counters).
    pub fn status(&self) -> Arc<Vec<PeerStatus>> {
        self.status.borrow().clone()
    }

    /// A receiver of the published status.
    pub fn subscribe_status(&self) -> watch::Receiver<Arc<Vec<PeerStatus>>> {
        self.status.clone()
    }

    /// State changes, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32
}

/// A listening socket that reports each packet's TTL.
fn listener(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let std: std::net::UdpSocket = s.into();
    if addr.is_ipv4() {
        setsockopt(&std, sockopt::Ipv4RecvTtl, &true).map_err(std::io::Error::from)?;
    } else {
        setsockopt(&std, sockopt::Ipv6RecvHopLimit, &true).map_err(std::io::Error::from)?;
    }
    UdpSocket::from_std(std)
}

/// Reads datagrams with their TTL until the task goes away.
async fn receive(sock: UdpSocket, multihop: bool, out: mpsc::Sender<Received>) {
    let mut buf = vec![0u8; 1500];
    loop {
        let got = sock
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!(libc::c_int);
                let m = recvmsg::<SockaddrStorage>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(std::io::Error::from)?;
                let from = m.address.and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|s| IpAddr::V4(s.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                });
                let mut ttl = None;
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        match c {
                            nix::sys::socket::ControlMessageOwned::Ipv4Ttl(t) => {
                                ttl = u8::try_from(t).ok();
                            }
                            nix::sys::socket::ControlMessageOwned::Ipv6HopLimit(t) => {
                                ttl = u8::try_from(t).ok();
                            }
                            _ => {}
                        }
                    }
                }
                Ok((m.bytes, from, ttl))
            })
            .await;
        match got {
            Ok((n, Some(from), ttl)) => {
                let from = match from {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
                    v4 => v4,
                };
                let r = Received {
                    data: buf[..n].to_vec(),
                    from,
                    ttl,
                    multihop,
                };
                if out.send(r).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "BFD receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One running session and its socket.
struct Entry {
    spec: PeerSpec,
    session: Session,
    socket: Option<UdpSocket>,
    last_error: Option<String>,
    /// When the socket last failed to open, to retry at most every second.
    socket_failed: Option<Instant>,
}

struct Task {
    sessions: HashMap<(IpAddr, bool), Entry>,
    by_disc: HashMap<u32, (IpAddr, bool)>,
    next_disc: u32,
    status: watch::Sender<Arc<Vec<PeerStatus>>>,
    changes: broadcast::Sender<StateChange>,
    opts: Options,
}

/// Opens a session's sending socket: a source port in 49152-65535, TTL
/// 255, connected to the peer.
fn sender(spec: &PeerSpec, port: u16, salt: u32) -> std::io::Result<UdpSocket> {
    let domain = if spec.peer.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    if spec.peer.is_ipv4() {
        s.set_ttl_v4(255)?;
    } else {
        s.set_unicast_hops_v6(255)?;
    }
    let local = spec.local.unwrap_or(match spec.peer {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut bound = Err(std::io::Error::other("no free source port"));
    for i in 0..64u32 {
        let p = *SOURCE_PORTS.start() as u32
            + (salt.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % span;
        match s.bind(&SocketAddr::new(local, p as u16).into()) {
            Ok(()) => {
                bound = Ok(());
                break;
            }
            Err(e) => bound = Err(e),
        }
    }
    bound?;
    s.connect(&SocketAddr::new(spec.peer, port).into())?;
    UdpSocket::from_std(s.into())
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut received: mpsc::Receiver<Received>,
    ) {
        let mut publish = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = self
                .sessions
                .values()
                .filter_map(|e| e.session.deadline())
                .min()
                .map(Instant::from_std);
            tokio::select! {
                c = commands.recv() => match c {
                    Some(Command::Set(specs)) => self.set(specs),
                    None => {
                        self.set(Vec::new());
                        return;
                    }
                },
                Some(r) = received.recv() => self.receive(r),
                _ = sleep_until(deadline) => {}
                _ = publish.tick() => self.publish(),
            }
            self.drive();
        }
    }

    fn set(&mut self, specs: Vec<PeerSpec>) {
        let now = Instant::now().into_std();
        let wanted: HashMap<(IpAddr, bool), PeerSpec> = specs
            .into_iter()
            .map(|s| ((s.peer, s.multihop), s))
            .collect();
        let gone: Vec<(IpAddr, bool)> = self
            .sessions
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(mut e) = self.sessions.remove(&k) {
                self.by_disc.remove(&e.session.local_disc());
                // The remote end hears AdminDown, not a failure.
                for ev in e.session.admin_down(now) {
                    self.report(&e.spec, ev);
                }
                // Three copies: one lost packet must not look like a
                // failure to the remote end.
                if let (Some(pkt), Some(sock)) = (e.session.transmit(now), &e.socket) {
                    for _ in 0..3 {
                        let _ = sock.try_send(&pkt);
                    }
                }
            }
        }
        for (k, spec) in wanted {
            match self.sessions.get_mut(&k) {
                Some(e) if e.spec == spec => {}
                Some(e) if e.spec.local == spec.local && e.spec.minimum_ttl == spec.minimum_ttl => {
                    e.session.reconfigure(spec.config.clone(), now);
                    e.spec = spec;
                }
                Some(e) => {
                    // Another source address: a new socket, the session kept.
                    e.session.reconfigure(spec.config.clone(), now);
                    e.spec = spec;
                    e.socket = None;
                    e.socket_failed = None;
                }
                None => {
                    let disc = self.fresh_disc();
                    let session =
                        Session::new(spec.config.clone(), disc, seed() ^ u64::from(disc), now);
                    self.by_disc.insert(disc, k);
                    self.sessions.insert(
                        k,
                        Entry {
                            spec,
                            session,
                            socket: None,
                            last_error: None,
                            socket_failed: None,
                        },
                    );
                }
            }
        }
        self.publish();
    }

    fn fresh_disc(&mut self) -> u32 {
        loop {
            self.next_disc = self.next_disc.wrapping_add(1).max(1);
            if !self.by_disc.contains_key(&self.next_disc) {
                return self.next_disc;
            }
        }
    }

    fn receive(&mut self, r: Received) {
        let p = match ControlPacket::decode(&r.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(from = %r.from, error = %e, "BFD packet discarded");
                if let Some(e2) = self.sessions.get_mut(&(r.from, r.multihop)) {
                    e2.last_error = Some(format!("packet discarded: {e}"));
                }
                return;
            }
        };
        let key = if p.your_disc != 0 {
            self.by_disc.get(&p.your_disc).copied()
        } else {
            Some((r.from, r.multihop))
        };
        let Some(key) = key.filter(|k| k.0 == r.from && k.1 == r.multihop) else {
            tracing::debug!(from = %r.from, your_disc = p.your_disc, "BFD packet for no session");
            return;
        };
        let Some(e) = self.sessions.get_mut(&key) else {
            return;
        };
        // GTSM (RFC 5881 §5): a single-hop packet that was routed is not
        // from the neighbour.
        let min_ttl = if r.multihop { e.spec.minimum_ttl } else { 255 };
        if r.ttl.is_none_or(|t| t < min_ttl) {
            e.last_error = Some(format!(
                "packet discarded: TTL {} below {min_ttl}",
                r.ttl.unwrap_or(0)
            ));
            return;
        }
        let now = Instant::now().into_std();
        // A packet that waited in the queue past the detection time does
        // not hide the expiry.
        let mut events = e.session.timeout(now);
        // The digest covers the packet up to its Length field (decode
        // checked that it fits).
        let len = usize::from(r.data[3]).min(r.data.len());
        match e.session.receive(&p, &r.data[..len], now) {
            Ok(more) => {
                events.extend(more);
                let spec = e.spec.clone();
                for ev in events {
                    self.report(&spec, ev);
                }
            }
            Err(err) => {
                tracing::debug!(peer = %r.from, error = %err, "BFD packet refused");
                e.last_error = Some(format!("packet refused: {err}"));
                let spec = e.spec.clone();
                for ev in events {
                    self.report(&spec, ev);
                }
            }
        }
    }

    /// Fires due timers and sends due packets.
    fn drive(&mut self) {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut reports = Vec::new();
        let single = self.opts.single_hop_port;
        let multi = self.opts.multihop_port;
        for e in self.sessions.values_mut() {
            for ev in e.session.timeout(std_now) {
                reports.push((e.spec.clone(), ev));
            }
            if e.socket.is_none()
                && e.socket_failed
                    .is_none_or(|t| now >= t + Duration::from_secs(1))
            {
                let port = if e.spec.multihop { multi } else { single };
                match sender(&e.spec, port, e.session.local_disc()) {
                    Ok(s) => {
                        e.socket = Some(s);
                        e.socket_failed = None;
                    }
                    Err(err) => {
                        e.last_error =
                            Some(format!("cannot open a socket to {}: {err}", e.spec.peer));
                        e.socket_failed = Some(now);
                    }
                }
            }
            while let Some(pkt) = e.session.transmit(std_now) {
                if let Some(s) = &e.socket
                    && let Err(err) = s.try_send(&pkt)
                {
                    // Unreachable for now (a link down, an ICMP error): the
                    // session's timers deal with it.
                    e.last_error = Some(format!("send to {}: {err}", e.spec.peer));
                }
            }
        }
        let changed = !reports.is_empty();
        for (spec, ev) in reports {
            self.report(&spec, ev);
        }
        if changed {
            self.publish();
        }
    }

    fn report(&mut self, spec: &PeerSpec, ev: Event) {
        let Event::StateChanged { from, to, diag } = ev;
        let remote = self
            .sessions
            .get(&(spec.peer, spec.multihop))
            .map_or(State::Down, |e| e.session.status().remote_state);
        tracing::info!(peer = %spec.peer, multihop = spec.multihop, from = from.name(), to = to.name(), diag = diag.name(), remote = remote.name(), "BFD session state");
        let _ = self.changes.send(StateChange {
            peer: spec.peer,
            multihop: spec.multihop,
            from,
            to,
            diag,
            remote,
        });
        self.publish();
    }

    fn publish(&mut self) {
        let wall = SystemTime::now();
        let mono = Instant::now().into_std();
        let mut all: Vec<PeerStatus> = self
            .sessions
            .values()
            .map(|e| {
                let session = e.session.status();
                PeerStatus {
                    peer: e.spec.peer,
                    multihop: e.spec.multihop,
                    up_since: session
                        .up_since
                        .map(|t| wall - mono.saturating_duration_since(t)),
                    session,
                    last_error: e.last_error.clone(),
                }
            })
            .collect();
        all.sort_by_key(|s| (s.peer, s.multihop));
        self.status.send_replace(Arc::new(all));
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
