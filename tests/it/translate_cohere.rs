//! Translation to and from Cohere's API v2: OpenAI and Anthropic chat requests to Cohere chat,
//! Cohere answers and streams (the provider fixtures, split at every byte) back, OpenAI
//! embeddings to Cohere's embed and back, Cohere's rerank passed through, and errors in every
//! client's format.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    ClientSchema, Endpoint, ResponseTranslator, Target, TranslateError, Usage, error_body,
    parse_request, response_translator, translate_error, translate_request,
};
use serde_json::{Value, json};

use super::translate::{CREATED, Rng, assert_same_however_split, backend, parse, sse};

const CHAT: &str = include_str!("../fixtures/providers/cohere/chat.json");
const CHAT_TOOL_CALL: &str = include_str!("../fixtures/providers/cohere/chat-tool-call.json");
const CHAT_STREAM: &str = include_str!("../fixtures/providers/cohere/chat-stream.sse");
const CHAT_STREAM_TOOL_CALL: &str =
    include_str!("../fixtures/providers/cohere/chat-stream-tool-call.sse");
const EMBED: &str = include_str!("../fixtures/providers/cohere/embed.json");
const RERANK: &str = include_str!("../fixtures/providers/cohere/rerank.json");
const ERROR: &str = include_str!("../fixtures/providers/cohere/error.json");
/// Our own stream: thinking, a tool plan in "é" and "日本", two tool calls.
const STREAM: &str = include_str!("../fixtures/translate/cohere_stream.sse");
const MODEL: &str = "command-a-03-2025";

/// `body` (a request to `endpoint`) as sent to a Cohere backend: path and JSON.
fn to_cohere(endpoint: Endpoint, body: Value) -> (String, Value) {
    let t =
        translate_request(&parse(endpoint, &body), Target::new(&backend(APISchema::Cohere)), None)
            .expect("translates");
    (t.path, serde_json::from_slice(&t.body).expect("translated body is JSON"))
}

fn refused(endpoint: Endpoint, body: Value) -> TranslateError {
    translate_request(&parse(endpoint, &body), Target::new(&backend(APISchema::Cohere)), None)
        .expect_err("refused")
}

/// The translator of a Cohere backend's response to a request of `endpoint` for [`MODEL`].
fn translator(endpoint: Endpoint, stream: bool) -> ResponseTranslator {
    response_translator(endpoint, APISchema::Cohere, stream)
        .include_usage(true)
        .with_created(CREATED)
        .model(MODEL)
}

fn feed_whole(t: &mut ResponseTranslator, input: &[u8]) -> Vec<u8> {
    t.feed(input, true).expect("whole body")
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

// ---- requests ----

#[test]
fn cohere_paths_are_recognised_and_belong_to_cohere() {
    assert_eq!(Endpoint::from_path("/cohere/v2/rerank"), Some(Endpoint::Rerank));
    assert_eq!(Endpoint::from_path("/cohere/v2/rerank/?x=1"), Some(Endpoint::Rerank));
    assert_eq!(Endpoint::from_path("/cohere/v2/chat"), None);
    assert_eq!(Endpoint::from_path("/v2/rerank"), None);
    assert_eq!(Endpoint::Rerank.client_schema(), ClientSchema::Cohere);
    for path in ["/cohere", "/cohere/v2/rerank", "/cohere/v2/chat?x", "/cohere/v1/models"] {
        assert_eq!(ClientSchema::of_path(path), ClientSchema::Cohere, "{path}");
    }
    for path in ["/coherent", "/v2/rerank", "/v1/rerank"] {
        assert_eq!(ClientSchema::of_path(path), ClientSchema::OpenAI, "{path}");
    }
    let err = Endpoint::parse("/v2/chat").expect_err("unknown");
    assert!(err.to_string().contains("/cohere/v2/rerank"), "{err}");
}

#[test]
fn openai_chat_to_cohere_request() {
    let body = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time in Paris? See: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "assistant", "content": "18°C at noon."},
            {"role": "user", "content": "Thanks", "name": "ann"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "strict": true,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u1",
        "logprobs": false,
        "n": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w",
            "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}}
    });
    let (path, got) = to_cohere(Endpoint::ChatCompletions, body);
    assert_eq!(path, "/v2/chat");
    assert_eq!(
        got,
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather and time in Paris? See: "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}}
                ]},
                {"role": "assistant", "tool_plan": "Checking both.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
                {"role": "assistant", "content": "18°C at noon."},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time"}}
            ],
            "tool_choice": "REQUIRED",
            "max_tokens": 300,
            "temperature": 0.2,
            "p": 0.9,
            "stop_sequences": ["END"],
            "seed": 7,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.3,
            "stream": true,
            "response_format": {"type": "json_object",
                "json_schema": {"type": "object", "properties": {"t": {"type": "number"}}}}
        })
    );
}

#[test]
fn openai_chat_simple_forms_and_choices() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([
        {"type": "function", "function": {"name": "a", "strict": true}},
        {"type": "function", "function": {"name": "b", "strict": true}}
    ]);
    let with = |extra: Value| {
        let mut body = json!({"model": "m", "messages": user});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        to_cohere(Endpoint::ChatCompletions, body).1
    };
    let got = with(json!({"stop": "END", "max_tokens": 5, "top_p": 1.0}));
    assert_eq!(
        got,
        json!({"model": "m", "messages": user, "stop_sequences": ["END"], "max_tokens": 5, "p": 0.99})
    );
    assert_eq!(with(json!({"top_p": 0}))["p"], json!(0.01));
    // Every tool asks for strict arguments: Cohere's strictness covers them all.
    let got = with(json!({"tools": tools}));
    assert_eq!((got["strict_tools"].clone(), got.get("tool_choice")), (json!(true), None));
    assert_eq!(with(json!({"tools": tools, "tool_choice": "auto"})).get("tool_choice"), None);
    assert_eq!(with(json!({"tools": tools, "tool_choice": "none"}))["tool_choice"], "NONE");
    // A named function: only that tool is offered, and it must be called.
    let got = with(
        json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "b"}}}),
    );
    assert_eq!(got["tool_choice"], "REQUIRED");
    assert_eq!(got["tools"], json!([{"type": "function", "function": {"name": "b"}}]));
    // Without tools there is nothing to choose.
    let got = with(json!({"tool_choice": "required"}));
    assert_eq!((got.get("tool_choice"), got.get("tools")), (None, None));
    assert_eq!(
        with(json!({"response_format": {"type": "json_object"}}))["response_format"],
        json!({"type": "json_object"})
    );
    assert_eq!(with(json!({"response_format": {"type": "text"}})).get("response_format"), None);

    // An assistant message that says nothing is left out; an empty tool result is an empty
    // document (Cohere refuses empty content).
    let messages = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "well?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": ""}
    ]);
    let got = to_cohere(Endpoint::ChatCompletions, json!({"model": "m", "messages": messages})).1;
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "well?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": {}}}]}
        ])
    );
}

#[test]
fn what_cohere_cannot_take_is_refused_clearly() {
    let chat = |extra: Value, messages: Value| {
        let mut body = json!({"model": "m", "messages": messages});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        refused(Endpoint::ChatCompletions, body)
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let unsupported = [
        chat(json!({"n": 2}), hi.clone()),
        chat(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}), hi.clone()),
        chat(
            json!({}),
            json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]),
        ),
        chat(json!({}), json!([{"role": "function", "name": "f", "content": "x"}])),
    ];
    for err in unsupported {
        assert!(matches!(err, TranslateError::Unsupported(_)), "{err:?}");
        assert_eq!(err.status(), 422);
        assert!(err.to_string().contains("Cohere"), "{err}");
    }
    let invalid = [
        chat(
            json!({"tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": {"type": "function", "function": {"name": "zz"}}}),
            hi.clone(),
        ),
        chat(json!({}), json!([{"role": "tool", "content": "x"}])),
        chat(
            json!({}),
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "a", "arguments": "{no"}}]}]),
        ),
        chat(json!({"top_p": "high"}), hi.clone()),
        chat(json!({}), json!("hi")),
    ];
    for err in invalid {
        assert!(matches!(err, TranslateError::InvalidRequest(_)), "{err:?}");
        assert_eq!(err.status(), 400);
    }
    // Completions, the Responses API and token counting are no Cohere APIs.
    for endpoint in [Endpoint::Completions, Endpoint::Responses, Endpoint::CountTokens] {
        let err = refused(endpoint, json!({"model": "m", "prompt": "x", "messages": hi}));
        assert_eq!(err.status(), 422, "{endpoint:?}");
        assert!(err.to_string().contains("Cohere"), "{err}");
    }
}

#[test]
fn anthropic_messages_to_cohere_request() {
    let body = json!({
        "model": "command-r",
        "max_tokens": 200,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1"},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "Weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 1.0,
        "top_k": 5,
        "stream": true,
        "metadata": {"user_id": "u"}
    });
    let (path, got) = to_cohere(Endpoint::Messages, body);
    assert_eq!(path, "/v2/chat");
    assert_eq!(
        got,
        json!({
            "model": "command-r",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "tool_plan": "Let me check.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "document", "document": {"data": {}}}]},
                {"role": "user", "content": "And tomorrow?"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "REQUIRED",
            "max_tokens": 200,
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "p": 0.99,
            "stream": true
        })
    );
}

#[test]
fn the_version_or_prefix_is_the_root_of_cohere_paths() {
    let req = parse(Endpoint::ChatCompletions, &json!({"model": "m", "messages": []}));
    let path = |version: Option<&str>, prefix: Option<&str>| {
        let schema = VersionedAPISchema {
            name: APISchema::Cohere,
            version: version.map(str::to_string),
            prefix: prefix.map(str::to_string),
        };
        translate_request(&req, Target::new(&schema), None).expect("translates").path
    };
    assert_eq!(path(None, None), "/v2/chat");
    assert_eq!(path(Some("v2"), None), "/v2/chat");
    assert_eq!(path(Some(""), None), "/v2/chat");
    assert_eq!(path(Some("v2"), Some("/cohere/v2/")), "/cohere/v2/chat");
}

// ---- responses ----

#[test]
fn cohere_chat_answers_become_openai_completions() {
    let mut t = translator(Endpoint::ChatCompletions, false);
    assert_eq!(t.content_type(), "application/json");
    let got = json_of(&feed_whole(&mut t, CHAT.as_bytes()));
    assert_eq!(
        got,
        json!({
            "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Paris is the capital of France."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        })
    );
    // What Cohere bills, not the tokens of its own prompt template.
    assert_eq!(
        t.usage(),
        Usage { input: 9, output: 8, cached_input: 0, total: 17, ..Default::default() }
    );

    let mut t = translator(Endpoint::ChatCompletions, false);
    let got = json_of(&feed_whole(&mut t, CHAT_TOOL_CALL.as_bytes()));
    assert_eq!(
        got["choices"],
        json!([{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant",
            "content": "I will look up the weather in Paris.",
            "tool_calls": [{"id": "get_weather_1byjy32y4hvq", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]
        }}])
    );
    assert_eq!(
        t.usage(),
        Usage { input: 37, output: 21, cached_input: 0, total: 58, ..Default::default() }
    );

    let mut t = translator(Endpoint::Messages, false);
    let got = json_of(&feed_whole(&mut t, CHAT_TOOL_CALL.as_bytes()));
    assert_eq!(
        got,
        json!({
            "id": "msg_5b5e1d2c-7f0a-4d2e-9c61-3a8f2b6d4e10",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [
                {"type": "text", "text": "I will look up the weather in Paris."},
                {"type": "tool_use", "id": "get_weather_1byjy32y4hvq", "name": "get_weather",
                 "input": {"city": "Paris", "unit": "celsius"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 37, "output_tokens": 21, "cache_read_input_tokens": 0}
        })
    );
}

#[test]
fn finish_reasons_map_and_a_failed_answer_is_an_error() {
    let chat: Value = serde_json::from_str(CHAT).expect("fixture");
    for (reason, openai, anthropic) in [
        ("COMPLETE", "stop", "end_turn"),
        ("STOP_SEQUENCE", "stop", "end_turn"),
        ("MAX_TOKENS", "length", "max_tokens"),
    ] {
        let mut body = chat.clone();
        body["finish_reason"] = json!(reason);
        let mut t = translator(Endpoint::ChatCompletions, false);
        let got = json_of(&feed_whole(&mut t, body.to_string().as_bytes()));
        assert_eq!(got["choices"][0]["finish_reason"], openai, "{reason}");
        let mut t = translator(Endpoint::Messages, false);
        let got = json_of(&feed_whole(&mut t, body.to_string().as_bytes()));
        assert_eq!(got["stop_reason"], anthropic, "{reason}");
    }
    let mut body = chat;
    body["finish_reason"] = json!("ERROR");
    let mut t = translator(Endpoint::ChatCompletions, false);
    let err = t.feed(body.to_string().as_bytes(), true).expect_err("a failed answer");
    assert_eq!(err.status(), 502);
    assert!(err.to_string().contains("finish_reason ERROR"), "{err}");
    let got = json_of(&t.failure(&err.to_string()));
    assert_eq!(got["error"]["type"], "server_error");

    let mut t = translator(Endpoint::ChatCompletions, false);
    let err = t.feed(b"<html>bad gateway</html>", true).expect_err("not JSON");
    assert_eq!(err.status(), 502);
}

fn chunk(id: &str, delta: Value, finish: Value) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(id: &str, input: u64, output: u64) -> Value {
    json!({"id": id, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL, "choices": [],
           "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
                     "prompt_tokens_details": {"cached_tokens": 0}}})
}

/// The data of each event, asserting OpenAI's unnamed events.
fn openai_data(out: &[u8]) -> Vec<Value> {
    sse(out)
        .into_iter()
        .map(|(name, data)| {
            assert_eq!(name, None);
            data
        })
        .collect()
}

#[test]
fn cohere_streams_become_openai_chunks() {
    let id = "29f14a5a-11de-4cae-9800-25e4747408ea";
    let mut t = translator(Endpoint::ChatCompletions, true);
    assert_eq!(t.content_type(), "text/event-stream");
    let got = openai_data(&feed_whole(&mut t, CHAT_STREAM.as_bytes()));
    assert_eq!(
        got,
        vec![
            chunk(id, json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(id, json!({"content": "Paris is"}), Value::Null),
            chunk(id, json!({"content": " the capital of France."}), Value::Null),
            chunk(id, json!({}), json!("stop")),
            usage_chunk(id, 9, 8),
            json!("[DONE]"),
        ]
    );
    assert_eq!(
        (t.usage(), t.truncated()),
        (Usage { input: 9, output: 8, cached_input: 0, total: 17, ..Default::default() }, false)
    );

    let mut t = translator(Endpoint::ChatCompletions, true);
    let got = openai_data(&feed_whole(&mut t, CHAT_STREAM_TOOL_CALL.as_bytes()));
    let call = |v: Value| chunk(id, json!({"tool_calls": [v]}), Value::Null);
    assert_eq!(
        got,
        vec![
            chunk(id, json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(id, json!({"content": "I will look up"}), Value::Null),
            chunk(id, json!({"content": " the weather in Paris."}), Value::Null),
            call(json!({"index": 0, "id": "get_weather_1byjy32y4hvq", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}})),
            call(json!({"index": 0, "function": {"arguments": "{\"city\":\"Pa"}})),
            call(json!({"index": 0, "function": {"arguments": "ris\",\"unit\":\"celsius\"}"}})),
            chunk(id, json!({}), json!("tool_calls")),
            usage_chunk(id, 37, 21),
            json!("[DONE]"),
        ]
    );

    // Thinking has no chunk; the tool plan is what the model says; calls keep their order.
    let id = "0f6e1c2a-5b7d-4e3f-9a81-2c4d6e8f0a1b";
    let mut t = translator(Endpoint::ChatCompletions, true);
    let got = openai_data(&feed_whole(&mut t, STREAM.as_bytes()));
    assert_eq!(
        got,
        vec![
            chunk(id, json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(id, json!({"content": "Café in 日本"}), Value::Null),
            chunk(id, json!({"content": ": checking."}), Value::Null),
            call_in(
                id,
                json!({"index": 0, "id": "get_weather_k3j2m8", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}})
            ),
            call_in(id, json!({"index": 0, "function": {"arguments": "{\"city\": \"Tō"}})),
            call_in(id, json!({"index": 0, "function": {"arguments": "kyō\"}"}})),
            call_in(
                id,
                json!({"index": 1, "id": "get_time_9x1b4q", "type": "function",
                               "function": {"name": "get_time", "arguments": "{}"}})
            ),
            chunk(id, json!({}), json!("tool_calls")),
            usage_chunk(id, 31, 24),
            json!("[DONE]"),
        ]
    );
}

fn call_in(id: &str, call: Value) -> Value {
    chunk(id, json!({"tool_calls": [call]}), Value::Null)
}

#[test]
fn cohere_streams_become_anthropic_events() {
    let mut t = translator(Endpoint::Messages, true);
    let got = sse(&feed_whole(&mut t, STREAM.as_bytes()));
    let names: Vec<&str> = got.iter().map(|(name, _)| name.as_deref().unwrap_or("")).collect();
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
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(got[0].1["message"]["model"], MODEL);
    assert_eq!(got[0].1["message"]["id"], "msg_0f6e1c2a-5b7d-4e3f-9a81-2c4d6e8f0a1b");
    assert_eq!(got[2].1["delta"], json!({"type": "text_delta", "text": "Café in 日本"}));
    assert_eq!(
        got[9].1["content_block"],
        json!({"type": "tool_use", "id": "get_time_9x1b4q", "name": "get_time", "input": {}})
    );
    assert_eq!(
        got[12].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 31, "output_tokens": 24, "cache_read_input_tokens": 0}})
    );
}

/// Every way of cutting a stream in two gives what feeding it whole gives, including cuts inside
/// "é" and "日本"; fed byte by byte, events go out as they complete.
#[test]
fn cohere_streams_split_at_every_byte_give_the_same_output() {
    assert!(STREAM.contains('é') && STREAM.contains("日本"));
    for endpoint in [Endpoint::ChatCompletions, Endpoint::Messages] {
        for input in [STREAM, CHAT_STREAM_TOOL_CALL] {
            assert_same_however_split(
                || translator(endpoint, true),
                input.as_bytes(),
                &format!("{endpoint:?}"),
            );
        }
    }
}

#[test]
fn a_cohere_stream_cut_before_message_end_ends_in_an_error() {
    let cut = &CHAT_STREAM[..CHAT_STREAM.find("event: message-end").expect("fixture")];
    let mut t = translator(Endpoint::ChatCompletions, true);
    let got = openai_data(&feed_whole(&mut t, cut.as_bytes()));
    assert!(t.truncated());
    let last = got.last().expect("events");
    assert_eq!(last["error"]["type"], "server_error", "{got:?}");
    assert!(!got.contains(&json!("[DONE]")));

    let mut t = translator(Endpoint::Messages, true);
    let got = sse(&feed_whole(&mut t, cut.as_bytes()));
    assert!(t.truncated());
    assert_eq!(got.last().map(|(name, _)| name.as_deref()), Some(Some("error")));
    assert!(got.iter().all(|(name, _)| name.as_deref() != Some("message_stop")));
}

#[test]
fn a_cohere_stream_that_fails_ends_in_an_error_in_the_clients_format() {
    let failed = CHAT_STREAM.replace("\"COMPLETE\"", "\"ERROR\"");
    let mut t = translator(Endpoint::ChatCompletions, true);
    let got = openai_data(&feed_whole(&mut t, failed.as_bytes()));
    assert!(!t.truncated(), "the upstream said why it stopped");
    assert_eq!(
        got.last(),
        Some(&json!({"error": {"message": "the model's answer failed (finish_reason ERROR)",
                               "type": "server_error", "param": null, "code": null}}))
    );
    let mut t = translator(Endpoint::Messages, true);
    let got = sse(&feed_whole(&mut t, failed.as_bytes()));
    assert_eq!(
        got.last().map(|(_, data)| data["error"]["message"].clone()),
        Some(json!("the model's answer failed (finish_reason ERROR)"))
    );
}

// ---- embeddings ----

#[test]
fn openai_embeddings_to_cohere_embed() {
    let (path, got) = to_cohere(
        Endpoint::Embeddings,
        json!({"model": "embed-v4.0", "input": "hello", "dimensions": 512, "user": "u", "stream": true}),
    );
    assert_eq!(path, "/v2/embed");
    assert_eq!(
        got,
        json!({"model": "embed-v4.0", "input_type": "search_document", "texts": ["hello"],
               "embedding_types": ["float"], "output_dimension": 512})
    );
    let (_, got) = to_cohere(
        Endpoint::Embeddings,
        json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64", "input_type": "search_query"}),
    );
    assert_eq!(
        got,
        json!({"model": "e", "input_type": "search_query", "texts": ["a", "b"], "embedding_types": ["base64"]})
    );
    let err = refused(Endpoint::Embeddings, json!({"model": "e", "input": [[1, 2], [3]]}));
    assert_eq!(err.status(), 422);
    assert!(err.to_string().contains("token ids"), "{err}");
    for body in [
        json!({"model": "e"}),
        json!({"model": "e", "input": "x", "encoding_format": "int8"}),
        json!({"model": "e", "input": "x", "input_type": 3}),
    ] {
        assert_eq!(refused(Endpoint::Embeddings, body.clone()).status(), 400, "{body}");
    }
    // Embeddings are never streamed, whatever the body says.
    let parsed = parse_request(Endpoint::Embeddings, br#"{"model":"e","input":"x","stream":true}"#)
        .expect("parses");
    assert!(!parsed.stream);
}

#[test]
fn cohere_embeddings_become_an_openai_list() {
    let mut t = translator(Endpoint::Embeddings, false);
    let got = json_of(&feed_whole(&mut t, EMBED.as_bytes()));
    assert_eq!(
        got,
        json!({
            "object": "list",
            "data": [
                {"object": "embedding", "index": 0, "embedding": [0.016296387, -0.008354187, -0.04699707, 0.07104492]},
                {"object": "embedding", "index": 1, "embedding": [0.013763428, 0.0119018555, -0.05621338, 0.06585693]}
            ],
            "model": MODEL,
            "usage": {"prompt_tokens": 2, "total_tokens": 2}
        })
    );
    assert_eq!(
        t.usage(),
        Usage { input: 2, output: 0, cached_input: 0, total: 2, ..Default::default() }
    );
    // Base64 is OpenAI's encoding too (little-endian float32s): it passes as it comes.
    let base64 = json!({"id": "x", "embeddings": {"base64": ["AACAPw==", "AAAAQA=="]},
                        "meta": {"billed_units": {"input_tokens": 3}}, "response_type": "embeddings_by_type"});
    let mut t = translator(Endpoint::Embeddings, false);
    let got = json_of(&feed_whole(&mut t, base64.to_string().as_bytes()));
    assert_eq!(got["data"][1], json!({"object": "embedding", "index": 1, "embedding": "AAAAQA=="}));
    assert_eq!(got["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let mut t = translator(Endpoint::Embeddings, false);
    let err = t.feed(br#"{"id":"x","embeddings":{"int8":[[1]]}}"#, true).expect_err("no floats");
    assert_eq!(err.status(), 502);
}

// ---- rerank ----

#[test]
fn rerank_passes_to_cohere_with_the_model_overridden() {
    let body = json!({"model": "rerank-v3.5", "query": "capital of France", "documents": ["a", "b"], "top_n": 1, "stream": true});
    let parsed = parse(Endpoint::Rerank, &body);
    assert!(!parsed.stream, "a ranking comes whole");
    let t = translate_request(
        &parsed,
        Target::new(&backend(APISchema::Cohere)),
        Some("rerank-english-v3.0"),
    )
    .expect("translates");
    assert_eq!((t.path.as_str(), t.model.as_str()), ("/v2/rerank", "rerank-english-v3.0"));
    let mut want = body.clone();
    want["model"] = json!("rerank-english-v3.0");
    assert_eq!(json_of(&t.body), want);

    for other in [APISchema::OpenAI, APISchema::AzureOpenAI, APISchema::Anthropic] {
        let err =
            translate_request(&parsed, Target::new(&backend(other)), None).expect_err("refused");
        assert_eq!(err.status(), 422);
        assert!(err.to_string().contains("Cohere rerank"), "{err}");
        // In the format the cohere SDK reads.
        let got = json_of(&error_body(ClientSchema::Cohere, err.status(), &err.to_string()));
        assert_eq!(got, json!({"message": err.to_string()}));
    }
}

#[test]
fn rerank_answers_pass_and_count_search_units() {
    let mut t = translator(Endpoint::Rerank, false);
    assert_eq!(feed_whole(&mut t, RERANK.as_bytes()), RERANK.as_bytes());
    assert_eq!(
        t.usage(),
        Usage { input: 1, output: 0, cached_input: 0, total: 1, ..Default::default() }
    );
    let failure = json_of(&t.failure("boom"));
    assert_eq!(failure, json!({"message": "boom"}));
}

// ---- errors ----

#[test]
fn cohere_errors_reach_each_client_in_its_format() {
    let fixture: Value = serde_json::from_str(ERROR).expect("fixture");
    let status = fixture["status"].as_u64().expect("status") as u16;
    let body = fixture["body"].to_string();
    let message = fixture["body"]["message"].clone();
    let got = json_of(&translate_error(
        ClientSchema::OpenAI,
        APISchema::Cohere,
        status,
        &[],
        body.as_bytes(),
    ));
    assert_eq!(
        got,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
    );
    let got = json_of(&translate_error(
        ClientSchema::Anthropic,
        APISchema::Cohere,
        status,
        &[],
        body.as_bytes(),
    ));
    assert_eq!(
        got,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
    );
    // A Cohere client of a Cohere backend gets the body as it came.
    assert_eq!(
        translate_error(ClientSchema::Cohere, APISchema::Cohere, status, &[], body.as_bytes()),
        body.as_bytes()
    );
    let got = json_of(&translate_error(
        ClientSchema::OpenAI,
        APISchema::Cohere,
        429,
        &[],
        br#"{"message":"too many tokens"}"#,
    ));
    assert_eq!(got["error"]["type"], "rate_limit_error");
    // A proxy's OpenAI-shaped error, and text, become Cohere's shape for a Cohere client.
    let got = json_of(&translate_error(
        ClientSchema::Cohere,
        APISchema::Cohere,
        502,
        &[],
        br#"{"error":{"message":"proxy down","type":"server_error"}}"#,
    ));
    assert_eq!(got, json!({"message": "proxy down"}));
    let got = json_of(&translate_error(
        ClientSchema::Cohere,
        APISchema::Cohere,
        503,
        &[],
        b"no healthy upstream",
    ));
    assert_eq!(got, json!({"message": "upstream returned status 503: no healthy upstream"}));
    for status in [400, 404, 413, 422, 503] {
        let got = json_of(&error_body(ClientSchema::Cohere, status, "m"));
        assert_eq!(got, json!({"message": "m"}), "{status}");
    }
}

/// Random bytes, mangled fixtures and random cuts never panic on the Cohere paths.
#[test]
fn nothing_panics_on_random_cohere_input() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let endpoints =
        [Endpoint::ChatCompletions, Endpoint::Messages, Endpoint::Embeddings, Endpoint::Rerank];
    let seeds: [&[u8]; 7] = [
        STREAM.as_bytes(),
        CHAT_STREAM_TOOL_CALL.as_bytes(),
        CHAT.as_bytes(),
        EMBED.as_bytes(),
        RERANK.as_bytes(),
        br#"{"model":"m","messages":[{"role":"user","content":"x"}],"input":["a"],"query":"q"}"#,
        br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f"}}]},{"role":"tool","tool_call_id":"c","content":[]}]}"#,
    ];
    for round in 0..3000 {
        let input: Vec<u8> = if round % 3 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            let mut v = seeds[rng.below(seeds.len())].to_vec();
            let junk = b"{}[]\":,\n ae\x00\xff";
            for _ in 0..rng.below(6) {
                let i = rng.below(v.len());
                v[i] = junk[rng.below(junk.len())];
            }
            v
        };
        let endpoint = endpoints[rng.below(endpoints.len())];
        if let Ok(req) = parse_request(endpoint, &input) {
            let _ = translate_request(&req, Target::new(&backend(APISchema::Cohere)), None);
        }
        let mut t = translator(endpoint, rng.below(2) == 0);
        let cut = rng.below(input.len() + 1);
        let _ = t.feed(&input[..cut], false);
        let _ = t.feed(&input[cut..], true);
        let _ = t.usage();
        let _ = translate_error(endpoint.client_schema(), APISchema::Cohere, 500, &[], &input);
    }
}
