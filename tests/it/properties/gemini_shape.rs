//! A strict check of request bodies against Vertex AI's documented `generateContent` request
//! (`GenerateContentRequest`: `Content`, `Part`, `Tool`, `FunctionDeclaration`, `Schema`,
//! `ToolConfig`, `GenerationConfig`), and of Anthropic's messages body as Vertex's `rawPredict`
//! takes it. Stricter than Google where the documentation is vague: unknown fields are rejected,
//! turns must alternate, and a schema holds only the keywords of Gemini's OpenAPI subset.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::api_shapes::{
    Check, anthropic_messages, array, boolean, fail, non_blank, number_in, object,
    positive_integer, string,
};

const SCHEMA_KEYS: [&str; 22] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "default",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "properties",
    "propertyOrdering",
    "required",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
];
const TYPES: [&str; 7] = ["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"];

/// A request body for Vertex AI's `…/publishers/google/models/{model}:generateContent` (and
/// `:streamGenerateContent`, which takes the same).
pub fn gemini_generate_content(body: &Value) -> Check {
    let o = object(
        body,
        "request",
        &["contents"],
        &[
            "systemInstruction",
            "tools",
            "toolConfig",
            "generationConfig",
            "safetySettings",
            "labels",
            "cachedContent",
        ],
    )?;
    contents(&o["contents"])?;
    if let Some(system) = o.get("systemInstruction") {
        let so = object(system, "systemInstruction", &["parts"], &["role"])?;
        let parts = array(&so["parts"], "systemInstruction.parts")?;
        if parts.is_empty() {
            return fail("systemInstruction.parts", "must not be empty");
        }
        for (i, p) in parts.iter().enumerate() {
            let path = format!("systemInstruction.parts[{i}]");
            let po = object(p, &path, &["text"], &[])?;
            non_blank(string(po, "text", &path)?, &path)?;
        }
    }
    let names = match o.get("tools") {
        Some(tools) => declarations(tools)?,
        None => BTreeSet::new(),
    };
    if let Some(config) = o.get("toolConfig") {
        tool_config(config, &names)?;
    }
    if let Some(config) = o.get("generationConfig") {
        generation_config(config)?;
    }
    Ok(())
}

/// Turns alternate between user and model, the first is the user's; a model turn that calls
/// functions comes after a user turn, and the next turn answers every call, by name.
fn contents(v: &Value) -> Check {
    let turns = array(v, "contents")?;
    if turns.is_empty() {
        return fail("contents", "must not be empty");
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let path = format!("contents[{i}]");
        let to = object(t, &path, &["role", "parts"], &[])?;
        let role = string(to, "role", &path)?;
        let expected = if i % 2 == 0 { "user" } else { "model" };
        if role != expected {
            return fail(&path, format!("role {role:?} where turns alternate to {expected:?}"));
        }
        let parts = array(&to["parts"], &format!("{path}.parts"))?;
        if parts.is_empty() {
            return fail(&path, "parts must not be empty");
        }
        let mut calls = Vec::new();
        let mut answered = Vec::new();
        for (j, p) in parts.iter().enumerate() {
            let ppath = format!("{path}.parts[{j}]");
            let (kind, data) = part(p, &ppath)?;
            match (role, kind) {
                (_, "text") => non_blank(data.as_str().unwrap_or_default(), &ppath)?,
                ("user", "inlineData") => {
                    let d = object(data, &ppath, &["mimeType", "data"], &[])?;
                    mime(string(d, "mimeType", &ppath)?, &ppath)?;
                    string(d, "data", &ppath)?;
                }
                ("user", "fileData") => {
                    let d = object(data, &ppath, &["mimeType", "fileUri"], &[])?;
                    mime(string(d, "mimeType", &ppath)?, &ppath)?;
                    let uri = string(d, "fileUri", &ppath)?;
                    if !["gs://", "https://", "http://"].iter().any(|s| uri.starts_with(s)) {
                        return fail(&ppath, "fileUri must be a gs:// or http(s) URI");
                    }
                }
                ("model", "functionCall") => {
                    let d = object(data, &ppath, &["name", "args"], &["id"])?;
                    if !d["args"].is_object() {
                        return fail(&ppath, "args must be an object");
                    }
                    calls.push(string(d, "name", &ppath)?.to_string());
                }
                ("user", "functionResponse") => {
                    let d = object(data, &ppath, &["name", "response"], &["id"])?;
                    if !d["response"].is_object() {
                        return fail(&ppath, "response must be an object");
                    }
                    answered.push(string(d, "name", &ppath)?.to_string());
                }
                _ => return fail(&ppath, format!("a {role} turn cannot hold {kind}")),
            }
        }
        answered.sort();
        let mut called = std::mem::take(&mut pending);
        called.sort();
        if answered != called {
            return fail(&path, format!("answers {answered:?}; the turn before called {called:?}"));
        }
        pending = calls;
    }
    if !pending.is_empty() {
        return fail("contents", format!("function calls {pending:?} were not answered"));
    }
    Ok(())
}

/// The one data field of a part (`thoughtSignature` may sit beside it) and its value.
fn part<'a>(p: &'a Value, path: &str) -> Result<(&'a str, &'a Value), String> {
    const DATA: [&str; 5] = ["text", "inlineData", "fileData", "functionCall", "functionResponse"];
    let po = object(p, path, &[], &[&DATA[..], &["thoughtSignature"]].concat())?;
    let present: Vec<&str> = DATA.into_iter().filter(|k| po.contains_key(*k)).collect();
    match present[..] {
        [one] => Ok((one, &po[one])),
        _ => fail(path, format!("must hold exactly one of {DATA:?}, not {present:?}")),
    }
}

fn mime(m: &str, path: &str) -> Check {
    match m.split_once('/') {
        Some((kind, sub)) if !kind.is_empty() && !sub.is_empty() => Ok(()),
        _ => fail(path, format!("{m:?} is not a MIME type")),
    }
}

fn declarations(tools: &Value) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for (i, t) in array(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let to = object(t, &path, &["functionDeclarations"], &[])?;
        for (j, d) in array(&to["functionDeclarations"], &path)?.iter().enumerate() {
            let dpath = format!("{path}.functionDeclarations[{j}]");
            let d = object(d, &dpath, &["name"], &["description", "parameters"])?;
            let name = string(d, "name", &dpath)?;
            let valid = name.len() <= 64
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
            if !valid {
                return fail(&dpath, format!("{name:?} is not a valid function name"));
            }
            if !names.insert(name.to_string()) {
                return fail(&dpath, format!("function {name:?} is declared twice"));
            }
            if d.get("description").is_some_and(|v| !v.is_string()) {
                return fail(&dpath, "description must be a string");
            }
            if let Some(p) = d.get("parameters") {
                schema(p, &format!("{dpath}.parameters"))?;
            }
        }
    }
    Ok(names)
}

/// Gemini's `Schema`: its keywords only, upper-case types, string enums, `required` naming
/// properties, and an object that lists properties lists at least one.
pub fn schema(v: &Value, path: &str) -> Check {
    let o = object(v, path, &[], &SCHEMA_KEYS)?;
    if let Some(t) = o.get("type")
        && !t.as_str().is_some_and(|t| TYPES.contains(&t))
    {
        return fail(path, format!("type {t} is not one of {TYPES:?}"));
    }
    if let Some(n) = o.get("nullable") {
        boolean(n, &format!("{path}.nullable"))?;
    }
    for key in ["enum", "required", "propertyOrdering"] {
        if let Some(list) = o.get(key)
            && array(list, &format!("{path}.{key}"))?.iter().any(|s| !s.is_string())
        {
            return fail(path, format!("{key} must hold strings"));
        }
    }
    let properties: Map<String, Value> = match o.get("properties") {
        Some(Value::Object(p)) if p.is_empty() => {
            return fail(path, "properties must not be empty for an OBJECT");
        }
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return fail(path, "properties must be an object"),
        None => Map::new(),
    };
    for (name, p) in &properties {
        schema(p, &format!("{path}.properties.{name}"))?;
    }
    for r in o.get("required").and_then(Value::as_array).into_iter().flatten() {
        if !properties.contains_key(r.as_str().unwrap_or_default()) {
            return fail(path, format!("required {r} is not a property"));
        }
    }
    if let Some(items) = o.get("items") {
        schema(items, &format!("{path}.items"))?;
    }
    if let Some(any) = o.get("anyOf") {
        for (k, s) in array(any, &format!("{path}.anyOf"))?.iter().enumerate() {
            schema(s, &format!("{path}.anyOf[{k}]"))?;
        }
    }
    Ok(())
}

fn tool_config(config: &Value, names: &BTreeSet<String>) -> Check {
    let path = "toolConfig";
    if names.is_empty() {
        return fail(path, "needs function declarations");
    }
    let co = object(config, path, &["functionCallingConfig"], &[])?;
    let fpath = "toolConfig.functionCallingConfig";
    let fo = object(&co["functionCallingConfig"], fpath, &["mode"], &["allowedFunctionNames"])?;
    let mode = string(fo, "mode", fpath)?;
    if !["AUTO", "ANY", "NONE"].contains(&mode) {
        return fail(fpath, format!("mode {mode:?} is not AUTO, ANY or NONE"));
    }
    if let Some(allowed) = fo.get("allowedFunctionNames") {
        if mode != "ANY" {
            return fail(fpath, "allowedFunctionNames needs mode ANY");
        }
        for n in array(allowed, fpath)? {
            if !n.as_str().is_some_and(|n| names.contains(n)) {
                return fail(fpath, format!("{n} is not a declared function"));
            }
        }
    }
    Ok(())
}

fn generation_config(config: &Value) -> Check {
    let path = "generationConfig";
    let o = object(
        config,
        path,
        &[],
        &[
            "temperature",
            "topP",
            "topK",
            "candidateCount",
            "maxOutputTokens",
            "stopSequences",
            "presencePenalty",
            "frequencyPenalty",
            "seed",
            "responseMimeType",
            "responseSchema",
        ],
    )?;
    let at = |key: &str| format!("{path}.{key}");
    if let Some(v) = o.get("temperature") {
        number_in(v, &at("temperature"), 0.0, 2.0)?;
    }
    if let Some(v) = o.get("topP") {
        number_in(v, &at("topP"), 0.0, 1.0)?;
    }
    for key in ["presencePenalty", "frequencyPenalty"] {
        // From -2.0 up to, but not including, 2.0.
        if let Some(v) = o.get(key) {
            number_in(v, &at(key), -2.0, 2.0)?;
            if v.as_f64() == Some(2.0) {
                return fail(&at(key), "must be below 2.0");
            }
        }
    }
    for key in ["topK", "maxOutputTokens"] {
        if let Some(v) = o.get(key) {
            positive_integer(v, &at(key))?;
        }
    }
    if let Some(v) = o.get("candidateCount")
        && !v.as_u64().is_some_and(|n| (1..=8).contains(&n))
    {
        return fail(&at("candidateCount"), "must be an integer from 1 to 8");
    }
    if let Some(v) = o.get("seed")
        && !v.is_i64()
    {
        return fail(&at("seed"), "must be an integer");
    }
    if let Some(v) = o.get("stopSequences") {
        let stops = array(v, &at("stopSequences"))?;
        if stops.len() > 5 {
            return fail(&at("stopSequences"), "at most 5");
        }
        if stops.iter().any(|s| s.as_str().is_none_or(|s| s.is_empty())) {
            return fail(&at("stopSequences"), "must hold non-empty strings");
        }
    }
    let mime = o.get("responseMimeType").map(|m| m.as_str().unwrap_or_default());
    if let Some(m) = mime
        && !["text/plain", "application/json", "text/x.enum"].contains(&m)
    {
        return fail(&at("responseMimeType"), format!("{m:?} is not a supported type"));
    }
    if let Some(s) = o.get("responseSchema") {
        if !matches!(mime, Some("application/json" | "text/x.enum")) {
            return fail(path, "a responseSchema needs responseMimeType application/json");
        }
        schema(s, &at("responseSchema"))?;
    }
    Ok(())
}

/// A body for `…/publishers/anthropic/models/{model}:rawPredict`: Anthropic's messages body
/// with `anthropic_version` and without `model` (the path names it).
pub fn vertex_anthropic(body: &Value) -> Check {
    let Value::Object(o) = body else { return fail("request", "must be an object") };
    if o.contains_key("model") {
        return fail("request", "unknown field \"model\" (the path names the model)");
    }
    if !o.get("anthropic_version").is_some_and(Value::is_string) {
        return fail("request", "\"anthropic_version\" is required");
    }
    let mut messages = o.clone();
    messages.remove("anthropic_version");
    messages.insert("model".into(), Value::String("from-the-path".into()));
    anthropic_messages(&Value::Object(messages))
}
