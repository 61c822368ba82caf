//! core/v1 Container and its parts: ports, environment, resources, mounts, security context.

use super::objects::LOCAL_OBJECT_REFERENCE;
use super::probe::{LIFECYCLE, PROBE};
use super::{Kind, MapValue, MessageDesc, inline, map, message, opt, ptr, rep, req, unsupported};

/// `Container` (core/v1).
pub static CONTAINER: MessageDesc = message(
    "Container",
    &[
        req(1, "name", Kind::String),
        opt(2, "image", Kind::String),
        rep(3, "command", Kind::String),
        rep(4, "args", Kind::String),
        opt(5, "workingDir", Kind::String),
        rep(6, "ports", Kind::Message(&CONTAINER_PORT)),
        rep(19, "envFrom", Kind::Message(&ENV_FROM_SOURCE)),
        rep(7, "env", Kind::Message(&ENV_VAR)),
        req(8, "resources", Kind::Message(&RESOURCE_REQUIREMENTS)),
        rep(23, "resizePolicy", Kind::Message(&CONTAINER_RESIZE_POLICY)),
        ptr(24, "restartPolicy", Kind::String),
        unsupported(25, "restartPolicyRules"),
        rep(9, "volumeMounts", Kind::Message(&VOLUME_MOUNT)),
        rep(21, "volumeDevices", Kind::Message(&VOLUME_DEVICE)),
        ptr(10, "livenessProbe", Kind::Message(&PROBE)),
        ptr(11, "readinessProbe", Kind::Message(&PROBE)),
        ptr(22, "startupProbe", Kind::Message(&PROBE)),
        ptr(12, "lifecycle", Kind::Message(&LIFECYCLE)),
        opt(13, "terminationMessagePath", Kind::String),
        opt(20, "terminationMessagePolicy", Kind::String),
        opt(14, "imagePullPolicy", Kind::String),
        ptr(15, "securityContext", Kind::Message(&SECURITY_CONTEXT)),
        opt(16, "stdin", Kind::Bool),
        opt(17, "stdinOnce", Kind::Bool),
        opt(18, "tty", Kind::Bool),
    ],
);

/// `ContainerPort` (core/v1).
pub static CONTAINER_PORT: MessageDesc = message(
    "ContainerPort",
    &[
        opt(1, "name", Kind::String),
        opt(2, "hostPort", Kind::Int32),
        req(3, "containerPort", Kind::Int32),
        opt(4, "protocol", Kind::String),
        opt(5, "hostIP", Kind::String),
    ],
);

/// `EnvVar` (core/v1).
pub static ENV_VAR: MessageDesc = message(
    "EnvVar",
    &[
        req(1, "name", Kind::String),
        opt(2, "value", Kind::String),
        ptr(3, "valueFrom", Kind::Message(&ENV_VAR_SOURCE)),
    ],
);

/// `EnvVarSource` (core/v1).
pub static ENV_VAR_SOURCE: MessageDesc = message(
    "EnvVarSource",
    &[
        ptr(1, "fieldRef", Kind::Message(&OBJECT_FIELD_SELECTOR)),
        ptr(
            2,
            "resourceFieldRef",
            Kind::Message(&RESOURCE_FIELD_SELECTOR),
        ),
        ptr(
            3,
            "configMapKeyRef",
            Kind::Message(&CONFIG_MAP_KEY_SELECTOR),
        ),
        ptr(4, "secretKeyRef", Kind::Message(&SECRET_KEY_SELECTOR)),
        ptr(5, "fileKeyRef", Kind::Message(&FILE_KEY_SELECTOR)),
    ],
);

/// `ObjectFieldSelector` (core/v1).
pub static OBJECT_FIELD_SELECTOR: MessageDesc = message(
    "ObjectFieldSelector",
    &[
        opt(1, "apiVersion", Kind::String),
        req(2, "fieldPath", Kind::String),
    ],
);

/// `ResourceFieldSelector` (core/v1).
pub static RESOURCE_FIELD_SELECTOR: MessageDesc = message(
    "ResourceFieldSelector",
    &[
        opt(1, "containerName", Kind::String),
        req(2, "resource", Kind::String),
        req(3, "divisor", Kind::Quantity),
    ],
);

/// `ConfigMapKeySelector` (core/v1).
pub static CONFIG_MAP_KEY_SELECTOR: MessageDesc = message(
    "ConfigMapKeySelector",
    &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        req(2, "key", Kind::String),
        ptr(3, "optional", Kind::Bool),
    ],
);

/// `SecretKeySelector` (core/v1).
pub static SECRET_KEY_SELECTOR: MessageDesc = message(
    "SecretKeySelector",
    &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        req(2, "key", Kind::String),
        ptr(3, "optional", Kind::Bool),
    ],
);

/// `FileKeySelector` (core/v1).
pub static FILE_KEY_SELECTOR: MessageDesc = message(
    "FileKeySelector",
    &[
        req(1, "volumeName", Kind::String),
        req(2, "path", Kind::String),
        req(3, "key", Kind::String),
        ptr(4, "optional", Kind::Bool),
    ],
);

/// `EnvFromSource` (core/v1).
pub static ENV_FROM_SOURCE: MessageDesc = message(
    "EnvFromSource",
    &[
        opt(1, "prefix", Kind::String),
        ptr(2, "configMapRef", Kind::Message(&CONFIG_MAP_ENV_SOURCE)),
        ptr(3, "secretRef", Kind::Message(&SECRET_ENV_SOURCE)),
    ],
);

/// `ConfigMapEnvSource` (core/v1).
pub static CONFIG_MAP_ENV_SOURCE: MessageDesc = message(
    "ConfigMapEnvSource",
    &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        ptr(2, "optional", Kind::Bool),
    ],
);

/// `SecretEnvSource` (core/v1).
pub static SECRET_ENV_SOURCE: MessageDesc = message(
    "SecretEnvSource",
    &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        ptr(2, "optional", Kind::Bool),
    ],
);

/// `ResourceRequirements` (core/v1).
pub static RESOURCE_REQUIREMENTS: MessageDesc = message(
    "ResourceRequirements",
    &[
        map(1, "limits", MapValue::Quantity),
        map(2, "requests", MapValue::Quantity),
        rep(3, "claims", Kind::Message(&RESOURCE_CLAIM)),
    ],
);

/// `ResourceClaim` (core/v1).
pub static RESOURCE_CLAIM: MessageDesc = message(
    "ResourceClaim",
    &[
        req(1, "name", Kind::String),
        opt(2, "request", Kind::String),
    ],
);

/// `VolumeMount` (core/v1).
pub static VOLUME_MOUNT: MessageDesc = message(
    "VolumeMount",
    &[
        req(1, "name", Kind::String),
        opt(2, "readOnly", Kind::Bool),
        ptr(7, "recursiveReadOnly", Kind::String),
        req(3, "mountPath", Kind::String),
        opt(4, "subPath", Kind::String),
        ptr(5, "mountPropagation", Kind::String),
        opt(6, "subPathExpr", Kind::String),
        rep(8, "bindMountOptions", Kind::String),
    ],
);

/// `VolumeDevice` (core/v1).
pub static VOLUME_DEVICE: MessageDesc = message(
    "VolumeDevice",
    &[
        req(1, "name", Kind::String),
        req(2, "devicePath", Kind::String),
    ],
);

/// `ContainerResizePolicy` (core/v1).
pub static CONTAINER_RESIZE_POLICY: MessageDesc = message(
    "ContainerResizePolicy",
    &[
        req(1, "resourceName", Kind::String),
        req(2, "restartPolicy", Kind::String),
    ],
);

/// `SecurityContext` (core/v1).
pub static SECURITY_CONTEXT: MessageDesc = message(
    "SecurityContext",
    &[
        ptr(1, "capabilities", Kind::Message(&CAPABILITIES)),
        ptr(2, "privileged", Kind::Bool),
        ptr(3, "seLinuxOptions", Kind::Message(&SE_LINUX_OPTIONS)),
        ptr(
            10,
            "windowsOptions",
            Kind::Message(&WINDOWS_SECURITY_CONTEXT_OPTIONS),
        ),
        ptr(4, "runAsUser", Kind::Int64),
        ptr(8, "runAsGroup", Kind::Int64),
        ptr(5, "runAsNonRoot", Kind::Bool),
        ptr(6, "readOnlyRootFilesystem", Kind::Bool),
        ptr(7, "allowPrivilegeEscalation", Kind::Bool),
        ptr(9, "procMount", Kind::String),
        ptr(11, "seccompProfile", Kind::Message(&SECCOMP_PROFILE)),
        ptr(12, "appArmorProfile", Kind::Message(&APP_ARMOR_PROFILE)),
    ],
);

/// `Capabilities` (core/v1).
pub static CAPABILITIES: MessageDesc = message(
    "Capabilities",
    &[rep(1, "add", Kind::String), rep(2, "drop", Kind::String)],
);

/// `SELinuxOptions` (core/v1).
pub static SE_LINUX_OPTIONS: MessageDesc = message(
    "SELinuxOptions",
    &[
        opt(1, "user", Kind::String),
        opt(2, "role", Kind::String),
        opt(3, "type", Kind::String),
        opt(4, "level", Kind::String),
    ],
);

/// `SeccompProfile` (core/v1).
pub static SECCOMP_PROFILE: MessageDesc = message(
    "SeccompProfile",
    &[
        req(1, "type", Kind::String),
        ptr(2, "localhostProfile", Kind::String),
    ],
);

/// `AppArmorProfile` (core/v1).
pub static APP_ARMOR_PROFILE: MessageDesc = message(
    "AppArmorProfile",
    &[
        req(1, "type", Kind::String),
        ptr(2, "localhostProfile", Kind::String),
    ],
);

/// `WindowsSecurityContextOptions` (core/v1).
pub static WINDOWS_SECURITY_CONTEXT_OPTIONS: MessageDesc = message(
    "WindowsSecurityContextOptions",
    &[
        ptr(1, "gmsaCredentialSpecName", Kind::String),
        ptr(2, "gmsaCredentialSpec", Kind::String),
        ptr(3, "runAsUserName", Kind::String),
        ptr(4, "hostProcess", Kind::Bool),
    ],
);
