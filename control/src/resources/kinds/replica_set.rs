//! ReplicaSets: kept at their replica count by the replicaset controller; the spec is
//! generation-tracked and `/scale` is a view of `spec.replicas`.

use k8s_openapi::api::apps;

use crate::resources::strategy::{Hooks, Strategy, empty_status, nothing_kept};
use crate::resources::{Resource, Subresource};
use crate::{apiserver::typed, patch, protobuf::schema as protobuf, table, validation};

/// `replicasets`.apps.
pub static REPLICA_SET: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Scale],
    field_selectors: &["status.replicas"],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<apps::v1::ReplicaSet>,
        protobuf: Some(&protobuf::REPLICA_SET),
        defaults: validation::default_replica_set,
        prepare_for_create: empty_status,
        prepare_for_update: nothing_kept,
        validate: validation::validate_replica_set,
        status_is_subresource: true,
        tracks_generation: true,
        creates_on_update: false,
        table: &table::REPLICA_SET,
        patch: &patch::schema::REPLICA_SET,
        hooks: Hooks::NONE,
    },
};
