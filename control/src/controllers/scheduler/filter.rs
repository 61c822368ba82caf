//! Whether a Pod may run on a Node, and why not — kube-scheduler's filter plugins that matter
//! here (NodeReady, NodeUnschedulable, NodeAffinity's nodeSelector, TaintToleration, NodePorts,
//! NodeResourcesFit), with its wording, so `kubectl describe pod` reads the same.
//!
//! Like the framework, the first failing check decides a Node's reason, except that resources
//! report every shortage at once ("Insufficient cpu" and "Insufficient memory").

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::cache::{NodeInfo, PodDemand};

const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why one Node cannot take a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Its Ready condition is not True.
    NotReady,
    /// It is cordoned (`spec.unschedulable`).
    Unschedulable,
    /// Its labels do not match the Pod's nodeSelector.
    Selector,
    /// A NoSchedule/NoExecute taint the Pod does not tolerate.
    Taint {
        /// The taint's key.
        key: String,
        /// The taint's value.
        value: String,
    },
    /// A host port the Pod needs is taken.
    Ports,
    /// Not enough of a resource (`cpu`, `memory`) or Pod slots (`pods`).
    Insufficient(&'static str),
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotReady => f.write_str("node(s) were not ready"),
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::Selector => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Unfit::Insufficient("pods") => f.write_str("Too many pods"),
            Unfit::Insufficient(resource) => write!(f, "Insufficient {resource}"),
        }
    }
}

/// Whether `toleration` tolerates `taint` (core/v1 `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists matches every taint.
        "Exists" => true,
        "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Checks `node` for `demand`: Ok, or the reasons it does not fit.
pub fn check(node: &NodeInfo, demand: &PodDemand) -> Result<(), Vec<Unfit>> {
    if !node.ready {
        return Err(vec![Unfit::NotReady]);
    }
    if node.unschedulable {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerated(&demand.tolerations, &cordon) {
            return Err(vec![Unfit::Unschedulable]);
        }
    }
    if demand
        .node_selector
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
    {
        return Err(vec![Unfit::Selector]);
    }
    if let Some(taint) = node.taints.iter().find(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerated(&demand.tolerations, t)
    }) {
        return Err(vec![Unfit::Taint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        }]);
    }
    if demand
        .host_ports
        .iter()
        .any(|want| node.host_ports.keys().any(|used| used.conflicts(want)))
    {
        return Err(vec![Unfit::Ports]);
    }
    let mut short = Vec::new();
    if node.pods + 1 > node.allocatable_pods {
        short.push(Unfit::Insufficient("pods"));
    }
    let r = demand.requests;
    if r.cpu > 0 && node.requested.cpu + r.cpu > node.allocatable.cpu {
        short.push(Unfit::Insufficient("cpu"));
    }
    if r.memory > 0 && node.requested.memory + r.memory > node.allocatable.memory {
        short.push(Unfit::Insufficient("memory"));
    }
    if short.is_empty() { Ok(()) } else { Err(short) }
}

/// No Node fits: how many there are and how many failed for each reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FitError {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason text → number of Nodes.
    pub reasons: BTreeMap<String, usize>,
}

impl FitError {
    /// Counts one Node's reasons.
    pub fn add(&mut self, reasons: &[Unfit]) {
        for reason in reasons {
            *self.reasons.entry(reason.to_string()).or_insert(0) += 1;
        }
    }
}

impl fmt::Display for FitError {
    /// "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available", self.nodes)?;
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        f.write_str(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::scheduler::cache::{HostPort, Resources};

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            exists: true,
            ready: true,
            allocatable: Resources {
                cpu: 1000,
                memory: 1000,
            },
            allocatable_pods: 2,
            ..NodeInfo::default()
        }
    }

    fn demand(cpu: i128, memory: i128) -> PodDemand {
        PodDemand {
            requests: Resources { cpu, memory },
            ..PodDemand::default()
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn resources_fit_until_requests_exceed_allocatable() {
        let mut n = node();
        assert_eq!(check(&n, &demand(1000, 1000)), Ok(()));
        n.requested = Resources {
            cpu: 500,
            memory: 0,
        };
        assert_eq!(
            check(&n, &demand(600, 2000)),
            Err(vec![
                Unfit::Insufficient("cpu"),
                Unfit::Insufficient("memory")
            ])
        );
        n.pods = 2;
        assert_eq!(
            check(&n, &demand(0, 0)),
            Err(vec![Unfit::Insufficient("pods")])
        );
    }

    #[test]
    fn not_ready_cordoned_and_unselected_nodes_fail() {
        let mut n = node();
        n.ready = false;
        assert_eq!(check(&n, &demand(0, 0)), Err(vec![Unfit::NotReady]));
        let mut n = node();
        n.unschedulable = true;
        assert_eq!(check(&n, &demand(0, 0)), Err(vec![Unfit::Unschedulable]));
        let mut d = demand(0, 0);
        d.tolerations = vec![toleration(UNSCHEDULABLE_TAINT, "Exists", "", "")];
        assert_eq!(check(&n, &d), Ok(()));
        let mut n = node();
        n.labels.insert("disk".into(), "hdd".into());
        let mut d = demand(0, 0);
        d.node_selector.insert("disk".into(), "ssd".into());
        assert_eq!(check(&n, &d), Err(vec![Unfit::Selector]));
        n.labels.insert("disk".into(), "ssd".into());
        assert_eq!(check(&n, &d), Ok(()));
    }

    #[test]
    fn taints_need_a_matching_toleration() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "", "gpu", ""), &t));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(tolerates(&toleration("", "Exists", "", ""), &t));
        assert!(!tolerates(&toleration("", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&toleration("dedicated", "Equal", "cpu", ""), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));

        let mut n = node();
        n.taints = vec![taint("soft", "", "PreferNoSchedule"), t];
        let unfit = Unfit::Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
        };
        assert_eq!(check(&n, &demand(0, 0)), Err(vec![unfit.clone()]));
        assert_eq!(
            unfit.to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let mut d = demand(0, 0);
        d.tolerations = vec![toleration("dedicated", "Equal", "gpu", "")];
        assert_eq!(check(&n, &d), Ok(()), "PreferNoSchedule does not filter");
    }

    #[test]
    fn a_taken_host_port_fails() {
        let port = HostPort {
            protocol: "TCP".into(),
            ip: "0.0.0.0".into(),
            port: 80,
        };
        let mut n = node();
        n.host_ports.insert(port.clone(), 1);
        let mut d = demand(0, 0);
        d.host_ports = vec![port];
        assert_eq!(check(&n, &d), Err(vec![Unfit::Ports]));
    }

    #[test]
    fn the_message_counts_reasons_in_order() {
        let mut e = FitError {
            nodes: 3,
            ..FitError::default()
        };
        e.add(&[Unfit::Insufficient("cpu")]);
        e.add(&[Unfit::Unschedulable]);
        e.add(&[Unfit::Insufficient("cpu")]);
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
        assert_eq!(FitError::default().to_string(), "0/0 nodes are available.");
    }
}
