//! The operator's commands: what `petrel` does besides running the agent,
//! the controller and the lab.
//!
//! - [`client`]: `status`, `peers`, `peer`, `route`, `rib`, `explain` and
//!   `watch`, over a running agent's API; [`bfd`]: `bfd`.
//! - [`decode`]: `decode`, MRT captures through petrel's own codec
//!   ([`json`] renders the records).
//! - [`crds`]: `crds`, the CustomResourceDefinitions.
//! - [`ipam`]: `ipam show | check | release`, the pod address blocks.
//!
//! These functions are the command line's edge: they print, and return
//! `anyhow` errors for `main` to show.

pub mod bfd;
pub mod client;
pub mod crds;
pub mod decode;
pub mod ipam;
pub mod json;
mod rib_summary;
pub mod status;

pub use client::Format;
