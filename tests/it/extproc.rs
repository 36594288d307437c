//! The translation ext_proc over real gRPC (tonic on 127.0.0.1:0), playing Envoy's side of the
//! protocol: the router phase (paths, `/v1/models`, the model header, errors in the client's
//! format) and the upstream phase (translation, credentials, internal headers, responses).

use std::collections::BTreeMap;

use aixds::extproc::{ExtProcOptions, ExtProcService, RuntimeConfig, SharedRuntime};
use aixds::graph::Graph;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, body_mutation,
};
use envoy_types::pb::google::protobuf::value;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;
use tonic::transport::Channel;

use crate::builders::parse;

const OBJECTS: &str = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: claude}]}]
    backendRefs: [{name: anthropic, modelNameOverride: claude-sonnet-4-5}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: gpt}]}]
    backendRefs:
    - name: openai
      headerMutation: {set: [{name: x-team, value: route}], remove: [x-drop-me]}
      bodyMutation: {set: [{path: temperature, value: "0.5"}]}
  - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: "llama-.*"}]}]
    backendRefs: [{name: openai}]
  llmRequestCosts:
  - {metadataKey: llm_input_token, type: InputToken}
  - {metadataKey: llm_output_token, type: OutputToken}
  - {metadataKey: llm_total_token, type: TotalToken}
  - {metadataKey: llm_cel, type: CEL, cel: "input_tokens * 2"}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: anthropic}
spec:
  schema: {name: Anthropic}
  backendRef: {name: anthropic, group: gateway.envoyproxy.io, kind: Backend}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: anthropic}
spec: {endpoints: [{fqdn: {hostname: api.anthropic.com, port: 443}}]}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: anthropic-key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: anthropic}]
  type: AnthropicAPIKey
  anthropicAPIKey: {secretRef: {name: anthropic-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: anthropic-key}
stringData: {apiKey: "sk-ant-test\n"}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, group: gateway.envoyproxy.io, kind: Backend}
  headerMutation: {set: [{name: x-team, value: backend}, {name: x-backend, value: openai}]}
  bodyMutation: {set: [{path: temperature, value: "0.1"}, {path: user, value: gateway}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 8080}}]}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]
  type: APIKey
  apiKey: {secretRef: {name: openai-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: openai-key}
stringData: {apiKey: sk-openai-test}
"#;

fn runtime(max_body_bytes: usize) -> (SharedRuntime, ExtProcOptions) {
    let mut graph = Graph::new();
    for doc in OBJECTS.split("\n---\n") {
        graph.apply(parse(doc));
    }
    let runtime = RuntimeConfig::shared();
    RuntimeConfig::publish(&runtime, &graph);
    (runtime, ExtProcOptions { max_body_bytes, ..Default::default() })
}

/// The service on a free loopback port, and a client for it.
async fn client_with(max_body_bytes: usize) -> ExternalProcessorClient<Channel> {
    let (runtime, options) = runtime(max_body_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExtProcService::new(runtime, options).into_service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    ExternalProcessorClient::connect(format!("http://{addr}")).await.unwrap()
}

async fn client() -> ExternalProcessorClient<Channel> {
    client_with(aixds::extproc::DEFAULT_MAX_BODY_BYTES).await
}

/// One ext_proc stream, as Envoy holds it for one request in one phase.
struct Stream {
    tx: mpsc::Sender<ProcessingRequest>,
    rx: Streaming<ProcessingResponse>,
}

impl Stream {
    async fn router(client: &mut ExternalProcessorClient<Channel>) -> Stream {
        Stream::open(client, None).await
    }

    async fn upstream(client: &mut ExternalProcessorClient<Channel>, cluster: &str) -> Stream {
        Stream::open(client, Some(cluster)).await
    }

    async fn open(client: &mut ExternalProcessorClient<Channel>, cluster: Option<&str>) -> Stream {
        let (tx, rx) = mpsc::channel(4);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(cluster) = cluster {
            request.metadata_mut().insert("x-aixds-backend", cluster.parse().unwrap());
        }
        let rx = client.process(request).await.unwrap().into_inner();
        Stream { tx, rx }
    }

    async fn send(&mut self, request: In) -> Out {
        let message = ProcessingRequest { request: Some(request), ..Default::default() };
        self.tx.send(message).await.unwrap();
        self.rx.message().await.unwrap().expect("a response").response.expect("a response kind")
    }

    async fn send_full(&mut self, request: In) -> ProcessingResponse {
        let message = ProcessingRequest { request: Some(request), ..Default::default() };
        self.tx.send(message).await.unwrap();
        self.rx.message().await.unwrap().expect("a response")
    }
}

fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    let headers = pairs
        .iter()
        .map(|(k, v)| HeaderValue {
            key: k.to_string(),
            raw_value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    HttpHeaders { headers: Some(HeaderMap { headers }), end_of_stream, ..Default::default() }
}

fn post(path: &str, extra: &[(&str, &str)]) -> In {
    let mut pairs = vec![(":method", "POST"), (":path", path), (":authority", "gateway")];
    pairs.extend_from_slice(extra);
    In::RequestHeaders(headers(&pairs, false))
}

fn body(bytes: &[u8]) -> In {
    In::RequestBody(HttpBody { body: bytes.to_vec(), end_of_stream: true, ..Default::default() })
}

fn response_body(bytes: &[u8], end_of_stream: bool) -> In {
    In::ResponseBody(HttpBody { body: bytes.to_vec(), end_of_stream, ..Default::default() })
}

fn immediate(out: Out) -> (u16, Value, ImmediateResponse) {
    let Out::ImmediateResponse(r) = out else { panic!("not an immediate response: {out:?}") };
    let status = r.status.as_ref().map(|s| s.code as u16).unwrap_or_default();
    let body = serde_json::from_slice(&r.body).unwrap();
    let content_type = set_headers(r.headers.as_ref().map(|h| h.set_headers.as_slice()));
    assert_eq!(content_type.get("content-type").map(String::as_str), Some("application/json"));
    (status, body, r)
}

fn common(out: &Out) -> CommonResponse {
    let response = match out {
        Out::RequestHeaders(h) | Out::ResponseHeaders(h) => h.response.clone(),
        Out::RequestBody(b) | Out::ResponseBody(b) => b.response.clone(),
        other => panic!("no common response in {other:?}"),
    };
    response.unwrap_or_default()
}

fn set_headers(
    set: Option<&[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]>,
) -> BTreeMap<String, String> {
    set.into_iter()
        .flatten()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), String::from_utf8(h.raw_value.clone()).unwrap()))
        .collect()
}

/// (headers set, headers removed) by a response.
fn mutation(out: &Out) -> (BTreeMap<String, String>, Vec<String>) {
    let m = common(out).header_mutation.unwrap_or_default();
    (set_headers(Some(&m.set_headers)), m.remove_headers)
}

fn new_body(out: &Out) -> Vec<u8> {
    match common(out).body_mutation.and_then(|b| b.mutation) {
        Some(body_mutation::Mutation::Body(b)) => b,
        other => panic!("no body mutation: {other:?}"),
    }
}

// ---- router phase ----

#[tokio::test]
async fn router_sets_the_model_header_from_the_body_and_clears_the_route_cache() {
    let mut client = client().await;
    // Embeddings and rankings come whole, whatever the body says.
    for (path, endpoint, api, streamed) in [
        ("/v1/chat/completions", "/v1/chat/completions", "openai", "true"),
        ("/v1/completions?x=1", "/v1/completions", "openai", "true"),
        ("/v1/embeddings", "/v1/embeddings", "openai", "false"),
        ("/v1/messages", "/v1/messages", "anthropic", "true"),
        ("/anthropic/v1/messages", "/v1/messages", "anthropic", "true"),
        ("/cohere/v2/rerank", "/cohere/v2/rerank", "cohere", "false"),
    ] {
        let mut stream = Stream::router(&mut client).await;
        let out = stream.send(post(path, &[("x-ai-eg-model", "client-says")])).await;
        assert!(matches!(out, Out::RequestHeaders(_)), "{path}: {out:?}");
        assert_eq!(common(&out), CommonResponse::default(), "{path}: headers pass unchanged");
        let full =
            stream.send_full(body(br#"{"model": "gpt", "stream": true, "messages": []}"#)).await;
        // The client's API, for Envoy's own replies however a later phase rewrites the path.
        let recorded = full.dynamic_metadata.as_ref().map(|m| &m.fields["aixds.request"].kind);
        let Some(Some(value::Kind::StructValue(recorded))) = recorded else {
            panic!("{path}: no aixds.request metadata: {full:?}")
        };
        assert_eq!(
            recorded.fields["client"].kind,
            Some(value::Kind::StringValue(api.into())),
            "{path}"
        );
        let out = full.response.expect("a response kind");
        let (set, removed) = mutation(&out);
        assert_eq!(set["x-ai-eg-model"], "gpt", "{path}: the body's model wins");
        assert_eq!(set["x-aixds-endpoint"], endpoint);
        assert_eq!(set["x-aixds-stream"], streamed, "{path}");
        assert!(removed.is_empty());
        assert!(common(&out).clear_route_cache, "{path}");
        let overwrite = common(&out).header_mutation.unwrap().set_headers[0].append_action;
        assert_eq!(overwrite, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
    }
}

#[tokio::test]
async fn router_lists_models_and_refuses_unknown_paths() {
    let mut client = client().await;
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/v1/models")], true);
    let (status, list, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["claude", "gpt"], "exact model matches, sorted; regexes are not models");
    assert_eq!(list["data"][0]["object"], "model");

    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/v1/models/gpt")], true);
    let (status, model, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, model["id"].as_str()), (200, Some("gpt")));
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/v1/models/llama-3")], true);
    let (status, error, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, error["error"]["code"].as_str()), (404, Some("model_not_found")));

    let mut stream = Stream::router(&mut client).await;
    let (status, error, _) = immediate(stream.send(post("/v1/nope", &[])).await);
    assert_eq!(status, 404);
    assert!(error["error"]["message"].as_str().unwrap().contains("/v1/nope"), "{error}");
    // A path under Anthropic's API is answered in its format.
    for path in ["/v1/messages/batches", "/anthropic/v1/files?limit=1"] {
        let mut stream = Stream::router(&mut client).await;
        let (status, error, _) = immediate(stream.send(post(path, &[])).await);
        assert_eq!((status, error["type"].as_str()), (404, Some("error")), "{path}: {error}");
        assert_eq!(error["error"]["type"], "not_found_error");
        assert!(error["error"]["message"].as_str().unwrap().contains(path), "{error}");
    }

    // And one under Cohere's in Cohere's, which the cohere SDK raises by its status.
    let mut stream = Stream::router(&mut client).await;
    let (status, error, _) = immediate(stream.send(post("/cohere/v2/chat", &[])).await);
    assert_eq!(status, 404);
    assert!(error["message"].as_str().unwrap().contains("/cohere/v2/rerank"), "{error}");
    assert_eq!(error.as_object().map(|e| e.len()), Some(1), "{error}");

    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/v1/messages")], true);
    let (status, error, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, error["type"].as_str()), (405, Some("error")), "{error}");
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/cohere/v2/rerank")], true);
    let (status, error, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!(status, 405);
    assert!(error["message"].as_str().unwrap().contains("GET"), "{error}");

    // Cohere's model list and model, and its 404 for a model no route serves.
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/cohere/v1/models")], true);
    let (status, list, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, list), (200, json!({"models": [{"name": "claude"}, {"name": "gpt"}]})));
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/cohere/v1/models/gpt")], true);
    let (status, model, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, model), (200, json!({"name": "gpt"})));
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/cohere/v1/models/rerank-v3.5")], true);
    let (status, error, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, error), (404, json!({"message": "No route matches the requested model."})));

    // Anthropic's list: at its own path, or at OpenAI's for a client sending its version.
    for request in [
        vec![(":method", "GET"), (":path", "/anthropic/v1/models?limit=1")],
        vec![(":method", "GET"), (":path", "/v1/models"), ("anthropic-version", "2023-06-01")],
    ] {
        let mut stream = Stream::router(&mut client).await;
        let (status, list, _) =
            immediate(stream.send(In::RequestHeaders(headers(&request, true))).await);
        assert_eq!(status, 200, "{request:?}");
        assert_eq!(list["data"][0]["type"], "model", "{list}");
        assert_eq!(
            (list["first_id"].as_str(), list["has_more"].as_bool()),
            (Some("claude"), Some(false))
        );
    }
    let mut stream = Stream::router(&mut client).await;
    let get = headers(&[(":method", "GET"), (":path", "/anthropic/v1/models/llama-3")], true);
    let (status, error, _) = immediate(stream.send(In::RequestHeaders(get)).await);
    assert_eq!((status, error["error"]["type"].as_str()), (404, Some("not_found_error")));
    let mut stream = Stream::router(&mut client).await;
    let (status, error, _) = immediate(stream.send(post("/anthropic/v1/models", &[])).await);
    assert_eq!((status, error["type"].as_str()), (405, Some("error")), "{error}");
}

#[tokio::test]
async fn router_answers_bad_bodies_in_the_clients_format() {
    let mut client = client().await;
    let mut stream = Stream::router(&mut client).await;
    stream.send(post("/v1/chat/completions", &[])).await;
    let (status, error, response) = immediate(stream.send(body(b"{not json")).await);
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("JSON"), "{error}");
    assert_eq!(response.details, "aixds_invalid_request");

    let mut stream = Stream::router(&mut client).await;
    stream.send(post("/v1/messages", &[])).await;
    let (status, error, _) = immediate(stream.send(body(br#"{"messages": []}"#)).await);
    assert_eq!(status, 400);
    assert_eq!(error["type"], "error", "Anthropic's error shape: {error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("model"), "{error}");

    // A POST with no body at all.
    let mut stream = Stream::router(&mut client).await;
    let bare = headers(&[(":method", "POST"), (":path", "/v1/chat/completions")], true);
    let (status, _, _) = immediate(stream.send(In::RequestHeaders(bare)).await);
    assert_eq!(status, 400);
}

#[tokio::test]
async fn router_refuses_bodies_over_the_limit() {
    let mut client = client_with(64).await;
    let mut stream = Stream::router(&mut client).await;
    stream.send(post("/v1/messages", &[])).await;
    let big =
        json!({"model": "claude", "messages": [{"role": "user", "content": "x".repeat(100)}]});
    let (status, error, _) = immediate(stream.send(body(big.to_string().as_bytes())).await);
    assert_eq!(status, 413);
    assert_eq!(error["error"]["type"], "request_too_large", "{error}");
}

// ---- upstream phase ----

/// The request headers as Envoy sends them to the upstream phase after routing.
fn routed(path: &str, route_backend: &str, extra: &[(&str, &str)]) -> In {
    let endpoint = if path.ends_with("messages") { "/v1/messages" } else { path };
    let mut pairs = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("x-aixds-route-backend", route_backend),
        ("x-aixds-endpoint", endpoint),
        ("x-aixds-stream", "false"),
        ("accept-encoding", "gzip"),
    ];
    pairs.extend_from_slice(extra);
    In::RequestHeaders(headers(&pairs, false))
}

#[tokio::test]
async fn upstream_translates_openai_to_anthropic_with_the_backends_key() {
    let mut client = client().await;
    let mut stream = Stream::upstream(&mut client, "aisb/default/anthropic").await;
    let out = stream
        .send(routed(
            "/v1/chat/completions",
            "default/r/0/0",
            &[("authorization", "Bearer client-key"), ("x-aixds-extra", "1")],
        ))
        .await;
    assert_eq!(common(&out), CommonResponse::default());
    let request = json!({
        "model": "claude",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    });
    let out = stream.send(body(request.to_string().as_bytes())).await;
    let sent: Value = serde_json::from_slice(&new_body(&out)).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5", "the backendRef's model override");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
    assert!(sent["max_tokens"].as_u64().is_some(), "Anthropic requires max_tokens: {sent}");

    let (set, mut removed) = mutation(&out);
    assert_eq!(set[":path"], "/v1/messages");
    assert_eq!(set[":authority"], "api.anthropic.com");
    assert_eq!(set["x-api-key"], "sk-ant-test", "the Secret's key, trimmed");
    assert_eq!(set["anthropic-version"], "2023-06-01");
    assert_eq!(set["content-length"], new_body(&out).len().to_string());
    assert!(!set.contains_key("authorization"));
    removed.sort();
    assert_eq!(
        removed,
        [
            "accept-encoding",
            "authorization",
            "x-aixds-endpoint",
            "x-aixds-extra",
            "x-aixds-route-backend",
            "x-aixds-stream"
        ]
    );

    // The response: Anthropic JSON back to an OpenAI chat completion.
    let response = headers(
        &[(":status", "200"), ("content-type", "application/json"), ("content-length", "300")],
        false,
    );
    let out = stream.send(In::ResponseHeaders(response)).await;
    let (set, removed) = mutation(&out);
    assert_eq!(set["content-type"], "application/json");
    assert_eq!(removed, ["content-length"]);
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 7, "output_tokens": 3},
    })
    .to_string();
    let (first, rest) = message.as_bytes().split_at(20);
    let out = stream.send_full(response_body(first, false)).await;
    assert!(new_body(out.response.as_ref().unwrap()).is_empty(), "JSON goes out whole");
    assert!(out.dynamic_metadata.is_none());
    let out = stream.send_full(response_body(rest, true)).await;
    let completion: Value =
        serde_json::from_slice(&new_body(out.response.as_ref().unwrap())).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "Hello");
    assert_eq!(completion["usage"]["prompt_tokens"], 7);
    let metadata = out.dynamic_metadata.expect("usage metadata");
    let Some(value::Kind::StructValue(costs)) = &metadata.fields["io.envoy.ai_gateway"].kind else {
        panic!("{metadata:?}")
    };
    let n = |k: &str| match costs.fields[k].kind {
        Some(value::Kind::NumberValue(n)) => n,
        ref other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        (n("llm_input_token"), n("llm_output_token"), n("llm_total_token")),
        (7.0, 3.0, 10.0)
    );
    assert!(!costs.fields.contains_key("llm_cel"), "CEL is not supported yet");
}

#[tokio::test]
async fn upstream_translates_anthropic_to_openai_with_mutations() {
    let mut client = client().await;
    let mut stream = Stream::upstream(&mut client, "aisb/default/openai").await;
    stream
        .send(routed(
            "/anthropic/v1/messages",
            "default/r/1/0",
            &[("x-api-key", "client-key"), ("anthropic-version", "2023-06-01"), ("x-drop-me", "1")],
        ))
        .await;
    let request =
        json!({"model": "gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let out = stream.send(body(request.to_string().as_bytes())).await;
    let sent: Value = serde_json::from_slice(&new_body(&out)).unwrap();
    assert_eq!(sent["model"], "gpt");
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(sent["temperature"], 0.5, "the backendRef's body mutation wins over the backend's");
    assert_eq!(sent["user"], "gateway", "the backend's own body mutation applies");
    let (set, removed) = mutation(&out);
    assert_eq!(set[":path"], "/v1/chat/completions");
    assert!(!set.contains_key(":authority"), "an IP backend keeps the client's authority");
    assert_eq!(set["authorization"], "Bearer sk-openai-test");
    assert_eq!(set["x-team"], "route", "the backendRef's header mutation wins");
    assert_eq!(set["x-backend"], "openai");
    for gone in ["x-api-key", "x-drop-me", "x-aixds-route-backend", "accept-encoding"] {
        assert!(removed.contains(&gone.to_string()), "{gone} removed: {removed:?}");
    }

    // An OpenAI error comes back in Anthropic's shape.
    let response = headers(&[(":status", "429"), ("content-type", "application/json")], false);
    stream.send(In::ResponseHeaders(response)).await;
    let error =
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": null}});
    let out = stream.send_full(response_body(error.to_string().as_bytes(), true)).await;
    let translated: Value =
        serde_json::from_slice(&new_body(out.response.as_ref().unwrap())).unwrap();
    assert_eq!(translated["type"], "error");
    assert_eq!(translated["error"]["type"], "rate_limit_error");
    assert_eq!(translated["error"]["message"], "slow down");
    assert!(out.dynamic_metadata.is_none(), "no usage for an error");
}

#[tokio::test]
async fn upstream_translates_a_stream_chunk_by_chunk() {
    let mut client = client().await;
    let mut stream = Stream::upstream(&mut client, "aisb/default/anthropic").await;
    stream.send(routed("/v1/chat/completions", "default/r/0/0", &[])).await;
    let request =
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let out = stream.send(body(request.to_string().as_bytes())).await;
    let sent: Value = serde_json::from_slice(&new_body(&out)).unwrap();
    assert_eq!(sent["stream"], true);
    let response = headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let out = stream.send(In::ResponseHeaders(response)).await;
    assert_eq!(mutation(&out).0["content-type"], "text/event-stream");

    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let sse: String = events
        .iter()
        .map(|e| {
            let kind: Value = serde_json::from_str(e).unwrap();
            format!("event: {}\ndata: {e}\n\n", kind["type"].as_str().unwrap())
        })
        .collect();
    // Split mid-event: each piece is translated as far as it goes.
    let mut client_bytes = Vec::new();
    let mut pieces = 0;
    let mut metadata = None;
    for (i, chunk) in sse.as_bytes().chunks(97).enumerate() {
        let last = (i + 1) * 97 >= sse.len();
        let out = stream.send_full(response_body(chunk, last)).await;
        let bytes = new_body(out.response.as_ref().unwrap());
        pieces += usize::from(!bytes.is_empty());
        client_bytes.extend(bytes);
        metadata = out.dynamic_metadata;
    }
    assert!(pieces > 2, "the stream goes out as it comes, not at the end");
    let text = String::from_utf8(client_bytes).unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Hello");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{text}");
    assert!(metadata.is_some(), "usage at the end of the stream");
}

/// A streamed event that cannot be translated fails the stream there and then, with an error
/// event the client's SDK raises; a stream the upstream cut short ends with one too.
#[tokio::test]
async fn upstream_ends_broken_and_cut_streams_with_an_error_event() {
    let mut client = client().await;
    let request =
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":5}}}\n\n";
    let error_chunk = |bytes: Vec<u8>| -> Value {
        let text = String::from_utf8(bytes).unwrap();
        let data = text.strip_prefix("data: ").and_then(|t| t.strip_suffix("\n\n"));
        serde_json::from_str(data.unwrap_or_else(|| panic!("one SSE event: {text:?}"))).unwrap()
    };
    for (rest, want) in [
        ("data: {not json\n\n", "a streamed event is not JSON"),
        (
            "event: content_block_start\ndata: {\"type\":\"content_bl",
            "before the response was complete",
        ),
    ] {
        let mut stream = Stream::upstream(&mut client, "aisb/default/anthropic").await;
        stream.send(routed("/v1/chat/completions", "default/r/0/0", &[])).await;
        stream.send(body(request.to_string().as_bytes())).await;
        let response = headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
        stream.send(In::ResponseHeaders(response)).await;
        let first = new_body(&stream.send(response_body(start.as_bytes(), false)).await);
        assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
        let cut = rest.contains("content_bl");
        let out = new_body(&stream.send(response_body(rest.as_bytes(), cut)).await);
        let error = error_chunk(out);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{error}");
        assert_eq!(error["error"]["type"], "server_error");
        if !cut {
            // What follows a failure is dropped, and the end adds nothing.
            let late = stream.send(response_body(b"event: ping\ndata: {}\n\n", true)).await;
            assert_eq!(new_body(&late), b"");
        }
    }
}

#[tokio::test]
async fn upstream_answers_for_a_backend_it_does_not_know() {
    let mut client = client().await;
    let mut stream = Stream::upstream(&mut client, "aisb/default/missing").await;
    stream.send(routed("/v1/messages", "default/r/0/0", &[])).await;
    let request = json!({"model": "claude", "max_tokens": 5, "messages": []});
    let (status, error, _) = immediate(stream.send(body(request.to_string().as_bytes())).await);
    assert_eq!(status, 503);
    assert_eq!(error["type"], "error", "in the Anthropic client's format: {error}");
}

// ---- runtime config ----

#[test]
fn runtime_config_keys_backends_by_cluster_and_refs_by_rule() {
    let (runtime, _) = runtime(1);
    let config = runtime.load();
    let anthropic = &config.backends["aisb/default/anthropic"];
    assert_eq!(anthropic.hostname.as_deref(), Some("api.anthropic.com"));
    assert_eq!(config.backends["aisb/default/openai"].hostname, None);
    let route_ref = &config.route_backends["default/r/0/0"];
    assert_eq!(route_ref.model_name_override.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(route_ref.costs.len(), 4);
    assert!(config.route_backends.contains_key("default/r/2/0"));
    let printed = format!("{config:?}");
    assert!(!printed.contains("sk-ant-test") && !printed.contains("sk-openai-test"), "{printed}");
}

#[test]
fn runtime_config_credentials_per_policy_type_and_only_when_resolved() {
    use aixds::extproc::runtime::{Auth, Credential};
    let mut graph = Graph::new();
    for doc in OBJECTS.split("\n---\n") {
        graph.apply(parse(doc));
    }
    graph.apply(parse(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {name: openai-key}\nspec:\n  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]\n  type: AzureAPIKey\n  azureAPIKey: {secretRef: {name: openai-key}}\n",
    ));
    let config = RuntimeConfig::from_graph(&graph);
    let Auth::Inject(azure) = config.backends["aisb/default/openai"].auth.clone() else {
        panic!("the Azure key is injected")
    };
    assert!(matches!(azure, Credential::Azure(_)));
    assert_eq!(azure.headers(false), Ok(vec![("api-key", "sk-openai-test".to_string())]));

    // Without its Secret the backend is refused, naming the policy and the Secret.
    graph.delete(&aixds::api::ObjectKey::new(aixds::api::Kind::Secret, "default", "openai-key"));
    let config = RuntimeConfig::from_graph(&graph);
    let Auth::Refuse(why) = &config.backends["aisb/default/openai"].auth else {
        panic!("a keyed backend without its Secret is refused")
    };
    assert!(why.contains("BackendSecurityPolicy default/openai-key"), "{why}");
    assert!(why.contains("Secret default/openai-key not found"), "{why}");

    // A backend that is not accepted is not served.
    graph.apply(parse(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: openai}\nspec:\n  schema: {name: Cohere, version: v1}\n  backendRef: {name: openai, group: gateway.envoyproxy.io, kind: Backend}\n",
    ));
    let config = RuntimeConfig::from_graph(&graph);
    assert!(!config.backends.contains_key("aisb/default/openai"));
    assert!(config.backends.contains_key("aisb/default/anthropic"));
}

#[tokio::test]
async fn a_retry_uses_what_the_first_attempt_kept_in_metadata() {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    let mut client = client().await;
    let request = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});

    let mut first = Stream::upstream(&mut client, "aisb/default/anthropic").await;
    first.send(routed("/v1/chat/completions", "default/r/0/0", &[])).await;
    let out = first.send_full(body(request.to_string().as_bytes())).await;
    let kept = out.dynamic_metadata.expect("kept for a retry").fields["aixds.request"].clone();
    let Some(value::Kind::StructValue(kept)) = kept.kind else { panic!("{kept:?}") };

    // The retry: the same header map, as the first attempt left it, and the metadata.
    let mut retry = Stream::upstream(&mut client, "aisb/default/anthropic").await;
    let left = headers(
        &[(":method", "POST"), (":path", "/v1/messages"), ("x-api-key", "sk-ant-test")],
        false,
    );
    let message = ProcessingRequest {
        request: Some(In::RequestHeaders(left)),
        metadata_context: Some(Metadata {
            filter_metadata: [("aixds.request".to_string(), kept)].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    retry.tx.send(message).await.unwrap();
    retry.rx.message().await.unwrap().unwrap();
    let out = retry.send(body(request.to_string().as_bytes())).await;
    let sent: Value = serde_json::from_slice(&new_body(&out)).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5", "the backendRef's override still applies");
    assert!(sent["max_tokens"].is_u64(), "translated from chat again: {sent}");
    assert_eq!(mutation(&out).0[":path"], "/v1/messages");
}
