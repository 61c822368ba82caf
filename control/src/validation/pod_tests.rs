use serde_json::{Value, json};

use super::image_tag;
use crate::validation::{FieldError, apply_defaults, validate};

fn pod(spec: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default"}});
    p["spec"] = spec;
    apply_defaults("Pod", &mut p);
    p
}

fn web() -> Value {
    pod(json!({"containers": [{
        "name": "web", "image": "nginx",
        "ports": [{"containerPort": 80, "name": "http"}],
        "readinessProbe": {"httpGet": {"port": "http"}},
        "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5}
    }]}))
}

fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    validate("Pod", obj, old)
        .iter()
        .map(FieldError::message)
        .collect()
}

#[test]
fn valid_pod_gets_defaults() {
    let p = web();
    assert_eq!(errors(&p, None), Vec::<String>::new());
    let spec = &p["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"port": "http", "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 5);
}

#[test]
fn image_pull_policy_follows_the_tag() {
    assert_eq!(image_tag("nginx"), "latest");
    assert_eq!(image_tag("nginx:latest"), "latest");
    assert_eq!(image_tag("nginx:1.27"), "1.27");
    assert_eq!(image_tag("registry:5000/team/app"), "latest");
    assert_eq!(image_tag("registry:5000/team/app:v2"), "v2");
    assert_eq!(image_tag("app@sha256:abcd"), "");
    let p = pod(
        json!({"containers": [{"name": "a", "image": "nginx:1.27"}, {"name": "b", "image": "busybox:latest"}]}),
    );
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "Always");
    let kept =
        pod(json!({"containers": [{"name": "a", "image": "nginx", "imagePullPolicy": "Never"}]}));
    assert_eq!(kept["spec"]["containers"][0]["imagePullPolicy"], "Never");
}

#[test]
fn pod_only_defaults() {
    let p = pod(
        json!({"hostNetwork": true, "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}], "containers": [{
            "name": "a", "image": "x:1", "ports": [{"containerPort": 9100}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}
        }]}),
    );
    assert_eq!(errors(&p, None), Vec::<String>::new());
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["hostPort"], 9100);
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
    assert_eq!(
        p["spec"]["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}})
    );
    assert_eq!(p["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
}

#[test]
fn containers_are_required_named_and_unique() {
    let p = pod(json!({"containers": []}));
    assert_eq!(errors(&p, None), vec!["spec.containers: Required value"]);
    let p =
        pod(json!({"containers": [{"name": "web", "image": "a"}, {"name": "web", "image": "b"}]}));
    assert_eq!(
        errors(&p, None),
        vec!["spec.containers[1].name: Duplicate value: \"web\""]
    );
    let p = pod(json!({"containers": [{"name": "Web_1", "image": "a"}]}));
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    let p = pod(json!({"containers": [{"name": "web"}]}));
    assert_eq!(
        errors(&p, None),
        vec!["spec.containers[0].image: Required value"]
    );
    let p = pod(json!({"containers": [{"image": "a"}]}));
    assert_eq!(
        errors(&p, None),
        vec!["spec.containers[0].name: Required value"]
    );
    let p = pod(
        json!({"initContainers": [{"name": "web", "image": "a"}], "containers": [{"name": "web", "image": "a"}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec!["spec.initContainers[0].name: Duplicate value: \"web\""]
    );
}

#[test]
fn ports_and_host_ports() {
    let p = pod(
        json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 0}, {"containerPort": 70000, "protocol": "HTTP"}]}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        ]
    );
    let p = pod(json!({"containers": [
        {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
        {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]}
    ]}));
    assert_eq!(
        errors(&p, None),
        vec!["spec.containers[1].ports[0].hostPort: Duplicate value: \"TCP//8080\""]
    );
}

#[test]
fn restart_policy_and_probes() {
    let mut p = web();
    p["spec"]["restartPolicy"] = json!("Sometimes");
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        ]
    );
    let mut p = web();
    p["spec"]["restartPolicy"] = json!("");
    assert_eq!(errors(&p, None), vec!["spec.restartPolicy: Required value"]);
    let mut p = web();
    let probe = &mut p["spec"]["containers"][0]["livenessProbe"];
    probe["periodSeconds"] = json!(-1);
    probe["successThreshold"] = json!(2);
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
        ]
    );
    let p = pod(
        json!({"containers": [{"name": "a", "image": "x", "readinessProbe": {"periodSeconds": 5}}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec!["spec.containers[0].readinessProbe: Required value: must specify a handler type"]
    );
    let p = pod(
        json!({"containers": [{"name": "a", "image": "x", "startupProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.containers[0].startupProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"
        ]
    );
    let p = pod(
        json!({"initContainers": [{"name": "init", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}], "containers": [{"name": "a", "image": "x"}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
        ]
    );
}

#[test]
fn spec_fields() {
    let p = pod(
        json!({"nodeName": "Node_1", "hostname": "a.b", "tolerations": [{"operator": "Equal", "value": "x"}], "containers": [{"name": "a", "image": "x"}]}),
    );
    let errs = errors(&p, None);
    assert_eq!(errs.len(), 3);
    assert!(
        errs[0].starts_with(
            "spec.nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain"
        )
    );
    assert_eq!(
        errs[1],
        "spec.hostname: Invalid value: \"a.b\": must not contain dots"
    );
    assert_eq!(
        errs[2],
        "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
    );
    let p = pod(json!({"dnsPolicy": "None", "containers": [{"name": "a", "image": "x"}]}));
    assert_eq!(
        errors(&p, None),
        vec!["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
    );
    let p = pod(
        json!({"ephemeralContainers": [{"name": "dbg", "image": "busybox"}], "containers": [{"name": "a", "image": "x"}]}),
    );
    assert_eq!(
        errors(&p, None),
        vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]
    );
    let p = pod(json!({"containers": [{"name": "a", "image": " x"}]}));
    assert_eq!(
        errors(&p, None),
        vec![
            "spec.containers[0].image: Invalid value: \" x\": must not have leading or trailing whitespace"
        ]
    );
}

#[test]
fn updates_may_only_change_images_and_a_few_fields() {
    let mut old = web();
    old["metadata"]["uid"] = json!("u1");
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
    assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
    let mut changed = old.clone();
    changed["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
    let errs = errors(&changed, Some(&old));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    ));
    assert!(errs[0].ends_with("- spec.containers[0].ports[0].containerPort: 80\n+ spec.containers[0].ports[0].containerPort: 81"));
    let mut added = old.clone();
    added["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "image": "x"}));
    apply_defaults("Pod", &mut added);
    assert_eq!(
        errors(&added, Some(&old)),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );
}
