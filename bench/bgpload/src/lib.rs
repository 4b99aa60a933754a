//! `bgpload`: a BGP load generator for the shared benchmark harness.
//!
//! It speaks the harness's tool protocol (`shared/bench/README.md`, "Another
//! load generator"): the modes `feed`, `sink` and `clients`, the same flags,
//! the stdin commands `go`, `withdraw`, `stats` and `quit`, and JSON events
//! stamped with CLOCK_MONOTONIC seconds, so
//! `BGPB_TOOL=target/release/bgpload python3 run.py ...` drives any device
//! with it. The feeder's table is `bgpwire.build_table_stream`'s for the same
//! seed, byte for byte. One thread drives thousands of route-reflector
//! clients, so the generator is not what a fast reflector waits for.

pub mod engine;
pub mod events;
pub mod pyrandom;
pub mod rxset;
pub mod wire;
