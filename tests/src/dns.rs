//! Cluster DNS in test clusters: the add-on's manifest as the harness applies it, and NSD, the
//! stock authoritative server, run from a zone file — the upstream skiff-dns forwards to, and
//! the baseline `cargo xtask bench dns` measures it against.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::{Netns, Process, Run, wait};

/// The add-on's manifest, as users and the Vagrant provisioning apply it.
pub const ADDON_MANIFEST: &str = include_str!("../../deploy/addons/dns.yaml");
/// The cluster DNS Service's address (skiff-node's `--cluster-dns`).
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The user skiff-dns authenticates as.
pub const DNS_USER: &str = "system:skiff-dns";
/// The zone the upstream serves (a name outside the cluster, answered through forwarding).
pub const UPSTREAM_ZONE: &str = "example.test";
/// `www.example.test`'s address in [`upstream_zone`].
pub const UPSTREAM_WWW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);
/// `www2.example.test`'s address in [`upstream_zone`].
pub const UPSTREAM_WWW2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 81);

/// The add-on's objects with the node's kubeconfig at `kubeconfig` and names outside the
/// cluster forwarded to `upstreams` (none: the node's resolv.conf). The kubeconfig is mounted
/// at its own path: the process runtime shares the node's filesystem, where a mount point must
/// already exist, and this one does.
pub fn addon_objects(kubeconfig: &Path, upstreams: &[SocketAddr]) -> Result<Vec<Value>> {
    let mut objects: Vec<Value> =
        serde_saphyr::from_multiple(ADDON_MANIFEST).context("deploy/addons/dns.yaml")?;
    let deployment = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .context("the add-on has a Deployment")?;
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["volumes"][0]["hostPath"]["path"] = json!(kubeconfig);
    let container = &mut pod["containers"][0];
    container["volumeMounts"][0]["mountPath"] = json!(kubeconfig);
    let args = container["args"]
        .as_array_mut()
        .context("the container has args")?;
    for arg in args.iter_mut() {
        if arg.as_str().is_some_and(|a| a.starts_with("--kubeconfig=")) {
            *arg = json!(format!("--kubeconfig={}", kubeconfig.display()));
        }
    }
    if !upstreams.is_empty() {
        let list: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        args.push(json!(format!("--upstream={}", list.join(","))));
    }
    Ok(objects)
}

/// A zone file: `origin` with an SOA (negative TTL 30 s), and `records` as `name type data`
/// lines below it.
pub fn zone_file(origin: &str, records: &[String]) -> String {
    let mut text = format!(
        "$ORIGIN {origin}.\n$TTL 60\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 30\n\
         @ IN NS ns.{origin}.\nns IN A 192.0.2.53\n"
    );
    for record in records {
        text.push_str(record);
        text.push('\n');
    }
    text
}

/// The upstream's zone: `www` and `www2` (A), `alias` (CNAME to www).
pub fn upstream_zone() -> String {
    zone_file(
        UPSTREAM_ZONE,
        &[
            format!("www IN A {UPSTREAM_WWW}"),
            format!("www2 IN A {UPSTREAM_WWW2}"),
            "alias IN CNAME www".to_owned(),
        ],
    )
}

/// NSD serving zone files, in a namespace of the run.
#[derive(Debug)]
pub struct Nsd {
    addr: SocketAddr,
    process: Process,
}

impl Nsd {
    /// Starts NSD in `netns` on `addr` (UDP and TCP) serving `zones` (origin, zone file text),
    /// and waits until it answers.
    pub fn start(
        run: &Run,
        netns: &Netns,
        name: &str,
        addr: SocketAddr,
        zones: &[(&str, String)],
    ) -> Result<Nsd> {
        let dir = run.scratch_dir(name)?;
        // `rrl-ratelimit: 0`: Debian's NSD limits answers to 200/s per client /24 by default,
        // which drops a benchmark's (or a busy test's) queries.
        let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
        let mut config = format!(
            "server:\n    ip-address: {}\n    port: {}\n    username: \"\"\n    chroot: \"\"\n    \
             zonesdir: \"{}\"\n    database: \"\"\n    pidfile: \"{}\"\n    xfrdfile: \"{}\"\n    \
             zonelistfile: \"{}\"\n    logfile: \"{}\"\n    server-count: 1\n    verbosity: 1\n    \
             hide-version: yes\n    rrl-ratelimit: 0\nremote-control:\n    control-enable: no\n",
            addr.ip(),
            addr.port(),
            dir.display(),
            path("nsd.pid"),
            path("xfrd.state"),
            path("zone.list"),
            path("nsd.log"),
        );
        for (origin, text) in zones {
            let file = format!("{origin}.zone");
            std::fs::write(dir.join(&file), text)?;
            config.push_str(&format!(
                "zone:\n    name: \"{origin}\"\n    zonefile: \"{file}\"\n"
            ));
        }
        let conf = path("nsd.conf");
        std::fs::write(&conf, config)?;
        let process = Process::spawn(run, netns, name, &["nsd", "-d", "-c", &conf], &[])?;
        wait::wait_for_tcp(Some(netns), addr, Duration::from_secs(20))
            .with_context(|| format!("NSD did not start listening on {addr}"))?;
        Ok(Nsd { addr, process })
    }

    /// Where it answers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Leaves it running after this process exits (`cargo xtask up`); the run's removal stops it.
    pub fn release(self) {
        self.process.release();
    }

    /// Its main process's pid, also the group id of its children (xfrd, the servers).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// `dig +short` of `name`/`qtype` at `server` run in `netns`: the answer lines.
pub fn dig_short(
    netns: &Netns,
    server: SocketAddr,
    name: &str,
    qtype: &str,
) -> Result<Vec<String>> {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let out = netns.output(
        &[
            "dig", "+short", "+time=2", "+tries=1", &at, "-p", &port, name, qtype,
        ],
        Duration::from_secs(10),
    )?;
    ensure!(
        out.status.success(),
        "dig {name} {qtype} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}
