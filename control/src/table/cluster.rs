//! Node, Namespace, Event and Lease rows.
//!
//! A Node's STATUS reads only its Ready condition ("NotReady" whatever the reason, "Unknown"
//! without one) and adds "SchedulingDisabled" when cordoned; ROLES come from
//! `node-role.kubernetes.io/<role>` labels. Events print from either API: `events.k8s.io/v1`
//! names the same facts differently (`regarding`, `note`, `deprecatedCount`), and Kubernetes
//! serves both through one printer.

use std::collections::BTreeSet;

use serde_json::Value;

use super::time::{age_at, human_duration_since, timestamp};
use super::{Column, Printer, Row, age, int, list, name, present, text};

/// The printer of Nodes: STATUS, ROLES, VERSION.
pub static NODE: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string("Status", "The status of the node"),
        Column::string("Roles", "The roles of the node"),
        Column::AGE,
        Column::string("Version", "Kubelet Version reported by the node."),
        Column::string("Internal-IP", NODE_ADDRESSES_DOC).wide(),
        Column::string("External-IP", NODE_ADDRESSES_DOC).wide(),
        Column::string("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
        Column::string("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
        Column::string("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
    ],
    print: print_node,
};

const NODE_ADDRESSES_DOC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

/// The printer of Namespaces: STATUS, AGE.
pub static NAMESPACE: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string("Status", "The status of the namespace"),
        Column::AGE,
    ],
    print: print_namespace,
};

/// The printer of Leases: HOLDER, AGE.
pub static LEASE: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string(
            "Holder",
            "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
        ),
        Column::AGE,
    ],
    print: print_lease,
};

/// The printer of Events: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE.
pub static EVENT: Printer = Printer {
    columns: &[
        Column::string("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        Column::string("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
        Column::string("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        Column::string("Object", "The object that this event is about."),
        Column::string("Subobject", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.").wide(),
        Column::string("Source", "The component reporting this event. Should be a short machine understandable string.").wide(),
        Column::string("Message", "A human-readable description of the status of this operation."),
        Column::string("First Seen", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
        Column::string("Count", "The number of times this event has occurred.").wide(),
        Column::NAME.wide(),
    ],
    print: print_event,
};

fn print_node(node: &Value, now: i64) -> Row {
    // The last Ready condition wins, as in Kubernetes' condition map.
    let ready = list(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| text(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "/status") == "True" => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if node
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        status.push_str(",SchedulingDisabled");
    }
    let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>",
        v => v,
    };
    Row::new(vec![
        name(node).into(),
        status.into(),
        roles(node).into(),
        age(node, now),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        address(node, "InternalIP").into(),
        address(node, "ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ])
}

/// Sorted roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` labels.
fn roles(node: &Value) -> String {
    let labels = present(node, "/metadata/labels").and_then(Value::as_object);
    let roles: BTreeSet<&str> = labels
        .into_iter()
        .flatten()
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) => Some(role),
                None if key == "kubernetes.io/role" => value.as_str(),
                None => None,
            },
        )
        .filter(|role| !role.is_empty())
        .collect();
    if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// The first node address of `kind`, or "<none>".
fn address<'a>(node: &'a Value, kind: &str) -> &'a str {
    list(node, "/status/addresses")
        .iter()
        .find(|a| text(a, "/type") == kind)
        .map_or("<none>", |a| text(a, "/address"))
}

fn print_namespace(ns: &Value, now: i64) -> Row {
    Row::new(vec![
        name(ns).into(),
        text(ns, "/status/phase").into(),
        age(ns, now),
    ])
}

fn print_lease(lease: &Value, now: i64) -> Row {
    Row::new(vec![
        name(lease).into(),
        text(lease, "/spec/holderIdentity").into(),
        age(lease, now),
    ])
}

/// Where an Event API keeps each field the printer reads.
#[derive(Debug)]
struct EventFields {
    first: &'static str,
    last: &'static str,
    count: &'static str,
    object: &'static str,
    component: &'static str,
    host: &'static str,
    message: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    object: "/involvedObject",
    component: "/source/component",
    host: "/source/host",
    message: "/message",
};

const EVENTS_API_EVENT: EventFields = EventFields {
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    object: "/regarding",
    component: "/deprecatedSource/component",
    host: "/deprecatedSource/host",
    message: "/note",
};

fn print_event(event: &Value, now: i64) -> Row {
    let (fields, controller) = if text(event, "/apiVersion").starts_with("events.k8s.io/") {
        (&EVENTS_API_EVENT, "/reportingController")
    } else {
        (&CORE_EVENT, "/reportingComponent")
    };
    let first_seen = match timestamp(event, fields.first) {
        Some(t) => human_duration_since(t, now),
        None => age_at(event, "/eventTime", now),
    };
    let mut last_seen = match timestamp(event, fields.last) {
        Some(t) => human_duration_since(t, now),
        None => first_seen.clone(),
    };
    let mut count = int(event, fields.count);
    if let Some(series) = present(event, "/series") {
        last_seen = age_at(series, "/lastObservedTime", now);
        count = int(series, "/count");
    } else if count == 0 {
        // Singleton events of the new API leave the count unset.
        count = 1;
    }
    let object = event.pointer(fields.object).unwrap_or(&Value::Null);
    let kind = text(object, "/kind").to_lowercase();
    let target = match text(object, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = first_non_empty(text(event, fields.component), text(event, controller));
    let host = first_non_empty(text(event, fields.host), text(event, "/reportingInstance"));
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    Row::new(vec![
        last_seen.into(),
        text(event, "/type").into(),
        text(event, "/reason").into(),
        target.into(),
        text(object, "/fieldPath").into(),
        source.into(),
        text(event, fields.message).trim().into(),
        first_seen.into(),
        count.into(),
        name(event).into(),
    ])
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{cells, columns};

    fn node(unschedulable: bool, ready: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "cp-1", "creationTimestamp": "2026-11-12T02:03:04Z",
                "labels": {"kubernetes.io/hostname": "cp-1",
                           "node-role.kubernetes.io/control-plane": "",
                           "node-role.kubernetes.io/etcd": "true",
                           "node-role.kubernetes.io/": "x",
                           "kubernetes.io/role": "master"}},
            "spec": {"podCIDR": "10.244.0.0/24", "unschedulable": unschedulable},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": ready, "reason": "KubeletReady"}],
                "addresses": [{"type": "Hostname", "address": "cp-1"},
                              {"type": "InternalIP", "address": "192.168.56.10"},
                              {"type": "InternalIP", "address": "fd00::10"}],
                "nodeInfo": {"kubeletVersion": "v1.34.2", "osImage": "Debian GNU/Linux 13 (trixie)",
                             "kernelVersion": "6.12.48-amd64", "containerRuntimeVersion": "containerd://2.1.4"}}})
    }

    #[test]
    fn ready_cordoned_control_plane_node() {
        assert_eq!(
            cells("Node", node(true, "True")),
            [
                json!("cp-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,etcd,master"),
                json!("10d"),
                json!("v1.34.2"),
                json!("192.168.56.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 13 (trixie)"),
                json!("6.12.48-amd64"),
                json!("containerd://2.1.4")
            ]
        );
        let wide: Vec<u64> = columns("Node").into_iter().map(|c| c.2).collect();
        assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn node_status_variants() {
        assert_eq!(cells("Node", node(false, "True"))[1], "Ready");
        assert_eq!(cells("Node", node(false, "False"))[1], "NotReady");
        assert_eq!(cells("Node", node(false, "Unknown"))[1], "NotReady");
        let bare = json!({"metadata": {"name": "w-1"}, "spec": {"unschedulable": true}});
        assert_eq!(
            cells("Node", bare),
            [
                json!("w-1"),
                json!("Unknown,SchedulingDisabled"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
    }

    #[test]
    fn namespace_and_lease() {
        let ns = json!({"kind": "Namespace", "metadata": {"name": "shop", "creationTimestamp": "2026-11-22T02:03:04Z",
                        "deletionTimestamp": "2026-11-22T02:03:04Z"}, "status": {"phase": "Terminating"}});
        assert_eq!(
            cells("Namespace", ns),
            [json!("shop"), json!("Terminating"), json!("0s")]
        );
        let lease = json!({"kind": "Lease", "metadata": {"name": "kube-scheduler", "namespace": "kube-system",
                           "creationTimestamp": "2026-11-21T02:03:04Z"},
                           "spec": {"holderIdentity": "cp-1_6f0c", "leaseDurationSeconds": 15}});
        assert_eq!(
            cells("Lease", lease),
            [json!("kube-scheduler"), json!("cp-1_6f0c"), json!("24h")]
        );
        let free = json!({"metadata": {"name": "l"}, "spec": {}});
        assert_eq!(cells("Lease", free)[1], "");
    }

    #[test]
    fn core_event() {
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.18a2b3c4d5e6f708", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default",
                               "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container app in pod web-1_default\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2026-11-22T01:03:04Z", "lastTimestamp": "2026-11-22T02:02:04Z",
            "count": 12});
        assert_eq!(
            cells("Event", event),
            [
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container app in pod web-1_default"),
                json!("60m"),
                json!(12),
                json!("web-1.18a2b3c4d5e6f708")
            ]
        );
        let names: Vec<(String, u64)> = columns("Event").into_iter().map(|c| (c.0, c.2)).collect();
        let want: Vec<(String, u64)> = [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ]
        .iter()
        .map(|(n, p)| (n.to_string(), *p))
        .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn new_style_events() {
        // A singleton from the new API: eventTime only, count unset.
        let single = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "n.1"},
            "involvedObject": {"kind": "Node", "name": "node-a"}, "type": "Normal",
            "reason": "RegisteredNode", "message": "Node node-a event: Registered",
            "eventTime": "2026-11-22T02:02:54.123456Z", "reportingComponent": "node-controller",
            "reportingInstance": ""});
        let row = cells("Event", single);
        assert_eq!(
            row[0..4],
            [
                json!("9s"),
                json!("Normal"),
                json!("RegisteredNode"),
                json!("node/node-a")
            ]
        );
        assert_eq!(row[5], "node-controller");
        assert_eq!(row[7..9], [json!("9s"), json!(1)]);

        let series = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-1.2"}, "eventTime": "2026-11-22T01:53:04.000000Z",
            "series": {"count": 7, "lastObservedTime": "2026-11-22T02:01:04.500000Z"},
            "regarding": {"kind": "Pod", "name": "web-1"}, "note": "Readiness probe failed",
            "type": "Warning", "reason": "Unhealthy", "reportingController": "kubelet",
            "reportingInstance": "node-a"});
        assert_eq!(
            cells("Event", series),
            [
                json!("119s"),
                json!("Warning"),
                json!("Unhealthy"),
                json!("pod/web-1"),
                json!(""),
                json!("kubelet, node-a"),
                json!("Readiness probe failed"),
                json!("10m"),
                json!(7),
                json!("web-1.2")
            ]
        );
    }
}
