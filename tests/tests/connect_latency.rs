//! The connect-latency harness with real traffic: two Pods wired into a node namespace, a
//! DNAT rule standing in for a proxy, and percentiles for both targets; a target nobody
//! answers fails with its name. Needs root; every rule lives in the run's own namespaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use skiff_tests::connect_latency::{Budget, PodPair, PodPairAddrs, Target};
use skiff_tests::{Netns, Run, run};

const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn addrs() -> PodPairAddrs {
    PodPairAddrs {
        pod_cidr: "10.244.0.0/24".parse().unwrap(),
        client: Ipv4Addr::new(10, 244, 0, 2),
        server: Ipv4Addr::new(10, 244, 0, 3),
        port: 8080,
        direct_port: 8081,
    }
}

fn small_budget() -> Budget {
    Budget {
        warmup: 10,
        rounds: 200,
        time: Duration::from_secs(20),
        connect_timeout: Duration::from_millis(500),
    }
}

#[test]
fn a_dnat_path_and_the_direct_path_both_get_percentiles_and_the_pods_go_with_the_run() -> Result<()>
{
    let run = Run::start("connect-latency", &std::env::temp_dir())?;
    let id = run.id().clone();
    let node = Netns::create(&run.id().object("n1"))?;
    let pair = PodPair::wire(&run, &node, &addrs())?;
    let server = pair.server_addr().to_string();
    node.exec(
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &format!("{SERVICE}/32"),
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            &server,
        ],
        Duration::from_secs(10),
    )?;
    let service = Target::new("service", SocketAddr::from((SERVICE, 80)));
    let latencies = pair.measure(&[pair.direct(), service], &small_budget())?;

    assert_eq!(latencies.len(), 2);
    for (latency, name) in latencies.iter().zip(["direct", "service"]) {
        assert_eq!(latency.target, name);
        assert_eq!(latency.samples, 200, "{latency:?}");
        assert!(
            0.0 < latency.p50_us
                && latency.p50_us <= latency.p90_us
                && latency.p90_us <= latency.p99_us,
            "{latency:?}"
        );
    }

    // Nothing DNATs port 81 and the node has no route there: the error says which target.
    let nobody = Target::new("nobody", SocketAddr::from((SERVICE, 81)));
    let err = pair.measure(&[nobody], &small_budget()).unwrap_err();
    assert!(format!("{err:#}").contains("nobody"), "{err:#}");

    drop(pair);
    drop(run);
    assert!(run::leftovers(&id).is_empty(), "{:?}", run::leftovers(&id));
    Ok(())
}
