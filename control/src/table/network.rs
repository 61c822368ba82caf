//! Service, Endpoints and EndpointSlice rows.
//!
//! A Service's EXTERNAL-IP depends on its type: externalIPs for ClusterIP and NodePort, load
//! balancer ingress (sorted, deduplicated) plus externalIPs for LoadBalancer, "<pending>" while
//! the balancer has no address, and the DNS name for ExternalName. Endpoint lists show three
//! addresses and then " + N more...".

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Column, Printer, Row, age, format_labels, int, list, list_with_more, name, text};

/// The printer of Services: TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S).
pub static SERVICE: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string("Type", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"),
        Column::string("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
        Column::string("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system."),
        Column::string("Port(s)", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
        Column::AGE,
        Column::string("Selector", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/").wide(),
    ],
    print: print_service,
};

/// The printer of Endpoints: ENDPOINTS, AGE.
pub static ENDPOINTS: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string(
            "Endpoints",
            "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
        ),
        Column::AGE,
    ],
    print: print_endpoints,
};

/// The printer of EndpointSlices: ADDRESSTYPE, PORTS, ENDPOINTS.
pub static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string(
            "AddressType",
            "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.",
        ),
        Column::string(
            "Ports",
            "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.",
        ),
        Column::string(
            "Endpoints",
            "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
        ),
        Column::AGE,
    ],
    print: print_endpoint_slice,
};

fn print_service(svc: &Value, now: i64) -> Row {
    let service_type = match text(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    // clusterIPs[0] is the primary address ("None" when headless).
    let cluster_ip = match text(svc, "/spec/clusterIPs/0") {
        "" => text(svc, "/spec/clusterIP"),
        ip => ip,
    };
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match int(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{protocol}", int(p, "/port")),
                _ => format!("{}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    Row::new(vec![
        name(svc).into(),
        service_type.into(),
        none_if_empty(cluster_ip.to_owned()).into(),
        external_ip(svc, service_type).into(),
        none_if_empty(ports.join(",")).into(),
        age(svc, now),
        format_labels(svc.pointer("/spec/selector")).into(),
    ])
}

fn external_ip(svc: &Value, service_type: &str) -> String {
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type {
        "ClusterIP" | "NodePort" => none_if_empty(external_ips.join(",")),
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname"),
                    ip => ip,
                })
                .filter(|a| !a.is_empty())
                .collect();
            let all: Vec<&str> = ingress.into_iter().chain(external_ips).collect();
            if all.is_empty() {
                "<pending>".to_owned()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

fn print_endpoints(ep: &Value, now: i64) -> Row {
    Row::new(vec![
        name(ep).into(),
        format_endpoints(ep).into(),
        age(ep, now),
    ])
}

/// Ready addresses as "ip:port" per port (bare IPs for port-less subsets), three at most.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0;
    for subset in subsets {
        let addresses: Vec<&str> = list(subset, "/addresses")
            .iter()
            .map(|a| text(a, "/ip"))
            .collect();
        let ports = list(subset, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            shown.extend(
                addresses
                    .iter()
                    .take(MAX - shown.len())
                    .map(|ip| ip.to_string()),
            );
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int(port, "/port");
            shown.extend(
                addresses
                    .iter()
                    .take(MAX - shown.len())
                    .map(|ip| join_host_port(ip, port)),
            );
        }
    }
    if count > shown.len() {
        format!("{} + {} more...", shown.join(","), count - MAX)
    } else {
        shown.join(",")
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 hosts.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn print_endpoint_slice(slice: &Value, now: i64) -> Row {
    let ports: Vec<String> = list(slice, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => match p.get("name").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => "*".to_owned(),
            },
        })
        .collect();
    let addresses: Vec<String> = list(slice, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses"))
        .map(|a| a.as_str().unwrap_or("").to_owned())
        .collect();
    Row::new(vec![
        name(slice).into(),
        text(slice, "/addressType").into(),
        list_with_more(&ports, "<unset>").into(),
        list_with_more(&addresses, "<unset>").into(),
        age(slice, now),
    ])
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() { "<none>".to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::tests::{cells, columns};

    fn service(spec: Value, status: Value) -> Value {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "shop", "namespace": "default",
                            "creationTimestamp": "2026-11-20T02:03:04Z"}});
        svc["spec"] = spec;
        svc["status"] = status;
        svc
    }

    #[test]
    fn service_columns() {
        let names: Vec<_> = columns("Service")
            .into_iter()
            .map(|(n, _, p)| (n, p))
            .collect();
        let want = [
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ];
        let want: Vec<_> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        assert_eq!(names, want);
    }

    #[test]
    fn cluster_ip_service() {
        let svc = service(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "selector": {"k8s-app": "kube-dns"},
                   "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                             {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                             {"name": "metrics", "port": 9153}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(
            cells("Service", svc),
            [
                json!("shop"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("53/UDP,53/TCP,9153/TCP"),
                json!("2d"),
                json!("k8s-app=kube-dns"),
            ]
        );
    }

    #[test]
    fn load_balancer_without_ingress_is_pending() {
        let svc = service(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.12.4"],
                   "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}],
                   "selector": {"app": "shop", "tier": "web"}}),
            json!({"loadBalancer": {}}),
        );
        let row = cells("Service", svc);
        assert_eq!(
            row[1..5],
            [
                json!("LoadBalancer"),
                json!("10.96.12.4"),
                json!("<pending>"),
                json!("443:31443/TCP")
            ]
        );
        assert_eq!(row[6], "app=shop,tier=web");
    }

    #[test]
    fn load_balancer_ingress_and_external_ips() {
        let svc = service(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.12.4"], "externalIPs": ["192.0.2.9"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({"loadBalancer": {"ingress": [
                {"ip": "203.0.113.20"}, {"hostname": "a1b2c3d4e5f6.elb.example.com"},
                {"ip": "203.0.113.10"}, {"ip": "203.0.113.10"}]}}),
        );
        // Not cut to 16 characters: the server renders the wide form.
        assert_eq!(
            cells("Service", svc)[3],
            "203.0.113.10,203.0.113.20,a1b2c3d4e5f6.elb.example.com,192.0.2.9"
        );
    }

    #[test]
    fn node_port_service() {
        let svc = service(
            json!({"type": "NodePort", "clusterIPs": ["10.96.3.3"],
                   "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                             {"port": 8125, "nodePort": 30125, "protocol": "UDP"}]}),
            json!({}),
        );
        let row = cells("Service", svc);
        assert_eq!(
            row[1..5],
            [
                json!("NodePort"),
                json!("10.96.3.3"),
                json!("<none>"),
                json!("80:30080/TCP,8125:30125/UDP")
            ]
        );
        assert_eq!(row[6], "<none>");
    }

    #[test]
    fn headless_and_external_name_services() {
        let headless = service(
            json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                   "ports": [{"port": 5432, "protocol": "TCP"}], "selector": {"app": "db"}}),
            json!({}),
        );
        assert_eq!(
            cells("Service", headless)[2..5],
            [json!("None"), json!("<none>"), json!("5432/TCP")]
        );
        let external = service(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            cells("Service", external)[1..5],
            [
                json!("ExternalName"),
                json!("<none>"),
                json!("db.example.com"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn endpoints() {
        let ep = |subsets: Value| {
            json!({"kind": "Endpoints", "metadata": {"name": "shop",
                   "creationTimestamp": "2026-11-22T02:02:59Z"}, "subsets": subsets})
        };
        let many = ep(json!([
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "notReadyAddresses": [{"ip": "10.0.0.9"}],
             "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
            {"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}]));
        assert_eq!(
            cells("Endpoints", many),
            [
                json!("shop"),
                json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."),
                json!("5s")
            ]
        );
        let few = ep(
            json!([{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]},
                            {"addresses": [{"ip": "10.0.0.7"}]}]),
        );
        assert_eq!(cells("Endpoints", few)[1], "[fd00::5]:80,10.0.0.7");
        assert_eq!(cells("Endpoints", ep(json!([])))[1], "<none>");
        assert_eq!(cells("Endpoints", ep(Value::Null))[1], "<none>");
    }

    #[test]
    fn endpoint_slices() {
        let slice = json!({"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "shop-x7k2p", "creationTimestamp": "2026-11-22T01:03:04Z"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}]});
        assert_eq!(
            cells("EndpointSlice", slice),
            [
                json!("shop-x7k2p"),
                json!("IPv4"),
                json!("80,metrics,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2"),
                json!("60m")
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6", "endpoints": null});
        assert_eq!(
            cells("EndpointSlice", empty)[1..],
            [
                json!("IPv6"),
                json!("<unset>"),
                json!("<unset>"),
                json!("<unknown>")
            ]
        );
    }
}
