use serde_json::{Value, json};

use crate::validation::{FieldError, apply_defaults, prepare_for_update, validate};

fn service(spec: Value) -> Value {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}});
    svc["spec"] = spec;
    apply_defaults("Service", &mut svc);
    svc
}

fn web() -> Value {
    service(
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    )
}

fn errors(svc: &Value) -> Vec<String> {
    validate("Service", svc, None)
        .iter()
        .map(FieldError::message)
        .collect()
}

fn update_errors(new: &Value, old: &Value) -> Vec<String> {
    let mut new = new.clone();
    prepare_for_update("Service", &mut new, old);
    validate("Service", &new, Some(old))
        .iter()
        .map(FieldError::message)
        .collect()
}

#[test]
fn cluster_ip_service_gets_defaults_and_passes() {
    let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
    assert_eq!(errors(&svc), Vec::<String>::new());
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert!(spec.get("sessionAffinityConfig").is_none());
}

#[test]
fn node_port_and_load_balancer_defaults() {
    let svc = service(
        json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    assert_eq!(errors(&svc), Vec::<String>::new());
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    let lb =
        service(json!({"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": "https"}]}));
    assert_eq!(errors(&lb), Vec::<String>::new());
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], "https");
}

#[test]
fn client_ip_affinity() {
    let svc = service(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
    assert_eq!(
        svc["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert_eq!(errors(&svc), Vec::<String>::new());
    for timeout in [0, 86401] {
        let mut bad = svc.clone();
        bad["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(timeout);
        assert_eq!(
            errors(&bad),
            vec![format!(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {timeout}: must be greater than 0 and less than 86400"
            )]
        );
    }
    let mut bad = web();
    bad["spec"]["sessionAffinity"] = json!("Sticky");
    assert_eq!(
        errors(&bad),
        vec![
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""
        ]
    );
}

#[test]
fn external_name_and_headless() {
    let ext = service(json!({"type": "ExternalName", "externalName": "db.example.com."}));
    assert_eq!(errors(&ext), Vec::<String>::new());
    assert!(ext["spec"].get("ipFamilies").is_none());
    assert!(ext["spec"].get("ipFamilyPolicy").is_none());
    let missing = service(json!({"type": "ExternalName"}));
    assert_eq!(errors(&missing), vec!["spec.externalName: Required value"]);
    let bad = service(json!({"type": "ExternalName", "externalName": "Db_Host"}));
    assert_eq!(
        errors(&bad),
        vec![
            "spec.externalName: Invalid value: \"Db_Host\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ]
    );
    let headless = service(json!({"clusterIP": "None", "selector": {"app": "db"}}));
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    assert_eq!(errors(&headless), Vec::<String>::new());
    let no_ports = service(json!({"selector": {"app": "db"}}));
    assert_eq!(errors(&no_ports), vec!["spec.ports: Required value"]);
    let np = service(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
    assert_eq!(
        errors(&np),
        vec![
            "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
        ]
    );
}

#[test]
fn type_and_name_rules() {
    let mut svc = web();
    svc["spec"]["type"] = json!("Foo");
    assert_eq!(
        errors(&svc),
        vec![
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ]
    );
    let mut svc = web();
    svc["metadata"]["name"] = json!("1web");
    assert_eq!(
        errors(&svc),
        vec![
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
}

#[test]
fn port_rules() {
    let svc = service(json!({"ports": [{"port": 70000}]}));
    assert_eq!(
        errors(&svc),
        vec![
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ]
    );
    let svc = service(json!({"ports": [{"port": 53, "protocol": "ICMP"}]}));
    assert_eq!(
        errors(&svc),
        vec![
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        ]
    );
    let svc = service(json!({"ports": [{"name": "http", "port": 80}, {"port": 443}]}));
    assert_eq!(errors(&svc), vec!["spec.ports[1].name: Required value"]);
    let svc =
        service(json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}));
    assert_eq!(
        errors(&svc),
        vec!["spec.ports[1].name: Duplicate value: \"http\""]
    );
    let svc = service(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}));
    assert_eq!(
        errors(&svc),
        vec![
            r#"spec.ports[1]: Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}"#
        ]
    );
    let svc = service(
        json!({"ports": [{"name": "a", "port": 53}, {"name": "b", "port": 53, "protocol": "UDP"}]}),
    );
    assert_eq!(errors(&svc), Vec::<String>::new());
    let svc = service(json!({"ports": [{"port": 80, "targetPort": "web--port"}]}));
    assert_eq!(
        errors(&svc),
        vec![
            "spec.ports[0].targetPort: Invalid value: \"web--port\": must not contain consecutive hyphens"
        ]
    );
    let svc = service(json!({"ports": [{"name": "HTTP", "port": 80}]}));
    assert!(
        errors(&svc)[0]
            .starts_with("spec.ports[0].name: Invalid value: \"HTTP\": a lowercase RFC 1123 label")
    );
}

#[test]
fn node_port_rules() {
    let svc = service(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
    assert_eq!(
        errors(&svc),
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    let svc = service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}));
    assert_eq!(
        errors(&svc),
        vec![
            "spec.ports[0].nodePort: Invalid value: 70000: must be between 0 and 65535, inclusive"
        ]
    );
    let svc = service(
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}),
    );
    assert_eq!(
        errors(&svc),
        vec!["spec.ports[1].nodePort: Duplicate value: 30080"]
    );
}

#[test]
fn selector_cluster_ip_and_external_ips() {
    let svc = service(json!({"selector": {"app": "web app"}, "ports": [{"port": 80}]}));
    assert!(errors(&svc)[0].starts_with(
        "spec.selector: Invalid value: \"web app\": a valid label must be an empty string"
    ));
    let svc = service(json!({"clusterIP": "10.96.0", "ports": [{"port": 80}]}));
    assert_eq!(
        errors(&svc),
        vec![
            "spec.clusterIPs[0]: Invalid value: \"10.96.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        ]
    );
    let svc = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    assert_eq!(errors(&svc), Vec::<String>::new());
    let svc = service(
        json!({"externalIPs": ["192.0.2.10", "127.0.0.1", "nope"], "ports": [{"port": 80}]}),
    );
    assert_eq!(
        errors(&svc),
        vec![
            "spec.externalIPs[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "spec.externalIPs[2]: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        ]
    );
    assert_eq!(
        svc["spec"]["externalTrafficPolicy"], "Cluster",
        "ClusterIP with externalIPs is externally accessible"
    );
}

#[test]
fn traffic_policies() {
    let mut svc = web();
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    assert_eq!(
        errors(&svc),
        vec![
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
        ]
    );
    let lb = service(
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
    );
    assert_eq!(
        errors(&lb),
        vec!["spec.healthCheckNodePort: Required value"]
    );
    let mut svc = web();
    svc["spec"]["internalTrafficPolicy"] = json!("Node");
    assert_eq!(
        errors(&svc),
        vec![
            "spec.internalTrafficPolicy: Unsupported value: \"Node\": supported values: \"Cluster\", \"Local\""
        ]
    );
}

#[test]
fn cluster_ip_is_immutable_except_through_external_name() {
    let old = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.96.0.11");
    assert_eq!(
        update_errors(&new, &old),
        vec![r#"spec.clusterIPs[0]: Invalid value: ["10.96.0.11"]: may not change once set"#]
    );
    let mut to_ext = old.clone();
    to_ext["spec"]["type"] = json!("ExternalName");
    to_ext["spec"]["externalName"] = json!("db.example.com");
    apply_defaults("Service", &mut to_ext);
    assert_eq!(update_errors(&to_ext, &old), Vec::<String>::new());
    let ext = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
    let mut back = ext.clone();
    back["spec"]["type"] = json!("ClusterIP");
    back["spec"]["clusterIP"] = json!("10.96.0.12");
    back["spec"]["ports"] = json!([{"port": 80}]);
    back.as_object_mut()
        .and_then(|o| o["spec"].as_object_mut())
        .map(|s| s.remove("clusterIPs"));
    apply_defaults("Service", &mut back);
    assert_eq!(update_errors(&back, &ext), Vec::<String>::new());
}

#[test]
fn metadata_is_checked() {
    let mut svc = web();
    svc["metadata"] = json!({"namespace": "default"});
    assert_eq!(
        errors(&svc),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    let old = web();
    let mut renamed = web();
    renamed["metadata"]["name"] = json!("api");
    assert_eq!(
        update_errors(&renamed, &old),
        vec!["metadata.name: Invalid value: \"api\": field is immutable"]
    );
}
