//! Strategic merge patch: Kubernetes' own patch format, applied here without Go struct tags.
//!
//! A strategic merge patch is a JSON merge patch whose lists may merge instead of being
//! replaced: by a merge key (containers by `name`) or as a set of scalars (finalizers), as
//! [`schema`](super::schema) says per field. Directives steer the rest: `$patch`
//! (`replace` / `delete` / `merge`) on a map or list element, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`. No directive survives into
//! the result.
//!
//! We follow apimachinery's `strategicpatch` (`mergeMap` / `mergeSlice`) closely, including its
//! list order: without `$setElementOrder`, patched elements keep the patch's order and are
//! interleaved with the stored elements by their stored positions, so an element that is new
//! lands *before* the stored elements that follow the last patched one (a new container in
//! `kubectl patch` becomes the first one). Clients that care (kubectl apply) send
//! `$setElementOrder`. Where the Go code crashes or returns a 500 on a bad patch, we answer
//! with a specific error instead; we also refuse unknown `$` keys, accept `$patch: merge`
//! (Go refuses it), keep a `$patch: replace` map where nothing was stored (Go drops it), and
//! honour `$retainKeys` wherever it appears (as Go does: the schema flag only documents it).

use std::fmt;

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{Field, KindSchema, ListStrategy, Node};

type Object = Map<String, Value>;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Strategic merge of `patch` into `original`, an object of the kind `schema` describes.
pub fn strategic_merge(
    schema: KindSchema,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject("strategic merge"));
    };
    let original = original.as_object().cloned().unwrap_or_default();
    merge_map(original, patch.clone(), Scope::Kind(schema), &Path::ROOT).map(Value::Object)
}

/// Where in the schema a map sits.
#[derive(Clone, Copy)]
enum Scope {
    Kind(KindSchema),
    Node(&'static Node),
    Unknown,
}

impl Scope {
    fn field(self, name: &str) -> Option<&'static Field> {
        match self {
            Scope::Kind(kind) => kind.field(&[name]),
            Scope::Node(node) => node.field(name),
            Scope::Unknown => None,
        }
    }

    fn below(field: Option<&'static Field>) -> Self {
        field
            .and_then(|f| f.child)
            .map_or(Scope::Unknown, Scope::Node)
    }
}

/// A field path for error messages, e.g. `spec.template.spec.containers`.
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'a str,
}

impl Path<'_> {
    const ROOT: Path<'static> = Path {
        parent: None,
        name: "",
    };

    fn child<'a>(&'a self, name: &'a str) -> Path<'a> {
        let parent = Some(self);
        Path { parent, name }
    }

    /// An error about this path.
    fn err(&self, error: impl FnOnce(String) -> PatchError) -> PatchError {
        error(self.to_string())
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parent {
            Some(parent) if parent.parent.is_some() => write!(f, "{parent}.{}", self.name),
            Some(_) => f.write_str(self.name),
            None => f.write_str("<root>"),
        }
    }
}

/// The `$patch` directive of a map or list element.
enum Directive {
    Merge,
    Replace,
    Delete,
}

fn take_directive(map: &mut Object, path: &Path) -> Result<Directive, PatchError> {
    let Some(value) = map.remove(PATCH) else {
        return Ok(Directive::Merge);
    };
    match value.as_str() {
        Some("merge") => Ok(Directive::Merge),
        Some("replace") => Ok(Directive::Replace),
        Some("delete") => Ok(Directive::Delete),
        _ => Err(path.err(|path| PatchError::BadPatchDirective {
            path,
            value: value.to_string(),
        })),
    }
}

fn merge_map(
    mut original: Object,
    mut patch: Object,
    scope: Scope,
    path: &Path,
) -> Result<Object, PatchError> {
    match take_directive(&mut patch, path)? {
        Directive::Merge => {}
        Directive::Replace => return merge_map(Map::new(), patch, scope, path),
        Directive::Delete => return Ok(Map::new()),
    }
    if let Some(keys) = patch.remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, &keys, path)?;
    }
    let orders: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in orders {
        let order = patch.remove(&key).unwrap_or_default();
        let name = &key[SET_ELEMENT_ORDER.len()..];
        let list = patch.remove(name);
        set_element_order(&mut original, name, list, order, scope.field(name), path)?;
    }
    let mut deletions = Vec::new();
    for (key, value) in patch {
        if let Some(name) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            deletions.push((name.to_owned(), value));
        } else if key.starts_with('$') {
            return Err(path.err(|path| PatchError::UnknownDirective { path, key }));
        } else {
            let field = scope.field(&key);
            merge_field(&mut original, &key, value, field, &path.child(&key))?;
        }
    }
    for (name, values) in deletions {
        let Value::Array(values) = values else {
            return Err(path
                .child(&name)
                .err(|path| PatchError::BadPrimitiveList { path }));
        };
        if let Some(Value::Array(list)) = original.get_mut(&name) {
            list.retain(|v| !values.contains(v));
        }
    }
    Ok(original)
}

/// `$retainKeys`: keys of `original` not listed are cleared; the patch may set only those listed.
fn retain_keys(
    original: &mut Object,
    patch: &Object,
    keys: &Value,
    path: &Path,
) -> Result<(), PatchError> {
    let bad = || path.err(|path| PatchError::BadRetainKeys { path });
    let Value::Array(keys) = keys else {
        return Err(bad());
    };
    let keys: Vec<&str> = keys
        .iter()
        .map(|k| k.as_str().ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let unlisted = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !keys.contains(&k.as_str())
    });
    if unlisted {
        return Err(bad());
    }
    original.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

fn merge_field(
    original: &mut Object,
    key: &str,
    patch: Value,
    field: Option<&'static Field>,
    path: &Path,
) -> Result<(), PatchError> {
    let stored = original.get_mut(key).map(Value::take);
    match merge_value(stored, patch, field, path)? {
        Some(value) => original.insert(key.to_owned(), value),
        None => original.remove(key),
    };
    Ok(())
}

/// Merges a patch value into the stored one (`None`: absent); `None` back removes the field.
/// Where nothing is stored, the patch's directives and nulls are dropped.
fn merge_value(
    stored: Option<Value>,
    patch: Value,
    field: Option<&'static Field>,
    path: &Path,
) -> Result<Option<Value>, PatchError> {
    let scope = Scope::below(field);
    Ok(match (stored, patch) {
        (_, Value::Null) => None,
        (Some(Value::Object(o)), Value::Object(p)) => Some(merge_map(o, p, scope, path)?.into()),
        (Some(Value::Array(o)), Value::Array(p)) => Some(merge_list(o, p, field, path)?.into()),
        (_, Value::Object(p)) if p.get(PATCH).and_then(Value::as_str) == Some("delete") => None,
        (_, Value::Object(p)) => Some(merge_map(Map::new(), p, scope, path)?.into()),
        (_, Value::Array(p)) => Some(merge_list(Vec::new(), p, field, path)?.into()),
        (_, scalar) => Some(scalar),
    })
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Option<&'static Field>,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    match field.map_or(ListStrategy::Replace, |f| f.list) {
        ListStrategy::Replace => atomic_list(patch, path),
        ListStrategy::MergePrimitives => merge_primitives(&original, patch, path),
        ListStrategy::MergeByKey(key) => {
            merge_keyed(original, patch, key, Scope::below(field), path)
        }
    }
}

/// An atomic list replaces the stored one; elements carrying `$patch` are dropped (as in Go).
fn atomic_list(patch: Vec<Value>, path: &Path) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for element in patch {
        match element {
            Value::Object(map) if map.contains_key(PATCH) => {}
            Value::Null => out.push(Value::Null),
            element => out.extend(merge_value(None, element, None, path)?),
        }
    }
    Ok(out)
}

fn merge_primitives(
    original: &[Value],
    patch: Vec<Value>,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    let mut items = Vec::with_capacity(patch.len());
    for element in patch {
        match element {
            Value::Object(mut map) => match take_directive(&mut map, path)? {
                Directive::Replace if map.is_empty() => replace = true,
                _ => return Err(path.err(|path| PatchError::MixedListElements { path })),
            },
            Value::Array(_) => return Err(path.err(|path| PatchError::ListOfLists { path })),
            scalar => push_unique(&mut items, scalar),
        }
    }
    if replace {
        return Ok(items);
    }
    let mut merged = items.clone();
    for value in original {
        push_unique(&mut merged, value.clone());
    }
    Ok(normalize_order(merged, &items, &ids(original, None), None))
}

fn push_unique(list: &mut Vec<Value>, value: Value) {
    if !list.contains(&value) {
        list.push(value);
    }
}

fn key_of<'v>(element: &'v Value, key: &str) -> Option<&'v Value> {
    element.as_object()?.get(key)
}

/// What identifies a list element: its merge key's value, or the scalar itself.
fn id<'v>(element: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => key_of(element, key),
        None => (!element.is_object()).then_some(element),
    }
}

fn ids(list: &[Value], key: Option<&str>) -> Vec<Option<Value>> {
    list.iter().map(|e| id(e, key).cloned()).collect()
}

/// The merge key of a patch element, which it must have.
fn required_key(map: &Object, key: &str, path: &Path) -> Result<Value, PatchError> {
    let missing = |path| PatchError::MissingMergeKey {
        path,
        key: key.to_owned(),
    };
    map.get(key).cloned().ok_or_else(|| path.err(missing))
}

fn merge_keyed(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    scope: Scope,
    path: &Path,
) -> Result<Vec<Value>, PatchError> {
    let mut regular = Vec::with_capacity(patch.len());
    let mut replace = false;
    for element in patch {
        let mut map = match element {
            Value::Object(map) => map,
            Value::Array(_) => return Err(path.err(|path| PatchError::ListOfLists { path })),
            _ => return Err(path.err(|path| PatchError::MixedListElements { path })),
        };
        match take_directive(&mut map, path)? {
            Directive::Merge => regular.push(map),
            Directive::Replace => replace = true,
            Directive::Delete => {
                let doomed = required_key(&map, key, path)?;
                original.retain(|o| key_of(o, key) != Some(&doomed));
            }
        }
    }
    if replace {
        let fresh = regular
            .into_iter()
            .map(|map| merge_map(Map::new(), map, scope, path));
        return fresh.map(|m| m.map(Value::Object)).collect();
    }
    let stored = ids(&original, Some(key));
    let mut patch_keys = Vec::with_capacity(regular.len());
    let mut merged = original;
    for map in regular {
        let wanted = required_key(&map, key, path)?;
        match merged.iter_mut().find(|o| key_of(o, key) == Some(&wanted)) {
            Some(Value::Object(stored)) => *stored = merge_map(take(stored), map, scope, path)?,
            _ => merged.push(Value::Object(merge_map(Map::new(), map, scope, path)?)),
        }
        push_unique(&mut patch_keys, wanted);
    }
    Ok(normalize_order(merged, &patch_keys, &stored, Some(key)))
}

fn take(map: &mut Object) -> Object {
    std::mem::take(map)
}

/// Orders a merged list as apimachinery's `normalizeElementOrder` does: elements whose id is
/// `wanted` come in that order, the others in `stored` order, and the two runs are interleaved
/// so that a stored-only element goes first only when both have stored positions and its
/// position is earlier.
fn normalize_order(
    merged: Vec<Value>,
    wanted: &[Value],
    stored: &[Option<Value>],
    key: Option<&str>,
) -> Vec<Value> {
    let rank = |v: &Value| id(v, key).and_then(|v| wanted.iter().position(|w| w == v));
    let stored_at =
        |v: &Value| id(v, key).and_then(|v| stored.iter().position(|s| s.as_ref() == Some(v)));
    let (mut patched, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| rank(v).is_some());
    patched.sort_by_key(|v| rank(v));
    server_only.sort_by_key(|v| stored_at(v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patched.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        let left_first = matches!((stored_at(l), stored_at(r)), (Some(li), Some(ri)) if li < ri);
        out.extend(if left_first {
            left.next()
        } else {
            right.next()
        });
    }
    out.extend(left);
    out.extend(right);
    out
}

/// `$setElementOrder/<name>`: merge the list, then order it as the client lists it.
fn set_element_order(
    original: &mut Object,
    name: &str,
    list: Option<Value>,
    order: Value,
    field: Option<&'static Field>,
    parent: &Path,
) -> Result<(), PatchError> {
    let path = parent.child(name);
    let bad = || path.err(|path| PatchError::BadSetElementOrder { path });
    let key = match field.map_or(ListStrategy::Replace, |f| f.list) {
        ListStrategy::MergeByKey(key) => Some(key),
        ListStrategy::MergePrimitives => None,
        // An atomic list has no order to set: the patch's list is the list.
        ListStrategy::Replace => {
            return match list {
                Some(list) => merge_field(original, name, list, field, &path),
                None => Ok(()),
            };
        }
    };
    let (false, Value::Array(order)) = (name.is_empty(), order) else {
        return Err(bad());
    };
    let list = match list {
        None => None,
        Some(Value::Array(list)) => Some(list),
        Some(_) => return Err(bad()),
    };
    let order: Vec<Value> = match key {
        Some(key) => order
            .iter()
            .map(|o| {
                o.as_object()
                    .ok_or_else(bad)
                    .and_then(|m| required_key(m, key, &path))
            })
            .collect::<Result<_, _>>()?,
        None => order,
    };
    // The patch's own elements must appear in the order list, in the same relative order.
    let mut remaining = order.iter();
    let check = if order.is_empty() {
        None
    } else {
        list.as_ref()
    };
    for element in check
        .into_iter()
        .flatten()
        .filter(|e| e.get(PATCH).is_none())
    {
        let wanted = id(element, key).ok_or_else(bad)?;
        if !remaining.any(|o| o == wanted) {
            return Err(bad());
        }
    }
    let stored = match original.get(name) {
        Some(Value::Array(stored)) => Some(stored.clone()),
        _ => None,
    };
    let stored_ids = ids(stored.as_deref().unwrap_or_default(), key);
    let merged = match (stored, list) {
        (Some(stored), None) => stored,
        (stored, Some(list)) => merge_list(stored.unwrap_or_default(), list, field, &path)?,
        (None, None) => return Ok(()),
    };
    let ordered = normalize_order(merged, &order, &stored_ids, key);
    original.insert(name.to_owned(), Value::Array(ordered));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::schema::schema_of;
    use super::*;

    fn smp(kind: &str, original: &Value, patch: &Value) -> Value {
        strategic_merge(schema_of(kind), original, patch).expect("patch applies")
    }

    fn smp_err(kind: &str, original: &Value, patch: &Value) -> PatchError {
        strategic_merge(schema_of(kind), original, patch).expect_err("patch is refused")
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        let names = list.as_array().unwrap().iter().map(|e| e[key].to_string());
        names.map(|n| n.trim_matches('"').to_owned()).collect()
    }

    #[test]
    fn maps_merge_recursively_null_deletes_scalars_and_unknown_lists_replace() {
        let pod = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
            "spec": {"nodeName": "n1", "tolerations": [{"key": "x"}, {"key": "y"}]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}},
            "spec": {"nodeName": "n2", "tolerations": [{"key": "z"}], "hostname": null}});
        let want = json!({"metadata": {"name": "p", "labels": {"b": "2", "c": "3"}},
            "spec": {"nodeName": "n2", "tolerations": [{"key": "z"}]}});
        assert_eq!(smp("Pod", &pod, &patch), want);
    }

    #[test]
    fn keyed_lists_merge_by_key_and_order_like_kubernetes() {
        let spec = |c: Value| json!({"spec": {"containers": c}});
        let pod = spec(json!([{"name": "a", "image": "a:1"}, {"name": "b"}, {"name": "c"}]));
        let patch = spec(json!([{"name": "b", "image": "b:2"}, {"name": "new"}]));
        let got = smp("Pod", &pod, &patch);
        let containers = &got["spec"]["containers"];
        // The new element follows the last patched one and precedes later stored ones.
        assert_eq!(names(containers, "name"), ["a", "b", "new", "c"]);
        assert_eq!(containers[0], json!({"name": "a", "image": "a:1"}));
        assert_eq!(containers[1], json!({"name": "b", "image": "b:2"}));
        // With no patched stored element, a new one goes first (as `kubectl patch` shows).
        let (pod, patch) = (spec(json!([{"name": "a"}])), spec(json!([{"name": "z"}])));
        let got = smp("Pod", &pod, &patch);
        assert_eq!(names(&got["spec"]["containers"], "name"), ["z", "a"]);
    }

    #[test]
    fn patch_delete_removes_elements_and_replace_replaces_lists_and_maps() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}},
            "spec": {"volumes": [{"name": "v1"}, {"name": "v2"}], "containers": [{"name": "c"}]}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "z": "9"},
                "annotations": {"$patch": "delete"}},
            "spec": {"volumes": [{"name": "v1", "$patch": "delete"}],
                "containers": [{"$patch": "replace"}, {"name": "d", "image": "i"}]}});
        // As in Go, `$patch: delete` on a map leaves it empty.
        let want = json!({"metadata": {"labels": {"z": "9"}, "annotations": {}},
            "spec": {"volumes": [{"name": "v2"}], "containers": [{"name": "d", "image": "i"}]}});
        assert_eq!(smp("Pod", &pod, &patch), want);
    }

    #[test]
    fn primitive_lists_union_in_order_and_delete_from_primitive_list() {
        let node = json!({"metadata": {"finalizers": ["a", "b", "c"]}, "spec": {"podCIDRs": ["10.0.0.0/24"]}});
        let patch = json!({"metadata": {"finalizers": ["b", "d"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"podCIDRs": ["fd00::/64"]}});
        let got = smp("Node", &node, &patch);
        assert_eq!(got["metadata"]["finalizers"], json!(["b", "d", "c"]));
        assert_eq!(got["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
    }

    #[test]
    fn set_element_order_orders_the_merged_list() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
            "metadata": {"finalizers": ["x", "y"]}});
        let patch = json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "new"}, {"name": "a"}],
                "containers": [{"name": "new", "image": "n"}]},
            "metadata": {"$setElementOrder/finalizers": ["y", "x"]}});
        let got = smp("Pod", &pod, &patch);
        // "b" is not listed: the server keeps it, placed by its stored position.
        assert_eq!(
            names(&got["spec"]["containers"], "name"),
            ["b", "c", "new", "a"]
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["y", "x"]));
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b"}, {"name": "a"}]}});
        let err = smp_err("Pod", &json!({}), &patch);
        assert!(
            matches!(err, PatchError::BadSetElementOrder { .. }),
            "{err}"
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_keys() {
        let deploy = json!({"spec": {"strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let got = smp("Deployment", &deploy, &patch);
        assert_eq!(got, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        // Volumes take `$retainKeys` per element: switching a volume's source.
        let pod = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"],
            "hostPath": {"path": "/data"}}]}});
        let got = smp("Pod", &pod, &patch);
        assert_eq!(
            got["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/data"}}])
        );
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        let err = smp_err("Deployment", &deploy, &bad);
        assert!(matches!(err, PatchError::BadRetainKeys { .. }), "{err}");
    }
}
