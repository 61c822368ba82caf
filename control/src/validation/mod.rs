// TEMPORARY placeholder until the validation module lands (overwritten).
use serde_json::Value;
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
}
impl FieldErrorKind {
    pub fn reason(&self) -> &'static str {
        "FieldValueInvalid"
    }
}
impl FieldError {
    pub fn message(&self) -> String {
        String::new()
    }
}
pub fn apply_defaults(_kind: &str, _object: &mut Value) {}
pub fn validate(_kind: &str, _object: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    Vec::new()
}
pub fn invalid_message(kind: &str, name: &str, _errors: &[FieldError]) -> String {
    format!("{kind} {name} is invalid")
}
