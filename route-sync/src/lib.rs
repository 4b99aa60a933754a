//! Kernel FIB reconciler for petrel.
//!
//! [`route::diff`] compares the complete set of wanted routes with what the
//! kernel has and yields the changes, touching only routes carrying petrel's
//! routing protocol number. It knows nothing of BGP.

pub mod route;

pub use route::{Changes, KernelRoute, NextHop, Route, RouteKey, RouteKind, diff};
