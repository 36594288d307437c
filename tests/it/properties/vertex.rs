//! Translation to GCP Vertex AI on generated input: any valid OpenAI chat or Anthropic messages
//! request becomes a body Vertex accepts (Gemini's `generateContent`, Anthropic's `rawPredict`;
//! checked against the strict shapes in `gemini_shape.rs`); request-shaped JSON never panics;
//! and a Gemini response or stream translates to the same bytes however it is split.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    Endpoint, Target, TranslateError, VertexLocation, parse_request, translate_request,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::gemini_shape::{gemini_generate_content, vertex_anthropic};
use super::translate::{
    Block, anthropic_request, assert_events_are_json, blocks, json_ish, openai_request, run, sse,
};

const LOCATION: VertexLocation<'static> = VertexLocation { project: "p", region: "us-east5" };

fn translated(endpoint: Endpoint, client: &Value, backend: APISchema) -> Value {
    let schema = VersionedAPISchema { name: backend, version: None, prefix: None };
    let bytes = serde_json::to_vec(client).unwrap();
    let parsed = parse_request(endpoint, &bytes).unwrap_or_else(|e| panic!("{e}: {client:#}"));
    let out = translate_request(&parsed, Target::new(&schema).in_vertex(LOCATION), None)
        .unwrap_or_else(|e| panic!("a valid request was refused: {e}\n{client:#}"));
    serde_json::from_slice(&out.body).unwrap()
}

fn accepted(check: fn(&Value) -> Result<(), String>, endpoint: Endpoint, client: &Value) {
    for (backend, check) in [
        (APISchema::GCPVertexAI, check),
        (APISchema::GCPAnthropic, vertex_anthropic as fn(&Value) -> _),
    ] {
        let sent = translated(endpoint, client, backend);
        if let Err(e) = check(&sent) {
            panic!("Vertex would reject it: {e}\nsent: {sent:#}\nclient sent: {client:#}");
        }
    }
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated OpenAI chat requests: what Gemini and Anthropic on Vertex get is valid.
    #[test]
    fn valid_chat_requests_translate_to_valid_vertex_requests(client in openai_request()) {
        accepted(gemini_generate_content, Endpoint::ChatCompletions, &client);
    }

    /// 256 generated Anthropic messages requests: what Gemini and Anthropic on Vertex get is
    /// valid.
    #[test]
    fn valid_messages_requests_translate_to_valid_vertex_requests(client in anthropic_request()) {
        accepted(gemini_generate_content, Endpoint::Messages, &client);
    }
}

proptest! {
    #![proptest_config(super::config(512))]

    /// 512 request-shaped JSON values under both client endpoints to both Vertex schemas: a
    /// body, or a client error (400/422), never a panic.
    #[test]
    fn arbitrary_json_requests_never_panic(mut body in json_ish(), messages in json_ish()) {
        if let Value::Object(o) = &mut body {
            o.insert("model".into(), json!("m"));
            o.entry("messages").or_insert(messages);
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages, Endpoint::Embeddings] {
            let Ok(parsed) = parse_request(endpoint, &bytes) else { continue };
            for name in [APISchema::GCPVertexAI, APISchema::GCPAnthropic] {
                let schema = VersionedAPISchema { name, version: None, prefix: None };
                match translate_request(&parsed, Target::new(&schema).in_vertex(LOCATION), None) {
                    Ok(out) => {
                        let _: Value = serde_json::from_slice(&out.body).expect("a translated body is JSON");
                    }
                    Err(e) => prop_assert!(
                        matches!(e, TranslateError::InvalidRequest(_) | TranslateError::Unsupported(_)),
                        "{:?}", e
                    ),
                }
            }
        }
    }
}

fn parts(blocks: &[Block], whole: bool) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for b in blocks {
        match b {
            Block::Text(pieces) if whole => out.push(vec![json!({"text": pieces.concat()})]),
            Block::Text(pieces) => out.extend(pieces.iter().map(|p| vec![json!({"text": p})])),
            Block::Tool(name, pieces) => {
                let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
                out.push(vec![json!({"functionCall": {"name": name, "args": args}})]);
            }
        }
    }
    out
}

const USAGE: &str = r#"{"promptTokenCount":7,"candidatesTokenCount":12,"totalTokenCount":19}"#;

fn gemini_stream(blocks: &[Block], crlf: bool) -> String {
    let mut out = String::new();
    for p in parts(blocks, false) {
        let chunk = json!({"candidates": [{"content": {"role": "model", "parts": p}}], "modelVersion": "gemini", "responseId": "r1"});
        out.push_str(&sse(None, &chunk, crlf));
    }
    let usage: Value = serde_json::from_str(USAGE).unwrap();
    let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
                      "usageMetadata": usage, "modelVersion": "gemini", "responseId": "r1"});
    out.push_str(&sse(None, &last, crlf));
    out
}

fn gemini_json(blocks: &[Block]) -> String {
    let parts: Vec<Value> = parts(blocks, true).into_iter().flatten().collect();
    let usage: Value = serde_json::from_str(USAGE).unwrap();
    json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
           "usageMetadata": usage, "modelVersion": "gemini", "responseId": "r1"})
    .to_string()
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated Gemini responses, streamed and whole, complete or cut off at any byte,
    /// for both clients: the same bytes, usage and verdict whether the body arrives in one
    /// piece or cut at up to 8 random points.
    #[test]
    fn gemini_responses_translate_the_same_however_they_are_split(
        blocks in blocks(),
        crlf in prop::bool::ANY,
        include_usage in prop::bool::ANY,
        cut_off in prop::option::weighted(0.25, any::<prop::sample::Index>()),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
            for stream in [true, false] {
                let mut body =
                    if stream { gemini_stream(&blocks, crlf) } else { gemini_json(&blocks) }.into_bytes();
                if let Some(at) = &cut_off {
                    body.truncate(at.index(body.len()));
                }
                let backend = APISchema::GCPVertexAI;
                let whole = run(endpoint, backend, stream, include_usage, &body, &[]);
                let split = run(endpoint, backend, stream, include_usage, &body, &cuts);
                prop_assert_eq!(
                    (&whole.0, whole.1.as_ref().ok()),
                    (&split.0, split.1.as_ref().ok()),
                    "{:?}, stream {}", endpoint, stream
                );
                prop_assert_eq!(whole.1.is_err(), split.1.is_err());
                if stream {
                    assert_events_are_json(&whole.0);
                    if cut_off.is_none() {
                        let (usage, truncated) = whole.1.as_ref().expect("a whole stream translates");
                        prop_assert_eq!((usage.input, usage.output, *truncated), (7, 12, false));
                    }
                } else if cut_off.is_none() {
                    let v: Value = serde_json::from_slice(&whole.0).expect("a whole JSON body translates to JSON");
                    prop_assert!(v.is_object());
                }
            }
        }
    }

    /// 256 corrupted Gemini responses (bytes changed, dropped or inserted) fed in random pieces
    /// to both clients' translators: an answer or an error, no panic.
    #[test]
    fn corrupted_gemini_responses_never_panic(
        blocks in blocks(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for mut body in [gemini_stream(&blocks, true).into_bytes(), gemini_json(&blocks).into_bytes()] {
            for (at, byte, op) in &edits {
                let i = at.index(body.len() + 1);
                match op {
                    0 if i < body.len() => body[i] = *byte,
                    1 if i < body.len() => { body.remove(i); }
                    _ => body.insert(i, *byte),
                }
            }
            for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
                for stream in [true, false] {
                    let _ = run(endpoint, APISchema::GCPVertexAI, stream, true, &body, &cuts);
                }
            }
        }
    }
}

// ---- the validators bite ----

#[test]
fn the_gemini_shape_rejects_what_vertex_rejects() {
    let ok = json!({
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "x"}}}]}
        ],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}
    });
    assert_eq!(gemini_generate_content(&ok), Ok(()));
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        edit(&mut v);
        gemini_generate_content(&v).expect_err(&v.to_string())
    };
    assert!(broken(&|v| v["model"] = json!("g")).contains("unknown field \"model\""));
    assert!(broken(&|v| v["contents"][0]["role"] = json!("assistant")).contains("alternate"));
    assert!(
        broken(&|v| v["contents"][0]["parts"][0]["text"] = json!(" ")).contains("non-whitespace")
    );
    assert!(
        broken(&|v| v["contents"][2]["parts"][0]["functionResponse"]["name"] = json!("g"))
            .contains("answers")
    );
    assert!(broken(&|v| v["contents"][0]["parts"][0]["functionCall"] = json!({"name": "f", "args": {}})).contains("exactly one"));
    assert!(
        broken(
            &|v| v["tools"][0]["functionDeclarations"][0]["parameters"]["additionalProperties"] =
                json!(false)
        )
        .contains("unknown field \"additionalProperties\"")
    );
    assert!(
        broken(
            &|v| v["tools"][0]["functionDeclarations"][0]["parameters"]["type"] = json!("object")
        )
        .contains("type")
    );
    assert!(
        broken(
            &|v| v["tools"][0]["functionDeclarations"][0]["parameters"]["properties"] = json!({})
        )
        .contains("not be empty")
    );
    assert!(
        broken(&|v| v["toolConfig"]["functionCallingConfig"]["mode"] = json!("AUTO"))
            .contains("needs mode ANY")
    );
    assert!(
        broken(&|v| v["generationConfig"]["stopSequences"] = json!(["a", "b", "c", "d", "e", "f"]))
            .contains("at most 5")
    );
    assert!(
        broken(&|v| v["generationConfig"]["presencePenalty"] = json!(2.0)).contains("below 2.0")
    );
    assert!(
        broken(&|v| v["generationConfig"]["responseMimeType"] = json!("text/plain"))
            .contains("responseSchema")
    );
    assert!(
        broken(&|v| {
            v.as_object_mut().unwrap().remove("tools");
        })
        .contains("needs function declarations")
    );

    let anthropic = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(vertex_anthropic(&anthropic), Ok(()));
    let mut with_model = anthropic.clone();
    with_model["model"] = json!("claude");
    assert!(vertex_anthropic(&with_model).unwrap_err().contains("model"));
    let mut without_version = anthropic;
    without_version.as_object_mut().unwrap().remove("anthropic_version");
    assert!(vertex_anthropic(&without_version).unwrap_err().contains("anthropic_version"));
}
