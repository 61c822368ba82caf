//! core/v1 objects with small specs: Namespace, Service, ConfigMap, Secret, ServiceAccount.

use super::meta::{CONDITION, OBJECT_META};
use super::{Kind, MapValue, MessageDesc, map, message, opt, ptr, rep, req};

/// `Namespace` (core/v1).
pub static NAMESPACE: MessageDesc = message(
    "Namespace",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&NAMESPACE_SPEC)),
        req(3, "status", Kind::Message(&NAMESPACE_STATUS)),
    ],
);

/// `NamespaceSpec` (core/v1).
pub static NAMESPACE_SPEC: MessageDesc =
    message("NamespaceSpec", &[rep(1, "finalizers", Kind::String)]);

/// `NamespaceStatus` (core/v1).
pub static NAMESPACE_STATUS: MessageDesc = message(
    "NamespaceStatus",
    &[
        opt(1, "phase", Kind::String),
        rep(2, "conditions", Kind::Message(&NAMESPACE_CONDITION)),
    ],
);

/// `NamespaceCondition` (core/v1).
pub static NAMESPACE_CONDITION: MessageDesc = message(
    "NamespaceCondition",
    &[
        req(1, "type", Kind::String),
        req(2, "status", Kind::String),
        opt(4, "lastTransitionTime", Kind::Time),
        opt(5, "reason", Kind::String),
        opt(6, "message", Kind::String),
    ],
);

/// `Service` (core/v1).
pub static SERVICE: MessageDesc = message(
    "Service",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&SERVICE_SPEC)),
        req(3, "status", Kind::Message(&SERVICE_STATUS)),
    ],
);

/// `ServiceSpec` (core/v1).
pub static SERVICE_SPEC: MessageDesc = message(
    "ServiceSpec",
    &[
        rep(1, "ports", Kind::Message(&SERVICE_PORT)),
        map(2, "selector", MapValue::String),
        opt(3, "clusterIP", Kind::String),
        rep(18, "clusterIPs", Kind::String),
        opt(4, "type", Kind::String),
        rep(5, "externalIPs", Kind::String),
        opt(7, "sessionAffinity", Kind::String),
        opt(8, "loadBalancerIP", Kind::String),
        rep(9, "loadBalancerSourceRanges", Kind::String),
        opt(10, "externalName", Kind::String),
        opt(11, "externalTrafficPolicy", Kind::String),
        opt(12, "healthCheckNodePort", Kind::Int32),
        opt(13, "publishNotReadyAddresses", Kind::Bool),
        ptr(
            14,
            "sessionAffinityConfig",
            Kind::Message(&SESSION_AFFINITY_CONFIG),
        ),
        rep(19, "ipFamilies", Kind::String),
        ptr(17, "ipFamilyPolicy", Kind::String),
        ptr(20, "allocateLoadBalancerNodePorts", Kind::Bool),
        ptr(21, "loadBalancerClass", Kind::String),
        ptr(22, "internalTrafficPolicy", Kind::String),
        ptr(23, "trafficDistribution", Kind::String),
    ],
);

/// `ServicePort` (core/v1).
pub static SERVICE_PORT: MessageDesc = message(
    "ServicePort",
    &[
        opt(1, "name", Kind::String),
        opt(2, "protocol", Kind::String),
        ptr(6, "appProtocol", Kind::String),
        req(3, "port", Kind::Int32),
        req(4, "targetPort", Kind::IntOrString),
        opt(5, "nodePort", Kind::Int32),
    ],
);

/// `ServiceStatus` (core/v1).
pub static SERVICE_STATUS: MessageDesc = message(
    "ServiceStatus",
    &[
        req(1, "loadBalancer", Kind::Message(&LOAD_BALANCER_STATUS)),
        rep(2, "conditions", Kind::Message(&CONDITION)),
    ],
);

/// `LoadBalancerStatus` (core/v1).
pub static LOAD_BALANCER_STATUS: MessageDesc = message(
    "LoadBalancerStatus",
    &[rep(1, "ingress", Kind::Message(&LOAD_BALANCER_INGRESS))],
);

/// `LoadBalancerIngress` (core/v1).
pub static LOAD_BALANCER_INGRESS: MessageDesc = message(
    "LoadBalancerIngress",
    &[
        opt(1, "ip", Kind::String),
        opt(2, "hostname", Kind::String),
        ptr(3, "ipMode", Kind::String),
        rep(4, "ports", Kind::Message(&PORT_STATUS)),
    ],
);

/// `PortStatus` (core/v1).
pub static PORT_STATUS: MessageDesc = message(
    "PortStatus",
    &[
        req(1, "port", Kind::Int32),
        req(2, "protocol", Kind::String),
        ptr(3, "error", Kind::String),
    ],
);

/// `SessionAffinityConfig` (core/v1).
pub static SESSION_AFFINITY_CONFIG: MessageDesc = message(
    "SessionAffinityConfig",
    &[ptr(1, "clientIP", Kind::Message(&CLIENT_IP_CONFIG))],
);

/// `ClientIPConfig` (core/v1).
pub static CLIENT_IP_CONFIG: MessageDesc =
    message("ClientIPConfig", &[ptr(1, "timeoutSeconds", Kind::Int32)]);

/// `ConfigMap` (core/v1).
pub static CONFIG_MAP: MessageDesc = message(
    "ConfigMap",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        ptr(4, "immutable", Kind::Bool),
        map(2, "data", MapValue::String),
        map(3, "binaryData", MapValue::Bytes),
    ],
);

/// `Secret` (core/v1).
pub static SECRET: MessageDesc = message(
    "Secret",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        ptr(5, "immutable", Kind::Bool),
        map(2, "data", MapValue::Bytes),
        map(4, "stringData", MapValue::String),
        opt(3, "type", Kind::String),
    ],
);

/// `ServiceAccount` (core/v1).
pub static SERVICE_ACCOUNT: MessageDesc = message(
    "ServiceAccount",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        rep(2, "secrets", Kind::Message(&OBJECT_REFERENCE)),
        rep(
            3,
            "imagePullSecrets",
            Kind::Message(&LOCAL_OBJECT_REFERENCE),
        ),
        ptr(4, "automountServiceAccountToken", Kind::Bool),
    ],
);

/// `ObjectReference` (core/v1).
pub static OBJECT_REFERENCE: MessageDesc = message(
    "ObjectReference",
    &[
        opt(1, "kind", Kind::String),
        opt(2, "namespace", Kind::String),
        opt(3, "name", Kind::String),
        opt(4, "uid", Kind::String),
        opt(5, "apiVersion", Kind::String),
        opt(6, "resourceVersion", Kind::String),
        opt(7, "fieldPath", Kind::String),
    ],
);

/// `LocalObjectReference` (core/v1).
pub static LOCAL_OBJECT_REFERENCE: MessageDesc =
    message("LocalObjectReference", &[opt(1, "name", Kind::String)]);
