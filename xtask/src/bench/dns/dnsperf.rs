//! dnsperf runs and what they print: queries/s and mean latency from the summary of a run
//! without `-v`, p50/p99 from the per-query lines of a run at a fixed rate with `-v`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use skiff_tests::Netns;

use super::procfs::group_cpu_seconds;
use super::{LATENCY_QPS, LATENCY_SECS, SATURATING, THROUGHPUT_SECS};
use crate::bench::percentile;

/// What dnsperf measured against one server.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Load {
    /// Queries/s of the throughput run.
    pub qps: f64,
    /// Mean latency of the throughput run (ms).
    pub saturated_ms: f64,
    /// Queries lost in the throughput run.
    pub lost: u64,
    /// Datagrams the namespace's UDP receive buffers dropped meanwhile (the server's or
    /// dnsperf's), where lost queries go.
    pub overflows: u64,
    /// The server's CPU time per answered query in the throughput run (us).
    pub cpu_us: f64,
    /// Latency percentiles at [`LATENCY_QPS`] (us).
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Throughput (no `-v`), then latency at [`LATENCY_QPS`] (`-v`) of the server at `ip`.
pub(super) fn dnsperf(node: &Netns, ip: Ipv4Addr, queries: &Path, pgid: u32) -> Result<Load> {
    let ip = ip.to_string();
    let queries = queries.to_string_lossy();
    let base = ["dnsperf", "-s", &ip, "-d", &queries];
    let mut argv = base.to_vec();
    argv.extend(["-l", THROUGHPUT_SECS]);
    argv.extend(SATURATING);
    let cpu = group_cpu_seconds(pgid)?;
    let overflows = udp_receive_overflows(node)?;
    let summary = run_dnsperf(node, &argv)?;
    let overflows = udp_receive_overflows(node)? - overflows;
    let cpu = group_cpu_seconds(pgid)? - cpu;
    let mut load = Load {
        cpu_us: cpu * 1e6 / stat(&summary, "Queries completed:")?.max(1.0),
        qps: stat(&summary, "Queries per second:")?,
        saturated_ms: stat(&summary, "Average Latency (s):")? * 1e3,
        lost: stat(&summary, "Queries lost:")? as u64,
        overflows,
        ..Load::default()
    };
    let rate = LATENCY_QPS.to_string();
    let mut argv = base.to_vec();
    argv.extend(["-l", LATENCY_SECS, "-Q", &rate, "-v"]);
    let out = run_dnsperf(node, &argv)?;
    let mut latencies = Vec::new();
    for line in out.lines().filter_map(|l| l.strip_prefix("> ")) {
        let mut words = line.split_whitespace();
        let rcode = words.next().unwrap_or_default();
        ensure!(rcode == "NOERROR", "{ip} answered {line:?}");
        let seconds: f64 = words.last().context("a latency")?.parse()?;
        latencies.push(seconds * 1e6);
    }
    ensure!(!latencies.is_empty(), "no latencies from {ip}");
    latencies.sort_by(f64::total_cmp);
    load.p50_us = percentile(&latencies, 50.0);
    load.p99_us = percentile(&latencies, 99.0);
    Ok(load)
}

/// Runs dnsperf; its stdout, after checking that every answer was NOERROR.
fn run_dnsperf(node: &Netns, argv: &[&str]) -> Result<String> {
    let out = node.output(argv, Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{} failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let codes = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .context("dnsperf printed no response codes")?;
    ensure!(
        codes.split(',').all(|c| c.trim().starts_with("NOERROR")),
        "{}: response codes {codes}",
        argv.join(" ")
    );
    Ok(text)
}

/// The namespace's UDP `RcvbufErrors` so far: datagrams dropped for a full receive buffer.
fn udp_receive_overflows(node: &Netns) -> Result<u64> {
    let snmp = node.exec(&["cat", "/proc/net/snmp"], Duration::from_secs(5))?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .context("no RcvbufErrors")?;
    let value = values.split_whitespace().nth(column).context("no value")?;
    Ok(value.parse()?)
}

/// The first number after `label` in dnsperf's summary.
fn stat(summary: &str, label: &str) -> Result<f64> {
    let line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .with_context(|| format!("dnsperf printed no {label:?}"))?;
    let first = line.split_whitespace().next().unwrap_or_default();
    first
        .parse()
        .with_context(|| format!("{label} {line:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "Statistics:

  Queries sent:         5
  Queries completed:    5 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 5 (100.00%)
  Run time (s):         1.000183
  Queries per second:   4.999085

  Average Latency (s):  0.000125 (min 0.000112, max 0.000145)
";

    #[test]
    fn reads_the_summary() {
        assert_eq!(stat(SUMMARY, "Queries per second:").unwrap(), 4.999085);
        assert_eq!(stat(SUMMARY, "Average Latency (s):").unwrap(), 0.000125);
        assert_eq!(stat(SUMMARY, "Queries lost:").unwrap(), 0.0);
        assert!(stat(SUMMARY, "Queries per hour:").is_err());
    }
}
