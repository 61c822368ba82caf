//! The CNI protocol as the spec (1.1.0) writes it: environment, network configuration, results
//! and error objects, with the conversions between versions.
//!
//! Everything here is pure data and parsing: no file, no kernel, no process state. The plugin
//! (`crate::plugin`) feeds it `CNI_*` variables and stdin and gets typed values or a spec error
//! back, so every rule about what a runtime may send is tested without root. We accept configs
//! of 0.4.0, 1.0.0 and 1.1.0 — the versions containerd, CRI-O and Multus send today — and answer
//! in the version the config asked for, as the spec requires of a plugin in a chain.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use config::{Dns, NetConf, PodCidr};
pub use env::{CniEnv, Command};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Interface, IpConfig, Route};
pub use version::CniVersion;
