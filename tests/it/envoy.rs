//! aixds driving a real Envoy: routing by model, weights, live edits, delta pushes as recorded by
//! the server, state-of-the-world, and Envoy surviving an aixds restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aixds::bootstrap::BootstrapOptions;
use aixds::compile::CompileOptions;
use aixds::run::{EnvoyOptions, RunOptions, Running};
use aixds::xds::TypeUrl;

use crate::compat::compat_dir;
use crate::harness::*;
use crate::manifests::fixture_dir;

/// A model and the backends serving it: (upstream name, address, weight).
type Rule<'a> = (&'a str, Vec<(&'a str, SocketAddr, u32)>);

/// A gateway on `port` with one rule per model.
pub(crate) fn manifests(port: u16, rules: &[Rule]) -> String {
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec: {{gatewayClassName: aixds, listeners: [{{name: http, protocol: HTTP, port: {port}}}]}}\n"
    );
    let mut route = String::from(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n",
    );
    let mut seen = std::collections::BTreeMap::new();
    for (model, backends) in rules {
        let refs: Vec<String> =
            backends.iter().map(|(n, _, w)| format!("{{name: {n}, weight: {w}}}")).collect();
        route.push_str(&format!(
            "  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n    backendRefs: [{}]\n",
            refs.join(", ")
        ));
        for (name, addr, _) in backends {
            seen.insert(*name, *addr);
        }
    }
    out.push_str(&route);
    for (name, addr) in seen {
        out.push_str(&backend_yaml(name, addr));
    }
    out
}

fn backend_yaml(name: &str, addr: SocketAddr) -> String {
    format!(
        "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\n\
         spec: {{schema: {{name: OpenAI}}, backendRef: {{name: {name}, group: gateway.envoyproxy.io, kind: Backend}}}}\n\
         ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\n\
         spec: {{endpoints: [{{ip: {{address: \"{}\", port: {}}}}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

pub(crate) struct Gateway {
    pub running: Running,
    pub port: u16,
    pub admin: u16,
}

pub(crate) async fn start_gateway(dir: &Path, port: u16, sotw: bool, node_id: &str) -> Gateway {
    start_gateway_with(dir, port, sotw, node_id, Default::default()).await
}

/// [`start_gateway`] with the translation ext_proc's settings.
pub(crate) async fn start_gateway_with(
    dir: &Path,
    port: u16,
    sotw: bool,
    node_id: &str,
    extproc: aixds::extproc::ExtProcOptions,
) -> Gateway {
    let admin = free_port();
    let running = aixds::run::start(RunOptions {
        source: aixds::source::SourceOptions::Files(vec![dir.to_path_buf()]),
        grpc: None,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        compile: CompileOptions {
            listener_address: "127.0.0.1".into(),
            default_port: port,
            access_log: None,
            picker_client_cert: None,
            ratelimit_fail_closed: false,
            xff_trusted_hops: 0,
            controller_name: None,
        },
        envoy: Some(EnvoyOptions {
            binary: envoy_bin(),
            bootstrap: BootstrapOptions {
                node_id: node_id.into(),
                admin_port: admin,
                sotw,
                ..Default::default()
            },
            log_level: "warning".into(),
            concurrency: Some(1),
        }),
        extproc,
        picker: None,
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ratelimit: Default::default(),
        drain: Default::default(),
    })
    .await
    .expect("aixds starts");
    Gateway { running, port, admin }
}

/// Writes `text` to `path` (by atomic rename) and waits until the control loop applied it.
pub(crate) async fn edit(gw: &mut Gateway, path: &Path, text: &str) {
    let before = *gw.running.batches.borrow();
    write_atomic(path, text);
    let batches = &mut gw.running.batches;
    tokio::time::timeout(Duration::from_secs(10), batches.wait_for(|n| *n > before))
        .await
        .expect("the edit is applied")
        .unwrap();
}

async fn routes_and_edits(sotw: bool) {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let port = free_port();
    write_atomic(
        &file,
        manifests(
            port,
            &[("model-a", vec![("a", a.addr, 1)]), ("model-b", vec![("b", b.addr, 1)])],
        ),
    );
    let mut gw = start_gateway(dir.path(), port, sotw, if sotw { "sotw" } else { "delta" }).await;

    eventually(30, "model-a served by A", || async {
        (served_by(gw.port, "model-a").await == Ok("A".into())).then_some(())
    })
    .await;
    assert_eq!(served_by(gw.port, "model-b").await, Ok("B".into()));

    // A client's own scope headers pick nothing: the listener overwrites them before routing
    // and the router phase sets the body's model's scope.
    let forged = |model: &'static str, scope: &'static str| async move {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let port = gw.port.to_string();
        let headers = [
            ("x-aixds-scope", scope),
            ("x-aixds-port", port.as_str()),
            ("x-ai-eg-model", "model-b"),
        ];
        request(gw.port, "POST", "/v1/chat/completions", &headers, &body.to_string()).await.unwrap()
    };
    let a_as_b = forged("model-a", "=model-b").await;
    assert_eq!((a_as_b.status, a_as_b.headers.get("x-upstream-id")), (200, Some(&"A".to_string())));
    assert_eq!(forged("no-such-model", "=model-b").await.status, 404);

    let unknown = chat(gw.port, "no-such-model").await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");

    // Point model-a at B: routing changes with no restart.
    edit(
        &mut gw,
        &file,
        &manifests(
            port,
            &[("model-a", vec![("b", b.addr, 1)]), ("model-b", vec![("b", b.addr, 1)])],
        ),
    )
    .await;
    eventually(10, "model-a moves to B", || async {
        (served_by(gw.port, "model-a").await == Ok("B".into())).then_some(())
    })
    .await;

    // Drop the model-a rule: it 404s, model-b still works.
    edit(&mut gw, &file, &manifests(port, &[("model-b", vec![("b", b.addr, 1)])])).await;
    eventually(10, "model-a 404s", || async {
        (served_by(gw.port, "model-a").await == Err(404)).then_some(())
    })
    .await;
    assert_eq!(served_by(gw.port, "model-b").await, Ok("B".into()));

    let dump = admin_get(gw.admin, "/config_dump").await;
    assert!(dump.contains("aisb/default/b"), "cluster for backend b in config_dump");
    assert!(!dump.contains("aisb/default/a\""), "cluster for the removed backend a is gone");
    assert_eq!(rejected_updates(gw.admin).await, 0, "Envoy rejected no config");
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_routes_models_and_applies_edits() {
    routes_and_edits(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_routes_models_and_applies_edits() {
    routes_and_edits(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_atomic(
        dir.path().join("gateway.yaml"),
        manifests(port, &[("m", vec![("a", a.addr, 3), ("b", b.addr, 1)])]),
    );
    let gw = start_gateway(dir.path(), port, false, "weights").await;
    eventually(30, "m served", || async { served_by(gw.port, "m").await.ok() }).await;
    let mut to_a = 0;
    for _ in 0..200 {
        if served_by(gw.port, "m").await == Ok("A".into()) {
            to_a += 1;
        }
    }
    // 3:1 means 150 of 200 expected; the bound is wide enough to never flake (p < 1e-6).
    assert!((115..=185).contains(&to_a), "A served {to_a} of 200 with weight 3:1");
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_pushes_only_what_changed() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let a2 = Upstream::start_on("127.0.0.2", "A2").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let port = free_port();
    let rules = |a_addr| {
        manifests(port, &[("model-a", vec![("a", a_addr, 1)]), ("model-b", vec![("b", b.addr, 1)])])
    };
    write_atomic(&file, rules(a.addr));
    let mut gw = start_gateway(dir.path(), port, false, "pushes").await;
    eventually(30, "model-a served", || async {
        (served_by(gw.port, "model-a").await == Ok("A".into())).then_some(())
    })
    .await;

    // A new address for backend a: only its endpoints are pushed.
    let pushed = edit_and_push(&mut gw, &file, &rules(a2.addr), ("model-a", "A2")).await;
    assert_eq!(pushed, [(TypeUrl::ClusterLoadAssignment, vec!["aisb/default/a".to_string()])]);

    // A change to one model's routes: only that model's scope. The edit also drops backend a
    // (its cluster goes).
    let moved = [("model-a", vec![("b", b.addr, 1)]), ("model-b", vec![("b", b.addr, 1)])];
    let pushed = edit_and_push(&mut gw, &file, &manifests(port, &moved), ("model-a", "B")).await;
    let routes: Vec<&(TypeUrl, Vec<String>)> = pushed
        .iter()
        .filter(|p| !matches!(p.0, TypeUrl::Cluster | TypeUrl::ClusterLoadAssignment))
        .collect();
    let own = format!("route-{port}/model/model-a");
    assert_eq!(routes, [&(TypeUrl::ScopedRouteConfiguration, vec![own])]);

    // A model renamed: model-b's scope goes (removals name nothing here), model-c's comes.
    let swapped = [("model-a", vec![("b", b.addr, 1)]), ("model-c", vec![("b", b.addr, 1)])];
    let pushed = edit_and_push(&mut gw, &file, &manifests(port, &swapped), ("model-c", "B")).await;
    let named: Vec<(TypeUrl, &str)> =
        pushed.iter().flat_map(|(t, names)| names.iter().map(|n| (*t, n.as_str()))).collect();
    let own = format!("route-{port}/model/model-c");
    assert_eq!(named, [(TypeUrl::ScopedRouteConfiguration, own.as_str())]);
    let scopes = TypeUrl::ScopedRouteConfiguration;
    assert!(pushed.iter().all(|p| p.0 == scopes), "{pushed:?}");
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// Writes `text` to `path`, waits until `model` is served by the upstream named `upstream`, and
/// returns what aixds pushed meanwhile: each push's type and the names it sent.
async fn edit_and_push(
    gw: &mut Gateway,
    path: &Path,
    text: &str,
    (model, upstream): (&str, &str),
) -> Vec<(TypeUrl, Vec<String>)> {
    let mark = gw.running.push_log.records().len();
    edit(gw, path, text).await;
    let port = gw.port;
    eventually(10, &format!("{model} served by {upstream}"), || async {
        (served_by(port, model).await == Ok(upstream.into())).then_some(())
    })
    .await;
    let pushes = gw.running.push_log.records().split_off(mark);
    pushes.into_iter().map(|p| (p.type_url, p.names)).collect()
}

/// The pods of an InferencePool come, go and change labels: each change moves traffic within one
/// push, and that push carries the pool's endpoints alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_changes_push_only_the_pools_endpoints() {
    let port = free_port_on(&["127.0.0.2", "127.0.0.3"]);
    let _p0 = Upstream::start_at("127.0.0.2", port, "P0").await;
    let _p1 = Upstream::start_at("127.0.0.3", port, "P1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let listen = free_port();
    let pod = |name: &str, app: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
             status: {{podIP: \"{ip}\", conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        )
    };
    let config = |pods: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
             spec: {{gatewayClassName: aixds, listeners: [{{name: http, protocol: HTTP, port: {listen}}}]}}\n\
             ---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n\
             \x20 - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: llama}}]}}]\n\
             \x20   backendRefs: [{{name: llama, group: inference.networking.k8s.io, kind: InferencePool}}]\n\
             ---\napiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: llama}}\n\
             spec: {{selector: {{matchLabels: {{app: llama}}}}, targetPorts: [{{number: {port}}}]}}\n{pods}"
        )
    };
    let served = |gw_port| async move {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(served_by(gw_port, "llama").await.unwrap_or_default());
        }
        seen
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
    let cla_only = vec![(TypeUrl::ClusterLoadAssignment, vec!["pool/default/llama".to_string()])];

    write_atomic(
        &file,
        config(&(pod("p0", "llama", "127.0.0.2") + &pod("p1", "other", "127.0.0.3"))),
    );
    let mut gw = start_gateway(dir.path(), listen, false, "pods").await;
    let only_p0: std::collections::BTreeSet<String> = set(&["P0"]);
    eventually(30, "P0 serves", || async { (served(gw.port).await == only_p0).then_some(()) })
        .await;

    // Relabelled into the pool: both serve.
    let mark = gw.running.push_log.records().len();
    edit(
        &mut gw,
        &file,
        &config(&(pod("p0", "llama", "127.0.0.2") + &pod("p1", "llama", "127.0.0.3"))),
    )
    .await;
    let both: std::collections::BTreeSet<String> = set(&["P0", "P1"]);
    eventually(10, "P0 and P1 serve", || async { (served(gw.port).await == both).then_some(()) })
        .await;
    let pushed: Vec<(TypeUrl, Vec<String>)> = gw.running.push_log.records()[mark..]
        .iter()
        .map(|p| (p.type_url, p.names.clone()))
        .collect();
    assert_eq!(pushed, cla_only);

    // A pod gone: the other serves alone.
    let mark = gw.running.push_log.records().len();
    edit(&mut gw, &file, &config(&pod("p1", "llama", "127.0.0.3"))).await;
    let only_p1: std::collections::BTreeSet<String> = set(&["P1"]);
    eventually(10, "P1 alone serves", || async {
        (served(gw.port).await == only_p1).then_some(())
    })
    .await;
    let pushed: Vec<(TypeUrl, Vec<String>)> = gw.running.push_log.records()[mark..]
        .iter()
        .map(|p| (p.type_url, p.names.clone()))
        .collect();
    assert_eq!(pushed, cla_only);
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// Two aixds replicas (127.0.0.1 and 127.0.0.2, same port) behind one Envoy, as a deployment
/// runs them: killing one keeps traffic flowing through the other; with both gone Envoy keeps
/// its last config (and fails requests closed, since nothing can translate them); a replica
/// that returns resyncs Envoy to the manifests as they are now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_keeps_serving_while_aixds_restarts() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let port = free_port();
    write_atomic(&file, manifests(port, &[("m", vec![("a", a.addr, 1)])]));
    let xds_port = free_port();
    let replica = |ip: &str| aixds_replica(dir.path(), ip, xds_port, &[]);
    let mut first = replica("127.0.0.1");
    let mut second = replica("127.0.0.2");
    let admin = free_port();
    let _envoy = start_envoy(&BootstrapOptions {
        xds_address: format!("127.0.0.1:{xds_port},127.0.0.2:{xds_port}"),
        node_id: "restart".into(),
        admin_port: admin,
        ..Default::default()
    });
    eventually(30, "m served by A", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;

    // One replica gone: the other takes over within the health check interval, and from then
    // on every request is served.
    first.kill().await.unwrap();
    eventually(15, "the remaining replica serves", || async {
        (served_by(port, "m").await == Ok("A".into())).then_some(())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(served_by(port, "m").await, Ok("A".into()), "served by the other replica");
    }

    // Both gone: Envoy keeps its last config while the manifests change underneath.
    second.kill().await.unwrap();
    write_atomic(&file, manifests(port, &[("m", vec![("b", b.addr, 1)])]));
    let dump = admin_get(admin, "/config_dump").await;
    assert!(dump.contains("aisb/default/a") && !dump.contains("aisb/default/b"));
    assert_eq!(served_by(port, "m").await, Err(503), "nothing can translate without aixds");

    let mut back = replica("127.0.0.1");
    eventually(30, "m moves to B after aixds returns", || async {
        (served_by(port, "m").await == Ok("B".into())).then_some(())
    })
    .await;
    assert_eq!(rejected_updates(admin).await, 0);
    back.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_object_never_reaches_envoy() {
    let a = Upstream::start("A").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bad_ip: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let text = manifests(port, &[("m", vec![("a", a.addr, 1)]), ("bad", vec![("bad", bad_ip, 1)])])
        .replace("address: \"127.0.0.1\", port: 1}", "address: \"not-an-ip\", port: 1}");
    assert!(text.contains("not-an-ip"));
    write_atomic(dir.path().join("gateway.yaml"), text);
    let gw = start_gateway(dir.path(), port, false, "invalid").await;
    eventually(30, "m served", || async { served_by(gw.port, "m").await.ok() }).await;
    assert_eq!(
        served_by(gw.port, "bad").await,
        Err(404),
        "the rule with no valid backend is left out"
    );
    let dump = admin_get(gw.admin, "/config_dump").await;
    assert!(dump.contains("aisb/default/a") && !dump.contains("aisb/default/bad"));
    assert_eq!(rejected_updates(gw.admin).await, 0);
    gw.running.shutdown().await;
}

/// Waits until Envoy has every resource aixds publishes, then checks that it rejected none.
async fn accepted_by_envoy(gw: &Gateway, what: &str) {
    let expected = gw.running.store.load();
    eventually(30, "Envoy has every listener and cluster", || async {
        let dump = try_admin_get(gw.admin, "/config_dump?include_eds").await.ok()?;
        let all = TypeUrl::ALL.iter().all(|t| {
            expected.resources(*t).keys().all(|name| dump.contains(&format!("\"{name}\"")))
        });
        all.then_some(())
    })
    .await;
    assert!(!expected.resources(TypeUrl::Cluster).is_empty(), "{what}");
    assert_eq!(rejected_updates(gw.admin).await, 0, "{what}");
}

/// Our own manifests in the upstream shapes (tests/fixtures/manifests/) are accepted by a live
/// Envoy: every resource type is ACKed and nothing is rejected. Their Gateways listen on a free
/// port instead of 8080.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_sets_are_accepted_by_envoy() {
    for set in ["basic", "inference-pool"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        for entry in std::fs::read_dir(fixture_dir(set)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("      port: 8080\n", &format!("      port: {port}\n"));
            std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
        }
        let gw = start_gateway(dir.path(), port, false, &format!("fixtures-{set}")).await;
        accepted_by_envoy(&gw, set).await;
        let listeners = admin_get(gw.admin, "/config_dump?resource=dynamic_listeners").await;
        assert!(listeners.contains(&format!("\"port_value\": {port}")), "{set}: {listeners}");
        gw.running.shutdown().await;
    }
}

/// The upstream examples as their authors wrote them (Gateways on port 80) are accepted by a
/// live Envoy: every resource type is ACKed and nothing is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_examples_are_accepted_by_envoy() {
    let Some(compat) = compat_dir() else { return };
    let sets: [&[&str]; 2] = [
        &[
            "basic-basic.yaml",
            "basic-openai.yaml",
            "basic-anthropic.yaml",
            "basic-azure_openai.yaml",
            "basic-anthropic-openai-local.yaml",
        ],
        &["inference-pool-base.yaml", "inference-pool-aigwroute.yaml"],
    ];
    for (i, files) in sets.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(compat.join(f), dir.path().join(f)).unwrap();
        }
        let gw = start_gateway(dir.path(), 0, false, &format!("compat-{i}")).await;
        accepted_by_envoy(&gw, &format!("set {files:?}")).await;
        gw.running.shutdown().await;
    }
}
