//! core/v1 Pod, its spec and status, pod-level security and scheduling, and volumes (the common
//! sources; the rest answer "send JSON").

use super::container::{
    APP_ARMOR_PROFILE, CONTAINER, RESOURCE_REQUIREMENTS, SE_LINUX_OPTIONS, SECCOMP_PROFILE,
    WINDOWS_SECURITY_CONTEXT_OPTIONS,
};
use super::meta::OBJECT_META;
use super::objects::LOCAL_OBJECT_REFERENCE;
use super::{Kind, MapValue, MessageDesc, inline, map, message, opt, ptr, rep, req, unsupported};

/// `Pod` (core/v1).
pub static POD: MessageDesc = message(
    "Pod",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&POD_SPEC)),
        req(3, "status", Kind::Message(&POD_STATUS)),
    ],
);

/// `PodSpec` (core/v1).
pub static POD_SPEC: MessageDesc = message(
    "PodSpec",
    &[
        rep(1, "volumes", Kind::Message(&VOLUME)),
        rep(20, "initContainers", Kind::Message(&CONTAINER)),
        rep(2, "containers", Kind::Message(&CONTAINER)),
        unsupported(34, "ephemeralContainers"),
        opt(3, "restartPolicy", Kind::String),
        ptr(4, "terminationGracePeriodSeconds", Kind::Int64),
        ptr(5, "activeDeadlineSeconds", Kind::Int64),
        opt(6, "dnsPolicy", Kind::String),
        map(7, "nodeSelector", MapValue::String),
        opt(8, "serviceAccountName", Kind::String),
        opt(9, "serviceAccount", Kind::String),
        ptr(21, "automountServiceAccountToken", Kind::Bool),
        opt(10, "nodeName", Kind::String),
        opt(11, "hostNetwork", Kind::Bool),
        opt(12, "hostPID", Kind::Bool),
        opt(13, "hostIPC", Kind::Bool),
        ptr(27, "shareProcessNamespace", Kind::Bool),
        ptr(14, "securityContext", Kind::Message(&POD_SECURITY_CONTEXT)),
        rep(
            15,
            "imagePullSecrets",
            Kind::Message(&LOCAL_OBJECT_REFERENCE),
        ),
        opt(16, "hostname", Kind::String),
        opt(17, "subdomain", Kind::String),
        unsupported(18, "affinity"),
        opt(19, "schedulerName", Kind::String),
        rep(22, "tolerations", Kind::Message(&TOLERATION)),
        rep(23, "hostAliases", Kind::Message(&HOST_ALIAS)),
        opt(24, "priorityClassName", Kind::String),
        ptr(25, "priority", Kind::Int32),
        ptr(26, "dnsConfig", Kind::Message(&POD_DNS_CONFIG)),
        rep(28, "readinessGates", Kind::Message(&POD_READINESS_GATE)),
        ptr(29, "runtimeClassName", Kind::String),
        ptr(30, "enableServiceLinks", Kind::Bool),
        ptr(31, "preemptionPolicy", Kind::String),
        map(32, "overhead", MapValue::Quantity),
        unsupported(33, "topologySpreadConstraints"),
        ptr(35, "setHostnameAsFQDN", Kind::Bool),
        ptr(36, "os", Kind::Message(&POD_OS)),
        ptr(37, "hostUsers", Kind::Bool),
        rep(38, "schedulingGates", Kind::Message(&POD_SCHEDULING_GATE)),
        unsupported(39, "resourceClaims"),
        ptr(40, "resources", Kind::Message(&RESOURCE_REQUIREMENTS)),
        ptr(41, "hostnameOverride", Kind::String),
        unsupported(43, "schedulingGroup"),
        unsupported(44, "evictionResponders"),
    ],
);

/// `PodStatus` (core/v1).
pub static POD_STATUS: MessageDesc = message(
    "PodStatus",
    &[
        opt(17, "observedGeneration", Kind::Int64),
        opt(1, "phase", Kind::String),
        rep(2, "conditions", Kind::Message(&POD_CONDITION)),
        opt(3, "message", Kind::String),
        opt(4, "reason", Kind::String),
        opt(11, "nominatedNodeName", Kind::String),
        opt(5, "hostIP", Kind::String),
        rep(16, "hostIPs", Kind::Message(&HOST_IP)),
        opt(6, "podIP", Kind::String),
        rep(12, "podIPs", Kind::Message(&POD_IP)),
        ptr(7, "startTime", Kind::Time),
        unsupported(10, "initContainerStatuses"),
        unsupported(8, "containerStatuses"),
        opt(9, "qosClass", Kind::String),
        unsupported(13, "ephemeralContainerStatuses"),
        opt(14, "resize", Kind::String),
        unsupported(15, "resourceClaimStatuses"),
        unsupported(18, "extendedResourceClaimStatus"),
        map(19, "allocatedResources", MapValue::Quantity),
        ptr(20, "resources", Kind::Message(&RESOURCE_REQUIREMENTS)),
        unsupported(21, "nodeAllocatableResourceClaimStatuses"),
        unsupported(22, "volumeHealth"),
    ],
);

/// `PodCondition` (core/v1).
pub static POD_CONDITION: MessageDesc = message(
    "PodCondition",
    &[
        req(1, "type", Kind::String),
        opt(7, "observedGeneration", Kind::Int64),
        req(2, "status", Kind::String),
        opt(3, "lastProbeTime", Kind::Time),
        opt(4, "lastTransitionTime", Kind::Time),
        opt(5, "reason", Kind::String),
        opt(6, "message", Kind::String),
    ],
);

/// `PodIP` (core/v1).
pub static POD_IP: MessageDesc = message("PodIP", &[req(1, "ip", Kind::String)]);

/// `HostIP` (core/v1).
pub static HOST_IP: MessageDesc = message("HostIP", &[req(1, "ip", Kind::String)]);

/// `PodTemplateSpec` (core/v1).
pub static POD_TEMPLATE_SPEC: MessageDesc = message(
    "PodTemplateSpec",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&POD_SPEC)),
    ],
);

/// `PodSecurityContext` (core/v1).
pub static POD_SECURITY_CONTEXT: MessageDesc = message(
    "PodSecurityContext",
    &[
        ptr(1, "seLinuxOptions", Kind::Message(&SE_LINUX_OPTIONS)),
        ptr(
            8,
            "windowsOptions",
            Kind::Message(&WINDOWS_SECURITY_CONTEXT_OPTIONS),
        ),
        ptr(2, "runAsUser", Kind::Int64),
        ptr(6, "runAsGroup", Kind::Int64),
        ptr(3, "runAsNonRoot", Kind::Bool),
        rep(4, "supplementalGroups", Kind::Int64),
        ptr(12, "supplementalGroupsPolicy", Kind::String),
        ptr(5, "fsGroup", Kind::Int64),
        rep(7, "sysctls", Kind::Message(&SYSCTL)),
        ptr(9, "fsGroupChangePolicy", Kind::String),
        ptr(10, "seccompProfile", Kind::Message(&SECCOMP_PROFILE)),
        ptr(11, "appArmorProfile", Kind::Message(&APP_ARMOR_PROFILE)),
        ptr(13, "seLinuxChangePolicy", Kind::String),
    ],
);

/// `Sysctl` (core/v1).
pub static SYSCTL: MessageDesc = message(
    "Sysctl",
    &[req(1, "name", Kind::String), req(2, "value", Kind::String)],
);

/// `Toleration` (core/v1).
pub static TOLERATION: MessageDesc = message(
    "Toleration",
    &[
        opt(1, "key", Kind::String),
        opt(2, "operator", Kind::String),
        opt(3, "value", Kind::String),
        opt(4, "effect", Kind::String),
        ptr(5, "tolerationSeconds", Kind::Int64),
    ],
);

/// `PodDNSConfig` (core/v1).
pub static POD_DNS_CONFIG: MessageDesc = message(
    "PodDNSConfig",
    &[
        rep(1, "nameservers", Kind::String),
        rep(2, "searches", Kind::String),
        rep(3, "options", Kind::Message(&POD_DNS_CONFIG_OPTION)),
    ],
);

/// `PodDNSConfigOption` (core/v1).
pub static POD_DNS_CONFIG_OPTION: MessageDesc = message(
    "PodDNSConfigOption",
    &[opt(1, "name", Kind::String), ptr(2, "value", Kind::String)],
);

/// `HostAlias` (core/v1).
pub static HOST_ALIAS: MessageDesc = message(
    "HostAlias",
    &[
        req(1, "ip", Kind::String),
        rep(2, "hostnames", Kind::String),
    ],
);

/// `PodOS` (core/v1).
pub static POD_OS: MessageDesc = message("PodOS", &[req(1, "name", Kind::String)]);

/// `PodReadinessGate` (core/v1).
pub static POD_READINESS_GATE: MessageDesc =
    message("PodReadinessGate", &[req(1, "conditionType", Kind::String)]);

/// `PodSchedulingGate` (core/v1).
pub static POD_SCHEDULING_GATE: MessageDesc =
    message("PodSchedulingGate", &[req(1, "name", Kind::String)]);

/// `Volume` (core/v1).
pub static VOLUME: MessageDesc = message(
    "Volume",
    &[req(1, "name", Kind::String), inline(2, &VOLUME_SOURCE)],
);

/// `VolumeSource` (core/v1).
pub static VOLUME_SOURCE: MessageDesc = message(
    "VolumeSource",
    &[
        ptr(1, "hostPath", Kind::Message(&HOST_PATH_VOLUME_SOURCE)),
        ptr(2, "emptyDir", Kind::Message(&EMPTY_DIR_VOLUME_SOURCE)),
        unsupported(3, "gcePersistentDisk"),
        unsupported(4, "awsElasticBlockStore"),
        unsupported(5, "gitRepo"),
        ptr(6, "secret", Kind::Message(&SECRET_VOLUME_SOURCE)),
        unsupported(7, "nfs"),
        unsupported(8, "iscsi"),
        unsupported(9, "glusterfs"),
        ptr(
            10,
            "persistentVolumeClaim",
            Kind::Message(&PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE),
        ),
        unsupported(11, "rbd"),
        unsupported(12, "flexVolume"),
        unsupported(13, "cinder"),
        unsupported(14, "cephfs"),
        unsupported(15, "flocker"),
        unsupported(16, "downwardAPI"),
        unsupported(17, "fc"),
        unsupported(18, "azureFile"),
        ptr(19, "configMap", Kind::Message(&CONFIG_MAP_VOLUME_SOURCE)),
        unsupported(20, "vsphereVolume"),
        unsupported(21, "quobyte"),
        unsupported(22, "azureDisk"),
        unsupported(23, "photonPersistentDisk"),
        unsupported(26, "projected"),
        unsupported(24, "portworxVolume"),
        unsupported(25, "scaleIO"),
        unsupported(27, "storageos"),
        unsupported(28, "csi"),
        unsupported(29, "ephemeral"),
        unsupported(30, "image"),
    ],
);

/// `EmptyDirVolumeSource` (core/v1).
pub static EMPTY_DIR_VOLUME_SOURCE: MessageDesc = message(
    "EmptyDirVolumeSource",
    &[
        opt(1, "medium", Kind::String),
        ptr(2, "sizeLimit", Kind::Quantity),
        ptr(3, "mode", Kind::Int32),
    ],
);

/// `HostPathVolumeSource` (core/v1).
pub static HOST_PATH_VOLUME_SOURCE: MessageDesc = message(
    "HostPathVolumeSource",
    &[req(1, "path", Kind::String), ptr(2, "type", Kind::String)],
);

/// `ConfigMapVolumeSource` (core/v1).
pub static CONFIG_MAP_VOLUME_SOURCE: MessageDesc = message(
    "ConfigMapVolumeSource",
    &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        rep(2, "items", Kind::Message(&KEY_TO_PATH)),
        ptr(3, "defaultMode", Kind::Int32),
        ptr(4, "optional", Kind::Bool),
        ptr(5, "defaultUser", Kind::Int64),
    ],
);

/// `SecretVolumeSource` (core/v1).
pub static SECRET_VOLUME_SOURCE: MessageDesc = message(
    "SecretVolumeSource",
    &[
        opt(1, "secretName", Kind::String),
        rep(2, "items", Kind::Message(&KEY_TO_PATH)),
        ptr(3, "defaultMode", Kind::Int32),
        ptr(4, "optional", Kind::Bool),
        ptr(5, "defaultUser", Kind::Int64),
    ],
);

/// `KeyToPath` (core/v1).
pub static KEY_TO_PATH: MessageDesc = message(
    "KeyToPath",
    &[
        req(1, "key", Kind::String),
        req(2, "path", Kind::String),
        ptr(3, "mode", Kind::Int32),
        ptr(4, "user", Kind::Int64),
    ],
);

/// `PersistentVolumeClaimVolumeSource` (core/v1).
pub static PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: MessageDesc = message(
    "PersistentVolumeClaimVolumeSource",
    &[
        req(1, "claimName", Kind::String),
        opt(2, "readOnly", Kind::Bool),
    ],
);
