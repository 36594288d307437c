//! What the translation ext_proc needs to know about the objects, rebuilt from the graph after
//! every batch and published with [`ArcSwap`] so that streams read it without locks.
//!
//! Takes: the [`Graph`]. Gives: a [`RuntimeConfig`] keyed the way requests arrive — by cluster
//! name (what the upstream-phase filter sends in its gRPC metadata) and by route backendRef id
//! (what the route sets in [`ROUTE_BACKEND_HEADER`](super::ROUTE_BACKEND_HEADER)).
//!
//! Only accepted objects contribute, as in the compiled Envoy config.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::{
    AIGATEWAY_GROUP, BodyMutation, HeaderMatchType, HeaderMutation, Kind, LLMRequestCost,
    MODEL_HEADER, ObjectKey, RouteBackendRef, SecurityPolicyType, Spec, VersionedAPISchema,
    api_key, group_kind,
};
use crate::compile::{backend_cluster_name, pool_cluster_name, route_backend_id};
use crate::graph::{Graph, Node, RefKind};

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
    /// Every model an accepted route matches exactly, sorted, for `GET /v1/models`.
    pub models: Vec<String>,
    /// When this config was built (Unix seconds): the `created` of the models listed.
    pub created: u64,
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
    /// The route's `llmRequestCosts`.
    pub costs: Vec<LLMRequestCost>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <key>` (OpenAI and compatible APIs).
    Bearer(Secret),
    /// `x-api-key: <key>`, and `anthropic-version` when the client sent none.
    Anthropic(Secret),
    /// `api-key: <key>` (Azure OpenAI).
    Azure(Secret),
}

impl Credential {
    /// The headers to set. `has_anthropic_version` says whether the request already names an
    /// Anthropic API version, which is then kept.
    pub fn headers(&self, has_anthropic_version: bool) -> Vec<(&'static str, String)> {
        match self {
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
        }
    }
}

/// Client headers that carry a credential: removed for every backend a policy targets, so that a
/// client's key never reaches a provider it was not meant for.
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

impl RuntimeConfig {
    /// A shared, empty config.
    pub fn shared() -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(RuntimeConfig::default()))
    }

    /// Builds the config from `graph` and makes it the one streams read from now on.
    pub fn publish(shared: &SharedRuntime, graph: &Graph) {
        shared.store(Arc::new(RuntimeConfig::from_graph(graph)));
    }

    pub fn from_graph(graph: &Graph) -> RuntimeConfig {
        let mut config = RuntimeConfig {
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            ..Default::default()
        };
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
                        auth: auth(graph, &object.key),
                    };
                    config.backends.insert(backend_cluster_name(&object.key), backend);
                }
                // Named directly by a route, a pool is an OpenAI backend.
                Spec::InferencePool(_) => {
                    let backend =
                        BackendRuntime { auth: auth(graph, &object.key), ..Default::default() };
                    config.backends.insert(pool_cluster_name(&object.key), backend);
                }
                Spec::AIGatewayRoute(spec) => {
                    for (r, rule) in spec.rules.iter().enumerate() {
                        for (b, backend_ref) in rule.backend_refs.iter().enumerate() {
                            config.route_backends.insert(
                                route_backend_id(&object.key, r, b),
                                RouteBackendRuntime {
                                    model_name_override: backend_ref.model_name_override.clone(),
                                    header_mutation: backend_ref.header_mutation.clone(),
                                    body_mutation: backend_ref.body_mutation.clone(),
                                    costs: spec.llm_request_costs.clone(),
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

/// What the BackendSecurityPolicies targeting `backend` ask for: the credential of the first
/// (by key), or a refusal when any of them gives none. Fails closed: a backend meant to carry a
/// credential never goes out without one.
fn auth(graph: &Graph, backend: &ObjectKey) -> Auth {
    let mut credential = None;
    for (kind, node) in graph.referrers(backend) {
        let Some(Spec::BackendSecurityPolicy(policy)) = node.object.as_deref().map(|o| &o.spec)
        else {
            continue;
        };
        if kind != RefKind::TargetRef {
            continue;
        }
        let named = |why: String| {
            format!("{} {}/{}: {why}", node.key.kind, node.key.namespace, node.key.name)
        };
        if let Some(problem) = graph.policy_problem(&node.key) {
            return Auth::Refuse(named(problem));
        }
        if credential.is_some() {
            continue;
        }
        let key = policy.secret_ref().ok().and_then(|secret_ref| {
            let namespace = secret_ref.namespace.as_deref().unwrap_or(&node.key.namespace);
            let secret = ObjectKey::new(Kind::Secret, namespace, &secret_ref.name);
            let Spec::Secret(data) = &graph.object(&secret)?.spec else { return None };
            api_key(data).ok().map(Secret::new)
        });
        let Some(key) = key else {
            return Auth::Refuse(named("its Secret holds no usable key".into()));
        };
        credential = Some(match policy.policy_type {
            SecurityPolicyType::APIKey => Credential::Bearer(key),
            SecurityPolicyType::AnthropicAPIKey => Credential::Anthropic(key),
            SecurityPolicyType::AzureAPIKey => Credential::Azure(key),
            other => return Auth::Refuse(named(format!("type {other} is not supported yet"))),
        });
    }
    credential.map_or(Auth::None, Auth::Inject)
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
            [
                ("x-api-key", "sk-ant-secret".into()),
                ("anthropic-version", ANTHROPIC_VERSION.into())
            ]
        );
        assert_eq!(credential.headers(true), [("x-api-key", "sk-ant-secret".into())]);
        assert_eq!(
            Credential::Bearer(Secret::new("k")).headers(false),
            [("authorization", "Bearer k".into())]
        );
    }
}
