//! Connect latency from a Pod: a Service address against the server Pod's own IP, in one run.
//!
//! What a service proxy costs a client is paid on a connection's first packet (later ones ride
//! conntrack), so the figure that matters is `connect()` time: SYN out, through whatever the
//! proxy installed (iptables chains, eBPF programs), SYN-ACK back. [`PodPair`] wires two Pods
//! into a node namespace the caller owns, by skiff-cni's own wiring code
//! ([`skiff_cni::pod::attach`]: a routed veth, the Pod address as /32, the podCIDR's first
//! address as gateway, a /32 route to each Pod on the node), and runs a TCP server in one of
//! them. [`PodPair::measure`] connects from the other Pod to each target in turn, round by
//! round, so drift on a shared machine (another build, a timer) hits the Service path and the
//! direct baseline alike; every connection is reset as soon as it is up (SO_LINGER 0), so no
//! TIME_WAIT piles up and bounded rounds never run out of ports. The caller installs the proxy
//! in the node namespace and names the targets; the iptables and eBPF benchmarks share this.
//!
//! The server listens on two ports: the one Services send to, and another for direct
//! connects. On one port, a direct connect could pick the source port of a recent Service
//! connect whose DNATed conntrack entry (reply tuple server → client:port, kept ~10 s after the
//! reset) still stands; conntrack refuses the clashing entry, the SYN is dropped and the
//! connect waits a second for its retransmit. Real Pods meet that rarely; a loop of thousands
//! of connects meets it every few hundred.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use ipnet::Ipv4Net;
use nix::sys::socket::{Shutdown, setsockopt, shutdown, sockopt};
use skiff_cni::ipam::Attachment;
use skiff_cni::link::RealNamespaces;
use skiff_cni::pod::{PodNetwork, attach};
use skiff_cni::spec::PodCidr;

use crate::{Netns, Run, cni};

/// Where the two Pods sit on the node.
#[derive(Clone, Debug)]
pub struct PodPairAddrs {
    /// The node's podCIDR; its first address is the Pods' gateway.
    pub pod_cidr: Ipv4Net,
    /// The client Pod's address.
    pub client: Ipv4Addr,
    /// The server Pod's address.
    pub server: Ipv4Addr,
    /// The port Services send to (their endpoints' port).
    pub port: u16,
    /// The port direct connects go to (see the module notes for why not `port`).
    pub direct_port: u16,
}

/// One address to connect to, and what to call it in figures and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// e.g. `direct` or `service`.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

impl Target {
    /// A target named `name` at `addr`.
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        Target {
            name: name.to_owned(),
            addr,
        }
    }
}

/// How much measuring one call may do: every loop is bounded in count and in time.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Rounds run first and not recorded (caches, ARP, conntrack tables warm up).
    pub warmup: usize,
    /// Recorded rounds at most; each round connects once to every target.
    pub rounds: usize,
    /// Wall-clock bound on the whole call; fewer rounds are recorded when it passes.
    pub time: Duration,
    /// Bound on one connect.
    pub connect_timeout: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 200,
            rounds: 2_000,
            time: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Connect-time percentiles to one target, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// The target's name.
    pub target: String,
    /// How many connects were recorded.
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl Latency {
    /// Percentiles (nearest rank) of `samples`, in microseconds; fails on none.
    pub fn from_samples(target: &str, mut samples: Vec<f64>) -> Result<Self> {
        ensure!(!samples.is_empty(), "no connect to {target} was recorded");
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| samples[((p / 100.0) * (samples.len() - 1) as f64).round() as usize];
        Ok(Latency {
            target: target.to_owned(),
            samples: samples.len(),
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
        })
    }
}

/// A client Pod and a server Pod (with a TCP server running) wired into a node namespace.
/// Their namespaces belong to the run, so they go with it, after a panic too; dropping the
/// pair stops the servers.
#[derive(Debug)]
pub struct PodPair {
    client: Netns,
    server_addr: SocketAddr,
    direct_addr: SocketAddr,
    _servers: [Server; 2],
}

impl PodPair {
    /// Makes both Pods' namespaces under `run`, wires them into `node` as skiff-cni does,
    /// turns on forwarding in `node`, and starts the servers.
    pub fn wire(run: &Run, node: &Netns, addrs: &PodPairAddrs) -> Result<Self> {
        let cidr = PodCidr::new(addrs.pod_cidr).map_err(|e| anyhow!("pod CIDR: {e}"))?;
        for ip in [addrs.client, addrs.server] {
            ensure!(
                addrs.pod_cidr.contains(&ip) && ip != cidr.gateway(),
                "{ip} is not a Pod address of {}",
                addrs.pod_cidr
            );
        }
        node.sysctl("net.ipv4.ip_forward", "1")?;
        let client = wire_pod(run, node, "pc", cidr, addrs.client)?;
        let server_ns = wire_pod(run, node, "ps", cidr, addrs.server)?;
        ensure!(
            addrs.port != addrs.direct_port,
            "direct connects need a port of their own"
        );
        let server_addr = SocketAddr::from((addrs.server, addrs.port));
        let direct_addr = SocketAddr::from((addrs.server, addrs.direct_port));
        Ok(PodPair {
            client,
            server_addr,
            direct_addr,
            _servers: [
                Server::start(&server_ns, server_addr)?,
                Server::start(&server_ns, direct_addr)?,
            ],
        })
    }

    /// The server Pod's address and the port Services send to: their endpoint.
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// The direct, proxy-free target: the server Pod's address (on its direct port), named
    /// `direct`.
    pub fn direct(&self) -> Target {
        Target::new("direct", self.direct_addr)
    }

    /// The client Pod's namespace.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// Connect latency from the client Pod to each of `targets`, interleaved round by round
    /// (the first target rotates), within `budget`. Fails on the first connect that fails.
    pub fn measure(&self, targets: &[Target], budget: &Budget) -> Result<Vec<Latency>> {
        ensure!(!targets.is_empty(), "no target to measure");
        let targets = targets.to_vec();
        let budget = budget.clone();
        self.client.run(move || {
            let mut samples = vec![Vec::with_capacity(budget.rounds); targets.len()];
            let started = Instant::now();
            for round in 0..budget.warmup + budget.rounds {
                if started.elapsed() >= budget.time {
                    break;
                }
                for k in 0..targets.len() {
                    let t = (round + k) % targets.len();
                    let took = connect_once(&targets[t], budget.connect_timeout)?;
                    if round >= budget.warmup {
                        samples[t].push(took.as_secs_f64() * 1e6);
                    }
                }
            }
            targets
                .iter()
                .zip(samples)
                .map(|(target, samples)| Latency::from_samples(&target.name, samples))
                .collect()
        })
    }
}

/// One Pod: a namespace of the run's named `sk-<id>-<role>`, wired into `node` at `ip`.
fn wire_pod(run: &Run, node: &Netns, role: &str, cidr: PodCidr, ip: Ipv4Addr) -> Result<Netns> {
    let pod = Netns::create(&run.id().object(role))?;
    let path = cni::netns_path(&pod);
    let who = Attachment::new(pod.name(), "eth0");
    let network = PodNetwork { cidr, mtu: 1500 };
    // `attach` works in the calling thread's namespace as the node's: call it from inside.
    node.run(move || {
        attach(&RealNamespaces, network, &who, &path, ip)
            .map(drop)
            .map_err(|e| anyhow!(skiff_cni::error_chain(&e)))
    })
    .with_context(|| format!("cannot wire Pod {} at {ip}", pod.name()))?;
    Ok(pod)
}

/// Time to a connected socket, which is then reset rather than closed.
fn connect_once(target: &Target, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&target.addr, timeout)
        .with_context(|| format!("cannot connect to {} ({})", target.name, target.addr))?;
    let took = started.elapsed();
    let reset = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&stream, sockopt::Linger, &reset).context("cannot set SO_LINGER")?;
    Ok(took)
}

/// Accepts and drops connections on a plain thread until dropped.
#[derive(Debug)]
struct Server {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` in `netns` and starts accepting.
    fn start(netns: &Netns, addr: SocketAddr) -> Result<Self> {
        // A socket stays in the namespace it was made in: bind there, accept anywhere.
        let listener = netns
            .run(move || TcpListener::bind(addr).context("cannot listen"))
            .with_context(|| format!("server Pod, {addr}"))?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("connect-server".into())
            .spawn({
                let (listener, stop) = (Arc::clone(&listener), Arc::clone(&stop));
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        if listener.accept().is_err() && !stop.load(Ordering::Relaxed) {
                            // e.g. out of descriptors: do not spin.
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
            .context("cannot start the server thread")?;
        Ok(Server {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocked accept (Linux returns EINVAL); the fd stays ours until both
        // handles are gone, so this never hits a reused descriptor.
        let _ = shutdown(self.listener.as_raw_fd(), Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_sorted_samples() {
        let samples = (1..=100).rev().map(f64::from).collect();
        let latency = Latency::from_samples("svc", samples).unwrap();
        assert_eq!(latency.samples, 100);
        assert_eq!(
            (latency.p50_us, latency.p90_us, latency.p99_us),
            (51.0, 90.0, 99.0)
        );
    }

    #[test]
    fn no_samples_is_an_error_naming_the_target() {
        let err = Latency::from_samples("svc-a", Vec::new()).unwrap_err();
        assert!(err.to_string().contains("svc-a"), "{err}");
    }
}
