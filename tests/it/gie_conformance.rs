//! The Gateway API Inference Extension's gateway conformance suite (GIE v1.6.0,
//! `conformance/tests/`), ported: one test per upstream test, named after it, asserting what it
//! asserts. CONFORMANCE.md has the table of results.
//!
//! How the port stands in for a cluster:
//! - the API server is the test API server (`kubeapi.rs`): aixds watches it with its production
//!   client and writes status there, and the tests read status back from it, as upstream's do;
//! - a Deployment's pods are [`Echo`] servers, one loopback IP per pod (`127.N.1.1`–`.3` for
//!   the primary model servers, ...), with Pod objects carrying those IPs; a data-parallel pod
//!   is one IP with an echo server per rank's port;
//! - each pool's endpoint picker Service has a loopback cluster IP where an [`Epp`] (the lwepp
//!   stand-in) listens; "the EPP Service has no endpoints" is that picker stopped;
//! - each Gateway gets its own listener port on 127.0.0.1 instead of its own address on port 80;
//! - a real Envoy, bootstrapped by aixds, serves the traffic from aixds's compiled xDS;
//! - waits keep upstream's semantics (three consecutive matching responses, 100 ms apart) with a
//!   60 s ceiling instead of 300 s.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use aixds::bootstrap::BootstrapOptions;
use aixds::run::Running;
use serde_json::Value;
use tokio::process::Child;

use crate::gie::echo::{Echo, Mode};
use crate::gie::epp::{Epp, SELECTION_HEADER, SERVED_HEADER};
use crate::harness::*;
use crate::kubeapi::TestApi;
use crate::kubernetes::{kube_options, lease, run_options};

const INFRA: &str = "inference-conformance-infra";
const APP: &str = "inference-conformance-app-backend";
const PRIMARY_GW: &str = "conformance-primary";
const SECONDARY_GW: &str = "conformance-secondary";
const PRIMARY_POOL: &str = "primary-inference-pool";
const SECONDARY_POOL: &str = "secondary-inference-pool";
const PRIMARY_PODS: &str = "primary-inference-model-server-deployment";
const SECONDARY_PODS: &str = "secondary-inference-model-server-deployment";
const BODY: &str =
    r#"{"model":"conformance-fake-model","prompt":"Write as if you were a critic: San Francisco"}"#;
/// Upstream waits up to 300 s for consistency; here everything is local.
const CONSISTENCY: Duration = Duration::from_secs(60);

/// A model-server Deployment of upstream's `base.yaml`: pod-name prefix, `app` label, the third
/// octet of its pods' IPs, and each pod's ports.
type Deployment = (&'static str, &'static str, u8, &'static [(u16, Mode)]);

const DEPLOYMENTS: [Deployment; 4] = [
    (PRIMARY_PODS, "primary-inference-model-server", 1, &[(3000, Mode::Http1)]),
    (SECONDARY_PODS, "secondary-inference-model-server", 2, &[(3000, Mode::Http1)]),
    (
        "appprotocol-inference-model-server-deployment",
        "appprotocol-inference-model-server",
        3,
        &[(3000, Mode::Http1), (3001, Mode::H2c)],
    ),
    (
        "dp-inference-model-server-deployment",
        "dp-inference-model-server",
        4,
        &[(3000, Mode::Http1), (3002, Mode::Http1), (3004, Mode::Http1)],
    ),
];

/// A pool: name, the Deployment's `app` label, targetPorts, appProtocol, picker Service (and the
/// last octet of its cluster IP), failureMode.
type PoolDef = (
    &'static str,
    &'static str,
    &'static [u16],
    Option<&'static str>,
    &'static str,
    u8,
    Option<&'static str>,
);

const POOLS: [PoolDef; 5] = [
    (
        PRIMARY_POOL,
        "primary-inference-model-server",
        &[3000],
        None,
        "primary-endpoint-picker-svc",
        1,
        None,
    ),
    (
        SECONDARY_POOL,
        "secondary-inference-model-server",
        &[3000],
        None,
        "secondary-endpoint-picker-svc",
        2,
        Some("FailOpen"),
    ),
    (
        "appprotocol-http-inference-pool",
        "appprotocol-inference-model-server",
        &[3000],
        Some("http"),
        "appprotocol-http-endpoint-picker-svc",
        3,
        None,
    ),
    (
        "appprotocol-h2c-inference-pool",
        "appprotocol-inference-model-server",
        &[3001],
        Some("kubernetes.io/h2c"),
        "appprotocol-h2c-endpoint-picker-svc",
        4,
        None,
    ),
    (
        "dp-inference-pool",
        "dp-inference-model-server",
        &[3000, 3002, 3004],
        None,
        "dp-endpoint-picker-svc",
        5,
        None,
    ),
];

/// Each suite gets its own second octet, so that suites running at once do not share pods.
static NEXT_BLOCK: AtomicU8 = AtomicU8::new(100);

/// One pod: its name and IP.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    ip: IpAddr,
}

/// `base.yaml`, running: the API server, aixds, Envoy, the pods and the pickers.
struct Suite {
    api: TestApi,
    _running: Running,
    _envoy: Child,
    /// Gateway name → its listener port.
    gateways: BTreeMap<&'static str, u16>,
    /// Deployment name → its pods.
    pods: BTreeMap<&'static str, Vec<Pod>>,
    _echos: Vec<Echo>,
    /// Picker Service name → its picker.
    epps: BTreeMap<&'static str, Epp>,
}

impl Suite {
    async fn start(test: &str) -> Suite {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
        let ip = |third: u8, fourth: u8| IpAddr::from([127, block, third, fourth]);
        let (primary, secondary) = (free_port(), free_port());
        let api = TestApi::new().await;
        let mut yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: aixds}}\n\
             spec: {{controllerName: {}}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {PRIMARY_GW}, namespace: {INFRA}}}\n\
             spec:\n  gatewayClassName: aixds\n  listeners:\n  - name: http\n    port: {primary}\n    protocol: HTTP\n\
             \x20   allowedRoutes: {{namespaces: {{from: All}}, kinds: [{{kind: HTTPRoute}}]}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {SECONDARY_GW}, namespace: {INFRA}}}\n\
             spec:\n  gatewayClassName: aixds\n  listeners:\n  - name: http\n    port: {secondary}\n    protocol: HTTP\n\
             \x20   hostname: secondary.example.com\n    allowedRoutes: {{namespaces: {{from: All}}}}\n",
            aixds::api::DEFAULT_CONTROLLER_NAME
        );
        let mut pods = BTreeMap::new();
        let mut echos = Vec::new();
        for (deployment, app, third, ports) in DEPLOYMENTS {
            let mut list = Vec::new();
            for n in 0..3u8 {
                let pod = Pod { name: format!("{deployment}-{n}"), ip: ip(third, n + 1) };
                for (port, mode) in ports {
                    let addr = SocketAddr::new(pod.ip, *port);
                    echos.push(Echo::start(addr, &pod.name, APP, *mode).await);
                }
                yaml.push_str(&format!(
                    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {APP}, labels: {{app: {app}}}}}\n\
                     status: {{phase: Running, podIP: \"{}\", conditions: [{{type: Ready, status: \"True\"}}]}}\n",
                    pod.name, pod.ip
                ));
                list.push(pod);
            }
            pods.insert(deployment, list);
        }
        let mut epps = BTreeMap::new();
        for (pool, app, target_ports, protocol, service, octet, failure) in POOLS {
            let addr = SocketAddr::new(ip(9, octet), 9002);
            let deployment = DEPLOYMENTS.iter().find(|d| d.1 == app).unwrap().0;
            let endpoints = pods[deployment]
                .iter()
                .flat_map(|p| target_ports.iter().map(|port| SocketAddr::new(p.ip, *port)))
                .collect();
            epps.insert(service, Epp::start(addr, endpoints).await);
            let ports: Vec<String> =
                target_ports.iter().map(|p| format!("{{number: {p}}}")).collect();
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: {APP}}}\n\
                 spec: {{clusterIP: \"{}\", ports: [{{port: 9002, appProtocol: http2}}]}}\n\
                 ---\napiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
                 metadata: {{name: {pool}, namespace: {APP}}}\n\
                 spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  targetPorts: [{}]\n{}\
                 \x20 endpointPickerRef: {{name: {service}, port: {{number: 9002}}{}}}\n",
                addr.ip(),
                ports.join(", "),
                protocol.map(|p| format!("  appProtocol: {p}\n")).unwrap_or_default(),
                failure.map(|f| format!(", failureMode: {f}")).unwrap_or_default(),
            ));
        }
        api.apply_yaml(&yaml);
        let mut opts = run_options(
            kube_options(&api, Some(lease(test))),
            "127.0.0.1:0".parse().unwrap(),
            1975,
            None,
        );
        opts.compile.listener_address = "127.0.0.1".into();
        let running = aixds::run::start(opts).await.expect("aixds starts");
        let envoy = start_envoy(&BootstrapOptions {
            node_id: test.into(),
            admin_port: free_port(),
            xds_address: running.xds_addr.expect("a TCP listener").to_string(),
            ..Default::default()
        });
        let gateways = BTreeMap::from([(PRIMARY_GW, primary), (SECONDARY_GW, secondary)]);
        let suite =
            Suite { api, _running: running, _envoy: envoy, gateways, pods, _echos: echos, epps };
        // Upstream's setup waits for the Gateways to be accepted and programmed.
        for gateway in [PRIMARY_GW, SECONDARY_GW] {
            suite
                .wait(&format!("Gateway {gateway} programmed"), || {
                    let status = suite.api.get("Gateway", INFRA, gateway)?["status"].clone();
                    let ok = ["Accepted", "Programmed"]
                        .iter()
                        .all(|t| has(&status["conditions"], t, "True", None));
                    ok.then_some(())
                })
                .await;
        }
        suite
    }

    fn apply(&self, yaml: &str) {
        self.api.apply_yaml(yaml);
    }

    /// Polls `check` every 100 ms until it gives `Some`, for at most [`CONSISTENCY`].
    async fn wait<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + CONSISTENCY;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `HTTPRouteMustBeAcceptedAndResolved`: the route's status entry for `gateway` has
    /// `Accepted=True` (`Accepted`) and `ResolvedRefs=True` (`ResolvedRefs`), every condition
    /// of every parent at the route's generation.
    async fn route_accepted_and_resolved(&self, route: &str, gateway: &str) {
        self.route_condition(route, gateway, "ResolvedRefs", "True", Some("ResolvedRefs")).await;
        self.route_condition(route, gateway, "Accepted", "True", Some("Accepted")).await;
    }

    async fn route_condition(
        &self,
        route: &str,
        gateway: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) {
        let what = format!("HTTPRoute {route} {type_}={status} ({reason:?}) on {gateway}");
        self.wait(&what, || {
            let object = self.api.get("HTTPRoute", APP, route)?;
            let generation = object["metadata"]["generation"].clone();
            let parents = object["status"]["parents"].as_array()?.clone();
            let current = parents
                .iter()
                .flat_map(|p| p["conditions"].as_array().into_iter().flatten())
                .all(|c| generation.is_null() || c["observedGeneration"] == generation);
            let parent = parents.iter().find(|p| {
                p["parentRef"]["name"] == gateway && p["parentRef"]["namespace"] == INFRA
            })?;
            (current && has(&parent["conditions"], type_, status, reason)).then_some(())
        })
        .await;
    }

    /// `InferencePoolMustHaveCondition`: the pool's status entry whose parentRef names `gateway`
    /// in its namespace (an entry without a namespace never matches) has the condition.
    async fn pool_condition(
        &self,
        pool: &str,
        gateway: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) {
        let what = format!("InferencePool {pool} {type_}={status} ({reason:?}) on {gateway}");
        self.wait(&what, || {
            let parent = self.pool_parent(pool, gateway)?;
            has(&parent["conditions"], type_, status, reason).then_some(())
        })
        .await;
    }

    fn pool_parent(&self, pool: &str, gateway: &str) -> Option<Value> {
        let object = self.api.get("InferencePool", APP, pool)?;
        let parents = object["status"]["parents"].as_array()?.clone();
        parents.into_iter().find(|p| {
            p["parentRef"]["name"] == gateway
                && p["parentRef"]["namespace"]
                    .as_str()
                    .is_some_and(|ns| !ns.is_empty() && ns == INFRA)
        })
    }

    /// The route is accepted and resolved on `gateway`, and `gateway` accepted each of `pools`:
    /// what most upstream tests check before sending traffic.
    async fn ready(&self, route: &str, gateway: &str, pools: &[&str]) {
        self.route_accepted_and_resolved(route, gateway).await;
        for pool in pools {
            self.pool_accepted(pool, gateway).await;
        }
    }

    async fn pool_accepted(&self, pool: &str, gateway: &str) {
        self.pool_condition(pool, gateway, "Accepted", "True", Some("Accepted")).await;
    }

    fn pods(&self, deployment: &str) -> &[Pod] {
        let pods = &self.pods[deployment];
        assert_eq!(pods.len(), 3, "upstream requires exactly 3 pods of {deployment}");
        pods
    }

    /// `MakeRequestAndExpectEventuallyConsistentResponse`: three matching responses in a row.
    async fn expect(&self, gateway: &str, request: &Request<'_>, want: &Want<'_>) {
        let port = self.gateways[gateway];
        let mut streak = 0;
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + CONSISTENCY;
        while streak < 3 {
            match request.send(port).await {
                Ok(response) => match want.check(request, &response) {
                    Ok(()) => streak += 1,
                    Err(why) => {
                        streak = 0;
                        last = why;
                    }
                },
                Err(e) => {
                    streak = 0;
                    last = e.to_string();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} {} via {gateway}: never consistent; last: {last}",
                request.method,
                request.path
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `total` requests, `concurrency` at a time; each must be served (a 404 or 503 is retried
    /// every 500 ms, as upstream's load loops do) by a pod `accept` takes. Returns the pods
    /// that served, with the echoed `httpPort`.
    async fn load(
        &self,
        gateway: &str,
        request: &Request<'_>,
        total: usize,
        concurrency: usize,
    ) -> Vec<(String, String)> {
        let port = self.gateways[gateway];
        let mut served = Vec::new();
        for start in (0..total).step_by(concurrency) {
            let mut set = tokio::task::JoinSet::new();
            for _ in start..(start + concurrency).min(total) {
                let request = request.owned();
                set.spawn(async move {
                    let request = request.borrowed();
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                    loop {
                        let response = request.send(port).await.expect("a response");
                        if matches!(response.status, 404 | 503)
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                        assert_eq!(response.status, 200, "{}", response.body);
                        let echo = response.json();
                        let pod = echo["pod"].as_str().unwrap_or_default().to_string();
                        let http_port = echo["httpPort"].as_str().unwrap_or_default().to_string();
                        return (pod, http_port);
                    }
                });
            }
            while let Some(result) = set.join_next().await {
                served.push(result.unwrap());
            }
        }
        served
    }
}

/// Whether `conditions` has one of `type_` with `status` (and `reason`, when given).
fn has(conditions: &Value, type_: &str, status: &str, reason: Option<&str>) -> bool {
    conditions.as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == type_ && c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
        })
    })
}

/// One request as upstream's tests make it.
struct Request<'a> {
    host: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
}

/// A [`Request`] that can move into a task.
struct OwnedRequest {
    host: Option<String>,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl OwnedRequest {
    fn borrowed(&self) -> Request<'_> {
        Request {
            host: self.host.as_deref(),
            method: &self.method,
            path: &self.path,
            headers: self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
        }
    }
}

impl<'a> Request<'a> {
    fn get(host: Option<&'a str>, path: &'a str) -> Self {
        Request { host, method: "GET", path, headers: Vec::new() }
    }

    fn post(host: Option<&'a str>, path: &'a str) -> Self {
        Request { host, method: "POST", path, headers: Vec::new() }
    }

    /// With `test-epp-endpoint-selection: {selection}`.
    fn selecting(mut self, selection: &str) -> Self {
        self.headers.push((SELECTION_HEADER, selection.to_string()));
        self
    }

    fn owned(&self) -> OwnedRequest {
        OwnedRequest {
            host: self.host.map(str::to_string),
            method: self.method.into(),
            path: self.path.into(),
            headers: self.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    async fn send(&self, port: u16) -> std::io::Result<Response> {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = if self.method == "POST" { BODY } else { "" };
        let host = self.host.map(str::to_string).unwrap_or_else(|| format!("127.0.0.1:{port}"));
        request_to(port, &host, self.method, self.path, &headers, body).await
    }
}

/// What upstream's `CompareRoundTrip` checks of a response.
#[derive(Default)]
struct Want<'a> {
    /// 200 when empty.
    statuses: &'a [u16],
    /// The served pod's name starts with this.
    pod: &'a str,
    /// Response headers that must have exactly these values.
    headers: Vec<(&'a str, String)>,
}

impl Want<'_> {
    fn pod(pod: &str) -> Want<'_> {
        Want { pod, ..Default::default() }
    }

    fn check(&self, request: &Request, response: &Response) -> Result<(), String> {
        let statuses = if self.statuses.is_empty() { &[200][..] } else { self.statuses };
        if !statuses.contains(&response.status) {
            return Err(format!("status {} ({})", response.status, response.body));
        }
        if !matches!(response.status, 200 | 204) {
            return Ok(());
        }
        let echo: Value =
            serde_json::from_str(&response.body).map_err(|e| format!("{e}: {}", response.body))?;
        if echo["path"] != request.path {
            return Err(format!("echoed path {} for {}", echo["path"], request.path));
        }
        if let Some(host) = request.host
            && echo["host"] != host
        {
            return Err(format!("echoed host {} for {host}", echo["host"]));
        }
        if echo["method"] != request.method {
            return Err(format!("echoed method {}", echo["method"]));
        }
        if echo["namespace"] != APP {
            return Err(format!("echoed namespace {}", echo["namespace"]));
        }
        for (name, value) in &request.headers {
            let got = echo["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.clone());
            if got != Some(serde_json::json!([value])) {
                return Err(format!("header {name} reached the backend as {got:?}"));
            }
        }
        for (name, value) in &self.headers {
            if response.headers.get(*name) != Some(value) {
                return Err(format!(
                    "response header {name}: {:?}, want {value}",
                    response.headers.get(*name)
                ));
            }
        }
        let pod = echo["pod"].as_str().unwrap_or_default();
        if !pod.starts_with(self.pod) {
            return Err(format!("served by {pod}, want {}", self.pod));
        }
        Ok(())
    }
}

/// A backendRef to a pool: name, port, weight.
type PoolRef<'a> = (&'a str, Option<u16>, Option<u32>);

/// An HTTPRoute in the app namespace with one rule per (path prefix, backendRefs).
fn route(
    name: &str,
    parents: &[(&str, Option<&str>)],
    hostnames: &[&str],
    rules: &[(&str, &[PoolRef])],
) -> String {
    let mut yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {APP}}}\nspec:\n  parentRefs:\n"
    );
    for (gateway, section) in parents {
        yaml.push_str(&format!(
            "  - {{group: gateway.networking.k8s.io, kind: Gateway, name: {gateway}, namespace: {INFRA}{}}}\n",
            section.map(|s| format!(", sectionName: {s}")).unwrap_or_default()
        ));
    }
    if !hostnames.is_empty() {
        yaml.push_str(&format!("  hostnames: [{}]\n", hostnames.join(", ")));
    }
    yaml.push_str("  rules:\n");
    for (prefix, backends) in rules {
        yaml.push_str(&format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    backendRefs:\n"
        ));
        for (pool, port, weight) in backends.iter() {
            yaml.push_str(&format!(
                "    - {{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}{}{}}}\n",
                port.map(|p| format!(", port: {p}")).unwrap_or_default(),
                weight.map(|w| format!(", weight: {w}")).unwrap_or_default(),
            ));
        }
    }
    yaml
}

fn ips(pods: &[&Pod]) -> String {
    pods.iter().map(|p| p.ip.to_string()).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_accepted() {
    let suite = Suite::start("inference-pool-accepted").await;
    suite.apply(&route(
        "httproute-for-inferencepool-accepted",
        &[(PRIMARY_GW, Some("http"))],
        &[],
        &[("/accepted-pool-test", &[(PRIMARY_POOL, None, None)])],
    ));
    suite.pool_condition(PRIMARY_POOL, PRIMARY_GW, "Accepted", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_resolved_refs_condition() {
    let suite = Suite::start("inference-pool-resolved-refs").await;
    let (primary_route, secondary_route) =
        ("httproute-for-primary-gw", "httproute-for-secondary-gw");
    suite.apply(&route(
        primary_route,
        &[(PRIMARY_GW, None)],
        &["primary.example.com"],
        &[("/primary-gateway-test", &[(PRIMARY_POOL, None, None)])],
    ));
    suite.apply(&route(
        secondary_route,
        &[(SECONDARY_GW, None)],
        &["secondary.example.com"],
        &[("/secondary-gateway-test", &[(PRIMARY_POOL, None, None)])],
    ));
    suite.route_accepted_and_resolved(primary_route, PRIMARY_GW).await;
    suite.route_accepted_and_resolved(secondary_route, SECONDARY_GW).await;
    suite.pool_accepted(PRIMARY_POOL, PRIMARY_GW).await;
    suite.pool_accepted(PRIMARY_POOL, SECONDARY_GW).await;
    let primary = Request::get(Some("primary.example.com"), "/primary-gateway-test");
    let secondary = Request::get(Some("secondary.example.com"), "/secondary-gateway-test");
    suite.expect(PRIMARY_GW, &primary, &Want::pod(PRIMARY_PODS)).await;
    suite.expect(SECONDARY_GW, &secondary, &Want::pod(PRIMARY_PODS)).await;

    assert!(suite.api.delete("HTTPRoute", APP, primary_route));
    tokio::time::sleep(Duration::from_secs(5)).await;
    suite.pool_accepted(PRIMARY_POOL, SECONDARY_GW).await;
    suite.expect(SECONDARY_GW, &secondary, &Want::pod(PRIMARY_PODS)).await;
    let not_found = Want { statuses: &[404], ..Default::default() };
    suite.expect(PRIMARY_GW, &primary, &not_found).await;

    assert!(suite.api.delete("HTTPRoute", APP, secondary_route));
    tokio::time::sleep(Duration::from_secs(5)).await;
    suite
        .wait("InferencePool primary has no parents", || {
            let pool = suite.api.get("InferencePool", APP, PRIMARY_POOL)?;
            pool["status"]["parents"].as_array().is_none_or(Vec::is_empty).then_some(())
        })
        .await;
    suite.expect(SECONDARY_GW, &secondary, &not_found).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_invalid_inference_pool_ref() {
    let suite = Suite::start("httproute-invalid-pool-ref").await;
    let name = "httproute-to-non-existent-pool";
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[],
        &[("/test-non-existent-pool", &[("non-existent-inference-pool", None, None)])],
    ));
    suite.route_condition(name, PRIMARY_GW, "Accepted", "True", Some("Accepted")).await;
    suite.route_condition(name, PRIMARY_GW, "ResolvedRefs", "False", Some("BackendNotFound")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_invalid_epp_service() {
    let suite = Suite::start("inference-pool-invalid-epp").await;
    suite.apply(&format!(
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
         metadata: {{name: pool-with-invalid-epp, namespace: {APP}}}\n\
         spec:\n  selector: {{matchLabels: {{app: primary-inference-model-server}}}}\n  targetPorts: [{{number: 3000}}]\n\
         \x20 endpointPickerRef: {{kind: Service, name: non-existent-epp-svc, port: {{number: 9002}}}}\n"
    ));
    let name = "httproute-for-invalid-epp-pool";
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[],
        &[("/invalid-epp-test", &[("pool-with-invalid-epp", None, None)])],
    ));
    suite.route_condition(name, PRIMARY_GW, "Accepted", "True", Some("Accepted")).await;
    suite.pool_condition("pool-with-invalid-epp", PRIMARY_GW, "ResolvedRefs", "False", None).await;
    let want = Want { statuses: &[500, 501, 502, 503, 504], ..Default::default() };
    suite.expect(PRIMARY_GW, &Request::get(None, "/invalid-epp-test"), &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_missing_epp_ref() {
    let suite = Suite::start("inference-pool-missing-epp-ref").await;
    suite.apply(&format!(
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n\
         metadata: {{name: pool-with-missing-epp-ref, namespace: {APP}}}\n\
         spec:\n  selector: {{matchLabels: {{app: primary-inference-model-server}}}}\n  targetPorts: [{{number: 3000}}]\n"
    ));
    let name = "httproute-for-missing-epp-ref-pool";
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[],
        &[("/missing-epp-ref-test", &[("pool-with-missing-epp-ref", None, None)])],
    ));
    suite.route_condition(name, PRIMARY_GW, "Accepted", "True", Some("Accepted")).await;
    // Either is conformant; aixds accepts the pool and balances over its pods itself.
    suite
        .wait("pool-with-missing-epp-ref Accepted, or refused for its missing picker", || {
            let parent = suite.pool_parent("pool-with-missing-epp-ref", PRIMARY_GW)?;
            let c = &parent["conditions"];
            (has(c, "Accepted", "True", None)
                || has(c, "Accepted", "False", Some("EndpointPickerRefMissing")))
            .then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_httproute_port_validation() {
    let suite = Suite::start("inference-pool-port-validation").await;
    for (name, host, path, port) in [
        (
            "httproute-pool-port-unspecified",
            "port-unspecified.example.com",
            "/test-port-unspecified",
            None,
        ),
        (
            "httproute-pool-port-matching",
            "port-matching.example.com",
            "/test-port-matching",
            Some(3000),
        ),
        (
            "httproute-pool-port-non-matching",
            "port-non-matching.example.com",
            "/test-port-non-matching",
            Some(8888),
        ),
    ] {
        suite.apply(&route(
            name,
            &[(PRIMARY_GW, None)],
            &[host],
            &[(path, &[(PRIMARY_POOL, port, None)])],
        ));
        suite.ready(name, PRIMARY_GW, &[PRIMARY_POOL]).await;
        suite.expect(PRIMARY_GW, &Request::get(Some(host), path), &Want::pod(PRIMARY_PODS)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_multiple_rules_different_pools() {
    let suite = Suite::start("httproute-multiple-rules").await;
    let name = "httproute-multiple-rules-different-pools";
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[],
        &[
            ("/primary", &[(PRIMARY_POOL, None, None)]),
            ("/secondary", &[(SECONDARY_POOL, None, None)]),
        ],
    ));
    suite.ready(name, PRIMARY_GW, &[PRIMARY_POOL, SECONDARY_POOL]).await;
    suite
        .expect(
            PRIMARY_GW,
            &Request::get(None, "/primary"),
            &Want::pod("primary-inference-model-server"),
        )
        .await;
    suite
        .expect(
            PRIMARY_GW,
            &Request::get(None, "/secondary"),
            &Want::pod("secondary-inference-model-server"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_multiple_gateways_different_pools() {
    let suite = Suite::start("httproute-multiple-gateways").await;
    let cases = [
        (
            "route-for-primary-gateway",
            PRIMARY_GW,
            "primary.example.com",
            "/test-primary-gateway",
            PRIMARY_POOL,
            PRIMARY_PODS,
        ),
        (
            "route-for-secondary-gateway",
            SECONDARY_GW,
            "secondary.example.com",
            "/test-secondary-gateway",
            SECONDARY_POOL,
            SECONDARY_PODS,
        ),
    ];
    for (name, gateway, host, path, pool, _) in cases {
        suite.apply(&route(name, &[(gateway, None)], &[host], &[(path, &[(pool, None, None)])]));
    }
    for (name, gateway, host, path, pool, pods) in cases {
        suite.ready(name, gateway, &[pool]).await;
        suite.expect(gateway, &Request::get(Some(host), path), &Want::pod(pods)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_following_epp_routing() {
    let suite = Suite::start("gateway-following-epp-routing").await;
    let (name, host, path) =
        ("httproute-for-primary-gw", "primary.example.com", "/primary-gateway-test");
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[host],
        &[(path, &[(PRIMARY_POOL, None, None)])],
    ));
    suite.ready(name, PRIMARY_GW, &[PRIMARY_POOL]).await;
    let pods = suite.pods(PRIMARY_PODS);
    for pod in pods {
        let request = Request::post(Some(host), path).selecting(&pod.ip.to_string());
        suite.expect(PRIMARY_GW, &request, &Want::pod(&pod.name)).await;
    }
    for chosen in [vec![&pods[2]], vec![&pods[0], &pods[1]], vec![&pods[0], &pods[1], &pods[2]]] {
        let request = Request::post(Some(host), path).selecting(&ips(&chosen));
        suite.expect(PRIMARY_GW, &request, &Want::pod("primary-inference-model-server")).await;
        for (pod, _) in suite.load(PRIMARY_GW, &request, 100, 10).await {
            assert!(chosen.iter().any(|c| c.name == pod), "{pod} is not one of {}", ips(&chosen));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_following_epp_routing_with_data_parallelism() {
    let suite = Suite::start("gateway-following-epp-routing-dp").await;
    let (name, host, path) =
        ("httproute-for-primary-gw-dp", "primary.example.com", "/primary-gateway-dp-test");
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[host],
        &[(path, &[("dp-inference-pool", None, None)])],
    ));
    suite.ready(name, PRIMARY_GW, &["dp-inference-pool"]).await;
    let pods = suite.pods("dp-inference-model-server-deployment");
    for pod in pods {
        let request = Request::post(Some(host), path).selecting(&pod.ip.to_string());
        suite.expect(PRIMARY_GW, &request, &Want::pod(&pod.name)).await;
    }
    let all = ["3000", "3002", "3004"];
    // (pod, the ports it may be served on: empty for any), as upstream's three cases.
    let cases: [Vec<(&Pod, Vec<&str>)>; 3] = [
        vec![(&pods[1], vec![])],
        vec![(&pods[0], vec![]), (&pods[2], vec!["3002"])],
        vec![(&pods[0], vec![]), (&pods[1], vec!["3000", "3004"]), (&pods[2], vec![])],
    ];
    for case in cases {
        let mut sorted = case.clone();
        sorted.sort_by_key(|(p, _)| p.ip);
        let tokens: Vec<String> = sorted
            .iter()
            .flat_map(|(pod, ports)| match ports.is_empty() {
                true => vec![pod.ip.to_string()],
                false => ports.iter().map(|port| format!("{}:{port}", pod.ip)).collect(),
            })
            .collect();
        let request = Request::post(Some(host), path).selecting(&tokens.join(","));
        suite.expect(PRIMARY_GW, &request, &Want::pod("dp-inference-model-server")).await;
        for (pod, http_port) in suite.load(PRIMARY_GW, &request, 100, 10).await {
            let (_, ports) = case
                .iter()
                .find(|(p, _)| p.name == pod)
                .unwrap_or_else(|| panic!("{pod} is not one of {}", tokens.join(",")));
            assert!(!http_port.is_empty(), "no httpPort echoed by {pod}");
            let allowed = if ports.is_empty() { &all[..] } else { &ports[..] };
            assert!(
                allowed.contains(&http_port.as_str()),
                "{pod} served on {http_port}, want one of {allowed:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_destination_endpoint_served() {
    let suite = Suite::start("gateway-destination-endpoint-served").await;
    let (name, host, path) = (
        "httproute-for-destination-endpoint-served",
        "primary.example.com",
        "/destination-endpoint-served-test",
    );
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[host],
        &[(path, &[(PRIMARY_POOL, None, None)])],
    ));
    suite.ready(name, PRIMARY_GW, &[PRIMARY_POOL]).await;
    for pod in suite.pods(PRIMARY_PODS) {
        let request = Request::post(Some(host), path).selecting(&pod.ip.to_string());
        let want = Want {
            pod: &pod.name,
            headers: vec![(SERVED_HEADER, format!("{}:3000", pod.ip))],
            ..Default::default()
        };
        suite.expect(PRIMARY_GW, &request, &want).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pool_app_protocol() {
    let suite = Suite::start("inference-pool-app-protocol").await;
    let cases = [
        (
            "h2c",
            "appprotocol-h2c-inference-pool",
            "appprotocol-inference-model-server-deployment",
            3001,
        ),
        (
            "http",
            "appprotocol-http-inference-pool",
            "appprotocol-inference-model-server-deployment",
            3000,
        ),
        ("default", PRIMARY_POOL, PRIMARY_PODS, 3000),
    ];
    for (case, pool, _, _) in cases {
        let name = format!("httproute-for-inferencepool-appprotocol-{case}");
        let host = format!("appprotocol-{case}.example.com");
        let path = format!("/inferencepool-app-protocol-{case}");
        suite.apply(&route(
            &name,
            &[(PRIMARY_GW, None)],
            &[&host],
            &[(&path, &[(pool, None, None)])],
        ));
    }
    for (case, pool, deployment, port) in cases {
        let name = format!("httproute-for-inferencepool-appprotocol-{case}");
        let host = format!("appprotocol-{case}.example.com");
        let path = format!("/inferencepool-app-protocol-{case}");
        suite.ready(&name, PRIMARY_GW, &[pool]).await;
        for pod in suite.pods(deployment) {
            let endpoint = format!("{}:{port}", pod.ip);
            let request = Request::post(Some(&host), &path).selecting(&endpoint);
            let want = Want {
                pod: &pod.name,
                headers: vec![(SERVED_HEADER, endpoint.clone())],
                ..Default::default()
            };
            suite.expect(PRIMARY_GW, &request, &want).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_weighted_across_two_inference_pools() {
    let suite = Suite::start("gateway-weighted-two-pools").await;
    let (name, host, path) =
        ("httproute-weighted-two-pools", "primary.example.com", "/weighted-two-pools-test");
    suite.apply(&route(
        name,
        &[(PRIMARY_GW, None)],
        &[host],
        &[(path, &[(PRIMARY_POOL, None, Some(70)), (SECONDARY_POOL, None, Some(30))])],
    ));
    suite.ready(name, PRIMARY_GW, &[PRIMARY_POOL, SECONDARY_POOL]).await;
    let primary = suite.pods(PRIMARY_PODS);
    let secondary = suite.pods(SECONDARY_PODS);
    for pod in primary.iter().chain(secondary) {
        let request = Request::post(Some(host), path).selecting(&format!("{}:3000", pod.ip));
        suite.expect(PRIMARY_GW, &request, &Want::pod(&pod.name)).await;
    }
    let everyone: Vec<&Pod> = primary.iter().chain(secondary).collect();
    let request = Request::post(Some(host), path).selecting(&ips(&everyone));
    suite.expect(PRIMARY_GW, &request, &Want::default()).await;
    let served = suite.load(PRIMARY_GW, &request, 200, 5).await;
    let hits = |prefix: &str| served.iter().filter(|(pod, _)| pod.starts_with(prefix)).count();
    let (p, s) = (hits(PRIMARY_PODS), hits(SECONDARY_PODS));
    assert_eq!(p + s, 200, "every request served by a pod of either pool");
    let share = p as f64 / 200.0;
    let sigma = (0.7f64 * 0.3 / 200.0).sqrt();
    let tolerance = (4.5 * sigma).max(0.10);
    assert!((share - 0.7).abs() <= tolerance, "primary share {share}, want 0.7 ± {tolerance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_unavailable_fail_open() {
    let mut suite = Suite::start("epp-unavailable-fail-open").await;
    let (name, host, path) =
        ("httproute-for-failopen-pool-gw", "secondary.example.com", "/failopen-pool-test");
    suite.apply(&route(
        name,
        &[(SECONDARY_GW, Some("http"))],
        &[host],
        &[(path, &[(SECONDARY_POOL, None, None)])],
    ));
    suite.ready(name, SECONDARY_GW, &[SECONDARY_POOL]).await;
    let first = suite.pods(SECONDARY_PODS)[0].clone();
    let request = Request::post(Some(host), path).selecting(&first.ip.to_string());
    suite.expect(SECONDARY_GW, &request, &Want::pod(&first.name)).await;
    let picks = suite.epps["secondary-endpoint-picker-svc"].picks();
    assert!(picks > 0, "the secondary pool's picker chose");

    // Upstream (as fixed by kubernetes-sigs/gateway-api-inference-extension#3037) empties the
    // secondary picker Service's endpoints; here its picker goes away.
    suite.epps.get_mut("secondary-endpoint-picker-svc").unwrap().stop_and_wait().await;
    suite.expect(SECONDARY_GW, &request, &Want::pod("secondary-inference-model-server")).await;
}
