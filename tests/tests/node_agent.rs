//! skiff-node against skiff-control in a netns cluster: every node registers with its real
//! address and machine facts, gets a podCIDR, keeps its Lease fresh, goes Unknown when its
//! agent dies and Ready again when the agent comes back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_tests::objects::condition;
use skiff_tests::{Cluster, ClusterOptions};

const GRACE_SECONDS: u64 = 5;

fn nodes(cluster: &Cluster) -> Result<Vec<Value>> {
    let out = cluster.kubectl(&["get", "nodes", "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn ready_of(node: &Value) -> String {
    condition(node, "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Polls `check` every 200 ms until it is true; fails naming `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let last = check();
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what} (last: {last:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nodes_register_heartbeat_and_recover_after_their_agent_is_killed() -> Result<()> {
    let mut cluster = Cluster::start(&ClusterOptions {
        control_args: vec![
            "--node-monitor-grace-period".into(),
            GRACE_SECONDS.to_string(),
        ],
        // Renewed every second, well inside the grace period.
        agent_args: vec!["--node-lease-duration-seconds".into(), "4".into()],
        ..ClusterOptions::nodes(2, "node-agent")
    })?;
    wait_until(
        "2 Ready nodes with podCIDRs",
        Duration::from_secs(30),
        || {
            let list = nodes(&cluster)?;
            Ok(list.len() == 2
                && list
                    .iter()
                    .all(|n| ready_of(n) == "True" && n["spec"]["podCIDR"].is_string()))
        },
    )?;
    let list = nodes(&cluster)?;
    for (node, expected) in list.iter().zip(cluster.topology().nodes()) {
        assert_eq!(node["metadata"]["name"], expected.name.as_str());
        let internal = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .context("no InternalIP")?;
        assert_eq!(internal["address"], expected.ip.to_string().as_str());
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            expected.name.as_str()
        );
        let info = &node["status"]["nodeInfo"];
        assert!(
            info["kubeletVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("v1.33.0-skiff")),
            "{info}"
        );
        assert_eq!(info["operatingSystem"], "linux");
        assert!(
            node["status"]["capacity"]["cpu"].as_str().is_some(),
            "{node}"
        );
    }
    let cidrs: Vec<&str> = list
        .iter()
        .filter_map(|n| n["spec"]["podCIDR"].as_str())
        .collect();
    assert_ne!(cidrs[0], cidrs[1], "each node has its own podCIDR");
    let lease = cluster.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "node1",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    assert_eq!(lease, "node1");

    // The agent dies: after the grace period the control plane no longer trusts the node.
    cluster.kill_agent(2)?;
    let killed = Instant::now();
    let node2_ready = |cluster: &Cluster| -> Result<String> {
        let list = nodes(cluster)?;
        Ok(list
            .iter()
            .find(|n| n["metadata"]["name"] == "node2")
            .map(ready_of)
            .unwrap_or_default())
    };
    wait_until(
        "node2 Unknown",
        Duration::from_secs(GRACE_SECONDS + 15),
        || Ok(node2_ready(&cluster)? == "Unknown"),
    )?;
    assert!(
        killed.elapsed() >= Duration::from_secs(GRACE_SECONDS - 1),
        "marked after {:?}, before the grace period",
        killed.elapsed()
    );
    assert_eq!(ready_of(&nodes(&cluster)?[0]), "True", "node1 untouched");

    // It comes back: Ready again, same podCIDR.
    cluster.start_agent(2)?;
    wait_until("node2 Ready again", Duration::from_secs(20), || {
        Ok(node2_ready(&cluster)? == "True")
    })?;
    let again = nodes(&cluster)?;
    assert_eq!(again[1]["spec"]["podCIDR"], cidrs[1]);
    Ok(())
}
