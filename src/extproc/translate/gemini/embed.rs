//! OpenAI embeddings requests → Google's text embedding models on Vertex AI (`:predict` on
//! `publishers/google/models/{model}`), and their predictions → OpenAI embedding lists.
//!
//! Each text of `input` is one instance (`content`); `dimensions` becomes the parameters'
//! `outputDimensionality`; a `task_type` the client sends (an extra body field, e.g. the openai
//! SDK's `extra_body={"task_type": "RETRIEVAL_QUERY"}`) goes on every instance, as Google's
//! models embed a query and a document differently; `user` is dropped. Vertex answers floats,
//! which become base64 for a client that asked for it (the openai SDK does by default); usage is
//! the sum of the instances' token counts.

use serde_json::{Map, Value, json};

use crate::api::APISchema;
use crate::extproc::translate::usage::Usage;
use crate::extproc::translate::{TranslateError, openai};

/// OpenAI embeddings request → Vertex AI predict body.
pub fn request(body: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let texts = openai::embedding_texts(body, APISchema::GCPVertexAI)?;
    openai::embedding_base64(body)?;
    let task_type = match body.get("task_type") {
        None | Some(Value::Null) => None,
        Some(t @ Value::String(_)) => Some(t.clone()),
        Some(_) => {
            return Err(TranslateError::InvalidRequest("\"task_type\" must be a string".into()));
        }
    };
    let instances: Vec<Value> = texts
        .into_iter()
        .map(|content| match &task_type {
            Some(t) => json!({"content": content, "task_type": t}),
            None => json!({"content": content}),
        })
        .collect();
    let mut out = Map::new();
    out.insert("instances".into(), Value::Array(instances));
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null()) {
        out.insert("parameters".into(), json!({"outputDimensionality": d}));
    }
    Ok(out)
}

/// Vertex's `{"predictions": [{"embeddings": {"values", "statistics": {"token_count"}}}]}` → an
/// OpenAI embedding list for `model`, base64 when the client asked for it.
pub fn to_openai(v: &Value, model: &str, base64: bool) -> Result<(Value, Usage), TranslateError> {
    let bad = || TranslateError::Upstream("the predict response has no embeddings".into());
    let predictions = v.get("predictions").and_then(Value::as_array).ok_or_else(bad)?;
    let mut vectors = Vec::with_capacity(predictions.len());
    let mut tokens = 0u64;
    for p in predictions {
        let embeddings = p.get("embeddings").ok_or_else(bad)?;
        vectors.push(embeddings.get("values").and_then(openai::vector).ok_or_else(bad)?);
        let count = embeddings.pointer("/statistics/token_count").and_then(Value::as_f64);
        tokens = tokens.saturating_add(count.unwrap_or(0.0) as u64);
    }
    let usage =
        Usage { input: tokens, output: 0, cached_input: 0, total: tokens, ..Default::default() };
    Ok((openai::embedding_list(vectors, model, base64, tokens), usage))
}
