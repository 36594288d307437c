//! Entra ID access tokens for an application with a client secret: the OAuth2
//! client-credentials grant to `{authority}/{tenant}/oauth2/v2.0/token`, scoped to Azure AI
//! services (Azure OpenAI).

use super::token::{Fetch, HttpClient, Token, post_form};
use crate::extproc::runtime::Secret;

/// Where Entra ID answers unless `--azure-authority-host` (`AZURE_AUTHORITY_HOST`, the Azure
/// SDKs' variable) names another cloud.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The scope of Azure OpenAI and the other Azure AI services.
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

pub(super) struct ClientSecretFetch {
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

impl ClientSecretFetch {
    pub fn url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority.trim_end_matches('/'), self.tenant_id)
    }
}

impl Fetch for ClientSecretFetch {
    async fn fetch(&self, http: &HttpClient) -> Result<Token, String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", COGNITIVE_SERVICES_SCOPE),
        ];
        post_form(http, &self.url(), &form).await
    }
}
