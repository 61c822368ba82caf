//! Discovery: what `kubectl` reads before anything else.
//!
//! Both forms are generated from the resource table: the legacy documents (`/api`, `/apis`,
//! `/api/v1`, ...) and aggregated discovery v2 (all groups in one answer), which lets kubectl
//! learn everything in two requests instead of walking every group version.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::negotiate::{Wanted, wanted};
use super::path::ApiPath;
use crate::resources::{self, RESOURCES, Resource, Subresource};

/// The Kubernetes version we answer as (the API level of the types served).
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": KUBERNETES_VERSION.0,
        "minor": KUBERNETES_VERSION.1,
        "gitVersion": format!("v{}.{}.0-skiff.{}", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Answers a discovery path.
pub fn serve(path: &ApiPath, headers: &HeaderMap, advertise: &str) -> Response {
    let aggregated = match wanted(headers) {
        Wanted::AggregatedDiscovery(v) => Some(v),
        _ => None,
    };
    match (path, aggregated) {
        (ApiPath::CoreVersions, Some(v)) => aggregated_response(v, &[""]),
        (ApiPath::Groups, Some(v)) => aggregated_response(v, &resources::groups()),
        (ApiPath::CoreVersions, None) => plain(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": advertise}],
        })),
        (ApiPath::Groups, None) => plain(&json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": resources::groups().iter().map(|g| api_group(g)).collect::<Vec<_>>(),
        })),
        (ApiPath::Group(group), _) => {
            let mut doc = api_group(group);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            plain(&doc)
        }
        (ApiPath::ResourceList { group, version }, _) => plain(&resource_list(group, version)),
        _ => plain(&json!({})),
    }
}

fn plain(value: &Value) -> Response {
    super::json(StatusCode::OK, value)
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = resources::versions_of(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// The response kind of a subresource: Scale is autoscaling/v1, Binding core/v1.
fn subresource_kind(resource: &Resource, sub: Subresource) -> (String, String, String) {
    match sub {
        Subresource::Status => (
            resource.group.into(),
            resource.version.into(),
            resource.kind.into(),
        ),
        Subresource::Scale => ("autoscaling".into(), "v1".into(), "Scale".into()),
        Subresource::Binding => (String::new(), "v1".into(), "Binding".into()),
    }
}

fn subresource_verbs(sub: Subresource) -> &'static [&'static str] {
    match sub {
        Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
        Subresource::Binding => &["create"],
    }
}

/// `/api/v1`, `/apis/<group>/<version>`: an APIResourceList.
fn resource_list(group: &str, version: &str) -> Value {
    let mut entries = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for &sub in r.subresources {
            let (g, v, kind) = subresource_kind(r, sub);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name()), "singularName": "",
                "namespaced": r.namespaced, "kind": kind, "verbs": subresource_verbs(sub),
            });
            if sub != Subresource::Status {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            entries.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries})
}

/// Aggregated discovery for `groups` ("" is the core group).
fn aggregated(version: &str, groups: &[&str]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = resources::versions_of(group)
                .into_iter()
                .map(|v| {
                    let resources: Vec<Value> = RESOURCES
                        .iter()
                        .copied()
                        .filter(|r| r.group == *group && r.version == v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|&sub| {
            let (g, v, kind) = subresource_kind(r, sub);
            json!({"subresource": sub.name(), "responseKind": {"group": g, "version": v, "kind": kind},
                   "verbs": subresource_verbs(sub)})
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

fn aggregated_response(version: &'static str, groups: &[&str]) -> Response {
    let body = serde_json::to_vec(&aggregated(version, groups)).unwrap_or_default();
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_lists_pods_with_their_short_name_and_status() {
        let doc = aggregated("v2", &[""]);
        let core = &doc["items"][0];
        assert_eq!(core["metadata"]["name"], "");
        let pods = core["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"][0], "po");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["subresources"][0]["subresource"], "status");
    }

    #[test]
    fn deployments_scale_answers_as_autoscaling_v1_scale() {
        let list = resource_list("apps", "v1");
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(
            (scale["group"].as_str(), scale["kind"].as_str()),
            (Some("autoscaling"), Some("Scale"))
        );
    }
}
