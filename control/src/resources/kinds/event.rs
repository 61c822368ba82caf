//! Events (core/v1): what the scheduler and controllers report about objects.

use k8s_openapi::api::core;

use crate::patch::KindSchema;
use crate::resources::Resource;
use crate::resources::strategy::{Hooks, Strategy, nothing_kept, unchanged};
use crate::{apiserver::typed, table, validation};

/// `events`.
pub static EVENT: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    field_selectors: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Event>,
        protobuf: None,
        defaults: unchanged,
        prepare_for_create: unchanged,
        prepare_for_update: nothing_kept,
        validate: validation::validate_event,
        status_is_subresource: false,
        tracks_generation: false,
        creates_on_update: true,
        table: &table::EVENT,
        patch: &KindSchema::PLAIN,
        hooks: Hooks::NONE,
    },
};
