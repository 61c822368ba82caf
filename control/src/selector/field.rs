//! Field selectors (`fieldSelector=` on list and watch): `field=value` / `field!=value` terms
//! matched against an object's fields by dotted path, with apimachinery's splitting and
//! backslash escaping. The apiserver decides which fields a kind supports; this file only
//! parses, prints and matches.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use super::SelectorError;

/// How a field requirement compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldRequirement {
    field: String,
    op: FieldOp,
    value: String,
}

/// A field selector: terms that must all hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// Sorted by field, operator, value.
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax; empty text selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(text);
        // Kubernetes reports the first bad term in sorted order.
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, op, raw)) = split_term(term) else {
                return Err(SelectorError::FieldTerm {
                    selector: text.into(),
                    term: term.into(),
                });
            };
            requirements.push(FieldRequirement {
                field: field.into(),
                op,
                value: unescape(raw)?,
            });
        }
        requirements.sort();
        Ok(Self { requirements })
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selector matches every object.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The field paths named, so the caller can refuse those it does not support.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether every term holds; a field is looked up by dots, missing is "", and non-string
    /// scalars compare by their JSON text (`true`, `3`).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let equal = field_text(object, &r.field) == r.value;
            equal == (r.op == FieldOp::Equals)
        })
    }

    /// The value a `field=value` term asks for, if there is one (Kubernetes' RequiresExactMatch).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            let op = if r.op == FieldOp::Equals { "=" } else { "!=" };
            let sep = if i > 0 { "," } else { "" };
            write!(f, "{sep}{}{op}{}", r.field, escape(&r.value))?;
        }
        Ok(())
    }
}

fn field_text<'a>(object: &'a Value, path: &str) -> Cow<'a, str> {
    match path.split('.').try_fold(object, |v, part| v.get(part)) {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    }
}

/// Splits on commas not escaped by a backslash (escapes stay in the terms).
fn split_terms(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&text[start..i]);
            start = i + 1;
        }
    }
    terms.push(&text[start..]);
    terms
}

/// Splits at the first `!=`, `==` or `=` (tried in that order at each position).
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ]
        .into_iter()
        .find(|(op, _)| rest.starts_with(op))
        .map(|(op, kind)| (&term[..i], kind, &rest[op.len()..]))
    })
}

fn unescape(raw: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        match (escaped, c) {
            (true, '\\' | ',' | '=') => {
                value.push(c);
                escaped = false;
            }
            (true, _) => return Err(SelectorError::InvalidEscape(format!("\\{c}"))),
            (false, '\\') => escaped = true,
            (false, ',' | '=') => return Err(SelectorError::UnescapedChar(c)),
            (false, _) => value.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscape("\\".into()));
    }
    Ok(value)
}

fn escape(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            text.push('\\');
        }
        text.push(c);
    }
    text
}

#[cfg(test)]
#[path = "field_tests.rs"]
mod tests;
