//! OpenAI chat completions requests (the hub) to Gemini `generateContent` requests.
//!
//! Takes the hub's JSON object and gives Gemini's (the model and whether to stream are in the
//! path). Messages become `contents` of roles `user` and `model`, consecutive turns of one role
//! merged as Gemini wants them; system and developer messages become the `systemInstruction`;
//! tool results become `functionResponse` parts, named after the call they answer (Gemini
//! matches responses to calls by name). Empty text parts, which Gemini rejects, are left out.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::schema;
use crate::extproc::translate::{TranslateError, openai};

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

fn unsupported(msg: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(msg.into())
}

/// `contents` being built: a part pushed for the role of the last turn joins that turn.
#[derive(Default)]
struct Contents(Vec<(&'static str, Vec<Value>)>);

impl Contents {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => self.0.push((role, parts)),
        }
    }

    fn into_value(self) -> Value {
        self.0.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect()
    }
}

/// OpenAI chat completions request → Gemini `generateContent` request.
pub fn from_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let Some(Value::Array(messages)) = body.remove("messages") else {
        return Err(invalid("\"messages\" must be an array"));
    };
    let mut system = Vec::new();
    let mut contents = Contents::default();
    // tool_call_id → the name of the function it called.
    let mut calls: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => system
                .extend(openai::text_parts(m.get("content"), i)?.into_iter().filter_map(text_part)),
            "user" => contents.push("user", user_parts(m.get("content"), i)?),
            "assistant" => contents.push("model", model_parts(m, i, &mut calls)?),
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}]: a tool message needs a string \"tool_call_id\""
                    ))
                })?;
                let name = calls.get(id).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}]: tool_call_id {id:?} answers no tool call of an earlier \
                         assistant message (Gemini matches results to calls by function name)"
                    ))
                })?;
                let output = openai::text_parts(m.get("content"), i)?.join("\n");
                contents.push("user", vec![function_response(name, output)]);
            }
            "" => return Err(invalid(format!("messages[{i}] needs a string \"role\""))),
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: role {other:?} cannot be sent to a Gemini backend"
                )));
            }
        }
    }
    if contents.0.is_empty() {
        return Err(invalid(
            "\"messages\" has no user or assistant content: Gemini needs at least one non-empty turn",
        ));
    }
    let mut out = Map::new();
    out.insert("contents".into(), contents.into_value());
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let declared = match body.remove("tools").filter(|t| !t.is_null()) {
        Some(tools) => function_declarations(tools)?,
        None => Vec::new(),
    };
    let choice = body.remove("tool_choice").filter(|c| !c.is_null());
    if !declared.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": declared}]));
        if let Some(c) = choice {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": calling_config(&c)?}));
        }
    }
    let config = generation_config(&mut body)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(out)
}

fn text_part(text: String) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({"text": text}))
}

fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(text_part(s.clone()).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(invalid(format!(
                "messages[{i}]: \"content\" must be a string or an array"
            )));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let field = |path: &str| p.pointer(path).and_then(Value::as_str);
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = openai::part_text(p, i)?;
                out.extend(text_part(text.to_string()));
            }
            Some("image_url") => {
                let url = openai::part_image_url(p, i)?;
                out.push(image_part(url, i)?);
            }
            Some("input_audio") => {
                let (Some(data), Some(format)) =
                    (field("/input_audio/data"), field("/input_audio/format"))
                else {
                    return Err(invalid(format!(
                        "messages[{i}]: an input_audio part needs string data and format"
                    )));
                };
                out.push(
                    json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}),
                );
            }
            Some("file") => {
                let url = field("/file/file_data").ok_or_else(|| {
                    unsupported(format!(
                        "messages[{i}]: a file part is sent to a Gemini backend by its file_data \
                         (a data: URL); file ids are OpenAI's"
                    ))
                })?;
                out.push(inline_data(url, i)?);
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content part type {} cannot be sent to a Gemini backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    Ok(out)
}

/// An image from a `data:` URL (inline) or an http(s) or `gs://` URL (by reference, with the
/// type its extension says; Gemini needs one).
fn image_part(url: &str, i: usize) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        return inline_data(url, i);
    }
    if !["https://", "http://", "gs://"].iter().any(|scheme| url.starts_with(scheme)) {
        return Err(invalid(format!(
            "messages[{i}]: an image URL must be a data:, http(s) or gs:// URL"
        )));
    }
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let file = path.rsplit('/').next().unwrap_or_default();
    let extension = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let mime = match extension.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => {
            return Err(unsupported(format!(
                "messages[{i}]: the type of image {url:?} cannot be told from its name, and \
                 Gemini needs it; send the image as a data: URL"
            )));
        }
    };
    Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
}

/// Inline data from a base64 `data:` URL.
fn inline_data(url: &str, i: usize) -> Result<Value, TranslateError> {
    let (meta, data) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .ok_or_else(|| invalid(format!("messages[{i}]: {:.40} is not a data: URL", url)))?;
    let mime = meta.strip_suffix(";base64").filter(|m| !m.is_empty()).ok_or_else(|| {
        unsupported(format!("messages[{i}]: data URLs must be base64 encoded and name their type"))
    })?;
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

/// An assistant message's text and function calls; records each call's id and name.
fn model_parts(
    m: &Value,
    i: usize,
    calls: &mut HashMap<String, String>,
) -> Result<Vec<Value>, TranslateError> {
    let texts = match m.get("content") {
        Some(Value::Array(parts)) => parts
            .iter()
            // A refusal is what the assistant said; keep it as text.
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        c => openai::text_parts(c, i)?,
    };
    let mut parts: Vec<Value> = texts.into_iter().filter_map(text_part).collect();
    let tool_calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(c)) => c,
        Some(_) => return Err(invalid(format!("messages[{i}]: \"tool_calls\" must be an array"))),
    };
    for (j, c) in tool_calls.iter().enumerate() {
        let (name, args) = openai::called_function(c, i, j)?;
        if let Some(id) = c.get("id").and_then(Value::as_str) {
            calls.insert(id.to_string(), name.to_string());
        }
        let mut part = json!({"functionCall": {"name": name, "args": args}});
        if let Some(signature) =
            c.pointer("/extra_content/google/thought_signature").filter(|s| s.is_string())
        {
            part["thoughtSignature"] = signature.clone();
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A tool's result as Gemini takes it: a JSON object result as it is, any other text as the
/// `output` Gemini documents for it.
fn function_response(name: &str, output: String) -> Value {
    let response = match serde_json::from_str::<Value>(&output) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"output": output}),
    };
    json!({"functionResponse": {"name": name, "response": response}})
}

fn function_declarations(tools: Value) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("\"tools\" must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let f = openai::function_tool(t, i, "a Gemini backend")?;
        let mut declaration = Map::new();
        declaration.insert("name".into(), json!(f.name));
        if let Some(d) = f.description {
            declaration.insert("description".into(), json!(d));
        }
        if let Some(p) = f.parameters {
            let parameters = schema::to_gemini(p, &format!("tools[{i}].function.parameters"))?;
            // Gemini refuses an object schema with no properties; a function without
            // parameters says so by having none.
            if parameters.get("properties").is_some()
                || parameters.get("type") != Some(&json!("OBJECT"))
            {
                declaration.insert("parameters".into(), parameters);
            }
        }
        out.push(Value::Object(declaration));
    }
    Ok(out)
}

fn calling_config(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"mode": "AUTO"})),
            "none" => Ok(json!({"mode": "NONE"})),
            "required" => Ok(json!({"mode": "ANY"})),
            other => {
                Err(invalid(format!("\"tool_choice\" {other:?} is not auto, none or required")))
            }
        },
        _ => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
            None => Err(invalid(
                "\"tool_choice\" must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}",
            )),
        },
    }
}

/// The hub's sampling and output settings as Gemini's `generationConfig`.
fn generation_config(body: &mut Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    let mut take = |key: &str| body.remove(key).filter(|v| !v.is_null());
    let max = take("max_completion_tokens").or_else(|| take("max_tokens"));
    let renamed = [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ];
    for (from, to) in renamed {
        if let Some(v) = take(from) {
            config.insert(to.into(), v);
        }
    }
    if let Some(max) = max {
        config.insert("maxOutputTokens".into(), max);
    }
    match take("stop") {
        None => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(a @ Value::Array(_)) => {
            config.insert("stopSequences".into(), a);
        }
        Some(_) => return Err(invalid("\"stop\" must be a string or an array of strings")),
    }
    if let Some(format) = take("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(s) = format.pointer("/json_schema/schema").filter(|s| !s.is_null()) {
                    let converted = schema::to_gemini(s, "response_format.json_schema.schema")?;
                    config.insert("responseSchema".into(), converted);
                }
            }
            _ => {
                return Err(invalid(
                    "\"response_format.type\" must be text, json_object or json_schema",
                ));
            }
        }
    }
    Ok(config)
}
