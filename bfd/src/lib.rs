//! BFD, Bidirectional Forwarding Detection (RFC 5880), for BGP peers
//! (RFC 5882), over single-hop (RFC 5881) and multihop (RFC 5883) paths.
//!
//! - [`packet`]: the Control packet and the checks every received one must
//!   pass.
//! - [`auth`]: Simple Password, keyed and meticulous keyed MD5 and SHA1.
//! - [`session`]: one session's state machine, timers, Poll/Final and
//!   detection, sans-IO.
//! - [`runtime`]: the IO edge: the node's sessions over UDP, their sockets
//!   and timers, status and state changes for BGP.
//!
//! Asynchronous mode only. Not implemented: Demand mode (§6.6) and the
//! Echo function (§6.4) — BIRD has no Echo and FRR's works only between
//! FRR peers, so a session advertises a Required Min Echo RX of zero.

pub mod auth;
pub mod packet;
pub mod runtime;
pub mod session;

pub use auth::{AuthError, AuthType, Key};
pub use packet::{ControlPacket, Diag, PacketError, State};
pub use session::{Counters, Event, ReceiveError, Session, SessionConfig, SessionStatus};

/// UDP port of single-hop sessions (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// UDP port of multihop sessions (RFC 5883 §2).
pub const MULTIHOP_PORT: u16 = 4784;
/// Source ports a session sends from (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
