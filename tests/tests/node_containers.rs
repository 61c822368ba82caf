//! The node agent with real containers: skiff-node drives a containerd per node over CRI, and
//! containerd calls skiff-cni. What a user sees — each container's own filesystem, hostname,
//! resolv.conf, kubelet's /etc/hosts, Service variables and CRI log files, rotated by size; bad input ending in the statuses kubectl
//! users know while the node stays Ready (and NotReady, saying why, while containerd is down);
//! and Pods created and deleted by the dozen, with
//! containerd killed once in the middle, leaving nothing behind and never one address twice.
//! Needs root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use skiff_tests::images::{BUSYBOX_IMAGE, TEST_SERVER_IMAGE};
use skiff_tests::objects::{condition, has_condition};
use skiff_tests::{Cluster, ClusterOptions, Runtime, wait};

const WAIT: Duration = Duration::from_secs(60);

fn start(label: &str) -> Result<Cluster> {
    start_with(label, &[])
}

fn start_with(label: &str, agent_args: &[&str]) -> Result<Cluster> {
    skiff_tests::run::require_root()?;
    Cluster::start(&ClusterOptions {
        runtime: Runtime::Containerd,
        agent_args: agent_args.iter().map(|a| (*a).to_owned()).collect(),
        ..ClusterOptions::nodes(1, label)
    })
}

fn pod(name: &str, policy: &str, container: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "labels": {"test": "containers"}},
           "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 5,
                    "containers": [container]}})
}

fn shell(script: &str) -> Value {
    json!({"name": "c", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script]})
}

/// The first container status of Pod `name`.
fn container_status(cluster: &Cluster, name: &str) -> Result<Value> {
    let pod = cluster.get_json(&["pod", name])?;
    Ok(pod["status"]["containerStatuses"][0].clone())
}

/// The reasons of the Events about Pod `name`.
fn event_reasons(cluster: &Cluster, name: &str) -> Result<Vec<(String, String)>> {
    let selector = format!("involvedObject.name={name}");
    let events = cluster.get_json(&["events", "--field-selector", &selector])?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("reason"), text("message"))
        })
        .collect())
}

fn node_ready(cluster: &Cluster) -> Result<bool> {
    let nodes = cluster.get_json(&["nodes"])?;
    Ok(has_condition(&nodes["items"][0], "Ready"))
}

/// The CRI log file of the first run of container `c` of Pod `name` (kubelet's layout).
fn log_file(cluster: &Cluster, name: &str) -> Result<PathBuf> {
    let pod = cluster.get_json(&["pod", name])?;
    let uid = pod["metadata"]["uid"].as_str().context("no uid")?;
    Ok(cluster
        .node_root(1)
        .join("pod-logs")
        .join(format!("default_{name}_{uid}"))
        .join("c/0.log"))
}

/// The text a container wrote to stdout, read from its CRI log (`<time> stdout F <line>`).
fn stdout_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (_time, stream, _tag) = (parts.next()?, parts.next()?, parts.next()?);
            (stream == "stdout").then(|| parts.next().unwrap_or_default().to_owned())
        })
        .collect())
}

#[test]
fn containers_have_their_own_root_hostname_resolv_conf_service_variables_and_logs() -> Result<()> {
    let cluster = start_with(
        "ctr-own",
        &[
            "--container-log-max-size",
            "16Ki",
            "--container-log-max-files",
            "3",
            "--container-log-monitor-interval",
            "1",
        ],
    )?;
    // About 80 KB/s of output: rotated every check, never more than three files.
    let chatty = "while true; do head -c 800 /dev/zero | tr '\\0' x; echo; sleep 0.01; done";
    cluster.apply(&pod("chatty", "Always", &shell(chatty)))?;
    cluster.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"])?;
    let script = "cat /etc/os-release; echo host=$(hostname); cat /etc/resolv.conf /etc/hosts; \
                  echo web=$WEB_SERVICE_HOST api=$KUBERNETES_SERVICE_HOST; echo done; sleep 3600";
    let mut inside = pod("inside", "Always", &shell(script));
    inside["spec"]["subdomain"] = json!("sub");
    inside["spec"]["hostAliases"] = json!([{"ip": "192.0.2.1", "hostnames": ["foo.local"]}]);
    cluster.apply(&inside)?;
    let web_ip = cluster.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    let lines = wait::retry(WAIT, || {
        let lines = stdout_lines(&log_file(&cluster, "inside")?)?;
        ensure!(lines.iter().any(|l| l == "done"), "not done yet: {lines:?}");
        Ok(lines)
    })?;
    let host_release = std::fs::read_to_string("/etc/os-release")?;
    ensure!(
        lines.iter().any(|l| l.contains("skiff busybox image")),
        "not the image's own os-release: {lines:?}"
    );
    ensure!(!host_release.contains("skiff busybox image"));
    ensure!(lines.contains(&"host=inside".to_owned()), "{lines:?}");
    ensure!(
        lines.iter().any(|l| l.starts_with("nameserver ")),
        "no resolv.conf written: {lines:?}"
    );
    ensure!(
        lines.contains(&format!("web={web_ip} api=10.96.0.1")),
        "Service variables missing: {lines:?}"
    );
    // kubelet's hosts file, mounted over the image's: the Pod's address under its FQDN.
    let pod_ip = cluster.kubectl(&["get", "pod", "inside", "-o", "jsonpath={.status.podIP}"])?;
    for line in [
        "# Kubernetes-managed hosts file.",
        &format!("{pod_ip}\tinside.sub.default.svc.cluster.local\tinside"),
        "192.0.2.1\tfoo.local",
    ] {
        ensure!(lines.iter().any(|l| l == line), "no {line:?} in {lines:?}");
    }
    let status = container_status(&cluster, "inside")?;
    ensure!(
        status["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{status}"
    );
    ensure!(
        status["imageID"]
            .as_str()
            .is_some_and(|id| id.contains("@sha256:")),
        "{status}"
    );
    // A hostPort (portmap in the chain containerd runs) and an exec readiness probe (ExecSync).
    cluster.apply(&pod(
        "served",
        "Always",
        &json!({"name": "c", "image": TEST_SERVER_IMAGE,
                "ports": [{"containerPort": 8080, "hostPort": 18080}],
                "readinessProbe": {"exec": {"command": ["sh", "-c", "test -s /etc/os-release"]},
                                   "periodSeconds": 1}}),
    ))?;
    wait::retry(WAIT, || {
        let status = container_status(&cluster, "served")?;
        ensure!(
            status["ready"] == true,
            "not ready by its exec probe: {status}"
        );
        Ok(())
    })?;
    let outside = skiff_tests::Client {
        netns: cluster.topology().control_plane_netns().clone(),
        cgroup: None,
        view: None,
    };
    let host_port = std::net::SocketAddr::from((cluster.topology().node(1).ip, 18080));
    let (who, _) = wait::retry(WAIT, || outside.who(host_port))?;
    ensure!(who == "served", "hostPort answered by {who}");
    let live = log_file(&cluster, "chatty")?;
    let folder = live.parent().context("a log has a folder")?.to_path_buf();
    let files = || -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&folder)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    };
    // Barrier: rotated at least three times (the first rotated file pruned since).
    let first = wait::retry(WAIT, || {
        let names = files()?;
        let rotated: Vec<&String> = names.iter().filter(|n| n.starts_with("0.log.")).collect();
        ensure!(rotated.len() == 2, "not rotated twice yet: {names:?}");
        Ok(rotated[0].clone())
    })?;
    wait::retry(WAIT, || {
        let names = files()?;
        ensure!(!names.contains(&first), "{first} not pruned yet: {names:?}");
        Ok(())
    })?;
    let names = files()?;
    ensure!(names.len() <= 3, "more than three log files: {names:?}");
    ensure!(
        names.contains(&"0.log".to_owned()),
        "no live log: {names:?}"
    );
    let rotated_size = std::fs::metadata(folder.join(&names[1]))?.len();
    ensure!(
        rotated_size > 16 * 1024,
        "rotated under the limit: {rotated_size}"
    );
    let node = cluster.get_json(&["nodes"])?;
    let info = &node["items"][0]["status"]["nodeInfo"];
    ensure!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://1.")),
        "{info}"
    );
    Ok(())
}

#[test]
fn bad_input_ends_in_the_statuses_kubectl_users_know_and_the_node_stays_ready() -> Result<()> {
    let mut cluster = start("ctr-bad")?;
    cluster.apply(&pod(
        "missing",
        "Always",
        &json!({"name": "c", "image": "localhost:5000/skiff/missing:v1"}),
    ))?;
    cluster.apply(&pod("crashes", "Always", &shell("echo bye; exit 3")))?;
    cluster.apply(&pod(
        "invalid",
        "Always",
        &json!({"name": "c", "image": BUSYBOX_IMAGE, "command": ["/no/such/program"]}),
    ))?;
    wait::retry(WAIT, || {
        let waiting = container_status(&cluster, "missing")?["state"]["waiting"].clone();
        ensure!(
            matches!(
                waiting["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            ),
            "missing: {waiting}"
        );
        let reasons = event_reasons(&cluster, "missing")?;
        ensure!(
            reasons
                .iter()
                .any(|(r, m)| r == "Failed" && m.contains("localhost:5000/skiff/missing:v1")),
            "no pull failure event: {reasons:?}"
        );
        Ok(())
    })?;
    wait::retry(WAIT, || {
        let status = container_status(&cluster, "crashes")?;
        ensure!(
            status["state"]["waiting"]["reason"] == "CrashLoopBackOff",
            "crashes: {status}"
        );
        ensure!(
            status["lastState"]["terminated"]["exitCode"] == 3,
            "{status}"
        );
        ensure!(status["restartCount"].as_u64() >= Some(1), "{status}");
        Ok(())
    })?;
    wait::retry(WAIT, || {
        let status = container_status(&cluster, "invalid")?;
        let reason = status["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            matches!(reason, "RunContainerError" | "CrashLoopBackOff"),
            "invalid: {status}"
        );
        let reasons = event_reasons(&cluster, "invalid")?;
        ensure!(
            reasons
                .iter()
                .any(|(r, m)| r == "Failed" && m.contains("/no/such/program")),
            "no start failure event: {reasons:?}"
        );
        Ok(())
    })?;
    // The registry goes away: a pull now fails with the reason, and what runs keeps running.
    cluster.stop_registry()?;
    cluster.apply(&pod(
        "unreachable",
        "Always",
        &json!({"name": "c", "image": "localhost:5000/skiff/busybox:other", "command": ["sleep", "9"]}),
    ))?;
    wait::retry(WAIT, || {
        let waiting = container_status(&cluster, "unreachable")?["state"]["waiting"].clone();
        ensure!(
            matches!(
                waiting["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            ),
            "unreachable: {waiting}"
        );
        Ok(())
    })?;
    ensure!(node_ready(&cluster)?, "the node is not Ready");
    // containerd itself goes away: the node says NotReady, and why, until it is back.
    cluster.stop_containerd(1)?;
    wait::retry(WAIT, || {
        let nodes = cluster.get_json(&["nodes"])?;
        let ready = condition(&nodes["items"][0], "Ready")
            .cloned()
            .unwrap_or_default();
        ensure!(
            ready["status"] == "False"
                && ready["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("container runtime not ready")),
            "still {ready}"
        );
        Ok(())
    })?;
    cluster.start_containerd(1)?;
    wait::retry(WAIT, || {
        ensure!(node_ready(&cluster)?, "not Ready again");
        Ok(())
    })?;
    Ok(())
}

/// The Pods with the test label: name → (phase, IP).
fn test_pods(cluster: &Cluster) -> Result<Vec<(String, String, String)>> {
    let list = cluster.get_json(&["pods", "-l", "test=containers"])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&p["metadata"]["name"]),
                text(&p["status"]["phase"]),
                text(&p["status"]["podIP"]),
            )
        })
        .collect())
}

#[test]
fn fifty_pods_come_and_go_with_containerd_killed_once_and_leave_nothing() -> Result<()> {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 10;
    let mut cluster = start("ctr-churn")?;
    let node = cluster.topology().node(1).clone();
    let server =
        json!({"name": "c", "image": TEST_SERVER_IMAGE, "imagePullPolicy": "IfNotPresent"});
    for round in 0..ROUNDS {
        for k in 0..PER_ROUND {
            cluster.apply(&pod(&format!("churn-{round}-{k}"), "Always", &server))?;
        }
        if round == ROUNDS / 2 {
            // Mid-flight: sandboxes are being made while containerd dies and comes back.
            cluster.restart_containerd(1)?;
        }
        let running = wait::retry(WAIT * 2, || {
            let pods = test_pods(&cluster)?;
            let running = pods
                .iter()
                .filter(|(_, phase, _)| phase == "Running")
                .count();
            ensure!(
                running == PER_ROUND,
                "round {round}: {running} of {PER_ROUND} running"
            );
            Ok(pods)
        })?;
        let addresses: BTreeSet<&str> = running.iter().map(|(_, _, ip)| ip.as_str()).collect();
        ensure!(
            addresses.len() == PER_ROUND && !addresses.contains(""),
            "round {round}: an address handed out twice or missing: {running:?}"
        );
        cluster.kubectl(&["delete", "pods", "-l", "test=containers", "--wait=false"])?;
        wait::retry(WAIT * 2, || {
            let left = test_pods(&cluster)?;
            ensure!(left.is_empty(), "round {round}: still there: {left:?}");
            Ok(())
        })?;
    }
    // Nothing left: no sandbox or container in containerd, no Pod network namespace or veth,
    // no address reserved, no Pod cgroup.
    let socket = cluster.containerd_dirs(1)?.socket;
    let socket = socket.to_string_lossy();
    let containers = node.netns.exec(
        &[
            "ctr",
            "--address",
            &socket,
            "-n",
            "k8s.io",
            "containers",
            "ls",
            "-q",
        ],
        Duration::from_secs(20),
    )?;
    ensure!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
    let netns_dir = cluster
        .containerd_dirs(1)?
        .state
        .join("io.containerd.grpc.v1.cri/netns");
    let left_netns: Vec<String> = std::fs::read_dir(&netns_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        left_netns.is_empty(),
        "network namespaces left: {left_netns:?}"
    );
    // The node's own eth0 is a veth to the underlay; every other one was a Pod's.
    let links = node.netns.ip(&["-o", "link", "show", "type", "veth"])?;
    let pod_links: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|name| !name.starts_with("eth0@"))
        .collect();
    ensure!(pod_links.is_empty(), "Pod veths left: {pod_links:?}");
    let ipam: Value = serde_json::from_slice(&std::fs::read(
        cluster.node_root(1).join("ipam/skiff/state.json"),
    )?)?;
    let reserved = ipam["reservations"].as_object().map_or(0, |r| r.len());
    ensure!(reserved == 0, "addresses still reserved: {ipam}");
    // In every hierarchy: on a hybrid machine runc makes v1 cgroups as well.
    let v2 = skiff_tests::kernelfs::cgroup2_mount().context("no cgroup2")?;
    let relative = cluster.node_cgroup(1)?.strip_prefix(&v2)?.to_path_buf();
    let pod_cgroups: Vec<PathBuf> = skiff_tests::kernelfs::cgroup_mounts()
        .into_iter()
        .flat_map(|hierarchy| {
            std::fs::read_dir(hierarchy.join(&relative))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pod-"))
        })
        .collect();
    ensure!(pod_cgroups.is_empty(), "Pod cgroups left: {pod_cgroups:?}");
    Ok(())
}

/// The image references node 1's containerd holds.
fn node_images(cluster: &Cluster) -> Result<Vec<String>> {
    let socket = cluster.containerd_dirs(1)?.socket;
    let socket = socket.to_string_lossy();
    let listed = cluster.topology().node(1).netns.exec(
        &[
            "ctr",
            "--address",
            &socket,
            "-n",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ],
        Duration::from_secs(20),
    )?;
    Ok(listed.lines().map(str::to_owned).collect())
}

#[test]
fn unused_images_are_collected_and_the_sandbox_image_stays() -> Result<()> {
    // Every second, and as if the disk were always full: whatever no container runs goes.
    let cluster = start_with(
        "ctr-gc",
        &[
            "--image-gc-high-threshold",
            "0",
            "--image-gc-low-threshold",
            "0",
            "--image-gc-period",
            "1",
        ],
    )?;
    cluster.apply(&pod("user", "Always", &shell("sleep 3600")))?;
    cluster.apply(&pod(
        "passing",
        "Always",
        &json!({"name": "c", "image": TEST_SERVER_IMAGE}),
    ))?;
    wait::retry(WAIT, || {
        for name in ["user", "passing"] {
            let status = container_status(&cluster, name)?;
            ensure!(status["state"]["running"].is_object(), "{name}: {status}");
        }
        Ok(())
    })?;
    cluster.kubectl(&["delete", "pod", "passing"])?;
    // Barrier: the test server's image, unused now, goes...
    wait::retry(WAIT, || {
        let images = node_images(&cluster)?;
        ensure!(
            !images.iter().any(|i| i.contains("skiff/test-server")),
            "still held: {images:?}"
        );
        Ok(())
    })?;
    // ...while the image a container runs and the sandbox image stay.
    let images = node_images(&cluster)?;
    ensure!(
        images.iter().any(|i| i.contains("skiff/busybox")),
        "{images:?}"
    );
    ensure!(
        images.iter().any(|i| i.contains("skiff/pause")),
        "{images:?}"
    );
    cluster.kubectl(&["delete", "pod", "user"])?;
    wait::retry(WAIT, || {
        let images = node_images(&cluster)?;
        ensure!(
            !images.iter().any(|i| i.contains("skiff/busybox")),
            "still held: {images:?}"
        );
        ensure!(
            images.iter().any(|i| i.contains("skiff/pause")),
            "{images:?}"
        );
        Ok(())
    })?;
    Ok(())
}
