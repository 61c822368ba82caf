//! The network-namespace cluster harness.
//!
//! Every end-to-end test, and `cargo xtask up`, builds its cluster out of network namespaces on
//! this one machine: an underlay bridge inside a namespace of its own, one namespace per node
//! plugged into it, and optionally a veth from the host so a user can reach the control plane.
//! Everything a run makes is named `sk-<run id>-...` and recorded under [`run::STATE_ROOT`], so
//! it is removed when the run ends, after a panic too, and a run that was killed is swept by the
//! next one. Nothing here touches the host's own routes, addresses or firewall: the only thing a
//! run may add to the host is the optional host link, named `sk-<run id>-h`.

pub mod alloc_count;
pub mod binaries;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod connect_latency;
pub mod containerd;
pub mod dns;
pub mod images;
pub mod kernelfs;
pub mod netns;
pub mod objects;
pub mod podnet;
pub mod process;
pub mod run;
pub mod throughput;
pub mod topology;
pub mod udp_loop;
pub mod wait;

pub use client::Client;
pub use cluster::{Cluster, ClusterOptions, Runtime};
pub use cni::{Chain, Pod};
pub use netns::Netns;
pub use process::Process;
pub use run::{Run, RunId};
pub use topology::{Node, Topology, TopologyOptions};
pub use udp_loop::UdpLoop;
