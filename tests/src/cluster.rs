//! A skiff cluster on a [`Topology`]: skiff-control on the underlay's bridge address and a
//! skiff-node agent in every node's namespace, each with credentials of its own minted the way
//! an operator would (`skiff-control mint-token`). Tests and `cargo xtask up` start the same
//! thing; `kubectl` runs inside a node's namespace, so nothing on the host is needed.
//!
//! Pods run on one of two runtimes: the agent's process runtime (images from a catalog of host
//! programs), or real containers — a containerd per node driven over CRI, pulling the images the
//! harness builds (see [`crate::images`]) from a registry beside the control plane. Manifests
//! name images the same way for both (`localhost:5000/skiff/test-server`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::client::PodView;
use crate::containerd::{self, ContainerdDirs};
use crate::dns::{self, CLUSTER_DNS_IP, Nsd};
use crate::images::{self, Registry};
use crate::{Process, Topology, TopologyOptions, binaries, wait};

/// The apiserver's port.
pub const API_PORT: u16 = 6443;

/// What to start besides the topology.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The topology.
    pub topology: TopologyOptions,
    /// Extra flags for skiff-control (e.g. a short `--node-monitor-grace-period`).
    pub control_args: Vec<String>,
    /// Extra flags for every skiff-node (e.g. a short `--node-lease-duration-seconds`).
    pub agent_args: Vec<String>,
    /// `vxlan` or `host-gw`.
    pub overlay: String,
    /// What runs Pods.
    pub runtime: Runtime,
    /// A folder whose `skiff-cni` the nodes run instead of the build's (a timing wrapper).
    pub skiff_cni_dir: Option<PathBuf>,
    /// Deploy the cluster DNS add-on (see [`crate::dns`]), with NSD beside the control plane
    /// as its upstream, and give Pods its address (`--cluster-dns`).
    pub dns: bool,
}

/// What runs Pods on the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The agent's process runtime.
    Process,
    /// containerd over CRI, one per node.
    Containerd,
}

impl std::str::FromStr for Runtime {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "process" => Ok(Runtime::Process),
            "containerd" => Ok(Runtime::Containerd),
            other => anyhow::bail!("unknown runtime {other:?}: process or containerd"),
        }
    }
}

impl ClusterOptions {
    /// `nodes` nodes over VXLAN, default flags.
    pub fn nodes(nodes: usize, label: &str) -> Self {
        ClusterOptions {
            topology: TopologyOptions::nodes(nodes, label),
            control_args: Vec::new(),
            agent_args: Vec::new(),
            overlay: "vxlan".to_owned(),
            runtime: Runtime::Process,
            skiff_cni_dir: None,
            dns: false,
        }
    }
}

/// The test server's image, as Pods name it on either runtime.
pub const TEST_SERVER_IMAGE: &str = images::TEST_SERVER_IMAGE;

/// A running cluster; dropping it stops the processes and removes the topology.
#[derive(Debug)]
pub struct Cluster {
    // Processes first (agents, their runtimes, then the control plane): they stop before the
    // namespaces go.
    agents: Vec<Option<Process>>,
    containerds: Vec<Option<Process>>,
    /// containerd starts so far, to give each its own log.
    containerd_starts: usize,
    control: Process,
    /// The DNS add-on's upstream, when the cluster has the add-on.
    dns_upstream: Option<Nsd>,
    registry: Option<Registry>,
    runtime: Runtime,
    skiff_cni_dir: PathBuf,
    agent_args: Vec<String>,
    overlay: String,
    data_dir: PathBuf,
    topology: Topology,
}

impl Cluster {
    /// Builds the topology and starts skiff-control and one agent per node.
    pub fn start(options: &ClusterOptions) -> Result<Cluster> {
        let topology = Topology::build(&options.topology)?;
        let data_dir = topology.run().log_dir().join("control");
        let cp_ip = topology.control_plane_ip().to_string();
        let control_bin = binaries::binary("skiff-control")?;
        let mut argv = vec![
            control_bin.to_string_lossy().into_owned(),
            "--data-dir".into(),
            data_dir.to_string_lossy().into_owned(),
            "--bind-address".into(),
            cp_ip.clone(),
            "--advertise-address".into(),
            cp_ip,
        ];
        argv.extend(options.control_args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let control =
            topology.spawn(topology.control_plane_netns(), "skiff-control", &argv, &[])?;
        wait::wait_for_tcp(
            Some(topology.control_plane_netns()),
            SocketAddr::from((topology.control_plane_ip(), API_PORT)),
            Duration::from_secs(20),
        )
        .context("skiff-control did not start listening")?;
        let registry = match options.runtime {
            Runtime::Process => None,
            Runtime::Containerd => Some(start_registry(&topology)?),
        };
        let mut cluster = Cluster {
            control,
            dns_upstream: None,
            registry,
            runtime: options.runtime,
            skiff_cni_dir: match &options.skiff_cni_dir {
                Some(dir) => dir.clone(),
                None => binaries::skiff_cni()?
                    .parent()
                    .context("skiff-cni sits in a folder")?
                    .to_path_buf(),
            },
            containerds: Vec::new(),
            containerd_starts: 0,
            agents: Vec::new(),
            agent_args: options
                .agent_args
                .iter()
                .cloned()
                .chain(
                    options
                        .dns
                        .then(|| ["--cluster-dns".to_owned(), CLUSTER_DNS_IP.to_string()])
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            overlay: options.overlay.clone(),
            data_dir,
            topology,
        };
        for n in 1..=cluster.topology.nodes().len() {
            cluster.agents.push(None);
            cluster.containerds.push(None);
            if cluster.runtime == Runtime::Containerd {
                cluster.start_containerd(n)?;
            }
            cluster.start_agent(n)?;
        }
        if options.dns {
            cluster.start_dns()?;
        }
        Ok(cluster)
    }

    /// The DNS add-on: NSD serving [`crate::dns::upstream_zone`] beside the control plane, a
    /// kubeconfig of its own for skiff-dns, and the add-on's objects applied. Its Pods come up
    /// as the nodes get ready; [`Cluster::wait_for_dns`] waits for them.
    fn start_dns(&mut self) -> Result<()> {
        let upstream = Nsd::start(
            self.topology.run(),
            self.topology.control_plane_netns(),
            "nsd-upstream",
            SocketAddr::from((self.topology.control_plane_ip(), 53)),
            &[(dns::UPSTREAM_ZONE, dns::upstream_zone())],
        )?;
        let kubeconfig = self.data_dir.join("dns.kubeconfig");
        self.mint_kubeconfig(dns::DNS_USER, None, &kubeconfig)?;
        // Mounted at this same path in containers, where `tests/..` would not resolve.
        let kubeconfig = std::fs::canonicalize(&kubeconfig)?;
        for object in dns::addon_objects(&kubeconfig, &[upstream.addr()])? {
            self.apply(&object)?;
        }
        self.dns_upstream = Some(upstream);
        Ok(())
    }

    /// Waits until both DNS Pods are ready.
    pub fn wait_for_dns(&self, timeout: Duration) -> Result<()> {
        wait::retry(timeout, || {
            let list = self.get_json(&["pods", "-n", "kube-system", "-l", "k8s-app=kube-dns"])?;
            let ready = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| crate::objects::has_condition(p, "Ready"))
                .count();
            ensure!(ready == 2, "{ready} of 2 DNS Pods ready");
            Ok(())
        })
        .context("the DNS add-on did not become ready")
    }

    /// A kubeconfig for `user` (in `group`) at `path`, minted by skiff-control.
    fn mint_kubeconfig(&self, user: &str, group: Option<&str>, path: &Path) -> Result<()> {
        let control_bin = binaries::binary("skiff-control")?;
        let mut command = std::process::Command::new(control_bin);
        command
            .args(["mint-token", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--user", user]);
        if let Some(group) = group {
            command.args(["--group", group]);
        }
        command
            .arg("--kubeconfig")
            .arg(path)
            .args(["--server", &self.server_url()]);
        crate::cmd::run(&mut command, Duration::from_secs(10))?;
        Ok(())
    }

    /// The topology underneath.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The admin kubeconfig (server: the control plane's underlay address).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// The apiserver's URL as nodes reach it.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_PORT}", self.topology.control_plane_ip())
    }

    /// Starts (or restarts) the agent of node `n` (from 1), minting its kubeconfig first.
    pub fn start_agent(&mut self, n: usize) -> Result<()> {
        self.start_agent_with(n, &[])
    }

    /// [`start_agent`](Self::start_agent) with `extra` flags after the cluster's own (e.g.
    /// `--proxy-mode ebpf`, when the cluster's own flags do not name a mode).
    pub fn start_agent_with(&mut self, n: usize, extra: &[&str]) -> Result<()> {
        let node = self.topology.node(n).clone();
        let kubeconfig = self.data_dir.join(format!("{}.kubeconfig", node.name));
        if !kubeconfig.exists() {
            let user = format!("system:node:{}", node.name);
            self.mint_kubeconfig(&user, Some("system:nodes"), &kubeconfig)?;
        }
        let agent_bin = binaries::binary("skiff-node")?;
        let root = self.node_root(n);
        // The process runtime pins Pods' mount namespaces below a private mount of its state
        // folder: cleanup unmounts what a killed agent left (mountinfo names canonical paths).
        std::fs::create_dir_all(&root)?;
        self.topology
            .run()
            .add_mount_root(&std::fs::canonicalize(&root)?)?;
        let cgroup = self.node_cgroup(n)?;
        let pins = self.node_pin_dir(n)?;
        let bin_dirs = match self.runtime {
            Runtime::Process => format!(
                "{},{}",
                self.skiff_cni_dir.display(),
                crate::cni::REFERENCE_PLUGINS
            ),
            Runtime::Containerd => self.containerd_dirs(n)?.cni_bin_dir.display().to_string(),
        };
        let prefix = self.topology.run().id().object(&format!("{}-", node.name));
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut argv = vec![
            path(agent_bin),
            "--kubeconfig".into(),
            path(kubeconfig),
            "--hostname-override".into(),
            node.name.clone(),
            "--node-ip".into(),
            node.ip.to_string(),
            "--root-dir".into(),
            path(root.clone()),
            "--cni-conf-dir".into(),
            path(root.join("net.d")),
            "--cni-bin-dir".into(),
            bin_dirs,
            "--cgroup-root".into(),
            path(cgroup),
            "--bpf-pin-dir".into(),
            path(pins),
            "--netns-prefix".into(),
            prefix,
            "--image-catalog".into(),
            path(self.image_catalog()?),
            "--overlay".into(),
            self.overlay.clone(),
        ];
        if self.runtime == Runtime::Containerd {
            let dirs = self.containerd_dirs(n)?;
            argv.extend([
                "--container-runtime-endpoint".to_owned(),
                format!("unix://{}", dirs.socket.display()),
                "--pod-logs-dir".to_owned(),
                path(root.join("pod-logs")),
            ]);
        }
        argv.extend(self.agent_args.iter().cloned());
        argv.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let name = format!("skiff-node-{}", node.name);
        let command = node.netns.command_keeping_mounts(&argv);
        let agent = Process::spawn_command(self.topology.run(), &name, command)?;
        self.agents[n - 1] = Some(agent);
        Ok(())
    }

    /// Node `n`'s containerd folders (its socket, for `ctr --address`).
    pub fn containerd_dirs(&self, n: usize) -> Result<ContainerdDirs> {
        let root = self.node_root(n);
        ContainerdDirs::new(
            self.topology.run(),
            &self.topology.node(n).name,
            &root,
            &root.join("net.d"),
        )
    }

    /// Starts node `n`'s containerd (before its agent, which waits for it).
    pub fn start_containerd(&mut self, n: usize) -> Result<()> {
        // Where the registry is (or was, after stop_registry): containerd's config names it.
        let registry = SocketAddr::from((self.topology.control_plane_ip(), images::REGISTRY_PORT));
        let dirs = self.containerd_dirs(n)?;
        let node = self.topology.node(n).clone();
        self.containerd_starts += 1;
        // A restarted containerd logs beside the first, not over it.
        let name = match self.containerd_starts {
            k if k <= self.topology.nodes().len() => format!("containerd-{}", node.name),
            k => format!("containerd-{}-{k}", node.name),
        };
        let skiff_cni = self.skiff_cni_dir.join("skiff-cni");
        let process = containerd::start(
            self.topology.run(),
            &node.netns,
            &name,
            &dirs,
            registry,
            &skiff_cni,
        )?;
        self.containerds[n - 1] = Some(process);
        Ok(())
    }

    /// Stops node `n`'s containerd (SIGKILL); its containers live on in their shims.
    pub fn stop_containerd(&mut self, n: usize) -> Result<()> {
        let process = self.containerds[n - 1]
            .take()
            .context("that node has no containerd")?;
        let pid = nix::unistd::Pid::from_raw(process.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        drop(process);
        Ok(())
    }

    /// Kills node `n`'s containerd with SIGKILL and starts it again (its containers live on
    /// in their shims, as on a real node).
    pub fn restart_containerd(&mut self, n: usize) -> Result<()> {
        self.stop_containerd(n)?;
        self.start_containerd(n)
    }

    /// Stops the image registry, as an outage would.
    pub fn stop_registry(&mut self) -> Result<()> {
        let registry = self
            .registry
            .take()
            .context("this cluster has no registry")?;
        drop(registry);
        Ok(())
    }

    /// What runs Pods here.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// A client inside Pod `name` (default namespace): its network namespace and cgroup, seeing
    /// the Pod's resolv.conf and /etc/hosts.
    pub fn pod_client(&self, name: &str) -> Result<crate::Client> {
        let pod = self.get_json(&["pod", name])?;
        let node = pod["spec"]["nodeName"]
            .as_str()
            .with_context(|| format!("{name} is not bound to a node"))?;
        let uid = pod["metadata"]["uid"]
            .as_str()
            .context("a Pod without uid")?;
        let n = self
            .topology
            .nodes()
            .iter()
            .position(|candidate| candidate.name == node)
            .with_context(|| format!("{name} runs on unknown node {node}"))?;
        let pod_cgroup = self.node_cgroup(n + 1)?.join(format!("pod-{uid}"));
        match self.runtime {
            Runtime::Process => {
                let mntns = self.node_root(n + 1).join("pods").join(uid).join("ns/mnt");
                Ok(crate::Client {
                    netns: self.pod_netns(node, uid),
                    cgroup: Some(pod_cgroup),
                    view: mntns.exists().then_some(PodView::MountNamespace(mntns)),
                })
            }
            // The Pod's cgroup holds one per container: stand in one of them (the sandbox's
            // pause or an app), in the network namespace its processes live in, seeing an
            // application container's resolv.conf and hosts file (the pause has neither).
            Runtime::Containerd => {
                let containers = crate::kernelfs::container_cgroups(&pod_cgroup);
                let (cgroup, pid) = containers
                    .first()
                    .cloned()
                    .with_context(|| format!("no process of {name} runs"))?;
                let app = containers.iter().find(|(_, pid)| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"));
                    !cmdline.unwrap_or_default().starts_with(b"/pause")
                });
                let view = match app {
                    Some((_, app_pid)) => {
                        let dir = self.topology.run().scratch_dir(&format!("view-{uid}"))?;
                        let mut copies = Vec::new();
                        for file in ["resolv.conf", "hosts"] {
                            let copy = dir.join(file);
                            std::fs::copy(format!("/proc/{app_pid}/root/etc/{file}"), &copy)?;
                            copies.push(copy);
                        }
                        let hosts = copies.pop().expect("two copies");
                        let resolv_conf = copies.pop().expect("two copies");
                        Some(PodView::Files { resolv_conf, hosts })
                    }
                    None => None,
                };
                Ok(crate::Client {
                    netns: crate::Netns::at_path(&PathBuf::from(format!("/proc/{pid}/ns/net"))),
                    cgroup: Some(cgroup),
                    view,
                })
            }
        }
    }

    /// Node `n`'s cgroup: its agent puts every Pod below it, and the eBPF proxy attaches to it
    /// (it stands for the node's root cgroup, which a test must never attach to).
    pub fn node_cgroup(&self, n: usize) -> Result<PathBuf> {
        Ok(self
            .topology
            .run()
            .cgroup_dir()?
            .join(&self.topology.node(n).name))
    }

    /// Node `n`'s bpffs folder for the eBPF proxy's pins (one per node, as on real machines).
    pub fn node_pin_dir(&self, n: usize) -> Result<PathBuf> {
        Ok(self
            .topology
            .run()
            .bpf_pin_dir()?
            .join(&self.topology.node(n).name))
    }

    /// Node `n`'s agent state folder (Pods, container logs, IPAM), kept with the run's logs.
    pub fn node_root(&self, n: usize) -> PathBuf {
        self.data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .join(&self.topology.node(n).name)
    }

    /// The image catalog every agent uses, with the test server as [`TEST_SERVER_IMAGE`] and
    /// skiff-dns as [`images::DNS_IMAGE`] (the catalog ignores the registry part of a reference).
    fn image_catalog(&self) -> Result<PathBuf> {
        let dir = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .join("images");
        for (image, binary) in [("test-server", "skiff-test-server"), ("dns", "skiff-dns")] {
            let entry = dir.join(format!("skiff/{image}.json"));
            if !entry.exists() {
                std::fs::create_dir_all(entry.parent().expect("an entry has a folder"))?;
                let config = serde_json::json!({"entrypoint": [binaries::binary(binary)?]});
                std::fs::write(&entry, serde_json::to_vec_pretty(&config)?)?;
            }
        }
        Ok(dir)
    }

    /// Kills node `n`'s agent with SIGKILL, as a crash would.
    pub fn kill_agent(&mut self, n: usize) -> Result<()> {
        let agent = self.agents[n - 1]
            .take()
            .context("that agent is not running")?;
        let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        drop(agent);
        Ok(())
    }

    /// Runs kubectl with the admin kubeconfig inside node 1's namespace; fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let kubeconfig = self.admin_kubeconfig();
        let mut argv = vec!["kubectl", "--kubeconfig"];
        let kubeconfig = kubeconfig.to_string_lossy();
        argv.push(&kubeconfig);
        argv.extend_from_slice(args);
        let output = self
            .topology
            .node(1)
            .netns
            .output(&argv, Duration::from_secs(30))?;
        ensure!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl apply` of one object (written to a file in the run's log folder).
    pub fn apply(&self, object: &serde_json::Value) -> Result<String> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let file = self
            .topology
            .run()
            .log_dir()
            .join(format!("apply-{name}-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&["apply", "-f", &file.to_string_lossy()])
    }

    /// `kubectl get <what> -o json`, parsed.
    pub fn get_json(&self, what: &[&str]) -> Result<serde_json::Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&args)?)?)
    }

    /// The network namespace of the Pod with `uid` on node `node_name`.
    pub fn pod_netns(&self, node_name: &str, uid: &str) -> crate::Netns {
        let name = self
            .topology
            .run()
            .id()
            .object(&format!("{node_name}-{uid}"));
        crate::Netns::existing(&name)
    }

    /// Leaves everything running after this process exits (`cargo xtask up`);
    /// `run::destroy(id)` removes it later.
    pub fn detach(self) -> Result<crate::RunId> {
        let Cluster {
            agents,
            containerds,
            control,
            registry,
            dns_upstream,
            topology,
            ..
        } = self;
        for process in agents.into_iter().chain(containerds).flatten() {
            process.release();
        }
        if let Some(upstream) = dns_upstream {
            upstream.release();
        }
        if let Some(registry) = registry {
            registry.release();
        }
        control.release();
        topology.detach()
    }

    /// The control plane's log so far.
    pub fn control_log(&self) -> String {
        self.control.log()
    }
}

/// The registry beside the control plane, with every image the harness builds pushed to it.
fn start_registry(topology: &Topology) -> Result<Registry> {
    let addr = SocketAddr::from((topology.control_plane_ip(), images::REGISTRY_PORT));
    let registry = Registry::start(topology.run(), topology.control_plane_netns(), addr)?;
    for image in images::all_images()? {
        registry
            .push(&image)
            .with_context(|| format!("cannot push {}", image.reference))?;
    }
    Ok(registry)
}
