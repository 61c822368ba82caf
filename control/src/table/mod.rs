//! Server-side printing: the `meta.k8s.io/v1` `Table` behind `kubectl get`.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
//! columns come back; it has no printers of its own for built-in kinds. So the columns users know
//! (a Pod's READY, STATUS, RESTARTS; a Service's EXTERNAL-IP; a Node's ROLES) are computed here,
//! following kubernetes `pkg/printers/internalversion/printers.go` rule for rule.
//!
//! Like the real apiserver, every row carries the `-o wide` cells too: columns with priority 1
//! are hidden by kubectl, not by the server. That is also why a LoadBalancer's ingress list is
//! never shortened to 16 characters here. Objects are the stored JSON with API defaults applied;
//! where a default may be missing (Service `type`, port `protocol`, `replicas`) the API default
//! is assumed. Column descriptions are the API's field documentation, as Kubernetes sends them.
//! Kinds without a printer of their own use [`DEFAULT`], the apiserver's default table: NAME and
//! CREATED AT. Each resource's entry in [`crate::resources`] names its printer.

mod apps;
mod cluster;
mod network;
mod pod;
mod time;

pub use apps::{DEPLOYMENT, REPLICA_SET};
pub use cluster::{EVENT, LEASE, NAMESPACE, NODE};
pub use network::{ENDPOINT_SLICE, ENDPOINTS, SERVICE};
pub use pod::POD;

use serde_json::{Map, Value, json};

pub use time::human_duration;

/// The `includeObject` query parameter: what each row's `object` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No `object` field.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query value; absent or empty means `Metadata`, as in Kubernetes.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.unwrap_or("") {
            "None" => Ok(Self::None),
            "Metadata" | "" => Ok(Self::Metadata),
            "Object" => Ok(Self::Object),
            other => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// A `Table` of `objects` printed by `printer` (their kind's); `now` is seconds since the Unix epoch (for AGE) and
/// `list_meta` (resourceVersion, continue) becomes the Table's metadata. A single-object GET
/// passes one object.
pub fn to_table(
    printer: &Printer,
    objects: &[Value],
    include: IncludeObject,
    now: i64,
    list_meta: Value,
) -> Value {
    let columns: Vec<Value> = printer.columns.iter().map(|c| c.to_json()).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| (printer.print)(obj, now).into_json(obj, include))
        .collect();
    let metadata = match list_meta {
        Value::Object(m) => Value::Object(m),
        _ => Value::Object(Map::new()),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The columns and the row function of one kind.
#[derive(Debug)]
pub struct Printer {
    columns: &'static [Column],
    print: fn(&Value, i64) -> Row,
}

/// One `TableColumnDefinition`.
#[derive(Clone, Copy, Debug)]
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

impl Column {
    const NAME: Column = Column {
        format: "name",
        ..Column::string("Name", NAME_DOC)
    };
    const AGE: Column = Column::string("Age", CREATION_TIMESTAMP_DOC);

    const fn string(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            kind: "string",
            format: "",
            description,
            priority: 0,
        }
    }

    const fn integer(name: &'static str, description: &'static str) -> Self {
        Column {
            kind: "integer",
            ..Column::string(name, description)
        }
    }

    /// Shown only with `-o wide`.
    const fn wide(self) -> Self {
        Column {
            priority: 1,
            ..self
        }
    }

    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// One row's cells, plus row conditions (a finished Pod is marked `Completed`).
#[derive(Debug)]
struct Row {
    cells: Vec<Value>,
    conditions: Option<Value>,
}

impl Row {
    fn new(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: None,
        }
    }

    fn into_json(self, obj: &Value, include: IncludeObject) -> Value {
        let mut row = Map::new();
        row.insert("cells".into(), Value::Array(self.cells));
        if let Some(conditions) = self.conditions {
            row.insert("conditions".into(), conditions);
        }
        let object = match include {
            IncludeObject::None => None,
            IncludeObject::Metadata => Some(json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })),
            IncludeObject::Object => Some(obj.clone()),
        };
        if let Some(object) = object {
            row.insert("object".into(), object);
        }
        Value::Object(row)
    }
}

/// The apiserver's default table for kinds without a printer.
pub static DEFAULT: Printer = Printer {
    columns: &[
        Column::NAME,
        Column {
            kind: "date",
            ..Column::string("Created At", CREATION_TIMESTAMP_DOC)
        },
    ],
    print: print_default,
};

fn print_default(obj: &Value, _now: i64) -> Row {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(time::parse_rfc3339)
        .unwrap_or_else(time::go_zero_time);
    Row::new(vec![name(obj).into(), time::format_rfc3339(created).into()])
}

// Accessors over stored JSON: a missing or null field reads as Go's zero value.

/// The string at `pointer`, or "".
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `pointer`, or 0.
fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at `pointer`, or false.
fn flag(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `pointer`, or an empty slice.
fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The non-null value at `pointer` (a Go pointer field that is set).
fn present<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

fn name(obj: &Value) -> &str {
    text(obj, "/metadata/name")
}

/// The AGE cell.
fn age(obj: &Value, now: i64) -> Value {
    time::age_at(obj, "/metadata/creationTimestamp", now).into()
}

/// `layoutContainerCells`: container names and images, comma-joined.
fn containers_and_images(pod_spec: &Value) -> (String, String) {
    let containers = list(pod_spec, "/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `labels.FormatLabels`: sorted "k=v" pairs, or "<none>".
fn format_labels(labels: Option<&Value>) -> String {
    let mut pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".to_owned()
    } else {
        pairs.join(",")
    }
}

/// Up to three items, then " + N more...": Kubernetes' `listWithMoreString`.
fn list_with_more(items: &[String], empty: &str) -> String {
    const MAX: usize = 3;
    if items.len() > MAX {
        format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX)
    } else if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22T02:03:04Z.
    pub(super) const NOW: i64 = 1_795_312_984;

    /// The printer of a served kind; any other kind gets the default table.
    pub(super) fn printer(kind: &str) -> &'static Printer {
        crate::resources::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .map_or(&DEFAULT, |r| r.strategy.table)
    }

    /// The first row's cells of a one-object table.
    pub(super) fn cells(kind: &str, obj: Value) -> Vec<Value> {
        let table = to_table(printer(kind), &[obj], IncludeObject::None, NOW, Value::Null);
        table["rows"][0]["cells"].as_array().unwrap().clone()
    }

    /// (name, type, priority) of each column of `kind`.
    pub(super) fn columns(kind: &str) -> Vec<(String, String, u64)> {
        let table = to_table(printer(kind), &[], IncludeObject::None, NOW, Value::Null);
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["type"].as_str().unwrap().to_owned(),
                    c["priority"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1",
                         "resourceVersion": "42", "labels": {"app": "web"},
                         "creationTimestamp": "2026-11-22T01:58:04Z"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Pending"}
        })
    }

    #[test]
    fn include_object_parses_kubernetes_values() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Metadata")),
            Ok(IncludeObject::Metadata)
        );
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::parse(Some("object")),
            Err(r#"unrecognized includeObject value: "object""#.to_owned())
        );
    }

    #[test]
    fn table_shape_with_metadata_rows() {
        let list_meta = json!({"resourceVersion": "77", "continue": "abc"});
        let table = to_table(&POD, &[pod()], IncludeObject::Metadata, NOW, list_meta);
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            table["metadata"],
            json!({"resourceVersion": "77", "continue": "abc"})
        );
        assert_eq!(
            table["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": NAME_DOC, "priority": 0})
        );
        let row = &table["rows"][0];
        assert_eq!(row["cells"][0], "web-1");
        assert_eq!(
            row["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": pod()["metadata"].clone()})
        );
        assert!(row.get("conditions").is_none());
    }

    #[test]
    fn include_object_none_and_object() {
        let none = to_table(&POD, &[pod()], IncludeObject::None, NOW, Value::Null);
        assert_eq!(none["metadata"], json!({}));
        assert!(none["rows"][0].get("object").is_none());
        let full = to_table(&POD, &[pod()], IncludeObject::Object, NOW, json!({}));
        assert_eq!(full["rows"][0]["object"], pod());
    }

    #[test]
    fn empty_list_still_has_columns_and_rows() {
        let table = to_table(&SERVICE, &[], IncludeObject::Metadata, NOW, json!({}));
        assert_eq!(table["rows"], json!([]));
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn unknown_kinds_get_the_default_table() {
        assert_eq!(
            columns("ConfigMap"),
            [
                ("Name".into(), "string".into(), 0),
                ("Created At".into(), "date".into(), 0)
            ]
        );
        let cm =
            json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-11-22T03:03:04+01:00"}});
        assert_eq!(
            cells("ConfigMap", cm),
            [json!("cfg"), json!("2026-11-22T02:03:04Z")]
        );
        let undated = json!({"metadata": {"name": "x"}});
        assert_eq!(
            cells("Widget", undated),
            [json!("x"), json!("0001-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn helpers_format_like_kubernetes() {
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(
            format_labels(Some(&json!({"tier": "web", "app": "shop"}))),
            "app=shop,tier=web"
        );
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(list_with_more(&items, "<unset>"), "1,2,3 + 2 more...");
        assert_eq!(list_with_more(&items[..3], "<unset>"), "1,2,3");
        assert_eq!(list_with_more(&[], "<unset>"), "<unset>");
    }
}
