//! Prometheus metrics, shaped as CoreDNS's (`coredns_dns_requests_total` and friends) under a
//! `skiff_dns_` prefix: requests by zone, protocol and type, responses by code, latency, the
//! cache and the forwarder.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which part answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    /// The cluster zone (and its reverse names).
    Cluster,
    /// An upstream server or the cache.
    Forward,
    /// Nobody: the request itself was refused or malformed.
    Rejected,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Cluster => "cluster",
            Source::Forward => "forward",
            Source::Rejected => "rejected",
        }
    }
}

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `cluster`, `forward` or `rejected`.
    pub zone: &'static str,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// The query type (`A`, `SRV`, ...).
    #[prometheus(flatten)]
    pub qtype: TypeLabel,
}

/// The `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The query type.
    pub r#type: &'static str,
}

/// The `rcode` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabel {
    /// `NOERROR`, `NXDOMAIN`, ...
    pub rcode: &'static str,
}

/// The `reason` label of a forwarding failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `busy` (too many at once), `unanswered` (every upstream failed).
    pub reason: &'static str,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<RcodeLabel, Counter>,
    duration: Family<SourceLabel, Histogram, fn() -> Histogram>,
    /// Answers served from the cache.
    pub cache_hits: Counter,
    /// Forwarded questions the cache did not hold.
    pub cache_misses: Counter,
    /// Answers the cache holds.
    pub cache_entries: Gauge,
    /// Questions sent to an upstream server.
    pub forwarded: Counter,
    forward_failures: Family<ReasonLabel, Counter>,
    /// Services in the index.
    pub services: Gauge,
}

/// The `zone` label alone, for latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `cluster`, `forward` or `rejected`.
    pub zone: &'static str,
}

/// CoreDNS's latency buckets: 0.25 ms doubling to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            forwarded: Counter::default(),
            forward_failures: Family::default(),
            services: Gauge::default(),
        };
        registry.register(
            "skiff_dns_requests",
            "DNS requests, by zone, transport and query type",
            metrics.requests.clone(),
        );
        registry.register(
            "skiff_dns_responses",
            "DNS responses, by response code",
            metrics.responses.clone(),
        );
        registry.register(
            "skiff_dns_request_duration_seconds",
            "Time to answer a request, by zone",
            metrics.duration.clone(),
        );
        registry.register(
            "skiff_dns_cache_hits",
            "Forwarded questions answered from the cache",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "skiff_dns_cache_misses",
            "Forwarded questions the cache did not hold",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "skiff_dns_cache_entries",
            "Answers the cache holds",
            metrics.cache_entries.clone(),
        );
        registry.register(
            "skiff_dns_forward_requests",
            "Questions sent to upstream servers",
            metrics.forwarded.clone(),
        );
        registry.register(
            "skiff_dns_forward_failures",
            "Forwarded questions answered SERVFAIL or REFUSED, by reason",
            metrics.forward_failures.clone(),
        );
        registry.register(
            "skiff_dns_services",
            "Services the cluster zone holds",
            metrics.services.clone(),
        );
        metrics
    }

    /// One request answered by `source` over `proto` with `rcode`, in `seconds` (labels are
    /// static strings: counting allocates nothing).
    pub fn answered(
        &self,
        source: Source,
        proto: &'static str,
        qtype: &'static str,
        rcode: &'static str,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                zone: source.label(),
                proto,
                qtype: TypeLabel { r#type: qtype },
            })
            .inc();
        self.responses.get_or_create(&RcodeLabel { rcode }).inc();
        self.duration
            .get_or_create(&SourceLabel {
                zone: source.label(),
            })
            .observe(seconds);
    }

    /// A forwarded question that got no upstream answer.
    pub fn forward_failed(&self, reason: &'static str) {
        self.forward_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
