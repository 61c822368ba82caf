//! skiff-dns: the cluster DNS add-on. It watches Services and EndpointSlices through the
//! Kubernetes API like any add-on (CoreDNS's `kubernetes` plugin is the model), answers for the
//! cluster zone from what it saw, and forwards every other name to the node's resolvers
//! through a cache.
//!
//! The path of a request: [`serve`] receives it, [`handler`] checks it and asks [`zone`] (which reads [`index`], fed
//! by [`watch`]) or [`forward`] (through [`cache`]); all of them speak [`reply::Reply`].

pub mod cache;
pub mod forward;
pub mod handler;
pub mod index;
pub mod metrics;
pub mod reply;
pub mod serve;
pub mod watch;
pub mod zone;
