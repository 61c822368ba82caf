//! The baseline: the nat ruleset kube-proxy's iptables mode writes for the same Services.
//!
//! `KUBE-SERVICES` lists every ClusterIP, one rule each, in a linear chain; a match jumps to
//! `KUBE-SVC-*`, which marks off-cluster sources for masquerade and picks one `KUBE-SEP-*`
//! chain per endpoint with `statistic random`; the SEP chain DNATs. It is hooked from nat
//! PREROUTING and OUTPUT (and `KUBE-POSTROUTING` from POSTROUTING) as kube-proxy hooks it, so
//! a connection really walks it: the target Service sits last in `KUBE-SERVICES`, the worst
//! and, with Services in creation order, the common case for a new one. filter's chains
//! (rejects for endpoint-less Services, firewall) are left out: they are empty here.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use skiff_iptables::{Tables, jumps_to};
use skiff_proxy::iptables::{Iptables, RealIptables, TABLES};

use super::bench_common::{CHANGED, ENDPOINTS, endpoint_ip, service_ip};

/// One Service port as kube-proxy lays it out.
struct KubeService {
    chain: String,
    comment: String,
    ip: Ipv4Addr,
    /// (`KUBE-SEP-*` chain, endpoint address).
    endpoints: Vec<(String, SocketAddrV4)>,
}

fn sep(i: usize, e: usize, shift: usize) -> String {
    format!("KUBE-SEP-{i:07}{e:02}{shift:03}")
}

impl KubeService {
    /// The bench's Service `i`; `shift > 0` replaces Service 0's first endpoint.
    fn bench(i: usize, shift: usize) -> Self {
        let endpoints = (0..ENDPOINTS)
            .map(|e| {
                let changed = i == 0 && e == 0 && shift > 0;
                let ip = if changed { CHANGED } else { endpoint_ip(i, e) };
                let chain = sep(i, e, if changed { shift } else { 0 });
                (chain, SocketAddrV4::new(ip, 8080))
            })
            .collect();
        KubeService {
            chain: format!("KUBE-SVC-{i:09}"),
            comment: format!("bench/svc{i}:http"),
            ip: service_ip(i),
            endpoints,
        }
    }

    /// The Service whose one endpoint is the server Pod.
    fn target(ip: Ipv4Addr, server: SocketAddrV4) -> Self {
        KubeService {
            chain: "KUBE-SVC-TARGET".into(),
            comment: "bench/target:http".into(),
            ip,
            endpoints: vec![("KUBE-SEP-TARGET".into(), server)],
        }
    }

    fn declare(&self, out: &mut String) {
        let _ = writeln!(out, ":{} - [0:0]", self.chain);
        for (sep, _) in &self.endpoints {
            let _ = writeln!(out, ":{sep} - [0:0]");
        }
    }

    fn dispatch(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport 80 -j {}",
            self.ip, self.comment, self.chain
        );
    }

    fn svc_chain(&self, out: &mut String) {
        let (svc, ip, comment) = (&self.chain, self.ip, &self.comment);
        let _ = writeln!(
            out,
            "-A {svc} ! -s 10.244.0.0/16 -d {ip}/32 -p tcp -m comment --comment \"{comment} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"
        );
        let n = self.endpoints.len();
        for (e, (sep, _)) in self.endpoints.iter().enumerate() {
            let stat = if e + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / (n - e) as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment \"{comment} -> endpoint\"{stat} -j {sep}"
            );
        }
    }

    fn sep_chain(&self, out: &mut String, e: usize) {
        let (name, to) = &self.endpoints[e];
        let (ip, comment) = (to.ip(), &self.comment);
        let _ = writeln!(
            out,
            "-A {name} -s {ip}/32 -m comment --comment \"{comment}\" -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            out,
            "-A {name} -p tcp -m comment --comment \"{comment}\" -m tcp -j DNAT --to-destination {to}"
        );
    }
}

/// The nat restore text for `n` Services plus the target Service (last), hooked into the
/// built-in chains; and how many rules it puts in `KUBE-*` chains.
pub fn full(n: usize, target: Ipv4Addr, server: SocketAddrV4) -> (String, usize) {
    let mut decl = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::from(
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n-A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    let services = (0..n).map(|i| KubeService::bench(i, 0));
    for service in services.chain([KubeService::target(target, server)]) {
        service.declare(&mut decl);
        service.dispatch(&mut rules);
        service.svc_chain(&mut rules);
        for e in 0..service.endpoints.len() {
            service.sep_chain(&mut rules, e);
        }
    }
    let count = rules.lines().count();
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    (decl + &rules + "COMMIT\n", count)
}

/// kube-proxy's partial sync for one replaced endpoint of Service 0.
pub fn one_change() -> String {
    let service = KubeService::bench(0, 1);
    let mut out = String::from("*nat\n");
    let _ = writeln!(out, ":{} - [0:0]", service.chain);
    let _ = writeln!(out, ":{} - [0:0]", service.endpoints[0].0);
    let _ = writeln!(out, ":{} - [0:0]", sep(0, 0, 0));
    service.svc_chain(&mut out);
    service.sep_chain(&mut out, 0);
    let _ = writeln!(out, "-X {}", sep(0, 0, 0));
    out.push_str("COMMIT\n");
    out
}

fn ours(chain: &str) -> bool {
    chain.starts_with("KUBE-") || chain.starts_with("SKIFF-")
}

/// Removes every `KUBE-*` and `SKIFF-*` chain and the built-in chains' jumps into them.
pub fn remove_all(iptables: &RealIptables) -> Result<()> {
    let mut text = String::new();
    for table in TABLES {
        let saved = Tables::parse(&iptables.save(table)?);
        let Some(chains) = saved.chains(table) else {
            continue;
        };
        let _ = writeln!(text, "*{table}");
        // Hooks first: a chain still jumped to cannot be deleted.
        for (chain, rules) in chains.iter().filter(|(name, _)| !ours(name)) {
            for rule in rules
                .iter()
                .filter(|r| ours(jumps_to(r).unwrap_or_default()))
            {
                let _ = writeln!(text, "-D {chain} {rule}");
            }
        }
        // Declaring a chain flushes it, so no rule of ours still jumps when it is deleted.
        let mine: Vec<&String> = chains.keys().filter(|name| ours(name)).collect();
        for name in &mine {
            let _ = writeln!(text, ":{name} - [0:0]");
        }
        for name in &mine {
            let _ = writeln!(text, "-X {name}");
        }
        text.push_str("COMMIT\n");
    }
    iptables.restore(&text)?;
    Ok(())
}

/// Applies `text` to nat with `iptables-restore --noflush`, killing it after `limit`;
/// `false` when it did not finish.
pub fn restore_within(text: String, limit: Duration) -> Result<bool> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    // The text is larger than a pipe: write it while the clock watches.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    let Some(status) = status else {
        return Ok(false);
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        anyhow::bail!("iptables-restore failed ({status}): {stderr}");
    }
    Ok(true)
}
