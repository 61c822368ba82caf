//! apps/v1 Deployment and ReplicaSet.

use super::meta::{LABEL_SELECTOR, OBJECT_META};
use super::pod::POD_TEMPLATE_SPEC;
use super::{Kind, MessageDesc, message, opt, ptr, rep, req};

/// `Deployment` (apps/v1).
pub static DEPLOYMENT: MessageDesc = message(
    "Deployment",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&DEPLOYMENT_SPEC)),
        req(3, "status", Kind::Message(&DEPLOYMENT_STATUS)),
    ],
);

/// `DeploymentSpec` (apps/v1).
pub static DEPLOYMENT_SPEC: MessageDesc = message(
    "DeploymentSpec",
    &[
        ptr(1, "replicas", Kind::Int32),
        ptr(2, "selector", Kind::Message(&LABEL_SELECTOR)),
        req(3, "template", Kind::Message(&POD_TEMPLATE_SPEC)),
        req(4, "strategy", Kind::Message(&DEPLOYMENT_STRATEGY)),
        opt(5, "minReadySeconds", Kind::Int32),
        ptr(6, "revisionHistoryLimit", Kind::Int32),
        opt(7, "paused", Kind::Bool),
        ptr(9, "progressDeadlineSeconds", Kind::Int32),
    ],
);

/// `DeploymentStrategy` (apps/v1).
pub static DEPLOYMENT_STRATEGY: MessageDesc = message(
    "DeploymentStrategy",
    &[
        opt(1, "type", Kind::String),
        ptr(
            2,
            "rollingUpdate",
            Kind::Message(&ROLLING_UPDATE_DEPLOYMENT),
        ),
    ],
);

/// `RollingUpdateDeployment` (apps/v1).
pub static ROLLING_UPDATE_DEPLOYMENT: MessageDesc = message(
    "RollingUpdateDeployment",
    &[
        ptr(1, "maxUnavailable", Kind::IntOrString),
        ptr(2, "maxSurge", Kind::IntOrString),
    ],
);

/// `DeploymentStatus` (apps/v1).
pub static DEPLOYMENT_STATUS: MessageDesc = message(
    "DeploymentStatus",
    &[
        opt(1, "observedGeneration", Kind::Int64),
        opt(2, "replicas", Kind::Int32),
        opt(3, "updatedReplicas", Kind::Int32),
        opt(7, "readyReplicas", Kind::Int32),
        opt(4, "availableReplicas", Kind::Int32),
        opt(5, "unavailableReplicas", Kind::Int32),
        ptr(9, "terminatingReplicas", Kind::Int32),
        rep(6, "conditions", Kind::Message(&DEPLOYMENT_CONDITION)),
        ptr(8, "collisionCount", Kind::Int32),
    ],
);

/// `DeploymentCondition` (apps/v1).
pub static DEPLOYMENT_CONDITION: MessageDesc = message(
    "DeploymentCondition",
    &[
        req(1, "type", Kind::String),
        req(2, "status", Kind::String),
        opt(6, "lastUpdateTime", Kind::Time),
        opt(7, "lastTransitionTime", Kind::Time),
        opt(4, "reason", Kind::String),
        opt(5, "message", Kind::String),
    ],
);

/// `ReplicaSet` (apps/v1).
pub static REPLICA_SET: MessageDesc = message(
    "ReplicaSet",
    &[
        req(1, "metadata", Kind::Message(&OBJECT_META)),
        req(2, "spec", Kind::Message(&REPLICA_SET_SPEC)),
        req(3, "status", Kind::Message(&REPLICA_SET_STATUS)),
    ],
);

/// `ReplicaSetSpec` (apps/v1).
pub static REPLICA_SET_SPEC: MessageDesc = message(
    "ReplicaSetSpec",
    &[
        ptr(1, "replicas", Kind::Int32),
        opt(4, "minReadySeconds", Kind::Int32),
        ptr(2, "selector", Kind::Message(&LABEL_SELECTOR)),
        req(3, "template", Kind::Message(&POD_TEMPLATE_SPEC)),
    ],
);

/// `ReplicaSetStatus` (apps/v1).
pub static REPLICA_SET_STATUS: MessageDesc = message(
    "ReplicaSetStatus",
    &[
        req(1, "replicas", Kind::Int32),
        opt(2, "fullyLabeledReplicas", Kind::Int32),
        opt(4, "readyReplicas", Kind::Int32),
        opt(5, "availableReplicas", Kind::Int32),
        ptr(7, "terminatingReplicas", Kind::Int32),
        opt(3, "observedGeneration", Kind::Int64),
        rep(6, "conditions", Kind::Message(&REPLICA_SET_CONDITION)),
    ],
);

/// `ReplicaSetCondition` (apps/v1).
pub static REPLICA_SET_CONDITION: MessageDesc = message(
    "ReplicaSetCondition",
    &[
        req(1, "type", Kind::String),
        req(2, "status", Kind::String),
        opt(3, "lastTransitionTime", Kind::Time),
        opt(4, "reason", Kind::String),
        opt(5, "message", Kind::String),
    ],
);
