//! OpenAI chat completions requests (the hub) → Bedrock Converse requests.
//!
//! Converse wants turns that alternate between user and assistant, so consecutive turns of one
//! role are merged, and tool results (OpenAI `tool` messages) become `toolResult` blocks of a user
//! turn. System and developer messages become `system` blocks; `max_completion_tokens` (or
//! `max_tokens`), `temperature`, `top_p` and `stop` become `inferenceConfig`; function tools and
//! `tool_choice` become `toolConfig`. Converse refuses blank text, so blank text parts are left
//! out (and a turn left empty with them). Images must be `data:` URLs: Converse takes image bytes
//! or S3 objects, not URLs.
//!
//! Converse cannot be told not to call the tools it is given, and refuses a conversation with
//! tool calls but no tools. So `tool_choice: "none"` gives the model no tools, and when it is
//! given none (that way or because the client offered none) the conversation's earlier calls and
//! results travel as text: the model still reads them, and cannot call anything.
//!
//! A JSON `response_format` is asked for through the tool every family without JSON formats uses
//! ([`JSON_RESPONSE_TOOL`], its input schema the requested one, which the model is made to
//! call); the response translation gives the call's input back as the answer's content. Tuning
//! fields with no counterpart (penalties, `seed`, `logprobs`, `user`, `parallel_tool_calls`, ...)
//! are dropped; what would change the answer if dropped is an [`TranslateError::Unsupported`]
//! error instead: `n` above 1, audio or file parts, image URLs. Values are passed as given: e.g.
//! an OpenAI `temperature` above 1 reaches Bedrock, which refuses it with an error the client
//! sees.

use serde_json::{Map, Value, json};

use crate::extproc::translate::{JSON_RESPONSE_TOOL, TranslateError, openai};

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest(msg.into())
}

fn unsupported(msg: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(msg.into())
}

/// The conversation being built: alternating turns and the system blocks.
#[derive(Default)]
struct Conversation {
    system: Vec<Value>,
    turns: Vec<(&'static str, Vec<Value>)>,
    /// A turn holds a `toolUse` or `toolResult` block: Converse then requires `toolConfig`.
    uses_tools: bool,
}

/// A `toolUse` or `toolResult` block as text, for a model given no tools.
fn as_text(block: Value) -> Value {
    if let Some(call) = block.get("toolUse") {
        let id = call.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
        let input = call.get("input").cloned().unwrap_or_default();
        return text_block(format!("[tool call {id}: {name}({input})]"));
    }
    if let Some(result) = block.get("toolResult") {
        let id = result.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
        let texts: Vec<&str> = result
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        return text_block(format!("[tool result {id}: {}]", texts.join("\n")));
    }
    block
}

impl Conversation {
    /// Adds `blocks` to the last turn when it is `role`'s, as a new turn otherwise.
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }
}

/// OpenAI chat completions request → Converse request.
pub fn from_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let Some(Value::Array(messages)) = body.remove("messages") else {
        return Err(invalid("\"messages\" must be an array"));
    };
    let mut c = Conversation::default();
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                let texts = openai::text_parts(m.get("content"), i)?;
                c.system.extend(texts.into_iter().filter(|t| !t.trim().is_empty()).map(text_block));
            }
            "user" => c.push("user", user_blocks(m.get("content"), i)?),
            "assistant" => {
                let blocks = assistant_blocks(m, i)?;
                c.uses_tools |= blocks.iter().any(|b| b.get("toolUse").is_some());
                c.push("assistant", blocks);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!(
                        "messages[{i}]: a tool message needs a string \"tool_call_id\""
                    ))
                })?;
                let text = openai::text_parts(m.get("content"), i)?.join("\n");
                let content: Vec<Value> =
                    if text.trim().is_empty() { Vec::new() } else { vec![text_block(text)] };
                let result = json!({"toolResult": {"toolUseId": id, "content": content}});
                c.uses_tools = true;
                c.push("user", vec![result]);
            }
            "" => return Err(invalid(format!("messages[{i}] needs a string \"role\""))),
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: role {other:?} cannot be sent to a Bedrock backend"
                )));
            }
        }
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        return Err(unsupported("\"n\" greater than 1 cannot be sent to a Bedrock backend"));
    }

    let mut out = Map::new();
    let config = inference_config(&mut body)?;
    let tools = tool_config(&mut body)?;
    let turns = c.turns.into_iter().map(|(role, content)| {
        let content: Vec<Value> = match &tools {
            Some(_) => content,
            None if c.uses_tools => content.into_iter().map(as_text).collect(),
            None => content,
        };
        json!({"role": role, "content": content})
    });
    out.insert("messages".into(), Value::Array(turns.collect()));
    if !c.system.is_empty() {
        out.insert("system".into(), Value::Array(c.system));
    }
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(tools) = tools {
        out.insert("toolConfig".into(), tools);
    }
    Ok(out)
}

fn text_block(text: impl Into<String>) -> Value {
    json!({"text": text.into()})
}

fn inference_config(body: &mut Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    let max = body
        .remove("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| body.remove("max_tokens").filter(|v| !v.is_null()));
    if let Some(max) = max {
        config.insert("maxTokens".into(), max);
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = body.remove(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v);
        }
    }
    match body.remove("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(a @ Value::Array(_)) => {
            config.insert("stopSequences".into(), a);
        }
        Some(_) => return Err(invalid("\"stop\" must be a string or an array of strings")),
    }
    Ok(config)
}

fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![text_block(s.as_str())]),
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
                if !text.trim().is_empty() {
                    blocks.push(text_block(text));
                }
            }
            Some("image_url") => {
                let url = openai::part_image_url(p, i)?;
                blocks.push(image_block(url, i)?);
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}]: content part type {} cannot be sent to a Bedrock backend",
                    other.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))
                )));
            }
        }
    }
    Ok(blocks)
}

/// A Converse image block from a `data:` URL; Converse takes no image URLs.
fn image_block(url: &str, i: usize) -> Result<Value, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        if url.starts_with("https://") || url.starts_with("http://") {
            return Err(unsupported(format!(
                "messages[{i}]: a Bedrock backend takes images as bytes, not URLs; send the image as a data: URL"
            )));
        }
        return Err(invalid(format!("messages[{i}]: an image URL must be a data: or http(s) URL")));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| invalid(format!("messages[{i}]: the image data URL has no ','")))?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
        unsupported(format!("messages[{i}]: image data URLs must be base64 encoded"))
    })?;
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(unsupported(format!(
                "messages[{i}]: image type {other:?} cannot be sent to a Bedrock backend (png, jpeg, gif or webp)"
            )));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let texts = match m.get("content") {
        Some(Value::Array(parts)) => parts
            .iter()
            // A refusal is what the assistant said; keep it as text.
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        c => openai::text_parts(c, i)?,
    };
    let mut blocks: Vec<Value> =
        texts.into_iter().filter(|t| !t.trim().is_empty()).map(text_block).collect();
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(format!("messages[{i}]: \"tool_calls\" must be an array"))),
    };
    for (j, c) in calls.iter().enumerate() {
        let at = || format!("messages[{i}].tool_calls[{j}]");
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{} needs a string \"id\"", at())))?;
        let (name, input) = openai::called_function(c, i, j)?;
        blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
    }
    Ok(blocks)
}

/// What the client's `tool_choice` asks.
enum Choice {
    Auto,
    None,
    Required,
    Tool(String),
}

fn choice(c: Option<Value>) -> Result<Choice, TranslateError> {
    Ok(match c {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(invalid(format!(
                    "\"tool_choice\" {other:?} is not auto, none or required"
                )));
            }
        },
        Some(c) => match c.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Choice::Tool(name.to_string()),
            None => {
                return Err(invalid(
                    "\"tool_choice\" must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}",
                ));
            }
        },
    })
}

/// `toolConfig` from the client's tools and tool choice, with [`JSON_RESPONSE_TOOL`] for a JSON
/// answer; `None` when the model is given no tools.
fn tool_config(body: &mut Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let mut tools = match body.remove("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| tool_spec(t, i)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("\"tools\" must be an array")),
    };
    let choice = choice(body.remove("tool_choice"))?;
    if matches!(choice, Choice::None) {
        tools.clear();
    }
    let tool = |name: &str| json!({"tool": {"name": name}});
    let mut choice = match choice {
        Choice::Auto | Choice::None => None,
        Choice::Required => Some(json!({"any": {}})),
        Choice::Tool(name) => Some(tool(&name)),
    };
    if let Some(schema) = openai::json_response_schema(body)? {
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(unsupported(
                "a response_format schema whose root is not an object cannot be sent to a \
                 Bedrock backend",
            ));
        }
        choice = match choice {
            // The client named one of its tools: that call comes first, the answer after it.
            Some(named) if named.get("tool").is_some() => Some(named),
            // The model calls the client's tools or gives its answer.
            _ if !tools.is_empty() => Some(json!({"any": {}})),
            // No tools of the client's to call: the model gives its answer.
            _ => Some(tool(JSON_RESPONSE_TOOL)),
        };
        tools.push(json!({"toolSpec": {
            "name": JSON_RESPONSE_TOOL,
            "description": "Give your answer to the user. Its input is the whole answer, in the format the user asked for.",
            "inputSchema": {"json": schema},
        }}));
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = json!({"tools": tools});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

fn tool_spec(t: &Value, i: usize) -> Result<Value, TranslateError> {
    let f = openai::function_tool(t, i, "a Bedrock backend")?;
    if f.name == JSON_RESPONSE_TOOL {
        return Err(invalid(format!("tools[{i}]: the tool name {:?} is reserved", f.name)));
    }
    let schema = f
        .parameters
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut spec = json!({"name": f.name, "inputSchema": {"json": schema}});
    if let Some(d) = f.description.filter(|d| !d.is_empty()) {
        spec["description"] = json!(d);
    }
    Ok(json!({"toolSpec": spec}))
}
