//! skiff-proxy: the service proxy.
//!
//! Trackers turn Services and EndpointSlices into a `DesiredState` (pure), and a `Dataplane`
//! (iptables or eBPF) makes the kernel match it. It arrives with its own issue; this crate holds
//! the workspace's place for it.
