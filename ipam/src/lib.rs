//! IP address management for petrel: pod block and LoadBalancer pool allocators.
//!
//! Empty for now: filled by the Kubernetes issue (LoadBalancer allocation) and the
//! IPAM work that follows it.
