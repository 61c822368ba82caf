//! The resources this apiserver serves, in one table.
//!
//! Everything that differs between resources — group, plural, scope, short names, subresources,
//! which field selectors work, how a stored key is laid out — is data here, so the handlers are
//! written once for all of them and discovery is generated from the same table it routes by.

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

/// One served resource.
#[derive(Debug, PartialEq, Eq)]
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
    /// Whether a write of the main resource keeps the stored status (status has its own door).
    pub status_is_subresource: bool,
    /// Whether `metadata.generation` tracks spec changes.
    pub tracks_generation: bool,
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

/// Every resource served.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &[Subresource::Status],
        field_selectors: &["status.phase"],
        status_is_subresource: true,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: true,
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &[Subresource::Status, Subresource::Binding],
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        status_is_subresource: true,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: true,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: false,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: false,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: true,
        tracks_generation: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &[Subresource::Status, Subresource::Scale],
        field_selectors: &["status.replicas"],
        status_is_subresource: true,
        tracks_generation: true,
    },
    Resource {
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
        status_is_subresource: false,
        tracks_generation: false,
    },
    Resource {
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
        status_is_subresource: false,
        tracks_generation: false,
    },
];

/// The API groups served, besides the core group, in discovery order.
pub static GROUPS: &[&str] = &["apps", "discovery.k8s.io", "coordination.k8s.io"];

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
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose objects are stored under `key`.
pub fn for_key(key: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| key.starts_with(&r.prefix()))
}

/// The resource of a kind in a group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
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
    use super::*;

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
                if !std::ptr::eq(a, b) {
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
