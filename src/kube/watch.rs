//! The Kubernetes source: one kube-runtime watcher per kind in [`WATCHED`], turned into the same
//! [`Change`]s the manifest files give.
//!
//! **What is watched.** Every kind the graph reads, in all namespaces or in the one given
//! (GatewayClasses, which have no namespace, in all). Secrets: all in the watched namespaces except Helm
//! release records and service-account tokens (a field selector): references to Secrets are by
//! name from objects that arrive in any order, so watching only the referenced ones would mean
//! restarting a watch per reference change, and labels on Secrets would be a new contract for
//! users. Pods: every *running* Pod (a field selector): an InferencePool selects Pods by labels,
//! and one label selector cannot express "any pool's selector" (there is no OR across
//! selectors), so the graph's label index does the selecting; non-running Pods have no address
//! to send traffic to. Only the fields the graph reads are kept of a Pod (labels, address,
//! readiness), so status churn of other fields costs no graph work.
//!
//! **Decoding.** Objects arrive as `DynamicObject`s and are parsed by [`api::parse_document`],
//! exactly as manifests are. One that does not parse is skipped and reported (a warning and
//! `aixds_kube_decode_failures_total`); if an earlier version parsed, that version stays, as a
//! broken edit of a manifest file keeps the last good objects. The watch goes on.
//!
//! **Convergence.** The watcher lists, then watches from the list's resourceVersion. Each list
//! (the first, after `410 Gone`, after a failure) ends with the set of objects that exist: any
//! object aixds knew that the list no longer holds is deleted, so deletes missed while
//! disconnected are noticed. A watch connection that ends or is cut is resumed from the last
//! resourceVersion (kube-runtime does that; nothing is missed, no list is needed). A watch that
//! fails (API server unreachable, the resumed watch refused) is restarted with a backoff by
//! listing again.
//!
//! **Optional CRDs.** Before watching a custom kind, discovery is asked which of the versions
//! aixds reads the API server serves. A kind that is not served is not an error: it has no
//! objects, references to it say the CRD is missing (see [`Change::KindMissing`]), and discovery
//! is asked again every `discovery_interval`, so a CRD installed later is watched without a
//! restart. A CRD removed while watched ends its watch; its objects are deleted.
//!
//! **Readiness.** [`KubeSource::synced`] completes when every kind has been listed once (or found
//! not installed); the run loop serves xDS only after that. Afterwards a kind that is listing
//! again or whose watch fails makes `/readyz` answer 503 with the reason; the last snapshot keeps
//! being served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;

use super::rbac::{WATCHED, Watched};
use super::{KubeOptions, is_not_found};
use crate::admin::RunMetrics;
use crate::api::{self, Kind, Object, ObjectKey, ParseOutcome};
use crate::source::{Change, Event};

/// Where one kind's watch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindState {
    /// Discovery or the (re)list is under way.
    Listing,
    /// Listed; watching.
    Synced,
    /// The API server does not serve the kind (its CRD is not installed).
    NotInstalled,
    /// The last attempt failed; retrying.
    Failing(String),
}

impl KindState {
    fn settled(&self) -> bool {
        matches!(self, KindState::Synced | KindState::NotInstalled)
    }
}

/// The version the API server serves of each watched kind, as last discovered.
#[derive(Clone, Default)]
pub struct Served(Arc<Mutex<HashMap<Kind, ApiResource>>>);

impl Served {
    pub fn get(&self, kind: Kind) -> Option<ApiResource> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&kind).cloned()
    }

    fn set(&self, kind: Kind, resource: Option<&ApiResource>) {
        let mut served = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match resource {
            Some(r) => served.insert(kind, r.clone()),
            None => served.remove(&kind),
        };
    }
}

/// What a batch has not taken yet, per object: the latest version, or a delete.
enum Pending {
    Apply(Box<Object>),
    Delete,
}

struct Shared {
    pending: Mutex<BTreeMap<ObjectKey, Pending>>,
    /// Kinds whose CRD went missing (`true`) or came back (`false`) since the last batch.
    missing: Mutex<BTreeMap<Kind, bool>>,
    states: watch::Sender<BTreeMap<Kind, KindState>>,
    /// Every event from the API server is a whole object: settled.
    wake: mpsc::UnboundedSender<Event>,
    metrics: Arc<RunMetrics>,
    served: Served,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, key: ObjectKey, change: Pending) {
        self.pending().insert(key, change);
        let _ = self.wake.send(Event::Settled);
    }

    fn set_missing(&self, kind: Kind, missing: bool) {
        self.missing.lock().unwrap_or_else(|e| e.into_inner()).insert(kind, missing);
        let _ = self.wake.send(Event::Settled);
    }

    /// Sets the kind's state and tells `/readyz` what, if anything, keeps the watches from being
    /// current. Both under the channel's write lock: two kinds settling at once must not store
    /// their reports in the opposite order, leaving a stale reason (and a 503) behind.
    fn set_state(&self, kind: Kind, state: KindState) {
        self.states.send_if_modified(|states| {
            if states.get(&kind) == Some(&state) {
                return false;
            }
            states.insert(kind, state);
            self.metrics.set_source_problem(problem(states));
            true
        });
    }
}

/// Why the watches are not current, if they are not.
fn problem(states: &BTreeMap<Kind, KindState>) -> Option<String> {
    states.iter().find_map(|(kind, state)| match state {
        KindState::Listing => Some(format!("listing {kind}")),
        KindState::Failing(e) => Some(format!("watch of {kind} failing: {e}")),
        KindState::Synced | KindState::NotInstalled => None,
    })
}

/// The running watches. Dropping it stops them.
pub struct KubeSource {
    shared: Arc<Shared>,
    client: kube::Client,
    wakeups: mpsc::Receiver<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one watch per kind. Bursts of events wake [`KubeSource::next_wake`] once (see
    /// [`crate::source::debounce`]): objects are whole, so a change wakes it at once, and one
    /// that keeps coming at most `max_delay` after the first.
    pub async fn start(
        opts: &KubeOptions,
        metrics: Arc<RunMetrics>,
        quiet: Duration,
        max_delay: Duration,
    ) -> Result<KubeSource, kube::Error> {
        let client = super::client(opts).await?;
        let (wake, raw) = mpsc::unbounded_channel();
        let initial: BTreeMap<Kind, KindState> =
            WATCHED.iter().map(|w| (w.kind, KindState::Listing)).collect();
        metrics.set_source_problem(problem(&initial));
        let shared = Arc::new(Shared {
            pending: Mutex::new(BTreeMap::new()),
            missing: Mutex::new(BTreeMap::new()),
            states: watch::channel(initial).0,
            wake,
            metrics,
            served: Served::default(),
        });
        let tasks = WATCHED
            .iter()
            .map(|w| {
                let task = KindWatch {
                    w: *w,
                    client: client.clone(),
                    namespace: opts.namespace.clone(),
                    shared: shared.clone(),
                    discovery_interval: opts.discovery_interval,
                    known: HashMap::new(),
                    relist: None,
                };
                tokio::spawn(task.run())
            })
            .collect();
        let wakeups = crate::source::debounce(raw, quiet, max_delay);
        Ok(KubeSource { shared, client, wakeups, tasks })
    }

    /// Completes once every kind has been listed (or found not installed).
    pub async fn synced(&self) {
        let mut states = self.shared.states.subscribe();
        let _ = states.wait_for(|s| s.values().all(KindState::settled)).await;
    }

    /// Each kind's state, for tests and debugging.
    pub fn states(&self) -> BTreeMap<Kind, KindState> {
        self.shared.states.borrow().clone()
    }

    /// Waits for the next burst of events; `None` when the watches are gone.
    pub async fn next_wake(&mut self) -> Option<()> {
        self.wakeups.recv().await
    }

    /// Everything that changed since the last call.
    pub fn changes(&self) -> Vec<Change> {
        let missing =
            std::mem::take(&mut *self.shared.missing.lock().unwrap_or_else(|e| e.into_inner()));
        let pending = std::mem::take(&mut *self.shared.pending());
        let mut out: Vec<Change> = missing
            .into_iter()
            .map(|(kind, missing)| Change::KindMissing {
                kind,
                message: missing.then(|| crd_missing_message(kind)),
            })
            .collect();
        out.extend(pending.into_iter().map(|(key, p)| match p {
            Pending::Apply(object) => Change::Apply { object, conflict: None },
            Pending::Delete => Change::Delete(key),
        }));
        out
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn served(&self) -> Served {
        self.shared.served.clone()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn crd_missing_message(kind: Kind) -> String {
    format!(
        "the {kind} CRD ({}/{}) is not installed in the cluster",
        kind.group(),
        kind.versions().join(" or ")
    )
}

/// One kind's watch loop and what it has handed out.
struct KindWatch {
    w: Watched,
    client: kube::Client,
    namespace: Option<String>,
    shared: Arc<Shared>,
    discovery_interval: Duration,
    /// Every object of this kind the graph has, with its content hash.
    known: HashMap<ObjectKey, u64>,
    /// During a list: the objects it has given so far.
    relist: Option<HashSet<ObjectKey>>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl KindWatch {
    async fn run(mut self) {
        let kind = self.w.kind;
        let mut backoff = MIN_BACKOFF;
        let mut was_missing = false;
        loop {
            let resource = match self.discover().await {
                Ok(Some(resource)) => resource,
                Ok(None) => {
                    self.shared.served.set(kind, None);
                    if !was_missing {
                        tracing::warn!("{}; watching for it", crd_missing_message(kind));
                        self.forget_all();
                        self.shared.set_missing(kind, true);
                        was_missing = true;
                    }
                    self.shared.set_state(kind, KindState::NotInstalled);
                    tokio::time::sleep(self.discovery_interval).await;
                    continue;
                }
                Err(e) => {
                    self.failed(format!("discovery: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            self.shared.served.set(kind, Some(&resource));
            if was_missing {
                tracing::info!(kind = %kind, version = %resource.version, "CRD installed; watching");
                self.shared.set_missing(kind, false);
                was_missing = false;
            }
            self.shared.set_state(kind, KindState::Listing);
            let api: Api<DynamicObject> = match &self.namespace {
                Some(ns) if kind.namespaced() => {
                    Api::namespaced_with(self.client.clone(), ns, &resource)
                }
                _ => Api::all_with(self.client.clone(), &resource),
            };
            let mut config = watcher::Config::default();
            if let Some(fields) = self.w.field_selector {
                config = config.fields(fields);
            }
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if self.handle(event, &resource) {
                            self.shared.set_state(kind, KindState::Synced);
                            backoff = MIN_BACKOFF;
                        }
                    }
                    // The watcher relists by itself after 410 Gone.
                    Err(watcher::Error::WatchError(e)) if e.code == 410 => {
                        tracing::debug!(kind = %kind, "resourceVersion expired; relisting");
                        self.shared.set_state(kind, KindState::Listing);
                    }
                    Err(e) => {
                        self.failed(e.to_string());
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn failed(&self, error: String) {
        tracing::warn!(kind = %self.w.kind, "watch failed, retrying: {error}");
        self.shared.metrics.watch_failed();
        self.shared.set_state(self.w.kind, KindState::Failing(error));
    }

    /// The served version of the kind, preferred first; `None` when none is served.
    async fn discover(&self) -> Result<Option<ApiResource>, kube::Error> {
        let kind = self.w.kind;
        let group = kind.group();
        for version in kind.versions() {
            let resource = ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.as_str().to_string(),
                plural: self.w.plural.to_string(),
            };
            // The core kinds are always served.
            if group.is_empty() {
                return Ok(Some(resource));
            }
            match self.client.list_api_group_resources(&resource.api_version).await {
                Ok(list) if list.resources.iter().any(|r| r.name == self.w.plural) => {
                    return Ok(Some(resource));
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Applies one watcher event; true when a list just completed.
    fn handle(&mut self, event: watcher::Event<DynamicObject>, resource: &ApiResource) -> bool {
        match event {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(o) => {
                if let Some(key) = self.upsert(o, resource)
                    && let Some(seen) = &mut self.relist
                {
                    seen.insert(key);
                }
            }
            watcher::Event::InitDone => {
                let seen = self.relist.take().unwrap_or_default();
                let gone: Vec<ObjectKey> =
                    self.known.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                for key in gone {
                    self.known.remove(&key);
                    self.shared.push(key, Pending::Delete);
                }
                return true;
            }
            watcher::Event::Apply(o) => {
                self.upsert(o, resource);
            }
            watcher::Event::Delete(o) => {
                let key = self.key(&o);
                if self.known.remove(&key).is_some() {
                    self.shared.push(key, Pending::Delete);
                }
            }
        }
        false
    }

    fn key(&self, o: &DynamicObject) -> ObjectKey {
        ObjectKey::new(
            self.w.kind,
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// Hands out the object if it changed; returns its key (also when it did not decode).
    fn upsert(&mut self, o: DynamicObject, resource: &ApiResource) -> Option<ObjectKey> {
        let key = self.key(&o);
        if key.name.is_empty() {
            return None;
        }
        match decode(o, resource, self.w.kind) {
            Ok(object) => {
                if self.known.get(&key) != Some(&object.content_hash) {
                    self.known.insert(key.clone(), object.content_hash);
                    self.shared.push(key.clone(), Pending::Apply(Box::new(object)));
                }
            }
            Err(e) => {
                tracing::warn!(object = %key, "skipping an object that does not decode: {e}");
                self.shared.metrics.decode_failed();
            }
        }
        Some(key)
    }

    /// The kind is gone from the API server: so are its objects.
    fn forget_all(&mut self) {
        for (key, _) in self.known.drain() {
            self.shared.push(key, Pending::Delete);
        }
    }
}

/// A watched object as the graph's [`Object`]: the fields the API server maintains
/// (resourceVersion, managedFields, status) are dropped, so that only a change of what the user
/// wrote changes the content hash. Pods keep only labels and the status fields the graph reads,
/// Services their load balancer's addresses.
fn decode(o: DynamicObject, resource: &ApiResource, kind: Kind) -> Result<Object, String> {
    let mut value = serde_json::to_value(&o).map_err(|e| e.to_string())?;
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    // A Service's load balancer addresses are what Gateways report as theirs.
    let load_balancer = match kind {
        Kind::Service => value.pointer("/status/loadBalancer").cloned(),
        _ => None,
    };
    if kind == Kind::Pod {
        value = trim_pod(&value);
    } else if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
        if let Some(lb) = load_balancer {
            fields.insert("status".into(), serde_json::json!({ "loadBalancer": lb }));
        }
    }
    let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    match api::parse_document(&text) {
        Ok(ParseOutcome::Object(object)) => Ok(*object),
        Ok(_) => Err(format!("{} is not a kind aixds reads", resource.api_version)),
        Err(e) => Err(e.to_string()),
    }
}

fn trim_pod(pod: &serde_json::Value) -> serde_json::Value {
    let meta = &pod["metadata"];
    let status = &pod["status"];
    let conditions: Vec<serde_json::Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| serde_json::json!({"type": c["type"], "status": c["status"]}))
        .collect();
    serde_json::json!({
        "apiVersion": pod["apiVersion"],
        "kind": pod["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": meta.get("labels").cloned().unwrap_or_else(|| serde_json::json!({})),
        },
        "status": {"podIP": status["podIP"], "phase": status["phase"], "conditions": conditions},
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::Spec;

    fn resource(kind: Kind, version: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: kind.group().into(),
            version: version.into(),
            api_version: if kind.group().is_empty() {
                version.into()
            } else {
                format!("{}/{version}", kind.group())
            },
            kind: kind.as_str().into(),
            plural: plural.into(),
        }
    }

    fn object(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fields_the_api_server_maintains_do_not_change_the_hash() {
        let r = resource(Kind::AIServiceBackend, "v1beta1", "aiservicebackends");
        let spec = json!({"schema": {"name": "OpenAI"}, "backendRef": {"name": "b"}});
        let first = object(json!({
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1"},
            "spec": spec,
        }));
        let written = object(json!({
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "2",
                         "managedFields": [{"manager": "aixds"}]},
            "spec": spec,
            "status": {"conditions": [{"type": "Accepted", "status": "True"}]},
        }));
        let first = decode(first, &r, Kind::AIServiceBackend).unwrap();
        let written = decode(written, &r, Kind::AIServiceBackend).unwrap();
        assert_eq!(first.key, ObjectKey::new(Kind::AIServiceBackend, "ns", "a"));
        assert_eq!(first.content_hash, written.content_hash);

        let edited = object(json!({
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "3"},
            "spec": {"schema": {"name": "OpenAI"}, "backendRef": {"name": "c"}},
        }));
        let edited = decode(edited, &r, Kind::AIServiceBackend).unwrap();
        assert_ne!(first.content_hash, edited.content_hash);
    }

    #[test]
    fn a_pod_keeps_its_labels_address_and_readiness_only() {
        let r = resource(Kind::Pod, "v1", "pods");
        let pod = |probe_time: &str| {
            object(json!({
                "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "m"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"podIP": "10.0.0.7", "phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastProbeTime": probe_time},
                ]},
            }))
        };
        let a = decode(pod("2026-01-01T00:00:00Z"), &r, Kind::Pod).unwrap();
        let b = decode(pod("2026-01-01T00:01:00Z"), &r, Kind::Pod).unwrap();
        assert_eq!(a.content_hash, b.content_hash, "probe times are not the graph's business");
        assert_eq!(a.labels.get("app").map(String::as_str), Some("m"));
        match &a.spec {
            Spec::Pod(info) => {
                assert_eq!(info.ip.as_deref(), Some("10.0.0.7"));
                assert!(info.ready);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Two kinds finishing their lists at the same moment: `/readyz` must end with no reason
    /// left, not the report one of them made before the other settled.
    #[test]
    fn kinds_settling_at_once_leave_no_stale_reason_behind() {
        for _ in 0..10_000 {
            let metrics = Arc::new(RunMetrics::default());
            let initial: BTreeMap<Kind, KindState> =
                [Kind::Backend, Kind::Gateway].map(|k| (k, KindState::Listing)).into();
            let shared = Shared {
                pending: Mutex::new(BTreeMap::new()),
                missing: Mutex::new(BTreeMap::new()),
                states: watch::channel(initial).0,
                wake: mpsc::unbounded_channel().0,
                metrics: metrics.clone(),
                served: Served::default(),
            };
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                for kind in [Kind::Backend, Kind::Gateway] {
                    let (shared, start) = (&shared, &start);
                    s.spawn(move || {
                        start.wait();
                        shared.set_state(kind, KindState::Synced);
                    });
                }
            });
            assert_eq!(metrics.source_problem(), None);
        }
    }

    #[test]
    fn an_object_that_does_not_parse_is_an_error_not_a_panic() {
        let r = resource(Kind::AIServiceBackend, "v1beta1", "aiservicebackends");
        let bad =
            object(json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"schema": 7}}));
        let e = decode(bad, &r, Kind::AIServiceBackend).unwrap_err();
        assert!(e.contains("schema"), "{e}");
    }
}
