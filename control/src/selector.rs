//! Label and field selectors, parsed and matched the way the Kubernetes apiserver does it.
//!
//! Clients send `labelSelector` / `fieldSelector` on list and watch, controllers select pods with
//! a `metav1.LabelSelector`, and kube-proxy lists Services with
//! `!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name`. They all expect
//! apimachinery's behaviour (`pkg/labels/selector.go`, `pkg/fields/selector.go`), quirks included:
//!
//! - `k!=v` and `k notin (v)` also match objects that lack `k`;
//! - `k in ()` means `k in ("")`, and `k=` compares with the empty value;
//! - `in` / `notin` are keywords only where an operator goes (`in in (in)` is a valid selector);
//! - field selectors split on unescaped `,`, take the first `!=`, `==` or `=` of each term, trim
//!   nothing, and escape `\`, `,` and `=` in values with a backslash.
//!
//! Requirements are kept in a canonical order (label keys sorted as Kubernetes sorts them, field
//! terms sorted), so equal selectors compare equal and print the same text.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Why a selector was refused; messages follow Kubernetes' wording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// A token where the grammar wants another.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// One requirement of a label selector could not be parsed.
    #[error("unable to parse requirement: {0}")]
    Requirement(Box<SelectorError>),
    /// A key, value or value set that fails validation; `value` is already quoted.
    #[error("{path}: Invalid value: {value}: {detail}")]
    Invalid {
        path: String,
        value: String,
        detail: String,
    },
    /// Several validation failures of one requirement.
    #[error("[{}]", join_errors(.0))]
    Several(Vec<SelectorError>),
    /// A `metav1.LabelSelector` operator other than In, NotIn, Exists and DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    UnknownOperator(String),
    /// A `metav1.LabelSelector` JSON value of the wrong shape.
    #[error("{path}: {expected}")]
    Malformed {
        path: String,
        expected: &'static str,
    },
    /// A field selector term without `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm { selector: String, term: String },
    /// A backslash in a field selector value not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A bare `=` in a field selector value.
    #[error("invalid field selector: unescaped character in value: {0:?}")]
    UnescapedChar(char),
}

fn join_errors(errors: &[SelectorError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    texts.join(", ")
}

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
        let mut parser = Parser {
            tokens: lex(text),
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            let token = parser.peek();
            match token.kind {
                Kind::Ident | Kind::Bang => {
                    let requirement = parser
                        .requirement()
                        .map_err(|e| SelectorError::Requirement(Box::new(e)))?;
                    requirements.push(requirement);
                    let after = parser.next();
                    match after.kind {
                        Kind::End => break,
                        Kind::Comma => {
                            let next = parser.peek();
                            if !matches!(next.kind, Kind::Ident | Kind::Bang) {
                                return Err(next.unexpected("identifier after ','"));
                            }
                        }
                        _ => return Err(after.unexpected("',' or 'end of string'")),
                    }
                }
                Kind::End => break,
                _ => return Err(token.unexpected("!, identifier, or 'end of string'")),
            }
        }
        Ok(Self::from_requirements(requirements))
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

// ---- label selector lexer and parser (the grammar of apimachinery's labels.Parse) ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    End,
    Ident,
    In,
    NotIn,
    OpenPar,
    ClosePar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

impl Token<'_> {
    fn unexpected(self, expected: &'static str) -> SelectorError {
        let found = if self.kind == Kind::End {
            "end of string"
        } else {
            self.text
        };
        SelectorError::Unexpected {
            found: found.into(),
            expected,
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(text: &str) -> Option<Kind> {
    Some(match text {
        "(" => Kind::OpenPar,
        ")" => Kind::ClosePar,
        "," => Kind::Comma,
        "!" => Kind::Bang,
        "=" => Kind::Equals,
        "==" => Kind::DoubleEquals,
        "!=" => Kind::NotEquals,
        ">" => Kind::Greater,
        "<" => Kind::Less,
        _ => return None,
    })
}

/// Splits into tokens; a run of special symbols yields its longest leading operator.
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        let kind = if pos == bytes.len() {
            tokens.push(Token {
                kind: Kind::End,
                text: "",
            });
            return tokens;
        } else if is_special(bytes[pos]) {
            let mut kind = Kind::End;
            let mut end = pos;
            while end < bytes.len() && is_special(bytes[end]) {
                match symbol(&input[pos..=end]) {
                    Some(k) => (kind, end) = (k, end + 1),
                    None => break,
                }
            }
            pos = end;
            kind
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_space(bytes[pos]) {
                pos += 1;
            }
            match &input[start..pos] {
                "in" => Kind::In,
                "notin" => Kind::NotIn,
                _ => Kind::Ident,
            }
        };
        tokens.push(Token {
            kind,
            text: &input[start..pos],
        });
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The next token as a key or value: `in` and `notin` are plain identifiers there.
    fn peek(&self) -> Token<'a> {
        let mut token = self.peek_operator();
        if matches!(token.kind, Kind::In | Kind::NotIn) {
            token.kind = Kind::Ident;
        }
        token
    }

    fn peek_operator(&self) -> Token<'a> {
        // `lex` always ends with End, and End is never consumed past.
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    /// `[!] KEY [op values]`.
    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token.kind == Kind::Bang;
        if negated {
            token = self.next();
        }
        if token.kind != Kind::Ident {
            return Err(token.unexpected("identifier"));
        }
        let key = token.text;
        let key_errors = label_key_errors(key);
        if !key_errors.is_empty() {
            return Err(invalid("key".into(), quote(key), key_errors.join("; ")));
        }
        if negated {
            return Requirement::new(key, LabelOp::DoesNotExist, Vec::new());
        }
        if matches!(self.peek().kind, Kind::End | Kind::Comma) {
            return Requirement::new(key, LabelOp::Exists, Vec::new());
        }
        let token = self.peek_operator();
        self.pos += 1;
        let op = match token.kind {
            Kind::In => LabelOp::In,
            Kind::NotIn => LabelOp::NotIn,
            Kind::Equals | Kind::DoubleEquals => LabelOp::Equals,
            Kind::NotEquals => LabelOp::NotEquals,
            Kind::Greater => LabelOp::GreaterThan,
            Kind::Less => LabelOp::LessThan,
            _ => return Err(token.unexpected("in, notin, =, ==, !=, gt, lt")),
        };
        let mut values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        // Kubernetes validates the value set in sorted order; error paths index into it.
        values.sort();
        values.dedup();
        Requirement::new(key, op, values)
    }

    /// `( [VALUE] {, [VALUE]} )`; empty entries are the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open.kind != Kind::OpenPar {
            return Err(open.unexpected("'('"));
        }
        let mut values = Vec::new();
        match self.peek().kind {
            Kind::Ident | Kind::Comma => {}
            Kind::ClosePar => {
                self.pos += 1;
                return Ok(vec![String::new()]);
            }
            _ => return Err(self.peek().unexpected("',', ')' or identifier")),
        }
        loop {
            let token = self.next();
            match token.kind {
                Kind::Ident => {
                    values.push(token.text.to_owned());
                    let after = self.peek();
                    match after.kind {
                        Kind::Comma => {}
                        Kind::ClosePar => break,
                        _ => return Err(after.unexpected("',' or ')'")),
                    }
                }
                Kind::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek().kind {
                        Kind::ClosePar => {
                            values.push(String::new());
                            break;
                        }
                        Kind::Comma => {
                            self.pos += 1;
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(token.unexpected("',', or identifier")),
            }
        }
        self.pos += 1; // the ')'
        Ok(values)
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing there is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek().kind, Kind::End | Kind::Comma) {
            return Ok(String::new());
        }
        let token = self.next();
        if token.kind != Kind::Ident {
            return Err(token.unexpected("identifier"));
        }
        Ok(token.text.to_owned())
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

fn label_key_errors(key: &str) -> Vec<String> {
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

fn invalid(path: String, value: String, detail: String) -> SelectorError {
    SelectorError::Invalid {
        path,
        value,
        detail,
    }
}

fn malformed(path: String, expected: &'static str) -> SelectorError {
    SelectorError::Malformed { path, expected }
}

fn quote(s: &str) -> String {
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

// ---- field selectors ----

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
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const PREFIX_RULE: &str = r"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    #[test]
    fn label_selectors_parse_to_canonical_text_and_back() {
        let long_name = "n".repeat(63);
        let long_prefix = format!("{}.{}/{long_name}", "a".repeat(126), "b".repeat(126));
        let cases: &[(&str, &str)] = &[
            ("", ""),
            (" \t\r\n", ""),
            ("x", "x"),
            (" a = b ", "a=b"),
            ("app=web", "app=web"),
            ("a==b", "a=b"),
            ("app in (web, api),tier!=db", "app in (api,web),tier!=db"),
            (
                "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
                "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
            ),
            (
                "kubernetes.io/service-name=web",
                "kubernetes.io/service-name=web",
            ),
            ("environment notin (prod)", "environment notin (prod)"),
            ("x=a,a=x", "a=x,x=a"),
            ("x=", "x="),
            ("a==", "a="),
            ("x= ,z= ", "x=,z="),
            ("x in ()", "x in ()"),
            ("x in (,)", "x in ()"),
            ("x in (a,)", "x in (,a)"),
            ("x in (b,a,b)", "x in (a,b)"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("x\tin\n(a)", "x in (a)"),
            ("x in(a),y notin(b)", "x in (a),y notin (b)"),
            ("x>1,z<5", "x>1,z<5"),
            ("x > 007", "x>007"),
            ("in in (in, notin)", "in in (in,notin)"),
            ("notin=in", "notin=in"),
            ("in", "in"),
            ("!in", "!in"),
            ("Example_1.x-y", "Example_1.x-y"),
            (&long_name, &long_name),
            (&long_prefix, &long_prefix),
        ];
        for (input, want) in cases {
            let parsed = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parsed.to_string(), *want, "{input:?}");
            let again = LabelSelector::parse(want).unwrap_or_else(|e| panic!("{want:?}: {e}"));
            assert_eq!(again, parsed, "round trip of {input:?}");
            assert_eq!(parsed.is_everything(), want.is_empty(), "{input:?}");
        }
    }

    #[test]
    fn label_selectors_match_as_kubernetes() {
        let kube_proxy =
            "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Labels, bool)] = &[
            ("", &[], true),
            ("", &[("x", "y")], true),
            ("app=web", &[("app", "web")], true),
            ("app=web", &[("app", "api")], false),
            ("app=web", &[], false),
            ("x!=y", &[], true),
            ("x!=y", &[("x", "y")], false),
            ("x!=y", &[("x", "z")], true),
            ("x in (a,b)", &[("x", "b")], true),
            ("x in (a,b)", &[("x", "c")], false),
            ("x in (a,b)", &[], false),
            ("environment notin (prod)", &[], true),
            (
                "environment notin (prod)",
                &[("environment", "prod")],
                false,
            ),
            ("environment notin (prod)", &[("environment", "dev")], true),
            ("x", &[("x", "")], true),
            ("x", &[("y", "x")], false),
            ("!x", &[], true),
            ("!x", &[("x", "")], false),
            ("x in ()", &[("x", "")], true),
            ("x in ()", &[("x", "a")], false),
            ("x in ()", &[], false),
            ("x=", &[("x", "")], true),
            ("x=", &[], false),
            ("x>1", &[("x", "2")], true),
            ("x>1", &[("x", "1")], false),
            ("x>1", &[("x", "02")], true),
            ("x>1", &[("x", "two")], false),
            ("x>1", &[], false),
            ("x<1", &[("x", "0")], true),
            ("x<1", &[("x", "-5")], true),
            ("x<1", &[("x", "1")], false),
            (kube_proxy, &[], true),
            (kube_proxy, &[("app", "web")], true),
            (kube_proxy, &[("service.kubernetes.io/headless", "")], false),
            (
                kube_proxy,
                &[("service.kubernetes.io/service-proxy-name", "x")],
                false,
            ),
            (
                "app in (web, api),tier!=db",
                &[("app", "api"), ("tier", "web")],
                true,
            ),
            ("app in (web, api),tier!=db", &[("app", "web")], true),
            (
                "app in (web, api),tier!=db",
                &[("app", "web"), ("tier", "db")],
                false,
            ),
            ("app in (web, api),tier!=db", &[("tier", "web")], false),
            (
                "kubernetes.io/service-name=web",
                &[("kubernetes.io/service-name", "web")],
                true,
            ),
            (
                "kubernetes.io/service-name=web",
                &[("service-name", "web")],
                false,
            ),
        ];
        for (selector, set, want) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(
                parsed.matches(&labels(set)),
                *want,
                "{selector:?} on {set:?}"
            );
            let object = json!({"metadata": {"name": "o", "labels": labels(set)}});
            assert_eq!(
                parsed.matches_object(&object),
                *want,
                "{selector:?} on object {set:?}"
            );
        }
    }

    #[test]
    fn objects_without_labels_have_none() {
        let exists = LabelSelector::parse("app").unwrap();
        let absent = LabelSelector::parse("!app").unwrap();
        for object in [
            json!({}),
            json!({"metadata": {}}),
            json!({"metadata": {"labels": null}}),
        ] {
            assert!(!exists.matches_object(&object), "{object}");
            assert!(absent.matches_object(&object), "{object}");
        }
        let numeric = json!({"metadata": {"labels": {"app": 3}}});
        assert!(absent.matches_object(&numeric));
    }

    #[test]
    fn bad_label_selectors_say_what_is_wrong() {
        let long = "k".repeat(64);
        let long_value = format!("a={}", "v".repeat(64));
        let long_prefix = format!("{}/x", "a".repeat(254));
        let cases: Vec<(&str, String)> = vec![
            ("a in (b", "unable to parse requirement: found 'end of string', expected: ',' or ')'".into()),
            ("=b", "found '=', expected: !, identifier, or 'end of string'".into()),
            ("a=b=c", "found '=', expected: ',' or 'end of string'".into()),
            ("x==a==b", "found '==', expected: ',' or 'end of string'".into()),
            ("!x=a", "found '=', expected: ',' or 'end of string'".into()),
            ("in (x)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt".into()),
            ("a!", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt".into()),
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt".into()),
            ("a,", "found 'end of string', expected: identifier after ','".into()),
            ("a,,b", "found ',', expected: identifier after ','".into()),
            (",a", "found ',', expected: !, identifier, or 'end of string'".into()),
            ("!", "unable to parse requirement: found 'end of string', expected: identifier".into()),
            ("!!a", "unable to parse requirement: found '!', expected: identifier".into()),
            ("a in b", "unable to parse requirement: found 'b', expected: '('".into()),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier".into()),
            ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'".into()),
            ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier".into()),
            ("a=(b)", "unable to parse requirement: found '(', expected: identifier".into()),
            (&long, format!("unable to parse requirement: key: Invalid value: \"{long}\": name part must be no more than 63 bytes")),
            ("a/", format!("unable to parse requirement: key: Invalid value: \"a/\": name part must be non-empty; name part {NAME_RULE}")),
            ("/a", "unable to parse requirement: key: Invalid value: \"/a\": prefix part must be non-empty".into()),
            ("Example.com/a", format!("unable to parse requirement: key: Invalid value: \"Example.com/a\": prefix part {PREFIX_RULE}")),
            ("a/b/c", format!("unable to parse requirement: key: Invalid value: \"a/b/c\": a valid label key {NAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")),
            ("-a", format!("unable to parse requirement: key: Invalid value: \"-a\": name part {NAME_RULE}")),
            ("app=-web", format!("unable to parse requirement: values[0][app]: Invalid value: \"-web\": {VALUE_RULE}")),
            ("x=a||y=b", format!("unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {VALUE_RULE}")),
            ("x in (ok,b_)", format!("unable to parse requirement: values[0][x]: Invalid value: \"b_\": {VALUE_RULE}")),
            ("x<a", "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
            ("x>", "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
            ("x>-1", format!("unable to parse requirement: values[0][x]: Invalid value: \"-1\": {VALUE_RULE}")),
            ("x>1-", format!("unable to parse requirement: [values[0]: Invalid value: \"1-\": for 'Gt', 'Lt' operators, the value must be an integer, values[0][x]: Invalid value: \"1-\": {VALUE_RULE}]")),
            (
                &long_prefix,
                format!("unable to parse requirement: key: Invalid value: \"{long_prefix}\": prefix part must be no more than 253 bytes"),
            ),
            (
                &long_value,
                format!("unable to parse requirement: values[0][a]: Invalid value: \"{}\": must be no more than 63 bytes", "v".repeat(64)),
            ),
        ];
        for (input, want) in &cases {
            let err = LabelSelector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), *want, "{input:?}");
        }
    }

    #[test]
    fn api_selectors_convert_like_label_selector_as_selector() {
        let cases = [
            (json!({}), Some(""), true),
            (
                json!({"matchLabels": {}, "matchExpressions": []}),
                Some(""),
                true,
            ),
            (json!({"matchLabels": null}), Some(""), true),
            (
                json!({"matchLabels": {"app": "web"}}),
                Some("app=web"),
                false,
            ),
            (
                json!({"matchLabels": {"tier": "db", "app": "web"},
                       "matchExpressions": [
                           {"key": "env", "operator": "NotIn", "values": ["prod", "dev", "prod"]},
                           {"key": "app", "operator": "In", "values": ["web"]},
                           {"key": "x", "operator": "Exists"},
                           {"key": "y", "operator": "DoesNotExist", "values": null}]}),
                Some("app=web,app in (web),env notin (dev,prod),tier=db,x,!y"),
                false,
            ),
        ];
        for (api, want, everything) in cases {
            let selector = LabelSelector::from_api(&api).unwrap();
            assert_eq!(selector.to_string(), want.unwrap(), "{api}");
            assert_eq!(selector.is_everything(), everything, "{api}");
            assert_eq!(
                LabelSelector::parse(want.unwrap()).unwrap(),
                selector,
                "{api}"
            );
        }
        let selector = LabelSelector::from_api(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}))
        .unwrap();
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[("tier", "fe")])));
    }

    #[test]
    fn a_null_api_selector_selects_nothing() {
        let nothing = LabelSelector::from_api(&Value::Null).unwrap();
        assert_eq!(nothing, LabelSelector::nothing());
        assert!(!nothing.is_everything());
        assert!(!nothing.matches(&labels(&[])));
        assert!(!nothing.matches_object(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert!(LabelSelector::everything().matches(&labels(&[])));
    }

    #[test]
    fn bad_api_selectors_are_refused() {
        let cases = [
            (json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}),
             "\"Equals\" is not a valid label selector operator".to_string()),
            (json!({"matchExpressions": [{"key": "a", "values": ["b"]}]}),
             "\"\" is not a valid label selector operator".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
             "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}),
             "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]}),
             "values: Invalid value: [\"b\"]: values set must be empty for exists and does not exist".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "not ok"]}]}),
             format!("values[1][a]: Invalid value: \"not ok\": {VALUE_RULE}")),
            (json!({"matchLabels": {"app": "bad value"}}),
             format!("values[0][app]: Invalid value: \"bad value\": {VALUE_RULE}")),
            (json!({"matchExpressions": [{"operator": "Exists"}]}),
             format!("key: Invalid value: \"\": name part must be non-empty; name part {NAME_RULE}")),
            (json!({"matchExpressions": [{"key": "-a", "operator": "In", "values": ["-b"]}]}),
             format!("[key: Invalid value: \"-a\": name part {NAME_RULE}, values[0][-a]: Invalid value: \"-b\": {VALUE_RULE}]")),
            (json!("app=web"), "selector: must be an object".to_string()),
            (json!({"matchLabels": ["app"]}), "matchLabels: must be an object".to_string()),
            (json!({"matchLabels": {"app": 1}}), "matchLabels[app]: must be a string".to_string()),
            (json!({"matchExpressions": {}}), "matchExpressions: must be a list".to_string()),
            (json!({"matchExpressions": ["a"]}), "matchExpressions[0]: must be an object".to_string()),
            (json!({"matchExpressions": [{"key": 1}]}), "matchExpressions[0].key: must be a string".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
             "matchExpressions[0].values: must be a list of strings".to_string()),
        ];
        for (api, want) in &cases {
            let err = LabelSelector::from_api(api).expect_err(&api.to_string());
            assert_eq!(err.to_string(), *want, "{api}");
        }
    }

    #[test]
    fn service_selector_maps_select_by_equality() {
        assert!(LabelSelector::from_map(&BTreeMap::new()).is_everything());
        let selector = LabelSelector::from_map(&labels(&[("tier", "fe"), ("app", "web")]));
        assert_eq!(selector.to_string(), "app=web,tier=fe");
        assert_eq!(selector, LabelSelector::parse("tier=fe,app==web").unwrap());
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn requirements_are_exposed_in_key_order() {
        let selector = LabelSelector::parse("tier notin (db),app in (web,api)").unwrap();
        let seen: Vec<_> = selector
            .requirements()
            .iter()
            .map(|r| (r.key(), r.op(), r.values().to_vec()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "app",
                    LabelOp::In,
                    vec!["api".to_string(), "web".to_string()]
                ),
                ("tier", LabelOp::NotIn, vec!["db".to_string()]),
            ]
        );
        let built = LabelSelector::from_requirements(vec![
            Requirement::new("b", LabelOp::GreaterThan, vec!["2".into()]).unwrap(),
            Requirement::new("a", LabelOp::Exists, vec![]).unwrap(),
        ]);
        assert_eq!(built.to_string(), "a,b>2");
        let err = Requirement::new("a", LabelOp::Equals, vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "values: Invalid value: []: exact-match compatibility requires one single value"
        );
        let err = Requirement::new("a", LabelOp::LessThan, vec!["1".into(), "2".into()]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "values: Invalid value: [\"1\",\"2\"]: for 'Gt', 'Lt' operators, exactly one value is required"
        );
    }

    #[test]
    fn field_selectors_parse_to_canonical_text_and_back() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("metadata.name=web-1", "metadata.name=web-1"),
            ("spec.nodeName==node1", "spec.nodeName=node1"),
            (
                "involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=abc,involvedObject.kind=Service",
                "involvedObject.kind=Service,involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=abc",
            ),
            (
                "status.phase!=Succeeded,status.phase!=Failed",
                "status.phase!=Failed,status.phase!=Succeeded",
            ),
            ("a=b,,c=d,", "a=b,c=d"),
            ("a=", "a="),
            (" a = b ", " a = b "),
            (r"a=b\,c", r"a=b\,c"),
            (r"a=x\=y\\z", r"a=x\=y\\z"),
            (r"a\,b=c", r"a\,b=c"),
            ("a!b=c", "a!b=c"),
            ("=b", "=b"),
            ("a=ü", "a=ü"),
        ];
        for (input, want) in cases {
            let parsed = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parsed.to_string(), *want, "{input:?}");
            assert_eq!(
                FieldSelector::parse(want).unwrap(),
                parsed,
                "round trip of {input:?}"
            );
            assert_eq!(parsed.is_everything(), want.is_empty(), "{input:?}");
        }
        let parsed = FieldSelector::parse(r"a=x\=y\\z\,").unwrap();
        assert_eq!(parsed.exact("a"), Some(r"x=y\z,"));
        let parsed = FieldSelector::parse(" a = b ").unwrap();
        assert_eq!(parsed.fields().collect::<Vec<_>>(), [" a "]);
        assert_eq!(parsed.exact(" a "), Some(" b "));
    }

    #[test]
    fn bad_field_selectors_say_what_is_wrong() {
        let cases = [
            ("a", "invalid selector: 'a'; can't understand 'a'"),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            ("a!b", "invalid selector: 'a!b'; can't understand 'a!b'"),
            (
                "x=b=c,b,a",
                "invalid selector: 'x=b=c,b,a'; can't understand 'a'",
            ),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: '='",
            ),
            (
                "a===b",
                "invalid field selector: unescaped character in value: '='",
            ),
            (
                r"a=b\x",
                r"invalid field selector: invalid escape sequence: \x",
            ),
            (
                r"a=b\",
                r"invalid field selector: invalid escape sequence: \",
            ),
        ];
        for (input, want) in cases {
            let err = FieldSelector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn field_selectors_match_fields_by_path() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node1", "hostNetwork": true, "priority": 3},
            "status": {"phase": "Running"}
        });
        let pending = json!({"metadata": {"name": "web-2"}, "status": {"phase": "Pending"}});
        let failed = json!({"metadata": {"name": "web-3"}, "status": {"phase": "Failed"}});
        let event = json!({"involvedObject": {"name": "web", "namespace": "default", "uid": "abc", "kind": "Service"}});
        let cases: &[(&str, &Value, bool)] = &[
            ("", &pod, true),
            ("metadata.name=web-1", &pod, true),
            ("metadata.name=web-1", &pending, false),
            ("spec.nodeName=node1", &pod, true),
            ("spec.nodeName=node1", &pending, false),
            ("spec.nodeName=", &pending, true),
            ("spec.nodeName!=", &pending, false),
            ("spec.nodeName!=", &pod, true),
            ("status.phase!=Succeeded,status.phase!=Failed", &pod, true),
            (
                "status.phase!=Succeeded,status.phase!=Failed",
                &failed,
                false,
            ),
            ("spec.hostNetwork=true", &pod, true),
            ("spec.priority=3", &pod, true),
            ("spec.priority=03", &pod, false),
            ("metadata.name.first=", &pod, true),
            ("metadata=", &pod, false),
            ("metadata.namespace=default,metadata.name=web-1", &pod, true),
            (
                "metadata.namespace=default,metadata.name=web-2",
                &pod,
                false,
            ),
            (
                "involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=abc,involvedObject.kind=Service",
                &event,
                true,
            ),
            (
                "involvedObject.name=web,involvedObject.kind=Pod",
                &event,
                false,
            ),
        ];
        for (selector, object, want) in cases {
            let parsed = FieldSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(object), *want, "{selector:?} on {object}");
        }
    }

    #[test]
    fn exact_names_the_value_an_equality_asks_for() {
        let selector =
            FieldSelector::parse("metadata.namespace=default,metadata.name==web-1").unwrap();
        assert_eq!(selector.exact("metadata.name"), Some("web-1"));
        assert_eq!(selector.exact("metadata.namespace"), Some("default"));
        assert_eq!(selector.exact("spec.nodeName"), None);
        assert_eq!(
            selector.fields().collect::<Vec<_>>(),
            ["metadata.name", "metadata.namespace"]
        );
        let negative = FieldSelector::parse("metadata.name!=web-1").unwrap();
        assert_eq!(negative.exact("metadata.name"), None);
        assert_eq!(FieldSelector::everything().exact("metadata.name"), None);
        assert!(FieldSelector::everything().matches(&json!({})));
    }
}
