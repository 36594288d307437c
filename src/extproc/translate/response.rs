//! Response bodies back into the client's schema.
//!
//! Takes the upstream's 2xx body in pieces as they arrive and gives the client's bytes: streams
//! event by event, JSON bodies once whole. Also counts the tokens used. Which family decodes and
//! which encodes is chosen here, by exhaustive matches on [`Wire`] and [`ClientSchema`]; the
//! shapes are the families' own modules.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error::error_body;
use super::sse::SseParser;
use super::stream::{Passthrough, stream_error};
use super::usage::Usage;
use super::{
    AnthropicHost, ClientSchema, Endpoint, TranslateError, Wire, anthropic, bedrock, cohere,
    gemini, openai,
};
use crate::api::APISchema;

/// A translator for one response. See [`ResponseTranslator::feed`].
#[derive(Debug)]
pub struct ResponseTranslator {
    settings: Settings,
    unwrap: Unwrap,
    mode: Mode,
    usage: Usage,
    /// The upstream's stream ended before it was complete.
    truncated: bool,
}

/// What the translation of one response depends on.
#[derive(Debug, Clone)]
struct Settings {
    endpoint: Endpoint,
    backend: APISchema,
    stream: bool,
    include_usage: bool,
    created: u64,
    /// The model asked for, for backends whose answers do not name it.
    model: String,
    /// Whether an embeddings client wants base64 vectors from a backend that answers floats.
    base64_embeddings: bool,
}

/// What comes off a backend's stream before its family's decoder (or the passthrough) reads it.
#[derive(Debug)]
enum Unwrap {
    Nothing,
    /// Anthropic events in Bedrock's event-stream frames.
    Bedrock(bedrock::invoke::Unwrap),
}

#[derive(Debug)]
enum Mode {
    /// Same family both sides: bytes go out as they come; JSON is kept to count usage at the end.
    JsonPassthrough {
        body: Vec<u8>,
    },
    SsePassthrough(SseParser, Passthrough),
    /// The backend's JSON → the hub → the client's JSON, once whole.
    Json {
        backend: Wire,
        client: Writer,
        body: Vec<u8>,
    },
    /// The backend's stream → hub events → the client's stream, event by event.
    Stream {
        decoder: Decoder,
        encoder: Encoder,
    },
    /// Bedrock's CountTokens answer → Anthropic's token count, once whole.
    BedrockTokenCount {
        body: Vec<u8>,
    },
}

/// A backend family's stream decoder.
#[derive(Debug)]
enum Decoder {
    OpenAI(openai::Decoder),
    Anthropic(Box<anthropic::stream::Decoder>),
    Converse(Box<bedrock::stream::Decoder>),
    Gemini(Box<gemini::stream::Decoder>),
    Cohere(Box<cohere::stream::Decoder>),
}

/// A client family the hub's answers are written for. Cohere's clients are not one: their only
/// endpoint, rerank, is served by Cohere backends alone, so their answers always pass as they are.
#[derive(Debug, Clone, Copy)]
enum Writer {
    OpenAI,
    Anthropic,
}

impl Writer {
    fn of(client: ClientSchema) -> Option<Writer> {
        match client {
            ClientSchema::OpenAI => Some(Writer::OpenAI),
            ClientSchema::Anthropic => Some(Writer::Anthropic),
            ClientSchema::Cohere => None,
        }
    }
}

/// A client family's stream encoder.
#[derive(Debug)]
enum Encoder {
    OpenAI(openai::Encoder),
    Anthropic(Box<anthropic::stream::Encoder>),
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
    ResponseTranslator::new(Settings {
        endpoint,
        backend,
        stream,
        include_usage: false,
        created,
        model: String::new(),
        base64_embeddings: false,
    })
}

/// Ids for answers whose backend gives none, unique in this process.
fn answer_id(created: u64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("chatcmpl-{created:x}{:06x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl ResponseTranslator {
    fn new(settings: Settings) -> Self {
        let client = settings.endpoint.client_schema();
        let stream = settings.stream;
        let wire = Wire::of(settings.backend);
        let unwrap = match wire {
            Wire::Anthropic(AnthropicHost::Bedrock) if stream => {
                Unwrap::Bedrock(bedrock::invoke::Unwrap::default())
            }
            Wire::OpenAI | Wire::Anthropic(_) | Wire::Converse | Wire::Gemini | Wire::Cohere => {
                Unwrap::Nothing
            }
        };
        let writer = Writer::of(client).filter(|_| !wire.speaks(client));
        let bedrock_count = settings.endpoint == Endpoint::CountTokens
            && wire == Wire::Anthropic(AnthropicHost::Bedrock);
        let mode = match writer {
            _ if bedrock_count => Mode::BedrockTokenCount { body: Vec::new() },
            None if stream => {
                Mode::SsePassthrough(SseParser::default(), Passthrough::new(settings.endpoint))
            }
            None => Mode::JsonPassthrough { body: Vec::new() },
            Some(client) if stream => {
                let decoder = match wire {
                    Wire::OpenAI => Decoder::OpenAI(openai::Decoder::default()),
                    Wire::Anthropic(_) => Decoder::Anthropic(Box::new(
                        anthropic::stream::Decoder::new(settings.created),
                    )),
                    Wire::Converse => Decoder::Converse(Box::new(bedrock::stream::Decoder::new(
                        settings.answer(),
                    ))),
                    Wire::Gemini => {
                        Decoder::Gemini(Box::new(gemini::stream::Decoder::new(settings.created)))
                    }
                    Wire::Cohere => Decoder::Cohere(Box::new(cohere::stream::Decoder::new(
                        settings.model.clone(),
                        settings.created,
                    ))),
                };
                let encoder = match client {
                    Writer::OpenAI => Encoder::OpenAI(openai::Encoder::new(settings.include_usage)),
                    Writer::Anthropic => {
                        Encoder::Anthropic(Box::new(anthropic::stream::Encoder::new()))
                    }
                };
                Mode::Stream { decoder, encoder }
            }
            Some(client) => Mode::Json { backend: wire, client, body: Vec::new() },
        };
        ResponseTranslator { settings, unwrap, mode, usage: Usage::default(), truncated: false }
    }

    /// Whether the OpenAI client asked for the final usage chunk of a stream
    /// ([`super::ParsedRequest::include_usage`]); without it that chunk is withheld.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.settings.include_usage = include;
        ResponseTranslator::new(self.settings)
    }

    /// Whether the client asked for base64 embeddings
    /// ([`super::ParsedRequest::base64_embeddings`]), which backends that answer floats
    /// (Bedrock's Titan, Vertex AI) are encoded into.
    pub fn base64_embeddings(mut self, base64: bool) -> Self {
        self.settings.base64_embeddings = base64;
        ResponseTranslator::new(self.settings)
    }

    /// Sets the `created` timestamp of generated OpenAI objects (now, by default).
    pub fn with_created(mut self, created: u64) -> Self {
        self.settings.created = created;
        ResponseTranslator::new(self.settings)
    }

    /// The model the backend was asked for ([`super::TranslatedRequest::model`]), which names
    /// the answer when the backend's does not (Bedrock's Converse).
    pub fn model(mut self, model: &str) -> Self {
        self.settings.model = model.to_string();
        ResponseTranslator::new(self.settings)
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
        let chunk = match &mut self.unwrap {
            Unwrap::Nothing => Cow::Borrowed(chunk),
            Unwrap::Bedrock(u) => Cow::Owned(u.feed(chunk)?),
        };
        let chunk = chunk.as_ref();
        match &mut self.mode {
            Mode::JsonPassthrough { body } => {
                body.extend_from_slice(chunk);
                out.extend_from_slice(chunk);
                if end_of_stream && let Ok(v) = serde_json::from_slice::<Value>(body) {
                    self.usage = match self.settings.endpoint {
                        Endpoint::ChatCompletions
                        | Endpoint::Completions
                        | Endpoint::Embeddings => openai::read_usage(&v),
                        Endpoint::Responses => openai::read_responses_usage(&v),
                        Endpoint::Messages => anthropic::response::read_usage(&v),
                        // Counting tokens uses none.
                        Endpoint::CountTokens => Usage::default(),
                        Endpoint::Rerank => cohere::read_rerank_usage(&v),
                    };
                }
            }
            Mode::SsePassthrough(parser, p) => {
                for ev in parser.feed(chunk, end_of_stream)? {
                    p.event(&ev, !self.settings.include_usage, &mut out);
                }
                if end_of_stream {
                    self.truncated = p.end(&mut out);
                }
                self.usage = p.usage();
            }
            Mode::Json { backend, client, body } => {
                body.extend_from_slice(chunk);
                if end_of_stream {
                    let v = parse_body(body)?;
                    let (hub, usage) = match backend {
                        Wire::OpenAI => {
                            let usage = openai::read_usage(&v);
                            (v, usage)
                        }
                        Wire::Anthropic(_) => {
                            anthropic::response::to_chat(&v, self.settings.created)
                        }
                        // Embeddings are the only other endpoint these families serve a client
                        // of another family: their OpenAI list is what the client gets.
                        Wire::Converse if self.settings.endpoint == Endpoint::Embeddings => {
                            bedrock::embed::to_openai(
                                &v,
                                &self.settings.model,
                                self.settings.base64_embeddings,
                            )?
                        }
                        Wire::Converse => bedrock::response::to_chat(&v, &self.settings.answer())?,
                        Wire::Gemini if self.settings.endpoint == Endpoint::Embeddings => {
                            gemini::embed::to_openai(
                                &v,
                                &self.settings.model,
                                self.settings.base64_embeddings,
                            )?
                        }
                        Wire::Gemini => gemini::response::to_chat(&v, self.settings.created),
                        Wire::Cohere if self.settings.endpoint == Endpoint::Embeddings => {
                            cohere::embed::to_openai(&v, &self.settings.model)?
                        }
                        Wire::Cohere => cohere::response::to_chat(
                            &v,
                            &self.settings.model,
                            self.settings.created,
                        )?,
                    };
                    self.usage = usage;
                    let v = match client {
                        Writer::OpenAI => hub,
                        Writer::Anthropic => anthropic::response::from_chat(&hub).0,
                    };
                    out = v.to_string().into_bytes();
                }
            }
            Mode::BedrockTokenCount { body } => {
                body.extend_from_slice(chunk);
                if end_of_stream {
                    out =
                        bedrock::invoke::token_count(&parse_body(body)?)?.to_string().into_bytes();
                }
            }
            Mode::Stream { decoder, encoder } => {
                let mut hub = Vec::new();
                match decoder {
                    Decoder::OpenAI(d) => d.feed(chunk, end_of_stream, &mut hub)?,
                    Decoder::Anthropic(d) => d.feed(chunk, end_of_stream, &mut hub)?,
                    Decoder::Converse(d) => d.feed(chunk, &mut hub)?,
                    Decoder::Gemini(d) => d.feed(chunk, end_of_stream, &mut hub)?,
                    Decoder::Cohere(d) => d.feed(chunk, end_of_stream, &mut hub)?,
                }
                let complete = end_of_stream
                    && match decoder {
                        Decoder::OpenAI(d) => d.end(&mut hub),
                        Decoder::Anthropic(d) => d.end(&mut hub),
                        Decoder::Converse(d) => d.end(&mut hub),
                        Decoder::Gemini(d) => d.end(&mut hub),
                        Decoder::Cohere(d) => d.end(&mut hub),
                    };
                for event in hub {
                    match encoder {
                        Encoder::OpenAI(e) => e.write(event, &mut out),
                        Encoder::Anthropic(e) => e.write(event, &mut out),
                    }
                }
                if end_of_stream {
                    self.truncated = match encoder {
                        Encoder::OpenAI(e) => e.end(complete, &mut out),
                        Encoder::Anthropic(e) => e.end(complete, &mut out),
                    };
                }
                self.usage = match decoder {
                    Decoder::OpenAI(d) => d.usage(),
                    Decoder::Anthropic(d) => d.usage(),
                    Decoder::Converse(d) => d.usage(),
                    Decoder::Gemini(d) => d.usage(),
                    Decoder::Cohere(d) => d.usage(),
                };
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
        let client = self.settings.endpoint.client_schema();
        if !self.settings.stream {
            return error_body(client, 502, message);
        }
        let mut out = Vec::new();
        stream_error(client, message, &mut out);
        out
    }

    /// The content type of what [`ResponseTranslator::feed`] returns.
    pub fn content_type(&self) -> &'static str {
        if self.settings.stream { "text/event-stream" } else { "application/json" }
    }
}

impl Settings {
    fn answer(&self) -> bedrock::Answer {
        bedrock::Answer {
            id: answer_id(self.created),
            model: self.model.clone(),
            created: self.created,
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Upstream(format!("the response body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(TranslateError::Upstream("the response body is not a JSON object".into()));
    }
    Ok(v)
}
