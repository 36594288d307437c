//! xDS benchmarks (issue 3): full compile, one change pushed as a delta (server side), and the
//! fan-out of one change to many delta streams over real gRPC.
//!
//! A unit is one AIGatewayRoute with one rule (matching `x-ai-eg-model: model-N`, backendRef to
//! its AIServiceBackend), that AIServiceBackend, and the Backend with one IP endpoint it points
//! at (so the cluster uses EDS). One Gateway (port 8080) in the same namespace holds every
//! route; each model has its routing scope, which holds its routes. Objects are built as Rust
//! values, not parsed, so only the graph, the compiler and the xDS layer are measured.
//!
//! Sections, selected by the usual filter argument (`cargo bench --bench xds -- FILTER`; a
//! section runs when its name contains FILTER, criterion benchmarks when their id matches it):
//!
//! - `xds/breakdown`: printed table of where a change's time goes, stage by stage, per size;
//! - `xds/compile_full/{1k,10k,50k}`: `Compiler::full` on a prebuilt graph (criterion);
//! - `xds/change/{backend_ip,route_timeout,route_model}/{1k,10k,50k}`: one changed object →
//!   `Graph::apply` → `Compiler::update` → `SnapshotStore::publish` → `changed_since` →
//!   `DeltaState::responses` for one stream subscribed as Envoy subscribes (CDS, LDS and scopes
//!   wildcard, EDS by name) → responses encoded to bytes as tonic would (criterion,
//!   `iter_custom`, the ACK untimed);
//! - `xds/fanout`: an in-process `AdsServer` on 127.0.0.1:0 and N tonic delta clients (one
//!   HTTP/2 connection each by default), subscribed to clusters (wildcard) and endpoints (`*`);
//!   one Backend IP change is published per round and each client's time from publish to
//!   receipt is recorded. `AIXDS_BENCH_FANOUT_CLIENTS` (1000), `AIXDS_BENCH_FANOUT_CONNS`
//!   (= clients), `AIXDS_BENCH_FANOUT_UNITS` (100) and `AIXDS_BENCH_FANOUT_ROUNDS` (20) override;
//!   `AIXDS_BENCH_FANOUT_NODELAY=1` sets TCP_NODELAY on the server's accepted sockets.
//!
//! `AIXDS_BENCH_SIZES=1000,10000` restricts the sizes. Under `cargo test --benches` (no
//! `--bench` argument, or `--test`), everything runs once at 1k units and the fan-out with 20
//! clients, as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aixds::api::{
    AIGatewayRouteSpec, AIServiceBackendSpec, APISchema, BackendEndpoint, BackendSpec,
    ENVOY_GATEWAY_GROUP, GatewayClassSpec, GatewaySpec, HeaderMatch, HeaderMatchType, IPEndpoint,
    Kind, Listener, MODEL_HEADER, Object, ObjectKey, ObjectReference, ParentReference,
    RouteBackendRef, RouteMatch, RouteRule, RouteTimeouts, Spec, VersionedAPISchema, hash_bytes,
};
use aixds::compile::{CompileOptions, Compiler};
use aixds::extproc::{RuntimeConfig, SharedRuntime};
use aixds::graph::Graph;
use aixds::picker::Picker;
use aixds::xds::{AdsServer, DeltaState, SnapshotStore, TypeUrl, Update};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

// ---------------------------------------------------------------------------------------------
// Synthetic objects.

const NAMESPACE: &str = "default";
const GATEWAY: &str = "ai-gateway";
const PORT: u16 = 8080;

fn object(kind: Kind, name: &str, spec: Spec) -> Object {
    let key = ObjectKey::new(kind, NAMESPACE, name);
    let content_hash = hash_bytes(format!("{key}|{spec:?}").as_bytes());
    Object {
        key,
        generation: 1,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec,
        content_hash,
    }
}

fn gateway_class() -> Object {
    let spec = GatewayClassSpec { controller_name: "aixds.io/gateway-controller".into() };
    object(Kind::GatewayClass, "aixds", Spec::GatewayClass(spec))
}

fn gateway() -> Object {
    let spec = GatewaySpec {
        gateway_class_name: "aixds".into(),
        listeners: vec![Listener {
            name: "http".into(),
            hostname: None,
            port: PORT,
            protocol: "HTTP".into(),
            ..Default::default()
        }],
    };
    object(Kind::Gateway, GATEWAY, Spec::Gateway(spec))
}

/// Route `unit`, matching `model`.
fn route(unit: usize, model: &str) -> Object {
    route_with_timeout(unit, model, None)
}

/// Route `unit`, matching `model`, with a request timeout.
fn route_with_timeout(unit: usize, model: &str, timeout: Option<String>) -> Object {
    let spec = AIGatewayRouteSpec {
        parent_refs: vec![ParentReference { name: GATEWAY.into(), ..Default::default() }],
        hostnames: Vec::new(),
        rules: vec![RouteRule {
            name: None,
            matches: vec![RouteMatch {
                headers: vec![HeaderMatch {
                    match_type: HeaderMatchType::Exact,
                    name: MODEL_HEADER.into(),
                    value: model.into(),
                }],
            }],
            backend_refs: vec![RouteBackendRef {
                name: format!("asb-{unit}"),
                ..Default::default()
            }],
            timeouts: timeout.map(|t| RouteTimeouts { request: Some(t), backend_request: None }),
        }],
        llm_request_costs: Vec::new(),
    };
    object(Kind::AIGatewayRoute, &format!("route-{unit}"), Spec::AIGatewayRoute(spec))
}

fn ai_service_backend(unit: usize) -> Object {
    let spec = AIServiceBackendSpec {
        schema: VersionedAPISchema { name: APISchema::OpenAI, version: None, prefix: None },
        backend_ref: ObjectReference {
            group: Some(ENVOY_GATEWAY_GROUP.into()),
            kind: Some("Backend".into()),
            name: format!("backend-{unit}"),
            namespace: None,
            port: None,
        },
        header_mutation: None,
        body_mutation: None,
    };
    object(Kind::AIServiceBackend, &format!("asb-{unit}"), Spec::AIServiceBackend(spec))
}

/// `variant` moves the backend to another IP (the Backend change).
fn backend(unit: usize, variant: bool) -> Object {
    let address = format!(
        "10.{}.{}.{}",
        if variant { 128 } else { 0 } + (unit >> 16) % 128,
        (unit >> 8) & 0xff,
        unit & 0xff
    );
    let spec = BackendSpec {
        endpoints: vec![BackendEndpoint {
            fqdn: None,
            ip: Some(IPEndpoint { address, port: 8000 }),
            unix: None,
        }],
        app_protocols: Vec::new(),
    };
    object(Kind::Backend, &format!("backend-{unit}"), Spec::Backend(spec))
}

fn objects(units: usize) -> Vec<Object> {
    let mut out = vec![gateway_class(), gateway()];
    for unit in 0..units {
        out.push(route(unit, &format!("model-{unit}")));
        out.push(ai_service_backend(unit));
        out.push(backend(unit, false));
    }
    out
}

fn build(units: usize) -> Graph {
    let mut graph = Graph::new();
    for o in objects(units) {
        graph.apply(o);
    }
    graph
}

fn label(units: usize) -> String {
    format!("{}k", units / 1000)
}

// ---------------------------------------------------------------------------------------------
// One delta stream, server side, without I/O.

fn request(type_url: TypeUrl, names: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.as_str().into(),
        resource_names_subscribe: names,
        ..Default::default()
    }
}

fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

/// Everything between a changed object and the bytes of the delta responses.
struct Server {
    graph: Graph,
    compiler: Compiler,
    store: SnapshotStore,
    /// What the ext_proc and the endpoint picker read, published after every change as the run
    /// loop does.
    runtime: SharedRuntime,
    picker: Arc<Picker>,
    state: DeltaState,
    /// The revision the stream's state was last brought up to.
    revision: u64,
}

/// Time spent in each stage of one change.
#[derive(Default, Clone, Copy)]
struct Stages {
    apply: Duration,
    update: Duration,
    /// The ext_proc's runtime table and the picker's pool table.
    tables: Duration,
    publish: Duration,
    responses: Duration,
    encode: Duration,
}

impl Stages {
    fn total(&self) -> Duration {
        self.apply + self.update + self.tables + self.publish + self.responses + self.encode
    }
}

/// What one change sent: (type, resource names, encoded bytes) per response.
type Sent = Vec<(String, Vec<String>, usize)>;

impl Server {
    /// A graph of `units` units, fully compiled and published, and one stream that subscribed as
    /// Envoy does and ACKed everything it was sent. Also returns the initial responses' size.
    fn new(units: usize) -> (Server, usize) {
        let graph = build(units);
        let mut compiler = Compiler::new(CompileOptions::default());
        let store = SnapshotStore::new();
        store.publish(compiler.full(&graph));
        let (runtime, picker) = (RuntimeConfig::shared(), Picker::new());
        let tables = compiler.tables(&graph, None, &runtime.load().credentials);
        runtime.store(Arc::new(tables.runtime));
        picker.set_pools(tables.pools);
        let mut server = Server {
            graph,
            compiler,
            store,
            runtime,
            picker,
            state: DeltaState::new(),
            revision: 0,
        };
        let snapshot = server.store.load();
        let names = |t: TypeUrl| snapshot.resources(t).keys().cloned().collect::<Vec<_>>();
        let mut bytes = 0;
        // Envoy: clusters, listeners and scopes (which hold their routes) as a (legacy)
        // wildcard; then the endpoints of the EDS clusters, by name.
        let rounds = [
            vec![
                request(TypeUrl::Cluster, vec![]),
                request(TypeUrl::Listener, vec![]),
                request(TypeUrl::ScopedRouteConfiguration, vec![]),
            ],
            vec![request(TypeUrl::ClusterLoadAssignment, names(TypeUrl::ClusterLoadAssignment))],
        ];
        for round in rounds {
            for req in &round {
                server.state.on_request(req).expect("known type");
            }
            let responses = server.state.responses(&snapshot, Some(&[]));
            for resp in &responses {
                bytes += resp.encoded_len();
                server.state.on_request(&ack(resp)).expect("known type");
            }
        }
        server.revision = snapshot.revision;
        assert!(server.state.responses(&snapshot, None).is_empty(), "stream is up to date");
        (server, bytes)
    }

    /// Applies one changed object and brings the stream up to date; ACKs what was sent.
    fn change(&mut self, object: Object) -> (Stages, Sent) {
        let mut st = Stages::default();
        let t = Instant::now();
        let affected = self.graph.apply(object);
        st.apply = t.elapsed();

        let t = Instant::now();
        let updates: Vec<Update> = self.compiler.update(&self.graph, &affected.keys);
        st.update = t.elapsed();

        let t = Instant::now();
        let credentials = self.runtime.load().credentials.clone();
        let tables = self.compiler.tables(&self.graph, Some(&affected.keys), &credentials);
        self.runtime.store(Arc::new(tables.runtime));
        self.picker.set_pools(tables.pools);
        st.tables = t.elapsed();

        let t = Instant::now();
        self.store.publish(updates);
        st.publish = t.elapsed();

        let t = Instant::now();
        let snapshot = self.store.load();
        let changed = self.store.changed_since(self.revision);
        let responses = self.state.responses(&snapshot, changed.as_deref());
        self.revision = snapshot.revision;
        st.responses = t.elapsed();

        let t = Instant::now();
        // What tonic does with each response: one protobuf encode into a buffer.
        let encoded: Vec<Vec<u8>> = responses.iter().map(|r| r.encode_to_vec()).collect();
        st.encode = t.elapsed();
        drop(snapshot);

        let sent = responses
            .iter()
            .zip(&encoded)
            .map(|(r, bytes)| {
                let names = r.resources.iter().map(|r| r.name.clone()).collect();
                (r.type_url.clone(), names, bytes.len())
            })
            .collect();
        for resp in &responses {
            self.state.on_request(&ack(resp)).expect("known type");
        }
        black_box(encoded);
        (st, sent)
    }
}

/// The changes a benchmark cycles through: the k-th iteration changes unit `k % units`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The Backend moves to another IP: the unit's ClusterLoadAssignment is pushed.
    BackendIp,
    /// The route's request timeout changes: its model's scope is pushed.
    RouteTimeout,
    /// The route matches a fresh model name: the new model's scope is pushed, and the old one's
    /// removed.
    RouteModel,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::BackendIp => "backend_ip",
            Scenario::RouteTimeout => "route_timeout",
            Scenario::RouteModel => "route_model",
        }
    }

    fn object(self, units: usize, k: usize) -> Object {
        let (unit, pass) = (k % units, k / units);
        match self {
            Scenario::BackendIp => backend(unit, pass % 2 == 0),
            Scenario::RouteTimeout => {
                route_with_timeout(unit, &format!("model-{unit}"), Some(format!("{}s", 61 + k)))
            }
            Scenario::RouteModel => route(unit, &format!("model-{unit}-edit-{k}")),
        }
    }

    /// What the change must push, and nothing else: a resource of each of these types, named
    /// with this prefix.
    fn expected(self) -> &'static [(TypeUrl, &'static str)] {
        match self {
            Scenario::BackendIp => &[(TypeUrl::ClusterLoadAssignment, "aisb/default/asb-")],
            Scenario::RouteTimeout | Scenario::RouteModel => {
                &[(TypeUrl::ScopedRouteConfiguration, "route-8080/model/")]
            }
        }
    }
}

/// The change sent one resource of each expected type, by name, and nothing more (removals are
/// not named here).
fn check_sent(scenario: Scenario, sent: &Sent) {
    let named: Vec<(&str, &str)> = sent
        .iter()
        .flat_map(|(t, names, _)| names.iter().map(move |n| (t.as_str(), n.as_str())))
        .collect();
    let expected = scenario.expected();
    assert_eq!(named.len(), expected.len(), "{}: {sent:?}", scenario.name());
    for ((t, name), (want_type, prefix)) in named.iter().zip(expected) {
        assert_eq!(*t, want_type.as_str(), "{sent:?}");
        assert!(name.starts_with(prefix), "{sent:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes and arguments.

struct Args {
    /// `cargo test --benches`: run everything once, small.
    test: bool,
    /// The positional filter, if any.
    filter: Option<String>,
}

impl Args {
    fn parse() -> Args {
        // Criterion options that take a value, so that the value is not taken for the filter.
        const WITH_VALUE: &[&str] = &[
            "--save-baseline",
            "-s",
            "--baseline",
            "-b",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--color",
            "-c",
            "--format",
            "--output-format",
            "--plotting-backend",
        ];
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut filter = None;
        let mut skip = false;
        for a in &args {
            if skip {
                skip = false;
            } else if WITH_VALUE.contains(&a.as_str()) {
                skip = true;
            } else if !a.starts_with('-') && filter.is_none() {
                filter = Some(a.clone());
            }
        }
        // As criterion decides: `cargo bench` passes `--bench`, `cargo test --benches` does not.
        let flag = |f: &str| args.iter().any(|a| a == f);
        Args { test: flag("--test") || !flag("--bench"), filter }
    }

    /// Whether the section or benchmark `id` is selected: the filter is taken as a substring
    /// here (criterion reads it as a regex; plain names mean the same to both).
    fn runs(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }

    fn sizes(&self) -> Vec<usize> {
        if self.test {
            return vec![1_000];
        }
        std::env::var("AIXDS_BENCH_SIZES")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000, 50_000])
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The 1, 5 and 15 minute load averages: the machine may be shared, and this says how much.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 =
        rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile<T: Copy>(v: &[T], q: f64) -> T {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

// ---------------------------------------------------------------------------------------------
// Breakdown: where one change's time goes, per stage.

fn breakdown(args: &Args) {
    println!(
        "xds/breakdown: per-stage medians in µs (p99 of the total in brackets); load average {}",
        loadavg()
    );
    for units in args.sizes() {
        let t = Instant::now();
        let graph = build(units);
        let build_time = t.elapsed();
        let t = Instant::now();
        let updates = Compiler::new(CompileOptions::default()).full(&graph);
        let full_time = t.elapsed();
        let store = SnapshotStore::new();
        let t = Instant::now();
        store.publish(updates);
        let publish_time = t.elapsed();
        let snapshot = store.load();
        let count = |t: TypeUrl| snapshot.resources(t).len();
        let rds_bytes: usize = snapshot
            .resources(TypeUrl::ScopedRouteConfiguration)
            .values()
            .map(|r| r.body.value.len())
            .sum();
        println!(
            "  {}: graph build {:.0} ms, Compiler::full {:.0} ms, first publish {:.0} ms; \
             {} clusters, {} endpoints, {} listeners, {} scopes (with their routes) of {:.2} MiB",
            label(units),
            build_time.as_secs_f64() * 1e3,
            full_time.as_secs_f64() * 1e3,
            publish_time.as_secs_f64() * 1e3,
            count(TypeUrl::Cluster),
            count(TypeUrl::ClusterLoadAssignment),
            count(TypeUrl::Listener),
            count(TypeUrl::ScopedRouteConfiguration),
            rds_bytes as f64 / (1024.0 * 1024.0),
        );
        drop((graph, snapshot, store));

        let t = Instant::now();
        let (mut server, initial_bytes) = Server::new(units);
        println!(
            "  {}: new delta stream's initial responses {:.2} MiB (setup {:.0} ms)",
            label(units),
            initial_bytes as f64 / (1024.0 * 1024.0),
            t.elapsed().as_secs_f64() * 1e3
        );
        for scenario in [Scenario::BackendIp, Scenario::RouteTimeout, Scenario::RouteModel] {
            let n = if args.test {
                2
            } else {
                match scenario {
                    Scenario::BackendIp | Scenario::RouteTimeout => {
                        (5_000_000 / units).clamp(20, 500)
                    }
                    Scenario::RouteModel => (200_000 / units).clamp(10, 100),
                }
            };
            let mut all: Vec<Stages> = Vec::with_capacity(n);
            let mut bytes = 0;
            for k in 0..n {
                let (st, sent) = server.change(scenario.object(units, k));
                check_sent(scenario, &sent);
                bytes = sent.iter().map(|s| s.2).sum();
                all.push(st);
            }
            let median = |f: fn(&Stages) -> Duration| {
                let mut v: Vec<Duration> = all.iter().map(f).collect();
                v.sort();
                micros(quantile(&v, 0.5))
            };
            let mut totals: Vec<Duration> = all.iter().map(Stages::total).collect();
            totals.sort();
            println!(
                "  {} {:<11} ({n} changes, {} B pushed): apply {:.1} + update {:.1} + publish \
                 {:.1} + tables {:.1} + responses {:.1} + encode {:.1} = {:.1} [p99 {:.1}]",
                label(units),
                scenario.name(),
                bytes,
                median(|s| s.apply),
                median(|s| s.update),
                median(|s| s.publish),
                median(|s| s.tables),
                median(|s| s.responses),
                median(|s| s.encode),
                micros(quantile(&totals, 0.5)),
                micros(quantile(&totals, 0.99)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Criterion benchmarks.

fn bench_compile_full(c: &mut Criterion, args: &Args) {
    let mut group = c.benchmark_group("xds/compile_full");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for units in args.sizes() {
        if !args.runs(&format!("xds/compile_full/{}", label(units))) {
            continue;
        }
        let graph = build(units);
        group.bench_function(BenchmarkId::from_parameter(label(units)), |b| {
            b.iter(|| {
                let mut compiler = Compiler::new(CompileOptions::default());
                let updates = compiler.full(black_box(&graph));
                (compiler, updates)
            })
        });
    }
    group.finish();
}

fn bench_change(c: &mut Criterion, args: &Args, scenario: Scenario) {
    let mut group = c.benchmark_group(format!("xds/change/{}", scenario.name()));
    group.sampling_mode(SamplingMode::Flat);
    match scenario {
        Scenario::BackendIp | Scenario::RouteTimeout => {
            group.sample_size(30);
            group.measurement_time(Duration::from_secs(3));
        }
        Scenario::RouteModel => {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(6));
        }
    }
    group.warm_up_time(Duration::from_secs(1));
    for units in args.sizes() {
        // Not building a 50k graph for a benchmark the filter leaves out.
        if !args.runs(&format!("xds/change/{}/{}", scenario.name(), label(units))) {
            continue;
        }
        let id = BenchmarkId::from_parameter(label(units));
        let (mut server, _) = Server::new(units);
        let mut k = 0usize;
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let object = scenario.object(units, k);
                    k += 1;
                    let t = Instant::now();
                    let (_, sent) = server.change(object);
                    // The ACK inside `change` is cheap next to the rest; the stage timings of the
                    // breakdown leave it out.
                    total += t.elapsed();
                    check_sent(scenario, &sent);
                }
                total
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Fan-out over real gRPC.

/// One receipt: (client, nonce-independent round marker = the resource version, when).
type Receipt = (usize, String, Instant);

async fn fanout_client(
    id: usize,
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    receipts: mpsc::UnboundedSender<Receipt>,
) {
    let (tx, rx) = mpsc::channel(16);
    let node = Some(Node { id: format!("bench-{id}"), ..Default::default() });
    tx.send(DeltaDiscoveryRequest { node, ..request(TypeUrl::Cluster, vec![]) })
        .await
        .expect("queue request");
    tx.send(request(TypeUrl::ClusterLoadAssignment, vec!["*".into()])).await.expect("queue");
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("delta stream")
        .into_inner();
    while let Ok(Some(resp)) = stream.message().await {
        let at = Instant::now();
        let version = resp.resources.first().map(|r| r.version.clone()).unwrap_or_default();
        let marker = format!("{}|{}|{}", resp.type_url, resp.resources.len(), version);
        if receipts.send((id, marker, at)).is_err() || tx.send(ack(&resp)).await.is_err() {
            return;
        }
    }
}

fn fanout(args: &Args) {
    let clients = if args.test { 20 } else { env_usize("AIXDS_BENCH_FANOUT_CLIENTS", 1_000) };
    let conns = env_usize("AIXDS_BENCH_FANOUT_CONNS", clients).clamp(1, clients);
    let units = env_usize("AIXDS_BENCH_FANOUT_UNITS", 100);
    let rounds = if args.test { 2 } else { env_usize("AIXDS_BENCH_FANOUT_ROUNDS", 20) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let mut graph = build(units);
        let mut compiler = Compiler::new(CompileOptions::default());
        let store = Arc::new(SnapshotStore::new());
        store.publish(compiler.full(&graph));
        let server = AdsServer::new(Arc::clone(&store));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        // As `run::start` serves: accepted sockets keep Nagle on, unless
        // `AIXDS_BENCH_FANOUT_NODELAY=1` sets TCP_NODELAY on them (for comparison).
        let nodelay = env_usize("AIXDS_BENCH_FANOUT_NODELAY", 0) == 1;
        let incoming = TcpListenerStream::new(listener).map(move |conn| {
            if let Ok(stream) = &conn
                && nodelay
            {
                stream.set_nodelay(true)?;
            }
            conn
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server.clone().into_service())
                .serve_with_incoming(incoming),
        );

        let started = Instant::now();
        let mut channels = Vec::with_capacity(conns);
        for _ in 0..conns {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            channels.push(channel);
        }
        let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
        for id in 0..clients {
            let client = AggregatedDiscoveryServiceClient::new(channels[id % conns].clone())
                .max_decoding_message_size(64 * 1024 * 1024);
            tokio::spawn(fanout_client(id, client, receipts_tx.clone()));
        }
        drop(receipts_tx);
        // Every client gets its clusters and its endpoints.
        let mut initial = vec![0u8; clients];
        let mut ready = 0;
        while ready < clients {
            let (id, _, _) = tokio::time::timeout(Duration::from_secs(60), receipts.recv())
                .await
                .expect("initial responses within 60 s")
                .expect("clients alive");
            initial[id] += 1;
            if initial[id] == 2 {
                ready += 1;
            }
        }
        let connect_time = started.elapsed();
        assert_eq!(server.clients().list().len(), clients, "every stream registered");

        let mut latencies: Vec<Duration> = Vec::with_capacity(clients * rounds);
        let mut round_max: Vec<Duration> = Vec::with_capacity(rounds);
        let mut variants = vec![false; units];
        let mut cpu = Duration::ZERO;
        let mut wall = Duration::ZERO;
        for round in 0..rounds {
            // Let the ACKs of the previous round settle, so each round starts quiet.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let unit = (round * 7) % units;
            variants[unit] = !variants[unit];
            let object = backend(unit, variants[unit]);
            let cpu0 = cpu_time();
            let t0 = Instant::now();
            let affected = graph.apply(object);
            let updates = compiler.update(&graph, &affected.keys);
            let changed = store.publish(updates);
            let published = t0.elapsed();
            assert_eq!(changed.len(), 1, "one CLA changed: {changed:?}");
            let mut got = vec![false; clients];
            let mut n = 0;
            let mut this_round = Duration::ZERO;
            while n < clients {
                let (id, marker, at) =
                    tokio::time::timeout(Duration::from_secs(30), receipts.recv())
                        .await
                        .expect("every client receives the change within 30 s")
                        .expect("clients alive");
                assert!(
                    marker.starts_with(TypeUrl::ClusterLoadAssignment.as_str())
                        && marker.contains("|1|"),
                    "client {id} got {marker}"
                );
                assert!(!got[id], "client {id} got two responses in round {round}");
                got[id] = true;
                n += 1;
                let latency = at.duration_since(t0);
                this_round = this_round.max(latency);
                latencies.push(latency);
            }
            round_max.push(this_round);
            cpu += cpu_time().saturating_sub(cpu0);
            wall += t0.elapsed();
            if round == 0 {
                println!(
                    "xds/fanout: round 0 apply+update+publish took {:.0} µs",
                    micros(published)
                );
            }
        }
        latencies.sort();
        round_max.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "xds/fanout: {clients} delta clients over {conns} HTTP/2 connections, {units} \
             units; all subscribed and served in {:.2} s; load average {}",
            connect_time.as_secs_f64(),
            loadavg()
        );
        println!(
            "xds/fanout: CPU used by server and clients together while a change fans out: \
             {:.1} µs per client ({:.2} cores busy on average)",
            micros(cpu) / (rounds * clients) as f64,
            cpu.as_secs_f64() / wall.as_secs_f64()
        );
        println!(
            "xds/fanout: one Backend IP change, publish → receipt over {rounds} rounds \
             ({} samples): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; per-round \
             max: median {:.2} ms, worst {:.2} ms",
            latencies.len(),
            ms(quantile(&latencies, 0.5)),
            ms(quantile(&latencies, 0.9)),
            ms(quantile(&latencies, 0.99)),
            ms(quantile(&latencies, 1.0)),
            ms(quantile(&round_max, 0.5)),
            ms(quantile(&round_max, 1.0)),
        );
    });
    // Dropping the runtime closes every stream and the server.
}

fn main() {
    let args = Args::parse();
    let listing = std::env::args().any(|a| a == "--list");
    if !listing && args.runs("xds/breakdown") {
        breakdown(&args);
    }
    let mut c = Criterion::default().configure_from_args();
    if args.runs("xds/compile_full")
        || args.filter.as_deref().is_some_and(|f| f.contains("xds/compile_full"))
    {
        bench_compile_full(&mut c, &args);
    }
    for scenario in [Scenario::BackendIp, Scenario::RouteTimeout, Scenario::RouteModel] {
        bench_change(&mut c, &args, scenario);
    }
    if !listing && args.runs("xds/fanout") {
        fanout(&args);
    }
    c.final_summary();
}
