//! Translation to and from AWS Bedrock: Converse (`AWSBedrock`) and Anthropic models on
//! InvokeModel (`AWSAnthropic`), against fixtures written from Bedrock's API reference, with
//! event-stream bodies split at every byte, exceptions, cuts and bad frames.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    Endpoint, ParsedRequest, ResponseTranslator, Target, TranslateError, TranslatedRequest, Usage,
    parse_request, response_translator, translate_error, translate_request,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const CONVERSE: &str = include_str!("../fixtures/translate/bedrock_converse.json");
const CONVERSE_STREAM: &[u8] = include_bytes!("../fixtures/translate/bedrock_converse_stream.bin");
const ANTHROPIC_STREAM: &str = include_str!("../fixtures/translate/anthropic_stream.sse");
const CREATED: u64 = 1_700_000_000;
const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn backend(name: APISchema) -> VersionedAPISchema {
    VersionedAPISchema { name, version: None, prefix: None }
}

fn parse(endpoint: Endpoint, body: &Value) -> ParsedRequest {
    parse_request(endpoint, body.to_string().as_bytes()).expect("fixture parses")
}

fn request(endpoint: Endpoint, body: Value, to: APISchema) -> TranslatedRequest {
    translate_request(&parse(endpoint, &body), Target::new(&backend(to)), None).expect("translates")
}

fn translate(endpoint: Endpoint, body: Value, to: APISchema) -> (String, Value) {
    let t = request(endpoint, body, to);
    (t.path, serde_json::from_slice(&t.body).expect("translated body is JSON"))
}

fn refusal(endpoint: Endpoint, body: Value, to: APISchema) -> TranslateError {
    translate_request(&parse(endpoint, &body), Target::new(&backend(to)), None)
        .expect_err("refused")
}

/// The translator for the answer to a request for `MODEL`, streamed or not.
fn translator(endpoint: Endpoint, to: APISchema, stream: bool) -> ResponseTranslator {
    response_translator(endpoint, to, stream).with_created(CREATED).model(MODEL)
}

/// One event-stream message, framed here independently of aixds's decoder.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let mut out = ((16 + h.len() + payload.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

fn event(kind: &str, payload: &Value) -> Vec<u8> {
    let headers =
        [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
    frame(&headers, payload.to_string().as_bytes())
}

fn exception(kind: &str, message: &str) -> Vec<u8> {
    let headers = [
        (":exception-type", kind),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    ];
    frame(&headers, json!({"message": message}).to_string().as_bytes())
}

/// The fixture's Anthropic events as InvokeModelWithResponseStream sends them.
fn invoke_stream() -> Vec<u8> {
    sse(ANTHROPIC_STREAM.as_bytes())
        .into_iter()
        .flat_map(|(_, data)| {
            event("chunk", &json!({"bytes": STANDARD.encode(data.to_string()), "p": "abcd"}))
        })
        .collect()
}

/// The `data:` payloads of an SSE body, `[DONE]` as a string, with the `event:` names.
fn sse(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
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

fn feed_split(mut t: ResponseTranslator, input: &[u8], at: usize) -> Vec<u8> {
    let mut out = t.feed(&input[..at], false).expect("first piece");
    out.extend(t.feed(&input[at..], true).expect("second piece"));
    out
}

/// The chunks' ids are generated: the same for every chunk of one answer.
fn one_id(chunks: &mut [Value]) -> String {
    let id = chunks[0]["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    for c in chunks.iter_mut().filter(|c| c.is_object()) {
        assert_eq!(c["id"], json!(id));
        c["id"] = json!("ID");
    }
    id
}

#[test]
fn openai_chat_to_converse_request() {
    let body = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}, {"type": "text", "text": " "}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time in Paris? See: "},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]},
            {"role": "user", "content": "Quickly."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}, {"type": "refusal", "refusal": "No more."}]},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time", "description": ""}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.1, "logprobs": false, "n": 1,
        "user": "u-1", "service_tier": "auto", "store": false, "metadata": {"k": "v"}
    });
    let t = request(Endpoint::ChatCompletions, body, APISchema::AWSBedrock);
    assert_eq!(t.path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream");
    assert_eq!((t.model.as_str(), t.stream), (MODEL, true));
    let got: Value = serde_json::from_slice(&t.body).expect("JSON");
    assert_eq!(
        got,
        json!({
            "system": [{"text": "Be brief."}, {"text": "Use metric units."}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "Weather and time in Paris? See: "},
                    {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
                    {"text": "Quickly."}
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "call_2", "name": "get_time", "input": {}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18°C"}]}},
                    {"toolResult": {"toolUseId": "call_2", "content": [{"text": "12:00"}]}},
                    {"text": "And tomorrow?"}
                ]},
                {"role": "assistant", "content": [{"text": "Sunny."}, {"text": "No more."}]},
                {"role": "user", "content": [{"text": "Thanks"}]}
            ],
            "inferenceConfig": {"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [
                    {"toolSpec": {"name": "get_weather", "description": "Weather now", "inputSchema": {"json":
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                    {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
                ],
                "toolChoice": {"any": {}}
            }
        })
    );

    // Not streamed, no options: the least Converse takes. An ARN stays one path segment.
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-micro-v1:0";
    let (path, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": arn, "messages": [{"role": "user", "content": "hi"}], "max_tokens": null}),
        APISchema::AWSBedrock,
    );
    assert_eq!(
        path,
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-micro-v1%3A0/converse"
    );
    assert_eq!(got, json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}));
}

#[test]
fn tool_choices_reach_converse_as_far_as_it_can_say_them() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}]);
    let ask = |choice: Value, messages: Value| {
        let mut body = json!({"model": "m", "messages": messages, "tools": tools});
        if !choice.is_null() {
            body["tool_choice"] = choice;
        }
        body
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    for (choice, want) in [
        (Value::Null, None),
        (json!("auto"), None),
        (json!("required"), Some(json!({"any": {}}))),
        (
            json!({"type": "function", "function": {"name": "g"}}),
            Some(json!({"tool": {"name": "g"}})),
        ),
    ] {
        let (_, got) = translate(
            Endpoint::ChatCompletions,
            ask(choice.clone(), hi.clone()),
            APISchema::AWSBedrock,
        );
        assert_eq!(got["toolConfig"].get("toolChoice"), want.as_ref(), "{choice}");
        assert_eq!(got["toolConfig"]["tools"].as_array().map(Vec::len), Some(2), "{choice}");
    }
    // "none": the model is given no tools. Converse refuses tool blocks without tools, and
    // cannot be told not to call the tools it has: earlier calls and results travel as text.
    let (_, got) =
        translate(Endpoint::ChatCompletions, ask(json!("none"), hi), APISchema::AWSBedrock);
    assert_eq!(got.get("toolConfig"), None);
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}
    ]);
    let as_text = json!([
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"text": "[tool call c1: f({\"a\":1})]"}]},
        {"role": "user", "content": [{"text": "[tool result c1: done]"}]}
    ]);
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        ask(json!("none"), history.clone()),
        APISchema::AWSBedrock,
    );
    assert_eq!((got.get("toolConfig"), &got["messages"]), (None, &as_text));
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": history.clone()}),
        APISchema::AWSBedrock,
    );
    assert_eq!((got.get("toolConfig"), &got["messages"]), (None, &as_text));
    let (_, got) =
        translate(Endpoint::ChatCompletions, ask(json!("auto"), history), APISchema::AWSBedrock);
    assert_eq!(
        got["messages"][2]["content"],
        json!([{"toolResult": {"toolUseId": "c1", "content": [{"text": "done"}]}}])
    );
}

#[test]
fn what_converse_cannot_take_is_refused_clearly() {
    let user =
        |content: Value| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    let cases = [
        (
            user(json!([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])),
            422,
            "not URLs",
        ),
        (
            user(
                json!([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]),
            ),
            422,
            "image/bmp",
        ),
        (
            user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}])),
            422,
            "base64",
        ),
        (
            user(json!([{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}])),
            422,
            "input_audio",
        ),
        (
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
            422,
            "\"n\"",
        ),
        (
            json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
            422,
            "function",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search"}]}),
            422,
            "function tools",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}}),
            422,
            "not an object",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "aixds_json_response"}}]}),
            400,
            "reserved",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
            400,
            "\"id\"",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            400,
            "object",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            400,
            "tool_call_id",
        ),
        (json!({"model": "m", "messages": "hi"}), 400, "array"),
        (json!({"model": "m", "messages": [], "stop": 1}), 400, "stop"),
        (json!({"model": "m", "messages": [], "tool_choice": "sometimes"}), 400, "sometimes"),
    ];
    for (body, status, says) in cases {
        let err = refusal(Endpoint::ChatCompletions, body.clone(), APISchema::AWSBedrock);
        assert_eq!(err.status(), status, "{body}: {err}");
        assert!(err.to_string().contains(says), "{body}: {err}");
    }
    // Completions cannot go to Converse.
    let err =
        refusal(Endpoint::Completions, json!({"model": "m", "prompt": "x"}), APISchema::AWSBedrock);
    assert_eq!(err.status(), 422);
}

#[test]
fn json_response_formats_become_a_forced_tool() {
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let answer_tool = |schema: &Value| {
        json!({"toolSpec": {"name": "aixds_json_response",
            "description": "Give your answer to the user. Its input is the whole answer, in the format the user asked for.",
            "inputSchema": {"json": schema}}})
    };
    let hi = json!([{"role": "user", "content": "Where?"}]);
    let t = request(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": hi, "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}}),
        APISchema::AWSBedrock,
    );
    let got: Value = serde_json::from_slice(&t.body).expect("JSON");
    assert_eq!(
        got["toolConfig"],
        json!({"tools": [answer_tool(&schema)], "toolChoice": {"tool": {"name": "aixds_json_response"}}})
    );

    // With tools of its own the model may call one of them or answer.
    let f = json!({"type": "function", "function": {"name": "f"}});
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": hi, "response_format": {"type": "json_object"}, "tools": [f]}),
        APISchema::AWSBedrock,
    );
    let object = json!({"type": "object"});
    assert_eq!(got["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(got["toolConfig"]["tools"][1], answer_tool(&object));
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": hi, "response_format": {"type": "json_object"}, "tools": [f], "tool_choice": "none"}),
        APISchema::AWSBedrock,
    );
    assert_eq!(
        got["toolConfig"],
        json!({"tools": [answer_tool(&object)], "toolChoice": {"tool": {"name": "aixds_json_response"}}})
    );

    // A text format asks nothing.
    let (_, got) = translate(
        Endpoint::ChatCompletions,
        json!({"model": "m", "messages": hi, "response_format": {"type": "text"}}),
        APISchema::AWSBedrock,
    );
    assert_eq!(got.get("toolConfig"), None);
}

#[test]
fn anthropic_messages_to_converse_request() {
    let (path, got) = translate(
        Endpoint::Messages,
        json!({
            "model": MODEL, "max_tokens": 50, "stream": true,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "stop_sequences": ["END"], "top_k": 5, "metadata": {"user_id": "u"}
        }),
        APISchema::AWSBedrock,
    );
    assert_eq!(path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream");
    assert_eq!(
        got,
        json!({
            "system": [{"text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"text": "Weather?"}, {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
                {"role": "assistant", "content": [{"text": "Checking."}, {"toolUse": {"toolUseId": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "toolu_1", "content": [{"text": "18°C"}]}}, {"text": "Thanks"}]}
            ],
            "inferenceConfig": {"maxTokens": 50, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}],
                "toolChoice": {"tool": {"name": "get_weather"}}
            }
        })
    );
}

#[test]
fn converse_response_to_openai_and_anthropic() {
    let usage = Usage {
        input: 1512,
        output: 58,
        cached_input: 1000,
        cache_creation_input: 100,
        total: 1570,
        ..Default::default()
    };
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, false);
    assert_eq!(t.content_type(), "application/json");
    assert_eq!(t.feed(&CONVERSE.as_bytes()[..40], false).expect("a piece"), b"");
    let mut got: Value =
        serde_json::from_slice(&t.feed(&CONVERSE.as_bytes()[40..], true).expect("the rest"))
            .expect("JSON");
    let id = one_id(std::slice::from_mut(&mut got));
    assert_eq!(
        got,
        json!({
            "id": "ID", "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check the weather in Paris.",
                "tool_calls": [{"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]
            }}],
            "usage": {"prompt_tokens": 1512, "completion_tokens": 58, "total_tokens": 1570, "prompt_tokens_details": {"cached_tokens": 1000}}
        })
    );
    assert_eq!(t.usage(), usage);

    let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, false);
    let got: Value =
        serde_json::from_slice(&t.feed(CONVERSE.as_bytes(), true).expect("whole")).expect("JSON");
    assert!(
        got["id"].as_str().is_some_and(|i| i.starts_with("msg_") && i != format!("msg_{id}")),
        "a new id per answer"
    );
    assert_eq!(got["model"], json!(MODEL));
    assert_eq!(got["stop_reason"], json!("tool_use"));
    assert_eq!(
        got["content"],
        json!([{"type": "text", "text": "Let me check the weather in Paris."},
               {"type": "tool_use", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}])
    );
    assert_eq!(
        got["usage"],
        json!({"input_tokens": 512, "output_tokens": 58, "cache_read_input_tokens": 1000})
    );
    assert_eq!(t.usage(), usage);

    // A 200 without an answer cannot be translated: a 502 for the client.
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, false);
    let err = t.feed(br#"{"stopReason":"end_turn"}"#, true).expect_err("no output");
    assert_eq!(err.status(), 502);
}

#[test]
fn converse_stop_reasons_become_finish_reasons() {
    for (stop, openai, anthropic) in [
        ("end_turn", "stop", "end_turn"),
        ("stop_sequence", "stop", "end_turn"),
        ("max_tokens", "length", "max_tokens"),
        ("model_context_window_exceeded", "length", "max_tokens"),
        ("tool_use", "tool_calls", "tool_use"),
        ("guardrail_intervened", "content_filter", "refusal"),
        ("content_filtered", "content_filter", "refusal"),
        ("something_new", "stop", "end_turn"),
    ] {
        let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop});
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, false);
        let got: Value =
            serde_json::from_slice(&t.feed(body.to_string().as_bytes(), true).expect("ok"))
                .expect("JSON");
        assert_eq!(got["choices"][0]["finish_reason"], json!(openai), "{stop}");
        let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, false);
        let got: Value =
            serde_json::from_slice(&t.feed(body.to_string().as_bytes(), true).expect("ok"))
                .expect("JSON");
        assert_eq!(got["stop_reason"], json!(anthropic), "{stop}");

        let stream: Vec<u8> = [
            event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "x"}})),
            event("messageStop", &json!({"stopReason": stop})),
        ]
        .concat();
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
        let got = sse(&t.feed(&stream, true).expect("ok"));
        assert_eq!(got[1].1["choices"][0]["finish_reason"], json!(openai), "{stop}");
        assert_eq!(got.last(), Some(&(None, json!("[DONE]"))), "the stop reason makes it whole");
        assert!(!t.truncated());
    }
}

/// What the fixture stream gives an OpenAI client.
fn converse_stream_as_openai(include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "ID", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let call = |v: Value| chunk(json!({"tool_calls": [v]}), Value::Null);
    let mut want = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Let me check "}), Value::Null),
        chunk(json!({"content": "the weather in Paris – ☀?"}), Value::Null),
        call(
            json!({"index": 0, "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
        ),
        call(json!({"index": 0, "function": {"arguments": "{\"city\": \"Par"}})),
        call(json!({"index": 0, "function": {"arguments": "is\", \"unit\": \"celsius\"}"}})),
        chunk(json!({}), json!("tool_calls")),
    ];
    if include_usage {
        want.push(json!({"id": "ID", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL, "choices": [],
            "usage": {"prompt_tokens": 1512, "completion_tokens": 58, "total_tokens": 1570, "prompt_tokens_details": {"cached_tokens": 1000}}}));
    }
    want.push(json!("[DONE]"));
    want
}

#[test]
fn converse_stream_to_openai_at_every_split() {
    for include_usage in [true, false] {
        let whole = |t: ResponseTranslator| -> Vec<Value> {
            let mut t = t.include_usage(include_usage);
            let mut got: Vec<Value> = sse(&t.feed(CONVERSE_STREAM, true).expect("whole"))
                .into_iter()
                .map(|(name, data)| {
                    assert_eq!(name, None);
                    data
                })
                .collect();
            one_id(&mut got);
            assert_eq!(
                t.usage(),
                Usage {
                    input: 1512,
                    output: 58,
                    cached_input: 1000,
                    cache_creation_input: 100,
                    total: 1570,
                    ..Default::default()
                }
            );
            got
        };
        let t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
        assert_eq!(t.content_type(), "text/event-stream");
        assert_eq!(whole(t), converse_stream_as_openai(include_usage));
        for at in 0..=CONVERSE_STREAM.len() {
            let t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true)
                .include_usage(include_usage);
            let mut got: Vec<Value> =
                sse(&feed_split(t, CONVERSE_STREAM, at)).into_iter().map(|(_, d)| d).collect();
            one_id(&mut got);
            assert_eq!(got, converse_stream_as_openai(include_usage), "split at {at}");
        }
    }
}

#[test]
fn converse_stream_to_anthropic_at_every_split() {
    let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, true);
    let whole = sse(&t.feed(CONVERSE_STREAM, true).expect("whole"));
    let names: Vec<&str> = whole.iter().map(|(n, _)| n.as_deref().unwrap_or_default()).collect();
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
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(whole[0].1["message"]["model"], json!(MODEL));
    assert_eq!(
        whole[3].1["delta"],
        json!({"type": "text_delta", "text": "the weather in Paris – ☀?"})
    );
    assert_eq!(
        whole[5].1["content_block"],
        json!({"type": "tool_use", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        whole[9].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 512, "output_tokens": 58, "cache_read_input_tokens": 1000}})
    );
    let strip_id = |mut events: Vec<(Option<String>, Value)>| {
        events[0].1["message"]["id"] = json!("ID");
        events
    };
    let whole = strip_id(whole);
    for at in 0..=CONVERSE_STREAM.len() {
        let t = translator(Endpoint::Messages, APISchema::AWSBedrock, true);
        assert_eq!(strip_id(sse(&feed_split(t, CONVERSE_STREAM, at))), whole, "split at {at}");
    }
}

#[test]
fn a_json_answer_comes_back_as_content() {
    let answer = json!({"city": "Paris"});
    let body = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "tooluse_1", "name": "aixds_json_response", "input": answer}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}
    });
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, false);
    let got: Value =
        serde_json::from_slice(&t.feed(body.to_string().as_bytes(), true).expect("ok"))
            .expect("JSON");
    assert_eq!(got["choices"][0]["finish_reason"], json!("stop"));
    assert_eq!(
        got["choices"][0]["message"],
        json!({"role": "assistant", "content": answer.to_string()})
    );

    // Streamed: the tool's input pieces are the content's; a client tool called beside it stays
    // a tool call.
    let stream: Vec<u8> = [
        event("messageStart", &json!({"role": "assistant"})),
        event("contentBlockStart", &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "aixds_json_response"}}})),
        event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"city\":"}}})),
        event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
        event("contentBlockStop", &json!({"contentBlockIndex": 0})),
        event("messageStop", &json!({"stopReason": "tool_use"})),
        event("metadata", &json!({"usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}})),
    ]
    .concat();
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&stream, true).expect("ok"));
    let content: String =
        got.iter().filter_map(|(_, c)| c.pointer("/choices/0/delta/content")?.as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&content).expect("JSON content"), answer);
    assert!(!got.iter().any(|(_, c)| c.pointer("/choices/0/delta/tool_calls").is_some()));
    assert_eq!(got[got.len() - 2].1["choices"][0]["finish_reason"], json!("stop"));

    let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&stream, true).expect("ok"));
    let text: String = got.iter().filter_map(|(_, e)| e.pointer("/delta/text")?.as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON text"), answer);
    assert_eq!(got[got.len() - 2].1["delta"]["stop_reason"], json!("end_turn"));

    let with_call: Vec<u8> = [
        event("contentBlockStart", &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t0", "name": "f"}}})),
        stream.clone(),
    ]
    .concat();
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&with_call, true).expect("ok"));
    assert_eq!(got[0].1["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], json!("f"));
    assert_eq!(got[got.len() - 2].1["choices"][0]["finish_reason"], json!("tool_calls"));
}

#[test]
fn converse_stream_exceptions_cuts_and_bad_frames() {
    let start = event("messageStart", &json!({"role": "assistant"}));
    let text =
        event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}));
    let failed = [
        start.clone(),
        text.clone(),
        exception("throttlingException", "Too many requests, please wait."),
    ]
    .concat();

    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&failed, true).expect("ok"));
    assert_eq!(
        got.last(),
        Some(&(
            None,
            json!({"error": {"message": "Too many requests, please wait.", "type": "throttlingException", "param": null, "code": null}})
        ))
    );
    assert!(!got.iter().any(|(_, d)| d == "[DONE]"));
    let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&failed, true).expect("ok"));
    assert_eq!(got.last().map(|(n, _)| n.as_deref()), Some(Some("error")));
    assert_eq!(
        got.last().map(|(_, d)| &d["error"]["message"]),
        Some(&json!("Too many requests, please wait."))
    );

    // An `error` message carries its code and message in headers.
    let error = frame(
        &[
            (":message-type", "error"),
            (":error-code", "InternalFailure"),
            (":error-message", "oops"),
        ],
        b"",
    );
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let got = sse(&t.feed(&[start.clone(), error].concat(), true).expect("ok"));
    assert_eq!(
        got.last().map(|(_, d)| &d["error"]),
        Some(&json!({"message": "oops", "type": "InternalFailure", "param": null, "code": null}))
    );

    // Cut before the stop reason, even mid-frame: the client is told, in its format.
    let until_stop =
        [start.clone(), text.clone(), event("messageStop", &json!({"stopReason": "end_turn"}))]
            .concat();
    for at in 0..until_stop.len() {
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
        let got = sse(&t.feed(&until_stop[..at], true).expect("ok"));
        assert!(t.truncated(), "cut at {at}");
        assert_eq!(
            got.last().map(|(_, d)| &d["error"]["message"]),
            Some(&json!("the upstream closed the stream before the response was complete")),
            "cut at {at}"
        );
    }
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    t.feed(&until_stop, true).expect("ok");
    assert!(!t.truncated(), "whole once the stop reason came, without metadata");

    // A frame that fails its checksum fails the response.
    let mut bad = text.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let err = t.feed(&[start, bad].concat(), false).expect_err("bad checksum");
    assert_eq!(err.status(), 502);
    assert!(err.to_string().contains("checksum"), "{err}");
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    let err = t.feed(&event("contentBlockDelta", &json!("x"))[..], false).map(|_| ());
    assert_eq!(err, Ok(()), "an event of an unexpected shape carries nothing");
    let not_json = frame(&[(":event-type", "messageStart"), (":message-type", "event")], b"{");
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
    assert_eq!(t.feed(&not_json, false).expect_err("not JSON").status(), 502);
}

#[test]
fn anthropic_on_bedrock_requests_take_bedrocks_envelope() {
    let body = json!({"model": MODEL, "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "hi"}],
                      "metadata": {"user_id": "u"}, "top_k": 3});
    let (path, got) = translate(Endpoint::Messages, body, APISchema::AWSAnthropic);
    assert_eq!(
        path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(
        got,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
               "metadata": {"user_id": "u"}, "top_k": 3})
    );
    let versioned = VersionedAPISchema {
        name: APISchema::AWSAnthropic,
        version: Some("bedrock-2099-01-01".into()),
        prefix: None,
    };
    let req = parse(
        Endpoint::ChatCompletions,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let t = translate_request(
        &req,
        Target::new(&versioned),
        Some("us.anthropic.claude-sonnet-4-20250514-v1:0"),
    )
    .expect("translates");
    assert_eq!(t.path, "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke");
    assert_eq!(
        serde_json::from_slice::<Value>(&t.body).expect("JSON"),
        json!({"anthropic_version": "bedrock-2099-01-01", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[test]
fn anthropic_on_bedrock_answers_pass_through_or_translate() {
    let message = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude", "content": [{"type": "text", "text": "Hi"}],
                         "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 2}});
    let bytes = message.to_string().into_bytes();
    let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, false);
    assert_eq!(t.feed(&bytes, true).expect("ok"), bytes);
    assert_eq!(
        t.usage(),
        Usage { input: 5, output: 2, cached_input: 0, total: 7, ..Default::default() }
    );
    let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSAnthropic, false);
    let got: Value = serde_json::from_slice(&t.feed(&bytes, true).expect("ok")).expect("JSON");
    assert_eq!(got["choices"][0]["message"]["content"], json!("Hi"));
}

#[test]
fn anthropic_on_bedrock_streams_unwrap_at_every_split() {
    let input = invoke_stream();
    let events = sse(ANTHROPIC_STREAM.as_bytes());
    let usage = Usage { input: 35, output: 42, cached_input: 10, total: 77, ..Default::default() };
    for at in 0..=input.len() {
        // To an Anthropic client: Anthropic's events as they were.
        let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, true);
        let mut out = t.feed(&input[..at], false).expect("first piece");
        out.extend(t.feed(&input[at..], true).expect("second piece"));
        assert_eq!(sse(&out), events, "split at {at}");
        assert_eq!((t.usage(), t.truncated()), (usage, false), "split at {at}");
        // To an OpenAI client: chunks.
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSAnthropic, true)
            .include_usage(true);
        let mut out = t.feed(&input[..at], false).expect("first piece");
        out.extend(t.feed(&input[at..], true).expect("second piece"));
        let got = sse(&out);
        assert_eq!(got.len(), 9, "split at {at}");
        assert_eq!(got[1].1["choices"][0]["delta"], json!({"content": "Café in 日本"}));
        assert_eq!(got.last(), Some(&(None, json!("[DONE]"))));
        assert_eq!(t.usage(), usage, "split at {at}");
    }

    // Cut inside the frame with the stop reason: the client gets the events that came whole,
    // then an error.
    let chunk = |e: &Value| event("chunk", &json!({"bytes": STANDARD.encode(e.to_string())}));
    let mut cut: Vec<u8> = events[..events.len() - 2].iter().flat_map(|(_, e)| chunk(e)).collect();
    let stop = chunk(&events[events.len() - 2].1);
    cut.extend_from_slice(&stop[..stop.len() - 30]);
    let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, true);
    let got = sse(&t.feed(&cut, true).expect("ok"));
    assert!(t.truncated());
    assert_eq!(got[..got.len() - 1], events[..events.len() - 2]);
    assert_eq!(got.last().map(|(n, _)| n.as_deref()), Some(Some("error")));

    // An exception frame is Anthropic's error event, with the type Anthropic would give.
    let frames = [
        event("chunk", &json!({"bytes": STANDARD.encode(events[0].1.to_string())})),
        exception("serviceUnavailableException", "Bedrock is unavailable."),
    ]
    .concat();
    let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, true);
    let got = sse(&t.feed(&frames, true).expect("ok"));
    assert_eq!(
        got.last(),
        Some(&(
            Some("error".to_string()),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Bedrock is unavailable."}})
        ))
    );
    assert!(!t.truncated(), "an error event ends the stream");

    // Chunks that do not hold an Anthropic event fail the response.
    for bad in [
        json!({"bytes": "%%%"}),
        json!({"nobytes": 1}),
        json!({"bytes": STANDARD.encode("{\"type\":\"a\\nb\"}")}),
    ] {
        let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, true);
        assert_eq!(
            t.feed(&event("chunk", &bad), false).expect_err("bad chunk").status(),
            502,
            "{bad}"
        );
    }
}

#[test]
fn bedrock_errors_become_the_clients_format() {
    let headers = vec![(
        "x-amzn-errortype".to_string(),
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_string(),
    )];
    let body = br#"{"message":"Malformed input request: temperature must be at most 1"}"#;
    for backend in [APISchema::AWSBedrock, APISchema::AWSAnthropic] {
        let got: Value = serde_json::from_slice(&translate_error(
            aixds::extproc::translate::ClientSchema::OpenAI,
            backend,
            400,
            &headers,
            body,
        ))
        .expect("JSON");
        assert_eq!(
            got,
            json!({"error": {"message": "Malformed input request: temperature must be at most 1", "type": "invalid_request_error", "param": null, "code": "ValidationException"}})
        );
        let got: Value = serde_json::from_slice(&translate_error(
            aixds::extproc::translate::ClientSchema::Anthropic,
            backend,
            400,
            &headers,
            body,
        ))
        .expect("JSON");
        assert_eq!(
            got,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "Malformed input request: temperature must be at most 1"}})
        );
    }
    // `Message`, no type header, statuses as the SDKs type them.
    let got: Value = serde_json::from_slice(&translate_error(
        aixds::extproc::translate::ClientSchema::Anthropic,
        APISchema::AWSBedrock,
        429,
        &[],
        br#"{"Message":"Rate exceeded"}"#,
    ))
    .expect("JSON");
    assert_eq!(
        got,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate exceeded"}})
    );
    let got: Value = serde_json::from_slice(&translate_error(
        aixds::extproc::translate::ClientSchema::OpenAI,
        APISchema::AWSBedrock,
        403,
        &[("X-Amzn-ErrorType".into(), "AccessDeniedException".into())],
        br#"{"message":"The security token included in the request is invalid."}"#,
    ))
    .expect("JSON");
    assert_eq!(got["error"]["type"], json!("permission_error"));
    assert_eq!(got["error"]["code"], json!("AccessDeniedException"));
}

/// The provider fixtures (written from Bedrock's API reference by the fake servers' authors):
/// what their events say reaches the client, whatever the byte split.
#[test]
fn bedrock_provider_fixtures_translate_at_every_split() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/bedrock/");
    let read = |name: &str| std::fs::read(format!("{dir}{name}")).expect("fixture");
    let lines = |name: &str| -> Vec<Value> {
        String::from_utf8(read(name))
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let converse_usage = |u: &Value| {
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        let input = n("inputTokens") + n("cacheReadInputTokens") + n("cacheWriteInputTokens");
        Usage {
            input,
            output: n("outputTokens"),
            cached_input: n("cacheReadInputTokens"),
            cache_creation_input: n("cacheWriteInputTokens"),
            reasoning: 0,
            total: input + n("outputTokens"),
        }
    };

    for name in ["converse.json", "converse-tool-use.json", "converse-cache.json"] {
        let body = read(name);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        let text: String = v["output"]["message"]["content"]
            .as_array()
            .expect("content")
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect();
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, false);
        let got: Value = serde_json::from_slice(&t.feed(&body, true).expect(name)).expect("JSON");
        assert_eq!(got["choices"][0]["message"]["content"], json!(text), "{name}");
        assert_eq!(t.usage(), converse_usage(&v["usage"]), "{name}");
        let mut t = translator(Endpoint::Messages, APISchema::AWSBedrock, false);
        let got: Value = serde_json::from_slice(&t.feed(&body, true).expect(name)).expect("JSON");
        assert_eq!(got["content"][0]["text"], json!(text), "{name}");
    }

    for name in ["converse-stream", "converse-stream-tool-use"] {
        let input = read(&format!("{name}.bin"));
        let events = lines(&format!("{name}.jsonl"));
        let payloads = |kind: &'static str| events.iter().filter(move |e| e["event-type"] == kind);
        let text: String = payloads("contentBlockDelta")
            .filter_map(|e| e["payload"]["delta"]["text"].as_str())
            .collect();
        let args: String = payloads("contentBlockDelta")
            .filter_map(|e| e["payload"]["delta"]["toolUse"]["input"].as_str())
            .collect();
        let usage =
            converse_usage(&payloads("metadata").next().expect("metadata")["payload"]["usage"]);
        let read_out = |out: &[u8]| {
            let chunks: Vec<Value> = sse(out).into_iter().map(|(_, d)| d).collect();
            let pieces = |ptr: &str| -> String {
                chunks.iter().filter_map(|c| c.pointer(ptr).and_then(Value::as_str)).collect()
            };
            (
                pieces("/choices/0/delta/content"),
                pieces("/choices/0/delta/tool_calls/0/function/arguments"),
                chunks.last().cloned(),
            )
        };
        for at in 0..=input.len() {
            let t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
            let (got_text, got_args, last) = read_out(&feed_split(t, &input, at));
            assert_eq!((&got_text, &got_args), (&text, &args), "{name} split at {at}");
            assert_eq!(last, Some(json!("[DONE]")), "{name} split at {at}");
        }
        let mut t = translator(Endpoint::ChatCompletions, APISchema::AWSBedrock, true);
        t.feed(&input, true).expect(name);
        assert_eq!(t.usage(), usage, "{name}");
    }

    let input = read("invoke-anthropic-stream.bin");
    let events = lines("invoke-anthropic-stream.events.jsonl");
    for at in 0..=input.len() {
        let t = translator(Endpoint::Messages, APISchema::AWSAnthropic, true);
        let got = sse(&feed_split(t, &input, at));
        let names: Vec<Option<String>> =
            events.iter().map(|e| e["type"].as_str().map(str::to_string)).collect();
        assert_eq!(got.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), names, "split at {at}");
        assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), events, "split at {at}");
    }
    let body = read("invoke-anthropic.json");
    let mut t = translator(Endpoint::Messages, APISchema::AWSAnthropic, false);
    assert_eq!(t.feed(&body, true).expect("passes"), body);

    for name in ["error-validation.json", "error-throttling.json"] {
        let e: Value = serde_json::from_slice(&read(name)).expect("JSON");
        let status = e["status"].as_u64().expect("status") as u16;
        let headers: Vec<(String, String)> = e["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let body = e["body"].to_string();
        let got: Value = serde_json::from_slice(&translate_error(
            aixds::extproc::translate::ClientSchema::OpenAI,
            APISchema::AWSBedrock,
            status,
            &headers,
            body.as_bytes(),
        ))
        .expect("JSON");
        assert_eq!(got["error"]["message"], e["body"]["message"], "{name}");
        assert_eq!(
            Some(got["error"]["code"].as_str().unwrap_or_default()),
            headers[0].1.split(':').next(),
            "{name}"
        );
    }
}

/// OpenAI embeddings reach Titan on InvokeModel one text at a time, and come back as the
/// OpenAI list the client asked for: floats, or base64 of little-endian float32s.
#[test]
fn openai_embeddings_to_titan_and_back() {
    let titan = "amazon.titan-embed-text-v2:0";
    let (path, body) = translate(
        Endpoint::Embeddings,
        json!({"model": titan, "input": ["hello world"], "dimensions": 256, "user": "u1",
               "encoding_format": "base64"}),
        APISchema::AWSBedrock,
    );
    assert_eq!(path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(body, json!({"inputText": "hello world", "dimensions": 256}));

    let answer = json!({"embedding": [0.5, -0.25, 1.0], "inputTextTokenCount": 2});
    for (base64, embedding) in [
        (false, json!([0.5, -0.25, 1.0])),
        (
            true,
            json!(STANDARD.encode(
                [0.5f32, -0.25, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
            )),
        ),
    ] {
        let mut t = response_translator(Endpoint::Embeddings, APISchema::AWSBedrock, false)
            .model(titan)
            .base64_embeddings(base64);
        let out: Value =
            serde_json::from_slice(&t.feed(answer.to_string().as_bytes(), true).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"object": "list", "model": titan,
                   "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                   "usage": {"prompt_tokens": 2, "total_tokens": 2}})
        );
        assert_eq!(t.usage().input, 2);
    }

    // Several texts, token ids and models other than Titan's text ones are clear 422s.
    for (model, input, says) in [
        (titan, json!(["a", "b"]), "one text per request"),
        (titan, json!([[1, 2, 3]]), "token ids"),
        ("cohere.embed-english-v3", json!("a"), "amazon.titan-embed-text"),
    ] {
        let err = refusal(
            Endpoint::Embeddings,
            json!({"model": model, "input": input}),
            APISchema::AWSBedrock,
        );
        assert_eq!(err.status(), 422, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    let err = refusal(
        Endpoint::Embeddings,
        json!({"model": titan, "input": "a", "encoding_format": "hex"}),
        APISchema::AWSBedrock,
    );
    assert_eq!(err.status(), 400, "{err}");
}

/// The client's `anthropic-beta` header becomes the `anthropic_beta` list of an InvokeModel
/// body (Bedrock reads betas there); without one the body has none. Converse takes no betas.
#[test]
fn anthropic_beta_headers_reach_invoke_model_in_the_body() {
    let req = parse(
        Endpoint::Messages,
        &json!({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let schema = backend(APISchema::AWSAnthropic);
    for (header, betas) in [
        (
            Some("token-efficient-tools-2025-02-19, interleaved-thinking-2025-05-14"),
            Some(json!(["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"])),
        ),
        (Some(" , "), None),
        (None, None),
    ] {
        let t = translate_request(&req, Target::new(&schema).with_anthropic_beta(header), None)
            .expect("translates");
        let body: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(body.get("anthropic_beta"), betas.as_ref(), "{header:?}");
    }
    let converse = backend(APISchema::AWSBedrock);
    let t = translate_request(
        &req,
        Target::new(&converse).with_anthropic_beta(Some("token-efficient-tools-2025-02-19")),
        None,
    )
    .expect("translates");
    assert!(!String::from_utf8_lossy(&t.body).contains("anthropic_beta"));
}

/// Anthropic's token counting reaches Anthropic models on Bedrock as CountTokens of the
/// InvokeModel body the request would be (base64 under `input.invokeModel`, with the
/// `max_tokens` InvokeModel requires), and Bedrock's count comes back in Anthropic's shape.
/// Converse models are not counted.
#[test]
fn token_counting_reaches_bedrocks_count_tokens() {
    let count = json!({"model": MODEL, "system": "be brief",
                       "messages": [{"role": "user", "content": "hi"}]});
    let (path, body) = translate(Endpoint::CountTokens, count.clone(), APISchema::AWSAnthropic);
    assert_eq!(path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens");
    let encoded = body["input"]["invokeModel"]["body"].as_str().expect("base64");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let inner: Value = serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap();
    assert_eq!(
        inner,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1, "system": "be brief",
               "messages": [{"role": "user", "content": "hi"}]})
    );

    let mut t = translator(Endpoint::CountTokens, APISchema::AWSAnthropic, false);
    let out = t.feed(br#"{"inputTokens": 12}"#, true).expect("translates");
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json!({"input_tokens": 12}));
    let mut t = translator(Endpoint::CountTokens, APISchema::AWSAnthropic, false);
    assert_eq!(t.feed(br#"{"tokens": 12}"#, true).expect_err("no count").status(), 502);

    let err = refusal(Endpoint::CountTokens, count, APISchema::AWSBedrock);
    assert_eq!(err.status(), 422, "{err}");
}
