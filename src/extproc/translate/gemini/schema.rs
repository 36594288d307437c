//! JSON Schema (OpenAI tool parameters and response formats) to the OpenAPI subset Gemini takes
//! (its `Schema`: upper-case `type`, `nullable`, `anyOf`, and a fixed list of keywords).
//!
//! Local `$ref`s are inlined (a schema that refers to itself cannot be, and is refused); a type
//! list with `null`, or an `anyOf` branch of type null, becomes `nullable`; `oneOf` becomes
//! `anyOf` and a one-schema `allOf` is inlined. Keywords Gemini does not know are left out
//! (`additionalProperties`, `$schema`, `$defs`, `not`, `patternProperties`, non-string `enum`s,
//! formats other than the ones it documents): they constrain an answer but do not shape it.

use serde_json::{Map, Value, json};

use crate::extproc::translate::TranslateError;

/// Schemas nest at most this deep once inlined: the conversion recurses, and a request must not
/// be able to exhaust the stack.
const MAX_DEPTH: usize = 64;

/// At most this many schemas once inlined: `$ref`s can multiply a small schema without bound.
const MAX_NODES: usize = 10_000;

/// Keywords copied as they are, when of the type Gemini wants.
const STRINGS: [&str; 3] = ["title", "description", "pattern"];
const COUNTS: [&str; 6] =
    ["minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"];
const NUMBERS: [&str; 2] = ["minimum", "maximum"];
const FORMATS: [&str; 6] = ["enum", "date-time", "float", "double", "int32", "int64"];

/// `schema` (found at `what` in the request) in Gemini's form.
pub fn to_gemini(schema: &Value, what: &str) -> Result<Value, TranslateError> {
    let mut c = Converter { root: schema, what, refs: Vec::new(), nodes: 0 };
    c.convert(schema, 0).map(Value::Object)
}

struct Converter<'a> {
    root: &'a Value,
    what: &'a str,
    /// The `$ref`s being inlined, outermost first.
    refs: Vec<&'a str>,
    nodes: usize,
}

impl<'a> Converter<'a> {
    fn unsupported(&self, why: impl std::fmt::Display) -> TranslateError {
        TranslateError::Unsupported(format!("{}: {why}", self.what))
    }

    fn invalid(&self, why: impl std::fmt::Display) -> TranslateError {
        TranslateError::InvalidRequest(format!("{}: {why}", self.what))
    }

    fn convert(
        &mut self,
        s: &'a Value,
        depth: usize,
    ) -> Result<Map<String, Value>, TranslateError> {
        self.nodes += 1;
        if depth > MAX_DEPTH || self.nodes > MAX_NODES {
            return Err(self.unsupported(format!(
                "the schema is too large for a Gemini backend once its $refs are inlined (at \
                 most {MAX_NODES} schemas, {MAX_DEPTH} deep)"
            )));
        }
        let o = match s {
            Value::Object(o) => o,
            // `true` allows anything.
            Value::Bool(true) => return Ok(Map::new()),
            _ => return Err(self.invalid("a schema must be an object")),
        };
        if let Some(r) = o.get("$ref") {
            return self.inline(r, o, depth);
        }
        let mut out = Map::new();
        match o.get("type") {
            None => {}
            Some(Value::String(t)) => set_type(&mut out, t, self)?,
            Some(Value::Array(types)) => {
                let mut named = Vec::new();
                for t in types {
                    match t.as_str() {
                        Some("null") => {
                            out.insert("nullable".into(), json!(true));
                        }
                        Some(t) => named.push(t),
                        None => return Err(self.invalid("\"type\" must name JSON types")),
                    }
                }
                match named[..] {
                    [] => {}
                    [t] => set_type(&mut out, t, self)?,
                    _ => {
                        let mut any = Vec::new();
                        for t in named {
                            let mut branch = Map::new();
                            set_type(&mut branch, t, self)?;
                            any.push(Value::Object(branch));
                        }
                        out.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            Some(_) => return Err(self.invalid("\"type\" must be a string or an array")),
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = o.get(key) {
                self.any_of(branches, &mut out, depth)?;
            }
        }
        if let Some(all) = o.get("allOf") {
            match all.as_array().map(Vec::as_slice) {
                Some([only]) => {
                    let inner = self.convert(only, depth + 1)?;
                    merge(&mut out, inner);
                }
                _ => {
                    return Err(self.unsupported(
                        "an \"allOf\" of more than one schema cannot be sent to a Gemini backend",
                    ));
                }
            }
        }
        if let Some(properties) = o.get("properties") {
            let Value::Object(properties) = properties else {
                return Err(self.invalid("\"properties\" must be an object"));
            };
            let mut converted = Map::new();
            for (name, p) in properties {
                converted.insert(name.clone(), Value::Object(self.convert(p, depth + 1)?));
            }
            if !converted.is_empty() {
                let required: Vec<Value> = o
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|r| r.as_str().is_some_and(|r| converted.contains_key(r)))
                    .cloned()
                    .collect();
                out.insert("properties".into(), Value::Object(converted));
                if !required.is_empty() {
                    out.insert("required".into(), Value::Array(required));
                }
            }
        }
        match o.get("items") {
            None | Some(Value::Bool(true)) => {}
            Some(items @ Value::Object(_)) => {
                out.insert("items".into(), Value::Object(self.convert(items, depth + 1)?));
            }
            Some(_) => {
                return Err(self.unsupported(
                    "tuple \"items\" (an array of schemas) cannot be sent to a Gemini backend",
                ));
            }
        }
        // Gemini's enums are of strings.
        let values = match (o.get("enum"), o.get("const")) {
            (Some(Value::Array(values)), _) if values.iter().all(Value::is_string) => {
                Some(Value::Array(values.clone()))
            }
            (None, Some(c @ Value::String(_))) => Some(json!([c])),
            _ => None,
        };
        if let Some(values) = values {
            out.entry("type").or_insert(json!("STRING"));
            out.insert("enum".into(), values);
        }
        if let Some(f) = o.get("format").and_then(Value::as_str).filter(|f| FORMATS.contains(f)) {
            out.insert("format".into(), json!(f));
        }
        for key in STRINGS {
            if let Some(v) = o.get(key).filter(|v| v.is_string()) {
                out.insert(key.into(), v.clone());
            }
        }
        for key in COUNTS {
            if let Some(v) = o.get(key).filter(|v| v.is_u64()) {
                out.insert(key.into(), v.clone());
            }
        }
        for key in NUMBERS {
            if let Some(v) = o.get(key).filter(|v| v.is_number()) {
                out.insert(key.into(), v.clone());
            }
        }
        if let Some(v) = o.get("default") {
            out.insert("default".into(), v.clone());
        }
        if o.get("nullable") == Some(&json!(true)) {
            out.insert("nullable".into(), json!(true));
        }
        Ok(out)
    }

    /// The schema a local `$ref` points at, in place of the reference; a `description` or
    /// `title` beside the reference wins over the target's.
    fn inline(
        &mut self,
        r: &'a Value,
        beside: &'a Map<String, Value>,
        depth: usize,
    ) -> Result<Map<String, Value>, TranslateError> {
        let Some(r) = r.as_str() else {
            return Err(self.invalid("\"$ref\" must be a string"));
        };
        let Some(pointer) = r.strip_prefix('#') else {
            return Err(self.unsupported(format!(
                "$ref {r:?} is not within the schema; only local references can be inlined"
            )));
        };
        if self.refs.contains(&r) {
            return Err(self.unsupported(format!(
                "the schema refers to itself through {r:?}, and a Gemini backend takes no \
                 recursive schemas"
            )));
        }
        let target = self
            .root
            .pointer(pointer)
            .ok_or_else(|| self.invalid(format!("$ref {r:?} points at nothing")))?;
        self.refs.push(r);
        let mut out = self.convert(target, depth + 1)?;
        self.refs.pop();
        for key in ["title", "description"] {
            if let Some(v) = beside.get(key).filter(|v| v.is_string()) {
                out.insert(key.into(), v.clone());
            }
        }
        Ok(out)
    }

    /// `anyOf` (or `oneOf`) branches: a `null` branch makes the schema nullable, and a single
    /// branch left is the schema itself.
    fn any_of(
        &mut self,
        branches: &'a Value,
        out: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), TranslateError> {
        let Value::Array(branches) = branches else {
            return Err(self.invalid("\"anyOf\" and \"oneOf\" must be arrays of schemas"));
        };
        let mut kept = Vec::new();
        for b in branches {
            let converted = self.convert(b, depth + 1)?;
            if converted.get("type") == Some(&json!("NULL")) && converted.len() == 1 {
                out.insert("nullable".into(), json!(true));
            } else {
                kept.push(converted);
            }
        }
        if kept.len() == 1 && !out.contains_key("type") && !out.contains_key("anyOf") {
            merge(out, kept.remove(0));
        } else if !kept.is_empty() {
            out.insert("anyOf".into(), Value::Array(kept.into_iter().map(Value::Object).collect()));
        }
        Ok(())
    }
}

fn set_type(
    out: &mut Map<String, Value>,
    t: &str,
    c: &Converter<'_>,
) -> Result<(), TranslateError> {
    let upper = match t {
        "string" => "STRING",
        "number" => "NUMBER",
        "integer" => "INTEGER",
        "boolean" => "BOOLEAN",
        "array" => "ARRAY",
        "object" => "OBJECT",
        "null" => "NULL",
        other => return Err(c.invalid(format!("{other:?} is not a JSON Schema type"))),
    };
    out.insert("type".into(), json!(upper));
    Ok(())
}

/// Adds `inner`'s keywords to `out`, keeping what `out` has.
fn merge(out: &mut Map<String, Value>, inner: Map<String, Value>) {
    for (k, v) in inner {
        out.entry(k).or_insert(v);
    }
}
