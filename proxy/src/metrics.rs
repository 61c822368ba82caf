//! Prometheus metrics under kube-proxy's names, so existing dashboards and alerts keep working.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::SyncReport;

/// The `table` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `nat` or `filter`.
    pub table: String,
}

/// The `map` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    /// `services`, `slots`, `backends`, ...
    pub map: String,
}

/// The proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    programming: Histogram,
    rules: Family<TableLabel, Gauge>,
    map_entries: Family<MapLabel, Gauge>,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_sync: Gauge::default(),
            programming: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            rules: Family::default(),
            map_entries: Family::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In-cluster network programming latency in seconds",
            metrics.programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by the proxy",
            metrics.rules.clone(),
        );
        registry.register(
            "skiff_proxy_bpf_map_entries",
            "Entries the eBPF data plane holds, per map",
            metrics.map_entries.clone(),
        );
        metrics
    }

    /// Records a successful sync that took `took`.
    pub fn synced(&self, took: Duration, report: &SyncReport, trigger_times: &[SystemTime]) {
        self.sync_duration.observe(took.as_secs_f64());
        let now = SystemTime::now();
        self.last_sync.set(
            now.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        for (table, count) in &report.rules {
            let label = TableLabel {
                table: (*table).to_owned(),
            };
            self.rules.get_or_create(&label).set(*count as i64);
        }
        for (map, count) in &report.map_entries {
            let label = MapLabel {
                map: (*map).to_owned(),
            };
            self.map_entries.get_or_create(&label).set(*count as i64);
        }
        for trigger in trigger_times {
            if let Ok(latency) = now.duration_since(*trigger) {
                self.programming.observe(latency.as_secs_f64());
            }
        }
    }
}
