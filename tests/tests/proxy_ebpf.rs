//! The eBPF socket load balancer in network namespaces, checked with real traffic.
//!
//! Two nodes; a skiff-test-server on each is a backend of the Services. The programs are
//! attached to this run's own cgroup (never the root one) and the maps are written through the
//! proxy's real `SocketLbPlane`; a Python client is put into that cgroup inside node1's
//! namespace. Nothing routes the ClusterIP anywhere (and nothing listens on the node port), so
//! an answer at all proves the socket hook rewrote it; the answers name *which* backend
//! answered, the peer name and UDP reply source must show the address the client asked for, a
//! Service without endpoints must be refused at once and one without usable endpoints denied
//! (the socket's drop). Session affinity must pin the client (its netns) to one backend until
//! the timeout passes. A connected UDP socket whose backend leaves the Service must be ended
//! (and only such a socket: not one on a backend that stays, nor one connected to a Pod
//! address directly), and so must one connected to a ClusterIP before its Service was written
//! once the Service has backends. Needs root and `cargo xtask build-ebpf`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_proxy::Dataplane;
use skiff_proxy::ebpf::sockterm::AyaSockTerm;
use skiff_proxy::ebpf::{AyaSocketLbMaps, BpfObject, LoadConfig, SocketLbPlane};
use skiff_proxy::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};
use skiff_tests::{Process, Topology, TopologyOptions, binaries, wait};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const STICKY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const NODE_PORT_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
const DROP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
const EARLY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 15);
const NODE_PORT: u16 = 30080;

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
except PermissionError:
    print("denied %.3f" % (time.monotonic() - start))
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

/// Backends on both nodes, the programs on this run's cgroup, and the data plane over them.
/// Fields drop in order: the servers and maps go before the topology (and its run) does.
struct Bed {
    _servers: Vec<Process>,
    dataplane: SocketLbPlane<AyaSocketLbMaps, AyaSockTerm>,
    cgroup: PathBuf,
    backends: Vec<Ipv4Addr>,
    topo: Topology,
}

impl Bed {
    fn build(label: &str) -> Result<Bed> {
        skiff_tests::run::require_root()?;
        let object = object()?;
        let topo = Topology::build(&TopologyOptions::nodes(2, label))?;
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
        let pin_dir = run.bpf_pin_dir()?;
        let mut loaded = BpfObject::load(&LoadConfig {
            object,
            pin_dir,
            cgroup: cgroup.clone(),
            allow_root_cgroup: false,
        })?;
        let maps = loaded.attach_socket_lb()?;
        let sockets = loaded.into_socket_terminator()?;
        let backends = topo.nodes().iter().map(|n| n.ip).collect();
        Ok(Bed {
            _servers: servers,
            dataplane: SocketLbPlane::with_terminator(maps, sockets),
            cgroup,
            backends,
            topo,
        })
    }

    /// Both backends on `port`.
    fn both(&self, port: u16) -> Vec<(Ipv4Addr, u16)> {
        self.backends.iter().map(|ip| (*ip, port)).collect()
    }

    /// `ok <peer> <backend>`, `refused <s>` or `denied <s>` from a client in the cgroup.
    fn client(&self, proto: &str, ip: Ipv4Addr, port: u16) -> Result<String> {
        client(&self.topo, &self.cgroup, proto, ip, port)
    }

    /// The backend that answered a TCP connect to `ip:port`; the peer name must be `ip:port`.
    fn answer(&self, ip: Ipv4Addr, port: u16) -> Result<String> {
        let line = self.client("tcp", ip, port)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(words.first() == Some(&"ok"), "tcp {ip}:{port}: {line}");
        ensure!(
            words[1] == format!("{ip}:{port}"),
            "peer name shows the backend: {line}"
        );
        Ok(words[2].to_owned())
    }
}

fn name(n: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName::new("default", n, "", protocol)
}

#[test]
fn clusterip_is_balanced_at_the_socket_and_refused_without_endpoints() -> Result<()> {
    let mut bed = Bed::build("proxy-ebpf")?;
    let (topo, cgroup) = (&bed.topo, &bed.cgroup);
    let desired = DesiredState {
        services: BTreeMap::from([
            (
                name("web", Protocol::Tcp),
                service(VIP, 80, &bed.both(8080)),
            ),
            (
                name("dns", Protocol::Udp),
                service(VIP, 53, &bed.both(8081)),
            ),
            (name("empty", Protocol::Tcp), service(EMPTY_VIP, 80, &[])),
        ]),
        ..DesiredState::default()
    };
    let report = bed.dataplane.sync(&desired)?;
    ensure!(report.written > 0, "{report:?}");

    // TCP: both backends answer, and the peer name is the ClusterIP.
    let mut answered = BTreeSet::new();
    wait::retry(Duration::from_secs(20), || {
        answered.insert(bed.answer(VIP, 80)?);
        ensure!(answered.len() == 2, "only {answered:?} answered so far");
        Ok(())
    })?;

    // UDP (unconnected sendto): answered, and the reply's source is the ClusterIP.
    let line = client(topo, cgroup, "udp", VIP, 53)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        words.first() == Some(&"ok") && words[1] == "10.96.0.10:53",
        "udp: {line}"
    );
    ensure!(words[2].starts_with("backend"), "udp answer: {line}");

    // No endpoints: refused, at once.
    let started = Instant::now();
    let line = client(topo, cgroup, "tcp", EMPTY_VIP, 80)?;
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
    Ok(())
}

#[test]
fn node_ports_affinity_and_drops_at_the_socket() -> Result<()> {
    let mut bed = Bed::build("proxy-ebpf-np")?;
    let node_ip = bed.topo.node(1).ip;
    let both = bed.both(8080);
    let with_node_port = {
        let mut svc = service(NODE_PORT_VIP, 80, &both);
        svc.port.node_port = Some(NODE_PORT);
        svc.external_endpoints = svc.internal_endpoints.clone();
        svc
    };
    let sticky = |seconds: Option<u32>| {
        let mut svc = service(STICKY_VIP, 80, &both);
        svc.port.affinity_seconds = seconds;
        svc
    };
    // internalTrafficPolicy Local, every endpoint on another node: dropped, not refused.
    let no_local = {
        let mut svc = service(DROP_VIP, 80, &[]);
        svc.port.internal_policy_local = true;
        svc.has_endpoints = true;
        svc
    };
    let desired = |affinity: Option<u32>| DesiredState {
        node: NodeFacts {
            name: "node1".into(),
            ips: vec![node_ip],
            ..NodeFacts::default()
        },
        services: BTreeMap::from([
            (name("np", Protocol::Tcp), with_node_port.clone()),
            (name("sticky", Protocol::Tcp), sticky(affinity)),
            (name("no-local", Protocol::Tcp), no_local.clone()),
        ]),
    };
    bed.dataplane.sync(&desired(Some(10_800)))?;

    // The node port on the node's IP and on 127.0.0.1 reaches both backends; nothing listens
    // on it, so only the translation can answer; the peer name is what the client asked for.
    for ip in [node_ip, Ipv4Addr::LOCALHOST] {
        let mut answered = BTreeSet::new();
        wait::retry(Duration::from_secs(20), || {
            answered.insert(bed.answer(ip, NODE_PORT)?);
            ensure!(answered.len() == 2, "{ip}: only {answered:?} so far");
            Ok(())
        })?;
    }

    // No usable endpoint here: denied (the socket's drop), at once, not refused.
    let line = bed.client("tcp", DROP_VIP, 80)?;
    ensure!(line.starts_with("denied"), "no local endpoint: {line}");

    // Affinity: every client of this netns lands where the first one did.
    let first = bed.answer(STICKY_VIP, 80)?;
    for n in 0..12 {
        let again = bed.answer(STICKY_VIP, 80)?;
        ensure!(
            again == first,
            "connect {n} went to {again}, the pin is {first}"
        );
    }

    // Affinity off: the pins are ignored (and cleared), both backends answer again.
    bed.dataplane.sync(&desired(None))?;
    let mut answered = BTreeSet::new();
    wait::retry(Duration::from_secs(20), || {
        answered.insert(bed.answer(STICKY_VIP, 80)?);
        ensure!(
            answered.len() == 2,
            "without affinity only {answered:?} answered"
        );
        Ok(())
    })?;

    // A one-second timeout: a pin outlives quick reconnects but not a pause past it.
    bed.dataplane.sync(&desired(Some(1)))?;
    let first = bed.answer(STICKY_VIP, 80)?;
    for _ in 0..4 {
        ensure!(
            bed.answer(STICKY_VIP, 80)? == first,
            "pin lost within the timeout"
        );
    }
    let mut answered = BTreeSet::from([first]);
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(1_200));
        answered.insert(bed.answer(STICKY_VIP, 80)?);
        if answered.len() == 2 {
            break;
        }
    }
    ensure!(
        answered.len() == 2,
        "the pin never expired: only {answered:?} answered"
    );
    Ok(())
}

/// Connected UDP sockets in the cgroup: `v0`..`v3` to the ClusterIP, `d1`/`d2` straight to each
/// backend's address, `e` to a ClusterIP with no Service yet. Every 100 ms each sends and
/// prints `<label> <answer>`, `<label> error <errno>` or `<label> timeout`, for at most 20 s.
const CONNECTED: &str = r#"
import socket, sys, time
cg, vip, early, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
direct, dport = sys.argv[5:7], int(sys.argv[7])
open(cg + "/cgroup.procs", "w").write("0")
socks = []
def connected(label, ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((ip, port))
    socks.append((label, s))
for n in range(4):
    connected("v%d" % n, vip, port)
for n, ip in enumerate(direct):
    connected("d%d" % (n + 1), ip, dport)
connected("e", early, port)
start = time.monotonic()
while time.monotonic() - start < 20:
    for label, s in socks:
        s.settimeout(0.3)
        try:
            s.send(b"hostname")
            print(label, s.recv(512).decode().strip(), flush=True)
        except socket.timeout:
            print(label, "timeout", flush=True)
        except OSError as e:
            print(label, "error", e.errno, flush=True)
    time.sleep(0.1)
"#;

/// `ECONNABORTED` (the socket ended while a call waited) or `EDESTADDRREQ` (it ended before
/// the send: it is no longer connected).
const ENDED: [&str; 2] = ["103", "89"];

#[test]
fn connected_udp_sockets_end_when_their_backend_leaves_or_their_service_appears() -> Result<()> {
    let mut bed = Bed::build("proxy-ebpf-udp")?;
    let dns = |endpoints: &[(Ipv4Addr, u16)], early: Option<&[(Ipv4Addr, u16)]>| DesiredState {
        services: BTreeMap::from_iter(
            [(name("dns", Protocol::Udp), service(VIP, 53, endpoints))]
                .into_iter()
                .chain(
                    early.map(|eps| (name("early", Protocol::Udp), service(EARLY_VIP, 53, eps))),
                ),
        ),
        ..DesiredState::default()
    };
    bed.dataplane.sync(&dns(&bed.both(8081), None))?;
    let (b1, b2) = (bed.backends[0].to_string(), bed.backends[1].to_string());
    let cgroup = bed.cgroup.display().to_string();
    let argv = [
        "python3",
        "-c",
        CONNECTED,
        &cgroup,
        "10.96.0.10",
        "10.96.0.15",
        "53",
        &b1,
        &b2,
        "8081",
    ];
    let mut child = bed
        .topo
        .node(1)
        .netns
        .command_keeping_mounts(&argv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot run python3")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let _reap = Reap(child);
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |limit: Duration| -> Result<(String, String)> {
        let line = lines
            .recv_timeout(limit)
            .context("the client fell silent")?;
        let (label, rest) = line.split_once(' ').context("no label")?;
        Ok((label.to_owned(), rest.to_owned()))
    };

    // One full round: every socket answered but `e`, which went out untranslated; note where
    // each ClusterIP socket went.
    let mut went = BTreeMap::new();
    while went.len() < 7 {
        let (label, answer) = next(Duration::from_secs(10))?;
        let want = if label == "e" { "timeout" } else { "backend" };
        ensure!(
            answer.starts_with(want),
            "{label} before the change: {answer}"
        );
        went.insert(label, answer);
    }
    ensure!(
        went["d1"] == "backend1" && went["d2"] == "backend2",
        "{went:?}"
    );
    // backend(k) is on node k: take away the one v0 reached; give `e`'s address a Service.
    let gone = went["v0"].clone();
    let stays = if gone == "backend1" { 1 } else { 0 };
    let both = bed.both(8081);
    let report = bed
        .dataplane
        .sync(&dns(&[(bed.backends[stays], 8081)], Some(&both)))?;
    let expected: BTreeSet<&String> = went
        .iter()
        .filter(|(label, answer)| **label == "e" || (label.starts_with('v') && **answer == gone))
        .map(|(label, _)| label)
        .collect();
    ensure!(
        report.flows_cleared == expected.len(),
        "ended {} sockets, expected {expected:?}",
        report.flows_cleared
    );

    // Within a few rounds: each of those fails once as ended; no other socket misses a beat.
    let mut ended = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rounds_after = 0;
    while Instant::now() < deadline && rounds_after < 12 {
        let (label, answer) = next(Duration::from_secs(5))?;
        if expected.contains(&label) {
            if let Some(errno) = answer.strip_prefix("error ") {
                ensure!(ENDED.contains(&errno), "{label} failed otherwise: {answer}");
                ended.insert(label.clone());
            } else {
                ensure!(
                    !ended.contains(&label) && answer == went[&label],
                    "{label} after the change: {answer}"
                );
            }
        } else {
            ensure!(
                answer == went[&label],
                "{label} should have kept {}: {answer}",
                went[&label]
            );
        }
        if ended.len() == expected.len() && label == "e" {
            rounds_after += 1;
        }
    }
    ensure!(
        ended.len() == expected.len(),
        "only {ended:?} of {expected:?} ended"
    );
    Ok(())
}

/// Kills and reaps a child when dropped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
