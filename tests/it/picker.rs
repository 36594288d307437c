//! The endpoint picker with a real Envoy: a static config made from the picker builders
//! (listener → route → pool filter → pool cluster with `override_host`), model-server
//! simulators (`e2e/modelserver.py`) on 127.0.0.2/127.0.0.3 standing in for pods, and aixds
//! serving the picker from manifests. Tests mirror the Gateway API Inference Extension
//! conformance cases of the same names where there is one.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aixds::api::{FailureMode, Kind, ObjectKey};
use aixds::compile::CompileOptions;
use aixds::compile::picker::{
    PICKER_FILTER, picker_cluster, picker_cluster_name, picker_filter, picker_on,
    pool_load_balancing,
};
use aixds::picker::PickerOptions;
use aixds::run::{RunOptions, Running};
use aixds::source::SourceOptions;
use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ExtProcPerRoute, ext_proc_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::util::pack_any;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::*;

const SERVED: &str = "x-gateway-destination-endpoint-served";
/// The picker's body limit in these tests: larger bodies are not waited for.
const MAX_BODY: usize = 256 * 1024;

fn pool_key() -> ObjectKey {
    ObjectKey::new(Kind::InferencePool, "default", "pool")
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
            ..Default::default()
        })),
    }
}

/// A static Envoy config: a listener on 127.0.0.1:`port` whose one route sends everything to the
/// pool's cluster of `endpoints` through the pool's picker filter, the picker at `picker`; with
/// no failure mode, the route leaves the filter off (plain round robin, for comparison).
fn envoy_config(
    port: u16,
    admin: u16,
    endpoints: &[SocketAddr],
    picker: SocketAddr,
    failure_mode: Option<FailureMode>,
) -> Bootstrap {
    let pool = pool_key();
    let pool_cluster = "pool/default/pool";
    let picker_name = picker_cluster_name(&pool);
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(pool_cluster.into())),
            ..Default::default()
        })),
        typed_per_filter_config: [(
            PICKER_FILTER.to_string(),
            match failure_mode {
                Some(mode) => picker_on(&pool, &picker_name, "pool-epp.default:9002", mode),
                None => pack_any(ExtProcPerRoute {
                    r#override: Some(ext_proc_per_route::Override::Disabled(true)),
                }),
            },
        )]
        .into(),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "picker_test".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: "routes".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![route],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![
            picker_filter(),
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(
                    pack_any(Router::default()),
                )),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let listener = Listener {
        name: "listener".into(),
        address: Some(socket(SocketAddr::from(([127, 0, 0, 1], port)))),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let lb_endpoints = endpoints
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(*e)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let pool_cluster = Cluster {
        name: pool_cluster.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds: 2, nanos: 0 }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: pool_cluster.into(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
            ..Default::default()
        }),
        load_balancing_policy: Some(pool_load_balancing()),
        ..Default::default()
    };
    let picker_cluster =
        picker_cluster(&picker_name, &picker.ip().to_string(), picker.port(), false, None);
    Bootstrap {
        admin: Some(Admin {
            address: Some(socket(SocketAddr::from(([127, 0, 0, 1], admin)))),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners: vec![listener],
            clusters: vec![pool_cluster, picker_cluster],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn write_config(dir: &Path, config: &Bootstrap) -> std::path::PathBuf {
    // Envoy reads a `.pb` config as binary protobuf.
    let path = dir.join("envoy.pb");
    std::fs::write(&path, config.encode_to_vec()).unwrap();
    path
}

/// `envoy --mode validate` on `config`: its output when Envoy rejects it.
fn envoy_validate(config: &Bootstrap) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(write_config(dir.path(), config))
        .output()
        .expect("envoy runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn clusters(config: &mut Bootstrap) -> &mut Vec<Cluster> {
    &mut config.static_resources.as_mut().unwrap().clusters
}

#[test]
fn envoy_accepts_the_picker_builders() {
    let endpoints = ["127.0.0.2:8000".parse().unwrap(), "127.0.0.3:8000".parse().unwrap()];
    let picker = "127.0.0.1:9002".parse().unwrap();
    for mode in [FailureMode::FailOpen, FailureMode::FailClose] {
        envoy_validate(&envoy_config(10000, 10001, &endpoints, picker, Some(mode)))
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
    // A picker behind a Service name, over TLS.
    let mut config = envoy_config(10000, 10001, &endpoints, picker, Some(FailureMode::FailClose));
    clusters(&mut config)[1] = picker_cluster(
        &picker_cluster_name(&pool_key()),
        "pool-epp.default.svc.cluster.local",
        9002,
        true,
        None,
    );
    envoy_validate(&config).unwrap();
    // The check bites: without the pool's cluster, the route is refused.
    clusters(&mut config).remove(0);
    assert!(envoy_validate(&config).is_err());
}

/// One `e2e/modelserver.py`.
struct Sim {
    addr: SocketAddr,
    _child: Child,
}

impl Sim {
    async fn start(addr: SocketAddr, extra_waiting: u32) -> Sim {
        let extra_waiting = extra_waiting.to_string();
        Sim::spawn(addr, &["--token-latency", "0", "--extra-waiting", &extra_waiting]).await
    }

    async fn spawn(addr: SocketAddr, args: &[&str]) -> Sim {
        let mut child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("e2e/modelserver.py"))
            .args(["--host", &addr.ip().to_string(), "--port", &addr.port().to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start e2e/modelserver.py (run hack/install.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("simulator starts")
            .unwrap()
            .unwrap_or_else(|| panic!("simulator on {addr} exited (port taken?)"));
        assert_eq!(line, format!("listening on {addr}"));
        Sim { addr, _child: child }
    }

    /// Makes the simulator report `extra` more waiting requests than it holds.
    async fn set_waiting(&self, extra: u32) {
        let body = format!("{{\"extra\": {extra}}}");
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST /admin/waiting HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

/// aixds serving the picker for a pool of `pods` (name, IP, ready) on `ports`, and an Envoy in
/// front of `endpoints`, the picker at `picker` (aixds's when `None`).
struct Setup {
    running: Option<Running>,
    port: u16,
    _envoy: Child,
    _dir: tempfile::TempDir,
}

fn pool_manifests(pods: &[(&str, &str, bool)], ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("{{number: {p}}}")).collect();
    let mut out = format!(
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: pool}}\n\
         spec:\n  selector: {{matchLabels: {{app: sim}}}}\n  targetPorts: [{}]\n  \
         endpointPickerRef: {{name: pool-epp, port: {{number: 9002}}}}\n",
        ports.join(", ")
    );
    for (name, ip, ready) in pods {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: sim}}}}\n\
             status: {{podIP: \"{ip}\", conditions: [{{type: Ready, status: \"{}\"}}]}}\n",
            if *ready { "True" } else { "False" }
        ));
    }
    out
}

impl Setup {
    async fn start(
        manifests: Option<String>,
        endpoints: &[SocketAddr],
        failure_mode: Option<FailureMode>,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (running, picker) = match manifests {
            Some(manifests) => {
                write_atomic(dir.path().join("pool.yaml"), manifests);
                let running = aixds::run::start(RunOptions {
                    source: SourceOptions::Files(vec![dir.path().join("pool.yaml")]),
                    grpc: Some(insecure_loopback()),
                    admin_listen: None,
                    compile: CompileOptions::default(),
                    envoy: None,
                    extproc: Default::default(),
                    picker: Some(PickerOptions {
                        listen: "127.0.0.1:0".parse().unwrap(),
                        scrape_interval: Duration::from_millis(50),
                        max_body_bytes: MAX_BODY,
                        ..Default::default()
                    }),
                    debounce: Duration::from_millis(10),
                    max_delay: Duration::from_millis(100),
                    ratelimit: Default::default(),
                    drain: Default::default(),
                })
                .await
                .expect("aixds starts");
                let picker = running.picker_addr.expect("the picker is served");
                (Some(running), picker)
            }
            // Nothing listens there: the picker is down.
            None => (None, SocketAddr::from(([127, 0, 0, 1], free_port()))),
        };
        let (port, admin) = (free_port(), free_port());
        let config =
            write_config(dir.path(), &envoy_config(port, admin, endpoints, picker, failure_mode));
        let envoy = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--log-level", "error", "--disable-hot-restart", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("envoy starts");
        eventually(20, "Envoy ready", || async {
            try_admin_get(admin, "/ready").await.is_ok_and(|b| b.starts_with("LIVE")).then_some(())
        })
        .await;
        Setup { running, port, _envoy: envoy, _dir: dir }
    }

    /// Waits until the picker has scraped `endpoint` reporting `waiting` queued requests.
    async fn scraped(&self, endpoint: SocketAddr, waiting: f64) {
        let picker = self.running.as_ref().unwrap().picker.clone().unwrap();
        eventually(10, &format!("{endpoint} scraped with {waiting} waiting"), || {
            let m = picker.metrics(endpoint);
            async move { m.filter(|m| m.waiting == waiting).map(|_| ()) }
        })
        .await;
    }

    /// Sends `n` chat completions; returns the simulator endpoint that served each, checking
    /// that Envoy reported the same one as served.
    async fn served_by(&self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..n {
            let body = serde_json::json!({"model": "m",
                "messages": [{"role": "user", "content": format!("question {i}")}]});
            let r = request(self.port, "POST", "/v1/chat/completions", &[], &body.to_string())
                .await
                .expect("Envoy answers");
            assert_eq!(r.status, 200, "{}", r.body);
            let endpoint = r.headers["x-sim-endpoint"].clone();
            assert_eq!(r.headers.get(SERVED), Some(&endpoint), "served endpoint reported");
            assert!(
                r.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("Hello from {endpoint}"))
            );
            out.push(endpoint);
        }
        out
    }
}

fn all_equal(served: &[String], endpoint: SocketAddr) -> bool {
    served.iter().all(|s| *s == endpoint.to_string())
}

/// Mirrors `GatewayFollowingEPPRouting`: requests go where the picker says, here away from the
/// endpoint reporting a long queue, whichever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_following_epp_routing() {
    let port = free_port();
    let (a, b) =
        (SocketAddr::from(([127, 0, 0, 2], port)), SocketAddr::from(([127, 0, 0, 3], port)));
    let (sim_a, sim_b) = tokio::join!(Sim::start(a, 50), Sim::start(b, 0));
    let manifests = pool_manifests(&[("a", "127.0.0.2", true), ("b", "127.0.0.3", true)], &[port]);
    let setup = Setup::start(Some(manifests), &[a, b], Some(FailureMode::FailClose)).await;
    setup.scraped(a, 50.0).await;
    setup.scraped(b, 0.0).await;
    let served = setup.served_by(10).await;
    assert!(all_equal(&served, b), "the long queue got requests: {served:?}");

    sim_a.set_waiting(0).await;
    sim_b.set_waiting(50).await;
    setup.scraped(a, 0.0).await;
    setup.scraped(b, 50.0).await;
    let served = setup.served_by(10).await;
    assert!(all_equal(&served, a), "the long queue got requests: {served:?}");

    // A streamed response passes through untouched, from the picked endpoint.
    let body = serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "stream please"}]});
    let r =
        request(setup.port, "POST", "/v1/chat/completions", &[], &body.to_string()).await.unwrap();
    assert_eq!((r.status, r.headers["x-sim-endpoint"].as_str()), (200, a.to_string().as_str()));
    assert!(
        r.body.contains(&format!(" {a}\"")) && r.body.ends_with("data: [DONE]\n\n"),
        "{}",
        r.body
    );
}

/// Mirrors `GatewayDestinationEndpointServed`: with equal endpoints, each request reports the
/// endpoint that served it, and the picker spreads them over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_destination_endpoint_served() {
    let port = free_port();
    let (a, b) =
        (SocketAddr::from(([127, 0, 0, 2], port)), SocketAddr::from(([127, 0, 0, 3], port)));
    let (_sim_a, _sim_b) = tokio::join!(Sim::start(a, 0), Sim::start(b, 0));
    let manifests = pool_manifests(&[("a", "127.0.0.2", true), ("b", "127.0.0.3", true)], &[port]);
    let setup = Setup::start(Some(manifests), &[a, b], Some(FailureMode::FailClose)).await;
    setup.scraped(a, 0.0).await;
    setup.scraped(b, 0.0).await;
    let served = setup.served_by(8).await;
    for endpoint in [a, b] {
        assert!(served.contains(&endpoint.to_string()), "{endpoint} served none: {served:?}");
    }
}

/// Bodies larger than one ext_proc message, below and above the picker's limit, reach the
/// model server whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_passes_large_bodies_whole() {
    let port = free_port();
    let a = SocketAddr::from(([127, 0, 0, 2], port));
    let _sim = Sim::start(a, 0).await;
    let manifests = pool_manifests(&[("a", "127.0.0.2", true)], &[port]);
    let setup = Setup::start(Some(manifests), &[a], Some(FailureMode::FailClose)).await;
    for words in [40_000, 150_000] {
        let prompt = "word ".repeat(words);
        assert!((prompt.len() > MAX_BODY) == (words > 100_000));
        let body = serde_json::json!({"model": "m", "prompt": prompt}).to_string();
        let r = request(setup.port, "POST", "/v1/completions", &[], &body).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["usage"]["prompt_tokens"], words, "the model server read it all");
        assert_eq!(r.headers.get(SERVED), Some(&a.to_string()));
    }
}

/// Mirrors `GatewayFollowingEPPRoutingWithDataParallelism`: two ranks (ports) on one pod are two
/// endpoints, and the picker's choice between them is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_following_epp_routing_dp() {
    let (p1, p2) = (free_port(), free_port());
    let (r1, r2) = (SocketAddr::from(([127, 0, 0, 2], p1)), SocketAddr::from(([127, 0, 0, 2], p2)));
    let (sim_1, sim_2) = tokio::join!(Sim::start(r1, 50), Sim::start(r2, 0));
    let manifests = pool_manifests(&[("dp", "127.0.0.2", true)], &[p1, p2]);
    let setup = Setup::start(Some(manifests), &[r1, r2], Some(FailureMode::FailClose)).await;
    let pools = setup.running.as_ref().unwrap().picker.as_ref().unwrap().pools();
    assert_eq!(pools.only().unwrap().endpoints, [r1, r2]);
    setup.scraped(r1, 50.0).await;
    setup.scraped(r2, 0.0).await;
    let served = setup.served_by(6).await;
    assert!(all_equal(&served, r2), "{served:?}");
    sim_1.set_waiting(0).await;
    sim_2.set_waiting(50).await;
    setup.scraped(r1, 0.0).await;
    setup.scraped(r2, 50.0).await;
    let served = setup.served_by(6).await;
    assert!(all_equal(&served, r1), "{served:?}");
}

/// No ready pod: the picker answers 503 itself, with an OpenAI-style error naming the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_no_eligible_endpoint_is_503() {
    let port = free_port();
    let a = SocketAddr::from(([127, 0, 0, 2], port));
    let _sim = Sim::start(a, 0).await;
    let manifests = pool_manifests(&[("a", "127.0.0.2", false)], &[port]);
    let setup = Setup::start(Some(manifests), &[a], Some(FailureMode::FailClose)).await;
    let body = r#"{"model":"m","prompt":"hi"}"#;
    let r = request(setup.port, "POST", "/v1/completions", &[], body).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], "no ready endpoint in InferencePool default/pool");
}

/// Mirrors `EppUnAvailableFailOpen`: with the picker down and `FailOpen`, requests are still
/// served, by an endpoint of Envoy's choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_unavailable_fail_open() {
    let port = free_port();
    let (a, b) =
        (SocketAddr::from(([127, 0, 0, 2], port)), SocketAddr::from(([127, 0, 0, 3], port)));
    let (_sim_a, _sim_b) = tokio::join!(Sim::start(a, 0), Sim::start(b, 0));
    let setup = Setup::start(None, &[a, b], Some(FailureMode::FailOpen)).await;
    for _ in 0..4 {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let r = request(setup.port, "POST", "/v1/chat/completions", &[], body).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let endpoint = &r.headers["x-sim-endpoint"];
        assert!([a.to_string(), b.to_string()].contains(endpoint), "{endpoint}");
        assert!(!r.headers.contains_key(SERVED), "no picker, no report");
    }
}

/// The same with `FailClose`: the request fails with a server error and reaches no endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_unavailable_fail_close() {
    let port = free_port();
    let a = SocketAddr::from(([127, 0, 0, 2], port));
    let _sim = Sim::start(a, 0).await;
    let setup = Setup::start(None, &[a], Some(FailureMode::FailClose)).await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let r = request(setup.port, "POST", "/v1/chat/completions", &[], body).await.unwrap();
    assert!((500..600).contains(&r.status), "{} {}", r.status, r.body);
    assert!(!r.headers.contains_key("x-sim-endpoint"));
}

/// Latencies (ms) of `rounds` chat completions from each of `workers` concurrent clients.
async fn latencies(port: u16, workers: usize, rounds: usize) -> Vec<f64> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..rounds {
                let body = serde_json::json!({"model": "m",
                    "messages": [{"role": "user", "content": format!("worker {w} round {i}")}]});
                let started = std::time::Instant::now();
                let r = request(port, "POST", "/v1/chat/completions", &[], &body.to_string())
                    .await
                    .expect("Envoy answers");
                assert_eq!(r.status, 200, "{}", r.body);
                out.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all.sort_by(f64::total_cmp);
    all
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Not a test: the numbers in BENCHMARKS.md. Run with
/// `cargo test --release --test it picker::bench_picker -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_picker() {
    // 1. What the picker adds: instant simulators, one request at a time.
    let port = free_port();
    let (a, b) =
        (SocketAddr::from(([127, 0, 0, 2], port)), SocketAddr::from(([127, 0, 0, 3], port)));
    let (_sim_a, _sim_b) = tokio::join!(Sim::start(a, 0), Sim::start(b, 0));
    let manifests = pool_manifests(&[("a", "127.0.0.2", true), ("b", "127.0.0.3", true)], &[port]);
    let picked = Setup::start(Some(manifests), &[a, b], Some(FailureMode::FailClose)).await;
    let plain = Setup::start(None, &[a, b], None).await;
    for (name, setup) in [("round robin", &plain), ("picker", &picked)] {
        latencies(setup.port, 1, 50).await;
        let l = latencies(setup.port, 1, 1000).await;
        println!(
            "added latency, {name}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    drop((picked, plain));

    // 2. Under load, one slow server: A generates one request at a time, B eight; 10 ms/token.
    let port = free_port();
    let (a, b) =
        (SocketAddr::from(([127, 0, 0, 2], port)), SocketAddr::from(([127, 0, 0, 3], port)));
    let (slow, fast) = (
        ["--max-running", "1", "--token-latency", "0.01"],
        ["--max-running", "8", "--token-latency", "0.01"],
    );
    let (_sim_a, _sim_b) = tokio::join!(Sim::spawn(a, &slow), Sim::spawn(b, &fast));
    let manifests = pool_manifests(&[("a", "127.0.0.2", true), ("b", "127.0.0.3", true)], &[port]);
    let picked = Setup::start(Some(manifests), &[a, b], Some(FailureMode::FailClose)).await;
    let plain = Setup::start(None, &[a, b], None).await;
    for (name, setup) in [("round robin", &plain), ("picker", &picked)] {
        let l = latencies(setup.port, 8, 25).await;
        println!(
            "under load, {name}: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms",
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            percentile(&l, 0.99)
        );
    }
}
