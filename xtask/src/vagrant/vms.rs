//! Driving the VMs: `vagrant` with the cluster's settings, and commands on a VM over ssh.
//!
//! Vagrant prints a progress bar as thousands of carriage-return updates; they are dropped from
//! what is shown, and the whole output is also kept in `target/vagrant/logs/`. Commands on VMs go
//! over plain ssh with the config `vagrant ssh-config` writes once: a `vagrant ssh` costs
//! seconds of Ruby start-up per call, ssh a fraction of one.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::host;
use crate::shell;

/// The first three octets of the VMs' private network (`SKIFF_NETWORK` in the Vagrantfile).
pub const NETWORK: [u8; 3] = [192, 168, 56];

/// What the cluster is made of; the Vagrantfile reads the same settings from the environment.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// How many VMs (node1 is the control node).
    #[arg(long, env = "SKIFF_NODES", default_value_t = 3)]
    pub nodes: usize,
    /// The Service proxy's data plane.
    #[arg(long, env = "SKIFF_PROXY_MODE", default_value = "iptables", value_parser = ["iptables", "ebpf"])]
    pub proxy_mode: String,
    /// How Pod traffic crosses between VMs.
    #[arg(long, env = "SKIFF_OVERLAY", default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    pub overlay: String,
}

impl Settings {
    /// What CI runs: three VMs over VXLAN, iptables first (the test switches to eBPF after).
    pub fn ci() -> Self {
        Settings {
            nodes: 3,
            proxy_mode: "iptables".to_owned(),
            overlay: "vxlan".to_owned(),
        }
    }

    /// The VMs' names.
    pub fn names(&self) -> Vec<String> {
        (1..=self.nodes).map(|n| format!("node{n}")).collect()
    }
}

/// Node `n`'s private address (node1: .11).
pub fn node_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(NETWORK[0], NETWORK[1], NETWORK[2], 10 + n as u8)
}

/// Where logs of the VMs and of Vagrant go.
pub fn log_dir() -> PathBuf {
    shell::root().join("target/vagrant/logs")
}

fn ssh_config() -> PathBuf {
    shell::root().join("target/vagrant/ssh-config")
}

/// `vagrant ARGS` in the namespace, with the cluster's settings.
pub fn vagrant(settings: &Settings, box_name: &str, args: &[&str]) -> Command {
    let mut command = host::in_netns("vagrant");
    command
        .args(args)
        .current_dir(shell::root())
        .env("VAGRANT_CWD", shell::root())
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("SKIFF_NODES", settings.nodes.to_string())
        .env("SKIFF_PROXY_MODE", &settings.proxy_mode)
        .env("SKIFF_OVERLAY", &settings.overlay)
        .env("SKIFF_BOX", box_name)
        .env("SKIFF_LIBVIRT_DRIVER", host::libvirt_driver());
    command
}

/// Runs `vagrant ARGS` within `timeout`, showing its output without progress bars and keeping
/// all of it in `logs/vagrant-<first arg>.log`; fails unless it exits 0.
pub fn run_vagrant(
    settings: &Settings,
    box_name: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<()> {
    std::fs::create_dir_all(log_dir())?;
    let log_path = log_dir().join(format!("vagrant-{}.log", args.first().unwrap_or(&"run")));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = vagrant(settings, box_name, args);
    let line = skiff_tests::cmd::describe(&command);
    println!("$ {line}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped");
    let printer = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            let _ = writeln!(log, "{}", text.replace('\r', ""));
            let shown: Vec<&str> = text
                .split("\x1b[K")
                .map(|part| part.trim_matches('\r'))
                .filter(|part| !part.is_empty() && !part.starts_with("Progress:"))
                .collect();
            if !shown.is_empty() {
                println!("{}", shown.join(""));
            }
        }
    });
    let status = skiff_tests::cmd::wait_bounded(&mut child, timeout)
        .with_context(|| format!("`{line}` did not finish in {timeout:?}"))?;
    let _ = printer.join();
    let errors = errors.join().unwrap_or_default();
    for error in &errors {
        eprintln!("{error}");
    }
    if !status.success() {
        bail!(
            "`{line}` failed ({status}); its output: {}",
            log_path.display()
        );
    }
    Ok(())
}

/// Writes the ssh config of every VM (once they are up).
pub fn write_ssh_config(settings: &Settings, box_name: &str) -> Result<()> {
    let out = skiff_tests::cmd::run(
        &mut vagrant(settings, box_name, &["ssh-config"]),
        Duration::from_secs(120),
    )?;
    std::fs::write(ssh_config(), out)?;
    Ok(())
}

/// Runs `script` with bash as root on VM `node`, within `timeout`.
pub fn ssh(node: &str, script: &str, timeout: Duration) -> Result<Output> {
    let mut command = host::in_netns("ssh");
    command
        .arg("-F")
        .arg(ssh_config())
        .args(["-o", "ConnectTimeout=20", node, "sudo", "bash", "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot ssh to {node}"))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(script.as_bytes())?;
    }
    skiff_tests::cmd::collect(child, timeout).with_context(|| format!("on {node}: {script}"))
}

/// [`ssh`], failing unless the script exits 0; returns its stdout.
pub fn ssh_ok(node: &str, script: &str, timeout: Duration) -> Result<String> {
    let out = ssh(node, script, timeout)?;
    if !out.status.success() {
        bail!(
            "on {node}, `{}` failed ({}): {}",
            script.trim(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl ARGS` from the host (in the namespace) with the admin kubeconfig.
pub fn kubectl(args: &[&str]) -> Result<String> {
    let mut command = host::in_netns("kubectl");
    command
        .arg("--kubeconfig")
        .arg(super::dist::admin_kubeconfig())
        .args(args);
    skiff_tests::cmd::run(&mut command, Duration::from_secs(60))
}

/// `kubectl get WHAT -o json`, parsed.
pub fn get_json(what: &[&str]) -> Result<serde_json::Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&kubectl(&args)?)?)
}
