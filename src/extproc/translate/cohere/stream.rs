//! Cohere v2 chat streams → hub chunks.
//!
//! Cohere names each event (`event:` and the data's `type`): `message-start` opens the answer,
//! `content-delta` and `tool-plan-delta` carry what the model says (the tool plan before its
//! tool calls, as in whole answers), `tool-call-start`/`-delta` a call and its arguments in
//! pieces, and `message-end` the finish reason and usage, which complete the answer. A
//! `message-end` whose finish reason says the answer failed becomes an error event.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::billed_usage;
use super::response::finish_reason;
use crate::extproc::translate::TranslateError;
use crate::extproc::translate::sse::{SseEvent, SseParser};
use crate::extproc::translate::stream::{Hub, parse_event, str_at};
use crate::extproc::translate::usage::Usage;

/// Cohere chat events → hub chunks.
#[derive(Debug)]
pub struct Decoder {
    sse: SseParser,
    /// Stamps the chunks.
    created: u64,
    /// Cohere's events do not name the model: the one asked for.
    model: String,
    id: String,
    usage: Usage,
    /// Cohere tool call index → OpenAI tool call index.
    tools: HashMap<u64, u64>,
    /// `message-end` came: the answer is whole.
    done: bool,
}

impl Decoder {
    pub fn new(model: String, created: u64) -> Self {
        Decoder {
            sse: SseParser::default(),
            created,
            model,
            id: String::new(),
            usage: Usage::default(),
            tools: HashMap::new(),
            done: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
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

    fn text(&self, text: &str, out: &mut Vec<Hub>) {
        if !text.is_empty() {
            out.push(Hub::Chunk(self.chunk(json!({"content": text}), Value::Null)));
        }
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
        let index = v.get("index").and_then(Value::as_u64).unwrap_or_default();
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message-start" => {
                self.id = str_at(&v, "/id").to_string();
                out.push(Hub::Chunk(
                    self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                ));
            }
            // A content part starts with its first text, usually empty; thinking parts carry
            // `thinking`, not `text`, and have no OpenAI chunk.
            "content-start" | "content-delta" => {
                self.text(str_at(&v, "/delta/message/content/text"), out);
            }
            "tool-plan-delta" => self.text(str_at(&v, "/delta/message/tool_plan"), out),
            "tool-call-start" => {
                let call = v.pointer("/delta/message/tool_calls").unwrap_or(&Value::Null);
                let openai_index = self.tools.len() as u64;
                self.tools.insert(index, openai_index);
                let call = json!({
                    "index": openai_index,
                    "id": str_at(call, "/id"),
                    "type": "function",
                    "function": {
                        "name": str_at(call, "/function/name"),
                        "arguments": str_at(call, "/function/arguments"),
                    },
                });
                out.push(Hub::Chunk(self.chunk(json!({"tool_calls": [call]}), Value::Null)));
            }
            "tool-call-delta" => {
                let arguments = str_at(&v, "/delta/message/tool_calls/function/arguments");
                if let Some(&openai_index) = self.tools.get(&index)
                    && !arguments.is_empty()
                {
                    let call = json!({"index": openai_index, "function": {"arguments": arguments}});
                    out.push(Hub::Chunk(self.chunk(json!({"tool_calls": [call]}), Value::Null)));
                }
            }
            "message-end" => {
                self.done = true;
                if let Some(u) = v.pointer("/delta/usage").filter(|u| u.is_object()) {
                    self.usage = billed_usage(u);
                }
                let reason = str_at(&v, "/delta/finish_reason");
                let error = v.pointer("/delta/error").and_then(Value::as_str);
                match finish_reason(reason, error) {
                    Ok(finish) => {
                        out.push(Hub::Chunk(self.chunk(json!({}), json!(finish))));
                        let mut last = self.chunk(json!({}), Value::Null);
                        last["choices"] = json!([]);
                        last["usage"] = self.usage.to_openai();
                        out.push(Hub::Chunk(last));
                        out.push(Hub::Done);
                    }
                    Err(message) => {
                        out.push(Hub::Error { message, kind: Some("server_error".into()) })
                    }
                }
            }
            // content-end, tool-call-end, citations and event types added later carry nothing
            // for the client.
            _ => {}
        }
        Ok(())
    }

    /// The upstream's body ended: whether its answer was complete (`message-end` came).
    pub fn end(&mut self, _out: &mut Vec<Hub>) -> bool {
        self.done
    }
}
