//! skiff-node running real Pods in a netns cluster, as a user drives it with kubectl: a
//! Deployment of the test server spreads over the nodes with addresses from each node's
//! podCIDR and the Pods reach each other across nodes; containers of one Pod share localhost;
//! readiness decides EndpointSlice membership; deletion removes processes, namespace and
//! address; a killed container restarts; a killed agent leaves its Pods running; each Pod reads
//! the resolv.conf, /etc/hosts and hostname Kubernetes gives it while the node keeps its own.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use skiff_tests::objects::has_condition;
use skiff_tests::{Cluster, ClusterOptions, wait};

const WAIT: Duration = Duration::from_secs(60);

fn pods(cluster: &Cluster, selector: &str) -> Result<Vec<Value>> {
    let list = cluster.get_json(&["pods", "-l", selector])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn is_ready(pod: &Value) -> bool {
    has_condition(pod, "Ready")
}

fn text<'a>(value: &'a Value, what: &str) -> Result<&'a str> {
    value
        .as_str()
        .with_context(|| format!("no {what} in {value}"))
}

/// Waits for `count` Running, Ready Pods matching `selector`.
fn ready_pods(cluster: &Cluster, selector: &str, count: usize) -> Result<Vec<Value>> {
    wait::retry(WAIT, || {
        let list = pods(cluster, selector)?;
        let ready: Vec<Value> = list
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running" && is_ready(p))
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        ensure!(ready.len() == count, "{} of {count} ready", ready.len());
        Ok(ready)
    })
}

fn pod_netns(cluster: &Cluster, pod: &Value) -> Result<skiff_tests::Netns> {
    let node = text(&pod["spec"]["nodeName"], "nodeName")?;
    let uid = text(&pod["metadata"]["uid"], "uid")?;
    Ok(cluster.pod_netns(node, uid))
}

/// `curl` from inside a Pod; the answer of the test server is "NAME CLIENT_IP".
fn curl_from(cluster: &Cluster, from: &Value, url: &str) -> Result<String> {
    let ns = pod_netns(cluster, from)?;
    ns.exec(
        &["curl", "-sS", "--max-time", "5", url],
        Duration::from_secs(10),
    )
}

fn node_cidr(cluster: &Cluster, node: &str) -> Result<Ipv4Net> {
    let node = cluster.get_json(&["node", node])?;
    Ok(text(&node["spec"]["podCIDR"], "podCIDR")?.parse()?)
}

fn start(label: &str, nodes: usize) -> Result<Cluster> {
    start_with(label, nodes, &[])
}

fn start_with(label: &str, nodes: usize, agent_args: &[&str]) -> Result<Cluster> {
    let cluster = Cluster::start(&ClusterOptions {
        agent_args: agent_args.iter().map(|a| (*a).to_owned()).collect(),
        ..ClusterOptions::nodes(nodes, label)
    })?;
    wait::retry(WAIT, || {
        let list = cluster.get_json(&["nodes"])?;
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["spec"]["podCIDR"].is_string())
            .count();
        ensure!(ready == nodes, "{ready} of {nodes} nodes have a podCIDR");
        Ok(())
    })?;
    Ok(cluster)
}

#[test]
fn a_deployment_runs_one_ready_pod_per_node_and_pods_reach_each_other() -> Result<()> {
    let cluster = start("pods-deploy", 3)?;
    cluster.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=skiff/test-server",
        "--replicas=3",
    ])?;
    let list = ready_pods(&cluster, "app=web", 3)?;
    let mut nodes: Vec<&str> = Vec::new();
    for pod in &list {
        let node = text(&pod["spec"]["nodeName"], "nodeName")?;
        let ip: Ipv4Addr = text(&pod["status"]["podIP"], "podIP")?.parse()?;
        let cidr = node_cidr(&cluster, node)?;
        ensure!(cidr.contains(&ip), "{ip} is not in {node}'s {cidr}");
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
        nodes.push(node);
    }
    nodes.sort();
    assert_eq!(nodes, ["node1", "node2", "node3"], "one per node");
    let wide = cluster.kubectl(&["get", "pods", "-o", "wide"])?;
    for pod in &list {
        let ip = text(&pod["status"]["podIP"], "podIP")?;
        ensure!(
            wide.contains(ip),
            "kubectl get pods -o wide lacks {ip}:\n{wide}"
        );
    }
    // Every Pod reaches every other, across nodes, and is seen with its own address (no NAT).
    for from in &list {
        for to in &list {
            let url = format!("http://{}:8080/", text(&to["status"]["podIP"], "podIP")?);
            let reply = curl_from(&cluster, from, &url)?;
            let (name, client) = reply.trim().split_once(' ').context("not NAME CLIENT")?;
            let client_ip = client.rsplit_once(':').map_or(client, |(ip, _)| ip);
            assert_eq!(
                (name, client_ip),
                (
                    text(&to["metadata"]["name"], "name")?,
                    text(&from["status"]["podIP"], "podIP")?
                ),
                "{url} from {}",
                from["metadata"]["name"]
            );
        }
    }
    Ok(())
}

#[test]
fn containers_share_localhost_and_readiness_decides_endpoints() -> Result<()> {
    let cluster = start("pods-ready", 1)?;
    let flag: PathBuf = cluster.node_root(1).join("ready-flag");
    let flag_text = flag.to_string_lossy().into_owned();
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "duo", "namespace": "default", "labels": {"app": "duo"}},
        "spec": {"containers": [
            {"name": "server", "image": "skiff/test-server", "ports": [{"containerPort": 8080}],
             "readinessProbe": {"exec": {"command": ["test", "-f", flag_text]},
                                "periodSeconds": 1}},
            {"name": "sidecar", "image": "skiff/test-server",
             "args": ["--http-port", "9090", "--udp-port", "9091"],
             "readinessProbe": {"exec": {"command": ["curl", "-sf", "http://localhost:8080/healthz"]},
                                "periodSeconds": 1}}
        ]}
    }))?;
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "duo", "namespace": "default"},
        "spec": {"selector": {"app": "duo"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let endpoint_ready = || -> Result<Option<bool>> {
        let slices =
            cluster.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=duo"])?;
        let endpoints: Vec<Value> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .collect();
        Ok(endpoints.first().map(|e| e["conditions"]["ready"] == true))
    };
    // Running, the sidecar ready (it reached the server on localhost), the server not.
    let pod = wait::retry(WAIT, || {
        let pod = cluster.get_json(&["pod", "duo"])?;
        let statuses = pod["status"]["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready: Vec<bool> = statuses.iter().map(|s| s["ready"] == true).collect();
        ensure!(ready == [false, true], "container readiness {ready:?}");
        ensure!(
            endpoint_ready()? == Some(false),
            "endpoint not listed as not ready yet"
        );
        Ok(pod)
    })?;
    assert!(!is_ready(&pod));
    std::fs::write(&flag, "")?;
    wait::retry(WAIT, || {
        ensure!(endpoint_ready()? == Some(true), "endpoint not ready yet");
        Ok(())
    })?;
    assert!(is_ready(&cluster.get_json(&["pod", "duo"])?));
    Ok(())
}

/// A pid from one of a container run's state files (`started.json`: the container,
/// `shim.json`: its shim).
fn state_pid(
    cluster: &Cluster,
    uid: &str,
    container: &str,
    attempt: u32,
    file: &str,
) -> Result<i32> {
    let file = cluster.node_root(1).join(format!(
        "pods/{uid}/containers/{container}/{attempt}/{file}"
    ));
    let state: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    state["pid"].as_i64().map(|p| p as i32).context("no pid")
}

fn started_pid(cluster: &Cluster, uid: &str, container: &str, attempt: u32) -> Result<i32> {
    state_pid(cluster, uid, container, attempt, "started.json")
}

fn sigkill(pid: i32) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(pid);
    Ok(nix::sys::signal::kill(
        pid,
        nix::sys::signal::Signal::SIGKILL,
    )?)
}

/// Waits until Pod `pod`'s container is ready again after `restarts` restarts, the last run
/// having ended with `field` = `value`.
fn ready_after_restart(
    cluster: &Cluster,
    pod: &str,
    restarts: u32,
    (field, value): (&str, Value),
) -> Result<()> {
    wait::retry(WAIT, || {
        let pod = cluster.get_json(&["pod", pod])?;
        let status = &pod["status"]["containerStatuses"][0];
        ensure!(
            status["restartCount"] == restarts && status["ready"] == true,
            "{status}"
        );
        ensure!(
            status["lastState"]["terminated"][field] == value,
            "{status}"
        );
        Ok(())
    })
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn killed_containers_and_shims_restart_deleted_pods_leave_nothing_and_a_killed_agent_leaves_pods_running()
-> Result<()> {
    let mut cluster = start("pods-life", 1)?;
    cluster.kubectl(&["run", "solo", "--image=skiff/test-server", "--port=8080"])?;
    let pod = ready_pods(&cluster, "run=solo", 1)?.remove(0);
    let uid = text(&pod["metadata"]["uid"], "uid")?.to_owned();
    let ip = text(&pod["status"]["podIP"], "podIP")?.to_owned();
    let node = cluster.topology().node(1).netns.clone();
    let url = format!("http://{ip}:8080/hostname");

    // A killed container comes back with a higher restart count.
    let first = started_pid(&cluster, &uid, "solo", 0)?;
    sigkill(first)?;
    ready_after_restart(&cluster, "solo", 1, ("exitCode", json!(137)))?;
    let killed = started_pid(&cluster, &uid, "solo", 1)?;
    assert_ne!(first, killed);

    // A killed shim takes its container along, and the next run gets the port (not a crash
    // loop on an address in use).
    sigkill(state_pid(&cluster, &uid, "solo", 1, "shim.json")?)?;
    ready_after_restart(
        &cluster,
        "solo",
        2,
        ("reason", json!("ContainerStatusUnknown")),
    )?;
    assert!(!alive(killed), "the container of the killed shim is gone");
    let second = started_pid(&cluster, &uid, "solo", 2)?;
    assert_eq!(
        node.exec(
            &["curl", "-sS", "--max-time", "5", &url],
            Duration::from_secs(10)
        )?
        .trim(),
        "solo"
    );

    // The agent is killed: the Pod keeps running and answering; a new agent adopts it.
    cluster.kill_agent(1)?;
    let reply = node.exec(
        &["curl", "-sS", "--max-time", "5", &url],
        Duration::from_secs(10),
    )?;
    assert_eq!(reply.trim(), "solo");
    cluster.start_agent(1)?;
    // Barrier: a Pod created after the restart runs, so the new agent has listed, adopted and
    // synced what it found (a wrong restart of `solo` would have happened by now).
    cluster.kubectl(&["run", "after", "--image=skiff/test-server", "--port=8080"])?;
    ready_pods(&cluster, "run=after", 1)?;
    assert!(alive(second), "the container survived the agent's restart");
    assert_eq!(
        started_pid(&cluster, &uid, "solo", 2)?,
        second,
        "not restarted"
    );
    let pod = ready_pods(&cluster, "run=solo", 1)?.remove(0);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 2);
    let reply = node.exec(
        &["curl", "-sS", "--max-time", "5", &url],
        Duration::from_secs(10),
    )?;
    assert_eq!(reply.trim(), "solo");
    let nodes = cluster.get_json(&["nodes"])?;
    assert!(has_condition(&nodes["items"][0], "Ready"));

    // Deleted: processes, namespace and address reservation are gone, then the Pod object.
    let netns = pod_netns(&cluster, &pod)?;
    cluster.kubectl(&["delete", "pod", "solo", "after", "--wait=false"])?;
    wait::retry(WAIT, || {
        let left = cluster.kubectl(&["get", "pods", "-o", "name"])?;
        ensure!(left.trim().is_empty(), "still listed: {left}");
        Ok(())
    })?;
    assert!(!alive(second), "the container process is gone");
    let namespaces = skiff_tests::cmd::ip(&["netns", "list"])?;
    assert!(
        !namespaces.contains(netns.name()),
        "{} still exists",
        netns.name()
    );
    let ipam: Value = serde_json::from_slice(&std::fs::read(
        cluster.node_root(1).join("ipam/skiff/state.json"),
    )?)?;
    if ipam["reservations"].to_string().contains(&ip) {
        bail!("{ip} still reserved: {ipam}");
    }
    Ok(())
}

#[test]
fn ended_containers_follow_their_restart_policy_and_unknown_images_wait() -> Result<()> {
    let cluster = start("pods-policy", 1)?;
    let pod = |name: &str, policy: &str, container: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"restartPolicy": policy, "containers": [container]}})
    };
    let shell =
        |script: &str| json!({"name": "c", "image": "busybox", "command": ["sh", "-c", script]});
    cluster.apply(&pod("fails", "Never", shell("exit 3")))?;
    cluster.apply(&pod("succeeds", "OnFailure", shell("exit 0")))?;
    cluster.apply(&pod(
        "missing",
        "Always",
        json!({"name": "c", "image": "nginx:1.27"}),
    ))?;
    cluster.apply(&pod(
        "unhealthy",
        "Always",
        json!({"name": "c", "image": "skiff/test-server",
        "livenessProbe": {"tcpSocket": {"port": 7777}, "periodSeconds": 1, "failureThreshold": 2}}),
    ))?;
    wait::retry(WAIT, || {
        let fails = cluster.get_json(&["pod", "fails"])?;
        let status = &fails["status"]["containerStatuses"][0];
        ensure!(
            fails["status"]["phase"] == "Failed",
            "fails: {}",
            fails["status"]
        );
        assert_eq!(status["state"]["terminated"]["exitCode"], 3);
        assert_eq!(status["restartCount"], 0);
        let succeeds = cluster.get_json(&["pod", "succeeds"])?;
        ensure!(
            succeeds["status"]["phase"] == "Succeeded",
            "succeeds: {}",
            succeeds["status"]
        );
        let missing = cluster.get_json(&["pod", "missing"])?;
        let waiting = &missing["status"]["containerStatuses"][0]["state"]["waiting"];
        ensure!(
            waiting["reason"] == "ErrImagePull",
            "missing: {}",
            missing["status"]
        );
        assert_eq!(missing["status"]["phase"], "Pending");
        let unhealthy = cluster.get_json(&["pod", "unhealthy"])?;
        let restarts = unhealthy["status"]["containerStatuses"][0]["restartCount"].as_u64();
        ensure!(restarts >= Some(1), "unhealthy: {}", unhealthy["status"]);
        Ok(())
    })?;
    let events =
        cluster.get_json(&["events", "--field-selector", "involvedObject.name=missing"])?;
    let messages: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "Failed")
        .filter_map(|e| e["message"].as_str())
        .collect();
    ensure!(
        messages
            .iter()
            .any(|m| m.contains("image \"nginx:1.27\" is not in the image catalog")),
        "events: {messages:?}"
    );
    let unhealthy = cluster.get_json(&[
        "events",
        "--field-selector",
        "involvedObject.name=unhealthy",
    ])?;
    ensure!(
        unhealthy["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Unhealthy"),
        "no Unhealthy event"
    );
    Ok(())
}

/// What a run of container `c` of Pod `uid` on node 1 printed (the process runtime's log), once
/// it printed `done`.
fn run_output(cluster: &Cluster, uid: &str, attempt: u32) -> Result<Vec<String>> {
    let log = cluster
        .node_root(1)
        .join(format!("pods/{uid}/containers/c/{attempt}/log"));
    wait::retry(WAIT, || {
        let text =
            std::fs::read_to_string(&log).with_context(|| format!("no {}", log.display()))?;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        ensure!(lines.iter().any(|l| l == "done"), "not done yet: {lines:?}");
        Ok(lines)
    })
}

/// The node's resolv.conf, hosts file, hostname, and whatever is mounted on the first two.
fn node_files() -> Result<(String, String, String, Vec<String>)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts = table
        .lines()
        .filter(|l| matches!(l.split(' ').nth(4), Some("/etc/resolv.conf" | "/etc/hosts")))
        .map(str::to_owned)
        .collect();
    Ok((
        std::fs::read_to_string("/etc/resolv.conf")?,
        std::fs::read_to_string("/etc/hosts")?,
        std::fs::read_to_string("/proc/sys/kernel/hostname")?,
        mounts,
    ))
}

/// `db-0`'s view: the cluster DNS first, its FQDN in /etc/hosts, its aliases, its hostname.
fn check_cluster_first(lines: &[String], ip: &str) -> Result<()> {
    let has = |line: &str| lines.iter().any(|l| l == line);
    ensure!(
        lines[0].starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "search path: {lines:?}"
    );
    let servers: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    ensure!(servers == ["nameserver 10.96.0.10"], "{lines:?}");
    for line in [
        "options ndots:5",
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        &format!("{ip}\tdb-0.dbs.default.svc.cluster.local\tdb-0"),
        "# Entries added by HostAliases.",
        "192.0.2.1\tfoo.local\tbar.local",
        "host=db-0",
    ] {
        ensure!(has(line), "no {line:?} in {lines:?}");
    }
    Ok(())
}

#[test]
fn pods_read_their_own_resolv_conf_hosts_and_hostname_and_the_node_keeps_its_own() -> Result<()> {
    let before = node_files()?;
    let mut cluster = start_with("pods-files", 1, &["--cluster-dns", "10.96.0.10"])?;
    let script = "cat /etc/resolv.conf /etc/hosts; echo host=$(cat /proc/sys/kernel/hostname); \
                  echo done; sleep 3600";
    let shell = json!({"name": "c", "image": "busybox", "command": ["sh", "-c", script]});
    // The exec probe sees what the containers see.
    let probe = "grep -qx 'nameserver 10.96.0.10' /etc/resolv.conf && \
                 test \"$(cat /proc/sys/kernel/hostname)\" = db-0";
    let mut db = shell.clone();
    db["readinessProbe"] = json!({"exec": {"command": ["sh", "-c", probe]}, "periodSeconds": 1});
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db", "namespace": "default", "labels": {"app": "db"}},
        "spec": {"hostname": "db-0", "subdomain": "dbs", "containers": [db],
                 "hostAliases": [{"ip": "192.0.2.1", "hostnames": ["foo.local", "bar.local"]}]}
    }))?;
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "own", "namespace": "default"},
        "spec": {"dnsPolicy": "None", "containers": [shell],
                 "dnsConfig": {"nameservers": ["192.0.2.53"], "searches": ["example.test"],
                               "options": [{"name": "ndots", "value": "2"}]}}
    }))?;
    let pod = ready_pods(&cluster, "app=db", 1)?.remove(0);
    let uid = text(&pod["metadata"]["uid"], "uid")?.to_owned();
    let ip = text(&pod["status"]["podIP"], "podIP")?.to_owned();
    check_cluster_first(&run_output(&cluster, &uid, 0)?, &ip)?;
    let own = wait::retry(WAIT, || {
        let own = cluster.get_json(&["pod", "own"])?;
        ensure!(own["status"]["podIP"].is_string(), "no address yet");
        Ok(own)
    })?;
    let lines = run_output(&cluster, text(&own["metadata"]["uid"], "uid")?, 0)?;
    assert_eq!(
        lines[..3],
        [
            "search example.test",
            "nameserver 192.0.2.53",
            "options ndots:2"
        ],
        "dnsPolicy None: its dnsConfig alone"
    );
    let own_ip = text(&own["status"]["podIP"], "podIP")?;
    ensure!(lines.contains(&format!("{own_ip}\town")), "{lines:?}");
    ensure!(lines.contains(&"host=own".to_owned()), "{lines:?}");
    assert_eq!(node_files()?, before, "the node's files changed");

    // The namespaces outlive the agent: a new agent starts the next run of a container in them.
    cluster.kill_agent(1)?;
    cluster.start_agent(1)?;
    sigkill(started_pid(&cluster, &uid, "c", 0)?)?;
    check_cluster_first(&run_output(&cluster, &uid, 1)?, &ip)?;
    ready_pods(&cluster, "app=db", 1)?;

    // Deleted: the namespaces' pins are unmounted with the rest of the Pod's folder.
    let folder = std::fs::canonicalize(cluster.node_root(1).join("pods"))?.join(&uid);
    cluster.kubectl(&["delete", "pod", "db", "own", "--wait=false"])?;
    wait::retry(WAIT, || {
        let left = cluster.kubectl(&["get", "pods", "-o", "name"])?;
        ensure!(left.trim().is_empty(), "still listed: {left}");
        Ok(())
    })?;
    ensure!(!folder.exists(), "{} is still there", folder.display());
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let folder_text = folder.to_string_lossy();
    ensure!(
        !table.contains(folder_text.as_ref()),
        "still mounted below {folder_text}"
    );
    assert_eq!(node_files()?, before, "the node's files changed");
    Ok(())
}
