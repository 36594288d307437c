//! Scoring: which endpoint of a pool should serve a request.
//!
//! Takes: the eligible endpoints with what is known of each (queue depth, KV-cache use, how much
//! of the prompt's prefix it served last). Gives: the endpoints ordered best first.
//!
//! Three signals, each scored in `0..=1` and weighted:
//! - queue depth (waiting requests), against the longest queue among the candidates but never
//!   against fewer than [`QUEUE_SCALE`] requests, so that one or two queued requests barely
//!   count while a long queue outweighs a prefix hit;
//! - KV-cache use: a fuller cache evicts sooner and admits fewer requests;
//! - prefix affinity: the share of the prompt's leading blocks whose hash this endpoint served
//!   last (its KV cache likely still holds them), from a bounded [`PrefixCache`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

/// The prompt is hashed in blocks of this many bytes...
pub const BLOCK_BYTES: usize = 64;
/// ...up to this many blocks (the leading 8 KiB).
pub const MAX_BLOCKS: usize = 128;
/// A queue this long (or the longest among the candidates, if longer) scores 0.
pub const QUEUE_SCALE: f64 = 8.0;

const QUEUE_WEIGHT: f64 = 3.0;
const KV_WEIGHT: f64 = 2.0;
const PREFIX_WEIGHT: f64 = 2.0;

/// One eligible endpoint and what is known of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// Requests waiting for a slot (as last scraped, plus those sent there since).
    pub waiting: f64,
    /// KV-cache use, `0..=1`.
    pub kv_cache_usage: f64,
    /// Share of the prompt's leading blocks this endpoint served last, `0..=1`.
    pub prefix_match: f64,
}

/// The candidates, best first. Ties keep the given order, so a caller that rotates the
/// candidates per request spreads equal endpoints evenly.
pub fn rank(candidates: &[Candidate]) -> Vec<SocketAddr> {
    let longest = candidates.iter().map(|c| c.waiting).fold(QUEUE_SCALE, f64::max);
    let mut scored: Vec<(f64, SocketAddr)> =
        candidates.iter().map(|c| (score(c, longest), c.addr)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, addr)| addr).collect()
}

/// The weighted score of one candidate, given the longest queue among them.
pub fn score(c: &Candidate, longest_queue: f64) -> f64 {
    let queue = 1.0 - (c.waiting.max(0.0) / longest_queue.max(QUEUE_SCALE)).min(1.0);
    let kv = 1.0 - c.kv_cache_usage.clamp(0.0, 1.0);
    let prefix = c.prefix_match.clamp(0.0, 1.0);
    QUEUE_WEIGHT * queue + KV_WEIGHT * kv + PREFIX_WEIGHT * prefix
}

/// Chained hashes of the prompt's full leading blocks: the i-th covers blocks `0..=i`, so two
/// prompts share the i-th hash only if they share everything up to it. The model is hashed in
/// first: another model's cache holds nothing of use.
pub fn prefix_hashes(model: Option<&str>, prompt: &str) -> Vec<u64> {
    let mut hasher = DefaultHasher::new();
    model.hash(&mut hasher);
    let mut chain = hasher.finish();
    prompt
        .as_bytes()
        .chunks_exact(BLOCK_BYTES)
        .take(MAX_BLOCKS)
        .map(|block| {
            let mut hasher = DefaultHasher::new();
            chain.hash(&mut hasher);
            block.hash(&mut hasher);
            chain = hasher.finish();
            chain
        })
        .collect()
}

/// Block hash → the endpoint that last served it, bounded: two generations of at most
/// `capacity / 2` entries each; when the current one is full it becomes the previous one and
/// the oldest generation is dropped. A hit in the previous generation is carried into the
/// current one, so what is used stays (an approximate LRU with O(1) operations).
#[derive(Debug)]
pub struct PrefixCache {
    current: HashMap<u64, SocketAddr>,
    previous: HashMap<u64, SocketAddr>,
    generation: usize,
}

impl PrefixCache {
    pub fn new(capacity: usize) -> PrefixCache {
        PrefixCache {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: (capacity / 2).max(1),
        }
    }

    /// Remembers that `endpoint` served the blocks `hashes` stand for.
    pub fn record(&mut self, hashes: &[u64], endpoint: SocketAddr) {
        for &hash in hashes {
            self.insert(hash, endpoint);
        }
    }

    fn insert(&mut self, hash: u64, endpoint: SocketAddr) {
        if self.current.len() >= self.generation && !self.current.contains_key(&hash) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(hash, endpoint);
    }

    fn get(&mut self, hash: u64) -> Option<SocketAddr> {
        if let Some(endpoint) = self.current.get(&hash) {
            return Some(*endpoint);
        }
        let endpoint = self.previous.remove(&hash)?;
        self.insert(hash, endpoint);
        Some(endpoint)
    }

    /// For each endpoint that served the first block last: how many leading blocks in a row it
    /// served last.
    pub fn matches(&mut self, hashes: &[u64]) -> HashMap<SocketAddr, usize> {
        let mut out = HashMap::new();
        let Some(first) = hashes.first().and_then(|h| self.get(*h)) else { return out };
        let mut run = 1;
        for hash in &hashes[1..] {
            if self.get(*hash) != Some(first) {
                break;
            }
            run += 1;
        }
        out.insert(first, run);
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 8000))
    }

    fn cand(last: u8, waiting: f64, kv: f64, prefix: f64) -> Candidate {
        Candidate { addr: addr(last), waiting, kv_cache_usage: kv, prefix_match: prefix }
    }

    #[test]
    fn the_long_queue_ranks_last() {
        let ranked = rank(&[cand(2, 50.0, 0.1, 0.0), cand(3, 0.0, 0.1, 0.0)]);
        assert_eq!(ranked, [addr(3), addr(2)]);
    }

    #[test]
    fn fuller_kv_cache_ranks_lower_at_equal_queues() {
        let ranked = rank(&[cand(2, 1.0, 0.9, 0.0), cand(3, 1.0, 0.2, 0.0)]);
        assert_eq!(ranked, [addr(3), addr(2)]);
    }

    #[test]
    fn prefix_affinity_beats_a_short_queue_but_not_a_long_one() {
        // The endpoint holding the prefix has two requests waiting: still worth it.
        let ranked = rank(&[cand(2, 0.0, 0.3, 0.0), cand(3, 2.0, 0.3, 1.0)]);
        assert_eq!(ranked[0], addr(3));
        // With a long queue there, the idle one wins.
        let ranked = rank(&[cand(2, 0.0, 0.3, 0.0), cand(3, 40.0, 0.3, 1.0)]);
        assert_eq!(ranked[0], addr(2));
    }

    #[test]
    fn ties_keep_the_given_order() {
        let a = [cand(2, 0.0, 0.0, 0.0), cand(3, 0.0, 0.0, 0.0), cand(4, 0.0, 0.0, 0.0)];
        assert_eq!(rank(&a), [addr(2), addr(3), addr(4)]);
        let b = [a[1], a[2], a[0]];
        assert_eq!(rank(&b), [addr(3), addr(4), addr(2)]);
    }

    #[test]
    fn out_of_range_inputs_are_clamped() {
        let c = cand(2, -3.0, 7.0, 2.0);
        assert_eq!(score(&c, 0.0), QUEUE_WEIGHT + PREFIX_WEIGHT);
        assert_eq!(score(&cand(2, f64::INFINITY, 0.0, 0.0), f64::INFINITY), KV_WEIGHT);
    }

    #[test]
    fn prefix_hashes_chain_full_blocks() {
        let long = "x".repeat(BLOCK_BYTES * 3 + 10);
        let hashes = prefix_hashes(Some("m"), &long);
        assert_eq!(hashes.len(), 3, "only full blocks");
        // Same leading blocks, different tail: the shared prefix has the same hashes.
        let mut other = "x".repeat(BLOCK_BYTES * 2);
        other.push_str(&"y".repeat(BLOCK_BYTES));
        let other = prefix_hashes(Some("m"), &other);
        assert_eq!(hashes[..2], other[..2]);
        assert_ne!(hashes[2], other[2]);
        // Another model shares nothing.
        assert_ne!(prefix_hashes(Some("n"), &long)[0], hashes[0]);
        assert!(prefix_hashes(None, "short").is_empty());
        let huge = "z".repeat(BLOCK_BYTES * (MAX_BLOCKS + 5));
        assert_eq!(prefix_hashes(None, &huge).len(), MAX_BLOCKS);
    }

    #[test]
    fn prefix_cache_counts_the_leading_run() {
        let mut cache = PrefixCache::new(1000);
        let prompt = prefix_hashes(Some("m"), &"p".repeat(BLOCK_BYTES * 4));
        cache.record(&prompt[..3], addr(2));
        assert_eq!(cache.matches(&prompt), HashMap::from([(addr(2), 3)]));
        // A later request served elsewhere takes over the blocks it covered.
        cache.record(&prompt[..1], addr(3));
        assert_eq!(cache.matches(&prompt), HashMap::from([(addr(3), 1)]));
        assert!(cache.matches(&[42]).is_empty());
        assert!(cache.matches(&[]).is_empty());
    }

    #[test]
    fn prefix_cache_is_bounded_and_keeps_what_is_used() {
        let mut cache = PrefixCache::new(10);
        cache.record(&[1], addr(2));
        for h in 100..104 {
            cache.record(&[h], addr(3));
        }
        // Hash 1 moved to the previous generation; using it brings it back.
        assert_eq!(cache.matches(&[1]), HashMap::from([(addr(2), 1)]));
        for h in 200..1200 {
            cache.record(&[h], addr(3));
            assert!(cache.len() <= 10);
        }
        assert!(cache.matches(&[1]).is_empty(), "unused entries age out");
    }
}
