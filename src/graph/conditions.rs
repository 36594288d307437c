//! Conditions: what the graph says about each object, in the shape Kubernetes status uses.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConditionType {
    Accepted,
    ResolvedRefs,
    /// A Gateway listener that shares its port with another in a way Envoy cannot serve. Its
    /// good state is `False` (reason `NoConflicts`), as in Gateway API.
    Conflicted,
    /// What Envoy runs: `True` once an Envoy has ACKed every resource compiled from the object
    /// (written by the status writer, which sees the Envoys).
    Programmed,
    /// A GatewayClass's Gateway API version is one aixds reads.
    SupportedVersion,
}

impl ConditionType {
    /// The status that means all is well: `False` for `Conflicted`, `True` for the rest.
    pub fn good(self) -> bool {
        self != ConditionType::Conflicted
    }
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
    /// An Envoy rejected (NACKed) a resource compiled from the object; the message is
    /// "<node id>: <Envoy's error>".
    RejectedByEnvoy,
    /// The reasons Gateway API gives Gateways, their listeners and the routes attached to them.
    Programmed,
    Pending,
    NoConflicts,
    SupportedVersion,
    ListenersNotValid,
    UnsupportedProtocol,
    UnsupportedValue,
    ProtocolConflict,
    HostnameConflict,
    InvalidCertificateRef,
    InvalidRouteKinds,
    RefNotPermitted,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
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
    /// The condition saying all is well.
    pub fn ok(type_: ConditionType) -> Self {
        let reason = match type_ {
            ConditionType::Accepted => Reason::Accepted,
            ConditionType::ResolvedRefs => Reason::ResolvedRefs,
            ConditionType::Conflicted => Reason::NoConflicts,
            ConditionType::Programmed => Reason::Programmed,
            ConditionType::SupportedVersion => Reason::SupportedVersion,
        };
        Condition { type_, status: type_.good(), reason, message: String::new() }
    }

    /// The condition saying what is wrong (`Conflicted=True`, the others `False`).
    pub fn failed(type_: ConditionType, reason: Reason, message: impl Into<String>) -> Self {
        Condition { type_, status: !type_.good(), reason, message: message.into() }
    }

    /// Whether the condition says all is well.
    pub fn is_good(&self) -> bool {
        self.status == self.type_.good()
    }
}

/// One problem found while checking an object on its own (no lookups of other objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub type_: ConditionType,
    pub reason: Reason,
    pub message: String,
}
