//! `aigateway.envoyproxy.io` `BackendSecurityPolicy`: the credential aixds injects for the
//! AIServiceBackends (or InferencePools) it targets.
//!
//! Every type names one Secret ([`BackendSecurityPolicySpec::secret_ref`]) whose content
//! [`BackendSecurityPolicySpec::secret_problem`] judges (see [`super::credential_files`] for the
//! cloud credential files). What aixds cannot do yet is refused with a message that says so:
//! the OIDC and workload identity exchanges, and the cloud SDKs' ambient credentials (no
//! `credentialsFile`).

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::credential_files::{aws_keys, azure_client_secret, gcp_service_account};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_credentials: Option<Box<AzureCredentials>>,
    #[serde(default, rename = "awsCredentials", skip_serializing_if = "Option::is_none")]
    pub aws_credentials: Option<Box<AwsCredentials>>,
    #[serde(default, rename = "gcpCredentials", skip_serializing_if = "Option::is_none")]
    pub gcp_credentials: Option<Box<GcpCredentials>>,
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

/// `awsCredentials`: SigV4 keys for AWS (Bedrock), from a shared-credentials file in a Secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    /// The region requests are signed for (`us-east-1`, ...).
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<AwsCredentialsFile>,
    /// Kept so that upstream manifests apply; refused: the STS exchange is not done yet.
    #[serde(default, rename = "oidcExchangeToken", skip_serializing_if = "Option::is_none")]
    pub oidc_exchange_token: Option<AwsOidcExchangeToken>,
}

/// A Secret whose `credentials` key holds an AWS shared-credentials (INI) file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentialsFile {
    pub secret_ref: SecretObjectReference,
    /// The profile (section) of the file to use; `default` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl AwsCredentialsFile {
    pub fn profile(&self) -> &str {
        self.profile.as_deref().filter(|p| !p.is_empty()).unwrap_or(DEFAULT_AWS_PROFILE)
    }
}

/// The profile an [`AwsCredentialsFile`] names when it names none.
pub const DEFAULT_AWS_PROFILE: &str = "default";

/// An OIDC token to exchange for a provider's credentials, as Envoy AI Gateway describes it.
/// aixds keeps it but does not do the exchange yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcExchange {
    /// Envoy Gateway's OIDC settings (provider, client id, client secret reference, scopes).
    #[serde(default)]
    pub oidc: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsOidcExchangeToken {
    #[serde(flatten)]
    pub oidc: OidcExchange,
    #[serde(default)]
    pub aws_role_arn: String,
}

/// `gcpCredentials`: a service account key that aixds trades for OAuth2 access tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentials {
    /// The project of the Vertex AI endpoint (`/v1/projects/{project}/...`).
    pub project_name: String,
    /// Its region (`/locations/{region}/...`).
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<GcpCredentialsFile>,
    /// Kept so that upstream manifests apply; refused: the exchange is not done yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity_federation_config: Option<GcpWorkloadIdentityFederation>,
}

/// A Secret whose `service_account.json` key holds a service account key file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentialsFile {
    pub secret_ref: SecretObjectReference,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpWorkloadIdentityFederation {
    #[serde(default, rename = "projectID")]
    pub project_id: String,
    #[serde(default)]
    pub workload_identity_provider_name: String,
    #[serde(default)]
    pub workload_identity_pool_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_exchange_token: Option<OidcExchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_impersonation: Option<GcpServiceAccountImpersonation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpServiceAccountImpersonation {
    #[serde(default)]
    pub service_account_name: String,
}

/// `azureCredentials`: an Entra ID application whose client secret aixds trades for access
/// tokens (client-credentials grant).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AzureCredentials {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    /// A Secret whose `client-secret` key holds the application's client secret.
    #[serde(default, rename = "clientSecretRef", skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretObjectReference>,
    /// Kept so that upstream manifests apply; refused: the exchange is not done yet.
    #[serde(default, rename = "oidcExchangeToken", skip_serializing_if = "Option::is_none")]
    pub oidc_exchange_token: Option<OidcExchange>,
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

/// Why a policy gives no Secret to read: a field is wrong, or it asks for what aixds does not do
/// yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    Invalid(String),
    Unsupported(String),
}

impl BackendSecurityPolicySpec {
    /// The Secret the policy's credential is read from; why there is none otherwise (a missing
    /// or invalid section, an exchange aixds does not do yet).
    pub fn secret_ref(&self) -> Result<&SecretObjectReference, PolicyError> {
        let ty = self.policy_type;
        let missing = |field: &str| PolicyError::Invalid(format!("type {ty} needs spec.{field}"));
        fn key_ref(
            section: &Option<SecretKeyRef>,
            missing: PolicyError,
        ) -> Result<&SecretObjectReference, PolicyError> {
            section.as_ref().map(|s| &s.secret_ref).ok_or(missing)
        }
        match ty {
            SecurityPolicyType::APIKey => key_ref(&self.api_key, missing("apiKey.secretRef")),
            SecurityPolicyType::AnthropicAPIKey => {
                key_ref(&self.anthropic_api_key, missing("anthropicAPIKey.secretRef"))
            }
            SecurityPolicyType::AzureAPIKey => {
                key_ref(&self.azure_api_key, missing("azureAPIKey.secretRef"))
            }
            SecurityPolicyType::AWSCredentials => {
                let aws = self.aws_credentials.as_ref().ok_or_else(|| missing("awsCredentials"))?;
                if let Err(why) = name_part(&aws.region) {
                    return Err(PolicyError::Invalid(format!("awsCredentials.region {why}")));
                }
                if aws.oidc_exchange_token.is_some() {
                    return Err(PolicyError::Unsupported(
                        "awsCredentials.oidcExchangeToken: exchanging an OIDC token for AWS \
                         credentials (STS AssumeRoleWithWebIdentity) is not done yet; use \
                         credentialsFile"
                            .into(),
                    ));
                }
                aws.credentials_file.as_ref().map(|f| &f.secret_ref).ok_or_else(|| {
                    PolicyError::Unsupported(
                        "awsCredentials without credentialsFile: the AWS default credential \
                         chain (environment, IRSA, Pod Identity, instance roles) is not supported \
                         yet; give credentialsFile"
                            .into(),
                    )
                })
            }
            SecurityPolicyType::GCPCredentials => {
                let gcp = self.gcp_credentials.as_ref().ok_or_else(|| missing("gcpCredentials"))?;
                if let Err(why) = name_part(&gcp.project_name) {
                    return Err(PolicyError::Invalid(format!("gcpCredentials.projectName {why}")));
                }
                if let Err(why) = name_part(&gcp.region) {
                    return Err(PolicyError::Invalid(format!("gcpCredentials.region {why}")));
                }
                if gcp.workload_identity_federation_config.is_some() {
                    return Err(PolicyError::Unsupported(
                        "gcpCredentials.workloadIdentityFederationConfig: the workload identity \
                         federation exchange is not done yet; use credentialsFile"
                            .into(),
                    ));
                }
                gcp.credentials_file.as_ref().map(|f| &f.secret_ref).ok_or_else(|| {
                    PolicyError::Unsupported(
                        "gcpCredentials without credentialsFile: Application Default Credentials \
                         (GKE workload identity, the metadata server) are not supported yet; give \
                         credentialsFile"
                            .into(),
                    )
                })
            }
            SecurityPolicyType::AzureCredentials => {
                let azure =
                    self.azure_credentials.as_ref().ok_or_else(|| missing("azureCredentials"))?;
                if azure.client_id.is_empty() {
                    return Err(missing("azureCredentials.clientID"));
                }
                if let Err(why) = tenant_id(&azure.tenant_id) {
                    return Err(PolicyError::Invalid(format!("azureCredentials.tenantID {why}")));
                }
                if azure.oidc_exchange_token.is_some() {
                    return Err(PolicyError::Unsupported(
                        "azureCredentials.oidcExchangeToken: exchanging an OIDC token for an \
                         Entra ID token is not done yet; use clientSecretRef"
                            .into(),
                    ));
                }
                azure
                    .client_secret_ref
                    .as_ref()
                    .ok_or_else(|| missing("azureCredentials.clientSecretRef"))
            }
        }
    }

    /// Why `secret`, the one [`Self::secret_ref`] names, gives no usable credential, if it gives
    /// none. The message names the key and field at fault, never a value.
    pub fn secret_problem(&self, secret: &SecretData) -> Option<String> {
        match self.policy_type {
            SecurityPolicyType::APIKey
            | SecurityPolicyType::AnthropicAPIKey
            | SecurityPolicyType::AzureAPIKey => api_key(secret).err(),
            SecurityPolicyType::AWSCredentials => {
                let file = self.aws_credentials.as_ref()?.credentials_file.as_ref()?;
                aws_keys(secret, file.profile()).err()
            }
            SecurityPolicyType::GCPCredentials => gcp_service_account(secret).err(),
            SecurityPolicyType::AzureCredentials => azure_client_secret(secret).err(),
        }
    }
}

/// A region or project name, which goes into a signature's scope or a request's path: lowercase
/// letters, digits and `-` (and `.` and `:` for domain-scoped GCP projects).
fn name_part(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b);
    if !name.bytes().all(allowed) {
        return Err("holds characters other than lowercase letters, digits, '-', '.' and ':'");
    }
    Ok(())
}

/// An Entra ID tenant: a GUID or a domain name, which goes into the token endpoint's path.
fn tenant_id(tenant: &str) -> Result<(), &'static str> {
    if tenant.is_empty() {
        return Err("is empty");
    }
    if !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        || tenant.starts_with('.')
    {
        return Err("is not a tenant ID or domain name (letters, digits, '-' and '.')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BackendSecurityPolicySpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn cloud_sections_name_their_secret_or_say_what_is_not_done() {
        let aws = spec(
            "{type: AWSCredentials, awsCredentials: {region: us-east-1, credentialsFile: \
             {secretRef: {name: aws}}}}",
        );
        assert_eq!(aws.secret_ref().map(|s| s.name.as_str()), Ok("aws"));
        let file = aws.aws_credentials.as_ref().unwrap().credentials_file.as_ref().unwrap();
        assert_eq!(file.profile(), DEFAULT_AWS_PROFILE);
        let unsupported = |yaml: &str, words: &str| match spec(yaml).secret_ref() {
            Err(PolicyError::Unsupported(m)) => assert!(m.contains(words), "{m}"),
            other => panic!("{yaml}: {other:?}"),
        };
        unsupported(
            "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
            "default credential chain",
        );
        unsupported(
            "{type: AWSCredentials, awsCredentials: {region: us-east-1, credentialsFile: \
             {secretRef: {name: a}}, oidcExchangeToken: {awsRoleArn: r, oidc: {clientID: c}}}}",
            "STS AssumeRoleWithWebIdentity",
        );
        unsupported(
            "{type: GCPCredentials, gcpCredentials: {projectName: p, region: r, \
             workloadIdentityFederationConfig: {projectID: p}}}",
            "workload identity federation",
        );
        unsupported(
            "{type: GCPCredentials, gcpCredentials: {projectName: p, region: r}}",
            "Application Default Credentials",
        );
        unsupported(
            "{type: AzureCredentials, azureCredentials: {clientID: c, tenantID: t, \
             oidcExchangeToken: {oidc: {}}}}",
            "OIDC token for an Entra ID token",
        );
        let invalid = |yaml: &str, words: &str| match spec(yaml).secret_ref() {
            Err(PolicyError::Invalid(m)) => assert!(m.contains(words), "{m}"),
            other => panic!("{yaml}: {other:?}"),
        };
        invalid("{type: AWSCredentials}", "needs spec.awsCredentials");
        invalid(
            "{type: AWSCredentials, awsCredentials: {region: 'us east'}}",
            "awsCredentials.region",
        );
        invalid(
            "{type: GCPCredentials, gcpCredentials: {projectName: '', region: r}}",
            "projectName is empty",
        );
        invalid(
            "{type: AzureCredentials, azureCredentials: {clientID: c, tenantID: 'a/b'}}",
            "tenantID",
        );
        invalid(
            "{type: AzureCredentials, azureCredentials: {clientID: c, tenantID: t}}",
            "clientSecretRef",
        );
    }
}
