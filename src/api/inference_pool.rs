//! `inference.networking.k8s.io/v1` `InferencePool`: a set of model-server pods selected by labels,
//! fronted by an endpoint picker (EPP).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    namespaced,
    status = "InferencePoolStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub target_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_picker_ref: Option<EndpointPickerRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Port {
    pub number: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureMode {
    FailOpen,
    #[default]
    FailClose,
}

/// GIE status shape: conditions per parent Gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InferencePoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<PoolParentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolParentStatus {
    pub parent_ref: super::ObjectReference,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// `appProtocol` `kubernetes.io/h2c`: HTTP/2 over cleartext, with prior knowledge.
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// The protocol of a pool's model servers, as its `appProtocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// `http`, or no `appProtocol`: HTTP/1.1.
    Http,
    /// `kubernetes.io/h2c`.
    H2c,
}

impl InferencePoolSpec {
    /// The protocol its model servers speak (HTTP/1.1 for a value [`Self::validate`] refuses).
    pub fn app_protocol(&self) -> AppProtocol {
        match self.app_protocol.as_deref() {
            Some(H2C_APP_PROTOCOL) => AppProtocol::H2c,
            _ => AppProtocol::Http,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) =
            self.app_protocol.as_deref().filter(|p| !["http", H2C_APP_PROTOCOL].contains(p))
        {
            return Err(format!(
                "spec.appProtocol {p:?} is not one of \"http\" and \"{H2C_APP_PROTOCOL}\""
            ));
        }
        if self.selector.match_labels.is_empty() {
            return Err("spec.selector.matchLabels is empty: it would select no pods".into());
        }
        if self.target_ports.is_empty() {
            return Err("spec.targetPorts is empty".into());
        }
        if let Some(p) = self.target_ports.iter().find(|p| p.number == 0) {
            return Err(format!("spec.targetPorts has invalid port {}", p.number));
        }
        if let Some(epp) = &self.endpoint_picker_ref {
            let kind = epp.kind.as_deref().unwrap_or("Service");
            let group = epp.group.as_deref().unwrap_or("");
            if kind != "Service" || !group.is_empty() {
                return Err(format!("spec.endpointPickerRef must be a core Service, not {kind}"));
            }
        }
        Ok(())
    }

    /// Whether a pod with these labels belongs to the pool.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.match_labels.is_empty()
            && self.selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}
