//! The resources this apiserver serves, in one table.
//!
//! Everything that differs between resources is here, so the handlers are written once for all
//! of them and discovery is generated from the same table it routes by: names, scope, short
//! names, subresources, field selectors and store keys as data, and each kind's behaviour —
//! defaults, update preparation, validation, status handling, Table columns, patch schema,
//! protobuf message, write and delete hooks — as its [`Strategy`]. Each kind has its own module
//! in [`kinds`]; nothing outside this table asks which kind it is handling.

mod kinds;
mod strategy;

use std::fmt;

use serde_json::Value;

pub use strategy::{Allocate, Hooks, Strategy, empty_status, nothing_kept, unchanged};

use crate::apiserver::typed::DecodeError;
use crate::validation::{self, FieldError};

/// A subresource a resource offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: get, update and patch the status alone.
    Status,
    /// `/scale`: an autoscaling/v1 Scale view of `spec.replicas`.
    Scale,
    /// `/binding`: bind a Pod to a Node (create only).
    Binding,
}

impl Subresource {
    /// Its name in a URL.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
        }
    }

    /// Parses a URL segment.
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "status" => Some(Subresource::Status),
            "scale" => Some(Subresource::Scale),
            "binding" => Some(Subresource::Binding),
            _ => None,
        }
    }
}

/// One served resource: how it is named and addressed, and its kind's [`Strategy`].
pub struct Resource {
    /// API group; "" is the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of a single object.
    pub kind: &'static str,
    /// The URL name (plural).
    pub plural: &'static str,
    /// Singular name, for discovery.
    pub singular: &'static str,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` include it).
    pub categories: &'static [&'static str],
    /// Subresources offered.
    pub subresources: &'static [Subresource],
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    /// What the kind does differently on writes, reads and deletes.
    pub strategy: Strategy,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every resource served, in discovery order.
pub static RESOURCES: &[&Resource] = &[
    &kinds::namespace::NAMESPACE,
    &kinds::node::NODE,
    &kinds::pod::POD,
    &kinds::service::SERVICE,
    &kinds::endpoints::ENDPOINTS,
    &kinds::event::EVENT,
    &kinds::deployment::DEPLOYMENT,
    &kinds::replica_set::REPLICA_SET,
    &kinds::endpoint_slice::ENDPOINT_SLICE,
    &kinds::lease::LEASE,
];

/// Two entries are the same resource when they share group, version and plural.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.version, self.plural) == (other.group, other.version, other.plural)
    }
}

impl Eq for Resource {}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Fills in the kind's API defaults (nothing for a body that is not an object).
    pub fn apply_defaults(&self, object: &mut Value) {
        if object.is_object() {
            (self.strategy.defaults)(object);
        }
    }

    /// Readies an update through the main door for validation: carries over the server-owned
    /// metadata, then what the kind's own `PrepareForUpdate` keeps from `old`.
    pub fn prepare_for_update(&self, object: &mut Value, old: &Value) {
        if object.is_object() {
            validation::keep_server_metadata(object, old);
            (self.strategy.prepare_for_update)(object, old);
        }
    }

    /// Every problem with `object` (`old` is the stored object on update); empty when valid.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        (self.strategy.validate)(object, old)
    }

    /// The fields of `object` its Kubernetes type lacks, or why it does not decode as one.
    pub fn unknown_fields(&self, object: &Value) -> Result<Vec<String>, DecodeError> {
        (self.strategy.unknown_fields)(object)
    }

    /// The verbs discovery lists for the main resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        ALL_VERBS
    }

    /// Does `?fieldSelector=` accept `field` here?
    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.field_selectors.contains(&field)
    }

    /// Does this resource offer `sub`?
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store prefix of every object of this resource (all namespaces).
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store prefix of a listing: one namespace's objects, or all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}{name}", self.prefix()),
        }
    }
}

/// The resource at `/api(s)/<group>/<version>/<plural>`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects are stored under `key`.
pub fn for_key(key: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| key.starts_with(&r.prefix()))
}

/// The resource of a kind in a group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.kind == kind)
}

/// The protobuf message of the served kind `kind` of `api_version` (`apps/v1`), if it has one.
pub fn protobuf_message(
    api_version: &str,
    kind: &str,
) -> Option<&'static crate::protobuf::schema::MessageDesc> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
        .and_then(|r| r.strategy.protobuf)
}

/// The API groups served, besides the core group, in discovery order (the table's).
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

/// The versions served for `group`.
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.version)
        .collect();
    versions.dedup();
    versions
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::table::{self, IncludeObject};

    /// Kinds that kubectl's typed clients never send as protobuf, so they have no message here.
    const JSON_ONLY: &[&str] = &["Node", "Endpoints", "Event", "EndpointSlice", "Lease"];

    #[test]
    fn every_kind_is_complete() {
        for r in RESOURCES {
            let kind = r.kind;
            let typed = |extra: Value| {
                let mut object = json!({"apiVersion": r.api_version(), "kind": kind,
                                        "metadata": {"name": "x"}});
                object
                    .as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                r.unknown_fields(&object)
            };
            assert_eq!(
                typed(json!({})),
                Ok(vec![]),
                "{kind}: typed check of another type"
            );
            assert_eq!(
                typed(json!({"notAField": 1})),
                Ok(vec!["notAField".to_owned()]),
                "{kind}: typed check lets unknown fields through"
            );

            let mut object = json!({"apiVersion": r.api_version(), "kind": kind,
                                    "metadata": {"name": "x"}});
            r.apply_defaults(&mut object);
            let mut again = object.clone();
            r.apply_defaults(&mut again);
            assert_eq!(object, again, "{kind}: defaulting is not idempotent");
            object["metadata"]["name"] = json!("Not_A_Name");
            assert!(
                !r.validate(&object, None).is_empty(),
                "{kind}: validation accepts any name"
            );

            assert!(
                !std::ptr::eq(r.strategy.table, &table::DEFAULT),
                "{kind}: no Table columns of its own"
            );
            let columns = table::to_table(r.strategy.table, &[], IncludeObject::None, 0, json!({}));
            let columns = columns["columnDefinitions"].as_array().map_or(0, Vec::len);
            assert!(columns > 1, "{kind}: {columns} Table columns");

            for field in r.strategy.patch.top_level_fields() {
                assert_eq!(
                    typed(json!({field: {}})),
                    Ok(vec![]),
                    "{kind}: patch schema of another kind ({field})"
                );
            }

            match r.strategy.protobuf {
                Some(message) => assert_eq!(message.name, kind, "{kind}: protobuf message"),
                None => assert!(JSON_ONLY.contains(&kind), "{kind}: no protobuf message"),
            }
            assert_eq!(
                r.strategy.status_is_subresource,
                r.has(Subresource::Status),
                "{kind}: status handling disagrees with the /status door"
            );
        }
    }

    #[test]
    fn groups_come_from_the_table_in_its_order() {
        assert_eq!(
            groups(),
            ["apps", "discovery.k8s.io", "coordination.k8s.io"]
        );
    }

    #[test]
    fn protobuf_messages_are_found_by_api_version_and_kind() {
        let deployment = protobuf_message("apps/v1", "Deployment").expect("decoded");
        assert_eq!(deployment.name, "Deployment");
        assert!(protobuf_message("v1", "Deployment").is_none());
        assert!(protobuf_message("v1", "Node").is_none());
        assert!(protobuf_message("v1", "ConfigMap").is_none());
    }

    #[test]
    fn keys_of_one_namespace_never_match_another() {
        let pods = find("", "v1", "pods").unwrap();
        let key = pods.key(Some("default2"), "web");
        assert!(!key.starts_with(&pods.list_prefix(Some("default"))));
        assert!(key.starts_with(&pods.list_prefix(None)));
        assert_eq!(for_key(&key), Some(pods));
    }

    #[test]
    fn no_resource_prefix_is_a_prefix_of_another() {
        for a in RESOURCES {
            for b in RESOURCES {
                if !std::ptr::eq(*a, *b) {
                    assert!(
                        !b.prefix().starts_with(&a.prefix()),
                        "{} / {}",
                        a.plural,
                        b.plural
                    );
                }
            }
        }
    }

    #[test]
    fn cluster_scoped_keys_ignore_a_namespace() {
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("default"), "n1"), "/registry/core/nodes/n1");
        assert_eq!(nodes.api_version(), "v1");
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().qualified_name(),
            "deployments.apps"
        );
    }
}
