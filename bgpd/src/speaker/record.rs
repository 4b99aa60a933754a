//! The speaker's inputs written down: each input the core takes has a
//! serde form ([`RecordedInput`]), one JSON line each in `events.jsonl`,
//! beside the configuration it started with in `config.json` (TCP-MD5
//! passwords left out; both files readable by their owner only).
//! [`super::Speaker::start_recording`] (`petrel agent --record-speaker DIR`)
//! records a running speaker there; [`super::replay`] plays such a directory
//! back without sockets.
//!
//! UPDATEs and OPENs are recorded as the hex of their wire encoding (the
//! codec's types are not serde): an UPDATE with the context the session
//! decodes with, so that it decodes the same on replay.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{RestartState, SpeakerConfig};
use super::core::{Core, Input, PeerInput};
use super::forms;
use super::handle::{ResetKind, SpeakerError};
use crate::fsm::{DownReason, Negotiated, State};
use crate::rib::PeerId;
use crate::wire::capability::{GrFamily, GracefulRestart, LlgrFamily};
use crate::wire::{AfiSafi, Message, Notification, Update, WireContext, WireError};

/// How a recorded run started (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    /// The configuration the speaker started with (its first
    /// [`RecordedInput::Configure`] repeats it in full).
    pub config: SpeakerConfig,
    /// What it knew about its previous run.
    pub restart: RestartState,
}

/// One recorded input: when, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Milliseconds since the speaker started.
    pub at_ms: u64,
    /// The same, exactly, in nanoseconds, when recorded from a running
    /// speaker (hand-written streams give milliseconds only): timers due
    /// within the same millisecond then fire on replay at the very input
    /// they fired at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// The input.
    #[serde(flatten)]
    pub input: RecordedInput,
}

impl Recorded {
    /// When the input was taken, after the speaker's start.
    pub fn at(&self) -> std::time::Duration {
        match self.at_ns {
            Some(ns) => std::time::Duration::from_nanos(ns),
            None => std::time::Duration::from_millis(self.at_ms),
        }
    }
}

/// An input of the speaker, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum RecordedInput {
    /// An event of a peer task.
    Peer {
        /// The peer's number (peers are numbered from 1 in the order they
        /// are configured or connect).
        peer: PeerId,
        /// The event.
        event: RecordedPeerEvent,
    },
    /// A new configuration.
    Configure {
        /// The configuration.
        config: Box<SpeakerConfig>,
    },
    /// An operator's action on a peer (by address or name).
    Control {
        /// The peer.
        peer: String,
        /// The action.
        action: RecordedControl,
    },
    /// BFD's view of a neighbour changed.
    Liveness {
        /// The neighbour.
        address: IpAddr,
        /// Whether BFD is Up.
        up: bool,
    },
    /// A next hop's reachability changed.
    NextHop {
        /// The next hop.
        address: IpAddr,
        /// Whether it can be reached.
        reachable: bool,
    },
    /// A FIB subscriber arrived.
    SubscribeFib,
    /// The FIB subscriber went away.
    FibGone,
    /// A connection was accepted from this address.
    Accept {
        /// The remote address.
        remote: IpAddr,
    },
    /// Graceful restart deadlines were checked (and those due ran).
    Timers,
    /// A flush of at most `max` changed prefixes (none: all of them).
    Flush {
        /// The most prefixes.
        max: Option<usize>,
    },
    /// A batch of peer events ended.
    EndOfBatch,
    /// The speaker stopped.
    Shutdown,
}

/// An operator's action, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedControl {
    /// Reset the session.
    Reset(ResetKind),
    /// Disable the peer, with an optional shutdown message.
    Disable(Option<String>),
    /// Enable it again.
    Enable,
}

/// A peer task's event, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedPeerEvent {
    /// The machine changed state (`Idle`, `Connect`, `Active`, `OpenSent`,
    /// `OpenConfirm`, `Established`).
    State {
        /// The new state.
        state: String,
    },
    /// The session is Established.
    Up {
        /// The session's number.
        session: u64,
        /// Our end.
        local: SocketAddr,
        /// The peer's end.
        remote: SocketAddr,
        /// Our link-local address on the shared link.
        link_local: Option<Ipv6Addr>,
        /// What was negotiated.
        negotiated: Box<RecordedNegotiated>,
    },
    /// The session or attempt ended.
    Down {
        /// Why.
        reason: RecordedDownReason,
        /// Whether it had been Established.
        established: bool,
    },
    /// An UPDATE: the whole message, hex, as the session's receive context
    /// encodes it.
    Update {
        /// The message.
        hex: String,
        /// RFC 7606: treat its routes as withdrawn.
        #[serde(default)]
        treat_as_withdraw: bool,
    },
    /// The peer asked for a family's routes again.
    RouteRefresh {
        /// The family.
        family: String,
    },
    /// The peer task ended.
    Stopped,
    /// The peer task panicked.
    Crashed {
        /// What it said.
        why: String,
    },
}

/// Why a session ended, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedDownReason {
    /// Stopped by configuration or an operator.
    ManualStop,
    /// Stopped automatically with this Cease subcode.
    AutomaticStop {
        /// The subcode.
        subcode: u8,
    },
    /// The peer sent a NOTIFICATION.
    NotificationReceived(RecordedNotification),
    /// We sent one.
    NotificationSent(RecordedNotification),
    /// The TCP connection failed or closed.
    ConnectionLost,
    /// The connection lost a collision.
    Collision,
}

/// A NOTIFICATION, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedNotification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, hex.
    #[serde(default)]
    pub data: String,
}

/// A wire context, in serde form.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordedContext {
    /// 4-octet ASNs.
    pub four_octet_as: bool,
    /// Extended messages.
    pub extended_message: bool,
    /// ADD-PATH, IPv4 unicast.
    pub add_path_ipv4: bool,
    /// ADD-PATH, IPv6 unicast.
    pub add_path_ipv6: bool,
}

/// A graceful restart capability, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedGracefulRestart {
    /// Restart flags, high nibble as on the wire (0x80: R).
    pub flags: u8,
    /// Restart time, seconds.
    pub restart_time: u16,
    /// Families and their flags (0x80: F).
    pub families: Vec<(String, u8)>,
}

/// A long-lived graceful restart family, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedLlgrFamily {
    /// The family.
    pub family: String,
    /// Flags (0x80: F).
    pub flags: u8,
    /// Long-lived stale time, seconds.
    pub stale_time: u32,
}

/// What a session negotiated, in serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedNegotiated {
    /// The peer's ASN.
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Hold time.
    pub hold_time: u16,
    /// Keepalive interval.
    pub keepalive_time: u16,
    /// Families both offered.
    pub families: Vec<String>,
    /// The peer supports route refresh.
    pub route_refresh: bool,
    /// Both support enhanced route refresh.
    pub enhanced_route_refresh: bool,
    /// The peer's graceful restart capability.
    pub graceful_restart: Option<RecordedGracefulRestart>,
    /// The peer's long-lived graceful restart capability.
    pub long_lived: Option<Vec<RecordedLlgrFamily>>,
    /// How what we receive is laid out.
    pub rx: RecordedContext,
    /// How what we send is laid out.
    pub tx: RecordedContext,
    /// Our OPEN, hex.
    pub local_open: String,
    /// The peer's OPEN, hex.
    pub remote_open: String,
}

/// Why an input could not be written down or read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line or file is not what it should be.
    #[error("{path}:{line}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 for a whole file).
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// Bad hex.
    #[error("not hex: {0:?}")]
    Hex(String),
    /// A recorded message does not decode.
    #[error("a recorded message does not decode: {0}")]
    Decode(#[from] WireError),
    /// A message does not encode.
    #[error("a message does not encode: {0}")]
    Encode(#[from] crate::wire::EncodeError),
    /// A recorded message is not of the kind expected there.
    #[error("expected {0}, found another message")]
    Unexpected(&'static str),
    /// An unknown state or family name.
    #[error("unknown {0}: {1:?}")]
    Unknown(&'static str, String),
    /// An input's time is past what a replay can represent.
    #[error("{path}:{line}: {at:?} after the start is beyond a replay's reach")]
    TooLate {
        /// The recording.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The input's time.
        at: std::time::Duration,
    },
    /// The speaker to record did not start.
    #[error(transparent)]
    Start(SpeakerError),
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Reads [`hex`].
pub(crate) fn unhex(s: &str) -> Result<Vec<u8>, RecordError> {
    let bad = || RecordError::Hex(s.chars().take(40).collect());
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

fn context_to(c: &WireContext) -> RecordedContext {
    RecordedContext {
        four_octet_as: c.four_octet_as,
        extended_message: c.extended_message,
        add_path_ipv4: c.add_path_ipv4,
        add_path_ipv6: c.add_path_ipv6,
    }
}

fn context_from(c: &RecordedContext) -> WireContext {
    WireContext {
        four_octet_as: c.four_octet_as,
        extended_message: c.extended_message,
        add_path_ipv4: c.add_path_ipv4,
        add_path_ipv6: c.add_path_ipv6,
    }
}

fn family(t: &str) -> Result<AfiSafi, RecordError> {
    forms::parse_family(t).ok_or_else(|| RecordError::Unknown("family", t.into()))
}

fn state_from(t: &str) -> Result<State, RecordError> {
    Ok(match t {
        "Idle" => State::Idle,
        "Connect" => State::Connect,
        "Active" => State::Active,
        "OpenSent" => State::OpenSent,
        "OpenConfirm" => State::OpenConfirm,
        "Established" => State::Established,
        _ => return Err(RecordError::Unknown("state", t.into())),
    })
}

fn notification_to(n: &Notification) -> RecordedNotification {
    RecordedNotification {
        code: n.code,
        subcode: n.subcode,
        data: hex(&n.data),
    }
}

fn notification_from(n: &RecordedNotification) -> Result<Notification, RecordError> {
    let mut out = Notification::new(n.code, n.subcode);
    out.data = unhex(&n.data)?;
    Ok(out)
}

fn down_to(r: &DownReason) -> RecordedDownReason {
    match r {
        DownReason::ManualStop => RecordedDownReason::ManualStop,
        DownReason::AutomaticStop(subcode) => {
            RecordedDownReason::AutomaticStop { subcode: *subcode }
        }
        DownReason::NotificationReceived(n) => {
            RecordedDownReason::NotificationReceived(notification_to(n))
        }
        DownReason::NotificationSent(n) => RecordedDownReason::NotificationSent(notification_to(n)),
        DownReason::ConnectionLost => RecordedDownReason::ConnectionLost,
        DownReason::Collision => RecordedDownReason::Collision,
    }
}

fn down_from(r: &RecordedDownReason) -> Result<DownReason, RecordError> {
    Ok(match r {
        RecordedDownReason::ManualStop => DownReason::ManualStop,
        RecordedDownReason::AutomaticStop { subcode } => DownReason::AutomaticStop(*subcode),
        RecordedDownReason::NotificationReceived(n) => {
            DownReason::NotificationReceived(notification_from(n)?)
        }
        RecordedDownReason::NotificationSent(n) => {
            DownReason::NotificationSent(notification_from(n)?)
        }
        RecordedDownReason::ConnectionLost => DownReason::ConnectionLost,
        RecordedDownReason::Collision => DownReason::Collision,
    })
}

/// An OPEN's encoding does not depend on the session's context.
fn open_hex(open: &crate::wire::Open) -> Result<String, RecordError> {
    Ok(hex(
        &Message::Open(open.clone()).to_bytes(&WireContext::default())?
    ))
}

fn open_from(h: &str) -> Result<crate::wire::Open, RecordError> {
    match Message::decode(&unhex(h)?, &WireContext::default())?.message {
        Message::Open(o) => Ok(o),
        _ => Err(RecordError::Unexpected("an OPEN")),
    }
}

impl RecordedNegotiated {
    /// The serde form of what a session negotiated.
    pub(crate) fn from_negotiated(n: &Negotiated) -> Result<Self, RecordError> {
        Ok(RecordedNegotiated {
            peer_asn: n.peer_asn,
            peer_id: n.peer_id,
            hold_time: n.hold_time,
            keepalive_time: n.keepalive_time,
            families: n.families.iter().map(|f| forms::family_text(*f)).collect(),
            route_refresh: n.route_refresh,
            enhanced_route_refresh: n.enhanced_route_refresh,
            graceful_restart: n
                .peer_graceful_restart
                .as_ref()
                .map(|gr| RecordedGracefulRestart {
                    flags: gr.flags,
                    restart_time: gr.restart_time,
                    families: gr
                        .families
                        .iter()
                        .map(|f| (forms::family_text(f.afi_safi), f.flags))
                        .collect(),
                }),
            long_lived: n.peer_long_lived.as_ref().map(|v| {
                v.iter()
                    .map(|f| RecordedLlgrFamily {
                        family: forms::family_text(f.afi_safi),
                        flags: f.flags,
                        stale_time: f.stale_time,
                    })
                    .collect()
            }),
            rx: context_to(&n.rx),
            tx: context_to(&n.tx),
            local_open: open_hex(&n.local_open)?,
            remote_open: open_hex(&n.remote_open)?,
        })
    }

    /// Back to what the session negotiated.
    pub(crate) fn to_negotiated(&self) -> Result<Negotiated, RecordError> {
        Ok(Negotiated {
            peer_asn: self.peer_asn,
            peer_id: self.peer_id,
            hold_time: self.hold_time,
            keepalive_time: self.keepalive_time,
            families: self
                .families
                .iter()
                .map(|f| family(f))
                .collect::<Result<_, _>>()?,
            route_refresh: self.route_refresh,
            enhanced_route_refresh: self.enhanced_route_refresh,
            peer_graceful_restart: self
                .graceful_restart
                .as_ref()
                .map(|gr| -> Result<_, RecordError> {
                    Ok(GracefulRestart {
                        flags: gr.flags,
                        restart_time: gr.restart_time,
                        families: gr
                            .families
                            .iter()
                            .map(|(f, flags)| {
                                Ok(GrFamily {
                                    afi_safi: family(f)?,
                                    flags: *flags,
                                })
                            })
                            .collect::<Result<_, RecordError>>()?,
                    })
                })
                .transpose()?,
            peer_long_lived: self
                .long_lived
                .as_ref()
                .map(|v| {
                    v.iter()
                        .map(|f| {
                            Ok(LlgrFamily {
                                afi_safi: family(&f.family)?,
                                flags: f.flags,
                                stale_time: f.stale_time,
                            })
                        })
                        .collect::<Result<Vec<_>, RecordError>>()
                })
                .transpose()?,
            rx: context_from(&self.rx),
            tx: context_from(&self.tx),
            local_open: open_from(&self.local_open)?,
            remote_open: open_from(&self.remote_open)?,
        })
    }
}

/// The context the core's session with `id` decodes UPDATEs with: the
/// negotiated one while Established (an UPDATE queued behind the session's
/// end falls back to the common modern one, on replay as well).
pub(crate) fn receive_context(core: &Core, id: PeerId) -> WireContext {
    core.peers
        .get(&id)
        .and_then(|p| p.negotiated.as_deref())
        .map_or(WireContext::modern(), |n| n.rx)
}

impl RecordedInput {
    /// The serde form of an input the core is about to take.
    pub(crate) fn from_input(core: &Core, input: &Input) -> Result<Self, RecordError> {
        Ok(match input {
            Input::Peer(id, ev) => RecordedInput::Peer {
                peer: *id,
                event: match ev {
                    PeerInput::State(s) => RecordedPeerEvent::State {
                        state: s.to_string(),
                    },
                    PeerInput::Up {
                        session,
                        negotiated,
                        local,
                        remote,
                        link_local,
                    } => RecordedPeerEvent::Up {
                        session: *session,
                        local: *local,
                        remote: *remote,
                        link_local: *link_local,
                        negotiated: Box::new(RecordedNegotiated::from_negotiated(negotiated)?),
                    },
                    PeerInput::Down {
                        reason,
                        established,
                    } => RecordedPeerEvent::Down {
                        reason: down_to(reason),
                        established: *established,
                    },
                    PeerInput::Update {
                        update,
                        treat_as_withdraw,
                    } => {
                        let ctx = receive_context(core, *id);
                        // Encoded with the receiving session's size limit
                        // lifted: what was received fits by construction.
                        let ctx = WireContext {
                            extended_message: true,
                            ..ctx
                        };
                        RecordedPeerEvent::Update {
                            hex: hex(&Message::Update(update.clone()).to_bytes(&ctx)?),
                            treat_as_withdraw: *treat_as_withdraw,
                        }
                    }
                    PeerInput::RouteRefresh(af) => RecordedPeerEvent::RouteRefresh {
                        family: forms::family_text(*af),
                    },
                    PeerInput::Stopped => RecordedPeerEvent::Stopped,
                    PeerInput::Crashed(why) => RecordedPeerEvent::Crashed { why: why.clone() },
                },
            },
            Input::Configure(c) => RecordedInput::Configure { config: c.clone() },
            Input::Control(peer, what) => RecordedInput::Control {
                peer: peer.clone(),
                action: match what {
                    super::handle::PeerControl::Reset(k) => RecordedControl::Reset(*k),
                    super::handle::PeerControl::Disable(m) => RecordedControl::Disable(m.clone()),
                    super::handle::PeerControl::Enable => RecordedControl::Enable,
                },
            },
            Input::Liveness(address, up) => RecordedInput::Liveness {
                address: *address,
                up: *up,
            },
            Input::NextHopReachable(address, reachable) => RecordedInput::NextHop {
                address: *address,
                reachable: *reachable,
            },
            Input::SubscribeFib => RecordedInput::SubscribeFib,
            Input::FibGone => RecordedInput::FibGone,
            Input::Accept(remote) => RecordedInput::Accept { remote: *remote },
            Input::Timers => RecordedInput::Timers,
            Input::Flush(max) => RecordedInput::Flush {
                max: (*max != usize::MAX).then_some(*max),
            },
            Input::EndOfBatch => RecordedInput::EndOfBatch,
            Input::Shutdown => RecordedInput::Shutdown,
        })
    }

    /// The input the core takes, given its state now (an UPDATE decodes
    /// with the context its session negotiated).
    pub(crate) fn to_input(&self, core: &Core) -> Result<Input, RecordError> {
        Ok(match self {
            RecordedInput::Peer { peer, event } => Input::Peer(
                *peer,
                match event {
                    RecordedPeerEvent::State { state } => PeerInput::State(state_from(state)?),
                    RecordedPeerEvent::Up {
                        session,
                        local,
                        remote,
                        link_local,
                        negotiated,
                    } => PeerInput::Up {
                        session: *session,
                        negotiated: Box::new(negotiated.to_negotiated()?),
                        local: *local,
                        remote: *remote,
                        link_local: *link_local,
                    },
                    RecordedPeerEvent::Down {
                        reason,
                        established,
                    } => PeerInput::Down {
                        reason: down_from(reason)?,
                        established: *established,
                    },
                    RecordedPeerEvent::Update {
                        hex,
                        treat_as_withdraw,
                    } => {
                        let ctx = WireContext {
                            extended_message: true,
                            ..receive_context(core, *peer)
                        };
                        let update = match Message::decode(&unhex(hex)?, &ctx)?.message {
                            Message::Update(u) => u,
                            _ => return Err(RecordError::Unexpected("an UPDATE")),
                        };
                        PeerInput::Update {
                            update,
                            treat_as_withdraw: *treat_as_withdraw,
                        }
                    }
                    RecordedPeerEvent::RouteRefresh { family: f } => {
                        PeerInput::RouteRefresh(family(f)?)
                    }
                    RecordedPeerEvent::Stopped => PeerInput::Stopped,
                    RecordedPeerEvent::Crashed { why } => PeerInput::Crashed(why.clone()),
                },
            ),
            RecordedInput::Configure { config } => Input::Configure(config.clone()),
            RecordedInput::Control { peer, action } => Input::Control(
                peer.clone(),
                match action {
                    RecordedControl::Reset(k) => super::handle::PeerControl::Reset(*k),
                    RecordedControl::Disable(m) => super::handle::PeerControl::Disable(m.clone()),
                    RecordedControl::Enable => super::handle::PeerControl::Enable,
                },
            ),
            RecordedInput::Liveness { address, up } => Input::Liveness(*address, *up),
            RecordedInput::NextHop { address, reachable } => {
                Input::NextHopReachable(*address, *reachable)
            }
            RecordedInput::SubscribeFib => Input::SubscribeFib,
            RecordedInput::FibGone => Input::FibGone,
            RecordedInput::Accept { remote } => Input::Accept(*remote),
            RecordedInput::Timers => Input::Timers,
            RecordedInput::Flush { max } => Input::Flush(max.unwrap_or(usize::MAX)),
            RecordedInput::EndOfBatch => Input::EndOfBatch,
            RecordedInput::Shutdown => Input::Shutdown,
        })
    }
}

impl RecordedPeerEvent {
    /// An UPDATE as a peer with this receive context sends it (for streams
    /// written by hand or by a test).
    pub fn update(update: &Update, ctx: &WireContext) -> Result<Self, RecordError> {
        let ctx = WireContext {
            extended_message: true,
            ..*ctx
        };
        Ok(RecordedPeerEvent::Update {
            hex: hex(&Message::Update(update.clone()).to_bytes(&ctx)?),
            treat_as_withdraw: false,
        })
    }

    /// An Up event from what a session negotiated.
    pub fn up(
        session: u64,
        local: SocketAddr,
        remote: SocketAddr,
        negotiated: &Negotiated,
    ) -> Result<Self, RecordError> {
        Ok(RecordedPeerEvent::Up {
            session,
            local,
            remote,
            link_local: None,
            negotiated: Box::new(RecordedNegotiated::from_negotiated(negotiated)?),
        })
    }
}

/// A file only its owner reads: a recording holds the whole configuration
/// and every route the speaker was sent.
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes a running speaker's inputs down.
pub(crate) struct Recorder {
    events: LineWriter<File>,
    path: PathBuf,
}

impl Recorder {
    /// A recorder into `dir` (created if missing).
    pub(crate) fn create(
        dir: &Path,
        config: &SpeakerConfig,
        restart: RestartState,
    ) -> Result<Recorder, RecordError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let start = StartRecord {
            config: config.clone(),
            restart,
        };
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&start).map_err(|source| RecordError::Json {
            path: cfg_path.clone(),
            line: 0,
            source,
        })?;
        private_file(&cfg_path)
            .and_then(|mut f| f.write_all((text + "\n").as_bytes()))
            .map_err(io(&cfg_path))?;
        let path = dir.join("events.jsonl");
        let file = private_file(&path).map_err(io(&path))?;
        Ok(Recorder {
            events: LineWriter::new(file),
            path,
        })
    }

    /// Writes one input down, stamped with the core's clock.
    pub(crate) fn record(&mut self, core: &Core, input: &Input) -> Result<(), RecordError> {
        let rec = Recorded {
            at_ms: u64::try_from(core.clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            at_ns: Some(u64::try_from(core.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)),
            input: RecordedInput::from_input(core, input)?,
        };
        let line = serde_json::to_string(&rec).map_err(|source| RecordError::Json {
            path: self.path.clone(),
            line: 0,
            source,
        })?;
        writeln!(self.events, "{line}").map_err(|source| RecordError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{Action, Match, Policy, Rule};
    use crate::speaker::config::{NeighborAddress, NeighborConfig};
    use crate::wire::attr::Community;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&bytes), "00017f80ff");
        assert_eq!(unhex("00017f80ff").ok(), Some(bytes.to_vec()));
        assert!(unhex("0").is_err());
        assert!(unhex("zz").is_err());
        assert!(unhex("é0").is_err());
    }

    #[test]
    fn a_configuration_with_policies_survives_json() {
        let mut c = SpeakerConfig::new(65000, Ipv4Addr::new(10, 0, 0, 1));
        let mut n = NeighborConfig::new(
            "n",
            NeighborAddress::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            65001,
        );
        n.families.push(AfiSafi::new(1, 128));
        n.export_policy = Some(Arc::new(Policy {
            name: "p".into(),
            rules: vec![Rule {
                matches: vec![
                    Match::Family(AfiSafi::IPV6_UNICAST),
                    Match::Community(Community(7)),
                ],
                actions: vec![
                    Action::Prepend {
                        asn: None,
                        count: 2,
                    },
                    Action::Accept,
                ],
            }],
        }));
        c.neighbors.push(n);
        let text = serde_json::to_string(&c).unwrap_or_default();
        let back: Option<SpeakerConfig> = serde_json::from_str(&text).ok();
        assert_eq!(back, Some(c));
    }

    #[test]
    fn a_manual_clock_moves_only_forwards() {
        let mut clock = super::super::clock::Clock::manual();
        clock.advance_to(std::time::Duration::from_millis(1500));
        let t = clock.now();
        clock.advance_to(std::time::Duration::from_millis(1000));
        assert_eq!(clock.now(), t);
        assert_eq!(
            clock.wall(),
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500)
        );
    }
}
