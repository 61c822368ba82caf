//! skiff-cni: the CNI plugin.
//!
//! CNI 1.1 ADD/DEL/CHECK/STATUS/VERSION/GC, IPAM from the node's podCIDR, and the node-network
//! library (veth, routes, VXLAN). It arrives with its own issue; this crate holds the workspace's
//! place for it.

pub mod network;
