//! Services: a write takes the Service's ClusterIPs and nodePorts from the allocator before the
//! store sees it (given back if the write fails), and a delete gives them back.

use std::sync::Arc;

use k8s_openapi::api::core;
use serde_json::{Value, json};

use crate::allocator::{Reservation, ServiceAllocator};
use crate::resources::strategy::{Hooks, Strategy};
use crate::resources::{Resource, Subresource};
use crate::validation::FieldError;
use crate::{apiserver::typed, patch, protobuf::schema as protobuf, table, validation};

/// `services`.
pub static SERVICE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    subresources: &[Subresource::Status],
    field_selectors: &["spec.clusterIP", "spec.type"],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Service>,
        protobuf: Some(&protobuf::SERVICE),
        defaults: validation::default_service,
        prepare_for_create,
        prepare_for_update: validation::prepare_service_update,
        validate: validation::validate_service,
        status_is_subresource: true,
        tracks_generation: false,
        creates_on_update: false,
        table: &table::SERVICE,
        patch: &patch::schema::SERVICE,
        hooks: Hooks {
            allocate,
            release: Some(ServiceAllocator::release_all),
            ..Hooks::NONE
        },
    },
};

/// A new Service has no load balancer yet.
fn prepare_for_create(service: &mut Value) {
    service["status"] = json!({"loadBalancer": {}});
}

/// Takes the Service's ClusterIPs and ports; 422 causes for requests the ranges refuse.
fn allocate(
    services: &Arc<ServiceAllocator>,
    service: &mut Value,
    old: Option<&Value>,
) -> Result<Option<Reservation>, Vec<FieldError>> {
    services.allocate(service, old).map(Some)
}
