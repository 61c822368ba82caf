//! `target/vagrant/dist`: what the VMs get, laid out by who may see it. Vagrant rsyncs `common`
//! to every VM, `nodes/<name>` to that node only and `control` to the control node only, so a
//! worker never holds the CA key or another node's token.
//!
//! Pods run as containers under containerd on every VM. No VM can fetch an image, so the images
//! are built and pushed here, into a registry's storage that `common/registry` carries to the
//! control node (its `docker-registry` serves it at `<control>:5000`); `common/containerd.toml`
//! is every VM's containerd config, made by the same code as the test harness's, with the name
//! `localhost:5000` mapped to that registry.
//!
//! The credentials are made here, on the host, before any VM boots (`skiff-control init`, then a
//! `mint-token` per node, and one for skiff-dns copied to every node, since its Pods may run on
//! any node): the provisioners only install them, so no VM has to reach another to
//! join and nothing secret is in the repository. They are kept until `down`, so `vagrant
//! provision` and a restarted control plane keep trusting the same CA.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use skiff_tests::Netns;
use skiff_tests::containerd::ContainerdDirs;
use skiff_tests::images::{self, REGISTRY_PORT, Registry};

use crate::shell::{self, run};

/// The binaries the VMs run, from the workspace's debug build.
const BINARIES: &[&str] = &[
    "skiff-control",
    "skiff-node",
    "skiff-cni",
    "skiff-test-server",
    "skiff-dns",
];

/// The BPF object's name where skiff-node looks for it (`/usr/lib/skiff/`).
const BPF_OBJECT: &str = "skiff-lb.bpf.o";

/// The dist folder.
pub fn dir() -> PathBuf {
    shell::root().join("target/vagrant/dist")
}

/// The admin kubeconfig (its server is the control node's private address).
pub fn admin_kubeconfig() -> PathBuf {
    dir().join("control/admin.kubeconfig")
}

/// Lays out `common` from the build output (binaries without their debug sections, which are
/// four fifths of their size, the BPF object, units, the demo) and the credentials of nodes
/// `1..=nodes`, minting only those missing.
pub fn assemble(nodes: usize, control_ip: Ipv4Addr, bpf_object: &Path) -> Result<()> {
    let root = shell::root();
    let common = dir().join("common");
    let bin = common.join("bin");
    let units = common.join("units");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&units)?;
    for name in BINARIES {
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(root.join("target/debug").join(name))
            .arg(bin.join(name)))?;
    }
    let kubectl = which("kubectl").context("kubectl is not on PATH: the VMs get the host's")?;
    copy(&kubectl, &bin.join("kubectl"))?;
    copy(bpf_object, &common.join(BPF_OBJECT))?;
    let deploy = root.join("deploy/vagrant");
    for entry in std::fs::read_dir(deploy.join("units"))? {
        let path = entry?.path();
        copy(&path, &units.join(path.file_name().expect("a file")))?;
    }
    for file in ["demo.yaml", "apply-demo.sh"] {
        copy(&deploy.join(file), &common.join(file))?;
    }
    copy(
        &root.join("deploy/addons/dns.yaml"),
        &common.join("dns.yaml"),
    )?;
    std::fs::write(
        common.join("containerd.toml"),
        containerd_config(control_ip),
    )?;
    registry_storage(&common.join("registry"))?;

    let control = dir().join("control");
    let skiff_control = bin.join("skiff-control");
    let server = format!("https://{control_ip}:6443");
    if !control.join("ca.crt").exists() {
        std::fs::create_dir_all(&control)?;
        run(Command::new(&skiff_control)
            .arg("--data-dir")
            .arg(&control)
            .args(["--advertise-address", &control_ip.to_string(), "init"]))?;
    }
    // skiff-dns's own credentials, kept with the others (and forgotten with them by `down`);
    // its Pods may land on any node, so every node gets a copy.
    let dns_kubeconfig = control.join("dns.kubeconfig");
    if !dns_kubeconfig.exists() {
        run(Command::new(&skiff_control)
            .arg("--data-dir")
            .arg(&control)
            .args([
                "mint-token",
                "--user",
                skiff_tests::dns::DNS_USER,
                "--server",
                &server,
            ])
            .arg("--kubeconfig")
            .arg(&dns_kubeconfig))?;
    }
    for n in 1..=nodes {
        let name = format!("node{n}");
        let kubeconfig = dir().join("nodes").join(&name).join("node.kubeconfig");
        std::fs::create_dir_all(kubeconfig.parent().expect("a folder"))?;
        copy(
            &dns_kubeconfig,
            &kubeconfig.with_file_name("dns.kubeconfig"),
        )?;
        if kubeconfig.exists() {
            continue;
        }
        run(Command::new(&skiff_control)
            .arg("--data-dir")
            .arg(&control)
            .args(["mint-token", "--user", &format!("system:node:{name}")])
            .args(["--group", "system:nodes", "--server", &server])
            .arg("--kubeconfig")
            .arg(&kubeconfig))?;
    }
    Ok(())
}

/// A VM's containerd config: Debian's places, CNI from /opt/cni/bin and /etc/cni/net.d (where
/// skiff-node writes its conflist), images named `localhost:5000/...` pulled from the control
/// node's registry.
fn containerd_config(control_ip: Ipv4Addr) -> String {
    let dirs = ContainerdDirs {
        root: "/var/lib/containerd".into(),
        state: "/run/containerd".into(),
        socket: "/run/containerd/containerd.sock".into(),
        cni_bin_dir: "/opt/cni/bin".into(),
        cni_conf_dir: "/etc/cni/net.d".into(),
    };
    skiff_tests::containerd::config_toml(&dirs, SocketAddr::from((control_ip, REGISTRY_PORT)))
}

/// Pushes the images into a registry run for the purpose (in a namespace of its own) and copies
/// its storage to `to`, as the control node's registry will serve it.
fn registry_storage(to: &Path) -> Result<()> {
    let images_run =
        skiff_tests::Run::start("vagrant-images", &shell::root().join("target/vagrant/logs"))?;
    let netns = Netns::create(&images_run.id().object("img"))?;
    let registry = Registry::start(
        &images_run,
        &netns,
        SocketAddr::from((Ipv4Addr::LOCALHOST, REGISTRY_PORT)),
    )?;
    for image in images::all_images()? {
        registry
            .push(&image)
            .with_context(|| format!("cannot push {}", image.reference))?;
    }
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("cannot remove {}", to.display()))?;
    }
    run(Command::new("cp")
        .arg("-a")
        .arg(registry.storage_dir())
        .arg(to))?;
    Ok(())
}

/// Forgets the cluster's credentials (the next `up` makes a new CA).
pub fn remove_credentials() -> Result<()> {
    for sub in ["control", "nodes"] {
        let path = dir().join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}
