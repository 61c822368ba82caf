//! Field errors, and the exact text Kubernetes prints for them.
//!
//! Clients (kubectl, client-go tests, operators that grep messages) read the `Status` message of a
//! 422, so the body of each error follows apimachinery's `field.Error.ErrorBody`: a label per
//! error type, the bad value rendered the way Go renders it (`%v` for numbers, `%q` for strings,
//! `json.Marshal` for everything else), then `: detail`.

use serde_json::Value;

/// The kind of a field problem; one-to-one with Kubernetes' `metav1.CauseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required value is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value is not one of an enumerated set.
    NotSupported,
    /// The value collides with another that must be unique.
    Duplicate,
    /// The value is well formed but not allowed here.
    Forbidden,
    /// The value is too long.
    TooLong,
    /// A list has too many items.
    TooMany,
}

impl FieldErrorKind {
    /// The `reason`/cause type string Kubernetes puts in a `StatusCause`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }

    /// Whether the body shows the bad value (Go prints none for these types).
    fn shows_value(&self) -> bool {
        !matches!(self, Self::Required | Self::Forbidden | Self::TooLong)
    }
}

/// One field problem, as Kubernetes' `field.Error`: type + field path + bad value + detail.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct FieldError {
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The JSON path of the field, e.g. `spec.ports[0].port`.
    pub field: String,
    /// The offending value; `None` when Kubernetes omits it.
    pub value: Option<Value>,
    /// Human explanation, may be empty.
    pub detail: String,
}

impl FieldError {
    /// The message Kubernetes prints: `<field>: <body>`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// The message without the field path (a `StatusCause.message`).
    pub fn body(&self) -> String {
        let mut s = self.kind.label().to_string();
        if self.kind.shows_value()
            && let Some(v) = &self.value
        {
            s.push_str(": ");
            s.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    pub(crate) fn required(path: &Path, detail: &str) -> Self {
        Self::new(FieldErrorKind::Required, path, None, detail)
    }

    pub(crate) fn invalid(path: &Path, value: impl Into<Value>, detail: &str) -> Self {
        Self::new(FieldErrorKind::Invalid, path, Some(value.into()), detail)
    }

    pub(crate) fn not_supported(path: &Path, value: impl Into<Value>, valid: &[&str]) -> Self {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        let detail = if valid.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            FieldErrorKind::NotSupported,
            path,
            Some(value.into()),
            &detail,
        )
    }

    pub(crate) fn duplicate(path: &Path, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorKind::Duplicate, path, Some(value.into()), "")
    }

    pub(crate) fn forbidden(path: &Path, detail: &str) -> Self {
        Self::new(FieldErrorKind::Forbidden, path, None, detail)
    }

    pub(crate) fn too_long(path: &Path, max: usize) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        Self::new(FieldErrorKind::TooLong, path, None, &detail)
    }

    pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        let detail = format!("must have at most {max} {unit}");
        Self::new(
            FieldErrorKind::TooMany,
            path,
            Some(Value::from(actual)),
            &detail,
        )
    }

    fn new(kind: FieldErrorKind, path: &Path, value: Option<Value>, detail: &str) -> Self {
        Self {
            kind,
            field: path.to_string(),
            value,
            detail: detail.to_string(),
        }
    }
}

/// A field path under construction, printed like apimachinery's `field.Path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn new(root: &str) -> Self {
        Self(root.to_string())
    }

    pub(crate) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self::new(name)
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub(crate) fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k}]", self.0))
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders a bad value as Go's `ErrorBody` does.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Array(_) | Value::Object(_) => {
            let mut out = String::new();
            go_json(v, &mut out);
            out
        }
    }
}

/// Go's `strconv.Quote` (`%q`), close enough for every string an API object can hold.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) > 0xffff {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                } else {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go struct fields in declaration order; an object whose keys all appear here is a rendered Go
/// struct and keeps this order, any other object is a Go map and sorts its keys.
const STRUCT_FIELD_ORDER: &[&str] = &[
    "Name",
    "Protocol",
    "AppProtocol",
    "Port",
    "TargetPort",
    "NodePort",
    "Key",
    "Value",
    "Effect",
    "TimeAdded",
    "Type",
    "RollingUpdate",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
];

/// Go's `json.Marshal` output for a value: compact, HTML-safe escaping.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            let as_struct = keys
                .iter()
                .all(|k| STRUCT_FIELD_ORDER.contains(&k.as_str()));
            if as_struct {
                keys.sort_by_key(|k| STRUCT_FIELD_ORDER.iter().position(|f| f == k));
            } else {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(item, out);
            }
            out.push(']');
        }
        Value::String(s) => go_json_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_follow_go_error_body() {
        let p = Path::new("spec").child("ports").index(0).child("port");
        assert_eq!(
            FieldError::invalid(&p, 70000, "must be between 1 and 65535, inclusive").message(),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let name = Path::new("metadata").child("name");
        assert_eq!(
            FieldError::required(&name, "name or generateName is required").message(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            FieldError::required(&name, "").message(),
            "metadata.name: Required value"
        );
        let t = Path::new("spec").child("type");
        assert_eq!(
            FieldError::not_supported(&t, "Foo", &["ClusterIP", "ExternalName"]).message(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\""
        );
        let a = Path::new("metadata").child("annotations");
        assert_eq!(
            FieldError::too_long(&a, 262144).message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::too_many(&Path::new("endpoints"), 1001, 1000).message(),
            "endpoints: Too many: 1001: must have at most 1000 items"
        );
        assert_eq!(
            FieldError::duplicate(&name, "a").message(),
            "metadata.name: Duplicate value: \"a\""
        );
        assert_eq!(FieldErrorKind::TooMany.reason(), "FieldValueTooMany");
    }

    #[test]
    fn complex_values_render_as_go_json() {
        let p = Path::new("x");
        let labels = json!({"tier": "web", "app": "<a&b>"});
        assert_eq!(
            FieldError::invalid(&p, labels, "d").message(),
            r#"x: Invalid value: {"app":"\u003ca\u0026b\u003e","tier":"web"}: d"#
        );
        let port = json!({"NodePort": 0, "TargetPort": 0, "Port": 80, "AppProtocol": null, "Protocol": "TCP", "Name": ""});
        assert_eq!(
            FieldError::duplicate(&p, port).message(),
            r#"x: Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}"#
        );
        assert_eq!(
            FieldError::invalid(&p, Value::Null, "d").message(),
            "x: Invalid value: null: d"
        );
        assert_eq!(go_quote("a\"b\n\u{1}"), r#""a\"b\n\x01""#);
    }
}
