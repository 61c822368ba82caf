//! Reading Kubernetes objects as `kubectl get -o json` prints them: their conditions.

use serde_json::Value;

/// The object's condition of type `kind` (`status.conditions[]`), if it has one.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Is the object's condition `kind` there and `True`?
pub fn has_condition(object: &Value, kind: &str) -> bool {
    condition(object, kind).is_some_and(|c| c["status"] == "True")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_condition_counts_only_when_true() {
        let node = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"}]}});
        assert!(has_condition(&node, "Ready"));
        assert!(!has_condition(&node, "MemoryPressure"));
        assert!(!has_condition(&node, "DiskPressure"));
        assert_eq!(
            condition(&node, "MemoryPressure").unwrap()["status"],
            "False"
        );
        assert!(condition(&json!({}), "Ready").is_none());
    }
}
