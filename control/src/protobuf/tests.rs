//! Bodies built the way client-go's generated marshal code builds them (every non-pointer field
//! written, even when empty), decoded and compared with the JSON kubectl would have sent.

use serde_json::{Value, json};
use skiff_common::rng::SmallRng;

use super::message::decode_message;
use super::schema::{Kind, MessageDesc, message, opt, ptr, rep, req};
use super::*;

/// Decodes `body` with every top-level message this module describes, found by kind.
fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    super::decode(body, |_, kind| {
        schema::tests::ROOTS.into_iter().find(|m| m.name == kind)
    })
}

/// A protobuf message under construction.
#[derive(Debug, Clone, Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn new() -> Self {
        Msg::default()
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        put_varint(&mut self.0, u64::from(field) << 3 | u64::from(wire_type));
    }

    fn int(mut self, field: u32, value: i64) -> Self {
        self.key(field, 0);
        put_varint(&mut self.0, value as u64);
        self
    }

    fn bool(self, field: u32, value: bool) -> Self {
        self.int(field, i64::from(value))
    }

    fn bytes(mut self, field: u32, value: &[u8]) -> Self {
        self.key(field, 2);
        put_varint(&mut self.0, value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    fn str(self, field: u32, value: &str) -> Self {
        self.bytes(field, value.as_bytes())
    }

    fn msg(mut self, field: u32, value: Msg) -> Self {
        self.key(field, 2);
        put_varint(&mut self.0, value.0.len() as u64);
        self.0.extend(value.0);
        self
    }

    /// A `map<string, string>` entry.
    fn entry(self, field: u32, key: &str, value: &str) -> Self {
        self.msg(field, Msg::new().str(1, key).str(2, value))
    }

    /// A `map<string, Quantity>` entry.
    fn quantity(self, field: u32, key: &str, value: &str) -> Self {
        self.msg(
            field,
            Msg::new().str(1, key).msg(2, Msg::new().str(1, value)),
        )
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn envelope(api_version: &str, kind: &str, object: &Msg) -> Vec<u8> {
    let unknown = Msg::new()
        .msg(1, Msg::new().str(1, api_version).str(2, kind))
        .bytes(2, &object.0)
        .str(3, "")
        .str(4, "");
    [&MAGIC[..], &unknown.0].concat()
}

/// `ObjectMeta` as Go writes it: every string, `generation`, and an empty creationTimestamp.
fn object_meta(name: &str, labels: &[(&str, &str)]) -> Msg {
    let mut meta = Msg::new().str(1, name);
    for field in 2..=6 {
        meta = meta.str(field, "");
    }
    meta = meta.int(7, 0).msg(8, Msg::new());
    for (key, value) in labels {
        meta = meta.entry(11, key, value);
    }
    meta
}

/// `Container` as Go writes it for `--image`: the value fields, and an empty `resources`.
fn container(name: &str, image: &str) -> Msg {
    Msg::new()
        .str(1, name)
        .str(2, image)
        .str(5, "")
        .msg(8, Msg::new())
        .str(13, "")
        .str(14, "")
        .bool(16, false)
        .bool(17, false)
        .bool(18, false)
        .str(20, "")
}

/// `PodSpec`'s value fields as Go writes them, around `containers`.
fn pod_spec(containers: &[Msg]) -> Msg {
    let mut spec = Msg::new();
    for c in containers {
        spec = spec.msg(2, c.clone());
    }
    spec.str(3, "")
        .str(6, "")
        .str(8, "")
        .str(9, "")
        .str(10, "")
        .bool(11, false)
        .bool(12, false)
        .bool(13, false)
        .str(16, "")
        .str(17, "")
        .str(19, "")
        .str(24, "")
}

fn deployment_raw() -> Msg {
    let labels = [("app", "web")];
    let spec = Msg::new()
        .int(1, 2)
        .msg(2, Msg::new().entry(1, "app", "web"))
        .msg(
            3,
            Msg::new()
                .msg(1, object_meta("", &labels))
                .msg(2, pod_spec(&[container("nginx", "nginx")])),
        )
        .msg(4, Msg::new().str(1, ""))
        .int(5, 0)
        .bool(7, false);
    let status = Msg::new()
        .int(1, 0)
        .int(2, 0)
        .int(3, 0)
        .int(4, 0)
        .int(5, 0)
        .int(7, 0);
    Msg::new()
        .msg(1, object_meta("web", &labels))
        .msg(2, spec)
        .msg(3, status)
}

fn deployment_body() -> Vec<u8> {
    envelope("apps/v1", "Deployment", &deployment_raw())
}

#[test]
fn kubectl_create_namespace() {
    let namespace = Msg::new()
        .msg(1, object_meta("demo", &[]))
        .msg(2, Msg::new())
        .msg(3, Msg::new().str(1, ""));
    let got = decode(&envelope("v1", "Namespace", &namespace)).unwrap();
    let want = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}, "spec": {}, "status": {}});
    assert_eq!(got, want);
}

#[test]
fn kubectl_create_deployment() {
    let got = decode(&deployment_body()).unwrap();
    let want = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
            },
            "strategy": {}
        },
        "status": {}
    });
    assert_eq!(got, want);
}

#[test]
fn service_ports_with_int_and_string_target_ports() {
    let port = |name: &str, port: i64, target: Msg| {
        Msg::new()
            .str(1, name)
            .str(2, "TCP")
            .int(3, port)
            .msg(4, target)
            .int(5, 0)
    };
    let spec = Msg::new()
        .msg(
            1,
            port("80-8080", 80, Msg::new().int(1, 0).int(2, 8080).str(3, "")),
        )
        .msg(
            1,
            port("https", 443, Msg::new().int(1, 1).int(2, 0).str(3, "https")),
        )
        .entry(2, "app", "web")
        .str(3, "")
        .str(4, "ClusterIP")
        .str(7, "")
        .str(8, "")
        .str(10, "")
        .str(11, "")
        .int(12, 0)
        .bool(13, false);
    let service = Msg::new()
        .msg(1, object_meta("web", &[("app", "web")]))
        .msg(2, spec)
        .msg(3, Msg::new().msg(1, Msg::new()));
    let got = decode(&envelope("v1", "Service", &service)).unwrap();
    let want = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"}
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP"
        },
        "status": {"loadBalancer": {}}
    });
    assert_eq!(got, want);
}

#[test]
fn pod_with_env_resources_probe_and_volumes() {
    let probe = Msg::new()
        .msg(
            1,
            Msg::new().msg(
                2,
                Msg::new()
                    .str(1, "/healthz")
                    .msg(2, Msg::new().int(1, 1).int(2, 0).str(3, "http"))
                    .str(3, "")
                    .str(4, "HTTP"),
            ),
        )
        .int(2, 0)
        .int(3, 1)
        .int(4, 10)
        .int(5, 1)
        .int(6, 3);
    let env_from_field = Msg::new().msg(1, Msg::new().str(1, "v1").str(2, "metadata.name"));
    let web = container("web", "nginx:1.27")
        .msg(
            6,
            Msg::new()
                .str(1, "http")
                .int(2, 0)
                .int(3, 8080)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(7, Msg::new().str(1, "MODE").str(2, "prod"))
        .msg(
            7,
            Msg::new().str(1, "POD").str(2, "").msg(3, env_from_field),
        )
        .msg(
            8,
            Msg::new()
                .quantity(1, "memory", "128Mi")
                .quantity(2, "cpu", "100m"),
        )
        .msg(
            9,
            Msg::new()
                .str(1, "cache")
                .bool(2, false)
                .str(3, "/cache")
                .str(4, "")
                .str(6, ""),
        )
        .msg(11, probe)
        .msg(15, Msg::new().int(4, -1).bool(5, true));
    let volumes = [
        Msg::new()
            .str(1, "cache")
            .msg(2, Msg::new().msg(2, Msg::new().str(1, ""))),
        Msg::new().str(1, "conf").msg(
            2,
            Msg::new().msg(19, Msg::new().msg(1, Msg::new().str(1, "web-conf"))),
        ),
    ];
    let mut spec = pod_spec(&[web]);
    for volume in volumes {
        spec = spec.msg(1, volume);
    }
    let meta = object_meta("web", &[]).msg(8, Msg::new().int(1, 1_795_312_984).int(2, 0));
    let pod = Msg::new()
        .msg(1, meta)
        .msg(2, spec.int(4, 30))
        .msg(3, Msg::new().str(1, "Pending"));
    let got = decode(&envelope("v1", "Pod", &pod)).unwrap();
    let want = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "creationTimestamp": "2026-11-22T02:03:04Z"},
        "spec": {
            "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "web-conf"}}],
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}
                ],
                "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "timeoutSeconds": 1,
                    "periodSeconds": 10,
                    "successThreshold": 1,
                    "failureThreshold": 3
                },
                "securityContext": {"runAsUser": -1, "runAsNonRoot": true}
            }],
            "terminationGracePeriodSeconds": 30
        },
        "status": {"phase": "Pending"}
    });
    assert_eq!(got, want);
}

#[test]
fn secret_data_is_base64_and_fields_merge_like_protobuf() {
    // `metadata` sent in two parts merges; `type` sent twice keeps the last.
    let secret = Msg::new()
        .msg(1, Msg::new().str(1, "token"))
        .msg(1, Msg::new().str(3, "default"))
        .msg(2, Msg::new().str(1, "key").bytes(2, &[0xff, 0x00, b'a']))
        .str(3, "Opaque")
        .str(3, "kubernetes.io/basic-auth");
    let got = decode(&envelope("v1", "Secret", &secret)).unwrap();
    let want = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "default"},
        "data": {"key": "/wBh"},
        "type": "kubernetes.io/basic-auth"
    });
    assert_eq!(got, want);
}

/// A message using the kinds no supported object uses yet, to test them directly.
static SAMPLE: MessageDesc = message(
    "Sample",
    &[
        ptr(1, "micro", Kind::MicroTime),
        req(2, "duration", Kind::Duration),
        opt(3, "time", Kind::Time),
        ptr(4, "raw", Kind::RawJson),
        rep(5, "numbers", Kind::Int64),
        ptr(6, "blob", Kind::Bytes),
        req(7, "quantity", Kind::Quantity),
        req(8, "port", Kind::IntOrString),
    ],
);

fn sample(body: &Msg) -> Result<Value, ProtobufError> {
    decode_message(&SAMPLE, &body.0, 1).map(Value::Object)
}

#[test]
fn leaf_kinds_match_go() {
    let mut packed = Vec::new();
    for n in [3u64, 300, u64::MAX] {
        put_varint(&mut packed, n);
    }
    let body = Msg::new()
        .msg(1, Msg::new().int(1, 1_795_312_984).int(2, 123_456_789))
        .msg(2, Msg::new().int(1, 90_000_000_000))
        .msg(3, Msg::new().int(1, format::GO_ZERO_TIME))
        .msg(4, Msg::new().str(1, r#"{"f:spec":{}}"#))
        .int(5, 1)
        .bytes(5, &packed)
        .bytes(6, b"hi");
    let want = json!({
        "micro": "2026-11-22T02:03:04.123456Z",
        "duration": "1m30s",
        "raw": {"f:spec": {}},
        "numbers": [1, 3, 300, -1],
        "blob": "aGk=",
        "quantity": "0",
        "port": 0
    });
    assert_eq!(sample(&body).unwrap(), want);
    assert_eq!(
        sample(&Msg::new()).unwrap(),
        json!({"duration": "0s", "quantity": "0", "port": 0})
    );
}

#[test]
fn values_go_would_refuse_are_errors() {
    let cases = [
        (
            Msg::new().msg(3, Msg::new().int(1, 253_402_300_800)),
            "Sample field 3: time",
        ),
        (
            Msg::new().msg(4, Msg::new().str(1, "{not json")),
            "Sample field 4: embedded object is not JSON",
        ),
        (
            Msg::new().msg(7, Msg::new().str(1, "")),
            "Sample field 7: an empty string is not a quantity",
        ),
        (
            Msg::new().msg(8, Msg::new().int(1, 2)),
            "Sample field 8: IntOrString type 2",
        ),
        (
            Msg::new().msg(8, Msg::new().int(4, 2)),
            "IntOrString field 4 is not supported",
        ),
        (
            Msg::new().msg(1, Msg::new().str(1, "x")),
            "MicroTime field 1 has wire type length-delimited, expected varint",
        ),
    ];
    for (body, want) in cases {
        let err = sample(&body).unwrap_err().to_string();
        assert!(
            err.starts_with(want),
            "{err:?} does not start with {want:?}"
        );
    }
}

#[test]
fn unknown_and_unsupported_fields_are_errors_naming_message_and_number() {
    let body = |c: Msg| envelope("v1", "Pod", &Msg::new().msg(2, pod_spec(&[c])));
    let err = decode(&body(container("web", "nginx").int(42, 1))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Container field 42 is not supported by this server: send JSON"
    );
    let affinity = envelope(
        "v1",
        "Pod",
        &Msg::new().msg(2, Msg::new().msg(18, Msg::new())),
    );
    let err = decode(&affinity).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PodSpec field 18 (affinity) is not supported by this server: send JSON"
    );
    let wrong = envelope("v1", "Namespace", &Msg::new().msg(1, Msg::new().int(1, 7)));
    let err = decode(&wrong).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ObjectMeta field 1 has wire type varint, expected length-delimited"
    );
}

#[test]
fn envelope_errors() {
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::NotEnveloped)
    ));
    assert!(matches!(decode(b"k8s"), Err(ProtobufError::NotEnveloped)));
    assert!(!decode(b"k8s\0\x0a\x05").unwrap_err().is_unsupported());
    assert!(matches!(
        decode(&envelope("", "", &Msg::new())),
        Err(ProtobufError::MissingTypeMeta)
    ));
    let err = decode(&envelope("v1", "Node", &Msg::new())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protobuf for v1 Node is not supported by this server: send JSON"
    );
    let gzip = Msg::new()
        .msg(1, Msg::new().str(1, "v1").str(2, "Pod"))
        .str(3, "gzip");
    let err = decode(&[&MAGIC[..], &gzip.0].concat()).unwrap_err();
    assert!(err.is_unsupported());
    assert!(matches!(err, ProtobufError::UnsupportedEncoding(e) if e == "gzip"));
}

#[test]
fn every_truncation_inside_the_object_is_an_error() {
    let body = deployment_body();
    let raw_len = Msg::new().msg(2, deployment_raw()).0.len();
    // The envelope ends with the object's field, then two empty strings (4 bytes): a cut
    // anywhere after the object's tag and before its end leaves a length past the input.
    let object_end = body.len() - 4;
    for cut in object_end - raw_len + 1..object_end {
        assert!(
            decode(&body[..cut]).is_err(),
            "cut at {cut} of {} decoded",
            body.len()
        );
    }
    assert!(decode(&body[..object_end]).is_ok());
}

#[test]
fn random_and_mutated_bodies_never_panic() {
    let mut rng = SmallRng::seeded(0x9e37_79b9_7f4a_7c15);
    let valid = deployment_body();
    for _ in 0..20_000 {
        let mut body = valid.clone();
        for _ in 0..1 + rng.index(4) {
            let at = 4 + rng.index(body.len() - 4);
            body[at] = rng.next_u64() as u8;
        }
        body.truncate(4 + rng.index(body.len() - 3));
        let _ = decode(&body);
    }
    for _ in 0..20_000 {
        let len = rng.index(300);
        let mut body: Vec<u8> = MAGIC.to_vec();
        body.extend((0..len).map(|_| rng.next_u64() as u8));
        let _ = decode(&body);
        let _ = decode(&body[4..]);
    }
}

/// A message that contains itself, as `JSONSchemaProps` does.
static NODE: MessageDesc = message("Node", &[ptr(1, "child", Kind::Message(&NODE))]);

fn nested(levels: usize) -> Vec<u8> {
    // Built back to front, so that each level's length is known when its prefix is written.
    let mut reversed = Vec::new();
    for _ in 0..levels {
        let mut prefix = vec![0x0a];
        put_varint(&mut prefix, reversed.len() as u64);
        reversed.extend(prefix.iter().rev());
    }
    reversed.reverse();
    reversed
}

#[test]
fn nesting_is_bounded() {
    assert!(decode_message(&NODE, &nested(MAX_DEPTH - 1), 1).is_ok());
    let err = decode_message(&NODE, &nested(MAX_DEPTH), 1).unwrap_err();
    assert_eq!(err.to_string(), "Node is nested more than 64 messages deep");
    // A bomb of 100 000 levels is refused at level 65, without deep recursion.
    assert!(matches!(
        decode_message(&NODE, &nested(100_000), 1),
        Err(ProtobufError::TooDeep { .. })
    ));
    // The same bytes as a real object come back without exhausting the stack.
    let bomb = Msg::new()
        .msg(1, Msg::new().str(1, "v1").str(2, "Pod"))
        .bytes(2, &nested(100_000));
    let _ = decode(&[&MAGIC[..], &bomb.0].concat());
}

#[test]
fn content_type_ignores_parameters_and_case() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=utf-8"
    ));
    assert!(is_protobuf(
        " Application/VND.Kubernetes.Protobuf;stream=watch"
    ));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf+json"));
}
