//! Translation through a real Envoy: clients of one schema reach backends of the other, with
//! the backend's credential and nothing internal on the wire, as the upstreams record it.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use crate::envoy::{Gateway, start_gateway};
use crate::harness::*;

/// A Gateway on `port`; model `claude` served by an Anthropic-schema backend at `anthropic`,
/// model `gpt` by an OpenAI-schema backend at `openai`, each with its API key.
fn manifests(port: u16, anthropic: SocketAddr, openai: SocketAddr) -> String {
    let backend = |name: &str, schema: &str, addr: SocketAddr, policy: &str, key: &str| {
        let section = match policy {
            "AnthropicAPIKey" => "anthropicAPIKey",
            _ => "apiKey",
        };
        format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\n\
             spec: {{schema: {{name: {schema}}}, backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
             ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\n\
             spec: {{endpoints: [{{ip: {{address: \"{}\", port: {}}}}}]}}\n\
             ---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
             spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}], \
             type: {policy}, {section}: {{secretRef: {{name: {name}-key}}}}}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key}}\nstringData: {{apiKey: {key}}}\n",
            addr.ip(),
            addr.port()
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: aixds, listeners: [{{name: http, protocol: HTTP, port: {port}}}]}}\n\
         ---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude}}]}}]\n    backendRefs: [{{name: anth}}]\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt}}]}}]\n    backendRefs: [{{name: oai}}]\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: claude-fail-429}}]}}]\n    backendRefs: [{{name: anth}}]\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gpt-fail-503}}]}}]\n    backendRefs: [{{name: oai}}]\n  llmRequestCosts: [{{metadataKey: in, type: InputToken}}, {{metadataKey: out, type: OutputToken}}]\n{}{}",
        backend("anth", "Anthropic", anthropic, "AnthropicAPIKey", "sk-ant-e2e"),
        backend("oai", "OpenAI", openai, "APIKey", "sk-openai-e2e"),
    )
}

struct Setup {
    gw: Gateway,
    anthropic_record: std::path::PathBuf,
    openai_record: std::path::PathBuf,
    _upstreams: (Upstream, Upstream),
    _dir: tempfile::TempDir,
}

async fn setup(node: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let anthropic_record = dir.path().join("anthropic.jsonl");
    let openai_record = dir.path().join("openai.jsonl");
    let anthropic = Upstream::start_recording("A", &anthropic_record).await;
    let openai = Upstream::start_recording("O", &openai_record).await;
    let port = free_port();
    let manifests_dir = dir.path().join("manifests");
    std::fs::create_dir(&manifests_dir).unwrap();
    write_atomic(manifests_dir.join("gateway.yaml"), manifests(port, anthropic.addr, openai.addr));
    let gw = start_gateway(&manifests_dir, port, false, node).await;
    eventually(30, "the gateway serves /v1/models", || async {
        let r = request(port, "GET", "/v1/models", &[], "").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    Setup { gw, anthropic_record, openai_record, _upstreams: (anthropic, openai), _dir: dir }
}

fn last(record: &Path) -> Value {
    recorded(record).pop().expect("the upstream received a request")
}

/// No internal header and no client credential reached the upstream.
fn assert_clean(sent: &Value) {
    let headers = sent["headers"].as_object().unwrap();
    for name in headers.keys() {
        assert!(!name.starts_with("x-aixds-"), "internal header {name} leaked: {sent}");
    }
    assert!(!headers.values().any(|v| v.as_str().unwrap_or_default().contains("client-key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_reaches_an_anthropic_backend() {
    let s = setup("translate-o2a").await;
    let body = json!({"model": "claude", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "say hi"}]});
    let auth = [("authorization", "Bearer client-key")];
    let r =
        request(s.gw.port, "POST", "/v1/chat/completions", &auth, &body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let completion = r.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "Hello from A");
    assert_eq!(completion["usage"]["prompt_tokens"], 4, "Be brief. + say hi");
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));

    let sent = last(&s.anthropic_record);
    assert_eq!(sent["path"], "/v1/messages");
    assert_eq!(sent["headers"]["x-api-key"], "sk-ant-e2e");
    assert_eq!(sent["headers"]["anthropic-version"], "2023-06-01");
    assert!(sent["headers"].get("authorization").is_none(), "{sent}");
    assert_eq!(sent["body"]["model"], "claude");
    assert_eq!(sent["body"]["system"], "Be brief.");
    assert!(sent["body"]["max_tokens"].is_u64());
    assert_clean(&sent);
    let length = serde_json::to_vec(&sent["body"]).unwrap().len().to_string();
    assert_eq!(sent["headers"]["content-length"], length, "framed by length, not chunked");
    assert!(recorded(&s.openai_record).is_empty());

    // Streaming: Anthropic events become OpenAI chunks.
    let body =
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r =
        request(s.gw.port, "POST", "/v1/chat/completions", &auth, &body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("text/event-stream"));
    let content: String = r
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, "Hello from A");
    assert!(r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
    assert_eq!(last(&s.anthropic_record)["body"]["stream"], true);
    assert_eq!(rejected_updates(s.gw.admin).await, 0);
    s.gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_reaches_an_openai_backend() {
    let s = setup("translate-a2o").await;
    let body = json!({"model": "gpt", "max_tokens": 100, "messages": [{"role": "user", "content": "say hi"}]});
    let headers = [("x-api-key", "client-key"), ("anthropic-version", "2023-06-01")];
    let r = request(s.gw.port, "POST", "/anthropic/v1/messages", &headers, &body.to_string())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let message = r.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "Hello from O");
    assert_eq!(message["usage"]["input_tokens"], 2);

    let sent = last(&s.openai_record);
    assert_eq!(sent["path"], "/v1/chat/completions");
    assert_eq!(sent["headers"]["authorization"], "Bearer sk-openai-e2e");
    assert!(sent["headers"].get("x-api-key").is_none(), "{sent}");
    assert_eq!(sent["body"]["model"], "gpt");
    assert_eq!(sent["body"]["messages"], json!([{"role": "user", "content": "say hi"}]));
    assert_clean(&sent);
    assert!(recorded(&s.anthropic_record).is_empty());
    s.gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_models_and_bad_requests_itself() {
    let s = setup("translate-errors").await;
    let r = request(s.gw.port, "GET", "/v1/models", &[], "").await.unwrap();
    let ids: Vec<Value> =
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect();
    assert_eq!(
        ids,
        [json!("claude"), json!("claude-fail-429"), json!("gpt"), json!("gpt-fail-503")]
    );

    let r = request(s.gw.port, "POST", "/v1/chat/completions", &[], "{oops").await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = request(s.gw.port, "POST", "/v1/messages", &[], r#"{"messages": []}"#).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error", "Anthropic's format: {}", r.body);

    let r = request(s.gw.port, "POST", "/v2/whatever", &[], "{}").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());

    // A model no route serves: the route table's own 404.
    let body = json!({"model": "nope", "messages": []});
    let r =
        request(s.gw.port, "POST", "/v1/chat/completions", &[], &body.to_string()).await.unwrap();
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));
    let body = json!({"model": "nope", "max_tokens": 5, "messages": []});
    let r =
        request(s.gw.port, "POST", "/v1/messages?beta=true", &[], &body.to_string()).await.unwrap();
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (404, Some("not_found_error")));
    assert!(recorded(&s.anthropic_record).is_empty() && recorded(&s.openai_record).is_empty());
    s.gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_both_phases() {
    let s = setup("translate-large").await;
    // Past Envoy's default 1 MiB buffers, which both phases would otherwise hit.
    let prompt = "word ".repeat(1_000_000);
    let body = json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]});
    let r = request(s.gw.port, "POST", "/v1/messages", &[], &body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["input_tokens"], 1_000_000);
    s.gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_come_back_in_the_clients_format() {
    let s = setup("translate-upstream-errors").await;
    let body = json!({"model": "claude-fail-429", "messages": [{"role": "user", "content": "hi"}]});
    let r =
        request(s.gw.port, "POST", "/v1/chat/completions", &[], &body.to_string()).await.unwrap();
    assert_eq!(r.status, 429);
    let error = r.json();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("simulated failure 429"),
        "{error}"
    );
    assert_eq!(error["error"]["type"], "rate_limit_error", "OpenAI's shape: {error}");
    assert_eq!(last(&s.anthropic_record)["path"], "/v1/messages");

    let body = json!({"model": "gpt-fail-503", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = request(s.gw.port, "POST", "/v1/messages", &[], &body.to_string()).await.unwrap();
    assert_eq!(r.status, 503);
    let error = r.json();
    assert_eq!(error["type"], "error", "Anthropic's shape: {error}");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("simulated failure 503"));
    s.gw.running.shutdown().await;
}
