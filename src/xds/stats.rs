//! Counters of what the ADS streams sent and what Envoy rejected, per type, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::TypeUrl;

/// Monotonic counters shared by every stream; reading them never blocks a stream.
#[derive(Debug, Default)]
pub struct XdsStats {
    pushes: [AtomicU64; 4],
    resources: [AtomicU64; 4],
    nacks: [AtomicU64; 4],
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

    pub(super) fn pushed(&self, type_url: TypeUrl, resources: usize) {
        self.pushes[type_url.index()].fetch_add(1, Ordering::Relaxed);
        self.resources[type_url.index()].fetch_add(resources as u64, Ordering::Relaxed);
    }

    pub(super) fn nacked(&self, type_url: TypeUrl) {
        self.nacks[type_url.index()].fetch_add(1, Ordering::Relaxed);
    }
}
