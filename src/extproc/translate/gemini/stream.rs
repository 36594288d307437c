//! Gemini streams (`streamGenerateContent?alt=sse`): each event is a whole
//! `GenerateContentResponse` holding the next pieces of each candidate; the last one says why
//! the answer stopped (`finishReason`) and carries the usage. Decoded into hub chunks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{answer_text, completion_id, finish_reason, prompt_blocked, tool_call, usage};
use crate::extproc::translate::TranslateError;
use crate::extproc::translate::sse::SseParser;
use crate::extproc::translate::stream::{Hub, parse_event, str_at};
use crate::extproc::translate::usage::Usage;

/// Gemini response chunks → hub chunks.
#[derive(Debug)]
pub struct Decoder {
    sse: SseParser,
    /// Stamps the chunks.
    created: u64,
    /// The completion id, from the first chunk.
    id: Option<String>,
    model: String,
    usage: Usage,
    /// Per candidate index that came: the tool calls it made so far.
    candidates: BTreeMap<u64, u64>,
    /// Tool calls made over all candidates, which numbers the ids generated for them.
    calls_made: usize,
    /// A finish reason came (or the prompt was blocked): the answer is whole.
    finished: bool,
    done: bool,
}

impl Decoder {
    pub fn new(created: u64) -> Self {
        Decoder {
            sse: SseParser::default(),
            created,
            id: None,
            model: String::new(),
            usage: Usage::default(),
            candidates: BTreeMap::new(),
            calls_made: 0,
            finished: false,
            done: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or_default(),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
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
            if !ev.has_data || self.done {
                continue;
            }
            match parse_event(&ev) {
                Ok(v) => self.event(&v, out),
                // The body ended inside this event: `end` reports the cut.
                Err(_) if !ev.ended => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn event(&mut self, v: &Value, out: &mut Vec<Hub>) {
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = str_at(err, "/message");
            let message = if message.is_empty() { "upstream error" } else { message };
            out.push(Hub::Error { message: message.to_string(), kind: None });
            self.done = true;
            return;
        }
        if self.id.is_none() {
            self.id = Some(completion_id(v, self.created));
            self.model = str_at(v, "/modelVersion").to_string();
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
            self.usage = usage(u);
        }
        let mut choices = Vec::new();
        let candidates = v.get("candidates").and_then(Value::as_array);
        for (k, candidate) in candidates.into_iter().flatten().enumerate() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(k as u64);
            choices.push(self.candidate(index, candidate));
        }
        if choices.is_empty() && prompt_blocked(v) {
            let mut choice = self.candidate(0, &Value::Null);
            choice["finish_reason"] = json!("content_filter");
            self.finished = true;
            choices.push(choice);
        }
        if !choices.is_empty() {
            out.push(Hub::Chunk(self.chunk(choices)));
        }
    }

    /// The choice delta for one candidate's pieces in one chunk.
    fn candidate(&mut self, index: u64, candidate: &Value) -> Value {
        let mut delta = serde_json::Map::new();
        // A candidate's first piece says who speaks.
        let mut called = match self.candidates.get(&index) {
            Some(&n) => n,
            None => {
                delta.insert("role".into(), json!("assistant"));
                delta.insert("content".into(), json!(""));
                0
            }
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        let id = self.id.clone().unwrap_or_default();
        for part in
            candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten()
        {
            if let Some(t) = answer_text(part) {
                text.push_str(t);
            } else if let Some(mut call) = tool_call(part, &id, self.calls_made) {
                self.calls_made += 1;
                call["index"] = json!(called);
                called += 1;
                calls.push(call);
            }
        }
        if !text.is_empty() {
            delta.insert("content".into(), json!(text));
        }
        self.candidates.insert(index, called);
        if !calls.is_empty() {
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        let finish = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .map(|r| finish_reason(r, called > 0));
        self.finished |= finish.is_some();
        json!({"index": index, "delta": delta, "finish_reason": finish})
    }

    /// The upstream's body ended: whether its answer was complete. It is once a finish reason
    /// came; the usage chunk and [`Hub::Done`] are pushed then.
    pub fn end(&mut self, out: &mut Vec<Hub>) -> bool {
        if self.done {
            return true;
        }
        if !self.finished {
            return false;
        }
        let mut last = self.chunk(Vec::new());
        last["usage"] = self.usage.to_openai();
        out.push(Hub::Chunk(last));
        out.push(Hub::Done);
        self.done = true;
        true
    }
}
