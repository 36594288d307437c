//! `aixds serve`'s Kubernetes side against the test API server ([`crate::kubeapi`]): the
//! production watch, status and lease code, pointed at a loopback socket.

use std::net::SocketAddr;
use std::time::Duration;

use aixds::api::ObjectKey;
use aixds::compile::CompileOptions;
use aixds::kube::KubeOptions;
use aixds::kube::lease::LeaseOptions;
use aixds::run::{EnvoyOptions, RunOptions, Running};
use aixds::source::SourceOptions;
use serde_json::{Value, json};

use crate::harness::*;
use crate::kubeapi::{self, TestApi};

pub(crate) fn kube_options(api: &TestApi, status: Option<LeaseOptions>) -> KubeOptions {
    KubeOptions {
        config: Some(api.config()),
        namespace: None,
        discovery_interval: Duration::from_millis(200),
        status,
        gateway_service: None,
    }
}

/// A short Lease, so that takeovers happen within a test.
pub(crate) fn lease(identity: &str) -> LeaseOptions {
    LeaseOptions { duration: Duration::from_secs(2), ..LeaseOptions::new("default", identity) }
}

pub(crate) async fn start_with(
    kube: KubeOptions,
    admin: SocketAddr,
    port: u16,
    envoy: Option<EnvoyOptions>,
) -> anyhow::Result<Running> {
    aixds::run::start(run_options(kube, admin, port, envoy)).await
}

/// What [`start_with`] starts, for tests that change more.
pub(crate) fn run_options(
    kube: KubeOptions,
    admin: SocketAddr,
    port: u16,
    envoy: Option<EnvoyOptions>,
) -> RunOptions {
    RunOptions {
        source: SourceOptions::Kubernetes(Box::new(kube)),
        grpc: Some(insecure_loopback()),
        admin_listen: Some(admin),
        compile: CompileOptions {
            listener_address: "127.0.0.1".into(),
            default_port: port,
            access_log: None,
            picker_client_cert: None,
            ratelimit_fail_closed: false,
            xff_trusted_hops: 0,
            controller_name: None,
        },
        picker: None,
        envoy,
        extproc: Default::default(),
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ratelimit: Default::default(),
        drain: Default::default(),
    }
}

pub(crate) async fn start(api: &TestApi, status: Option<LeaseOptions>) -> Running {
    let admin = "127.0.0.1:0".parse().unwrap();
    start_with(kube_options(api, status), admin, 1975, None).await.expect("aixds starts")
}

/// A replica holding `lease`: its requests name it to the API server (see
/// [`TestApi::config_as`]).
pub(crate) async fn replica(api: &TestApi, lease: LeaseOptions) -> Running {
    let kube =
        KubeOptions { config: Some(api.config_as(&lease.identity)), ..kube_options(api, None) };
    let kube = KubeOptions { status: Some(lease), ..kube };
    start_with(kube, "127.0.0.1:0".parse().unwrap(), 1975, None).await.expect("aixds starts")
}

/// Whether the replica says it leads (`aixds_status_leader` at `/metrics`).
pub(crate) async fn leads(running: &Running) -> bool {
    let admin = running.admin_addr.unwrap();
    let m = request(admin.port(), "GET", "/metrics", &[], "").await.unwrap().body;
    m.lines().any(|l| l == "aixds_status_leader 1")
}

pub(crate) fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

/// The object's conditions as (type, status, reason, message), or None while it is absent.
pub(crate) fn conditions(
    running: &Running,
    k: &str,
) -> Option<Vec<(String, bool, String, String)>> {
    let graph = running.graph.read().unwrap();
    let node = graph.node(&key(k)).filter(|n| n.object.is_some())?;
    Some(
        node.conditions()
            .iter()
            .map(|c| {
                let v = serde_json::to_value(c).unwrap();
                (
                    v["type"].as_str().unwrap().to_string(),
                    c.status,
                    v["reason"].as_str().unwrap().to_string(),
                    c.message.clone(),
                )
            })
            .collect(),
    )
}

pub(crate) fn present(running: &Running, k: &str) -> bool {
    running.graph.read().unwrap().object(&key(k)).is_some()
}

pub(crate) fn resolved(running: &Running, k: &str) -> Option<bool> {
    conditions(running, k).map(|cs| cs.iter().all(|c| c.1))
}

pub(crate) async fn wait_present(running: &Running, k: &str, want: bool) {
    eventually(10, &format!("{k} present={want}"), || async {
        (present(running, k) == want).then_some(())
    })
    .await;
}

pub(crate) async fn readyz(admin: SocketAddr) -> (u16, String) {
    match request(admin.port(), "GET", "/readyz", &[], "").await {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, e.to_string()),
    }
}

pub(crate) fn backend_yaml(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\n\
         spec: {{schema: {{name: OpenAI}}, backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\n\
         spec: {{endpoints: [{{ip: {{address: \"{}\", port: {}}}}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

pub(crate) const ROUTE: &str = r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: m}]}]
    backendRefs: [{name: a}]
"#;

/// A GatewayClass of `aixds serve`'s default controller name, which [`GATEWAY`] names.
pub(crate) const GATEWAY_CLASS: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: aixds}
spec: {controllerName: aixds.io/gateway-controller}
"#;

pub(crate) const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: aixds, listeners: [{name: http, protocol: HTTP, port: 1975}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_changed_and_deleted_at_the_api_server_reach_the_graph() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let running = start(&api, None).await;
    // Listed before start returned: the route is there, its backend is not.
    let route = conditions(&running, "AIGatewayRoute/default/r").unwrap();
    assert!(route.iter().any(|c| !c.1 && c.3.contains("AIServiceBackend default/a not found")));

    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    eventually(10, "the route resolves", || async {
        (resolved(&running, "AIGatewayRoute/default/r") == Some(true)).then_some(())
    })
    .await;

    api.delete("Backend", "default", "a");
    eventually(10, "the route loses its backend", || async {
        (resolved(&running, "AIGatewayRoute/default/r") == Some(false)).then_some(())
    })
    .await;
    api.delete("AIGatewayRoute", "default", "r");
    wait_present(&running, "AIGatewayRoute/default/r", false).await;
    assert!(readyz(running.admin_addr.unwrap()).await.0 == 200);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_removes_an_object_deleted_while_no_watch_saw_it() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let running = start(&api, None).await;
    assert!(present(&running, "Backend/default/a"));

    let lists_before = api.requests_to("/apis/gateway.envoyproxy.io/v1alpha1/backends");
    // The delete is never sent on a watch: the watch resumes from an expired resourceVersion,
    // gets 410 Gone, and only the relist shows the Backend is gone.
    api.compact_with(|objects| {
        objects.delete("Backend", "default", "a");
    });
    wait_present(&running, "Backend/default/a", false).await;
    assert!(api.requests_to("/apis/gateway.envoyproxy.io/v1alpha1/backends") > lists_before);
    assert_eq!(resolved(&running, "AIGatewayRoute/default/r"), Some(false));

    // Watches cut mid-stream resume; new objects still arrive.
    api.drop_watches();
    api.apply_yaml(&backend_yaml("b", "127.0.0.1:9".parse().unwrap()));
    wait_present(&running, "AIServiceBackend/default/b", true).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_waits_for_the_initial_lists_and_readiness_follows_the_api_server() {
    let mut api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.stop().await;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let options = kube_options(&api, None);
    let starting = tokio::spawn(start_with(options, admin, 1975, None));
    let (code, body) = eventually(10, "the admin server answers", || async {
        let r = readyz(admin).await;
        (r.0 != 0).then_some(r)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("initial snapshot not published yet"), "{body}");
    assert!(!starting.is_finished(), "start waits for the lists");

    api.start().await;
    let running = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("start returns once listed")
        .unwrap()
        .unwrap();
    assert_eq!(readyz(admin).await.0, 200);
    assert!(present(&running, "Gateway/default/gw"));
    let revision = running.store.load().revision;

    // Unreachable: not ready, with the reason, and the snapshot stays.
    api.stop().await;
    let (_, body) = eventually(20, "not ready while unreachable", || async {
        let r = readyz(admin).await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert!(body.contains("failing"), "{body}");
    assert_eq!(running.store.load().revision, revision);
    assert!(present(&running, "Gateway/default/gw"));

    // Changes made while unreachable arrive after it returns.
    api.delete("Gateway", "default", "gw");
    api.start().await;
    wait_present(&running, "Gateway/default/gw", false).await;
    eventually(20, "ready again", || async { (readyz(admin).await.0 == 200).then_some(()) }).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_does_not_decode_is_skipped_and_counted() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply(json!({
        "apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIServiceBackend",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"schema": "not an object"},
    }));
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let running = start(&api, None).await;
    assert!(present(&running, "AIServiceBackend/default/a"));
    assert!(!present(&running, "AIServiceBackend/default/broken"));
    let metrics =
        request(running.admin_addr.unwrap().port(), "GET", "/metrics", &[], "").await.unwrap().body;
    assert!(metrics.contains("aixds_kube_decode_failures_total 1"), "{metrics}");
    assert_eq!(readyz(running.admin_addr.unwrap()).await.0, 200);
    running.shutdown().await;
}

pub(crate) const POOL_ROUTE: &str = r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: pr}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: p}]}]
    backendRefs: [{name: pool, group: inference.networking.k8s.io, kind: InferencePool}]
"#;

pub(crate) const POOL: &str = r#"apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool}
spec:
  selector: {matchLabels: {app: m}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: epp, port: {number: 9002}}
"#;

pub(crate) const EPP: &str = r#"apiVersion: v1
kind: Service
metadata: {name: epp}
spec: {ports: [{port: 9002}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inference_pool_crd_is_optional_and_watched_once_installed() {
    let without_pools: Vec<_> =
        kubeapi::all_resources().into_iter().filter(|r| *r != kubeapi::INFERENCE_POOL).collect();
    let api = TestApi::start_with(without_pools).await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(POOL_ROUTE);
    api.apply_yaml(EPP);
    let running = start(&api, None).await;
    assert_eq!(readyz(running.admin_addr.unwrap()).await.0, 200);
    let route = conditions(&running, "AIGatewayRoute/default/pr").unwrap();
    let refs = route.iter().find(|c| c.0 == "ResolvedRefs").unwrap();
    assert!(!refs.1);
    assert_eq!(
        refs.3,
        "InferencePool default/pool not found: the InferencePool CRD \
         (inference.networking.k8s.io/v1) is not installed in the cluster"
    );

    api.add_resource(kubeapi::INFERENCE_POOL);
    api.apply_yaml(POOL);
    eventually(10, "the pool is watched and the route resolves", || async {
        (resolved(&running, "AIGatewayRoute/default/pr") == Some(true)).then_some(())
    })
    .await;

    // Uninstalled: the pool is gone, and the route says why.
    api.remove_resource(&kubeapi::INFERENCE_POOL);
    wait_present(&running, "InferencePool/default/pool", false).await;
    let route = conditions(&running, "AIGatewayRoute/default/pr").unwrap();
    assert!(
        route.iter().any(|c| c.3.contains("CRD (inference.networking.k8s.io/v1) is not installed"))
    );
    running.shutdown().await;
}

/// aixds's last status PATCH for `path`, once it satisfies `check`.
pub(crate) async fn status_patch(
    api: &TestApi,
    path: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(15, &format!("a status patch to {path}"), || async {
        api.patches()
            .into_iter()
            .rev()
            .find(|p| p.path == path && p.field_manager.as_deref() == Some("aixds"))
            .filter(|p| check(&p.body))
            .map(|p| {
                assert_eq!(p.content_type, "application/apply-patch+yaml");
                p.body
            })
    })
    .await
}

pub(crate) fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions.as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_are_written_to_status_only_when_they_change() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    api.apply_yaml(POOL_ROUTE);
    api.apply_yaml(POOL);
    api.apply_yaml(EPP);
    let running = start(&api, Some(lease("only"))).await;

    let route_status =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status";
    let body = status_patch(&api, route_status, |_| true).await;
    let refs = condition(&body["status"]["conditions"], "ResolvedRefs");
    assert_eq!(refs["status"], "False");
    assert_eq!(refs["reason"], "BackendNotFound");
    assert_eq!(refs["message"], "AIServiceBackend default/a not found");
    assert_eq!(refs["observedGeneration"], 1);
    assert!(refs["lastTransitionTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(condition(&body["status"]["conditions"], "Accepted")["status"], "True");
    // The API server has it.
    let stored = api.get("AIGatewayRoute", "default", "r").unwrap();
    assert_eq!(condition(&stored["status"]["conditions"], "ResolvedRefs")["status"], "False");

    // The InferencePool in the Inference Extension's shape: one parent per Gateway.
    let pool_status =
        "/apis/inference.networking.k8s.io/v1/namespaces/default/inferencepools/pool/status";
    let body = status_patch(&api, pool_status, |_| true).await;
    let parents = body["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(
        parents[0]["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": "gw"})
    );
    assert_eq!(condition(&parents[0]["conditions"], "Accepted")["status"], "True");

    // Fix the route: its status flips, with the new generation.
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let body =
        status_patch(&api, route_status, |b| b["status"]["conditions"][1]["status"] == "True")
            .await;
    assert_eq!(condition(&body["status"]["conditions"], "ResolvedRefs")["reason"], "ResolvedRefs");
    let route_patches =
        |api: &TestApi| api.patches().iter().filter(|p| p.path == route_status).count();
    let written = route_patches(&api);

    // An unrelated change is written; the route's unchanged status is not written again.
    api.apply_yaml(&backend_yaml("z", "127.0.0.1:9".parse().unwrap()));
    let z_status =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aiservicebackends/z/status";
    status_patch(&api, z_status, |_| true).await;
    assert_eq!(route_patches(&api), written);

    // The Lease names this replica.
    let held = api.get("Lease", "default", "aixds").unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "only");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_writes_status_once_the_leader_is_gone() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    let first = start(&api, Some(lease("first"))).await;
    eventually(10, "first leads", || async {
        api.get("Lease", "default", "aixds")
            .filter(|l| l["spec"]["holderIdentity"] == "first")
            .map(|_| ())
    })
    .await;
    let second = start(&api, Some(lease("second"))).await;
    let leader = |running: &Running| {
        let admin = running.admin_addr.unwrap();
        async move {
            let m = request(admin.port(), "GET", "/metrics", &[], "").await.unwrap().body;
            m.lines().find_map(|l| l.strip_prefix("aixds_status_leader ")).map(str::to_string)
        }
    };
    eventually(10, "first reports it leads", || async {
        (leader(&first).await.as_deref() == Some("1")).then_some(())
    })
    .await;
    first.shutdown().await;

    api.apply_yaml(ROUTE);
    let route_status =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status";
    status_patch(&api, route_status, |_| true).await;
    let held = api.get("Lease", "default", "aixds").unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "second");
    assert_eq!(held["spec"]["leaseTransitions"], 1);
    eventually(10, "second reports it leads", || async {
        (leader(&second).await.as_deref() == Some("1")).then_some(())
    })
    .await;
    second.shutdown().await;
}

const POLICY: &str = r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: a}]
  type: APIKey
  apiKey: {secretRef: {name: s}}
"#;

const HTTP_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
    metadata: {name: web}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n";

/// The committed rules are what `aixds rbac` prints, and they are exactly what `serve` uses:
/// every request of a run that watches, writes every kind of status and holds the Lease is
/// allowed by a rule, and every rule is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_rules_are_exactly_what_serve_uses() {
    let file = repo().join("charts/aixds/files/rbac-rules.yaml");
    let committed = std::fs::read_to_string(&file).unwrap();
    assert!(
        committed == aixds::kube::rbac::rules_yaml(),
        "{} drifted from the code: run `aixds rbac > charts/aixds/files/rbac-rules.yaml`",
        file.display()
    );

    let api = TestApi::new().await;
    for doc in [GATEWAY_CLASS, GATEWAY, ROUTE, POOL_ROUTE, POOL, EPP, POLICY, HTTP_ROUTE] {
        api.apply_yaml(doc);
    }
    api.apply_yaml(TRAFFIC_POLICY);
    api.apply_yaml(QUOTA_POLICY);
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let running = start(&api, Some(lease("rbac"))).await;
    for path in [
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status",
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aiservicebackends/a/status",
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/backendsecuritypolicies/key/status",
        "/apis/inference.networking.k8s.io/v1/namespaces/default/inferencepools/pool/status",
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/gw/status",
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/aixds/status",
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web/status",
        "/apis/gateway.envoyproxy.io/v1alpha1/namespaces/default/backendtrafficpolicies/tokens/status",
        "/apis/aigateway.envoyproxy.io/v1alpha1/namespaces/default/quotapolicies/q/status",
    ] {
        status_patch(&api, path, |_| true).await;
    }
    // A renewal: the Lease is read, created, then updated.
    eventually(10, "the lease is renewed", || async {
        api.verbs_used()
            .contains(&("coordination.k8s.io".into(), "leases".into(), "update".into()))
            .then_some(())
    })
    .await;
    running.shutdown().await;

    let mut allowed = std::collections::BTreeSet::new();
    let rules = aixds::kube::rbac::cluster_role_rules();
    for rule in rules.iter().chain(&aixds::kube::rbac::lease_rules()) {
        for resource in &rule.resources {
            for verb in rule.verbs {
                allowed.insert((rule.group.to_string(), resource.clone(), verb.to_string()));
            }
        }
    }
    assert_eq!(api.verbs_used(), allowed);
}

const TRAFFIC_POLICY: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\n\
    kind: BackendTrafficPolicy\nmetadata: {name: tokens, namespace: default}\n\
    spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}], \
    rateLimit: {type: Global, global: {rules: [{limit: {requests: 10, unit: Hour}}]}}}\n";

const QUOTA_POLICY: &str = "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: QuotaPolicy\n\
    metadata: {name: q, namespace: default}\n\
    spec: {targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: a}], \
    serviceQuota: {quota: {limit: 100, duration: 1h}}}\n";

pub(crate) const SECOND_ROUTE: &str = r#"apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r2}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: model-x}]}]
    backendRefs: [{name: a}]
"#;

/// Objects at the API server drive a real Envoy: created, changed, deleted behind a `410`, and
/// with the API server gone Envoy keeps the last good config while aixds reports not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_changes_reach_envoy_and_an_outage_keeps_its_config() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let mut api = TestApi::new().await;
    let port = free_port();
    api.apply_yaml(&crate::envoy::manifests(port, &[("model-a", vec![("a", a.addr, 1)])]));
    api.apply_yaml(SECOND_ROUTE);
    let envoy_admin = free_port();
    let envoy = EnvoyOptions {
        binary: envoy_bin(),
        bootstrap: aixds::bootstrap::BootstrapOptions {
            node_id: "kube".into(),
            admin_port: envoy_admin,
            ..Default::default()
        },
        log_level: "warning".into(),
        concurrency: Some(1),
    };
    let admin: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = start_with(kube_options(&api, None), admin, port, Some(envoy)).await.unwrap();
    let admin = running.admin_addr.unwrap();
    for model in ["model-a", "model-x"] {
        eventually(30, &format!("{model} served by A"), || async {
            (served_by(port, model).await == Ok("A".into())).then_some(())
        })
        .await;
    }

    // Changed at the API server: model-a moves to B.
    api.apply_yaml(&crate::envoy::manifests(port, &[("model-a", vec![("b", b.addr, 1)])]));
    eventually(10, "model-a moves to B", || async {
        (served_by(port, "model-a").await == Ok("B".into())).then_some(())
    })
    .await;

    // Deleted where no watch saw it: only the relist after 410 Gone finds out.
    api.compact_with(|objects| {
        objects.delete("AIGatewayRoute", "default", "r2");
    });
    eventually(10, "model-x is gone", || async {
        (served_by(port, "model-x").await == Err(404)).then_some(())
    })
    .await;

    // The API server goes away: not ready, and Envoy keeps serving what it had.
    api.stop().await;
    eventually(20, "not ready while the API server is unreachable", || async {
        (readyz(admin).await.0 == 503).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(served_by(port, "model-a").await, Ok("B".into()));
    }
    let dump = admin_get(envoy_admin, "/config_dump").await;
    assert!(dump.contains("aisb/default/b"), "Envoy still has backend b's cluster");

    // Back: ready again, and changes flow.
    api.start().await;
    eventually(20, "ready again", || async { (readyz(admin).await.0 == 200).then_some(()) }).await;
    api.apply_yaml(&crate::envoy::manifests(port, &[("model-a", vec![("a", a.addr, 1)])]));
    eventually(20, "model-a back on A", || async {
        (served_by(port, "model-a").await == Ok("A".into())).then_some(())
    })
    .await;
    assert_eq!(rejected_updates(envoy_admin).await, 0, "Envoy rejected no config");
    running.shutdown().await;
}

/// A kubeconfig in `dir` for `api`.
pub(crate) fn kubeconfig(api: &TestApi, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: test, user: {{}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n",
            api.url()
        ),
    )
    .unwrap();
    path
}

/// `aixds serve` as a user runs it, finding the API server through $KUBECONFIG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_finds_the_api_server_through_the_kubeconfig() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY_CLASS);
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(&api, dir.path());
    let admin = free_port();
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_aixds"))
        .args(["serve", "--xds-address", "127.0.0.1:0", "--insecure-grpc"])
        .args(["--listener-address", "127.0.0.1"])
        .args(["--admin-address", &format!("127.0.0.1:{admin}")])
        .args(["--identity", "cli", "--lease-namespace", "default"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("AIXDS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    eventually(30, "serve is ready", || async { (readyz(admin).await.0 == 200).then_some(()) })
        .await;
    let graph = request(admin.port(), "GET", "/debug/graph", &[], "").await.unwrap().json();
    assert!(graph.to_string().contains("AIGatewayRoute/default/r"), "{graph}");
    let route_status =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aigatewayroutes/r/status";
    status_patch(&api, route_status, |_| true).await;
    assert_eq!(api.get("Lease", "default", "aixds").unwrap()["spec"]["holderIdentity"], "cli");
}

/// An Envoy's rejection of a resource reaches the status of the objects it was compiled from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_rejection_is_written_to_status() {
    let a = Upstream::start("A").await;
    let api = TestApi::new().await;
    let port = free_port();
    api.apply_yaml(&crate::envoy::manifests(port, &[("m", vec![("a", a.addr, 1)])]));
    let envoy = EnvoyOptions {
        binary: envoy_bin(),
        bootstrap: aixds::bootstrap::BootstrapOptions {
            node_id: "status".into(),
            admin_port: free_port(),
            ..Default::default()
        },
        log_level: "warning".into(),
        concurrency: Some(1),
    };
    let kube = kube_options(&api, Some(lease("envoy")));
    let running =
        start_with(kube, "127.0.0.1:0".parse().unwrap(), port, Some(envoy)).await.unwrap();
    eventually(30, "m served", || async { served_by(port, "m").await.ok() }).await;

    let (_, bad) = crate::admin::break_cluster(&running, "aisb/default/a");
    running.store.publish(vec![bad]);
    let path =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/default/aiservicebackends/a/status";
    let body = status_patch(&api, path, |b| {
        b["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["reason"] == "RejectedByEnvoy")
    })
    .await;
    let accepted = condition(&body["status"]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    let message = accepted["message"].as_str().unwrap();
    assert!(message.starts_with("status: ") && message.contains("aisb/default/a"), "{message}");
    running.shutdown().await;
}

/// EndpointSlices are watched: a Service's slices give its HTTPRoute cluster the ready
/// endpoints, and a slice edit at the API server re-sends the endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_from_the_api_server_are_a_service_s_endpoints() {
    use envoy_types::pb::envoy::config::core::v3::{Address, address};
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
    use prost::Message;
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\n\
         spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}\n",
    );
    let slice = |ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-abc, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
             endpoints: [{{addresses: [10.1.0.1]}}, {{addresses: [10.1.0.2], conditions: {{ready: {ready}}}}}]\n"
        )
    };
    api.apply_yaml(&slice(false));
    let running = start(&api, None).await;
    let endpoints = || {
        let snapshot = running.store.load();
        let cla = snapshot.get(aixds::xds::TypeUrl::ClusterLoadAssignment, "svc/default/web/80")?;
        let cla = ClusterLoadAssignment::decode(cla.body.value.as_slice()).ok()?;
        let mut out: Vec<String> = cla
            .endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .filter_map(|e| match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(e)) => match &e.address {
                    Some(Address { address: Some(address::Address::SocketAddress(s)) }) => {
                        Some(s.address.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        out.sort();
        Some(out)
    };
    eventually(15, "the ready endpoint", || async {
        (endpoints() == Some(vec!["10.1.0.1".to_string()])).then_some(())
    })
    .await;
    api.apply_yaml(&slice(true));
    eventually(15, "both endpoints", || async {
        (endpoints() == Some(vec!["10.1.0.1".into(), "10.1.0.2".into()])).then_some(())
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_policies_are_watched_and_their_status_written() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    api.apply_yaml(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: tokens, namespace: default}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n\
         \x20 rateLimit: {type: Global, global: {rules: [{limit: {requests: 10, unit: Hour}}]}}\n\
         \x20 retry: {numRetries: 3}\n",
    );
    api.apply_yaml(
        "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: QuotaPolicy\n\
         metadata: {name: q, namespace: default}\n\
         spec:\n  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: a}]\n\
         \x20 serviceQuota: {quota: {limit: 100, duration: 1h}}\n",
    );
    let running = start(&api, Some(lease("only"))).await;

    // Envoy Gateway's shape: an ancestor per target, with aixds's controllerName; the field
    // aixds does not apply (kept by the CRD, not pruned) is named.
    let policy_status = "/apis/gateway.envoyproxy.io/v1alpha1/namespaces/default/backendtrafficpolicies/tokens/status";
    let body = status_patch(&api, policy_status, |_| true).await;
    let ancestors = body["status"]["ancestors"].as_array().unwrap();
    assert_eq!(ancestors.len(), 1);
    assert_eq!(
        ancestors[0]["ancestorRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": "gw"})
    );
    assert_eq!(ancestors[0]["controllerName"], aixds::api::DEFAULT_CONTROLLER_NAME);
    let accepted = condition(&ancestors[0]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert!(accepted["message"].as_str().unwrap().contains("spec.retry"), "{accepted}");

    // Fixed, it is accepted.
    api.apply_yaml(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: tokens, namespace: default, generation: 2}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n\
         \x20 rateLimit: {type: Global, global: {rules: [{limit: {requests: 10, unit: Hour}}]}}\n",
    );
    status_patch(&api, policy_status, |b| {
        b["status"]["ancestors"][0]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Accepted" && c["status"] == "True"))
    })
    .await;

    // The QuotaPolicy's target does not exist: ResolvedRefs says so.
    let quota_status =
        "/apis/aigateway.envoyproxy.io/v1alpha1/namespaces/default/quotapolicies/q/status";
    let body = status_patch(&api, quota_status, |_| true).await;
    let refs = condition(&body["status"]["conditions"], "ResolvedRefs");
    assert_eq!(refs["reason"], "TargetNotFound");
    running.shutdown().await;
}
