//! `cargo xtask build-ebpf`: build the kernel-side programs and prove the kernel takes them.
//!
//! The programs build with the eBPF crate's pinned nightly for `bpfel-unknown-none`, linked by
//! bpf-linker. An object that merely exists proves little, so the check reads its ELF header
//! (machine must be EM_BPF) and, as root, loads every program through bpftool — the kernel's
//! verifier has the last word — into a harness run's bpffs folder that is removed afterwards.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::{setup, shell};

/// ELF `e_machine` for BPF.
const EM_BPF: u16 = 247;
/// The programs the object must contain, by function name.
const PROGRAMS: &[&str] = &["skiff_connect4"];

fn programs_dir() -> PathBuf {
    shell::root().join("ebpf/programs")
}

fn target_dir() -> PathBuf {
    shell::root().join("target/ebpf")
}

/// Builds the object; returns its path.
pub fn build() -> Result<PathBuf> {
    let pin = setup::nightly_pin()?;
    let linker_dir = setup::bpf_linker_path()
        .parent()
        .context("bpf-linker path has no folder")?
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(linker_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    run_ebpf_cargo(&pin, &["build", "--release"], &path)?;
    Ok(target_dir().join("bpfel-unknown-none/release/skiff"))
}

/// Clippy over the programs, for the bpf target, warnings denied.
pub fn clippy() -> Result<()> {
    let pin = setup::nightly_pin()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    run_ebpf_cargo(
        &pin,
        &["clippy", "--release", "--", "-D", "warnings"],
        &path,
    )
}

fn run_ebpf_cargo(pin: &str, args: &[&str], path: &std::ffi::OsStr) -> Result<()> {
    shell::run(
        shell::cargo_with(pin)
            .args(args)
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(programs_dir())
            .env("PATH", path),
    )
}

/// Builds the object and checks it: ELF machine, program sections, and (as root) a real load.
pub fn build_and_check() -> Result<PathBuf> {
    shell::step("build-ebpf: build the kernel-side programs");
    let object = build()?;
    check_elf(&object)?;
    if shell::is_root() {
        load_check(&object)?;
    } else {
        println!("not root: skipping the kernel load check");
    }
    Ok(object)
}

fn check_elf(object: &PathBuf) -> Result<()> {
    let bytes =
        std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    ensure!(
        bytes.len() > 20 && bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        object.display()
    );
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    ensure!(
        machine == EM_BPF,
        "{} is for ELF machine {machine}, not BPF ({EM_BPF})",
        object.display()
    );
    println!("{}: BPF ELF, {} bytes", object.display(), bytes.len());
    Ok(())
}

/// Loads every program with bpftool into a throw-away pin folder; the verifier must accept all.
fn load_check(object: &PathBuf) -> Result<()> {
    let log_root = shell::root().join("target/e2e-logs");
    let run = skiff_tests::Run::start("build-ebpf", &log_root)?;
    let pins = run.bpf_pin_dir()?;
    let progs = pins.join("progs");
    let loaded = Command::new("bpftool")
        .args(["prog", "loadall"])
        .arg(object)
        .arg(&progs)
        .output()
        .context("cannot run bpftool (is it installed? run `cargo xtask setup`)")?;
    if !loaded.status.success() {
        bail!(
            "the kernel refused {}: {}",
            object.display(),
            String::from_utf8_lossy(&loaded.stderr).trim()
        );
    }
    for program in PROGRAMS {
        let pinned = progs.join(program);
        let shown = shell::probe(
            Command::new("bpftool")
                .args(["prog", "show", "pinned"])
                .arg(&pinned),
        )
        .with_context(|| format!("program {program} was not loaded from {}", object.display()))?;
        ensure!(
            shown.contains("cgroup_sock_addr"),
            "program {program} loaded with an unexpected type: {}",
            shown.trim()
        );
        println!(
            "kernel accepted {program}: {}",
            shown.lines().next().unwrap_or("").trim()
        );
    }
    Ok(())
}
