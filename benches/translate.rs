//! Translation cost per provider (issue 13): the pure translation library, no gRPC and no Envoy.
//!
//! - `translate/request/{client}→{schema}`: `parse_request` + `translate_request` of a 1 KB chat
//!   request (system prompt, two turns, one tool), as the upstream phase does per attempt;
//! - `translate/chunk/{client}→{schema}`: one streamed text event of the backend's, fed to a
//!   [`ResponseTranslator`] already past the stream's start, as the upstream phase feeds each
//!   response body chunk.
//!
//! The same-family pairs (openai→OpenAI, anthropic→Anthropic) pass bytes through and are the
//! baseline of each run. Bedrock's streams are AWS event-stream frames (a ConverseStream
//! `contentBlockDelta`; for Anthropic models an InvokeModel `chunk` wrapping Anthropic's event in
//! base64), framed here as Bedrock sends them; Gemini's and Cohere's are their SSE events.
//! `cargo bench --bench translate`; under `cargo test --benches` each benchmark runs once as a
//! smoke test.

use std::hint::black_box;

use aixds::api::{APISchema, VersionedAPISchema};
use aixds::extproc::translate::{
    Endpoint, ResponseTranslator, Target, VertexLocation, parse_request, response_translator,
    translate_request,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// Where the Vertex AI backends are (other schemas ignore it).
const VERTEX: VertexLocation<'static> = VertexLocation { project: "p", region: "us-central1" };

/// A chat request of exactly `size` bytes in the client's schema.
fn request(endpoint: Endpoint, size: usize) -> Vec<u8> {
    let tool = json!({"name": "get_weather", "description": "Weather in a city",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let build = |pad: usize| {
        let filler = "x".repeat(pad);
        let turns = json!([
            {"role": "user", "content": format!("What is the weather like in Paris? {filler}")},
            {"role": "assistant", "content": "Let me check."},
            {"role": "user", "content": "Please hurry."},
        ]);
        let body = match endpoint {
            Endpoint::Messages => json!({
                "model": "m", "max_tokens": 256, "system": "You are a helpful assistant.",
                "messages": turns,
                "tools": [{"name": tool["name"], "description": tool["description"],
                           "input_schema": tool["parameters"]}],
            }),
            _ => {
                let mut messages =
                    vec![json!({"role": "system", "content": "You are a helpful assistant."})];
                messages.extend(turns.as_array().cloned().unwrap_or_default());
                json!({"model": "m", "max_tokens": 256, "messages": messages,
                       "tools": [{"type": "function", "function": tool}]})
            }
        };
        serde_json::to_vec(&body).unwrap_or_default()
    };
    let base = build(0).len();
    build(size.saturating_sub(base))
}

/// One AWS event-stream event frame: string headers, JSON payload, both CRC32s.
fn frame(event_type: &str, payload: &Value) -> Vec<u8> {
    let payload = payload.to_string().into_bytes();
    let mut headers = Vec::new();
    for (name, value) in [
        (":event-type", event_type),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ] {
        headers.push(name.len() as u8);
        headers.extend_from_slice(name.as_bytes());
        headers.push(7);
        headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        headers.extend_from_slice(value.as_bytes());
    }
    let mut out = ((16 + headers.len() + payload.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

/// Anthropic's SSE events as InvokeModelWithResponseStream frames them.
fn invoke_chunks(sse: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(sse);
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .flat_map(|data| frame("chunk", &json!({"bytes": STANDARD.encode(data), "p": "abcdef"})))
        .collect()
}

/// The stream's opening events and one text event, in the backend's schema.
fn stream_events(backend: APISchema) -> (Vec<u8>, Vec<u8>) {
    match backend {
        APISchema::AWSBedrock => (
            frame("messageStart", &json!({"role": "assistant", "p": "abcdefgh"})),
            frame(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"text": "Hello there"}, "p": "abcd"}),
            ),
        ),
        APISchema::AWSAnthropic => {
            let (start, event) = stream_events(APISchema::Anthropic);
            (invoke_chunks(&start), invoke_chunks(&event))
        }
        APISchema::Anthropic | APISchema::GCPAnthropic => (
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n\
              event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
                .to_vec(),
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n"
                .to_vec(),
        ),
        APISchema::GCPVertexAI => (
            b"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]}}],\"modelVersion\":\"m\",\"responseId\":\"r1\"}\r\n\r\n"
                .to_vec(),
            b"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hello there\"}]}}],\"usageMetadata\":{\"trafficType\":\"ON_DEMAND\"},\"modelVersion\":\"m\",\"responseId\":\"r1\"}\r\n\r\n"
                .to_vec(),
        ),
        APISchema::Cohere => (
            b"event: message-start\ndata: {\"id\":\"c1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n\
              event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
                .to_vec(),
            b"event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hello there\"}}}}\n\n"
                .to_vec(),
        ),
        APISchema::OpenAI | APISchema::AzureOpenAI => (
            b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
                .to_vec(),
            b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}]}\n\n"
                .to_vec(),
        ),
    }
}

/// Every client and backend pair the library translates, named `{client}→{schema}`.
fn pairs() -> Vec<(&'static str, Endpoint, APISchema)> {
    vec![
        ("openai→OpenAI", Endpoint::ChatCompletions, APISchema::OpenAI),
        ("openai→Anthropic", Endpoint::ChatCompletions, APISchema::Anthropic),
        ("anthropic→Anthropic", Endpoint::Messages, APISchema::Anthropic),
        ("anthropic→OpenAI", Endpoint::Messages, APISchema::OpenAI),
        ("openai→AWSBedrock", Endpoint::ChatCompletions, APISchema::AWSBedrock),
        ("anthropic→AWSBedrock", Endpoint::Messages, APISchema::AWSBedrock),
        ("anthropic→AWSAnthropic", Endpoint::Messages, APISchema::AWSAnthropic),
        ("openai→AWSAnthropic", Endpoint::ChatCompletions, APISchema::AWSAnthropic),
        ("openai→GCPVertexAI", Endpoint::ChatCompletions, APISchema::GCPVertexAI),
        ("anthropic→GCPVertexAI", Endpoint::Messages, APISchema::GCPVertexAI),
        ("openai→GCPAnthropic", Endpoint::ChatCompletions, APISchema::GCPAnthropic),
        ("anthropic→GCPAnthropic", Endpoint::Messages, APISchema::GCPAnthropic),
        ("openai→Cohere", Endpoint::ChatCompletions, APISchema::Cohere),
        ("anthropic→Cohere", Endpoint::Messages, APISchema::Cohere),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, endpoint, schema) in pairs() {
        let backend = VersionedAPISchema { name: schema, version: None, prefix: None };
        let body = request(endpoint, 1024);
        c.bench_function(&format!("translate/request/{name}"), |b| {
            b.iter(|| {
                let parsed = parse_request(endpoint, black_box(&body)).ok();
                parsed.and_then(|p| {
                    translate_request(&p, Target::new(&backend).in_vertex(VERTEX), None).ok()
                })
            })
        });
        let (start, event) = stream_events(schema);
        let mut translator: ResponseTranslator = response_translator(endpoint, schema, true);
        let _ = translator.feed(&start, false);
        c.bench_function(&format!("translate/chunk/{name}"), |b| {
            b.iter(|| translator.feed(black_box(&event), false).map(|out| out.len()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
