//! Running the commands xtask is made of, printing each one first so a log shows what happened.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Prints a step header.
pub fn step(title: &str) {
    println!("\n==> {title}");
}

/// Runs `command`, echoing it, and fails unless it exits 0.
pub fn run(command: &mut Command) -> Result<()> {
    let line = skiff_tests::cmd::describe(command);
    println!("$ {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its stdout, or `None` if it cannot run or fails.
pub fn probe(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` from the toolchain running xtask, with no toolchain override leaking into it.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// `cargo +<toolchain>` through rustup, clean of the outer cargo's toolchain settings.
pub fn cargo_with(toolchain: &str) -> Command {
    with_toolchain("cargo", toolchain)
}

/// `rustc +<toolchain>` through rustup, clean of the outer cargo's toolchain settings.
pub fn rustc_with(toolchain: &str) -> Command {
    with_toolchain("rustc", toolchain)
}

fn with_toolchain(tool: &str, toolchain: &str) -> Command {
    let mut command = Command::new(tool);
    command.arg(format!("+{toolchain}"));
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO",
        "RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}

/// Is this process root?
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
