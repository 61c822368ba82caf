//! The host side of the VMs: Vagrant and libvirt installed, and libvirtd running inside a
//! network namespace of its own.
//!
//! libvirt's networks are bridges, dnsmasq and iptables rules on the machine it runs on. Run in
//! `skiff-vagrant` (a namespace made for it, with only `lo` besides), they never touch the host's
//! own interfaces or firewall, and `down` removes them with the namespace. Vagrant runs in the same
//! namespace, since that is the only place the VMs can be reached from. There is no systemd on
//! these machines, so virtlogd and libvirtd are started by hand (pid files under /run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::shell::{probe, run};

/// The namespace libvirtd, Vagrant and the VMs' networks live in.
pub const NETNS: &str = "skiff-vagrant";

/// Debian packages Vagrant with libvirt (and the box build) needs; `qemu-system-x86` comes from
/// bookworm-backports to match the machine's qemu-utils.
const PACKAGES: &[&str] = &[
    "vagrant",
    "vagrant-libvirt",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "dnsmasq-base",
    "ebtables",
    "debootstrap",
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
    "fdisk",
    "rsync",
    "openssh-client",
];
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86"];
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/skiff-bookworm-backports.sources";
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";

/// Where the daemons' pid files go.
fn run_dir() -> PathBuf {
    PathBuf::from("/run").join(NETNS)
}

/// Installs what is missing; a no-op on a ready machine.
pub fn install() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .chain(BACKPORTS_PACKAGES)
        .copied()
        .filter(|p| !crate::setup::dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("vagrant, libvirt and qemu: present");
    } else {
        println!("missing: {}", missing.join(" "));
        if !has_backports_source() {
            std::fs::write(
                BACKPORTS_SOURCE,
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            )
            .with_context(|| format!("cannot write {BACKPORTS_SOURCE}"))?;
        }
        run(Command::new("apt-get").args(["update", "-q"]))?;
        let apt = |extra: &[&str], packages: &[&str]| -> Result<()> {
            let wanted: Vec<&str> = packages
                .iter()
                .copied()
                .filter(|p| missing.contains(p))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(extra)
                .args(wanted)
                .env("DEBIAN_FRONTEND", "noninteractive"))
        };
        apt(&[], PACKAGES)?;
        apt(&["-t", "bookworm-backports"], BACKPORTS_PACKAGES)?;
    }
    qemu_runs_as_root()
}

fn has_backports_source() -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files
        .iter()
        .filter(|f| {
            f.extension().is_some_and(|x| x == "list" || x == "sources")
                || f.ends_with("sources.list")
        })
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| {
            text.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
}

/// libvirt probes /dev/kvm as its `libvirt-qemu` user and then hangs defining a domain on
/// machines whose KVM it cannot use; QEMU as root avoids the probe.
fn qemu_runs_as_root() -> Result<()> {
    let text = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
    let set = |key: &str| {
        text.lines()
            .any(|l| l.trim().replace(' ', "") == format!("{key}=\"root\""))
    };
    if set("user") && set("group") {
        return Ok(());
    }
    let added = format!(
        "{text}\n# skiff: QEMU runs as root (libvirt otherwise probes /dev/kvm as libvirt-qemu).\n\
         user = \"root\"\ngroup = \"root\"\n"
    );
    std::fs::write(QEMU_CONF, added).with_context(|| format!("cannot write {QEMU_CONF}"))?;
    println!("{QEMU_CONF}: QEMU set to run as root");
    Ok(())
}

/// Makes the namespace and starts virtlogd and libvirtd in it, unless they already run.
pub fn start_libvirt() -> Result<()> {
    if !netns_exists() {
        skiff_tests::cmd::ip(&["netns", "add", NETNS])?;
        skiff_tests::cmd::ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    }
    std::fs::create_dir_all(run_dir())?;
    for (daemon, args) in [("virtlogd", vec!["-d"]), ("libvirtd", vec!["-d"])] {
        let pidfile = run_dir().join(format!("{daemon}.pid"));
        if daemon_pid(&pidfile).is_some() {
            continue;
        }
        if let Some(other) = probe(Command::new("pgrep").args(["-x", daemon])) {
            bail!(
                "a {daemon} not started by xtask runs (pid {}): stop it first, or drive Vagrant \
                 yourself with `vagrant up` in the checkout",
                other.trim()
            );
        }
        run(in_netns(daemon).args(&args).arg("-p").arg(&pidfile))?;
    }
    // libvirtd answers once its socket is up.
    skiff_tests::wait::retry(Duration::from_secs(30), || {
        skiff_tests::cmd::run(
            in_netns("virsh").args(["-c", "qemu:///system", "version"]),
            Duration::from_secs(10),
        )
        .map(drop)
    })
    .context("libvirtd did not answer")
}

/// Stops the daemons and removes the namespace; fine when none of it is there.
pub fn stop_libvirt() -> Result<()> {
    for daemon in ["libvirtd", "virtlogd"] {
        let pidfile = run_dir().join(format!("{daemon}.pid"));
        if let Some(pid) = daemon_pid(&pidfile) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    if netns_exists() {
        skiff_tests::cmd::ip(&["netns", "del", NETNS])?;
    }
    let _ = std::fs::remove_dir(run_dir());
    Ok(())
}

/// Is libvirtd (started by us) running?
pub fn libvirt_running() -> bool {
    daemon_pid(&run_dir().join("libvirtd.pid")).is_some()
}

fn daemon_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        .is_ok()
        .then_some(pid)
}

fn netns_exists() -> bool {
    Path::new("/run/netns").join(NETNS).exists()
}

/// `program` run inside the namespace.
pub fn in_netns(program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", NETNS, program]);
    command
}

/// `kvm` when the CPU offers hardware virtualisation to us (a `vmx` or `svm` flag and /dev/kvm),
/// else `qemu` (software emulation): nested "PVM" KVM, as on these machines, has /dev/kvm but no
/// such flag, and stock guest kernels hang under it. `SKIFF_LIBVIRT_DRIVER` overrides.
pub fn libvirt_driver() -> String {
    if let Ok(driver) = std::env::var("SKIFF_LIBVIRT_DRIVER") {
        return driver;
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        .unwrap_or(false);
    if flags && Path::new("/dev/kvm").exists() {
        "kvm".to_owned()
    } else {
        "qemu".to_owned()
    }
}

/// `virsh ARGS` against the namespace's libvirtd, within a minute; its stdout.
fn virsh(args: &[&str]) -> Result<String> {
    skiff_tests::cmd::run(
        in_netns("virsh").args(["-c", "qemu:///system"]).args(args),
        Duration::from_secs(60),
    )
}

/// Removes what `vagrant destroy` may leave: domains, networks and volumes named for skiff
/// (`skiff-*`, and the box's base volume), and the storage pool when nothing else is in it.
pub fn remove_leftovers() -> Result<()> {
    let names = |listing: String| -> Vec<String> {
        listing
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    };
    for domain in names(virsh(&["list", "--all", "--name"])?) {
        let domain = domain.as_str();
        if domain.starts_with("skiff-") {
            let _ = virsh(&["destroy", domain]);
            virsh(&["undefine", domain, "--remove-all-storage"])?;
            println!("removed domain {domain}");
        }
    }
    for network in names(virsh(&["net-list", "--all", "--name"])?) {
        let network = network.as_str();
        if network.starts_with("skiff-") {
            let _ = virsh(&["net-destroy", network]);
            virsh(&["net-undefine", network])?;
            println!("removed network {network}");
        }
    }
    if names(virsh(&["pool-list", "--all", "--name"])?).contains(&"default".to_owned()) {
        let _ = virsh(&["pool-refresh", "default"]);
        let volumes = virsh(&["vol-list", "default"]).unwrap_or_default();
        let mut others = 0;
        for volume in volumes
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next())
        {
            if volume.starts_with("skiff-") {
                virsh(&["vol-delete", "--pool", "default", volume])?;
                println!("removed volume {volume}");
            } else {
                others += 1;
            }
        }
        if others == 0 {
            let _ = virsh(&["pool-destroy", "default"]);
            virsh(&["pool-undefine", "default"])?;
            println!("removed storage pool default");
        }
    }
    Ok(())
}
