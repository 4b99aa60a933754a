//! petrel's BGP speaker.
//!
//! Today this crate holds the wire codec ([`wire`]) and the MRT reader ([`mrt`])
//! that tests, tools and `petrel decode` use to replay real BGP traffic. The
//! session state machine, RIBs and policy arrive with the speaker issue.

pub mod mrt;
pub mod wire;
