//! `cargo xtask setup`: make a fresh Debian 12 machine ready, and do nothing on a ready one.
//!
//! Each step checks first and says what it found, so a second run takes seconds. The nightly
//! toolchain comes from the eBPF crate's own pin (`ebpf/programs/rust-toolchain.toml`), and
//! bpf-linker is built against that nightly's LLVM, so the two can never drift apart.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell::{self, probe, run};

/// Debian packages the harness, the data planes and the tests use.
pub const APT_PACKAGES: &[&str] = &[
    "iptables",
    "nftables",
    "iproute2",
    "iputils-ping",
    "conntrack",
    "curl",
    "socat",
    "iperf3",
    "bpftool",
    "etcd-server",
    "etcd-client",
    "containernetworking-plugins",
    // protoc, for the CRI client's generated code (k8s-cri's build script).
    "protobuf-compiler",
    // Real containers: the runtime the node agent drives over CRI, the local registry images
    // are pulled from, and the one-file userland the debugging image is made of.
    "containerd",
    "runc",
    "docker-registry",
    "busybox-static",
    // DNS: dig for the tests, NSD as the upstream test clusters forward to, and NSD, Unbound and
    // dnsperf for `cargo xtask bench dns`. The harness starts them itself, on its own addresses.
    "bind9-dnsutils",
    "nsd",
    "unbound",
    "dnsperf",
];

/// The official Python client the API tests drive (installed into `target/pyvenv`).
const PYTHON_KUBERNETES: &str = "kubernetes==37.0.2";

/// The bpf-linker release that works with the pinned nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step.
pub fn run_all() -> Result<()> {
    let started = std::time::Instant::now();
    shell::step("setup: [1/5] Debian packages");
    apt_packages()?;
    shell::step("setup: [2/5] rustfmt and clippy for the stable toolchain");
    stable_components()?;
    shell::step("setup: [3/5] the eBPF crate's pinned nightly");
    let pin = nightly_pin()?;
    nightly(&pin)?;
    shell::step("setup: [4/5] bpf-linker against the nightly's LLVM");
    bpf_linker(&pin)?;
    shell::step("setup: [5/5] the Python kubernetes client, in target/pyvenv");
    python_client()?;
    println!("\nsetup: done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        println!("all {} packages present", APT_PACKAGES.len());
        return Ok(());
    }
    println!("missing: {}", missing.join(" "));
    if !shell::is_root() {
        bail!("installing Debian packages needs root: run `cargo xtask setup` as root");
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // Debian starts the DNS servers it installs, on the host's port 53; the harness runs its
    // own, so on a machine with systemd they are stopped and left disabled.
    if Path::new("/run/systemd/system").exists() {
        for service in ["nsd", "unbound"].iter().filter(|s| missing.contains(s)) {
            let _ = probe(Command::new("systemctl").args(["disable", "--now", service]));
        }
    }
    let still: Vec<&str> = missing.into_iter().filter(|p| !dpkg_installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

pub fn dpkg_installed(pkg: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Abbrev}", pkg]))
        .is_some_and(|status| status.starts_with("ii"))
}

fn stable_components() -> Result<()> {
    for (component, check) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if probe(shell::cargo().args([check, "--version"])).is_some() {
            println!("{component}: present");
        } else {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// The nightly named in `ebpf/programs/rust-toolchain.toml`.
pub fn nightly_pin() -> Result<String> {
    let path = shell::root().join("ebpf/programs/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no channel in {}", path.display()))
}

fn nightly(pin: &str) -> Result<()> {
    let installed = probe(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with(&format!("{pin}-"))));
    let has_src = installed
        && probe(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            pin,
        ]))
        .is_some_and(|list| {
            ["rust-src", "clippy"]
                .iter()
                .all(|c| list.lines().any(|l| l.starts_with(c)))
        });
    if has_src {
        println!("{pin} with rust-src and clippy: present");
        return Ok(());
    }
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        pin,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
}

fn bpf_linker(pin: &str) -> Result<()> {
    let sysroot = probe(shell::rustc_with(pin).args(["--print", "sysroot"]))
        .context("cannot find the pinned nightly's sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    // bpf-linker loads the nightly's libLLVM at run time; rustc finds it there, and so do we.
    if let Some(version) = probe(
        Command::new(bpf_linker_path())
            .arg("--version")
            .env("LD_LIBRARY_PATH", &lib_dir),
    ) && version.contains(BPF_LINKER_VERSION)
    {
        println!("{}: present", version.trim());
        return Ok(());
    }
    let rustc = probe(shell::rustc_with(pin).arg("-vV"))
        .context("cannot ask the pinned nightly's rustc for its LLVM version")?;
    let llvm_major = rustc
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("the pinned rustc does not say which LLVM it has")?
        .to_owned();
    let llvm_lib = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| format!("no libLLVM in {}", lib_dir.display()))?;
    // A stable prefix whose lib/libLLVM.so is the nightly's own LLVM, as llvm-sys expects.
    let prefix = cargo_home().join("skiff-llvm").join(pin);
    let link = prefix.join("lib/libLLVM.so");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm_lib, &link)
        .with_context(|| format!("cannot link {}", link.display()))?;
    println!("LLVM {llvm_major} from {}", llvm_lib.display());
    run(shell::cargo_with(pin)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
}

fn python_client() -> Result<()> {
    let venv = shell::root().join("target/pyvenv");
    let python = venv.join("bin/python");
    let wanted = PYTHON_KUBERNETES.split("==").nth(1).unwrap_or_default();
    if let Some(version) = probe(
        Command::new(&python).args(["-c", "import kubernetes; print(kubernetes.__version__)"]),
    ) && version.trim() == wanted
    {
        println!("kubernetes {wanted}: present");
        return Ok(());
    }
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PYTHON_KUBERNETES,
    ]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

/// Where `cargo install` put bpf-linker.
pub fn bpf_linker_path() -> PathBuf {
    cargo_home().join("bin/bpf-linker")
}
