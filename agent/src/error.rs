//! Why the agent cannot start or run on: each names the flag or resource to
//! look at.

use std::net::SocketAddr;
use std::path::PathBuf;

use bgpd::speaker::SpeakerError;

/// What stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// SIGTERM and SIGINT cannot be watched.
    #[error("cannot watch SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    /// The kernel's routing tables cannot be read or changed.
    #[error("cannot program the kernel's routes (needs CAP_NET_ADMIN; --no-fib runs without): {0}")]
    Kernel(#[from] route_sync::KernelError),
    /// `--source files:DIR` names no directory.
    #[error("source directory {} does not exist", .0.display())]
    NoSourceDir(PathBuf),
    /// `--source kube` cannot reach the API server.
    #[error(transparent)]
    Kube(#[from] model::kube::ConnectError),
    /// `--metrics-address` cannot be listened on.
    #[error("--metrics-address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API cannot be served.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// `--onlink-interface` names no interface.
    #[error("--onlink-interface {0}: no such interface")]
    NoInterface(String),
    /// The pod IPAM socket cannot be served.
    #[error("--ipam-socket {}: {source}", .socket.display())]
    IpamSocket {
        /// The socket's path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The speaker went away under the FIB.
    #[error("the speaker: {0}")]
    Speaker(#[from] SpeakerError),
}
