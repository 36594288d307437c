//! Conditions: what the graph says about each object, in the shape Kubernetes status uses.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConditionType {
    Accepted,
    ResolvedRefs,
}

/// Why a condition has its status. The `True` reasons mirror the type's name, as in Gateway API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    Accepted,
    ResolvedRefs,
    /// A field's value is wrong; the message names the field.
    Invalid,
    /// Well-formed but not something aixds handles yet.
    Unsupported,
    /// Two sources define the object differently; the first definition is used (with
    /// `Accepted=True`, as Gateway API reports a Gateway that works with some listeners left out).
    Conflict,
    InvalidKind,
    BackendNotFound,
    NoMatchingParent,
    SecretNotFound,
    /// The Secret exists but holds no usable key; the message says what is wrong, never the value.
    InvalidSecret,
    /// A BackendSecurityPolicy targeting the backend is not accepted (e.g. an unsupported type),
    /// so the backend has no credential and is not served.
    InvalidPolicy,
    TargetNotFound,
    /// The InferencePool's endpoint picker Service is missing or wrong.
    InvalidExtensionRef,
    /// A backend the rule relies on is itself unresolved or rejected.
    BackendNotResolved,
    /// A listener's certificateRef names no usable `kubernetes.io/tls` Secret.
    InvalidCertificateRef,
    /// A reference into another namespace that no ReferenceGrant there permits.
    RefNotPermitted,
    /// An Envoy rejected (NACKed) a resource compiled from the object; the message is
    /// "<node id>: <Envoy's error>".
    RejectedByEnvoy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    #[serde(serialize_with = "true_false")]
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// Kubernetes spells condition status as the strings `True` and `False`.
fn true_false<S: serde::Serializer>(status: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *status { "True" } else { "False" })
}

impl Condition {
    pub fn ok(type_: ConditionType) -> Self {
        let reason = match type_ {
            ConditionType::Accepted => Reason::Accepted,
            ConditionType::ResolvedRefs => Reason::ResolvedRefs,
        };
        Condition { type_, status: true, reason, message: String::new() }
    }

    pub fn failed(type_: ConditionType, reason: Reason, message: impl Into<String>) -> Self {
        Condition { type_, status: false, reason, message: message.into() }
    }
}

/// One problem found while checking an object on its own (no lookups of other objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub type_: ConditionType,
    pub reason: Reason,
    pub message: String,
}
