//! skiff-control: the control plane, in one process.
//!
//! An apiserver that speaks the Kubernetes REST API ([`apiserver`]) — so kubectl, client-go and
//! kube-rs work unmodified — over a revisioned, watchable store ([`store`], embedded SQLite), with
//! a watch cache that fans each change out to every watcher ([`watch_cache`]). What differs
//! between kinds lives in one table ([`resources`]); Service addresses are allocated inside the
//! write ([`allocator`]), so no Service is stored without them. The scheduler and controllers
//! ([`controllers`]) run alongside but reach the apiserver only through its API, as
//! kube-scheduler and kube-controller-manager do, so any of them could serve a real cluster.

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
