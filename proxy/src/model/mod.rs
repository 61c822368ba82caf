//! The proxy's model: what Services and EndpointSlices mean to one node, free of any data plane.
//!
//! kube-proxy's split, kept on purpose: watch handlers only *record* objects into the change
//! trackers ([`ServiceChangeTracker`], [`EndpointSliceTracker`]); the runner later folds the
//! recorded changes into a [`ServiceMap`] and an [`EndpointsMap`] keyed by [`ServicePortName`],
//! and [`desired_state`] turns those maps plus [`NodeFacts`] into a [`DesiredState`]: per
//! Service port, which endpoints internal and external traffic may reach from this node. Both
//! data planes (iptables and eBPF) consume that one value, so every Kubernetes rule about
//! *which* endpoint may serve *which* traffic lives here, once, under unit tests.

mod desired;
mod endpoints;
mod service;

use std::fmt;

pub use desired::{DesiredService, DesiredState, EndpointAddr, NodeFacts, desired_state};
pub use endpoints::{Endpoint, EndpointSliceTracker, EndpointsMap, EndpointsUpdate};
pub use service::{ServiceChangeTracker, ServiceMap, ServicePort};

/// A transport protocol a Service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API's spelling (`TCP`, `UDP`, `SCTP`); `None` (the API default) is TCP.
    pub fn from_api(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name, as iptables and `conntrack` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::from_api(Some(&s.to_ascii_uppercase()))
            .ok_or_else(|| format!("unknown protocol {s:?} (tcp, udp or sctp)"))
    }
}

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl NamespacedName {
    /// `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        NamespacedName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of one Service: the key of every map in the proxy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: NamespacedName,
    /// The port's name (empty for a Service's single unnamed port).
    pub port: String,
    /// Its protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// `namespace/name:port/protocol`.
    pub fn new(namespace: &str, name: &str, port: &str, protocol: Protocol) -> Self {
        ServicePortName {
            service: NamespacedName::new(namespace, name),
            port: port.to_owned(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
    }
}

/// The label that hands a Service (and its slices) to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label the EndpointSlice controller puts on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Node label topology hints refer to.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
