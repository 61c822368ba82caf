//! Deployments: rolled out through ReplicaSets by the deployment controller; the spec is
//! generation-tracked and `/scale` is a view of `spec.replicas`.

use k8s_openapi::api::apps;

use crate::resources::strategy::{Hooks, Strategy, empty_status, nothing_kept};
use crate::resources::{Resource, Subresource};
use crate::{apiserver::typed, patch, protobuf::schema as protobuf, table, validation};

/// `deployments`.apps.
pub static DEPLOYMENT: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Scale],
    field_selectors: &[],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<apps::v1::Deployment>,
        protobuf: Some(&protobuf::DEPLOYMENT),
        defaults: validation::default_deployment,
        prepare_for_create: empty_status,
        prepare_for_update: nothing_kept,
        validate: validation::validate_deployment,
        status_is_subresource: true,
        tracks_generation: true,
        creates_on_update: false,
        table: &table::DEPLOYMENT,
        patch: &patch::schema::DEPLOYMENT,
        hooks: Hooks::NONE,
    },
};
