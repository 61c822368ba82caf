//! meta/v1 messages every object shares: ObjectMeta and its parts, label selectors, conditions.

use super::{Kind, MapValue, MessageDesc, map, message, opt, ptr, rep, req};

/// `ObjectMeta` (meta/v1).
pub static OBJECT_META: MessageDesc = message(
    "ObjectMeta",
    &[
        opt(1, "name", Kind::String),
        opt(2, "generateName", Kind::String),
        opt(3, "namespace", Kind::String),
        opt(4, "selfLink", Kind::String),
        opt(5, "uid", Kind::String),
        opt(6, "resourceVersion", Kind::String),
        opt(7, "generation", Kind::Int64),
        opt(8, "creationTimestamp", Kind::Time),
        ptr(9, "deletionTimestamp", Kind::Time),
        ptr(10, "deletionGracePeriodSeconds", Kind::Int64),
        map(11, "labels", MapValue::String),
        map(12, "annotations", MapValue::String),
        rep(13, "ownerReferences", Kind::Message(&OWNER_REFERENCE)),
        rep(14, "finalizers", Kind::String),
        rep(17, "managedFields", Kind::Message(&MANAGED_FIELDS_ENTRY)),
    ],
);

/// `OwnerReference` (meta/v1).
pub static OWNER_REFERENCE: MessageDesc = message(
    "OwnerReference",
    &[
        req(5, "apiVersion", Kind::String),
        req(1, "kind", Kind::String),
        req(3, "name", Kind::String),
        req(4, "uid", Kind::String),
        ptr(6, "controller", Kind::Bool),
        ptr(7, "blockOwnerDeletion", Kind::Bool),
    ],
);

/// `ManagedFieldsEntry` (meta/v1).
pub static MANAGED_FIELDS_ENTRY: MessageDesc = message(
    "ManagedFieldsEntry",
    &[
        opt(1, "manager", Kind::String),
        opt(2, "operation", Kind::String),
        opt(3, "apiVersion", Kind::String),
        ptr(4, "time", Kind::Time),
        opt(6, "fieldsType", Kind::String),
        ptr(7, "fieldsV1", Kind::RawJson),
        opt(8, "subresource", Kind::String),
    ],
);

/// `LabelSelector` (meta/v1).
pub static LABEL_SELECTOR: MessageDesc = message(
    "LabelSelector",
    &[
        map(1, "matchLabels", MapValue::String),
        rep(
            2,
            "matchExpressions",
            Kind::Message(&LABEL_SELECTOR_REQUIREMENT),
        ),
    ],
);

/// `LabelSelectorRequirement` (meta/v1).
pub static LABEL_SELECTOR_REQUIREMENT: MessageDesc = message(
    "LabelSelectorRequirement",
    &[
        req(1, "key", Kind::String),
        req(2, "operator", Kind::String),
        rep(3, "values", Kind::String),
    ],
);

/// `Condition` (meta/v1).
pub static CONDITION: MessageDesc = message(
    "Condition",
    &[
        req(1, "type", Kind::String),
        req(2, "status", Kind::String),
        opt(3, "observedGeneration", Kind::Int64),
        opt(4, "lastTransitionTime", Kind::Time),
        req(5, "reason", Kind::String),
        req(6, "message", Kind::String),
    ],
);
