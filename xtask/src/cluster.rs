//! `cargo xtask up` / `down`: a local cluster made of network namespaces, left running for a user.
//!
//! skiff-control in the underlay's namespace (so `kubectl` works from the host over the host
//! link and from every node) beside a local image registry, and skiff-node on every node,
//! running Pods as containers under a containerd of the node's own (or with the process
//! runtime) wired by skiff-cni over a VXLAN or host-gw node network, each agent hosting the
//! Service proxy (iptables, or eBPF with `--proxy-mode ebpf`). A demo
//! Deployment of the test server and its Service show it working: the ClusterIP and the
//! Service's names (the cluster DNS add-on runs too), curled from a Pod on every node, are
//! answered by Pods on several nodes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::Value;
use skiff_tests::Runtime;
use skiff_tests::cluster::TEST_SERVER_IMAGE;
use skiff_tests::images::{REGISTRY_HOST, REGISTRY_PORT};
use skiff_tests::objects::has_condition;
use skiff_tests::{Cluster, ClusterOptions, TopologyOptions, run, wait};

use crate::{setup, shell};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How Pod traffic crosses between nodes.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    overlay: String,
    /// The Service proxy's data plane on every node.
    #[arg(long, default_value = "iptables", value_parser = ["iptables", "ebpf"])]
    proxy_mode: String,
    /// What runs Pods: `containerd` (real containers, images from a local registry, as on any
    /// cluster) or `process` (host processes, images from a catalog).
    #[arg(long, default_value = "containerd", value_parser = ["process", "containerd"])]
    runtime: String,
}

/// The demo's size.
const DEMO_REPLICAS: usize = 3;

pub fn up(args: &UpArgs) -> Result<()> {
    if !shell::is_root() {
        bail!("`cargo xtask up` makes network namespaces and needs root");
    }
    setup::run_all()?;
    build(args)?;
    for id in run::detached_runs() {
        println!("taking down the cluster already up (run {id})");
        run::destroy(&id)?;
    }
    shell::step(&format!(
        "up: {} nodes ({}, {} proxy, {} runtime)",
        args.nodes, args.overlay, args.proxy_mode, args.runtime
    ));
    let started = Instant::now();
    let cluster = start_cluster(args)?;
    let pods = start_demo(&cluster)?;
    let elapsed = started.elapsed();
    print!("{}", cluster.kubectl(&["get", "pods", "-o", "wide"])?);
    curl_demo(&cluster, &pods)?;
    print_usage(cluster, &pods, elapsed)
}

/// Builds what the cluster runs.
fn build(args: &UpArgs) -> Result<()> {
    shell::step("up: build");
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "-p",
        "skiff-tests",
        "-p",
        "skiff-control",
        "-p",
        "skiff-node",
        "-p",
        "skiff-cni",
        "-p",
        "skiff-dns",
        "--bins",
    ]))?;
    if args.proxy_mode == "ebpf" {
        crate::ebpf::build()?;
    }
    Ok(())
}

/// Starts the cluster and waits until every node is Ready with a podCIDR.
fn start_cluster(args: &UpArgs) -> Result<Cluster> {
    let options = ClusterOptions {
        topology: TopologyOptions {
            host_link: true,
            log_root: shell::root().join("target/skiff-up"),
            ..TopologyOptions::nodes(args.nodes, "up")
        },
        overlay: args.overlay.clone(),
        agent_args: vec!["--proxy-mode".into(), args.proxy_mode.clone()],
        runtime: args.runtime.parse()?,
        dns: true,
        ..ClusterOptions::nodes(args.nodes, "up")
    };
    let cluster = Cluster::start(&options)?;
    let topology = cluster.topology();
    println!(
        "control plane  https://{}:6443 in namespace {}",
        topology.control_plane_ip(),
        topology.control_plane_netns().name()
    );
    let nodes = wait::retry(Duration::from_secs(60), || {
        let list = cluster.get_json(&["nodes"])?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready = items
            .iter()
            .filter(|n| n["spec"]["podCIDR"].is_string() && has_condition(n, "Ready"))
            .count();
        ensure!(ready == args.nodes, "{ready} of {} nodes ready", args.nodes);
        Ok(items)
    })
    .context("the nodes did not become ready")?;
    for node in &nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        println!(
            "node {name:<6} {:<15} podCIDR {:<14} netns {}",
            internal_ip(node),
            node["spec"]["podCIDR"].as_str().unwrap_or_default(),
            topology
                .nodes()
                .iter()
                .find(|n| n.name == name)
                .map_or("", |n| n.netns.name())
        );
    }
    Ok(cluster)
}

/// The demo Deployment and its Service; returns its Pods once all are ready.
fn start_demo(cluster: &Cluster) -> Result<Vec<Value>> {
    shell::step("up: a demo Deployment of the test server");
    let replicas = format!("--replicas={DEMO_REPLICAS}");
    let image = format!("--image={TEST_SERVER_IMAGE}");
    cluster.kubectl(&["create", "deployment", "web", &image, &replicas])?;
    cluster.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ])?;
    let pods = wait::retry(Duration::from_secs(60), || {
        let list = cluster.get_json(&["pods", "-l", "app=web"])?;
        let ready: Vec<Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running" && has_condition(p, "Ready"))
            .cloned()
            .collect();
        ensure!(
            ready.len() == DEMO_REPLICAS,
            "{} of {DEMO_REPLICAS} Pods ready",
            ready.len()
        );
        Ok(ready)
    })
    .context("the demo Pods did not become ready")?;
    Ok(pods)
}

/// Curls the demo Service from a Pod on every node, by its ClusterIP and by its names (cluster
/// DNS); fails unless several Pods answer each.
fn curl_demo(cluster: &Cluster, pods: &[Value]) -> Result<()> {
    let service =
        cluster.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    cluster.wait_for_dns(Duration::from_secs(60))?;
    shell::step(&format!(
        "up: curl the Service web (ClusterIP {service}, and by name) from a Pod on every node"
    ));
    for from in pods {
        let client = cluster.pod_client(from["metadata"]["name"].as_str().unwrap_or_default())?;
        for url in [
            format!("http://{service}/"),
            "http://web/".to_owned(),
            "http://web.default.svc.cluster.local/".to_owned(),
        ] {
            // The proxy may still be syncing the new Service: a few tries, bounded.
            let mut answered: BTreeSet<String> = BTreeSet::new();
            let mut replies = Vec::new();
            let mut last_error = String::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while answered.len() < DEMO_REPLICAS && Instant::now() < deadline {
                let out = skiff_tests::cmd::output(
                    &mut client.command(&["curl", "-sS", "--max-time", "2", &url])?,
                    Duration::from_secs(5),
                )?;
                let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if let Some(name) = reply
                    .split_whitespace()
                    .next()
                    .filter(|_| out.status.success())
                {
                    if answered.insert(name.to_owned()) {
                        replies.push(reply.clone());
                    }
                } else {
                    last_error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            println!(
                "{} ({}) $ curl {url}",
                from["metadata"]["name"].as_str().unwrap_or_default(),
                from["spec"]["nodeName"].as_str().unwrap_or_default()
            );
            for reply in &replies {
                println!("  {reply}");
            }
            ensure!(
                answered.len() > 1,
                "{url} was answered by {answered:?} only, not by several Pods (last error: \
                 {last_error})"
            );
        }
    }
    Ok(())
}

/// Leaves the cluster running and says how to use it.
fn print_usage(cluster: Cluster, pods: &[Value], elapsed: Duration) -> Result<()> {
    let topology = cluster.topology();
    let kubeconfig = shell::root().join("target/skiff-up/admin.kubeconfig");
    std::fs::copy(cluster.admin_kubeconfig(), &kubeconfig)
        .context("cannot copy the admin kubeconfig")?;
    let service =
        cluster.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    let first_node = topology.node(1).netns.name().to_owned();
    let first_pod = pods[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let logs = topology.run().log_dir().to_path_buf();
    let images = match cluster.runtime() {
        Runtime::Containerd => format!(
            "your images:      push to {}:{REGISTRY_PORT} (skopeo copy --dest-tls-verify=false), \
             name them {REGISTRY_HOST}/...\n",
            topology.control_plane_ip()
        ),
        Runtime::Process => String::new(),
    };
    let id = cluster.detach()?;
    println!(
        "\ncluster {id} up in {:.1}s (building aside); Service web has ClusterIP {service}\n\n\
         use kubectl:      export KUBECONFIG={}\n\
         in a Pod:         cargo xtask exec {first_pod} -- curl -s {service}\n\
         by name:          cargo xtask exec {first_pod} -- curl -s http://web.default.svc.cluster.local\n\
         on a node:        cargo xtask exec --node node1 -- ip route\n\
         enter a node:     ip netns exec {first_node} bash\n\
         enter a Pod:      cargo xtask exec {first_pod} -- sh\n\
         {images}\
         logs and state:   {}\n\
         take it down:     cargo xtask down",
        elapsed.as_secs_f64(),
        kubeconfig.display(),
        logs.display()
    );
    Ok(())
}

fn internal_ip(node: &Value) -> &str {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default()
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
