//! skiff-node: the per-node agent.
//!
//! Registers the Node, runs Pods with a process runtime, calls the CNI plugin the way a
//! container runtime does, programs cross-node routes and hosts the service proxy in-process.
//! It arrives with its own issue; this crate holds the workspace's place for it.
