//! The `pod-template-hash`: names a Deployment's ReplicaSet after its Pod template.
//!
//! Kubernetes hashes the template with FNV-1a (32 bit) over a deep printout of the Go struct,
//! mixes in `status.collisionCount`, and renders the decimal number through `SafeEncodeString`
//! (no vowels, no look-alike digits) so the label is a valid name fragment that never spells
//! words. We hash the template's JSON instead (stable: k8s-openapi serialises fields in a fixed
//! order and maps sorted), so our hashes differ from Kubernetes' but have the same shape.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label every ReplicaSet of a Deployment (and its Pods) carries.
pub const LABEL: &str = "pod-template-hash";

/// Kubernetes' `rand.SafeEncodeString` alphabet.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The hash of `template` (without any `pod-template-hash` label) and `collision_count`.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(LABEL);
    }
    let mut bytes = serde_json::to_vec(&template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    safe_encode(&fnv1a(bytes).to_string())
}

fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// Whether two templates are the same apart from their `pod-template-hash` label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(meta) = t.metadata.as_mut()
            && let Some(labels) = meta.labels.as_mut()
        {
            labels.remove(LABEL);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_the_template() {
        let a = template("nginx:1");
        let h = template_hash(&a, None);
        assert_eq!(h, template_hash(&a, None));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_ne!(h, template_hash(&template("nginx:2"), None));
        assert_ne!(h, template_hash(&a, Some(1)));
    }

    #[test]
    fn the_hash_label_itself_is_ignored() {
        let a = template("nginx:1");
        let mut labelled = a.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL.into(), "xyz".into());
        assert_eq!(template_hash(&a, None), template_hash(&labelled, None));
        assert!(equal_ignoring_hash(&a, &labelled));
        assert!(!equal_ignoring_hash(&a, &template("nginx:2")));
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(*b""), 0x811c_9dc5);
        assert_eq!(fnv1a(*b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(*b"foobar"), 0xbf9c_f968);
    }
}
