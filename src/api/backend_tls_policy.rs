//! Gateway API `BackendTLSPolicy`: asks for TLS to a Backend, with the hostname to send as SNI
//! and to verify the certificate against.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalPolicyTargetReference;

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gateway.networking.k8s.io", version = "v1", kind = "BackendTLSPolicy", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct BackendTLSPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    #[serde(default)]
    pub validation: BackendTLSValidation,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTLSValidation {
    #[serde(default)]
    pub hostname: String,
    #[serde(default, rename = "wellKnownCACertificates", skip_serializing_if = "Option::is_none")]
    pub well_known_ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub ca_certificate_refs: Vec<serde_json::Value>,
}

impl BackendTLSPolicySpec {
    pub fn validate(&self) -> Result<(), String> {
        let v = &self.validation;
        if v.hostname.is_empty() {
            return Err("spec.validation.hostname is required".into());
        }
        if !v.ca_certificate_refs.is_empty() {
            return Err("spec.validation.caCertificateRefs are not supported yet; use \
                        wellKnownCACertificates: System"
                .into());
        }
        match v.well_known_ca_certificates.as_deref() {
            Some("System") => Ok(()),
            other => Err(format!(
                "spec.validation.wellKnownCACertificates must be System, not {:?}",
                other.unwrap_or("")
            )),
        }
    }
}
