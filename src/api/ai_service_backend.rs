//! `aigateway.envoyproxy.io` `AIServiceBackend`: one LLM provider endpoint and the API schema it
//! speaks. Its `backendRef` names an Envoy Gateway `Backend` or an inference `InferencePool`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BodyMutation, HeaderMutation, ObjectReference};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aigateway.envoyproxy.io",
    version = "v1beta1",
    kind = "AIServiceBackend",
    namespaced,
    status = "super::ObjectStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct AIServiceBackendSpec {
    #[serde(default)]
    pub schema: VersionedAPISchema,
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": BACKEND_REF_CEL,
        "message": BACKEND_REF_MESSAGE,
    }]))]
    pub backend_ref: ObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_mutation: Option<HeaderMutation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_mutation: Option<BodyMutation>,
}

/// The same rule the graph applies to file input, for the API server to apply on write.
const BACKEND_REF_CEL: &str = "(has(self.group) && self.group == 'gateway.envoyproxy.io' && \
     has(self.kind) && self.kind == 'Backend') || (has(self.group) && self.group == \
     'inference.networking.k8s.io' && has(self.kind) && self.kind == 'InferencePool')";
pub const BACKEND_REF_MESSAGE: &str = "backendRef must be a gateway.envoyproxy.io Backend or an \
     inference.networking.k8s.io InferencePool";

/// What an AIServiceBackend's `backendRef` points at, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTarget {
    Backend,
    InferencePool,
}

impl AIServiceBackendSpec {
    /// The checked target kind, or the message for a reference of any other kind.
    pub fn backend_target(&self) -> Result<BackendTarget, String> {
        let r = &self.backend_ref;
        match (r.group.as_deref().unwrap_or(""), r.kind.as_deref().unwrap_or("Service")) {
            (super::ENVOY_GATEWAY_GROUP, "Backend") => Ok(BackendTarget::Backend),
            (super::INFERENCE_GROUP, "InferencePool") => Ok(BackendTarget::InferencePool),
            (group, kind) => {
                let gk =
                    if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
                Err(format!("{BACKEND_REF_MESSAGE}, not {gk} {:?}", r.name))
            }
        }
    }
}

/// The API schema a backend speaks, e.g. `OpenAI` or `Anthropic`, with an optional version
/// (Azure's `api-version`) and path prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionedAPISchema {
    pub name: APISchema,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum APISchema {
    #[default]
    OpenAI,
    Anthropic,
    AzureOpenAI,
    AWSBedrock,
    AWSAnthropic,
    GCPVertexAI,
    GCPAnthropic,
    Cohere,
}

impl APISchema {
    pub const ALL: [APISchema; 8] = [
        APISchema::OpenAI,
        APISchema::Anthropic,
        APISchema::AzureOpenAI,
        APISchema::AWSBedrock,
        APISchema::AWSAnthropic,
        APISchema::GCPVertexAI,
        APISchema::GCPAnthropic,
        APISchema::Cohere,
    ];
}
