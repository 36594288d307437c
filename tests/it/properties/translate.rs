//! The translation between OpenAI chat completions and Anthropic messages, on generated input:
//! any valid client request becomes a request the backend's API accepts (checked against the
//! strict shapes in `api_shapes.rs`); arbitrary JSON-ish requests and response bytes never
//! panic; and a response translates to the same bytes however its body is split into pieces.

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    Endpoint, Target, TranslateError, Usage, parse_request, read_head, response_translator,
    translate_request,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::api_shapes::{anthropic_messages, bedrock_anthropic, bedrock_converse, openai_chat};

fn schema(name: APISchema) -> VersionedAPISchema {
    VersionedAPISchema { name, version: None, prefix: None }
}

pub(super) fn text() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9 ,.!?é中]{0,12}"
}

pub(super) fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,8}"
}

/// A small JSON object, as tool arguments and inputs are.
pub(super) fn arguments() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        ident(),
        prop_oneof![text().prop_map(Value::from), (0i64..100).prop_map(Value::from)],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn maybe(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

pub(super) const TOOL_NAMES: [&str; 3] = ["get_weather", "search", "lookup-2"];

/// 0 to 3 tool names, distinct.
fn tool_names() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(&TOOL_NAMES[..], 0..=3)
}

// ---- valid OpenAI chat requests ----

fn openai_user_content() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        prop::sample::select(vec![
            "data:image/png;base64,iVBORw0KGgo=",
            "https://example.com/cat.jpg"
        ])
        .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
    ];
    prop_oneof![
        text().prop_map(Value::from),
        prop::collection::vec(part, 1..3).prop_map(Value::from),
    ]
}

fn openai_text_content() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        prop::collection::vec(text().prop_map(|t| json!({"type": "text", "text": t})), 1..3)
            .prop_map(Value::from),
    ]
}

#[derive(Debug, Clone)]
enum ChatStep {
    System(&'static str, Value),
    User(Value),
    Assistant(Value),
    /// An assistant message calling tools (with some text or none), then one tool message per
    /// call.
    ToolRound(Option<String>, Vec<(&'static str, Value)>, Vec<Value>),
}

fn chat_step() -> impl Strategy<Value = ChatStep> {
    let calls = prop::collection::vec((prop::sample::select(&TOOL_NAMES[..]), arguments()), 1..3);
    let round = (prop::option::of(text()), calls).prop_flat_map(|(text, calls)| {
        let n = calls.len();
        (Just(text), Just(calls), prop::collection::vec(openai_text_content(), n))
    });
    prop_oneof![
        1 => (prop::sample::select(vec!["system", "developer"]), openai_text_content())
            .prop_map(|(role, c)| ChatStep::System(role, c)),
        3 => openai_user_content().prop_map(ChatStep::User),
        2 => openai_text_content().prop_map(ChatStep::Assistant),
        2 => round.prop_map(|(t, calls, results)| ChatStep::ToolRound(t, calls, results)),
    ]
}

fn chat_messages(first: Value, steps: Vec<ChatStep>, leading_system: Option<Value>) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = leading_system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": first}));
    for (r, step) in steps.into_iter().enumerate() {
        match step {
            ChatStep::System(role, c) => messages.push(json!({"role": role, "content": c})),
            ChatStep::User(c) => messages.push(json!({"role": "user", "content": c})),
            ChatStep::Assistant(c) => messages.push(json!({"role": "assistant", "content": c})),
            ChatStep::ToolRound(text, calls, results) => {
                let ids: Vec<String> = (0..calls.len()).map(|k| format!("call_{r}_{k}")).collect();
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .zip(&ids)
                    .map(|((name, args), id)| {
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
                messages
                    .push(json!({"role": "assistant", "content": text, "tool_calls": tool_calls}));
                for (id, content) in ids.iter().zip(results) {
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
            }
        }
    }
    Value::Array(messages)
}

fn openai_tools(names: &[&str]) -> Value {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut f = json!({"name": n});
            if i % 2 == 0 {
                f["description"] = json!(format!("the {n} tool"));
                f["parameters"] =
                    json!({"type": "object", "properties": {"q": {"type": "string"}}});
            }
            json!({"type": "function", "function": f})
        })
        .collect()
}

/// A chat completions request OpenAI accepts, using what aixds can send to Anthropic.
pub(super) fn openai_request() -> impl Strategy<Value = Value> {
    let conversation = (
        prop::option::of(openai_text_content()),
        openai_user_content(),
        prop::collection::vec(chat_step(), 0..6),
    );
    let limits = (
        prop::option::of((prop::bool::ANY, 1u64..8192)),
        prop::option::of(prop_oneof![
            text().prop_map(Value::from),
            prop::collection::vec(text(), 1..=4).prop_map(Value::from)
        ]),
        prop::option::of(0.0f64..=1.0),
        prop::option::of(0.0f64..=1.0),
        prop::option::of(prop::option::of(prop::bool::ANY)),
        prop::option::of(ident()),
    );
    let tools = tool_names().prop_flat_map(|names| {
        let n = names.len();
        let choice = prop_oneof![
            Just(json!("auto")),
            Just(json!("none")),
            Just(json!("required")),
            (0..n.max(1)).prop_map(
                move |i| json!({"type": "function", "function": {"name": TOOL_NAMES[i.min(2)]}})
            ),
        ];
        (Just(names), prop::option::of(choice), prop::option::of(prop::bool::ANY))
    });
    let dropped = prop::option::of((0u64..1000, -2.0f64..=2.0));
    (conversation, limits, tools, dropped).prop_map(
        |(
            (system, first, steps),
            (max, stop, temperature, top_p, stream, user),
            (names, choice, parallel),
            dropped,
        )| {
            let mut body = Map::new();
            body.insert("model".into(), json!("gpt-4o"));
            body.insert("messages".into(), chat_messages(first, steps, system));
            if let Some((completion, n)) = max {
                let key = if completion { "max_completion_tokens" } else { "max_tokens" };
                body.insert(key.into(), json!(n));
            }
            maybe(&mut body, "stop", stop);
            maybe(&mut body, "temperature", temperature.map(Value::from));
            maybe(&mut body, "top_p", top_p.map(Value::from));
            if let Some(include_usage) = stream {
                body.insert("stream".into(), json!(true));
                maybe(
                    &mut body,
                    "stream_options",
                    include_usage.map(|i| json!({"include_usage": i})),
                );
            }
            maybe(&mut body, "user", user.map(Value::from));
            if !names.is_empty() {
                // The function a choice names is one of the tools.
                let choice = choice.map(|c| match c.pointer("/function/name") {
                    Some(_) => json!({"type": "function", "function": {"name": names[0]}}),
                    None => c,
                });
                body.insert("tools".into(), openai_tools(&names));
                maybe(&mut body, "tool_choice", choice);
                maybe(&mut body, "parallel_tool_calls", parallel.map(Value::from));
            }
            if let Some((seed, penalty)) = dropped {
                body.insert("seed".into(), json!(seed));
                body.insert("presence_penalty".into(), json!(penalty));
                body.insert("frequency_penalty".into(), json!(penalty));
                body.insert("logprobs".into(), json!(false));
                body.insert("n".into(), json!(1));
            }
            Value::Object(body)
        },
    )
}

// ---- valid Anthropic messages requests ----

fn anthropic_text_blocks() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(text().prop_map(|t| json!({"type": "text", "text": t})), 1..3)
}

fn anthropic_user_blocks() -> impl Strategy<Value = Vec<Value>> {
    let block = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        Just(
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        ),
        Just(
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
        ),
    ];
    prop::collection::vec(block, 1..3)
}

#[derive(Debug, Clone)]
enum AssistantTurn {
    Text(String),
    Blocks { thinking: bool, texts: Vec<Value> },
    Tools { text: Option<String>, calls: Vec<(&'static str, Value)> },
}

fn assistant_turn() -> impl Strategy<Value = AssistantTurn> {
    prop_oneof![
        text().prop_map(AssistantTurn::Text),
        (prop::bool::ANY, anthropic_text_blocks())
            .prop_map(|(thinking, texts)| AssistantTurn::Blocks { thinking, texts }),
        (
            prop::option::of(text()),
            prop::collection::vec((prop::sample::select(&TOOL_NAMES[..]), arguments()), 1..3)
        )
            .prop_map(|(text, calls)| AssistantTurn::Tools { text, calls }),
    ]
}

/// A tool result's content: none, a string, or text blocks.
fn tool_result_content() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        text().prop_map(|t| Some(Value::from(t))),
        anthropic_text_blocks().prop_map(|b| Some(Value::from(b))),
    ]
}

#[derive(Debug, Clone)]
struct Round {
    user: Value,
    /// Contents of the results answering the previous assistant turn's tool uses, reused in turn
    /// when it made more uses than there are here.
    results: Vec<Option<Value>>,
    /// Whether a user turn answering tool uses also says something.
    also_text: bool,
    assistant: Option<AssistantTurn>,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop_oneof![text().prop_map(Value::from), anthropic_user_blocks().prop_map(Value::from)],
        prop::collection::vec(tool_result_content(), 2),
        prop::bool::ANY,
        prop::option::weighted(0.8, assistant_turn()),
    )
        .prop_map(|(user, results, also_text, assistant)| Round {
            user,
            results,
            also_text,
            assistant,
        })
}

fn anthropic_turns(rounds: Vec<Round>) -> Value {
    let mut turns = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let n = rounds.len();
    for (r, round) in rounds.into_iter().enumerate() {
        let user = if pending.is_empty() {
            round.user
        } else {
            let mut blocks: Vec<Value> = pending
                .drain(..)
                .zip(round.results.iter().cycle())
                .map(|(id, content)| {
                    let mut b = json!({"type": "tool_result", "tool_use_id": id});
                    if let Some(c) = content {
                        b["content"] = c.clone();
                    }
                    b
                })
                .collect();
            if round.also_text {
                blocks.push(json!({"type": "text", "text": "and also"}));
            }
            Value::from(blocks)
        };
        turns.push(json!({"role": "user", "content": user}));
        // The last turn is the user's, or an assistant turn that makes no tool use.
        let assistant = match round.assistant {
            Some(AssistantTurn::Tools { .. }) if r + 1 == n => None,
            other => other,
        };
        let content = match assistant {
            None => continue,
            Some(AssistantTurn::Text(t)) => Value::from(t),
            Some(AssistantTurn::Blocks { thinking, mut texts }) => {
                if thinking {
                    texts.insert(
                        0,
                        json!({"type": "thinking", "thinking": "hmm", "signature": "c2ln"}),
                    );
                }
                Value::from(texts)
            }
            Some(AssistantTurn::Tools { text, calls }) => {
                let mut blocks: Vec<Value> =
                    text.map(|t| json!({"type": "text", "text": t})).into_iter().collect();
                for (k, (name, input)) in calls.into_iter().enumerate() {
                    let id = format!("toolu_{r}_{k}");
                    blocks
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                    pending.push(id);
                }
                Value::from(blocks)
            }
        };
        turns.push(json!({"role": "assistant", "content": content}));
    }
    Value::from(turns)
}

fn anthropic_tools(names: &[&str]) -> Value {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut t = json!({"name": n, "input_schema": {"type": "object", "properties": {}}});
            if i % 2 == 1 {
                t["description"] = json!(format!("the {n} tool"));
            }
            t
        })
        .collect()
}

/// A messages request Anthropic accepts, using what aixds can send to OpenAI: at most 4 stop
/// sequences, OpenAI's limit.
pub(super) fn anthropic_request() -> impl Strategy<Value = Value> {
    let system = prop::option::of(prop_oneof![
        text().prop_map(Value::from),
        anthropic_text_blocks().prop_map(Value::from)
    ]);
    let options = (
        prop::option::of(prop::collection::vec(text(), 0..=4)),
        prop::option::of(0.0f64..=1.0),
        prop::option::of(0.0f64..=1.0),
        prop::option::of(1u64..100),
        prop::option::of(prop::bool::ANY),
        prop::option::of(ident()),
    );
    let tools = tool_names().prop_flat_map(|names| {
        let choice = prop::sample::select(vec!["auto", "any", "none", "tool"]);
        (Just(names), prop::option::of((choice, prop::option::of(prop::bool::ANY))))
    });
    (1u64..8192, system, prop::collection::vec(round(), 1..5), options, tools).prop_map(
        |(
            max_tokens,
            system,
            rounds,
            (stop, temperature, top_p, top_k, stream, user),
            (names, choice),
        )| {
            let mut body = Map::new();
            body.insert("model".into(), json!("claude-sonnet"));
            body.insert("max_tokens".into(), json!(max_tokens));
            body.insert("messages".into(), anthropic_turns(rounds));
            maybe(&mut body, "system", system);
            maybe(&mut body, "stop_sequences", stop.map(Value::from));
            maybe(&mut body, "temperature", temperature.map(Value::from));
            maybe(&mut body, "top_p", top_p.map(Value::from));
            maybe(&mut body, "top_k", top_k.map(Value::from));
            maybe(&mut body, "stream", stream.map(Value::from));
            maybe(&mut body, "metadata", user.map(|u| json!({"user_id": u})));
            if !names.is_empty() {
                body.insert("tools".into(), anthropic_tools(&names));
                if let Some((kind, disable)) = choice {
                    let mut c = json!({"type": kind});
                    if kind == "tool" {
                        c["name"] = json!(names[0]);
                    }
                    if let (Some(d), false) = (disable, kind == "none") {
                        c["disable_parallel_tool_use"] = json!(d);
                    }
                    body.insert("tool_choice".into(), c);
                }
            }
            Value::Object(body)
        },
    )
}

/// Translates `client` (a request to `endpoint`) for `backend` and returns the body sent.
pub(super) fn translated(endpoint: Endpoint, client: &Value, backend: APISchema) -> Value {
    try_translated(endpoint, client, backend)
        .unwrap_or_else(|e| panic!("a valid request was refused: {e}\n{client:#}"))
}

fn try_translated(
    endpoint: Endpoint,
    client: &Value,
    backend: APISchema,
) -> Result<Value, TranslateError> {
    let bytes = serde_json::to_vec(client).unwrap();
    let parsed = parse_request(endpoint, &bytes).unwrap_or_else(|e| panic!("{e}: {client:#}"));
    let out = translate_request(&parsed, Target::new(&schema(backend)), None)?;
    Ok(serde_json::from_slice(&out.body).unwrap())
}

/// Whether Converse cannot take a valid request: it names an image by URL (Converse takes
/// bytes).
fn converse_refuses(client: &Value) -> bool {
    client.to_string().contains("\"url\":\"https://")
}

/// A valid request sent to Converse: accepted by Converse's shape, or refused with a 422 for
/// what Converse cannot take.
fn to_converse(endpoint: Endpoint, client: &Value) {
    match try_translated(endpoint, client, APISchema::AWSBedrock) {
        Ok(sent) => {
            assert!(!converse_refuses(client), "should be refused: {client:#}");
            accepted(bedrock_converse, &sent, client);
        }
        Err(e) => {
            assert!(converse_refuses(client), "a valid request was refused: {e}\n{client:#}");
            assert_eq!(e.status(), 422, "{e}");
        }
    }
}

pub(super) fn accepted(check: fn(&Value) -> Result<(), String>, sent: &Value, client: &Value) {
    if let Err(e) = check(sent) {
        panic!("the backend would reject it: {e}\nsent: {sent:#}\nclient sent: {client:#}");
    }
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated OpenAI chat requests: each is valid, and what an Anthropic, OpenAI, Azure,
    /// Bedrock Converse or Anthropic-on-Bedrock backend gets is valid for that backend.
    #[test]
    fn valid_chat_requests_translate_to_valid_requests(client in openai_request()) {
        accepted(openai_chat, &client, &client);
        let sent = translated(Endpoint::ChatCompletions, &client, APISchema::Anthropic);
        accepted(anthropic_messages, &sent, &client);
        for backend in [APISchema::OpenAI, APISchema::AzureOpenAI] {
            accepted(openai_chat, &translated(Endpoint::ChatCompletions, &client, backend), &client);
        }
        let sent = translated(Endpoint::ChatCompletions, &client, APISchema::AWSAnthropic);
        accepted(bedrock_anthropic, &sent, &client);
        to_converse(Endpoint::ChatCompletions, &client);
    }

    /// 256 generated Anthropic messages requests: each is valid, and what an OpenAI, Azure,
    /// Anthropic, Bedrock Converse or Anthropic-on-Bedrock backend gets is valid for that backend.
    #[test]
    fn valid_messages_requests_translate_to_valid_requests(client in anthropic_request()) {
        accepted(anthropic_messages, &client, &client);
        for backend in [APISchema::OpenAI, APISchema::AzureOpenAI] {
            accepted(openai_chat, &translated(Endpoint::Messages, &client, backend), &client);
        }
        let sent = translated(Endpoint::Messages, &client, APISchema::Anthropic);
        accepted(anthropic_messages, &sent, &client);
        let sent = translated(Endpoint::Messages, &client, APISchema::AWSAnthropic);
        accepted(bedrock_anthropic, &sent, &client);
        to_converse(Endpoint::Messages, &client);
    }
}

// ---- arbitrary requests ----

/// JSON shaped like requests, with the keys translation looks at and values of any type.
pub(super) fn json_ish() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "tool_call_id",
        "function",
        "name",
        "arguments",
        "tools",
        "tool_choice",
        "system",
        "max_tokens",
        "stop",
        "stop_sequences",
        "stream",
        "stream_options",
        "include_usage",
        "input",
        "tool_use_id",
        "source",
        "image_url",
        "url",
        "data",
        "media_type",
        "metadata",
        "user_id",
        "parallel_tool_calls",
        "disable_parallel_tool_use",
        "n",
        "response_format",
        "user",
    ]);
    let word = prop::sample::select(vec![
        "user",
        "assistant",
        "system",
        "tool",
        "developer",
        "text",
        "image",
        "image_url",
        "tool_use",
        "tool_result",
        "thinking",
        "function",
        "auto",
        "any",
        "none",
        "required",
        "base64",
        "url",
        "data:image/png;base64,AA",
        "https://x",
        "{}",
        "{\"a\":1}",
        "[",
        "",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        prop::bool::ANY.prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word.prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

const ENDPOINTS: [Endpoint; 4] =
    [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Messages];
const SCHEMAS: [APISchema; 6] = [
    APISchema::OpenAI,
    APISchema::AzureOpenAI,
    APISchema::Anthropic,
    APISchema::AWSBedrock,
    APISchema::AWSAnthropic,
    APISchema::Cohere,
];

/// Every endpoint to every schema: an answer, never a panic; a refusal is a client error.
fn translate_anything(body: &[u8]) {
    for endpoint in ENDPOINTS {
        let Ok(parsed) = parse_request(endpoint, body) else { continue };
        for backend in SCHEMAS {
            match translate_request(&parsed, Target::new(&schema(backend)), None) {
                Ok(out) => {
                    let _: Value =
                        serde_json::from_slice(&out.body).expect("a translated body is JSON");
                }
                Err(e) => assert!(
                    matches!(e, TranslateError::InvalidRequest(_) | TranslateError::Unsupported(_)),
                    "{e:?}"
                ),
            }
        }
    }
}

proptest! {
    #![proptest_config(super::config(512))]

    /// 512 request-shaped JSON values with a model, under every endpoint and backend schema.
    #[test]
    fn arbitrary_json_requests_never_panic(mut body in json_ish(), messages in json_ish()) {
        if let Value::Object(o) = &mut body {
            o.insert("model".into(), json!("m"));
            o.entry("messages").or_insert(messages);
        }
        translate_anything(&serde_json::to_vec(&body).unwrap());
    }

    /// 256 byte strings, some of them JSON.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        ".{0,64}".prop_map(String::into_bytes),
    ]) {
        translate_anything(&body);
    }
}

// ---- responses ----

#[derive(Debug, Clone)]
pub(super) enum Block {
    Text(Vec<String>),
    Tool(&'static str, Vec<String>),
}

pub(super) fn blocks() -> impl Strategy<Value = Vec<Block>> {
    let block = prop_oneof![
        prop::collection::vec(text(), 1..4).prop_map(Block::Text),
        (prop::sample::select(&TOOL_NAMES[..]), arguments()).prop_map(|(name, args)| {
            // The arguments' JSON, streamed in pieces cut anywhere.
            let s = args.to_string();
            let cut = s.len() / 2;
            let pieces = if s.is_char_boundary(cut) {
                vec![s[..cut].to_string(), s[cut..].to_string()]
            } else {
                vec![s]
            };
            Block::Tool(name, pieces)
        }),
    ];
    prop::collection::vec(block, 0..4)
}

pub(super) fn sse(kind: Option<&str>, data: &Value, crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let event = kind.map(|k| format!("event: {k}{nl}")).unwrap_or_default();
    format!("{event}data: {data}{nl}{nl}")
}

fn anthropic_stream(blocks: &[Block], crlf: bool) -> String {
    let mut out = sse(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [], "stop_reason": null, "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        crlf,
    );
    out.push_str(&sse(Some("ping"), &json!({"type": "ping"}), crlf));
    for (i, b) in blocks.iter().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = match b {
            Block::Text(pieces) => (
                json!({"type": "text", "text": ""}),
                pieces.iter().map(|p| json!({"type": "text_delta", "text": p})).collect(),
            ),
            Block::Tool(name, pieces) => (
                json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}),
                pieces
                    .iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
        };
        out.push_str(&sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": i, "content_block": start}),
            crlf,
        ));
        for d in deltas {
            out.push_str(&sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": i, "delta": d}),
                crlf,
            ));
        }
        out.push_str(&sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": i}),
            crlf,
        ));
    }
    let stop =
        if blocks.iter().any(|b| matches!(b, Block::Tool(..))) { "tool_use" } else { "end_turn" };
    out.push_str(&sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}}), crlf));
    out.push_str(&sse(Some("message_stop"), &json!({"type": "message_stop"}), crlf));
    out
}

fn openai_stream(blocks: &[Block], crlf: bool) -> String {
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut out = sse(None, &chunk(json!({"role": "assistant", "content": ""}), Value::Null), crlf);
    let mut tool = 0;
    for b in blocks {
        match b {
            Block::Text(pieces) => {
                for p in pieces {
                    out.push_str(&sse(None, &chunk(json!({"content": p}), Value::Null), crlf));
                }
            }
            Block::Tool(name, pieces) => {
                out.push_str(&sse(None, &chunk(json!({"tool_calls": [{"index": tool, "id": format!("call_{tool}"), "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null), crlf));
                for p in pieces {
                    out.push_str(&sse(
                        None,
                        &chunk(
                            json!({"tool_calls": [{"index": tool, "function": {"arguments": p}}]}),
                            Value::Null,
                        ),
                        crlf,
                    ));
                }
                tool += 1;
            }
        }
    }
    let finish = if tool > 0 { "tool_calls" } else { "stop" };
    out.push_str(&sse(None, &chunk(json!({}), json!(finish)), crlf));
    out.push_str(&sse(None, &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19}}), crlf));
    out.push_str(if crlf { "data: [DONE]\r\n\r\n" } else { "data: [DONE]\n\n" });
    out
}

fn anthropic_json(blocks: &[Block]) -> String {
    let content: Vec<Value> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            Block::Text(p) => json!({"type": "text", "text": p.concat()}),
            Block::Tool(name, p) => json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": serde_json::from_str::<Value>(&p.concat()).unwrap()}),
        })
        .collect();
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": content, "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 7, "output_tokens": 12}}).to_string()
}

fn openai_json(blocks: &[Block]) -> String {
    let text: String = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(p) => Some(p.concat()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match b {
            Block::Tool(name, p) => Some(json!({"id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": p.concat()}})),
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::from(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::from(calls);
    }
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19}}).to_string()
}

/// Every pairing of client endpoint and backend whose responses get their own handling: the two
/// translations and the two passthroughs.
const RESPONSE_PAIRS: [(Endpoint, APISchema); 4] = [
    (Endpoint::ChatCompletions, APISchema::Anthropic),
    (Endpoint::Messages, APISchema::OpenAI),
    (Endpoint::ChatCompletions, APISchema::OpenAI),
    (Endpoint::Messages, APISchema::Anthropic),
];

/// What the client gets from `body` cut at `cuts`: the bytes, then Ok with the usage and
/// whether the stream was cut short, or the error that stopped it.
pub(super) fn run(
    endpoint: Endpoint,
    backend: APISchema,
    stream: bool,
    include_usage: bool,
    body: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, Result<(Usage, bool), TranslateError>) {
    let mut t =
        response_translator(endpoint, backend, stream).include_usage(include_usage).with_created(1);
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.push(body.len());
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for (i, &to) in points.iter().enumerate() {
        match t.feed(&body[from..to], i + 1 == points.len()) {
            Ok(bytes) => out.extend(bytes),
            Err(e) => {
                out.extend(t.failure(&e.to_string()));
                return (out, Err(e));
            }
        }
        from = to;
    }
    (out, Ok((t.usage(), t.truncated())))
}

/// Each event of an SSE body the client gets carries JSON (or OpenAI's `[DONE]`).
pub(super) fn assert_events_are_json(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("the client's stream is UTF-8");
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line != "[DONE]" {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}\n{text}"));
        }
    }
}

proptest! {
    #![proptest_config(super::config(256))]

    /// 256 generated responses, streamed and whole, complete or cut off at any byte, for each of
    /// the four pairings: the client gets the same bytes, usage and verdict whether the body
    /// arrives in one piece or cut at up to 8 random points.
    #[test]
    fn responses_translate_the_same_however_they_are_split(
        blocks in blocks(),
        crlf in prop::bool::ANY,
        include_usage in prop::bool::ANY,
        cut_off in prop::option::weighted(0.25, any::<prop::sample::Index>()),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for (endpoint, backend) in RESPONSE_PAIRS {
            let anthropic = backend == APISchema::Anthropic;
            for stream in [true, false] {
                let mut body = match (anthropic, stream) {
                    (true, true) => anthropic_stream(&blocks, crlf),
                    (false, true) => openai_stream(&blocks, crlf),
                    (true, false) => anthropic_json(&blocks),
                    (false, false) => openai_json(&blocks),
                }
                .into_bytes();
                if let Some(at) = &cut_off {
                    body.truncate(at.index(body.len()));
                }
                let whole = run(endpoint, backend, stream, include_usage, &body, &[]);
                let split = run(endpoint, backend, stream, include_usage, &body, &cuts);
                prop_assert_eq!(
                    (&whole.0, whole.1.as_ref().ok()),
                    (&split.0, split.1.as_ref().ok()),
                    "{:?} to {:?}, stream {}", endpoint, backend, stream
                );
                prop_assert_eq!(whole.1.is_err(), split.1.is_err());
                let passthrough = (endpoint == Endpoint::Messages) == anthropic;
                if stream {
                    // A same-schema stream passes the upstream's bytes on, a cut event included.
                    if !passthrough || cut_off.is_none() {
                        assert_events_are_json(&whole.0);
                    }
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

    /// 256 corrupted responses (generated ones with bytes changed, dropped or inserted, and
    /// random bytes) fed in random pieces to every translator: an answer or an error, no panic.
    #[test]
    fn corrupted_responses_never_panic(
        blocks in blocks(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let bodies = [
            anthropic_stream(&blocks, false).into_bytes(),
            openai_stream(&blocks, true).into_bytes(),
            anthropic_json(&blocks).into_bytes(),
            openai_json(&blocks).into_bytes(),
            noise,
        ];
        for mut body in bodies {
            for (at, byte, op) in &edits {
                let i = at.index(body.len() + 1);
                match op {
                    0 if i < body.len() => body[i] = *byte,
                    1 if i < body.len() => { body.remove(i); }
                    _ => body.insert(i, *byte),
                }
            }
            for (endpoint, backend) in RESPONSE_PAIRS {
                for stream in [true, false] {
                    let _ = run(endpoint, backend, stream, true, &body, &cuts);
                }
            }
        }
    }
}

// ---- the validators bite ----

#[test]
fn the_anthropic_shape_rejects_what_anthropic_rejects() {
    let ok =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(anthropic_messages(&ok), Ok(()));
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        edit(&mut v);
        anthropic_messages(&v).expect_err(&v.to_string())
    };
    assert!(
        broken(&|v| {
            v.as_object_mut().unwrap().remove("max_tokens");
        })
        .contains("max_tokens")
    );
    assert!(broken(&|v| v["n"] = json!(1)).contains("unknown field \"n\""));
    assert!(broken(&|v| v["messages"][0]["role"] = json!("assistant")).contains("first message"));
    assert!(
        broken(&|v| v["messages"][0]["content"] =
            json!([{"type": "image_url", "image_url": {"url": "https://x"}}]))
        .contains("image_url")
    );
    assert!(broken(&|v| v["messages"][0]["content"] = json!(" ")).contains("non-whitespace"));
    assert!(broken(&|v| v["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": "no result"},
    ])).contains("answers tool uses"));
    assert!(broken(&|v| v["tool_choice"] = json!({"type": "any"})).contains("needs tools"));
}

#[test]
fn the_openai_shape_rejects_what_openai_rejects() {
    let ok = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(openai_chat(&ok), Ok(()));
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        edit(&mut v);
        openai_chat(&v).expect_err(&v.to_string())
    };
    assert!(
        broken(&|v| v["stream_options"] = json!({"include_usage": true}))
            .contains("stream is true")
    );
    assert!(broken(&|v| v["stop"] = json!(["a", "b", "c", "d", "e"])).contains("at most 4"));
    assert!(broken(&|v| v["top_k"] = json!(3)).contains("unknown field \"top_k\""));
    assert!(broken(&|v| v["parallel_tool_calls"] = json!(false)).contains("tools"));
    assert!(broken(&|v| v["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "no result"},
    ])).contains("not answered"));
}

/// A top-level member of a generated body: `model` and `stream` of every JSON type (and with an
/// escaped key), or another field.
fn member() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        text().prop_map(|t| Value::from(t).to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_string()),
        (0i64..100).prop_map(|n| n.to_string()),
        arguments().prop_map(|v| v.to_string()),
        Just("[1, [\"model\"]]".to_string()),
    ];
    let key = prop_oneof![
        Just("\"model\"".to_string()),
        Just("\"mod\\u0065l\"".to_string()),
        Just("\"stream\"".to_string()),
        ident().prop_map(|k| format!("{k:?}")),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}: {v}"))
}

/// An object of such members.
fn object() -> impl Strategy<Value = String> {
    prop::collection::vec(member(), 0..5).prop_map(|m| format!("{{{}}}", m.join(", ")))
}

/// Generated bodies: objects of such members, sometimes cut short or not an object at all.
fn body() -> impl Strategy<Value = String> {
    let cut = (object(), any::<prop::sample::Index>()).prop_map(|(o, at)| {
        let at = at.index(o.len() + 1);
        let at = (0..=at).rev().find(|i| o.is_char_boundary(*i)).unwrap_or(0);
        o[..at].to_string()
    });
    let other = prop::sample::select(vec!["[]", "\"model\"", "7", "{} {}", "null", ""]);
    prop_oneof![4 => object(), 1 => cut, 1 => other.prop_map(str::to_string)]
}

proptest! {
    #![proptest_config(super::config(500))]

    /// The router phase's reader agrees with the full parser on every body that names `model`
    /// and `stream` at most once: the same model and stream flag, or the same error; a body
    /// naming either twice is refused, whatever the full parser would take.
    #[test]
    fn reading_the_head_agrees_with_parsing_the_body(body in body(), endpoint in prop::sample::select(Endpoint::ALL.to_vec())) {
        let head = read_head(endpoint, body.as_bytes());
        let parsed = parse_request(endpoint, body.as_bytes());
        let twice = |key| count_key(&mut serde_json::Deserializer::from_str(&body), key).is_some_and(|n| n > 1);
        let twice = twice("model") || twice("stream");
        if twice {
            prop_assert!(matches!(head, Err(TranslateError::InvalidRequest(_))), "{body}: {head:?}");
        } else {
            match (&head, &parsed) {
                (Ok(h), Ok(p)) => prop_assert_eq!((&h.model, h.stream), (&p.model, p.stream), "{}", body),
                (Err(h), Err(p)) => prop_assert_eq!(std::mem::discriminant(h), std::mem::discriminant(p), "{}: {:?} / {:?}", body, h, p),
                _ => prop_assert!(false, "{body}: {head:?} / {:?}", parsed.map(|p| p.model)),
            }
        }
    }
}

/// How often the top-level object `de` reads names `key` (`None` when it is no object).
fn count_key<'de>(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    key: &str,
) -> Option<usize> {
    struct Count<'k>(&'k str);
    impl<'de> serde::de::Visitor<'de> for Count<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut n = 0;
            while let Some(k) = map.next_key::<String>()? {
                n += usize::from(k == self.0);
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(Some(n))
        }
    }
    serde::Deserializer::deserialize_map(de, Count(key)).ok().flatten()
}
