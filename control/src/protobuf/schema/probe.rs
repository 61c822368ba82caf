//! core/v1 probes and lifecycle hooks.

use super::{Kind, MessageDesc, inline, message, opt, ptr, rep, req};

/// `Probe` (core/v1).
pub static PROBE: MessageDesc = message(
    "Probe",
    &[
        inline(1, &PROBE_HANDLER),
        opt(2, "initialDelaySeconds", Kind::Int32),
        opt(3, "timeoutSeconds", Kind::Int32),
        opt(4, "periodSeconds", Kind::Int32),
        opt(5, "successThreshold", Kind::Int32),
        opt(6, "failureThreshold", Kind::Int32),
        ptr(7, "terminationGracePeriodSeconds", Kind::Int64),
    ],
);

/// `ProbeHandler` (core/v1).
pub static PROBE_HANDLER: MessageDesc = message(
    "ProbeHandler",
    &[
        ptr(1, "exec", Kind::Message(&EXEC_ACTION)),
        ptr(2, "httpGet", Kind::Message(&HTTP_GET_ACTION)),
        ptr(3, "tcpSocket", Kind::Message(&TCP_SOCKET_ACTION)),
        ptr(4, "grpc", Kind::Message(&GRPC_ACTION)),
    ],
);

/// `ExecAction` (core/v1).
pub static EXEC_ACTION: MessageDesc = message("ExecAction", &[rep(1, "command", Kind::String)]);

/// `HTTPGetAction` (core/v1).
pub static HTTP_GET_ACTION: MessageDesc = message(
    "HTTPGetAction",
    &[
        opt(1, "path", Kind::String),
        req(2, "port", Kind::IntOrString),
        opt(3, "host", Kind::String),
        opt(4, "scheme", Kind::String),
        rep(5, "httpHeaders", Kind::Message(&HTTP_HEADER)),
        ptr(6, "protocol", Kind::String),
    ],
);

/// `HTTPHeader` (core/v1).
pub static HTTP_HEADER: MessageDesc = message(
    "HTTPHeader",
    &[req(1, "name", Kind::String), req(2, "value", Kind::String)],
);

/// `TCPSocketAction` (core/v1).
pub static TCP_SOCKET_ACTION: MessageDesc = message(
    "TCPSocketAction",
    &[
        req(1, "port", Kind::IntOrString),
        opt(2, "host", Kind::String),
    ],
);

/// `GRPCAction` (core/v1).
pub static GRPC_ACTION: MessageDesc = message(
    "GRPCAction",
    &[
        req(1, "port", Kind::Int32),
        ptr(2, "service", Kind::String),
        ptr(3, "mode", Kind::String),
    ],
);

/// `Lifecycle` (core/v1).
pub static LIFECYCLE: MessageDesc = message(
    "Lifecycle",
    &[
        ptr(1, "postStart", Kind::Message(&LIFECYCLE_HANDLER)),
        ptr(2, "preStop", Kind::Message(&LIFECYCLE_HANDLER)),
        ptr(3, "stopSignal", Kind::String),
    ],
);

/// `LifecycleHandler` (core/v1).
pub static LIFECYCLE_HANDLER: MessageDesc = message(
    "LifecycleHandler",
    &[
        ptr(1, "exec", Kind::Message(&EXEC_ACTION)),
        ptr(2, "httpGet", Kind::Message(&HTTP_GET_ACTION)),
        ptr(3, "tcpSocket", Kind::Message(&TCP_SOCKET_ACTION)),
        ptr(4, "sleep", Kind::Message(&SLEEP_ACTION)),
    ],
);

/// `SleepAction` (core/v1).
pub static SLEEP_ACTION: MessageDesc = message("SleepAction", &[req(1, "seconds", Kind::Int64)]);
