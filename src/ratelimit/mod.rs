//! The rate limit service Envoy's rate limit filter calls (`envoy.service.ratelimit.v3`), hosted
//! on the same gRPC server as xDS and the ext_proc, so it has the same callers: authenticated
//! Envoys only.
//!
//! Takes: `ShouldRateLimit` calls whose descriptors the compiler shaped (see [`descriptor`]:
//! each names its bucket and carries its limit), and a [`Store`] for the counters.
//! Gives: per descriptor OK or OVER_LIMIT with the limit, what remains and when the window
//! resets (Envoy turns these into `x-ratelimit-*` and `retry-after` headers); metrics.
//!
//! Semantics, per descriptor, with `hits` its cost (the descriptor's `hits_addend`, else the
//! request's, at least 1):
//! - the counter of the current window is increased by `hits` (Envoy Gateway's request cost
//!   of 0 increases nothing and only checks);
//! - with `hits > 0` the request is over the limit when the counter now exceeds the limit; with
//!   `hits == 0` when the budget is already spent (counter ≥ limit). So a token budget refuses
//!   requests once it is spent, and a request that is let in is charged its usage afterwards
//!   (the response's cost, sent when the stream is done), as Envoy AI Gateway documents;
//! - a descriptor charged when the stream is done is only counted: the response is gone;
//! - in shadow mode nothing is refused, but what would have been is counted;
//! - when the counters cannot be reached (Redis down or slow), the request is let through
//!   (fail open, Envoy Gateway's default) unless aixds runs with `--ratelimit-fail-closed`:
//!   then the call fails and Envoy, whose filter is set to fail closed too, refuses the request
//!   with 503. Either way it is logged and counted, and never waits longer than the store's
//!   timeout. (Envoy Gateway likewise has one failure mode for the whole gateway.)

pub mod descriptor;
mod metrics;
pub mod quota;
pub mod redis;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tonic::{Request, Response, Status};

pub use metrics::RateLimitMetrics;
pub use store::Store;

use descriptor::{Check, Unit};
use store::Bump;

/// The most hits one descriptor may add (Envoy's own bound on `hits_addend`).
const MAX_HITS: u64 = 1_000_000_000;

/// Where the counters are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitOptions {
    /// Redis shared by every replica; `None` keeps them in this process.
    pub redis: Option<redis::RedisConfig>,
    /// How long a check may wait for Redis.
    pub timeout: std::time::Duration,
    /// Without its counters a check fails (and Envoy, told the same, refuses the request)
    /// instead of letting the request through.
    pub fail_closed: bool,
}

impl Default for RateLimitOptions {
    fn default() -> Self {
        RateLimitOptions {
            redis: None,
            timeout: std::time::Duration::from_millis(100),
            fail_closed: false,
        }
    }
}

impl RateLimitOptions {
    fn store(&self) -> Store {
        match &self.redis {
            Some(config) => Store::Redis(redis::Redis::new(config.clone(), self.timeout)),
            None => Store::Memory(store::Memory::default()),
        }
    }
}

/// The service: cheap to clone, one per gRPC server.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    fail_closed: bool,
    metrics: Arc<RateLimitMetrics>,
    /// Unix second of the last store failure logged: one warning per second at most.
    logged: AtomicU64,
}

impl RateLimiter {
    pub fn new(opts: &RateLimitOptions) -> RateLimiter {
        RateLimiter::with_store(opts.store(), opts.fail_closed)
    }

    pub fn with_store(store: Store, fail_closed: bool) -> RateLimiter {
        let inner =
            Inner { store, fail_closed, metrics: Arc::default(), logged: AtomicU64::new(0) };
        RateLimiter { inner: Arc::new(inner) }
    }

    pub fn into_service(self) -> RateLimitServiceServer<RateLimiter> {
        RateLimitServiceServer::new(self)
    }

    pub fn metrics(&self) -> Arc<RateLimitMetrics> {
        self.inner.metrics.clone()
    }

    pub fn describe(&self) -> String {
        self.inner.store.describe()
    }

    /// The answer to one call at `now` (Unix seconds).
    pub async fn check(
        &self,
        request: &RateLimitRequest,
        now: u64,
    ) -> Result<RateLimitResponse, Status> {
        let request_hits = u64::from(request.hits_addend).max(1);
        let checks: Vec<Option<(Check, u64)>> = request
            .descriptors
            .iter()
            .map(|d| {
                let hits = d.hits_addend.map_or(request_hits, |h| h.value).min(MAX_HITS);
                descriptor::read(d).map(|c| (c, hits))
            })
            .collect();
        let bumps: Vec<Bump> = checks
            .iter()
            .flatten()
            .map(|(check, hits)| Bump {
                key: counter_key(&request.domain, check, now),
                hits: *hits,
                ttl_seconds: window_end(check.limit.unit, now) - now,
            })
            .collect();
        if bumps.is_empty() {
            let statuses = request.descriptors.iter().map(|_| ok_status()).collect();
            return Ok(response(Code::Ok, statuses));
        }
        let started = Instant::now();
        let counts = self.inner.store.bump(&bumps, now).await;
        let metrics = &self.inner.metrics;
        metrics.store_latency(started.elapsed(), counts.is_ok());
        let counts = match counts {
            Ok(counts) => counts,
            Err(e) => {
                let closed = self.inner.fail_closed;
                metrics.store_failed(closed);
                let second = self.inner.logged.swap(now, Ordering::Relaxed);
                if second != now {
                    tracing::warn!(error = %e, fail_closed = closed, "rate limit counters unavailable");
                }
                if closed {
                    return Err(Status::unavailable(format!(
                        "rate limit counters unavailable: {e}"
                    )));
                }
                let statuses = request.descriptors.iter().map(|_| ok_status()).collect();
                return Ok(response(Code::Ok, statuses));
            }
        };
        let mut counts = counts.into_iter();
        let mut overall = Code::Ok;
        let statuses = checks
            .iter()
            .map(|check| {
                let Some((check, hits)) = check else { return ok_status() };
                let count = counts.next().unwrap_or(0);
                let limit = check.limit.requests;
                let over =
                    !check.response && if *hits == 0 { count >= limit } else { count > limit };
                metrics.observe(&check.bucket, over, check.shadow, check.response, *hits);
                let code = if over && !check.shadow { Code::OverLimit } else { Code::Ok };
                if code == Code::OverLimit {
                    overall = Code::OverLimit;
                }
                DescriptorStatus {
                    code: code as i32,
                    current_limit: Some(RateLimit {
                        name: String::new(),
                        requests_per_unit: u32::try_from(limit).unwrap_or(u32::MAX),
                        unit: proto_unit(check.limit.unit) as i32,
                    }),
                    limit_remaining: u32::try_from(limit.saturating_sub(count)).unwrap_or(u32::MAX),
                    duration_until_reset: Some(ProtoDuration {
                        seconds: (window_end(check.limit.unit, now) - now) as i64,
                        nanos: 0,
                    }),
                    ..Default::default()
                }
            })
            .collect();
        Ok(response(overall, statuses))
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.check(request.get_ref(), now).await.map(Response::new)
    }
}

/// The counter of `check`'s current window: a hash of its identity (client-chosen header
/// values can be long and contain anything), the window's length and its start.
fn counter_key(domain: &str, check: &Check, now: u64) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in std::iter::once(domain)
        .chain(check.identity.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
    {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    let seconds = check.limit.unit.seconds();
    format!("aixds:rl:{hex}:{seconds}:{}", now / seconds * seconds)
}

/// When the window holding `now` ends.
fn window_end(unit: Unit, now: u64) -> u64 {
    let seconds = unit.seconds();
    (now / seconds + 1) * seconds
}

fn proto_unit(unit: Unit) -> rate_limit::Unit {
    match unit {
        Unit::Second => rate_limit::Unit::Second,
        Unit::Minute => rate_limit::Unit::Minute,
        Unit::Hour => rate_limit::Unit::Hour,
        Unit::Day => rate_limit::Unit::Day,
        Unit::Month => rate_limit::Unit::Month,
        Unit::Year => rate_limit::Unit::Year,
    }
}

fn ok_status() -> DescriptorStatus {
    DescriptorStatus { code: Code::Ok as i32, ..Default::default() }
}

fn response(code: Code, statuses: Vec<DescriptorStatus>) -> RateLimitResponse {
    RateLimitResponse { overall_code: code as i32, statuses, ..Default::default() }
}

#[cfg(test)]
mod tests;
