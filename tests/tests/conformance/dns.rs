//! Cluster DNS, as Kubernetes' `[sig-network] DNS` conformance tests check it, from Pods whose
//! resolv.conf and /etc/hosts the node agent wrote: Services by short, partial and full names
//! (resolved by skiff-dns behind the kube-dns Service, so every answer rode the proxy), headless
//! Services as their ready Pods, SRV and PTR, ExternalName and a change of its target, Pods by
//! hostname and subdomain and by address, names outside the cluster forwarded upstream, and a
//! Pod with `dnsPolicy: None` and its own `dnsConfig`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use skiff_tests::dns::{CLUSTER_DNS_IP, UPSTREAM_WWW, UPSTREAM_WWW2};
use skiff_tests::{Client, cmd, wait};

use super::{TEST_SERVER_IMAGE, WAIT, World, cluster_ip, web_names, web_service};

/// `argv` run where `client` stands; its stdout, or an error with its stderr.
fn run(client: &Client, argv: &[&str]) -> Result<String> {
    let out = cmd::output(&mut client.command(argv)?, Duration::from_secs(10))?;
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The IPv4 addresses `name` resolves to in `client`'s Pod (glibc, through its resolv.conf).
fn addresses(client: &Client, name: &str) -> Result<BTreeSet<String>> {
    let out = run(client, &["getent", "ahostsv4", name])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Waits until `name` resolves to exactly `want` in `client`'s Pod.
fn resolves_to(client: &Client, name: &str, want: &BTreeSet<String>) -> Result<()> {
    wait::retry(WAIT, || {
        let got = addresses(client, name)?;
        ensure!(&got == want, "{name} resolved to {got:?}, not {want:?}");
        Ok(())
    })
    .with_context(|| format!("resolving {name}"))
}

fn set(items: &[impl ToString]) -> BTreeSet<String> {
    items.iter().map(ToString::to_string).collect()
}

/// A Pod's IP, once it has one.
fn pod_ip(world: &World, name: &str) -> Result<String> {
    wait::retry(WAIT * 2, || {
        let pod = world.cluster.get_json(&["pod", name])?;
        ensure!(has_ready(&pod), "{name} is not ready");
        pod["status"]["podIP"]
            .as_str()
            .map(str::to_owned)
            .context("no podIP yet")
    })
}

fn has_ready(pod: &serde_json::Value) -> bool {
    skiff_tests::objects::has_condition(pod, "Ready")
}

/// Every case of cluster DNS, from a Pod on every node.
pub fn cluster_dns(world: &mut World) -> Result<()> {
    world.cluster.wait_for_dns(WAIT * 2)?;
    world.scale(2)?;
    let web_ip = cluster_ip(&world.service("web")?)?.to_string();
    let pods = world.web_pods()?;
    let names = web_names(&pods);

    // A Service by short, partial and full name; the request rides the proxy to a web Pod.
    for (k, client) in world.pod_clients.iter().enumerate() {
        let resolv = run(client, &["cat", "/etc/resolv.conf"])?;
        ensure!(
            resolv.contains(&format!("nameserver {CLUSTER_DNS_IP}"))
                && resolv
                    .contains("search default.svc.cluster.local svc.cluster.local cluster.local")
                && resolv.contains("ndots:5"),
            "client{} resolv.conf: {resolv}",
            k + 1
        );
        for host in ["web", "web.default", "web.default.svc.cluster.local"] {
            resolves_to(client, host, &set(&[&web_ip]))?;
            let url = format!("http://{host}/");
            let who = wait::retry(WAIT, || client.who_url(&url))?.0;
            ensure!(
                names.contains(&who),
                "{url} answered by {who}, not a web Pod"
            );
        }
    }
    let client = &world.pod_clients[0];

    // Headless: every ready Pod, and only those.
    world
        .cluster
        .apply(&web_service("web-direct", &json!({"clusterIP": "None"})))?;
    let mut ips = BTreeSet::new();
    for (name, _) in &pods {
        ips.insert(pod_ip(world, name)?);
    }
    resolves_to(client, "web-direct", &ips)?;

    // SRV for the named port; PTR for the ClusterIP.
    let srv = run(
        client,
        &[
            "dig",
            "+short",
            "SRV",
            "_http._tcp.web.default.svc.cluster.local",
        ],
    )?;
    ensure!(
        srv.trim() == "0 100 80 web.default.svc.cluster.local.",
        "SRV: {srv}"
    );
    let ptr = run(client, &["dig", "+short", "-x", &web_ip])?;
    ensure!(ptr.trim() == "web.default.svc.cluster.local.", "PTR: {ptr}");

    // ExternalName: its CNAME followed to the upstream's answer; then a new target.
    let mut ext = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "www.example.test"}
    });
    world.cluster.apply(&ext)?;
    resolves_to(client, "ext", &set(&[UPSTREAM_WWW]))?;
    ext["spec"]["externalName"] = json!("www2.example.test");
    world.cluster.apply(&ext)?;
    resolves_to(
        client,
        "ext.default.svc.cluster.local",
        &set(&[UPSTREAM_WWW2]),
    )?;

    // A name outside the cluster, forwarded.
    resolves_to(client, "www.example.test", &set(&[UPSTREAM_WWW]))?;

    // A Pod by hostname and subdomain (its headless Service names it), and by address; its
    // own /etc/hosts names it too.
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "sub"},
        "spec": {"clusterIP": "None", "selector": {"app": "named"},
                 "ports": [{"name": "http", "port": 8080}]}
    }))?;
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "named", "labels": {"app": "named"}},
        "spec": {"hostname": "host-a", "subdomain": "sub",
                 "containers": [{"name": "c", "image": TEST_SERVER_IMAGE}]}
    }))?;
    let named_ip = pod_ip(world, "named")?;
    resolves_to(
        client,
        "host-a.sub.default.svc.cluster.local",
        &set(&[&named_ip]),
    )?;
    let dashed = named_ip.replace('.', "-");
    resolves_to(
        client,
        &format!("{dashed}.default.pod.cluster.local"),
        &set(&[&named_ip]),
    )?;
    let named = world.cluster.pod_client("named")?;
    let hosts = run(&named, &["cat", "/etc/hosts"])?;
    ensure!(
        hosts
            .lines()
            .any(|l| l == format!("{named_ip}\thost-a.sub.default.svc.cluster.local\thost-a")),
        "named's /etc/hosts: {hosts}"
    );

    // dnsPolicy None: only its dnsConfig, whose search path finds the upstream's `www`.
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "custom-dns"},
        "spec": {"dnsPolicy": "None",
                 "dnsConfig": {"nameservers": [CLUSTER_DNS_IP.to_string()],
                               "searches": ["example.test"],
                               "options": [{"name": "ndots", "value": "1"}]},
                 "containers": [{"name": "c", "image": TEST_SERVER_IMAGE}]}
    }))?;
    pod_ip(world, "custom-dns")?;
    let custom = world.cluster.pod_client("custom-dns")?;
    let resolv = run(&custom, &["cat", "/etc/resolv.conf"])?;
    let lines: BTreeSet<&str> = resolv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let nameserver = format!("nameserver {CLUSTER_DNS_IP}");
    ensure!(
        lines
            == BTreeSet::from([
                nameserver.as_str(),
                "search example.test",
                "options ndots:1"
            ]),
        "custom-dns resolv.conf: {resolv}"
    );
    resolves_to(&custom, "www", &set(&[UPSTREAM_WWW]))?;

    for name in [
        "pod/named",
        "pod/custom-dns",
        "service/sub",
        "service/ext",
        "service/web-direct",
    ] {
        world.kubectl(&["delete", name, "--wait=false"])?;
    }
    Ok(())
}
