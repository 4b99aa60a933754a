//! Why the controller, or one of its leader tasks, stops.

use std::net::SocketAddr;

use crate::lease::LeaseError;

/// What stops the controller or a leader task (a task is started again
/// after a backoff while the term lasts).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// SIGTERM and SIGINT cannot be watched.
    #[error("cannot watch SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    /// No client for the API server.
    #[error("cannot reach the Kubernetes API server (in-cluster configuration or KUBECONFIG): {0}")]
    Kube(#[source] kube::Error),
    /// Leader election cannot run.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// `--metrics-address` cannot be listened on.
    #[error("--metrics-address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The term ended while a task was writing: it stops at once.
    #[error("no longer leading; stopped writing")]
    NotLeading,
}
