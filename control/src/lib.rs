//! skiff-control: the control plane.
//!
//! An apiserver that speaks the Kubernetes REST API — so kubectl, client-go, the Python client
//! and kube-rs work unmodified — over a revisioned, watchable store (`store`), with a watch
//! cache that fans changes out to every watcher (`watch_cache`). The scheduler and controllers
//! arrive with their own issue and talk to it through the same API.

pub mod allocator;
pub mod apiserver;
pub mod auth;
pub mod controllers;
pub mod data_dir;
pub mod kubernetes_service;
pub mod metrics;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod time;
pub mod validation;
pub mod watch_cache;
