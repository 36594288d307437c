//! `aigateway.envoyproxy.io` `BackendSecurityPolicy`: the credential aixds injects for the
//! AIServiceBackends (or InferencePools) it targets.

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalPolicyTargetReference, SecretData, SecretObjectReference};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aigateway.envoyproxy.io",
    version = "v1beta1",
    kind = "BackendSecurityPolicy",
    namespaced,
    status = "super::ObjectStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BackendSecurityPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    #[serde(rename = "type")]
    pub policy_type: SecurityPolicyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretKeyRef>,
    #[serde(default, rename = "anthropicAPIKey", skip_serializing_if = "Option::is_none")]
    pub anthropic_api_key: Option<SecretKeyRef>,
    #[serde(default, rename = "azureAPIKey", skip_serializing_if = "Option::is_none")]
    pub azure_api_key: Option<SecretKeyRef>,
    /// Parsed so that upstream manifests apply; reported as unsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub azure_credentials: Option<serde_json::Value>,
    #[serde(default, rename = "awsCredentials", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub aws_credentials: Option<serde_json::Value>,
    #[serde(default, rename = "gcpCredentials", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub gcp_credentials: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecurityPolicyType {
    #[default]
    APIKey,
    AnthropicAPIKey,
    AzureAPIKey,
    AzureCredentials,
    AWSCredentials,
    GCPCredentials,
}

impl fmt::Display for SecurityPolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A Secret holding the key, read from `apiKey` in its data unless `key` names another entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub secret_ref: SecretObjectReference,
}

/// The data key that holds the credential in the referenced Secret.
pub const API_KEY_SECRET_KEY: &str = "apiKey";

/// The API key `secret` holds, or why it holds none a request could carry. Surrounding
/// whitespace is dropped: Secrets written with `echo` end in a newline, which no header may
/// carry. The error never quotes the value.
pub fn api_key(secret: &SecretData) -> Result<&str, String> {
    let value = secret
        .values
        .get(API_KEY_SECRET_KEY)
        .ok_or_else(|| format!("has no {API_KEY_SECRET_KEY:?} key"))?;
    let key = std::str::from_utf8(value)
        .map_err(|_| format!("{API_KEY_SECRET_KEY:?} is not UTF-8 text"))?
        .trim();
    if key.is_empty() {
        return Err(format!("{API_KEY_SECRET_KEY:?} is empty"));
    }
    if !key.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(format!(
            "{API_KEY_SECRET_KEY:?} holds characters an HTTP header cannot carry (only printable \
             ASCII)"
        ));
    }
    Ok(key)
}

impl BackendSecurityPolicySpec {
    /// The Secret reference for the supported types; an error message for the others or for a
    /// type whose section is missing.
    pub fn secret_ref(&self) -> Result<&SecretObjectReference, String> {
        let (section, field) = match self.policy_type {
            SecurityPolicyType::APIKey => (&self.api_key, "apiKey"),
            SecurityPolicyType::AnthropicAPIKey => (&self.anthropic_api_key, "anthropicAPIKey"),
            SecurityPolicyType::AzureAPIKey => (&self.azure_api_key, "azureAPIKey"),
            other => return Err(format!("type {other} is not supported yet")),
        };
        section
            .as_ref()
            .map(|s| &s.secret_ref)
            .ok_or_else(|| format!("type {} needs spec.{field}.secretRef", self.policy_type))
    }
}
