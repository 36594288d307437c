//! The translation ext_proc: the `envoy.service.ext_proc.v3.ExternalProcessor` gRPC service that
//! the compiled Envoy config calls twice per request.
//!
//! Takes: the [`runtime::RuntimeConfig`] published after every batch, and Envoy's ext_proc
//! streams. Gives: header and body mutations, immediate responses and token-usage metadata.
//!
//! - **Router phase** (an HCM filter before the router): recognises the endpoint by `:path`,
//!   answers `GET /v1/models` and unknown paths itself, reads `model` and `stream` from the
//!   buffered body (and nothing else of it, see [`translate::read_head`]), sets
//!   [`MODEL_HEADER`](crate::api::MODEL_HEADER) from it and clears the route cache so the route
//!   matches on the model.
//! - **Pool phase** (an HCM filter after the router phase, on routes to InferencePools only):
//!   translates Anthropic requests to OpenAI before the pool's endpoint picker reads them, and
//!   their responses back.
//! - **Upstream phase** (an upstream HTTP filter of each AIServiceBackend cluster, so once per
//!   attempt): translates the request for the backend's schema, injects the credential (an
//!   API key, a cloud access token, or a SigV4 signature of the final request: see
//!   [`credentials`]), and translates the response back, chunk by chunk. A request whose
//!   backend takes the body as sent ([`translate::passthrough_path`]) is answered at its headers
//!   with the body message turned off (`mode_override`): its body never comes here, and the
//!   response chunks that stay as they are are not sent back.
//!
//! The two phases of one request may reach different aixds replicas, so nothing is kept between
//! them: the router phase and the route pass what the upstream phase needs as request headers
//! (the `x-aixds-*` contract below), and the upstream phase removes them before the request
//! leaves Envoy. Which backend an attempt goes to comes from the gRPC metadata the cluster's
//! filter sends ([`BACKEND_METADATA`](crate::wire::BACKEND_METADATA)).

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

/// How [`ENDPOINT_HEADER`](crate::wire::ENDPOINT_HEADER) names an endpoint: its canonical path, which
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
