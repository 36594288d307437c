//! OpenAI embeddings requests → Cohere embed requests (`POST /v2/embed`), and Cohere's answers
//! → OpenAI embedding lists.
//!
//! - `input` (a string or strings) becomes `texts`; token ids cannot be sent (Cohere embeds
//!   text only: a 422).
//! - `input_type`, which Cohere requires and OpenAI does not have, is `search_document` unless
//!   the client names one (an extra body field, e.g. the openai SDK's
//!   `extra_body={"input_type": "search_query"}`): what a corpus is embedded as, and what a
//!   client that does not know about it most often embeds.
//! - `encoding_format` `float` (or none) asks for `float` embeddings; `base64` asks for Cohere's
//!   `base64`, which is the same encoding as OpenAI's (little-endian float32s) and is passed as
//!   it comes. The openai Python SDK asks for base64 by default.
//! - `dimensions` becomes `output_dimension`; `user` is dropped.

use serde_json::{Map, Value, json};

use super::billed_usage;
use crate::extproc::translate::TranslateError;
use crate::extproc::translate::usage::Usage;

/// The `input_type` of a client that names none.
pub const DEFAULT_INPUT_TYPE: &str = "search_document";

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

/// OpenAI embeddings request → Cohere embed request.
pub fn request(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    if let Some(model) = body.remove("model") {
        out.insert("model".into(), model);
    }
    let texts = match body.remove("input") {
        Some(Value::String(s)) => vec![Value::String(s)],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items,
        Some(Value::Array(_)) => {
            return Err(TranslateError::Unsupported(
                "token ids cannot be sent to a Cohere backend: it embeds text; send \"input\" \
                 as a string or an array of strings"
                    .into(),
            ));
        }
        _ => return Err(invalid("\"input\" must be a string or an array of strings")),
    };
    let input_type = match body.remove("input_type") {
        None | Some(Value::Null) => json!(DEFAULT_INPUT_TYPE),
        Some(t @ Value::String(_)) => t,
        Some(_) => return Err(invalid("\"input_type\" must be a string")),
    };
    out.insert("input_type".into(), input_type);
    out.insert("texts".into(), Value::Array(texts));
    let encoding = match body.get("encoding_format") {
        None | Some(Value::Null) => "float",
        Some(Value::String(f)) if f == "float" || f == "base64" => f.as_str(),
        Some(_) => return Err(invalid("\"encoding_format\" must be float or base64")),
    };
    out.insert("embedding_types".into(), json!([encoding]));
    if let Some(d) = body.remove("dimensions").filter(|d| !d.is_null()) {
        out.insert("output_dimension".into(), d);
    }
    Ok(out)
}

/// A Cohere embed response → an OpenAI embedding list for `model`, with its usage. The
/// embeddings are the first type the response carries (the request asked for one).
pub fn to_openai(v: &Value, model: &str) -> Result<(Value, Usage), TranslateError> {
    let usage = v.get("meta").map(billed_usage).unwrap_or_default();
    let vectors = v
        .pointer("/embeddings/float")
        .or_else(|| v.pointer("/embeddings/base64"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TranslateError::Upstream("the embed response has no float or base64 embeddings".into())
        })?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input},
    });
    Ok((out, usage))
}
