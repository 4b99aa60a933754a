//! petrel's CNI IPAM plugin, `petrel-ipam`, and the protocol between it
//! and the node agent.
//!
//! The container runtime runs the main plugin (`ptp`, `bridge`, ...), which
//! runs `petrel-ipam` for addresses. The plugin holds no state: it forwards
//! each call over the agent's unix socket ([`wire`]) as one JSON line and
//! turns the one-line answer into a CNI result or a CNI error object
//! ([`plugin`]). The agent does the allocation.

pub mod install;
pub mod plugin;
pub mod wire;
