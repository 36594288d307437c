//! The published resource set and the log of what changed at each revision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{Resource, TYPE_COUNT, TypeUrl, Update};
use crate::api::ObjectKey;

/// Resources of one type by name. A persistent map: cloning it is O(1) and an insert copies
/// only its path, so publishing one change costs O(log n) however many resources there are.
pub type ResourceMap = imbl::OrdMap<String, Arc<Resource>>;

/// An immutable view of every resource, per type, at one revision.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub revision: u64,
    /// When this revision was published (`None` for the empty initial snapshot).
    pub published_at: Option<std::time::Instant>,
    resources: [ResourceMap; TYPE_COUNT],
}

impl Snapshot {
    pub fn resources(&self, type_url: TypeUrl) -> &ResourceMap {
        &self.resources[type_url.index()]
    }

    pub fn get(&self, type_url: TypeUrl, name: &str) -> Option<&Arc<Resource>> {
        self.resources[type_url.index()].get(name)
    }

    /// Every resource with its type, in [`TypeUrl`] then name order.
    pub fn all(&self) -> impl Iterator<Item = (TypeUrl, &Arc<Resource>)> {
        TypeUrl::ALL.into_iter().flat_map(|t| self.resources(t).values().map(move |r| (t, r)))
    }

    /// The resources compiled from `key`.
    pub fn produced_by(&self, key: &ObjectKey) -> Vec<(TypeUrl, &Arc<Resource>)> {
        self.all().filter(|(_, r)| r.sources.contains(key)).collect()
    }
}

/// How many revisions of change log are kept; a stream further behind compares whole types.
const LOG_REVISIONS: usize = 1024;

/// The names one revision changed.
type ChangedNames = Arc<Vec<(TypeUrl, String)>>;

/// Publishes snapshots and wakes the streams.
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    /// (revision, names changed by it), oldest first.
    log: Mutex<VecDeque<(u64, ChangedNames)>>,
    tx: watch::Sender<u64>,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        SnapshotStore {
            current: ArcSwap::from_pointee(Snapshot::default()),
            log: Mutex::new(VecDeque::new()),
            tx: watch::channel(0).0,
        }
    }
}

impl SnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Wakes with the new revision after each publish that changed something.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Applies `updates`, dropping those that change nothing (same version, or removing what is
    /// not there); a resource whose bytes are the same but whose sources changed is kept with its
    /// new sources without counting as a change. Returns the names that changed; when there are
    /// none, no new revision is made and no stream wakes.
    pub fn publish(&self, updates: Vec<Update>) -> Vec<(TypeUrl, String)> {
        // Holding the log lock for the whole publish serialises publishers.
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let mut next: Option<Snapshot> = None;
        let mut changed = Vec::new();
        for u in updates {
            let existing = old.get(u.type_url, &u.name);
            let (same, same_sources) = match (&u.resource, existing) {
                (Some(new), Some(old)) => (new.version == old.version, new.sources == old.sources),
                (None, None) => (true, true),
                _ => (false, false),
            };
            if same && same_sources {
                continue;
            }
            let snap = next.get_or_insert_with(|| (*old).clone());
            let map = &mut snap.resources[u.type_url.index()];
            match u.resource {
                Some(r) => {
                    map.insert(u.name.clone(), Arc::new(r));
                }
                None => {
                    map.remove(&u.name);
                }
            }
            // Only where an unchanged resource comes from changed: Envoy has nothing to fetch.
            if !same {
                changed.push((u.type_url, u.name));
            }
        }
        let Some(mut snap) = next else { return changed };
        if changed.is_empty() {
            self.current.store(Arc::new(snap));
            return changed;
        }
        changed.sort();
        changed.dedup();
        snap.revision = old.revision + 1;
        snap.published_at = Some(std::time::Instant::now());
        let revision = snap.revision;
        log.push_back((revision, Arc::new(changed.clone())));
        while log.len() > LOG_REVISIONS {
            log.pop_front();
        }
        self.current.store(Arc::new(snap));
        drop(log);
        self.tx.send_replace(revision);
        changed
    }

    /// Names changed after revision `since` up to the current one, or `None` when the log no
    /// longer reaches back that far (the caller then compares whole types).
    pub fn changed_since(&self, since: u64) -> Option<Vec<(TypeUrl, String)>> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load().revision;
        if since >= current {
            return Some(Vec::new());
        }
        let first = log.front()?.0;
        if since + 1 < first {
            return None;
        }
        let mut names: Vec<(TypeUrl, String)> = log
            .iter()
            .filter(|(rev, _)| *rev > since)
            .flat_map(|(_, names)| names.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::listener::v3::Listener;

    use super::*;
    use crate::api::Kind;

    #[test]
    fn new_sources_of_the_same_bytes_are_kept_without_a_new_revision() {
        let store = SnapshotStore::new();
        let listener = Listener { name: "l".into(), ..Default::default() };
        let update = |gateways: &[&str]| {
            let sources =
                gateways.iter().map(|g| ObjectKey::new(Kind::Gateway, "ns", *g)).collect();
            let resource = Resource::new("l".into(), &listener, sources);
            Update { type_url: TypeUrl::Listener, name: "l".into(), resource: Some(resource) }
        };
        assert_eq!(store.publish(vec![update(&["b"])]), [(TypeUrl::Listener, "l".to_string())]);
        let revision = store.load().revision;
        assert!(store.publish(vec![update(&["a", "b"])]).is_empty(), "Envoy has nothing to fetch");
        let snapshot = store.load();
        assert_eq!(snapshot.revision, revision);
        let sources = &snapshot.get(TypeUrl::Listener, "l").unwrap().sources;
        assert_eq!(sources.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(store.publish(vec![update(&["a", "b"])]).is_empty());
        assert_eq!(store.load().revision, revision);
    }
}
