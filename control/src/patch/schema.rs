//! Where strategic merge patch merges lists, by kind and field path.
//!
//! Kubernetes keeps this knowledge in the `patchStrategy` / `patchMergeKey` struct tags of its Go
//! types; `k8s-openapi` drops them, so we restate the few that matter for the kinds this
//! apiserver serves. Any field not listed here is atomic: a list in a patch replaces the stored
//! list and a map merges key by key, which is also what Kubernetes does for untagged fields.
//!
//! The table is a tree of static [`Node`]s built from reusable fragments (`OBJECT_META`,
//! `POD_SPEC`, `CONTAINER`, ...). `metadata` is mounted under every kind, so a kind's schema is
//! one short static ([`POD`], [`KindSchema::PLAIN`]) that its resource entry points at.
//! Checked against k8s.io/api `core/v1`, `apps/v1`, `discovery/v1`, `coordination/v1`, `autoscaling/v1` and apimachinery `meta/v1` types (2026-07).

/// How a list field merges under strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Elements are objects, matched by the value of this key (`patchStrategy:"merge"` +
    /// `patchMergeKey`).
    MergeByKey(&'static str),
    /// Elements are scalars; the patch adds to the set (`patchStrategy:"merge"`, no key).
    MergePrimitives,
    /// The patch's list replaces the stored one (no tag: atomic).
    Replace,
}

/// One field of an object: how it merges and what lies below it.
#[derive(Debug)]
pub struct Field {
    /// The JSON field name.
    pub name: &'static str,
    /// How the field merges when it holds a list.
    pub list: ListStrategy,
    /// Whether patches may send `$retainKeys` for this map (or for each element of this list).
    pub retain_keys: bool,
    /// The fields of the value (or of each list element), when any of them is special.
    pub child: Option<&'static Node>,
}

/// The special fields of one object type.
#[derive(Debug)]
pub struct Node {
    fields: &'static [Field],
}

impl Node {
    /// The field named `name`, if it merges in a special way or has special fields below it.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn keyed(name: &'static str, key: &'static str) -> Field {
    Field {
        name,
        list: ListStrategy::MergeByKey(key),
        retain_keys: false,
        child: None,
    }
}

const fn keyed_of(name: &'static str, key: &'static str, child: &'static Node) -> Field {
    Field {
        name,
        list: ListStrategy::MergeByKey(key),
        retain_keys: false,
        child: Some(child),
    }
}

const fn primitives(name: &'static str) -> Field {
    Field {
        name,
        list: ListStrategy::MergePrimitives,
        retain_keys: false,
        child: None,
    }
}

const fn retain_keys(mut field: Field) -> Field {
    field.retain_keys = true;
    field
}

const fn nested(name: &'static str, child: &'static Node) -> Field {
    Field {
        name,
        list: ListStrategy::Replace,
        retain_keys: false,
        child: Some(child),
    }
}

/// meta/v1 ObjectMeta.
static OBJECT_META: Node = Node {
    fields: &[primitives("finalizers"), keyed("ownerReferences", "uid")],
};

/// core/v1 Container and EphemeralContainerCommon (same tags).
static CONTAINER: Node = Node {
    fields: &[
        keyed("ports", "containerPort"),
        keyed("env", "name"),
        keyed("volumeMounts", "mountPath"),
        keyed("volumeDevices", "devicePath"),
    ],
};

/// core/v1 PodSpec.
static POD_SPEC: Node = Node {
    fields: &[
        retain_keys(keyed("volumes", "name")),
        keyed_of("initContainers", "name", &CONTAINER),
        keyed_of("containers", "name", &CONTAINER),
        keyed_of("ephemeralContainers", "name", &CONTAINER),
        keyed("imagePullSecrets", "name"),
        keyed("hostAliases", "ip"),
        keyed("topologySpreadConstraints", "topologyKey"),
        keyed("schedulingGates", "name"),
        retain_keys(keyed("resourceClaims", "name")),
        keyed("evictionResponders", "name"),
    ],
};

/// core/v1 NodeAllocatableResourceClaimStatus.
static NODE_ALLOCATABLE_CLAIM_STATUS: Node = Node {
    fields: &[keyed("mapping", "name"), keyed("overhead", "name")],
};

/// core/v1 PodStatus.
static POD_STATUS: Node = Node {
    fields: &[
        keyed("conditions", "type"),
        keyed("hostIPs", "ip"),
        keyed("podIPs", "ip"),
        retain_keys(keyed("resourceClaimStatuses", "name")),
        keyed_of(
            "nodeAllocatableResourceClaimStatuses",
            "resourceClaimName",
            &NODE_ALLOCATABLE_CLAIM_STATUS,
        ),
    ],
};

/// core/v1 PodTemplateSpec.
static POD_TEMPLATE_SPEC: Node = Node {
    fields: &[nested("metadata", &OBJECT_META), nested("spec", &POD_SPEC)],
};

/// A status whose only special field is `conditions` keyed by `type` (Namespace, Service,
/// Deployment, ReplicaSet).
static CONDITIONS_STATUS: Node = Node {
    fields: &[keyed("conditions", "type")],
};

/// core/v1 ServiceSpec.
static SERVICE_SPEC: Node = Node {
    fields: &[keyed("ports", "port")],
};

/// core/v1 NodeSpec.
static NODE_SPEC: Node = Node {
    fields: &[primitives("podCIDRs")],
};

/// core/v1 NodeStatus.
static NODE_STATUS: Node = Node {
    fields: &[keyed("conditions", "type"), keyed("addresses", "type")],
};

/// apps/v1 DeploymentSpec.
static DEPLOYMENT_SPEC: Node = Node {
    fields: &[
        Field {
            name: "strategy",
            list: ListStrategy::Replace,
            retain_keys: true,
            child: None,
        },
        nested("template", &POD_TEMPLATE_SPEC),
    ],
};

/// apps/v1 ReplicaSetSpec.
static REPLICA_SET_SPEC: Node = Node {
    fields: &[nested("template", &POD_TEMPLATE_SPEC)],
};

const fn spec(node: &'static Node) -> Field {
    nested("spec", node)
}

const fn status(node: &'static Node) -> Field {
    nested("status", node)
}

/// The schema of one kind: the cursor strategic merge walks down with the document.
#[derive(Clone, Copy, Debug)]
pub struct KindSchema {
    /// Special fields at the top of the kind, besides `metadata`.
    roots: &'static [Field],
}

/// core/v1 Pod.
pub static POD: KindSchema = KindSchema {
    roots: &[spec(&POD_SPEC), status(&POD_STATUS)],
};

/// core/v1 Service.
pub static SERVICE: KindSchema = KindSchema {
    roots: &[spec(&SERVICE_SPEC), status(&CONDITIONS_STATUS)],
};

/// core/v1 Node.
pub static NODE: KindSchema = KindSchema {
    roots: &[spec(&NODE_SPEC), status(&NODE_STATUS)],
};

/// core/v1 Namespace.
pub static NAMESPACE: KindSchema = KindSchema {
    roots: &[status(&CONDITIONS_STATUS)],
};

/// apps/v1 Deployment.
pub static DEPLOYMENT: KindSchema = KindSchema {
    roots: &[spec(&DEPLOYMENT_SPEC), status(&CONDITIONS_STATUS)],
};

/// apps/v1 ReplicaSet.
pub static REPLICA_SET: KindSchema = KindSchema {
    roots: &[spec(&REPLICA_SET_SPEC), status(&CONDITIONS_STATUS)],
};

/// The `metadata` field every kind has.
static METADATA: Field = nested("metadata", &OBJECT_META);

impl KindSchema {
    /// A kind whose every field is atomic besides `metadata` (Endpoints, Event, Scale...).
    pub const PLAIN: KindSchema = KindSchema { roots: &[] };

    /// The names of the special top-level fields (`spec`, `status`), besides `metadata`.
    pub fn top_level_fields(&self) -> impl Iterator<Item = &'static str> {
        self.roots.iter().map(|f| f.name)
    }

    /// The field at `path` (field names, no list indices: `["spec", "containers", "env"]`), if
    /// it is special; any other field is atomic (`ListStrategy::Replace`, no `$retainKeys`).
    pub fn field(&self, path: &[&str]) -> Option<&'static Field> {
        let (first, rest) = path.split_first()?;
        let mut field = match *first {
            "metadata" => &METADATA,
            name => self.roots.iter().find(|f| f.name == name)?,
        };
        for name in rest {
            field = field.child?.field(name)?;
        }
        Some(field)
    }
}

/// The schema of a served kind (or the Scale subresource), for tests that name kinds.
#[cfg(test)]
pub(crate) fn schema_of(kind: &str) -> KindSchema {
    if kind == "Scale" {
        return KindSchema::PLAIN;
    }
    crate::resources::RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .map(|r| *r.strategy.patch)
        .expect("served kind")
}

#[cfg(test)]
mod tests {
    use super::ListStrategy::{MergeByKey, MergePrimitives, Replace};
    use super::*;

    fn strategy(kind: &str, path: &str) -> ListStrategy {
        let path: Vec<&str> = path.split('.').collect();
        schema_of(kind).field(&path).map_or(Replace, |f| f.list)
    }

    #[test]
    fn metadata_lists_merge_for_every_kind() {
        for kind in [
            "Pod",
            "Service",
            "Node",
            "Namespace",
            "Endpoints",
            "Event",
            "Deployment",
            "ReplicaSet",
            "EndpointSlice",
            "Lease",
            "Scale",
        ] {
            assert_eq!(
                strategy(kind, "metadata.finalizers"),
                MergePrimitives,
                "{kind}"
            );
            assert_eq!(
                strategy(kind, "metadata.ownerReferences"),
                MergeByKey("uid"),
                "{kind}"
            );
            assert_eq!(strategy(kind, "metadata.managedFields"), Replace, "{kind}");
        }
    }

    #[test]
    fn pod_spec_lists_match_the_go_struct_tags() {
        let cases = [
            ("containers", MergeByKey("name")),
            ("initContainers", MergeByKey("name")),
            ("ephemeralContainers", MergeByKey("name")),
            ("volumes", MergeByKey("name")),
            ("imagePullSecrets", MergeByKey("name")),
            ("hostAliases", MergeByKey("ip")),
            ("containers.ports", MergeByKey("containerPort")),
            ("containers.env", MergeByKey("name")),
            ("initContainers.volumeMounts", MergeByKey("mountPath")),
            (
                "ephemeralContainers.volumeDevices",
                MergeByKey("devicePath"),
            ),
            ("tolerations", Replace),
            ("containers.args", Replace),
        ];
        for (path, want) in cases {
            assert_eq!(
                strategy("Pod", &format!("spec.{path}")),
                want,
                "Pod spec.{path}"
            );
            for kind in ["Deployment", "ReplicaSet"] {
                let path = format!("spec.template.spec.{path}");
                assert_eq!(strategy(kind, &path), want, "{kind} {path}");
            }
        }
        assert_eq!(
            strategy("Deployment", "spec.template.metadata.finalizers"),
            MergePrimitives
        );
    }

    #[test]
    fn status_and_other_kind_lists_match_the_go_struct_tags() {
        let cases = [
            ("Pod", "status.conditions", MergeByKey("type")),
            ("Pod", "status.podIPs", MergeByKey("ip")),
            ("Pod", "status.hostIPs", MergeByKey("ip")),
            ("Pod", "status.containerStatuses", Replace),
            ("Service", "spec.ports", MergeByKey("port")),
            ("Service", "status.conditions", MergeByKey("type")),
            ("Node", "spec.podCIDRs", MergePrimitives),
            ("Node", "spec.taints", Replace),
            ("Node", "status.conditions", MergeByKey("type")),
            ("Node", "status.addresses", MergeByKey("type")),
            ("Namespace", "status.conditions", MergeByKey("type")),
            ("Namespace", "spec.finalizers", Replace),
            ("Deployment", "status.conditions", MergeByKey("type")),
            ("ReplicaSet", "status.conditions", MergeByKey("type")),
            ("EndpointSlice", "endpoints", Replace),
            ("EndpointSlice", "ports", Replace),
            ("Endpoints", "subsets", Replace),
        ];
        for (kind, path, want) in cases {
            assert_eq!(strategy(kind, path), want, "{kind} {path}");
        }
    }

    #[test]
    fn retain_keys_maps_match_the_go_struct_tags() {
        let retains = |kind: &str, path: &[&str]| {
            let field = schema_of(kind).field(path);
            field.is_some_and(|f| f.retain_keys)
        };
        assert!(retains("Deployment", &["spec", "strategy"]));
        assert!(retains(
            "Deployment",
            &["spec", "template", "spec", "volumes"]
        ));
        assert!(!retains(
            "Deployment",
            &["spec", "template", "spec", "containers"]
        ));
        assert!(retains("Pod", &["spec", "volumes"]));
        assert!(!retains("ReplicaSet", &["spec", "strategy"]));
    }

    #[test]
    fn unserved_kinds_have_no_schema() {}
}
