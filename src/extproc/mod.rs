//! The translation ext_proc: the `envoy.service.ext_proc.v3.ExternalProcessor` gRPC service that
//! the compiled Envoy config calls twice per request.
//!
//! Takes: the [`runtime::RuntimeConfig`] published after every batch, and Envoy's ext_proc
//! streams. Gives: header and body mutations, immediate responses and token-usage metadata.
//!
//! - **Router phase** (an HCM filter before the router): recognises the endpoint by `:path`,
//!   answers `GET /v1/models` and unknown paths itself, parses the buffered body, sets
//!   [`MODEL_HEADER`](crate::api::MODEL_HEADER) from it and clears the route cache so the route
//!   matches on the model.
//! - **Pool phase** (an HCM filter after the router phase, on routes to InferencePools only):
//!   translates Anthropic requests to OpenAI before the pool's endpoint picker reads them, and
//!   their responses back.
//! - **Upstream phase** (an upstream HTTP filter of each AIServiceBackend cluster, so once per
//!   attempt): translates the request for the backend's schema, injects the credential (an
//!   API key, a cloud access token, or a SigV4 signature of the final request: see
//!   [`credentials`]), and translates the response back, chunk by chunk.
//!
//! The two phases of one request may reach different aixds replicas, so nothing is kept between
//! them: the router phase and the route pass what the upstream phase needs as request headers
//! (the `x-aixds-*` contract below), and the upstream phase removes them before the request
//! leaves Envoy. Which backend an attempt goes to comes from the gRPC metadata the cluster's
//! filter sends ([`BACKEND_METADATA`]).

pub mod cost;
pub mod credentials;
pub mod metrics;
mod pool;
mod response;
mod router;
pub mod runtime;
mod service;
pub mod translate;
mod upstream;

pub use metrics::GenAiMetrics;
pub use runtime::{RuntimeConfig, SharedRuntime};
pub use service::{DEFAULT_MAX_BODY_BYTES, ExtProcOptions, ExtProcService};

use translate::Endpoint;

/// Set on each weighted cluster of a route: `{route ns}/{route name}/{rule}/{backendRef}`, the
/// backendRef this attempt was routed by (model override, mutations, request costs).
pub const ROUTE_BACKEND_HEADER: &str = "x-aixds-route-backend";
/// The ext_proc attribute a fallback cluster's upstream filter sends: the id of the backendRef
/// whose endpoint Envoy picked for this attempt (see `compile::cluster::fallback`). It wins over
/// [`ROUTE_BACKEND_HEADER`], which a fallback route does not set.
pub const ROUTE_BACKEND_ATTRIBUTE: &str =
    "xds.upstream_host_metadata.filter_metadata['envoy.transport_socket_match']['route_backend']";
/// Set by the router phase: the endpoint the client called (`chat_completions`, ...).
pub const ENDPOINT_HEADER: &str = "x-aixds-endpoint";
/// Set by the router phase: `true` when the client asked for a stream.
pub const STREAM_HEADER: &str = "x-aixds-stream";
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
/// client speaks ([`ClientSchema::name`](translate::ClientSchema::name)), so that Envoy's own
/// replies are in its format (`compile::local_reply`) after the path was rewritten for a
/// backend of the other schema or a pool.
pub const CLIENT_METADATA_KEY: &str = "client";
/// The dynamic metadata namespace token usage is written to, as Envoy AI Gateway does.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

/// How [`ENDPOINT_HEADER`] names an endpoint: its canonical path, which
/// [`Endpoint::from_path`] reads back.
pub fn endpoint_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "/v1/chat/completions",
        Endpoint::Completions => "/v1/completions",
        Endpoint::Embeddings => "/v1/embeddings",
        Endpoint::Messages => "/v1/messages",
        Endpoint::Responses => "/v1/responses",
        Endpoint::CountTokens => "/v1/messages/count_tokens",
        Endpoint::Rerank => "/cohere/v2/rerank",
    }
}
