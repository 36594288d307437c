//! The Cohere wire family (API v2): chat requests, responses and streams to and from the hub
//! (OpenAI chat completions), OpenAI embeddings to and from Cohere's embed, and Cohere's rerank,
//! which only Cohere's own clients call and which passes unchanged.
//!
//! Token usage is what Cohere bills (`billed_units`), as usage is for every family (OpenAI's
//! `prompt_tokens` and Anthropic's `input_tokens` are billed counts): Cohere's `tokens` add the
//! prompt template Cohere wraps around the messages, which the client never sent and is not
//! billed for. A rerank is billed in search units (one query over up to 100 documents), which
//! count as its input tokens.

pub mod embed;
pub mod request;
pub mod response;
pub mod stream;

use serde_json::Value;

use super::usage::Usage;
use crate::api::VersionedAPISchema;

/// The API version whose bodies this family speaks, and the root of its paths.
pub const API_VERSION: &str = "v2";

/// The upstream path of `operation` (`chat`, `embed`, `rerank`): under the backend's `version`
/// (`v2` when unset; the graph accepts no other), or under its `prefix`, which replaces the whole
/// root (e.g. `/cohere/v2` for a Cohere-compatible server that mounts the API there).
pub fn path(operation: &str, backend: &VersionedAPISchema) -> String {
    let root = backend
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .or(backend.version.as_deref().filter(|v| !v.is_empty()))
        .unwrap_or(API_VERSION);
    format!("/{root}/{operation}")
}

fn count(v: &Value, ptr: &str) -> Option<u64> {
    v.pointer(ptr).and_then(Value::as_u64)
}

/// Usage of a chat response's or stream's `usage` object, or an embed response's `meta`: the
/// billed tokens, or the processed ones where a response bills none.
fn billed_usage(u: &Value) -> Usage {
    let billed = |key: &str| {
        count(u, &format!("/billed_units/{key}")).or_else(|| count(u, &format!("/tokens/{key}")))
    };
    let input = billed("input_tokens").unwrap_or(0);
    let output = billed("output_tokens").unwrap_or(0);
    Usage {
        input,
        output,
        cached_input: 0,
        total: input.saturating_add(output),
        ..Default::default()
    }
}

/// Usage of a rerank response: its search units, as input.
pub fn read_rerank_usage(body: &Value) -> Usage {
    let units = count(body, "/meta/billed_units/search_units").unwrap_or(0);
    Usage { input: units, output: 0, cached_input: 0, total: units, ..Default::default() }
}

/// A Cohere error body, `{"id": ..., "message": ...}`: its message.
pub fn error_message(body: &Value) -> Option<&str> {
    body.get("message").and_then(Value::as_str)
}
