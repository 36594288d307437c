//! Converse responses → OpenAI chat completions (the hub), whole.

use serde_json::{Value, json};

use super::Answer;
use crate::extproc::translate::usage::Usage;
use crate::extproc::translate::{JSON_RESPONSE_TOOL, TranslateError};

/// Converse `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// The finish reason of an answer that called tools of the client's (`client_tools`) or gave a
/// JSON answer through [`JSON_RESPONSE_TOOL`] (`answered`): the JSON answer alone is a stop, as
/// it would be with text.
pub fn answer_finish(stop_reason: &str, answered: bool, client_tools: bool) -> &'static str {
    match finish_reason(stop_reason) {
        "tool_calls" if answered && !client_tools => "stop",
        reason => reason,
    }
}

/// A Converse or ConverseStream `usage` object.
pub fn usage(u: &Value) -> Usage {
    let count = |key| u.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage::from_uncached(
        count("inputTokens"),
        count("outputTokens"),
        count("cacheReadInputTokens"),
        count("cacheWriteInputTokens"),
    )
}

/// A Converse response → an OpenAI chat completion, with its usage.
pub fn to_chat(v: &Value, answer: &Answer) -> Result<(Value, Usage), TranslateError> {
    let blocks =
        v.pointer("/output/message/content").and_then(Value::as_array).ok_or_else(|| {
            TranslateError::Upstream("the Converse response has no output.message.content".into())
        })?;
    let usage = v.get("usage").map(usage).unwrap_or_default();
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut answered = false;
    for block in blocks {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(call) = block.get("toolUse") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let input = call.get("input").cloned().unwrap_or_else(|| json!({}));
            // The answer in the JSON format the client asked for: it is the content, whatever
            // the model said around it.
            if name == JSON_RESPONSE_TOOL {
                text = input.to_string();
                answered = true;
                continue;
            }
            calls.push(json!({
                "id": call.get("toolUseId").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            }));
        }
        // Reasoning, citations and guardrail blocks have no place in an OpenAI message.
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    let finish = v
        .get("stopReason")
        .and_then(Value::as_str)
        .map(|r| answer_finish(r, answered, !calls.is_empty()));
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage.to_openai(),
    });
    Ok((out, usage))
}
