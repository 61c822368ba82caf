//! skiff-node: the per-node agent, kubelet's job plus the node network and the service proxy.
//!
//! It registers the Node and keeps it alive (Lease + status, NotReady while the runtime is not),
//! waits for its podCIDR, and runs the Pods bound to it: a worker per Pod ([`pods`]) drives a
//! [`runtime`] — containerd over CRI, or host processes for fast tests — which wires each
//! sandbox through the CNI plugin chain ([`cni`]). Beside the Pods it keeps the cross-node
//! routes or VXLAN overlay ([`network`]) and hosts the service proxy in-process.

pub mod cni;
pub mod facts;
pub mod heartbeat;
pub mod images;
pub mod network;
pub mod podns;
pub mod pods;
pub mod register;
pub mod runtime;
pub mod sandbox;
pub mod shim;
