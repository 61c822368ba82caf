//! Defaulting, update preparation and validation by kind name, for tests: each goes through the
//! kind's entry in the resource table, as the apiserver does. "Scale" is the scale subresource's
//! body; any other unserved kind gets no defaults and the metadata checks alone.

use serde_json::Value;

use super::FieldError;
use crate::resources::{RESOURCES, Resource};

fn served(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.kind == kind)
}

/// The kind's defaults.
pub(crate) fn apply_defaults(kind: &str, object: &mut Value) {
    if let Some(resource) = served(kind) {
        resource.apply_defaults(object);
    }
}

/// The kind's `PrepareForUpdate` on the main door.
pub(crate) fn prepare_for_update(kind: &str, object: &mut Value, old: &Value) {
    match served(kind) {
        Some(resource) => resource.prepare_for_update(object, old),
        None if object.is_object() => super::keep_server_metadata(object, old),
        None => {}
    }
}

/// The kind's validation.
pub(crate) fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match served(kind) {
        Some(resource) => resource.validate(object, old),
        None if kind == "Scale" => super::other::validate_scale(object, old),
        None => super::validate_metadata(object, old),
    }
}
