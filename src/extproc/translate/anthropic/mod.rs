//! The Anthropic wire family: messages requests, responses and streams, to and from the hub
//! (OpenAI chat completions). Anthropic's own API speaks it, and so do Anthropic models on AWS
//! Bedrock and GCP Vertex AI, with their own paths and framing.

pub mod request;
pub mod response;
pub mod stream;

use crate::api::VersionedAPISchema;

/// The upstream path of `operation` (`messages`) on Anthropic's API. A backend's `prefix`
/// replaces the `/v1` root.
pub fn path(operation: &str, backend: &VersionedAPISchema) -> String {
    let prefix = backend
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or("v1");
    format!("/{prefix}/{operation}")
}
