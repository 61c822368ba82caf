//! `cargo xtask vagrant up|test|down|dist|ssh|kubectl`: skiff on Linux VMs with Vagrant, as the
//! people it is for deploy it — a control node and workers running `skiff-control` and
//! `skiff-node` as systemd units — and a test of it on every change.
//!
//! Up builds the binaries on the host, lays out what each VM gets (`dist`), builds the box when
//! Vagrant has none of the current recipe, starts libvirtd in its own network namespace (`host`)
//! and runs `vagrant up` there. The Vagrantfile at the root is usable without xtask, too.

mod base_box;
mod checks;
mod dist;
mod host;
mod logs;
mod vms;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::{ebpf, setup, shell};
pub use vms::Settings;

#[derive(Args, Debug)]
pub struct VagrantArgs {
    #[command(subcommand)]
    command: VagrantCommand,
}

#[derive(Subcommand, Debug)]
enum VagrantCommand {
    /// Build, bring the VMs up (or update them), and show the demo Service answering.
    Up(Settings),
    /// Up, check the cluster in both proxy modes, then down (also after a failure).
    Test {
        #[command(flatten)]
        settings: Settings,
        /// Leave the VMs running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Run the test's checks against the VMs already up (left by `up` or `test --keep`).
    Check(Settings),
    /// Remove the VMs, their networks and storage, libvirtd's namespace and the credentials.
    Down(Settings),
    /// Only lay out target/vagrant/dist (binaries, credentials) for driving Vagrant by hand.
    Dist(Settings),
    /// Run a command on a VM as root, e.g. `ssh node1 -- curl -s 10.96.0.2`.
    Ssh {
        /// The VM.
        node: String,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// kubectl from the host with the cluster's admin credentials.
    Kubectl {
        /// kubectl's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn run(args: &VagrantArgs) -> Result<()> {
    if !shell::is_root() {
        bail!("the Vagrant commands run libvirt and need root");
    }
    match &args.command {
        VagrantCommand::Up(settings) => up(settings).map(drop),
        VagrantCommand::Test { settings, keep } => test(settings, *keep),
        VagrantCommand::Check(settings) => {
            let demo = checks::wait_for_demo(settings, Duration::from_secs(60))?;
            run_checks(settings, demo)
        }
        VagrantCommand::Down(settings) => down(settings),
        VagrantCommand::Dist(settings) => {
            build_dist(settings)?;
            println!("{}", dist::dir().display());
            Ok(())
        }
        VagrantCommand::Ssh { node, command } => {
            let out = vms::ssh(node, &command.join(" "), Duration::from_secs(600))?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                bail!("exited with {}", out.status);
            }
            Ok(())
        }
        VagrantCommand::Kubectl { args } => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            print!("{}", vms::kubectl(&args)?);
            Ok(())
        }
    }
}

/// Builds the binaries and the BPF object, and lays out dist.
fn build_dist(settings: &Settings) -> Result<()> {
    shell::step("vagrant: build");
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "-p",
        "skiff-control",
        "-p",
        "skiff-node",
        "-p",
        "skiff-cni",
        "-p",
        "skiff-tests",
        "--bins",
    ]))?;
    let object = ebpf::build()?;
    dist::assemble(settings.nodes, vms::node_ip(1), &object)
}

/// Brings the cluster up and shows the demo answering; returns the demo.
pub fn up(settings: &Settings) -> Result<checks::Demo> {
    let started = Instant::now();
    setup::run_all()?;
    shell::step("vagrant: Vagrant, libvirt and QEMU");
    host::install()?;
    build_dist(settings)?;
    shell::step("vagrant: the box");
    let box_name = base_box::ensure()?;
    shell::step(&format!(
        "vagrant: {} VMs ({} proxy, {}), libvirt driver {}",
        settings.nodes,
        settings.proxy_mode,
        settings.overlay,
        host::libvirt_driver()
    ));
    host::start_libvirt()?;
    let existing = shell::root()
        .join(".vagrant/machines/node1/libvirt/id")
        .exists();
    if !existing {
        // VMs this checkout does not know of (a run killed before its `down`) would hold the
        // names and addresses the new ones need.
        host::remove_leftovers()?;
        // A fresh console log per VM; libvirt appends to what is there.
        let console = shell::root().join("target/vagrant/console");
        let _ = std::fs::remove_dir_all(&console);
        std::fs::create_dir_all(&console)?;
    }
    let vms_started = Instant::now();
    vms::run_vagrant(settings, &box_name, &["up"], Duration::from_secs(40 * 60))?;
    if existing {
        // Already there: push the new build and settings.
        vms::run_vagrant(
            settings,
            &box_name,
            &["rsync"],
            Duration::from_secs(20 * 60),
        )?;
        vms::run_vagrant(
            settings,
            &box_name,
            &["provision"],
            Duration::from_secs(30 * 60),
        )?;
    }
    println!(
        "VMs up and provisioned in {:.0}s",
        vms_started.elapsed().as_secs_f64()
    );
    vms::write_ssh_config(settings, &box_name)?;

    shell::step("vagrant: the nodes and the demo");
    let demo = checks::wait_for_demo(settings, Duration::from_secs(15 * 60))?;
    print!("{}", vms::kubectl(&["get", "nodes", "-o", "wide"])?);
    print!("{}", vms::kubectl(&["get", "pods", "-o", "wide"])?);
    shell::step(&format!(
        "vagrant: curl the Service web (ClusterIP {}) on every VM",
        demo.cluster_ip
    ));
    show_curl_from_every_vm(settings, &demo)?;
    println!(
        "\n{} VMs up in {:.0}s (building included); Service web: ClusterIP {}, nodePort {}\n\n\
         on a VM:          cargo xtask vagrant ssh node1 -- curl -s {}\n\
         with Vagrant:     ip netns exec {} vagrant ssh node1 -c 'curl -s {}'\n\
         use kubectl:      cargo xtask vagrant kubectl get pods -o wide\n\
         \x20                 (or: ip netns exec {} kubectl --kubeconfig {} ...)\n\
         NodePort:         ip netns exec {} curl -s {}:{}\n\
         logs:             cargo xtask vagrant ssh node1 -- journalctl -u skiff-node\n\
         take it down:     cargo xtask vagrant down",
        settings.nodes,
        started.elapsed().as_secs_f64(),
        demo.cluster_ip,
        demo.node_port,
        demo.cluster_ip,
        host::NETNS,
        demo.cluster_ip,
        host::NETNS,
        dist::admin_kubeconfig().display(),
        host::NETNS,
        vms::node_ip(1),
        demo.node_port,
    );
    Ok(demo)
}

/// `curl` of the ClusterIP on every VM, printing the answers; fails unless Pods on more than
/// one VM answer each.
fn show_curl_from_every_vm(settings: &Settings, demo: &checks::Demo) -> Result<()> {
    let script = format!(
        "for i in $(seq 1 6); do curl -s --max-time 3 http://{}/; echo; done",
        demo.cluster_ip
    );
    for vm in settings.names() {
        let out = vms::ssh_ok(&vm, &script, Duration::from_secs(60))?;
        println!("{vm} $ curl http://{}/", demo.cluster_ip);
        let mut nodes = BTreeSet::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let pod = line.split_whitespace().next().unwrap_or_default();
            let node = demo.pods.get(pod).map_or("?", |(n, _)| n.as_str());
            nodes.insert(node.to_owned());
            println!("  {line}    (Pod on {node})");
        }
        if settings.nodes > 1 && nodes.len() < 2 {
            bail!("from {vm}, the Service was answered only from {nodes:?}");
        }
    }
    Ok(())
}

/// Up, every check in the chosen proxy mode, every check again in the other, then down.
pub fn test(settings: &Settings, keep: bool) -> Result<()> {
    let started = Instant::now();
    let result = up(settings).and_then(|demo| run_checks(settings, demo));
    if let Err(err) = &result {
        println!("\nvagrant test failed: {err:#}");
        logs::collect(settings);
    }
    if keep {
        println!("--keep: the VMs stay up (cargo xtask vagrant down removes them)");
    } else {
        let removed = down(settings);
        if result.is_ok() {
            removed?;
        } else if let Err(err) = removed {
            println!("and taking the VMs down failed too: {err:#}");
        }
    }
    result?;
    println!(
        "\nvagrant test passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One check of the cluster as it is.
type Check = fn(&Settings, &checks::Demo) -> Result<()>;

fn run_checks(settings: &Settings, demo: checks::Demo) -> Result<()> {
    let other = if settings.proxy_mode == "iptables" {
        "ebpf"
    } else {
        "iptables"
    };
    let mut demo = demo;
    for (round, mode) in [&settings.proxy_mode as &str, other]
        .into_iter()
        .enumerate()
    {
        if round > 0 {
            shell::step(&format!("vagrant test: switch every node to {mode}"));
            checks::switch_proxy_mode(settings, mode)?;
        }
        let checks: [(&str, Check); 5] = [
            ("ClusterIP from every VM", checks::cluster_ip_from_every_vm),
            (
                "ClusterIP from a Pod on every VM",
                checks::cluster_ip_from_a_pod_on_every_vm,
            ),
            (
                "the Service's name from a Pod on every VM",
                checks::service_name_from_a_pod_on_every_vm,
            ),
            (
                "NodePort on every VM address",
                checks::node_port_on_every_vm,
            ),
            (
                "systemctl restart skiff-node under a request loop",
                checks::agent_restart_under_loop,
            ),
        ];
        for (name, check) in checks {
            shell::step(&format!("vagrant test ({mode}): {name}"));
            check(settings, &demo).with_context(|| format!("{name} ({mode})"))?;
        }
        shell::step(&format!("vagrant test ({mode}): a Pod replaced"));
        demo = checks::pod_replaced(settings, &demo)
            .with_context(|| format!("a Pod replaced ({mode})"))?;
    }
    Ok(())
}

/// Removes everything up made; fine when nothing is up.
pub fn down(settings: &Settings) -> Result<()> {
    shell::step("vagrant: down");
    if host::libvirt_running() {
        let box_name = base_box::name()?;
        // Vagrant refuses when its machine folder and libvirt disagree (a run killed mid
        // `up`); what it could not destroy, virsh removes by name after.
        if let Err(err) = vms::run_vagrant(
            settings,
            &box_name,
            &["destroy", "--force"],
            Duration::from_secs(15 * 60),
        ) {
            println!("vagrant destroy: {err:#}; removing by name instead");
        }
        host::remove_leftovers()?;
    }
    host::stop_libvirt()?;
    for path in [".vagrant", "target/vagrant/ssh-config"] {
        let path = shell::root().join(path);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    dist::remove_credentials()?;
    println!("the VMs, their networks, storage and credentials are removed");
    Ok(())
}

/// What a finished `vagrant test` must not leave: libvirtd's namespace (with the VMs, networks
/// and daemons in it) and Vagrant's machine folder.
pub fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    if std::path::Path::new("/run/netns")
        .join(host::NETNS)
        .exists()
    {
        left.push(format!("network namespace {}", host::NETNS));
    }
    if shell::root().join(".vagrant/machines").exists() {
        left.push(".vagrant/machines".to_owned());
    }
    left
}
