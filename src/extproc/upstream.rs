//! The upstream phase: once per attempt, for the backend Envoy picked.
//!
//! Takes: the request headers (with the internal headers the router phase and the route set),
//! the whole request body, then the response headers and body as they stream. Gives: the
//! request translated for the backend's schema, with the route's and backend's mutations and the
//! backend's credential, nothing internal left in it (nor the client's credentials, for a backend
//! a policy targets); the response translated back for the client, chunk by chunk; token usage as
//! dynamic metadata at the end. A backend whose policy gives no credential (or no access token
//! yet) is refused with a 503 in the client's format before anything is sent. A SigV4 signature
//! is made last, over the request exactly as it leaves: final headers, `:path` and body.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation as EnvoyBodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpHeaders, ProcessingRequest, ProcessingResponse, TrailersResponse,
    body_mutation,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use serde_json::Map;
use tonic::Status;

use super::cost::RequestCost;
use super::credentials::aws;
use super::metrics::{GenAiMetrics, Observation};
use super::response::ResponseTranslation;
use super::runtime::{
    Auth, BackendRuntime, CLIENT_AUTH_HEADERS, Credential, RouteBackendRuntime, RuntimeConfig,
    SIGV4_CLIENT_HEADERS,
};
use super::service::{describe, find, header_pairs, immediate, mutation};
use super::translate::{
    ClientSchema, Endpoint, ResponseTranslator, Usage, error_body, parse_request, passthrough_path,
    response_translator, translate_request,
};
use crate::api::MODEL_HEADER;
use crate::api::{APISchema, BodyMutation, HeaderMutation as ApiHeaderMutation};
use crate::wire::{
    ATTEMPT_METADATA_NAMESPACE, ENDPOINT_HEADER, INTERNAL_HEADER_PREFIX, METADATA_NAMESPACE,
    RESPONSE_CODE_ATTRIBUTE, ROUTE_BACKEND_ATTRIBUTE, ROUTE_BACKEND_HEADER, STREAM_HEADER,
};

/// The key Envoy's ext_proc filter sends its `request_attributes` under.
const EXT_PROC_ATTRIBUTES: &str = "envoy.filters.http.ext_proc";

pub(super) struct UpstreamPhase {
    runtime: Arc<RuntimeConfig>,
    metrics: Arc<GenAiMetrics>,
    /// The backend cluster this attempt goes to: the filter's cluster (gRPC metadata), or for a
    /// fallback cluster the picked backendRef's AIServiceBackend.
    cluster: String,
    headers: Vec<(String, String)>,
    /// The client's endpoint path and the route backendRef id: from the internal headers on a
    /// first attempt, from what that attempt kept in dynamic metadata on a retry (the first
    /// attempt removed the headers, and Envoy hands every attempt the same header map).
    endpoint: Option<String>,
    route_backend: Option<String>,
    /// Set once the request was translated: how to translate the response.
    response: Option<ResponseState>,
    /// What an earlier attempt of this request left in the header map, which Envoy shares
    /// between attempts: the headers it added, and the client's `:authority`.
    earlier: Earlier,
    /// The attempt is on a fallback cluster, whose failed attempts Envoy retries on the next
    /// priority without passing their bodies on: only their headers tell their status.
    fallback: bool,
}

/// What one attempt keeps in [`ATTEMPT_METADATA_NAMESPACE`] for the next one.
#[derive(Debug, Default)]
struct Earlier {
    endpoint: Option<String>,
    route_backend: Option<String>,
    /// Headers the attempt added (credentials, mutations): a retry on another backend must not
    /// send them.
    added: Vec<String>,
    /// The client's `:authority`, for a retry on a backend that sets none.
    authority: Option<String>,
}

impl Earlier {
    fn read(metadata: &Struct) -> Earlier {
        Earlier {
            endpoint: text(metadata, "endpoint"),
            route_backend: text(metadata, "route_backend"),
            added: text(metadata, "added")
                .map(|a| a.split(',').filter(|h| !h.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            authority: text(metadata, "authority"),
        }
    }
}

struct ResponseState {
    /// The attempt as the GenAI metrics see it, filled in as the response arrives.
    observation: Observation,
    started: Instant,
    stream: bool,
    /// Observed: the response ended, or the phase was dropped before (a cut connection, a
    /// retry that abandoned this attempt).
    observed: bool,
    translation: ResponseTranslation,
    costs: Arc<[RequestCost]>,
    /// What CEL costs see as `model` and `backend` (`{name}.{namespace}`).
    cost_model: String,
    cost_backend: String,
}

impl UpstreamPhase {
    pub(super) fn new(
        runtime: Arc<RuntimeConfig>,
        metrics: Arc<GenAiMetrics>,
        cluster: String,
    ) -> Self {
        UpstreamPhase {
            runtime,
            metrics,
            cluster,
            headers: Vec::new(),
            endpoint: None,
            route_backend: None,
            response: None,
            earlier: Earlier::default(),
            fallback: false,
        }
    }

    pub(super) fn on_message(
        &mut self,
        request: ProcessingRequest,
    ) -> Result<ProcessingResponse, Status> {
        let status = response_code(&request);
        let response = match request.request {
            Some(In::RequestHeaders(headers)) => {
                let earlier = request
                    .metadata_context
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get(ATTEMPT_METADATA_NAMESPACE));
                self.earlier = earlier.map(Earlier::read).unwrap_or_default();
                let picked = request
                    .attributes
                    .get(EXT_PROC_ATTRIBUTES)
                    .and_then(|a| text(a, ROUTE_BACKEND_ATTRIBUTE));
                return Ok(self.on_request_headers(&headers, picked));
            }
            Some(In::RequestBody(body)) => return Ok(self.on_request_body(&body.body)),
            Some(In::ResponseHeaders(headers)) => {
                Out::ResponseHeaders(self.on_response_headers(&headers))
            }
            Some(In::ResponseBody(body)) => {
                if let (Some(state), Some(status)) = (&mut self.response, status) {
                    state.translation.on_status(status);
                }
                return Ok(self.on_response_body(&body.body, body.end_of_stream));
            }
            Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
            Some(In::ResponseTrailers(_)) => Out::ResponseTrailers(TrailersResponse::default()),
            None => {
                return Err(Status::invalid_argument(format!(
                    "upstream phase: unexpected {}",
                    describe(&request)
                )));
            }
        };
        Ok(ProcessingResponse { response: Some(response), ..Default::default() })
    }

    fn backend(&self) -> Option<&BackendRuntime> {
        self.runtime.backends.get(&self.cluster)
    }

    /// A 503 in the client's format when a policy asks for a credential this attempt's backend
    /// cannot have, or cannot have yet (a token still being fetched): the request is answered
    /// here, before anything is sent upstream.
    fn refusal(&self) -> Option<ProcessingResponse> {
        match &self.backend()?.auth {
            Auth::Refuse(why) => Some(self.refuse(why)),
            Auth::Inject(credential) => credential.unavailable().map(|why| self.refuse(&why)),
            Auth::None => None,
        }
    }

    fn refuse(&self, why: &str) -> ProcessingResponse {
        let message = format!("backend {} is not served: {why}", self.cluster);
        tracing::warn!("upstream phase: {message}");
        let endpoint = self.endpoint.as_deref().and_then(Endpoint::from_path);
        let client = endpoint.map_or(ClientSchema::OpenAI, |e| e.client_schema());
        immediate(503, error_body(client, 503, &message), "aixds_backend_credential")
    }

    /// What to write to dynamic metadata when the response is done: the route's
    /// `llmRequestCosts` and the costs of the backend's quotas for `model`.
    fn costs(&self, route: Option<&RouteBackendRuntime>, model: &str) -> Arc<[RequestCost]> {
        let route_costs = route.map(|r| r.costs.clone()).unwrap_or_else(|| Arc::from([]));
        let Some(quotas) = self.runtime.quota_costs.get(&self.cluster) else { return route_costs };
        let quotas = quotas.iter().filter(|q| q.model.as_deref().is_none_or(|m| m == model));
        route_costs.iter().cloned().chain(quotas.map(|q| q.cost.clone())).collect()
    }

    fn route_backend(&self) -> Option<&RouteBackendRuntime> {
        self.route_backend.as_ref().and_then(|id| self.runtime.route_backends.get(id))
    }

    /// `picked`: the backendRef whose endpoint Envoy picked, from a fallback cluster's filter.
    /// It names this attempt's backend; otherwise the filter's cluster does.
    fn on_request_headers(
        &mut self,
        message: &HttpHeaders,
        picked: Option<String>,
    ) -> ProcessingResponse {
        self.headers = header_pairs(message);
        let header = |name| find(&self.headers, name).map(str::to_string);
        self.endpoint = header(ENDPOINT_HEADER).or(self.earlier.endpoint.take());
        self.route_backend =
            picked.clone().or(header(ROUTE_BACKEND_HEADER)).or(self.earlier.route_backend.take());
        self.fallback = picked.is_some();
        if picked.is_some()
            && let Some(cluster) = self.route_backend().and_then(|r| r.backend.clone())
        {
            self.cluster = cluster;
        }
        if let Some(refusal) = self.refusal() {
            return refusal;
        }
        if !message.end_of_stream
            && let Some(response) = self.pass_through()
        {
            return response;
        }
        let mut response = HeadersResponse::default();
        if message.end_of_stream {
            // No body to translate (the router phase lets none through to a known endpoint):
            // still no internal header or client credential leaves Envoy.
            let backend = self.backend();
            let ops = match self.header_ops(backend, self.route_backend(), Vec::new(), &[]) {
                Ok(ops) => ops,
                Err(why) => return self.refuse(&why),
            };
            response.response = Some(CommonResponse {
                header_mutation: self.header_mutation(ops),
                ..Default::default()
            });
        }
        ProcessingResponse { response: Some(Out::RequestHeaders(response)), ..Default::default() }
    }

    fn on_request_body(&mut self, body: &[u8]) -> ProcessingResponse {
        let endpoint = self.endpoint.as_deref().and_then(Endpoint::from_path);
        let Some(endpoint) = endpoint else {
            let message = "no LLM API is served at this path";
            return immediate(404, error_body(ClientSchema::OpenAI, 404, message), "aixds_no_api");
        };
        let client = endpoint.client_schema();
        let Some(backend) = self.backend() else {
            let message = format!("backend {} is not configured on this gateway", self.cluster);
            tracing::warn!("upstream phase: {message}");
            return immediate(503, error_body(client, 503, &message), "aixds_unknown_backend");
        };
        let route = self.route_backend();
        let translated = parse_request(endpoint, body).and_then(|parsed| {
            let model_override = route.and_then(|r| r.model_name_override.as_deref());
            let target =
                backend.target().with_anthropic_beta(find(&self.headers, "anthropic-beta"));
            let translated = translate_request(&parsed, target, model_override)?;
            Ok((parsed, translated))
        });
        let (parsed, translated) = match translated {
            Ok(t) => t,
            Err(e) => {
                let status = e.status();
                return immediate(
                    status,
                    error_body(client, status, &e.to_string()),
                    "aixds_translation_failed",
                );
            }
        };
        let translator = response_translator(endpoint, backend.schema.name, parsed.stream)
            .include_usage(parsed.include_usage)
            .model(&translated.model)
            .base64_embeddings(parsed.base64_embeddings());
        let mutations =
            [backend.body_mutation.as_ref(), route.and_then(|r| r.body_mutation.as_ref())];
        let body = mutate_body(translated.body, mutations.into_iter().flatten());
        let base = vec![
            (":path".to_string(), Some(translated.path)),
            ("content-length".to_string(), Some(body.len().to_string())),
        ];
        let ops = match self.header_ops(Some(backend), route, base, &body) {
            Ok(ops) => ops,
            Err(why) => return self.refuse(&why),
        };
        let header_mutation = self.header_mutation(ops);
        tracing::debug!(
            backend = %self.cluster,
            model = %translated.model,
            stream = translated.stream,
            "translated a request"
        );
        let state = self.response_state(
            (endpoint, backend, route),
            translator,
            &translated.model,
            parsed.stream,
        );
        self.response = Some(state);
        let attempt = self.attempt_metadata(&header_mutation);
        ProcessingResponse {
            response: Some(Out::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    header_mutation,
                    body_mutation: Some(EnvoyBodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(body)),
                    }),
                    ..Default::default()
                }),
            })),
            dynamic_metadata: Some(attempt),
            ..Default::default()
        }
    }

    /// For a request whose body the backend takes as the client sent it (same API, no model
    /// override, no body mutation, no signature over the body): the answer to its headers that
    /// sends it on without the body ever coming here: the request body and response headers
    /// messages skipped (`mode_override`). The response body is still read, to count tokens
    /// and bring errors to the client's format; it comes whole unless streamed, with its status
    /// ([`RESPONSE_CODE_ATTRIBUTE`]), and Envoy drops its `content-length`, as the body may
    /// change. On a fallback cluster the response headers still come: a failed attempt that
    /// Envoy retries elsewhere sends no body, and the metrics count it by its status. A response
    /// that ends with its headers (no body) is counted as `no_response`.
    /// `None` when the body has to come.
    fn pass_through(&mut self) -> Option<ProcessingResponse> {
        let endpoint = self.endpoint.as_deref().and_then(Endpoint::from_path)?;
        let backend = self.backend()?;
        let route = self.route_backend();
        let model = find(&self.headers, MODEL_HEADER)?.to_string();
        let stream = find(&self.headers, STREAM_HEADER)? == "true";
        let overridden =
            route.and_then(|r| r.model_name_override.as_deref()).is_some_and(|m| m != model);
        let body_mutation =
            backend.body_mutation.is_some() || route.is_some_and(|r| r.body_mutation.is_some());
        let signs_body = matches!(backend.auth, Auth::Inject(Credential::SigV4(_)));
        if overridden || body_mutation || signs_body {
            return None;
        }
        let path = passthrough_path(endpoint, backend.target(), &model, stream)?;
        let ops =
            match self.header_ops(Some(backend), route, vec![(":path".into(), Some(path))], &[]) {
                Ok(ops) => ops,
                Err(why) => return Some(self.refuse(&why)),
            };
        let header_mutation = self.header_mutation(ops);
        let translator = response_translator(endpoint, backend.schema.name, stream).model(&model);
        tracing::debug!(backend = %self.cluster, %model, stream, "passed a request through");
        let state = self.response_state((endpoint, backend, route), translator, &model, stream);
        self.response = Some(state);
        let attempt = self.attempt_metadata(&header_mutation);
        Some(ProcessingResponse {
            response: Some(Out::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse { header_mutation, ..Default::default() }),
            })),
            dynamic_metadata: Some(attempt),
            mode_override: Some(ProcessingMode {
                request_body_mode: processing_mode::BodySendMode::None as i32,
                response_header_mode: match self.fallback {
                    true => processing_mode::HeaderSendMode::Send,
                    false => processing_mode::HeaderSendMode::Skip,
                } as i32,
                // Whole, in one message: streamed, the body's last bytes and its end may come
                // as two.
                response_body_mode: match stream {
                    true => processing_mode::BodySendMode::Streamed,
                    false => processing_mode::BodySendMode::Buffered,
                } as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// How the response to a request for `endpoint`, `backend` and `route` is to be read:
    /// translated by `translator`, observed for the GenAI metrics and charged for the route's
    /// costs and the backend's quotas of `model`.
    fn response_state(
        &self,
        (endpoint, backend, route): (Endpoint, &BackendRuntime, Option<&RouteBackendRuntime>),
        translator: ResponseTranslator,
        model: &str,
        stream: bool,
    ) -> ResponseState {
        let client = endpoint.client_schema();
        ResponseState {
            observation: Observation {
                endpoint,
                backend: backend.schema.name,
                model: model.to_string(),
                duration: Duration::ZERO,
                time_to_first_token: None,
                tokens: None,
                error: None,
            },
            started: Instant::now(),
            stream,
            observed: false,
            translation: ResponseTranslation::new(client, backend.schema.name, translator),
            costs: self.costs(route, model),
            cost_model: model.to_string(),
            cost_backend: backend_label(&self.cluster),
        }
    }

    /// What a retry of this request needs from this attempt, which sends `header_mutation`: it
    /// will find the internal headers gone.
    fn attempt_metadata(&self, header_mutation: &Option<HeaderMutation>) -> Struct {
        let added = self.added(header_mutation);
        let authority = self
            .earlier
            .authority
            .clone()
            .or(find(&self.headers, ":authority").map(str::to_string));
        let kept = [
            ("endpoint", self.endpoint.clone()),
            ("route_backend", self.route_backend.clone()),
            ("added", Some(added)),
            ("authority", authority),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), text_value(v?))))
        .collect();
        let kept = Value { kind: Some(value::Kind::StructValue(Struct { fields: kept })) };
        Struct { fields: [(ATTEMPT_METADATA_NAMESPACE.to_string(), kept)].into() }
    }

    /// Header operations in order, later ones winning: `base`, the backend's mutation, the
    /// backendRef's, the credential; then every internal header removed; last, a SigV4
    /// signature of the request these make with `body`. `None` removes. An error says why the
    /// credential cannot be given.
    fn header_ops(
        &self,
        backend: Option<&BackendRuntime>,
        route: Option<&RouteBackendRuntime>,
        base: Vec<(String, Option<String>)>,
        body: &[u8],
    ) -> Result<BTreeMap<String, Option<String>>, String> {
        let mut ops: BTreeMap<String, Option<String>> = BTreeMap::new();
        // An earlier attempt's credential and mutations were for its own backend.
        for name in &self.earlier.added {
            ops.insert(name.clone(), None);
        }
        // Compressed responses could not be translated or counted.
        ops.insert("accept-encoding".into(), None);
        let host = backend.and_then(|b| b.hostname.as_ref()).or(self.earlier.authority.as_ref());
        if let Some(host) = host {
            ops.insert(":authority".into(), Some(host.clone()));
        }
        ops.extend(base);
        let user = [
            backend.and_then(|b| b.header_mutation.as_ref()),
            route.and_then(|r| r.header_mutation.as_ref()),
        ];
        for m in user.into_iter().flatten() {
            apply_header_mutation(&mut ops, m);
        }
        if let Some(backend) = backend {
            let has_version = find(&self.headers, "anthropic-version").is_some();
            if backend.auth != Auth::None {
                for name in CLIENT_AUTH_HEADERS {
                    ops.insert(name.into(), None);
                }
            }
            if let Auth::Inject(credential) = &backend.auth {
                for (name, value) in credential.headers(has_version)? {
                    ops.insert(name.into(), Some(value));
                }
            }
            if backend.schema.name == APISchema::Anthropic && !has_version {
                ops.entry("anthropic-version".into())
                    .or_insert_with(|| Some(super::runtime::ANTHROPIC_VERSION.into()));
            }
        }
        for (name, _) in &self.headers {
            if name.starts_with(INTERNAL_HEADER_PREFIX) {
                ops.insert(name.clone(), None);
            }
        }
        if let Some(Auth::Inject(Credential::SigV4(signer))) = backend.map(|b| &b.auth) {
            for name in SIGV4_CLIENT_HEADERS {
                ops.insert(name.into(), None);
            }
            let sent = self.sent_headers(&ops);
            let header = |name| find(&sent, name);
            let request = aws::Request {
                method: header(":method").unwrap_or("POST"),
                authority: header(":authority").ok_or("the request has no :authority to sign")?,
                path: header(":path").unwrap_or("/"),
                headers: &sent,
                body,
            };
            for (name, value) in signer.sign(&request, SystemTime::now())? {
                ops.insert(name.into(), Some(value));
            }
        }
        Ok(ops)
    }

    /// The headers the request leaves with once `ops` are applied.
    fn sent_headers(&self, ops: &BTreeMap<String, Option<String>>) -> Vec<(String, String)> {
        let mut sent: Vec<(String, String)> =
            self.headers.iter().filter(|(name, _)| !ops.contains_key(name)).cloned().collect();
        sent.extend(ops.iter().filter_map(|(name, op)| Some((name.clone(), op.clone()?))));
        sent
    }

    /// The regular headers `mutation` sets that the client did not send, comma-separated.
    fn added(&self, mutation: &Option<HeaderMutation>) -> String {
        let sent_by_client = |name: &str| {
            find(&self.headers, name).is_some() && !self.earlier.added.iter().any(|a| a == name)
        };
        let set = mutation.iter().flat_map(|m| &m.set_headers).filter_map(|h| h.header.as_ref());
        set.map(|h| h.key.as_str())
            .filter(|name| !name.starts_with(':') && *name != "content-length")
            .filter(|name| !sent_by_client(name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The mutation for `ops`, removing only headers the request has.
    fn header_mutation(&self, ops: BTreeMap<String, Option<String>>) -> Option<HeaderMutation> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (name, op) in ops {
            match op {
                Some(value) => set.push((name, value)),
                None if find(&self.headers, &name).is_some() => remove.push(name),
                None => {}
            }
        }
        mutation(set, remove)
    }

    fn on_response_headers(&mut self, message: &HttpHeaders) -> HeadersResponse {
        let Some(state) = &mut self.response else { return HeadersResponse::default() };
        HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: state.translation.on_headers(message),
                ..Default::default()
            }),
        }
    }

    fn on_response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> ProcessingResponse {
        let Some(state) = &mut self.response else {
            return ProcessingResponse {
                response: Some(Out::ResponseBody(BodyResponse::default())),
                ..Default::default()
            };
        };
        if state.translation.status == 0 {
            // Neither headers nor a status came: nothing to read the body by; it passes as is.
            if end_of_stream {
                self.observe();
            }
            return ProcessingResponse {
                response: Some(Out::ResponseBody(BodyResponse::default())),
                ..Default::default()
            };
        }
        let out = state.translation.on_body(chunk, end_of_stream, &self.cluster);
        let ok = state.translation.ok();
        if ok && state.stream && !chunk.is_empty() {
            let started = state.started;
            state.observation.time_to_first_token.get_or_insert_with(|| started.elapsed());
        }
        let usage = state.translation.usage();
        let dynamic_metadata = (end_of_stream && ok)
            .then(|| usage_metadata(&state.costs, usage, &state.cost_model, &state.cost_backend))
            .flatten();
        if end_of_stream {
            let done = ok && state.translation.failed.is_none() && !state.translation.truncated();
            state.observation.tokens = done.then_some((usage.input, usage.output));
            let status = state.translation.status;
            tracing::debug!(backend = %self.cluster, status, ?usage, "response done");
            self.observe();
        }
        // A chunk that stays as it is (a passthrough) is not sent back: Envoy keeps its own.
        let changed = out != chunk;
        let body_mutation = changed
            .then_some(EnvoyBodyMutation { mutation: Some(body_mutation::Mutation::Body(out)) });
        ProcessingResponse {
            response: Some(Out::ResponseBody(BodyResponse {
                response: Some(CommonResponse { body_mutation, ..Default::default() }),
            })),
            dynamic_metadata,
            ..Default::default()
        }
    }
}

impl UpstreamPhase {
    /// Records the attempt in the GenAI metrics, once.
    fn observe(&mut self) {
        let Some(state) = &mut self.response else { return };
        if state.observed {
            return;
        }
        state.observed = true;
        let ok = state.translation.ok();
        state.observation.duration = state.started.elapsed();
        state.observation.error = match (&state.translation.failed, state.translation.status) {
            (Some(_), _) => Some("translation_failed".into()),
            (None, 0) => Some("no_response".into()),
            (None, status) if !ok => Some(status.to_string()),
            // Dropped before the end of a 2xx body: the connection was cut.
            (None, _) if state.observation.tokens.is_none() => Some("incomplete".into()),
            (None, _) => None,
        };
        self.metrics.observe(&state.observation);
    }
}

impl Drop for UpstreamPhase {
    fn drop(&mut self) {
        self.observe();
    }
}

/// The response status a message carries as [`RESPONSE_CODE_ATTRIBUTE`].
fn response_code(request: &ProcessingRequest) -> Option<u16> {
    let attributes = request.attributes.get(EXT_PROC_ATTRIBUTES)?;
    match &attributes.fields.get(RESPONSE_CODE_ATTRIBUTE)?.kind {
        Some(value::Kind::NumberValue(n)) => u16::try_from(*n as i64).ok(),
        Some(value::Kind::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

fn text(s: &Struct, key: &str) -> Option<String> {
    match &s.fields.get(key)?.kind {
        Some(value::Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn text_value(s: String) -> Value {
    Value { kind: Some(value::Kind::StringValue(s)) }
}

fn apply_header_mutation(ops: &mut BTreeMap<String, Option<String>>, m: &ApiHeaderMutation) {
    for h in &m.set {
        ops.insert(h.name.to_ascii_lowercase(), Some(h.value.clone()));
    }
    for name in &m.remove {
        ops.insert(name.to_ascii_lowercase(), None);
    }
}

/// Applies top-level field mutations in order. A value that is not JSON is set as a string; a
/// body that is not a JSON object is left alone.
fn mutate_body<'a>(body: Vec<u8>, mutations: impl Iterator<Item = &'a BodyMutation>) -> Vec<u8> {
    let mut mutations = mutations.peekable();
    if mutations.peek().is_none() {
        return body;
    }
    let Ok(mut object) = serde_json::from_slice::<Map<String, serde_json::Value>>(&body) else {
        return body;
    };
    for m in mutations {
        for field in &m.set {
            let value = serde_json::from_str(&field.value)
                .unwrap_or_else(|_| serde_json::Value::String(field.value.clone()));
            object.insert(field.path.clone(), value);
        }
        for path in &m.remove {
            object.remove(path);
        }
    }
    serde_json::to_vec(&object).unwrap_or(body)
}

/// The route's request costs as `io.envoy.ai_gateway` dynamic metadata; `None` without costs.
fn usage_metadata(
    costs: &[RequestCost],
    usage: Usage,
    model: &str,
    backend: &str,
) -> Option<Struct> {
    let mut fields = std::collections::HashMap::new();
    for cost in costs {
        let Some(n) = cost.evaluate(usage, model, backend) else { continue };
        fields.insert(
            cost.metadata_key.clone(),
            Value { kind: Some(value::Kind::NumberValue(n as f64)) },
        );
    }
    if fields.is_empty() {
        return None;
    }
    let namespace = Value { kind: Some(value::Kind::StructValue(Struct { fields })) };
    Some(Struct { fields: [(METADATA_NAMESPACE.to_string(), namespace)].into() })
}

/// `{name}.{namespace}` of the backend a cluster `{prefix}/{namespace}/{name}` is for, as
/// Envoy AI Gateway's CEL costs name it.
fn backend_label(cluster: &str) -> String {
    let mut parts = cluster.rsplitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(name), Some(namespace)) => format!("{name}.{namespace}"),
        _ => cluster.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BodyField;
    use crate::api::{LLMRequestCost, LLMRequestCostType};

    #[test]
    fn body_mutations_apply_in_order_and_keep_non_json_values_as_text() {
        let backend = BodyMutation {
            set: vec![
                BodyField { path: "temperature".into(), value: "0.1".into() },
                BodyField { path: "tag".into(), value: "plain text".into() },
            ],
            remove: vec!["seed".into()],
        };
        let route = BodyMutation {
            set: vec![BodyField { path: "temperature".into(), value: "0.7".into() }],
            remove: Vec::new(),
        };
        let body = br#"{"model":"m","seed":1}"#.to_vec();
        let out = mutate_body(body, [&backend, &route].into_iter());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model": "m", "temperature": 0.7, "tag": "plain text"}));
        assert_eq!(mutate_body(b"[1]".to_vec(), [&backend].into_iter()), b"[1]");
    }

    #[test]
    fn usage_metadata_only_for_configured_costs() {
        let usage =
            Usage { input: 10, output: 5, cached_input: 2, total: 15, ..Default::default() };
        assert_eq!(usage_metadata(&[], usage, "m", "b.ns"), None);
        let cost = |key: &str, cost_type| LLMRequestCost {
            metadata_key: key.into(),
            cost_type,
            cel: None,
        };
        let costs = [
            cost("cached", LLMRequestCostType::CachedInputToken),
            cost("total", LLMRequestCostType::TotalToken),
        ];
        let costs = crate::extproc::cost::compile(&costs);
        let metadata = usage_metadata(&costs, usage, "m", "b.ns").unwrap();
        let Some(value::Kind::StructValue(s)) = &metadata.fields[METADATA_NAMESPACE].kind else {
            panic!("{metadata:?}")
        };
        let n = |k: &str| s.fields[k].kind.clone();
        assert_eq!(n("cached"), Some(value::Kind::NumberValue(2.0)));
        assert_eq!(n("total"), Some(value::Kind::NumberValue(15.0)));
    }
}
