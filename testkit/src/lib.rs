//! The harness petrel's tests and its lab share: running commands, network
//! namespaces and veth links, real routing daemons (FRR, BIRD 2, GoBGP,
//! ExaBGP) started in them, a TCP relay into a namespace, kubeconfig
//! rewriting and (feature `kube-env`) a Kubernetes API for one test.
//!
//! - [`cmd`]: commands, polling with a bound, root check, log tails.
//! - [`netns`]: namespaces and veth links.
//! - [`daemons`]: how each routing daemon is started and known to be up,
//!   whoever owns its process (a test's [`Lab`], or `petrel lab`'s state).
//! - [`forward`]: a listening socket inside a namespace, and a TCP relay.
//! - [`guard`]: a directory removed and a process killed when dropped.
//! - [`kubeconfig`]: a kubeconfig pointed at another address.
//! - [`lab`]: [`Lab`], a test's namespaces, processes and files, removed on
//!   drop (also when the test panics).
//! - `kube` (feature `kube-env`): [`KubeEnv`].

pub mod cmd;
pub mod daemons;
pub mod forward;
pub mod guard;
#[cfg(feature = "kube-env")]
pub mod kube;
pub mod kubeconfig;
pub mod lab;
pub mod netns;

pub use cmd::{is_root, log_tail, must_run, run, wait_for, wait_until};
#[cfg(feature = "kube-env")]
pub use kube::{Access, AuditEvent, Chart, Component, KubeEnv, ServiceAccountAccess};
pub use lab::{Lab, Petrel};

/// What went wrong in the harness: the step, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct Error {
    /// What was being done (`start zebra in ns1`).
    pub what: String,
    /// Why it failed.
    pub why: String,
}

impl Error {
    /// A step and why it failed.
    pub fn new(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error {
            what: what.into(),
            why: why.to_string(),
        }
    }
}
