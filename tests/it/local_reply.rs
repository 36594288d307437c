//! The replies Envoy makes itself, as clients see them through a real Envoy: a backend that
//! refuses connections, one that never answers, one that resets, one that speaks garbage, and
//! aixds itself gone. Each is JSON in the client's error shape (OpenAI's, Anthropic's, Cohere's;
//! also where the upstream phase rewrote the path for a backend of another schema), a 503 with
//! `retry-after`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::envoy::manifests;
use crate::harness::*;

/// What a misbehaving backend does with each connection.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Reads the request and never answers.
    Silent,
    /// Reads the request and resets the connection.
    Reset,
    /// Reads the request and answers with something that is not HTTP.
    Garbage,
}

/// A backend on 127.0.0.1 that misbehaves; it stops with the test's runtime.
async fn misbehaving(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                match how {
                    Misbehaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Misbehaviour::Reset => {
                        let _ = stream.set_zero_linger();
                    }
                    Misbehaviour::Garbage => {
                        let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
                    }
                }
            });
        }
    });
    addr
}

/// A chat request for `model` as an OpenAI client sends it, and as an Anthropic one does.
async fn both_clients(port: u16, model: &str) -> [Response; 2] {
    let openai = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let anthropic =
        json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    [
        request(port, "POST", "/v1/chat/completions", &[], &openai.to_string()).await.unwrap(),
        request(port, "POST", "/anthropic/v1/messages?beta=true", &[], &anthropic.to_string())
            .await
            .unwrap(),
    ]
}

/// `r` is `status` with the OpenAI error of type `kind`, its message Envoy's own words.
fn assert_openai(r: &Response, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(v["error"]["param"], Value::Null, "{v}");
    assert!(v["error"].as_object().unwrap().contains_key("code"), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() > 5), "{v}");
}

/// `r` is `status` with Cohere's error, `{"message"}`, its message Envoy's or aixds's words.
fn assert_cohere(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    let v = r.json();
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.len() > 5), "{v}");
}

/// A rerank request for `model`, as Cohere's clients send it.
async fn rerank(port: u16, model: &str) -> Response {
    let body = json!({"model": model, "query": "q", "documents": ["a", "b"]});
    request(port, "POST", "/cohere/v2/rerank", &[], &body.to_string()).await.unwrap()
}

/// `r` is `status` with the Anthropic error of type `kind`.
fn assert_anthropic(r: &Response, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    let v = r.json();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some(kind)));
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() > 5), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_own_replies_are_in_the_clients_format() {
    let ok = Upstream::start("A").await;
    let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let silent = misbehaving(Misbehaviour::Silent).await;
    let reset = misbehaving(Misbehaviour::Reset).await;
    let garbage = misbehaving(Misbehaviour::Garbage).await;
    let port = free_port();
    let text = manifests(
        port,
        &[
            ("ok", vec![("ok", ok.addr, 1)]),
            ("refused", vec![("refused", refused, 1)]),
            ("silent", vec![("silent", silent, 1)]),
            ("claude-silent", vec![("claude-silent", silent, 1)]),
            ("reset", vec![("reset", reset, 1)]),
            ("garbage", vec![("garbage", garbage, 1)]),
            ("rerank-refused", vec![("rerank-refused", refused, 1)]),
            ("rerank-silent", vec![("rerank-silent", silent, 1)]),
        ],
    )
    .replace("silent, weight: 1}]\n", "silent, weight: 1}]\n    timeouts: {request: 1s}\n")
    .replace(
        "metadata: {name: claude-silent}\nspec: {schema: {name: OpenAI}",
        "metadata: {name: claude-silent}\nspec: {schema: {name: Anthropic}",
    )
    .replace(
        "{name: rerank-refused}\nspec: {schema: {name: OpenAI}",
        "{name: rerank-refused}\nspec: {schema: {name: Cohere}",
    )
    .replace(
        "{name: rerank-silent}\nspec: {schema: {name: OpenAI}",
        "{name: rerank-silent}\nspec: {schema: {name: Cohere}",
    );
    assert_eq!(text.matches("timeouts").count(), 3);
    assert!(text.contains("{name: Anthropic}"));
    assert_eq!(text.matches("{name: Cohere}").count(), 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();

    // aixds apart from Envoy, so that it can go away while Envoy stays.
    let xds_port = free_port();
    let mut aixds = aixds_replica(dir.path(), "127.0.0.1", xds_port, &[]);
    let admin = free_port();
    let _envoy = start_envoy(&aixds::bootstrap::BootstrapOptions {
        xds_address: format!("127.0.0.1:{xds_port}"),
        node_id: "local-reply".into(),
        admin_port: admin,
        ..Default::default()
    });
    eventually(30, "ok served by A", || async {
        (served_by(port, "ok").await == Ok("A".into())).then_some(())
    })
    .await;

    let [openai, anthropic] = both_clients(port, "refused").await;
    assert_openai(&openai, 503, "server_error");
    assert_anthropic(&anthropic, 503, "overloaded_error");
    let cohere = rerank(port, "rerank-refused").await;
    assert_cohere(&cohere, 503);
    for r in [&openai, &anthropic, &cohere] {
        assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
    }
    let cohere = rerank(port, "rerank-silent").await;
    assert_cohere(&cohere, 504);
    assert!(cohere.json()["message"].as_str().unwrap().contains("timeout"));
    assert!(!cohere.headers.contains_key("retry-after"));

    let [openai, anthropic] = both_clients(port, "silent").await;
    assert_openai(&openai, 504, "server_error");
    assert_anthropic(&anthropic, 504, "timeout_error");
    assert!(openai.json()["error"]["message"].as_str().unwrap().contains("timeout"));
    // The OpenAI client's request went to the Anthropic backend as `/v1/messages`: the reply is
    // still OpenAI's.
    let [openai, anthropic] = both_clients(port, "claude-silent").await;
    assert_openai(&openai, 504, "server_error");
    assert_anthropic(&anthropic, 504, "timeout_error");

    // A reset before the response: Envoy's 503; an answer that is not HTTP: its 502.
    let [openai, anthropic] = both_clients(port, "reset").await;
    assert_openai(&openai, 503, "server_error");
    assert_anthropic(&anthropic, 503, "overloaded_error");
    assert!(openai.json()["error"]["message"].as_str().unwrap().contains("reset"));
    assert_eq!(anthropic.headers.get("retry-after").map(String::as_str), Some("1"));
    let [openai, anthropic] = both_clients(port, "garbage").await;
    assert_openai(&openai, 502, "server_error");
    assert_anthropic(&anthropic, 502, "api_error");
    assert!(!openai.headers.contains_key("retry-after"));

    // aixds's own replies keep their body: the route table's 404, the router phase's 400.
    let [openai, anthropic] = both_clients(port, "nope").await;
    assert_eq!(openai.json()["error"]["code"], "model_not_found");
    assert_anthropic(&anthropic, 404, "not_found_error");
    let r = request(port, "POST", "/v1/chat/completions", &[], "{oops").await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not valid JSON"));
    let r = rerank(port, "nope").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "No route matches the requested model."}))
    );
    let r = request(port, "POST", "/cohere/v2/rerank", &[], "{oops").await.unwrap();
    assert_cohere(&r, 400);
    // A rerank reaches Cohere backends only: the upstream phase refuses an OpenAI one.
    let r = rerank(port, "ok").await;
    assert_cohere(&r, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("Cohere rerank"), "{}", r.body);

    // No aixds: nothing can translate a request, and the client is told to come back.
    aixds.kill().await.unwrap();
    let [openai, anthropic] = eventually(15, "Envoy notices aixds is gone", || async {
        let replies = both_clients(port, "ok").await;
        (replies[0].status == 503).then_some(replies)
    })
    .await;
    assert_openai(&openai, 503, "server_error");
    assert_anthropic(&anthropic, 503, "overloaded_error");
    for r in [&openai, &anthropic] {
        assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
    }
    // Nothing parsed these requests: their paths say whose API they call.
    let r = request(port, "POST", "/v1/messages/count_tokens", &[], "{}").await.unwrap();
    assert_anthropic(&r, 503, "overloaded_error");
    let r = request(port, "POST", "/v1/responses", &[], "{}").await.unwrap();
    assert_openai(&r, 503, "server_error");
    let r = request(port, "POST", "/cohere/v2/rerank", &[], "{}").await.unwrap();
    assert_cohere(&r, 503);
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
    assert_eq!(rejected_updates(admin).await, 0);
}
