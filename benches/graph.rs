//! Dependency-graph benchmarks (issue 2): full build, and one-object updates with their affected
//! set, on synthetic graphs of 1k and 10k "units".
//!
//! A unit is one AIGatewayRoute (one rule matching `x-ai-eg-model`, backendRef to its
//! AIServiceBackend), one AIServiceBackend and the Backend (fqdn) it points at. Every 10 units
//! share one InferencePool with 2 Pods selected by label and an endpoint-picker Service, and one
//! BackendSecurityPolicy (targeting the 10 AIServiceBackends) with its Secret; every 10th route
//! has a second rule sending a self-hosted model to that pool, and every group has one HTTPRoute
//! (a path prefix to the pool, another to the picker Service). Groups of 10 units are spread over
//! 10 namespaces, each with one Gateway. Objects are built as Rust values, not parsed, so only the
//! graph is measured.
//!
//! Update benchmarks cycle through all objects of the kind (the k-th iteration changes object
//! `k % count`, flipping it to its other variant on every pass), so they touch cold objects and
//! every position in the graph's edge lists, not one hot object.
//!
//! Run: `cargo bench --bench graph` (`AIXDS_BENCH_SIZES=100000` for other sizes). Before
//! criterion runs, the live heap held by each graph is printed, measured by the counting
//! allocator below, and what compiling it adds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aixds::api::{
    AIGATEWAY_GROUP, AIGatewayRouteSpec, AIServiceBackendSpec, APISchema, BackendEndpoint,
    BackendSecurityPolicySpec, BackendSpec, ENVOY_GATEWAY_GROUP, EndpointPickerRef, FQDNEndpoint,
    FailureMode, GatewayClassSpec, GatewaySpec, HTTPBackendRef, HTTPRouteMatch, HTTPRouteRule,
    HTTPRouteSpec, HeaderMatch, HeaderMatchType, INFERENCE_GROUP, InferencePoolSpec, Kind,
    LLMRequestCost, LLMRequestCostType, LabelSelector, Listener, LocalPolicyTargetReference,
    MODEL_HEADER, Object, ObjectKey, ObjectReference, ParentReference, PathMatch, PathMatchType,
    PodInfo, Port, RouteBackendRef, RouteMatch, RouteRule, RouteTimeouts, SecretData, SecretKeyRef,
    SecretObjectReference, SecurityPolicyType, ServicePort, ServiceSpec, Spec, VersionedAPISchema,
    hash_bytes,
};
use aixds::compile::{CompileOptions, Compiler};
use aixds::extproc::credentials::Credentials;
use aixds::graph::Graph;
use aixds::xds::{SnapshotStore, TypeUrl};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};

// ---------------------------------------------------------------------------------------------
// Counting allocator: live heap bytes, for the memory report.

struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated besides.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                LIVE_BYTES.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Synthetic objects.

/// Units per shared InferencePool / BackendSecurityPolicy.
const GROUP: usize = 10;
const GATEWAY: &str = "ai-gateway";

/// Units per graph: 1k and 10k, or `AIXDS_BENCH_SIZES` (comma-separated, e.g. `100000`).
fn sizes() -> Vec<usize> {
    static SIZES: OnceLock<Vec<usize>> = OnceLock::new();
    SIZES
        .get_or_init(|| {
            let given = std::env::var("AIXDS_BENCH_SIZES").ok();
            let parsed =
                given.map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
            parsed.filter(|v: &Vec<usize>| !v.is_empty()).unwrap_or(vec![1_000, 10_000])
        })
        .clone()
}

/// Namespaces the groups are spread over (one Gateway each); `AIXDS_BENCH_NAMESPACES` overrides
/// it, to tell costs that grow with the objects per namespace from costs that grow with the graph.
fn namespaces() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("AIXDS_BENCH_NAMESPACES").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
    })
}

fn namespace(group: usize) -> String {
    format!("team-{}", group % namespaces())
}

fn object(
    kind: Kind,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: Spec,
) -> Object {
    let key = ObjectKey::new(kind, namespace, name);
    let content_hash = hash_bytes(format!("{key}|{labels:?}|{spec:?}").as_bytes());
    Object { key, generation: 1, labels, annotations: BTreeMap::new(), spec, content_hash }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn gateway_class() -> Object {
    let spec = GatewayClassSpec { controller_name: "aixds.io/gateway-controller".into() };
    object(Kind::GatewayClass, "", "aixds", BTreeMap::new(), Spec::GatewayClass(spec))
}

fn gateway(ns: &str) -> Object {
    let spec = GatewaySpec {
        gateway_class_name: "aixds".into(),
        listeners: vec![Listener {
            name: "http".into(),
            hostname: None,
            port: 8080,
            protocol: "HTTP".into(),
            ..Default::default()
        }],
    };
    object(Kind::Gateway, ns, GATEWAY, BTreeMap::new(), Spec::Gateway(spec))
}

/// `variant` flips the request timeout (the change used by the route-update benchmark).
fn route(unit: usize, variant: bool) -> Object {
    let group = unit / GROUP;
    let header = |model: String| RouteMatch {
        headers: vec![HeaderMatch {
            match_type: HeaderMatchType::Exact,
            name: MODEL_HEADER.into(),
            value: model,
        }],
    };
    let timeouts = Some(RouteTimeouts {
        request: Some(if variant { "120s" } else { "60s" }.into()),
        backend_request: None,
    });
    let mut rules = vec![RouteRule {
        name: None,
        matches: vec![header(format!("model-{unit}"))],
        backend_refs: vec![RouteBackendRef { name: format!("asb-{unit}"), ..Default::default() }],
        timeouts: timeouts.clone(),
    }];
    if unit.is_multiple_of(GROUP) {
        rules.push(RouteRule {
            name: Some("self-hosted".into()),
            matches: vec![header(format!("model-{unit}-self-hosted"))],
            backend_refs: vec![RouteBackendRef {
                name: format!("pool-{group}"),
                group: Some(INFERENCE_GROUP.into()),
                kind: Some("InferencePool".into()),
                ..Default::default()
            }],
            timeouts,
        });
    }
    let spec = AIGatewayRouteSpec {
        parent_refs: vec![ParentReference { name: GATEWAY.into(), ..Default::default() }],
        hostnames: Vec::new(),
        rules,
        llm_request_costs: vec![
            LLMRequestCost {
                metadata_key: "llm_input_token".into(),
                cost_type: LLMRequestCostType::InputToken,
                cel: None,
            },
            LLMRequestCost {
                metadata_key: "llm_output_token".into(),
                cost_type: LLMRequestCostType::OutputToken,
                cel: None,
            },
        ],
    };
    let name = format!("route-{unit}");
    object(
        Kind::AIGatewayRoute,
        &namespace(group),
        &name,
        labels(&[("app.kubernetes.io/part-of", "ai-gateway")]),
        Spec::AIGatewayRoute(spec),
    )
}

/// The group's HTTPRoute: `/pool-{group}` to its pool, `/epp-{group}` to its picker Service.
/// `variant` flips the request timeout (the HTTPRoute change).
fn http_route(group: usize, variant: bool) -> Object {
    let prefix = |value: String| HTTPRouteMatch {
        path: Some(PathMatch { match_type: PathMatchType::PathPrefix, value }),
        ..Default::default()
    };
    let timeouts = Some(RouteTimeouts {
        request: Some(if variant { "120s" } else { "60s" }.into()),
        backend_request: None,
    });
    let spec = HTTPRouteSpec {
        parent_refs: vec![ParentReference { name: GATEWAY.into(), ..Default::default() }],
        hostnames: Vec::new(),
        rules: vec![
            HTTPRouteRule {
                matches: vec![prefix(format!("/pool-{group}"))],
                backend_refs: vec![HTTPBackendRef {
                    name: format!("pool-{group}"),
                    group: Some(INFERENCE_GROUP.into()),
                    kind: Some("InferencePool".into()),
                    ..Default::default()
                }],
                timeouts,
                ..Default::default()
            },
            HTTPRouteRule {
                matches: vec![prefix(format!("/epp-{group}"))],
                backend_refs: vec![HTTPBackendRef {
                    name: format!("epp-{group}"),
                    port: Some(9002),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    let name = format!("http-{group}");
    object(Kind::HTTPRoute, &namespace(group), &name, BTreeMap::new(), Spec::HTTPRoute(spec))
}

/// `variant` flips the schema between OpenAI and Anthropic (the AIServiceBackend change).
fn ai_service_backend(unit: usize, variant: bool) -> Object {
    let spec = AIServiceBackendSpec {
        schema: VersionedAPISchema {
            name: if variant { APISchema::Anthropic } else { APISchema::OpenAI },
            version: None,
            prefix: None,
        },
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
    let name = format!("asb-{unit}");
    let ns = namespace(unit / GROUP);
    object(Kind::AIServiceBackend, &ns, &name, BTreeMap::new(), Spec::AIServiceBackend(spec))
}

fn backend(unit: usize) -> Object {
    let spec = BackendSpec {
        endpoints: vec![BackendEndpoint {
            fqdn: Some(FQDNEndpoint {
                hostname: format!("api-{unit}.provider.example.com"),
                port: 443,
            }),
            ip: None,
            unix: None,
        }],
        app_protocols: Vec::new(),
    };
    let name = format!("backend-{unit}");
    object(Kind::Backend, &namespace(unit / GROUP), &name, BTreeMap::new(), Spec::Backend(spec))
}

fn policy(group: usize) -> Object {
    let spec = BackendSecurityPolicySpec {
        target_refs: (group * GROUP..(group + 1) * GROUP)
            .map(|unit| LocalPolicyTargetReference {
                group: AIGATEWAY_GROUP.into(),
                kind: "AIServiceBackend".into(),
                name: format!("asb-{unit}"),
            })
            .collect(),
        policy_type: SecurityPolicyType::APIKey,
        api_key: Some(SecretKeyRef {
            secret_ref: SecretObjectReference { name: format!("secret-{group}"), namespace: None },
        }),
        anthropic_api_key: None,
        azure_api_key: None,
        azure_credentials: None,
        aws_credentials: None,
        gcp_credentials: None,
    };
    let name = format!("bsp-{group}");
    let ns = namespace(group);
    object(
        Kind::BackendSecurityPolicy,
        &ns,
        &name,
        BTreeMap::new(),
        Spec::BackendSecurityPolicy(spec),
    )
}

fn secret(group: usize) -> Object {
    let values = BTreeMap::from([(
        "apiKey".to_string(),
        format!("sk-synthetic-key-{group:08}-0123456789abcdef").into_bytes(),
    )]);
    let name = format!("secret-{group}");
    let ns = namespace(group);
    object(
        Kind::Secret,
        &ns,
        &name,
        BTreeMap::new(),
        Spec::Secret(SecretData { type_: "Opaque".into(), values }),
    )
}

fn pool_label(group: usize) -> String {
    format!("vllm-{group}")
}

/// `variant` flips the target port (the InferencePool change).
fn pool(group: usize, variant: bool) -> Object {
    let spec = InferencePoolSpec {
        selector: LabelSelector { match_labels: labels(&[("app", &pool_label(group))]) },
        target_ports: vec![Port { number: if variant { 8001 } else { 8000 } }],
        app_protocol: None,
        endpoint_picker_ref: Some(EndpointPickerRef {
            group: None,
            kind: None,
            name: format!("epp-{group}"),
            port: Some(Port { number: 9002 }),
            failure_mode: FailureMode::FailClose,
        }),
    };
    let name = format!("pool-{group}");
    let ns = namespace(group);
    object(Kind::InferencePool, &ns, &name, BTreeMap::new(), Spec::InferencePool(spec))
}

fn epp_service(group: usize) -> Object {
    let spec = ServiceSpec {
        ports: vec![ServicePort {
            name: Some("grpc-ext-proc".into()),
            port: 9002,
            app_protocol: Some("http2".into()),
        }],
        cluster_ip: Some(format!("10.96.{}.{}", group / 250, group % 250 + 1)),
        ingress: Vec::new(),
        selector: labels(&[("app", &format!("epp-{group}"))]),
    };
    let name = format!("epp-{group}");
    let ns = namespace(group);
    object(Kind::Service, &ns, &name, BTreeMap::new(), Spec::Service(spec))
}

/// `drained` relabels the pod out of its pool (the Pod change).
fn pod(group: usize, replica: usize, drained: bool) -> Object {
    let app = if drained { format!("{}-drained", pool_label(group)) } else { pool_label(group) };
    let hash = format!("{:010x}", hash_bytes(format!("{group}").as_bytes()) & 0xff_ffff_ffff);
    let pod_labels =
        labels(&[("app", &app), ("app.kubernetes.io/name", "vllm"), ("pod-template-hash", &hash)]);
    let n = group * 2 + replica;
    let spec = PodInfo { ip: Some(format!("10.244.{}.{}", n / 250, n % 250 + 1)), ready: true };
    let name = format!("vllm-{group}-{hash}-{replica}");
    object(Kind::Pod, &namespace(group), &name, pod_labels, Spec::Pod(spec))
}

/// Every object of a graph of `units` units, in the order a manifest would list them: gateways
/// first, then per group of 10 units the routes, backends, policy, pool and pods.
fn objects(units: usize) -> Vec<Object> {
    assert!(units.is_multiple_of(GROUP));
    let mut out = vec![gateway_class()];
    out.extend((0..namespaces()).map(|ns| gateway(&namespace(ns))));
    for group in 0..units / GROUP {
        for unit in group * GROUP..(group + 1) * GROUP {
            out.push(route(unit, false));
            out.push(ai_service_backend(unit, false));
            out.push(backend(unit));
        }
        out.push(secret(group));
        out.push(policy(group));
        out.push(epp_service(group));
        out.push(pool(group, false));
        out.push(pod(group, 0, false));
        out.push(pod(group, 1, false));
        out.push(http_route(group, false));
    }
    out
}

fn build(objects: Vec<Object>) -> Graph {
    let mut graph = Graph::new();
    for o in objects {
        graph.apply(o);
    }
    graph
}

/// Asserts the synthetic graph is what a healthy cluster would give: no placeholders, every
/// object accepted with its references resolved, and pods selected by their pools.
fn check(graph: &Graph, units: usize) {
    let expected = 1 + namespaces() + units * 3 + units / GROUP * 7;
    assert_eq!(graph.len(), expected, "node count");
    for n in graph.nodes() {
        assert!(!n.is_placeholder(), "placeholder {}", n.key);
        assert!(n.accepted() && n.resolved(), "{} not ready: {:?}", n.key, n.conditions());
    }
    let pool = ObjectKey::new(Kind::InferencePool, namespace(0), "pool-0");
    let selected = graph.references(&pool).iter().filter(|(_, n)| n.key.kind == Kind::Pod).count();
    assert_eq!(selected, 2, "pool-0 selects its pods");
}

// ---------------------------------------------------------------------------------------------
// Memory report.

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn memory_report() {
    let mut parts = Vec::new();
    for units in sizes() {
        let before = live_bytes();
        let objs = objects(units);
        let count = objs.len();
        // The graph holds each object in an `Arc`: count the object's inline size with its own
        // heap data, and the vector that held them before as spare.
        let spare = (objs.capacity() - count) * size_of::<Object>();
        let objects_only = live_bytes() - before - spare;
        let graph = build(objs);
        let total = live_bytes() - before;
        let nodes = graph.len();
        let edges = graph.edges().len();
        check(&graph, units);
        println!(
            "graph memory: {units} units = {:.2} MiB live heap ({nodes} nodes, {edges} edges; \
             {:.0} B/object, of which the objects themselves {:.2} MiB = {:.0} B/object \
             (size_of::<Object>() = {} B), graph structure and conditions {:.2} MiB = {:.0} \
             B/object)",
            mib(total),
            total as f64 / count as f64,
            mib(objects_only),
            objects_only as f64 / count as f64,
            size_of::<Object>(),
            mib(total - objects_only),
            (total - objects_only) as f64 / count as f64,
        );
        parts.push(format!("{}k units = {:.2} MiB ({nodes} nodes)", units / 1000, mib(total)));
        // What compiling it adds: the compiler's kept state (fragments, indexes, the ext_proc's
        // runtime parts, the pools) and the published snapshot of Envoy resources.
        let before = live_bytes();
        let mut compiler = Compiler::new(CompileOptions::default());
        let store = SnapshotStore::new();
        store.publish(compiler.full(&graph));
        let published = live_bytes();
        let tables = compiler.tables(&graph, None, &Credentials::default());
        let compiled = live_bytes() - before;
        let snapshot = store.load();
        let encoded: Vec<String> = TypeUrl::ALL
            .iter()
            .map(|t| {
                let resources = snapshot.resources(*t);
                let bytes: usize = resources.values().map(|r| r.body.value.len()).sum();
                format!("{t:?} {} ({:.2} MiB)", resources.len(), mib(bytes))
            })
            .collect();
        println!(
            "compiled memory: {units} units = {:.2} MiB live heap ({:.0} B/object): compiler \
             state and snapshot {:.2} MiB, tables {:.2} MiB; resources, encoded: {}",
            mib(compiled),
            compiled as f64 / count as f64,
            mib(published - before),
            mib(compiled - (published - before)),
            encoded.join(", "),
        );
        drop((snapshot, tables, store, compiler, graph));
    }
    println!("graph memory: {}", parts.join(", "));
}

/// Affected-set size of each update scenario, printed once so the timings can be read per key.
fn affected_report() {
    let units = sizes()[0];
    let mut graph = build(objects(units));
    let scenarios: [(&str, Object, Object); 5] = [
        ("AIServiceBackend", ai_service_backend(1, true), ai_service_backend(1, false)),
        ("InferencePool", pool(1, true), pool(1, false)),
        ("Pod relabel out/in", pod(1, 1, true), pod(1, 1, false)),
        ("AIGatewayRoute", route(11, true), route(11, false)),
        ("HTTPRoute", http_route(1, true), http_route(1, false)),
    ];
    for (name, changed, original) in scenarios {
        let out = graph.apply(changed).keys.len();
        let back = graph.apply(original).keys.len();
        println!("affected set: {name} change = {out} keys, change back = {back} keys");
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("graph/build");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for units in sizes() {
        let objs = objects(units);
        group.throughput(Throughput::Elements(objs.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{}k", units / 1000)), |b| {
            b.iter_batched(|| objs.clone(), build, BatchSize::LargeInput)
        });
    }
    group.finish();
}

/// Benchmarks applying one changed object of a kind, cycling through all `count` objects of that
/// kind; `make(i, variant)` gives object `i` in its changed (`true`) or original form.
fn bench_update(
    c: &mut Criterion,
    name: &str,
    count: impl Fn(usize) -> usize,
    make: impl Fn(usize, bool) -> Object,
) {
    let mut group = c.benchmark_group(format!("graph/update/{name}"));
    group.sample_size(30);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for units in sizes() {
        let mut graph = build(objects(units));
        // `AIXDS_BENCH_CYCLE=1` keeps flipping one object instead (hot caches), to tell costs that
        // grow with the graph from cache misses on a graph larger than the CPU caches.
        let n = std::env::var("AIXDS_BENCH_CYCLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(count(units), |c: usize| c.clamp(1, count(units)));
        let changed: Vec<Object> = (0..n).map(|i| make(i, true)).collect();
        let original: Vec<Object> = (0..n).map(|i| make(i, false)).collect();
        let mut k = 0usize;
        group.bench_function(BenchmarkId::from_parameter(format!("{}k", units / 1000)), |b| {
            b.iter_batched(
                || {
                    let (i, pass) = (k % n, k / n);
                    k += 1;
                    if pass % 2 == 0 { changed[i].clone() } else { original[i].clone() }
                },
                |o| graph.apply(black_box(o)),
                BatchSize::SmallInput,
            )
        });
        // The graph must still be whole after thousands of flips.
        for (i, o) in original.iter().enumerate() {
            let applied = k / n + usize::from(i < k % n);
            if applied % 2 == 1 {
                graph.apply(o.clone());
            }
        }
        check(&graph, units);
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_build(c);
    bench_update(c, "ai_service_backend", |u| u, ai_service_backend);
    bench_update(c, "inference_pool", |u| u / GROUP, pool);
    bench_update(c, "pod_relabel", |u| u / GROUP, |g, drained| pod(g, 1, drained));
    bench_update(c, "ai_gateway_route", |u| u, route);
    bench_update(c, "http_route", |u| u / GROUP, http_route);
}

/// Where criterion writes its estimates, found as criterion finds it (without asking cargo).
fn criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(dir).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

/// Prints the median of every benchmark this run measured, with criterion's 95% confidence
/// interval of it (criterion's console line shows the mean or slope instead).
fn median_summary(since: SystemTime) {
    let root = criterion_dir();
    let mut rows = Vec::new();
    for group in ["build", "update/ai_service_backend", "update/inference_pool"]
        .into_iter()
        .chain(["update/pod_relabel", "update/ai_gateway_route", "update/http_route"])
    {
        for units in sizes() {
            let id = format!("graph/{group}/{}k", units / 1000);
            let dir = root.join(format!("graph_{}", group.replace('/', "_")));
            let file = dir.join(format!("{}k", units / 1000)).join("new/estimates.json");
            let fresh =
                std::fs::metadata(&file).and_then(|m| m.modified()).is_ok_and(|t| t >= since);
            let Some(json) = fresh.then(|| std::fs::read(&file).ok()).flatten() else { continue };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) else { continue };
            let median = &v["median"];
            let ci = &median["confidence_interval"];
            let (Some(point), Some(low), Some(high)) = (
                median["point_estimate"].as_f64(),
                ci["lower_bound"].as_f64(),
                ci["upper_bound"].as_f64(),
            ) else {
                continue;
            };
            rows.push(format!(
                "median {id:38} {:>10}  [{} – {}]",
                format_ns(point),
                format_ns(low),
                format_ns(high)
            ));
        }
    }
    if !rows.is_empty() {
        println!("\nmedians (95% confidence interval of the median):\n{}", rows.join("\n"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--list") {
        memory_report();
        affected_report();
    }
    let start = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    median_summary(start);
}
