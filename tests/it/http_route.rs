//! Gateway API HTTPRoutes through a real Envoy, from manifest files: matching and its precedence
//! across routes, the standard filters, timeouts, backendRefs that do not resolve (500, with
//! the reason in the route's conditions), ReferenceGrants, and HTTPRoutes sharing a listener
//! with AIGatewayRoutes. The backends are [`Echo`] servers behind Services whose cluster IP is
//! the loopback address they listen on; the checks mirror Gateway API's conformance tests of the
//! same areas (HTTPRouteMatching, HTTPRoutePathMatchOrder, HTTPRouteRequestHeaderModifier, ...).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::envoy::{Gateway, edit, start_gateway};
use crate::gie::echo::{Echo, Mode};
use crate::harness::*;
use crate::kubernetes::conditions;

/// Echo servers named `infra-backend-v1`, `-v2`, `-v3`, and the Services in front of them.
async fn backends() -> (Vec<Echo>, String) {
    let mut echos = Vec::new();
    let mut yaml = String::new();
    for v in 1..=3 {
        let name = format!("infra-backend-v{v}");
        let echo = Echo::start("127.0.0.1:0".parse().unwrap(), &name, "default", Mode::Http1).await;
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec: {{clusterIP: 127.0.0.1, ports: [{{port: {}}}]}}\n",
            echo.addr().port()
        ));
        echos.push(echo);
    }
    (echos, yaml)
}

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: aixds, listeners: [{{name: http, protocol: HTTP, port: {port}}}]}}\n"
    )
}

/// `{vN}` (or `{vN, more: fields}`) in a route's YAML, as a backendRef to echo N's Service.
fn expand(yaml: &str, echos: &[Echo]) -> String {
    let mut out = yaml.to_string();
    for (i, echo) in echos.iter().enumerate() {
        let v = i + 1;
        out = out.replace(
            &format!("{{v{v}"),
            &format!("{{name: infra-backend-v{v}, port: {}", echo.addr().port()),
        );
    }
    out
}

async fn start(dir: &Path, yaml: &str) -> Gateway {
    let port = free_port();
    write_atomic(dir.join("gateway.yaml"), format!("{}---\n{yaml}", gateway(port)));
    start_gateway(dir, port, false, "http-route").await
}

/// The route's `ResolvedRefs` (status, reason); it must be accepted.
fn reason(running: &aixds::run::Running, name: &str) -> (bool, String) {
    let all = conditions(running, &format!("HTTPRoute/default/{name}")).unwrap();
    let resolved = all.iter().find(|c| c.0 == "ResolvedRefs").unwrap().clone();
    let accepted = all.iter().find(|c| c.0 == "Accepted").unwrap();
    assert!(accepted.1, "{name} is accepted: {all:?}");
    (resolved.1, resolved.2)
}

/// The pod that answered `method path` (with `headers`), or the status when it was not 200.
async fn served(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, u16> {
    let response = request(port, method, path, headers, "").await.map_err(|_| 0u16)?;
    if response.status != 200 {
        return Err(response.status);
    }
    Ok(response.json()["pod"].as_str().unwrap_or_default().to_string())
}

/// Waits until `path` is served by `want` (or answers the status `want` names, `"404"`).
async fn expect(port: u16, method: &str, path: &str, headers: &[(&str, &str)], want: &str) {
    let what = format!("{method} {path} {headers:?} → {want}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = served(port, method, path, headers).await;
        let text = match &got {
            Ok(pod) => pod.clone(),
            Err(status) => status.to_string(),
        };
        if text == want || text == format!("infra-backend-{want}") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: got {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_follow_gateway_api_precedence_across_routes() {
    let (echos, services) = backends().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = expand(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
         \x20 - matches: [{path: {type: Exact, value: /one}}]\n    backendRefs: [{v1}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /v2}}]\n    backendRefs: [{v2}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: Version, value: two}]}]\n    backendRefs: [{v2}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /}, queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{v3}]\n\
         \x20 - matches: [{method: PUT}]\n    backendRefs: [{v3}]\n\
         \x20 - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]\n    backendRefs: [{v3}]\n\
         \x20 - backendRefs: [{v1}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
         \x20 - matches: [{path: {type: Exact, value: /v2/exact}}, {path: {type: PathPrefix, value: /v2/longer/}}]\n    backendRefs: [{v3}]\n",
        &echos,
    );
    let gw = start(dir.path(), &format!("{services}{routes}")).await;
    let p = gw.port;
    expect(p, "GET", "/one", &[], "v1").await;
    for (path, want) in [
        ("/one/example", "v1"),
        ("/v2", "v2"),
        ("/v2/", "v2"),
        ("/v2/example", "v2"),
        // A prefix matches whole path segments.
        ("/v2example", "v1"),
        ("/foo/v2/example", "v1"),
        // An exact path and a longer prefix of a later route win over a route's shorter prefix.
        ("/v2/exact", "v3"),
        ("/v2/longer/x", "v3"),
        ("/re/42", "v3"),
        ("/re/x", "v1"),
    ] {
        expect(p, "GET", path, &[], want).await;
    }
    expect(p, "GET", "/", &[("version", "two")], "v2").await;
    expect(p, "GET", "/?animal=whale", &[], "v3").await;
    // Query parameter names are case-sensitive.
    expect(p, "GET", "/?Animal=whale", &[], "v1").await;
    expect(p, "PUT", "/anything", &[], "v3").await;
    // The path prefix match ranks above the method match.
    expect(p, "PUT", "/v2", &[], "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_rewrite_redirect_mirror_and_modify_headers() {
    let (echos, services) = backends().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = expand(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: f}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /headers}}]\n\
         \x20   filters:\n\
         \x20   - type: RequestHeaderModifier\n\
         \x20     requestHeaderModifier: {set: [{name: X-Set, value: set}], add: [{name: X-Add, value: added}], remove: [X-Remove]}\n\
         \x20   - type: ResponseHeaderModifier\n\
         \x20     responseHeaderModifier: {set: [{name: X-Response, value: yes}], remove: [X-Gone]}\n\
         \x20   backendRefs: [{v1}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]\n\
         \x20   filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]\n\
         \x20   backendRefs: [{v1}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /prefix/one}}]\n\
         \x20   filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]\n\
         \x20   backendRefs: [{v2}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /full}}]\n\
         \x20   filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]\n\
         \x20   backendRefs: [{v2}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /redirect}}]\n\
         \x20   filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example.com, statusCode: 301}}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /mirror}}]\n\
         \x20   filters: [{type: RequestMirror, requestMirror: {backendRef: {v3}}}]\n\
         \x20   backendRefs: [{v1}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /slow}}]\n\
         \x20   timeouts: {request: 500ms}\n\
         \x20   backendRefs: [{v1}]\n",
        &echos,
    );
    let gw = start(dir.path(), &format!("{services}{routes}")).await;
    let p = gw.port;
    expect(p, "GET", "/headers", &[], "v1").await;

    let headers = [("x-add", "client"), ("x-remove", "gone"), ("x-set", "client")];
    let echo = request(p, "GET", "/headers", &headers, "").await.unwrap();
    let sent = &echo.json()["headers"];
    assert_eq!(sent["X-Set"], serde_json::json!(["set"]), "{sent}");
    let added: Vec<&str> =
        sent["X-Add"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(added.contains(&"client") && added.contains(&"added"), "{sent}");
    assert!(sent.get("X-Remove").is_none(), "{sent}");
    assert_eq!(echo.headers.get("x-response").map(String::as_str), Some("yes"));
    let gone = [("x-echo-set-header", "X-Gone:1,X-Kept:2")];
    let echo = request(p, "GET", "/headers", &gone, "").await.unwrap();
    assert!(!echo.headers.contains_key("x-gone"), "{:?}", echo.headers);
    assert_eq!(echo.headers.get("x-kept").map(String::as_str), Some("2"));

    let path = |p: u16, target: &'static str| async move {
        let r = request(p, "GET", target, &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{target}: {}", r.body);
        let echo = r.json();
        (echo["path"].as_str().unwrap().to_string(), echo["host"].as_str().unwrap().to_string())
    };
    assert_eq!(path(p, "/strip-prefix").await.0, "/");
    assert_eq!(path(p, "/strip-prefix/three").await.0, "/three");
    assert_eq!(
        path(p, "/prefix/one/two").await,
        ("/one/two".into(), "rewritten.example.com".into())
    );
    assert_eq!(path(p, "/full/x?q=1").await.0, "/replaced?q=1");

    let redirect = request(p, "GET", "/redirect/x", &[], "").await.unwrap();
    assert_eq!(redirect.status, 301);
    let location = redirect.headers.get("location").unwrap();
    assert_eq!(location, "http://elsewhere.example.com/redirect/x");

    let before = echos[2].requests();
    expect(p, "GET", "/mirror", &[], "v1").await;
    eventually(10, "the mirror backend gets a copy", || async {
        (echos[2].requests() > before).then_some(())
    })
    .await;
    assert!(echos[2].paths().iter().any(|path| path == "/mirror"), "{:?}", echos[2].paths());

    let slow = request(p, "GET", "/slow?delay=2s", &[], "").await.unwrap();
    assert_eq!(slow.status, 504, "{}", slow.body);
    expect(p, "GET", "/slow?delay=10ms", &[], "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_refs_that_do_not_resolve_answer_500_and_say_why() {
    let (echos, services) = backends().await;
    let dir = tempfile::tempdir().unwrap();
    let port = echos[0].addr().port();
    let other_ns = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: web}}\n\
         spec: {{clusterIP: 127.0.0.1, ports: [{{port: {port}}}]}}\n"
    );
    let route = |name: &str, backend: &str, path: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{backend}]\n"
        )
    };
    let routes = [
        route("missing", &format!("{{name: nothing-here, port: {port}}}"), "/missing"),
        route("unknown-kind", "{group: example.com, kind: Thing, name: t}", "/kind"),
        route("cross", &format!("{{name: web, namespace: web, port: {port}}}"), "/cross"),
        route("fine", "{v1}", "/fine"),
        // Half the traffic to a backend that does not exist: that half gets 500.
        route("half", &format!("{{v1}}, {{name: nothing-here, port: {port}}}"), "/half"),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: none}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /none}}]\n"
            .to_string(),
    ]
    .concat();
    let manifest = format!("{services}{other_ns}{}", expand(&routes, &echos));
    let mut gw = start(dir.path(), &manifest).await;
    let p = gw.port;
    expect(p, "GET", "/fine", &[], "v1").await;
    for path in ["/missing", "/kind", "/cross", "/none"] {
        expect(p, "GET", path, &[], "500").await;
    }
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let status = match served(p, "GET", "/half", &[]).await {
            Ok(pod) => pod,
            Err(status) => status.to_string(),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.contains_key("500") && statuses.contains_key("infra-backend-v1"),
        "{statuses:?}"
    );

    assert_eq!(reason(&gw.running, "missing"), (false, "BackendNotFound".into()));
    assert_eq!(reason(&gw.running, "unknown-kind"), (false, "InvalidKind".into()));
    assert_eq!(reason(&gw.running, "cross"), (false, "RefNotPermitted".into()));
    assert_eq!(reason(&gw.running, "fine"), (true, "ResolvedRefs".into()));

    // A ReferenceGrant in the Service's namespace lets the route reach it.
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: routes, namespace: web}\n\
                 spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], \
                 to: [{group: '', kind: Service}]}\n";
    let path = dir.path().join("gateway.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    edit(&mut gw, &path, &format!("{text}{grant}")).await;
    expect(p, "GET", "/cross", &[], "v1").await;
    assert_eq!(reason(&gw.running, "cross"), (true, "ResolvedRefs".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_and_ai_gateway_routes_share_a_listener() {
    let (echos, services) = backends().await;
    let upstream = Upstream::start("A").await;
    let dir = tempfile::tempdir().unwrap();
    let ai = format!(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: ai}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n\
         \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m}}]}}]\n    backendRefs: [{{name: a}}]\n\
         ---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: a}}\n\
         spec: {{schema: {{name: OpenAI}}, backendRef: {{name: a, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\n\
         spec: {{endpoints: [{{ip: {{address: \"{}\", port: {}}}}}]}}\n",
        upstream.addr.ip(),
        upstream.addr.port()
    );
    let http = expand(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{v1}]\n",
        &echos,
    );
    let gw = start(dir.path(), &format!("{services}{ai}{http}")).await;
    let p = gw.port;
    expect(p, "GET", "/healthz", &[], "v1").await;
    // The model's route wins for its model, read from the body, whatever the HTTPRoute's "/".
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let chat = request(p, "POST", "/v1/chat/completions", &[], body).await.unwrap();
    assert_eq!(chat.status, 200, "{}", chat.body);
    assert_eq!(chat.headers.get("x-upstream-id").map(String::as_str), Some("A"));
    // A model no AIGatewayRoute serves falls to the HTTPRoute, with the model header set.
    let other = r#"{"model":"elsewhere","messages":[{"role":"user","content":"hi"}]}"#;
    let passed = request(p, "POST", "/v1/chat/completions", &[], other).await.unwrap();
    assert_eq!(passed.status, 200, "{}", passed.body);
    let echo = passed.json();
    assert_eq!(echo["pod"], "infra-backend-v1");
    assert_eq!(echo["headers"]["X-Ai-Eg-Model"], serde_json::json!(["elsewhere"]));
    // The model list is still the gateway's own.
    let models = request(p, "GET", "/v1/models", &[], "").await.unwrap();
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["id"], "m", "{}", models.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_endpoint_slices_routes_to_their_ready_endpoints() {
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut echos = Vec::new();
    for (ip, pod) in [("127.0.0.2", "pod-a"), ("127.0.0.3", "pod-b")] {
        let addr = format!("{ip}:{port}").parse().unwrap();
        echos.push(Echo::start(addr, pod, "default", Mode::Http1).await);
    }
    let slice = |b_ready: bool| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints:\n- addresses: [127.0.0.2]\n- addresses: [127.0.0.3]\n  conditions: {{ready: {b_ready}}}\n"
        )
    };
    // A headless Service: no cluster IP, only its slices say where it is.
    let service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
                   spec: {clusterIP: None, ports: [{name: http, port: 80}]}\n\
                   ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
                   spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n";
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start(dir.path(), &format!("{service}{}", slice(false))).await;
    let p = gw.port;
    expect(p, "GET", "/", &[], "pod-a").await;
    for _ in 0..10 {
        assert_eq!(served(p, "GET", "/", &[]).await, Ok("pod-a".into()), "only the ready one");
    }
    let path = dir.path().join("gateway.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(&slice(false), &slice(true));
    edit(&mut gw, &path, &text).await;
    expect(p, "GET", "/", &[], "pod-b").await;
}

/// Each of these alone would make Envoy reject the whole RouteConfiguration of the port: the
/// route is refused, saying which field, and its neighbours serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_envoy_would_reject_is_refused_and_its_neighbours_serve() {
    let (echos, services) = backends().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("header-name", "matches: [{headers: [{name: 'bad header', value: x}]}]", "name"),
        ("prefix", "matches: [{path: {type: PathPrefix, value: '/a?b'}}]", "path.value"),
        ("relative", "matches: [{path: {type: Exact, value: 'a'}}]", "path.value"),
        ("method", "matches: [{method: FETCH}]", "method"),
        ("control", "matches: [{headers: [{name: x, value: \"a\\x01b\"}]}]", "control characters"),
        (
            "set-host",
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: h}]}}]",
            "cannot be set",
        ),
        (
            "remove-pseudo",
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [':path']}}]",
            "cannot be removed",
        ),
        (
            "redirect-host",
            "filters: [{type: RequestRedirect, requestRedirect: {hostname: '*.example.com'}}]",
            "hostname",
        ),
        (
            "rewrite-path",
            "filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: 'x y'}}}]",
            "path",
        ),
        ("cors", "filters: [{type: CORS}]", "not supported"),
        ("regex", "matches: [{path: {type: RegularExpression, value: '/a('}}]", "path.value"),
        (
            "regex-size",
            "matches: [{path: {type: RegularExpression, value: '/a{1000}'}}]",
            "path.value",
        ),
        (
            "header-regex",
            "matches: [{headers: [{type: RegularExpression, name: x, value: '[z-a]'}]}]",
            "not a regular expression",
        ),
    ];
    let mut routes = expand(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: good}\n\
         spec: {parentRefs: [{name: gw}], rules: [{matches: [{path: {type: PathPrefix, value: /good}}], backendRefs: [{v1}]}]}\n",
        &echos,
    );
    for (name, rule, _) in &bad {
        routes.push_str(&expand(
            &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
                 spec: {{parentRefs: [{{name: gw}}], rules: [{{{rule}, backendRefs: [{{v2}}]}}]}}\n"
            ),
            &echos,
        ));
    }
    let gw = start(dir.path(), &format!("{services}{routes}")).await;
    expect(gw.port, "GET", "/good", &[], "v1").await;
    assert_eq!(rejected_updates(gw.admin).await, 0, "Envoy took every update");
    for (name, _, field) in bad {
        let all = conditions(&gw.running, &format!("HTTPRoute/default/{name}")).unwrap();
        let accepted = all.iter().find(|c| c.0 == "Accepted").unwrap();
        assert!(!accepted.1 && accepted.3.contains(field), "{name}: {accepted:?}");
    }
    // Nothing of the refused routes is served: their backend is never reached.
    expect(gw.port, "PUT", "/other", &[], "404").await;
    assert_eq!(echos[1].requests(), 0);
}

/// A 70/30 split (and a backendRef of weight 0, which takes nothing) between two Services, and
/// between two InferencePools, over 300 requests each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_between_services_and_between_pools() {
    let (echos, services) = backends().await;
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let mut pods = Vec::new();
    let mut pool_yaml = String::new();
    for (ip, pool) in [("127.0.0.2", "pool-a"), ("127.0.0.3", "pool-b")] {
        let addr = format!("{ip}:{port}").parse().unwrap();
        pods.push(Echo::start(addr, &format!("{pool}-pod"), "default", Mode::Http1).await);
        pool_yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pool}-pod, labels: {{app: {pool}}}}}\n\
             status: {{podIP: \"{ip}\", phase: Running}}\n\
             ---\napiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: {pool}}}\n\
             spec: {{selector: {{matchLabels: {{app: {pool}}}}}, targetPorts: [{{number: {port}}}]}}\n"
        ));
    }
    let routes = expand(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /services}}]\n\
         \x20   backendRefs: [{v1, weight: 70}, {v2, weight: 30}, {v3, weight: 0}]\n\
         \x20 - matches: [{path: {type: PathPrefix, value: /pools}}]\n\
         \x20   backendRefs:\n\
         \x20   - {group: inference.networking.k8s.io, kind: InferencePool, name: pool-a, weight: 70}\n\
         \x20   - {group: inference.networking.k8s.io, kind: InferencePool, name: pool-b, weight: 30}\n",
        &echos,
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), &format!("{services}{pool_yaml}{routes}")).await;
    for (path, first, second) in [
        ("/services", "infra-backend-v1", "infra-backend-v2"),
        ("/pools", "pool-a-pod", "pool-b-pod"),
    ] {
        expect(gw.port, "GET", path, &[], first).await;
        expect(gw.port, "GET", path, &[], second).await;
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..300 {
            let pod = served(gw.port, "GET", path, &[]).await.expect("served");
            *counts.entry(pod).or_insert(0u32) += 1;
        }
        let share = f64::from(counts.get(first).copied().unwrap_or(0)) / 300.0;
        assert!((share - 0.7).abs() <= 0.1, "{path}: {counts:?}");
        assert_eq!(counts.keys().filter(|k| *k != first && *k != second).count(), 0, "{counts:?}");
    }
}

/// Gateway API's HTTPRouteListenerHostnameMatching and HTTPRouteBackendProtocolH2C: listeners
/// on one port told apart by hostname take the routes attached by `sectionName`, the most
/// specific hostname first; a Service port with `appProtocol: kubernetes.io/h2c` is spoken to in
/// HTTP/2 with prior knowledge (its echo server refuses anything else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_hostnames_pick_routes_and_h2c_services_get_http2() {
    let (echos, services) = backends().await;
    let h2c = Echo::start("127.0.0.1:0".parse().unwrap(), "h2c-pod", "default", Mode::H2c).await;
    let port = free_port();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec:\n  gatewayClassName: aixds\n  listeners:\n\
         \x20 - {{name: bar, protocol: HTTP, port: {port}, hostname: bar.com}}\n\
         \x20 - {{name: foo-bar, protocol: HTTP, port: {port}, hostname: foo.bar.com}}\n\
         \x20 - {{name: wild-bar, protocol: HTTP, port: {port}, hostname: '*.bar.com'}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: h2c}}\n\
         spec: {{clusterIP: 127.0.0.1, ports: [{{port: {}, appProtocol: kubernetes.io/h2c}}]}}\n",
        h2c.addr().port()
    );
    let route = |name: &str, section: &str, backend: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
             spec: {{parentRefs: [{{name: gw, sectionName: {section}}}], rules: [{{backendRefs: [{backend}]}}]}}\n"
        )
    };
    let routes = [
        route("bar", "bar", "{v1}"),
        route("foo-bar", "foo-bar", "{v2}"),
        route("wild", "wild-bar", "{v3}"),
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: h2c}}\n\
             spec: {{parentRefs: [{{name: gw, sectionName: wild-bar}}], hostnames: [h2c.bar.com], \
             rules: [{{backendRefs: [{{name: h2c, port: {}}}]}}]}}\n",
            h2c.addr().port()
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    write_atomic(
        dir.path().join("gateway.yaml"),
        format!("{gateway}{services}{}", expand(&routes, &echos)),
    );
    let gw = start_gateway(dir.path(), port, false, "http-route-hosts").await;
    let pod = |host: &'static str| async move {
        match request_to(port, host, "GET", "/", &[], "").await {
            Ok(r) if r.status == 200 => r.json()["pod"].as_str().unwrap().to_string(),
            Ok(r) => r.status.to_string(),
            Err(e) => e.to_string(),
        }
    };
    eventually(30, "bar.com served", || async {
        (pod("bar.com").await == "infra-backend-v1").then_some(())
    })
    .await;
    assert_eq!(pod("foo.bar.com").await, "infra-backend-v2");
    assert_eq!(pod("baz.bar.com").await, "infra-backend-v3");
    assert_eq!(pod("foo.bar.com:8080").await, "infra-backend-v2", "the port in Host is ignored");
    assert_eq!(pod("other.com").await, "404");
    let r = request_to(gw.port, "h2c.bar.com", "GET", "/", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["pod"].clone(), r.json()["proto"].clone()),
        ("h2c-pod".into(), "HTTP/2.0".into())
    );
}
