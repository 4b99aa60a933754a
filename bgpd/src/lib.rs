//! petrel's BGP speaker.
//!
//! - [`wire`]: the BGP-4 codec.
//! - [`mrt`]: the MRT reader that tests, tools and `petrel decode` use to replay
//!   real BGP traffic.
//! - [`fsm`]: the session state machine, sans-IO.

pub mod fsm;
pub mod mrt;
pub mod wire;
