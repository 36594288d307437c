//! Translation between the LLM API schemas clients speak and the ones backends speak. Pure: no
//! gRPC, no Envoy, no I/O.
//!
//! Takes the request path ([`Endpoint`]) and body ([`parse_request`]) and gives the path and body
//! to send to a backend of a given schema ([`translate_request`]). Takes the backend's response
//! body, whole or in streamed pieces split anywhere, and gives the bytes for the client plus the
//! token [`Usage`] ([`ResponseTranslator`]). Error responses go through [`translate_error`];
//! errors of the gateway's own through [`error_body`].
//!
//! Pairs: OpenAI chat ⇄ OpenAI, Azure OpenAI and Anthropic; Anthropic messages ⇄ Anthropic,
//! OpenAI and Azure OpenAI; OpenAI completions and embeddings to OpenAI and Azure OpenAI only.

mod error;
mod request;
mod response;
mod sse;
mod stream;
mod usage;

use serde_json::{Map, Value};

use crate::api::{APISchema, VersionedAPISchema};

pub use error::{TranslateError, error_body, translate_error};
pub use response::{ResponseTranslator, response_translator};
pub use usage::Usage;

/// Anthropic rejects a request without `max_tokens`; OpenAI clients may leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

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
}

impl Endpoint {
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
            _ => Err(TranslateError::UnknownEndpoint(path.to_string())),
        }
    }

    /// The schema family the client speaks, which decides the shape of responses and errors.
    pub fn client_schema(self) -> ClientSchema {
        match self {
            Endpoint::Messages => ClientSchema::Anthropic,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
                ClientSchema::OpenAI
            }
        }
    }
}

/// The schema family a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSchema {
    OpenAI,
    Anthropic,
}

impl ClientSchema {
    /// The API a request path belongs to, whether or not this gateway serves it: Anthropic's
    /// for `/v1/messages` and `/anthropic` and the paths under them (`/v1/messages/count_tokens`),
    /// OpenAI's for any other. `compile::local_reply` matches the same paths.
    pub fn of_path(path: &str) -> ClientSchema {
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        let under = |prefix: &str| {
            bare.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v1/messages") || under("/anthropic") {
            return ClientSchema::Anthropic;
        }
        ClientSchema::OpenAI
    }

    /// How dynamic metadata names the schema.
    pub fn name(self) -> &'static str {
        match self {
            ClientSchema::OpenAI => "openai",
            ClientSchema::Anthropic => "anthropic",
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
    let model =
        body.get("model").and_then(Value::as_str).ok_or(TranslateError::MissingModel)?.to_string();
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::InvalidRequest("\"stream\" must be true or false".into()));
        }
    };
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ParsedRequest { endpoint, model, stream, include_usage, body })
}

/// Rewrites a parsed request for a backend of schema `backend`, with `model_override` replacing
/// the client's model when the route says so.
pub fn translate_request(
    req: &ParsedRequest,
    backend: &VersionedAPISchema,
    model_override: Option<&str>,
) -> Result<TranslatedRequest, TranslateError> {
    let model = model_override.unwrap_or(&req.model).to_string();
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(model.clone()));
    let body = match (req.endpoint, backend.name) {
        (
            Endpoint::ChatCompletions | Endpoint::Completions,
            APISchema::OpenAI | APISchema::AzureOpenAI,
        ) => {
            ask_for_usage(&mut body, req.stream);
            body
        }
        (Endpoint::Embeddings, APISchema::OpenAI | APISchema::AzureOpenAI) => body,
        (Endpoint::ChatCompletions, APISchema::Anthropic) => request::chat_to_messages(body)?,
        (Endpoint::Messages, APISchema::Anthropic) => body,
        (Endpoint::Messages, APISchema::OpenAI | APISchema::AzureOpenAI) => {
            let mut body = request::messages_to_chat(body)?;
            ask_for_usage(&mut body, req.stream);
            body
        }
        (endpoint, schema) => {
            return Err(TranslateError::Unsupported(format!(
                "{} requests cannot be sent to a backend of schema {schema:?}{}",
                endpoint.describe(),
                if schema.supported() { "" } else { ", which aixds does not translate to yet" }
            )));
        }
    };
    let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| {
        TranslateError::InvalidRequest(format!("cannot encode the translated request: {e}"))
    })?;
    Ok(TranslatedRequest {
        path: upstream_path(req.endpoint, backend, &model),
        body,
        model,
        stream: req.stream,
    })
}

impl Endpoint {
    fn describe(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "OpenAI chat completions",
            Endpoint::Completions => "OpenAI completions",
            Endpoint::Embeddings => "OpenAI embeddings",
            Endpoint::Messages => "Anthropic messages",
        }
    }
}

/// Streamed OpenAI responses carry usage only when asked; the gateway always needs it to count
/// tokens. The response translator hides the extra chunk from clients that did not ask.
fn ask_for_usage(body: &mut Map<String, Value>, stream: bool) {
    if !stream {
        return;
    }
    let options = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(o) = options {
        o.insert("include_usage".into(), Value::Bool(true));
    }
}

/// The upstream path. A backend's `prefix` replaces the `/v1` root of OpenAI and Anthropic paths
/// (e.g. `/v1beta/openai` for Gemini's OpenAI-compatible API); Azure paths are fixed.
fn upstream_path(endpoint: Endpoint, backend: &VersionedAPISchema, model: &str) -> String {
    let operation = match (endpoint, backend.name) {
        (Endpoint::ChatCompletions, APISchema::Anthropic)
        | (Endpoint::Messages, APISchema::Anthropic) => "messages",
        (Endpoint::ChatCompletions | Endpoint::Messages, _) => "chat/completions",
        (Endpoint::Completions, _) => "completions",
        (Endpoint::Embeddings, _) => "embeddings",
    };
    if backend.name == APISchema::AzureOpenAI {
        let version = backend
            .version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_AZURE_API_VERSION);
        return format!(
            "/openai/deployments/{}/{operation}?api-version={}",
            percent_encode(model),
            percent_encode(version)
        );
    }
    let prefix = backend
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or("v1");
    format!("/{prefix}/{operation}")
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
