//! PATCH of an object or its status / scale, and server-side apply.
//!
//! A patch is applied to the stored object (JSON patch, merge patch, strategic merge patch by
//! the kind's schema, or an apply body merged the same way), then written through the same
//! road as an update; when someone else wrote in between, it is computed again, as
//! kube-apiserver does. Applying to an object that does not exist creates it.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::objects::{self, meta_mut};
use super::status::ApiError;
use super::write::{check_object, content_type, create_object, require_url_name, store_update};
use super::{ApiServer, Call, json_with_warnings};
use crate::patch::{KindSchema, PatchType, apply_patch};
use crate::resources::Subresource;
use crate::store::Store;

/// PATCH of an object or its status / scale.
pub async fn patch<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    sub: Option<Subresource>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let content_type = content_type(call).unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    if patch_type == PatchType::Apply && call.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    // The patch may itself pin a resourceVersion; then a conflict is final, else we retry.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let current = api.store.get(&call.key(name)).await?;
        let Some(current) = current else {
            if patch_type == PatchType::Apply && sub.is_none() {
                return apply_create(api, call, name, body).await;
            }
            return Err(ApiError::not_found(call.resource, name));
        };
        let old = objects::decode(call.resource, &current)?;
        let result = if sub == Some(Subresource::Scale) {
            let scale = super::subresources::scale_of(&old);
            let patched = run_patch(patch_type, &KindSchema::PLAIN, &scale, body)?;
            super::subresources::write_scale(
                api,
                call,
                name,
                &patched,
                Some((&old, current.mod_revision)),
            )
            .await
            .map(|scale| (scale, Vec::new()))
        } else {
            let patched = run_patch(patch_type, call.resource.strategy.patch, &old, body)?;
            let (mut patched, warnings) = check_object(call, patched)?;
            if patch_type == PatchType::Apply {
                record_manager(&mut patched, call, "Apply");
            }
            let pinned = objects::resource_version(&patched)?;
            if pinned.is_some_and(|rv| rv != current.mod_revision) {
                return Err(ApiError::stale(call.resource, name));
            }
            store_update(api, call, name, &old, patched, sub, current.mod_revision)
                .await
                .map(|v| (v, warnings))
        };
        match result {
            Err(err) if err.code == 409 && err.reason == "Conflict" && attempt < ATTEMPTS => {
                continue;
            }
            Err(err) => return Err(err),
            Ok((updated, warnings)) => {
                return Ok(json_with_warnings(StatusCode::OK, &updated, &warnings));
            }
        }
    }
    Err(ApiError::stale(call.resource, name))
}

fn run_patch(
    patch_type: PatchType,
    schema: &KindSchema,
    original: &Value,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let mut original = original.clone();
    meta_mut(&mut original).remove("managedFields");
    apply_patch(patch_type, *schema, &original, body).map_err(|e| {
        let code = e.http_status();
        let reason = match code {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            _ => "Invalid",
        };
        ApiError {
            code,
            reason,
            message: e.to_string(),
            details: None,
        }
    })
}

/// Server-side apply of an object that does not exist yet: a create.
async fn apply_create<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let (mut object, warnings) = check_object(call, object)?;
    require_url_name(&object, name)?;
    record_manager(&mut object, call, "Apply");
    let created = create_object(api, call, object).await?;
    Ok(json_with_warnings(StatusCode::CREATED, &created, &warnings))
}

/// Notes the field manager in `managedFields`, replacing its earlier entry.
fn record_manager(object: &mut Value, call: &Call, operation: &str) {
    let manager = call
        .query
        .get("fieldManager")
        .unwrap_or("unknown")
        .to_owned();
    let entry = json!({
        "manager": manager, "operation": operation, "apiVersion": call.resource.api_version(),
        "time": crate::time::now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": {},
    });
    let meta = meta_mut(object);
    let mut entries: Vec<Value> = meta
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !(e["manager"] == json!(manager) && e["operation"] == json!(operation)))
        .collect();
    entries.push(entry);
    meta.insert("managedFields".into(), Value::Array(entries));
}
