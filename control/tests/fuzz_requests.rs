//! A fuzz run of the request decoder: thousands of random requests — paths, methods, query
//! strings, content types, bodies mutated from valid objects and plain noise — sent straight to
//! the handler. None may panic, and every failure must be a proper `Status` object.

mod common;

use std::sync::Arc;

use axum::body::Body;
use serde_json::{Value, json};
use skiff_common::rng::SmallRng;
use skiff_control::server;

const PATHS: &[&str] = &[
    "/api/v1/namespaces/default/services",
    "/api/v1/namespaces/default/services/web",
    "/api/v1/namespaces/default/services/web/status",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/p/binding",
    "/api/v1/namespaces/default/pods/p/status",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/apps/v1/namespaces/default/deployments/web",
    "/apis/apps/v1/namespaces/default/deployments/web/scale",
    "/api/v1/namespaces",
    "/api/v1/namespaces/demo",
    "/api/v1/nodes/n1",
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
    "/api/v1/namespaces/default/events",
    "/api/v1/%ZZ/../..//x",
    "/apis/apps/v1/namespaces//deployments",
    "/openapi/v3/apis/apps/v1",
    "/api",
    "/apis",
];
const METHODS: &[&str] = &[
    "GET", "GET", "POST", "POST", "POST", "PUT", "PUT", "PATCH", "PATCH", "PATCH", "DELETE",
    "OPTIONS",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "application/vnd.kubernetes.protobuf",
    "text/plain",
    "",
];
const QUERIES: &[&str] = &[
    "",
    "labelSelector=app%3Dweb",
    "labelSelector=a+in+(b",
    "fieldSelector=spec.nodeName%3Dn1",
    "fieldSelector=bogus%3D1",
    "limit=2",
    "limit=-1&continue=eyJydiI6MX0",
    "continue=%%%",
    "resourceVersion=abc",
    "resourceVersion=999999&resourceVersionMatch=Exact",
    "resourceVersionMatch=Nope&resourceVersion=1",
    "fieldValidation=Strict",
    "fieldValidation=Maybe",
    "dryRun=All",
    "fieldManager=fuzz",
    "gracePeriodSeconds=x",
    "propagationPolicy=Sideways",
];

fn seeds() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "test", "path": "/x", "value": 1}]),
        json!({"spec": {"replicas": 5}, "metadata": {"labels": {"x": null}}}),
        json!({"kind": "DeleteOptions", "propagationPolicy": "Foreground", "preconditions": {"uid": "u"}}),
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}),
    ]
}

/// Replaces a random node of `value` with something of another shape.
fn mutate(rng: &mut SmallRng, value: &mut Value, depth: usize) {
    let replacement = || -> Value {
        match rng_static() % 9 {
            0 => Value::Null,
            1 => json!(-1),
            2 => json!(u64::MAX),
            3 => json!("ÿ\u{0}x"),
            4 => json!([]),
            5 => json!({}),
            6 => json!(1.5e308),
            7 => json!({"$patch": "delete"}),
            _ => json!(true),
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() && depth < 8 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if rng.index(4) == 0 {
                map.insert(replacement_key(rng), replacement());
            } else if rng.index(3) == 0 {
                map.insert(key, replacement());
            } else {
                mutate(rng, map.get_mut(&key).unwrap(), depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 8 => {
            let i = rng.index(items.len());
            mutate(rng, &mut items[i], depth + 1);
        }
        other => *other = replacement(),
    }
}

fn replacement_key(rng: &mut SmallRng) -> String {
    rng.pick(&[
        "$setElementOrder/containers",
        "$retainKeys",
        "metadata",
        "spec",
        "x",
        "",
        "$deleteFromPrimitiveList/finalizers",
    ])
    .to_string()
}

thread_local! {
    static STATIC_RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0x9E37_79B9_7F4A_7C15) };
}

fn rng_static() -> u64 {
    STATIC_RNG.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn random_requests_never_panic_and_always_answer_a_status() {
    let dir = std::env::temp_dir().join(format!("skiff-fuzz-{}", common::uuid()));
    let prepared = server::prepare(&common::config(&dir, 1)).await.unwrap();
    let token = std::fs::read_to_string(dir.join("tokens.csv")).unwrap();
    let token = token.split(',').next().unwrap().to_owned();
    let api = Arc::clone(&prepared.api);
    let seed = 0x5EED_0000_0001_u64;
    let mut rng = SmallRng::seeded(seed);
    let seeds = seeds();
    let iterations = 4000;
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..iterations {
        let method = *rng.pick(METHODS);
        let path = *rng.pick(PATHS);
        let query = if rng.index(2) == 0 {
            ""
        } else {
            *rng.pick(QUERIES)
        };
        // Mostly the content type a real client would send for the method, sometimes any.
        let content_type = match (method, rng.index(5)) {
            (_, 0) => *rng.pick(CONTENT_TYPES),
            ("PATCH", _) => *rng.pick(&CONTENT_TYPES[1..5]),
            _ => "application/json",
        };
        let body: Vec<u8> = match rng.index(4) {
            0 => (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect(),
            1 => rng.pick(&seeds).to_string().into_bytes(),
            _ => {
                let mut value = rng.pick(&seeds).clone();
                for _ in 0..=rng.index(3) {
                    mutate(&mut rng, &mut value, 0);
                }
                let mut bytes = value.to_string().into_bytes();
                if rng.index(8) == 0 && !bytes.is_empty() {
                    let cut = rng.index(bytes.len());
                    bytes.truncate(cut);
                }
                bytes
            }
        };
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let Ok(request) = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("Content-Type", content_type)
            .header("Authorization", format!("Bearer {token}"))
            .body(Body::from(body.clone()))
        else {
            continue;
        };
        let response = Arc::clone(&api).handle(request).await;
        let code = response.status().as_u16();
        *codes.entry(code).or_default() += 1;
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        if code >= 400 {
            let status: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("seed {seed:#x} request {i}: {method} {uri} ({content_type}) answered {code} without a Status: {:?}", String::from_utf8_lossy(&bytes))
            });
            assert_eq!(
                status["kind"], "Status",
                "request {i}: {method} {uri}: {status}"
            );
            assert_eq!(
                status["code"], code,
                "request {i}: {method} {uri}: {status}"
            );
        }
        assert!(
            code != 500,
            "seed {seed:#x} request {i}: {method} {uri} ({content_type}) body {:?} → 500 {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&bytes)
        );
    }
    eprintln!("answers by code: {codes:?}");
    // The run must reach past the front door, or it proves little.
    assert!(
        codes.get(&200).copied().unwrap_or(0) > 100 && codes.contains_key(&201),
        "{codes:?}"
    );
    drop(prepared);
    let _ = std::fs::remove_dir_all(&dir);
}
