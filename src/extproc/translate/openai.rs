//! The OpenAI wire family (OpenAI, Azure OpenAI, and every OpenAI-compatible server): chat
//! completions, completions and embeddings.
//!
//! OpenAI chat completions are also the hub every translation goes through, so this family
//! needs no conversion to or from it: its request is the hub request with usage asked for, its
//! response and stream are hub objects already. What it knows is its paths, how its streams say
//! they are complete, and how it writes a stream's events.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::sse::SseParser;
use super::stream::{Hub, parse_event, truncated_error};
use super::usage::Usage;
use super::{ClientSchema, DEFAULT_AZURE_API_VERSION, TranslateError, percent_encode};
use crate::api::{APISchema, VersionedAPISchema};

/// The request for an OpenAI-family backend: the hub request, asking for usage when streamed.
pub fn request(mut body: Map<String, Value>, stream: bool) -> Map<String, Value> {
    ask_for_usage(&mut body, stream);
    body
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

/// The JSON schema a chat request's `response_format` asks the answer to follow: the given one
/// for `json_schema`, any object for `json_object`; `None` for text.
pub fn json_response_schema(body: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let Some(format) = body.get("response_format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => match format.pointer("/json_schema/schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
            _ => Err(TranslateError::InvalidRequest(
                "response_format json_schema needs a \"json_schema.schema\" object".into(),
            )),
        },
        _ => Err(TranslateError::InvalidRequest(
            "\"response_format.type\" must be text, json_object or json_schema".into(),
        )),
    }
}

/// The upstream path for `operation` (`chat/completions`, `embeddings`, ...). A backend's
/// `prefix` replaces the `/v1` root (e.g. `/v1beta/openai` for Gemini's OpenAI-compatible API);
/// Azure's paths name the deployment and the API version.
pub fn path(operation: &str, backend: &VersionedAPISchema, model: &str) -> String {
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

/// The upstream path of the Responses API. Azure serves it on its v1 API, which takes the
/// model from the body and needs no `api-version`.
pub fn responses_path(backend: &VersionedAPISchema) -> String {
    if backend.name == APISchema::AzureOpenAI {
        return "/openai/v1/responses".to_string();
    }
    path("responses", backend, "")
}

/// The text of a hub message's `content` where only text may be (system, developer and tool
/// messages): a string or an array of `{"type":"text"}` parts; `null` has none. For the
/// families that read the hub into shapes of their own.
pub fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<String>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str))
                {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(TranslateError::Unsupported(format!(
                        "messages[{i}]: only text parts are allowed here"
                    ))),
                }
            })
            .collect(),
        Some(_) => Err(TranslateError::InvalidRequest(format!(
            "messages[{i}]: \"content\" must be a string or an array"
        ))),
    }
}

/// A function tool of a hub request, as the families that declare tools their own way read it.
#[derive(Debug, Clone, Copy)]
pub struct FunctionTool<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    /// The JSON Schema of its arguments, as given (`null` as none).
    pub parameters: Option<&'a Value>,
    /// Whether it asked for arguments that follow the schema exactly.
    pub strict: bool,
}

/// Tool `i` of a hub request for a backend that takes function tools only (`backend`, e.g.
/// "a Gemini backend", names it in the refusal of any other kind).
pub fn function_tool<'a>(
    t: &'a Value,
    i: usize,
    backend: &str,
) -> Result<FunctionTool<'a>, TranslateError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(TranslateError::Unsupported(format!(
            "tools[{i}]: only function tools can be sent to {backend}"
        )));
    }
    let f = t.get("function");
    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
        TranslateError::InvalidRequest(format!("tools[{i}] needs a string \"function.name\""))
    })?;
    Ok(FunctionTool {
        name,
        description: f.and_then(|f| f.get("description")).and_then(Value::as_str),
        parameters: f.and_then(|f| f.get("parameters")).filter(|p| !p.is_null()),
        strict: f.and_then(|f| f.get("strict")).and_then(Value::as_bool) == Some(true),
    })
}

/// The text of a `{"type":"text"}` content part of message `i`.
pub fn part_text(p: &Value, i: usize) -> Result<&str, TranslateError> {
    p.get("text").and_then(Value::as_str).ok_or_else(|| {
        TranslateError::InvalidRequest(format!(
            "messages[{i}]: a text part needs a string \"text\""
        ))
    })
}

/// The URL of an `image_url` content part of message `i`: its `url`, or the part's value itself
/// where a client sends the URL as a string.
pub fn part_image_url(p: &Value, i: usize) -> Result<&str, TranslateError> {
    p.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str).ok_or_else(
        || {
            TranslateError::InvalidRequest(format!(
                "messages[{i}]: an image_url part needs a string url"
            ))
        },
    )
}

/// The function a hub message's tool call `j` names (message `i`), and its arguments as the
/// JSON object they encode (`{}` for none), for the families that take arguments as an object.
pub fn called_function(call: &Value, i: usize, j: usize) -> Result<(&str, Value), TranslateError> {
    let invalid = |what: String| {
        TranslateError::InvalidRequest(format!("messages[{i}].tool_calls[{j}]{what}"))
    };
    let f = call.get("function");
    let name = f
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(" needs a string \"function.name\"".into()))?;
    let arguments = match f.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| invalid(format!(".function.arguments is not JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    if !arguments.is_object() {
        return Err(invalid(".function.arguments must encode a JSON object".into()));
    }
    Ok((name, arguments))
}

/// The texts of an embeddings request's `input` (a string or an array of strings), for a backend
/// of `schema` that embeds text only: token ids are refused.
pub fn embedding_texts(
    body: &Map<String, Value>,
    schema: APISchema,
) -> Result<Vec<String>, TranslateError> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            Ok(items.iter().filter_map(text).collect())
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            Err(TranslateError::Unsupported(format!(
                "token ids cannot be sent to a backend of schema {schema:?}: it embeds text; send \
             \"input\" as a string or an array of strings"
            )))
        }
        _ => Err(TranslateError::InvalidRequest(
            "\"input\" must be a string or a non-empty array of strings".into(),
        )),
    }
}

/// Whether an embeddings request asks for its vectors in base64 (`encoding_format`; floats when
/// it names none).
pub fn embedding_base64(body: &Map<String, Value>) -> Result<bool, TranslateError> {
    match body.get("encoding_format") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(f)) if f == "float" => Ok(false),
        Some(Value::String(f)) if f == "base64" => Ok(true),
        Some(_) => Err(TranslateError::InvalidRequest(
            "\"encoding_format\" must be float or base64".into(),
        )),
    }
}

/// An OpenAI embedding list of `vectors` for `model`, each vector as floats or, when `base64`,
/// as OpenAI encodes it: base64 of its little-endian float32s.
pub fn embedding_list(vectors: Vec<Vec<f64>>, model: &str, base64: bool, tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> =
                    vector.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                Value::String(STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

/// The numbers of a JSON array of numbers, or `None` if it is not one.
pub fn vector(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

/// Usage of a whole response body.
pub fn read_usage(body: &Value) -> Usage {
    body.get("usage").map(Usage::from_openai).unwrap_or_default()
}

/// Usage of a whole Responses API body.
pub fn read_responses_usage(body: &Value) -> Usage {
    body.get("usage").map(Usage::from_responses).unwrap_or_default()
}

/// Whether Responses API event `v` ends the response: completed, failed, incomplete, or an error.
pub fn ends_responses_stream(v: &Value) -> bool {
    matches!(
        v.get("type").and_then(Value::as_str),
        Some("response.completed" | "response.failed" | "response.incomplete" | "error")
    )
}

/// The usage a Responses API event carries (`response.completed` and friends), if any.
pub fn responses_event_usage(v: &Value) -> Option<Usage> {
    v.pointer("/response/usage").filter(|u| u.is_object()).map(Usage::from_responses)
}

/// Whether chunk `v` says why the answer stopped: a `finish_reason`, or an error.
pub fn ends_response(v: &Value) -> bool {
    let finished = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null())));
    finished || v.get("error").is_some_and(|e| !e.is_null())
}

/// Whether chunk `v` is the usage-only chunk that ends a stream asked to include usage.
pub fn is_usage_chunk(v: &Value) -> bool {
    v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
}

fn write_data(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// An error chunk, which the OpenAI SDK raises as an API error.
pub fn write_error_event(message: &str, out: &mut Vec<u8>) {
    write_error(message, "server_error", out);
}

fn write_error(message: &str, kind: &str, out: &mut Vec<u8>) {
    let error = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    write_data(out, &error);
}

/// An OpenAI backend's stream → hub events: its chunks as they are.
#[derive(Debug, Default)]
pub struct Decoder {
    sse: SseParser,
    usage: Usage,
    /// The upstream said why the answer stopped, sent `[DONE]`, or failed.
    complete: bool,
}

impl Decoder {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Feeds upstream body bytes, split anywhere; pushes the hub events they complete.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        out: &mut Vec<Hub>,
    ) -> Result<(), TranslateError> {
        for ev in self.sse.feed(chunk, end_of_stream)? {
            if !ev.has_data {
                continue;
            }
            if ev.data.trim() == "[DONE]" {
                self.complete = true;
                out.push(Hub::Done);
                continue;
            }
            let v = match parse_event(&ev) {
                Ok(v) => v,
                // The body ended inside this event: `end` reports the cut.
                Err(_) if !ev.ended => continue,
                Err(e) => return Err(e),
            };
            self.complete |= ends_response(&v);
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .or(err.as_str())
                    .unwrap_or("upstream error")
                    .to_string();
                let kind = err.get("type").and_then(Value::as_str).map(str::to_string);
                out.push(Hub::Error { message, kind });
                continue;
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                self.usage = Usage::from_openai(u);
            }
            out.push(Hub::Chunk(v));
        }
        Ok(())
    }

    /// The upstream's body ended: whether its answer was complete.
    pub fn end(&mut self, _out: &mut Vec<Hub>) -> bool {
        self.complete
    }
}

/// Hub events → the client's `data:` lines.
#[derive(Debug)]
pub struct Encoder {
    /// The client asked for the usage-only chunk (`stream_options.include_usage`).
    include_usage: bool,
    done: bool,
}

impl Encoder {
    pub fn new(include_usage: bool) -> Self {
        Encoder { include_usage, done: false }
    }

    /// Writes the client's lines for one hub event.
    pub fn write(&mut self, hub: Hub, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match hub {
            Hub::Chunk(v) if is_usage_chunk(&v) && !self.include_usage => {}
            Hub::Chunk(v) => write_data(out, &v),
            Hub::Error { message, kind } => {
                write_error(&message, kind.as_deref().unwrap_or("server_error"), out);
                self.done = true;
            }
            Hub::Done => {
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
        }
    }

    /// The upstream's body ended, `complete` or cut short: `[DONE]` if it was not sent yet, or
    /// an error chunk for a cut. Returns whether it was cut.
    pub fn end(&mut self, complete: bool, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        self.done = true;
        if complete {
            out.extend_from_slice(b"data: [DONE]\n\n");
            return false;
        }
        truncated_error(ClientSchema::OpenAI, out);
        true
    }
}
