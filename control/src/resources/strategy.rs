//! What a kind does differently on a write, a read and a delete: its strategy.
//!
//! kube-apiserver keeps this per kind in `pkg/registry/<group>/<kind>/strategy.go`
//! (`PrepareForCreate`, `PrepareForUpdate`, `Validate`, `ValidateUpdate`, the status strategy)
//! plus its printers, its Go types and their patch tags. Here each kind's [`Strategy`] holds all
//! of that as plain data and function pointers, so the handlers never ask which kind they serve,
//! and a kind is complete when its one entry compiles: there is no default to forget.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::allocator::{Reservation, ServiceAllocator};
use crate::apiserver::typed::DecodeError;
use crate::patch::KindSchema;
use crate::protobuf::schema::MessageDesc;
use crate::table::Printer;
use crate::validation::FieldError;

/// One kind's behaviour, in the order a write uses it.
pub struct Strategy {
    /// Strict decoding against the k8s-openapi type: the fields the type lacks, or why the body
    /// is malformed (`typed::unknown_fields::<Pod>`).
    pub unknown_fields: fn(&Value) -> Result<Vec<String>, DecodeError>,
    /// The protobuf message kubectl's typed clients send for this kind; `None`: JSON only.
    pub protobuf: Option<&'static MessageDesc>,
    /// v1 defaulting (`SetDefaults_*`), on every create and update.
    pub defaults: fn(&mut Value),
    /// `PrepareForCreate`: the status a new object starts with, labels the server sets.
    pub prepare_for_create: fn(&mut Value),
    /// `PrepareForUpdate` of the main door (not `/status`), after the stored server-owned
    /// metadata is carried over: what the main door may not change is taken from the stored
    /// object.
    pub prepare_for_update: fn(&mut Value, &Value),
    /// `Validate` (no stored object) and `ValidateUpdate` (the stored one).
    pub validate: fn(&Value, Option<&Value>) -> Vec<FieldError>,
    /// Whether status has its own door, so a write of the main resource keeps the stored status.
    pub status_is_subresource: bool,
    /// Whether `metadata.generation` tracks spec changes.
    pub tracks_generation: bool,
    /// Whether a PUT of a missing object creates it (`AllowCreateOnUpdate`).
    pub creates_on_update: bool,
    /// The server-side Table printer behind `kubectl get`.
    pub table: &'static Printer,
    /// Which lists strategic merge patch merges, and by which key.
    pub patch: &'static KindSchema,
    /// What happens around the store write and delete.
    pub hooks: Hooks,
}

/// The side effects of writing and deleting objects of a kind.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Takes what an object needs from the cluster's pools before it is written (a Service's
    /// ClusterIPs and nodePorts); `old` is the stored object on update. The reservation is given
    /// back unless the write commits it.
    pub allocate: Allocate,
    /// Gives back what a deleted object held; `None`: it held nothing.
    pub release: Option<fn(&ServiceAllocator, &Value)>,
    /// Refuses to delete the object of this name, with the reason (protected Namespaces).
    pub may_delete: fn(&str) -> Result<(), String>,
    /// Seconds an object gets to stop before it is removed, given the grace period the request
    /// asked for; 0 removes it at once (only a Pod on a node waits).
    pub grace_period: fn(&Value, Option<i64>) -> i64,
    /// Whether deleting an object removes every namespaced object inside it (a Namespace).
    pub deletes_namespace_contents: bool,
}

/// See [`Hooks::allocate`].
pub type Allocate = fn(
    &Arc<ServiceAllocator>,
    &mut Value,
    Option<&Value>,
) -> Result<Option<Reservation>, Vec<FieldError>>;

impl Hooks {
    /// A kind whose writes and deletes touch nothing but the store.
    pub const NONE: Hooks = Hooks {
        allocate: |_, _, _| Ok(None),
        release: None,
        may_delete: |_| Ok(()),
        grace_period: |_, _| 0,
        deletes_namespace_contents: false,
    };
}

/// Defaulting or preparation that leaves the object as it is.
pub fn unchanged(_: &mut Value) {}

/// Creation that starts the object with an empty status (the workloads' controllers fill it).
pub fn empty_status(object: &mut Value) {
    object["status"] = Value::Object(serde_json::Map::new());
}

/// Update preparation that takes nothing from the stored object.
pub fn nothing_kept(_: &mut Value, _: &Value) {}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Strategy")
            .field("protobuf", &self.protobuf.map(|m| m.name))
            .field("status_is_subresource", &self.status_is_subresource)
            .field("tracks_generation", &self.tracks_generation)
            .field("creates_on_update", &self.creates_on_update)
            .field("table", &self.table)
            .field("patch", &self.patch)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field(
                "deletes_namespace_contents",
                &self.deletes_namespace_contents,
            )
            .finish_non_exhaustive()
    }
}
