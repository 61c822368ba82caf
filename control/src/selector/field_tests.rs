//! Field selector tests: parsing and escaping, the exact error texts, and matching by path.

use serde_json::{Value, json};

use super::*;

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
    let selector = FieldSelector::parse("metadata.namespace=default,metadata.name==web-1").unwrap();
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
