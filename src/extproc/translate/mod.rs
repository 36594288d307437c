//! Translation between the LLM API schemas clients speak and the ones backends speak. Pure: no
//! gRPC, no Envoy, no I/O.
//!
//! Takes the request path ([`Endpoint`]) and body ([`parse_request`]) and gives the path and body
//! to send to a backend of a given schema ([`translate_request`]). Takes the backend's response
//! body, whole or in streamed pieces split anywhere, and gives the bytes for the client plus the
//! token [`Usage`] ([`ResponseTranslator`]). Error responses go through [`translate_error`];
//! errors of the gateway's own through [`error_body`].
//!
//! **Organised by wire family.** Each family a backend can speak ([`Wire`]) is one module that
//! knows its request, response, stream and error shapes: `openai` (OpenAI, Azure OpenAI and
//! compatible servers), `anthropic` (Anthropic, and Anthropic models on AWS Bedrock and GCP
//! Vertex AI), `bedrock` (AWS Bedrock's Converse API, and the paths, framing and errors Bedrock
//! gives the Anthropic family; `eventstream` decodes its binary framing), `gemini` (Google's
//! models on Vertex AI; `vertex` has Vertex's paths for both of its families, which name the
//! project and region of the backend's [`Target`]) and `cohere` (Cohere's API v2). Clients speak
//! one of three families ([`ClientSchema`]); Cohere's clients only call rerank, which no other
//! family serves. Translation goes through a hub, OpenAI chat completions: a client's
//! request becomes a hub request, which becomes the backend's; the backend's response or stream
//! becomes hub objects ([`stream::Hub`]), which become the client's. Each family therefore only
//! converts to and from the hub, and a family both ends speak is not converted at all (its
//! bytes pass, read for usage). The dispatch is by exhaustive matches on [`Wire`] and
//! [`ClientSchema`] (here, in `response.rs` and `error.rs`), so a new family is a new module
//! plus the arms the compiler asks for; the ext_proc phases do not change.
//!
//! What the hub cannot carry is lost only between families: e.g. Anthropic's cache control
//! and thinking blocks reach an Anthropic backend intact, but not an OpenAI one. Chat and
//! messages requests translate between every client and backend family; completions go to
//! OpenAI-family backends only, embeddings to the families that embed text (OpenAI, Cohere,
//! Titan on Bedrock, Google's models on Vertex AI).

mod anthropic;
mod bedrock;
mod cohere;
mod error;
mod eventstream;
mod gemini;
mod openai;
mod response;
mod sse;
mod stream;
mod usage;
mod vertex;

use serde_json::{Map, Value};

use crate::api::{APISchema, VersionedAPISchema};

pub use cohere::API_VERSION as COHERE_API_VERSION;
pub use error::{TranslateError, error_body, translate_error};
pub use response::{ResponseTranslator, response_translator};
pub use usage::Usage;
pub use vertex::VertexLocation;

/// Anthropic rejects a request without `max_tokens`; OpenAI clients may leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The tool through which a family without JSON response formats gives the JSON answer an
/// OpenAI client asked for (`response_format`): the model is made to call it, and its call comes
/// back as the answer's content. Reserved: a client tool of this name is refused.
const JSON_RESPONSE_TOOL: &str = "aixds_json_response";

/// Azure requires an `api-version`; this GA version is used when the backend names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// What the client spoke, recognised from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/messages` or `/anthropic/v1/messages`
    Messages,
    /// `POST /v1/responses`: OpenAI's Responses API, passed to OpenAI-family backends.
    Responses,
    /// `POST /v1/messages/count_tokens` or `/anthropic/v1/messages/count_tokens`: Anthropic's
    /// token counting, passed to Anthropic-family backends.
    CountTokens,
    /// `POST /cohere/v2/rerank`: Cohere's rerank, passed to Cohere-family backends.
    Rerank,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Responses,
        Endpoint::CountTokens,
        Endpoint::Rerank,
    ];

    /// The endpoint served at `path` (a query string is ignored), if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::parse(path).ok()
    }

    /// Like [`Endpoint::from_path`], with an error that tells the client which paths exist.
    pub fn parse(path: &str) -> Result<Endpoint, TranslateError> {
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        match bare {
            "/v1/chat/completions" => Ok(Endpoint::ChatCompletions),
            "/v1/completions" => Ok(Endpoint::Completions),
            "/v1/embeddings" => Ok(Endpoint::Embeddings),
            "/v1/messages" | "/anthropic/v1/messages" => Ok(Endpoint::Messages),
            "/v1/responses" => Ok(Endpoint::Responses),
            "/v1/messages/count_tokens" | "/anthropic/v1/messages/count_tokens" => {
                Ok(Endpoint::CountTokens)
            }
            "/cohere/v2/rerank" => Ok(Endpoint::Rerank),
            _ => Err(TranslateError::UnknownEndpoint(path.to_string())),
        }
    }

    /// The schema family the client speaks, which decides the shape of responses and errors.
    pub fn client_schema(self) -> ClientSchema {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ClientSchema::Anthropic,
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses => ClientSchema::OpenAI,
            Endpoint::Rerank => ClientSchema::Cohere,
        }
    }

    /// Whether the endpoint's answers can be streamed: an embedding, a token count or a
    /// ranking comes whole, whatever the body's `stream` says.
    fn streams(self) -> bool {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Messages
            | Endpoint::Responses => true,
            Endpoint::Embeddings | Endpoint::CountTokens | Endpoint::Rerank => false,
        }
    }
}

/// The schema family a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSchema {
    OpenAI,
    Anthropic,
    Cohere,
}

impl ClientSchema {
    /// The API a request path belongs to, whether or not this gateway serves it: Anthropic's
    /// for `/v1/messages` and `/anthropic` and the paths under them (`/v1/messages/count_tokens`),
    /// Cohere's for `/cohere` and the paths under it, OpenAI's for any other. `compile::local_reply`
    /// matches the same paths.
    pub fn of_path(path: &str) -> ClientSchema {
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        let under = |prefix: &str| {
            bare.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v1/messages") || under("/anthropic") {
            return ClientSchema::Anthropic;
        }
        if under("/cohere") {
            return ClientSchema::Cohere;
        }
        ClientSchema::OpenAI
    }

    /// How dynamic metadata names the schema.
    pub fn name(self) -> &'static str {
        match self {
            ClientSchema::OpenAI => "openai",
            ClientSchema::Anthropic => "anthropic",
            ClientSchema::Cohere => "cohere",
        }
    }
}

/// A request body that passed the checks every endpoint shares.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    /// Whether an OpenAI client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    pub body: Map<String, Value>,
}

impl ParsedRequest {
    /// Whether an embeddings client asked for base64 vectors (`encoding_format`), which a
    /// backend answering floats has to be given.
    pub fn base64_embeddings(&self) -> bool {
        self.endpoint == Endpoint::Embeddings
            && self.body.get("encoding_format").and_then(Value::as_str) == Some("base64")
    }
}

/// What to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatedRequest {
    /// Path and query.
    pub path: String,
    pub body: Vec<u8>,
    /// The model the backend is asked for, after any override.
    pub model: String,
    pub stream: bool,
}

/// Checks that `body` is a JSON object with a string `model`, and reads the stream flags.
pub fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<ParsedRequest, TranslateError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| TranslateError::InvalidJson(e.to_string()))?;
    let Value::Object(body) = value else {
        return Err(TranslateError::NotAnObject);
    };
    let Head { model, stream } = head(endpoint, body.get("model"), body.get("stream"))?;
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ParsedRequest { endpoint, model, stream, include_usage, body })
}

/// What routing needs of a request body: its model and whether it asks for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub model: String,
    pub stream: bool,
}

/// Reads a request body's [`Head`] with the checks of [`parse_request`], without building the
/// rest of the body (its other fields are scanned, not kept). A body that names `model` or
/// `stream` twice is refused: parsers disagree on which one counts, and a body passed through
/// reaches its backend as sent, so the gateway would route and count one model while the
/// backend serves the other.
pub fn read_head(endpoint: Endpoint, body: &[u8]) -> Result<Head, TranslateError> {
    // The fields skipped below are not depth-limited as a parsed body is: a body nested deeper
    // than parse_request takes would pass to the backend.
    if nesting(body) > MAX_NESTING {
        let message = format!("nested deeper than {MAX_NESTING} arrays and objects");
        return Err(TranslateError::InvalidJson(message));
    }
    let invalid = |e: serde_json::Error| TranslateError::InvalidJson(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = serde::Deserializer::deserialize_any(&mut de, HeadVisitor).map_err(invalid)?;
    de.end().map_err(invalid)?;
    let fields = fields.ok_or(TranslateError::NotAnObject)?;
    for (name, count) in [("model", fields.models), ("stream", fields.streams)] {
        if count > 1 {
            return Err(TranslateError::InvalidRequest(format!("{name:?} appears {count} times")));
        }
    }
    head(endpoint, fields.model.as_ref(), fields.stream.as_ref())
}

/// The checks [`parse_request`] and [`read_head`] share: `model` a string, `stream` a boolean
/// or null (and false on endpoints that do not stream).
fn head(
    endpoint: Endpoint,
    model: Option<&Value>,
    stream: Option<&Value>,
) -> Result<Head, TranslateError> {
    let model = model.and_then(Value::as_str).ok_or(TranslateError::MissingModel)?.to_string();
    let stream = match stream {
        _ if !endpoint.streams() => false,
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::InvalidRequest("\"stream\" must be true or false".into()));
        }
    };
    Ok(Head { model, stream })
}

/// The deepest nesting of arrays and objects [`parse_request`] takes (serde_json's limit).
const MAX_NESTING: usize = 127;

/// How deep arrays and objects nest in `body` (outside strings), read byte by byte.
fn nesting(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, _, _) => {}
        }
    }
    deepest
}

/// The top-level `model` and `stream` of an object, and how often each appeared.
#[derive(Default)]
struct HeadFields {
    model: Option<Value>,
    stream: Option<Value>,
    models: usize,
    streams: usize,
}

/// Visits a request body: `Some` fields for an object, `None` for any other JSON value.
struct HeadVisitor;

impl<'de> serde::de::Visitor<'de> for HeadVisitor {
    type Value = Option<HeadFields>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = HeadFields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "model" => {
                    fields.models += 1;
                    fields.model = Some(map.next_value()?);
                }
                "stream" => {
                    fields.streams += 1;
                    fields.stream = Some(map.next_value()?);
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(fields))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The wire family a backend speaks: what its request, response, stream and error bodies look
/// like. Several schemas share one (OpenAI and Azure OpenAI differ only in paths and
/// credentials); a family served by a cloud as well as by its maker says which ([`AnthropicHost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAI,
    Anthropic(AnthropicHost),
    /// AWS Bedrock's Converse API.
    Converse,
    /// Gemini's `generateContent`.
    Gemini,
    /// Cohere's API v2.
    Cohere,
}

/// Who serves an Anthropic-family backend. A cloud takes Anthropic's messages with paths of its
/// own, the model in the path rather than the body, and its own stream framing and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnthropicHost {
    Anthropic,
    /// InvokeModel on AWS Bedrock: event-stream framed streams, Bedrock's error bodies.
    Bedrock,
    /// rawPredict on GCP Vertex AI: Anthropic's streams, Anthropic's or Google's error bodies.
    Vertex,
}

impl Wire {
    /// The family `schema` speaks. Every schema has one: a new schema is a new arm here, and
    /// the compiler then lists every dispatch that has to learn the family.
    pub fn of(schema: APISchema) -> Wire {
        match schema {
            APISchema::OpenAI | APISchema::AzureOpenAI => Wire::OpenAI,
            APISchema::Anthropic => Wire::Anthropic(AnthropicHost::Anthropic),
            APISchema::AWSAnthropic => Wire::Anthropic(AnthropicHost::Bedrock),
            APISchema::AWSBedrock => Wire::Converse,
            APISchema::GCPAnthropic => Wire::Anthropic(AnthropicHost::Vertex),
            APISchema::GCPVertexAI => Wire::Gemini,
            APISchema::Cohere => Wire::Cohere,
        }
    }

    /// The family a client speaks.
    pub fn of_client(client: ClientSchema) -> Wire {
        match client {
            ClientSchema::OpenAI => Wire::OpenAI,
            ClientSchema::Anthropic => Wire::Anthropic(AnthropicHost::Anthropic),
            ClientSchema::Cohere => Wire::Cohere,
        }
    }

    /// Whether this family's bodies are `client`'s own, wherever it is hosted: then they need no
    /// conversion, only (for a cloud's framing) unwrapping.
    pub fn speaks(self, client: ClientSchema) -> bool {
        match (self, client) {
            (Wire::OpenAI, ClientSchema::OpenAI)
            | (Wire::Anthropic(_), ClientSchema::Anthropic)
            | (Wire::Cohere, ClientSchema::Cohere) => true,
            (Wire::OpenAI, ClientSchema::Anthropic | ClientSchema::Cohere)
            | (Wire::Anthropic(_), ClientSchema::OpenAI | ClientSchema::Cohere)
            | (Wire::Cohere, ClientSchema::OpenAI | ClientSchema::Anthropic)
            | (
                Wire::Converse | Wire::Gemini,
                ClientSchema::OpenAI | ClientSchema::Anthropic | ClientSchema::Cohere,
            ) => false,
        }
    }
}

/// The backend a request is translated for: its schema, and what the paths of some schemas
/// name besides the model.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub schema: &'a VersionedAPISchema,
    /// The GCP project and region of a Vertex AI backend (`GCPVertexAI`, `GCPAnthropic`), from
    /// its `GCPCredentials` policy.
    pub vertex: Option<VertexLocation<'a>>,
    /// The client's `anthropic-beta` header, which Bedrock takes in the body instead.
    pub anthropic_beta: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn new(schema: &'a VersionedAPISchema) -> Self {
        Target { schema, vertex: None, anthropic_beta: None }
    }

    pub fn in_vertex(self, location: VertexLocation<'a>) -> Self {
        Target { vertex: Some(location), ..self }
    }

    /// The client's `anthropic-beta` header (comma-separated beta names), if it sent one.
    pub fn with_anthropic_beta(self, header: Option<&'a str>) -> Self {
        Target { anthropic_beta: header, ..self }
    }
}

/// Rewrites a parsed request for the backend `target`, with `model_override` replacing the
/// client's model when the route says so.
pub fn translate_request(
    req: &ParsedRequest,
    target: Target<'_>,
    model_override: Option<&str>,
) -> Result<TranslatedRequest, TranslateError> {
    let backend = target.schema;
    let model = model_override.unwrap_or(&req.model).to_string();
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(model.clone()));
    let refused = || {
        TranslateError::Unsupported(format!(
            "{} requests cannot be sent to a backend of schema {:?}",
            req.endpoint.describe(),
            backend.name
        ))
    };
    let wire = Wire::of(backend.name);
    let (path, body) = match req.endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => {
            let client = req.endpoint.client_schema();
            let path = match wire {
                Wire::OpenAI => openai::path("chat/completions", backend, &model),
                Wire::Anthropic(AnthropicHost::Anthropic) => anthropic::path("messages", backend),
                Wire::Anthropic(AnthropicHost::Bedrock) => {
                    let operation =
                        if req.stream { "invoke-with-response-stream" } else { "invoke" };
                    bedrock::path(&model, operation)
                }
                Wire::Anthropic(AnthropicHost::Vertex) => {
                    let method = if req.stream { "streamRawPredict" } else { "rawPredict" };
                    vertex::path(target, vertex::Publisher::Anthropic, &model, method)?
                }
                Wire::Converse => {
                    bedrock::path(&model, if req.stream { "converse-stream" } else { "converse" })
                }
                Wire::Gemini => {
                    let method = if req.stream {
                        "streamGenerateContent?alt=sse"
                    } else {
                        "generateContent"
                    };
                    vertex::path(target, vertex::Publisher::Google, &model, method)?
                }
                Wire::Cohere => cohere::path("chat", backend),
            };
            (path, conversation(client, wire, target, body, req.stream)?)
        }
        Endpoint::Completions => match wire {
            Wire::OpenAI => {
                (openai::path("completions", backend, &model), openai::request(body, req.stream))
            }
            Wire::Anthropic(_) | Wire::Converse | Wire::Gemini | Wire::Cohere => {
                return Err(refused());
            }
        },
        Endpoint::Embeddings => match wire {
            Wire::OpenAI => (openai::path("embeddings", backend, &model), body),
            Wire::Cohere => (cohere::path("embed", backend), cohere::embed::request(body)?),
            // Bedrock's embedding models are on InvokeModel, with bodies of their own.
            Wire::Converse => {
                (bedrock::path(&model, "invoke"), bedrock::embed::request(&body, &model)?)
            }
            // Vertex AI's Google models embed at `predict`, the Gemini family's host.
            Wire::Gemini => (
                vertex::path(target, vertex::Publisher::Google, &model, "predict")?,
                gemini::embed::request(&body)?,
            ),
            Wire::Anthropic(_) => return Err(refused()),
        },
        // The Responses API keeps state and tools of its own that no other family has: it
        // passes, unchanged, to OpenAI-family backends only.
        Endpoint::Responses => match wire {
            Wire::OpenAI => (openai::responses_path(backend), body),
            Wire::Anthropic(_) | Wire::Converse | Wire::Gemini | Wire::Cohere => {
                return Err(refused());
            }
        },
        Endpoint::CountTokens => match wire {
            Wire::Anthropic(AnthropicHost::Anthropic) => {
                (anthropic::path("messages/count_tokens", backend), body)
            }
            // Vertex counts tokens at a model of its own, and names the model in the body.
            Wire::Anthropic(AnthropicHost::Vertex) => (
                vertex::path(target, vertex::Publisher::Anthropic, "count-tokens", "rawPredict")?,
                vertex::count_tokens_body(body, backend),
            ),
            // Bedrock counts tokens of the InvokeModel body it would be sent (CountTokens).
            Wire::Anthropic(AnthropicHost::Bedrock) => (
                bedrock::path(&model, "count-tokens"),
                bedrock::invoke::count_tokens_body(body, backend, target.anthropic_beta)?,
            ),
            Wire::OpenAI | Wire::Converse | Wire::Gemini | Wire::Cohere => {
                return Err(refused());
            }
        },
        // Cohere's own API: it passes, unchanged but for the model, to Cohere backends.
        Endpoint::Rerank => match wire {
            Wire::Cohere => (cohere::path("rerank", backend), body),
            Wire::OpenAI | Wire::Anthropic(_) | Wire::Converse | Wire::Gemini => {
                return Err(refused());
            }
        },
    };
    let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| {
        TranslateError::InvalidRequest(format!("cannot encode the translated request: {e}"))
    })?;
    Ok(TranslatedRequest { path, body, model, stream: req.stream })
}

/// The upstream path of a request whose body `target` takes exactly as the client sent it, for
/// `model` (the body's, with no override): what [`translate_request`] would give with the body
/// unchanged. `None` when the body has to change (another family, a cloud's envelope, a stream
/// the gateway asks usage of) or when the answer depends on the body (embeddings' encoding), so
/// that the upstream phase can leave the body with Envoy for the rest.
pub fn passthrough_path(
    endpoint: Endpoint,
    target: Target<'_>,
    model: &str,
    stream: bool,
) -> Option<String> {
    let backend = target.schema;
    match (endpoint, Wire::of(backend.name)) {
        (Endpoint::ChatCompletions, Wire::OpenAI) if !stream => {
            Some(openai::path("chat/completions", backend, model))
        }
        (Endpoint::Completions, Wire::OpenAI) if !stream => {
            Some(openai::path("completions", backend, model))
        }
        (Endpoint::Responses, Wire::OpenAI) => Some(openai::responses_path(backend)),
        (Endpoint::Messages, Wire::Anthropic(AnthropicHost::Anthropic)) => {
            Some(anthropic::path("messages", backend))
        }
        (Endpoint::CountTokens, Wire::Anthropic(AnthropicHost::Anthropic)) => {
            Some(anthropic::path("messages/count_tokens", backend))
        }
        (Endpoint::Rerank, Wire::Cohere) => Some(cohere::path("rerank", backend)),
        _ => None,
    }
}

/// A client's chat completions or messages request as a hub request.
fn hub(
    client: ClientSchema,
    body: Map<String, Value>,
) -> Result<Map<String, Value>, TranslateError> {
    match client {
        ClientSchema::OpenAI => Ok(body),
        ClientSchema::Anthropic => anthropic::request::to_chat(body),
        // No endpoint of Cohere's clients is a conversation (they call rerank).
        ClientSchema::Cohere => Err(TranslateError::Unsupported(
            "Cohere chat requests are not served; use /v1/chat/completions".into(),
        )),
    }
}

/// A chat completions or messages request for a backend of family `wire`: as the client sent it
/// within a family, through the hub between families; in the envelope of the family's host.
fn conversation(
    client: ClientSchema,
    wire: Wire,
    target: Target<'_>,
    body: Map<String, Value>,
    stream: bool,
) -> Result<Map<String, Value>, TranslateError> {
    // Nothing changes within the Anthropic family but the envelope.
    if client == ClientSchema::Anthropic
        && let Wire::Anthropic(host) = wire
    {
        return Ok(envelope(host, target, body));
    }
    let hub = hub(client, body)?;
    Ok(match wire {
        Wire::OpenAI => openai::request(hub, stream),
        Wire::Anthropic(host) => envelope(host, target, anthropic::request::from_chat(hub)?),
        Wire::Converse => bedrock::request::from_chat(hub)?,
        Wire::Gemini => gemini::request::from_chat(hub)?,
        Wire::Cohere => cohere::request::from_chat(hub)?,
    })
}

/// An Anthropic messages request as `host` takes it.
fn envelope(
    host: AnthropicHost,
    target: Target<'_>,
    body: Map<String, Value>,
) -> Map<String, Value> {
    match host {
        AnthropicHost::Anthropic => body,
        AnthropicHost::Bedrock => {
            bedrock::invoke::envelope(body, target.schema, target.anthropic_beta)
        }
        AnthropicHost::Vertex => vertex::anthropic_body(body, target.schema),
    }
}

impl Endpoint {
    fn describe(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "OpenAI chat completions",
            Endpoint::Completions => "OpenAI completions",
            Endpoint::Embeddings => "OpenAI embeddings",
            Endpoint::Messages => "Anthropic messages",
            Endpoint::Responses => "OpenAI responses",
            Endpoint::CountTokens => "Anthropic token counting",
            Endpoint::Rerank => "Cohere rerank",
        }
    }
}

/// Escapes all but RFC 3986 unreserved characters, so a model name stays one path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
