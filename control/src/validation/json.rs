//! Small accessors over `serde_json::Value` for validation and defaulting.
//!
//! Objects arrive as wire JSON; a missing field, `null` and the Go zero value mean the same thing
//! to Kubernetes for non-pointer fields, so readers fold them together.

use serde_json::{Map, Value};

/// The member `key` of an object, treating `null` as absent.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A string member, `""` when absent or not a string.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An integer member, `None` when absent.
pub(crate) fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A boolean member, `false` when absent.
pub(crate) fn bool_of(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// An array member, empty when absent.
pub(crate) fn arr_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A `map[string]string` member as sorted pairs (non-string values read as `""`).
pub(crate) fn string_map<'a>(v: &'a Value, key: &str) -> Vec<(&'a str, &'a str)> {
    let mut pairs: Vec<(&str, &str)> = v
        .get(key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, x)| (k.as_str(), x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

/// A string slice member.
pub(crate) fn strings_of<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    arr_of(v, key)
        .iter()
        .map(|x| x.as_str().unwrap_or(""))
        .collect()
}

/// An `IntOrString`: either a JSON number or a JSON string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    pub(crate) fn read(v: Option<&Value>) -> Self {
        match v {
            Some(Value::String(s)) => Self::Str(s.clone()),
            Some(x) => Self::Int(x.as_i64().unwrap_or(0)),
            None => Self::Int(0),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Self::Int(i) => Value::from(*i),
            Self::Str(s) => Value::from(s.as_str()),
        }
    }

    /// Zero as Go's `intstr` sees it: `0` or `""`.
    pub(crate) fn is_zero(&self) -> bool {
        matches!(self, Self::Int(0)) || matches!(self, Self::Str(s) if s.is_empty())
    }
}

/// The object member `key`, created as `{}` when absent or `null`. `v` must be an object.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let map = as_map(v);
    let slot = map.entry(key.to_string()).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot
}

fn as_map(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `key` when it is absent or `null` (Go pointer fields).
pub(crate) fn default_ptr(v: &mut Value, key: &str, default: Value) {
    if get(v, key).is_none() {
        as_map(v).insert(key.to_string(), default);
    }
}

/// Sets `key` when it holds the Go zero value: absent, `null`, `""` or `0` (value fields).
pub(crate) fn default_zero(v: &mut Value, key: &str, default: Value) {
    let zero = match v.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    };
    if zero {
        as_map(v).insert(key.to_string(), default);
    }
}

/// Calls `f` on every object in the array member `key`.
pub(crate) fn each_mut(v: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = v.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().filter(|x| x.is_object()).for_each(&mut f);
    }
}

/// The object member `key` mutably, if it is an object.
pub(crate) fn child_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.get_mut(key).filter(|x| x.is_object())
}
