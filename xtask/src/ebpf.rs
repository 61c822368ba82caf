//! `cargo xtask build-ebpf`: build the kernel-side programs and prove the kernel takes them.
//!
//! The programs build with the eBPF crate's pinned nightly for `bpfel-unknown-none`, linked by
//! bpf-linker. An object that merely exists proves little, so the check reads its ELF header
//! (machine must be EM_BPF) and, as root, loads every program through aya — the kernel's
//! verifier has the last word — into a harness run's bpffs folder that is removed afterwards.
//! The socket terminator's kfunc call is resolved first, as the proxy does; a kernel without
//! the kfunc skips that one program (the proxy runs without it there too).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use skiff_ebpf_common::nodeport::{
    EXT_AFFINITY_MAP, EXT_SERVICES_MAP, EXT_SLOTS_MAP, EXT_SOURCES_MAP, NAT_MAP, TC_EGRESS_PROGRAM,
    TC_INGRESS_PROGRAM,
};
use skiff_ebpf_common::sockterm::{SOCK_TERM_PROGRAM, resolve_for_kernel};

use crate::{setup, shell};

/// ELF `e_machine` for BPF.
const EM_BPF: u16 = 247;
/// The programs the object must contain, by function name.
const PROGRAMS: &[&str] = &skiff_ebpf_common::PROGRAMS;

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

/// Loads the object with aya (as the proxy does: legacy pinned maps, which bpftool's libbpf no
/// longer reads) into a throw-away pin folder and loads every program: the verifier must accept
/// all of them.
fn load_check(object: &PathBuf) -> Result<()> {
    let log_root = shell::root().join("target/e2e-logs");
    let run = skiff_tests::Run::start("build-ebpf", &log_root)?;
    let pins = run.bpf_pin_dir()?;
    let mut bytes =
        std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    let btf = aya::Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
    let kfunc = resolve_for_kernel(&mut bytes, &btf);
    if let Ok(found) = kfunc {
        ensure!(
            found > 0,
            "{SOCK_TERM_PROGRAM} has no bpf_sock_destroy call to resolve"
        );
    }
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .default_map_pin_directory(&pins)
        .load(&bytes)
        .with_context(|| format!("cannot load {}", object.display()))?;
    for program in PROGRAMS {
        let prog: &mut aya::programs::CgroupSockAddr = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} is missing from {}", object.display()))?
            .try_into()
            .with_context(|| format!("program {program} is not a cgroup_sock_addr program"))?;
        prog.load()
            .map_err(|e| anyhow::anyhow!("the kernel refused {program}: {e:?}"))?;
        println!("kernel accepted {program}");
    }
    for program in [TC_INGRESS_PROGRAM, TC_EGRESS_PROGRAM] {
        let prog: &mut aya::programs::SchedClassifier = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} is missing from {}", object.display()))?
            .try_into()
            .with_context(|| format!("program {program} is not a TC classifier"))?;
        prog.load()
            .map_err(|e| anyhow::anyhow!("the kernel refused {program}: {e:?}"))?;
        println!("kernel accepted {program}");
    }
    match kfunc {
        Ok(_) => {
            let prog: &mut aya::programs::Iter = ebpf
                .program_mut(SOCK_TERM_PROGRAM)
                .with_context(|| format!("program {SOCK_TERM_PROGRAM} is missing"))?
                .try_into()
                .with_context(|| format!("program {SOCK_TERM_PROGRAM} is not an iterator"))?;
            prog.load("udp", &btf)
                .map_err(|e| anyhow::anyhow!("the kernel refused {SOCK_TERM_PROGRAM}: {e:?}"))?;
            println!("kernel accepted {SOCK_TERM_PROGRAM}");
        }
        Err(e) => println!("kernel has no bpf_sock_destroy ({e}): skipping {SOCK_TERM_PROGRAM}"),
    }
    let nodeport_maps = [
        EXT_SERVICES_MAP,
        EXT_SLOTS_MAP,
        EXT_SOURCES_MAP,
        EXT_AFFINITY_MAP,
        NAT_MAP,
    ];
    for map in skiff_ebpf_common::MAPS.iter().chain(&nodeport_maps) {
        ensure!(
            pins.join(map).exists(),
            "map {map} was not pinned under {}",
            pins.display()
        );
    }
    Ok(())
}
