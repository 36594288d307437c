//! The translation library against request/response fixtures per schema pair, streams split at
//! every byte, bad input, and random bytes.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    ClientSchema, Endpoint, ParsedRequest, ResponseTranslator, Target, TranslateError, Usage,
    VertexLocation, error_body, parse_request, passthrough_path, read_head, response_translator,
    translate_error, translate_request,
};
use serde_json::{Value, json};

const ANTHROPIC_STREAM: &str = include_str!("../fixtures/translate/anthropic_stream.sse");
const OPENAI_STREAM: &str = include_str!("../fixtures/translate/openai_stream.sse");
pub(crate) const CREATED: u64 = 1_700_000_000;

pub(super) fn backend(name: APISchema) -> VersionedAPISchema {
    VersionedAPISchema { name, version: None, prefix: None }
}

pub(crate) fn parse(endpoint: Endpoint, body: &Value) -> ParsedRequest {
    parse_request(endpoint, body.to_string().as_bytes()).expect("fixture parses")
}

fn translate(endpoint: Endpoint, body: Value, to: APISchema) -> (String, Value) {
    let t = translate_request(&parse(endpoint, &body), Target::new(&backend(to)), None)
        .expect("translates");
    (t.path, serde_json::from_slice(&t.body).expect("translated body is JSON"))
}

pub(crate) fn translator(
    endpoint: Endpoint,
    backend: APISchema,
    stream: bool,
) -> ResponseTranslator {
    response_translator(endpoint, backend, stream).with_created(CREATED)
}

/// Feeds `input` in two pieces split at `at`, returning all output.
fn feed_split(mut t: ResponseTranslator, input: &[u8], at: usize) -> Vec<u8> {
    let (a, b) = input.split_at(at);
    let mut out = t.feed(a, false).expect("first piece");
    out.extend(t.feed(b, true).expect("second piece"));
    out
}

pub(crate) fn feed_whole(t: &mut ResponseTranslator, input: &[u8]) -> Vec<u8> {
    t.feed(input, true).expect("whole body")
}

/// The `data:` payloads of an SSE body, `[DONE]` as a string, with the `event:` names.
pub(crate) fn sse(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = std::str::from_utf8(bytes).expect("output is UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string()));
                }
            }
            (name, data)
        })
        .collect()
}

#[test]
fn endpoints_are_recognised_from_paths() {
    assert_eq!(Endpoint::from_path("/v1/chat/completions"), Some(Endpoint::ChatCompletions));
    assert_eq!(Endpoint::from_path("/v1/chat/completions?x=1"), Some(Endpoint::ChatCompletions));
    assert_eq!(Endpoint::from_path("/v1/completions"), Some(Endpoint::Completions));
    assert_eq!(Endpoint::from_path("/v1/embeddings"), Some(Endpoint::Embeddings));
    assert_eq!(Endpoint::from_path("/v1/messages"), Some(Endpoint::Messages));
    assert_eq!(Endpoint::from_path("/anthropic/v1/messages"), Some(Endpoint::Messages));
    assert_eq!(Endpoint::from_path("/v1/models"), None);
    assert_eq!(Endpoint::from_path(""), None);
    let err = Endpoint::parse("/v2/chat").expect_err("unknown");
    assert_eq!(err.status(), 404);
    assert!(err.to_string().contains("/v1/chat/completions"), "{err}");
    assert_eq!(Endpoint::Messages.client_schema(), ClientSchema::Anthropic);
    assert_eq!(Endpoint::Embeddings.client_schema(), ClientSchema::OpenAI);
}

#[test]
fn any_path_belongs_to_one_api() {
    let anthropic = [
        "/v1/messages",
        "/v1/messages/",
        "/v1/messages?beta=true",
        "/v1/messages/count_tokens",
        "/v1/messages/batches/b1?x=1",
        "/anthropic",
        "/anthropic/v1/messages",
        "/anthropic/v1/models",
    ];
    for path in anthropic {
        assert_eq!(ClientSchema::of_path(path), ClientSchema::Anthropic, "{path}");
    }
    let openai = ["/v1/chat/completions", "/v1/responses", "/v1/messagesx", "/anthropics", "/", ""];
    for path in openai {
        assert_eq!(ClientSchema::of_path(path), ClientSchema::OpenAI, "{path}");
    }
    // A served endpoint's path says what its endpoint does.
    for path in ["/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/anthropic/v1/messages"]
    {
        let endpoint = Endpoint::from_path(path).expect("served");
        assert_eq!(ClientSchema::of_path(path), endpoint.client_schema(), "{path}");
    }
}

/// The router phase's reader on hostile bodies: nesting a million deep in a field it skips, or
/// past the parser's depth limit in `model`, a hundred thousand fields: an answer, no crash.
#[test]
fn reading_the_head_survives_deep_and_wide_bodies() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let skipped = format!(r#"{{"model": "m", "x": {}}}"#, deep(1_000_000));
    let head = read_head(Endpoint::ChatCompletions, skipped.as_bytes());
    assert!(matches!(head, Err(TranslateError::InvalidJson(_))), "{head:?}");
    // Exactly as deep as the full parser takes, a skipped field or `model` itself.
    for depth in 120..135 {
        for body in [
            format!(r#"{{"model": "m", "x": {}}}"#, deep(depth - 1)),
            format!(r#"{{"model": {}}}"#, deep(depth - 1)),
        ] {
            let full = parse_request(Endpoint::ChatCompletions, body.as_bytes()).map(|p| p.model);
            let head = read_head(Endpoint::ChatCompletions, body.as_bytes()).map(|h| h.model);
            assert_eq!(
                std::mem::discriminant(&full),
                std::mem::discriminant(&head),
                "depth {depth}: {full:?} / {head:?}"
            );
        }
    }
    let in_model = format!(r#"{{"model": {}}}"#, deep(100_000));
    assert!(matches!(
        read_head(Endpoint::ChatCompletions, in_model.as_bytes()),
        Err(TranslateError::InvalidJson(_))
    ));
    let wide: Vec<String> = (0..100_000).map(|i| format!(r#""f{i}": {i}"#)).collect();
    let wide = format!(r#"{{{}, "model": "m", "stream": true}}"#, wide.join(", "));
    let head = read_head(Endpoint::ChatCompletions, wide.as_bytes()).expect("reads");
    assert_eq!((head.model.as_str(), head.stream), ("m", true));
}

#[test]
fn bad_request_bodies_get_client_errors() {
    let invalid_json = TranslateError::InvalidJson(String::new());
    let cases: [(&[u8], TranslateError); 7] = [
        (b"{", invalid_json.clone()),
        (b"", invalid_json),
        (b"[1,2]", TranslateError::NotAnObject),
        (b"\"model\"", TranslateError::NotAnObject),
        (br#"{"messages":[]}"#, TranslateError::MissingModel),
        (br#"{"model":7}"#, TranslateError::MissingModel),
        (br#"{"model":"m","stream":"yes"}"#, TranslateError::InvalidRequest(String::new())),
    ];
    for (body, want) in cases {
        let err = parse_request(Endpoint::ChatCompletions, body).expect_err("bad body");
        let same = std::mem::discriminant(&err) == std::mem::discriminant(&want);
        assert!(same, "{:?} gave {err:?}, want {want:?}", String::from_utf8_lossy(body));
        assert_eq!(err.status(), 400);
    }
    let ok = parse_request(
        Endpoint::ChatCompletions,
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .expect("good body");
    assert_eq!((ok.model.as_str(), ok.stream, ok.include_usage), ("m", true, true));
}

#[test]
fn openai_chat_to_openai_passes_through_with_model_override_and_usage() {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 2});
    let req = parse(Endpoint::ChatCompletions, &body);
    let t = translate_request(&req, Target::new(&backend(APISchema::OpenAI)), Some("gpt-4o-mini"))
        .expect("translates");
    assert_eq!(t.path, "/v1/chat/completions");
    assert_eq!((t.model.as_str(), t.stream), ("gpt-4o-mini", true));
    let got: Value = serde_json::from_slice(&t.body).expect("JSON");
    assert_eq!(
        got,
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 2,
               "stream_options": {"include_usage": true}})
    );

    let prefixed = VersionedAPISchema {
        name: APISchema::OpenAI,
        version: None,
        prefix: Some("/v1beta/openai/".into()),
    };
    let t = translate_request(&req, Target::new(&prefixed), None).expect("translates");
    assert_eq!(t.path, "/v1beta/openai/chat/completions");

    let no_stream = parse(Endpoint::ChatCompletions, &json!({"model": "m", "messages": []}));
    let t = translate_request(&no_stream, Target::new(&backend(APISchema::OpenAI)), None)
        .expect("translates");
    assert_eq!(
        serde_json::from_slice::<Value>(&t.body).expect("JSON"),
        json!({"model": "m", "messages": []})
    );
}

/// The upstream phase leaves a body with Envoy exactly where `passthrough_path` says so: there,
/// translating gives that path and the body as sent; everywhere else it changes the body (or the
/// answer depends on it), so `passthrough_path` must say no.
#[test]
fn passthrough_is_exactly_where_translation_leaves_the_body_alone() {
    let vertex = VertexLocation { project: "p", region: "us-east5" };
    let mut passed = 0;
    for schema in APISchema::ALL {
        let versioned =
            VersionedAPISchema { name: schema, version: None, prefix: Some("/v2/".into()) };
        let target = Target::new(&versioned).in_vertex(vertex);
        for endpoint in Endpoint::ALL {
            for stream in [false, true] {
                let body = json!({
                    "model": "m", "stream": stream, "max_tokens": 5, "prompt": "p",
                    "input": "i", "query": "q", "documents": ["d"],
                    "messages": [{"role": "user", "content": "hi"}],
                });
                let Ok(parsed) = parse_request(endpoint, body.to_string().as_bytes()) else {
                    assert_eq!(passthrough_path(endpoint, target, "m", stream), None);
                    continue;
                };
                let translated = translate_request(&parsed, target, None);
                let case = format!("{endpoint:?} to {schema:?}, stream {stream}");
                match passthrough_path(endpoint, target, "m", stream) {
                    Some(path) => {
                        let t = translated.unwrap_or_else(|e| panic!("{case}: {e}"));
                        assert_eq!(t.path, path, "{case}");
                        let sent: Value = serde_json::from_slice(&t.body).expect("JSON");
                        assert_eq!(sent, body, "{case}");
                        passed += 1;
                    }
                    None => {
                        let same = translated.as_ref().is_ok_and(|t| {
                            serde_json::from_slice::<Value>(&t.body).ok() == Some(body.clone())
                        });
                        let reads_body = endpoint == Endpoint::Embeddings;
                        assert!(!same || reads_body, "{case}: could pass through");
                    }
                }
            }
        }
    }
    assert!(passed >= 10, "only {passed} cases pass through");
}

#[test]
fn azure_paths_name_the_deployment_and_api_version() {
    let req = parse(Endpoint::ChatCompletions, &json!({"model": "gpt 4o/x", "messages": []}));
    let azure = VersionedAPISchema {
        name: APISchema::AzureOpenAI,
        version: Some("2025-01-01-preview".into()),
        prefix: None,
    };
    let t = translate_request(&req, Target::new(&azure), None).expect("translates");
    assert_eq!(
        t.path,
        "/openai/deployments/gpt%204o%2Fx/chat/completions?api-version=2025-01-01-preview"
    );
    let t =
        translate_request(&req, Target::new(&backend(APISchema::AzureOpenAI)), Some("prod-gpt4"))
            .expect("translates");
    assert_eq!(t.path, "/openai/deployments/prod-gpt4/chat/completions?api-version=2024-10-21");
    let emb = parse(Endpoint::Embeddings, &json!({"model": "e", "input": "x"}));
    assert_eq!(
        translate_request(&emb, Target::new(&azure), None).expect("translates").path,
        "/openai/deployments/e/embeddings?api-version=2025-01-01-preview"
    );
    assert_eq!(
        translate_request(&emb, Target::new(&backend(APISchema::OpenAI)), None)
            .expect("translates")
            .path,
        "/v1/embeddings"
    );
    let comp = parse(Endpoint::Completions, &json!({"model": "c", "prompt": "x", "stream": true}));
    let t = translate_request(&comp, Target::new(&backend(APISchema::OpenAI)), None)
        .expect("translates");
    assert_eq!(t.path, "/v1/completions");
    assert_eq!(
        serde_json::from_slice::<Value>(&t.body).expect("JSON")["stream_options"],
        json!({"include_usage": true})
    );
}

#[test]
fn unsupported_pairs_say_which() {
    for (endpoint, to) in [
        (Endpoint::Embeddings, APISchema::Anthropic),
        (Endpoint::Completions, APISchema::Anthropic),
        (Endpoint::Embeddings, APISchema::AWSAnthropic),
        (Endpoint::Completions, APISchema::GCPVertexAI),
    ] {
        let req =
            parse(endpoint, &json!({"model": "m", "messages": [], "input": "x", "prompt": "x"}));
        let err =
            translate_request(&req, Target::new(&backend(to)), None).expect_err("unsupported");
        assert!(matches!(err, TranslateError::Unsupported(_)), "{err:?}");
        assert_eq!(err.status(), 422);
        assert!(err.to_string().contains(&format!("{to:?}")), "{err}");
    }
}

#[test]
fn openai_chat_to_anthropic_request() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time in Paris? See: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "assistant", "content": "18°C at noon."},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-1",
        "seed": 7
    });
    let (path, got) = translate(Endpoint::ChatCompletions, body, APISchema::Anthropic);
    assert_eq!(path, "/v1/messages");
    assert_eq!(
        got,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather and time in Paris? See: "},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "12:00"}
                ]},
                {"role": "assistant", "content": "18°C at noon."},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather now",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
            ],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "max_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "u-1"}
        })
    );
}

#[test]
fn openai_chat_to_anthropic_defaults_and_simple_forms() {
    let body = json!({"model": "claude", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                      "max_tokens": 50, "stop": ["a", "b"], "tool_choice": "required"});
    let (_, got) = translate(Endpoint::ChatCompletions, body, APISchema::Anthropic);
    assert_eq!(
        got,
        json!({"model": "claude", "system": "S", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
               "stop_sequences": ["a", "b"], "tool_choice": {"type": "any"}})
    );
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        APISchema::Anthropic,
    );
    assert_eq!(
        got,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096})
    );
}

#[test]
fn openai_chat_content_anthropic_cannot_take_is_refused() {
    let cases = [
        (
            json!({"model": "c", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            422,
        ),
        (
            json!({"model": "c", "messages": [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            400,
        ),
        (
            json!({"model": "c", "messages": [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            400,
        ),
        (json!({"model": "c", "messages": [{"role": "tool", "content": "x"}]}), 400),
        (json!({"model": "c", "messages": "hi"}), 400),
        (json!({"model": "c"}), 400),
        (
            json!({"model": "c", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            400,
        ),
        (json!({"model": "c", "messages": [], "tools": [{"type": "web_search"}]}), 422),
        (json!({"model": "c", "messages": [], "n": 3}), 422),
        (
            json!({"model": "c", "messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}}),
            422,
        ),
        (json!({"model": "c", "messages": [], "response_format": {"type": "json_schema"}}), 400),
        (json!({"model": "c", "messages": [], "response_format": {"type": "xml"}}), 400),
        (
            json!({"model": "c", "messages": [], "response_format": {"type": "json_object"},
                   "tools": [{"type": "function", "function": {"name": "aixds_json_response"}}]}),
            400,
        ),
    ];
    for (body, status) in cases {
        let req = parse(Endpoint::ChatCompletions, &body);
        let err = translate_request(&req, Target::new(&backend(APISchema::Anthropic)), None)
            .expect_err("refused");
        assert_eq!(err.status(), status, "{body} gave {err}");
    }
}

#[test]
fn anthropic_messages_to_openai_request() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Metric."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18°C"}]},
                {"type": "text", "text": "And tomorrow?"}
            ]},
            {"role": "assistant", "content": "Rain."}
        ],
        "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "max_tokens": 1024,
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_k": 5,
        "stream": true,
        "metadata": {"user_id": "u-1"}
    });
    let (path, got) = translate(Endpoint::Messages, body, APISchema::OpenAI);
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(
        got,
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief.\nMetric."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "assistant", "content": "Rain."}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "max_completion_tokens": 1024,
            "stop": ["END"],
            "temperature": 0.2,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1"
        })
    );
    let (path, _) = translate(
        Endpoint::Messages,
        json!({"model": "m", "messages": [], "max_tokens": 1}),
        APISchema::AzureOpenAI,
    );
    assert_eq!(path, "/openai/deployments/m/chat/completions?api-version=2024-10-21");
}

#[test]
fn anthropic_messages_to_anthropic_passes_through() {
    let body = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "top_k": 3});
    let req = parse(Endpoint::Messages, &body);
    let t =
        translate_request(&req, Target::new(&backend(APISchema::Anthropic)), Some("claude-haiku"))
            .expect("translates");
    assert_eq!(t.path, "/v1/messages");
    let mut want = body.clone();
    want["model"] = json!("claude-haiku");
    assert_eq!(serde_json::from_slice::<Value>(&t.body).expect("JSON"), want);
}

#[test]
fn anthropic_message_response_to_openai_chat() {
    let upstream = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 10, "output_tokens": 20}
    });
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, false);
    let bytes = upstream.to_string().into_bytes();
    let (a, b) = bytes.split_at(7);
    assert!(t.feed(a, false).expect("piece").is_empty(), "JSON waits for the whole body");
    let got: Value = serde_json::from_slice(&t.feed(b, true).expect("rest")).expect("JSON");
    assert_eq!(
        got,
        json!({
            "id": "msg_01", "object": "chat.completion", "created": CREATED, "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check the weather.",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
            }}],
            "usage": {"prompt_tokens": 160, "completion_tokens": 20, "total_tokens": 180, "prompt_tokens_details": {"cached_tokens": 50}}
        })
    );
    assert_eq!(
        t.usage(),
        Usage {
            input: 160,
            output: 20,
            cached_input: 50,
            cache_creation_input: 10,
            total: 180,
            ..Default::default()
        }
    );
    assert_eq!(t.content_type(), "application/json");

    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
    ] {
        let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, false);
        let body = json!({"id": "m", "model": "c", "content": [], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let got: Value =
            serde_json::from_slice(&feed_whole(&mut t, body.to_string().as_bytes())).expect("JSON");
        assert_eq!(got["choices"][0]["finish_reason"], json!(finish), "{stop}");
    }
}

#[test]
fn openai_chat_response_to_anthropic_message() {
    let upstream = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{nope"}}
            ]
        }}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 40}}
    });
    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, false);
    let got: Value =
        serde_json::from_slice(&feed_whole(&mut t, upstream.to_string().as_bytes())).expect("JSON");
    assert_eq!(
        got,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-4o",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "broken", "input": {"arguments": "{nope"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 60, "output_tokens": 20, "cache_read_input_tokens": 40}
        })
    );
    assert_eq!(
        t.usage(),
        Usage { input: 100, output: 20, cached_input: 40, total: 120, ..Default::default() }
    );
    for (finish, stop) in
        [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use")]
    {
        let mut t = translator(Endpoint::Messages, APISchema::OpenAI, false);
        let body = json!({"id": "c", "model": "g", "choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
        let got: Value =
            serde_json::from_slice(&feed_whole(&mut t, body.to_string().as_bytes())).expect("JSON");
        assert_eq!(got["stop_reason"], json!(stop), "{finish}");
    }
}

#[test]
fn json_passthrough_streams_bytes_and_counts_usage() {
    let body = json!({"id": "e", "data": [], "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        .to_string();
    let mut t = translator(Endpoint::Embeddings, APISchema::OpenAI, false);
    assert_eq!(
        feed_split(translator(Endpoint::Embeddings, APISchema::OpenAI, false), body.as_bytes(), 3),
        body.as_bytes()
    );
    feed_whole(&mut t, body.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 7, output: 0, cached_input: 0, total: 7, ..Default::default() }
    );

    let body = json!({"id": "m", "content": [], "usage": {"input_tokens": 5, "cache_read_input_tokens": 3, "output_tokens": 2}}).to_string();
    let mut t = translator(Endpoint::Messages, APISchema::Anthropic, false);
    assert_eq!(feed_whole(&mut t, body.as_bytes()), body.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 8, output: 2, cached_input: 3, total: 10, ..Default::default() }
    );
}

#[test]
fn upstream_json_that_is_not_json_is_a_bad_gateway() {
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, false);
    let err = t.feed(b"<html>oops</html>", true).expect_err("not JSON");
    assert!(matches!(err, TranslateError::Upstream(_)));
    assert_eq!(err.status(), 502);
}

fn anthropic_stream_as_openai(include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "msg_01", "object": "chat.completion.chunk", "created": CREATED, "model": "claude-sonnet-4-5",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Café in 日本"}), Value::Null),
        chunk(json!({"content": "!"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ris\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    if include_usage {
        want.push(json!({"id": "msg_01", "object": "chat.completion.chunk", "created": CREATED, "model": "claude-sonnet-4-5", "choices": [],
                         "usage": {"prompt_tokens": 35, "completion_tokens": 42, "total_tokens": 77, "prompt_tokens_details": {"cached_tokens": 10}}}));
    }
    want.push(json!("[DONE]"));
    want
}

#[test]
fn anthropic_stream_to_openai_chunks() {
    for include_usage in [true, false] {
        let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, true)
            .include_usage(include_usage);
        assert_eq!(t.content_type(), "text/event-stream");
        let out = feed_whole(&mut t, ANTHROPIC_STREAM.as_bytes());
        let got: Vec<Value> = sse(&out)
            .into_iter()
            .map(|(name, data)| {
                assert_eq!(name, None);
                data
            })
            .collect();
        assert_eq!(got, anthropic_stream_as_openai(include_usage));
        assert_eq!(
            t.usage(),
            Usage { input: 35, output: 42, cached_input: 10, total: 77, ..Default::default() }
        );
    }
}

#[test]
fn openai_stream_to_anthropic_events() {
    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let out = feed_whole(&mut t, OPENAI_STREAM.as_bytes());
    let start = |i: u64, block: Value| {
        (
            Some("content_block_start".to_string()),
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        )
    };
    let delta = |i: u64, d: Value| {
        (
            Some("content_block_delta".to_string()),
            json!({"type": "content_block_delta", "index": i, "delta": d}),
        )
    };
    let stop = |i: u64| {
        (Some("content_block_stop".to_string()), json!({"type": "content_block_stop", "index": i}))
    };
    let want = vec![
        (
            Some("message_start".to_string()),
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "gpt-4o", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Café in "})),
        delta(0, json!({"type": "text_delta", "text": "日本"})),
        stop(0),
        start(1, json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})),
        delta(1, json!({"type": "input_json_delta", "partial_json": "{\"city\":"})),
        delta(1, json!({"type": "input_json_delta", "partial_json": "\"Paris\"}"})),
        stop(1),
        start(2, json!({"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}})),
        delta(2, json!({"type": "input_json_delta", "partial_json": "{}"})),
        stop(2),
        (
            Some("message_delta".to_string()),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 22, "output_tokens": 20, "cache_read_input_tokens": 8}}),
        ),
        (Some("message_stop".to_string()), json!({"type": "message_stop"})),
    ];
    assert_eq!(sse(&out), want);
    assert_eq!(
        t.usage(),
        Usage { input: 30, output: 20, cached_input: 8, total: 50, ..Default::default() }
    );
}

#[test]
fn openai_stream_parallel_calls_sharing_an_index_stay_apart() {
    let chunk = |call: Value| {
        let c = json!({"id": "c", "model": "g", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]});
        format!("data: {c}\n\n")
    };
    let input = [
        chunk(json!({"index": 0, "id": "call_a", "function": {"name": "a", "arguments": "{}"}})),
        chunk(json!({"index": 0, "id": "call_b", "function": {"name": "b", "arguments": "{}"}})),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let starts: Vec<Value> = sse(&feed_whole(&mut t, input.as_bytes()))
        .into_iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_start"))
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        starts,
        vec![
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "call_a", "name": "a", "input": {}}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_b", "name": "b", "input": {}}}),
        ]
    );
}

#[test]
fn openai_stream_without_done_still_ends_the_message() {
    let cut =
        OPENAI_STREAM.rsplit_once("data: [DONE]").map(|(head, _)| head).unwrap_or(OPENAI_STREAM);
    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let got = sse(&feed_whole(&mut t, cut.as_bytes()));
    assert_eq!(got.last().map(|(n, _)| n.as_deref()), Some(Some("message_stop")));
}

/// The byte index of the newline that ends the `data:` line of the first event containing
/// `needle`: the event that tells why the answer stopped.
fn stop_line_end(input: &str, needle: &str) -> usize {
    let at = input.find(needle).expect("fixture has the stop event");
    let mut line = input[..at].rfind('\n').map_or(0, |i| i + 1);
    if input[line..].starts_with("event:") {
        line += input[line..].find('\n').expect("the line ends") + 1;
    }
    line + input[line..].find('\n').expect("the line ends")
}

/// Whether a client event says the answer is whole: `[DONE]` or a `finish_reason` for OpenAI
/// clients, `message_delta` or `message_stop` for Anthropic clients.
fn says_complete(event: &(Option<String>, Value)) -> bool {
    let (name, data) = event;
    data == "[DONE]"
        || data.pointer("/choices/0/finish_reason").is_some_and(|f| !f.is_null())
        || matches!(name.as_deref(), Some("message_delta" | "message_stop"))
}

/// The upstream closes the connection mid-stream and Envoy ends the body there: at every byte
/// before the event that says why the answer stopped, the client gets an error event in its own
/// format after the events that did arrive, and nothing that makes the answer look complete.
/// From that event on, the stream ends as usual.
#[test]
fn streams_cut_before_their_stop_end_with_an_error_in_the_clients_format() {
    let openai_error = (
        None,
        json!({"error": {"message": "the upstream closed the stream before the response was complete",
                         "type": "server_error", "param": null, "code": null}}),
    );
    let anthropic_error = (
        Some("error".to_string()),
        json!({"type": "error", "error": {"type": "api_error",
               "message": "the upstream closed the stream before the response was complete"}}),
    );
    let cases = [
        (
            Endpoint::ChatCompletions,
            APISchema::Anthropic,
            ANTHROPIC_STREAM,
            "event: message_delta",
            &openai_error,
        ),
        (
            Endpoint::Messages,
            APISchema::OpenAI,
            OPENAI_STREAM,
            "\"finish_reason\":\"",
            &anthropic_error,
        ),
        (
            Endpoint::Messages,
            APISchema::Anthropic,
            ANTHROPIC_STREAM,
            "event: message_delta",
            &anthropic_error,
        ),
        (
            Endpoint::ChatCompletions,
            APISchema::OpenAI,
            OPENAI_STREAM,
            "\"finish_reason\":\"",
            &openai_error,
        ),
    ];
    for (endpoint, backend, input, stop, error) in cases {
        let stop = stop_line_end(input, stop);
        let passthrough = (endpoint == Endpoint::Messages) == (backend == APISchema::Anthropic);
        for at in 0..=input.len() {
            let case = format!("{endpoint:?}→{backend:?} cut at {at}");
            let mut t = translator(endpoint, backend, true).include_usage(true);
            let out = t.feed(&input.as_bytes()[..at], true).expect(&case);
            let events = sse(&out);
            if at < stop {
                assert!(t.truncated(), "{case}");
                assert_eq!(events.last(), Some(error), "{case}");
                assert!(!events.iter().any(says_complete), "{case}: {events:?}");
                if passthrough {
                    // The events that arrived whole, byte for byte, then the error.
                    let whole = input.as_bytes()[..at]
                        .windows(2)
                        .rposition(|w| w == b"\n\n")
                        .map_or(0, |i| i + 2);
                    assert!(out.starts_with(&input.as_bytes()[..whole]), "{case}");
                    assert_eq!(events.len(), sse(&input.as_bytes()[..whole]).len() + 1, "{case}");
                }
            } else {
                assert!(!t.truncated(), "{case}");
                assert!(events.iter().any(says_complete), "{case}");
                assert_ne!(events.last(), Some(error), "{case}");
                if passthrough {
                    assert_eq!(out, input.as_bytes()[..at], "{case}");
                }
            }
        }
    }
}

#[test]
fn anthropic_stream_without_message_stop_still_ends_with_done() {
    let cut = ANTHROPIC_STREAM.split("event: message_stop").next().unwrap_or(ANTHROPIC_STREAM);
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, true);
    let got = sse(&feed_whole(&mut t, cut.as_bytes()));
    assert_eq!(got.last(), Some(&(None, json!("[DONE]"))));
    assert!(!t.truncated());
}

/// An event that cannot be translated fails the response: the client is told in its own
/// format, as an error event for a stream (it may already have events) and as a 502 error body
/// otherwise.
#[test]
fn failures_are_told_in_the_clients_format() {
    let t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let got = sse(&t.failure("bad event"));
    assert_eq!(
        got,
        vec![(
            Some("error".to_string()),
            json!({"type": "error", "error": {"type": "api_error", "message": "bad event"}})
        )]
    );
    let t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, true);
    assert_eq!(
        sse(&t.failure("bad event")),
        vec![(
            None,
            json!({"error": {"message": "bad event", "type": "server_error", "param": null, "code": null}})
        )]
    );
    let t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, false);
    let body: Value = serde_json::from_slice(&t.failure("bad body")).expect("JSON");
    assert_eq!(body["error"]["message"], "bad body");
    let t = translator(Endpoint::Messages, APISchema::Anthropic, false);
    let body: Value = serde_json::from_slice(&t.failure("bad body")).expect("JSON");
    assert_eq!(body["type"], "error");
}

#[test]
fn passthrough_streams_keep_bytes_and_count_usage() {
    // Anthropic → Anthropic: byte for byte.
    let mut t = translator(Endpoint::Messages, APISchema::Anthropic, true);
    assert_eq!(feed_whole(&mut t, ANTHROPIC_STREAM.as_bytes()), ANTHROPIC_STREAM.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 35, output: 42, cached_input: 10, total: 77, ..Default::default() }
    );

    // OpenAI → OpenAI: the usage chunk the gateway asked for reaches only clients that asked.
    let mut t = translator(Endpoint::ChatCompletions, APISchema::OpenAI, true).include_usage(true);
    assert_eq!(feed_whole(&mut t, OPENAI_STREAM.as_bytes()), OPENAI_STREAM.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 30, output: 20, cached_input: 8, total: 50, ..Default::default() }
    );
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AzureOpenAI, true);
    let out = feed_whole(&mut t, OPENAI_STREAM.as_bytes());
    let without_usage: String =
        OPENAI_STREAM.split_inclusive("\n\n").filter(|e| !e.contains("\"usage\"")).collect();
    assert_eq!(String::from_utf8_lossy(&out), without_usage);
    assert_eq!(
        t.usage(),
        Usage { input: 30, output: 20, cached_input: 8, total: 50, ..Default::default() }
    );
}

/// Feeds `input` to translators from `make` whole, cut in two at every byte, and byte by byte:
/// every way gives the same output and usage, and fed byte by byte, output flows before the
/// input's second half (events go out as they complete, not at the end).
pub(crate) fn assert_same_however_split(
    make: impl Fn() -> ResponseTranslator,
    input: &[u8],
    what: &str,
) {
    let mut whole_t = make();
    let whole = feed_whole(&mut whole_t, input);
    for at in 0..=input.len() {
        let mut t = make();
        let (a, b) = input.split_at(at);
        let mut out = t.feed(a, false).expect("first piece");
        out.extend(t.feed(b, true).expect("second piece"));
        assert_eq!(out, whole, "{what} split at {at}");
        assert_eq!(t.usage(), whole_t.usage());
    }
    let mut t = make();
    let mut out = Vec::new();
    let mut flushed_early = false;
    for (i, b) in input.iter().enumerate() {
        let piece = t.feed(std::slice::from_ref(b), false).expect("byte");
        flushed_early |= !piece.is_empty() && i < input.len() / 2;
        out.extend(piece);
    }
    out.extend(t.feed(&[], true).expect("end"));
    assert_eq!(out, whole, "{what} byte by byte");
    assert!(flushed_early, "{what} must stream, not buffer");
}

/// Every way of cutting a stream in two gives what feeding it whole gives, including cuts inside
/// "é" and "日本".
#[test]
fn streams_split_at_every_byte_give_the_same_output() {
    let cases: [(Endpoint, APISchema, &str); 4] = [
        (Endpoint::ChatCompletions, APISchema::Anthropic, ANTHROPIC_STREAM),
        (Endpoint::Messages, APISchema::OpenAI, OPENAI_STREAM),
        (Endpoint::Messages, APISchema::Anthropic, ANTHROPIC_STREAM),
        (Endpoint::ChatCompletions, APISchema::OpenAI, OPENAI_STREAM),
    ];
    for (endpoint, backend, input) in cases {
        assert!(input.contains("é") && input.contains("日本"));
        assert_same_however_split(
            || translator(endpoint, backend, true).include_usage(true),
            input.as_bytes(),
            &format!("{endpoint:?}→{backend:?}"),
        );
    }
}

#[test]
fn stream_errors_reach_the_client_in_its_format() {
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
                     event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, true);
    let got = sse(&feed_whole(&mut t, anthropic.as_bytes()));
    assert_eq!(
        got.last().map(|(_, d)| d.clone()),
        Some(
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
        )
    );

    let openai = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let got = sse(&feed_whole(&mut t, openai.as_bytes()));
    assert_eq!(
        got,
        vec![(
            Some("error".to_string()),
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
        )]
    );

    let mut t = translator(Endpoint::Messages, APISchema::OpenAI, true);
    let err = t.feed(b"data: {not json\n\n", false).expect_err("bad event");
    assert_eq!(err.status(), 502);
}

#[test]
fn upstream_errors_become_the_clients_format() {
    let anthropic_429 =
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#;
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::OpenAI,
        APISchema::Anthropic,
        429,
        &[],
        anthropic_429,
    ))
    .expect("JSON");
    assert_eq!(
        got,
        json!({"error": {"message": "Slow down", "type": "rate_limit_error", "param": null, "code": null}})
    );

    let openai_500 = br#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":"internal"}}"#;
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::Anthropic,
        APISchema::OpenAI,
        500,
        &[],
        openai_500,
    ))
    .expect("JSON");
    assert_eq!(
        got,
        json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
    );
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::Anthropic,
        APISchema::AzureOpenAI,
        429,
        &[],
        openai_500,
    ))
    .expect("JSON");
    assert_eq!(got["error"]["type"], json!("rate_limit_error"));

    // Same schema both sides: unchanged.
    assert_eq!(
        translate_error(ClientSchema::OpenAI, APISchema::OpenAI, 500, &[], openai_500),
        openai_500
    );
    assert_eq!(
        translate_error(ClientSchema::Anthropic, APISchema::Anthropic, 429, &[], anthropic_429),
        anthropic_429
    );

    // Not JSON: the text becomes the message.
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::OpenAI,
        APISchema::OpenAI,
        503,
        &[],
        b"upstream connect error",
    ))
    .expect("JSON");
    assert_eq!(
        got,
        json!({"error": {"message": "upstream returned status 503: upstream connect error", "type": "server_error", "param": null, "code": null}})
    );
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::Anthropic,
        APISchema::OpenAI,
        502,
        &[],
        b"",
    ))
    .expect("JSON");
    assert_eq!(
        got,
        json!({"type": "error", "error": {"type": "api_error", "message": "upstream returned status 502"}})
    );
}

#[test]
fn gateway_errors_in_each_format() {
    let got: Value =
        serde_json::from_slice(&error_body(ClientSchema::OpenAI, 400, "bad")).expect("JSON");
    assert_eq!(
        got,
        json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}})
    );
    let got: Value = serde_json::from_slice(&error_body(ClientSchema::Anthropic, 404, "no route"))
        .expect("JSON");
    assert_eq!(
        got,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "no route"}})
    );
    // Anthropic's documented type per status, which its SDK reads (a 504 is a `timeout_error`).
    for (status, kind) in [
        (413, "request_too_large"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let got: Value = serde_json::from_slice(&error_body(ClientSchema::Anthropic, status, "m"))
            .expect("JSON");
        assert_eq!(got["error"]["type"], kind, "{status}");
    }
    let err = TranslateError::MissingModel;
    let got: Value =
        serde_json::from_slice(&error_body(ClientSchema::OpenAI, err.status(), &err.to_string()))
            .expect("JSON");
    assert_eq!(
        got["error"]["message"],
        json!("request body must have a \"model\" field holding a string")
    );
}

/// A small deterministic generator; the point is many odd inputs, not their distribution.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes, mangled fixtures and random cuts never panic.
#[test]
fn nothing_panics_on_random_input() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Every endpoint to every schema: the pairs a family refuses must refuse, not panic.
    let backends = APISchema::ALL;
    let location = VertexLocation { project: "p", region: "us-central1" };
    let seeds: Vec<&[u8]> = vec![
        include_bytes!("../fixtures/translate/bedrock_converse_stream.bin"),
        include_str!("../fixtures/translate/bedrock_converse.json").as_bytes(),
        include_str!("../fixtures/translate/gemini_stream.sse").as_bytes(),
        include_str!("../fixtures/translate/cohere_stream.sse").as_bytes(),
        ANTHROPIC_STREAM.as_bytes(),
        OPENAI_STREAM.as_bytes(),
        br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        br#"{"model":"m","input":["a","b"],"encoding_format":"base64","dimensions":8}"#,
        br#"{"embedding":[0.5,1e300],"inputTextTokenCount":2,"inputTokens":3}"#,
        br#"{"predictions":[{"embeddings":{"values":[1,2],"statistics":{"token_count":1e30}}}]}"#,
    ];
    for round in 0..6000 {
        let input: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            // A fixture with a few bytes overwritten, so most of it still parses.
            let mut v = seeds[rng.below(seeds.len())].to_vec();
            let junk = b"{}[]\":,\n ae\x00\xff";
            for _ in 0..rng.below(6) {
                let i = rng.below(v.len());
                v[i] = junk[rng.below(junk.len())];
            }
            v
        };
        let endpoint = Endpoint::ALL[rng.below(Endpoint::ALL.len())];
        let backend_schema = backends[rng.below(backends.len())];
        if let Ok(req) = parse_request(endpoint, &input) {
            let schema = backend(backend_schema);
            let target = Target::new(&schema)
                .in_vertex(location)
                .with_anthropic_beta(Some("a, ,b").filter(|_| rng.below(2) == 0));
            let _ = translate_request(&req, target, None);
        }
        let mut t = translator(endpoint, backend_schema, rng.below(2) == 0)
            .include_usage(rng.below(2) == 0)
            .base64_embeddings(rng.below(2) == 0);
        let cut = rng.below(input.len() + 1);
        let _ = t.feed(&input[..cut], false);
        let _ = t.feed(&input[cut..], true);
        let _ = t.usage();
        let _ = translate_error(endpoint.client_schema(), backend_schema, 500, &[], &input);
    }
    // Well-formed JSON of the wrong shapes in every field the translators read.
    let odd = [
        json!(null),
        json!(1),
        json!("s"),
        json!([]),
        json!({}),
        json!([null]),
        json!({"type": 1}),
    ];
    for v in &odd {
        for key in [
            "messages",
            "tools",
            "tool_choice",
            "system",
            "stop",
            "stop_sequences",
            "max_tokens",
            "content",
            "choices",
            "usage",
            "delta",
        ] {
            let body = json!({"model": "m", key: v, "messages": [{"role": "user", "content": v}, {"role": "assistant", "content": v, "tool_calls": v}, {"role": "tool", "tool_call_id": "x", "content": v}]});
            for endpoint in Endpoint::ALL {
                let req = parse(endpoint, &body);
                for b in backends {
                    let _ = translate_request(&req, Target::new(&backend(b)), None);
                }
            }
            for endpoint in Endpoint::ALL {
                for b in backends {
                    for stream in [false, true] {
                        let mut t = translator(endpoint, b, stream);
                        let line = format!(
                            "data: {}\n\n",
                            json!({"type": "message_start", "message": v, key: v, "choices": [{"delta": {"tool_calls": v, "content": v}}]})
                        );
                        let _ = t.feed(line.as_bytes(), false);
                        let _ = t.feed(body.to_string().as_bytes(), true);
                    }
                }
            }
        }
    }
}

/// OpenAI → Anthropic → OpenAI keeps a multi-turn tool conversation's messages.
#[test]
fn chat_messages_survive_a_round_trip_through_anthropic() {
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "24°C"},
        {"role": "assistant", "content": "Paris 18°C, Rome 24°C."},
        {"role": "user", "content": [{"type": "text", "text": "日本?"}, {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}]}
    ]);
    let (_, anthropic) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": messages.clone(), "max_tokens": 9}),
        APISchema::Anthropic,
    );
    let (_, back) = translate(Endpoint::Messages, anthropic, APISchema::OpenAI);
    assert_eq!(back["messages"], messages);
    assert_eq!(back["max_completion_tokens"], json!(9));
}

const RESPONSES_STREAM: &str = include_str!("../fixtures/translate/openai_responses_stream.sse");

#[test]
fn responses_and_count_tokens_reach_only_their_own_family() {
    assert_eq!(Endpoint::from_path("/v1/responses"), Some(Endpoint::Responses));
    assert_eq!(Endpoint::from_path("/v1/messages/count_tokens"), Some(Endpoint::CountTokens));
    assert_eq!(
        Endpoint::from_path("/anthropic/v1/messages/count_tokens/"),
        Some(Endpoint::CountTokens)
    );
    assert_eq!(Endpoint::CountTokens.client_schema(), ClientSchema::Anthropic);
    assert_eq!(Endpoint::Responses.client_schema(), ClientSchema::OpenAI);

    let responses = json!({"model": "gpt-4o", "input": "hi", "stream": true,
                           "previous_response_id": "resp_0", "tools": [{"type": "web_search"}]});
    let req = parse(Endpoint::Responses, &responses);
    for (schema, path) in [
        (backend(APISchema::OpenAI), "/v1/responses"),
        (
            VersionedAPISchema {
                prefix: Some("/v1beta/openai/".into()),
                ..backend(APISchema::OpenAI)
            },
            "/v1beta/openai/responses",
        ),
        (backend(APISchema::AzureOpenAI), "/openai/v1/responses"),
    ] {
        let t = translate_request(&req, Target::new(&schema), Some("gpt-4.1")).expect("passes");
        assert_eq!(t.path, path);
        let body: Value = serde_json::from_slice(&t.body).expect("JSON");
        // Unchanged but for the model: no stream_options, which the Responses API refuses.
        let mut want = responses.clone();
        want["model"] = json!("gpt-4.1");
        assert_eq!(body, want);
    }
    let err = translate_request(&req, Target::new(&backend(APISchema::Anthropic)), None)
        .expect_err("refused");
    assert_eq!(err.status(), 422);
    assert!(err.to_string().contains("OpenAI responses requests"), "{err}");

    let count = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                       "system": "be brief"});
    let req = parse(Endpoint::CountTokens, &count);
    let t =
        translate_request(&req, Target::new(&backend(APISchema::Anthropic)), None).expect("passes");
    assert_eq!(t.path, "/v1/messages/count_tokens");
    assert_eq!(serde_json::from_slice::<Value>(&t.body).expect("JSON"), count);
    for schema in [APISchema::OpenAI, APISchema::AzureOpenAI] {
        let err =
            translate_request(&req, Target::new(&backend(schema)), None).expect_err("refused");
        assert_eq!(err.status(), 422, "{schema:?}");
        assert!(err.to_string().contains("Anthropic token counting"), "{err}");
    }

    // A count passes back as it came, and counts no usage.
    let mut t = translator(Endpoint::CountTokens, APISchema::Anthropic, false);
    assert_eq!(feed_whole(&mut t, br#"{"input_tokens":12}"#), br#"{"input_tokens":12}"#);
    assert_eq!(t.usage(), Usage::default());
}

#[test]
fn responses_bodies_and_streams_pass_with_their_usage_counted() {
    let body = br#"{"id":"resp_1","object":"response","status":"completed","output":[],
        "usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":2},"output_tokens":5,"total_tokens":14}}"#;
    let mut t = translator(Endpoint::Responses, APISchema::OpenAI, false);
    assert_eq!(feed_whole(&mut t, body), body);
    assert_eq!(
        t.usage(),
        Usage { input: 9, output: 5, cached_input: 2, total: 14, ..Default::default() }
    );

    let input = RESPONSES_STREAM.as_bytes();
    let usage = Usage { input: 12, output: 3, cached_input: 4, total: 15, ..Default::default() };
    let completed = stop_line_end(RESPONSES_STREAM, "event: response.completed");
    for at in 0..=input.len() {
        // Split anywhere, the stream passes byte for byte and counts its usage.
        let out = feed_split(translator(Endpoint::Responses, APISchema::OpenAI, true), input, at);
        assert_eq!(out, input, "split at {at}");
        // Cut anywhere before `response.completed`, it ends in an error the SDK raises.
        let mut t = translator(Endpoint::Responses, APISchema::OpenAI, true);
        let out = t.feed(&input[..at], true).expect("cut");
        let events = sse(&out);
        if at < completed {
            assert!(t.truncated(), "cut at {at}");
            let error = &events.last().expect("an error event").1;
            assert_eq!(error["error"]["type"], "server_error", "cut at {at}");
        } else {
            assert!(!t.truncated(), "cut at {at}");
            assert_eq!(t.usage(), usage, "cut at {at}");
        }
    }
}

/// A JSON response format reaches Anthropic as a tool the model must call, and its call comes
/// back as the content the client asked for, whole or streamed.
#[test]
fn json_response_formats_reach_anthropic_as_a_forced_tool() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    let body = json!({"model": "c", "messages": [{"role": "user", "content": "where?"}],
                      "response_format": {"type": "json_schema",
                                          "json_schema": {"name": "place", "schema": schema}}});
    let (_, sent) = translate(Endpoint::ChatCompletions, body.clone(), APISchema::Anthropic);
    assert_eq!(
        sent["tools"],
        json!([{"name": "aixds_json_response",
        "description": sent["tools"][0]["description"], "input_schema": schema}])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "aixds_json_response"}));
    assert!(sent.get("response_format").is_none());

    // With tools of the client's, the model may call them or answer; json_object is any object.
    let mut with_tools = body;
    with_tools["response_format"] = json!({"type": "json_object"});
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    with_tools["parallel_tool_calls"] = json!(false);
    let (_, sent) = translate(Endpoint::ChatCompletions, with_tools, APISchema::Anthropic);
    assert_eq!(sent["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
    assert_eq!(sent["tools"][1]["input_schema"], json!({"type": "object"}));

    let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "aixds_json_response",
                     "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}});
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, false);
    let out: Value =
        serde_json::from_slice(&feed_whole(&mut t, message.to_string().as_bytes())).expect("JSON");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["choices"][0]["message"]["content"], r#"{"city":"Paris"}"#);
    assert!(out["choices"][0]["message"].get("tool_calls").is_none());

    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "c",
               "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block":
               {"type": "tool_use", "id": "toolu_1", "name": "aixds_json_response", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
               "usage": {"output_tokens": 7}}),
        json!({"type": "message_stop"}),
    ];
    let stream: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or_default()))
        .collect();
    let mut t = translator(Endpoint::ChatCompletions, APISchema::Anthropic, true);
    let chunks = sse(&feed_whole(&mut t, stream.as_bytes()));
    let text: String = chunks
        .iter()
        .filter_map(|(_, c)| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
        .collect();
    assert_eq!(text, r#"{"city": "Paris"}"#);
    assert!(chunks.iter().all(|(_, c)| c.pointer("/choices/0/delta/tool_calls").is_none()));
    let finish: Vec<&Value> =
        chunks.iter().filter_map(|(_, c)| c.pointer("/choices/0/finish_reason")).collect();
    assert_eq!(finish.last(), Some(&&json!("stop")));
}
