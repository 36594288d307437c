//! Cloud credentials end to end through a real Envoy: a GCP service account's tokens from a fake
//! Google token endpoint that verifies each JWT grant with the account's public key, an Entra
//! ID application's tokens from a fake Entra endpoint that checks the client-credentials form,
//! both refreshed before they expire; a request before the first token is refused; nothing
//! secret shows on aixds's debug pages. The key pair is made with `openssl` for each run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aixds::extproc::ExtProcOptions;
use aixds::extproc::credentials::CredentialOptions;
use aixds::extproc::runtime::{Auth, Credential, RuntimeConfig};
use aixds::graph::Graph;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::builders::parse;
use crate::envoy::{manifests, start_gateway_with};
use crate::harness::*;

const CLIENT_EMAIL: &str = "aixds-test@project-1.iam.gserviceaccount.com";
const KEY_ID: &str = "key-0123";
const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "00000000-aaaa-bbbb-cccc-000000000001";
const CLIENT_SECRET: &str = "azure~client.secret-0123";
/// Seconds a fake token lives: short, so that the test sees a refresh.
const LIFETIME: u64 = 2;

/// An RSA key pair made by `openssl`: the private key as PKCS#8 PEM, the public one as the
/// PKCS#1 DER that `ring` verifies with.
fn key_pair(dir: &Path) -> (String, Vec<u8>) {
    let key = dir.join("sa.pem");
    let public = dir.join("sa.pub.der");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).status().expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]
            .into_iter()
            .chain([key.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        public.to_str().unwrap(),
    ]);
    (std::fs::read_to_string(key).unwrap(), std::fs::read(public).unwrap())
}

/// The fake token endpoints: what they issued and what they found wrong.
#[derive(Default)]
struct Fake {
    public_key: Vec<u8>,
    token_uri: String,
    google_issued: AtomicU32,
    azure_issued: AtomicU32,
    /// Until set, the Entra endpoint answers 503 (a token that is not there yet).
    azure_up: AtomicBool,
    problems: Mutex<Vec<String>>,
}

type Reply = (StatusCode, Json<Value>);

fn refuse(fake: &Fake, problem: String) -> Reply {
    fake.problems.lock().unwrap().push(problem.clone());
    let body = json!({"error": "invalid_grant", "error_description": problem});
    (StatusCode::BAD_REQUEST, Json(body))
}

fn form(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Google's side of the JWT bearer grant: the signature checked with the account's public key,
/// then the claims.
fn check_grant(fake: &Fake, body: &str) -> Result<(), String> {
    let form = form(body);
    let grant = form.get("grant_type").map(String::as_str);
    if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(format!("grant_type {grant:?}"));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else { return Err("not a JWT".into()) };
    let signature = base64url_decode(signature).ok_or("signature is not base64url")?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &fake.public_key,
    );
    key.verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the account's public key")?;
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = base64url_decode(part).ok_or("part is not base64url")?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}) {
        return Err(format!("header {header}"));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    let checks = [
        (claims["iss"] == CLIENT_EMAIL, "iss"),
        (claims["aud"] == fake.token_uri.as_str(), "aud"),
        (claims["scope"] == "https://www.googleapis.com/auth/cloud-platform", "scope"),
        ((now - 60..=now + 5).contains(&iat), "iat"),
        (exp > iat && exp - iat <= 3600, "exp"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, claim)) => Err(format!("claim {claim} is wrong in {claims}")),
        None => Ok(()),
    }
}

async fn google(State(fake): State<Arc<Fake>>, body: String) -> Reply {
    if let Err(problem) = check_grant(&fake, &body) {
        return refuse(&fake, problem);
    }
    let n = fake.google_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = json!({"access_token": format!("gcp-token-{n}"), "expires_in": LIFETIME,
                       "token_type": "Bearer"});
    (StatusCode::OK, Json(token))
}

async fn entra(
    State(fake): State<Arc<Fake>>,
    UrlPath(tenant): UrlPath<String>,
    body: String,
) -> Reply {
    if !fake.azure_up.load(Ordering::SeqCst) {
        let body = json!({"error": "temporarily_unavailable"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    let form = form(&body);
    let want = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("scope", "https://cognitiveservices.azure.com/.default"),
    ];
    let got: BTreeMap<String, String> = want
        .iter()
        .map(|(k, _)| (k.to_string(), form.get(*k).cloned().unwrap_or_default()))
        .collect();
    let want: BTreeMap<String, String> =
        want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if tenant != TENANT || got != want || form.len() != 4 {
        return refuse(&fake, format!("tenant {tenant}, form {:?}", form.keys()));
    }
    let n = fake.azure_issued.fetch_add(1, Ordering::SeqCst) + 1;
    // Entra ID sends expires_in as a number; older endpoints sent a string.
    let token = json!({"access_token": format!("azure-token-{n}"), "expires_in": LIFETIME.to_string(),
                       "token_type": "Bearer"});
    (StatusCode::OK, Json(token))
}

/// The fake endpoints on a free loopback port: `/token` (Google) and
/// `/{tenant}/oauth2/v2.0/token` (Entra ID).
async fn start_fake(public_key: Vec<u8>) -> (Arc<Fake>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake =
        Arc::new(Fake { public_key, token_uri: format!("{base}/token"), ..Default::default() });
    let app = axum::Router::new()
        .route("/token", axum::routing::post(google))
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(entra))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, base)
}

fn service_account(private_key: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "project-1",
        "private_key_id": KEY_ID,
        "private_key": private_key,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    })
    .to_string()
}

/// The policies and Secrets for backends `gcp` and `azure`.
fn policies(key_file: &str) -> String {
    // A YAML double-quoted scalar reads JSON string escapes.
    let key_file = serde_json::to_string(key_file).unwrap();
    format!(
        r#"---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: gcp}}]
  type: GCPCredentials
  gcpCredentials: {{projectName: project-1, region: us-east5, credentialsFile: {{secretRef: {{name: gcp-sa}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gcp-sa}}
stringData: {{service_account.json: {key_file}}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}]
  type: AzureCredentials
  azureCredentials: {{clientID: "{CLIENT_ID}", tenantID: {TENANT}, clientSecretRef: {{name: azure-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-secret}}
stringData: {{client-secret: "{CLIENT_SECRET}"}}
"#
    )
}

/// The `authorization` headers an upstream received, in order.
fn authorizations(record: &Path) -> Vec<String> {
    recorded(record)
        .iter()
        .filter_map(|r| r["headers"]["authorization"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn gcp_and_azure_tokens_reach_the_backends_and_are_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let (private_key, public_key) = key_pair(dir.path());
    let (fake, base) = start_fake(public_key).await;
    let (gcp_record, azure_record) = (dir.path().join("gcp.jsonl"), dir.path().join("azure.jsonl"));
    let gcp = Upstream::start_recording("gcp", &gcp_record).await;
    let azure = Upstream::start_recording("azure", &azure_record).await;
    let port = free_port();
    let mut text = manifests(
        port,
        &[("gemini", vec![("gcp", gcp.addr, 1)]), ("gpt", vec![("azure", azure.addr, 1)])],
    );
    text.push_str(&policies(&service_account(&private_key, &fake.token_uri)));
    let manifests_dir = dir.path().join("manifests");
    std::fs::create_dir(&manifests_dir).unwrap();
    std::fs::write(manifests_dir.join("gateway.yaml"), &text).unwrap();
    let extproc = ExtProcOptions {
        credentials: CredentialOptions { azure_authority_host: base.clone() },
        ..Default::default()
    };
    let gw = start_gateway_with(&manifests_dir, port, false, "credentials", extproc).await;

    // Entra ID is not answering yet: the Azure backend is refused, in the client's format and
    // with when to retry, and nothing reaches it.
    let refused = eventually(30, "the azure route is served", || async {
        chat(port, "gpt").await.ok().filter(|r| r.status != 404)
    })
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.headers.get("retry-after").map(String::as_str), Some("1"));
    let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("BackendSecurityPolicy default/azure"), "{message}");
    assert!(message.contains("AzureCredentials access token"), "{message}");
    assert!(recorded(&azure_record).is_empty());

    // The GCP token is there: the backend gets it, and a newer one after a refresh.
    let first = eventually(30, "gemini is answered", || async {
        chat(port, "gemini").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert!(first.json()["choices"][0]["message"]["content"].as_str().unwrap().contains("gcp"));
    let sent = authorizations(&gcp_record);
    assert!(sent[0].starts_with("Bearer gcp-token-"), "{sent:?}");
    eventually(30, "a refreshed GCP token is sent", || async {
        chat(port, "gemini").await.ok()?;
        let sent = authorizations(&gcp_record);
        (sent.last() != sent.first()).then_some(())
    })
    .await;
    for token in authorizations(&gcp_record) {
        let n: u32 = token.strip_prefix("Bearer gcp-token-").unwrap().parse().unwrap();
        assert!(n >= 1 && n <= fake.google_issued.load(Ordering::SeqCst), "{token}");
    }

    // Entra ID answers: the Azure backend is served, with its token, refreshed in turn.
    fake.azure_up.store(true, Ordering::SeqCst);
    eventually(60, "an Azure token is sent, then a refreshed one", || async {
        chat(port, "gpt").await.ok().filter(|r| r.status == 200)?;
        let sent = authorizations(&azure_record);
        (sent.len() >= 2 && sent.first() != sent.last()).then_some(())
    })
    .await;
    assert!(authorizations(&azure_record).iter().all(|a| a.starts_with("Bearer azure-token-")));
    assert_eq!(*fake.problems.lock().unwrap(), Vec::<String>::new(), "every grant was valid");

    // Nothing secret on the debug pages; the fetches are counted.
    let admin = gw.running.admin_addr.unwrap().port();
    let graph = request(admin, "GET", "/debug/graph", &[], "").await.unwrap().body;
    assert!(graph.contains("BackendSecurityPolicy"), "{graph}");
    let metrics = request(admin, "GET", "/metrics", &[], "").await.unwrap().body;
    for page in [&graph, &metrics] {
        for secret in [CLIENT_SECRET, "PRIVATE KEY", "gcp-token-", "azure-token-"] {
            assert!(!page.contains(secret), "{secret} shows");
        }
    }
    let fetches = |labels: &str| -> u64 {
        let line = format!("aixds_credential_token_fetches_total{{{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(line.as_str())?.parse().ok()).unwrap_or(0)
    };
    assert!(fetches(r#"type="GCPCredentials",result="ok""#) >= 2, "{metrics}");
    assert!(fetches(r#"type="AzureCredentials",result="error""#) >= 1, "{metrics}");
}

/// A policy's token source outlives rebuilds that leave the policy and its Secret alone, and
/// only those.
#[tokio::test]
async fn token_sources_carry_over_rebuilds_until_their_policy_or_secret_changes() {
    let mut graph = Graph::new();
    let backend = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n\
                   metadata: {name: azure}\nspec: {schema: {name: OpenAI}, backendRef: {name: azure, \
                   group: gateway.envoyproxy.io, kind: Backend}}";
    let target = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: azure}\n\
                  spec: {endpoints: [{ip: {address: 127.0.0.1, port: 9}}]}";
    let azure = policies("{}");
    let azure = azure.split("\n---\n").filter(|doc| doc.contains("name: azure"));
    for doc in [backend, target].into_iter().chain(azure) {
        graph.apply(parse(doc));
    }
    // An endpoint nobody listens on: the source keeps trying, which is all this test needs.
    let options = CredentialOptions { azure_authority_host: "http://127.0.0.1:9".into() };
    let shared = RuntimeConfig::shared_with(options);
    let source = |shared: &aixds::extproc::SharedRuntime| {
        match &shared.load().backends["aisb/default/azure"].auth {
            Auth::Inject(c @ Credential::Token(_)) => c.clone(),
            other => panic!("{other:?}"),
        }
    };
    RuntimeConfig::publish(&shared, &graph);
    let first = source(&shared);
    let why = first.unavailable().expect("no token from a closed port");
    assert!(why.contains("BackendSecurityPolicy default/azure"), "{why}");
    assert!(!why.contains(CLIENT_SECRET), "{why}");

    graph.apply(parse(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: unrelated}\nstringData: {a: b}",
    ));
    RuntimeConfig::publish(&shared, &graph);
    assert_eq!(source(&shared), first, "an unrelated change keeps the source");

    graph.apply(parse(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: azure-secret}\nstringData: {client-secret: rotated}",
    ));
    RuntimeConfig::publish(&shared, &graph);
    assert_ne!(source(&shared), first, "a rotated secret starts a new source");

    let debug = format!("{:?}", shared.load());
    assert!(!debug.contains("rotated") && !debug.contains(CLIENT_SECRET), "{debug}");
}

/// A service account Secret is judged once, when applied, for every policy and backend that
/// uses it; replacing it with a good one resolves them.
#[test]
fn a_bad_service_account_key_is_named_on_the_policy_and_its_backend() {
    use aixds::api::{Kind, ObjectKey};
    use aixds::graph::ConditionType;
    let dir = tempfile::tempdir().unwrap();
    let (private_key, _) = key_pair(dir.path());
    let resolved = |graph: &Graph, kind, name| {
        let node = graph.node(&ObjectKey::new(kind, "default", name)).unwrap();
        let c = node.conditions().iter().find(|c| c.type_ == ConditionType::ResolvedRefs).unwrap();
        (c.status, c.message.clone())
    };
    let mut graph = Graph::new();
    let backend = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n\
                   metadata: {name: gcp}\nspec: {schema: {name: OpenAI}, backendRef: {name: gcp, \
                   group: gateway.envoyproxy.io, kind: Backend}}";
    let target = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: gcp}\n\
                  spec: {endpoints: [{ip: {address: 127.0.0.1, port: 9}}]}";
    let broken = service_account(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        "https://oauth2.googleapis.com/token",
    );
    let docs = policies(&broken);
    let gcp = docs.split("\n---\n").filter(|doc| doc.contains("gcp"));
    for doc in [backend, target].into_iter().chain(gcp) {
        graph.apply(parse(doc.trim_start_matches("---\n")));
    }
    let (ok, message) = resolved(&graph, Kind::BackendSecurityPolicy, "gcp");
    assert!(!ok);
    assert!(
        message.contains(
            "\"service_account.json\" has a \"private_key\" that is not a usable RSA key"
        ),
        "{message}"
    );
    assert!(!message.contains("c2VjcmV0"), "{message}");
    let (ok, message) = resolved(&graph, Kind::AIServiceBackend, "gcp");
    assert!(!ok && message.contains("BackendSecurityPolicy default/gcp"), "{message}");

    let good = policies(&service_account(&private_key, "https://oauth2.googleapis.com/token"));
    let secret =
        good.split("\n---\n").find(|doc| doc.contains("kind: Secret\nmetadata: {name: gcp-sa}"));
    let secret = secret.unwrap();
    graph.apply(parse(secret));
    assert_eq!(resolved(&graph, Kind::BackendSecurityPolicy, "gcp"), (true, String::new()));
    assert!(resolved(&graph, Kind::AIServiceBackend, "gcp").0);
}
