//! Object change at the Kubernetes API server → the new config ACKed by a real Envoy.
//!
//! Starts the test API server of the integration tests (`tests/it/kubeapi.rs`) holding N objects
//! (units of AIGatewayRoute + AIServiceBackend + Backend, one Gateway), `aixds` with the
//! Kubernetes source, and an Envoy (`.venv/bin/envoy` or `$ENVOY_BIN`). Each edit changes one
//! Backend's endpoint port at the API server and waits until Envoy has ACKed the
//! ClusterLoadAssignment compiled from it: watch event, debounce, graph, compile, publish, push,
//! Envoy applies and ACKs. Prints the median, p90 and max per size.
//!
//! `cargo bench --bench kube` (sizes from `AIXDS_BENCH_OBJECTS`, default `1000,10000`; edits per
//! size from `AIXDS_BENCH_EDITS`, default 30; `AIXDS_BENCH_GAP_MS`, default 0, waits that long
//! after each ACK before the next edit: with no gap every edit comes within the debounce's quiet
//! time of the last batch, which then waits the quiet time as for a writer that never stops; a
//! gap longer than it measures an edit on its own).

#[allow(dead_code)]
#[path = "../tests/it/kubeapi.rs"]
mod kubeapi;

use std::time::{Duration, Instant};

use aixds::bootstrap::BootstrapOptions;
use aixds::compile::CompileOptions;
use aixds::kube::KubeOptions;
use aixds::run::{EnvoyOptions, RunOptions, Running};
use aixds::source::SourceOptions;
use aixds::xds::TypeUrl;
use serde_json::json;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn backend(i: usize, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
        "metadata": {"name": format!("u{i}"), "namespace": "default"},
        "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]},
    })
}

fn load(api: &kubeapi::TestApi, units: usize, listener_port: u16) {
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "aixds",
                 "listeners": [{"name": "http", "protocol": "HTTP", "port": listener_port}]},
    }));
    for i in 0..units {
        api.apply(json!({
            "apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIGatewayRoute",
            "metadata": {"name": format!("u{i}"), "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
                "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model",
                                          "value": format!("model-{i}")}]}],
                "backendRefs": [{"name": format!("u{i}")}],
            }]},
        }));
        api.apply(json!({
            "apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIServiceBackend",
            "metadata": {"name": format!("u{i}"), "namespace": "default"},
            "spec": {"schema": {"name": "OpenAI"},
                     "backendRef": {"name": format!("u{i}"), "group": "gateway.envoyproxy.io",
                                    "kind": "Backend"}},
        }));
        api.apply(backend(i, 10_000));
    }
}

/// The version of `name` Envoy has ACKed, if any.
fn acked(running: &Running, name: &str) -> Option<String> {
    running.clients.list().iter().find_map(|c| {
        c.types
            .iter()
            .find(|t| t.type_url == TypeUrl::ClusterLoadAssignment)
            .and_then(|t| t.acked.get(name).cloned())
    })
}

async fn wait_acked(running: &Running, name: &str, not: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(v) = acked(running, name)
            && Some(v.as_str()) != not
        {
            let served = running.store.load();
            let current =
                served.get(TypeUrl::ClusterLoadAssignment, name).map(|r| r.version.clone());
            if current.as_deref() == Some(v.as_str()) {
                return started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{name} never ACKed");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn run(objects: usize, edits: usize, gap: Duration) {
    let units = objects / 3;
    let api = kubeapi::TestApi::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    drop(listener);
    load(&api, units, port);
    let envoy = std::env::var_os("ENVOY_BIN").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy")
    });
    let started = Instant::now();
    let running = aixds::run::start(RunOptions {
        source: SourceOptions::Kubernetes(Box::new(KubeOptions {
            config: Some(api.config()),
            ..Default::default()
        })),
        grpc: None,
        admin_listen: None,
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
        envoy: Some(EnvoyOptions {
            binary: envoy,
            bootstrap: BootstrapOptions {
                node_id: "bench".into(),
                admin_port: admin,
                ..Default::default()
            },
            log_level: "error".into(),
            concurrency: Some(1),
        }),
        extproc: Default::default(),
        debounce: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(200),
        ratelimit: Default::default(),
        drain: Default::default(),
    })
    .await
    .expect("aixds starts");
    let last = format!("aisb/default/u{}", units - 1);
    wait_acked(&running, &last, None).await;
    println!(
        "{objects} objects ({units} units): listed, compiled and ACKed by Envoy in {:?}",
        started.elapsed()
    );

    let mut took = Vec::with_capacity(edits);
    for e in 0..edits {
        let i = (e * 7919) % units;
        let name = format!("aisb/default/u{i}");
        let before = acked(&running, &name);
        api.apply(backend(i, 10_001 + e as u16));
        took.push(wait_acked(&running, &name, before.as_deref()).await);
        tokio::time::sleep(gap).await;
    }
    took.sort();
    let pct = |p: usize| took[(took.len() - 1) * p / 100];
    println!(
        "{objects} objects: Backend change at the API server → ACKed by Envoy over {edits} edits: \
         median {:?}, p90 {:?}, max {:?} (debounce 20 ms, {gap:?} between edits)",
        pct(50),
        pct(90),
        took[took.len() - 1]
    );
    running.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let edits = env_list("AIXDS_BENCH_EDITS", &[30])[0].max(1);
    let gap = Duration::from_millis(env_list("AIXDS_BENCH_GAP_MS", &[0])[0] as u64);
    for objects in env_list("AIXDS_BENCH_OBJECTS", &[1000, 10_000]) {
        runtime.block_on(run(objects.max(3), edits, gap));
    }
}
