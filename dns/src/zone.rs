//! The answers for names in the cluster zone, as the Kubernetes DNS specification (schema
//! 1.1.0) gives them: Services by `<svc>.<ns>.svc.<zone>`, their endpoints, named ports by SRV,
//! `<a-b-c-d>.<ns>.pod.<zone>`, PTR for cluster IPs and headless endpoints, `dns-version`.
//!
//! A query is read label by label from the zone down (`svc`, namespace, Service, ...), so
//! what it names is found by key, never by scanning. Pod names are answered from the name
//! alone, as CoreDNS's default `pods insecure` does, so Pods need no watch. Anything in the
//! zone that names nothing is NXDOMAIN; a name that exists without the asked type is NODATA;
//! both carry the zone's SOA (added by the caller, which knows the TTL to give it).

use std::borrow::Cow;
use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::index::{AddressOwner, Index, ServiceKey, ServiceKind};

/// The specification's version this zone follows (`dns-version.<zone>` TXT).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The cluster DNS Service, whose address is `ns.dns.<zone>` (the zone's name server).
const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");

/// What the zone says about a name.
#[derive(Clone, Debug, PartialEq)]
pub enum ZoneAnswer {
    /// Records for the name, and records that help use them (SRV targets' addresses).
    Found {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section.
        additionals: Vec<Record>,
    },
    /// An ExternalName Service: its CNAME, and the name it points to, to be resolved on.
    Alias {
        /// The CNAME record.
        cname: Box<Record>,
        /// Its target.
        target: Name,
    },
    /// The name exists, but not with this type.
    NoData,
    /// No such name.
    NxDomain,
}

/// The cluster zone (`cluster.local.` by default).
#[derive(Clone, Debug)]
pub struct ClusterZone {
    origin: Name,
    ttl: u32,
}

/// Why a zone cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("bad cluster domain {domain:?}: {source}")]
pub struct ZoneError {
    domain: String,
    #[source]
    source: hickory_server::proto::ProtoError,
}

fn found(answers: Vec<Record>) -> ZoneAnswer {
    if answers.is_empty() {
        ZoneAnswer::NoData
    } else {
        ZoneAnswer::Found {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// The labels of `name` below `origin`, outermost first (`web.default.svc` → svc, default,
/// web), lower case (copied only when they are not already); `None` when one is not UTF-8.
fn labels_below<'n>(name: &'n Name, origin: &Name) -> Option<Vec<Cow<'n, str>>> {
    let below = usize::from(name.num_labels()) - usize::from(origin.num_labels());
    let mut labels: Vec<Cow<'n, str>> = name
        .iter()
        .take(below)
        .map(|l| {
            let label = std::str::from_utf8(l).ok()?;
            Some(match label.bytes().any(|b| b.is_ascii_uppercase()) {
                true => Cow::Owned(label.to_ascii_lowercase()),
                false => Cow::Borrowed(label),
            })
        })
        .collect::<Option<_>>()?;
    labels.reverse();
    Some(labels)
}

/// `10-244-1-5` → 10.244.1.5 (IPv6: dashes for colons).
fn undashed(label: &str) -> Option<IpAddr> {
    label
        .replace('-', ".")
        .parse()
        .ok()
        .or_else(|| label.replace('-', ":").parse().ok())
}

impl ClusterZone {
    /// The zone `domain` (e.g. `cluster.local`), whose records live `ttl` seconds.
    pub fn new(domain: &str, ttl: u32) -> Result<Self, ZoneError> {
        let mut origin = Name::from_ascii(domain.trim_end_matches('.'))
            .map_err(|source| ZoneError {
                domain: domain.to_owned(),
                source,
            })?
            .to_lowercase();
        origin.set_fqdn(true);
        Ok(ClusterZone { origin, ttl })
    }

    /// The zone's name.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Records' TTL.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether `name` is in this zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    fn below(&self, labels: &[&str]) -> Name {
        let mut name = self.origin.clone();
        for label in labels.iter().rev() {
            // Labels come from objects the apiserver validated (DNS labels); the zone fits.
            name = name.prepend_label(*label).unwrap_or_else(|_| name.clone());
        }
        name
    }

    fn service_name(&self, key: &ServiceKey) -> Name {
        self.below(&[&key.name, &key.namespace, "svc"])
    }

    fn endpoint_name(&self, key: &ServiceKey, label: &str) -> Name {
        self.below(&[label, &key.name, &key.namespace, "svc"])
    }

    /// The zone's SOA record, serial `serial`; its minimum (the negative TTL) is the TTL.
    pub fn soa(&self, serial: u32) -> Record {
        let soa = SOA::new(
            self.below(&["ns", "dns"]),
            self.below(&["hostmaster"]),
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    fn record(&self, name: &Name, rdata: RData) -> Record {
        Record::from_rdata(name.clone(), self.ttl, rdata)
    }

    /// Address records of `qtype` for `name`.
    fn addresses<'a>(
        &self,
        name: &Name,
        qtype: RecordType,
        ips: impl IntoIterator<Item = &'a IpAddr>,
    ) -> Vec<Record> {
        let mut records: Vec<Record> = Vec::new();
        for ip in ips {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            let record = self.record(name, rdata);
            if !records.contains(&record) {
                records.push(record);
            }
        }
        records
    }

    /// The answer for `qname` (in this zone, any case) and `qtype`.
    pub fn lookup(&self, index: &Index, qname: &Name, qtype: RecordType) -> ZoneAnswer {
        let Some(labels) = labels_below(qname, &self.origin) else {
            return ZoneAnswer::NxDomain;
        };
        let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => found(vec![self.soa(index.revision())]),
                RecordType::NS => found(vec![
                    self.record(qname, RData::NS(NS(self.below(&["ns", "dns"])))),
                ]),
                _ => ZoneAnswer::NoData,
            },
            ["dns-version"] => match qtype {
                RecordType::TXT | RecordType::ANY => {
                    found(vec![self.record(
                        qname,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])),
                    )])
                }
                _ => ZoneAnswer::NoData,
            },
            ["dns"] | ["svc"] | ["pod"] | ["pod", _] => ZoneAnswer::NoData,
            ["dns", "ns"] => {
                let key = ServiceKey::new(DNS_SERVICE.0, DNS_SERVICE.1);
                match index.service(&key).map(|s| &s.kind) {
                    Some(ServiceKind::ClusterIp(ips)) => found(self.addresses(qname, qtype, ips)),
                    _ => ZoneAnswer::NoData,
                }
            }
            ["svc", namespace] if index.has_namespace(namespace) => ZoneAnswer::NoData,
            ["svc", namespace, service, rest @ ..] => self.service_lookup(
                index,
                qname,
                qtype,
                &ServiceKey::new(namespace, service),
                rest,
            ),
            ["pod", _, label] => match undashed(label) {
                Some(ip) => found(self.addresses(qname, qtype, [&ip])),
                None => ZoneAnswer::NxDomain,
            },
            _ => ZoneAnswer::NxDomain,
        }
    }

    /// Names below `<service>.<ns>.svc`: the Service itself (`rest` empty), an endpoint, a
    /// protocol, or a port.
    fn service_lookup(
        &self,
        index: &Index,
        qname: &Name,
        qtype: RecordType,
        key: &ServiceKey,
        rest: &[&str],
    ) -> ZoneAnswer {
        let Some(service) = index.service(key) else {
            return ZoneAnswer::NxDomain;
        };
        match (rest, &service.kind) {
            ([], ServiceKind::ExternalName(target)) => {
                let Ok(mut target) = Name::from_ascii(target) else {
                    return ZoneAnswer::NxDomain;
                };
                target.set_fqdn(true);
                let cname = self.record(qname, RData::CNAME(CNAME(target.clone())));
                if qtype == RecordType::CNAME {
                    found(vec![cname])
                } else {
                    ZoneAnswer::Alias {
                        cname: Box::new(cname),
                        target,
                    }
                }
            }
            ([], _) if qtype == RecordType::SRV => self.srv(index, qname, key, None),
            ([], ServiceKind::ClusterIp(ips)) => found(self.addresses(qname, qtype, ips)),
            ([], ServiceKind::Headless) => {
                let ips = index.ready_endpoints(key).flat_map(|e| e.addresses.iter());
                found(self.addresses(qname, qtype, ips))
            }
            ([protocol], _) if protocol.starts_with('_') => {
                if self.ports(index, key, None, Some(protocol)).is_empty() {
                    ZoneAnswer::NxDomain
                } else {
                    ZoneAnswer::NoData
                }
            }
            ([label], ServiceKind::Headless) => {
                let ips: Vec<&IpAddr> = index
                    .ready_endpoints(key)
                    .filter(|e| e.label == *label)
                    .flat_map(|e| e.addresses.iter())
                    .collect();
                if ips.is_empty() {
                    ZoneAnswer::NxDomain
                } else {
                    found(self.addresses(qname, qtype, ips))
                }
            }
            ([protocol, port], _) if protocol.starts_with('_') && port.starts_with('_') => {
                if self
                    .ports(index, key, Some(port), Some(protocol))
                    .is_empty()
                {
                    ZoneAnswer::NxDomain
                } else if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    self.srv(index, qname, key, Some((port, protocol)))
                } else {
                    ZoneAnswer::NoData
                }
            }
            _ => ZoneAnswer::NxDomain,
        }
    }

    /// The Service's named ports that match `_port` and `_protocol` labels: the Service's own
    /// ports for a ClusterIP Service, the endpoints' for a headless one.
    fn ports(
        &self,
        index: &Index,
        key: &ServiceKey,
        port: Option<&str>,
        protocol: Option<&str>,
    ) -> Vec<crate::index::NamedPort> {
        let Some(service) = index.service(key) else {
            return Vec::new();
        };
        let all: Vec<&crate::index::NamedPort> = match service.kind {
            ServiceKind::Headless => index.endpoint_ports(key),
            _ => service.ports.iter().collect(),
        };
        let matches = |want: Option<&str>, have: &str| {
            want.is_none_or(|w| w.strip_prefix('_').is_some_and(|w| w == have))
        };
        all.into_iter()
            .filter(|p| matches(port, &p.name) && matches(protocol, &p.protocol))
            .cloned()
            .collect()
    }

    /// SRV records for the Service's ports (`which`: one port by name and protocol, or all):
    /// the Service name as target for a ClusterIP Service, each ready endpoint for a headless
    /// one, with the targets' addresses as additionals.
    fn srv(
        &self,
        index: &Index,
        qname: &Name,
        key: &ServiceKey,
        which: Option<(&str, &str)>,
    ) -> ZoneAnswer {
        let ports = self.ports(index, key, which.map(|w| w.0), which.map(|w| w.1));
        let Some(service) = index.service(key) else {
            return ZoneAnswer::NxDomain;
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &service.kind {
            ServiceKind::ClusterIp(ips) => {
                let target = self.service_name(key);
                for port in &ports {
                    let srv = SRV::new(0, 100, port.port, target.clone());
                    answers.push(self.record(qname, RData::SRV(srv)));
                }
                if !answers.is_empty() {
                    additionals = self.addresses(&target, RecordType::ANY, ips);
                }
            }
            ServiceKind::Headless => {
                let endpoints: Vec<_> = index.ready_endpoints(key).collect();
                let weight = u16::try_from(100 / endpoints.len().max(1))
                    .unwrap_or(1)
                    .max(1);
                for port in &ports {
                    for endpoint in &endpoints {
                        let target = self.endpoint_name(key, &endpoint.label);
                        let srv = SRV::new(0, weight, port.port, target.clone());
                        answers.push(self.record(qname, RData::SRV(srv)));
                        for record in self.addresses(&target, RecordType::ANY, &endpoint.addresses)
                        {
                            if !additionals.contains(&record) {
                                additionals.push(record);
                            }
                        }
                    }
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
        if answers.is_empty() {
            ZoneAnswer::NoData
        } else {
            ZoneAnswer::Found {
                answers,
                additionals,
            }
        }
    }

    /// The answer for a reverse name (`d.c.b.a.in-addr.arpa.`) this zone owns — a cluster IP or
    /// a headless Service's ready endpoint — or `None` for any other (to be forwarded).
    pub fn lookup_reverse(
        &self,
        index: &Index,
        qname: &Name,
        qtype: RecordType,
    ) -> Option<ZoneAnswer> {
        let net = qname.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let owners = index.owners_of(&net.addr());
        if owners.is_empty() {
            return None;
        }
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Some(ZoneAnswer::NoData);
        }
        let answers = owners
            .into_iter()
            .map(|owner| {
                let target = match owner {
                    AddressOwner::Service(key) => self.service_name(key),
                    AddressOwner::Endpoint(key, label) => self.endpoint_name(key, label),
                };
                self.record(qname, RData::PTR(PTR(target)))
            })
            .collect();
        Some(found(answers))
    }
}

#[cfg(test)]
mod tests;
