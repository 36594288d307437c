//! Streamed responses: what every wire family's stream shares.
//!
//! A translated stream goes through the hub: the backend family's decoder turns the upstream's
//! bytes into [`Hub`] events (OpenAI chat completion chunks), and the client family's encoder
//! turns those into the client's bytes. A stream whose two ends speak the same family is not
//! decoded at all: [`Passthrough`] sends the upstream's bytes on as they are and only reads them
//! for token usage and for whether the stream completed.
//!
//! A stream whose body ends before the upstream said why the answer stopped (Anthropic's
//! `message_delta` stop reason or `message_stop`, OpenAI's `finish_reason` or `[DONE]`, or an
//! error event) was cut: the upstream closed the connection mid-answer. The client then gets an
//! error event in its format ([`truncated_error`]), which both official SDKs raise, rather than
//! a stream that looks complete.

use serde_json::Value;

use super::sse::SseEvent;
use super::usage::{AnthropicCounts, Usage};
use super::{ClientSchema, Endpoint, TranslateError, anthropic, openai};

/// One event of a translated stream, between a backend's decoder and a client's encoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Hub {
    /// An OpenAI `chat.completion.chunk` object. The usage-only chunk has empty `choices`.
    Chunk(Value),
    /// The upstream failed mid-stream, with its error type if it named one; nothing follows.
    Error { message: String, kind: Option<String> },
    /// The answer is complete (OpenAI's `[DONE]`).
    Done,
}

/// What the client is told when the upstream's stream ended before it was complete.
pub const TRUNCATED_MESSAGE: &str =
    "the upstream closed the stream before the response was complete";

/// An error event in `client`'s streaming format: both SDKs raise it as an API error.
pub fn stream_error(client: ClientSchema, message: &str, out: &mut Vec<u8>) {
    match client {
        ClientSchema::OpenAI => openai::write_error_event(message, out),
        ClientSchema::Anthropic => anthropic::stream::write_error_event(message, out),
    }
}

/// The error event that ends a stream the upstream cut short.
pub fn truncated_error(client: ClientSchema, out: &mut Vec<u8>) {
    stream_error(client, TRUNCATED_MESSAGE, out);
}

/// The parsed JSON of one event's data.
pub fn parse_event(ev: &SseEvent) -> Result<Value, TranslateError> {
    serde_json::from_str(&ev.data).map_err(|e| {
        TranslateError::Upstream(format!("a streamed event is not JSON ({e}): {:.200}", ev.data))
    })
}

/// The string at JSON pointer `ptr`, or "".
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The kind of events a passed-through stream carries, which says how it reports usage and
/// completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    /// OpenAI chat and completion chunks, ended by a `finish_reason` and `[DONE]`.
    Chunks,
    /// OpenAI Responses API events, ended by `response.completed` (or failed, incomplete).
    Responses,
    /// Anthropic message events, ended by the stop reason and `message_stop`.
    Messages,
}

impl Events {
    fn of(endpoint: Endpoint) -> Events {
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
                Events::Chunks
            }
            Endpoint::Responses => Events::Responses,
            Endpoint::Messages | Endpoint::CountTokens => Events::Messages,
        }
    }
}

/// The upstream's events unchanged, read for usage and for whether the stream completed.
#[derive(Debug)]
pub struct Passthrough {
    events: Events,
    /// The client's family, which the error event of a cut stream is written in.
    client: ClientSchema,
    counts: AnthropicCounts,
    usage: Usage,
    /// The upstream said the response is complete (or failed with an error event).
    complete: bool,
    /// A last event that no blank line ended (the body ended inside it), held until
    /// [`Passthrough::end`] knows whether the stream was complete.
    unterminated: Vec<u8>,
}

impl Passthrough {
    /// For the stream answering a request of `endpoint`, both ends speaking its family.
    pub fn new(endpoint: Endpoint) -> Self {
        Passthrough {
            events: Events::of(endpoint),
            client: endpoint.client_schema(),
            counts: AnthropicCounts::default(),
            usage: Usage::default(),
            complete: false,
            unterminated: Vec::new(),
        }
    }

    pub fn usage(&self) -> Usage {
        match self.events {
            Events::Messages => self.counts.usage(),
            Events::Chunks | Events::Responses => self.usage,
        }
    }

    /// Passes one event on; `strip_usage_chunk` drops OpenAI's usage-only chunk, which the
    /// gateway asked for and the client did not.
    pub fn event(&mut self, ev: &SseEvent, strip_usage_chunk: bool, out: &mut Vec<u8>) {
        if ev.has_data && self.events == Events::Chunks && ev.data.trim() == "[DONE]" {
            self.complete = true;
        }
        // What cannot be read is still the client's to see; only usage counting misses it.
        let v = if ev.has_data { serde_json::from_str::<Value>(&ev.data).ok() } else { None };
        if let Some(v) = v {
            match self.events {
                Events::Messages => {
                    self.complete |= anthropic::stream::ends_response(&v);
                    if let Some(u) = v.pointer("/message/usage").or_else(|| v.get("usage")) {
                        self.counts.merge(u);
                    }
                }
                Events::Chunks => {
                    self.complete |= openai::ends_response(&v);
                    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                        self.usage = Usage::from_openai(u);
                        if strip_usage_chunk && openai::is_usage_chunk(&v) {
                            return;
                        }
                    }
                }
                Events::Responses => {
                    self.complete |= openai::ends_responses_stream(&v);
                    if let Some(usage) = openai::responses_event_usage(&v) {
                        self.usage = usage;
                    }
                }
            }
        }
        if ev.ended {
            out.extend_from_slice(&ev.raw);
        } else {
            self.unterminated.extend_from_slice(&ev.raw);
        }
    }

    /// The upstream's body ended. A complete stream's unterminated last event goes out as it
    /// came; a cut one's is dropped (a fragment would garble the error event after it) and the
    /// client gets an error event. Returns whether it was cut.
    pub fn end(&mut self, out: &mut Vec<u8>) -> bool {
        let fragment = std::mem::take(&mut self.unterminated);
        if self.complete {
            out.extend_from_slice(&fragment);
            return false;
        }
        truncated_error(self.client, out);
        self.complete = true;
        true
    }
}
