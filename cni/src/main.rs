//! skiff-cni: the CNI plugin binary, as a container runtime executes it.
//!
//! Reads `CNI_*` from the environment and the network config from stdin, prints a result or an
//! error object on stdout, and exits non-zero on error (CNI spec 1.1.0). All logic lives in the
//! library; this file only plugs in the real kernel ([`RealNamespaces`]) and the on-disk IPAM
//! store ([`DiskStore`]).

use std::io::{Read, Write};
use std::process::ExitCode;

use skiff_cni::ipam::DiskStore;
use skiff_cni::link::RealNamespaces;
use skiff_cni::plugin::Plugin;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("skiff-cni: cannot read stdin: {err}");
    }
    let plugin = Plugin::new(RealNamespaces, |dir: &std::path::Path| DiskStore::open(dir));
    let response = plugin.execute(|key| std::env::var(key).ok(), &stdin);
    if let Some(json) = response.stdout {
        let mut out = std::io::stdout().lock();
        // A runtime that closed our stdout cannot be told anything more; the exit code remains.
        let _ = writeln!(out, "{json}").and_then(|()| out.flush());
    }
    if response.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
