//! Kernel FIB reconciler for petrel.
//!
//! [`route::diff`] compares the complete set of wanted routes with what the
//! kernel has and yields the changes, touching only routes carrying petrel's
//! routing protocol number (201 by default). [`Kernel`] speaks rtnetlink with
//! many requests in flight; [`Reconciler`] is the task that adopts existing
//! routes on start, applies only differences, and repairs drift it sees on the
//! netlink monitor. It knows nothing of BGP.
//!
//! So that `ip route` shows `proto petrel`, add to
//! `/etc/iproute2/rt_protos.d/petrel.conf`:
//!
//! ```text
//! 201 petrel
//! ```

pub mod filter;
pub mod kernel;
pub mod reconcile;
pub mod route;
pub mod table;
pub mod tunnel;
pub mod wireguard;

pub use kernel::{Applied, Kernel, KernelError};
pub use reconcile::{Options, Reconciler, Report};
pub use route::{Changes, KernelRoute, NextHop, Route, RouteKey, RouteKind, diff, diff_maps};
pub use table::{RouteTable, View};
pub use tunnel::{EntryChanges, TunnelDevice, TunnelKind, link_message};
