//! OpenAI embeddings requests → Amazon Titan text embeddings on Bedrock's InvokeModel
//! (`POST /model/{modelId}/invoke`), and Titan's answers → OpenAI embedding lists.
//!
//! Titan embeds one text per request (`inputText`), so an `input` of several texts is refused
//! rather than fanned out; `dimensions` passes as Titan's `dimensions` (Titan takes 256, 512 or
//! 1024 and judges it); `user` is dropped. Titan answers floats, which become base64 for a client
//! that asked for it (the openai SDK does by default). Only Titan's text models are served:
//! other models on Bedrock take bodies of their own.

use serde_json::{Map, Value};

use crate::api::APISchema;
use crate::extproc::translate::usage::Usage;
use crate::extproc::translate::{TranslateError, openai};

/// The model ids whose embedding bodies this module speaks.
pub const TITAN_TEXT_PREFIX: &str = "amazon.titan-embed-text";

/// OpenAI embeddings request for Titan model `model` → Titan's InvokeModel body.
pub fn request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    if !model.starts_with(TITAN_TEXT_PREFIX) {
        return Err(TranslateError::Unsupported(format!(
            "embeddings on an AWSBedrock backend are served for Amazon Titan text embedding \
             models ({TITAN_TEXT_PREFIX}-*), not {model:?}"
        )));
    }
    let mut texts = openai::embedding_texts(body, APISchema::AWSBedrock)?;
    if texts.len() > 1 {
        return Err(TranslateError::Unsupported(format!(
            "Titan embeds one text per request; this one has {}: send them one at a time",
            texts.len()
        )));
    }
    openai::embedding_base64(body)?;
    let mut out = Map::new();
    out.insert("inputText".into(), Value::String(texts.remove(0)));
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null()) {
        out.insert("dimensions".into(), d.clone());
    }
    Ok(out)
}

/// Titan's `{"embedding": [...], "inputTextTokenCount": n}` → an OpenAI embedding list for
/// `model`, base64 when the client asked for it.
pub fn to_openai(v: &Value, model: &str, base64: bool) -> Result<(Value, Usage), TranslateError> {
    let vector = v.get("embedding").and_then(openai::vector).ok_or_else(|| {
        TranslateError::Upstream("the Titan response has no \"embedding\" of numbers".into())
    })?;
    let tokens = v.get("inputTextTokenCount").and_then(Value::as_u64).unwrap_or(0);
    let usage =
        Usage { input: tokens, output: 0, cached_input: 0, total: tokens, ..Default::default() };
    Ok((openai::embedding_list(vec![vector], model, base64, tokens), usage))
}
