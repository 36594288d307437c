//! A Kubernetes API server for tests: real HTTP on a loopback socket, speaking enough of the
//! Kubernetes API for kube-rs clients (aixds's production watch, status and lease code).
//!
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}` list the registered
//!   resources and their `status` subresources; a group with no resources is 404.
//! - Collections: list (with `metadata.resourceVersion`, `limit`/`continue`, label and field
//!   selectors), watch (`watch=true` from a `resourceVersion`, or from "now" with the current
//!   objects as `ADDED`; `ADDED`/`MODIFIED`/`DELETED` as objects enter, change in and leave the
//!   selection; a `BOOKMARK` every 500 ms when asked for; an `ERROR`
//!   event with a `410` Status when the resourceVersion is older than the last compaction).
//!   A field selector on a field the real API server cannot select by (anything but the name
//!   and namespace, and a few fields of Secrets and Pods) is a 400, as there.
//! - Objects: get, create (POST), replace (PUT, with resourceVersion conflicts), delete, and
//!   `PATCH` of the `status` subresource as JSON merge patch or server-side apply.
//! - Server-side apply of status tracks field ownership per field manager, shown in
//!   `metadata.managedFields`: fields a manager applied before and leaves out now are removed,
//!   other managers' fields are kept, a field another manager owns with a different value is a
//!   `409` conflict unless `force=true` (which takes it over), and a merge patch makes its
//!   manager own what it changed. Not modelled: ownership of anything but the status
//!   subresource, and list types other than atomic (`x-kubernetes-list-type: map`/`set`; the
//!   CRDs aixds ships declare none, so all their lists are atomic).
//! - Every request (method, path, decoded query, and which replica sent it, see
//!   [`TestApi::config_as`]) and every PATCH is recorded for assertions.
//!
//! Test controls: create/update/delete objects directly, [`TestApi::compact_with`] (every open watch
//! ends and can only resume by relisting), [`TestApi::drop_watches`] (connections cut mid-stream),
//! [`TestApi::stop`]/[`TestApi::start`] (the port refuses connections, then serves the same state
//! again), [`TestApi::fail`] and its variants (requests to some paths — from everyone, from one
//! replica, or writes only — refused or left hanging), [`TestApi::hold_lists`] (a relist that
//! takes until the test releases it), and adding or removing resources (a CRD installed or
//! uninstalled).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// One resource the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub status: bool,
}

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const AI_GATEWAY_ROUTE: Resource = crd("aigateway.envoyproxy.io", "v1beta1", "AIGatewayRoute");
pub const AI_SERVICE_BACKEND: Resource =
    crd("aigateway.envoyproxy.io", "v1beta1", "AIServiceBackend");
pub const BACKEND_SECURITY_POLICY: Resource =
    crd("aigateway.envoyproxy.io", "v1beta1", "BackendSecurityPolicy");
pub const BACKEND: Resource = crd("gateway.envoyproxy.io", "v1alpha1", "Backend");
pub const BACKEND_TLS_POLICY: Resource = crd("gateway.networking.k8s.io", "v1", "BackendTLSPolicy");
pub const QUOTA_POLICY: Resource = crd("aigateway.envoyproxy.io", "v1alpha1", "QuotaPolicy");
pub const BACKEND_TRAFFIC_POLICY: Resource =
    crd("gateway.envoyproxy.io", "v1alpha1", "BackendTrafficPolicy");
pub const GATEWAY: Resource = crd("gateway.networking.k8s.io", "v1", "Gateway");
pub const GATEWAY_CLASS: Resource = Resource {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GatewayClass",
    plural: "gatewayclasses",
    namespaced: false,
    status: true,
};
pub const HTTP_ROUTE: Resource = crd("gateway.networking.k8s.io", "v1", "HTTPRoute");
pub const INFERENCE_POOL: Resource = crd("inference.networking.k8s.io", "v1", "InferencePool");
/// Served at v1beta1 only, as by Gateway API releases before v1 of the kind.
pub const REFERENCE_GRANT: Resource = Resource {
    group: "gateway.networking.k8s.io",
    version: "v1beta1",
    kind: "ReferenceGrant",
    plural: "referencegrants",
    namespaced: true,
    status: false,
};
pub const SECRET: Resource = core("Secret", "secrets", false);
pub const SERVICE: Resource = core("Service", "services", true);
pub const POD: Resource = core("Pod", "pods", true);
pub const ENDPOINT_SLICE: Resource = Resource {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    namespaced: true,
    status: false,
};
pub const LEASE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    namespaced: true,
    status: false,
};

const fn crd(group: &'static str, version: &'static str, kind: &'static str) -> Resource {
    let plural = match kind.as_bytes() {
        b"AIGatewayRoute" => "aigatewayroutes",
        b"AIServiceBackend" => "aiservicebackends",
        b"BackendSecurityPolicy" => "backendsecuritypolicies",
        b"Backend" => "backends",
        b"BackendTLSPolicy" => "backendtlspolicies",
        b"BackendTrafficPolicy" => "backendtrafficpolicies",
        b"QuotaPolicy" => "quotapolicies",
        b"Gateway" => "gateways",
        b"HTTPRoute" => "httproutes",
        _ => "inferencepools",
    };
    Resource { group, version, kind, plural, namespaced: true, status: true }
}

const fn core(kind: &'static str, plural: &'static str, status: bool) -> Resource {
    Resource { group: "", version: "v1", kind, plural, namespaced: true, status }
}

/// Every resource aixds reads, plus Leases.
pub fn all_resources() -> Vec<Resource> {
    vec![
        AI_GATEWAY_ROUTE,
        AI_SERVICE_BACKEND,
        BACKEND_SECURITY_POLICY,
        BACKEND,
        BACKEND_TLS_POLICY,
        BACKEND_TRAFFIC_POLICY,
        QUOTA_POLICY,
        GATEWAY,
        GATEWAY_CLASS,
        HTTP_ROUTE,
        INFERENCE_POOL,
        REFERENCE_GRANT,
        SECRET,
        SERVICE,
        POD,
        ENDPOINT_SLICE,
        LEASE,
    ]
}

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_millis(500);

/// One request received, as the API server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query, decoded (`labelSelector`, `fieldSelector`, `watch`, ...).
    pub query: BTreeMap<String, String>,
    /// The [`REPLICA_HEADER`] the client sent: which replica of aixds asked.
    pub replica: Option<String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true" || w == "1")
    }
}

/// A header a test's client config sets so that the server can tell replicas apart; see
/// [`TestApi::config_as`].
pub const REPLICA_HEADER: &str = "x-test-replica";

/// What the server does to requests whose path contains a given string; see [`TestApi::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status (a `Status` body), as an overloaded or misconfigured API server.
    Refuse(u16),
    /// Never answers until [`TestApi::heal`]: an API server that accepts the connection and
    /// hangs, as one behind a broken network path.
    Hang,
}

/// Which requests get a fault: those whose path contains `path`, from `replica` when named,
/// and only writes (not GET) when `writes_only`.
struct FaultRule {
    replica: Option<String>,
    writes_only: bool,
    path: String,
    fault: Fault,
}

/// One recorded PATCH request.
#[derive(Debug, Clone)]
pub struct Patch {
    pub path: String,
    pub content_type: String,
    pub field_manager: Option<String>,
    pub replica: Option<String>,
    pub body: Value,
}

type Key = (String, String, String, String); // group, plural, namespace, name

/// One change in the history: the object before and after (None when absent).
struct Change {
    rv: u64,
    group: String,
    plural: String,
    old: Option<Value>,
    new: Option<Value>,
}

struct Store {
    rv: u64,
    resources: Vec<Resource>,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Watches may only resume from a resourceVersion at or after this one.
    compacted: u64,
    patches: Vec<Patch>,
    requests: Vec<Request>,
    faults: Vec<FaultRule>,
    /// Plurals whose lists (not watches) wait until released.
    held_lists: BTreeSet<String>,
    /// Who owns which status fields of each object; see [`apply_status`].
    owners: BTreeMap<Key, Owners>,
    /// What each resource request needed, as RBAC sees it: (group, resource, verb).
    verbs: BTreeSet<(String, String, String)>,
}

struct Shared {
    store: Mutex<Store>,
    /// Bumped on every change, so that open watches look at the history.
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch: (generation, abruptly).
    cut: watch::Sender<(u64, bool)>,
    /// Bumped when faults or held lists change, so that waiting requests look again.
    gates: watch::Sender<u64>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server. Dropping it stops it.
pub struct TestApi {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    running: Option<Serving>,
}

struct Serving {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestApi {
    /// A server on a free loopback port that serves `resources`.
    pub async fn start_with(resources: Vec<Resource>) -> TestApi {
        let (changed, _) = watch::channel(0);
        let (cut, _) = watch::channel((0, false));
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1,
                resources,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                patches: Vec::new(),
                requests: Vec::new(),
                faults: Vec::new(),
                held_lists: BTreeSet::new(),
                owners: BTreeMap::new(),
                verbs: BTreeSet::new(),
            }),
            changed,
            cut,
            gates: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut api = TestApi { shared, addr, running: None };
        api.serve(listener);
        api
    }

    /// A server for every kind aixds reads.
    pub async fn new() -> TestApi {
        Self::start_with(all_resources()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs client config pointing at this server.
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.read_timeout = Some(Duration::from_secs(30));
        config
    }

    /// [`TestApi::config`] for one replica: its requests carry [`REPLICA_HEADER`] `replica`.
    pub fn config_as(&self, replica: &str) -> kube::Config {
        let mut config = self.config();
        config.headers.push((
            header::HeaderName::from_static(REPLICA_HEADER),
            header::HeaderValue::from_str(replica).unwrap(),
        ));
        config
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, mut stopped) = watch::channel(false);
        let app = Router::new().fallback(handle).with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        self.running = Some(Serving { stop, task });
    }

    /// Stops serving: open connections are cut and the port refuses new ones. The objects stay.
    pub async fn stop(&mut self) {
        let Some(serving) = self.running.take() else { return };
        self.cut(true);
        let _ = serving.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), serving.task).await;
    }

    /// Serves again on the same port, with the same objects.
    pub async fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Ends every open watch cleanly (as an API server does at its watch timeout): clients
    /// resume from their last resourceVersion.
    pub fn end_watches(&self) {
        self.cut(false);
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        self.cut(true);
    }

    fn cut(&self, abruptly: bool) {
        self.shared.cut.send_modify(|(generation, how)| {
            *generation += 1;
            *how = abruptly;
        });
    }

    /// Makes the changes in `f` (with the store locked), then forgets the history: every open
    /// watch ends and a client resuming from a resourceVersion before now gets `410 Gone`, so it
    /// must relist. No watch ever sees the changes made in `f`: only a relist finds them.
    pub fn compact_with(&self, f: impl FnOnce(&mut Objects)) {
        {
            let mut store = self.shared.store();
            f(&mut Objects { store: &mut store, shared: &self.shared });
            store.rv += 1;
            store.compacted = store.rv;
            store.history.clear();
        }
        self.end_watches();
    }

    /// Creates or replaces an object (a JSON manifest with apiVersion, kind and metadata).
    pub fn apply(&self, object: Value) -> Value {
        Objects { store: &mut self.shared.store(), shared: &self.shared }.apply(object)
    }

    /// Applies every document of a multi-document YAML manifest.
    pub fn apply_yaml(&self, yaml: &str) {
        for doc in serde_norway::Deserializer::from_str(yaml) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !value.is_null() {
                self.apply(value);
            }
        }
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        Objects { store: &mut self.shared.store(), shared: &self.shared }
            .delete(kind, namespace, name)
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        let r = store.resource_by_kind(kind)?;
        store.objects.get(&key(&r, namespace, name)).cloned()
    }

    /// Every PATCH received so far.
    pub fn patches(&self) -> Vec<Patch> {
        self.shared.store().patches.clone()
    }

    /// How many requests were served for `path` (no query).
    pub fn requests_to(&self, path: &str) -> usize {
        self.shared.store().requests.iter().filter(|r| r.path == path).count()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.store().requests.clone()
    }

    /// From now on, requests whose path contains `path` get `fault`.
    pub fn fail(&self, path: &str, fault: Fault) {
        self.add_fault(FaultRule { replica: None, writes_only: false, path: path.into(), fault });
    }

    /// [`TestApi::fail`] for the requests of one replica (see [`TestApi::config_as`]) only: the
    /// network between that replica and the API server is what fails.
    pub fn fail_for(&self, replica: &str, path: &str, fault: Fault) {
        let replica = Some(replica.to_string());
        self.add_fault(FaultRule { replica, writes_only: false, path: path.into(), fault });
    }

    /// [`TestApi::fail`] for writes only (every method but GET).
    pub fn fail_writes(&self, path: &str, fault: Fault) {
        self.add_fault(FaultRule { replica: None, writes_only: true, path: path.into(), fault });
    }

    fn add_fault(&self, rule: FaultRule) {
        self.shared.store().faults.push(rule);
        self.shared.gates.send_modify(|g| *g += 1);
    }

    /// Ends the faults set for `path`; its hung requests are answered.
    pub fn heal_path(&self, path: &str) {
        self.shared.store().faults.retain(|rule| rule.path != path);
        self.shared.gates.send_modify(|g| *g += 1);
    }

    /// Ends every fault; hung requests are answered.
    pub fn heal(&self) {
        self.shared.store().faults.clear();
        self.shared.gates.send_modify(|g| *g += 1);
    }

    /// Lists of `plural` (not watches) wait from now on until [`TestApi::release_lists`]: a
    /// relist that takes long, as a large one does.
    pub fn hold_lists(&self, plural: &str) {
        self.shared.store().held_lists.insert(plural.to_string());
        self.shared.gates.send_modify(|g| *g += 1);
    }

    pub fn release_lists(&self) {
        self.shared.store().held_lists.clear();
        self.shared.gates.send_modify(|g| *g += 1);
    }

    /// Every (group, resource, verb) requested so far, as an RBAC rule would have to allow it
    /// (`resource` is `plural` or `plural/status`).
    pub fn verbs_used(&self) -> BTreeSet<(String, String, String)> {
        self.shared.store().verbs.clone()
    }

    /// Installs a resource (a CRD appearing): discovery lists it from now on.
    pub fn add_resource(&self, r: Resource) {
        let mut store = self.shared.store();
        if !store.resources.contains(&r) {
            store.resources.push(r);
        }
    }

    /// Uninstalls a resource with all its objects (a CRD removed); open watches on it end.
    pub fn remove_resource(&self, r: &Resource) {
        {
            let mut store = self.shared.store();
            store.resources.retain(|x| x != r);
            store.objects.retain(|k, _| !(k.0 == r.group && k.1 == r.plural));
        }
        self.end_watches();
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(serving) = self.running.take() {
            self.shared.cut.send_modify(|(g, how)| {
                *g += 1;
                *how = true;
            });
            let _ = serving.stop.send(true);
            serving.task.abort();
        }
    }
}

/// The objects, with the store locked; see [`TestApi::compact_with`].
pub struct Objects<'a> {
    store: &'a mut Store,
    shared: &'a Shared,
}

impl Objects<'_> {
    pub fn apply(&mut self, mut object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let r = self
            .store
            .resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .unwrap_or_else(|| panic!("the test API server does not serve {api_version} {kind}"))
            .clone();
        if object["metadata"]["namespace"].is_null() && r.namespaced {
            object["metadata"]["namespace"] = json!("default");
        }
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let k = key(&r, &ns, &name);
        let old = self.store.objects.get(&k).cloned();
        let generation = match &old {
            None => 1,
            Some(old) if old.get("spec") != object.get("spec") => {
                old["metadata"]["generation"].as_i64().unwrap_or(1) + 1
            }
            Some(old) => old["metadata"]["generation"].as_i64().unwrap_or(1),
        };
        object["metadata"]["generation"] = json!(generation);
        if let Some(old) = &old {
            object["metadata"]["uid"] = old["metadata"]["uid"].clone();
            if object.get("status").is_none()
                && let Some(status) = old.get("status")
            {
                object["status"] = status.clone();
            }
        } else {
            object["metadata"]["uid"] = json!(format!("uid-{}", self.store.rv + 1));
        }
        self.store.put(&r, k, Some(object), self.shared)
    }

    pub fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> bool {
        let Some(r) = self.store.resource_by_kind(kind) else { return false };
        let k = key(&r, namespace, name);
        if !self.store.objects.contains_key(&k) {
            return false;
        }
        self.store.put(&r, k, None, self.shared);
        true
    }
}

fn key(r: &Resource, ns: &str, name: &str) -> Key {
    let ns = if r.namespaced { ns } else { "" };
    (r.group.to_string(), r.plural.to_string(), ns.to_string(), name.to_string())
}

impl Store {
    fn resource_by_kind(&self, kind: &str) -> Option<Resource> {
        self.resources.iter().find(|r| r.kind == kind).cloned()
    }

    /// Stores `new` (or deletes) under a new resourceVersion and records the change.
    fn put(&mut self, r: &Resource, k: Key, new: Option<Value>, shared: &Shared) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let old = self.objects.remove(&k);
        if new.is_none() {
            self.owners.remove(&k);
        }
        let owners = self.owners.get(&k);
        let new = new.map(|mut o| {
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            match owners {
                Some(owners) => {
                    o["metadata"]["managedFields"] = managed_fields(owners, &r.api_version())
                }
                None => {
                    if let Some(meta) = o["metadata"].as_object_mut() {
                        meta.remove("managedFields");
                    }
                }
            }
            o
        });
        if let Some(o) = &new {
            self.objects.insert(k.clone(), o.clone());
        }
        let shown = new.clone().or_else(|| {
            old.clone().map(|mut o| {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                o
            })
        });
        self.history.push(Change {
            rv,
            group: r.group.to_string(),
            plural: r.plural.to_string(),
            old,
            new,
        });
        shared.changed.send_replace(rv);
        shown.unwrap_or(Value::Null)
    }
}

/// What a request addresses, parsed from its path.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Route {
    CoreVersions,
    Groups,
    GroupVersion(String, String),
    Target(Target),
}

fn route(store: &Store, path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["api", "v1"] => return Some(Route::GroupVersion(String::new(), "v1".into())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(name.to_string()), false),
        [plural, name, "status"] => (*plural, Some(name.to_string()), true),
        _ => return None,
    };
    let resource = store
        .resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?
        .clone();
    if status && !resource.status {
        return None;
    }
    Some(Route::Target(Target { resource, namespace, name, status }))
}

fn status_error(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_response(value: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        replica: headers.get(REPLICA_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    let replica = request.replica.clone();
    shared.store().requests.push(request);
    if let Err(refused) = pass_gates(&shared, &method, uri.path(), replica.as_deref(), &query).await
    {
        return refused;
    }
    let mut store = shared.store();
    let not_found =
        || status_error(StatusCode::NOT_FOUND, "NotFound", format!("{} not found", uri.path()));
    let Some(route) = route(&store, uri.path()) else { return not_found() };
    match route {
        Route::CoreVersions => json_response(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        })),
        Route::Groups => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for r in store.resources.iter().filter(|r| !r.group.is_empty()) {
                let versions = groups.entry(r.group).or_default();
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json_response(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        Route::GroupVersion(group, version) => {
            let mut resources = Vec::new();
            for r in store.resources.iter().filter(|r| r.group == group && r.version == version) {
                resources.push(json!({
                    "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }));
                if r.status {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural), "singularName": "",
                        "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            if resources.is_empty() {
                return not_found();
            }
            let gv = if group.is_empty() { version } else { format!("{group}/{version}") };
            json_response(json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources,
            }))
        }
        Route::Target(t) => {
            let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            let verb = match (&method, &t.name) {
                (&Method::GET, None) if watching => "watch",
                (&Method::GET, None) => "list",
                (&Method::GET, Some(_)) => "get",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, _) => "delete",
                _ => "other",
            };
            let resource = match t.status {
                true => format!("{}/status", t.resource.plural),
                false => t.resource.plural.to_string(),
            };
            store.verbs.insert((t.resource.group.to_string(), resource, verb.to_string()));
            target(&shared, store, t, method, &uri, &query, &headers, body)
        }
    }
}

/// Waits while a [`Fault::Hang`] or a held list applies to the request; `Err` with the answer
/// of a [`Fault::Refuse`].
async fn pass_gates(
    shared: &Shared,
    method: &Method,
    path: &str,
    replica: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Result<(), Response> {
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let list = *method == Method::GET && !watching;
    let mut gates = shared.gates.subscribe();
    loop {
        let blocked = {
            let store = shared.store();
            let fault = store.faults.iter().find(|rule| {
                path.contains(rule.path.as_str())
                    && rule.replica.as_deref().is_none_or(|w| Some(w) == replica)
                    && (!rule.writes_only || *method != Method::GET)
            });
            match fault.map(|rule| rule.fault) {
                Some(Fault::Refuse(code)) => {
                    let code = StatusCode::from_u16(code).unwrap();
                    let reason = match code {
                        StatusCode::FORBIDDEN => "Forbidden",
                        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
                        _ => "InternalError",
                    };
                    return Err(status_error(code, reason, format!("the test refuses {path}")));
                }
                Some(Fault::Hang) => true,
                None => list && store.held_lists.iter().any(|p| path.ends_with(&format!("/{p}"))),
            }
        };
        if !blocked {
            return Ok(());
        }
        if gates.changed().await.is_err() {
            return Ok(());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn target(
    shared: &Arc<Shared>,
    mut store: MutexGuard<'_, Store>,
    t: Target,
    method: Method,
    uri: &Uri,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let r = t.resource.clone();
    let ns = t.namespace.clone().unwrap_or_default();
    if method == Method::GET
        && t.name.is_none()
        && let Some(field) = unsupported_field(&r, query.get("fieldSelector"))
    {
        return status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("field label not supported: {field}"),
        );
    }
    match (method, &t.name) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let selection = Selection::new(&r, t.namespace.clone(), query);
            let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
            let timeout = query.get("timeoutSeconds").and_then(|s| s.parse().ok());
            let from =
                query.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
            let mut initial = Vec::new();
            let cursor = match from {
                Some(rv) => rv,
                None => {
                    for o in store.objects.values().filter(|o| selection.matches(o)) {
                        initial.push(event("ADDED", o.clone()));
                    }
                    store.rv
                }
            };
            drop(store);
            tokio::spawn(stream_watch(
                shared.clone(),
                selection,
                cursor,
                initial,
                bookmarks.then_some(BOOKMARK_INTERVAL),
                timeout.map(Duration::from_secs),
                tx,
            ));
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .unwrap()
        }
        (Method::GET, None) => {
            let selection = Selection::new(&r, t.namespace.clone(), query);
            let items: Vec<Value> =
                store.objects.values().filter(|o| selection.matches(o)).cloned().collect();
            let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let offset = query.get("continue").and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
            let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
            let page: Vec<Value> = items.get(offset..end).unwrap_or_default().to_vec();
            let mut metadata = json!({"resourceVersion": store.rv.to_string()});
            if end < items.len() {
                metadata["continue"] = json!(end.to_string());
            }
            json_response(json!({
                "kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
                "metadata": metadata, "items": page,
            }))
        }
        (Method::GET, Some(name)) => match store.objects.get(&key(&r, &ns, name)) {
            Some(o) => json_response(o.clone()),
            None => status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} {name} not found", r.plural),
            ),
        },
        (Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status_error(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
            };
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if store.objects.contains_key(&key(&r, &ns, &name)) {
                return status_error(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{name} exists"),
                );
            }
            object["apiVersion"] = json!(r.api_version());
            object["kind"] = json!(r.kind);
            object["metadata"]["namespace"] = json!(ns);
            let created = Objects { store: &mut store, shared }.apply(object);
            (StatusCode::CREATED, json_response(created)).into_response()
        }
        (Method::PUT, Some(name)) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status_error(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
            };
            let Some(current) = store.objects.get(&key(&r, &ns, name)) else {
                return status_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                );
            };
            let wanted = &object["metadata"]["resourceVersion"];
            if !wanted.is_null() && *wanted != current["metadata"]["resourceVersion"] {
                return status_error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version"
                        .into(),
                );
            }
            object["apiVersion"] = json!(r.api_version());
            object["kind"] = json!(r.kind);
            object["metadata"]["namespace"] = json!(ns);
            json_response(Objects { store: &mut store, shared }.apply(object))
        }
        (Method::DELETE, Some(name)) => {
            if (Objects { store: &mut store, shared }).delete(r.kind, &ns, name) {
                json_response(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
            } else {
                status_error(StatusCode::NOT_FOUND, "NotFound", format!("{name} not found"))
            }
        }
        (Method::PATCH, Some(name)) if t.status => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let patch: Value = match content_type.as_str() {
                "application/merge-patch+json" => match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return status_error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string());
                    }
                },
                "application/apply-patch+yaml" => match serde_norway::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return status_error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string());
                    }
                },
                other => {
                    return status_error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("the test API server does not take {other} patches"),
                    );
                }
            };
            let apply = content_type == "application/apply-patch+yaml";
            let manager = query.get("fieldManager").cloned();
            if apply && manager.is_none() {
                return status_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "fieldManager is required for apply requests".into(),
                );
            }
            store.patches.push(Patch {
                path: uri.path().to_string(),
                content_type,
                field_manager: manager.clone(),
                replica: headers
                    .get(REPLICA_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: patch.clone(),
            });
            let k = key(&r, &ns, name);
            let Some(mut object) = store.objects.get(&k).cloned() else {
                return status_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{name} not found"),
                );
            };
            // Only the status subresource changes through /status.
            let current = object.get("status").cloned().unwrap_or(json!({}));
            let applied = patch.get("status").cloned().unwrap_or(json!({}));
            let owners = store.owners.entry(k.clone()).or_default();
            let status = if apply {
                let force = query.get("force").is_some_and(|f| f == "true");
                match apply_status(
                    owners,
                    manager.as_deref().unwrap_or_default(),
                    force,
                    &current,
                    &applied,
                ) {
                    Ok(status) => status,
                    Err(conflict) => {
                        return status_error(StatusCode::CONFLICT, "Conflict", conflict);
                    }
                }
            } else {
                let mut status = current.clone();
                merge(&mut status, applied);
                let manager = manager.as_deref().unwrap_or("unknown");
                update_status(owners, manager, &current, &status);
                status
            };
            object["status"] = status;
            json_response(store.put(&r, k, Some(object), shared))
        }
        _ => status_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not served".into()),
    }
}

/// A field of an object's status, as the path of map keys from `status` down.
type FieldPath = Vec<String>;

/// Who owns which status fields of one object: (manager, operation) → the fields.
type Owners = BTreeMap<(String, &'static str), BTreeSet<FieldPath>>;

/// The fields a status sets, with their values. Maps are granular (each key its own field);
/// lists and scalars are one field each: lists are atomic, as in a CRD whose schema declares
/// no `x-kubernetes-list-type` (the CRDs aixds ships declare none). An empty map is a field.
fn fields(status: &Value) -> BTreeMap<FieldPath, Value> {
    fn walk(v: &Value, at: &mut FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    at.push(k.clone());
                    walk(v, at, out);
                    at.pop();
                }
            }
            Value::Null => {}
            other => {
                out.insert(at.clone(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(status, &mut vec!["status".into()], &mut out);
    out
}

/// The status made of `fields` (the inverse of [`fields`]).
fn status_of(fields: &BTreeMap<FieldPath, Value>) -> Value {
    let mut root = json!({});
    for (path, value) in fields {
        let Some((last, parents)) = path[1..].split_last() else {
            root = value.clone();
            continue;
        };
        let mut at = &mut root;
        for p in parents {
            if !at[p.as_str()].is_object() {
                at[p.as_str()] = json!({});
            }
            at = &mut at[p.as_str()];
        }
        at[last.as_str()] = value.clone();
    }
    root
}

fn field_name(path: &FieldPath) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// Server-side apply of `applied` (a status) by `manager`, as the API server does it:
/// - a field another manager owns with a different value is a conflict: 409 naming the fields
///   and their managers, unless `force`, which takes the fields over;
/// - the fields `manager` set in its last apply and leaves out now are removed, unless another
///   manager owns them too;
/// - everything else of the status is kept; `manager` owns exactly what it applied.
///
/// Returns the new status.
fn apply_status(
    owners: &mut Owners,
    manager: &str,
    force: bool,
    current: &Value,
    applied: &Value,
) -> Result<Value, String> {
    let me = (manager.to_string(), "Apply");
    let mut status = fields(current);
    let applied = fields(applied);
    let conflicts: Vec<String> = owners
        .iter()
        .filter(|(who, _)| **who != me)
        .flat_map(|((who, _), owned)| {
            applied
                .iter()
                .filter(|(path, value)| owned.contains(*path) && status.get(*path) != Some(*value))
                .map(move |(path, _)| format!("conflict with {who:?}: {}", field_name(path)))
        })
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            conflicts.join(", ")
        ));
    }
    let previous = owners.remove(&me).unwrap_or_default();
    for owned in owners.values_mut() {
        owned.retain(|path| {
            !(force && applied.contains_key(path) && status.get(path) != applied.get(path))
        });
    }
    for path in previous.difference(&applied.keys().cloned().collect()) {
        if !owners.values().any(|owned| owned.contains(path)) {
            status.remove(path);
        }
    }
    status.extend(applied.clone());
    owners.insert(me, applied.into_keys().collect());
    owners.retain(|_, owned| !owned.is_empty());
    Ok(status_of(&status))
}

/// Ownership after an update (merge patch, PUT) by `manager` from `before` to `after`: it owns
/// every field it changed, which no other manager owns any more.
fn update_status(owners: &mut Owners, manager: &str, before: &Value, after: &Value) {
    let (before, after) = (fields(before), fields(after));
    for owned in owners.values_mut() {
        owned.retain(|path| after.contains_key(path) && before.get(path) == after.get(path));
    }
    let changed = after.iter().filter(|(path, value)| before.get(*path) != Some(*value));
    let mine = owners.entry((manager.to_string(), "Update")).or_default();
    mine.extend(changed.map(|(path, _)| path.clone()));
    owners.retain(|_, owned| !owned.is_empty());
}

/// `metadata.managedFields` as the API server shows it (`FieldsV1`).
fn managed_fields(owners: &Owners, api_version: &str) -> Value {
    let entries: Vec<Value> = owners
        .iter()
        .map(|((manager, operation), owned)| {
            let mut set = json!({});
            for path in owned {
                let mut at = &mut set;
                for p in path {
                    at = &mut at[format!("f:{p}")];
                    if at.is_null() {
                        *at = json!({});
                    }
                }
            }
            json!({
                "manager": manager, "operation": operation, "apiVersion": api_version,
                "fieldsType": "FieldsV1", "fieldsV1": set, "subresource": "status",
            })
        })
        .collect();
    Value::Array(entries)
}

/// The first field of `selector` the API server cannot select `r` by (as a real one: the
/// object's name and namespace for every kind, and a few fields per core kind).
fn unsupported_field(r: &Resource, selector: Option<&String>) -> Option<String> {
    let per_kind: &[&str] = match r.kind {
        "Secret" => &["type"],
        "Pod" => &["spec.nodeName", "spec.restartPolicy", "status.phase", "status.podIP"],
        _ => &[],
    };
    requirements(selector).into_iter().map(|(field, _, _)| field).find(|f| {
        !["metadata.name", "metadata.namespace"].contains(&f.as_str())
            && !per_kind.contains(&f.as_str())
    })
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    target.as_object_mut().map(|t| t.remove(&k));
                } else {
                    merge(&mut target[&k], v);
                }
            }
        }
        Value::Null => {}
        other => *target = other,
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which objects a list or watch sees.
struct Selection {
    api_version: String,
    kind: String,
    group: String,
    plural: String,
    namespace: Option<String>,
    labels: Vec<(String, Op, String)>,
    fields: Vec<(String, Op, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Exists,
    NotExists,
}

fn requirements(selector: Option<&String>) -> Vec<(String, Op, String)> {
    let Some(s) = selector.filter(|s| !s.is_empty()) else { return Vec::new() };
    s.split(',')
        .map(|part| {
            if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::Ne, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k.trim().to_string(), Op::Eq, v.trim().to_string())
            } else if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists, String::new())
            } else {
                (part.trim().to_string(), Op::Exists, String::new())
            }
        })
        .collect()
}

fn holds(op: Op, found: Option<&str>, want: &str) -> bool {
    match op {
        Op::Eq => found == Some(want),
        Op::Ne => found != Some(want),
        Op::Exists => found.is_some(),
        Op::NotExists => found.is_none(),
    }
}

impl Selection {
    fn new(r: &Resource, namespace: Option<String>, query: &BTreeMap<String, String>) -> Self {
        Selection {
            api_version: r.api_version(),
            kind: r.kind.to_string(),
            group: r.group.to_string(),
            plural: r.plural.to_string(),
            namespace,
            labels: requirements(query.get("labelSelector")),
            fields: requirements(query.get("fieldSelector")),
        }
    }

    fn matches(&self, o: &Value) -> bool {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if group != self.group || o["kind"] != self.kind.as_str() {
            return false;
        }
        if let Some(ns) = &self.namespace
            && o["metadata"]["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let labels = &o["metadata"]["labels"];
        self.labels.iter().all(|(k, op, v)| holds(*op, labels[k].as_str(), v))
            && self.fields.iter().all(|(path, op, v)| {
                let found = path.split('.').fold(o, |at, p| &at[p]);
                holds(*op, found.as_str(), v)
            })
    }

    fn matches_change(&self, c: &Change) -> bool {
        c.group == self.group && c.plural == self.plural
    }
}

fn event(type_: &str, object: Value) -> Value {
    json!({"type": type_, "object": object})
}

fn line(v: &Value) -> Result<Bytes, std::io::Error> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

/// Streams one watch: the initial events, then every change after `cursor` that the selection
/// sees, until the client goes away, the watch times out, or the test cuts it.
async fn stream_watch(
    shared: Arc<Shared>,
    selection: Selection,
    mut cursor: u64,
    initial: Vec<Value>,
    bookmarks: Option<Duration>,
    timeout: Option<Duration>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    let cut_at = cut.borrow_and_update().0;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    for e in initial {
        if tx.send(line(&e)).await.is_err() {
            return;
        }
    }
    let mut next_bookmark = bookmarks.map(|b| tokio::time::Instant::now() + b);
    loop {
        let (cut_gen, abruptly) = *cut.borrow_and_update();
        if cut_gen != cut_at {
            if abruptly {
                let _ = tx.send(Err(std::io::Error::other("connection cut by the test"))).await;
            }
            return;
        }
        let events = match next_events(&shared, &selection, &mut cursor) {
            Ok(events) => events,
            Err(gone) => {
                let _ = tx.send(line(&gone)).await;
                return;
            }
        };
        for e in events {
            if tx.send(line(&e)).await.is_err() {
                return;
            }
        }
        let sleep_until = match (next_bookmark, deadline) {
            (Some(b), Some(d)) => Some(b.min(d)),
            (b, d) => b.or(d),
        };
        let wake = async {
            match sleep_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.changed() => {}
            _ = cut.changed() => {}
            _ = tx.closed() => return,
            _ = wake => {
                let now = tokio::time::Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return;
                }
                if let (Some(every), Some(at)) = (bookmarks, next_bookmark)
                    && now >= at
                {
                    let bookmark = event("BOOKMARK", json!({
                        "apiVersion": selection.api_version,
                        "kind": selection.kind,
                        "metadata": {"resourceVersion": cursor.to_string()},
                    }));
                    if tx.send(line(&bookmark)).await.is_err() {
                        return;
                    }
                    next_bookmark = Some(now + every);
                }
            }
        }
    }
}

/// The events after `cursor` the selection sees, moving the cursor; `Err` with the ERROR event
/// when the cursor is older than the last compaction.
fn next_events(
    shared: &Shared,
    selection: &Selection,
    cursor: &mut u64,
) -> Result<Vec<Value>, Value> {
    let store = shared.store();
    if *cursor < store.compacted {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {cursor} ({})", store.compacted),
            "reason": "Expired", "code": 410,
        });
        return Err(event("ERROR", status));
    }
    let mut events = Vec::new();
    for c in store.history.iter().filter(|c| c.rv > *cursor && selection.matches_change(c)) {
        let was = c.old.as_ref().is_some_and(|o| selection.matches(o));
        let is = c.new.as_ref().is_some_and(|o| selection.matches(o));
        let with_rv = |o: &Value| {
            let mut o = o.clone();
            o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
            o
        };
        match (was, is, &c.old, &c.new) {
            (false, true, _, Some(new)) => events.push(event("ADDED", new.clone())),
            (true, true, _, Some(new)) => events.push(event("MODIFIED", new.clone())),
            (true, false, _, Some(new)) => events.push(event("DELETED", with_rv(new))),
            (true, false, Some(old), None) => events.push(event("DELETED", with_rv(old))),
            _ => {}
        }
    }
    *cursor = (*cursor).max(store.rv);
    Ok(events)
}
