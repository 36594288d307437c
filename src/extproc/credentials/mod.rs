//! Cloud credentials the upstream phase puts on requests: AWS SigV4 signatures
//! ([`aws`]), and access tokens for GCP service accounts ([`gcp`]) and Entra ID applications
//! ([`azure`]) fetched and refreshed off the request path ([`token`]).
//!
//! Takes: the credentials a BackendSecurityPolicy's Secret holds (read and checked by
//! `api::credential_files`). Gives: a signer, or a [`TokenSource`] per policy and credential,
//! kept in [`Credentials`] across rebuilds of the runtime config: a batch that leaves a policy
//! and its Secret as they were keeps its source and token; one that changes either starts a
//! new source; one that removes the policy stops its refresh.

pub mod aws;
pub mod azure;
pub mod gcp;
mod token;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use aws::SigV4;
pub use token::TokenSource;

use crate::api::{GCP_SERVICE_ACCOUNT_KEY, ObjectKey, SecretData, gcp_service_account};
use crate::extproc::runtime::Secret;

/// Settings that are not in any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialOptions {
    /// Entra ID's authority host (scheme and host), for `AzureCredentials`.
    pub azure_authority_host: String,
}

impl Default for CredentialOptions {
    fn default() -> Self {
        CredentialOptions { azure_authority_host: azure::DEFAULT_AUTHORITY_HOST.into() }
    }
}

/// A token source's identity: its policy, and a digest of everything its tokens depend on
/// (the Secret's content among them).
pub type SourceKey = (ObjectKey, [u8; 32]);

/// The token sources of the current runtime config, shared by every config built after it.
#[derive(Clone, Default)]
pub struct Credentials {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    options: CredentialOptions,
    sources: Mutex<HashMap<SourceKey, Arc<TokenSource>>>,
    /// Made on first use: a config without token sources never loads the TLS roots.
    http: OnceLock<Result<Arc<token::HttpClient>, String>>,
    metrics: Arc<TokenMetrics>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources = self.inner.sources.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Credentials").field("token_sources", &sources).finish()
    }
}

impl Credentials {
    pub fn new(options: CredentialOptions) -> Credentials {
        Credentials { inner: Arc::new(Inner { options, ..Default::default() }) }
    }

    /// Starts building a runtime config's credentials: the sources it asks for are kept (or
    /// started), and [`Rebuild::finish_keeping`] stops the others.
    pub fn rebuild(&self) -> Rebuild<'_> {
        Rebuild { credentials: self, used: HashSet::new() }
    }

    /// The token fetch counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<TokenMetrics> {
        self.inner.metrics.clone()
    }
}

/// One rebuild of the runtime config, as far as its token sources go.
pub struct Rebuild<'a> {
    credentials: &'a Credentials,
    used: HashSet<SourceKey>,
}

impl Rebuild<'_> {
    /// The token source of the GCP service account key in `secret` for `policy`: the one
    /// already running for the same key file, or a new one (the key is parsed only then).
    pub fn gcp(
        &mut self,
        policy: &ObjectKey,
        secret: &SecretData,
    ) -> Result<Arc<TokenSource>, String> {
        let key_file = secret.values.get(GCP_SERVICE_ACCOUNT_KEY).map(Vec::as_slice);
        let key = (policy.clone(), digest(&[b"gcp", key_file.unwrap_or_default()]));
        self.source(key, |http, metrics| {
            let account = gcp_service_account(secret)?;
            let fetch = gcp::ServiceAccountFetch { account };
            Ok(TokenSource::start("GCPCredentials", policy_name(policy), fetch, http, metrics))
        })
    }

    /// The token source of an Entra ID application for `policy`.
    pub fn azure(
        &mut self,
        policy: &ObjectKey,
        tenant_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Arc<TokenSource>, String> {
        let authority = self.credentials.inner.options.azure_authority_host.clone();
        let parts: [&[u8]; 5] = [
            b"azure",
            authority.as_bytes(),
            tenant_id.as_bytes(),
            client_id.as_bytes(),
            client_secret.as_bytes(),
        ];
        let key = (policy.clone(), digest(&parts));
        let fetch = azure::ClientSecretFetch {
            authority,
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
        };
        crate::api::token_endpoint(&fetch.url())
            .map_err(|why| format!("the Entra ID token endpoint {why} (--azure-authority-host)"))?;
        self.source(key, |http, metrics| {
            Ok(TokenSource::start("AzureCredentials", policy_name(policy), fetch, http, metrics))
        })
    }

    fn source(
        &mut self,
        key: SourceKey,
        start: impl FnOnce(Arc<token::HttpClient>, Arc<TokenMetrics>) -> Result<TokenSource, String>,
    ) -> Result<Arc<TokenSource>, String> {
        let inner = &self.credentials.inner;
        let mut sources = inner.sources.lock().unwrap_or_else(|e| e.into_inner());
        let source = match sources.get(&key) {
            Some(source) => source.clone(),
            None => {
                let http = inner.http.get_or_init(|| token::http_client().map(Arc::new)).clone()?;
                let source = Arc::new(start(http, inner.metrics.clone())?);
                sources.insert(key.clone(), source.clone());
                source
            }
        };
        self.used.insert(key);
        Ok(source)
    }

    /// The sources asked for since the last call.
    pub fn take_used(&mut self) -> HashSet<SourceKey> {
        std::mem::take(&mut self.used)
    }

    /// Stops and forgets every source but those in `keep` and those asked for since the last
    /// [`Rebuild::take_used`].
    pub fn finish_keeping<'k>(mut self, keep: impl IntoIterator<Item = &'k SourceKey>) {
        self.used.extend(keep.into_iter().cloned());
        let mut sources = self.credentials.inner.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|key, source| {
            let keep = self.used.contains(key);
            if !keep {
                source.stop();
            }
            keep
        });
    }
}

fn policy_name(policy: &ObjectKey) -> String {
    format!("{} {}/{}", policy.kind, policy.namespace, policy.name)
}

/// SHA-256 of length-prefixed parts, so that no two different lists of parts collide.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Token fetches by policy type and outcome.
#[derive(Debug, Default)]
pub struct TokenMetrics {
    counts: Mutex<BTreeMap<(&'static str, bool), AtomicU64>>,
}

impl TokenMetrics {
    fn fetched(&self, kind: &'static str, ok: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.entry((kind, ok)).or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// `aixds_credential_token_fetches_total`, in the Prometheus text format.
    pub fn render(&self, w: &mut String) {
        let name = "aixds_credential_token_fetches_total";
        let _ = writeln!(w, "# HELP {name} Access token fetches for cloud credentials.");
        let _ = writeln!(w, "# TYPE {name} counter");
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for ((kind, ok), n) in counts.iter() {
            let result = if *ok { "ok" } else { "error" };
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(w, "{name}{{type=\"{kind}\",result=\"{result}\"}} {n}");
        }
    }
}
