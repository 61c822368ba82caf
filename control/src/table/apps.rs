//! Deployment and ReplicaSet rows, and label selectors as kubectl prints them.
//!
//! The two kinds print an empty or broken selector differently ("" / "<invalid>" for a
//! Deployment, "<none>" / "<error>" for a ReplicaSet) because Kubernetes uses two helpers; both
//! are kept so `-o wide` output matches.

use serde_json::Value;

use super::{
    CONTAINERS_DOC, Column, IMAGES_DOC, Printer, Row, age, containers_and_images, int, list, name,
    present, text,
};

/// The printer of Deployments: READY, UP-TO-DATE, AVAILABLE.
pub static DEPLOYMENT: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string("Ready", "Number of the pod with ready state"),
        Column::string("Up-to-date", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
        Column::string("Available", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
        Column::AGE,
        Column::string("Containers", CONTAINERS_DOC).wide(),
        Column::string("Images", IMAGES_DOC).wide(),
        Column::string("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
    ],
    print: print_deployment,
};

/// The printer of ReplicaSets: DESIRED, CURRENT, READY.
pub static REPLICA_SET: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::integer("Desired", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
        Column::integer("Current", "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
        Column::integer("Ready", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
        Column::AGE,
        Column::string("Containers", CONTAINERS_DOC).wide(),
        Column::string("Images", IMAGES_DOC).wide(),
        Column::string("Selector", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ],
    print: print_replica_set,
};

/// `spec.replicas`, which the API defaults to 1.
fn desired_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn print_deployment(deploy: &Value, now: i64) -> Row {
    let (containers, images) = containers_and_images(&deploy["spec"]["template"]["spec"]);
    let selector =
        selector_string(deploy.pointer("/spec/selector")).unwrap_or_else(|| "<invalid>".to_owned());
    Row::new(vec![
        name(deploy).into(),
        format!(
            "{}/{}",
            int(deploy, "/status/readyReplicas"),
            desired_replicas(deploy)
        )
        .into(),
        int(deploy, "/status/updatedReplicas").into(),
        int(deploy, "/status/availableReplicas").into(),
        age(deploy, now),
        containers.into(),
        images.into(),
        selector.into(),
    ])
}

fn print_replica_set(rs: &Value, now: i64) -> Row {
    let (containers, images) = containers_and_images(&rs["spec"]["template"]["spec"]);
    // `metav1.FormatLabelSelector`.
    let selector = match selector_string(rs.pointer("/spec/selector")) {
        Some(s) if s.is_empty() => "<none>".to_owned(),
        Some(s) => s,
        None => "<error>".to_owned(),
    };
    Row::new(vec![
        name(rs).into(),
        desired_replicas(rs).into(),
        int(rs, "/status/replicas").into(),
        int(rs, "/status/readyReplicas").into(),
        age(rs, now),
        containers.into(),
        images.into(),
        selector.into(),
    ])
}

/// A `LabelSelector` in selector syntax ("app=web,tier in (a,b),!canary"), requirements sorted by
/// key; "" for a missing or empty selector; `None` for an invalid operator or value count.
/// Label key and value syntax is not re-validated: stored objects passed validation.
fn selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Some(String::new());
    };
    let mut requirements: Vec<(&str, String)> = Vec::new();
    if let Some(labels) = present(selector, "/matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((key, format!("{key}={}", value.as_str()?)));
        }
    }
    for expr in list(selector, "/matchExpressions") {
        let key = text(expr, "/key");
        let mut values: Vec<&str> = list(expr, "/values")
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        values.sort_unstable();
        let requirement = match text(expr, "/operator") {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::tests::{cells, columns};
    use super::selector_string;

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "shop"}},
               "spec": {"containers": [{"name": "app", "image": "shop:1.4"},
                                       {"name": "proxy", "image": "envoy:1.30"}]}})
    }

    #[test]
    fn deployment_rollout_in_progress() {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop", "creationTimestamp": "2026-11-21T20:03:04Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "shop"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 1, "availableReplicas": 2}});
        assert_eq!(
            cells("Deployment", deploy),
            [
                json!("shop"),
                json!("2/3"),
                json!(1),
                json!(2),
                json!("6h"),
                json!("app,proxy"),
                json!("shop:1.4,envoy:1.30"),
                json!("app=shop")
            ]
        );
        let want: Vec<(String, String, u64)> = [
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ]
        .iter()
        .map(|(n, t, p)| (n.to_string(), t.to_string(), *p))
        .collect();
        assert_eq!(columns("Deployment"), want);
    }

    #[test]
    fn new_deployment_without_status() {
        let deploy = json!({"metadata": {"name": "fresh"},
            "spec": {"selector": {"matchLabels": {}}, "template": template()}});
        let row = cells("Deployment", deploy);
        assert_eq!(
            row[1..5],
            [json!("0/1"), json!(0), json!(0), json!("<unknown>")]
        );
        assert_eq!(row[7], "");
    }

    #[test]
    fn replica_set() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "shop-7d9f8b6c5", "creationTimestamp": "2026-11-22T02:00:04Z"},
            "spec": {"replicas": 3, "template": template(),
                     "selector": {"matchLabels": {"app": "shop", "pod-template-hash": "7d9f8b6c5"}}},
            "status": {"replicas": 3, "readyReplicas": 1}});
        assert_eq!(
            cells("ReplicaSet", rs),
            [
                json!("shop-7d9f8b6c5"),
                json!(3),
                json!(3),
                json!(1),
                json!("3m"),
                json!("app,proxy"),
                json!("shop:1.4,envoy:1.30"),
                json!("app=shop,pod-template-hash=7d9f8b6c5")
            ]
        );
        let types: Vec<String> = columns("ReplicaSet").into_iter().map(|c| c.1).collect();
        assert_eq!(
            types,
            [
                "string", "integer", "integer", "integer", "string", "string", "string", "string"
            ]
        );
        let empty = json!({"metadata": {"name": "x"}, "spec": {"replicas": 0, "selector": {}}});
        assert_eq!(cells("ReplicaSet", empty)[1], 0);
        let bad = json!({"metadata": {"name": "x"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}});
        assert_eq!(cells("ReplicaSet", bad)[7], "<error>");
    }

    #[test]
    fn selectors_sort_requirements_and_values() {
        let sel = json!({"matchLabels": {"tier": "web"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "app", "operator": "Exists", "values": []}]});
        assert_eq!(
            selector_string(Some(&sel)).as_deref(),
            Some("app,!canary,env notin (dev),tier=web,zone in (a,b)")
        );
        assert_eq!(selector_string(None).as_deref(), Some(""));
        assert_eq!(selector_string(Some(&json!({}))).as_deref(), Some(""));
        let empty_in = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert_eq!(selector_string(Some(&empty_in)), None);
    }
}
