//! What `aixds serve` reads and when it says it is ready, against the test API server: the
//! Secret and Pod filters, `--namespace`, `--no-status`, ReferenceGrants coming and going, and
//! `/readyz` while a watch relists.
//! Each test asserts what aixds made of the objects (its graph, its admin endpoints) and what
//! the API server was asked (paths, selectors, PATCHes).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use aixds::kube::KubeOptions;
use aixds::kube::lease::LeaseOptions;
use aixds::kube::rbac::{POD_FIELD_SELECTOR, SECRET_FIELD_SELECTOR, WATCHED};
use aixds::xds::TypeUrl;
use serde_json::{Value, json};

use crate::harness::*;
use crate::kubeapi::{Fault, Request, TestApi};
use crate::kubernetes::{
    GATEWAY, ROUTE, backend_yaml, kube_options, kubeconfig, present, readyz, start, start_with,
    status_patch, wait_present,
};

/// The list and watch requests for one collection path.
fn collection_requests(api: &TestApi, path: &str) -> Vec<Request> {
    api.requests().into_iter().filter(|r| r.method == "GET" && r.path == path).collect()
}

/// Every list and watch of `path` asked for `selector`; there was at least one of each.
fn assert_selected(api: &TestApi, path: &str, selector: &str) {
    let requests = collection_requests(api, path);
    assert!(requests.iter().any(|r| !r.is_watch()), "no list of {path}: {requests:#?}");
    assert!(requests.iter().any(Request::is_watch), "no watch of {path}: {requests:#?}");
    for r in &requests {
        assert_eq!(r.query.get("fieldSelector").map(String::as_str), Some(selector), "{r:?}");
    }
}

fn secret(name: &str, type_: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": type_, "data": {"apiKey": "c2VjcmV0"},
    })
}

fn pod(name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "m"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase, "podIP": "10.0.0.7",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_except_helm_releases_and_service_account_tokens() {
    let api = TestApi::new().await;
    api.apply(secret("key", "Opaque"));
    api.apply(secret("release", "helm.sh/release.v1"));
    api.apply(secret("token", "kubernetes.io/service-account-token"));
    let running = start(&api, None).await;
    assert!(present(&running, "Secret/default/key"));
    assert!(!present(&running, "Secret/default/release"));
    assert!(!present(&running, "Secret/default/token"));

    // Watched the same way: the release is created first, on the same watch, and never comes.
    api.apply(secret("release-2", "helm.sh/release.v1"));
    api.apply(secret("cert", "kubernetes.io/tls"));
    wait_present(&running, "Secret/default/cert", true).await;
    assert!(!present(&running, "Secret/default/release-2"));
    assert_selected(&api, "/api/v1/secrets", SECRET_FIELD_SELECTOR);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_running_pods_are_read_and_a_pod_that_stops_running_is_dropped() {
    let api = TestApi::new().await;
    api.apply(pod("serving", "Running"));
    api.apply(pod("starting", "Pending"));
    api.apply(pod("done", "Succeeded"));
    let running = start(&api, None).await;
    assert!(present(&running, "Pod/default/serving"));
    assert!(!present(&running, "Pod/default/starting"));
    assert!(!present(&running, "Pod/default/done"));

    api.apply(pod("starting", "Running"));
    api.apply(pod("serving", "Failed"));
    wait_present(&running, "Pod/default/starting", true).await;
    wait_present(&running, "Pod/default/serving", false).await;
    assert_selected(&api, "/api/v1/pods", POD_FIELD_SELECTOR);
    running.shutdown().await;
}

/// Applies every document of `yaml` in `namespace`.
fn apply_in(api: &TestApi, namespace: &str, yaml: &str) {
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let mut value: Value = serde::Deserialize::deserialize(doc).unwrap();
        value["metadata"]["namespace"] = json!(namespace);
        api.apply(value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_namespace_only_that_namespaces_objects_are_read_and_written() {
    let api = TestApi::new().await;
    for ns in ["team-a", "team-b"] {
        apply_in(&api, ns, GATEWAY);
        apply_in(&api, ns, ROUTE);
        let mut s = secret("key", "Opaque");
        s["metadata"]["namespace"] = json!(ns);
        api.apply(s);
    }
    let kube = KubeOptions {
        namespace: Some("team-a".into()),
        ..kube_options(&api, Some(LeaseOptions::new("team-a", "ns")))
    };
    let running =
        start_with(kube, "127.0.0.1:0".parse().unwrap(), 1975, None).await.expect("aixds starts");
    for kind in ["Gateway", "AIGatewayRoute", "Secret"] {
        let name = if kind == "Secret" {
            "key"
        } else if kind == "Gateway" {
            "gw"
        } else {
            "r"
        };
        assert!(present(&running, &format!("{kind}/team-a/{name}")));
        assert!(!present(&running, &format!("{kind}/team-b/{name}")));
    }

    // Changes: team-b's first, then team-a's; only team-a's arrive.
    apply_in(&api, "team-b", &backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    apply_in(&api, "team-a", &backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    wait_present(&running, "Backend/team-a/a", true).await;
    assert!(!present(&running, "Backend/team-b/a"));
    let route_status =
        "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/team-a/aigatewayroutes/r/status";
    status_patch(&api, route_status, |b| b["status"]["conditions"][1]["status"] == "True").await;

    // Every list and watch was of team-a's collections (GatewayClasses have no namespace);
    // every write was to team-a.
    let plurals: BTreeSet<String> = WATCHED.iter().map(|w| format!("/{}", w.plural)).collect();
    let collections: Vec<Request> = api
        .requests()
        .into_iter()
        .filter(|r| plurals.iter().any(|p| r.path.ends_with(p.as_str())))
        .collect();
    assert!(collections.len() >= 2 * WATCHED.len(), "{collections:#?}");
    for r in &collections {
        let cluster_scoped = r.path.ends_with("/gatewayclasses");
        assert!(
            r.path.contains("/namespaces/team-a/") || cluster_scoped,
            "read outside team-a: {r:?}"
        );
    }
    for p in api.patches() {
        assert!(p.path.contains("/namespaces/team-a/"), "written outside team-a: {p:?}");
    }
    assert_eq!(api.get("Lease", "team-a", "aixds").unwrap()["spec"]["holderIdentity"], "ns");
    running.shutdown().await;
}

/// `aixds serve --no-status` as a user runs it: it reads and serves, and writes nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_status_writes_nothing_and_takes_no_lease() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_aixds"))
        .args(["serve", "--no-status", "--xds-address", "127.0.0.1:0", "--insecure-grpc"])
        .args(["--listener-address", "127.0.0.1"])
        .args(["--admin-address", &format!("127.0.0.1:{admin}")])
        .env("KUBECONFIG", kubeconfig(&api, dir.path()))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("AIXDS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    eventually(30, "serve is ready", || async { (readyz(admin).await.0 == 200).then_some(()) })
        .await;

    // A change goes through a batch, after which a status writer would write.
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    eventually(10, "the route resolves", || async {
        let graph =
            request(admin.port(), "GET", "/debug/graph?focus=AIGatewayRoute/default/r", &[], "")
                .await
                .ok()?
                .json();
        let route =
            graph["nodes"].as_array()?.iter().find(|n| n["key"] == "AIGatewayRoute/default/r")?;
        route["conditions"].as_array()?.iter().all(|c| c["status"] == "True").then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    assert!(api.patches().is_empty(), "{:#?}", api.patches());
    let writes: Vec<Request> = api.requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "{writes:#?}");
    let leases: Vec<Request> =
        api.requests().into_iter().filter(|r| r.path.contains("/leases")).collect();
    assert!(leases.is_empty(), "{leases:#?}");
    let metrics = request(admin.port(), "GET", "/metrics", &[], "").await.unwrap().body;
    assert!(metrics.contains("aixds_status_leader 0"), "{metrics}");
}

async fn wait_readyz(admin: SocketAddr, what: &str, check: impl Fn(u16, &str) -> bool) -> String {
    eventually(20, what, || async {
        let (code, body) = readyz(admin).await;
        check(code, &body).then_some(body)
    })
    .await
}

/// A relist after `410 Gone` makes `/readyz` 503, naming the kind, for as long as the list
/// takes; the graph keeps what it had until the list is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_watch_relists_after_410_and_200_after() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    let running = start(&api, None).await;
    let admin = running.admin_addr.unwrap();
    assert_eq!(readyz(admin).await.0, 200);

    api.hold_lists("backends");
    api.compact_with(|objects| {
        objects.delete("Backend", "default", "a");
    });
    let body = wait_readyz(admin, "503 while Backends relist", |code, body| {
        code == 503 && body.contains("listing Backend")
    })
    .await;
    assert!(!body.contains("failing"), "a 410 is not a failure: {body}");
    assert!(present(&running, "Backend/default/a"), "the graph keeps its objects meanwhile");

    api.release_lists();
    wait_readyz(admin, "ready after the relist", |code, _| code == 200).await;
    wait_present(&running, "Backend/default/a", false).await;
    running.shutdown().await;
}

/// A watch connection cut mid-stream is resumed from its resourceVersion: nothing is missed, no
/// relist is needed, and aixds stays ready. When resuming fails too, `/readyz` is 503 with the
/// reason, through the relist that follows, and 200 once the kind is listed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_watch_relists_after_a_dropped_connection_and_200_after() {
    let api = TestApi::new().await;
    api.apply_yaml(GATEWAY);
    api.apply_yaml(ROUTE);
    let running = start(&api, None).await;
    let admin = running.admin_addr.unwrap();
    let backends = "/apis/gateway.envoyproxy.io/v1alpha1/backends";
    let lists =
        |api: &TestApi| collection_requests(api, backends).iter().filter(|r| !r.is_watch()).count();
    let listed = lists(&api);

    api.drop_watches();
    api.apply_yaml(&backend_yaml("a", "127.0.0.1:9".parse().unwrap()));
    wait_present(&running, "Backend/default/a", true).await;
    assert_eq!(lists(&api), listed, "a resumed watch needs no relist");
    assert_eq!(readyz(admin).await.0, 200);

    // Cut, and the API server refuses the resumed watch: the watch fails, then relists.
    api.fail(backends, Fault::Refuse(500));
    api.hold_lists("backends");
    api.drop_watches();
    let body = wait_readyz(admin, "503 while the Backend watch fails", |code, body| {
        code == 503 && body.contains("watch of Backend failing")
    })
    .await;
    assert!(body.contains("500") || body.contains("refuses"), "{body}");
    api.compact_with(|objects| {
        objects.delete("Backend", "default", "a");
    });
    api.heal();
    wait_readyz(admin, "503 while Backends relist", |code, body| {
        code == 503 && body.contains("listing Backend")
    })
    .await;
    assert!(present(&running, "Backend/default/a"), "the graph keeps its objects meanwhile");

    api.release_lists();
    wait_readyz(admin, "ready after the relist", |code, _| code == 200).await;
    wait_present(&running, "Backend/default/a", false).await;
    let metrics = request(admin.port(), "GET", "/metrics", &[], "").await.unwrap().body;
    assert!(!metrics.contains("aixds_kube_watch_failures_total 0"), "{metrics}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_grant_that_appears_and_disappears_permits_then_refuses_a_certificate() {
    let api = TestApi::new().await;
    api.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: gw, namespace: team}\n\
         spec: {gatewayClassName: aixds, listeners: [{name: https, protocol: HTTPS, port: 8443, \
         tls: {certificateRefs: [{name: cert, namespace: certs}]}}]}\n",
    );
    let (crt, key) = &crate::sds::PAIRS[1];
    api.apply_yaml(&crate::sds::tls_secret_yaml("certs", "cert", crt, key));
    let running = start(&api, None).await;
    let served = |running: &aixds::run::Running| {
        running.store.load().get(TypeUrl::Secret, "secret/certs/cert").is_some()
    };
    assert!(present(&running, "Secret/certs/cert"));
    assert!(!served(&running), "no grant: the certificate is not served");

    api.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {name: gateways, namespace: certs}\n\
         spec: {from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: team}], \
         to: [{group: '', kind: Secret, name: cert}]}\n",
    );
    eventually(10, "the granted certificate is served", || async {
        served(&running).then_some(())
    })
    .await;
    let graph = admin_get(running.admin_addr.unwrap().port(), "/debug/graph").await;
    assert!(graph.contains("ReferenceGrant/certs/gateways"), "{graph}");

    assert!(api.delete("ReferenceGrant", "certs", "gateways"));
    wait_present(&running, "ReferenceGrant/certs/gateways", false).await;
    eventually(10, "the certificate is no longer served", || async {
        (!served(&running)).then_some(())
    })
    .await;
    running.shutdown().await;
}
