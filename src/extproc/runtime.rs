//! What the translation ext_proc needs to know about the objects, updated from the objects each
//! batch affected ([`RuntimeBuilder`], owned by the compiler) and published with [`ArcSwap`] so
//! that streams read it without locks.
//!
//! Takes: the [`Graph`]. Gives: a [`RuntimeConfig`] keyed the way requests arrive — by cluster
//! name (what the upstream-phase filter sends in its gRPC metadata) and by route backendRef id
//! (what the route sets in [`ROUTE_BACKEND_HEADER`](super::ROUTE_BACKEND_HEADER)).
//!
//! Only accepted objects contribute, as in the compiled Envoy config. A backend's credential is
//! resolved here from its BackendSecurityPolicy and Secret: an API key, a SigV4 signer, or a
//! token source that [`Credentials`] hands from each config to the next (see
//! [`super::credentials`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::credentials::aws::BEDROCK_SERVICE;
use super::credentials::{CredentialOptions, Credentials, Rebuild, SigV4, SourceKey, TokenSource};
use super::translate::{Target, VertexLocation};
use crate::api::{
    AIGATEWAY_GROUP, BackendSecurityPolicySpec, BodyMutation, HeaderMatchType, HeaderMutation,
    Kind, MODEL_HEADER, Object, ObjectKey, RouteBackendRef, SecretData, SecurityPolicyType, Spec,
    VersionedAPISchema, api_key, aws_keys, azure_client_secret, group_kind,
};
use crate::graph::{Graph, Node, RefKind};
use crate::wire::{backend_cluster_name, pool_cluster_name, route_backend_id};

/// The runtime config as the service reads it; the run loop replaces it with the compiler's
/// after every batch ([`crate::compile::Tables`]).
pub type SharedRuntime = Arc<ArcSwap<RuntimeConfig>>;

/// Anthropic's API requires a version header; this one is what its SDKs send.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Default)]
pub struct RuntimeConfig {
    /// By cluster name (`aisb/{namespace}/{name}`).
    pub backends: imbl::HashMap<String, BackendRuntime>,
    /// By route backendRef id (`{route namespace}/{route name}/{rule}/{backendRef}`).
    pub route_backends: imbl::HashMap<String, RouteBackendRuntime>,
    /// By cluster name: the QuotaPolicies' costs to write for a response from the backend.
    pub quota_costs: imbl::HashMap<String, Vec<QuotaCost>>,
    /// Every model an accepted route matches exactly, with the number of rule matches naming
    /// it (see [`RuntimeConfig::models`]).
    models: imbl::OrdMap<String, usize>,
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

    /// Builds the config from every object of `graph` and makes it the one streams read from now
    /// on. Token sources carry over from the config it replaces.
    pub fn publish(shared: &SharedRuntime, graph: &Graph) {
        let credentials = shared.load().credentials.clone();
        shared.store(Arc::new(RuntimeBuilder::default().full(graph, &credentials)));
    }

    /// A config of its own (token sources included), for a look at what `graph` gives.
    pub fn from_graph(graph: &Graph) -> RuntimeConfig {
        RuntimeBuilder::default().full(graph, &Credentials::default())
    }

    /// Every model an accepted route matches exactly, sorted, for `GET /v1/models`.
    pub fn models(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    fn add(&mut self, part: &Part) {
        match part {
            Part::Backend { cluster, runtime, quotas } => {
                if !quotas.is_empty() {
                    self.quota_costs.insert(cluster.clone(), quotas.clone());
                }
                self.backends.insert(cluster.clone(), runtime.clone());
            }
            Part::Pool { cluster, runtime } => {
                self.backends.insert(cluster.clone(), runtime.clone());
            }
            Part::Route { backends, models } => {
                for (id, runtime) in backends {
                    self.route_backends.insert(id.clone(), runtime.clone());
                }
                for model in models {
                    *self.models.entry(model.clone()).or_default() += 1;
                }
            }
        }
    }

    fn remove(&mut self, part: &Part) {
        match part {
            Part::Backend { cluster, .. } => {
                self.quota_costs.remove(cluster);
                self.backends.remove(cluster);
            }
            Part::Pool { cluster, .. } => {
                self.backends.remove(cluster);
            }
            Part::Route { backends, models } => {
                for (id, _) in backends {
                    self.route_backends.remove(id);
                }
                for model in models {
                    match self.models.get_mut(model) {
                        Some(n) if *n > 1 => *n -= 1,
                        _ => {
                            self.models.remove(model);
                        }
                    }
                }
            }
        }
    }
}

/// What one accepted object gives the runtime config.
#[derive(Debug, Clone)]
enum Part {
    /// An AIServiceBackend: its cluster's runtime and the QuotaPolicies' costs on it.
    Backend { cluster: String, runtime: BackendRuntime, quotas: Vec<QuotaCost> },
    /// An InferencePool named directly by a route, which is an OpenAI backend.
    Pool { cluster: String, runtime: BackendRuntime },
    /// An AIGatewayRoute: its backendRefs, and the models its rules match exactly (once per
    /// rule match, so that a model stays listed while any route still names it).
    Route { backends: Vec<(String, RouteBackendRuntime)>, models: Vec<String> },
}

/// Keeps the runtime config up to date object by object: after a batch, only the objects it
/// affected are looked at again (the graph's affected set holds every object whose part may
/// have changed: a backend's policies, Secrets, Backend and BackendTLSPolicy are its
/// dependencies, and acceptance is recomputed for the same set), and the config's maps are
/// persistent, so that handing out a new config costs what changed, not every object.
#[derive(Debug, Default)]
pub struct RuntimeBuilder {
    parts: HashMap<ObjectKey, Part>,
    /// The token sources each object's part uses, for the objects that use any.
    sources: HashMap<ObjectKey, HashSet<SourceKey>>,
    config: RuntimeConfig,
}

impl RuntimeBuilder {
    /// The config of every object of `graph`, forgetting what was built before.
    pub fn full(&mut self, graph: &Graph, credentials: &Credentials) -> RuntimeConfig {
        *self = RuntimeBuilder::default();
        let keys: Vec<ObjectKey> = graph.objects().map(|o| o.key.clone()).collect();
        self.update(graph, &keys, credentials)
    }

    /// The config after a batch that affected `affected`. Token sources that no object uses
    /// any more are stopped.
    pub fn update(
        &mut self,
        graph: &Graph,
        affected: &[ObjectKey],
        credentials: &Credentials,
    ) -> RuntimeConfig {
        let mut rebuild = credentials.rebuild();
        for key in affected {
            let part = graph
                .object(key)
                .filter(|_| graph.node(key).is_some_and(Node::accepted))
                .and_then(|object| part(graph, object, &mut rebuild));
            let used = rebuild.take_used();
            if used.is_empty() {
                self.sources.remove(key);
            } else {
                self.sources.insert(key.clone(), used);
            }
            if let Some(old) = self.parts.remove(key) {
                self.config.remove(&old);
            }
            if let Some(part) = part {
                self.config.add(&part);
                self.parts.insert(key.clone(), part);
            }
        }
        rebuild.finish_keeping(self.sources.values().flatten());
        RuntimeConfig {
            backends: self.config.backends.clone(),
            route_backends: self.config.route_backends.clone(),
            quota_costs: self.config.quota_costs.clone(),
            models: self.config.models.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            credentials: credentials.clone(),
        }
    }
}

/// What `object` (accepted) gives the runtime config, if anything.
fn part(graph: &Graph, object: &Object, rebuild: &mut Rebuild) -> Option<Part> {
    match &object.spec {
        Spec::AIServiceBackend(spec) => {
            let runtime = BackendRuntime {
                schema: spec.schema.clone(),
                header_mutation: spec.header_mutation.clone(),
                body_mutation: spec.body_mutation.clone(),
                hostname: hostname(graph, &object.key),
                ..policy_auth(graph, &object.key, rebuild)
            };
            let quotas = crate::ratelimit::quota::quotas(graph, &object.key)
                .into_iter()
                .filter_map(|q| {
                    let key = q.metadata_key(&object.key);
                    Some(QuotaCost {
                        model: q.model.map(str::to_string),
                        cost: crate::extproc::cost::quota_cost(key, q.cost_expression)?,
                    })
                })
                .collect();
            Some(Part::Backend { cluster: backend_cluster_name(&object.key), runtime, quotas })
        }
        Spec::InferencePool(_) => Some(Part::Pool {
            cluster: pool_cluster_name(&object.key),
            runtime: policy_auth(graph, &object.key, rebuild),
        }),
        Spec::AIGatewayRoute(spec) => {
            let costs = crate::extproc::cost::compile(&spec.llm_request_costs);
            let mut backends = Vec::new();
            let mut models = Vec::new();
            for (r, rule) in spec.rules.iter().enumerate() {
                for (b, backend_ref) in rule.backend_refs.iter().enumerate() {
                    let backend = names_backend(backend_ref).then(|| {
                        let ns = backend_ref.namespace.as_deref().unwrap_or(&object.key.namespace);
                        let key = ObjectKey::new(Kind::AIServiceBackend, ns, &backend_ref.name);
                        backend_cluster_name(&key)
                    });
                    let runtime = RouteBackendRuntime {
                        model_name_override: backend_ref.model_name_override.clone(),
                        header_mutation: backend_ref.header_mutation.clone(),
                        body_mutation: backend_ref.body_mutation.clone(),
                        costs: costs.clone(),
                        backend,
                    };
                    backends.push((route_backend_id(&object.key, r, b), runtime));
                }
                let exact_models = rule.matches.iter().flat_map(|m| &m.headers).filter(|h| {
                    h.match_type == HeaderMatchType::Exact
                        && h.name.eq_ignore_ascii_case(MODEL_HEADER)
                });
                models.extend(exact_models.map(|h| h.value.clone()));
            }
            Some(Part::Route { backends, models })
        }
        _ => None,
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
    graph.targeting(&target.key).into_iter().find_map(|node| {
        let Spec::BackendTLSPolicy(policy) = &node.object.as_deref()?.spec else { return None };
        (node.accepted() && !policy.validation.hostname.is_empty())
            .then(|| policy.validation.hostname.clone())
    })
}

/// What the BackendSecurityPolicies targeting `backend` ask for (`auth`, and where a cloud
/// policy says the backend is): the credential of the first (by key), or a refusal when any of
/// them gives none. Fails closed: a backend meant to carry a credential never goes out without
/// one.
fn policy_auth(graph: &Graph, backend: &ObjectKey, rebuild: &mut Rebuild) -> BackendRuntime {
    let mut found = None;
    for node in graph.targeting(backend) {
        let Some(Spec::BackendSecurityPolicy(policy)) = node.object.as_deref().map(|o| &o.spec)
        else {
            continue;
        };
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
