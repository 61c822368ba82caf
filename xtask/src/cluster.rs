//! `cargo xtask up` / `down`: a local cluster made of network namespaces, left running for a user.
//!
//! For now the cluster is the harness topology, skiff-control in the underlay's namespace (so
//! `kubectl` works from the host over the host link and from every node), and the test server on
//! every node, each reached from another node across the underlay. Node agents and Services join
//! it as their issues land.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_tests::{Topology, TopologyOptions, run, wait};

use crate::{setup, shell};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

const HTTP_PORT: u16 = 8080;
const API_PORT: u16 = 6443;

pub fn up(args: &UpArgs) -> Result<()> {
    if !shell::is_root() {
        bail!("`cargo xtask up` makes network namespaces and needs root");
    }
    setup::run_all()?;
    shell::step("up: build");
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "-p",
        "skiff-tests",
        "-p",
        "skiff-control",
        "--bins",
    ]))?;
    let server = shell::root().join("target/debug/skiff-test-server");
    let control = shell::root().join("target/debug/skiff-control");

    for id in run::detached_runs() {
        println!("taking down the cluster already up (run {id})");
        run::destroy(&id)?;
    }

    shell::step(&format!("up: {} nodes", args.nodes));
    let started = Instant::now();
    let options = TopologyOptions {
        nodes: args.nodes,
        host_link: true,
        label: "up".to_owned(),
        log_root: shell::root().join("target/skiff-up"),
    };
    let topology = Topology::build(&options)?;
    println!(
        "underlay {} in namespace {}, control plane address {}",
        topology.underlay_cidr(),
        topology.control_plane_netns().name(),
        topology.control_plane_ip()
    );
    let data_dir = shell::root().join("target/skiff-up/control");
    let _ = std::fs::remove_dir_all(&data_dir);
    let cp_ip = topology.control_plane_ip().to_string();
    let apiserver = topology.spawn(
        topology.control_plane_netns(),
        "skiff-control",
        &[
            &control.to_string_lossy(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--bind-address",
            &cp_ip,
            "--advertise-address",
            &cp_ip,
        ],
        &[],
    )?;
    let kubeconfig = data_dir.join("admin.kubeconfig");
    wait::wait_for_tcp(
        Some(&topology.node(1).netns),
        SocketAddr::from((topology.control_plane_ip(), API_PORT)),
        Duration::from_secs(20),
    )
    .context("skiff-control did not start listening")?;
    println!("control  {cp_ip:<16} https://{cp_ip}:{API_PORT}");
    let server_path = server.to_string_lossy().into_owned();
    let mut servers = Vec::new();
    for node in topology.nodes() {
        let pod = format!("{}-echo", node.name);
        servers.push(topology.spawn(
            &node.netns,
            &pod,
            &[&server_path, "--http-port", &HTTP_PORT.to_string()],
            &[("POD_NAME", &pod)],
        )?);
        println!(
            "{:<8} {:<16} netns {}",
            node.name,
            node.ip,
            node.netns.name()
        );
    }
    for node in topology.nodes() {
        wait::wait_for_http(
            Some(&node.netns),
            SocketAddr::from((node.ip, HTTP_PORT)),
            "/healthz",
            Duration::from_secs(10),
        )
        .with_context(|| format!("the test server on {} did not come up", node.name))?;
    }
    let elapsed = started.elapsed();

    shell::step("up: curl each node's server from the next node, across the underlay");
    let nodes = topology.nodes();
    for (i, target) in nodes.iter().enumerate() {
        let client = &nodes[(i + 1) % nodes.len()];
        let url = format!("http://{}:{HTTP_PORT}/", target.ip);
        let reply = client.netns.exec(
            &["curl", "-sS", "--max-time", "5", &url],
            Duration::from_secs(10),
        )?;
        answered_by(&reply, &format!("{}-echo", target.name))?;
        println!("{} $ curl {url}\n  {}", client.name, reply.trim());
    }
    let host_ip = topology.host_ip().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let url = format!("http://{}:{HTTP_PORT}/", nodes[0].ip);
    let reply =
        shell::probe(std::process::Command::new("curl").args(["-sS", "--max-time", "5", &url]))
            .with_context(|| format!("the host ({host_ip}) could not reach {url}"))?;
    answered_by(&reply, &format!("{}-echo", nodes[0].name))?;
    println!("host $ curl {url}\n  {}", reply.trim());

    shell::step("up: kubectl from the host, through the host link");
    let kubectl = std::process::Command::new("kubectl")
        .args(["get", "namespaces"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .context("cannot run kubectl")?;
    anyhow::ensure!(
        kubectl.status.success(),
        "kubectl could not reach skiff-control: {}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    println!(
        "$ kubectl get namespaces\n{}",
        String::from_utf8_lossy(&kubectl.stdout).trim_end()
    );

    let logs = topology.run().log_dir().to_path_buf();
    let first_ns = nodes[0].netns.name().to_owned();
    for server in servers {
        server.release();
    }
    apiserver.release();
    let id = topology.detach()?;
    println!(
        "\ncluster {id} up in {:.2}s (building aside)\n\n\
         use kubectl:      export KUBECONFIG={}\n\
         enter a node:     ip netns exec {first_ns} bash\n\
         process logs:     {}\n\
         take it down:     cargo xtask down",
        elapsed.as_secs_f64(),
        kubeconfig.display(),
        logs.display()
    );
    Ok(())
}

/// A connect alone proves nothing here: the reply must name the server that should answer.
fn answered_by(reply: &str, server: &str) -> Result<()> {
    if reply.split_whitespace().next() != Some(server) {
        bail!("expected an answer from {server}, got {:?}", reply.trim());
    }
    Ok(())
}

pub fn down() -> Result<()> {
    if !shell::is_root() {
        bail!("`cargo xtask down` removes network namespaces and needs root");
    }
    let ids = run::detached_runs();
    if ids.is_empty() {
        println!("no cluster is up");
    }
    for id in ids {
        run::destroy(&id).with_context(|| format!("taking down cluster {id}"))?;
        println!("cluster {id}: removed");
    }
    for (id, err) in run::sweep_stale()? {
        println!("stale run {id} not fully removed: {err:#}");
    }
    Ok(())
}
