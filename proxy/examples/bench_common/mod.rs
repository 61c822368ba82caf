//! What the proxy benchmarks share: the Services they program (N ClusterIP Services × 10
//! endpoints spread like an allocator's picks, plus one target Service whose only endpoint is
//! the server Pod), the Pods they measure connects between, and how figures are spelled.
//!
//! Included by each benchmark with `#[path]` (an example directory without `main.rs` is not
//! an example of its own).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use skiff_proxy::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};
use skiff_tests::connect_latency::{Budget, Latency, PodPair, PodPairAddrs, Target};

/// Service counts measured after 0; `SKIFF_BENCH_SIZES=1000,5000` overrides.
pub const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
pub const ENDPOINTS: usize = 10;
/// The address that replaces Service 0's first endpoint.
pub const CHANGED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The target Service's ClusterIP: above every [`service_ip`], inside the same /16.
pub const TARGET: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 254);
pub const SERVICE_PORT: u16 = 80;
pub const POD_PORT: u16 = 8080;

pub fn service_ip(i: usize) -> Ipv4Addr {
    // Spread over 10.96.0.0/16 the way an allocator's random picks would be.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + ((i * 7919) % 65_521) as u32 + 1)
}

pub fn endpoint_ip(i: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (i * ENDPOINTS + e) as u32 + 2)
}

/// The two Pods on this node (podCIDR 10.244.0.0/24, gateway .1). Like any Pod they may share
/// an address with a listed endpoint of some other Service; nothing here sends to those.
pub fn pod_addrs() -> PodPairAddrs {
    PodPairAddrs {
        pod_cidr: "10.244.0.0/24".parse().expect("a valid CIDR"),
        client: Ipv4Addr::new(10, 244, 0, 250),
        server: Ipv4Addr::new(10, 244, 0, 251),
        port: POD_PORT,
        direct_port: POD_PORT + 1,
    }
}

pub fn service(ip: Ipv4Addr, endpoints: Vec<EndpointAddr>) -> DesiredService {
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![ip],
            port: SERVICE_PORT,
            ..ServicePort::default()
        },
        local_ready: endpoints.iter().filter(|e| e.local).count(),
        internal_endpoints: endpoints,
        external_endpoints: Vec::new(),
        has_endpoints: true,
    }
}

/// `n` Services plus the target (endpoint `server`); `shift` replaces Service 0's first endpoint.
pub fn desired(n: usize, shift: usize, server: SocketAddrV4) -> DesiredState {
    let mut state = DesiredState {
        node: NodeFacts {
            name: "bench".into(),
            ips: vec![Ipv4Addr::new(192, 0, 2, 1)],
            zone: None,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        },
        ..DesiredState::default()
    };
    for i in 0..n {
        let endpoints = (0..ENDPOINTS)
            .map(|e| EndpointAddr {
                ip: if i == 0 && e == 0 && shift > 0 {
                    CHANGED
                } else {
                    endpoint_ip(i, e)
                },
                port: POD_PORT,
                local: false,
            })
            .collect();
        state.services.insert(
            ServicePortName::new("bench", &format!("svc{i}"), "http", Protocol::Tcp),
            service(service_ip(i), endpoints),
        );
    }
    let to_server = EndpointAddr {
        ip: *server.ip(),
        port: server.port(),
        local: true,
    };
    state.services.insert(
        ServicePortName::new("bench", "target", "http", Protocol::Tcp),
        service(TARGET, vec![to_server]),
    );
    state
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Connect latency to (the server Pod directly, the target Service) from the client Pod.
pub fn connect(pair: &PodPair) -> Result<(Latency, Latency)> {
    let service = Target::new("target Service", SocketAddr::from((TARGET, SERVICE_PORT)));
    let mut latencies = pair.measure(&[pair.direct(), service], &Budget::default())?;
    let service = latencies.pop().context("no Service latency")?;
    let direct = latencies.pop().context("no direct latency")?;
    Ok((direct, service))
}

/// p50 and p99 figures for `name`, the Service's latency against the direct one.
pub fn connect_figures(
    name: &str,
    n: usize,
    (direct, service): &(Latency, Latency),
    note: &str,
) -> [Value; 2] {
    let rounds = Budget::default().rounds;
    let mut note = note.to_owned();
    if service.samples < rounds {
        note = format!(
            "only {} connects each within the time bound; {note}",
            service.samples
        );
    }
    [
        json!({"name": format!("{name} p50 {n} svc"), "unit": "us", "value": service.p50_us, "baseline": direct.p50_us, "note": note}),
        json!({"name": format!("{name} p99 {n} svc"), "unit": "us", "value": service.p99_us, "baseline": direct.p99_us}),
    ]
}

pub fn sizes() -> Result<Vec<usize>> {
    let rest = match std::env::var("SKIFF_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("SKIFF_BENCH_SIZES is a list of counts")
            })
            .collect::<Result<Vec<usize>>>()?,
        Err(_) => SIZES.to_vec(),
    };
    Ok([0]
        .into_iter()
        .chain(rest.into_iter().filter(|&n| n > 0))
        .collect())
}
