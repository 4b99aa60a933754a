//! petrel's Kubernetes custom resource types (group `petrel.dev`).
//!
//! Empty for now: the Kubernetes issue fills it with the `CustomResource` types
//! and the CRD YAML generator.
