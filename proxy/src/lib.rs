//! skiff-proxy: the service proxy.
//!
//! Trackers turn Services and EndpointSlices into a [`model::DesiredState`] (pure), and a
//! [`Dataplane`] makes the kernel match it. The split is kube-proxy's (see DESIGN.md §2): the
//! model decides *what* each Service means on this node once, so the iptables and eBPF data
//! planes differ only in *how* they program it. [`Proxy::run`] is what both
//! the `skiff-proxy` binary and `skiff-node` (in-process) run.

pub mod conntrack;
pub mod dataplane;
pub mod ebpf;
pub mod explain;
pub mod healthcheck;
pub mod iptables;
pub mod metrics;
pub mod mode;
pub mod model;
pub mod proxy;
pub mod runner;
pub mod server;

pub use dataplane::{Dataplane, DataplaneError, SyncReport};
pub use mode::{EbpfPaths, ModeConfig, ModeError, NodeDataplane, ProxyMode};
pub use proxy::{Proxy, ProxyConfig, ProxyError};
