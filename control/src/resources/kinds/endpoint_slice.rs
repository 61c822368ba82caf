//! EndpointSlices: a Service's ready addresses, written by the EndpointSlice controller and read
//! by every service proxy.

use k8s_openapi::api::discovery;

use crate::patch::KindSchema;
use crate::resources::Resource;
use crate::resources::strategy::{Hooks, Strategy, nothing_kept, unchanged};
use crate::{apiserver::typed, table, validation};

/// `endpointslices`.discovery.k8s.io.
pub static ENDPOINT_SLICE: Resource = Resource {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    field_selectors: &["addressType"],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<discovery::v1::EndpointSlice>,
        protobuf: None,
        defaults: validation::default_endpoint_slice,
        prepare_for_create: unchanged,
        prepare_for_update: nothing_kept,
        validate: validation::validate_endpoint_slice,
        status_is_subresource: false,
        tracks_generation: false,
        creates_on_update: true,
        table: &table::ENDPOINT_SLICE,
        patch: &KindSchema::PLAIN,
        hooks: Hooks::NONE,
    },
};
