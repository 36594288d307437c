//! Anthropic models on Bedrock's InvokeModel and InvokeModelWithResponseStream: the Anthropic
//! family with Bedrock's paths and framing. The request is Anthropic's messages body without
//! `model` and `stream` (the path says both) and with `anthropic_version`; the answer is
//! Anthropic's message; the stream's `chunk` events each carry one Anthropic stream event's
//! JSON, base64-encoded, which [`Unwrap`] turns back into Anthropic's server-sent events.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::{anthropic_error_type, stream_error};
use crate::api::VersionedAPISchema;
use crate::extproc::translate::TranslateError;
use crate::extproc::translate::anthropic::stream::write_event;
use crate::extproc::translate::eventstream::{self, Message};
use crate::extproc::translate::stream::Hub;

/// The `anthropic_version` Bedrock documents, used when the backend's schema names none.
pub const DEFAULT_VERSION: &str = "bedrock-2023-05-31";

/// An Anthropic messages request as InvokeModel takes it: no `model` (it is in the path) or
/// `stream` (the operation says it), the `anthropic_version` of the schema's `version`, and the
/// client's `anthropic-beta` header as the `anthropic_beta` list Bedrock reads instead.
pub fn envelope(
    mut body: Map<String, Value>,
    backend: &VersionedAPISchema,
    anthropic_beta: Option<&str>,
) -> Map<String, Value> {
    body.remove("model");
    body.remove("stream");
    let version = backend.version.as_deref().filter(|v| !v.is_empty()).unwrap_or(DEFAULT_VERSION);
    body.insert("anthropic_version".into(), json!(version));
    let betas: Vec<&str> = anthropic_beta
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if !betas.is_empty() {
        body.insert("anthropic_beta".into(), json!(betas));
    }
    body
}

/// An Anthropic token count request as Bedrock's CountTokens takes it: the InvokeModel body
/// whose input it counts, base64, under `input.invokeModel`. InvokeModel requires `max_tokens`,
/// which a count does not use: 1 when the client sent none.
pub fn count_tokens_body(
    body: Map<String, Value>,
    backend: &VersionedAPISchema,
    anthropic_beta: Option<&str>,
) -> Result<Map<String, Value>, TranslateError> {
    let mut invoke = envelope(body, backend, anthropic_beta);
    invoke.entry("max_tokens").or_insert(json!(1));
    let bytes = serde_json::to_vec(&invoke).map_err(|e| {
        TranslateError::InvalidRequest(format!("cannot encode the token count request: {e}"))
    })?;
    let mut out = Map::new();
    out.insert("input".into(), json!({"invokeModel": {"body": STANDARD.encode(bytes)}}));
    Ok(out)
}

/// CountTokens' `{"inputTokens": n}` → Anthropic's `{"input_tokens": n}`.
pub fn token_count(v: &Value) -> Result<Value, TranslateError> {
    let n = v.get("inputTokens").and_then(Value::as_u64).ok_or_else(|| {
        TranslateError::Upstream("the CountTokens answer has no \"inputTokens\"".into())
    })?;
    Ok(json!({"input_tokens": n}))
}

/// InvokeModelWithResponseStream's frames → Anthropic's server-sent events, as they complete.
/// An exception frame becomes Anthropic's `error` event.
#[derive(Debug, Default)]
pub struct Unwrap {
    frames: eventstream::Decoder,
}

impl Unwrap {
    /// The SSE bytes of the events `chunk` completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        for m in self.frames.feed(chunk)? {
            unwrap(&m, &mut out)?;
        }
        Ok(out)
    }
}

fn unwrap(m: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError> {
    if let Some(Hub::Error { message, kind }) = stream_error(m) {
        let kind = anthropic_error_type(kind.as_deref().unwrap_or_default());
        let error = json!({"type": "error", "error": {"type": kind, "message": message}});
        write_event(out, "error", &error);
        return Ok(());
    }
    // `chunk` is the only event this operation documents.
    if m.header(":event-type") != Some("chunk") {
        return Ok(());
    }
    let bad = |what: &str| TranslateError::Upstream(format!("a Bedrock stream chunk {what}"));
    let chunk: Value = serde_json::from_slice(&m.payload).map_err(|_| bad("is not JSON"))?;
    let bytes = chunk.get("bytes").and_then(Value::as_str).ok_or_else(|| bad("has no bytes"))?;
    let bytes = STANDARD.decode(bytes).map_err(|_| bad("holds bytes that are not base64"))?;
    let event: Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("holds an event that is not JSON"))?;
    // The type names the SSE event: a word, so that it cannot break the event's lines.
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or_else(|| bad("holds an event without a type"))?;
    write_event(out, kind, &event);
    Ok(())
}
