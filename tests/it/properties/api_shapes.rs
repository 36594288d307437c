//! Strict checks of request bodies against the documented shapes of the APIs aixds talks to: the
//! Anthropic Messages API (`POST /v1/messages`, and on AWS Bedrock's InvokeModel), the OpenAI
//! Chat Completions API (`POST /v1/chat/completions`) and AWS Bedrock's Converse API
//! (`POST /model/{modelId}/converse`). Stricter than the providers where the documentation is vague:
//! a field not listed here is rejected, so a translation that leaks a client-only field fails.
//!
//! Each check returns the first problem as `path: what is wrong`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

pub(super) type Check = Result<(), String>;

pub(super) fn fail<T>(path: &str, what: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("{path}: {what}"))
}

/// The object at `path`, with only `allowed` keys and every one of `required`.
pub(super) fn object<'a>(
    v: &'a Value,
    path: &str,
    required: &[&str],
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let Value::Object(o) = v else { return fail(path, "must be an object") };
    for key in required {
        if !o.contains_key(*key) {
            return fail(path, format!("{key:?} is required"));
        }
    }
    for key in o.keys() {
        if !required.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            return fail(path, format!("unknown field {key:?}"));
        }
    }
    Ok(o)
}

pub(super) fn string<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .map_or_else(|| fail(path, format!("{key:?} must be a string")), Ok)
}

fn opt<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key)
}

pub(super) fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array().map_or_else(|| fail(path, "must be an array"), Ok)
}

pub(super) fn number_in(v: &Value, path: &str, lo: f64, hi: f64) -> Check {
    match v.as_f64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(()),
        _ => fail(path, format!("must be a number in [{lo}, {hi}]")),
    }
}

pub(super) fn positive_integer(v: &Value, path: &str) -> Check {
    match v.as_u64() {
        Some(n) if n >= 1 => Ok(()),
        _ => fail(path, "must be an integer of at least 1"),
    }
}

pub(super) fn boolean(v: &Value, path: &str) -> Check {
    if v.is_boolean() { Ok(()) } else { fail(path, "must be true or false") }
}

/// Tool names, and Anthropic tool_use ids, as both APIs document them.
fn identifier(s: &str, path: &str, max: usize) -> Check {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { fail(path, format!("{s:?} must match ^[a-zA-Z0-9_-]{{1,{max}}}$")) }
}

pub(super) fn non_blank(s: &str, path: &str) -> Check {
    if s.trim().is_empty() { fail(path, "text must contain non-whitespace text") } else { Ok(()) }
}

fn json_schema(v: &Value, path: &str) -> Check {
    let o = v.as_object().map_or_else(|| fail(path, "must be a JSON schema object"), Ok)?;
    if o.get("type").and_then(Value::as_str) != Some("object") {
        return fail(path, "must have \"type\": \"object\"");
    }
    Ok(())
}

// ---- Anthropic Messages ----

/// A request body for Anthropic's `POST /v1/messages`.
pub fn anthropic_messages(body: &Value) -> Check {
    let o = object(
        body,
        "request",
        &["model", "max_tokens", "messages"],
        &[
            "system",
            "stop_sequences",
            "stream",
            "temperature",
            "top_p",
            "top_k",
            "metadata",
            "tools",
            "tool_choice",
            "thinking",
            "service_tier",
        ],
    )?;
    string(o, "model", "request")?;
    positive_integer(&o["max_tokens"], "max_tokens")?;
    if let Some(system) = opt(o, "system") {
        match system {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for (i, b) in blocks.iter().enumerate() {
                    let path = format!("system[{i}]");
                    let bo = object(b, &path, &["type", "text"], &["cache_control", "citations"])?;
                    if bo["type"] != "text" {
                        return fail(&path, "system blocks must be text");
                    }
                    non_blank(string(bo, "text", &path)?, &path)?;
                }
            }
            _ => return fail("system", "must be a string or an array of text blocks"),
        }
    }
    if let Some(stops) = opt(o, "stop_sequences") {
        for (i, s) in array(stops, "stop_sequences")?.iter().enumerate() {
            if !s.is_string() {
                return fail(&format!("stop_sequences[{i}]"), "must be a string");
            }
        }
    }
    if let Some(v) = opt(o, "stream") {
        boolean(v, "stream")?;
    }
    if let Some(v) = opt(o, "temperature") {
        number_in(v, "temperature", 0.0, 1.0)?;
    }
    if let Some(v) = opt(o, "top_p") {
        number_in(v, "top_p", 0.0, 1.0)?;
    }
    if let Some(v) = opt(o, "top_k") {
        positive_integer(v, "top_k")?;
    }
    if let Some(m) = opt(o, "metadata") {
        let mo = object(m, "metadata", &[], &["user_id"])?;
        if mo.get("user_id").is_some_and(|u| !u.is_string() && !u.is_null()) {
            return fail("metadata.user_id", "must be a string or null");
        }
    }
    let tool_names = match opt(o, "tools") {
        Some(tools) => anthropic_tools(tools)?,
        None => BTreeSet::new(),
    };
    if let Some(choice) = opt(o, "tool_choice") {
        anthropic_tool_choice(choice, &tool_names)?;
    }
    anthropic_turns(&o["messages"])
}

fn anthropic_tools(tools: &Value) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for (i, t) in array(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let to =
            object(t, &path, &["name", "input_schema"], &["description", "cache_control", "type"])?;
        if to.get("type").is_some_and(|k| k != "custom") {
            return fail(&path, "a client tool's type is \"custom\"");
        }
        let name = string(to, "name", &path)?;
        identifier(name, &format!("{path}.name"), 64)?;
        if !names.insert(name.to_string()) {
            return fail(&path, format!("tool name {name:?} is not unique"));
        }
        if to.get("description").is_some_and(|d| !d.is_string()) {
            return fail(&path, "description must be a string");
        }
        json_schema(&to["input_schema"], &format!("{path}.input_schema"))?;
    }
    Ok(names)
}

fn anthropic_tool_choice(choice: &Value, tools: &BTreeSet<String>) -> Check {
    let path = "tool_choice";
    let kind = choice.get("type").and_then(Value::as_str);
    match kind {
        Some("auto" | "any") => {
            object(choice, path, &["type"], &["disable_parallel_tool_use"])?;
        }
        Some("none") => {
            object(choice, path, &["type"], &[])?;
        }
        Some("tool") => {
            let o = object(choice, path, &["type", "name"], &["disable_parallel_tool_use"])?;
            let name = string(o, "name", path)?;
            if !tools.contains(name) {
                return fail(path, format!("names tool {name:?}, which is not in tools"));
            }
        }
        _ => return fail(path, "type must be auto, any, tool or none"),
    }
    if let Some(v) = choice.get("disable_parallel_tool_use") {
        boolean(v, "tool_choice.disable_parallel_tool_use")?;
    }
    if kind != Some("none") && tools.is_empty() {
        return fail(path, "needs tools");
    }
    Ok(())
}

/// The conversation: user first; every tool_use answered by a tool_result, first thing in the
/// next user turn, and every tool_result answering a tool_use of the turn before; content that
/// is never empty, except that a final assistant turn may be.
fn anthropic_turns(messages: &Value) -> Check {
    let turns = array(messages, "messages")?;
    if turns.is_empty() {
        return fail("messages", "must not be empty");
    }
    let mut pending_calls: Vec<String> = Vec::new();
    for (i, m) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        let mo = object(m, &path, &["role", "content"], &[])?;
        let role = string(mo, "role", &path)?;
        if i == 0 && role != "user" {
            return fail(&path, "the first message must use the user role");
        }
        let last = i + 1 == turns.len();
        let blocks: Vec<&Value> = match &mo["content"] {
            Value::String(s) => {
                if !(last && role == "assistant") {
                    non_blank(s, &path)?;
                }
                Vec::new()
            }
            Value::Array(blocks) => {
                if blocks.is_empty() && !(last && role == "assistant") {
                    return fail(&path, "content must not be empty");
                }
                blocks.iter().collect()
            }
            _ => return fail(&path, "content must be a string or an array of blocks"),
        };
        let mut answered = Vec::new();
        let mut calls = Vec::new();
        let mut past_results = false;
        for (j, b) in blocks.iter().enumerate() {
            let bpath = format!("{path}.content[{j}]");
            let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
            match (role, kind) {
                (_, "text") => {
                    let bo = object(b, &bpath, &["type", "text"], &["cache_control", "citations"])?;
                    non_blank(string(bo, "text", &bpath)?, &bpath)?;
                }
                ("user", "image") => anthropic_image(b, &bpath)?,
                ("user", "tool_result") => {
                    if past_results {
                        return fail(&bpath, "tool_result blocks must come before any other");
                    }
                    let bo = object(
                        b,
                        &bpath,
                        &["type", "tool_use_id"],
                        &["content", "is_error", "cache_control"],
                    )?;
                    answered.push(string(bo, "tool_use_id", &bpath)?.to_string());
                    match bo.get("content") {
                        None | Some(Value::String(_)) => {}
                        Some(Value::Array(inner)) => {
                            for (k, c) in inner.iter().enumerate() {
                                let cpath = format!("{bpath}.content[{k}]");
                                match c.get("type").and_then(Value::as_str) {
                                    Some("text") => {
                                        let co = object(
                                            c,
                                            &cpath,
                                            &["type", "text"],
                                            &["cache_control"],
                                        )?;
                                        non_blank(string(co, "text", &cpath)?, &cpath)?;
                                    }
                                    Some("image") => anthropic_image(c, &cpath)?,
                                    _ => return fail(&cpath, "must be a text or image block"),
                                }
                            }
                        }
                        Some(_) => return fail(&bpath, "content must be a string or an array"),
                    }
                    if let Some(e) = bo.get("is_error") {
                        boolean(e, &format!("{bpath}.is_error"))?;
                    }
                }
                ("assistant", "tool_use") => {
                    let bo =
                        object(b, &bpath, &["type", "id", "name", "input"], &["cache_control"])?;
                    let id = string(bo, "id", &bpath)?;
                    identifier(id, &format!("{bpath}.id"), 256)?;
                    identifier(string(bo, "name", &bpath)?, &format!("{bpath}.name"), 64)?;
                    if !bo["input"].is_object() {
                        return fail(&bpath, "input must be an object");
                    }
                    calls.push(id.to_string());
                }
                ("assistant", "thinking") => {
                    let bo = object(b, &bpath, &["type", "thinking", "signature"], &[])?;
                    string(bo, "thinking", &bpath)?;
                    string(bo, "signature", &bpath)?;
                }
                ("assistant", "redacted_thinking") => {
                    object(b, &bpath, &["type", "data"], &[])?;
                }
                _ => return fail(&bpath, format!("a {role} message cannot hold a {kind:?} block")),
            }
            past_results |= kind != "tool_result";
        }
        match role {
            "user" => {
                if answered != pending_calls {
                    return fail(
                        &path,
                        format!(
                            "answers tool uses {answered:?}; the turn before made {pending_calls:?}"
                        ),
                    );
                }
                pending_calls.clear();
            }
            "assistant" => {
                if !pending_calls.is_empty() {
                    return fail(&path, format!("tool uses {pending_calls:?} were not answered"));
                }
                pending_calls = calls;
            }
            _ => return fail(&path, "role must be user or assistant"),
        }
    }
    if !pending_calls.is_empty() {
        return fail("messages", format!("tool uses {pending_calls:?} were not answered"));
    }
    Ok(())
}

fn anthropic_image(b: &Value, path: &str) -> Check {
    let bo = object(b, path, &["type", "source"], &["cache_control"])?;
    let spath = format!("{path}.source");
    match bo["source"].get("type").and_then(Value::as_str) {
        Some("base64") => {
            let so = object(&bo["source"], &spath, &["type", "media_type", "data"], &[])?;
            let media = string(so, "media_type", &spath)?;
            if !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&media) {
                return fail(&spath, format!("media_type {media:?} is not jpeg, png, gif or webp"));
            }
            string(so, "data", &spath)?;
        }
        Some("url") => {
            let so = object(&bo["source"], &spath, &["type", "url"], &[])?;
            let url = string(so, "url", &spath)?;
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return fail(&spath, "url must be http(s)");
            }
        }
        _ => return fail(&spath, "type must be base64 or url"),
    }
    Ok(())
}

// ---- Anthropic on AWS Bedrock (InvokeModel) ----

/// A request body for an Anthropic model on Bedrock's InvokeModel: Anthropic's, with
/// `anthropic_version` and without `model` and `stream`.
pub fn bedrock_anthropic(body: &Value) -> Check {
    let Value::Object(o) = body else { return fail("request", "must be an object") };
    if o.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return fail("request", "\"anthropic_version\" must be \"bedrock-2023-05-31\"");
    }
    for key in ["model", "stream"] {
        if o.contains_key(key) {
            return fail("request", format!("unknown field {key:?}"));
        }
    }
    let mut as_anthropic = o.clone();
    as_anthropic.remove("anthropic_version");
    as_anthropic.insert("model".into(), Value::String("m".into()));
    anthropic_messages(&Value::Object(as_anthropic))
}

// ---- AWS Bedrock Converse ----

/// A request body for Bedrock's `POST /model/{modelId}/converse` (and `converse-stream`).
pub fn bedrock_converse(body: &Value) -> Check {
    let o = object(
        body,
        "request",
        &["messages"],
        &["system", "inferenceConfig", "toolConfig", "additionalModelRequestFields"],
    )?;
    if let Some(system) = opt(o, "system") {
        for (i, b) in array(system, "system")?.iter().enumerate() {
            let path = format!("system[{i}]");
            non_blank(string(object(b, &path, &["text"], &[])?, "text", &path)?, &path)?;
        }
    }
    if let Some(config) = opt(o, "inferenceConfig") {
        let co = object(
            config,
            "inferenceConfig",
            &[],
            &["maxTokens", "temperature", "topP", "stopSequences"],
        )?;
        if let Some(v) = opt(co, "maxTokens") {
            positive_integer(v, "inferenceConfig.maxTokens")?;
        }
        for key in ["temperature", "topP"] {
            if let Some(v) = opt(co, key) {
                number_in(v, &format!("inferenceConfig.{key}"), 0.0, 1.0)?;
            }
        }
        if let Some(stops) = opt(co, "stopSequences") {
            for (i, s) in array(stops, "inferenceConfig.stopSequences")?.iter().enumerate() {
                let path = format!("inferenceConfig.stopSequences[{i}]");
                non_blank(s.as_str().map_or_else(|| fail(&path, "must be a string"), Ok)?, &path)?;
            }
        }
    }
    let tools = match opt(o, "toolConfig") {
        Some(config) => Some(converse_tool_config(config)?),
        None => None,
    };
    let uses_tools = converse_turns(&o["messages"])?;
    if uses_tools && tools.is_none() {
        return fail("toolConfig", "must be defined when the messages use tools");
    }
    Ok(())
}

fn converse_tool_config(config: &Value) -> Result<BTreeSet<String>, String> {
    let co = object(config, "toolConfig", &["tools"], &["toolChoice"])?;
    let mut names = BTreeSet::new();
    let tools = array(&co["tools"], "toolConfig.tools")?;
    if tools.is_empty() {
        return fail("toolConfig.tools", "must not be empty");
    }
    for (i, t) in tools.iter().enumerate() {
        let path = format!("toolConfig.tools[{i}]");
        let spec = &object(t, &path, &["toolSpec"], &[])?["toolSpec"];
        let path = format!("{path}.toolSpec");
        let so = object(spec, &path, &["name", "inputSchema"], &["description"])?;
        let name = string(so, "name", &path)?;
        identifier(name, &format!("{path}.name"), 64)?;
        if !names.insert(name.to_string()) {
            return fail(&path, format!("tool name {name:?} is not unique"));
        }
        if let Some(d) = so.get("description") {
            non_blank(d.as_str().unwrap_or_default(), &format!("{path}.description"))?;
        }
        let schema = object(&so["inputSchema"], &format!("{path}.inputSchema"), &["json"], &[])?;
        json_schema(&schema["json"], &format!("{path}.inputSchema.json"))?;
    }
    if let Some(choice) = opt(co, "toolChoice") {
        let path = "toolConfig.toolChoice";
        let Value::Object(c) = choice else { return fail(path, "must be an object") };
        match c.keys().map(String::as_str).collect::<Vec<_>>()[..] {
            ["auto"] | ["any"] => {
                let kind = c.keys().next().map(String::as_str).unwrap_or_default();
                object(&c[kind], &format!("{path}.{kind}"), &[], &[])?;
            }
            ["tool"] => {
                let to = object(&c["tool"], &format!("{path}.tool"), &["name"], &[])?;
                let name = string(to, "name", path)?;
                if !names.contains(name) {
                    return fail(path, format!("names tool {name:?}, which is not in tools"));
                }
            }
            _ => return fail(path, "must be exactly one of auto, any and tool"),
        }
    }
    Ok(names)
}

/// The conversation: user first, roles alternating, content never empty, text never blank;
/// every toolUse answered by a toolResult in the next (user) turn and every toolResult answering
/// one. Returns whether the conversation uses tools.
fn converse_turns(messages: &Value) -> Result<bool, String> {
    let turns = array(messages, "messages")?;
    if turns.is_empty() {
        return fail("messages", "must not be empty");
    }
    let mut pending_calls: Vec<String> = Vec::new();
    let mut uses_tools = false;
    let mut last_role = "";
    for (i, m) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        let mo = object(m, &path, &["role", "content"], &[])?;
        let role = string(mo, "role", &path)?;
        if !["user", "assistant"].contains(&role) {
            return fail(&path, "role must be user or assistant");
        }
        if i == 0 && role != "user" {
            return fail(&path, "the first message must use the user role");
        }
        if role == last_role {
            return fail(&path, "roles must alternate between user and assistant");
        }
        last_role = role;
        let blocks = array(&mo["content"], &format!("{path}.content"))?;
        if blocks.is_empty() {
            return fail(&path, "content must not be empty");
        }
        let mut answered = Vec::new();
        let mut calls = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let bpath = format!("{path}.content[{j}]");
            let Value::Object(bo) = b else { return fail(&bpath, "must be an object") };
            let kind = match bo.keys().map(String::as_str).collect::<Vec<_>>()[..] {
                [kind] => kind,
                _ => return fail(&bpath, "must hold exactly one member"),
            };
            let member = &bo[kind];
            let mpath = format!("{bpath}.{kind}");
            match (role, kind) {
                (_, "text") => non_blank(member.as_str().unwrap_or_default(), &mpath)?,
                ("user", "image") => {
                    let io = object(member, &mpath, &["format", "source"], &[])?;
                    let format = string(io, "format", &mpath)?;
                    if !["png", "jpeg", "gif", "webp"].contains(&format) {
                        return fail(
                            &mpath,
                            format!("format {format:?} is not png, jpeg, gif or webp"),
                        );
                    }
                    let so = object(&io["source"], &format!("{mpath}.source"), &["bytes"], &[])?;
                    string(so, "bytes", &mpath)?;
                }
                ("assistant", "toolUse") => {
                    let to = object(member, &mpath, &["toolUseId", "name", "input"], &[])?;
                    let id = string(to, "toolUseId", &mpath)?;
                    identifier(id, &format!("{mpath}.toolUseId"), 64)?;
                    identifier(string(to, "name", &mpath)?, &format!("{mpath}.name"), 64)?;
                    if !to["input"].is_object() {
                        return fail(&mpath, "input must be an object");
                    }
                    calls.push(id.to_string());
                }
                ("user", "toolResult") => {
                    let to = object(member, &mpath, &["toolUseId", "content"], &["status"])?;
                    answered.push(string(to, "toolUseId", &mpath)?.to_string());
                    for (k, c) in
                        array(&to["content"], &format!("{mpath}.content"))?.iter().enumerate()
                    {
                        let cpath = format!("{mpath}.content[{k}]");
                        non_blank(
                            string(object(c, &cpath, &["text"], &[])?, "text", &cpath)?,
                            &cpath,
                        )?;
                    }
                }
                _ => return fail(&bpath, format!("a {role} message cannot hold a {kind:?} block")),
            }
            uses_tools |= kind == "toolUse" || kind == "toolResult";
        }
        if role == "user" {
            if answered != pending_calls {
                return fail(
                    &path,
                    format!(
                        "answers tool uses {answered:?}; the turn before made {pending_calls:?}"
                    ),
                );
            }
            pending_calls.clear();
        } else {
            if !pending_calls.is_empty() {
                return fail(&path, format!("tool uses {pending_calls:?} were not answered"));
            }
            pending_calls = calls;
        }
    }
    if !pending_calls.is_empty() {
        return fail("messages", format!("tool uses {pending_calls:?} were not answered"));
    }
    Ok(uses_tools)
}

// ---- OpenAI Chat Completions ----

/// A request body for OpenAI's `POST /v1/chat/completions`.
pub fn openai_chat(body: &Value) -> Check {
    let o = object(
        body,
        "request",
        &["model", "messages"],
        &[
            "max_completion_tokens",
            "max_tokens",
            "stop",
            "temperature",
            "top_p",
            "stream",
            "stream_options",
            "user",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "n",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logprobs",
            "top_logprobs",
            "response_format",
            "metadata",
            "store",
            "reasoning_effort",
            "service_tier",
        ],
    )?;
    string(o, "model", "request")?;
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = opt(o, key) {
            positive_integer(v, key)?;
        }
    }
    if let Some(stop) = opt(o, "stop") {
        match stop {
            Value::Null | Value::String(_) => {}
            Value::Array(a) if a.len() <= 4 && a.iter().all(Value::is_string) => {}
            _ => return fail("stop", "must be a string or an array of at most 4 strings"),
        }
    }
    if let Some(v) = opt(o, "temperature") {
        number_in(v, "temperature", 0.0, 2.0)?;
    }
    if let Some(v) = opt(o, "top_p") {
        number_in(v, "top_p", 0.0, 1.0)?;
    }
    let stream = match opt(o, "stream") {
        Some(v) => {
            boolean(v, "stream")?;
            v == true
        }
        None => false,
    };
    if let Some(options) = opt(o, "stream_options") {
        if !stream {
            return fail("stream_options", "is only allowed when stream is true");
        }
        let so = object(options, "stream_options", &[], &["include_usage"])?;
        if let Some(v) = so.get("include_usage") {
            boolean(v, "stream_options.include_usage")?;
        }
    }
    if o.get("user").is_some_and(|u| !u.is_string()) {
        return fail("user", "must be a string");
    }
    let tool_names = match opt(o, "tools") {
        Some(tools) => openai_tools(tools)?,
        None => BTreeSet::new(),
    };
    if let Some(choice) = opt(o, "tool_choice") {
        if tool_names.is_empty() {
            return fail("tool_choice", "is only allowed when tools are specified");
        }
        match choice {
            Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {}
            Value::Object(_) => {
                let co = object(choice, "tool_choice", &["type", "function"], &[])?;
                let fo = object(&co["function"], "tool_choice.function", &["name"], &[])?;
                let name = string(fo, "name", "tool_choice.function")?;
                if co["type"] != "function" || !tool_names.contains(name) {
                    return fail(
                        "tool_choice",
                        format!("names function {name:?}, which is not in tools"),
                    );
                }
            }
            _ => return fail("tool_choice", "must be auto, none, required or a function"),
        }
    }
    if let Some(v) = opt(o, "parallel_tool_calls") {
        boolean(v, "parallel_tool_calls")?;
        if tool_names.is_empty() {
            return fail("parallel_tool_calls", "is only allowed when tools are specified");
        }
    }
    openai_messages(&o["messages"])
}

fn openai_tools(tools: &Value) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for (i, t) in array(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let to = object(t, &path, &["type", "function"], &[])?;
        if to["type"] != "function" {
            return fail(&path, "type must be function");
        }
        let fpath = format!("{path}.function");
        let fo =
            object(&to["function"], &fpath, &["name"], &["description", "parameters", "strict"])?;
        let name = string(fo, "name", &fpath)?;
        identifier(name, &format!("{fpath}.name"), 64)?;
        if !names.insert(name.to_string()) {
            return fail(&path, format!("function name {name:?} is not unique"));
        }
        if fo.get("description").is_some_and(|d| !d.is_string()) {
            return fail(&fpath, "description must be a string");
        }
        if let Some(p) = fo.get("parameters") {
            json_schema(p, &format!("{fpath}.parameters"))?;
        }
    }
    Ok(names)
}

/// Text, as a string or an array of text parts.
fn openai_text(v: &Value, path: &str) -> Check {
    match v {
        Value::String(_) => Ok(()),
        Value::Array(parts) => {
            for (k, p) in parts.iter().enumerate() {
                let ppath = format!("{path}[{k}]");
                let po = object(p, &ppath, &["type", "text"], &[])?;
                if po["type"] != "text" {
                    return fail(&ppath, "must be a text part");
                }
                string(po, "text", &ppath)?;
            }
            Ok(())
        }
        _ => fail(path, "must be a string or an array of text parts"),
    }
}

/// Every message well formed; every tool call answered by tool messages right after it, and
/// every tool message answering a call of the assistant message before it.
fn openai_messages(messages: &Value) -> Check {
    let messages = array(messages, "messages")?;
    if messages.is_empty() {
        return fail("messages", "must not be empty");
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "tool" && !pending.is_empty() {
            return fail(&path, format!("tool calls {pending:?} were not answered before it"));
        }
        match role {
            "system" | "developer" => {
                let mo = object(m, &path, &["role", "content"], &["name"])?;
                openai_text(&mo["content"], &format!("{path}.content"))?;
            }
            "user" => {
                let mo = object(m, &path, &["role", "content"], &["name"])?;
                match &mo["content"] {
                    Value::String(_) => {}
                    Value::Array(parts) => {
                        for (k, p) in parts.iter().enumerate() {
                            let ppath = format!("{path}.content[{k}]");
                            match p.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    let po = object(p, &ppath, &["type", "text"], &[])?;
                                    string(po, "text", &ppath)?;
                                }
                                Some("image_url") => {
                                    let po = object(p, &ppath, &["type", "image_url"], &[])?;
                                    let io =
                                        object(&po["image_url"], &ppath, &["url"], &["detail"])?;
                                    let url = string(io, "url", &ppath)?;
                                    if !["https://", "http://", "data:image/"]
                                        .iter()
                                        .any(|s| url.starts_with(s))
                                    {
                                        return fail(
                                            &ppath,
                                            "url must be http(s) or a data:image URL",
                                        );
                                    }
                                }
                                _ => return fail(&ppath, "must be a text or image_url part"),
                            }
                        }
                    }
                    _ => return fail(&path, "content must be a string or an array of parts"),
                }
            }
            "assistant" => {
                let mo =
                    object(m, &path, &["role"], &["content", "tool_calls", "name", "refusal"])?;
                let calls = match mo.get("tool_calls") {
                    None => &Vec::new(),
                    Some(c) => array(c, &format!("{path}.tool_calls"))?,
                };
                match mo.get("content") {
                    None | Some(Value::Null) if calls.is_empty() => {
                        return fail(&path, "content is required unless tool_calls is given");
                    }
                    None | Some(Value::Null) => {}
                    Some(c) => openai_text(c, &format!("{path}.content"))?,
                }
                for (k, c) in calls.iter().enumerate() {
                    let cpath = format!("{path}.tool_calls[{k}]");
                    let co = object(c, &cpath, &["id", "type", "function"], &[])?;
                    if co["type"] != "function" {
                        return fail(&cpath, "type must be function");
                    }
                    let fo = object(&co["function"], &cpath, &["name", "arguments"], &[])?;
                    string(fo, "name", &cpath)?;
                    string(fo, "arguments", &cpath)?;
                    pending.push(string(co, "id", &cpath)?.to_string());
                }
            }
            "tool" => {
                let mo = object(m, &path, &["role", "content", "tool_call_id"], &[])?;
                openai_text(&mo["content"], &format!("{path}.content"))?;
                let id = string(mo, "tool_call_id", &path)?;
                let Some(at) = pending.iter().position(|p| p == id) else {
                    return fail(&path, format!("answers {id:?}, which no pending tool call has"));
                };
                pending.remove(at);
            }
            _ => return fail(&path, "role must be system, developer, user, assistant or tool"),
        }
    }
    if !pending.is_empty() {
        return fail("messages", format!("tool calls {pending:?} were not answered"));
    }
    Ok(())
}
