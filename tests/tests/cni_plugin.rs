//! skiff-cni as a runtime calls it, in network namespaces: the plugin runs in a node's namespace
//! with Pods in namespaces of their own, and each test checks what a user would see — addresses,
//! routes, pings and HTTP answers, the spec's error codes — and that nothing leaks: no address
//! reservation, no veth. Needs root and `cargo build -p skiff-cni`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use skiff_common::rng::SmallRng;
use skiff_tests::cni::{self, Chain, CniArgs, PluginOutput};
use skiff_tests::{Netns, Topology, TopologyOptions, binaries, wait};

const SERVER: &str = env!("CARGO_BIN_EXE_skiff-test-server");
const WAIT: Duration = Duration::from_secs(10);
const GATEWAY: &str = "10.244.1.1";

/// One node running the plugin, with a private state folder.
struct Cni {
    topology: Topology,
    plugin: PathBuf,
    data_dir: PathBuf,
    cidr: &'static str,
}

impl Cni {
    fn new(label: &str, nodes: usize) -> Result<Self> {
        let plugin = binaries::skiff_cni()?;
        let topology = Topology::build(&TopologyOptions::nodes(nodes, label))?;
        let data_dir = topology.run().log_dir().join("cni-state");
        Ok(Cni {
            topology,
            plugin,
            data_dir,
            cidr: "10.244.1.0/24",
        })
    }

    fn node(&self) -> &Netns {
        &self.topology.node(1).netns
    }

    fn config(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "skiff", "type": "skiff-cni",
               "podCIDR": self.cidr, "mtu": 1400, "dataDir": self.data_dir})
    }

    fn pod(&self, name: &str) -> Result<Netns> {
        Netns::create(&self.topology.run().id().object(name))
    }

    fn call(&self, args: &CniArgs, config: &Value) -> Result<PluginOutput> {
        cni::invoke(&self.plugin, self.node(), args, config)
    }

    fn add(&self, id: &str, pod: &Netns) -> Result<Value> {
        self.call(&CniArgs::new("ADD", id, Some(pod)), &self.config("1.1.0"))?
            .success()
    }

    fn del(&self, id: &str, pod: Option<&Netns>) -> Result<()> {
        self.call(&CniArgs::new("DEL", id, pod), &self.config("1.1.0"))?
            .success()
            .map(drop)
    }

    fn gc(&self, valid: Value) -> Result<()> {
        let mut config = self.config("1.1.0");
        config["cni.dev/valid-attachments"] = valid;
        self.call(&CniArgs::new("GC", "", None), &config)?
            .success()
            .map(drop)
    }

    /// Reservations on disk, read from the plugin's documented state file.
    fn reservations(&self) -> Result<usize> {
        let path = self.data_dir.join("skiff/state.json");
        if !path.exists() {
            return Ok(0);
        }
        let state: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        Ok(state["reservations"]
            .as_object()
            .context("reservations")?
            .len())
    }

    /// The node's links, as `ip -o link` names them (without `@peer`).
    fn node_links(&self) -> Result<Vec<String>> {
        links(self.node())
    }
}

fn links(ns: &Netns) -> Result<Vec<String>> {
    Ok(ns
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

fn pod_ip(result: &Value) -> Result<Ipv4Addr> {
    let address = result["ips"][0]["address"]
        .as_str()
        .context("no address in result")?;
    Ok(address.trim_end_matches("/32").parse()?)
}

fn ping(from: &Netns, to: &str) -> Result<()> {
    from.exec(&["ping", "-c", "1", "-W", "2", to], WAIT)
        .map(drop)
}

#[test]
fn add_gives_address_route_and_gateway_check_then_fails_and_del_twice_succeeds() -> Result<()> {
    let cni = Cni::new("cni-add", 1)?;
    let pod = cni.pod("p1")?;
    let result = cni.add("c1", &pod)?;
    let ip = pod_ip(&result)?;
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["ips"][0]["gateway"], GATEWAY);
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        cni::netns_path(&pod).to_string_lossy().as_ref()
    );

    let addr = pod.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    assert!(addr.contains(&format!("inet {ip}/32")), "{addr}");
    let routes = pod.ip(&["-4", "route", "show"])?;
    assert!(
        routes.contains(&format!("default via {GATEWAY} dev eth0")),
        "{routes}"
    );
    let mtu = pod.ip(&["-o", "link", "show", "eth0"])?;
    assert!(
        mtu.contains("mtu 1400") && mtu.contains("state UP"),
        "{mtu}"
    );
    ping(&pod, GATEWAY)?;
    ping(&pod, &cni.topology.node(1).ip.to_string())?;
    ping(cni.node(), &ip.to_string())?;

    let mut check = cni.config("1.1.0");
    check["prevResult"] = result.clone();
    cni.call(&CniArgs::new("CHECK", "c1", Some(&pod)), &check)?
        .success()?;
    let host = result["interfaces"][0]["name"]
        .as_str()
        .context("host veth")?;
    cni.node().ip(&["link", "delete", host])?;
    let failed = cni.call(&CniArgs::new("CHECK", "c1", Some(&pod)), &check)?;
    assert_eq!(failed.error_code()?, 106, "{}", failed.stdout);

    cni.del("c1", Some(&pod))?;
    cni.del("c1", Some(&pod))?;
    cni.del("c1", None)?;
    assert_eq!(cni.reservations()?, 0);
    assert_eq!(links(&pod)?, ["lo"]);
    Ok(())
}

#[test]
fn two_pods_reach_each_other_without_nat() -> Result<()> {
    let cni = Cni::new("cni-pods", 1)?;
    let (a, b) = (cni.pod("pa")?, cni.pod("pb")?);
    let ip_a = pod_ip(&cni.add("ca", &a)?)?;
    let ip_b = pod_ip(&cni.add("cb", &b)?)?;
    let _server = cni
        .topology
        .spawn(&a, "web-a", &[SERVER], &[("POD_NAME", "web-a")])?;
    let reply = wait::wait_for_http(Some(&b), SocketAddr::from((ip_a, 8080)), "/", WAIT)?;
    let (name, client) = reply.body.trim().split_once(' ').context("NAME CLIENT")?;
    assert_eq!(name, "web-a");
    assert_eq!(
        client.parse::<SocketAddr>()?.ip(),
        ip_b,
        "the server must see pod b's own address"
    );
    Ok(())
}

#[test]
fn version_and_bad_input_answer_with_codes_and_change_nothing() -> Result<()> {
    let cni = Cni::new("cni-bad", 1)?;
    let pod = cni.pod("p1")?;
    let version = cni.call(
        &CniArgs::new("VERSION", "", None),
        &json!({"cniVersion": "1.0.0"}),
    )?;
    assert_eq!(
        version.success()?["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );

    let links_before = cni.node_links()?;
    let with = |key: &str, value: Value| {
        let mut config = cni.config("1.1.0");
        config[key] = value;
        config
    };
    let mut no_ifname = CniArgs::new("ADD", "c1", Some(&pod));
    no_ifname.ifname = String::new();
    let mut long_ifname = CniArgs::new("ADD", "c1", Some(&pod));
    long_ifname.ifname = "a-much-too-long-name".into();
    let add = CniArgs::new("ADD", "c1", Some(&pod));
    let cases = [
        (cni.call(&no_ifname, &cni.config("1.1.0"))?, 4),
        (cni.call(&long_ifname, &cni.config("1.1.0"))?, 4),
        (
            cni.call(&CniArgs::new("ADD", "c1", None), &cni.config("1.1.0"))?,
            4,
        ),
        (
            cni.call(
                &CniArgs::new("FROB", "c1", Some(&pod)),
                &cni.config("1.1.0"),
            )?,
            4,
        ),
        (cni.call(&add, &json!("{not json"))?, 6),
        (cni.call(&add, &with("cniVersion", json!("0.3.1")))?, 1),
        (
            cni.call(&add, &with("ipam", json!({"type": "host-local"})))?,
            2,
        ),
        (cni.call(&add, &with("podCIDR", json!("10.244.1.7/24")))?, 7),
        (cni.call(&add, &with("mtu", json!(10)))?, 7),
    ];
    for (output, code) in &cases {
        assert_eq!(output.error_code()?, *code, "{}", output.stdout);
    }
    assert_eq!(
        cni.node_links()?,
        links_before,
        "a rejected call changed the node's links"
    );
    assert_eq!(links(&pod)?, ["lo"]);
    assert_eq!(cni.reservations()?, 0);
    Ok(())
}

#[test]
fn an_add_failing_half_way_undoes_its_veth_and_address() -> Result<()> {
    let cni = Cni::new("cni-undo", 1)?;
    let pod = cni.pod("p1")?;
    // A route already claiming the first Pod address makes ADD fail after the veth exists.
    cni.node()
        .ip(&["route", "add", "10.244.1.2/32", "dev", "eth0"])?;
    let links_before = cni.node_links()?;
    let failed = cni.call(&CniArgs::new("ADD", "c1", Some(&pod)), &cni.config("1.1.0"))?;
    assert_eq!(failed.error_code()?, 101, "{}", failed.stdout);
    assert_eq!(
        cni.node_links()?,
        links_before,
        "the host veth outlived the failed ADD"
    );
    assert_eq!(
        links(&pod)?,
        ["lo"],
        "the Pod's veth outlived the failed ADD"
    );
    assert_eq!(
        cni.reservations()?,
        0,
        "the address outlived the failed ADD"
    );

    let gone = cni.topology.run().id().object("gone");
    let missing = CniArgs {
        netns: Some(PathBuf::from("/run/netns").join(gone)),
        ..CniArgs::new("ADD", "c1", None)
    };
    let failed = cni.call(&missing, &cni.config("1.1.0"))?;
    assert_eq!(failed.error_code()?, 104, "{}", failed.stdout);
    assert_eq!(cni.reservations()?, 0);
    Ok(())
}

#[test]
fn gc_with_an_empty_list_frees_every_reservation_and_veth() -> Result<()> {
    let cni = Cni::new("cni-gc", 1)?;
    let pods: Vec<Netns> = (1..=3)
        .map(|n| cni.pod(&format!("p{n}")))
        .collect::<Result<_>>()?;
    for (n, pod) in pods.iter().enumerate() {
        cni.add(&format!("c{n}"), pod)?;
    }
    cni.gc(json!([{"containerID": "c0", "ifname": "eth0"}]))?;
    assert_eq!(cni.reservations()?, 1);
    assert_eq!(
        links(&pods[0])?,
        ["lo", "eth0"],
        "GC must keep the valid attachment"
    );
    cni.gc(json!([]))?;
    assert_eq!(cni.reservations()?, 0);
    assert_eq!(cni.node_links()?, ["lo", "eth0"]);
    Ok(())
}

#[test]
fn a_hundred_parallel_adds_get_a_hundred_distinct_addresses() -> Result<()> {
    let cni = Arc::new(Cni::new("cni-par", 1)?);
    let pods: Vec<Netns> = (0..100)
        .map(|n| cni.pod(&format!("p{n}")))
        .collect::<Result<_>>()?;
    let run_all = |command: &'static str| -> Result<Vec<PluginOutput>> {
        let children = pods
            .iter()
            .enumerate()
            .map(|(n, pod)| {
                let args = CniArgs::new(command, &format!("c{n}"), Some(pod));
                cni::spawn(&cni.plugin, cni.node(), &args, &cni.config("1.1.0"))
            })
            .collect::<Result<Vec<_>>>()?;
        children
            .into_iter()
            .map(|child| cni::finish(child, cni::PLUGIN_TIMEOUT))
            .collect()
    };
    let started = Instant::now();
    let results = run_all("ADD")?;
    eprintln!("100 concurrent ADDs took {:?}", started.elapsed());
    let ips: Vec<Ipv4Addr> = results
        .into_iter()
        .map(|out| pod_ip(&out.success()?))
        .collect::<Result<_>>()?;
    let distinct: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 100, "duplicates among {ips:?}");
    assert!(!distinct.contains(&GATEWAY.parse()?));
    assert_eq!(cni.reservations()?, 100);
    for out in run_all("DEL")? {
        out.success()?;
    }
    assert_eq!(cni.reservations()?, 0);
    assert_eq!(cni.node_links()?, ["lo", "eth0"]);
    Ok(())
}

#[test]
fn chained_before_portmap_a_host_port_reaches_the_pod() -> Result<()> {
    let cni = Cni::new("cni-portmap", 2)?;
    let pod = cni.pod("p1")?;
    // Debian's portmap (1.1.1) speaks up to 1.0.0, so the conflist is 1.0.0.
    let chain = Chain::new(
        "skiff",
        "1.0.0",
        vec![
            (cni.plugin.clone(), cni.config("1.0.0")),
            (
                PathBuf::from("/usr/lib/cni/portmap"),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ),
        ],
    );
    let runtime = json!({"portMappings": [
        {"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}]});
    let result = chain.add(cni.node(), &CniArgs::new("ADD", "c1", Some(&pod)), &runtime)?;
    assert_eq!(result["cniVersion"], "1.0.0");
    let ip = pod_ip(&result)?;
    let _server = cni
        .topology
        .spawn(&pod, "web", &[SERVER], &[("POD_NAME", "web-pm")])?;
    wait::wait_for_http(
        Some(cni.node()),
        SocketAddr::from((ip, 8080)),
        "/healthz",
        WAIT,
    )?;

    let host_port = SocketAddr::from((cni.topology.node(1).ip, 30080));
    let client = &cni.topology.node(2).netns;
    let reply = wait::wait_for_http(Some(client), host_port, "/hostname", WAIT)?;
    assert_eq!(reply.body.trim(), "web-pm");

    chain.del(
        cni.node(),
        &CniArgs::new("DEL", "c1", Some(&pod)),
        &runtime,
        &result,
    )?;
    assert_eq!(cni.reservations()?, 0);
    let after = client.run(move || wait::http_get(host_port, "/hostname", Duration::from_secs(2)));
    assert!(
        after.is_err(),
        "the hostPort still answers after DEL: {after:?}"
    );
    Ok(())
}

#[derive(Default)]
struct Churn {
    kills: AtomicUsize,
    kills_mid_add: AtomicUsize,
    sandboxes_lost: AtomicUsize,
}

/// One worker's share of the cycles, in its own Pod namespace.
fn churn(
    cni: &Cni,
    worker: usize,
    cycles: usize,
    seed: u64,
    stats: &Churn,
    deadline: Instant,
) -> Result<()> {
    let mut rng = SmallRng::seeded(seed ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let name = format!("w{worker}");
    let mut pod = cni.pod(&name)?;
    let mut last_add = Duration::from_millis(10);
    for cycle in 0..cycles {
        ensure!(
            Instant::now() < deadline,
            "worker {worker} ran out of time at cycle {cycle}"
        );
        let id = format!("churn-{worker}-{cycle}");
        if !rng.one_in(10) {
            let started = Instant::now();
            let result = cni.add(&id, &pod).with_context(|| format!("ADD {id}"))?;
            last_add = started.elapsed();
            pod_ip(&result)?;
            cni.del(&id, Some(&pod))
                .with_context(|| format!("DEL {id}"))?;
            continue;
        }
        let mut child = cni::spawn(
            &cni.plugin,
            cni.node(),
            &CniArgs::new("ADD", &id, Some(&pod)),
            &cni.config("1.1.0"),
        )?;
        thread::sleep(last_add.mul_f64(rng.unit()));
        if child.try_wait()?.is_none() {
            stats.kills_mid_add.fetch_add(1, Ordering::Relaxed);
        }
        child.kill()?;
        child.wait()?;
        stats.kills.fetch_add(1, Ordering::Relaxed);
        if rng.one_in(2) {
            // The runtime cleans up after the failed ADD, as it should.
            cni.del(&id, Some(&pod))
                .with_context(|| format!("DEL {id} after a kill"))?;
        } else {
            // The sandbox is lost and nobody calls DEL: only GC can free what the ADD took.
            skiff_tests::cmd::ip(&["netns", "delete", pod.name()])?;
            pod = Netns::create(&cni.topology.run().id().object(&name))?;
            stats.sandboxes_lost.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[test]
fn a_thousand_add_del_cycles_with_killed_adds_leak_nothing_after_gc() -> Result<()> {
    const CYCLES: usize = 1000;
    const WORKERS: usize = 4;
    let cni = Arc::new(Cni::new("cni-churn", 1)?);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    eprintln!("churn seed {seed}");
    let stats = Arc::new(Churn::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(55);
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (cni, stats) = (Arc::clone(&cni), Arc::clone(&stats));
            thread::spawn(move || churn(&cni, worker, CYCLES / WORKERS, seed, &stats, deadline))
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a churn worker panicked"))??;
    }
    let (kills, mid, lost) = (
        stats.kills.load(Ordering::Relaxed),
        stats.kills_mid_add.load(Ordering::Relaxed),
        stats.sandboxes_lost.load(Ordering::Relaxed),
    );
    let leaked = cni.reservations()?;
    eprintln!(
        "{CYCLES} cycles in {:?}: {kills} ADDs killed ({mid} mid-run), {lost} sandboxes lost, \
         {leaked} reservations left for GC",
        started.elapsed()
    );
    assert!(
        kills >= CYCLES / 20 && mid * 2 >= kills,
        "too few kills landed mid-ADD: {mid}/{kills}"
    );
    assert!(
        leaked > 0,
        "no killed ADD left a reservation: the test did not exercise GC"
    );

    cni.gc(json!([]))?;
    assert_eq!(cni.reservations()?, 0, "reservations leaked past GC");
    assert_eq!(
        cni.node_links()?,
        ["lo", "eth0"],
        "host veths leaked past GC"
    );
    Ok(())
}
