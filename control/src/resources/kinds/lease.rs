//! Leases: leader election of the scheduler and controller manager.

use k8s_openapi::api::coordination;

use crate::patch::KindSchema;
use crate::resources::Resource;
use crate::resources::strategy::{Hooks, Strategy, nothing_kept, unchanged};
use crate::{apiserver::typed, table, validation};

/// `leases`.coordination.k8s.io.
pub static LEASE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    field_selectors: &[],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<coordination::v1::Lease>,
        protobuf: None,
        defaults: unchanged,
        prepare_for_create: unchanged,
        prepare_for_update: nothing_kept,
        validate: validation::validate_lease,
        status_is_subresource: false,
        tracks_generation: false,
        creates_on_update: true,
        table: &table::LEASE,
        patch: &KindSchema::PLAIN,
        hooks: Hooks::NONE,
    },
};
