//! Label selectors: validated requirements, matching against label sets and objects, the
//! `metav1.LabelSelector` form controllers send, and label key and value validation.
//!
//! The text syntax (`labelSelector=` on list and watch) is parsed in `label_parse`; this file
//! owns what a parsed selector means, so every way of building one goes through
//! [`Requirement::new`] and checks keys and values the same way.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::SelectorError;
use super::label_parse;

/// How a label requirement relates a key to its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelOp {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One validated clause of a label selector (`key op values`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: LabelOp,
    /// Sorted, without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// Validates key, operator arity and values as `labels.NewRequirement` does.
    pub fn new(key: &str, op: LabelOp, mut values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errors = Vec::new();
        let key_errors = label_key_errors(key);
        if !key_errors.is_empty() {
            errors.push(invalid("key".into(), quote(key), key_errors.join("; ")));
        }
        let arity = |detail: &str| invalid("values".into(), list_json(&values), detail.into());
        match op {
            LabelOp::In | LabelOp::NotIn if values.is_empty() => errors.push(arity(
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            LabelOp::Equals | LabelOp::NotEquals if values.len() != 1 => {
                errors.push(arity("exact-match compatibility requires one single value"))
            }
            LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => errors.push(arity(
                "values set must be empty for exists and does not exist",
            )),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                if values.len() != 1 {
                    errors.push(arity(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        let detail = "for 'Gt', 'Lt' operators, the value must be an integer";
                        errors.push(invalid(format!("values[{i}]"), quote(value), detail.into()));
                    }
                }
            }
            _ => {}
        }
        for (i, value) in values.iter().enumerate() {
            let value_errors = label_value_errors(value);
            if !value_errors.is_empty() {
                let path = format!("values[{i}][{key}]");
                errors.push(invalid(path, quote(value), value_errors.join("; ")));
            }
        }
        aggregate(errors)?;
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            op,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn op(&self) -> LabelOp {
        self.op
    }

    /// The values, sorted and without duplicates.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            LabelOp::Equals | LabelOp::In => get(&self.key).is_some_and(has),
            LabelOp::NotEquals | LabelOp::NotIn => !get(&self.key).is_some_and(has),
            LabelOp::Exists => get(&self.key).is_some(),
            LabelOp::DoesNotExist => get(&self.key).is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let Some(Ok(have)) = get(&self.key).map(str::parse::<i64>) else {
                    return false;
                };
                let Some(Ok(want)) = self.values.first().map(|v| v.parse::<i64>()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let one = self.values.first().map_or("", String::as_str);
        match self.op {
            LabelOp::Exists => write!(f, "{key}"),
            LabelOp::DoesNotExist => write!(f, "!{key}"),
            LabelOp::Equals => write!(f, "{key}={one}"),
            LabelOp::NotEquals => write!(f, "{key}!={one}"),
            LabelOp::GreaterThan => write!(f, "{key}>{one}"),
            LabelOp::LessThan => write!(f, "{key}<{one}"),
            LabelOp::In => write!(f, "{key} in ({})", self.values.join(",")),
            LabelOp::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
        }
    }
}

/// A label selector: requirements that must all hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Stably sorted by key.
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: what a null `metav1.LabelSelector` selects.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax; empty or blank text selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Ok(Self::from_requirements(label_parse::requirements(text)?))
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches no object (Kubernetes' `labels.Nothing()`); prints as "".
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Whether this selector matches every object.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Builds a selector from requirements (sorted by key, as Kubernetes does).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(&|key: &str| labels.get(key).map(String::as_str))
    }

    /// Matches an object's `metadata.labels` (absent means no labels; non-string values are ignored).
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.matches_with(&|key: &str| labels?.get(key)?.as_str())
    }

    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_with(get))
    }

    /// From a `metav1.LabelSelector` JSON value; `{}` selects everything, `null` nothing.
    pub fn from_api(selector: &Value) -> Result<Self, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(object) => object,
            _ => return Err(malformed("selector".into(), "must be an object")),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let Some(value) = value.as_str() else {
                        return Err(malformed(format!("matchLabels[{key}]"), "must be a string"));
                    };
                    requirements.push(Requirement::new(key, LabelOp::Equals, vec![value.into()])?);
                }
            }
            Some(_) => return Err(malformed("matchLabels".into(), "must be an object")),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for (i, expression) in expressions.iter().enumerate() {
                    requirements.push(api_expression(i, expression)?);
                }
            }
            Some(_) => return Err(malformed("matchExpressions".into(), "must be a list")),
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Equality on every pair of a plain map (Service `spec.selector`); no validation, as
    /// Kubernetes' `SelectorFromValidatedSet`. An empty map gives everything.
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let requirements = map.iter().map(|(key, value)| Requirement {
            key: key.clone(),
            op: LabelOp::Equals,
            values: vec![value.clone()],
        });
        Self::from_requirements(requirements.collect())
    }
}

fn api_expression(i: usize, expression: &Value) -> Result<Requirement, SelectorError> {
    let path = |field: &str| format!("matchExpressions[{i}]{field}");
    let Some(expression) = expression.as_object() else {
        return Err(malformed(path(""), "must be an object"));
    };
    let text = |field: &str| match expression.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(malformed(path(&format!(".{field}")), "must be a string")),
    };
    let (key, operator) = (text("key")?, text("operator")?);
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed(path(".values"), "must be a list of strings"))?,
        Some(_) => return Err(malformed(path(".values"), "must be a list of strings")),
    };
    let op = match operator {
        "In" => LabelOp::In,
        "NotIn" => LabelOp::NotIn,
        "Exists" => LabelOp::Exists,
        "DoesNotExist" => LabelOp::DoesNotExist,
        other => return Err(SelectorError::UnknownOperator(other.into())),
    };
    Requirement::new(key, op, values)
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

// ---- validation of label keys and values (apimachinery's IsQualifiedName, IsValidLabelValue) ----

const NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// Kubernetes' `RegexError` text, double spaces included.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut text = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text + &format!("regex used for validation is '{format}')")
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots.
fn is_subdomain(s: &str) -> bool {
    let lower = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.split('.').all(|label| {
        let b = label.as_bytes();
        b.first().is_some_and(lower)
            && b.last().is_some_and(lower)
            && b.iter().all(|c| lower(c) || *c == b'-')
    })
}

pub(super) fn label_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > SUBDOMAIN_MAX {
                    errors.push(format!(
                        "prefix part must be no more than {SUBDOMAIN_MAX} bytes"
                    ));
                }
                if !is_subdomain(prefix) {
                    let text = regex_error(SUBDOMAIN_MSG, SUBDOMAIN_FMT, &["example.com"]);
                    errors.push(format!("prefix part {text}"));
                }
            }
            name
        }
        _ => {
            let text = regex_error(NAME_MSG, NAME_FMT, &["MyName", "my.name", "123-abc"]);
            return vec![format!(
                "a valid label key {text} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_MAX {
        errors.push(format!("name part must be no more than {LABEL_MAX} bytes"));
    }
    if !is_name(name) {
        let text = regex_error(NAME_MSG, NAME_FMT, &["MyName", "my.name", "123-abc"]);
        errors.push(format!("name part {text}"));
    }
    errors
}

fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_MAX {
        errors.push(format!("must be no more than {LABEL_MAX} bytes"));
    }
    if !value.is_empty() && !is_name(value) {
        errors.push(regex_error(
            VALUE_MSG,
            VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

pub(super) fn invalid(path: String, value: String, detail: String) -> SelectorError {
    SelectorError::Invalid {
        path,
        value,
        detail,
    }
}

fn malformed(path: String, expected: &'static str) -> SelectorError {
    SelectorError::Malformed { path, expected }
}

pub(super) fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn list_json(values: &[String]) -> String {
    Value::from(values.to_vec()).to_string()
}

/// Kubernetes' aggregate: nothing, the one error, or the distinct ones in brackets.
fn aggregate(mut errors: Vec<SelectorError>) -> Result<(), SelectorError> {
    let mut seen = Vec::new();
    errors.retain(|e| {
        let text = e.to_string();
        let fresh = !seen.contains(&text);
        seen.push(text);
        fresh
    });
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(SelectorError::Several(errors)),
    }
}

#[cfg(test)]
#[path = "label_tests.rs"]
mod tests;
