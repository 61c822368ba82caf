//! skiff-node: the per-node agent.
//!
//! Registers the Node and keeps it alive (Lease + status), waits for its podCIDR, and — as the
//! node agent issue progresses — runs Pods with the process runtime, wires them through the
//! CNI plugin chain and hosts the node network and the service proxy.

pub mod cni;
pub mod facts;
pub mod heartbeat;
pub mod images;
pub mod network;
pub mod pods;
pub mod register;
pub mod runtime;
pub mod sandbox;
pub mod shim;
