//! skiff-proxy: the service proxy.
//!
//! Trackers turn Services and EndpointSlices into a [`model::DesiredState`] (pure), and a
//! [`Dataplane`] makes the kernel match it. The split is kube-proxy's (see DESIGN.md §2): the
//! model decides *what* each Service means on this node once, so the iptables data plane here
//! and the eBPF one to come differ only in *how* they program it.

pub mod conntrack;
pub mod dataplane;
pub mod iptables;
pub mod model;

pub use dataplane::{Dataplane, DataplaneError, SyncReport};
pub mod healthcheck;
pub mod metrics;
pub mod proxy;
pub mod runner;
pub mod server;

pub use proxy::{Proxy, ProxyConfig, ProxyError};
pub mod explain;
