//! Cohere v2 chat responses → OpenAI chat completions (the hub), whole.

use serde_json::{Value, json};

use super::billed_usage;
use crate::extproc::translate::TranslateError;
use crate::extproc::translate::usage::Usage;

/// Usage of a chat response body.
pub fn read_usage(body: &Value) -> Usage {
    body.get("usage").map(billed_usage).unwrap_or_default()
}

/// Why the answer stopped, as OpenAI says it; for an answer Cohere says failed (`ERROR`, or
/// `TIMEOUT`), which has no OpenAI finish reason, what to tell the client instead.
pub fn finish_reason(reason: &str, error: Option<&str>) -> Result<&'static str, String> {
    match reason {
        "MAX_TOKENS" => Ok("length"),
        "TOOL_CALL" => Ok("tool_calls"),
        "ERROR" | "TIMEOUT" => Err(format!(
            "the model's answer failed (finish_reason {reason}){}",
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )),
        // COMPLETE, STOP_SEQUENCE, and any reason added later.
        _ => Ok("stop"),
    }
}

/// A Cohere chat response → an OpenAI chat completion for `model` (Cohere's answers do not name
/// it), with its usage. What the model said is the tool plan (before tool calls) and the text
/// parts of its content; thinking and citations have no OpenAI counterpart.
pub fn to_chat(v: &Value, model: &str, created: u64) -> Result<(Value, Usage), TranslateError> {
    let usage = read_usage(v);
    let message = v.get("message").unwrap_or(&Value::Null);
    let mut text = message.get("tool_plan").and_then(Value::as_str).unwrap_or("").to_string();
    for part in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        if part.get("type").and_then(Value::as_str) == Some("text") {
            text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
        }
    }
    let calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let arguments = match c.pointer("/function/arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            json!({
                "id": c.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": arguments,
                },
            })
        })
        .collect();
    let finish = match v.get("finish_reason").and_then(Value::as_str) {
        Some(reason) => Some(
            finish_reason(reason, v.get("error").and_then(Value::as_str))
                .map_err(TranslateError::Upstream)?,
        ),
        None => None,
    };
    let mut out_message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        out_message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": out_message, "finish_reason": finish}],
        "usage": usage.to_openai(),
    });
    Ok((out, usage))
}
