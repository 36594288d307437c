//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Takes: [`RunMetrics`] (filled by the run loop), the xDS counters and registry, the graph and
//! the snapshot, the translation ext_proc's GenAI metrics, the cloud credentials' token fetches, the rate limit service's checks. Gives: the page. Counters and histograms are atomics bumped where things happen;
//! gauges (graph size, connected Envoys) are read when scraped, so nothing keeps them in sync.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::extproc::GenAiMetrics;
use crate::extproc::credentials::TokenMetrics;
use crate::graph::Graph;
use crate::xds::{ClientInfo, Histogram, HistogramValues, Snapshot, StreamKind, TypeUrl, XdsStats};

/// Upper bounds of the compile-time histogram buckets, in seconds.
const COMPILE_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// What the run loop and the source report: batches, compile time, readiness, watch trouble.
#[derive(Debug)]
pub struct RunMetrics {
    ready: AtomicBool,
    /// Shutdown has begun: this replica should no longer be chosen.
    draining: AtomicBool,
    /// Why the source is not current (a Kubernetes watch relisting or failing), if it is not.
    source_problem: Mutex<Option<String>>,
    batches: AtomicU64,
    compile: Histogram,
    decode_failures: AtomicU64,
    watch_failures: AtomicU64,
    /// This replica holds the status Lease.
    leader: AtomicBool,
}

impl Default for RunMetrics {
    fn default() -> Self {
        RunMetrics {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            source_problem: Mutex::new(None),
            batches: AtomicU64::new(0),
            compile: Histogram::new(COMPILE_BUCKETS),
            decode_failures: AtomicU64::new(0),
            watch_failures: AtomicU64::new(0),
            leader: AtomicBool::new(false),
        }
    }
}

impl RunMetrics {
    /// The initial snapshot is published: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on, so that no new traffic comes.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready: the initial snapshot is published, the source is current and shutdown has not
    /// begun. Otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Acquire) {
            return Err("shutting down: draining in-flight requests".into());
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(match self.source_problem() {
                Some(problem) => format!("initial snapshot not published yet: {problem}"),
                None => "initial snapshot not published yet".into(),
            });
        }
        match self.source_problem() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Sets or clears why the source is not current.
    pub fn set_source_problem(&self, problem: Option<String>) {
        *self.source_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    pub fn source_problem(&self) -> Option<String> {
        self.source_problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A watched object was skipped because it does not decode.
    pub fn decode_failed(&self) {
        self.decode_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this replica holds the status Lease (and so writes status).
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }

    /// A watch failed and is restarted.
    pub fn watch_failed(&self) {
        self.watch_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// One compile (the initial full one, or a batch's incremental one).
    pub fn compiled(&self, took: Duration) {
        self.compile.observe(took);
    }

    /// One batch of source changes applied after the initial load.
    pub fn batch_applied(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Everything one scrape reads.
pub struct Inputs<'a> {
    pub run: &'a RunMetrics,
    pub xds: &'a XdsStats,
    pub clients: &'a [ClientInfo],
    pub graph: &'a Graph,
    pub snapshot: &'a Snapshot,
    pub rejections: usize,
    pub genai: &'a GenAiMetrics,
    pub credentials: &'a TokenMetrics,
    pub ratelimit: &'a crate::ratelimit::RateLimitMetrics,
}

pub fn render(i: &Inputs) -> String {
    let mut out = String::new();
    let w = &mut out;

    header(w, "aixds_xds_connected_streams", "gauge", "Open ADS streams by kind.");
    for (kind, label) in [(StreamKind::Delta, "delta"), (StreamKind::Sotw, "sotw")] {
        let n = i.clients.iter().filter(|c| c.kind == kind).count();
        let _ = writeln!(w, "aixds_xds_connected_streams{{kind=\"{label}\"}} {n}");
    }
    per_type(w, "aixds_xds_pushes_total", "counter", "ADS responses sent.", |t| i.xds.pushes(t));
    per_type(w, "aixds_xds_resources_sent_total", "counter", "Resources in ADS responses.", |t| {
        i.xds.resources(t)
    });
    per_type(w, "aixds_xds_nacks_total", "counter", "ADS responses Envoy rejected.", |t| {
        i.xds.nacks(t)
    });
    header(
        w,
        "aixds_xds_push_latency_seconds",
        "histogram",
        "Snapshot publish to ADS response sent, for responses carrying a new snapshot.",
    );
    for t in TypeUrl::ALL {
        let labels = format!("type=\"{t}\",");
        histogram(w, "aixds_xds_push_latency_seconds", &labels, &i.xds.push_latency(t));
    }
    header(
        w,
        "aixds_xds_ack_latency_seconds",
        "histogram",
        "Snapshot publish to Envoy's ACK of the response carrying it.",
    );
    for t in TypeUrl::ALL {
        let labels = format!("type=\"{t}\",");
        histogram(w, "aixds_xds_ack_latency_seconds", &labels, &i.xds.ack_latency(t));
    }
    per_type(w, "aixds_snapshot_resources", "gauge", "Resources in the current snapshot.", |t| {
        i.snapshot.resources(t).len() as u64
    });
    header(w, "aixds_snapshot_revision", "gauge", "Revision of the current snapshot.");
    let _ = writeln!(w, "aixds_snapshot_revision {}", i.snapshot.revision);
    header(
        w,
        "aixds_envoy_rejections",
        "gauge",
        "Resources an Envoy rejects at their current version.",
    );
    let _ = writeln!(w, "aixds_envoy_rejections {}", i.rejections);

    header(
        w,
        "aixds_graph_nodes",
        "gauge",
        "Nodes in the dependency graph, placeholders included.",
    );
    let _ = writeln!(w, "aixds_graph_nodes {}", i.graph.len());
    header(w, "aixds_graph_placeholders", "gauge", "Referenced objects that do not exist.");
    let placeholders = i.graph.nodes().iter().filter(|n| n.is_placeholder()).count();
    let _ = writeln!(w, "aixds_graph_placeholders {placeholders}");
    header(w, "aixds_graph_edges", "gauge", "References in the dependency graph.");
    let _ = writeln!(w, "aixds_graph_edges {}", i.graph.edge_count());
    header(w, "aixds_batches_applied_total", "counter", "Batches of source changes applied.");
    let _ = writeln!(w, "aixds_batches_applied_total {}", i.run.batches());
    header(w, "aixds_compile_seconds", "histogram", "Time to compile the affected outputs.");
    histogram(w, "aixds_compile_seconds", "", &i.run.compile.values());
    header(
        w,
        "aixds_kube_decode_failures_total",
        "counter",
        "Watched Kubernetes objects skipped because they do not decode.",
    );
    let _ = writeln!(
        w,
        "aixds_kube_decode_failures_total {}",
        i.run.decode_failures.load(Ordering::Relaxed)
    );
    header(w, "aixds_kube_watch_failures_total", "counter", "Kubernetes watches that failed.");
    let _ = writeln!(
        w,
        "aixds_kube_watch_failures_total {}",
        i.run.watch_failures.load(Ordering::Relaxed)
    );
    header(
        w,
        "aixds_status_leader",
        "gauge",
        "1 when this replica holds the Lease and writes status.",
    );
    let _ = writeln!(w, "aixds_status_leader {}", u8::from(i.run.leader.load(Ordering::Relaxed)));
    header(w, "aixds_ready", "gauge", "1 when /readyz answers 200.");
    let _ = writeln!(w, "aixds_ready {}", u8::from(i.run.ready()));
    i.genai.render(w);
    i.credentials.render(w);
    i.ratelimit.render(w);
    out
}

pub(crate) fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn per_type(w: &mut String, name: &str, kind: &str, help: &str, value: impl Fn(TypeUrl) -> u64) {
    header(w, name, kind, help);
    for t in TypeUrl::ALL {
        let _ = writeln!(w, "{name}{{type=\"{t}\"}} {}", value(t));
    }
}

/// The samples of one histogram; `labels` is empty or ends with a comma.
pub(crate) fn histogram(w: &mut String, name: &str, labels: &str, v: &HistogramValues) {
    for (bound, count) in &v.buckets {
        let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
        let _ = writeln!(w, "{name}_bucket{{{labels}le=\"{le}\"}} {count}");
    }
    let plain = labels.trim_end_matches(',');
    let braces = if plain.is_empty() { String::new() } else { format!("{{{plain}}}") };
    let _ = writeln!(w, "{name}_sum{braces} {}", v.sum_seconds);
    let _ = writeln!(w, "{name}_count{braces} {}", v.count);
}
