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
            Store::Redis(redis) => {
                let items: Vec<(String, u64, u64)> =
                    bumps.iter().map(|b| (b.key.clone(), b.hits, b.ttl_seconds)).collect();
                redis.incr(&items).await
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "in memory".into(),
            Store::Redis(redis) => format!("Redis at {}", redis.addr()),
        }
    }
}

/// Counters in this process. Expired windows are swept at most once a second, so the map holds
/// the windows of the last second's traffic plus those still open.
#[derive(Default)]
pub struct Memory {
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// Key → (expiry in Unix seconds, count).
    values: HashMap<String, (u64, u64)>,
    swept: u64,
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
}
