//! Response bodies back into the client's schema.
//!
//! Takes the upstream's 2xx body in pieces as they arrive and gives the client's bytes: streams
//! event by event, JSON bodies once whole. Also counts the tokens used.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::error::error_body;
use super::sse::SseParser;
use super::stream::{AnthropicToChat, ChatToAnthropic, Passthrough, stream_error};
use super::usage::{AnthropicCounts, Usage};
use super::{ClientSchema, Endpoint, TranslateError};
use crate::api::APISchema;

/// A translator for one response. See [`ResponseTranslator::feed`].
#[derive(Debug)]
pub struct ResponseTranslator {
    mode: Mode,
    stream: bool,
    include_usage: bool,
    created: u64,
    usage: Usage,
    /// The upstream's stream ended before it was complete.
    truncated: bool,
}

#[derive(Debug)]
enum Mode {
    /// Same schema both sides: bytes go out as they come; JSON is kept to count usage at the end.
    JsonPassthrough {
        anthropic: bool,
        body: Vec<u8>,
    },
    /// Anthropic message JSON → OpenAI chat completion JSON, once whole.
    JsonMessagesToChat {
        body: Vec<u8>,
    },
    /// OpenAI chat completion JSON → Anthropic message JSON, once whole.
    JsonChatToMessages {
        body: Vec<u8>,
    },
    SsePassthrough(SseParser, Passthrough),
    SseMessagesToChat(SseParser, Box<AnthropicToChat>),
    SseChatToMessages(SseParser, Box<ChatToAnthropic>),
}

/// A translator for the response to a request of `endpoint` sent to a `backend`; `stream` is
/// whether the request asked for a stream.
pub fn response_translator(
    endpoint: Endpoint,
    backend: APISchema,
    stream: bool,
) -> ResponseTranslator {
    let created =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let anthropic_backend = backend == APISchema::Anthropic;
    let mode = match (endpoint, anthropic_backend, stream) {
        (Endpoint::ChatCompletions, true, false) => Mode::JsonMessagesToChat { body: Vec::new() },
        (Endpoint::ChatCompletions, true, true) => {
            Mode::SseMessagesToChat(SseParser::default(), Box::new(AnthropicToChat::new()))
        }
        (Endpoint::Messages, false, false) => Mode::JsonChatToMessages { body: Vec::new() },
        (Endpoint::Messages, false, true) => {
            Mode::SseChatToMessages(SseParser::default(), Box::new(ChatToAnthropic::new()))
        }
        (_, anthropic, false) => Mode::JsonPassthrough { anthropic, body: Vec::new() },
        (_, anthropic, true) => {
            Mode::SsePassthrough(SseParser::default(), Passthrough::new(anthropic))
        }
    };
    ResponseTranslator {
        mode,
        stream,
        include_usage: false,
        created,
        usage: Usage::default(),
        truncated: false,
    }
}

impl ResponseTranslator {
    /// Whether the OpenAI client asked for the final usage chunk of a stream
    /// ([`super::ParsedRequest::include_usage`]); without it that chunk is withheld.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }

    /// Sets the `created` timestamp of generated OpenAI objects (now, by default).
    pub fn with_created(mut self, created: u64) -> Self {
        self.created = created;
        self
    }

    /// Feeds upstream response body bytes as they arrive (SSE or JSON) and returns the bytes to
    /// send to the client now. Chunks may split anywhere. Streams go out event by event as each
    /// event completes; a JSON body that needs translating goes out whole at `end_of_stream`,
    /// one that does not goes out as it comes. An error means the upstream sent something that
    /// cannot be translated ([`TranslateError::Upstream`], 502); the response cannot continue
    /// (see [`ResponseTranslator::failure`]). A stream whose body ends before the upstream said
    /// it was complete is ended with an error event in the client's format
    /// ([`ResponseTranslator::truncated`]).
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Vec<u8>, TranslateError> {
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::JsonPassthrough { anthropic, body } => {
                body.extend_from_slice(chunk);
                out.extend_from_slice(chunk);
                if end_of_stream {
                    let v: Option<Value> = serde_json::from_slice(body).ok();
                    if let Some(u) = v.as_ref().and_then(|v| v.get("usage")) {
                        self.usage =
                            if *anthropic { anthropic_usage(u) } else { Usage::from_openai(u) };
                    }
                }
            }
            Mode::JsonMessagesToChat { body } => {
                body.extend_from_slice(chunk);
                if end_of_stream {
                    let (v, usage) = messages_to_chat(&parse_body(body)?, self.created);
                    self.usage = usage;
                    out = v.to_string().into_bytes();
                }
            }
            Mode::JsonChatToMessages { body } => {
                body.extend_from_slice(chunk);
                if end_of_stream {
                    let (v, usage) = chat_to_messages(&parse_body(body)?);
                    self.usage = usage;
                    out = v.to_string().into_bytes();
                }
            }
            Mode::SsePassthrough(parser, p) => {
                for ev in parser.feed(chunk, end_of_stream)? {
                    p.event(&ev, !self.include_usage, &mut out);
                }
                if end_of_stream {
                    self.truncated = p.end(&mut out);
                }
                self.usage = p.usage();
            }
            Mode::SseMessagesToChat(parser, t) => {
                for ev in parser.feed(chunk, end_of_stream)? {
                    match t.event(&ev, self.created, self.include_usage, &mut out) {
                        // The body ended inside this event: `end` reports the cut.
                        Err(_) if !ev.ended => {}
                        result => result?,
                    }
                }
                if end_of_stream {
                    self.truncated = t.end(self.created, self.include_usage, &mut out);
                }
                self.usage = t.usage();
            }
            Mode::SseChatToMessages(parser, t) => {
                for ev in parser.feed(chunk, end_of_stream)? {
                    match t.event(&ev, &mut out) {
                        // The body ended inside this event: `end` reports the cut.
                        Err(_) if !ev.ended => {}
                        result => result?,
                    }
                }
                if end_of_stream {
                    self.truncated = t.end(&mut out);
                }
                self.usage = t.usage();
            }
        }
        Ok(out)
    }

    /// Tokens seen so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether the upstream's stream ended before it was complete (the client was sent an error).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The bytes that tell the client its response failed with `message`, after whatever
    /// [`ResponseTranslator::feed`] already gave: an error event for a stream, a 502 error body
    /// otherwise (JSON is only translated whole, so nothing of it went out before).
    pub fn failure(&self, message: &str) -> Vec<u8> {
        let client = self.client();
        if !self.stream {
            return error_body(client, 502, message);
        }
        let mut out = Vec::new();
        stream_error(client, message, &mut out);
        out
    }

    /// The schema the client reads, from the translation's direction.
    fn client(&self) -> ClientSchema {
        match &self.mode {
            Mode::JsonMessagesToChat { .. } | Mode::SseMessagesToChat(..) => ClientSchema::OpenAI,
            Mode::JsonChatToMessages { .. } | Mode::SseChatToMessages(..) => {
                ClientSchema::Anthropic
            }
            Mode::JsonPassthrough { anthropic, .. } => family(*anthropic),
            Mode::SsePassthrough(_, p) => family(p.anthropic()),
        }
    }

    /// The content type of what [`ResponseTranslator::feed`] returns.
    pub fn content_type(&self) -> &'static str {
        if self.stream { "text/event-stream" } else { "application/json" }
    }
}

fn family(anthropic: bool) -> ClientSchema {
    if anthropic { ClientSchema::Anthropic } else { ClientSchema::OpenAI }
}

fn parse_body(body: &[u8]) -> Result<Value, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Upstream(format!("the response body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(TranslateError::Upstream("the response body is not a JSON object".into()));
    }
    Ok(v)
}

fn anthropic_usage(u: &Value) -> Usage {
    let mut counts = AnthropicCounts::default();
    counts.merge(u);
    counts.usage()
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(super) fn openai_finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// An OpenAI completion id as an Anthropic message id (`msg_…`), as Anthropic clients expect.
pub(super) fn anthropic_message_id(openai_id: &str) -> String {
    format!("msg_{}", openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(super) fn anthropic_stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// An Anthropic message → an OpenAI chat completion.
fn messages_to_chat(v: &Value, created: u64) -> (Value, Usage) {
    let usage = v.get("usage").map(anthropic_usage).unwrap_or_default();
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = v.get("stop_reason").and_then(Value::as_str).map(openai_finish_reason);
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

/// An OpenAI chat completion → an Anthropic message.
fn chat_to_messages(v: &Value) -> (Value, Usage) {
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
