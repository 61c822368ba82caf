//! Object metadata chores shared by every verb: reading names and versions out of JSON,
//! stamping uid/creationTimestamp/generation, and the stored form of an object.
//!
//! The stored bytes never carry `metadata.resourceVersion`: the store's mod revision *is* the
//! resourceVersion, set on the way out, so the two can never disagree.

use serde_json::{Map, Value, json};

use crate::resources::Resource;
use crate::store::KeyValue;

use super::status::ApiError;

/// `metadata` of an object (empty map if absent).
pub fn meta(object: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    object
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata`, created if absent.
pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("just made an object")
}

/// A string field of metadata.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta(object).get(field).and_then(Value::as_str)
}

/// `metadata.name`.
pub fn name(object: &Value) -> Option<&str> {
    meta_str(object, "name").filter(|n| !n.is_empty())
}

/// `metadata.resourceVersion` as a revision; a non-numeric one is a 400 (we issued none such).
pub fn resource_version(object: &Value) -> Result<Option<i64>, ApiError> {
    match meta_str(object, "resourceVersion").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion: Invalid value: {v:?}: must be an integer"
            ))
        }),
    }
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    meta(object)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Is the object being deleted (deletionTimestamp set)?
pub fn is_terminating(object: &Value) -> bool {
    meta(object)
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// The object as the store keeps it.
pub fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    let mut stored = object.clone();
    meta_mut(&mut stored).remove("resourceVersion");
    serde_json::to_vec(&stored).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}

/// The object a store entry holds, with its resourceVersion and type set.
pub fn decode(resource: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    set_type(resource, &mut object);
    meta_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(object)
}

/// Sets `apiVersion` and `kind`.
pub fn set_type(resource: &Resource, object: &mut Value) {
    if let Value::Object(map) = object {
        map.insert("kind".into(), json!(resource.kind));
        map.insert("apiVersion".into(), json!(resource.api_version()));
    }
}

/// Stamps what the server owns on a new object: uid, creationTimestamp, generation.
pub fn stamp_new(resource: &Resource, object: &mut Value) {
    let meta = meta_mut(object);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert(
        "creationTimestamp".into(),
        json!(crate::time::now_rfc3339()),
    );
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if resource.strategy.tracks_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
}

/// Carries what a client may not change from the stored object into an update.
pub fn keep_server_fields(resource: &Resource, old: &Value, new: &mut Value) {
    let old_meta = meta(old).clone();
    let meta = meta_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    if resource.strategy.tracks_generation && old.get("spec") != new.get("spec") {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(new).insert("generation".into(), json!(generation));
    }
}

/// A name for `generateName`: the prefix and five characters, as Kubernetes makes them.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut random = [0u8; 5];
    getrandom::fill(&mut random).expect("the kernel's random source");
    let suffix: String = random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let max_prefix = 63 - 5;
    let prefix = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_has_no_resource_version_and_decoding_sets_it() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let object = json!({"metadata": {"name": "a", "resourceVersion": "5"}, "spec": {}});
        let bytes = encode(&object).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let kv = KeyValue {
            key: "k".into(),
            value: bytes,
            create_revision: 7,
            mod_revision: 9,
        };
        let back = decode(pods, &kv).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "9");
        assert_eq!(back["kind"], "Pod");
    }

    #[test]
    fn generation_moves_only_with_the_spec() {
        let deploy = crate::resources::find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "a", "generation": 3, "uid": "u"}, "spec": {"replicas": 1}});
        let mut same =
            json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 1}});
        keep_server_fields(deploy, &old, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
        assert_eq!(same["metadata"]["uid"], "u");
        let mut changed =
            json!({"metadata": {"name": "a", "generation": 1}, "spec": {"replicas": 2}});
        keep_server_fields(deploy, &old, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 4);
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let name = generate_name("web-");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_ne!(generate_name("web-"), generate_name("web-"));
    }
}
