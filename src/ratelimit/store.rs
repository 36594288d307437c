//! Where the counters live: in this process (one replica), or in Redis (every replica and every
//! Envoy share one budget).
//!
//! Both count **fixed windows aligned to the wall clock**, as `envoyproxy/ratelimit` does: a
//! limit per minute counts from :00 to :59 of each minute, the counter's key names the window's
//! start, and it expires when the window ends. Replicas agree on the window without talking to
//! each other (their clocks only need to agree to well under a window), one `INCRBY` per rule
//! is the whole cost on Redis, and a counter is one integer. The price is the fixed window's
//! burst at a boundary (up to twice the limit across two adjacent windows); a sliding window
//! or a token bucket would need a read-modify-write per check (a Lua script on Redis) and
//! state per client that outlives the window.

use std::collections::HashMap;
use std::sync::Mutex;

use super::redis::{Redis, RedisError};

/// One counter to bump: its key (window included), the hits, and how long it must live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump {
    pub key: String,
    pub hits: u64,
    pub ttl_seconds: u64,
}

pub enum Store {
    Memory(Memory),
    Redis(Redis),
}

impl Store {
    /// Each counter's value after its bump, in order.
    pub async fn bump(&self, bumps: &[Bump], now: u64) -> Result<Vec<u64>, RedisError> {
        match self {
            Store::Memory(memory) => Ok(memory.bump(bumps, now)),
            Store::Redis(redis) => redis.incr(bumps).await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "in memory".into(),
            Store::Redis(redis) => format!("Redis at {}", redis.addr()),
        }
    }
}

/// The most counters kept in memory. Past it (a flood of distinct client values within one
/// window), a new counter is not kept: its request is judged as the first of its window, and
/// that is logged. Memory stays bounded (about 100 MB at this size) whatever clients send.
const MAX_COUNTERS: usize = 1_000_000;

/// Counters in this process. Expired windows are swept at most once a second, so the map holds
/// the windows of the last second's traffic plus those still open.
pub struct Memory {
    counters: Mutex<Counters>,
    max: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Memory { counters: Mutex::default(), max: MAX_COUNTERS }
    }
}

#[derive(Default)]
struct Counters {
    /// Key → (expiry in Unix seconds, count).
    values: HashMap<String, (u64, u64)>,
    swept: u64,
    /// When being full was last logged (Unix seconds).
    full_logged: u64,
}

impl Memory {
    fn bump(&self, bumps: &[Bump], now: u64) -> Vec<u64> {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if counters.swept < now {
            counters.values.retain(|_, (expiry, _)| *expiry > now);
            counters.swept = now;
        }
        bumps
            .iter()
            .map(|b| {
                if counters.values.len() >= self.max && !counters.values.contains_key(&b.key) {
                    if counters.full_logged != now {
                        counters.full_logged = now;
                        tracing::warn!(
                            max = self.max,
                            "rate limit counters full: new ones are not kept until windows expire"
                        );
                    }
                    return b.hits;
                }
                let entry =
                    counters.values.entry(b.key.clone()).or_insert((now + b.ttl_seconds, 0));
                if entry.0 <= now {
                    *entry = (now + b.ttl_seconds, 0);
                }
                entry.1 = entry.1.saturating_add(b.hits);
                entry.1
            })
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counters.lock().unwrap().values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bump(key: &str, hits: u64, ttl_seconds: u64) -> Bump {
        Bump { key: key.into(), hits, ttl_seconds }
    }

    #[test]
    fn memory_counts_per_key_and_forgets_expired_windows() {
        let memory = Memory::default();
        assert_eq!(memory.bump(&[bump("a", 3, 60), bump("b", 0, 60)], 100), [3, 0]);
        assert_eq!(memory.bump(&[bump("a", 2, 60)], 101), [5]);
        assert_eq!(memory.bump(&[bump("a", 1, 60)], 160), [1], "expired at 160: counts afresh");
        assert_eq!(memory.len(), 1, "b swept");
        assert_eq!(memory.bump(&[bump("a", u64::MAX, 60)], 161), [u64::MAX], "saturates");
    }

    #[test]
    fn memory_stays_bounded_when_clients_flood_it_with_new_keys() {
        let memory = Memory { max: 2, ..Memory::default() };
        assert_eq!(memory.bump(&[bump("a", 1, 60), bump("b", 1, 60)], 100), [1, 1]);
        assert_eq!(memory.bump(&[bump("c", 5, 60), bump("c", 5, 60)], 100), [5, 5], "not kept");
        assert_eq!(memory.bump(&[bump("a", 1, 60)], 101), [2], "kept ones still count");
        assert_eq!(memory.len(), 2);
        assert_eq!(memory.bump(&[bump("c", 5, 60)], 160), [5], "kept once windows expired");
        assert_eq!(memory.len(), 1);
    }
}
