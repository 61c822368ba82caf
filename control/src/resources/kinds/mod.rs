//! One module per served kind: its names, its place in the API and its [`Strategy`]. Adding a
//! kind is adding a module here and its line in [`RESOURCES`](super::RESOURCES).
//!
//! [`Strategy`]: super::Strategy

pub mod deployment;
pub mod endpoint_slice;
pub mod endpoints;
pub mod event;
pub mod lease;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod replica_set;
pub mod service;
