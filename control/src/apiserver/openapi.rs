//! A minimal OpenAPI v3: just enough for `kubectl create/apply -f` to trust the server.
//!
//! kubectl validates manifests before sending them and refuses to start when it cannot
//! download OpenAPI. When a group version's document declares, for a kind's `patch` operation,
//! the `fieldValidation` query parameter, kubectl instead sends `?fieldValidation=Strict` and
//! leaves validation to the server — which does it against the real types (see `typed`). So
//! the documents list operations and parameters, not schemas.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::status::ApiError;
use crate::resources::{self, RESOURCES};

/// Changes whenever the documents would (kubectl caches by this hash).
const HASH: &str = concat!("skiff-", env!("CARGO_PKG_VERSION"), "-1");

/// Answers `/openapi/v3` and `/openapi/v3/<api|apis/group>/<version>`; v2 is not served.
pub fn serve(path: &str) -> Result<Response, ApiError> {
    if path == "/openapi/v3" {
        return Ok(respond(&root()));
    }
    let gv = path
        .strip_prefix("/openapi/v3/")
        .ok_or_else(|| ApiError::no_route(path))?;
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), (*version).to_owned()),
        ["apis", group, version] => ((*group).to_owned(), (*version).to_owned()),
        _ => return Err(ApiError::no_route(path)),
    };
    if !resources::versions_of(&group).contains(&version.as_str()) {
        return Err(ApiError::no_route(path));
    }
    Ok(respond(&group_version_document(&group, &version)))
}

fn respond(doc: &Value) -> Response {
    let body = serde_json::to_vec(doc).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn url_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn root() -> Value {
    let mut paths = Map::new();
    let mut add = |group: &str, version: &str| {
        let p = url_path(group, version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
        );
    };
    add("", "v1");
    for group in resources::groups() {
        for version in resources::versions_of(group) {
            add(group, version);
        }
    }
    json!({"paths": paths})
}

fn group_version_document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
         "description": "Strict, Warn or Ignore: what to do with unknown or duplicate fields"},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = format!("/{}", url_path(group, version));
        let object = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let collection = object.trim_end_matches("/{name}").to_owned();
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            object,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "skiff", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_is_linked_and_declares_field_validation() {
        let root = root();
        assert!(
            root["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .contains("hash=")
        );
        assert!(root["paths"]["apis/apps/v1"].is_object());
        let doc = group_version_document("apps", "v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
        assert!(serve("/openapi/v3/apis/batch/v1").is_err());
    }
}
