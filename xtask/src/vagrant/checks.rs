//! What `cargo xtask vagrant test` checks on the VMs, the way a user would see it: the demo
//! Service's ClusterIP from every VM and from a Pod on every VM, its name from a Pod on every
//! VM (cluster DNS), its NodePort on every VM
//! address from outside, traffic following a replaced Pod, and no request lost while a node
//! agent restarts. Every answer names the Pod that gave it, so a check asserts who answered,
//! not merely that something did.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use skiff_tests::objects::has_condition;

use super::host;
use super::vms::{self, Settings, node_ip};

/// The demo's Service and its ready Pods.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The ClusterIP.
    pub cluster_ip: String,
    /// The nodePort.
    pub node_port: u16,
    /// Ready Pods by name: their node and uid.
    pub pods: BTreeMap<String, (String, String)>,
}

impl Demo {
    /// The node a Pod named in an answer runs on.
    fn node_of(&self, pod: &str) -> Option<&str> {
        self.pods.get(pod).map(|(node, _)| node.as_str())
    }

    /// A ready Pod on `node`, as (name, uid).
    fn pod_on(&self, node: &str) -> Option<(&str, &str)> {
        self.pods
            .iter()
            .find(|(_, (n, _))| n == node)
            .map(|(name, (_, uid))| (name.as_str(), uid.as_str()))
    }
}

fn ready(object: &Value) -> bool {
    has_condition(object, "Ready")
}

/// The demo's Pods that are not being deleted.
fn demo_pods() -> Result<Vec<Value>> {
    let mut pods = vms::get_json(&["pods", "-l", "app=web"])?;
    let items = pods["items"].as_array_mut().map(std::mem::take);
    Ok(items
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect())
}

/// The demo as it is now.
pub fn current_demo() -> Result<Demo> {
    let service = vms::get_json(&["service", "web"])?;
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .context("the Service web has no ClusterIP")?
        .to_owned();
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("the Service web has no nodePort")? as u16;
    let pods = demo_pods()?
        .into_iter()
        .filter(ready)
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
            let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
            (name.to_owned(), (node.to_owned(), uid.to_owned()))
        })
        .collect();
    Ok(Demo {
        cluster_ip,
        node_port,
        pods,
    })
}

/// Waits until every Node is Ready and the demo's three Pods are, spread over the VMs.
pub fn wait_for_demo(settings: &Settings, timeout: Duration) -> Result<Demo> {
    let want_nodes = settings.nodes.min(3);
    skiff_tests::wait::retry(timeout, || {
        let nodes = vms::get_json(&["nodes"])?;
        let ready_nodes = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| ready(n))
            .count();
        ensure!(
            ready_nodes == settings.nodes,
            "{ready_nodes} of {} Nodes Ready",
            settings.nodes
        );
        let demo = current_demo()?;
        let spread: BTreeSet<&str> = demo.pods.values().map(|(n, _)| n.as_str()).collect();
        ensure!(
            demo.pods.len() == 3 && spread.len() >= want_nodes,
            "{} demo Pods ready, on {spread:?}",
            demo.pods.len()
        );
        Ok(demo)
    })
    .context("the cluster and its demo did not become ready")
}

/// Sends `count` requests with `curl ARGS URL` on `vm` (in the network namespace of the Pod
/// with `pod_uid`, when given) and returns who answered each, `None` for a request that failed.
/// The Pod's namespace is that of a process in its cgroup: its own (process runtime) or one of
/// its containers' (containerd), so the check holds on either runtime.
fn answers(
    vm: &str,
    pod_uid: Option<&str>,
    url: &str,
    count: usize,
) -> Result<Vec<Option<String>>> {
    let prefix = pod_uid.map_or(String::new(), |uid| {
        let cgroup = format!("/sys/fs/cgroup/skiff-pods/pod-{uid}");
        format!(
            "nsenter --net=/proc/$(cat {cgroup}/cgroup.procs {cgroup}/*/cgroup.procs \
             2>/dev/null | head -n1)/ns/net "
        )
    });
    let script = format!(
        "for i in $(seq 1 {count}); do {prefix}curl -sf --max-time 3 {url} || echo FAILED; echo; done"
    );
    let timeout = Duration::from_secs(30 + 4 * count as u64);
    let out = vms::ssh_ok(vm, &script, timeout)?;
    Ok(parse_answers(&out))
}

/// One answer per non-empty line: the Pod's name (the first word), `None` for `FAILED`.
fn parse_answers(out: &str) -> Vec<Option<String>> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .filter(|w| *w != "FAILED")
                .map(str::to_owned)
        })
        .collect()
}

/// The ClusterIP from every VM: every request answered, by Pods on more than one VM.
pub fn cluster_ip_from_every_vm(settings: &Settings, demo: &Demo) -> Result<()> {
    let url = format!("http://{}/", demo.cluster_ip);
    for vm in settings.names() {
        let got = answers(&vm, None, &url, 12)?;
        let nodes = answering_nodes(demo, &got)?;
        println!("  {vm}: curl {url} -> answered from {nodes:?}");
        ensure!(
            settings.nodes == 1 || nodes.len() > 1,
            "from {vm}, {url} was answered only from {nodes:?}"
        );
    }
    Ok(())
}

/// The nodes whose Pods gave `got`; fails on a failed request or an unknown Pod.
fn answering_nodes(demo: &Demo, got: &[Option<String>]) -> Result<BTreeSet<String>> {
    let failed = got.iter().filter(|a| a.is_none()).count();
    ensure!(failed == 0, "{failed} of {} requests failed", got.len());
    got.iter()
        .flatten()
        .map(|pod| {
            demo.node_of(pod)
                .map(str::to_owned)
                .with_context(|| format!("answered by {pod}, not a ready demo Pod"))
        })
        .collect()
}

/// The ClusterIP from a Pod on every VM, reaching Pods on the other VMs.
pub fn cluster_ip_from_a_pod_on_every_vm(settings: &Settings, demo: &Demo) -> Result<()> {
    let url = format!("http://{}/", demo.cluster_ip);
    for vm in settings.names() {
        let Some((pod, uid)) = demo.pod_on(&vm) else {
            println!("  {vm}: no demo Pod here");
            continue;
        };
        let got = answers(&vm, Some(uid), &url, 12)?;
        let nodes = answering_nodes(demo, &got)?;
        println!("  {pod} on {vm}: curl {url} -> answered from {nodes:?}");
        ensure!(
            settings.nodes == 1 || nodes.iter().any(|n| *n != vm),
            "from {pod} on {vm}, {url} never reached another VM's Pod ({nodes:?})"
        );
    }
    Ok(())
}

/// The demo Service by name from a Pod on every VM — `http://web/` and its full name, resolved
/// through the Pod's resolv.conf (search path and all) by the DNS add-on. The VM's curl runs in
/// the Pod's network namespace with a copy of an application container's resolv.conf over its
/// own, in a mount namespace of the command's own (the image has no curl, and its static
/// busybox cannot resolve names with glibc's stub resolver).
pub fn service_name_from_a_pod_on_every_vm(settings: &Settings, demo: &Demo) -> Result<()> {
    for vm in settings.names() {
        let Some((pod, uid)) = demo.pod_on(&vm) else {
            println!("  {vm}: no demo Pod here");
            continue;
        };
        let cgroup = format!("/sys/fs/cgroup/skiff-pods/pod-{uid}");
        for url in ["http://web/", "http://web.default.svc.cluster.local/"] {
            // An application container's process: the sandbox's pause has no resolv.conf.
            let script = format!(
                "pid=$(for p in $(cat {cgroup}/*/cgroup.procs 2>/dev/null); do \
                   grep -q pause /proc/$p/cmdline || {{ echo $p; break; }}; done); \
                 nsenter --net=/proc/$pid/ns/net unshare --mount --propagation private sh -c \
                   'mount -t tmpfs pod-view /tmp && cat /proc/'$pid'/root/etc/resolv.conf \
                    > /tmp/resolv.conf && mount --bind /tmp/resolv.conf /etc/resolv.conf && \
                    for i in $(seq 1 6); do curl -sf --max-time 3 {url} || echo FAILED; echo; done'"
            );
            // The DNS Pods may still be starting after the demo's: a bounded wait for them.
            let nodes = skiff_tests::wait::retry(Duration::from_secs(120), || {
                let got = parse_answers(&vms::ssh_ok(&vm, &script, Duration::from_secs(60))?);
                ensure!(!got.is_empty(), "no answer to {url} from {pod}");
                answering_nodes(demo, &got)
            })
            .with_context(|| format!("the DNS add-on's Pods: {}", dns_pods()))?;
            println!("  {pod} on {vm}: curl {url} -> answered from {nodes:?}");
        }
    }
    Ok(())
}

/// The DNS add-on's Pods as `name node phase ready restarts; ...`, for a failure's message.
fn dns_pods() -> String {
    let Ok(list) = vms::get_json(&["pods", "-n", "kube-system", "-l", "k8s-app=kube-dns"]) else {
        return "cannot list them".to_owned();
    };
    let pods: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            format!(
                "{} on {} {} ready={} restarts={} {}",
                p["metadata"]["name"].as_str().unwrap_or_default(),
                p["spec"]["nodeName"].as_str().unwrap_or_default(),
                p["status"]["phase"].as_str().unwrap_or_default(),
                ready(p),
                status["restartCount"],
                status["state"]
            )
        })
        .collect();
    pods.join("; ")
}

/// The NodePort on every VM's address, from outside the VMs (the host's side of the network).
pub fn node_port_on_every_vm(settings: &Settings, demo: &Demo) -> Result<()> {
    for n in 1..=settings.nodes {
        let url = format!("http://{}:{}/", node_ip(n), demo.node_port);
        let mut nodes = BTreeSet::new();
        for _ in 0..6 {
            let out = skiff_tests::cmd::output(
                host::in_netns("curl").args(["-sf", "--max-time", "3", &url]),
                Duration::from_secs(10),
            )?;
            let reply = String::from_utf8_lossy(&out.stdout);
            let pod = reply
                .split_whitespace()
                .next()
                .filter(|_| out.status.success());
            let pod = pod.with_context(|| format!("curl {url} from the host failed"))?;
            nodes.insert(
                demo.node_of(pod)
                    .with_context(|| format!("{url} answered by {pod}, not a demo Pod"))?
                    .to_owned(),
            );
        }
        println!("  host: curl {url} -> answered from {nodes:?}");
    }
    Ok(())
}

/// A Pod deleted: its replacement answers from every VM, and the deleted one no longer does.
pub fn pod_replaced(settings: &Settings, demo: &Demo) -> Result<Demo> {
    let victim_vm = settings.names().last().cloned().unwrap_or_default();
    let (victim, _) = demo
        .pod_on(&victim_vm)
        .or_else(|| {
            demo.pods
                .iter()
                .next()
                .map(|(p, (_, u))| (p.as_str(), u.as_str()))
        })
        .context("no demo Pod to replace")?;
    let victim = victim.to_owned();
    vms::kubectl(&["delete", "pod", &victim, "--wait=false"])?;
    let started = Instant::now();
    let after = skiff_tests::wait::retry(Duration::from_secs(180), || {
        let now = current_demo()?;
        ensure!(
            now.pods.len() == 3 && !now.pods.contains_key(&victim),
            "waiting for a replacement of {victim}: ready {:?}",
            now.pods.keys()
        );
        Ok(now)
    })?;
    let fresh: Vec<&String> = after
        .pods
        .keys()
        .filter(|p| !demo.pods.contains_key(*p))
        .collect();
    let [fresh] = fresh[..] else {
        bail!("expected one new Pod, got {fresh:?}");
    };
    println!(
        "  {victim} deleted; {fresh} on {} ready after {:.1}s",
        after.node_of(fresh).unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    let url = format!("http://{}/", demo.cluster_ip);
    for vm in settings.names() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = answers(&vm, None, &url, 6)?;
            if got.iter().flatten().any(|p| p == fresh) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "from {vm}, {fresh} never answered: {got:?}"
            );
        }
        let got = answers(&vm, None, &url, 12)?;
        let nodes = answering_nodes(&after, &got)
            .with_context(|| format!("from {vm} after {victim} was replaced"))?;
        println!("  {vm}: {fresh} answers, {victim} no longer does (answered from {nodes:?})");
    }
    Ok(after)
}

/// `systemctl restart skiff-node` on one VM while that VM sends requests to the ClusterIP every
/// 50 ms: none may fail, and the agent must really have restarted.
pub fn agent_restart_under_loop(settings: &Settings, demo: &Demo) -> Result<()> {
    // A worker with a demo Pod, node2 when it has one: its containers must outlive the agent.
    let names = settings.names();
    let vm = names
        .iter()
        .skip(usize::from(settings.nodes > 1))
        .find(|vm| demo.pod_on(vm).is_some())
        .context("no VM runs a demo Pod")?
        .as_str();
    let containers_before = containers_on(vm)?;
    let url = format!("http://{}/", demo.cluster_ip);
    let script = format!(
        r#"before=$(systemctl show -p MainPID --value skiff-node)
(sleep 3; systemctl restart skiff-node) &
ok=0; failed=0; end=$((SECONDS + 25))
while [ $SECONDS -lt $end ]; do
    if curl -sf -o /dev/null --max-time 2 {url}; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
    sleep 0.05
done
wait
after=$(systemctl show -p MainPID --value skiff-node)
echo "$ok $failed $before $after $(systemctl is-active skiff-node)""#
    );
    let out = vms::ssh_ok(vm, &script, Duration::from_secs(120))?;
    let fields: Vec<&str> = out.split_whitespace().collect();
    let [ok, failed, before, after, state] = fields[..] else {
        bail!("unexpected output from the loop on {vm}: {out}");
    };
    println!(
        "  {vm}: skiff-node restarted (pid {before} -> {after}, {state}) under a loop: \
         {ok} requests answered, {failed} failed"
    );
    ensure!(
        before != after && state == "active",
        "skiff-node on {vm} did not restart"
    );
    ensure!(
        failed == "0",
        "{failed} requests failed while skiff-node restarted on {vm}"
    );
    ensure!(
        ok.parse::<u32>().unwrap_or(0) >= 20,
        "only {ok} requests ran"
    );
    // The agent restarted; its Pods did not (as with a kubelet and containerd's shims).
    let containers_after = skiff_tests::wait::retry(Duration::from_secs(60), || {
        let now = containers_on(vm)?;
        ensure!(
            now.keys().eq(containers_before.keys()) && now.values().all(|(_, _, ready)| *ready),
            "waiting for the Pods on {vm} to be ready: {now:?}"
        );
        Ok(now)
    })?;
    ensure!(
        containers_after == containers_before,
        "the containers on {vm} did not outlive the agent: before {containers_before:?}, \
         after {containers_after:?}"
    );
    println!(
        "  {vm}: its Pods kept their containers ({:?})",
        containers_after.keys()
    );
    Ok(())
}

/// The demo Pods on `vm`: their container ID, restart count and readiness.
fn containers_on(vm: &str) -> Result<BTreeMap<String, (String, u64, bool)>> {
    Ok(demo_pods()?
        .iter()
        .filter(|p| p["spec"]["nodeName"] == vm)
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (
                    status["containerID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    status["restartCount"].as_u64().unwrap_or_default(),
                    ready(p),
                ),
            )
        })
        .collect())
}

/// Switches every VM's proxy to `mode` the way an operator would (the setting in
/// /etc/skiff/skiff-node.env, then a restart), and waits until each runs it.
pub fn switch_proxy_mode(settings: &Settings, mode: &str) -> Result<()> {
    for vm in settings.names() {
        vms::ssh_ok(
            &vm,
            &format!(
                "sed -i 's/^PROXY_MODE=.*/PROXY_MODE={mode}/' /etc/skiff/skiff-node.env && \
                 systemctl restart skiff-node"
            ),
            Duration::from_secs(120),
        )?;
    }
    // eBPF mode pins its program links; iptables mode has KUBE-SERVICES, and each removes the
    // other's once its own first sync is in.
    let probe = "links=$(ls /sys/fs/bpf/skiff 2>/dev/null | grep -c '^link_'); \
                 if iptables -t nat -S KUBE-SERVICES >/dev/null 2>&1; then echo iptables $links; \
                 else echo ebpf $links; fi";
    for vm in settings.names() {
        skiff_tests::wait::retry(Duration::from_secs(180), || {
            let out = vms::ssh_ok(&vm, probe, Duration::from_secs(30))?;
            let fields: Vec<&str> = out.split_whitespace().collect();
            let running = match fields[..] {
                ["iptables", "0"] => "iptables",
                ["ebpf", links] if links != "0" => "ebpf",
                _ => "switching",
            };
            ensure!(running == mode, "{vm} runs {running} ({})", out.trim());
            Ok(())
        })?;
        println!("  {vm}: proxy mode {mode}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_answers;

    #[test]
    fn answers_name_the_pod_or_a_failure() {
        let out = "web-1 10.244.0.1:5000\n\nFAILED\n\nweb-2 10.244.1.0:1234\n";
        assert_eq!(
            parse_answers(out),
            vec![Some("web-1".to_owned()), None, Some("web-2".to_owned())]
        );
    }
}
