//! What the translation ext_proc needs to know about the objects, rebuilt from the graph after
//! every batch and published with [`ArcSwap`] so that streams read it without locks.
//!
//! Takes: the [`Graph`]. Gives: a [`RuntimeConfig`] keyed the way requests arrive — by cluster
//! name (what the upstream-phase filter sends in its gRPC metadata) and by route backendRef id
//! (what the route sets in [`ROUTE_BACKEND_HEADER`](super::ROUTE_BACKEND_HEADER)).
//!
//! Only accepted objects contribute, as in the compiled Envoy config. A backend's credential is
//! resolved here from its BackendSecurityPolicy and Secret: an API key, a SigV4 signer, or a
//! token source that [`Credentials`] hands from each config to the next (see
//! [`super::credentials`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::credentials::aws::BEDROCK_SERVICE;
use super::credentials::{CredentialOptions, Credentials, Rebuild, SigV4, TokenSource};
use super::translate::{Target, VertexLocation};
use crate::api::{
    AIGATEWAY_GROUP, BackendSecurityPolicySpec, BodyMutation, HeaderMatchType, HeaderMutation,
    Kind, MODEL_HEADER, ObjectKey, RouteBackendRef, SecretData, SecurityPolicyType, Spec,
    VersionedAPISchema, api_key, aws_keys, azure_client_secret, group_kind,
};
use crate::graph::{Graph, Node, RefKind};
use crate::wire::{backend_cluster_name, pool_cluster_name, route_backend_id};

/// The runtime config as the service reads it; [`RuntimeConfig::publish`] replaces it.
pub type SharedRuntime = Arc<ArcSwap<RuntimeConfig>>;

/// Anthropic's API requires a version header; this one is what its SDKs send.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Default)]
pub struct RuntimeConfig {
    /// By cluster name (`aisb/{namespace}/{name}`).
    pub backends: HashMap<String, BackendRuntime>,
    /// By route backendRef id (`{route namespace}/{route name}/{rule}/{backendRef}`).
    pub route_backends: HashMap<String, RouteBackendRuntime>,
    /// By cluster name: the QuotaPolicies' costs to write for a response from the backend.
    pub quota_costs: HashMap<String, Vec<QuotaCost>>,
    /// Every model an accepted route matches exactly, sorted, for `GET /v1/models`.
    pub models: Vec<String>,
    /// When this config was built (Unix seconds): the `created` of the models listed.
    pub created: u64,
    /// The token sources, handed from each config to the next.
    pub credentials: Credentials,
}

/// One quota's cost on a backend: written for responses to requests for `model` (any when
/// `None`).
#[derive(Debug, Clone)]
pub struct QuotaCost {
    pub model: Option<String>,
    pub cost: crate::extproc::cost::RequestCost,
}

/// One accepted AIServiceBackend.
#[derive(Debug, Clone, Default)]
pub struct BackendRuntime {
    pub schema: VersionedAPISchema,
    pub header_mutation: Option<HeaderMutation>,
    pub body_mutation: Option<BodyMutation>,
    /// The Backend's DNS name, sent as `:authority` (providers route and check certificates by
    /// it); `None` for IP and socket backends and InferencePools.
    pub hostname: Option<String>,
    pub auth: Auth,
    /// The region of the `AWSCredentials` policy that signs for the backend.
    pub aws_region: Option<String>,
    /// The project and region of the `GCPCredentials` policy targeting the backend (Vertex AI
    /// paths are `/v1/projects/{project}/locations/{region}/publishers/...`).
    pub gcp: Option<GcpLocation>,
}

/// Where a GCP backend is, from its `GCPCredentials` policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcpLocation {
    pub project: String,
    pub region: String,
}

impl BackendRuntime {
    /// What translation needs to know of the backend: its schema, and where on Vertex AI it is.
    pub fn target(&self) -> Target<'_> {
        let target = Target::new(&self.schema);
        match &self.gcp {
            Some(GcpLocation { project, region }) => {
                target.in_vertex(VertexLocation { project, region })
            }
            None => target,
        }
    }
}

/// What the backend's BackendSecurityPolicies ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No policy targets the backend: the request goes as the client sent it.
    #[default]
    None,
    /// The client's credential headers are removed and the policy's credential is set.
    Inject(Credential),
    /// A policy targets the backend but gives no credential (the message says why, naming the
    /// policy and its Secret, never a value): requests are refused before they leave Envoy.
    Refuse(String),
}

/// One backendRef of an accepted route.
#[derive(Debug, Clone, Default)]
pub struct RouteBackendRuntime {
    pub model_name_override: Option<String>,
    pub header_mutation: Option<HeaderMutation>,
    pub body_mutation: Option<BodyMutation>,
    /// The route's `llmRequestCosts`, compiled once per route.
    pub costs: std::sync::Arc<[crate::extproc::cost::RequestCost]>,
    /// The cluster of the AIServiceBackend it names (`None` for an InferencePool): a fallback
    /// cluster's attempt finds its backend through this.
    pub backend: Option<String>,
}

/// A string that is never printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credential a BackendSecurityPolicy injects.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `Authorization: Bearer <key>` (OpenAI and compatible APIs).
    Bearer(Secret),
    /// `x-api-key: <key>`, and `anthropic-version` when the client sent none.
    Anthropic(Secret),
    /// `api-key: <key>` (Azure OpenAI).
    Azure(Secret),
    /// `Authorization: Bearer <token>`, the token a GCP service account or Entra ID application
    /// was last given.
    Token(Arc<TokenSource>),
    /// An AWS SigV4 signature of the final request (`authorization`, `x-amz-date`,
    /// `x-amz-security-token`), made by the upstream phase once every other header and the body
    /// are final.
    SigV4(Arc<SigV4>),
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Credential::Bearer(a), Credential::Bearer(b))
            | (Credential::Anthropic(a), Credential::Anthropic(b))
            | (Credential::Azure(a), Credential::Azure(b)) => a == b,
            (Credential::Token(a), Credential::Token(b)) => Arc::ptr_eq(a, b),
            (Credential::SigV4(a), Credential::SigV4(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Credential {}

impl Credential {
    /// The headers to set, but for a signature (see [`Credential::SigV4`]).
    /// `has_anthropic_version` says whether the request already names an Anthropic API version,
    /// which is then kept. An error says why the credential cannot be given now (no token yet).
    pub fn headers(
        &self,
        has_anthropic_version: bool,
    ) -> Result<Vec<(&'static str, String)>, String> {
        Ok(match self {
            Credential::Bearer(key) => {
                vec![("authorization", format!("Bearer {}", key.expose()))]
            }
            Credential::Anthropic(key) => {
                let mut headers = vec![("x-api-key", key.expose().to_string())];
                if !has_anthropic_version {
                    headers.push(("anthropic-version", ANTHROPIC_VERSION.to_string()));
                }
                headers
            }
            Credential::Azure(key) => vec![("api-key", key.expose().to_string())],
            Credential::Token(source) => {
                vec![("authorization", format!("Bearer {}", source.token()?.expose()))]
            }
            Credential::SigV4(_) => Vec::new(),
        })
    }

    /// Why the credential cannot be given now, if it cannot: a token source without a token.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Credential::Token(source) => source.token().err(),
            _ => None,
        }
    }
}

/// Client headers that carry part of an AWS signature: removed for a backend that aixds signs
/// for, which sets its own.
pub const SIGV4_CLIENT_HEADERS: [&str; 3] =
    ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"];

/// Client headers that carry a credential: removed for every backend a policy targets, so that a
/// client's key never reaches a provider it was not meant for.
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

impl RuntimeConfig {
    /// A shared, empty config.
    pub fn shared() -> SharedRuntime {
        RuntimeConfig::shared_with(CredentialOptions::default())
    }

    /// A shared, empty config whose credentials use `options`.
    pub fn shared_with(options: CredentialOptions) -> SharedRuntime {
        let config = RuntimeConfig { credentials: Credentials::new(options), ..Default::default() };
        Arc::new(ArcSwap::from_pointee(config))
    }

    /// Builds the config from `graph` and makes it the one streams read from now on. Token
    /// sources carry over from the config it replaces.
    pub fn publish(shared: &SharedRuntime, graph: &Graph) {
        let credentials = shared.load().credentials.clone();
        shared.store(Arc::new(RuntimeConfig::build(graph, credentials)));
    }

    /// A config of its own (token sources included), for a look at what `graph` gives.
    pub fn from_graph(graph: &Graph) -> RuntimeConfig {
        RuntimeConfig::build(graph, Credentials::default())
    }

    fn build(graph: &Graph, credentials: Credentials) -> RuntimeConfig {
        let mut config = RuntimeConfig {
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            credentials: credentials.clone(),
            ..Default::default()
        };
        let mut rebuild = credentials.rebuild();
        let mut models = BTreeSet::new();
        for object in graph.objects() {
            if !graph.node(&object.key).is_some_and(Node::accepted) {
                continue;
            }
            match &object.spec {
                Spec::AIServiceBackend(spec) => {
                    let backend = BackendRuntime {
                        schema: spec.schema.clone(),
                        header_mutation: spec.header_mutation.clone(),
                        body_mutation: spec.body_mutation.clone(),
                        hostname: hostname(graph, &object.key),
                        ..policy_auth(graph, &object.key, &mut rebuild)
                    };
                    let cluster = backend_cluster_name(&object.key);
                    let quotas: Vec<QuotaCost> =
                        crate::ratelimit::quota::quotas(graph, &object.key)
                            .into_iter()
                            .filter_map(|q| {
                                let key = q.metadata_key(&object.key);
                                Some(QuotaCost {
                                    model: q.model.map(str::to_string),
                                    cost: crate::extproc::cost::quota_cost(key, q.cost_expression)?,
                                })
                            })
                            .collect();
                    if !quotas.is_empty() {
                        config.quota_costs.insert(cluster.clone(), quotas);
                    }
                    config.backends.insert(cluster, backend);
                }
                // Named directly by a route, a pool is an OpenAI backend.
                Spec::InferencePool(_) => {
                    let backend = policy_auth(graph, &object.key, &mut rebuild);
                    config.backends.insert(pool_cluster_name(&object.key), backend);
                }
                Spec::AIGatewayRoute(spec) => {
                    let costs = crate::extproc::cost::compile(&spec.llm_request_costs);
                    for (r, rule) in spec.rules.iter().enumerate() {
                        for (b, backend_ref) in rule.backend_refs.iter().enumerate() {
                            config.route_backends.insert(
                                route_backend_id(&object.key, r, b),
                                RouteBackendRuntime {
                                    model_name_override: backend_ref.model_name_override.clone(),
                                    header_mutation: backend_ref.header_mutation.clone(),
                                    body_mutation: backend_ref.body_mutation.clone(),
                                    costs: costs.clone(),
                                    backend: names_backend(backend_ref).then(|| {
                                        let ns = backend_ref
                                            .namespace
                                            .as_deref()
                                            .unwrap_or(&object.key.namespace);
                                        backend_cluster_name(&ObjectKey::new(
                                            Kind::AIServiceBackend,
                                            ns,
                                            &backend_ref.name,
                                        ))
                                    }),
                                },
                            );
                        }
                        let exact_models =
                            rule.matches.iter().flat_map(|m| &m.headers).filter(|h| {
                                h.match_type == HeaderMatchType::Exact
                                    && h.name.eq_ignore_ascii_case(MODEL_HEADER)
                            });
                        models.extend(exact_models.map(|h| h.value.clone()));
                    }
                }
                _ => {}
            }
        }
        config.models = models.into_iter().collect();
        rebuild.finish();
        config
    }
}

/// Whether a route's backendRef names an AIServiceBackend (the default kind).
fn names_backend(b: &RouteBackendRef) -> bool {
    group_kind(&b.group, &b.kind, AIGATEWAY_GROUP, "AIServiceBackend")
        == (AIGATEWAY_GROUP, "AIServiceBackend")
}

/// The DNS name of the Backend behind an AIServiceBackend: its first FQDN endpoint, or else the
/// hostname an accepted BackendTLSPolicy verifies it by.
fn hostname(graph: &Graph, backend: &ObjectKey) -> Option<String> {
    let (_, target) = graph
        .references(backend)
        .into_iter()
        .find(|(kind, node)| *kind == RefKind::BackendRef && node.key.kind == Kind::Backend)?;
    let Spec::Backend(spec) = &target.object.as_deref()?.spec else { return None };
    if let Some(fqdn) = spec.endpoints.iter().find_map(|e| e.fqdn.as_ref()) {
        return Some(fqdn.hostname.clone());
    }
    graph.referrers(&target.key).into_iter().find_map(|(kind, node)| {
        let Spec::BackendTLSPolicy(policy) = &node.object.as_deref()?.spec else { return None };
        (kind == RefKind::TargetRef && node.accepted() && !policy.validation.hostname.is_empty())
            .then(|| policy.validation.hostname.clone())
    })
}

/// What the BackendSecurityPolicies targeting `backend` ask for (`auth`, and where a cloud
/// policy says the backend is): the credential of the first (by key), or a refusal when any of
/// them gives none. Fails closed: a backend meant to carry a credential never goes out without
/// one.
fn policy_auth(graph: &Graph, backend: &ObjectKey, rebuild: &mut Rebuild) -> BackendRuntime {
    let mut found = None;
    for (kind, node) in graph.referrers(backend) {
        let Some(Spec::BackendSecurityPolicy(policy)) = node.object.as_deref().map(|o| &o.spec)
        else {
            continue;
        };
        if kind != RefKind::TargetRef {
            continue;
        }
        let named = |why: String| {
            let refused = Auth::Refuse(format!(
                "{} {}/{}: {why}",
                node.key.kind, node.key.namespace, node.key.name
            ));
            BackendRuntime { auth: refused, ..Default::default() }
        };
        if let Some(problem) = graph.policy_problem(&node.key) {
            return named(problem);
        }
        if found.is_some() {
            continue;
        }
        let secret = policy.secret_ref().ok().and_then(|secret_ref| {
            let namespace = secret_ref.namespace.as_deref().unwrap_or(&node.key.namespace);
            let secret = ObjectKey::new(Kind::Secret, namespace, &secret_ref.name);
            match &graph.object(&secret)?.spec {
                Spec::Secret(data) => Some(data),
                _ => None,
            }
        });
        let Some(secret) = secret else {
            return named("its Secret is not there".into());
        };
        match credential(&node.key, policy, secret, rebuild) {
            Ok(runtime) => found = Some(runtime),
            Err(why) => return named(why),
        }
    }
    found.unwrap_or_default()
}

/// The credential `policy` gives with `secret` (already found usable by the graph), and the
/// location a cloud policy names.
fn credential(
    key: &ObjectKey,
    policy: &BackendSecurityPolicySpec,
    secret: &SecretData,
    rebuild: &mut Rebuild,
) -> Result<BackendRuntime, String> {
    let key_of = |secret| api_key(secret).map(Secret::new);
    let mut runtime = BackendRuntime::default();
    let credential = match policy.policy_type {
        SecurityPolicyType::APIKey => Credential::Bearer(key_of(secret)?),
        SecurityPolicyType::AnthropicAPIKey => Credential::Anthropic(key_of(secret)?),
        SecurityPolicyType::AzureAPIKey => Credential::Azure(key_of(secret)?),
        SecurityPolicyType::AWSCredentials => {
            let aws = policy.aws_credentials.as_ref().ok_or("no awsCredentials")?;
            let file = aws.credentials_file.as_ref().ok_or("no awsCredentials.credentialsFile")?;
            let keys = aws_keys(secret, file.profile())?;
            runtime.aws_region = Some(aws.region.clone());
            let region = aws.region.clone();
            Credential::SigV4(Arc::new(SigV4 { keys, region, service: BEDROCK_SERVICE }))
        }
        SecurityPolicyType::GCPCredentials => {
            let gcp = policy.gcp_credentials.as_ref().ok_or("no gcpCredentials")?;
            runtime.gcp =
                Some(GcpLocation { project: gcp.project_name.clone(), region: gcp.region.clone() });
            Credential::Token(rebuild.gcp(key, secret)?)
        }
        SecurityPolicyType::AzureCredentials => {
            let azure = policy.azure_credentials.as_ref().ok_or("no azureCredentials")?;
            let client_secret = azure_client_secret(secret)?;
            let source = rebuild.azure(key, &azure.tenant_id, &azure.client_id, client_secret)?;
            Credential::Token(source)
        }
    };
    runtime.auth = Auth::Inject(credential);
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let credential = Credential::Anthropic(Secret::new("sk-ant-secret"));
        let printed = format!("{credential:?} {}", Secret::new("sk-ant-secret"));
        assert!(!printed.contains("sk-ant"), "{printed}");
        let backend =
            BackendRuntime { auth: Auth::Inject(credential.clone()), ..Default::default() };
        assert!(!format!("{backend:?}").contains("sk-ant"));
        assert_eq!(
            credential.headers(false),
            Ok(vec![
                ("x-api-key", "sk-ant-secret".into()),
                ("anthropic-version", ANTHROPIC_VERSION.into())
            ])
        );
        assert_eq!(credential.headers(true), Ok(vec![("x-api-key", "sk-ant-secret".into())]));
        assert_eq!(
            Credential::Bearer(Secret::new("k")).headers(false),
            Ok(vec![("authorization", "Bearer k".into())])
        );
    }
}
