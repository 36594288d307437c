//! Anthropic message streams: the decoder from an Anthropic backend's events to hub chunks, and
//! the encoder from hub chunks to an Anthropic client's events.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::response::{anthropic_message_id, anthropic_stop_reason, openai_finish_reason};
use crate::extproc::translate::sse::{SseEvent, SseParser};
use crate::extproc::translate::stream::{Hub, parse_event, str_at, truncated_error};
use crate::extproc::translate::usage::{AnthropicCounts, Usage};
use crate::extproc::translate::{ClientSchema, JSON_RESPONSE_TOOL, TranslateError};

/// Writes one event as Anthropic streams it.
pub fn write_event(out: &mut Vec<u8>, kind: &str, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// An `error` event, which the Anthropic SDK raises as an API error.
pub fn write_error_event(message: &str, out: &mut Vec<u8>) {
    let error = json!({"type": "error", "error": {"type": "api_error", "message": message}});
    write_event(out, "error", &error);
}

/// Whether event `v` says why the answer stopped: the stop reason, `message_stop`, or an error.
pub fn ends_response(v: &Value) -> bool {
    match v.get("type").and_then(Value::as_str) {
        Some("message_stop" | "error") => true,
        Some("message_delta") => v.pointer("/delta/stop_reason").is_some_and(|r| !r.is_null()),
        _ => false,
    }
}

/// Anthropic message events → hub chunks.
#[derive(Debug)]
pub struct Decoder {
    sse: SseParser,
    /// Stamps the chunks.
    created: u64,
    id: String,
    model: String,
    counts: AnthropicCounts,
    /// Anthropic content block index → OpenAI tool call index.
    tools: HashMap<u64, u64>,
    /// The content block calling [`JSON_RESPONSE_TOOL`]: its input is the answer's content.
    answer: Option<u64>,
    /// The stop reason came (`message_delta`): the answer is whole even if `message_stop` is not.
    stopped: bool,
    done: bool,
}

impl Decoder {
    pub fn new(created: u64) -> Self {
        Decoder {
            sse: SseParser::default(),
            created,
            id: String::new(),
            model: String::new(),
            counts: AnthropicCounts::default(),
            tools: HashMap::new(),
            answer: None,
            stopped: false,
            done: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.counts.usage()
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// Feeds upstream body bytes, split anywhere; pushes the hub events they complete.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        out: &mut Vec<Hub>,
    ) -> Result<(), TranslateError> {
        for ev in self.sse.feed(chunk, end_of_stream)? {
            match self.event(&ev, out) {
                // The body ended inside this event: `end` reports the cut.
                Err(_) if !ev.ended => {}
                result => result?,
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: &SseEvent, out: &mut Vec<Hub>) -> Result<(), TranslateError> {
        if !ev.has_data || self.done {
            return Ok(());
        }
        let v = parse_event(ev)?;
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                self.id = str_at(&v, "/message/id").to_string();
                self.model = str_at(&v, "/message/model").to_string();
                if let Some(u) = v.pointer("/message/usage") {
                    self.counts.merge(u);
                }
                out.push(Hub::Chunk(
                    self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                ));
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    // The answer in the JSON format the client asked for (see `request.rs`).
                    Some("tool_use") if str_at(block, "/name") == JSON_RESPONSE_TOOL => {
                        self.answer = v.get("index").and_then(Value::as_u64);
                    }
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
                        out.push(Hub::Chunk(
                            self.chunk(json!({"tool_calls": [call]}), Value::Null),
                        ));
                    }
                    Some("text") => {
                        let text = str_at(block, "/text");
                        if !text.is_empty() {
                            out.push(Hub::Chunk(self.chunk(json!({"content": text}), Value::Null)));
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
                        let delta = json!({"content": str_at(delta, "/text")});
                        out.push(Hub::Chunk(self.chunk(delta, Value::Null)));
                    }
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or_default();
                        let partial = str_at(delta, "/partial_json");
                        if self.answer == Some(block) && !partial.is_empty() {
                            let delta = json!({"content": partial});
                            out.push(Hub::Chunk(self.chunk(delta, Value::Null)));
                        } else if let Some(&index) = self.tools.get(&block)
                            && !partial.is_empty()
                        {
                            let call = json!({"index": index, "function": {"arguments": partial}});
                            out.push(Hub::Chunk(
                                self.chunk(json!({"tool_calls": [call]}), Value::Null),
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.counts.merge(u);
                }
                let finish = match v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    // Only the answer was called for: the model stopped as it would with text.
                    Some("tool_use") if self.answer.is_some() && self.tools.is_empty() => {
                        Some("stop")
                    }
                    reason => reason.map(openai_finish_reason),
                };
                out.push(Hub::Chunk(self.chunk(json!({}), json!(finish))));
                self.stopped |= finish.is_some();
            }
            "message_stop" => self.stop(out),
            "error" => {
                let message = str_at(&v, "/error/message");
                let kind = v.pointer("/error/type").and_then(Value::as_str).map(str::to_string);
                out.push(Hub::Error { message: message.to_string(), kind });
                self.done = true;
            }
            // ping, content_block_stop and future event types carry nothing for the client.
            _ => {}
        }
        Ok(())
    }

    /// The usage chunk and `[DONE]`.
    fn stop(&mut self, out: &mut Vec<Hub>) {
        let mut last = self.chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = self.usage().to_openai();
        out.push(Hub::Chunk(last));
        out.push(Hub::Done);
        self.done = true;
    }

    /// The upstream's body ended: whether its answer was complete. After the stop reason it is,
    /// even without `message_stop` (the usage chunk and [`Hub::Done`] are pushed then).
    pub fn end(&mut self, out: &mut Vec<Hub>) -> bool {
        if self.done {
            return true;
        }
        if self.stopped {
            self.stop(out);
            return true;
        }
        false
    }
}

/// The content block being streamed to an Anthropic client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Text,
    Tool { openai_index: u64 },
}

/// Hub chunks → Anthropic message events, for an Anthropic client.
#[derive(Debug)]
pub struct Encoder {
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

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            started: false,
            block: Block::None,
            tool_id: String::new(),
            next_block: 0,
            stop_reason: None,
            usage: Usage::default(),
            done: false,
        }
    }

    /// Writes the client's events for one hub event.
    pub fn write(&mut self, hub: Hub, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let v = match hub {
            Hub::Chunk(v) => v,
            Hub::Error { message, .. } => {
                write_error_event(&message, out);
                self.done = true;
                return;
            }
            Hub::Done => return self.finish(out),
        };
        self.start(&v, out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Usage::from_openai(u);
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
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
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": anthropic_message_id(str_at(chunk, "/id")),
            "type": "message",
            "role": "assistant",
            "model": str_at(chunk, "/model"),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        write_event(out, "message_start", &json!({"type": "message_start", "message": message}));
    }

    fn open(&mut self, block: Block, content_block: Value, out: &mut Vec<u8>) {
        self.close(out);
        let start = json!({"type": "content_block_start", "index": self.next_block, "content_block": content_block});
        write_event(out, "content_block_start", &start);
        self.block = block;
    }

    fn write_delta(&self, delta: Value, out: &mut Vec<u8>) {
        let index = self.next_block;
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.block == Block::None {
            return;
        }
        write_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.next_block}),
        );
        self.block = Block::None;
        self.next_block += 1;
    }

    /// The upstream's body ended, `complete` or cut short (see [`Decoder::end`]). A complete
    /// answer, or one whose `finish_reason` came, ends normally even without [`Hub::Done`]
    /// (usage may be missing); a cut one ends with an error event, not a `message_stop` that
    /// would make a partial answer look complete. Returns whether it was cut.
    pub fn end(&mut self, complete: bool, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        if complete || self.stop_reason.is_some() {
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
        write_event(out, "message_delta", &delta);
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}
