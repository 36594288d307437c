//! The running control plane: manifests in, Envoy config out, continuously.
//!
//! Takes: [`RunOptions`] (manifest paths, the xDS address, compile options, how to start Envoy).
//! Gives: a [`Running`] handle. One task owns the graph and the compiler: each burst of file
//! events becomes one batch — reload, apply the changes to the graph, recompile only the
//! affected outputs, publish (the Envoy resources, and the runtime config the translation
//! ext_proc reads). One gRPC server serves ADS and the ext_proc; Envoy, when started
//! here, is a child process whose logs are forwarded and which stops with aixds.

mod envoy;

pub use envoy::{EnvoyOptions, find_envoy};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::compile::{CompileOptions, Compiler};
use crate::extproc::{ExtProcOptions, ExtProcService, RuntimeConfig, SharedRuntime};
use crate::graph::Graph;
use crate::source::{self, ManifestSource};
use crate::xds::{AdsServer, Clients, PushLog, SnapshotStore};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    /// Where to serve xDS; port 0 picks a free port (see [`Running::xds_addr`]).
    pub xds_listen: SocketAddr,
    pub compile: CompileOptions,
    /// Envoy to start as a child process; `None` only serves xDS.
    pub envoy: Option<EnvoyOptions>,
    /// The translation ext_proc, served next to xDS.
    pub extproc: ExtProcOptions,
    /// A burst of file events ends after this long without events...
    pub debounce: Duration,
    /// ...or this long after its first event, whichever comes first.
    pub max_delay: Duration,
}

/// A started control plane. Dropping it stops the tasks and the Envoy child.
pub struct Running {
    pub store: Arc<SnapshotStore>,
    pub clients: Arc<Clients>,
    pub push_log: Arc<PushLog>,
    /// What the translation ext_proc serves from.
    pub runtime: SharedRuntime,
    pub xds_addr: SocketAddr,
    /// Counts batches applied after the initial load; tests wait on it after editing a file.
    pub batches: watch::Receiver<u64>,
    envoy: Option<envoy::EnvoyProcess>,
    stop: watch::Sender<bool>,
}

/// Loads the manifests, publishes the first snapshot, starts serving xDS, watches the files and
/// starts Envoy.
pub async fn start(opts: RunOptions) -> anyhow::Result<Running> {
    let mut source = ManifestSource::new(opts.paths.clone());
    let mut graph = Graph::new();
    let mut compiler = Compiler::new(opts.compile.clone());
    for change in source.reload()? {
        change.apply_to(&mut graph);
    }
    report_files(&source);
    let runtime = RuntimeConfig::shared();
    RuntimeConfig::publish(&runtime, &graph);
    let store = Arc::new(SnapshotStore::new());
    store.publish(compiler.full(&graph));
    tracing::info!(objects = graph.len(), "initial snapshot published");

    let ads = AdsServer::new(store.clone());
    let extproc = ExtProcService::new(runtime.clone(), opts.extproc.clone());
    let shared_runtime = runtime.clone();
    let (clients, push_log) = (ads.clients(), ads.push_log());
    let listener = tokio::net::TcpListener::bind(opts.xds_listen)
        .await
        .with_context(|| format!("binding the xDS address {}", opts.xds_listen))?;
    let xds_addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut stop_server = stopped.clone();
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .add_service(extproc.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_server.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("xDS server failed: {e}");
        }
    });
    tracing::info!(%xds_addr, "serving xDS (delta and state-of-the-world ADS) and the translation ext_proc");

    let (_watcher, mut wakeups) = source::watch(&opts.paths, opts.debounce, opts.max_delay)
        .context("watching the manifest paths")?;
    let (batch_tx, batches) = watch::channel(0u64);
    let loop_store = store.clone();
    let mut loop_stopped = stopped.clone();
    tokio::spawn(async move {
        // The watcher lives as long as the loop.
        let _watcher = _watcher;
        loop {
            tokio::select! {
                wake = wakeups.recv() => if wake.is_none() { return },
                _ = loop_stopped.wait_for(|s| *s) => return,
            }
            apply_batch(&mut source, &mut graph, &mut compiler, &loop_store, &runtime);
            batch_tx.send_modify(|n| *n += 1);
        }
    });

    let envoy = match &opts.envoy {
        Some(envoy_opts) => Some(envoy::EnvoyProcess::start(envoy_opts, xds_addr).await?),
        None => None,
    };
    Ok(Running {
        store,
        clients,
        push_log,
        runtime: shared_runtime,
        xds_addr,
        batches,
        envoy,
        stop,
    })
}

fn apply_batch(
    source: &mut ManifestSource,
    graph: &mut Graph,
    compiler: &mut Compiler,
    store: &SnapshotStore,
    runtime: &SharedRuntime,
) {
    let started = Instant::now();
    let changes = match source.reload() {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!("keeping the last good config: {e}");
            return;
        }
    };
    report_files(source);
    let count = changes.len();
    let mut affected = Vec::new();
    for change in changes {
        affected.extend(change.apply_to(graph).keys);
    }
    affected.sort();
    affected.dedup();
    let updates = compiler.update(graph, &affected);
    // Before Envoy hears of a new backend, the ext_proc knows it.
    RuntimeConfig::publish(runtime, graph);
    let changed = store.publish(updates);
    let _span = tracing::info_span!("batch", changes = count, affected = affected.len()).entered();
    tracing::info!(
        resources = changed.len(),
        micros = started.elapsed().as_micros() as u64,
        "applied manifest changes"
    );
}

fn report_files(source: &ManifestSource) {
    for skipped in source.set().skipped() {
        tracing::warn!("{skipped}");
    }
    for error in source.set().errors() {
        tracing::error!("{error}");
    }
}

impl Running {
    /// Runs until Ctrl-C or SIGTERM, or until Envoy exits.
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
        self.shutdown().await;
        result
    }

    /// Stops serving and stops Envoy.
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
