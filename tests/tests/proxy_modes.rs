//! The proxy hosted by `skiff-node`: switching a node between the iptables and eBPF data planes,
//! and restarting its agent, under a steady request loop.
//!
//! Each switch restarts node1's agent with the other `--proxy-mode` while a client Pod on node1
//! sends a request every 20 ms to a Service backed by Pods on both nodes: no request may fail,
//! and once the new mode has synced nothing of the old one is left on the node — no `SKIFF-`
//! chain after iptables, no pinned map, cgroup program or TC link after eBPF. Needs root.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::{Cluster, ClusterOptions, Netns, cmd, wait};

const WAIT: Duration = Duration::from_secs(30);

/// What of each mode node `netns` holds: (our iptables chains, pinned files, cgroup programs,
/// TC links).
fn leftovers(netns: &Netns, pins: &Path, cgroup: &Path) -> Result<(usize, usize, usize, usize)> {
    let save = netns.exec(&["iptables-save"], Duration::from_secs(10))?;
    let chains = save.lines().filter(|l| l.starts_with(":SKIFF-")).count();
    let pinned = std::fs::read_dir(pins).map_or(0, |dir| dir.count());
    let in_host_mounts = |argv: &[&str]| {
        cmd::run(
            &mut netns.command_keeping_mounts(argv),
            Duration::from_secs(10),
        )
    };
    let cgroup_programs =
        in_host_mounts(&["bpftool", "cgroup", "show", &cgroup.to_string_lossy()])?
            .lines()
            .filter(|l| l.contains("skiff_"))
            .count();
    // bpftool here predates tcx; a TC link lives exactly as long as its pin (nothing else
    // holds it), so the pins say what is attached.
    let tc_programs = std::fs::read_dir(pins).map_or(0, |dir| {
        dir.flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("link_skiff_nodeport_")
            })
            .count()
    });
    Ok((chains, pinned, cgroup_programs, tc_programs))
}

#[test]
fn switching_proxy_modes_and_restarting_the_agent_lose_no_request_and_leave_nothing_behind()
-> Result<()> {
    let mut cluster = Cluster::start(&ClusterOptions::nodes(2, "proxy-modes"))?;
    cluster.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=skiff/test-server",
        "--replicas=2",
    ])?;
    cluster.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ])?;
    cluster.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"nodeName": "node1",
                 "containers": [{"name": "c", "image": "skiff/test-server"}]}
    }))?;
    let svc = cluster.get_json(&["service", "web"])?;
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .context("no clusterIP")?
        .parse::<std::net::Ipv4Addr>()?;
    let addr = SocketAddr::from((ip, 80));
    let client = wait::retry(WAIT, || {
        let pod = cluster.get_json(&["pod", "client"])?;
        ensure!(pod["status"]["phase"] == "Running", "{}", pod["status"]);
        cluster.pod_client("client")
    })?;
    // Both backends answer before anything changes.
    wait::retry(WAIT, || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(client.who(addr)?.0);
        }
        ensure!(seen.len() == 2, "only {seen:?} answer");
        Ok(())
    })?;
    let node1 = cluster.topology().node(1).netns.clone();
    let pins = cluster.node_pin_dir(1)?;
    let cgroup = cluster.node_cgroup(1)?;
    let (chains, pinned, _, _) = leftovers(&node1, &pins, &cgroup)?;
    ensure!(
        chains > 0 && pinned == 0,
        "iptables mode: {chains} chains, {pinned} pins"
    );

    for (mode, what) in [
        ("ebpf", "iptables -> ebpf"),
        ("ebpf", "an ebpf agent restarted"),
        ("iptables", "ebpf -> iptables"),
    ] {
        let (ok, failed) = client.ask_while(addr, || {
            cluster.kill_agent(1)?;
            cluster.start_agent_with(1, &["--proxy-mode", mode])?;
            // The switch is done when the other mode's state is gone.
            wait::retry(WAIT, || {
                let (chains, pinned, cgroup_programs, tc_programs) =
                    leftovers(&node1, &pins, &cgroup)?;
                match mode {
                    "ebpf" => ensure!(
                        chains == 0 && pinned > 0 && cgroup_programs == 4 && tc_programs > 0,
                        "{what}: {chains} chains, {pinned} pins, {cgroup_programs} cgroup \
                         programs, {tc_programs} TC programs"
                    ),
                    _ => ensure!(
                        chains > 0 && pinned == 0 && cgroup_programs == 0 && tc_programs == 0,
                        "{what}: {chains} chains, {pinned} pins, {cgroup_programs} cgroup \
                         programs, {tc_programs} TC programs"
                    ),
                }
                Ok(())
            })
        })?;
        eprintln!("{what}: {ok} requests answered, {} failed", failed.len());
        ensure!(ok > 30, "{what}: only {ok} requests went through");
        ensure!(
            failed.is_empty(),
            "{what}: {} of {} requests failed: {:?}",
            failed.len(),
            ok + failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    Ok(())
}
