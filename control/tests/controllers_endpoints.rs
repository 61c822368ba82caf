//! The EndpointSlice and Endpoints controllers seen through the API: the test plays kubelet
//! (Pod IPs and readiness through `/status`) and watches what the controllers publish.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// Polls `check` until it gives a value, or panics after [`WAIT`] with the last `describe`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct Cluster {
    _server: TestServer,
    client: kube::Client,
    pods: Api<Pod>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    endpoints: Api<Endpoints>,
    nodes: Api<Node>,
}

impl Cluster {
    async fn start() -> Self {
        let server = TestServer::start().await;
        let client = server.client().await;
        Cluster {
            pods: Api::namespaced(client.clone(), "default"),
            services: Api::namespaced(client.clone(), "default"),
            slices: Api::namespaced(client.clone(), "default"),
            endpoints: Api::namespaced(client.clone(), "default"),
            nodes: Api::all(client.clone()),
            client,
            _server: server,
        }
    }

    /// [`Self::endpoint_writes`] once there are `at_least` of them. (The request counter moves
    /// after the reply, which a watcher may see first.)
    async fn endpoint_writes_at_least(&self, at_least: u64) -> u64 {
        eventually(&format!("{at_least} endpoint writes"), || async {
            let writes = self.endpoint_writes().await;
            if writes >= at_least {
                Ok(writes)
            } else {
                Err(format!("{writes} writes"))
            }
        })
        .await
    }

    /// Writes (any verb but get, list, watch) to EndpointSlices and Endpoints so far, from
    /// the apiserver's `apiserver_request_total`.
    async fn endpoint_writes(&self) -> u64 {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = self.client.request_text(request).await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| {
                l.contains("resource=\"endpointslices\"") || l.contains("resource=\"endpoints\"")
            })
            .filter(|l| {
                !["get", "list", "watch"]
                    .iter()
                    .any(|v| l.to_lowercase().contains(&format!("verb=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    async fn service(&self, name: &str, spec: Value) -> Service {
        let svc =
            from(json!({"metadata": {"name": name, "labels": {"team": "blue"}}, "spec": spec}));
        self.services
            .create(&PostParams::default(), &svc)
            .await
            .unwrap()
    }

    /// A Pod labelled `app=<app>`, running at `ip`.
    async fn pod(&self, name: &str, app: &str, ip: &str, ready: bool) {
        self.create_pod(
            json!({"metadata": {"name": name, "labels": {"app": app}}}),
            ip,
            ready,
        )
        .await;
    }

    /// A ready Pod labelled `app=web` with container `ports`.
    async fn pod_with_ports(&self, name: &str, ports: Value, ip: &str) {
        let pod = json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "skiff/test-server", "ports": ports}]}});
        self.create_pod(pod, ip, true).await;
    }

    /// Creates `pod` (a container added if it has none) and reports its status.
    async fn create_pod(&self, mut pod: Value, ip: &str, ready: bool) {
        if pod["spec"]["containers"].is_null() {
            pod["spec"]["containers"] = json!([{"name": "c", "image": "skiff/test-server"}]);
        }
        let created = self.pods.create(&PostParams::default(), &from(pod)).await;
        let name = created.unwrap().metadata.name.unwrap();
        if !ip.is_empty() {
            self.set_status(&name, ip, ready).await;
        }
    }

    /// What kubelet would report: the Pod's IP and its Ready condition.
    async fn set_status(&self, name: &str, ip: &str, ready: bool) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "lastTransitionTime": now}]}});
        self.pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// The controller-managed slices of `service`, sorted by name.
    async fn slices_of(&self, service: &str) -> Vec<EndpointSlice> {
        let managed = "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io";
        let selector = format!("kubernetes.io/service-name={service},{managed}");
        let params = ListParams::default().labels(&selector);
        let mut list = self.slices.list(&params).await.unwrap().items;
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        list
    }

    /// Waits until `service`'s slices satisfy `ok`, returning them.
    async fn slices_until(
        &self,
        service: &str,
        ok: impl Fn(&[EndpointSlice]) -> bool,
    ) -> Vec<EndpointSlice> {
        eventually(&format!("slices of {service}"), || async {
            let slices = self.slices_of(service).await;
            let done = ok(&slices);
            if done {
                Ok(slices)
            } else {
                Err(summary(&slices))
            }
        })
        .await
    }

    async fn endpoints_until(&self, service: &str, ok: impl Fn(&Endpoints) -> bool) -> Endpoints {
        eventually(&format!("endpoints of {service}"), || async {
            match self.endpoints.get_opt(service).await.unwrap() {
                Some(ep) if ok(&ep) => Ok(ep),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }
}

/// The ready (or not-ready) addresses of an Endpoints object.
fn ips(endpoints: &Endpoints, ready: bool) -> Vec<String> {
    let subsets = endpoints.subsets.iter().flatten();
    let lists = subsets.map(|s| {
        if ready {
            &s.addresses
        } else {
            &s.not_ready_addresses
        }
    });
    lists.flatten().flatten().map(|a| a.ip.clone()).collect()
}

fn summary(slices: &[EndpointSlice]) -> String {
    slices
        .iter()
        .map(|s| {
            let eps: Vec<String> = s.endpoints.iter().map(describe).collect();
            format!(
                "{:?} ports={:?} [{}]",
                s.metadata.name,
                s.ports,
                eps.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe(e: &Endpoint) -> String {
    let c = e.conditions.clone().unwrap_or_default();
    format!(
        "{}(ready={:?},serving={:?},terminating={:?})",
        pod_of(e),
        c.ready,
        c.serving,
        c.terminating
    )
}

fn pod_of(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .unwrap_or_default()
}

fn all_endpoints(slices: &[EndpointSlice]) -> BTreeMap<String, Endpoint> {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .map(|e| (pod_of(e), e.clone()))
        .collect()
}

/// (ready, serving, terminating) of the endpoint for `pod`.
fn conditions(slices: &[EndpointSlice], pod: &str) -> Option<(bool, bool, bool)> {
    let c = all_endpoints(slices).get(pod)?.conditions.clone()?;
    Some((c.ready?, c.serving?, c.terminating?))
}

fn ports(slice: &EndpointSlice) -> Vec<(String, i32)> {
    slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
            )
        })
        .collect()
}

fn web_spec() -> Value {
    json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn three_ready_pods_make_one_slice_and_an_endpoints_mirror() {
    let c = Cluster::start().await;
    let svc = c.service("web", web_spec()).await;
    for (i, name) in ["web-1", "web-2", "web-3"].iter().enumerate() {
        c.pod(name, "web", &format!("10.244.0.{}", i + 10), true)
            .await;
    }
    c.pod("other", "db", "10.244.0.99", true).await;
    let slices = c
        .slices_until("web", |s| s.len() == 1 && s[0].endpoints.len() == 3)
        .await;
    let slice = &slices[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(ports(slice), vec![("http".to_owned(), 8080)]);
    let name = slice.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get("kubernetes.io/service-name").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("blue"),
        "Service labels copied"
    );
    assert!(!labels.contains_key("service.kubernetes.io/headless"));
    // When the change it carries happened, for the proxies' programming latency.
    let trigger: k8s_openapi::jiff::Timestamp = slice.metadata.annotations.as_ref().unwrap()
        ["endpoints.kubernetes.io/last-change-trigger-time"]
        .parse()
        .unwrap();
    let created = svc.metadata.creation_timestamp.as_ref().unwrap().0;
    assert!(
        trigger >= created && trigger <= k8s_openapi::jiff::Timestamp::now(),
        "trigger {trigger}, Service created {created}"
    );
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
    for pod in ["web-1", "web-2", "web-3"] {
        assert_eq!(
            conditions(&slices, pod),
            Some((true, true, false)),
            "{}",
            summary(&slices)
        );
    }
    let web1 = &all_endpoints(&slices)["web-1"];
    assert_eq!(web1.addresses, vec!["10.244.0.10".to_owned()]);
    assert_eq!(
        web1.target_ref.as_ref().unwrap().kind.as_deref(),
        Some("Pod")
    );

    let ep = c.endpoints_until("web", |e| ips(e, true).len() == 3).await;
    assert_eq!(
        ips(&ep, true),
        ["10.244.0.10", "10.244.0.11", "10.244.0.12"]
    );
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(subsets.len(), 1);
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);

    // Nothing changed for the Service: touching a Pod must not rewrite anything. The barrier:
    // a later change of that Pod must be written (once to the slice, once to the Endpoints);
    // the controller sees the two in order, so a write for the touch would come first.
    let writes = c.endpoint_writes_at_least(2).await;
    let touch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    c.pods
        .patch("web-2", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    c.set_status("web-2", "10.244.0.11", false).await;
    c.slices_until("web", |s| {
        conditions(s, "web-2").is_some_and(|(ready, _, _)| !ready)
    })
    .await;
    c.endpoints_until("web", |e| ips(e, false) == ["10.244.0.11"])
        .await;
    assert_eq!(
        c.endpoint_writes_at_least(writes + 2).await,
        writes + 2,
        "no writes without a change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_target_port_resolves_per_pod() {
    let c = Cluster::start().await;
    let spec = json!({"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]});
    c.service("web", spec).await;
    c.pod_with_ports(
        "a",
        json!([{"name": "http", "containerPort": 8080}]),
        "10.244.1.1",
    )
    .await;
    c.pod_with_ports(
        "b",
        json!([{"name": "http", "containerPort": 9090}]),
        "10.244.1.2",
    )
    .await;
    let slices = c
        .slices_until("web", |s| {
            s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)
        })
        .await;
    let by_pod: BTreeMap<String, Vec<(String, i32)>> = slices
        .iter()
        .map(|s| (pod_of(&s.endpoints[0]), ports(s)))
        .collect();
    assert_eq!(by_pod["a"], vec![("web".to_owned(), 8080)]);
    assert_eq!(by_pod["b"], vec![("web".to_owned(), 9090)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_and_termination_show_in_the_conditions() {
    let c = Cluster::start().await;
    c.service("web", web_spec()).await;
    c.pod("steady", "web", "10.244.2.1", true).await;
    c.pod("flaky", "web", "10.244.2.2", true).await;
    let held = json!({"metadata": {"name": "leaving", "labels": {"app": "web"},
        "finalizers": ["example.com/hold"]}});
    c.create_pod(held, "10.244.2.3", true).await;
    c.slices_until("web", |s| all_endpoints(s).len() == 3).await;

    c.set_status("flaky", "10.244.2.2", false).await;
    let slices = c
        .slices_until("web", |s| {
            conditions(s, "flaky") == Some((false, false, false))
        })
        .await;
    assert_eq!(conditions(&slices, "steady"), Some((true, true, false)));
    let ep = c
        .endpoints_until("web", |e| ips(e, false) == ["10.244.2.2"])
        .await;
    assert_eq!(ips(&ep, true), ["10.244.2.1", "10.244.2.3"]);

    // Deleted but held by a finalizer: terminating, still serving, no longer ready.
    c.pods
        .delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    let slices = c
        .slices_until("web", |s| {
            conditions(s, "leaving") == Some((false, true, true))
        })
        .await;
    assert_eq!(
        all_endpoints(&slices).len(),
        3,
        "a terminating Pod stays listed"
    );
    // The v1 Endpoints leave terminating Pods out.
    c.endpoints_until("web", |e| ips(e, true) == ["10.244.2.1"])
        .await;
    // Its readiness still counts for serving.
    c.set_status("leaving", "10.244.2.3", false).await;
    c.slices_until("web", |s| {
        conditions(s, "leaving") == Some((false, false, true))
    })
    .await;
    // Gone for good once the finalizer is cleared.
    let clear = json!({"metadata": {"finalizers": null}});
    c.pods
        .patch("leaving", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    c.slices_until("web", |s| !all_endpoints(s).contains_key("leaving"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn selector_and_label_changes_move_pods_in_and_out() {
    let c = Cluster::start().await;
    c.service(
        "web",
        json!({"selector": {"app": "a"}, "ports": [{"port": 80}]}),
    )
    .await;
    c.pod("a1", "a", "10.244.3.1", true).await;
    c.pod("a2", "a", "10.244.3.2", true).await;
    c.pod("b1", "b", "10.244.3.3", true).await;
    c.slices_until("web", |s| all_endpoints(s).keys().eq(["a1", "a2"]))
        .await;

    // A Pod whose labels stop matching leaves.
    let relabel = json!({"metadata": {"labels": {"app": "gone"}}});
    c.pods
        .patch("a2", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    c.slices_until("web", |s| all_endpoints(s).keys().eq(["a1"]))
        .await;

    let select_b = json!({"spec": {"selector": {"app": "b"}}});
    c.services
        .patch("web", &PatchParams::default(), &Patch::Merge(&select_b))
        .await
        .unwrap();
    let slices = c
        .slices_until("web", |s| all_endpoints(s).keys().eq(["b1"]))
        .await;
    assert_eq!(slices.len(), 1, "{}", summary(&slices));
    c.endpoints_until("web", |e| ips(e, true) == ["10.244.3.3"])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_and_fifty_pods_fill_two_slices() {
    let c = Cluster::start().await;
    c.service("web", web_spec()).await;
    for i in 0..150 {
        let ip = format!("10.244.{}.{}", 10 + i / 100, i % 100 + 1);
        c.pod(&format!("web-{i:03}"), "web", &ip, true).await;
    }
    let slices = c
        .slices_until("web", |s| all_endpoints(s).len() == 150 && s.len() == 2)
        .await;
    let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100]);
}

#[tokio::test(flavor = "multi_thread")]
async fn headless_and_publish_not_ready_services() {
    let c = Cluster::start().await;
    c.service(
        "db",
        json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}),
    )
    .await;
    c.service(
        "peers",
        json!({"selector": {"app": "db"}, "publishNotReadyAddresses": true, "ports": [{"port": 7000}]}),
    )
    .await;
    c.pod("db-0", "db", "10.244.4.1", false).await;
    let slices = c
        .slices_until("db", |s| {
            conditions(s, "db-0") == Some((false, false, false))
        })
        .await;
    let labels = slices[0].metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    // publishNotReadyAddresses: ready regardless, serving as the Pod says.
    c.slices_until("peers", |s| {
        conditions(s, "db-0") == Some((true, false, false))
    })
    .await;
    let ep = c
        .endpoints_until("peers", |e| !ips(e, true).is_empty())
        .await;
    assert!(ips(&ep, false).is_empty());
    let ep = c.endpoints_until("db", |e| !ips(e, false).is_empty()).await;
    assert!(
        ep.metadata
            .labels
            .unwrap()
            .contains_key("service.kubernetes.io/headless")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zones_come_from_nodes_and_pods_without_ips_are_skipped() {
    let c = Cluster::start().await;
    let node = from::<Node>(json!({"metadata": {"name": "node-1",
        "labels": {"topology.kubernetes.io/zone": "zone-a"}}}));
    c.nodes.create(&PostParams::default(), &node).await.unwrap();
    c.service("web", web_spec()).await;
    let placed = json!({"metadata": {"name": "placed", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1"}});
    c.create_pod(placed, "10.244.5.1", true).await;
    let pending = json!({"metadata": {"name": "pending", "labels": {"app": "web"}}});
    c.create_pod(pending, "", false).await;
    let slices = c
        .slices_until("web", |s| all_endpoints(s).contains_key("placed"))
        .await;
    let placed = &all_endpoints(&slices)["placed"];
    assert_eq!(placed.node_name.as_deref(), Some("node-1"));
    assert_eq!(placed.zone.as_deref(), Some("zone-a"));
    assert_eq!(
        all_endpoints(&slices).len(),
        1,
        "no IP, no endpoint: {}",
        summary(&slices)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_service_gets_a_placeholder_and_selectorless_ones_are_left_alone() {
    let c = Cluster::start().await;
    c.service("empty", web_spec()).await;
    let slices = c.slices_until("empty", |s| s.len() == 1).await;
    assert!(slices[0].endpoints.is_empty());
    c.endpoints_until("empty", |e| e.subsets.is_none()).await;

    let writes = c.endpoint_writes_at_least(2).await;
    c.service("manual", json!({"ports": [{"port": 80}]})).await;
    let mine = from::<EndpointSlice>(json!({"metadata": {"name": "manual-1",
        "labels": {"kubernetes.io/service-name": "manual"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}]}));
    let mine = c
        .slices
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    // The barrier: once the Service gets a selector, the controller must publish for it; it
    // saw the selectorless Service first, so anything it wrote for that came before.
    let select = json!({"spec": {"selector": {"app": "web"}}});
    let selected = c
        .services
        .patch("manual", &PatchParams::default(), &Patch::Merge(&select))
        .await
        .unwrap();
    let slices = c.slices_until("manual", |s| s.len() == 1).await;
    let ep = c.endpoints_until("manual", |e| e.subsets.is_none()).await;
    let revision =
        |meta: &ObjectMeta| -> u64 { meta.resource_version.as_deref().unwrap().parse().unwrap() };
    for written in [&slices[0].metadata, &ep.metadata] {
        assert!(
            revision(written) > revision(&selected.metadata),
            "{:?} written before the Service had a selector",
            written.name
        );
    }
    assert_eq!(
        c.endpoint_writes_at_least(writes + 3).await,
        writes + 3,
        "my slice, then the placeholder and the Endpoints once selected, and nothing else"
    );
    let kept = c.slices.get("manual-1").await.unwrap();
    assert_eq!(
        kept.metadata.resource_version,
        mine.metadata.resource_version
    );
    assert_eq!(kept.endpoints[0].addresses, ["192.0.2.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_service_removes_its_slices_and_endpoints() {
    let c = Cluster::start().await;
    c.service("web", web_spec()).await;
    c.pod("web-1", "web", "10.244.6.1", true).await;
    c.slices_until("web", |s| all_endpoints(s).len() == 1).await;
    c.endpoints_until("web", |_| true).await;
    c.services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    c.slices_until("web", <[EndpointSlice]>::is_empty).await;
    eventually("the Endpoints to go", || async {
        match c.endpoints.get_opt("web").await.unwrap() {
            None => Ok(()),
            Some(e) => Err(format!("{e:?}")),
        }
    })
    .await;
}
