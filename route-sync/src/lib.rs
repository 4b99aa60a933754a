//! Kernel FIB reconciler for petrel.
//!
//! Empty for now: the route-sync issue fills it with the rtnetlink reconciler, the
//! netlink monitor and the tunnel devices. It will never depend on BGP types.
