//! What a request path names: discovery documents, a collection, an object or a subresource.
//!
//! Kubernetes paths are regular but ambiguous in one place — `/api/v1/namespaces/{x}/status` is
//! the status of namespace x, `/api/v1/namespaces/{x}/pods` the pods in x — so the parser
//! consults the resource table instead of a router's fixed patterns.

use crate::resources::{self, Resource, Subresource};

/// A parsed API path.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiPath {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`.
    ResourceList { group: String, version: String },
    /// A collection: all objects, or a namespace's.
    Collection {
        resource: &'static Resource,
        namespace: Option<String>,
    },
    /// One object, or one of its subresources.
    Object {
        resource: &'static Resource,
        namespace: Option<String>,
        name: String,
        subresource: Option<Subresource>,
    },
}

/// Parses `path`; `None` if it names nothing served.
pub fn parse(path: &str) -> Option<ApiPath> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Some(ApiPath::CoreVersions),
        ["apis"] => return Some(ApiPath::Groups),
        ["apis", group] => {
            return resources::groups()
                .contains(group)
                .then(|| ApiPath::Group((*group).to_owned()));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return (!resources::versions_of(group).is_empty()
            && resources::versions_of(group).contains(&version))
        .then(|| ApiPath::ResourceList {
            group: group.to_owned(),
            version: version.to_owned(),
        });
    }
    let find = |plural: &str| resources::find(group, version, plural);
    let valid = |s: &&str| !s.is_empty();
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if find(plural).is_some_and(|r| r.namespaced) && valid(ns) =>
        {
            object_or_collection(find(plural)?, Some(ns), tail)
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            if resource.namespaced && !tail.is_empty() {
                return None; // a namespaced object needs its namespace in the path
            }
            object_or_collection(resource, None, tail)
        }
        [] => None,
    }
}

fn object_or_collection(
    resource: &'static Resource,
    namespace: Option<&str>,
    tail: &[&str],
) -> Option<ApiPath> {
    let namespace = namespace.map(str::to_owned);
    match tail {
        [] => Some(ApiPath::Collection {
            resource,
            namespace,
        }),
        [name] if !name.is_empty() => Some(ApiPath::Object {
            resource,
            namespace,
            name: (*name).to_owned(),
            subresource: None,
        }),
        [name, sub] if !name.is_empty() => {
            let sub = Subresource::parse(sub).filter(|s| resource.has(*s))?;
            Some(ApiPath::Object {
                resource,
                namespace,
                name: (*name).to_owned(),
                subresource: Some(sub),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str) -> (String, Option<String>, String, Option<Subresource>) {
        match parse(path) {
            Some(ApiPath::Object {
                resource,
                namespace,
                name,
                subresource,
            }) => (resource.plural.to_owned(), namespace, name, subresource),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaces_and_their_contents_are_told_apart() {
        assert_eq!(
            object("/api/v1/namespaces/kube-system"),
            ("namespaces".into(), None, "kube-system".into(), None)
        );
        assert_eq!(
            object("/api/v1/namespaces/kube-system/status"),
            (
                "namespaces".into(),
                None,
                "kube-system".into(),
                Some(Subresource::Status)
            )
        );
        assert!(matches!(
            parse("/api/v1/namespaces/default/pods"),
            Some(ApiPath::Collection { namespace: Some(ns), .. }) if ns == "default"
        ));
        assert_eq!(
            object("/apis/apps/v1/namespaces/default/deployments/web/scale"),
            (
                "deployments".into(),
                Some("default".into()),
                "web".into(),
                Some(Subresource::Scale)
            )
        );
    }

    #[test]
    fn discovery_paths_and_unknown_ones() {
        assert_eq!(parse("/api"), Some(ApiPath::CoreVersions));
        assert_eq!(parse("/apis/"), Some(ApiPath::Groups));
        assert_eq!(parse("/apis/apps"), Some(ApiPath::Group("apps".into())));
        assert!(matches!(
            parse("/api/v1"),
            Some(ApiPath::ResourceList { .. })
        ));
        assert_eq!(parse("/apis/batch/v1"), None);
        assert_eq!(parse("/api/v1/widgets"), None);
        assert_eq!(parse("/api/v1/pods/web"), None, "pods need a namespace");
        assert_eq!(parse("/api/v1/namespaces/default/pods/web/scale"), None);
        assert!(matches!(
            parse("/api/v1/pods"),
            Some(ApiPath::Collection {
                namespace: None,
                ..
            })
        ));
        assert!(matches!(
            parse("/api/v1/nodes/n1/status"),
            Some(ApiPath::Object { .. })
        ));
    }
}
