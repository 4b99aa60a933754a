//! Requests and replies between `petrel-ipam` and the agent: one JSON line
//! each way on a fresh connection to the agent's socket.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where the agent listens unless the network configuration says
/// otherwise (`ipam.socket`).
pub const DEFAULT_SOCKET: &str = "/run/petrel/ipam.sock";

/// One CNI attachment: the container and its interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    #[serde(rename = "ifname")]
    pub if_name: String,
}

impl Attachment {
    /// The handle addresses are recorded under: `CONTAINERID/IFNAME`.
    pub fn handle(&self) -> String {
        format!("{}/{}", self.container_id, self.if_name)
    }
}

/// What the plugin asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "UPPERCASE")]
pub enum Request {
    /// Addresses for an attachment (the same ones again if it has them).
    Add {
        /// The attachment.
        attachment: Attachment,
        /// `NAMESPACE/NAME` of the pod, from `CNI_ARGS`.
        pod: Option<String>,
    },
    /// Give back the attachment's addresses (none held is fine).
    Del {
        /// The attachment.
        attachment: Attachment,
    },
    /// Does the attachment hold exactly these addresses?
    Check {
        /// The attachment.
        attachment: Attachment,
        /// The addresses of the previous result.
        addresses: Vec<IpAddr>,
    },
    /// Give back every address of this node's attachments not in `valid`.
    Gc {
        /// `cni.dev/valid-attachments`.
        valid: Vec<Attachment>,
    },
    /// Can an address be handed out now?
    Status,
}

/// One address handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// The address, as a host prefix (`/32`, `/128`).
    pub address: IpNet,
    /// The pod's gateway: its block's first address (never a pod's),
    /// which the main plugin puts on the host side of the pod's link.
    pub gateway: IpAddr,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Reply {
    /// ADD: the addresses, one per family that has a pool.
    Addresses {
        /// The addresses.
        addresses: Vec<Assigned>,
    },
    /// DEL, CHECK, STATUS: done, fine. GC: how many were given back.
    Done {
        /// What was given back (DEL, GC), for the log.
        #[serde(default)]
        released: Vec<IpAddr>,
    },
    /// A CNI error.
    Error(Failure),
}

/// A CNI error object: a code from the spec's table and words that name
/// the pool and what ran out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct Failure {
    /// The CNI error code.
    pub code: u32,
    /// The message.
    pub msg: String,
    /// More about it.
    #[serde(default)]
    pub details: String,
}

/// CNI's error codes (spec 1.1, "Error"), those petrel uses.
pub mod code {
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// An environment variable is missing or wrong.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (stdin, the socket).
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Try again later: the agent is starting or unreachable.
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available: no address can be handed out (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Anything else.
    pub const INTERNAL: u32 = 999;
}
