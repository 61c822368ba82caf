//! The subresources that are views or single actions: `/scale` (an autoscaling/v1 Scale over
//! `spec.replicas`) and `/binding` (a Pod's one-time assignment to a Node).

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use k8s_openapi::api::{autoscaling, core};
use serde_json::{Value, json};

use super::objects::{self, meta};
use super::status::ApiError;
use super::typed;
use super::write::{FieldValidation, field_validation, store_update};
use super::{ApiServer, Call};
use crate::store::{Revision, Store, StoreError};
use crate::validation;

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(object: &Value) -> Value {
    let m = meta(object);
    let selector = crate::selector::LabelSelector::from_api(&object["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Writes `scale.spec.replicas` into the object; `stored` is the object already read, if any.
pub(super) async fn write_scale<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    scale: &Value,
    stored: Option<(&Value, Revision)>,
) -> Result<Value, ApiError> {
    let unknown = typed::unknown_fields::<autoscaling::v1::Scale>(scale)
        .map_err(|e| ApiError::bad_request(format!("Scale cannot be handled: {e}")))?;
    if field_validation(call)? == FieldValidation::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: unknown field \"{}\"",
            unknown[0]
        )));
    }
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        let error = validation::FieldError {
            kind: validation::FieldErrorKind::Invalid,
            field: "spec.replicas".into(),
            value: Some(json!(replicas)),
            detail: "must be greater than or equal to 0".into(),
        };
        return Err(ApiError::invalid(call.resource, name, &[error]));
    }
    let (old, revision) = match stored {
        Some((old, rev)) => (old.clone(), rev),
        None => super::read::fetch(api, call, name).await?,
    };
    if let Some(rv) = objects::resource_version(scale)?
        && rv != revision
    {
        return Err(ApiError::stale(call.resource, name));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let updated = store_update(api, call, name, &old, new, None, revision).await?;
    Ok(scale_of(&updated))
}

/// POST pods/{name}/binding: assigns the Pod to a Node, once.
pub async fn bind<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    typed::unknown_fields::<core::v1::Binding>(&binding)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let node = binding["target"]["name"].as_str().unwrap_or("").to_owned();
    if node.is_empty() {
        let error = validation::FieldError {
            kind: validation::FieldErrorKind::Required,
            field: "target.name".into(),
            value: None,
            detail: String::new(),
        };
        return Err(ApiError::invalid(call.resource, name, &[error]));
    }
    let (old, revision) = super::read::fetch(api, call, name).await?;
    if let Some(uid) = binding["metadata"]["uid"].as_str()
        && objects::meta_str(&old, "uid") != Some(uid)
    {
        return Err(ApiError::conflict(
            call.resource,
            name,
            "Precondition failed: UID mismatch",
        ));
    }
    if let Some(current) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(ApiError::conflict(
            call.resource,
            name,
            &format!("pod {name} is already assigned to node \"{current}\""),
        ));
    }
    let mut new = old.clone();
    new["spec"]["nodeName"] = json!(node);
    mark_scheduled(&mut new);
    // Binding is the one door through which a Pod's nodeName may change, so the Pod-update
    // validation (which forbids it) is not applied here.
    match api
        .store
        .update(&call.key(name), objects::encode(&new)?, revision)
        .await
    {
        Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(call.resource, name)),
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(call.resource, name)),
        other => other?,
    };
    Ok(super::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Sets `PodScheduled=True` in a Pod being bound, as kube-apiserver's binding does, replacing a
/// `False` the scheduler wrote while no node fitted.
fn mark_scheduled(pod: &mut Value) {
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": crate::time::now_rfc3339()});
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array above");
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(existing) if existing["status"] == "True" => {}
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}
