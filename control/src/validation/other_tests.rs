use serde_json::{Value, json};

use crate::validation::{FieldError, apply_defaults, prepare_for_update, validate};

fn defaulted(kind: &str, mut obj: Value) -> Value {
    apply_defaults(kind, &mut obj);
    obj
}

fn errors(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    validate(kind, obj, old)
        .iter()
        .map(FieldError::message)
        .collect()
}

#[test]
fn namespace() {
    let ns = defaulted("Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(errors("Namespace", &ns, None), Vec::<String>::new());
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let bad = defaulted("Namespace", json!({"metadata": {"name": "team.a"}}));
    assert_eq!(
        errors("Namespace", &bad, None),
        vec!["metadata.name: Invalid value: \"team.a\": must not contain dots"]
    );
    let mut fin = ns.clone();
    fin["spec"]["finalizers"] = json!(["kubernetes", "cleanup"]);
    assert_eq!(
        errors("Namespace", &fin, None),
        vec![
            "spec.finalizers: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified"
        ]
    );
    let mut renamed = ns.clone();
    renamed["metadata"]["name"] = json!("team-b");
    assert_eq!(
        errors("Namespace", &renamed, Some(&ns)),
        vec!["metadata.name: Invalid value: \"team-b\": field is immutable"]
    );
}

#[test]
fn node() {
    let node = defaulted(
        "Node",
        json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}, "status": {"capacity": {"cpu": "4", "pods": "110"}}}),
    );
    assert_eq!(errors("Node", &node, None), Vec::<String>::new());
    assert_eq!(node["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
    assert_eq!(
        node["status"]["allocatable"],
        json!({"cpu": "4", "pods": "110"})
    );
    let bad = defaulted(
        "Node",
        json!({"metadata": {"name": "node-1"}, "spec": {"podCIDRs": ["10.244.1.1/24", "10.245.0.0/16"]}}),
    );
    assert_eq!(
        errors("Node", &bad, None),
        vec![
            "spec.podCIDRs[0]: Invalid value: \"10.244.1.1/24\": must not have bits set beyond the prefix length",
            r#"spec.podCIDRs: Invalid value: ["10.244.1.1/24","10.245.0.0/16"]: may specify no more than one CIDR for each IP family"#
        ]
    );
    let mut moved = node.clone();
    moved["spec"]["podCIDRs"] = json!(["10.244.2.0/24"]);
    assert_eq!(
        errors("Node", &moved, Some(&node)),
        vec![
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        ]
    );
    let tainted = json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}});
    assert_eq!(
        errors("Node", &tainted, None),
        vec![
            "metadata.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
        ]
    );
}

#[test]
fn endpoints() {
    let ep = defaulted(
        "Endpoints",
        json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "node-1"}], "ports": [{"port": 8080}]}]}),
    );
    assert_eq!(errors("Endpoints", &ep, None), Vec::<String>::new());
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    let bad = defaulted(
        "Endpoints",
        json!({"metadata": {"name": "web"}, "subsets": [{"ports": [{"port": 8080}]}, {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "a", "port": 0}, {"port": 1}]}]}),
    );
    assert_eq!(
        errors("Endpoints", &bad, None),
        vec![
            "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
            "subsets[1].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "subsets[1].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "subsets[1].ports[1].name: Required value"
        ]
    );
}

#[test]
fn endpoint_slice() {
    let slice = defaulted(
        "EndpointSlice",
        json!({"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-1"}],
               "ports": [{"port": 8080}]}),
    );
    assert_eq!(errors("EndpointSlice", &slice, None), Vec::<String>::new());
    assert_eq!(
        slice["ports"][0],
        json!({"port": 8080, "name": "", "protocol": "TCP"})
    );
    let mut bad = slice.clone();
    bad["addressType"] = json!("IPv5");
    assert_eq!(
        errors("EndpointSlice", &bad, None),
        vec![
            "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        ]
    );
    let mut bad = slice.clone();
    bad["endpoints"] = json!([{"addresses": ["fd00::5"]}, {"addresses": []}]);
    assert_eq!(
        errors("EndpointSlice", &bad, None),
        vec![
            "endpoints[0].addresses[0]: Invalid value: \"fd00::5\": must be an IPv4 address",
            "endpoints[1].addresses: Required value: must contain at least 1 address"
        ]
    );
    let mut v6 = slice.clone();
    v6["addressType"] = json!("IPv6");
    v6["endpoints"] = json!([{"addresses": ["fd00::5"]}]);
    assert_eq!(
        errors("EndpointSlice", &v6, Some(&slice)),
        vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
    );
    let mut fqdn = slice;
    fqdn["addressType"] = json!("FQDN");
    fqdn["endpoints"] = json!([{"addresses": ["db.example.com", "db"]}]);
    assert_eq!(
        errors("EndpointSlice", &fqdn, None),
        vec![
            "endpoints[0].addresses[1]: Invalid value: \"db\": should be a domain with at least two segments separated by dots"
        ]
    );
}

#[test]
fn event() {
    let ev = json!({"metadata": {"name": "web-0.17a3", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"}, "reason": "Started", "message": "ok", "type": "Normal"});
    assert_eq!(errors("Event", &ev, None), Vec::<String>::new());
    let mut other_ns = ev.clone();
    other_ns["involvedObject"]["namespace"] = json!("kube-system");
    assert_eq!(
        errors("Event", &other_ns, None),
        vec![
            "involvedObject.namespace: Invalid value: \"kube-system\": does not match event.namespace"
        ]
    );
    let mut orphan = ev;
    orphan.as_object_mut().map(|o| o.remove("involvedObject"));
    assert_eq!(
        errors("Event", &orphan, None),
        vec!["involvedObject: Required value"]
    );
}

#[test]
fn lease_and_scale() {
    let lease = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
    assert_eq!(errors("Lease", &lease, None), Vec::<String>::new());
    let mut bad = lease;
    bad["spec"]["leaseDurationSeconds"] = json!(0);
    bad["spec"]["leaseTransitions"] = json!(-1);
    assert_eq!(
        errors("Lease", &bad, None),
        vec![
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"
        ]
    );
    let scale =
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": -2}});
    assert_eq!(
        errors("Scale", &scale, None),
        vec!["spec.replicas: Invalid value: -2: must be greater than or equal to 0"]
    );
}

#[test]
fn namespace_update_keeps_finalizers_and_status() {
    let old = defaulted("Namespace", json!({"metadata": {"name": "a", "uid": "u"}}));
    let mut new = defaulted(
        "Namespace",
        json!({"metadata": {"name": "a", "labels": {"team": "x"}}, "spec": {"finalizers": []}}),
    );
    prepare_for_update("Namespace", &mut new, &old);
    assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(new["metadata"]["uid"], "u");
    assert_eq!(errors("Namespace", &new, Some(&old)), Vec::<String>::new());
}
