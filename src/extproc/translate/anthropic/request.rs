//! Anthropic messages requests to and from OpenAI chat completions requests (the hub).
//!
//! Takes the client's JSON object (model already set) and gives the backend's. Tuning fields
//! with no counterpart (penalties, `seed`, `logprobs`, `top_k`, `thinking`, ...) are dropped;
//! what would change the answer's shape or content if dropped (audio, files, server tools, `n`
//! above 1, JSON response formats) is an [`TranslateError::Unsupported`] error instead. Values
//! are passed as given: e.g. an OpenAI `temperature` above 1 reaches Anthropic, which rejects it
//! with an error the client sees.

use serde_json::{Map, Value, json};

use crate::extproc::translate::{DEFAULT_MAX_TOKENS, JSON_RESPONSE_TOOL, TranslateError, openai};

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

fn unsupported(msg: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(msg.into())
}

/// OpenAI chat completions request → Anthropic messages request.
pub fn from_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    if let Some(model) = body.remove("model") {
        out.insert("model".into(), model);
    }
    let Some(Value::Array(messages)) = body.remove("messages") else {
        return Err(invalid("\"messages\" must be an array"));
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    // Anthropic wants all results of one assistant turn's tool calls in one user message.
    let mut open_tool_results: Option<Vec<Value>> = None;
    for (i, m) in messages.into_iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "tool"
            && let Some(results) = open_tool_results.take()
        {
            turns.push(json!({"role": "user", "content": results}));
        }
        match role {
            "system" | "developer" => system.extend(openai::text_parts(m.get("content"), i)?),
            "user" => {
                turns.push(json!({"role": "user", "content": user_content(m.get("content"), i)?}))
            }
            "assistant" => {
                turns.push(json!({"role": "assistant", "content": assistant_content(&m, i)?}))
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}]: a tool message needs a string \"tool_call_id\""
                    ))
                })?;
                let content = openai::text_parts(m.get("content"), i)?.join("\n");
                open_tool_results.get_or_insert_with(Vec::new).push(json!({
                    "type": "tool_result",
                    "tool_use_id": id,
                    "content": content,
                }));
            }
            "" => return Err(invalid(format!("messages[{i}] needs a string \"role\""))),
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: role {other:?} cannot be sent to an Anthropic backend"
                )));
            }
        }
    }
    if let Some(results) = open_tool_results {
        turns.push(json!({"role": "user", "content": results}));
    }
    match system.len() {
        0 => {}
        1 => {
            out.insert("system".into(), Value::String(system.remove(0)));
        }
        _ => {
            let blocks = system.into_iter().map(|t| json!({"type": "text", "text": t})).collect();
            out.insert("system".into(), Value::Array(blocks));
        }
    }
    out.insert("messages".into(), Value::Array(turns));

    let max = body
        .remove("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.remove("max_tokens").filter(|v| !v.is_null()))
        .unwrap_or_else(|| json!(DEFAULT_MAX_TOKENS));
    out.insert("max_tokens".into(), max);
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
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = body.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    if let Some(user) = body.remove("user").filter(Value::is_string) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = body.remove("tools").filter(|v| !v.is_null()) {
        out.insert("tools".into(), openai_tools_to_anthropic(tools)?);
    }
    let parallel = body.remove("parallel_tool_calls").and_then(|v| v.as_bool());
    let mut choice = match body.remove("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(openai_tool_choice_to_anthropic(&c)?),
    };
    if parallel == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Value::Object(o) = c
            && o.get("type").and_then(Value::as_str) != Some("none")
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(schema) = openai::json_response_schema(&body)? {
        choice = Some(answer_with_json_tool(&mut out, schema, choice)?);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        // Several answers would be several requests, each billed, with their streams and
        // usage merged: not worth pretending to be one call.
        return Err(unsupported("\"n\" greater than 1 cannot be sent to an Anthropic backend"));
    }
    Ok(out)
}

/// A JSON response format as Anthropic can express it: a tool whose input schema is the format,
/// which the model must call when it answers (alongside the client's own tools, if any); the
/// call comes back to the client as the JSON content it asked for (see `response.rs` and
/// `stream.rs`). Returns the tool choice that makes the model use it.
fn answer_with_json_tool(
    out: &mut Map<String, Value>,
    schema: Value,
    choice: Option<Value>,
) -> Result<Value, TranslateError> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(unsupported(
            "a response_format schema whose root is not an object cannot be sent to an \
             Anthropic backend",
        ));
    }
    let tools = out.entry("tools").or_insert_with(|| json!([]));
    let Value::Array(tools) = tools else {
        return Err(invalid("\"tools\" must be an array"));
    };
    let own_tools = !tools.is_empty();
    tools.push(json!({
        "name": JSON_RESPONSE_TOOL,
        "description": "Give your answer to the user. Its input is the whole answer, in the format the user asked for.",
        "input_schema": schema,
    }));
    let kind = choice.as_ref().and_then(|c| c.get("type")).and_then(Value::as_str);
    let mut answer = match kind {
        // The client named one of its tools: that call comes first, the answer after it.
        Some("tool") => return Ok(choice.unwrap_or_default()),
        // The model calls the client's tools or gives its answer.
        Some("auto" | "any") | None if own_tools => json!({"type": "any"}),
        // No tools of the client's to call (or `none`): the model gives its answer.
        _ => json!({"type": "tool", "name": JSON_RESPONSE_TOOL}),
    };
    if let Some(flag) = choice.as_ref().and_then(|c| c.get("disable_parallel_tool_use")) {
        answer["disable_parallel_tool_use"] = flag.clone();
    }
    Ok(answer)
}

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
    let mut blocks = Vec::with_capacity(parts.len());
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = openai::part_text(p, i)?;
                blocks.push(json!({"type": "text", "text": text}));
            }
            Some("image_url") => {
                let url = openai::part_image_url(p, i)?;
                blocks.push(image_block(url, i)?);
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content part type {} cannot be sent to an Anthropic backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    Ok(Value::Array(blocks))
}

/// An Anthropic image block from a `data:` URL (inline base64) or an http(s) URL.
fn image_block(url: &str, i: usize) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid(format!("messages[{i}]: the image data URL has no ','")))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            unsupported(format!("messages[{i}]: image data URLs must be base64 encoded"))
        })?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid(format!("messages[{i}]: an image URL must be a data: or http(s) URL")))
}

fn assistant_content(m: &Value, i: usize) -> Result<Value, TranslateError> {
    let texts = match m.get("content") {
        Some(Value::Array(parts)) => parts
            .iter()
            // A refusal is what the assistant said; keep it as text.
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        c => openai::text_parts(c, i)?,
    };
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(format!("messages[{i}]: \"tool_calls\" must be an array"))),
    };
    if calls.is_empty() && texts.len() == 1 {
        return Ok(Value::String(texts.concat()));
    }
    let mut blocks: Vec<Value> = texts
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    for (j, c) in calls.iter().enumerate() {
        let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
        let (name, input) = openai::called_function(c, i, j)?;
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(Value::Array(blocks))
}

fn openai_tools_to_anthropic(tools: Value) -> Result<Value, TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("\"tools\" must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let f = openai::function_tool(t, i, "an Anthropic backend")?;
        if f.name == JSON_RESPONSE_TOOL {
            return Err(invalid(format!("tools[{i}]: the tool name {:?} is reserved", f.name)));
        }
        let mut tool = Map::new();
        tool.insert("name".into(), json!(f.name));
        if let Some(d) = f.description {
            tool.insert("description".into(), json!(d));
        }
        let schema = f
            .parameters
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tool.insert("input_schema".into(), schema);
        out.push(Value::Object(tool));
    }
    Ok(Value::Array(out))
}

fn openai_tool_choice_to_anthropic(c: &Value) -> Result<Value, TranslateError> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => {
                Err(invalid(format!("\"tool_choice\" {other:?} is not auto, none or required")))
            }
        },
        _ => match c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "tool", "name": name})),
            None => Err(invalid(
                "\"tool_choice\" must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}",
            )),
        },
    }
}

/// Anthropic messages request → OpenAI chat completions request.
pub fn to_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    if let Some(model) = body.remove("model") {
        out.insert("model".into(), model);
    }
    let mut messages = Vec::new();
    match body.remove("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> =
                blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            messages.push(json!({"role": "system", "content": text.join("\n")}));
        }
        Some(_) => return Err(invalid("\"system\" must be a string or an array of text blocks")),
    }
    let Some(Value::Array(turns)) = body.remove("messages") else {
        return Err(invalid("\"messages\" must be an array"));
    };
    for (i, m) in turns.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user") => user_to_openai(m.get("content"), i, &mut messages)?,
            Some("assistant") => messages.push(assistant_to_openai(m.get("content"), i)?),
            _ => return Err(invalid(format!("messages[{i}]: \"role\" must be user or assistant"))),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = body.remove("max_tokens").filter(|v| !v.is_null()) {
        out.insert("max_completion_tokens".into(), max);
    }
    if let Some(stop) = body.remove("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), stop);
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = body.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v);
        }
    }
    if let Some(user) =
        body.remove("metadata").and_then(|m| m.get("user_id").cloned()).filter(Value::is_string)
    {
        out.insert("user".into(), user);
    }
    if let Some(tools) = body.remove("tools").filter(|v| !v.is_null()) {
        out.insert("tools".into(), anthropic_tools_to_openai(tools)?);
    }
    if let Some(c) = body.remove("tool_choice").filter(|v| !v.is_null()) {
        let kind = c.get("type").and_then(Value::as_str);
        let choice = match kind {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a \"tool\" tool_choice needs a string \"name\""))?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => return Err(invalid("\"tool_choice.type\" must be auto, any, tool or none")),
        };
        out.insert("tool_choice".into(), choice);
        if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true)
            && kind != Some("none")
        {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(out)
}

/// One Anthropic user turn becomes its tool results (each an OpenAI `tool` message, which must
/// directly follow the assistant's calls) and then a user message with the rest, if any.
fn user_to_openai(
    content: Option<&Value>,
    i: usize,
    messages: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(format!(
                "messages[{i}]: \"content\" must be a string or an array"
            )));
        }
    };
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or_default();
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => parts.push(image_part(b, i)?),
            Some("tool_result") => {
                let id = b.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!("messages[{i}]: a tool_result needs a string \"tool_use_id\""))
                })?;
                let text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        let mut texts = Vec::new();
                        for c in inner {
                            match (
                                c.get("type").and_then(Value::as_str),
                                c.get("text").and_then(Value::as_str),
                            ) {
                                (Some("text"), Some(t)) => texts.push(t),
                                _ => {
                                    return Err(unsupported(format!(
                                        "messages[{i}]: only text tool results can be sent to an OpenAI backend"
                                    )));
                                }
                            }
                        }
                        texts.join("\n")
                    }
                    Some(_) => {
                        return Err(invalid(format!(
                            "messages[{i}]: tool_result content must be a string or an array"
                        )));
                    }
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content block type {} cannot be sent to an OpenAI backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    if !parts.is_empty() {
        // Plain text stays a plain string, which every OpenAI-compatible server accepts.
        let content =
            if parts.len() == 1 && parts[0].get("type").and_then(Value::as_str) == Some("text") {
                parts[0].get("text").cloned().unwrap_or_default()
            } else {
                Value::Array(parts)
            };
        messages.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn image_part(b: &Value, i: usize) -> Result<Value, TranslateError> {
    let src = b.get("source");
    let field = |k: &str| src.and_then(|s| s.get(k)).and_then(Value::as_str);
    let url = match field("type") {
        Some("base64") => {
            let (Some(media), Some(data)) = (field("media_type"), field("data")) else {
                return Err(invalid(format!(
                    "messages[{i}]: a base64 image needs media_type and data"
                )));
            };
            format!("data:{media};base64,{data}")
        }
        Some("url") => field("url")
            .ok_or_else(|| invalid(format!("messages[{i}]: a url image needs a string url")))?
            .to_string(),
        _ => {
            return Err(unsupported(format!(
                "messages[{i}]: only base64 and url images can be sent to an OpenAI backend"
            )));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn assistant_to_openai(content: Option<&Value>, i: usize) -> Result<Value, TranslateError> {
    let blocks = match content {
        Some(Value::String(s)) => return Ok(json!({"role": "assistant", "content": s})),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(format!(
                "messages[{i}]: \"content\" must be a string or an array"
            )));
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": b.get("id").and_then(Value::as_str).unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": b.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // Extended thinking is the backend's own; an OpenAI backend cannot take it back.
            Some("thinking" | "redacted_thinking") => {}
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content block type {} cannot be sent to an OpenAI backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty()
        && let Value::Object(o) = &mut m
    {
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(m)
}

fn anthropic_tools_to_openai(tools: Value) -> Result<Value, TranslateError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("\"tools\" must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if let Some(kind) = t.get("type").and_then(Value::as_str)
            && kind != "custom"
        {
            return Err(unsupported(format!(
                "tools[{i}]: server tool {kind:?} cannot be sent to an OpenAI backend"
            )));
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("tools[{i}] needs a string \"name\"")))?;
        let mut f = Map::new();
        f.insert("name".into(), json!(name));
        if let Some(d) = t.get("description").filter(|d| d.is_string()) {
            f.insert("description".into(), d.clone());
        }
        f.insert(
            "parameters".into(),
            t.get("input_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        );
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}
