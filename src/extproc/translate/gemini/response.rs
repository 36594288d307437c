//! Gemini `GenerateContentResponse` bodies to OpenAI chat completions (the hub), whole.

use serde_json::{Value, json};

use super::{answer_text, completion_id, finish_reason, prompt_blocked, tool_call, usage};
use crate::extproc::translate::usage::Usage;

/// A Gemini response → an OpenAI chat completion (the hub), with its usage: one choice per
/// candidate. A blocked prompt has no candidate; it is answered as one empty choice filtered
/// for content.
pub fn to_chat(v: &Value, created: u64) -> (Value, Usage) {
    let usage = v.get("usageMetadata").map(usage).unwrap_or_default();
    let id = completion_id(v, created);
    let mut calls_made = 0;
    let mut choices = Vec::new();
    for (k, candidate) in
        v.get("candidates").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let mut text = String::new();
        let mut calls = Vec::new();
        for part in
            candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten()
        {
            if let Some(t) = answer_text(part) {
                text.push_str(t);
            } else if let Some(call) = tool_call(part, &id, calls_made) {
                calls_made += 1;
                calls.push(call);
            }
        }
        let finish = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .map(|r| finish_reason(r, !calls.is_empty()));
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
        });
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(k as u64);
        choices.push(json!({"index": index, "message": message, "finish_reason": finish}));
    }
    if choices.is_empty() && prompt_blocked(v) {
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "content_filter",
        }));
    }
    let out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": v.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": choices,
        "usage": usage.to_openai(),
    });
    (out, usage)
}
