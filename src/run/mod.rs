//! The running control plane: objects in, Envoy config out, continuously.
//!
//! Takes: [`RunOptions`] (the source — manifest paths or Kubernetes —, the xDS address, compile
//! options, how to start Envoy).
//! Gives: a [`Running`] handle. One task owns the compiler and writes the graph: each burst of
//! source events becomes one batch — take the changes, apply them to the graph, recompile only
//! the affected outputs, publish (the Envoy resources, the runtime config the translation
//! ext_proc reads, and the pools the endpoint picker picks from). With Kubernetes, a status
//! writer reads the graph after each batch and writes conditions back (see
//! [`crate::kube::status`]). One gRPC server serves ADS and the ext_proc to authenticated
//! callers only (see [`grpc`]: a private socket for the Envoy started here, mutual TLS on TCP);
//! the endpoint picker has its own listener; Envoy, when started here, is a child process whose
//! logs are forwarded and which dies with aixds. A signal drains before stopping
//! ([`DrainOptions`]).

mod envoy;
mod grpc;
mod tls;

pub use envoy::{EnvoyOptions, find_envoy};
pub use grpc::{GrpcAuthError, GrpcListen, TcpAuth};
pub use tls::{ServerTls, TlsError};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::admin::{AdminState, RunMetrics};
use crate::api::ObjectKey;
use crate::compile::{CompileOptions, Compiler, Tables};
use crate::extproc::{ExtProcOptions, ExtProcService, RuntimeConfig, SharedRuntime};
use crate::graph::Graph;
use crate::picker::{Picker, PickerOptions};
use crate::source::{Feed, SourceOptions};
use crate::xds::{AdsServer, Clients, PushLog, SnapshotStore};
use grpc::PrivateSocket;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Manifest files, or Kubernetes.
    pub source: SourceOptions,
    /// Where to serve xDS and the ext_proc over TCP, and who may call; port 0 picks a free port
    /// (see [`Running::xds_addr`]). `None` opens no TCP port: the Envoy started here connects
    /// over a private socket either way.
    pub grpc: Option<GrpcListen>,
    /// Where to serve the admin HTTP endpoints; port 0 picks a free port (see
    /// [`Running::admin_addr`]); `None` serves none.
    pub admin_listen: Option<SocketAddr>,
    pub compile: CompileOptions,
    /// Envoy to start as a child process; `None` only serves xDS.
    pub envoy: Option<EnvoyOptions>,
    /// The translation ext_proc, served next to xDS.
    pub extproc: ExtProcOptions,
    /// The endpoint picker for InferencePools, on its own listener; `None` serves none.
    pub picker: Option<PickerOptions>,
    /// Where the rate limit service keeps its counters.
    pub ratelimit: crate::ratelimit::RateLimitOptions,
    /// A burst of source events that may be half done (a file still being written) ends after
    /// this long without events (a settled one after [`crate::source::SETTLED_QUIET`])...
    pub debounce: Duration,
    /// ...or this long after its first event, whichever comes first.
    pub max_delay: Duration,
    /// How [`Running::wait`] stops on a signal without losing requests.
    pub drain: DrainOptions,
}

/// A graceful stop: first the replica stops being chosen, then in-flight streams finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// How long the replica keeps serving everything after it reports NOT_SERVING (gRPC
    /// health) and 503 (`/readyz`), so that every Envoy's health check moves new streams to
    /// other replicas first. Longer than the Envoys' health-check interval.
    pub delay: Duration,
    /// Then new connections are refused and ADS streams end (Envoy reconnects elsewhere);
    /// ext_proc streams in flight may take this long to finish.
    pub timeout: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions { delay: Duration::from_secs(3), timeout: Duration::from_secs(25) }
    }
}

/// A started control plane. Dropping it stops the tasks and the Envoy child.
pub struct Running {
    /// The graph the loop maintains (read it under the read lock).
    pub graph: Arc<RwLock<Graph>>,
    pub store: Arc<SnapshotStore>,
    pub clients: Arc<Clients>,
    pub push_log: Arc<PushLog>,
    /// What the translation ext_proc serves from.
    pub runtime: SharedRuntime,
    /// The endpoint picker and where it listens, when it is served.
    pub picker: Option<Arc<Picker>>,
    pub picker_addr: Option<SocketAddr>,
    /// The TCP address xDS and the ext_proc are served on, when they are.
    pub xds_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<RunMetrics>,
    /// Counts batches applied after the initial load; tests wait on it after editing a file.
    pub batches: watch::Receiver<u64>,
    envoy: Option<envoy::EnvoyProcess>,
    stop: watch::Sender<bool>,
    health: grpc::Health,
    grpc_tasks: grpc::ServeTasks,
    drain: DrainOptions,
}

/// Starts the source and the admin server, waits for the source's initial objects (for
/// Kubernetes, until every kind is listed: `/readyz` says 503 meanwhile), publishes the first
/// snapshot, then serves xDS, runs the batch loop and starts Envoy.
pub async fn start(opts: RunOptions) -> anyhow::Result<Running> {
    let metrics = Arc::new(RunMetrics::default());
    let graph = Arc::new(RwLock::new(Graph::with_controller(opts.compile.controller_name.clone())));
    let store = Arc::new(SnapshotStore::new());
    let ads = AdsServer::new(store.clone());
    let (clients, push_log) = (ads.clients(), ads.push_log());
    let (stop, stopped) = watch::channel(false);
    let runtime = RuntimeConfig::shared_with(opts.extproc.credentials.clone());
    let extproc = ExtProcService::new(runtime.clone(), opts.extproc.clone());
    let ratelimit = crate::ratelimit::RateLimiter::new(&opts.ratelimit);
    let ratelimit_store = ratelimit.describe();
    let admin_addr = match opts.admin_listen {
        None => None,
        Some(addr) => {
            let state = AdminState {
                graph: graph.clone(),
                store: store.clone(),
                clients: clients.clone(),
                xds: ads.stats(),
                run: metrics.clone(),
                genai: extproc.metrics(),
                credentials: runtime.load().credentials.metrics(),
                ratelimit: ratelimit.metrics(),
            };
            Some(start_admin(addr, state, stopped.clone()).await?)
        }
    };

    let mut feed =
        Feed::start(&opts.source, metrics.clone(), opts.debounce, opts.max_delay).await?;
    let mut compiler = Compiler::new(opts.compile.clone());
    let picker = opts.picker.as_ref().map(|_| Picker::new());
    let initial = feed.initial().await;
    {
        let mut graph = graph.write().unwrap_or_else(|e| e.into_inner());
        for change in initial {
            change.apply_to(&mut graph);
        }
        let started = Instant::now();
        let tables = compiler.tables(&graph, None, &runtime.load().credentials);
        publish_tables(tables, &runtime, picker.as_deref());
        let initial = compiler.full(&graph);
        metrics.compiled(started.elapsed());
        store.publish(initial);
        tracing::info!(objects = graph.len(), "initial snapshot published");
    }
    metrics.set_ready();

    let shared_runtime = runtime.clone();
    // The Envoy started here reaches aixds over the private socket; others over TCP.
    let private = match opts.envoy {
        Some(_) => Some(PrivateSocket::bind()?),
        None => None,
    };
    let private_name = private.as_ref().map(|p| p.name.clone());
    let ads = ads.ending_on(stopped.clone());
    let router = move |mut server: tonic::transport::Server| {
        server
            .add_service(ads.clone().into_service())
            .add_service(extproc.clone().into_service())
            .add_service(ratelimit.clone().into_service())
    };
    let (xds_addr, health, grpc_tasks) =
        grpc::serve(router, private, opts.grpc.as_ref(), stopped.clone()).await?;
    tracing::info!(
        tcp = ?xds_addr,
        tcp_auth = opts.grpc.as_ref().map(|g| match g.auth {
            TcpAuth::MutualTls(_) => "mutual TLS",
            TcpAuth::Insecure(_) => "none (--insecure-grpc)",
        }),
        private_socket = private_name.as_deref(),
        ratelimit_counters = %ratelimit_store,
        "serving xDS (delta and state-of-the-world ADS), the translation ext_proc and the rate \
         limit service"
    );
    let picker_addr = match (&opts.picker, &picker) {
        (Some(picker_opts), Some(picker)) => {
            // Where aixds requires client certificates, so does its picker.
            let mut picker_opts = picker_opts.clone();
            if let Some(GrpcListen { auth: TcpAuth::MutualTls(tls), .. }) = &opts.grpc {
                picker_opts.tls = Some(tls.clone());
            }
            let addr = crate::picker::serve(&picker_opts, picker.clone(), stopped.clone())
                .await
                .with_context(|| {
                    format!("serving the endpoint picker on {}", picker_opts.listen)
                })?;
            tracing::info!(%addr, "serving the endpoint picker");
            Some(addr)
        }
        _ => None,
    };

    let (batch_tx, batches) = watch::channel(0u64);
    if let (Some(kube), Some((lease, gateway_service))) = (feed.kube(), opts.status()) {
        crate::kube::status::spawn(crate::kube::status::StatusWriter {
            client: kube.client().clone(),
            served: kube.served(),
            lease: lease.clone(),
            graph: graph.clone(),
            store: store.clone(),
            clients: clients.clone(),
            batches: batches.clone(),
            stopped: stopped.clone(),
            metrics: metrics.clone(),
            gateway_service: gateway_service.cloned(),
        });
    }
    let loop_store = store.clone();
    let loop_metrics = metrics.clone();
    let loop_graph = graph.clone();
    let loop_picker = picker.clone();
    let mut loop_stopped = stopped.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                wake = feed.next_wake() => if wake.is_none() { return },
                _ = loop_stopped.wait_for(|s| *s) => return,
            }
            apply_batch(
                &mut feed,
                &loop_graph,
                &mut compiler,
                &loop_store,
                &loop_metrics,
                &runtime,
                loop_picker.as_deref(),
            );
            batch_tx.send_modify(|n| *n += 1);
        }
    });

    let envoy = match (&opts.envoy, &private_name) {
        (Some(envoy_opts), Some(socket)) => {
            Some(envoy::EnvoyProcess::start(envoy_opts, &format!("unix:{socket}")).await?)
        }
        _ => None,
    };
    Ok(Running {
        graph,
        store,
        clients,
        push_log,
        runtime: shared_runtime,
        picker,
        picker_addr,
        xds_addr,
        admin_addr,
        metrics,
        batches,
        envoy,
        stop,
        health,
        grpc_tasks,
        drain: opts.drain,
    })
}

/// Serves the admin HTTP endpoints, which read the graph the loop writes (see [`crate::admin`]
/// for why that is an `Arc<RwLock<Graph>>`), until `stopped`.
async fn start_admin(
    addr: SocketAddr,
    state: AdminState,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let (listener, admin_addr) = crate::admin::bind(addr)
        .await
        .with_context(|| format!("binding the admin address {addr}"))?;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::admin::serve_until(listener, state, shutdown).await {
            tracing::error!("admin server failed: {e}");
        }
    });
    tracing::info!(%admin_addr, "serving admin HTTP (/healthz, /readyz, /metrics, /debug/graph, /debug/xds)");
    Ok(admin_addr)
}

/// One batch: reload → apply to the graph → compile the affected outputs → publish (the streams
/// then push). The graph's write lock is held only to apply the changes: compiling and
/// publishing read it, so the admin endpoints and the status writer are not held up by them
/// (this loop is the graph's only writer, so nothing changes it in between). A `batch` span
/// carries the counts; `apply`, `compile`, `tables` and `publish` spans inside it time the stages.
fn apply_batch(
    source: &mut Feed,
    graph: &RwLock<Graph>,
    compiler: &mut Compiler,
    store: &SnapshotStore,
    metrics: &RunMetrics,
    runtime: &SharedRuntime,
    picker: Option<&Picker>,
) {
    use tracing::field::Empty;
    let span = tracing::info_span!("batch", changes = Empty, affected = Empty, resources = Empty);
    let _batch = span.enter();
    let started = Instant::now();
    let changes = match source.changes() {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!("keeping the last good config: {e}");
            return;
        }
    };
    span.record("changes", changes.len());
    let mut affected = Vec::new();
    tracing::info_span!("apply").in_scope(|| {
        let mut graph = graph.write().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            affected.extend(change.apply_to(&mut graph).keys);
        }
        affected.sort();
        affected.dedup();
    });
    span.record("affected", affected.len());
    let graph = graph.read().unwrap_or_else(|e| e.into_inner());
    let compile_started = Instant::now();
    let updates = tracing::info_span!("compile").in_scope(|| compiler.update(&graph, &affected));
    let tables = tracing::info_span!("tables")
        .in_scope(|| compiler.tables(&graph, Some(&affected), &runtime.load().credentials));
    metrics.compiled(compile_started.elapsed());
    // Before Envoy hears of a new backend or endpoint, the ext_proc and the picker know it.
    let changed = tracing::info_span!("publish").in_scope(|| {
        publish_tables(tables, runtime, picker);
        store.publish(updates)
    });
    metrics.batch_applied();
    span.record("resources", changed.len());
    tracing::info!(micros = started.elapsed().as_micros() as u64, "applied source changes");
}

/// Hands the compiler's tables to the translation ext_proc and the endpoint picker.
fn publish_tables(tables: Tables, runtime: &SharedRuntime, picker: Option<&Picker>) {
    runtime.store(Arc::new(tables.runtime));
    if let Some(picker) = picker {
        picker.set_pools(tables.pools);
    }
}

impl RunOptions {
    /// Leader election and status writing, for a Kubernetes source that asks for them.
    /// How status is written: the election, and the Service whose address Gateways report.
    fn status(&self) -> Option<(&crate::kube::lease::LeaseOptions, Option<&ObjectKey>)> {
        match &self.source {
            SourceOptions::Kubernetes(kube) => {
                Some((kube.status.as_ref()?, kube.gateway_service.as_ref()))
            }
            SourceOptions::Files(_) => None,
        }
    }
}

impl Running {
    /// Runs until Ctrl-C or SIGTERM, or until Envoy exits. On a signal, drains first (see
    /// [`DrainOptions`]).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = match self.envoy.as_mut() {
            Some(envoy) => tokio::select! {
                _ = tokio::signal::ctrl_c() => Ok(()),
                _ = term.recv() => Ok(()),
                status = envoy.wait() => Err(anyhow::anyhow!("envoy exited: {status}")),
            },
            None => tokio::select! {
                _ = tokio::signal::ctrl_c() => Ok(()),
                _ = term.recv() => Ok(()),
            },
        };
        if result.is_err() {
            self.shutdown().await;
            return result;
        }
        // A second signal (an impatient Ctrl-C) stops at once.
        let mut this = self;
        tokio::select! {
            () = this.drain() => {}
            _ = tokio::signal::ctrl_c() => tracing::warn!("second signal: stopping without draining"),
            _ = term.recv() => tracing::warn!("second signal: stopping without draining"),
        }
        this.shutdown().await;
        Ok(())
    }

    /// Drains without losing a request: reports NOT_SERVING and 503 on `/readyz` while still
    /// serving for [`DrainOptions::delay`], then refuses new connections, ends the ADS streams
    /// and lets in-flight ext_proc streams finish (at most [`DrainOptions::timeout`]). Then
    /// [`Running::shutdown`] stops the rest.
    pub async fn drain(&mut self) {
        tracing::info!(delay = ?self.drain.delay, "draining: reporting NOT_SERVING, still serving");
        self.metrics.set_draining();
        self.health.set_not_serving().await;
        tokio::time::sleep(self.drain.delay).await;
        let timeout = self.drain.timeout;
        let _ = self.stop.send(true);
        let tasks = std::mem::replace(&mut self.grpc_tasks, grpc::ServeTasks::none());
        if tokio::time::timeout(timeout, tasks.join()).await.is_err() {
            tracing::warn!(?timeout, "streams still open after the drain timeout; stopping");
        }
    }

    /// Stops serving at once and stops Envoy.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(envoy) = self.envoy.take() {
            envoy.stop().await;
        }
    }

    /// Envoy's admin address, when Envoy was started here.
    pub fn envoy_admin(&self) -> Option<SocketAddr> {
        self.envoy.as_ref().map(|e| e.admin)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
