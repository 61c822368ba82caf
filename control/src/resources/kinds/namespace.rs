//! Namespaces: the scope of most objects. New ones start `Active` and carry their name as a
//! label; the three built-in ones may not be deleted, and deleting one takes its contents along.

use k8s_openapi::api::core;
use serde_json::{Value, json};

use crate::apiserver::objects::meta_mut;
use crate::resources::strategy::{Hooks, Strategy};
use crate::resources::{Resource, Subresource};
use crate::{apiserver::typed, patch, protobuf::schema as protobuf, table, validation};

/// `namespaces`.
pub static NAMESPACE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &[Subresource::Status],
    field_selectors: &["status.phase"],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Namespace>,
        protobuf: Some(&protobuf::NAMESPACE),
        defaults: validation::default_namespace,
        prepare_for_create,
        prepare_for_update: validation::prepare_namespace_update,
        validate: validation::validate_namespace,
        status_is_subresource: true,
        tracks_generation: false,
        creates_on_update: false,
        table: &table::NAMESPACE,
        patch: &patch::schema::NAMESPACE,
        hooks: Hooks {
            may_delete,
            deletes_namespace_contents: true,
            ..Hooks::NONE
        },
    },
};

/// Namespaces that may not be deleted, as in Kubernetes.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// A new Namespace is `Active` and labelled with its own name.
fn prepare_for_create(namespace: &mut Value) {
    namespace["status"] = json!({"phase": "Active"});
    let name = namespace["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let labels = meta_mut(namespace)
        .entry("labels")
        .or_insert_with(|| json!({}));
    if let Value::Object(labels) = labels {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

/// The built-in Namespaces stay.
fn may_delete(name: &str) -> Result<(), String> {
    if PROTECTED_NAMESPACES.contains(&name) {
        return Err(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        ));
    }
    Ok(())
}
