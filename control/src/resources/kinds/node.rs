//! Nodes: registered and heartbeated by skiff-node, given a podCIDR by the node IPAM controller.

use k8s_openapi::api::core;

use crate::resources::strategy::{Hooks, Strategy, nothing_kept, unchanged};
use crate::resources::{Resource, Subresource};
use crate::{apiserver::typed, patch, table, validation};

/// `nodes`.
pub static NODE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &[Subresource::Status],
    field_selectors: &["spec.unschedulable"],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Node>,
        protobuf: None,
        defaults: validation::default_node,
        prepare_for_create: unchanged,
        prepare_for_update: nothing_kept,
        validate: validation::validate_node,
        status_is_subresource: true,
        tracks_generation: false,
        creates_on_update: false,
        table: &table::NODE,
        patch: &patch::schema::NODE,
        hooks: Hooks::NONE,
    },
};
