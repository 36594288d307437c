//! The admin HTTP server: health, readiness, Prometheus metrics, and debug views of the graph and
//! of what each Envoy was sent.
//!
//! Takes: an [`AdminState`] (the shared graph, the snapshot store, the xDS registry and
//! counters, the run loop's metrics). Gives: an axum [`Router`] with
//! - `/healthz` (200 while the process serves) and `/readyz` (200 once the initial snapshot is
//!   published and while the source is current, 503 with the reason otherwise: before the
//!   first snapshot, or while a Kubernetes watch relists or fails);
//! - `/metrics` (see [`metrics`]);
//! - `/debug/graph?format=json|dot|html&focus=Kind/ns/name&depth=N` (see [`crate::graph::export`]
//!   and [`html`]), with Envoy's rejections merged into the objects' conditions (see
//!   [`crate::status`]);
//! - `/debug/explain?object=Kind/ns/name` (the text `aixds explain` prints, with each Envoy's
//!   ACK state);
//! - `/debug/xds` (every resource's name, version, size and sources per type, every connected
//!   Envoy and the rejections that stand) and `/debug/xds?type=Cluster&name=X` (one resource).
//!
//! **Sharing the graph.** The run loop owns the graph inside an `Arc<RwLock<Graph>>`: it applies
//! a batch's changes under the write lock (and compiles under the read lock, beside readers);
//! these handlers take the read lock only while they render.
//! Publishing an immutable copy with `ArcSwap` after each batch would make every change cost a
//! copy of the whole graph (the graph is updated in place, in time proportional to what a change
//! affects) to serve rare debug reads; a read holds the lock for one render, a few milliseconds
//! for thousands of objects, which delays the next batch by at most that.
//!
//! **No secrets.** The graph views carry object keys, references and conditions, never specs;
//! the xDS views carry names, versions, sizes and sources, never resource bodies (a cluster's
//! headers may carry credentials, a Secret's body is a private key).

pub mod html;
pub mod metrics;

pub use metrics::RunMetrics;

use crate::extproc::GenAiMetrics;
use crate::extproc::credentials::TokenMetrics;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, serve};
use serde::{Deserialize, Serialize};

use crate::api::ObjectKey;
use crate::graph::Graph;
use crate::graph::export::{self, View};
use crate::status::{self, Rejection};
use crate::xds::{ClientInfo, Clients, Snapshot, SnapshotStore, TypeUrl, XdsStats};

/// Neighbourhood depth of `/debug/graph?focus=` when `depth` is not given.
pub const DEFAULT_DEPTH: usize = 2;

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    pub graph: Arc<RwLock<Graph>>,
    pub store: Arc<SnapshotStore>,
    pub clients: Arc<Clients>,
    pub xds: Arc<XdsStats>,
    pub run: Arc<RunMetrics>,
    /// Recorded by the translation ext_proc.
    pub genai: Arc<GenAiMetrics>,
    /// Token fetches of the cloud credentials.
    pub credentials: Arc<TokenMetrics>,
    /// Checks and counter store calls of the rate limit service.
    pub ratelimit: Arc<crate::ratelimit::RateLimitMetrics>,
}

impl AdminState {
    fn graph(&self) -> RwLockReadGuard<'_, Graph> {
        // The graph is rewired by one writer; a panic there ends the process's usefulness, but
        // the last state is still worth showing.
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The connected Envoys, the snapshot, and the rejections that stand, read together.
    fn xds_view(&self) -> (Vec<ClientInfo>, Arc<Snapshot>, Vec<Rejection>) {
        let clients = self.clients.list();
        let snapshot = self.store.load();
        let rejections = status::rejections(&clients, &snapshot);
        (clients, snapshot, rejections)
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/graph", get(debug_graph))
        .route("/debug/xds", get(debug_xds))
        .route("/debug/explain", get(debug_explain))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Binds the admin address (port 0 picks one) so that a bad address fails startup.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match s.run.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let (clients, snapshot, rejections) = s.xds_view();
    let graph = s.graph();
    let text = metrics::render(&metrics::Inputs {
        run: &s.run,
        xds: &s.xds,
        clients: &clients,
        graph: &graph,
        snapshot: &snapshot,
        rejections: rejections.len(),
        genai: &s.genai,
        credentials: &s.credentials,
        ratelimit: &s.ratelimit,
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[derive(Debug, Deserialize)]
pub struct GraphQuery {
    pub format: Option<String>,
    pub focus: Option<String>,
    pub depth: Option<usize>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

async fn debug_graph(State(s): State<AdminState>, Query(q): Query<GraphQuery>) -> Response {
    let (clients, snapshot, rejections) = s.xds_view();
    let graph = s.graph();
    let view = match &q.focus {
        None => View::default(),
        Some(focus) => {
            let Some(key) = ObjectKey::parse(focus) else {
                return bad_request(format!(
                    "focus {focus:?} is not Kind/namespace/name (or Kind/name)"
                ));
            };
            match View::focus(&graph, &key, q.depth.unwrap_or(DEFAULT_DEPTH)) {
                Ok(view) => view,
                Err(e) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
            }
        }
    };
    let produced = status::produced(&snapshot, &clients, &rejections);
    let view = view.with_extra(status::envoy_conditions(&graph, &rejections, &produced));
    match q.format.as_deref().unwrap_or("json") {
        "json" => Json(export::to_json_view(&graph, &view)).into_response(),
        "dot" => (
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            export::to_dot_view(&graph, &view),
        )
            .into_response(),
        "html" => {
            let page = html::page(&graph, &view, &produced);
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
        }
        other => bad_request(format!("format {other:?} is not json, dot or html")),
    }
}

#[derive(Debug, Deserialize)]
pub struct XdsQuery {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: Option<String>,
}

#[derive(Serialize)]
struct ResourceJson<'a> {
    name: &'a str,
    version: &'a str,
    size: usize,
    sources: &'a [ObjectKey],
}

#[derive(Serialize)]
struct TypeJson<'a> {
    type_url: TypeUrl,
    resources: Vec<ResourceJson<'a>>,
}

async fn debug_xds(State(s): State<AdminState>, Query(q): Query<XdsQuery>) -> Response {
    let (clients, snapshot, rejections) = s.xds_view();
    let types: Vec<TypeUrl> = match q.type_.as_deref() {
        None => TypeUrl::ALL.to_vec(),
        Some(t) => match TypeUrl::parse_any(t) {
            Some(t) => vec![t],
            None => {
                return bad_request(format!(
                    "unknown type {t:?}: use Cluster, ClusterLoadAssignment, Listener, ScopedRouteConfiguration, RouteConfiguration or Secret"
                ));
            }
        },
    };
    if let Some(name) = &q.name {
        let found = types.iter().find_map(|t| snapshot.get(*t, name).map(|r| (*t, r)));
        let Some((type_url, r)) = found else {
            return (StatusCode::NOT_FOUND, format!("no resource named {name:?}\n"))
                .into_response();
        };
        let produced = status::produced(&snapshot, &clients, &rejections);
        let envoys = r
            .sources
            .iter()
            .filter_map(|k| produced.get(k))
            .flatten()
            .find(|p| p.type_url == type_url && p.name == r.name)
            .map(|p| p.envoys.clone())
            .unwrap_or_default();
        let rejected: Vec<&Rejection> =
            rejections.iter().filter(|x| x.type_url == type_url && x.resource == r.name).collect();
        return Json(serde_json::json!({
            "type_url": type_url,
            "name": r.name,
            "version": r.version,
            "size": r.body.value.len(),
            "sources": r.sources,
            "envoys": envoys,
            "rejections": rejected,
        }))
        .into_response();
    }
    let listed: Vec<TypeJson> = types
        .iter()
        .map(|t| TypeJson {
            type_url: *t,
            resources: snapshot
                .resources(*t)
                .values()
                .map(|r| ResourceJson {
                    name: &r.name,
                    version: &r.version,
                    size: r.body.value.len(),
                    sources: &r.sources,
                })
                .collect(),
        })
        .collect();
    Json(serde_json::json!({
        "revision": snapshot.revision,
        "types": listed,
        "clients": clients,
        "rejections": rejections,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct ExplainQuery {
    pub object: String,
}

async fn debug_explain(State(s): State<AdminState>, Query(q): Query<ExplainQuery>) -> Response {
    let Some(key) = ObjectKey::parse(&q.object) else {
        return bad_request(format!("object {:?} is not Kind/namespace/name", q.object));
    };
    let (clients, snapshot, rejections) = s.xds_view();
    let produced = status::produced(&snapshot, &clients, &rejections);
    let graph = s.graph();
    let mine = produced.get(&key).map(Vec::as_slice).unwrap_or_default();
    let extra = status::envoy_conditions(&graph, &rejections, &produced);
    match status::explain(&graph, &key, extra, mine, &[]) {
        Ok(text) => text.into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}
