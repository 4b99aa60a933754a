//! IP address management for petrel, sans-IO: no Kubernetes client, no
//! runtime. The controller feeds plain model types in and writes the results
//! back to the API.
//!
//! - [`lb`]: LoadBalancer IPs for Services, from `LoadBalancerPool`s.
//!
//! Pod block allocation comes later.

pub mod lb;
