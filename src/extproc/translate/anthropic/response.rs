//! Anthropic message bodies to and from OpenAI chat completions, whole.

use serde_json::{Value, json};

use crate::extproc::translate::JSON_RESPONSE_TOOL;
use crate::extproc::translate::usage::{AnthropicCounts, Usage};

/// Usage of a whole message body.
pub fn read_usage(body: &Value) -> Usage {
    let Some(u) = body.get("usage") else { return Usage::default() };
    let mut counts = AnthropicCounts::default();
    counts.merge(u);
    counts.usage()
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn openai_finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// An OpenAI completion id as an Anthropic message id (`msg_…`), as Anthropic clients expect.
pub fn anthropic_message_id(openai_id: &str) -> String {
    format!("msg_{}", openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn anthropic_stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// An Anthropic message → an OpenAI chat completion (the hub), with its usage.
pub fn to_chat(v: &Value, created: u64) -> (Value, Usage) {
    let usage = read_usage(v);
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut answered = false;
    for block in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        let name = block.get("name").and_then(Value::as_str).unwrap_or_default();
        let input = || block.get("input").cloned().unwrap_or_else(|| json!({})).to_string();
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            // The answer in the JSON format the client asked for (see `request.rs`): it is the
            // content, whatever the model said around it.
            Some("tool_use") if name == JSON_RESPONSE_TOOL => {
                text = input();
                answered = true;
            }
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {"name": name, "arguments": input()},
            })),
            _ => {}
        }
    }
    let finish = match v.get("stop_reason").and_then(Value::as_str) {
        // Only the answer was called for: the model stopped as it would with text.
        Some("tool_use") if answered && calls.is_empty() => Some("stop"),
        reason => reason.map(openai_finish_reason),
    };
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage.to_openai(),
    });
    (out, usage)
}

/// An OpenAI chat completion (the hub) → an Anthropic message, with its usage.
pub fn from_chat(v: &Value) -> (Value, Usage) {
    let usage = v.get("usage").map(Usage::from_openai).unwrap_or_default();
    let choice = v.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default();
        // A model may emit arguments that are not JSON; keep them where the client can see them.
        let input = match serde_json::from_str::<Value>(args) {
            Ok(v @ Value::Object(_)) => v,
            _ if args.trim().is_empty() => json!({}),
            _ => json!({"arguments": args}),
        };
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
            "input": input,
        }));
    }
    let stop = choice.get("finish_reason").and_then(Value::as_str).map(anthropic_stop_reason);
    let out = json!({
        "id": anthropic_message_id(v.get("id").and_then(Value::as_str).unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    });
    (out, usage)
}
