//! Who is connected, what each stream holds, and what was pushed.
//!
//! Takes: each ADS stream's protocol state (read only when the registry is listed, so streams
//! copy nothing per event), and one record per response sent. Gives: a serializable [`ClientInfo`] per open stream (for a debug
//! endpoint) and the last [`PUSH_LOG_LEN`] [`PushRecord`]s, oldest first (for tests asserting
//! that a change pushed exactly the resources it should).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::TypeUrl;
use super::ack::Nack;

/// The flavour of ADS a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StreamKind {
    Delta,
    Sotw,
}

/// One type's state on one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeInfo {
    pub type_url: TypeUrl,
    pub wildcard: bool,
    /// Names subscribed explicitly (besides the wildcard).
    pub subscribed: Vec<String>,
    /// Delta: the snapshot revision of the last response; SotW: its `version_info`.
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub acked_nonce: Option<String>,
    /// Name -> version of the resources Envoy last ACKed.
    pub acked: BTreeMap<String, String>,
    /// The last rejection; kept after later ACKs (compare nonces to see which came last).
    pub last_nack: Option<Nack>,
}

/// One open ADS stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientInfo {
    /// Unique per stream: one Envoy may hold two streams while it reconnects.
    pub stream_id: u64,
    pub node_id: String,
    pub kind: StreamKind,
    /// Types the stream has requested, in [`TypeUrl`] order.
    pub types: Vec<TypeInfo>,
}

/// A stream's protocol state, summarised when the registry is listed.
pub(super) trait Summary: Send {
    fn info(&self) -> Vec<TypeInfo>;
}

/// The state of one stream, shared between its task and the registry.
pub(super) type SharedState = Arc<Mutex<dyn Summary>>;

struct Entry {
    node_id: String,
    kind: StreamKind,
    state: SharedState,
}

/// The registry of open streams.
#[derive(Default)]
pub struct Clients {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, Entry>>,
}

impl Clients {
    /// Open streams, oldest first.
    pub fn list(&self) -> Vec<ClientInfo> {
        let streams: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, e)| (*id, e.node_id.clone(), e.kind, Arc::clone(&e.state)))
            .collect();
        // Each state is locked alone, after the registry lock is released.
        streams
            .into_iter()
            .map(|(stream_id, node_id, kind, state)| {
                let types = state.lock().unwrap_or_else(|e| e.into_inner()).info();
                ClientInfo { stream_id, node_id, kind, types }
            })
            .collect()
    }

    /// Adds a stream; it stays listed until the returned registration is dropped.
    pub(super) fn register(
        self: &Arc<Self>,
        node_id: String,
        kind: StreamKind,
        state: SharedState,
    ) -> Registration {
        let stream_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(stream_id, Entry { node_id, kind, state });
        Registration { clients: Arc::clone(self), stream_id }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map stays consistent even if a holder panicked: every write is one insert/remove.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list()).finish()
    }
}

/// A stream's entry in [`Clients`]; removes it when dropped, however the stream ends.
pub(super) struct Registration {
    clients: Arc<Clients>,
    stream_id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.stream_id);
    }
}

/// One response sent to one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushRecord {
    pub node_id: String,
    pub kind: StreamKind,
    pub type_url: TypeUrl,
    /// Resources in the response (SotW: the whole requested set).
    pub names: Vec<String>,
    /// Delta `removed_resources` (always empty for SotW).
    pub removed: Vec<String>,
    pub nonce: String,
    /// Snapshot revision the response was built from.
    pub revision: u64,
}

/// How many push records are kept.
pub const PUSH_LOG_LEN: usize = 10_000;

/// The last [`PUSH_LOG_LEN`] pushes to every stream.
#[derive(Debug, Default)]
pub struct PushLog {
    records: Mutex<VecDeque<PushRecord>>,
}

impl PushLog {
    /// Kept records, oldest first.
    pub fn records(&self) -> Vec<PushRecord> {
        self.lock().iter().cloned().collect()
    }

    pub(super) fn record(&self, record: PushRecord) {
        let mut records = self.lock();
        if records.len() == PUSH_LOG_LEN {
            records.pop_front();
        }
        records.push_back(record);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<PushRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<TypeInfo>);

    impl Summary for Fixed {
        fn info(&self) -> Vec<TypeInfo> {
            self.0.clone()
        }
    }

    fn state(types: Vec<TypeInfo>) -> SharedState {
        Arc::new(Mutex::new(Fixed(types)))
    }

    #[test]
    fn registration_lists_until_dropped() {
        let clients = Arc::new(Clients::default());
        let a = clients.register("a".into(), StreamKind::Delta, state(vec![]));
        let b = clients.register("b".into(), StreamKind::Sotw, state(vec![]));
        assert_ne!(clients.list()[0].stream_id, clients.list()[1].stream_id);
        drop(a);
        let left: Vec<_> = clients.list().into_iter().map(|c| c.node_id).collect();
        assert_eq!(left, ["b"]);
        drop(b);
        assert!(clients.list().is_empty());
    }

    #[test]
    fn client_list_serializes_for_a_debug_endpoint() {
        let clients = Arc::new(Clients::default());
        let info = TypeInfo {
            type_url: TypeUrl::Cluster,
            wildcard: true,
            subscribed: Vec::new(),
            sent_version: Some("3".into()),
            sent_nonce: Some("7".into()),
            acked_version: None,
            acked_nonce: None,
            acked: BTreeMap::new(),
            last_nack: Some(Nack::new("7".into(), "bad".into(), [])),
        };
        let _stream = clients.register("envoy-1".into(), StreamKind::Delta, state(vec![info]));
        let json = serde_json::to_value(clients.list()).expect("serializable");
        assert_eq!(json[0]["node_id"], "envoy-1");
        assert_eq!(json[0]["kind"], "Delta");
        assert_eq!(json[0]["types"][0]["type_url"], "Cluster");
        assert_eq!(json[0]["types"][0]["last_nack"]["error"], "bad");
    }

    #[test]
    fn push_log_keeps_the_newest() {
        let log = PushLog::default();
        for revision in 0..(PUSH_LOG_LEN as u64 + 5) {
            log.record(PushRecord {
                node_id: "n".into(),
                kind: StreamKind::Delta,
                type_url: TypeUrl::Cluster,
                names: Vec::new(),
                removed: Vec::new(),
                nonce: revision.to_string(),
                revision,
            });
        }
        let records = log.records();
        assert_eq!(records.len(), PUSH_LOG_LEN);
        assert_eq!(records[0].revision, 5);
    }
}
