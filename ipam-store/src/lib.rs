//! Where pod address blocks are kept, behind [`ipam::pod::BlockStore`]:
//!
//! - [`KubeBlocks`]: one `IPAMBlock` object per block in the Kubernetes API.
//!   A create is a claim (one of several racing nodes succeeds), every
//!   replace names the `resourceVersion` it read, every delete carries
//!   preconditions on `resourceVersion` and `uid`.
//! - [`FileBlocks`]: the same blocks in one local JSON file, for a host or a
//!   lab without a cluster: every write under an exclusive lock, written to
//!   a temporary file and renamed over the old one.
//!
//! Both keep blocks in the `IPAMBlock.spec` form ([`to_spec`],
//! [`from_spec`]), so a state file reads like the objects.

mod convert;
mod file;
mod kube;

pub use convert::{SpecError, from_spec, to_spec};
pub use file::FileBlocks;
pub use kube::KubeBlocks;
