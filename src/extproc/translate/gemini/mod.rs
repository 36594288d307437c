//! The Gemini wire family: `generateContent` requests, `GenerateContentResponse` bodies and
//! their SSE streams (`streamGenerateContent?alt=sse`), to and from the hub (OpenAI chat
//! completions). Google's models on Vertex AI speak it (the paths are `vertex`'s).
//!
//! What has no Gemini counterpart is dropped where it only tunes the answer (`logprobs`,
//! `logit_bias`, `parallel_tool_calls`, `reasoning_effort`, ...) and refused where dropping it
//! would change what the client gets back (audio or file ids, non-function tools, recursive
//! schemas). Thought summaries in a response are not passed on.

pub mod embed;
pub mod request;
pub mod response;
pub mod schema;
pub mod stream;

use serde_json::Value;

use super::usage::Usage;

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Usage of a `usageMetadata` object. The prompt count includes cached tokens, as OpenAI's
/// does; thinking tokens are billed as output, so they count as output.
pub fn usage(u: &Value) -> Usage {
    let input = count(u, "promptTokenCount").saturating_add(count(u, "toolUsePromptTokenCount"));
    let output = count(u, "candidatesTokenCount").saturating_add(count(u, "thoughtsTokenCount"));
    let total =
        u.get("totalTokenCount").and_then(Value::as_u64).unwrap_or(input.saturating_add(output));
    Usage {
        input,
        output,
        cached_input: count(u, "cachedContentTokenCount"),
        total,
        ..Default::default()
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`; `called` says whether the candidate called a
/// function (Gemini stops with `STOP` then).
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// Whether a response (or stream chunk) says the prompt itself was blocked: then no candidate
/// comes, and the answer is an empty one filtered for content.
pub fn prompt_blocked(v: &Value) -> bool {
    v.pointer("/promptFeedback/blockReason").and_then(Value::as_str).is_some()
}

/// The hub's completion id for a response: Gemini's `responseId`, or `created` without one.
pub fn completion_id(v: &Value, created: u64) -> String {
    match v.get("responseId").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{created}"),
    }
}

/// An OpenAI tool call for a `functionCall` part: Gemini's own id if it gave one, else the
/// `n`th call of completion `id`. A part's `thoughtSignature` travels in `extra_content`, as
/// Google's OpenAI-compatible API carries it, so that a client sending the call back sends it
/// too (Gemini 3 requires it on the calls of the current turn).
pub fn tool_call(part: &Value, completion: &str, n: usize) -> Option<Value> {
    let call = part.get("functionCall")?;
    let id = match call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("call_{}_{n}", completion.strip_prefix("chatcmpl-").unwrap_or(completion)),
    };
    let args = call
        .get("args")
        .filter(|a| a.is_object())
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let mut out = serde_json::json!({
        "id": id,
        "type": "function",
        "function": {
            "name": call.get("name").and_then(Value::as_str).unwrap_or_default(),
            "arguments": args.to_string(),
        },
    });
    if let Some(signature) = part.get("thoughtSignature").filter(|s| s.is_string()) {
        out["extra_content"] = serde_json::json!({"google": {"thought_signature": signature}});
    }
    Some(out)
}

/// The text of a part that is answer, not a thought summary.
pub fn answer_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}
