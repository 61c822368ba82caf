//! The workspace's own binaries (skiff-control, skiff-node, ...), as built by cargo.
//!
//! Tests in this crate run them as a user would; `cargo xtask test` builds them first.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

/// The workspace's `target` folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// `target/debug/<name>`; fails with the command that builds it when it is missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("debug").join(name);
    ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --bins` (cargo xtask test does)",
        path.display()
    );
    Ok(path)
}

/// `target/release/<name>`, for benchmarks; fails with the command that builds it when missing.
pub fn release_binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("release").join(name);
    ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release --bins`",
        path.display()
    );
    Ok(path)
}

/// The CNI plugin, `target/debug/skiff-cni` (`cargo build -p skiff-cni` builds it).
pub fn skiff_cni() -> Result<PathBuf> {
    binary("skiff-cni")
}

/// The Python interpreter of the venv `cargo xtask setup` makes (with the `kubernetes` client).
pub fn python() -> Result<PathBuf> {
    let path = target_dir().join("pyvenv/bin/python");
    ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    Ok(path)
}
