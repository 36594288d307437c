//! One object never changes what another serves, through a real Envoy: a keyed backend without a
//! usable credential is refused in the client's format and its upstream receives nothing; a
//! keyed backend never sees the client's own credentials; a conflicting duplicate keeps serving
//! its first definition; an object with an invalid name is left out. Each test asserts what the
//! neighbours answer as well.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use crate::envoy::{edit, start_gateway};
use crate::harness::*;

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: aixds, listeners: [{{name: http, protocol: HTTP, port: {port}}}]}}\n"
    )
}

/// A route `r` in `default` with one rule per (model, AIServiceBackend name).
fn route(rules: &[(&str, &str)]) -> String {
    let mut out = String::from(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n",
    );
    for (model, backend) in rules {
        out.push_str(&format!(
            "  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n    backendRefs: [{{name: {backend:?}}}]\n"
        ));
    }
    out
}

/// An AIServiceBackend and its Backend, both `name` in `namespace`.
fn backend(namespace: &str, name: &str, schema: &str, addr: SocketAddr) -> String {
    format!(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\n\
         spec: {{schema: {{name: {schema}}}, backendRef: {{name: {name:?}, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\n\
         spec: {{endpoints: [{{ip: {{address: \"{}\", port: {}}}}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

/// A BackendSecurityPolicy `name` of `type` for the AIServiceBackend `name`, reading Secret
/// `{name}-key`.
fn policy(name: &str, policy_type: &str) -> String {
    let section = match policy_type {
        "AnthropicAPIKey" => "anthropicAPIKey",
        "AzureAPIKey" => "azureAPIKey",
        _ => "apiKey",
    };
    format!(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
         spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}], \
         type: {policy_type}, {section}: {{secretRef: {{name: {name}-key}}}}}}\n"
    )
}

fn secret(name: &str, data: &str) -> String {
    format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {data}\n")
}

fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn messages_body(model: &str) -> String {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// The client's own credentials, in every header a provider reads one from.
const CLIENT_CREDENTIALS: [(&str, &str); 3] = [
    ("authorization", "Bearer client-key"),
    ("x-api-key", "client-key"),
    ("api-key", "client-key"),
];

fn last(record: &Path) -> Value {
    recorded(record).pop().expect("the upstream received a request")
}

/// Models `gpt` (OpenAI backend `oai`, APIKey policy), `claude` (Anthropic backend `anth`,
/// AnthropicAPIKey policy) and `free` (OpenAI backend `free`, no policy); the Secrets in their
/// own file, so that a test can delete and restore them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_backend_without_its_credential_is_refused_and_receives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (oai_record, anth_record) = (dir.path().join("oai.jsonl"), dir.path().join("anth.jsonl"));
    let oai = Upstream::start_recording("O", &oai_record).await;
    let anth = Upstream::start_recording("A", &anth_record).await;
    let free = Upstream::start("F").await;
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let port = free_port();
    let objects = [
        gateway(port),
        route(&[("gpt", "oai"), ("claude", "anth"), ("free", "free")]),
        backend("default", "oai", "OpenAI", oai.addr),
        backend("default", "anth", "Anthropic", anth.addr),
        backend("default", "free", "OpenAI", free.addr),
        policy("oai", "APIKey"),
        policy("anth", "AnthropicAPIKey"),
    ];
    std::fs::write(manifests.join("gateway.yaml"), objects.concat()).unwrap();
    let secrets = manifests.join("secrets.yaml");
    let both = secret("oai-key", "{apiKey: sk-oai}") + &secret("anth-key", "{apiKey: sk-ant}");
    std::fs::write(&secrets, &both).unwrap();
    let mut gw = start_gateway(&manifests, port, false, "isolation-keys").await;
    let post = |path: &'static str, headers: Vec<(&'static str, &'static str)>, body: String| async move {
        request(port, "POST", path, &headers, &body).await.ok()
    };
    let openai_client = || CLIENT_CREDENTIALS.to_vec();
    let anthropic_client =
        || [CLIENT_CREDENTIALS.to_vec(), vec![("anthropic-version", "2023-06-01")]].concat();

    eventually(30, "gpt is served", || async {
        (post("/v1/chat/completions", openai_client(), chat_body("gpt")).await?.status == 200)
            .then_some(())
    })
    .await;

    // With its key, each keyed backend gets its own credential and none of the client's.
    let sent = last(&oai_record);
    assert_eq!(sent["headers"]["authorization"], "Bearer sk-oai", "{sent}");
    assert!(sent["headers"].get("x-api-key").is_none(), "{sent}");
    assert!(sent["headers"].get("api-key").is_none(), "{sent}");
    let r = post("/v1/messages", anthropic_client(), messages_body("claude")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = last(&anth_record);
    assert_eq!(sent["headers"]["x-api-key"], "sk-ant", "{sent}");
    assert!(sent["headers"].get("authorization").is_none(), "{sent}");
    assert!(sent["headers"].get("api-key").is_none(), "{sent}");
    // A backend no policy targets gets the request as the client sent it.
    assert_eq!(served_by(port, "free").await, Ok("F".into()));

    // The Secret is deleted while running: gpt is refused in each client's format, naming the
    // policy and the Secret, and its upstream receives nothing.
    let sent_before = recorded(&oai_record).len();
    edit(&mut gw, &secrets, &secret("anth-key", "{apiKey: sk-ant}")).await;
    let refused = eventually(10, "gpt is refused", || async {
        let r = post("/v1/chat/completions", openai_client(), chat_body("gpt")).await?;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(refused.headers.get("content-type").map(String::as_str), Some("application/json"));
    let message = refused.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("BackendSecurityPolicy default/oai"), "{}", refused.body);
    assert!(message.contains("Secret default/oai-key not found"), "{}", refused.body);
    let r = post("/v1/messages", anthropic_client(), messages_body("gpt")).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    let error = r.json();
    assert_eq!(error["type"], "error", "in Anthropic's format: {error}");
    assert!(error["error"]["message"].as_str().unwrap_or_default().contains("oai-key"), "{error}");
    let streamed =
        json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post("/v1/chat/completions", openai_client(), streamed.to_string()).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(recorded(&oai_record).len(), sent_before, "nothing reached the keyed upstream");
    // The neighbours serve as before.
    let r = post("/v1/messages", anthropic_client(), messages_body("claude")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served_by(port, "free").await, Ok("F".into()));

    // A Secret without the key is refused as well, saying what is missing.
    let keyless = secret("oai-key", "{token: sk-oai}") + &secret("anth-key", "{apiKey: sk-ant}");
    edit(&mut gw, &secrets, &keyless).await;
    let refused = eventually(10, "gpt is refused for the missing key", || async {
        let r = post("/v1/chat/completions", openai_client(), chat_body("gpt")).await?;
        (r.status == 503 && r.body.contains("has no")).then_some(r)
    })
    .await;
    assert!(
        refused.body.contains(r#"Secret default/oai-key has no \"apiKey\" key"#),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("sk-oai"), "{}", refused.body);
    assert_eq!(recorded(&oai_record).len(), sent_before, "nothing reached the keyed upstream");

    // Restored, it serves again with its key.
    edit(&mut gw, &secrets, &both).await;
    eventually(10, "gpt is served again", || async {
        (post("/v1/chat/completions", openai_client(), chat_body("gpt")).await?.status == 200)
            .then_some(())
    })
    .await;
    assert_eq!(last(&oai_record)["headers"]["authorization"], "Bearer sk-oai");
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// A second file defines backend `a` differently: `a` keeps serving its first definition, and
/// the other models are unaffected, whether the duplicate is there at start or added live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_duplicate_keeps_serving_its_first_definition() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let objects = [
        gateway(port),
        route(&[("model-a", "a"), ("model-b", "b")]),
        backend("default", "a", "OpenAI", a.addr),
        backend("default", "b", "OpenAI", b.addr),
    ];
    std::fs::write(dir.path().join("gateway.yaml"), objects.concat()).unwrap();
    // Same AIServiceBackend, another schema and Backend: a conflict. Files are read in path
    // order, so `gateway.yaml` is the first definition.
    let duplicate = backend("default", "a", "Anthropic", b.addr);
    let duplicate = duplicate.split("---\n").nth(1).unwrap();
    let dup_file = dir.path().join("zz-duplicate.yaml");
    std::fs::write(&dup_file, format!("---\n{duplicate}")).unwrap();
    let mut gw = start_gateway(dir.path(), port, false, "isolation-conflict").await;
    eventually(30, "model-b is served", || async { served_by(port, "model-b").await.ok() }).await;
    assert_eq!(served_by(port, "model-a").await, Ok("A".into()), "the first definition serves");

    // Removed and added again while running: the same.
    edit(&mut gw, &dup_file, "").await;
    assert_eq!(served_by(port, "model-a").await, Ok("A".into()));
    edit(&mut gw, &dup_file, &format!("---\n{duplicate}")).await;
    assert_eq!(served_by(port, "model-a").await, Ok("A".into()));
    assert_eq!(served_by(port, "model-b").await, Ok("B".into()));
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// Objects whose names the API server would refuse are left out: they never reach Envoy or
/// another object's names (here `default` + `x/y` against `default/x` + `y`, which once shared a
/// cluster, so that one model went to the other namespace's backend with its key), and the
/// valid neighbours serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_with_invalid_names_are_left_out_and_neighbours_serve() {
    let dir = tempfile::tempdir().unwrap();
    let other_record = dir.path().join("other.jsonl");
    let other = Upstream::start_recording("OTHER", &other_record).await;
    let good = Upstream::start("GOOD").await;
    let port = free_port();
    let objects = [
        gateway(port),
        route(&[("slash", "x/y"), ("unicode", "модель"), ("good", "good")]),
        backend("default", "x/y", "OpenAI", other.addr),
        backend("default/x", "y", "OpenAI", other.addr),
        backend("default", "модель", "OpenAI", other.addr),
        backend("default", "good", "OpenAI", good.addr),
    ];
    std::fs::write(dir.path().join("gateway.yaml"), objects.concat()).unwrap();
    let gw = start_gateway(dir.path(), port, false, "isolation-names").await;
    eventually(30, "good is served", || async { served_by(port, "good").await.ok() }).await;
    assert_eq!(served_by(port, "good").await, Ok("GOOD".into()));
    for model in ["slash", "unicode"] {
        let r = chat(port, model).await.unwrap();
        assert_eq!(r.status, 404, "{model}: the rule's backend was left out: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "model_not_found");
    }
    assert!(recorded(&other_record).is_empty(), "no request reached an invalid object's backend");
    let dump = admin_get(gw.admin, "/config_dump").await;
    assert!(dump.contains("aisb/default/good"));
    assert!(!dump.contains("aisb/default/x"), "no cluster for either invalid name");
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// A backend refused for its credential takes no traffic while the rule has another: the next
/// priority serves, a weighted split goes to the other backend, and the refused upstream
/// receives nothing. With its Secret back it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_routes_around_a_refused_backend() {
    let dir = tempfile::tempdir().unwrap();
    let keyed_record = dir.path().join("keyed.jsonl");
    let keyed = Upstream::start_recording("K", &keyed_record).await;
    let spare = Upstream::start("S").await;
    let port = free_port();
    let rules = "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
        spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
        \x20 - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: fallback}]}]\n\
        \x20   backendRefs: [{name: keyed, priority: 0}, {name: spare, priority: 1}]\n\
        \x20 - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: split}]}]\n\
        \x20   backendRefs: [{name: keyed, weight: 1}, {name: spare, weight: 1}]\n";
    let objects = [
        gateway(port),
        rules.to_string(),
        backend("default", "keyed", "OpenAI", keyed.addr),
        backend("default", "spare", "OpenAI", spare.addr),
        policy("keyed", "APIKey"),
    ];
    std::fs::write(dir.path().join("gateway.yaml"), objects.concat()).unwrap();
    let mut gw = start_gateway(dir.path(), port, false, "isolation-fallback").await;
    let served =
        eventually(30, "fallback is served", || async { served_by(port, "fallback").await.ok() })
            .await;
    assert_eq!(served, "S", "the next priority serves");
    for _ in 0..6 {
        assert_eq!(served_by(port, "split").await, Ok("S".into()), "the split skips the refused");
    }
    assert!(recorded(&keyed_record).is_empty(), "nothing reached the refused backend");

    let secret_file = dir.path().join("secret.yaml");
    edit(&mut gw, &secret_file, &secret("keyed-key", "{apiKey: sk-keyed}")).await;
    eventually(10, "fallback is served by its first priority", || async {
        (served_by(port, "fallback").await == Ok("K".into())).then_some(())
    })
    .await;
    assert_eq!(last(&keyed_record)["headers"]["authorization"], "Bearer sk-keyed");
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}
