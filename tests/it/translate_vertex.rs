//! Translation to GCP Vertex AI: Gemini (`GCPVertexAI`) and Anthropic on Vertex
//! (`GCPAnthropic`), against fixtures written from Google's and Anthropic's documented shapes:
//! requests, whole responses, streams split at every byte, errors, and bad input.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    ClientSchema, Endpoint, Target, TranslateError, Usage, VertexLocation, parse_request,
    translate_error, translate_request,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::translate::{CREATED, assert_same_however_split, feed_whole, parse, sse, translator};

const GEMINI_STREAM: &str = include_str!("../fixtures/translate/gemini_stream.sse");
const ANTHROPIC_STREAM: &str = include_str!("../fixtures/translate/anthropic_stream.sse");
const LOCATION: VertexLocation<'static> =
    VertexLocation { project: "my-project", region: "us-central1" };

fn schema(name: APISchema) -> VersionedAPISchema {
    VersionedAPISchema { name, version: None, prefix: None }
}

fn translate_to(
    endpoint: Endpoint,
    body: &Value,
    backend: &VersionedAPISchema,
) -> Result<(String, Value), TranslateError> {
    let t =
        translate_request(&parse(endpoint, body), Target::new(backend).in_vertex(LOCATION), None)?;
    Ok((t.path, serde_json::from_slice(&t.body).expect("translated body is JSON")))
}

fn translate(endpoint: Endpoint, body: Value, to: APISchema) -> (String, Value) {
    translate_to(endpoint, &body, &schema(to)).expect("translates")
}

fn refusal(body: Value) -> TranslateError {
    translate_to(Endpoint::ChatCompletions, &body, &schema(APISchema::GCPVertexAI))
        .expect_err("refused")
}

#[test]
fn openai_chat_to_gemini_request() {
    let body = json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris? See: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.JPG?size=2", "detail": "high"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "c2ln"}}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":18}"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": [{"type": "text", "text": "Rain."}]},
            {"role": "user", "content": "  "},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "city": {"type": "string", "minLength": 1},
                    "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]},
                    "when": {"$ref": "#/$defs/When", "description": "the day"}
                },
                "required": ["city", "unit", "not_a_property"],
                "$defs": {"When": {"type": "string", "format": "date-time", "examples": ["2025-01-01T00:00:00Z"]}}
            }}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "n": 2,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
            "type": "object",
            "properties": {
                "answer": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"const": "a"}},
                "score": {"oneOf": [{"type": "integer", "format": "int32"}, {"type": "number", "format": "money"}]}
            },
            "required": ["answer"],
            "additionalProperties": false
        }}},
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-1",
        "logprobs": false
    });
    let (path, got) = translate(Endpoint::ChatCompletions, body, APISchema::GCPVertexAI);
    assert_eq!(
        path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        got,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris? See: "},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.JPG?size=2"}},
                    {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                    {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                    {"text": "And tomorrow?"}
                ]},
                {"role": "model", "parts": [{"text": "Rain."}]},
                {"role": "user", "parts": [{"text": "Thanks"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather now", "parameters": {
                    "type": "OBJECT",
                    "properties": {
                        "city": {"type": "STRING", "minLength": 1},
                        "unit": {"type": "STRING", "nullable": true, "enum": ["celsius", "fahrenheit"]},
                        "when": {"type": "STRING", "format": "date-time", "description": "the day"}
                    },
                    "required": ["city", "unit"]
                }},
                {"name": "get_time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 0.5,
                "topP": 0.9,
                "candidateCount": 2,
                "seed": 7,
                "presencePenalty": 0.1,
                "frequencyPenalty": 0.2,
                "maxOutputTokens": 300,
                "stopSequences": ["END"],
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {
                        "answer": {"type": "STRING", "nullable": true},
                        "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a"]}},
                        "score": {"anyOf": [{"type": "INTEGER", "format": "int32"}, {"type": "NUMBER"}]}
                    },
                    "required": ["answer"]
                }
            }
        })
    );
}

#[test]
fn openai_chat_to_gemini_simple_forms() {
    let (path, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "gemini-2.0-flash-001", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 5, "stop": ["a", "b"], "tool_choice": "auto",
               "response_format": {"type": "json_object"}}),
        APISchema::GCPVertexAI,
    );
    assert_eq!(
        path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent"
    );
    // No tools: a tool_choice says nothing.
    assert_eq!(
        got,
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"maxOutputTokens": 5, "stopSequences": ["a", "b"], "responseMimeType": "application/json"}})
    );
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, config) in [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
    ] {
        let (_, got) = translate(
            Endpoint::ChatCompletions,
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice}),
            APISchema::GCPVertexAI,
        );
        assert_eq!(got["toolConfig"], json!({"functionCallingConfig": config}));
        assert_eq!(got["tools"], json!([{"functionDeclarations": [{"name": "f"}]}]));
    }
}

#[test]
fn anthropic_messages_to_gemini_request() {
    let body = json!({
        "model": "gemini-2.5-pro",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                {"type": "text", "text": "Thanks"}
            ]}
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "any"},
        "max_tokens": 1024,
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "stream": true
    });
    let (path, got) = translate(Endpoint::Messages, body, APISchema::GCPVertexAI);
    assert!(path.ends_with("/models/gemini-2.5-pro:streamGenerateContent?alt=sse"), "{path}");
    assert_eq!(
        got,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris?"},
                    {"inlineData": {"mimeType": "image/webp", "data": "UklGR"}}
                ]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "18°C"}}},
                    {"text": "Thanks"}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {
                "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 1024, "stopSequences": ["END"]}
        })
    );
}

/// Vertex paths name the policy's project and region; without a policy there is no path, and
/// the client is told so (503: the gateway's configuration, not its request).
#[test]
fn vertex_paths_need_a_location_and_keep_model_versions() {
    let body = json!({"model": "claude-sonnet-4-5@20250929", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9});
    let req = parse(Endpoint::Messages, &body);
    for name in [APISchema::GCPVertexAI, APISchema::GCPAnthropic] {
        let err = translate_request(&req, Target::new(&schema(name)), None).expect_err("no path");
        assert!(matches!(err, TranslateError::Unconfigured(_)), "{err:?}");
        assert_eq!(err.status(), 503);
        assert!(err.to_string().contains("GCPCredentials"), "{err}");
    }
    let odd = VertexLocation { project: "p/../x", region: "europe-west4" };
    let prefixed =
        VersionedAPISchema { prefix: Some("/v1beta1/".into()), ..schema(APISchema::GCPAnthropic) };
    let t = translate_request(&req, Target::new(&prefixed).in_vertex(odd), Some("claude 4/x@1"))
        .expect("translates");
    assert_eq!(
        t.path,
        "/v1beta1/projects/p%2F..%2Fx/locations/europe-west4/publishers/anthropic/models/claude%204%2Fx@1:rawPredict"
    );
    let t = translate_request(
        &req,
        Target::new(&schema(APISchema::GCPAnthropic)).in_vertex(LOCATION),
        None,
    )
    .expect("translates");
    assert_eq!(
        t.path,
        "/v1/projects/my-project/locations/us-central1/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    );
}

/// Anthropic on Vertex: Anthropic's body with the model in the path and `anthropic_version` in
/// the body, whether the client spoke Anthropic (unchanged otherwise) or OpenAI.
#[test]
fn anthropic_on_vertex_requests() {
    let body = json!({"model": "claude-haiku-4-5@20251001", "max_tokens": 10, "top_k": 3, "stream": true,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
    let (path, got) = translate(Endpoint::Messages, body.clone(), APISchema::GCPAnthropic);
    assert_eq!(
        path,
        "/v1/projects/my-project/locations/us-central1/publishers/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict"
    );
    let mut want = body;
    want.as_object_mut().expect("object").remove("model");
    want["anthropic_version"] = json!("vertex-2023-10-16");
    assert_eq!(got, want);

    let versioned = VersionedAPISchema {
        version: Some("vertex-2099-01-01".into()),
        ..schema(APISchema::GCPAnthropic)
    };
    let (path, got) = translate_to(
        Endpoint::ChatCompletions,
        &json!({"model": "claude", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}),
        &versioned,
    )
    .expect("translates");
    assert!(path.ends_with("/publishers/anthropic/models/claude:rawPredict"), "{path}");
    assert_eq!(
        got,
        json!({"anthropic_version": "vertex-2099-01-01", "system": "S",
               "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096})
    );

    // Vertex counts tokens at its count-tokens model, with the model in the body (without the
    // alias its counting does not resolve).
    let count = json!({"model": "claude-sonnet-4-5@default", "messages": [{"role": "user", "content": "hi"}]});
    let (path, got) = translate(Endpoint::CountTokens, count, APISchema::GCPAnthropic);
    assert_eq!(
        path,
        "/v1/projects/my-project/locations/us-central1/publishers/anthropic/models/count-tokens:rawPredict"
    );
    assert_eq!(
        got,
        json!({"model": "claude-sonnet-4-5", "anthropic_version": "vertex-2023-10-16",
               "messages": [{"role": "user", "content": "hi"}]})
    );
    for endpoint in [Endpoint::CountTokens, Endpoint::Responses, Endpoint::Completions] {
        let err = translate_to(
            endpoint,
            &json!({"model": "g", "messages": [], "input": "x", "prompt": "x"}),
            &schema(APISchema::GCPVertexAI),
        )
        .expect_err("Gemini does not serve it");
        assert_eq!(err.status(), 422, "{endpoint:?}: {err}");
    }
}

#[test]
fn what_gemini_cannot_take_is_refused_clearly() {
    let user =
        |content: Value| json!({"model": "g", "messages": [{"role": "user", "content": content}]});
    let with_tools = |parameters: Value| {
        json!({"model": "g", "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]})
    };
    let cases = [
        (
            json!({"model": "g", "messages": [{"role": "system", "content": "only a system prompt"}]}),
            400,
            "no user or assistant",
        ),
        (
            json!({"model": "g", "messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}),
            400,
            "call_9",
        ),
        (user(json!([{"type": "file", "file": {"file_id": "file-abc"}}])), 422, "file ids"),
        (
            user(json!([{"type": "image_url", "image_url": {"url": "https://example.com/image"}}])),
            422,
            "data: URL",
        ),
        (
            user(json!([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}])),
            400,
            "image URL",
        ),
        (
            user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}])),
            422,
            "base64",
        ),
        (user(json!([{"type": "video", "video": {}}])), 422, "\"video\""),
        (
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search"}]}),
            422,
            "function tools",
        ),
        (
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}),
            400,
            "response_format",
        ),
        (
            json!({"model": "g", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
            422,
            "\"function\"",
        ),
        (
            with_tools(json!({"type": "object", "properties": {"next": {"$ref": "#"}}})),
            422,
            "refers to itself",
        ),
        (with_tools(json!({"$ref": "https://example.com/schema.json"})), 422, "local references"),
        (with_tools(json!({"$ref": "#/$defs/missing"})), 400, "points at nothing"),
        (
            with_tools(json!({"type": "object", "properties": {"a": {"type": "tuple"}}})),
            400,
            "\"tuple\"",
        ),
        (with_tools(json!({"type": "array", "items": [{"type": "string"}]})), 422, "tuple"),
        (with_tools(json!({"allOf": [{"type": "object"}, {"type": "object"}]})), 422, "allOf"),
    ];
    for (body, status, says) in cases {
        let err = refusal(body.clone());
        assert_eq!(err.status(), status, "{body} gave {err}");
        assert!(err.to_string().contains(says), "{body} gave {err}, which does not say {says:?}");
    }
    // $refs that multiply a schema past the bound are refused, not expanded.
    let mut defs = serde_json::Map::new();
    defs.insert("d0".into(), json!({"type": "string"}));
    for i in 1..40 {
        let below = format!("#/$defs/d{}", i - 1);
        defs.insert(
            format!("d{i}"),
            json!({"type": "object", "properties": {"a": {"$ref": below}, "b": {"$ref": below}}}),
        );
    }
    let err = refusal(with_tools(json!({"$ref": "#/$defs/d39", "$defs": defs})));
    assert_eq!(err.status(), 422, "{err}");
    assert!(err.to_string().contains("too large"), "{err}");
}

#[test]
fn gemini_response_to_openai_chat() {
    let upstream = json!({
        "candidates": [
            {"content": {"role": "model", "parts": [
                {"text": "The user asks about the weather.", "thought": true},
                {"text": "Let me check "},
                {"text": "the weather."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}
            ]}, "finishReason": "STOP", "avgLogprobs": -0.21},
            {"content": {"role": "model", "parts": [{"text": "It is sunny."}]}, "finishReason": "MAX_TOKENS", "index": 1}
        ],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 5,
                          "cachedContentTokenCount": 40, "totalTokenCount": 125, "trafficType": "ON_DEMAND"},
        "modelVersion": "gemini-2.5-pro",
        "createTime": "2025-06-01T10:00:00.123456Z",
        "responseId": "abc123"
    });
    let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, false);
    let bytes = upstream.to_string().into_bytes();
    let (a, b) = bytes.split_at(9);
    assert!(t.feed(a, false).expect("piece").is_empty(), "JSON waits for the whole body");
    let got: Value = serde_json::from_slice(&t.feed(b, true).expect("rest")).expect("JSON");
    assert_eq!(
        got,
        json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": CREATED, "model": "gemini-2.5-pro",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Let me check the weather.", "tool_calls": [
                    {"id": "call_abc123_0", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                     "extra_content": {"google": {"thought_signature": "c2ln"}}}
                ]}, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": "It is sunny."}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 25, "total_tokens": 125,
                      "prompt_tokens_details": {"cached_tokens": 40}}
        })
    );
    assert_eq!(
        t.usage(),
        Usage { input: 100, output: 25, cached_input: 40, total: 125, ..Default::default() }
    );
}

#[test]
fn gemini_response_to_anthropic_message() {
    let upstream = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"id": "fc_7", "name": "get_weather", "args": {"city": "Paris"}}}
        ]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1"
    });
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, false);
    let got: Value =
        serde_json::from_slice(&feed_whole(&mut t, upstream.to_string().as_bytes())).expect("JSON");
    assert_eq!(
        got,
        json!({
            "id": "msg_r1", "type": "message", "role": "assistant", "model": "gemini-2.5-flash",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "fc_7", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 0}
        })
    );
}

/// Why Gemini stopped, as each client's API says it; a blocked prompt has no candidate and is an
/// empty answer filtered for content.
#[test]
fn gemini_finish_reasons_and_blocked_prompts() {
    let finished = |reason: &str| json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}], "responseId": "r"});
    for (reason, openai, anthropic) in [
        ("STOP", "stop", "end_turn"),
        ("MAX_TOKENS", "length", "max_tokens"),
        ("SAFETY", "content_filter", "refusal"),
        ("RECITATION", "content_filter", "refusal"),
        ("BLOCKLIST", "content_filter", "refusal"),
        ("PROHIBITED_CONTENT", "content_filter", "refusal"),
        ("SPII", "content_filter", "refusal"),
        ("OTHER", "stop", "end_turn"),
    ] {
        let body = finished(reason).to_string();
        let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, false);
        let got: Value =
            serde_json::from_slice(&feed_whole(&mut t, body.as_bytes())).expect("JSON");
        assert_eq!(got["choices"][0]["finish_reason"], openai, "{reason}");
        let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, false);
        let got: Value =
            serde_json::from_slice(&feed_whole(&mut t, body.as_bytes())).expect("JSON");
        assert_eq!(got["stop_reason"], anthropic, "{reason}");
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                         "usageMetadata": {"promptTokenCount": 6, "totalTokenCount": 6}, "responseId": "b"});
    let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, false);
    let got: Value =
        serde_json::from_slice(&feed_whole(&mut t, blocked.to_string().as_bytes())).expect("JSON");
    assert_eq!(
        got["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}])
    );
    assert_eq!(
        t.usage(),
        Usage { input: 6, output: 0, cached_input: 0, total: 6, ..Default::default() }
    );
    let stream = format!("data: {blocked}\r\n\r\n");
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
    let got = sse(&feed_whole(&mut t, stream.as_bytes()));
    assert!(!t.truncated());
    let names: Vec<_> = got.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert_eq!(got[1].1["delta"]["stop_reason"], "refusal");
}

#[test]
fn gemini_stream_to_openai_chunks() {
    let mut t =
        translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, true).include_usage(true);
    let got = sse(&feed_whole(&mut t, GEMINI_STREAM.as_bytes()));
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-gMN8aJ-sK9qWmecP", "object": "chat.completion.chunk", "created": CREATED,
               "model": "gemini-2.5-flash", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let call = json!({"id": "call_gMN8aJ-sK9qWmecP_0", "type": "function", "index": 0,
                      "function": {"name": "get_weather", "arguments": "{\"city\":\"東京\",\"unit\":\"celsius\"}"},
                      "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}});
    let mut usage_chunk = chunk(json!({}), Value::Null);
    usage_chunk["choices"] = json!([]);
    usage_chunk["usage"] = json!({"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50,
                                  "prompt_tokens_details": {"cached_tokens": 8}});
    let want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Météo: il fait beau à 東京"}), Value::Null),
        chunk(json!({"content": ", and in 日本 generally."}), Value::Null),
        chunk(json!({"tool_calls": [call]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk,
        json!("[DONE]"),
    ];
    assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), want);
    assert_eq!(
        t.usage(),
        Usage { input: 30, output: 20, cached_input: 8, total: 50, ..Default::default() }
    );
    assert!(!t.truncated());

    // Without include_usage the client gets no usage chunk; the gateway still counts.
    let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, true);
    let got = sse(&feed_whole(&mut t, GEMINI_STREAM.as_bytes()));
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|(_, d)| d.get("usage").is_none()));
    assert_eq!(t.usage().total, 50);
}

#[test]
fn gemini_stream_to_anthropic_events() {
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
    let got = sse(&feed_whole(&mut t, GEMINI_STREAM.as_bytes()));
    let names: Vec<_> = got.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(got[0].1["message"]["id"], "msg_gMN8aJ-sK9qWmecP");
    assert_eq!(got[0].1["message"]["model"], "gemini-2.5-flash");
    assert_eq!(
        got[2].1["delta"],
        json!({"type": "text_delta", "text": "Météo: il fait beau à 東京"})
    );
    assert_eq!(
        got[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_gMN8aJ-sK9qWmecP_0", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        got[6].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"東京\",\"unit\":\"celsius\"}"})
    );
    assert_eq!(
        got[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 22, "output_tokens": 20, "cache_read_input_tokens": 8}})
    );
}

/// Every way of cutting a Gemini stream in two gives what feeding it whole gives (cuts inside
/// "é", "東京", CRLF pairs), for both clients, and output flows before the body ends.
#[test]
fn gemini_streams_split_at_every_byte_give_the_same_output() {
    for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
        assert_same_however_split(
            || translator(endpoint, APISchema::GCPVertexAI, true).include_usage(true),
            GEMINI_STREAM.as_bytes(),
            &format!("{endpoint:?}"),
        );
    }
}

/// A Gemini stream that ends before a finish reason was cut: each client gets an error event,
/// not an answer that looks whole.
#[test]
fn cut_gemini_streams_end_with_an_error() {
    let last = GEMINI_STREAM.rfind("data: ").expect("events");
    for cut in [last, last + 40, GEMINI_STREAM.len() - 30] {
        let input = &GEMINI_STREAM.as_bytes()[..cut];
        let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, true);
        let got = sse(&feed_whole(&mut t, input));
        assert!(t.truncated(), "cut at {cut}");
        assert_eq!(
            got.last().map(|(_, d)| d["error"]["type"].clone()),
            Some(json!("server_error"))
        );
        assert!(!got.iter().any(|(_, d)| d == "[DONE]"));
        let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
        let got = sse(&feed_whole(&mut t, input));
        assert!(t.truncated(), "cut at {cut}");
        assert_eq!(got.last().map(|(n, _)| n.clone()), Some(Some("error".to_string())));
    }
}

#[test]
fn gemini_stream_errors_reach_the_client() {
    let stream = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]}}],\"responseId\":\"e\"}\r\n\r\n\
                  data: {\"error\":{\"code\":429,\"message\":\"Resource exhausted, retry later\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
    let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, true);
    let got = sse(&feed_whole(&mut t, stream.as_bytes()));
    assert_eq!(
        got.last().map(|(_, d)| d["error"]["message"].clone()),
        Some(json!("Resource exhausted, retry later"))
    );
    assert!(!t.truncated());
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
    let got = sse(&feed_whole(&mut t, stream.as_bytes()));
    assert_eq!(
        got.last().cloned(),
        Some((
            Some("error".into()),
            json!({"type": "error", "error": {"type": "api_error", "message": "Resource exhausted, retry later"}})
        ))
    );
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
    let err = t.feed(b"data: {not json\r\n\r\n", false).expect_err("bad event");
    assert_eq!(err.status(), 502);
}

/// Anthropic on Vertex answers as Anthropic does: an Anthropic client gets the bytes as they
/// came, an OpenAI client a translation.
#[test]
fn anthropic_on_vertex_responses() {
    let mut t = translator(Endpoint::Messages, APISchema::GCPAnthropic, true);
    assert_eq!(feed_whole(&mut t, ANTHROPIC_STREAM.as_bytes()), ANTHROPIC_STREAM.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 35, output: 42, cached_input: 10, total: 77, ..Default::default() }
    );
    let mut t = translator(Endpoint::ChatCompletions, APISchema::GCPAnthropic, true);
    let got = sse(&feed_whole(&mut t, ANTHROPIC_STREAM.as_bytes()));
    assert_eq!(got.last(), Some(&(None, json!("[DONE]"))));
    assert_eq!(
        t.usage(),
        Usage { input: 35, output: 42, cached_input: 10, total: 77, ..Default::default() }
    );
}

#[test]
fn google_errors_become_the_clients_format() {
    let google = br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute","status":"RESOURCE_EXHAUSTED"}}"#;
    for backend in [APISchema::GCPVertexAI, APISchema::GCPAnthropic] {
        let got: Value = serde_json::from_slice(&translate_error(
            ClientSchema::OpenAI,
            backend,
            429,
            &[],
            google,
        ))
        .expect("JSON");
        assert_eq!(
            got,
            json!({"error": {"message": "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute",
                             "type": "rate_limit_error", "param": null, "code": "RESOURCE_EXHAUSTED"}})
        );
        let got: Value = serde_json::from_slice(&translate_error(
            ClientSchema::Anthropic,
            backend,
            429,
            &[],
            google,
        ))
        .expect("JSON");
        assert_eq!(got["type"], "error");
        assert_eq!(got["error"]["type"], "rate_limit_error");
    }
    // Anthropic's own errors from rawPredict reach an Anthropic client as they are.
    let anthropic =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(
        translate_error(ClientSchema::Anthropic, APISchema::GCPAnthropic, 529, &[], anthropic),
        anthropic
    );
}

/// Random bytes and mangled fixtures, as requests and as responses, never panic.
#[test]
fn nothing_panics_on_random_input() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: [&[u8]; 3] = [
        GEMINI_STREAM.as_bytes(),
        br##"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"$ref":"#/$defs/a","$defs":{"a":{"type":"object"}}}}}]}"##,
        br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}]}"#,
    ];
    for round in 0..3000 {
        let mut input = seeds[round % seeds.len()].to_vec();
        let junk = b"{}[]\":,\n\r ae\x00\xff#$";
        for _ in 0..(next() % 6) {
            let i = (next() as usize) % input.len();
            input[i] = junk[(next() as usize) % junk.len()];
        }
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
            if let Ok(req) = parse_request(endpoint, &input) {
                for name in [APISchema::GCPVertexAI, APISchema::GCPAnthropic] {
                    let _ = translate_request(
                        &req,
                        Target::new(&schema(name)).in_vertex(LOCATION),
                        None,
                    );
                }
            }
            for stream in [false, true] {
                let mut t = translator(endpoint, APISchema::GCPVertexAI, stream);
                let cut = (next() as usize) % (input.len() + 1);
                let _ = t.feed(&input[..cut], false);
                let _ = t.feed(&input[cut..], true);
            }
            let _ =
                translate_error(endpoint.client_schema(), APISchema::GCPVertexAI, 500, &[], &input);
        }
    }
}

fn provider_fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/providers/vertex/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The provider fixtures (Vertex's documented response and stream shapes) through both clients'
/// translators, streams at every byte split.
#[test]
fn vertex_provider_fixtures_translate_for_both_clients() {
    let json = |endpoint, name| -> (Value, Usage) {
        let mut t = translator(endpoint, APISchema::GCPVertexAI, false);
        let out = feed_whole(&mut t, &provider_fixture(name));
        (serde_json::from_slice(&out).expect("JSON"), t.usage())
    };
    let (chat, usage) = json(Endpoint::ChatCompletions, "gemini-generate.json");
    assert_eq!(
        chat["choices"][0]["message"],
        json!({"role": "assistant", "content": "Paris is the capital of France."})
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        usage,
        Usage { input: 9, output: 8, cached_input: 0, total: 17, ..Default::default() }
    );
    let (message, _) = json(Endpoint::Messages, "gemini-generate.json");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Paris is the capital of France."}])
    );
    assert_eq!(message["stop_reason"], "end_turn");

    let (chat, _) = json(Endpoint::ChatCompletions, "gemini-generate-function-call.json");
    let calls = &chat["choices"][0]["message"]["tool_calls"];
    assert_eq!(chat["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        calls[0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"})
    );
    assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Lyon\",\"unit\":\"celsius\"}");
    assert_ne!(calls[0]["id"], calls[1]["id"], "parallel calls get ids of their own");
    let (message, _) = json(Endpoint::Messages, "gemini-generate-function-call.json");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][1]["input"], json!({"city": "Lyon", "unit": "celsius"}));

    let (chat, usage) = json(Endpoint::ChatCompletions, "gemini-generate-safety.json");
    assert_eq!(chat["choices"][0]["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        usage,
        Usage { input: 12, output: 0, cached_input: 0, total: 12, ..Default::default() }
    );
    let (message, _) = json(Endpoint::Messages, "gemini-generate-safety.json");
    assert_eq!(
        (message["stop_reason"].clone(), message["content"].clone()),
        (json!("refusal"), json!([]))
    );

    for (name, text, finish) in [
        ("gemini-stream.sse", "Paris is the capital of France.", "stop"),
        ("gemini-stream-function-call.sse", "", "tool_calls"),
    ] {
        let input = provider_fixture(name);
        let mut whole =
            translator(Endpoint::ChatCompletions, APISchema::GCPVertexAI, true).include_usage(true);
        let out = feed_whole(&mut whole, &input);
        let events: Vec<Value> = sse(&out).into_iter().map(|(_, d)| d).collect();
        let streamed: String = events
            .iter()
            .filter_map(|e| e.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect();
        assert_eq!(streamed, text, "{name}");
        assert!(
            events.iter().any(|e| e.pointer("/choices/0/finish_reason") == Some(&json!(finish))),
            "{name}"
        );
        assert_eq!(events.last(), Some(&json!("[DONE]")), "{name}");
        assert!(!whole.truncated(), "{name}");
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
            let mut reference = translator(endpoint, APISchema::GCPVertexAI, true);
            let want = feed_whole(&mut reference, &input);
            for at in 0..=input.len() {
                let mut t = translator(endpoint, APISchema::GCPVertexAI, true);
                let mut got = t.feed(&input[..at], false).expect("first piece");
                got.extend(t.feed(&input[at..], true).expect("second piece"));
                assert_eq!(got, want, "{name} for {endpoint:?} split at {at}");
                assert_eq!(t.usage(), reference.usage());
            }
        }
    }
    let mut t = translator(Endpoint::Messages, APISchema::GCPVertexAI, true);
    let events = sse(&feed_whole(&mut t, &provider_fixture("gemini-stream-function-call.sse")));
    let tool = events
        .iter()
        .find(|(n, _)| n.as_deref() == Some("content_block_start"))
        .expect("a tool_use block");
    assert_eq!(tool.1["content_block"]["name"], "get_weather");
    assert_eq!(
        t.usage(),
        Usage { input: 41, output: 11, cached_input: 0, total: 52, ..Default::default() }
    );

    let error: Value =
        serde_json::from_slice(&provider_fixture("gemini-error.json")).expect("JSON");
    let body = error["body"].to_string();
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::OpenAI,
        APISchema::GCPVertexAI,
        400,
        &[],
        body.as_bytes(),
    ))
    .expect("JSON");
    assert_eq!(got["error"]["type"], "invalid_request_error");
    assert_eq!(got["error"]["code"], "INVALID_ARGUMENT");
    assert!(got["error"]["message"].as_str().is_some_and(|m| m.contains("additionalProperties")));
    let got: Value = serde_json::from_slice(&translate_error(
        ClientSchema::Anthropic,
        APISchema::GCPVertexAI,
        400,
        &[],
        body.as_bytes(),
    ))
    .expect("JSON");
    assert_eq!(got["error"]["type"], "invalid_request_error");
}

/// OpenAI embeddings reach Google's embedding models at `predict`, one instance per text, and
/// come back as the OpenAI list the client asked for, with the instances' tokens as usage.
#[test]
fn openai_embeddings_to_vertex_predict_and_back() {
    let (path, body) = translate(
        Endpoint::Embeddings,
        json!({"model": "text-embedding-005", "input": ["a b", "c"], "dimensions": 64,
               "task_type": "RETRIEVAL_QUERY", "user": "u1"}),
        APISchema::GCPVertexAI,
    );
    assert_eq!(
        path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/\
         text-embedding-005:predict"
    );
    assert_eq!(
        body,
        json!({"instances": [{"content": "a b", "task_type": "RETRIEVAL_QUERY"},
                             {"content": "c", "task_type": "RETRIEVAL_QUERY"}],
               "parameters": {"outputDimensionality": 64}})
    );
    let (_, body) = translate(
        Endpoint::Embeddings,
        json!({"model": "text-embedding-005", "input": "a"}),
        APISchema::GCPVertexAI,
    );
    assert_eq!(body, json!({"instances": [{"content": "a"}]}));

    let answer = json!({"predictions": [
        {"embeddings": {"values": [0.5, 1.0], "statistics": {"truncated": false, "token_count": 2}}},
        {"embeddings": {"values": [-1.0, 0.0], "statistics": {"truncated": false, "token_count": 1.0}}}
    ], "metadata": {"billableCharacterCount": 4}});
    let mut t = translator(Endpoint::Embeddings, APISchema::GCPVertexAI, false)
        .model("text-embedding-005")
        .base64_embeddings(true);
    let out = feed_whole(&mut t, answer.to_string().as_bytes());
    let out: Value = serde_json::from_slice(&out).expect("JSON");
    let decoded: Vec<Vec<f32>> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let bytes = STANDARD.decode(d["embedding"].as_str().expect("base64")).unwrap();
            bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        })
        .collect();
    assert_eq!(decoded, vec![vec![0.5, 1.0], vec![-1.0, 0.0]]);
    assert_eq!(out["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    assert_eq!((out["model"].as_str(), t.usage().input), (Some("text-embedding-005"), 3));

    // Token ids cannot be embedded, and a Vertex backend without a location has no path.
    let err = translate_to(
        Endpoint::Embeddings,
        &json!({"model": "text-embedding-005", "input": [[1, 2]]}),
        &schema(APISchema::GCPVertexAI),
    )
    .expect_err("refused");
    assert_eq!(err.status(), 422, "{err}");
    let req = parse(Endpoint::Embeddings, &json!({"model": "m", "input": "a"}));
    let err = translate_request(&req, Target::new(&schema(APISchema::GCPVertexAI)), None)
        .expect_err("no location");
    assert_eq!(err.status(), 503, "{err}");
}
