//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Takes: [`RunMetrics`] (filled by the run loop), the xDS counters and registry, the graph and
//! the snapshot. Gives: the page. Counters are atomics bumped where things happen; gauges (graph
//! size, connected Envoys) are read when scraped, so nothing has to keep them in sync.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::graph::Graph;
use crate::xds::{ClientInfo, Snapshot, StreamKind, TypeUrl, XdsStats};

/// Upper bounds of the compile-time histogram buckets, in seconds.
const COMPILE_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// What the run loop reports: batches, compile time, readiness.
#[derive(Debug, Default)]
pub struct RunMetrics {
    ready: AtomicBool,
    batches: AtomicU64,
    /// Per bucket (not cumulative), plus one for +Inf.
    compile_buckets: [AtomicU64; COMPILE_BUCKETS.len() + 1],
    compile_micros: AtomicU64,
    compile_count: AtomicU64,
}

impl RunMetrics {
    /// The initial snapshot is published: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// One compile (the initial full one, or a batch's incremental one).
    pub fn compiled(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket =
            COMPILE_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(COMPILE_BUCKETS.len());
        self.compile_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.compile_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.compile_count.fetch_add(1, Ordering::Relaxed);
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
    let mut cumulative = 0;
    for (n, bound) in COMPILE_BUCKETS.iter().enumerate() {
        cumulative += i.run.compile_buckets[n].load(Ordering::Relaxed);
        let _ = writeln!(w, "aixds_compile_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += i.run.compile_buckets[COMPILE_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(w, "aixds_compile_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = i.run.compile_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(w, "aixds_compile_seconds_sum {sum}");
    let _ =
        writeln!(w, "aixds_compile_seconds_count {}", i.run.compile_count.load(Ordering::Relaxed));
    out
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn per_type(w: &mut String, name: &str, kind: &str, help: &str, value: impl Fn(TypeUrl) -> u64) {
    header(w, name, kind, help);
    for t in TypeUrl::ALL {
        let _ = writeln!(w, "{name}{{type=\"{t}\"}} {}", value(t));
    }
}
