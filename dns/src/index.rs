//! What the cluster zone is made of: every Service and the endpoints of its EndpointSlices,
//! kept as the Kubernetes DNS specification needs them and nothing more.
//!
//! Names are never materialised. A query's labels say which Service (and endpoint, port or
//! Pod) it asks about, so the index is keyed by namespace and Service name and a lookup costs
//! the same at 10 or 10,000 Services; memory is the objects' few fields, not a record per name.
//! Only the reverse (PTR) side needs a map by address, kept as each object comes and goes.
//! A Service and its slices arrive in any order: an endpoint's PTR is given only while its
//! Service exists and is headless, which is checked when asked, not when stored.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceKey {
    /// The Service `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What a Service is to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Its cluster IPs: A records for the Service name.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints' addresses.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// A named port, for SRV records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name (SRV's `_<name>` label).
    pub name: String,
    /// `tcp`, `udp` or `sctp` (SRV's `_<proto>` label), lower case.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// A Service as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// Its named ports (unnamed ports get no SRV record).
    pub ports: Vec<NamedPort>,
}

/// One endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Its label below the Service name: its hostname, or its address with dashes.
    pub label: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Whether it is ready (only ready endpoints are named, as the specification says; a
    /// Service with `publishNotReadyAddresses` has its slices say ready).
    pub ready: bool,
}

/// An EndpointSlice as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SliceEntry {
    service: ServiceKey,
    endpoints: Vec<EndpointEntry>,
    ports: Vec<NamedPort>,
}

/// Who owns an address, for PTR.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressOwner {
    /// A Service's cluster IP.
    Service(ServiceKey),
    /// An endpoint of a Service, by its label.
    Endpoint(ServiceKey, String),
}

/// Every Service and endpoint DNS answers for.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<ServiceKey, ServiceEntry>,
    /// Slices by namespace and slice name.
    slices: HashMap<ServiceKey, SliceEntry>,
    /// A Service's slices (their keys), whichever came first.
    slices_of: HashMap<ServiceKey, BTreeSet<ServiceKey>>,
    /// How many Services each namespace has (a namespace with none is not a name).
    namespaces: HashMap<String, usize>,
    reverse: HashMap<IpAddr, BTreeSet<AddressOwner>>,
    /// Bumped on every change: the zone's SOA serial.
    revision: u32,
}

/// What a Service's object says, or `None` for one DNS does not name (no name or namespace).
fn service_entry(service: &Service) -> Option<(ServiceKey, ServiceEntry)> {
    let key = ServiceKey::new(
        service.metadata.namespace.as_deref()?,
        service.metadata.name.as_deref()?,
    );
    let spec = service.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone()?.trim_end_matches('.').to_owned())
    } else {
        let ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .fold(Vec::new(), |mut ips, ip| {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
                ips
            });
        if ips.is_empty() {
            ServiceKind::Headless
        } else {
            ServiceKind::ClusterIp(ips)
        }
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone().filter(|n| !n.is_empty())?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some((key, ServiceEntry { kind, ports }))
}

/// An address as an endpoint label: `10.244.1.5` → `10-244-1-5`.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// A slice's key and entry, or `None` for one without a Service.
fn slice_entry(slice: &EndpointSlice) -> Option<(ServiceKey, SliceEntry)> {
    let namespace = slice.metadata.namespace.as_deref()?;
    let key = ServiceKey::new(namespace, slice.metadata.name.as_deref()?);
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let addresses: Vec<IpAddr> =
                e.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let label = e
                .hostname
                .clone()
                .filter(|h| !h.is_empty())
                .or_else(|| addresses.first().map(dashed))?;
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some(EndpointEntry {
                label,
                addresses,
                ready,
            })
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone().filter(|n| !n.is_empty())?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    Some((
        key,
        SliceEntry {
            service: ServiceKey::new(namespace, service),
            endpoints,
            ports,
        },
    ))
}

/// The keys of `held` a complete list (`listed`) no longer has.
fn unlisted<V>(
    held: &HashMap<ServiceKey, V>,
    listed: impl Iterator<Item = ServiceKey>,
) -> Vec<ServiceKey> {
    let listed: BTreeSet<ServiceKey> = listed.collect();
    held.keys()
        .filter(|k| !listed.contains(*k))
        .cloned()
        .collect()
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The zone's serial: changes whenever the index does.
    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// How many Services it holds.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The Service `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.services.get(key)
    }

    /// Whether `namespace` has any Service.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// The Service's ready endpoints, in a stable order (slice, then position).
    pub fn ready_endpoints<'a>(
        &'a self,
        key: &ServiceKey,
    ) -> impl Iterator<Item = &'a EndpointEntry> + use<'a> {
        self.service_slices(key)
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.ready)
    }

    /// The named ports of the Service's endpoints (the target ports), without repeats.
    pub fn endpoint_ports(&self, key: &ServiceKey) -> Vec<&NamedPort> {
        let mut ports: Vec<&NamedPort> = Vec::new();
        for port in self.service_slices(key).flat_map(|s| s.ports.iter()) {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    fn service_slices<'a>(
        &'a self,
        key: &ServiceKey,
    ) -> impl Iterator<Item = &'a SliceEntry> + use<'a> {
        self.slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.get(slice))
    }

    /// Who owns `ip` now: its Service (cluster IP) or a headless Service's ready endpoint.
    pub fn owners_of(&self, ip: &IpAddr) -> Vec<&AddressOwner> {
        self.reverse
            .get(ip)
            .into_iter()
            .flatten()
            .filter(|owner| match owner {
                AddressOwner::Service(_) => true,
                AddressOwner::Endpoint(service, label) => {
                    self.services
                        .get(service)
                        .is_some_and(|s| s.kind == ServiceKind::Headless)
                        && self
                            .ready_endpoints(service)
                            .any(|e| &e.label == label && e.addresses.contains(ip))
                }
            })
            .collect()
    }

    fn add_owner(&mut self, ip: IpAddr, owner: AddressOwner) {
        self.reverse.entry(ip).or_default().insert(owner);
    }

    fn remove_owner(&mut self, ip: &IpAddr, owner: &AddressOwner) {
        if let Some(owners) = self.reverse.get_mut(ip) {
            owners.remove(owner);
            if owners.is_empty() {
                self.reverse.remove(ip);
            }
        }
    }

    /// A Service was created or changed.
    pub fn apply_service(&mut self, service: &Service) {
        let Some((key, entry)) = service_entry(service) else {
            return;
        };
        if self.services.get(&key) == Some(&entry) {
            return;
        }
        self.remove_service_key(&key);
        if let ServiceKind::ClusterIp(ips) = &entry.kind {
            for ip in ips {
                self.add_owner(*ip, AddressOwner::Service(key.clone()));
            }
        }
        *self.namespaces.entry(key.namespace.clone()).or_default() += 1;
        self.services.insert(key, entry);
        self.revision = self.revision.wrapping_add(1);
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, service: &Service) {
        if let Some((key, _)) = service_entry(service) {
            self.remove_service_key(&key);
        }
    }

    fn remove_service_key(&mut self, key: &ServiceKey) {
        let Some(old) = self.services.remove(key) else {
            return;
        };
        if let ServiceKind::ClusterIp(ips) = &old.kind {
            for ip in ips {
                self.remove_owner(ip, &AddressOwner::Service(key.clone()));
            }
        }
        if let Some(count) = self.namespaces.get_mut(&key.namespace) {
            *count -= 1;
            if *count == 0 {
                self.namespaces.remove(&key.namespace);
            }
        }
        self.revision = self.revision.wrapping_add(1);
    }

    /// These Services and no others exist (a watch's complete list).
    pub fn relist_services(&mut self, services: &[Service]) {
        let listed = services
            .iter()
            .filter_map(|s| service_entry(s).map(|(k, _)| k));
        for key in &unlisted(&self.services, listed) {
            self.remove_service_key(key);
        }
        for service in services {
            self.apply_service(service);
        }
    }

    /// An EndpointSlice was created or changed.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some((key, entry)) = slice_entry(slice) else {
            return;
        };
        if self.slices.get(&key) == Some(&entry) {
            return;
        }
        self.remove_slice_key(&key);
        for endpoint in &entry.endpoints {
            for ip in &endpoint.addresses {
                let owner = AddressOwner::Endpoint(entry.service.clone(), endpoint.label.clone());
                self.add_owner(*ip, owner);
            }
        }
        self.slices_of
            .entry(entry.service.clone())
            .or_default()
            .insert(key.clone());
        self.slices.insert(key, entry);
        self.revision = self.revision.wrapping_add(1);
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some((key, _)) = slice_entry(slice) {
            self.remove_slice_key(&key);
        }
    }

    fn remove_slice_key(&mut self, key: &ServiceKey) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        for endpoint in &old.endpoints {
            for ip in &endpoint.addresses {
                let owner = AddressOwner::Endpoint(old.service.clone(), endpoint.label.clone());
                self.remove_owner(ip, &owner);
            }
        }
        if let Some(names) = self.slices_of.get_mut(&old.service) {
            names.remove(key);
            if names.is_empty() {
                self.slices_of.remove(&old.service);
            }
        }
        self.revision = self.revision.wrapping_add(1);
    }

    /// These EndpointSlices and no others exist (a watch's complete list).
    pub fn relist_slices(&mut self, slices: &[EndpointSlice]) {
        let listed = slices.iter().filter_map(|s| slice_entry(s).map(|(k, _)| k));
        for key in &unlisted(&self.slices, listed) {
            self.remove_slice_key(key);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        let mut object = json!({"metadata": {"name": name, "namespace": ns}});
        object["spec"] = spec;
        serde_json::from_value(object).unwrap()
    }

    /// A slice of `service` with `(ip, hostname, ready)` endpoints and `(name, port)` TCP ports.
    pub(crate) fn slice(
        ns: &str,
        name: &str,
        service: &str,
        endpoints: &[(&str, Option<&str>, bool)],
        ports: &[(&str, u16)],
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints.iter().map(|(ip, host, ready)| json!({
                "addresses": [ip], "hostname": host, "conditions": {"ready": ready}})).collect::<Vec<_>>(),
            "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_service_is_kept_by_kind_with_its_named_ports_only() {
        let mut index = Index::new();
        index.apply_service(&service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                   "ports": [{"name": "http", "port": 80}, {"port": 81, "protocol": "UDP"}]}),
        ));
        index.apply_service(&service("default", "db", json!({"clusterIP": "None"})));
        index.apply_service(&service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com."}),
        ));
        let web = index.service(&ServiceKey::new("default", "web")).unwrap();
        assert_eq!(web.kind, ServiceKind::ClusterIp(vec![ip("10.96.0.20")]));
        assert_eq!(
            web.ports,
            [NamedPort {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80
            }]
        );
        let db = ServiceKey::new("default", "db");
        assert_eq!(index.service(&db).unwrap().kind, ServiceKind::Headless);
        let ext = ServiceKey::new("default", "ext");
        assert_eq!(
            index.service(&ext).unwrap().kind,
            ServiceKind::ExternalName("example.com".into())
        );
        assert!(index.has_namespace("default"));
        assert!(!index.has_namespace("kube-system"));
    }

    #[test]
    fn endpoints_of_a_headless_service_get_ptr_while_it_exists_in_either_order() {
        let mut index = Index::new();
        let db = ServiceKey::new("default", "db");
        // The slice first: no Service yet, so no PTR.
        index.apply_slice(&slice(
            "default",
            "db-1",
            "db",
            &[
                ("10.244.1.5", Some("db-0"), true),
                ("10.244.2.6", None, true),
            ],
            &[("pg", 5432)],
        ));
        assert!(index.owners_of(&ip("10.244.1.5")).is_empty());
        index.apply_service(&service("default", "db", json!({"clusterIP": "None"})));
        assert_eq!(
            index.owners_of(&ip("10.244.1.5")),
            [&AddressOwner::Endpoint(db.clone(), "db-0".into())]
        );
        assert_eq!(
            index.owners_of(&ip("10.244.2.6")),
            [&AddressOwner::Endpoint(db.clone(), "10-244-2-6".into())]
        );
        let labels: Vec<&str> = index
            .ready_endpoints(&db)
            .map(|e| e.label.as_str())
            .collect();
        assert_eq!(labels, ["db-0", "10-244-2-6"]);
        // Made a ClusterIP Service: its endpoints are no longer named.
        index.apply_service(&service(
            "default",
            "db",
            json!({"clusterIP": "10.96.0.30"}),
        ));
        assert!(index.owners_of(&ip("10.244.1.5")).is_empty());
        assert_eq!(
            index.owners_of(&ip("10.96.0.30")),
            [&AddressOwner::Service(db.clone())]
        );
    }

    #[test]
    fn not_ready_endpoints_are_not_named_and_deletes_and_relists_forget() {
        let mut index = Index::new();
        let db = ServiceKey::new("default", "db");
        index.apply_service(&service("default", "db", json!({"clusterIP": "None"})));
        index.apply_slice(&slice(
            "default",
            "db-1",
            "db",
            &[("10.244.1.5", None, false), ("10.244.1.6", None, true)],
            &[],
        ));
        assert_eq!(index.ready_endpoints(&db).count(), 1);
        assert!(index.owners_of(&ip("10.244.1.5")).is_empty());
        let before = index.revision();
        index.relist_slices(&[]);
        assert_ne!(index.revision(), before);
        assert_eq!(index.ready_endpoints(&db).count(), 0);
        assert!(index.reverse.is_empty());
        index.relist_services(&[]);
        assert_eq!(index.service_count(), 0);
        assert!(!index.has_namespace("default"));
        assert!(index.reverse.is_empty());
    }

    #[test]
    fn an_unchanged_object_leaves_the_revision_alone() {
        let mut index = Index::new();
        let web = service("default", "web", json!({"clusterIP": "10.96.0.20"}));
        index.apply_service(&web);
        let revision = index.revision();
        index.apply_service(&web);
        assert_eq!(index.revision(), revision);
        index.delete_service(&web);
        assert!(index.owners_of(&ip("10.96.0.20")).is_empty());
    }
}
