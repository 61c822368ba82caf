//! What the scheduler knows of the cluster: per-Node totals kept up to date from watch events.
//!
//! kube-scheduler does not sum a Node's Pods at every decision; it keeps a `NodeInfo` per Node
//! that each Pod event adjusts, and *assumes* a Pod onto its Node the moment it decides, before
//! the binding is written or seen again through the watch. This is the same idea: deciding
//! costs one pass over the Nodes with no API call, and back-to-back decisions see each other,
//! so a burst of Pods cannot overcommit a Node. An assumption is dropped if the binding fails
//! and replaced by the real Pod when the watch shows it bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use skiff_common::quantity::parse_millis;

/// `namespace/name` of a Pod.
pub type PodKey = String;

/// The key of a Pod.
pub fn pod_key(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// CPU and memory, both in thousandths (millicores; memory bytes × 1000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu: i128,
    /// Bytes × 1000.
    pub memory: i128,
}

impl Resources {
    fn add(&mut self, other: Resources, sign: i128) {
        self.cpu += sign * other.cpu;
        self.memory += sign * other.memory;
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// A host port a Pod binds: protocol, host IP (`0.0.0.0` when unset) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The host address; `0.0.0.0` means every address.
    pub ip: String,
    /// The port number.
    pub port: i32,
}

impl HostPort {
    /// Whether two bindings of host ports collide.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// What a Pod asks of a Node, read once from its spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodDemand {
    /// Requested CPU and memory (containers summed, init containers' maximum, overhead).
    pub requests: Resources,
    /// The same with kube-scheduler's defaults (100m, 200Mi) for containers that request none,
    /// so that scoring spreads Pods without requests.
    pub score_requests: Resources,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// The host ports of its containers.
    pub host_ports: Vec<HostPort>,
    /// The uid of its controlling owner (a ReplicaSet's, usually), for spreading; none while
    /// the Pod terminates, as kube-scheduler's spreading skips terminating Pods (their
    /// replacements should land where they are going away) though their requests still count.
    pub owner: Option<String>,
}

const DEFAULT_CPU_MILLIS: i128 = 100;
const DEFAULT_MEMORY_MILLIS: i128 = 200 * 1024 * 1024 * 1000;

fn quantity(map: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<i128> {
    let text = &map?.get(name)?.0;
    match parse_millis(text) {
        Ok(v) => Some(v.max(0)),
        Err(err) => {
            tracing::warn!(error = %err, "ignoring a malformed {name} quantity");
            None
        }
    }
}

/// A container's request of `name`: its request, else its limit (the API's defaulting).
fn container_request(container: &Container, name: &str) -> Option<i128> {
    let resources = container.resources.as_ref()?;
    quantity(resources.requests.as_ref(), name)
        .or_else(|| quantity(resources.limits.as_ref(), name))
}

impl PodDemand {
    /// Reads a Pod's demand.
    pub fn of(pod: &Pod) -> PodDemand {
        let mut demand = PodDemand {
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .filter(|_| pod.metadata.deletion_timestamp.is_none())
                .map(|o| o.uid.clone()),
            ..PodDemand::default()
        };
        let Some(spec) = &pod.spec else {
            return demand;
        };
        let mut containers = Resources::default();
        for c in &spec.containers {
            let cpu = container_request(c, "cpu");
            let memory = container_request(c, "memory");
            containers.add(
                Resources {
                    cpu: cpu.unwrap_or(0),
                    memory: memory.unwrap_or(0),
                },
                1,
            );
            demand.score_requests.add(
                Resources {
                    cpu: cpu.filter(|v| *v > 0).unwrap_or(DEFAULT_CPU_MILLIS),
                    memory: memory.filter(|v| *v > 0).unwrap_or(DEFAULT_MEMORY_MILLIS),
                },
                1,
            );
            for port in c.ports.iter().flatten() {
                if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                    demand.host_ports.push(HostPort {
                        protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ip: port
                            .host_ip
                            .clone()
                            .filter(|ip| !ip.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        port: host_port,
                    });
                }
            }
        }
        let mut init = Resources::default();
        for c in spec.init_containers.iter().flatten() {
            init = init.max(Resources {
                cpu: container_request(c, "cpu").unwrap_or(0),
                memory: container_request(c, "memory").unwrap_or(0),
            });
        }
        demand.requests = containers.max(init);
        let overhead = Resources {
            cpu: quantity(spec.overhead.as_ref(), "cpu").unwrap_or(0),
            memory: quantity(spec.overhead.as_ref(), "memory").unwrap_or(0),
        };
        demand.requests.add(overhead, 1);
        demand.score_requests.add(overhead, 1);
        demand.node_selector = spec.node_selector.clone().unwrap_or_default();
        demand.tolerations = spec.tolerations.clone().unwrap_or_default();
        demand
    }
}

/// One Node as the scheduler sees it: its own fields and the sum of the Pods placed on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The Node's name.
    pub name: String,
    /// Whether the Node object exists (Pods may name a Node not seen yet, or gone).
    pub exists: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// Condition Ready is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` cpu and memory.
    pub allocatable: Resources,
    /// `status.allocatable` pods (110 when unset).
    pub allocatable_pods: i128,
    /// What the placed Pods request.
    pub requested: Resources,
    /// What the placed Pods request, with defaults for containers without requests.
    pub score_requested: Resources,
    /// How many Pods are placed here.
    pub pods: i128,
    /// Host ports in use, with how many Pods use each.
    pub host_ports: HashMap<HostPort, usize>,
    /// Placed Pods per controlling owner uid.
    pub owners: HashMap<String, usize>,
}

impl NodeInfo {
    fn place(&mut self, demand: &PodDemand, sign: i128) {
        self.requested.add(demand.requests, sign);
        self.score_requested.add(demand.score_requests, sign);
        self.pods += sign;
        for port in &demand.host_ports {
            count(&mut self.host_ports, port.clone(), sign);
        }
        if let Some(owner) = &demand.owner {
            count(&mut self.owners, owner.clone(), sign);
        }
    }

    /// The Node's own fields, for telling whether a change could let a Pod fit.
    fn fingerprint(&self) -> impl PartialEq + use<> {
        (
            self.labels.clone(),
            self.taints.clone(),
            self.ready,
            self.unschedulable,
            self.allocatable,
            self.allocatable_pods,
        )
    }
}

fn count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, sign: i128) {
    if sign > 0 {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// A Pod counted on a Node.
#[derive(Debug)]
struct Placement {
    node: String,
    demand: Arc<PodDemand>,
    /// Decided by this scheduler and not yet seen bound through the watch.
    assumed: bool,
}

/// Nodes and the Pods placed on them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    placements: HashMap<PodKey, Placement>,
}

impl Cache {
    /// The Nodes that exist, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.exists)
    }

    /// Adds or updates a Node; true when it is new or changed in a way that may let Pods fit.
    pub fn apply_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name.clone()).or_insert_with(|| NodeInfo {
            name,
            ..NodeInfo::default()
        });
        let before = (info.exists, info.fingerprint());
        let status = node.status.as_ref();
        let allocatable = status.and_then(|s| s.allocatable.as_ref());
        info.exists = true;
        info.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        info.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        info.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        info.ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        info.allocatable = Resources {
            cpu: quantity(allocatable, "cpu").unwrap_or(0),
            memory: quantity(allocatable, "memory").unwrap_or(0),
        };
        info.allocatable_pods = quantity(allocatable, "pods").map_or(110, |p| p / 1000);
        before != (true, info.fingerprint())
    }

    /// Forgets a Node (its Pods stay counted until they go).
    pub fn delete_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.exists = false;
            if info.pods <= 0 {
                self.nodes.remove(name);
            }
        }
    }

    /// Keeps only the Nodes in `names` (after a relist).
    pub fn retain_nodes(&mut self, names: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.delete_node(&name);
        }
    }

    /// Takes in a Pod's new state; true when it freed room on a Node.
    pub fn apply_pod(&mut self, pod: &Pod) -> bool {
        let key = pod_key(pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        match node.filter(|n| !n.is_empty()) {
            Some(_) if finished => self.unplace(&key),
            Some(node) => {
                let freed = self.unplace(&key);
                self.place(key, node, Arc::new(PodDemand::of(pod)), false);
                freed
            }
            // Unbound: an assumption (if any) stands until the binding's outcome is known.
            None => false,
        }
    }

    /// Forgets a Pod; true when it freed room on a Node.
    pub fn delete_pod(&mut self, key: &str) -> bool {
        self.unplace(key)
    }

    /// Keeps only the Pods in `keys` (after a relist).
    pub fn retain_pods(&mut self, keys: &std::collections::HashSet<PodKey>) {
        let gone: Vec<PodKey> = self
            .placements
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.unplace(&key);
        }
    }

    /// Counts a Pod on the Node just chosen for it, before the binding is written.
    pub fn assume(&mut self, key: PodKey, node: &str, demand: Arc<PodDemand>) {
        self.unplace(&key);
        self.place(key, node.to_owned(), demand, true);
    }

    /// Drops an assumption whose binding failed (a Pod seen bound stays).
    pub fn forget(&mut self, key: &str) {
        if self.placements.get(key).is_some_and(|p| p.assumed) {
            self.unplace(key);
        }
    }

    /// The Node a Pod is counted on, if any.
    pub fn placed_on(&self, key: &str) -> Option<&str> {
        self.placements.get(key).map(|p| p.node.as_str())
    }

    fn place(&mut self, key: PodKey, node: String, demand: Arc<PodDemand>, assumed: bool) {
        let info = self.nodes.entry(node.clone()).or_insert_with(|| NodeInfo {
            name: node.clone(),
            ..NodeInfo::default()
        });
        info.place(&demand, 1);
        self.placements.insert(
            key,
            Placement {
                node,
                demand,
                assumed,
            },
        );
    }

    fn unplace(&mut self, key: &str) -> bool {
        let Some(placement) = self.placements.remove(key) else {
            return false;
        };
        if let Some(info) = self.nodes.get_mut(&placement.node) {
            info.place(&placement.demand, -1);
            if !info.exists && info.pods <= 0 {
                self.nodes.remove(&placement.node);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": "rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": cpu}},
                 "ports": [{"containerPort": 80, "hostPort": 8080}]},
                {"name": "b", "image": "x", "resources": {"limits": {"cpu": "50m", "memory": "64Mi"}}}
            ], "initContainers": [
                {"name": "i", "image": "x", "resources": {"requests": {"cpu": "2"}}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn demand_sums_containers_takes_limits_as_requests_and_the_init_maximum() {
        let d = PodDemand::of(&pod("p", None, "100m"));
        assert_eq!(d.requests.cpu, 2000, "the init container's 2 CPUs dominate");
        assert_eq!(d.requests.memory, 64 * 1024 * 1024 * 1000);
        assert_eq!(d.score_requests.cpu, 150);
        assert_eq!(d.owner.as_deref(), Some("rs-uid"));
        assert_eq!(d.host_ports.len(), 1);
        assert_eq!(d.host_ports[0].ip, "0.0.0.0");
    }

    #[test]
    fn a_terminating_pod_keeps_its_requests_but_no_longer_counts_for_spreading() {
        let mut cache = Cache::default();
        cache.apply_node(&node("n1", "8"));
        cache.apply_pod(&pod("p", Some("n1"), "100m"));
        let mut terminating = pod("p", Some("n1"), "100m");
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        cache.apply_pod(&terminating);
        let n1 = cache.nodes().next().unwrap();
        assert_eq!((n1.pods, n1.requested.cpu), (1, 2000));
        assert!(n1.owners.is_empty(), "{:?}", n1.owners);
    }

    #[test]
    fn nodes_sum_bound_and_assumed_pods_and_free_them() {
        let mut cache = Cache::default();
        assert!(cache.apply_node(&node("n1", "4")));
        assert!(!cache.apply_node(&node("n1", "4")), "no change");
        assert!(cache.apply_node(&node("n1", "8")), "allocatable grew");
        cache.apply_pod(&pod("bound", Some("n1"), "100m"));
        let demand = Arc::new(PodDemand::of(&pod("new", None, "100m")));
        cache.assume("ns/new".into(), "n1", demand);
        let n1 = cache.nodes().next().unwrap();
        assert_eq!(n1.pods, 2);
        assert_eq!(n1.requested.cpu, 4000);
        assert_eq!(n1.owners["rs-uid"], 2);
        // The watch shows the assumed Pod still unbound: the assumption stands.
        assert!(!cache.apply_pod(&pod("new", None, "100m")));
        assert_eq!(cache.placed_on("ns/new"), Some("n1"));
        // ... then bound: it is counted once, no longer assumed.
        cache.apply_pod(&pod("new", Some("n1"), "100m"));
        cache.forget("ns/new");
        assert_eq!(cache.placed_on("ns/new"), Some("n1"));
        assert!(cache.delete_pod("ns/bound"));
        assert!(cache.delete_pod("ns/new"));
        let n1 = cache.nodes().next().unwrap();
        assert_eq!((n1.pods, n1.requested.cpu), (0, 0));
    }

    #[test]
    fn a_failed_binding_is_forgotten_and_finished_pods_free_their_node() {
        let mut cache = Cache::default();
        cache.apply_node(&node("n1", "4"));
        let demand = Arc::new(PodDemand::of(&pod("new", None, "100m")));
        cache.assume("ns/new".into(), "n1", demand);
        cache.forget("ns/new");
        assert_eq!(cache.placed_on("ns/new"), None);
        let mut done = pod("done", Some("n1"), "1");
        cache.apply_pod(&done);
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(cache.apply_pod(&done));
        assert_eq!(cache.nodes().next().unwrap().pods, 0);
    }

    #[test]
    fn host_ports_conflict_on_the_same_port_and_protocol_across_wildcards() {
        let any = HostPort {
            protocol: "TCP".into(),
            ip: "0.0.0.0".into(),
            port: 80,
        };
        let one = HostPort {
            ip: "10.0.0.1".into(),
            ..any.clone()
        };
        let other = HostPort {
            ip: "10.0.0.2".into(),
            ..any.clone()
        };
        let udp = HostPort {
            protocol: "UDP".into(),
            ..any.clone()
        };
        assert!(any.conflicts(&one) && one.conflicts(&any));
        assert!(!one.conflicts(&other));
        assert!(!any.conflicts(&udp));
    }
}
