//! Label selector tests: parsing to canonical text, matching as Kubernetes matches, the
//! `metav1.LabelSelector` form, and the exact error texts clients see.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

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
    let kube_proxy = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";
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
