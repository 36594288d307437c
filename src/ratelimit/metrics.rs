//! The rate limit service's metrics on `/metrics`: per bucket (a policy's rule, and the route
//! when the rule counts per route) the checks allowed, refused and refused in shadow mode, and
//! the hits charged after responses (tokens); the counter store's failures and latency.
//!
//! Per bucket, not per client: a `Distinct` selector makes a counter per header value, which
//! would make the series unbounded. Buckets come from the compiled configuration; past
//! [`MAX_SERIES`] they are summed under `bucket="other"`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::admin::metrics::{header, histogram};
use crate::extproc::metrics::escape;
use crate::xds::Histogram;

const MAX_SERIES: usize = 10_000;
/// Upper bounds of the store latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    allowed: u64,
    limited: u64,
    shadow_limited: u64,
    charged: u64,
}

pub struct RateLimitMetrics {
    buckets: Mutex<BTreeMap<String, Counts>>,
    store_errors: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
    latency: Histogram,
}

impl Default for RateLimitMetrics {
    fn default() -> Self {
        RateLimitMetrics {
            buckets: Mutex::default(),
            store_errors: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
            failed_closed: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl RateLimitMetrics {
    pub(super) fn observe(
        &self,
        bucket: &str,
        over: bool,
        shadow: bool,
        response: bool,
        hits: u64,
    ) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = if buckets.contains_key(bucket) || buckets.len() < MAX_SERIES {
            bucket
        } else {
            "other"
        };
        let counts = buckets.entry(bucket.to_string()).or_default();
        match (response, over, shadow) {
            (true, _, _) => counts.charged += hits,
            (false, true, true) => counts.shadow_limited += 1,
            (false, true, false) => counts.limited += 1,
            (false, false, _) => counts.allowed += 1,
        }
    }

    pub(super) fn store_latency(&self, took: Duration, ok: bool) {
        if ok {
            self.latency.observe(took);
        } else {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn store_failed(&self, closed: bool) {
        let counter = if closed { &self.failed_closed } else { &self.failed_open };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, w: &mut String) {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let name = "aixds_ratelimit_checks_total";
        header(
            w,
            name,
            "counter",
            "Rate limit checks per bucket, by result (allowed, limited, or shadow_limited: over \
             the limit in shadow mode, let through).",
        );
        for (bucket, c) in buckets.iter() {
            for (result, n) in [
                ("allowed", c.allowed),
                ("limited", c.limited),
                ("shadow_limited", c.shadow_limited),
            ] {
                let _ =
                    writeln!(w, "{name}{{bucket=\"{}\",result=\"{result}\"}} {n}", escape(bucket));
            }
        }
        let name = "aixds_ratelimit_charged_total";
        header(
            w,
            name,
            "counter",
            "Hits charged to each bucket when a response is done (its cost, e.g. tokens).",
        );
        for (bucket, c) in buckets.iter() {
            let _ = writeln!(w, "{name}{{bucket=\"{}\"}} {}", escape(bucket), c.charged);
        }
        drop(buckets);
        for (name, help, value) in [
            (
                "aixds_ratelimit_store_errors_total",
                "Calls to the counter store (Redis) that failed or timed out.",
                &self.store_errors,
            ),
            (
                "aixds_ratelimit_failed_open_total",
                "Checks let through because the counter store failed.",
                &self.failed_open,
            ),
            (
                "aixds_ratelimit_failed_closed_total",
                "Checks refused because the counter store failed (--ratelimit-fail-closed).",
                &self.failed_closed,
            ),
        ] {
            header(w, name, "counter", help);
            let _ = writeln!(w, "{name} {}", value.load(Ordering::Relaxed));
        }
        let name = "aixds_ratelimit_store_duration_seconds";
        header(w, name, "histogram", "Time of successful calls to the counter store.");
        histogram(w, name, "", &self.latency.values());
    }
}
