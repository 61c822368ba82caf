//! skiff-cni: the CNI plugin.
//!
//! CNI 1.1 ADD/DEL/CHECK/STATUS/VERSION/GC, IPAM from the node's podCIDR, and the node-network
//! library (veth, routes, VXLAN). The plugin half is laid out by concern:
//! - [`spec`]: the protocol (environment, config, result, errors), pure data;
//! - [`ipam`]: addresses from the podCIDR, behind the [`ipam::IpamStore`] seam;
//! - [`link`]: the kernel (netlink, namespaces), behind the [`link::LinkOps`] seam;
//! - [`pod`]: how one Pod is wired (veth, addresses, routes, neighbour);
//! - [`plugin`]: the commands, tying the three together.
//!
//! The node-network half, [`network`], is what the node agent runs for cross-node reachability:
//! host-gw routes or a flannel-style VXLAN overlay, and egress masquerade.
//!
//! Both halves reach the kernel the same way, through [`netns`] (work on a thread inside a
//! network namespace) and [`netlink`] (the socket, errors and message parsing they share),
//! each behind its own narrow trait. Their fakes are two doors onto one in-memory kernel,
//! [`fake_kernel`], so both halves are tested against the same rules.

pub mod conflist;
pub mod fake_kernel;
pub mod ipam;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod plugin;
pub mod pod;
pub mod spec;

/// An error and its causes, joined with `: ` (for an error object's `details`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod testutil {
    use std::path::{Path, PathBuf};

    /// A private folder under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(label: &str) -> Self {
            static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("skiff-cni-{label}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
