//! Streamed responses, one server-sent event at a time.
//!
//! Takes the upstream's [`SseEvent`]s and writes the client's bytes: Anthropic message events as
//! OpenAI `chat.completion.chunk` lines ([`AnthropicToChat`]), OpenAI chunks as Anthropic events
//! ([`ChatToAnthropic`]), or the upstream's own bytes when both sides speak the same schema
//! ([`Passthrough`]). Each keeps the token usage seen so far.
//!
//! A stream whose body ends before the upstream said why the answer stopped (Anthropic's
//! `message_delta` stop reason or `message_stop`, OpenAI's `finish_reason` or `[DONE]`, or an error
//! event) was cut: the upstream closed the connection mid-answer. Each translator then ends it with an error event in the client's format
//! ([`truncated_error`]), which both official SDKs raise, rather than let it look complete.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::response::{anthropic_stop_reason, openai_finish_reason};
use super::sse::SseEvent;
use super::usage::{AnthropicCounts, Usage};
use super::{ClientSchema, TranslateError};

fn parse(ev: &SseEvent) -> Result<Value, TranslateError> {
    serde_json::from_str(&ev.data).map_err(|e| {
        TranslateError::Upstream(format!("a streamed event is not JSON ({e}): {:.200}", ev.data))
    })
}

fn write_openai(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn write_anthropic(out: &mut Vec<u8>, kind: &str, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// What the client is told when the upstream's stream ended before it was complete.
pub(super) const TRUNCATED_MESSAGE: &str =
    "the upstream closed the stream before the response was complete";

/// An error event in `client`'s streaming format: both SDKs raise it as an API error.
pub(super) fn stream_error(client: ClientSchema, message: &str, out: &mut Vec<u8>) {
    match client {
        ClientSchema::OpenAI => write_openai(
            out,
            &json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
        ),
        ClientSchema::Anthropic => write_anthropic(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        ),
    }
}

/// The error event that ends a stream the upstream cut short.
pub(super) fn truncated_error(client: ClientSchema, out: &mut Vec<u8>) {
    stream_error(client, TRUNCATED_MESSAGE, out);
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Anthropic message events → OpenAI chat completion chunks.
#[derive(Debug)]
pub(super) struct AnthropicToChat {
    id: String,
    model: String,
    counts: AnthropicCounts,
    /// Anthropic content block index → OpenAI tool call index.
    tools: HashMap<u64, u64>,
    /// The stop reason came (`message_delta`): the answer is whole even if `message_stop` is not.
    stopped: bool,
    done: bool,
}

impl AnthropicToChat {
    pub(super) fn new() -> Self {
        AnthropicToChat {
            id: String::new(),
            model: String::new(),
            counts: AnthropicCounts::default(),
            tools: HashMap::new(),
            stopped: false,
            done: false,
        }
    }

    pub(super) fn usage(&self) -> Usage {
        self.counts.usage()
    }

    fn chunk(&self, created: u64, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// Translates one event; `created` stamps the chunks, `include_usage` asks for the final
    /// usage-only chunk.
    pub(super) fn event(
        &mut self,
        ev: &SseEvent,
        created: u64,
        include_usage: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        if !ev.has_data || self.done {
            return Ok(());
        }
        let v = parse(ev)?;
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                self.id = str_at(&v, "/message/id").to_string();
                self.model = str_at(&v, "/message/model").to_string();
                if let Some(u) = v.pointer("/message/usage") {
                    self.counts.merge(u);
                }
                write_openai(
                    out,
                    &self.chunk(created, json!({"role": "assistant", "content": ""}), Value::Null),
                );
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len() as u64;
                        self.tools.insert(
                            v.get("index").and_then(Value::as_u64).unwrap_or_default(),
                            index,
                        );
                        let call = json!({
                            "index": index,
                            "id": str_at(block, "/id"),
                            "type": "function",
                            "function": {"name": str_at(block, "/name"), "arguments": ""},
                        });
                        write_openai(
                            out,
                            &self.chunk(created, json!({"tool_calls": [call]}), Value::Null),
                        );
                    }
                    Some("text") => {
                        let text = str_at(block, "/text");
                        if !text.is_empty() {
                            write_openai(
                                out,
                                &self.chunk(created, json!({"content": text}), Value::Null),
                            );
                        }
                    }
                    // Thinking and server tool blocks have no OpenAI chunk.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        write_openai(
                            out,
                            &self.chunk(
                                created,
                                json!({"content": str_at(delta, "/text")}),
                                Value::Null,
                            ),
                        );
                    }
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or_default();
                        let partial = str_at(delta, "/partial_json");
                        if let Some(&index) = self.tools.get(&block)
                            && !partial.is_empty()
                        {
                            let call = json!({"index": index, "function": {"arguments": partial}});
                            write_openai(
                                out,
                                &self.chunk(created, json!({"tool_calls": [call]}), Value::Null),
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.counts.merge(u);
                }
                let finish = v
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .map(openai_finish_reason);
                write_openai(out, &self.chunk(created, json!({}), json!(finish)));
                self.stopped |= finish.is_some();
            }
            "message_stop" => self.stop(created, include_usage, out),
            "error" => {
                let message = str_at(&v, "/error/message");
                let kind =
                    v.pointer("/error/type").and_then(Value::as_str).unwrap_or("server_error");
                write_openai(
                    out,
                    &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
                );
                self.done = true;
            }
            // ping, content_block_stop and future event types carry nothing for the client.
            _ => {}
        }
        Ok(())
    }

    /// The usage chunk, if asked for, and `[DONE]`.
    fn stop(&mut self, created: u64, include_usage: bool, out: &mut Vec<u8>) {
        if include_usage {
            let mut last = self.chunk(created, json!({}), Value::Null);
            last["choices"] = json!([]);
            last["usage"] = self.usage().to_openai();
            write_openai(out, &last);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// The upstream's body ended. After the stop reason the stream ends normally even without
    /// `message_stop`; before it, the stream was cut and the client gets an error chunk instead
    /// of `[DONE]`. Returns whether it was cut.
    pub(super) fn end(&mut self, created: u64, include_usage: bool, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        if self.stopped {
            self.stop(created, include_usage, out);
            return false;
        }
        truncated_error(ClientSchema::OpenAI, out);
        self.done = true;
        true
    }
}

/// The content block being streamed to an Anthropic client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Text,
    Tool { openai_index: u64 },
}

/// OpenAI chat completion chunks → Anthropic message events.
#[derive(Debug)]
pub(super) struct ChatToAnthropic {
    started: bool,
    block: Block,
    /// The id of the open tool call: some servers reuse one index for parallel calls.
    tool_id: String,
    /// Index of the open content block, or of the next one when none is open.
    next_block: u64,
    stop_reason: Option<&'static str>,
    usage: Usage,
    done: bool,
}

impl ChatToAnthropic {
    pub(super) fn new() -> Self {
        ChatToAnthropic {
            started: false,
            block: Block::None,
            tool_id: String::new(),
            next_block: 0,
            stop_reason: None,
            usage: Usage::default(),
            done: false,
        }
    }

    pub(super) fn usage(&self) -> Usage {
        self.usage
    }

    pub(super) fn event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if !ev.has_data || self.done {
            return Ok(());
        }
        if ev.data.trim() == "[DONE]" {
            self.finish(out);
            return Ok(());
        }
        let v = parse(ev)?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .or(err.as_str())
                .unwrap_or("upstream error");
            write_anthropic(
                out,
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            );
            self.done = true;
            return Ok(());
        }
        self.start(&v, out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Usage::from_openai(u);
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return Ok(());
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if self.block != Block::Text {
                self.open(Block::Text, json!({"type": "text", "text": ""}), out);
            }
            self.write_delta(json!({"type": "text_delta", "text": text}), out);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, call) in calls.iter().enumerate() {
                let openai_index = call.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                let id = str_at(call, "/id");
                let new_id = !id.is_empty() && id != self.tool_id;
                if new_id || self.block != (Block::Tool { openai_index }) {
                    self.tool_id = id.to_string();
                    let block = json!({
                        "type": "tool_use",
                        "id": id,
                        "name": str_at(call, "/function/name"),
                        "input": {},
                    });
                    self.open(Block::Tool { openai_index }, block, out);
                }
                let args = str_at(call, "/function/arguments");
                if !args.is_empty() {
                    self.write_delta(
                        json!({"type": "input_json_delta", "partial_json": args}),
                        out,
                    );
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(anthropic_stop_reason(reason));
            self.close(out);
        }
        Ok(())
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": super::response::anthropic_message_id(str_at(chunk, "/id")),
            "type": "message",
            "role": "assistant",
            "model": str_at(chunk, "/model"),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        write_anthropic(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn open(&mut self, block: Block, content_block: Value, out: &mut Vec<u8>) {
        self.close(out);
        let start = json!({"type": "content_block_start", "index": self.next_block, "content_block": content_block});
        write_anthropic(out, "content_block_start", &start);
        self.block = block;
    }

    fn write_delta(&self, delta: Value, out: &mut Vec<u8>) {
        let index = self.next_block;
        write_anthropic(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.block == Block::None {
            return;
        }
        write_anthropic(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.next_block}),
        );
        self.block = Block::None;
        self.next_block += 1;
    }

    /// The upstream's body ended. After a `finish_reason` the message ends normally even without
    /// `[DONE]` (usage may be missing); before one, the stream was cut and the client gets an
    /// error event, not a `message_stop` that would make a partial answer look complete.
    /// Returns whether it was cut.
    pub(super) fn end(&mut self, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        if self.stop_reason.is_some() {
            self.finish(out);
            return false;
        }
        truncated_error(ClientSchema::Anthropic, out);
        self.done = true;
        true
    }

    /// Ends the message: OpenAI sends usage after the finish reason, so the stop reason waits
    /// for `[DONE]` (or the end of the body) to travel with it.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done || !self.started {
            return;
        }
        self.close(out);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": self.usage.to_anthropic(),
        });
        write_anthropic(out, "message_delta", &delta);
        write_anthropic(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}

/// The upstream's events unchanged, read for usage and for whether the stream completed.
#[derive(Debug)]
pub(super) struct Passthrough {
    anthropic: bool,
    counts: AnthropicCounts,
    usage: Usage,
    /// The upstream said the response is complete (or failed with an error event).
    complete: bool,
    /// A last event that no blank line ended (the body ended inside it), held until
    /// [`Passthrough::end`] knows whether the stream was complete.
    unterminated: Vec<u8>,
}

impl Passthrough {
    pub(super) fn new(anthropic: bool) -> Self {
        Passthrough {
            anthropic,
            counts: AnthropicCounts::default(),
            usage: Usage::default(),
            complete: false,
            unterminated: Vec::new(),
        }
    }

    pub(super) fn usage(&self) -> Usage {
        if self.anthropic { self.counts.usage() } else { self.usage }
    }

    /// Whether both sides speak Anthropic (else OpenAI).
    pub(super) fn anthropic(&self) -> bool {
        self.anthropic
    }

    /// Passes one event on; `strip_usage_chunk` drops OpenAI's usage-only chunk, which the
    /// gateway asked for and the client did not.
    pub(super) fn event(&mut self, ev: &SseEvent, strip_usage_chunk: bool, out: &mut Vec<u8>) {
        if ev.has_data && !self.anthropic && ev.data.trim() == "[DONE]" {
            self.complete = true;
        }
        // What cannot be read is still the client's to see; only usage counting misses it.
        let v = if ev.has_data { serde_json::from_str::<Value>(&ev.data).ok() } else { None };
        if let Some(v) = v {
            self.complete |= self.ends_response(&v);
            if self.anthropic {
                if let Some(u) = v.pointer("/message/usage").or_else(|| v.get("usage")) {
                    self.counts.merge(u);
                }
            } else if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                self.usage = Usage::from_openai(u);
                let no_choices =
                    v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                if strip_usage_chunk && no_choices {
                    return;
                }
            }
        }
        if ev.ended {
            out.extend_from_slice(&ev.raw);
        } else {
            self.unterminated.extend_from_slice(&ev.raw);
        }
    }

    /// Whether event `v` says why the answer stopped: Anthropic's stop reason or
    /// `message_stop`, an OpenAI `finish_reason`, or an error in either schema.
    fn ends_response(&self, v: &Value) -> bool {
        if self.anthropic {
            return match v.get("type").and_then(Value::as_str) {
                Some("message_stop" | "error") => true,
                Some("message_delta") => {
                    v.pointer("/delta/stop_reason").is_some_and(|r| !r.is_null())
                }
                _ => false,
            };
        }
        let finished = v.get("choices").and_then(Value::as_array).is_some_and(|c| {
            c.iter().any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
        });
        finished || v.get("error").is_some_and(|e| !e.is_null())
    }

    /// The upstream's body ended. A complete stream's unterminated last event goes out as it
    /// came; a cut one's is dropped (a fragment would garble the error event after it) and the
    /// client gets an error event. Returns whether it was cut.
    pub(super) fn end(&mut self, out: &mut Vec<u8>) -> bool {
        let fragment = std::mem::take(&mut self.unterminated);
        if self.complete {
            out.extend_from_slice(&fragment);
            return false;
        }
        let client = if self.anthropic { ClientSchema::Anthropic } else { ClientSchema::OpenAI };
        truncated_error(client, out);
        self.complete = true;
        true
    }
}
