//! `cargo xtask exec`: run a command inside a Pod's or a node's network namespace (and cgroup)
//! of the cluster `cargo xtask up` left running, the way `kubectl exec` would with containers.
//! A Pod on containerd is entered whole: the namespaces (mount, UTS, IPC, network, PID) and
//! cgroup of its first application container, so it sees the container's own filesystem. A Pod
//! of the process runtime is entered as its containers start: its network, mount and UTS
//! namespaces (its own resolv.conf, /etc/hosts and hostname) and its cgroup.
//!
//! ```text
//! cargo xtask exec web-648d95fdf6-2fxc9 -- curl -s 10.96.0.2
//! cargo xtask exec --node node2 -- ip route
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_common::placement::{Placement, start_placed};
use skiff_tests::{Netns, kernelfs, run};

use crate::shell;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Run on this node (`node1`, ...) instead of in a Pod.
    #[arg(long, conflicts_with = "pod")]
    node: Option<String>,
    /// The Pod's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The Pod.
    #[arg(required_unless_present = "node")]
    pod: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(args: &ExecArgs) -> Result<()> {
    let id = match run::detached_runs().as_slice() {
        [id] => id.clone(),
        [] => bail!("no cluster is up: `cargo xtask up` first"),
        _ => bail!("several clusters are up: `cargo xtask down` and up again"),
    };
    let cgroups = kernelfs::cgroup2_mount()
        .context("no cgroup v2 hierarchy is mounted")?
        .join(id.object("cg"));
    // The node's cgroup stands for its root cgroup, a Pod's for its containers': in eBPF mode
    // only processes inside them see Service addresses translated.
    let (netns, cgroup, uid) = match (&args.node, &args.pod) {
        (Some(node), _) => {
            let n = node
                .strip_prefix("node")
                .filter(|n| n.parse::<usize>().is_ok())
                .with_context(|| format!("nodes are named node1, node2, ...: not {node:?}"))?;
            (id.object(&format!("n{n}")), cgroups.join(node), None)
        }
        (None, Some(pod)) => {
            let kubeconfig = shell::root().join("target/skiff-up/admin.kubeconfig");
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "pod", pod, "-n", &args.namespace])
                .args(["-o", "jsonpath={.spec.nodeName} {.metadata.uid}"])
                .output()
                .context("cannot run kubectl")?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (node, uid) = text
                .split_once(' ')
                .filter(|(node, _)| !node.is_empty())
                .with_context(|| format!("pod {pod} is not on a node yet"))?;
            (
                id.object(&format!("{node}-{uid}")),
                cgroups.join(node).join(format!("pod-{uid}")),
                Some(uid.trim().to_owned()),
            )
        }
        (None, None) => bail!("name a Pod or --node"),
    };
    let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
    if let Some((container_cgroup, pid)) = app_container(&cgroup) {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &pid.to_string(), "-m", "-u", "-i", "-n", "-p", "--"])
            .args(&argv);
        let status = in_cgroup(command, &container_cgroup)?
            .status()
            .context("cannot run nsenter")?;
        std::process::exit(status.code().unwrap_or(1))
    }
    let (mntns, utsns) = uid.as_deref().map(pod_pins).unwrap_or_default();
    let netns = Netns::existing(&netns);
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    let place = Placement {
        netns: Some(netns.path()),
        mntns: mntns.as_deref(),
        utsns: utsns.as_deref(),
        cgroup: Some(&cgroup),
    };
    start_placed(&mut command, &place)?;
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", args.command[0]))?;
    std::process::exit(status.code().unwrap_or(1))
}

/// The pins of a process-runtime Pod's mount and UTS namespaces, `<node root>/pods/<uid>/ns/`,
/// found among the mounts below the cluster's folder (the uid is the Pod's alone).
fn pod_pins(uid: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mounts = kernelfs::mounts_below(&[shell::root().join("target/skiff-up")]);
    let pin = |kind: &str| {
        let tail = Path::new("pods").join(uid).join("ns").join(kind);
        mounts.iter().find(|point| point.ends_with(&tail)).cloned()
    };
    (pin("mnt"), pin("uts"))
}

/// A containerd Pod's cgroup holds one per container: the first whose process is not the
/// sandbox's pause, and that process.
fn app_container(pod_cgroup: &Path) -> Option<(PathBuf, u32)> {
    kernelfs::container_cgroups(pod_cgroup)
        .into_iter()
        .find(|(_, pid)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !cmdline.starts_with(b"/pause")
        })
}

/// `command`, started inside the cgroup `dir`.
fn in_cgroup(mut command: Command, dir: &Path) -> Result<Command> {
    skiff_common::placement::start_inside(&mut command, None, Some(dir))?;
    Ok(command)
}
