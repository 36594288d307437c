//! Cohere's chat API on generated input: any valid OpenAI or Anthropic chat request becomes a
//! body Cohere's v2 chat accepts (checked against the strict shape below, the rules the fake
//! Cohere server in `e2e/providers/cohere.py` enforces); arbitrary requests never panic; and a
//! Cohere answer or stream translates to the same bytes however its body is split.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    Endpoint, Target, TranslateError, parse_request, translate_request,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::api_shapes::{
    Check, array, boolean, fail, non_blank, number_in, object, positive_integer, string,
};
use super::translate::{
    Block, accepted, anthropic_request, assert_events_are_json, blocks, json_ish, openai_request,
    run, sse, translated,
};

// ---- the shape of a Cohere v2 chat request ----

/// A request body for Cohere's `POST /v2/chat`.
pub fn cohere_chat(body: &Value) -> Check {
    let o = object(
        body,
        "request",
        &["model", "messages"],
        &[
            "stream",
            "tools",
            "strict_tools",
            "documents",
            "citation_options",
            "response_format",
            "safety_mode",
            "max_tokens",
            "stop_sequences",
            "temperature",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "k",
            "p",
            "logprobs",
            "tool_choice",
            "thinking",
            "priority",
        ],
    )?;
    if string(o, "model", "request")?.is_empty() {
        return fail("model", "must not be empty");
    }
    for key in ["stream", "strict_tools", "logprobs"] {
        if let Some(v) = o.get(key) {
            boolean(v, key)?;
        }
    }
    if let Some(v) = o.get("max_tokens") {
        positive_integer(v, "max_tokens")?;
    }
    if let Some(v) = o.get("temperature") {
        number_in(v, "temperature", 0.0, f64::MAX)?;
    }
    if let Some(v) = o.get("p") {
        number_in(v, "p", 0.01, 0.99)?;
    }
    for key in ["frequency_penalty", "presence_penalty"] {
        if let Some(v) = o.get(key) {
            number_in(v, key, 0.0, 1.0)?;
        }
    }
    if o.get("seed").is_some_and(|s| s.as_i64().is_none()) {
        return fail("seed", "must be an integer");
    }
    if let Some(stops) = o.get("stop_sequences") {
        let stops = array(stops, "stop_sequences")?;
        if stops.len() > 5 {
            return fail("stop_sequences", "may hold at most 5 sequences");
        }
        if stops.iter().any(|s| s.as_str().is_none_or(str::is_empty)) {
            return fail("stop_sequences", "must be non-empty strings");
        }
    }
    let tools = match o.get("tools") {
        Some(tools) => cohere_tools(tools)?,
        None => 0,
    };
    if let Some(choice) = o.get("tool_choice") {
        if choice != "REQUIRED" && choice != "NONE" {
            return fail("tool_choice", "must be REQUIRED or NONE");
        }
        if tools == 0 {
            return fail("tool_choice", "needs tools");
        }
    }
    if let Some(format) = o.get("response_format") {
        let kind = format.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => {
                object(format, "response_format", &["type"], &[])?;
            }
            Some("json_object") => {
                let f = object(format, "response_format", &["type"], &["json_schema"])?;
                if f.get("json_schema").is_some_and(|s| !s.is_object()) {
                    return fail("response_format.json_schema", "must be an object");
                }
            }
            _ => return fail("response_format.type", "must be text or json_object"),
        }
    }
    cohere_messages(&o["messages"])
}

/// The number of tools.
fn cohere_tools(tools: &Value) -> Result<usize, String> {
    let tools = array(tools, "tools")?;
    for (i, t) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let to = object(t, &path, &["type", "function"], &[])?;
        if to["type"] != "function" {
            return fail(&path, "type must be function");
        }
        let path = format!("{path}.function");
        let f = object(&to["function"], &path, &["name"], &["description", "parameters"])?;
        if string(f, "name", &path)?.is_empty() {
            return fail(&path, "name must not be empty");
        }
        if f.get("description").is_some() {
            string(f, "description", &path)?;
        }
        if f.get("parameters").is_some_and(|p| !p.is_object()) {
            return fail(&path, "parameters must be an object");
        }
    }
    Ok(tools.len())
}

fn cohere_messages(messages: &Value) -> Check {
    let messages = array(messages, "messages")?;
    if messages.is_empty() {
        return fail("messages", "must not be empty");
    }
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str);
        if role == Some("tool") {
            let mo = object(m, &path, &["role", "tool_call_id", "content"], &[])?;
            let id = string(mo, "tool_call_id", &path)?;
            let Some(at) = open.iter().position(|o| o == id) else {
                return fail(&path, format!("tool_call_id {id:?} answers no open tool call"));
            };
            open.remove(at);
            content(&mo["content"], &path, &["text", "document"])?;
            continue;
        }
        if !open.is_empty() {
            return fail(&path, format!("tool calls {open:?} are not answered"));
        }
        match role {
            Some("system") => {
                let mo = object(m, &path, &["role", "content"], &[])?;
                content(&mo["content"], &path, &["text"])?;
            }
            Some("user") => {
                let mo = object(m, &path, &["role", "content"], &[])?;
                content(&mo["content"], &path, &["text", "image_url"])?;
            }
            Some("assistant") => {
                let mo = object(
                    m,
                    &path,
                    &["role"],
                    &["content", "tool_calls", "tool_plan", "citations"],
                )?;
                let calls = mo.get("tool_calls").map(|c| array(c, &path)).transpose()?;
                if mo.get("content").is_none() && calls.is_none_or(Vec::is_empty) {
                    return fail(&path, "an assistant message needs content or tool_calls");
                }
                if let Some(c) = mo.get("content") {
                    content(c, &path, &["text", "thinking"])?;
                }
                if mo.get("tool_plan").is_some() {
                    string(mo, "tool_plan", &path)?;
                }
                for (j, call) in calls.into_iter().flatten().enumerate() {
                    let cpath = format!("{path}.tool_calls[{j}]");
                    let co = object(call, &cpath, &["id", "type", "function"], &[])?;
                    let id = string(co, "id", &cpath)?;
                    if id.is_empty() || co["type"] != "function" {
                        return fail(&cpath, "needs an id and type function");
                    }
                    let fo = object(&co["function"], &cpath, &["name", "arguments"], &[])?;
                    string(fo, "name", &cpath)?;
                    let arguments = string(fo, "arguments", &cpath)?;
                    if serde_json::from_str::<Value>(arguments).is_err() {
                        return fail(&cpath, "arguments must be a JSON string");
                    }
                    open.push(id.to_string());
                }
            }
            _ => return fail(&path, "role must be system, user, assistant or tool"),
        }
    }
    if open.is_empty() { Ok(()) } else { fail("messages", format!("{open:?} are not answered")) }
}

/// A string with some non-whitespace, or a non-empty list of parts of the `kinds` given.
fn content(v: &Value, path: &str, kinds: &[&str]) -> Check {
    let parts = match v {
        Value::String(s) => return non_blank(s, path),
        v => array(v, path)?,
    };
    if parts.is_empty() {
        return fail(path, "content must not be empty");
    }
    for (i, p) in parts.iter().enumerate() {
        let ppath = format!("{path}.content[{i}]");
        let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if !kinds.contains(&kind) {
            return fail(&ppath, format!("type {kind:?} is not one of {kinds:?}"));
        }
        match kind {
            "text" => {
                let po = object(p, &ppath, &["type", "text"], &[])?;
                if string(po, "text", &ppath)?.is_empty() {
                    return fail(&ppath, "text must not be empty");
                }
            }
            "thinking" => {
                object(p, &ppath, &["type", "thinking"], &[])?;
            }
            "image_url" => {
                let po = object(p, &ppath, &["type", "image_url"], &[])?;
                let io = object(&po["image_url"], &ppath, &["url"], &["detail"])?;
                if string(io, "url", &ppath)?.is_empty() {
                    return fail(&ppath, "url must not be empty");
                }
            }
            _ => {
                let po = object(p, &ppath, &["type", "document"], &[])?;
                object(&po["document"], &ppath, &["data"], &["id"])?;
            }
        }
    }
    Ok(())
}

// ---- valid requests become valid Cohere requests ----

/// Cohere takes penalties in [0, 1], OpenAI in [-2, 2]; aixds passes them as given for Cohere to
/// judge (its 400 reaches the client), so the generated ones are brought into Cohere's range.
fn in_cohere_range(mut client: Value) -> Value {
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(p) = client.get(key).and_then(Value::as_f64) {
            client[key] = json!(p.clamp(0.0, 1.0));
        }
    }
    client
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated OpenAI chat requests: what a Cohere backend gets is valid for Cohere.
    #[test]
    fn valid_chat_requests_become_valid_cohere_requests(client in openai_request()) {
        let client = in_cohere_range(client);
        let sent = translated(Endpoint::ChatCompletions, &client, APISchema::Cohere);
        accepted(cohere_chat, &sent, &client);
    }

    /// 256 generated Anthropic messages requests: what a Cohere backend gets is valid for Cohere.
    #[test]
    fn valid_messages_requests_become_valid_cohere_requests(client in anthropic_request()) {
        let sent = translated(Endpoint::Messages, &client, APISchema::Cohere);
        accepted(cohere_chat, &sent, &client);
    }

    /// 512 request-shaped JSON values under every endpoint, for a Cohere backend: an answer or a
    /// client error, never a panic.
    #[test]
    fn arbitrary_requests_for_cohere_never_panic(mut body in json_ish(), messages in json_ish()) {
        if let Value::Object(o) = &mut body {
            o.insert("model".into(), json!("m"));
            o.entry("messages").or_insert(messages);
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let cohere = VersionedAPISchema { name: APISchema::Cohere, ..Default::default() };
        for endpoint in [
            Endpoint::ChatCompletions,
            Endpoint::Messages,
            Endpoint::Embeddings,
            Endpoint::Rerank,
            Endpoint::Completions,
        ] {
            let Ok(parsed) = parse_request(endpoint, &bytes) else { continue };
            match translate_request(&parsed, Target::new(&cohere), None) {
                Ok(out) => {
                    let _: Value = serde_json::from_slice(&out.body).expect("a translated body is JSON");
                }
                Err(e) => prop_assert!(
                    matches!(e, TranslateError::InvalidRequest(_) | TranslateError::Unsupported(_)),
                    "{e:?}"
                ),
            }
        }
    }
}

// ---- answers split anywhere ----

fn cohere_stream(blocks: &[Block], crlf: bool) -> String {
    let event = |data: Value| {
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        sse(Some(&kind), &data, crlf)
    };
    let mut out = event(json!({"id": "c-1", "type": "message-start", "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}));
    let (mut text_index, mut tool_index) = (0, 0);
    for b in blocks {
        match b {
            Block::Text(pieces) => {
                out.push_str(&event(json!({"type": "content-start", "index": text_index,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                for p in pieces {
                    out.push_str(&event(json!({"type": "content-delta", "index": text_index,
                        "delta": {"message": {"content": {"text": p}}}})));
                }
                out.push_str(&event(json!({"type": "content-end", "index": text_index})));
                text_index += 1;
            }
            Block::Tool(name, pieces) => {
                out.push_str(&event(json!({"type": "tool-call-start", "index": tool_index,
                    "delta": {"message": {"tool_calls": {"id": format!("{name}_{tool_index}"),
                        "type": "function", "function": {"name": name, "arguments": ""}}}}})));
                for p in pieces {
                    out.push_str(&event(json!({"type": "tool-call-delta", "index": tool_index,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}}})));
                }
                out.push_str(&event(json!({"type": "tool-call-end", "index": tool_index})));
                tool_index += 1;
            }
        }
    }
    let finish = if tool_index > 0 { "TOOL_CALL" } else { "COMPLETE" };
    out.push_str(&event(json!({"type": "message-end", "delta": {"finish_reason": finish,
        "usage": {"billed_units": {"input_tokens": 7, "output_tokens": 12},
                  "tokens": {"input_tokens": 300, "output_tokens": 12}}}})));
    out
}

fn cohere_json(blocks: &[Block]) -> String {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content: Vec<Value> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(p) => Some(json!({"type": "text", "text": p.concat()})),
            Block::Tool(..) => None,
        })
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match b {
            Block::Tool(name, p) => Some(json!({"id": format!("{name}_{i}"), "type": "function",
                "function": {"name": name, "arguments": p.concat()}})),
            Block::Text(_) => None,
        })
        .collect();
    let finish = if calls.is_empty() { "COMPLETE" } else { "TOOL_CALL" };
    if !content.is_empty() {
        message.insert("content".into(), Value::from(content));
    }
    if !calls.is_empty() {
        message.insert("tool_plan".into(), json!("I will call tools."));
        message.insert("tool_calls".into(), Value::from(calls));
    }
    json!({"id": "c-1", "finish_reason": finish, "message": message,
           "usage": {"billed_units": {"input_tokens": 7, "output_tokens": 12},
                     "tokens": {"input_tokens": 300, "output_tokens": 12}}})
    .to_string()
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated Cohere answers, streamed and whole, complete or cut off at any byte, to
    /// OpenAI and Anthropic clients: the same bytes, usage and verdict whether the body arrives
    /// whole or cut at up to 8 random points; Cohere's billed tokens are the usage.
    #[test]
    fn cohere_answers_translate_the_same_however_they_are_split(
        blocks in blocks(),
        crlf in prop::bool::ANY,
        include_usage in prop::bool::ANY,
        cut_off in prop::option::weighted(0.25, any::<prop::sample::Index>()),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
            for stream in [true, false] {
                let mut body = if stream { cohere_stream(&blocks, crlf) } else { cohere_json(&blocks) }
                    .into_bytes();
                if let Some(at) = &cut_off {
                    body.truncate(at.index(body.len()));
                }
                let whole = run(endpoint, APISchema::Cohere, stream, include_usage, &body, &[]);
                let split = run(endpoint, APISchema::Cohere, stream, include_usage, &body, &cuts);
                prop_assert_eq!(
                    (&whole.0, whole.1.as_ref().ok()),
                    (&split.0, split.1.as_ref().ok()),
                    "{:?}, stream {}", endpoint, stream
                );
                prop_assert_eq!(whole.1.is_err(), split.1.is_err());
                if stream {
                    assert_events_are_json(&whole.0);
                }
                if cut_off.is_none() {
                    let (usage, truncated) = whole.1.as_ref().expect("a whole answer translates");
                    prop_assert_eq!((usage.input, usage.output, *truncated), (7, 12, false));
                    if !stream {
                        let v: Value = serde_json::from_slice(&whole.0).expect("JSON");
                        prop_assert!(v.is_object());
                    }
                }
            }
        }
    }
}

// ---- the validator bites ----

#[test]
fn the_cohere_shape_rejects_what_cohere_rejects() {
    let ok = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(cohere_chat(&ok), Ok(()));
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        edit(&mut v);
        cohere_chat(&v).expect_err(&v.to_string())
    };
    assert!(broken(&|v| v["top_p"] = json!(0.5)).contains("unknown field \"top_p\""));
    assert!(broken(&|v| v["p"] = json!(1.0)).contains("p"));
    assert!(broken(&|v| v["presence_penalty"] = json!(-0.5)).contains("presence_penalty"));
    assert!(broken(&|v| v["tool_choice"] = json!("REQUIRED")).contains("needs tools"));
    assert!(
        broken(&|v| v["stop_sequences"] = json!(["a", "b", "c", "d", "e", "f"]))
            .contains("at most 5")
    );
    assert!(
        broken(&|v| v["response_format"] = json!({"type": "json_schema"})).contains("json_object")
    );
    assert!(broken(&|v| v["messages"][0]["name"] = json!("ann")).contains("unknown field"));
    assert!(broken(&|v| v["messages"][0]["content"] = json!(" ")).contains("non-whitespace"));
    assert!(broken(&|v| v["messages"][0]["role"] = json!("developer")).contains("role"));
    assert!(
        broken(&|v| v["messages"] =
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]))
        .contains("non-whitespace")
    );
    assert!(broken(&|v| v["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "no result"},
    ])).contains("not answered"));
    assert!(
        broken(&|v| v["messages"] = json!([
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "c9", "content": "x"},
        ]))
        .contains("answers no open tool call")
    );
    assert!(broken(&|v| v["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ])).contains("non-whitespace"));
}
