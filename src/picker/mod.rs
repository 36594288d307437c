//! The reference endpoint picker (EPP) for InferencePools, served by `aixds run` on its own
//! listener (default `0.0.0.0:9002`).
//!
//! Takes: the graph's pools ([`PoolTable`], republished after every batch) and each endpoint's
//! Prometheus `/metrics`, scraped periodically. Gives: an `envoy.service.ext_proc.v3.
//! ExternalProcessor` that speaks the Gateway API Inference Extension endpoint picker protocol:
//! per request it names the endpoints to use, best first, as the `x-gateway-destination-endpoint`
//! header and `envoy.lb` dynamic metadata (a comma-separated fallback list), honours Envoy's
//! subset hint (`envoy.lb.subset_hint` / `x-gateway-destination-endpoint-subset`), answers 503
//! when no endpoint is eligible, and reports the endpoint that served the request back to the
//! client as `x-gateway-destination-endpoint-served` (see [`stream`] for the message order).
//!
//! Which pool a stream is for: the gRPC initial metadata [`POOL_METADATA`] (`namespace/name`),
//! which the per-pool filter sends; without it, the only pool if there is exactly one. The same
//! listener serves the gRPC health service for `liveness`, `readiness` and the ext_proc service.
//!
//! Scoring ([`score`]) weighs each endpoint's queue, KV-cache use and prefix affinity. Between
//! scrapes, requests the picker sent to an endpoint count as queued there, so that a burst
//! does not all land on the endpoint that looked idlest; an endpoint whose scrapes fail keeps
//! accumulating those and falls behind the ones that answer.

mod metrics;
mod request;
mod score;
mod stream;

pub use stream::{body_response, released_body};
mod table;

pub use metrics::{MetricsError, ServerMetrics};
pub use request::InferenceRequest;
pub use table::{Pool, PoolTable, SharedPools, pool_name};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::graph::Graph;
use score::{Candidate, PrefixCache};
use stream::PickerStream;

/// gRPC initial metadata naming the pool of a stream: `namespace/name`.
pub const POOL_METADATA: &str = "x-aixds-pool";
/// The request header (and `envoy.lb` metadata key) that carries the picked endpoints.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
/// The `envoy.lb` metadata key (and response header) naming the endpoint that served.
pub const SERVED_ENDPOINT: &str = "x-gateway-destination-endpoint-served";
/// The dynamic metadata namespace of the pick and of the served endpoint.
pub const LB_NAMESPACE: &str = "envoy.lb";
/// The metadata namespace and key of the subset of endpoints Envoy allows.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// How many endpoints a pick names: the first, then fallbacks for retries.
pub const MAX_FALLBACKS: usize = 4;
/// The services the gRPC health service (`grpc.health.v1.Health`) reports serving, as the
/// protocol names them.
pub const HEALTH_SERVICES: [&str; 3] = ["liveness", "readiness", EXT_PROC_HEALTH_SERVICE];
/// The health service name of the ext_proc service itself, which Envoy checks.
pub const EXT_PROC_HEALTH_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";
/// How many prompt blocks the prefix cache remembers.
const PREFIX_CACHE_ENTRIES: usize = 200_000;

/// Settings of the picker that are not in any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickerOptions {
    /// Where to serve; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How often every endpoint's `/metrics` is read...
    pub scrape_interval: Duration,
    /// ...and how long one read may take.
    pub scrape_timeout: Duration,
    /// A request body larger than this is not waited for: the pick is made without it.
    pub max_body_bytes: usize,
    /// Serve over TLS; with a client CA, only callers with a certificate from it (Envoys
    /// presenting the compiled picker cluster's client certificate). `None` is clear text.
    pub tls: Option<crate::run::ServerTls>,
}

/// The default listen address of `aixds run`: loopback, since it takes callers without a
/// client certificate unless aixds requires mutual TLS.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9002";

impl Default for PickerOptions {
    fn default() -> Self {
        PickerOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 9002)),
            scrape_interval: Duration::from_millis(200),
            scrape_timeout: Duration::from_secs(1),
            max_body_bytes: 4 * 1024 * 1024,
            tls: None,
        }
    }
}

/// What the picker knows: the pools, each endpoint's load and the prefix cache. Shared by the
/// streams, the scraper and the run loop (which republishes the pools).
#[derive(Debug)]
pub struct Picker {
    pools: SharedPools,
    endpoints: Mutex<HashMap<SocketAddr, EndpointState>>,
    prefixes: Mutex<PrefixCache>,
    /// Rotates the candidates per pick, so that equal endpoints take turns.
    turn: AtomicUsize,
}

#[derive(Debug, Default)]
struct EndpointState {
    metrics: Option<ServerMetrics>,
    /// Picks since the last good scrape.
    sent: u32,
    /// Whether the last scrape failed (logged once per change).
    failing: bool,
}

impl Picker {
    pub fn new() -> Arc<Picker> {
        Arc::new(Picker {
            pools: PoolTable::shared(),
            endpoints: Mutex::new(HashMap::new()),
            prefixes: Mutex::new(PrefixCache::new(PREFIX_CACHE_ENTRIES)),
            turn: AtomicUsize::new(0),
        })
    }

    /// Rebuilds the pools from `graph`; streams that start afterwards use them.
    pub fn publish(&self, graph: &Graph) {
        PoolTable::publish(&self.pools, graph);
    }

    /// Makes `pools` (the compiler's) the ones streams that start afterwards use.
    pub fn set_pools(&self, pools: PoolTable) {
        self.pools.store(Arc::new(pools));
    }

    pub fn pools(&self) -> Arc<PoolTable> {
        self.pools.load_full()
    }

    /// The last good scrape of `endpoint`.
    pub fn metrics(&self, endpoint: SocketAddr) -> Option<ServerMetrics> {
        self.lock_endpoints().get(&endpoint).and_then(|e| e.metrics)
    }

    /// Takes in one scrape of `endpoint`. A failure keeps the last metrics and the count of
    /// picks since.
    pub fn record_scrape(&self, endpoint: SocketAddr, scrape: Result<ServerMetrics, MetricsError>) {
        let mut endpoints = self.lock_endpoints();
        let state = endpoints.entry(endpoint).or_default();
        match scrape {
            Ok(metrics) => {
                if state.failing {
                    tracing::info!(%endpoint, "endpoint metrics are back");
                }
                state.metrics = Some(metrics);
                state.sent = 0;
                state.failing = false;
            }
            Err(e) if !state.failing => {
                tracing::warn!(%endpoint, "endpoint metrics: {e}; scoring it on what was sent there");
                state.failing = true;
            }
            Err(e) => tracing::debug!(%endpoint, "endpoint metrics: {e}"),
        }
    }

    /// `candidates` best first; the first one counts as sent a request.
    fn rank(&self, candidates: &[SocketAddr], hashes: &[u64]) -> Vec<SocketAddr> {
        if candidates.is_empty() {
            return Vec::new();
        }
        let matches = self.lock_prefixes().matches(hashes);
        let mut endpoints = self.lock_endpoints();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let scored: Vec<Candidate> = candidates[turn..]
            .iter()
            .chain(&candidates[..turn])
            .map(|&addr| {
                let state = endpoints.get(&addr);
                let metrics = state.and_then(|s| s.metrics).unwrap_or_default();
                let sent = state.map_or(0, |s| s.sent);
                let matched = matches.get(&addr).copied().unwrap_or(0);
                Candidate {
                    addr,
                    waiting: metrics.waiting + f64::from(sent),
                    kv_cache_usage: metrics.kv_cache_usage,
                    prefix_match: if hashes.is_empty() {
                        0.0
                    } else {
                        matched as f64 / hashes.len() as f64
                    },
                }
            })
            .collect();
        let ranked = score::rank(&scored);
        if let Some(first) = ranked.first() {
            let state = endpoints.entry(*first).or_default();
            state.sent = state.sent.saturating_add(1);
        }
        ranked
    }

    /// `endpoint` served a request whose prompt has these block hashes.
    fn served(&self, endpoint: SocketAddr, hashes: &[u64]) {
        if !hashes.is_empty() {
            self.lock_prefixes().record(hashes, endpoint);
        }
    }

    /// Forgets endpoints that are in no pool any more.
    fn retain(&self, live: &std::collections::BTreeSet<SocketAddr>) {
        self.lock_endpoints().retain(|addr, _| live.contains(addr));
    }

    fn lock_endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, EndpointState>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_prefixes(&self) -> std::sync::MutexGuard<'_, PrefixCache> {
        self.prefixes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct PickerService {
    picker: Arc<Picker>,
    max_body_bytes: usize,
}

impl PickerService {
    pub fn new(picker: Arc<Picker>, max_body_bytes: usize) -> PickerService {
        PickerService { picker, max_body_bytes }
    }

    pub fn into_service(self) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(self)
    }

    /// The pool a stream is for, from its metadata.
    fn pool(&self, named: Option<&str>) -> Result<Pool, Status> {
        let pools = self.picker.pools();
        match named {
            Some(name) => pools.get(name).cloned().ok_or_else(|| {
                Status::not_found(format!("endpoint picker: no accepted InferencePool {name}"))
            }),
            None => pools.only().cloned().ok_or_else(|| {
                Status::invalid_argument(format!(
                    "endpoint picker: {POOL_METADATA} is not set and {} pools are known; \
                     name one as namespace/name",
                    pools.len()
                ))
            }),
        }
    }
}

type ProcessStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for PickerService {
    type ProcessStream = ProcessStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<ProcessStream>, Status> {
        let named =
            match request.metadata().get(POOL_METADATA) {
                Some(v) => Some(v.to_str().map_err(|_| {
                    Status::invalid_argument(format!("{POOL_METADATA} is not text"))
                })?),
                None => None,
            };
        let pool = self.pool(named)?;
        let mut stream = PickerStream::new(self.picker.clone(), pool, self.max_body_bytes);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!("endpoint picker stream ended: {status}");
                        return;
                    }
                };
                match stream.on_message(message) {
                    Ok(responses) => {
                        for response in responses {
                            if tx.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(status) => {
                        tracing::warn!("{}", status.message());
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Binds `opts.listen`, then serves the picker and scrapes the endpoints until `stopped`.
/// Returns the address it listens on.
pub async fn serve(
    opts: &PickerOptions,
    picker: Arc<Picker>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &opts.tls {
        server = tls.apply(server)?;
    }
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let service = PickerService::new(picker.clone(), opts.max_body_bytes).into_service();
    // The protocol's gRPC health services; the pools are loaded before this is called.
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_SERVICES {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let mut stop_server = stopped.clone();
    tokio::spawn(async move {
        let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
            // Small replies on a request's critical path: no Nagle delay.
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let result = server
            .add_service(service)
            .add_service(health_service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_server.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("endpoint picker server failed: {e}");
        }
    });
    tokio::spawn(scrape_loop(picker, opts.scrape_interval, opts.scrape_timeout, stopped));
    Ok(addr)
}

/// Every `interval`, scrapes every endpoint of every pool at once, each within `timeout`.
async fn scrape_loop(
    picker: Arc<Picker>,
    interval: Duration,
    timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let endpoints = picker.pools().endpoints();
        picker.retain(&endpoints);
        let mut scrapes = tokio::task::JoinSet::new();
        for endpoint in endpoints {
            scrapes.spawn(async move { (endpoint, metrics::scrape(endpoint, timeout).await) });
        }
        while let Some(done) = scrapes.join_next().await {
            if let Ok((endpoint, result)) = done {
                picker.record_scrape(endpoint, result);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
