//! The eBPF socket load balancer in network namespaces, checked with real traffic.
//!
//! Two nodes; a skiff-test-server on each is a backend of one ClusterIP. The programs are
//! attached to this run's own cgroup (never the root one) and the maps are written through the
//! proxy's real `EbpfDataplane`; a Python client is put into that cgroup inside node1's
//! namespace. Nothing routes the ClusterIP anywhere, so an answer at all proves the socket hook
//! rewrote it; the answers name *which* backend answered, the peer name and UDP reply source
//! must show the ClusterIP, and a Service without endpoints must be refused at once. Needs root
//! and `cargo xtask build-ebpf`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_proxy::Dataplane;
use skiff_proxy::ebpf::{EbpfDataplane, SocketLb, SocketLbConfig};
use skiff_proxy::model::{
    DesiredService, DesiredState, EndpointAddr, Protocol, ServicePort, ServicePortName,
};
use skiff_tests::{Process, Topology, TopologyOptions, binaries, wait};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);

const CLIENT: &str = r#"
import socket, sys, time
cg, proto, ip, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(cg + "/cgroup.procs", "w").write("0")
start = time.monotonic()
try:
    if proto == "tcp":
        s = socket.create_connection((ip, port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        body = s.makefile("rb").read().decode().split("\r\n\r\n", 1)[1].strip()
        print("ok", "%s:%d" % s.getpeername(), body)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(b"hello", (ip, port))
        data, src = s.recvfrom(1000)
        print("ok", "%s:%d" % src, data.decode().strip())
except ConnectionRefusedError:
    print("refused %.3f" % (time.monotonic() - start))
"#;

fn object() -> Result<PathBuf> {
    let path = binaries::target_dir().join("ebpf/bpfel-unknown-none/release/skiff");
    ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask build-ebpf`",
        path.display()
    );
    Ok(path)
}

fn service(ip: Ipv4Addr, port: u16, endpoints: &[(Ipv4Addr, u16)]) -> DesiredService {
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![ip],
            port,
            ..ServicePort::default()
        },
        internal_endpoints: endpoints
            .iter()
            .map(|(ip, port)| EndpointAddr {
                ip: *ip,
                port: *port,
                local: false,
            })
            .collect(),
        external_endpoints: vec![],
        has_endpoints: !endpoints.is_empty(),
        local_ready: 0,
    }
}

fn client(topo: &Topology, cgroup: &Path, proto: &str, ip: Ipv4Addr, port: u16) -> Result<String> {
    let argv = [
        "python3",
        "-c",
        CLIENT,
        &cgroup.display().to_string(),
        proto,
        &ip.to_string(),
        &port.to_string(),
    ];
    let out = topo.node(1).netns.command_keeping_mounts(&argv).output()?;
    ensure!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[test]
fn clusterip_is_balanced_at_the_socket_and_refused_without_endpoints() -> Result<()> {
    skiff_tests::run::require_root()?;
    let object = object()?;
    let topo = Topology::build(&TopologyOptions::nodes(2, "proxy-ebpf"))?;
    let run = topo.run();
    let server = binaries::binary("skiff-test-server")?;
    let server = server.to_str().context("path")?;
    let mut servers = Vec::new();
    for (k, node) in topo.nodes().iter().enumerate() {
        let name = format!("backend{}", k + 1);
        servers.push(Process::spawn(
            run,
            &node.netns,
            &name,
            &[
                server,
                "--name",
                &name,
                "--http-port",
                "8080",
                "--udp-port",
                "8081",
            ],
            &[],
        )?);
    }
    let cgroup = run.cgroup_dir()?;
    let (_lb, maps) = SocketLb::load_and_attach(&SocketLbConfig {
        object,
        pin_dir: run.bpf_pin_dir()?,
        cgroup: cgroup.clone(),
    })?;
    let mut dataplane = EbpfDataplane::new(maps);
    let backends: Vec<Ipv4Addr> = topo.nodes().iter().map(|n| n.ip).collect();
    let name = |n: &str, p| ServicePortName::new("default", n, "", p);
    let desired = DesiredState {
        services: BTreeMap::from([
            (
                name("web", Protocol::Tcp),
                service(VIP, 80, &[(backends[0], 8080), (backends[1], 8080)]),
            ),
            (
                name("dns", Protocol::Udp),
                service(VIP, 53, &[(backends[0], 8081), (backends[1], 8081)]),
            ),
            (name("empty", Protocol::Tcp), service(EMPTY_VIP, 80, &[])),
        ]),
        ..DesiredState::default()
    };
    let report = dataplane.sync(&desired)?;
    ensure!(report.written > 0, "{report:?}");

    // TCP: both backends answer, and the peer name is the ClusterIP.
    let mut answered = BTreeSet::new();
    wait::retry(Duration::from_secs(20), || {
        let line = client(&topo, &cgroup, "tcp", VIP, 80)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(words.first() == Some(&"ok"), "tcp: {line}");
        ensure!(
            words[1] == "10.96.0.10:80",
            "peer name shows the backend: {line}"
        );
        answered.insert(words[2].to_owned());
        ensure!(answered.len() == 2, "only {answered:?} answered so far");
        Ok(())
    })?;

    // UDP (unconnected sendto): answered, and the reply's source is the ClusterIP.
    let line = client(&topo, &cgroup, "udp", VIP, 53)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        words.first() == Some(&"ok") && words[1] == "10.96.0.10:53",
        "udp: {line}"
    );
    ensure!(words[2].starts_with("backend"), "udp answer: {line}");

    // No endpoints: refused, at once.
    let started = Instant::now();
    let line = client(&topo, &cgroup, "tcp", EMPTY_VIP, 80)?;
    ensure!(line.starts_with("refused"), "no endpoints: {line}");
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "refusal took {:?}",
        started.elapsed()
    );

    // A process outside the cgroup is not translated: nothing routes the ClusterIP.
    let out = topo
        .node(1)
        .netns
        .command_keeping_mounts(&[
            "python3",
            "-c",
            "import socket; socket.create_connection(('10.96.0.10', 80), timeout=1)",
        ])
        .output()?;
    ensure!(
        !out.status.success(),
        "a process outside the node cgroup reached the ClusterIP"
    );
    drop(servers);
    Ok(())
}
