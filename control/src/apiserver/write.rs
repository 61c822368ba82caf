//! create and update, of an object or its status / scale.
//!
//! Every write takes the same road (patches too, see `patch.rs`): decode and check the body
//! against its type, default, prepare and validate by the kind's strategy, carry over what only
//! the server may set, then one compare-and-swap in the store (a stale resourceVersion is a 409).

use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::objects::{self, meta_mut};
use super::status::ApiError;
use super::{ApiServer, Call, json_with_warnings};
use crate::resources::{Resource, Subresource};
use crate::store::{Revision, Store, StoreError};

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

pub(super) fn field_validation(call: &Call) -> Result<FieldValidation, ApiError> {
    match call.query.get("fieldValidation") {
        None | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// The request's Content-Type, if it has a readable one.
pub(super) fn content_type(call: &Call) -> Option<&str> {
    call.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// A body written to `.../<name>` must carry that name.
pub(super) fn require_url_name(object: &Value, name: &str) -> Result<(), ApiError> {
    if objects::name(object) == Some(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "the name of the object ({}) does not match the name on the URL ({name})",
        objects::name(object).unwrap_or("")
    )))
}

/// Parses a JSON body and checks its type, namespace and fields. Returns it with warnings.
fn decode_body(call: &Call, body: &Bytes) -> Result<(Value, Vec<String>), ApiError> {
    let content_type = content_type(call).unwrap_or("application/json");
    let object: Value = if crate::protobuf::is_protobuf(content_type) {
        // kubectl's typed clients (create namespace/deployment/service, run) send protobuf.
        crate::protobuf::decode(body, crate::resources::protobuf_message).map_err(|e| {
            if e.is_unsupported() {
                ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: e.to_string(),
                    details: None,
                }
            } else {
                ApiError::bad_request(format!("protobuf: {e}"))
            }
        })?
    } else if content_type.starts_with("application/json") || content_type.starts_with("*/*") {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    } else {
        return Err(ApiError::unsupported_media_type(content_type));
    };
    check_object(call, object)
}

pub(super) fn check_object(
    call: &Call,
    mut object: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let resource = call.resource;
    if !object.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !api_version.is_empty() && api_version != resource.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != resource.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    objects::set_type(resource, &mut object);
    if resource.namespaced {
        let url_ns = call.namespace.clone().unwrap_or_default();
        match objects::meta_str(&object, "namespace").filter(|n| !n.is_empty()) {
            Some(ns) if ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta_mut(&mut object).insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta_mut(&mut object).remove("namespace");
    }
    let warnings = unknown_field_check(call, resource, &object)?;
    Ok((object, warnings))
}

fn unknown_field_check(
    call: &Call,
    resource: &Resource,
    object: &Value,
) -> Result<Vec<String>, ApiError> {
    let mode = field_validation(call)?;
    let unknown = resource.unknown_fields(object).map_err(|e| {
        let kind = resource.kind;
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
            resource.version
        ))
    })?;
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        FieldValidation::Strict if !messages.is_empty() => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        FieldValidation::Warn => Ok(messages),
        _ => Ok(Vec::new()),
    }
}

fn validate(resource: &Resource, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let errors = resource.validate(object, old);
    if errors.is_empty() {
        Ok(())
    } else {
        let name = objects::name(object).unwrap_or("");
        Err(ApiError::invalid(resource, name, &errors))
    }
}

/// Fails unless `namespace` exists and is not terminating.
async fn require_namespace<S: Store>(api: &ApiServer<S>, call: &Call) -> Result<(), ApiError> {
    let Some(ns) = call
        .namespace
        .as_deref()
        .filter(|_| call.resource.namespaced)
    else {
        return Ok(());
    };
    let namespaces = crate::resources::find("", "v1", "namespaces").expect("namespaces are served");
    let kv = api
        .store
        .get(&namespaces.key(None, ns))
        .await?
        .ok_or_else(|| ApiError::not_found(namespaces, ns))?;
    let namespace = objects::decode(namespaces, &kv)?;
    if objects::is_terminating(&namespace) {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            call.resource.qualified_name(),
            "",
        )));
    }
    Ok(())
}

/// POST to a collection.
pub async fn create<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let (object, warnings) = decode_body(call, body)?;
    let created = create_object(api, call, object).await?;
    Ok(json_with_warnings(StatusCode::CREATED, &created, &warnings))
}

/// Creates `object` (already type-checked): names, defaults, validates, stores.
pub async fn create_object<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    mut object: Value,
) -> Result<Value, ApiError> {
    let resource = call.resource;
    if objects::name(&object).is_none() {
        let prefix = objects::meta_str(&object, "generateName")
            .unwrap_or("")
            .to_owned();
        if !prefix.is_empty() {
            meta_mut(&mut object).insert("name".into(), json!(objects::generate_name(&prefix)));
        }
    }
    resource.apply_defaults(&mut object);
    (resource.strategy.prepare_for_create)(&mut object);
    objects::stamp_new(resource, &mut object);
    require_namespace(api, call).await?;
    let name = objects::name(&object).unwrap_or("").to_owned();
    // Addresses are taken before the write and given back if it does not happen.
    let reservation = allocate(api, resource, &mut object, None)?;
    validate(resource, &object, None)?;
    if call.query.dry_run()? {
        return Ok(object);
    }
    let kv = match api
        .store
        .create(&call.key(&name), objects::encode(&object)?)
        .await
    {
        Err(StoreError::AlreadyExists(_)) => return Err(ApiError::already_exists(resource, &name)),
        other => other?,
    };
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    objects::decode(resource, &kv)
}

/// Takes what the object needs from the cluster's pools (the kind's allocate hook); 422 for
/// requests the pools refuse.
fn allocate<S: Store>(
    api: &ApiServer<S>,
    resource: &Resource,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<Option<crate::allocator::Reservation>, ApiError> {
    (resource.strategy.hooks.allocate)(&api.services, object, old)
        .map_err(|errors| ApiError::invalid(resource, objects::name(object).unwrap_or(""), &errors))
}

/// PUT of an object or its status / scale.
pub async fn update<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    sub: Option<Subresource>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if sub == Some(Subresource::Scale) {
        let scale: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
        let updated = super::subresources::write_scale(api, call, name, &scale, None).await?;
        return Ok(super::json(StatusCode::OK, &updated));
    }
    let (object, warnings) = decode_body(call, body)?;
    require_url_name(&object, name)?;
    let current = api.store.get(&call.key(name)).await?;
    let Some(current) = current else {
        if call.resource.strategy.creates_on_update && sub.is_none() {
            let created = create_object(api, call, object).await?;
            return Ok(json_with_warnings(StatusCode::CREATED, &created, &warnings));
        }
        return Err(ApiError::not_found(call.resource, name));
    };
    let old = objects::decode(call.resource, &current)?;
    let expected = match objects::resource_version(&object)? {
        Some(rv) if rv != current.mod_revision => return Err(ApiError::stale(call.resource, name)),
        _ => current.mod_revision,
    };
    let updated = store_update(api, call, name, &old, object, sub, expected).await?;
    Ok(json_with_warnings(StatusCode::OK, &updated, &warnings))
}

/// The common tail of update and patch: merge with the stored object, validate, CAS.
pub(super) async fn store_update<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    old: &Value,
    new: Value,
    sub: Option<Subresource>,
    expected: Revision,
) -> Result<Value, ApiError> {
    let resource = call.resource;
    let mut new = match sub {
        // The status door changes the status alone.
        Some(Subresource::Status) => {
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            merged
        }
        _ => {
            let mut new = new;
            if resource.strategy.status_is_subresource {
                match old.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        if let Value::Object(map) = &mut new {
                            map.remove("status");
                        }
                    }
                }
            }
            new
        }
    };
    objects::set_type(resource, &mut new);
    if resource.namespaced {
        meta_mut(&mut new).insert(
            "namespace".into(),
            json!(call.namespace.clone().unwrap_or_default()),
        );
    }
    resource.apply_defaults(&mut new);
    // The main door's preparation keeps the stored status, which the status door must change.
    if sub != Some(Subresource::Status) {
        resource.prepare_for_update(&mut new, old);
    }
    // After defaulting, so a client that leaves defaults out does not bump the generation.
    objects::keep_server_fields(resource, old, &mut new);
    let reservation = allocate(api, resource, &mut new, Some(old))?;
    validate(resource, &new, Some(old))?;
    if call.query.dry_run()? {
        return Ok(new);
    }
    // An unchanged object is not written again: its resourceVersion stays, no watch event.
    let mut unchanged = new.clone();
    meta_mut(&mut unchanged).insert(
        "resourceVersion".into(),
        old["metadata"]["resourceVersion"].clone(),
    );
    if &unchanged == old {
        return Ok(old.clone());
    }
    // This update took the last finalizer off an object being deleted: it goes.
    if objects::is_terminating(&new)
        && objects::finalizers(&new).is_empty()
        && !objects::finalizers(old).is_empty()
    {
        let kv = match api.store.delete(&call.key(name), Some(expected)).await {
            Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(resource, name)),
            other => other?,
        };
        let deleted = objects::decode(resource, &kv)?;
        if let Some(release) = resource.strategy.hooks.release {
            release(&api.services, &deleted);
        }
        return Ok(deleted);
    }
    let kv = match api
        .store
        .update(&call.key(name), objects::encode(&new)?, expected)
        .await
    {
        Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(resource, name)),
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(resource, name)),
        other => other?,
    };
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    objects::decode(resource, &kv)
}
