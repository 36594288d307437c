//! The admin HTTP server and the debug views: golden JSON/DOT of a graph with a missing pool,
//! every endpoint over a real socket, `/metrics` through a Prometheus text parser, a real Envoy
//! NACK traced to its source objects, and the HTML page in headless Chromium.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aixds::api::ObjectKey;
use aixds::compile::CompileOptions;
use aixds::graph::export::{self, View};
use aixds::run::{RunOptions, Running};
use aixds::xds::{Resource, TypeUrl, Update};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Node, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;

use crate::envoy::{manifests, start_gateway};
use crate::golden::golden;
use crate::harness::*;
use crate::manifests::fixture_dir;

/// A route to a pool that does not exist and to a backend that resolves.
const MISSING_POOL: &str = "\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: default}
spec:
  rules:
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: m0}]}]
    backendRefs: [{name: gone, group: inference.networking.k8s.io, kind: InferencePool}]
  - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: m1}]}]
    backendRefs: [{name: b}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: b, namespace: default}
spec:
  schema: {name: OpenAI}
  backendRef: {name: b-backend, group: gateway.envoyproxy.io, kind: Backend}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b-backend, namespace: default}
spec:
  endpoints: [{ip: {address: 10.0.0.1, port: 8080}}]
";

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

fn write_missing_pool() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    write_atomic(&file, MISSING_POOL);
    (dir, file)
}

#[test]
fn graph_json_and_dot_are_golden_with_a_missing_pool() {
    let (dir, _) = write_missing_pool();
    let loaded = aixds::cli::load(vec![dir.path().to_path_buf()]).unwrap();
    let json = serde_json::to_string_pretty(&export::to_json(&loaded.graph)).unwrap() + "\n";
    golden("graph-missing-pool.json", &json);
    golden("graph-missing-pool.dot", &export::to_dot(&loaded.graph));

    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pool = value["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key"] == "InferencePool/default/gone")
        .expect("placeholder node");
    assert_eq!(pool["placeholder"], true);
    let route = value["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "r").unwrap();
    assert!(
        route["conditions"].as_array().unwrap().iter().any(|c| c["status"] == "False"
            && c["reason"] == "BackendNotFound"
            && c["message"] == "InferencePool default/gone not found"),
        "{route}"
    );
}

#[test]
fn focus_narrows_to_the_neighbourhood_both_ways() {
    let (dir, _) = write_missing_pool();
    let loaded = aixds::cli::load(vec![dir.path().to_path_buf()]).unwrap();
    let names = |view: &View| -> Vec<String> {
        view.nodes(&loaded.graph).iter().map(|n| n.key.to_string()).collect()
    };
    let one = View::focus(&loaded.graph, &key("AIServiceBackend/default/b"), 1).unwrap();
    assert_eq!(
        names(&one),
        ["AIGatewayRoute/default/r", "AIServiceBackend/default/b", "Backend/default/b-backend"]
    );
    let json = export::to_json_view(&loaded.graph, &one);
    assert_eq!(json.edges.len(), 2, "the edge to the pool is outside the view");
    let two = View::focus(&loaded.graph, &key("AIServiceBackend/default/b"), 2).unwrap();
    assert_eq!(names(&two).len(), 4);
    let zero = View::focus(&loaded.graph, &key("Backend/default/b-backend"), 0).unwrap();
    assert_eq!(names(&zero), ["Backend/default/b-backend"]);
    assert!(View::focus(&loaded.graph, &key("Backend/default/nope"), 1).is_err());
}

/// aixds without Envoy, admin on a free port.
pub(crate) async fn start_plain(dir: &Path) -> Running {
    aixds::run::start(RunOptions {
        source: aixds::source::SourceOptions::Files(vec![dir.to_path_buf()]),
        grpc: Some(insecure_loopback()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        compile: CompileOptions {
            listener_address: "127.0.0.1".into(),
            default_port: 1975,
            access_log: None,
            picker_client_cert: None,
            ratelimit_fail_closed: false,
            xff_trusted_hops: 0,
            controller_name: None,
        },
        envoy: None,
        extproc: Default::default(),
        picker: None,
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ratelimit: Default::default(),
        drain: Default::default(),
    })
    .await
    .expect("aixds starts")
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr.port(), "GET", path, &[], "").await.expect("admin answers")
}

async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer() {
    let (dir, _) = write_missing_pool();
    let running = start_plain(dir.path()).await;
    let admin = running.admin_addr.expect("admin address");

    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(get(admin, "/readyz").await.status, 200);

    let graph = get_json(admin, "/debug/graph").await;
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(graph["edges"].as_array().unwrap().len(), 3);
    let dot = get(admin, "/debug/graph?format=dot").await;
    assert_eq!(dot.status, 200);
    let loaded = aixds::cli::load(vec![dir.path().to_path_buf()]).unwrap();
    assert_eq!(dot.body, export::to_dot(&loaded.graph), "same DOT as the CLI");
    let focused = get_json(admin, "/debug/graph?focus=InferencePool/default/gone&depth=1").await;
    let keys: Vec<&str> =
        focused["nodes"].as_array().unwrap().iter().map(|n| n["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["AIGatewayRoute/default/r", "InferencePool/default/gone"]);
    assert_eq!(get(admin, "/debug/graph?focus=Pod/default/nope").await.status, 404);
    assert_eq!(get(admin, "/debug/graph?focus=nonsense").await.status, 400);
    assert_eq!(get(admin, "/debug/graph?format=svg").await.status, 400);
    let html = get(admin, "/debug/graph?format=html").await;
    assert_eq!(html.status, 200);
    assert!(html.body.contains("AIGatewayRoute/default/r"));
    assert!(!html.body.contains(" src=") && !html.body.contains("<link"), "nothing to fetch");

    let xds = get_json(admin, "/debug/xds").await;
    let clusters = &xds["types"][0];
    assert_eq!(clusters["type_url"], "Cluster");
    assert_eq!(clusters["resources"][0]["name"], "aisb/default/b");
    assert!(clusters["resources"][0]["size"].as_u64().unwrap() > 0);
    let one = get_json(admin, "/debug/xds?type=Cluster&name=aisb/default/b").await;
    assert_eq!(
        one["sources"],
        serde_json::json!(["AIServiceBackend/default/b", "Backend/default/b-backend"])
    );
    assert_eq!(one["version"], clusters["resources"][0]["version"]);
    assert_eq!(get(admin, "/debug/xds?type=Cluster&name=nope").await.status, 404);
    assert_eq!(get(admin, "/debug/xds?type=VirtualHost").await.status, 400);
    let secrets = get_json(admin, "/debug/xds?type=Secret").await;
    assert_eq!(secrets["types"][0]["resources"], serde_json::json!([]), "no listener serves one");

    let explain = get(admin, "/debug/explain?object=AIGatewayRoute/default/r").await;
    assert!(
        explain.body.contains("backendRef -> InferencePool/default/gone [missing]"),
        "{}",
        explain.body
    );
    assert!(explain.body.contains("RouteConfiguration route-1975"), "{}", explain.body);
    running.shutdown().await;
}

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format (0.0.4) strictly enough to catch what a scraper would reject: every
/// sample belongs to a family declared by `# TYPE` before it, names and labels are well formed,
/// values are numbers, histogram buckets are cumulative and end with `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err("unknown type"));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(err("family declared twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                _ => return Err(err("bad comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| err("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').ok_or_else(|| err("bad label"))?;
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    let v = v.ok_or_else(|| err("unquoted label value"))?;
                    if !valid_name(k) || v.contains('"') {
                        return Err(err("bad label"));
                    }
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(err("bad metric name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err("sample before its # TYPE"));
        }
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        // One series per label set (less `le`), each cumulative and ending with +Inf = _count.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<&Sample>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut labels = s.labels.clone();
            labels.remove("le").ok_or_else(|| format!("{family}: bucket without le"))?;
            series.entry(labels).or_default().push(s);
        }
        for (labels, buckets) in series {
            if !buckets.windows(2).all(|w| w[0].value <= w[1].value) {
                return Err(format!("{family}{labels:?}: buckets are not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.labels.get("le").is_some_and(|l| l == "+Inf"));
            let count =
                samples.iter().find(|s| s.name == format!("{family}_count") && s.labels == labels);
            match (inf, count) {
                (Some(inf), Some(count)) if inf.value == count.value => {}
                _ => return Err(format!("{family}{labels:?}: +Inf bucket missing or not _count")),
            }
        }
    }
    Ok(samples)
}

fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels.len() == s.labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    parse_prometheus(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

#[test]
fn the_parser_rejects_what_a_scraper_would() {
    assert!(parse_prometheus("x 1\n").is_err(), "no TYPE");
    assert!(parse_prometheus("# TYPE x counter\nx{a=b} 1\n").is_err(), "unquoted");
    assert!(parse_prometheus("# TYPE x counter\nx one\n").is_err(), "not a number");
    let h =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    assert!(parse_prometheus(h).is_err(), "not cumulative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_a_change() {
    let (dir, file) = write_missing_pool();
    let running = start_plain(dir.path()).await;
    let admin = running.admin_addr.unwrap();
    let before = scrape(admin).await;
    assert_eq!(metric(&before, "aixds_batches_applied_total", &[]), 0.0);
    assert_eq!(metric(&before, "aixds_compile_seconds_count", &[]), 1.0, "the initial compile");
    assert_eq!(metric(&before, "aixds_graph_nodes", &[]), 4.0);
    assert_eq!(metric(&before, "aixds_graph_placeholders", &[]), 1.0);
    assert_eq!(metric(&before, "aixds_graph_edges", &[]), 3.0);
    assert_eq!(metric(&before, "aixds_xds_connected_streams", &[("kind", "delta")]), 0.0);
    assert_eq!(metric(&before, "aixds_snapshot_resources", &[("type", "Cluster")]), 1.0);

    // The pool appears: the placeholder fills in and a batch is applied.
    let pool = "---\napiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
        metadata: {name: gone, namespace: default}\nspec:\n  selector: {matchLabels: {app: x}}\n\
        \x20 targetPorts: [{number: 8000}]\n  endpointPickerRef: {name: epp, port: {number: 9002}}\n";
    write_atomic(&file, format!("{MISSING_POOL}{pool}"));
    // A late event of the file's first write may bring a batch of its own first: wait for the
    // edit's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = scrape(admin).await;
        if metric(&now, "aixds_graph_nodes", &[]) > 4.0 {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "the edit is applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let batches = metric(&after, "aixds_batches_applied_total", &[]);
    assert!(batches >= 1.0, "{batches}");
    assert_eq!(metric(&after, "aixds_compile_seconds_count", &[]), batches + 1.0);
    assert_eq!(metric(&after, "aixds_graph_placeholders", &[]), 1.0, "now the epp Service");
    assert!(
        metric(&after, "aixds_snapshot_revision", &[])
            > metric(&before, "aixds_snapshot_revision", &[])
    );
    running.shutdown().await;
}

/// Makes a compiled cluster one Envoy must reject, the way only a control plane bug could: a
/// negative connect timeout. Published straight into the store, so it carries the real sources
/// and no test hook lives in the compiler.
pub(crate) fn break_cluster(running: &Running, name: &str) -> (Resource, Update) {
    let snapshot = running.store.load();
    let good = snapshot.get(TypeUrl::Cluster, name).expect("cluster compiled").as_ref().clone();
    let mut cluster = Cluster::decode(good.body.value.as_slice()).unwrap();
    cluster.connect_timeout =
        Some(envoy_types::pb::google::protobuf::Duration { seconds: 0, nanos: 0 });
    let bad = Resource::new(name.into(), &cluster, good.sources.clone());
    (good, Update { type_url: TypeUrl::Cluster, name: name.into(), resource: Some(bad) })
}

async fn nack_traced(sotw: bool) {
    let a = Upstream::start("A").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Two clusters, so that a SotW response carries both and only the one Envoy names is blamed.
    let rules = [("m", vec![("a", a.addr, 1)]), ("n", vec![("b", a.addr, 1)])];
    write_atomic(dir.path().join("gateway.yaml"), manifests(port, &rules));
    let node_id = if sotw { "nack-sotw" } else { "nack-delta" };
    let gw = start_gateway(dir.path(), port, sotw, node_id).await;
    let admin = gw.running.admin_addr.unwrap();
    eventually(30, "m served", || async { served_by(gw.port, "m").await.ok() }).await;
    let before = scrape(admin).await;
    let kind = if sotw { "sotw" } else { "delta" };
    assert_eq!(metric(&before, "aixds_xds_connected_streams", &[("kind", kind)]), 1.0);
    assert!(metric(&before, "aixds_xds_pushes_total", &[("type", "Cluster")]) >= 1.0);
    assert_eq!(metric(&before, "aixds_xds_nacks_total", &[("type", "Cluster")]), 0.0);

    let (good, bad) = break_cluster(&gw.running, "aisb/default/a");
    gw.running.store.publish(vec![bad]);
    let rejections = eventually(20, "Envoy's NACK in /debug/xds", || async {
        let xds = get_json(admin, "/debug/xds").await;
        let rejections = xds["rejections"].as_array().cloned().unwrap_or_default();
        (!rejections.is_empty()).then_some(rejections)
    })
    .await;
    assert_eq!(rejections.len(), 1, "only the broken cluster: {rejections:?}");
    let rejection = &rejections[0];
    assert_eq!(rejection["node_id"], node_id);
    assert_eq!(rejection["resource"], "aisb/default/a");
    assert_eq!(
        rejection["sources"],
        serde_json::json!(["AIServiceBackend/default/a", "Backend/default/a"])
    );
    let error = rejection["error"].as_str().unwrap().to_string();
    assert!(error.contains("aisb/default/a"), "Envoy names the cluster: {error}");
    assert!(error.contains("ConnectTimeout"), "Envoy says what is wrong: {error}");

    // The connected Envoy in /debug/xds carries the same error as its last NACK.
    let xds = get_json(admin, "/debug/xds").await;
    let client = &xds["clients"][0];
    assert_eq!(client["node_id"], node_id);
    assert_eq!(client["kind"], if sotw { "Sotw" } else { "Delta" });
    let cds =
        client["types"].as_array().unwrap().iter().find(|t| t["type_url"] == "Cluster").unwrap();
    assert_eq!(cds["last_nack"]["error"], error.as_str());
    let one = get_json(admin, "/debug/xds?type=Cluster&name=aisb/default/a").await;
    assert_eq!(one["rejections"][0]["error"], error.as_str());
    assert_eq!(one["envoys"][0]["state"], "Rejected");

    // The error is on the source objects, and only on them.
    let graph = get_json(admin, "/debug/graph").await;
    let expected = format!("{node_id}: {error}");
    for node in graph["nodes"].as_array().unwrap() {
        let rejected = node["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["reason"] == "RejectedByEnvoy");
        let is_source = ["AIServiceBackend/default/a", "Backend/default/a"]
            .contains(&node["key"].as_str().unwrap());
        match rejected {
            Some(c) => {
                assert!(is_source, "{node}");
                assert_eq!((&c["type"], &c["status"]), (&"Accepted".into(), &"False".into()));
                assert_eq!(c["message"], expected.as_str());
            }
            None => assert!(!is_source, "{node} should carry the rejection"),
        }
    }
    let dot = get(admin, "/debug/graph?format=dot&focus=Backend/default/a&depth=0").await;
    assert!(dot.body.contains("color=red"), "{}", dot.body);
    let explain = get(admin, "/debug/explain?object=AIServiceBackend/default/a").await.body;
    assert!(explain.contains("RejectedByEnvoy") && explain.contains(&error), "{explain}");
    assert!(explain.contains(&format!("{node_id}: REJECTED")), "{explain}");
    let after = scrape(admin).await;
    assert!(metric(&after, "aixds_xds_nacks_total", &[("type", "Cluster")]) >= 1.0);
    assert!(
        metric(&after, "aixds_xds_pushes_total", &[("type", "Cluster")])
            > metric(&before, "aixds_xds_pushes_total", &[("type", "Cluster")])
    );
    assert_eq!(metric(&after, "aixds_envoy_rejections", &[]), 1.0);

    // Fixed: the rejection no longer stands and Envoy ACKs the good version again.
    gw.running.store.publish(vec![Update {
        type_url: TypeUrl::Cluster,
        name: good.name.clone(),
        resource: Some(good),
    }]);
    eventually(20, "the rejection clears and Envoy ACKs", || async {
        let one = get_json(admin, "/debug/xds?type=Cluster&name=aisb/default/a").await;
        (one["rejections"].as_array().unwrap().is_empty() && one["envoys"][0]["state"] == "Acked")
            .then_some(())
    })
    .await;
    let graph = get(admin, "/debug/graph").await.body;
    assert!(!graph.contains("RejectedByEnvoy"));
    // The good version was ACKed before, so "Acked" may show before Envoy answers the push.
    let cluster = [("type", "Cluster")];
    let last = eventually(10, "the fix's ACK is timed", || async {
        let m = scrape(admin).await;
        (metric(&m, "aixds_xds_ack_latency_seconds_count", &cluster) >= 1.0).then_some(m)
    })
    .await;
    assert!(metric(&last, "aixds_xds_push_latency_seconds_count", &cluster) >= 2.0);
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_is_traced_to_its_source_objects() {
    nack_traced(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nack_is_traced_to_its_source_objects() {
    nack_traced(true).await;
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "chromium".into())
}

/// Runs headless Chromium on `url` with every host name unresolvable (so the page must need no
/// network) and returns its stdout.
async fn chromium_run(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("run chromium (bash hack/install.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_page_works_in_headless_chromium() {
    let (dir, _) = write_missing_pool();
    let running = start_plain(dir.path()).await;
    let admin = running.admin_addr.unwrap();
    let page = get(admin, "/debug/graph?format=html").await.body;
    running.shutdown().await;
    // Saved to a file and opened from there: nothing is fetched from anywhere.
    let saved = dir.path().join("graph.html");
    std::fs::write(&saved, &page).unwrap();
    let url = format!("file://{}", saved.display());

    let dom = chromium_run(&format!("{url}#search=gone"), &["--dump-dom"]).await;
    assert_eq!(dom.matches("<g class=\"node ").count(), 4, "every node is drawn");
    assert_eq!(dom.matches("<path class=\"edge").count(), 3, "every reference is drawn");
    assert!(
        dom.contains(
            "<g class=\"node placeholder selected\" id=\"node-InferencePool/default/gone\""
        ),
        "search found and selected the placeholder"
    );
    assert!(dom.contains("<h2 id=\"selected-key\">InferencePool/default/gone</h2>"));
    assert!(dom.contains("Placeholder: referenced, but no such object exists."));
    assert!(
        dom.contains(
            "data-key=\"AIGatewayRoute/default/r\">AIGatewayRoute/default/r</a> backendRef"
        ),
        "referrer listed"
    );

    let dom =
        chromium_run(&format!("{url}#select=AIGatewayRoute/default/r"), &["--dump-dom"]).await;
    assert!(dom.contains("class=\"node failing selected\" id=\"node-AIGatewayRoute/default/r\""));
    assert!(
        dom.contains("<td>BackendNotFound</td><td>InferencePool default/gone not found</td>"),
        "conditions shown"
    );
    assert!(dom.contains("<td>RouteConfiguration</td><td>route-1975</td>"), "resources shown");
    assert!(dom.contains("class=\"node ok\" id=\"node-AIServiceBackend/default/b\""));

    let artifacts = repo().join("e2e/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("debug-graph.png");
    let _ = std::fs::remove_file(&shot);
    chromium_run(
        &format!("{url}#select=AIGatewayRoute/default/r"),
        &["--window-size=1500,700", &format!("--screenshot={}", shot.display())],
    )
    .await;
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "screenshot saved");
}

/// A Gateway with an HTTPS listener serving the Secret `tls-cert`.
const HTTPS_GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: https, namespace: default}
spec:
  gatewayClassName: aixds
  listeners:
  - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: tls-cert}]}}
";

/// Subscribes to the SDS Secret `name` as Envoy does (delta ADS, by name), ACKs it, and
/// returns the private key it was sent; the stream stays open, so the Envoy is listed.
async fn fetch_private_key(
    xds: SocketAddr,
    name: &str,
) -> (Vec<u8>, tokio::sync::mpsc::Sender<DeltaDiscoveryRequest>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
    let mut responses = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node { id: "sds-envoy".into(), ..Default::default() }),
        type_url: TypeUrl::Secret.as_str().into(),
        resource_names_subscribe: vec![name.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let response = responses.message().await.unwrap().expect("a response");
    tx.send(DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = response.resources[0].resource.as_ref().expect("a body");
    let secret = Secret::decode(body.value.as_slice()).unwrap();
    let Some(secret::Type::TlsCertificate(certificate)) = secret.r#type else {
        panic!("not a certificate: {secret:?}")
    };
    let key = match certificate.private_key.and_then(|k| k.specifier) {
        Some(data_source::Specifier::InlineBytes(bytes)) => bytes,
        other => panic!("{other:?}"),
    };
    (key, tx)
}

/// The base64 lines of a PEM private key.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines().filter(|l| !l.starts_with("-----")).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_serves_a_secret_value() {
    // Each placeholder key of the fixtures becomes a value that must never be served.
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(fixture_dir("basic")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for provider in ["openai", "anthropic", "azure"] {
            let secret = format!("sk-test-SECRET-{provider}-123");
            if text.contains(&format!("placeholder-{provider}-key")) {
                text = text.replace(&format!("placeholder-{provider}-key"), &secret);
                secrets.push(secret);
            }
        }
        write_atomic(dir.path().join(path.file_name().unwrap()), text);
    }
    assert_eq!(secrets.len(), 3, "{secrets:?}");
    let (crt, key) = &crate::sds::PAIRS[1];
    let tls = crate::sds::tls_secret_yaml("default", "tls-cert", crt, key);
    write_atomic(dir.path().join("https.yaml"), format!("{HTTPS_GATEWAY}---\n{tls}"));
    let running = start_plain(dir.path()).await;
    let admin = running.admin_addr.unwrap();

    // The key is served over SDS, to an Envoy that asks for it by name.
    let (served, _stream) =
        fetch_private_key(running.xds_addr.unwrap(), "secret/default/tls-cert").await;
    let served = String::from_utf8(served).unwrap();
    let private = key_lines(key);
    // The key's first line as JSON or Debug would print bytes: numbers with "," or ", ".
    let numbers: Vec<String> = private[0].bytes().map(|b| b.to_string()).collect();
    let private_as_numbers = [numbers.join(","), numbers.join(", ")];
    assert_eq!(key_lines(&served).concat(), private.concat(), "the key Envoy gets");
    let xds = get_json(admin, "/debug/xds?type=Secret&name=secret/default/tls-cert").await;
    assert_eq!(xds["sources"], serde_json::json!(["Secret/default/tls-cert"]));

    let graph = get_json(admin, "/debug/graph").await;
    let mut paths: Vec<String> =
        ["/metrics", "/debug/graph", "/debug/graph?format=dot", "/debug/graph?format=html"]
            .map(String::from)
            .to_vec();
    paths.push("/debug/xds".into());
    for node in graph["nodes"].as_array().unwrap() {
        paths.push(format!("/debug/explain?object={}", node["key"].as_str().unwrap()));
    }
    let xds = get_json(admin, "/debug/xds").await;
    for t in xds["types"].as_array().unwrap() {
        for r in t["resources"].as_array().unwrap() {
            paths.push(format!(
                "/debug/xds?type={}&name={}",
                t["type_url"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            ));
        }
    }
    assert!(paths.len() > 10, "{paths:?}");
    assert!(paths.iter().any(|p| p.contains("type=Secret&name=secret/default/tls-cert")));
    assert!(paths.iter().any(|p| p.contains("Secret/default/tls-cert")), "{paths:?}");
    let clients = get(admin, "/debug/xds").await.body;
    assert!(clients.contains("sds-envoy") && clients.contains("secret/default/tls-cert"));
    for path in paths {
        let r = get(admin, &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        for secret in &secrets {
            assert!(!r.body.contains(secret), "{path} serves {secret}");
        }
        for line in &private {
            assert!(!r.body.contains(line.as_str()), "{path} serves the private key");
        }
        for bytes in &private_as_numbers {
            assert!(!r.body.contains(bytes.as_str()), "{path} serves the private key's bytes");
        }
    }
    running.shutdown().await;
}
