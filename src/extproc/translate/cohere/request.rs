//! OpenAI chat completions requests (the hub) → Cohere v2 chat requests.
//!
//! Takes the hub's JSON object (model already set) and gives the body for `POST /v2/chat`.
//! Cohere refuses fields it does not know, so the body is built anew from what translates:
//! messages, tools, `max_tokens`, `temperature`, `top_p` (as `p`), `stop`, `seed`, the
//! penalties, `response_format` and `tool_choice`. Fields with no counterpart that only tune or
//! annotate (`user`, `logprobs`, `parallel_tool_calls`, `stream_options`, ...) are dropped; what
//! would change the answer if dropped (audio and file parts, tools other than functions, `n`
//! above 1) is an [`TranslateError::Unsupported`] error. Values are passed as given, for Cohere
//! to judge, except `top_p`: OpenAI's default, 1, is above Cohere's largest `p` (0.99), so it
//! is brought into Cohere's range [0.01, 0.99].

use serde_json::{Map, Value, json};

use crate::extproc::translate::{TranslateError, openai};

/// Cohere's range of `p`.
const P_RANGE: (f64, f64) = (0.01, 0.99);

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

fn unsupported(msg: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(msg.into())
}

/// OpenAI chat completions request → Cohere v2 chat request.
pub fn from_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    if let Some(model) = body.remove("model") {
        out.insert("model".into(), model);
    }
    let Some(Value::Array(messages)) = body.remove("messages") else {
        return Err(invalid("\"messages\" must be an array"));
    };
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if let Some(turn) = message(m, i)? {
            turns.push(turn);
        }
    }
    out.insert("messages".into(), Value::Array(turns));

    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        // Several answers would be several requests, each billed: not worth pretending to be one.
        return Err(unsupported("\"n\" greater than 1 cannot be sent to a Cohere backend"));
    }
    let max = body
        .remove("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.remove("max_tokens").filter(|v| !v.is_null()));
    if let Some(max) = max {
        out.insert("max_tokens".into(), max);
    }
    match body.remove("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(a @ Value::Array(_)) => {
            out.insert("stop_sequences".into(), a);
        }
        Some(_) => return Err(invalid("\"stop\" must be a string or an array of strings")),
    }
    for key in ["temperature", "seed", "frequency_penalty", "presence_penalty", "stream"] {
        if let Some(v) = body.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    match body.remove("top_p") {
        None | Some(Value::Null) => {}
        Some(p) => {
            let p = p.as_f64().ok_or_else(|| invalid("\"top_p\" must be a number"))?;
            out.insert("p".into(), json!(p.clamp(P_RANGE.0, P_RANGE.1)));
        }
    }
    if let Some(format) = response_format(&body)? {
        out.insert("response_format".into(), format);
    }
    let tools = match body.remove("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(tools) => function_tools(tools)?,
    };
    let choice = match body.remove("tool_choice") {
        None | Some(Value::Null) => Choice::Auto,
        Some(c) => tool_choice(&c)?,
    };
    let tools = match choice {
        // Cohere's choices need tools; without any there is nothing to choose.
        _ if tools.is_empty() => tools,
        Choice::Auto => tools,
        Choice::None => {
            out.insert("tool_choice".into(), json!("NONE"));
            tools
        }
        Choice::Required => {
            out.insert("tool_choice".into(), json!("REQUIRED"));
            tools
        }
        // Cohere cannot name the tool to call: the model is offered that one only, and must call
        // it.
        Choice::Named(name) => {
            let named: Vec<Tool> = tools.into_iter().filter(|t| t.name == name).collect();
            if named.is_empty() {
                return Err(invalid(format!(
                    "\"tool_choice\" names {name:?}, which is not a tool"
                )));
            }
            out.insert("tool_choice".into(), json!("REQUIRED"));
            named
        }
    };
    if !tools.is_empty() {
        // Cohere's strictness applies to every tool: asked for when every tool asks for it.
        if tools.iter().all(|t| t.strict) {
            out.insert("strict_tools".into(), Value::Bool(true));
        }
        out.insert("tools".into(), tools.into_iter().map(|t| t.value).collect());
    }
    Ok(out)
}

/// One OpenAI message as a Cohere one; `None` for an assistant message that says nothing,
/// which Cohere refuses and which carries nothing to keep.
fn message(m: &Value, i: usize) -> Result<Option<Value>, TranslateError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = m.get("content");
    Ok(Some(match role {
        "system" | "developer" => json!({"role": "system", "content": text(content, i)?}),
        "user" => json!({"role": "user", "content": user_content(content, i)?}),
        "assistant" => return assistant(m, i),
        "tool" => {
            let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                invalid(format!("messages[{i}]: a tool message needs a string \"tool_call_id\""))
            })?;
            let result = text(content, i)?;
            // Cohere refuses empty content; a tool that gave nothing gave an empty document.
            let content = if result.trim().is_empty() {
                json!([{"type": "document", "document": {"data": {}}}])
            } else {
                Value::String(result)
            };
            json!({"role": "tool", "tool_call_id": id, "content": content})
        }
        "" => return Err(invalid(format!("messages[{i}] needs a string \"role\""))),
        other => {
            return Err(unsupported(format!(
                "messages[{i}]: role {other:?} cannot be sent to a Cohere backend"
            )));
        }
    }))
}

/// The text of a string or of `{"type":"text"}` parts, joined; `null` has none.
fn text(content: Option<&Value>, i: usize) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    // A refusal is what the assistant said.
                    (Some("refusal"), _) => {
                        Ok(p.get("refusal").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => Err(unsupported(format!(
                        "messages[{i}]: only text parts can be sent to a Cohere backend here"
                    ))),
                })
                .collect::<Result<_, _>>()?;
            Ok(texts.join("\n"))
        }
        Some(_) => Err(invalid(format!("messages[{i}]: \"content\" must be a string or an array"))),
    }
}

/// A user message's content: a string, or text and `image_url` parts (Cohere's vision models
/// take the same image parts as OpenAI: a data URL or an http(s) URL, with an optional detail).
fn user_content(content: Option<&Value>, i: usize) -> Result<Value, TranslateError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(invalid(format!(
                "messages[{i}]: \"content\" must be a string or an array"
            )));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = openai::part_text(p, i)?;
                out.push(json!({"type": "text", "text": text}));
            }
            Some("image_url") => {
                let url = openai::part_image_url(p, i)?;
                let mut image_url = json!({"url": url});
                if let Some(detail) = p.pointer("/image_url/detail").filter(|d| d.is_string()) {
                    image_url["detail"] = detail.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image_url}));
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content part type {} cannot be sent to a Cohere backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    Ok(Value::Array(out))
}

/// An assistant message: its text as content, or, beside tool calls, as the tool plan (Cohere's
/// place for what the model says before calling tools, and where its answers put it).
fn assistant(m: &Value, i: usize) -> Result<Option<Value>, TranslateError> {
    let said = text(m.get("content"), i)?;
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(format!("messages[{i}]: \"tool_calls\" must be an array"))),
    };
    let mut out = json!({"role": "assistant"});
    if calls.is_empty() {
        if said.trim().is_empty() {
            return Ok(None);
        }
        out["content"] = Value::String(said);
        return Ok(Some(out));
    }
    if !said.trim().is_empty() {
        out["tool_plan"] = Value::String(said);
    }
    let mut translated = Vec::with_capacity(calls.len());
    for (j, c) in calls.iter().enumerate() {
        let id =
            c.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
                invalid(format!("messages[{i}].tool_calls[{j}] needs a string \"id\""))
            })?;
        let f = c.get("function");
        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
            invalid(format!("messages[{i}].tool_calls[{j}] needs a string \"function.name\""))
        })?;
        let arguments = match f.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => "{}".to_string(),
            Some(Value::String(s)) if s.trim().is_empty() => "{}".to_string(),
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s).map_err(|e| {
                    invalid(format!(
                        "messages[{i}].tool_calls[{j}].function.arguments is not JSON: {e}"
                    ))
                })?;
                s.clone()
            }
            Some(v) => v.to_string(),
        };
        translated.push(json!({
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }));
    }
    out["tool_calls"] = Value::Array(translated);
    Ok(Some(out))
}

/// A function tool in Cohere's shape, with its name and whether it asked for strict arguments.
struct Tool {
    name: String,
    strict: bool,
    value: Value,
}

fn function_tools(tools: Value) -> Result<Vec<Tool>, TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("\"tools\" must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let f = openai::function_tool(t, i, "a Cohere backend")?;
        let mut function = Map::new();
        function.insert("name".into(), json!(f.name));
        if let Some(d) = f.description {
            function.insert("description".into(), json!(d));
        }
        if let Some(p) = f.parameters.filter(|p| p.is_object()) {
            function.insert("parameters".into(), p.clone());
        }
        out.push(Tool {
            name: f.name.to_string(),
            strict: f.strict,
            value: json!({"type": "function", "function": function}),
        });
    }
    Ok(out)
}

/// An OpenAI tool choice.
enum Choice {
    Auto,
    None,
    Required,
    Named(String),
}

fn tool_choice(c: &Value) -> Result<Choice, TranslateError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(Choice::Auto),
            "none" => Ok(Choice::None),
            "required" => Ok(Choice::Required),
            other => {
                Err(invalid(format!("\"tool_choice\" {other:?} is not auto, none or required")))
            }
        },
        _ => match c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Ok(Choice::Named(name.to_string())),
            None => Err(invalid(
                "\"tool_choice\" must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}",
            )),
        },
    }
}

/// An OpenAI `response_format` as Cohere's: JSON answers are Cohere's `json_object`, with the
/// schema a `json_schema` format gives; text is Cohere's default and needs none.
fn response_format(body: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let Some(schema) = openai::json_response_schema(body)? else { return Ok(None) };
    let mut format = json!({"type": "json_object"});
    let kind = body.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str);
    if kind == Some("json_schema") {
        format["json_schema"] = schema;
    }
    Ok(Some(format))
}
