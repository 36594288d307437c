//! The names both sides of Envoy's wire agree on: what the compiler writes into Envoy's config
//! (headers set on routes, gRPC metadata of filters, dynamic metadata namespaces and keys,
//! cluster names, the 404 bodies routes answer) and the ext_proc reads back. A leaf: it imports
//! nothing of the compiler or the services, so that neither imports the other for a name.

use crate::api::ObjectKey;

/// Set on each weighted cluster of a route: `{route ns}/{route name}/{rule}/{backendRef}`, the
/// backendRef this attempt was routed by (model override, mutations, request costs).
pub const ROUTE_BACKEND_HEADER: &str = "x-aixds-route-backend";
/// The ext_proc attribute a fallback cluster's upstream filter sends: the id of the backendRef
/// whose endpoint Envoy picked for this attempt (see `compile::cluster::fallback`). It wins over
/// [`ROUTE_BACKEND_HEADER`], which a fallback route does not set.
pub const ROUTE_BACKEND_ATTRIBUTE: &str =
    "xds.upstream_host_metadata.filter_metadata['envoy.transport_socket_match']['route_backend']";
/// The ext_proc attribute the upstream-phase filter sends with the first response message: the
/// response's HTTP status, for a response whose headers message is skipped.
pub const RESPONSE_CODE_ATTRIBUTE: &str = "response.code";
/// Set by the router phase: the endpoint the client called (`chat_completions`, ...).
pub const ENDPOINT_HEADER: &str = "x-aixds-endpoint";
/// Set by the router phase: `true` when the client asked for a stream.
pub const STREAM_HEADER: &str = "x-aixds-stream";
/// Set by each listener before Envoy picks a route: its port, the first part of the key of the
/// routing scope (see `compile::route`), so that one listener never uses another's scopes.
pub const SCOPE_PORT_HEADER: &str = "x-aixds-port";
/// The second part of the key of the routing scope: [`DEFAULT_SCOPE`] as each listener sets it,
/// then [`model_scope`] once the router phase has read a model some route names exactly.
pub const SCOPE_HEADER: &str = "x-aixds-scope";
/// [`SCOPE_HEADER`] of the default scope: requests whose model no route names exactly.
pub const DEFAULT_SCOPE: &str = "*";

/// [`SCOPE_HEADER`] of the scope of the routes that name `model` exactly; distinct from
/// [`DEFAULT_SCOPE`] whatever the model is called.
pub fn model_scope(model: &str) -> String {
    format!("={model}")
}

/// Every internal header starts with this; none leaves Envoy.
pub const INTERNAL_HEADER_PREFIX: &str = "x-aixds-";
/// gRPC metadata the upstream-phase filter of a cluster sends: the cluster name. Its presence
/// marks a stream as the upstream phase.
pub const BACKEND_METADATA: &str = "x-aixds-backend";
/// gRPC metadata naming the phase of filters told apart by nothing else: [`POOL_PHASE`].
pub const PHASE_METADATA: &str = "x-aixds-phase";
/// [`PHASE_METADATA`] of the pool phase's filter (see `pool.rs`).
pub const POOL_PHASE: &str = "pool";
/// [`PHASE_METADATA`] of the pool phase on an HTTPRoute's route, set by the route: no router
/// phase ran, so the phase reads the API from the path and leaves no internal header behind.
pub const POOL_HTTP_PHASE: &str = "pool-http";
/// The dynamic metadata namespace where the upstream phase keeps [`ENDPOINT_HEADER`] and
/// [`ROUTE_BACKEND_HEADER`] (`endpoint`, `route_backend`) for later attempts of the same request:
/// it removes the headers, and Envoy gives a retry the header map the first attempt left. The
/// router phase records the client's API there too ([`CLIENT_METADATA_KEY`]).
pub const ATTEMPT_METADATA_NAMESPACE: &str = "aixds.request";
/// The key in [`ATTEMPT_METADATA_NAMESPACE`] under which the router phase names the API the
/// client speaks ([`ClientSchema::name`](crate::extproc::translate::ClientSchema::name)), so that Envoy's own
/// replies are in its format (`compile::local_reply`) after the path was rewritten for a
/// backend of the other schema or a pool.
pub const CLIENT_METADATA_KEY: &str = "client";
/// The dynamic metadata namespace token usage is written to, as Envoy AI Gateway does.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

/// The cluster of an AIServiceBackend: `aisb/{namespace}/{name}`.
pub fn backend_cluster_name(key: &ObjectKey) -> String {
    format!("aisb/{}", key.path())
}

/// The cluster of an InferencePool a route names directly: `pool/{namespace}/{name}`.
pub fn pool_cluster_name(key: &ObjectKey) -> String {
    format!("pool/{}", key.path())
}

/// The id of one backendRef, as [`ROUTE_BACKEND_HEADER`] carries it and the runtime config keys
/// it: `{route namespace}/{route name}/{rule index}/{backendRef index}`, the names escaped as
/// [`ObjectKey::path`] does.
pub fn route_backend_id(route: &ObjectKey, rule: usize, backend_ref: usize) -> String {
    format!("{}/{rule}/{backend_ref}", route.path())
}

/// The body of the catch-all's 404: what OpenAI answers for an unknown model, so that clients
/// show their usual error.
pub const NOT_FOUND_BODY: &str = r#"{"error":{"message":"No route matches the requested model.","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#;

/// [`NOT_FOUND_BODY`] for Anthropic clients, in the shape Anthropic's API answers errors.
pub const NOT_FOUND_ANTHROPIC_BODY: &str = r#"{"type":"error","error":{"type":"not_found_error","message":"No route matches the requested model."}}"#;

/// [`NOT_FOUND_BODY`] for Cohere clients, in the shape Cohere's API answers errors.
pub const NOT_FOUND_COHERE_BODY: &str = r#"{"message":"No route matches the requested model."}"#;
