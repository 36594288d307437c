//! Counters and latency histograms of what the ADS streams sent and what Envoy answered, per
//! type, for `/metrics`.
//!
//! Push latency runs from the snapshot's publish to the response leaving aixds; ACK latency from
//! the publish to Envoy's ACK of that response. Only responses that carry a newer snapshot than
//! the stream had are timed: a response to a new subscription is not a propagation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{TYPE_COUNT, TypeUrl};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A Prometheus-style histogram with fixed bounds; observing never blocks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one for +Inf.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// A histogram as read: cumulative counts per upper bound (+Inf last), the sum and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValues {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn values(&self) -> HistogramValues {
        let mut total = 0;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        let sum_seconds = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        HistogramValues { buckets, sum_seconds, count: total }
    }
}

/// Shared by every stream; reading never blocks a stream.
#[derive(Debug)]
pub struct XdsStats {
    pushes: [AtomicU64; TYPE_COUNT],
    resources: [AtomicU64; TYPE_COUNT],
    nacks: [AtomicU64; TYPE_COUNT],
    push_latency: [Histogram; TYPE_COUNT],
    ack_latency: [Histogram; TYPE_COUNT],
}

impl Default for XdsStats {
    fn default() -> Self {
        XdsStats {
            pushes: Default::default(),
            resources: Default::default(),
            nacks: Default::default(),
            push_latency: std::array::from_fn(|_| Histogram::new(LATENCY_BUCKETS)),
            ack_latency: std::array::from_fn(|_| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

impl XdsStats {
    /// Responses sent for `type_url`.
    pub fn pushes(&self, type_url: TypeUrl) -> u64 {
        self.pushes[type_url.index()].load(Ordering::Relaxed)
    }

    /// Resources carried by those responses (SotW counts the whole set each time).
    pub fn resources(&self, type_url: TypeUrl) -> u64 {
        self.resources[type_url.index()].load(Ordering::Relaxed)
    }

    /// Responses Envoy rejected.
    pub fn nacks(&self, type_url: TypeUrl) -> u64 {
        self.nacks[type_url.index()].load(Ordering::Relaxed)
    }

    /// Snapshot publish → response sent.
    pub fn push_latency(&self, type_url: TypeUrl) -> HistogramValues {
        self.push_latency[type_url.index()].values()
    }

    /// Snapshot publish → response ACKed.
    pub fn ack_latency(&self, type_url: TypeUrl) -> HistogramValues {
        self.ack_latency[type_url.index()].values()
    }

    pub(super) fn pushed(&self, type_url: TypeUrl, resources: usize) {
        self.pushes[type_url.index()].fetch_add(1, Ordering::Relaxed);
        self.resources[type_url.index()].fetch_add(resources as u64, Ordering::Relaxed);
    }

    pub(super) fn nacked(&self, type_url: TypeUrl) {
        self.nacks[type_url.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Responses sent by one stream and not yet answered, with their snapshot's publish time.
#[derive(Debug, Default)]
pub(super) struct Timings {
    awaiting: HashMap<String, (TypeUrl, Instant)>,
}

/// Envoy answers every response; more unanswered than this means it stopped, so start over.
const MAX_AWAITING: usize = 256;

impl Timings {
    pub(super) fn sent(
        &mut self,
        stats: &XdsStats,
        type_url: TypeUrl,
        nonce: String,
        published: Instant,
    ) {
        stats.push_latency[type_url.index()].observe(published.elapsed());
        if self.awaiting.len() >= MAX_AWAITING {
            self.awaiting.clear();
        }
        self.awaiting.insert(nonce, (type_url, published));
    }

    pub(super) fn answered(&mut self, stats: &XdsStats, nonce: &str, acked: bool) {
        if let Some((type_url, published)) = self.awaiting.remove(nonce)
            && acked
        {
            stats.ack_latency[type_url.index()].observe(published.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(1));
        let v = h.values();
        assert_eq!(v.buckets, [(0.01, 1), (0.1, 2), (f64::INFINITY, 3)]);
        assert_eq!(v.count, 3);
        assert!((v.sum_seconds - 1.055).abs() < 1e-9);
    }
}
