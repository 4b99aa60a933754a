//! The gRPC API on the agent's unix socket (and, optionally, on TCP with
//! mutual TLS), and the client the CLI uses.
//!
//! No read takes a lock shared with UPDATE processing: the peer table is a
//! snapshot the speaker publishes, per-prefix reads are commands the speaker
//! task serves ahead of its event batches, and events come from the journal's
//! own task (see docs/architecture.md).

mod client;
mod convert;
mod error;
mod managed;
mod peers;
mod rib;
mod server;
mod status;
mod watch;

pub use client::RESUME_CURSOR;
pub use client::{ENV_CA, ENV_CERT, ENV_KEY, ENV_SERVER_NAME, connect};
pub use error::ApiError;
pub use managed::{Managed, ManagedHandle, ManagedPeer, api_origin, merge};
pub use peers::checked_peer;
pub use rib::parse_prefix;
pub use server::{AgentView, ApiServer, DEFAULT_SOCKET, OverlayNode, OverlayView, TcpApi, serve};
