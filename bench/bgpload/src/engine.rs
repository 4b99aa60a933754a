//! The event loop: every session in one thread over epoll (mio), commands
//! from standard input, events to standard output.
//!
//! Sessions are active, as in `bgptool.py`: each connects to the device
//! under test, sends OPEN, answers its OPEN with a KEEPALIVE and is
//! Established at the first KEEPALIVE after that. Hold timers are not
//! enforced (the tool measures the device, it does not police it), but
//! KEEPALIVEs are sent on time so the device keeps the sessions.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

use crate::events::{emit, now};
use crate::rxset::{Interner, RxSet, apply_update};
use crate::wire;

const WAKER: Token = Token(usize::MAX);
/// Read this much per `read` call into one buffer shared by all sessions;
/// a session keeps only a partial message between reads.
const READ_CHUNK: usize = 1 << 20;
/// Socket buffers as the Python tool sets them, so the device sees the same
/// TCP windows whichever tool drives it.
const SOCKET_BUFFER: usize = 4 << 20;
/// How often keepalives, reconnects and progress are looked at.
const TICK: f64 = 0.1;
/// A failed connection attempt is retried after this long (ConnectRetry).
const RETRY_AFTER: f64 = 1.0;
/// With `--retry`, a connect still pending after this long is given up, as
/// the Python tool's two SYN retransmits (TCP_SYNCNT 2) give up after ~7 s
/// rather than the kernel's ~127 s: an agent that reconnects hard.
const CONNECT_TIMEOUT: f64 = 7.0;

/// A command read from standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Announce (feed: the table; clients: each client's prefixes).
    Go,
    /// Withdraw the table (feed).
    Withdraw,
    /// Emit a `stats` event.
    Stats,
    /// Close every session and exit (also at end of input).
    Quit,
}

impl Command {
    /// Parses one input line; `None` for an empty or unknown one.
    pub fn parse(line: &str) -> Option<Command> {
        match line.split_whitespace().next()? {
            "go" => Some(Command::Go),
            "withdraw" => Some(Command::Withdraw),
            "stats" => Some(Command::Stats),
            "quit" => Some(Command::Quit),
            _ => None,
        }
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    OpenSent,
    OpenConfirm,
    Established,
    Closed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::OpenSent => "opensent",
            State::OpenConfirm => "openconfirm",
            State::Established => "established",
            State::Closed => "closed",
        }
    }
}

/// Bytes queued for a session, shared when many sessions send the same.
struct Chunk {
    data: Arc<[u8]>,
    sent: usize,
    /// Event emitted when the last byte has been handed to the socket.
    done_event: Option<&'static str>,
}

/// One session's settings.
pub struct PeerSpec {
    /// Address to bind before connecting.
    pub local: Option<Ipv4Addr>,
    /// Router ID in the OPEN.
    pub router_id: Ipv4Addr,
    /// Count the prefixes received (sink, clients).
    pub count_rx: bool,
    /// Prefix count that means done; 0 for none.
    pub target: usize,
}

struct Peer {
    spec: PeerSpec,
    sock: Option<TcpStream>,
    state: State,
    inbuf: Vec<u8>,
    outq: VecDeque<Chunk>,
    rx: RxSet,
    rx_updates: u64,
    reached: bool,
    ka_interval: f64,
    last_tx: f64,
    connect_started: f64,
    retries: u64,
    peer_open: Option<wire::PeerOpen>,
}

/// Settings that are the same for every session.
pub struct Options {
    /// The device's address and port.
    pub remote: SocketAddrV4,
    /// Our AS.
    pub asn: u32,
    /// Hold time offered.
    pub hold: u16,
    /// Seconds between `progress` events; 0 for none.
    pub progress: f64,
    /// Exit when the (single) session closes.
    pub exit_on_close: bool,
    /// Reconnect after 1 s when a session fails before Established.
    pub retry: bool,
    /// Count a route that comes back with the session's own router ID as
    /// ORIGINATOR_ID as withdrawn (RFC 4456), rather than as received.
    pub originator_check: bool,
}

/// What the mode does on `go` and `withdraw`.
pub enum Payload {
    /// Nothing (sink).
    None,
    /// One session's announce and withdraw streams (feed).
    Table {
        /// The announce stream.
        announce: Arc<[u8]>,
        /// The withdraw stream.
        withdraw: Arc<[u8]>,
    },
    /// One announcement per session (clients).
    PerPeer(Vec<Arc<[u8]>>),
}

/// Every session and the counters the events are made of.
pub struct Engine {
    opts: Options,
    payload: Payload,
    poll: Poll,
    peers: Vec<Peer>,
    interner: Interner,
    scratch: Vec<u8>,
    n_est: usize,
    n_reached: usize,
    running: bool,
    retry_at: VecDeque<(f64, usize)>,
    keepalive: Arc<[u8]>,
}

impl Engine {
    /// Opens every session (connections start at once).
    pub fn new(opts: Options, peers: Vec<PeerSpec>, payload: Payload) -> io::Result<Engine> {
        let mut e = Engine {
            opts,
            payload,
            poll: Poll::new()?,
            peers: Vec::with_capacity(peers.len()),
            interner: Interner::default(),
            scratch: vec![0; READ_CHUNK],
            n_est: 0,
            n_reached: 0,
            running: true,
            retry_at: VecDeque::new(),
            keepalive: wire::keepalive().into(),
        };
        for spec in peers {
            e.peers.push(Peer {
                spec,
                sock: None,
                state: State::Closed,
                inbuf: Vec::new(),
                outq: VecDeque::new(),
                rx: RxSet::default(),
                rx_updates: 0,
                reached: false,
                ka_interval: 1.0,
                last_tx: now(),
                connect_started: 0.0,
                retries: 0,
                peer_open: None,
            });
        }
        for i in 0..e.peers.len() {
            e.connect(i)?;
        }
        Ok(e)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No sessions.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn connect(&mut self, i: usize) -> io::Result<()> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_tcp_nodelay(true)?;
        sock.set_send_buffer_size(SOCKET_BUFFER)?;
        sock.set_recv_buffer_size(SOCKET_BUFFER)?;
        let peer = &mut self.peers[i];
        if let Some(local) = peer.spec.local {
            sock.bind(&SocketAddr::from(SocketAddrV4::new(local, 0)).into())
                .map_err(|e| io::Error::new(e.kind(), format!("bind {local}: {e}")))?;
        }
        sock.set_nonblocking(true)?;
        match sock.connect(&SocketAddr::from(self.opts.remote).into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("connect {}: {e}", self.opts.remote),
                ));
            }
        }
        let mut stream = TcpStream::from_std(sock.into());
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        peer.sock = Some(stream);
        peer.state = State::Connecting;
        peer.connect_started = now();
        peer.inbuf.clear();
        peer.outq.clear();
        Ok(())
    }

    /// Runs until `quit`, end of input, or (with `--exit-on-close`) the
    /// session's end; then sends Cease to every open session.
    pub fn run(&mut self) -> io::Result<()> {
        let waker = Arc::new(Waker::new(self.poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        // The loop keeps a reference: a waker dropped by the reader thread
        // right after its last wake closes the eventfd, and epoll forgets
        // the pending event with it.
        let reader_waker = waker.clone();
        std::thread::spawn(move || read_commands(tx, reader_waker));
        let mut events = Events::with_capacity(4096);
        let mut next_tick = now();
        let mut last_progress = now();
        while self.running {
            let timeout = (next_tick - now()).max(0.0);
            match self
                .poll
                .poll(&mut events, Some(Duration::from_secs_f64(timeout)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    while let Ok(cmd) = rx.try_recv() {
                        self.command(cmd);
                    }
                    continue;
                }
                let i = ev.token().0;
                if i >= self.peers.len() || self.peers[i].sock.is_none() {
                    continue;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    self.on_writable(i);
                }
                if self.peers[i].sock.is_some()
                    && (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                {
                    self.on_readable(i);
                }
            }
            let t = now();
            if t >= next_tick {
                next_tick = t + TICK;
                self.tick(t);
                if self.opts.progress > 0.0 && t - last_progress > self.opts.progress {
                    last_progress = t;
                    emit(
                        "progress",
                        json!({"rx_total": self.rx_total(), "established": self.n_est,
                               "retries": self.peers.iter().map(|p| p.retries).sum::<u64>()}),
                    );
                }
            }
        }
        drop(waker);
        let cease = wire::notification(6, 2);
        for i in 0..self.peers.len() {
            if let Some(sock) = self.peers[i].sock.as_mut() {
                let _ = sock.write(&cease);
            }
            self.close(i);
        }
        Ok(())
    }

    fn tick(&mut self, t: f64) {
        while self.retry_at.front().is_some_and(|&(at, _)| at <= t) {
            // Only `--retry` schedules these; a failed attempt is tried again
            // quietly, as the harness takes `connect_failed` for the end.
            if let Some((_, i)) = self.retry_at.pop_front()
                && self.connect(i).is_err()
            {
                self.peers[i].retries += 1;
                self.retry_at.push_back((t + RETRY_AFTER, i));
            }
        }
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            if self.opts.retry
                && p.state == State::Connecting
                && t - p.connect_started > CONNECT_TIMEOUT
            {
                self.close(i);
                continue;
            }
            if matches!(p.state, State::Established | State::OpenConfirm)
                && t - p.last_tx > p.ka_interval
                && p.outq.is_empty()
            {
                let ka = self.keepalive.clone();
                self.send(i, ka, None);
            }
        }
    }

    fn rx_total(&self) -> usize {
        self.peers.iter().map(|p| p.rx.len()).sum()
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Go => match &self.payload {
                Payload::None => {}
                Payload::Table { announce, .. } => {
                    let data = announce.clone();
                    self.send_marked(data, "announce_start", "announce_sent");
                }
                Payload::PerPeer(updates) => {
                    let updates = updates.clone();
                    emit("announce_start", json!({"n": self.peers.len()}));
                    for (i, u) in updates.into_iter().enumerate() {
                        self.send(i, u, None);
                    }
                    emit("announce_queued", json!({"n": self.peers.len()}));
                }
            },
            Command::Withdraw => {
                if let Payload::Table { withdraw, .. } = &self.payload {
                    let data = withdraw.clone();
                    self.send_marked(data, "withdraw_start", "withdraw_sent");
                }
            }
            Command::Stats => {
                let mut states = serde_json::Map::new();
                for p in &self.peers {
                    let n = states
                        .get(p.state.name())
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0);
                    states.insert(p.state.name().into(), json!(n + 1));
                }
                let rx: Vec<usize> = self.peers.iter().take(5).map(|p| p.rx.len()).collect();
                emit(
                    "stats",
                    json!({"established": self.n_est, "reached": self.n_reached, "rx": rx,
                           "rx_total": self.rx_total(),
                           "rx_updates": self.peers.iter().map(|p| p.rx_updates).sum::<u64>(),
                           "connect_retries": self.peers.iter().map(|p| p.retries).sum::<u64>(),
                           "states": states}),
                );
            }
            Command::Quit => self.running = false,
        }
    }

    fn send_marked(&mut self, data: Arc<[u8]>, start: &'static str, done: &'static str) {
        if self.peers.is_empty() {
            return;
        }
        emit(start, json!({"peer": 0, "bytes": data.len()}));
        self.send(0, data, Some(done));
    }

    fn send(&mut self, i: usize, data: Arc<[u8]>, done_event: Option<&'static str>) {
        self.peers[i].outq.push_back(Chunk {
            data,
            sent: 0,
            done_event,
        });
        if self.peers[i].state != State::Connecting {
            self.flush(i);
        }
    }

    /// Writes queued bytes until the socket is full (the next writable
    /// event resumes) or the queue is empty.
    fn flush(&mut self, i: usize) {
        loop {
            let peer = &mut self.peers[i];
            let (Some(sock), Some(chunk)) = (peer.sock.as_mut(), peer.outq.front_mut()) else {
                return;
            };
            match sock.write(&chunk.data[chunk.sent..]) {
                Ok(n) => {
                    peer.last_tx = now();
                    chunk.sent += n;
                    if chunk.sent == chunk.data.len() {
                        if let Some(ev) = chunk.done_event {
                            emit(ev, json!({"peer": i}));
                        }
                        peer.outq.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    emit("send_error", json!({"peer": i, "err": e.to_string()}));
                    self.close(i);
                    return;
                }
            }
        }
    }

    fn on_writable(&mut self, i: usize) {
        if self.peers[i].state == State::Connecting {
            let Some(sock) = self.peers[i].sock.as_ref() else {
                return;
            };
            let err = match sock.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match sock.peer_addr() {
                    Ok(_) => None,
                    // Not connected yet: a spurious wake-up; wait for the next.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = err {
                if !self.opts.retry {
                    emit("connect_failed", json!({"peer": i, "err": e.to_string()}));
                }
                self.close(i);
                return;
            }
            let p = &mut self.peers[i];
            p.state = State::OpenSent;
            let open = wire::open(self.opts.asn, self.opts.hold, p.spec.router_id);
            p.outq.push_front(Chunk {
                data: open.into(),
                sent: 0,
                done_event: None,
            });
        }
        self.flush(i);
    }

    fn on_readable(&mut self, i: usize) {
        loop {
            let Some(sock) = self.peers[i].sock.as_mut() else {
                return;
            };
            let n = match sock.read(&mut self.scratch) {
                Ok(0) => {
                    let p = &self.peers[i];
                    if !(self.opts.retry && p.state != State::Established) {
                        emit("closed", json!({"peer": i, "state": p.state.name()}));
                    }
                    self.close(i);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    emit("recv_error", json!({"peer": i, "err": e.to_string()}));
                    self.close(i);
                    return;
                }
            };
            // Parse straight from the shared buffer unless a partial message
            // is waiting; keep only the new partial tail.
            let mut buf = std::mem::take(&mut self.peers[i].inbuf);
            let consumed = if buf.is_empty() {
                let data = std::mem::take(&mut self.scratch);
                let used = self.messages(i, &data[..n]);
                if let Some(used) = used {
                    buf.extend_from_slice(&data[used..n]);
                }
                self.scratch = data;
                used.map(|_| 0)
            } else {
                buf.extend_from_slice(&self.scratch[..n]);
                self.messages(i, &buf)
            };
            match consumed {
                Some(used) => {
                    buf.drain(..used);
                    if self.peers[i].sock.is_some() {
                        self.peers[i].inbuf = buf;
                    } else {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    /// Handles the whole messages at the start of `buf`; returns the bytes
    /// used, or `None` when the session was closed on the way.
    fn messages(&mut self, i: usize, buf: &[u8]) -> Option<usize> {
        let mut pos = 0;
        while buf.len() - pos >= 19 {
            let mlen = u16::from_be_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            if !(19..=65535).contains(&mlen) || buf[pos..pos + 16] != [0xff; 16] {
                self.fail(i, format!("bad message header (length {mlen})"));
                return None;
            }
            if buf.len() - pos < mlen {
                break;
            }
            let mtype = buf[pos + 18];
            let body = &buf[pos + 19..pos + mlen];
            if mtype == wire::T_UPDATE {
                let p = &mut self.peers[i];
                p.rx_updates += 1;
                if p.spec.count_rx {
                    let own = self
                        .opts
                        .originator_check
                        .then(|| p.spec.router_id.octets());
                    if apply_update(&mut p.rx, &mut self.interner, body, own).is_none() {
                        self.fail(i, "malformed UPDATE".into());
                        return None;
                    }
                    self.after_update(i);
                }
            } else {
                self.other(i, mtype, body);
                // Closed on the way (a NOTIFICATION, a broken OPEN).
                self.peers[i].sock.as_ref()?;
            }
            pos += mlen;
        }
        Some(pos)
    }

    fn after_update(&mut self, i: usize) {
        let single = self.peers.len() == 1;
        let p = &mut self.peers[i];
        let n = p.rx.len();
        if !p.reached && p.spec.target > 0 && n >= p.spec.target {
            p.reached = true;
            self.n_reached += 1;
            if single {
                emit("reached", json!({"peer": i, "count": n}));
            }
            if self.n_reached == self.peers.len() {
                emit(
                    "all_reached",
                    json!({"n": self.n_reached, "total": self.rx_total()}),
                );
            }
        } else if p.reached && n == 0 {
            p.reached = false;
            self.n_reached -= 1;
            if single {
                emit("empty", json!({"peer": i}));
            }
        }
    }

    fn other(&mut self, i: usize, mtype: u8, body: &[u8]) {
        match mtype {
            wire::T_OPEN => {
                let Some(o) = wire::parse_open(body) else {
                    self.fail(i, "malformed OPEN".into());
                    return;
                };
                let p = &mut self.peers[i];
                let negotiated = self.opts.hold.min(o.hold);
                p.ka_interval = if negotiated > 0 {
                    (f64::from(negotiated) / 3.0).max(1.0)
                } else {
                    1e9
                };
                p.peer_open = Some(o);
                p.state = State::OpenConfirm;
                let ka = self.keepalive.clone();
                self.send(i, ka, None);
            }
            wire::T_KEEPALIVE if self.peers[i].state == State::OpenConfirm => {
                self.peers[i].state = State::Established;
                self.n_est += 1;
                if self.peers.len() == 1
                    && let Some(o) = self.peers[i].peer_open
                {
                    emit(
                        "established",
                        json!({"peer": i, "peer_as": o.asn, "hold": o.hold}),
                    );
                }
                if self.n_est == self.peers.len() {
                    emit("all_established", json!({"n": self.n_est}));
                }
            }
            wire::T_NOTIFICATION => {
                let (code, sub) = (
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                );
                let data: String = body.iter().skip(2).map(|b| format!("{b:02x}")).collect();
                emit(
                    "notification",
                    json!({"peer": i, "code": code, "subcode": sub, "data": data}),
                );
                self.close(i);
            }
            _ => {}
        }
    }

    /// Ends a session the device sent something broken on. `closed` follows
    /// `recv_error` because the harness stops on `closed` (the Python tool
    /// would have crashed, which the harness sees as the end of its events).
    fn fail(&mut self, i: usize, err: String) {
        emit("recv_error", json!({"peer": i, "err": err}));
        emit(
            "closed",
            json!({"peer": i, "state": self.peers[i].state.name()}),
        );
        self.close(i);
    }

    fn close(&mut self, i: usize) {
        let p = &mut self.peers[i];
        let Some(mut sock) = p.sock.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut sock);
        drop(sock);
        let was = p.state;
        p.state = State::Closed;
        p.outq.clear();
        p.inbuf = Vec::new();
        if self.opts.retry && was != State::Established && self.running {
            p.retries += 1;
            self.retry_at.push_back((now() + RETRY_AFTER, i));
        } else if self.opts.exit_on_close && self.peers.len() == 1 {
            self.running = false;
        }
    }
}

/// Reads commands line by line and wakes the loop; end of input is `quit`.
fn read_commands(tx: mpsc::Sender<Command>, waker: Arc<Waker>) {
    let stdin = io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let cmd = match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => Command::Quit,
            Ok(_) => match Command::parse(&line) {
                Some(c) => c,
                None => continue,
            },
        };
        if tx.send(cmd).is_err() || waker.wake().is_err() || cmd == Command::Quit {
            return;
        }
    }
}
