//! delete and deletecollection, with graceful Pod deletion, finalizers and propagation.
//!
//! An object with finalizers is not removed: it gets a deletionTimestamp and waits for its
//! finalizers to be cleared (the update that clears the last one removes it). A Pod bound to a
//! node is deleted gracefully: it is marked for deletion with a grace period and the node agent
//! removes it once its containers stopped. Namespaces take everything inside them along.

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::objects::{self, meta_mut};
use super::read::{Filter, collect, respond_list};
use super::status::ApiError;
use super::{ApiServer, Call};
use crate::resources::{RESOURCES, Resource};
use crate::store::{Revision, Store, StoreError};

/// DeleteOptions, from the body or the query string.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_options(call: &Call, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        grace_period: call.query.int("gracePeriodSeconds")?,
        propagation: call.query.get("propagationPolicy").map(str::to_owned),
        dry_run: call.query.dry_run()?,
        ..DeleteOptions::default()
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let parsed: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("DeleteOptions: json parse error: {e}")))?;
        if let Some(g) = parsed.get("gracePeriodSeconds").and_then(Value::as_i64) {
            options.grace_period = Some(g);
        }
        if let Some(p) = parsed.get("propagationPolicy").and_then(Value::as_str) {
            options.propagation = Some(p.to_owned());
        }
        if parsed.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.propagation = Some("Orphan".into());
        }
        options.uid = parsed["preconditions"]["uid"].as_str().map(str::to_owned);
        options.resource_version = parsed["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if parsed
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"))
        {
            options.dry_run = true;
        }
    }
    match options.propagation.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(options),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

/// DELETE of one object.
pub async fn delete<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let options = delete_options(call, body)?;
    let (object, code) = delete_one(
        api,
        call.resource,
        call.namespace.as_deref(),
        name,
        &options,
    )
    .await?;
    Ok(super::json(code, &object))
}

/// DELETE of a collection: every object the selectors match.
pub async fn delete_collection<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let options = delete_options(call, body)?;
    let filter = Filter::from_call(call)?;
    let (items, meta) = collect(api, call, &filter).await?;
    let mut deleted = Vec::new();
    for item in items {
        let name = objects::name(&item).unwrap_or("").to_owned();
        let ns = objects::meta_str(&item, "namespace").map(str::to_owned);
        match delete_one(api, call.resource, ns.as_deref(), &name, &options).await {
            Ok((object, _)) => deleted.push(object),
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(respond_list(call.resource, call, deleted, meta))
}

async fn delete_one<S: Store>(
    api: &ApiServer<S>,
    resource: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    options: &DeleteOptions,
) -> Result<(Value, StatusCode), ApiError> {
    let hooks = &resource.strategy.hooks;
    (hooks.may_delete)(name).map_err(ApiError::forbidden)?;
    let key = resource.key(namespace, name);
    // Retried when the object changes under us between read and write.
    for _ in 0..5 {
        let kv = api
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let object = objects::decode(resource, &kv)?;
        check_preconditions(resource, name, &object, kv.mod_revision, options)?;
        let mut marked = object.clone();
        let finalizers = with_propagation_finalizer(&mut marked, options);
        let grace = (hooks.grace_period)(&object, options.grace_period);
        if finalizers.is_empty() && grace == 0 {
            if options.dry_run {
                return Ok((object, StatusCode::OK));
            }
            if hooks.deletes_namespace_contents {
                delete_namespace_contents(api, name).await?;
            }
            match api.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(kv) => {
                    let deleted = objects::decode(resource, &kv)?;
                    if let Some(release) = hooks.release {
                        release(&api.services, &deleted);
                    }
                    return Ok((deleted, StatusCode::OK));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(resource, name)),
                Err(other) => return Err(other.into()),
            }
        }
        // Marked, not removed: finalizers or a graceful Pod.
        let meta = meta_mut(&mut marked);
        let already = meta.get("deletionTimestamp").is_some_and(|v| !v.is_null());
        let current_grace = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !already || current_grace.is_some_and(|g| grace < g) {
            let when = crate::time::now_unix() + grace;
            meta.insert(
                "deletionTimestamp".into(),
                json!(crate::time::format_rfc3339(when)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if marked == object || options.dry_run {
            return Ok((marked, StatusCode::ACCEPTED));
        }
        match write_marked(api, &key, &marked, kv.mod_revision).await {
            Ok(stored) => return Ok((objects::decode(resource, &stored)?, StatusCode::OK)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::stale(resource, name))
}

async fn write_marked<S: Store>(
    api: &ApiServer<S>,
    key: &str,
    marked: &Value,
    revision: Revision,
) -> Result<crate::store::KeyValue, StoreError> {
    let bytes = objects::encode(marked).map_err(|e| StoreError::Backend(e.message.into()))?;
    api.store.update(key, bytes, revision).await
}

fn check_preconditions(
    resource: &Resource,
    name: &str,
    object: &Value,
    revision: Revision,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    if let Some(uid) = &options.uid {
        let actual = objects::meta_str(object, "uid").unwrap_or("");
        if actual != uid {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &options.resource_version
        && rv != &revision.to_string()
    {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
            ),
        ));
    }
    Ok(())
}

/// Adds the finalizer `Orphan`/`Foreground` propagation asks for; returns all finalizers.
fn with_propagation_finalizer(object: &mut Value, options: &DeleteOptions) -> Vec<String> {
    let mut finalizers = objects::finalizers(object);
    let extra = match options.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    };
    if let Some(extra) = extra
        && !finalizers.iter().any(|f| f == extra)
    {
        finalizers.push(extra.to_owned());
        meta_mut(object).insert("finalizers".into(), json!(finalizers));
    }
    finalizers
}

/// Removes every namespaced object in `namespace` (the namespace controller's job, done inline).
async fn delete_namespace_contents<S: Store>(
    api: &ApiServer<S>,
    namespace: &str,
) -> Result<(), ApiError> {
    for resource in RESOURCES.iter().filter(|r| r.namespaced) {
        let listed = api
            .store
            .list(&resource.list_prefix(Some(namespace)), 0)
            .await?;
        for kv in listed.kvs {
            match api.store.delete(&kv.key, None).await {
                Ok(deleted) => {
                    if let Some(release) = resource.strategy.hooks.release {
                        release(&api.services, &objects::decode(resource, &deleted)?);
                    }
                }
                Err(StoreError::NotFound(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(())
}
