//! IP address management for petrel, sans-IO: no Kubernetes client, no
//! runtime. The controller feeds plain model types in and writes the results
//! back to the API.
//!
//! - [`lb`]: LoadBalancer IPs for Services, from `LoadBalancerPool`s.
//! - [`pod`]: pod addresses, from `IPPool`s cut into blocks with node
//!   affinity, over a store of blocks written by compare-and-swap.

pub mod lb;
pub mod pod;
