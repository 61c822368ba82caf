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
//!
//! Layout: `label` holds label selectors (requirements, matching, `metav1.LabelSelector`
//! conversion, key and value validation) and `label_parse` their text grammar; `field` holds
//! field selectors. [`SelectorError`] is shared by both, and everything public is re-exported
//! here, so callers name `crate::selector::LabelSelector` and never the file it lives in.

mod field;
mod label;
mod label_parse;

pub use field::{FieldOp, FieldRequirement, FieldSelector};
pub use label::{LabelOp, LabelSelector, Requirement};

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
