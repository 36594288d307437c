//! ConverseStream → hub chunks.
//!
//! The stream is AWS event-stream frames, each an event whose `:event-type` header names it and
//! whose payload is its JSON: `messageStart`, `contentBlockStart` (a tool call's id and name),
//! `contentBlockDelta` (text, or a piece of a tool call's input JSON), `contentBlockStop`,
//! `messageStop` (the stop reason) and `metadata` (usage). A frame of type `exception` or `error`
//! ends the stream with a hub error. The answer is complete once the stop reason came.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::response::{answer_finish, usage};
use super::{Answer, stream_error};
use crate::extproc::translate::eventstream::{self, Message};
use crate::extproc::translate::stream::{Hub, str_at};
use crate::extproc::translate::usage::Usage;
use crate::extproc::translate::{JSON_RESPONSE_TOOL, TranslateError};

/// A content block of the answer, by Converse's block index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A call of the client's tool, by its OpenAI tool call index.
    Tool(u64),
    /// The call of [`JSON_RESPONSE_TOOL`]: its input is the answer's content.
    Answer,
}

/// ConverseStream frames → hub chunks.
#[derive(Debug)]
pub struct Decoder {
    frames: eventstream::Decoder,
    answer: Answer,
    usage: Usage,
    blocks: HashMap<u64, Block>,
    /// The client's tools the answer called so far.
    calls: u64,
    /// The answer came through [`JSON_RESPONSE_TOOL`].
    answered: bool,
    /// The stop reason came: the answer is whole.
    stopped: bool,
    /// The usage came (`metadata`).
    counted: bool,
    done: bool,
}

impl Decoder {
    pub fn new(answer: Answer) -> Self {
        Decoder {
            frames: eventstream::Decoder::default(),
            answer,
            usage: Usage::default(),
            blocks: HashMap::new(),
            calls: 0,
            answered: false,
            stopped: false,
            counted: false,
            done: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn chunk(&self, delta: Value, finish: Value) -> Hub {
        Hub::Chunk(self.chunk_value(delta, finish))
    }

    fn chunk_value(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.answer.id,
            "object": "chat.completion.chunk",
            "created": self.answer.created,
            "model": self.answer.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// Feeds upstream body bytes, split anywhere; pushes the hub events they complete.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Hub>) -> Result<(), TranslateError> {
        for m in self.frames.feed(chunk)? {
            self.message(&m, out)?;
        }
        Ok(())
    }

    fn message(&mut self, m: &Message, out: &mut Vec<Hub>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        if let Some(error) = stream_error(m) {
            out.push(error);
            self.done = true;
            return Ok(());
        }
        let Some(kind) = m.header(":event-type") else { return Ok(()) };
        let v: Value = serde_json::from_slice(&m.payload).map_err(|e| {
            TranslateError::Upstream(format!("a ConverseStream {kind} event is not JSON: {e}"))
        })?;
        let index = v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or_default();
        match kind {
            "messageStart" => {
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), Value::Null))
            }
            "contentBlockStart" => {
                let Some(call) = v.pointer("/start/toolUse") else { return Ok(()) };
                let name = str_at(call, "/name");
                if name == JSON_RESPONSE_TOOL {
                    self.blocks.insert(index, Block::Answer);
                    self.answered = true;
                    return Ok(());
                }
                let call_index = self.calls;
                self.calls += 1;
                self.blocks.insert(index, Block::Tool(call_index));
                let call = json!({
                    "index": call_index,
                    "id": str_at(call, "/toolUseId"),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                });
                out.push(self.chunk(json!({"tool_calls": [call]}), Value::Null));
            }
            "contentBlockDelta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    out.push(self.chunk(json!({"content": text}), Value::Null));
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                    && !input.is_empty()
                {
                    let delta = match self.blocks.get(&index) {
                        Some(Block::Answer) => json!({"content": input}),
                        Some(Block::Tool(call)) => {
                            json!({"tool_calls": [{"index": call, "function": {"arguments": input}}]})
                        }
                        None => return Ok(()),
                    };
                    out.push(self.chunk(delta, Value::Null));
                }
                // Reasoning deltas have no place in an OpenAI chunk.
            }
            "messageStop" => {
                let reason = str_at(&v, "/stopReason");
                let finish = answer_finish(reason, self.answered, self.calls > 0);
                out.push(self.chunk(json!({}), json!(finish)));
                self.stopped = true;
                if self.counted {
                    self.stop(out);
                }
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    self.usage = usage(u);
                }
                self.counted = true;
                if self.stopped {
                    self.stop(out);
                }
            }
            // contentBlockStop and future event types carry nothing for the client.
            _ => {}
        }
        Ok(())
    }

    /// The usage chunk and `[DONE]`.
    fn stop(&mut self, out: &mut Vec<Hub>) {
        let mut last = self.chunk_value(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = self.usage.to_openai();
        out.push(Hub::Chunk(last));
        out.push(Hub::Done);
        self.done = true;
    }

    /// The upstream's body ended: whether its answer was complete (the stop reason came).
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
