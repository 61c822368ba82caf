//! get and list: one object, or a filtered, paginated, consistent list.
//!
//! A list is read at one store revision; its continue token carries that revision and the last
//! key returned, so every page of a paginated list shows the same moment (410 once that
//! revision has been compacted, as in Kubernetes).

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::negotiate::{Wanted, wanted};
use super::objects;
use super::status::ApiError;
use super::{ApiServer, Call, json as json_response};
use crate::resources::{Resource, Subresource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Revision, Store};
use crate::table::{IncludeObject, to_table};

/// The label and field selectors of a request.
#[derive(Debug, Default)]
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// From `labelSelector` and `fieldSelector`; unsupported fields are a 400.
    pub fn from_call(call: &Call) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        if let Some(field) = fields.fields().find(|f| !call.resource.supports_field(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        Ok(Filter { labels, fields })
    }

    /// Does `object` pass both selectors?
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    /// Are both selectors empty?
    pub fn is_everything(&self) -> bool {
        self.labels.is_everything() && self.fields.is_everything()
    }
}

/// GET of one object (or its status / scale).
pub async fn get<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
    sub: Option<Subresource>,
) -> Result<Response, ApiError> {
    let object = fetch(api, call, name).await?.0;
    let object = match sub {
        Some(Subresource::Scale) => super::subresources::scale_of(&object),
        _ => object,
    };
    Ok(respond_one(call, object))
}

/// The stored object `name` and its mod revision; 404 if absent.
pub async fn fetch<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    name: &str,
) -> Result<(Value, Revision), ApiError> {
    let kv = api
        .store
        .get(&call.key(name))
        .await?
        .ok_or_else(|| ApiError::not_found(call.resource, name))?;
    Ok((objects::decode(call.resource, &kv)?, kv.mod_revision))
}

fn respond_one(call: &Call, object: Value) -> Response {
    match wanted(&call.headers) {
        Wanted::Table(_)
            if object.get("kind").and_then(Value::as_str) == Some(call.resource.kind) =>
        {
            let include = IncludeObject::parse(call.query.get("includeObject"))
                .unwrap_or(IncludeObject::Metadata);
            let rv = objects::meta_str(&object, "resourceVersion")
                .unwrap_or("")
                .to_owned();
            let table = to_table(
                call.resource.strategy.table,
                &[object],
                include,
                crate::time::now_unix(),
                json!({"resourceVersion": rv}),
            );
            json_response(StatusCode::OK, &table)
        }
        _ => json_response(StatusCode::OK, &object),
    }
}

/// The revision a list or watch starts from: 0 means "the latest".
pub async fn requested_revision<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
) -> Result<Revision, ApiError> {
    let rv = call.query.get("resourceVersion");
    let matching = call.query.get("resourceVersionMatch");
    let Some(rv) = rv else {
        if matching.is_some() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        return Ok(0);
    };
    let rv: Revision = rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {rv:?}: must be an integer"
        ))
    })?;
    match matching {
        Some("Exact") if rv == 0 => Err(ApiError::bad_request(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        )),
        Some("Exact") => Ok(rv),
        None | Some("NotOlderThan") => {
            wait_for_revision(api, rv).await?;
            Ok(0)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// Waits (3 s at most, as Kubernetes) until the store has reached `rv`.
async fn wait_for_revision<S: Store>(api: &ApiServer<S>, rv: Revision) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let current = api.store.current_revision().await?;
        if rv <= current {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {rv}, current: {current}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The continue token: the list's revision and the last key returned.
fn encode_continue(revision: Revision, last_key: &str) -> String {
    let raw = json!({"rv": revision, "start": last_key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = value["rv"].as_i64().filter(|rv| *rv > 0).ok_or_else(bad)?;
    let start = value["start"].as_str().ok_or_else(bad)?.to_owned();
    Ok((rv, start))
}

/// The objects of a list request, in key order, with the list's metadata.
pub async fn collect<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    filter: &Filter,
) -> Result<(Vec<Value>, Value), ApiError> {
    let limit = call
        .query
        .int("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let (at, after_key) = match call.query.get("continue") {
        Some(token) => {
            let (rv, key) = decode_continue(token)?;
            (rv, Some(key))
        }
        None => (requested_revision(api, call).await?, None),
    };
    let prefix = call.resource.list_prefix(call.namespace.as_deref());
    let listed = api.store.list(&prefix, at).await.map_err(|e| match e {
        crate::store::StoreError::Compacted { .. } if after_key.is_some() => ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        other => other.into(),
    })?;
    let mut items = Vec::new();
    let mut last_key = None;
    let mut remaining = 0usize;
    for kv in listed.kvs.iter().filter(|kv| {
        after_key
            .as_deref()
            .is_none_or(|after| kv.key.as_str() > after)
    }) {
        let object = objects::decode(call.resource, kv)?;
        if !filter.matches(&object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        last_key = Some(kv.key.clone());
        items.push(object);
    }
    let mut meta = json!({"resourceVersion": listed.revision.to_string()});
    if remaining > 0
        && let Some(last) = last_key
    {
        meta["continue"] = json!(encode_continue(listed.revision, &last));
        if filter.is_everything() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    Ok((items, meta))
}

/// GET of a collection (not a watch).
pub async fn list<S: Store>(api: &ApiServer<S>, call: &Call) -> Result<Response, ApiError> {
    let filter = Filter::from_call(call)?;
    let (items, meta) = collect(api, call, &filter).await?;
    Ok(respond_list(call.resource, call, items, meta))
}

/// A list, as JSON or as a Table.
pub fn respond_list(resource: &Resource, call: &Call, items: Vec<Value>, meta: Value) -> Response {
    if let Wanted::Table(_) = wanted(&call.headers) {
        let include = IncludeObject::parse(call.query.get("includeObject"))
            .unwrap_or(IncludeObject::Metadata);
        let table = to_table(
            resource.strategy.table,
            &items,
            include,
            crate::time::now_unix(),
            meta,
        );
        return json_response(StatusCode::OK, &table);
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            // Items of a list carry no type of their own, as Kubernetes writes them.
            if let Value::Object(map) = &mut item {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    let list = json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": meta,
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let token = encode_continue(42, "/registry/core/pods/default/web-1");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, "/registry/core/pods/default/web-1".into())
        );
        assert_eq!(decode_continue("!!!").unwrap_err().code, 400);
        let zero = encode_continue(0, "x");
        assert_eq!(decode_continue(&zero).unwrap_err().code, 400);
    }
}
