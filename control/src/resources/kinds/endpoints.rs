//! Endpoints: the legacy list of a Service's addresses, mirrored by the EndpointSlice controller.

use k8s_openapi::api::core;

use crate::patch::KindSchema;
use crate::resources::Resource;
use crate::resources::strategy::{Hooks, Strategy, nothing_kept, unchanged};
use crate::{apiserver::typed, table, validation};

/// `endpoints`.
pub static ENDPOINTS: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    categories: &[],
    subresources: &[],
    field_selectors: &[],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Endpoints>,
        protobuf: None,
        defaults: validation::default_endpoints,
        prepare_for_create: unchanged,
        prepare_for_update: nothing_kept,
        validate: validation::validate_endpoints,
        status_is_subresource: false,
        tracks_generation: false,
        creates_on_update: true,
        table: &table::ENDPOINTS,
        patch: &KindSchema::PLAIN,
        hooks: Hooks::NONE,
    },
};
