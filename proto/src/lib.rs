//! petrel's gRPC API: the `.proto` files and the code generated from them.
//!
//! Empty for now: the speaker issue adds the first read-only services and the API
//! issue the rest.
