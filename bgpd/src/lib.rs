//! petrel's BGP speaker.
//!
//! - [`wire`]: the BGP-4 codec.
//! - [`mrt`]: the MRT reader that tests, tools and `petrel decode` use to replay
//!   real BGP traffic.
//! - [`fsm`]: the session state machine, sans-IO.
//! - [`rib`]: Adj-RIBs-In, Loc-RIB, update groups and the decision process, sans-IO.
//! - [`policy`]: the rules that import and export policies run.
//! - `attrs`: a route's path-attribute set, which the RIB stores and policy
//!   rewrites (public as [`rib::Attrs`]).
//! - [`session`]: tokio tasks that run one peer's machine over TCP.
//! - [`speaker`]: the task that owns the RIB and the peers, and its handle.
//! - [`journal`]: the numbered, buffered events behind `WatchEvents`.

mod attrs;
mod bigmap;
pub mod fsm;
pub mod journal;
pub mod mrt;
pub mod policy;
mod prefixmap;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod wire;
