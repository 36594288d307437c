//! Access tokens fetched off the request path: one [`TokenSource`] per policy and credential,
//! refreshed by a task of its own before the token expires, read lock-free by requests.
//!
//! A source fetches at once, then again after 80% of the token's lifetime (at most 5 minutes
//! before it expires); a failed fetch is retried after 1, 2, 4, ... seconds (at most a minute)
//! while the token it has, if any, stays in use until it expires. A request never waits for a
//! fetch: [`TokenSource::token`] gives the current token or says why there is none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::TokenMetrics;
use crate::api::token_endpoint;
use crate::extproc::runtime::Secret;

/// A token endpoint that has not answered within this is given up on (and retried).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Retries after a failed fetch wait 1 s, doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// An access token and how long it lives from when it was received.
pub(super) struct Token {
    pub value: Secret,
    pub lifetime: Duration,
}

/// How a source gets a token: one call per fetch, each a fresh grant.
pub(super) trait Fetch: Send + Sync + 'static {
    fn fetch(&self, http: &HttpClient) -> impl Future<Output = Result<Token, String>> + Send;
}

#[derive(Default)]
struct State {
    token: Option<(Secret, Instant)>,
    /// The last fetch's failure, until one succeeds.
    problem: Option<String>,
}

/// One policy's tokens. Dropping the last handle stops its refresh task.
pub struct TokenSource {
    /// What is fetched, for metrics: `"GCPCredentials"`, `"AzureCredentials"`.
    kind: &'static str,
    /// Whose tokens these are, for messages: `BackendSecurityPolicy {namespace}/{name}`.
    policy: String,
    state: Arc<ArcSwap<State>>,
    task: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.load();
        f.debug_struct("TokenSource")
            .field("policy", &self.policy)
            .field("token", &state.token.as_ref().map(|_| "<redacted>"))
            .field("problem", &state.problem)
            .finish()
    }
}

impl TokenSource {
    /// Starts fetching with `fetch` on the current Tokio runtime; without one (a test building
    /// a config synchronously) the source never has a token and says so.
    pub(super) fn start(
        kind: &'static str,
        policy: String,
        fetch: impl Fetch,
        http: Arc<HttpClient>,
        metrics: Arc<TokenMetrics>,
    ) -> TokenSource {
        let state = Arc::new(ArcSwap::from_pointee(State::default()));
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let refresh = refresh(kind, policy.clone(), fetch, http, metrics, state.clone());
                Some(runtime.spawn(refresh).abort_handle())
            }
            Err(_) => {
                let problem = "no async runtime to fetch tokens on".to_string();
                state.store(Arc::new(State { token: None, problem: Some(problem) }));
                None
            }
        };
        TokenSource { kind, policy, state, task }
    }

    /// The current token, or why there is none (still fetching the first, or the last fetch
    /// failed and the token it had has expired). Never waits.
    pub fn token(&self) -> Result<Secret, String> {
        let state = self.state.load();
        let (policy, kind) = (&self.policy, self.kind);
        match (&state.token, &state.problem) {
            (Some((token, expires)), _) if Instant::now() < *expires => Ok(token.clone()),
            (_, Some(problem)) => Err(format!("{policy}: no {kind} access token: {problem}")),
            (Some(_), None) => Err(format!("{policy}: its {kind} access token expired")),
            (None, None) => Err(format!("{policy}: waiting for its first {kind} access token")),
        }
    }

    /// Stops refreshing; the token it has stays readable until it expires.
    pub(super) fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for TokenSource {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fetches a token, keeps it, waits, and again, for as long as the source lives.
async fn refresh(
    kind: &'static str,
    policy: String,
    fetch: impl Fetch,
    http: Arc<HttpClient>,
    metrics: Arc<TokenMetrics>,
    state: Arc<ArcSwap<State>>,
) {
    let mut failures = 0u32;
    loop {
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, fetch.fetch(&http)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
        };
        let wait = match fetched {
            Ok(token) => {
                failures = 0;
                metrics.fetched(kind, true);
                tracing::debug!(%policy, lifetime_s = token.lifetime.as_secs(), "access token fetched");
                let expires = Instant::now() + token.lifetime;
                state.store(Arc::new(State { token: Some((token.value, expires)), problem: None }));
                refresh_after(token.lifetime)
            }
            Err(problem) => {
                metrics.fetched(kind, false);
                let wait = backoff(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(
                    %policy,
                    retry_in_s = wait.as_secs(),
                    "fetching a {kind} access token failed: {problem}"
                );
                let token = state.load().token.clone();
                state.store(Arc::new(State { token, problem: Some(problem) }));
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// When to fetch again after a token that lives `lifetime`: at 80% of it, and at least 5 minutes
/// before it expires; never sooner than a second.
pub(super) fn refresh_after(lifetime: Duration) -> Duration {
    let early = lifetime.mul_f64(0.8);
    let margin = lifetime.saturating_sub(Duration::from_secs(300));
    let at = if margin.is_zero() { early } else { early.min(margin) };
    at.max(Duration::from_secs(1))
}

/// The wait after `failures` failures in a row before this one: 1 s, doubling, capped.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// The client token requests go out on: HTTPS with the platform's roots (as the Kubernetes client
/// does), plain HTTP only where [`token_endpoint`] allows it (loopback).
pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(super) fn http_client() -> Result<HttpClient, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("no TLS roots for token endpoints: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// An OAuth2 token response (RFC 6749 section 5.1), or the error one (section 5.2).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// A number; some endpoints send it as a string.
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

/// POSTs `form` to `url` and reads the token out of the answer. Errors say what the endpoint
/// answered (its status and OAuth2 `error`), never what was sent.
pub(super) async fn post_form(
    http: &HttpClient,
    url: &str,
    form: &[(&str, &str)],
) -> Result<Token, String> {
    let uri = token_endpoint(url).map_err(|why| format!("the token endpoint {why}"))?;
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the token request: {e}"))?;
    let response =
        http.request(request).await.map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?
        .to_bytes();
    let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let oauth = parsed
            .and_then(|p| p.error.map(|e| (e, p.error_description.unwrap_or_default())))
            .map(|(e, d)| format!(": {e} {}", d.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        return Err(format!("{url} answered {status}{}", oauth.trim_end()));
    }
    let parsed = parsed.ok_or_else(|| format!("{url} answered {status} with no token JSON"))?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("{url} answered without a usable access_token"))?;
    let seconds = match &parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{url} answered without expires_in"))?;
    Ok(Token { value: Secret::new(token), lifetime: Duration::from_secs(seconds) })
}

/// An error and its causes, which is where hyper puts what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_before_expiry_and_backs_off() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(3600)), s(2880), "an hour: at 80%");
        assert_eq!(refresh_after(s(1200)), s(900), "20 minutes: 5 minutes before");
        assert_eq!(refresh_after(s(2)), Duration::from_millis(1600));
        assert_eq!(refresh_after(s(0)), s(1), "never a busy loop");
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
