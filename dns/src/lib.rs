//! skiff-dns: the cluster DNS add-on. It watches Services and EndpointSlices through the
//! Kubernetes API like any add-on (CoreDNS's `kubernetes` plugin is the model), answers for the
//! cluster zone from what it saw, and forwards every other name to the node's resolvers
//! through a cache.

pub mod index;
pub mod zone;
