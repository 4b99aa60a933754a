//! petrel's gRPC API: the code generated from `proto/petrel/v1/*.proto`.
//!
//! The `.proto` files are the contract; every field is documented there.
#![allow(missing_docs, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("petrel.v1");
}
